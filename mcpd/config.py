"""The configuration file: TOML decoded into msgspec structs.

Decoding happens in two stages so that one bad server entry cannot take the
others down: the file as a whole (syntax, top-level keys) must be valid or the
load fails with file, line and reason; then each ``[servers.NAME]`` table is
expanded (``{env:VAR}``) and validated on its own, and a bad one becomes a
`ServerEntry` carrying the error instead of a config.

Validation is complete here, so that nothing loaded can fail later at the
first request: URLs (`urls.checked_url`: scheme, host, IDNA, port range,
path encoding), header names (RFC 9110 tokens, none that mcpd sets itself)
and values (visible ASCII, spaces and tabs). Errors name the key, never a
header's value.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

from .protocol import DEFAULT_MAX_FRAME_SIZE
from .upstream.toolfilter import check_patterns
from .urls import InvalidUrl, checked_url, is_loopback, public_url

MAX_FRAME_TIMEOUT = 3600.0
SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# RFC 9110: a field name is a token; a value is visible ASCII, spaces and tabs.
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
# Headers mcpd sets itself (or HTTP does): a configured one would break the exchange.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "mcp-session-id",
        "mcp-protocol-version",
    }
)
_ENV_REF = re.compile(r"\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
# oauth.prompt: space-separated values, each of RFC 6749's scope-token characters.
PROMPT_VALUE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
# oauth.authorize_params: names an authorization endpoint could know.
PARAM_NAME = re.compile(r"[A-Za-z0-9_.~:\[\]-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Authorization request parameters mcpd sets itself (or must not send), and what
# to configure instead of each; compared in lower case.
RESERVED_AUTHORIZE_PARAMS: Mapping[str, str] = {
    "response_type": "mcpd always asks for an authorization code; remove it",
    "response_mode": "mcpd reads the code from the redirect's query string; remove it",
    "client_id": "set oauth.client_id instead",
    "client_secret": "set oauth.client_secret instead; it never goes into a URL",
    "redirect_uri": "set oauth.redirect_uri instead",
    "state": "mcpd makes a new state for every sign-in; remove it",
    "code_challenge": "mcpd makes the PKCE challenge for every sign-in; remove it",
    "code_challenge_method": "mcpd always uses S256; remove it",
    "scope": "set oauth.scope instead",
    "resource": "set oauth.resource instead (false leaves it out)",
    "prompt": 'set oauth.prompt instead ("" sends none)',
    "request": "a request object would override what mcpd sends; remove it",
    "request_uri": "a request object would override what mcpd sends; remove it",
}


class ConfigError(Exception):
    """The file cannot be used at all; the message names file, line and reason."""


class OAuthSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    client_id: str | None = None
    client_secret: str | None = None
    # "authorization_code": a user signs in with the browser; "client_credentials":
    # a machine's own credentials, no browser (mcpd/oauth/machine.py).
    grant: str = "authorization_code"
    # client_credentials with private_key_jwt: the PEM private key (mode 0600).
    private_key_file: str | None = None
    scope: str | None = None
    redirect_uri: str | None = None
    client_metadata_url: str | None = None
    # TLS verification of the authorization server when it is on another origin
    # than the MCP server: true, false, or the path of a CA bundle.
    verify: bool | str = True
    # The OpenID Connect `prompt` of the authorization request. Unset: `consent`
    # when offline_access is asked of an OpenID provider (OIDC Core 11); "": none.
    prompt: str | None = None
    # The RFC 8707 `resource` of the authorization, token and refresh requests:
    # unset (or true): the server's; false: left out; a URL: that one instead.
    resource: bool | str | None = None
    # Extra authorization request parameters (`audience`, say).
    authorize_params: dict[str, str] = {}


class ToolFilterSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`tools = { allow = [...], deny = [...] }`: tool names or shell-style
    patterns (upstream/toolfilter.py); allow empty: every tool; deny wins."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    url: str
    enabled: bool = True
    headers: dict[str, str] = {}
    # None: OAuth when the server asks for it; False: never; settings: always.
    oauth: bool | OAuthSettings | None = None
    # "shared": one upstream session for every editor; "per-client": one each.
    session: Literal["shared", "per-client"] = "shared"
    # Seconds to wait for a server's response headers (and for initialize).
    timeout: float = 30.0
    # TLS verification: True, False (internal servers only), or a CA bundle path.
    verify: bool | str = True
    # Whether `mcpctl token NAME` may hand the access token out (to this user only).
    export_token: bool = False
    # Which of the server's tools editors see and may call.
    tools: ToolFilterSettings = ToolFilterSettings()


class DaemonSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # The loopback port of the OAuth callback (0: any free port, picked per flow).
    callback_port: int = 19876
    # When an editor needs a sign-in, open the link in a browser from the daemon
    # itself (its service needs the graphical session's environment for that).
    open_browser: bool = False
    # Client connections served at once; one more is refused, with the reason.
    # The open-file limit may lower it (see daemon.py).
    max_connections: int = 4096
    # Seconds a client may go silent in the middle of a frame before it is
    # disconnected (between frames a connection may be idle for ever).
    frame_timeout: float = 30.0


class _File(msgspec.Struct, forbid_unknown_fields=True):
    daemon: DaemonSettings = DaemonSettings()
    servers: dict[str, Any] = {}


class ServerEntry(msgspec.Struct, frozen=True):
    """One server as configured: a valid config, or the reason it is not."""

    name: str
    config: ServerConfig | None
    error: str | None = None
    # What status shows as the URL even when the entry is invalid.
    display_url: str = ""


class Config(msgspec.Struct, frozen=True):
    path: Path
    daemon: DaemonSettings
    servers: dict[str, ServerEntry]


class _MissingEnv(Exception):
    pass


def _expand(value: Any, key: str, env: Mapping[str, str]) -> Any:
    """Substitute {env:VAR} in every string, naming the key of a missing one."""
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            var = match.group(1)
            if var not in env:
                raise _MissingEnv(f"{key} refers to {{env:{var}}} but ${var} is not set")
            return env[var]

        return _ENV_REF.sub(lookup, value)
    if isinstance(value, dict):
        return {k: _expand(v, f"{key}.{k}" if key else k, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{key}[{i}]", env) for i, v in enumerate(value)]
    return value


def _check_headers(headers: dict[str, str]) -> str | None:
    for name, value in headers.items():
        if not HEADER_NAME.fullmatch(name):
            return (
                f"headers: {name!r} is not a valid header name (letters, digits and "
                "!#$%&'*+-.^_`|~, no spaces)"
            )
        if name.lower() in RESERVED_HEADERS:
            return f"headers: {name!r} is set by mcpd itself; remove it from the config"
        if not HEADER_VALUE.fullmatch(value):
            return (
                f"headers.{name}: the value has a line break, another control character or "
                "non-ASCII text (a CRLF file behind an {env:...}?); HTTP allows visible ASCII, "
                "spaces and tabs"
            )
    return None


def _check_prompt(prompt: str) -> None:
    values = prompt.split(" ")
    if not all(PROMPT_VALUE.fullmatch(value) for value in values):
        raise ValueError(
            "oauth.prompt: write OpenID Connect prompt values (none, login, consent, "
            'select_account) separated by single spaces, e.g. "consent" or "login consent"; '
            '"" sends no prompt at all'
        )
    if "none" in values and len(values) > 1:
        raise ValueError(
            'oauth.prompt: "none" cannot be combined with other values (OpenID Connect '
            "Core 3.1.2.1); use it alone, or leave it out"
        )


def _check_resource(resource: str) -> str:
    fix = (
        "set oauth.resource to an absolute https:// URL (http:// on this machine), or to "
        "false to leave the parameter out"
    )
    try:
        resource = checked_url(resource, "oauth.resource")
    except InvalidUrl as exc:
        raise ValueError(f"{exc}; {fix}") from None
    parts = urlsplit(resource)
    if not (parts.scheme == "https" or is_loopback(parts.hostname or "")):
        raise ValueError(f"oauth.resource: a resource indicator must be https://; {fix}")
    if "#" in resource:
        raise ValueError("oauth.resource: a resource indicator has no fragment (RFC 8707)")
    return resource


def _check_authorize_params(params: dict[str, str]) -> None:
    for name, value in params.items():
        if not PARAM_NAME.fullmatch(name):
            raise ValueError(
                f"oauth.authorize_params: {name!r} is not a parameter name (letters, "
                "digits and _ . - ~ : [ ])"
            )
        instead = RESERVED_AUTHORIZE_PARAMS.get(name.lower())
        if instead is not None:
            raise ValueError(
                f"oauth.authorize_params.{name}: {name.lower()!r} cannot be set here: {instead}"
            )
        if _CONTROL.search(value):
            raise ValueError(
                f"oauth.authorize_params.{name}: the value has a line break or another "
                "control character (a CRLF file behind an {env:...}?)"
            )


def _check_authorization_request(oauth: OAuthSettings) -> OAuthSettings:
    """The OAuth settings that shape the authorization request, checked (ValueError
    naming the key and the fix); a resource URL normalised like every URL."""
    if oauth.prompt:
        _check_prompt(oauth.prompt)
    _check_authorize_params(oauth.authorize_params)
    if isinstance(oauth.resource, str):
        return msgspec.structs.replace(oauth, resource=_check_resource(oauth.resource))
    if oauth.resource is True:
        return msgspec.structs.replace(oauth, resource=None)  # the default, spelled out
    return oauth


def _check(config: ServerConfig) -> ServerConfig:
    """The config with its URLs normalised; InvalidUrl or ValueError naming the key."""
    problem = _check_headers(config.headers)
    if problem:
        raise ValueError(problem)
    url = checked_url(config.url)
    oauth = config.oauth
    if isinstance(oauth, OAuthSettings):
        oauth = msgspec.structs.replace(
            oauth,
            redirect_uri=oauth.redirect_uri
            and checked_url(oauth.redirect_uri, "oauth.redirect_uri"),
            client_metadata_url=oauth.client_metadata_url
            and checked_url(oauth.client_metadata_url, "oauth.client_metadata_url"),
        )
        if isinstance(oauth.verify, str) and not os.path.exists(oauth.verify):
            raise ValueError(f"oauth.verify: no CA bundle at {oauth.verify}")
        oauth = _check_authorization_request(oauth)
        if oauth.grant != "authorization_code" or oauth.private_key_file is not None:
            from .oauth.machine import checked_settings  # cryptography, only when used

            oauth = checked_settings(oauth)
    if isinstance(config.verify, str) and not os.path.exists(config.verify):
        raise ValueError(f"verify: no CA bundle at {config.verify}")
    check_patterns(config.tools.allow, config.tools.deny)
    return msgspec.structs.replace(config, url=url, oauth=oauth)


def parse_server(name: str, raw: Any, env: Mapping[str, str]) -> ServerEntry:
    prefix = f"server {name!r}"
    raw_url = raw.get("url", "") if isinstance(raw, dict) else ""
    display_url = public_url(raw_url) if isinstance(raw_url, str) and raw_url else ""
    if not SERVER_NAME.fullmatch(name):
        return ServerEntry(
            name,
            None,
            f"{prefix}: names may use letters, digits, '_', '.' and '-' "
            "(up to 64, starting with a letter or digit); rename the table",
            display_url,
        )
    try:
        expanded = _expand(raw, "", env)
        config = msgspec.convert(expanded, ServerConfig)
    except _MissingEnv as exc:
        return ServerEntry(name, None, f"{prefix}: {exc}", display_url)
    except msgspec.ValidationError as exc:
        # msgspec names the field ("Expected `bool`, got `str` - at `$.enabled`")
        # and quotes a value only for enum and Literal fields, which hold no secrets.
        detail = str(exc).replace("`$", f"`servers.{name}")
        if "unknown field" in detail and detail.endswith(f"`servers.{name}.tools`"):
            detail += "; tools takes allow and deny, lists of tool names or patterns"
        return ServerEntry(name, None, f"{prefix}: {detail}", display_url)
    try:
        config = _check(config)
    except ValueError as exc:  # InvalidUrl among them
        return ServerEntry(name, None, f"{prefix}: {exc}", display_url)
    return ServerEntry(name, config, None, public_url(config.url))


_TABLE_HEADER = re.compile(r"^[ \t]*\[", re.MULTILINE)


def _header(name: str) -> re.Pattern[str]:
    return re.compile(rf"^[ \t]*\[\[?[ \t]*{re.escape(name)}[ \t]*[\].]", re.MULTILINE)


def _line_of(text: str, key: str, table: str | None) -> int | None:
    """The line of an unknown `key` in `table` (None: the top level).

    At the top level that is a [key], [key.x] or [[key]] header, or `key = ...`
    before the first header; in a table, `key = ...` between its header and
    the next one.
    """
    start, match = 0, None
    if table is None:
        match = _header(key).search(text)
    else:
        table_header = _header(table).search(text)
        if table_header is None:
            return None
        start = table_header.end()
    if match is None:
        next_header = _TABLE_HEADER.search(text, start)
        section = text[: next_header.start()] if next_header else text
        match = re.compile(rf"^[ \t]*{re.escape(key)}[ \t]*=", re.MULTILINE).search(section, start)
    return text.count("\n", 0, match.start()) + 1 if match else None


def parse(text: str, path: Path, env: Mapping[str, str] = os.environ) -> Config:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message already ends with "(at line L, column C)".
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        top = msgspec.convert(document, _File)
    except msgspec.ValidationError as exc:
        unknown = re.search(r"unknown field `([^`]+)`(?: - at `\$\.(\w+)`)?", str(exc))
        line = _line_of(text, unknown.group(1), unknown.group(2)) if unknown else None
        where = f"{path}:{line}" if line else str(path)
        raise ConfigError(
            f"{where}: {exc}; the top level has [daemon] and [servers.NAME] tables"
        ) from None
    if top.daemon.max_frame_size < 1024:
        raise ConfigError(f"{path}: daemon.max_frame_size must be at least 1024 bytes")
    if top.daemon.max_connections < 1:
        raise ConfigError(f"{path}: daemon.max_connections must be at least 1")
    if not 0 < top.daemon.frame_timeout <= MAX_FRAME_TIMEOUT:
        raise ConfigError(
            f"{path}: daemon.frame_timeout must be more than 0 and at most "
            f"{MAX_FRAME_TIMEOUT:g} seconds"
        )
    servers = {name: parse_server(name, raw, env) for name, raw in top.servers.items()}
    return Config(path, top.daemon, servers)


def load(path: Path, env: Mapping[str, str] = os.environ) -> Config:
    """Read and parse the file; a missing file is an empty configuration."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config(path, DaemonSettings(), {})
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse(text, path, env)
