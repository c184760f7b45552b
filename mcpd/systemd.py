"""The two pieces of systemd's protocol the daemon speaks, without a library.

Socket activation: systemd passes the listening socket as fd 3 and sets
LISTEN_PID (our pid) and LISTEN_FDS. Readiness: a datagram such as
"READY=1\\nSTATUS=..." sent to $NOTIFY_SOCKET (a path, or an abstract socket
when it starts with '@'). Both variables are consumed so that child processes
do not act on them.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

log = logging.getLogger(__name__)

LISTEN_FDS_START = 3


class ActivationError(Exception):
    pass


def inherited_listener(env: MutableMapping[str, str] = os.environ) -> socket.socket | None:
    """The listening Unix socket systemd passed us, if any."""
    pid, count = env.pop("LISTEN_PID", None), env.pop("LISTEN_FDS", None)
    env.pop("LISTEN_FDNAMES", None)
    if pid is None or count is None or pid != str(os.getpid()):
        return None
    if count != "1":
        raise ActivationError(
            f"systemd passed {count} sockets; mcpd.socket must have exactly one ListenStream="
        )
    sock = socket.socket(fileno=LISTEN_FDS_START)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise ActivationError("the socket systemd passed is not a Unix stream socket")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise ActivationError("the socket systemd passed is not listening")
    os.set_inheritable(sock.fileno(), False)
    return sock


class Notifier:
    """Sends sd_notify datagrams; does nothing when not run by systemd."""

    def __init__(self, env: MutableMapping[str, str] = os.environ) -> None:
        address = env.pop("NOTIFY_SOCKET", None)
        if address and address.startswith("@"):
            address = "\0" + address[1:]
        self._address = address

    def notify(self, **fields: str) -> None:
        if not self._address:
            return
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # Never wait for the manager: a full queue (a manager slow to read)
                # would otherwise hang the whole event loop; EAGAIN is logged below.
                sock.setblocking(False)
                sock.sendto(message.encode(), self._address)
        except OSError as exc:
            log.warning("cannot notify systemd", extra={"error": exc.strerror})
