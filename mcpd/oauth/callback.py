"""The loopback redirect target of the authorization flow, on h11.

`http://127.0.0.1:PORT/callback`, listening only while a flow waits for it
or a sign-in link is outstanding. A link, `/connect/<nonce>`, is what an
editor is given to show its user: the listener redirects it to the
authorization URL of the server's sign-in (started, or joined, at the
click), so the editor never holds the flow's `state` or PKCE challenge.
Requests are small GETs from the user's own browser; anything else is refused
quickly and can neither stop the listener nor keep the browser out:

- the request head is bounded (`MAX_REQUEST_HEAD`; 431 beyond it) and must
  arrive within `READ_TIMEOUT_SECONDS` of the connection, however slowly it
  trickles in (408 and closed after that); a body is never read (400);
- GET only (405, with `Allow: GET`; HEAD gets no body), 404 for other paths,
  400 for a target that does not parse;
- at most `MAX_CONNECTIONS` connections at once. When all are taken, the
  oldest one that has not finished sending its request head is dropped to
  make room, so connections that never finish (a slowloris) cannot lock the
  browser's redirect out; only when every connection is busy with a complete
  request is a newcomer refused;
- whatever goes wrong with one connection ends that connection only: it is
  logged and never reaches the listener, let alone the daemon.

The answer is a short HTML page, with everything that came from outside
escaped. Nothing from a request (its query holds the authorization code) is
logged.
"""

from __future__ import annotations

import html
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import anyio
import h11
from anyio.abc import SocketListener, SocketStream, TaskGroup

log = logging.getLogger(__name__)

CALLBACK_PATH = "/callback"
CONNECT_PATH = "/connect/"
MAX_REQUEST_HEAD = 16 * 1024
READ_TIMEOUT_SECONDS = 10.0
SEND_TIMEOUT_SECONDS = 5.0
MAX_CONNECTIONS = 16
# Connections the kernel queues until they are accepted: a burst beyond it
# would have the browser's connection retried a second later.
LISTEN_BACKLOG = 128
RECEIVE_SIZE = 16 * 1024

# Takes the query string; returns (succeeded, what to tell the user).
Deliver = Callable[[str], Awaitable[tuple[bool, str]]]
# Takes a sign-in link's nonce; returns the authorization URL to send the
# browser to, or why not (a used, expired or unknown link).
Connect = Callable[[str], Awaitable[tuple[str | None, str]]]


def redirect_uri(port: int) -> str:
    return f"http://127.0.0.1:{port}{CALLBACK_PATH}"


def _page(title: str, message: str) -> bytes:
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>mcpd</title></head>"
        f"<body style='font-family: sans-serif; margin: 3em'><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(message)}</p></body></html>"
    ).encode()


@dataclass(eq=False)
class _Connection:
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    # Still waiting for its request head: it may be dropped for a newcomer.
    waiting: bool = True


@dataclass
class ListenerCounts:
    """What the listener did, for its closing log line."""

    answered: int = 0
    refused_busy: int = 0
    dropped_for_room: int = 0
    timed_out: int = 0
    failed: int = 0


@dataclass
class _Answer:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


class CallbackListener:
    def __init__(
        self, port: int, deliver: Deliver, answered: Callable[[], None], connect: Connect
    ) -> None:
        self.port = port
        self.deliver = deliver
        self.connect = connect
        self.answered = answered  # after each answer: the owner may stop listening now
        self._open: list[_Connection] = []  # oldest first
        self.counts = ListenerCounts()
        self._accepting = anyio.CancelScope()
        self._socket: socket.socket | None = None

    def stop(self) -> None:
        """Stop listening, and drop the connections still sending their request; the
        answers under way are sent (each within its timeout)."""
        self._accepting.cancel()
        for connection in self._open:
            if connection.waiting:
                connection.scope.cancel()

    def bind(self) -> int:
        """Bind the loopback port now (OSError if it is taken); the port bound."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            sock.listen(LISTEN_BACKLOG)
        except OSError:
            sock.close()
            raise
        self._socket = sock
        port: int = sock.getsockname()[1]
        return port

    async def serve(self) -> None:
        """After `bind`: answer callbacks until stopped or cancelled."""
        assert self._socket is not None
        listener = await SocketListener.from_socket(self._socket)
        try:
            async with anyio.create_task_group() as tg, listener:
                with self._accepting:
                    while True:
                        stream = await listener.accept()
                        try:
                            await self._admit(stream, tg)
                        except BaseException:
                            await anyio.aclose_forcefully(stream)  # never left open
                            raise
                # Stopped: the port is free again; the answers under way are sent.
        finally:
            counts = self.counts
            if counts != ListenerCounts():
                log.info(
                    "callback listener closed",
                    extra={
                        "answered": counts.answered,
                        "refused_busy": counts.refused_busy,
                        "dropped_for_room": counts.dropped_for_room,
                        "timed_out": counts.timed_out,
                        "failed": counts.failed,
                    },
                )

    def _make_room(self) -> bool:
        """Drop the oldest connection still waiting for its request head."""
        for connection in self._open:
            if connection.waiting:
                self._open.remove(connection)
                connection.scope.cancel()
                self.counts.dropped_for_room += 1
                log.debug("callback listener full; dropped the oldest idle connection")
                return True
        return False

    async def _admit(self, stream: SocketStream, tg: TaskGroup) -> None:
        """Serve a new connection, or refuse it if too many are open."""
        if len(self._open) >= MAX_CONNECTIONS and not self._make_room():
            self.counts.refused_busy += 1
            log.debug("callback listener busy; refusing a connection")
            await stream.aclose()
            return
        connection = _Connection()
        self._open.append(connection)
        tg.start_soon(self._serve_one, stream, connection)

    async def _serve_one(self, stream: SocketStream, connection: _Connection) -> None:
        try:
            with connection.scope:
                async with stream:
                    await self._converse(stream, connection)
        except Exception as exc:  # one connection never ends the listener
            self.counts.failed += 1
            log.warning("callback request failed", extra={"error": type(exc).__name__})
        finally:
            if connection in self._open:
                self._open.remove(connection)

    async def _converse(self, stream: SocketStream, connection: _Connection) -> None:
        h11_connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        try:
            with anyio.fail_after(READ_TIMEOUT_SECONDS):
                request = await self._read_request(stream, h11_connection)
        except TimeoutError:
            self.counts.timed_out += 1
            log.debug("callback request too slow; dropped")
            await self._respond_raw(stream, 408, _page("Too slow", "The request took too long."))
            return
        except h11.RemoteProtocolError as exc:
            await self._respond_raw(
                stream, exc.error_status_hint, _page("Bad request", "That was not HTTP.")
            )
            self._after_answer()
            return
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            return
        connection.waiting = False
        try:
            answer = await self._answer(request)
        except Exception as exc:  # the browser gets a page, whatever happened
            self.counts.failed += 1
            log.error("could not finish the sign-in callback", extra={"error": type(exc).__name__})
            answer = _Answer(500, _page("Sign-in failed", "mcpd failed; see its log."))
        await self._respond(stream, h11_connection, answer, head_only=request.method == b"HEAD")
        self._after_answer()

    def _after_answer(self) -> None:
        self.counts.answered += 1
        self.answered()

    async def _read_request(self, stream: SocketStream, connection: h11.Connection) -> h11.Request:
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive(RECEIVE_SIZE))
                continue
            if isinstance(event, h11.Request):
                return event
            raise anyio.EndOfStream

    async def _answer(self, request: h11.Request) -> _Answer:
        if request.method != b"GET":
            return _Answer(
                405,
                _page("Method not allowed", "Only the browser's redirect is expected here."),
                [("Allow", "GET")],
            )
        has_body = any(
            (name == b"content-length" and value.strip() != b"0") or name == b"transfer-encoding"
            for name, value in request.headers
        )
        if has_body:
            return _Answer(400, _page("Bad request", "The browser's redirect has no body."))
        try:
            target = urlsplit(request.target.decode("ascii", errors="replace"))
        except ValueError:
            return _Answer(400, _page("Bad request", "That address does not parse."))
        if target.path.startswith(CONNECT_PATH):
            location, problem = await self.connect(target.path.removeprefix(CONNECT_PATH))
            if location is None:
                return _Answer(404, _page("This link cannot be used", problem))
            page = _page("Signing in", "Continue to the sign-in page.")
            return _Answer(303, page, [("Location", location)])
        if target.path != CALLBACK_PATH:
            return _Answer(404, _page("Not found", "Nothing here."))
        succeeded, message = await self.deliver(target.query)
        if succeeded:
            return _Answer(200, _page("Signed in", f"{message} You can close this tab."))
        return _Answer(400, _page("Sign-in failed", message))

    async def _respond(
        self, stream: SocketStream, connection: h11.Connection, answer: _Answer, *, head_only: bool
    ) -> None:
        headers = [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(answer.body))),
            ("Connection", "close"),
            ("Cache-Control", "no-store"),
            ("Referrer-Policy", "no-referrer"),
            *answer.headers,
        ]
        data = connection.send(h11.Response(status_code=answer.status, headers=headers))
        if not head_only:  # h11 frames a response to HEAD as having no body
            data += connection.send(h11.Data(data=answer.body)) or b""
        data += connection.send(h11.EndOfMessage()) or b""
        await self._send(stream, data)

    async def _respond_raw(self, stream: SocketStream, status: int, body: bytes) -> None:
        """An answer outside h11's state machine: the request was not HTTP, or never came."""
        head = f"HTTP/1.1 {status} \r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        await self._send(stream, head.encode() + body)

    @staticmethod
    async def _send(stream: SocketStream, data: bytes) -> None:
        # A client that does not read cannot hold the connection open either.
        with anyio.move_on_after(SEND_TIMEOUT_SECONDS):
            try:
                await stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                return
