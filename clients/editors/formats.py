"""Which editors there are, where each keeps its MCP servers, and in what shape.

Each editor's format was taken from its own documentation or source; the
README's Editors section names the version followed for each. Paths are
Linux paths (mcpd runs on Linux), with the XDG and editor-specific
variables each editor itself honours.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# How an editor expands variables in the strings of its MCP entries.
DOLLAR_BRACE = "${VAR}"  # ${VAR} and ${VAR:-default}
ENV_COLON = "${env:VAR}"
BRACE_ENV = "{env:VAR}"
DOLLAR = "$VAR"


@dataclass(frozen=True)
class Editor:
    id: str
    name: str
    syntax: str  # "json" (JSON or JSONC) or "toml"
    # Where the servers are in the user-level file; opencode's V2 layout
    # (`mcp.servers`) is found per file, see `container_of`.
    container: tuple[str, ...]
    style: str  # the shape of an entry (see entries.py)
    variables: tuple[str, ...]


EDITORS: tuple[Editor, ...] = (
    Editor("claude-code", "Claude Code", "json", ("mcpServers",), "claude-code", (DOLLAR_BRACE,)),
    Editor("claude-desktop", "Claude Desktop", "json", ("mcpServers",), "plain", ()),
    Editor("cursor", "Cursor", "json", ("mcpServers",), "plain", (ENV_COLON,)),
    Editor("vscode", "VS Code", "json", ("servers",), "vscode", (ENV_COLON,)),
    Editor("windsurf", "Windsurf", "json", ("mcpServers",), "windsurf", (ENV_COLON,)),
    Editor("zed", "Zed", "json", ("context_servers",), "zed", ()),
    Editor("codex", "Codex", "toml", ("mcp_servers",), "codex", ()),
    Editor("opencode", "opencode", "json", ("mcp",), "opencode", (BRACE_ENV,)),
    Editor("gemini", "Gemini CLI", "json", ("mcpServers",), "gemini", (DOLLAR_BRACE, DOLLAR)),
    Editor("qwen", "Qwen Code", "json", ("mcpServers",), "gemini", (DOLLAR_BRACE, DOLLAR)),
    Editor("copilot", "Copilot CLI", "json", ("mcpServers",), "copilot", (DOLLAR_BRACE, ENV_COLON)),
)
BY_ID = {editor.id: editor for editor in EDITORS}
ALIASES = {
    "claude": "claude-code",
    "code": "vscode",
    "vs-code": "vscode",
    "gemini-cli": "gemini",
    "qwen-code": "qwen",
    "copilot-cli": "copilot",
}


def find(name: str) -> Editor | None:
    key = name.strip().lower()
    return BY_ID.get(ALIASES.get(key, key))


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or os.path.expanduser("~"))


def _absolute(env: Mapping[str, str], var: str) -> Path | None:
    value = env.get(var, "")
    return Path(value) if value and os.path.isabs(value) else None


def _config_home(env: Mapping[str, str]) -> Path:
    return _absolute(env, "XDG_CONFIG_HOME") or _home(env) / ".config"


@dataclass(frozen=True)
class Location:
    """A file that may hold MCP servers, and what is written there."""

    path: Path
    scope: str  # "user" or "project"
    writable: bool  # install writes user-level files only


def user_file(editor: Editor, env: Mapping[str, str]) -> Path:
    """The user-level file `mcpctl install` writes."""
    home = _home(env)
    match editor.id:
        case "claude-code":
            return (_absolute(env, "CLAUDE_CONFIG_DIR") or home) / ".claude.json"
        case "claude-desktop":
            return _config_home(env) / "Claude" / "claude_desktop_config.json"
        case "cursor":
            return home / ".cursor" / "mcp.json"
        case "vscode":
            return _config_home(env) / "Code" / "User" / "mcp.json"
        case "windsurf":
            return home / ".codeium" / "windsurf" / "mcp_config.json"
        case "zed":
            return _config_home(env) / "zed" / "settings.json"
        case "codex":
            return (_absolute(env, "CODEX_HOME") or home / ".codex") / "config.toml"
        case "opencode":
            directory = _config_home(env) / "opencode"
            for name in ("opencode.json", "opencode.jsonc"):
                if (directory / name).exists():
                    return directory / name
            return directory / "opencode.json"
        case "gemini":
            return (_absolute(env, "GEMINI_CLI_HOME") or home) / ".gemini" / "settings.json"
        case "qwen":
            return home / ".qwen" / "settings.json"
        case "copilot":
            return (_absolute(env, "COPILOT_HOME") or home / ".copilot") / "mcp-config.json"
    raise AssertionError(editor.id)


def project_files(editor: Editor, cwd: Path) -> list[Path]:
    """Project-level files in `cwd`, read by `editors` and `import`, never written
    (they are shared with a repository, and an entry naming this machine's
    `mcpctl` does not belong there)."""
    names = {
        "claude-code": [".mcp.json"],
        "cursor": [".cursor/mcp.json"],
        "vscode": [".vscode/mcp.json"],
        "zed": [".zed/settings.json"],
        "opencode": ["opencode.json", "opencode.jsonc"],
        "gemini": [".gemini/settings.json"],
        "qwen": [".qwen/settings.json"],
    }.get(editor.id, [])
    return [cwd / name for name in names]


def locations(editor: Editor, env: Mapping[str, str], cwd: Path | None) -> list[Location]:
    found = [Location(user_file(editor, env), "user", True)]
    if cwd is not None:
        user = found[0].path
        found += [
            Location(path, "project", False)
            for path in project_files(editor, cwd)
            if path.exists() and path.resolve() != user.resolve()
        ]
    return found


def installed_here(editor: Editor, env: Mapping[str, str]) -> bool:
    """Whether the editor seems to be used on this machine (its directory exists)."""
    path = user_file(editor, env)
    if editor.id == "claude-code":  # ~/.claude.json sits in the home directory itself
        return path.exists() or (path.parent / ".claude").is_dir()
    return path.exists() or path.parent.is_dir()


def container_of(editor: Editor, plain: object) -> tuple[str, ...]:
    """Where the servers are in this file: opencode V2 keeps them in `mcp.servers`."""
    if editor.id == "opencode" and isinstance(plain, dict):
        mcp = plain.get("mcp")
        servers = mcp.get("servers") if isinstance(mcp, dict) else None
        if isinstance(servers, dict) and not ({"type", "command", "url"} & set(servers)):
            return ("mcp", "servers")
    return editor.container


def display(path: Path, env: Mapping[str, str]) -> str:
    """`path` with the home directory shown as ~."""
    home = str(_home(env)).rstrip("/")
    text = str(path)
    if home and (text == home or text.startswith(home + "/")):
        return "~" + text[len(home) :]
    return text
