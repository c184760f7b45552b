"""Signing in from the editor: what editors get while their server needs a sign-in.

A real daemon, real `mcpctl stdio` bridges as editors (one declaring URL
elicitation, one declaring nothing), and the project's demo server (a real
OAuth authorization server and MCP server on the official Python SDK); the
"browser" is tests/harness.py's `browse`, which follows the redirects as a
browser whose user clicked "allow" would.
"""

from __future__ import annotations

import json
import sys
from urllib.error import URLError
from urllib.parse import urlsplit

import pytest
from demo_peer import demo_server
from harness import browse, server_config, status_of, wait_state
from real_peers import wait_until
from test_refresh import sign_in

URL_CAPABLE = {"elicitation": {"form": {}, "url": {}}}


@pytest.fixture
def signed_out(mcpd_env, run_daemon, editors, tmp_path):
    """A daemon whose demo server was signed in to (so the daemon kept what it
    showed), then signed out: it needs a sign-in again."""
    with demo_server(tmp_path) as peer:
        mcpd_env.write_config("[daemon]\ncallback_port = 0\n" + server_config("demo", peer.url))
        daemon = run_daemon()
        sign_in(mcpd_env, daemon, "demo")
        first = editors("demo")
        first.initialize()
        assert first.request("tools/list")["result"]["tools"]
        first.close()
        assert daemon.mcpctl("logout", "demo").returncode == 0
        wait_state(daemon, "demo", "needs_auth")
        yield daemon, peer


def used(link: str) -> bool:
    """Whether a link is refused: a page saying so, or no listener at all."""
    try:
        return browse(link, follow=False)[0] == 404
    except URLError:
        return True


def link_of(error: dict) -> str:
    return next(word for word in error["message"].split() if "/connect/" in word)


def test_editors_see_the_server_and_sign_in_from_a_call(signed_out, editors, mcpd_env):
    daemon, _peer = signed_out
    capable, plain = editors("demo"), editors("demo")
    for editor, capabilities in ((capable, URL_CAPABLE), (plain, None)):
        # The server and its tools, as it last showed them, before any sign-in.
        result = editor.initialize(capabilities)["result"]
        assert result["serverInfo"]
        tools = editor.request("tools/list")["result"]["tools"]
        assert "echo" in {tool["name"] for tool in tools}

    asked = capable.call("echo", {"text": "x"})["error"]
    assert asked["code"] == -32042
    [elicitation] = asked["data"]["elicitations"]
    assert elicitation["mode"] == "url"
    link = elicitation["url"]
    parts = urlsplit(link)
    assert parts.hostname == "127.0.0.1"
    assert parts.path.startswith("/connect/")
    assert "state=" not in link
    assert "code_challenge" not in link
    told = plain.call("echo", {"text": "y"})["error"]
    assert link_of(told) == link  # the link is in the message itself
    assert "mcpctl auth demo" in told["message"]

    # The user opens the link: the daemon's listener starts the sign-in and
    # sends the browser on to the authorization server, which comes back.
    status, _where, _body = browse(link)
    assert status == 200
    wait_state(daemon, "demo", "connected")
    for editor in (capable, plain):
        editor.wait_for_notification("notifications/tools/list_changed")
    complete = capable.wait_for_notification("notifications/elicitation/complete")
    assert complete["params"]["elicitationId"] == elicitation["elicitationId"]
    assert capable.call("echo", {"text": "again"})["result"]["content"][0]["text"] == "again"
    assert plain.call("echo", {"text": "too"})["result"]["content"][0]["text"] == "too"
    # The link was for one use (and nothing waits for a sign-in now).
    assert used(link)
    assert status_of(daemon, "demo")["state"] == "connected"
    _ = mcpd_env


def test_a_call_made_during_the_sign_in_waits_for_it_and_goes_through(signed_out, editors):
    daemon, _peer = signed_out
    editor = editors("demo")
    editor.initialize(URL_CAPABLE)
    link = editor.call("echo", {"text": "x"})["error"]["data"]["elicitations"][0]["url"]
    # The browser reaches the authorization server but the user has not said yes yet.
    status, authorize, _ = browse(link, follow=False)
    assert status == 303
    wait_state(daemon, "demo", "authorizing")
    waiting = editor.request_async("tools/call", {"name": "echo", "arguments": {"text": "w"}})
    cancelled = editor.request_async("tools/call", {"name": "echo", "arguments": {"text": "c"}})
    editor.send(
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": cancelled}}
    )
    assert browse(authorize)[0] == 200  # the user says yes
    assert editor.response(waiting)["result"]["content"][0]["text"] == "w"
    # The cancelled one was never answered, nor sent.
    assert not [m for m in editor.quiet_for(0.5) if m.get("id") == cancelled]


def test_with_nothing_kept_initialize_fails_with_the_link(mcpd_env, run_daemon, editors, tmp_path):
    with demo_server(tmp_path) as peer:
        mcpd_env.write_config("[daemon]\ncallback_port = 0\n" + server_config("demo", peer.url))
        daemon = run_daemon()
        wait_state(daemon, "demo", "needs_auth")
        editor = editors("demo")
        refused = editor.initialize()["error"]
        assert "/connect/" in refused["message"]
        assert "mcpctl auth demo" in refused["message"]
        # The listener serves the link while it is outstanding; the sign-in works.
        assert browse(link_of(refused))[0] == 200
        wait_state(daemon, "demo", "connected")


def test_the_kept_description_holds_nothing_secret(signed_out, mcpd_env):
    daemon, _peer = signed_out
    kept = mcpd_env.root / "state" / "mcpd" / "shown" / "demo.json"
    wait_until(kept.exists, "the kept description")
    shown = json.loads(kept.read_text())
    assert shown["url"].endswith("/mcp")
    assert shown["initialize"]["serverInfo"]
    assert "echo" in {tool["name"] for tool in shown["tools"]["tools"]}
    assert oct(kept.stat().st_mode & 0o777) == "0o600"
    assert status_of(daemon, "demo")["state"] == "needs_auth"


def test_with_open_browser_the_daemon_opens_the_link_itself(
    mcpd_env, run_daemon, editors, tmp_path
):
    """`[daemon] open_browser = true`: the daemon opens the sign-in link in the
    browser itself (here `$BROWSER`, a headless one that says yes), once, and
    the editor's retried call goes through."""
    mcpd_env.vars.pop("INVOCATION_ID", None)  # not under systemd: Python's webbrowser
    opened = tmp_path / "opened"
    mcpd_env.vars["BROWSER"] = (
        f'sh -c \'echo "$1" >> {opened}; exec {sys.executable} -m mcpd.demo.browser "$1"\' - %s'
    )
    with demo_server(tmp_path) as peer:
        mcpd_env.write_config(
            "[daemon]\ncallback_port = 0\nopen_browser = true\n" + server_config("demo", peer.url)
        )
        daemon = run_daemon()
        wait_state(daemon, "demo", "needs_auth")
        editor = editors("demo")
        asked = editor.initialize(URL_CAPABLE)["error"]
        assert "/connect/" in asked["message"]
        wait_state(daemon, "demo", "connected")
        [link] = opened.read_text().split()
        assert link == link_of(asked)
        assert editor.initialize(URL_CAPABLE)["result"]["serverInfo"]
        assert editor.call("echo", {"text": "opened"})["result"]["content"][0]["text"] == "opened"
