"""A "remote host" reached over real OpenSSH (Debian's sshd and ssh), on loopback.

sshd runs in mount and UTS namespaces of its own: a host name of its own and
a /tmp of its own (where the forward of the daemon's socket lands, as on a
real remote host), sharing the rest of this machine's files, so the project's
own mcpctl runs there. It listens on 127.0.0.1 with a throwaway host key and
accepts one throwaway user key. Needs root (namespaces, and sshd's login).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from real_peers import free_port, wait_until

SSHD = "/usr/sbin/sshd"
HOST_ALIAS = "mcpd-remote"
HOST_NAME = "mcpd-remote-test"
PROJECT = Path(__file__).resolve().parents[1]
# The remote host's /tmp is its own; the project (and its venv) is shared when
# it lives under /tmp (CI's clone may).
SHARED_UNDER_TMP = sorted({str(p) for p in (PROJECT, Path(sys.prefix)) if p.is_relative_to("/tmp")})

_NAMESPACE_SCRIPT = r"""
set -eu
dir=$1; shift
mount --make-rprivate /
mkdir -p "$dir/host-tmp"
mount --bind /tmp "$dir/host-tmp"
mount -t tmpfs -o mode=1777 tmpfs /tmp
for shared in "$@"; do
    mkdir -p "$shared"
    mount --bind "$dir/host-tmp${shared#/tmp}" "$shared"
done
hostname "$HOST_NAME"
exec "$SSHD" -D -e -f "$dir/sshd_config"
"""


@dataclass
class RemoteHost:
    directory: Path
    ssh_config: Path
    process: subprocess.Popen[bytes]
    log: Path

    def ssh_argv(self, *command: str, forward: bool = False) -> list[str]:
        """ssh to the remote host running `command`; with no forwarding unless `forward`
        (the forward is the job of one connection, as a user's login carries it)."""
        options = [] if forward else ["-o", "ClearAllForwardings=yes"]
        # ssh hands the remote shell one line: quoted, each word stays one.
        remote_command = [shlex.join(command)] if command else []
        return ["ssh", "-F", str(self.ssh_config), *options, HOST_ALIAS, *remote_command]

    def run(self, *command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.ssh_argv(*command), capture_output=True, text=True, timeout=timeout, check=False
        )

    def forward(self) -> int:
        """Open the connection that carries the forward, as `ssh HOST` with the
        config block would; returns once the forward is up (ssh -f waits for it,
        and ExitOnForwardFailure makes a failed one an error). Its pid."""
        control = self.directory / f"control-{os.urandom(4).hex()}"  # a killed one stays
        argv = self.ssh_argv(forward=True)
        started = subprocess.run(
            [
                *argv[:-1],
                "-f",
                "-N",
                "-M",
                "-S",
                str(control),
                "-o",
                "ExitOnForwardFailure=yes",
                argv[-1],
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert started.returncode == 0, started.stderr
        check = subprocess.run(
            ["ssh", "-F", str(self.ssh_config), "-S", str(control), "-O", "check", HOST_ALIAS],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        found = re.search(r"pid=(\d+)", check.stderr)
        assert found, check.stderr
        return int(found.group(1))


def _keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mcpd-test", "-f", str(path)],
        check=True,
    )
    return path.with_suffix(".pub").read_text().strip()


@contextlib.contextmanager
def remote_host() -> Iterator[RemoteHost]:
    """sshd on a free loopback port, in its own namespaces, and an ssh config
    with the host as HOST_ALIAS; stopped and removed afterwards."""
    if os.getuid() != 0:
        raise AssertionError("the OpenSSH tests run sshd in namespaces of its own: run as root")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation
    # Outside /tmp, which the remote host does not share.
    directory = Path(tempfile.mkdtemp(prefix="mcpd-sshd-", dir="/var/tmp"))
    try:
        host_key = _keygen(directory / "host_key")
        user_key = _keygen(directory / "user_key")
        (directory / "authorized_keys").write_text(user_key + "\n")
        port = free_port()
        (directory / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
        (directory / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1:{port}\n"
            f"HostKey {directory}/host_key\n"
            f"AuthorizedKeysFile {directory}/authorized_keys\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "PidFile none\n"
        )
        ssh_config = directory / "ssh_config"
        ssh_config.write_text(
            f"Host {HOST_ALIAS}\n"
            "    HostName 127.0.0.1\n"
            f"    Port {port}\n"
            "    User root\n"
            f"    IdentityFile {directory}/user_key\n"
            "    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {directory}/known_hosts\n"
            "    StrictHostKeyChecking yes\n"
            "    BatchMode yes\n"
            "    LogLevel ERROR\n"
        )
        log = directory / "sshd.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [
                    "unshare",
                    "--mount",
                    "--uts",
                    "--",
                    "sh",
                    "-c",
                    _NAMESPACE_SCRIPT,
                    "sh",
                    str(directory),
                    *SHARED_UNDER_TMP,
                ],
                env={**os.environ, "HOST_NAME": HOST_NAME, "SSHD": SSHD},
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        host = RemoteHost(directory, ssh_config, process, log)
        try:
            wait_until(
                lambda: "Server listening" in log.read_text() or process.poll() is not None,
                "sshd to listen",
            )
            assert process.poll() is None, log.read_text()
            yield host
        finally:
            process.terminate()
            process.wait(timeout=10)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
