"""Per-server tool filters, sans-IO: the filter itself, its validation in the
config, and the multiplexer's hooks (lists, calls, the list cache, a new
filter at reload) in both eras of the protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mcpd.config import ServerEntry, ToolFilterSettings, parse
from mcpd.upstream import jsonrpc, modern
from mcpd.upstream.mux import Multiplexer, Routing
from mcpd.upstream.toolfilter import (
    ToolFilter,
    check_patterns,
    listens_for_tools,
    only_filter_changed,
    refused_call,
    shown,
)

INIT_RESULT: dict[str, Any] = {
    "protocolVersion": "2025-11-25",
    "capabilities": {"tools": {"listChanged": True}},
    "serverInfo": {"name": "upstream", "version": "1"},
}
DISCOVERED: dict[str, Any] = {
    "resultType": "complete",
    "supportedVersions": ["2026-07-28"],
    "capabilities": {"tools": {"listChanged": True}},
}
CHANGED = jsonrpc.notification("notifications/tools/list_changed")


def tools(*names: str, **extra: Any) -> dict[str, Any]:
    listed = [{"name": name, "inputSchema": {"type": "object"}} for name in names]
    return {"tools": listed, **extra}


def names(result: dict[str, Any]) -> list[str]:
    return [tool["name"] for tool in result["tools"]]


# --- The filter ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allow", "deny", "shown_names"),
    [
        ((), (), ["echo", "Echo", "delete_issue", "search.web", "fs/read", "x"]),
        (("echo",), (), ["echo"]),
        ((), ("echo",), ["Echo", "delete_issue", "search.web", "fs/read", "x"]),  # case-sensitive
        (("*",), ("delete_*",), ["echo", "Echo", "search.web", "fs/read", "x"]),
        (("search.*", "fs/*"), (), ["search.web", "fs/read"]),
        (("search?web",), (), ["search.web"]),  # ? is one character, . is literal elsewhere
        (("[Ee]cho",), ("Echo",), ["echo"]),  # deny wins
        (("[!e]*",), (), ["Echo", "delete_issue", "search.web", "fs/read", "x"]),
        (("echo",), ("*",), []),
        (("ech",), (), []),  # a name is matched whole
    ],
)
def test_allow_and_deny_with_names_and_shell_patterns(allow, deny, shown_names):
    tool_filter = ToolFilter("s", allow, deny)
    every = ["echo", "Echo", "delete_issue", "search.web", "fs/read", "x"]
    assert [name for name in every if tool_filter.allows(name)] == shown_names
    assert names(tool_filter.shown(tools(*every))) == shown_names


def test_a_result_with_nothing_left_out_is_the_same_object():
    result = tools("a", "b", nextCursor="2")
    assert ToolFilter().shown(result) is result
    assert ToolFilter("s", deny=("z",)).shown(result) is result
    filtered = ToolFilter("s", deny=("a",)).shown(result)
    assert filtered == {"tools": result["tools"][1:], "nextCursor": "2"}
    assert names(result) == ["a", "b"]  # the original is untouched (the cache holds it)


@pytest.mark.parametrize("listed", [{"tools": "nope"}, {}, {"tools": [1, {"title": "x"}]}, None])
def test_results_of_unexpected_shapes_pass_as_they_are(listed):
    assert ToolFilter("s", allow=("a",)).shown(listed) == listed


def test_the_refusal_names_the_tool_the_server_and_the_key_to_change():
    denied = ToolFilter("linear", allow=("*",), deny=("delete_*",)).refusal("delete_issue")
    assert denied is not None
    assert "tool 'delete_issue' is filtered out by mcpd's config for server 'linear'" in denied
    assert "tools.deny (pattern 'delete_*') in [servers.linear]" in denied
    assert "mcpctl reload" in denied
    exact = ToolFilter("linear", deny=("rm",)).refusal("rm")
    assert exact is not None
    assert "matches tools.deny in [servers.linear]" in exact
    missing = ToolFilter("linear", allow=("search",)).refusal("create")
    assert missing is not None
    assert "not in tools.allow in [servers.linear]" in missing
    assert ToolFilter("linear", allow=("search",)).refusal("search") is None


def test_only_calls_of_named_filtered_tools_are_refused():
    tool_filter = ToolFilter("s", deny=("x",))
    assert refused_call(tool_filter, jsonrpc.request(1, "tools/call", {"name": "x"}))
    assert refused_call(tool_filter, jsonrpc.request(1, "tools/call", {"name": "y"})) is None
    assert refused_call(tool_filter, jsonrpc.request(1, "tools/call", {"name": 5})) is None
    assert refused_call(tool_filter, jsonrpc.request(1, "tools/call")) is None
    assert refused_call(tool_filter, jsonrpc.request(1, "prompts/get", {"name": "x"})) is None


def test_only_tool_lists_are_filtered():
    tool_filter = ToolFilter("s", deny=("x",))
    result = jsonrpc.result(1, tools("x", "y"))
    assert names(shown(tool_filter, "tools/list", result)["result"]) == ["y"]
    assert shown(tool_filter, "prompts/list", result) is result
    error = jsonrpc.error(1, -32603, "boom")
    assert shown(tool_filter, "tools/list", error) is error


def test_a_listen_request_is_known_by_what_it_asks_for():
    def listen(wanted: Any) -> dict[str, Any]:
        return jsonrpc.request(1, "subscriptions/listen", {"notifications": wanted})

    assert listens_for_tools(listen({"toolsListChanged": True}))
    assert not listens_for_tools(listen({"promptsListChanged": True}))
    assert not listens_for_tools(listen("tools"))
    assert not listens_for_tools(jsonrpc.request(1, "tools/list", {}))


# --- The config ----------------------------------------------------------------------


def entry(extra: str, env: dict[str, str] | None = None) -> ServerEntry:
    text = f'[servers.s]\nurl = "https://mcp.example.com/mcp"\n{extra}\n'
    return parse(text, Path("config.toml"), env or {}).servers["s"]


def test_the_filter_is_read_from_the_config():
    assert entry("").config is not None
    assert entry("").config.tools == ToolFilterSettings()  # type: ignore[union-attr]
    read = entry('tools = { allow = ["search_*", "get"], deny = ["{env:BAD}"] }', {"BAD": "rm"})
    assert read.error is None
    assert read.config is not None
    assert read.config.tools == ToolFilterSettings(("search_*", "get"), ("rm",))
    assert ToolFilter.of("s", read.config.tools) == ToolFilter("s", ("search_*", "get"), ("rm",))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('tools = { alow = ["x"] }', "unknown field `alow` - at `servers.s.tools`; tools takes"),
        ("tools = { allow = [1] }", "Expected `str`, got `int` - at `servers.s.tools.allow[0]`"),
        ('tools = { deny = "x" }', "Expected `array`, got `str` - at `servers.s.tools.deny`"),
        ('tools = ["x"]', "Expected `object`, got `array` - at `servers.s.tools`"),
        ('tools = { deny = ["a", ""] }', "tools.deny[1] is empty"),
        ('tools = { allow = [" x "] }', "tools.allow[0] ('x') has spaces around it"),
        ('tools = { allow = ["a\\nb"] }', "tools.allow[0] has a line break"),
    ],
)
def test_a_bad_filter_makes_the_server_failed_naming_the_key(extra, message):
    bad = entry(extra)
    assert bad.config is None
    assert bad.error is not None
    assert bad.error.startswith("server 's': ")
    assert message in bad.error


def test_patterns_are_checked_before_use():
    check_patterns(("a", "b*"), ("[c]",))
    with pytest.raises(ValueError, match=r"tools\.allow\[0\] is empty"):
        check_patterns(("",), ())


def test_a_change_of_the_filter_alone_is_applied_in_place():
    before = entry('tools = { deny = ["x"] }')
    assert only_filter_changed(before, entry('tools = { deny = ["y"] }'))
    assert only_filter_changed(before, entry(""))
    assert not only_filter_changed(before, entry('tools = { deny = ["x"] }'))  # no change
    assert not only_filter_changed(before, entry('tools = { deny = ["y"] }\ntimeout = 5'))
    assert not only_filter_changed(before, entry('tools = { deny = [""] }'))  # now failed


# --- The multiplexer, a server of the handshake era -----------------------------------------


def legacy_mux(tool_filter: ToolFilter) -> Multiplexer:
    mux = Multiplexer(lambda: 100.0)
    mux.initialize_result = dict(INIT_RESULT)
    mux.tool_filter = tool_filter
    return mux


def join(mux: Multiplexer, editor: int) -> None:
    mux.attach(editor)
    params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "e"}}
    assert mux.from_editor(editor, jsonrpc.request(0, "initialize", params)).upstream == []


def listed(mux: Multiplexer, editor: int, result: dict[str, Any], cursor: str | None = None):
    params = {"cursor": cursor} if cursor else {}
    routing = mux.from_editor(editor, jsonrpc.request("l", "tools/list", params))
    if not routing.upstream:  # answered by mcpd (a modern server's cache)
        [(_, answer)] = routing.editors
        return answer["result"]
    [sent] = routing.upstream
    [(to, answer)] = mux.from_upstream(jsonrpc.result(sent["id"], result)).editors
    assert to == editor
    assert answer["id"] == "l"
    return answer["result"]


def test_every_page_of_a_list_loses_the_filtered_tools():
    mux = legacy_mux(ToolFilter("s", deny=("rm*",)))
    join(mux, 1)
    first = listed(mux, 1, tools("ls", "rm", nextCursor="2"))
    assert first == tools("ls", nextCursor="2")
    second = listed(mux, 1, tools("rmdir", "cat"), cursor="2")
    assert names(second) == ["cat"]


def test_mcpds_own_list_is_filtered_too():
    mux = legacy_mux(ToolFilter("s", allow=("ls",)))
    own = mux.own_request("tools/list")
    [(upstream_id, answer)] = mux.from_upstream(jsonrpc.result(own["id"], tools("ls", "rm"))).own
    assert upstream_id == own["id"]
    assert names(answer["result"]) == ["ls"]


def test_a_call_of_a_filtered_tool_is_refused_without_reaching_the_server():
    mux = legacy_mux(ToolFilter("s", deny=("rm",)))
    join(mux, 1)
    routing = mux.from_editor(1, jsonrpc.request(7, "tools/call", {"name": "rm"}))
    assert routing.upstream == []
    assert routing.cancel == []
    [(to, error)] = routing.editors
    assert to == 1
    assert error["id"] == 7
    assert error["error"]["code"] == jsonrpc.INVALID_PARAMS
    assert "filtered out by mcpd's config for server 's'" in error["error"]["message"]
    assert mux.editors[1].in_flight == set()
    [sent] = mux.from_editor(1, jsonrpc.request(8, "tools/call", {"name": "ls"})).upstream
    assert sent["params"] == {"name": "ls"}


def test_list_changes_still_reach_every_editor():
    mux = legacy_mux(ToolFilter("s", deny=("rm",)))
    join(mux, 1)
    join(mux, 2)
    assert mux.from_upstream(CHANGED).editors == [(1, CHANGED), (2, CHANGED)]


def test_a_new_filter_applies_to_later_lists_and_calls_and_editors_are_told():
    mux = legacy_mux(ToolFilter("s", deny=("rm",)))
    join(mux, 1)
    join(mux, 2)
    mux.attach(3)  # not initialized: not told
    assert names(listed(mux, 1, tools("ls", "rm"))) == ["ls"]
    routing = mux.set_tool_filter(ToolFilter("s", deny=("ls",)))
    assert routing == Routing(editors=[(1, CHANGED), (2, CHANGED)])
    assert mux.set_tool_filter(ToolFilter("s", deny=("ls",))) == Routing()  # the same: silent
    assert names(listed(mux, 2, tools("ls", "rm"))) == ["rm"]
    assert len(mux.from_editor(1, jsonrpc.request(1, "tools/call", {"name": "rm"})).upstream) == 1
    assert mux.from_editor(1, jsonrpc.request(2, "tools/call", {"name": "ls"})).upstream == []


# --- The multiplexer, a 2026-07-28 server -------------------------------------------------


def modern_mux(tool_filter: ToolFilter) -> Multiplexer:
    mux = Multiplexer(lambda: 100.0)
    mux.modern = DISCOVERED
    mux.initialize_result = modern.legacy_initialize_result(DISCOVERED)
    mux.tool_filter = tool_filter
    return mux


def test_the_cache_keeps_the_servers_list_and_every_answer_from_it_is_filtered():
    mux = modern_mux(ToolFilter("s", deny=("rm",)))
    join(mux, 1)
    join(mux, 2)
    fresh = tools("ls", "rm", resultType="complete", ttlMs=60000)
    assert names(listed(mux, 1, fresh)) == ["ls"]
    assert mux.cache.get(("tools/list", None), 100.0) == fresh
    cached = mux.from_editor(2, jsonrpc.request(5, "tools/list", {}))
    assert cached.upstream == []
    assert [(e, names(m["result"])) for e, m in cached.editors] == [(2, ["ls"])]
    # A new filter shows the cached list anew, without asking the server.
    assert mux.set_tool_filter(ToolFilter("s", deny=("ls",))).editors == [
        (1, CHANGED),
        (2, CHANGED),
    ]
    again = mux.from_editor(1, jsonrpc.request(6, "tools/list", {}))
    assert again.upstream == []
    assert [(e, names(m["result"])) for e, m in again.editors] == [(1, ["rm"])]


def test_editors_sharing_a_list_in_flight_all_get_it_filtered():
    mux = modern_mux(ToolFilter("s", allow=("ls",)))
    join(mux, 1)
    join(mux, 2)
    [sent] = mux.from_editor(1, jsonrpc.request("a", "tools/list", {})).upstream
    assert mux.from_editor(2, jsonrpc.request("b", "tools/list", {})) == Routing()
    answered = mux.from_upstream(jsonrpc.result(sent["id"], tools("ls", "rm"))).editors
    assert [(e, m["id"], names(m["result"])) for e, m in answered] == [
        (1, "a", ["ls"]),
        (2, "b", ["ls"]),
    ]


def test_invalid_tools_and_filtered_tools_are_both_left_out():
    mux = modern_mux(ToolFilter("s", deny=("rm",)))
    join(mux, 1)
    bad = {
        "name": "bad",
        "inputSchema": {
            "type": "object",
            "properties": {"r": {"type": "object", "x-mcp-header": "R"}},
        },
    }
    sent = mux.from_editor(1, jsonrpc.request("a", "tools/list", {})).upstream[0]
    routing = mux.from_upstream(
        jsonrpc.result(sent["id"], {"tools": [*tools("ls", "rm")["tools"], bad]})
    )
    assert names(routing.editors[0][1]["result"]) == ["ls"]
    assert routing.problem is not None
    assert "'bad' left out" in routing.problem


def test_calls_from_older_and_2026_editors_are_refused_alike():
    mux = modern_mux(ToolFilter("s", deny=("rm",)))
    join(mux, 1)
    mux.attach(2)
    assert mux.from_editor(2, jsonrpc.request("d", "server/discover", {})).editors
    for editor in (1, 2):
        routing = mux.from_editor(editor, jsonrpc.request(3, "tools/call", {"name": "rm"}))
        assert routing.upstream == []
        assert routing.editors[0][1]["error"]["code"] == jsonrpc.INVALID_PARAMS


def test_a_2026_editor_hears_of_a_new_filter_on_the_listen_streams_that_asked():
    mux = modern_mux(ToolFilter("s", deny=("rm",)))
    join(mux, 1)
    mux.attach(2)
    mux.from_editor(2, jsonrpc.request("d", "server/discover", {}))
    for request_id, wanted in (
        ("tools", {"toolsListChanged": True}),
        ("res", {"resourcesListChanged": True}),
    ):
        params = {"notifications": wanted}
        assert mux.from_editor(
            2, jsonrpc.request(request_id, "subscriptions/listen", params)
        ).upstream
    routing = mux.set_tool_filter(ToolFilter("s"))
    assert routing.editors == [
        (1, CHANGED),
        (
            2,
            {**CHANGED, "params": {"_meta": {modern.META_SUBSCRIPTION: "tools"}}},
        ),
    ]
