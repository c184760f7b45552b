"""The control protocol on the real socket, with frames mcpctl would never send."""

from __future__ import annotations

import struct

import msgspec
import pytest

from mcpd.protocol import Cancel, ErrorCode, Event, HelloParams, Response


def _assert_error(message, code: ErrorCode, request_id=None) -> str:
    assert isinstance(message, Response), message
    assert message.error is not None, message
    assert message.error.code == code, message.error
    if request_id is not None:
        assert message.id == request_id
    return message.error.message


def test_hello_reports_version_pid_and_frame_limit(run_daemon, raw_client, mcpd_env):
    daemon = run_daemon()
    client = raw_client(mcpd_env.socket)
    hello = client.hello()
    assert hello.error is None
    assert hello.result["protocol"] == 1
    assert hello.result["pid"] == daemon.pid
    assert hello.result["max_frame_size"] == 16 * 1024 * 1024


def test_protocol_mismatch_gets_a_clear_error(run_daemon, raw_client, mcpd_env):
    run_daemon()
    client = raw_client(mcpd_env.socket)
    request_id = client.request("hello", HelloParams(99, "future-plugin"))
    reply = client.receive()
    text = _assert_error(reply, ErrorCode.PROTOCOL_MISMATCH, request_id)
    assert "future-plugin speaks protocol 99" in text
    assert "protocol 1" in text
    assert "upgrade mcpd" in text  # the daemon is the older side
    assert reply.error.data == {"supported": [1]}
    client.request("hello", HelloParams(0, "old-plugin"))
    assert "upgrade old-plugin" in client.receive().error.message
    assert client.hello().error is None  # still open, and a right hello succeeds


def test_requests_before_hello_are_refused_but_the_connection_stays(
    run_daemon, raw_client, mcpd_env
):
    run_daemon()
    client = raw_client(mcpd_env.socket)
    request_id = client.request("status")
    _assert_error(client.receive(), ErrorCode.HELLO_REQUIRED, request_id)
    assert client.hello().error is None
    client.request("status")
    assert client.receive().result == {"servers": []}


def test_unknown_method_keeps_the_connection_open(run_daemon, raw_client, mcpd_env):
    run_daemon()
    client = raw_client(mcpd_env.socket)
    client.hello()
    request_id = client.request("frobnicate")
    text = _assert_error(client.receive(), ErrorCode.METHOD_NOT_FOUND, request_id)
    assert "frobnicate" in text
    assert "status" in text
    client.request("status")
    assert client.receive().error is None


def test_invalid_params_name_the_field(run_daemon, raw_client, mcpd_env):
    run_daemon()
    client = raw_client(mcpd_env.socket)
    client.hello()
    request_id = client.request("status", {"server": 42})
    text = _assert_error(client.receive(), ErrorCode.INVALID_PARAMS, request_id)
    assert "server" in text
    client.request("status")
    assert client.receive().error is None


def test_pipelined_requests_are_all_answered_by_id(run_daemon, raw_client, mcpd_env):
    run_daemon()
    client = raw_client(mcpd_env.socket)
    client.hello()
    ids = {client.request("status") for _ in range(50)}
    answered = {client.receive().id for _ in range(50)}
    assert answered == ids


@pytest.mark.parametrize(
    ("garbage", "code"),
    [
        (b"\xc1", ErrorCode.MALFORMED_MESSAGE),  # 0xc1 is never valid msgpack
        (msgspec.msgpack.encode({"type": "request", "id": "x"}), ErrorCode.INVALID_REQUEST),
        (msgspec.msgpack.encode({"type": "bogus"}), ErrorCode.INVALID_REQUEST),
        (msgspec.msgpack.encode([1, 2, 3]), ErrorCode.INVALID_REQUEST),
    ],
)
def test_malformed_frame_gets_an_error_then_the_connection_closes(
    run_daemon, raw_client, mcpd_env, garbage, code
):
    daemon = run_daemon()
    bad = raw_client(mcpd_env.socket)
    good = raw_client(mcpd_env.socket)
    good.hello()
    bad.hello()
    bad.send_bytes(struct.pack(">I", len(garbage)) + garbage)
    _assert_error(bad.receive(), code)
    assert bad.is_closed_by_peer()
    good.request("status")
    assert good.receive().error is None
    assert daemon.process.poll() is None


def test_oversized_frame_is_refused_before_its_body_is_read(run_daemon, raw_client, mcpd_env):
    mcpd_env.write_config("[daemon]\nmax_frame_size = 4096\n")
    run_daemon()
    client = raw_client(mcpd_env.socket)
    assert client.hello().result["max_frame_size"] == 4096
    # Announce 1 GiB and send none of it: the daemon must answer at once.
    client.send_bytes(struct.pack(">I", 1 << 30))
    text = _assert_error(client.receive(), ErrorCode.FRAME_TOO_LARGE)
    assert "1073741824" in text
    assert "4096" in text
    assert client.is_closed_by_peer()
    other = raw_client(mcpd_env.socket)
    assert other.hello().error is None


def test_a_client_sending_responses_or_events_is_disconnected(run_daemon, raw_client, mcpd_env):
    run_daemon()
    client = raw_client(mcpd_env.socket)
    client.hello()
    client.send(Event("state", {}))
    _assert_error(client.receive(), ErrorCode.INVALID_REQUEST)
    assert client.is_closed_by_peer()


def test_duplicate_in_flight_ids_break_the_protocol(run_daemon, raw_client, mcpd_env):
    """Two requests with one id, sent back to back while the first is in flight."""
    run_daemon()
    client = raw_client(mcpd_env.socket)
    client.hello()
    # rotate_key does file I/O in a worker thread, so it is still in flight when
    # the second frame (sent in the same write) is read.
    frames = b"".join(
        _frame(
            {"type": "request", "id": 7, "method": "rotate_key", "params": {}},
        )
        for _ in range(2)
    )
    client.send_bytes(frames)
    replies = [client.receive(), client.receive()]
    errors = [r for r in replies if r.error is not None]
    assert [(e.id, e.error.code) for e in errors] == [(None, ErrorCode.INVALID_REQUEST)]
    assert "already in flight" in errors[0].error.message
    # The request in flight still gets its own, single answer.
    assert [r.id for r in replies if r.error is None] == [7]


def test_a_status_with_the_id_of_a_request_in_flight_breaks_the_protocol(
    run_daemon, raw_client, mcpd_env, silent
):
    """`status` is answered where its frame is read, in the socket's readiness
    callback: the ids in flight are checked there too."""
    mcpd_env.write_config(f'[servers.mute]\nurl = "{silent.url("mute")}"\n')
    run_daemon()
    client = raw_client(mcpd_env.socket)
    client.hello()
    # In flight until the silent server connects, which it never does.
    client.send_bytes(
        _frame({"type": "request", "id": 7, "method": "tools", "params": {"server": "mute"}})
    )
    # Its answer means the request before it is in flight, and the daemon is
    # back to reading in the callback.
    client.send_bytes(_frame({"type": "request", "id": 8, "method": "status", "params": {}}))
    answered = client.receive()
    assert (answered.id, answered.error) == (8, None)
    client.send_bytes(_frame({"type": "request", "id": 7, "method": "status", "params": {}}))
    reply = client.receive()
    assert _assert_error(reply, ErrorCode.INVALID_REQUEST) == (
        "request id 7 is already in flight; ids must be unique"
    )
    assert reply.id is None


def _frame(message: dict) -> bytes:
    body = msgspec.msgpack.encode(message)
    return struct.pack(">I", len(body)) + body


def test_cancel_of_an_unknown_id_is_ignored(run_daemon, raw_client, mcpd_env):
    run_daemon()
    client = raw_client(mcpd_env.socket)
    client.hello()
    client.send(Cancel(12345))
    client.request("status")
    assert client.receive().error is None


def test_half_a_frame_then_close_harms_nobody(run_daemon, raw_client, mcpd_env):
    daemon = run_daemon()
    client = raw_client(mcpd_env.socket)
    client.send_bytes(struct.pack(">I", 100) + b"\x81")
    client.close()
    daemon.wait_for_log("client closed mid-frame")
    assert raw_client(mcpd_env.socket).hello().error is None


def test_subscribe_pushes_state_events_and_removed(run_daemon, raw_client, mcpd_env, silent):
    mcpd_env.write_config(
        f'[servers.a]\nurl = "{silent.url("a")}"\n[servers.b]\nurl = "{silent.url("b")}"\n'
    )
    daemon = run_daemon()
    watcher = raw_client(mcpd_env.socket)
    watcher.hello()
    watcher.request("subscribe", {"servers": ["a"]})
    initial = watcher.receive()
    assert [s["name"] for s in initial.result["servers"]] == ["a"]
    mcpd_env.write_config(f'[servers.b]\nurl = "{silent.url("other")}"\n')
    assert daemon.mcpctl("reload").returncode == 0
    state = watcher.receive()
    assert isinstance(state, Event)
    assert state.name == "state"
    assert state.data["server"]["name"] == "a"
    assert state.data["server"]["state"] == "disabled"
    removed = watcher.receive()
    assert isinstance(removed, Event)
    assert (removed.name, removed.data) == ("removed", {"server": "a"})


def test_an_added_server_is_announced_before_its_first_state_change(
    run_daemon, raw_client, mcpd_env, silent
):
    daemon = run_daemon()
    watcher = raw_client(mcpd_env.socket)
    watcher.hello()
    watcher.request("subscribe")
    assert watcher.receive().result == {"servers": []}
    mcpd_env.write_config(
        f'[servers.on]\nurl = "{silent.url("on")}"\n'
        '[servers.off]\nurl = "https://off.example/mcp"\nenabled = false\n'
    )
    assert daemon.mcpctl("reload").returncode == 0
    events = [watcher.receive() for _ in range(3)]
    summary = [(e.name, e.data["server"]["name"], e.data["server"]["state"]) for e in events]
    assert summary == [
        ("added", "off", "disabled"),
        ("added", "on", "disabled"),
        ("state", "on", "connecting"),
    ]


def test_subscribe_to_an_unknown_server_is_an_error(run_daemon, raw_client, mcpd_env):
    run_daemon()
    client = raw_client(mcpd_env.socket)
    client.hello()
    request_id = client.request("subscribe", {"servers": ["ghost"]})
    _assert_error(client.receive(), ErrorCode.UNKNOWN_SERVER, request_id)


def test_a_response_over_the_frame_limit_becomes_an_error(run_daemon, raw_client, mcpd_env):
    servers = "".join(
        f'[servers.s{i}]\nurl = "https://s{i}.example/mcp"\nenabled = false\n' for i in range(40)
    )
    mcpd_env.write_config("[daemon]\nmax_frame_size = 1024\n" + servers)
    run_daemon()
    client = raw_client(mcpd_env.socket)
    client.hello()
    request_id = client.request("status")
    text = _assert_error(client.receive(), ErrorCode.FRAME_TOO_LARGE, request_id)
    assert "max_frame_size" in text
    client.request("status", {"server": "s1"})
    assert client.receive().result["servers"][0]["name"] == "s1"


def test_a_reloaded_frame_limit_applies_to_open_connections(run_daemon, raw_client, mcpd_env):
    run_daemon()
    client = raw_client(mcpd_env.socket)
    client.hello()
    mcpd_env.write_config("[daemon]\nmax_frame_size = 2048\n")
    client.request("reload")
    assert client.receive().error is None
    client.send_bytes(struct.pack(">I", 4096))
    _assert_error(client.receive(), ErrorCode.FRAME_TOO_LARGE)


def test_a_cancelled_reload_still_applies_completely(run_daemon, raw_client, mcpd_env):
    """The cancel is sent in the same write as the reload, so it arrives while
    the config file is being read in a worker thread."""
    daemon = run_daemon()
    servers = "".join(
        f'[servers.s{i}]\nurl = "https://s{i}.example/mcp"\nenabled = false\n' for i in range(300)
    )
    mcpd_env.write_config(servers)
    client = raw_client(mcpd_env.socket)
    client.hello()
    client.send_bytes(
        _frame({"type": "request", "id": 5, "method": "reload"})
        + _frame({"type": "cancel", "id": 5})
    )
    reply = client.receive()
    assert reply.id == 5
    assert reply.error is None, reply.error
    assert len(reply.result["added"]) == 300
    client.request("status")
    assert len(client.receive().result["servers"]) == 300
    mcpd_env.write_config("")
    assert daemon.mcpctl("reload").stdout.startswith("reloaded; removed: s0, s1")
