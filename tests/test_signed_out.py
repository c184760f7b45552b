"""What editors get while their server waits for a sign-in: the decisions, sans-IO."""

from __future__ import annotations

import pytest

from mcpd import signed_out
from mcpd.upstream import jsonrpc

INITIALIZE = {
    "protocolVersion": "2025-11-25",
    "capabilities": {"tools": {"listChanged": True}, "prompts": {}},
    "serverInfo": {"name": "kept", "version": "1"},
}
TOOLS = {"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}


def decide(message, *, kept=True, signing_in=False):
    return signed_out.decide(
        message, INITIALIZE if kept else None, TOOLS if kept else None, signing_in=signing_in
    )


def test_initialize_and_the_first_tools_page_are_answered_from_what_was_kept():
    params = {"protocolVersion": "2025-06-18", "capabilities": {}}
    answer = decide(jsonrpc.request(1, "initialize", params))
    assert isinstance(answer, signed_out.Reply)
    assert answer.initialized
    assert answer.message["result"]["protocolVersion"] == "2025-06-18"  # the editor's own
    assert answer.message["result"]["serverInfo"]["name"] == "kept"
    listed = decide(jsonrpc.request(2, "tools/list", {}))
    assert listed == signed_out.Reply(jsonrpc.result(2, TOOLS))
    assert decide(jsonrpc.request(3, "ping")) == signed_out.Reply(jsonrpc.result(3, {}))


@pytest.mark.parametrize(
    "message",
    [
        jsonrpc.request(4, "tools/call", {"name": "echo"}),
        jsonrpc.request(5, "tools/list", {"cursor": "2"}),  # a page that was not kept
        jsonrpc.request(6, "resources/read", {"uri": "x"}),
    ],
)
def test_other_requests_ask_for_a_sign_in_or_wait_for_the_one_under_way(message):
    assert decide(message) == signed_out.SignIn()
    assert decide(message, signing_in=True) == signed_out.Wait()


def test_with_nothing_kept_initialize_asks_for_a_sign_in_and_notifications_wait():
    assert decide(jsonrpc.request(1, "initialize", {}), kept=False) == signed_out.SignIn()
    assert decide(jsonrpc.notification("notifications/initialized")) == signed_out.Drop()


def test_the_sign_in_error_carries_the_link_one_way_or_the_other():
    link = "http://127.0.0.1:19876/connect/abc"
    plain = signed_out.sign_in_error(7, "demo", link, None)
    assert plain["error"]["code"] == jsonrpc.SERVER_UNAVAILABLE
    assert link in plain["error"]["message"]
    assert "mcpctl auth demo" in plain["error"]["message"]
    why = signed_out.sign_in_error(7, "demo", link, None, "the token expired")
    assert "(the token expired)" in why["error"]["message"]
    elicited = signed_out.sign_in_error(8, "demo", link, "e1")
    assert elicited["error"]["code"] == -32042
    [elicitation] = elicited["error"]["data"]["elicitations"]
    assert elicitation == {
        "mode": "url",
        "elicitationId": "e1",
        "url": link,
        "message": elicitation["message"],
    }
    assert link in elicited["error"]["message"]  # for editors that show only the text


def test_url_elicitation_is_what_the_editor_declared():
    assert signed_out.declares_url_elicitation({"capabilities": {"elicitation": {"url": {}}}})
    assert not signed_out.declares_url_elicitation({"capabilities": {"elicitation": {}}})
    assert not signed_out.declares_url_elicitation(None)


def test_after_the_sign_in_editors_hear_of_it_and_list_afresh():
    sent = signed_out.after_sign_in(INITIALIZE["capabilities"], ["e1"], shown_lists=True)
    assert sent == [
        jsonrpc.notification("notifications/elicitation/complete", {"elicitationId": "e1"}),
        jsonrpc.notification("notifications/tools/list_changed"),
        jsonrpc.notification("notifications/prompts/list_changed"),
    ]
    assert signed_out.after_sign_in({"tools": {}}, [], shown_lists=False) == []
