"""Edits of the user's config.toml for `mcpctl add/remove/enable/disable`.

It imports tomlkit, and only these commands import it (from inside their
functions in clients/manage.py), so that `mcpctl status` and `mcpctl stdio`
start without it.

An edit is planned on tomlkit's document of the file, which keeps every byte
it does not touch: comments, order, blank lines, quoting. Where tomlkit alone
would move comments or blank lines that belong to the neighbours (a removed
table takes the comments that stand above the next header with it; a key
added to a table goes after its trailing comments), the edit marks the place
in tomlkit's rendering and splices the text there itself. Every result is then
checked twice before anything is written:

- read back with tomllib, it must hold exactly the old data with the one
  change asked for (anything else refuses the edit: the file stays as it was);
- loaded with the daemon's own loader (`config.parse`), it must be a file the
  daemon takes, and the server edited must be valid: a refusal carries the
  daemon's message.

The write is atomic and durable (atomicfile.write_private: a private temporary
file in the same directory, fsync, rename), under an flock on the directory so
that two `mcpctl` edits at once do not lose one of them. A config file that is
a symbolic link (a dotfiles manager's) is edited where it points.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.container import Container
from tomlkit.items import Comment, InlineTable, Item, Key, Table, Whitespace
from tomlkit.toml_document import TOMLDocument

from . import config
from .atomicfile import write_private

_ENV_REF = re.compile(r"\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class EditRefused(Exception):
    """The edit was not made (the file is unchanged); the message says why."""


@dataclass(frozen=True)
class NewServer:
    """A server as `mcpctl add` describes it."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    client_id: str | None = None
    # The name of the variable holding the client secret: written as {env:VAR}.
    client_secret_env: str | None = None
    scope: str | None = None
    oauth: bool = True  # False: oauth = false
    per_client: bool = False
    # For `mcpctl import` (clients/editors/): enabled = false; more oauth keys
    # (a literal client_secret, which lives in this private file, resource: a URL
    # or false, authorize_params, client_metadata_url), written after the above;
    # tools = { deny = [...] } (mcp-remote's --ignore-tool).
    enabled: bool = True
    oauth_extra: tuple[tuple[str, str | bool | dict[str, str]], ...] = ()
    tools_deny: tuple[str, ...] = ()


@dataclass(frozen=True)
class Edit:
    path: Path  # the file written (a symbolic link's target)
    before: str
    after: str
    summary: str  # what changed, or why nothing did
    warnings: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return self.before != self.after


# --- Entry points -------------------------------------------------------------------


def add(
    path: Path, name: str, server: NewServer, *, replace: bool, env: Mapping[str, str] = os.environ
) -> Edit:
    return _edit(
        path, lambda text, target: _add(text, target, name, server, replace=replace, env=env)
    )


def remove(path: Path, name: str, env: Mapping[str, str] = os.environ) -> Edit:
    return _edit(path, lambda text, target: _remove(text, target, name, env))


def set_enabled(path: Path, name: str, enabled: bool, env: Mapping[str, str] = os.environ) -> Edit:
    return _edit(path, lambda text, target: _set_enabled(text, target, name, enabled, env))


def _edit(path: Path, plan: Callable[[str, Path], Edit]) -> Edit:
    target = Path(os.path.realpath(path))
    directory = target.parent
    if not directory.is_dir():
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise EditRefused(f"cannot create {directory}: {exc.strerror or exc}") from None
    with _locked(directory):
        try:
            # Bytes, then text: line ends stay as they are (CRLF included).
            text = target.read_bytes().decode("utf-8")
        except FileNotFoundError:
            text = ""
        except (OSError, UnicodeDecodeError) as exc:
            raise EditRefused(f"{target}: cannot read: {exc}") from None
        edit = plan(text, target)
        if edit.changed:
            try:
                write_private(target, edit.after.encode())
            except OSError as exc:
                raise EditRefused(
                    f"cannot write {target}: {exc.strerror or exc}; it is unchanged"
                ) from None
    return edit


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --- The operations, on text ----------------------------------------------------------


def _add(
    text: str, path: Path, name: str, server: NewServer, *, replace: bool, env: Mapping[str, str]
) -> Edit:
    doc, data = _load(text, path, env)
    nl = _newline(text)
    servers = data.get("servers", {})
    exists = isinstance(servers, dict) and name in servers
    if exists and not replace:
        raise EditRefused(
            f"a server named {name!r} is already in {path}; `mcpctl add --replace` overwrites it"
        )
    entry = _entry_data(name, server)
    expected = _with_server(data, name, entry)
    if exists:
        after = _replace_entry(doc, name, server, nl)
        summary = f"replaced server {name!r} in {path}"
    else:
        after = _append_entry(doc, text, name, server, nl)
        summary = f"added server {name!r} to {path}"
    _verify(after, expected, path)
    warnings = _validate(after, path, name, env, previous=None)
    return Edit(path, text, after, summary, warnings)


def _remove(text: str, path: Path, name: str, env: Mapping[str, str]) -> Edit:
    doc, data = _load(text, path, env)
    _known(data, name, path)
    expected = _with_server(data, name, None)
    found = _locate(doc, name)
    if isinstance(found, tuple):
        container, index, table = found
        tail = _tail_text(table)
        container.remove(name)
        before, after = _split_at(doc, container, index)
        after = _joined(before, tail + after)
    else:
        del found[name]
        after = tomlkit.dumps(doc)
    _verify(after, expected, path)
    _validate(after, path, None, env, previous=None)
    return Edit(path, text, after, f"removed server {name!r} from {path}")


def _set_enabled(text: str, path: Path, name: str, enabled: bool, env: Mapping[str, str]) -> Edit:
    doc, data = _load(text, path, env)
    current = _known(data, name, path)
    word = "enabled" if enabled else "disabled"
    if current.get("enabled", True) is enabled:
        return Edit(path, text, text, f"server {name!r} is already {word}; nothing changed")
    # Enabling takes `enabled = false` out, or writes true where it has a comment.
    entry = {key: value for key, value in current.items() if key != "enabled"}
    expected = [_with_server(data, name, {**entry, "enabled": enabled})]
    if enabled:
        expected.append(_with_server(data, name, entry))
    found = _locate(doc, name)
    table = found[2] if isinstance(found, tuple) else _item(found, name)
    assert isinstance(table, (Table, InlineTable))
    after = _toggle(doc, table, enabled, _newline(text))
    _verify(after, expected, path)
    previous = _entry_error(text, path, name, env)
    warnings = _validate(after, path, name, env, previous=previous)
    return Edit(path, text, after, f"{word} server {name!r} in {path}", warnings)


# --- Reading and checking -------------------------------------------------------------


def _load(text: str, path: Path, env: Mapping[str, str]) -> tuple[TOMLDocument, dict[str, Any]]:
    """The document, if the daemon takes the file as it is (else its message)."""
    try:
        config.parse(text, path, env)
    except config.ConfigError as exc:
        raise EditRefused(f"{exc}; fix the file first (nothing was changed)") from None
    try:
        doc = tomlkit.parse(text)
    except Exception as exc:  # tomlkit's own errors; tomllib took the file
        raise EditRefused(f"{path}: tomlkit cannot read it ({exc}); edit it by hand") from None
    return doc, tomllib.loads(text)


def _known(data: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    servers = data.get("servers", {})
    entry = servers.get(name) if isinstance(servers, dict) else None
    if not isinstance(entry, dict):
        known = ", ".join(sorted(servers)) if isinstance(servers, dict) and servers else "none"
        raise EditRefused(f"no server named {name!r} in {path} (configured: {known})")
    return entry


def _with_server(data: dict[str, Any], name: str, entry: dict[str, Any] | None) -> dict[str, Any]:
    """The file's data with one server's entry replaced (None: removed)."""
    servers = dict(data.get("servers", {}))
    if entry is None:
        servers.pop(name, None)
    else:
        servers[name] = entry
    return {**data, "servers": servers}


def _verify(after: str, expected: dict[str, Any] | list[dict[str, Any]], path: Path) -> None:
    """The text must hold the old data with the one change, nothing else."""
    try:
        actual = tomllib.loads(after)
    except tomllib.TOMLDecodeError:
        actual = None
    wanted = [_normal(data) for data in (expected if isinstance(expected, list) else [expected])]
    if actual is None or _normal(actual) not in wanted:
        raise EditRefused(
            f"mcpctl cannot make this change to {path} without changing more than asked "
            "(an unusual layout of [servers]?); nothing was changed: edit the file by hand"
        )


def _normal(data: dict[str, Any]) -> dict[str, Any]:
    """No [servers] and an empty one are the same to the daemon."""
    return {key: value for key, value in data.items() if not (key == "servers" and value == {})}


def _entry_error(text: str, path: Path, name: str, env: Mapping[str, str]) -> str | None:
    entry = config.parse(text, path, env).servers.get(name)
    return entry.error if entry is not None else None


def _validate(
    after: str, path: Path, name: str | None, env: Mapping[str, str], previous: str | None
) -> tuple[str, ...]:
    """Check the new text as the daemon would: the file, and the server `name`.

    A server that refers to {env:VAR} when VAR is not set here is not refused
    for that alone (the daemon's environment may have it, under systemd say):
    it is checked with a stand-in value and the result warns. An error the
    server already had (`previous`) is a warning, not a refusal.
    """
    try:
        parsed = config.parse(after, path, env)
    except config.ConfigError as exc:
        raise EditRefused(f"{exc}; nothing was changed") from None
    entry = parsed.servers.get(name) if name is not None else None
    if name is None or entry is None or entry.error is None:
        return ()
    missing = sorted({var for var in _ENV_REF.findall(_raw_text(after, name)) if var not in env})
    if missing:
        stand_in = {**env, **dict.fromkeys(missing, "x")}
        if config.parse(after, path, stand_in).servers[name].error is None:
            listed = ", ".join(f"${var}" for var in missing)
            return (
                f"{listed} {'is' if len(missing) == 1 else 'are'} not set here: mcpd needs "
                f"{'it' if len(missing) == 1 else 'them'} in its own environment, or {name} "
                "shows failed",
            )
    if entry.error == previous:
        return (f"{entry.error} (as before)",)
    raise EditRefused(f"{entry.error}; nothing was changed")


def _raw_text(text: str, name: str) -> str:
    """Every string of a server's entry, joined (for its {env:VAR} references)."""
    entry = tomllib.loads(text).get("servers", {}).get(name)
    strings: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            strings.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(entry)
    return "\n".join(strings)


# --- Writing an entry ---------------------------------------------------------------


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else tomlkit.string(name).as_string()


def _string(value: str) -> str:
    return tomlkit.string(value).as_string()


def _fields(server: NewServer) -> list[tuple[str, str]]:
    """The entry's keys and their values, as TOML text, in the order written."""
    fields = [("url", _string(server.url))]
    if not server.enabled:
        fields.append(("enabled", "false"))
    if server.per_client:
        fields.append(("session", _string("per-client")))
    if server.headers:
        pairs = ", ".join(f"{_key(k)} = {_string(v)}" for k, v in server.headers.items())
        fields.append(("headers", f"{{ {pairs} }}"))
    if not server.oauth:
        fields.append(("oauth", "false"))
    else:
        oauth = [
            (key, _string(value))
            for key, value in (
                ("client_id", server.client_id),
                (
                    "client_secret",
                    f"{{env:{server.client_secret_env}}}" if server.client_secret_env else None,
                ),
                ("scope", server.scope),
            )
            if value is not None
        ]
        oauth += [(key, _value(value)) for key, value in server.oauth_extra]
        if oauth:
            pairs = ", ".join(f"{key} = {value}" for key, value in oauth)
            fields.append(("oauth", f"{{ {pairs} }}"))
    if server.tools_deny:
        fields.append(("tools", f"{{ deny = [{', '.join(map(_string, server.tools_deny))}] }}"))
    return fields


def _value(value: str | bool | dict[str, str]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_string(v)}" for k, v in value.items()) + " }"
    return _string(value)


def _table_text(name: str, server: NewServer, nl: str) -> str:
    lines = [f"[servers.{_key(name)}]", *(f"{k} = {v}" for k, v in _fields(server))]
    return nl.join(lines) + nl


def _inline_text(server: NewServer) -> str:
    return "{ " + ", ".join(f"{k} = {v}" for k, v in _fields(server)) + " }"


def _inline_item(server: NewServer) -> Item:
    item = tomlkit.parse(f"x = {_inline_text(server)}\n").item("x")
    assert isinstance(item, InlineTable)
    return item


def _entry_data(name: str, server: NewServer) -> dict[str, Any]:
    entry: dict[str, Any] = tomllib.loads(_table_text(name, server, "\n"))["servers"][name]
    return entry


# --- Finding and splicing ------------------------------------------------------------


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _servers_tables(doc: TOMLDocument) -> list[Table]:
    """The document's [servers] tables, in order (more than one when tables of
    other names stand between [servers.*] headers)."""
    return [
        item
        for key, item in doc.body
        if key is not None and key.key == "servers" and isinstance(item, Table)
    ]


_Place = tuple[Container, int, Table]


def _locate(doc: TOMLDocument, name: str) -> _Place | Table | InlineTable:
    """A `[servers.NAME]` table: its container, index and table; an inline entry
    (`NAME = { ... }`): the table that holds it. Any other layout is refused."""
    places = [
        (table, index, item)
        for table in _servers_tables(doc)
        for index, (key, item) in enumerate(table.value.body)
        if key is not None and key.key == name
    ]
    if len(places) == 1:
        holder, index, item = places[0]
        if isinstance(item, Table):
            return holder.value, index, item
        if isinstance(item, InlineTable):
            return holder
    top = doc.item("servers") if "servers" in doc else None
    if not places and isinstance(top, InlineTable) and isinstance(top.get(name), InlineTable):
        return top
    raise EditRefused(
        f"server {name!r} is written in a way mcpctl does not edit (in parts, or with "
        f"dotted keys); change it by hand, or write it as one [servers.{name}] table"
    )


def _walk(container: Container) -> Iterator[tuple[Container, int, Key | None, Item]]:
    """Every entry of a container and of the tables in it, in the order rendered."""
    for index, (key, item) in enumerate(container.body):
        yield container, index, key, item
        if isinstance(item, Table):
            yield from _walk(item.value)


def _tail(table: Table) -> list[tuple[Container, int, Item]]:
    """The comments and blank lines after a table's last key (in its last
    sub-table, if any): they stand above whatever follows the table."""
    entries = list(_walk(table.value))
    tail: list[tuple[Container, int, Item]] = []
    for container, index, key, item in reversed(entries):
        if key is None and item.as_string() == "":
            continue  # a removed entry's placeholder
        if key is not None or not isinstance(item, (Whitespace, Comment)):
            break
        tail.append((container, index, item))
    tail.reverse()
    return tail


def _tail_text(table: Table) -> str:
    return "".join(item.as_string() for _, _, item in _tail(table))


def _mark() -> str:
    # Ends a line, so that tomlkit adds no line break of its own after it.
    return f"\x00mcpd-{secrets.token_hex(8)}\x00\n"


def _split_at(doc: TOMLDocument, container: Container, index: int) -> tuple[str, str]:
    """The rendering before and after a removed entry's place, `container.body[index]`."""
    mark = _mark()
    container.body[index] = (None, Whitespace(mark))
    return _split(tomlkit.dumps(doc), mark)


def _split(rendered: str, mark: str) -> tuple[str, str]:
    before, sep, after = rendered.partition(mark)
    if not sep or mark in after:
        raise EditRefused("internal error: the place to edit was not found once; nothing changed")
    return before, after


def _blank_end(text: str) -> bool:
    return text.endswith(("\n\n", "\n\r\n"))


def _starts_blank(text: str) -> bool:
    return text.startswith(("\n", "\r\n"))


def _strip_leading_blank_lines(text: str) -> str:
    while _starts_blank(text):
        text = text[2:] if text.startswith("\r\n") else text[1:]
    return text


def _joined(before: str, rest: str) -> str:
    """`before` and `rest` where a table was taken out: one blank line between
    them where there was one, none at the end of the file."""
    if rest.strip() == "":
        stripped = before.rstrip("\r\n")
        return stripped + _newline(before) if stripped else ""
    if before == "" or _blank_end(before):
        rest = _strip_leading_blank_lines(rest)
    return before + rest


def _around(before: str, block: str, after: str, nl: str) -> str:
    """`block` (whole lines) between `before` and `after`, a blank line on each side."""
    if before:
        if not before.endswith("\n"):
            before += nl
        if not _blank_end(before):
            before += nl
    if after and not _starts_blank(after):
        block += nl
    return before + block + after


def _append_entry(doc: TOMLDocument, text: str, name: str, server: NewServer, nl: str) -> str:
    """A new entry after the last server (before the comments and blank lines that
    stand above whatever follows), or at the end of the file."""
    holder = doc.get("servers")
    if isinstance(holder, InlineTable):
        holder[name] = _inline_item(server)
        return tomlkit.dumps(doc)
    tables = _servers_tables(doc)
    block = _table_text(name, server, nl)
    anchor = _last_line(tables[-1]) if tables else None
    if anchor is None:
        return _around(text, block, "", nl)
    mark = _mark()
    anchor.trivia.trail += mark
    before, after = _split(tomlkit.dumps(doc), mark)
    return _around(before, block, after, nl)


def _last_line(servers: Table) -> Item | None:
    """The item whose line ends the servers' last entry: its last key (or header),
    and the comments right below it with no blank line between."""
    entries = [
        (container, index, key, item)
        for container, index, key, item in _walk(servers.value)
        if not (isinstance(item, Table) and item.is_super_table())
    ]
    last = None
    for position, (_, _, key, _) in enumerate(entries):
        if key is not None:
            last = position
    if last is None:
        return None
    container, index, _, item = entries[last]
    for _, following in container.body[index + 1 :]:
        if not isinstance(following, Comment):
            break
        item = following
    return item


def _replace_entry(doc: TOMLDocument, name: str, server: NewServer, nl: str) -> str:
    found = _locate(doc, name)
    if not isinstance(found, tuple):
        found[name] = _inline_item(server)
        return tomlkit.dumps(doc)
    container, index, table = found
    tail = _tail_text(table)
    header = table.trivia.indent
    container.remove(name)
    before, after = _split_at(doc, container, index)
    return before + header + _table_text(name, server, nl) + tail + after


def _item(table: Table | InlineTable, key: str) -> Item:
    item = table.value.item(key)
    assert isinstance(item, Item)
    return item


def _toggle(doc: TOMLDocument, table: Table | InlineTable, enabled: bool, nl: str) -> str:
    """`enabled = false` written (after the url), or taken out again."""
    if "enabled" in table:
        if enabled and not _item(table, "enabled").trivia.comment:
            del table["enabled"]  # the line goes: back to the default
        else:
            table["enabled"] = enabled  # keeps the line's comment
        return tomlkit.dumps(doc)
    if isinstance(table, InlineTable) or "url" not in table:
        table["enabled"] = enabled
        return tomlkit.dumps(doc)
    url = _item(table, "url")
    mark = _mark()
    url.trivia.trail += mark
    before, after = _split(tomlkit.dumps(doc), mark)
    if not before.endswith("\n"):
        before += nl
    return f"{before}{url.trivia.indent}enabled = {'true' if enabled else 'false'}{nl}{after}"
