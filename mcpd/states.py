"""The per-server state machine: every state, every event, one table.

Theory of operation
-------------------
Each configured server is in exactly one state at a time. The state changes
only when something happens to the server, and each such happening is an
`Event`. `TRANSITIONS` maps (state, event) to the next state; a pair missing
from the table is a bug in the caller and raises `InvalidTransition`, so an
impossible sequence (say, `CONNECTED` while `disabled`) is caught where it
happens instead of showing up later as a confusing status.

    disabled ──START──▶ connecting ──CONNECTED──▶ connected
                         │   ▲  ▲                    │
             AUTH_REQUIRED  │  RETRY            CONNECTION_LOST
                         ▼   │  │                    ▼
                     needs_auth failed ◀──ERROR── (connecting, connected,
                         │         ▲                authorizing)
                    AUTHORIZE      │
                         ▼         │
                     authorizing ──AUTHORIZED──▶ connecting

`needs_client_registration` is entered when no client identity can be had
for the authorization server (nothing configured, no metadata document
support, no dynamic registration); only a changed config (a restart of the
server) leaves it. STOP leads to `disabled` from anywhere, and
`MISCONFIGURED` marks an entry the config could not describe as `failed`
for good (no retry time).

The machine is sans-IO: it records the state, the error and the retry time
and reports each change to a listener; it never touches a socket or a clock
beyond stamping when the state was entered.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Final


class State(enum.StrEnum):
    DISABLED = "disabled"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    NEEDS_AUTH = "needs_auth"
    NEEDS_CLIENT_REGISTRATION = "needs_client_registration"
    AUTHORIZING = "authorizing"
    FAILED = "failed"


class Event(enum.Enum):
    START = enum.auto()  # an enabled server is started
    CONNECTED = enum.auto()  # the upstream session is established
    CONNECTION_LOST = enum.auto()  # an established session dropped; reconnect
    ERROR = enum.auto()  # connecting or serving failed; retry later
    RETRY = enum.auto()  # the retry time has come
    AUTH_REQUIRED = enum.auto()  # credentials are missing, refused or unreadable
    CLIENT_REGISTRATION_REQUIRED = enum.auto()  # no way to get a client id
    AUTHORIZE = enum.auto()  # a user started the authorization flow
    AUTHORIZED = enum.auto()  # the flow produced tokens
    AUTHORIZATION_FAILED = enum.auto()  # the flow was denied, timed out or broke
    MISCONFIGURED = enum.auto()  # the config entry is invalid
    STOP = enum.auto()  # disabled, removed, or the daemon is stopping


S, E = State, Event

TRANSITIONS: Final[dict[tuple[State, Event], State]] = {
    (S.DISABLED, E.START): S.CONNECTING,
    (S.DISABLED, E.MISCONFIGURED): S.FAILED,
    (S.CONNECTING, E.CONNECTED): S.CONNECTED,
    (S.CONNECTING, E.ERROR): S.FAILED,
    (S.CONNECTING, E.AUTH_REQUIRED): S.NEEDS_AUTH,
    (S.CONNECTING, E.CLIENT_REGISTRATION_REQUIRED): S.NEEDS_CLIENT_REGISTRATION,
    (S.CONNECTING, E.AUTHORIZE): S.AUTHORIZING,
    (S.CONNECTED, E.CONNECTION_LOST): S.CONNECTING,
    (S.CONNECTED, E.ERROR): S.FAILED,
    (S.CONNECTED, E.AUTH_REQUIRED): S.NEEDS_AUTH,
    (S.CONNECTED, E.AUTHORIZE): S.AUTHORIZING,
    (S.FAILED, E.RETRY): S.CONNECTING,
    (S.FAILED, E.ERROR): S.FAILED,  # a retry that failed again, with a new retry time
    (S.FAILED, E.AUTH_REQUIRED): S.NEEDS_AUTH,
    (S.FAILED, E.AUTHORIZE): S.AUTHORIZING,
    (S.NEEDS_AUTH, E.AUTHORIZE): S.AUTHORIZING,
    (S.NEEDS_AUTH, E.CLIENT_REGISTRATION_REQUIRED): S.NEEDS_CLIENT_REGISTRATION,
    (S.AUTHORIZING, E.AUTHORIZED): S.CONNECTING,
    (S.AUTHORIZING, E.AUTHORIZATION_FAILED): S.NEEDS_AUTH,
    (S.AUTHORIZING, E.CLIENT_REGISTRATION_REQUIRED): S.NEEDS_CLIENT_REGISTRATION,
    (S.AUTHORIZING, E.ERROR): S.FAILED,
    **{(state, E.STOP): S.DISABLED for state in State},
}

# Events that carry an error message, and those that also carry a retry time.
EVENTS_WITH_ERROR: Final = frozenset(
    {
        E.ERROR,
        E.AUTH_REQUIRED,
        E.CLIENT_REGISTRATION_REQUIRED,
        E.AUTHORIZATION_FAILED,
        E.MISCONFIGURED,
    }
)
EVENTS_WITH_RETRY: Final = frozenset({E.ERROR})


class InvalidTransition(RuntimeError):
    pass


Listener = Callable[["ServerStateMachine", State], None]


class ServerStateMachine:
    """One server's state, its error and retry time, and when it was entered."""

    def __init__(self, listener: Listener | None = None, clock: Callable[[], float] = time.time):
        self.state = State.DISABLED
        self.error: str | None = None
        self.next_retry_at: float | None = None
        self._clock = clock
        self.since = clock()
        self._listener = listener

    def handle(
        self, event: Event, *, error: str | None = None, retry_at: float | None = None
    ) -> State:
        try:
            new = TRANSITIONS[self.state, event]
        except KeyError:
            raise InvalidTransition(f"{event.name} is not valid in state {self.state}") from None
        if error is not None and event not in EVENTS_WITH_ERROR:
            raise InvalidTransition(f"{event.name} carries no error")
        if retry_at is not None and event not in EVENTS_WITH_RETRY:
            raise InvalidTransition(f"{event.name} carries no retry time")
        previous = self.state
        self.state = new
        self.error = error
        self.next_retry_at = retry_at
        self.since = self._clock()
        if self._listener is not None:
            self._listener(self, previous)
        return new
