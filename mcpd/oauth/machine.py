"""Client credentials for machines, sans-IO: the MCP extension
`io.modelcontextprotocol/oauth-client-credentials` (SEP-1046).

A server configured with `oauth = { grant = "client_credentials", ... }` has
no user: the daemon asks the authorization server for tokens with the
client's own credentials, with no browser and no callback.

    key     = load_private_key(settings.private_key_file)   # if configured
    record  = yield from obtain(settings, key, ...)          # discovery + token request

Discovery is the authorization code flow's (protected resource metadata, then
authorization server metadata), minus what only a browser needs (the
authorization endpoint, PKCE). The token request is `grant_type=
client_credentials` with the same `resource` and scope choice as a sign-in
(less `offline_access`: a client credentials grant issues no refresh token,
RFC 6749 4.4.3), and the client authenticates one of two ways:

- a client secret, by the first of `client_secret_basic` and
  `client_secret_post` that the server lists (`token_endpoint_auth_methods_
  supported`; Basic when it lists none, per RFC 8414);
- `private_key_jwt` (RFC 7523 section 2.2): a JWT signed with the configured
  private key, `iss` and `sub` the client id, `aud` the authorization
  server's issuer identifier (as the conformance suite and RFC 7523bis have
  it), a random `jti`, and a short life (`iat`, `exp`). The algorithm follows
  from the key: RS256 (or PS256, where the server only lists that) for RSA,
  ES256/ES384/ES512 for the P-256/P-384/P-521 curves, EdDSA for Ed25519.
  Signing is PyJWT's, over `cryptography`'s keys.

There is no refresh token: a new token is requested the same way before the
old one expires (`MachineCredentials` in mcpd/machine_credentials.py drives
that with the refresh schedule of mcpd/oauth/refresh.py). A re-request reuses
the authorization server and client authentication recorded by the first
(`CredentialRecord.authorization`, `.client`), so it needs neither the MCP
server nor discovery; `mcpctl auth NAME` discovers afresh.

The key file must be the user's own and private (mode 0600 or stricter): one
that group or others can read is refused, at load and at every use.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final

import msgspec

from ..config import OAuthSettings
from .discovery import Challenge, Discovery, discover
from .flow import OFFLINE_ACCESS, ServerRefused, choose_scope, effective_resource, token_request
from .messages import OAuthError, Step
from .model import AuthorizationServer, ClientRegistration, CredentialRecord, TokenSet

AUTHORIZATION_CODE: Final = "authorization_code"
CLIENT_CREDENTIALS: Final = "client_credentials"
GRANTS: Final = (AUTHORIZATION_CODE, CLIENT_CREDENTIALS)
PRIVATE_KEY_JWT: Final = "private_key_jwt"
SECRET_METHODS: Final = ("client_secret_basic", "client_secret_post")
JWT_BEARER: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_MASK: Final = "<redacted>"

if TYPE_CHECKING:
    from .assertion import PrivateKey


class KeyFileError(OAuthError):
    """The configured private key cannot be used; the message says why and the fix."""


class Unacceptable(OAuthError):
    """The authorization server takes no credential of the kind configured: only a
    change of the config helps, not a retry."""


def is_machine(settings: bool | OAuthSettings | None) -> bool:
    """Whether these OAuth settings are a machine's own client credentials."""
    return isinstance(settings, OAuthSettings) and settings.grant == CLIENT_CREDENTIALS


# --- The configuration ------------------------------------------------------------------


def checked_settings(oauth: OAuthSettings) -> OAuthSettings:
    """The grant's settings checked as the config is read (ValueError naming the key
    and the fix, never a secret); the key file's path made absolute."""
    grant = oauth.grant
    if grant not in GRANTS:
        raise ValueError(
            f'oauth.grant: {grant!r} is not a grant mcpd knows; use "{CLIENT_CREDENTIALS}" '
            f'(the client\'s own credentials, no browser) or "{AUTHORIZATION_CODE}" (a '
            "sign-in in the browser, the default)"
        )
    if grant == AUTHORIZATION_CODE:
        if oauth.private_key_file is not None:
            raise ValueError(
                f'oauth.private_key_file is used with grant = "{CLIENT_CREDENTIALS}" only; '
                "remove it, or set the grant"
            )
        return oauth
    where = f'with grant = "{CLIENT_CREDENTIALS}"'
    if not oauth.client_id:
        raise ValueError(
            f"oauth.client_id is required {where}: the id the authorization server gave this client"
        )
    if not oauth.client_secret and oauth.private_key_file is None:
        raise ValueError(
            f"oauth.client_secret or oauth.private_key_file is required {where}: the "
            "client's secret, or the path of the private key whose public key the "
            "authorization server knows"
        )
    if oauth.client_secret and oauth.private_key_file is not None:
        raise ValueError(
            "oauth.client_secret and oauth.private_key_file are both set; the client "
            "authenticates with one of them: remove the other"
        )
    unused = [
        key
        for key, value in (
            ("redirect_uri", oauth.redirect_uri),
            ("client_metadata_url", oauth.client_metadata_url),
            ("prompt", oauth.prompt),
            ("authorize_params", oauth.authorize_params),
        )
        if value
    ]
    if unused:
        raise ValueError(
            f"oauth.{unused[0]} has no use {where} (no browser, no authorization "
            "request); remove it"
        )
    if oauth.private_key_file is None:
        return oauth
    path = os.path.expanduser(oauth.private_key_file)
    if not os.path.isabs(path):
        raise ValueError(
            f"oauth.private_key_file: {oauth.private_key_file} is not an absolute path; "
            "write the whole path (or start it with ~/)"
        )
    try:
        from .assertion import load_private_key  # cryptography: only for such a key

        load_private_key(path)
    except KeyFileError as exc:
        raise ValueError(f"oauth.private_key_file: {exc}") from None
    return msgspec.structs.replace(oauth, private_key_file=path)


# --- The token request --------------------------------------------------------------------


def auth_method(settings: OAuthSettings, issuer: str, supported: list[str] | None) -> str:
    """How the client authenticates at the token endpoint, per what the server lists."""
    listed = ", ".join(supported or ())
    if settings.private_key_file is not None:
        if supported and PRIVATE_KEY_JWT not in supported:
            raise Unacceptable(
                f"the authorization server {issuer} does not accept private_key_jwt (it "
                f"lists {listed}); configure the client's oauth.client_secret instead"
            )
        return PRIVATE_KEY_JWT
    usable = [method for method in supported or () if method in SECRET_METHODS]
    if supported and not usable:
        raise Unacceptable(
            f"the authorization server {issuer} accepts no client secret at its token "
            f"endpoint (it lists {listed})"
            + ("; configure oauth.private_key_file instead" if PRIVATE_KEY_JWT in supported else "")
        )
    return usable[0] if usable else "client_secret_basic"


def machine_scope(
    settings: OAuthSettings, challenge: Challenge | None, discovery: Discovery
) -> str | None:
    """The sign-in's scope choice, less an `offline_access` mcpd added itself."""
    scope = choose_scope(settings, challenge, discovery)
    configured = (settings.scope or "").split()
    kept = [s for s in (scope or "").split() if s != OFFLINE_ACCESS or s in configured]
    return " ".join(kept) or None


def _known(
    settings: OAuthSettings, stored: CredentialRecord | None
) -> tuple[AuthorizationServer, ClientRegistration] | None:
    """The authorization server and client authentication a former request used,
    if they are still this client's (the same id, the same kind of credential)."""
    if stored is None or stored.authorization is None or stored.client is None:
        return None
    client = stored.client
    jwt_now = settings.private_key_file is not None
    if (
        client.client_id != settings.client_id
        or client.issuer != stored.authorization.issuer
        or (client.token_endpoint_auth_method == PRIVATE_KEY_JWT) != jwt_now
        or (not jwt_now and client.token_endpoint_auth_method not in SECRET_METHODS)
    ):
        return None
    return stored.authorization, msgspec.structs.replace(
        client, client_secret=settings.client_secret
    )


def request_token(
    settings: OAuthSettings,
    client: ClientRegistration,
    authorization: AuthorizationServer,
    scope: str | None,
    *,
    key: PrivateKey | None,
    now: float,
) -> Step[TokenSet]:
    """One client credentials token request."""
    form = {"grant_type": CLIENT_CREDENTIALS}
    resource = effective_resource(settings, authorization.resource)
    if resource is not None:
        form["resource"] = resource
    if scope:
        form["scope"] = scope
    sent = [client.client_secret]
    authenticating = client
    if client.token_endpoint_auth_method == PRIVATE_KEY_JWT:
        if key is None:
            raise OAuthError("oauth.private_key_file is needed to sign the client assertion")
        from .assertion import client_assertion, signing_algorithm

        algorithm = client.assertion_algorithm or signing_algorithm(key, None)
        assertion = client_assertion(client.client_id, authorization.issuer, key, algorithm, now)
        form["client_assertion_type"] = JWT_BEARER
        form["client_assertion"] = assertion
        sent.append(assertion)
        # The client is named by the assertion; no secret goes along.
        authenticating = ClientRegistration(
            client_id=client.client_id, token_endpoint_auth_method=PRIVATE_KEY_JWT
        )
    try:
        tokens = yield from token_request(authorization.token_endpoint, authenticating, form)
    except ServerRefused as exc:
        # The server's own description is passed on, with nothing of ours in it.
        message = str(exc)
        for secret in sent:
            if secret:
                message = message.replace(secret, _MASK)
        raise ServerRefused(message, exc.error, exc.status) from None
    tokens.refresh_token = None  # a new token is requested instead (RFC 6749 4.4.3)
    if tokens.scope is None:
        tokens.scope = scope
    return tokens


def obtain(
    settings: OAuthSettings,
    key: PrivateKey | None,
    *,
    server: str,
    url: str,
    challenge: Challenge | None,
    stored: CredentialRecord | None,
    rediscover: bool,
    now: float,
) -> Step[CredentialRecord]:
    """A new token for server `server` at `url`, as the record to store: with the
    authorization server and client authentication of `stored` where they are
    still good (and `rediscover` is not asked), else found afresh."""
    assert settings.client_id is not None
    known = None if rediscover else _known(settings, stored)
    if known is not None:
        authorization, client = known
        previous = stored.tokens.scope if stored is not None and stored.tokens else None
        scope = settings.scope or previous
    else:
        discovery = yield from discover(url, challenge, interactive=False)
        metadata = discovery.server
        method = auth_method(
            settings, metadata.issuer, metadata.token_endpoint_auth_methods_supported
        )
        algorithm = None
        if method == PRIVATE_KEY_JWT:
            if key is None:
                raise OAuthError("oauth.private_key_file is needed to sign the client assertion")
            from .assertion import signing_algorithm

            algorithm = signing_algorithm(
                key, metadata.token_endpoint_auth_signing_alg_values_supported
            )
        authorization = AuthorizationServer(
            issuer=metadata.issuer,
            token_endpoint=metadata.token_endpoint,
            revocation_endpoint=metadata.revocation_endpoint,
            resource=discovery.resource,
        )
        client = ClientRegistration(
            client_id=settings.client_id,
            client_secret=settings.client_secret,
            token_endpoint_auth_method=method,
            issuer=metadata.issuer,
            assertion_algorithm=algorithm,
        )
        scope = machine_scope(settings, challenge, discovery)
    tokens = yield from request_token(settings, client, authorization, scope, key=key, now=now)
    return CredentialRecord(
        server=server,
        url=url,
        tokens=tokens,
        client=client,
        authorization=authorization,
        last_refresh_at=now if known is not None else None,
    )
