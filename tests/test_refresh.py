"""The token lifecycle end to end, against the official Python SDK's
authorization server routes (the demo server, tests/demo_peer.py) issuing
access tokens that live a few seconds and rotating refresh tokens on every
use. The provider's own log lines are the counts."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time

from demo_peer import demo_server
from harness import (
    MCPCTL,
    browse,
    finish,
    server_config,
    start_auth,
    status_of,
    wait_state,
)

LIFETIME = 4  # seconds: 70-80% of it is the refresh point


def sign_in(mcpd_env, daemon, name: str) -> None:
    wait_state(daemon, name, "needs_auth")
    process, url = start_auth(mcpd_env, name)
    assert browse(url)[0] == 200
    code, _, err = finish(process)
    assert code == 0, err


def refreshes(peer) -> int:
    return peer.log.count(": refreshed;")


def test_tokens_are_refreshed_before_expiry_with_no_activity(mcpd_env, run_daemon, tmp_path):
    with demo_server(tmp_path, token_lifetime=LIFETIME) as peer:
        mcpd_env.write_config("[daemon]\ncallback_port = 0\n" + server_config("demo", peer.url))
        daemon = run_daemon()
        sign_in(mcpd_env, daemon, "demo")
        first = status_of(daemon, "demo")
        assert first["next_refresh_at"] is not None
        lifetime = first["access_expires_at"] - time.time()
        assert first["next_refresh_at"] <= first["access_expires_at"] - 0.2 * lifetime + 0.5
        deadline = time.monotonic() + 4 * LIFETIME
        while refreshes(peer) < 3:
            assert time.monotonic() < deadline, peer.log
            time.sleep(0.1)
        now = status_of(daemon, "demo")
        assert now["state"] == "connected"
        assert now["access_expires_at"] > time.time()
        assert now["last_refresh_at"] is not None
        assert "presented a refresh token" not in peer.log  # no rotated token reused
        assert "after it expired" not in peer.log  # never used an expired token
        call = daemon.mcpctl("call", "demo", "echo", '{"text": "still fresh"}')
        assert call.stdout == "still fresh\n"


def test_concurrent_calls_across_expiry_all_succeed_with_one_refresh_each_time(
    mcpd_env, run_daemon, editors, tmp_path
):
    with demo_server(tmp_path, token_lifetime=LIFETIME) as peer:
        mcpd_env.write_config("[daemon]\ncallback_port = 0\n" + server_config("demo", peer.url))
        daemon = run_daemon()
        sign_in(mcpd_env, daemon, "demo")
        bridges = [editors("demo") for _ in range(4)]
        for bridge in bridges:
            bridge.initialize()
        results: list[bool] = []
        lock = threading.Lock()

        def hammer(bridge) -> None:
            end = time.monotonic() + 2 * LIFETIME
            while time.monotonic() < end:
                reply = bridge.call("echo", {"text": "x"})
                with lock:
                    results.append("result" in reply)

        def cli() -> None:
            end = time.monotonic() + 2 * LIFETIME
            while time.monotonic() < end:
                out = mcpd_env.mcpctl("call", "demo", "echo", '{"text": "y"}', timeout=30)
                with lock:
                    results.append(out.returncode == 0)

        threads = [threading.Thread(target=hammer, args=(b,)) for b in bridges]
        threads += [threading.Thread(target=cli) for _ in range(2)]
        before = refreshes(peer)
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(results) > 50
        assert all(results), f"{results.count(False)} calls failed"
        done = refreshes(peer) - before
        # One refresh per lifetime that passed, however many calls were in flight.
        assert 1 <= done <= 3, peer.log
        assert "presented a refresh token" not in peer.log


def test_a_restart_with_an_expired_token_refreshes_without_the_browser(
    mcpd_env, run_daemon, tmp_path
):
    with demo_server(tmp_path, token_lifetime=LIFETIME) as peer:
        mcpd_env.write_config("[daemon]\ncallback_port = 0\n" + server_config("demo", peer.url))
        daemon = run_daemon()
        sign_in(mcpd_env, daemon, "demo")
        expires = status_of(daemon, "demo")["access_expires_at"]
        daemon.stop()
        while time.time() < expires + 0.5:
            time.sleep(0.1)
        authorizations = peer.log.count("authorized")
        daemon = run_daemon()
        wait_state(daemon, "demo", "connected")
        assert status_of(daemon, "demo")["access_expires_at"] > time.time()
        assert peer.log.count("authorized") == authorizations  # no browser
        assert daemon.mcpctl("call", "demo", "echo", '{"text": "back"}').stdout == "back\n"


def test_a_refused_refresh_needs_auth_for_that_server_only(mcpd_env, run_daemon, tmp_path):
    with (
        demo_server(tmp_path, token_lifetime=LIFETIME) as forgetful,
        demo_server(tmp_path, token_lifetime=LIFETIME) as steady,
    ):
        mcpd_env.write_config(
            "[daemon]\ncallback_port = 0\n"
            + server_config("a", forgetful.url)
            + server_config("b", steady.url)
        )
        daemon = run_daemon()
        sign_in(mcpd_env, daemon, "a")
        sign_in(mcpd_env, daemon, "b")
        port = forgetful.port
        forgetful.stop()
        with demo_server(tmp_path, port=port, token_lifetime=LIFETIME):
            # The restarted server knows none of the old tokens: invalid_grant.
            refused = wait_state(daemon, "a", "needs_auth", timeout=3 * LIFETIME)
            assert "refused" in refused["error"]
            time.sleep(LIFETIME)  # b lives through a refresh meanwhile
            assert status_of(daemon, "b")["state"] == "connected"
            assert daemon.mcpctl("call", "b", "echo", '{"text": "b"}').stdout == "b\n"


def test_token_helper_hands_out_a_valid_token_only_when_allowed(mcpd_env, run_daemon, tmp_path):
    with demo_server(tmp_path, token_lifetime=LIFETIME) as peer:
        mcpd_env.write_config(
            "[daemon]\ncallback_port = 0\n"
            + server_config("open", peer.url, "export_token = true\n")
            + server_config("closed", peer.url)
        )
        daemon = run_daemon()
        sign_in(mcpd_env, daemon, "open")
        sign_in(mcpd_env, daemon, "closed")
        refused = daemon.mcpctl("token", "closed")
        assert refused.returncode == 1
        assert "export_token = true" in refused.stderr
        assert refused.stdout == ""
        handed = daemon.mcpctl("token", "open")
        assert handed.returncode == 0, handed.stderr
        token = handed.stdout.strip()
        assert handed.stdout == token + "\n"
        assert len(token) > 20
        assert token not in daemon.log


def test_a_burst_of_calls_at_expiry_makes_exactly_one_refresh(
    mcpd_env, run_daemon, editors, tmp_path
):
    """The provider hides expires_in, so nothing refreshes early: the first
    calls after expiry all meet a 401 at once, and share one refresh."""
    with demo_server(tmp_path, token_lifetime=3, hide_expiry=True) as peer:
        mcpd_env.write_config("[daemon]\ncallback_port = 0\n" + server_config("demo", peer.url))
        daemon = run_daemon()
        sign_in(mcpd_env, daemon, "demo")
        assert status_of(daemon, "demo")["next_refresh_at"] is None
        bridges = [editors("demo") for _ in range(5)]
        for bridge in bridges:
            bridge.initialize()
        # Let the token expire, unrefreshed: the provider rounds its expiry up to
        # the next whole second, so a 3-second token lives up to 4.
        time.sleep(4.5)
        assert refreshes(peer) == 0
        ids = {
            bridge: [
                bridge.request_async("tools/call", {"name": "echo", "arguments": {"text": str(i)}})
                for i in range(20)
            ]
            for bridge in bridges
        }
        for bridge, requests in ids.items():
            for request_id in requests:
                reply = bridge.response(request_id)
                assert "result" in reply, reply
        assert refreshes(peer) == 1, peer.log
        assert "presented a refresh token" not in peer.log


def test_the_authorization_server_down_for_a_while(mcpd_env, run_daemon, tmp_path):
    outage = tmp_path / "outage"
    with demo_server(tmp_path, token_lifetime=LIFETIME, outage_file=outage) as peer:
        mcpd_env.write_config("[daemon]\ncallback_port = 0\n" + server_config("demo", peer.url))
        daemon = run_daemon()
        sign_in(mcpd_env, daemon, "demo")
        outage.touch()
        deadline = time.monotonic() + 3 * LIFETIME
        while True:  # the refresh fails; the status says so, with the next attempt
            status = status_of(daemon, "demo")
            if status["error"] and "refresh" in status["error"] and status["next_retry_at"]:
                break
            assert time.monotonic() < deadline, (status, peer.log)
            time.sleep(0.1)
        assert status["state"] in ("connected", "failed")
        time.sleep(LIFETIME)  # the access token expires meanwhile
        assert status_of(daemon, "demo")["state"] != "needs_auth"  # tokens kept
        outage.unlink()
        wait_state(daemon, "demo", "connected", timeout=3 * LIFETIME)
        deadline = time.monotonic() + 3 * LIFETIME
        while status_of(daemon, "demo")["error"] is not None:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert daemon.mcpctl("call", "demo", "echo", '{"text": "back"}').stdout == "back\n"
        assert "presented a refresh token" not in peer.log
        assert "token endpoint down" in peer.log


def test_tokens_without_a_refresh_token_need_a_sign_in_when_they_expire(
    mcpd_env, run_daemon, editors, tmp_path
):
    """The authorization server issues no refresh token (it may: MCP clients must
    not assume one). The server shows `needs_auth` when the access token expires,
    with why and what to run, without waiting for a request to be refused; the
    change reaches watchers and the attached editor (a warning message) at once,
    and the editor's next request gets the reason; a new sign-in brings it
    back, for the same editor session."""
    with demo_server(tmp_path, token_lifetime=LIFETIME, no_refresh_tokens=True) as peer:
        mcpd_env.write_config("[daemon]\ncallback_port = 0\n" + server_config("demo", peer.url))
        daemon = run_daemon()
        sign_in(mcpd_env, daemon, "demo")
        assert "and no refresh token" in peer.log
        signed_in = status_of(daemon, "demo")
        assert signed_in["state"] == "connected"
        assert signed_in["next_refresh_at"] is None
        expires = signed_in["access_expires_at"]
        editor = editors("demo")
        editor.initialize()
        assert editor.call("echo", {"text": "before"})["result"]["content"][0]["text"] == "before"

        watcher = subprocess.Popen(
            [MCPCTL, "watch", "demo", "--json"],
            env=mcpd_env.vars,
            stdout=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        seen: list[str] = []

        def read() -> None:
            assert watcher.stdout is not None
            for line in watcher.stdout:
                lines.put(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            seen.append(lines.get(timeout=10))  # the current status first
            # Nothing is asked of the server meanwhile: the expiry alone decides.
            deadline = time.monotonic() + LIFETIME + 10
            while True:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
                seen.append(line)
                event = json.loads(line)
                if event.get("name") == "state":
                    server = event["data"]["server"]
                    if server["state"] == "needs_auth":
                        break
            told_at = time.time()
        finally:
            watcher.terminate()
            watcher.wait(timeout=5)
            reader.join(timeout=5)
            assert watcher.stdout is not None
            watcher.stdout.close()
            mcpd_env.keep_output(["watch", "demo", "--json"], "".join(seen), "")
        assert event["data"]["previous"] == "connected"
        assert expires - 0.5 <= told_at <= expires + 3, (expires, told_at)
        error = server["error"]
        assert "the access token expired" in error
        assert "issued no refresh token" in error
        assert "mcpctl auth demo" in error
        assert status_of(daemon, "demo")["state"] == "needs_auth"
        # The attached editor was told, in the one way MCP has to tell a user.
        notice = editor.wait_for_notification("notifications/message")
        assert notice["params"]["level"] == "warning"
        assert "mcpctl auth demo" in notice["params"]["data"]

        refused = editor.call("echo", {"text": "after"})
        assert "result" not in refused, refused
        message = refused["error"]["message"]
        assert "Sign in to use this server" in message
        assert "/connect/" in message  # the link, to sign in from the editor
        assert "issued no refresh token" in message
        assert "mcpctl auth demo" in message
        cli = daemon.mcpctl("call", "demo", "echo", '{"text": "cli"}')
        assert cli.returncode == 1
        assert "mcpctl auth demo" in cli.stderr
        assert refreshes(peer) == 0
        assert "presented" not in peer.log  # no expired or retired token was sent

        sign_in(mcpd_env, daemon, "demo")
        assert editor.call("echo", {"text": "again"})["result"]["content"][0]["text"] == "again"
        assert status_of(daemon, "demo")["state"] == "connected"


# SIGKILLs around refreshes and store writes: tests/test_crash_safety.py (200 of them,
# each store checked against the tokens the authorization server issued).
