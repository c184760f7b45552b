"""The driver of the sans-IO OAuth steps: which headers go where, which
redirects are followed, and limits, against a real HTTP server that records
what it received. And the sans-IO half imports no I/O at all."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys

import anyio
import pytest
from http_peer import http_peer, reply

from mcpd.http import HttpClient
from mcpd.oauth.driver import MAX_BODY, Reach, drive
from mcpd.oauth.messages import HttpRequest, HttpResponse, OAuthError, Step, check_endpoint


class Origin:
    """The MCP server a step runs for: its URL and configured headers."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url, self.headers = url, headers


def run(step: Step[object], server: Origin) -> object:
    async def main() -> object:
        async with HttpClient() as client:
            return await drive(step, Reach(client, server.url, server.headers, 5))

    return anyio.run(main)


def test_configured_headers_go_to_the_servers_origin_only():
    with http_peer(reply(body=b"{}")) as peer:
        port = peer.url.rsplit(":", 1)[1]
        server = Origin(peer.url + "/mcp", {"X-Api-Key": "k", "Authorization": "Bearer static"})

        def two_requests() -> Step[list[int]]:
            first = yield HttpRequest("GET", peer.url + "/.well-known/oauth-protected-resource")
            # The same machine under another name: another origin.
            second = yield HttpRequest("POST", f"http://localhost:{port}/token", form={"a": "b"})
            return [first.status, second.status]

        assert run(two_requests(), server) == [200, 200]
    assert peer.seen[0].headers["x-api-key"] == "k"
    assert "x-api-key" not in peer.seen[1].headers
    assert "authorization" not in peer.seen[1].headers
    assert peer.seen[1].body == b"a=b"
    assert peer.seen[1].headers["content-type"] == "application/x-www-form-urlencoded"
    # No `Connection: close`: a server that honours it without saying so would
    # leave a dead connection in the pool (idle ones close after a few seconds).
    assert peer.seen[1].headers.get("connection") != "close"


def test_an_oversized_answer_is_refused():
    with http_peer(reply(body=b"x" * (MAX_BODY + 1))) as peer:

        def step() -> Step[None]:
            yield HttpRequest("GET", peer.url + "/big")

        with pytest.raises(OAuthError, match="more than"):
            run(step(), Origin(peer.url, {}))


def test_an_unreachable_server_is_a_clear_error_without_query_secrets():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def step() -> Step[None]:
        yield HttpRequest("GET", f"http://user:pw@127.0.0.1:{port}/x?token=secret")

    with pytest.raises(OAuthError) as error:
        run(step(), Origin("https://mcp.example.com/mcp", {}))
    assert f"cannot reach http://127.0.0.1:{port}/x" in str(error.value)
    assert "secret" not in str(error.value)
    assert "pw" not in str(error.value)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://auth.example.com/token", True),
        ("http://127.0.0.1:9000/token", True),
        ("http://localhost/token", True),
        ("http://auth.example.com/token", False),
        ("ftp://auth.example.com/token", False),
    ],
)
def test_endpoints_must_be_https_unless_on_this_machine(url, allowed):
    if allowed:
        assert check_endpoint(url, "token endpoint") == url
    else:
        with pytest.raises(OAuthError, match="not an https:// URL"):
            check_endpoint(url, "token endpoint")


def test_response_json_tolerates_html():
    page = HttpResponse(500, {"content-type": "text/html"}, b"<html>oops</html>")
    assert page.json() is None


def test_a_back_channel_post_follows_no_redirect():
    """A token endpoint answering 307 to another origin would have the client
    re-send the code (or refresh token, or client secret) there."""
    with http_peer(reply(body=b"{}")) as elsewhere:
        with http_peer(reply(307, b"", Location=elsewhere.url + "/token")) as peer:

            def step() -> Step[None]:
                form = {"grant_type": "refresh_token", "refresh_token": "r-SECRET"}
                yield HttpRequest("POST", peer.url + "/token", form=form)

            with pytest.raises(OAuthError, match="must not follow"):
                run(step(), Origin(peer.url + "/mcp", {"X-Api-Key": "k"}))
        assert len(peer.seen) == 1
    assert elsewhere.seen == []


def test_a_metadata_get_follows_redirects_to_https_or_this_machine_only():
    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        port = handler.server.server_address[1]
        targets = {
            "/moved": f"http://localhost:{port}/here",  # loopback: allowed
            "/plain": "http://auth.example.com/here",  # plain http elsewhere: refused
        }
        if handler.path in targets:
            reply(302, b"", Location=targets[handler.path])(handler)
        else:
            reply(body=b'{"ok": true}')(handler)

    with http_peer(route) as peer:

        def follow(path: str) -> Step[object]:
            response = yield HttpRequest("GET", peer.url + path)
            return response.json()

        server = Origin(peer.url + "/mcp", {"X-Api-Key": "k"})
        assert run(follow("/moved"), server) == {"ok": True}
        # The configured header went to the server's origin, not after the redirect.
        assert peer.seen[0].headers["x-api-key"] == "k"
        assert "x-api-key" not in peer.seen[1].headers
        with pytest.raises(OAuthError, match="over plain http"):
            run(follow("/plain"), server)


def test_the_sans_io_steps_import_no_io():
    code = (
        "import sys\n"
        "import mcpd.oauth.discovery, mcpd.oauth.flow, mcpd.oauth.refresh\n"
        "io = {'anyio', 'aiohttp', 'socket', 'ssl', 'mcpd.http', 'mcpd.oauth.driver'}\n"
        "print(sorted(io & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.strip() == "[]", result.stdout
