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
from . import jsonrpc
from .mux import EditorId, Multiplexer, Routing
from .transport import (
    LATEST_PROTOCOL,
    LEGACY_PROTOCOL,
    STREAMABLE_PROTOCOLS,
    AuthorizationRequired,
    ConnectionLost,
    HttpStatusError,
    LegacySse,
    SessionExpired,
    StreamableHttp,
    Transport,
    TransportSettings,
    UpstreamError,
    describe,
)

log = logging.getLogger(__name__)

CLIENT_INFO = {"name": "mcpd", "version": __version__}
# Declared so that servers may ask; each request is handed to an editor that
# supports it, or refused when none does.
CLIENT_CAPABILITIES: dict[str, Any] = {
    "roots": {"listChanged": True},
    "sampling": {},
    "elicitation": {},
}
# Status codes to an initialize POST that mean "this is a legacy SSE server".
LEGACY_FALLBACK_STATUSES = frozenset({400, 404, 405})

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
        self.sinks: dict[EditorId, EditorSink] = {}
        self.transport: Transport | None = None
        self._tg: TaskGroup | None = None
        self._waiters: dict[int, _Waiter] = {}
        self._failure: BaseException | None = None
        self._failed = anyio.Event()
        self._reinitializing: anyio.Lock = anyio.Lock()

    @property
    def connected(self) -> bool:
        return self.transport is not None and self._failure is None

    @property
    def initialize_result(self) -> dict[str, Any] | None:
        return self.mux.initialize_result

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
        transport, self.transport = self.transport, None
        if transport is not None:
            await transport.terminate()
        self.lost("the session was closed")

    def lost(self, reason: str) -> None:
        """The transport is gone: every request in flight is answered with an error."""
        self.transport = None
        self._apply(
            self.mux.fail_all_pending(
                jsonrpc.SERVER_UNAVAILABLE, f"server {self.name!r} connection lost: {reason}"
            )
        )

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

    async def _post(self, transport: Transport, message: dict[str, Any]) -> None:
        """Post; when the server refuses the access token, get a new one and post once more."""
        token = self.auth.bearer()
        try:
            await transport.post(message)
        except AuthorizationRequired as exc:
            # No token to send (it expired just now, say): refresh the current one.
            if "insufficient_scope" in exc.challenge or not await self.auth.refresh(token):
                raise
            await transport.post(message)

    def _send_soon(self, message: dict[str, Any]) -> None:
        assert self._tg is not None
        self._tg.start_soon(self._send, message)

    async def _send(self, message: dict[str, Any]) -> None:
        transport = self.transport
        if transport is None:
            self._answer_unsent(message, "the server is not connected")
            return
        try:
            try:
                await self._post(transport, message)
            except SessionExpired:
                assert isinstance(transport, StreamableHttp)
                await self._reinitialize(transport)
                await self._post(transport, message)
        except SESSION_FATAL as exc:
            self._answer_unsent(message, describe(exc))
            self._fail(exc)
        except (UpstreamError, HttpError) as exc:
            self._answer_unsent(message, describe(exc))

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
        """Send a request of the daemon's and wait for its answer (the config's
        timeout by default; None waits as long as the server takes)."""
        limit = self.config.timeout if timeout is None else timeout
        message = self.mux.own_request(method, params)
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
        error = waiter.message.get("error")
        if isinstance(error, dict):
            raise RequestFailed(int(error.get("code", 0)), str(error.get("message", "")))
        result = waiter.message.get("result")
        return result if isinstance(result, dict) else {}

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
