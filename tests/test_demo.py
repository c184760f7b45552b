"""`mcpd demo`, end to end; and the demo server as the OAuth peer it claims to be."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from demo_peer import demo_server

MCPD = Path(sys.executable).parent / "mcpd"


@pytest.mark.timeout(120)
def test_mcpd_demo_signs_in_lists_and_calls_a_tool_and_cleans_up():
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MCPD_", "XDG_")) and key != "BROWSER"
    }
    result = subprocess.run(
        [MCPD, "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    output = result.stdout
    assert result.returncode == 0, f"stdout:\n{output}\nstderr:\n{result.stderr}"
    # Waiting for a sign-in, then signed in through the headless browser.
    assert re.search(r"^demo\s+needs_auth\s", output, re.MULTILINE), output
    assert "$ BROWSER='python -m mcpd.demo.browser %s' mcpctl auth demo" in output
    assert re.search(r"browser: GET \S+/authorize, 302 -> \S+/callback: 200", output), output
    assert "Signed in; demo is connected." in output
    # Connected, with the token's expiry.
    assert re.search(r"^demo\s+connected\s+http://127\.0\.0\.1:\d+/mcp\s+expires in ", output, re.M)
    # The tools, and a call.
    assert re.search(r"^\$ mcpctl tools demo\necho\s", output, re.MULTILINE), output
    assert '$ mcpctl call demo echo \'{"text": "hello from mcpd"}\'\nhello from mcpd\n' in output
    assert "Every step worked" in output
    # Nothing left behind.
    root = re.search(r"^Started mcpd in (\S+),", output, re.MULTILINE)
    assert root is not None, output
    assert not Path(root.group(1)).exists()


def test_mcpd_demo_takes_no_options():
    result = subprocess.run(
        [MCPD, "demo", "--port", "1"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert "usage: mcpd demo" in result.stderr


def test_mcpd_help_mentions_the_demo():
    result = subprocess.run(
        [MCPD, "--help"], capture_output=True, text=True, timeout=30, check=True
    )
    assert "mcpd demo" in result.stdout


# --- The demo server, looked at directly ------------------------------------------------


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def post(url: str, *, form: dict[str, str] | None = None, body: Any = None) -> tuple[int, Any]:
    if form is not None:
        data, kind = urlencode(form).encode(), "application/x-www-form-urlencoded"
    else:
        data, kind = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(url, data=data, headers={"Content-Type": kind})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        with exc:
            raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def mcp_status(url: str, token: str) -> int:
    message = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"},
        },
    }
    request = urllib.request.Request(
        url,
        data=json.dumps(message).encode(),
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "Authorization": f"Bearer {token}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


def test_demo_server_metadata_and_grant_lifecycle(tmp_path):
    with demo_server(tmp_path, token_lifetime=60) as peer:
        # The 401 challenge points at the resource metadata, which names this
        # exact URL and the issuer at the same origin.
        assert mcp_status(peer.url, "nonsense") == 401
        resource = get_json(f"{peer.origin}/.well-known/oauth-protected-resource/mcp")
        assert resource["resource"] == peer.url
        assert resource["authorization_servers"] == [peer.origin]
        server = get_json(f"{peer.origin}/.well-known/oauth-authorization-server")
        assert server["issuer"] == peer.origin
        assert server["code_challenge_methods_supported"] == ["S256"]
        assert server["registration_endpoint"] == f"{peer.origin}/register"
        assert server["revocation_endpoint"] == f"{peer.origin}/revoke"
        assert "offline_access" in server["scopes_supported"]

        # Register, authorize (approved at once), exchange.
        redirect = "http://127.0.0.1:1/callback"
        status, client = post(
            server["registration_endpoint"],
            body={
                "redirect_uris": [redirect],
                "token_endpoint_auth_method": "client_secret_post",
                "scope": "mcp offline_access",
            },
        )
        assert status == 201
        auth = {"client_id": client["client_id"], "client_secret": client["client_secret"]}
        verifier = secrets.token_urlsafe(32)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        query = urlencode(
            {
                "response_type": "code",
                "client_id": client["client_id"],
                "redirect_uri": redirect,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "state": "xyz",
                "scope": "mcp offline_access",
                "resource": peer.url,
            }
        )
        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as redirected:
            opener.open(f"{server['authorization_endpoint']}?{query}", timeout=10)
        redirected.value.close()
        assert redirected.value.code == 302
        location = redirected.value.headers["Location"]
        assert location.startswith(redirect + "?")
        params = parse_qs(urlsplit(location).query)
        assert params["state"] == ["xyz"]
        status, tokens = post(
            server["token_endpoint"],
            form={
                "grant_type": "authorization_code",
                "code": params["code"][0],
                "redirect_uri": redirect,
                "code_verifier": verifier,
                "resource": peer.url,
                **auth,
            },
        )
        assert status == 200, tokens
        assert tokens["expires_in"] == 60
        assert tokens["scope"] == "mcp offline_access"
        assert mcp_status(peer.url, tokens["access_token"]) == 200

        # Refresh rotates the refresh token; the old one no longer works.
        refresh_form = {"grant_type": "refresh_token", **auth}
        status, refreshed = post(
            server["token_endpoint"],
            form={**refresh_form, "refresh_token": tokens["refresh_token"]},
        )
        assert status == 200, refreshed
        assert refreshed["refresh_token"] != tokens["refresh_token"]
        assert mcp_status(peer.url, refreshed["access_token"]) == 200
        status, reused = post(
            server["token_endpoint"],
            form={**refresh_form, "refresh_token": tokens["refresh_token"]},
        )
        assert (status, reused["error"]) == (400, "invalid_grant")
        peer.wait_for_log("demo-as: grant 1: refreshed")
        peer.wait_for_log("presented a refresh token that was rotated away (grant 1)")

        # Revoking the refresh token revokes the whole grant.
        status, _ = post(
            server["revocation_endpoint"],
            form={
                "token": refreshed["refresh_token"],
                "token_type_hint": "refresh_token",
                **auth,
            },
        )
        assert status == 200
        assert mcp_status(peer.url, refreshed["access_token"]) == 401
        assert mcp_status(peer.url, tokens["access_token"]) == 401
        peer.wait_for_log("demo-as: grant 1: revoked")
        # No token or code ever reaches the log.
        for secret in (
            tokens["access_token"],
            tokens["refresh_token"],
            refreshed["access_token"],
            params["code"][0],
        ):
            assert secret not in peer.log


def test_every_mcpd_package_is_listed_for_the_wheel():
    """pyproject lists packages explicitly: a subpackage missing there (mcpd.demo,
    mcpd.oauth, ...) is missing from `pip install .` though editable installs work."""
    root = Path(__file__).resolve().parent.parent
    listed = set(
        tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(root).parts)
        for init in (root / "mcpd").rglob("__init__.py")
    }
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages"
