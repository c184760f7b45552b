"""SseDecoder: the HTML standard's event-stream parsing, fed in arbitrary chunks."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpd.upstream.sse import EventTooLarge, SseDecoder, SseEvent

BIG = 1 << 20


def decode(stream: bytes, max_event_size: int = BIG) -> list[SseEvent]:
    return SseDecoder(max_event_size).feed(stream)


def decode_chunks(chunks: list[bytes], max_event_size: int = BIG) -> list[SseEvent]:
    return decode_chunks_with(SseDecoder(max_event_size), chunks)


def decode_chunks_with(decoder: SseDecoder, chunks: list[bytes]) -> list[SseEvent]:
    events: list[SseEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events


def bytewise(stream: bytes) -> list[bytes]:
    return [stream[i : i + 1] for i in range(len(stream))]


# --- Fields ----------------------------------------------------------------------------


def test_one_event_defaults_to_type_message_without_id() -> None:
    assert decode(b"data: hello\n\n") == [SseEvent("message", "hello", None)]


def test_nothing_is_dispatched_before_the_blank_line() -> None:
    decoder = SseDecoder(BIG)
    assert decoder.feed(b"data: hello\n") == []
    assert decoder.feed(b"data: world\n") == []
    assert decoder.feed(b"\n") == [SseEvent("message", "hello\nworld", None)]


def test_data_lines_join_with_newlines() -> None:
    assert decode(b"data: a\ndata: b\ndata: c\n\n") == [SseEvent("message", "a\nb\nc", None)]


def test_empty_data_lines_keep_their_newlines() -> None:
    # "data" alone is the field `data` with an empty value (no colon at all).
    assert decode(b"data\ndata\n\n") == [SseEvent("message", "\n", None)]
    assert decode(b"data:\ndata: x\ndata:\n\n") == [SseEvent("message", "\nx\n", None)]


def test_only_one_space_after_the_colon_is_removed() -> None:
    assert decode(b"data:x\n\n")[0].data == "x"
    assert decode(b"data: x\n\n")[0].data == "x"
    assert decode(b"data:  x \n\n")[0].data == " x "


def test_only_the_first_colon_separates_name_and_value() -> None:
    assert decode(b'data: {"a": "b:c"}\n\n')[0].data == '{"a": "b:c"}'


def test_event_field_names_the_event_and_resets_after_dispatch() -> None:
    events = decode(b"event: endpoint\ndata: /messages\n\ndata: next\n\n")
    assert events == [SseEvent("endpoint", "/messages", None), SseEvent("message", "next", None)]


def test_empty_event_name_means_message() -> None:
    assert decode(b"event:\ndata: x\n\n") == [SseEvent("message", "x", None)]


def test_event_name_of_an_event_without_data_does_not_leak_into_the_next() -> None:
    assert decode(b"event: custom\n\ndata: x\n\n") == [SseEvent("message", "x", None)]


def test_blank_lines_without_data_dispatch_nothing() -> None:
    assert decode(b"\n\n\n") == []
    assert decode(b"event: x\n\n") == []


def test_comments_are_ignored_anywhere() -> None:
    stream = b": keep-alive\n\n:another\ndata: a\n: inside an event\ndata: b\n\n"
    assert decode(stream) == [SseEvent("message", "a\nb", None)]


def test_unknown_fields_and_field_names_are_case_sensitive() -> None:
    stream = b"foo: bar\nData: no\nDATA: no\nEvent: no\nID: 9\ndata: yes\n\n"
    decoder = SseDecoder(BIG)
    assert decoder.feed(stream) == [SseEvent("message", "yes", None)]
    assert decoder.last_event_id is None


def test_a_space_before_the_colon_makes_another_field_name() -> None:
    assert decode(b"data : x\n\n") == []


def test_utf8_is_decoded_and_invalid_bytes_are_replaced() -> None:
    assert decode("data: h\u00e9llo \u2603\n\n".encode()) == [
        SseEvent("message", "h\u00e9llo \u2603", None)
    ]
    assert decode(b"data: a\xffb\n\n") == [SseEvent("message", "a\ufffdb", None)]


def test_a_multibyte_character_split_across_chunks_survives() -> None:
    snowman = "\u2603".encode()
    assert len(snowman) == 3
    chunks = [b"data: " + snowman[:1], snowman[1:2], snowman[2:] + b"\n\n"]
    assert decode_chunks(chunks) == [SseEvent("message", "\u2603", None)]


# --- id and retry ------------------------------------------------------------------------


def test_id_is_on_its_event_and_persists_on_the_decoder() -> None:
    decoder = SseDecoder(BIG)
    assert decoder.last_event_id is None
    assert decoder.feed(b"id: 1\ndata: a\n\n") == [SseEvent("message", "a", "1")]
    assert decoder.last_event_id == "1"
    # An event without an id carries none, and the decoder's last id stays.
    assert decoder.feed(b"data: b\n\n") == [SseEvent("message", "b", None)]
    assert decoder.last_event_id == "1"
    assert decoder.feed(b"id: 2\ndata: c\n\n") == [SseEvent("message", "c", "2")]
    assert decoder.last_event_id == "2"
    assert decoder.feed(b"data: d\n\n") == [SseEvent("message", "d", None)]
    assert decoder.last_event_id == "2"


def test_the_last_id_field_of_an_event_wins() -> None:
    decoder = SseDecoder(BIG)
    assert decoder.feed(b"id: 1\nid: 2\ndata: x\n\n") == [SseEvent("message", "x", "2")]
    assert decoder.last_event_id == "2"


def test_id_containing_nul_is_ignored() -> None:
    decoder = SseDecoder(BIG)
    decoder.feed(b"id: 5\ndata: a\n\n")
    assert decoder.feed(b"id: 6\x007\ndata: b\n\n") == [SseEvent("message", "b", None)]
    assert decoder.last_event_id == "5"


def test_an_empty_id_clears_the_last_event_id() -> None:
    decoder = SseDecoder(BIG)
    decoder.feed(b"id: 5\ndata: a\n\n")
    assert decoder.feed(b"id\ndata: b\n\n") == [SseEvent("message", "b", None)]
    assert decoder.last_event_id is None


def test_id_of_an_event_without_data_still_sets_the_last_event_id() -> None:
    decoder = SseDecoder(BIG)
    assert decoder.feed(b"id: 42\n\n") == []
    assert decoder.last_event_id == "42"


def test_id_value_keeps_everything_after_the_first_space() -> None:
    decoder = SseDecoder(BIG)
    decoder.feed(b"id:  a:b \n\n")
    assert decoder.last_event_id == " a:b "


def test_retry_sets_the_reconnection_time() -> None:
    decoder = SseDecoder(BIG)
    assert decoder.retry_ms is None
    assert decoder.feed(b"retry: 3000\n\n") == []
    assert decoder.retry_ms == 3000
    decoder.feed(b"retry:0\n\n")
    assert decoder.retry_ms == 0


@pytest.mark.parametrize(
    "value", [b"", b"3s", b"-1", b"+5", b"1.5", b" 10", b"10 ", b"1e3", b"0x10", b"abc"]
)
def test_retry_that_is_not_only_digits_is_ignored(value: bytes) -> None:
    decoder = SseDecoder(BIG)
    decoder.feed(b"retry: 1234\n\n")
    assert decoder.feed(b"retry: " + value + b"\ndata: x\n\n") == [SseEvent("message", "x", None)]
    assert decoder.retry_ms == 1234


def test_retry_with_a_superscript_digit_is_ignored() -> None:
    decoder = SseDecoder(BIG)
    decoder.feed(b"retry: 1234\n\n")
    events = decoder.feed("retry: \u00b2\ndata: x\n\n".encode())
    assert events == [SseEvent("message", "x", None)]
    assert decoder.retry_ms == 1234


@pytest.mark.parametrize("value", ["\u0661\u0662", "\uff11\uff12"])
def test_retry_with_non_ascii_digits_is_ignored(value: str) -> None:
    decoder = SseDecoder(BIG)
    decoder.feed(b"retry: 1234\n\n")
    events = decoder.feed(f"retry: {value}\ndata: x\n\n".encode())
    assert events == [SseEvent("message", "x", None)]
    assert decoder.retry_ms == 1234


def test_priming_event_with_id_retry_and_empty_data() -> None:
    # What an MCP server sends first on a resumable stream.
    decoder = SseDecoder(BIG)
    events = decoder.feed(b"id: stream-1:0\nretry: 5000\ndata:\n\n")
    assert events == [SseEvent("message", "", "stream-1:0")]
    assert decoder.last_event_id == "stream-1:0"
    assert decoder.retry_ms == 5000
    # The next event is unaffected by the priming one's fields.
    assert decoder.feed(b'data: {"jsonrpc":"2.0"}\n\n') == [
        SseEvent("message", '{"jsonrpc":"2.0"}', None)
    ]
    assert decoder.last_event_id == "stream-1:0"


def test_priming_event_without_a_data_line_only_sets_id_and_retry() -> None:
    decoder = SseDecoder(BIG)
    assert decoder.feed(b"id: p\nretry: 250\n\n") == []
    assert decoder.last_event_id == "p"
    assert decoder.retry_ms == 250


def test_id_of_an_event_that_never_completes_is_not_the_last_event_id() -> None:
    decoder = SseDecoder(BIG)
    assert decoder.feed(b"id: 6\ndata: a\n\n") == [SseEvent("message", "a", "6")]
    # The connection breaks here: event 7 was never dispatched.
    assert decoder.feed(b'id: 7\ndata: {"jsonrpc":') == []
    assert decoder.last_event_id == "6"


# --- Line endings ------------------------------------------------------------------------

STREAM_LINES = [
    b"id: 1",
    b"event: update",
    b": comment",
    b"data: first",
    b"data: second",
    b"",
    b"data: third",
    b"",
]
EXPECTED = [SseEvent("update", "first\nsecond", "1"), SseEvent("message", "third", None)]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_every_line_ending_gives_the_same_events(eol: bytes) -> None:
    # A trailing comment line settles a final CR (it could be the start of CRLF).
    stream = eol.join(STREAM_LINES) + eol + b":eof\n"
    assert decode(stream) == EXPECTED
    assert decode_chunks(bytewise(stream)) == EXPECTED


def test_mixed_line_endings_in_one_stream() -> None:
    stream = b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r:eof\n"
    assert decode(stream) == [SseEvent("message", "a\nb\nc", None), SseEvent("message", "d", None)]


def test_crlf_split_between_chunks_is_one_line_ending() -> None:
    # Were the CR a line end and the LF another, "a" would be dispatched alone.
    decoder = SseDecoder(BIG)
    events: list[SseEvent] = []
    for chunk in [b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n", b"data: c\r\n\r\n"]:
        events += decoder.feed(chunk)
    assert events == [SseEvent("message", "a\nb", None), SseEvent("message", "c", None)]


def test_cr_at_a_chunk_end_followed_by_a_cr_is_two_line_endings() -> None:
    decoder = SseDecoder(BIG)
    assert decoder.feed(b"data: a\r") == []
    events = decoder.feed(b"\rdata: b\r\r:eof\n")
    assert events == [SseEvent("message", "a", None), SseEvent("message", "b", None)]


def test_cr_at_a_chunk_end_followed_by_text_ends_the_line() -> None:
    decoder = SseDecoder(BIG)
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"data: b\n\n") == [SseEvent("message", "a\nb", None)]


def test_an_event_ended_by_cr_is_dispatched_at_once() -> None:
    decoder = SseDecoder(BIG)
    assert decoder.feed(b"data: a\r\r") == [SseEvent("message", "a", None)]
    # A following LF is the rest of that CRLF, not one more blank line.
    assert decoder.feed(b"\ndata: b\n\n") == [SseEvent("message", "b", None)]


def test_a_leading_byte_order_mark_is_stripped() -> None:
    decoder = SseDecoder(BIG)
    assert decoder.feed(b"\xef\xbb\xbfid: 1\ndata: x\n\n") == [SseEvent("message", "x", "1")]


def test_a_byte_order_mark_inside_a_value_is_kept() -> None:
    assert decode(b"data: \xef\xbb\xbfx\n\n") == [SseEvent("message", "\ufeffx", None)]


# --- Size limit --------------------------------------------------------------------------


def test_an_event_over_the_limit_through_many_data_lines_raises() -> None:
    decoder = SseDecoder(100)
    line = b"data: " + b"x" * 20 + b"\n"
    with pytest.raises(EventTooLarge, match="exceeds 100 bytes"):
        decode_chunks_with(decoder, [line] * 10)


def test_an_event_over_the_limit_in_one_chunk_raises() -> None:
    with pytest.raises(EventTooLarge, match="exceeds 100 bytes"):
        decode(b"data: " + b"x" * 20 + b"\n" + (b"data: " + b"y" * 20 + b"\n") * 9 + b"\n", 100)


def test_event_too_large_is_a_value_error() -> None:
    assert issubclass(EventTooLarge, ValueError)


def test_one_huge_unterminated_line_raises_before_it_ends() -> None:
    decoder = SseDecoder(1000)
    decoder.feed(b"data: ")
    with pytest.raises(EventTooLarge, match="exceeds 1000 bytes"):
        decode_chunks_with(decoder, [b"x" * 64] * 100)


def test_one_huge_unterminated_line_in_a_single_chunk_raises() -> None:
    with pytest.raises(EventTooLarge):
        SseDecoder(1000).feed(b"data: " + b"x" * 5000)


def test_a_huge_unterminated_comment_line_raises_too() -> None:
    with pytest.raises(EventTooLarge):
        SseDecoder(1000).feed(b":" + b"x" * 5000)


def test_the_limit_applies_per_event_not_per_stream() -> None:
    decoder = SseDecoder(100)
    events: list[SseEvent] = []
    for i in range(50):
        events += decoder.feed(b"data: " + b"x" * 60 + b"\n\n")
        events += decoder.feed(b"event: e\ndata: " + str(i).encode() + b"\n\n")
    assert len(events) == 100
    assert events[0].data == "x" * 60


def test_an_event_just_under_the_limit_passes() -> None:
    payload = "x" * 90
    assert decode(f"data: {payload}\n\n".encode(), 100) == [SseEvent("message", payload, None)]


def test_the_limit_counts_bytes_not_characters() -> None:
    payload = "\u00e9" * 1000  # 2000 bytes of UTF-8
    try:
        decode(f"data: {payload}\n\n".encode(), 1500)
    except EventTooLarge:
        return
    raise AssertionError("a 2000-byte event passed a 1500-byte limit")


# --- Any split of a valid stream ------------------------------------------------------------

_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\x00"),
    max_size=12,
)


@dataclass(frozen=True)
class _Spec:
    comment: str | None
    event: str | None
    id: str | None
    retry: int | None
    data: list[str]


_specs = st.builds(
    _Spec,
    comment=st.none() | _text,
    event=st.none() | _text,
    id=st.none() | _text,
    retry=st.none() | st.integers(0, 10**6),
    data=st.lists(_text, max_size=4),
)


@st.composite
def _streams(draw: st.DrawFn) -> tuple[bytes, list[SseEvent], str | None, int | None]:
    """A valid stream with random line endings, and what decoding it must give."""
    specs = draw(st.lists(_specs, max_size=6))
    eols = st.sampled_from(["\n", "\r\n", "\r"])
    out: list[str] = []
    expected: list[SseEvent] = []
    last_id: str | None = None
    retry: int | None = None
    for spec in specs:
        lines: list[str] = []
        if spec.comment is not None:
            lines.append(":" + spec.comment)
        if spec.event is not None:
            lines.append("event: " + spec.event)
        if spec.id is not None:
            lines.append("id: " + spec.id)
            last_id = spec.id or None
        if spec.retry is not None:
            lines.append(f"retry: {spec.retry}")
            retry = spec.retry
        lines += ["data: " + value for value in spec.data]
        lines.append("")
        for line in lines:
            eol = draw(eols)
            if not line and out and out[-1].endswith("\r") and eol == "\n":
                eol = "\r\n"  # a lone LF right after a CR would make them one CRLF
            out.append(line + eol)
        if spec.data:
            event_id = (spec.id or None) if spec.id is not None else None
            expected.append(SseEvent(spec.event or "message", "\n".join(spec.data), event_id))
    # Settle a final CR, which could otherwise be the start of a CRLF.
    return "".join(out).encode() + b":eof\n", expected, last_id, retry


@settings(max_examples=200, deadline=None)
@given(data=st.data(), stream=_streams())
def test_any_split_of_a_valid_stream_gives_the_same_events(
    data: st.DataObject, stream: tuple[bytes, list[SseEvent], str | None, int | None]
) -> None:
    raw, expected, last_id, retry = stream
    whole = SseDecoder(BIG)
    assert whole.feed(raw) == expected
    assert (whole.last_event_id, whole.retry_ms) == (last_id, retry)

    cuts = sorted(data.draw(st.sets(st.integers(0, len(raw)), max_size=12)))
    bounds = [0, *cuts, len(raw)]
    split = SseDecoder(BIG)
    events: list[SseEvent] = []
    for start, end in itertools.pairwise(bounds):
        events += split.feed(raw[start:end])
    assert events == expected
    assert (split.last_event_id, split.retry_ms) == (last_id, retry)


def test_a_stream_fed_one_byte_at_a_time() -> None:
    stream = b"id: 9\r\nevent: e\r\ndata: x\r\ndata: y\r\n\r\ndata: z\n\n"
    assert decode_chunks(bytewise(stream)) == decode(stream)
    assert decode(stream) == [SseEvent("e", "x\ny", "9"), SseEvent("message", "z", None)]
