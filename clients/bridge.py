"""`mcpctl stdio NAME`: an MCP stdio server that is really the daemon's session.

Editors launch it as if it were a local MCP server. Lines from stdin (one
JSON-RPC message each) go to the daemon as they are, in `rpc` frames, and
what the daemon sends back is written to stdout a line each; the bridge does
not parse the traffic. It only looks inside a message when it has to answer
it itself: while the daemon is unreachable, requests get a JSON-RPC error
that says why and how to fix it, instead of hanging.

When the daemon goes away (restart, upgrade, reload of this server), the
bridge reconnects and re-attaches on its own, handing the daemon the editor's
original initialize request so the editor keeps its session. stdin's end
ends the bridge and, with its connection, the attachment.
"""

from __future__ import annotations

import os
import select
import sys
import time
from pathlib import Path
from typing import BinaryIO

import msgspec

from mcpd.protocol import AttachParams, Rpc

from .client import DaemonClient, DaemonError, DaemonUnavailable

SERVER_UNAVAILABLE = -32001
PARSE_ERROR = -32700
RETRY_SECONDS = 1.0
READ_CHUNK = 65536


class _Envelope(msgspec.Struct):
    """The two fields the bridge reads of a message it must answer itself."""

    id: int | str | None = None
    method: str | None = None


_envelope = msgspec.json.Decoder(_Envelope)
_json = msgspec.json.Encoder()


def _log(message: str) -> None:
    print(f"mcpctl stdio: {message}", file=sys.stderr, flush=True)


class Bridge:
    def __init__(
        self, server: str, stdin: BinaryIO, stdout: BinaryIO, socket: Path | None = None
    ) -> None:
        self.server = server
        self.socket = socket  # None: found as every mcpctl finds it (mcpd/paths.py)
        self.stdin = stdin
        self.stdout = stdout
        self.client: DaemonClient | None = None
        self.initialize: bytes | None = None  # the editor's first message, kept raw
        self.problem: str | None = None  # why the daemon cannot be used, once said
        self.next_attempt = 0.0
        # epoll itself: the selectors module's bookkeeping was a fifth of the
        # bridge's own work per message.
        self.poller = select.epoll()
        self._partial = b""

    # --- The daemon side ------------------------------------------------------------

    def _connect(self) -> None:
        """Connect and attach, or remember why not (said once on stderr)."""
        self.next_attempt = time.monotonic() + RETRY_SECONDS
        try:
            client = DaemonClient.connect(self.socket, client_name=f"mcpctl stdio {self.server}")
            try:
                client.request("attach", AttachParams(self.server, self.initialize))
            except BaseException:
                client.close()
                raise
        except (DaemonUnavailable, DaemonError, OSError) as exc:
            problem = str(exc)
            if isinstance(exc, DaemonError):
                # Said with the fix: an editor may show the message without the name.
                problem = (
                    f"mcpd refused to attach to {self.server!r}: {exc} (`mcpctl status` "
                    "lists the servers mcpd has; `mcpctl editors` what each editor launches)"
                )
            if problem != self.problem:
                _log(f"{problem} (retrying every {RETRY_SECONDS:g}s)")
                self.problem = problem
            return
        if self.problem is not None:
            _log(f"attached to {self.server!r}")
        self.problem = None
        self.client = client
        self.poller.register(client.fileno(), select.EPOLLIN)

    def _disconnect(self, reason: str) -> None:
        assert self.client is not None
        self.poller.unregister(self.client.fileno())
        self.client.close()
        self.client = None
        self.problem = reason
        _log(f"{reason}; reconnecting")
        self.next_attempt = 0.0

    def _from_daemon(self) -> None:
        assert self.client is not None
        try:
            messages = self.client.receive_available()
        except (DaemonUnavailable, OSError) as exc:
            self._disconnect(f"lost the connection to mcpd ({exc})")
            return
        for message in messages:
            if isinstance(message, Rpc):
                self.stdout.write(message.data + b"\n")
        self.stdout.flush()

    # --- The editor side ---------------------------------------------------------------

    def _from_editor(self, stdin: int) -> bool:
        """Forward complete lines from stdin; False at its end."""
        data = os.read(stdin, READ_CHUNK)
        if not data:
            return False
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self._forward(line.rstrip(b"\r"))
        return True

    def _forward(self, line: bytes) -> None:
        if not line.strip():
            return
        if self.initialize is None:
            self.initialize = line
        if self.client is None and time.monotonic() >= self.next_attempt:
            self._connect()
        if self.client is not None:
            try:
                self.client.send_rpc(line)
            except OSError as exc:
                self._disconnect(f"lost the connection to mcpd ({exc})")
            else:
                return
        self._refuse(line)

    def _refuse(self, line: bytes) -> None:
        """Answer a request the daemon cannot take with an error; drop anything else."""
        try:
            envelope = _envelope.decode(line)
        except msgspec.DecodeError as exc:
            self._write_error(None, PARSE_ERROR, f"parse error: {exc}")
            return
        if envelope.method is not None and envelope.id is not None:
            self._write_error(
                envelope.id, SERVER_UNAVAILABLE, self.problem or "mcpd is unavailable"
            )

    def _write_error(self, request_id: int | str | None, code: int, message: str) -> None:
        error = {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
        self.stdout.write(_json.encode(error) + b"\n")
        self.stdout.flush()

    # --- The loop ----------------------------------------------------------------------

    def _watch(self, stdin: int) -> bool:
        """Poll stdin; False when it is what epoll refuses (a regular file, /dev/null)."""
        try:
            self.poller.register(stdin, select.EPOLLIN)
        except PermissionError:
            return False
        return True

    def run(self) -> int:
        self._connect()
        stdin = self.stdin.fileno()
        try:
            if not self._watch(stdin):
                # Never waits, and its end ends the bridge as a closed pipe does.
                while self._from_editor(stdin):
                    pass
                return 0
            while True:
                timeout = -1.0
                if self.client is None:
                    timeout = max(0.0, self.next_attempt - time.monotonic())
                for descriptor, _ in self.poller.poll(timeout):
                    if descriptor == stdin:
                        if not self._from_editor(stdin):
                            return 0
                    elif self.client is not None:
                        self._from_daemon()
                if self.client is None and time.monotonic() >= self.next_attempt:
                    self._connect()
        finally:
            if self.client is not None:
                self.client.close()
            self.poller.close()


def run(server: str, socket: str | None = None) -> int:
    path = Path(socket) if socket else None
    try:
        return Bridge(server, sys.stdin.buffer, sys.stdout.buffer, path).run()
    except KeyboardInterrupt:
        return 130
