"""The daemon against real MCP servers nobody here wrote, through real bridges.

Every test runs the real `mcpd`, real `mcpctl` (and `mcpctl stdio` bridges
standing in for editors), and a real server on loopback: the official Python
SDK (tests/peers/python_server.py), the TypeScript SDK's example servers and
@modelcontextprotocol/server-everything.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import pytest
from harness import server_config, status_of, wait_state
from real_peers import (
    PYTHON_SERVER,
    RawMcp,
    free_port,
    json_response_streamable_http,
    python_server,
    run_peer,
    server_everything,
    simple_sse_server,
    simple_streamable_http,
)


@pytest.fixture
def py_peer(tmp_path):
    with python_server(tmp_path) as peer:
        yield peer


@pytest.fixture
def py_daemon(mcpd_env, run_daemon, py_peer):
    """A daemon connected to the Python SDK server, as `py`."""
    mcpd_env.write_config(server_config("py", py_peer.url))
    daemon = run_daemon()
    wait_state(daemon, "py", "connected")
    return daemon


def test_tools_and_call_through_mcpctl(mcpd_env, run_daemon, py_peer):
    mcpd_env.write_config(server_config("py", py_peer.url))
    daemon = run_daemon()
    wait_state(daemon, "py", "connected")
    tools = daemon.mcpctl("tools", "py")
    assert tools.returncode == 0, tools.stderr
    assert tools.stdout.splitlines()[0].split()[:2] == ["echo", "Return"]
    listed = json.loads(daemon.mcpctl("tools", "py", "--json").stdout)["tools"]
    assert {"echo", "add", "slow", "progress"} <= {t["name"] for t in listed}

    echo = daemon.mcpctl("call", "py", "echo", '{"text": "hello through mcpd"}')
    assert (echo.returncode, echo.stdout) == (0, "hello through mcpd\n")
    added = json.loads(daemon.mcpctl("call", "py", "add", '{"a": 2, "b": 40}', "--json").stdout)
    assert added["structuredContent"] == {"sum": 42}

    failed = daemon.mcpctl("call", "py", "fail", '{"message": "the tool broke"}')
    assert failed.returncode == 1
    assert "the tool broke" in failed.stderr
    bad_args = daemon.mcpctl("call", "py", "echo", "{not json")
    assert bad_args.returncode == 2
    assert "not valid JSON" in bad_args.stderr


@pytest.mark.parametrize(
    ("starter", "tool", "arguments", "expected"),
    [
        (simple_streamable_http, "greet", {"name": "mcpd"}, "Hello, mcpd!"),
        (json_response_streamable_http, "greet", {"name": "mcpd"}, "Hello, mcpd!"),
        (server_everything, "echo", {"message": "mcpd"}, "Echo: mcpd"),
        (simple_sse_server, None, None, None),
    ],
    ids=["simpleStreamableHttp", "jsonResponseStreamableHttp", "server-everything", "legacy-sse"],
)
def test_reference_servers(
    mcpd_env, run_daemon, editors, tmp_path, starter, tool, arguments, expected
):
    with starter(tmp_path) as peer:
        mcpd_env.write_config(server_config("ref", peer.url))
        daemon = run_daemon()
        wait_state(daemon, "ref", "connected")
        listed = json.loads(daemon.mcpctl("tools", "ref", "--json").stdout)["tools"]
        assert listed, "the server listed no tools"
        if tool is None:  # the legacy server: call its first tool with its own example
            assert "legacy HTTP+SSE" in daemon.log
            tool, arguments = "start-notification-stream", {"interval": 10, "count": 2}
            expected = "Completed sending 2 notifications"
        result = daemon.mcpctl("call", "ref", tool, json.dumps(arguments))
        assert result.returncode == 0, result.stderr
        assert expected in result.stdout
        editor = editors("ref")
        assert editor.initialize()["result"]["serverInfo"]["name"]
        reply = editor.call(tool, arguments)
        assert expected in reply["result"]["content"][0]["text"]


def test_two_editors_with_the_same_ids_at_once_get_their_own_answers(py_daemon, editors, py_peer):
    first, second = editors("py"), editors("py")
    first.initialize()
    second.initialize()
    for round_ in range(20):
        request_id = 1000 + round_
        for editor, text in ((first, "first"), (second, "second")):
            editor.request_async(
                "tools/call",
                {"name": "echo", "arguments": {"text": f"{text}-{round_}"}},
                request_id,
            )
        for editor, text in ((first, "first"), (second, "second")):
            reply = editor.response(request_id)
            assert reply["result"]["content"][0]["text"] == f"{text}-{round_}"


def test_notifications_reach_every_editor_and_progress_only_its_owner(py_daemon, editors, py_peer):
    first, second = editors("py"), editors("py")
    first.initialize()
    second.initialize()
    first.call("toggle_tool")
    for editor in (first, second):
        editor.wait_for_notification("notifications/tools/list_changed")

    reply = first.request(
        "tools/call",
        {"name": "progress", "arguments": {"steps": 3}, "_meta": {"progressToken": "mine"}},
    )
    assert reply["result"]["content"][0]["text"] == "3 steps done"
    progress = [n for n in first.notifications if n["method"] == "notifications/progress"]
    assert [p["params"]["progressToken"] for p in progress] == ["mine"] * 3
    assert [p["params"]["progress"] for p in progress] == [1, 2, 3]
    assert not [m for m in second.quiet_for(0.3) if m.get("method") == "notifications/progress"]


def test_resource_subscriptions_are_shared_and_counted(py_daemon, editors, py_peer):
    first, second, third = editors("py"), editors("py"), editors("py")
    for editor in (first, second, third):
        editor.initialize()
    for editor in (first, second):
        assert editor.request("resources/subscribe", {"uri": "test://counter"})["result"] == {}
    third.call("touch")
    for editor in (first, second):
        updated = editor.wait_for_notification("notifications/resources/updated")
        assert updated["params"]["uri"] == "test://counter"
    assert first.request("resources/unsubscribe", {"uri": "test://counter"})["result"] == {}
    third.call("touch")
    second.wait_for_notification("notifications/resources/updated")
    assert not [
        m
        for m in first.quiet_for(0.3) + third.quiet_for(0)
        if m.get("method") == "notifications/resources/updated"
    ]


def test_cancellation_reaches_the_server(py_daemon, editors, py_peer):
    editor = editors("py")
    editor.initialize()
    request_id = editor.request_async("tools/call", {"name": "slow", "arguments": {"seconds": 30}})
    py_peer.wait_for_log("slow: sleeping")
    editor.send(
        {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": request_id, "reason": "the user gave up"},
        }
    )
    py_peer.wait_for_log("slow: cancelled")
    assert (
        editor.call("echo", {"text": "still here"})["result"]["content"][0]["text"] == "still here"
    )


def test_an_editor_that_leaves_cancels_its_requests(py_daemon, editors, py_peer):
    editor = editors("py")
    editor.initialize()
    editor.request_async("tools/call", {"name": "slow", "arguments": {"seconds": 30}})
    py_peer.wait_for_log("slow: sleeping")
    assert editor.close() == 0
    py_peer.wait_for_log("slow: cancelled")


def test_invalid_json_from_an_editor_gets_a_parse_error_and_the_session_goes_on(
    py_daemon, editors, py_peer
):
    editor = editors("py")
    editor.initialize()
    editor.send_raw(b'{"jsonrpc": "2.0", "id": 5, "method": ')
    error = editor.response(None)
    assert error["error"]["code"] == -32700
    assert editor.call("echo", {"text": "ok"})["result"]["content"][0]["text"] == "ok"


def _python_server_on(port: int, log_dir):
    argv = [sys.executable, str(PYTHON_SERVER), "--port", str(port)]
    return run_peer("python-server", argv, log_dir, port=port)


@pytest.mark.parametrize(
    ("starter", "tool", "arguments"),
    [
        (python_server, "echo", {"text": "T"}),  # answers an unknown session with 404
        (server_everything, "echo", {"message": "T"}),  # with 400 "... session ..."
    ],
    ids=["python-sdk", "server-everything"],
)
def test_a_restarted_server_gets_a_new_session_and_editors_notice_nothing(
    mcpd_env, run_daemon, editors, tmp_path, starter, tool, arguments
):
    """The server restarts between two calls: the daemon's next request carries
    the old session id, is refused, and the daemon initializes a new session
    and carries on. The editor sees only answers."""
    port = free_port()
    mcpd_env.write_config(server_config("srv", f"http://127.0.0.1:{port}/mcp"))
    with starter(tmp_path, port=port):
        daemon = run_daemon()
        wait_state(daemon, "srv", "connected")
        editor = editors("srv")
        editor.initialize()
        assert "T" in json.dumps(editor.call(tool, arguments)["result"])
    with starter(tmp_path, port=port):
        reply = editor.call(tool, {k: v.replace("T", "U") for k, v in arguments.items()})
        assert "result" in reply, (reply, daemon.log)
        assert "U" in json.dumps(reply["result"]["content"])
        assert status_of(daemon, "srv")["state"] == "connected"
    assert "session expired; initializing a new one" in daemon.log


def test_a_dead_server_backs_off_and_recovers_by_itself(mcpd_env, run_daemon, editors, tmp_path):
    port = free_port()
    mcpd_env.write_config(server_config("py", f"http://127.0.0.1:{port}/mcp"))
    daemon = run_daemon()
    failed = wait_state(daemon, "py", "failed")
    assert "cannot connect" in failed["error"]
    assert failed["next_retry_at"] > time.time() - 1
    editor = editors("py")
    reply = editor.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {}})
    assert reply["error"]["code"] == -32001
    assert "server 'py' is failed" in reply["error"]["message"]
    assert "retries by itself" in reply["error"]["message"]
    table = daemon.mcpctl("status").stdout
    assert "retry in" in table
    with _python_server_on(port, tmp_path):
        wait_state(daemon, "py", "connected", timeout=30)
        editor.initialize()
        assert editor.call("echo", {"text": "back"})["result"]["content"][0]["text"] == "back"


def test_per_client_sessions_are_isolated(mcpd_env, run_daemon, editors, py_peer):
    mcpd_env.write_config(server_config("py", py_peer.url, 'session = "per-client"\n'))
    daemon = run_daemon()
    wait_state(daemon, "py", "connected")
    first, second = editors("py"), editors("py")
    assert first.initialize()["result"]["serverInfo"]["name"] == "mcpd-test-python-peer"
    second.initialize()
    first_headers = json.loads(first.call("headers")["result"]["content"][0]["text"])
    second_headers = json.loads(second.call("headers")["result"]["content"][0]["text"])
    assert first_headers["mcp-session-id"] != second_headers["mcp-session-id"]
    first.call("toggle_tool")  # notifies its own session only
    first.wait_for_notification("notifications/tools/list_changed")
    assert not [
        m for m in second.quiet_for(0.5) if m.get("method") == "notifications/tools/list_changed"
    ]


def test_the_bridge_survives_a_daemon_restart(py_daemon, run_daemon, editors, py_peer):
    daemon = py_daemon
    editor = editors("py")
    editor.initialize()
    assert daemon.stop() == 0
    refused = editor.call("echo", {"text": "nobody home"})
    assert refused["error"]["code"] == -32001
    assert "mcpd is not running" in refused["error"]["message"]
    assert "mcpd is not running" in editor.stderr
    daemon = run_daemon()
    wait_state(daemon, "py", "connected")
    deadline = time.monotonic() + 10
    while True:  # the bridge retries its connection every second
        reply = editor.call("echo", {"text": "again"})
        if "result" in reply or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert reply["result"]["content"][0]["text"] == "again"  # no new initialize needed


def test_requests_to_a_server_that_needs_auth_say_how_to_fix_it(
    mcpd_env, run_daemon, editors, tmp_path
):
    with python_server(tmp_path, bearer="right-token") as peer:
        mcpd_env.write_config(
            server_config("locked", peer.url)
            + server_config(
                "static",
                peer.url,
                'headers = { Authorization = "Bearer wrong-token" }\n',
            )
            + server_config(
                "open", peer.url, 'headers = { Authorization = "Bearer right-token" }\n'
            )
        )
        daemon = run_daemon()
        locked = wait_state(daemon, "locked", "needs_auth")
        assert "401" in locked["error"]
        static = wait_state(daemon, "static", "failed")
        assert "refused the configured credentials" in static["error"]
        wait_state(daemon, "open", "connected")
        editor = editors("locked")
        reply = editor.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {}})
        assert "mcpctl auth locked" in reply["error"]["message"]
        call = daemon.mcpctl("call", "open", "echo", '{"text": "with a header"}')
        assert call.stdout == "with a header\n"
        assert "wrong-token" not in daemon.log
        assert "right-token" not in daemon.log


def test_a_slow_server_does_not_delay_the_others(mcpd_env, run_daemon, silent, py_peer):
    mcpd_env.write_config(
        server_config("stuck", silent.url("stuck")) + server_config("py", py_peer.url)
    )
    daemon = run_daemon()
    wait_state(daemon, "py", "connected", timeout=5)
    assert status_of(daemon, "stuck")["state"] == "connecting"
    results = []

    def call() -> None:
        results.append(daemon.mcpctl("call", "py", "echo", '{"text": "fast"}'))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert [r.stdout for r in results] == ["fast\n"] * 4


def test_server_requests_go_to_the_editor_whose_call_they_belong_to(
    mcpd_env, run_daemon, editors, tmp_path
):
    """server-everything asks for sampling on the stream of an editor's call:
    the editor that cannot sample gets the server told so (-32601), and the
    one that can is never asked for another's call; its own call, it answers."""
    with server_everything(tmp_path) as peer:
        mcpd_env.write_config(server_config("ev", peer.url))
        daemon = run_daemon()
        wait_state(daemon, "ev", "connected")
        sampler, plain = editors("ev"), editors("ev")
        sampler.initialize({"sampling": {}})
        plain.initialize()
        arguments = {"prompt": "hi", "maxTokens": 5}
        refused = plain.call("trigger-sampling-request", arguments)
        assert refused["result"]["isError"] is True
        text = refused["result"]["content"][0]["text"]
        assert "-32601: Method not found" in text
        assert "did not declare the sampling capability" in text
        assert not [m for m in sampler.quiet_for(0.5) if "id" in m and "method" in m]
        call_id = sampler.request_async(
            "tools/call", {"name": "trigger-sampling-request", "arguments": arguments}
        )
        request = sampler.wait_for_request("sampling/createMessage")
        sampler.send(
            {
                "jsonrpc": "2.0",
                "id": request["id"],
                "result": {
                    "role": "assistant",
                    "content": {"type": "text", "text": "sampled by the first editor"},
                    "model": "test-model",
                    "stopReason": "endTurn",
                },
            }
        )
        reply = sampler.response(call_id)
        assert "sampled by the first editor" in json.dumps(reply["result"])

        # Neither declared elicitation: the server gets an error, not silence.
        refused = plain.call("trigger-elicitation-request")
        assert "-32601: Method not found" in json.dumps(refused)
        assert "did not declare the elicitation capability" in json.dumps(refused)


def test_every_request_carries_the_configured_and_protocol_headers(
    mcpd_env, run_daemon, editors, py_peer
):
    mcpd_env.vars["TEAM_NAME"] = "platform"
    mcpd_env.write_config(
        server_config("py", py_peer.url, 'headers = { "X-Team" = "{env:TEAM_NAME}" }\n')
    )
    daemon = run_daemon()
    wait_state(daemon, "py", "connected")
    for seen in (
        json.loads(daemon.mcpctl("call", "py", "headers").stdout),
        json.loads(_editor_call_headers(editors("py"))),
    ):
        assert seen["x-team"] == "platform"
        assert seen["accept"] == "application/json, text/event-stream"
        assert seen["mcp-protocol-version"] == "2025-11-25"
        assert seen["mcp-session-id"]


def _editor_call_headers(editor) -> str:
    editor.initialize()
    return editor.call("headers")["result"]["content"][0]["text"]


def test_stopping_the_daemon_ends_the_session_on_the_server(mcpd_env, run_daemon, py_peer):
    mcpd_env.write_config(server_config("py", py_peer.url))
    daemon = run_daemon()
    wait_state(daemon, "py", "connected")
    seen = json.loads(daemon.mcpctl("call", "py", "headers").stdout)
    probe = RawMcp(py_peer.url)
    probe.session_id = seen["mcp-session-id"]
    probe.negotiated_version = seen["mcp-protocol-version"]
    assert probe.request("ping").status == 200  # the session is alive
    assert daemon.stop() == 0
    assert probe.request("ping").status == 404  # DELETE-d on the way out
