"""The peers of MCP 2026-07-28 and of a real OpenID provider work, spoken
with the standard library alone: tests/peers/stateless_server.mjs (the
TypeScript SDK v2), tests/peers/oidc_provider.mjs (oidc-provider and the MCP
server it protects) with tests/peers/cookie_browser.py, and the conformance
suite 0.2.0-alpha.12 beside 0.1.16.

These test tests/real_peers.py and tests/peers/, not mcpd. A missing peer is a
failure that says to run `bash tests/peers/install.sh`, never a skip.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import secrets
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import leakcheck
import pytest
import real_peers
from real_peers import OidcPeer, StatelessPeer, read_sse_events, token_fingerprint

pytestmark = pytest.mark.timeout(120)

MODERN = "2026-07-28"
CLIENT_INFO = {"name": "mcpd-tests", "version": "0"}


# --- MCP 2026-07-28 on the wire -------------------------------------------------


def envelope(capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
        "io.modelcontextprotocol/clientCapabilities": capabilities or {},
    }


def modern_post(
    peer: StatelessPeer,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    request_id: int = 1,
    capabilities: dict[str, Any] | None = None,
    name: str | None = None,
) -> tuple[int, dict[str, str], list[dict[str, Any]]]:
    """One stateless request, as a 2026-07-28 client sends it: the envelope in
    `_meta`, the Mcp-Method (and Mcp-Name) headers. (status, headers, messages)."""
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": method,
        "params": {**(params or {}), "_meta": {**envelope(capabilities)}},
    }
    if "_meta" in (params or {}):
        body["params"]["_meta"].update(params["_meta"])  # type: ignore[index]
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": method,
    }
    if name is not None:
        headers["Mcp-Name"] = name
    connection = http.client.HTTPConnection(f"127.0.0.1:{peer.peer.port}", timeout=20)
    try:
        connection.request("POST", "/mcp", json.dumps(body), headers)
        response = connection.getresponse()
        got = {k.lower(): v for k, v in response.getheaders()}
        if got.get("content-type", "").startswith("text/event-stream"):
            messages = [json.loads(data) for _, data in read_sse_events(response)]
        else:
            raw = response.read()
            messages = [json.loads(raw)] if raw else []
        return response.status, got, messages
    finally:
        connection.close()


def call(peer: StatelessPeer, tool: str, arguments: dict[str, Any], **extra: Any) -> dict[str, Any]:
    params = {"name": tool, "arguments": arguments, **extra.pop("params", {})}
    status, _, messages = modern_post(peer, "tools/call", params, name=tool, **extra)
    assert status == 200, messages
    result: dict[str, Any] = messages[-1]["result"]
    return result


@pytest.fixture
def stateless(tmp_path: Path) -> Iterator[StatelessPeer]:
    with real_peers.stateless_server(tmp_path, list_ttl_ms=5000) as peer:
        yield peer


def test_stateless_server_discovers_lists_and_greets(stateless: StatelessPeer) -> None:
    status, headers, [discovered] = modern_post(stateless, "server/discover")
    assert status == 200
    assert "mcp-session-id" not in headers
    assert MODERN in discovered["result"]["supportedVersions"]
    assert discovered["result"]["capabilities"]["tools"] == {"listChanged": True}

    _, _, [listed] = modern_post(stateless, "tools/list", request_id=2)
    tools = {tool["name"] for tool in listed["result"]["tools"]}
    assert {"greet", "confirm", "sample", "count", "add_tool", "client_info"} <= tools
    assert listed["result"]["ttlMs"] == 5000
    assert listed["result"]["cacheScope"] == "private"

    assert call(stateless, "greet", {"name": "mcpd"})["content"][0]["text"] == "Hello, mcpd!"
    info = call(stateless, "client_info", {}, capabilities={"sampling": {}})
    assert info["structuredContent"] == {
        "protocolVersion": MODERN,
        "clientInfo": CLIENT_INFO,
        "clientCapabilities": {"sampling": {}},
    }

    [request] = [r for r in stateless.requests() if r["mcp_name"] == "greet"]
    assert request["mcp_method"] == "tools/call"
    assert request["protocol_version"] == MODERN
    assert request["session"] is None
    [rpc] = request["rpc"]
    assert rpc["method"] == "tools/call"
    assert rpc["name"] == "greet"
    assert set(rpc["meta_keys"]) == set(envelope())
    assert rpc["envelope_version"] == MODERN
    real_peers.wait_until(
        lambda: len(stateless.events("response")) >= 4, "the responses to be logged"
    )


def test_stateless_server_elicits_and_samples_in_rounds(stateless: StatelessPeer) -> None:
    form = {"elicitation": {"form": {}}}
    first = call(stateless, "confirm", {"action": "deploy"}, capabilities=form)
    assert first["resultType"] == "input_required"
    request = first["inputRequests"]["confirm"]
    assert request["method"] == "elicitation/create"
    assert request["params"]["message"] == "Go ahead with deploy?"
    assert first["requestState"] == "confirm:deploy"
    answer = {"action": "accept", "content": {"confirm": True}}
    done = call(
        stateless,
        "confirm",
        {"action": "deploy"},
        capabilities=form,
        params={"inputResponses": {"confirm": answer}, "requestState": first["requestState"]},
    )
    assert done["content"][0]["text"] == "Confirmed: deploy"
    declined = call(
        stateless,
        "confirm",
        {"action": "deploy"},
        capabilities=form,
        params={"inputResponses": {"confirm": {"action": "decline"}}, "requestState": "x"},
    )
    assert declined["content"][0]["text"] == "Not confirmed: deploy (decline)"

    # A client that did not declare elicitation gets the revision's error.
    status, _, [refused] = modern_post(
        stateless, "tools/call", {"name": "confirm", "arguments": {"action": "x"}}, name="confirm"
    )
    assert status == 400
    assert refused["error"]["code"] == -32021
    assert refused["error"]["data"]["requiredCapabilities"] == {"elicitation": {"form": {}}}

    asked = call(stateless, "sample", {"prompt": "why?"}, capabilities={"sampling": {}})
    assert asked["inputRequests"]["llm"]["method"] == "sampling/createMessage"
    sampled = {"role": "assistant", "model": "m", "content": {"type": "text", "text": "because"}}
    result = call(
        stateless,
        "sample",
        {"prompt": "why?"},
        capabilities={"sampling": {}},
        params={"inputResponses": {"llm": sampled}, "requestState": asked["requestState"]},
    )
    assert result["content"][0]["text"] == "Sampled: because"
    retried = [
        rpc
        for request in stateless.requests()
        for rpc in request["rpc"]
        if rpc.get("input_response_keys")
    ]
    assert [rpc["input_response_keys"] for rpc in retried] == [["confirm"], ["confirm"], ["llm"]]


def test_stateless_server_reports_progress_and_stops_when_the_stream_closes(
    stateless: StatelessPeer,
) -> None:
    status, headers, messages = modern_post(
        stateless,
        "tools/call",
        {
            "name": "count",
            "arguments": {"steps": 3, "interval_ms": 10},
            "_meta": {"progressToken": "p"},
        },
        name="count",
    )
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    progress = [
        m["params"]["progress"] for m in messages if m.get("method") == "notifications/progress"
    ]
    assert progress == [1, 2, 3]
    assert messages[-1]["result"]["content"][0]["text"] == "Counted to 3"

    # Closing the response stream is the cancellation (2026-07-28).
    body = {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "tools/call",
        "params": {
            "name": "count",
            "arguments": {"steps": 100, "interval_ms": 50},
            "_meta": {**envelope(), "progressToken": "q"},
        },
    }
    connection = http.client.HTTPConnection(f"127.0.0.1:{stateless.peer.port}", timeout=20)
    connection.request(
        "POST",
        "/mcp",
        json.dumps(body),
        {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": MODERN,
            "Mcp-Method": "tools/call",
            "Mcp-Name": "count",
        },
    )
    events = read_sse_events(connection.getresponse())
    for _, data in events:
        if json.loads(data).get("params", {}).get("progress") == 2:
            break
    connection.sock.shutdown(2)  # type: ignore[union-attr]
    connection.close()
    real_peers.wait_until(lambda: stateless.events("cancelled") != [], "the count to stop")
    assert stateless.events("cancelled")[0]["at_step"] < 100


@contextmanager
def listening(peer: StatelessPeer) -> Iterator[list[dict[str, Any]]]:
    """A `subscriptions/listen` stream for tools/list_changed; what it carries."""
    received: list[dict[str, Any]] = []
    connection = http.client.HTTPConnection(f"127.0.0.1:{peer.peer.port}", timeout=20)
    body = {
        "jsonrpc": "2.0",
        "id": "listen-1",
        "method": "subscriptions/listen",
        "params": {"notifications": {"toolsListChanged": True}, "_meta": envelope()},
    }
    connection.request(
        "POST",
        "/mcp",
        json.dumps(body),
        {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": MODERN,
            "Mcp-Method": "subscriptions/listen",
        },
    )
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/event-stream")

    def read() -> None:
        try:
            for _, data in read_sse_events(response):
                received.append(json.loads(data))
        except (OSError, ValueError, http.client.HTTPException):
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield received
    finally:
        if connection.sock is not None:
            connection.sock.shutdown(2)
        reader.join(5)
        connection.close()


def test_stateless_server_announces_an_added_tool_on_listen_streams(
    stateless: StatelessPeer,
) -> None:
    with listening(stateless) as received:
        real_peers.wait_until(lambda: len(received) >= 1, "the subscription's acknowledgement")
        assert received[0]["method"] == "notifications/subscriptions/acknowledged"
        assert call(stateless, "add_tool", {"name": "extra"})["content"][0]["text"] == "Added extra"
        real_peers.wait_until(
            lambda: any(m.get("method") == "notifications/tools/list_changed" for m in received),
            "tools/list_changed on the listen stream",
        )
    _, _, [listed] = modern_post(stateless, "tools/list")
    assert "extra" in {tool["name"] for tool in listed["result"]["tools"]}
    assert call(stateless, "extra", {})["content"][0]["text"] == "extra was called"


def test_stateless_server_serves_2025_clients_statelessly_or_refuses_them(
    tmp_path: Path,
) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": CLIENT_INFO},
    }
    for legacy, expected in (("stateless", "2025-11-25"), ("reject", None)):
        with real_peers.stateless_server(tmp_path, legacy=legacy) as peer:
            session = real_peers.RawMcp(peer.url)
            reply = session.post(initialize)
            answer = reply.response(1)
            if expected:
                assert answer["result"]["protocolVersion"] == expected
                assert "mcp-session-id" not in reply.headers
            else:
                assert "error" in answer, answer


# --- oidc-provider and the MCP server it protects ---------------------------------


def _post_form(origin: str, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    parts = urllib.parse.urlsplit(origin)
    connection = http.client.HTTPConnection(parts.netloc, timeout=10)
    try:
        connection.request(
            "POST",
            path,
            urllib.parse.urlencode(form),
            {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def _get_json(url: str) -> tuple[int, dict[str, str], Any]:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=10)
    try:
        connection.request("GET", parts.path or "/")
        response = connection.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        raw = response.read()
        is_json = headers.get("content-type", "").startswith("application/json")
        return response.status, headers, json.loads(raw) if raw and is_json else raw
    finally:
        connection.close()


class _Callback(BaseHTTPRequestHandler):
    received: dict[str, list[str]] = {}

    def do_GET(self) -> None:
        type(self).received = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"signed in")

    def log_message(self, *args: Any) -> None:
        pass


def register(oidc: OidcPeer, redirect: str) -> str:
    """A public client registered dynamically; its client_id."""
    parts = urllib.parse.urlsplit(oidc.issuer)
    connection = http.client.HTTPConnection(parts.netloc, timeout=10)
    metadata = {
        "redirect_uris": [redirect],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "application_type": "native",
    }
    try:
        connection.request(
            "POST", "/reg", json.dumps(metadata), {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        client = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 201, client
    client_id: str = client["client_id"]
    return client_id


def authorization_url(oidc: OidcPeer, client_id: str, redirect: str) -> tuple[str, str]:
    """(PKCE verifier, authorization URL) for the resource, with offline_access."""
    verifier = secrets.token_urlsafe(32)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect,
        "code_challenge": challenge.rstrip(b"=").decode(),
        "code_challenge_method": "S256",
        "state": secrets.token_urlsafe(16),
        "resource": oidc.url,
        "scope": "mcp offline_access",
        "prompt": "consent",
    }
    return verifier, f"{oidc.issuer}/auth?{urllib.parse.urlencode(query)}"


@pytest.fixture
def oidc(tmp_path: Path) -> Iterator[OidcPeer]:
    with real_peers.oidc_provider(tmp_path, scopes=("mcp",)) as peer:
        leakcheck.register_record_file(peer.secrets_path)
        leakcheck.register("client secret", peer.resource_server_secret)
        yield peer


def test_oidc_peer_publishes_its_metadata_and_challenges(oidc: OidcPeer) -> None:
    status, _, provider = _get_json(f"{oidc.issuer}/.well-known/openid-configuration")
    assert status == 200
    assert provider["issuer"] == oidc.issuer
    assert provider["code_challenge_methods_supported"] == ["S256"]
    assert provider["authorization_response_iss_parameter_supported"] is True
    assert {"registration_endpoint", "revocation_endpoint", "introspection_endpoint"} <= set(
        provider
    )
    assert set(provider["scopes_supported"]) == {"openid", "offline_access", "mcp"}
    # The same metadata under RFC 8414's name (oidc-provider 9 serves both).
    assert _get_json(f"{oidc.issuer}/.well-known/oauth-authorization-server")[2] == provider

    origin = oidc.url.removesuffix("/mcp")
    for path in (
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ):
        status, _, resource = _get_json(origin + path)
        assert status == 200
        assert resource["resource"] == oidc.url
        assert resource["authorization_servers"] == [oidc.issuer]
        assert resource["scopes_supported"] == ["mcp"]

    parts = urllib.parse.urlsplit(oidc.url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=10)
    connection.request("POST", "/mcp", "{}", {"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    connection.close()
    assert response.status == 401
    challenge = response.getheader("WWW-Authenticate", "")
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{origin}/.well-known/oauth-protected-resource/mcp"' in challenge


def test_oidc_peer_signs_in_with_cookies_and_rotates_refresh_tokens(
    oidc: OidcPeer, tmp_path: Path
) -> None:
    """A whole authorization code flow against the peer, the user being the
    cookie-keeping browser: what mcpd does, done by hand."""
    server = HTTPServer(("127.0.0.1", 0), _Callback)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    redirect = f"http://127.0.0.1:{server.server_address[1]}/callback"
    try:
        client_id = register(oidc, redirect)
        verifier, url = authorization_url(oidc, client_id, redirect)
        browser = subprocess.run(
            [sys.executable, str(real_peers.COOKIE_BROWSER), url],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert f"browser: 200 at {redirect}" in browser.stderr, browser.stderr
        assert "code=" not in browser.stderr
        [code] = _Callback.received["code"]
        assert _Callback.received["iss"] == [oidc.issuer]
        assert [e["prompt"] for e in oidc.events("interaction")] == ["login", "consent"]

        status, tokens = _post_form(
            oidc.issuer,
            "/token",
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect,
                "code_verifier": verifier,
                "client_id": client_id,
                "resource": oidc.url,
            },
        )
        assert status == 200
        assert tokens["expires_in"] == oidc.access_token_ttl
        first = tokens["refresh_token"]
        assert oidc.introspect(tokens["access_token"])["aud"] == oidc.url

        status, refreshed = _post_form(
            oidc.issuer,
            "/token",
            {
                "grant_type": "refresh_token",
                "refresh_token": first,
                "client_id": client_id,
                "resource": oidc.url,
            },
        )
        assert status == 200
        assert refreshed["refresh_token"] != first
        [logged] = oidc.tokens("refresh_token")
        assert logged["presented"] == token_fingerprint(first)
        assert logged["refresh_token"] == token_fingerprint(refreshed["refresh_token"])

        # The rotated token presented again: refused, and the grant revoked.
        status, reused = _post_form(
            oidc.issuer,
            "/token",
            {
                "grant_type": "refresh_token",
                "refresh_token": first,
                "client_id": client_id,
                "resource": oidc.url,
            },
        )
        assert status == 400
        assert reused["error"] == "invalid_grant"
        [error] = oidc.events("grant_error")
        assert error["error_detail"] == "refresh token already used"
        assert error["presented"] == token_fingerprint(first)
        assert oidc.events("grant_revoked") != []
        assert oidc.introspect(refreshed["refresh_token"])["active"] is False
        assert oidc.events("server_error") == []
    finally:
        server.shutdown()
        server.server_close()


def test_oidc_peer_interaction_needs_the_providers_cookies(oidc: OidcPeer) -> None:
    """What the cookie jar is for: a browser that keeps no cookies is refused at
    the interaction the authorization request redirects it to."""
    redirect = "http://127.0.0.1:9/callback"
    _, url = authorization_url(oidc, register(oidc, redirect), redirect)
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=10)
    connection.request("GET", f"{parts.path}?{parts.query}")
    response = connection.getresponse()
    response.read()
    connection.close()
    assert response.status == 303
    interaction = response.getheader("Location", "")
    assert interaction.startswith("/interaction/")
    status, _, _ = _get_json(oidc.issuer + interaction)
    assert status == 400
    assert oidc.events("interaction_error") != []


# --- the conformance suite, both versions -------------------------------------------


@pytest.mark.parametrize(
    "argv", [real_peers.conformance_argv, real_peers.conformance_next_argv], ids=["0.1.16", "next"]
)
def test_both_conformance_suites_run(argv: Any) -> None:
    version = subprocess.run(
        [*argv(), "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    expected = "0.1.16" if argv is real_peers.conformance_argv else "0.2.0-alpha.12"
    assert version.stdout.strip() == expected
    listed = subprocess.run(
        [*argv(), "list", "--client"], capture_output=True, text=True, timeout=60, check=True
    )
    assert "initialize" in listed.stdout
