"""The device authorization grant (RFC 8628), sans-IO: a sign-in for machines
without a browser.

    pending = yield from start(discovery, client, scope, settings, now)
    ...the user opens pending.code.verification_uri anywhere and enters
    pending.code.user_code; meanwhile, every pending.interval seconds...
    answer  = yield from poll(pending)     # tokens, or how to go on waiting

The device authorization request carries what an authorization request would:
the client (authenticated as at the token endpoint), the scope and the RFC 8707
`resource`. Its answer is checked field by field; an error names the field,
never its value. The poll is a token request with the device code grant; its
refusals mean: `authorization_pending` (ask again after the interval),
`slow_down` (ask again, and from now on 5 seconds more apart, RFC 8628 3.5),
`access_denied` and `expired_token` (the end). A passing failure of the token
endpoint (5xx, 429, `temporarily_unavailable`) is waited out like a pending
answer; any other refusal ends the sign-in. The caller sleeps between polls
(`PendingDevice.next_poll`) and gives up when the code expires: after
`expires_in`, and never later than MAX_LIFETIME_SECONDS.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ..config import OAuthSettings
from ..urls import is_loopback, origin_of, wire_clean
from .discovery import DEVICE_CODE_GRANT, Discovery
from .flow import (
    ServerRefused,
    client_authentication,
    effective_resource,
    error_text,
    token_request,
)
from .messages import HttpRequest, HttpResponse, OAuthError, Step, check_endpoint
from .model import ClientRegistration, TokenSet

DEFAULT_INTERVAL_SECONDS = 5.0  # RFC 8628 3.2, when the server names none
SLOW_DOWN_SECONDS = 5.0  # RFC 8628 3.5
# Polls are never closer than this, whatever interval a server names.
MIN_INTERVAL_SECONDS = 1.0
# However long a server says its code lives, mcpd waits no longer for the user.
MAX_LIFETIME_SECONDS = 1800.0
# A user code longer than this is not something a person types.
MAX_USER_CODE_CHARS = 64


class Answer(enum.Enum):
    """A poll's answer other than tokens."""

    PENDING = "authorization_pending"  # the user has not finished: ask again
    SLOW_DOWN = "slow_down"  # ask again, 5 s further apart from now on
    DENIED = "access_denied"  # the user (or the server) said no
    EXPIRED = "expired_token"  # the code expired before the user finished


@dataclass(frozen=True)
class DeviceCode:
    """The device authorization response (RFC 8628 3.2), checked."""

    device_code: str = field(repr=False)  # a secret: only the token endpoint sees it
    user_code: str = field(repr=False)  # the user sees it; logs do not
    verification_uri: str
    verification_uri_complete: str | None = field(repr=False)  # it carries the user code
    expires_in: float
    interval: float


@dataclass
class PendingDevice:
    """One device sign-in in progress: what the polls need, and when to make them."""

    discovery: Discovery
    client: ClientRegistration
    scope: str | None
    code: DeviceCode
    # The RFC 8707 resource the device authorization request carried (None: none);
    # the polls carry the same.
    resource: str | None
    interval: float
    expires_at: float  # on the caller's monotonic clock

    def next_poll(self, now: float) -> float | None:
        """Seconds to wait before the next poll; None when the code will have
        expired by then (the sign-in ends at `expires_at`)."""
        if now + self.interval >= self.expires_at:
            return None
        return self.interval

    def slow_down(self) -> None:
        self.interval += SLOW_DOWN_SECONDS


def authorization_request(
    discovery: Discovery, client: ClientRegistration, scope: str | None, resource: str | None
) -> HttpRequest:
    """The device authorization request (RFC 8628 3.1), to a server that offers
    one (`discovery.offers_device_sign_in`); `resource` None: none."""
    endpoint = discovery.server.device_authorization_endpoint
    assert endpoint
    check_endpoint(endpoint, "device authorization endpoint")
    form: dict[str, str] = {}
    if scope:
        form["scope"] = scope
    if resource is not None:
        form["resource"] = resource
    headers, body = client_authentication(client, form)
    return HttpRequest("POST", endpoint, headers, form=body)


def parse_authorization(response: HttpResponse) -> DeviceCode:
    """The device authorization response, checked; OAuthError (ServerRefused for
    the server's own error) naming what is wrong, never a value."""
    data = response.json()
    error = data.get("error") if isinstance(data, dict) else None
    if response.status != 200 or isinstance(error, str):
        raise ServerRefused(
            f"the device authorization endpoint refused: {error_text(response)}",
            error if isinstance(error, str) else None,
            response.status,
        )
    if not isinstance(data, dict):
        raise OAuthError("the device authorization response is not a JSON object")
    user_code = _text(data, "user_code")
    if len(user_code) > MAX_USER_CODE_CHARS:
        raise OAuthError(
            f"the device authorization response's user_code is longer than "
            f"{MAX_USER_CODE_CHARS} characters"
        )
    complete = data.get("verification_uri_complete")
    return DeviceCode(
        device_code=_text(data, "device_code"),
        user_code=user_code,
        verification_uri=_url(data, "verification_uri"),
        verification_uri_complete=None
        if complete is None
        else _url(data, "verification_uri_complete"),
        expires_in=_seconds(data, "expires_in", None),
        interval=_seconds(data, "interval", DEFAULT_INTERVAL_SECONDS),
    )


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if value is None:
        raise OAuthError(f"the device authorization response has no {name}")
    # Printable: it is shown on a terminal, where a control character could
    # rewrite what the user sees.
    if not isinstance(value, str) or not value or not value.isprintable():
        raise OAuthError(f"the device authorization response's {name} is not a printable string")
    return value


def _url(data: dict[str, Any], name: str) -> str:
    """A page the user is sent to: https, or http on this machine."""
    url = _text(data, name)
    target = origin_of(url)
    if not wire_clean(url) or not target.host or target.scheme not in ("https", "http"):
        raise OAuthError(f"the device authorization response's {name} is not a URL")
    if target.scheme == "http" and not is_loopback(target.host):
        raise OAuthError(
            f"the device authorization response's {name} is not an https:// URL; mcpd "
            "sends no one to sign in over plain HTTP"
        )
    return url


def _seconds(data: dict[str, Any], name: str, default: float | None) -> float:
    value = data.get(name)
    if value is None and default is not None:
        return default
    if value is None:
        raise OAuthError(f"the device authorization response has no {name}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise OAuthError(
            f"the device authorization response's {name} is not a positive number of seconds"
        )
    return float(value)


def start(
    discovery: Discovery,
    client: ClientRegistration,
    scope: str | None,
    settings: OAuthSettings | None,
    now: float,
) -> Step[PendingDevice]:
    """Ask for a device code; the sign-in it begins, its clock started at `now`."""
    resource = effective_resource(settings, discovery.resource)
    code = parse_authorization((yield authorization_request(discovery, client, scope, resource)))
    return PendingDevice(
        discovery,
        client,
        scope,
        code,
        resource,
        interval=max(code.interval, MIN_INTERVAL_SECONDS),
        expires_at=now + min(code.expires_in, MAX_LIFETIME_SECONDS),
    )


def poll_form(pending: PendingDevice) -> dict[str, str]:
    """The token request of a poll (RFC 8628 3.4), before client authentication."""
    form = {"grant_type": DEVICE_CODE_GRANT, "device_code": pending.code.device_code}
    if pending.resource is not None:
        form["resource"] = pending.resource
    return form


def classify(refusal: ServerRefused) -> Answer | None:
    """What a refused poll means; None: an error that ends the sign-in."""
    try:
        return Answer(refusal.error)
    except ValueError:
        pass
    status = refusal.status or 0
    if refusal.error == "temporarily_unavailable" or status >= 500 or status == 429:
        return Answer.PENDING  # passing: asked again at the interval
    return None


def poll(pending: PendingDevice) -> Step[TokenSet | Answer]:
    """One poll: the tokens, or how to go on; ServerRefused for any other error."""
    endpoint = pending.discovery.server.token_endpoint
    try:
        tokens = yield from token_request(endpoint, pending.client, poll_form(pending))
    except ServerRefused as refusal:
        answer = classify(refusal)
        if answer is None:
            raise
        return answer
    if tokens.scope is None:
        tokens.scope = pending.scope
    return tokens
