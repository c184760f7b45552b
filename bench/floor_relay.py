"""The floor of a relay like mcpd, for `bench/run.py`: the least a Python
process on uvloop can do between the bridge and the server.

    python bench/floor_relay.py SOCKET URL [--upstream lean|aiohttp]

It serves any number of `mcpctl stdio` bridges at SOCKET (answering their
hello and attach, nothing else of the control protocol), each alone: it
relays each of a bridge's JSON-RPC messages, as they are, in one POST on that
bridge's own kept-alive connection to URL (opened at its first message, and
anew after KEEPALIVE_SECONDS idle; the MCP session's id taken from the answer
to the bridge's own initialize), and each answer's JSON-RPC response event
back to that bridge in a frame. No ids rewritten, no routing, no validation,
nothing shared between bridges, no error handling: what mcpd does beyond it
is what mcpd's own work costs; what it costs is what a daemon in Python pays
for the hops themselves (two sockets, two event loops' wake-ups, two
framings). With `--upstream aiohttp` the POSTs go through aiohttp (a client
session per bridge), as mcpd's do: the difference is what aiohttp costs on
this path.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import uvloop

from mcpd.protocol import (
    PROTOCOL_VERSION,
    FrameDecoder,
    HelloResult,
    Request,
    Response,
    Rpc,
    decode_message,
    encode_frame,
)

# An upstream connection idle this long is replaced before the next POST, as
# mcpd's are: Node's server closes one after 5 s, and a POST written into a
# connection as it closes would be lost (and its editor wait for ever).
KEEPALIVE_SECONDS = 4.0


class Upstream(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection: a POST out, the response event back."""

    def __init__(self, url: str, deliver: Any) -> None:
        parts = urlsplit(url)
        self.head = (
            f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        ).encode()
        self.session = b""
        self.deliver = deliver
        self.buffer = b""
        self.transport: Any = None
        self.address = (parts.hostname, parts.port)
        self.reconnecting: set[asyncio.Task[None]] = set()
        self.last_post = 0.0

    def connection_made(self, transport: Any) -> None:  # uvloop's, not asyncio's class
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None  # closed when idle (while other variants ran), or by the bridge
        self.buffer = b""

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self, self.address[0], self.address[1])

    def post(self, body: bytes) -> None:
        request = self.head + self.session + b"Content-Length: %d\r\n\r\n" % len(body) + body
        now = time.monotonic()
        if self.transport is not None and now - self.last_post > KEEPALIVE_SECONDS:
            # Its connection_lost comes (soon) before the new one's connection_made.
            self.transport.close()
            self.transport = None
        self.last_post = now
        if self.transport is not None:
            self.transport.write(request)
            return
        task = asyncio.get_running_loop().create_task(self._reconnect(request))
        self.reconnecting.add(task)  # held until done
        task.add_done_callback(self.reconnecting.discard)

    async def _reconnect(self, request: bytes) -> None:
        await self.connect()
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        # By lines, whatever framing they came in: the session id from the
        # first response's head, and every event's JSON data line goes back
        # (Node writes an event whole, in one chunk).
        lines = (self.buffer + data).split(b"\n")
        self.buffer = lines.pop()
        for line in lines:
            if line.startswith(b"data: {"):
                self.deliver(line[6:].rstrip(b"\r"))
            elif not self.session and line[:15].lower() == b"mcp-session-id:":
                value = line[15:].strip()
                self.session = b"Mcp-Session-Id: " + value + b"\r\n"
                self.session += b"MCP-Protocol-Version: 2025-11-25\r\n"


class AiohttpUpstream:
    """The same upstream through aiohttp, as mcpd's is (`--upstream aiohttp`): a
    task per POST, the answer read from the response's body as it arrives."""

    def __init__(self, url: str, deliver: Any) -> None:
        self.url = url
        self.deliver = deliver
        self.headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(keepalive_timeout=KEEPALIVE_SECONDS)
        )
        self.tasks: set[asyncio.Task[None]] = set()

    def post(self, body: bytes) -> None:
        task = asyncio.get_running_loop().create_task(self._post(body))
        self.tasks.add(task)  # held until done
        task.add_done_callback(self.tasks.discard)

    def close(self) -> None:
        task = asyncio.get_running_loop().create_task(self.session.close())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _post(self, body: bytes) -> None:
        async with self.session.post(self.url, data=body, headers=self.headers) as response:
            if session := response.headers.get("mcp-session-id"):
                self.headers["Mcp-Session-Id"] = session
                self.headers["MCP-Protocol-Version"] = "2025-11-25"
            partial = b""
            async for chunk in response.content.iter_any():
                lines = (partial + chunk).split(b"\n")
                partial = lines.pop()
                for line in lines:
                    if line.startswith(b"data: {"):
                        self.deliver(line[6:].rstrip(b"\r"))


class Bridge(asyncio.Protocol):
    """One bridge's connection, with its own upstream."""

    def __init__(self, upstream: Upstream | AiohttpUpstream) -> None:
        self.upstream = upstream
        upstream.deliver = self.answer
        self.decoder = FrameDecoder()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:  # uvloop's, not asyncio's class
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.upstream.close()

    def answer(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(encode_frame(Rpc(data)))

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.decoder.feed(data)
        while (body := self.decoder.next_frame()) is not None:
            message = decode_message(body)
            if isinstance(message, Rpc):
                self.upstream.post(message.data)
            elif isinstance(message, Request):
                result: Any = None
                if message.method == "hello":
                    result = HelloResult(PROTOCOL_VERSION, "floor", os.getpid(), 1 << 24)
                self.transport.write(encode_frame(Response(message.id, result)))


async def main(path: str, url: str, client: str) -> None:
    loop = asyncio.get_running_loop()
    upstream = AiohttpUpstream if client == "aiohttp" else Upstream
    server = await loop.create_unix_server(lambda: Bridge(upstream(url, None)), path)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    arguments = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    arguments.add_argument("socket")
    arguments.add_argument("url")
    arguments.add_argument("--upstream", choices=["lean", "aiohttp"], default="lean")
    options = arguments.parse_args()
    uvloop.run(main(options.socket, options.url, options.upstream))
