"""Client credentials end to end: the real `mcpd` and `mcpctl`, and a peer that
is both an MCP server wanting bearer tokens and an authorization server that
knows only the client credentials grant (no authorization endpoint, no PKCE,
as RFC 8414 allows such a server), over real HTTP (tests/http_peer.py).

The peer checks each token request as the conformance suite does (the grant
type; Basic credentials, or the JWT assertion verified with the public key),
issues tokens that live a few seconds, and counts every MCP request made with
an expired or unknown token. Every secret it is given or issues (the client
secret, the assertions, the tokens) is registered for the session's secrets
scan (tests/leakcheck.py), and the daemon's log is searched for them here too.
"""

from __future__ import annotations

import base64
import http.server
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import http_peer
import jwt
import leakcheck
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from harness import server_config, status_of, wait_state

CLIENT_ID = "svc-nightly-report"
SECRET = "cc-daemon-SECRET-71f0c2d9e4"
LIFETIME = 4.0  # seconds: a new token at 70-80% of it

Handler = http.server.BaseHTTPRequestHandler
# The client secret reaches mcpd from its environment, as `{env:SVC_SECRET}`.
SECRET_ENV = {"SVC_SECRET": SECRET}


def send_json(handler: Handler, value: Any, status: int = 200, **headers: str) -> None:
    http_peer.send(
        handler, status, json.dumps(value).encode(), Content_Type="application/json", **headers
    )


@dataclass
class MachinePeer:
    """An MCP server and its client-credentials-only authorization server."""

    method: str = "client_secret_basic"  # or "private_key_jwt"
    public_key: Any = None
    lifetime: float = LIFETIME
    refuse: bool = False
    origin: str = ""
    issued: dict[str, float] = field(default_factory=dict)  # token: when it expires
    token_requests: list[dict[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what the peer found wrong
    mcp_requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def route(self, handler: Handler) -> None:
        path = urlsplit(handler.path).path
        issuer = self.origin
        if path == "/.well-known/oauth-protected-resource/mcp":
            send_json(
                handler,
                {
                    "resource": f"{issuer}/mcp",
                    "authorization_servers": [issuer],
                    "scopes_supported": ["reports"],
                },
            )
        elif path == "/.well-known/oauth-authorization-server":
            send_json(
                handler,
                {
                    "issuer": issuer,
                    "token_endpoint": f"{issuer}/token",
                    "grant_types_supported": ["client_credentials"],
                    "token_endpoint_auth_methods_supported": [self.method],
                    "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
                },
            )
        elif path == "/token":
            self._token(handler)
        elif path == "/mcp":
            self._mcp(handler)
        else:
            http_peer.send(handler, 404)

    # --- The authorization server -------------------------------------------------------

    def _token(self, handler: Handler) -> None:
        form = dict(parse_qsl(handler.request_body.decode()))  # type: ignore[attr-defined]
        with self.lock:
            self.token_requests.append(form)
        leakcheck.register("client assertion", form.get("client_assertion"))
        problem = self._authenticate(handler, form)
        if problem is None and form.get("grant_type") != "client_credentials":
            problem = f"grant_type {form.get('grant_type')!r}"
        if problem is None and form.get("resource") != f"{self.origin}/mcp":
            problem = f"resource {form.get('resource')!r}"
        if problem is not None:
            with self.lock:
                self.problems.append(problem)
        if problem is not None or self.refuse:
            send_json(
                handler,
                {"error": "invalid_client", "error_description": "no such client here"},
                401,
            )
            return
        token = f"cc-token-{secrets.token_hex(16)}"
        leakcheck.register("access token", token)
        with self.lock:
            self.issued[token] = time.time() + self.lifetime
        send_json(
            handler,
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.lifetime,
                "scope": form.get("scope", ""),
            },
        )

    def _authenticate(self, handler: Handler, form: dict[str, str]) -> str | None:
        """What is wrong with the client authentication, if anything."""
        if self.method == "client_secret_basic":
            header = handler.headers.get("Authorization", "")
            if not header.startswith("Basic "):
                return "no Basic credentials"
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if (unquote(user), unquote(password)) != (CLIENT_ID, SECRET):
                return "wrong Basic credentials"
            return None
        if form.get("client_assertion_type") != (
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        ):
            return "no client assertion"
        try:
            claims = jwt.decode(
                form.get("client_assertion", ""),
                self.public_key,
                algorithms=["ES256"],
                audience=self.origin,
                leeway=30,
                options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]},
            )
        except jwt.InvalidTokenError as exc:
            return f"assertion: {exc}"
        if claims["iss"] != CLIENT_ID or claims["sub"] != CLIENT_ID:
            return "assertion: iss or sub is not the client id"
        if claims["exp"] - claims["iat"] > 300:
            return "assertion: lives too long"
        return None

    # --- The MCP server -------------------------------------------------------------------

    def _mcp(self, handler: Handler) -> None:
        header = handler.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ")
        with self.lock:
            expires = self.issued.get(token)
            if expires is not None and expires <= time.time():
                self.problems.append("an expired token was used")
        if expires is None or expires <= time.time():
            metadata = f"{self.origin}/.well-known/oauth-protected-resource/mcp"
            http_peer.send(handler, 401, WWW_Authenticate=f'Bearer resource_metadata="{metadata}"')
            return
        if handler.command == "GET":
            http_peer.send(handler, 405)
            return
        if handler.command == "DELETE":
            http_peer.send(handler, 200)
            return
        raw = handler.request_body  # type: ignore[attr-defined]
        message = json.loads(raw) if raw else None
        with self.lock:
            self.mcp_requests += 1
        if not isinstance(message, dict) or "id" not in message:
            http_peer.send(handler, 202)
            return
        method = message.get("method")
        headers: dict[str, str] = {}
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"]}
        if method == "initialize":
            headers["Mcp-Session-Id"] = "machine-session"
            reply["result"] = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "machine-peer", "version": "1"},
            }
        elif method == "tools/list":
            reply["result"] = {
                "tools": [{"name": "echo", "inputSchema": {"type": "object"}}],
            }
        elif method == "tools/call":
            text = message["params"].get("arguments", {}).get("text", "")
            reply["result"] = {"content": [{"type": "text", "text": text}]}
        elif method == "ping":
            reply["result"] = {}
        else:
            reply["error"] = {"code": -32601, "message": f"no method {method}"}
        send_json(handler, reply, **headers)


@contextmanager
def machine_peer(**options: Any) -> Iterator[MachinePeer]:
    peer = MachinePeer(**options)
    with http_peer.http_peer(peer.route) as http:
        peer.origin = http.url
        yield peer


def configure(mcpd_env, peer: MachinePeer, oauth: str) -> None:
    mcpd_env.write_config(
        "[daemon]\ncallback_port = 0\n"
        + server_config("svc", f"{peer.origin}/mcp", f"oauth = {{ {oauth} }}\n")
    )


def secret_config() -> str:
    leakcheck.register_client(CLIENT_ID, SECRET)
    return (
        f'grant = "client_credentials", client_id = "{CLIENT_ID}", '
        'client_secret = "{env:SVC_SECRET}"'
    )


def key_config(tmp_path: Path) -> tuple[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "svc-key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    oauth = f'grant = "client_credentials", client_id = "{CLIENT_ID}", private_key_file = "{path}"'
    return oauth, key.public_key()


def wait_for(condition: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def assert_nothing_leaked(daemon, peer: MachinePeer) -> None:
    log = daemon.log
    assert SECRET not in log
    for token in peer.issued:
        assert token not in log
    for form in peer.token_requests:
        assertion = form.get("client_assertion")
        assert assertion is None or assertion not in log


def test_a_token_without_a_browser_renewed_before_it_expires(mcpd_env, run_daemon):
    with machine_peer() as peer:
        configure(mcpd_env, peer, secret_config())
        daemon = run_daemon(extra_env=SECRET_ENV)
        # No `mcpctl auth`: the first 401 gets a token by itself.
        connected = wait_state(daemon, "svc", "connected")
        assert connected["access_expires_at"] > time.time()
        assert connected["next_refresh_at"] < connected["access_expires_at"]
        call = daemon.mcpctl("call", "svc", "echo", '{"text": "from a machine"}')
        assert call.stdout == "from a machine\n", call.stderr
        # Renewed before expiry, with no activity, several times over.
        wait_for(lambda: len(peer.issued) >= 4, f"tokens: {peer.token_requests}", 5 * LIFETIME)
        status = status_of(daemon, "svc")
        assert status["state"] == "connected"
        assert status["error"] is None
        assert status["last_refresh_at"] is not None
        call = daemon.mcpctl("call", "svc", "echo", '{"text": "still here"}')
        assert call.stdout == "still here\n", call.stderr
        assert peer.problems == []  # never an expired token, never a bad request
        assert all(form["grant_type"] == "client_credentials" for form in peer.token_requests)
        assert all(form.get("scope") == "reports" for form in peer.token_requests)
        assert "requested a new access token (client credentials)" in daemon.log
        assert_nothing_leaked(daemon, peer)


def test_private_key_jwt_and_mcpctl_auth_without_a_browser(mcpd_env, run_daemon, tmp_path):
    oauth, public_key = key_config(tmp_path)
    with machine_peer(method="private_key_jwt", public_key=public_key, lifetime=600) as peer:
        configure(mcpd_env, peer, oauth)
        daemon = run_daemon()
        wait_state(daemon, "svc", "connected")
        assert len(peer.issued) == 1
        # `mcpctl auth` asks for a new token, and says so: no URL, no browser.
        before = status_of(daemon, "svc")["access_expires_at"]
        auth = daemon.mcpctl("auth", "svc", timeout=30)
        assert auth.returncode == 0, auth.stderr
        assert "client credentials" in auth.stdout
        assert "no browser" in auth.stdout
        assert "http" not in auth.stdout
        assert "svc is connected." in auth.stdout
        assert len(peer.issued) == 2
        assert status_of(daemon, "svc")["access_expires_at"] > before
        # Stored like any token: a restart uses it, with no new request.
        daemon.stop()
        daemon = run_daemon()
        wait_state(daemon, "svc", "connected")
        assert len(peer.issued) == 2
        call = daemon.mcpctl("call", "svc", "echo", '{"text": "signed"}')
        assert call.stdout == "signed\n", call.stderr
        assert peer.problems == []
        assert_nothing_leaked(daemon, peer)


def test_a_refused_request_shows_needs_auth_with_the_servers_error(mcpd_env, run_daemon):
    with machine_peer(refuse=True) as peer:
        configure(mcpd_env, peer, secret_config())
        daemon = run_daemon(extra_env=SECRET_ENV)
        status = wait_state(daemon, "svc", "needs_auth")
        assert "invalid_client" in status["error"]
        assert "no such client here" in status["error"]
        assert SECRET not in status["error"]
        time.sleep(1.0)
        assert len(peer.token_requests) == 1  # no retry of a refusal, no loop
        refused = daemon.mcpctl("auth", "svc", timeout=30)
        assert refused.returncode == 1
        assert "invalid_client" in refused.stderr
        assert SECRET not in refused.stderr + refused.stdout
        # Fixed at the authorization server: `mcpctl auth` tries again.
        peer.refuse = False
        auth = daemon.mcpctl("auth", "svc", timeout=30)
        assert auth.returncode == 0, auth.stderr
        assert wait_state(daemon, "svc", "connected")["error"] is None
        assert_nothing_leaked(daemon, peer)
