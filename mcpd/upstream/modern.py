"""The MCP revision 2026-07-28 ("modern") as a client speaks it, sans-IO.

Theory of operation
-------------------
A modern server keeps no session: every request carries, in
`params._meta`, the protocol version, the capabilities of the client that
sends it and that client's identity, and every POST mirrors the method (and
the tool, prompt or resource it names) into headers. mcpd speaks it for each
editor in turn: a request forwarded from an editor carries *that editor's*
capabilities and `clientInfo`, so each editor gets exactly what it declared.

Whether a server is modern is learned once per connection with a
`server/discover` probe (`probe_outcome`). For editors that speak an older
revision the discover result stands in for the `initialize` result they
expect (`legacy_initialize_result`).

This module also holds the per-request rules that need no I/O: the request
headers and their encoding, which tools to keep when a tool's `x-mcp-header`
annotations are invalid (`screen_tools`), and the cache of list results
(`ListCache`) that answers editors while the server says a list is fresh.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from . import jsonrpc

MODERN_PROTOCOL: Final = "2026-07-28"
# The newest revision with an initialize handshake: what editors that send
# `initialize` are offered when the server is modern.
NEWEST_LEGACY_PROTOCOL: Final = "2025-11-25"

META_PROTOCOL: Final = "io.modelcontextprotocol/protocolVersion"
META_CAPABILITIES: Final = "io.modelcontextprotocol/clientCapabilities"
META_CLIENT_INFO: Final = "io.modelcontextprotocol/clientInfo"
META_SERVER_INFO: Final = "io.modelcontextprotocol/serverInfo"
META_SUBSCRIPTION: Final = "io.modelcontextprotocol/subscriptionId"

HEADER_MISMATCH: Final = -32020
MISSING_CLIENT_CAPABILITY: Final = -32021
UNSUPPORTED_PROTOCOL_VERSION: Final = -32022
# Error codes only a modern server answers with: a 4xx carrying one of them
# comes from a modern server, anything else from an older one.
MODERN_ERRORS: Final = frozenset(
    {HEADER_MISMATCH, MISSING_CLIENT_CAPABILITY, UNSUPPORTED_PROTOCOL_VERSION}
)

# Requests a server may answer with `resultType: "input_required"`.
INPUT_METHODS: Final = frozenset({"tools/call", "prompts/get", "resources/read"})
# List results the revision makes cacheable (`ttlMs`, `cacheScope`), and the
# notification that makes each one stale.
LIST_CHANGES: Final = {
    "tools/list": "notifications/tools/list_changed",
    "prompts/list": "notifications/prompts/list_changed",
    "resources/list": "notifications/resources/list_changed",
    "resources/templates/list": "notifications/resources/list_changed",
}
# Methods whose `Mcp-Name` header mirrors a parameter.
NAMED_BY = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SENTINEL = re.compile(r"^=\?base64\?.*\?=$", re.DOTALL)
_SAFE_INTEGER = 2**53 - 1


# --- Requests -------------------------------------------------------------------


def with_meta(
    message: dict[str, Any], capabilities: Mapping[str, Any], client_info: Mapping[str, Any]
) -> dict[str, Any]:
    """The request with the revision's per-request fields in `params._meta`.

    Fields the sender already set are kept: an editor that speaks the revision
    itself says what it means."""
    params = message.get("params")
    params = dict(params) if isinstance(params, dict) else {}
    meta = params.get("_meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta.setdefault(META_PROTOCOL, MODERN_PROTOCOL)
    meta.setdefault(META_CAPABILITIES, dict(capabilities))
    meta.setdefault(META_CLIENT_INFO, dict(client_info))
    params["_meta"] = meta
    return {**message, "params": params}


def header_value(value: str) -> str:
    """A value as a header carries it: as is when it is plain visible ASCII
    (inner spaces allowed), else in the revision's Base64 sentinel form."""
    plain = (
        value == value.strip()
        and all(0x20 <= ord(c) <= 0x7E for c in value)
        and not _SENTINEL.match(value)
    )
    return value if plain else "=?base64?" + base64.b64encode(value.encode()).decode() + "?="


def request_headers(
    message: dict[str, Any], tool_headers: Mapping[str, Mapping[str, tuple[str, ...]]]
) -> dict[str, str]:
    """`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name` and the `Mcp-Param-*`
    headers a tool's schema designates, for one POST."""
    params = message.get("params")
    params = params if isinstance(params, dict) else {}
    meta = params.get("_meta")
    version = meta.get(META_PROTOCOL) if isinstance(meta, dict) else None
    headers = {"MCP-Protocol-Version": version if isinstance(version, str) else MODERN_PROTOCOL}
    method = message.get("method")
    if not isinstance(method, str):
        return headers
    headers["Mcp-Method"] = header_value(method)
    field = NAMED_BY.get(method)
    name = params.get(field) if field else None
    if isinstance(name, str):
        headers["Mcp-Name"] = header_value(name)
    if method == "tools/call" and isinstance(name, str):
        arguments = params.get("arguments")
        for header, path in tool_headers.get(name, {}).items():
            value = _at(arguments, path)
            if value is not None:
                headers[f"Mcp-Param-{header}"] = header_value(_as_text(value))
    return headers


def _at(instance: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(instance, dict):
            return None
        instance = instance.get(key)
    return instance


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- Tools ------------------------------------------------------------------------


class InvalidTool(ValueError):
    """A tool definition the revision says a client must not offer."""


def header_paths(tool: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """The `Mcp-Param-*` headers a tool designates, with the argument path of each.

    Raises InvalidTool when an `x-mcp-header` annotation breaks the rules of
    the revision (a token name, unique ignoring case, on an integer, string or
    boolean reachable through `properties` alone)."""
    found: dict[str, tuple[str, ...]] = {}
    schema = tool.get("inputSchema")
    if isinstance(schema, dict):
        _collect(schema, (), found, reachable=True)
    return found


def _collect(
    schema: dict[str, Any],
    path: tuple[str, ...],
    found: dict[str, tuple[str, ...]],
    *,
    reachable: bool,
) -> None:
    if "x-mcp-header" in schema:
        name = schema["x-mcp-header"]
        if not reachable or not path:
            raise InvalidTool(
                "x-mcp-header is allowed only on a property reached through properties"
            )
        if not isinstance(name, str) or not name:
            raise InvalidTool("an x-mcp-header name must not be empty")
        if not _TOKEN.fullmatch(name):
            raise InvalidTool(f"x-mcp-header {name!r} is not an HTTP header name token")
        if schema.get("type") not in ("string", "integer", "boolean"):
            raise InvalidTool(
                f"x-mcp-header {name!r} is on a {schema.get('type')!r}; only string, "
                "integer and boolean parameters may be mirrored"
            )
        if any(name.lower() == other.lower() for other in found):
            raise InvalidTool(f"x-mcp-header {name!r} is given twice")
        found[name] = path
    for key, value in schema.items():
        if key == "properties" and isinstance(value, dict):
            for prop, sub in value.items():
                if isinstance(sub, dict):
                    _collect(sub, (*path, prop), found, reachable=reachable)
        elif isinstance(value, dict) and key != "x-mcp-header":
            _collect(value, path, found, reachable=False)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    _collect(item, path, found, reachable=False)


def screen_tools(
    result: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, dict[str, tuple[str, ...]]], list[str]]:
    """A `tools/list` result without the tools the revision says to reject,
    the header paths of the tools kept, and one line per tool left out."""
    tools = result.get("tools")
    if not isinstance(tools, list):
        return result, {}, []
    kept: list[Any] = []
    paths: dict[str, dict[str, tuple[str, ...]]] = {}
    dropped: list[str] = []
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        try:
            found = header_paths(tool)
        except InvalidTool as exc:
            dropped.append(f"tool {tool.get('name')!r} left out: {exc}")
            continue
        kept.append(tool)
        if found and isinstance(tool.get("name"), str):
            paths[tool["name"]] = found
    if not dropped:
        return result, paths, []
    return {**result, "tools": kept}, paths, dropped


# --- Discovery ------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeOutcome:
    """What a `server/discover` probe says about the server."""

    modern: bool
    # A modern server that refused the version: try once more.
    retry: bool = False
    result: dict[str, Any] | None = None


def probe_outcome(response: dict[str, Any] | None) -> ProbeOutcome:
    """Classify the answer to a probe (None: an HTTP error without a JSON-RPC body)."""
    if response is None:
        return ProbeOutcome(modern=False)
    error = response.get("error")
    if isinstance(error, dict):
        if error.get("code") == UNSUPPORTED_PROTOCOL_VERSION:
            data = error.get("data")
            supported = data.get("supported") if isinstance(data, dict) else None
            offered = isinstance(supported, list) and MODERN_PROTOCOL in supported
            return ProbeOutcome(modern=offered, retry=offered)
        return ProbeOutcome(modern=error.get("code") in MODERN_ERRORS)
    result = response.get("result")
    if not isinstance(result, dict):
        return ProbeOutcome(modern=False)
    versions = result.get("supportedVersions")
    if isinstance(versions, list) and MODERN_PROTOCOL in versions:
        return ProbeOutcome(modern=True, result=result)
    return ProbeOutcome(modern=False)


def legacy_initialize_result(discovered: dict[str, Any]) -> dict[str, Any]:
    """What an editor that sends `initialize` is told, from the discover result."""
    meta = discovered.get("_meta")
    info = meta.get(META_SERVER_INFO) if isinstance(meta, dict) else None
    info = info if isinstance(info, dict) else discovered.get("serverInfo")
    capabilities = discovered.get("capabilities")
    result: dict[str, Any] = {
        "protocolVersion": NEWEST_LEGACY_PROTOCOL,
        "capabilities": capabilities if isinstance(capabilities, dict) else {},
        "serverInfo": info if isinstance(info, dict) else {"name": "unknown", "version": "0"},
    }
    if isinstance(discovered.get("instructions"), str):
        result["instructions"] = discovered["instructions"]
    return result


def listen_filter(capabilities: Mapping[str, Any], uris: list[str]) -> dict[str, Any]:
    """The `subscriptions/listen` filter for what the server offers to notify."""

    def offers(name: str, flag: str) -> bool:
        entry = capabilities.get(name)
        return isinstance(entry, dict) and entry.get(flag) is True

    wanted: dict[str, Any] = {}
    if offers("tools", "listChanged"):
        wanted["toolsListChanged"] = True
    if offers("prompts", "listChanged"):
        wanted["promptsListChanged"] = True
    if offers("resources", "listChanged"):
        wanted["resourcesListChanged"] = True
    if uris:
        wanted["resourceSubscriptions"] = list(uris)
    return wanted


def is_input_required(message: dict[str, Any]) -> bool:
    result = message.get("result")
    return isinstance(result, dict) and result.get("resultType") == "input_required"


def without_subscription_meta(message: dict[str, Any]) -> dict[str, Any]:
    """A notification of mcpd's own listen stream, as an older editor gets it."""
    params = message.get("params")
    if not isinstance(params, dict) or not isinstance(params.get("_meta"), dict):
        return message
    meta = {k: v for k, v in params["_meta"].items() if k != META_SUBSCRIPTION}
    trimmed = {k: v for k, v in params.items() if k != "_meta"}
    if meta:
        trimmed["_meta"] = meta
    return {**message, "params": trimmed}


def retry_request(
    original: dict[str, Any],
    request_id: jsonrpc.Id,
    result: dict[str, Any],
    responses: dict[str, Any],
) -> dict[str, Any]:
    """The original request again, under a new id, with the inputs gathered and
    the server's `requestState` echoed exactly (and left out when it sent none)."""
    params = dict(original.get("params") or {})
    params.pop("requestState", None)
    params.pop("inputResponses", None)
    if responses or "inputRequests" in result:
        params["inputResponses"] = responses
    if isinstance(result.get("requestState"), str):
        params["requestState"] = result["requestState"]
    return {**original, "id": request_id, "params": params}


def unattended_answers(result: dict[str, Any]) -> dict[str, Any]:
    """Answers for input requests when no one can be asked: an elicitation is
    declined; nothing else is answered (the server may ask again, or fail)."""
    asked = result.get("inputRequests")
    if not isinstance(asked, dict):
        return {}
    return {
        key: {"action": "decline"}
        for key, request in asked.items()
        if isinstance(request, dict) and request.get("method") == "elicitation/create"
    }


# --- Caching ----------------------------------------------------------------------


CacheKey = tuple[str, str | None]


class ListCache:
    """List results kept while the server says they are fresh (`ttlMs`).

    Keyed by method and cursor; a list-changed notification or new credentials
    (another authorization context) empties the entries concerned, and a
    result asked for before such a change is not kept. Counts the upstream
    requests it saved."""

    def __init__(self) -> None:
        self._entries: dict[CacheKey, tuple[float, dict[str, Any]]] = {}
        self.hits = 0
        # Moves on at every change: a result asked for in an older one is stale.
        self.generation = 0

    @staticmethod
    def key(method: str, params: Any) -> CacheKey | None:
        """What identifies a list request's result; None for any other request."""
        if method not in LIST_CHANGES:
            return None
        params = params if isinstance(params, dict) else {}
        if set(params) - {"cursor", "_meta"}:
            return None  # parameters the key does not cover
        cursor = params.get("cursor")
        return (method, cursor if isinstance(cursor, str) else None)

    def get(self, key: CacheKey, now: float) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, result = entry
        if now >= expires:
            del self._entries[key]
            return None
        self.hits += 1
        return result

    def put(self, key: CacheKey, result: dict[str, Any], now: float, generation: int) -> None:
        """Keep `result`, asked for in `generation`, for as long as it is fresh."""
        ttl = result.get("ttlMs")
        if generation != self.generation or result.get("resultType", "complete") != "complete":
            return
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or ttl <= 0:
            return
        self._entries[key] = (now + ttl / 1000, result)

    def changed(self, notification: str) -> None:
        if notification not in LIST_CHANGES.values():
            return
        self.generation += 1
        for key in [k for k in self._entries if LIST_CHANGES[k[0]] == notification]:
            del self._entries[key]

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
