"""The real-peer infrastructure works: each peer starts on loopback and
answers an MCP handshake, spoken with the standard library alone.

These test tests/real_peers.py and tests/peers/, not mcpd. A missing peer is a
failure that says to run `bash tests/peers/install.sh`, never a skip.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import real_peers
from real_peers import Peer, RawMcp

INITIALIZE: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "mcpd-tests", "version": "0"},
    },
}


def post_initialize(peer: Peer) -> tuple[http.client.HTTPResponse, bytes]:
    connection = http.client.HTTPConnection(f"127.0.0.1:{peer.port}", timeout=10)
    connection.request(
        "POST",
        "/mcp",
        json.dumps(INITIALIZE),
        {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response, body


def initialize_result(response: http.client.HTTPResponse, body: bytes) -> dict[str, Any]:
    """The InitializeResult in a JSON or an SSE answer to INITIALIZE."""
    assert response.status == 200, body
    content_type = response.getheader("Content-Type", "")
    if content_type.startswith("text/event-stream"):
        data = [line[5:].strip() for line in body.decode().splitlines() if line.startswith("data:")]
        messages = [json.loads(text) for text in data if text]
    else:
        assert content_type.startswith("application/json"), content_type
        messages = [json.loads(body)]
    [message] = [m for m in messages if m.get("id") == 1]
    result: dict[str, Any] = message["result"]
    assert result["protocolVersion"] == "2025-11-25"
    assert result["serverInfo"]["name"]
    assert isinstance(result["capabilities"], dict)
    return result


def assert_loopback_only(peer: Peer) -> None:
    """Listening on 127.0.0.1 and on no other address: 127.0.0.2, a loopback
    address too, reaches any server bound to every interface (IPv4 or dual-stack)."""
    with socket.create_connection(("127.0.0.1", peer.port), timeout=1):
        pass
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.2", peer.port), timeout=1),
    ):
        pass


Starter = Callable[[Path], AbstractContextManager[Peer]]

STREAMABLE_PEERS: dict[str, tuple[Starter, str]] = {
    "server-everything": (real_peers.server_everything, "mcp-servers/everything"),
    "simpleStreamableHttp": (real_peers.simple_streamable_http, "simple-streamable-http-server"),
    "jsonResponseStreamableHttp": (
        real_peers.json_response_streamable_http,
        "json-response-streamable-http-server",
    ),
    "python-server": (real_peers.python_server, "mcpd-test-python-peer"),
}


@pytest.mark.parametrize("name", STREAMABLE_PEERS)
def test_streamable_http_peer_answers_initialize(name: str, tmp_path: Path) -> None:
    start, server_name = STREAMABLE_PEERS[name]
    with start(tmp_path) as peer:
        assert peer.url == f"http://127.0.0.1:{peer.port}/mcp"
        response, body = post_initialize(peer)
        result = initialize_result(response, body)
        assert result["serverInfo"]["name"] == server_name
        assert response.getheader("Mcp-Session-Id"), "every one of these peers keeps sessions"
        assert_loopback_only(peer)
    assert peer.process.poll() is not None, "the peer outlived its context"


def test_server_everything_serves_a_session(tmp_path: Path) -> None:
    with real_peers.server_everything(tmp_path) as peer:
        session = RawMcp(peer.url)
        result = session.initialize()
        assert result["capabilities"]["tools"] == {"listChanged": True}
        assert result["capabilities"]["resources"] == {"subscribe": True, "listChanged": True}
        tools = {tool["name"] for tool in session.result("tools/list", {})["tools"]}
        assert {"echo", "get-sum", "trigger-long-running-operation"} <= tools
        reply = session.call_tool(
            "trigger-long-running-operation", {"duration": 0.2, "steps": 2}, progress_token="p"
        )
        progress = [n for n in reply.notifications if n["method"] == "notifications/progress"]
        assert [n["params"]["progress"] for n in progress] == [1, 2]
        echoed = session.result("tools/call", {"name": "echo", "arguments": {"message": "hi"}})
        assert echoed["content"][0]["text"] == "Echo: hi"
        assert session.delete() == 200


def test_simple_streamable_http_greets_and_logs(tmp_path: Path) -> None:
    with real_peers.simple_streamable_http(tmp_path) as peer:
        session = RawMcp(peer.url)
        session.initialize()
        reply = session.call_tool("greet", {"name": "mcpd"})
        assert reply.response(session.next_id)["result"]["content"][0]["text"] == "Hello, mcpd!"
        # Its log messages name the session, not the request: they come on the GET stream.
        with session.listen() as received:
            reply = session.call_tool("start-notification-stream", {"interval": 10, "count": 2})
            assert reply.notifications == []
            real_peers.wait_until(lambda: len(received) == 2, "two log messages")
        assert {message["method"] for message in received} == {"notifications/message"}


def test_json_response_server_answers_json_and_refuses_get(tmp_path: Path) -> None:
    with real_peers.json_response_streamable_http(tmp_path) as peer:
        session = RawMcp(peer.url)
        session.initialize()
        reply = session.call_tool("greet", {"name": "mcpd"})
        assert reply.headers["content-type"].startswith("application/json")
        connection = http.client.HTTPConnection(f"127.0.0.1:{peer.port}", timeout=10)
        connection.request("GET", "/mcp", headers={"Accept": "text/event-stream"})
        assert connection.getresponse().status == 405
        connection.close()


def test_legacy_sse_server_names_its_endpoint_and_answers_on_the_stream(tmp_path: Path) -> None:
    with real_peers.simple_sse_server(tmp_path) as peer:
        assert_loopback_only(peer)
        stream = http.client.HTTPConnection(f"127.0.0.1:{peer.port}", timeout=10)
        stream.request("GET", "/mcp", headers={"Accept": "text/event-stream"})
        response = stream.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type", "").startswith("text/event-stream")
        events = real_peers.read_sse_events(response)
        event, endpoint = next(events)
        assert event == "endpoint"
        assert endpoint.startswith("/messages?sessionId=")

        post = http.client.HTTPConnection(f"127.0.0.1:{peer.port}", timeout=10)
        legacy = {**INITIALIZE, "params": {**INITIALIZE["params"], "protocolVersion": "2024-11-05"}}
        post.request("POST", endpoint, json.dumps(legacy), {"Content-Type": "application/json"})
        accepted = post.getresponse()
        accepted.read()
        assert accepted.status == 202
        post.close()

        event, data = next(events)
        assert event == "message"
        answer = json.loads(data)
        assert answer["id"] == 1
        assert answer["result"]["serverInfo"]["name"] == "simple-sse-server"
        assert answer["result"]["protocolVersion"] == "2024-11-05"
        stream.close()


def test_python_server_tools(tmp_path: Path) -> None:
    with real_peers.python_server(tmp_path) as peer:
        session = RawMcp(peer.url)
        result = session.initialize()
        assert result["capabilities"]["resources"] == {"subscribe": True, "listChanged": True}
        assert result["capabilities"]["tools"] == {"listChanged": True}

        def content(reply: real_peers.Reply) -> dict[str, Any]:
            answer: dict[str, Any] = reply.response(session.next_id)["result"]
            return answer

        assert content(session.call_tool("echo", {"text": "hi"}))["content"][0]["text"] == "hi"
        assert content(session.call_tool("add", {"a": 2, "b": 3}))["structuredContent"] == {
            "sum": 5
        }
        assert content(session.call_tool("fail", {"message": "no"}))["isError"] is True
        assert len(content(session.call_tool("big", {"n": 70000}))["content"][0]["text"]) == 70000

        reply = session.call_tool("progress", {"steps": 3, "interval": 0}, progress_token="t")
        assert [n["params"]["progress"] for n in reply.notifications] == [1, 2, 3]
        reply = session.call_tool("log", {"message": "hello"})
        assert reply.notifications[0]["params"]["data"] == "hello"

        session.result("resources/subscribe", {"uri": "test://counter"})
        reply = session.call_tool("touch", {"related": True})
        assert reply.notifications == [
            {
                "jsonrpc": "2.0",
                "method": "notifications/resources/updated",
                "params": {"uri": "test://counter"},
            }
        ]
        reply = session.call_tool("toggle_tool", {"related": True})
        assert reply.notifications[0]["method"] == "notifications/tools/list_changed"
        assert "extra" in {tool["name"] for tool in session.result("tools/list")["tools"]}


def test_python_server_slow_call_is_cancelled(tmp_path: Path) -> None:
    with real_peers.python_server(tmp_path) as peer:
        session = RawMcp(peer.url)
        session.initialize()
        replies: list[real_peers.Reply] = []
        call = threading.Thread(
            target=lambda: replies.append(session.call_tool("slow", {"seconds": 30}))
        )
        call.start()
        peer.wait_for_log("slow: sleeping")
        cancelled = session.notify("notifications/cancelled", {"requestId": session.next_id})
        assert cancelled.status == 202
        peer.wait_for_log("slow: cancelled")
        call.join(10)
        assert not call.is_alive()


def test_python_server_requires_its_bearer_token(tmp_path: Path) -> None:
    with real_peers.python_server(tmp_path, bearer="s3cret") as peer:
        response, _ = post_initialize(peer)
        assert response.status == 401
        session = RawMcp(peer.url, headers={"Authorization": "Bearer s3cret"})
        session.initialize()
        headers = json.loads(
            session.call_tool("headers").messages[-1]["result"]["content"][0]["text"]
        )
        assert headers["authorization"] == "Bearer s3cret"


def test_a_peer_restarts_on_its_port(tmp_path: Path) -> None:
    with real_peers.simple_streamable_http(tmp_path) as peer:
        session = RawMcp(peer.url)
        session.initialize()
        peer.stop()
        with real_peers.simple_streamable_http(tmp_path, port=peer.port) as again:
            assert again.url == peer.url
            assert session.request("ping").status == 404, "a new process knows no old session"
            RawMcp(again.url).initialize()


def test_a_taken_port_is_reported(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (
            pytest.raises(AssertionError, match=f"found port {port} taken"),
            real_peers.python_server(tmp_path, port=port),
        ):
            pass


def test_conformance_suite_lists_the_client_scenarios() -> None:
    listed = subprocess.run(
        [*real_peers.conformance_argv(), "list", "--client"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    scenarios = {line.split()[1] for line in listed.stdout.splitlines() if line.startswith("  - ")}
    assert {"initialize", "tools_call", "sse-retry"} <= scenarios


@pytest.mark.parametrize("scenario", ["initialize", "tools_call"])
def test_conformance_client_mode_runs_a_client(scenario: str, tmp_path: Path) -> None:
    probe = real_peers.PEERS_DIR / "conformance_probe.py"
    command = real_peers.conformance_client_command([sys.executable, str(probe)])
    run = subprocess.run(
        [
            *real_peers.conformance_argv(),
            "client",
            "--command",
            command,
            "--scenario",
            scenario,
            "--output-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    [checks_file] = tmp_path.glob(f"{scenario}-*/checks.json")
    statuses = {check["status"] for check in json.loads(checks_file.read_text())}
    assert "SUCCESS" in statuses
    assert statuses <= {"SUCCESS", "INFO"}


def test_node_is_22() -> None:
    version = subprocess.run(
        [str(real_peers.node22()), "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("v22.")


def test_missing_peers_say_to_run_install_sh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCPD_PEERS_CACHE", str(tmp_path / "empty"))
    with (
        pytest.raises(real_peers.PeersNotInstalledError, match=r"bash tests/peers/install\.sh"),
        real_peers.server_everything(tmp_path),
    ):
        pass


def test_stale_peers_say_to_run_install_sh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "installed-versions").write_text("@modelcontextprotocol/sdk@0.0.1\n")
    monkeypatch.setenv("MCPD_PEERS_CACHE", str(tmp_path))
    with pytest.raises(real_peers.PeersNotInstalledError, match=r"not \["):
        real_peers.node22()
