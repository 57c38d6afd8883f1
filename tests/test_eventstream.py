"""AWS's event-stream framing: messages decoded in any pieces and checked, encoded with checksums AWS's
own decoder accepts, and Bedrock's chunks turned into SSE events and back."""

from __future__ import annotations

import base64
import json
import struct
import uuid
import zlib

import pytest

from proxy.wire.eventstream import (
    CHUNKS,
    EVENTS,
    INVOCATION_METRICS,
    NAMED_CHUNKS,
    AwsFraming,
    EventStreamDecoder,
    EventStreamError,
    encode_message,
    is_aws_event_stream,
    string_headers,
)
from proxy.wire.sse import SSEParser

CHUNK_HEADERS = {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
EXCEPTION_HEADERS = {
    ":exception-type": "modelStreamErrorException",
    ":content-type": "application/json",
    ":message-type": "exception",
}


def chunk(event: dict[str, object]) -> bytes:
    payload = json.dumps({"bytes": base64.b64encode(json.dumps(event).encode()).decode(), "p": "abcd"})
    return encode_message(string_headers(CHUNK_HEADERS), payload.encode())


def every_type_of_header() -> bytes:
    """One header of each type that holds no text (true, false, byte, short, int, long, timestamp, uuid),
    then a string one."""
    raw = b""
    for kind, value in [
        (0, b""),
        (1, b""),
        (2, b"\x07"),
        (3, struct.pack(">h", 7)),
        (4, struct.pack(">i", 7)),
        (5, struct.pack(">q", 7)),
        (8, struct.pack(">q", 1_700_000_000_000)),
        (9, uuid.uuid4().bytes),
    ]:
        raw += bytes([1]) + bytes([ord("a") + kind]) + bytes([kind]) + value
    return raw + string_headers({":event-type": "chunk"})


def test_messages_decode_in_any_pieces() -> None:
    """Fed a byte at a time or all at once, the same messages come out, headers of every type read past
    and string ones kept."""
    stream = encode_message(every_type_of_header(), b'{"a": 1}') + chunk({"type": "ping"})
    whole = EventStreamDecoder().feed(stream)
    decoder = EventStreamDecoder()
    pieces = [message for byte in range(len(stream)) for message in decoder.feed(stream[byte : byte + 1])]
    decoder.finish()
    assert pieces == whole and len(whole) == 2
    assert whole[0].headers == {":event-type": "chunk"} and whole[0].payload == b'{"a": 1}'
    assert whole[1].headers == CHUNK_HEADERS


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda frame: frame[:9] + bytes([frame[9] ^ 1]) + frame[10:], "prelude's checksum"),
        (lambda frame: frame[:-1] + bytes([frame[-1] ^ 1]), "message's checksum"),
        (lambda frame: frame[:20] + bytes([frame[20] ^ 1]) + frame[21:], "message's checksum"),
    ],
)
def test_a_checksum_that_does_not_match_is_an_error(damage: object, said: str) -> None:
    frame = chunk({"type": "ping"})
    with pytest.raises(EventStreamError, match=said):
        EventStreamDecoder().feed(damage(frame))  # type: ignore[operator]


def test_lengths_and_headers_that_run_past_their_message_are_errors() -> None:
    """A prelude naming more header bytes than its message holds, a message longer than the cap, a header
    of no known type or one cut short, and a stream ending inside a message are each refused."""
    with pytest.raises(EventStreamError, match="bytes of headers"):
        prelude = struct.pack(">II", 32, 64)
        EventStreamDecoder().feed(prelude + struct.pack(">I", zlib.crc32(prelude)) + bytes(20))
    with pytest.raises(EventStreamError, match="bytes with"):
        EventStreamDecoder(max_message_bytes=32).feed(chunk({"type": "ping"}))
    with pytest.raises(EventStreamError, match="unknown type"):
        EventStreamDecoder().feed(encode_message(b"\x01a\x0c", b""))
    with pytest.raises(EventStreamError, match=r"do not read|runs past"):
        EventStreamDecoder().feed(encode_message(b"\x0d:content-type\x07\x00\x09abc", b""))
    decoder = EventStreamDecoder()
    decoder.feed(chunk({"type": "ping"})[:-2])
    with pytest.raises(EventStreamError, match="ends inside a message"):
        decoder.finish()


def test_a_header_carrying_text_that_is_not_read_is_an_error() -> None:
    """An error message's ``:error-message`` (or any header holding text or bytes but those that say what
    the message is) would reach the agent unread."""
    headers = string_headers({":message-type": "error", ":error-message": "AKIAQWERTY234567ABCD"})
    with pytest.raises(EventStreamError, match="':error-message'"):
        EventStreamDecoder().feed(encode_message(headers, b""))
    raw = bytes([4]) + b"blob" + bytes([6]) + struct.pack(">H", 3) + b"abc"
    with pytest.raises(EventStreamError, match="'blob'"):
        EventStreamDecoder().feed(encode_message(raw, b""))


def test_what_is_encoded_is_what_aws_own_decoder_reads() -> None:
    """botocore's decoder, which checks both checksums, reads the messages written here as written."""
    eventstream = pytest.importorskip("botocore.eventstream")
    buffer = eventstream.EventStreamBuffer()
    buffer.add_data(chunk({"type": "message_stop"}))
    (message,) = list(buffer)
    assert message.headers == CHUNK_HEADERS
    assert json.loads(base64.b64decode(json.loads(message.payload)["bytes"])) == {"type": "message_stop"}


def test_chunks_read_as_the_sse_events_they_carry_and_are_framed_again() -> None:
    """A chunk becomes the model's event as an SSE event; an exception an event named by its type; each
    SSE event sent is framed again, a chunk holding its data or the exception with its own headers."""
    framing = AwsFraming(CHUNKS)
    exception = encode_message(string_headers(EXCEPTION_HEADERS), b'{"message": "stopped"}')
    sse = framing.to_sse(chunk({"type": "content_block_stop", "index": 0}) + exception)
    events = SSEParser().feed(sse)
    assert [(event.event, json.loads(event.data or "")) for event in events] == [
        (None, {"type": "content_block_stop", "index": 0}),
        ("modelStreamErrorException", {"message": "stopped"}),
    ]
    messages = EventStreamDecoder().feed(framing.from_sse(sse + b": keep-alive\n\n"))
    assert [message.headers for message in messages] == [CHUNK_HEADERS, EXCEPTION_HEADERS]
    assert json.loads(base64.b64decode(json.loads(messages[0].payload)["bytes"])) == {
        "type": "content_block_stop",
        "index": 0,
    }
    assert messages[1].payload == b'{"message": "stopped"}'


def test_converse_events_are_read_by_their_type_and_framed_as_they_came() -> None:
    """With ``EVENTS`` each message is one SSE event named by its ``:event-type``; an event sent goes out
    with the headers its type came with, and one of a type that never came as an event of that type."""
    framing = AwsFraming(EVENTS)
    headers = {
        ":event-type": "contentBlockDelta",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    delta = b'{"contentBlockIndex":0,"delta":{"text":"Hi"},"p":"abc"}'
    (event,) = SSEParser().feed(framing.to_sse(encode_message(string_headers(headers), delta)))
    assert (event.event, event.data) == ("contentBlockDelta", delta.decode())
    stop = b'event: contentBlockStop\ndata: {"contentBlockIndex":0}\n\n'
    sent = EventStreamDecoder().feed(
        framing.from_sse(b"event: contentBlockDelta\ndata: " + delta + b"\n\n" + stop)
    )
    assert [(message.headers[":event-type"], message.payload) for message in sent] == [
        ("contentBlockDelta", delta),
        ("contentBlockStop", b'{"contentBlockIndex":0}'),
    ]
    assert sent[1].headers[":message-type"] == "event"


def chunked_event(message: bytes) -> object:
    return json.loads(base64.b64decode(json.loads(message)["bytes"]))


def test_named_chunks_are_read_as_the_events_they_name_and_framed_again() -> None:
    """With ``NAMED_CHUNKS`` (Amazon Nova's own stream) a chunk's ``{"<event>": {...}}`` is the SSE event
    of that name; the invocation metrics of the last chunk go out again beside its event."""
    framing = AwsFraming(NAMED_CHUNKS)
    metrics = {"inputTokenCount": 5, "outputTokenCount": 2, "invocationLatency": 310.5}
    delta: dict[str, object] = {"contentBlockDelta": {"delta": {"text": "Hi"}, "contentBlockIndex": 0}}
    last: dict[str, object] = {"metadata": {"usage": {"inputTokens": 5}}, INVOCATION_METRICS: metrics}
    events = SSEParser().feed(framing.to_sse(chunk(delta) + chunk(last)))
    assert [(event.event, json.loads(event.data or "")) for event in events] == [
        ("contentBlockDelta", delta["contentBlockDelta"]),
        ("metadata", last["metadata"]),
    ]
    rewritten = b'event: contentBlockDelta\ndata: {"delta": {"text": "Ho"}, "contentBlockIndex": 0}\n\n'
    sent = EventStreamDecoder().feed(
        framing.from_sse(rewritten + b"".join(event.raw for event in events[1:]))
    )
    assert [chunked_event(message.payload) for message in sent] == [
        {"contentBlockDelta": {"delta": {"text": "Ho"}, "contentBlockIndex": 0}},
        last,
    ]
    assert {message.headers[":event-type"] for message in sent} == {"chunk"}


@pytest.mark.parametrize(
    "event",
    [
        {"contentBlockDelta": {}, "messageStop": {}},
        {},
        {"contentBlockDelta": "text"},
        {"bad name": {}},
        {"metadata": {}, INVOCATION_METRICS: {"note": "text that would pass unread"}},
        [1],
    ],
)
def test_a_named_chunk_that_names_no_one_event_is_an_error(event: object) -> None:
    payload = json.dumps({"bytes": base64.b64encode(json.dumps(event).encode()).decode()}).encode()
    with pytest.raises(EventStreamError):
        AwsFraming(NAMED_CHUNKS).to_sse(encode_message(string_headers(CHUNK_HEADERS), payload))


def test_a_chunk_payload_on_several_lines_is_one_event() -> None:
    """Line ends between a payload's JSON tokens do not end the SSE event it becomes."""
    payload = json.dumps({"bytes": base64.b64encode(b'{\r\n"type":\r"ping"\n}').decode()}).encode()
    framing = AwsFraming(CHUNKS)
    (event,) = SSEParser().feed(framing.to_sse(encode_message(string_headers(CHUNK_HEADERS), payload)))
    assert json.loads(event.data or "") == {"type": "ping"}


@pytest.mark.parametrize(
    ("headers", "payload"),
    [
        (CHUNK_HEADERS, b'{"bytes": "not base64!"}'),
        (CHUNK_HEADERS, b"[1]"),
        (CHUNK_HEADERS, b"not json"),
        ({":event-type": "bad\nname", ":message-type": "event"}, b"{}"),
    ],
)
def test_a_chunk_that_does_not_read_is_an_error(headers: dict[str, str], payload: bytes) -> None:
    with pytest.raises(EventStreamError):
        AwsFraming(CHUNKS).to_sse(encode_message(string_headers(headers), payload))


def test_the_content_type_is_recognised() -> None:
    assert is_aws_event_stream("application/vnd.amazon.eventstream")
    assert is_aws_event_stream("Application/VND.amazon.eventstream; charset=utf-8")
    assert not is_aws_event_stream("text/event-stream") and not is_aws_event_stream(None)
