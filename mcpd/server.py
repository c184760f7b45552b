"""One configured server at run time: its state, its session, its editors.

The daemon starts a `ServerRuntime` per config entry in its own task group and
stops it by cancelling the runtime's scope. Inside, the runtime keeps the
upstream session alive: it connects, serves until the connection fails,
reports `failed` with the next retry time, waits (exponential backoff with
jitter), and tries again. Editors attach to the runtime, not to a connection,
so they stay attached while the server comes and goes.

With `session = "per-client"` every editor gets a session of its own, opened
with that editor's own initialize parameters and kept the same way; the
runtime's own session still serves `mcpctl tools`/`call` and the status.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .config import ServerEntry
from .httpclient import HttpClient
from .oauth.discovery import Challenge, parse_challenge
from .oauth.flow import union_scope
from .oauth.http import OAuthError, Origin
from .oauth.refresher import Refresher
from .protocol import ServerStatus
from .states import Event, ServerStateMachine, State
from .store import CredentialRecord, UnreadableRecord
from .upstream import jsonrpc
from .upstream.keeper import SessionKeeper
from .upstream.mux import EditorId
from .upstream.session import EditorSink, UpstreamSession, first_of
from .upstream.transport import AuthorizationRequired, UpstreamError, describe

log = logging.getLogger(__name__)

StateListener = Callable[["ServerRuntime", State], None]
RecordLoader = Callable[[str, str], Awaitable[CredentialRecord | None]]
RecordSaver = Callable[[CredentialRecord], Awaitable[None]]


class Unavailable(Exception):
    """The server cannot take requests now; the message says why and what fixes it."""


class ServerRuntime:
    def __init__(
        self,
        entry: ServerEntry,
        on_change: StateListener,
        load_record: RecordLoader,
        max_message_size: int,
        save_record: RecordSaver,
    ):
        self.entry = entry
        self.record: CredentialRecord | None = None
        self.refresher: Refresher | None = None
        self._load_record = load_record
        self._save_record = save_record
        self._on_change = on_change
        self._max_message_size = max_message_size
        # Made here, so that a server stopped before it ran never starts.
        self._scope = anyio.CancelScope()
        self._tg: TaskGroup | None = None
        self._client: HttpClient | None = None
        self.keeper: SessionKeeper | None = None
        self._per_client: dict[EditorId, SessionKeeper] = {}
        self._sinks: dict[EditorId, EditorSink] = {}
        # The last authorization challenge, and a scope a 403 asked for (step-up).
        self.challenge: Challenge | None = None
        self.required_scope: str | None = None
        self.machine = ServerStateMachine(self._changed)

    @property
    def name(self) -> str:
        return self.entry.name

    def _changed(self, machine: ServerStateMachine, previous: State) -> None:
        log.info(
            "state changed",
            extra={
                "server": self.name,
                "from": previous,
                "to": machine.state,
                **({"error": machine.error} if machine.error else {}),
            },
        )
        self._on_change(self, previous)

    def status(self) -> ServerStatus:
        machine, tokens = self.machine, self.record.tokens if self.record else None
        schedule = self.refresher.schedule if self.refresher else None
        error, retry_at = machine.error, machine.next_retry_at
        if error is None and schedule is not None and schedule.last_error is not None:
            # Connected, but the refresh is failing: say so, and when it tries again.
            error = f"token refresh failing ({schedule.failures}x): {schedule.last_error}"
            retry_at = schedule.due
        return ServerStatus(
            name=self.name,
            url=self.entry.display_url,
            state=machine.state,
            since=machine.since,
            error=error,
            next_retry_at=retry_at,
            access_expires_at=tokens.expires_at if tokens else None,
            last_refresh_at=self.record.last_refresh_at if self.record else None,
            next_refresh_at=schedule.due if schedule else None,
        )

    # --- Life -----------------------------------------------------------------------

    def start(self) -> bool:
        """The first step, taken at once (so that the daemon's READY status is
        true): whether there is anything to run. A misconfigured or disabled
        server has not."""
        config = self.entry.config
        if config is None:
            self.machine.handle(Event.MISCONFIGURED, error=self.entry.error)
            return False
        if not config.enabled:
            return False
        self.machine.handle(Event.START)
        return True

    async def run(self) -> None:
        """After `start`: connect and serve until stopped."""
        config = self.entry.config
        assert config is not None
        with self._scope:
            try:
                self.record = await self._load_record(self.name, config.url)
            except UnreadableRecord as exc:
                self.machine.handle(Event.AUTH_REQUIRED, error=str(exc))
                return
            async with (
                HttpClient(verify=config.verify, connect_timeout=config.timeout) as client,
                anyio.create_task_group() as tg,
            ):
                self._client, self._tg = client, tg
                self.refresher = Refresher(self, self._save_record, self._load_record)
                tg.start_soon(self.refresher.run)
                self.keeper = self._keeper(None, self._connected, self._lost, self._retrying)
                try:
                    await self.keeper.run()
                finally:
                    for keeper in [self.keeper, *self._per_client.values()]:
                        await keeper.close()

    def _keeper(
        self,
        initialize_params: dict[str, Any] | None,
        on_connected: Callable[[], None],
        on_lost: Callable[[BaseException, float | None], None],
        on_retry: Callable[[], None] = lambda: None,
    ) -> SessionKeeper:
        assert self._client is not None
        assert self.entry.config is not None
        session = UpstreamSession(
            self.name,
            self.entry.config,
            self._client,
            self._max_message_size,
            initialize_params=initialize_params,
            bearer=self.bearer,
            on_unauthorized=self._unauthorized,
        )
        return SessionKeeper(session, on_connected, on_lost, on_retry)

    def _connected(self) -> None:
        # A session may come up after the state moved on without it: a refresh
        # refused meanwhile (needs_auth stays), or a retry that was pending.
        if self.machine.state is State.FAILED:
            self.machine.handle(Event.RETRY)
        if self.machine.state is State.CONNECTING:
            self.machine.handle(Event.CONNECTED)

    # --- Credentials ------------------------------------------------------------------

    def static_authorization(self) -> bool:
        config = self.entry.config
        return config is not None and any(k.lower() == "authorization" for k in config.headers)

    def bearer(self) -> str | None:
        """The OAuth access token to send, if OAuth applies and one is stored."""
        config = self.entry.config
        if config is None or config.oauth is False or self.static_authorization():
            return None
        tokens = self.record.tokens if self.record else None
        return tokens.access_token if tokens else None

    def http(self) -> tuple[HttpClient, Origin, float]:
        """What the OAuth steps need to reach this server's authorization server."""
        config = self.entry.config
        if self._client is None or config is None:
            raise OAuthError(f"server {self.name!r} is not running")
        return self._client, Origin(config.url, dict(config.headers)), config.timeout

    async def wait_usable(self) -> bool:
        """After new credentials: whether the server connects, within its timeout."""
        keeper, config = self.keeper, self.entry.config
        if keeper is None or config is None:
            return False
        with anyio.move_on_after(config.timeout):
            while not keeper.connected.is_set():
                await first_of(keeper.connected, keeper.attempt_failed)
                if self.machine.state not in (State.CONNECTING, State.CONNECTED):
                    break  # failed, or needs authorization again
        return keeper.connected.is_set()

    async def _unauthorized(self, token: str) -> bool:
        """The server refused `token`: one refresh (shared), True if a new token is in place."""
        return self.refresher is not None and await self.refresher.refresh(token)

    def refresh_succeeded(self) -> None:
        """A new access token: sessions use it from their next request; a session
        that stopped for want of one tries again now."""
        for keeper in [self.keeper, *self._per_client.values()]:
            if keeper is not None and not keeper.connected.is_set():
                keeper.retry_now()

    def refresh_failing(self) -> None:
        """A passing failure: the tokens are kept; status shows the error and the retry."""
        schedule = self.refresher.schedule if self.refresher else None
        if self.machine.state is State.FAILED and schedule is not None:
            error = f"the access token expired; refreshing it failed: {schedule.last_error}"
            self.machine.handle(Event.ERROR, error=error, retry_at=schedule.due)
        else:
            self._on_change(self, self.machine.state)

    def refresh_refused(self, reason: str) -> None:
        if self.machine.state in (State.CONNECTING, State.CONNECTED, State.FAILED):
            self.machine.handle(Event.AUTH_REQUIRED, error=reason)

    def begin_authorization(self) -> None:
        if self.machine.state is not State.AUTHORIZING:
            self.machine.handle(Event.AUTHORIZE)

    def authorized(self, record: CredentialRecord) -> None:
        self.record = record
        self.required_scope = None
        if self.refresher is not None:
            self.refresher.planned(record)
        if self.machine.state is State.AUTHORIZING:
            self.machine.handle(Event.AUTHORIZED)
        self._renew_sessions("new credentials")

    def authorization_failed(self, reason: str) -> None:
        if self.machine.state is State.AUTHORIZING:
            self.machine.handle(Event.AUTHORIZATION_FAILED, error=reason)

    def client_registration_required(self, reason: str) -> None:
        if self.machine.state is State.AUTHORIZING:
            self.machine.handle(Event.CLIENT_REGISTRATION_REQUIRED, error=reason)

    def logged_out(self, record: CredentialRecord | None) -> None:
        self.record = record
        if self.refresher is not None:
            self.refresher.planned(record)
        self._renew_sessions("signed out")

    def _renew_sessions(self, reason: str) -> None:
        """Open new sessions with the current credentials (or none)."""
        for keeper in [self.keeper, *self._per_client.values()]:
            if keeper is None:
                continue
            if keeper.connected.is_set():
                keeper.session.reconnect(reason)
            else:
                keeper.retry_now()

    def _auth_required(self, failure: AuthorizationRequired) -> None:
        config = self.entry.config
        self.challenge = parse_challenge(failure.challenge)
        if self.challenge is not None and self.challenge.error == "insufficient_scope":
            granted = self.record.tokens.scope if self.record and self.record.tokens else None
            self.required_scope = union_scope(granted, self.challenge.scope)
        state = self.machine.state
        if config is not None and config.oauth is None and self.static_authorization():
            error = (
                "the server refused the configured credentials (HTTP 401): "
                "check the Authorization header in the config"
            )
        elif config is not None and config.oauth is False:
            error = f"{failure}, but oauth = false for this server"
        elif self.refresher is not None and self.refresher.schedule.last_error is not None:
            # The token expired while its refresh keeps failing for a passing
            # reason: not the user's to fix; the next good refresh reconnects.
            schedule = self.refresher.schedule
            error = f"the access token expired; refreshing it failed: {schedule.last_error}"
            if state in (State.CONNECTING, State.CONNECTED, State.FAILED):
                self.machine.handle(Event.ERROR, error=error, retry_at=schedule.due)
            return
        else:
            if state not in (State.NEEDS_AUTH, State.AUTHORIZING, State.NEEDS_CLIENT_REGISTRATION):
                refused = " and refused the stored token" if self.bearer() else ""
                self.machine.handle(Event.AUTH_REQUIRED, error=f"{failure}{refused}")
            return
        if state in (State.CONNECTING, State.CONNECTED, State.FAILED):
            self.machine.handle(Event.ERROR, error=error)

    def _lost(self, failure: BaseException, retry_at: float | None) -> None:
        reason = describe(failure)
        state = self.machine.state
        if isinstance(failure, AuthorizationRequired):
            self._auth_required(failure)
            return
        if retry_at is None and state in (State.CONNECTED, State.CONNECTING):
            # The keeper reconnects at once: a session that dropped, or one
            # renewed for new credentials (not a failure, whatever the state).
            if state is State.CONNECTED:
                log.info(
                    "connection lost; reconnecting", extra={"server": self.name, "error": reason}
                )
                self.machine.handle(Event.CONNECTION_LOST)
            return
        if state is State.FAILED or state in (State.CONNECTING, State.CONNECTED):
            self.machine.handle(Event.ERROR, error=reason, retry_at=retry_at)

    def _retrying(self) -> None:
        if self.machine.state is State.FAILED:
            self.machine.handle(Event.RETRY)

    def stop(self) -> None:
        self._scope.cancel()
        if self.machine.state is not State.DISABLED:
            self.machine.handle(Event.STOP)

    # --- Editors and the daemon's own requests ------------------------------------------

    def _unavailable(self) -> Unavailable:
        state, error = self.machine.state, self.machine.error
        detail = f": {error}" if error else ""
        fixes = {
            State.DISABLED: f"enable it (enabled = true in [servers.{self.name}]) and run "
            "`mcpctl reload`",
            State.FAILED: f"mcpd retries by itself; `mcpctl status {self.name}` shows when"
            if self.machine.next_retry_at is not None
            else f"fix [servers.{self.name}] in the config and run `mcpctl reload`",
            State.NEEDS_AUTH: f"sign in with `mcpctl auth {self.name}`",
            State.NEEDS_CLIENT_REGISTRATION: f"set oauth.client_id in [servers.{self.name}] "
            "and run `mcpctl reload`",
            State.AUTHORIZING: "finish the sign-in in the browser",
            State.CONNECTING: f"it did not connect in time; see `mcpctl status {self.name}`",
        }
        fix = fixes.get(state, f"see `mcpctl status {self.name}`")
        return Unavailable(f"server {self.name!r} is {state}{detail}; {fix}")

    async def _wait_connected(
        self, keeper: SessionKeeper | None, *, patient: bool = False
    ) -> SessionKeeper:
        """The keeper once connected; waits while the server is connecting (or, if
        `patient`, whatever the state), up to the timeout."""
        config = self.entry.config
        if keeper is None or config is None:
            raise self._unavailable()
        state = self.machine.state
        if state is State.FAILED and self.machine.next_retry_at is not None:
            keeper.retry_now()
            patient = True
        if not keeper.connected.is_set() and (patient or state is State.CONNECTING):
            # Until the attempt under way succeeds or fails, no longer.
            with anyio.move_on_after(config.timeout):
                await first_of(keeper.connected, keeper.attempt_failed)
        if not keeper.connected.is_set():
            raise self._unavailable()
        return keeper

    async def request(
        self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """A request of the daemon's own (e.g. tools/list), on the shared session."""
        keeper = await self._wait_connected(self.keeper)
        try:
            return await keeper.session.request(method, params, timeout)
        except AuthorizationRequired as exc:
            raise Unavailable(
                f"server {self.name!r}: {exc}; sign in with `mcpctl auth {self.name}`"
            ) from None
        except UpstreamError as exc:
            raise Unavailable(f"server {self.name!r}: {exc}") from None

    def attach(self, editor: EditorId, sink: EditorSink, replay: bytes | None = None) -> None:
        """Attach an editor; `replay` is its initialize from an earlier attachment,
        taken as already answered."""
        self._sinks[editor] = sink
        config = self.entry.config
        per_client = config is not None and config.session == "per-client"
        if not per_client and self.keeper is not None:
            self.keeper.session.attach(editor, sink)
        try:
            message = jsonrpc.decode(replay) if replay else None
        except jsonrpc.InvalidMessage:
            message = None
        if message is None or message.get("method") != "initialize":
            return
        if per_client:
            keeper = self._start_per_client(editor, message.get("params"))
        elif self.keeper is not None:
            keeper = self.keeper
        else:
            return
        keeper.session.mux.initialize_editor(editor, message.get("params"))

    def detach(self, editor: EditorId) -> None:
        self._sinks.pop(editor, None)
        if self.keeper is not None:
            self.keeper.session.detach(editor)
        keeper = self._per_client.pop(editor, None)
        if keeper is not None and self._tg is not None:
            keeper.session.detach(editor)
            self._tg.start_soon(keeper.close)

    async def from_editor(self, editor: EditorId, raw: bytes) -> None:
        """A JSON-RPC message from an editor: route it, or answer it with an error."""
        sink = self._sinks.get(editor)
        if sink is None:
            return
        try:
            message = jsonrpc.decode(raw)
        except jsonrpc.InvalidMessage as exc:
            sink(jsonrpc.encode(jsonrpc.error(None, jsonrpc.PARSE_ERROR, f"parse error: {exc}")))
            return
        try:
            keeper = await self._keeper_for(editor, message)
        except Unavailable as exc:
            if jsonrpc.is_request(message):
                sink(
                    jsonrpc.encode(
                        jsonrpc.error(message["id"], jsonrpc.SERVER_UNAVAILABLE, str(exc))
                    )
                )
            return
        keeper.session.from_editor(editor, message)

    async def _keeper_for(self, editor: EditorId, message: dict[str, Any]) -> SessionKeeper:
        config = self.entry.config
        if config is None or config.session == "shared":
            return await self._wait_connected(self.keeper)
        keeper = self._per_client.get(editor)
        if keeper is None:
            if message.get("method") != "initialize":
                raise Unavailable(
                    f"server {self.name!r} runs one session per editor: send initialize first"
                )
            await self._wait_connected(self.keeper)  # the server is reachable at all
            keeper = self._start_per_client(editor, message.get("params"))
        return await self._wait_connected(keeper, patient=True)

    def _start_per_client(self, editor: EditorId, params: Any) -> SessionKeeper:
        """An editor's own session, initialized with the editor's own parameters."""
        if self._tg is None:
            raise self._unavailable()
        keeper = self._keeper(
            params if isinstance(params, dict) else None, lambda: None, self._editor_lost
        )
        keeper.session.attach(editor, self._sinks[editor])
        self._per_client[editor] = keeper
        self._tg.start_soon(keeper.run)
        return keeper

    def _editor_lost(self, failure: BaseException, retry_at: float | None) -> None:
        log.info(
            "an editor's own session was lost",
            extra={"server": self.name, "error": describe(failure)},
        )
