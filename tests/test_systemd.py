"""systemd integration for real: an inherited listening socket on fd 3, sd_notify
datagrams on a NOTIFY_SOCKET the test listens on, the credential directory,
and the unit files as systemd-analyze sees them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from harness import MCPD, DaemonProcess, Notifications, RawClient

REPO = Path(__file__).resolve().parent.parent


# What systemd does between fork and exec: the listener onto fd 3, LISTEN_PID set
# to the pid that exec keeps.
_EXEC_AS_SYSTEMD = """
import os, sys
fd, listen_pid, program = int(sys.argv[1]), sys.argv[2], sys.argv[3]
os.dup2(fd, 3)
os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid()) if listen_pid == "self" else listen_pid
os.execv(program, [program])
"""


def _activated(env, listener: socket.socket, notify: Notifications, listen_pid: str = "self"):
    fd = listener.fileno()
    log_path = env.root / "mcpd.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", _EXEC_AS_SYSTEMD, str(fd), listen_pid, MCPD],
            env={**env.vars, "LISTEN_FDS": "1", "NOTIFY_SOCKET": str(notify.path)},
            stdout=log,
            stderr=log,
            pass_fds=(fd,),
        )
    return DaemonProcess(env, process, log_path)


def _listening_socket(path: Path) -> socket.socket:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen()
    return sock


def test_socket_activation_serves_a_client_that_connected_before_start(mcpd_env):
    activation_path = mcpd_env.root / "activation" / "mcpd.sock"
    listener = _listening_socket(activation_path)
    notify = Notifications(mcpd_env.root / "notify.sock")
    # An editor connects while only systemd's socket exists: it must be queued, not lost.
    early = RawClient(activation_path)
    early.request("hello", {"protocol": 1, "client": "early"})
    daemon = _activated(mcpd_env, listener, notify)
    listener.close()
    try:
        notify.wait_for("READY=1", daemon.process, daemon.log_path)
        reply = early.receive()
        assert reply.error is None
        assert reply.result["pid"] == daemon.pid
        mcpd_env.vars["MCPD_SOCKET"] = str(activation_path)
        assert daemon.mcpctl("status").returncode == 0
        # It used the inherited socket and bound none of its own.
        assert not mcpd_env.socket.exists()
        inode = activation_path.stat().st_ino
    finally:
        early.close()
        assert daemon.stop() == 0
        notify.close()
    # The socket belongs to systemd: the daemon must leave it in place.
    assert activation_path.stat().st_ino == inode


def test_listen_fds_for_another_pid_is_ignored(mcpd_env):
    """LISTEN_PID names another process: the fds are not ours, bind our own socket."""
    listener = _listening_socket(mcpd_env.root / "activation" / "mcpd.sock")
    notify = Notifications(mcpd_env.root / "notify.sock")
    daemon = _activated(mcpd_env, listener, notify, listen_pid="1")
    listener.close()
    try:
        notify.wait_for("READY=1", daemon.process, daemon.log_path)
        assert mcpd_env.socket.exists()
        assert daemon.mcpctl("status").returncode == 0
    finally:
        daemon.stop()
        notify.close()


def test_ready_status_reloading_and_stopping_are_notified(mcpd_env):
    mcpd_env.write_config('[servers.a]\nurl = "https://a.example/mcp"\n')
    notify = Notifications(mcpd_env.root / "notify.sock")
    log_path = mcpd_env.root / "mcpd.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [MCPD],
            env={**mcpd_env.vars, "NOTIFY_SOCKET": str(notify.path)},
            stdout=log,
            stderr=log,
        )
    daemon = DaemonProcess(mcpd_env, process, log_path)
    try:
        ready = notify.wait_for("READY=1", process, log_path)
        assert "STATUS=1 servers: 1 connecting" in ready.split("\n")
        process.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING=1", process, log_path)
        notify.wait_for("READY=1", process, log_path)
        process.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1", process, log_path)
        assert process.wait(timeout=10) == 0
    finally:
        daemon.stop()
        notify.close()


def test_key_from_the_credentials_directory_is_used_and_cannot_be_rotated(
    mcpd_env, run_daemon, tmp_path
):
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    key = credentials / "mcpd.key"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    os.write(fd, b"Y3JlZGVudGlhbHMtZGlyZWN0b3J5LWtleS0wMDAwMDA=\n")
    os.close(fd)
    daemon = run_daemon(extra_env={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert not mcpd_env.key_file.exists()  # no key of its own was created
    result = daemon.mcpctl("rotate-key")
    assert result.returncode == 1
    assert "the key comes from systemd" in result.stderr
    assert "LoadCredential=" in result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_unit_files_pass_systemd_analyze_verify(tmp_path):
    units = tmp_path / "units"
    units.mkdir()
    for name in ("mcpd.service", "mcpd.socket"):
        text = (REPO / "systemd" / name).read_text()
        # verify checks that ExecStart exists; point it at the installed daemon.
        (units / name).write_text(text.replace("%h/.local/bin/mcpd", MCPD))
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    result = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            "--user",
            str(units / "mcpd.socket"),
            str(units / "mcpd.service"),
        ],
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    service = (REPO / "systemd" / "mcpd.service").read_text()
    assert "Type=notify" in service
    assert "UMask=0077" in service
    socket_unit = (REPO / "systemd" / "mcpd.socket").read_text()
    for line in ("ListenStream=%t/mcpd/mcpd.sock", "SocketMode=0600", "DirectoryMode=0700"):
        assert line in socket_unit
