"""The two HTTP transports of MCP, client side, over mcpd's HTTP client.

`StreamableHttp` is the current transport (2025-03-26 and later): every
message is a POST to the server's one endpoint, answered with JSON, with an
SSE stream, or with 202 for notifications and responses; a GET opens a
stream for messages the server sends on its own. `LegacySse` is the
2024-11-05 HTTP+SSE transport: a GET stream whose first `endpoint` event names
the URL to POST to, with every answer arriving on that stream.

Both hand every message from the server to `deliver(message, related)`, where
`related` is the id of the request whose POST stream carried it (None for the
standalone streams), and leave routing to the caller.

An editor's request to a Streamable HTTP server is forwarded without a task
when it can be (`StreamableHttp.forward`): written at once on an idle
connection, its answer followed from that connection's callbacks
(`_Forwarded`). That path handles the common answer alone, a 200 whose event
stream carries the response; at anything else (an error status, a redirect,
a JSON body, a stream that ends or breaks first) it hands the exchange to a
task that continues as `post` does from the same point (`Handover`), so
every rule lives in `post` once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urljoin

import anyio

from ..http import (
    BodyTooLarge,
    HttpClient,
    HttpError,
    LaneListener,
    LanePost,
    Redirects,
    Response,
)
from ..urls import origin_of, visible_ascii
from . import jsonrpc
from .modern import MODERN_PROTOCOL, request_headers
from .sse import EventTooLarge, SseDecoder

log = logging.getLogger(__name__)

ACCEPT = "application/json, text/event-stream"
LATEST_PROTOCOL = "2025-11-25"
STREAMABLE_PROTOCOLS = ("2025-11-25", "2025-06-18", "2025-03-26")
LEGACY_PROTOCOL = "2024-11-05"
# A server may close an SSE stream and let the client resume it (SEP-1699):
# how often to try before the request is given up.
MAX_RESUME_ATTEMPTS = 5
# How long to wait for a POST stream to end once its response came.
DRAIN_SECONDS = 1.0
# Failed attempts in a row to reopen the standalone stream before the session
# is considered lost.
MAX_LISTEN_FAILURES = 3
DEFAULT_RESUME_DELAY = 1.0
# How much of an error response is read for its message.
ERROR_BODY_LIMIT = 4096
_MARKUP = re.compile(
    r"<!--.*?-->|<(script|style|title|head)\b.*?</\1>|<[^>]*>", re.DOTALL | re.IGNORECASE
)

Deliver = Callable[[dict[str, Any], int | None], None]


@dataclass(frozen=True)
class TransportSettings:
    client: HttpClient
    url: str
    headers: Mapping[str, str]
    max_message_size: int
    # Seconds to wait for response headers; streams may then run as long as they like.
    request_timeout: float
    # The current OAuth access token, if any: asked for on every request, so a
    # new token is used at once, without reconnecting.
    bearer: Callable[[], str | None] = lambda: None


class UpstreamError(Exception):
    """Talking to the server failed; the message is fit for a user."""


class ConnectionLost(UpstreamError):
    pass


class SessionExpired(UpstreamError):
    pass


class AuthorizationRequired(UpstreamError):
    def __init__(self, message: str, challenge: str) -> None:
        super().__init__(message)
        self.challenge = challenge


class HttpStatusError(UpstreamError):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}{': ' + detail if detail else ''}")
        self.status = status


class MessageTooLarge(UpstreamError):
    pass


def describe(exc: BaseException) -> str:
    """A one-line account of an HTTP-level failure, without URLs' secrets."""
    if isinstance(exc, UpstreamError | HttpError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"


async def _read_limited(response: Response, limit: int, idle: float | None = None) -> bytes:
    try:
        return await response.read(limit, idle)
    except BodyTooLarge:
        raise MessageTooLarge(f"the server sent a message over {limit} bytes") from None


async def _error_detail(response: Response) -> str:
    try:
        body = await _read_limited(response, ERROR_BODY_LIMIT)
    except (MessageTooLarge, HttpError):
        return ""
    return _detail_of(body)


def _detail_of(body: bytes) -> str:
    """A short account of an error body: its JSON-RPC message, else the start
    of its text (never an HTML page)."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        message = jsonrpc.decode(body)
        error = message.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    except jsonrpc.InvalidMessage:
        pass
    # An HTML error page says what it says between its tags.
    return " ".join(_MARKUP.sub(" ", text).split())[:200]


def _resumable(decoder: SseDecoder) -> str | None:
    """The last event id, if a stream can be resumed with it: it is echoed in a
    header, so only one of visible ASCII is (any other cannot be resumed)."""
    event_id = decoder.last_event_id
    return event_id if event_id is not None and visible_ascii(event_id) else None


def _session_expired(status: int) -> SessionExpired:
    return SessionExpired(f"the server no longer knows the session (HTTP {status})")


def _session_gone(status: int, detail: str) -> bool:
    """Whether a refusal of a request that carried a session id means the session expired.

    The specification says 404. Some servers (older SDKs among them) answer 400
    with a message about the session instead; recovering from that too is what
    a user expects.
    """
    return status == 404 or (status == 400 and "session" in detail.lower())


def _check_auth(response: Response) -> None:
    challenge = response.headers.get("www-authenticate", "")
    if response.status_code == 401:
        raise AuthorizationRequired("the server requires authorization (HTTP 401)", challenge)
    if response.status_code == 403 and "insufficient_scope" in challenge:
        raise AuthorizationRequired(
            "the server requires more permissions (HTTP 403, insufficient_scope)", challenge
        )


class _HttpTransport:
    """What both transports share: where and how to reach the server."""

    protocol_version: str | None

    def __init__(self, settings: TransportSettings, deliver: Deliver) -> None:
        self.client = settings.client
        self.url = settings.url
        self.headers = dict(settings.headers)
        self.deliver = deliver
        self.max_message_size = settings.max_message_size
        self.request_timeout = settings.request_timeout
        self.bearer = settings.bearer

    def _base_headers(self) -> dict[str, str]:
        token = self.bearer()
        return {**self.headers, "Authorization": f"Bearer {token}"} if token else dict(self.headers)

    async def _open(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes = b"",
        first: Response | None = None,
    ) -> Response:
        """Send and wait for the response head, no longer than the request timeout.
        Redirects are followed within the server's origin only (and http -> https).
        `first`: the answer of the request sent already."""
        return await self.client.send(
            method,
            url,
            headers,
            body,
            redirects=Redirects.SAME_ORIGIN,
            head_timeout=self.request_timeout,
            first=first,
        )

    def _deliver_raw(self, data: str | bytes, related: int | None) -> dict[str, Any] | None:
        if not data or data.isspace():
            return None  # a priming event: only an id and a retry delay
        try:
            message = jsonrpc.decode(data)
        except jsonrpc.InvalidMessage as exc:
            raise UpstreamError(f"the server sent an invalid message: {exc}") from None
        self.deliver(message, related)
        return message

    def _deliver_events(self, decoder: SseDecoder, chunk: bytes, related: int | None) -> bool:
        """Deliver the messages of a chunk of an event stream; whether the
        response to `related` was among them."""
        answered = False
        for event in decoder.feed(chunk):
            if event.event != "message":
                continue
            message = self._deliver_raw(event.data, related)
            answered = answered or (
                message is not None
                and related is not None
                and jsonrpc.is_response(message)
                and message.get("id") == related
            )
        return answered

    def _deliver_tail(self, decoder: SseDecoder, chunk: bytes, related: int | None) -> bool:
        """After the response: deliver what else the stream carries, while it is
        well-formed; False once it is not (the stream is then given up)."""
        try:
            self._deliver_events(decoder, chunk, related)
        except (EventTooLarge, UpstreamError) as exc:
            log.info("gave up the rest of a stream", extra={"error": str(exc)})
            return False
        return True

    async def _read_stream(
        self, response: Response, decoder: SseDecoder, related: int | None
    ) -> bool:
        """Deliver a stream's messages; True once the response to `related` came."""
        decoder.reset()  # a new stream: nothing of a broken one carries over
        chunks = response.aiter_bytes()
        try:
            async for chunk in chunks:
                if self._deliver_events(decoder, chunk, related):
                    break
            else:
                return False
        except EventTooLarge as exc:
            raise MessageTooLarge(str(exc)) from None
        except HttpError as exc:
            if _resumable(decoder) is None:
                raise ConnectionLost(f"the stream broke: {describe(exc)}") from None
            log.info("SSE stream broke; resuming", extra={"error": describe(exc)})
            return False
        # The server ends the stream after the response: read to that end
        # (briefly) so that the connection goes back to the pool. Most often the
        # end came with the response: then no wait, and no timer. The response
        # is in: a tail that breaks off costs nothing more than its connection.
        ended = response.ended()
        with (
            contextlib.nullcontext() if ended else anyio.move_on_after(DRAIN_SECONDS),
            contextlib.suppress(HttpError),
        ):
            async for chunk in chunks:
                if not self._deliver_tail(decoder, chunk, related):
                    break
        return True


@dataclass(frozen=True, slots=True)
class Handover:
    """A POST under way, handed from its connection's callbacks to a task: its
    response (head arrived) and, once its event stream was being read, the
    decoder that read it."""

    response: Response
    decoder: SseDecoder | None = None


class Forwarding(Protocol):
    """Where a forwarded request's exchange goes when its callbacks are done with it."""

    def hand_over(self, message: dict[str, Any], handover: Handover) -> None:
        """Continue in a task: `StreamableHttp.post(message, handover)`."""

    def failed(self, message: dict[str, Any], exc: UpstreamError | HttpError) -> None:
        """What `post` would have raised."""

    def crashed(self, exc: Exception) -> None:
        """An unexpected exception: the session's supervisor decides."""


class StreamableHttp(_HttpTransport):
    def __init__(self, settings: TransportSettings, deliver: Deliver) -> None:
        super().__init__(settings, deliver)
        self.session_id: str | None = None
        self.protocol_version = None
        self._forwarded: set[_Forwarded] | None = None  # made at the first (500 servers)
        # The head of forwarded POSTs, made for the token, session and revision
        # it carries (checking and writing a head costs more than the rest of a
        # request's way to the wire).
        self._lane_post: tuple[tuple[str | None, ...], LanePost] | None = None

    def _headers(self, **extra: str) -> dict[str, str]:
        headers = {**self._base_headers(), "Accept": ACCEPT, **extra}
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        if self.protocol_version is not None:
            headers["MCP-Protocol-Version"] = self.protocol_version
        return headers

    def forward(self, message: dict[str, Any], forwarding: Forwarding) -> bool:
        """Start posting a request without a task, if an idle connection can take
        it at once (see the module's docstring); False: `post` it."""
        carried = (self.bearer(), self.session_id, self.protocol_version)
        if self._lane_post is None or self._lane_post[0] != carried:
            headers = self._headers(**{"Content-Type": "application/json"})
            if (post := self.client.lane_post(self.url, headers)) is None:
                return False
            self._lane_post = (carried, post)
        listener = _Forwarded(self, message, forwarding)
        started = self.client.start_post(
            self._lane_post[1],
            jsonrpc.encode(message),
            head_timeout=self.request_timeout,
            listener=listener,
        )
        if started:
            if self._forwarded is None:
                self._forwarded = set()
            self._forwarded.add(listener)
        return started

    def abandon(self) -> None:
        """The session is over: requests forwarded without a task end with it."""
        forwarded, self._forwarded = self._forwarded or set(), None
        for listener in forwarded:
            listener.abandon()

    def _forget(self, listener: _Forwarded) -> None:
        if self._forwarded is not None:
            self._forwarded.discard(listener)

    def _keep_session_id(self, response: Response) -> None:
        session_id = response.headers.get("mcp-session-id")
        if session_id and session_id != self.session_id:  # the one held was checked
            if not visible_ascii(session_id):
                raise UpstreamError(
                    "the server sent a session id with characters the MCP specification "
                    "does not allow (only visible ASCII may be echoed back)"
                )
            self.session_id = session_id

    async def post(self, message: dict[str, Any], handover: Handover | None = None) -> None:
        """Send one message (or go on with one sent already); whatever comes back
        is delivered."""
        related = message["id"] if jsonrpc.is_request(message) else None
        had_session = self.session_id is not None
        response = await self._open(
            "POST",
            self.url,
            self._headers(**{"Content-Type": "application/json"}),
            jsonrpc.encode(message),
            first=handover.response if handover is not None else None,
        )
        try:
            _check_auth(response)
            if response.status_code >= 400:
                detail = await _error_detail(response)
                if had_session and _session_gone(response.status_code, detail):
                    raise _session_expired(response.status_code)
                raise HttpStatusError(response.status_code, detail)
            if response.status_code >= 300:
                raise HttpStatusError(response.status_code, "an unexpected redirect")
            self._keep_session_id(response)
            if response.status_code == 202 or related is None:
                return
            content_type = response.headers.get("content-type", "")
            if content_type.startswith("text/event-stream"):
                decoder = handover.decoder if handover is not None else None
                decoder = decoder or SseDecoder(self.max_message_size)
                if await self._read_stream(response, decoder, related):
                    return
                await self._resume(decoder, related)
                return
            body = await _read_limited(response, self.max_message_size, self.request_timeout)
            self._deliver_raw(body, related)
        finally:
            await response.aclose()

    async def _resume(self, decoder: SseDecoder, related: int) -> None:
        """The POST stream ended before its response: resume it with Last-Event-ID."""
        for attempt in range(MAX_RESUME_ATTEMPTS):
            last_event_id = _resumable(decoder)
            if last_event_id is None:
                break
            delay = (
                decoder.retry_ms / 1000 if decoder.retry_ms is not None else DEFAULT_RESUME_DELAY
            )
            await anyio.sleep(delay * (1 if attempt == 0 else 2**attempt))
            try:
                response = await self._open(
                    "GET", self.url, self._headers(**{"Last-Event-ID": last_event_id})
                )
            except HttpError as exc:
                log.info("resuming an SSE stream failed", extra={"error": describe(exc)})
                continue
            try:
                _check_auth(response)
                if response.status_code >= 400:
                    raise HttpStatusError(response.status_code, await _error_detail(response))
                if await self._read_stream(response, decoder, related):
                    return
            finally:
                await response.aclose()
        raise ConnectionLost(
            "the server closed the stream before answering and it could not be resumed"
        )

    async def listen(self) -> None:
        """The standalone GET stream, for as long as the server keeps offering it."""
        decoder = SseDecoder(self.max_message_size)
        failures = 0
        while True:
            headers = self._headers()
            if (last_event_id := _resumable(decoder)) is not None:
                headers["Last-Event-ID"] = last_event_id
            try:
                response = await self._open("GET", self.url, headers)
            except HttpError as exc:
                failures += 1
                if failures >= MAX_LISTEN_FAILURES:
                    raise ConnectionLost(f"the event stream is gone: {describe(exc)}") from None
                await anyio.sleep(2 ** (failures - 1) * random.uniform(0.5, 1.0))  # noqa: S311
                continue
            try:
                _check_auth(response)
                if response.status_code >= 400:
                    detail = await _error_detail(response)
                    if self.session_id is not None and _session_gone(response.status_code, detail):
                        raise _session_expired(response.status_code)
                    # 405 is what the specification asks for, but any refusal
                    # means the same: no standalone stream; requests still work.
                    log.debug(
                        "the server offers no standalone event stream",
                        extra={"status": response.status_code},
                    )
                    return
                failures = 0
                with contextlib.suppress(ConnectionLost):
                    # A broken stream is reopened below; if the server restarted
                    # meanwhile, it answers 404 and the session is renewed.
                    await self._read_stream(response, decoder, None)
            finally:
                await response.aclose()
            delay = (
                decoder.retry_ms / 1000 if decoder.retry_ms is not None else DEFAULT_RESUME_DELAY
            )
            await anyio.sleep(delay)

    async def terminate(self) -> None:
        """End the session on the server (DELETE); a server may refuse, that is fine."""
        if self.session_id is None:
            return
        try:
            with anyio.fail_after(min(self.request_timeout, 5.0)):
                response = await self._open("DELETE", self.url, self._headers())
                try:
                    await _read_limited(response, 4096)
                finally:
                    await response.aclose()
        except (HttpError, UpstreamError, TimeoutError) as exc:
            log.info("could not end the session", extra={"error": describe(exc)})


class StatelessHttp(_HttpTransport):
    """Streamable HTTP as the 2026-07-28 revision has it: no session, no GET
    stream, no resumption; each POST carries the request metadata headers, and
    an error status with a JSON-RPC answer to the request is that answer."""

    def __init__(self, settings: TransportSettings, deliver: Deliver) -> None:
        super().__init__(settings, deliver)
        self.protocol_version = MODERN_PROTOCOL
        # Per tool: the Mcp-Param-* headers its schema designates (kept by the
        # session from each tools/list the server answers).
        self.tool_headers: dict[str, dict[str, tuple[str, ...]]] = {}

    async def post(self, message: dict[str, Any]) -> None:
        """Send one message; whatever comes back is delivered. For a request,
        returns once its response came (or the server ended the stream)."""
        related = message["id"] if jsonrpc.is_request(message) else None
        headers = {
            **self._base_headers(),
            "Accept": ACCEPT,
            "Content-Type": "application/json",
            **request_headers(message, self.tool_headers),
        }
        response = await self._open("POST", self.url, headers, jsonrpc.encode(message))
        try:
            _check_auth(response)
            if response.status_code >= 400:
                try:
                    body = await _read_limited(response, ERROR_BODY_LIMIT, self.request_timeout)
                except MessageTooLarge:
                    body = b""
                if related is not None and (answer := _answer_in(body, related)) is not None:
                    self.deliver(answer, related)
                    return
                raise HttpStatusError(response.status_code, _detail_of(body))
            if response.status_code >= 300:
                raise HttpStatusError(response.status_code, "an unexpected redirect")
            if response.status_code == 202 or related is None:
                return
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                decoder = SseDecoder(self.max_message_size)
                if not await self._read_stream(response, decoder, related):
                    raise ConnectionLost("the server closed the stream before answering")
                return
            body = await _read_limited(response, self.max_message_size, self.request_timeout)
            self._deliver_raw(body, related)
        finally:
            await response.aclose()

    async def terminate(self) -> None:
        return None  # no session to end


class _Forwarded(LaneListener):
    """One forwarded request, followed from its connection's callbacks: the
    response events of a 200 event stream are delivered here; anything else
    goes to a task (`Forwarding.hand_over`)."""

    __slots__ = ("answered", "decoder", "drain", "forwarding", "message", "transport")

    def __init__(
        self, transport: StreamableHttp, message: dict[str, Any], forwarding: Forwarding
    ) -> None:
        self.transport = transport
        self.message = message
        self.forwarding = forwarding
        self.decoder: SseDecoder | None = None  # once the head says: an event stream
        self.answered = False
        self.drain: asyncio.TimerHandle | None = None

    def on_head(self) -> None:
        response = self.response
        if response.status_code != 200 or not response.headers.get("content-type", "").startswith(
            "text/event-stream"
        ):
            self._hand_over()
            return
        try:
            self.transport._keep_session_id(response)
        except UpstreamError as exc:
            self._fail(exc)
            return
        self.decoder = SseDecoder(self.transport.max_message_size)

    def on_progress(self) -> None:
        response = self.response
        decoder = self.decoder
        if decoder is None:  # no head: what `send` would have raised
            assert response.failure is not None
            self._fail(response.failure)
            return
        related = self.message["id"]
        while chunk := response.take():
            if self.answered:
                if not self.transport._deliver_tail(decoder, chunk, related):
                    self._done()
                    return
                continue
            try:
                self.answered = self.transport._deliver_events(decoder, chunk, related)
            except EventTooLarge as exc:
                self._fail(MessageTooLarge(str(exc)))
                return
            except UpstreamError as exc:
                self._fail(exc)
                return
        if not self.answered:
            if response.failure is not None or response.ended():
                self._hand_over()  # `post` resumes the stream, or says it broke
        elif response.ended() or response.failure is not None:
            self._done()
        elif self.drain is None:  # read the end of the stream briefly, as `post` does
            self.drain = asyncio.get_running_loop().call_later(DRAIN_SECONDS, self._done)

    def on_crash(self, exc: Exception) -> None:
        self.transport._forget(self)
        self.forwarding.crashed(exc)

    def abandon(self) -> None:
        self.response.unlisten()
        self._done()

    def _done(self) -> None:
        if self.drain is not None:
            self.drain.cancel()
        self.transport._forget(self)
        self.response.release()

    def _fail(self, exc: UpstreamError | HttpError) -> None:
        self._done()
        self.forwarding.failed(self.message, exc)

    def _hand_over(self) -> None:
        self.transport._forget(self)
        self.response.unlisten()
        self.forwarding.hand_over(self.message, Handover(self.response, self.decoder))


def _answer_in(body: bytes, request_id: int) -> dict[str, Any] | None:
    """The JSON-RPC response to `request_id` in an error status's body, if that is what it is."""
    try:
        message = jsonrpc.decode(body)
    except jsonrpc.InvalidMessage:
        return None
    if jsonrpc.is_response(message) and message.get("id") == request_id:
        return message
    return None


class LegacySse(_HttpTransport):
    """HTTP+SSE (2024-11-05): messages go by POST to the `endpoint` the stream names."""

    def __init__(self, settings: TransportSettings, deliver: Deliver) -> None:
        super().__init__(settings, deliver)
        self.endpoint: str | None = None
        self.protocol_version = LEGACY_PROTOCOL
        self.ready = anyio.Event()  # set once the endpoint is known

    async def run(self) -> None:
        """Hold the stream open until it ends; raises ConnectionLost then."""
        response = await self._open(
            "GET", self.url, {**self._base_headers(), "Accept": "text/event-stream"}
        )
        try:
            _check_auth(response)
            if response.status_code >= 400:
                raise HttpStatusError(response.status_code, await _error_detail(response))
            decoder = SseDecoder(self.max_message_size)
            async for chunk in response.aiter_bytes():
                for event in decoder.feed(chunk):
                    if event.event == "endpoint" and not self.ready.is_set():
                        self.endpoint = self._endpoint(event.data.strip())
                        self.ready.set()
                    elif event.event == "message":
                        self._deliver_raw(event.data, None)
        except EventTooLarge as exc:
            raise MessageTooLarge(str(exc)) from None
        except HttpError as exc:
            raise ConnectionLost(f"the event stream broke: {describe(exc)}") from None
        finally:
            await response.aclose()
        raise ConnectionLost("the server closed the event stream")

    def _endpoint(self, announced: str) -> str:
        """Where the server says to POST: on its own origin only, since the token and
        the configured headers go there."""
        endpoint = urljoin(self.url, announced)
        if origin_of(endpoint) != origin_of(self.url):
            raise UpstreamError(
                f"the server named an endpoint on another origin "
                f"({origin_of(endpoint).authority}) for its messages; refusing to send "
                "credentials there"
            )
        return endpoint

    async def post(self, message: dict[str, Any]) -> None:
        assert self.endpoint is not None
        response = await self._open(
            "POST",
            self.endpoint,
            {**self._base_headers(), "Content-Type": "application/json"},
            jsonrpc.encode(message),
        )
        try:
            _check_auth(response)
            if response.status_code >= 400:
                raise HttpStatusError(response.status_code, await _error_detail(response))
            await _read_limited(response, self.max_message_size, self.request_timeout)
        finally:
            await response.aclose()

    async def terminate(self) -> None:
        return None  # the session ends with its stream


Transport = StreamableHttp | StatelessHttp | LegacySse
