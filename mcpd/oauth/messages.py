"""The HTTP exchanges of the sans-IO OAuth steps: what a step asks for and gets.

A step is a generator that yields `HttpRequest`s and receives `HttpResponse`s
(`Step[T]`), then returns its decision; `driver.drive` performs one. Nothing
here touches a socket or imports anything that does.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from ..urls import is_loopback, origin_of

T = TypeVar("T")


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
    target = origin_of(url)
    if target.scheme == "https" or (target.scheme == "http" and is_loopback(target.host)):
        return url
    raise OAuthError(
        f"the {what} {url!r} is not an https:// URL; mcpd sends credentials only over HTTPS "
        "(or to this machine)"
    )
