"""A demo MCP server protected by OAuth, and its authorization server, on loopback.

    python -m mcpd.demo.server --port PORT [--token-lifetime SECONDS]

THIS IS A DEMO, NOT AN AUTHORIZATION SERVER TO USE. There is no login and no
consent page: the demo "user" approves every authorization request at once,
so /authorize redirects straight back to the client's redirect URI with a
code. Clients, codes and tokens live in memory and die with the process. It
listens on 127.0.0.1 only.

Everything that speaks HTTP is the official Python SDK's (`mcp`, mcpd's `demo`
extra): the MCP server (`MCPServer`, Streamable HTTP), and, from
`mcp.server.auth` through `AuthSettings`, the authorization server's endpoints
(metadata per RFC 8414 with PKCE S256, /authorize, /token, /register per RFC
7591, /revoke per RFC 7009), their request validation (PKCE, redirect URIs,
client authentication, scopes), the protected resource metadata (RFC 9728), and
the bearer middleware that answers 401 with a `resource_metadata` challenge
and refuses tokens issued for another resource (RFC 8707). This module only
supplies the storage behind them: `DemoProvider`.

At http://127.0.0.1:PORT (the issuer, and the MCP server's origin):

- `/mcp`: the MCP server; tools `echo(text)`, `time()` (the current UTC time)
  and `whoami()` (the client and scopes of the token used).
- `/.well-known/oauth-protected-resource/mcp`: its resource metadata, naming
  the issuer above and the scope `mcp`.
- `/.well-known/oauth-authorization-server`, `/authorize`, `/token`,
  `/register`, `/revoke`.

Scopes: `mcp` (needed for /mcp) and `offline_access`. A client that registers
without a scope gets both. A refresh token is issued only when the grant
includes `offline_access` (and never with `--no-refresh-tokens`: an
authorization server may always decline to issue one).

Tokens: access tokens live `--token-lifetime` seconds (default 3600); refresh
tokens do not expire. A refresh rotates the refresh token (the old one stops
working at once) and issues a new access token; earlier access tokens stay
valid until they expire. Revoking any token of a grant (its access or refresh
tokens) revokes the whole grant.

Each registration, authorization, token issue, refresh and revocation, and
each refresh token presented again after it was rotated away or revoked, is
logged to stderr as a `demo-as: ...` line, never with a token or code in it.
With `--record-secrets PATH` (for tests), every secret it hands out or is
given (client secrets, codes, PKCE verifiers, access and refresh tokens, with
the grant and the place in the grant's chain of each token) is also appended
to PATH as one JSON object a line, so that a test can check where they went.
Once the port is bound it prints `mcpd-peer: listening on 127.0.0.1:PORT` to
stderr (with `--port 0`, the port it got).
"""

from __future__ import annotations

import argparse
import json
import math
import secrets
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    OAuthAuthorizationServerProvider,
    RefreshToken,
    TokenError,
    construct_redirect_uri,
)
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.mcpserver import MCPServer
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from starlette.types import ASGIApp, Receive, Scope, Send

HOST = "127.0.0.1"
MCP_PATH = "/mcp"
MCP_SCOPE = "mcp"
OFFLINE_ACCESS = "offline_access"
DEFAULT_TOKEN_LIFETIME = 3600
CODE_LIFETIME_SECONDS = 300
DEMO_USER = "demo-user"


def log(message: str) -> None:
    print(f"demo-as: {message}", file=sys.stderr, flush=True)


class DemoRefreshToken(RefreshToken):
    grant: int  # every token of one authorization shares its grant
    seq: int = 1  # its place in the grant's chain: 1 from the code, n + 1 from refresh n


class DemoAccessToken(AccessToken):
    grant: int
    seq: int = 1


@dataclass
class SecretsRecord:
    """`--record-secrets`: one JSON object a line, appended at once, for tests.

    Events: `registered` (client_id, client_secret), `code` (code, client_id),
    `verifier` (code_verifier), `issued` (grant, seq, access_token,
    refresh_token, client_id, via), `refresh_presented` (grant and seq of the
    refresh token, or null for one never issued), `revoked` (grant). Written
    before the response that carries the secret is sent.
    """

    path: Path | None = None

    def write(self, event: str, **fields: Any) -> None:
        if self.path is None:
            return
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"event": event, **fields}) + "\n")


@dataclass
class DemoProvider(
    OAuthAuthorizationServerProvider[AuthorizationCode, DemoRefreshToken, DemoAccessToken]
):
    """The SDK's authorization server routes call this for everything they store.

    A demo: `authorize` approves at once, on behalf of a user who is not asked.
    """

    resource: str  # the MCP server's URL: the only resource tokens are issued for
    token_lifetime: int
    # Leave expires_in out of token responses (the tokens still expire), as
    # some providers do: clients then learn of expiry from a 401.
    hide_expiry: bool = False
    # Issue no refresh token at all, offline_access or not, as an OpenID provider
    # does when the request lacks prompt=consent.
    no_refresh_tokens: bool = False
    record: SecretsRecord = field(default_factory=SecretsRecord)
    clients: dict[str, OAuthClientInformationFull] = field(default_factory=dict)
    codes: dict[str, AuthorizationCode] = field(default_factory=dict)
    access_tokens: dict[str, DemoAccessToken] = field(default_factory=dict)
    refresh_tokens: dict[str, DemoRefreshToken] = field(default_factory=dict)
    # Refresh tokens rotated away or revoked, and how, so that one presented
    # again is logged as what it is.
    retired: dict[str, str] = field(default_factory=dict)
    # Refresh tokens rotated away, by grant: presenting one again revokes the
    # whole grant, as real providers do when a refresh token leaks.
    rotated: dict[str, int] = field(default_factory=dict)
    # Every refresh token ever issued: (grant, seq), so a presented one is known.
    issued_refresh: dict[str, tuple[int, int]] = field(default_factory=dict)
    _grants: count[int] = field(default_factory=lambda: count(1))
    _chain: dict[int, int] = field(default_factory=dict)  # grant: its last seq

    # --- Clients (dynamic registration) ------------------------------------------------

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        return self.clients.get(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        self.clients[client_info.client_id] = client_info
        self.record.write(
            "registered",
            client_id=client_info.client_id,
            client_secret=client_info.client_secret,
        )
        log(
            f"registered client {client_info.client_id} ({client_info.client_name or 'unnamed'}, "
            f"auth method {client_info.token_endpoint_auth_method}, scope {client_info.scope!r})"
        )

    # --- Authorization: approved at once ---------------------------------------------------

    def _is_our_resource(self, resource: str) -> bool:
        return resource.rstrip("/") == self.resource.rstrip("/")

    async def authorize(
        self, client: OAuthClientInformationFull, params: AuthorizationParams
    ) -> str:
        """The demo user says yes without being asked: straight back with a code."""
        if params.resource is not None and not self._is_our_resource(params.resource):
            raise AuthorizeError(
                "invalid_target", f"this server issues tokens for {self.resource} only"
            )
        scopes = params.scopes if params.scopes is not None else (client.scope or "").split()
        code = secrets.token_urlsafe(32)
        self.codes[code] = AuthorizationCode(
            code=code,
            scopes=scopes,
            expires_at=time.time() + CODE_LIFETIME_SECONDS,
            client_id=client.client_id,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
            subject=DEMO_USER,
        )
        self.record.write("code", code=code, client_id=client.client_id)
        log(
            f"approved client {client.client_id} for scope {' '.join(scopes)!r} "
            f"(resource {params.resource!r}) without asking anyone: this is a demo"
        )
        return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state)

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> AuthorizationCode | None:
        code = self.codes.get(authorization_code)
        return code if code is not None and code.client_id == client.client_id else None

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode
    ) -> OAuthToken:
        if self.codes.pop(authorization_code.code, None) is None:
            raise TokenError("invalid_grant", "authorization code already used")
        grant = next(self._grants)
        token = self._issue(
            grant,
            client.client_id,
            authorization_code.scopes,
            authorization_code.resource,
            via="authorization_code",
        )
        log(f"grant {grant}: {self._describe(token)} for an authorization code")
        return token

    # --- Tokens ------------------------------------------------------------------------------

    def _issue(
        self, grant: int, client_id: str, scopes: Sequence[str], resource: str | None, *, via: str
    ) -> OAuthToken:
        # A client that sent no resource indicator still gets a token for this
        # server, the only resource there is, so the bearer middleware's RFC 8707
        # check (`validate_token_resource`) accepts it.
        bound = resource or self.resource
        seq = self._chain[grant] = self._chain.get(grant, 0) + 1
        access = secrets.token_urlsafe(32)
        self.access_tokens[access] = DemoAccessToken(
            token=access,
            client_id=client_id,
            scopes=list(scopes),
            # Rounded up: the token never expires before the `expires_in` the
            # client was told (the SDK keeps whole seconds).
            expires_at=math.ceil(time.time() + self.token_lifetime),
            resource=bound,
            subject=DEMO_USER,
            grant=grant,
            seq=seq,
        )
        refresh = None
        if OFFLINE_ACCESS in scopes and not self.no_refresh_tokens:
            refresh = secrets.token_urlsafe(32)
            self.refresh_tokens[refresh] = DemoRefreshToken(
                token=refresh,
                client_id=client_id,
                scopes=list(scopes),
                resource=bound,
                subject=DEMO_USER,
                grant=grant,
                seq=seq,
            )
            self.issued_refresh[refresh] = (grant, seq)
        self.record.write(
            "issued",
            grant=grant,
            seq=seq,
            access_token=access,
            refresh_token=refresh,
            client_id=client_id,
            via=via,
        )
        return OAuthToken(
            access_token=access,
            expires_in=None if self.hide_expiry else self.token_lifetime,
            scope=" ".join(scopes),
            refresh_token=refresh,
        )

    @staticmethod
    def _describe(token: OAuthToken) -> str:
        refresh = "and a refresh token" if token.refresh_token else "and no refresh token"
        return (
            f"issued an access token (expires in {token.expires_in}s, scope {token.scope!r}) "
            + refresh
        )

    async def load_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: str
    ) -> DemoRefreshToken | None:
        token = self.refresh_tokens.get(refresh_token)
        grant_seq = self.issued_refresh.get(refresh_token)
        self.record.write(
            "refresh_presented",
            grant=grant_seq[0] if grant_seq else None,
            seq=grant_seq[1] if grant_seq else None,
        )
        if token is None:
            if refresh_token in self.retired:
                log(
                    f"client {client.client_id} presented a refresh token that was "
                    f"{self.retired[refresh_token]}"
                )
            grant = self.rotated.pop(refresh_token, None)
            if grant is not None:
                self._revoke_grant(grant, "a rotated refresh token was presented again")
            return None
        return token if token.client_id == client.client_id else None

    async def exchange_refresh_token(
        self,
        client: OAuthClientInformationFull,
        refresh_token: DemoRefreshToken,
        scopes: list[str],
    ) -> OAuthToken:
        # Rotation: the refresh token presented stops working now.
        if self.refresh_tokens.pop(refresh_token.token, None) is None:
            raise TokenError("invalid_grant", "refresh token already used")
        self.retired[refresh_token.token] = f"rotated away (grant {refresh_token.grant})"
        self.rotated[refresh_token.token] = refresh_token.grant
        token = self._issue(
            refresh_token.grant,
            client.client_id,
            scopes,
            refresh_token.resource,
            via="refresh_token",
        )
        log(f"grant {refresh_token.grant}: refreshed; {self._describe(token)}")
        return token

    async def load_access_token(self, token: str) -> DemoAccessToken | None:
        access = self.access_tokens.get(token)
        if access is None:
            return None
        if access.expires_at is not None and access.expires_at < time.time():
            del self.access_tokens[token]
            log(f"grant {access.grant}: an access token was presented after it expired")
            return None
        return access

    async def revoke_token(self, token: DemoAccessToken | DemoRefreshToken) -> None:
        kind = "refresh" if isinstance(token, DemoRefreshToken) else "access"
        self._revoke_grant(token.grant, f"asked with its {kind} token")

    def _revoke_grant(self, grant: int, why: str) -> None:
        access = [key for key, value in self.access_tokens.items() if value.grant == grant]
        refresh = [key for key, value in self.refresh_tokens.items() if value.grant == grant]
        for key in access:
            del self.access_tokens[key]
        for key in refresh:
            del self.refresh_tokens[key]
            self.retired[key] = f"revoked (grant {grant})"
        self.record.write("revoked", grant=grant)
        log(
            f"grant {grant}: revoked ({why}): "
            f"{len(access)} access and {len(refresh)} refresh token(s) dropped"
        )


def with_token_outage(app: ASGIApp, flag: Path) -> ASGIApp:
    """The token endpoint is down (503) while `flag` exists: an outage, on demand."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/token" and flag.exists():
            log("token endpoint down: answering 503 temporarily_unavailable")
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send(
                {"type": "http.response.body", "body": b'{"error":"temporarily_unavailable"}'}
            )
            return
        await app(scope, receive, send)

    return guarded


def recording_verifiers(app: ASGIApp, record: SecretsRecord) -> ASGIApp:
    """Record the PKCE verifier of each token request (only the request carries it)."""

    async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/token" or scope["method"] != "POST":
            await app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
        for verifier in parse_qs(body.decode("utf-8", errors="replace")).get("code_verifier", []):
            record.write("verifier", code_verifier=verifier)
        replay = [{"type": "http.request", "body": body, "more_body": False}]

        async def replayed() -> Any:
            return replay.pop() if replay else await receive()

        await app(scope, replayed, send)

    return recorded


def build_server(
    port: int,
    token_lifetime: int,
    hide_expiry: bool = False,
    record: SecretsRecord | None = None,
    no_refresh_tokens: bool = False,
) -> MCPServer:
    origin = f"http://{HOST}:{port}"
    resource = origin + MCP_PATH
    provider = DemoProvider(
        resource=resource,
        token_lifetime=token_lifetime,
        hide_expiry=hide_expiry,
        no_refresh_tokens=no_refresh_tokens,
        record=record or SecretsRecord(),
    )
    server: MCPServer = MCPServer(
        "mcpd-demo",
        instructions="A demo server for mcpd: echo and time, behind OAuth.",
        version="1.0.0",
        auth_server_provider=provider,
        # Validated from strings rather than built from AnyHttpUrl(...): only then
        # does the SDK keep a path-less issuer without a trailing slash
        # (AnyHttpUrl("http://127.0.0.1:PORT") is "http://127.0.0.1:PORT/"), and
        # RFC 8414 compares issuers as exact strings.
        auth=AuthSettings.model_validate(
            {
                "issuer_url": origin,
                "resource_server_url": resource,
                "required_scopes": [MCP_SCOPE],
                "client_registration_options": ClientRegistrationOptions(
                    enabled=True,
                    valid_scopes=[MCP_SCOPE, OFFLINE_ACCESS],
                    default_scopes=[MCP_SCOPE, OFFLINE_ACCESS],
                ),
                "revocation_options": RevocationOptions(enabled=True),
                "validate_token_resource": True,
            }
        ),
        log_level="WARNING",
    )

    @server.tool()
    def echo(text: str) -> str:
        """Return the text given."""
        return text

    @server.tool(name="time")
    def current_time() -> str:
        """The current time in UTC, ISO 8601."""
        return datetime.now(UTC).isoformat(timespec="seconds")

    @server.tool()
    def whoami() -> str:
        """The client, user, scopes and expiry of the access token this call came with."""
        token = get_access_token()
        if token is None:
            return "no access token"
        expires = (
            datetime.fromtimestamp(token.expires_at, UTC).isoformat(timespec="seconds")
            if token.expires_at is not None
            else "never"
        )
        return (
            f"client {token.client_id}, user {token.subject}, scope {' '.join(token.scopes)!r}, "
            f"access token expires {expires}"
        )

    return server


def _positive(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return number


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mcpd.demo.server",
        description="A demo MCP server behind OAuth, with its own authorization server that "
        "approves every sign-in at once. For trying mcpd; never for real use.",
    )
    parser.add_argument(
        "--port", type=int, required=True, help="the port on 127.0.0.1 (0: any free one)"
    )
    parser.add_argument(
        "--token-lifetime",
        type=_positive,
        default=DEFAULT_TOKEN_LIFETIME,
        metavar="SECONDS",
        help=f"how long access tokens live (default {DEFAULT_TOKEN_LIFETIME})",
    )
    parser.add_argument(
        "--hide-expiry",
        action="store_true",
        help="leave expires_in out of token responses (the tokens still expire)",
    )
    parser.add_argument(
        "--no-refresh-tokens",
        action="store_true",
        help="issue no refresh tokens, even for offline_access (as an authorization server may)",
    )
    parser.add_argument(
        "--outage-file",
        type=Path,
        metavar="PATH",
        help="while PATH exists, the token endpoint answers 503 temporarily_unavailable",
    )
    parser.add_argument(
        "--record-secrets",
        type=Path,
        metavar="PATH",
        help="append every client secret, code, PKCE verifier and token it issues or is given "
        "to PATH, one JSON object a line (for tests that check where secrets go)",
    )
    options = parser.parse_args(argv)

    # Bound here rather than by uvicorn so that the ready line says that this
    # process, not another, has the port; and so that with --port 0 the URLs in
    # the metadata carry the port actually bound.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, options.port))
    sock.listen(128)
    port: int = sock.getsockname()[1]

    record = SecretsRecord(options.record_secrets)
    app: ASGIApp = build_server(
        port, options.token_lifetime, options.hide_expiry, record, options.no_refresh_tokens
    ).streamable_http_app(host=HOST)
    if options.record_secrets is not None:
        app = recording_verifiers(app, record)
    if options.outage_file is not None:
        app = with_token_outage(app, options.outage_file)
    config = uvicorn.Config(
        app,
        host=HOST,
        port=port,
        log_level="warning",
        # Open SSE streams would otherwise hold a SIGTERM until they close.
        timeout_graceful_shutdown=1,
    )
    print(f"mcpd-peer: listening on {HOST}:{port}", file=sys.stderr, flush=True)
    print(
        f"demo-as: MCP server at http://{HOST}:{port}{MCP_PATH}, authorization server at "
        f"http://{HOST}:{port}; access tokens live {options.token_lifetime}s",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
