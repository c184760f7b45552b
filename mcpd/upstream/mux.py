"""Sharing one upstream MCP session between editors: the routing rules, sans-IO.

Theory of operation
-------------------
Every editor numbers its requests itself, so two editors may both send id 1
at the same time. The multiplexer gives each forwarded request a fresh
upstream id and remembers (editor, original id); the response is routed back
by that map and its id restored. Progress tokens get the same treatment (the
upstream token is the upstream request id, unique while the request lives),
and so do the ids inside `notifications/cancelled`.

Traffic from the server goes where it belongs: responses to their requester;
progress to the owner of the token; `resources/updated` to the editors that
subscribed to that URI (the upstream subscription is reference-counted: the
first subscriber subscribes, the last one out unsubscribes); every other
notification to all editors. A server-to-client request (sampling,
elicitation, roots) goes to the editor whose request it arrived with when that
is known, else to the most recently active editor that declared the
capability, else it is answered with an error.

The daemon itself also makes requests on the session (`tools/list` for
`mcpctl tools`, say); those are "own" requests whose responses are handed back
to it rather than to an editor.

Nothing here does I/O: each call takes a decoded message and returns a
`Routing` that says what to send where.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import jsonrpc
from .jsonrpc import Id

EditorId = int

KNOWN_PROTOCOLS = frozenset({"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"})

# Which client capability a server-to-client request needs.
CAPABILITY_OF = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}


@dataclass
class Editor:
    id: EditorId
    capabilities: dict[str, Any] = field(default_factory=dict)
    last_active: float = 0.0
    initialized: bool = False
    in_flight: set[int] = field(default_factory=set)
    subscriptions: set[str] = field(default_factory=set)


@dataclass
class Routing:
    upstream: list[dict[str, Any]] = field(default_factory=list)
    editors: list[tuple[EditorId, dict[str, Any]]] = field(default_factory=list)
    own: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    # Why a message could not be routed as it is (for the log), if it could not.
    problem: str | None = None

    def extend(self, other: Routing) -> None:
        self.upstream += other.upstream
        self.editors += other.editors
        self.own += other.own


@dataclass
class _Pending:
    editor: EditorId
    original_id: Id
    original_token: Id | None


class Multiplexer:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.initialize_result: dict[str, Any] | None = None
        self.editors: dict[EditorId, Editor] = {}
        self._clock = clock
        self._next_id = 0
        self._pending: dict[int, _Pending] = {}
        self._own: set[int] = set()
        self._server_requests: dict[Id, EditorId] = {}
        self._subscribers: dict[str, set[EditorId]] = {}

    # --- Editors --------------------------------------------------------------

    def attach(self, editor: EditorId) -> None:
        self.editors[editor] = Editor(editor, last_active=self._clock())

    def detach(self, editor_id: EditorId) -> Routing:
        """Forget an editor: cancel its requests upstream, drop its subscriptions."""
        routing = Routing()
        editor = self.editors.pop(editor_id, None)
        if editor is None:
            return routing
        for upstream_id in sorted(editor.in_flight):
            del self._pending[upstream_id]
            routing.upstream.append(
                jsonrpc.notification(
                    "notifications/cancelled",
                    {"requestId": upstream_id, "reason": "the editor disconnected"},
                )
            )
        for uri in sorted(editor.subscriptions):
            routing.extend(self._unsubscribe(editor_id, uri, None))
        for request_id, owner in list(self._server_requests.items()):
            if owner == editor_id:
                del self._server_requests[request_id]
                routing.upstream.append(
                    jsonrpc.error(request_id, jsonrpc.INTERNAL_ERROR, "the editor disconnected")
                )
        return routing

    def initialize_editor(self, editor_id: EditorId, params: Any) -> None:
        editor = self.editors[editor_id]
        capabilities = params.get("capabilities") if isinstance(params, dict) else None
        editor.capabilities = capabilities if isinstance(capabilities, dict) else {}
        editor.initialized = True

    # --- Requests of the daemon itself -------------------------------------------

    def _allocate(self) -> int:
        self._next_id += 1
        return self._next_id

    def own_request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        upstream_id = self._allocate()
        self._own.add(upstream_id)
        return jsonrpc.request(upstream_id, method, params)

    def forget_own(self, upstream_id: int) -> None:
        self._own.discard(upstream_id)

    def unawaited_request(
        self, method: str, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A request of the daemon's whose answer nobody waits for (it is dropped)."""
        return jsonrpc.request(self._allocate(), method, params)

    def subscribed_uris(self) -> list[str]:
        return sorted(self._subscribers)

    def fail_all_pending(self, code: int, message: str) -> Routing:
        """The session is gone: every request in flight gets an error."""
        routing = Routing()
        for upstream_id, pending in sorted(self._pending.items()):
            editor = self.editors.get(pending.editor)
            if editor is not None:
                editor.in_flight.discard(upstream_id)
                routing.editors.append(
                    (pending.editor, jsonrpc.error(pending.original_id, code, message))
                )
        for upstream_id in sorted(self._own):
            routing.own.append((upstream_id, jsonrpc.error(upstream_id, code, message)))
        self._pending.clear()
        self._own.clear()
        self._server_requests.clear()
        return routing

    # --- Editor to server ---------------------------------------------------------

    def from_editor(self, editor_id: EditorId, message: dict[str, Any]) -> Routing:
        editor = self.editors[editor_id]
        editor.last_active = self._clock()
        if jsonrpc.is_request(message):
            return self._editor_request(editor, message)
        if jsonrpc.is_notification(message):
            return self._editor_notification(editor, message)
        if jsonrpc.is_response(message):
            return self._editor_response(editor, message)
        if "method" in message:
            problem = "a method must be a string"
            return Routing(
                editors=[(editor_id, jsonrpc.error(None, jsonrpc.INVALID_REQUEST, problem))]
            )
        return Routing(
            editors=[
                (
                    editor_id,
                    jsonrpc.error(
                        message.get("id"), jsonrpc.INVALID_REQUEST, "not a request or response"
                    ),
                )
            ]
        )

    def _editor_request(self, editor: Editor, message: dict[str, Any]) -> Routing:
        method = message["method"]
        if not jsonrpc.is_id(message["id"]):
            problem = "request ids are strings or integers"
            return Routing(
                editors=[(editor.id, jsonrpc.error(None, jsonrpc.INVALID_REQUEST, problem))]
            )
        if method == "initialize":
            params = message.get("params")
            self.initialize_editor(editor.id, params)
            result = dict(self.initialize_result or {})
            requested = params.get("protocolVersion") if isinstance(params, dict) else None
            # An editor that asks for an older revision than the session speaks
            # gets that one: the newer revisions only add to the older ones.
            if (
                isinstance(requested, str)
                and requested in KNOWN_PROTOCOLS
                and requested < str(result.get("protocolVersion", ""))
            ):
                result["protocolVersion"] = requested
            return Routing(editors=[(editor.id, jsonrpc.result(message["id"], result))])
        if method == "ping":
            return Routing(editors=[(editor.id, jsonrpc.result(message["id"], {}))])
        params = message.get("params")
        uri = params.get("uri") if isinstance(params, dict) else None
        if method == "resources/subscribe" and isinstance(uri, str):
            editor.subscriptions.add(uri)
            subscribers = self._subscribers.setdefault(uri, set())
            subscribers.add(editor.id)
            if len(subscribers) > 1:  # already subscribed upstream
                return Routing(editors=[(editor.id, jsonrpc.result(message["id"], {}))])
        elif method == "resources/unsubscribe" and isinstance(uri, str):
            return self._unsubscribe(editor.id, uri, message)
        return Routing(upstream=[self._forward(editor, message)])

    def _forward(self, editor: Editor, message: dict[str, Any]) -> dict[str, Any]:
        upstream_id = self._allocate()
        token = jsonrpc.progress_token(message)
        self._pending[upstream_id] = _Pending(editor.id, message["id"], token)
        editor.in_flight.add(upstream_id)
        forwarded = {**message, "id": upstream_id}
        if token is not None:
            params = message["params"]
            forwarded["params"] = {
                **params,
                "_meta": {**params["_meta"], "progressToken": upstream_id},
            }
        return forwarded

    def _unsubscribe(
        self, editor_id: EditorId, uri: str, message: dict[str, Any] | None
    ) -> Routing:
        """Drop one subscriber; unsubscribe upstream when it was the last one."""
        editor = self.editors.get(editor_id)
        if editor is not None:
            editor.subscriptions.discard(uri)
        subscribers = self._subscribers.get(uri, set())
        was_subscribed = editor_id in subscribers
        subscribers.discard(editor_id)
        last = was_subscribed and not subscribers
        if last:
            del self._subscribers[uri]
        if message is None:  # the editor left: the daemon unsubscribes for it
            unsubscribe = self.unawaited_request("resources/unsubscribe", {"uri": uri})
            return Routing(upstream=[unsubscribe] if last else [])
        if last and editor is not None:
            return Routing(upstream=[self._forward(editor, message)])
        return Routing(editors=[(editor_id, jsonrpc.result(message["id"], {}))])

    def _editor_notification(self, editor: Editor, message: dict[str, Any]) -> Routing:
        method = message["method"]
        if method == "notifications/initialized":
            return Routing()  # the daemon initialized the session itself
        if method == "notifications/cancelled":
            params = message.get("params")
            original = params.get("requestId") if isinstance(params, dict) else None
            for upstream_id in editor.in_flight:
                if self._pending[upstream_id].original_id == original:
                    # The server will not answer a cancelled request: forget it now.
                    del self._pending[upstream_id]
                    editor.in_flight.discard(upstream_id)
                    return Routing(
                        upstream=[
                            {
                                **message,
                                "params": {**params, "requestId": upstream_id},  # type: ignore[dict-item]
                            }
                        ]
                    )
            return Routing()  # already answered, or never sent
        return Routing(upstream=[message])

    def _editor_response(self, editor: Editor, message: dict[str, Any]) -> Routing:
        request_id = message.get("id")
        if not jsonrpc.is_id(request_id) or self._server_requests.get(request_id) != editor.id:
            return Routing()  # not a request we gave this editor
        del self._server_requests[request_id]
        return Routing(upstream=[message])

    # --- Server to editors ---------------------------------------------------------

    def from_upstream(self, message: dict[str, Any], related: int | None = None) -> Routing:
        """Route a server message; `related` is the upstream request whose stream carried it."""
        if jsonrpc.is_response(message):
            return self._server_response(message)
        if jsonrpc.is_request(message):
            return self._server_request(message, related)
        if jsonrpc.is_notification(message):
            return self._server_notification(message)
        if "method" in message and jsonrpc.is_id(message.get("id")):
            problem = "a method must be a string"
            return Routing(
                upstream=[jsonrpc.error(message["id"], jsonrpc.INVALID_REQUEST, problem)],
                problem=f"a request whose method is not a string; answered: {problem}",
            )
        return Routing(problem="not a request, notification or response; dropped")

    def _server_response(self, message: dict[str, Any]) -> Routing:
        upstream_id = message.get("id")
        if not isinstance(upstream_id, int):
            return Routing()
        if upstream_id in self._own:
            self._own.discard(upstream_id)
            return Routing(own=[(upstream_id, message)])
        pending = self._pending.pop(upstream_id, None)
        if pending is None:
            return Routing()  # cancelled, or its editor left
        editor = self.editors.get(pending.editor)
        if editor is None:
            return Routing()
        editor.in_flight.discard(upstream_id)
        return Routing(editors=[(pending.editor, {**message, "id": pending.original_id})])

    def _server_request(self, message: dict[str, Any], related: int | None) -> Routing:
        method, request_id = message["method"], message["id"]
        if not jsonrpc.is_id(request_id):
            problem = "request ids are strings or integers"
            return Routing(
                upstream=[jsonrpc.error(None, jsonrpc.INVALID_REQUEST, problem)],
                problem=f"a request with an invalid id; answered: {problem}",
            )
        if method == "ping":
            return Routing(upstream=[jsonrpc.result(request_id, {})])
        editor = self._editor_for(method, related)
        if editor is None:
            capability = CAPABILITY_OF.get(method, method)
            return Routing(
                upstream=[
                    jsonrpc.error(
                        request_id,
                        jsonrpc.METHOD_NOT_FOUND,
                        f"no attached editor supports {capability}",
                    )
                ]
            )
        self._server_requests[request_id] = editor.id
        return Routing(editors=[(editor.id, message)])

    def _editor_for(self, method: str, related: int | None) -> Editor | None:
        capability = CAPABILITY_OF.get(method)

        def capable(editor: Editor) -> bool:
            return editor.initialized and (capability is None or capability in editor.capabilities)

        pending = self._pending.get(related) if related is not None else None
        if pending is not None:
            editor = self.editors.get(pending.editor)
            if editor is not None and capable(editor):
                return editor
        candidates = [e for e in self.editors.values() if capable(e)]
        return max(candidates, key=lambda e: e.last_active, default=None)

    def _server_notification(self, message: dict[str, Any]) -> Routing:
        method = message["method"]
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        if method == "notifications/progress":
            token = params.get("progressToken")
            pending = self._pending.get(token) if isinstance(token, int) else None
            if pending is None or pending.original_token is None:
                return Routing()
            restored = {**params, "progressToken": pending.original_token}
            return Routing(editors=[(pending.editor, {**message, "params": restored})])
        if method == "notifications/cancelled":
            request_id = params.get("requestId")
            owner = (
                self._server_requests.pop(request_id, None) if jsonrpc.is_id(request_id) else None
            )
            return Routing(editors=[(owner, message)] if owner is not None else [])
        if method == "notifications/resources/updated":
            uri = params.get("uri")
            subscribers = self._subscribers.get(uri, set()) if isinstance(uri, str) else set()
            return Routing(editors=[(e, message) for e in sorted(subscribers)])
        return Routing(editors=[(e.id, message) for e in self.editors.values() if e.initialized])
