"""Requests from the server (elicitation, sampling) on a shared session, end to end.

A real daemon, a real `mcpctl stdio` bridge per editor and the Python SDK
server (tests/peers/python_server.py), whose `elicit` and `sample` tools ask
the client on their call's own stream. Such a request belongs to the editor
whose call it is: that editor alone sees it, or, if it did not declare the
capability, the server gets the answer of a client without it (-32601; -32602
for an elicitation mode not declared), never another editor's answer. And
`mcpctl call` answers elicitation itself.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import time
from typing import Any

import pytest
from harness import MCPCTL, server_config, wait_state
from real_peers import python_server

DECLARING: dict[str, Any] = {"elicitation": {}, "sampling": {}}
DEFAULTS_ONLY = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "default": "Ada"},
        "age": {"type": "integer", "default": 36},
        "verified": {"type": "boolean", "default": True},
    },
    "required": ["name"],
}


@pytest.fixture
def shared(mcpd_env, run_daemon, tmp_path):
    with python_server(tmp_path) as peer:
        mcpd_env.write_config(server_config("py", peer.url))
        daemon = run_daemon()
        wait_state(daemon, "py", "connected")
        yield daemon


def text_of(reply: dict[str, Any]) -> str:
    return str(reply["result"]["content"][0]["text"])


def refusal_of(reply: dict[str, Any]) -> dict[str, Any]:
    """The client error the server got, as the peer's tool reports it."""
    assert reply["result"]["isError"] is True, reply
    error: dict[str, Any] = json.loads(text_of(reply))["error"]
    return error


def no_server_requests(editor) -> None:
    arrived = editor.quiet_for(0.5)
    assert not [m for m in arrived if "method" in m and "id" in m], arrived


@pytest.mark.parametrize("declaring_first", [True, False], ids=["declaring-first", "plain-first"])
def test_a_server_request_reaches_only_the_editor_whose_call_it_is(
    shared, editors, declaring_first
):
    if declaring_first:
        declaring, plain = editors("py"), editors("py")
        declaring.initialize(DECLARING)
        plain.initialize()
    else:
        plain, declaring = editors("py"), editors("py")
        plain.initialize()
        declaring.initialize(DECLARING)

    # The declaring editor's call: it alone is asked, and its answer completes the call.
    call = declaring.request_async("tools/call", {"name": "elicit", "arguments": {}})
    asked = declaring.wait_for_request("elicitation/create")
    assert asked["params"]["requestedSchema"]["required"] == ["name"]
    declaring.send(
        {
            "jsonrpc": "2.0",
            "id": asked["id"],
            "result": {"action": "accept", "content": {"name": "Ada", "color": "red"}},
        }
    )
    answer = json.loads(text_of(declaring.response(call)))
    assert answer == {"action": "accept", "content": {"name": "Ada", "color": "red"}}
    no_server_requests(plain)

    # The plain editor's call, with the declaring editor the most recently
    # active: the server hears "Method not found", and nobody else is asked.
    declaring.request("ping")
    refused = refusal_of(plain.call("elicit"))
    assert refused["code"] == -32601, refused
    assert "elicitation" in refused["message"], refused
    no_server_requests(declaring)

    # Sampling alike: the plain editor's is refused, the declaring editor's answered.
    declaring.request("ping")
    refused = refusal_of(plain.call("sample", {"prompt": "hi"}))
    assert refused["code"] == -32601, refused
    assert "sampling" in refused["message"], refused
    no_server_requests(declaring)
    call = declaring.request_async("tools/call", {"name": "sample", "arguments": {"prompt": "hi"}})
    asked = declaring.wait_for_request("sampling/createMessage")
    declaring.send(
        {
            "jsonrpc": "2.0",
            "id": asked["id"],
            "result": {
                "role": "assistant",
                "content": {"type": "text", "text": "sampled by the declaring editor"},
                "model": "test-model",
            },
        }
    )
    assert text_of(declaring.response(call)) == "sampled by the declaring editor"
    no_server_requests(plain)

    # `elicitation: {}` is form mode only: a URL-mode request is "Invalid params".
    refused = refusal_of(declaring.call("elicit", {"mode": "url"}))
    assert refused["code"] == -32602, refused
    assert "url" in refused["message"], refused
    no_server_requests(plain)


def test_an_editor_that_declared_url_mode_gets_url_elicitation(shared, editors):
    editor = editors("py")
    editor.initialize({"elicitation": {"form": {}, "url": {}}})
    call = editor.request_async("tools/call", {"name": "elicit", "arguments": {"mode": "url"}})
    asked = editor.wait_for_request("elicitation/create")
    assert asked["params"]["mode"] == "url"
    editor.send({"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept"}})
    assert json.loads(text_of(editor.response(call))) == {"action": "accept"}


def test_a_request_on_the_standalone_stream_goes_to_an_editor_that_can_take_it(shared, editors):
    """Not tied to any call (the server sends it on the GET stream): the most
    recently active editor that declared elicitation answers it."""
    declaring, plain = editors("py"), editors("py")
    declaring.initialize(DECLARING)
    plain.initialize()
    call = plain.request_async("tools/call", {"name": "elicit", "arguments": {"related": False}})
    asked = declaring.wait_for_request("elicitation/create")
    declaring.send({"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "decline"}})
    assert json.loads(text_of(plain.response(call))) == {"action": "decline"}


# --- mcpctl call ---------------------------------------------------------------------


def test_mcpctl_call_applies_the_schemas_defaults_without_a_terminal(shared, editors):
    # An editor that could answer is attached and active: the call's request
    # is mcpctl's all the same.
    editor = editors("py")
    editor.initialize(DECLARING)
    schema = json.dumps({"schema": DEFAULTS_ONLY})
    accepted = shared.mcpctl("call", "py", "elicit", schema)
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads(accepted.stdout) == {
        "action": "accept",
        "content": {"name": "Ada", "age": 36, "verified": True},
    }
    assert "accepted with the schema's defaults" in accepted.stderr
    # A required field without a default: declined; a URL: declined.
    declined = shared.mcpctl("call", "py", "elicit")
    assert json.loads(declined.stdout) == {"action": "decline"}, declined.stderr
    url = shared.mcpctl("call", "py", "elicit", '{"mode": "url"}')
    assert json.loads(url.stdout) == {"action": "decline"}, url.stderr
    # It declares no sampling: the server hears "Method not found".
    sampled = shared.mcpctl("call", "py", "sample", '{"prompt": "hi"}')
    assert sampled.returncode == 1
    assert json.loads(sampled.stderr)["error"]["code"] == -32601
    no_server_requests(editor)


def run_on_a_terminal(mcpd_env, *args: str, typed: str) -> tuple[int, str, str]:
    """`mcpctl ARGS` with a pseudo-terminal as its stdin, `typed` typed ahead."""
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [MCPCTL, *args],
            env=mcpd_env.vars,
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(terminal)
        terminal = -1
        os.write(controller, typed.encode())
        out, err = process.communicate(timeout=20)
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    mcpd_env.keep_output(list(args), out, err)
    return process.returncode, out, err


def test_mcpctl_call_asks_on_a_terminal(shared, mcpd_env):
    # The name (required, no default), then Enter for the color's default,
    # then Enter to send.
    started = time.monotonic()
    code, out, err = run_on_a_terminal(mcpd_env, "call", "py", "elicit", typed="Grace\n\n\n")
    assert code == 0, err
    assert json.loads(out) == {"action": "accept", "content": {"name": "Grace", "color": "blue"}}
    assert "Server 'py' asks" in err
    assert "Tell the test server about you" in err
    assert "Name (Who you are)" in err
    assert "[blue]" in err
    assert time.monotonic() - started < 20

    # A URL is opened only on a yes: "n" declines.
    code, out, err = run_on_a_terminal(
        mcpd_env, "call", "py", "elicit", '{"mode": "url"}', typed="n\n"
    )
    assert code == 0, err
    assert json.loads(out) == {"action": "decline"}
    assert "https://example.com/connect?session=test" in err
    assert "host: example.com" in err
