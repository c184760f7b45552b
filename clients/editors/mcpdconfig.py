"""mcpd's own config.toml, as `import` and `install` use it.

Reading is tomllib's; every change goes through `mcpd.configedit` (the one
editor of that file, shared with `mcpctl add`: comments and layout kept,
validated as the daemon validates, atomic). Both are imported only when
these commands run.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .entries import Remote

if TYPE_CHECKING:
    from mcpd.configedit import Edit

_ONE_VARIABLE = re.compile(r"\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigProblem(Exception):
    """mcpd's config cannot be read or changed; the message says why."""


def servers(path: Path) -> dict[str, dict[str, Any]]:
    """Every `[servers.NAME]` table as written (a missing file: none)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigProblem(f"{path}: cannot read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigProblem(f"{path}: invalid TOML: {exc}") from None
    found = data.get("servers", {})
    if not isinstance(found, dict):
        return {}
    return {name: table for name, table in found.items() if isinstance(table, dict)}


def add(path: Path, name: str, remote: Remote, env: Mapping[str, str]) -> tuple[Edit, list[str]]:
    """Add `remote` as `[servers.NAME]`; the edit, and what could not be written."""
    from mcpd import configedit

    supported = {field.name for field in dataclasses.fields(configedit.NewServer)}
    left_out: list[str] = []
    extra: list[tuple[str, Any]] = []
    secret_env: str | None = None
    oauth = dict(remote.oauth)
    secret = oauth.pop("client_secret", None)
    if isinstance(secret, str):
        match = _ONE_VARIABLE.fullmatch(secret)
        if match:
            secret_env = match.group(1)
        else:
            extra.append(("client_secret", secret))
    for key in ("resource", "authorize_params", "client_metadata_url"):
        if key in oauth:
            extra.append((key, oauth[key]))
    options: dict[str, Any] = {
        "url": remote.url,
        "headers": dict(remote.headers),
        "client_id": oauth.get("client_id"),
        "client_secret_env": secret_env,
        "scope": oauth.get("scope"),
        "oauth": not remote.no_oauth,
    }
    wanted: dict[str, Any] = {
        "enabled": remote.enabled,
        "oauth_extra": tuple(extra),
        "tools_deny": tuple(remote.deny_tools),
    }
    defaults: dict[str, Any] = {"enabled": True, "oauth_extra": (), "tools_deny": ()}
    for key, value in wanted.items():
        if key in supported:
            options[key] = value
        elif value != defaults[key]:
            left_out.append(f"{key} (this mcpctl cannot write it yet: add it by hand)")
    try:
        edit = configedit.add(path, name, configedit.NewServer(**options), replace=False, env=env)
    except configedit.EditRefused as exc:
        raise ConfigProblem(str(exc)) from None
    return edit, left_out
