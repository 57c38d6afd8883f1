"""The incremental SSE parser: framing, fields, line ends and re-serialisation."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from proxy.wire.sse import Serialised, SSEEvent, SSEParser, encode_text, is_serialised, serialise, write_event


def parse_all(stream: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    events = parser.feed(stream)
    last_events, tail = parser.finish()
    assert tail == b""
    return events + last_events


def test_event_is_returned_as_soon_as_its_blank_line_arrives() -> None:
    """An event comes out of the chunk that completes it, not later."""
    parser = SSEParser()
    assert parser.feed(b"data: hel") == []
    assert parser.feed(b"lo\n") == []
    events = parser.feed(b"\ndata: next")
    assert [event.data for event in events] == ["hello"]


def test_multiline_data_is_joined_with_newlines() -> None:
    """Several data lines make one value joined by LF."""
    (event,) = parse_all(b"data: first\ndata:second\ndata\n\n")
    assert event.data == "first\nsecond\n"


def test_event_id_and_retry_fields_are_read() -> None:
    """event, id and retry fields land in the event; unknown fields are ignored."""
    (event,) = parse_all(b"event: message_start\nid: 42\nretry: 1500\nfoo: bar\ndata: {}\n\n")
    assert (event.event, event.id, event.retry, event.data) == ("message_start", "42", 1500, "{}")
    assert event.type == "message_start"


def test_comment_only_block_is_a_keepalive_without_data() -> None:
    """A comment block yields an event with no data so its bytes can still be forwarded."""
    events = parse_all(b": ping\n\ndata: x\n\n")
    assert [event.data for event in events] == [None, "x"]
    assert events[0].raw == b": ping\n\n"


def test_crlf_and_cr_line_ends_are_accepted() -> None:
    """CRLF and bare CR end lines just like LF."""
    assert [event.data for event in parse_all(b"data: a\r\n\r\ndata: b\r\rdata: c\n\n")] == ["a", "b", "c"]


def test_crlf_split_between_chunks_is_one_line_end() -> None:
    """A CR at the end of a chunk followed by LF in the next is one line end, not two."""
    parser = SSEParser()
    events = parser.feed(b"data: a\r")
    events += parser.feed(b"\ndata: b\r\n\r\n")
    assert [event.data for event in events] == ["a\nb"]


def test_byte_order_mark_is_skipped() -> None:
    """A leading UTF-8 BOM is not part of the first field name."""
    (event,) = parse_all(b"\xef\xbb\xbfdata: x\n\n")
    assert event.data == "x"


def test_unterminated_event_is_returned_by_finish() -> None:
    """finish() hands back the bytes of an event that never ended."""
    parser = SSEParser()
    assert parser.feed(b"data: done\n\ndata: cut") != []
    assert parser.finish() == ([], b"data: cut")


def test_raw_bytes_cover_the_whole_input() -> None:
    """Concatenated raw bytes of all events reproduce the input exactly."""
    stream = b": hi\n\nevent: a\r\ndata: 1\r\n\r\n\n\ndata: 2\n\n"
    assert b"".join(event.raw for event in parse_all(stream)) == stream


def test_serialise_round_trips_through_the_parser() -> None:
    """A serialised event parses back to the same fields."""
    original = SSEEvent(data='{"a":1}\nsecond', event="delta", id="7", retry=10)
    (parsed,) = parse_all(serialise(original))
    assert (parsed.data, parsed.event, parsed.id, parsed.retry) == (original.data, "delta", "7", 10)


def test_a_json_event_is_written_as_bytes_that_say_it() -> None:
    """An event written from JSON data reads back as itself, and says so; bytes made from those bytes
    (replaced, sliced, joined) are plain bytes, which a reader parses."""
    written = serialise(SSEEvent(data='{"text":"h\u00e9llo"}', event="delta", id="7", retry=10))
    assert type(written) is Serialised
    assert parse_all(written) == [written.reading()]
    for derived in (written.replace(b"h", b"H"), written.replace(b"?", b"!"), written[:], written + b""):
        assert type(derived) is bytes
    assert type(b"".join([written])) is bytes


def test_an_event_is_known_to_be_framed_as_serialise_frames_it_by_its_bytes() -> None:
    """Bytes the parser reads are as ``serialise`` writes them, or not (other spacing, CRLF, a comment)."""
    for stream, framed in [
        (b"event: delta\ndata: {}\n\n", True),
        (b"event:delta\ndata: {}\n\n", False),
        (b"data: {}\r\n\r\n", False),
        (b": note\ndata: {}\n\n", False),
    ]:
        (event,) = parse_all(stream)
        assert is_serialised(event) is framed


@pytest.mark.parametrize(
    "event",
    [
        SSEEvent(data='"\udcff"'),  # a byte that was not UTF-8, written back as that byte
        SSEEvent(data='"\ud800"'),  # a JSON escape of a lone surrogate
        SSEEvent(data="a\rb"),
        SSEEvent(data="x", event=""),
        SSEEvent(data="x", event="a\nb"),
        SSEEvent(data="x", id="1\x002"),
        SSEEvent(data="x", id="1\r"),
        SSEEvent(data=None, event="ping"),
    ],
)
def test_an_event_the_parser_reads_otherwise_is_written_as_plain_bytes(event: SSEEvent) -> None:
    """Fields the parser would read otherwise than they were written never make bytes that claim them."""
    assert type(serialise(event)) is bytes


FIELD_TEXT = st.text(
    alphabet=st.one_of(st.characters(), st.sampled_from(["\r", "\n", "\x00", "\ud800", "\udcff", "\ufeff"])),
    max_size=12,
)


@given(
    st.one_of(st.none(), FIELD_TEXT),
    st.one_of(st.none(), FIELD_TEXT),
    st.one_of(st.none(), FIELD_TEXT),
    st.one_of(st.none(), st.integers(min_value=-3, max_value=10**6)),
)
def test_bytes_that_say_their_event_read_back_as_it(
    data: str | None, name: str | None, event_id: str | None, retry: int | None
) -> None:
    """Whatever the fields hold (line ends, NUL, lone surrogates, nothing), bytes ``serialise`` marks as
    its event's are read by the parser as exactly that event."""
    written = serialise(SSEEvent(data=data, event=name, id=event_id, retry=retry))
    if type(written) is Serialised:
        assert parse_all(written) == [written.reading()]


@given(
    st.one_of(st.none(), FIELD_TEXT),
    st.one_of(st.none(), FIELD_TEXT),
    st.one_of(st.none(), FIELD_TEXT),
    st.one_of(st.none(), st.integers(min_value=-3, max_value=10**6)),
)
@example('{"a":1}\n{"b":2}', None, None, None)
@example('{"a":1}', "delta", None, None)
def test_an_event_is_written_as_its_fields_lines(
    data: str | None, name: str | None, event_id: str | None, retry: int | None
) -> None:
    """Written from its fields or from the event, an event is its name, id, retry and data lines, one a
    line, and a blank line: the one-line data event written without splitting its lines is no other."""
    lines = [f"{field}: {value}" for field, value in (("event", name), ("id", event_id), ("retry", retry))]
    lines = [line for line, value in zip(lines, (name, event_id, retry), strict=True) if value is not None]
    lines += [] if data is None else [f"data: {line}" for line in data.split("\n")]
    wire = encode_text("\n".join(lines) + "\n\n")
    written = write_event(data, name, event_id, retry)
    assert written == wire == serialise(SSEEvent(data=data, event=name, id=event_id, retry=retry))
    if type(written) is Serialised:
        assert written.reading() == SSEEvent(data=data, event=name, id=event_id, retry=retry, raw=written)


@given(
    st.lists(
        st.text(
            alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=20
        ),
        min_size=1,
        max_size=6,
    ),
    st.lists(st.integers(min_value=0, max_value=400), max_size=12),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
)
def test_any_chunking_gives_the_same_events(values: list[str], cuts: list[int], line_end: bytes) -> None:
    """Cutting the byte stream anywhere changes neither the events nor their raw bytes."""
    stream = b"".join(b"data: " + value.encode() + line_end + line_end for value in values)
    whole = parse_all(stream)
    assert feed_in_pieces(SSEParser(), stream, cuts) == whole
    assert [event.data for event in whole] == values


def feed_at(parser: SSEParser, stream: bytes, cuts: list[int]) -> list[SSEEvent]:
    """The events of ``stream`` fed in pieces cut at ``cuts``, before ``finish``."""
    events: list[SSEEvent] = []
    previous = 0
    for cut in sorted(min(cut, len(stream)) for cut in cuts):
        events += parser.feed(stream[previous:cut])
        previous = cut
    return events + parser.feed(stream[previous:])


def feed_in_pieces(parser: SSEParser, stream: bytes, cuts: list[int]) -> list[SSEEvent]:
    events = feed_at(parser, stream, cuts)
    last_events, tail = parser.finish()
    assert tail == b""
    return events + last_events


def test_event_over_the_cap_is_handed_on_as_it_arrives() -> None:
    """An event that never ends is not held: every byte comes back from the feed that brought it."""
    parser = SSEParser(max_event_bytes=64)
    given = b"data: " + b"x" * 100
    handed_on = b"".join(event.raw for event in parser.feed(given))
    for _ in range(50):
        piece = b"y" * 1000
        events = parser.feed(piece)
        assert all(event.oversized and event.data is None for event in events)
        handed_on += b"".join(event.raw for event in events)
        given += piece
    assert handed_on == given
    assert parser.oversized_events == 1
    assert parser.finish() == ([], b"")


def test_parsing_resumes_after_the_oversized_event_ends() -> None:
    """The blank line that ends an oversized event is found, and the next event is read normally."""
    parser = SSEParser(max_event_bytes=16)
    events = parser.feed(b"event: big\ndata: " + b"z" * 40)
    events += parser.feed(b"z" * 40 + b"\n\ndata: next\n\n")
    oversized = [event for event in events if event.oversized]
    assert b"".join(event.raw for event in oversized) == b"event: big\ndata: " + b"z" * 80 + b"\n\n"
    assert [event.data for event in events if not event.oversized] == ["next"]


def test_events_within_the_cap_are_unaffected() -> None:
    """A cap above every pending event changes nothing."""
    stream = b"data: one\n\ndata: two\n\n"
    assert [event.data for event in feed_in_pieces(SSEParser(max_event_bytes=16), stream, [3, 12])] == [
        "one",
        "two",
    ]


def test_non_positive_cap_is_rejected() -> None:
    """A cap of zero bytes is a configuration error."""
    with pytest.raises(ValueError, match="max_event_bytes"):
        SSEParser(max_event_bytes=0)


@given(
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
    st.integers(min_value=1, max_value=300),
    st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_oversized_event_boundary_survives_any_chunking(line_end: bytes, size: int, cuts: list[int]) -> None:
    """However the bytes are cut, the oversized event's pieces cover exactly its bytes and the events
    after it are read as if it had been small."""
    big = b"data: " + b"q" * size + line_end + b"data: more" + line_end + line_end
    after = b"id: 7" + line_end + b"data: after" + line_end + line_end + b": ping" + line_end + line_end
    events = feed_in_pieces(SSEParser(max_event_bytes=32), big + after, cuts)
    oversized = b"".join(event.raw for event in events if event.oversized)
    rest = [event for event in events if not event.oversized]
    expected_rest = parse_all(after)
    if oversized:
        assert oversized == big
        assert rest == expected_rest
    else:
        # Every cut left the whole event in one chunk: it was never held, so it was read normally.
        assert [event.data for event in rest] == ["q" * size + "\nmore", "after", None]


BLOCKS = st.sampled_from(
    [
        b"data: plain\n\n",
        b"data:no space\n\n",
        b"data:  two spaces\n\n",
        b"data: \xff\xfe not UTF-8\n\n",
        b'data: {"a": "\xe2\x82\xac"}\n\n',
        b"data: \n\n",
        b"data\n\n",
        b"data: first\ndata: second\n\n",
        b"data: crlf\r\n\r\n",
        b"data: cr\r\r",
        b"data: split\r\ndata: ends\n\n",
        b": comment\n\n",
        b"event: named\ndata: x\n\n",
        b"event:\ndata: no name\n\n",
        b"event:tight\ndata:tight\n\n",
        b"event:  two spaces\ndata: x\n\n",
        b"event: \xff not UTF-8\ndata: x\n\n",
        b"event: a:b\ndata: colon in the name\n\n",
        b"event: one\nevent: two\ndata: x\n\n",
        b"event: a name alone\n\n",
        b"event: named\ndata: a\ndata: b\n\n",
        b"event: crlf\r\ndata: x\n\n",
        b"event: unfinished\ndata: x",
        b"eventual: not a name\ndata: x\n\n",
        b"data: x\nid: 9\n\n",
        b"\n",
        b"\n\n",
        b"datum: not data\n\n",
        b"data: unfinished",
        b"data: line\n",
        b"\xef\xbb\xbfdata: bom\n\n",
        b"data: " + b"L" * 70 + b"\n\n",
    ]
)


def feed_bytewise(parser: SSEParser, stream: bytes) -> list[SSEEvent]:
    events: list[SSEEvent] = []
    for at in range(len(stream)):
        events += parser.feed(stream[at : at + 1])
    last_events, tail = parser.finish()
    return [*events, *last_events, SSEEvent(data=None, raw=tail)]


def feed_chunked(parser: SSEParser, stream: bytes, cuts: list[int], lead: bytes) -> list[SSEEvent]:
    """``lead`` (the stream's first bytes) in a chunk of its own, then the rest cut at ``cuts``."""
    events = parser.feed(lead) + feed_at(parser, stream, cuts)
    last_events, tail = parser.finish()
    return [*events, *last_events, SSEEvent(data=None, raw=tail)]


class LineReader(SSEParser):
    """The parser without its shortcut for whole ``data`` events: every chunk goes to the line reader."""

    @staticmethod
    def _read_data_events(chunk: bytes, events: list[SSEEvent]) -> bytes:
        return chunk


@given(
    st.lists(BLOCKS, max_size=12),
    st.lists(st.integers(min_value=0, max_value=600), max_size=10),
    st.sampled_from([64, 1 << 20]),
    st.sampled_from(
        [
            b"data: first\n\n",
            b"",
            b"\xef\xbb\xbf",
            b"\xef",
            b"\xef\xbb\xbfdata: x\n\n",
            b"event: first\ndata: x\n\n",
            b"\xef\xbb\xbfevent: bom\ndata: x\n\n",
        ]
    ),
)
def test_whole_events_in_one_chunk_read_as_the_line_reader_reads_them(
    blocks: list[bytes], cuts: list[int], cap: int, lead: bytes
) -> None:
    """Chunks that bring whole ``data`` events, named or not, are read by a shortcut: whatever else the
    chunks hold (CR and CRLF line ends, several data lines, names, comments, other fields, blank lines
    alone, bytes not UTF-8, an event cut anywhere or longer than the cap, a byte order mark), every event
    and every byte comes out as the line reader gives them from the same chunks, and, under a cap no
    event reaches, as it gives them from one byte at a time."""
    stream = b"".join(blocks)
    for chunks in (cuts, []):
        expected = feed_chunked(LineReader(max_event_bytes=cap), stream, chunks, lead)
        assert feed_chunked(SSEParser(max_event_bytes=cap), stream, chunks, lead) == expected
    if cap > len(stream):
        assert feed_chunked(SSEParser(), stream, cuts, lead) == feed_bytewise(SSEParser(), lead + stream)


def test_an_event_over_a_mebibyte_in_one_chunk_is_read_whole() -> None:
    """A complete event longer than the cap that arrives in one chunk is read, as the line reader reads
    it, and the events around it too."""
    big = b"data: " + b"x" * (1 << 20) + b"\n\n"
    parser = SSEParser()
    parser.feed(b"data: a\n\n")
    events = parser.feed(big + b"data: b\n\n")
    assert [(event.data or "")[:3] for event in events] == ["xxx", "b"]
    assert b"".join(event.raw for event in events) == big + b"data: b\n\n"
    assert not any(event.oversized for event in events)
