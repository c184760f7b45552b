"""One configured server at run time: its state, its sessions, its editors.

The daemon starts a `ServerRuntime` per config entry and stops it by
cancelling the runtime's scope. The runtime owns everything of its server:
its HTTP client, its credentials (`credentials.py`), the session kept for
every editor (and, with `session = "per-client"`, one per editor, which
ends when that editor detaches), and their tasks, in one task group.

Supervision: `run` is the server's boundary. An exception escaping any task
of the server (anything but cancellation: a bug, or a peer that found a case
nothing else handles) ends those tasks only. The server goes to `failed`
with a one-line error and a retry time (backoff with jitter, as for
connection failures), one traceback is logged with every known secret
redacted, and the tasks start again at the retry time. The credentials
object and the attached editors outlive the restart; requests in flight are
answered with an error. The daemon and every other server carry on.

Editors attach to the runtime, not to a connection, so they stay attached
while the server comes and goes.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup

from . import logs, signed_out
from .config import ServerEntry
from .credentials import LoadRecord, SaveRecord
from .http import HttpClient, HttpPool
from .machine_credentials import MachineCredentials, connect_with_new_token, credentials_for
from .oauth.discovery import Challenge, parse_challenge
from .oauth.driver import Reach
from .oauth.flow import union_scope
from .oauth.messages import OAuthError
from .protocol import ServerStatus
from .shown import ShownStore
from .states import Event, ServerStateMachine, State
from .upstream import jsonrpc
from .upstream.keeper import SessionKeeper, backoff_delay
from .upstream.mux import EditorId
from .upstream.session import EditorSink, UpstreamSession
from .upstream.toolfilter import ToolFilter
from .upstream.transport import AuthorizationRequired, UpstreamError, describe
from .waiting import first_of

log = logging.getLogger(__name__)

StateListener = Callable[["ServerRuntime", State], None]
# A server whose tasks ran this long before failing starts its backoff afresh.
STABLE_SECONDS = 60.0
# How long an editor's request waits for a sign-in under way.
SIGN_IN_WAIT_SECONDS = 600.0
# A server's sign-in link for editors, and whether it is a new one.
Links = Callable[["ServerRuntime"], tuple[str, bool]]
# The longest error text of a fault that status shows.
FAULT_DETAIL_CHARS = 200


def open_in_browser(url: str) -> None:
    """Open a sign-in link for the user. Under systemd the browser is started
    through the user manager (`systemd-run --user`): a process of the service
    itself would inherit restrictions (MemoryDenyWriteExecute=) that browsers'
    JIT engines do not survive."""
    import webbrowser  # here: importing it costs the daemon 1.5 MB for an option

    runner, opener = shutil.which("systemd-run"), shutil.which("xdg-open")
    try:
        if os.environ.get("INVOCATION_ID") and runner and opener:
            command = [runner, "--user", "--quiet", "--collect", opener, url]
            subprocess.run(command, check=False, capture_output=True, timeout=30)
        else:
            webbrowser.open(url)
    except (OSError, subprocess.SubprocessError, webbrowser.Error) as exc:
        log.info("could not open a browser", extra={"error": type(exc).__name__})


class Unavailable(Exception):
    """The server cannot take requests now; the message says why and what fixes it."""


class ServerRuntime:
    def __init__(
        self,
        entry: ServerEntry,
        on_change: StateListener,
        load_record: LoadRecord,
        save_record: SaveRecord,
        max_message_size: int,
        *,
        pool: HttpPool | None = None,
        shown: ShownStore | None = None,
        links: Links | None = None,
        open_browser: bool = False,
    ):
        self.entry = entry
        self._pool = pool  # the daemon's connections, shared by its servers
        # What the server last showed editors, kept for when it cannot be asked;
        # the daemon's sign-in links; whether to open one in a browser itself.
        self._shown_store = shown
        self._shown = shown.load(entry.name, entry.config.url) if shown and entry.config else None
        self._links = links
        self._open_browser = open_browser
        # Editors told to sign in: their URL elicitations, and whether they were
        # shown kept lists (or none); requests waiting for a sign-in under way.
        self._told: dict[EditorId, tuple[list[str], bool]] = {}
        self._waiting: dict[tuple[EditorId, jsonrpc.Id], anyio.CancelScope] = {}
        # Set at the next transition, for whoever waits for one (made only then).
        self._state_change: anyio.Event | None = None
        self._on_change = on_change
        self._max_message_size = max_message_size
        config = entry.config
        oauth_applies = (
            config is not None and config.oauth is not False and not self.static_authorization()
        )
        settings = config.oauth if config is not None else None
        settings = settings if not isinstance(settings, bool) else None
        # Client credentials (no user, no browser) get MachineCredentials.
        self.credentials = credentials_for(settings, lambda: self.challenge)(
            entry.name,
            config.url if config is not None else "",
            applies=oauth_applies,
            save=save_record,
            load=load_record,
            reach=self.reach,
            listener=self,
            settings=settings,
        )
        # Made here, so that a server stopped before it ran never starts.
        self._scope = anyio.CancelScope()
        self._tg: TaskGroup | None = None
        self._client: HttpClient | None = None
        self._restart = anyio.Event()
        self._credentials_changed = anyio.Event()
        self.keeper: SessionKeeper | None = None
        self._per_client: dict[EditorId, tuple[SessionKeeper, anyio.CancelScope]] = {}
        self._sinks: dict[EditorId, EditorSink] = {}
        # Each editor's initialize params, for the sessions that serve it after a restart.
        self._initialize_params: dict[EditorId, Any] = {}
        # The last authorization challenge, and a scope a 403 asked for (step-up).
        self.challenge: Challenge | None = None
        self.required_scope: str | None = None
        # Whether its authorization server offers a device sign-in (RFC 8628),
        # as the last sign-in found it; None before (status falls back on the record).
        self.device_sign_in: bool | None = None
        self.machine = ServerStateMachine(self._changed)
        logs.redact_from(self)

    @property
    def entry(self) -> ServerEntry:
        return self._entry

    @entry.setter
    def entry(self, entry: ServerEntry) -> None:
        # The one place the configured secrets change: redacted from here on.
        self._entry = entry
        logs.add_secrets(_configured_secrets(entry))

    @property
    def name(self) -> str:
        return self.entry.name

    def secrets(self) -> list[str]:
        """What must never reach a log line: configured header values, the client
        secret, the tokens (see logs.redact_from)."""
        return [*_configured_secrets(self.entry), *self.credentials.secrets()]

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
        changed, self._state_change = self._state_change, None
        if changed is not None:
            changed.set()

    def status(self) -> ServerStatus:
        machine, credentials = self.machine, self.credentials
        record, schedule = credentials.record, credentials.schedule
        tokens = record.tokens if record else None
        error, retry_at = machine.error, machine.next_retry_at
        if error is None and schedule.last_error is not None:
            # Connected, but the refresh is failing: say so, and when it tries again.
            error = f"token refresh failing ({schedule.failures}x): {schedule.last_error}"
            retry_at = schedule.due
        if error is None and credentials.save_error is not None:
            error = f"{credentials.save_error}; the tokens are kept in memory meanwhile"
            retry_at = credentials.save_due
        return ServerStatus(
            name=self.name,
            url=self.entry.display_url,
            state=machine.state,
            since=machine.since,
            error=error,
            next_retry_at=retry_at,
            access_expires_at=tokens.expires_at if tokens else None,
            last_refresh_at=record.last_refresh_at if record else None,
            next_refresh_at=schedule.due,
            protocol=self._protocol(),
            signed_in=tokens is not None if credentials.applies and credentials.loaded else None,
            device_sign_in=self._device_sign_in(),
        )

    def _device_sign_in(self) -> bool | None:
        """Whether a device sign-in is offered: as the last sign-in's discovery
        found, else as the stored record's authorization server says."""
        if self.device_sign_in is not None:
            return self.device_sign_in
        record = self.credentials.record
        if record is None or record.authorization is None:
            return None
        return record.authorization.device_authorization_endpoint is not None

    def _protocol(self) -> str | None:
        """The MCP revision spoken with the server (the shared session's, or the
        first per-client session's), while connected."""
        sessions = [keeper.session for keeper in self._keepers()]
        return next((s.protocol_version for s in sessions if s.connected), None)

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
        """After `start`: connect and serve until stopped. The server's supervision
        boundary: a fault restarts its tasks after a backoff."""
        config = self.entry.config
        assert config is not None
        oauth = config.oauth if not isinstance(config.oauth, bool) else None
        with self._scope:
            async with HttpClient(
                pool=self._pool,
                own_url=config.url,
                verify=config.verify,
                other_verify=oauth.verify if oauth is not None else True,
                connect_timeout=config.timeout,
            ) as client:
                self._client = client
                faults = 0
                while True:
                    started = time.monotonic()
                    try:
                        await self._serve()
                    except Exception as exc:  # the boundary: nothing of one server goes further
                        stable = time.monotonic() - started >= STABLE_SECONDS
                        faults = 1 if stable else faults + 1
                        await self._fault(exc, backoff_delay(faults))

    async def _serve(self) -> None:
        """The server's tasks: its credentials and its sessions, until one fails."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                if not self.credentials.loaded:
                    await self.credentials.load()
                await tg.start(self.credentials.run)
                await self._until_signed_in_again()
                self.keeper = self._keeper(None, self._connected, self._lost, self._retrying)
                self.keeper.session.on_listed = self._keep_listed
                self.keeper.session.era_hint = self._shown.protocol if self._shown else None
                for editor, sink in self._sinks.items():
                    self._serve_editor(editor, sink)
                await self.keeper.run()
            finally:
                self._tg = None
                keepers = [self.keeper, *(keeper for keeper, _ in self._per_client.values())]
                self._per_client.clear()
                for keeper in keepers:
                    if keeper is not None:
                        await keeper.close()

    async def _until_signed_in_again(self) -> None:
        """A stored record that could not be read was moved aside: the server
        needs a sign-in, and does not connect until it has tokens again."""
        credentials = self.credentials
        if credentials.quarantined is None or not credentials.applies:
            return
        self.machine.handle(
            Event.AUTH_REQUIRED,
            error=f"{credentials.quarantined}; sign in again: mcpctl auth {self.name}",
        )
        while credentials.tokens is None:
            self._credentials_changed = anyio.Event()
            await self._credentials_changed.wait()

    async def _fault(self, exc: Exception, delay: float) -> None:
        """Report a fault of the server's own tasks, and wait for their restart."""
        leaf = exc
        while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
            first = leaf.exceptions[0]
            if not isinstance(first, Exception):
                break
            leaf = first
        detail = logs.redacted(str(leaf))[:FAULT_DETAIL_CHARS]
        error = (
            f"internal error in mcpd ({type(leaf).__name__}{': ' + detail if detail else ''}); "
            "the server restarts by itself, and the daemon log has the traceback"
        )
        log.error(
            "a server failed unexpectedly; restarting it",
            extra={
                "server": self.name,
                "retry_in": round(delay, 1),
                "traceback": "".join(traceback.format_exception(exc)),
            },
        )
        self.machine.handle(Event.FAULT, error=error, retry_at=time.time() + delay)
        self._restart = anyio.Event()
        with anyio.move_on_after(delay):
            await self._restart.wait()
        self.machine.handle(Event.RETRY)

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
            auth=self.credentials,
        )
        return SessionKeeper(session, on_connected, on_lost, on_retry)

    def retry_now(self) -> None:
        """Someone waits for the server: cut every backoff short."""
        self._restart.set()
        for keeper in self._keepers():
            if not keeper.connected.is_set():
                keeper.retry_now()

    def _keepers(self) -> list[SessionKeeper]:
        shared = [self.keeper] if self.keeper is not None else []
        return shared + [keeper for keeper, _ in self._per_client.values()]

    def _connected(self) -> None:
        self.machine.handle(Event.CONNECTED)
        keeper = self.keeper
        if keeper is None:
            return
        self._keep_shown(
            initialize=keeper.session.initialize_result, protocol=keeper.session.protocol_version
        )
        capabilities = (keeper.session.initialize_result or {}).get("capabilities") or {}
        told, self._told = self._told, {}
        for editor, (elicitations, shown_lists) in told.items():
            sink = self._sinks.get(editor)
            for message in signed_out.after_sign_in(capabilities, elicitations, shown_lists):
                if sink is not None:
                    sink(jsonrpc.encode(message))

    def _keep_listed(self, tools: dict[str, Any]) -> None:
        self._keep_shown(tools=tools)

    def _keep_shown(
        self,
        *,
        initialize: dict[str, Any] | None = None,
        tools: dict[str, Any] | None = None,
        protocol: str | None = None,
    ) -> None:
        """Keep what the server showed editors, when it changed."""
        shown = self._shown
        if self._shown_store is None or shown is None:
            return
        changed = (
            (initialize is not None and initialize != shown.initialize)
            or (tools is not None and tools != shown.tools)
            or (protocol is not None and protocol != shown.protocol)
        )
        # The session's own objects from now on, changed or not: the copy read
        # from the file at start is let go (at 500 servers, about a megabyte).
        shown.initialize = initialize or shown.initialize
        shown.tools = tools or shown.tools
        shown.protocol = protocol or shown.protocol
        if changed:
            self._shown_store.save(self.name, shown)

    def stop(self) -> None:
        self._scope.cancel()
        self.machine.handle(Event.STOP)

    @property
    def tool_filter(self) -> ToolFilter:
        """The tools editors may see and call (toolfilter.py)."""
        config = self.entry.config
        return ToolFilter.of(self.name, config.tools) if config else ToolFilter(self.name)

    def update_tools(self, entry: ServerEntry) -> None:
        """A reload changed the tool filter and nothing else (toolfilter.py): every
        session follows the new one from now on, without a restart, and tells its
        editors that their tool list changed; sessions opened later take it from
        the entry."""
        self.entry = entry
        assert entry.config is not None
        for keeper in self._keepers():
            keeper.session.update_tools(entry.config)

    # --- Credentials ------------------------------------------------------------------

    def static_authorization(self) -> bool:
        config = self.entry.config
        return config is not None and any(k.lower() == "authorization" for k in config.headers)

    def reach(self) -> Reach:
        """How the OAuth steps reach this server's authorization server."""
        config = self.entry.config
        if self._client is None or config is None:
            raise OAuthError(f"server {self.name!r} is not running")
        return Reach(self._client, config.url, config.headers, config.timeout)

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

    # What the credentials tell (CredentialsListener).

    def refreshed(self) -> None:
        """A new access token: sessions use it from their next request; a session
        that stopped for want of one tries again now."""
        self.retry_now()

    def refresh_failing(self, error: str, retry_at: float) -> None:
        """A passing failure: the tokens are kept; status shows the error and the retry."""
        since = self.machine.since
        self.machine.handle(
            Event.REFRESH_FAILED,
            error=f"the access token expired; refreshing it failed: {error}",
            retry_at=retry_at,
        )
        if self.machine.since == since:  # no change of state: the status changed all the same
            self._on_change(self, self.machine.state)

    def refresh_refused(self, reason: str) -> None:
        self.machine.handle(Event.AUTH_REQUIRED, error=reason)

    def access_expired(self, reason: str) -> None:
        """The access token expired and cannot be refreshed: `needs_auth` now, not at
        the first refused request. Attached editors are told (a warning log
        message, which they show), and its sessions end, so that the requests in flight
        and every later one are answered with `reason` and the command to run (the
        sessions opened next are refused until a sign-in, and wait for one)."""
        self.machine.handle(Event.AUTH_REQUIRED, error=reason)
        for keeper in self._keepers():
            keeper.session.notice(f"server {self.name!r}: {reason}")
            if keeper.connected.is_set():
                keeper.session.reconnect(reason)

    def credentials_changed(self) -> None:
        self._credentials_changed.set()
        self._on_change(self, self.machine.state)

    # What the sign-in tells.

    def begin_authorization(self) -> None:
        self.machine.handle(Event.AUTHORIZE)

    def authorized(self) -> None:
        self.required_scope = None
        self.machine.handle(Event.AUTHORIZED)
        self._renew_sessions("new credentials")

    def authorization_failed(self, reason: str) -> None:
        self.machine.handle(Event.AUTHORIZATION_FAILED, error=reason)

    def client_registration_required(self, reason: str) -> None:
        self.machine.handle(Event.CLIENT_REGISTRATION_REQUIRED, error=reason)

    def logged_out(self) -> None:
        self._renew_sessions("signed out")

    def _renew_sessions(self, reason: str) -> None:
        """Open new sessions with the current credentials (or none)."""
        self._restart.set()
        for keeper in self._keepers():
            if keeper.connected.is_set():
                keeper.session.reconnect(reason)
            else:
                keeper.retry_now()

    def _auth_required(self, failure: AuthorizationRequired) -> None:
        config = self.entry.config
        self.challenge = parse_challenge(failure.challenge)
        if self.challenge is not None and self.challenge.error == "insufficient_scope":
            tokens = self.credentials.tokens
            self.required_scope = union_scope(
                tokens.scope if tokens else None, self.challenge.scope
            )
        schedule = self.credentials.schedule
        if config is not None and config.oauth is None and self.static_authorization():
            error = (
                "the server refused the configured credentials (HTTP 401): "
                "check the Authorization header in the config"
            )
            self.machine.handle(Event.ERROR, error=error)
        elif config is not None and config.oauth is False:
            self.machine.handle(Event.ERROR, error=f"{failure}, but oauth = false for this server")
        elif (
            isinstance(self.credentials, MachineCredentials)
            and self._tg is not None
            and self.credentials.may_obtain()
        ):
            # Client credentials: no one to ask; a token is requested, then used.
            self._tg.start_soon(connect_with_new_token, self, str(failure))
        elif schedule.last_error is not None:
            # The token expired while its refresh keeps failing for a passing
            # reason: not the user's to fix; the next good refresh reconnects.
            error = f"the access token expired; refreshing it failed: {schedule.last_error}"
            self.machine.handle(Event.ERROR, error=error, retry_at=schedule.due)
        else:
            refused = " and refused the stored token" if self.credentials.tokens else ""
            quarantined = self.credentials.quarantined
            note = f"; {quarantined}" if quarantined else ""
            self.machine.handle(Event.AUTH_REQUIRED, error=f"{failure}{refused}{note}")

    def _lost(self, failure: BaseException, retry_at: float | None) -> None:
        if isinstance(failure, AuthorizationRequired):
            self._auth_required(failure)
        elif retry_at is None:
            # The keeper reconnects at once: a session that dropped, or one
            # renewed for new credentials (not a failure, whatever the state).
            if self.machine.state is State.CONNECTED:
                log.info(
                    "connection lost; reconnecting",
                    extra={"server": self.name, "error": describe(failure)},
                )
            self.machine.handle(Event.CONNECTION_LOST)
        else:
            self.machine.handle(Event.ERROR, error=describe(failure), retry_at=retry_at)

    def _retrying(self) -> None:
        self.machine.handle(Event.RETRY)

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
            self.retry_now()
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

    def _per_client_mode(self) -> bool:
        config = self.entry.config
        return config is not None and config.session == "per-client"

    def attach(self, editor: EditorId, sink: EditorSink, replay: bytes | None = None) -> None:
        """Attach an editor; `replay` is its initialize from an earlier attachment,
        taken as already answered."""
        self._sinks[editor] = sink
        try:
            message = jsonrpc.decode(replay) if replay else None
        except jsonrpc.InvalidMessage:
            message = None
        if message is not None and message.get("method") == "initialize":
            self._initialize_params[editor] = message.get("params")
        if self._tg is not None:
            self._serve_editor(editor, sink)

    def _serve_editor(self, editor: EditorId, sink: EditorSink) -> None:
        """Give an attached editor its session: the shared one, or (per-client, once
        its initialize is known) one of its own."""
        params = self._initialize_params.get(editor)
        known = editor in self._initialize_params
        if not self._per_client_mode():
            if self.keeper is not None:
                self.keeper.session.attach(editor, sink)
                if known:
                    self.keeper.session.mux.initialize_editor(editor, params)
        elif known and editor not in self._per_client:
            keeper = self._start_per_client(editor, params)
            keeper.session.mux.initialize_editor(editor, params)

    def detach(self, editor: EditorId) -> None:
        self._sinks.pop(editor, None)
        self._initialize_params.pop(editor, None)
        self._told.pop(editor, None)
        for key in [key for key in self._waiting if key[0] == editor]:
            self._waiting.pop(key).cancel()
        if self.keeper is not None:
            self.keeper.session.detach(editor)
        keeper, scope = self._per_client.pop(editor, (None, None))
        if keeper is not None and scope is not None:
            keeper.session.detach(editor)
            scope.cancel()  # its task ends the session (DELETE) on the way out

    def from_editor_now(self, editor: EditorId, raw: bytes) -> bool:
        """`from_editor` when it needs no wait, as when the editor's session is
        connected (the common case, and a task switch less per message); False:
        call `from_editor`."""
        if not self._per_client_mode():
            keeper = self.keeper
        else:
            keeper, _ = self._per_client.get(editor, (None, None))
        if keeper is None or not keeper.connected.is_set():
            return False
        if (message := self._take(editor, raw)) is not None:
            keeper.session.from_editor(editor, message)
        return True

    async def from_editor(self, editor: EditorId, raw: bytes) -> None:
        """A JSON-RPC message from an editor: route it, or answer it with an error."""
        if (message := self._take(editor, raw)) is None:
            return
        sink = self._sinks[editor]
        try:
            keeper = await self._keeper_for(editor, message)
        except Unavailable as exc:
            if self._signed_out() and self._links is not None:
                self._while_signed_out(editor, message, raw, sink)
                return
            if jsonrpc.is_request(message) and jsonrpc.is_id(message["id"]):
                sink(
                    jsonrpc.encode(
                        jsonrpc.error(message["id"], jsonrpc.SERVER_UNAVAILABLE, str(exc))
                    )
                )
            return
        keeper.session.from_editor(editor, message)

    def _take(self, editor: EditorId, raw: bytes) -> dict[str, Any] | None:
        """An editor's message, decoded, unless it is answered or done with here
        (it does not parse, it cancels a wait for a sign-in, its editor left)."""
        sink = self._sinks.get(editor)
        if sink is None:
            return None
        try:
            message = jsonrpc.decode(raw)
        except jsonrpc.InvalidMessage as exc:
            sink(jsonrpc.encode(jsonrpc.error(None, jsonrpc.PARSE_ERROR, f"parse error: {exc}")))
            return None
        if message.get("method") == "initialize":
            self._initialize_params[editor] = message.get("params")
        if self._cancels_a_wait(editor, message):
            return None
        return message

    async def _keeper_for(self, editor: EditorId, message: dict[str, Any]) -> SessionKeeper:
        if not self._per_client_mode():
            return await self._wait_connected(self.keeper)
        entry = self._per_client.get(editor)
        if entry is None:
            if message.get("method") != "initialize" and editor not in self._initialize_params:
                raise Unavailable(
                    f"server {self.name!r} runs one session per editor: send initialize first"
                )
            await self._wait_connected(self.keeper)  # the server is reachable at all
            keeper = self._start_per_client(editor, self._initialize_params.get(editor))
        else:
            keeper = entry[0]
        return await self._wait_connected(keeper, patient=True)

    # --- While the server waits for a sign-in --------------------------------------------

    def _signed_out(self) -> bool:
        return self.machine.state in (State.NEEDS_AUTH, State.AUTHORIZING)

    def _while_signed_out(
        self, editor: EditorId, message: dict[str, Any], raw: bytes, sink: EditorSink
    ) -> None:
        """Answer an editor while the server needs a sign-in (mcpd/signed_out.py)."""
        shown = self._shown
        decision = signed_out.decide(
            message,
            shown.initialize if shown else None,
            self.tool_filter.shown(shown.tools) if shown else None,  # today's filter
            signing_in=self.machine.state is State.AUTHORIZING,
        )
        if isinstance(decision, signed_out.Reply):
            if decision.initialized:
                self._told.setdefault(editor, ([], True))
                if self.keeper is not None and not self._per_client_mode():
                    self.keeper.session.mux.initialize_editor(
                        editor, self._initialize_params.get(editor)
                    )
            sink(jsonrpc.encode(decision.message))
        elif isinstance(decision, signed_out.Wait) and self._tg is not None:
            scope = anyio.CancelScope()
            self._waiting[(editor, message["id"])] = scope
            self._tg.start_soon(self._when_signed_in, editor, message, raw, scope)
        elif isinstance(decision, signed_out.SignIn | signed_out.Wait):
            sink(jsonrpc.encode(self._ask_to_sign_in(editor, message["id"])))

    def _ask_to_sign_in(self, editor: EditorId, request_id: jsonrpc.Id) -> dict[str, Any]:
        assert self._links is not None
        try:
            link, new = self._links(self)
        except OAuthError as exc:
            return jsonrpc.error(request_id, jsonrpc.SERVER_UNAVAILABLE, f"{exc}")
        if new and self._open_browser:
            # Opened from a thread: a browser launcher may take its time.
            threading.Thread(target=open_in_browser, args=(link,), daemon=True).start()
        elicitation_id = None
        elicitations, shown_lists = self._told.get(editor, ([], True))
        if signed_out.declares_url_elicitation(self._initialize_params.get(editor)):
            elicitation_id = secrets.token_urlsafe(12)
            elicitations.append(elicitation_id)
        self._told[editor] = (elicitations, shown_lists)
        reason = self.machine.error
        return signed_out.sign_in_error(request_id, self.name, link, elicitation_id, reason)

    async def _when_signed_in(
        self, editor: EditorId, message: dict[str, Any], raw: bytes, scope: anyio.CancelScope
    ) -> None:
        """A request that came during the sign-in: sent once the server is connected
        (bounded; the editor may cancel it meanwhile, and then it is never sent)."""
        key = (editor, message["id"])
        try:
            with scope, anyio.move_on_after(SIGN_IN_WAIT_SECONDS):
                while self.machine.state in (State.AUTHORIZING, State.CONNECTING):
                    if self._state_change is None:
                        self._state_change = anyio.Event()
                    await self._state_change.wait()
        finally:
            self._waiting.pop(key, None)
        if scope.cancel_called:
            return  # the editor cancelled it: never sent
        if self.machine.state is State.CONNECTED:
            await self.from_editor(editor, raw)
        elif (sink := self._sinks.get(editor)) is not None:
            # The sign-in failed, or took too long: said as for any request.
            error = jsonrpc.error(
                message["id"], jsonrpc.SERVER_UNAVAILABLE, str(self._unavailable())
            )
            sink(jsonrpc.encode(error))

    def _cancels_a_wait(self, editor: EditorId, message: dict[str, Any]) -> bool:
        """An editor's cancellation of a request that waits for a sign-in."""
        if message.get("method") != "notifications/cancelled":
            return False
        params = message.get("params")
        request_id = params.get("requestId") if isinstance(params, dict) else None
        scope = self._waiting.pop((editor, request_id), None) if jsonrpc.is_id(request_id) else None
        if scope is None:
            return False
        scope.cancel()
        return True

    def _start_per_client(self, editor: EditorId, params: Any) -> SessionKeeper:
        """An editor's own session, initialized with the editor's own parameters;
        it lives until the editor detaches."""
        if self._tg is None:
            raise self._unavailable()
        keeper = self._keeper(
            params if isinstance(params, dict) else None, lambda: None, self._editor_lost
        )
        keeper.session.on_listed = self._keep_listed
        keeper.session.era_hint = self._shown.protocol if self._shown else None
        keeper.session.attach(editor, self._sinks[editor])
        scope = anyio.CancelScope()
        self._per_client[editor] = (keeper, scope)
        self._tg.start_soon(self._run_per_client, keeper, scope)
        return keeper

    @staticmethod
    async def _run_per_client(keeper: SessionKeeper, scope: anyio.CancelScope) -> None:
        with scope:
            try:
                await keeper.run()
            finally:
                await keeper.close()

    def _editor_lost(self, failure: BaseException, retry_at: float | None) -> None:
        log.info(
            "an editor's own session was lost",
            extra={"server": self.name, "error": describe(failure)},
        )


def _configured_secrets(entry: ServerEntry) -> list[str]:
    """The header values and the client secret of a server's config."""
    config = entry.config
    if config is None:
        return []
    values = list(config.headers.values())
    if not isinstance(config.oauth, bool) and config.oauth is not None:
        values.append(config.oauth.client_secret or "")
    return values
