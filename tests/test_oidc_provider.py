"""mcpd against a real OpenID provider: oidc-provider 9.13.3 in its default
configuration (plus open dynamic registration, resource indicators, rotating
refresh tokens, revocation and a user who signs in and consents without a
form), protecting an MCP server (tests/peers/oidc_provider.mjs).

The real daemon and the real `mcpctl`; the sign-in goes through `mcpctl auth`
with BROWSER set to a headless browser that keeps the provider's cookies
(tests/peers/cookie_browser.py). What the provider and the MCP server saw is
read from their log, where tokens appear as fingerprints only; every secret
they issued is registered for the session's secrets scan (tests/leakcheck.py).

The device sign-in (RFC 8628) goes through `mcpctl auth NAME --device` too;
its user is the test, in a browser that keeps cookies
(`OidcPeer.enter_user_code`): it opens the verification URI, enters the code
and confirms (or aborts) in oidc-provider's own forms, then the interaction
signs in and consents. The provider names an interval of 1 s, the shortest
RFC 8628 has, so that the polls come quickly.
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import leakcheck
import pytest
import real_peers
from harness import (
    MCPCTL,
    DaemonProcess,
    McpdEnv,
    finish,
    server_config,
    start_auth,
    status_of,
    wait_state,
)
from peers.cookie_browser import CookieBrowser
from real_peers import OidcPeer, free_port, python_server, token_fingerprint

from mcpd.oauth.model import CredentialRecord

pytestmark = pytest.mark.timeout(180)

NAME = "oidc"
LIFETIME = 3  # seconds: the access tokens' lifetime, so that refreshes come quickly
# The provider lists the resource's scope among its own, and so accepts it in a
# client registration's `scope`; in its default configuration it refuses that
# (the first test runs both ways, the others this way).
LISTS_MCP: dict[str, Any] = {"scopes": ("mcp",)}


@pytest.fixture
def oidc(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[OidcPeer]:
    """The provider (its default configuration, with the additions above) and
    its MCP server; parametrize indirectly with a dict of
    `real_peers.oidc_provider` keyword arguments to change them."""
    options = getattr(request, "param", {})
    with real_peers.oidc_provider(tmp_path, **options) as peer:
        leakcheck.register_record_file(peer.secrets_path)
        leakcheck.register("client secret", peer.resource_server_secret)
        yield peer


def config(peer: OidcPeer, extra: str = "", callback_port: int = 0) -> str:
    return f"[daemon]\ncallback_port = {callback_port}\n" + server_config(NAME, peer.url, extra)


def sign_in(mcpd_env: McpdEnv, daemon: DaemonProcess) -> subprocess.CompletedProcess[str]:
    """`mcpctl auth NAME` with the headless browser, as a user would run it."""
    wait_state(daemon, NAME, "needs_auth")
    result = subprocess.run(
        [MCPCTL, "auth", NAME],
        env={**mcpd_env.vars, "BROWSER": real_peers.cookie_browser_command()},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    mcpd_env.keep_output(["auth", NAME], result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Signed in" in result.stdout, result.stdout
    return result


def stored(mcpd_env: McpdEnv) -> CredentialRecord:
    """The server's record in the daemon's encrypted store, as it is now."""
    records = [
        r
        for r in leakcheck.decrypt_store(
            mcpd_env.key_file, mcpd_env.credentials_dir, temporaries=False
        )
        if r.server == NAME
    ]
    assert len(records) == 1, f"{len(records)} records for {NAME}"
    return records[0]


def rotation_chain(peer: OidcPeer) -> list[str]:
    """Every refresh presented the refresh token the one before it issued, no
    refresh token was presented twice, and each refresh rotated it: the
    fingerprints of the refresh tokens presented, in order."""
    current = None
    presented: list[str] = []
    for token in peer.tokens():
        if token["grant_type"] == "authorization_code":
            current = token["refresh_token"]
        elif token["grant_type"] == "refresh_token":
            assert token["presented"] == current, f"a refresh presented a stale token:\n{peer.log}"
            assert token["refresh_token"] not in (None, token["presented"]), "not rotated"
            presented.append(token["presented"])
            current = token["refresh_token"]
    assert len(presented) == len(set(presented)), f"a refresh token reused:\n{peer.log}"
    assert peer.events("grant_error") == [], peer.log
    return presented


def latest_refresh_token(peer: OidcPeer) -> str | None:
    issued = [t["refresh_token"] for t in peer.tokens() if t["refresh_token"]]
    return issued[-1] if issued else None


def wait_for_refreshes(peer: OidcPeer, count: int) -> None:
    peer.wait_for(
        lambda p: len(p.tokens("refresh_token")) >= count,
        f"{count} refreshes",
        timeout=(count + 3) * 2 * LIFETIME,
    )


def refused_uses(peer: OidcPeer) -> list[dict[str, Any]]:
    """The MCP server's refusals of a token mcpd presented (not its first,
    token-less request, which is how a client learns that it must sign in)."""
    return [e for e in peer.events("mcp") if e["outcome"] not in ("ok", "missing")]


def post_initialize(url: str, access_token: str) -> int:
    """An initialize straight to the MCP server with this token: the HTTP status."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=10)
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "tests", "version": "0"},
        },
    }
    try:
        connection.request(
            "POST",
            parts.path,
            json.dumps(body),
            {
                "Authorization": f"Bearer {access_token}",
                "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream",
            },
        )
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


@pytest.mark.parametrize(
    "oidc",
    [
        pytest.param({}, id="default-scopes"),
        pytest.param(LISTS_MCP, id="provider-lists-mcp"),
    ],
    indirect=True,
)
def test_sign_in_refreshes_rotate_without_reuse_and_survive_a_restart(
    mcpd_env: McpdEnv, run_daemon: Any, oidc: OidcPeer
) -> None:
    """Sign-in, a refresh token, refreshes over several access-token lifetimes
    that never present a refresh token twice, and a restart past the access
    token's expiry without a new sign-in. Both ways the provider may be set
    up: with its own scopes only (`openid`, `offline_access`), where it refuses
    a client registration whose `scope` names the resource's `mcp`
    (invalid_client_metadata), and with `mcp` among them."""
    mcpd_env.write_config(config(oidc))
    daemon = run_daemon()
    sign_in(mcpd_env, daemon)

    # One authorization: PKCE, the resource, offline_access with the consent
    # that an OpenID provider needs to honour it; and a refresh token issued.
    [authorize] = oidc.events("authorize")
    assert authorize["code_challenge_method"] == "S256"
    assert authorize["resource"] == oidc.url
    assert "offline_access" in authorize["scope"].split()
    assert authorize["prompt"] == "consent"
    [issued] = oidc.tokens("authorization_code")
    assert issued["refresh_token"] is not None, "no refresh token issued"
    assert issued["expires_in"] == LIFETIME

    assert wait_state(daemon, NAME, "connected")["state"] == "connected"
    tools = daemon.mcpctl("tools", NAME)
    assert tools.returncode == 0, tools.stderr
    assert "echo" in tools.stdout
    assert daemon.mcpctl("call", NAME, "echo", '{"text": "signed in"}').stdout == "signed in\n"

    # Several lifetimes pass: each refresh presents the token the last one
    # issued, once; the store follows; the server keeps being reachable.
    wait_for_refreshes(oidc, 3)
    rotation_chain(oidc)
    real_peers.wait_until(
        lambda: (
            token_fingerprint(stored(mcpd_env).tokens.refresh_token or "")  # type: ignore[union-attr]
            == latest_refresh_token(oidc)
        ),
        "the store to hold the last refresh token issued",
        timeout=2 * LIFETIME,
    )
    assert daemon.mcpctl("call", NAME, "echo", '{"text": "refreshed"}').stdout == "refreshed\n"
    assert status_of(daemon, NAME)["state"] == "connected"

    # A restart that outlasts the access token: connected again with no new
    # sign-in (a refresh first, never the expired token), refreshing as before.
    expires = status_of(daemon, NAME)["access_expires_at"]
    daemon.stop()
    authorizations = len(oidc.events("authorize"))
    refreshes = len(oidc.tokens("refresh_token"))
    real_peers.wait_until(
        lambda: time.time() > expires + 0.5, "the access token to expire", 2 * LIFETIME
    )
    daemon = run_daemon()
    wait_state(daemon, NAME, "connected", timeout=4 * LIFETIME)
    tools = daemon.mcpctl("tools", NAME)
    assert tools.returncode == 0, tools.stderr
    assert "echo" in tools.stdout
    assert daemon.mcpctl("call", NAME, "echo", '{"text": "restarted"}').stdout == "restarted\n"
    wait_for_refreshes(oidc, refreshes + 2)
    assert len(oidc.events("authorize")) == authorizations, "a new sign-in after the restart"
    assert len(oidc.tokens("authorization_code")) == 1
    rotation_chain(oidc)
    assert refused_uses(oidc) == [], "mcpd presented an expired or revoked token"
    assert oidc.events("server_error") == []


@pytest.mark.parametrize("oidc", [{"access_token_ttl": 60, **LISTS_MCP}], indirect=True)
def test_logout_revokes_the_grant_at_the_provider(
    mcpd_env: McpdEnv, run_daemon: Any, oidc: OidcPeer
) -> None:
    """Access tokens that outlive the test: the tokens read from the store
    before `mcpctl logout` are the ones it revokes."""
    mcpd_env.write_config(config(oidc))
    daemon = run_daemon()
    sign_in(mcpd_env, daemon)
    wait_state(daemon, NAME, "connected")
    assert daemon.mcpctl("call", NAME, "echo", '{"text": "before"}').stdout == "before\n"
    record = stored(mcpd_env)
    leakcheck.register_records([record])  # gone from the store after the logout
    assert record.tokens is not None
    access, refresh = record.tokens.access_token, record.tokens.refresh_token
    assert refresh is not None
    assert oidc.introspect(refresh)["active"] is True
    assert oidc.introspect(access)["active"] is True

    result = daemon.mcpctl("logout", NAME)
    assert result.returncode == 0, result.stderr
    assert "revoked and deleted" in result.stdout, result.stdout

    revoked = oidc.events("revoked")
    assert token_fingerprint(refresh) in [e["token"] for e in revoked], oidc.log
    assert len(oidc.events("grant_revoked")) >= 1
    assert oidc.introspect(refresh)["active"] is False, "the refresh token still works"
    assert oidc.introspect(access)["active"] is False, "the access token still works"
    assert post_initialize(oidc.url, access) == 401
    assert status_of(daemon, NAME)["state"] == "needs_auth"
    assert stored(mcpd_env).tokens is None


@pytest.mark.parametrize("oidc", [{"access_token_format": "jwt", **LISTS_MCP}], indirect=True)
def test_jwt_access_tokens_checked_with_the_providers_keys(
    mcpd_env: McpdEnv, run_daemon: Any, oidc: OidcPeer
) -> None:
    """JWT access tokens (RFC 9068), which the MCP server checks with the
    provider's JWKS and which the provider cannot revoke (it answers
    unsupported_token_type, as RFC 7009 allows): the refresh token's
    revocation ends the grant all the same, and the logout says so."""
    mcpd_env.write_config(config(oidc))
    daemon = run_daemon()
    sign_in(mcpd_env, daemon)
    wait_state(daemon, NAME, "connected")
    assert daemon.mcpctl("call", NAME, "echo", '{"text": "jwt"}').stdout == "jwt\n"
    wait_for_refreshes(oidc, 2)
    rotation_chain(oidc)
    assert daemon.mcpctl("call", NAME, "echo", '{"text": "again"}').stdout == "again\n"
    assert refused_uses(oidc) == []

    refresh = stored(mcpd_env).tokens.refresh_token  # type: ignore[union-attr]
    assert refresh is not None
    result = daemon.mcpctl("logout", NAME)
    assert result.returncode == 0, result.stderr
    assert token_fingerprint(refresh) in [e["token"] for e in oidc.events("revoked")], oidc.log
    assert len(oidc.events("grant_revoked")) >= 1
    assert oidc.introspect(refresh)["active"] is False
    assert status_of(daemon, NAME)["state"] == "needs_auth"
    assert "revoked and deleted" in result.stdout, result.stdout


@pytest.mark.parametrize("oidc", [LISTS_MCP], indirect=True)
def test_without_prompt_no_refresh_token_and_needs_auth_at_expiry(
    mcpd_env: McpdEnv, run_daemon: Any, oidc: OidcPeer
) -> None:
    """`prompt = ""` sends no prompt, so the provider drops offline_access (OpenID
    Connect Core 11) and issues no refresh token: at the access token's expiry
    the server needs a new sign-in, without waiting for a request to fail."""
    mcpd_env.write_config(config(oidc, 'oauth = { prompt = "" }\n'))
    daemon = run_daemon()
    sign_in(mcpd_env, daemon)
    [authorize] = oidc.events("authorize")
    assert authorize["prompt"] is None
    [issued] = oidc.tokens("authorization_code")
    assert issued["refresh_token"] is None
    connected = wait_state(daemon, NAME, "connected")
    assert connected["access_expires_at"] is not None
    assert daemon.mcpctl("call", NAME, "echo", '{"text": "once"}').stdout == "once\n"

    wait_state(daemon, NAME, "needs_auth", timeout=4 * LIFETIME + 10)
    noticed = time.time()
    expired = connected["access_expires_at"]
    assert expired - 1 <= noticed <= expired + 5, (
        f"needs_auth {noticed - expired:+.1f} s from expiry"
    )
    assert oidc.tokens("refresh_token") == []
    assert refused_uses(oidc) == [], "a request with an expired token was needed to notice"


# --- Device sign-in (RFC 8628) ---------------------------------------------------------

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEVICE: dict[str, Any] = {"device_flow": True, "device_interval": 1, **LISTS_MCP}


def start_device_sign_in(
    mcpd_env: McpdEnv, *flags: str
) -> tuple[subprocess.Popen[str], str, str, str | None]:
    """`mcpctl auth NAME` (`--device`, unless `flags` say otherwise) under way, once
    it has shown the code: the process, the verification URI, the user code and
    the URI with the code in it (None: not given)."""
    process, line = start_auth(mcpd_env, NAME, *(flags or ("--device",)), first="Open")
    shown = re.fullmatch(r"Open (\S+) and enter the code (\S+)", line)
    assert shown is not None, line
    assert process.stdout is not None
    following = process.stdout.readline()
    mcpd_env.keep_output(["auth", NAME, "(continued)"], following, "")
    complete = re.fullmatch(r"\s*or open (\S+) \(the code is in it\)\s*", following)
    return process, shown[1], shown[2], complete[1] if complete else None


def wait_for_poll(peer: OidcPeer, answer: str, count: int = 1) -> None:
    """Until the provider has answered `count` polls with `answer`."""
    peer.wait_for(
        lambda p: [e["answer"] for e in p.events("device_poll")].count(answer) >= count,
        f"{count} poll(s) answered {answer}",
    )


def poll_answers(peer: OidcPeer) -> list[str]:
    return [e["answer"] for e in peer.events("device_poll")]


@pytest.mark.parametrize("oidc", [DEVICE], indirect=True)
def test_device_sign_in_waits_for_the_user_then_connects_and_refreshes(
    mcpd_env: McpdEnv, run_daemon: Any, oidc: OidcPeer
) -> None:
    """`mcpctl auth NAME --device` shows the code; another joins and shows the
    same; the daemon polls, answered authorization_pending until the user has
    entered the code and confirmed; then the tokens are stored as any sign-in
    stores them, the server connects, and they are refreshed."""
    mcpd_env.write_config(config(oidc, callback_port=free_port()))
    daemon = run_daemon()
    wait_state(daemon, NAME, "needs_auth")
    process, uri, code, complete = start_device_sign_in(mcpd_env)
    assert uri == f"{oidc.issuer}/device"
    assert complete == f"{uri}?user_code={code}"
    joined, *same = start_device_sign_in(mcpd_env, "--device")
    assert same == [uri, code, complete]

    # The user is slower than the first poll, which the provider tells to wait.
    wait_for_poll(oidc, "authorization_pending")
    assert status_of(daemon, NAME)["state"] == "authorizing"
    page = oidc.enter_user_code(uri, code, confirm=True)
    assert "Sign-in Success" in page, page
    code_, out, err = finish(process)
    assert code_ == 0, out + err
    assert "Signed in; oidc is connected." in out
    assert finish(joined)[0] == 0

    answers = poll_answers(oidc)
    assert answers[-1] == "tokens"
    assert set(answers[:-1]) == {"authorization_pending"}, answers
    # The device authorization request as a sign-in's: the resource, the scope
    # with offline_access; the one client registered for both kinds of sign-in.
    [requested] = oidc.events("device_authorization")
    assert requested["resource"] == oidc.url
    assert set(requested["scope"].split()) == {"mcp", "offline_access"}
    [registered] = oidc.events("registered")
    assert set(registered["grant_types"]) == {
        "authorization_code",
        "refresh_token",
        DEVICE_CODE_GRANT,
    }
    assert requested["client_id"] == registered["client_id"]
    [issued] = oidc.tokens(DEVICE_CODE_GRANT)
    assert issued["refresh_token"] is not None
    record = stored(mcpd_env)
    assert record.tokens is not None
    assert record.authorization is not None
    assert token_fingerprint(record.tokens.refresh_token or "") == issued["refresh_token"]
    assert record.authorization.issuer == oidc.issuer
    assert record.client is not None
    assert record.client.client_id == registered["client_id"]

    connected = status_of(daemon, NAME)
    assert (connected["state"], connected["device_sign_in"]) == ("connected", True)
    assert "device sign-in offered" in daemon.mcpctl("status").stdout
    assert daemon.mcpctl("call", NAME, "echo", '{"text": "device"}').stdout == "device\n"
    wait_for_refreshes(oidc, 1)
    assert oidc.tokens("refresh_token")[0]["presented"] == issued["refresh_token"]
    assert daemon.mcpctl("call", NAME, "echo", '{"text": "refreshed"}').stdout == "refreshed\n"
    assert refused_uses(oidc) == []


@pytest.mark.parametrize("oidc", [{**DEVICE, "device_enforced_interval": 2}], indirect=True)
def test_device_sign_in_slows_down_when_told(
    mcpd_env: McpdEnv, run_daemon: Any, oidc: OidcPeer
) -> None:
    """The provider names 1 s and wants 2 s: the first poll is answered
    slow_down, and every poll after it comes 1 + 5 s after the one before
    (RFC 8628 3.5), as the provider measured."""
    mcpd_env.write_config(config(oidc))
    daemon = run_daemon()
    wait_state(daemon, NAME, "needs_auth")
    process, uri, code, _complete = start_device_sign_in(mcpd_env)
    wait_for_poll(oidc, "authorization_pending")
    oidc.enter_user_code(uri, code, confirm=True)
    returncode, out, err = finish(process)
    assert returncode == 0, out + err
    polls = oidc.events("device_poll")
    assert [p["answer"] for p in polls] == ["slow_down", "authorization_pending", "tokens"]
    for poll in polls[1:]:  # (5.9: the provider's clock counts whole milliseconds)
        assert 5.9 <= poll["since"] < 7.5, polls
    daemon.wait_for_log("the authorization server asked for slower polling")


@pytest.mark.parametrize("oidc", [DEVICE], indirect=True)
def test_device_sign_in_denied_by_the_user(
    mcpd_env: McpdEnv, run_daemon: Any, oidc: OidcPeer, tmp_path: Path
) -> None:
    """The user opens the page with the code in it, and aborts: mcpctl says the
    sign-in was denied, nothing is stored, and the daemon and its other server
    go on."""
    with python_server(tmp_path) as other:
        mcpd_env.write_config(config(oidc) + server_config("other", other.url))
        daemon = run_daemon()
        wait_state(daemon, NAME, "needs_auth")
        process, _uri, _code, complete = start_device_sign_in(mcpd_env)
        assert complete is not None
        wait_for_poll(oidc, "authorization_pending")
        page = oidc.enter_user_code(complete, None, confirm=False)
        assert "The Sign-in request was interrupted" in page, page
        returncode, out, err = finish(process)
        assert returncode == 1, out + err
        assert "the sign-in was denied" in err
        assert f"mcpctl auth {NAME} --device" in err
        assert poll_answers(oidc)[-1] == "access_denied"
        assert stored(mcpd_env).tokens is None
        assert oidc.tokens() == []
        assert status_of(daemon, NAME)["state"] == "needs_auth"
        assert wait_state(daemon, "other", "connected")["state"] == "connected"
        assert daemon.mcpctl("call", "other", "echo", '{"text": "fine"}').stdout == "fine\n"


@pytest.mark.parametrize("oidc", [{**DEVICE, "device_code_ttl": 3}], indirect=True)
def test_device_sign_in_ends_when_the_code_expires(
    mcpd_env: McpdEnv, run_daemon: Any, oidc: OidcPeer
) -> None:
    """Plain `mcpctl auth NAME`, with no browser here and no terminal to paste
    into, chooses the device sign-in by itself, the server offering one;
    `--restart` abandons it for another code; no user comes, the code's 3 s
    pass, and the sign-in ends, saying so."""
    mcpd_env.write_config(config(oidc))
    daemon = run_daemon()
    wait_state(daemon, NAME, "needs_auth")
    abandoned, _uri, first, _complete = start_device_sign_in(mcpd_env, "--no-browser")
    assert "signing in with a code instead" in mcpd_env.mcpctl_log.read_text()
    process, _uri, second, _complete = start_device_sign_in(mcpd_env, "--device", "--restart")
    assert second != first
    returncode, out, err = finish(abandoned)
    assert returncode == 1, out + err
    assert "replaced by a new sign-in" in err
    returncode, out, err = finish(process)
    assert returncode == 1, out + err
    assert f"the code expired; run `mcpctl auth {NAME} --device` again" in err
    assert set(poll_answers(oidc)) <= {"authorization_pending", "expired_token"}
    assert status_of(daemon, NAME)["state"] == "needs_auth"
    assert stored(mcpd_env).tokens is None


def test_device_sign_in_where_the_provider_offers_none(
    mcpd_env: McpdEnv, run_daemon: Any, oidc: OidcPeer
) -> None:
    """Without the device flow, `--device` says so at once and what to run
    instead; plain `mcpctl auth NAME --no-browser` then signs in in the browser."""
    mcpd_env.write_config(config(oidc))
    daemon = run_daemon()
    wait_state(daemon, NAME, "needs_auth")
    refused = daemon.mcpctl("auth", NAME, "--device")
    assert refused.returncode == 1
    assert "offers no device sign-in" in refused.stderr
    assert f"mcpctl auth {NAME} --paste" in refused.stderr
    assert oidc.events("registered") == [], "a client registered for nothing"
    assert status_of(daemon, NAME)["device_sign_in"] is False

    process, url = start_auth(mcpd_env, NAME)
    assert "Signed in" in CookieBrowser().open(url)[2]
    returncode, out, err = finish(process)
    assert returncode == 0, out + err
    assert "Signed in; oidc is connected." in out
