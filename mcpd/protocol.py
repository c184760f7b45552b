"""The control protocol between mcpd and its clients, shared by both sides.

A connection carries frames: a 4-byte big-endian length, then one msgpack
message of that many bytes. Every message is one of five tagged structs
(``type`` is the tag): a request, its response, an event pushed by the daemon,
a cancel of a request in flight, or (on a connection attached to a server)
one raw JSON-RPC message of the MCP session. docs/protocol.md is the full
reference, written for authors of editor plugins.

This module imports only the standard library and msgspec: the thin clients
import it, and they must start instantly.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Any, Final, Literal, TypeVar

import msgspec

PROTOCOL_VERSION: Final = 1
DEFAULT_MAX_FRAME_SIZE: Final = 16 * 1024 * 1024
_HEADER: Final = struct.Struct(">I")
EMPTY_MAP: Final = b"\x80"  # msgpack for {}
HEADER_SIZE: Final = _HEADER.size


class ErrorCode(IntEnum):
    """Error codes of responses; the JSON-RPC ones keep their JSON-RPC meaning."""

    MALFORMED_MESSAGE = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    FRAME_TOO_LARGE = 1
    PROTOCOL_MISMATCH = 2
    HELLO_REQUIRED = 3
    UNKNOWN_SERVER = 4
    CONFIG_ERROR = 5
    CANCELLED = 6
    STORE_ERROR = 7
    SERVER_UNAVAILABLE = 8
    UPSTREAM_ERROR = 9
    NOT_ATTACHED = 10
    AUTH_FAILED = 11
    BUSY = 12


# --- Envelopes -------------------------------------------------------------


class RpcError(msgspec.Struct, omit_defaults=True):
    code: int
    message: str
    data: Any = None


class Request(msgspec.Struct, tag="request", tag_field="type", omit_defaults=True):
    id: int
    method: str
    # Kept raw until the method is known, so each method decodes its own params
    # and a bad one gets an error naming that method's fields. Absent: {}.
    params: msgspec.Raw = msgspec.Raw(EMPTY_MAP)


class Response(msgspec.Struct, tag="response", tag_field="type", omit_defaults=True):
    id: int | None
    result: Any = None
    error: RpcError | None = None


class Event(msgspec.Struct, tag="event", tag_field="type", omit_defaults=True):
    name: str
    data: Any = None


class Cancel(msgspec.Struct, tag="cancel", tag_field="type"):
    id: int


class Rpc(msgspec.Struct, tag="rpc", tag_field="type"):
    """One JSON-RPC message of an attached MCP session, as UTF-8 JSON bytes."""

    data: bytes


Message = Request | Response | Event | Cancel | Rpc

# --- Methods: params and results ------------------------------------------


class HelloParams(msgspec.Struct):
    protocol: int
    client: str = ""


class HelloResult(msgspec.Struct):
    protocol: int
    daemon: str
    pid: int
    max_frame_size: int
    # The daemon's host name: a client reached through an SSH forward (or a
    # container's mount) tells its user which machine serves it.
    host: str = ""


class StatusParams(msgspec.Struct):
    server: str | None = None


class ServerStatus(msgspec.Struct):
    """One server as status and state events show it. Times are Unix seconds."""

    name: str
    url: str
    state: str
    since: float
    error: str | None = None
    next_retry_at: float | None = None
    access_expires_at: float | None = None
    last_refresh_at: float | None = None
    next_refresh_at: float | None = None
    # The MCP revision spoken with the server while connected (e.g. "2026-07-28").
    protocol: str | None = None
    # Whether tokens are stored for the server; None where OAuth does not apply
    # (oauth = false, a configured Authorization) or is not known yet (not started).
    signed_in: bool | None = None
    # Whether its authorization server offers a device sign-in (RFC 8628,
    # `mcpctl auth NAME --device`); None while not known (no sign-in yet).
    device_sign_in: bool | None = None


class StatusResult(msgspec.Struct):
    servers: list[ServerStatus]


class ReloadResult(msgspec.Struct):
    added: list[str]
    removed: list[str]
    restarted: list[str]
    unchanged: list[str]
    # Changed in the tool filter alone: applied in place, not restarted.
    updated: list[str] = []


class SubscribeParams(msgspec.Struct):
    # None: every server, including ones a reload adds later.
    servers: list[str] | None = None


class StateChanged(msgspec.Struct):
    """Data of the ``state`` event."""

    server: ServerStatus
    previous: str | None


class RotateKeyResult(msgspec.Struct):
    records: int


class EmptyParams(msgspec.Struct):
    pass


class ServerParams(msgspec.Struct):
    server: str


class AttachParams(msgspec.Struct):
    server: str
    # On a re-attach (after the daemon restarted, say): the editor's original
    # initialize request, so the daemon knows the editor without answering it again.
    replay: bytes | None = None


class AttachResult(msgspec.Struct):
    server: ServerStatus


class ToolsResult(msgspec.Struct):
    tools: list[dict[str, Any]]


# How a user signs in: in a browser (the authorization code flow, whose
# redirect reaches the daemon's loopback listener, or is pasted); on any
# device, with a code (RFC 8628); or with a code where the authorization
# server offers that, else in a browser.
SignInMethod = Literal["browser", "device", "device_if_offered"]


class AuthParams(msgspec.Struct):
    server: str
    # Abandon a sign-in under way and start afresh, with a new client
    # registration (the authorization server may have forgotten the old one).
    restart: bool = False
    method: SignInMethod = "browser"


class DeviceSignIn(msgspec.Struct, omit_defaults=True):
    """What the user of a device sign-in needs: the page to open, anywhere, and
    the code to enter there."""

    verification_uri: str
    user_code: str
    # Seconds from now until the code expires.
    expires_in: int
    # The page with the code in it, where the server offers one.
    verification_uri_complete: str | None = None


class AuthStarted(msgspec.Struct):
    """The authorization URL to open (the same for everyone who joins the flow),
    or the code of a device sign-in."""

    url: str
    # True when this request joined a sign-in already under way: its browser
    # tab is open somewhere, so a client does not open another.
    joined: bool = False
    # True for a server with client credentials: a new token was requested and
    # stored, with no browser (`url` is empty); `auth_wait` tells the outcome.
    client_credentials: bool = False
    # A device sign-in (`url` is empty): show this; `auth_wait` tells the outcome.
    device: DeviceSignIn | None = None


class AuthPasteParams(msgspec.Struct):
    server: str
    # The URL the browser was finally sent to, or just the code.
    response: str


class LogoutParams(msgspec.Struct):
    server: str
    forget_client: bool = False


class LogoutResult(msgspec.Struct):
    revoked: bool


class TokenResult(msgspec.Struct):
    access_token: str
    expires_at: float | None


class CallParams(msgspec.Struct):
    server: str
    tool: str
    arguments: dict[str, Any] = {}


T = TypeVar("T")

# --- Frames ------------------------------------------------------------------


class FrameTooLarge(ValueError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class FrameDecoder:
    """Splits a byte stream into frame bodies; sans-IO, used by both sides.

    The length header is checked against the limit as soon as it is complete,
    before any of the body is buffered.
    """

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        # Public so that a long-lived connection follows a reloaded limit.
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._expected: int | None = None

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next complete frame body, or None until more bytes are fed."""
        buffer = self._buffer
        expected = self._expected
        if expected is None:
            if len(buffer) < HEADER_SIZE:
                return None
            (expected,) = _HEADER.unpack_from(buffer)
            if expected > self.max_frame_size:
                raise FrameTooLarge(expected, self.max_frame_size)
            end = HEADER_SIZE + expected
            if len(buffer) >= end:  # the whole frame at hand, as a rule
                body = bytes(buffer[HEADER_SIZE:end])
                del buffer[:end]
                return body
            del buffer[:HEADER_SIZE]
            self._expected = expected
        if len(buffer) < expected:
            return None
        body = bytes(buffer[:expected])
        del buffer[:expected]
        self._expected = None
        return body

    @property
    def pending(self) -> int:
        """Bytes received that are not yet part of a returned frame."""
        header = HEADER_SIZE if self._expected is not None else 0
        return len(self._buffer) + header


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def encode_frame(message: Message) -> bytes:
    body = _encoder.encode(message)
    return _HEADER.pack(len(body)) + body


def decode_message(body: bytes) -> Message:
    """Raises msgspec.DecodeError (bad msgpack) or msgspec.ValidationError."""
    message: Message = _decoder.decode(body)
    return message


def decode_params(raw: msgspec.Raw, params_type: type[T]) -> T:
    return msgspec.msgpack.decode(raw, type=params_type)
