"""Reading an editor's file into its entries, and replacing it safely.

A file that does not parse is never written: the error names the file, the
line and the column. Writes are atomic (a private temporary file created with
O_EXCL in the same directory, fsync, rename, fsync of the directory), keep the
file's mode, go through a symbolic link to the file it points at, and are
refused if the file changed since it was read (an editor rewriting it at the
same moment, say).
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcpd import atomicfile

from . import jsonc
from .entries import Entry, classify
from .formats import Editor, Location, container_of


class EditorFileError(Exception):
    """An editor's file that cannot be read or written; it was left as it was."""


@dataclass
class Container:
    """One object of servers in a file: where it is, and what it holds."""

    path: tuple[str, ...]
    scope: str  # "user", "project", or "local: /the/project" (Claude Code)
    entries: list[Entry] = field(default_factory=list)


@dataclass
class EditorFile:
    editor: Editor
    location: Location
    exists: bool
    raw: bytes
    text: str
    plain: Any  # the whole document as Python data
    containers: list[Container]

    @property
    def main(self) -> Container:
        return self.containers[0]


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = raw[: exc.start].decode("utf-8", errors="replace")
        line = text.count("\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise EditorFileError(
            f"{path}: line {line}, column {column}: not UTF-8 text; the file was left as it is"
        ) from None


def parse_text(editor: Editor, path: Path, text: str) -> Any:
    """The document as Python data; EditorFileError (file, line, column) if it does not parse."""
    if editor.syntax == "toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            # tomllib says "... (at line L, column C)".
            raise EditorFileError(
                f"{path}: not valid TOML: {exc}; the file was left as it is"
            ) from None
    try:
        document = jsonc.parse(text)
    except jsonc.JsoncError as exc:
        raise EditorFileError(
            f"{path}: {exc}; the file is not valid JSON and was left as it is"
        ) from None
    if document.root is not None and document.root.kind != "object":
        raise EditorFileError(
            f"{path}: the top level is not a JSON object; the file was left as it is"
        )
    return document.root.plain() if document.root is not None else {}


def _dig(plain: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(plain, dict):
            return None
        plain = plain.get(key)
    return plain


def read(editor: Editor, location: Location) -> EditorFile:
    path = location.path
    try:
        raw = path.read_bytes()
        exists = True
    except FileNotFoundError:
        raw, exists = b"", False
    except OSError as exc:
        raise EditorFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    text = _decode(path, raw)
    plain = parse_text(editor, path, text)
    main = container_of(editor, plain)
    containers = [Container(main, location.scope)]
    if editor.id == "claude-code" and location.scope == "user":
        projects = plain.get("projects") if isinstance(plain, dict) else None
        for project, settings in (projects or {}).items() if isinstance(projects, dict) else ():
            if isinstance(settings, dict) and isinstance(settings.get("mcpServers"), dict):
                containers.append(
                    Container(("projects", project, "mcpServers"), f"local: {project}")
                )
    for container in containers:
        servers = _dig(plain, container.path)
        if isinstance(servers, dict):
            container.entries = [classify(editor, key, raw) for key, raw in servers.items()]
        elif servers is not None:
            where = ".".join(container.path)
            raise EditorFileError(
                f"{path}: {where} is not an object of servers; the file was left as it is"
            )
    return EditorFile(editor, location, exists, raw, text, plain, containers)


# --- Writing ------------------------------------------------------------------------------


def target_of(path: Path) -> Path:
    """The file a write replaces: the target of a symbolic link (dotfile managers)."""
    return Path(os.path.realpath(path))


def replace(path: Path, data: bytes | None, expected: bytes | None) -> None:
    """Make `path` hold `data` (None: remove it), atomically, if it still holds
    `expected` (None: it must not exist)."""
    target = target_of(path)
    try:
        current: bytes | None = target.read_bytes()
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        current, mode = None, 0o600
    if current != expected:
        raise EditorFileError(
            f"{path} changed while mcpctl was working on it (is the editor writing it?); "
            "nothing was written: run the command again"
        )
    if data is None:
        target.unlink(missing_ok=True)
        atomicfile.fsync_dir(target.parent)
        return
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomicfile.write_private(target, data, mode)
