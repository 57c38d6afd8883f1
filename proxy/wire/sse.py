"""Incremental Server-Sent Events parsing and serialisation.

Bytes arrive in arbitrary chunks; an event is returned as soon as its terminating blank line has been
read, so the agent can be sent the first token before the last one exists. Every input byte belongs to
exactly one returned event's ``raw`` (or to the unfinished tail), which lets a proxy pass untouched
events through byte for byte and re-serialise only the ones it changed.

The bytes held for one unfinished event are capped: past the cap the parser stops reading that event
and hands its bytes on as they arrive, in ``oversized`` pieces, until the blank line that ends it.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

_BOM = b"\xef\xbb\xbf"
_CR = 0x0D
_LF = 0x0A
DEFAULT_MAX_EVENT_BYTES = 1 << 20


def _surrogates_as_json(error: UnicodeError) -> tuple[bytes, int]:
    """Lone surrogates left in decoded text: one that stands for an undecodable input byte
    (``surrogateescape``) becomes that byte again; any other (a JSON ``\\ud800`` escape) becomes the
    same escape, which is how it can appear inside a JSON string."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    pieces = []
    for char in error.object[error.start : error.end]:
        code = ord(char)
        pieces.append(bytes([code - 0xDC00]) if 0xDC80 <= code <= 0xDCFF else b"\\u%04x" % code)
    return b"".join(pieces), error.end


codecs.register_error("egressguard-json", _surrogates_as_json)


def encode_text(text: str) -> bytes:
    """UTF-8 of text read from a body that may hold lone surrogates (see ``_surrogates_as_json``): a
    string that cannot be encoded must never make a rewritten body or event fall back to its original."""
    return text.encode("utf-8", "egressguard-json")


@dataclass(slots=True)
class SSEEvent:
    """One blank-line-terminated block of an event stream. Nothing changes an event once made; it is not
    a frozen dataclass because one is made for every event read and every event read back, and a frozen
    one's ``__init__`` costs several times a plain one's.

    ``data`` is None for blocks without a ``data`` field (comments, keep-alives, stray blank lines):
    the SSE spec dispatches nothing for them, but a proxy still forwards their bytes.

    ``oversized`` marks a piece of an event longer than the parser's cap: its fields were not read
    (``data`` is None) and ``raw`` holds some of its bytes in order.
    """

    data: str | None
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    raw: bytes = b""
    oversized: bool = False

    @property
    def type(self) -> str:
        """The event type a browser's EventSource would dispatch (``message`` when unnamed)."""
        return self.event or "message"


class Serialised(bytes):
    """Bytes ``serialise`` wrote that ``SSEParser`` reads back as exactly the event they were written from
    (``reading``), so a reader of what was sent may take that event instead of parsing them again. Only
    these objects say so: bytes made from them (``replace``, a slice, a join) are plain bytes, parsed."""

    _fields: tuple[str | None, str | None, str | None, int | None]

    def reading(self) -> SSEEvent:
        data, name, event_id, retry = self._fields
        return SSEEvent(data=data, event=name, id=event_id, retry=retry, raw=self)


def serialise(event: SSEEvent) -> bytes:
    """The event in wire form with LF line ends; ``raw`` is ignored. A ``Serialised`` where the parser
    reads those bytes back as the same event."""
    return write_event(event.data, event.event, event.id, event.retry)


def write_event(
    data: str | None, name: str | None = None, event_id: str | None = None, retry: int | None = None
) -> bytes:
    """``serialise`` of the event of these fields, without making that event first."""
    text = _wire_text(data, name, event_id, retry)
    if not _reads_back(data, name, event_id, retry):
        return encode_text(text)
    try:
        written = Serialised(text, "utf-8")
    except UnicodeEncodeError:  # a lone surrogate, written as an escape or a byte, is not read back as one
        return encode_text(text)
    written._fields = (data, name, event_id, retry)
    return written


def is_serialised(event: SSEEvent) -> bool:
    """Whether the event's bytes are those ``serialise`` writes for it."""
    return encode_text(_wire_text(event.data, event.event, event.id, event.retry)) == event.raw


def _wire_text(data: str | None, name: str | None, event_id: str | None, retry: int | None) -> str:
    """The text of the event's wire form, which ``serialise`` encodes."""
    if event_id is None and retry is None and data is not None and "\n" not in data:
        # Most events: a name perhaps, and one line of data.
        return f"data: {data}\n\n" if name is None else f"event: {name}\ndata: {data}\n\n"
    lines: list[str] = []
    if name is not None:
        lines.append(f"event: {name}")
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if retry is not None:
        lines.append(f"retry: {retry}")
    if data is not None:
        lines.extend(f"data: {line}" for line in data.split("\n"))
    return "\n".join(lines) + "\n\n"


def _reads_back(data: str | None, name: str | None, event_id: str | None, retry: int | None) -> bool:
    """Whether ``SSEParser`` reads the lines ``serialise`` writes for the event as the same fields: data
    with no line end but the LFs it splits at (a CR is one more to the parser), a name that is not empty
    (read as none) and an id, both without a line end (and the id without NUL, which the parser drops),
    a retry it reads as digits, and some data (an event of no field writes a blank line alone)."""
    return (
        data is not None
        and "\r" not in data
        and (name is None or (name != "" and not _has_line_end(name)))
        and (event_id is None or ("\x00" not in event_id and not _has_line_end(event_id)))
        and (retry is None or (type(retry) is int and retry >= 0))
    )


def _has_line_end(text: str) -> bool:
    return "\n" in text or "\r" in text


class SSEParser:
    """Turns a byte stream into ``SSEEvent`` objects, one chunk at a time."""

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        if max_event_bytes < 1:
            raise ValueError("max_event_bytes must be positive")
        self.max_event_bytes = max_event_bytes
        self.oversized_events = 0
        """How many events exceeded ``max_event_bytes`` and were handed on unread."""
        # Holds the bytes of the event being read, from its first byte; ``_scanned`` is how far of it
        # has already been split into lines, so a large event fed byte by byte is not re-read.
        self._buffer = bytearray()
        self._scanned = 0
        self._at_stream_start = True
        self._data_lines: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None
        # While skipping an oversized event: whether the current line is still empty, and whether the
        # last byte seen was a CR (an LF right after it belongs to the same line end).
        self._skipping = False
        self._line_empty = True
        self._after_cr = False

    @property
    def holding(self) -> bool:
        """Whether bytes of an event not yet complete have been read."""
        return bool(self._buffer) or self._skipping or self._after_cr

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        rest = chunk
        if self._at_stream_start and chunk.startswith((b"data:", b"event:")):
            self._at_stream_start = False  # no byte order mark
        if not (self._buffer or self._skipping or self._after_cr or self._at_stream_start):
            rest = self._read_data_events(chunk, events)
            if not rest:
                return events
        while True:
            if self._skipping:
                end = self._end_of_skipped_event(rest)
                if end is None:
                    if rest:
                        events.append(SSEEvent(data=None, raw=rest, oversized=True))
                    return events
                events.append(SSEEvent(data=None, raw=rest[:end], oversized=True))
                self._skipping = False
                rest = rest[end:]
            elif self._after_cr and rest:
                # The oversized event ended on a CR at the end of a chunk: a leading LF is its line end.
                self._after_cr = False
                if rest[0] == _LF:
                    events.append(SSEEvent(data=None, raw=rest[:1], oversized=True))
                    rest = rest[1:]
            self._buffer += rest
            events.extend(self._read_lines(final=False))
            if len(self._buffer) <= self.max_event_bytes:
                return events
            rest = self._give_up_on_event(events)

    @staticmethod
    def _read_data_events(chunk: bytes, events: list[SSEEvent]) -> bytes:
        """Reads the events at the start of ``chunk`` that are one ``data`` line each, after at most one
        ``event`` line, LF-terminated (how model APIs frame every event), as the line reader would, and
        returns the rest for it: from the first block of another shape (a CR anywhere, more lines, another
        field, a comment, a blank line alone) or the event not yet complete. Only called between events,
        where nothing is held, and past a byte order mark."""
        if b"\r" in chunk:
            return chunk
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            name = b""
            data = start
            if end >= 0 and chunk.startswith(b"event:", start):
                name = chunk[start + 7 if chunk[start + 6 : start + 7] == b" " else start + 6 : end]
                data = end + 1
                end = chunk.find(b"\n", data)
            if end < 0 or not chunk.startswith(b"data:", data) or chunk[end + 1 : end + 2] != b"\n":
                return chunk[start:] if start else chunk
            value = chunk[data + 6 if chunk[data + 5 : data + 6] == b" " else data + 5 : end]
            events.append(
                SSEEvent(
                    data=value.decode("utf-8", errors="replace"),
                    event=name.decode("utf-8", errors="replace") or None,
                    raw=chunk[start : end + 2],
                )
            )
            start = end + 2

    def _give_up_on_event(self, events: list[SSEEvent]) -> bytes:
        """Hands on the lines of the pending event already read and returns its unread remainder, from
        the start of a line, for the skipping scan."""
        self.oversized_events += 1
        read = bytes(self._buffer[: self._scanned])
        rest = bytes(self._buffer[self._scanned :])
        self._buffer.clear()
        self._scanned = 0
        self._reset_fields()
        if read:
            events.append(SSEEvent(data=None, raw=read, oversized=True))
        self._skipping = True
        self._line_empty = True
        self._after_cr = False
        return rest

    def _end_of_skipped_event(self, chunk: bytes) -> int | None:
        """The offset just past the blank line that ends the skipped event, or None if ``chunk`` does
        not reach it. Only two flags are kept between chunks, so memory does not grow."""
        position = 0
        length = len(chunk)
        next_lf = chunk.find(b"\n")
        next_cr = chunk.find(b"\r")
        while position < length:
            if self._after_cr:
                self._after_cr = False
                if chunk[position] == _LF:
                    position += 1
                    continue
            if 0 <= next_lf < position:
                next_lf = chunk.find(b"\n", position)
            if 0 <= next_cr < position:
                next_cr = chunk.find(b"\r", position)
            line_ends = [index for index in (next_lf, next_cr) if index >= 0]
            if not line_ends:
                self._line_empty = False
                return None
            line_end = min(line_ends)
            blank = self._line_empty and line_end == position
            self._line_empty = True
            position = line_end + 1
            self._after_cr = chunk[line_end] == _CR
            if blank:
                if self._after_cr and position < length:
                    self._after_cr = False
                    if chunk[position] == _LF:
                        position += 1
                return position
        return None

    def finish(self) -> tuple[list[SSEEvent], bytes]:
        """Ends the stream: the events its last bytes completed (a final CR waits to see whether LF
        follows), and the bytes of an unterminated event, which the SSE spec discards."""
        self._skipping = False
        self._after_cr = False
        events = self._read_lines(final=True)
        tail = bytes(self._buffer)
        self._buffer.clear()
        self._scanned = 0
        self._reset_fields()
        return events, tail

    def _read_lines(self, *, final: bool) -> list[SSEEvent]:
        buffer = self._buffer
        if self._at_stream_start:
            if len(buffer) < len(_BOM) and _BOM.startswith(bytes(buffer)) and not final:
                return []
            self._at_stream_start = False
            if buffer.startswith(_BOM):
                self._scanned = len(_BOM)
        events: list[SSEEvent] = []
        event_start = 0
        position = self._scanned
        length = len(buffer)
        has_cr = b"\r" in buffer
        while position < length:
            line_feed = buffer.find(b"\n", position)
            line_end = line_feed
            terminator = 1
            if has_cr:
                carriage_return = buffer.find(b"\r", position, line_feed if line_feed >= 0 else length)
                if carriage_return >= 0:
                    line_end = carriage_return
                    if carriage_return + 1 < length:
                        terminator = 2 if buffer[carriage_return + 1] == 0x0A else 1
                    elif not final:
                        # A CR at the end of a chunk may be the first half of CRLF.
                        break
            if line_end < 0:
                break
            line = bytes(buffer[position:line_end])
            position = line_end + terminator
            if line:
                self._read_field(line)
            else:
                events.append(self._dispatch(bytes(buffer[event_start:position])))
                event_start = position
        del buffer[:event_start]
        self._scanned = position - event_start
        return events

    def _read_field(self, line: bytes) -> None:
        if line.startswith(b":"):
            return
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        text = value.decode("utf-8", errors="replace")
        if name == b"data":
            self._data_lines.append(text)
        elif name == b"event":
            self._event = text
        elif name == b"id" and "\x00" not in text:
            self._id = text
        elif name == b"retry" and text.isascii() and text.isdigit():
            self._retry = int(text)

    def _dispatch(self, raw: bytes) -> SSEEvent:
        data = "\n".join(self._data_lines) if self._data_lines else None
        event = SSEEvent(data=data, event=self._event or None, id=self._id, retry=self._retry, raw=raw)
        self._reset_fields()
        return event

    def _reset_fields(self) -> None:
        self._data_lines = []
        self._event = None
        self._id = None
        self._retry = None
