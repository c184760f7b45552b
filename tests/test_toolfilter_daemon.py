"""Per-server tool filters end to end: a real daemon, real `mcpctl stdio`
bridges standing in for editors, `mcpctl tools` and `mcpctl call`, and the
official Python SDK's server (tests/peers/python_server.py) in both eras: the
handshake era, and 2026-07-28 with `--modern` (which logs every POST as
`modern: METHOD NAME`); the list cache against the TypeScript SDK v2's server,
whose lists carry `ttlMs`. The sans-IO rules are in tests/test_toolfilter.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from harness import server_config, status_of, wait_state
from real_peers import python_server, stateless_server

FILTERED = "filtered out by mcpd's config for server 'py'"


@pytest.fixture(params=[False, True], ids=["handshake-era", "2026-07-28"])
def era(request: pytest.FixtureRequest) -> bool:
    """Whether the peer speaks 2026-07-28."""
    modern: bool = request.param
    return modern


@pytest.fixture
def peer(tmp_path, era):
    with python_server(tmp_path, modern=era) as peer:
        yield peer


def start(mcpd_env, run_daemon, peer, extra: str):
    mcpd_env.write_config(server_config("py", peer.url, extra))
    daemon = run_daemon()
    wait_state(daemon, "py", "connected")
    return daemon


def listed(editor) -> list[str]:
    reply = editor.request("tools/list")
    assert "result" in reply, reply
    return [tool["name"] for tool in reply["result"]["tools"]]


def refused(reply: dict[str, Any], key: str) -> None:
    assert "error" in reply, reply
    assert reply["error"]["code"] == -32602
    assert FILTERED in reply["error"]["message"]
    assert key in reply["error"]["message"]


def modern_calls(peer) -> list[str]:
    return [line for line in peer.log.splitlines() if line.startswith("modern: tools/call")]


def counter(editor) -> str:
    reply = editor.request("resources/read", {"uri": "test://counter"})
    text: str = reply["result"]["contents"][0]["text"]
    return text


def test_filtered_tools_are_neither_listed_nor_called(
    mcpd_env, run_daemon, raw_client, peer, editors, era
):
    daemon = start(mcpd_env, run_daemon, peer, 'tools = { deny = ["slow", "touch", "ex*"] }\n')
    first, second = editors("py"), editors("py")
    first.initialize()
    second.initialize()
    for editor in (first, second):
        names = listed(editor)
        assert {"echo", "add", "toggle_tool"} <= set(names)
        assert not {"slow", "touch"} & set(names)

    shown = json.loads(daemon.mcpctl("tools", "py", "--json").stdout)["tools"]
    assert {"echo", "add"} <= {t["name"] for t in shown}
    assert not {"slow", "touch"} & {t["name"] for t in shown}
    table = daemon.mcpctl("tools", "py").stdout.splitlines()
    assert not [line for line in table if line.split()[:1] in (["slow"], ["touch"])]

    # Refused by mcpd, from an editor and from mcpctl call: the server never sees it.
    refused(first.call("slow", {"seconds": 0}), "it matches tools.deny in [servers.py]")
    refused(first.call("touch"), "remove that entry from tools.deny")
    called = daemon.mcpctl("call", "py", "touch")
    assert called.returncode == 1
    assert called.stderr.startswith(f"mcpctl: tool 'touch' is {FILTERED}"), called.stderr
    assert "tools.deny" in called.stderr
    # The control protocol's own `call` method refuses it alike.
    control = raw_client(mcpd_env.socket)
    control.hello()
    control.request("call", {"server": "py", "tool": "touch", "arguments": {}})
    answer = control.receive()
    assert answer.error is not None
    assert answer.error.code == -32602
    assert FILTERED in answer.error.message
    assert counter(second) == "0"
    assert "slow:" not in peer.log
    if era:
        assert not [c for c in modern_calls(peer) if c.split()[-1] in ("slow", "touch")]

    # Unfiltered tools work, both ways.
    assert first.call("echo", {"text": "kept"})["result"]["content"][0]["text"] == "kept"
    echoed = daemon.mcpctl("call", "py", "echo", '{"text": "through mcpctl"}')
    assert (echoed.returncode, echoed.stdout) == (0, "through mcpctl\n")
    if era:
        assert "modern: tools/call echo" in modern_calls(peer)

    # A list change still reaches every editor; the list after it is filtered
    # (toggle_tool adds `extra`, which `ex*` hides).
    first.call("toggle_tool")
    for editor in (first, second):
        editor.wait_for_notification("notifications/tools/list_changed")
        assert "extra" not in listed(editor)
    refused(second.call("extra"), "tools.deny (pattern 'ex*')")


def test_an_allow_list_holds_for_an_editors_own_session(mcpd_env, run_daemon, peer, editors, era):
    extra = 'session = "per-client"\ntools = { allow = ["echo", "a?d", "log*"], deny = ["log"] }\n'
    daemon = start(mcpd_env, run_daemon, peer, extra)
    editor = editors("py")
    editor.initialize()
    assert sorted(listed(editor)) == ["add", "echo"]
    refused(editor.call("headers"), "not in tools.allow")
    refused(editor.call("log", {"message": "x"}), "tools.deny")
    assert editor.call("add", {"a": 2, "b": 3})["result"]["structuredContent"] == {"sum": 5}
    assert sorted(
        t["name"] for t in json.loads(daemon.mcpctl("tools", "py", "--json").stdout)["tools"]
    ) == [
        "add",
        "echo",
    ]
    if era:
        assert [c.split()[-1] for c in modern_calls(peer)] == ["add"]


def test_a_reload_that_changes_the_filter_applies_in_place_and_tells_editors(
    mcpd_env, run_daemon, peer, editors, era
):
    daemon = start(mcpd_env, run_daemon, peer, 'tools = { deny = ["echo"] }\n')
    editor = editors("py")
    editor.initialize()
    assert "echo" not in listed(editor)
    refused(editor.call("echo", {"text": "x"}), "tools.deny")
    since = status_of(daemon, "py")["since"]

    mcpd_env.write_config(server_config("py", peer.url, 'tools = { allow = ["echo", "add"] }\n'))
    reloaded = daemon.mcpctl("reload")
    assert reloaded.returncode == 0, reloaded.stderr
    assert reloaded.stdout.strip() == "reloaded; updated: py"
    editor.wait_for_notification("notifications/tools/list_changed")
    assert sorted(listed(editor)) == ["add", "echo"]
    assert editor.call("echo", {"text": "now"})["result"]["content"][0]["text"] == "now"
    refused(editor.call("slow", {"seconds": 0}), "not in tools.allow")
    # Not restarted: the same connection, and the editor stayed attached.
    assert status_of(daemon, "py")["since"] == since
    assert "reconnecting" not in editor.stderr

    # A change of anything else restarts the server as before.
    mcpd_env.write_config(server_config("py", peer.url, "export_token = true\n"))
    assert daemon.mcpctl("reload").stdout.strip() == "reloaded; restarted: py"
    wait_state(daemon, "py", "connected")
    assert "slow" in listed(editor)


# --- The list cache (a 2026-07-28 server whose lists carry ttlMs) --------------------------


@pytest.fixture
def ts_peer(tmp_path):
    with stateless_server(tmp_path) as peer:
        yield peer


def upstream_lists(ts_peer) -> int:
    methods = [rpc["method"] for request in ts_peer.requests() for rpc in request.get("rpc") or []]
    return methods.count("tools/list")


def test_cached_lists_are_filtered_with_the_filter_in_force(mcpd_env, run_daemon, ts_peer, editors):
    mcpd_env.write_config(server_config("ts", ts_peer.url, 'tools = { deny = ["count"] }\n'))
    daemon = run_daemon()
    wait_state(daemon, "ts", "connected")
    first, second = editors("ts"), editors("ts")
    first.initialize()
    second.initialize()
    before = upstream_lists(ts_peer)
    for editor in (first, second, first):
        names = listed(editor)
        assert "greet" in names
        assert "count" not in names
    assert upstream_lists(ts_peer) <= before + 1  # one went upstream; the cache answered

    mcpd_env.write_config(server_config("ts", ts_peer.url, 'tools = { deny = ["greet"] }\n'))
    assert daemon.mcpctl("reload").stdout.strip() == "reloaded; updated: ts"
    cached = upstream_lists(ts_peer)
    for editor in (first, second):
        editor.wait_for_notification("notifications/tools/list_changed")
        names = listed(editor)
        assert "count" in names
        assert "greet" not in names
    assert upstream_lists(ts_peer) == cached  # the same cached page, shown anew
    reply = second.call("greet", {"name": "x"})
    assert "filtered out by mcpd's config for server 'ts'" in reply["error"]["message"]
    assert not [
        r
        for r in ts_peer.requests()
        if r.get("mcp_method") == "tools/call" and r.get("mcp_name") == "greet"
    ]
