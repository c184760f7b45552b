"""The authorization code flow with PKCE, sans-IO: from discovery to tokens.

    identity  = choose_client(settings, discovery, stored, redirect_uri)
    client    = yield from register(...)    # when identity says so
    pending   = begin(discovery, client, scope, redirect_uri, settings)
    ...the user's browser visits pending.url; the callback arrives...
    code      = pending.accept(callback_query)
    tokens    = yield from exchange(pending, code)

Client identity, in this order: a configured client; a Client ID Metadata
Document URL when the server supports those; dynamic registration (RFC 7591,
as a `native` application: mcpd's redirect is on loopback; with the device
grant too where the server offers it, oauth/device.py), reused while the
redirect URI stays the same (by a device sign-in, whatever it is). With none
of these possible the caller reports `needs_client_registration`.

Client credentials are bound to the authorization server that issued them
(MCP 2026-07-28, "Authorization Server Binding"): every registration records
its issuer, a stored one is reused only at that same issuer (a resource whose
metadata names a new authorization server gets a new registration), and a
refresh or a revocation uses the stored client only at the authorization
server the tokens came from (`CredentialRecord.bound_client`).

The authorization request carries, besides PKCE, `state` and the scope: the
RFC 8707 `resource` (`oauth.resource`: the server's own, left out, or
another), the OpenID Connect `prompt` (`choose_prompt`) and the configured
`oauth.authorize_params`. The callback's RFC 9207 `iss` is compared with the
recorded issuer as an exact string, before anything else of the response
(an `error` included) is believed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from ..config import OAuthSettings
from ..urls import is_loopback, visible_ascii
from .discovery import DEVICE_CODE_GRANT, Challenge, Discovery, offers_device_grant
from .messages import HttpRequest, HttpResponse, OAuthError, Step
from .model import ClientRegistration, TokenSet

CLIENT_NAME = "mcpd"
STATE_LIFETIME_SECONDS = 600.0
OFFLINE_ACCESS = "offline_access"
# OpenID Connect Core 1.0, section 11: a provider ignores offline_access unless
# the request also asks for consent.
OFFLINE_PROMPT = "consent"


class ClientRegistrationRequired(OAuthError):
    """No client identity can be had; the message names the setting to add."""


def choose_scope(
    settings: OAuthSettings | None, challenge: Challenge | None, discovery: Discovery
) -> str | None:
    """Configured scope, else the challenge's, else the resource's scopes_supported;
    plus offline_access exactly when the authorization server lists it."""
    if settings is not None and settings.scope:
        scopes = settings.scope.split()
    elif challenge is not None and challenge.scope:
        scopes = challenge.scope.split()
    elif discovery.scopes_supported:
        scopes = list(discovery.scopes_supported)
    else:
        scopes = []
    offered = discovery.server.scopes_supported or []
    if OFFLINE_ACCESS in offered and OFFLINE_ACCESS not in scopes:
        scopes.append(OFFLINE_ACCESS)
    elif OFFLINE_ACCESS not in offered:
        scopes = [scope for scope in scopes if scope != OFFLINE_ACCESS]
    return " ".join(dict.fromkeys(scopes)) or None


def union_scope(*scopes: str | None) -> str | None:
    merged = [s for scope in scopes if scope for s in scope.split()]
    return " ".join(dict.fromkeys(merged)) or None


def choose_prompt(
    settings: OAuthSettings | None, discovery: Discovery, scope: str | None
) -> str | None:
    """The `prompt` of the authorization request; None: send none.

    A configured `oauth.prompt` is sent as it is (`""`: none). Unset, it is
    `consent` exactly when `offline_access` is asked of an OpenID provider
    (`Discovery.openid_provider`), which per OpenID Connect Core section 11
    would otherwise ignore it and issue no refresh token.
    """
    if settings is not None and settings.prompt is not None:
        return settings.prompt or None
    if OFFLINE_ACCESS in (scope or "").split() and discovery.openid_provider:
        return OFFLINE_PROMPT
    return None


def effective_resource(settings: OAuthSettings | None, resource: str) -> str | None:
    """The RFC 8707 `resource` to send for the server's `resource`: None leaves the
    parameter out (`oauth.resource = false`), a configured URL replaces it."""
    configured = settings.resource if settings is not None else None
    if configured is False:
        return None
    if isinstance(configured, str):
        return configured
    return resource


@dataclass(frozen=True)
class Identity:
    """How to get a client id: use `client` as it is, or register one."""

    client: ClientRegistration | None
    register: bool


def choose_client(
    settings: OAuthSettings | None,
    discovery: Discovery,
    stored: ClientRegistration | None,
    redirect_uri: str | None,
) -> Identity:
    """`redirect_uri` None: a sign-in without a redirect (a device sign-in), for
    which a stored registration serves whatever its redirect URI."""
    server = discovery.server
    if settings is not None and settings.client_id:
        if (
            stored is not None
            and stored.client_id == settings.client_id
            and stored.issuer is not None
            and stored.issuer != server.issuer
        ):
            # Pre-registered credentials belong to one authorization server: the
            # server moved to another one, so this client id is not for it.
            raise ClientRegistrationRequired(
                f"the configured oauth.client_id was used with the authorization server "
                f"{stored.issuer}, but the server's is now {server.issuer}; register a client "
                "there and set its oauth.client_id (and oauth.client_secret) in this server's "
                "config table (or, if the same client id is valid there too, run `mcpctl logout "
                "<server> --forget-client` and sign in again)"
            )
        return Identity(
            ClientRegistration(
                client_id=settings.client_id,
                client_secret=settings.client_secret,
                redirect_uri=redirect_uri,
                token_endpoint_auth_method=_auth_method(server, settings.client_secret),
                issuer=server.issuer,
            ),
            register=False,
        )
    if (
        settings is not None
        and settings.client_metadata_url
        and (server.client_id_metadata_document_supported)
    ):
        return Identity(
            ClientRegistration(
                client_id=settings.client_metadata_url,
                redirect_uri=redirect_uri,
                token_endpoint_auth_method="none",  # noqa: S106 - a method's name
                issuer=server.issuer,
            ),
            register=False,
        )
    if (
        stored is not None
        and stored.issuer == server.issuer
        and redirect_uri in (None, stored.redirect_uri)
        and (
            stored.client_secret_expires_at in (None, 0)
            or stored.client_secret_expires_at > time.time()
        )
    ):
        return Identity(stored, register=False)
    if server.registration_endpoint is None:
        raise ClientRegistrationRequired(
            f"the authorization server {server.issuer} offers no dynamic client registration"
            + (
                " and no Client ID Metadata Document is configured"
                if server.client_id_metadata_document_supported
                else ""
            )
            + "; register a client with it and set oauth.client_id (and oauth.client_secret "
            "if it has one) in this server's config table"
        )
    return Identity(None, register=True)


def _auth_method(server: Any, secret: str | None) -> str:
    """Token endpoint authentication for a client with or without a secret."""
    supported = server.token_endpoint_auth_methods_supported
    if secret is None:
        return "none"
    # The first method the server lists that mcpd can do; Basic when it lists none.
    usable = [m for m in supported or () if m in ("client_secret_basic", "client_secret_post")]
    return usable[0] if usable else "client_secret_basic"


def register(
    discovery: Discovery, redirect_uri: str | None, scope: str | None
) -> Step[ClientRegistration]:
    """Dynamic client registration; without `redirect_uri` (a device sign-in with
    no fixed callback port) the client gets no redirect-based grant."""
    server = discovery.server
    assert server.registration_endpoint is not None
    supported = server.token_endpoint_auth_methods_supported
    # A public client when the server allows one; else the first method it
    # lists that mcpd can perform.
    usable = ("none", "client_secret_basic", "client_secret_post")
    if not supported or "none" in supported:
        method = "none"
    else:
        method = next((m for m in supported if m in usable), "none")
    metadata: dict[str, Any] = {
        "client_name": CLIENT_NAME,
        # OpenID Connect Registration: "native" for a client whose redirect is on
        # loopback, which mcpd's is unless oauth.redirect_uri points elsewhere.
        "application_type": application_type(redirect_uri or ""),
        "redirect_uris": [redirect_uri] if redirect_uri else [],
        "grant_types": ["authorization_code", "refresh_token"]
        if redirect_uri
        else ["refresh_token"],
        "response_types": ["code"] if redirect_uri else [],
        "token_endpoint_auth_method": method,
    }
    if offers_device_grant(server):
        # One client for both kinds of sign-in (oauth/device.py).
        metadata["grant_types"].append(DEVICE_CODE_GRANT)
    # Only scopes the server lists: some (oidc-provider, say) refuse a
    # registration naming any other, such as the resource's own scopes.
    offered = discovery.server.scopes_supported
    registered = [s for s in (scope or "").split() if offered is None or s in offered]
    if registered:
        metadata["scope"] = " ".join(registered)
    response = yield HttpRequest(
        "POST", server.registration_endpoint, {"Accept": "application/json"}, json=metadata
    )
    if response.status not in (200, 201):
        raise OAuthError(
            f"client registration at {server.registration_endpoint} failed: " + error_text(response)
        )
    data = response.json()
    if not isinstance(data, dict) or not isinstance(data.get("client_id"), str):
        raise OAuthError("the client registration response has no client_id")
    secret = data.get("client_secret") if isinstance(data.get("client_secret"), str) else None
    expires = data.get("client_secret_expires_at")
    granted = data.get("token_endpoint_auth_method")
    return ClientRegistration(
        client_id=data["client_id"],
        client_secret=secret,
        client_secret_expires_at=float(expires) if isinstance(expires, int | float) else None,
        redirect_uri=redirect_uri,
        token_endpoint_auth_method=granted
        if isinstance(granted, str)
        else _auth_method(server, secret),
        issuer=server.issuer,
    )


def application_type(redirect_uri: str) -> str:
    """`native` for a loopback (or custom-scheme) redirect URI; `web` for an https
    one elsewhere, which OpenID providers refuse for native clients."""
    parts = urlsplit(redirect_uri)
    remote = parts.scheme == "https" and not is_loopback(parts.hostname or "")
    return "web" if remote else "native"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class ServerRefused(OAuthError):
    """The authorization server said no; `error` is its OAuth error code, if any."""

    def __init__(self, message: str, error: str | None, status: int | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.status = status


@dataclass
class PendingAuthorization:
    """One authorization in progress: what the callback must match."""

    discovery: Discovery
    client: ClientRegistration
    redirect_uri: str
    scope: str | None
    url: str = field(repr=False)  # it carries the state
    state: str = field(repr=False)
    verifier: str = field(repr=False)
    created: float = field(default_factory=time.monotonic)
    used: bool = False
    # The RFC 8707 resource the authorization request carried (None: none); the
    # token request carries the same.
    resource: str | None = field(kw_only=True)

    def expired(self, now: float | None = None) -> bool:
        return (
            now if now is not None else time.monotonic()
        ) - self.created > STATE_LIFETIME_SECONDS

    def matches(self, state: str) -> bool:
        return hmac.compare_digest(self.state.encode(), state.encode())

    def accept(self, query: str) -> str:
        """The authorization code from the callback's query string, checked."""
        params = dict(parse_qsl(query, keep_blank_values=True))
        if self.used:
            raise OAuthError("this authorization was already completed; start a new one")
        if not self.matches(params.get("state", "")):
            raise OAuthError("the callback's state does not match this authorization")
        if self.expired():
            raise OAuthError("the authorization expired (10 minutes); start a new one")
        self.used = True
        # Before anything else of the response is believed, its error included.
        check_issuer(
            params.get("iss"),
            self.discovery.server.issuer,
            self.discovery.server.authorization_response_iss_parameter_supported,
        )
        if "error" in params:
            description = params.get("error_description", "")
            raise ServerRefused(
                f"the authorization server refused: {params['error']}"
                + (f": {description}" if description else ""),
                params["error"],
            )
        code = params.get("code")
        if not code:
            raise OAuthError("the callback carries no authorization code")
        return code


def check_issuer(iss: str | None, issuer: str, advertised: bool) -> None:
    """RFC 9207 as MCP 2026-07-28 has it: a present `iss` must be the recorded
    issuer, compared as an exact string (no case folding, default-port elision,
    trailing slash or percent-decoding); an absent one is refused only where the
    authorization server advertises `authorization_response_iss_parameter_supported`.

        advertised  iss present  ->  compare
        advertised  iss absent   ->  reject
        not         iss present  ->  compare
        not         iss absent   ->  proceed
    """
    if iss is None and not advertised:
        return
    if iss is None:
        raise OAuthError(
            f"the callback carries no issuer (iss), which the authorization server {issuer!r} "
            "promises to send (RFC 9207); refusing it"
        )
    if iss != issuer:
        raise OAuthError(f"the callback's issuer {iss!r} is not {issuer!r} (RFC 9207); refusing it")


def begin(
    discovery: Discovery,
    client: ClientRegistration,
    scope: str | None,
    redirect_uri: str,
    settings: OAuthSettings | None = None,
) -> PendingAuthorization:
    verifier = _b64(secrets.token_bytes(32))
    challenge = _b64(hashlib.sha256(verifier.encode()).digest())
    state = _b64(secrets.token_bytes(32))
    params = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": redirect_uri,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": state,
    }
    resource = effective_resource(settings, discovery.resource)
    if resource is not None:
        params["resource"] = resource
    if scope:
        params["scope"] = scope
    prompt = choose_prompt(settings, discovery, scope)
    if prompt is not None:
        params["prompt"] = prompt
    # Configured extras; config.py refuses the names mcpd sets, and these never
    # replace one of them all the same.
    extra = settings.authorize_params if settings is not None else {}
    params.update({name: value for name, value in extra.items() if name not in params})
    endpoint = discovery.server.authorization_endpoint
    separator = "&" if urlsplit(endpoint).query else "?"
    url = f"{endpoint}{separator}{urlencode(params)}"
    return PendingAuthorization(
        discovery, client, redirect_uri, scope, url, state, verifier, resource=resource
    )


def client_authentication(
    client: ClientRegistration, form: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Headers and form of a token endpoint request, per the client's auth method."""
    headers = {"Accept": "application/json"}
    form = {**form}
    method = client.token_endpoint_auth_method or "none"
    # client_id goes in the form whatever the method: servers that take Basic
    # accept it there, and some require it.
    form["client_id"] = client.client_id
    if client.client_secret is not None and method == "client_secret_basic":
        pair = f"{quote(client.client_id, safe='')}:{quote(client.client_secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    elif client.client_secret is not None and method == "client_secret_post":
        form["client_secret"] = client.client_secret
    return headers, form


def error_text(response: HttpResponse) -> str:
    data = response.json()
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        description = data.get("error_description")
        return str(data["error"]) + (f": {description}" if isinstance(description, str) else "")
    return f"HTTP {response.status}"


def token_request(
    token_endpoint: str, client: ClientRegistration, form: dict[str, str]
) -> Step[TokenSet]:
    headers, body = client_authentication(client, form)
    response = yield HttpRequest("POST", token_endpoint, headers, form=body)
    data = response.json()
    if response.status != 200:
        error = data.get("error") if isinstance(data, dict) else None
        raise ServerRefused(
            f"the token endpoint refused: {error_text(response)}",
            error if isinstance(error, str) else None,
            response.status,
        )
    if not isinstance(data, dict) or not isinstance(data.get("access_token"), str):
        # Some servers answer errors with 200: take their error code all the same.
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, str):
            raise ServerRefused(f"the token endpoint refused: {error_text(response)}", error)
        raise ServerRefused("the token endpoint's answer has no access_token", None)
    if not visible_ascii(data["access_token"]):
        # It could never go into an Authorization header: a refusal, not a retry.
        raise ServerRefused(
            "the token endpoint issued an access token that is not visible ASCII, which "
            "no Authorization header can carry; the authorization server is misconfigured",
            None,
            response.status,
        )
    token_type = data.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise ServerRefused(f"the token endpoint issued a {token_type!r} token, not Bearer", None)
    now = time.time()
    expires_in = data.get("expires_in")
    refresh = data.get("refresh_token")
    scope = data.get("scope")
    return TokenSet(
        access_token=data["access_token"],
        refresh_token=refresh if isinstance(refresh, str) else None,
        expires_at=now + float(expires_in) if isinstance(expires_in, int | float) else None,
        obtained_at=now,
        scope=scope if isinstance(scope, str) else form.get("scope"),
    )


def exchange(pending: PendingAuthorization, code: str) -> Step[TokenSet]:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": pending.redirect_uri,
        "code_verifier": pending.verifier,
    }
    if pending.resource is not None:
        form["resource"] = pending.resource
    tokens = yield from token_request(pending.discovery.server.token_endpoint, pending.client, form)
    if tokens.scope is None and pending.scope:
        tokens.scope = pending.scope
    return tokens


def refresh(
    tokens: TokenSet, client: ClientRegistration, token_endpoint: str, resource: str | None
) -> Step[TokenSet]:
    """The refresh token grant (`resource` None: no resource parameter); a response
    without a refresh token keeps the old one."""
    assert tokens.refresh_token is not None
    form = {
        "grant_type": "refresh_token",
        "refresh_token": tokens.refresh_token,
    }
    if resource is not None:
        form["resource"] = resource
    fresh = yield from token_request(token_endpoint, client, form)
    if fresh.refresh_token is None:
        fresh.refresh_token = tokens.refresh_token
    if fresh.scope is None:
        fresh.scope = tokens.scope
    return fresh
