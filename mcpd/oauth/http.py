"""HTTP exchanges for the sans-IO OAuth steps, and the driver that performs them."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import anyio
import msgspec

from ..httpclient import DEFAULT_PORTS, BodyTooLarge, HttpClient, HttpError

T = TypeVar("T")
# OAuth documents are small; anything bigger is refused unread.
MAX_BODY = 1024 * 1024


class OAuthError(Exception):
    """The flow cannot go on; the message says why, for the user, without secrets."""


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    form: dict[str, str] | None = None
    json: Any = None


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        try:
            return msgspec.json.decode(self.body)
        except msgspec.DecodeError:
            return None


Step = Generator[HttpRequest, HttpResponse, T]


def check_endpoint(url: str, what: str) -> str:
    """OAuth endpoints must be HTTPS, except on loopback (for local servers)."""
    parts = urlsplit(url)
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme == "https" or (parts.scheme == "http" and loopback):
        return url
    raise OAuthError(
        f"the {what} {url!r} is not an https:// URL; mcpd sends credentials only over HTTPS "
        "(or to this machine)"
    )


@dataclass(frozen=True)
class Origin:
    """The MCP server's configured headers go to its own origin only."""

    url: str
    headers: dict[str, str]

    def headers_for(self, url: str) -> dict[str, str]:
        return self.headers if origin(url) == origin(self.url) else {}


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(scheme)


async def drive(step: Step[T], client: HttpClient, server: Origin, timeout: float) -> T:
    """Perform a step's requests with `client` until it returns its result."""
    try:
        request = next(step)
        while True:
            response = await _perform(request, client, server.headers_for(request.url), timeout)
            request = step.send(response)
    except StopIteration as done:
        result: T = done.value
        return result


async def _perform(
    request: HttpRequest, client: HttpClient, headers: dict[str, str], timeout: float
) -> HttpResponse:
    # OAuth requests come minutes apart: no connection is kept for them.
    headers = {**headers, **request.headers, "Connection": "close"}
    body = b""
    if request.form is not None:
        body = urlencode(request.form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif request.json is not None:
        body = msgspec.json.encode(request.json)
        headers["Content-Type"] = "application/json"
    try:
        with anyio.fail_after(timeout):
            async with client.stream(request.method, request.url, headers, body) as response:
                content = await response.read(MAX_BODY)
    except TimeoutError:
        raise OAuthError(f"{_where(request.url)} did not answer within {timeout:g}s") from None
    except BodyTooLarge:
        raise OAuthError(
            f"{_where(request.url)} answered with more than {MAX_BODY} bytes"
        ) from None
    except HttpError as exc:
        raise OAuthError(f"cannot reach {_where(request.url)}: {exc}") from None
    return HttpResponse(response.status_code, response.headers, content)


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
