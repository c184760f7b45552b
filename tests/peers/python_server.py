"""A real MCP server built on the official Python SDK (`mcp`), for the tests.

    python tests/peers/python_server.py --port PORT [--json-response] [--stateless]
                                        [--resumable] [--bearer TOKEN] [--modern]

Streamable HTTP at http://127.0.0.1:PORT/mcp, on the loopback interface only.
It is written with the SDK's low-level `Server`, whose handlers are plain
functions of (context, params), so that the capabilities it announces in the
handshake era (2025-11-25 and before) are exactly the ones it honours:
`tools.listChanged`, `resources.subscribe`, `resources.listChanged`, `logging`.

Tools, each for something a proxy must carry:

- `echo(text)`: returns `text`.
- `add(a, b)`: the sum, as text and as `structuredContent` `{"sum": ...}`.
- `slow(seconds)`: sleeps, then returns; prints `slow: sleeping`, then
  `slow: done` or `slow: cancelled`, to stdout (the peer's log).
- `progress(steps, interval=0.05)`: sends `notifications/progress` 1..steps
  against the caller's progress token (nothing without one).
- `log(message, level="info")`: sends `notifications/message` on the request's
  stream.
- `toggle_tool(related=false)`: adds or removes the tool `extra` (for every
  session), then sends the caller's session `notifications/tools/list_changed`:
  on its GET stream, or on the request's stream with `related`.
- `touch(related=false)`: increments `test://counter` and sends
  `notifications/resources/updated` to each session subscribed to it (on its GET
  stream; the caller's on the request's stream with `related`).
- `fail(message)`: a tool error (`isError: true`) saying `message`.
- `error(message)`: a JSON-RPC error (-32603) saying `message`.
- `big(n)`: `n` bytes of text, `0123456789` repeated.
- `headers()`: the HTTP request headers the server received, as JSON.
- `elicit(mode="form", schema=..., related=true)`: sends `elicitation/create`
  (a form with `schema`, by default a required `name` and a `color` defaulting
  to `blue`; or `mode="url"`, a page to open) on the request's stream (on the
  GET stream with `related=false`) and returns the client's answer as JSON
  text; an error answer is a tool error carrying its code and message, as
  JSON `{"error": {"code", "message"}}`.
- `sample(prompt)`: sends `sampling/createMessage` on the request's stream and
  returns the answer's text; an error answer as for `elicit`.
- `extra()`: exists only between two `toggle_tool` calls.

Resources: `test://counter` (text, the counter; subscribable) and
`test://static` (text, `static resource`).

`--bearer TOKEN` answers 401 to any request without `Authorization: Bearer
TOKEN`. `--tls-cert PEM --tls-key PEM` serves HTTPS instead of HTTP.
Each `initialize` and each DELETE of a session is logged on stdout
(`session: initialize`, `session: DELETE ID`). `--resumable` keeps every
SSE event in memory so a client can resume with `Last-Event-ID`.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import mcp_types as types
import uvicorn
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.session import ServerSession
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    ResourceUpdated,
    ToolsListChanged,
)
from mcp.shared.exceptions import MCPError

HOST = "127.0.0.1"
COUNTER_URI = "test://counter"
STATIC_URI = "test://static"

Context = Any  # mcp.server.context.ServerRequestContext[dict[str, Any], Any]


def _schema(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required or []}


TOOLS = [
    types.Tool(
        name="echo",
        description="Return the text",
        input_schema=_schema({"text": {"type": "string"}}, ["text"]),
    ),
    types.Tool(
        name="add",
        description="Add two numbers",
        input_schema=_schema({"a": {"type": "number"}, "b": {"type": "number"}}, ["a", "b"]),
        output_schema=_schema({"sum": {"type": "number"}}, ["sum"]),
    ),
    types.Tool(
        name="slow",
        description="Sleep for the given seconds (for cancellation and timeouts)",
        input_schema=_schema({"seconds": {"type": "number"}}, ["seconds"]),
    ),
    types.Tool(
        name="progress",
        description="Report progress for each of `steps` steps",
        input_schema=_schema(
            {"steps": {"type": "integer"}, "interval": {"type": "number", "default": 0.05}},
            ["steps"],
        ),
    ),
    types.Tool(
        name="log",
        description="Send a notifications/message log entry on this request's stream",
        input_schema=_schema(
            {"message": {"type": "string"}, "level": {"type": "string", "default": "info"}},
            ["message"],
        ),
    ),
    types.Tool(
        name="toggle_tool",
        description="Add or remove the tool `extra` and send notifications/tools/list_changed",
        input_schema=_schema({"related": {"type": "boolean", "default": False}}),
    ),
    types.Tool(
        name="touch",
        description=f"Increment {COUNTER_URI} and notify its subscribers",
        input_schema=_schema({"related": {"type": "boolean", "default": False}}),
    ),
    types.Tool(
        name="fail",
        description="Return a tool error with the message",
        input_schema=_schema({"message": {"type": "string"}}, ["message"]),
    ),
    types.Tool(
        name="error",
        description="Answer with a JSON-RPC error carrying the message",
        input_schema=_schema({"message": {"type": "string"}}, ["message"]),
    ),
    types.Tool(
        name="big",
        description="Return n bytes of text",
        input_schema=_schema({"n": {"type": "integer"}}, ["n"]),
    ),
    types.Tool(
        name="headers",
        description="Return the HTTP request headers this server received",
        input_schema=_schema({}),
    ),
    types.Tool(
        name="meta",
        description="Return the request's _meta (2026-07-28: the client's declarations)",
        input_schema=_schema({}),
    ),
    types.Tool(
        name="elicit",
        description="Ask the client for input (elicitation/create) and return its answer",
        input_schema=_schema(
            {
                "mode": {"type": "string", "enum": ["form", "url"], "default": "form"},
                "schema": {"type": "object"},
                "related": {"type": "boolean", "default": True},
            }
        ),
    ),
    types.Tool(
        name="sample",
        description="Ask the client for a completion (sampling/createMessage)",
        input_schema=_schema({"prompt": {"type": "string"}}, ["prompt"]),
    ),
]
ELICIT_SCHEMA = _schema(
    {
        "name": {"type": "string", "title": "Name", "description": "Who you are"},
        "color": {"type": "string", "enum": ["red", "blue"], "default": "blue"},
    },
    ["name"],
)
EXTRA_TOOL = types.Tool(
    name="extra", description="Exists between two toggle_tool calls", input_schema=_schema({})
)


class State:
    """What all sessions share: the counter, its subscribers, the extra tool."""

    def __init__(self) -> None:
        self.counter = 0
        self.extra_tool = False
        # uri -> Mcp-Session-Id -> the ServerSession of that session's subscribe
        # request: its standalone channel (`send_notification` with no related
        # request) outlives the request and reaches the session's GET stream.
        self.subscribers: dict[str, dict[str | None, ServerSession]] = {}


STATE = State()
# Change events for 2026-07-28 clients, delivered on their subscriptions/listen streams.
BUS = InMemorySubscriptionBus()
MODERN = "2026-07-28"


def text(value: str) -> list[types.ContentBlock]:
    return [types.TextContent(type="text", text=value)]


def session_id(ctx: Context) -> str | None:
    request = ctx.request
    return None if request is None else request.headers.get("mcp-session-id")


async def notify(ctx: Context, notification: Any, related: bool) -> None:
    await ctx.session.send_notification(
        notification, related_request_id=ctx.request_id if related else None
    )


async def tool_echo(ctx: Context, args: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(content=text(str(args["text"])))


async def tool_add(ctx: Context, args: dict[str, Any]) -> types.CallToolResult:
    total = args["a"] + args["b"]
    return types.CallToolResult(content=text(str(total)), structured_content={"sum": total})


async def tool_slow(ctx: Context, args: dict[str, Any]) -> types.CallToolResult:
    seconds = float(args["seconds"])
    print(f"slow: sleeping {seconds}s", flush=True)
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        print("slow: cancelled", flush=True)
        raise
    print("slow: done", flush=True)
    return types.CallToolResult(content=text(f"slept {seconds}s"))


async def tool_progress(ctx: Context, args: dict[str, Any]) -> types.CallToolResult:
    steps = int(args["steps"])
    interval = float(args.get("interval", 0.05))
    for step in range(1, steps + 1):
        await ctx.session.report_progress(step, steps, f"step {step} of {steps}")
        await anyio.sleep(interval)
    return types.CallToolResult(content=text(f"{steps} steps done"))


async def tool_log(ctx: Context, args: dict[str, Any]) -> types.CallToolResult:
    level = args.get("level", "info")
    entry = types.LoggingMessageNotification(
        params=types.LoggingMessageNotificationParams(
            level=level, data=args["message"], logger="python_server"
        )
    )
    await notify(ctx, entry, related=True)
    return types.CallToolResult(content=text(f"logged at {level}"))


async def tool_toggle_tool(ctx: Context, args: dict[str, Any]) -> types.CallToolResult:
    STATE.extra_tool = not STATE.extra_tool
    await BUS.publish(ToolsListChanged())  # to 2026-07-28 listen streams
    if ctx.protocol_version != MODERN:
        await notify(ctx, types.ToolListChangedNotification(), related=bool(args.get("related")))
    return types.CallToolResult(
        content=text(f"extra tool {'added' if STATE.extra_tool else 'removed'}")
    )


async def tool_touch(ctx: Context, args: dict[str, Any]) -> types.CallToolResult:
    STATE.counter += 1
    await BUS.publish(ResourceUpdated(COUNTER_URI))  # to 2026-07-28 listen streams
    update = types.ResourceUpdatedNotification(
        params=types.ResourceUpdatedNotificationParams(uri=COUNTER_URI)
    )
    subscribers = STATE.subscribers.get(COUNTER_URI, {})
    for subscriber, session in list(subscribers.items()):
        try:
            if subscriber == session_id(ctx) and args.get("related"):
                await notify(ctx, update, related=True)
            else:
                await session.send_notification(update)
        except Exception as error:  # a session that went away stops being notified
            print(f"touch: dropping subscriber {subscriber}: {error!r}", flush=True)
            del subscribers[subscriber]
    return types.CallToolResult(
        content=text(f"counter is {STATE.counter}, {len(subscribers)} subscriber(s) notified")
    )


async def tool_fail(ctx: Context, args: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(content=text(str(args["message"])), is_error=True)


async def tool_error(ctx: Context, args: dict[str, Any]) -> types.CallToolResult:
    raise MCPError(types.INTERNAL_ERROR, str(args["message"]))


async def tool_big(ctx: Context, args: dict[str, Any]) -> types.CallToolResult:
    n = int(args["n"])
    return types.CallToolResult(content=text(("0123456789" * (n // 10 + 1))[:n]))


async def tool_headers(ctx: Context, args: dict[str, Any]) -> types.CallToolResult:
    request = ctx.request
    headers = dict(request.headers) if request is not None else {}
    return types.CallToolResult(content=text(json.dumps(headers, sort_keys=True)))


def client_error(error: MCPError) -> types.CallToolResult:
    body = {"error": {"code": error.code, "message": error.error.message}}
    return types.CallToolResult(content=text(json.dumps(body)), is_error=True)


async def tool_elicit(ctx: Context, args: dict[str, Any]) -> types.CallToolResult:
    related = ctx.request_id if args.get("related", True) else None
    try:
        if args.get("mode", "form") == "url":
            answer = await ctx.session.elicit_url(
                "Open the page to connect your account",
                "https://example.com/connect?session=test",
                "elicitation-1",
                related_request_id=related,
            )
        else:
            answer = await ctx.session.elicit_form(
                "Tell the test server about you",
                args.get("schema") or ELICIT_SCHEMA,
                related_request_id=related,
            )
    except MCPError as error:
        return client_error(error)
    return types.CallToolResult(content=text(answer.model_dump_json(exclude_none=True)))


async def tool_sample(ctx: Context, args: dict[str, Any]) -> types.CallToolResult:
    message = types.SamplingMessage(
        role="user", content=types.TextContent(type="text", text=str(args["prompt"]))
    )
    try:
        answer = await ctx.session.create_message(
            [message], max_tokens=20, related_request_id=ctx.request_id
        )
    except MCPError as error:
        return client_error(error)
    content = answer.content
    return types.CallToolResult(content=text(getattr(content, "text", str(content))))


async def tool_meta(ctx: Context, args: dict[str, Any]) -> types.CallToolResult:
    meta = (ctx.params or {}).get("_meta") or {}
    return types.CallToolResult(content=text(json.dumps(meta, sort_keys=True)))


CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"


def input_request(name: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """What `elicit` and `sample` ask a 2026-07-28 client for, in an input request."""
    if name == "sample":
        message = {"role": "user", "content": {"type": "text", "text": str(args["prompt"])}}
        return "sampling", {"messages": [message], "maxTokens": 20}
    if args.get("mode", "form") == "url":
        url = "https://example.com/connect?session=test"
        return "elicitation", {"mode": "url", "message": "Open the page", "url": url}
    schema = args.get("schema") or ELICIT_SCHEMA
    return "elicitation", {
        "mode": "form",
        "message": "Tell the test server about you",
        "requestedSchema": schema,
    }


def modern_input(
    ctx: Context, params: types.CallToolRequestParams
) -> types.CallToolResult | types.InputRequiredResult:
    """`elicit` and `sample` in the 2026-07-28 revision: ask with an input
    request (MRTR), answer with what the retry brings; a client that did not
    declare the capability gets MissingRequiredClientCapability (-32021)."""
    args = dict(params.arguments or {})
    capability, request_params = input_request(params.name, args)
    declared = ((ctx.params or {}).get("_meta") or {}).get(CAPABILITIES_KEY) or {}
    if capability not in declared:
        raise MCPError(
            -32021,
            f"this tool needs the client's {capability} capability",
            {"requiredCapabilities": {capability: {}}},
        )
    answers = params.input_responses or {}
    if "answer" in answers and params.request_state == f"{params.name}-1":
        answer = answers["answer"]
        if hasattr(answer, "model_dump"):  # the SDK parsed it
            answer = answer.model_dump(by_alias=True, exclude_none=True, mode="json")
        if capability == "sampling":
            content = answer.get("content") if isinstance(answer, dict) else None
            reply = content.get("text") if isinstance(content, dict) else str(answer)
            return types.CallToolResult(content=text(str(reply)))
        return types.CallToolResult(content=text(json.dumps(answer, sort_keys=True)))
    method = "sampling/createMessage" if capability == "sampling" else "elicitation/create"
    print(f"modern: input required for {params.name}", flush=True)
    return types.InputRequiredResult(
        result_type="input_required",
        input_requests={"answer": {"method": method, "params": request_params}},
        request_state=f"{params.name}-1",
    )


async def tool_extra(ctx: Context, args: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(content=text("extra"))


HANDLERS: dict[str, Callable[[Context, dict[str, Any]], Awaitable[types.CallToolResult]]] = {
    "echo": tool_echo,
    "add": tool_add,
    "slow": tool_slow,
    "progress": tool_progress,
    "log": tool_log,
    "toggle_tool": tool_toggle_tool,
    "touch": tool_touch,
    "fail": tool_fail,
    "error": tool_error,
    "big": tool_big,
    "headers": tool_headers,
    "meta": tool_meta,
    "elicit": tool_elicit,
    "sample": tool_sample,
}


async def list_tools(
    ctx: Context, params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[*TOOLS, EXTRA_TOOL] if STATE.extra_tool else TOOLS)


async def call_tool(
    ctx: Context, params: types.CallToolRequestParams
) -> types.CallToolResult | types.InputRequiredResult:
    if ctx.protocol_version == MODERN and params.name in ("elicit", "sample"):
        return modern_input(ctx, params)
    handler = HANDLERS.get(params.name)
    if params.name == "extra" and STATE.extra_tool:
        handler = tool_extra
    if handler is None:
        raise MCPError(types.INVALID_PARAMS, f"unknown tool: {params.name}")
    try:
        return await handler(ctx, dict(params.arguments or {}))
    except (KeyError, TypeError, ValueError) as error:
        return types.CallToolResult(content=text(f"bad arguments: {error!r}"), is_error=True)


async def list_resources(
    ctx: Context, params: types.PaginatedRequestParams | None
) -> types.ListResourcesResult:
    return types.ListResourcesResult(
        resources=[
            types.Resource(name="counter", uri=COUNTER_URI, mime_type="text/plain"),
            types.Resource(name="static", uri=STATIC_URI, mime_type="text/plain"),
        ]
    )


async def read_resource(
    ctx: Context, params: types.ReadResourceRequestParams
) -> types.ReadResourceResult:
    uri = str(params.uri)
    if uri == COUNTER_URI:
        value = str(STATE.counter)
    elif uri == STATIC_URI:
        value = "static resource"
    else:
        raise MCPError(types.INVALID_PARAMS, f"unknown resource: {uri}")
    return types.ReadResourceResult(
        contents=[types.TextResourceContents(uri=uri, mime_type="text/plain", text=value)]
    )


async def subscribe(ctx: Context, params: types.SubscribeRequestParams) -> types.EmptyResult:
    STATE.subscribers.setdefault(str(params.uri), {})[session_id(ctx)] = ctx.session
    return types.EmptyResult()


async def unsubscribe(ctx: Context, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
    STATE.subscribers.get(str(params.uri), {}).pop(session_id(ctx), None)
    return types.EmptyResult()


async def set_level(ctx: Context, params: types.SetLevelRequestParams) -> types.EmptyResult:
    return types.EmptyResult()


class PeerServer(Server[dict[str, Any]]):
    """Announces the list-changed notifications it sends."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True, resources_changed=True),
            experimental_capabilities,
            extensions,
        )


def build_server() -> PeerServer:
    server = PeerServer(
        "mcpd-test-python-peer",
        version="1.0.0",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_read_resource=read_resource,
        on_subscribe_resource=subscribe,
        on_unsubscribe_resource=unsubscribe,
        on_subscriptions_listen=ListenHandler(BUS),
    )
    # Registered here rather than as on_set_logging_level, which warns that
    # logging is deprecated in 2026-07-28; clients of earlier versions send it.
    server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)
    return server


class MemoryEventStore(EventStore):
    """Every SSE event, kept for replay after a reconnection with Last-Event-ID."""

    def __init__(self) -> None:
        self.events: list[tuple[EventId, StreamId, types.JSONRPCMessage | None]] = []

    async def store_event(
        self, stream_id: StreamId, message: types.JSONRPCMessage | None
    ) -> EventId:
        event_id = str(len(self.events) + 1)
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        index = next((i for i, event in enumerate(self.events) if event[0] == last_event_id), None)
        if index is None:
            return None
        stream_id = self.events[index][1]
        for event_id, event_stream, message in self.events[index + 1 :]:
            if event_stream == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


def bearer_guard(app: Any, token: str) -> Any:
    """ASGI middleware: 401 unless `Authorization: Bearer TOKEN`."""
    expected = f"Bearer {token}".encode()

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != expected:
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"www-authenticate", b'Bearer error="invalid_token"'),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b'{"error":"invalid_token"}'})
            return
        await app(scope, receive, send)

    return guarded


def era_gate(app: Any, modern: bool) -> Any:
    """ASGI middleware: the SDK serves both eras; without `--modern` the peer is a
    server of the handshake era only, refusing a 2026-07-28 request as such a
    server does (400, a JSON-RPC error that is not one of the revision's). With
    `--modern`, each 2026-07-28 POST is logged as `modern: METHOD [NAME]`."""

    async def gated(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers") or ())
        if scope["type"] != "http" or headers.get(b"mcp-protocol-version") != b"2026-07-28":
            await app(scope, receive, send)
            return
        if modern:
            named = headers.get(b"mcp-name", b"").decode()
            print(
                f"modern: {headers.get(b'mcp-method', b'').decode()} {named}".rstrip(), flush=True
            )
            await app(scope, receive, send)
            return
        print("refused: a 2026-07-28 request", flush=True)
        refusal = (
            b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,'
            b'"message":"Bad Request: this server speaks MCP 2025-11-25; initialize first"}}'
        )
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": refusal})

    return gated


def session_log(app: Any) -> Any:
    """ASGI middleware: a line on stdout for each session's start and end, as
    `session: initialize` and `session: DELETE <id>`."""

    async def logged(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "DELETE":
            session = dict(scope["headers"]).get(b"mcp-session-id", b"").decode()
            print(f"session: DELETE {session}", flush=True)
        if scope["type"] != "http" or scope["method"] != "POST":
            await app(scope, receive, send)
            return
        body = b""

        async def peek() -> Any:
            nonlocal body
            message = await receive()
            if message["type"] == "http.request":
                body += message.get("body", b"")
                initialize = b'"method":"initialize"' in body.replace(b" ", b"")
                if initialize and not message.get("more_body"):
                    print("session: initialize", flush=True)
            return message

        await app(scope, peek, send)

    return logged


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--json-response", action="store_true", help="answer with JSON, not SSE")
    parser.add_argument("--stateless", action="store_true", help="no Mcp-Session-Id, no sessions")
    parser.add_argument(
        "--resumable", action="store_true", help="keep SSE events for Last-Event-ID"
    )
    parser.add_argument("--bearer", metavar="TOKEN", help="require Authorization: Bearer TOKEN")
    parser.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate")
    parser.add_argument("--tls-key", metavar="PEM", help="and this private key")
    parser.add_argument(
        "--modern", action="store_true", help="also serve MCP 2026-07-28 (stateless) requests"
    )
    options = parser.parse_args(argv)

    app: Any = build_server().streamable_http_app(
        streamable_http_path="/mcp",
        json_response=options.json_response,
        stateless_http=options.stateless,
        event_store=MemoryEventStore() if options.resumable else None,
        host=HOST,
    )
    app = era_gate(session_log(app), options.modern)
    if options.bearer:
        app = bearer_guard(app, options.bearer)
    config = uvicorn.Config(
        app,
        host=HOST,
        port=options.port,
        log_level="warning",
        # Open SSE streams would otherwise hold a SIGTERM until they close.
        timeout_graceful_shutdown=1,
        ssl_certfile=options.tls_cert,
        ssl_keyfile=options.tls_key,
    )
    # Bound here rather than by uvicorn so that the line tests/real_peers.py
    # waits for says that this process, not another, has the port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, options.port))
    sock.listen(128)
    print(f"mcpd-peer: listening on {HOST}:{options.port}", file=sys.stderr, flush=True)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
