"""An editor's request on a warm connection is forwarded without a task
(mcpd/upstream/transport.py, `_Forwarded`): the common answer, a 200 whose
event stream carries the response, is read from the connection's callbacks;
any other answer is handed to a task that goes on as an ordinary POST.

The server is a fake on purpose: it answers each tool by name with what a
real server sends only when broken or unusual (an event cut in half, a
stream closed before its answer, a head that never comes, a redirect), each
on the kept-alive connection that the call before it used. The in-process
tests say which way each answer takes; the daemon test shows that every
one of them ends as an editor expects, beside a healthy real server that
answers all along.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from harness import status_of
from hostile import Handler, send_json
from http_peer import Peer, http_peer, send
from real_peers import python_server
from test_bad_servers import calling_all_along, victim_beside_good

from mcpd.http import HttpClient, HttpError
from mcpd.upstream import jsonrpc
from mcpd.upstream.transport import (
    Handover,
    StreamableHttp,
    TransportSettings,
    UpstreamError,
)

MAX_FRAME = 65536  # [daemon] max_frame_size: a message over about 64 KB is refused
HEAD_TIMEOUT = 2  # the fake's `timeout`: how long a silent head is waited for


def event(message: dict[str, Any], event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: message\ndata: {json.dumps(message)}\n\n".encode()


def answer(request: dict[str, Any], text: str) -> dict[str, Any]:
    content = [{"type": "text", "text": text}]
    return {"jsonrpc": "2.0", "id": request["id"], "result": {"content": content}}


@dataclass
class ScriptedServer:
    """Speaks just enough MCP (initialize, notifications, tools/call), and answers
    each tool by its name (`tool_*` below); what it answers resumed streams
    with is the response it owed when the stream was cut."""

    sessions: int = 0
    owed: dict[str, Any] | None = None
    expired: bool = False
    released: threading.Event = field(default_factory=threading.Event)
    ports: list[int] = field(default_factory=list)  # the client's port of each call
    # Each call's Authorization and Mcp-Session-Id, as they came.
    carried: list[tuple[str | None, str | None]] = field(default_factory=list)

    def route(self, handler: Handler) -> None:
        if handler.command == "GET":
            self._resume(handler)
            return
        if handler.command == "DELETE":
            send(handler, 200)
            return
        message = json.loads(handler.request_body)  # type: ignore[attr-defined]
        if "id" not in message:
            send(handler, 202)
            return
        if message["method"] == "initialize":
            self.sessions += 1
            result = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "scripted", "version": "1"},
            }
            reply = {"jsonrpc": "2.0", "id": message["id"], "result": result}
            send_json(handler, reply, Mcp_Session_Id=f"session-{self.sessions}")
            return
        if message["method"] != "tools/call":
            send_json(handler, {"jsonrpc": "2.0", "id": message["id"], "result": {}})
            return
        self.ports.append(handler.client_address[1])
        self.carried.append(
            (handler.headers.get("Authorization"), handler.headers.get("Mcp-Session-Id"))
        )
        tool = message["params"]["name"]
        getattr(self, f"tool_{tool}")(handler, message)

    def _stream_head(self, handler: Handler, length: int | None = None) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        if length is None:
            handler.send_header("Connection", "close")
            handler.close_connection = True
        else:
            handler.send_header("Content-Length", str(length))
        handler.end_headers()

    def _stream(self, handler: Handler, body: bytes) -> None:
        self._stream_head(handler, len(body))
        handler.wfile.write(body)

    def _resume(self, handler: Handler) -> None:
        if handler.headers.get("Last-Event-ID") != "primed" or self.owed is None:
            send(handler, 405)
            return
        owed, self.owed = self.owed, None
        self._stream(handler, event(answer(owed, "resumed"), "done"))

    # -- the answers, by tool name

    def tool_echo(self, handler: Handler, request: dict[str, Any]) -> None:
        self._stream(handler, event(answer(request, "echo")))

    def tool_in_pieces(self, handler: Handler, request: dict[str, Any]) -> None:
        body = event(answer(request, "in pieces"))
        self._stream_head(handler, len(body))
        for piece in (body[:7], body[7:40], body[40:]):
            handler.wfile.write(piece)
            handler.wfile.flush()
            time.sleep(0.05)

    def tool_with_tail(self, handler: Handler, request: dict[str, Any]) -> None:
        log = {
            "jsonrpc": "2.0",
            "method": "notifications/message",
            "params": {"level": "info", "data": "after the answer"},
        }
        body = event(answer(request, "with tail"))
        self._stream_head(handler, len(body) + len(event(log)))
        handler.wfile.write(body)
        handler.wfile.flush()
        time.sleep(0.1)
        handler.wfile.write(event(log))

    def tool_plain_json(self, handler: Handler, request: dict[str, Any]) -> None:
        send_json(handler, answer(request, "plain json"))

    def tool_redirected(self, handler: Handler, request: dict[str, Any]) -> None:
        if handler.path.endswith("/elsewhere"):
            self.tool_echo(handler, request)
        else:
            send(handler, 307, Location="/mcp/elsewhere")

    def tool_failing(self, handler: Handler, request: dict[str, Any]) -> None:
        send(handler, 500, b"the tool fell over", Content_Type="text/plain")

    def tool_expired_once(self, handler: Handler, request: dict[str, Any]) -> None:
        if not self.expired:
            self.expired = True
            send(handler, 404, b"no such session")
            return
        self.tool_echo(handler, request)

    def tool_not_json(self, handler: Handler, request: dict[str, Any]) -> None:
        self._stream(handler, b"event: message\ndata: {not json\n\n")

    def tool_too_big(self, handler: Handler, request: dict[str, Any]) -> None:
        self._stream(handler, event(answer(request, "x" * (2 * MAX_FRAME))))

    def tool_cut(self, handler: Handler, request: dict[str, Any]) -> None:
        body = event(answer(request, "never whole"))
        self._stream_head(handler, len(body))
        handler.wfile.write(body[:20])
        handler.wfile.flush()
        handler.connection.shutdown(socket.SHUT_RDWR)
        handler.close_connection = True

    def tool_resumed(self, handler: Handler, request: dict[str, Any]) -> None:
        self.owed = request
        self._stream_head(handler)  # to the close: the stream ends before the answer
        handler.wfile.write(b"id: primed\nretry: 10\ndata: \n\n")

    def tool_silent(self, handler: Handler, request: dict[str, Any]) -> None:
        self.released.wait(30)


@contextmanager
def scripted(server: ScriptedServer) -> Iterator[Peer]:
    with http_peer(server.route) as peer:
        try:
            yield peer
        finally:
            server.released.set()


# --- Which way each answer takes (in process) ------------------------------------------


@dataclass
class Outcomes:
    """A session's side of `Forwarding`, recording what it is told."""

    delivered: list[dict[str, Any]] = field(default_factory=list)
    handed: list[Handover] = field(default_factory=list)
    failures: list[UpstreamError | HttpError] = field(default_factory=list)
    crashes: list[Exception] = field(default_factory=list)
    news: anyio.Event = field(default_factory=anyio.Event)

    def deliver(self, message: dict[str, Any], related: int | None) -> None:
        self.delivered.append(message)
        self.news.set()

    def hand_over(self, message: dict[str, Any], handover: Handover) -> None:
        self.handed.append(handover)
        self.news.set()

    def failed(self, message: dict[str, Any], exc: UpstreamError | HttpError) -> None:
        self.failures.append(exc)
        self.news.set()

    def crashed(self, exc: Exception) -> None:
        self.crashes.append(exc)
        self.news.set()

    def told(self) -> tuple[int, int, int, int]:
        """How many messages, handovers, failures and crashes."""
        return len(self.delivered), len(self.handed), len(self.failures), len(self.crashes)


async def forwarded(tool: str) -> tuple[Outcomes, StreamableHttp, list[int]]:
    """Initialize (an ordinary POST, which leaves its connection idle), then
    forward one call of `tool`; what the forwarding was told, once told."""
    server = ScriptedServer()
    outcomes = Outcomes()
    with scripted(server) as peer:
        async with HttpClient(connect_timeout=5) as client:
            settings = TransportSettings(client, peer.url + "/mcp", {}, MAX_FRAME, HEAD_TIMEOUT)
            transport = StreamableHttp(settings, outcomes.deliver)
            params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {}}
            await transport.post(jsonrpc.request(1, "initialize", params))
            outcomes.delivered.clear()
            call = jsonrpc.request(2, "tools/call", {"name": tool, "arguments": {}})
            assert transport.forward(call, outcomes), "no idle connection to forward on"
            with anyio.fail_after(HEAD_TIMEOUT + 5):
                while not (outcomes.delivered or outcomes.handed or outcomes.failures):
                    outcomes.news = anyio.Event()
                    await outcomes.news.wait()
                await anyio.sleep(0.3)  # anything more it would be told
            for handover in outcomes.handed:
                await handover.response.aclose()
            transport.abandon()
    return outcomes, transport, server.ports


@pytest.mark.parametrize("tool", ["echo", "in_pieces", "with_tail"])
def test_a_response_event_is_delivered_from_the_callbacks(tool):
    outcomes, transport, _ = anyio.run(forwarded, tool)
    assert outcomes.delivered[0]["id"] == 2
    if tool == "with_tail":  # what follows the response on its stream is delivered too
        assert outcomes.delivered[1]["method"] == "notifications/message"
    assert outcomes.told() == (len(outcomes.delivered), 0, 0, 0)
    assert transport.session_id == "session-1"


@pytest.mark.parametrize(
    ("tool", "status", "read"),
    [
        ("plain_json", 200, False),  # a JSON body
        ("redirected", 307, False),
        ("failing", 500, False),
        ("expired_once", 404, False),
        ("resumed", 200, True),  # the stream ended before its answer
        ("cut", 200, True),  # the stream broke before its answer
    ],
)
def test_every_other_answer_is_handed_to_a_task_where_it_stands(tool, status, read):
    outcomes, _, _ = anyio.run(forwarded, tool)
    assert outcomes.told() == (0, 1, 0, 0)
    [handover] = outcomes.handed
    assert handover.response.status_code == status
    # Once the stream was being read, the task goes on with the same decoder
    # (its last event id is what the stream resumes from).
    assert (handover.decoder is not None) == read
    if tool == "resumed":
        assert handover.decoder is not None
        assert handover.decoder.last_event_id == "primed"


@pytest.mark.parametrize(
    ("tool", "expected"),
    [
        ("not_json", "the server sent an invalid message"),
        ("too_big", f"exceeds {MAX_FRAME} bytes"),
        ("silent", f"within {HEAD_TIMEOUT}s"),
    ],
)
def test_what_post_would_raise_is_told_as_a_failure(tool, expected):
    outcomes, _, _ = anyio.run(forwarded, tool)
    assert outcomes.told() == (0, 0, 1, 0)
    assert expected in str(outcomes.failures[0]), outcomes.failures


def test_no_idle_connection_means_no_forwarding():
    async def main() -> None:
        server = ScriptedServer()
        with scripted(server) as peer:
            async with HttpClient(connect_timeout=5) as client:
                settings = TransportSettings(client, peer.url + "/mcp", {}, MAX_FRAME, 5)
                transport = StreamableHttp(settings, Outcomes().deliver)
                call = jsonrpc.request(2, "tools/call", {"name": "echo", "arguments": {}})
                assert not transport.forward(call, Outcomes())
        assert server.ports == []  # nothing was sent

    anyio.run(main)


def test_each_forwarded_post_carries_the_token_and_session_of_its_moment():
    """A forwarded POST's head is made once and kept (`HttpClient.lane_post`):
    a renewed token or a new session id makes a new one."""
    token = ["first-token"]

    async def main() -> ScriptedServer:
        server = ScriptedServer()
        outcomes = Outcomes()
        with scripted(server) as peer:
            async with HttpClient(connect_timeout=5) as client:
                settings = TransportSettings(
                    client, peer.url + "/mcp", {"X-Api-Key": "k"}, MAX_FRAME, 5, lambda: token[0]
                )
                transport = StreamableHttp(settings, outcomes.deliver)
                params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {}}
                await transport.post(jsonrpc.request(1, "initialize", params))
                for step in range(4):
                    token[0] = "second-token" if step >= 2 else "first-token"
                    if step == 3:
                        transport.session_id = "session-9"  # as a renewed session would
                    outcomes.delivered.clear()
                    call = jsonrpc.request(2 + step, "tools/call", {"name": "echo"})
                    assert transport.forward(call, outcomes)
                    with anyio.fail_after(5):
                        while not outcomes.delivered:
                            outcomes.news = anyio.Event()
                            await outcomes.news.wait()
                    assert outcomes.delivered[0]["id"] == 2 + step
                transport.abandon()
        return server

    server = anyio.run(main)
    assert server.carried == [
        ("Bearer first-token", "session-1"),
        ("Bearer first-token", "session-1"),
        ("Bearer second-token", "session-1"),
        ("Bearer second-token", "session-9"),
    ]
    assert len(set(server.ports)) == 1  # all on the one kept-alive connection


# --- Every answer, end to end, beside a healthy server ------------------------------------

# (tool, what the editor gets: the result's text, or a piece of the error's message)
CASES = [
    ("echo", "echo"),
    ("in_pieces", "in pieces"),
    ("with_tail", "with tail"),
    ("plain_json", "plain json"),
    ("redirected", "echo"),
    ("expired_once", "echo"),
    ("resumed", "resumed"),
    ("failing", "HTTP 500: the tool fell over"),
    ("not_json", "the server sent an invalid message"),
    ("too_big", f"exceeds {MAX_FRAME - 64} bytes"),
    ("cut", "the stream broke"),
    ("silent", f"within {HEAD_TIMEOUT}s"),
]


def text_or_error(reply: dict[str, Any]) -> str:
    if "error" in reply:
        return str(reply["error"]["message"])
    return str(reply["result"]["content"][0]["text"])


def test_every_answer_to_a_forwarded_call_ends_as_the_editor_expects(
    mcpd_env, run_daemon, editors, tmp_path
):
    server = ScriptedServer()
    with python_server(tmp_path) as good, scripted(server) as peer:
        config = (
            f"[daemon]\nmax_frame_size = {MAX_FRAME}\n"
            f'[servers.victim]\nurl = "{peer.url}/mcp"\ntimeout = {HEAD_TIMEOUT}\n'
        )
        daemon, editor = victim_beside_good(mcpd_env, run_daemon, editors, config, good.url)
        with calling_all_along(editors, "good") as healthy:
            for tool, expected in CASES:
                warm_up(editor)  # the call below goes on the connection this one used
                before = len(server.ports)
                reply = editor.call(tool)
                assert server.ports[before] == server.ports[before - 1], tool
                assert expected in text_or_error(reply), (tool, reply)
                if tool == "with_tail":
                    note = editor.wait_for_notification("notifications/message")
                    assert note["params"]["data"] == "after the answer"
        healthy.check()
        warm_up(editor)
        assert status_of(daemon, "victim")["state"] == "connected"
        assert server.sessions >= 3  # anew after the 404, the cut and the silence
        assert daemon.process.poll() is None


def warm_up(editor, timeout: float = 20) -> None:
    """Call `echo` until it answers (the session may be reconnecting)."""
    deadline = time.monotonic() + timeout
    while text_or_error(reply := editor.call("echo")) != "echo":
        assert time.monotonic() < deadline, reply
        time.sleep(0.1)
