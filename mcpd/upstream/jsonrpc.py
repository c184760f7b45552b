"""JSON-RPC 2.0 messages as MCP uses them: just enough parsing to route them.

Messages stay plain dicts decoded by msgspec; this module classifies them and
builds the few the daemon writes itself (errors, results, notifications).
"""

from __future__ import annotations

from typing import Any, Final, TypeGuard

import msgspec

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
# Implementation-defined server errors (-32000 to -32099): the server cannot
# be reached now, and the message says why and what fixes it.
SERVER_UNAVAILABLE: Final = -32001

Id = int | str


def is_id(value: Any) -> TypeGuard[int | str]:
    """A usable JSON-RPC id: a string or an integer (not a bool, not null)."""
    return isinstance(value, int | str) and not isinstance(value, bool)


_decoder = msgspec.json.Decoder()
encode = msgspec.json.Encoder().encode


class InvalidMessage(ValueError):
    pass


def decode(raw: bytes | str) -> dict[str, Any]:
    """One JSON-RPC message; InvalidMessage if it is not JSON or not a message."""
    try:
        message = _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidMessage(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidMessage("not valid JSON: nested too deeply") from None
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        raise InvalidMessage('not a JSON-RPC 2.0 message (a JSON object with "jsonrpc": "2.0")')
    return message


def is_request(message: dict[str, Any]) -> bool:
    return isinstance(message.get("method"), str) and "id" in message


def is_notification(message: dict[str, Any]) -> bool:
    return isinstance(message.get("method"), str) and "id" not in message


def is_response(message: dict[str, Any]) -> bool:
    return "method" not in message and ("result" in message or "error" in message)


def request(request_id: Id, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def notification(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return message


def result(request_id: Id | None, value: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": value}


def error(request_id: Id | None, code: int, message: str, data: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        body["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": body}


def progress_token(message: dict[str, Any]) -> Id | None:
    params = message.get("params")
    if not isinstance(params, dict):
        return None
    meta = params.get("_meta")
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    return token if is_id(token) else None
