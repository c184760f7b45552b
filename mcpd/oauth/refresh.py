"""When to refresh an access token, and what a failed refresh means: sans-IO.

Theory of operation
-------------------
A token is refreshed proactively at a random point between 70% and 80% of
its lifetime, so that many servers behind one authorization server do not all
refresh in the same second; a token that lives longer than five minutes is
refreshed no later than 60 seconds before it expires, so that clock skew and a
slow network cannot make the refresh late. A token of a few seconds follows
the fraction alone: it is never refreshed in a loop. A token without an
expiry is refreshed only when the server refuses it.

A refresh already overdue when it is planned (the daemon was not running at
its time: a restart) is made soon, at a random point within the next
CATCH_UP_SECONDS and within the first half of the token's remaining life, at
once if the token has expired: a daemon that starts with many such tokens
behind one authorization server would otherwise send them all in the same
second.

Times here are wall-clock Unix seconds, never a monotonic clock: a laptop that
slept past a refresh time must find the refresh due when it wakes, and only
the wall clock moved while it slept. The caller sleeps in short steps and asks
again (`next_wake`).

A refresh that fails for a passing reason (the network, a 5xx, 429,
`temporarily_unavailable`, `slow_down`) keeps the tokens and is retried with
exponential backoff and jitter, capped; one the server refused for good
(`invalid_grant`, `invalid_client`) means the user must sign in again.

Tokens that cannot be refreshed (the authorization server issued no refresh
token, which it may: MCP clients must not assume one) lapse when their access
token expires (`lapses_at`): from then on only a new sign-in helps, and the
caller says so at that moment rather than when the server refuses a request.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .model import TokenSet

EARLIEST_FRACTION: Final = 0.70
LATEST_FRACTION: Final = 0.80
FLOOR_SECONDS: Final = 60.0  # no later than this before expiry...
FLOOR_APPLIES_ABOVE: Final = 300.0  # ...for tokens that live longer than this
BACKOFF_BASE_SECONDS: Final = 1.0
BACKOFF_CAP_SECONDS: Final = 300.0
# However far off the next event, look at the wall clock this often: it may
# have jumped (a suspend) while the process slept.
MAX_SLEEP_SECONDS: Final = 30.0
# Refreshes found overdue at start are spread over this long at most.
CATCH_UP_SECONDS: Final = 30.0

TRANSIENT_ERRORS: Final = frozenset({"temporarily_unavailable", "slow_down"})
FATAL_ERRORS: Final = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})


def refresh_at(
    tokens: TokenSet, rng: Callable[[], float] = random.random, *, renewable: bool = False
) -> float | None:
    """When to refresh these tokens proactively; None: never (no expiry, or no refresh
    token, unless they are `renewable` without one: client credentials)."""
    if tokens.expires_at is None or (tokens.refresh_token is None and not renewable):
        return None
    lifetime = max(0.0, tokens.expires_at - tokens.obtained_at)
    fraction = EARLIEST_FRACTION + (LATEST_FRACTION - EARLIEST_FRACTION) * rng()
    due = tokens.obtained_at + lifetime * fraction
    if lifetime > FLOOR_APPLIES_ABOVE:
        due = min(due, tokens.expires_at - FLOOR_SECONDS)
    return due


def lapses_at(tokens: TokenSet | None, refreshable: bool) -> float | None:
    """When tokens stop being usable for good: the expiry of an access token that
    cannot be refreshed. None: never (refreshable tokens are refreshed instead,
    and a token without an expiry lasts until the server refuses it)."""
    if refreshable or tokens is None:
        return None
    return tokens.expires_at


def catch_up_at(now: float, tokens: TokenSet, rng: Callable[[], float] = random.random) -> float:
    """When to make a refresh that fell due while nothing could make it: within
    CATCH_UP_SECONDS and the first half of the token's remaining life; now if it
    has expired."""
    remaining = (tokens.expires_at - now) if tokens.expires_at is not None else 0.0
    window = min(CATCH_UP_SECONDS, max(0.0, remaining) / 2)
    return now + window * rng()


def retry_delay(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Backoff before refresh attempt `attempt + 1` (attempt counts failures, from 1)."""
    exponent = min(max(0, attempt - 1), 16)
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**exponent)
    return float(ceiling * (0.5 + rng() / 2))


def next_wake(now: float, due: float | None) -> float | None:
    """How long to sleep before looking again; None: until the plan changes
    (nothing is scheduled, so the wall clock does not matter)."""
    if due is None:
        return None
    return max(0.0, min(due - now, MAX_SLEEP_SECONDS))


def is_transient(status: int | None, error: str | None) -> bool:
    """Whether a failed refresh should be retried with the same refresh token."""
    if error in FATAL_ERRORS:
        return False
    if error in TRANSIENT_ERRORS:
        return True
    return status is None or status >= 500 or status == 429


@dataclass
class RefreshSchedule:
    """One credential's refresh timing: when next, and the failures so far."""

    rng: Callable[[], float] = random.random
    due: float | None = None
    failures: int = 0
    last_error: str | None = None
    # When tokens that cannot be refreshed lapse (see `lapses_at`).
    lapses: float | None = None

    def plan(
        self, tokens: TokenSet | None, now: float | None = None, *, refreshable: bool = True
    ) -> None:
        """New tokens: schedule their refresh, forget past failures. With `now`, a
        refresh already overdue is spread (`catch_up_at`) rather than made at once.
        Tokens that are not `refreshable` get no refresh but a lapse time."""
        self.lapses = lapses_at(tokens, refreshable)
        if not refreshable:
            tokens = None
        self.due = refresh_at(tokens, self.rng) if tokens is not None else None
        if tokens is not None and self.due is not None and now is not None and self.due < now:
            self.due = catch_up_at(now, tokens, self.rng)
        self.failures = 0
        self.last_error = None

    def failed(self, now: float, error: str) -> float:
        """A transient failure: when to try again."""
        self.failures += 1
        self.last_error = error
        self.due = now + retry_delay(self.failures, self.rng)
        return self.due

    def is_due(self, now: float) -> bool:
        return self.due is not None and now >= self.due

    def lapsed(self, now: float) -> bool:
        """Whether tokens that cannot be refreshed have lapsed by `now`; True once
        only per planning, so that the caller says so once."""
        if self.lapses is None or now < self.lapses:
            return False
        self.lapses = None
        return True
