"""mcpd's outbound HTTP (mcpd/http.py: aiohttp, and the lane of mcpd/httplane.py
for POSTs) against real HTTP peers: the
standard library's HTTP/1.1 server (keep-alive, redirects, closes) and
pproxy, a real forward proxy (CONNECT tunnels for https, absolute-form
requests for http).

Where no real server misbehaves on demand (a TLS handshake cut off, a reset
after a request was read, a redirect to an address that does not parse), the
peer is a raw socket that does exactly that and nothing else, and says so."""

from __future__ import annotations

import http.server
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import anyio
import pytest
from http_peer import http_peer, reply
from test_tls import make_pki

import mcpd.http
from mcpd.http import (
    MAX_REDIRECTS,
    BodyTooLarge,
    ConnectError,
    ConnectionBroken,
    HttpClient,
    HttpError,
    HttpPool,
    RedirectRefused,
    Redirects,
    TimedOut,
    proxy_for,
    redirect_target,
)

pytestmark = pytest.mark.timeout(60)

SAME = Redirects.SAME_ORIGIN
# A GET goes through aiohttp, a POST through the lane: what holds for one must
# hold for the other.
BOTH_PATHS = pytest.mark.parametrize("method", ["GET", "POST"])


def fetch(
    method: str,
    url: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    redirects: Redirects = SAME,
    head_timeout: float | None = 10,
    **client_options: Any,
) -> tuple[int, bytes]:
    """One request on a client of its own (a client belongs to one event loop)."""

    async def main() -> tuple[int, bytes]:
        async with (
            HttpClient(**client_options) as client,
            client.stream(
                method, url, headers or {}, body, redirects=redirects, head_timeout=head_timeout
            ) as response,
        ):
            return response.status_code, await response.read(1 << 20)

    return anyio.run(main, backend_options={"use_uvloop": True})


class RawPeer:
    """A TCP listener on loopback whose every connection is handed to `serve`
    (a fake on purpose: it does the one wrong thing a test needs)."""

    def __init__(self, serve: Callable[[socket.socket], None]) -> None:
        self.serve = serve
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn, suppress(OSError):
            self.serve(conn)

    def close(self) -> None:
        self.sock.close()


@contextmanager
def raw_peer(serve: Callable[[socket.socket], None]) -> Iterator[RawPeer]:
    peer = RawPeer(serve)
    try:
        yield peer
    finally:
        peer.close()


def reset(conn: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashing peer does."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def read_head(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


# --- Connections ---------------------------------------------------------------------


@BOTH_PATHS
def test_keep_alive_reuses_one_connection(method):
    with http_peer(reply(body=b"hello")) as peer:

        async def main() -> list[bytes]:
            async with HttpClient() as client:
                bodies = []
                for _ in range(3):
                    async with client.stream(method, peer.url + "/a", {}, redirects=SAME) as r:
                        bodies.append(await r.read(100))
                return bodies

        assert anyio.run(main) == [b"hello"] * 3
    assert len({seen.client_port for seen in peer.seen}) == 1


def test_servers_share_the_daemons_pool_and_keep_their_own_settings():
    """Two servers' clients on one pool: one connection to an origin they share,
    and closing one client leaves the pool to the other."""
    with http_peer(reply(body=b"hello")) as peer:

        async def main() -> list[bytes]:
            async with HttpPool() as pool:
                first = HttpClient(pool=pool, own_url=peer.url, connect_timeout=5)
                second = HttpClient(pool=pool, own_url=peer.url, connect_timeout=7)
                bodies = []
                for client in (first, second, first):
                    async with client.stream("GET", peer.url + "/a", {}, redirects=SAME) as r:
                        bodies.append(await r.read(100))
                await first.aclose()
                async with second.stream("GET", peer.url + "/a", {}, redirects=SAME) as r:
                    bodies.append(await r.read(100))
                return bodies

        assert anyio.run(main) == [b"hello"] * 4
    assert len({seen.client_port for seen in peer.seen}) == 1


@BOTH_PATHS
def test_a_response_left_unread_never_carries_another_request(method):
    with http_peer(reply(body=b"x" * 200_000)) as peer:

        async def main() -> None:
            async with HttpClient() as client:
                response = await client.send(method, peer.url, {}, redirects=SAME)
                async for _chunk in response.aiter_bytes():
                    break
                await response.aclose()
                async with client.stream(method, peer.url, {}, redirects=SAME) as second:
                    assert len(await second.read(1 << 20)) == 200_000

        anyio.run(main)
    assert peer.seen[0].client_port != peer.seen[1].client_port


@BOTH_PATHS
def test_a_body_over_the_limit_is_refused(method):
    with http_peer(reply(body=b"x" * 5000)) as peer:

        async def main() -> None:
            async with (
                HttpClient() as client,
                client.stream(method, peer.url, {}, redirects=SAME) as response,
            ):
                await response.read(4096)

        with pytest.raises(BodyTooLarge, match="over 4096 bytes"):
            anyio.run(main)


def test_a_post_that_was_sent_is_never_sent_again():
    """The server reads the whole request, then resets the connection without
    an answer: the caller hears of it, and the server saw the request once
    (it may have acted on it: a tool call must not run twice)."""
    seen = []

    def read_then_reset(conn: socket.socket) -> None:
        seen.append(read_head(conn))
        reset(conn)

    with raw_peer(read_then_reset) as peer, pytest.raises(ConnectionBroken):
        fetch("POST", f"http://127.0.0.1:{peer.port}/mcp", b"{}")
    assert len(seen) == 1


def test_more_than_1024_descriptors_in_use():
    """select() cannot watch a descriptor numbered 1024 or more; pooled
    connections must keep working past that (500 servers get there)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.fail(f"this test needs an open-file limit over 1200 (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    ballast = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with http_peer(reply(body=b"high")) as peer:

            async def main() -> list[bytes]:
                async with HttpClient() as client:
                    bodies = []
                    for _ in range(5):
                        async with client.stream("POST", peer.url, {}, b"x", redirects=SAME) as r:
                            bodies.append(await r.read(100))
                    return bodies

            assert anyio.run(main, backend_options={"use_uvloop": True}) == [b"high"] * 5
        assert len({seen.client_port for seen in peer.seen}) == 1  # pooled, reused
    finally:
        for fd in ballast:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --- Redirects -----------------------------------------------------------------------


def test_redirects_within_the_origin_keep_or_drop_the_method_as_http_says():
    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        targets = {"/keep": "/final", "/see-other": "/final"}
        if handler.path in targets:
            status = 303 if handler.path == "/see-other" else 307
            reply(status, b"", Location=targets[handler.path])(handler)
        else:
            reply(body=handler.command.encode())(handler)

    with http_peer(route) as peer:
        auth = {"Authorization": "Bearer t0ken-SECRET", "Content-Type": "application/json"}
        assert fetch("POST", peer.url + "/keep", b"{}", auth) == (200, b"POST")
        assert peer.seen[-1].body == b"{}"
        assert peer.seen[-1].headers["authorization"] == "Bearer t0ken-SECRET"
        assert fetch("POST", peer.url + "/see-other", b"{}", auth) == (200, b"GET")
        assert peer.seen[-1].body == b""
        assert "content-type" not in peer.seen[-1].headers


def test_mcp_requests_refuse_a_redirect_to_another_origin():
    with (
        http_peer(reply(body=b"should not get here")) as elsewhere,
        http_peer(reply(307, b"", Location=elsewhere.url + "/mcp")) as peer,
        pytest.raises(RedirectRefused, match="another origin"),
    ):
        fetch("POST", peer.url + "/mcp", b'{"secret": 1}', {"X-Api-Key": "k-SECRET"})
    assert elsewhere.seen == []


@pytest.mark.parametrize(
    ("policy", "url", "location", "expected"),
    [
        (SAME, "http://h:1/a", "/b", "http://h:1/b"),
        (SAME, "http://h/a", "https://h/a", "https://h/a"),  # an upgrade on the same host
        (SAME, "http://h/a", "https://other/a", RedirectRefused),
        (SAME, "https://h/a", "http://h/a", RedirectRefused),  # never a downgrade
        (SAME, "http://h/a", "http://h:99999/", RedirectRefused),  # a port out of range
        (SAME, "http://h/a", "http://h:x/", RedirectRefused),
        (SAME, "http://h/a", "ftp://h/a", RedirectRefused),
        (SAME, "http://h/a", "/a b", "http://h/a%20b"),  # a space: encoded, as browsers do
        (Redirects.NONE, "https://h/token", "/token2", RedirectRefused),
        (
            Redirects.SECURE,
            "https://h/.well-known/x",
            "https://as.example/x",
            "https://as.example/x",
        ),
        (Redirects.SECURE, "https://h/x", "http://as.example/x", RedirectRefused),
        (Redirects.SECURE, "http://127.0.0.1:5/x", "http://localhost:6/y", "http://localhost:6/y"),
    ],
)
def test_redirect_policy(policy, url, location, expected):
    if expected is RedirectRefused:
        with pytest.raises(RedirectRefused):
            redirect_target(policy, url, location, has_body=False)
    else:
        assert redirect_target(policy, url, location, has_body=False) == expected


def test_a_secure_redirect_of_a_request_with_a_body_stays_on_its_origin():
    with pytest.raises(RedirectRefused, match="with a body"):
        redirect_target(Redirects.SECURE, "https://h/x", "https://other/x", has_body=True)


@pytest.mark.parametrize("location", ["http://127.0.0.1:99999/", "/a\x7fb", "http://[::1/"])
def test_a_redirect_to_an_address_that_does_not_parse_is_an_error_not_a_crash(location):
    def redirect(conn: socket.socket) -> None:
        read_head(conn)
        conn.sendall(
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: "
            + location.encode()
            + b"\r\nContent-Length: 0\r\n\r\n"
        )

    with raw_peer(redirect) as peer, pytest.raises(HttpError):
        fetch("POST", f"http://127.0.0.1:{peer.port}/mcp", b"{}")


def test_endless_redirects_end_with_a_clear_error():
    with http_peer(reply(302, b"", Location="/again")) as peer:
        with pytest.raises(HttpError, match=f"more than {MAX_REDIRECTS} redirects"):
            fetch("GET", peer.url)
        assert len(peer.seen) == MAX_REDIRECTS + 1


# --- Failures: each one an HttpError with a message fit for a user ---------------------


@BOTH_PATHS
def test_a_refused_connection_says_where(method):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectError, match=f"cannot connect to 127.0.0.1:{port}: refused"):
        fetch(method, f"http://127.0.0.1:{port}/")


@BOTH_PATHS
def test_a_name_that_does_not_resolve_says_so(method):
    with pytest.raises(ConnectError, match="the name does not resolve"):
        fetch(method, "http://no-such-host.invalid/mcp")


@BOTH_PATHS
@pytest.mark.parametrize(
    ("how", "says"),
    [
        ("close", "closed during the TLS handshake"),
        ("reset", "reset during the TLS handshake"),
        ("garbage", "TLS: "),
    ],
)
def test_a_tls_handshake_cut_off_is_an_error_not_a_crash(method, how, says):
    """What a dying load balancer, a captive portal or a firewall does."""

    def cut(conn: socket.socket) -> None:
        conn.recv(1024)  # the ClientHello
        if how == "reset":
            reset(conn)
        elif how == "garbage":
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    with raw_peer(cut) as peer, pytest.raises(ConnectError) as error:
        fetch(method, f"https://127.0.0.1:{peer.port}/mcp")
    assert f"cannot connect to 127.0.0.1:{peer.port}: " in str(error.value)
    assert says in str(error.value)


@BOTH_PATHS
def test_tls_checks_the_certificate_unless_told_otherwise(tmp_path, method):
    ca, cert, key = make_pki(tmp_path)
    with http_peer(reply(body=b"secure"), tls=(cert, key)) as peer:
        with pytest.raises(ConnectError, match="certificate verify failed"):
            fetch(method, peer.url, own_url=peer.url)
        assert fetch(method, peer.url, verify=str(ca), own_url=peer.url) == (200, b"secure")
        assert fetch(method, peer.url, verify=False, own_url=peer.url) == (200, b"secure")
        # `verify` is the server's own: another origin keeps the system's trust.
        with pytest.raises(ConnectError, match="certificate verify failed"):
            fetch(method, peer.url, verify=False, own_url="https://127.0.0.1:1/mcp")
        assert fetch(method, peer.url, other_verify=str(ca), own_url="https://h/") == (
            200,
            b"secure",
        )


def test_a_ca_bundle_is_read_once_per_client(tmp_path, monkeypatch):
    ca, cert, key = make_pki(tmp_path)
    read = []
    original = mcpd.http.tls_context
    monkeypatch.setattr(
        mcpd.http, "tls_context", lambda verify: read.append(verify) or original(verify)
    )
    with http_peer(reply(body=b"secure"), tls=(cert, key)) as peer:

        async def main() -> list[int]:
            async with HttpClient(own_url=peer.url, verify=str(ca)) as client:
                statuses = []
                for _ in range(3):
                    async with client.stream("GET", peer.url, {}, redirects=SAME) as r:
                        statuses.append(r.status_code)
                return statuses

        assert anyio.run(main) == [200] * 3
    assert read == [str(ca)]


@BOTH_PATHS
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Api-Key", "k-SECRET\r\nX-Injected: 1"),
        ("X-Api-Key", "k-SECRET\r"),
        ("X-Api-Key", "k-SECRET\x00"),
        ("X-Api-Key", "k-SECR\u00c9T"),
        ("X Api-Key-SECRET", "v"),
    ],
)
def test_a_header_that_cannot_be_sent_is_an_error_that_quotes_nothing(method, name, value):
    with http_peer(reply()) as peer:
        with pytest.raises(HttpError) as error:
            fetch(method, peer.url, headers={name: value})
        assert peer.seen == []
    assert "SECRET" not in str(error.value)
    assert "not valid HTTP" in str(error.value)


def test_no_answer_within_the_head_timeout():
    def silent(conn: socket.socket) -> None:
        read_head(conn)
        time.sleep(3)

    with raw_peer(silent) as peer, pytest.raises(TimedOut, match=r"no answer from .* within 0.5s"):
        fetch("POST", f"http://127.0.0.1:{peer.port}/", b"{}", head_timeout=0.5)


@pytest.mark.parametrize(("first", "second"), [(5.0, 0.4), (0.2, 0.6)])
def test_each_head_keeps_its_own_deadline_on_a_kept_alive_connection(first, second):
    """The lane keeps head deadlines with one timer per connection, armed by
    whichever exchange found none: a later exchange still ends at its own
    deadline, whether the timer was set for a longer one (5 s) or for one
    that passed (0.2 s)."""

    def answer_once(conn: socket.socket) -> None:
        read_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        read_head(conn)
        conn.recv(1)  # silent until the client gives up

    with raw_peer(answer_once) as peer:

        async def main() -> float:
            async with HttpClient() as client:
                url = f"http://127.0.0.1:{peer.port}/"
                response = await client.send(
                    "POST", url, {}, b"{}", redirects=SAME, head_timeout=first
                )
                assert await response.read(10) == b"ok"
                await response.aclose()  # the connection goes back, and is used again
                started = time.monotonic()
                with pytest.raises(HttpError, match=f"within {second:g}s"):
                    await client.send("POST", url, {}, b"{}", redirects=SAME, head_timeout=second)
                return time.monotonic() - started

        took = anyio.run(main, backend_options={"use_uvloop": True})
    assert second - 0.05 <= took < second + 1.0, took
    assert peer.connections == 1  # both on the one connection


@BOTH_PATHS
def test_a_tls_handshake_never_answered_ends_at_the_head_timeout(method):
    """Accepted, then silent (a black-holing firewall): connecting counts
    against the request's time too."""

    def silent(conn: socket.socket) -> None:
        conn.recv(1024)  # the ClientHello, never answered
        time.sleep(3)

    with (
        raw_peer(silent) as peer,
        pytest.raises(TimedOut, match=r"no answer from .* within 0.5s"),
    ):
        fetch(method, f"https://127.0.0.1:{peer.port}/", b"{}", head_timeout=0.5)


@BOTH_PATHS
def test_a_body_that_stalls_past_the_idle_timeout(method):
    def stall(conn: socket.socket) -> None:
        read_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf")
        time.sleep(3)

    with raw_peer(stall) as peer:

        async def main() -> None:
            async with (
                HttpClient() as client,
                client.stream(method, f"http://127.0.0.1:{peer.port}/", {}, redirects=SAME) as r,
            ):
                await r.read(1000, idle_timeout=0.5)

        with pytest.raises(TimedOut, match=r"sent nothing for 0\.5s"):
            anyio.run(main)


@BOTH_PATHS
def test_an_answer_that_is_not_http(method):
    def garbage(conn: socket.socket) -> None:
        read_head(conn)
        conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")

    with raw_peer(garbage) as peer, pytest.raises(ConnectionBroken, match="not valid HTTP"):
        fetch(method, f"http://127.0.0.1:{peer.port}/")


# --- Proxies -------------------------------------------------------------------------

# pproxy switches to uvloop whenever it can import it (mcpd depends on it),
# then asks for an event loop in a way uvloop no longer allows: keep it on
# asyncio's own loop.
PPROXY = "import sys; sys.modules['uvloop'] = None; from pproxy.server import main; main()"


@contextmanager
def pproxy() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-c", PPROXY, "-l", f"http://127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            with socket.socket() as attempt:
                if attempt.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None:
                raise AssertionError(f"pproxy did not start: {process.communicate()[1]}")
            assert time.monotonic() < deadline, "pproxy did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.kill()
        process.communicate()


@BOTH_PATHS
def test_https_goes_through_a_proxy_tunnel_and_http_in_absolute_form(tmp_path, method):
    """A POST too: the lane leaves every proxied request to aiohttp."""
    ca, cert, key = make_pki(tmp_path)
    with (
        http_peer(reply(body=b"tunnelled"), tls=(cert, key)) as secure,
        http_peer(reply(body=b"forwarded")) as plain,
        pproxy() as proxy,
    ):
        environ = {"HTTPS_PROXY": proxy, "http_proxy": proxy}
        options = {"other_verify": str(ca), "environ": environ}
        assert fetch(method, secure.url + "/s", **options) == (200, b"tunnelled")
        assert fetch(method, plain.url + "/p", **options) == (200, b"forwarded")
        assert plain.seen[-1].path == "/p"
        proxy_port = proxy.rsplit(":", 1)[1]
    # With the proxy gone, both fail at the proxy: proof that they went through it.
    for url in (secure.url, plain.url):
        with pytest.raises(ConnectError, match=f"127.0.0.1:{proxy_port}"):
            fetch(method, url, **options)


def test_no_proxy_and_unsupported_proxies():
    url = "https://mcp.example.com/mcp"
    assert proxy_for(url, {"HTTPS_PROXY": "proxy:3128"}) == ("http://proxy:3128", {})
    assert proxy_for(url, {"HTTPS_PROXY": "http://u:p@proxy:3128"}) == (
        "http://proxy:3128",
        {"Proxy-Authorization": "Basic dTpw"},
    )
    assert proxy_for(url, {"HTTPS_PROXY": "proxy:3128", "NO_PROXY": ".example.com"}) is None
    assert proxy_for(url, {"https_proxy": "proxy:3128", "no_proxy": "*"}) is None
    assert proxy_for(url, {"HTTP_PROXY": "proxy:3128"}) is None  # only for http://
    assert proxy_for(url, {"ALL_PROXY": "http://proxy:8080"}) == ("http://proxy:8080", {})
    with pytest.raises(HttpError, match="must be an http:// proxy"):
        proxy_for(url, {"HTTPS_PROXY": "https://proxy:3128"})


def test_the_shared_tls_contexts_load_the_system_store_once():
    from mcpd.http import tls_context

    assert tls_context(True) is tls_context(True)
    assert tls_context(True).verify_mode is ssl.CERT_REQUIRED
    assert tls_context(False).verify_mode is ssl.CERT_NONE


# --- The lane (mcpd/httplane.py): what only POSTs meet ---------------------------------
#
# The peers below are raw sockets writing exactly the bytes each test needs:
# chunked and unframed bodies, interim answers, bytes nobody asked for and
# oversized heads are what the standard library's server does not produce on demand.


def answer_on_each_connection(*answers: bytes) -> Callable[[socket.socket], None]:
    """Per connection: read a request, write the next of `answers`, until they run out
    or the client goes away."""

    def serve(conn: socket.socket) -> None:
        for answer in answers:
            if not read_head(conn):
                return
            conn.sendall(answer)
        conn.recv(1)  # until the client closes

    return serve


def post_all(url: str, count: int, **client_options: Any) -> list[tuple[int, bytes]]:
    """`count` POSTs in turn on one client."""

    async def main() -> list[tuple[int, bytes]]:
        async with HttpClient(**client_options) as client:
            results = []
            for _ in range(count):
                async with client.stream("POST", url, {}, b"{}", redirects=SAME) as response:
                    results.append((response.status_code, await response.read(1 << 20)))
            return results

    return anyio.run(main, backend_options={"use_uvloop": True})


def test_the_lane_writes_its_own_head_and_leaves_the_rest_to_aiohttp():
    with http_peer(reply(body=b"hello")) as peer:
        assert fetch("POST", peer.url + "/mcp?x=1", b"{}", {"X-Api-Key": "k"}) == (200, b"hello")
        lane = peer.seen[-1]
        assert lane.path == "/mcp?x=1"
        assert lane.headers["host"] == peer.url.removeprefix("http://")
        assert lane.headers["content-length"] == "2"
        assert lane.headers["user-agent"].startswith("mcpd/")
        assert lane.headers["x-api-key"] == "k"
        assert "accept-encoding" not in lane.headers  # aiohttp would offer gzip
        # A header the lane writes itself, set by the caller: aiohttp sends it.
        assert fetch("POST", peer.url, b"{}", {"Connection": "close"}) == (200, b"hello")
        assert "accept-encoding" in peer.seen[-1].headers


def test_chunked_and_unframed_bodies():
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    framed = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nworld"
    unframed = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"

    def serve(conn: socket.socket) -> None:
        for answer in (chunked, framed, unframed):
            if not read_head(conn):
                return
            conn.sendall(answer)
        # the end of the last body

    with raw_peer(serve) as peer:
        results = post_all(f"http://127.0.0.1:{peer.port}/mcp", 4)
    assert results == [(200, b"hello"), (200, b"world"), (200, b"until the end"), (200, b"hello")]
    assert peer.connections == 2  # kept alive until the server said close


def test_interim_answers_are_passed_over():
    answer = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    with raw_peer(answer_on_each_connection(answer, answer)) as peer:
        assert post_all(f"http://127.0.0.1:{peer.port}/", 2) == [(200, b"ok")] * 2
    assert peer.connections == 1


def test_the_head_as_the_lane_reads_it():
    """Names in lower case, a repeated name's values joined, an interim answer's
    fields left behind, bytes over 0x7f kept as they came (Latin-1)."""
    answer = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Seen: a\r\nCache-Control: no-cache\r\n"
        b"x-seen: b\r\nX-Empty:\r\nX-Latin: caf\xe9\r\n\r\nok"
    )

    async def main(url: str) -> dict[str, str]:
        async with (
            HttpClient() as client,
            client.stream("POST", url, {}, b"{}", redirects=SAME) as response,
        ):
            assert await response.read(100) == b"ok"
            return response.headers

    with raw_peer(answer_on_each_connection(answer)) as peer:
        url = f"http://127.0.0.1:{peer.port}/"
        headers = anyio.run(main, url, backend_options={"use_uvloop": True})
    assert headers == {
        "content-length": "2",
        "x-seen": "a, b",
        "cache-control": "no-cache",
        "x-empty": "",
        "x-latin": "caf\xe9",
    }


def test_bytes_after_the_answer_are_never_taken_for_the_next_one():
    """A second answer nobody asked for, right behind the first: the connection
    is closed, and the next request gets its own answer on a new one."""
    smuggled = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"
    )
    answers = iter([smuggled, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood"])

    def serve(conn: socket.socket) -> None:
        answer_on_each_connection(next(answers))(conn)

    with raw_peer(serve) as peer:
        assert post_all(f"http://127.0.0.1:{peer.port}/", 2) == [(200, b"first"), (200, b"good")]
    assert peer.connections == 2


def test_a_head_over_64_kib_is_refused():
    head = b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"a" * 70_000 + b"\r\nContent-Length: 0\r\n\r\n"
    with (
        raw_peer(answer_on_each_connection(head)) as peer,
        pytest.raises(ConnectionBroken, match="head over 64 KiB"),
    ):
        post_all(f"http://127.0.0.1:{peer.port}/", 1)


@pytest.mark.parametrize("endless", ["value", "name"])
def test_a_header_that_never_ends_is_refused_at_64_kib(endless):
    """The parser keeps a field until it ends: a server that never ends one
    must not make the daemon keep all it sends. The lane gives up once the
    head passes 64 KiB, having read at most a few reads more."""
    start = b"HTTP/1.1 200 OK\r\n" + (b"X-Endless: " if endless == "value" else b"")
    chunk = b"a" * 65536
    sent: list[int] = []

    def serve(conn: socket.socket) -> None:
        read_head(conn)
        conn.sendall(start)
        total = len(start)
        try:
            while total < 256 << 20:
                conn.sendall(chunk)
                total += len(chunk)
        finally:
            sent.append(total)

    with (
        raw_peer(serve) as peer,
        pytest.raises(ConnectionBroken, match="head over 64 KiB"),
    ):
        post_all(f"http://127.0.0.1:{peer.port}/", 1)
    deadline = time.monotonic() + 10
    while not sent and time.monotonic() < deadline:
        time.sleep(0.01)
    # What the lane read, and what the kernel buffers of both ends held when it closed.
    assert sent, "the server never finished"
    assert sent[0] < 16 << 20, sent


def test_a_body_nobody_reads_stops_being_read():
    """8 MB behind a head: while nobody reads, the lane holds no more than its
    high-water mark (the server's writes block); then all of it arrives intact."""
    from mcpd.httplane import HIGH_WATER

    size = 8 << 20
    body = bytes(range(256)) * (size // 256)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + body

    with raw_peer(answer_on_each_connection(answer)) as peer:

        async def main() -> None:
            async with HttpClient() as client:
                url = f"http://127.0.0.1:{peer.port}/"
                response = await client.send("POST", url, {}, b"{}", redirects=SAME)
                connection = response._connection  # the lane's own state, looked at
                with anyio.fail_after(10):
                    while not connection._paused:
                        await anyio.sleep(0.01)
                held = connection._buffered
                assert HIGH_WATER < held <= HIGH_WATER + (1 << 20)
                assert await response.read(size) == body
                await response.aclose()

        anyio.run(main, backend_options={"use_uvloop": True})


def test_an_abandoned_exchange_closes_its_connection():
    """A caller that gives up mid-body (cancelled, timed out) leaves nothing
    behind for the next request: that connection is closed, not reused."""
    closed_by_client = threading.Event()
    answers = iter(
        [
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf",
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext",
        ]
    )

    def serve(conn: socket.socket) -> None:
        read_head(conn)
        conn.sendall(next(answers))
        if conn.recv(1) == b"":
            closed_by_client.set()

    with raw_peer(serve) as peer:

        async def main() -> bytes:
            async with HttpClient() as client:
                url = f"http://127.0.0.1:{peer.port}/"
                with anyio.move_on_after(0.5):
                    async with client.stream("POST", url, {}, b"{}", redirects=SAME) as r:
                        await r.read(1000)
                async with client.stream("POST", url, {}, b"{}", redirects=SAME) as r:
                    return await r.read(1000)

        assert anyio.run(main, backend_options={"use_uvloop": True}) == b"next"
        assert closed_by_client.wait(5)
    assert peer.connections == 2


def test_an_idle_connection_is_closed_before_the_server_would(monkeypatch):
    monkeypatch.setattr(mcpd.http, "KEEPALIVE_SECONDS", 0.2)
    closed_by_client = threading.Event()

    def serve(conn: socket.socket) -> None:
        answer_on_each_connection(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")(conn)
        closed_by_client.set()

    with raw_peer(serve) as peer:

        async def main() -> None:
            async with HttpClient() as client:
                url = f"http://127.0.0.1:{peer.port}/"
                async with client.stream("POST", url, {}, b"{}", redirects=SAME) as r:
                    assert await r.read(10) == b"ok"
                with anyio.fail_after(5):
                    while not closed_by_client.is_set():
                        await anyio.sleep(0.01)

        anyio.run(main, backend_options={"use_uvloop": True})


def test_the_lane_keeps_a_tls_connection_alive(tmp_path):
    ca, cert, key = make_pki(tmp_path)
    with http_peer(reply(body=b"secure"), tls=(cert, key)) as peer:
        assert post_all(peer.url, 3, verify=str(ca), own_url=peer.url) == [(200, b"secure")] * 3
    assert len({seen.client_port for seen in peer.seen}) == 1


def test_a_connection_the_server_closed_while_idle_is_not_reused():
    def serve(conn: socket.socket) -> None:
        read_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        conn.shutdown(socket.SHUT_WR)  # a keep-alive timeout on the server's side

    with raw_peer(serve) as peer:

        async def main() -> list[bytes]:
            async with HttpClient() as client:
                url = f"http://127.0.0.1:{peer.port}/"
                bodies = []
                for _ in range(2):
                    response = await client.send("POST", url, {}, b"{}", redirects=SAME)
                    bodies.append(await response.read(10))
                    await response.aclose()
                    with anyio.fail_after(5):  # until the close has reached the client
                        while not response._connection.closed:
                            await anyio.sleep(0.01)
                return bodies

        assert anyio.run(main, backend_options={"use_uvloop": True}) == [b"ok", b"ok"]
    assert peer.connections == 2
