"""How every mcpctl finds an SSH forward of another machine's daemon, and what
it does with one that no longer answers (tests/test_remote.py runs the real
thing through OpenSSH; these pin the edge cases down in-process)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mcpctl import client as client_module
from mcpctl.client import DaemonClient, DaemonUnavailable
from mcpd import paths

OTHER_UID = 4242


def dead_socket(path: Path) -> os.stat_result:
    """A socket file nobody listens on: what sshd leaves when its connection ends."""
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()
    return path.lstat()


@pytest.fixture
def forward(tmp_path, monkeypatch) -> Path:
    """No local daemon (an empty runtime directory); the forward's path in the
    test's directory."""
    monkeypatch.delenv("MCPD_SOCKET", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    path = tmp_path / "mcpd-user.sock"
    monkeypatch.setattr(paths, "forward_socket_path", lambda: path)
    return path


def test_a_dead_forward_is_moved_aside_and_said_to_be_down(forward):
    dead_socket(forward)
    for _ in range(2):  # first the refusal, then the sign it left
        with pytest.raises(DaemonUnavailable, match=r"the SSH forward of mcpd at .* does not"):
            DaemonClient.connect()
        assert not forward.exists()


def test_a_forward_that_replaced_the_dead_one_is_put_back(forward):
    seen = dead_socket(forward)
    forward.unlink()
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(forward))
    listening.listen()
    try:
        client_module._remove_dead_forward(forward, seen)
        assert not forward.with_name(f".{forward.name}.gone").exists()
        probe = socket.socket(socket.AF_UNIX)
        probe.connect(str(forward))  # the new forward still answers at its path
        probe.close()
    finally:
        listening.close()


def test_a_file_that_is_not_a_socket_is_left_alone(forward):
    forward.write_text("not a socket")
    client_module._remove_dead_forward(forward, forward.lstat())
    assert forward.read_text() == "not a socket"


def test_without_a_forward_the_advice_is_the_local_daemon_and_over_ssh_the_setup(
    forward, monkeypatch
):
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    with pytest.raises(DaemonUnavailable) as local:
        DaemonClient.connect()
    assert "systemctl --user enable --now mcpd.socket" in str(local.value)
    assert "remote setup" not in str(local.value)
    monkeypatch.setenv("SSH_CONNECTION", "192.0.2.1 50000 192.0.2.2 22")
    with pytest.raises(DaemonUnavailable, match="run `mcpctl remote setup HOST` there"):
        DaemonClient.connect()


def test_an_explicit_socket_never_falls_back_to_a_forward(forward, tmp_path, monkeypatch):
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(forward))
    listening.listen()
    try:
        monkeypatch.setenv("MCPD_SOCKET", str(tmp_path / "elsewhere.sock"))
        with pytest.raises(DaemonUnavailable, match=r"elsewhere\.sock"):
            DaemonClient.connect()
    finally:
        listening.close()


def test_a_socket_another_user_put_at_the_forward_path_is_refused(forward):
    """Someone else listening where this user's forward would land (a squatter
    on a shared host) gets no hello, and the file is left where it is."""
    listener = subprocess.Popen(
        [
            "setpriv",
            f"--reuid={OTHER_UID}",
            f"--regid={OTHER_UID}",
            "--clear-groups",
            "--inh-caps=+dac_override",  # to reach the test's private directory
            "--ambient-caps=+dac_override",
            "--",
            sys.executable,
            "-c",
            "import socket, sys, time\n"
            "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen()\n"
            "print('ready', flush=True); time.sleep(60)",
            str(forward),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert listener.stdout is not None
        assert listener.stdout.readline() == b"ready\n"
        with pytest.raises(DaemonUnavailable, match=f"served by uid {OTHER_UID}, not by you"):
            DaemonClient.connect()
        assert forward.lstat().st_uid == OTHER_UID
    finally:
        listener.kill()
        listener.communicate()  # waits, and closes its pipe
