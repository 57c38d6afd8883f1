"""AWS's event-stream framing (``application/vnd.amazon.eventstream``), as Bedrock streams an answer.

A message is a prelude (4-byte total length, 4-byte headers length, CRC32 of those 8 bytes), the headers
(typed name/value pairs: ``:message-type``, ``:event-type``, ``:content-type``, ``:exception-type``), the
payload, and the CRC32 of all that came before. ``AwsFraming`` turns such a stream into SSE events and
back, so that a dialect's SSE session reads and rewrites it: Bedrock's ``invoke-with-response-stream``
carries each of the model's own stream events base64-encoded in a ``chunk`` event (``{"bytes": ...}``):
Anthropic's an SSE event's data, Amazon Nova's an object of one key naming the event
(``{"contentBlockDelta": {...}}``), which is read as the ``converse-stream`` event of that name.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from dataclasses import dataclass

from proxy.wire.sse import SSEParser, encode_text, write_event

EVENT_STREAM = "application/vnd.amazon.eventstream"
MAX_MESSAGE_BYTES = 16 << 20
"""The longest message held whole: AWS's own limit on one message."""
_PRELUDE = 12
_CHECKSUM = 4
_FIXED_SIZES = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}
"""Bytes of a header value of each fixed-size type (true, false, byte, short, int, long, timestamp,
uuid); types 6 (bytes) and 7 (string) carry a 2-byte length."""
_STRING = 7
_VARIABLE = (6, _STRING)
FRAMING_HEADERS = frozenset({":message-type", ":event-type", ":exception-type", ":content-type"})
"""The headers that say what a message is: any other holding text or bytes (an error message's
``:error-message``) carries what no reader here reads, and is refused."""
_CHUNK = "chunk"
CHUNKS = "chunks"
NAMED_CHUNKS = "named_chunks"
"""Chunks each holding an object of one key, the name of the event its value is (Amazon Nova's)."""
EVENTS = "events"
INVOCATION_METRICS = "amazon-bedrock-invocationMetrics"
"""The figures Bedrock adds beside the model's event in the last chunk of a stream: counts only."""
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
"""An event or exception type as an SSE event name: no character that ends an SSE field."""


def is_aws_event_stream(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() == EVENT_STREAM


class EventStreamError(ValueError):
    """Bytes that are no well-formed event-stream message: a checksum that does not match, a length or
    a header that runs past its message, a chunk that is no base64 JSON. The well-formed messages that
    came before it in the same bytes are not lost with it: each layer says what it made of them."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.decoded: list[Message] = []
        """The messages before it (``EventStreamDecoder.feed``)."""
        self.events = b""
        """Those messages as SSE events (``AwsFraming.to_sse``)."""
        self.sent = b""
        """What the stream lets out of them, framed again, before it is cut there."""


@dataclass(frozen=True, slots=True)
class Message:
    headers: dict[str, str]
    """The headers of string type, by name."""
    raw_headers: bytes
    payload: bytes


def encode_message(raw_headers: bytes, payload: bytes) -> bytes:
    """One message of these headers (in wire form) and payload, with its lengths and checksums."""
    total = _PRELUDE + len(raw_headers) + len(payload) + _CHECKSUM
    prelude = total.to_bytes(4, "big") + len(raw_headers).to_bytes(4, "big")
    message = prelude + zlib.crc32(prelude).to_bytes(4, "big") + raw_headers + payload
    return message + zlib.crc32(message).to_bytes(4, "big")


def string_headers(headers: dict[str, str]) -> bytes:
    """Headers of string type in wire form."""
    raw = b""
    for name, value in headers.items():
        encoded_name, encoded_value = name.encode(), value.encode()
        raw += bytes([len(encoded_name)]) + encoded_name + bytes([_STRING])
        raw += len(encoded_value).to_bytes(2, "big") + encoded_value
    return raw


def _read_headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    at = 0
    try:
        while at < len(raw):
            size = raw[at]
            name = raw[at + 1 : at + 1 + size].decode()
            at += 1 + size
            kind = raw[at]
            at += 1
            if kind in _VARIABLE:
                length = int.from_bytes(raw[at : at + 2], "big")
                value = raw[at + 2 : at + 2 + length]
                at += 2 + length
                if name not in FRAMING_HEADERS:
                    raise EventStreamError(f"a message carries text in its header {name!r}")
                if kind == _STRING:
                    headers[name] = value.decode()
            elif kind in _FIXED_SIZES:
                at += _FIXED_SIZES[kind]
            else:
                raise EventStreamError(f"header {name!r} of unknown type {kind}")
    except (IndexError, UnicodeDecodeError) as error:
        raise EventStreamError(f"headers do not read: {type(error).__name__}") from error
    if at != len(raw):
        raise EventStreamError("a header runs past the headers' length")
    return headers


class EventStreamDecoder:
    """Messages out of bytes that arrive in any pieces; what is held is at most one message."""

    def __init__(self, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        """The messages ``data`` completes, in order; raises ``EventStreamError`` at the first that does
        not decode, carrying those before it."""
        self._buffer += data
        messages: list[Message] = []
        try:
            self._decode(messages)
        except EventStreamError as error:
            error.decoded = messages
            raise
        return messages

    def _decode(self, messages: list[Message]) -> None:
        while len(self._buffer) >= _PRELUDE:
            prelude = bytes(self._buffer[:8])
            total, headers_length = int.from_bytes(prelude[:4], "big"), int.from_bytes(prelude[4:], "big")
            if zlib.crc32(prelude) != int.from_bytes(self._buffer[8:_PRELUDE], "big"):
                raise EventStreamError("the prelude's checksum does not match")
            if total > self.max_message_bytes or headers_length > total - _PRELUDE - _CHECKSUM:
                raise EventStreamError(f"a message of {total} bytes with {headers_length} bytes of headers")
            if len(self._buffer) < total:
                break
            message = bytes(self._buffer[:total])
            del self._buffer[:total]
            if zlib.crc32(message[:-_CHECKSUM]) != int.from_bytes(message[-_CHECKSUM:], "big"):
                raise EventStreamError("the message's checksum does not match")
            raw_headers = message[_PRELUDE : _PRELUDE + headers_length]
            payload = message[_PRELUDE + headers_length : -_CHECKSUM]
            messages.append(Message(_read_headers(raw_headers), raw_headers, payload))

    def finish(self) -> None:
        if self._buffer:
            raise EventStreamError(f"the stream ends inside a message ({len(self._buffer)} bytes held)")


class AwsFraming:
    """An AWS event stream as SSE and back. ``to_sse``: with ``CHUNKS`` (Bedrock's
    ``invoke-with-response-stream``) each ``chunk`` event becomes the model's own event it carries; any
    other message (an exception, each event of ``converse-stream``) an SSE event named by its type, its
    payload the data; with ``NAMED_CHUNKS`` each chunk's event an SSE event of its name. ``from_sse``:
    each SSE event the message of its name with its data as payload, framed with the headers that
    message came with, or, where none came, as a chunk holding the data (``CHUNKS``; with
    ``NAMED_CHUNKS`` keyed by the event's name) or an event of that type."""

    def __init__(self, kind: str) -> None:
        self.chunks = kind in (CHUNKS, NAMED_CHUNKS)
        self.named = kind == NAMED_CHUNKS
        self._metrics: dict[str, str] = {}
        """The invocation metrics the last chunk of each event name carried beside its event, as JSON."""
        self._decoder = EventStreamDecoder()
        self._parser = SSEParser(MAX_MESSAGE_BYTES)
        self._others: dict[str, bytes] = {}
        """The headers of each message that is no chunk, by the SSE name it was read under."""
        self._chunk_headers = string_headers(
            {":event-type": _CHUNK, ":content-type": "application/json", ":message-type": "event"}
        )

    def to_sse(self, data: bytes) -> bytes:
        """The SSE events of the messages ``data`` completes; raises ``EventStreamError`` at the first
        message that does not decode or read, carrying the events of those before it."""
        events: list[bytes] = []
        try:
            try:
                messages = self._decoder.feed(data)
            except EventStreamError as error:
                events.extend(map(self._event_of, error.decoded))
                raise
            events.extend(map(self._event_of, messages))
        except EventStreamError as error:
            error.events = b"".join(events)
            raise
        return b"".join(events)

    def end(self) -> None:
        """The stream ended: raises where it ended inside a message."""
        self._decoder.finish()

    def from_sse(self, data: bytes) -> bytes:
        return b"".join(self._message_of(event.event, event.data) for event in self._parser.feed(data))

    def _event_of(self, message: Message) -> bytes:
        kind = message.headers.get(":message-type", "event")
        name = message.headers.get(":event-type" if kind == "event" else ":exception-type") or kind
        if name == _CHUNK and self.chunks:
            carried = _chunk_bytes(message.payload)
            return self._named_event(carried) if self.named else write_event(_as_lines(carried))
        if not _NAME.fullmatch(name):
            raise EventStreamError("a message's type is no name")
        self._others[name] = message.raw_headers
        return write_event(_as_lines(message.payload), name)

    def _message_of(self, name: str | None, data: str | None) -> bytes:
        if data is None:
            return b""  # a comment or a keep-alive: nothing to frame
        raw_headers = self._others.get(name or "")
        if raw_headers is not None:
            return encode_message(raw_headers, encode_text(data))
        if self.named and name is not None:
            metrics = self._metrics.get(name)
            beside = "" if metrics is None else f",{json.dumps(INVOCATION_METRICS)}:{metrics}"
            data = f"{{{json.dumps(name)}:{data}{beside}}}"
        if not self.chunks:
            event = {
                ":event-type": name or "message",
                ":content-type": "application/json",
                ":message-type": "event",
            }
            return encode_message(string_headers(event), encode_text(data))
        chunk = json.dumps({"bytes": base64.b64encode(encode_text(data)).decode()}).encode()
        return encode_message(self._chunk_headers, chunk)

    def _named_event(self, carried: bytes) -> bytes:
        """A chunk holding ``{"<event>": {...}}`` (and, in the last, the invocation metrics) as the SSE
        event of that name; raises where it holds anything else, which no reader would read."""
        try:
            document = json.loads(carried)
        except ValueError as error:
            raise EventStreamError(f"a chunk that is no JSON: {type(error).__name__}") from error
        if not isinstance(document, dict):
            raise EventStreamError("a chunk that is no JSON object")
        metrics = document.pop(INVOCATION_METRICS, None)
        if len(document) != 1:
            raise EventStreamError(f"a chunk of {len(document)} events")
        ((name, value),) = document.items()
        if not _NAME.fullmatch(name) or not isinstance(value, dict):
            raise EventStreamError("a chunk's event is no named object")
        if metrics is None:
            self._metrics.pop(name, None)
        elif _counts_only(metrics):
            self._metrics[name] = json.dumps(metrics)
        else:
            raise EventStreamError("invocation metrics that are not counts")
        return write_event(json.dumps(value), name)


def _counts_only(value: object) -> bool:
    """An object of numbers (or of such objects): nothing a reader of text would need to read."""
    if not isinstance(value, dict):
        return False
    return all(
        (isinstance(inner, (int, float)) and not isinstance(inner, bool)) or _counts_only(inner)
        for inner in value.values()
    )


def _chunk_bytes(payload: bytes) -> bytes:
    try:
        chunk = json.loads(payload)
        return base64.b64decode(chunk["bytes"], validate=True)
    except (ValueError, TypeError, KeyError, binascii.Error) as error:
        raise EventStreamError(f"a chunk that is no base64 in JSON: {type(error).__name__}") from error


def _as_lines(payload: bytes) -> str:
    """A payload as the data of one SSE event: its line ends (whitespace between JSON's tokens) as LF,
    which ``write_event`` writes one ``data:`` line each."""
    return payload.decode("utf-8", "surrogateescape").replace("\r\n", "\n").replace("\r", "\n")
