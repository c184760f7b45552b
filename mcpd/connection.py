"""One client connection on the control socket.

Reading, request handling and writing are separate tasks in the connection's
own task group, so a slow handler never stops the reader and a client that
stops reading only ever stalls itself: responses wait in a bounded outbox,
and a subscriber whose outbox is full is disconnected rather than allowed to
hold the daemon's broadcast back. What one connection may hold is bounded:
while its client leaves OUTBOX_FRAMES frames unread, or has MAX_IN_FLIGHT
requests running, the daemon stops reading from it (the client's writes then
block), and a client silent in the middle of a frame for [daemon]
frame_timeout seconds is disconnected. Any error ends this connection, never
the daemon: `serve` logs it and returns.

Between frames the reader does not wait in a receive of its own: the
socket's readiness callback takes whole frames as they arrive and handles at
once those that need no wait (an attached editor's messages to a connected
server, cancels, and requests that answer at once: `status`, `hello`), which
is nearly all of an editor's traffic and of a status poller's. The first that
needs more (another request, a server still connecting, a partial frame, the end of
the stream, an error) is handed to the read loop, which handles it and every
frame after it as before, then goes back to the callback. So the order of an
editor's messages is kept, and what can fail still fails in the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
from anyio.abc import SocketStream
from anyio.streams.memory import MemoryObjectSendStream

from .methods import METHODS, InlineMethod, Method, RequestContext
from .protocol import (
    Cancel,
    ErrorCode,
    Event,
    FrameDecoder,
    FrameTooLarge,
    Message,
    Request,
    Response,
    Rpc,
    RpcError,
    decode_message,
    decode_params,
    encode_frame,
)
from .service import Attachment, ServiceError

if TYPE_CHECKING:
    from .daemon import Daemon

log = logging.getLogger(__name__)

# Frames waiting for a slow client. An attached editor gets more room: a burst
# of progress notifications must not cost it its connection.
OUTBOX_FRAMES = 256
ATTACHED_OUTBOX_FRAMES = 4096
# Requests of one connection running at once; at the limit the daemon reads
# nothing more from that client until one finishes.
MAX_IN_FLIGHT = 1024
READ_CHUNK = 65536
# What of a client's own text (a method name, a validation error quoting its
# value) goes into an error message or the log.
QUOTE_CHARS = 200
_UCRED = struct.Struct("3i")


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end, from SO_PEERCRED."""
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(data)
    return pid, uid, gid


class _ProtocolViolation(Exception):
    def __init__(self, code: ErrorCode, message: str, request_id: int | None = None) -> None:
        super().__init__(message)
        self.error = Response(request_id, error=RpcError(int(code), message))


class ClientConnection:
    def __init__(self, stream: SocketStream, daemon: Daemon, peer_pid: int) -> None:
        self.stream = stream
        self.daemon = daemon
        self.peer_pid = peer_pid
        self.greeted = False
        self.subscription: frozenset[str] | None = None
        self.subscribed = False
        self.attachment: Attachment | None = None
        send, self._outbox_receive = anyio.create_memory_object_stream[bytes](
            ATTACHED_OUTBOX_FRAMES
        )
        self._outbox: MemoryObjectSendStream[bytes] = send
        self._queued = 0  # frames in the outbox (the stream's statistics are an object a call)
        self._in_flight: dict[int, anyio.CancelScope] = {}
        self._scope = anyio.CancelScope()
        self._read_scope = anyio.CancelScope()
        # Set when a frame leaves the outbox or a request ends: a paused reader waits on it.
        self._room = anyio.Event()
        self._paused_before = False
        self._socket = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        self._writing = False  # the write loop holds a frame it has not finished sending

    # --- Called by the daemon ---------------------------------------------------

    def subscribe(self, servers: list[str] | None) -> None:
        self.subscribed = True
        self.subscription = frozenset(servers) if servers is not None else None

    def wants(self, server: str) -> bool:
        return self.subscribed and (self.subscription is None or server in self.subscription)

    def attach(self, server: str, replay: bytes | None) -> Attachment:
        if self.attachment is not None:
            raise ServiceError(
                ErrorCode.INVALID_REQUEST,
                f"this connection is attached to {self.attachment.server!r} already; "
                "open another connection for another server",
            )
        self.attachment = self.daemon.service.attach(server, self._push_rpc, replay)
        return self.attachment

    def _push_rpc(self, data: bytes) -> None:
        self._push(encode_frame(Rpc(data)), "its editor's messages", ATTACHED_OUTBOX_FRAMES)

    def push_event(self, event: Event) -> None:
        limit = ATTACHED_OUTBOX_FRAMES if self.attachment is not None else OUTBOX_FRAMES
        self._push(encode_frame(event), "its events", limit)

    def _push(self, frame: bytes, what: str, limit: int) -> None:
        """Queue a frame without waiting; a client that is not reading is dropped."""
        if self._queued >= limit:
            log.warning(
                f"disconnecting a client that does not read {what}",
                extra={"peer_pid": self.peer_pid},
            )
            self._scope.cancel()
            return
        self._queue_now(frame)

    def _queue_now(self, frame: bytes) -> None:
        """Send what the socket takes and queue the rest, when the outbox has room."""
        if rest := self._write_through(frame):
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._outbox.send_nowait(rest)
                self._queued += 1

    def _write_through(self, frame: bytes) -> bytes:
        """Send what the socket takes at once when nothing waits before it (the
        common case, and a task switch less per frame); return the rest, for the
        write loop."""
        if self._writing or self._queued:
            return frame
        try:
            sent = self._socket.send(frame)
        except OSError:
            return frame  # full (BlockingIOError), or broken: the write loop finds out
        return frame[sent:]

    def close(self) -> None:
        """Drop the connection now (its server was removed or restarted)."""
        self._scope.cancel()

    def stop_reading(self) -> None:
        """Finish what is in flight, flush the responses, then close."""
        self._read_scope.cancel()

    # --- The connection's life ------------------------------------------------

    async def serve(self) -> None:
        try:
            with self._scope:
                async with self.stream, anyio.create_task_group() as tg:
                    tg.start_soon(self._write_loop)
                    async with anyio.create_task_group() as requests:
                        with self._read_scope:
                            await self._read_loop(requests)
                    self._outbox.close()
        except Exception:
            log.exception("client connection failed", extra={"peer_pid": self.peer_pid})
        finally:
            self._outbox.close()
            if self.attachment is not None:
                self.attachment.detach()

    async def _write_loop(self) -> None:
        try:
            async with self._outbox_receive:
                async for frame in self._outbox_receive:
                    self._queued -= 1
                    self._room.set()
                    self._writing = True
                    await self.stream.send(frame)
                    self._writing = False
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            # The client went away; nothing more can be delivered to it.
            self._scope.cancel()

    async def _read_loop(self, requests: anyio.abc.TaskGroup) -> None:
        decoder = FrameDecoder(self.daemon.max_frame_size)
        while True:
            try:
                while (message := next_message(decoder)) is not None:
                    await self._handle(message, requests)
                if decoder.pending:
                    self._feed(decoder, await self._rest_of_frame())
                elif (message := await self._take_at_once(decoder)) is not None:
                    await self._handle(message, requests)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                if decoder.pending:
                    log.info("client closed mid-frame", extra={"peer_pid": self.peer_pid})
                return
            except _ProtocolViolation as violation:
                log.warning(
                    "closing a client that broke the protocol",
                    extra={"peer_pid": self.peer_pid, "reason": str(violation)},
                )
                with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                    await self._queue(encode_frame(violation.error))
                return

    def _feed(self, decoder: FrameDecoder, data: bytes) -> None:
        decoder.feed(data)
        decoder.max_frame_size = self.daemon.max_frame_size  # follows reloads

    async def _take_at_once(self, decoder: FrameDecoder) -> Message | None:
        """Let the socket's readiness callback take frames (`_readable`) until it
        meets one it cannot handle at once: that one, or None when the rest of a
        frame is to be read. The end of the stream and errors are raised."""
        loop = asyncio.get_running_loop()
        handover: asyncio.Future[Message | None] = loop.create_future()
        # Others first, as any receive lets them; then what has arrived meanwhile
        # (a client's next request, often): no reader to set up for it, which
        # costs the event loop a new poll handle. (asyncio's own yield: anyio's
        # checkpoint looks the backend up first, a tenth of a `status`.)
        await asyncio.sleep(0)
        self._readable(decoder, handover)
        if handover.done():
            return handover.result()
        descriptor = self._socket.fileno()
        loop.add_reader(descriptor, self._readable, decoder, handover)
        try:
            return await handover
        finally:
            loop.remove_reader(descriptor)

    def _readable(self, decoder: FrameDecoder, handover: asyncio.Future[Message | None]) -> None:
        if handover.done() or self._read_scope.cancel_called or self._scope.cancel_called:
            return  # handed over already, or reading ends: the read loop's to see
        try:
            data = self._socket.recv(READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            handover.set_exception(anyio.BrokenResourceError())
            return
        if not data:
            handover.set_exception(anyio.EndOfStream())
            return
        try:
            self._feed(decoder, data)
            while (message := next_message(decoder)) is not None:
                if not self._handled_at_once(message):
                    handover.set_result(message)
                    return
        except Exception as exc:  # a broken frame, or a bug: the read loop's to raise
            handover.set_exception(exc)
            return
        if decoder.pending:
            handover.set_result(None)  # the rest of the frame is read with its timeout

    def _handled_at_once(self, message: Message) -> bool:
        if isinstance(message, Rpc):
            return self.attachment is not None and self.attachment.send_now(message.data)
        if isinstance(message, Cancel):
            self._cancel(message)
            return True
        if isinstance(message, Request):
            return self._answered_at_once(message)
        return False

    def _answered_at_once(self, request: Request) -> bool:
        """Answer an inline request (status, hello) here, unless something stands
        in its way: the read loop then meets it, and what can fail fails there."""
        method = METHODS.get(request.method)
        if (
            not isinstance(method, InlineMethod)
            or not self._has_room()
            or request.id in self._in_flight
        ):
            return False
        ctx = RequestContext(self.daemon.service, self)
        self._queue_now(self._response_frame(request, self._answer(ctx, request, method)))
        for action in ctx.after_response:
            action()
        return True

    async def _rest_of_frame(self) -> bytes:
        """More of a frame begun, within [daemon] frame_timeout."""
        timeout = self.daemon.config.daemon.frame_timeout
        with anyio.move_on_after(timeout):
            return await self.stream.receive(READ_CHUNK)
        raise _ProtocolViolation(
            ErrorCode.MALFORMED_MESSAGE,
            f"the client sent part of a frame, then nothing for {timeout:g} seconds "
            "([daemon] frame_timeout); a frame must be sent whole",
        )

    async def _wait_for_room(self) -> None:
        """Before a new request: wait while the client leaves too much unread or running."""
        while not self._has_room():
            queued = self._queued
            if not self._paused_before:
                # Once per connection: a client reading in bursts pauses often.
                self._paused_before = True
                reason = (
                    f"it does not read its responses ({queued} frames wait for it)"
                    if queued >= OUTBOX_FRAMES
                    else f"it has {len(self._in_flight)} requests in flight, the most allowed"
                )
                log.warning(
                    "pausing reads from a client until it catches up",
                    extra={"peer_pid": self.peer_pid, "reason": reason},
                )
            self._room = anyio.Event()
            await self._room.wait()

    def _has_room(self) -> bool:
        return self._queued < OUTBOX_FRAMES and len(self._in_flight) < MAX_IN_FLIGHT

    async def _handle(self, message: Message, requests: anyio.abc.TaskGroup) -> None:
        if isinstance(message, Rpc):
            if self.attachment is None:
                raise _ProtocolViolation(
                    ErrorCode.NOT_ATTACHED, "rpc messages need an attach request first"
                )
            # Inline: the editor's messages reach the server in the order sent.
            await self.attachment.send(message.data)
            return
        if isinstance(message, Cancel):
            self._cancel(message)
            return
        if not isinstance(message, Request):
            raise _ProtocolViolation(
                ErrorCode.INVALID_REQUEST,
                f"clients send requests and cancels, not {type(message).__name__.lower()}s",
            )
        if message.id in self._in_flight:
            # Answered with id null: the id belongs to the request in flight.
            raise _ProtocolViolation(
                ErrorCode.INVALID_REQUEST,
                f"request id {message.id} is already in flight; ids must be unique",
            )
        await self._wait_for_room()
        method = METHODS.get(message.method)
        if isinstance(method, InlineMethod):
            # Over before the next message is read: no cancel can reach it.
            ctx = RequestContext(self.daemon.service, self)
            await self._respond(ctx, message, self._answer(ctx, message, method))
            return
        # A method that must run to its end gets a scope that no cancel reaches.
        scope = anyio.CancelScope(shield=method is not None and not method.cancellable)
        self._in_flight[message.id] = scope
        requests.start_soon(self._run_request, message, method, scope)

    def _cancel(self, message: Cancel) -> None:
        scope = self._in_flight.get(message.id)
        if scope is not None and not scope.shield:
            scope.cancel()

    async def _run_request(
        self, request: Request, method: Method | None, scope: anyio.CancelScope
    ) -> None:
        ctx = RequestContext(self.daemon.service, self)
        response: Response
        with scope:
            response = await self._dispatch(ctx, request, method)
        if scope.cancelled_caught:
            response = Response(request.id, error=RpcError(ErrorCode.CANCELLED, "cancelled"))
        del self._in_flight[request.id]
        self._room.set()
        await self._respond(ctx, request, response)

    def _response_frame(self, request: Request, response: Response) -> bytes:
        frame = encode_frame(response)
        if len(frame) > self.daemon.max_frame_size:
            log.error("response over the frame limit", extra={"method": request.method})
            frame = encode_frame(
                Response(
                    request.id,
                    error=RpcError(
                        ErrorCode.FRAME_TOO_LARGE,
                        f"the response ({len(frame)} bytes) exceeds max_frame_size "
                        f"({self.daemon.max_frame_size}); raise [daemon] max_frame_size",
                    ),
                )
            )
        return frame

    async def _respond(self, ctx: RequestContext, request: Request, response: Response) -> None:
        try:
            await self._queue(self._response_frame(request, response))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return
        for action in ctx.after_response:
            action()

    async def _queue(self, frame: bytes) -> None:
        """Send or queue a frame now if there is room (send() would first yield
        and let later events overtake it), else wait for room."""
        frame = self._write_through(frame)
        if not frame:
            return
        # Counted first: while this waits for room, the write loop may take the
        # frame (and count it out) before this resumes.
        self._queued += 1
        try:
            self._outbox.send_nowait(frame)
        except anyio.WouldBlock:
            await self._outbox.send(frame)

    def _answer(self, ctx: RequestContext, request: Request, method: InlineMethod) -> Response:
        try:
            result = method.answer(ctx, self._params(request, method))
        except Exception as exc:
            return self._failed(request, exc)
        return self._succeeded(request, result)

    async def _dispatch(
        self, ctx: RequestContext, request: Request, method: Method | None
    ) -> Response:
        try:
            if method is None:
                raise ServiceError(
                    ErrorCode.METHOD_NOT_FOUND,
                    f"unknown method {quote(request.method)}; this daemon knows: "
                    + ", ".join(sorted(METHODS)),
                )
            result = await method.handler(ctx, self._params(request, method))
        except Exception as exc:
            return self._failed(request, exc)
        return self._succeeded(request, result)

    def _params(self, request: Request, method: Method | InlineMethod) -> Any:
        if not self.greeted and request.method != "hello":
            raise ServiceError(
                ErrorCode.HELLO_REQUIRED, "send a hello request with the protocol version first"
            )
        try:
            return decode_params(request.params, method.params)
        except (msgspec.DecodeError, *_UNDECODABLE) as exc:
            raise ServiceError(
                ErrorCode.INVALID_PARAMS,
                f"invalid params for {request.method}: {_decode_failure(exc)}",
            ) from None

    def _failed(self, request: Request, exc: Exception) -> Response:
        """The error response for a handler's failure (called where it was caught)."""
        if isinstance(exc, ServiceError):
            return Response(request.id, error=RpcError(exc.code, exc.message, exc.data))
        log.exception("request failed", extra={"method": request.method})
        return Response(
            request.id,
            error=RpcError(
                ErrorCode.INTERNAL_ERROR, "internal error in mcpd; the daemon log has details"
            ),
        )

    def _succeeded(self, request: Request, result: Any) -> Response:
        if request.method == "hello":
            self.greeted = True
        return Response(request.id, result=result)


# Besides msgspec.DecodeError, msgspec lets these out of a decode: invalid
# UTF-8 in a string, and nesting deeper than the interpreter's recursion limit.
_UNDECODABLE = (UnicodeDecodeError, RecursionError)


def quote(text: str) -> str:
    """A client's text, quoted and cut short, for a message or the log."""
    if len(text) <= QUOTE_CHARS:
        return repr(text)
    return f"{text[:QUOTE_CHARS]!r}… ({len(text)} characters)"


def _decode_failure(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, UnicodeDecodeError):
        return f"a string is not valid UTF-8 ({exc.reason})"
    text = str(exc)
    # msgspec quotes an invalid value whole; the client's value may be huge.
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + "…"


def next_message(decoder: FrameDecoder) -> Message | None:
    """The next decoded message, or None until more bytes arrive."""
    try:
        body = decoder.next_frame()
    except FrameTooLarge as exc:
        raise _ProtocolViolation(ErrorCode.FRAME_TOO_LARGE, str(exc)) from None
    if body is None:
        return None
    try:
        return decode_message(body)
    except msgspec.ValidationError as exc:  # a subclass of DecodeError: first
        raise _ProtocolViolation(
            ErrorCode.INVALID_REQUEST, f"invalid message: {_decode_failure(exc)}"
        ) from None
    except (msgspec.DecodeError, *_UNDECODABLE) as exc:
        raise _ProtocolViolation(
            ErrorCode.MALFORMED_MESSAGE, f"malformed msgpack: {_decode_failure(exc)}"
        ) from None
