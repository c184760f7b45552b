"""One editor entry: what it is (a remote server, mcp-remote, mcpd's bridge, a local
server), and the entry `mcpctl install` writes in its place.

Values that become mcpd configuration are translated to mcpd's syntax: a
variable the editor (or mcp-remote) would expand becomes `{env:VAR}`, never
its value; a value written literally in the editor's file is copied as it is
(it then lives in mcpd's config file, which only its user can read).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .formats import BRACE_ENV, DOLLAR, DOLLAR_BRACE, ENV_COLON, Editor

_PATTERNS = {
    DOLLAR_BRACE: re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}"),
    ENV_COLON: re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)()\}"),
    BRACE_ENV: re.compile(r"(?<!\$)\{env:([A-Za-z_][A-Za-z0-9_]*)()\}"),
    DOLLAR: re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)()"),
}
# A `${...}` no translation covers: VS Code's ${input:...}, ${workspaceFolder}...
_UNKNOWN = re.compile(r"\$\{[^}]*\}|\{file:[^}]*\}")
_SCHEME = re.compile(r"^\s*(?:Bearer|Basic|Token|Bot|ApiKey)\b", re.IGNORECASE)
_MCP_REMOTE = re.compile(r"(?:.*/)?mcp-remote(?:@[^\s/]+)?")
_PACKAGE_RUNNERS = {"npx", "bunx", "pnpx"}
# mcp-remote's flags with a value, and those without (geelen/mcp-remote, utils.ts).
_FLAGS_WITH_VALUE = {
    "--header",
    "--transport",
    "--host",
    "--callback-path",
    "--static-oauth-client-metadata",
    "--static-oauth-client-info",
    "--resource",
    "--ignore-tool",
    "--auth-timeout",
    "--authorize-param",
    "--client-metadata-url",
    "--protocol",
}
_FLAGS = {
    "--allow-http",
    "--debug",
    "--silent",
    "--enable-proxy",
    "--disable-resource-parameter",
}
_HEADER_ARG = re.compile(r"^([A-Za-z0-9_-]+):\s*(.*)$", re.DOTALL)


@dataclass
class Translated:
    """A value in mcpd's syntax, and what happened on the way."""

    value: str
    variables: list[str] = field(default_factory=list)  # became {env:VAR}
    literal: bool = False  # holds text written literally in the editor's file
    problem: str | None = None  # cannot be used (an ${input:...}, say): left out
    warning: str | None = None  # usable, but see this


_SENTINEL = re.compile(r"\0env:([A-Za-z0-9_]+)\0")


def translate(
    value: str, syntaxes: tuple[str, ...], entry_env: dict[str, str] | None = None
) -> Translated:
    """`value` with the editor's variables as mcpd's `{env:VAR}`.

    A variable the entry's own `env` defines is what the launched program sees,
    whatever the editor's environment: its value (translated in turn) is used.
    """
    result = _translate(value, syntaxes, entry_env)
    result.value = _SENTINEL.sub(r"{env:\1}", result.value)
    return result


def _translate(
    value: str, syntaxes: tuple[str, ...], entry_env: dict[str, str] | None
) -> Translated:
    """`translate`, with each variable still as a sentinel that no syntax matches."""
    result = Translated(value)
    for syntax in syntaxes:
        pattern = _PATTERNS[syntax]

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if entry_env is not None and name in entry_env:
                inner = _translate(entry_env[name], syntaxes, None)
                result.variables += inner.variables
                result.literal = result.literal or inner.literal
                result.problem = result.problem or inner.problem
                result.warning = result.warning or inner.warning
                return inner.value
            result.variables.append(name)
            if default:
                result.warning = result.warning or (
                    f"${{{name}:-...}} has a default, and mcpd's {{env:{name}}} has none: "
                    f"${name} must be set for mcpd"
                )
            return f"\0env:{name}\0"

        result.value = pattern.sub(replace, result.value)
    unknown = _UNKNOWN.search(result.value)
    if unknown and result.problem is None:
        result.problem = (
            f"{unknown.group()} is filled in by the editor alone; set this value in mcpd's "
            "config yourself"
        )
    # Written as it is: anything but the variables, an authorization scheme and
    # punctuation (a secret has letters or digits).
    literal_text = _SCHEME.sub("", _SENTINEL.sub(" ", result.value))
    result.literal = result.literal or bool(re.search(r"[A-Za-z0-9]", literal_text))
    return result


@dataclass
class Remote:
    """A remote server as mcpd would configure it."""

    url: str
    via: str  # "native" or "mcp-remote"
    headers: dict[str, str] = field(default_factory=dict)
    oauth: dict[str, Any] = field(default_factory=dict)
    no_oauth: bool = False
    enabled: bool = True
    deny_tools: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what did not carry over, and why
    problems: list[str] = field(default_factory=list)  # values left out: the user must add them
    blocked: str | None = None  # why the server cannot be imported at all
    literal_values: list[str] = field(default_factory=list)  # what was copied as written
    variables: list[str] = field(default_factory=list)  # {env:VAR} mcpd will need

    def table(self, tool_filters: bool) -> dict[str, Any]:
        """The `[servers.NAME]` table for mcpd's config."""
        table: dict[str, Any] = {"url": self.url}
        if not self.enabled:
            table["enabled"] = False
        if self.headers:
            table["headers"] = dict(self.headers)
        if self.no_oauth:
            table["oauth"] = False
        elif self.oauth:
            table["oauth"] = dict(self.oauth)
        if self.deny_tools and tool_filters:
            table["tools"] = {"deny": list(self.deny_tools)}
        return table


@dataclass
class Entry:
    key: str
    kind: str  # "remote", "mcpd", "local", "unknown"
    remote: Remote | None = None
    mcpd_server: str | None = None  # kind "mcpd": the server it attaches to
    mcpd_command: str | None = None
    mcpd_socket: str | None = None
    raw: Any = None


# --- Reading an entry ---------------------------------------------------------------------


def _strings(value: Any) -> list[str] | None:
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    return None


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def command_line(editor: Editor, raw: dict[str, Any]) -> tuple[list[str], dict[str, str]] | None:
    """The argv and the env an entry launches, or None if it launches nothing."""
    command = raw.get("command")
    if editor.style == "opencode":
        argv = _strings(command)
        env = _str_map(raw.get("environment"))
    elif editor.style == "zed" and isinstance(command, dict):  # Zed's older form
        path = command.get("path")
        argv = [path, *(_strings(command.get("args")) or [])] if isinstance(path, str) else None
        env = _str_map(command.get("env"))
    else:
        argv = [command, *(_strings(raw.get("args")) or [])] if isinstance(command, str) else None
        env = _str_map(raw.get("env"))
    return (argv, env) if argv else None


def _mcpd_bridge(argv: list[str]) -> tuple[str, str | None] | None:
    """(server, socket) of `mcpctl stdio [--socket PATH] NAME`."""
    if os.path.basename(argv[0]) != "mcpctl" or argv[1:2] != ["stdio"]:
        return None
    rest, socket = argv[2:], None
    if len(rest) >= 2 and rest[0] == "--socket":
        socket, rest = rest[1], rest[2:]
    elif rest and rest[0].startswith("--socket="):
        socket, rest = rest[0].split("=", 1)[1], rest[1:]
    return (rest[0], socket) if len(rest) == 1 else None


def _mcp_remote_args(argv: list[str]) -> list[str] | None:
    """The arguments after `mcp-remote` in `npx [-y] mcp-remote ...` and its kin."""
    program = os.path.basename(argv[0])
    if _MCP_REMOTE.fullmatch(program):
        return argv[1:]
    index = 1
    if program in ("pnpm", "yarn") and argv[1:2] == ["dlx"]:
        index = 2
    elif program not in _PACKAGE_RUNNERS:
        return None
    while index < len(argv) and argv[index].startswith("-"):
        if argv[index] in ("-p", "--package"):
            index += 1
        index += 1
    if index < len(argv) and _MCP_REMOTE.fullmatch(argv[index]):
        return argv[index + 1 :]
    return None


def _json_arg(
    value: str, what: str, remote: Remote, syntaxes: tuple[str, ...], entry_env: dict[str, str]
) -> dict[str, Any] | None:
    """A `--static-oauth-*` value: JSON, or @FILE holding JSON (a variable in the
    file's path is read from this environment, as the editor would have)."""
    try:
        if value.startswith("@"):
            path = translate(value[1:], syntaxes, entry_env).value
            path = re.sub(
                r"\{env:([A-Za-z0-9_]+)\}", lambda m: os.environ.get(m.group(1), ""), path
            )
            text = Path(path).expanduser().read_text(encoding="utf-8")
        else:
            text = value
        data = json.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        remote.problems.append(f"{what} left out: cannot read {value[1:]}: {exc}")
        return None
    except json.JSONDecodeError:
        remote.problems.append(f"{what} left out: not valid JSON")
        return None
    if not isinstance(data, dict):
        remote.problems.append(f"{what} left out: not a JSON object")
        return None
    return data


def _take(remote: Remote, label: str, translated: Translated, *, secret: bool = True) -> str | None:
    """The translated value (None if it cannot be used: the problem is noted),
    noting the variables it needs and whether a value that may be secret was
    copied as written."""
    if translated.problem:
        remote.problems.append(f"{label} left out: {translated.problem}")
        return None
    if translated.warning:
        remote.notes.append(f"{label}: {translated.warning}")
    remote.variables += translated.variables
    if translated.literal and secret:
        remote.literal_values.append(label)
    return translated.value


def _set(target: dict[str, Any], key: str, value: str | None) -> None:
    if value is not None:
        target[key] = value


def _check_url(remote: Remote, url: Translated) -> None:
    if url.variables or url.problem:
        remote.blocked = (
            "its URL comes from a variable or the editor fills it in; mcpd needs the URL "
            "itself (add it with mcpctl add)"
        )
    elif url.value.startswith("unix:"):
        remote.blocked = "it is on a Unix socket; mcpd speaks HTTP(S) only"


def mcp_remote(
    args: list[str], entry_env: dict[str, str], syntaxes: tuple[str, ...]
) -> Remote | None:
    """What an mcp-remote command line configures, in mcpd's terms.

    mcp-remote expands `${VAR}` in header values from its own environment (the
    entry's `env` over the editor's); the editor may have expanded its own
    syntax in every argument before that.
    """
    every = (*syntaxes, DOLLAR_BRACE) if DOLLAR_BRACE not in syntaxes else syntaxes
    positional: list[str] = []
    options: list[tuple[str, str | None]] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in _FLAGS_WITH_VALUE and index + 1 < len(args):
            options.append((arg, args[index + 1]))
            index += 2
        elif arg.startswith("--"):
            options.append((arg, None))
            index += 1
        else:
            positional.append(arg)
            index += 1
    if not positional:
        return None
    url = translate(positional[0], every, entry_env)
    remote = Remote(url.value, "mcp-remote")
    _check_url(remote, url)
    if len(positional) > 1 and positional[1].isdigit():
        remote.notes.append(
            f"callback port {positional[1]}: mcpd signs in through its own callback "
            "(http://127.0.0.1:19876/callback, [daemon] callback_port)"
        )
    resource_off = False
    static_client = False
    for flag, value in options:
        if flag == "--header" and value is not None:
            match = _HEADER_ARG.match(value)
            if not match:
                remote.notes.append(
                    "a --header without 'Name: value' was ignored (as mcp-remote does)"
                )
                continue
            name = match.group(1)
            _set(
                remote.headers,
                name,
                _take(remote, f"header {name}", translate(match.group(2), every, entry_env)),
            )
        elif flag == "--static-oauth-client-info" and value is not None:
            info = _json_arg(value, flag, remote, syntaxes, entry_env)
            if info is None:
                continue
            static_client = True
            for key in ("client_id", "client_secret"):
                item = info.get(key)
                if isinstance(item, str) and item:
                    _set(
                        remote.oauth,
                        key,
                        _take(
                            remote,
                            f"oauth.{key}",
                            translate(item, every, entry_env),
                            secret=key == "client_secret",
                        ),
                    )
        elif flag == "--static-oauth-client-metadata" and value is not None:
            metadata = _json_arg(value, flag, remote, syntaxes, entry_env)
            if metadata and isinstance(metadata.get("scope"), str):
                remote.oauth["scope"] = metadata["scope"]
            if metadata and set(metadata) - {"scope"}:
                remote.notes.append(
                    f"{flag}: only scope carries over (mcpd registers its own client metadata)"
                )
        elif flag == "--resource" and value is not None:
            if value.strip():
                remote.oauth["resource"] = value.strip()
            else:
                resource_off = True
        elif flag == "--disable-resource-parameter":
            resource_off = True
        elif flag == "--authorize-param" and value is not None and "=" in value:
            name, _, param = value.partition("=")
            remote.oauth.setdefault("authorize_params", {})[name] = param
        elif flag == "--client-metadata-url" and value is not None:
            remote.oauth["client_metadata_url"] = value
        elif flag == "--ignore-tool" and value is not None:
            remote.deny_tools.append(value)
        elif flag == "--transport":
            remote.notes.append(
                f"--transport {value}: not needed, mcpd finds the transport itself "
                "(Streamable HTTP, then legacy SSE)"
            )
        elif flag in ("--host", "--callback-path", "--auth-timeout"):
            remote.notes.append(f"{flag}: mcpd signs in through its own callback listener")
        elif flag in ("--debug", "--silent", "--enable-proxy", "--allow-http"):
            pass  # mcpd logs to its journal, takes proxies from its environment, allows http
        else:
            remote.notes.append(f"{flag}: no mcpd equivalent, left out")
    if resource_off:
        remote.oauth.pop("resource", None)
        remote.oauth["resource"] = False
    if static_client:
        remote.notes.append(
            "a pre-registered client: its redirect URIs must include mcpd's "
            "http://127.0.0.1:19876/callback"
        )
    return remote


def _oauth_settings(raw: Any, remote: Remote, syntaxes: tuple[str, ...]) -> None:
    """The static client of a native entry (each editor spells it its own way)."""
    if raw is False:
        remote.no_oauth = True
        return
    if not isinstance(raw, dict):
        return
    spellings = {
        "client_id": ("clientId", "client_id", "CLIENT_ID"),
        "client_secret": ("clientSecret", "client_secret", "CLIENT_SECRET"),
        "scope": ("scope", "scopes"),
    }
    for key, names in spellings.items():
        for name in names:
            value = raw.get(name)
            if isinstance(value, list):
                value = " ".join(str(item) for item in value)
            if isinstance(value, str) and value:
                _set(
                    remote.oauth,
                    key,
                    _take(
                        remote,
                        f"oauth.{key}",
                        translate(value, syntaxes),
                        secret=key == "client_secret",
                    ),
                )
                break
    ignored = sorted(set(raw) - {n for names in spellings.values() for n in names} - {"enabled"})
    if ignored:
        remote.notes.append(f"oauth settings {', '.join(ignored)}: no mcpd equivalent, left out")


def _native(editor: Editor, raw: dict[str, Any]) -> Remote | None:
    url_value = None
    for key in ("url", "serverUrl", "httpUrl"):
        if isinstance(raw.get(key), str):
            url_value = raw[key]
            break
    if url_value is None or "command" in raw:
        return None
    if editor.style == "opencode" and raw.get("type") not in (None, "remote"):
        return None
    syntaxes = editor.variables
    url = translate(url_value, syntaxes)
    remote = Remote(url.value, "native")
    _check_url(remote, url)
    header_key = "http_headers" if editor.style == "codex" else "headers"
    for name, value in _str_map(raw.get(header_key)).items():
        _set(remote.headers, name, _take(remote, f"header {name}", translate(value, syntaxes)))
    if editor.style == "codex":
        for name, var in _str_map(raw.get("env_http_headers")).items():
            remote.headers[name] = "{env:" + var + "}"
            remote.variables.append(var)
        bearer = raw.get("bearer_token_env_var")
        if isinstance(bearer, str) and bearer:
            remote.headers["Authorization"] = "Bearer {env:" + bearer + "}"
            remote.variables.append(bearer)
        if isinstance(raw.get("scopes"), list):
            remote.oauth["scope"] = " ".join(str(s) for s in raw["scopes"])
    for key in ("oauth", "auth"):
        if key in raw:
            _oauth_settings(raw[key], remote, syntaxes)
    if raw.get("headersHelper"):
        remote.problems.append("headersHelper left out: it runs a program for headers")
    if raw.get("enabled") is False or raw.get("disabled") is True:
        remote.enabled = False
    return remote


def classify(editor: Editor, key: str, raw: Any) -> Entry:
    """What the entry `key` of this editor's file is."""
    if not isinstance(raw, dict):
        return Entry(key, "unknown", raw=raw)
    launched = command_line(editor, raw)
    if launched is not None:
        argv, env = launched
        bridge = _mcpd_bridge(argv)
        if bridge is not None:
            return Entry(key, "mcpd", None, bridge[0], argv[0], bridge[1], raw)
        args = _mcp_remote_args(argv)
        if args is not None:
            remote = mcp_remote(args, env, editor.variables)
            if remote is not None:
                if raw.get("enabled") is False or raw.get("disabled") is True:
                    remote.enabled = False
                return Entry(key, "remote", remote, raw=raw)
        return Entry(key, "local", raw=raw)
    remote = _native(editor, raw)
    if remote is not None:
        return Entry(key, "remote", remote, raw=raw)
    return Entry(key, "unknown", raw=raw)


# --- Writing an entry ---------------------------------------------------------------------


def bridge_argv(server: str, socket: str | None) -> list[str]:
    return ["stdio", *(["--socket", socket] if socket else []), server]


def bridge_entry(editor: Editor, mcpctl: str, server: str, socket: str | None) -> dict[str, Any]:
    """The entry that launches `mcpctl stdio NAME`, in the editor's shape."""
    args = bridge_argv(server, socket)
    match editor.style:
        case "claude-code" | "vscode":
            return {"type": "stdio", "command": mcpctl, "args": args}
        case "opencode":
            return {"type": "local", "command": [mcpctl, *args]}
        case "copilot":
            return {"type": "local", "command": mcpctl, "args": args, "tools": ["*"]}
        case _:
            return {"command": mcpctl, "args": args}


def url_key(url: str) -> str:
    """A URL as compared: scheme and host in lower case, no default port, no
    trailing slash (the same server, however an editor spelled it)."""
    from urllib.parse import urlsplit

    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return text
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(scheme)
    netloc = host if port is None or port == default else f"{host}:{port}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}{query}"
