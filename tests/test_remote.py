"""Editors on a remote host use this machine's daemon through a real OpenSSH
forward of its socket (Debian's sshd and ssh, on loopback; tests/remote_host.py).

The "remote host" is sshd in namespaces of its own: its own host name and its
own /tmp, where `RemoteForward /tmp/mcpd-%r.sock ...` (the block `mcpctl
remote setup --write` adds to the ssh config) lands. Everything on the remote
side runs through ssh, as a user's commands and editors would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from harness import (
    MCPCTL,
    Editor,
    browse,
    finish,
    server_config,
    start_auth,
    status_of,
    wait_state,
)
from real_peers import SIMPLE_STREAMABLE_HTTP, sdk_example, wait_until
from remote_host import HOST_ALIAS, HOST_NAME, PROJECT, RemoteHost, remote_host

from mcpctl.remote import REMOTE_PATH, block

pytestmark = pytest.mark.timeout(180)
FORWARD = REMOTE_PATH.replace("%r", "root")
GREET = {"name": "remote"}


@pytest.fixture
def remote():
    with remote_host() as host:
        yield host


def set_up(mcpd_env, remote: RemoteHost) -> None:
    """`mcpctl remote setup HOST --write`, as the README says, on the test's ssh config."""
    result = mcpd_env.mcpctl(
        "remote", "setup", HOST_ALIAS, "--write", "--ssh-config", str(remote.ssh_config)
    )
    assert result.returncode == 0, result.stderr
    assert f"RemoteForward {REMOTE_PATH} {mcpd_env.socket}" in remote.ssh_config.read_text()
    assert f'mcpctl status` there says "mcpd on {socket.gethostname()}"' in result.stdout


def remote_mcpctl(mcpd_env, remote: RemoteHost, *args: str) -> subprocess.CompletedProcess[str]:
    result = remote.run(MCPCTL, *args)
    mcpd_env.keep_output(["(remote)", *args], result.stdout, result.stderr)
    return result


def greeting(answer: dict) -> str:
    assert "result" in answer, answer
    return answer["result"]["content"][0]["text"]


def test_everything_mcpctl_does_works_through_the_forward_and_survives_a_dropped_connection(
    mcpd_env, run_daemon, remote, tmp_path
):
    with sdk_example(SIMPLE_STREAMABLE_HTTP, tmp_path) as peer:
        mcpd_env.write_config(server_config("ts", peer.url))
        daemon = run_daemon()
        wait_state(daemon, "ts", "connected")
        set_up(mcpd_env, remote)
        connection = remote.forward()

        # The remote host is another machine, without a daemon of its own.
        assert remote.run("hostname").stdout.strip() == HOST_NAME
        status = remote_mcpctl(mcpd_env, remote, "status")
        assert status.returncode == 0, status.stderr
        assert f"mcpd on {socket.gethostname()}, reached through {FORWARD}" in status.stdout
        assert "connected" in status.stdout
        called = remote_mcpctl(mcpd_env, remote, "call", "ts", "greet", '{"name": "remote"}')
        assert called.stdout == "Hello, remote!\n", called.stderr
        tools = remote_mcpctl(mcpd_env, remote, "tools", "ts")
        assert "greet" in tools.stdout

        # An editor on the remote host: its bridge, 20 calls at once.
        editor = Editor(
            mcpd_env,
            "ts",
            mcpd_env.root / "remote-editor.log",
            remote.ssh_argv(MCPCTL, "stdio", "ts"),
        )
        try:
            editor.initialize()
            ids = [
                editor.request_async(
                    "tools/call", {"name": "greet", "arguments": {"name": f"call {n}"}}
                )
                for n in range(20)
            ]
            answers = [greeting(editor.response(i)) for i in ids]
            assert answers == [f"Hello, call {n}!" for n in range(20)]

            # The connection that carried the forward drops. The editor is told
            # what happened and what to do; the dead socket is cleared away.
            os.kill(connection, signal.SIGKILL)
            wait_until(lambda: "does not answer" in editor.stderr, "the bridge to see it", 20)
            refused = editor.request("tools/call", {"name": "greet", "arguments": GREET})
            message = refused["error"]["message"]
            assert f"the SSH forward of mcpd at {FORWARD} does not answer" in message
            assert "Connect again from there" in message
            assert "systemctl" not in message
            gone = remote.run("test", "-e", FORWARD)
            assert gone.returncode == 1, "the dead forward socket was left in the way"
            status = remote_mcpctl(mcpd_env, remote, "status")
            assert status.returncode == 1
            assert "does not answer" in status.stderr

            # Connecting again brings the forward back (ExitOnForwardFailure:
            # it really is up), and the editor's session goes on by itself.
            remote.forward()
            wait_until(lambda: "attached to 'ts'" in editor.stderr, "the bridge to re-attach", 20)
            assert greeting(editor.call("greet", GREET)) == "Hello, remote!"
            assert status_of(daemon, "ts")["state"] == "connected"
        finally:
            editor.close()


def test_a_sign_in_started_on_the_remote_host_completes_in_the_local_browser(
    mcpd_env, run_daemon, remote, tmp_path
):
    with sdk_example(SIMPLE_STREAMABLE_HTTP, tmp_path, "--oauth") as peer:
        url = peer.url.replace("127.0.0.1", "localhost")  # as the example names itself
        mcpd_env.write_config("[daemon]\ncallback_port = 0\n" + server_config("ts", url))
        daemon = run_daemon()
        wait_state(daemon, "ts", "needs_auth")
        set_up(mcpd_env, remote)
        remote.forward()

        auth, link = start_auth(mcpd_env, "ts", via=remote.ssh_argv())
        # The browser, here on the daemon's machine, ends at its loopback callback.
        status, final, page = browse(link)
        assert status == 200, page
        assert "Signed in" in page
        assert final.startswith("http://127.0.0.1:")
        code, out, err = finish(auth)
        assert code == 0, err
        assert "Signed in; ts is connected." in out
        called = remote_mcpctl(mcpd_env, remote, "call", "ts", "greet", '{"name": "remote"}')
        assert called.stdout == "Hello, remote!\n", called.stderr
        # Nothing of the sign-in is on the remote host: the tokens are here.
        stored = remote.run("sh", "-c", "ls -A ~/.local/state/mcpd 2>/dev/null | wc -l")
        assert stored.stdout.strip() == "0"


def test_remote_setup_without_write_prints_the_block_and_changes_nothing(mcpd_env, tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text("Host *\n    ServerAliveInterval 30\n")
    result = mcpd_env.mcpctl("remote", "setup", "devbox", "--ssh-config", str(config))
    assert result.returncode == 0, result.stderr
    assert f"Host devbox\n    RemoteForward {REMOTE_PATH} {mcpd_env.socket}\n" in result.stdout
    assert "--write" in result.stdout
    assert config.read_text() == "Host *\n    ServerAliveInterval 30\n"
    # Written twice: once.
    for _ in range(2):
        written = mcpd_env.mcpctl(
            "remote", "setup", "devbox", "--write", "--ssh-config", str(config)
        )
        assert written.returncode == 0, written.stderr
    text = config.read_text()
    assert text.startswith("Host *\n    ServerAliveInterval 30\n\n# mcpd:")
    assert text.count("RemoteForward") == 1
    assert "nothing changed" in written.stdout
    backups = list(Path(mcpd_env.state_dir / "editors" / "backups").glob("ssh-*-ssh_config"))
    assert [b.read_text() for b in backups] == ["Host *\n    ServerAliveInterval 30\n"]


def test_the_readme_block_is_what_remote_setup_writes():
    readme = (PROJECT / "README.md").read_text()
    shown = readme.split("<!-- remote setup block -->\n```\n", 1)[1].split("```", 1)[0]
    written = block("devbox", Path("/run/user/1000/mcpd/mcpd.sock"))
    assert shown == written.replace(f"daemon of {socket.gethostname()} ", "daemon of laptop ")
