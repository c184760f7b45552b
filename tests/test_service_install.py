"""`mcpd service install` / `uninstall`: the systemd user units for this mcpd.

No systemd user manager runs in this container (and none should be touched on
a developer's machine), so most tests put a FAKE `systemctl` first on PATH: a
small shell script that appends its argv to a file and exits with a chosen
status, keeping just enough state (enabled, active) for `install` twice and
`uninstall` to be told apart. The real `systemctl` binary, where this machine
has one, is run too, with no user bus to reach: that is exactly the "no user
systemd" path (containers, WSL without systemd), and its message is asserted.
The written units are checked by `systemd-analyze verify` when it is
installed, else parsed.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import MCPD

from mcpd import units

REPO = Path(__file__).resolve().parent.parent
REAL_SYSTEMCTL = shutil.which("systemctl")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")

FAKE_SYSTEMCTL = r"""#!/bin/sh
# A fake systemctl (no user systemd runs where the tests run): it appends its argv
# to $FAKE_SYSTEMCTL_LOG; the subcommand named by $FAKE_SYSTEMCTL_FAIL fails with
# status $FAKE_SYSTEMCTL_STATUS, as `systemctl --user` does without a manager.
printf '%s\n' "$*" >>"$FAKE_SYSTEMCTL_LOG"
[ "$1" = "--user" ] || { echo "fake systemctl: --user only" >&2; exit 2; }
shift
if [ "$1" = "$FAKE_SYSTEMCTL_FAIL" ]; then
    echo "Failed to connect to bus: No medium found" >&2
    exit "${FAKE_SYSTEMCTL_STATUS:-1}"
fi
state="$FAKE_SYSTEMCTL_STATE"
case "$1" in
    show) echo "Version=252" ;;
    daemon-reload) ;;
    is-enabled) [ -e "$state/enabled-$2" ] && { echo enabled; exit 0; }; echo disabled; exit 1 ;;
    is-active) [ -e "$state/active-$2" ] && { echo active; exit 0; }; echo inactive; exit 3 ;;
    enable|disable)
        verb="$1"; shift; [ "$1" = "--now" ] && shift
        for unit in "$@"; do
            if [ "$verb" = enable ]; then
                touch "$state/enabled-$unit" "$state/active-$unit"
                echo "Created symlink sockets.target.wants/$unit -> $unit." >&2
            else
                rm -f "$state/enabled-$unit" "$state/active-$unit"
                echo "Removed sockets.target.wants/$unit." >&2
            fi
        done ;;
    *) echo "fake systemctl: unexpected $*" >&2; exit 2 ;;
esac
"""

QUERIES = ("show", "is-enabled", "is-active")


@dataclass
class User:
    root: Path
    env: dict[str, str]
    log: Path
    state: Path

    @property
    def unit_dir(self) -> Path:
        return self.root / "config" / "systemd" / "user"

    @property
    def socket_unit(self) -> Path:
        return self.unit_dir / "mcpd.socket"

    @property
    def service_unit(self) -> Path:
        return self.unit_dir / "mcpd.service"

    @property
    def manifest(self) -> Path:
        return self.root / "state" / "mcpd" / "systemd-units.json"

    def calls(self) -> list[str]:
        """The fake systemctl's argv, one line per call, and forget them."""
        if not self.log.exists():
            return []
        lines = self.log.read_text().splitlines()
        self.log.unlink()
        return lines

    def mcpd(self, *args: str, program: tuple[str, ...] = (MCPD,)) -> subprocess.CompletedProcess:
        # umask 0: the files must be private because of how they are created, not
        # thanks to the caller's umask.
        return subprocess.run(
            [*program, "service", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            umask=0,
        )


@pytest.fixture
def user(tmp_path: Path) -> User:
    """A home of its own with the fake systemctl first on PATH."""
    root = tmp_path / "home"
    root.mkdir()
    (root / "run").mkdir(mode=0o700)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "systemctl"
    fake.write_text(FAKE_SYSTEMCTL)
    fake.chmod(0o755)
    state = tmp_path / "systemctl-state"
    state.mkdir()
    env = {
        "PATH": f"{fake_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(root),
        "XDG_CONFIG_HOME": str(root / "config"),
        "XDG_STATE_HOME": str(root / "state"),
        "XDG_RUNTIME_DIR": str(root / "run"),
        "FAKE_SYSTEMCTL_LOG": str(tmp_path / "systemctl.log"),
        "FAKE_SYSTEMCTL_STATE": str(state),
    }
    return User(root, env, tmp_path / "systemctl.log", state)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _mutating(calls: list[str]) -> list[str]:
    return [call for call in calls if call.split()[1] not in QUERIES]


def _verify(socket_unit: Path, service_unit: Path, runtime: Path) -> None:
    """systemd's own parser on the written units, else a plain parse."""
    if SYSTEMD_ANALYZE is None:
        for path in (socket_unit, service_unit):
            parser = configparser.ConfigParser(interpolation=None, strict=True)
            parser.optionxform = str  # type: ignore[assignment,method-assign]
            parser.read_string(path.read_text())
            assert "Install" in parser
        return
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--user", str(socket_unit), str(service_unit)],
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_install_writes_private_units_for_this_mcpd_and_enables_the_socket(user):
    result = user.mcpd("install")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert user.calls() == [
        "--user show --property=Version",
        "--user is-active mcpd.socket",
        "--user is-enabled mcpd.socket",
        "--user is-active mcpd.service",
        "--user daemon-reload",
        "--user enable --now mcpd.socket",
    ]
    unit_dir = user.unit_dir
    assert result.stdout.splitlines() == [
        f"created {user.root / 'config'} (mode 0700)",
        f"created {user.root / 'config' / 'systemd'} (mode 0700)",
        f"created {unit_dir} (mode 0700)",
        f"wrote {user.socket_unit}",
        f"wrote {user.service_unit} (ExecStart={MCPD})",
        "ran: systemctl --user daemon-reload",
        "ran: systemctl --user enable --now mcpd.socket",
        "  Created symlink sockets.target.wants/mcpd.socket -> mcpd.socket.",
        f"mcpd starts at the first connection to {user.root / 'run' / 'mcpd' / 'mcpd.sock'}; "
        "`mcpctl status` shows it, `journalctl --user -u mcpd.service` its log",
    ]
    # Private from the start, whatever the umask (the command ran with umask 0).
    for path in (user.root / "config", user.root / "config" / "systemd", unit_dir):
        assert _mode(path) == 0o700
    for path in (user.socket_unit, user.service_unit, user.manifest):
        assert _mode(path) == 0o600
    assert not list(unit_dir.glob(".*"))  # no temporary left

    # The templates, hardening and all, with ExecStart= naming this mcpd.
    service = user.service_unit.read_text().splitlines()
    assert f"ExecStart={MCPD}" in service
    template = (REPO / "systemd" / "mcpd.service").read_text().splitlines()
    kept = [line for line in template if line and not line.startswith(("#", "ExecStart="))]
    assert [line for line in service if line in kept] == kept
    for line in ("NoNewPrivileges=yes", "MemoryDenyWriteExecute=yes", "UMask=0077"):
        assert line in service
    # The template's note about the path is replaced by one about this install.
    assert units._TEMPLATE_PATH_COMMENT.rstrip("\n") in template
    assert units._TEMPLATE_PATH_COMMENT.rstrip("\n") not in service
    assert service[0] == "# Written by `mcpd service install`; `mcpd service uninstall` removes it."
    socket_text = user.socket_unit.read_text()
    assert socket_text.endswith((REPO / "systemd" / "mcpd.socket").read_text())
    _verify(user.socket_unit, user.service_unit, user.root / "run")

    manifest = json.loads(user.manifest.read_text())
    assert set(manifest["units"]) == {str(user.socket_unit), str(user.service_unit)}


def test_install_twice_changes_nothing_the_second_time_and_says_so(user):
    assert user.mcpd("install").returncode == 0
    user.calls()
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in user.unit_dir.iterdir()}
    manifest = user.manifest.read_bytes()
    again = user.mcpd("install")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        f"{user.socket_unit} is already up to date",
        f"{user.service_unit} is already up to date (ExecStart={MCPD})",
        "mcpd.socket is already enabled and listening",
        "nothing changed: mcpd is already installed as a systemd user service",
    ]
    assert _mutating(user.calls()) == []
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in user.unit_dir.iterdir()} == before
    assert user.manifest.read_bytes() == manifest


def test_dry_run_writes_nothing_and_runs_only_queries(user):
    result = user.mcpd("install", "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"would write {user.socket_unit}" in lines
    assert f"would write {user.service_unit} (ExecStart={MCPD})" in lines
    assert lines[-2:] == [
        "would run: systemctl --user daemon-reload",
        "would run: systemctl --user enable --now mcpd.socket",
    ]
    assert _mutating(user.calls()) == []
    assert not (user.root / "config").exists()
    assert not (user.root / "state").exists()


def test_a_different_unit_is_backed_up_and_put_back_by_uninstall(user):
    """The README's old manual install: the template copied by hand, socket enabled."""
    user.unit_dir.mkdir(parents=True)
    original = (REPO / "systemd" / "mcpd.service").read_bytes()
    user.service_unit.write_bytes(original)
    result = user.mcpd("install")
    assert result.returncode == 0, result.stderr
    (backup,) = (user.root / "state" / "mcpd" / "unit-backups").iterdir()
    assert backup.read_bytes() == original
    assert _mode(backup) == 0o600
    lines = result.stdout.splitlines()
    assert f"backed up {user.service_unit}, a different unit, to {backup}" in lines
    assert f"replaced {user.service_unit} (ExecStart={MCPD})" in lines
    assert f"wrote {user.socket_unit}" in lines
    user.calls()

    result = user.mcpd("uninstall")
    assert result.returncode == 0, result.stderr
    assert _mutating(user.calls()) == [
        "--user disable --now mcpd.socket mcpd.service",
        "--user daemon-reload",
    ]
    assert result.stdout.splitlines() == [
        "ran: systemctl --user disable --now mcpd.socket mcpd.service",
        "  Removed sockets.target.wants/mcpd.socket.",
        "  Removed sockets.target.wants/mcpd.service.",
        f"removed {user.socket_unit}",
        f"removed {user.service_unit}",
        f"restored {user.service_unit} from {backup}",
        "ran: systemctl --user daemon-reload",
        "the restored mcpd.service is not enabled; "
        "`systemctl --user enable --now mcpd.socket` starts it again",
    ]
    assert user.service_unit.read_bytes() == original
    assert not user.socket_unit.exists()
    assert not backup.exists()
    assert not user.manifest.exists()


def test_uninstall_disables_removes_reloads_and_is_idempotent(user):
    assert user.mcpd("install").returncode == 0
    user.calls()
    result = user.mcpd("uninstall", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert _mutating(user.calls()) == []
    assert user.service_unit.exists()
    assert f"would remove {user.service_unit}" in result.stdout.splitlines()

    result = user.mcpd("uninstall")
    assert result.returncode == 0, result.stderr
    assert _mutating(user.calls()) == [
        "--user disable --now mcpd.socket mcpd.service",
        "--user daemon-reload",
    ]
    assert list(user.unit_dir.iterdir()) == []
    assert not user.manifest.exists()

    again = user.mcpd("uninstall")
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"nothing to uninstall: no mcpd units in {user.unit_dir}\n"
    assert user.calls() == []


def test_uninstall_leaves_a_unit_changed_since_install(user):
    assert user.mcpd("install").returncode == 0
    edited = user.service_unit.read_text() + "Environment=EDITED=1\n"
    user.service_unit.write_text(edited)
    user.calls()
    result = user.mcpd("uninstall")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"removed {user.socket_unit}" in lines
    assert (
        f"left {user.service_unit} in place: it changed since `mcpd service install` wrote it"
        in lines
    )
    assert user.service_unit.read_text() == edited
    assert not user.socket_unit.exists()
    assert "--user daemon-reload" in user.calls()


def test_uninstall_leaves_units_it_did_not_write(user):
    user.unit_dir.mkdir(parents=True)
    for name in ("mcpd.socket", "mcpd.service"):
        shutil.copy(REPO / "systemd" / name, user.unit_dir / name)
    result = user.mcpd("uninstall")
    assert result.returncode == 1
    assert f"left {user.service_unit} in place: `mcpd service install` did not write it" in (
        result.stdout
    )
    assert "nothing was changed" in result.stdout
    assert _mutating(user.calls()) == []
    assert sorted(p.name for p in user.unit_dir.iterdir()) == ["mcpd.service", "mcpd.socket"]


def test_a_moved_mcpd_updates_its_own_unit_without_a_backup(user, monkeypatch):
    for key, value in user.env.items():
        monkeypatch.setenv(key, value)
    lines: list[str] = []
    assert units.install(dry_run=False, out=lines.append, command=["/opt/old/bin/mcpd"]) == 0
    (user.state / "active-mcpd.service").touch()  # the service runs
    lines.clear()
    assert units.install(dry_run=False, out=lines.append, command=[MCPD]) == 0
    assert f"{user.socket_unit} is already up to date" in lines
    assert (
        f"updated {user.service_unit} (ExecStart={MCPD}), "
        "which an earlier `mcpd service install` wrote" in lines
    )
    assert any("systemctl --user restart mcpd.service` switches" in line for line in lines)
    assert not (user.root / "state" / "mcpd" / "unit-backups").exists()
    assert f"ExecStart={MCPD}\n" in user.service_unit.read_text()
    assert units.uninstall(dry_run=False, out=lines.append) == 0
    assert list(user.unit_dir.iterdir()) == []


def test_no_systemctl_on_path_writes_nothing_and_says_what_to_do(user, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    user.env["PATH"] = str(empty)
    result = user.mcpd("install")
    assert result.returncode == 1
    assert result.stdout == ""
    message = result.stderr
    assert message.startswith(
        "mcpd service install: there is no `systemctl` on PATH; nothing was written."
    )
    assert f"nohup {MCPD} >>" in message
    assert f"It listens on {user.root / 'run' / 'mcpd' / 'mcpd.sock'}, where mcpctl looks" in (
        message
    )
    assert not (user.root / "config").exists()
    assert not (user.root / "state").exists()
    # Nothing installed: uninstall has nothing to do, systemd or not.
    assert user.mcpd("uninstall").returncode == 0


def test_fake_systemctl_without_a_manager_writes_nothing(user):
    user.env["FAKE_SYSTEMCTL_FAIL"] = "show"
    result = user.mcpd("install")
    assert result.returncode == 1
    assert result.stderr.startswith(
        "mcpd service install: `systemctl --user` reaches no user manager "
        "(Failed to connect to bus: No medium found); nothing was written."
    )
    assert user.calls() == ["--user show --property=Version"]
    assert not (user.root / "config").exists()


@pytest.mark.skipif(REAL_SYSTEMCTL is None, reason="no systemctl on this machine")
def test_real_systemctl_with_no_user_manager_writes_nothing(user):
    """The real binary, with no user bus to reach (an empty XDG_RUNTIME_DIR, no
    DBUS_SESSION_BUS_ADDRESS): the path taken in containers and on WSL without
    systemd. A user manager running on this machine is never reached."""
    user.env["PATH"] = str(Path(REAL_SYSTEMCTL).parent) + ":/usr/bin:/bin"
    result = user.mcpd("install")
    assert result.returncode == 1, result.stdout
    assert "mcpd service install: `systemctl --user` reaches no user manager (" in result.stderr
    assert "Failed to connect to bus" in result.stderr
    assert "; nothing was written." in result.stderr
    assert "nohup" in result.stderr
    assert "loginctl enable-linger" in result.stderr
    assert not (user.root / "config").exists()
    assert not (user.root / "state").exists()


def test_a_failing_daemon_reload_is_reported_with_what_to_run(user):
    user.env["FAKE_SYSTEMCTL_FAIL"] = "daemon-reload"
    result = user.mcpd("install")
    assert result.returncode == 1
    assert "`systemctl --user daemon-reload` failed (exit status 1)" in result.stderr
    assert (
        "once `systemctl --user` works, run: systemctl --user daemon-reload && "
        "systemctl --user enable --now mcpd.socket"
    ) in result.stderr
    assert f"wrote {user.service_unit}" in result.stdout
    assert _mutating(user.calls()) == ["--user daemon-reload"]


def test_a_symlinked_unit_is_refused_before_anything_is_written(user):
    user.unit_dir.mkdir(parents=True)
    (user.unit_dir / "mcpd.service").symlink_to(REPO / "systemd" / "mcpd.service")
    result = user.mcpd("install")
    assert result.returncode == 1
    assert "is a symbolic link" in result.stderr
    assert not user.socket_unit.exists()
    assert user.calls() == []


def test_an_mcpd_running_outside_systemd_is_named_and_nothing_written(user):
    path = user.root / "run" / "mcpd" / "mcpd.sock"
    path.parent.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen()
        result = user.mcpd("install")
    assert result.returncode == 1
    assert f"an mcpd that systemd did not start is listening on {path}" in result.stderr
    assert "`mcpctl shutdown`" in result.stderr
    assert not (user.root / "config").exists()


def test_python_m_mcpd_finds_the_console_script_of_its_interpreter(user):
    result = user.mcpd("install", "--dry-run", program=(sys.executable, "-m", "mcpd"))
    assert result.returncode == 0, result.stderr
    assert f"would write {user.service_unit} (ExecStart={MCPD})" in result.stdout


def test_without_a_console_script_execstart_is_python_m_mcpd(tmp_path, monkeypatch):
    python = tmp_path / "venv" / "bin" / "python3"
    python.parent.mkdir(parents=True)
    python.symlink_to(sys.executable)
    monkeypatch.setattr(units, "_script_dirs", lambda executable: [python.parent])
    assert units.mcpd_command(str(python), argv0="/somewhere/pytest") == [
        str(python),
        "-m",
        "mcpd",
    ]
    script = python.parent / "mcpd"
    script.write_text(f"#!{python}\nimport sys\n")
    script.chmod(0o755)
    assert units.mcpd_command(str(python), argv0="/somewhere/pytest") == [str(script)]
    # A script of another interpreter is not this mcpd.
    script.write_text("#!/usr/bin/python3\nimport sys\n")
    assert units.mcpd_command(str(python), argv0="/somewhere/pytest")[1:] == ["-m", "mcpd"]


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="needs systemd-analyze")
def test_execstart_quoting_survives_systemds_parser(tmp_path):
    """A path with spaces, '%' and '$' names exactly that file to systemd."""
    odd = tmp_path / "my tools %h $HOME" / "mcpd"
    odd.parent.mkdir()
    odd.symlink_to(MCPD)
    units_dir = tmp_path / "units"
    units_dir.mkdir()
    for name in units.UNITS:
        (units_dir / name).write_bytes(units.render(name, [str(odd), "--log-level", "debug"]))
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    _verify(units_dir / "mcpd.socket", units_dir / "mcpd.service", runtime)
    service = (units_dir / "mcpd.service").read_text()
    line = f'ExecStart="{tmp_path}/my tools %%h $HOME/mcpd" --log-level debug'
    assert line in service.splitlines()
    # verify does catch a mis-split or mis-expanded path: the same line unquoted fails.
    broken = units_dir / "broken.service"
    broken.write_text(service.replace(line, f"ExecStart={odd}"))
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--user", str(broken)],
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0


def test_arguments_escape_dollar_and_percent_and_quotes():
    assert units.exec_start(["/usr/bin/python3", "-m", "mcpd"]) == "/usr/bin/python3 -m mcpd"
    assert units.exec_start(["/x", 'a $b %c "d" \\e']) == '/x "a $$b %%c \\"d\\" \\\\e"'


def test_paths_systemd_cannot_run_are_refused():
    with pytest.raises(units.InstallError, match="quote or a backslash"):
        units.exec_start(["/opt/it's/mcpd"])


def test_a_control_character_in_the_path_is_refused():
    with pytest.raises(units.InstallError, match="control character"):
        units.exec_start(["/opt/mc\npd"])
