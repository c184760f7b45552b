"""Hostile peers: an MCP server and an authorization server that each send one
thing a well-behaved peer never would, and a recording listener on another
origin that must never be reached.

These are fakes on purpose: no real server sends a session id with a byte
above 0x7E, an SSE id with a control character, a server-to-client request
whose method is a list, an access token with a line break, or a redirect of
its token endpoint to a third host. Each is a route of tests/http_peer.py (a
standard-library HTTP/1.1 server that records every request), speaking just
enough MCP or OAuth to reach the hostile part:

- `FakeMcp`: answers `initialize` (JSON, with `session_id` as its
  Mcp-Session-Id) and every other request with an empty result; a GET opens
  the server-to-client stream, which sends `get_events` and then stays open
  until the peer closes. `answer` replaces the whole route for a request,
  to answer with something else (a redirect, a legacy endpoint event).
- `FakeAuthorizationServer`: the resource's protected resource metadata,
  the authorization server metadata, an authorization endpoint that approves
  at once (redirects to the client's redirect_uri with a code), and a token
  endpoint whose answer `token_answer` chooses; with `device_answer`, also a
  device authorization endpoint whose answer that chooses.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from http_peer import Peer, http_peer, send

Handler = http.server.BaseHTTPRequestHandler


def send_json(handler: Handler, value: Any, status: int = 200, **headers: str) -> None:
    send(handler, status, json.dumps(value).encode(), Content_Type="application/json", **headers)


def _body(handler: Handler) -> Any:
    """The JSON body of the request (http_peer has read it)."""
    raw = handler.request_body  # type: ignore[attr-defined]
    return json.loads(raw) if raw else None


@contextmanager
def recording_listener() -> Iterator[Peer]:
    """A listener on another origin: every request it gets is recorded and
    answered 200, so that a test can assert that it received none."""
    with http_peer(lambda handler: send(handler, 200, b"thanks")) as peer:
        yield peer


@dataclass
class FakeMcp:
    session_id: str | None = "session-1"
    get_events: bytes | None = None
    hold_get: bool = True  # keep the GET stream open after `get_events`
    answer: Callable[[Handler], bool] | None = None  # True: it answered
    closed: threading.Event = field(default_factory=threading.Event)
    posted: list[Any] = field(default_factory=list)
    seen_headers: list[dict[str, str]] = field(default_factory=list)

    def route(self, handler: Handler) -> None:
        self.seen_headers.append({k.lower(): v for k, v in handler.headers.items()})
        if self.answer is not None and self.answer(handler):
            return
        if handler.command == "GET":
            self._stream(handler)
            return
        if handler.command == "DELETE":
            send(handler, 200)
            return
        message = _body(handler)
        self.posted.append(message)
        if not isinstance(message, dict) or "method" not in message or "id" not in message:
            send(handler, 202)  # a notification, or the client's answer to our request
            return
        headers = {}
        if message["method"] == "initialize" and self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        result: dict[str, Any] = {}
        if message["method"] == "initialize":
            result = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "hostile", "version": "1"},
            }
        elif message["method"] == "tools/list":
            result = {"tools": []}
        send_json(handler, {"jsonrpc": "2.0", "id": message["id"], "result": result}, **headers)

    def _stream(self, handler: Handler) -> None:
        if self.get_events is None:
            send(handler, 405)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.end_headers()
        handler.wfile.write(self.get_events)
        handler.wfile.flush()
        if self.hold_get:
            self.closed.wait(30)
        handler.close_connection = True


@contextmanager
def fake_mcp(server: FakeMcp, tls: tuple[Path, Path] | None = None) -> Iterator[Peer]:
    with http_peer(server.route, tls=tls) as peer:
        try:
            yield peer
        finally:
            server.closed.set()


@dataclass
class FakeAuthorizationServer:
    """An MCP endpoint that answers 401 to everything, with the OAuth around it."""

    token_answer: Callable[[Handler], None]
    origin: str = ""
    # When given, the metadata offers a device sign-in (RFC 8628) and this
    # answers its device authorization endpoint.
    device_answer: Callable[[Handler], None] | None = None

    def route(self, handler: Handler) -> None:
        path = urlsplit(handler.path).path
        issuer = self.origin
        if path == "/.well-known/oauth-protected-resource/mcp":
            send_json(handler, {"resource": f"{issuer}/mcp", "authorization_servers": [issuer]})
        elif path == "/.well-known/oauth-authorization-server":
            metadata = {
                "issuer": issuer,
                "authorization_endpoint": f"{issuer}/authorize",
                "token_endpoint": f"{issuer}/token",
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_post"],
            }
            if self.device_answer is not None:
                metadata["device_authorization_endpoint"] = f"{issuer}/device"
            send_json(handler, metadata)
        elif path == "/device" and self.device_answer is not None:
            self.device_answer(handler)
        elif path == "/authorize":
            query = {k: v[0] for k, v in parse_qs(urlsplit(handler.path).query).items()}
            answer = urlencode({"code": "hostile-code-0123456789", "state": query["state"]})
            send(handler, 302, Location=f"{query['redirect_uri']}?{answer}")
        elif path == "/token":
            self.token_answer(handler)
        elif path.startswith("/.well-known/"):
            send(handler, 404)
        else:
            metadata = f"{issuer}/.well-known/oauth-protected-resource/mcp"
            send(handler, 401, WWW_Authenticate=f'Bearer resource_metadata="{metadata}"')


@contextmanager
def fake_authorization_server(
    token_answer: Callable[[Handler], None],
    device_answer: Callable[[Handler], None] | None = None,
) -> Iterator[Peer]:
    server = FakeAuthorizationServer(token_answer, device_answer=device_answer)
    with http_peer(server.route) as peer:
        server.origin = peer.url
        yield peer


@contextmanager
def closing_listener(*, reset: bool) -> Iterator[str]:
    """A port that accepts each connection and at once closes it (with a TCP
    reset when `reset`): what a dying load balancer or a firewall does to a TLS
    handshake. Yields its https URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            if reset:
                conn.recv(4096)  # the ClientHello
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                # A clean close is a FIN: sent first, then the client's data is
                # read to its end, since closing with unread data (a ClientHello
                # that arrived meanwhile) would make the kernel send a reset.
                conn.shutdown(socket.SHUT_WR)
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    while conn.recv(4096):
                        pass
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}/mcp"
    finally:
        listener.close()


# A server of the 2026-07-28 revision that answers each request in a way that
# once could have looped, crashed or misrouted: its tools name what they do.
HOSTILE_TOOLS: list[Any] = [
    {"name": "list_inputs", "inputSchema": {"type": "object"}},
    {"name": "unknown_input", "inputSchema": {"type": "object"}},
    {"name": "asks_forever", "inputSchema": {"type": "object"}},
    {"name": "bad_header", "inputSchema": {"type": "object", "x-mcp-header": "Root"}},
    "not a tool",
    {"name": "bad_header_value", "inputSchema": {"properties": {"p": {"x-mcp-header": "a b"}}}},
]


@dataclass
class FakeModern:
    """Counts what it is asked: `listens` (subscriptions/listen), `retries`."""

    listens: int = 0
    retries: int = 0

    def route(self, handler: Handler) -> None:
        message = _body(handler)
        if not isinstance(message, dict) or "id" not in message:
            send(handler, 202)
            return
        method, params = message.get("method"), message.get("params") or {}
        result: Any
        if method == "server/discover":
            result = {
                "resultType": "complete",
                "supportedVersions": ["2026-07-28"],
                "capabilities": {"tools": {"listChanged": True}},
                "ttlMs": -5,
            }
        elif method == "subscriptions/listen":
            self.listens += 1  # ended at once, every time: no hot loop may follow
            result = {"resultType": "complete"}
        elif method == "tools/list":
            result = {"tools": HOSTILE_TOOLS, "ttlMs": 10**30, "cacheScope": ["nonsense"]}
        elif method == "tools/call":
            self.retries += "requestState" in params or "inputResponses" in params
            asked: Any = {
                "list_inputs": [{"method": "elicitation/create"}],
                "unknown_input": {"a": {"method": "shell/exec", "params": {"cmd": "rm"}}},
                "asks_forever": {},
            }.get(params.get("name"), "not an object")
            result = {"resultType": "input_required", "inputRequests": asked, "requestState": 7}
        else:
            result = {"resultType": "bogus"}
        send_json(handler, {"jsonrpc": "2.0", "id": message["id"], "result": result})


@contextmanager
def fake_modern(server: FakeModern) -> Iterator[Peer]:
    with http_peer(server.route) as peer:
        yield peer
