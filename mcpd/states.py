"""The per-server state machine: every state, every event, one table.

Theory of operation
-------------------
Each configured server is in exactly one state at a time. The state changes
only when something happens to the server, and each such happening is an
`Event`. `TRANSITIONS` is total: for every (state, event) pair it names the
next state, or `IGNORED` when that event means nothing in that state (a
session that comes up while a sign-in is under way, a retry time that passes
after the server was stopped). The code that reports events never checks the
state first; the table decides.

    disabled ──START──▶ connecting ──CONNECTED──▶ connected
                         │   ▲  ▲                    │
             AUTH_REQUIRED  │  RETRY            CONNECTION_LOST
                         ▼   │  │                    ▼
                     needs_auth failed ◀──ERROR── (connecting, connected)
                         │         ▲
                    AUTHORIZE      │ FAULT (from any state but disabled)
                         ▼         │
                     authorizing ──AUTHORIZED──▶ connecting

`needs_client_registration` is entered when no client identity can be had
for the authorization server (nothing configured, no metadata document
support, no dynamic registration); a changed config (a restart of the
server) or a new sign-in leaves it. STOP leads to `disabled` from anywhere,
`MISCONFIGURED` marks an entry the config could not describe as `failed` for
good (no retry time), and `FAULT` is a failure of mcpd's own code in the
server's tasks: `failed`, with the time its supervisor restarts them.
`REFRESH_FAILED` gives a server that failed for want of a fresh token the
refresh's next retry time, and changes nothing elsewhere (the status shows the
failing refresh).

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
    REFRESH_FAILED = enum.auto()  # a refresh failed for a passing reason; retried later
    FAULT = enum.auto()  # mcpd's own code failed in the server's tasks; restarted later
    MISCONFIGURED = enum.auto()  # the config entry is invalid
    STOP = enum.auto()  # disabled, removed, or the daemon is stopping


S, E = State, Event
IGNORED: Final = None

# One row per state, one entry per event, in the order of `Event`.
_ROWS: Final[dict[State, dict[Event, State | None]]] = {
    S.DISABLED: {
        E.START: S.CONNECTING,
        E.CONNECTED: IGNORED,
        E.CONNECTION_LOST: IGNORED,
        E.ERROR: IGNORED,
        E.RETRY: IGNORED,
        E.AUTH_REQUIRED: IGNORED,
        E.CLIENT_REGISTRATION_REQUIRED: IGNORED,
        E.AUTHORIZE: IGNORED,
        E.AUTHORIZED: IGNORED,
        E.AUTHORIZATION_FAILED: IGNORED,
        E.REFRESH_FAILED: IGNORED,
        E.FAULT: IGNORED,
        E.MISCONFIGURED: S.FAILED,
        E.STOP: IGNORED,
    },
    S.CONNECTING: {
        E.START: IGNORED,
        E.CONNECTED: S.CONNECTED,
        E.CONNECTION_LOST: IGNORED,  # reconnecting already
        E.ERROR: S.FAILED,
        E.RETRY: IGNORED,
        E.AUTH_REQUIRED: S.NEEDS_AUTH,
        E.CLIENT_REGISTRATION_REQUIRED: S.NEEDS_CLIENT_REGISTRATION,
        E.AUTHORIZE: S.AUTHORIZING,
        E.AUTHORIZED: IGNORED,
        E.AUTHORIZATION_FAILED: IGNORED,
        E.REFRESH_FAILED: IGNORED,
        E.FAULT: S.FAILED,
        E.MISCONFIGURED: S.FAILED,
        E.STOP: S.DISABLED,
    },
    S.CONNECTED: {
        E.START: IGNORED,
        E.CONNECTED: IGNORED,  # another of its sessions (one per editor)
        E.CONNECTION_LOST: S.CONNECTING,
        E.ERROR: S.FAILED,
        E.RETRY: IGNORED,
        E.AUTH_REQUIRED: S.NEEDS_AUTH,
        E.CLIENT_REGISTRATION_REQUIRED: S.NEEDS_CLIENT_REGISTRATION,
        E.AUTHORIZE: S.AUTHORIZING,
        E.AUTHORIZED: IGNORED,
        E.AUTHORIZATION_FAILED: IGNORED,
        E.REFRESH_FAILED: IGNORED,  # the token still works; status shows the failure
        E.FAULT: S.FAILED,
        E.MISCONFIGURED: S.FAILED,
        E.STOP: S.DISABLED,
    },
    S.NEEDS_AUTH: {
        E.START: IGNORED,
        E.CONNECTED: IGNORED,  # a session that was opening when the token was refused
        E.CONNECTION_LOST: IGNORED,
        E.ERROR: IGNORED,  # only a sign-in helps
        E.RETRY: IGNORED,
        E.AUTH_REQUIRED: IGNORED,  # known already
        E.CLIENT_REGISTRATION_REQUIRED: S.NEEDS_CLIENT_REGISTRATION,
        E.AUTHORIZE: S.AUTHORIZING,
        E.AUTHORIZED: IGNORED,
        E.AUTHORIZATION_FAILED: IGNORED,
        E.REFRESH_FAILED: IGNORED,
        E.FAULT: S.FAILED,
        E.MISCONFIGURED: S.FAILED,
        E.STOP: S.DISABLED,
    },
    S.NEEDS_CLIENT_REGISTRATION: {
        E.START: IGNORED,
        E.CONNECTED: IGNORED,
        E.CONNECTION_LOST: IGNORED,
        E.ERROR: IGNORED,
        E.RETRY: IGNORED,
        E.AUTH_REQUIRED: IGNORED,
        E.CLIENT_REGISTRATION_REQUIRED: IGNORED,
        E.AUTHORIZE: S.AUTHORIZING,  # a new attempt: the server may offer one now
        E.AUTHORIZED: IGNORED,
        E.AUTHORIZATION_FAILED: IGNORED,
        E.REFRESH_FAILED: IGNORED,
        E.FAULT: S.FAILED,
        E.MISCONFIGURED: S.FAILED,
        E.STOP: S.DISABLED,
    },
    S.AUTHORIZING: {
        E.START: IGNORED,
        E.CONNECTED: IGNORED,  # the sign-in decides what comes next
        E.CONNECTION_LOST: IGNORED,
        E.ERROR: IGNORED,
        E.RETRY: IGNORED,
        E.AUTH_REQUIRED: IGNORED,
        E.CLIENT_REGISTRATION_REQUIRED: S.NEEDS_CLIENT_REGISTRATION,
        E.AUTHORIZE: IGNORED,  # joined the flow under way
        E.AUTHORIZED: S.CONNECTING,
        E.AUTHORIZATION_FAILED: S.NEEDS_AUTH,
        E.REFRESH_FAILED: IGNORED,
        E.FAULT: S.FAILED,
        E.MISCONFIGURED: S.FAILED,
        E.STOP: S.DISABLED,
    },
    S.FAILED: {
        E.START: IGNORED,
        E.CONNECTED: S.CONNECTED,  # a retry made early (someone was waiting)
        E.CONNECTION_LOST: IGNORED,
        E.ERROR: S.FAILED,  # failed again, with a new retry time
        E.RETRY: S.CONNECTING,
        E.AUTH_REQUIRED: S.NEEDS_AUTH,
        E.CLIENT_REGISTRATION_REQUIRED: S.NEEDS_CLIENT_REGISTRATION,
        E.AUTHORIZE: S.AUTHORIZING,
        E.AUTHORIZED: IGNORED,
        E.AUTHORIZATION_FAILED: IGNORED,
        E.REFRESH_FAILED: S.FAILED,  # with the refresh's next retry time
        E.FAULT: S.FAILED,
        E.MISCONFIGURED: S.FAILED,
        E.STOP: S.DISABLED,
    },
}

TRANSITIONS: Final[dict[tuple[State, Event], State | None]] = {
    (state, event): target for state, row in _ROWS.items() for event, target in row.items()
}

# Events that carry an error message, and those that also carry a retry time.
EVENTS_WITH_ERROR: Final = frozenset(
    {
        E.ERROR,
        E.AUTH_REQUIRED,
        E.CLIENT_REGISTRATION_REQUIRED,
        E.AUTHORIZATION_FAILED,
        E.REFRESH_FAILED,
        E.FAULT,
        E.MISCONFIGURED,
    }
)
EVENTS_WITH_RETRY: Final = frozenset({E.ERROR, E.REFRESH_FAILED, E.FAULT})


class InvalidTransition(RuntimeError):
    """An event given what it cannot carry (an error, a retry time): a bug of the caller."""


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
        """Apply `event`; the state after it (unchanged when the table ignores it)."""
        if error is not None and event not in EVENTS_WITH_ERROR:
            raise InvalidTransition(f"{event.name} carries no error")
        if retry_at is not None and event not in EVENTS_WITH_RETRY:
            raise InvalidTransition(f"{event.name} carries no retry time")
        new = TRANSITIONS[self.state, event]
        if new is IGNORED:
            return self.state
        previous = self.state
        self.state = new
        self.error = error
        self.next_retry_at = retry_at
        self.since = self._clock()
        if self._listener is not None:
            self._listener(self, previous)
        return new
