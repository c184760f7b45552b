"""`mcpctl install EDITOR` and `mcpctl uninstall EDITOR`.

Install writes, per mcpd server, an entry launching `mcpctl stdio NAME` (this
mcpctl, by absolute path) into the editor's user-level file: in place of the
editor's own entry for the same URL (native or mcp-remote), keeping its name
there, or as a new entry named like the server. Everything else in the file
stays byte for byte. Before a change the file is copied to mcpd's state
directory (`editors/backups/`), and what was replaced is recorded there
(`editors/EDITOR.json`, private: a replaced entry may hold a secret).

Uninstall puts back what was replaced: the whole file exactly as it was when
nothing else changed it since, else each entry mcpctl wrote that is still as
written (others are left, and said so).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcpd import paths
from mcpd.atomicfile import write_private

from . import codex, jsonc, mcpdconfig
from .entries import Entry, bridge_entry, classify, url_key
from .files import EditorFileError, parse_text, read, replace, target_of
from .formats import Editor, Location, container_of, display, user_file

RECORD_VERSION = 1
# An editor's own settings of an entry (not how to reach the server), kept when
# mcpctl's entry takes its place.
KEEP = {
    "codex": (
        "enabled",
        "required",
        "startup_timeout_sec",
        "tool_timeout_sec",
        "enabled_tools",
        "disabled_tools",
    ),
    "gemini": ("timeout", "trust", "includeTools", "excludeTools", "description"),
    "copilot": ("tools",),
    "opencode": ("enabled", "timeout"),
    "windsurf": ("disabled", "disabledTools"),
    "zed": ("source", "enabled"),
}


class InstallError(Exception):
    """Nothing was changed; the message says why."""


@dataclass(frozen=True)
class Target:
    name: str
    url: str | None


@dataclass
class Change:
    key: str  # the entry's name in the editor's file
    server: str  # mcpd's server
    action: str  # added, replaced, updated, unchanged, skipped
    detail: str = ""


@dataclass
class Result:
    path: Path
    changes: list[Change] = field(default_factory=list)
    backup: Path | None = None
    written: bool = False


# --- Where things are ---------------------------------------------------------------------


def state_root(env: Mapping[str, str]) -> Path:
    return paths.state_dir(env) / "editors"


def record_path(env: Mapping[str, str], editor: Editor) -> Path:
    return state_root(env) / f"{editor.id}.json"


def mcpctl_path() -> str:
    """This mcpctl, as an absolute path an editor can launch (a symlink kept as it is,
    so that an upgrade behind it changes nothing here)."""
    argv0 = sys.argv[0]
    if os.path.basename(argv0) == "mcpctl":
        if os.sep in argv0:
            return os.path.abspath(argv0)
        import shutil

        found = shutil.which(argv0)
        if found:
            return os.path.abspath(found)
    beside = Path(sys.executable).parent / "mcpctl"
    if beside.exists():
        return str(beside)
    import shutil

    found = shutil.which("mcpctl")
    if found:
        return os.path.abspath(found)
    raise InstallError("cannot tell where mcpctl is installed; run it by its full path")


def socket_argument(env: Mapping[str, str]) -> str | None:
    """The socket to name in the entry: none when an editor's bare environment finds
    the daemon anyway (the usual case), else the one this mcpctl uses."""
    here = paths.socket_path(env)
    bare = paths.socket_path({"HOME": env.get("HOME", "")})
    return None if here == bare else str(here)


def targets(config_path: Path, names: list[str]) -> list[Target]:
    try:
        configured = mcpdconfig.servers(config_path)
    except mcpdconfig.ConfigProblem as exc:
        raise InstallError(str(exc)) from None
    if not configured:
        raise InstallError(
            f"mcpd has no servers ({config_path}): add some with mcpctl add or mcpctl import"
        )
    unknown = [name for name in names if name not in configured]
    if unknown:
        raise InstallError(
            f"mcpd has no server named {', '.join(unknown)} (configured: "
            f"{', '.join(sorted(configured))})"
        )
    chosen = names or list(configured)
    found = []
    for name in chosen:
        url = configured[name].get("url")
        found.append(Target(name, url if isinstance(url, str) and "{env:" not in url else None))
    return found


# --- Planning the edit --------------------------------------------------------------------


def _containers(editor: Editor, path: Path, text: str) -> list[tuple[str, ...]]:
    """Where the servers are: the file's own place first (where new entries go),
    then Claude Code's local scopes (`projects.PATH.mcpServers`, this user's
    alone), where entries are replaced but never added."""
    plain = parse_text(editor, path, text)  # EditorFileError: the file is left untouched
    found = [container_of(editor, plain)]
    projects = plain.get("projects") if editor.id == "claude-code" else None
    if isinstance(projects, dict):
        found += [
            ("projects", project, "mcpServers")
            for project, settings in projects.items()
            if isinstance(settings, dict) and isinstance(settings.get("mcpServers"), dict)
        ]
    return found


def _entries(editor: Editor, path: Path, text: str, container: tuple[str, ...]) -> list[Entry]:
    servers: Any = parse_text(editor, path, text)
    for key in container:
        servers = servers.get(key) if isinstance(servers, dict) else None
    if servers is None:
        return []
    if not isinstance(servers, dict):
        raise EditorFileError(f"{path}: {'.'.join(container)} is not an object of servers")
    return [classify(editor, key, raw) for key, raw in servers.items()]


def _set(editor: Editor, text: str, container: tuple[str, ...], key: str, value: Any) -> str:
    if editor.syntax == "toml":
        return codex.set_entry(text, container, key, value)
    document = jsonc.parse(text)
    text, changed = jsonc.ensure_object(document, container)
    if changed:
        document = jsonc.parse(text)
    obj = jsonc.lookup(document, container)
    assert obj is not None
    return jsonc.set_member(document, obj, key, value)


def _value_text(text: str, container: tuple[str, ...], key: str) -> str | None:
    document = jsonc.parse(text)
    obj = jsonc.lookup(document, container)
    member = obj.member(key) if obj is not None else None
    return jsonc.value_text(document, member.value) if member is not None else None


def _pick(entries: list[Entry], name: str) -> Entry | None:
    for entry in entries:
        if entry.key == name:
            return entry
    return entries[0] if entries else None


def record_id(container: tuple[str, ...], key: str) -> str:
    return json.dumps([*container, key], ensure_ascii=False)


@dataclass
class _Plan:
    editor: Editor
    path: Path
    text: str
    mcpctl: str
    socket: str | None
    recorded: dict[str, dict[str, Any]]
    changes: list[Change] = field(default_factory=list)

    def install(self, target: Target, container: tuple[str, ...], scope: str | None) -> None:
        """One server into one object of servers (`scope` None: the main one, where
        a missing entry is added)."""
        entries = _entries(self.editor, self.path, self.text, container)
        mine = [e for e in entries if e.kind == "mcpd" and e.mcpd_server == target.name]
        same_url = [
            e
            for e in entries
            if e.kind == "remote"
            and e.remote is not None
            and target.url is not None
            and url_key(e.remote.url) == url_key(target.url)
        ]
        entry = _pick(mine, target.name) or _pick(same_url, target.name)
        desired = bridge_entry(self.editor, self.mcpctl, target.name, self.socket)
        where = f" [{scope}]" if scope else ""
        if entry is None:
            if scope is not None:
                return
            if any(e.key == target.name for e in entries):
                self.changes.append(
                    Change(
                        target.name,
                        target.name,
                        "skipped",
                        f"the editor has another server named {target.name} (not "
                        f"{target.url or 'the same URL'}): rename it there, then install again",
                    )
                )
                return
            self.text = _set(self.editor, self.text, container, target.name, desired)
            self.recorded[record_id(container, target.name)] = {
                "container": list(container),
                "key": target.name,
                "server": target.name,
                "added": True,
                "installed": desired,
            }
            self.changes.append(Change(target.name, target.name, "added"))
            return
        raw = entry.raw if isinstance(entry.raw, dict) else {}
        desired.update({k: raw[k] for k in KEEP.get(self.editor.style, ()) if k in raw})
        others = [e.key for e in same_url if e is not entry]
        note = f"; {', '.join(others)} also point at it (left as they are)" if others else ""
        if raw == desired:
            self.changes.append(
                Change(entry.key + where, target.name, "unchanged", note.removeprefix("; "))
            )
            return
        rid = record_id(container, entry.key)
        if rid not in self.recorded:
            self.recorded[rid] = {
                "container": list(container),
                "key": entry.key,
                "server": target.name,
                "added": False,
                "original": entry.raw,
                "original_text": None
                if self.editor.syntax == "toml"
                else _value_text(self.text, container, entry.key),
            }
        self.recorded[rid]["installed"] = desired
        self.text = _set(self.editor, self.text, container, entry.key, desired)
        if entry.kind == "mcpd":
            action, detail = "updated", "pointed at another mcpctl or socket"
        else:
            assert entry.remote is not None
            via = "mcp-remote " if entry.remote.via == "mcp-remote" else ""
            action, detail = "replaced", f"was {via}{entry.remote.url}"
        self.changes.append(Change(entry.key + where, target.name, action, detail + note))


def plan(
    editor: Editor,
    path: Path,
    text: str,
    wanted: list[Target],
    *,
    mcpctl: str,
    socket: str | None,
    recorded: dict[str, dict[str, Any]],
) -> tuple[str, list[Change]]:
    """The new text and what changes; `recorded` (the entries mcpctl wrote, by
    `record_id`) takes the new ones."""
    work = _Plan(editor, path, text, mcpctl, socket, recorded)
    main, *local = _containers(editor, path, text)
    for target in wanted:
        work.install(target, main, None)
    for container in local:
        for target in wanted:
            work.install(target, container, f"local: {container[1]}")
    return work.text, work.changes


# --- Records and backups ------------------------------------------------------------------


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _private_root(env: Mapping[str, str]) -> Path:
    root = state_root(env)
    try:
        paths.ensure_private_dir(paths.state_dir(env), "mcpd's state directory")
        paths.ensure_private_dir(root, "mcpctl's editor records")
        paths.ensure_private_dir(root / "backups", "mcpctl's editor backups")
    except paths.UnsafePath as exc:
        raise InstallError(str(exc)) from None
    return root


def load_record(env: Mapping[str, str], editor: Editor) -> dict[str, Any] | None:
    path = record_path(env, editor)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InstallError(f"{path}: cannot read mcpctl's record: {exc}") from None
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
        raise InstallError(f"{path}: not a record this mcpctl knows")
    return record


def _save_record(env: Mapping[str, str], editor: Editor, record: dict[str, Any]) -> None:
    _private_root(env)
    data = json.dumps(record, indent=2, ensure_ascii=False).encode() + b"\n"
    write_private(record_path(env, editor), data)


def save_backup(env: Mapping[str, str], label: str, path: Path, data: bytes) -> Path:
    """Keep `data`, the content of `path` before mcpctl changes it, in mcpctl's
    private backups directory; the backup's path."""
    directory = _private_root(env) / "backups"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for attempt in range(1000):
        suffix = f"-{attempt}" if attempt else ""
        backup = directory / f"{label}-{stamp}{suffix}-{path.name}"
        try:
            fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        return backup
    raise InstallError(f"cannot make a backup in {directory}")


# --- The commands -------------------------------------------------------------------------


def install(
    editor: Editor,
    env: Mapping[str, str],
    names: list[str],
    *,
    dry_run: bool = False,
    mcpctl: str | None = None,
) -> Result:
    wanted = targets(paths.config_file(env), names)
    path = user_file(editor, env)
    file = read(editor, Location(path, "user", True))  # EditorFileError: left untouched
    record = load_record(env, editor)
    if record is not None and Path(record["file"]) != path:
        raise InstallError(
            f"mcpctl installed into {record['file']} for {editor.name} before; run mcpctl "
            f"uninstall {editor.id} first"
        )
    recorded = {
        record_id(tuple(e.get("container", file.main.path)), e["key"]): e
        for e in (record or {}).get("entries", [])
    }
    new_text, changes = plan(
        editor,
        path,
        file.text,
        wanted,
        mcpctl=mcpctl or mcpctl_path(),
        socket=socket_argument(env),
        recorded=recorded,
    )
    result = Result(path, changes)
    if new_text == file.text or dry_run:
        return result
    data = new_text.encode("utf-8")
    if record is None:
        record = {
            "version": RECORD_VERSION,
            "editor": editor.id,
            "file": str(path),
            "created": not file.exists,
            "original_sha256": _sha(file.raw) if file.exists else None,
            "exact": True,
            "backup": None,
        }
    elif record.get("installed_sha256") != _sha(file.raw) or not file.exists:
        record["exact"] = False  # changed since: only entry by entry from now on
    if file.exists:
        result.backup = save_backup(env, editor.id, path, file.raw)
        if record.get("backup") is None:
            record["backup"] = str(result.backup)
    record["installed_sha256"] = _sha(data)
    record["entries"] = list(recorded.values())
    _save_record(env, editor, record)
    replace(path, data, file.raw if file.exists else None)
    result.written = True
    return result


@dataclass
class Undone:
    path: Path
    how: str  # restored, created-removed, entries, nothing
    notes: list[str] = field(default_factory=list)


def uninstall(editor: Editor, env: Mapping[str, str]) -> Undone:
    record = load_record(env, editor)
    path = user_file(editor, env)
    if record is None:
        return Undone(path, "nothing")
    path = Path(record["file"])
    try:
        current: bytes | None = target_of(path).read_bytes()
    except FileNotFoundError:
        current = None
    except OSError as exc:
        raise InstallError(f"{path}: cannot read: {exc.strerror or exc}") from None
    undone = Undone(path, "entries")
    if current is None:
        undone.how = "nothing"
        undone.notes.append(f"{path} is gone; nothing to put back")
    elif record.get("exact") and _sha(current) == record.get("installed_sha256"):
        if record.get("created"):
            replace(path, None, current)
            undone.how = "created-removed"
        else:
            backup = Path(record["backup"])
            try:
                original = backup.read_bytes()
            except OSError as exc:
                raise InstallError(f"cannot read the backup {backup}: {exc}") from None
            if _sha(original) != record.get("original_sha256"):
                raise InstallError(f"the backup {backup} is not the file mcpctl saved")
            replace(path, original, current)
            undone.how = "restored"
    else:
        text = current.decode("utf-8", errors="strict") if current is not None else ""
        new_text = _undo_entries(editor, path, text, record["entries"], undone.notes)
        if new_text != text:
            replace(path, new_text.encode("utf-8"), current)
    record_path(env, editor).unlink(missing_ok=True)
    return undone


def _undo_entries(
    editor: Editor, path: Path, text: str, entries: list[dict[str, Any]], notes: list[str]
) -> str:
    """Each entry mcpctl wrote that is still as written: back as it was."""
    main = _containers(editor, path, text)[0]  # EditorFileError: left untouched
    for recorded in reversed(entries):
        key = recorded["key"]
        container = tuple(recorded.get("container", main))
        entry = next((e for e in _entries(editor, path, text, container) if e.key == key), None)
        if entry is None:
            notes.append(f"{key}: gone from the file already")
            continue
        if entry.raw != recorded["installed"]:
            notes.append(f"{key}: changed since mcpctl wrote it; left as it is")
            continue
        if recorded.get("added"):
            text = _remove(editor, text, container, key)
            notes.append(f"{key}: removed")
        else:
            text = _restore(editor, text, container, key, recorded)
            notes.append(f"{key}: put back as it was")
    return text


def _remove(editor: Editor, text: str, container: tuple[str, ...], key: str) -> str:
    if editor.syntax == "toml":
        return codex.remove_entry(text, container, key)
    document = jsonc.parse(text)
    obj = jsonc.lookup(document, container)
    member = obj.member(key) if obj is not None else None
    if obj is None or member is None:
        return text
    return jsonc.remove_member(document, obj, member)


def _restore(
    editor: Editor, text: str, container: tuple[str, ...], key: str, recorded: dict[str, Any]
) -> str:
    if editor.syntax == "toml":
        return codex.set_entry(text, container, key, recorded["original"])
    document = jsonc.parse(text)
    obj = jsonc.lookup(document, container)
    member = obj.member(key) if obj is not None else None
    if obj is None or member is None:
        return text
    original = recorded.get("original_text")
    if isinstance(original, str):
        return jsonc.replace_value(text, member.value, original)
    return jsonc.set_member(document, obj, key, recorded["original"])


def describe_install(editor: Editor, result: Result, env: Mapping[str, str]) -> list[str]:
    lines = [f"{editor.name}: {display(result.path, env)}"]
    width = max((len(change.key) for change in result.changes), default=0)
    for change in result.changes:
        target = f" (mcpd's {change.server})" if change.key != change.server else ""
        detail = f": {change.detail}" if change.detail else ""
        lines.append(f"  {change.key.ljust(width)}  {change.action}{target}{detail}")
    return lines
