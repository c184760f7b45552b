"""Edits of Codex's `config.toml` (`[mcp_servers.NAME]` tables), with tomlkit.

tomlkit keeps the comments, order and formatting of everything it is not
asked to change. It is imported here only, when a Codex file is written, so
`mcpctl` itself starts without it.
"""

from __future__ import annotations

from typing import Any


def _servers(doc: Any, path: tuple[str, ...], create: bool) -> Any:
    import tomlkit

    node = doc
    for key in path:
        if key not in node:
            if not create:
                return None
            node[key] = tomlkit.table(is_super_table=True)
        node = node[key]
    return node


def set_entry(text: str, path: tuple[str, ...], key: str, value: dict[str, Any]) -> str:
    """The text with `[path.key]` holding exactly `value`, in place if it exists."""
    import tomlkit
    from tomlkit.items import InlineTable

    doc = tomlkit.parse(text)
    servers = _servers(doc, path, create=True)
    if isinstance(servers, InlineTable):
        servers[key] = value
        return tomlkit.dumps(doc)
    table = tomlkit.table()
    for name, item in value.items():
        table.add(name, item)
    existed = key in servers
    servers[key] = table
    out = tomlkit.dumps(doc)
    if not existed and not out.endswith(table.as_string()):
        # Something follows the new table: a blank line before it, as tables have.
        table.add(tomlkit.nl())
        out = tomlkit.dumps(doc)
    return out


def remove_entry(text: str, path: tuple[str, ...], key: str) -> str:
    import tomlkit

    doc = tomlkit.parse(text)
    servers = _servers(doc, path, create=False)
    if servers is not None and key in servers:
        del servers[key]
    return tomlkit.dumps(doc)
