"""The lane: POSTs on kept-alive HTTP/1.1 connections of the daemon's own, parsed
by httptools (llhttp, Node's HTTP parser), in place of aiohttp's request
machinery for the one kind of request that is on every call's path.

Theory of operation
-------------------
Every MCP message an editor sends is one POST, and the response event it
waits for comes back on that POST. Through aiohttp each of them cost about
0.2 ms of latency and 0.27 ms of CPU more than the least a Python client can
do (README, "Benchmarks"): its session, timers, tracing hooks, header
multidicts and response objects are built for every request. The lane keeps
what a POST needs and nothing else: a `LaneConnection` is an asyncio protocol
that writes the request in one write and feeds what arrives to the parser,
whose callbacks fill in the response head and queue the body's chunks.

A connection carries one exchange at a time. It goes back to its origin's
idle list (`LanePool`) once its response has been read to the end and the
server did not say `Connection: close`; anything else (a body left unread, a
cancelled request, a parse error, a broken connection) closes it, so that no
leftover byte can ever be taken for the next answer. An idle connection is
closed after KEEPALIVE_SECONDS, before the servers' own keep-alive ends, and
never taken once that old (one timer per pool sweeps them, none per call).
Nothing is ever sent twice: a POST written into a connection the server has
just closed fails, as through aiohttp.

An exchange is followed in one of two ways. `LanePool.post` returns once the
head has arrived, and the body is read with awaits, as any response is.
`LanePool.start` hands the exchange to an `http.LaneListener` instead: it is
told of the head and of every chunk from the connection's own callbacks,
with no task, future or timer of its own (one timer per pool keeps every
head's deadline); that is how an editor's call is forwarded
(mcpd/upstream/transport.py). A listener may stop listening at any point and
let a task read the rest with awaits.

What stays with aiohttp (mcpd/http.py): every other method (GETs of metadata
and event streams, DELETEs), and every request through a proxy. Redirects,
timeouts, TLS trust, the check of every header and the mapping of failures
to the project's errors are mcpd/http.py's for both, so the two cannot drift
apart.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import AsyncIterator, Callable, Mapping

import anyio
import httptools
from yarl import URL

from . import http
from .urls import Origin, origin_of

# The most of a response head kept: a server sending more is broken or hostile.
MAX_HEAD_BYTES = 64 * 1024
# Reading pauses while this much of a body waits for its reader, and goes on
# once less than LOW_WATER is left (an event stream nobody reads cannot fill memory).
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
# How long closing the pool waits for its connections' TLS goodbyes.
CLOSE_SECONDS = 1.0
# Header names the lane writes itself; a caller setting one goes through aiohttp.
OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})

# What an idle connection holds for headers (never written to: `send` replaces it).
_NO_HEADERS: dict[str, str] = {}
# (scheme, host, port, TLS settings): connections to one origin with one trust.
LaneKey = tuple[str, str, int, ssl.SSLContext | None]


class LaneConnection(asyncio.Protocol):
    """One HTTP/1.1 connection: a request written, its response parsed as it comes.

    Slotted and lazy (no future until one is awaited): the daemon keeps one per
    server, and 500 servers are a goal."""

    __slots__ = (
        "_buffered",
        "_gone",
        "_head_bytes",
        "_head_fields",
        "_lost",
        "_news",
        "_parser",
        "_paused",
        "_waiter",
        "busy",
        "chunks",
        "closed",
        "complete",
        "failure",
        "head",
        "head_due",
        "head_timeout",
        "head_url",
        "headers",
        "idle_since",
        "keep_alive",
        "key",
        "listener",
        "loop",
        "status",
        "transport",
    )

    def __init__(self, key: LaneKey) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False  # closing or closed: never to be used again
        self._gone = False  # the transport has let go
        self._lost: asyncio.Future[None] | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self.loop = asyncio.get_running_loop()
        self.idle_since = 0.0  # the loop's time when it went back to the pool
        self.head: asyncio.Future[None] | None = None
        # The deadline of the head awaited, if one is (`LanePool.watch_head`).
        self.head_due: float | None = None
        self.head_url = ""
        self.head_timeout = 0.0
        self.listener: http.LaneListener | None = None
        self.busy = False
        # Body arrived or ended during a read: whoever follows the exchange is
        # told once the parser returns, once for all the read brought.
        self._news = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0  # until the final head has arrived
        self.headers: dict[str, str] = {}
        self._head_bytes = 0  # received while the head is still to come
        self._head_fields: list[bytes] = []  # its fields as the parser gives them: name, value...
        self.chunks: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self.complete = False
        self.keep_alive = False
        self.failure: http.HttpError | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- the exchange, as the caller sees it

    def send(self, data: bytes) -> asyncio.Future[None]:
        """Write one request; return the future of its head. Its body arrives in
        `chunks`."""
        self._write(data)
        self.head = self.loop.create_future()
        return self.head

    def start(self, data: bytes, listener: http.LaneListener) -> None:
        """Write one request whose head and body `listener` is told of."""
        self._write(data)
        self.listener = listener

    def _write(self, data: bytes) -> None:
        assert self.transport is not None
        self._reset()
        self.busy = True
        self._parser = httptools.HttpResponseParser(self)  # 0.3 µs; none kept while idle
        self.transport.write(data)

    def time_out(self) -> None:
        """No head within its time: the exchange fails, and the connection with it."""
        self._fail(http.no_answer(self.head_url, self.head_timeout))

    def rest(self) -> None:
        """Between exchanges: hold nothing of the last one (an idle connection
        per server, at 500 servers, is counted in kilobytes)."""
        self.busy = False
        self._parser = None
        self.head = None
        self.listener = None
        self.headers = _NO_HEADERS

    async def more(self) -> None:
        """Wait until a chunk arrives, the body ends, or the exchange fails."""
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def take(self) -> bytes:
        """All of the body that has arrived (one chunk, as a rule: no copy)."""
        chunks, self.chunks, self._buffered = self.chunks, [], 0
        if self._paused:
            self._paused = False
            if self.transport is not None:
                self.transport.resume_reading()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def wait_closed(self) -> None:
        if not self._gone:
            self._lost = self.loop.create_future()
            await self._lost

    def reusable(self) -> bool:
        return (
            self.complete
            and self.keep_alive
            and not self.closed
            and not self.chunks
            and self.failure is None
        )

    def close(self) -> None:
        self.closed = True
        self.listener = None  # nothing more to tell
        self.head_due = None
        if self.transport is not None:
            self.transport.close()

    # -- asyncio's side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's class, not asyncio's

    def data_received(self, data: bytes) -> None:
        if not self.busy or self.complete:
            self._fail(http.ConnectionBroken(f"{self._where()} sent data nobody asked for"))
            return
        assert self._parser is not None  # busy
        if not self.status:
            # The parser holds a field until it ends: what bounds a head that
            # never does is counted here, a read at a time.
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self.complete:  # a second answer right behind the first
                self._fail(http.ConnectionBroken(f"{self._where()} sent data nobody asked for"))
                return
            # llhttp's reasons are fixed phrases ("Invalid header value char"),
            # never the bytes at fault.
            too_large = isinstance(exc.__context__, _HeadTooLarge)
            self._fail_head(
                _HEAD_TOO_LARGE if too_large else str(exc).lower() or type(exc).__name__
            )
        else:
            if not self.status and self._head_bytes > MAX_HEAD_BYTES and self.failure is None:
                self._fail_head(_HEAD_TOO_LARGE)
        if self._news:  # once for all that this read brought (a chunk and the end, say)
            self._news = False
            self._notify()

    def connection_lost(self, exc: Exception | None) -> None:
        # An idle connection stays listed until its timer or the next `take`.
        self.closed = self._gone = True
        if self._lost is not None:
            self._lost.set_result(None)
        if not self.busy or self.complete:
            return
        if not self.status:
            failure = http.ConnectionBroken(
                f"{self._where()} closed the connection before answering"
            )
        elif self._ends_at_close():
            self.complete = True
            self._notify()
            return
        else:
            failure = http.ConnectionBroken(f"the answer from {self._where()} broke off")
        self._fail(failure, close=False)

    # -- the parser's callbacks

    def on_message_begin(self) -> None:
        if self.complete:
            raise ValueError("an answer nobody asked for")  # stops the parser

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_fields += name, value  # read at the end of the head, all at once

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        fields, self._head_fields = self._head_fields, []
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue, 103 Early Hints)
            self._head_bytes = 0
            return
        if self._head_bytes > MAX_HEAD_BYTES and sum(map(len, fields)) + 2 * len(fields) > (
            MAX_HEAD_BYTES
        ):
            raise _HeadTooLarge  # the parser reports a callback error
        self.headers = _header_map(fields)
        self.status = status
        self._stop_head_timer()
        if self.listener is not None:
            self.listener.response.headed()
            self._tell(self.listener.on_head)
        elif self.head is not None:
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._news = True  # a parser callback: told when the read is done

    def on_message_complete(self) -> None:
        if not self.status:
            return  # the end of an interim answer
        self.keep_alive = self._parser is not None and self._parser.should_keep_alive()
        self.complete = True
        self._news = True

    # -- helpers

    def _where(self) -> str:
        scheme, host, port, _ = self.key
        return Origin(scheme, host, port).authority

    def _ends_at_close(self) -> bool:
        """A body with neither a length nor chunks ends when the connection does."""
        return "content-length" not in self.headers and "chunked" not in self.headers.get(
            "transfer-encoding", ""
        )

    def _fail_head(self, reason: str) -> None:
        where = self._where()
        self._fail(
            http.ConnectionBroken(f"the answer from {where} is not valid HTTP/1.1 ({reason})")
        )

    def _fail(self, failure: http.HttpError, close: bool = True) -> None:
        if self.failure is None:
            self.failure = failure
        self._stop_head_timer()
        if self.head is not None and not self.head.done():
            self.head.set_exception(failure)
            self.head.exception()  # retrieved here; the caller may be gone
        self._news = False  # told now, with whatever else this read brought
        self._notify()
        if close:
            self.close()

    def _notify(self) -> None:
        if self.listener is not None:
            self._tell(self.listener.on_progress)
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _tell(self, news: Callable[[], None]) -> None:
        """Tell the listener; what it raises goes to its supervisor, never to
        the event loop (which would log it and carry on as if nothing happened)."""
        listener = self.listener
        assert listener is not None
        try:
            news()
        except Exception as exc:
            self.listener = None
            self.close()
            listener.on_crash(exc)

    def _stop_head_timer(self) -> None:
        """No head to wait for any more (the pool's head timer then passes it by)."""
        self.head_due = None


class _HeadTooLarge(ValueError):
    pass


_HEAD_TOO_LARGE = f"a head over {MAX_HEAD_BYTES // 1024} KiB"


def _header_map(fields: list[bytes]) -> dict[str, str]:
    """A head's fields (name, value, name, value...) by lowercase name; the
    values of a repeated name joined with commas, in order. Decoded in two
    joins rather than a field at a time: the parser lets no LF into a name or
    value, so LF can separate them."""
    if not fields:
        return {}
    names = b"\n".join(fields[::2]).decode("latin-1").lower().split("\n")
    values = b"\n".join(fields[1::2]).decode("latin-1").split("\n")
    headers = dict(zip(names, values, strict=True))
    if len(headers) < len(names):
        headers = {}
        for name, value in zip(names, values, strict=True):
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


class LaneResponse(http.Response):
    """A response on a lane connection; the connection is freed by `aclose`."""

    def __init__(self, connection: LaneConnection, pool: LanePool, url: str) -> None:
        self.status_code = connection.status
        self.headers = connection.headers
        self.url = url
        self._connection = connection
        self._pool = pool

    async def aiter_bytes(self, idle_timeout: float | None = None) -> AsyncIterator[bytes]:
        connection = self._connection
        while True:
            if connection.chunks:
                yield connection.take()
            elif connection.complete:
                return
            elif connection.failure is not None:
                raise connection.failure
            elif idle_timeout is None:
                await connection.more()
            else:
                try:
                    with anyio.fail_after(idle_timeout):
                        await connection.more()
                except TimeoutError:
                    raise http.TimedOut(
                        f"{origin_of(self.url).authority} sent nothing for "
                        f"{idle_timeout:g}s in the middle of its answer"
                    ) from None

    async def aclose(self) -> None:
        self.release()

    def ended(self) -> bool:
        return self._connection.complete and not self._connection.chunks

    # -- for a listener (`LanePool.start`)

    def headed(self) -> None:
        self.status_code = self._connection.status
        self.headers = self._connection.headers

    def take(self) -> bytes:
        """What of the body has arrived and not been taken (b"": nothing yet)."""
        return self._connection.take() if self._connection.chunks else b""

    @property
    def failure(self) -> http.HttpError | None:
        return self._connection.failure

    def unlisten(self) -> None:
        """Stop the listener's news: the rest is read with awaits."""
        self._connection.listener = None

    def release(self) -> None:
        """Done with the exchange: the connection goes back to the pool if its
        answer was read to the end, else it is closed."""
        self._pool.give_back(self._connection)


class LanePool:
    """The idle lane connections of the daemon, per origin and TLS settings."""

    def __init__(self) -> None:
        # Per key, oldest first: each connection goes back at the end.
        self._idle: dict[LaneKey, list[LaneConnection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        # The connections whose head is (or was lately) awaited, and one timer
        # for all their deadlines, armed when none is or it is due too late: a
        # call arms no timer of its own (one made and cancelled per call cost
        # 8% of the daemon's time per call).
        self._heads: set[LaneConnection] = set()
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_timer_at = 0.0

    def take(self, key: LaneKey) -> LaneConnection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        fresh = idle[-1].loop.time() - http.KEEPALIVE_SECONDS
        while idle:
            connection = idle.pop()  # the most recent: the least likely to be closing
            if connection.idle_since <= fresh:  # too old (the sweeper is late): so are the rest
                connection.close()
            elif not connection.closed:
                return connection
        return None

    def give_back(self, connection: LaneConnection) -> None:
        if not connection.reusable():
            connection.close()
            return
        connection.rest()
        connection.idle_since = connection.loop.time()
        self._idle.setdefault(connection.key, []).append(connection)
        if self._sweeper is None:
            self._sweeper = connection.loop.call_later(http.KEEPALIVE_SECONDS, self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle for KEEPALIVE_SECONDS; come back for the
        next one to be."""
        loop = asyncio.get_running_loop()
        fresh = loop.time() - http.KEEPALIVE_SECONDS
        next_due: float | None = None
        for key, idle in list(self._idle.items()):
            while idle and (idle[0].idle_since <= fresh or idle[0].closed):
                idle.pop(0).close()
            if not idle:
                del self._idle[key]
            elif next_due is None or idle[0].idle_since < next_due:
                next_due = idle[0].idle_since
        self._sweeper = (
            None
            if next_due is None
            else loop.call_at(next_due + http.KEEPALIVE_SECONDS, self._sweep)
        )

    async def aclose(self) -> None:
        """Close the idle connections, and wait (briefly) until they are closed:
        TLS says goodbye before the transport lets go."""
        for timer in (self._sweeper, self._head_timer):
            if timer is not None:
                timer.cancel()
        self._sweeper = self._head_timer = None
        self._heads.clear()
        idle, self._idle = self._idle, {}
        connections = [connection for each in idle.values() for connection in each]
        for connection in connections:
            connection.close()
        with anyio.move_on_after(CLOSE_SECONDS):
            for connection in connections:
                await connection.wait_closed()

    def takes(self, headers: Mapping[str, str]) -> bool:
        """Whether the lane can send these headers (it writes some of its own)."""
        return OWN_HEADERS.isdisjoint(map(str.lower, headers))

    def prepare(
        self, wire: URL, context: ssl.SSLContext | None, headers: Mapping[str, str]
    ) -> tuple[LaneKey, bytes]:
        """POSTs to `wire` (a URL as it goes on the wire): which connections may
        carry them, and their head up to the body's length (`http.with_body`)."""
        scheme, host, port, target, host_field = _route(wire)
        return (scheme, host, port, context), request_head(target, host_field, headers)

    async def post(
        self, url: str, key: LaneKey, request: bytes, *, timeouts: tuple[float, float | None]
    ) -> LaneResponse:
        """Send a POST (`prepare`) to `url` and return once the response head has
        arrived, within the second of `timeouts` (the first bounds connecting).
        Errors are the project's `HttpError`s.

        The head's time is kept by a timer rather than a cancel scope: a scope
        per call costs 10 µs, a timer 2."""
        connect_timeout, head_timeout = timeouts
        connection = self.take(key)
        if connection is None:
            try:
                with anyio.fail_after(head_timeout):  # what connecting takes counts too
                    connection = await _connect(key, url, connect_timeout)
            except TimeoutError:
                raise http.no_answer(url, head_timeout) from None
        answered = connection.send(request)
        self._watch_head(connection, url, head_timeout)
        try:
            await answered
        except BaseException:
            connection.close()
            raise
        return LaneResponse(connection, self, url)

    def start(
        self,
        url: str,
        key: LaneKey,
        request: bytes,
        *,
        head_timeout: float | None,
        listener: http.LaneListener,
    ) -> bool:
        """Send a POST (`prepare`) on an idle connection and hand its exchange
        to `listener`; False, and nothing sent, when no connection is idle
        (then `post` it). A head that takes longer than `head_timeout` fails
        the exchange with the error `post` would raise."""
        connection = self.take(key)
        if connection is None:
            return False
        listener.response = LaneResponse(connection, self, url)
        connection.start(request, listener)
        self._watch_head(connection, url, head_timeout)
        return True

    def _watch_head(self, connection: LaneConnection, url: str, head_timeout: float | None) -> None:
        """Give the head `head_timeout` seconds from now (None: as long as it takes)."""
        if head_timeout is None:
            connection.head_due = None
            return
        due = connection.head_due = connection.loop.time() + head_timeout
        connection.head_url, connection.head_timeout = url, head_timeout
        self._heads.add(connection)
        if self._head_timer is None or self._head_timer_at > due:
            self._arm_head_timer(connection.loop, due)

    def _arm_head_timer(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = loop.call_at(due, self._check_heads)
        self._head_timer_at = due

    def _check_heads(self) -> None:
        """Fail the exchanges whose head is late; come back for the next deadline."""
        self._head_timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        next_due: float | None = None
        for connection in list(self._heads):
            due = connection.head_due
            if due is None or due <= now:
                self._heads.discard(connection)
                if due is not None:
                    connection.time_out()
            elif next_due is None or due < next_due:
                next_due = due
        if next_due is not None:
            self._arm_head_timer(loop, next_due)


@functools.lru_cache(maxsize=1024)  # a server's few URLs
def _route(wire: URL) -> tuple[str, str, int, str, str]:
    """Scheme, host, port, request target and Host field of a URL."""
    host = wire.raw_host or ""
    port = wire.port or 0
    return (
        wire.scheme,
        host,
        port,
        wire.raw_path_qs or "/",
        wire.host_port_subcomponent or host,
    )


async def _connect(key: LaneKey, url: str, timeout: float) -> LaneConnection:
    _, host, port, context = key
    connection = LaneConnection(key)
    try:
        with anyio.fail_after(timeout):
            transport, _ = await asyncio.get_running_loop().create_connection(
                lambda: connection,
                host,
                port,
                ssl=context,
                server_hostname=host if context is not None else None,
            )
    except TimeoutError:
        raise http.connect_timed_out(url, timeout) from None
    except OSError as exc:  # ssl's errors among them
        raise http.connect_refusal(exc, url) from None
    # uvloop may call connection_made only after create_connection has returned.
    connection.transport = transport
    return connection


_FIELD = "{}: {}\r\n"


def request_head(target: str, host: str, headers: Mapping[str, str]) -> bytes:
    """A POST's head but for its Content-Length; its headers are valid HTTP/1.1
    (`http.sendable`)."""
    fields = "".join(map(_FIELD.format, headers.keys(), headers.values()))  # no frame per field
    return (
        f"POST {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {http.USER_AGENT}\r\n{fields}"
    ).encode("ascii")
