"""Unit tests of the sans-IO OAuth steps: discovery, client identity, PKCE, callback, tokens.

Every step is a generator that yields `HttpRequest`s; `FakeNet` answers them from a
dict of canned responses keyed by (method, url) and records every request, so a test
can say both what the step decided and which requests it made (or did not make: no
authorization server metadata fetched for a foreign resource, no token request after a
bad callback). No sockets.

Every expected error goes through `refused(...)`, which also checks that the message
carries none of the test's secrets (code, verifier, state, tokens, client secret).
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit

import anyio
import msgspec
import pytest

from mcpd.config import OAuthSettings
from mcpd.oauth.discovery import (
    Challenge,
    Discovery,
    ServerMetadata,
    discover,
    parse_challenge,
    resource_metadata_urls,
    server_metadata_urls,
)
from mcpd.oauth.flow import (
    STATE_LIFETIME_SECONDS,
    ClientRegistrationRequired,
    PendingAuthorization,
    ServerRefused,
    application_type,
    begin,
    check_issuer,
    choose_client,
    choose_prompt,
    choose_scope,
    client_authentication,
    effective_resource,
    exchange,
    register,
    token_request,
    union_scope,
)
from mcpd.oauth.flow import refresh as refresh_grant
from mcpd.oauth.manager import _revoke
from mcpd.oauth.messages import HttpRequest, HttpResponse, OAuthError, Step
from mcpd.oauth.model import AuthorizationServer, ClientRegistration, CredentialRecord, TokenSet

# --- The cast -----------------------------------------------------------------------------

SERVER = "https://mcp.example.com/mcp"
ORIGIN = "https://mcp.example.com"
PRM_PATH = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
PRM_ROOT = "https://mcp.example.com/.well-known/oauth-protected-resource"
ISSUER = "https://auth.example.com"
AS_META = "https://auth.example.com/.well-known/oauth-authorization-server"
OIDC_META = "https://auth.example.com/.well-known/openid-configuration"
AUTHORIZE = "https://auth.example.com/authorize"
TOKEN = "https://auth.example.com/token"
REGISTER = "https://auth.example.com/register"
REVOKE = "https://auth.example.com/revoke"
REDIRECT = "http://127.0.0.1:33418/callback"
CIMD_URL = "https://mcpd.example.org/client.json"

# Secrets of the tests: no error message may ever contain one of them.
CODE = "code-SECRET-4f9a1c"
ACCESS = "access-SECRET-77b2e0"
REFRESH = "refresh-SECRET-0c3d5e"
CLIENT_SECRET = "client-SECRET-9e8d7c"
SECRETS = (CODE, ACCESS, REFRESH, CLIENT_SECRET)

PUBLIC = ClientRegistration(
    client_id="mcpd-public",
    redirect_uri=REDIRECT,
    token_endpoint_auth_method="none",
    issuer=ISSUER,
)


def confidential(method: str, client_id: str = "mcpd-conf", secret: str = CLIENT_SECRET):
    return ClientRegistration(
        client_id=client_id,
        client_secret=secret,
        redirect_uri=REDIRECT,
        token_endpoint_auth_method=method,
        issuer=ISSUER,
    )


# --- Canned HTTP --------------------------------------------------------------------------


def json_response(data: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(status, {"content-type": "application/json"}, msgspec.json.encode(data))


def html_response(status: int = 200) -> HttpResponse:
    body = b"<!doctype html><html><body><h1>Sign in to Example Corp</h1></body></html>"
    return HttpResponse(status, {"content-type": "text/html; charset=utf-8"}, body)


NOT_FOUND = HttpResponse(404, {"content-type": "text/plain"}, b"Not Found")

Canned = HttpResponse | Callable[[HttpRequest], HttpResponse]


class FakeNet:
    """Answers a step's requests from canned responses; records every request.

    Requests without a canned response get `default` (404), as missing
    well-known documents do.
    """

    def __init__(
        self, responses: dict[tuple[str, str], Canned] | None = None, default=NOT_FOUND
    ) -> None:
        self.responses = dict(responses or {})
        self.default = default
        self.requests: list[HttpRequest] = []

    def run(self, step: Step[Any]) -> Any:
        try:
            request = next(step)
            while True:
                assert isinstance(request, HttpRequest)
                self.requests.append(request)
                assert len(self.requests) < 50, "the step does not stop asking"
                request = step.send(self._answer(request))
        except StopIteration as done:
            return done.value

    def _answer(self, request: HttpRequest) -> HttpResponse:
        canned = self.responses.get((request.method, request.url), self.default)
        return canned(request) if callable(canned) else canned

    @property
    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.url) for r in self.requests]

    def asked(self, url_prefix: str) -> bool:
        return any(r.url.startswith(url_prefix) for r in self.requests)

    def only(self, method: str, url: str) -> HttpRequest:
        matching = [r for r in self.requests if (r.method, r.url) == (method, url)]
        assert len(matching) == 1, self.calls
        return matching[0]


@contextmanager
def refused(
    kind: type[BaseException] = OAuthError, match: str | None = None, secrets: tuple[str, ...] = ()
) -> Iterator[Any]:
    """pytest.raises, and the message (and repr) carries none of the secrets."""
    with pytest.raises(kind, match=match) as info:
        yield info
    for text in (str(info.value), repr(info.value)):
        for secret in (*SECRETS, *secrets):
            assert secret not in text, f"{secret!r} leaked into {text!r}"


# --- Documents ----------------------------------------------------------------------------


def prm_document(resource: str | None = SERVER, servers=(ISSUER,), **extra: Any) -> dict:
    document: dict[str, Any] = {"authorization_servers": list(servers), **extra}
    if resource is not None:
        document["resource"] = resource
    return document


def as_document(issuer: str = ISSUER, **overrides: Any) -> dict:
    document: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "registration_endpoint": f"{issuer}/register",
        "revocation_endpoint": f"{issuer}/revoke",
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["read", "write", "offline_access"],
    }
    document.update(overrides)
    return {k: v for k, v in document.items() if v is not None}


def metadata(**overrides: Any) -> ServerMetadata:
    fields: dict[str, Any] = {
        "issuer": ISSUER,
        "authorization_endpoint": AUTHORIZE,
        "token_endpoint": TOKEN,
        "registration_endpoint": REGISTER,
        "revocation_endpoint": REVOKE,
        "code_challenge_methods_supported": ["S256"],
    }
    fields.update(overrides)
    return ServerMetadata(**fields)


def make_discovery(
    *, resource: str = SERVER, scopes_supported: list[str] | None = None, **server: Any
) -> Discovery:
    return Discovery(resource, metadata(**server), scopes_supported, True)


def happy_net(**more: Canned) -> FakeNet:
    responses: dict[tuple[str, str], Canned] = {
        ("GET", PRM_PATH): json_response(prm_document(scopes_supported=["read", "write"])),
        ("GET", AS_META): json_response(as_document()),
    }
    responses.update({("GET", url): canned for url, canned in more.items()})
    return FakeNet(responses)


def make_pending(
    client: ClientRegistration = PUBLIC, scope: str | None = "read", **server: Any
) -> PendingAuthorization:
    return begin(make_discovery(**server), client, scope, REDIRECT)


def callback(pending: PendingAuthorization, **params: str) -> str:
    query = {"code": CODE, "state": pending.state}
    query.update(params)
    return urlencode({k: v for k, v in query.items() if v is not None})


def secrets_of(pending: PendingAuthorization) -> tuple[str, str]:
    return pending.state, pending.verifier


def token_document(**overrides: Any) -> dict:
    document: dict[str, Any] = {
        "access_token": ACCESS,
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": REFRESH,
        "scope": "read",
    }
    document.update(overrides)
    return {k: v for k, v in document.items() if v is not None}


def unpadded_b64decode(text: str) -> bytes:
    assert "=" not in text
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# =========================================================================================
# parse_challenge
# =========================================================================================


def test_challenge_quoted_and_unquoted_parameters():
    header = (
        'Bearer realm="mcp", error=insufficient_scope, scope="read write", '
        f'resource_metadata="{PRM_PATH}", error_description=Needs_write'
    )
    assert parse_challenge(header) == Challenge(
        resource_metadata=PRM_PATH,
        scope="read write",
        error="insufficient_scope",
        error_description="Needs_write",
    )


def test_challenge_unquoted_resource_metadata_and_scope():
    challenge = parse_challenge(f"Bearer resource_metadata={PRM_ROOT},scope=read")
    assert challenge is not None
    assert challenge.resource_metadata == PRM_ROOT
    assert challenge.scope == "read"


def test_challenge_escaped_quotes_and_backslashes():
    header = r'Bearer error="invalid_token", error_description="the \"token\" is \\ bad, really"'
    challenge = parse_challenge(header)
    assert challenge is not None
    assert challenge.error == "invalid_token"
    assert challenge.error_description == 'the "token" is \\ bad, really'


def test_challenge_comma_inside_quoted_value_stays_in_it():
    challenge = parse_challenge('Bearer scope="a,b c", error="invalid_token"')
    assert challenge is not None
    assert challenge.scope == "a,b c"
    assert challenge.error == "invalid_token"


@pytest.mark.parametrize(
    "header",
    [
        f'Basic realm="files", Bearer scope="read", resource_metadata="{PRM_PATH}"',
        f'Bearer scope="read", resource_metadata="{PRM_PATH}", Basic realm="files"',
        f'Negotiate, Basic realm="x", charset="UTF-8", Bearer scope=read, '
        f"resource_metadata={PRM_PATH}",
        f'Basic realm="Bearer", Bearer scope="read", resource_metadata="{PRM_PATH}"',
    ],
)
def test_challenge_among_several_schemes(header):
    challenge = parse_challenge(header)
    assert challenge is not None
    assert challenge.scope == "read"
    assert challenge.resource_metadata == PRM_PATH


def test_challenge_bearer_parameter_wins_over_a_later_scheme_of_the_same_name():
    challenge = parse_challenge('Bearer scope="mine", Basic realm="files", scope="theirs"')
    assert challenge is not None
    assert challenge.scope == "mine"


def test_challenge_scheme_and_parameter_names_are_case_insensitive():
    header = (
        f'bEaReR SCOPE="read", Resource_Metadata="{PRM_PATH}", ERROR=insufficient_scope, '
        'Error_Description="More"'
    )
    assert parse_challenge(header) == Challenge(
        resource_metadata=PRM_PATH,
        scope="read",
        error="insufficient_scope",
        error_description="More",
    )


@pytest.mark.parametrize(
    "header",
    [
        "",
        'Basic realm="files"',
        'Digest realm="x", nonce="abc", qop="auth"',
        'BearerToken scope="read"',
        'X-Bearer scope="read"',
        'Basic realm="Bearer"',
    ],
)
def test_challenge_without_bearer_is_none(header):
    assert parse_challenge(header) is None


@pytest.mark.parametrize("header", ["Bearer", "bearer  ", 'Basic realm="x", Bearer'])
def test_challenge_bare_bearer_has_no_parameters(header):
    assert parse_challenge(header) == Challenge()


def test_challenge_empty_scope_is_none():
    challenge = parse_challenge('Bearer scope="", error="invalid_token"')
    assert challenge is not None
    assert challenge.scope is None
    assert challenge.error == "invalid_token"


def test_challenge_later_scheme_parameters_are_not_bearers():
    challenge = parse_challenge(
        'Bearer realm="mcp", DPoP algs="ES256", error="invalid_token", scope="dpop:only"'
    )
    assert challenge == Challenge()


def test_challenge_bare_bearer_followed_by_another_scheme():
    assert parse_challenge('Bearer, Basic realm="files"') == Challenge()


def test_challenge_bearer_inside_a_quoted_string_is_not_a_challenge():
    assert parse_challenge('Basic realm="legacy, Bearer scope=admin"') is None


# =========================================================================================
# Well-known URLs
# =========================================================================================


@pytest.mark.parametrize(
    ("server", "challenge_url", "expected"),
    [
        (SERVER, None, [PRM_PATH, PRM_ROOT]),
        (SERVER + "/", None, [PRM_PATH, PRM_ROOT]),
        (ORIGIN, None, [PRM_ROOT]),
        (ORIGIN + "/", None, [PRM_ROOT]),
        (
            "https://mcp.example.com/a/b/mcp",
            None,
            ["https://mcp.example.com/.well-known/oauth-protected-resource/a/b/mcp", PRM_ROOT],
        ),
        (
            "http://127.0.0.1:8080/mcp",
            None,
            [
                "http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp",
                "http://127.0.0.1:8080/.well-known/oauth-protected-resource",
            ],
        ),
        (
            SERVER,
            "https://meta.example.com/prm",
            ["https://meta.example.com/prm", PRM_PATH, PRM_ROOT],
        ),
        (SERVER, PRM_PATH, [PRM_PATH, PRM_ROOT]),
        (SERVER, PRM_ROOT, [PRM_ROOT, PRM_PATH]),
        (ORIGIN, PRM_ROOT, [PRM_ROOT]),
        (ORIGIN + "/", "https://meta.example.com/prm", ["https://meta.example.com/prm", PRM_ROOT]),
    ],
)
def test_resource_metadata_urls(server, challenge_url, expected):
    challenge = Challenge(resource_metadata=challenge_url) if challenge_url else None
    urls = resource_metadata_urls(server, challenge)
    assert urls == expected
    assert len(urls) == len(set(urls))


def test_resource_metadata_urls_ignore_a_challenge_without_url():
    assert resource_metadata_urls(SERVER, Challenge(scope="read")) == [PRM_PATH, PRM_ROOT]


@pytest.mark.parametrize("issuer", [ISSUER, ISSUER + "/"])
def test_server_metadata_urls_for_an_issuer_without_path(issuer):
    assert server_metadata_urls(issuer) == [AS_META, OIDC_META]


@pytest.mark.parametrize("issuer", [ISSUER + "/tenant1", ISSUER + "/tenant1/"])
def test_server_metadata_urls_for_an_issuer_with_path(issuer):
    assert server_metadata_urls(issuer) == [
        f"{AS_META}/tenant1",
        f"{OIDC_META}/tenant1",
        f"{ISSUER}/tenant1/.well-known/openid-configuration",
    ]


# =========================================================================================
# discover
# =========================================================================================


def test_discover_happy_path():
    net = happy_net()
    found = net.run(discover(SERVER, None))
    assert found.resource == SERVER
    assert found.server.issuer == ISSUER
    assert found.server.authorization_endpoint == AUTHORIZE
    assert found.server.token_endpoint == TOKEN
    assert found.server.registration_endpoint == REGISTER
    assert found.server.revocation_endpoint == REVOKE
    assert found.scopes_supported == ["read", "write"]
    assert found.from_metadata is True
    assert net.calls == [("GET", PRM_PATH), ("GET", AS_META)]
    for request in net.requests:
        assert request.headers.get("Accept") == "application/json"
        assert request.form is None
        assert request.json is None


def test_discover_reads_the_challenges_resource_metadata_first():
    custom = "https://mcp.example.com/meta/prm.json"
    net = happy_net(**{custom: json_response(prm_document(scopes_supported=["custom"]))})
    found = net.run(discover(SERVER, Challenge(resource_metadata=custom)))
    assert net.calls == [("GET", custom), ("GET", AS_META)]
    assert found.scopes_supported == ["custom"]


def test_discover_accepts_resource_metadata_on_another_host_about_this_server():
    custom = "https://meta.example.net/prm"
    net = happy_net(**{custom: json_response(prm_document())})
    found = net.run(discover(SERVER, Challenge(resource_metadata=custom)))
    assert found.resource == SERVER
    assert net.calls[0] == ("GET", custom)


def test_discover_falls_through_404s_in_the_specified_order():
    custom = "https://mcp.example.com/custom-prm"
    tenant = f"{ISSUER}/tenant1"
    appended = f"{tenant}/.well-known/openid-configuration"
    net = FakeNet(
        {
            ("GET", PRM_ROOT): json_response(prm_document(ORIGIN + "/", servers=[tenant])),
            ("GET", appended): json_response(as_document(tenant)),
        }
    )
    found = net.run(discover(SERVER, Challenge(resource_metadata=custom)))
    assert net.calls == [
        ("GET", custom),
        ("GET", PRM_PATH),
        ("GET", PRM_ROOT),
        ("GET", f"{AS_META}/tenant1"),
        ("GET", f"{OIDC_META}/tenant1"),
        ("GET", appended),
    ]
    assert found.server.issuer == tenant
    assert found.resource == ORIGIN + "/"


def test_discover_oidc_metadata_for_an_issuer_without_path():
    net = FakeNet(
        {
            ("GET", PRM_PATH): json_response(prm_document()),
            ("GET", OIDC_META): json_response(as_document()),
        }
    )
    found = net.run(discover(SERVER, None))
    assert net.calls == [("GET", PRM_PATH), ("GET", AS_META), ("GET", OIDC_META)]
    assert found.server.issuer == ISSUER


def test_discover_falls_through_a_500_html_resource_metadata():
    net = happy_net(**{PRM_PATH: html_response(500), PRM_ROOT: json_response(prm_document())})
    found = net.run(discover(SERVER, None))
    assert net.calls == [("GET", PRM_PATH), ("GET", PRM_ROOT), ("GET", AS_META)]
    assert found.server.issuer == ISSUER


@pytest.mark.parametrize(
    "resource",
    [
        "https://evil.example.com/mcp",
        "https://mcp.example.com/other",
        "https://mcp.example.com/mc",
        "https://mcp.example.com/mcp/deeper",
        "http://mcp.example.com/mcp",
        "https://mcp.example.com:8443/mcp",
        "https://mcp.example.com.evil.example/mcp",
    ],
)
def test_discover_refuses_resource_metadata_for_another_resource(resource):
    net = happy_net(**{PRM_PATH: json_response(prm_document(resource))})
    with refused(OAuthError, "refusing to authorize for another resource"):
        net.run(discover(SERVER, None))
    assert net.calls == [("GET", PRM_PATH)]
    assert not net.asked(ISSUER)


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        (None, SERVER),
        (SERVER, SERVER),
        (SERVER + "/", SERVER + "/"),
        (ORIGIN, ORIGIN),
        (ORIGIN + "/", ORIGIN + "/"),
        ("https://MCP.Example.com/mcp", "https://MCP.Example.com/mcp"),
    ],
)
def test_discover_accepts_resource_metadata_for_this_server_or_a_prefix(resource, expected):
    net = happy_net(**{PRM_PATH: json_response(prm_document(resource))})
    found = net.run(discover(SERVER, None))
    assert found.resource == expected
    assert ("GET", AS_META) in net.calls


def test_discover_refuses_resource_metadata_without_authorization_servers():
    net = happy_net(**{PRM_PATH: json_response(prm_document(servers=[]))})
    with refused(OAuthError, "names no authorization server"):
        net.run(discover(SERVER, None))
    assert not net.asked(ISSUER)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (["https://auth.example.com"], "not a JSON object"),
        ("a string", "not a JSON object"),
        ({"authorization_servers": "https://auth.example.com"}, "invalid"),
        ({"authorization_servers": [ISSUER], "resource": 42}, "invalid"),
    ],
)
def test_discover_refuses_malformed_resource_metadata(body, message):
    net = happy_net(**{PRM_PATH: json_response(body)})
    with refused(OAuthError, message):
        net.run(discover(SERVER, None))
    assert not net.asked(ISSUER)


@pytest.mark.parametrize(
    "issuer",
    ["https://evil.example.com", "https://auth.example.com/other", "http://auth.example.com"],
)
def test_discover_refuses_server_metadata_for_another_issuer(issuer):
    net = happy_net(**{AS_META: json_response(as_document(issuer))})
    with refused(OAuthError, "refusing it"):
        net.run(discover(SERVER, None))
    assert net.calls == [("GET", PRM_PATH), ("GET", AS_META)]


def test_discover_refuses_path_issuer_metadata_naming_another_tenant():
    tenant = f"{ISSUER}/tenant1"
    net = FakeNet(
        {
            ("GET", PRM_PATH): json_response(prm_document(servers=[tenant])),
            ("GET", f"{AS_META}/tenant1"): json_response(as_document(f"{ISSUER}/tenant2")),
        }
    )
    with refused(OAuthError, "tenant2"):
        net.run(discover(SERVER, None))
    assert len(net.requests) == 2


def test_discover_tolerates_a_trailing_slash_on_the_issuer():
    net = happy_net(
        **{
            PRM_PATH: json_response(prm_document(servers=[ISSUER + "/"])),
            AS_META: json_response(as_document(ISSUER)),
        }
    )
    assert net.run(discover(SERVER, None)).server.issuer == ISSUER


@pytest.mark.parametrize("methods", [None, [], ["plain"], ["s256"]])
def test_discover_refuses_an_authorization_server_without_s256(methods):
    net = happy_net(
        **{AS_META: json_response(as_document(code_challenge_methods_supported=methods))}
    )
    with refused(OAuthError, r"PKCE with S256 \(code_challenge_methods_supported\)"):
        net.run(discover(SERVER, None))


def test_discover_accepts_s256_among_other_methods():
    net = happy_net(
        **{AS_META: json_response(as_document(code_challenge_methods_supported=["plain", "S256"]))}
    )
    assert net.run(discover(SERVER, None)).server.code_challenge_methods_supported == [
        "plain",
        "S256",
    ]


def test_discover_html_resource_metadata_is_a_clear_error():
    net = happy_net(**{PRM_PATH: html_response(200)})
    with refused(OAuthError, f"the resource metadata at {PRM_PATH} is not a JSON object"):
        net.run(discover(SERVER, None))
    assert not net.asked(ISSUER)


def test_discover_html_server_metadata_is_a_clear_error():
    net = happy_net(**{AS_META: html_response(200)})
    with refused(OAuthError, "authorization server metadata .* is not a JSON object"):
        net.run(discover(SERVER, None))


def test_discover_500_html_server_metadata_everywhere_is_a_clear_error():
    net = happy_net(**{AS_META: html_response(500), OIDC_META: html_response(500)})
    with refused(OAuthError, "found no authorization server metadata for https://auth.example.com"):
        net.run(discover(SERVER, None))
    assert net.calls == [("GET", PRM_PATH), ("GET", AS_META), ("GET", OIDC_META)]


def test_discover_server_metadata_missing_required_fields_is_refused():
    net = happy_net(**{AS_META: json_response({"issuer": ISSUER})})
    with refused(OAuthError, "authorization server metadata .* is invalid"):
        net.run(discover(SERVER, None))


@pytest.mark.parametrize(
    ("field", "what"),
    [
        ("authorization_endpoint", "authorization endpoint"),
        ("token_endpoint", "token endpoint"),
        ("registration_endpoint", "registration endpoint"),
        ("revocation_endpoint", "revocation endpoint"),
    ],
)
@pytest.mark.parametrize(
    "url",
    [
        "http://auth.example.com/x",
        "http://localhost.example.com/x",
        "http://localhost@auth.example.com/x",
        "http://127.0.0.1.nip.io/x",
        "ftp://auth.example.com/x",
        "javascript:alert(1)",
        "/relative/x",
    ],
)
def test_discover_refuses_non_https_endpoints(field, what, url):
    net = happy_net(**{AS_META: json_response(as_document(**{field: url}))})
    with refused(OAuthError, f"the {what} .* is not an https:// URL"):
        net.run(discover(SERVER, None))


def test_discover_refuses_an_http_authorization_server_before_asking_it():
    net = happy_net(**{PRM_PATH: json_response(prm_document(servers=["http://auth.example.com"]))})
    with refused(OAuthError, "authorization server 'http://auth.example.com' is not an https"):
        net.run(discover(SERVER, None))
    assert net.calls == [("GET", PRM_PATH)]


def test_discover_refuses_an_http_resource_metadata_url_before_asking_it():
    challenge = Challenge(resource_metadata="http://meta.example.com/prm")
    net = happy_net()
    with refused(OAuthError, "resource metadata URL .* is not an https"):
        net.run(discover(SERVER, challenge))
    assert net.requests == []


@pytest.mark.parametrize("host", ["127.0.0.1:9000", "localhost:9000", "[::1]:9000"])
def test_discover_allows_http_on_loopback(host):
    server = "http://127.0.0.1:8123/mcp"
    issuer = f"http://{host}"
    net = FakeNet(
        {
            ("GET", "http://127.0.0.1:8123/.well-known/oauth-protected-resource/mcp"): (
                json_response(prm_document(server, servers=[issuer]))
            ),
            ("GET", f"{issuer}/.well-known/oauth-authorization-server"): (
                json_response(as_document(issuer))
            ),
        }
    )
    found = net.run(discover(server, None))
    assert found.server.token_endpoint == f"{issuer}/token"
    assert found.server.authorization_endpoint == f"{issuer}/authorize"
    assert found.resource == server


def test_discover_2025_03_26_server_metadata_at_the_origin():
    origin_meta = f"{ORIGIN}/.well-known/oauth-authorization-server"
    net = FakeNet({("GET", origin_meta): json_response(as_document(ORIGIN))})
    found = net.run(discover(SERVER, None))
    assert net.calls == [("GET", PRM_PATH), ("GET", PRM_ROOT), ("GET", origin_meta)]
    assert found.resource == SERVER
    assert found.server.issuer == ORIGIN
    assert found.server.token_endpoint == f"{ORIGIN}/token"
    assert found.from_metadata is True
    assert found.scopes_supported is None


def test_discover_2025_03_26_issuer_on_another_origin_is_refused():
    origin_meta = f"{ORIGIN}/.well-known/oauth-authorization-server"
    net = FakeNet({("GET", origin_meta): json_response(as_document(ISSUER))})
    with refused(OAuthError, "refusing it"):
        net.run(discover(SERVER, None))
    assert not net.asked(ISSUER)


def test_discover_2025_03_26_metadata_still_needs_s256():
    origin_meta = f"{ORIGIN}/.well-known/oauth-authorization-server"
    document = as_document(ORIGIN, code_challenge_methods_supported=None)
    net = FakeNet({("GET", origin_meta): json_response(document)})
    with refused(OAuthError, "S256"):
        net.run(discover(SERVER, None))


def test_discover_2025_03_26_html_metadata_is_a_clear_error():
    origin_meta = f"{ORIGIN}/.well-known/oauth-authorization-server"
    net = FakeNet({("GET", origin_meta): html_response(200)})
    with refused(OAuthError, "not a JSON object"):
        net.run(discover(SERVER, None))


@pytest.mark.parametrize(
    ("server", "resource"),
    [
        (SERVER, SERVER),
        ("https://MCP.Example.com/v1/mcp#frag", "https://mcp.example.com/v1/mcp"),
    ],
)
def test_discover_without_any_metadata_uses_the_default_endpoints(server, resource):
    net = FakeNet(default=html_response(500))
    found = net.run(discover(server, None))
    assert found.from_metadata is False
    assert found.resource == resource
    assert found.server.issuer.lower() == ORIGIN
    assert found.server.authorization_endpoint.lower() == f"{ORIGIN}/authorize"
    assert found.server.token_endpoint.lower() == f"{ORIGIN}/token"
    assert found.server.registration_endpoint is not None
    assert found.server.registration_endpoint.lower() == f"{ORIGIN}/register"
    assert all(method == "GET" for method, _ in net.calls)
    assert len(net.calls) == 3


def test_discover_with_resource_metadata_never_falls_back_to_defaults():
    net = FakeNet({("GET", PRM_PATH): json_response(prm_document())})
    with refused(OAuthError, "found no authorization server metadata"):
        net.run(discover(SERVER, None))
    assert not net.asked(f"{ORIGIN}/.well-known/oauth-authorization-server")


# =========================================================================================
# choose_scope, union_scope
# =========================================================================================

NO_OFFLINE = ["read", "write"]
WITH_OFFLINE = ["read", "write", "offline_access"]


def test_scope_configured_wins():
    discovery = Discovery(SERVER, metadata(scopes_supported=NO_OFFLINE), ["prm"], True)
    chosen = choose_scope(OAuthSettings(scope="conf1 conf2"), Challenge(scope="chal"), discovery)
    assert chosen == "conf1 conf2"


def test_scope_challenge_next():
    discovery = Discovery(SERVER, metadata(scopes_supported=NO_OFFLINE), ["prm"], True)
    assert choose_scope(OAuthSettings(), Challenge(scope="chal1 chal2"), discovery) == "chal1 chal2"
    assert choose_scope(None, Challenge(scope="chal"), discovery) == "chal"
    assert choose_scope(OAuthSettings(scope=""), Challenge(scope="chal"), discovery) == "chal"


def test_scope_resource_scopes_supported_last():
    discovery = Discovery(SERVER, metadata(scopes_supported=NO_OFFLINE), ["prm1", "prm2"], True)
    assert choose_scope(None, Challenge(scope=None), discovery) == "prm1 prm2"
    assert choose_scope(None, None, discovery) == "prm1 prm2"


@pytest.mark.parametrize("offered", [None, [], NO_OFFLINE])
def test_scope_none_at_all(offered):
    discovery = Discovery(SERVER, metadata(scopes_supported=offered), None, True)
    assert choose_scope(None, None, discovery) is None
    assert choose_scope(OAuthSettings(), Challenge(), discovery) is None


def test_scope_offline_access_added_when_the_server_lists_it():
    discovery = Discovery(SERVER, metadata(scopes_supported=WITH_OFFLINE), ["prm"], True)
    assert choose_scope(OAuthSettings(scope="conf"), None, discovery) == "conf offline_access"
    assert choose_scope(None, Challenge(scope="chal"), discovery) == "chal offline_access"
    assert choose_scope(None, None, discovery) == "prm offline_access"


def test_scope_offline_access_alone_when_nothing_else_is_known():
    discovery = Discovery(SERVER, metadata(scopes_supported=WITH_OFFLINE), None, True)
    assert choose_scope(None, None, discovery) == "offline_access"


def test_scope_offline_access_not_duplicated():
    discovery = Discovery(SERVER, metadata(scopes_supported=WITH_OFFLINE), None, True)
    chosen = choose_scope(OAuthSettings(scope="offline_access read"), None, discovery)
    assert chosen == "offline_access read"


@pytest.mark.parametrize("offered", [None, NO_OFFLINE])
def test_scope_offline_access_not_added_when_unlisted(offered):
    discovery = Discovery(SERVER, metadata(scopes_supported=offered), ["prm"], True)
    assert choose_scope(None, None, discovery) == "prm"


@pytest.mark.parametrize("offered", [None, NO_OFFLINE])
def test_scope_offline_access_removed_when_unlisted(offered):
    discovery = Discovery(
        SERVER, metadata(scopes_supported=offered), ["offline_access", "prm"], True
    )
    assert choose_scope(OAuthSettings(scope="a offline_access b"), None, discovery) == "a b"
    assert choose_scope(None, Challenge(scope="offline_access c"), discovery) == "c"
    assert choose_scope(None, None, discovery) == "prm"
    assert choose_scope(None, Challenge(scope="offline_access"), discovery) is None


def test_scope_dedupes_preserving_order():
    discovery = Discovery(SERVER, metadata(scopes_supported=NO_OFFLINE), None, True)
    assert choose_scope(OAuthSettings(scope="b a b  c a"), None, discovery) == "b a c"


def test_scope_duplicated_offline_access_removed_when_unlisted():
    discovery = Discovery(SERVER, metadata(scopes_supported=NO_OFFLINE), None, True)
    challenge = Challenge(scope="read offline_access offline_access")
    assert choose_scope(None, challenge, discovery) == "read"


@pytest.mark.parametrize(
    ("scopes", "expected"),
    [
        (("a b", "b c", None, "a d"), "a b c d"),
        (("x",), "x"),
        ((None, None), None),
        (("", "  "), None),
        ((), None),
        (("read write", "write read"), "read write"),
    ],
)
def test_union_scope(scopes, expected):
    assert union_scope(*scopes) == expected


# =========================================================================================
# choose_client
# =========================================================================================


def test_client_configured_without_secret_is_public():
    identity = choose_client(OAuthSettings(client_id="cfg"), make_discovery(), None, REDIRECT)
    assert identity.register is False
    assert identity.client is not None
    assert identity.client.client_id == "cfg"
    assert identity.client.client_secret is None
    assert identity.client.token_endpoint_auth_method == "none"
    assert identity.client.redirect_uri == REDIRECT
    assert identity.client.issuer == ISSUER


@pytest.mark.parametrize(
    ("supported", "method"),
    [
        (None, "client_secret_basic"),
        (["client_secret_basic"], "client_secret_basic"),
        # The first method the server lists that mcpd can do.
        (["client_secret_post", "client_secret_basic"], "client_secret_post"),
        (["client_secret_post"], "client_secret_post"),
        (["none", "client_secret_post"], "client_secret_post"),
    ],
)
def test_client_configured_with_secret_authenticates_as_the_server_supports(supported, method):
    settings = OAuthSettings(client_id="cfg", client_secret=CLIENT_SECRET)
    discovery = make_discovery(token_endpoint_auth_methods_supported=supported)
    identity = choose_client(settings, discovery, None, REDIRECT)
    assert identity.register is False
    assert identity.client is not None
    assert identity.client.client_secret == CLIENT_SECRET
    assert identity.client.token_endpoint_auth_method == method


def test_client_configured_wins_over_cimd_and_stored():
    settings = OAuthSettings(client_id="cfg", client_metadata_url=CIMD_URL)
    discovery = make_discovery(client_id_metadata_document_supported=True)
    identity = choose_client(settings, discovery, PUBLIC, REDIRECT)
    assert identity.client is not None
    assert identity.client.client_id == "cfg"


def test_client_cimd_url_when_supported():
    settings = OAuthSettings(client_metadata_url=CIMD_URL)
    discovery = make_discovery(client_id_metadata_document_supported=True)
    identity = choose_client(settings, discovery, PUBLIC, REDIRECT)
    assert identity.register is False
    assert identity.client is not None
    assert identity.client.client_id == CIMD_URL
    assert identity.client.client_secret is None
    assert identity.client.token_endpoint_auth_method == "none"
    assert identity.client.redirect_uri == REDIRECT


def test_client_cimd_url_not_used_when_unsupported():
    settings = OAuthSettings(client_metadata_url=CIMD_URL)
    identity = choose_client(settings, make_discovery(), None, REDIRECT)
    assert identity.client is None
    assert identity.register is True
    identity = choose_client(settings, make_discovery(), PUBLIC, REDIRECT)
    assert identity.client is PUBLIC


@pytest.mark.parametrize("expires", [None, 0, 0.0, "future"])
def test_client_stored_registration_reused(expires):
    stored = confidential("client_secret_basic")
    stored.client_secret_expires_at = time.time() + 3600 if expires == "future" else expires
    identity = choose_client(None, make_discovery(), stored, REDIRECT)
    assert identity.register is False
    assert identity.client is stored


@pytest.mark.parametrize(
    "change",
    [
        {"issuer": "https://other.example.com"},
        {"issuer": None},
        {"redirect_uri": "http://127.0.0.1:40000/callback"},
        {"client_secret_expires_at": 1.0},
        {"client_secret_expires_at": "past"},
    ],
)
def test_client_stored_registration_not_reused(change):
    stored = confidential("client_secret_basic")
    for name, value in change.items():
        setattr(stored, name, time.time() - 5 if value == "past" else value)
    identity = choose_client(None, make_discovery(), stored, REDIRECT)
    assert identity.client is None
    assert identity.register is True


def test_client_registration_when_nothing_stored():
    identity = choose_client(None, make_discovery(), None, REDIRECT)
    assert identity == type(identity)(None, register=True)


@pytest.mark.parametrize(
    ("settings", "stored", "cimd"),
    [
        (None, None, False),
        (OAuthSettings(), None, True),
        (OAuthSettings(client_metadata_url=CIMD_URL), None, False),
        (None, confidential("client_secret_basic"), False),
    ],
)
def test_client_registration_required_when_nothing_possible(settings, stored, cimd):
    if stored is not None:
        stored.client_secret_expires_at = time.time() - 5
    discovery = make_discovery(
        registration_endpoint=None, client_id_metadata_document_supported=cimd
    )
    with refused(ClientRegistrationRequired, r"oauth\.client_id") as info:
        choose_client(settings, discovery, stored, REDIRECT)
    assert isinstance(info.value, OAuthError)
    assert ISSUER in str(info.value)


# =========================================================================================
# register
# =========================================================================================


def registration_net(response: HttpResponse) -> FakeNet:
    return FakeNet({("POST", REGISTER): response})


def test_register_request_body():
    net = registration_net(json_response({"client_id": "dcr-1"}, 201))
    net.run(register(make_discovery(), REDIRECT, "read write"))
    request = net.only("POST", REGISTER)
    assert net.calls == [("POST", REGISTER)]
    assert request.form is None
    assert request.headers.get("Accept") == "application/json"
    body = request.json
    assert body["redirect_uris"] == [REDIRECT]
    assert "authorization_code" in body["grant_types"]
    assert "refresh_token" in body["grant_types"]
    assert body["response_types"] == ["code"]
    assert body["token_endpoint_auth_method"] == "none"
    assert body["scope"] == "read write"
    assert body["client_name"]


def test_register_without_scope_sends_none():
    net = registration_net(json_response({"client_id": "dcr-1"}, 201))
    net.run(register(make_discovery(), REDIRECT, None))
    assert "scope" not in net.only("POST", REGISTER).json


@pytest.mark.parametrize(
    ("supported", "method"),
    [
        (None, "none"),
        (["client_secret_basic", "none"], "none"),
        (["client_secret_post"], "client_secret_post"),
        (["client_secret_basic", "client_secret_post"], "client_secret_basic"),
    ],
)
def test_register_asks_for_an_auth_method_the_server_supports(supported, method):
    net = registration_net(json_response({"client_id": "dcr-1"}, 201))
    discovery = make_discovery(token_endpoint_auth_methods_supported=supported)
    net.run(register(discovery, REDIRECT, None))
    assert net.only("POST", REGISTER).json["token_endpoint_auth_method"] == method


def test_register_success_without_secret():
    net = registration_net(
        json_response({"client_id": "dcr-1", "token_endpoint_auth_method": "none"}, 201)
    )
    client = net.run(register(make_discovery(), REDIRECT, None))
    assert client.client_id == "dcr-1"
    assert client.client_secret is None
    assert client.client_secret_expires_at is None
    assert client.token_endpoint_auth_method == "none"
    assert client.redirect_uri == REDIRECT
    assert client.issuer == ISSUER


def test_register_success_with_secret():
    expires = int(time.time()) + 86400
    net = registration_net(
        json_response(
            {
                "client_id": "dcr-2",
                "client_secret": CLIENT_SECRET,
                "client_secret_expires_at": expires,
                "token_endpoint_auth_method": "client_secret_post",
            },
            200,
        )
    )
    client = net.run(register(make_discovery(), REDIRECT, None))
    assert client.client_id == "dcr-2"
    assert client.client_secret == CLIENT_SECRET
    assert client.client_secret_expires_at == float(expires)
    assert client.token_endpoint_auth_method == "client_secret_post"
    assert CLIENT_SECRET not in repr(client)


def test_register_secret_without_method_gets_one_the_server_supports():
    net = registration_net(json_response({"client_id": "d", "client_secret": CLIENT_SECRET}))
    discovery = make_discovery(token_endpoint_auth_methods_supported=["client_secret_post"])
    client = net.run(register(discovery, REDIRECT, None))
    assert client.token_endpoint_auth_method == "client_secret_post"


def test_register_refused_names_the_error():
    net = registration_net(
        json_response(
            {"error": "invalid_redirect_uri", "error_description": "loopback is not allowed"}, 400
        )
    )
    with refused(OAuthError, "invalid_redirect_uri: loopback is not allowed") as info:
        net.run(register(make_discovery(), REDIRECT, None))
    assert REGISTER in str(info.value)


def test_register_refused_with_html():
    net = registration_net(html_response(403))
    with refused(OAuthError, "failed: HTTP 403") as info:
        net.run(register(make_discovery(), REDIRECT, None))
    assert "<" not in str(info.value)


@pytest.mark.parametrize(
    "response",
    [
        json_response({}, 201),
        json_response({"client_id": 42}, 201),
        json_response({"client_secret": CLIENT_SECRET}, 201),
        json_response(["dcr-1"], 201),
        html_response(200),
    ],
)
def test_register_response_without_client_id(response):
    with refused(OAuthError, "no client_id"):
        registration_net(response).run(register(make_discovery(), REDIRECT, None))


def test_register_with_an_empty_auth_methods_list_does_not_crash():
    net = registration_net(json_response({"client_id": "dcr-1"}, 201))
    discovery = make_discovery(token_endpoint_auth_methods_supported=[])
    client = net.run(register(discovery, REDIRECT, None))
    assert client.client_id == "dcr-1"


def test_register_never_asks_for_an_auth_method_mcpd_cannot_do():
    net = registration_net(json_response({"client_id": "dcr-1"}, 201))
    discovery = make_discovery(
        token_endpoint_auth_methods_supported=["private_key_jwt", "client_secret_basic"]
    )
    net.run(register(discovery, REDIRECT, None))
    assert net.only("POST", REGISTER).json["token_endpoint_auth_method"] == "client_secret_basic"


# =========================================================================================
# begin
# =========================================================================================


def authorization_params(pending: PendingAuthorization) -> dict[str, str]:
    query = parse_qs(urlsplit(pending.url).query, keep_blank_values=True, strict_parsing=True)
    assert all(len(values) == 1 for values in query.values()), query
    return {name: values[0] for name, values in query.items()}


def test_begin_authorization_url():
    pending = make_pending(scope="read write")
    parts = urlsplit(pending.url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == AUTHORIZE
    params = authorization_params(pending)
    assert params["response_type"] == "code"
    assert params["client_id"] == PUBLIC.client_id
    assert params["redirect_uri"] == REDIRECT
    assert params["code_challenge_method"] == "S256"
    assert params["state"] == pending.state
    assert params["resource"] == SERVER
    assert params["scope"] == "read write"
    assert pending.verifier not in pending.url
    assert pending.used is False


def test_begin_s256_challenge_of_the_verifier():
    pending = make_pending()
    challenge = authorization_params(pending)["code_challenge"]
    expected = base64.urlsafe_b64encode(hashlib.sha256(pending.verifier.encode()).digest())
    assert challenge == expected.rstrip(b"=").decode()
    assert "=" not in challenge
    assert len(challenge) == 43


def test_begin_verifier_is_rfc7636_shaped():
    pending = make_pending()
    assert 43 <= len(pending.verifier) <= 128
    assert re.fullmatch(r"[A-Za-z0-9._~-]+", pending.verifier)
    assert len(unpadded_b64decode(pending.verifier)) >= 32


def test_begin_state_has_at_least_128_bits():
    pending = make_pending()
    assert len(unpadded_b64decode(pending.state)) * 8 >= 128


def test_begin_fresh_secrets_each_time():
    first, second = make_pending(), make_pending()
    assert first.state != second.state
    assert first.verifier != second.verifier


@pytest.mark.parametrize("scope", [None, ""])
def test_begin_without_scope(scope):
    assert "scope" not in authorization_params(make_pending(scope=scope))


def test_begin_resource_of_the_discovery():
    discovery = make_discovery(resource=ORIGIN + "/")
    pending = begin(discovery, PUBLIC, None, REDIRECT)
    assert authorization_params(pending)["resource"] == ORIGIN + "/"


def test_begin_keeps_the_endpoints_own_query():
    pending = make_pending(authorization_endpoint=f"{AUTHORIZE}?tenant=acme")
    assert pending.url.count("?") == 1
    params = authorization_params(pending)
    assert params["tenant"] == "acme"
    assert params["state"] == pending.state


def test_pending_repr_does_not_contain_the_verifier():
    pending = make_pending()
    assert pending.verifier not in repr(pending)
    assert pending.verifier not in str(pending)


def test_pending_repr_does_not_contain_the_state():
    pending = make_pending()
    assert pending.state not in repr(pending)


# =========================================================================================
# PendingAuthorization.accept
# =========================================================================================


def test_accept_returns_the_code_once():
    pending = make_pending()
    assert pending.accept(callback(pending)) == CODE
    assert pending.used is True


@pytest.mark.parametrize("state", ["wrong", "", None, "x" * 43])
def test_accept_wrong_state_is_refused_and_keeps_the_authorization(state):
    pending = make_pending()
    with refused(OAuthError, "state does not match", secrets_of(pending)):
        pending.accept(callback(pending, state=state))
    assert pending.used is False
    assert pending.accept(callback(pending)) == CODE


def test_accept_replay_is_refused():
    pending = make_pending()
    query = callback(pending)
    assert pending.accept(query) == CODE
    with refused(OAuthError, "already completed", secrets_of(pending)):
        pending.accept(query)


def test_accept_expired_is_refused():
    pending = make_pending()
    pending.created = time.monotonic() - STATE_LIFETIME_SECONDS - 1
    with refused(OAuthError, "expired", secrets_of(pending)):
        pending.accept(callback(pending))
    assert pending.used is False


def test_accept_just_before_expiry():
    pending = make_pending()
    pending.created = time.monotonic() - STATE_LIFETIME_SECONDS + 30
    assert pending.accept(callback(pending)) == CODE


# The RFC 9207 decision table of MCP 2026-07-28 ("Authorization Response
# Validation"), on a response with a code and on an error response alike:
#
#     authorization_response_iss_parameter_supported  iss in response  action
#     true                                            present          compare
#     true                                            absent           reject
#     false or absent                                 present          compare
#     false or absent                                 absent           proceed
#
# A comparison is an exact string comparison: none of these is the issuer.
NOT_THE_ISSUER = [
    "https://evil.example.com",
    ISSUER + "/",  # a trailing slash (the conformance scenario auth/iss-normalized)
    "HTTPS://auth.example.com",  # scheme case
    "https://AUTH.example.com",  # host case
    "https://auth.example.com:443",  # the default port
    "https://auth.%65xample.com",  # percent-encoding
    ISSUER + "/x",
    "",
]


@pytest.mark.parametrize("error", [None, "access_denied"], ids=["code", "error"])
@pytest.mark.parametrize(
    ("advertised", "iss", "accepted"),
    [
        (True, ISSUER, True),
        (True, "https://evil.example.com", False),
        (True, None, False),
        (False, ISSUER, True),
        (False, "https://evil.example.com", False),
        (False, None, True),
    ],
    ids=[
        "advertised-present-same",
        "advertised-present-other",
        "advertised-absent",
        "unadvertised-present-same",
        "unadvertised-present-other",
        "unadvertised-absent",
    ],
)
def test_accept_applies_the_iss_decision_table(advertised, iss, accepted, error):
    pending = make_pending(authorization_response_iss_parameter_supported=advertised)
    description = "the AS says this and nobody should see it"
    query = callback(
        pending,
        iss=iss,
        **({"code": None, "error": error, "error_description": description} if error else {}),
    )
    if accepted and error is None:
        assert pending.accept(query) == CODE
    elif accepted:
        # The issuer checks out: the authorization server's error is believed.
        with refused(ServerRefused, error, secrets_of(pending)) as info:
            pending.accept(query)
        assert info.value.error == error
    else:
        # Rejected before anything else: an error response's error is neither acted
        # on nor shown, and no code goes to any token endpoint.
        with refused(OAuthError, "RFC 9207", secrets_of(pending)) as info:
            pending.accept(query)
        assert not isinstance(info.value, ServerRefused)
        assert description not in str(info.value)
        assert "access_denied" not in str(info.value)
    with refused(OAuthError, "already completed", secrets_of(pending)):
        pending.accept(callback(pending, iss=ISSUER))


@pytest.mark.parametrize("advertised", [False, True])
@pytest.mark.parametrize("error", [None, "access_denied"], ids=["code", "error"])
@pytest.mark.parametrize("iss", NOT_THE_ISSUER)
def test_accept_compares_iss_without_any_normalisation(advertised, error, iss):
    pending = make_pending(authorization_response_iss_parameter_supported=advertised)
    query = callback(pending, iss=iss, **({"code": None, "error": error} if error else {}))
    with refused(OAuthError, "RFC 9207", secrets_of(pending)) as info:
        pending.accept(query)
    assert not isinstance(info.value, ServerRefused)


def test_accept_matching_issuer_with_a_path_and_a_trailing_slash():
    issuer = "https://auth.example.com/tenant1/"
    pending = make_pending(issuer=issuer, authorization_response_iss_parameter_supported=True)
    assert pending.accept(callback(pending, iss=issuer)) == CODE
    other = make_pending(issuer=issuer, authorization_response_iss_parameter_supported=True)
    with refused(OAuthError, "RFC 9207", secrets_of(other)):
        other.accept(callback(other, iss=issuer.rstrip("/")))


def test_accept_missing_issuer_when_advertised_names_the_promise():
    pending = make_pending(authorization_response_iss_parameter_supported=True)
    with refused(OAuthError, "carries no issuer", secrets_of(pending)):
        pending.accept(callback(pending))


@pytest.mark.parametrize(
    ("advertised", "iss", "passes"),
    [
        (True, ISSUER, True),
        (True, ISSUER + "/", False),
        (True, None, False),
        (False, ISSUER, True),
        (False, ISSUER + "/", False),
        (False, None, True),
    ],
)
def test_check_issuer_alone(advertised, iss, passes):
    if passes:
        check_issuer(iss, ISSUER, advertised)
    else:
        with refused(OAuthError, "RFC 9207"):
            check_issuer(iss, ISSUER, advertised)


def test_accept_error_is_server_refused_with_code_and_description():
    pending = make_pending()
    query = callback(
        pending, code=None, error="access_denied", error_description="The user said no"
    )
    with refused(ServerRefused, "access_denied: The user said no", secrets_of(pending)) as info:
        pending.accept(query)
    assert info.value.error == "access_denied"
    with refused(OAuthError, "already completed", secrets_of(pending)):
        pending.accept(callback(pending))


def test_accept_error_wins_over_a_code_and_hides_it():
    pending = make_pending()
    with refused(ServerRefused, "invalid_scope", secrets_of(pending)) as info:
        pending.accept(callback(pending, error="invalid_scope"))
    assert info.value.error == "invalid_scope"
    assert str(info.value).endswith("invalid_scope")


@pytest.mark.parametrize("code", [None, ""])
def test_accept_without_code_is_refused(code):
    pending = make_pending()
    with refused(OAuthError, "no authorization code", secrets_of(pending)):
        pending.accept(callback(pending, code=code))


# =========================================================================================
# exchange, token_request, client authentication
# =========================================================================================


def token_net(response: HttpResponse | None = None, endpoint: str = TOKEN) -> FakeNet:
    return FakeNet({("POST", endpoint): response or json_response(token_document())})


def test_exchange_form():
    pending = make_pending()
    net = token_net()
    net.run(exchange(pending, CODE))
    assert net.calls == [("POST", TOKEN)]
    request = net.requests[0]
    assert request.json is None
    assert request.headers.get("Accept") == "application/json"
    assert request.form == {
        "grant_type": "authorization_code",
        "code": CODE,
        "redirect_uri": REDIRECT,
        "code_verifier": pending.verifier,
        "resource": SERVER,
        "client_id": PUBLIC.client_id,
    }
    assert request.form["resource"] == authorization_params(pending)["resource"]
    assert request.form["redirect_uri"] == authorization_params(pending)["redirect_uri"]


def test_exchange_resource_is_the_authorization_requests_for_a_prefix_resource():
    pending = begin(make_discovery(resource=ORIGIN + "/"), PUBLIC, None, REDIRECT)
    net = token_net()
    net.run(exchange(pending, CODE))
    assert net.requests[0].form is not None
    assert net.requests[0].form["resource"] == authorization_params(pending)["resource"]


def test_client_authentication_none():
    net = token_net()
    net.run(exchange(make_pending(PUBLIC), CODE))
    request = net.requests[0]
    assert "Authorization" not in request.headers
    assert request.form is not None
    assert request.form["client_id"] == PUBLIC.client_id
    assert "client_secret" not in request.form


def test_client_authentication_post():
    client = confidential("client_secret_post")
    net = token_net()
    net.run(exchange(make_pending(client), CODE))
    request = net.requests[0]
    assert "Authorization" not in request.headers
    assert request.form is not None
    assert request.form["client_id"] == client.client_id
    assert request.form["client_secret"] == CLIENT_SECRET


@pytest.mark.parametrize(
    ("client_id", "secret"),
    [("mcpd-conf", CLIENT_SECRET), ("id:with colon", "s3cr+t/with%weird:chars é")],
)
def test_client_authentication_basic(client_id, secret):
    client = confidential("client_secret_basic", client_id, secret)
    net = token_net()
    net.run(exchange(make_pending(client), CODE))
    request = net.requests[0]
    scheme, _, encoded = request.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    decoded = base64.b64decode(encoded, validate=True).decode()
    assert decoded.count(":") == 1
    user, _, password = decoded.partition(":")
    assert unquote_plus(user) == client_id
    assert unquote_plus(password) == secret
    assert request.form is not None
    assert "client_secret" not in request.form
    # client_id goes in the form too: some servers require it beside Basic.
    assert request.form["client_id"] == client_id
    assert all(secret not in value for value in request.form.values())


def test_client_authentication_basic_without_secret_falls_back_to_client_id():
    client = ClientRegistration(client_id="c", token_endpoint_auth_method="client_secret_basic")
    headers, form = client_authentication(client, {"grant_type": "x"})
    assert "Authorization" not in headers
    assert form == {"grant_type": "x", "client_id": "c"}


def test_client_authentication_does_not_change_the_callers_form():
    form = {"grant_type": "refresh_token"}
    client_authentication(confidential("client_secret_post"), form)
    assert form == {"grant_type": "refresh_token"}


def test_exchange_tokens():
    pending = make_pending(scope="read")
    before = time.time()
    tokens = token_net().run(exchange(pending, CODE))
    after = time.time()
    assert isinstance(tokens, TokenSet)
    assert tokens.access_token == ACCESS
    assert tokens.refresh_token == REFRESH
    assert tokens.scope == "read"
    assert tokens.expires_at is not None
    assert before + 3600 <= tokens.expires_at <= after + 3600
    assert before <= tokens.obtained_at <= after
    assert ACCESS not in repr(tokens)


def test_exchange_without_expiry_or_refresh_token():
    response = json_response(token_document(expires_in=None, refresh_token=None))
    tokens = token_net(response).run(exchange(make_pending(), CODE))
    assert tokens.expires_at is None
    assert tokens.refresh_token is None


@pytest.mark.parametrize("token_type", ["bearer", "BEARER", "Bearer"])
def test_exchange_bearer_is_case_insensitive(token_type):
    response = json_response(token_document(token_type=token_type))
    assert token_net(response).run(exchange(make_pending(), CODE)).access_token == ACCESS


def test_exchange_missing_scope_falls_back_to_the_requested_scope():
    response = json_response(token_document(scope=None))
    tokens = token_net(response).run(exchange(make_pending(scope="read write"), CODE))
    assert tokens.scope == "read write"
    tokens = token_net(response).run(exchange(make_pending(scope=None), CODE))
    assert tokens.scope is None


def test_exchange_granted_scope_wins_over_the_requested_one():
    response = json_response(token_document(scope="read"))
    tokens = token_net(response).run(exchange(make_pending(scope="read write"), CODE))
    assert tokens.scope == "read"


def test_token_request_missing_scope_falls_back_to_the_forms():
    response = json_response(token_document(scope=None))
    form = {"grant_type": "refresh_token", "refresh_token": REFRESH, "scope": "read"}
    tokens = token_net(response).run(token_request(TOKEN, PUBLIC, form))
    assert tokens.scope == "read"


@pytest.mark.parametrize(
    "document",
    [
        token_document(access_token=None),
        token_document(access_token=12345),
        {"token_type": "Bearer"},
    ],
)
def test_exchange_without_access_token_is_refused(document):
    pending = make_pending()
    with refused(ServerRefused, "no access_token", secrets_of(pending)):
        token_net(json_response(document)).run(exchange(pending, CODE))


def test_an_error_answered_with_200_keeps_its_error_code():
    """Some servers (GitHub's, for one) answer token errors with status 200."""
    pending = make_pending()
    with refused(ServerRefused, "invalid_grant", secrets_of(pending)) as info:
        token_net(json_response({"error": "invalid_grant"})).run(exchange(pending, CODE))
    assert info.value.error == "invalid_grant"


@pytest.mark.parametrize("token_type", ["mac", "DPoP", "N_A", None, 1])
def test_exchange_non_bearer_token_is_refused(token_type):
    pending = make_pending()
    response = json_response(token_document(token_type=token_type))
    with refused(ServerRefused, "not Bearer", secrets_of(pending)) as info:
        token_net(response).run(exchange(pending, CODE))
    assert info.value.error is None


@pytest.mark.parametrize("status", [200, 500, 502])
def test_exchange_html_error_page_is_refused(status):
    pending = make_pending()
    with refused(ServerRefused, "token endpoint", secrets_of(pending)) as info:
        token_net(html_response(status)).run(exchange(pending, CODE))
    assert info.value.error is None
    assert "<" not in str(info.value)
    if status != 200:
        assert f"HTTP {status}" in str(info.value)


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, "invalid_grant"), (401, "invalid_client"), (400, "unauthorized_client")],
)
def test_exchange_oauth_error_is_server_refused(status, error):
    pending = make_pending(confidential("client_secret_post"))
    response = json_response({"error": error, "error_description": "no good"}, status)
    with refused(ServerRefused, f"{error}: no good", secrets_of(pending)) as info:
        token_net(response).run(exchange(pending, CODE))
    assert info.value.error == error


def test_exchange_error_that_is_not_a_string():
    pending = make_pending()
    response = json_response({"error": {"code": 7}}, 400)
    with refused(ServerRefused, "HTTP 400", secrets_of(pending)) as info:
        token_net(response).run(exchange(pending, CODE))
    assert info.value.error is None


# =========================================================================================
# The whole flow, sans IO: which requests are (not) made
# =========================================================================================


def full_net() -> FakeNet:
    net = happy_net()
    net.responses[("POST", REGISTER)] = json_response({"client_id": "dcr-9"}, 201)
    net.responses[("POST", TOKEN)] = json_response(token_document())
    return net


def sign_in(
    net: FakeNet, make_query: Callable[[PendingAuthorization], str], seen: list | None = None
) -> Any:
    """discover → scope → client (registering) → begin → accept → exchange."""
    challenge = parse_challenge(f'Bearer resource_metadata="{PRM_PATH}", scope="read"')
    discovery = net.run(discover(SERVER, challenge))
    scope = choose_scope(None, challenge, discovery)
    identity = choose_client(None, discovery, None, REDIRECT)
    client = identity.client or net.run(register(discovery, REDIRECT, scope))
    pending = begin(discovery, client, scope, REDIRECT)
    if seen is not None:
        seen.append(pending)
    code = pending.accept(make_query(pending))
    return pending, net.run(exchange(pending, code))


def test_full_flow_requests_in_order():
    net = full_net()
    pending, tokens = sign_in(net, callback)
    assert net.calls == [
        ("GET", PRM_PATH),
        ("GET", AS_META),
        ("POST", REGISTER),
        ("POST", TOKEN),
    ]
    assert tokens.access_token == ACCESS
    assert net.requests[2].json["scope"] == "read offline_access"
    token_form = net.requests[3].form
    assert token_form is not None
    assert token_form["client_id"] == "dcr-9"
    assert token_form["code_verifier"] == pending.verifier
    assert token_form["resource"] == authorization_params(pending)["resource"]


@pytest.mark.parametrize(
    "make_query",
    [
        lambda p: callback(p, state="forged"),
        lambda p: callback(p, iss="https://evil.example.com"),
        lambda p: callback(p, code=None, error="access_denied"),
        lambda p: callback(p, code=""),
        lambda p: "",
    ],
    ids=["state", "iss", "error", "no-code", "empty"],
)
def test_full_flow_bad_callback_makes_no_token_request(make_query):
    net = full_net()
    seen: list[PendingAuthorization] = []
    with refused(OAuthError) as info:
        sign_in(net, make_query, seen)
    for secret in secrets_of(seen[0]):
        assert secret not in str(info.value)
    assert not any(r.url == TOKEN for r in net.requests)
    assert ("POST", REGISTER) in net.calls


# =========================================================================================
# Revocation (manager._revoke is sans-IO too)
# =========================================================================================


def revocation_record(client: ClientRegistration) -> CredentialRecord:
    return CredentialRecord(
        server="s",
        url=SERVER,
        tokens=TokenSet(access_token=ACCESS, refresh_token=REFRESH, obtained_at=time.time()),
        client=client,
        authorization=AuthorizationServer(
            issuer=ISSUER, token_endpoint=TOKEN, revocation_endpoint=REVOKE, resource=SERVER
        ),
    )


def test_revoke_refresh_token_then_access_token():
    net = FakeNet({("POST", REVOKE): HttpResponse(200, {}, b"")})
    net.run(_revoke(REVOKE, revocation_record(confidential("client_secret_basic"))))
    assert net.calls == [("POST", REVOKE), ("POST", REVOKE)]
    forms = [r.form for r in net.requests]
    assert forms[0] == {
        "token": REFRESH,
        "token_type_hint": "refresh_token",
        "client_id": "mcpd-conf",
    }
    assert forms[1] == {
        "token": ACCESS,
        "token_type_hint": "access_token",
        "client_id": "mcpd-conf",
    }
    assert all(r.headers["Authorization"].startswith("Basic ") for r in net.requests)


def test_revoke_failure_stops_and_leaks_nothing():
    net = FakeNet({("POST", REVOKE): html_response(503)})
    with refused(OAuthError, "HTTP 503"):
        net.run(_revoke(REVOKE, revocation_record(confidential("client_secret_post"))))
    assert len(net.requests) == 1


# --- The helper itself ----------------------------------------------------------------


def test_fake_net_records_and_defaults_to_404():
    def step() -> Step[list[int]]:
        first = yield HttpRequest("GET", "https://a.example/x")
        second = yield HttpRequest("POST", "https://a.example/y", form={"k": "v"})
        return [first.status, second.status]

    net = FakeNet({("POST", "https://a.example/y"): json_response({}, 201)})
    assert net.run(step()) == [404, 201]
    assert net.calls == [("GET", "https://a.example/x"), ("POST", "https://a.example/y")]
    assert net.requests[1].form == {"k": "v"}


# =========================================================================================
# MCP 2026-07-28: application_type, client credentials bound to their issuer, refresh
# tokens never assumed
# =========================================================================================

AS2 = "https://login.example.net"
AS2_META = f"{AS2}/.well-known/oauth-authorization-server"


@pytest.mark.parametrize(
    ("redirect", "kind"),
    [
        (REDIRECT, "native"),
        ("http://localhost:19876/callback", "native"),
        ("http://[::1]:19876/callback", "native"),
        ("https://127.0.0.1:8443/callback", "native"),
        ("https://relay.example.org/mcpd/callback", "web"),
    ],
)
def test_register_sends_the_application_type_of_the_redirect(redirect, kind):
    assert application_type(redirect) == kind
    net = registration_net(json_response({"client_id": "dcr-1"}, 201))
    net.run(register(make_discovery(), redirect, None))
    assert net.only("POST", REGISTER).json["application_type"] == kind


def test_register_is_native_for_the_loopback_callback():
    net = registration_net(json_response({"client_id": "dcr-1"}, 201))
    net.run(register(make_discovery(), REDIRECT, "read"))
    assert net.only("POST", REGISTER).json["application_type"] == "native"


def migrated_net() -> FakeNet:
    """The resource's metadata now names AS2; AS1 answers nothing at all."""

    def as1(request: HttpRequest) -> HttpResponse:
        raise AssertionError(f"AS1 was asked {request.method} {request.url}")

    net = FakeNet(
        {
            ("GET", PRM_PATH): json_response(prm_document(servers=(AS2,))),
            ("GET", AS2_META): json_response(as_document(AS2)),
            ("POST", f"{AS2}/register"): json_response({"client_id": "as2-client"}, 201),
            ("POST", f"{AS2}/token"): json_response(token_document()),
        }
    )
    for url in (AS_META, REGISTER, TOKEN, REVOKE, AUTHORIZE):
        net.responses[("GET", url)] = as1
        net.responses[("POST", url)] = as1
    return net


@pytest.mark.parametrize("method", ["none", "client_secret_basic", "client_secret_post"])
def test_a_sign_in_after_the_resource_moved_to_another_server_registers_anew(method):
    """SEP-2352 (the conformance scenario auth/authorization-server-migration): the
    stored registration of AS1 is never shown to AS2, not in the authorization
    request and not in the token request; a new one is made at AS2."""
    stored = PUBLIC if method == "none" else confidential(method)
    net = migrated_net()
    discovery = net.run(discover(SERVER, None))
    assert discovery.server.issuer == AS2
    identity = choose_client(None, discovery, stored, REDIRECT)
    assert identity == type(identity)(None, register=True)
    client = net.run(register(discovery, REDIRECT, "read"))
    assert (client.client_id, client.issuer) == ("as2-client", AS2)
    pending = begin(discovery, client, "read", REDIRECT)
    assert pending.url.startswith(f"{AS2}/authorize?")
    assert authorization_params(pending)["client_id"] == "as2-client"
    tokens = net.run(exchange(pending, pending.accept(callback(pending))))
    assert tokens.access_token == ACCESS
    for request in net.requests:
        text = repr((request.url, request.headers, request.form, request.json))
        assert stored.client_id not in text
        assert CLIENT_SECRET not in text
        assert not request.url.startswith(ISSUER)


def test_a_configured_client_is_not_taken_to_another_authorization_server():
    """Pre-registered credentials belong to the authorization server they were
    used with: a server that moved is an error saying what to do, not a silent
    attempt with the old client id."""
    settings = OAuthSettings(client_id="cfg", client_secret=CLIENT_SECRET)
    used = ClientRegistration(client_id="cfg", client_secret=CLIENT_SECRET, issuer=ISSUER)
    moved = make_discovery(issuer=AS2)
    with refused(ClientRegistrationRequired, "oauth.client_id") as info:
        choose_client(settings, moved, used, REDIRECT)
    assert AS2 in str(info.value)
    assert ISSUER in str(info.value)
    # Where it was used, or once the config names another client, it is used.
    same = choose_client(settings, make_discovery(), used, REDIRECT)
    assert same.client is not None
    assert same.client.issuer == ISSUER
    other = choose_client(OAuthSettings(client_id="cfg2"), moved, used, REDIRECT)
    assert other.client is not None
    assert (other.client.client_id, other.client.issuer) == ("cfg2", AS2)


def record_with(client: ClientRegistration | None, issuer: str = ISSUER) -> CredentialRecord:
    return CredentialRecord(
        server="s",
        url=SERVER,
        tokens=TokenSet(access_token=ACCESS, refresh_token=REFRESH, obtained_at=time.time()),
        client=client,
        authorization=AuthorizationServer(
            issuer=issuer, token_endpoint=TOKEN, revocation_endpoint=REVOKE, resource=SERVER
        ),
    )


@pytest.mark.parametrize(
    ("client_issuer", "bound"),
    [(ISSUER, True), (AS2, False), (None, False), (ISSUER + "/", False)],
)
def test_a_stored_client_is_used_only_at_its_own_authorization_server(client_issuer, bound):
    """What a refresh and a revocation use: the stored client only where it was
    registered (the issuer compared exactly); else nothing."""
    client = confidential("client_secret_basic")
    client.issuer = client_issuer
    record = record_with(client)
    assert (record.bound_client() is client) is bound
    assert record_with(None).bound_client() is None
    no_authorization = record_with(client)
    no_authorization.authorization = None
    assert no_authorization.bound_client() is None


def test_refresh_without_a_refresh_token_in_the_answer_keeps_the_old_one():
    tokens = TokenSet(access_token="old", refresh_token=REFRESH, obtained_at=0, scope="read")
    net = token_net(json_response(token_document(refresh_token=None, scope=None)))
    fresh = net.run(refresh_grant(tokens, PUBLIC, TOKEN, SERVER))
    assert fresh.access_token == ACCESS
    assert fresh.refresh_token == REFRESH
    assert fresh.scope == "read"
    form = net.only("POST", TOKEN).form
    assert form is not None
    assert form["resource"] == SERVER
    assert form["refresh_token"] == REFRESH


def test_a_sign_in_without_a_refresh_token_is_a_sign_in():
    """The authorization server may issue no refresh token (MCP clients MUST NOT
    assume one): the tokens are good, just not renewable."""
    response = json_response(token_document(refresh_token=None))
    tokens = token_net(response).run(exchange(make_pending(scope="read offline_access"), CODE))
    assert tokens.access_token == ACCESS
    assert tokens.refresh_token is None
    assert tokens.expires_at is not None


# =========================================================================================
# Knobs: oauth.prompt, oauth.resource, oauth.authorize_params
# =========================================================================================


def openid_discovery(**server: Any) -> Discovery:
    return Discovery(SERVER, metadata(**server), None, True, openid_configuration=True)


@pytest.mark.parametrize(
    ("openid", "scope", "configured", "expected"),
    [
        # Unset: consent exactly when offline_access is asked of an OpenID provider.
        (True, "read offline_access", None, "consent"),
        (True, "read", None, None),
        (True, None, None, None),
        (False, "read offline_access", None, None),
        # Set: as given, whatever the server and scope; "" sends none.
        (True, "read offline_access", "", None),
        (False, "read", "login", "login"),
        (True, "read offline_access", "login consent", "login consent"),
        (True, "read offline_access", "none", "none"),
    ],
)
def test_choose_prompt(openid, scope, configured, expected):
    discovery = openid_discovery() if openid else make_discovery()
    settings = OAuthSettings(prompt=configured) if configured is not None else None
    assert choose_prompt(settings, discovery, scope) == expected
    pending = begin(discovery, PUBLIC, scope, REDIRECT, settings)
    assert authorization_params(pending).get("prompt") == expected


@pytest.mark.parametrize(
    ("server", "openid"),
    [
        ({}, False),
        ({"userinfo_endpoint": f"{ISSUER}/userinfo"}, True),
        ({"id_token_signing_alg_values_supported": ["RS256"]}, True),
        ({"id_token_signing_alg_values_supported": []}, False),
    ],
)
def test_an_openid_provider_is_known_by_its_metadata(server, openid):
    assert make_discovery(**server).openid_provider is openid


def test_an_openid_provider_is_known_by_where_its_metadata_was_found():
    oidc_only = FakeNet(
        {
            ("GET", PRM_PATH): json_response(prm_document()),
            ("GET", OIDC_META): json_response(as_document()),
        }
    )
    found = oidc_only.run(discover(SERVER, None))
    assert found.openid_configuration is True
    assert found.openid_provider is True
    oauth = happy_net().run(discover(SERVER, None))
    assert oauth.openid_configuration is False
    assert oauth.openid_provider is False
    listed = happy_net(**{AS_META: json_response(as_document(userinfo_endpoint=f"{ISSUER}/me"))})
    assert listed.run(discover(SERVER, None)).openid_provider is True


def test_an_openid_provider_gets_consent_with_offline_access_in_a_whole_sign_in():
    """scope chosen as usual (offline_access added because the server lists it),
    then prompt=consent because the server is an OpenID provider."""
    net = FakeNet(
        {
            ("GET", PRM_PATH): json_response(prm_document(scopes_supported=["read"])),
            ("GET", OIDC_META): json_response(as_document()),
        }
    )
    discovery = net.run(discover(SERVER, None))
    scope = choose_scope(None, None, discovery)
    assert scope == "read offline_access"
    params = authorization_params(begin(discovery, PUBLIC, scope, REDIRECT))
    assert params["prompt"] == "consent"
    assert params["scope"] == "read offline_access"


@pytest.mark.parametrize(
    ("configured", "sent"),
    [
        (None, SERVER),
        (True, SERVER),
        (False, None),
        ("https://graph.example.com", "https://graph.example.com"),
    ],
)
def test_the_resource_parameter_everywhere(configured, sent):
    settings = OAuthSettings(resource=configured)
    assert effective_resource(settings, SERVER) == sent
    pending = begin(make_discovery(), PUBLIC, "read", REDIRECT, settings)
    assert pending.resource == sent
    assert authorization_params(pending).get("resource") == sent
    net = token_net()
    net.run(exchange(pending, pending.accept(callback(pending))))
    form = net.only("POST", TOKEN).form
    assert form is not None
    assert form.get("resource") == sent
    tokens = TokenSet(access_token="a", refresh_token=REFRESH, obtained_at=0)
    net = token_net()
    net.run(refresh_grant(tokens, PUBLIC, TOKEN, effective_resource(settings, SERVER)))
    form = net.only("POST", TOKEN).form
    assert form is not None
    assert form.get("resource") == sent


def test_no_settings_send_the_servers_resource():
    assert effective_resource(None, SERVER) == SERVER
    assert authorization_params(make_pending())["resource"] == SERVER


def test_authorize_params_are_added_to_the_authorization_request():
    settings = OAuthSettings(authorize_params={"audience": "https://api.example.com", "x": "1 2"})
    pending = begin(make_discovery(), PUBLIC, "read", REDIRECT, settings)
    params = authorization_params(pending)
    assert params["audience"] == "https://api.example.com"
    assert params["x"] == "1 2"
    assert params["client_id"] == PUBLIC.client_id
    assert params["state"] == pending.state
    assert params["scope"] == "read"


def test_authorize_params_never_replace_what_mcpd_sends():
    """config.py refuses these names; should one get through, mcpd's own wins."""
    own = {"state": "forged", "client_id": "other", "scope": "admin", "resource": "x"}
    settings = OAuthSettings(authorize_params=own)
    pending = begin(make_discovery(), PUBLIC, "read", REDIRECT, settings)
    params = authorization_params(pending)
    assert params["state"] == pending.state
    assert params["client_id"] == PUBLIC.client_id
    assert params["scope"] == "read"
    assert params["resource"] == SERVER


@pytest.mark.parametrize(("client_issuer", "revoked"), [(ISSUER, True), (AS2, False)])
def test_logout_revokes_only_with_the_client_of_the_tokens_server(
    monkeypatch, client_issuer, revoked
):
    """A client registered at the resource's new authorization server is never
    sent to the old one's revocation endpoint with the old server's tokens."""
    from mcpd.oauth import manager as manager_module

    asked: list[HttpRequest] = []

    async def drive(step: Step[Any], reach: Any) -> Any:
        net = FakeNet({("POST", REVOKE): HttpResponse(200, {}, b"")})
        result = net.run(step)
        asked.extend(net.requests)
        return result

    monkeypatch.setattr(manager_module, "drive", drive)
    client = confidential("client_secret_basic")
    client.issuer = client_issuer

    class Credentials:
        record: CredentialRecord | None = revocation_record(client)

        async def replace(self, record: CredentialRecord) -> None:
            self.record = record

    class Runtime:
        name = "s"
        credentials = Credentials()

        def reach(self) -> None:
            return None

        def logged_out(self) -> None:
            pass

    runtime = Runtime()
    manager = manager_module.AuthManager(0)
    assert anyio.run(manager.logout, runtime, False) is revoked
    assert bool(asked) is revoked
    for request in asked:
        assert request.url == REVOKE
        assert request.form is not None
        assert request.form["client_id"] == client.client_id
    kept = runtime.credentials.record
    assert kept is not None
    assert kept.tokens is None  # forgotten either way
