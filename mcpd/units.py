"""`mcpd service install|uninstall`: mcpd as a systemd user service, in one command.

The repository's `systemd/mcpd.socket` and `systemd/mcpd.service` are the
templates (a wheel carries them as `mcpd/unitfiles/`); the units written are
those files with `ExecStart=` naming the mcpd that runs this command. They go
to `$XDG_CONFIG_HOME/systemd/user/`, each written atomically and private from
its first byte (`atomicfile`). What was written is recorded, with the backup
of any different unit it replaced, in `$XDG_STATE_HOME/mcpd/systemd-units.json`,
so that `uninstall` removes only files that are still exactly what `install`
wrote and puts the backups back.

Nothing is written where there is no systemd user manager to use the units
(no `systemctl`, or `systemctl --user` cannot reach one): the command says so,
and what to run instead. Every step taken is printed, one line each.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from . import paths
from .atomicfile import create_private, write_private

SOCKET_UNIT = "mcpd.socket"
SERVICE_UNIT = "mcpd.service"
UNITS = (SOCKET_UNIT, SERVICE_UNIT)
MANIFEST_NAME = "systemd-units.json"
BACKUP_DIR_NAME = "unit-backups"

_PACKAGE = Path(__file__).resolve().parent
# A wheel ships the templates inside the package; a checkout has them at its root.
TEMPLATE_DIRS = (_PACKAGE / "unitfiles", _PACKAGE.parent / "systemd")

_HEADER = "# Written by `mcpd service install`; `mcpd service uninstall` removes it.\n"
_TEMPLATE_PATH_COMMENT = (
    "# `mcpd service install` writes the path of the mcpd that runs it here (README: systemd).\n"
)
_PATH_COMMENT = "# The mcpd that ran `mcpd service install`; run that again after moving mcpd.\n"
_SYSTEMCTL_TIMEOUT = 120.0
# Characters systemd takes literally in an unquoted ExecStart= word.
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+,:@=")

Print = Callable[[str], None]


class InstallError(Exception):
    """Something that stops the command; the message says what and what to do."""


class NoUserSystemd(InstallError):
    pass


# --- what ExecStart= runs ---------------------------------------------------------


def _shebang(script: Path) -> str | None:
    try:
        with script.open("rb") as f:
            first = f.readline(4096)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    return words[0] if words else None


def _runs_with(script: Path, executable: str) -> bool:
    """Is `script` a console script of the interpreter `executable` (its venv's bin)?"""
    interpreter = _shebang(script)
    if interpreter is None:
        return False
    return os.path.abspath(interpreter) == os.path.abspath(executable) or (
        Path(os.path.abspath(interpreter)).parent == Path(os.path.abspath(executable)).parent
    )


def _script_dirs(executable: str) -> list[Path]:
    """Its own bin directory, then where pip puts console scripts (site, then --user)."""
    dirs = [Path(os.path.abspath(executable)).parent]
    for scheme in (sysconfig.get_default_scheme(), sysconfig.get_preferred_scheme("user")):
        with contextlib.suppress(KeyError):
            dirs.append(Path(sysconfig.get_path("scripts", scheme)))
    return dirs


def mcpd_command(executable: str = sys.executable, argv0: str = sys.argv[0]) -> list[str]:
    """This mcpd, as ExecStart= should run it.

    The `mcpd` console script being run, else the running interpreter's `mcpd`
    console script, else `python -m mcpd` with the running interpreter.
    """
    run = Path(argv0)
    if run.name == "mcpd" and run.is_file() and os.access(run, os.X_OK):
        return [os.path.abspath(run)]
    if not executable:
        raise InstallError("cannot tell which Python runs mcpd (sys.executable is empty)")
    for directory in _script_dirs(executable):
        script = directory / "mcpd"
        if script.is_file() and os.access(script, os.X_OK) and _runs_with(script, executable):
            return [str(script)]
    return [os.path.abspath(executable), "-m", "mcpd"]


def _exec_word(word: str, *, executable: bool) -> str:
    """One word of an ExecStart= line (systemd.service(5), "Command lines").

    `%` is a specifier everywhere; `$` is expanded in the arguments only, and
    systemd refuses quotes and backslashes in the executable's path.
    """
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in word):
        raise InstallError(f"the path {word!r} has a control character; systemd cannot run it")
    if executable and set(word) & set("'\"\\"):
        raise InstallError(
            f"systemd refuses the path {word} in ExecStart= (it has a quote or a backslash); "
            "install mcpd where its path has none"
        )
    escaped = word.replace("%", "%%")
    if not executable:
        escaped = escaped.replace("$", "$$")
    if word and set(word) <= _PLAIN:
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_start(command: Sequence[str]) -> str:
    return " ".join(_exec_word(word, executable=i == 0) for i, word in enumerate(command))


# --- the units ----------------------------------------------------------------------


def template(name: str) -> str:
    for directory in TEMPLATE_DIRS:
        with contextlib.suppress(FileNotFoundError):
            return (directory / name).read_text(encoding="utf-8")
    looked = ", ".join(str(d) for d in TEMPLATE_DIRS)
    raise InstallError(f"the unit template {name} is missing (looked in {looked}); reinstall mcpd")


def render(name: str, command: Sequence[str]) -> bytes:
    """The unit `name` as `install` writes it, running `command`."""
    lines = template(name).splitlines(keepends=True)
    if name == SERVICE_UNIT:
        starts = [i for i, line in enumerate(lines) if line.startswith("ExecStart=")]
        if len(starts) != 1:
            raise InstallError(f"the template {name} must have exactly one ExecStart= line")
        lines[starts[0]] = f"ExecStart={exec_start(command)}\n"
        lines = [_PATH_COMMENT if line == _TEMPLATE_PATH_COMMENT else line for line in lines]
    return (_HEADER + "".join(lines)).encode()


def unit_dir(env: Mapping[str, str] = os.environ) -> Path:
    """Where a user's own units go: $XDG_CONFIG_HOME/systemd/user."""
    return paths.config_dir(env).parent / "systemd" / "user"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- what install wrote -------------------------------------------------------------


class Written(msgspec.Struct):
    sha256: str
    backup: str | None = None


class Record(msgspec.Struct):
    units: dict[str, Written] = msgspec.field(default_factory=dict)


@dataclass
class Manifest:
    """$XDG_STATE_HOME/mcpd/systemd-units.json: each unit file written, by path."""

    state_dir: Path
    record: Record = field(default_factory=Record)

    @property
    def path(self) -> Path:
        return self.state_dir / MANIFEST_NAME

    @classmethod
    def load(cls, state_dir: Path) -> Manifest:
        manifest = cls(state_dir)
        try:
            data = manifest.path.read_bytes()
        except FileNotFoundError:
            return manifest
        except OSError as exc:
            raise InstallError(f"cannot read {manifest.path}: {exc.strerror}") from None
        try:
            manifest.record = msgspec.json.decode(data, type=Record)
        except msgspec.DecodeError as exc:
            raise InstallError(
                f"{manifest.path} is damaged ({exc}); it records which units "
                "`mcpd service install` wrote: remove it and run the command again"
            ) from None
        return manifest

    def get(self, path: Path) -> Written | None:
        return self.record.units.get(str(path))

    def save(self) -> None:
        if not self.record.units:
            self.path.unlink(missing_ok=True)
            return
        paths.ensure_private_dir(self.state_dir, "mcpd's state directory")
        write_private(self.path, msgspec.json.format(msgspec.json.encode(self.record)) + b"\n")

    def backup_path(self, name: str) -> Path:
        directory = self.state_dir / BACKUP_DIR_NAME
        paths.ensure_private_dir(self.state_dir, "mcpd's state directory")
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        candidate = directory / f"{name}.{stamp}"
        n = 1
        while candidate.exists():
            n += 1
            candidate = directory / f"{name}.{stamp}.{n}"
        return candidate


# --- systemctl ----------------------------------------------------------------------


@dataclass(frozen=True)
class Systemctl:
    program: str

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [self.program, "--user", *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=_SYSTEMCTL_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(
                args, 1, "", f"no answer in {_SYSTEMCTL_TIMEOUT:.0f} seconds"
            )
        except OSError as exc:
            return subprocess.CompletedProcess(args, 1, "", str(exc))

    def state(self, query: str, unit: str) -> str:
        """`is-enabled` or `is-active` of one unit, as systemctl prints it."""
        return self.run(query, unit).stdout.strip()


def _said(result: subprocess.CompletedProcess[str]) -> str:
    text = " ".join((result.stderr.strip() or result.stdout.strip()).split())
    return text or f"exit status {result.returncode}"


def find_systemctl(env: Mapping[str, str] = os.environ) -> Systemctl:
    """A `systemctl --user` that reaches a user manager, or NoUserSystemd saying why not."""
    program = shutil.which("systemctl", path=env.get("PATH", os.defpath))
    if program is None:
        raise NoUserSystemd("there is no `systemctl` on PATH")
    systemctl = Systemctl(program)
    probe = systemctl.run("show", "--property=Version")
    if probe.returncode != 0:
        raise NoUserSystemd(f"`systemctl --user` reaches no user manager ({_said(probe)})")
    return systemctl


def service_socket(env: Mapping[str, str] = os.environ) -> Path:
    """The socket mcpd.socket listens on: %t/mcpd/mcpd.sock, %t being $XDG_RUNTIME_DIR."""
    runtime = env.get("XDG_RUNTIME_DIR", "")
    base = Path(runtime) if os.path.isabs(runtime) else Path(f"/run/user/{os.getuid()}")
    return base / "mcpd" / "mcpd.sock"


def _someone_listens(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(str(path))
        except OSError:
            return False
        return True


def without_systemd(action: str, reason: str, env: Mapping[str, str] = os.environ) -> str:
    """What to do where there is no user systemd."""
    if action == "uninstall":
        return (
            f"mcpd service uninstall: {reason}; nothing was changed.\n"
            "Run `mcpd service uninstall` again in a session that has your systemd user "
            "manager (a normal login, not `su` or `sudo`)."
        )
    command = " ".join(shlex.quote(word) for word in mcpd_command())
    state = paths.state_dir(env)
    log = shlex.quote(str(state / "mcpd.log"))
    lines = [
        f"mcpd service install: {reason}; nothing was written.",
        "Without systemd, keep mcpd running under your own supervisor instead, for example "
        "from your login script (~/.profile), started with the same environment as your "
        "editors:",
        f"  (umask 077; mkdir -p {shlex.quote(str(state))}; nohup {command} >>{log} 2>&1 &)",
        "A second mcpd exits at once (one daemon per user), so starting it at every login is "
        f"safe. It listens on {paths.socket_path(env)}, where mcpctl looks by default (both "
        "follow $XDG_RUNTIME_DIR and $MCPD_SOCKET).",
    ]
    if sys.platform == "darwin":
        lines.append(
            f"On macOS a launchd agent in ~/Library/LaunchAgents with ProgramArguments "
            f"[{', '.join(mcpd_command())}] and KeepAlive does the same."
        )
    else:
        lines.append(
            "If this machine runs systemd but this session has no user manager (`su`, "
            "`sudo`, some SSH or container sessions), run `mcpd service install` from a "
            "normal login (`loginctl enable-linger` keeps the manager running without one); "
            "on WSL, enable systemd with `[boot] systemd=true` in /etc/wsl.conf."
        )
    return "\n".join(lines)


# --- install and uninstall ----------------------------------------------------------


def _missing_dirs(directory: Path) -> list[Path]:
    """`directory` and those of its parents that do not exist, outermost first."""
    missing: list[Path] = []
    probe = directory
    while not probe.exists() and not probe.is_symlink():
        missing.append(probe)
        probe = probe.parent
    return list(reversed(missing))


def _make_private_dirs(missing: list[Path], directory: Path) -> None:
    for path in missing:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
    if not directory.is_dir():
        raise InstallError(f"{directory} is not a directory; remove it")


def _read_unit(path: Path) -> bytes | None:
    if path.is_symlink():
        raise InstallError(
            f"{path} is a symbolic link (`systemctl --user link` makes those); remove it with "
            f"`systemctl --user disable {path.name}; rm {shlex.quote(str(path))}` "
            "and run the command again"
        )
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise InstallError(f"{path} is a directory, not a unit file; remove it") from None


def _ran(out: Print, dry_run: bool, words: Sequence[str]) -> None:
    out(f"{'would run' if dry_run else 'ran'}: systemctl --user {' '.join(words)}")


def _systemctl(
    systemctl: Systemctl, out: Print, dry_run: bool, *words: str, then: str = ""
) -> None:
    if dry_run:
        _ran(out, dry_run, words)
        return
    result = systemctl.run(*words)
    if result.returncode != 0:
        raise InstallError(
            f"`systemctl --user {' '.join(words)}` failed (exit status {result.returncode}): "
            f"{_said(result)}{then}"
        )
    _ran(out, dry_run, words)
    for line in (result.stdout + result.stderr).splitlines():
        if line.strip():
            out(f"  {line.strip()}")


def install(
    *, dry_run: bool, out: Print, env: Mapping[str, str] = os.environ, command: list[str] | None
) -> int:
    command = command if command is not None else mcpd_command()
    directory = unit_dir(env)
    wanted = {name: render(name, command) for name in UNITS}
    existing = {name: _read_unit(directory / name) for name in UNITS}
    try:
        systemctl = find_systemctl(env)
    except NoUserSystemd as exc:
        raise InstallError(without_systemd("install", str(exc), env)) from None
    manifest = Manifest.load(paths.state_dir(env))

    listening = systemctl.state("is-active", SOCKET_UNIT) == "active"
    enabled = systemctl.state("is-enabled", SOCKET_UNIT) == "enabled"
    running_service = systemctl.state("is-active", SERVICE_UNIT) == "active"
    address = service_socket(env)
    if not listening and _someone_listens(address):
        raise InstallError(
            f"an mcpd that systemd did not start is listening on {address}; stop it first "
            "(`mcpctl shutdown`), then run `mcpd service install` again; nothing was written"
        )

    would = "would " if dry_run else ""
    changed = [name for name in UNITS if existing[name] != wanted[name]]
    if changed:
        missing = _missing_dirs(directory)
        if not dry_run:
            _make_private_dirs(missing, directory)
        for created in missing:
            out(f"{would}{'create' if dry_run else 'created'} {created} (mode 0700)")
    for name in UNITS:
        path, new, old = directory / name, wanted[name], existing[name]
        what = f" (ExecStart={exec_start(command)})" if name == SERVICE_UNIT else ""
        if old == new:
            out(f"{path} is already up to date{what}")
            continue
        record = manifest.get(path)
        # The first backup is kept: uninstall puts back what was there before mcpd.
        backup = record.backup if record else None
        if old is None:
            verb, past = "write", "wrote"
        elif record is not None and record.sha256 == _digest(old):
            verb, past = "update", "updated"
            what += ", which an earlier `mcpd service install` wrote"
        else:
            verb, past = "replace", "replaced"
            if dry_run:
                where = f"{manifest.state_dir / BACKUP_DIR_NAME}/"
            else:
                target = manifest.backup_path(name)
                create_private(target, old)
                where = str(target)
                backup = backup or where
            out(f"{would}{'back' if dry_run else 'backed'} up {path}, a different unit, to {where}")
        if not dry_run:
            # Recorded first: a crash between the two leaves a record the file does not
            # match, which uninstall treats as a unit it did not write.
            manifest.record.units[str(path)] = Written(sha256=_digest(new), backup=backup)
            manifest.save()
            write_private(path, new)
        out(f"{would + verb if dry_run else past} {path}{what}")

    then = (
        "\nthe units are in place; once `systemctl --user` works, run: "
        f"systemctl --user daemon-reload && systemctl --user enable --now {SOCKET_UNIT}"
    )
    if changed or not (listening and enabled):
        _systemctl(systemctl, out, dry_run, "daemon-reload", then=then)
    if listening and enabled:
        out(f"{SOCKET_UNIT} is already enabled and listening")
    else:
        _systemctl(systemctl, out, dry_run, "enable", "--now", SOCKET_UNIT, then=then)
    if SERVICE_UNIT in changed and running_service:
        out(
            f"{SERVICE_UNIT} is running from the unit it started with; "
            f"`systemctl --user restart {SERVICE_UNIT}` switches to the new one now "
            "(editors reconnect by themselves)"
        )
    if not changed and listening and enabled:
        done = "nothing to do" if dry_run else "nothing changed"
        out(f"{done}: mcpd is already installed as a systemd user service")
    elif not dry_run:
        out(
            f"mcpd starts at the first connection to {address}; `mcpctl status` shows it, "
            f"`journalctl --user -u {SERVICE_UNIT}` its log"
        )
    mcpctl_socket = paths.socket_path(env)
    if mcpctl_socket != address:
        out(
            f"note: mcpctl in this environment looks for the daemon at {mcpctl_socket}, not "
            f"{address} ($MCPD_SOCKET or $XDG_RUNTIME_DIR differ from the service's)"
        )
    return 0


def uninstall(*, dry_run: bool, out: Print, env: Mapping[str, str] = os.environ) -> int:
    directory = unit_dir(env)
    manifest = Manifest.load(paths.state_dir(env))
    present = {name: directory / name for name in UNITS}
    present = {n: p for n, p in present.items() if p.exists() or p.is_symlink()}
    recorded = {name: manifest.get(directory / name) for name in UNITS}
    if not present and not any(recorded.values()):
        out(f"nothing to uninstall: no mcpd units in {directory}")
        return 0
    try:
        systemctl = find_systemctl(env)
    except NoUserSystemd as exc:
        raise InstallError(without_systemd("uninstall", str(exc), env)) from None

    ours: list[str] = []
    theirs: list[str] = []
    for name, path in present.items():
        record = recorded[name]
        data = None if path.is_symlink() or not path.is_file() else path.read_bytes()
        if record is not None and data is not None and _digest(data) == record.sha256:
            ours.append(name)
        else:
            theirs.append(name)
    if not ours and present:
        for name in theirs:
            out(f"left {present[name]} in place: `mcpd service install` did not write it")
        out(
            "nothing was changed; to remove these units yourself: "
            f"systemctl --user disable --now {' '.join(present)}; "
            f"rm {' '.join(shlex.quote(str(p)) for p in present.values())}; "
            "systemctl --user daemon-reload"
        )
        return 1

    would = "would " if dry_run else ""
    if ours:
        off = all(
            systemctl.state("is-enabled", name) in ("disabled", "static")
            and systemctl.state("is-active", name) in ("inactive", "failed")
            for name in present
        )
        if not off:
            _systemctl(systemctl, out, dry_run, "disable", "--now", *present)
        else:
            out(f"{' and '.join(present)}: already disabled and stopped")
    for name in ours:
        if not dry_run:
            present[name].unlink()
        out(f"{would}{'remove' if dry_run else 'removed'} {present[name]}")
    for name in theirs:
        record = recorded[name]
        out(
            f"left {present[name]} in place: it changed since `mcpd service install` wrote it"
            if record
            else f"left {present[name]} in place: `mcpd service install` did not write it"
        )
        if record and record.backup:
            out(f"  the unit it replaced is kept at {record.backup}")
    restored: list[str] = []
    for name in UNITS:
        record, path = recorded[name], directory / name
        if record is None or name in theirs:
            continue
        backup = Path(record.backup) if record.backup else None
        if backup is not None and backup.is_file():
            if not dry_run:
                write_private(path, backup.read_bytes())
                backup.unlink()
            restored.append(name)
            out(f"{would}{'restore' if dry_run else 'restored'} {path} from {backup}")
        elif backup is not None:
            out(f"the backup {backup} of {path} is gone; nothing to restore")
        if not dry_run:
            del manifest.record.units[str(path)]
            manifest.save()
    _systemctl(systemctl, out, dry_run, "daemon-reload")
    if restored:
        out(
            f"the restored {' and '.join(restored)} {'is' if len(restored) == 1 else 'are'} "
            f"not enabled; `systemctl --user enable --now {SOCKET_UNIT}` starts it again"
        )
    return 0


# --- the command ----------------------------------------------------------------------


def _arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mcpd service",
        description="Run mcpd as a systemd user service, started at the first connection to "
        "its socket.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="{install,uninstall}")
    install_ = actions.add_parser(
        "install",
        help="write mcpd.socket and mcpd.service to ~/.config/systemd/user, enable and start "
        "the socket",
        description="Write the units (ExecStart= is this mcpd) to "
        "$XDG_CONFIG_HOME/systemd/user, backing up any different unit there, then "
        "`systemctl --user daemon-reload` and `systemctl --user enable --now mcpd.socket`. "
        "Running it again changes nothing.",
    )
    install_.add_argument("--dry-run", action="store_true", help="say what it would do, only")
    uninstall_ = actions.add_parser(
        "uninstall",
        help="disable and stop mcpd, remove the units install wrote",
        description="`systemctl --user disable --now`, remove the units `install` wrote (a "
        "unit changed since is left, and named), restore the units it replaced, "
        "`systemctl --user daemon-reload`.",
    )
    uninstall_.add_argument("--dry-run", action="store_true", help="say what it would do, only")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str]) -> int:
    args = _arguments(argv)
    os.umask(0o077)

    def out(line: str) -> None:
        print(line, flush=True)

    try:
        if args.action == "install":
            return install(dry_run=args.dry_run, out=out, command=None)
        return uninstall(dry_run=args.dry_run, out=out)
    except (InstallError, paths.UnsafePath) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"mcpd service {args.action}: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
