"""`mcpctl import`: the editors' remote servers, added to mcpd's config.

Each server goes in under the editor's name for it (made a valid mcpd name
if need be). A name mcpd already has for another URL is a clash: reported,
never overwritten; the same name with the same URL, or the same URL under
another name, changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import mcpdconfig
from .entries import Remote, url_key
from .files import EditorFile, EditorFileError, read
from .formats import Editor, display, locations

_INVALID = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class Found:
    editor: Editor
    file: Path
    scope: str
    key: str
    remote: Remote


@dataclass
class Outcome:
    found: Found
    name: str
    status: str  # added, would add, present, elsewhere, clash, invalid, skipped
    detail: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.status in ("clash", "invalid", "skipped")


def scan(
    editor: Editor, env: Mapping[str, str], cwd: Path | None
) -> tuple[list[EditorFile], list[str]]:
    """The editor's files that exist, read; the errors of those that do not parse."""
    files, errors = [], []
    for location in locations(editor, env, cwd):
        if not location.path.exists():
            continue
        try:
            files.append(read(editor, location))
        except EditorFileError as exc:
            errors.append(str(exc))
    return files, errors


def remotes(files: list[EditorFile]) -> list[Found]:
    return [
        Found(file.editor, file.location.path, container.scope, entry.key, entry.remote)
        for file in files
        for container in file.containers
        for entry in container.entries
        if entry.kind == "remote" and entry.remote is not None
    ]


def server_name(key: str) -> str:
    """An editor's name for a server as an mcpd server name (letters, digits, _ . -;
    up to 64, starting with a letter or digit)."""
    name = _INVALID.sub("-", key).lstrip("_.-")[:64].rstrip("-")
    return name or "server"


def _validate(name: str, table: dict[str, Any], env: Mapping[str, str]) -> str | None:
    """The daemon's verdict on the entry (None: valid), with any missing variable
    standing in: mcpd's own environment may have it."""
    from mcpd import config

    stand_in = dict(env)
    for match in re.finditer(r"\{env:([A-Za-z_][A-Za-z0-9_]*)\}", repr(table)):
        stand_in.setdefault(match.group(1), "x")
    return config.parse_server(name, table, stand_in).error


def run(
    found: list[Found], config_path: Path, env: Mapping[str, str], *, dry_run: bool
) -> list[Outcome]:
    existing = {
        name: table.get("url") if isinstance(table.get("url"), str) else None
        for name, table in mcpdconfig.servers(config_path).items()
    }
    by_url = {url_key(url): name for name, url in existing.items() if url}
    outcomes = []
    for item in found:
        remote = item.remote
        name = server_name(item.key)
        outcome = Outcome(item, name, "")
        outcomes.append(outcome)
        if name != item.key:
            outcome.notes.append(f"named {name} in mcpd ({item.key!r} is not a valid name)")
        if remote.blocked:
            outcome.status, outcome.detail = "skipped", remote.blocked
            continue
        if name in existing:
            if existing[name] and url_key(existing[name] or "") == url_key(remote.url):
                outcome.status = "present"
            else:
                outcome.status = "clash"
                outcome.detail = (
                    f"mcpd's {name} is {existing[name] or 'another server'}; not overwritten "
                    f"(rename one of them, then import again)"
                )
            continue
        if url_key(remote.url) in by_url:
            outcome.status = "elsewhere"
            outcome.detail = f"already in mcpd as {by_url[url_key(remote.url)]}"
            continue
        error = _validate(name, remote.table(tool_filters=True), env)
        if error:
            outcome.status, outcome.detail = "invalid", error
            continue
        outcome.notes += _notes(remote)
        if dry_run:
            outcome.status = "would add"
        else:
            try:
                edit, left_out = mcpdconfig.add(config_path, name, remote, env)
            except mcpdconfig.ConfigProblem as exc:
                outcome.status, outcome.detail = "invalid", str(exc)
                continue
            outcome.status = "added"
            outcome.notes += list(edit.warnings) + [f"left out: {item}" for item in left_out]
        existing[name] = remote.url
        by_url[url_key(remote.url)] = name
    return outcomes


def _notes(remote: Remote) -> list[str]:
    notes = list(remote.problems) + list(remote.notes)
    if remote.literal_values:
        notes.append(
            f"{', '.join(remote.literal_values)}: copied as written into mcpd's config "
            "(a file only you can read), not into any editor's file"
        )
    variables = sorted(set(remote.variables))
    if variables:
        listed = ", ".join(f"${var}" for var in variables)
        notes.append(f"mcpd reads {listed} from its own environment ({{env:...}} in its config)")
    if not remote.enabled:
        notes.append("disabled in the editor: added with enabled = false")
    return notes


def describe(outcome: Outcome, env: Mapping[str, str]) -> list[str]:
    item = outcome.found
    where = f"{item.editor.id}: {item.key}"
    status = {
        "present": "already in mcpd",
        "would add": f"would be added as {outcome.name}",
        "added": f"added as {outcome.name}",
    }.get(outcome.status, outcome.status)
    via = " (mcp-remote)" if item.remote.via == "mcp-remote" else ""
    line = f"{where}  {item.remote.url}{via}  {status}"
    if outcome.detail:
        line += f": {outcome.detail}"
    lines = [line]
    if item.scope != "user":
        lines.append(f"    from {display(item.file, env)} ({item.scope})")
    lines += [f"    {note}" for note in outcome.notes]
    return lines
