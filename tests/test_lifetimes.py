"""Lifetimes and ownership: every sign-in flow ends, concurrent sign-ins share
one, a refresh never loops, sessions end with their editor, and a token is
neither lost (full disk) nor used expired (restart). Against the real daemon,
mcpctl and bridges, the demo OAuth server (the official Python SDK's
authorization server, tests/demo_peer.py) and the Python SDK's MCP server.

The full disk is injected (tests/faulty_mcpd.py: the store's save raises
ENOSPC while a file exists): a fake, since filling the test machine's disk
would harm everything else running on it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import leakcheck
import pytest
from demo_peer import demo_server, recorded
from harness import (
    MCPCTL,
    McpdEnv,
    browse,
    cpu_seconds,
    finish,
    server_config,
    start_auth,
    status_of,
    wait_state,
)
from hostile import fake_authorization_server, send
from real_peers import python_server
from reliability import record
from test_fault_injection import FAULTY_MCPD

LIFETIME = 2  # seconds: the demo server's access tokens


def sign_in(env: McpdEnv, name: str) -> None:
    process, url = start_auth(env, name)
    assert browse(url)[0] == 200
    code, _, err = finish(process)
    assert code == 0, err


def wait_for(condition, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("count", [3, 10])
def test_concurrent_sign_ins_share_one_flow_and_one_browser(mcpd_env, run_daemon, tmp_path, count):
    """The browser waits until every `mcpctl auth` has its URL (so that all of
    them are under way before the flow ends), then signs in."""
    opened = tmp_path / "browser-openings"
    go = tmp_path / "go"
    browser = tmp_path / "browser"
    browser.write_text(
        f'#!/bin/sh\necho "$1" >> {opened}\n'
        f"while [ ! -e {go} ]; do sleep 0.05; done\n"
        f'exec {sys.executable} -m mcpd.demo.browser "$1"\n'
    )
    browser.chmod(0o700)
    with demo_server(tmp_path) as peer:
        mcpd_env.write_config("[daemon]\ncallback_port = 0\n" + server_config("demo", peer.url))
        daemon = run_daemon()
        wait_state(daemon, "demo", "needs_auth")
        processes = [
            subprocess.Popen(
                [MCPCTL, "auth", "demo"],
                env={**mcpd_env.vars, "BROWSER": str(browser)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(count)
        ]
        try:
            urls = []
            for process in processes:
                assert process.stdout is not None
                line = process.stdout.readline()
                while line and not line.strip().startswith("http"):
                    line = process.stdout.readline()
                urls.append(line.strip())
            assert len(set(urls)) == 1, "not one flow"
            go.touch()
            # Read through the same buffered file: communicate() would skip what
            # readline() has buffered already.
            results = [(p.stdout.read(), p.stderr.read()) for p in processes]  # type: ignore[union-attr]
            for process in processes:
                process.wait(timeout=60)
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                process.communicate()
        for process, (out, err) in zip(processes, results, strict=True):
            mcpd_env.keep_output(["auth", "demo"], out, err)
            assert process.returncode == 0, err
            assert "Signed in; demo is connected." in out
        assert len(opened.read_text().splitlines()) == 1  # one browser tab for all
        joined = sum("joined the sign-in already under way" in out for out, _ in results)
        assert joined == count - 1
        assert peer.log.count("without asking anyone") == 1  # one authorization
        assert status_of(daemon, "demo")["state"] == "connected"


def test_a_restarted_sign_in_while_signed_in_never_loops(mcpd_env, run_daemon, tmp_path):
    with demo_server(tmp_path, token_lifetime=LIFETIME) as peer:
        mcpd_env.write_config("[daemon]\ncallback_port = 0\n" + server_config("demo", peer.url))
        daemon = run_daemon()
        wait_state(daemon, "demo", "needs_auth")
        sign_in(mcpd_env, "demo")
        process, url = start_auth(mcpd_env, "demo", "--restart")
        # The restart forgot the client registration: the tokens it held can no
        # longer be refreshed, and their refresh falls due (and the token
        # expires) in this window. Nothing may spin.
        refreshes = peer.log.count(": refreshed;")
        cpu = cpu_seconds(daemon.pid)
        started = time.monotonic()
        while time.monotonic() - started < 10:
            assert daemon.process.poll() is None
            time.sleep(0.5)
        used = cpu_seconds(daemon.pid) - cpu
        attempts = daemon.log.count("token refresh failed")
        assert used < 1.0, f"{used:.2f} s of CPU in 10 s"
        assert attempts <= 1, attempts
        assert peer.log.count(": refreshed;") == refreshes
        record("CPU seconds used in 10 s after auth --restart (x100)", round(used * 100), __name__)
        assert browse(url)[0] == 200
        code, _, err = finish(process)
        assert code == 0, err
        assert daemon.mcpctl("call", "demo", "echo", '{"text": "again"}').stdout == "again\n"


def test_a_sign_in_that_needs_a_client_registration_ends(mcpd_env, run_daemon):
    """An authorization server that offers no registration, and no client_id in
    the config: each sign-in ends at once and says what to configure."""
    with fake_authorization_server(lambda handler: send(handler, 400)) as peer:
        mcpd_env.write_config(server_config("closed", peer.url + "/mcp"))
        daemon = run_daemon()
        wait_state(daemon, "closed", "needs_auth")
        for _ in range(2):  # from needs_auth, then from needs_client_registration
            started = time.monotonic()
            result = daemon.mcpctl("auth", "closed", "--no-browser", timeout=15)
            assert result.returncode == 1
            assert "client_id" in result.stderr, result.stderr
            assert time.monotonic() - started < 10
            assert status_of(daemon, "closed")["state"] == "needs_client_registration"


def test_a_sign_in_after_an_unreadable_record_was_moved_aside(mcpd_env, run_daemon, tmp_path):
    with demo_server(tmp_path) as peer:
        mcpd_env.write_config("[daemon]\ncallback_port = 0\n" + server_config("demo", peer.url))
        daemon = run_daemon()  # creates the key and the store
        daemon.stop()
        (mcpd_env.credentials_dir / "demo.cred").write_bytes(b"gAAAAA this is no record")
        daemon = run_daemon()
        needs = wait_state(daemon, "demo", "needs_auth")
        assert "could not be decrypted" in needs["error"]
        sign_in(mcpd_env, "demo")
        assert status_of(daemon, "demo")["state"] == "connected"
        assert daemon.mcpctl("call", "demo", "echo", '{"text": "new"}').stdout == "new\n"
        assert len(list(mcpd_env.credentials_dir.glob("demo.cred.unreadable-*"))) == 1


def test_a_per_client_session_ends_with_its_editor(mcpd_env, run_daemon, editors, tmp_path):
    with python_server(tmp_path) as peer:
        mcpd_env.write_config(server_config("py", peer.url, 'session = "per-client"\n'))
        daemon = run_daemon()
        wait_state(daemon, "py", "connected")
        before = peer.log.count("session: initialize")
        editor = editors("py")
        editor.initialize()
        assert editor.call("echo", {"text": "mine"})["result"]["content"][0]["text"] == "mine"
        assert peer.log.count("session: initialize") == before + 1
        assert "session: DELETE" not in peer.log
        editor.close()
        peer.wait_for_log("session: DELETE")
        opened = peer.log.count("session: initialize")
        time.sleep(2)  # a session left running would reconnect (and initialize) meanwhile
        assert peer.log.count("session: initialize") == opened
        assert status_of(daemon, "py")["state"] == "connected"


def test_a_restart_with_an_expired_token_never_presents_it(mcpd_env, run_daemon, tmp_path):
    with demo_server(tmp_path, token_lifetime=LIFETIME) as peer:
        mcpd_env.write_config("[daemon]\ncallback_port = 0\n" + server_config("demo", peer.url))
        daemon = run_daemon()
        wait_state(daemon, "demo", "needs_auth")
        sign_in(mcpd_env, "demo")
        expires = status_of(daemon, "demo")["access_expires_at"]
        daemon.stop()
        wait_for(lambda: time.time() > expires + 0.5, "the token expired", LIFETIME + 5)
        refreshes = peer.log.count(": refreshed;")
        daemon = run_daemon()
        wait_state(daemon, "demo", "connected")
        assert peer.log.count(": refreshed;") == refreshes + 1
        assert "presented after it expired" not in peer.log
        assert daemon.mcpctl("call", "demo", "echo", '{"text": "on"}').stdout == "on\n"


def test_a_full_disk_during_rotating_refreshes_loses_no_token(mcpd_env, run_daemon, tmp_path):
    full = tmp_path / "disk-full"
    with demo_server(tmp_path, token_lifetime=LIFETIME) as peer:
        mcpd_env.write_config("[daemon]\ncallback_port = 0\n" + server_config("demo", peer.url))
        daemon = run_daemon(
            program=FAULTY_MCPD,
            extra_env={
                "MCPD_TEST_FAULTS": "store_save:1000:ENOSPC",
                "MCPD_TEST_FAULT_WHILE": str(full),
            },
        )
        wait_state(daemon, "demo", "needs_auth")
        sign_in(mcpd_env, "demo")
        refreshes = peer.log.count(": refreshed;")
        full.touch()
        # Two rotations while nothing can be written: each new refresh token is
        # kept in memory and used; calls go on all along.
        calls: list[bool] = []
        stop = threading.Event()

        def call_along() -> None:
            while not stop.is_set():
                out = mcpd_env.mcpctl("call", "demo", "echo", '{"text": "x"}', timeout=20)
                calls.append(out.returncode == 0)

        caller = threading.Thread(target=call_along)
        caller.start()
        try:
            wait_for(lambda: peer.log.count(": refreshed;") >= refreshes + 2, "two refreshes")
            failing = status_of(daemon, "demo")
            assert failing["state"] == "connected"
            assert "saving the credentials failed" in failing["error"], failing
            full.unlink()
            daemon.wait_for_log("saved the credentials after all", timeout=40)
        finally:
            stop.set()
            caller.join(timeout=30)
        assert calls, "no call was made"
        assert all(calls), f"{calls.count(False)} of {len(calls)} calls failed"
        daemon.stop()
        issued = [e for e in recorded(peer) if e["event"] == "issued"]
        stored = leakcheck.decrypt_store(mcpd_env.key_file, mcpd_env.credentials_dir)
        assert len(stored) == 1
        assert stored[0].tokens is not None
        newest = stored[0].tokens.refresh_token == issued[-1]["refresh_token"]
        assert newest, "the store does not hold the newest refresh token issued"
        daemon = run_daemon()
        wait_state(daemon, "demo", "connected")
        assert daemon.mcpctl("call", "demo", "echo", '{"text": "kept"}').stdout == "kept\n"
        assert "presented a refresh token" not in peer.log  # no rotated token reused
