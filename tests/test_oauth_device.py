"""Unit tests of the device sign-in (RFC 8628): the sans-IO steps of
mcpd/oauth/device.py, the client registration that serves it, the control
protocol's fields for it, and how `mcpctl auth` chooses it. No sockets, no
clocks: the steps run on test_oauth_flow's FakeNet, and times are numbers.
"""

from __future__ import annotations

import argparse
from typing import Any

import msgspec
import pytest
from test_oauth_flow import (
    ACCESS,
    CLIENT_SECRET,
    ISSUER,
    PUBLIC,
    REDIRECT,
    REFRESH,
    REGISTER,
    SERVER,
    TOKEN,
    FakeNet,
    confidential,
    html_response,
    json_response,
    make_discovery,
    refused,
    registration_net,
    token_document,
)

from mcpctl.cli import sign_in_method
from mcpd.config import OAuthSettings
from mcpd.oauth import device
from mcpd.oauth.device import Answer, PendingDevice
from mcpd.oauth.discovery import DEVICE_CODE_GRANT, offers_device_grant, offers_device_sign_in
from mcpd.oauth.flow import ServerRefused, choose_client, register
from mcpd.oauth.messages import HttpResponse, OAuthError
from mcpd.oauth.model import TokenSet
from mcpd.protocol import AuthParams, AuthStarted, DeviceSignIn, ServerStatus

DEVICE_ENDPOINT = f"{ISSUER}/device/auth"
VERIFY = f"{ISSUER}/device"
DEVICE_CODE = "device-SECRET-5a1b2c3d"
USER_CODE = "WDJB-MJHT"
SECRETS = (DEVICE_CODE,)


def discovery(**server: Any):
    return make_discovery(**{"device_authorization_endpoint": DEVICE_ENDPOINT, **server})


def device_document(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "device_code": DEVICE_CODE,
        "user_code": USER_CODE,
        "verification_uri": VERIFY,
        "verification_uri_complete": f"{VERIFY}?user_code={USER_CODE}",
        "expires_in": 600,
        "interval": 2,
    }
    document.update(overrides)
    return {k: v for k, v in document.items() if v is not None}


def device_net(response: HttpResponse | None = None) -> FakeNet:
    return FakeNet({("POST", DEVICE_ENDPOINT): response or json_response(device_document())})


def started(now: float = 100.0, **document: Any) -> PendingDevice:
    """A device sign-in begun at `now`, the server answering `device_document(**document)`."""
    net = device_net(json_response(device_document(**document)))
    pending: PendingDevice = net.run(
        device.start(discovery(), PUBLIC, "read offline_access", None, now)
    )
    return pending


def error_response(error: str, status: int = 400) -> HttpResponse:
    return json_response({"error": error, "error_description": "as RFC 8628 says"}, status)


# =========================================================================================
# What the metadata offers
# =========================================================================================


@pytest.mark.parametrize(
    ("server", "sign_in", "grant"),
    [
        ({}, False, False),
        ({"device_authorization_endpoint": DEVICE_ENDPOINT}, True, True),
        ({"grant_types_supported": [DEVICE_CODE_GRANT]}, False, True),
        ({"grant_types_supported": ["authorization_code"]}, False, False),
    ],
)
def test_what_the_metadata_offers(server, sign_in, grant):
    metadata = make_discovery(**server).server
    assert offers_device_sign_in(metadata) is sign_in
    assert offers_device_grant(metadata) is grant


# =========================================================================================
# The device authorization request
# =========================================================================================


def test_the_request_carries_the_client_scope_and_resource():
    net = device_net()
    net.run(device.start(discovery(), PUBLIC, "read offline_access", None, 0.0))
    request = net.only("POST", DEVICE_ENDPOINT)
    assert request.form == {
        "scope": "read offline_access",
        "resource": SERVER,
        "client_id": PUBLIC.client_id,
    }
    assert request.headers["Accept"] == "application/json"
    assert "Authorization" not in request.headers


def test_the_request_authenticates_a_confidential_client_as_the_token_endpoint_would():
    basic = device.authorization_request(
        discovery(), confidential("client_secret_basic"), None, None
    )
    assert basic.headers["Authorization"].startswith("Basic ")
    assert basic.form is not None
    assert CLIENT_SECRET not in basic.form.values()
    assert "scope" not in basic.form
    post = device.authorization_request(discovery(), confidential("client_secret_post"), None, None)
    assert post.form is not None
    assert post.form["client_secret"] == CLIENT_SECRET


@pytest.mark.parametrize(
    ("configured", "sent"),
    [(None, SERVER), (False, None), ("https://api.example.com", "https://api.example.com")],
)
def test_the_resource_is_the_one_a_browser_sign_in_sends(configured, sent):
    net = device_net()
    pending = net.run(
        device.start(discovery(), PUBLIC, None, OAuthSettings(resource=configured), 0)
    )
    request = net.only("POST", DEVICE_ENDPOINT)
    assert request.form is not None
    assert request.form.get("resource") == sent
    assert pending.resource == sent
    assert device.poll_form(pending).get("resource") == sent


def test_an_http_endpoint_elsewhere_is_refused_before_asking_it():
    insecure = discovery(device_authorization_endpoint="http://auth.example.com/device/auth")
    net = device_net()
    with refused(OAuthError, "not an https:// URL"):
        net.run(device.start(insecure, PUBLIC, None, None, 0.0))
    assert net.requests == []


# =========================================================================================
# Its answer
# =========================================================================================


def test_the_answer_is_read_field_by_field():
    pending = started(now=1000.0)
    assert pending.code.device_code == DEVICE_CODE
    assert pending.code.user_code == USER_CODE
    assert pending.code.verification_uri == VERIFY
    assert pending.code.verification_uri_complete == f"{VERIFY}?user_code={USER_CODE}"
    assert pending.interval == 2.0
    assert pending.expires_at == 1600.0
    assert pending.scope == "read offline_access"
    assert pending.client is PUBLIC
    for text in (repr(pending), repr(pending.code)):
        assert DEVICE_CODE not in text
        assert USER_CODE not in text


def test_optional_fields_have_their_defaults():
    pending = started(verification_uri_complete=None, interval=None)
    assert pending.code.verification_uri_complete is None
    assert pending.interval == device.DEFAULT_INTERVAL_SECONDS == 5.0


def test_the_interval_has_a_floor_and_the_lifetime_a_ceiling():
    pending = started(now=0.0, interval=0.2, expires_in=86400)
    assert pending.interval == device.MIN_INTERVAL_SECONDS
    assert pending.expires_at == device.MAX_LIFETIME_SECONDS


@pytest.mark.parametrize("field", ["device_code", "user_code", "verification_uri", "expires_in"])
def test_a_missing_field_is_named(field):
    with refused(OAuthError, f"has no {field}", SECRETS):
        started(**{field: None})


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("device_code", 42, "device_code is not a printable string"),
        ("device_code", "", "device_code is not a printable string"),
        ("user_code", "WDJB\x1b[2J", "user_code is not a printable string"),
        ("user_code", "W" * 65, "user_code is longer than 64 characters"),
        ("verification_uri", "not a url", "verification_uri is not a URL"),
        ("verification_uri", "javascript:alert(1)", "verification_uri is not a URL"),
        ("verification_uri", "http://auth.example.com/device", "not an https:// URL"),
        ("verification_uri_complete", ["x"], "verification_uri_complete is not a printable"),
        ("expires_in", "600", "expires_in is not a positive number"),
        ("expires_in", 0, "expires_in is not a positive number"),
        ("expires_in", True, "expires_in is not a positive number"),
        ("interval", -5, "interval is not a positive number"),
        ("interval", "5", "interval is not a positive number"),
    ],
)
def test_a_malformed_field_is_named_without_its_value(field, value, says):
    with refused(OAuthError, says, SECRETS) as info:
        started(**{field: value})
    if isinstance(value, str) and len(value) > 3:
        assert value not in str(info.value)


def test_http_on_this_machine_is_a_verification_uri_like_any_other():
    local = "http://127.0.0.1:8080/device"
    assert started(verification_uri=local).code.verification_uri == local


def test_an_answer_that_is_not_an_object_is_refused():
    with refused(OAuthError, "not a JSON object"):
        device.parse_authorization(json_response(["device_code"]))


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (error_response("unauthorized_client"), "unauthorized_client"),
        (error_response("invalid_client", 401), "invalid_client"),
        (json_response({"error": "invalid_scope"}), "invalid_scope"),  # an error with 200
        (html_response(500), None),
    ],
)
def test_a_refusal_keeps_the_servers_error_code(response, error):
    with refused(ServerRefused, "the device authorization endpoint refused") as info:
        device.parse_authorization(response)
    assert info.value.error == error


# =========================================================================================
# Polling
# =========================================================================================


def test_polls_come_at_the_interval_until_the_code_expires():
    pending = started(now=0.0, interval=5, expires_in=12)
    assert pending.next_poll(0.0) == 5.0
    assert pending.next_poll(5.0) == 5.0
    assert pending.next_poll(7.0) is None  # 12 s would have passed by the next one
    assert pending.next_poll(12.0) is None


def test_slow_down_adds_five_seconds_for_good():
    pending = started(now=0.0, interval=1)
    pending.slow_down()
    assert pending.next_poll(1.0) == 6.0
    assert pending.next_poll(7.0) == 6.0
    pending.slow_down()
    assert pending.interval == 11.0


def test_the_poll_is_a_device_code_token_request():
    pending = started()
    net = FakeNet({("POST", TOKEN): json_response(token_document())})
    net.run(device.poll(pending))
    assert net.only("POST", TOKEN).form == {
        "grant_type": DEVICE_CODE_GRANT,
        "device_code": DEVICE_CODE,
        "resource": SERVER,
        "client_id": PUBLIC.client_id,
    }


def test_a_poll_answered_with_tokens_returns_them():
    pending = started()
    net = FakeNet({("POST", TOKEN): json_response(token_document(scope=None))})
    tokens = net.run(device.poll(pending))
    assert isinstance(tokens, TokenSet)
    assert (tokens.access_token, tokens.refresh_token) == (ACCESS, REFRESH)
    assert tokens.scope == "read offline_access"  # none granted: the one asked for


@pytest.mark.parametrize(
    ("response", "answer"),
    [
        (error_response("authorization_pending"), Answer.PENDING),
        (error_response("slow_down"), Answer.SLOW_DOWN),
        (error_response("access_denied"), Answer.DENIED),
        (error_response("expired_token"), Answer.EXPIRED),
        (json_response({"error": "authorization_pending"}), Answer.PENDING),  # with 200
        (error_response("temporarily_unavailable", 503), Answer.PENDING),
        (html_response(502), Answer.PENDING),
        (json_response({}, 429), Answer.PENDING),
    ],
)
def test_a_poll_answer_is_classified(response, answer):
    net = FakeNet({("POST", TOKEN): response})
    assert net.run(device.poll(started())) is answer


@pytest.mark.parametrize(
    "error", ["invalid_grant", "invalid_client", "unauthorized_client", "unsupported_grant_type"]
)
def test_any_other_refusal_ends_the_sign_in_with_its_code(error):
    net = FakeNet({("POST", TOKEN): error_response(error)})
    with refused(ServerRefused, error, SECRETS) as info:
        net.run(device.poll(started()))
    assert info.value.error == error


def test_classify_alone():
    assert device.classify(ServerRefused("x", "slow_down", 400)) is Answer.SLOW_DOWN
    assert device.classify(ServerRefused("x", None, 400)) is None
    assert device.classify(ServerRefused("x", None, None)) is None


# =========================================================================================
# One client for both kinds of sign-in
# =========================================================================================


@pytest.mark.parametrize(
    "server",
    [
        {"device_authorization_endpoint": DEVICE_ENDPOINT},
        {"grant_types_supported": ["authorization_code", DEVICE_CODE_GRANT]},
    ],
)
def test_a_registration_asks_for_the_device_grant_where_it_is_offered(server):
    net = registration_net(json_response({"client_id": "dcr-1"}, 201))
    net.run(register(make_discovery(**server), REDIRECT, "read"))
    body = net.only("POST", REGISTER).json
    assert body["grant_types"] == ["authorization_code", "refresh_token", DEVICE_CODE_GRANT]
    assert body["redirect_uris"] == [REDIRECT]


def test_a_registration_asks_for_no_device_grant_where_none_is_offered():
    net = registration_net(json_response({"client_id": "dcr-1"}, 201))
    net.run(register(make_discovery(), REDIRECT, "read"))
    assert DEVICE_CODE_GRANT not in net.only("POST", REGISTER).json["grant_types"]


def test_a_registration_without_a_redirect_asks_for_no_redirect_based_grant():
    net = registration_net(json_response({"client_id": "dcr-1"}, 201))
    client = net.run(register(discovery(), None, "read"))
    body = net.only("POST", REGISTER).json
    assert body["grant_types"] == ["refresh_token", DEVICE_CODE_GRANT]
    assert (body["redirect_uris"], body["response_types"]) == ([], [])
    assert body["application_type"] == "native"
    assert client.redirect_uri is None


def test_a_device_sign_in_reuses_a_stored_client_whatever_its_redirect():
    stored = confidential("client_secret_basic")
    assert choose_client(None, discovery(), stored, None).client is stored
    identity = choose_client(None, discovery(), None, None)
    assert (identity.client, identity.register) == (None, True)


# =========================================================================================
# The control protocol, and mcpctl's choice
# =========================================================================================


def test_auth_params_name_the_method_and_default_to_the_browser():
    decode = msgspec.msgpack.decode
    assert decode(msgspec.msgpack.encode({"server": "s"}), type=AuthParams).method == "browser"
    device_params = AuthParams("s", method="device")
    assert decode(msgspec.msgpack.encode(device_params), type=AuthParams) == device_params
    with pytest.raises(msgspec.ValidationError, match="method"):
        decode(msgspec.msgpack.encode({"server": "s", "method": "fax"}), type=AuthParams)


def test_auth_started_carries_the_device_sign_in():
    shown = DeviceSignIn(VERIFY, USER_CODE, 599)
    encoded = msgspec.msgpack.encode(AuthStarted("", device=shown))
    assert msgspec.msgpack.decode(encoded, type=AuthStarted).device == shown
    assert "verification_uri_complete" not in msgspec.msgpack.decode(encoded)["device"]
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(AuthStarted("u")), type=AuthStarted) == (
        AuthStarted("u")
    )


def test_server_status_device_sign_in_is_unknown_by_default():
    assert ServerStatus("s", "u", "needs_auth", 0.0).device_sign_in is None


def auth_args(**flags: bool) -> argparse.Namespace:
    return argparse.Namespace(**{"device": False, "no_browser": False, "paste": False, **flags})


NO_DISPLAY: dict[str, str] = {"PATH": "/usr/bin"}


@pytest.mark.parametrize(
    ("flags", "environ", "platform", "tty", "method"),
    [
        # Asked for.
        ({"device": True}, {"DISPLAY": ":0"}, "linux", True, "device"),
        ({"device": True, "no_browser": True}, NO_DISPLAY, "linux", False, "device"),
        # A browser opens here.
        ({}, {"DISPLAY": ":0"}, "linux", False, "browser"),
        ({}, {"WAYLAND_DISPLAY": "wayland-0"}, "linux", False, "browser"),
        ({}, {"BROWSER": "w3m %s"}, "linux", False, "browser"),
        ({}, NO_DISPLAY, "darwin", False, "browser"),
        # No browser, but a terminal to paste into, or a paste asked for.
        ({}, NO_DISPLAY, "linux", True, "browser"),
        ({"no_browser": True}, {"DISPLAY": ":0"}, "linux", True, "browser"),
        ({"paste": True}, NO_DISPLAY, "linux", False, "browser"),
        # Neither: a code, where the server offers one.
        ({}, NO_DISPLAY, "linux", False, "device_if_offered"),
        ({}, {"DISPLAY": ""}, "linux", False, "device_if_offered"),
        ({"no_browser": True}, {"DISPLAY": ":0"}, "linux", False, "device_if_offered"),
        ({"no_browser": True}, NO_DISPLAY, "darwin", False, "device_if_offered"),
    ],
)
def test_mcpctl_chooses_how_to_sign_in(flags, environ, platform, tty, method):
    assert sign_in_method(auth_args(**flags), environ, platform, tty) == method


def test_with_the_daemon_on_another_machine_the_browser_there_signs_in():
    # Through an SSH forward: the daemon's own machine has the browser and the
    # loopback callback, whatever this host lacks.
    assert sign_in_method(auth_args(), NO_DISPLAY, "linux", False, True) == "browser"
    assert sign_in_method(auth_args(device=True), NO_DISPLAY, "linux", False, True) == "device"
