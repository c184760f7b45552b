"""Servers that misbehave: each one gets a clear state and error, within a
bounded time, and the daemon and every other server carry on: a healthy
server in the same daemon answers tool calls all along, promptly.

The misbehaving servers here are fakes on purpose: no real MCP server sends
garbage, drops a stream half-way or answers 20 MiB on demand. Each is a few
lines of raw HTTP over a loopback socket, described where it is defined. The
one exception is the reset in the middle of a tool call's event stream: that
is a real server (tests/peers/python_server.py) behind a TCP proxy that cuts
the connection at the moment chosen (`FaultProxy`).

The checks are on behaviour only (states, what the error says happened,
timings), never on the HTTP library's exception names.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import msgspec
import pytest
from harness import Editor, status_of, wait_state
from real_peers import python_server
from reliability import record

from mcpd.config import ServerConfig

# How long a call to the healthy server may take while another misbehaves.
HEALTHY_CALL_SECONDS = 2.0
# Calls made to the healthy server while the other fails and retries.
MIN_HEALTHY_CALLS = 30


class FakeHttpServer:
    """Answers every HTTP request with the bytes `respond(request_head)` returns,
    then closes the connection (abruptly when `reset` is set), or, with `hold`,
    keeps it open, silent, until the fake is closed."""

    def __init__(self, respond, *, reset: bool = False, hold: bool = False) -> None:
        self.respond = respond
        self.reset = reset
        self.hold = hold
        self.closed = threading.Event()
        self.requests = 0
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
                self.requests += 1
                conn.sendall(self.respond(head))
                if self.hold:
                    self.closed.wait()
                if self.reset:
                    # SO_LINGER 0: close with a TCP reset, as a crashing server would.
                    conn.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
            except OSError:
                return

    def close(self) -> None:
        self.closed.set()
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


def truncated_json(head: bytes) -> bytes:
    # Well framed, and JSON that stops half-way.
    return _http("200 OK", "application/json", b'{"jsonrpc": "2.0", "id": 1, "result": {"pro')


def malformed_event(head: bytes) -> bytes:
    # A whole event whose data is not JSON, in a stream that runs to the close.
    return _http(
        "200 OK",
        "text/event-stream",
        b'event: message\ndata: {"jsonrpc": "2.0", "id": 1, "result": {\n\n',
        length=False,
    )


def headers_then_silence(head: bytes) -> bytes:
    # An event stream opened for the answer, which never comes.
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n: hold on\n\n"


def nothing(head: bytes) -> bytes:
    # The request is read, and never answered.
    return b""


@dataclass
class HealthyCaller:
    """Calls `echo` on a healthy server through an editor bridge, over and over,
    timing each call, until stopped."""

    editor: Editor
    latencies: list[float] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            started = time.monotonic()
            reply = self.editor.call("echo", {"text": f"call {n}"})
            self.latencies.append(time.monotonic() - started)
            if reply.get("result", {}).get("content") != [{"type": "text", "text": f"call {n}"}]:
                self.failures.append(reply)
            time.sleep(0.02)

    def wait_for(self, calls: int, timeout: float = 15) -> None:
        """Until `calls` calls were made (meanwhile, the broken server retries)."""
        deadline = time.monotonic() + timeout
        while len(self.latencies) < calls:
            assert time.monotonic() < deadline, (len(self.latencies), self.failures[:3])
            time.sleep(0.05)

    def check(self) -> int:
        assert not self.failures, self.failures[:3]
        assert len(self.latencies) >= MIN_HEALTHY_CALLS
        assert max(self.latencies) < HEALTHY_CALL_SECONDS, max(self.latencies)
        return len(self.latencies)


@contextmanager
def calling_all_along(editors, name: str) -> Iterator[HealthyCaller]:
    editor = editors(name)
    editor.initialize()
    caller = HealthyCaller(editor)
    thread = threading.Thread(target=caller.run, daemon=True)
    thread.start()
    try:
        yield caller
    finally:
        caller.stop.set()
        thread.join(timeout=20)
    assert not thread.is_alive(), "a call to the healthy server never returned"


def victim_beside_good(mcpd_env, run_daemon, editors, config: str, good_url: str):
    """A daemon with `config` (a server named victim, and anything else) and a
    healthy server named good, both connected; and an editor of victim's."""
    mcpd_env.write_config(config + f'[servers.good]\nurl = "{good_url}"\n')
    daemon = run_daemon()
    wait_state(daemon, "victim", "connected")
    wait_state(daemon, "good", "connected")
    editor = editors("victim")
    editor.initialize()
    return daemon, editor


def wait_failed_again(daemon, name: str, first: dict, timeout: float) -> dict:
    """Until the server failed once more: a retry, with a new retry time."""
    deadline = time.monotonic() + timeout
    while True:
        now = status_of(daemon, name)
        if now["state"] == "failed" and now["next_retry_at"] != first["next_retry_at"]:
            return now
        assert time.monotonic() < deadline, (first, now, daemon.log[-3000:])
        time.sleep(0.05)


BAD_TIMEOUT = 2  # the bad server's `timeout`: the bound of a silent one's wait
DEFAULT_TIMEOUT = next(
    f.default for f in msgspec.structs.fields(ServerConfig) if f.name == "timeout"
)


@pytest.mark.parametrize(
    ("respond", "reset", "hold", "expected"),
    [
        (garbage, False, False, "invalid message"),
        (truncated_json, False, False, "invalid message: not valid JSON"),
        (malformed_event, False, False, "invalid message: not valid JSON"),
        (half_a_stream, True, False, "closed the stream before answering"),
        (huge, False, False, "over"),
        (server_error, False, False, "HTTP 500: the server fell over"),
        (headers_then_silence, False, True, f"within {BAD_TIMEOUT}s"),
        (nothing, False, True, f"within {BAD_TIMEOUT}s"),
    ],
    ids=[
        "garbage",
        "malformed-json",
        "malformed-json-event",
        "reset-mid-stream",
        "huge-body",
        "http-500",
        "stream-then-silence",
        "accepts-never-answers",
    ],
)
def test_a_broken_server_fails_alone(
    mcpd_env, run_daemon, editors, tmp_path, respond, reset, hold, expected
):
    bad = FakeHttpServer(respond, reset=reset, hold=hold)
    try:
        with python_server(tmp_path) as good:
            mcpd_env.write_config(
                f'[servers.bad]\nurl = "{bad.url}"\ntimeout = {BAD_TIMEOUT}\n'
                f'[servers.good]\nurl = "{good.url}"\n'
            )
            daemon = run_daemon()
            started = time.monotonic()
            wait_state(daemon, "good", "connected")
            with calling_all_along(editors, "good") as healthy:
                failed = wait_state(daemon, "bad", "failed", timeout=BAD_TIMEOUT + 10)
                took = time.monotonic() - started
                # A bounded wait, whatever the fault: the server's own timeout, far
                # from the default (30 s), with room for a machine running other tests.
                assert took < BAD_TIMEOUT + 8 < DEFAULT_TIMEOUT, took
                assert expected in failed["error"], failed["error"]
                assert failed["next_retry_at"] is not None
                # Asked for anything meanwhile, the broken server says why at once.
                asked = time.monotonic()
                call = daemon.mcpctl("call", "bad", "echo", '{"text": "x"}')
                assert time.monotonic() - asked < 3
                assert call.returncode == 1
                # Failed (and why), or connecting again for its next attempt.
                if "is failed" in call.stderr:
                    assert expected in call.stderr, call.stderr
                else:
                    assert "is connecting" in call.stderr, call.stderr
                # It retries by itself, fails again, and nobody else notices.
                again = wait_failed_again(daemon, "bad", failed, timeout=2 * BAD_TIMEOUT + 10)
                assert expected in again["error"], again["error"]
                healthy.wait_for(MIN_HEALTHY_CALLS)
            calls = healthy.check()
            assert bad.requests >= 2
            call = daemon.mcpctl("call", "good", "echo", '{"text": "unharmed"}')
            assert call.stdout == "unharmed\n"
            assert daemon.process.poll() is None
    finally:
        bad.close()
    record(f"healthy calls while a server misbehaved ({respond.__name__})", calls, __name__)


def test_a_server_that_never_accepts_times_out_alone(
    mcpd_env, run_daemon, editors, silent, tmp_path
):
    """A listener that never accepts: the connection is made (by the kernel) and
    nothing ever comes back."""
    with python_server(tmp_path) as good:
        mcpd_env.write_config(
            f'[servers.mute]\nurl = "{silent.url("mute")}"\ntimeout = 1\n'
            f'[servers.good]\nurl = "{good.url}"\n'
        )
        daemon = run_daemon()
        started = time.monotonic()
        wait_state(daemon, "good", "connected")
        with calling_all_along(editors, "good") as healthy:
            server = wait_state(daemon, "mute", "failed", timeout=15)
            # Its own timeout bounds the wait, far from the default, with room
            # for a machine running other tests.
            assert time.monotonic() - started < 1 + 8 < DEFAULT_TIMEOUT
            assert "timed out" in server["error"] or "within 1s" in server["error"]
            wait_failed_again(daemon, "mute", server, timeout=12)
            healthy.wait_for(MIN_HEALTHY_CALLS)
        healthy.check()


class FaultProxy:
    """A TCP proxy in front of a real server, that resets (RST) the connection
    whose answer carries `pattern`, once armed: a connection reset in the middle
    of an event stream, at a chosen moment. A fake network, a real server."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.pattern: bytes | None = None
        self.resets = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, path: str = "/mcp") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def arm(self, pattern: bytes) -> None:
        self.pattern = pattern

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:  # the real server is gone (the test is ending)
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        """Both directions in one thread, so that a reset is sent at once (a
        socket another thread is blocked reading cannot be closed under it)."""
        peer = {client: server, server: client}
        try:
            while True:
                readable, _, _ = select.select([client, server], [], [], 1)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    with self._lock:
                        cut = source is server and self.pattern is not None and self.pattern in data
                        if cut:
                            self.pattern = None
                            self.resets += 1
                    if cut:
                        # What came before the event, then a reset.
                        client.sendall(data[: data.index(b"data:")] if b"data:" in data else b"")
                        client.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        return
                    peer[source].sendall(data)
        except OSError:
            return
        finally:
            client.close()
            server.close()

    def close(self) -> None:
        self.sock.close()


def test_a_reset_in_the_middle_of_a_tool_calls_stream(mcpd_env, run_daemon, editors, tmp_path):
    """A real server's event stream for a tool call, cut by a reset after its
    first progress notification: the call ends at once with an error that says
    the stream broke, the server's next call works, and another server in the
    daemon answers all along."""
    with python_server(tmp_path) as victim, python_server(tmp_path) as good:
        proxy = FaultProxy(victim.port)
        try:
            config = f'[servers.victim]\nurl = "{proxy.url()}"\ntimeout = 5\n'
            daemon, editor = victim_beside_good(mcpd_env, run_daemon, editors, config, good.url)
            with calling_all_along(editors, "good") as healthy:
                proxy.arm(b"notifications/progress")
                started = time.monotonic()
                reply = editor.request(
                    "tools/call",
                    {
                        "name": "progress",
                        "arguments": {"steps": 40, "interval": 0.05},
                        "_meta": {"progressToken": "p1"},
                    },
                )
                took = time.monotonic() - started
                assert proxy.resets == 1
                assert "error" in reply, reply
                assert "broke" in reply["error"]["message"], reply
                assert took < 5, took  # not the whole 2 s of the tool, nor a timeout
                # The server is usable again: the next call goes through.
                deadline = time.monotonic() + 15
                while "result" not in (again := editor.call("echo", {"text": "back"})):
                    assert time.monotonic() < deadline, again
                    time.sleep(0.1)
                assert again["result"]["content"][0]["text"] == "back"
                healthy.wait_for(MIN_HEALTHY_CALLS)
            healthy.check()
            assert daemon.process.poll() is None
        finally:
            proxy.close()
