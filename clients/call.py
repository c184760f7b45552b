"""`mcpctl call`: one tool call, made as an editor of the server's session.

mcpctl attaches to the server as `mcpctl stdio` does and speaks MCP itself:
`initialize` (declaring form and URL elicitation, and nothing else), then
`tools/call`. The daemon routes the server's requests that belong to that call
to mcpctl alone (and those on the standalone stream to the most recently
active editor that can take them, which may be mcpctl while it waits), so
mcpctl answers the server's `elicitation/create` itself (clients/elicit.py),
and answers anything else with -32601 (Method not found), as a client without
that capability does. Closing the connection ends the attachment; the daemon
cancels the call upstream if it is still running.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from mcpd.protocol import AttachParams, Response, Rpc

from .client import DaemonClient, DaemonError
from .elicit import Answer, InvalidRequest

PROTOCOL_VERSION = "2025-11-25"
CAPABILITIES: dict[str, Any] = {"elicitation": {"form": {}, "url": {}}}
METHOD_NOT_FOUND = -32601
# The daemon's answer when the server cannot take requests now (docs/protocol.md).
SERVER_UNAVAILABLE = -32001
INVALID_PARAMS = -32602

_json = msgspec.json.Encoder()


class CallFailed(Exception):
    """The call was answered with a JSON-RPC error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class ToolCall:
    def __init__(
        self,
        client: DaemonClient,
        server: str,
        elicit: Callable[[dict[str, Any]], Answer],
        client_info: dict[str, Any],
    ) -> None:
        self.client = client
        self.server = server
        self.elicit = elicit
        self.client_info = client_info
        self._next_id = 0

    def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """Attach, initialize and call the tool; its result, or CallFailed."""
        self.client.request("attach", AttachParams(self.server))
        self.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": CAPABILITIES,
                "clientInfo": self.client_info,
            },
        )
        self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return self.request("tools/call", {"name": tool, "arguments": arguments})

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        request_id = self._next_id
        self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        while True:
            message = self._next_rpc()
            if message.get("id") == request_id and "method" not in message:
                error = message.get("error")
                if isinstance(error, dict):
                    raise CallFailed(int(error.get("code", 0)), str(error.get("message", "")))
                result = message.get("result")
                return result if isinstance(result, dict) else {}
            if isinstance(message.get("method"), str) and "id" in message:
                self._send(self._serve(message))
            # Notifications (progress, logs, list changes) are not this command's.

    def _next_rpc(self) -> dict[str, Any]:
        while True:
            frame = self.client.receive()
            if isinstance(frame, Response) and frame.id is None and frame.error is not None:
                raise DaemonError(frame.error.code, frame.error.message)
            if not isinstance(frame, Rpc):
                continue
            try:
                message = msgspec.json.decode(frame.data)
            except msgspec.DecodeError:
                continue
            if isinstance(message, dict):
                return message

    def _serve(self, request: dict[str, Any]) -> dict[str, Any]:
        """The answer to a request of the server's."""
        method, params = request["method"], request.get("params")
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request["id"]}
        if method == "ping":
            return {**reply, "result": {}}
        if method != "elicitation/create":
            error = {"code": METHOD_NOT_FOUND, "message": f"Method not found: {method}"}
            return {**reply, "error": error}
        try:
            answer = self.elicit(params if isinstance(params, dict) else {})
        except InvalidRequest as exc:
            return {**reply, "error": {"code": INVALID_PARAMS, "message": f"Invalid params: {exc}"}}
        return {**reply, "result": answer}

    def _send(self, message: dict[str, Any]) -> None:
        self.client.send_rpc(_json.encode(message))
