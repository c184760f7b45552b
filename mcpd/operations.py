"""The daemon's operations for control clients: `service.Service`, over the daemon.

Each operation finds the server it is about, checks that it makes sense for
that server (with an error that says why not, and what to do), and asks the
server, its credentials or the sign-in manager to do it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from .config import ConfigError
from .keys import KeyFileError
from .machine_credentials import MachineCredentials
from .oauth.messages import OAuthError
from .protocol import (
    AuthStarted,
    DeviceSignIn,
    ErrorCode,
    ReloadResult,
    ServerStatus,
    SignInMethod,
    TokenResult,
)
from .server import ServerRuntime, Unavailable
from .service import ServiceError
from .upstream.session import RequestFailed

if TYPE_CHECKING:
    from .daemon import Daemon

T = TypeVar("T")


@dataclass
class _Attachment:
    runtime: ServerRuntime
    editor: int

    @property
    def server(self) -> str:
        return self.runtime.name

    def status(self) -> ServerStatus:
        return self.runtime.status()

    def send_now(self, raw: bytes) -> bool:
        return self.runtime.from_editor_now(self.editor, raw)

    async def send(self, raw: bytes) -> None:
        await self.runtime.from_editor(self.editor, raw)

    def detach(self) -> None:
        self.runtime.detach(self.editor)


class Operations:
    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    @property
    def max_frame_size(self) -> int:
        return self._daemon.max_frame_size

    def _server(self, name: str) -> ServerRuntime:
        try:
            return self._daemon.servers[name]
        except KeyError:
            known = ", ".join(sorted(self._daemon.servers)) or "none are configured"
            raise ServiceError(
                ErrorCode.UNKNOWN_SERVER, f"no server named {name!r} (configured: {known})"
            ) from None

    # --- The daemon -------------------------------------------------------------------

    def status(self, servers: list[str] | None) -> list[ServerStatus]:
        if servers is None:
            return [runtime.status() for runtime in self._daemon.servers.values()]
        return [self._server(name).status() for name in servers]

    async def reload(self) -> ReloadResult:
        try:
            return await self._daemon.reload()
        except ConfigError as exc:
            raise ServiceError(
                ErrorCode.CONFIG_ERROR, f"{exc}; the previous configuration stays in use"
            ) from None

    async def rotate_key(self) -> int:
        try:
            return await self._daemon.rotate_key()
        except KeyFileError as exc:
            raise ServiceError(ErrorCode.STORE_ERROR, str(exc)) from None

    def shutdown(self) -> None:
        self._daemon.request_shutdown()

    # --- Editors ----------------------------------------------------------------------

    def attach(
        self, server: str, sink: Callable[[bytes], None], replay: bytes | None
    ) -> _Attachment:
        runtime = self._server(server)
        attachment = _Attachment(runtime, self._daemon.new_editor_id())
        runtime.attach(attachment.editor, sink, replay)
        return attachment

    async def tools(self, server: str) -> list[dict[str, Any]]:
        runtime = self._server(server)
        listed: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = await _upstream(
                runtime.request("tools/list", {"cursor": cursor} if cursor else None)
            )
            listed += [tool for tool in page.get("tools", []) if isinstance(tool, dict)]
            cursor = page.get("nextCursor")
            if not isinstance(cursor, str) or not cursor:
                return listed

    async def call(self, server: str, tool: str, arguments: Any) -> Any:
        runtime = self._server(server)
        if refusal := runtime.tool_filter.refusal(tool):
            raise ServiceError(ErrorCode.INVALID_PARAMS, refusal)  # never reaches the server
        # No time limit of the daemon's: a tool may run long; the client cancels.
        request = runtime.request("tools/call", {"name": tool, "arguments": arguments}, timeout=0)
        return await _upstream(request)

    # --- Signing in -------------------------------------------------------------------

    def _oauth_server(self, name: str) -> ServerRuntime:
        """The server, if signing in to it makes sense; else an error that says why."""
        runtime = self._server(name)
        config = runtime.entry.config
        if config is None:
            raise ServiceError(
                ErrorCode.CONFIG_ERROR, f"server {name!r} is misconfigured: {runtime.entry.error}"
            )
        if not config.enabled:
            raise ServiceError(ErrorCode.SERVER_UNAVAILABLE, f"server {name!r} is disabled")
        if config.oauth is False:
            raise ServiceError(ErrorCode.AUTH_FAILED, f"oauth = false for server {name!r}")
        if runtime.static_authorization():
            raise ServiceError(
                ErrorCode.AUTH_FAILED,
                f"server {name!r} has a configured Authorization header; remove it (or set "
                "oauth) to sign in with OAuth",
            )
        return runtime

    async def sign_in(self, server: str, restart: bool, method: SignInMethod) -> AuthStarted:
        runtime = self._oauth_server(server)
        try:
            flow, joined = await self._daemon.auth.start(runtime, restart=restart, method=method)
        except OAuthError as exc:
            raise ServiceError(ErrorCode.AUTH_FAILED, str(exc)) from None
        if flow.device is not None:
            code = flow.device.code
            shown = DeviceSignIn(
                verification_uri=code.verification_uri,
                user_code=code.user_code,
                expires_in=round(max(0.0, flow.device.expires_at - time.monotonic())),
                verification_uri_complete=code.verification_uri_complete,
            )
            return AuthStarted("", joined, device=shown)
        if flow.url is None:
            if flow.error is None and isinstance(runtime.credentials, MachineCredentials):
                # Client credentials: the new token is in place; no URL to open.
                return AuthStarted("", joined, client_credentials=True)
            raise ServiceError(ErrorCode.AUTH_FAILED, flow.error or "the sign-in could not start")
        return AuthStarted(flow.url, joined)

    async def signed_in(self, server: str) -> ServerStatus:
        runtime = self._server(server)
        flow = self._daemon.auth.flows.get(server)
        if flow is None:
            raise ServiceError(ErrorCode.AUTH_FAILED, f"no sign-in to {server!r} was started")
        await flow.done.wait()
        if flow.error is not None:
            raise ServiceError(ErrorCode.AUTH_FAILED, flow.error)
        return await _connected_after_sign_in(runtime)

    async def paste(self, server: str, response: str) -> ServerStatus:
        runtime = self._server(server)
        succeeded, message = await self._daemon.auth.paste(runtime, response)
        if not succeeded:
            raise ServiceError(ErrorCode.AUTH_FAILED, message)
        return await _connected_after_sign_in(runtime)

    async def sign_out(self, server: str, forget_client: bool) -> bool:
        runtime = self._server(server)
        try:
            return await self._daemon.auth.logout(runtime, forget_client)
        except OAuthError as exc:
            raise ServiceError(ErrorCode.AUTH_FAILED, str(exc)) from None

    async def token(self, server: str) -> TokenResult:
        """A currently valid access token, refreshed first if due: a credential helper."""
        runtime = self._server(server)
        config = runtime.entry.config
        if config is None or not config.export_token:
            raise ServiceError(
                ErrorCode.AUTH_FAILED,
                f"server {server!r} does not hand its token out; set export_token = true "
                f"in [servers.{server}] to allow it",
            )
        credentials = runtime.credentials
        if not credentials.applies or credentials.tokens is None:
            raise ServiceError(
                ErrorCode.SERVER_UNAVAILABLE,
                f"not signed in to {server!r}; run `mcpctl auth {server}`",
            )
        tokens = await credentials.fresh_tokens()
        if tokens is None:
            raise ServiceError(
                ErrorCode.AUTH_FAILED,
                f"the token of {server!r} expired and could not be refreshed: "
                + (runtime.status().error or "see `mcpctl status`"),
            )
        return TokenResult(tokens.access_token, tokens.expires_at)


async def _upstream(request: Awaitable[T]) -> T:
    try:
        return await request
    except Unavailable as exc:
        raise ServiceError(ErrorCode.SERVER_UNAVAILABLE, str(exc)) from None
    except RequestFailed as exc:
        raise ServiceError(ErrorCode.UPSTREAM_ERROR, f"the server answered: {exc}") from None


async def _connected_after_sign_in(runtime: ServerRuntime) -> ServerStatus:
    if not await runtime.wait_usable():
        raise ServiceError(
            ErrorCode.SERVER_UNAVAILABLE,
            f"signed in, but {runtime.name!r} did not connect: "
            + (runtime.machine.error or str(runtime.machine.state)),
        )
    return runtime.status()
