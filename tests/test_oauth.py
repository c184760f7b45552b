"""Signing in to OAuth-protected servers through the real daemon and mcpctl.

The server and its authorization server are the official TypeScript SDK's
example (`simpleStreamableHttp.js --oauth`, and `--oauth-strict`, which also
checks the resource indicator). The browser is played by the test: it fetches
the authorization URL that `mcpctl auth` prints and follows the redirect to
the daemon's real loopback listener, as a user's browser would.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlsplit

import pytest
from harness import browse, callback_port, finish, server_config, start_auth, status_of, wait_state
from real_peers import SIMPLE_STREAMABLE_HTTP, free_port, sdk_example
from reliability import record

from mcpd.store import SUFFIX


@pytest.fixture(params=[("--oauth",), ("--oauth", "--oauth-strict")], ids=["oauth", "strict"])
def oauth_peer(request, tmp_path):
    with sdk_example(SIMPLE_STREAMABLE_HTTP, tmp_path, *request.param) as peer:
        # The example names itself localhost in its resource metadata.
        peer.url = peer.url.replace("127.0.0.1", "localhost")
        yield peer


def test_sign_in_once_and_every_path_uses_the_token(mcpd_env, run_daemon, editors, oauth_peer):
    mcpd_env.write_config("[daemon]\ncallback_port = 0\n" + server_config("ts", oauth_peer.url))
    daemon = run_daemon()
    needs = wait_state(daemon, "ts", "needs_auth")
    assert "401" in needs["error"]
    editor = editors("ts")
    refused = editor.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {}})
    assert "mcpctl auth ts" in refused["error"]["message"]

    process, url = start_auth(mcpd_env, "ts")
    assert "code_challenge_method=S256" in url
    assert "resource=" in url
    status, final_url, page = browse(url)
    assert (status, urlsplit(final_url).path) == (200, "/callback")
    assert "Signed in" in page
    code, out, err = finish(process)
    assert code == 0, err
    assert "Signed in; ts is connected." in out

    connected = status_of(daemon, "ts")
    assert connected["state"] == "connected"
    assert connected["access_expires_at"] > time.time() + 60
    call = daemon.mcpctl("call", "ts", "greet", '{"name": "oauth"}')
    assert call.stdout == "Hello, oauth!\n"
    assert editor.initialize()["result"]["serverInfo"]["name"]
    assert (
        editor.call("greet", {"name": "editor"})["result"]["content"][0]["text"] == "Hello, editor!"
    )

    # The listener closed once the flow was over.
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", callback_port(url)), 1),
    ):
        pass
    # Tokens survive a restart of the daemon: no new sign-in.
    daemon.stop()
    daemon = run_daemon()
    wait_state(daemon, "ts", "connected")


def test_several_auth_commands_share_one_flow(mcpd_env, run_daemon, oauth_peer):
    mcpd_env.write_config("[daemon]\ncallback_port = 0\n" + server_config("ts", oauth_peer.url))
    daemon = run_daemon()
    wait_state(daemon, "ts", "needs_auth")
    first, first_url = start_auth(mcpd_env, "ts")
    second, second_url = start_auth(mcpd_env, "ts")
    assert first_url == second_url  # one flow, one browser tab
    browse(first_url)
    for process in (first, second):
        code, out, err = finish(process)
        assert code == 0, err
        assert "connected" in out
    assert status_of(daemon, "ts")["state"] == "connected"


def test_headless_sign_in_by_pasting_the_redirect(mcpd_env, run_daemon, oauth_peer):
    mcpd_env.write_config("[daemon]\ncallback_port = 0\n" + server_config("ts", oauth_peer.url))
    daemon = run_daemon()
    wait_state(daemon, "ts", "needs_auth")
    process, url = start_auth(mcpd_env, "ts", "--paste")
    status, location, _ = browse(url, follow=False)  # the redirect a remote browser would show
    assert status in (302, 303)
    assert urlsplit(location).path == "/callback"
    code, out, err = finish(process, location + "\n")
    assert code == 0, err
    assert "Signed in; ts is connected." in out
    assert daemon.mcpctl("call", "ts", "greet", '{"name": "ssh"}').stdout == "Hello, ssh!\n"


def test_logout_forgets_the_tokens(mcpd_env, run_daemon, oauth_peer):
    # A fixed port: a registration is for one redirect URI (port 0 changes it every time).
    port = free_port()
    mcpd_env.write_config(
        f"[daemon]\ncallback_port = {port}\n" + server_config("ts", oauth_peer.url)
    )
    daemon = run_daemon()
    wait_state(daemon, "ts", "needs_auth")
    process, url = start_auth(mcpd_env, "ts")
    browse(url)
    assert finish(process)[0] == 0
    out = daemon.mcpctl("logout", "ts")
    assert out.returncode == 0, out.stderr
    assert "tokens deleted" in out.stdout
    assert wait_state(daemon, "ts", "needs_auth")["access_expires_at"] is None
    # Signing in again reuses the registered client...
    process, url = start_auth(mcpd_env, "ts")
    browse(url)
    assert finish(process)[0] == 0
    assert daemon.log.count("registered a client") == 1
    # ...until it is forgotten, with the whole record.
    stored = mcpd_env.credentials_dir / f"ts{SUFFIX}"
    assert stored.exists()
    assert daemon.mcpctl("logout", "ts", "--forget-client").returncode == 0
    wait_state(daemon, "ts", "needs_auth")
    assert not stored.exists()
    process, url = start_auth(mcpd_env, "ts")
    browse(url)
    assert finish(process)[0] == 0
    assert daemon.log.count("registered a client") == 2


def test_oauth_false_never_signs_in(mcpd_env, run_daemon, oauth_peer):
    mcpd_env.write_config(server_config("ts", oauth_peer.url, "oauth = false\n"))
    daemon = run_daemon()
    failed = wait_state(daemon, "ts", "failed")
    assert "oauth = false" in failed["error"]
    refused = daemon.mcpctl("auth", "ts", "--no-browser")
    assert refused.returncode == 1
    assert "oauth = false" in refused.stderr


def test_the_callback_listener_refuses_what_is_not_the_callback(mcpd_env, run_daemon, oauth_peer):
    mcpd_env.write_config("[daemon]\ncallback_port = 0\n" + server_config("ts", oauth_peer.url))
    daemon = run_daemon()
    wait_state(daemon, "ts", "needs_auth")
    process, url = start_auth(mcpd_env, "ts")
    base = f"http://127.0.0.1:{callback_port(url)}"

    assert browse(f"{base}/elsewhere")[0] == 404
    post = urllib.request.Request(f"{base}/callback", data=b"x=1", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(post, timeout=10)
    assert refused.value.code == 405
    status, _, page = browse(f"{base}/callback?code=stolen&state=not-the-state")
    assert status == 400
    assert "unknown or already finished" in page

    # A flood of junk connections does not stop the real callback.
    def junk() -> None:
        # Load, not a check: on a busy machine a junk connection may time out or
        # be reset, which is the listener's right.
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", callback_port(url)), 5) as sock,
        ):
            sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
            sock.recv(1024)

    threads = [threading.Thread(target=junk) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    status, _, page = browse(url)
    assert status == 200, page
    assert finish(process)[0] == 0
    assert status_of(daemon, "ts")["state"] == "connected"
    record("junk connections at the callback, then a sign-in", len(threads), __name__)


def test_a_refusal_is_shown_escaped_and_the_flow_ends(mcpd_env, run_daemon, oauth_peer):
    mcpd_env.write_config("[daemon]\ncallback_port = 0\n" + server_config("ts", oauth_peer.url))
    daemon = run_daemon()
    wait_state(daemon, "ts", "needs_auth")
    process, url = start_auth(mcpd_env, "ts")
    state = parse_qs(urlsplit(url).query)["state"][0]
    status, _, page = browse(
        f"http://127.0.0.1:{callback_port(url)}/callback?error=access_denied"
        f"&error_description=%3Cscript%3Ealert(1)%3C%2Fscript%3E&state={state}"
    )
    assert status == 400
    assert "&lt;script&gt;" in page
    assert "<script>" not in page
    code, _, err = finish(process)
    assert code == 1
    assert "access_denied" in err
    failed = status_of(daemon, "ts")
    assert failed["state"] == "needs_auth"
    assert "access_denied" in failed["error"]
    # The next flow does not take the old state: a replayed callback is refused.
    again, again_url = start_auth(mcpd_env, "ts")
    stale = f"http://127.0.0.1:{callback_port(again_url)}/callback?code=c&state={state}"
    assert browse(stale)[0] == 400
    assert browse(again_url)[0] == 200
    assert finish(again)[0] == 0


def test_a_taken_callback_port_fails_at_once_with_the_setting_to_change(
    mcpd_env, run_daemon, oauth_peer
):
    port = free_port()
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", port))
    squatter.listen()
    try:
        mcpd_env.write_config(
            f"[daemon]\ncallback_port = {port}\n" + server_config("ts", oauth_peer.url)
        )
        daemon = run_daemon()
        wait_state(daemon, "ts", "needs_auth")
        result = daemon.mcpctl("auth", "ts", "--no-browser")
        assert result.returncode == 1
        assert f"127.0.0.1:{port}" in result.stderr
        assert "callback_port" in result.stderr
    finally:
        squatter.close()


def test_no_secret_of_the_flow_reaches_the_log(mcpd_env, run_daemon, oauth_peer):
    mcpd_env.write_config("[daemon]\ncallback_port = 0\n" + server_config("ts", oauth_peer.url))
    daemon = run_daemon("--log-level", "debug")
    wait_state(daemon, "ts", "needs_auth")
    process, url = start_auth(mcpd_env, "ts")
    _, location, _ = browse(url, follow=False)
    code = parse_qs(urlsplit(location).query)["code"][0]
    browse(location)
    assert finish(process)[0] == 0
    headers = json.loads(daemon.mcpctl("call", "ts", "greet", '{"name": "x"}', "--json").stdout)
    assert headers["content"]
    daemon.stop()
    log = daemon.log
    state = parse_qs(urlsplit(url).query)["state"][0]
    for secret in (code, state):
        assert secret not in log
    assert "Bearer" not in log
