"""A blocking client of the daemon's control socket."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import struct
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from mcpd import paths
from mcpd.protocol import (
    PROTOCOL_VERSION,
    Event,
    FrameDecoder,
    HelloParams,
    HelloResult,
    Message,
    Request,
    Response,
    Rpc,
    decode_message,
    encode_frame,
)

CONNECT_TIMEOUT_SECONDS = 2.0
_UCRED = struct.Struct("3i")
_params_encoder = msgspec.msgpack.Encoder()


class DaemonUnavailable(Exception):
    """No daemon answers; the message says how to start one."""


class DaemonError(Exception):
    """The daemon answered a request with an error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


def _unavailable(path: Path, reason: str) -> DaemonUnavailable:
    message = (
        f"mcpd is not running ({reason} at {path}). Start it with "
        "`systemctl --user enable --now mcpd.socket`, or run `mcpd` in a terminal"
    )
    if "SSH_CONNECTION" in os.environ:
        message += (
            "; or, on a host you reach over SSH, use the daemon of your own machine: "
            "run `mcpctl remote setup HOST` there"
        )
    return DaemonUnavailable(message)


def _forward_down(path: Path, reason: str) -> DaemonUnavailable:
    return DaemonUnavailable(
        f"the SSH forward of mcpd at {path} does not answer ({reason}): the SSH connection "
        "from your own machine that carried it has ended. Connect again from there (`ssh` "
        "to this host, with the RemoteForward that `mcpctl remote setup` printed); mcpctl "
        "and the editors' bridges reconnect by themselves"
    )


def _dial(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(CONNECT_TIMEOUT_SECONDS)
    try:
        sock.connect(os.fsencode(path))
    except BaseException:
        sock.close()
        raise
    return sock


def _dial_local(path: Path, forward: Path | None) -> tuple[socket.socket, Path]:
    """The daemon of this machine at `path`; without one, the forward of another
    machine's daemon when `forward` (the forward path) exists. The socket, and
    the path it was reached at."""
    try:
        return _dial(path), path
    except (FileNotFoundError, ConnectionRefusedError):
        if forward is not None and os.path.lexists(forward):
            return _dial_forward(forward), forward
        if forward is not None and os.path.lexists(_gone(forward)):
            raise _forward_down(forward, "its dead socket was cleared away") from None
        reason = "no socket" if not path.exists() else "nothing listens"
        raise _unavailable(path, reason) from None
    except PermissionError:
        raise DaemonUnavailable(
            f"cannot connect to {path}: permission denied; the socket belongs to another "
            "user, or MCPD_SOCKET points somewhere else"
        ) from None
    except OSError as exc:
        raise _unavailable(path, exc.strerror or str(exc)) from None


def _dial_forward(path: Path) -> socket.socket:
    try:
        seen = path.lstat()
    except OSError as exc:
        raise _forward_down(path, exc.strerror or str(exc)) from None
    try:
        return _dial(path)
    except ConnectionRefusedError:
        _remove_dead_forward(path, seen)
        raise _forward_down(path, "nothing listens") from None
    except PermissionError:
        raise DaemonUnavailable(
            f"cannot connect to {path}: permission denied; it belongs to uid "
            f"{seen.st_uid}, not to you (uid {os.getuid()}), so it is no forward of yours: "
            "have it removed, or set MCPD_SOCKET to your forward's path"
        ) from None
    except OSError as exc:
        raise _forward_down(path, exc.strerror or str(exc)) from None


def _gone(forward: Path) -> Path:
    """Where a dead forward socket is moved: the sign, afterwards, that this
    host was using a forward (and that it is down, while nothing else answers)."""
    return forward.with_name(f".{forward.name}.gone")


def _remove_dead_forward(path: Path, seen: os.stat_result) -> None:
    """Move a forward socket that nobody listens on any more out of the way.

    sshd leaves it behind when the connection that made it ends, and unless its
    own StreamLocalBindUnlink is set it will not bind over it, so the next
    connection could not forward again. Only a socket of the user's is moved,
    atomically, and it is put back if it answers once moved: a new forward
    replaced the dead one in between (an inode number may be reused).
    """
    if seen.st_uid != os.getuid() or not stat.S_ISSOCK(seen.st_mode):
        return
    gone = _gone(path)
    try:
        os.rename(path, gone)
        _dial(gone).close()
    except OSError:
        return  # not moved, or moved and dead
    with contextlib.suppress(OSError):
        os.rename(gone, path)


OVERFLOW_UID = 65534  # how a user namespace shows a uid it does not map


def _foreign_daemon(path: Path, uid: int) -> str:
    shown = "a user not mapped here" if uid == OVERFLOW_UID else f"uid {uid}"
    return (
        f"the socket {path} is served by {shown}, not by you (uid {os.getuid()}); refusing "
        "to talk to it. mcpd serves its own user only: a container that mounts the socket "
        "must run as the daemon's user (e.g. `docker run --user UID:GID` with the daemon's "
        "uid, or rootless Podman with `--userns=keep-id`)"
    )


class DaemonClient:
    def __init__(self, sock: socket.socket, client_name: str, path: Path) -> None:
        self._sock = sock
        self.path = path
        self._decoder = FrameDecoder()
        self._next_id = 0
        self._events: deque[Event] = deque()
        hello = self.request("hello", HelloParams(PROTOCOL_VERSION, client_name))
        self.hello = msgspec.convert(hello, HelloResult)
        self._decoder = FrameDecoder(self.hello.max_frame_size)

    @classmethod
    def connect(
        cls, path: Path | None = None, *, client_name: str = "mcpctl", timeout: float | None = None
    ) -> DaemonClient:
        # An explicit socket is used alone; the default one, by every mcpctl,
        # falls back to an SSH forward of another machine's daemon.
        forward = None if path or "MCPD_SOCKET" in os.environ else paths.forward_socket_path()
        path = path or paths.socket_path()
        sock, path = _dial_local(path, forward)
        _pid, uid, _gid = _UCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
        if uid != os.getuid():
            sock.close()
            raise DaemonUnavailable(_foreign_daemon(path, uid))
        sock.settimeout(timeout)
        return cls(sock, client_name, path)

    @property
    def elsewhere(self) -> str | None:
        """The daemon's host when it is not this one: reached through an SSH
        forward of its socket, or from a container that mounts it."""
        host = self.hello.host
        return host if host and host != socket.gethostname() else None

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _receive(self) -> Message:
        while (body := self._decoder.next_frame()) is None:
            data = self._sock.recv(65536)
            if not data:
                raise DaemonUnavailable("mcpd closed the connection")
            self._decoder.feed(data)
        return decode_message(body)

    def request(self, method: str, params: Any = None) -> Any:
        self._next_id += 1
        request = Request(self._next_id, method)
        if params is not None:
            request.params = msgspec.Raw(_params_encoder.encode(params))
        self._sock.sendall(encode_frame(request))
        while True:
            message = self._receive()
            if isinstance(message, Event):
                self._events.append(message)
            elif isinstance(message, Response) and message.id == self._next_id:
                if message.error is not None:
                    error = message.error
                    raise DaemonError(error.code, error.message, error.data)
                return message.result
            elif isinstance(message, Response) and message.id is None and message.error:
                raise DaemonError(message.error.code, message.error.message)

    def receive(self) -> Message:
        """The next message from the daemon, waiting for it."""
        return self._receive()

    def fileno(self) -> int:
        return self._sock.fileno()

    def send_rpc(self, data: bytes) -> None:
        self._sock.sendall(encode_frame(Rpc(data)))

    def receive_available(self) -> list[Message]:
        """One read (call it when the socket is readable) and the messages it completed."""
        data = self._sock.recv(65536)
        if not data:
            raise DaemonUnavailable("mcpd closed the connection")
        self._decoder.feed(data)
        messages = []
        while (body := self._decoder.next_frame()) is not None:
            messages.append(decode_message(body))
        return messages

    def events(self) -> Iterator[Event]:
        """Events as they arrive, including any that came while waiting for a response."""
        while True:
            while self._events:
                yield self._events.popleft()
            message = self._receive()
            if isinstance(message, Event):
                yield message
