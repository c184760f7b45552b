"""The daemon's socket bind-mounted into a container, as `docker run -v` or
`podman run -v` would mount it: served when the container's user is the
daemon's user (rootless Podman maps its root to the user who runs it),
refused, with the reason on both sides, when it is another uid.

The containers are what container engines are made of: Linux namespaces
(unshare) and a bind mount of the socket onto a path of the container's,
with setpriv for a process of another uid that could reach the file anyway
(root in a container without user namespaces can). Needs root.
"""

from __future__ import annotations

import os
import socket
import subprocess

import pytest
from harness import MCPCTL, server_config, wait_state
from real_peers import SIMPLE_STREAMABLE_HTTP, sdk_example, wait_until

pytestmark = pytest.mark.timeout(60)
OTHER_UID = 4242

# $1: the daemon's socket, $2: where the container sees it; then the command.
_MOUNT = 'set -eu; mount --make-rprivate /; mount --bind "$1" "$2"; shift 2; '


def in_container(mcpd_env, tmp_path, prefix: list[str], inside: str, *command: str):
    mount_point = tmp_path / "container-mcpd.sock"
    mount_point.touch()
    argv = [
        *prefix,
        "sh",
        "-c",
        _MOUNT + inside,
        "sh",
        str(mcpd_env.socket),
        str(mount_point),
        *command,
    ]
    env = {**mcpd_env.vars, "MCPD_SOCKET": str(mount_point), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False)
    mcpd_env.keep_output(["(container)", *command], result.stdout, result.stderr)
    return result, mount_point


@pytest.fixture
def daemon(mcpd_env, run_daemon, tmp_path):
    if os.getuid() != 0:
        raise AssertionError("the container tests make namespaces and mounts: run as root")
    with sdk_example(SIMPLE_STREAMABLE_HTTP, tmp_path) as peer:
        mcpd_env.write_config(server_config("ts", peer.url))
        started = run_daemon()
        wait_state(started, "ts", "connected")
        yield started


def test_a_container_whose_user_maps_to_the_daemons_user_is_served(mcpd_env, daemon, tmp_path):
    # A user namespace whose root is the daemon's user (rootless Podman's
    # mapping), its own mount namespace and host name.
    def rootless(*command: str):
        return in_container(
            mcpd_env,
            tmp_path,
            ["unshare", "--user", "--map-root-user", "--mount", "--uts", "--"],
            'hostname box; exec "$@"',
            MCPCTL,
            *command,
        )

    result, mount_point = rootless("call", "ts", "greet", '{"name": "container"}')
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello, container!\n"
    status, _ = rootless("status")
    assert status.returncode == 0, status.stderr
    assert f"mcpd on {socket.gethostname()}, reached through {mount_point}" in status.stdout


def test_a_process_of_another_uid_is_refused_and_both_sides_say_why(mcpd_env, daemon, tmp_path):
    # Root in a container without a user namespace reaches any file; here a
    # process of another uid with the capability to do so.
    other = [
        "setpriv",
        f"--reuid={OTHER_UID}",
        f"--regid={OTHER_UID}",
        "--clear-groups",
        "--inh-caps=+dac_override",
        "--ambient-caps=+dac_override",
        "--",
    ]
    result, mount_point = in_container(
        mcpd_env, tmp_path, ["unshare", "--mount", "--"], 'exec "$@"', *other, MCPCTL, "status"
    )
    assert result.returncode == 1
    assert (
        f"the socket {mount_point} is served by uid 0, not by you (uid {OTHER_UID}); "
        "refusing to talk to it" in result.stderr
    )
    assert "--userns=keep-id" in result.stderr
    wait_until(lambda: f"peer_uid={OTHER_UID}" in daemon.log, "the daemon's log line")
    line = next(line for line in daemon.log.splitlines() if f"peer_uid={OTHER_UID}" in line)
    assert "refused a connection from another user: mcpd serves only its own user" in line
    assert "--userns=keep-id" in line
    # The daemon is unharmed: its own user is served as before.
    assert mcpd_env.mcpctl("call", "ts", "greet", '{"name": "still"}').stdout == "Hello, still!\n"
