"""Counts the hardening tests report: frames tried, connections held, kills
survived, records lost. Each test records what it actually did; pytest prints
the table at the end of the run (see conftest.py), and the README's
reliability section quotes it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Count:
    what: str
    count: int
    test: str


_recorded: list[Count] = []


def record(what: str, count: int, test: str) -> None:
    """Record a count a test reached, e.g. ``record("fuzzed frames sent", 5000, __name__)``.
    Call it only after the test's checks passed, so the table lists what held."""
    _recorded.append(Count(what, count, test))


def recorded() -> list[Count]:
    return list(_recorded)


def export() -> list[tuple[str, int, str]]:
    """The counts of a worker process, for the one that prints the table."""
    return [(count.what, count.count, count.test) for count in _recorded]


def merge(exported: list[tuple[str, int, str]]) -> None:
    _recorded.extend(Count(*count) for count in exported)
