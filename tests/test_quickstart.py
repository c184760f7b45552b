"""The README's quick start, step by step, in a home of its own: install,
`mcpd service install`, `mcpctl import`, `mcpctl install EDITOR`, done.

The home holds what a user moving to mcpd has: Claude Code's `~/.claude.json`
with its own settings, an `npx -y mcp-remote URL` entry, a native `http` entry
and a local stdio server, the two remote ones pointing at real MCP servers on
loopback (the official Python SDK's, tests/peers/python_server.py, and
server-everything).

- Install: the venv running the tests is this checkout's own install, and
  `mcpd`/`mcpctl` are its console scripts. This test does not `git clone` the
  repository: CI already runs every test from a fresh clone installed by the
  README's own command, and a clone made here would run the same files
  through that same install (and installing it again would need PyPI).
- `mcpd service install`: no systemd user manager runs in this container, so
  a recording fake `systemctl` comes first on PATH (the one of
  tests/test_service_install.py). The daemon is then started as the written
  units say: the socket unit's listener (`ListenStream=` with `%t` expanded,
  `SocketMode=`, `DirectoryMode=`) is created first, and at its first
  connection the service's `ExecStart=` runs with it on fd 3 (`LISTEN_FDS`,
  `LISTEN_PID`), `NOTIFY_SOCKET` for `Type=notify`, and `UMask=`.
- `mcpctl import` is that first connection (it asks the daemon to reload).
- `mcpctl install claude-code`, then each installed entry is launched exactly
  as Claude Code launches a stdio server (its `command`, `args` and `env`, in
  the user's environment) and answers `initialize` and `tools/list` from the
  real server, through mcpd.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import MCPCTL, MCPD, DaemonProcess, McpdEnv, Notifications, stdio_session, wait_state
from real_peers import python_server, server_everything
from test_service_install import FAKE_SYSTEMCTL

# What systemd does between fork and exec (as in tests/test_systemd.py): the
# listener onto fd 3, LISTEN_PID set to the pid that exec keeps.
EXEC_AS_SYSTEMD = """
import os, sys
fd, argv = int(sys.argv[1]), sys.argv[2:]
os.dup2(fd, 3)
os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(argv[0], argv)
"""


def unit_settings(path: Path) -> dict[str, str]:
    """`Key=value` lines of a unit file (the last one of each key)."""
    settings = {}
    for line in path.read_text().splitlines():
        key, equals, value = line.partition("=")
        if equals and not line.startswith(("#", ";")):
            settings[key.strip()] = value.strip()
    return settings


class SocketUnit:
    """mcpd.socket and mcpd.service as the user manager runs them: the
    listener now, the service at the first connection to it."""

    def __init__(self, env: McpdEnv, socket_unit: Path, service_unit: Path) -> None:
        self.env = env
        listen = unit_settings(socket_unit)
        path = Path(listen["ListenStream"].replace("%t", env.vars["XDG_RUNTIME_DIR"]))
        path.parent.mkdir(mode=int(listen["DirectoryMode"], 8), parents=True, exist_ok=True)
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        os.chmod(path, int(listen["SocketMode"], 8))
        self.listener.listen()
        self.service = unit_settings(service_unit)
        self.notify = Notifications(env.root / "notify.sock")
        self.daemon: DaemonProcess | None = None
        self.started = threading.Event()
        self.stopping = False
        self.watcher = threading.Thread(target=self._activate, daemon=True)
        self.watcher.start()

    def _activate(self) -> None:
        while not self.stopping:
            readable, _, _ = select.select([self.listener], [], [], 0.1)
            if readable:
                break
        else:
            return
        fd = self.listener.fileno()
        exec_start = self.service["ExecStart"].split()
        log_path = self.env.root / "mcpd.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-c", EXEC_AS_SYSTEMD, str(fd), *exec_start],
                env={**self.env.vars, "LISTEN_FDS": "1", "NOTIFY_SOCKET": str(self.notify.path)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(fd,),
                umask=int(self.service["UMask"], 8),
            )
        self.daemon = DaemonProcess(self.env, process, log_path)
        self.started.set()

    def stop(self) -> None:
        self.stopping = True
        self.watcher.join(timeout=5)
        if self.daemon is not None:
            assert self.daemon.stop() == 0, self.daemon.log
        self.listener.close()
        self.notify.close()


@pytest.fixture
def user(tmp_path: Path) -> McpdEnv:
    """A user of their own, with the recording fake systemctl first on PATH."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "systemctl").write_text(FAKE_SYSTEMCTL)
    (fake_bin / "systemctl").chmod(0o755)
    state = tmp_path / "systemctl-state"
    state.mkdir()
    return McpdEnv.private(
        tmp_path / "home",
        PATH=f"{fake_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        PYTHONDONTWRITEBYTECODE="1",
        FAKE_SYSTEMCTL_LOG=str(tmp_path / "systemctl.log"),
        FAKE_SYSTEMCTL_STATE=str(state),
    )


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The URLs of two real MCP servers: the Python SDK's and server-everything."""
    with python_server(tmp_path) as python, server_everything(tmp_path) as everything:
        yield python.url, everything.url


def claude_code_settings(mcp_remote_url: str, native_url: str) -> dict[str, Any]:
    return {
        "numStartups": 42,
        "theme": "dark",
        "autoUpdates": False,
        "mcpServers": {
            "notes": {
                "type": "stdio",
                "command": "npx",
                "args": ["-y", "mcp-remote", mcp_remote_url],
            },
            "everything": {"type": "http", "url": native_url},
            "filesystem": {
                "type": "stdio",
                "command": "npx",
                "args": ["-y", "@modelcontextprotocol/server-filesystem", "/home/dana/src"],
            },
        },
    }


def launch_as_claude_code(entry: dict[str, Any], env: dict[str, str]) -> list[dict[str, Any]]:
    """Start a stdio entry as Claude Code does, and send what Claude Code sends:
    initialize (2025-11-25), notifications/initialized, tools/list."""
    requests = [
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {"roots": {"listChanged": True}},
                "clientInfo": {"name": "claude-code", "version": "2.1.332"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
    ]
    argv = [entry["command"], *entry["args"]]
    replies, stderr, returncode = stdio_session(argv, {**env, **entry.get("env", {})}, requests)
    assert returncode == 0, stderr
    return replies


@pytest.mark.timeout(120)
def test_the_quick_start_in_a_fixture_home(user, servers):
    mcp_remote_url, native_url = servers
    claude_json = user.root / ".claude.json"
    claude_json.write_text(json.dumps(claude_code_settings(mcp_remote_url, native_url), indent=2))

    # 2. mcpd service install: the units, enabled and started (the socket).
    installed = subprocess.run(
        [MCPD, "service", "install"],
        env=user.vars,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    calls = Path(user.vars["FAKE_SYSTEMCTL_LOG"]).read_text().splitlines()
    assert calls[-2:] == ["--user daemon-reload", "--user enable --now mcpd.socket"]
    unit_dir = user.root / "config" / "systemd" / "user"
    assert unit_settings(unit_dir / "mcpd.service")["ExecStart"] == MCPD
    activation = SocketUnit(user, unit_dir / "mcpd.socket", unit_dir / "mcpd.service")
    try:
        # mcpctl finds the daemon where the socket unit listens.
        assert activation.path == user.socket
        assert not activation.started.is_set()  # nothing runs before the first connection
        inode = activation.path.stat().st_ino

        # 3. mcpctl import: both remote entries, into mcpd's config; the
        # reload it asks for is the first connection, which starts mcpd.
        imported = user.mcpctl("import", timeout=30)
        assert imported.returncode == 0, imported.stdout + imported.stderr
        assert "added to ~/config/mcpd/config.toml: notes, everything" in imported.stdout
        assert "mcpd reloaded its config" in imported.stdout
        assert activation.started.is_set()
        daemon = activation.daemon
        assert daemon is not None
        activation.notify.wait_for("READY=1", daemon.process, daemon.log_path)
        assert activation.path.stat().st_ino == inode  # it serves the unit's socket
        for name in ("notes", "everything"):
            wait_state(daemon, name, "connected")

        # 4. mcpctl install claude-code: the two entries now launch mcpctl;
        # the local server and Claude Code's own settings are left alone.
        done = user.mcpctl("install", "claude-code")
        assert done.returncode == 0, done.stdout + done.stderr
        settings = json.loads(claude_json.read_text())
        assert settings["numStartups"] == 42
        assert settings["mcpServers"]["filesystem"]["command"] == "npx"
        session = {key: user.vars[key] for key in ("HOME", "PATH", "XDG_RUNTIME_DIR")}
        shown = {}
        for name in ("notes", "everything"):
            entry = settings["mcpServers"][name]
            assert entry["command"] == MCPCTL
            assert entry["args"][0] == "stdio"
            assert entry["args"][-1] == name
            # Done: the entry, launched as the editor launches it, is the server.
            initialized, listed = launch_as_claude_code(entry, session)
            assert "error" not in initialized, initialized
            assert "error" not in listed, listed
            shown[name] = (
                initialized["result"]["serverInfo"]["name"],
                {tool["name"] for tool in listed["result"]["tools"]},
            )
        assert shown["notes"][0] == "mcpd-test-python-peer"
        assert "echo" in shown["notes"][1]
        assert shown["everything"][0] == "mcp-servers/everything"
        assert "echo" in shown["everything"][1]
    finally:
        activation.stop()
