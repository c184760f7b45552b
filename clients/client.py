"""A blocking client of the daemon's control socket."""

from __future__ import annotations

import os
import socket
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
    return DaemonUnavailable(
        f"mcpd is not running ({reason} at {path}). Start it with "
        "`systemctl --user enable --now mcpd.socket`, or run `mcpd` in a terminal"
    )


class DaemonClient:
    def __init__(self, sock: socket.socket, client_name: str) -> None:
        self._sock = sock
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
        path = path or paths.socket_path()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(CONNECT_TIMEOUT_SECONDS)
        try:
            sock.connect(os.fsencode(path))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            reason = "no socket" if not path.exists() else "nothing listens"
            raise _unavailable(path, reason) from None
        except PermissionError:
            sock.close()
            raise DaemonUnavailable(
                f"cannot connect to {path}: permission denied; the socket belongs to another "
                "user, or MCPD_SOCKET points somewhere else"
            ) from None
        except OSError as exc:
            sock.close()
            raise _unavailable(path, exc.strerror or str(exc)) from None
        _pid, uid, _gid = _UCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
        if uid != os.getuid():
            sock.close()
            raise DaemonUnavailable(
                f"the socket {path} is served by uid {uid}, not by you (uid {os.getuid()}); "
                "refusing to talk to it"
            )
        sock.settimeout(timeout)
        return cls(sock, client_name)

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
