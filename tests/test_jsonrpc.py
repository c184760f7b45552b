"""jsonrpc: decoding, classifying and building JSON-RPC 2.0 messages."""

from __future__ import annotations

from typing import Any

import pytest

from mcpd.upstream import jsonrpc
from mcpd.upstream.jsonrpc import InvalidMessage

# --- decode ------------------------------------------------------------------------------


def test_decode_returns_the_message_as_a_dict() -> None:
    raw = b'{"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {"cursor": "c"}}'
    assert jsonrpc.decode(raw) == {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/list",
        "params": {"cursor": "c"},
    }


def test_decode_keeps_unicode_and_nested_values() -> None:
    raw = '{"jsonrpc":"2.0","result":{"t":"h\u00e9 \u2603","n":[1,2.5,null,true]},"id":"x"}'
    message = jsonrpc.decode(raw.encode())
    assert message["result"] == {"t": "h\u00e9 \u2603", "n": [1, 2.5, None, True]}
    assert message["id"] == "x"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"nope",
        b'{"jsonrpc": "2.0"',
        b'{"jsonrpc": "2.0"} trailing',
        b"{'jsonrpc': '2.0'}",
        b'{"jsonrpc": "2.0",}',
        b"\xff\xfe",
    ],
)
def test_decode_rejects_invalid_json(raw: bytes) -> None:
    with pytest.raises(InvalidMessage, match=r"^not valid JSON: ") as caught:
        jsonrpc.decode(raw)
    # The msgspec error is not chained: the message says all there is.
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


@pytest.mark.parametrize(
    "raw",
    [
        b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]',
        b"[]",
        b'"2.0"',
        b"2",
        b"null",
        b"true",
    ],
)
def test_decode_rejects_json_that_is_not_an_object(raw: bytes) -> None:
    with pytest.raises(InvalidMessage, match=r'^not a JSON-RPC 2\.0 message .*"jsonrpc": "2\.0"'):
        jsonrpc.decode(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id": 1, "method": "ping"}',
        b'{"jsonrpc": "1.0", "id": 1, "method": "ping"}',
        b'{"jsonrpc": 2.0, "id": 1, "method": "ping"}',
        b'{"jsonrpc": null, "id": 1, "method": "ping"}',
        b'{"JSONRPC": "2.0", "id": 1, "method": "ping"}',
        b"{}",
    ],
)
def test_decode_rejects_objects_without_jsonrpc_2_0(raw: bytes) -> None:
    with pytest.raises(InvalidMessage, match=r"^not a JSON-RPC 2\.0 message"):
        jsonrpc.decode(raw)


def test_invalid_message_is_a_value_error() -> None:
    assert issubclass(InvalidMessage, ValueError)


def test_decode_rejects_deeply_nested_json_as_invalid() -> None:
    depth = 100_000
    raw = b'{"jsonrpc": "2.0", "id": 1, "result": ' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(InvalidMessage):
        jsonrpc.decode(raw)


def test_encode_then_decode_round_trips() -> None:
    message = jsonrpc.request(3, "tools/call", {"name": "x", "arguments": {"a": [1, "b"]}})
    assert jsonrpc.decode(jsonrpc.encode(message)) == message
    assert isinstance(jsonrpc.encode(message), bytes)


# --- Classification ------------------------------------------------------------------------

KINDS: list[tuple[dict[str, Any], tuple[bool, bool, bool]]] = [
    ({"jsonrpc": "2.0", "id": 1, "method": "ping"}, (True, False, False)),
    ({"jsonrpc": "2.0", "id": "a", "method": "x", "params": {}}, (True, False, False)),
    ({"jsonrpc": "2.0", "id": 0, "method": "ping"}, (True, False, False)),
    ({"jsonrpc": "2.0", "id": None, "method": "ping"}, (True, False, False)),
    ({"jsonrpc": "2.0", "method": "notifications/initialized"}, (False, True, False)),
    ({"jsonrpc": "2.0", "method": "n", "params": {"id": 1}}, (False, True, False)),
    ({"jsonrpc": "2.0", "id": 1, "result": {}}, (False, False, True)),
    ({"jsonrpc": "2.0", "id": 1, "result": None}, (False, False, True)),
    ({"jsonrpc": "2.0", "id": None, "error": {"code": -1, "message": "m"}}, (False, False, True)),
    # A method makes it a request or notification, whatever else it carries.
    ({"jsonrpc": "2.0", "id": 1, "method": "x", "result": {}}, (True, False, False)),
    ({"jsonrpc": "2.0", "method": "x", "error": {}}, (False, True, False)),
    ({"jsonrpc": "2.0", "id": 1}, (False, False, False)),
    ({"jsonrpc": "2.0"}, (False, False, False)),
]


@pytest.mark.parametrize(("message", "kinds"), KINDS)
def test_classification(message: dict[str, Any], kinds: tuple[bool, bool, bool]) -> None:
    got = (
        jsonrpc.is_request(message),
        jsonrpc.is_notification(message),
        jsonrpc.is_response(message),
    )
    assert got == kinds


def test_a_message_is_at_most_one_kind() -> None:
    for message, _ in KINDS:
        kinds = [
            jsonrpc.is_request(message),
            jsonrpc.is_notification(message),
            jsonrpc.is_response(message),
        ]
        assert sum(kinds) <= 1, message


# --- progress_token ---------------------------------------------------------------------------


def _with_meta(meta: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"_meta": meta}}


@pytest.mark.parametrize("token", ["abc", "", 0, 1, -5, 2**40])
def test_progress_token_is_returned_when_str_or_int(token: Any) -> None:
    assert jsonrpc.progress_token(_with_meta({"progressToken": token})) == token
    assert type(jsonrpc.progress_token(_with_meta({"progressToken": token}))) is type(token)


def test_progress_token_ignores_other_meta_keys() -> None:
    message = _with_meta({"progressToken": "t", "other": 1})
    assert jsonrpc.progress_token(message) == "t"


@pytest.mark.parametrize(
    "message",
    [
        {"jsonrpc": "2.0", "id": 1, "method": "x"},
        {"jsonrpc": "2.0", "id": 1, "method": "x", "params": None},
        {"jsonrpc": "2.0", "id": 1, "method": "x", "params": [{"_meta": {"progressToken": 1}}]},
        {"jsonrpc": "2.0", "id": 1, "method": "x", "params": "p"},
        {"jsonrpc": "2.0", "id": 1, "method": "x", "params": {}},
        {"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"progressToken": 1}},
        _with_meta(None),
        _with_meta([]),
        _with_meta("progressToken"),
        _with_meta({}),
        _with_meta({"progresstoken": 1}),
        _with_meta({"progressToken": None}),
        _with_meta({"progressToken": 1.5}),
        _with_meta({"progressToken": [1]}),
        _with_meta({"progressToken": {"t": 1}}),
    ],
)
def test_progress_token_is_none_without_a_valid_token(message: dict[str, Any]) -> None:
    assert jsonrpc.progress_token(message) is None


def test_progress_token_of_a_notification_and_a_response() -> None:
    notification = jsonrpc.notification("n", {"_meta": {"progressToken": 4}})
    assert jsonrpc.progress_token(notification) == 4
    assert jsonrpc.progress_token(jsonrpc.result(1, {"_meta": {"progressToken": 4}})) is None


# --- Builders ----------------------------------------------------------------------------------


def test_request_builder() -> None:
    assert jsonrpc.request(1, "ping") == {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    assert jsonrpc.request("a", "tools/list", {}) == {
        "jsonrpc": "2.0",
        "id": "a",
        "method": "tools/list",
        "params": {},
    }
    message = jsonrpc.request(2, "m", {"k": "v"})
    assert message["params"] == {"k": "v"}
    assert jsonrpc.is_request(message)


def test_notification_builder() -> None:
    assert jsonrpc.notification("notifications/initialized") == {
        "jsonrpc": "2.0",
        "method": "notifications/initialized",
    }
    message = jsonrpc.notification("notifications/cancelled", {"requestId": 3})
    assert message == {
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": {"requestId": 3},
    }
    assert jsonrpc.is_notification(message)


def test_result_builder() -> None:
    assert jsonrpc.result(5, {"tools": []}) == {"jsonrpc": "2.0", "id": 5, "result": {"tools": []}}
    assert jsonrpc.result(None, {}) == {"jsonrpc": "2.0", "id": None, "result": {}}
    assert jsonrpc.is_response(jsonrpc.result("x", None))


def test_error_builder() -> None:
    assert jsonrpc.error(1, jsonrpc.METHOD_NOT_FOUND, "no such method") == {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": -32601, "message": "no such method"},
    }
    with_data = jsonrpc.error(None, jsonrpc.INTERNAL_ERROR, "boom", {"why": "x"})
    assert with_data == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32603, "message": "boom", "data": {"why": "x"}},
    }
    # Falsy data is still data; only None leaves it out.
    assert jsonrpc.error(1, -1, "m", 0)["error"]["data"] == 0
    assert jsonrpc.error(1, -1, "m", "")["error"]["data"] == ""
    assert jsonrpc.is_response(with_data)


def test_error_codes_follow_json_rpc() -> None:
    assert jsonrpc.PARSE_ERROR == -32700
    assert jsonrpc.INVALID_REQUEST == -32600
    assert jsonrpc.METHOD_NOT_FOUND == -32601
    assert jsonrpc.INTERNAL_ERROR == -32603
    # Implementation-defined server errors live in -32099..-32000.
    assert -32099 <= jsonrpc.SERVER_UNAVAILABLE <= -32000


def test_builders_return_fresh_dicts() -> None:
    params = {"a": 1}
    first = jsonrpc.request(1, "m", params)
    second = jsonrpc.request(1, "m", params)
    assert first is not second
    first["id"] = 2
    assert second["id"] == 1
