"""Performing the sans-IO OAuth steps over the server's HTTP client.

Each step's requests go out with the redirect policy of their kind, decided
here: a back-channel POST (token, registration, revocation) follows no
redirect, since it carries a code, a refresh token or a client secret; a
metadata GET follows redirects to https targets (or to this machine) only.
The server's configured headers go to the server's own origin only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlencode

import msgspec

from ..http import BodyTooLarge, HttpClient, HttpError, Redirects
from ..urls import origin_of, public_url
from .messages import HttpRequest, HttpResponse, OAuthError, Step

T = TypeVar("T")
# OAuth documents are small; anything bigger is refused unread.
MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class Reach:
    """How one server's OAuth requests reach the network."""

    client: HttpClient
    server_url: str
    # The server's configured headers: sent to its own origin, nowhere else.
    headers: Mapping[str, str]
    timeout: float

    def headers_for(self, url: str) -> Mapping[str, str]:
        return self.headers if origin_of(url) == origin_of(self.server_url) else {}


async def drive(step: Step[T], reach: Reach) -> T:
    """Perform a step's requests until it returns its result."""
    try:
        request = next(step)
        while True:
            request = step.send(await _perform(request, reach))
    except StopIteration as done:
        result: T = done.value
        return result


async def _perform(request: HttpRequest, reach: Reach) -> HttpResponse:
    # No `Connection: close`: a server that honours it without saying so in its
    # answer leaves a dead connection in the pool. An idle one is closed after
    # the pool's keep-alive time anyway.
    headers = {**reach.headers_for(request.url), **request.headers}
    body = b""
    if request.form is not None:
        body = urlencode(request.form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif request.json is not None:
        body = msgspec.json.encode(request.json)
        headers["Content-Type"] = "application/json"
    redirects = Redirects.NONE if request.method == "POST" else Redirects.SECURE
    where = public_url(request.url).removesuffix("?…")
    try:
        async with reach.client.stream(
            request.method,
            request.url,
            headers,
            body,
            redirects=redirects,
            head_timeout=reach.timeout,
        ) as response:
            content = await response.read(MAX_BODY, reach.timeout)
    except BodyTooLarge:
        raise OAuthError(f"{where} answered with more than {MAX_BODY} bytes") from None
    except HttpError as exc:
        raise OAuthError(f"cannot reach {where}: {exc}") from None
    return HttpResponse(response.status_code, response.headers, content)
