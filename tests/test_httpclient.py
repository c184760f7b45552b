"""mcpd's HTTP client against real HTTP peers: the standard library's HTTP/1.1
server (keep-alive, redirects, closes) and pproxy, a real forward proxy (CONNECT
tunnels for https, absolute-form requests for http)."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest
from http_peer import http_peer, reply
from test_tls import make_pki

from mcpd.httpclient import (
    MAX_REDIRECTS,
    BodyTooLarge,
    ConnectError,
    HttpClient,
    HttpError,
    Origin,
    Proxy,
    proxy_for,
)

pytestmark = pytest.mark.timeout(60)


def fetch(
    method: str,
    url: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    **client_options: Any,
) -> tuple[int, bytes]:
    """One request on a client of its own (a client belongs to one event loop)."""

    async def main() -> tuple[int, bytes]:
        async with (
            HttpClient(**client_options) as client,
            client.stream(method, url, headers or {}, body) as response,
        ):
            return response.status_code, await response.read(1 << 20)

    return anyio.run(main)


def test_keep_alive_reuses_one_connection():
    with http_peer(reply(body=b"hello")) as peer:

        async def main() -> list[bytes]:
            async with HttpClient() as client:
                bodies = []
                for _ in range(3):
                    async with client.stream("GET", peer.url + "/a", {}) as response:
                        bodies.append(await response.read(100))
                return bodies

        assert anyio.run(main) == [b"hello"] * 3
    assert len({seen.client_port for seen in peer.seen}) == 1


def test_a_connection_the_server_closed_while_idle_is_replaced():
    def close_after(handler: http.server.BaseHTTPRequestHandler) -> None:
        reply(body=b"once")(handler)
        handler.close_connection = True  # closed without saying so in the response

    with http_peer(close_after) as peer:

        async def main() -> list[bytes]:
            async with HttpClient() as client:
                bodies = []
                for _ in range(2):
                    async with client.stream("POST", peer.url, {}, b"x") as response:
                        bodies.append(await response.read(100))
                    # Let the close reach this side before the next request.
                    deadline = time.monotonic() + 5
                    while client._idle and client._idle[Origin.of(peer.url)][0].idle_and_open():
                        assert time.monotonic() < deadline
                        await anyio.sleep(0.01)
                return bodies

        assert anyio.run(main) == [b"once", b"once"]
    assert [seen.body for seen in peer.seen] == [b"x", b"x"]
    assert peer.seen[0].client_port != peer.seen[1].client_port


def test_a_response_left_unread_never_carries_another_request():
    with http_peer(reply(body=b"x" * 200_000)) as peer:

        async def main() -> None:
            async with HttpClient() as client:
                response = await client.send("GET", peer.url, {})
                async for _chunk in response.aiter_bytes():
                    break
                await response.aclose()
                async with client.stream("GET", peer.url, {}) as second:
                    assert len(await second.read(1 << 20)) == 200_000

        anyio.run(main)
    assert peer.seen[0].client_port != peer.seen[1].client_port


def test_a_body_over_the_limit_is_refused():
    with http_peer(reply(body=b"x" * 5000)) as peer:

        async def main() -> None:
            async with HttpClient() as client, client.stream("GET", peer.url, {}) as response:
                await response.read(4096)

        with pytest.raises(BodyTooLarge, match="over 4096 bytes"):
            anyio.run(main)


def test_redirects_keep_or_drop_the_method_and_credentials_as_http_says():
    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        port = handler.server.server_address[1]
        targets = {
            "/keep": "/final",  # 307: same method and body
            "/see-other": "/final",  # 303: becomes a GET without a body
            "/elsewhere": f"http://localhost:{port}/final",  # another origin
        }
        if handler.path in targets:
            status = 303 if handler.path == "/see-other" else 307
            reply(status, b"", Location=targets[handler.path])(handler)
        else:
            reply(body=handler.command.encode())(handler)

    with http_peer(route) as peer:
        auth = {"Authorization": "Bearer t0ken", "Content-Type": "application/json"}
        assert fetch("POST", peer.url + "/keep", b"{}", auth) == (200, b"POST")
        assert peer.seen[-1].body == b"{}"
        assert peer.seen[-1].headers["authorization"] == "Bearer t0ken"
        assert fetch("POST", peer.url + "/see-other", b"{}", auth) == (200, b"GET")
        assert peer.seen[-1].body == b""
        assert "content-type" not in peer.seen[-1].headers
        assert fetch("POST", peer.url + "/elsewhere", b"{}", auth) == (200, b"POST")
        assert peer.seen[-1].headers["host"].startswith("localhost:")
        assert "authorization" not in peer.seen[-1].headers


def test_endless_redirects_end_with_a_clear_error():
    with http_peer(reply(302, b"", Location="/again")) as peer:
        with pytest.raises(HttpError, match=f"more than {MAX_REDIRECTS} redirects"):
            fetch("GET", peer.url)
        assert len(peer.seen) == MAX_REDIRECTS + 1


def test_a_refused_connection_says_where():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectError, match=f"cannot connect to 127.0.0.1:{port}"):
        fetch("GET", f"http://127.0.0.1:{port}/")


def test_tls_checks_the_certificate_unless_told_otherwise(tmp_path):
    ca, cert, key = make_pki(tmp_path)
    with http_peer(reply(body=b"secure"), tls=(cert, key)) as peer:
        with pytest.raises(ConnectError, match="certificate verify failed"):
            fetch("GET", peer.url)
        assert fetch("GET", peer.url, verify=str(ca)) == (200, b"secure")
        assert fetch("GET", peer.url, verify=False) == (200, b"secure")


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


def test_https_goes_through_a_proxy_tunnel_and_http_in_absolute_form(tmp_path):
    ca, cert, key = make_pki(tmp_path)
    with (
        http_peer(reply(body=b"tunnelled"), tls=(cert, key)) as secure,
        http_peer(reply(body=b"forwarded")) as plain,
        pproxy() as proxy,
    ):
        environ = {"HTTPS_PROXY": proxy, "http_proxy": proxy}
        options = {"verify": str(ca), "environ": environ}
        assert fetch("GET", secure.url + "/s", **options) == (200, b"tunnelled")
        assert fetch("GET", plain.url + "/p", **options) == (200, b"forwarded")
        assert plain.seen[-1].path == "/p"
        proxy_port = proxy.rsplit(":", 1)[1]
    # With the proxy gone, both fail at the proxy: proof that they went through it.
    for url in (secure.url, plain.url):
        with pytest.raises(ConnectError, match=f"127.0.0.1:{proxy_port}"):
            fetch("GET", url, **options)


def test_no_proxy_and_unsupported_proxies():
    origin = Origin.of("https://mcp.example.com/mcp")
    assert proxy_for(origin, {"HTTPS_PROXY": "proxy:3128"}) == Proxy(
        Origin("http", "proxy", 3128), []
    )
    with_user = proxy_for(origin, {"HTTPS_PROXY": "http://u:p@proxy:3128"})
    assert with_user == Proxy(
        Origin("http", "proxy", 3128), [("Proxy-Authorization", "Basic dTpw")]
    )
    assert proxy_for(origin, {"HTTPS_PROXY": "proxy:3128", "NO_PROXY": ".example.com"}) is None
    assert proxy_for(origin, {"https_proxy": "proxy:3128", "no_proxy": "*"}) is None
    assert proxy_for(origin, {"HTTP_PROXY": "proxy:3128"}) is None  # only for http://
    assert proxy_for(origin, {"ALL_PROXY": "http://proxy:8080"}) == Proxy(
        Origin("http", "proxy", 8080), []
    )
    with pytest.raises(HttpError, match="must be an http:// proxy"):
        proxy_for(origin, {"HTTPS_PROXY": "https://proxy:3128"})
