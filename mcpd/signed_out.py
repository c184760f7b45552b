"""What an editor gets while its server waits for the user to sign in, sans-IO.

Theory of operation
-------------------
An editor attached to a server in `needs_auth` (or `authorizing`) is not
left with a broken server:

- its `initialize` and first `tools/list` are answered from what the server
  last showed (mcpd/shown.py), so the editor lists the server and its tools;
  with nothing kept, `initialize` fails with the sign-in link in its message;
- any other request asks the user to sign in: an editor that declared URL
  elicitation (`elicitation.url`) gets the 2025-11-25 error -32042 carrying a
  URL elicitation, which it shows and then retries the call; any other editor
  gets an error whose message itself holds the link and the command (some
  editors show only an error's text, and some hide the server's name, so
  the link is what makes it useful);
- a request that arrives while the sign-in is under way waits for it (the
  caller bounds the wait and honours the editor's cancellation) and then goes
  to the server, so the user's request succeeds once they have signed in.

The link is the daemon's own `/connect/<nonce>` (see mcpd/oauth/manager.py):
it never carries the flow's `state` or PKCE challenge. Once the server is
connected the editors told to sign in get `notifications/elicitation/complete`
(those that got an elicitation) and list changes (those shown kept lists).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from .upstream import jsonrpc
from .upstream.mux import negotiated

URL_ELICITATION_REQUIRED: Final = -32042
# Requests answered while signed out whatever the server would say.
_LOCAL = frozenset({"ping", "logging/setLevel"})


@dataclass(frozen=True)
class Reply:
    """Answer the editor with this, now."""

    message: dict[str, Any]
    # An initialize answered from what the server last showed.
    initialized: bool = False


@dataclass(frozen=True)
class SignIn:
    """Ask the user to sign in (the caller makes the link): `sign_in_error`."""


@dataclass(frozen=True)
class Wait:
    """The sign-in is under way: send the request once the server is connected."""


@dataclass(frozen=True)
class Drop:
    """A notification: nothing to do with it until the server is back."""


Decision = Reply | SignIn | Wait | Drop


def decide(
    message: dict[str, Any],
    initialize: dict[str, Any] | None,
    tools: dict[str, Any] | None,
    *,
    signing_in: bool,
) -> Decision:
    """What to do with an editor's message while its server needs a sign-in
    (`signing_in`: one is under way); `initialize` and `tools` are what the
    server last showed, if anything."""
    if not jsonrpc.is_request(message) or not jsonrpc.is_id(message["id"]):
        return Drop()
    method, params = message["method"], message.get("params")
    request_id = message["id"]
    if method == "initialize":
        if initialize is None:
            return SignIn()
        return Reply(jsonrpc.result(request_id, negotiated(initialize, params)), initialized=True)
    if method in _LOCAL:
        return Reply(jsonrpc.result(request_id, {}))
    first_page = not (isinstance(params, dict) and params.get("cursor"))
    if method == "tools/list" and first_page and tools is not None:
        return Reply(jsonrpc.result(request_id, tools))
    return Wait() if signing_in else SignIn()


def declares_url_elicitation(initialize_params: Any) -> bool:
    capabilities = (
        initialize_params.get("capabilities") if isinstance(initialize_params, dict) else None
    )
    elicitation = capabilities.get("elicitation") if isinstance(capabilities, dict) else None
    return isinstance(elicitation, dict) and "url" in elicitation


def sign_in_error(
    request_id: jsonrpc.Id,
    server: str,
    link: str,
    elicitation_id: str | None,
    reason: str | None = None,
) -> dict[str, Any]:
    """The error that asks the user to sign in: a URL elicitation (-32042) when
    `elicitation_id` is given (the editor declared URL mode), else a message
    that holds the link itself; with why a sign-in is needed, if known. Useful
    without the server's name."""
    why = f" ({reason})" if reason else ""
    text = (
        f"Sign in to use this server{why}: open {link} in a browser "
        f"(or run `mcpctl auth {server}` in a terminal), then try again."
    )
    if elicitation_id is None:
        return jsonrpc.error(request_id, jsonrpc.SERVER_UNAVAILABLE, text)
    elicitation = {
        "mode": "url",
        "elicitationId": elicitation_id,
        "url": link,
        "message": "Sign in to use this server (mcpd opens the server's sign-in page).",
    }
    return jsonrpc.error(
        request_id,
        URL_ELICITATION_REQUIRED,
        "This request needs a sign-in: " + text,
        {"elicitations": [elicitation]},
    )


def after_sign_in(
    capabilities: dict[str, Any], elicitation_ids: list[str], shown_lists: bool
) -> list[dict[str, Any]]:
    """What an editor told to sign in is sent once the server is connected: the
    end of its elicitations, and (if it was shown kept lists, or none) the list
    changes the server's capabilities allow, so it lists afresh."""
    messages = [
        jsonrpc.notification("notifications/elicitation/complete", {"elicitationId": eid})
        for eid in elicitation_ids
    ]
    if shown_lists:
        for name in ("tools", "prompts", "resources"):
            if name in capabilities:
                messages.append(jsonrpc.notification(f"notifications/{name}/list_changed"))
    return messages
