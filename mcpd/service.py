"""What a client of the control socket can ask of the daemon: one narrow interface.

The protocol's methods (`methods.py`) decode a request's params, call one
operation of `Service`, and encode its result; they see no server, session or
sign-in flow. `operations.py` implements it over the daemon. An operation
that cannot be done raises `ServiceError`, with the protocol's error code and
a message that says what is wrong and what fixes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .protocol import (
    AuthStarted,
    ErrorCode,
    ReloadResult,
    ServerStatus,
    SignInMethod,
    TokenResult,
)


class ServiceError(Exception):
    def __init__(self, code: ErrorCode, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class Attachment(Protocol):
    """An editor's MCP session with one server, through one client connection."""

    @property
    def server(self) -> str: ...

    def status(self) -> ServerStatus: ...

    def send_now(self, raw: bytes) -> bool:
        """One JSON-RPC message from the editor, if it can be taken without a
        wait (False: `send` it)."""

    async def send(self, raw: bytes) -> None:
        """One JSON-RPC message from the editor."""

    def detach(self) -> None: ...


class Service(Protocol):
    @property
    def max_frame_size(self) -> int: ...

    def status(self, servers: list[str] | None) -> list[ServerStatus]:
        """Every server's status (None), or those named (UNKNOWN_SERVER if one is not)."""

    async def reload(self) -> ReloadResult: ...

    async def rotate_key(self) -> int: ...

    def shutdown(self) -> None: ...

    def attach(
        self, server: str, sink: Callable[[bytes], None], replay: bytes | None
    ) -> Attachment:
        """Attach an editor whose messages from the server go to `sink`."""

    async def sign_in(self, server: str, restart: bool, method: SignInMethod) -> AuthStarted:
        """Start the sign-in (or join the one under way); its authorization URL, or
        its user code."""

    async def signed_in(self, server: str) -> ServerStatus:
        """Wait for the sign-in to end and the server to connect."""

    async def paste(self, server: str, response: str) -> ServerStatus:
        """Finish the sign-in with the address (or code) the user pasted."""

    async def sign_out(self, server: str, forget_client: bool) -> bool:
        """Revoke and forget the tokens; whether the authorization server revoked them."""

    async def token(self, server: str) -> TokenResult: ...

    async def tools(self, server: str) -> list[dict[str, Any]]: ...

    async def call(self, server: str, tool: str, arguments: Any) -> Any: ...
