"""One server's MCP session as the daemon holds it, shared by every editor.

The session outlives its transport: `open` initializes a fresh transport
(Streamable HTTP, falling back to legacy SSE exactly when the specification
says so), `serve` holds it until it fails, and the caller's reconnect loop
calls `open` again. The multiplexer (who is attached, who subscribed to what,
which request belongs to whom) lives across reconnects, so editors stay
attached while the server comes and goes.

Every task a session starts (one per message sent, plus the standalone event
stream) lives in the task group the caller passes to `open`; none of them
raises: a failure that ends the session is recorded and `serve` returns it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup

from .. import __version__
from ..config import ServerConfig
from ..http import HttpClient, HttpError
from ..waiting import first_of
from . import jsonrpc, modern
from .mux import MAX_INPUT_ROUNDS, EditorId, Multiplexer, Routing
from .toolfilter import ToolFilter
from .transport import (
    LATEST_PROTOCOL,
    LEGACY_PROTOCOL,
    STREAMABLE_PROTOCOLS,
    AuthorizationRequired,
    ConnectionLost,
    Handover,
    HttpStatusError,
    LegacySse,
    SessionExpired,
    StatelessHttp,
    StreamableHttp,
    Transport,
    TransportSettings,
    UpstreamError,
    describe,
)

log = logging.getLogger(__name__)

CLIENT_INFO = {"name": "mcpd", "version": __version__}
# Declared so that servers may ask; each request is handed to the editor it
# belongs to, and refused (as the revision says) when that editor did not
# declare what it needs (mux.py). Both elicitation modes: editors (and
# `mcpctl call`) that declared URL mode can take URL-mode requests.
CLIENT_CAPABILITIES: dict[str, Any] = {
    "roots": {"listChanged": True},
    "sampling": {},
    "elicitation": {"form": {}, "url": {}},
}
# Status codes to an initialize POST that mean "this is a legacy SSE server".
LEGACY_FALLBACK_STATUSES = frozenset({400, 404, 405})
# What mcpd's own requests to a modern server declare: it answers no input
# requests itself (an editor's requests carry that editor's capabilities).
OWN_CAPABILITIES: dict[str, Any] = {}
# Waits between attempts to reopen a modern server's listen stream.
LISTEN_RETRY_SECONDS = (1.0, 2.0, 5.0, 15.0, 60.0)

EditorSink = Callable[[bytes], None]
# Errors that mean the session itself is gone, not just one request.
SESSION_FATAL = (ConnectionLost, AuthorizationRequired, HttpError)


class SessionAuth(Protocol):
    """The session's view of its server's credentials."""

    def bearer(self) -> str | None:
        """The access token to send now, if any."""

    async def refresh(self, seen: str | None) -> bool:
        """The server refused `seen` (None: no token was sent, the one held having
        expired): True once a newer token is in place."""

    async def ready(self) -> str | None:
        """Before connecting: why not to connect yet, if there is a reason."""


class NoAuth:
    """A server without OAuth."""

    def bearer(self) -> str | None:
        return None

    async def refresh(self, seen: str | None) -> bool:
        return False

    async def ready(self) -> str | None:
        return None


class RequestFailed(Exception):
    """The server answered one of the daemon's own requests with an error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Waiter:
    event: anyio.Event
    message: dict[str, Any] | None = None


class UpstreamSession:
    def __init__(
        self,
        name: str,
        config: ServerConfig,
        client: HttpClient,
        max_message_size: int,
        *,
        initialize_params: dict[str, Any] | None = None,
        auth: SessionAuth | None = None,
    ) -> None:
        self.auth = auth or NoAuth()
        self.name = name
        self.config = config
        self.client = client
        self.max_message_size = max_message_size
        self.initialize_params = initialize_params or {
            "protocolVersion": LATEST_PROTOCOL,
            "capabilities": CLIENT_CAPABILITIES,
            "clientInfo": CLIENT_INFO,
        }
        self.mux = Multiplexer()
        self.mux.tool_filter = ToolFilter.of(name, config.tools)
        self.sinks: dict[EditorId, EditorSink] = {}
        self.transport: Transport | None = None
        self._tg: TaskGroup | None = None
        self._waiters: dict[int, _Waiter] = {}
        self._failure: BaseException | None = None
        self._failed = anyio.Event()
        self._reinitializing: anyio.Lock = anyio.Lock()
        # Modern servers: the scope of each request's POST (closing its stream
        # cancels it), and of the listen stream.
        self._streams: dict[int, anyio.CancelScope] = {}
        self._listening: anyio.CancelScope | None = None
        # The revision the server spoke last time (its owner keeps it), if known.
        self.era_hint: str | None = None
        # Told the first page of each tool list the server gives (the owner keeps it).
        self.on_listed: Callable[[dict[str, Any]], None] | None = None

    @property
    def connected(self) -> bool:
        return self.transport is not None and self._failure is None

    @property
    def initialize_result(self) -> dict[str, Any] | None:
        return self.mux.initialize_result

    @property
    def protocol_version(self) -> str | None:
        """The MCP revision spoken with the server, once connected."""
        return self.transport.protocol_version if self.transport is not None else None

    # --- Connecting ---------------------------------------------------------------

    def _settings(self) -> TransportSettings:
        return TransportSettings(
            self.client,
            self.config.url,
            self.config.headers,
            self.max_message_size,
            self.config.timeout,
            self.auth.bearer,
        )

    async def open(self, tg: TaskGroup) -> None:
        """Initialize a new session on a new transport; raises UpstreamError and HttpError."""
        if reason := await self.auth.ready():
            raise UpstreamError(reason)
        self._tg = tg
        self._failure = None
        self._failed = anyio.Event()
        self.mux.modern = None
        self.mux.cache.clear()  # new credentials may mean another user's lists
        # A server known to speak an older revision is not probed (the revision
        # allows keeping what a probe found across restarts); if it then fails
        # to connect, the next attempt probes again.
        if self.era_hint is None or self.era_hint == modern.MODERN_PROTOCOL:
            stateless = StatelessHttp(self._settings(), self._deliver)
            stateless.tool_headers = self.mux.tool_headers
            self.transport = stateless
            if (discovered := await self._discover(stateless)) is not None:
                self._open_modern(tg, stateless, discovered)
                return
        try:
            await self._open_older(tg)
        except Exception:
            self.era_hint = None
            raise

    def _open_modern(
        self, tg: TaskGroup, stateless: StatelessHttp, discovered: dict[str, Any]
    ) -> None:
        """A session of the 2026-07-28 revision: nothing to set up but the listen
        stream, and the answer older editors get to their initialize."""
        self.mux.modern = discovered
        self.mux.initialize_result = modern.legacy_initialize_result(discovered)
        tg.start_soon(self._listen, stateless)
        log.info(
            "session established",
            extra={"server": self.name, "protocol": modern.MODERN_PROTOCOL},
        )

    async def _open_older(self, tg: TaskGroup) -> None:
        """A session of a revision with an initialize handshake: Streamable HTTP,
        else the legacy HTTP+SSE transport."""
        transport: Transport = StreamableHttp(self._settings(), self._deliver)
        self.transport = transport
        try:
            result = await self._initialize(transport)
        except HttpStatusError as exc:
            if exc.status not in LEGACY_FALLBACK_STATUSES:
                raise
            log.info(
                "initialize refused; trying the legacy HTTP+SSE transport",
                extra={"server": self.name, "status": exc.status},
            )
            result = None
        if result is None:
            legacy = LegacySse(self._settings(), self._deliver)
            self.transport = transport = legacy
            tg.start_soon(self._guard, legacy.run)
            with anyio.move_on_after(self.config.timeout):
                await first_of(legacy.ready, self._failed)
            if not legacy.ready.is_set() and self._failure is None:
                raise UpstreamError(
                    f"the server's event stream named no endpoint within {self.config.timeout:g}s"
                )
            if self._failure is not None:
                raise self._failure
            result = await self._initialize(transport)
        self.mux.initialize_result = result
        for uri in self.mux.subscribed_uris():
            self._send_soon(self.mux.unawaited_request("resources/subscribe", {"uri": uri}))
        if isinstance(transport, StreamableHttp):
            tg.start_soon(self._guard, transport.listen)
        log.info(
            "session established",
            extra={
                "server": self.name,
                "protocol": transport.protocol_version,
                "transport": type(transport).__name__,
            },
        )

    async def _discover(self, transport: StatelessHttp) -> dict[str, Any] | None:
        """Probe with `server/discover`: the result when the server speaks the
        2026-07-28 revision, None when it is an older one (initialize then)."""
        for _attempt in range(2):
            try:
                response = await self._own_exchange(transport, "server/discover", {})
            except AuthorizationRequired:
                raise
            except UpstreamError:
                # No answer of the revision's (an error status without one, a
                # stream that ended first, silence): an older server, or a
                # broken one, which initialize then reports as such.
                response = None
            outcome = modern.probe_outcome(response)
            if not outcome.retry:
                if outcome.modern and outcome.result is None:
                    raise UpstreamError(
                        "the server speaks MCP 2026-07-28 but refused mcpd's discovery "
                        "request: " + str((response or {}).get("error", {}).get("message"))
                    )
                return outcome.result
        raise UpstreamError("the server refused MCP 2026-07-28, which it says it supports")

    async def _listen(self, transport: StatelessHttp) -> None:
        """Hold a `subscriptions/listen` stream for the notifications older
        editors expect (list changes, subscribed resources); reopened when the
        set of subscribed resources changes, and after a break."""
        failures = 0
        while True:
            assert self.mux.modern is not None
            capabilities = self.mux.modern.get("capabilities")
            wanted = modern.listen_filter(
                capabilities if isinstance(capabilities, dict) else {},
                self.mux.subscribed_uris(),
            )
            if not wanted:
                self._listening = anyio.CancelScope()
                with self._listening:
                    await anyio.sleep_forever()
                continue
            with anyio.CancelScope() as self._listening:
                try:
                    response = await self._own_exchange(
                        transport, "subscriptions/listen", {"notifications": wanted}, timeout=0
                    )
                except AuthorizationRequired as exc:
                    self._fail(exc)
                    return
                except (UpstreamError, HttpError) as exc:
                    log.info(
                        "the listen stream broke",
                        extra={"server": self.name, "error": describe(exc)},
                    )
                    response = None
                if response is not None and "error" in response:
                    log.info(
                        "the server offers no listen stream",
                        extra={"server": self.name, "error": str(response["error"])[:200]},
                    )
                    return
                if response is not None:
                    failures = 0  # the server ended it politely: listen again
            if self._listening.cancel_called:
                continue  # the subscriptions changed
            delay = LISTEN_RETRY_SECONDS[min(failures, len(LISTEN_RETRY_SECONDS) - 1)]
            failures += 1
            await anyio.sleep(delay)

    async def _initialize(self, transport: Transport) -> dict[str, Any]:
        params = dict(self.initialize_params)
        if isinstance(transport, LegacySse):
            params["protocolVersion"] = LEGACY_PROTOCOL
        result = await self._own_request(transport, "initialize", params)
        version = result.get("protocolVersion")
        supported = (
            STREAMABLE_PROTOCOLS if isinstance(transport, StreamableHttp) else (LEGACY_PROTOCOL,)
        )
        if version not in supported:
            raise UpstreamError(
                f"the server speaks MCP protocol {version!r}; mcpd supports "
                + ", ".join((*STREAMABLE_PROTOCOLS, LEGACY_PROTOCOL))
            )
        transport.protocol_version = version
        await self._post(transport, jsonrpc.notification("notifications/initialized"))
        return result

    async def _reinitialize(self, transport: StreamableHttp) -> None:
        """The server forgot the session (404): start a new one, once for all waiters."""
        stale = transport.session_id
        async with self._reinitializing:
            if transport.session_id != stale:
                return  # another task already did it
            log.info("session expired; initializing a new one", extra={"server": self.name})
            transport.session_id = None
            transport.protocol_version = None
            self.mux.initialize_result = await self._initialize(transport)

    async def serve(self) -> BaseException:
        """Wait until the session fails; returns what ended it."""
        await self._failed.wait()
        assert self._failure is not None
        if not isinstance(self._failure, UpstreamError | HttpError):
            # Unexpected, in a request forwarded without a task (`crashed`): it
            # goes to the server's supervisor as if raised in one of its tasks.
            raise self._failure
        return self._failure

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
            self._failed.set()

    async def _guard(self, run: Callable[[], Awaitable[None]], renewed: bool = False) -> None:
        """Run a transport task; any failure ends the session instead of the task group."""
        token = self.auth.bearer()
        try:
            await run()
        except AuthorizationRequired as exc:
            # The event stream reopened after its token expired: renew the token
            # once and listen again, as a refused POST is retried once.
            streamable = isinstance(self.transport, StreamableHttp)
            if (
                streamable
                and not renewed
                and "insufficient_scope" not in exc.challenge
                and await self.auth.refresh(token)
            ):
                assert self._tg is not None
                self._tg.start_soon(self._guard, run, True)
                return
            self._fail(exc)
        except SessionExpired:
            if isinstance(self.transport, StreamableHttp):
                try:
                    await self._reinitialize(self.transport)
                except (UpstreamError, HttpError) as exc:
                    self._fail(exc)
                    return
                assert self._tg is not None
                self._tg.start_soon(self._guard, self.transport.listen)
        except (UpstreamError, HttpError) as exc:
            self._fail(exc)

    async def close(self) -> None:
        """End the session politely (DELETE), and fail whatever still waits."""
        transport = self._drop_transport()
        if transport is not None:
            await transport.terminate()
        self.lost("the session was closed")

    def lost(self, reason: str) -> None:
        """The transport is gone: every request in flight is answered with an error."""
        self._drop_transport()
        self._apply(
            self.mux.fail_all_pending(
                jsonrpc.SERVER_UNAVAILABLE, f"server {self.name!r} connection lost: {reason}"
            )
        )

    def abandon_forwarded(self) -> None:
        """End the requests forwarded without a task (transport.py)."""
        if isinstance(self.transport, StreamableHttp):
            self.transport.abandon()

    def _drop_transport(self) -> Transport | None:
        """No more sending; the requests forwarded without a task end with it."""
        self.abandon_forwarded()
        transport, self.transport = self.transport, None
        return transport

    # --- Messages -------------------------------------------------------------------

    def _deliver(self, message: dict[str, Any], related: int | None) -> None:
        routing = self.mux.from_upstream(message, related)
        if routing.problem is not None:
            log.warning(
                "a message from the server was not usable",
                extra={"server": self.name, "problem": routing.problem},
            )
        self._apply(routing)

    def _apply(self, routing: Routing) -> None:
        for editor, message in routing.editors:
            sink = self.sinks.get(editor)
            if sink is not None:
                sink(jsonrpc.encode(message))
        for upstream_id, message in routing.own:
            waiter = self._waiters.get(upstream_id)
            if waiter is not None:
                waiter.message = message
                waiter.event.set()
        for message in routing.upstream:
            self._send_soon(message)
        for upstream_id in routing.cancel:
            if (scope := self._streams.get(upstream_id)) is not None:
                scope.cancel()
        if routing.relisten and self._listening is not None:
            self._listening.cancel()
        if routing.listed is not None and self.on_listed is not None:
            self.on_listed(routing.listed)

    async def _post(
        self, transport: Transport, message: dict[str, Any], handover: Handover | None = None
    ) -> None:
        """Post (or go on with a POST under way); when the server refuses the access
        token, get a new one and post once more."""
        token = self.auth.bearer()
        try:
            if handover is None:
                await transport.post(message)
            else:
                assert isinstance(transport, StreamableHttp)  # the one that forwards
                await transport.post(message, handover)
        except AuthorizationRequired as exc:
            # No token to send (it expired just now, say): refresh the current one.
            if "insufficient_scope" in exc.challenge or not await self.auth.refresh(token):
                raise
            await transport.post(message)

    def _send_soon(self, message: dict[str, Any]) -> None:
        transport = self.transport
        if (
            isinstance(transport, StreamableHttp)
            and jsonrpc.is_request(message)
            and transport.forward(message, self)
        ):
            return  # under way, with no task (transport.py)
        assert self._tg is not None
        self._tg.start_soon(self._send, message)

    # What a forwarded request's callbacks hand back (transport.Forwarding).

    def hand_over(self, message: dict[str, Any], handover: Handover) -> None:
        assert self._tg is not None
        self._tg.start_soon(self._send, message, handover)

    def failed(self, message: dict[str, Any], exc: UpstreamError | HttpError) -> None:
        self._unsent(message, exc)

    def crashed(self, exc: Exception) -> None:
        self._fail(exc)

    async def _send(self, message: dict[str, Any], handover: Handover | None = None) -> None:
        transport = self.transport
        if transport is None:
            if handover is not None:
                await handover.response.aclose()
            self._answer_unsent(message, "the server is not connected")
            return
        modern_request = isinstance(transport, StatelessHttp) and jsonrpc.is_request(message)
        try:
            try:
                if modern_request:
                    with anyio.CancelScope() as self._streams[message["id"]]:
                        await self._post(transport, message)
                else:
                    await self._post(transport, message, handover)
            except SessionExpired:
                assert isinstance(transport, StreamableHttp)
                await self._reinitialize(transport)
                await self._post(transport, message)
        except (UpstreamError, HttpError) as exc:
            self._unsent(message, exc)
        finally:
            if modern_request:
                del self._streams[message["id"]]

    def _unsent(self, message: dict[str, Any], exc: UpstreamError | HttpError) -> None:
        """A message that could not be sent, or whose answer did not come: a
        request gets its error response; a failure of the session ends it."""
        reason = describe(exc)
        if isinstance(exc, AuthorizationRequired):  # say what fixes it
            reason += f"; sign in with `mcpctl auth {self.name}`"
        self._answer_unsent(message, reason)
        if isinstance(exc, SESSION_FATAL):
            self._fail(exc)

    def _answer_unsent(self, message: dict[str, Any], reason: str) -> None:
        """A request that cannot be delivered gets its error response right away."""
        if jsonrpc.is_request(message):
            self._deliver(
                jsonrpc.error(
                    message["id"],
                    jsonrpc.SERVER_UNAVAILABLE,
                    f"server {self.name!r}: {reason}",
                ),
                None,
            )

    async def _own_request(
        self,
        transport: Transport,
        method: str,
        params: dict[str, Any] | None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send a request of the daemon's and wait for its result (the config's
        timeout by default; 0 waits as long as the server takes). A modern
        server's requests for input are answered as a client without a user
        must (nothing declared, so: declined), and the request retried."""
        response = await self._own_exchange(transport, method, params, timeout)
        rounds = 0
        while modern.is_input_required(response) and rounds < MAX_INPUT_ROUNDS:
            rounds += 1
            answers = modern.unattended_answers(response["result"])
            retry = modern.retry_request(
                jsonrpc.request(0, method, params), 0, response["result"], answers
            )
            response = await self._own_exchange(transport, method, retry["params"], timeout)
        error = response.get("error")
        if isinstance(error, dict):
            raise RequestFailed(int(error.get("code", 0)), str(error.get("message", "")))
        if modern.is_input_required(response):
            raise UpstreamError(f"the server kept asking for input {MAX_INPUT_ROUNDS} times")
        result = response.get("result")
        return result if isinstance(result, dict) else {}

    async def _own_exchange(
        self,
        transport: Transport,
        method: str,
        params: dict[str, Any] | None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """One request of the daemon's: the server's response message."""
        limit = self.config.timeout if timeout is None else timeout
        message = self.mux.own_request(method, params)
        if isinstance(transport, StatelessHttp):
            message = modern.with_meta(message, OWN_CAPABILITIES, CLIENT_INFO)
        upstream_id = message["id"]
        waiter = _Waiter(anyio.Event())
        self._waiters[upstream_id] = waiter
        try:
            with anyio.fail_after(limit if limit > 0 else None):
                await self._post(transport, message)
                await waiter.event.wait()
        except TimeoutError:
            raise UpstreamError(f"no answer to {method} within {limit:g}s") from None
        finally:
            del self._waiters[upstream_id]
            self.mux.forget_own(upstream_id)
        assert waiter.message is not None
        return waiter.message

    async def request(
        self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """A request of the daemon's own on the established session (timeout 0: none)."""
        transport = self.transport
        if transport is None or not self.connected:
            raise UpstreamError("not connected")
        try:
            try:
                return await self._own_request(transport, method, params, timeout)
            except SessionExpired:
                assert isinstance(transport, StreamableHttp)
                await self._reinitialize(transport)
                return await self._own_request(transport, method, params, timeout)
        except SESSION_FATAL as exc:
            self._fail(exc)
            raise

    def notice(self, text: str) -> None:
        """Tell every attached editor something its user should know."""
        self._apply(self.mux.notice(text))

    def update_tools(self, config: ServerConfig) -> None:
        """The config changed in its tool filter alone: applied from now on, and
        the attached editors are told their tool list changed."""
        self.config = config
        self._apply(self.mux.set_tool_filter(ToolFilter.of(self.name, config.tools)))

    def reconnect(self, reason: str) -> None:
        """End the session (new credentials, say); the keeper opens a new one."""
        self._fail(ConnectionLost(reason))

    # --- Editors ----------------------------------------------------------------------

    def attach(self, editor: EditorId, sink: EditorSink) -> None:
        self.sinks[editor] = sink
        self.mux.attach(editor)

    def detach(self, editor: EditorId) -> None:
        routing = self.mux.detach(editor)
        self.sinks.pop(editor, None)
        if self.connected:
            self._apply(routing)

    def from_editor(self, editor: EditorId, message: dict[str, Any]) -> None:
        self._apply(self.mux.from_editor(editor, message))
