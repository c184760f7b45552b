"""The MCP revision 2026-07-28 to servers, while every editor keeps its own.

A real daemon, real `mcpctl stdio` bridges standing in for editors of the
handshake era (they send `initialize` with 2025-11-25), and the official
Python SDK's server serving the 2026-07-28 revision (tests/peers/python_server.py
`--modern`, which logs each modern POST as `modern: METHOD NAME`). The same
scenarios against the handshake-era peer are in tests/test_upstream.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from harness import server_config, status_of, wait_state
from real_peers import python_server, stateless_server, wait_until
from test_upstream import (
    test_notifications_reach_every_editor_and_progress_only_its_owner as notifications_and_progress,
)

ELICITING = {"elicitation": {"form": {}}, "sampling": {}}


@pytest.fixture
def modern_peer(tmp_path):
    with python_server(tmp_path, modern=True) as peer:
        yield peer


@pytest.fixture
def modern_daemon(mcpd_env, run_daemon, modern_peer):
    mcpd_env.write_config(server_config("py", modern_peer.url))
    daemon = run_daemon()
    wait_state(daemon, "py", "connected")
    return daemon


def modern_lines(peer) -> list[str]:
    return [line for line in peer.log.splitlines() if line.startswith("modern: ")]


def test_the_server_is_spoken_to_statelessly_and_status_names_the_revision(
    modern_daemon, modern_peer, editors
):
    assert status_of(modern_daemon, "py")["protocol"] == "2026-07-28"
    editor = editors("py")
    result = editor.initialize()["result"]
    assert result["protocolVersion"] == "2025-11-25"
    assert result["serverInfo"]["name"] == "mcpd-test-python-peer"
    assert "tools" in result["capabilities"]
    reply = editor.call("echo", {"text": "hello"})
    assert reply["result"]["content"][0]["text"] == "hello"
    headers = json.loads(editor.call("headers")["result"]["content"][0]["text"])
    assert headers["mcp-protocol-version"] == "2026-07-28"
    assert headers["mcp-method"] == "tools/call"
    assert headers["mcp-name"] == "headers"
    assert "mcp-session-id" not in headers
    lines = modern_lines(modern_peer)
    assert "modern: server/discover" in lines
    assert "modern: tools/call echo" in lines
    assert not any("initialize" in line for line in modern_peer.log.splitlines())


def test_each_request_carries_its_editors_capabilities_and_identity(
    modern_daemon, modern_peer, editors
):
    plain, eliciting = editors("py"), editors("py")
    plain.initialize()
    eliciting.initialize(ELICITING)
    for editor, declared in ((plain, {}), (eliciting, ELICITING)):
        meta = json.loads(editor.call("meta")["result"]["content"][0]["text"])
        assert meta["io.modelcontextprotocol/protocolVersion"] == "2026-07-28"
        assert meta["io.modelcontextprotocol/clientCapabilities"] == declared
        assert meta["io.modelcontextprotocol/clientInfo"]["name"] == "test-editor"


def test_an_elicitation_reaches_the_declaring_editor_only_and_the_call_completes(
    modern_daemon, editors
):
    plain, eliciting = editors("py"), editors("py")
    plain.initialize()
    eliciting.initialize(ELICITING)
    call = eliciting.request_async("tools/call", {"name": "elicit", "arguments": {}})
    asked = eliciting.wait_for_request("elicitation/create")
    assert asked["params"]["requestedSchema"]["required"] == ["name"]
    eliciting.send(
        {
            "jsonrpc": "2.0",
            "id": asked["id"],
            "result": {"action": "accept", "content": {"name": "Ada"}},
        }
    )
    reply = eliciting.response(call)
    assert "result" in reply, reply
    answer = json.loads(reply["result"]["content"][0]["text"])
    assert answer == {"action": "accept", "content": {"name": "Ada"}}
    assert not [m for m in plain.quiet_for(0.3) if m.get("method") == "elicitation/create"]
    # The editor that declared nothing gets the revision's answer for that case.
    refused = plain.call("elicit")
    assert "elicitation" in json.dumps(refused)
    assert not [m for m in eliciting.quiet_for(0.3) if m.get("method") == "elicitation/create"]


def test_list_changes_reach_every_editor_and_progress_only_its_owner(
    modern_daemon, editors, modern_peer
):
    """The handshake-era test, word for word, against the 2026-07-28 server."""
    notifications_and_progress(modern_daemon, editors, modern_peer)


def test_cancelling_closes_the_requests_stream(modern_daemon, modern_peer, editors):
    editor = editors("py")
    editor.initialize()
    request_id = editor.request_async("tools/call", {"name": "slow", "arguments": {"seconds": 30}})
    wait_until(lambda: "slow: sleeping" in modern_peer.log, "the slow tool to start")
    editor.send(
        {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": request_id, "reason": "test"},
        }
    )
    wait_until(lambda: "slow: cancelled" in modern_peer.log, "the server to cancel")


# --- The TypeScript SDK v2's server (tests/peers/stateless_server.mjs) -------------


@pytest.fixture
def ts_peer(tmp_path):
    with stateless_server(tmp_path) as peer:
        yield peer


@pytest.fixture
def ts_daemon(mcpd_env, run_daemon, ts_peer):
    mcpd_env.write_config(server_config("ts", ts_peer.url))
    daemon = run_daemon()
    wait_state(daemon, "ts", "connected")
    return daemon


def rpc_methods(peer) -> list[str]:
    return [rpc["method"] for request in peer.requests() for rpc in request.get("rpc") or []]


def test_two_editors_on_the_typescript_v2_server(ts_daemon, ts_peer, editors):
    assert status_of(ts_daemon, "ts")["protocol"] == "2026-07-28"
    declaring, plain = editors("ts"), editors("ts")
    declaring.initialize(ELICITING)
    plain.initialize()
    for editor, name in ((declaring, "declaring"), (plain, "plain")):
        tools = editor.request("tools/list")["result"]["tools"]
        assert {"greet", "confirm", "sample", "count", "add_tool"} <= {t["name"] for t in tools}
        reply = editor.call("greet", {"name": name})
        assert reply["result"]["content"][0]["text"] == f"Hello, {name}!"
    envelope = declaring.call("client_info")["result"]["structuredContent"]
    assert envelope["clientCapabilities"] == ELICITING
    assert plain.call("client_info")["result"]["structuredContent"]["clientCapabilities"] == {}
    # Every POST mirrors its method (and name) into headers; nothing opens a session.
    for request in ts_peer.requests():
        assert request["protocol_version"] == "2026-07-28"
        assert request["mcp_method"] == request["rpc"][0]["method"]
        assert request["session"] is None
        assert "initialize" not in rpc_methods(ts_peer)


def test_input_requests_reach_the_editor_whose_call_they_belong_to(ts_daemon, editors):
    declaring, plain = editors("ts"), editors("ts")
    declaring.initialize(ELICITING)
    plain.initialize()
    call = declaring.request_async("tools/call", {"name": "confirm", "arguments": {"action": "x"}})
    asked = declaring.wait_for_request("elicitation/create")
    declaring.send(
        {
            "jsonrpc": "2.0",
            "id": asked["id"],
            "result": {"action": "accept", "content": {"confirm": True}},
        }
    )
    assert declaring.response(call)["result"]["content"][0]["text"] == "Confirmed: x"
    call = declaring.request_async("tools/call", {"name": "sample", "arguments": {"prompt": "hi"}})
    asked = declaring.wait_for_request("sampling/createMessage")
    sampled = {"role": "assistant", "content": {"type": "text", "text": "hello"}, "model": "m"}
    declaring.send({"jsonrpc": "2.0", "id": asked["id"], "result": sampled})
    assert declaring.response(call)["result"]["content"][0]["text"] == "Sampled: hello"
    # The editor that declared neither never gets such a request, nor does the other for it.
    refused = plain.request("tools/call", {"name": "confirm", "arguments": {"action": "y"}})
    assert "error" in refused or refused["result"].get("isError"), refused
    quiet = plain.quiet_for(0.3) + declaring.quiet_for(0.3)
    assert not [
        m for m in quiet if m.get("method") in ("elicitation/create", "sampling/createMessage")
    ]


def test_progress_cancellation_and_list_changes_on_the_typescript_v2_server(
    ts_daemon, ts_peer, editors
):
    first, second = editors("ts"), editors("ts")
    first.initialize()
    second.initialize()
    reply = first.request(
        "tools/call",
        {
            "name": "count",
            "arguments": {"steps": 3, "interval_ms": 10},
            "_meta": {"progressToken": "p"},
        },
    )
    assert reply["result"]["content"][0]["text"] == "Counted to 3"
    progress = [n for n in first.notifications if n["method"] == "notifications/progress"]
    assert [p["params"]["progressToken"] for p in progress] == ["p"] * 3
    assert not [m for m in second.quiet_for(0.3) if m.get("method") == "notifications/progress"]

    request_id = first.request_async(
        "tools/call", {"name": "count", "arguments": {"steps": 1000, "interval_ms": 50}}
    )
    wait_until(
        lambda: any(e.get("steps") == 1000 for e in ts_peer.events("tool")), "the count to start"
    )
    first.send(
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": request_id}}
    )
    wait_until(lambda: ts_peer.events("cancelled"), "the server to see the stream closed")

    first.call("add_tool", {"name": "added"})
    for editor in (first, second):
        editor.wait_for_notification("notifications/tools/list_changed")
        names = {t["name"] for t in editor.request("tools/list")["result"]["tools"]}
        assert "added" in names


def test_fresh_lists_are_answered_from_the_cache(ts_daemon, ts_peer, editors):
    first, second = editors("ts"), editors("ts")
    first.initialize()
    second.initialize()
    before = rpc_methods(ts_peer).count("tools/list")
    for editor in (first, second, first):
        assert editor.request("tools/list")["result"]["tools"]
    # The first list went upstream (ttlMs 60 s); the others were answered by mcpd.
    assert rpc_methods(ts_peer).count("tools/list") <= before + 1
    first.call("add_tool", {"name": "fresh"})
    second.wait_for_notification("notifications/tools/list_changed")
    names = {t["name"] for t in second.request("tools/list")["result"]["tools"]}
    assert "fresh" in names  # the change emptied the cache


def modern_params(params: dict[str, Any], capabilities: dict[str, Any]) -> dict[str, Any]:
    """A 2026-07-28 editor's request parameters: its own declarations in `_meta`."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": capabilities,
        "io.modelcontextprotocol/clientInfo": {"name": "modern-editor", "version": "1"},
    }
    return {**params, "_meta": meta}


def test_an_editor_speaking_2026_07_28_is_served_statelessly(ts_daemon, ts_peer, editors):
    editor, older = editors("ts"), editors("ts")
    older.initialize()
    discovered = editor.request("server/discover", modern_params({}, {}))["result"]
    assert "2026-07-28" in discovered["supportedVersions"]
    assert "tools" in discovered["capabilities"]
    envelope = editor.request(
        "tools/call", modern_params({"name": "client_info", "arguments": {}}, {})
    )["result"]["structuredContent"]
    assert envelope["clientInfo"]["name"] == "modern-editor"
    # Its input rounds are its own: the result passes through, and so does its retry.
    declared = {"elicitation": {}}
    asked = editor.request(
        "tools/call", modern_params({"name": "confirm", "arguments": {"action": "z"}}, declared)
    )["result"]
    assert asked["resultType"] == "input_required"
    [key] = asked["inputRequests"]
    retry = {
        "name": "confirm",
        "arguments": {"action": "z"},
        "inputResponses": {key: {"action": "accept", "content": {"confirm": True}}},
        "requestState": asked.get("requestState"),
    }
    done = editor.request("tools/call", modern_params(retry, declared))["result"]
    assert done["content"][0]["text"] == "Confirmed: z"
    # Its listen stream is its own, under its own id.
    listen_id = editor.request_async(
        "subscriptions/listen", modern_params({"notifications": {"toolsListChanged": True}}, {})
    )
    ack = editor.wait_for_notification("notifications/subscriptions/acknowledged")
    assert ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == listen_id
    older.call("add_tool", {"name": "late"})
    changed = editor.wait_for_notification("notifications/tools/list_changed")
    assert changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == listen_id
    older.wait_for_notification("notifications/tools/list_changed")


def test_a_server_known_to_be_older_is_not_probed_until_that_fails(mcpd_env, run_daemon, tmp_path):
    """The revision found is kept across restarts (the 2026-07-28 revision
    allows it): a handshake-era server is not probed again at the next start;
    when the server at that URL has moved on to 2026-07-28 only, the attempt
    that fails clears what was kept, and the next one probes and finds it."""
    with python_server(tmp_path) as older:
        mcpd_env.write_config(server_config("py", older.url))
        daemon = run_daemon()
        wait_state(daemon, "py", "connected")
        assert status_of(daemon, "py")["protocol"] == "2025-11-25"
        assert older.log.count("refused: a 2026-07-28 request") == 1  # the probe
        assert daemon.stop() == 0
        daemon = run_daemon()
        wait_state(daemon, "py", "connected")
        assert older.log.count("refused: a 2026-07-28 request") == 1  # not probed again
        assert daemon.stop() == 0
        port = older.port
    with stateless_server(tmp_path, port=port, legacy="reject") as newer:
        daemon = run_daemon()
        wait_state(daemon, "py", "connected", timeout=30)
        assert status_of(daemon, "py")["protocol"] == "2026-07-28"
        assert "server/discover" in rpc_methods(newer)
