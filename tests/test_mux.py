"""Multiplexer: how one upstream session is shared between editors."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpd.upstream import jsonrpc
from mcpd.upstream.mux import KNOWN_PROTOCOLS, Multiplexer, Routing

SESSION_PROTOCOL = "2025-06-18"
INIT_RESULT: dict[str, Any] = {
    "protocolVersion": SESSION_PROTOCOL,
    "capabilities": {"resources": {"subscribe": True}, "tools": {"listChanged": True}},
    "serverInfo": {"name": "upstream", "version": "1.0"},
    "instructions": "be nice",
}
SAMPLING: dict[str, Any] = {"sampling": {}}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> None:
        self.now += seconds


def new_mux(clock: Clock | None = None) -> Multiplexer:
    mux = Multiplexer(clock or Clock())
    mux.initialize_result = copy.deepcopy(INIT_RESULT)
    return mux


def req(request_id: Any, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return jsonrpc.request(request_id, method, params)


def initialize(protocol: Any = SESSION_PROTOCOL, capabilities: Any = None) -> dict[str, Any]:
    return req(
        0,
        "initialize",
        {
            "protocolVersion": protocol,
            "capabilities": capabilities if capabilities is not None else {},
            "clientInfo": {"name": "editor", "version": "0"},
        },
    )


def join(mux: Multiplexer, editor: int, capabilities: dict[str, Any] | None = None) -> None:
    """Attach an editor and run its initialize handshake."""
    mux.attach(editor)
    routing = mux.from_editor(editor, initialize(capabilities=capabilities))
    assert routing.upstream == []
    assert mux.from_editor(editor, jsonrpc.notification("notifications/initialized")) == Routing()


def forward(mux: Multiplexer, editor: int, message: dict[str, Any]) -> dict[str, Any]:
    """Send an editor request that must go upstream; the forwarded message."""
    routing = mux.from_editor(editor, message)
    assert routing.editors == []
    assert routing.own == []
    assert len(routing.upstream) == 1
    return routing.upstream[0]


def answer(request_id: Any, value: Any = None) -> dict[str, Any]:
    return jsonrpc.result(request_id, {} if value is None else value)


def cancelled(request_id: Any, reason: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"requestId": request_id}
    if reason is not None:
        params["reason"] = reason
    return jsonrpc.notification("notifications/cancelled", params)


def progress(token: Any, value: float = 1) -> dict[str, Any]:
    return jsonrpc.notification(
        "notifications/progress",
        {"progressToken": token, "progress": value, "total": 10, "message": "working"},
    )


def sampling_request(request_id: Any = "s1") -> dict[str, Any]:
    return req(request_id, "sampling/createMessage", {"messages": [], "maxTokens": 10})


def is_cancel_of(message: dict[str, Any], upstream_id: int) -> bool:
    return (
        message.get("method") == "notifications/cancelled"
        and "id" not in message
        and message["params"]["requestId"] == upstream_id
    )


# --- Request ids -------------------------------------------------------------------------


def test_two_editors_with_the_same_request_id_get_their_own_answers() -> None:
    mux = new_mux()
    join(mux, 1)
    join(mux, 2)
    up1 = forward(mux, 1, req(1, "tools/call", {"name": "a"}))
    up2 = forward(mux, 2, req(1, "tools/call", {"name": "b"}))
    assert up1["id"] != up2["id"]
    assert up1 == {**req(1, "tools/call", {"name": "a"}), "id": up1["id"]}
    assert up2 == {**req(1, "tools/call", {"name": "b"}), "id": up2["id"]}

    # Answered in the other order, each goes to its editor with its id restored.
    assert mux.from_upstream(answer(up2["id"], {"r": "b"})) == Routing(
        editors=[(2, answer(1, {"r": "b"}))]
    )
    assert mux.from_upstream(answer(up1["id"], {"r": "a"})) == Routing(
        editors=[(1, answer(1, {"r": "a"}))]
    )


def test_error_responses_are_routed_with_the_id_restored() -> None:
    mux = new_mux()
    join(mux, 1)
    up = forward(mux, 1, req("abc", "tools/call"))
    error = jsonrpc.error(up["id"], -32602, "bad params", {"detail": 1})
    assert mux.from_upstream(error) == Routing(
        editors=[(1, jsonrpc.error("abc", -32602, "bad params", {"detail": 1}))]
    )


def test_a_response_is_routed_once() -> None:
    mux = new_mux()
    join(mux, 1)
    up = forward(mux, 1, req(1, "tools/list"))
    assert mux.from_upstream(answer(up["id"])).editors == [(1, answer(1))]
    assert mux.from_upstream(answer(up["id"])) == Routing()


@pytest.mark.parametrize("bogus", ["1", None, 1.0, 999])
def test_responses_with_unknown_or_non_int_ids_are_dropped(bogus: Any) -> None:
    mux = new_mux()
    join(mux, 1)
    up = forward(mux, 1, req(1, "tools/list"))
    assert up["id"] == 1  # so "1" and 1.0 look like it
    assert mux.from_upstream(answer(bogus)) == Routing()
    assert mux.from_upstream(answer(up["id"])).editors == [(1, answer(1))]


def test_upstream_ids_are_unique_across_editors_own_and_unawaited_requests() -> None:
    mux = new_mux()
    for editor in (1, 2, 3):
        join(mux, editor)
    ids: list[Any] = []
    for n in range(20):
        for editor in (1, 2, 3):
            ids.append(forward(mux, editor, req(n, "tools/call"))["id"])
        ids.append(mux.own_request("tools/list")["id"])
        ids.append(mux.unawaited_request("resources/subscribe", {"uri": f"u{n}"})["id"])
    ids.append(forward(mux, 1, req("s", "resources/subscribe", {"uri": "file:///x"}))["id"])
    assert all(type(i) is int for i in ids)
    assert len(set(ids)) == len(ids)


def test_the_forwarded_request_keeps_everything_but_the_id() -> None:
    mux = new_mux()
    join(mux, 1)
    message = req(9, "tools/call", {"name": "x", "arguments": {"a": 1}})
    message["extra"] = "kept"
    original = copy.deepcopy(message)
    up = forward(mux, 1, message)
    assert {k: v for k, v in up.items() if k != "id"} == {
        k: v for k, v in original.items() if k != "id"
    }
    assert message == original  # the editor's message is not changed in place


# --- Progress ---------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["tok", 7, 0, ""])
def test_progress_tokens_are_rewritten_and_restored_to_the_owner_only(token: Any) -> None:
    mux = new_mux()
    join(mux, 1)
    join(mux, 2)
    message = req(5, "tools/call", {"name": "x", "_meta": {"progressToken": token, "k": "v"}})
    original = copy.deepcopy(message)
    up1 = forward(mux, 1, message)
    up2 = forward(mux, 2, copy.deepcopy(message))
    assert message == original
    for up in (up1, up2):
        assert up["params"] == {"name": "x", "_meta": {"progressToken": up["id"], "k": "v"}}

    note = progress(up2["id"], 3)
    routing = mux.from_upstream(note)
    assert routing.upstream == []
    assert routing.editors == [
        (
            2,
            jsonrpc.notification(
                "notifications/progress",
                {"progressToken": token, "progress": 3, "total": 10, "message": "working"},
            ),
        )
    ]
    assert note == progress(up2["id"], 3)  # the server's message is not changed in place
    assert [e for e, _ in mux.from_upstream(progress(up1["id"])).editors] == [1]


def test_progress_after_the_response_is_dropped() -> None:
    mux = new_mux()
    join(mux, 1)
    up = forward(mux, 1, req(5, "tools/call", {"_meta": {"progressToken": "t"}}))
    mux.from_upstream(answer(up["id"]))
    assert mux.from_upstream(progress(up["id"])) == Routing()


def test_progress_for_a_request_without_a_token_is_dropped() -> None:
    mux = new_mux()
    join(mux, 1)
    join(mux, 2)
    up = forward(mux, 1, req(5, "tools/call", {"name": "x"}))
    assert "_meta" not in up["params"]
    assert mux.from_upstream(progress(up["id"])) == Routing()


def test_a_request_with_meta_but_no_token_is_forwarded_unchanged() -> None:
    mux = new_mux()
    join(mux, 1)
    up = forward(mux, 1, req(5, "tools/call", {"_meta": {"k": "v"}}))
    assert up["params"] == {"_meta": {"k": "v"}}


@pytest.mark.parametrize("token", [999, "1", "t", None, 1.0])
def test_progress_with_an_unknown_token_is_dropped_not_broadcast(token: Any) -> None:
    mux = new_mux()
    join(mux, 1)
    join(mux, 2)
    up = forward(mux, 1, req(5, "tools/call", {"_meta": {"progressToken": "t"}}))
    assert up["id"] == 1
    assert mux.from_upstream(progress(token)) == Routing()


def test_progress_without_params_is_dropped() -> None:
    mux = new_mux()
    join(mux, 1)
    assert mux.from_upstream(jsonrpc.notification("notifications/progress")) == Routing()


# --- Cancellation from editors ---------------------------------------------------------------


def test_an_editor_cancel_is_mapped_to_its_own_upstream_request() -> None:
    mux = new_mux()
    join(mux, 1)
    join(mux, 2)
    up1 = forward(mux, 1, req(1, "tools/call"))
    up2 = forward(mux, 2, req(1, "tools/call"))
    routing = mux.from_editor(2, cancelled(1, "user pressed stop"))
    assert routing == Routing(upstream=[cancelled(up2["id"], "user pressed stop")])
    routing = mux.from_editor(1, cancelled(1))
    assert routing == Routing(upstream=[cancelled(up1["id"])])


def test_a_cancel_keeps_other_params() -> None:
    mux = new_mux()
    join(mux, 1)
    up = forward(mux, 1, req("r", "tools/call"))
    message = jsonrpc.notification(
        "notifications/cancelled", {"requestId": "r", "reason": "x", "_meta": {"k": 1}}
    )
    assert mux.from_editor(1, message).upstream == [
        jsonrpc.notification(
            "notifications/cancelled", {"requestId": up["id"], "reason": "x", "_meta": {"k": 1}}
        )
    ]
    assert message["params"]["requestId"] == "r"


@pytest.mark.parametrize("request_id", [2, "1", None])
def test_a_cancel_of_an_unknown_request_is_dropped(request_id: Any) -> None:
    mux = new_mux()
    join(mux, 1)
    forward(mux, 1, req(1, "tools/call"))
    assert mux.from_editor(1, cancelled(request_id)) == Routing()


def test_a_cancel_without_params_is_dropped() -> None:
    mux = new_mux()
    join(mux, 1)
    forward(mux, 1, req(1, "tools/call"))
    assert mux.from_editor(1, jsonrpc.notification("notifications/cancelled")) == Routing()


def test_a_cancel_of_an_answered_request_is_dropped() -> None:
    mux = new_mux()
    join(mux, 1)
    up = forward(mux, 1, req(1, "tools/call"))
    mux.from_upstream(answer(up["id"]))
    assert mux.from_editor(1, cancelled(1)) == Routing()


def test_an_editor_cannot_cancel_another_editors_request() -> None:
    mux = new_mux()
    join(mux, 1)
    join(mux, 2)
    forward(mux, 2, req(7, "tools/call"))
    assert mux.from_editor(1, cancelled(7)) == Routing()


def test_an_editor_cannot_cancel_a_locally_answered_request() -> None:
    mux = new_mux()
    join(mux, 1)
    mux.from_editor(1, req(3, "ping"))
    assert mux.from_editor(1, cancelled(3)) == Routing()
    assert mux.from_editor(1, cancelled(0)) == Routing()  # its initialize


def test_a_cancelled_request_is_forgotten() -> None:
    mux = new_mux()
    join(mux, 1)
    up = forward(mux, 1, req(1, "tools/call"))
    assert mux.from_editor(1, cancelled(1)).upstream == [cancelled(up["id"])]
    assert mux.from_editor(1, cancelled(1)) == Routing()
    assert mux.detach(1) == Routing()


def test_other_editor_notifications_go_upstream_unchanged() -> None:
    mux = new_mux()
    join(mux, 1)
    message = jsonrpc.notification("notifications/roots/list_changed")
    assert mux.from_editor(1, message) == Routing(upstream=[message])


# --- initialize, initialized, ping ----------------------------------------------------------


@pytest.mark.parametrize("request_id", [0, 17, "init"])
def test_initialize_is_answered_locally_with_the_session_result(request_id: Any) -> None:
    mux = new_mux()
    mux.attach(1)
    message = initialize(capabilities=SAMPLING)
    message["id"] = request_id
    routing = mux.from_editor(1, message)
    assert routing == Routing(editors=[(1, jsonrpc.result(request_id, INIT_RESULT))])


@pytest.mark.parametrize(
    ("requested", "answered"),
    [
        ("2024-11-05", "2024-11-05"),  # older and known: that one
        ("2025-03-26", "2025-03-26"),
        ("2025-06-18", "2025-06-18"),  # the session's own
        ("2025-11-25", "2025-06-18"),  # newer: the session's
        ("2024-10-07", "2025-06-18"),  # older but unknown: the session's
        ("2099-01-01", "2025-06-18"),  # newer and unknown
        ("latest", "2025-06-18"),
        ("", "2025-06-18"),
        (None, "2025-06-18"),
        (20241105, "2025-06-18"),
    ],
)
def test_initialize_protocol_version_downgrade(requested: Any, answered: str) -> None:
    mux = new_mux()
    mux.attach(1)
    routing = mux.from_editor(1, initialize(protocol=requested))
    [(editor, message)] = routing.editors
    assert editor == 1
    assert message["result"] == {**INIT_RESULT, "protocolVersion": answered}
    assert mux.initialize_result == INIT_RESULT  # the session's result is untouched


def test_the_known_protocols() -> None:
    assert {"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"} <= KNOWN_PROTOCOLS


def test_each_editor_gets_its_own_protocol_version() -> None:
    mux = new_mux()
    mux.initialize_result = {**INIT_RESULT, "protocolVersion": "2025-11-25"}
    mux.attach(1)
    mux.attach(2)
    old = mux.from_editor(1, initialize(protocol="2025-03-26")).editors[0][1]
    new = mux.from_editor(2, initialize(protocol="2025-11-25")).editors[0][1]
    assert old["result"]["protocolVersion"] == "2025-03-26"
    assert new["result"]["protocolVersion"] == "2025-11-25"
    assert mux.initialize_result["protocolVersion"] == "2025-11-25"


def test_initialize_without_params_gets_the_session_result() -> None:
    mux = new_mux()
    mux.attach(1)
    routing = mux.from_editor(1, req(1, "initialize"))
    assert routing == Routing(editors=[(1, jsonrpc.result(1, INIT_RESULT))])
    assert mux.editors[1].initialized
    assert mux.editors[1].capabilities == {}


def test_initialize_records_the_editor_capabilities() -> None:
    mux = new_mux()
    mux.attach(1)
    assert not mux.editors[1].initialized
    mux.from_editor(1, initialize(capabilities={"roots": {"listChanged": True}}))
    assert mux.editors[1].initialized
    assert mux.editors[1].capabilities == {"roots": {"listChanged": True}}
    mux.from_editor(1, initialize(capabilities=["not", "a", "dict"]))
    assert mux.editors[1].capabilities == {}


def test_initialized_notification_is_absorbed() -> None:
    mux = new_mux()
    mux.attach(1)
    mux.from_editor(1, initialize())
    message = jsonrpc.notification("notifications/initialized")
    assert mux.from_editor(1, message) == Routing()


@pytest.mark.parametrize("request_id", [4, "p"])
def test_editor_ping_is_answered_locally(request_id: Any) -> None:
    mux = new_mux()
    join(mux, 1)
    assert mux.from_editor(1, req(request_id, "ping")) == Routing(
        editors=[(1, jsonrpc.result(request_id, {}))]
    )


def test_a_message_that_is_neither_request_nor_response_gets_an_error() -> None:
    mux = new_mux()
    join(mux, 1)
    routing = mux.from_editor(1, {"jsonrpc": "2.0", "id": 4})
    assert routing.upstream == []
    [(editor, message)] = routing.editors
    assert editor == 1
    assert message["id"] == 4
    assert message["error"]["code"] == jsonrpc.INVALID_REQUEST


# --- Server notifications -------------------------------------------------------------------


@pytest.mark.parametrize(
    "method",
    [
        "notifications/tools/list_changed",
        "notifications/resources/list_changed",
        "notifications/message",
        "notifications/anything",
    ],
)
def test_server_notifications_go_to_initialized_editors_only(method: str) -> None:
    mux = new_mux()
    join(mux, 1)
    mux.attach(2)  # attached, never initialized
    join(mux, 3)
    message = jsonrpc.notification(method, {"level": "info", "data": "x"})
    routing = mux.from_upstream(message)
    assert routing.upstream == []
    assert sorted(e for e, _ in routing.editors) == [1, 3]
    assert all(m == message for _, m in routing.editors)


def test_server_notifications_with_no_editor_go_nowhere() -> None:
    mux = new_mux()
    mux.attach(1)
    assert mux.from_upstream(jsonrpc.notification("notifications/tools/list_changed")) == Routing()


def test_resource_updates_go_to_that_uris_subscribers_only() -> None:
    mux = new_mux()
    for editor in (1, 2, 3, 4):
        join(mux, editor)
    for editor, uri in [(1, "file:///a"), (2, "file:///a"), (3, "file:///b")]:
        routing = mux.from_editor(editor, req(editor * 10, "resources/subscribe", {"uri": uri}))
        for up in routing.upstream:
            mux.from_upstream(answer(up["id"]))

    def updated(uri: Any) -> list[int]:
        params = {"uri": uri} if uri is not None else None
        message = jsonrpc.notification("notifications/resources/updated", params)
        routing = mux.from_upstream(message)
        assert routing.upstream == []
        assert all(m == message for _, m in routing.editors)
        return sorted(e for e, _ in routing.editors)

    assert updated("file:///a") == [1, 2]
    assert updated("file:///b") == [3]
    assert updated("file:///c") == []
    assert updated(None) == []
    assert updated(5) == []


# --- Subscriptions --------------------------------------------------------------------------


def test_subscriptions_are_reference_counted() -> None:
    mux = new_mux()
    for editor in (1, 2, 3):
        join(mux, editor)
    uri = "file:///a"

    # The first subscriber subscribes upstream, and gets the server's answer.
    up = forward(mux, 1, req(10, "resources/subscribe", {"uri": uri}))
    assert up["method"] == "resources/subscribe"
    assert up["params"] == {"uri": uri}
    assert mux.from_upstream(answer(up["id"])) == Routing(editors=[(1, answer(10))])
    assert mux.subscribed_uris() == [uri]

    # The second is answered here.
    routing = mux.from_editor(2, req(20, "resources/subscribe", {"uri": uri}))
    assert routing == Routing(editors=[(2, jsonrpc.result(20, {}))])

    # Not the last one out: answered here, the subscription stays.
    routing = mux.from_editor(1, req(11, "resources/unsubscribe", {"uri": uri}))
    assert routing == Routing(editors=[(1, jsonrpc.result(11, {}))])
    assert mux.subscribed_uris() == [uri]
    notice = jsonrpc.notification("notifications/resources/updated", {"uri": uri})
    assert [e for e, _ in mux.from_upstream(notice).editors] == [2]

    # The last one out unsubscribes upstream.
    up = forward(mux, 2, req(21, "resources/unsubscribe", {"uri": uri}))
    assert up["method"] == "resources/unsubscribe"
    assert up["params"] == {"uri": uri}
    assert mux.subscribed_uris() == []
    assert mux.from_upstream(answer(up["id"])) == Routing(editors=[(2, answer(21))])
    assert mux.from_upstream(notice) == Routing()

    # Subscribing again after that is a first subscription again.
    up = forward(mux, 3, req(30, "resources/subscribe", {"uri": uri}))
    assert up["method"] == "resources/subscribe"


def test_unsubscribing_what_was_never_subscribed_is_answered_locally() -> None:
    mux = new_mux()
    join(mux, 1)
    join(mux, 2)
    mux.from_editor(1, req(1, "resources/subscribe", {"uri": "a"}))
    routing = mux.from_editor(2, req(2, "resources/unsubscribe", {"uri": "a"}))
    assert routing == Routing(editors=[(2, jsonrpc.result(2, {}))])
    routing = mux.from_editor(2, req(3, "resources/unsubscribe", {"uri": "b"}))
    assert routing == Routing(editors=[(2, jsonrpc.result(3, {}))])
    assert mux.subscribed_uris() == ["a"]


def test_subscribe_without_a_uri_is_forwarded_and_not_counted() -> None:
    mux = new_mux()
    join(mux, 1)
    up = forward(mux, 1, req(1, "resources/subscribe"))
    assert up["method"] == "resources/subscribe"
    up = forward(mux, 1, req(2, "resources/subscribe", {"uri": 5}))
    assert up["params"] == {"uri": 5}
    assert mux.subscribed_uris() == []


def test_subscribed_uris_are_sorted_and_distinct() -> None:
    mux = new_mux()
    join(mux, 1)
    join(mux, 2)
    assert mux.subscribed_uris() == []
    for n, (editor, uri) in enumerate([(1, "c"), (2, "a"), (1, "b"), (2, "c"), (1, "a")]):
        mux.from_editor(editor, req(n, "resources/subscribe", {"uri": uri}))
    assert mux.subscribed_uris() == ["a", "b", "c"]


# --- Detach -------------------------------------------------------------------------------


def test_detach_cancels_unsubscribes_and_refuses_for_the_editor() -> None:
    mux = new_mux()
    join(mux, 1, SAMPLING)
    join(mux, 2)

    # Editor 1 subscribes to "a" alone and to "b" with editor 2.
    for n, uri in enumerate(["a", "b"]):
        up = forward(mux, 1, req(f"sub{n}", "resources/subscribe", {"uri": uri}))
        mux.from_upstream(answer(up["id"]))
    mux.from_editor(2, req("sub", "resources/subscribe", {"uri": "b"}))

    # Two requests in flight, one answered, one of editor 2's in flight.
    first = forward(mux, 1, req(1, "tools/call"))
    second = forward(mux, 1, req(2, "tools/call"))
    done = forward(mux, 1, req(3, "tools/call"))
    mux.from_upstream(answer(done["id"]))
    other = forward(mux, 2, req(1, "tools/call"))

    # A server request was handed to editor 1.
    assert mux.from_upstream(sampling_request("s1")).editors == [(1, sampling_request("s1"))]

    routing = mux.detach(1)
    assert routing.editors == []
    assert routing.own == []
    cancels = [m for m in routing.upstream if m.get("method") == "notifications/cancelled"]
    assert sorted(m["params"]["requestId"] for m in cancels) == [first["id"], second["id"]]
    assert all("id" not in m and m["params"].get("reason") for m in cancels)
    unsubscribes = [m for m in routing.upstream if m.get("method") == "resources/unsubscribe"]
    assert [m["params"] for m in unsubscribes] == [{"uri": "a"}]
    assert jsonrpc.is_request(unsubscribes[0])
    errors = [m for m in routing.upstream if "error" in m]
    assert [(m["id"], m["error"]["code"]) for m in errors] == [("s1", jsonrpc.INTERNAL_ERROR)]
    assert len(routing.upstream) == len(cancels) + len(unsubscribes) + len(errors)

    assert 1 not in mux.editors
    assert mux.subscribed_uris() == ["b"]
    # The daemon's unsubscribe is answered to nobody; late answers go nowhere.
    assert mux.from_upstream(answer(unsubscribes[0]["id"])) == Routing()
    assert mux.from_upstream(answer(first["id"])) == Routing()
    assert mux.from_upstream(progress(second["id"])) == Routing()
    # Editor 2 is untouched.
    assert mux.from_upstream(answer(other["id"])) == Routing(editors=[(2, answer(1))])
    notice = jsonrpc.notification("notifications/resources/updated", {"uri": "b"})
    assert [e for e, _ in mux.from_upstream(notice).editors] == [2]


def test_detach_of_the_last_subscriber_after_another_left() -> None:
    mux = new_mux()
    join(mux, 1)
    join(mux, 2)
    up = forward(mux, 1, req(1, "resources/subscribe", {"uri": "a"}))
    mux.from_upstream(answer(up["id"]))
    mux.from_editor(2, req(1, "resources/subscribe", {"uri": "a"}))
    assert mux.detach(1) == Routing()
    routing = mux.detach(2)
    assert [(m["method"], m["params"]) for m in routing.upstream] == [
        ("resources/unsubscribe", {"uri": "a"})
    ]
    assert mux.subscribed_uris() == []


def test_detach_of_an_unknown_editor_does_nothing() -> None:
    mux = new_mux()
    join(mux, 1)
    forward(mux, 1, req(1, "tools/call"))
    assert mux.detach(2) == Routing()
    assert mux.detach(1) != Routing()
    assert mux.detach(1) == Routing()


def test_a_late_response_for_a_detached_editor_is_dropped() -> None:
    mux = new_mux()
    join(mux, 1)
    up = forward(mux, 1, req(1, "tools/call", {"_meta": {"progressToken": "t"}}))
    mux.detach(1)
    assert mux.from_upstream(progress(up["id"])) == Routing()
    assert mux.from_upstream(answer(up["id"])) == Routing()
    # A new editor with the same id sees nothing of the old one's traffic.
    join(mux, 1)
    assert mux.from_upstream(answer(up["id"])) == Routing()


def test_server_notifications_skip_detached_editors() -> None:
    mux = new_mux()
    join(mux, 1)
    join(mux, 2)
    mux.detach(1)
    routing = mux.from_upstream(jsonrpc.notification("notifications/tools/list_changed"))
    assert [e for e, _ in routing.editors] == [2]


# --- Server-to-client requests ----------------------------------------------------------------


def test_a_server_request_goes_to_the_related_editor() -> None:
    clock = Clock()
    mux = new_mux(clock)
    join(mux, 1, SAMPLING)
    up = forward(mux, 1, req(1, "tools/call"))
    clock.advance()
    join(mux, 2, SAMPLING)  # more recently active
    message = sampling_request()
    routing = mux.from_upstream(message, related=up["id"])
    assert routing == Routing(editors=[(1, message)])


@pytest.mark.parametrize(
    ("method", "capability"),
    [
        ("sampling/createMessage", "sampling"),
        ("elicitation/create", "elicitation"),
        ("roots/list", "roots"),
    ],
)
def test_a_related_editor_without_the_capability_gets_it_refused_not_passed_on(
    method: str, capability: str
) -> None:
    """The request belongs to editor 1's call: editors that could answer it
    never see it; the server hears what a client without the capability says."""
    clock = Clock()
    mux = new_mux(clock)
    join(mux, 1, {"other": {}})
    clock.advance()
    join(mux, 2, {"sampling": {}, "elicitation": {}, "roots": {}})
    up = forward(mux, 1, req(1, "tools/call"))
    clock.advance()
    mux.from_editor(2, req(9, "ping"))  # editor 2 is the most recently active
    routing = mux.from_upstream(req("s", method, {}), related=up["id"])
    assert routing.editors == []
    [refusal] = routing.upstream
    assert refusal["id"] == "s"
    assert refusal["error"]["code"] == jsonrpc.METHOD_NOT_FOUND
    assert refusal["error"]["message"].startswith("Method not found")
    assert f"the {capability} capability" in refusal["error"]["message"]
    # Nothing is left waiting for an editor's answer.
    assert mux.from_editor(2, answer("s")) == Routing()


@pytest.mark.parametrize(
    ("declared", "mode", "routed"),
    [
        ({}, None, True),
        ({}, "form", True),
        ({}, "url", False),
        ({"form": {}}, "url", False),
        ({"url": {}}, None, False),
        ({"url": {}}, "url", True),
        ({"form": {}, "url": {}}, "url", True),
        ({"form": {}, "url": {}}, "form", True),
        ({"form": {}, "url": {}}, "telepathy", False),
        ({"form": {}, "url": {}}, ["url"], False),
    ],
)
def test_elicitation_needs_the_mode_asked_for(declared: Any, mode: Any, routed: bool) -> None:
    """An empty `elicitation` declares form mode only; a mode not declared is
    Invalid params (2025-11-25, client/elicitation, Error Handling)."""
    mux = new_mux()
    join(mux, 1, {"elicitation": declared})
    up = forward(mux, 1, req(1, "tools/call"))
    params: dict[str, Any] = {"message": "?", "requestedSchema": {"type": "object"}}
    if mode is not None:
        params["mode"] = mode
    message = req("e", "elicitation/create", params)
    routing = mux.from_upstream(message, related=up["id"])
    if routed:
        assert routing == Routing(editors=[(1, message)])
    else:
        assert routing.editors == []
        [refusal] = routing.upstream
        assert refusal["error"]["code"] == jsonrpc.INVALID_PARAMS
        assert refusal["error"]["message"].startswith("Invalid params")
        assert "elicitation mode" in refusal["error"]["message"]


def test_a_standalone_url_elicitation_goes_to_an_editor_that_declared_url_mode() -> None:
    clock = Clock()
    mux = new_mux(clock)
    join(mux, 1, {"elicitation": {"url": {}}})
    clock.advance()
    join(mux, 2, {"elicitation": {}})  # more recent, form only
    message = req("u", "elicitation/create", {"mode": "url", "url": "https://x", "message": "?"})
    assert mux.from_upstream(message) == Routing(editors=[(1, message)])
    mux.detach(1)
    [refusal] = mux.from_upstream(message).upstream
    assert refusal["error"]["code"] == jsonrpc.INVALID_PARAMS
    assert "no attached editor supports elicitation/create" in refusal["error"]["message"]


def test_a_related_editor_that_never_initialized_gets_nothing() -> None:
    clock = Clock()
    mux = new_mux(clock)
    mux.attach(1)
    up = forward(mux, 1, req(1, "tools/call"))
    clock.advance()
    join(mux, 2, SAMPLING)
    routing = mux.from_upstream(sampling_request(), related=up["id"])
    assert routing.editors == []
    assert routing.upstream[0]["error"]["code"] == jsonrpc.METHOD_NOT_FOUND


def test_an_unknown_request_related_to_an_editor_goes_to_that_editor() -> None:
    clock = Clock()
    mux = new_mux(clock)
    join(mux, 1)
    up = forward(mux, 1, req(1, "tools/call"))
    clock.advance()
    join(mux, 2)
    message = req("x", "vendor/custom", {})
    assert mux.from_upstream(message, related=up["id"]) == Routing(editors=[(1, message)])


def test_without_a_related_editor_the_most_recently_active_capable_one_gets_it() -> None:
    clock = Clock()
    mux = new_mux(clock)
    join(mux, 1, SAMPLING)
    clock.advance()
    join(mux, 2, SAMPLING)
    clock.advance()
    join(mux, 3)  # most recent, but cannot sample
    assert [e for e, _ in mux.from_upstream(sampling_request("a")).editors] == [2]

    clock.advance()
    mux.from_editor(1, req(5, "ping"))  # any message counts as activity
    assert [e for e, _ in mux.from_upstream(sampling_request("b")).editors] == [1]

    clock.advance()
    mux.from_editor(2, jsonrpc.notification("notifications/roots/list_changed"))
    assert [e for e, _ in mux.from_upstream(sampling_request("c")).editors] == [2]


def test_a_request_on_the_standalone_stream_goes_to_the_most_recent_capable_editor() -> None:
    clock = Clock()
    mux = new_mux(clock)
    join(mux, 1, SAMPLING)
    clock.advance()
    join(mux, 2, SAMPLING)
    assert [e for e, _ in mux.from_upstream(sampling_request(), related=None).editors] == [2]


def _refused_by_all(mux: Multiplexer, related: int) -> dict[str, Any]:
    routing = mux.from_upstream(sampling_request(), related=related)
    assert routing.editors == []
    [refusal] = routing.upstream
    assert refusal["id"] == "s1"
    error: dict[str, Any] = refusal["error"]
    return error


@pytest.mark.parametrize("related", [999, "answered", "cancelled", "detached"])
def test_a_request_related_to_no_live_editor_request_goes_to_nobody(related: Any) -> None:
    """The request it came with was never ours, answered, cancelled, or its
    editor left: no other editor may answer for it."""
    clock = Clock()
    mux = new_mux(clock)
    join(mux, 1, SAMPLING)
    up = forward(mux, 1, req(1, "tools/call"))
    if related == "answered":
        mux.from_upstream(answer(up["id"]))
    elif related == "cancelled":
        mux.from_editor(1, cancelled(1))
    elif related == "detached":
        mux.detach(1)
    clock.advance()
    join(mux, 2, SAMPLING)
    error = _refused_by_all(mux, 999 if related == 999 else up["id"])
    assert error["code"] == jsonrpc.INTERNAL_ERROR
    assert "no longer in flight" in error["message"]


def test_a_request_related_to_an_own_request_goes_to_nobody() -> None:
    """mcpd's own requests (mcpctl tools, a control-protocol call) declare
    nothing: Method not found, never an editor's answer."""
    mux = new_mux()
    join(mux, 1, SAMPLING)
    own = mux.own_request("tools/call")
    error = _refused_by_all(mux, own["id"])
    assert error["code"] == jsonrpc.METHOD_NOT_FOUND
    assert "mcpd's own" in error["message"]


def test_uninitialized_editors_get_no_server_requests() -> None:
    clock = Clock()
    mux = new_mux(clock)
    join(mux, 1, SAMPLING)
    clock.advance()
    mux.attach(2)
    mux.from_editor(2, req(1, "tools/list"))  # active, but never initialized
    assert [e for e, _ in mux.from_upstream(req("r", "custom/thing")).editors] == [1]


@pytest.mark.parametrize(
    ("method", "capability"),
    [
        ("sampling/createMessage", "sampling"),
        ("elicitation/create", "elicitation"),
        ("roots/list", "roots"),
    ],
)
def test_server_requests_need_the_capability(method: str, capability: str) -> None:
    clock = Clock()
    mux = new_mux(clock)
    join(mux, 1, {capability: {}})
    clock.advance()
    join(mux, 2, {c: {} for c in ("sampling", "elicitation", "roots") if c != capability})
    message = req(7, method, {})
    assert mux.from_upstream(message) == Routing(editors=[(1, message)])


@pytest.mark.parametrize(
    ("method", "capability"),
    [
        ("sampling/createMessage", "sampling"),
        ("elicitation/create", "elicitation"),
        ("roots/list", "roots"),
    ],
)
def test_a_server_request_no_editor_can_take_is_refused_upstream(
    method: str, capability: str
) -> None:
    mux = new_mux()
    join(mux, 1, {"other": {}})
    mux.attach(2)
    routing = mux.from_upstream(req(7, method, {}))
    assert routing.editors == []
    [refusal] = routing.upstream
    assert refusal["id"] == 7
    assert refusal["error"]["code"] == jsonrpc.METHOD_NOT_FOUND
    assert capability in refusal["error"]["message"]
    assert "result" not in refusal


def test_an_unknown_server_request_goes_to_any_initialized_editor() -> None:
    mux = new_mux()
    join(mux, 1)
    message = req("x", "vendor/custom", {})
    assert mux.from_upstream(message) == Routing(editors=[(1, message)])


def test_an_unknown_server_request_with_no_editor_is_refused() -> None:
    mux = new_mux()
    routing = mux.from_upstream(req("x", "vendor/custom"))
    assert [(m["id"], m["error"]["code"]) for m in routing.upstream] == [
        ("x", jsonrpc.METHOD_NOT_FOUND)
    ]


def test_server_ping_is_answered_upstream() -> None:
    mux = new_mux()
    join(mux, 1)
    assert mux.from_upstream(req(42, "ping")) == Routing(upstream=[jsonrpc.result(42, {})])
    assert mux.from_upstream(req("p", "ping"), related=1) == Routing(
        upstream=[jsonrpc.result("p", {})]
    )


def test_editor_responses_go_upstream_only_for_requests_given_to_that_editor() -> None:
    clock = Clock()
    mux = new_mux(clock)
    join(mux, 1, SAMPLING)
    clock.advance()
    join(mux, 2, SAMPLING)
    assert [e for e, _ in mux.from_upstream(sampling_request("s1")).editors] == [2]

    reply = answer("s1", {"role": "assistant", "content": {"type": "text", "text": "hi"}})
    assert mux.from_editor(1, reply) == Routing()  # not given to editor 1
    assert mux.from_editor(2, reply) == Routing(upstream=[reply])
    assert mux.from_editor(2, reply) == Routing()  # answered already
    assert mux.from_editor(2, answer("never-sent")) == Routing()
    assert mux.from_editor(2, answer(None)) == Routing()


def test_an_editor_error_response_to_a_server_request_goes_upstream() -> None:
    mux = new_mux()
    join(mux, 1, SAMPLING)
    mux.from_upstream(sampling_request(9))
    refusal = jsonrpc.error(9, -1, "user rejected")
    assert mux.from_editor(1, refusal) == Routing(upstream=[refusal])


def test_a_server_cancel_goes_to_the_editor_holding_that_request_only() -> None:
    mux = new_mux()
    join(mux, 1, SAMPLING)
    join(mux, 2)
    mux.from_upstream(sampling_request("s2"))
    message = cancelled("s2", "timeout")
    assert mux.from_upstream(message) == Routing(editors=[(1, message)])
    # The request is over: a late answer from the editor goes nowhere.
    assert mux.from_editor(1, answer("s2")) == Routing()
    assert mux.from_upstream(cancelled("s2")) == Routing()
    assert mux.from_upstream(cancelled("unknown")) == Routing()


@pytest.mark.parametrize(
    "message",
    [
        req([1], "sampling/createMessage", {}),
        req({"a": 1}, "roots/list", {}),
        cancelled([1]),
        cancelled({"a": 1}),
    ],
    ids=["request-list-id", "request-object-id", "cancel-list-id", "cancel-object-id"],
)
def test_server_messages_with_unhashable_ids_are_handled(message: dict[str, Any]) -> None:
    mux = new_mux()
    join(mux, 1, {"sampling": {}, "roots": {}})
    mux.from_upstream(sampling_request("pending"))  # something the cancel could be for
    routing = mux.from_upstream(message)
    assert routing.editors == []


@pytest.mark.parametrize(
    "message",
    [answer([1]), answer({"a": 1}), initialize(protocol=["2025-06-18"])],
    ids=["response-list-id", "response-object-id", "initialize-list-version"],
)
def test_editor_messages_with_unhashable_values_are_handled(message: dict[str, Any]) -> None:
    mux = new_mux()
    join(mux, 1, SAMPLING)
    routing = mux.from_editor(1, message)
    assert routing.upstream == []


# --- The daemon's own requests ---------------------------------------------------------------


def test_own_request_responses_come_back_as_own() -> None:
    mux = new_mux()
    join(mux, 1)
    message = mux.own_request("tools/list", {"cursor": "c"})
    assert message == jsonrpc.request(message["id"], "tools/list", {"cursor": "c"})
    assert mux.own_request("tools/list")["id"] != message["id"]
    response = answer(message["id"], {"tools": []})
    assert mux.from_upstream(response) == Routing(own=[(message["id"], response)])
    assert mux.from_upstream(response) == Routing()  # once


def test_own_request_errors_come_back_as_own() -> None:
    mux = new_mux()
    message = mux.own_request("tools/call")
    error = jsonrpc.error(message["id"], -32602, "bad")
    assert mux.from_upstream(error) == Routing(own=[(message["id"], error)])


def test_a_forgotten_own_request_is_dropped() -> None:
    mux = new_mux()
    join(mux, 1)
    message = mux.own_request("tools/list")
    mux.forget_own(message["id"])
    mux.forget_own(12345)  # forgetting what is not there is fine
    assert mux.from_upstream(answer(message["id"])) == Routing()


def test_own_request_params_are_optional() -> None:
    mux = new_mux()
    message = mux.own_request("ping")
    assert "params" not in message
    assert message["method"] == "ping"


def test_unawaited_request_responses_are_dropped() -> None:
    mux = new_mux()
    join(mux, 1)
    message = mux.unawaited_request("resources/subscribe", {"uri": "a"})
    assert message == jsonrpc.request(message["id"], "resources/subscribe", {"uri": "a"})
    assert mux.from_upstream(answer(message["id"])) == Routing()
    other = mux.unawaited_request("x")
    assert mux.from_upstream(jsonrpc.error(other["id"], -1, "no")) == Routing()


# --- Losing the session -----------------------------------------------------------------------


def test_fail_all_pending_answers_every_pending_request() -> None:
    mux = new_mux()
    join(mux, 1, SAMPLING)
    join(mux, 2)
    a = forward(mux, 1, req(1, "tools/call"))
    b = forward(mux, 1, req("two", "tools/call"))
    c = forward(mux, 2, req(1, "tools/call"))
    done = forward(mux, 2, req(2, "tools/call"))
    mux.from_upstream(answer(done["id"]))
    own = mux.own_request("tools/list")
    unawaited = mux.unawaited_request("resources/subscribe", {"uri": "u"})
    mux.from_upstream(sampling_request("s1"))

    routing = mux.fail_all_pending(jsonrpc.SERVER_UNAVAILABLE, "connection lost")
    assert routing.upstream == []
    error = jsonrpc.SERVER_UNAVAILABLE, "connection lost"
    assert sorted(routing.editors, key=repr) == sorted(
        [
            (1, jsonrpc.error(1, *error)),
            (1, jsonrpc.error("two", *error)),
            (2, jsonrpc.error(1, *error)),
        ],
        key=repr,
    )
    assert routing.own == [(own["id"], jsonrpc.error(own["id"], *error))]

    # Nothing is pending any more.
    for up in (a, b, c, own, unawaited):
        assert mux.from_upstream(answer(up["id"])) == Routing()
    assert mux.from_editor(1, answer("s1")) == Routing()
    assert mux.from_editor(1, cancelled(1)) == Routing()
    assert mux.detach(1) == Routing()
    assert mux.fail_all_pending(jsonrpc.SERVER_UNAVAILABLE, "again") == Routing()
    # Editors stay attached, and new requests work.
    up = forward(mux, 2, req(3, "tools/call"))
    assert up["id"] not in {a["id"], b["id"], c["id"], own["id"], unawaited["id"]}
    assert mux.from_upstream(answer(up["id"])) == Routing(editors=[(2, answer(3))])


def test_fail_all_pending_keeps_subscriptions() -> None:
    mux = new_mux()
    join(mux, 1)
    mux.from_editor(1, req(1, "resources/subscribe", {"uri": "a"}))
    routing = mux.fail_all_pending(jsonrpc.SERVER_UNAVAILABLE, "gone")
    assert routing.editors == [(1, jsonrpc.error(1, jsonrpc.SERVER_UNAVAILABLE, "gone"))]
    assert mux.subscribed_uris() == ["a"]


# --- Any interleaving -----------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_any_interleaving_routes_every_answer_to_its_requester(data: st.DataObject) -> None:
    mux = new_mux()
    editors = [1, 2, 3]
    for editor in editors:
        join(mux, editor)
    counters = dict.fromkeys(editors, 0)
    outstanding: list[tuple[int, Any, Any, int]] = []  # editor, id, token, upstream id
    seen_upstream: set[int] = set()
    for _ in range(data.draw(st.integers(1, 25))):
        if len(outstanding) > 0 and data.draw(st.booleans()):
            editor, original, token, upstream_id = outstanding.pop(
                data.draw(st.integers(0, len(outstanding) - 1))
            )
            if token is not None:
                routing = mux.from_upstream(progress(upstream_id))
                assert [(e, m["params"]["progressToken"]) for e, m in routing.editors] == [
                    (editor, token)
                ]
            routing = mux.from_upstream(answer(upstream_id, {"u": upstream_id}))
            assert routing == Routing(editors=[(editor, answer(original, {"u": upstream_id}))])
        else:
            editor = data.draw(st.sampled_from(editors))
            n = counters[editor]
            counters[editor] += 1
            original = data.draw(st.sampled_from([n, f"r{n}"]))
            token = data.draw(st.sampled_from([None, n, "tok"]))
            params = {"_meta": {"progressToken": token}} if token is not None else {}
            up = forward(mux, editor, req(original, "tools/call", params))
            assert up["id"] not in seen_upstream
            seen_upstream.add(up["id"])
            outstanding.append((editor, original, token, up["id"]))
