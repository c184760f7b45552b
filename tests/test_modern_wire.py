"""The 2026-07-28 revision's client-side rules, sans-IO: request metadata and
headers, tool screening, the discovery probe, list caching, and the input
rounds that turn `input_required` results into requests to older editors."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from mcpd.upstream import jsonrpc, modern
from mcpd.upstream.mux import MAX_INPUT_ROUNDS, Multiplexer, Routing

DISCOVERED: dict[str, Any] = {
    "resultType": "complete",
    "supportedVersions": ["2026-07-28"],
    "capabilities": {"tools": {"listChanged": True}, "resources": {"subscribe": True}},
    "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "srv", "version": "2"}},
    "instructions": "be brief",
}
FORM = {"elicitation": {}}
EDITOR_INFO = {"name": "editor", "version": "1"}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def modern_mux(clock: Clock | None = None) -> Multiplexer:
    mux = Multiplexer(clock or Clock())
    mux.modern = DISCOVERED
    mux.initialize_result = modern.legacy_initialize_result(DISCOVERED)
    return mux


def join(mux: Multiplexer, editor: int, capabilities: dict[str, Any] | None = None) -> None:
    mux.attach(editor)
    params = {"protocolVersion": "2025-06-18", "capabilities": capabilities or {}}
    routing = mux.from_editor(
        editor, jsonrpc.request(0, "initialize", {**params, "clientInfo": EDITOR_INFO})
    )
    assert routing.editors[0][1]["result"]["protocolVersion"] == "2025-06-18"


def call(mux: Multiplexer, editor: int, request_id: Any, name: str = "t") -> dict[str, Any]:
    routing = mux.from_editor(editor, jsonrpc.request(request_id, "tools/call", {"name": name}))
    assert len(routing.upstream) == 1, routing
    return routing.upstream[0]


def input_required(
    request_id: int, asked: dict[str, Any], state: str | None = "s1"
) -> dict[str, Any]:
    result: dict[str, Any] = {"resultType": "input_required", "inputRequests": asked}
    if state is not None:
        result["requestState"] = state
    return jsonrpc.result(request_id, result)


ELICIT = {
    "method": "elicitation/create",
    "params": {"mode": "form", "message": "?", "requestedSchema": {}},
}


# --- Metadata and headers ------------------------------------------------------------


def test_forwarded_requests_carry_their_editors_declarations():
    mux = modern_mux()
    join(mux, 1, FORM)
    join(mux, 2)
    first, second = call(mux, 1, 7), call(mux, 2, 7)
    meta = first["params"]["_meta"]
    assert meta[modern.META_PROTOCOL] == "2026-07-28"
    assert meta[modern.META_CAPABILITIES] == FORM
    assert meta[modern.META_CLIENT_INFO] == EDITOR_INFO
    assert second["params"]["_meta"][modern.META_CAPABILITIES] == {}
    assert first["id"] != second["id"]


def test_what_a_modern_sender_declared_is_kept():
    meta = {modern.META_PROTOCOL: "2026-07-28", modern.META_CAPABILITIES: {"roots": {}}}
    message = modern.with_meta(jsonrpc.request(1, "tools/list", {"_meta": meta}), {}, EDITOR_INFO)
    assert message["params"]["_meta"][modern.META_CAPABILITIES] == {"roots": {}}
    assert message["params"]["_meta"][modern.META_CLIENT_INFO] == EDITOR_INFO


@pytest.mark.parametrize(
    ("value", "plain"),
    [
        ("us-west1", True),
        ("us west 1", True),
        ("", True),
        (" padded", False),
        ("x ", False),
        ("Hello, 世界", False),
        ("a\nb", False),
        ("\tx", False),
        ("=?base64?x?=", False),
    ],
)
def test_header_values_are_plain_or_base64(value, plain):
    encoded = modern.header_value(value)
    if plain:
        assert encoded == value
    else:
        assert encoded.startswith("=?base64?")
        assert encoded.endswith("?=")
        assert base64.b64decode(encoded[9:-2]).decode() == value


def test_request_headers_mirror_method_name_and_designated_parameters():
    message = modern.with_meta(
        jsonrpc.request(
            1,
            "tools/call",
            {"name": "sql", "arguments": {"region": "eu", "n": 3, "flag": False, "gone": None}},
        ),
        {},
        EDITOR_INFO,
    )
    paths = {"sql": {"Region": ("region",), "N": ("n",), "Flag": ("flag",), "Gone": ("gone",)}}
    headers = modern.request_headers(message, paths)
    assert headers == {
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "sql",
        "Mcp-Param-Region": "eu",
        "Mcp-Param-N": "3",
        "Mcp-Param-Flag": "false",
    }
    read = modern.request_headers(jsonrpc.request(2, "resources/read", {"uri": "file:///a b"}), {})
    assert read["Mcp-Name"] == "file:///a b"


# --- Tools ---------------------------------------------------------------------------


def tool(name: str, prop: dict[str, Any], *, nested: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": {"p": prop}}
    if nested:
        schema = {"type": "object", "properties": {"outer": schema}}
    return {"name": name, "inputSchema": schema}


@pytest.mark.parametrize(
    "prop",
    [
        {"type": "string", "x-mcp-header": ""},
        {"type": "object", "x-mcp-header": "O"},
        {"type": "array", "x-mcp-header": "A"},
        {"type": "number", "x-mcp-header": "N"},
        {"type": "string", "x-mcp-header": "has space"},
        {"type": "string", "x-mcp-header": "a:b"},
        {"type": "string", "x-mcp-header": "é"},
        {"type": "array", "items": {"type": "string", "x-mcp-header": "I"}},
        {"anyOf": [{"type": "string", "x-mcp-header": "U"}]},
    ],
)
def test_tools_with_invalid_header_annotations_are_left_out(prop):
    good = tool("good", {"type": "string", "x-mcp-header": "Region"}, nested=True)
    result, paths, dropped = modern.screen_tools({"tools": [good, tool("bad", prop)]})
    assert [t["name"] for t in result["tools"]] == ["good"]
    assert paths == {"good": {"Region": ("outer", "p")}}
    assert len(dropped) == 1
    assert "'bad'" in dropped[0]


def test_duplicate_header_names_ignoring_case_are_invalid():
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "x-mcp-header": "Dup"},
            "b": {"type": "string", "x-mcp-header": "dup"},
        },
    }
    with pytest.raises(modern.InvalidTool):
        modern.header_paths({"name": "t", "inputSchema": schema})


# --- Discovery -----------------------------------------------------------------------


def test_the_probe_tells_modern_from_older_servers():
    assert modern.probe_outcome(jsonrpc.result(1, DISCOVERED)) == modern.ProbeOutcome(
        modern=True, result=DISCOVERED
    )
    assert not modern.probe_outcome(None).modern  # an HTTP error without a JSON-RPC answer
    assert not modern.probe_outcome(jsonrpc.error(1, -32601, "no such method")).modern
    assert not modern.probe_outcome(jsonrpc.result(1, {"supportedVersions": ["2027-01-01"]})).modern
    refused = jsonrpc.error(1, -32022, "unsupported", {"supported": ["2026-07-28"]})
    assert modern.probe_outcome(refused) == modern.ProbeOutcome(modern=True, retry=True)
    older = jsonrpc.error(1, -32022, "unsupported", {"supported": ["2099-01-01"]})
    assert modern.probe_outcome(older) == modern.ProbeOutcome(modern=False)


def test_editors_that_initialize_get_the_discovered_server_and_a_handshake_revision():
    result = modern.legacy_initialize_result(DISCOVERED)
    assert result == {
        "protocolVersion": "2025-11-25",
        "capabilities": DISCOVERED["capabilities"],
        "serverInfo": {"name": "srv", "version": "2"},
        "instructions": "be brief",
    }


def test_a_modern_editor_probing_gets_the_discover_result_and_older_servers_refuse():
    mux = modern_mux()
    mux.attach(1)
    routing = mux.from_editor(1, jsonrpc.request("d", "server/discover", {}))
    assert routing.editors == [(1, jsonrpc.result("d", DISCOVERED))]
    legacy = Multiplexer()
    legacy.attach(1)
    refused = legacy.from_editor(1, jsonrpc.request("d", "server/discover", {}))
    assert refused.editors[0][1]["error"]["code"] == jsonrpc.METHOD_NOT_FOUND


# --- Caching ---------------------------------------------------------------------------


def test_a_fresh_list_answers_editors_until_its_ttl_or_a_change():
    clock = Clock()
    mux = modern_mux(clock)
    join(mux, 1)
    join(mux, 2)
    listed = mux.from_editor(1, jsonrpc.request(1, "tools/list", {})).upstream[0]
    tools = {"resultType": "complete", "tools": [{"name": "t"}], "ttlMs": 5000}
    assert mux.from_upstream(jsonrpc.result(listed["id"], tools)).editors[0][1]["result"] == tools
    cached = mux.from_editor(2, jsonrpc.request(9, "tools/list", {}))
    assert cached.upstream == []
    assert cached.editors == [(2, jsonrpc.result(9, tools))]
    assert mux.cache.hits == 1
    other_page = mux.from_editor(2, jsonrpc.request(10, "tools/list", {"cursor": "2"}))
    assert len(other_page.upstream) == 1  # another key
    mux.from_upstream(jsonrpc.notification("notifications/tools/list_changed"))
    [again] = mux.from_editor(2, jsonrpc.request(11, "tools/list", {})).upstream
    mux.from_upstream(jsonrpc.result(again["id"], tools))
    clock.now += 10
    assert len(mux.from_editor(1, jsonrpc.request(12, "tools/list", {})).upstream) == 1


def test_results_without_a_positive_ttl_or_asked_before_a_change_are_not_kept():
    cache = modern.ListCache()
    key = modern.ListCache.key("tools/list", {})
    assert key is not None
    for ttl in (None, 0, -5, True, "60"):
        cache.put(key, {"tools": [], "ttlMs": ttl}, 0.0, cache.generation)
        assert cache.get(key, 0.0) is None
    assert modern.ListCache.key("tools/call", {}) is None
    assert modern.ListCache.key("tools/list", {"filter": "x"}) is None
    asked_in = cache.generation
    cache.changed("notifications/tools/list_changed")
    cache.put(key, {"tools": [], "ttlMs": 9000}, 0.0, asked_in)
    assert cache.get(key, 0.0) is None


# --- Input rounds ----------------------------------------------------------------------


def test_an_input_request_goes_to_the_calling_editor_and_the_call_is_retried():
    mux = modern_mux()
    join(mux, 1, FORM)
    join(mux, 2, FORM)
    sent = call(mux, 1, "call-1")
    routing = mux.from_upstream(input_required(sent["id"], {"who": ELICIT}), related=sent["id"])
    assert [editor for editor, _ in routing.editors] == [1]
    asked = routing.editors[0][1]
    assert asked["method"] == "elicitation/create"
    assert asked["params"] == ELICIT["params"]
    # Another editor cannot answer for it.
    assert mux.from_editor(2, jsonrpc.result(asked["id"], {"action": "accept"})).upstream == []
    retried = mux.from_editor(1, jsonrpc.result(asked["id"], {"action": "accept"})).upstream
    assert len(retried) == 1
    retry = retried[0]
    assert retry["id"] != sent["id"]
    assert retry["params"]["inputResponses"] == {"who": {"action": "accept"}}
    assert retry["params"]["requestState"] == "s1"
    assert retry["params"]["_meta"] == sent["params"]["_meta"]
    done = mux.from_upstream(jsonrpc.result(retry["id"], {"content": []}))
    assert done.editors == [(1, jsonrpc.result("call-1", {"content": []}))]


def test_no_state_is_sent_back_when_the_server_sent_none_and_no_inputs_means_retry_now():
    mux = modern_mux()
    join(mux, 1, FORM)
    sent = call(mux, 1, 1)
    asked = mux.from_upstream(input_required(sent["id"], {"a": ELICIT}, state=None)).editors[0][1]
    retry = mux.from_editor(1, jsonrpc.result(asked["id"], {"action": "decline"})).upstream[0]
    assert "requestState" not in retry["params"]
    state_only = {"resultType": "input_required", "requestState": "again"}
    again = mux.from_upstream(jsonrpc.result(retry["id"], state_only)).upstream[0]
    assert again["params"]["requestState"] == "again"
    assert "inputResponses" not in again["params"]


def test_an_input_the_editor_did_not_declare_ends_the_call_with_an_error():
    mux = modern_mux()
    join(mux, 1)  # declared nothing
    sent = call(mux, 1, 5)
    routing = mux.from_upstream(input_required(sent["id"], {"a": ELICIT}))
    assert routing.upstream == []
    [(editor, message)] = routing.editors
    assert editor == 1
    assert message["id"] == 5
    assert "elicitation" in message["error"]["message"]
    url = {
        "method": "elicitation/create",
        "params": {"mode": "url", "url": "https://x", "message": "m"},
    }
    join(mux, 2, FORM)  # form only: a URL-mode request is not for it
    sent = call(mux, 2, 6)
    assert "error" in mux.from_upstream(input_required(sent["id"], {"u": url})).editors[0][1]


def test_a_server_that_never_stops_asking_is_given_up_on():
    mux = modern_mux()
    join(mux, 1, FORM)
    sent = call(mux, 1, 1)
    message = input_required(sent["id"], {}, state="s")
    for _ in range(MAX_INPUT_ROUNDS):
        [sent] = mux.from_upstream(message).upstream
        message = input_required(sent["id"], {}, state="s")
    [(_, final)] = mux.from_upstream(message).editors
    assert "giving up" in final["error"]["message"]


def test_cancelling_closes_the_stream_instead_of_notifying_the_server():
    mux = modern_mux()
    join(mux, 1)
    sent = call(mux, 1, 3)
    cancel = jsonrpc.notification("notifications/cancelled", {"requestId": 3})
    routing = mux.from_editor(1, cancel)
    assert routing.cancel == [sent["id"]]
    assert routing.upstream == []


def test_subscriptions_are_answered_locally_and_reopen_the_listen_stream():
    mux = modern_mux()
    join(mux, 1)
    join(mux, 2)
    first = mux.from_editor(1, jsonrpc.request(1, "resources/subscribe", {"uri": "u"}))
    assert first.relisten
    assert first.upstream == []
    assert first.editors == [(1, jsonrpc.result(1, {}))]
    assert not mux.from_editor(2, jsonrpc.request(1, "resources/subscribe", {"uri": "u"})).relisten
    assert modern.listen_filter(DISCOVERED["capabilities"], mux.subscribed_uris()) == {
        "toolsListChanged": True,
        "resourceSubscriptions": ["u"],
    }
    assert not mux.from_editor(
        1, jsonrpc.request(2, "resources/unsubscribe", {"uri": "u"})
    ).relisten
    assert mux.from_editor(2, jsonrpc.request(2, "resources/unsubscribe", {"uri": "u"})).relisten


def test_listen_stream_notifications_reach_older_editors_without_the_subscription_id():
    mux = modern_mux()
    join(mux, 1)
    changed = jsonrpc.notification(
        "notifications/tools/list_changed", {"_meta": {modern.META_SUBSCRIPTION: 4}}
    )
    routing = mux.from_upstream(changed, related=4)
    assert routing.editors == [(1, jsonrpc.notification("notifications/tools/list_changed", {}))]
    ack = jsonrpc.notification("notifications/subscriptions/acknowledged", {})
    assert mux.from_upstream(ack, related=4).editors == []


def test_each_page_is_cached_under_its_own_cursor():
    mux = modern_mux()
    join(mux, 1)
    page = {"resultType": "complete", "tools": [{"name": "second"}], "ttlMs": 5000}
    sent = mux.from_editor(1, jsonrpc.request(1, "tools/list", {"cursor": "2"})).upstream[0]
    mux.from_upstream(jsonrpc.result(sent["id"], page))
    assert len(mux.from_editor(1, jsonrpc.request(2, "tools/list", {})).upstream) == 1
    own = mux.own_request("tools/list", {"cursor": "3"})
    mux.from_upstream(jsonrpc.result(own["id"], page))
    assert mux.cache.get(("tools/list", "3"), 100.0) == page
    assert mux.cache.get(("tools/list", None), 100.0) is None


def test_a_notice_reaches_every_initialized_editor_as_a_warning():
    mux = modern_mux()
    join(mux, 1)
    mux.attach(2)  # not initialized: not told
    routing = mux.notice("server 'x': sign in again")
    assert routing.editors == [
        (
            1,
            jsonrpc.notification(
                "notifications/message",
                {"level": "warning", "logger": "mcpd", "data": "server 'x': sign in again"},
            ),
        )
    ]


def test_editors_asking_for_a_list_already_on_its_way_share_its_answer():
    mux = modern_mux()
    for editor in (1, 2, 3):
        join(mux, editor)
    [sent] = mux.from_editor(1, jsonrpc.request("a", "tools/list", {})).upstream
    assert mux.from_editor(2, jsonrpc.request("b", "tools/list", {})) == Routing()
    assert mux.from_editor(3, jsonrpc.request("c", "tools/list", {})) == Routing()
    tools = {"tools": [{"name": "t"}]}  # no ttlMs: nothing is kept afterwards
    answered = mux.from_upstream(jsonrpc.result(sent["id"], tools)).editors
    assert answered == [
        (1, jsonrpc.result("a", tools)),
        (2, jsonrpc.result("b", tools)),
        (3, jsonrpc.result("c", tools)),
    ]
    assert len(mux.from_editor(2, jsonrpc.request("d", "tools/list", {})).upstream) == 1


def test_when_the_first_asker_leaves_the_next_one_takes_the_list_request_over():
    mux = modern_mux()
    for editor in (1, 2, 3):
        join(mux, editor)
    [sent] = mux.from_editor(1, jsonrpc.request("a", "tools/list", {})).upstream
    mux.from_editor(2, jsonrpc.request("b", "tools/list", {}))
    mux.from_editor(3, jsonrpc.request("c", "tools/list", {}))
    assert mux.detach(1) == Routing()  # not cancelled upstream: others wait
    cancel = jsonrpc.notification("notifications/cancelled", {"requestId": "b"})
    assert mux.from_editor(2, cancel) == Routing()
    answered = mux.from_upstream(jsonrpc.result(sent["id"], {"tools": []})).editors
    assert answered == [(3, jsonrpc.result("c", {"tools": []}))]


def test_a_cancelled_list_request_is_not_joined_afterwards():
    mux = modern_mux()
    join(mux, 1)
    join(mux, 2)
    [sent] = mux.from_editor(1, jsonrpc.request("a", "tools/list", {})).upstream
    cancel = jsonrpc.notification("notifications/cancelled", {"requestId": "a"})
    assert mux.from_editor(1, cancel).cancel == [sent["id"]]
    assert len(mux.from_editor(2, jsonrpc.request("b", "tools/list", {})).upstream) == 1


def test_a_list_asked_for_before_a_change_is_neither_kept_nor_joined():
    mux = modern_mux()
    join(mux, 1)
    join(mux, 2)
    [sent] = mux.from_editor(1, jsonrpc.request("a", "tools/list", {})).upstream
    mux.from_upstream(jsonrpc.notification("notifications/tools/list_changed"))
    assert len(mux.from_editor(2, jsonrpc.request("b", "tools/list", {})).upstream) == 1
    mux.from_upstream(jsonrpc.result(sent["id"], {"tools": [], "ttlMs": 60000}))
    assert mux.cache.get(("tools/list", None), 100.0) is None


def test_everyone_waiting_for_a_list_hears_when_the_server_is_lost():
    mux = modern_mux()
    join(mux, 1)
    join(mux, 2)
    mux.from_editor(1, jsonrpc.request("a", "tools/list", {}))
    mux.from_editor(2, jsonrpc.request("b", "tools/list", {}))
    failed = mux.fail_all_pending(jsonrpc.SERVER_UNAVAILABLE, "gone")
    assert sorted((e, m["id"]) for e, m in failed.editors) == [(1, "a"), (2, "b")]
