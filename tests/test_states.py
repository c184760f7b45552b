"""The per-server state machine: the table is the whole truth, total, and enforced."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from mcpd.states import (
    EVENTS_WITH_ERROR,
    EVENTS_WITH_RETRY,
    IGNORED,
    TRANSITIONS,
    Event,
    InvalidTransition,
    ServerStateMachine,
    State,
)

# A shortest event sequence from DISABLED to each state, so a test can put a
# machine into any state through the public API only.
PATH_TO: dict[State, list[Event]] = {
    State.DISABLED: [],
    State.CONNECTING: [Event.START],
    State.CONNECTED: [Event.START, Event.CONNECTED],
    State.NEEDS_AUTH: [Event.START, Event.AUTH_REQUIRED],
    State.NEEDS_CLIENT_REGISTRATION: [Event.START, Event.CLIENT_REGISTRATION_REQUIRED],
    State.AUTHORIZING: [Event.START, Event.AUTHORIZE],
    State.FAILED: [Event.START, Event.ERROR],
}

ALL_PAIRS = list(itertools.product(State, Event))
VALID_PAIRS = [pair for pair in ALL_PAIRS if TRANSITIONS[pair] is not IGNORED]
IGNORED_PAIRS = [pair for pair in ALL_PAIRS if TRANSITIONS[pair] is IGNORED]


def _pair_id(pair: tuple[State, Event]) -> str:
    return f"{pair[0].value}-{pair[1].name}"


def machine_in(state: State, **kwargs) -> ServerStateMachine:
    machine = ServerStateMachine(**kwargs)
    for event in PATH_TO[state]:
        machine.handle(event)
    assert machine.state is state
    return machine


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.now


def test_path_to_covers_every_state():
    assert set(PATH_TO) == set(State)


def test_table_is_total_and_names_only_known_states_and_events():
    assert set(TRANSITIONS) == set(ALL_PAIRS)
    for (state, event), target in TRANSITIONS.items():
        assert isinstance(state, State)
        assert isinstance(event, Event)
        assert target is IGNORED or isinstance(target, State)


def test_every_state_is_reachable_from_disabled():
    reachable = {State.DISABLED}
    frontier = [State.DISABLED]
    while frontier:
        current = frontier.pop()
        for (state, _event), target in TRANSITIONS.items():
            if state is current and target is not IGNORED and target not in reachable:
                reachable.add(target)
                frontier.append(target)
    assert reachable == set(State)


def test_there_are_both_valid_and_ignored_pairs():
    # Guards the parametrised tests below against an accidentally empty list.
    assert len(VALID_PAIRS) >= 20
    assert len(IGNORED_PAIRS) >= 40
    assert len(VALID_PAIRS) + len(IGNORED_PAIRS) == len(State) * len(Event)


@pytest.mark.parametrize("pair", VALID_PAIRS, ids=_pair_id)
def test_valid_transition_leads_where_the_table_says(pair):
    state, event = pair
    machine = machine_in(state)
    kwargs: dict[str, Any] = {}
    if event in EVENTS_WITH_ERROR:
        kwargs["error"] = "boom"
    if event in EVENTS_WITH_RETRY:
        kwargs["retry_at"] = 12345.0
    result = machine.handle(event, **kwargs)
    assert result is TRANSITIONS[state, event]
    assert machine.state is TRANSITIONS[state, event]


@pytest.mark.parametrize("pair", VALID_PAIRS, ids=_pair_id)
def test_valid_transition_without_error_or_retry_is_accepted(pair):
    state, event = pair
    machine = machine_in(state)
    assert machine.handle(event) is TRANSITIONS[state, event]
    assert machine.error is None
    assert machine.next_retry_at is None


@pytest.mark.parametrize("pair", IGNORED_PAIRS, ids=_pair_id)
def test_an_ignored_pair_changes_nothing_and_tells_nobody(pair):
    state, event = pair
    clock = FakeClock()
    calls = []
    machine = machine_in(state, listener=lambda m, prev: calls.append(prev), clock=clock)
    calls.clear()
    machine.error, machine.next_retry_at = "kept", 7.0
    before = (machine.state, machine.error, machine.next_retry_at, machine.since)
    clock.now += 50
    kwargs: dict[str, Any] = {}
    if event in EVENTS_WITH_ERROR:
        kwargs["error"] = "ignored"
    if event in EVENTS_WITH_RETRY:
        kwargs["retry_at"] = 99.0
    assert machine.handle(event, **kwargs) is state
    assert (machine.state, machine.error, machine.next_retry_at, machine.since) == before
    assert calls == []


def test_connected_while_disabled_is_ignored():
    # A session's late report after the server was stopped.
    machine = ServerStateMachine()
    assert machine.handle(Event.CONNECTED) is State.DISABLED


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
def test_stop_from_every_state_leads_to_disabled(state):
    machine = machine_in(state)
    assert machine.handle(Event.STOP) is State.DISABLED
    assert machine.state is State.DISABLED


def test_stop_is_in_the_table_for_every_state():
    assert TRANSITIONS[State.DISABLED, Event.STOP] is IGNORED
    assert all(
        TRANSITIONS[state, Event.STOP] is State.DISABLED
        for state in State
        if state is not State.DISABLED
    )


def test_what_carries_a_retry_time():
    assert frozenset({Event.ERROR, Event.REFRESH_FAILED, Event.FAULT}) == EVENTS_WITH_RETRY
    assert EVENTS_WITH_RETRY <= EVENTS_WITH_ERROR


@pytest.mark.parametrize("state", [s for s in State if s is not State.DISABLED])
def test_a_fault_fails_every_running_server_with_a_retry_time(state):
    machine = machine_in(state)
    assert machine.handle(Event.FAULT, error="internal error", retry_at=5.0) is State.FAILED
    assert (machine.error, machine.next_retry_at) == ("internal error", 5.0)
    assert machine.handle(Event.RETRY) is State.CONNECTING


def test_a_failing_refresh_only_moves_the_retry_time_of_a_failed_server():
    for state in State:
        expected = State.FAILED if state is State.FAILED else IGNORED
        assert TRANSITIONS[state, Event.REFRESH_FAILED] is expected


@pytest.mark.parametrize("pair", VALID_PAIRS, ids=_pair_id)
def test_error_only_accepted_on_events_that_carry_one(pair):
    state, event = pair
    clock = FakeClock()
    calls = []
    machine = machine_in(state, listener=lambda m, prev: calls.append(prev), clock=clock)
    calls.clear()
    if event in EVENTS_WITH_ERROR:
        machine.handle(event, error="the reason")
        assert machine.error == "the reason"
        assert calls == [state]
    else:
        with pytest.raises(InvalidTransition, match="carries no error"):
            machine.handle(event, error="the reason")
        assert machine.state is state
        assert machine.error is None
        assert calls == []


@pytest.mark.parametrize("pair", VALID_PAIRS, ids=_pair_id)
def test_retry_time_only_accepted_on_events_that_carry_one(pair):
    state, event = pair
    calls = []
    machine = machine_in(state, listener=lambda m, prev: calls.append(prev))
    calls.clear()
    if event in EVENTS_WITH_RETRY:
        machine.handle(event, error="down", retry_at=99.5)
        assert machine.next_retry_at == 99.5
        assert calls == [state]
    else:
        with pytest.raises(InvalidTransition, match="carries no retry time"):
            machine.handle(event, retry_at=99.5)
        assert machine.state is state
        assert machine.next_retry_at is None
        assert calls == []


def test_error_event_accepts_retry_time_without_error_message():
    machine = machine_in(State.CONNECTING)
    machine.handle(Event.ERROR, retry_at=5.0)
    assert machine.state is State.FAILED
    assert machine.next_retry_at == 5.0
    assert machine.error is None


def test_a_misplaced_error_is_refused_even_where_the_event_is_ignored():
    # A caller's bug shows whatever the state.
    machine = ServerStateMachine()
    with pytest.raises(InvalidTransition, match="carries no error"):
        machine.handle(Event.CONNECTED, error="x", retry_at=1.0)


def test_listener_gets_machine_and_previous_state():
    seen: list[tuple[ServerStateMachine, State, State, str | None, float | None]] = []

    def listener(machine: ServerStateMachine, previous: State) -> None:
        # The machine is already in its new state when the listener runs.
        seen.append((machine, previous, machine.state, machine.error, machine.next_retry_at))

    machine = ServerStateMachine(listener=listener)
    machine.handle(Event.START)
    machine.handle(Event.ERROR, error="refused", retry_at=42.0)
    machine.handle(Event.RETRY)
    machine.handle(Event.CONNECTED)
    machine.handle(Event.STOP)
    assert all(entry[0] is machine for entry in seen)
    assert [entry[1:] for entry in seen] == [
        (State.DISABLED, State.CONNECTING, None, None),
        (State.CONNECTING, State.FAILED, "refused", 42.0),
        (State.FAILED, State.CONNECTING, None, None),
        (State.CONNECTING, State.CONNECTED, None, None),
        (State.CONNECTED, State.DISABLED, None, None),
    ]


def test_listener_is_called_for_a_self_transition():
    previous_states = []
    machine = machine_in(State.FAILED, listener=lambda m, prev: previous_states.append(prev))
    previous_states.clear()
    machine.handle(Event.ERROR, error="again", retry_at=2.0)
    assert previous_states == [State.FAILED]
    assert machine.state is State.FAILED
    assert machine.error == "again"


def test_no_listener_is_fine():
    machine = ServerStateMachine(listener=None)
    assert machine.handle(Event.START) is State.CONNECTING


def test_since_uses_the_injected_clock():
    clock = FakeClock(start=100.0)
    machine = ServerStateMachine(clock=clock)
    assert machine.state is State.DISABLED
    assert machine.since == 100.0
    clock.now = 250.5
    machine.handle(Event.START)
    assert machine.since == 250.5
    clock.now = 300.0
    machine.handle(Event.CONNECTED)
    assert machine.since == 300.0


def test_since_is_stamped_before_the_listener_runs():
    clock = FakeClock(start=1.0)
    stamps = []
    machine = ServerStateMachine(listener=lambda m, prev: stamps.append(m.since), clock=clock)
    clock.now = 7.0
    machine.handle(Event.START)
    assert stamps == [7.0]


def test_since_is_restamped_on_a_self_transition():
    clock = FakeClock(start=0.0)
    machine = machine_in(State.FAILED, clock=clock)
    clock.now = 60.0
    machine.handle(Event.ERROR, error="still down", retry_at=120.0)
    assert machine.since == 60.0


def test_ignored_and_refused_events_do_not_read_the_clock():
    clock = FakeClock()
    machine = ServerStateMachine(clock=clock)
    calls_before = clock.calls
    machine.handle(Event.RETRY)
    with pytest.raises(InvalidTransition):
        machine.handle(Event.START, error="nope")
    assert clock.calls == calls_before


def test_new_machine_is_disabled_without_error():
    machine = ServerStateMachine(clock=FakeClock(start=3.0))
    assert machine.state is State.DISABLED
    assert machine.error is None
    assert machine.next_retry_at is None
    assert machine.since == 3.0


@pytest.mark.parametrize(
    ("setup", "clearing_event"),
    [
        ([Event.START, Event.ERROR], Event.RETRY),
        ([Event.START, Event.ERROR], Event.STOP),
        ([Event.START, Event.AUTH_REQUIRED], Event.AUTHORIZE),
        ([Event.START, Event.ERROR], Event.AUTHORIZE),
    ],
)
def test_transition_without_extras_clears_error_and_retry(setup, clearing_event):
    machine = ServerStateMachine()
    for event in setup:
        kwargs: dict[str, Any] = {}
        if event in EVENTS_WITH_ERROR:
            kwargs["error"] = f"{event.name} happened"
        if event in EVENTS_WITH_RETRY:
            kwargs["retry_at"] = 1234.0
        machine.handle(event, **kwargs)
    assert machine.error is not None
    machine.handle(clearing_event)
    assert machine.error is None
    assert machine.next_retry_at is None


def test_error_event_without_retry_clears_the_previous_retry_time():
    machine = machine_in(State.FAILED)
    machine.handle(Event.ERROR, error="first", retry_at=10.0)
    machine.handle(Event.ERROR, error="second")
    assert machine.error == "second"
    assert machine.next_retry_at is None


def test_auth_required_replaces_error_and_drops_retry_time():
    machine = machine_in(State.CONNECTING)
    machine.handle(Event.ERROR, error="timeout", retry_at=10.0)
    machine.handle(Event.AUTH_REQUIRED, error="401 from server")
    assert machine.state is State.NEEDS_AUTH
    assert machine.error == "401 from server"
    assert machine.next_retry_at is None


def test_misconfigured_is_failed_for_good():
    machine = ServerStateMachine()
    machine.handle(Event.MISCONFIGURED, error="bad url")
    assert machine.state is State.FAILED
    assert machine.error == "bad url"
    assert machine.next_retry_at is None
    with pytest.raises(InvalidTransition):
        machine.handle(Event.MISCONFIGURED, error="bad url", retry_at=1.0)


def test_needs_client_registration_is_left_by_a_new_sign_in_a_stop_or_a_fault():
    leaving = {
        Event.AUTHORIZE: State.AUTHORIZING,
        Event.STOP: State.DISABLED,
        Event.FAULT: State.FAILED,
        Event.MISCONFIGURED: State.FAILED,
    }
    for event in Event:
        assert TRANSITIONS[State.NEEDS_CLIENT_REGISTRATION, event] is leaving.get(event, IGNORED)


def test_full_authorization_journey():
    machine = ServerStateMachine()
    journey: list[tuple[Event, dict[str, Any], State]] = [
        (Event.START, {}, State.CONNECTING),
        (Event.AUTH_REQUIRED, {"error": "401"}, State.NEEDS_AUTH),
        (Event.AUTHORIZE, {}, State.AUTHORIZING),
        (Event.AUTHORIZATION_FAILED, {"error": "denied"}, State.NEEDS_AUTH),
        (Event.AUTHORIZE, {}, State.AUTHORIZING),
        (Event.AUTHORIZED, {}, State.CONNECTING),
        (Event.CONNECTED, {}, State.CONNECTED),
        (Event.CONNECTION_LOST, {}, State.CONNECTING),
        (Event.CONNECTED, {}, State.CONNECTED),
    ]
    for event, kwargs, expected in journey:
        assert machine.handle(event, **kwargs) is expected


def test_state_values_are_the_wire_strings():
    # Status and events put these on the wire; StrEnum makes them plain strings.
    assert {str(state) for state in State} == {
        "disabled",
        "connecting",
        "connected",
        "needs_auth",
        "needs_client_registration",
        "authorizing",
        "failed",
    }
    assert State("needs_auth") is State.NEEDS_AUTH
    assert isinstance(State.NEEDS_AUTH, str)
