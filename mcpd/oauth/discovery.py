"""Finding the authorization server of an MCP server, sans-IO.

The order is the MCP authorization specification's (2025-11-25):

1. Protected resource metadata (RFC 9728): the `resource_metadata` URL of the
   401 challenge; else the well-known URL with the server's path inserted;
   else the one at the root. Its `resource` must be the server (same origin,
   and a path prefix of the server's URL).
2. Authorization server metadata for its first `authorization_servers` entry,
   path-aware: RFC 8414 with the path inserted, OpenID Connect with the path
   inserted, OpenID Connect with the path appended (for an issuer without a
   path: RFC 8414, then OpenID Connect). Its `issuer` must be the one asked for.
3. With no resource metadata at all (the 2025-03-26 revision): RFC 8414
   metadata at the MCP server's origin (its issuer must be of that origin),
   else the default endpoints `/authorize`, `/token` and `/register` there.

The authorization server must support PKCE with S256, and have an
authorization endpoint, for a sign-in; a machine's client credentials
(`interactive=False`, mcpd/oauth/machine.py) need neither.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

from ..urls import origin_of
from .messages import HttpRequest, HttpResponse, OAuthError, Step, check_endpoint

ACCEPT_JSON = {"Accept": "application/json"}
PRM_SUFFIX = "/.well-known/oauth-protected-resource"


class ResourceMetadata(msgspec.Struct, kw_only=True):
    resource: str | None = None
    authorization_servers: list[str] = []
    scopes_supported: list[str] | None = None


class ServerMetadata(msgspec.Struct, kw_only=True, omit_defaults=True):
    issuer: str
    authorization_endpoint: str = ""  # none: a server for client credentials only
    token_endpoint: str
    registration_endpoint: str | None = None
    revocation_endpoint: str | None = None
    # RFC 8628: where a device sign-in starts (oauth/device.py).
    device_authorization_endpoint: str | None = None
    grant_types_supported: list[str] | None = None
    scopes_supported: list[str] | None = None
    code_challenge_methods_supported: list[str] | None = None
    token_endpoint_auth_methods_supported: list[str] | None = None
    token_endpoint_auth_signing_alg_values_supported: list[str] | None = None
    client_id_metadata_document_supported: bool = False
    authorization_response_iss_parameter_supported: bool = False
    # OpenID Connect Discovery: what marks an OpenID provider.
    userinfo_endpoint: str | None = None
    id_token_signing_alg_values_supported: list[str] | None = None


DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def offers_device_sign_in(server: ServerMetadata) -> bool:
    """Whether a device sign-in (RFC 8628) can start there: it lists a
    `device_authorization_endpoint`."""
    return bool(server.device_authorization_endpoint)


def offers_device_grant(server: ServerMetadata) -> bool:
    """Whether a client registered there should ask for the device grant too: the
    server lists it among its `grant_types_supported`, or has the endpoint."""
    return DEVICE_CODE_GRANT in (server.grant_types_supported or ()) or offers_device_sign_in(
        server
    )


@dataclass(frozen=True)
class Challenge:
    """A `WWW-Authenticate: Bearer ...` challenge's parameters."""

    resource_metadata: str | None = None
    scope: str | None = None
    error: str | None = None
    error_description: str | None = None


@dataclass(frozen=True)
class Discovery:
    resource: str  # the RFC 8707 resource indicator for this server
    server: ServerMetadata
    scopes_supported: list[str] | None  # from the resource metadata
    from_metadata: bool  # False: the 2025-03-26 default endpoints
    # The server metadata came from a /.well-known/openid-configuration URL.
    openid_configuration: bool = False

    @property
    def openid_provider(self) -> bool:
        """Whether the authorization server is an OpenID provider: its metadata was
        found at an OpenID Connect Discovery URL, or lists `userinfo_endpoint` or
        `id_token_signing_alg_values_supported` (which OpenID Connect Discovery
        requires of every provider). `flow.choose_prompt` asks such a server for
        consent along with offline_access."""
        server = self.server
        return bool(
            self.openid_configuration
            or server.userinfo_endpoint
            or server.id_token_signing_alg_values_supported
        )


# RFC 7235: a list of challenges, each a scheme with a token68 or parameters.
_TCHARS = r"[A-Za-z0-9_!#$%&'*+.^`|~-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PARAM_AT = re.compile(rf'({_TCHARS})[ \t]*=[ \t]*({_QUOTED}|[^\s,"]*)[ \t]*(?:,|$)')
_SCHEME_AT = re.compile(rf"({_TCHARS})(?:[ \t]+[A-Za-z0-9._~+/-]+=*[ \t]*(?=,|$))?[ \t]*,?")
_SEPARATORS = re.compile(r"[\s,]*")


def parse_challenge(header: str) -> Challenge | None:
    """The Bearer challenge of a WWW-Authenticate header, if there is one."""
    challenges: list[tuple[str, dict[str, str]]] = []
    position = 0
    while True:
        separators = _SEPARATORS.match(header, position)
        position = separators.end() if separators else position
        if position >= len(header):
            break
        param = _PARAM_AT.match(header, position)
        if param is not None and challenges:
            name, raw = param.groups()
            value = raw[1:-1] if raw.startswith('"') else raw
            challenges[-1][1].setdefault(name.lower(), re.sub(r"\\(.)", r"\1", value))
            position = param.end()
            continue
        scheme = _SCHEME_AT.match(header, position)
        if scheme is None:
            break
        challenges.append((scheme.group(1).lower(), {}))
        position = scheme.end()
    params = next((p for name, p in challenges if name == "bearer"), None)
    if params is None:
        return None
    return Challenge(
        resource_metadata=params.get("resource_metadata"),
        scope=params.get("scope") or None,
        error=params.get("error"),
        error_description=params.get("error_description"),
    )


def canonical_resource(url: str) -> str:
    """The server's URL as a resource indicator: lower-case scheme and host, no fragment."""
    parts = urlsplit(url)
    netloc = parts.netloc.lower()
    return urlunsplit((parts.scheme.lower(), netloc, parts.path, parts.query, ""))


def resource_metadata_urls(server_url: str, challenge: Challenge | None) -> list[str]:
    parts = urlsplit(server_url)
    root = f"{parts.scheme}://{parts.netloc}"
    urls = []
    if challenge is not None and challenge.resource_metadata:
        urls.append(challenge.resource_metadata)
    path = parts.path.rstrip("/")
    if path:
        urls.append(f"{root}{PRM_SUFFIX}{path}")
    urls.append(f"{root}{PRM_SUFFIX}")
    return list(dict.fromkeys(urls))


def server_metadata_urls(issuer: str) -> list[str]:
    parts = urlsplit(issuer)
    root = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    if not path:
        return [
            f"{root}/.well-known/oauth-authorization-server",
            f"{root}/.well-known/openid-configuration",
        ]
    return [
        f"{root}/.well-known/oauth-authorization-server{path}",
        f"{root}/.well-known/openid-configuration{path}",
        f"{root}{path}/.well-known/openid-configuration",
    ]


def resource_matches(resource: str, server_url: str) -> bool:
    """RFC 9728: the metadata must be about this server (or a prefix of its URL)."""
    if origin_of(resource) != origin_of(server_url):
        return False
    wanted = urlsplit(server_url).path.rstrip("/") + "/"
    offered = urlsplit(resource).path.rstrip("/") + "/"
    return wanted.startswith(offered)


def _decode(response: HttpResponse, kind: type[Any], what: str, url: str) -> Any:
    data = response.json()
    if not isinstance(data, dict):
        raise OAuthError(f"the {what} at {url} is not a JSON object")
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        raise OAuthError(f"the {what} at {url} is invalid: {exc}") from None


def discover(
    server_url: str, challenge: Challenge | None, *, interactive: bool = True
) -> Step[Discovery]:
    resource_metadata: ResourceMetadata | None = None
    for url in resource_metadata_urls(server_url, challenge):
        check_endpoint(url, "resource metadata URL")
        response = yield HttpRequest("GET", url, ACCEPT_JSON)
        if response.status != 200:
            continue
        resource_metadata = _decode(response, ResourceMetadata, "resource metadata", url)
        break
    if resource_metadata is not None:
        resource = resource_metadata.resource or canonical_resource(server_url)
        if not resource_matches(resource, server_url):
            raise OAuthError(
                f"the server's resource metadata describes {resource!r}, not {server_url!r}; "
                "refusing to authorize for another resource"
            )
        if not resource_metadata.authorization_servers:
            raise OAuthError("the server's resource metadata names no authorization server")
        issuer = resource_metadata.authorization_servers[0]
        candidates = server_metadata_urls(issuer)
    else:
        resource = canonical_resource(server_url)
        parts = urlsplit(server_url)
        issuer = f"{parts.scheme}://{parts.netloc}"
        candidates = [f"{issuer}/.well-known/oauth-authorization-server"]
    check_endpoint(issuer, "authorization server")

    server: ServerMetadata | None = None
    openid_configuration = False
    for url in candidates:
        response = yield HttpRequest("GET", url, ACCEPT_JSON)
        if response.status != 200:
            continue
        server = _decode(response, ServerMetadata, "authorization server metadata", url)
        # Found through the resource metadata, the issuer must be the one named
        # there (RFC 8414). Found at the MCP server's origin (2025-03-26), it
        # must at least live there.
        expected = resource_metadata is not None
        if (expected and server.issuer.rstrip("/") != issuer.rstrip("/")) or (
            not expected and origin_of(server.issuer) != origin_of(server_url)
        ):
            raise OAuthError(
                f"the authorization server metadata at {url} is for issuer {server.issuer!r}, "
                f"not {issuer!r}; refusing it"
            )
        openid_configuration = "/.well-known/openid-configuration" in url
        break
    from_metadata = server is not None
    if server is None:
        if resource_metadata is not None:
            raise OAuthError(
                f"found no authorization server metadata for {issuer} (tried "
                + ", ".join(candidates)
                + ")"
            )
        server = ServerMetadata(
            issuer=issuer,
            authorization_endpoint=f"{issuer}/authorize",
            token_endpoint=f"{issuer}/token",
            registration_endpoint=f"{issuer}/register",
        )
    elif interactive and "S256" not in (server.code_challenge_methods_supported or []):
        raise OAuthError(
            f"the authorization server {server.issuer} does not advertise PKCE with S256 "
            "(code_challenge_methods_supported); mcpd will not authorize without it"
        )
    for endpoint, what in (
        (server.authorization_endpoint, "authorization endpoint"),
        (server.token_endpoint, "token endpoint"),
        (server.registration_endpoint, "registration endpoint"),
        (server.revocation_endpoint, "revocation endpoint"),
    ):
        if endpoint:
            check_endpoint(endpoint, what)
    if interactive and not server.authorization_endpoint:
        raise OAuthError(
            f"the authorization server {server.issuer} has no authorization_endpoint: "
            "no one can sign in there in a browser"
        )
    scopes = resource_metadata.scopes_supported if resource_metadata else None
    return Discovery(resource, server, scopes, from_metadata, openid_configuration)
