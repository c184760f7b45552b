"""The driver of the sans-IO OAuth steps: which headers go where, and limits.

httpx's MockTransport stands in for the network here: these tests are about
what the driver sends, which no real server would report back.
"""

from __future__ import annotations

import anyio
import httpx
import pytest

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

SERVER = Origin("https://mcp.example.com/mcp", {"X-Api-Key": "k", "Authorization": "Bearer static"})


def two_requests() -> Step[list[int]]:
    first = yield HttpRequest("GET", "https://mcp.example.com/.well-known/oauth-protected-resource")
    second = yield HttpRequest("POST", "https://auth.example.com/token", form={"a": "b"})
    return [first.status, second.status]


def test_configured_headers_go_to_the_servers_origin_only():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    async def main() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await drive(two_requests(), client, SERVER, 5)

    assert anyio.run(main) == [200, 200]
    assert seen[0].headers["x-api-key"] == "k"
    assert "x-api-key" not in seen[1].headers
    assert "authorization" not in seen[1].headers
    assert seen[1].content == b"a=b"


def test_an_oversized_answer_is_refused():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"x" * (MAX_BODY + 1))

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            await drive(two_requests(), client, SERVER, 5)

    with pytest.raises(OAuthError, match="more than"):
        anyio.run(main)


def test_an_unreachable_server_is_a_clear_error_without_query_secrets():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    def step() -> Step[None]:
        yield HttpRequest("GET", "https://user:pw@auth.example.com/x?token=secret")

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            await drive(step(), client, SERVER, 5)

    with pytest.raises(OAuthError) as error:
        anyio.run(main)
    assert "cannot reach https://auth.example.com/x" in str(error.value)
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
