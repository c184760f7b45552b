"""Frames and messages of the control protocol, as both sides see them."""

from __future__ import annotations

import struct
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcpd.protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    EMPTY_MAP,
    HEADER_SIZE,
    Cancel,
    EmptyParams,
    Event,
    FrameDecoder,
    FrameTooLarge,
    HelloParams,
    Request,
    Response,
    RpcError,
    StatusParams,
    SubscribeParams,
    decode_message,
    decode_params,
    encode_frame,
)

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def drain(decoder: FrameDecoder) -> list[bytes]:
    frames = []
    while (body := decoder.next_frame()) is not None:
        frames.append(body)
    return frames


def feed_in_chunks(decoder: FrameDecoder, data: bytes, cuts: list[int]) -> list[bytes]:
    frames = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        decoder.feed(data[start:cut])
        frames.extend(drain(decoder))
        start = cut
    return frames


# --- Strategies ----------------------------------------------------------------

msgpack_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
request_ids = st.integers(min_value=-(2**63), max_value=2**63 - 1)
scalars = (
    st.none()
    | st.booleans()
    | msgpack_ints
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
param_maps = st.dictionaries(st.text(max_size=8), values, max_size=4)

requests = st.builds(
    lambda rid, method, params: (
        Request(rid, method)
        if params is None
        else Request(rid, method, msgspec.Raw(msgspec.msgpack.encode(params)))
    ),
    request_ids,
    st.text(max_size=20),
    st.none() | param_maps,
)
rpc_errors = st.builds(RpcError, msgpack_ints, st.text(max_size=30), values)
responses = st.builds(
    Response,
    st.none() | request_ids,
    values,
    st.none() | rpc_errors,
)
events = st.builds(Event, st.text(max_size=20), values)
cancels = st.builds(Cancel, request_ids)
messages = requests | responses | events | cancels


# --- FrameDecoder ----------------------------------------------------------------


def test_single_frame_fed_whole():
    decoder = FrameDecoder()
    decoder.feed(frame(b"hello"))
    assert decoder.next_frame() == b"hello"
    assert decoder.next_frame() is None
    assert decoder.pending == 0


def test_nothing_fed_is_no_frame():
    decoder = FrameDecoder()
    assert decoder.next_frame() is None
    assert decoder.pending == 0


def test_empty_body_is_a_frame_not_none():
    decoder = FrameDecoder()
    decoder.feed(frame(b""))
    assert decoder.next_frame() == b""
    assert decoder.next_frame() is None


def test_header_is_big_endian():
    decoder = FrameDecoder()
    decoder.feed(b"\x00\x00\x01\x00" + b"x" * 256)
    assert decoder.next_frame() == b"x" * 256


def test_multiple_frames_in_one_chunk():
    bodies = [b"one", b"", b"three", bytes(range(256)) * 3]
    decoder = FrameDecoder()
    decoder.feed(b"".join(frame(body) for body in bodies))
    assert drain(decoder) == bodies
    assert decoder.pending == 0


def test_frames_fed_byte_by_byte():
    bodies = [b"alpha", b"", b"\x00\x00\x00\x05", b"omega" * 50]
    data = b"".join(frame(body) for body in bodies)
    decoder = FrameDecoder()
    frames = []
    for i in range(len(data)):
        decoder.feed(data[i : i + 1])
        got = drain(decoder)
        frames.extend(got)
        # A frame comes out exactly when its last byte arrives, not later.
        consumed = sum(HEADER_SIZE + len(body) for body in frames)
        if got:
            assert consumed == i + 1
        else:
            assert consumed < i + 1
    assert frames == bodies
    assert decoder.pending == 0


def test_frame_split_inside_the_header():
    decoder = FrameDecoder()
    data = frame(b"payload")
    decoder.feed(data[:2])
    assert decoder.next_frame() is None
    decoder.feed(data[2:6])
    assert decoder.next_frame() is None
    decoder.feed(data[6:])
    assert decoder.next_frame() == b"payload"


def test_returned_frame_is_independent_of_the_buffer():
    decoder = FrameDecoder()
    decoder.feed(frame(b"first") + frame(b"second"))
    first = decoder.next_frame()
    assert isinstance(first, bytes)
    assert decoder.next_frame() == b"second"
    assert first == b"first"


@FAST
@given(
    bodies=st.lists(st.binary(max_size=300), max_size=8),
    cut_fractions=st.lists(st.floats(min_value=0, max_value=1), max_size=20),
)
def test_any_chunking_yields_the_same_frames(bodies, cut_fractions):
    data = b"".join(frame(body) for body in bodies)
    cuts = [int(f * len(data)) for f in cut_fractions]
    decoder = FrameDecoder(max_frame_size=300)
    assert feed_in_chunks(decoder, data, cuts) == bodies
    assert decoder.pending == 0


@FAST
@given(bodies=st.lists(st.binary(min_size=1, max_size=50), min_size=1, max_size=5), data=st.data())
def test_pending_counts_bytes_after_the_last_returned_frame(bodies, data):
    stream = b"".join(frame(body) for body in bodies)
    decoder = FrameDecoder()
    # Whole frames plus a prefix of one more frame's header (which is never
    # consumed, as it is incomplete).
    extra = data.draw(st.integers(min_value=0, max_value=HEADER_SIZE - 1))
    decoder.feed(stream + frame(b"next")[:extra])
    assert drain(decoder) == bodies
    assert decoder.pending == extra


def test_pending_tracks_a_partial_header():
    decoder = FrameDecoder()
    decoder.feed(b"\x00\x00")
    assert decoder.next_frame() is None
    assert decoder.pending == 2
    decoder.feed(b"\x00")
    assert decoder.pending == 3


def test_pending_is_nonzero_while_a_frame_body_is_incomplete():
    decoder = FrameDecoder()
    decoder.feed(frame(b"0123456789")[:9])
    assert decoder.next_frame() is None
    assert decoder.pending > 0
    decoder.feed(b"56789")
    assert decoder.next_frame() == b"0123456789"
    assert decoder.pending == 0


def test_pending_counts_an_in_progress_header_as_its_docstring_says():
    decoder = FrameDecoder()
    decoder.feed(frame(b"0123456789")[:HEADER_SIZE])
    assert decoder.next_frame() is None
    # "Bytes received that are not yet part of a returned frame."
    assert decoder.pending == HEADER_SIZE


def test_frame_at_the_limit_is_accepted():
    decoder = FrameDecoder(max_frame_size=1024)
    decoder.feed(frame(b"x" * 1024))
    assert decoder.next_frame() == b"x" * 1024


def test_frame_too_large_raised_from_header_alone():
    decoder = FrameDecoder(max_frame_size=1024)
    decoder.feed(struct.pack(">I", 1025))
    with pytest.raises(FrameTooLarge) as info:
        decoder.next_frame()
    assert info.value.size == 1025
    assert info.value.limit == 1024
    assert "1025" in str(info.value)
    assert "1024" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_frame_too_large_raised_when_fourth_header_byte_arrives():
    decoder = FrameDecoder(max_frame_size=1024)
    header = struct.pack(">I", 2**32 - 1)
    for byte in header[:3]:
        decoder.feed(bytes([byte]))
        assert decoder.next_frame() is None
    decoder.feed(header[3:])
    with pytest.raises(FrameTooLarge) as info:
        decoder.next_frame()
    assert info.value.size == 2**32 - 1


def test_frame_too_large_after_valid_frames_in_same_chunk():
    decoder = FrameDecoder(max_frame_size=16)
    decoder.feed(frame(b"ok") + frame(b"fine") + struct.pack(">I", 17) + b"x" * 3)
    assert decoder.next_frame() == b"ok"
    assert decoder.next_frame() == b"fine"
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()


def test_refused_frame_stays_refused():
    # The decoder must not resynchronise into the body of a frame it refused.
    decoder = FrameDecoder(max_frame_size=16)
    decoder.feed(struct.pack(">I", 100))
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()
    decoder.feed(frame(b"looks like a frame"))
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()


def test_limit_can_be_changed_between_frames():
    # A long-lived connection follows a reloaded limit from the next header on.
    decoder = FrameDecoder(max_frame_size=1024)
    decoder.feed(frame(b"x" * 1000))
    assert decoder.next_frame() == b"x" * 1000
    decoder.max_frame_size = 2048
    decoder.feed(frame(b"y" * 2000))
    assert decoder.next_frame() == b"y" * 2000
    decoder.max_frame_size = 1024
    decoder.feed(frame(b"z" * 1025))
    with pytest.raises(FrameTooLarge) as info:
        decoder.next_frame()
    assert info.value.limit == 1024


def test_default_limit():
    decoder = FrameDecoder()
    decoder.feed(struct.pack(">I", DEFAULT_MAX_FRAME_SIZE))
    assert decoder.next_frame() is None
    decoder = FrameDecoder()
    decoder.feed(struct.pack(">I", DEFAULT_MAX_FRAME_SIZE + 1))
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()


@FAST
@given(size=st.integers(min_value=0, max_value=2**32 - 1), limit=st.integers(1, 2**31))
def test_limit_is_checked_against_the_announced_size(size, limit):
    decoder = FrameDecoder(max_frame_size=limit)
    decoder.feed(struct.pack(">I", size))
    if size > limit:
        with pytest.raises(FrameTooLarge):
            decoder.next_frame()
    elif size == 0:
        assert decoder.next_frame() == b""
    else:
        assert decoder.next_frame() is None


# --- Messages --------------------------------------------------------------------


def test_encode_frame_prefixes_body_length():
    data = encode_frame(Cancel(7))
    (size,) = struct.unpack(">I", data[:4])
    assert size == len(data) - 4
    assert msgspec.msgpack.decode(data[4:]) == {"type": "cancel", "id": 7}


def test_request_wire_form_omits_default_params():
    data = encode_frame(Request(1, "status"))
    assert msgspec.msgpack.decode(data[4:]) == {"type": "request", "id": 1, "method": "status"}


def test_request_wire_form_carries_params_verbatim():
    params = msgspec.msgpack.encode({"server": "linear"})
    data = encode_frame(Request(2, "status", msgspec.Raw(params)))
    assert msgspec.msgpack.decode(data[4:]) == {
        "type": "request",
        "id": 2,
        "method": "status",
        "params": {"server": "linear"},
    }


def test_response_wire_form_omits_defaults():
    assert msgspec.msgpack.decode(encode_frame(Response(3, result={"a": 1}))[4:]) == {
        "type": "response",
        "id": 3,
        "result": {"a": 1},
    }
    error = Response(None, error=RpcError(-32700, "malformed"))
    assert msgspec.msgpack.decode(encode_frame(error)[4:]) == {
        "type": "response",
        "id": None,
        "error": {"code": -32700, "message": "malformed"},
    }


def test_event_wire_form():
    data = encode_frame(Event("state", {"server": "x"}))
    assert msgspec.msgpack.decode(data[4:]) == {
        "type": "event",
        "name": "state",
        "data": {"server": "x"},
    }


@pytest.mark.parametrize(
    "message",
    [
        Request(1, "hello", msgspec.Raw(msgspec.msgpack.encode({"protocol": 1}))),
        Request(2, "status"),
        Response(1, result={"protocol": 1, "daemon": "0.1", "pid": 42}),
        Response(None, error=RpcError(-32600, "bad", data={"field": "id"})),
        Response(9),
        Event("state", {"server": {"name": "a"}, "previous": None}),
        Event("shutdown"),
        Cancel(12),
    ],
    ids=lambda m: type(m).__name__,
)
def test_round_trip_examples(message):
    decoded = decode_message(encode_frame(message)[HEADER_SIZE:])
    assert type(decoded) is type(message)
    assert decoded == message


@FAST
@given(message=messages)
def test_round_trip_any_message(message):
    decoded = decode_message(encode_frame(message)[HEADER_SIZE:])
    assert type(decoded) is type(message)
    assert decoded == message


@FAST
@given(batch=st.lists(messages, max_size=6), data=st.data())
def test_messages_through_the_frame_decoder(batch, data):
    stream = b"".join(encode_frame(message) for message in batch)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    decoder = FrameDecoder()
    bodies = feed_in_chunks(decoder, stream, cuts)
    assert [decode_message(body) for body in bodies] == batch


def test_decoded_request_params_stay_raw():
    params = msgspec.msgpack.encode({"protocol": 1, "client": "nvim"})
    decoded = decode_message(encode_frame(Request(5, "hello", msgspec.Raw(params)))[4:])
    assert isinstance(decoded, Request)
    assert isinstance(decoded.params, msgspec.Raw)
    assert bytes(decoded.params) == params


def test_request_without_params_decodes_to_the_empty_map():
    body = msgspec.msgpack.encode({"type": "request", "id": 1, "method": "status"})
    decoded = decode_message(body)
    assert isinstance(decoded, Request)
    assert bytes(decoded.params) == EMPTY_MAP
    assert msgspec.msgpack.decode(decoded.params) == {}


# --- decode_params ---------------------------------------------------------------


def test_decode_params_default_empty_map():
    request = Request(1, "status")
    assert decode_params(request.params, StatusParams) == StatusParams(server=None)
    assert decode_params(request.params, SubscribeParams) == SubscribeParams(servers=None)
    assert decode_params(request.params, EmptyParams) == EmptyParams()


def test_decode_params_after_a_round_trip():
    raw = msgspec.Raw(msgspec.msgpack.encode({"protocol": 1, "client": "vscode"}))
    decoded = decode_message(encode_frame(Request(1, "hello", raw))[4:])
    assert isinstance(decoded, Request)
    assert decode_params(decoded.params, HelloParams) == HelloParams(protocol=1, client="vscode")


def test_decode_params_fills_defaults():
    raw = msgspec.Raw(msgspec.msgpack.encode({"protocol": 3}))
    assert decode_params(raw, HelloParams) == HelloParams(protocol=3, client="")


def test_decode_params_missing_required_field():
    with pytest.raises(msgspec.ValidationError, match="protocol"):
        decode_params(msgspec.Raw(EMPTY_MAP), HelloParams)


def test_decode_params_wrong_type_names_the_field():
    raw = msgspec.Raw(msgspec.msgpack.encode({"servers": "linear"}))
    with pytest.raises(msgspec.ValidationError, match=r"servers"):
        decode_params(raw, SubscribeParams)


def test_decode_params_not_a_map():
    raw = msgspec.Raw(msgspec.msgpack.encode([1, 2]))
    with pytest.raises(msgspec.ValidationError):
        decode_params(raw, StatusParams)


def test_decode_params_malformed():
    with pytest.raises(msgspec.DecodeError) as info:
        decode_params(msgspec.Raw(b"\xc1"), StatusParams)
    assert not isinstance(info.value, msgspec.ValidationError)


@FAST
@given(params=param_maps)
def test_decode_params_generic_map_round_trip(params):
    raw = msgspec.Raw(msgspec.msgpack.encode(params))
    decoded = decode_message(encode_frame(Request(1, "m", raw))[4:])
    assert isinstance(decoded, Request)
    assert decode_params(decoded.params, dict[str, Any]) == params


# --- Malformed and invalid messages ------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xc1",  # never-used msgpack opcode
        encode_frame(Request(1, "status"))[4:-1],  # truncated
        encode_frame(Cancel(1))[4:] + b"\x00",  # trailing bytes
        b"\x82\xa4type",  # map announced with two entries, one key present
        b"\xdb\x00\x00\x00\x10abc",  # str32 longer than the data
    ],
    ids=["empty", "bad-opcode", "truncated", "trailing", "short-map", "short-str"],
)
def test_malformed_msgpack_raises_decode_error(body):
    with pytest.raises(msgspec.DecodeError) as info:
        decode_message(body)
    assert not isinstance(info.value, msgspec.ValidationError)


def _msgpack(obj: Any) -> bytes:
    return msgspec.msgpack.encode(obj)


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        (7, "object"),
        ([1, 2], "object"),
        ({"id": 1, "method": "x"}, "type"),
        ({"type": "notification", "id": 1}, "notification"),
        ({"type": "request", "method": "x"}, "id"),
        ({"type": "request", "id": 1}, "method"),
        ({"type": "request", "id": "1", "method": "x"}, "id"),
        ({"type": "request", "id": 1.5, "method": "x"}, "id"),
        ({"type": "request", "id": 1, "method": 5}, "method"),
        ({"type": "response", "result": 1}, "id"),
        ({"type": "response", "id": 1, "error": {"message": "x"}}, "code"),
        ({"type": "response", "id": 1, "error": "boom"}, "error"),
        ({"type": "event", "data": 1}, "name"),
        ({"type": "cancel"}, "id"),
        ({"type": "cancel", "id": None}, "id"),
        ({"type": 1, "id": 1}, "type"),
    ],
)
def test_schema_invalid_message_raises_validation_error(obj, fragment):
    with pytest.raises(msgspec.ValidationError) as info:
        decode_message(_msgpack(obj))
    assert fragment in str(info.value)


@FAST
@given(body=st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_decode_error(body):
    try:
        message = decode_message(body)
    except msgspec.DecodeError:
        return
    assert isinstance(message, Request | Response | Event | Cancel)


@FAST
@given(obj=values)
def test_arbitrary_msgpack_values_decode_or_raise_validation_error(obj):
    try:
        message = decode_message(_msgpack(obj))
    except msgspec.ValidationError:
        return
    assert isinstance(message, Request | Response | Event | Cancel)
