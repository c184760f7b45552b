"""The dispatch table of the control protocol: method name -> params type, handler.

A handler takes the request's context and its decoded params, asks the
daemon's `Service` (service.py) for what the method means, and returns the
result (any msgspec-encodable value) or raises `ServiceError`. Handlers know
the protocol and the service, nothing of the daemon's insides. Adding a
method is adding one entry to `METHODS`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from . import __version__
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
from .service import Service, ServiceError

if TYPE_CHECKING:
    from .connection import ClientConnection


class RequestContext(msgspec.Struct):
    """What a request's handler may use (a Struct: one is made per request)."""

    service: Service
    connection: ClientConnection
    # Run after the response has been queued (e.g. shutdown, which must answer first).
    after_response: list[Callable[[], None]] = []


@dataclass(frozen=True)
class Method:
    params: type[Any]
    handler: Callable[[RequestContext, Any], Awaitable[Any]]
    # False for methods that must run to their end once started; a cancel of
    # them is ignored and they answer with their real outcome.
    cancellable: bool = True


@dataclass(frozen=True)
class InlineMethod:
    """A method that answers at once, never waiting on anything: a plain
    function, run where its request is read (as a rule in the socket's
    readiness callback), with no task and no wait. (hello must be one:
    requests pipelined behind it need the greeting done.)"""

    params: type[Any]
    answer: Callable[[RequestContext, Any], Any]


def hello(ctx: RequestContext, params: HelloParams) -> HelloResult:
    if params.protocol != PROTOCOL_VERSION:
        client = params.client or "the client"
        older = "mcpd" if params.protocol > PROTOCOL_VERSION else client
        raise ServiceError(
            ErrorCode.PROTOCOL_MISMATCH,
            f"{client} speaks protocol {params.protocol} and mcpd {__version__} speaks "
            f"protocol {PROTOCOL_VERSION}; upgrade {older} so both speak the same version",
            {"supported": [PROTOCOL_VERSION]},
        )
    return HelloResult(
        protocol=PROTOCOL_VERSION,
        daemon=f"mcpd {__version__}",
        pid=os.getpid(),
        max_frame_size=ctx.service.max_frame_size,
        host=socket.gethostname(),
    )


def status(ctx: RequestContext, params: StatusParams) -> StatusResult:
    return StatusResult(ctx.service.status(None if params.server is None else [params.server]))


async def reload(ctx: RequestContext, params: EmptyParams) -> ReloadResult:
    return await ctx.service.reload()


async def subscribe(ctx: RequestContext, params: SubscribeParams) -> StatusResult:
    """Start state events; the result is the current status they follow from."""
    current = ctx.service.status(params.servers)
    ctx.connection.subscribe(params.servers)
    return StatusResult(current)


async def rotate_key(ctx: RequestContext, params: EmptyParams) -> RotateKeyResult:
    return RotateKeyResult(records=await ctx.service.rotate_key())


async def shutdown(ctx: RequestContext, params: EmptyParams) -> None:
    ctx.after_response.append(ctx.service.shutdown)


async def attach(ctx: RequestContext, params: AttachParams) -> AttachResult:
    """From now on this connection carries the editor's MCP session (rpc messages)."""
    attachment = ctx.connection.attach(params.server, params.replay)
    return AttachResult(attachment.status())


async def auth(ctx: RequestContext, params: AuthParams) -> AuthStarted:
    """Start the sign-in to a server, or join the one under way."""
    return await ctx.service.sign_in(params.server, params.restart, params.method)


async def auth_wait(ctx: RequestContext, params: ServerParams) -> ServerStatus:
    """Wait for the sign-in to finish and the server to connect."""
    return await ctx.service.signed_in(params.server)


async def auth_paste(ctx: RequestContext, params: AuthPasteParams) -> ServerStatus:
    """Finish a sign-in with the redirected URL (or code) a user pasted."""
    return await ctx.service.paste(params.server, params.response)


async def logout(ctx: RequestContext, params: LogoutParams) -> LogoutResult:
    return LogoutResult(await ctx.service.sign_out(params.server, params.forget_client))


async def token(ctx: RequestContext, params: ServerParams) -> TokenResult:
    """A currently valid access token, refreshed first if due: a credential helper."""
    return await ctx.service.token(params.server)


async def tools(ctx: RequestContext, params: ServerParams) -> ToolsResult:
    return ToolsResult(await ctx.service.tools(params.server))


async def call(ctx: RequestContext, params: CallParams) -> Any:
    return await ctx.service.call(params.server, params.tool, params.arguments)


METHODS: dict[str, Method | InlineMethod] = {
    "hello": InlineMethod(HelloParams, hello),
    "status": InlineMethod(StatusParams, status),
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
