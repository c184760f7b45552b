"""Refresh timing, sans-IO: an injected random source and explicit clocks;
then the credentials' loop around it, with the HTTP exchange replaced."""

from __future__ import annotations

import collections
import errno
import time
from typing import Any

import anyio
import pytest

from mcpd import credentials as credentials_module
from mcpd.config import OAuthSettings
from mcpd.credentials import Credentials, expiry_notice, unrefreshable
from mcpd.oauth.messages import HttpRequest, HttpResponse, OAuthError
from mcpd.oauth.model import AuthorizationServer, ClientRegistration, CredentialRecord, TokenSet
from mcpd.oauth.refresh import (
    BACKOFF_CAP_SECONDS,
    CATCH_UP_SECONDS,
    FLOOR_SECONDS,
    MAX_SLEEP_SECONDS,
    RefreshSchedule,
    catch_up_at,
    is_transient,
    lapses_at,
    next_wake,
    refresh_at,
    retry_delay,
)


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


# --- The credentials' loop -----------------------------------------------------------
#
# `Credentials` with its HTTP exchange replaced (`drive`: the sans-IO refresh step
# is closed unrun and a TokenSet or an OAuthError comes back), and its store
# replaced by lists: what is tested here is the loop and the single flight, not
# the network (the daemon-level tests in test_refresh.py and test_lifetimes.py
# run them against real authorization servers).


def stub_record(tokens: TokenSet) -> CredentialRecord:
    return CredentialRecord(
        server="stub",
        url="http://127.0.0.1:9/mcp",
        tokens=tokens,
        client=ClientRegistration(client_id="c", issuer="http://127.0.0.1:9"),
        authorization=AuthorizationServer(
            issuer="http://127.0.0.1:9",
            token_endpoint="http://127.0.0.1:9/token",
            resource="http://127.0.0.1:9/mcp",
        ),
    )


class StubServer:
    """What a server is told by its credentials, and its store."""

    def __init__(self, record: CredentialRecord | None, save_failures: int = 0) -> None:
        self.stored = record
        self.saves: list[CredentialRecord] = []
        self.save_failures = save_failures
        self.events: list[str] = []

    async def load(self, server: str, url: str) -> CredentialRecord | None:
        return self.stored

    async def save(self, record: CredentialRecord) -> None:
        if self.save_failures:
            self.save_failures -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        self.saves.append(record)
        self.stored = record

    def refreshed(self) -> None:
        self.events.append("refreshed")

    def refresh_failing(self, error: str, retry_at: float) -> None:
        self.events.append("failing")

    def refresh_refused(self, reason: str) -> None:
        self.events.append("refused")

    def credentials_changed(self) -> None:
        pass

    def access_expired(self, reason: str) -> None:
        self.events.append(f"expired: {reason}")


def fake_token_endpoint(monkeypatch, lifetime: float, failures: int = 0, delay: float = 0.0):
    """Replace the HTTP exchange: fail `failures` times, then issue tokens of
    `lifetime` seconds (after `delay`); returns the times of the issues and
    the number of attempts."""
    issued: list[float] = []
    attempts = [0]

    async def drive(step: Any, reach: Any) -> TokenSet:
        step.close()
        attempts[0] += 1
        await anyio.sleep(delay)
        if attempts[0] <= failures:
            raise OAuthError("cannot reach the token endpoint")
        now = time.time()
        issued.append(now)
        return TokenSet(
            access_token=f"a{len(issued)}",
            refresh_token=f"r{len(issued)}",
            obtained_at=now,
            expires_at=now + lifetime,
        )

    monkeypatch.setattr(credentials_module, "drive", drive)
    return issued, attempts


def stub_credentials(server: StubServer, settings: OAuthSettings | None = None) -> Credentials:
    """The credentials of one server whose store and listener are `server`."""
    return Credentials(
        "stub",
        "http://127.0.0.1:9/mcp",
        applies=True,
        save=server.save,
        load=server.load,
        reach=lambda: None,  # type: ignore[arg-type,return-value]
        listener=server,
        settings=settings,
    )


def run_credentials(
    server: StubServer, until: Any, settings: OAuthSettings | None = None
) -> Credentials:
    """The credentials' loop, until `until(credentials)` returns."""
    credentials = stub_credentials(server, settings)

    async def main() -> None:
        await credentials.load()
        async with anyio.create_task_group() as tg:
            await tg.start(credentials.run)
            await anyio.sleep(0.05)  # the loop sleeps: nothing is due yet
            await until(credentials)
            tg.cancel_scope.cancel()

    anyio.run(main)
    return credentials


def test_a_refresh_outside_the_loop_wakes_it_for_the_next_one(monkeypatch):
    """A token without an expiry schedules nothing, so the loop sleeps without a
    deadline; a refresh made for a refused request (not by the loop) brings
    tokens that expire, and the loop must wake to refresh those in time."""
    issued, _ = fake_token_endpoint(monkeypatch, lifetime=0.5)
    server = StubServer(stub_record(TokenSet(access_token="a0", refresh_token="r0", obtained_at=0)))

    async def until(credentials: Credentials) -> None:
        assert credentials.schedule.due is None
        assert await credentials.refresh("a0")  # the server refused a0
        with anyio.fail_after(5):
            while len(issued) < 3:  # two more by the loop, at 70-80% of 0.5 s
                await anyio.sleep(0.01)

    run_credentials(server, until)
    assert server.events == ["refreshed"] * 3
    assert [record.tokens.access_token for record in server.saves] == ["a1", "a2", "a3"]


def test_a_failed_refresh_outside_the_loop_is_retried_by_it(monkeypatch):
    issued, _ = fake_token_endpoint(monkeypatch, lifetime=3600.0, failures=1)
    server = StubServer(stub_record(TokenSet(access_token="a0", refresh_token="r0", obtained_at=0)))

    async def until(credentials: Credentials) -> None:
        assert not await credentials.refresh("a0")  # passing failure: retry in 0.5-1 s
        assert credentials.schedule.due is not None
        with anyio.fail_after(5):
            while not issued:
                await anyio.sleep(0.01)

    run_credentials(server, until)
    assert server.events == ["failing", "refreshed"]


def test_credentials_that_cannot_be_refreshed_never_make_a_loop(monkeypatch):
    """Tokens due for a refresh whose client registration was forgotten (what
    `mcpctl auth NAME --restart` does while signed in): no attempt at all, and
    no busy loop (it once spun at 10,000 attempts a second)."""
    _, attempts = fake_token_endpoint(monkeypatch, lifetime=3600.0)
    now = time.time()
    # Not due while the client is still known (so no refresh can start before
    # the registration is forgotten); due at once after.
    fresh = TokenSet(access_token="a0", refresh_token="r0", obtained_at=now, expires_at=now + 3600)
    record = stub_record(fresh)
    server = StubServer(record)
    wakes = [0]

    async def until(credentials: Credentials) -> None:
        due = TokenSet(
            access_token="a0", refresh_token="r0", obtained_at=now - 10, expires_at=now + 1
        )
        forgotten = stub_record(due)
        forgotten.client = None
        await credentials.replace(forgotten)
        original = credentials.schedule.is_due

        def counting(now: float) -> bool:
            wakes[0] += 1
            return original(now)

        credentials.schedule.is_due = counting  # type: ignore[method-assign]
        await anyio.sleep(2)

    credentials = run_credentials(server, until)
    assert attempts[0] == 0
    assert credentials.schedule.due is None
    assert wakes[0] <= 3, wakes[0]  # the loop slept through the two seconds


def test_a_tokens_life_of_zero_seconds_is_not_refreshed_in_a_loop(monkeypatch):
    _, attempts = fake_token_endpoint(monkeypatch, lifetime=0.0)
    now = time.time()
    server = StubServer(
        stub_record(
            TokenSet(access_token="a0", refresh_token="r0", obtained_at=now, expires_at=now)
        )
    )

    async def until(credentials: Credentials) -> None:
        await anyio.sleep(3)

    run_credentials(server, until)
    assert 1 <= attempts[0] <= 4, attempts[0]  # one a second at most


def test_a_caller_that_gives_up_does_not_abandon_the_refresh(monkeypatch):
    """The session that asked is torn down mid-refresh: the refresh goes on, its
    rotated tokens are stored and used."""
    issued, attempts = fake_token_endpoint(monkeypatch, lifetime=3600.0, delay=0.3)
    server = StubServer(stub_record(TokenSet(access_token="a0", refresh_token="r0", obtained_at=0)))

    async def until(credentials: Credentials) -> None:
        with anyio.move_on_after(0.05):
            await credentials.refresh("a0")
        assert not issued  # the caller left before the answer
        with anyio.fail_after(5):
            assert await credentials.refresh("a0")  # joins, or finds it replaced

    credentials = run_credentials(server, until)
    assert attempts[0] == 1
    assert credentials.bearer() == "a1"
    assert server.stored is not None
    assert server.stored.tokens is not None
    assert server.stored.tokens.refresh_token == "r1"


def test_a_failed_save_keeps_the_rotated_tokens_and_is_retried(monkeypatch):
    """The disk is full when the rotated tokens come back: they are used from
    memory at once (the old refresh token is spent) and written when it can be."""
    fake_token_endpoint(monkeypatch, lifetime=3600.0)
    server = StubServer(
        stub_record(TokenSet(access_token="a0", refresh_token="r0", obtained_at=0)),
        save_failures=1,
    )

    async def until(credentials: Credentials) -> None:
        assert await credentials.refresh("a0")
        assert credentials.bearer() == "a1"
        assert credentials.save_error is not None
        assert "No space left on device" in credentials.save_error
        assert server.stored is not None
        assert server.stored.tokens is not None
        assert server.stored.tokens.refresh_token == "r0"  # not written yet
        with anyio.fail_after(5):
            while credentials.save_error is not None:
                await anyio.sleep(0.05)

    run_credentials(server, until)
    assert server.stored is not None
    assert server.stored.tokens is not None
    assert server.stored.tokens.refresh_token == "r1"


def test_an_expired_token_is_refreshed_before_a_session_connects(monkeypatch):
    issued, _ = fake_token_endpoint(monkeypatch, lifetime=3600.0)
    now = time.time()
    server = StubServer(
        stub_record(
            TokenSet(access_token="a0", refresh_token="r0", obtained_at=now - 60, expires_at=now)
        )
    )

    async def until(credentials: Credentials) -> None:
        # The loop (the refresh is overdue at once) and the session share one refresh.
        assert await credentials.ready() is None
        assert credentials.bearer() == "a1"

    run_credentials(server, until)
    assert len(issued) == 1


def test_an_expired_token_is_never_sent():
    now = time.time()
    expired = TokenSet(access_token="a0", refresh_token="r0", obtained_at=now - 60, expires_at=now)
    server = StubServer(stub_record(expired))
    credentials = stub_credentials(server)
    anyio.run(credentials.load)
    assert credentials.tokens is expired
    assert credentials.bearer() is None


# --- Tokens that cannot be refreshed lapse at expiry -----------------------------------
#
# The decision (sans-IO, no clock): `lapses_at` and the schedule's `lapsed`; the
# reason (`unrefreshable`) and what the server is told (`expiry_notice`). Then the
# loop: told once, at expiry, and never a request to the token endpoint.


@pytest.mark.parametrize(
    ("lifetime", "refreshable", "expected"),
    [
        (600.0, False, 1600.0),  # expires at 1600: lapses then
        (None, False, None),  # no expiry: lasts until the server refuses it
        (600.0, True, None),  # refreshed instead
        (None, True, None),
    ],
)
def test_lapses_at(lifetime, refreshable, expected):
    assert lapses_at(tokens(lifetime, refresh=None), refreshable) == expected
    assert lapses_at(None, refreshable) is None


def test_a_schedule_without_a_refresh_token_lapses_once_at_expiry():
    schedule = RefreshSchedule(rng=lambda: 0.5)
    schedule.plan(tokens(600.0, refresh=None), refreshable=False)
    assert schedule.due is None  # nothing to refresh
    assert schedule.lapses == 1600.0
    assert next_wake(1500.0, schedule.lapses) == MAX_SLEEP_SECONDS
    assert schedule.lapsed(1599.9) is False
    assert schedule.lapsed(1600.0) is True
    assert schedule.lapsed(1700.0) is False  # said once
    schedule.plan(tokens(600.0, refresh=None, at=2000.0), refreshable=False)  # a new sign-in
    assert schedule.lapsed(2600.0) is True


def test_a_refreshable_schedule_never_lapses():
    schedule = RefreshSchedule(rng=lambda: 0.5)
    schedule.plan(tokens(600.0), refreshable=True)
    assert schedule.lapses is None
    assert schedule.due == pytest.approx(1000 + 0.75 * 600)
    assert schedule.lapsed(10_000.0) is False
    schedule.plan(None)  # a refused refresh: needs_auth already
    assert (schedule.due, schedule.lapses) == (None, None)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"refresh_token": None}, "the authorization server issued no refresh token"),
        ({"client": None}, "no client registration is stored"),
        ({"client_issuer": "https://elsewhere.example"}, "for another authorization server"),
        ({"client_issuer": None}, "for another authorization server"),
        ({}, None),
    ],
)
def test_why_tokens_cannot_be_refreshed(change, reason):
    record = stub_record(tokens(600.0, refresh=change.get("refresh_token", "r")))
    if "client" in change:
        record.client = None
    if "client_issuer" in change:
        assert record.client is not None
        record.client.issuer = change["client_issuer"]
    why = unrefreshable(record)
    assert (why is None) if reason is None else (why is not None and reason in why)


def test_the_notice_says_why_and_what_to_do():
    notice = expiry_notice("linear", "the authorization server issued no refresh token")
    assert "the access token expired" in notice
    assert "issued no refresh token" in notice
    assert notice.endswith("mcpctl auth linear")


def test_an_access_token_without_a_refresh_token_lapses_at_expiry(monkeypatch):
    _, attempts = fake_token_endpoint(monkeypatch, lifetime=3600.0)
    now = time.time()
    record = stub_record(
        TokenSet(access_token="a0", refresh_token=None, obtained_at=now, expires_at=now + 0.5)
    )
    server = StubServer(record)

    async def until(credentials: Credentials) -> None:
        assert credentials.schedule.due is None
        assert credentials.schedule.lapses == now + 0.5
        assert server.events == []  # not before it expires
        assert credentials.bearer() == "a0"
        with anyio.fail_after(5):
            while not server.events:
                await anyio.sleep(0.01)
        assert time.time() >= now + 0.5
        assert credentials.bearer() is None
        assert not await credentials.refresh(None)  # no refresh to make
        await anyio.sleep(0.3)  # and no second notice

    run_credentials(server, until)
    assert attempts[0] == 0
    assert server.events == [
        "expired: the access token expired and cannot be renewed (the authorization server "
        "issued no refresh token); sign in again: mcpctl auth stub"
    ]


def test_an_expired_token_without_a_refresh_token_at_start_lapses_at_once(monkeypatch):
    _, attempts = fake_token_endpoint(monkeypatch, lifetime=3600.0)
    now = time.time()
    server = StubServer(
        stub_record(
            TokenSet(access_token="a0", refresh_token=None, obtained_at=now - 60, expires_at=now)
        )
    )

    async def until(credentials: Credentials) -> None:
        assert [e[:8] for e in server.events] == ["expired:"]
        assert await credentials.ready() is None  # the server will say 401: no refresh

    run_credentials(server, until)
    assert attempts[0] == 0
    assert len(server.events) == 1


def test_a_new_sign_in_replaces_the_lapse(monkeypatch):
    fake_token_endpoint(monkeypatch, lifetime=3600.0)
    now = time.time()
    server = StubServer(
        stub_record(
            TokenSet(access_token="a0", refresh_token=None, obtained_at=now, expires_at=now + 0.3)
        )
    )

    async def until(credentials: Credentials) -> None:
        fresh = TokenSet(
            access_token="a1", refresh_token="r1", obtained_at=time.time(), expires_at=now + 3600
        )
        await credentials.replace(stub_record(fresh))
        assert credentials.schedule.lapses is None
        await anyio.sleep(0.6)

    run_credentials(server, until)
    assert server.events == []


def test_a_client_of_another_authorization_server_is_never_sent_a_refresh(monkeypatch):
    """A sign-in registered a client at the resource's new authorization server
    and failed; the old server's tokens are still held. Their refresh would send
    the new client's credentials to the old server: it is not made, and the
    tokens lapse at expiry instead."""
    _, attempts = fake_token_endpoint(monkeypatch, lifetime=3600.0)
    now = time.time()
    record = stub_record(
        TokenSet(access_token="a0", refresh_token="r0", obtained_at=now - 10, expires_at=now + 0.5)
    )
    assert record.client is not None
    record.client.issuer = "https://new-as.example"
    server = StubServer(record)

    async def until(credentials: Credentials) -> None:
        assert credentials.schedule.due is None
        assert not await credentials.refresh("a0")
        with anyio.fail_after(5):
            while not server.events:
                await anyio.sleep(0.01)

    run_credentials(server, until)
    assert attempts[0] == 0
    assert len(server.events) == 1
    assert "for another authorization server" in server.events[0]


@pytest.mark.parametrize(
    ("settings", "sent"),
    [
        (None, "http://127.0.0.1:9/mcp"),
        (OAuthSettings(), "http://127.0.0.1:9/mcp"),
        (OAuthSettings(resource=False), None),
        (OAuthSettings(resource="https://api.example.com"), "https://api.example.com"),
    ],
)
def test_a_refresh_sends_the_configured_resource(monkeypatch, settings, sent):
    forms: list[dict[str, str]] = []

    async def drive(step: Any, reach: Any) -> TokenSet:
        request = next(step)
        assert isinstance(request, HttpRequest)
        forms.append(dict(request.form or {}))
        body = b'{"access_token": "a1", "token_type": "Bearer", "expires_in": 3600}'
        try:
            step.send(HttpResponse(200, {"content-type": "application/json"}, body))
        except StopIteration as done:
            result: TokenSet = done.value
            return result
        raise AssertionError("the refresh asked twice")

    monkeypatch.setattr(credentials_module, "drive", drive)
    server = StubServer(stub_record(TokenSet(access_token="a0", refresh_token="r0", obtained_at=0)))

    async def until(credentials: Credentials) -> None:
        assert await credentials.refresh("a0")

    credentials = run_credentials(server, until, settings)
    assert len(forms) == 1
    assert forms[0].get("resource") == sent
    assert forms[0]["client_id"] == "c"
    assert credentials.tokens is not None
    assert credentials.tokens.refresh_token == "r0"  # none in the answer: the old one kept
