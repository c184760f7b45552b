"""One daemon per user, and the socket it listens on.

The instance lock is an flock on a file in the state directory, held for the
daemon's whole life and released by the kernel when it dies, so a crash never
leaves a stale lock. Holding it makes this process the only one allowed to
judge the socket path: a socket file found there is probed with a connect,
and removed only if nothing answers.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import stat
from pathlib import Path

from .paths import UnsafePath, ensure_private_dir

log = logging.getLogger(__name__)

# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH = 107


class AlreadyRunning(Exception):
    def __init__(self, pid: int | None, detail: str = "") -> None:
        super().__init__(f"already running (pid {pid if pid is not None else 'unknown'}){detail}")
        self.pid = pid


class InstanceLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise AlreadyRunning(int(holder) if holder.isdigit() else None) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _probe(path: Path) -> bool:
    """True if something accepts connections on the socket at `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as probe:
        probe.settimeout(1)
        try:
            probe.connect(str(path))
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                return False
            raise
    return True


def bind_listener(path: Path) -> socket.socket:
    """Bind and listen on `path`; call only while holding the instance lock."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise UnsafePath(
            f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes; "
            "set MCPD_SOCKET or XDG_RUNTIME_DIR to a shorter path"
        )
    ensure_private_dir(path.parent, "socket directory")
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise UnsafePath(f"{path} exists and is not a socket; remove it")
        if _probe(path):
            raise AlreadyRunning(None, f": another process is listening on {path}")
        path.unlink()
        log.info("removed a stale socket left by a previous run", extra={"socket": str(path)})
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    # The socket file is created with the process umask: make it 0600 from the
    # first moment rather than chmod-ing it afterwards.
    previous = os.umask(0o177)
    try:
        sock.bind(str(path))
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(previous)
    sock.listen(128)
    return sock
