"""The OAuth loopback callback listener of the real daemon, under abuse.

The listener (mcpd/oauth/callback.py) exists only while a sign-in waits for
its redirect. Each test starts a real sign-in against the demo server (the
official Python SDK's authorization server, tests/demo_peer.py), takes the
redirect the browser would follow (its code issued, not yet used), throws
abuse at the listener with raw sockets, and then follows the redirect: the
sign-in must complete, which also shows that none of the abuse (some of it
carrying the real code and state) completed or broke it. The clients here are
raw sockets on purpose: no real browser sends these requests.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from urllib.parse import urlsplit

import pytest
from demo_peer import demo_server
from harness import (
    DaemonProcess,
    browse,
    callback_port,
    finish,
    server_config,
    start_auth,
    status_of,
    wait_state,
)
from reliability import record

from mcpd.oauth.callback import MAX_CONNECTIONS, MAX_REQUEST_HEAD, READ_TIMEOUT_SECONDS

HOST = "127.0.0.1"


@dataclass
class PendingSignIn:
    daemon: DaemonProcess
    process: Popen[str]
    port: int
    # The redirect to the callback, with the real code and state (kept out of reprs).
    location: str = field(repr=False)

    @property
    def target(self) -> str:
        """The callback's request target with the real code and state."""
        parts = urlsplit(self.location)
        return f"{parts.path}?{parts.query}"

    def complete(self) -> None:
        """Follow the redirect as the browser would: the sign-in must finish."""
        assert self.daemon.process.poll() is None, self.daemon.log
        assert status_of(self.daemon, "demo")["state"] == "authorizing"
        status, _, page = browse(self.location)
        assert status == 200, page
        assert "Signed in" in page
        code, out, err = finish(self.process)
        assert code == 0, err
        assert "Signed in; demo is connected." in out
        assert status_of(self.daemon, "demo")["state"] == "connected"
        # The listener is gone with the flow.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((HOST, self.port), 2).close()


@pytest.fixture
def pending(mcpd_env, run_daemon, tmp_path) -> Iterator[PendingSignIn]:
    with demo_server(tmp_path) as peer:
        mcpd_env.write_config("[daemon]\ncallback_port = 0\n" + server_config("demo", peer.url))
        daemon = run_daemon()
        wait_state(daemon, "demo", "needs_auth")
        process, url = start_auth(mcpd_env, "demo")
        status, location, _ = browse(url, follow=False)
        assert status in (302, 303), location
        assert urlsplit(location).path == "/callback"
        try:
            yield PendingSignIn(daemon, process, callback_port(url), location)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()


# --- Raw HTTP ------------------------------------------------------------------------


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the listener sends until it closes (a reset ends it too)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def exchange(port: int, data: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection((HOST, port), timeout) as sock:
        sock.sendall(data)
        return read_to_end(sock)


def status_code(reply: bytes) -> int:
    assert reply.startswith(b"HTTP/1.1 "), reply[:200]
    return int(reply.split(b" ", 2)[1])


def head_and_body(reply: bytes) -> tuple[bytes, bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    return head, body


def _socket_buffers_max() -> int:
    """The most a loopback connection's two kernel buffers can hold: a sender is
    cut off only once it has sent more than that (the receive buffer may grow
    to 32 MiB by itself here)."""
    most = 0
    for name in ("tcp_rmem", "tcp_wmem"):
        most += int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])
    return most


# More than the kernel could take without the listener: only a listener that
# stopped reading and closed makes a sender of this much fail.
BEYOND_BUFFERS = max(32 << 20, 2 * _socket_buffers_max())


def send_too_much(port: int, head: bytes, size: int) -> tuple[bool, float]:
    """Send `head` and then `size` more bytes; (whether the listener cut us off
    before taking them all, seconds until the connection ended)."""
    started = time.monotonic()
    with socket.create_connection((HOST, port), 10) as sock:
        try:
            sock.sendall(head)
            chunk = b"a" * 65536
            for _ in range(size // len(chunk)):
                sock.sendall(chunk)
        except (ConnectionResetError, BrokenPipeError):
            return True, time.monotonic() - started
        read_to_end(sock)
        return False, time.monotonic() - started


# --- Tests -----------------------------------------------------------------------------


def test_wrong_methods_oversized_and_malformed_requests_are_refused(pending):
    refused = 0
    target = pending.target.encode()

    # Every method but GET, even with the real code and state: 405, Allow: GET.
    for method in [b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"TRACE", b"BREW"]:
        reply = exchange(
            pending.port,
            method + b" " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        )
        assert status_code(reply) == 405, (method, reply[:300])
        assert b"\r\nallow: get\r\n" in head_and_body(reply)[0].lower() + b"\r\n"
        refused += 1
    reply = exchange(pending.port, b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n")
    assert status_code(reply) == 405
    refused += 1
    # HEAD: the same refusal, and no body (h11 frames it so; it once crashed the daemon).
    reply = exchange(pending.port, b"HEAD " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_code(reply) == 405
    assert head_and_body(reply)[1] == b""
    refused += 1

    # Targets that are not the callback, or do not parse at all.
    assert status_code(exchange(pending.port, b"GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n")) == 404
    for bad in [b"//[", b"http://[::1/callback", b"//[x/callback?code=a&state=b"]:
        reply = exchange(pending.port, b"GET " + bad + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_code(reply) == 400, (bad, reply[:300])
        refused += 1

    # A GET of the callback with a body is no browser's redirect: 400, answered
    # at the head, and the body is never read.
    for framing in [b"Content-Length: 33554432", b"Transfer-Encoding: chunked"]:
        head = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n\r\n"
        with socket.create_connection((HOST, pending.port), 5) as sock:
            sock.sendall(head)
            reply = read_to_end(sock)
            assert status_code(reply) == 400, reply[:300]
            assert b"no body" in reply
            cut_off = False
            try:
                for _ in range(BEYOND_BUFFERS // 65536):
                    sock.sendall(b"b" * 65536)
            except (ConnectionResetError, BrokenPipeError):
                cut_off = True
            assert cut_off, "the listener read a body"
        refused += 1

    # Heads over the limit: cut off long before they are all sent.
    oversized = {
        "a header line beyond the socket buffers": (
            b"GET /callback HTTP/1.1\r\nX-Big: ",
            BEYOND_BUFFERS,
        ),
        "a request target beyond the socket buffers": (b"GET /callback?pad=", BEYOND_BUFFERS),
    }
    for what, (head, size) in oversized.items():
        cut_off, seconds = send_too_much(pending.port, head, size)
        assert cut_off, f"the listener took all of {what}"
        assert seconds < 5, (what, seconds)
        refused += 1
    # Many small headers, 64 KiB of them: 431, or cut off while still sending.
    many_headers = b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_REQUEST_HEAD // 2))
    started = time.monotonic()
    reply = exchange(
        pending.port, b"GET /callback HTTP/1.1\r\nHost: x\r\n" + many_headers + b"\r\n"
    )
    assert reply == b"" or status_code(reply) == 431, reply[:300]
    assert time.monotonic() - started < 5
    refused += 1

    # Not HTTP: a TLS hello, HTTP/2's preface, a bare line of noise.
    tls_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(32) + b"\x00" * 64
    for junk in [tls_hello, b"\x00\xff garbage\r\n\r\n"]:
        assert status_code(exchange(pending.port, junk)) == 400
        refused += 1
    # h11 reads HTTP/2's preface as a request of the method PRI.
    assert status_code(exchange(pending.port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")) == 405
    refused += 1

    pending.complete()
    record("requests refused by the callback listener (methods, sizes, targets)", refused, __name__)


@pytest.mark.timeout(60)
def test_connections_that_never_finish_are_dropped_at_the_read_timeout(pending):
    """A slowloris dribbling a head that never ends, and connections that send
    nothing: the listener drops each READ_TIMEOUT_SECONDS after it connected
    (with a 408), however the bytes trickle in; meanwhile it still answers."""

    @dataclass
    class Slow:
        dribble: bool
        sock: socket.socket = field(init=False)
        opened: float = 0.0
        closed: float | None = None
        sent: int = 0
        reply: bytes = b""

        def run(self, port: int) -> None:
            self.sock = socket.create_connection((HOST, port), 30)
            self.opened = time.monotonic()
            if self.dribble:
                self.sock.setblocking(False)
                line = b"GET /callback?code=" + b"x" * 10_000
                while self.closed is None and self.sent < len(line):
                    try:
                        self.sock.send(line[self.sent : self.sent + 1])
                        self.sent += 1
                        data = self.sock.recv(65536)
                        self._closed(data)
                    except BlockingIOError:
                        pass
                    except (ConnectionResetError, BrokenPipeError):
                        self._closed(b"")
                    time.sleep(0.25)
            else:
                self._closed(read_to_end(self.sock))

        def _closed(self, data: bytes) -> None:
            self.reply += data
            if data == b"" or self.reply.endswith(b"</html>"):
                self.closed = time.monotonic()

    slow = [Slow(dribble=i % 2 == 0) for i in range(8)]
    assert len(slow) < MAX_CONNECTIONS  # none is dropped to make room
    threads = [threading.Thread(target=s.run, args=(pending.port,)) for s in slow]
    for thread in threads:
        thread.start()
    time.sleep(1)
    # Held connections do not stop the listener from answering others.
    assert status_code(exchange(pending.port, b"GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n")) == 404
    for thread in threads:
        thread.join(timeout=READ_TIMEOUT_SECONDS + 10)
        assert not thread.is_alive()
    for connection in slow:
        assert connection.closed is not None
        held = connection.closed - connection.opened
        assert READ_TIMEOUT_SECONDS - 0.5 < held < READ_TIMEOUT_SECONDS + 3, held
        assert status_code(connection.reply) == 408
        if connection.dribble:  # it kept sending all along, and that bought it nothing
            assert connection.sent >= READ_TIMEOUT_SECONDS / 0.25 * 0.8
        connection.sock.close()
    pending.complete()
    record("slow connections dropped at the callback's read timeout", len(slow), __name__)


def test_a_slowloris_on_every_slot_cannot_keep_the_browser_out(pending):
    """Three times as many never-finishing connections as the listener serves
    at once: the browser's redirect still gets in, at once, because the
    oldest unfinished connection makes room for each newcomer."""
    held = []
    opened = time.monotonic()
    for i in range(3 * MAX_CONNECTIONS):
        sock = socket.create_connection((HOST, pending.port), 10)
        sock.sendall(b"GET /callback?state=" if i % 2 else b"")
        held.append(sock)
    # The redirect, while all of them are held.
    pending.complete()
    assert time.monotonic() - opened < READ_TIMEOUT_SECONDS / 2  # no waiting for a timeout
    # Every one of them ended: dropped for room, or with the listener.
    for sock in held:
        sock.settimeout(5)
        assert read_to_end(sock) == b""
        sock.close()
    record("never-finishing connections held while the sign-in completed", len(held), __name__)


def test_a_flood_of_junk_connections_does_not_stop_the_sign_in(pending):
    """640 connections from 16 threads at once, each a different kind of junk:
    the daemon stays up, logs no line per connection, and the sign-in completes."""
    rng = random.Random(6)
    payloads = [
        lambda: os.urandom(rng.randrange(1, 4096)),
        lambda: b"GET /callback?code=x&state=y HTTP/1.1\r\nHost: x\r\n",  # never finished
        lambda: b"POST /callback HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        lambda: b"GET /callback HTTP/1.1\r\nX: " + b"y" * 100_000 + b"\r\n\r\n",
        lambda: b"GET /callback?state=forged&code=forged HTTP/1.1\r\nHost: x\r\n\r\n",
        lambda: b"",
    ]
    jobs = [(payloads[i % len(payloads)](), rng.random() < 0.5) for i in range(640)]
    done: list[int] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def worker(mine: list[tuple[bytes, bool]]) -> None:
        for payload, reset in mine:
            try:
                with socket.create_connection((HOST, pending.port), 10) as sock:
                    if payload:
                        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                            sock.sendall(payload)
                    if reset:  # close with a TCP reset, not a FIN
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                with lock:
                    done.append(1)
            except OSError as exc:
                with lock:
                    failures.append(exc)

    threads = [threading.Thread(target=worker, args=(jobs[i::16],)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive()
    assert not failures, failures[:3]
    assert len(done) == len(jobs)
    assert pending.daemon.process.poll() is None, pending.daemon.log
    pending.complete()
    # A flood is not a log flood: at most a summary line when the listener closes.
    assert pending.daemon.log.count("callback") <= 3, pending.daemon.log
    record("junk connections thrown at the callback listener", len(done), __name__)
