"""The driver of the sans-IO OAuth steps: which headers go where, and limits,
against a real HTTP server that records what it received."""

from __future__ import annotations

import socket

import anyio
import pytest
from http_peer import http_peer, reply

from mcpd.httpclient import HttpClient
from mcpd.oauth.http import (
    MAX_BODY,
    HttpRequest,
    HttpResponse,
    OAuthError,
    Origin,
    Step,
    check_endpoint,
    drive,
)


def run(step: Step[object], server: Origin) -> object:
    async def main() -> object:
        async with HttpClient() as client:
            return await drive(step, client, server, 5)

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
    # Requests minutes apart keep no connection open (500 refreshes, 500 sockets).
    assert peer.seen[1].headers["connection"] == "close"


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
