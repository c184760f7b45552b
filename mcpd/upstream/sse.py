"""Server-sent events (the text/event-stream format), decoded sans-IO.

Feed bytes as they arrive; complete events come out. Field handling follows
the HTML standard's parsing rules: `data` lines join with newlines, `id` sets
the last event id (unless it contains NUL), `retry` takes only digits, lines
starting with ':' are comments, and a blank line dispatches the event.
"""

from __future__ import annotations

import msgspec


class SseEvent(msgspec.Struct, frozen=True):
    event: str
    data: str
    id: str | None


class EventTooLarge(ValueError):
    pass


class SseDecoder:
    def __init__(self, max_event_size: int) -> None:
        self.max_event_size = max_event_size
        # The id of the last event dispatched: what a resumed stream starts after.
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None
        self.reset()

    def reset(self) -> None:
        """Forget a half-received event (the stream broke); keep id and retry."""
        self._buffer = b""
        self._data: list[str] = []
        self._size = 0
        self._event = ""
        self._id: str | None = None  # the id field of the event being received
        self._saw_id = False
        self._after_cr = False  # the last line ended with CR: skip an LF that follows
        self._started = False  # past a possible byte-order mark

    def feed(self, chunk: bytes) -> list[SseEvent]:
        buffer = self._buffer + chunk
        if not self._started:
            if len(buffer) < len(_BOM) and _BOM.startswith(buffer):
                self._buffer = buffer
                return []
            buffer = buffer.removeprefix(_BOM)
            self._started = True
        position = 0
        if self._after_cr and buffer[:1] == b"\n":
            position = 1
        if buffer:
            self._after_cr = False
        lines: list[str] = []
        if b"\r" not in buffer:  # lines end with LF alone, as a rule: split at once
            last = buffer.rfind(b"\n")
            if last >= position:
                lines = buffer[position:last].decode("utf-8", errors="replace").split("\n")
                position = last + 1
        else:
            while (end := _line_end(buffer, position)) is not None:
                line_end, next_start = end
                lines.append(buffer[position:line_end].decode("utf-8", errors="replace"))
                # A lone CR as the very last byte: an LF may still follow in the next chunk.
                self._after_cr = (
                    next_start == line_end + 1 == len(buffer) and buffer[line_end] == 0x0D
                )
                position = next_start
        self._buffer = buffer[position:]
        events = self._events(lines)
        if len(self._buffer) + self._size > self.max_event_size:
            raise EventTooLarge(f"an SSE event exceeds {self.max_event_size} bytes")
        return events

    def _events(self, lines: list[str]) -> list[SseEvent]:
        """The events that complete lines dispatch. One loop over locals, the
        decoder's state read before and kept after: it runs on every answer."""
        events: list[SseEvent] = []
        data, size, kind = self._data, self._size, self._event
        event_id, saw_id, limit = self._id, self._saw_id, self.max_event_size
        for line in lines:
            if not line:  # dispatch
                if saw_id:
                    self.last_event_id = event_id
                if data:
                    text = "\n".join(data)
                    events.append(SseEvent(kind or "message", text, event_id if saw_id else None))
                    data = []  # (an event without data, a priming one, left it empty)
                size, kind, saw_id = 0, "", False
                continue
            name, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
            if name == "data":
                # ASCII (JSON, as a rule) is as long in bytes as in characters.
                size += (len(value) if value.isascii() else len(value.encode())) + 1
                if size > limit:
                    raise EventTooLarge(f"an SSE event exceeds {limit} bytes")
                data.append(value)
            elif name == "event":
                kind = value
            elif name == "id" and "\0" not in value:
                event_id = value or None
                saw_id = True
            elif name == "retry" and value.isascii() and value.isdigit():
                self.retry_ms = int(value)
            # Anything else (a comment, whose name is empty, or an unknown field) is ignored.
        self._data, self._size, self._event, self._id, self._saw_id = (
            data,
            size,
            kind,
            event_id,
            saw_id,
        )
        return events


_BOM = b"\xef\xbb\xbf"


def _line_end(buffer: bytes, start: int) -> tuple[int, int] | None:
    """Where the line starting at `start` ends, and where the next one starts.

    A CR that is the last byte ends its line at once; the caller remembers it
    and skips an LF at the start of the next chunk (a CRLF split in two).
    """
    lf = buffer.find(b"\n", start)
    cr = buffer.find(b"\r", start, lf if lf != -1 else len(buffer))
    if cr == -1:
        return (lf, lf + 1) if lf != -1 else None
    if cr + 1 < len(buffer) and buffer[cr + 1] == 0x0A:
        return cr, cr + 2
    return cr, cr + 1
