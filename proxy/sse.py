"""Incremental Server-Sent Events parsing and serialisation.

Bytes arrive in arbitrary chunks; an event is returned as soon as its terminating blank line has been
read, so the agent can be sent the first token before the last one exists. Every input byte belongs to
exactly one returned event's ``raw`` (or to the unfinished tail), which lets a proxy pass untouched
events through byte for byte and re-serialise only the ones it changed.
"""

from __future__ import annotations

from dataclasses import dataclass

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One blank-line-terminated block of an event stream.

    ``data`` is None for blocks without a ``data`` field (comments, keep-alives, stray blank lines):
    the SSE spec dispatches nothing for them, but a proxy still forwards their bytes.
    """

    data: str | None
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    raw: bytes = b""

    @property
    def type(self) -> str:
        """The event type a browser's EventSource would dispatch (``message`` when unnamed)."""
        return self.event or "message"


def serialise(event: SSEEvent) -> bytes:
    """The event in wire form with LF line ends; ``raw`` is ignored."""
    lines: list[str] = []
    if event.event is not None:
        lines.append(f"event: {event.event}")
    if event.id is not None:
        lines.append(f"id: {event.id}")
    if event.retry is not None:
        lines.append(f"retry: {event.retry}")
    if event.data is not None:
        lines.extend(f"data: {line}" for line in event.data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


class SSEParser:
    """Turns a byte stream into ``SSEEvent`` objects, one chunk at a time."""

    def __init__(self) -> None:
        # Holds the bytes of the event being read, from its first byte; ``_scanned`` is how far of it
        # has already been split into lines, so a large event fed byte by byte is not re-read.
        self._buffer = bytearray()
        self._scanned = 0
        self._at_stream_start = True
        self._data_lines: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self._buffer += chunk
        return self._read_lines(final=False)

    def finish(self) -> tuple[list[SSEEvent], bytes]:
        """Ends the stream: the events its last bytes completed (a final CR waits to see whether LF
        follows), and the bytes of an unterminated event, which the SSE spec discards."""
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
