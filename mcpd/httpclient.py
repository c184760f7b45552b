"""The daemon's HTTP/1.1 client: h11 over anyio sockets, for MCP and OAuth alike.

Every editor's call crosses this client once, so it is kept to what that needs:
a keep-alive pool per origin, TLS (the `verify` setting), redirects, proxies
from the environment, and streamed bodies for SSE. A general-purpose client
cost about 0.8 ms more per call here (bench/run.py measures the data plane).

Theory of operation: `send` returns a `Response` as soon as its head arrived;
its body is read with `aiter_bytes`. A connection goes back to the pool only
when its response was read to the end and both sides may go on (h11 says so);
a response closed early, a cancelled read or any error closes its connection
instead. A pooled connection the server has closed meanwhile is noticed before
use, and a request that fails on a reused connection before any answer came is
sent once more on a new one, because the server may have closed it in between.
"""

from __future__ import annotations

import base64
import os
import select
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import cache
from typing import NamedTuple
from urllib.parse import urljoin, urlsplit

import anyio
import anyio.abc
import h11
from anyio.streams.tls import TLSStream

READ_SIZE = 65536
# Idle connections kept per origin: enough for every editor calling at once
# (32 in the benchmarks) to find one.
MAX_IDLE_PER_ORIGIN = 32
MAX_REDIRECTS = 10
DEFAULT_PORTS = {"http": 80, "https": 443}


class HttpError(Exception):
    """An exchange failed below HTTP; the message is fit for a user."""


class ConnectError(HttpError):
    """No connection could be made (refused, no such host, TLS refused)."""


class ConnectionBroken(HttpError):
    """The connection failed while sending or receiving."""


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            raise HttpError(f"{url!r} is not an http:// or https:// URL")
        return cls(scheme, parts.hostname.lower(), parts.port or DEFAULT_PORTS[scheme])

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def tls_context(verify: bool | str) -> ssl.SSLContext:
    """The TLS settings of `verify`: True checks against the system's CAs, a path
    against a CA bundle file or directory, False not at all."""
    if isinstance(verify, bool):
        return _shared_tls_context(verify)
    if os.path.isdir(verify):
        context = ssl.create_default_context(capath=verify)
    else:
        context = ssl.create_default_context(cafile=verify)
    context.set_alpn_protocols(["http/1.1"])
    return context


@cache
def _shared_tls_context(verify: bool) -> ssl.SSLContext:
    """One context for every server with the same setting: loading the system's
    CA certificates is slow and large. (A bundle path is read anew, so a
    changed file counts from the next connection attempt of its server.)"""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


class Proxy(NamedTuple):
    origin: Origin
    # Proxy-Authorization, when the proxy's URL carries a user and password.
    headers: list[tuple[str, str]]


def proxy_for(origin: Origin, environ: Mapping[str, str]) -> Proxy | None:
    """The HTTP proxy the environment names for this origin, if any, by the rules
    curl follows: `https_proxy`, `http_proxy`, `all_proxy`, minus `no_proxy`."""
    no_proxy = environ.get("no_proxy", environ.get("NO_PROXY", ""))
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if entry == "*" or (
            entry
            and (origin.host == entry.lstrip(".") or origin.host.endswith("." + entry.lstrip(".")))
        ):
            return None
    name = f"{origin.scheme}_proxy"
    url = environ.get(name, environ.get(name.upper())) or environ.get(
        "all_proxy", environ.get("ALL_PROXY", "")
    )
    if not url:
        return None
    url = url if "://" in url else f"http://{url}"
    proxy = Origin.of(url)
    if proxy.scheme != "http":
        raise HttpError(
            f"{name.upper()} must be an http:// proxy; {proxy.scheme}:// is not supported"
        )
    parts = urlsplit(url)
    if parts.username is None:
        return Proxy(proxy, [])
    credentials = base64.b64encode(f"{parts.username}:{parts.password or ''}".encode())
    return Proxy(proxy, [("Proxy-Authorization", f"Basic {credentials.decode()}")])


class _Connection:
    def __init__(self, stream: anyio.abc.ByteStream, origin: Origin) -> None:
        self.stream = stream
        self.origin = origin
        self.h11 = h11.Connection(h11.CLIENT)
        self.reused = False
        self.socket = stream.extra(anyio.abc.SocketAttribute.raw_socket)

    async def next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise ConnectionBroken(f"the server broke HTTP/1.1: {exc}") from None
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await self.stream.receive(READ_SIZE)
            except anyio.EndOfStream:
                data = b""  # a body that runs to the close ends here
            except (anyio.BrokenResourceError, OSError) as exc:
                # A reset is never an end: not even of a body that runs to the close.
                raise ConnectionBroken(f"the connection was reset ({exc})") from None
            self.h11.receive_data(data)

    def idle_and_open(self) -> bool:
        """Whether a pooled connection is still usable: a server that closed it
        (or sent something unasked) has made its socket readable."""
        readable, _, _ = select.select([self.socket], [], [], 0)
        return not readable

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.stream.aclose()


class Response:
    """A response whose head has arrived; read its body once, then close it."""

    def __init__(
        self, client: HttpClient, connection: _Connection, head: h11.Response, url: str
    ) -> None:
        self.status_code = head.status_code
        self.headers: dict[str, str] = {}
        for name, value in head.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text
        self.url = url
        self._client = client
        self._connection: _Connection | None = connection

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives. A reader that stops early must `aclose` the
        response: the rest is unread, so its connection cannot carry another."""
        connection = self._connection
        if connection is None:
            return
        while True:
            event = await connection.next_event()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._connection = None
                await self._client._release(connection)
                return
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionBroken("the server closed the connection mid-response")

    async def read(self, limit: int) -> bytes:
        """The whole body, or HttpError if it exceeds `limit` bytes."""
        chunks, size = [], 0
        async for chunk in self.aiter_bytes():
            size += len(chunk)
            if size > limit:
                await self.aclose()
                raise BodyTooLarge(f"the response is over {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.aclose()


class BodyTooLarge(HttpError):
    pass


class HttpClient:
    """Connections to any number of origins, with the TLS settings of one MCP server."""

    def __init__(
        self,
        *,
        verify: bool | str = True,
        connect_timeout: float = 30.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.verify = verify
        self.connect_timeout = connect_timeout
        self.environ = os.environ if environ is None else environ
        self._idle: dict[Origin, list[_Connection]] = {}
        self._proxies: dict[Origin, Proxy | None] = {}

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes = b""
    ) -> Response:
        """Send a request, following redirects; return once the final response's head came."""
        authorization = dict(headers)
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._send_once(method, url, authorization, body)
            location = response.headers.get("location")
            if response.status_code not in (301, 302, 303, 307, 308) or location is None:
                return response
            await response.aclose()
            target = urljoin(url, location)
            if Origin.of(target) != Origin.of(url):
                # Credentials meant for one origin never follow a redirect to another.
                authorization = {
                    k: v for k, v in authorization.items() if k.lower() != "authorization"
                }
            if response.status_code == 303 or (
                response.status_code in (301, 302) and method == "POST"
            ):
                method, body = "GET", b""
                authorization = {
                    k: v
                    for k, v in authorization.items()
                    if k.lower() not in ("content-type", "content-length")
                }
            url = target
        raise HttpError(f"more than {MAX_REDIRECTS} redirects from {url}")

    @asynccontextmanager
    async def stream(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes = b""
    ) -> AsyncIterator[Response]:
        response = await self.send(method, url, headers, body)
        try:
            yield response
        finally:
            await response.aclose()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                await connection.aclose()

    async def _send_once(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> Response:
        origin = Origin.of(url)
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if origin not in self._proxies:
            self._proxies[origin] = proxy_for(origin, self.environ)
        proxy = self._proxies[origin]
        if proxy is not None and origin.scheme == "http":
            target = f"http://{origin.authority}{target}"  # absolute form, for the proxy
        fields = [("Host", origin.authority), *headers.items()]
        if body or method in ("POST", "PUT", "PATCH"):
            fields.append(("Content-Length", str(len(body))))
        if proxy is not None and origin.scheme == "http":
            fields += proxy.headers
        request = h11.Request(method=method, target=target, headers=fields)
        while True:
            connection = await self._connection(origin, proxy)
            try:
                return await self._exchange(connection, request, body, url)
            except ConnectionBroken:
                if not connection.reused:
                    raise
                # The server closed a pooled connection as it was taken: once more, new.

    async def _exchange(
        self, connection: _Connection, request: h11.Request, body: bytes, url: str
    ) -> Response:
        try:
            data = connection.h11.send(request) or b""
            if body:
                data += connection.h11.send(h11.Data(data=body)) or b""
            data += connection.h11.send(h11.EndOfMessage()) or b""
            try:
                await connection.stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                raise ConnectionBroken(f"the connection broke while sending ({exc})") from None
            while True:
                event = await connection.next_event()
                if isinstance(event, h11.Response):
                    return Response(self, connection, event, url)
                if isinstance(event, h11.ConnectionClosed):
                    raise ConnectionBroken("the server closed the connection without answering")
        except BaseException:
            await connection.aclose()
            raise

    async def _connection(self, origin: Origin, proxy: Proxy | None) -> _Connection:
        idle = self._idle.get(origin, [])
        while idle:
            connection = idle.pop()
            if connection.idle_and_open():
                connection.reused = True
                return connection
            await connection.aclose()
        return _Connection(await self._connect(origin, proxy), origin)

    async def _release(self, connection: _Connection) -> None:
        """A response was read to its end: keep its connection if HTTP/1.1 allows."""
        h11_connection = connection.h11
        if h11_connection.our_state is h11.DONE and h11_connection.their_state is h11.DONE:
            h11_connection.start_next_cycle()
            idle = self._idle.setdefault(connection.origin, [])
            if len(idle) < MAX_IDLE_PER_ORIGIN:
                idle.append(connection)
                return
        await connection.aclose()

    async def _connect(self, origin: Origin, proxy: Proxy | None) -> anyio.abc.ByteStream:
        where = proxy.origin if proxy is not None else origin
        try:
            with anyio.fail_after(self.connect_timeout):
                stream: anyio.abc.ByteStream = await anyio.connect_tcp(where.host, where.port)
                try:
                    if proxy is not None and origin.scheme == "https":
                        await self._tunnel(stream, origin, proxy)
                    if origin.scheme == "https":
                        stream = await TLSStream.wrap(
                            stream,
                            hostname=origin.host,
                            ssl_context=tls_context(self.verify),
                            standard_compatible=False,
                        )
                except BaseException:
                    with anyio.CancelScope(shield=True):
                        await stream.aclose()
                    raise
        except TimeoutError:
            raise ConnectError(
                f"cannot connect to {where.authority}: no answer within {self.connect_timeout:g}s"
            ) from None
        except ssl.SSLError as exc:
            raise ConnectError(f"cannot connect to {origin.authority}: TLS: {exc}") from None
        except OSError as exc:
            raise ConnectError(
                f"cannot connect to {where.authority}: {exc.strerror or exc}"
            ) from None
        return stream

    async def _tunnel(self, stream: anyio.abc.ByteStream, origin: Origin, proxy: Proxy) -> None:
        """CONNECT through an HTTP proxy; the TLS to the origin then runs inside."""
        tunnel = h11.Connection(h11.CLIENT)
        authority = f"{origin.host}:{origin.port}"
        fields = [("Host", authority), *proxy.headers]
        request = h11.Request(method="CONNECT", target=authority, headers=fields)
        await stream.send(tunnel.send(request) or b"")
        while True:
            event = tunnel.next_event()
            if event is h11.NEED_DATA:
                try:
                    tunnel.receive_data(await stream.receive(READ_SIZE))
                except anyio.EndOfStream:
                    tunnel.receive_data(b"")
            elif isinstance(event, h11.Response) and 200 <= event.status_code < 300:
                return
            elif isinstance(event, h11.Response | h11.ConnectionClosed):
                status = getattr(event, "status_code", "no answer")
                raise ConnectError(f"the proxy refused a tunnel to {authority} ({status})")
