"""Refresh timing, sans-IO: an injected random source and explicit clocks."""

from __future__ import annotations

import pytest

from mcpd.oauth.refresh import (
    BACKOFF_CAP_SECONDS,
    FLOOR_SECONDS,
    MAX_SLEEP_SECONDS,
    RefreshSchedule,
    is_transient,
    next_wake,
    refresh_at,
    retry_delay,
)
from mcpd.store import TokenSet


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
    assert next_wake(1000.0, None) == MAX_SLEEP_SECONDS


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
