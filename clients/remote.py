"""`mcpctl remote setup HOST`: editors on a host reached over SSH use this
machine's daemon, through an OpenSSH forward of its socket.

The forward lands at the path every mcpctl on the remote host falls back to
when no daemon runs there (mcpd/paths.py, `forward_socket_path`): ssh expands
`%r` to the remote user's name. Sign-ins stay here, next to the browser and
the loopback callback; the remote host holds no token. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mcpd import paths

MARKER = "# mcpd: editors on this host use the daemon of"
REMOTE_PATH = f"{paths.FORWARD_DIR}/{paths.APP}-%r.sock"


def _ssh_argument(path: str) -> str:
    """A path as one ssh_config argument: `%` is ssh's token character."""
    text = path.replace("%", "%%")
    return f'"{text}"' if any(c.isspace() for c in text) else text


def forward_line(local_socket: Path) -> str:
    return f"RemoteForward {REMOTE_PATH} {_ssh_argument(str(local_socket))}"


def block(host: str, local_socket: Path) -> str:
    return (
        f"{MARKER} {socket.gethostname()} (mcpctl remote setup)\n"
        f"Host {host}\n"
        f"    {forward_line(local_socket)}\n"
    )


def already_set_up(config: str, host: str, local_socket: Path) -> bool:
    """Whether a `Host` section naming `host` already has this forward."""
    wanted = forward_line(local_socket).split()
    hosts: list[str] = []
    for line in config.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        keyword = words[0].lower()
        if keyword in ("host", "match"):
            hosts = words[1:] if keyword == "host" else []
        elif keyword == "remoteforward" and host in hosts and words[1:] == wanted[1:]:
            return True
    return False


def remote_steps(host: str) -> str:
    return f"""\
On {host}:
  1. install mcpd as here (`pip install .` from its source), but start no daemon
     there: its mcpctl finds this machine's daemon through the forward;
  2. run `mcpctl install EDITOR` for each editor you use there;
  3. after `ssh {host}`, `mcpctl status` there says "mcpd on {socket.gethostname()}".
A dropped connection leaves the forward's socket behind, and sshd binds no new
forward over it unless its own `StreamLocalBindUnlink yes` is set (in {host}'s
/etc/ssh/sshd_config; the same option in your ~/.ssh/config does not reach
it). mcpctl on {host} removes such a dead socket when it finds one, so the next
`ssh {host}` forwards again.
"""


def write_block(env: Mapping[str, str], config_path: Path, host: str, local: Path) -> str:
    """Append the block to `config_path` (kept first in mcpctl's backups); what was done."""
    from mcpd.atomicfile import write_private

    from .editors.install import InstallError, save_backup

    try:
        old = config_path.read_bytes()
    except FileNotFoundError:
        old = None
    if old is not None and already_set_up(old.decode(errors="replace"), host, local):
        return f"{config_path} already forwards the daemon to {host}; nothing changed"
    new = (old or b"").rstrip(b"\n")
    new += (b"\n\n" if new else b"") + block(host, local).encode()
    if old is None:
        paths.ensure_private_dir(config_path.parent, "the SSH configuration directory")
        write_private(config_path, new)
        return f"created {config_path} with the block above"
    try:
        backup = save_backup(env, "ssh", config_path, old)
    except InstallError as exc:
        raise OSError(str(exc)) from None
    mode = config_path.stat().st_mode & 0o777
    write_private(config_path, new, mode)
    return f"added the block above to {config_path} (as it was: {backup})"


def cmd_setup(args: argparse.Namespace) -> int:
    local = paths.socket_path()
    config_path = Path(args.ssh_config).expanduser()
    print(block(args.host, local))
    if args.write:
        try:
            print(write_block(os.environ, config_path, args.host, local))
        except (OSError, paths.UnsafePath) as exc:
            print(f"mcpctl: cannot write {config_path}: {exc}", file=sys.stderr)
            return 1
    else:
        print(f"(add it to {config_path}, or run this again with --write)")
    print()
    print(remote_steps(args.host), end="")
    return 0


COMMANDS = ("remote",)


def register(commands: Any) -> None:
    """Add `remote setup` to mcpctl's subparsers (no daemon needed)."""
    remote = commands.add_parser(
        "remote", help="use this machine's daemon from hosts you reach over SSH"
    )
    actions = remote.add_subparsers(dest="remote_command", required=True)
    setup = actions.add_parser(
        "setup", help="the ~/.ssh/config block that forwards the daemon to HOST"
    )
    setup.add_argument("host", help="the host, as you name it to ssh")
    setup.add_argument("--write", action="store_true", help="add the block (after a backup)")
    setup.add_argument(
        "--ssh-config", default="~/.ssh/config", help="the file to add it to (%(default)s)"
    )
    setup.set_defaults(run=None, run_alone=cmd_setup)
