"""backoff_delay: exponential from the base, capped, jittered over the upper half."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpd.upstream.keeper import BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS, backoff_delay


def ceiling(attempt: int) -> float:
    return float(min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempt - 1)))


def test_the_constants() -> None:
    assert BACKOFF_BASE_SECONDS == 0.5
    assert BACKOFF_CAP_SECONDS == 60.0


def test_full_rng_gives_the_ceiling_doubling_from_the_base_up_to_the_cap() -> None:
    delays = [backoff_delay(attempt, rng=lambda: 1.0) for attempt in range(1, 11)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_zero_rng_gives_half_the_ceiling() -> None:
    delays = [backoff_delay(attempt, rng=lambda: 0.0) for attempt in range(1, 11)]
    assert delays == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_first_attempt_waits_about_the_base() -> None:
    assert backoff_delay(1, rng=lambda: 1.0) == BACKOFF_BASE_SECONDS
    assert backoff_delay(1, rng=lambda: 0.0) == BACKOFF_BASE_SECONDS / 2


@pytest.mark.parametrize("attempt", [0, -1, -100])
def test_attempts_below_one_count_as_the_first(attempt: int) -> None:
    assert backoff_delay(attempt, rng=lambda: 1.0) == BACKOFF_BASE_SECONDS
    assert backoff_delay(attempt, rng=lambda: 0.0) == BACKOFF_BASE_SECONDS / 2


def test_the_cap_is_reached_and_held() -> None:
    assert backoff_delay(8, rng=lambda: 1.0) == BACKOFF_CAP_SECONDS
    for attempt in range(8, 200):
        assert backoff_delay(attempt, rng=lambda: 1.0) == BACKOFF_CAP_SECONDS
        assert backoff_delay(attempt, rng=lambda: 0.0) == BACKOFF_CAP_SECONDS / 2


def test_the_ceiling_never_shrinks() -> None:
    delays = [backoff_delay(attempt, rng=lambda: 1.0) for attempt in range(1, 100)]
    assert delays == sorted(delays)
    assert delays[0] < delays[-1]


def test_the_rng_is_called_once_per_delay() -> None:
    calls: list[None] = []

    def rng() -> float:
        calls.append(None)
        return 0.5

    assert backoff_delay(3, rng=rng) == pytest.approx(ceiling(3) * 0.75)
    assert len(calls) == 1


def test_the_delay_is_a_float() -> None:
    assert type(backoff_delay(3, rng=lambda: 1.0)) is float
    assert type(backoff_delay(3, rng=lambda: 0)) is float


@settings(max_examples=200, deadline=None)
@given(attempt=st.integers(-5, 1000), u=st.floats(0.0, 1.0))
def test_jitter_stays_within_the_upper_half(attempt: int, u: float) -> None:
    delay = backoff_delay(attempt, rng=lambda: u)
    top = ceiling(attempt)
    assert top / 2 <= delay <= top
    assert delay == pytest.approx(top * (0.5 + u / 2))


def test_seeded_random_values_stay_within_bounds() -> None:
    rng = random.Random(1234)
    for attempt in range(1, 30):
        delay = backoff_delay(attempt, rng=rng.random)
        assert ceiling(attempt) / 2 <= delay <= ceiling(attempt)


def test_default_rng_stays_within_bounds_and_varies() -> None:
    delays = [backoff_delay(20) for _ in range(200)]
    assert all(BACKOFF_CAP_SECONDS / 2 <= d <= BACKOFF_CAP_SECONDS for d in delays)
    assert len(set(delays)) > 1


@pytest.mark.parametrize("attempt", [1025, 5000, 10**6])
def test_huge_attempt_counts_stay_at_the_cap(attempt: int) -> None:
    assert backoff_delay(attempt, rng=lambda: 1.0) == BACKOFF_CAP_SECONDS
