"""An event read by its shape (the bytes of an earlier event but for its one text and its counts) is read
as if read whole.

A session that knows an event's shape skips what that shape already answered: reading keys twice, the
places and key spellings clients read otherwise, the residual scan of strings it read as nothing. Random
streams of one dialect's text events, whose counts (a sequence number, token counts) change every event,
with now and then an event that differs elsewhere than its text (a secret in another field, a repeated
key, an escape, an index clients read otherwise, another place, the text spelled as another field's
value, another event name, a count written as a string, an object, a secret, a huge, negative or
fractional number, or twice), are read by a session that keeps shapes and by one that never does,
filtering (as enforce mode) and reading back what was sent (as the read-back), and observing (as observe
mode): each must send the same bytes, read the same completions, other readings, secrets and
ambiguities. Every set of paths a session takes from a shape is checked against its dialect's reading.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.dialects import Anthropic, Dialect, Gemini, OpenAIChat, OpenAIResponses, StreamFilters
from proxy.dialects import stream as stream_module
from proxy.dialects.stream import StreamSession
from proxy.scanning.redact import StreamRedactor
from proxy.scanning.residual import JsonScan, Path
from proxy.scanning.rulepack import Scanner, load_pack, pack_path
from proxy.wire.sse import SSEEvent

SECRETS = Scanner([load_pack(pack_path("secrets"))])
KEY = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
MODEL = "gpt-4o-mini"


def chat(text: str, count: int = 0) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000 + count // 7,
        "model": MODEL,
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }


def responses(text: str, count: int = 0) -> dict[str, Any]:
    return {
        "type": "response.output_text.delta",
        "sequence_number": count,
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "model": MODEL,
        "delta": text,
    }


def anthropic(text: str, count: int = 0) -> dict[str, Any]:
    return {
        "type": "content_block_delta",
        "index": 0,
        "model": MODEL,
        "delta": {"type": "text_delta", "text": text},
    }


def gemini(text: str, count: int = 0) -> dict[str, Any]:
    return {
        "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}],
        "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": count, "totalTokenCount": 9 + count},
        "modelVersion": MODEL,
    }


ANTHROPIC_START = (
    b'event: message_start\ndata: {"type": "message_start", "message": {"id": "msg_1", "type": "message", '
    b'"role": "assistant", "model": "claude", "content": [], '
    b'"usage": {"input_tokens": 1, "output_tokens": 1}}}\n\n'
    b'event: content_block_start\ndata: {"type": "content_block_start", "index": 0, '
    b'"content_block": {"type": "text", "text": ""}}\n\n'
)
RESPONSES_START = (
    b'event: response.output_item.added\ndata: {"type": "response.output_item.added", "output_index": 0, '
    b'"item": {"type": "message", "id": "msg_1", "role": "assistant", "content": []}}\n\n'
    b'event: response.content_part.added\ndata: {"type": "response.content_part.added", "item_id": "msg_1", '
    b'"output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": ""}}\n\n'
)
DIALECTS: dict[str, tuple[Callable[[], Dialect], Callable[[str, int], dict[str, Any]], str | None, bytes]] = {
    "openai_chat": (OpenAIChat, chat, None, b""),
    "openai_responses": (OpenAIResponses, responses, "response.output_text.delta", RESPONSES_START),
    "anthropic": (Anthropic, anthropic, "content_block_delta", ANTHROPIC_START),
    "gemini": (lambda: Gemini(model_hint="gemini-2.5-flash"), gemini, None, b""),
}

VARIANTS = [
    "text spelled with an escape",
    "text spelled with an escape, secret elsewhere",
    "plain",
    "plain",
    "plain",
    "secret elsewhere",
    "repeated key",
    "escaped",
    "odd index",
    "as model",
    "renamed",
    "count as string",
    "count as object",
    "count as secret",
    "count huge",
    "count negative",
    "count fractional",
    "count repeated",
    "next place",
    "last place",
]
COUNTS = {
    "count as string": '"7"',
    "count as object": '{"n": 7}',
    "count as secret": f'"{KEY}"',
    "count huge": "1" + "0" * 5000,
    "count negative": "-7",
    "count fractional": "7.0",
    "count repeated": f'7, "{{key}}": "{KEY}"',
}
"""What an event's count (a key of ``COUNTED_KEYS``) is written as, in place of its digits."""
COUNTED_KEYS = ("created", "sequence_number", "candidatesTokenCount", "index")


def event(
    build: Callable[[str, int], dict[str, Any]], name: str | None, text: str, variant: str, count: int = 0
) -> bytes:
    spelled = variant.startswith("text spelled with an escape")
    payload = build("@text@" if spelled else MODEL if variant == "as model" else text, count)
    if variant.endswith("secret elsewhere"):
        payload["model"] = KEY
    if variant in ("next place", "last place"):
        payload["index" if "index" in payload else "output_index"] = 1 if variant == "next place" else -1
        for key in ("choices", "candidates"):
            if key in payload:
                payload[key][0]["index"] = 1 if variant == "next place" else -1
    if variant == "odd index":
        payload["index" if "index" in payload else "output_index"] = 0.0
        if "choices" in payload:
            payload["choices"][0]["index"] = "0"
        if "candidates" in payload:
            payload["candidates"][0]["index"] = True
    data = json.dumps(payload, ensure_ascii=variant == "escaped")
    if variant == "repeated key":
        data = data.replace('"model": ', f'"model": "{KEY}", "model": ', 1)
    if variant == "escaped":
        data = data.replace('"model"', '"mod\\u0065l"', 1)
    if spelled:
        # The model's name, as the text: where it is spelled plainly, it is the other field.
        data = data.replace('"@text@"', f'"{MODEL.replace("-", "\\u002d")}"')
    if variant == "renamed" and name is not None:
        name = "unnamed.event"
    if variant in COUNTS:
        key = next(key for key in COUNTED_KEYS if f'"{key}": ' in data)
        at = data.index(f'"{key}": ') + len(key) + 4
        digits = len(data[at:]) - len(data[at:].lstrip("0123456789"))
        data = data[:at] + COUNTS[variant].replace("{key}", key) + data[at + digits :]
    head = b"" if name is None else f"event: {name}\n".encode()
    return head + f"data: {data}\n\n".encode()


def sessions(
    dialect: Dialect, *, shapes: bool, filters: bool = True
) -> tuple[StreamSession, StreamSession, JsonScan, JsonScan]:
    sending = JsonScan(SECRETS, lambda rule: filters, rewrites=filters)
    reading = JsonScan(SECRETS, lambda rule: False, rewrites=False)
    text_filter = (lambda where: StreamRedactor(SECRETS)) if filters else None
    sender = dialect.stream_session(StreamFilters(text_filter=text_filter, residual=sending))
    reader = dialect.stream_session(StreamFilters(residual=reading))
    sender.keep_sent()
    if shapes:
        for session in (sender, reader):
            check_handled_of(session)
    else:
        for session in (sender, reader):
            session._shape_of = lambda event: None  # type: ignore[method-assign]
            session._new_shape = lambda event, payload, handled: None  # type: ignore[method-assign]
    return sender, reader, sending, reading


def relay(make: Callable[[], Dialect], chunks: list[bytes], *, shapes: bool) -> tuple[Any, ...]:
    """What a filtering session sends and its read-back reads, and what an observing session (observe
    mode: no filter, every event read as each reading of it gives it) reads of the same chunks."""
    sender, reader, sending, reading = sessions(make(), shapes=shapes)
    observer, _, _, observing = sessions(make(), shapes=shapes, filters=False)
    sent = b""
    for chunk in [*chunks, b""]:
        out = sender(chunk)
        for piece in sender.take_sent():
            reader.read_sent(piece)
        sent += out
        observer(chunk)
    reader.finish()
    return (
        sent,
        sender.completion,
        reader.completion,
        observer.completion,
        sender.ambiguities,
        reader.ambiguities,
        observer.ambiguities,
        reader.other_readings(),
        observer.other_readings(),
        sender.notes,
        [(found.where, found.rule.id, found.fingerprint) for found in sending.found],
        [(found.where, found.rule.id, found.fingerprint) for found in reading.found],
        [(found.where, found.rule.id, found.fingerprint) for found in observing.found],
    )


TEXTS = st.lists(st.sampled_from([*'ab AZ09_-."\\\n\u00e9\u2028', "ghp_", MODEL]), max_size=8).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(list(DIALECTS)),
    events=st.lists(st.tuples(TEXTS, st.sampled_from(VARIANTS)), min_size=1, max_size=24),
    together=st.lists(st.integers(1, 4), min_size=1, max_size=24),
)
def test_reading_by_shape_reads_as_reading_whole(
    name: str, events: list[tuple[str, str]], together: list[int]
) -> None:
    make, build, event_name, start = DIALECTS[name]
    written = [event(build, event_name, text, variant, count) for count, (text, variant) in enumerate(events)]
    chunks = [start] if start else []
    at = 0
    for size in together * len(written):
        if at >= len(written):
            break
        chunks.append(b"".join(written[at : at + size]))
        at += size
    assert relay(make, chunks, shapes=True) == relay(make, chunks, shapes=False)


def count_skeletons(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one each time an event is taken apart (``_skeleton``)."""
    made: list[int] = []
    skeleton = stream_module._skeleton

    def counted(payload: Any, handled: Collection[Path]) -> dict[str, Any] | None:
        made.append(1)
        return skeleton(payload, handled)

    monkeypatch.setattr(stream_module, "_skeleton", counted)
    return made


def check_handled_of(session: StreamSession) -> list[int]:
    """Makes ``session`` check every set of paths it filters as text against the dialect's own reading of
    the event; returns a list that grows by one for each set taken from a shape."""
    taken: list[int] = []
    handled_of = session._handled_of

    def checked(event: SSEEvent, payload: Any, read: Any) -> Collection[tuple[str | int, ...]]:
        handled = handled_of(event, payload, read)
        assert set(handled) == set(session._handled(event, payload))
        if read is not None and read.shape is not None and handled is read.shape.handled:
            taken.append(1)
        return handled

    session._handled_of = checked  # type: ignore[method-assign]
    return taken


def test_a_text_spelled_otherwise_than_another_field_sets_no_shape() -> None:
    """The event's text is the model's name spelled with an escape: the name's plain spelling is the other
    field's, so the next event, the same but for that field, is not taken for one of its shape."""
    for name, (make, build, event_name, start) in DIALECTS.items():
        written = [event(build, event_name, "", "text spelled with an escape")] * 30
        written.append(event(build, event_name, "", "text spelled with an escape, secret elsewhere"))
        chunks = [start, *written] if start else written
        read = relay(make, chunks, shapes=True)
        assert [rule for _, rule, _ in read[-3]] == ["github-pat"], name
        assert read == relay(make, chunks, shapes=False), name


@pytest.mark.parametrize("name", ["openai_chat", "openai_responses", "gemini"])
def test_a_stream_of_one_shape_is_read_by_it(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shortcut is taken: once the residual scan's fields stand still (each field's text is 256
    characters of repeats: a field of 5 characters takes 52 events), the events of a stream of one shape,
    whose counts change every event, are not taken apart for it in either session, and a secret in
    another field of one of them, or where a count was, is still found and redacted."""
    make, build, event_name, start = DIALECTS[name]
    skeletons = count_skeletons(monkeypatch)
    sender, reader, sending, reading = sessions(make(), shapes=True)
    taken = [check_handled_of(session) for session in (sender, reader)]
    # Numbers of four digits: a run of numbers of two or three, which may be a key written as the codes of
    # its characters, is held by the stream redactor until it ends, and these events would be rewritten.
    words = [f"word{1000 + number} " for number in range(200)]
    written = [event(build, event_name, words[number], "plain", number) for number in range(200)]
    written[190] = event(build, event_name, words[190], "secret elsewhere", 190)
    written[195] = event(build, event_name, words[195], "count as secret", 195)
    sent = b""
    taken_apart: list[int] = []
    for number, chunk in enumerate([*written, b""]):
        if number in (100, 190):
            taken_apart.append(len(skeletons))
        if start and number == 0:
            sent += sender(start)
        sent += sender(chunk)
        for piece in sender.take_sent():
            reader.read_sent(piece)
    assert taken_apart[1] - taken_apart[0] < 10
    assert all(len(paths) > 150 for paths in taken)  # the paths filtered as text, too, taken from the shape
    assert KEY not in sent.decode()
    assert [found.rule.id for found in sending.found] == ["github-pat", "github-pat"]
    assert reading.found == []


def test_a_text_that_also_ends_a_key_sets_no_shape() -> None:
    """The text ``:`` spelled ``":"`` also ends the key before it (``"content":":"``): no shape is
    anchored in the key, so a later event that is no JSON at all is read as no JSON, as without shapes."""
    plain = b'data: {"choices":[{"index":0,"delta":{"content":":"}}]}\n\n'
    broken = b'data: {"choices":[{"index":0,"delta":{"content"zz":"}}]}\n\n'
    chunks = [plain, plain, broken, plain]
    assert relay(OpenAIChat, chunks, shapes=True) == relay(OpenAIChat, chunks, shapes=False)


def test_shapes_are_made_for_a_bounded_number_of_event_names() -> None:
    """An upstream that names every event anew makes a session keep no more than a few dozen names for
    its shapes, however long the stream, and its events are read as without shapes."""
    chunks = [
        f"event: kind{number}\ndata: ".encode()
        + json.dumps({**responses(f"word{number} "), "item_id": f"msg_{number}"}).encode()
        + b"\n\n"
        for number in range(400)
    ]
    sender, *_ = sessions(OpenAIResponses(), shapes=True)
    for chunk in chunks:
        sender(chunk)
    assert len(sender._fruitless) <= stream_module._SHAPED_EVENT_NAMES
    assert relay(OpenAIResponses, chunks, shapes=True) == relay(OpenAIResponses, chunks, shapes=False)


def test_the_events_kept_to_skip_rereading_are_bounded_however_many_kinds_a_stream_names() -> None:
    """An upstream that gives event after event a type of its own makes a session keep the strings of a
    few kinds' last events, not one for each kind; an event of a kind no longer kept is read again, its
    secret found. (An event is kept once its reading finds nothing new: here, after some sixty alike.)"""
    sender, _, sending, _ = sessions(OpenAIResponses(), shapes=True)
    for number in range(40):
        event = json.dumps({**responses("word "), "type": f"kind{number}"}).encode()
        for _ in range(60):
            sender(b"data: " + event + b"\n\n")
    assert 0 < len(sender._skeletons) <= stream_module._SKELETON_KINDS
    sender(b"data: " + json.dumps({**responses("word "), "type": "kind0", "note": KEY}).encode() + b"\n\n")
    assert [found.rule.id for found in sending.found] == ["github-pat"]


@pytest.mark.parametrize("name", list(DIALECTS))
def test_a_place_is_never_read_as_a_count(name: str) -> None:
    """An index names a place, whose highest value some clients read -1 as: an event of a known shape
    that names another place is read in full, so a later -1 is read at the same place as without
    shapes."""
    make, build, event_name, start = DIALECTS[name]
    written = [event(build, event_name, f"word{number} ", "plain", number) for number in range(4)]
    written += [
        event(build, event_name, "next ", "next place", 4),
        event(build, event_name, "last", "last place", 5),
    ]
    chunks = [start, *written] if start else written
    assert relay(make, chunks, shapes=True) == relay(make, chunks, shapes=False)


def test_a_long_event_sets_no_shape() -> None:
    """A shape's pattern is compiled and kept in a cache every session shares: events longer than a
    delta ever is get none, and read as without shapes."""
    written = [event(chat, None, f"{number}" + "long text " * 500, "plain", number) for number in range(6)]
    sender, *_ = sessions(OpenAIChat(), shapes=True)
    for chunk in written:
        sender(chunk)
    assert not sender._shapes
    short = [event(chat, None, f"word{number} ", "plain", number) for number in range(6)]
    for chunk in short:
        sender(chunk)
    assert sender._shapes
    assert relay(OpenAIChat, written, shapes=True) == relay(OpenAIChat, written, shapes=False)


@pytest.mark.parametrize("name", ["openai_chat", "openai_responses", "gemini"])
def test_an_event_is_taken_apart_only_where_its_reading_may_be_skipped(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a stream's first events grow their fields' text, no event's reading can be skipped, and
    events are not taken apart for it (``_skeleton``): only after a reading that found nothing and moved
    nothing. The stream is sent, read back and observed as it is without shapes, a secret among those
    events found."""
    make, build, event_name, start = DIALECTS[name]
    made = count_skeletons(monkeypatch)
    sender, _, sending, _ = sessions(make(), shapes=True)
    written = [event(build, event_name, f"word{1000 + number} ", "plain", number) for number in range(30)]
    written[20] = event(build, event_name, "word1020 ", "secret elsewhere", 20)
    chunks = [start, *written] if start else written
    for chunk in chunks:
        sender(chunk)
    assert len(made) < len(chunks) // 3  # one for each event, were each taken apart before it is read
    assert [found.rule.id for found in sending.found] == ["github-pat"]
    assert relay(make, chunks, shapes=True) == relay(make, chunks, shapes=False)


@pytest.mark.parametrize("name", ["openai_chat", "openai_responses", "gemini"])
def test_a_stream_read_back_piece_by_piece_keeps_nothing_of_the_events_it_read(name: str) -> None:
    """The read-back reads what was sent piece by piece (``read_sent``): what it learnt of each event is
    let go once the event is read, however long the stream, where it was kept for the stream's life."""
    make, build, event_name, start = DIALECTS[name]
    sender, reader, _, _ = sessions(make(), shapes=True)
    chunks = [event(build, event_name, f"word{number} ", "plain", number) for number in range(300)]
    for chunk in [*([start] if start else []), *chunks]:
        sender(chunk)
        for piece in sender.take_sent():
            reader.read_sent(piece)
        assert len(reader._read_as) == 0
    assert reader.events > 0
