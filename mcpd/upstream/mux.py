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
elicitation, roots) that arrived with a request (on its stream) goes to the
editor that sent that request and to no other; if that editor did not declare
the capability (or the elicitation mode), the server gets the error such a
client answers with. Only a request on the standalone stream goes to the most
recently active editor that declared what it needs, else it is answered with
an error.

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

import msgspec

from . import jsonrpc, modern, toolfilter
from .jsonrpc import Id

EditorId = int

KNOWN_PROTOCOLS = frozenset({"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"})

# Which client capability a server-to-client request needs.
CAPABILITY_OF = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}


@dataclass(slots=True)
class Editor:
    id: EditorId
    capabilities: dict[str, Any] = field(default_factory=dict)
    last_active: float = 0.0
    initialized: bool = False
    in_flight: set[int] = field(default_factory=set)
    subscriptions: set[str] = field(default_factory=set)
    client_info: dict[str, Any] = field(default_factory=dict)
    # Speaks the 2026-07-28 revision itself (it probed with server/discover):
    # served statelessly, its input requests and listen streams its own.
    modern: bool = False


class Routing(msgspec.Struct):
    """What to send where (a Struct: made twice per call, and its init is C's)."""

    upstream: list[dict[str, Any]] = []
    editors: list[tuple[EditorId, dict[str, Any]]] = []
    own: list[tuple[int, dict[str, Any]]] = []
    # Why a message could not be routed as it is (for the log), if it could not.
    problem: str | None = None
    # Modern servers: requests whose response streams to close (that is how
    # the revision cancels over HTTP), and whether the set of subscribed
    # resources changed (the listen stream is opened anew).
    cancel: list[int] = []
    relisten: bool = False
    # The first page of a tool list as editors were shown it (the daemon keeps
    # it for when the server cannot be asked).
    listed: dict[str, Any] | None = None

    def extend(self, other: Routing) -> None:
        self.upstream += other.upstream
        self.editors += other.editors
        self.own += other.own
        self.cancel += other.cancel
        self.relisten = self.relisten or other.relisten
        self.listed = other.listed or self.listed


class _Pending(msgspec.Struct):
    editor: EditorId
    original_id: Id
    original_token: Id | None
    method: str = ""
    # Modern servers, older editors: the request as the editor sent it (with
    # its metadata), for the retry after an input round.
    request: dict[str, Any] | None = None
    rounds: int = 0
    # Modern servers, list requests: the key of the result, and the cache's
    # generation when it was asked for (a result of an older one is not kept).
    list_key: modern.CacheKey | None = None
    generation: int = 0
    # A modern editor's `subscriptions/listen` that asked for tool list changes.
    tools_listener: bool = False


@dataclass
class _InputRound:
    """An `input_required` answer being turned into requests to an older editor."""

    pending: _Pending
    result: dict[str, Any]
    # Request id sent to the editor -> the server's key for that input.
    waiting: dict[str, str]
    responses: dict[str, Any] = field(default_factory=dict)


# Input rounds one request may take before mcpd gives up on it.
MAX_INPUT_ROUNDS = 16


class Multiplexer:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.initialize_result: dict[str, Any] | None = None
        self.editors: dict[EditorId, Editor] = {}
        self._clock = clock
        self._next_id = 0
        self._pending: dict[int, _Pending] = {}
        # The daemon's own requests in flight: method, and for a list its key
        # and the cache's generation.
        self._own: dict[int, tuple[str, modern.CacheKey | None, int]] = {}
        # A modern (2026-07-28) server: its server/discover result; else None.
        self.modern: dict[str, Any] | None = None
        self.cache = modern.ListCache()
        # Per tool of a modern server: the Mcp-Param-* headers it designates.
        self.tool_headers: dict[str, dict[str, tuple[str, ...]]] = {}
        # The tools editors may see and call (toolfilter.py); all by default.
        self.tool_filter = toolfilter.ToolFilter()
        self._rounds: dict[str, _InputRound] = {}
        self._next_input = 0
        # Modern servers: the list request in flight for each key, and the
        # editors (and their ids) that asked the same meanwhile: one answer serves all.
        self._lists_in_flight: dict[modern.CacheKey, int] = {}
        self._followers: dict[int, list[tuple[EditorId, Id]]] = {}
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
        for followers in self._followers.values():
            followers[:] = [f for f in followers if f[0] != editor_id]
        for upstream_id in sorted(editor.in_flight):
            if self._hand_over(upstream_id):
                continue
            self._forget(upstream_id)
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
        for input_id, round_ in list(self._rounds.items()):
            if round_.pending.editor == editor_id:
                del self._rounds[input_id]
        if self.modern is not None:
            routing.cancel, routing.upstream = (
                [m["params"]["requestId"] for m in routing.upstream if _is_cancel(m)],
                [m for m in routing.upstream if not _is_cancel(m)],
            )
        return routing

    def initialize_editor(self, editor_id: EditorId, params: Any) -> None:
        editor = self.editors[editor_id]
        capabilities = params.get("capabilities") if isinstance(params, dict) else None
        editor.capabilities = capabilities if isinstance(capabilities, dict) else {}
        info = params.get("clientInfo") if isinstance(params, dict) else None
        editor.client_info = info if isinstance(info, dict) else {}
        editor.initialized = True

    # --- Requests of the daemon itself -------------------------------------------

    def _allocate(self) -> int:
        self._next_id += 1
        return self._next_id

    def own_request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        upstream_id = self._allocate()
        self._own[upstream_id] = (
            method,
            modern.ListCache.key(method, params),
            self.cache.generation,
        )
        return jsonrpc.request(upstream_id, method, params)

    def forget_own(self, upstream_id: int) -> None:
        self._own.pop(upstream_id, None)

    def unawaited_request(
        self, method: str, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A request of the daemon's whose answer nobody waits for (it is dropped)."""
        return jsonrpc.request(self._allocate(), method, params)

    def subscribed_uris(self) -> list[str]:
        return sorted(self._subscribers)

    def notice(self, text: str) -> Routing:
        """Tell every editor something it should show its user (as a warning
        log message from mcpd, the one notification MCP has for that)."""
        message = jsonrpc.notification(
            "notifications/message", {"level": "warning", "logger": "mcpd", "data": text}
        )
        return Routing(editors=[(e.id, message) for e in self.editors.values() if e.initialized])

    def set_tool_filter(self, tool_filter: toolfilter.ToolFilter) -> Routing:
        """A new tool filter (a reload): later lists and calls follow it, and the
        editors are told that their tool list changed (older editors plainly; a
        2026-07-28 editor on each listen stream of its that asked for that)."""
        if tool_filter == self.tool_filter:
            return Routing()
        self.tool_filter = tool_filter
        changed = jsonrpc.notification("notifications/tools/list_changed")
        routing = Routing(
            editors=[
                (e.id, changed) for e in self.editors.values() if e.initialized and not e.modern
            ]
        )
        for pending in self._pending.values():
            if pending.tools_listener and pending.editor in self.editors:
                meta = {modern.META_SUBSCRIPTION: pending.original_id}
                routing.editors.append((pending.editor, {**changed, "params": {"_meta": meta}}))
        return routing

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
        waiting = [(r.pending.editor, r.pending.original_id) for r in self._rounds.values()]
        waiting += [f for followers in self._followers.values() for f in followers]
        for editor_id, original_id in waiting:
            if editor_id in self.editors:
                routing.editors.append((editor_id, jsonrpc.error(original_id, code, message)))
        self._pending.clear()
        self._own.clear()
        self._server_requests.clear()
        self._rounds.clear()
        self._lists_in_flight.clear()
        self._followers.clear()
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
            result = negotiated(self.initialize_result or {}, params)
            return Routing(editors=[(editor.id, jsonrpc.result(message["id"], result))])
        if method == "ping":
            return Routing(editors=[(editor.id, jsonrpc.result(message["id"], {}))])
        if method == "server/discover":
            return self._discover(editor, message)
        if (refusal := toolfilter.refused_call(self.tool_filter, message)) is not None:
            error = jsonrpc.error(message["id"], jsonrpc.INVALID_PARAMS, refusal)
            return Routing(editors=[(editor.id, error)])  # never reaches the server
        if self.modern is not None:
            local = self._answer_locally(editor, message)
            if local is not None:
                return local
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

    def _discover(self, editor: Editor, message: dict[str, Any]) -> Routing:
        """A modern editor's probe: answered from the server's own discover result
        when the server is modern; else the error that sends it to `initialize`."""
        if self.modern is None:
            error = jsonrpc.error(
                message["id"],
                jsonrpc.METHOD_NOT_FOUND,
                "this server speaks an MCP revision with an initialize handshake; use initialize",
            )
            return Routing(editors=[(editor.id, error)])
        editor.modern = True
        return Routing(editors=[(editor.id, jsonrpc.result(message["id"], self.modern))])

    def _answer_locally(self, editor: Editor, message: dict[str, Any]) -> Routing | None:
        """Modern servers: what mcpd answers itself, for older editors' sake (the
        revision has no such method, or a fresh cached list answers it)."""
        method, params = message["method"], message.get("params")
        reply: Any = None
        if method == "logging/setLevel" and not editor.modern:
            reply = {}
        elif method in ("resources/subscribe", "resources/unsubscribe") and not editor.modern:
            uri = params.get("uri") if isinstance(params, dict) else None
            before = self.subscribed_uris()
            if isinstance(uri, str) and method == "resources/subscribe":
                editor.subscriptions.add(uri)
                self._subscribers.setdefault(uri, set()).add(editor.id)
            elif isinstance(uri, str):
                self._unsubscribe(editor.id, uri, None)
            reply = jsonrpc.result(message["id"], {})
            return Routing(editors=[(editor.id, reply)], relisten=before != self.subscribed_uris())
        elif (key := modern.ListCache.key(method, params)) is not None:
            reply = self.cache.get(key, self._clock())
            leader = self._lists_in_flight.get(key)
            if reply is None and leader is not None:
                self._followers.setdefault(leader, []).append((editor.id, message["id"]))
                return Routing()  # answered with the request already on its way
        if reply is None:
            return None
        reply = toolfilter.shown(self.tool_filter, method, jsonrpc.result(message["id"], reply))
        return Routing(editors=[(editor.id, reply)])

    def _forward(self, editor: Editor, message: dict[str, Any]) -> dict[str, Any]:
        if self.modern is not None:
            message = modern.with_meta(message, editor.capabilities, editor.client_info)
        return self._dispatch(editor, message, message["id"])

    def _dispatch(self, editor: Editor, message: dict[str, Any], original_id: Id) -> dict[str, Any]:
        """`message` under a fresh upstream id (and progress token), remembered as
        the editor's request `original_id`."""
        upstream_id = self._allocate()
        token = jsonrpc.progress_token(message)
        method = message["method"]
        keep = self.modern is not None and not editor.modern and method in modern.INPUT_METHODS
        key = modern.ListCache.key(method, message.get("params"))
        self._pending[upstream_id] = _Pending(
            editor.id,
            original_id,
            token,
            method,
            message if keep else None,
            list_key=key,
            generation=self.cache.generation,
            tools_listener=toolfilter.listens_for_tools(message),
        )
        if self.modern is not None and key is not None:
            self._lists_in_flight[key] = upstream_id
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
            for input_id, round_ in list(self._rounds.items()):
                if round_.pending.editor == editor.id and round_.pending.original_id == original:
                    del self._rounds[input_id]
            for followers in self._followers.values():
                followers[:] = [f for f in followers if f != (editor.id, original)]
            for upstream_id in editor.in_flight:
                if self._pending[upstream_id].original_id == original:
                    if self._hand_over(upstream_id):
                        return Routing()  # another editor still waits for it
                    # The server will not answer a cancelled request: forget it now.
                    self._forget(upstream_id)
                    editor.in_flight.discard(upstream_id)
                    if self.modern is not None:
                        # The revision cancels by closing the request's stream.
                        return Routing(cancel=[upstream_id])
                    return Routing(
                        upstream=[
                            {
                                **message,
                                "params": {**params, "requestId": upstream_id},  # type: ignore[dict-item]
                            }
                        ]
                    )
            return Routing()  # already answered, or never sent
        if self.modern is not None:
            return Routing()  # the revision defines no other notification to a server
        return Routing(upstream=[message])

    def _editor_response(self, editor: Editor, message: dict[str, Any]) -> Routing:
        request_id = message.get("id")
        if isinstance(request_id, str) and request_id in self._rounds:
            return self._input_answered(editor, request_id, message)
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
            return self._server_notification(message, related)
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
            method, key, generation = self._own.pop(upstream_id)
            screened, problem, valid = self._screen(method, key, generation, message)
            return Routing(
                own=[(upstream_id, screened)], problem=problem, listed=_first_tools(key, valid)
            )
        pending = self._pending.get(upstream_id)
        if pending is None:
            return Routing()  # cancelled, or its editor left
        followers = self._forget(upstream_id)
        editor = self.editors.get(pending.editor)
        if editor is None:
            return Routing()
        editor.in_flight.discard(upstream_id)
        if pending.request is not None and modern.is_input_required(message):
            return self._input_round(editor, pending, message["result"])
        message, problem, valid = self._screen(
            pending.method, pending.list_key, pending.generation, message
        )
        askers = [(pending.editor, pending.original_id), *followers]
        return Routing(
            editors=[(e, {**message, "id": i}) for e, i in askers if e in self.editors],
            problem=problem,
            listed=_first_tools(pending.list_key, valid),
        )

    def _screen(
        self, method: str, key: modern.CacheKey | None, generation: int, message: dict[str, Any]
    ) -> tuple[dict[str, Any], str | None, dict[str, Any]]:
        """A list result as editors may see it: without the tools the config
        filters out (toolfilter.py); modern servers: also without the tools whose
        header annotations are invalid (and said why), and remembered while
        fresh (before the filter, so that it applies to cached pages too). Also
        the result before the filter, which the daemon keeps (mcpd/shown.py)."""
        result = message.get("result")
        if self.modern is None or not isinstance(result, dict):
            return toolfilter.shown(self.tool_filter, method, message), None, message
        dropped: list[str] = []
        if method == "tools/list":
            result, headers, dropped = modern.screen_tools(result)
            self.tool_headers.update(headers)
            message = {**message, "result": result}
        if key is not None:
            self.cache.put(key, result, self._clock(), generation)
        shown = toolfilter.shown(self.tool_filter, method, message)
        return shown, "; ".join(dropped) or None, message

    def _forget(self, upstream_id: int) -> list[tuple[EditorId, Id]]:
        """Drop a request in flight; returns who else waits for its answer."""
        pending = self._pending.pop(upstream_id)
        key = pending.list_key
        if key is not None and self._lists_in_flight.get(key) == upstream_id:
            del self._lists_in_flight[key]
        return self._followers.pop(upstream_id, [])

    def _hand_over(self, upstream_id: int) -> bool:
        """The editor that sent a list request no longer wants its answer: the
        first editor still waiting for the same list takes the request over."""
        followers = self._followers.get(upstream_id)
        pending = self._pending[upstream_id]
        while followers:
            editor_id, original_id = followers.pop(0)
            if (editor := self.editors.get(editor_id)) is not None:
                if (old := self.editors.get(pending.editor)) is not None:
                    old.in_flight.discard(upstream_id)
                pending.editor, pending.original_id = editor_id, original_id
                editor.in_flight.add(upstream_id)
                return True
        return False

    # --- Input rounds (modern servers, older editors) ------------------------------

    def _input_round(self, editor: Editor, pending: _Pending, result: dict[str, Any]) -> Routing:
        """Turn the server's input requests into requests to the editor whose
        call they belong to; the call is retried once every one is answered."""
        pending.rounds += 1
        if pending.rounds > MAX_INPUT_ROUNDS:
            return self._end_round(
                pending, f"the server asked for input {MAX_INPUT_ROUNDS} times; giving up"
            )
        asked = result.get("inputRequests")
        asked = asked if isinstance(asked, dict) else {}
        round_ = _InputRound(pending, result, {})
        requests: list[dict[str, Any]] = []
        for key, request in asked.items():
            method = request.get("method") if isinstance(request, dict) else None
            if not isinstance(method, str) or method not in CAPABILITY_OF:
                return self._end_round(pending, f"the server asked for an unknown input {key!r}")
            params = request.get("params")
            if (refusal := self._refusal(editor, method, params)) is not None:
                # The server must not ask what the editor did not declare; no
                # other editor may answer for this one.
                return self._end_round(
                    pending,
                    f"the server asked this client for {method}, but the client did not "
                    f"declare {refusal[1]}",
                )
            self._next_input += 1
            input_id = f"mcpd-input-{self._next_input}"
            round_.waiting[input_id] = key
            requests.append(
                jsonrpc.request(input_id, method, params if isinstance(params, dict) else {})
            )
        if not requests:
            return self._retry(editor, round_)
        for input_id in round_.waiting:
            self._rounds[input_id] = round_
        return Routing(editors=[(editor.id, request) for request in requests])

    def _input_answered(self, editor: Editor, input_id: str, message: dict[str, Any]) -> Routing:
        round_ = self._rounds[input_id]
        if round_.pending.editor != editor.id:
            return Routing()  # not this editor's to answer
        del self._rounds[input_id]
        key = round_.waiting.pop(input_id)
        error = message.get("error")
        if "result" not in message:
            for other in round_.waiting:
                self._rounds.pop(other, None)
            text = error.get("message") if isinstance(error, dict) else None
            return self._end_round(
                round_.pending, f"the client could not answer the server's request: {text}"
            )
        round_.responses[key] = message["result"]
        if round_.waiting:
            return Routing()
        return self._retry(editor, round_)

    def _retry(self, editor: Editor, round_: _InputRound) -> Routing:
        pending = round_.pending
        assert pending.request is not None
        retry = modern.retry_request(pending.request, 0, round_.result, round_.responses)
        forwarded = self._dispatch(editor, retry, pending.original_id)
        self._pending[forwarded["id"]].rounds = pending.rounds
        return Routing(upstream=[forwarded])

    def _end_round(self, pending: _Pending, problem: str) -> Routing:
        error = jsonrpc.error(pending.original_id, jsonrpc.INTERNAL_ERROR, problem)
        return Routing(editors=[(pending.editor, error)], problem=problem)

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
        routed = self._editor_for(message, related)
        if not isinstance(routed, Editor):
            code, text = routed
            return Routing(upstream=[jsonrpc.error(request_id, code, text)])
        self._server_requests[request_id] = routed.id
        return Routing(editors=[(routed.id, message)])

    def _editor_for(self, message: dict[str, Any], related: int | None) -> Editor | tuple[int, str]:
        """The editor to send a server request to, or the error that answers it.

        A request that came on the stream of one of our requests (`related`)
        belongs to whoever sent that request, and nobody else may see or
        answer it: if that editor cannot take it, the server gets the answer a
        client without the capability gives. Only a request on the standalone
        stream, which belongs to no request, goes to the most recently active
        editor that can take it.
        """
        method, params = message["method"], message.get("params")
        if related is not None:
            pending = self._pending.get(related)
            editor = self.editors.get(pending.editor) if pending is not None else None
            if editor is not None:
                refused = self._refusal(editor, method, params)
                if refused is None:
                    return editor
                code, needed = refused
                label = "Method not found" if code == jsonrpc.METHOD_NOT_FOUND else "Invalid params"
                return code, f"{label}: the editor whose request this is did not declare {needed}"
            if related in self._own:
                return (
                    jsonrpc.METHOD_NOT_FOUND,
                    f"Method not found: {method} came with a request of mcpd's own "
                    "(mcpctl tools, or a control-protocol call), which cannot answer it",
                )
            return (
                jsonrpc.INTERNAL_ERROR,
                f"{method} came with a request no longer in flight (cancelled, or its editor left)",
            )
        refusals = {e.id: self._refusal(e, method, params) for e in self.editors.values()}
        candidates = [e for e in self.editors.values() if refusals[e.id] is None]
        if candidates:
            return max(candidates, key=lambda e: e.last_active)
        # Nobody can: Invalid params (-32602) if an editor lacks only the mode
        # asked for, else Method not found.
        initialized = [r for e, r in refusals.items() if r and self.editors[e].initialized]
        fallback = (jsonrpc.METHOD_NOT_FOUND, f"the {CAPABILITY_OF.get(method, method)} capability")
        code, needed = min(initialized, default=fallback)
        return code, f"no attached editor supports {method}: none declared {needed}"

    @staticmethod
    def _refusal(editor: Editor, method: str, params: Any) -> tuple[int, str] | None:
        """None if the editor declared what `method` needs; else the error code a
        client without it answers with (2025-11-25) and what it did not declare.

        -32601 (Method not found) for a capability not declared at all: a client
        without it does not implement its method; the revision says so for roots
        ("Client does not support roots: -32601"), and elicitation and sampling
        name no other code. -32602 (Invalid params) for an elicitation mode not
        declared, as the elicitation page's Error Handling requires; an empty
        `elicitation` object declares form mode only.
        """
        if not editor.initialized:
            return jsonrpc.METHOD_NOT_FOUND, "its capabilities (it has not initialized)"
        capability = CAPABILITY_OF.get(method)
        if capability is None:
            return None  # not a request MCP defines: the editor answers it as it can
        declared = editor.capabilities.get(capability)
        if declared is None:
            return jsonrpc.METHOD_NOT_FOUND, f"the {capability} capability"
        if capability == "elicitation":
            mode = params.get("mode", "form") if isinstance(params, dict) else "form"
            modes = {m for m in ("form", "url") if isinstance(declared, dict) and m in declared}
            if not isinstance(mode, str) or mode not in (modes or {"form"}):
                return jsonrpc.INVALID_PARAMS, f"the elicitation mode {mode!r} (elicitation.{mode})"
        return None

    def _server_notification(self, message: dict[str, Any], related: int | None) -> Routing:
        method = message["method"]
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        if self.modern is not None and method != "notifications/progress":
            routing = self._modern_notification(message, related)
            if routing is not None:
                return routing
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

    def _modern_notification(self, message: dict[str, Any], related: int | None) -> Routing | None:
        """Modern servers: a notification on a request's own stream goes to that
        request's editor alone; one on mcpd's listen stream to every older editor
        (None: route it as any other)."""
        method = message["method"]
        self.cache.changed(method)
        if method in modern.LIST_CHANGES.values():
            for key in [k for k in self._lists_in_flight if modern.LIST_CHANGES[k[0]] == method]:
                del self._lists_in_flight[key]  # its answer may predate the change
        pending = self._pending.get(related) if related is not None else None
        if pending is not None:
            if pending.editor not in self.editors:
                return Routing()
            return Routing(editors=[(pending.editor, _for_listener(message, pending))])
        if method in ("notifications/subscriptions/acknowledged", "notifications/cancelled"):
            return Routing()  # about mcpd's own listen stream
        message = modern.without_subscription_meta(message)
        if method == "notifications/resources/updated":
            return None
        return Routing(
            editors=[
                (e.id, message) for e in self.editors.values() if e.initialized and not e.modern
            ]
        )


def _for_listener(message: dict[str, Any], pending: _Pending) -> dict[str, Any]:
    """A notification on a modern editor's own listen stream names that editor's
    request, not mcpd's, as the stream's id."""
    params = message.get("params")
    if not isinstance(params, dict):
        return message
    params = dict(params)
    if message["method"] == "notifications/cancelled":
        params["requestId"] = pending.original_id
    meta = params.get("_meta")
    if isinstance(meta, dict) and modern.META_SUBSCRIPTION in meta:
        params["_meta"] = {**meta, modern.META_SUBSCRIPTION: pending.original_id}
    return {**message, "params": params}


def negotiated(result: dict[str, Any], params: Any) -> dict[str, Any]:
    """The server's initialize result as an editor gets it: an editor that asks
    for an older revision than the server's gets that one (the newer revisions
    only add to the older ones)."""
    result = dict(result)
    requested = params.get("protocolVersion") if isinstance(params, dict) else None
    if (
        isinstance(requested, str)
        and requested in KNOWN_PROTOCOLS
        and requested < str(result.get("protocolVersion", ""))
    ):
        result["protocolVersion"] = requested
    return result


def _first_tools(key: modern.CacheKey | None, message: dict[str, Any]) -> dict[str, Any] | None:
    result = message.get("result")
    return result if key == ("tools/list", None) and isinstance(result, dict) else None


def _is_cancel(message: dict[str, Any]) -> bool:
    return message.get("method") == "notifications/cancelled"
