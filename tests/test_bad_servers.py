"""Servers that misbehave: each one gets a clear state and error, and the
daemon and every other server carry on.

The misbehaving servers here are fakes on purpose: no real MCP server sends
garbage, drops a stream half-way or answers 20 MiB on demand. Each is a few
lines of raw HTTP over a loopback socket, described where it is defined.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from real_peers import python_server


class FakeHttpServer:
    """Answers every HTTP request with the bytes `respond(request_head)` returns,
    then closes the connection (abruptly when `reset` is set)."""

    def __init__(self, respond, *, reset: bool = False) -> None:
        self.respond = respond
        self.reset = reset
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/mcp"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            head = b""
            try:
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    head += chunk
                conn.sendall(self.respond(head))
                if self.reset:
                    # SO_LINGER 0: close with a TCP reset, as a crashing server would.
                    conn.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()


def _http(status: str, content_type: str, body: bytes, *, length: bool = True) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nConnection: close\r\n"
    if length:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def garbage(head: bytes) -> bytes:
    return _http("200 OK", "application/json", b"<html>this is not JSON-RPC</html>")


def half_a_stream(head: bytes) -> bytes:
    # An SSE response that stops in the middle of an event, no id to resume from.
    return _http(
        "200 OK",
        "text/event-stream",
        b'event: message\ndata: {"jsonrpc": "2.0", "id"',
        length=False,
    )


def huge(head: bytes) -> bytes:
    body = (
        b'{"jsonrpc": "2.0", "id": 1, "result": {"padding": "' + b"x" * (20 * 1024 * 1024) + b'"}}'
    )
    return _http("200 OK", "application/json", body)


def server_error(head: bytes) -> bytes:
    return _http("500 Internal Server Error", "text/plain", b"the server fell over")


@pytest.mark.parametrize(
    ("respond", "reset", "expected"),
    [
        (garbage, False, "invalid message"),
        (half_a_stream, True, "broke"),
        (huge, False, "over"),
        (server_error, False, "HTTP 500: the server fell over"),
    ],
    ids=["garbage", "reset-mid-stream", "huge-body", "http-500"],
)
def test_a_broken_server_fails_alone(mcpd_env, run_daemon, tmp_path, respond, reset, expected):
    bad = FakeHttpServer(respond, reset=reset)
    try:
        with python_server(tmp_path) as good:
            mcpd_env.write_config(
                f'[servers.bad]\nurl = "{bad.url}"\ntimeout = 5\n'
                f'[servers.good]\nurl = "{good.url}"\n'
            )
            daemon = run_daemon()
            deadline = time.monotonic() + 20
            while True:
                servers = {
                    s["name"]: s
                    for s in json.loads(daemon.mcpctl("status", "--json").stdout)["servers"]
                }
                if servers["bad"]["state"] == "failed" and servers["good"]["state"] == "connected":
                    break
                assert time.monotonic() < deadline, (servers, daemon.log)
                time.sleep(0.05)
            assert expected in servers["bad"]["error"], servers["bad"]["error"]
            assert servers["bad"]["next_retry_at"] is not None
            call = daemon.mcpctl("call", "good", "echo", '{"text": "unharmed"}')
            assert call.stdout == "unharmed\n"
            assert daemon.process.poll() is None
    finally:
        bad.close()


def test_a_server_that_never_answers_times_out(mcpd_env, run_daemon, silent):
    mcpd_env.write_config(f'[servers.mute]\nurl = "{silent.url("mute")}"\ntimeout = 1\n')
    daemon = run_daemon()
    deadline = time.monotonic() + 15
    while True:
        server = json.loads(daemon.mcpctl("status", "mute", "--json").stdout)["servers"][0]
        if server["state"] == "failed":
            break
        assert time.monotonic() < deadline, server
        time.sleep(0.05)
    assert "timed out" in server["error"] or "within 1s" in server["error"]
