"""How `mcpctl call` answers elicitation: the schema's defaults, or the user on a terminal."""

from __future__ import annotations

import io
from typing import Any

import pytest

from mcpctl.call import ToolCall
from mcpctl.elicit import InvalidRequest, Terminal, parse_value, with_defaults

# The conformance suite's elicitation-sep1034-client-defaults request.
SEP1034 = {
    "message": "Test client default value handling - please accept with defaults",
    "requestedSchema": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "User name", "default": "John Doe"},
            "age": {"type": "integer", "description": "User age", "default": 30},
            "score": {"type": "number", "description": "User score", "default": 95.5},
            "status": {
                "type": "string",
                "enum": ["active", "inactive", "pending"],
                "default": "active",
            },
            "verified": {"type": "boolean", "default": True},
        },
        "required": [],
    },
}


def form(properties: dict[str, Any], required: Any = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required is not None:
        schema["required"] = required
    return {"message": "Tell us", "requestedSchema": schema, **extra}


# --- Without a terminal: the schema's defaults (SEP-1034) -------------------------------


def test_every_default_is_applied() -> None:
    assert with_defaults(SEP1034) == {
        "action": "accept",
        "content": {
            "name": "John Doe",
            "age": 30,
            "score": 95.5,
            "status": "active",
            "verified": True,
        },
    }


def test_an_explicit_form_mode_is_the_same() -> None:
    assert with_defaults({**SEP1034, "mode": "form"})["action"] == "accept"


def test_required_fields_with_defaults_are_accepted_and_optional_ones_left_out() -> None:
    params = form(
        {"name": {"type": "string", "default": "Ada"}, "nickname": {"type": "string"}},
        ["name"],
    )
    assert with_defaults(params) == {"action": "accept", "content": {"name": "Ada"}}


@pytest.mark.parametrize(
    "required",
    [["name"], ["ghost"], ["name", "color"]],
    ids=["no-default", "not-a-property", "one-without"],
)
def test_a_required_field_without_a_default_declines(required: list[str]) -> None:
    params = form(
        {"name": {"type": "string"}, "color": {"type": "string", "default": "blue"}}, required
    )
    assert with_defaults(params) == {"action": "decline"}


def test_an_empty_form_is_accepted_empty() -> None:
    assert with_defaults(form({})) == {"action": "accept", "content": {}}


def test_a_required_list_that_is_not_one_is_ignored() -> None:
    params = form({"name": {"type": "string"}}, "name")
    assert with_defaults(params) == {"action": "accept", "content": {}}


def test_a_falsy_default_is_a_default() -> None:
    params = form(
        {"n": {"type": "integer", "default": 0}, "b": {"type": "boolean", "default": False}},
        ["n", "b"],
    )
    assert with_defaults(params) == {"action": "accept", "content": {"n": 0, "b": False}}


def test_a_url_is_declined() -> None:
    params = {"mode": "url", "message": "Go", "url": "https://example.com", "elicitationId": "1"}
    assert with_defaults(params) == {"action": "decline"}


@pytest.mark.parametrize(
    "params",
    [
        {"message": "no schema"},
        {"message": "bad schema", "requestedSchema": []},
        {"message": "bad", "requestedSchema": {"type": "object", "properties": []}},
        {"mode": "telepathy", "message": "?", "requestedSchema": {"type": "object"}},
    ],
)
def test_a_request_that_makes_no_sense_is_invalid(params: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        with_defaults(params)


# --- Values typed at a prompt -------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "typed", "value"),
    [
        ({"type": "string"}, "hello", "hello"),
        ({"type": "boolean"}, "y", True),
        ({"type": "boolean"}, "No", False),
        ({"type": "integer"}, "42", 42),
        ({"type": "number"}, "2.5", 2.5),
        ({"type": "number"}, "3", 3),
        ({"type": "string", "enum": ["a", "b"]}, "2", "b"),
        ({"type": "string", "enum": ["a", "b"]}, "a", "a"),
        ({"type": "string", "enum": ["r", "g"], "enumNames": ["Red", "Green"]}, "Green", "g"),
        ({"type": "string", "oneOf": [{"const": "#f00", "title": "Red"}]}, "Red", "#f00"),
        ({"type": "array", "items": {"type": "string", "enum": ["x", "y"]}}, "1, y", ["x", "y"]),
        (
            {"type": "array", "items": {"anyOf": [{"const": "a", "title": "A"}]}},
            "A",
            ["a"],
        ),
        ({"type": "string", "format": "date"}, "2026-12-06", "2026-12-06"),
        ({"type": "string", "format": "email"}, "ada@example.com", "ada@example.com"),
        ({"type": "string", "pattern": "^[A-Z]+$"}, "ADA", "ADA"),
    ],
)
def test_typed_values_are_read_as_their_schema_says(
    spec: dict[str, Any], typed: str, value: Any
) -> None:
    assert parse_value(spec, typed) == value


@pytest.mark.parametrize(
    ("spec", "typed"),
    [
        ({"type": "boolean"}, "maybe"),
        ({"type": "integer"}, "4.5"),
        ({"type": "number"}, "many"),
        ({"type": "integer", "minimum": 18}, "17"),
        ({"type": "number", "maximum": 1}, "1.5"),
        ({"type": "string", "enum": ["a", "b"]}, "3"),
        ({"type": "string", "minLength": 3}, "ab"),
        ({"type": "string", "maxLength": 2}, "abc"),
        ({"type": "string", "pattern": "^[A-Z]+$"}, "ada"),
        ({"type": "string", "format": "email"}, "ada"),
        ({"type": "string", "format": "date"}, "yesterday"),
        ({"type": "string", "format": "uri"}, "no scheme"),
        ({"type": "array", "items": {"enum": ["x", "y"]}, "minItems": 2}, "x"),
        ({"type": "array", "items": {"enum": ["x", "y"]}, "maxItems": 1}, "x, y"),
    ],
)
def test_values_that_do_not_fit_are_refused(spec: dict[str, Any], typed: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each says why in its own words
        parse_value(spec, typed)


# --- On a terminal ------------------------------------------------------------------


def ask(params: dict[str, Any], typed: str, opened: list[str] | None = None) -> tuple[Any, str]:
    shown = io.StringIO()

    def open_url(url: str) -> bool:
        if opened is not None:
            opened.append(url)
        return True

    answer = Terminal("github", io.StringIO(typed), shown, open_url).answer(params)
    return answer, shown.getvalue()


CONTACT = form(
    {
        "name": {"type": "string", "title": "Name", "description": "Your full name"},
        "color": {"type": "string", "enum": ["red", "blue"], "default": "blue"},
        "age": {"type": "integer", "minimum": 0},
    },
    ["name"],
)


def test_the_user_fills_the_form_and_enter_takes_the_default() -> None:
    answer, shown = ask(CONTACT, "Ada\n\n\n\n")
    assert answer == {"action": "accept", "content": {"name": "Ada", "color": "blue"}}
    assert "Server 'github' asks" in shown
    assert "Tell us" in shown
    assert "Name (Your full name):" in shown
    assert "1) red  2) blue" in shown
    assert "[blue]" in shown
    assert "(optional)" in shown


def test_a_required_field_and_a_bad_value_are_asked_again() -> None:
    answer, shown = ask(CONTACT, "\nAda\n1\n-3\n7\ny\n")
    assert answer == {"action": "accept", "content": {"name": "Ada", "color": "red", "age": 7}}
    assert "required: type a value" in shown
    assert "at least 0" in shown


def test_the_answer_can_be_edited_before_it_is_sent() -> None:
    answer, _ = ask(CONTACT, "Ada\n\n\ne\nGrace\n\n\n\n")
    assert answer == {"action": "accept", "content": {"name": "Grace", "color": "blue"}}


@pytest.mark.parametrize(("typed", "action"), [("d", "decline"), ("c", "cancel")])
def test_the_user_can_decline_or_cancel(typed: str, action: str) -> None:
    answer, _ = ask(CONTACT, f"Ada\n\n\n{typed}\n")
    assert answer == {"action": action}


def test_end_of_input_cancels() -> None:
    answer, shown = ask(CONTACT, "Ada\n")
    assert answer == {"action": "cancel"}
    assert "(cancelled)" in shown


URL = {
    "mode": "url",
    "message": "Connect your account",
    "url": "https://accounts.example.com/connect?id=1",
    "elicitationId": "e1",
}


def test_a_url_is_shown_whole_with_its_host_and_opened_only_on_yes() -> None:
    opened: list[str] = []
    answer, shown = ask(URL, "y\n", opened)
    assert answer == {"action": "accept"}
    assert opened == [URL["url"]]
    assert "Server 'github' asks you to open a web page" in shown
    assert URL["url"] in shown
    assert "host: accounts.example.com" in shown

    opened.clear()
    for typed in ("\n", "n\n"):
        answer, _ = ask(URL, typed, opened)
        assert answer == {"action": "decline"}
    assert ask(URL, "", opened)[0] == {"action": "cancel"}
    assert opened == []


def test_an_internationalised_host_is_flagged() -> None:
    _, shown = ask({**URL, "url": "https://xn--pple-43d.com/login"}, "n\n")
    assert "warning" in shown


@pytest.mark.parametrize("url", ["javascript:alert(1)", "file:///etc/passwd", 7, "https://"])
def test_a_url_that_is_not_a_web_address_is_invalid(url: Any) -> None:
    with pytest.raises(InvalidRequest):
        ask({**URL, "url": url}, "y\n")


# --- What mcpctl call answers to the server's other requests ------------------------------


def serve(request: dict[str, Any]) -> dict[str, Any]:
    call = ToolCall(None, "github", with_defaults, {})  # type: ignore[arg-type]
    return call._serve(request)


def test_mcpctl_call_answers_only_elicitation_and_ping() -> None:
    assert serve({"id": 1, "method": "ping"}) == {"jsonrpc": "2.0", "id": 1, "result": {}}
    refused = serve({"id": "s", "method": "sampling/createMessage", "params": {}})
    assert refused["error"]["code"] == -32601
    assert serve({"id": 2, "method": "elicitation/create", "params": SEP1034})["result"] == (
        with_defaults(SEP1034)
    )
    invalid = serve({"id": 3, "method": "elicitation/create", "params": {"message": "?"}})
    assert invalid["error"]["code"] == -32602
