"""The dispatch table of the control protocol: method name -> params type, handler.

A handler takes the request's context and its decoded params and returns the
result (any msgspec-encodable value) or raises `RpcFailure`. Adding a method
is adding one entry to `METHODS`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import ConfigError
from .keys import KeyFileError
from .oauth.http import OAuthError
from .protocol import (
    PROTOCOL_VERSION,
    AttachParams,
    AttachResult,
    AuthParams,
    AuthPasteParams,
    AuthStarted,
    CallParams,
    EmptyParams,
    ErrorCode,
    HelloParams,
    HelloResult,
    LogoutParams,
    LogoutResult,
    ReloadResult,
    RotateKeyResult,
    ServerParams,
    ServerStatus,
    StatusParams,
    StatusResult,
    SubscribeParams,
    TokenResult,
    ToolsResult,
)
from .server import ServerRuntime, Unavailable
from .upstream.session import RequestFailed

if TYPE_CHECKING:
    from .connection import ClientConnection
    from .daemon import Daemon


class RpcFailure(Exception):
    def __init__(self, code: ErrorCode, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


@dataclass
class RequestContext:
    daemon: Daemon
    connection: ClientConnection
    # Run after the response has been queued (e.g. shutdown, which must answer first).
    after_response: list[Callable[[], None]] = field(default_factory=list)


Handler = Callable[[RequestContext, Any], Awaitable[Any]]


@dataclass(frozen=True)
class Method:
    params: type[Any]
    handler: Handler
    # False for methods that must run to their end once started; a cancel of
    # them is ignored and they answer with their real outcome.
    cancellable: bool = True
    # True for methods that answer at once, never waiting on anything: they run
    # in the connection's read loop, without a task of their own. (hello must:
    # requests pipelined behind it need the greeting done.)
    inline: bool = False


async def hello(ctx: RequestContext, params: HelloParams) -> HelloResult:
    if params.protocol != PROTOCOL_VERSION:
        client = params.client or "the client"
        older = "mcpd" if params.protocol > PROTOCOL_VERSION else client
        raise RpcFailure(
            ErrorCode.PROTOCOL_MISMATCH,
            f"{client} speaks protocol {params.protocol} and mcpd {__version__} speaks "
            f"protocol {PROTOCOL_VERSION}; upgrade {older} so both speak the same version",
            {"supported": [PROTOCOL_VERSION]},
        )
    return HelloResult(
        protocol=PROTOCOL_VERSION,
        daemon=f"mcpd {__version__}",
        pid=os.getpid(),
        max_frame_size=ctx.daemon.max_frame_size,
    )


async def status(ctx: RequestContext, params: StatusParams) -> StatusResult:
    daemon = ctx.daemon
    if params.server is None:
        return StatusResult([runtime.status() for runtime in daemon.servers.values()])
    return StatusResult([daemon.server(params.server).status()])


async def reload(ctx: RequestContext, params: EmptyParams) -> ReloadResult:
    try:
        return await ctx.daemon.reload()
    except ConfigError as exc:
        raise RpcFailure(
            ErrorCode.CONFIG_ERROR, f"{exc}; the previous configuration stays in use"
        ) from None


async def subscribe(ctx: RequestContext, params: SubscribeParams) -> StatusResult:
    """Start state events; the result is the current status they follow from."""
    daemon = ctx.daemon
    names = list(daemon.servers) if params.servers is None else params.servers
    current = [daemon.server(name).status() for name in names]
    ctx.connection.subscribe(params.servers)
    return StatusResult(current)


async def rotate_key(ctx: RequestContext, params: EmptyParams) -> RotateKeyResult:
    try:
        return RotateKeyResult(records=await ctx.daemon.rotate_key())
    except KeyFileError as exc:
        raise RpcFailure(ErrorCode.STORE_ERROR, str(exc)) from None


async def shutdown(ctx: RequestContext, params: EmptyParams) -> None:
    ctx.after_response.append(ctx.daemon.request_shutdown)


async def attach(ctx: RequestContext, params: AttachParams) -> AttachResult:
    """From now on this connection carries the editor's MCP session (rpc messages)."""
    runtime = ctx.daemon.server(params.server)
    ctx.connection.attach(runtime, params.replay)
    return AttachResult(runtime.status())


async def _upstream(runtime_request: Any) -> Any:
    try:
        return await runtime_request
    except Unavailable as exc:
        raise RpcFailure(ErrorCode.SERVER_UNAVAILABLE, str(exc)) from None
    except RequestFailed as exc:
        raise RpcFailure(ErrorCode.UPSTREAM_ERROR, f"the server answered: {exc}") from None


def _oauth_runtime(ctx: RequestContext, name: str) -> ServerRuntime:
    """The server, if signing in to it makes sense; else an error that says why."""
    runtime = ctx.daemon.server(name)
    config = runtime.entry.config
    if config is None:
        raise RpcFailure(
            ErrorCode.CONFIG_ERROR, f"server {name!r} is misconfigured: {runtime.entry.error}"
        )
    if not config.enabled:
        raise RpcFailure(ErrorCode.SERVER_UNAVAILABLE, f"server {name!r} is disabled")
    if config.oauth is False:
        raise RpcFailure(ErrorCode.AUTH_FAILED, f"oauth = false for server {name!r}")
    if runtime.static_authorization():
        raise RpcFailure(
            ErrorCode.AUTH_FAILED,
            f"server {name!r} has a configured Authorization header; remove it (or set oauth) "
            "to sign in with OAuth",
        )
    return runtime


async def auth(ctx: RequestContext, params: AuthParams) -> AuthStarted:
    """Start the sign-in to a server, or join the one under way."""
    runtime = _oauth_runtime(ctx, params.server)
    assert ctx.daemon.auth is not None
    flow = await ctx.daemon.auth.start(runtime, restart=params.restart)
    if flow.url is None:
        raise RpcFailure(ErrorCode.AUTH_FAILED, flow.error or "the sign-in could not start")
    return AuthStarted(flow.url)


async def _connected_after_auth(runtime: ServerRuntime) -> ServerStatus:
    if not await runtime.wait_usable():
        raise RpcFailure(
            ErrorCode.SERVER_UNAVAILABLE,
            f"signed in, but {runtime.name!r} did not connect: "
            + (runtime.machine.error or str(runtime.machine.state)),
        )
    return runtime.status()


async def auth_wait(ctx: RequestContext, params: ServerParams) -> ServerStatus:
    """Wait for the sign-in to finish and the server to connect."""
    runtime = ctx.daemon.server(params.server)
    assert ctx.daemon.auth is not None
    flow = ctx.daemon.auth.flows.get(params.server)
    if flow is None:
        raise RpcFailure(ErrorCode.AUTH_FAILED, f"no sign-in to {params.server!r} was started")
    await flow.done.wait()
    if flow.error is not None:
        raise RpcFailure(ErrorCode.AUTH_FAILED, flow.error)
    return await _connected_after_auth(runtime)


async def auth_paste(ctx: RequestContext, params: AuthPasteParams) -> ServerStatus:
    """Finish a sign-in with the redirected URL (or code) a user pasted."""
    runtime = ctx.daemon.server(params.server)
    assert ctx.daemon.auth is not None
    succeeded, message = await ctx.daemon.auth.paste(runtime, params.response)
    if not succeeded:
        raise RpcFailure(ErrorCode.AUTH_FAILED, message)
    return await _connected_after_auth(runtime)


async def logout(ctx: RequestContext, params: LogoutParams) -> LogoutResult:
    runtime = ctx.daemon.server(params.server)
    assert ctx.daemon.auth is not None
    try:
        revoked = await ctx.daemon.auth.logout(runtime, params.forget_client)
    except OAuthError as exc:
        raise RpcFailure(ErrorCode.AUTH_FAILED, str(exc)) from None
    return LogoutResult(revoked)


async def token(ctx: RequestContext, params: ServerParams) -> TokenResult:
    """A currently valid access token, refreshed first if due: a credential helper."""
    runtime = ctx.daemon.server(params.server)
    config = runtime.entry.config
    if config is None or not config.export_token:
        raise RpcFailure(
            ErrorCode.AUTH_FAILED,
            f"server {params.server!r} does not hand its token out; set export_token = true "
            f"in [servers.{params.server}] to allow it",
        )
    token = runtime.bearer()
    if token is None:
        raise RpcFailure(
            ErrorCode.SERVER_UNAVAILABLE,
            f"not signed in to {params.server!r}; run `mcpctl auth {params.server}`",
        )
    refresher = runtime.refresher
    tokens = runtime.record.tokens if runtime.record else None
    now = time.time()
    expired = tokens is not None and tokens.expires_at is not None and tokens.expires_at <= now
    if refresher is not None and (refresher.schedule.is_due(now) or expired):
        await refresher.refresh(token)
        token = runtime.bearer()
        tokens = runtime.record.tokens if runtime.record else None
        if token is None or (
            tokens is not None
            and tokens.expires_at is not None
            and tokens.expires_at <= time.time()
        ):
            raise RpcFailure(
                ErrorCode.AUTH_FAILED,
                f"the token of {params.server!r} expired and could not be refreshed: "
                + (runtime.status().error or "see `mcpctl status`"),
            )
    return TokenResult(token, tokens.expires_at if tokens else None)


async def tools(ctx: RequestContext, params: ServerParams) -> ToolsResult:
    runtime = ctx.daemon.server(params.server)
    listed: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = await _upstream(
            runtime.request("tools/list", {"cursor": cursor} if cursor else None)
        )
        listed += [tool for tool in page.get("tools", []) if isinstance(tool, dict)]
        cursor = page.get("nextCursor")
        if not isinstance(cursor, str) or not cursor:
            return ToolsResult(listed)


async def call(ctx: RequestContext, params: CallParams) -> Any:
    runtime = ctx.daemon.server(params.server)
    arguments = {"name": params.tool, "arguments": params.arguments}
    # No time limit of the daemon's: a tool may run long; the client cancels.
    return await _upstream(runtime.request("tools/call", arguments, timeout=0))


METHODS: dict[str, Method] = {
    "hello": Method(HelloParams, hello, inline=True),
    "status": Method(StatusParams, status, inline=True),
    "reload": Method(EmptyParams, reload, cancellable=False),
    "subscribe": Method(SubscribeParams, subscribe),
    "rotate_key": Method(EmptyParams, rotate_key, cancellable=False),
    "shutdown": Method(EmptyParams, shutdown, cancellable=False),
    "attach": Method(AttachParams, attach),
    "auth": Method(AuthParams, auth),
    "auth_wait": Method(ServerParams, auth_wait),
    "auth_paste": Method(AuthPasteParams, auth_paste),
    "logout": Method(LogoutParams, logout, cancellable=False),
    "token": Method(ServerParams, token),
    "tools": Method(ServerParams, tools),
    "call": Method(CallParams, call),
}
