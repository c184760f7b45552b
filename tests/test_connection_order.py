"""A client connection's frames reach its client whole and in order, whatever
the socket takes at once.

A frame is written straight to the socket when nothing waits before it, and
what the socket does not take goes to the connection's write loop. The race
this guards: the socket takes part of a frame, the rest is handed to the write
loop, and before that loop has run the client reads (making room) and the
daemon pushes the next frame. Written straight then, it would land inside the
first one's bytes and the client could never find its frames again.

A fake peer on purpose: the race needs the client to read at one exact point
between two pushes of one event-loop turn, which no real client can be made
to do on cue; the test does that read itself, on a socket pair, and stands in
for the daemon with the two settings a connection reads.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import anyio
import anyio.abc
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint

from mcpd.connection import ClientConnection
from mcpd.protocol import Event, FrameDecoder, decode_message, encode_frame


@dataclass
class _DaemonSettings:
    max_frame_size: int = 1 << 24
    config: object = field(default=None)


def _drain(sock: socket.socket, into: bytearray) -> None:
    while True:
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            return
        if not data:
            return
        into += data


async def _frames_pushed_around_a_read() -> list[Event]:
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setblocking(False)
    received = bytearray()
    stream = await anyio.abc.UNIXSocketStream.from_socket(ours)
    connection = ClientConnection(stream, _DaemonSettings(), 0)  # type: ignore[arg-type]
    big = Event("big", "x" * 1_000_000)
    small = Event("small", "y")
    expected = len(encode_frame(big)) + len(encode_frame(small))
    async with anyio.create_task_group() as tg:
        tg.start_soon(connection.serve)
        await wait_all_tasks_blocked()  # the write loop waits for its first frame
        connection.push_event(big)  # more than the socket takes: the rest to the write loop
        _drain(theirs, received)  # the client reads before that loop has run
        connection.push_event(small)
        while len(received) < expected:
            await checkpoint()
            _drain(theirs, received)
        await wait_all_tasks_blocked()
        _drain(theirs, received)
        connection.close()
    theirs.close()
    decoder = FrameDecoder(1 << 24)
    decoder.feed(bytes(received))
    events = []
    while (body := decoder.next_frame()) is not None:
        message = decode_message(body)
        assert isinstance(message, Event)
        events.append(message)
    assert decoder.pending == 0
    return events


def test_a_frame_pushed_while_the_last_ones_rest_waits_comes_after_it() -> None:
    events = anyio.run(_frames_pushed_around_a_read, backend_options={"use_uvloop": True})
    assert [(event.name, len(event.data)) for event in events] == [("big", 1_000_000), ("small", 1)]
