"""Every outbound HTTP request of the daemon, MCP and OAuth alike: on aiohttp,
and POSTs that need no proxy on the daemon's own lane (mcpd/httplane.py).

Theory of operation
-------------------
An `HttpClient` belongs to one server and lives as long as that server runs:
its TLS trust, its proxies and its timeouts, over the daemon's pool of
connections (`HttpPool`: aiohttp's keep-alive pool, and the lane's). Every
MCP message is a POST, so the lane carries the calls; aiohttp carries the
rest (metadata, event streams, DELETEs, anything through a proxy). This
module decides for both: the URL and headers checked, redirects, timeouts,
trust, and the failures mapped to one family of errors.

`send` returns a `Response` once the response head has arrived; its body is
read with `aiter_bytes` or `read`, and the response is then closed. A body
read to its end gives its connection back to the pool; one closed early
closes its connection.

Failures: whatever goes wrong below HTTP comes out of this module as
`HttpError` (or a subclass) and nothing else: aiohttp's, yarl's and the
lane's parser's errors, TLS errors, timeouts, and a URL or header that cannot
be sent (only visible ASCII, spaces and tabs go into a header value).
Messages are fit for a user and quote no header value, no body and no query
string, so that no token reaches a log through them.

Timeouts, per phase: connecting (TCP, the proxy's tunnel, TLS) within the
client's `connect_timeout`; the response head within the `head_timeout` of
each request; between two chunks of a body, `idle_timeout` where the caller
gives one (an event stream may be silent as long as it likes).

Trust: the `verify` setting (False, or a CA bundle) applies to the server's
own origin only. Every other origin (an authorization server, usually a third
party) is checked against the system's CAs, or `oauth.verify`.

Redirects follow one policy per kind of request, chosen by the caller and
applied here (`redirect_target`): none at all for OAuth back-channel POSTs;
for metadata GETs, to https targets (or http on loopback) only; for MCP
requests, within the same origin or from http to https on the same host.
Never from https to http, and nothing but `Accept` crosses to another origin.
A 303 (and a 301 or 302 of a POST) continues as a GET without the body.

Nothing is sent twice by this module. aiohttp re-sends an idempotent request
(GET, DELETE) once when the pooled connection it went out on turns out to
have been closed by the server before any answer, as RFC 9112 allows; it
never re-sends a POST, nor does the lane, and every MCP message and OAuth
exchange is a POST.
"""

from __future__ import annotations

import enum
import functools
import os
import re
import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple

import aiohttp
import anyio
from yarl import URL

from . import __version__
from .urls import DEFAULT_PORTS, Origin, is_loopback, origin_of, wire_clean

if TYPE_CHECKING:
    from .httplane import LaneKey, LanePool, LaneResponse

MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Request headers that hold nothing of the user's and may follow a redirect elsewhere.
PORTABLE_HEADERS = frozenset({"accept"})
USER_AGENT = f"mcpd/{__version__}"
# An idle pooled connection is closed after this many seconds: less than the 5 s
# after which Node's and uvicorn's servers close theirs, so that a request is
# rarely written into a connection the server is closing (a POST is never re-sent).
KEEPALIVE_SECONDS = 4.0


class HttpError(Exception):
    """An exchange failed below HTTP; the message is fit for a user."""


class ConnectError(HttpError):
    """No connection could be made (refused, no such host, TLS refused, timed out)."""


class ConnectionBroken(HttpError):
    """The connection failed while sending or receiving, or the answer was not HTTP."""


class TimedOut(HttpError):
    """No response head, or no more of a body, within its time."""


class BodyTooLarge(HttpError):
    pass


class RedirectRefused(HttpError):
    """A redirect the request's policy does not allow; the response is not followed."""


class Redirects(enum.Enum):
    """Which redirects a request may follow (see the module's docstring)."""

    NONE = "none"
    SECURE = "secure"
    SAME_ORIGIN = "same-origin"


def redirect_target(policy: Redirects, url: str, location: str, has_body: bool) -> str:
    """Where a redirect from `url` to `location` leads, if `policy` allows it; else
    RedirectRefused. Sans-IO: the decision alone."""
    here = origin_of(url)
    if policy is Redirects.NONE:
        raise RedirectRefused(
            f"{here.authority} answered with a redirect, which this request must not follow"
        )
    try:
        target_url = URL(url, encoded=True).join(URL(location))
        target = str(target_url)
        there = Origin(target_url.scheme, (target_url.raw_host or "").lower(), target_url.port or 0)
    except (ValueError, TypeError, UnicodeError):
        raise RedirectRefused(
            f"{here.authority} redirected to an address that is not a valid URL"
        ) from None
    if there.scheme not in DEFAULT_PORTS or not there.host or not 0 < there.port <= 65535:
        raise RedirectRefused(
            f"{here.authority} redirected to an address that is not a valid http(s) URL"
        )
    if here.scheme == "https" and there.scheme == "http":
        raise RedirectRefused(f"{here.authority} redirected from https to http; refusing it")
    if policy is Redirects.SECURE:
        if there.scheme != "https" and not is_loopback(there.host):
            raise RedirectRefused(
                f"{here.authority} redirected to {there.authority} over plain http; "
                "only https (or this machine) is allowed"
            )
        if has_body and there != here:
            raise RedirectRefused(
                f"{here.authority} redirected a request with a body to {there.authority}"
            )
        return target
    upgrade = here.scheme == "http" and there.scheme == "https" and here.host == there.host
    if there != here and not upgrade:
        raise RedirectRefused(
            f"{here.authority} redirected to another origin ({there.authority}); "
            "set the server's url to where it lives now"
        )
    return target


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
    CA certificates is slow and large. (A bundle path is read by each client
    that uses it, so a changed file counts from the next start of its server.)"""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


def proxy_for(url: str, environ: Mapping[str, str]) -> tuple[str, dict[str, str]] | None:
    """The HTTP proxy the environment names for `url`, and the headers for it, by
    the rules curl follows: `https_proxy`, `http_proxy`, `all_proxy`, minus
    `no_proxy` (lower case first, then upper case)."""
    target = origin_of(url)

    def setting(name: str) -> str:
        return environ.get(name) or environ.get(name.upper()) or ""

    for entry in (e.strip().lower().lstrip(".") for e in setting("no_proxy").split(",")):
        if entry == "*" or (entry and (target.host == entry or target.host.endswith("." + entry))):
            return None
    name = f"{target.scheme}_proxy"
    proxy = setting(name) or setting("all_proxy")
    if not proxy:
        return None
    proxy = proxy if "://" in proxy else f"http://{proxy}"
    try:
        parsed = URL(proxy)
        valid = parsed.scheme == "http" and bool(parsed.host) and parsed.port is not None
    except ValueError:
        valid = False
    if not valid:
        scheme = proxy.partition("://")[0]
        raise HttpError(
            f"{name.upper()} must be an http:// proxy; {scheme}:// is not supported"
            if scheme != "http"
            else f"{name.upper()} is not a valid proxy URL"
        )
    headers = {}
    if parsed.user is not None:
        headers["Proxy-Authorization"] = aiohttp.encode_basic_auth(
            parsed.user, parsed.password or ""
        )
    return str(parsed.with_user(None).with_password(None)), headers


@functools.lru_cache(maxsize=1024)  # a server's few URLs, parsed once
@functools.lru_cache(maxsize=1024)  # a server's few URLs, on every request
def _wire_url(url: str) -> URL:
    """`url` as aiohttp sends it: as written when it is clean, else encoded."""
    try:
        parsed = URL(url, encoded=True) if wire_clean(url) else URL(url)
        valid = parsed.scheme in DEFAULT_PORTS and bool(parsed.raw_host) and parsed.port
    except (ValueError, TypeError, UnicodeError):
        valid = False
    if not valid:
        raise HttpError("the request cannot be sent: its URL is not a valid http(s) URL")
    return parsed


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e]*")


def sendable(headers: Mapping[str, str]) -> bool:
    """Whether every header is valid HTTP/1.1 as it is: a token for a name, visible
    ASCII, spaces and tabs for a value (aiohttp would send non-ASCII as UTF-8)."""
    for name, value in headers.items():  # a loop, not a generator: it runs on every request
        if not (_TOKEN.fullmatch(name) and _FIELD_VALUE.fullmatch(value)):
            return False
    return True


def unsendable(url: str) -> HttpError:
    """The error for a request that cannot go on the wire; it quotes no header,
    whose value may be a secret."""
    return HttpError(
        f"the request to {origin_of(url).authority} cannot be sent: a header or the URL is not "
        "valid HTTP (a line break, a control character or non-ASCII text)"
    )


def no_answer(url: str, head_timeout: float | None) -> TimedOut:
    return TimedOut(f"no answer from {origin_of(url).authority} within {head_timeout:g}s")


def connect_timed_out(url: str, connect_timeout: float) -> ConnectError:
    return ConnectError(
        f"cannot connect to {origin_of(url).authority}: no answer within {connect_timeout:g}s"
    )


def connect_refusal(cause: BaseException, url: str) -> ConnectError:
    """The project's error for a connection to `url` that could not be made."""
    where = origin_of(url).authority
    if isinstance(cause, ssl.SSLCertVerificationError):
        reason = cause.verify_message or type(cause).__name__
        return ConnectError(f"cannot connect to {where}: TLS: certificate verify failed ({reason})")
    if isinstance(cause, ssl.SSLError):
        return ConnectError(f"cannot connect to {where}: TLS: {cause.reason or 'handshake failed'}")
    if isinstance(cause, socket.gaierror):
        return ConnectError(f"cannot connect to {where}: the name does not resolve")
    if isinstance(cause, ConnectionResetError) and url.startswith("https:"):
        # Accepted, then closed or reset before TLS was set up: a dying load
        # balancer, a captive portal, a firewall.
        how = "reset" if cause.strerror else "closed"
        return ConnectError(f"cannot connect to {where}: {how} during the TLS handshake")
    if isinstance(cause, ConnectionRefusedError):
        return ConnectError(f"cannot connect to {where}: refused")
    detail = cause.strerror if isinstance(cause, OSError) else None
    return ConnectError(f"cannot connect to {where}: {detail or 'failed'}")


def _failure(exc: BaseException, url: str, connect_timeout: float) -> HttpError:
    """The project's error for whatever aiohttp, yarl, ssl or the OS raised."""
    where = origin_of(url).authority
    if isinstance(exc, HttpError):
        return exc
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return connect_refusal(exc.certificate_error, url)
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        proxy = f"{exc.host}:{exc.port}"
        return ConnectError(f"cannot connect to the proxy {proxy}: {exc.strerror or 'refused'}")
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return connect_refusal(socket.gaierror(), url)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return connect_refusal(exc.os_error, url)
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return ConnectError(f"the proxy refused a tunnel to {where} (HTTP {exc.status})")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return connect_timed_out(url, connect_timeout)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ConnectionBroken(f"{where} closed the connection before answering")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return ConnectionBroken(f"the answer from {where} broke off")
    if isinstance(exc, aiohttp.ClientResponseError):
        return ConnectionBroken(f"the answer from {where} is not valid HTTP/1.1")
    if isinstance(exc, OSError):  # aiohttp's ClientOSError among them, and ssl's errors
        detail = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
        return ConnectionBroken(f"the connection to {where} failed ({detail})")
    if isinstance(exc, ValueError | TypeError | UnicodeError | LookupError):
        # aiohttp and yarl refuse a header or URL that cannot go on the wire;
        # their messages may quote it, so they are not repeated.
        return unsendable(url)
    if isinstance(exc, aiohttp.ClientError):
        return ConnectionBroken(f"the exchange with {where} failed ({type(exc).__name__})")
    raise TypeError("not an HTTP failure") from exc


# What _failure maps; anything else is a bug and travels on as it is.
_MAPPED = (aiohttp.ClientError, OSError, ValueError, TypeError, UnicodeError, LookupError)


class Response:
    """A response whose head has arrived; read its body once, then close it."""

    status_code: int
    headers: dict[str, str]  # names in lower case; repeated fields joined with ", "
    url: str

    def aiter_bytes(self, idle_timeout: float | None = None) -> AsyncIterator[bytes]:
        """The body as it arrives; no more than `idle_timeout` seconds between chunks."""
        raise NotImplementedError

    async def read(self, limit: int, idle_timeout: float | None = None) -> bytes:
        """The whole body, or BodyTooLarge if it exceeds `limit` bytes."""
        chunks, size = [], 0
        async for chunk in self.aiter_bytes(idle_timeout):
            size += len(chunk)
            if size > limit:
                await self.aclose()
                raise BodyTooLarge(f"the response is over {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        """Done with it: a body read to its end has already freed its connection;
        one left unread closes it."""
        raise NotImplementedError

    def ended(self) -> bool:
        """Whether the whole body has arrived and been read (no wait needed to
        see its end)."""
        raise NotImplementedError


class LanePost(NamedTuple):
    """POSTs to one URL with one set of headers, ready for the lane: which
    connections may carry them, and the head (`with_body` completes it)."""

    url: str
    key: LaneKey
    head: bytes


def with_body(head: bytes, body: bytes) -> bytes:
    """A prepared head (`LanePool.prepare`), its Content-Length, and the body."""
    return b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)


class LaneListener:
    """Follows one exchange from its connection's callbacks (`HttpClient.start_post`,
    on mcpd/httplane.py's lane).

    `on_head` comes once, when the final head has arrived; `on_progress` each
    time body arrives, the body ends, or the exchange fails (then
    `response.failure` says why), before or after the head. The listener
    reads what arrived with `response.take()` and, when done, calls
    `response.release()`; or it calls `response.unlisten()` and a task reads
    the rest as from any response. What either method raises ends the
    exchange and goes to `on_crash`, the listener's supervisor."""

    __slots__ = ("response",)

    response: LaneResponse

    def on_head(self) -> None:
        raise NotImplementedError

    def on_progress(self) -> None:
        raise NotImplementedError

    def on_crash(self, exc: Exception) -> None:
        raise NotImplementedError


class _AiohttpResponse(Response):
    def __init__(self, raw: aiohttp.ClientResponse, url: str, connect_timeout: float) -> None:
        self.status_code = raw.status
        self.headers: dict[str, str] = {}
        for name, value in raw.headers.items():
            key = name.lower()
            self.headers[key] = f"{self.headers[key]}, {value}" if key in self.headers else value
        self.url = url
        self._raw = raw
        self._connect_timeout = connect_timeout

    async def aiter_bytes(self, idle_timeout: float | None = None) -> AsyncIterator[bytes]:
        content = self._raw.content
        while True:
            try:
                # What has arrived already needs no timer (a cancel scope per
                # chunk is a good part of the cost of a small answer).
                chunk = content.read_nowait()
                if not chunk and not content.at_eof():
                    if idle_timeout is None:  # an event stream's wait: no scope to build
                        chunk = await content.readany()
                    else:
                        with anyio.fail_after(idle_timeout):
                            chunk = await content.readany()
            except TimeoutError as exc:
                if isinstance(exc, aiohttp.ClientError):
                    raise _failure(exc, self.url, self._connect_timeout) from None
                raise TimedOut(
                    f"{origin_of(self.url).authority} sent nothing for {idle_timeout:g}s "
                    "in the middle of its answer"
                ) from None
            except _MAPPED as exc:
                raise _failure(exc, self.url, self._connect_timeout) from None
            if not chunk:
                return
            yield chunk

    async def aclose(self) -> None:
        self._raw.close()

    def ended(self) -> bool:
        return self._raw.content.at_eof()


class HttpPool:
    """One aiohttp session, and so one pool of connections (per origin, TLS
    settings and proxy), for every server of the daemon: a session and a
    connector of their own would cost each server about 5 KB more."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._lane: LanePool | None = None

    async def __aenter__(self) -> HttpPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Made at first use: aiohttp wants the running event loop.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=0, keepalive_timeout=KEEPALIVE_SECONDS, ttl_dns_cache=10
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": USER_AGENT},
                auto_decompress=True,
            )
        return self._session

    def lane(self) -> LanePool:
        if self._lane is None:
            from .httplane import LanePool  # it builds on this module

            self._lane = LanePool()
        return self._lane

    async def aclose(self) -> None:
        lane, self._lane = self._lane, None
        session, self._session = self._session, None
        with anyio.CancelScope(shield=True):
            if lane is not None:
                await lane.aclose()
            if session is not None:
                await session.close()


class HttpClient:
    """One server's outbound HTTP: its TLS trust, its proxies, its timeouts,
    over the daemon's pool (`pool`), or a pool of its own."""

    def __init__(
        self,
        *,
        pool: HttpPool | None = None,
        own_url: str | None = None,
        verify: bool | str = True,
        other_verify: bool | str = True,
        connect_timeout: float = 30.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        # `verify` for the server's own origin, `other_verify` for every other.
        self._own = origin_of(own_url) if own_url is not None else None
        self.verify = verify
        self.other_verify = other_verify
        self.connect_timeout = connect_timeout
        self.environ = os.environ if environ is None else environ
        self._contexts: dict[bool, ssl.SSLContext] = {}
        self._owned = pool is None
        self._pool = pool if pool is not None else HttpPool()
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout)
        self._proxies: dict[Origin, tuple[str, dict[str, str]] | None] = {}

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owned:
            await self._pool.aclose()

    def _is_own(self, url: str) -> bool:
        return self._own is not None and origin_of(url) == self._own

    def _tls(self, url: str) -> ssl.SSLContext:
        own = self._is_own(url)
        if own not in self._contexts:  # a CA bundle is read once per client
            self._contexts[own] = tls_context(self.verify if own else self.other_verify)
        return self._contexts[own]

    def _proxy(self, url: str) -> tuple[str, dict[str, str]] | None:
        origin = origin_of(url)
        if origin not in self._proxies:
            self._proxies[origin] = proxy_for(url, self.environ)
        return self._proxies[origin]

    async def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes = b"",
        *,
        redirects: Redirects,
        head_timeout: float | None = None,
        first: Response | None = None,
    ) -> Response:
        """Send a request (following redirects as `redirects` allows); return once
        the final response's head has arrived, within `head_timeout` seconds.
        `first`: the request was sent already (`start_post`), this is its answer."""
        fields = dict(headers)
        for _ in range(MAX_REDIRECTS + 1):
            response = first or await self._send_once(method, url, fields, body, head_timeout)
            first = None
            location = response.headers.get("location")
            if response.status_code not in REDIRECT_STATUSES or location is None:
                return response
            await response.aclose()
            target = redirect_target(redirects, url, location, bool(body))
            if origin_of(target) != origin_of(url):
                fields = {k: v for k, v in fields.items() if k.lower() in PORTABLE_HEADERS}
            if response.status_code == 303 or (
                response.status_code in (301, 302) and method == "POST"
            ):
                method, body = "GET", b""
                fields = {k: v for k, v in fields.items() if k.lower() != "content-type"}
            url = target
        raise HttpError(f"more than {MAX_REDIRECTS} redirects from {origin_of(url).authority}")

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes = b"",
        *,
        redirects: Redirects,
        head_timeout: float | None = None,
    ) -> AsyncIterator[Response]:
        response = await self.send(
            method, url, headers, body, redirects=redirects, head_timeout=head_timeout
        )
        try:
            yield response
        finally:
            await response.aclose()

    def lane_post(self, url: str, headers: Mapping[str, str]) -> LanePost | None:
        """The head of POSTs to `url` with `headers`, checked and made once for
        every body `start_post` sends with it; None when such POSTs cannot start
        that way (a proxy, not looked up yet, anything `send` would refuse):
        then `send` them."""
        origin = origin_of(url)
        if origin not in self._proxies or self._proxies[origin] is not None:
            return None  # not looked up yet (`send` does it), or one to go through
        if not sendable(headers):
            return None
        try:
            wire = _wire_url(url)
        except HttpError:
            return None
        context = None
        if wire.scheme == "https" and (context := self._contexts.get(self._is_own(url))) is None:
            return None  # made (with its errors) by the first `send`
        lane = self._pool.lane()
        if not lane.takes(headers):
            return None
        key, head = lane.prepare(wire, context, headers)
        return LanePost(url, key, head)

    def start_post(
        self, post: LanePost, body: bytes, *, head_timeout: float | None, listener: LaneListener
    ) -> bool:
        """Start a POST (`lane_post`) whose exchange `listener` follows from the
        connection's callbacks (`LaneListener`), when an idle lane connection can
        take it at once. False, with nothing sent, when none can: then `send` it.
        A redirect is the listener's to hand to `send(first=...)`."""
        request = with_body(post.head, body)
        lane = self._pool.lane()
        return lane.start(post.url, post.key, request, head_timeout=head_timeout, listener=listener)

    async def _send_once(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        head_timeout: float | None,
    ) -> Response:
        options: dict[str, Any] = {}
        try:
            wire = _wire_url(url)
            if not sendable(headers):
                raise unsendable(url)
            context = self._tls(url) if wire.scheme == "https" else None
            proxy = self._proxy(url)
            if method == "POST" and proxy is None and (lane := self._pool.lane()).takes(headers):
                key, head = lane.prepare(wire, context, headers)
                timeouts = (self.connect_timeout, head_timeout)
                return await lane.post(url, key, with_body(head, body), timeouts=timeouts)
            with anyio.fail_after(head_timeout):
                if context is not None:
                    options["ssl"] = context
                if proxy is not None:
                    options["proxy"], options["proxy_headers"] = proxy
                raw = await self._pool.session().request(
                    method,
                    wire,
                    headers=headers,
                    data=body or None,
                    timeout=self._timeout,
                    allow_redirects=False,
                    **options,
                )
        except TimeoutError as exc:
            if isinstance(exc, aiohttp.ClientError):  # aiohttp's connect timeout
                raise _failure(exc, url, self.connect_timeout) from None
            raise no_answer(url, head_timeout) from None
        except _MAPPED as exc:
            raise _failure(exc, url, self.connect_timeout) from None
        return _AiohttpResponse(raw, url, self.connect_timeout)
