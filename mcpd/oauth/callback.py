"""The loopback redirect target of the authorization flow, on h11.

`http://127.0.0.1:PORT/callback`, listening only while a flow waits for it.
Requests are small GETs from the user's own browser; anything else is refused
quickly: a bounded head, a read timeout, GET only, 404 for other paths, and a
cap on connections served at once. The answer is a short HTML page, with
everything that came from outside escaped.
"""

from __future__ import annotations

import html
import logging
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import anyio
import h11
from anyio.abc import SocketListener, SocketStream, TaskStatus

log = logging.getLogger(__name__)

CALLBACK_PATH = "/callback"
MAX_REQUEST_HEAD = 16 * 1024
READ_TIMEOUT_SECONDS = 10.0
MAX_CONNECTIONS = 16

# Takes the query string; returns (succeeded, what to tell the user).
Deliver = Callable[[str], Awaitable[tuple[bool, str]]]


def redirect_uri(port: int) -> str:
    return f"http://127.0.0.1:{port}{CALLBACK_PATH}"


def _page(title: str, message: str) -> bytes:
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>mcpd</title></head>"
        f"<body style='font-family: sans-serif; margin: 3em'><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(message)}</p></body></html>"
    ).encode()


class CallbackListener:
    def __init__(self, port: int, deliver: Deliver, answered: Callable[[], None]) -> None:
        self.port = port
        self.deliver = deliver
        self.answered = answered  # after each answer: the owner may stop listening now
        self._slots = anyio.Semaphore(MAX_CONNECTIONS)

    async def serve(self, *, task_status: TaskStatus[int]) -> None:
        """Listen until cancelled; started with the port actually bound.

        OSError (the port is taken) reaches the caller of `start` directly.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            sock.listen(MAX_CONNECTIONS)
        except OSError:
            sock.close()
            raise
        listener = await SocketListener.from_socket(sock)
        async with listener, anyio.create_task_group() as tg:
            port = listener.extra(anyio.abc.SocketAttribute.local_port)
            task_status.started(port)
            while True:
                stream = await listener.accept()
                if self._slots.value == 0:
                    log.warning("callback listener busy; refusing a connection")
                    await stream.aclose()
                    continue
                tg.start_soon(self._serve_one, stream)

    async def _serve_one(self, stream: SocketStream) -> None:
        async with self._slots, stream:
            connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
            try:
                with anyio.fail_after(READ_TIMEOUT_SECONDS):
                    request = await self._read_request(stream, connection)
                status, body = await self._answer(request)
            except TimeoutError:
                log.info("callback request too slow; dropped")
                return
            except h11.RemoteProtocolError as exc:
                status, body = exc.error_status_hint, _page("Bad request", "That was not HTTP.")
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return
            await self._respond(stream, connection, status, body)
            self.answered()

    async def _read_request(self, stream: SocketStream, connection: h11.Connection) -> h11.Request:
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive(65536))
                continue
            if isinstance(event, h11.Request):
                return event
            raise anyio.EndOfStream

    async def _answer(self, request: h11.Request) -> tuple[int, bytes]:
        if request.method != b"GET":
            return 405, _page("Method not allowed", "Only the browser's redirect is expected here.")
        target = urlsplit(request.target.decode("ascii", errors="replace"))
        if target.path != CALLBACK_PATH:
            return 404, _page("Not found", "Nothing here.")
        succeeded, message = await self.deliver(target.query)
        if succeeded:
            return 200, _page("Signed in", f"{message} You can close this tab.")
        return 400, _page("Sign-in failed", message)

    async def _respond(
        self, stream: SocketStream, connection: h11.Connection, status: int, body: bytes
    ) -> None:
        headers = [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            ("Cache-Control", "no-store"),
            ("Referrer-Policy", "no-referrer"),
        ]
        try:
            if connection.their_state is h11.ERROR or connection.our_state is not h11.SEND_RESPONSE:
                data = (
                    f"HTTP/1.1 {status} \r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n"
                ).encode() + body
                await stream.send(data)
                return
            data = connection.send(h11.Response(status_code=status, headers=headers))
            data += connection.send(h11.Data(data=body))
            data += connection.send(h11.EndOfMessage())
            await stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return
