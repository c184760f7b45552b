"""Refresh timing, sans-IO: an injected random source and explicit clocks;
then the refresher's loop around it, with the HTTP exchange replaced."""

from __future__ import annotations

import collections
import time
from typing import Any

import anyio
import pytest

from mcpd.oauth import refresher as refresher_module
from mcpd.oauth.http import OAuthError
from mcpd.oauth.refresh import (
    BACKOFF_CAP_SECONDS,
    CATCH_UP_SECONDS,
    FLOOR_SECONDS,
    MAX_SLEEP_SECONDS,
    RefreshSchedule,
    catch_up_at,
    is_transient,
    next_wake,
    refresh_at,
    retry_delay,
)
from mcpd.oauth.refresher import Refresher
from mcpd.store import AuthorizationServer, ClientRegistration, CredentialRecord, TokenSet


def tokens(lifetime: float | None, *, refresh: str | None = "r", at: float = 1000.0) -> TokenSet:
    return TokenSet(
        access_token="a",
        refresh_token=refresh,
        obtained_at=at,
        expires_at=at + lifetime if lifetime is not None else None,
    )


@pytest.mark.parametrize("lifetime", [2.0, 10.0, 120.0, 300.0])
def test_short_lifetimes_follow_the_fraction_alone(lifetime):
    assert refresh_at(tokens(lifetime), lambda: 0.0) == pytest.approx(1000 + 0.7 * lifetime)
    assert refresh_at(tokens(lifetime), lambda: 1.0) == pytest.approx(1000 + 0.8 * lifetime)


def test_a_few_seconds_never_loops():
    due = refresh_at(tokens(1.0), lambda: 0.5)
    assert due is not None
    assert due > 1000.0  # always after the token was obtained


@pytest.mark.parametrize("lifetime", [301.0, 600.0, 3600.0, 86400.0])
def test_long_lifetimes_refresh_a_minute_before_expiry_at_the_latest(lifetime):
    for draw in (0.0, 0.5, 1.0):
        due = refresh_at(tokens(lifetime), lambda d=draw: d)
        assert due is not None
        assert due <= 1000 + lifetime - FLOOR_SECONDS
        assert due >= 1000 + min(0.7 * lifetime, lifetime - FLOOR_SECONDS)


def test_jitter_spreads_refreshes_over_the_window():
    dues = {refresh_at(tokens(3600.0), lambda d=d / 10: d) for d in range(11)}
    assert len(dues) == 11
    assert min(dues) == pytest.approx(1000 + 0.7 * 3600)
    assert max(dues) == pytest.approx(1000 + 0.8 * 3600)


def test_no_expiry_or_no_refresh_token_means_no_proactive_refresh():
    assert refresh_at(tokens(None)) is None
    assert refresh_at(tokens(3600.0, refresh=None)) is None


def test_backoff_grows_and_caps_with_jitter():
    lows = [retry_delay(n, lambda: 0.0) for n in range(1, 30)]
    highs = [retry_delay(n, lambda: 1.0) for n in range(1, 30)]
    assert highs[0] == 1.0
    assert highs[1] == 2.0
    assert lows == [h / 2 for h in highs]
    assert max(highs) == BACKOFF_CAP_SECONDS
    assert highs == sorted(highs)
    assert retry_delay(10**6, lambda: 1.0) == BACKOFF_CAP_SECONDS  # no overflow


def test_the_wall_clock_decides_after_a_suspend():
    schedule = RefreshSchedule(rng=lambda: 0.0)
    schedule.plan(tokens(3600.0))
    assert schedule.due is not None
    assert not schedule.is_due(schedule.due - 1)
    # The process slept (a laptop lid) far past the refresh time: on waking,
    # the next look at the wall clock finds it due, whatever timers thought.
    assert schedule.is_due(schedule.due + 7200)
    assert next_wake(schedule.due + 7200, schedule.due) == 0.0
    assert next_wake(0.0, schedule.due) == MAX_SLEEP_SECONDS  # far off: look again soon
    assert next_wake(1000.0, None) is None  # nothing scheduled: no need to look


def test_a_refresh_overdue_at_start_is_spread_over_the_catch_up_window():
    # Issued an hour ago, ten minutes left: its refresh fell due while mcpd was down.
    overdue = tokens(3600.0, at=0.0)
    now = 3000.0
    assert refresh_at(overdue, lambda: 0.0) < now
    for draw in (0.0, 0.5, 1.0):
        schedule = RefreshSchedule(rng=lambda d=draw: d)
        schedule.plan(overdue, now)
        assert schedule.due == pytest.approx(now + draw * CATCH_UP_SECONDS)


def test_a_catch_up_stays_within_the_first_half_of_the_remaining_life():
    short = tokens(3600.0, at=0.0)
    assert catch_up_at(3590.0, short, lambda: 1.0) == pytest.approx(3595.0)
    # Expired: at once, whatever the draw.
    assert catch_up_at(3600.0, short, lambda: 1.0) == 3600.0
    assert catch_up_at(9999.0, short, lambda: 0.7) == 9999.0


def test_a_refresh_not_yet_due_is_planned_as_without_a_clock():
    for lifetime in (4.0, 3600.0):
        with_clock, without = RefreshSchedule(rng=lambda: 0.3), RefreshSchedule(rng=lambda: 0.3)
        with_clock.plan(tokens(lifetime), 1000.0 + 0.5 * lifetime)
        without.plan(tokens(lifetime))
        assert with_clock.due == without.due


def test_five_hundred_overdue_refreshes_do_not_fall_in_the_same_second():
    # A restart with 500 servers behind one authorization server, every refresh
    # overdue: spread over the window instead of sent together.
    dues = []
    for n in range(500):
        schedule = RefreshSchedule(rng=lambda n=n: n / 500)
        schedule.plan(tokens(3600.0, at=-3000.0 + n / 10), 0.0)
        assert schedule.due is not None
        dues.append(schedule.due)
    per_second = collections.Counter(int(due) for due in dues)
    assert max(per_second.values()) <= 25
    assert min(dues) >= 0.0
    assert max(dues) <= CATCH_UP_SECONDS


def test_failures_back_off_and_new_tokens_reset():
    schedule = RefreshSchedule(rng=lambda: 1.0)
    schedule.plan(tokens(3600.0))
    assert schedule.failed(5000.0, "HTTP 503") == 5001.0
    assert schedule.failed(5001.0, "HTTP 503") == 5003.0
    assert (schedule.failures, schedule.last_error) == (2, "HTTP 503")
    schedule.plan(tokens(3600.0, at=6000.0))
    assert (schedule.failures, schedule.last_error) == (0, None)


@pytest.mark.parametrize(
    ("status", "error", "transient"),
    [
        (None, None, True),  # the network
        (500, None, True),
        (503, "temporarily_unavailable", True),
        (429, None, True),
        (400, "slow_down", True),
        (400, "temporarily_unavailable", True),
        (400, "invalid_grant", False),
        (401, "invalid_client", False),
        (400, "unauthorized_client", False),
        (400, "invalid_request", False),
    ],
)
def test_which_failures_are_passing(status, error, transient):
    assert is_transient(status, error) is transient


# --- The refresher's loop -------------------------------------------------------------


class StubRuntime:
    """What a Refresher uses of its server's runtime."""

    def __init__(self, tokens: TokenSet) -> None:
        self.name = "stub"
        self.record: CredentialRecord | None = CredentialRecord(
            server="stub",
            url="http://127.0.0.1:9/mcp",
            tokens=tokens,
            client=ClientRegistration(client_id="c"),
            authorization=AuthorizationServer(
                issuer="http://127.0.0.1:9",
                token_endpoint="http://127.0.0.1:9/token",
                resource="http://127.0.0.1:9/mcp",
            ),
        )
        self.events: list[str] = []

    def http(self) -> tuple[Any, ...]:
        return (None, None, 5.0)

    def refresh_succeeded(self) -> None:
        self.events.append("succeeded")

    def refresh_failing(self) -> None:
        self.events.append("failing")

    def refresh_refused(self, reason: str) -> None:
        self.events.append("refused")


def fake_token_endpoint(monkeypatch, lifetime: float, failures: int = 0) -> list[float]:
    """Replace the HTTP exchange: fail `failures` times, then issue tokens of
    `lifetime` seconds; returns the times of the successful refreshes."""
    issued: list[float] = []
    failed = [0]

    async def drive(step: Any, *args: Any) -> TokenSet:
        step.close()
        if failed[0] < failures:
            failed[0] += 1
            raise OAuthError("cannot reach the token endpoint")
        now = time.time()
        issued.append(now)
        return TokenSet(
            access_token=f"a{len(issued)}",
            refresh_token=f"r{len(issued)}",
            obtained_at=now,
            expires_at=now + lifetime,
        )

    monkeypatch.setattr(refresher_module, "drive", drive)
    return issued


async def _nothing(*args: Any) -> None:
    return None


def run_refresher(runtime: StubRuntime, until: Any) -> None:
    """The refresher's loop, until `until(refresher)` returns."""

    async def main() -> None:
        refresher = Refresher(runtime, _nothing, _nothing)  # type: ignore[arg-type]
        async with anyio.create_task_group() as tg:
            tg.start_soon(refresher.run)
            await anyio.sleep(0.05)  # the loop sleeps: nothing is scheduled
            await until(refresher)
            tg.cancel_scope.cancel()

    anyio.run(main)


def test_a_refresh_outside_the_loop_wakes_it_for_the_next_one(monkeypatch):
    """A token without an expiry schedules nothing, so the loop sleeps without a
    deadline; a refresh made for a refused request (not by the loop) brings
    tokens that expire, and the loop must wake to refresh those in time."""
    issued = fake_token_endpoint(monkeypatch, lifetime=0.5)
    runtime = StubRuntime(TokenSet(access_token="a0", refresh_token="r0", obtained_at=0.0))

    async def until(refresher: Refresher) -> None:
        assert refresher.schedule.due is None
        assert await refresher.refresh("a0")  # the server refused a0
        with anyio.fail_after(5):
            while len(issued) < 3:  # two more by the loop, at 70-80% of 0.5 s
                await anyio.sleep(0.01)

    run_refresher(runtime, until)
    assert runtime.events == ["succeeded"] * 3


def test_a_failed_refresh_outside_the_loop_is_retried_by_it(monkeypatch):
    issued = fake_token_endpoint(monkeypatch, lifetime=3600.0, failures=1)
    runtime = StubRuntime(TokenSet(access_token="a0", refresh_token="r0", obtained_at=0.0))

    async def until(refresher: Refresher) -> None:
        assert not await refresher.refresh("a0")  # passing failure: retry in 0.5-1 s
        assert refresher.schedule.due is not None
        with anyio.fail_after(5):
            while not issued:
                await anyio.sleep(0.01)

    run_refresher(runtime, until)
    assert runtime.events == ["failing", "succeeded"]
