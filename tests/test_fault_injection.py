"""Every supervision boundary holds: a bug (an unexpected exception, injected
by tests/faulty_mcpd.py at one place) ends what that boundary serves and
nothing else, says so, and logs a traceback in which the secret held by the
exception's message is redacted.

Boundaries: a server's tasks (its sessions and its credentials' loop: the
server fails and restarts by itself), a sign-in flow, one callback
connection, the callback listener, one control request, one client
connection, and a reload. Each test keeps a healthy server answering beside
the fault, on the real daemon, its real socket and mcpctl.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import leakcheck
import pytest
from demo_peer import demo_server
from harness import (
    MCPCTL,
    RawClient,
    browse,
    finish,
    server_config,
    start_auth,
    status_of,
    wait_state,
)
from real_peers import python_server
from test_bad_servers import MIN_HEALTHY_CALLS, calling_all_along

FAULTY_MCPD = (sys.executable, str(Path(__file__).with_name("faulty_mcpd.py")))
SECRET = "fault-held-secret-3e8a91c0"  # also the healthy server's configured header value


def good_config(url: str) -> str:
    return f'[servers.good]\nurl = "{url}"\nheaders = {{ "X-Api-Key" = "{SECRET}" }}\n'


@pytest.fixture
def faulty(run_daemon):
    """Start mcpd with `faults` injected (see tests/faulty_mcpd.py)."""
    leakcheck.register("header", SECRET)

    def start(faults: str, only: str | None = None, armed: Path | None = None):
        extra = {"MCPD_TEST_FAULTS": faults, "MCPD_TEST_FAULT_TEXT": SECRET}
        if only is not None:
            extra["MCPD_TEST_FAULT_ONLY"] = only
        if armed is not None:  # the faults fire only while this file exists
            extra["MCPD_TEST_FAULT_WHILE"] = str(armed)
        return run_daemon(program=FAULTY_MCPD, extra_env=extra)

    return start


def assert_reported(daemon, what: str, count: int = 1) -> None:
    """The boundary logged `what` `count` times, with a redacted traceback."""
    log = daemon.log
    assert log.count(f'msg="{what}"') == count, log[-3000:]
    assert "Traceback" in log
    assert "injected fault" in log
    assert SECRET not in log
    assert "<redacted>" in log


def test_a_fault_in_a_servers_tasks_restarts_that_server_alone(mcpd_env, faulty, editors, tmp_path):
    with python_server(tmp_path) as peer:
        mcpd_env.write_config(good_config(peer.url) + server_config("victim", peer.url))
        daemon = faulty("session_open:2", only="victim")
        wait_state(daemon, "good", "connected")
        with calling_all_along(editors, "good") as healthy:
            failed = wait_state(daemon, "victim", "failed", timeout=10)
            assert "internal error in mcpd (RuntimeError" in failed["error"]
            assert "restarts by itself" in failed["error"]
            assert SECRET not in failed["error"]
            assert failed["next_retry_at"] is not None
            wait_state(daemon, "victim", "connected", timeout=15)
            healthy.wait_for(MIN_HEALTHY_CALLS)
        healthy.check()
        assert_reported(daemon, "a server failed unexpectedly; restarting it", 2)
        assert daemon.mcpctl("call", "victim", "echo", '{"text": "back"}').stdout == "back\n"


def test_a_fault_in_a_forwarded_call_restarts_that_server_alone(
    mcpd_env, faulty, editors, tmp_path
):
    """A call on a warm connection is followed from that connection's callbacks,
    with no task (mcpd/upstream/transport.py); a fault there goes to the
    server's boundary all the same, and the editor waiting is answered."""
    armed = tmp_path / "armed"
    with python_server(tmp_path) as peer:
        mcpd_env.write_config(good_config(peer.url) + server_config("victim", peer.url))
        daemon = faulty("session_deliver", only="victim", armed=armed)
        wait_state(daemon, "victim", "connected")
        victim = editors("victim")
        victim.initialize()
        assert victim.call("echo", {"text": "warm"})["result"]["content"][0]["text"] == "warm"
        with calling_all_along(editors, "good") as healthy:
            armed.touch()
            reply = victim.call("echo", {"text": "lost"})
            armed.unlink()
            assert "connection lost: an internal error; it restarts" in reply["error"]["message"]
            failed = wait_state(daemon, "victim", "failed", timeout=10)
            assert "internal error in mcpd (RuntimeError" in failed["error"]
            wait_state(daemon, "victim", "connected", timeout=15)
            healthy.wait_for(MIN_HEALTHY_CALLS)
        healthy.check()
        assert_reported(daemon, "a server failed unexpectedly; restarting it")
        assert "in on_progress" in daemon.log  # raised in the callbacks, not in a task
        assert victim.call("echo", {"text": "back"})["result"]["content"][0]["text"] == "back"


def test_a_fault_in_a_refresh_restarts_the_server_and_loses_no_token(mcpd_env, faulty, tmp_path):
    with demo_server(tmp_path, token_lifetime=4) as peer:
        mcpd_env.write_config(
            "[daemon]\ncallback_port = 0\n"
            + server_config("demo", peer.url, f'headers = {{ "X-Api-Key" = "{SECRET}" }}\n')
        )
        daemon = faulty("credentials_refresh")
        wait_state(daemon, "demo", "needs_auth")
        process, url = start_auth(mcpd_env, "demo")
        browse(url)
        assert finish(process)[0] == 0
        # The first refresh falls due at 70-80% of 4 s: it faults, the server
        # restarts, and the next one is made.
        deadline = time.monotonic() + 20
        while peer.log.count(": refreshed;") < 1:
            assert time.monotonic() < deadline, daemon.log[-3000:]
            time.sleep(0.1)
        wait_state(daemon, "demo", "connected")
        assert_reported(daemon, "a server failed unexpectedly; restarting it")
        assert "presented a refresh token" not in peer.log
        assert daemon.mcpctl("call", "demo", "echo", '{"text": "fresh"}').stdout == "fresh\n"


def sign_in_twice(mcpd_env, faulty, tmp_path, fault: str) -> tuple:
    """A sign-in that meets the fault, then one that works; (daemon, first error)."""
    with demo_server(tmp_path) as oauth, python_server(tmp_path) as good:
        mcpd_env.write_config(
            "[daemon]\ncallback_port = 0\n"
            + good_config(good.url)
            + server_config("demo", oauth.url)
        )
        daemon = faulty(fault)
        wait_state(daemon, "demo", "needs_auth")
        first = subprocess.Popen(
            [MCPCTL, "auth", "demo", "--no-browser"],
            env=mcpd_env.vars,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert first.stdout is not None
        line = first.stdout.readline()  # the URL's line, or nothing if it failed at once
        while line and not line.strip().startswith("http"):
            line = first.stdout.readline()
        if line:
            with pytest.raises((urllib.error.URLError, ConnectionError)):
                browse(line.strip())
        _, first_error = first.communicate(timeout=30)
        mcpd_env.keep_output(["auth", "demo"], "", first_error)
        assert first.returncode == 1, first_error
        assert status_of(daemon, "good")["state"] == "connected"
        process, url = start_auth(mcpd_env, "demo")
        assert browse(url)[0] == 200
        code, out, err = finish(process)
        assert code == 0, err
        assert "Signed in; demo is connected." in out
        assert daemon.mcpctl("call", "good", "echo", '{"text": "ok"}').stdout == "ok\n"
        return daemon, first_error


def test_a_fault_in_a_sign_in_ends_that_flow_alone(mcpd_env, faulty, tmp_path):
    daemon, error = sign_in_twice(mcpd_env, faulty, tmp_path, "flow_prepare")
    assert "the sign-in failed in mcpd (RuntimeError)" in error
    assert_reported(daemon, "a sign-in failed unexpectedly")


def test_a_fault_in_one_callback_connection_leaves_the_flow_waiting(mcpd_env, faulty, tmp_path):
    """The browser's first visit meets the fault; a second visit completes the sign-in."""
    with demo_server(tmp_path) as oauth:
        mcpd_env.write_config("[daemon]\ncallback_port = 0\n" + server_config("demo", oauth.url))
        daemon = faulty("callback_converse")
        wait_state(daemon, "demo", "needs_auth")
        process, url = start_auth(mcpd_env, "demo")
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            browse(url)
        assert status_of(daemon, "demo")["state"] == "authorizing"
        assert browse(url)[0] == 200
        code, _out, err = finish(process)
        assert code == 0, err
        assert "callback request failed" in daemon.log


def test_a_fault_in_the_callback_listener_ends_the_flows_that_wait_for_it(
    mcpd_env, faulty, tmp_path
):
    daemon, error = sign_in_twice(mcpd_env, faulty, tmp_path, "callback_admit")
    assert "the sign-in callback listener failed" in error
    assert_reported(daemon, "the sign-in callback listener failed")


def test_a_fault_in_a_request_answers_it_and_keeps_the_connection(mcpd_env, faulty, tmp_path):
    with python_server(tmp_path) as peer:
        mcpd_env.write_config(good_config(peer.url))
        daemon = faulty("operations_tools")
        wait_state(daemon, "good", "connected")
        client = RawClient(mcpd_env.socket)
        client.hello()
        client.request("tools", {"server": "good"})
        failed = client.receive()
        assert failed.error is not None, failed
        assert SECRET not in failed.error.message
        client.request("tools", {"server": "good"})  # the same connection goes on
        assert any(t["name"] == "echo" for t in client.receive().result["tools"])
        client.close()
        assert_reported(daemon, "request failed")


@pytest.mark.parametrize(
    "point",
    [
        "connection_take",  # the socket's callback: hello is answered there
        "connection_handle",  # the read loop: subscribe waits there for its task
    ],
)
def test_a_fault_in_a_connection_ends_it_alone(mcpd_env, faulty, tmp_path, point):
    with python_server(tmp_path) as peer:
        mcpd_env.write_config(good_config(peer.url))
        daemon = faulty(point)
        bystander = RawClient(mcpd_env.socket)
        victim = RawClient(mcpd_env.socket)
        if point == "connection_handle":
            assert victim.hello().error is None
            victim.request("subscribe", {})  # meets the fault
        else:
            victim.request("hello", {"protocol": 1, "client": "victim"})  # meets the fault
        with pytest.raises((EOFError, ConnectionResetError)):
            victim.receive()
        victim.close()
        wait_state(daemon, "good", "connected")
        bystander.hello()
        bystander.request("status")
        assert bystander.receive().result["servers"][0]["state"] == "connected"
        assert daemon.mcpctl("call", "good", "echo", '{"text": "on"}').stdout == "on\n"
        bystander.close()
        assert_reported(daemon, "client connection failed")


def test_a_fault_in_a_reload_keeps_the_configuration(mcpd_env, faulty, tmp_path):
    with python_server(tmp_path) as peer:
        mcpd_env.write_config(good_config(peer.url))
        daemon = faulty("reload")
        wait_state(daemon, "good", "connected")
        mcpd_env.write_config(good_config(peer.url) + server_config("added", peer.url))
        os.kill(daemon.pid, signal.SIGHUP)
        daemon.wait_for_log("reload failed; keeping the previous configuration")
        assert daemon.mcpctl("status", "added").returncode == 1
        os.kill(daemon.pid, signal.SIGHUP)  # the fault was once: this one applies
        daemon.wait_for_log("reloaded on SIGHUP")
        wait_state(daemon, "added", "connected")
        assert status_of(daemon, "good")["state"] == "connected"
        assert_reported(daemon, "reload failed; keeping the previous configuration")
