"""Client credentials for machines (SEP-1046), sans-IO: the token request with
each client authentication, the JWT assertion (checked with the public key),
the reuse of a former request's authorization server, refusals, the key file
rules, and the configuration as it is read.

Every step runs against `Net`, which answers from canned responses and
records each request; every expected error is checked to carry none of the
test's secrets.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jwt
import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from mcpd.config import OAuthSettings, parse
from mcpd.oauth import machine
from mcpd.oauth.assertion import ASSERTION_LIFETIME_SECONDS, load_private_key, signing_algorithm
from mcpd.oauth.discovery import discover
from mcpd.oauth.flow import ServerRefused
from mcpd.oauth.machine import JWT_BEARER, KeyFileError, Unacceptable, obtain
from mcpd.oauth.messages import HttpRequest, HttpResponse, OAuthError, Step
from mcpd.oauth.model import CredentialRecord, TokenSet
from mcpd.oauth.refresh import refresh_at

SERVER = "https://mcp.example.com/mcp"
PRM = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
ISSUER = "https://auth.example.com"
AS_META = "https://auth.example.com/.well-known/oauth-authorization-server"
TOKEN = "https://auth.example.com/token"
CLIENT_ID = "svc-reporting"
SECRET = "cc-SECRET-5b1e0f9a"
ACCESS = "access-SECRET-a41c77"
NOW = 1_800_000_000.0
PATH = Path("/home/user/.config/mcpd/config.toml")


def json_response(data: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(status, {"content-type": "application/json"}, msgspec.json.encode(data))


def prm(scopes: list[str] | None = None) -> HttpResponse:
    document: dict[str, Any] = {"resource": SERVER, "authorization_servers": [ISSUER]}
    if scopes is not None:
        document["scopes_supported"] = scopes
    return json_response(document)


def as_metadata(**fields: Any) -> HttpResponse:
    """A client-credentials-only authorization server: no authorization
    endpoint, no PKCE (RFC 8414 allows both to be absent then)."""
    document = {
        "issuer": ISSUER,
        "token_endpoint": TOKEN,
        "grant_types_supported": ["client_credentials"],
        **fields,
    }
    return json_response({k: v for k, v in document.items() if v is not None})


def issued(request: HttpRequest) -> HttpResponse:
    return json_response({"access_token": ACCESS, "token_type": "Bearer", "expires_in": 600})


class Net:
    """Canned answers by (method, url); 404 otherwise; every request recorded."""

    def __init__(self, responses: dict[tuple[str, str], Any]) -> None:
        self.responses = responses
        self.requests: list[HttpRequest] = []

    def run(self, step: Step[Any]) -> Any:
        try:
            request = next(step)
            while True:
                self.requests.append(request)
                assert len(self.requests) < 20
                answer = self.responses.get((request.method, request.url))
                if answer is None:
                    answer = HttpResponse(404, {}, b"")
                elif callable(answer):
                    answer = answer(request)
                request = step.send(answer)
        except StopIteration as done:
            return done.value

    @property
    def token_requests(self) -> list[HttpRequest]:
        return [r for r in self.requests if r.method == "POST"]


def server(metadata: HttpResponse, token: Any = issued, scopes: list[str] | None = None) -> Net:
    return Net({("GET", PRM): prm(scopes), ("GET", AS_META): metadata, ("POST", TOKEN): token})


def settings(**fields: Any) -> OAuthSettings:
    return OAuthSettings(grant="client_credentials", client_id=CLIENT_ID, **fields)


def run_obtain(
    net: Net,
    oauth: OAuthSettings,
    key: Any = None,
    stored: CredentialRecord | None = None,
    *,
    rediscover: bool = False,
) -> CredentialRecord:
    step = obtain(
        oauth,
        key,
        server="svc",
        url=SERVER,
        challenge=None,
        stored=stored,
        rediscover=rediscover,
        now=NOW,
    )
    record: CredentialRecord = net.run(step)
    return record


def refused(error: type[Exception], run: Any) -> str:
    with pytest.raises(error) as caught:
        run()
    message = str(caught.value)
    for secret in (SECRET, ACCESS):
        assert secret not in message
    return message


def write_key(path: Path, key: Any, mode: int = 0o600, password: bytes | None = None) -> str:
    encryption: Any = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    path.write_bytes(pem)
    path.chmod(mode)
    return str(path)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# --- The token request, with a client secret ------------------------------------------------


def test_client_secret_basic_when_the_server_lists_it():
    net = server(as_metadata(token_endpoint_auth_methods_supported=["client_secret_basic"]))
    record = run_obtain(net, settings(client_secret=SECRET))
    # Discovery as for a sign-in, then one token request: no browser, no callback.
    assert [(r.method, r.url) for r in net.requests] == [
        ("GET", PRM),
        ("GET", AS_META),
        ("POST", TOKEN),
    ]
    (request,) = net.token_requests
    assert request.form is not None
    assert request.form["grant_type"] == "client_credentials"
    assert request.form["resource"] == SERVER
    assert "client_secret" not in request.form
    assert "code_verifier" not in request.form
    scheme, _, encoded = request.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    user, _, password = base64.b64decode(encoded).decode().partition(":")
    assert (unquote(user), unquote(password)) == (CLIENT_ID, SECRET)
    assert record.tokens is not None
    assert record.tokens.access_token == ACCESS
    assert record.tokens.refresh_token is None
    assert record.tokens.expires_at == pytest.approx(record.tokens.obtained_at + 600)
    assert record.client is not None
    assert record.client.token_endpoint_auth_method == "client_secret_basic"
    assert record.client.issuer == ISSUER
    assert record.authorization is not None
    assert (record.authorization.token_endpoint, record.authorization.resource) == (TOKEN, SERVER)
    assert record.bound_client() is record.client
    assert record.last_refresh_at is None  # a first token, not a renewal


def test_client_secret_post_when_the_server_lists_it_first():
    methods = ["client_secret_post", "client_secret_basic"]
    net = server(as_metadata(token_endpoint_auth_methods_supported=methods))
    run_obtain(net, settings(client_secret=SECRET))
    (request,) = net.token_requests
    assert request.form is not None
    assert request.form["client_id"] == CLIENT_ID
    assert request.form["client_secret"] == SECRET
    assert "Authorization" not in request.headers


def test_client_secret_basic_when_the_server_lists_no_method():
    net = server(as_metadata())  # RFC 8414: the default is client_secret_basic
    run_obtain(net, settings(client_secret=SECRET))
    assert net.token_requests[0].headers["Authorization"].startswith("Basic ")


def test_a_secret_for_a_server_that_takes_only_assertions_says_what_to_configure():
    net = server(as_metadata(token_endpoint_auth_methods_supported=["private_key_jwt"]))
    message = refused(Unacceptable, lambda: run_obtain(net, settings(client_secret=SECRET)))
    assert "private_key_file" in message
    assert net.token_requests == []


def test_scope_is_the_sign_ins_choice_without_offline_access():
    metadata = as_metadata(scopes_supported=["mcp:read", "offline_access"])
    net = server(metadata, scopes=["mcp:read"])
    record = run_obtain(net, settings(client_secret=SECRET))
    form = net.token_requests[0].form
    assert form is not None
    assert form["scope"] == "mcp:read"  # no refresh token comes of this grant
    assert record.tokens is not None
    assert record.tokens.scope == "mcp:read"
    # Configured, it is sent as configured.
    net = server(metadata, scopes=["mcp:read"])
    run_obtain(net, settings(client_secret=SECRET, scope="mcp:write offline_access"))
    form = net.token_requests[0].form
    assert form is not None
    assert form["scope"] == "mcp:write offline_access"


def test_the_resource_setting_applies():
    net = server(as_metadata())
    run_obtain(net, settings(client_secret=SECRET, resource=False))
    form = net.token_requests[0].form
    assert form is not None
    assert "resource" not in form
    net = server(as_metadata())
    run_obtain(net, settings(client_secret=SECRET, resource="https://api.example.com"))
    form = net.token_requests[0].form
    assert form is not None
    assert form["resource"] == "https://api.example.com"


def test_a_refresh_token_is_not_kept():
    def with_refresh(request: HttpRequest) -> HttpResponse:
        return json_response(
            {"access_token": ACCESS, "token_type": "Bearer", "refresh_token": "r-SECRET-0001"}
        )

    record = run_obtain(server(as_metadata(), with_refresh), settings(client_secret=SECRET))
    assert record.tokens is not None
    assert record.tokens.refresh_token is None


def test_a_refusal_carries_the_servers_error_and_none_of_the_secrets():
    def refuse(request: HttpRequest) -> HttpResponse:
        return json_response(
            {"error": "invalid_client", "error_description": f"client {SECRET} is unknown"}, 401
        )

    net = server(as_metadata(), refuse)
    with pytest.raises(ServerRefused) as caught:
        run_obtain(net, settings(client_secret=SECRET))
    assert caught.value.error == "invalid_client"
    assert caught.value.status == 401
    message = str(caught.value)
    assert "invalid_client" in message
    assert "is unknown" in message
    assert SECRET not in message


# --- The authorization server of a former request --------------------------------------------


def test_a_renewal_reuses_the_recorded_authorization_server_without_discovery():
    oauth = settings(client_secret=SECRET, scope="mcp:read")
    first = run_obtain(server(as_metadata()), oauth)
    net = server(as_metadata())
    second = run_obtain(net, oauth, stored=first)
    assert [(r.method, r.url) for r in net.requests] == [("POST", TOKEN)]
    form = net.token_requests[0].form
    assert form is not None
    assert (form["grant_type"], form["scope"], form["resource"]) == (
        "client_credentials",
        "mcp:read",
        SERVER,
    )
    assert second.last_refresh_at == NOW
    # `mcpctl auth` discovers afresh.
    net = server(as_metadata())
    run_obtain(net, oauth, stored=first, rediscover=True)
    assert [r.url for r in net.requests] == [PRM, AS_META, TOKEN]


def test_a_record_of_another_client_or_kind_is_not_reused(ec_key):
    first = run_obtain(server(as_metadata()), settings(client_secret=SECRET))
    other = OAuthSettings(grant="client_credentials", client_id="another", client_secret=SECRET)
    net = server(as_metadata())
    run_obtain(net, other, stored=first)
    assert net.requests[0].url == PRM
    net = server(as_metadata())
    run_obtain(net, settings(private_key_file="/k.pem"), ec_key, stored=first)
    assert net.requests[0].url == PRM


# --- private_key_jwt: the assertion, checked with the public key --------------------------


@pytest.mark.parametrize(
    ("kind", "algorithm"), [("ec", "ES256"), ("rsa", "RS256"), ("ed25519", "EdDSA")]
)
def test_the_client_assertion_verifies_with_the_public_key(kind, algorithm, ec_key, rsa_key):
    key = {"ec": ec_key, "rsa": rsa_key, "ed25519": ed25519.Ed25519PrivateKey.generate()}[kind]
    metadata = as_metadata(
        token_endpoint_auth_methods_supported=["private_key_jwt"],
        token_endpoint_auth_signing_alg_values_supported=["ES256", "RS256", "EdDSA"],
    )
    net = server(metadata)
    record = run_obtain(net, settings(private_key_file="/k.pem"), key)
    (request,) = net.token_requests
    form = request.form
    assert form is not None
    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == JWT_BEARER
    assert "client_secret" not in form
    assert "Authorization" not in request.headers
    assertion = form["client_assertion"]
    assert jwt.get_unverified_header(assertion)["alg"] == algorithm
    claims = jwt.decode(
        assertion,
        key.public_key(),
        algorithms=[algorithm],
        audience=ISSUER,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == ISSUER
    assert claims["iat"] == int(NOW)
    assert claims["exp"] - claims["iat"] == ASSERTION_LIFETIME_SECONDS
    assert len(claims["jti"]) >= 32
    assert record.client is not None
    assert record.client.token_endpoint_auth_method == "private_key_jwt"
    assert record.client.assertion_algorithm == algorithm
    assert record.client.client_secret is None


def test_every_assertion_is_new(ec_key):
    oauth = settings(private_key_file="/k.pem")
    net = server(as_metadata())
    first = run_obtain(net, oauth, ec_key)
    run_obtain(net, oauth, ec_key, stored=first)
    assertions = [r.form["client_assertion"] for r in net.token_requests if r.form]
    jtis = {jwt.decode(a, options={"verify_signature": False})["jti"] for a in assertions}
    assert len(jtis) == 2


def test_the_algorithm_follows_the_servers_list(rsa_key, ec_key):
    assert signing_algorithm(rsa_key, None) == "RS256"
    assert signing_algorithm(rsa_key, ["PS256", "ES256"]) == "PS256"
    assert signing_algorithm(ec_key, ["RS256", "ES256"]) == "ES256"
    assert signing_algorithm(ec.generate_private_key(ec.SECP384R1()), None) == "ES384"
    message = refused(Unacceptable, lambda: signing_algorithm(ec_key, ["RS256"]))
    assert "ES256" in message
    assert "RS256" in message
    # A renewal signs as the first request did.
    metadata = as_metadata(token_endpoint_auth_signing_alg_values_supported=["PS256"])
    oauth = settings(private_key_file="/k.pem")
    first = run_obtain(server(metadata), oauth, rsa_key)
    net = server(metadata)
    run_obtain(net, oauth, rsa_key, stored=first)
    form = net.token_requests[0].form
    assert form is not None
    header = jwt.get_unverified_header(form["client_assertion"])
    assert header["alg"] == "PS256"


def test_a_key_for_a_server_that_takes_no_assertions_is_refused(ec_key):
    metadata = as_metadata(token_endpoint_auth_methods_supported=["client_secret_basic"])
    net = server(metadata)
    message = refused(
        Unacceptable, lambda: run_obtain(net, settings(private_key_file="/k.pem"), ec_key)
    )
    assert "private_key_jwt" in message
    assert "client_secret" in message


# --- Discovery for machines -------------------------------------------------------------------


def test_discovery_needs_pkce_and_an_authorization_endpoint_for_a_sign_in_only():
    net = server(as_metadata())
    discovery = net.run(discover(SERVER, None, interactive=False))
    assert discovery.server.token_endpoint == TOKEN
    assert discovery.server.authorization_endpoint == ""
    with pytest.raises(OAuthError, match="PKCE"):
        server(as_metadata()).run(discover(SERVER, None))
    with_pkce = as_metadata(code_challenge_methods_supported=["S256"])
    with pytest.raises(OAuthError, match="authorization_endpoint"):
        server(with_pkce).run(discover(SERVER, None))


# --- The schedule -------------------------------------------------------------------------


def test_tokens_without_a_refresh_token_are_renewed_at_the_refresh_point():
    tokens = TokenSet(access_token="a", obtained_at=1000.0, expires_at=1100.0)
    assert refresh_at(tokens, lambda: 0.0) is None  # a user's: nothing to refresh with
    assert refresh_at(tokens, lambda: 0.0, renewable=True) == pytest.approx(1070.0)
    assert refresh_at(tokens, lambda: 1.0, renewable=True) == pytest.approx(1080.0)
    forever = TokenSet(access_token="a", obtained_at=1000.0)
    assert refresh_at(forever, renewable=True) is None  # renewed when refused


# --- The key file -------------------------------------------------------------------------


def test_a_key_others_can_read_is_refused_with_the_fix(tmp_path, ec_key):
    path = write_key(tmp_path / "key.pem", ec_key, mode=0o640)
    message = refused(KeyFileError, lambda: load_private_key(path))
    assert f"chmod 600 {path}" in message
    os.chmod(path, 0o600)
    assert isinstance(load_private_key(path), ec.EllipticCurvePrivateKey)
    os.chmod(path, 0o400)
    load_private_key(path)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.write_text("not a key\n"), "not a PEM private key"),
        (
            lambda p: write_key(p, ec.generate_private_key(ec.SECP256R1()), password=b"pw"),
            "passphrase",
        ),
        (
            lambda p: write_key(p, rsa.generate_private_key(public_exponent=65537, key_size=1024)),
            "1024-bit",
        ),
        (lambda p: write_key(p, ec.generate_private_key(ec.SECP256K1())), "secp256k1"),
        (lambda p: None, "no file"),
    ],
)
def test_unusable_keys_are_refused_saying_why(tmp_path, make, expected):
    path = tmp_path / "key.pem"
    make(path)
    if path.exists():
        path.chmod(0o600)
    message = refused(KeyFileError, lambda: load_private_key(str(path)))
    assert expected in message
    assert "BEGIN" not in message.replace("-----BEGIN PRIVATE KEY-----", "")


# --- The configuration ------------------------------------------------------------------------


def entry_of(oauth: str, env: dict[str, str] | None = None) -> Any:
    text = f'[servers.svc]\nurl = "{SERVER}"\noauth = {{ {oauth} }}\n'
    return parse(text, PATH, env or {}).servers["svc"]


def test_the_client_secret_form_loads_with_env_expansion():
    entry = entry_of(
        f'grant = "client_credentials", client_id = "{CLIENT_ID}", client_secret = "{{env:S}}"',
        {"S": SECRET},
    )
    assert entry.error is None
    oauth = entry.config.oauth
    assert (oauth.grant, oauth.client_id, oauth.client_secret) == (
        "client_credentials",
        CLIENT_ID,
        SECRET,
    )
    assert machine.is_machine(oauth)
    assert not machine.is_machine(OAuthSettings(client_id="x"))


def test_the_private_key_form_loads(tmp_path, ec_key, monkeypatch):
    path = write_key(tmp_path / "key.pem", ec_key)
    entry = entry_of(f'grant = "client_credentials", client_id = "c", private_key_file = "{path}"')
    assert entry.error is None
    assert entry.config.oauth.private_key_file == path
    monkeypatch.setenv("HOME", str(tmp_path))
    entry = entry_of(
        'grant = "client_credentials", client_id = "c", private_key_file = "~/key.pem"'
    )
    assert entry.error is None
    assert entry.config.oauth.private_key_file == path


@pytest.mark.parametrize(
    ("oauth", "expected"),
    [
        ('grant = "password", client_id = "c"', "oauth.grant: 'password' is not a grant"),
        (
            f'grant = "client_credentials", client_secret = "{SECRET}"',
            "oauth.client_id is required",
        ),
        ('grant = "client_credentials", client_id = "c"', "oauth.client_secret or oauth.private_"),
        (
            f'grant = "client_credentials", client_id = "c", client_secret = "{SECRET}", '
            'private_key_file = "/k.pem"',
            "both set",
        ),
        ('client_id = "c", private_key_file = "/k.pem"', 'with grant = "client_credentials" only'),
        (
            f'grant = "client_credentials", client_id = "c", client_secret = "{SECRET}", '
            'redirect_uri = "http://127.0.0.1:9/cb"',
            "oauth.redirect_uri has no use",
        ),
        (
            'grant = "client_credentials", client_id = "c", private_key_file = "key.pem"',
            "not an absolute path",
        ),
        (
            'grant = "client_credentials", client_id = "c", private_key_file = "/nonexistent/k"',
            "oauth.private_key_file: there is no file at /nonexistent/k",
        ),
    ],
)
def test_misconfigurations_fail_that_server_saying_which_key(oauth, expected):
    entry = entry_of(oauth)
    assert entry.config is None
    assert expected in entry.error
    assert entry.error.startswith("server 'svc': ")
    assert SECRET not in entry.error


def test_a_key_others_can_read_fails_the_server_at_load(tmp_path, ec_key):
    path = write_key(tmp_path / "key.pem", ec_key, mode=0o644)
    entry = entry_of(f'grant = "client_credentials", client_id = "c", private_key_file = "{path}"')
    assert entry.config is None
    assert re.search(rf"chmod 600 {re.escape(path)}$", entry.error)


def test_the_readme_example_loads(tmp_path, ec_key, monkeypatch):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.DOTALL) if "client_cred" in b]
    assert blocks, "README.md has no example of client credentials"
    monkeypatch.setenv("HOME", str(tmp_path))
    for found in re.findall(r'private_key_file = "~/([^"]+)"', blocks[0]):
        (tmp_path / found).parent.mkdir(parents=True, exist_ok=True)
        write_key(tmp_path / found, ec_key)
    env = {var: SECRET for var in re.findall(r"\{env:(\w+)\}", blocks[0])}
    config = parse(blocks[0], PATH, env)
    assert config.servers
    for entry in config.servers.values():
        assert entry.error is None, entry.error
        assert machine.is_machine(entry.config.oauth)
