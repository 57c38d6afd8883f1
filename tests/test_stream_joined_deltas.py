"""A secret split over a stream's text deltas at any place reaches the agent as the whole text's redaction,
in every dialect that streams text: read through the official SDKs' own accumulators, the text the agent
holds is ``scan_and_redact`` of the text the upstream sent."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from openai.lib.streaming._assistants import accumulate_event
from openai.lib.streaming._deltas import accumulate_delta
from openai.types.beta import AssistantStreamEvent
from pydantic import TypeAdapter

from proxy.dialects import BedrockConverse, Dialect, Generic, StreamFilters, TextFilter, stream
from proxy.dialects.generic import delta_carrying, joined_strings
from proxy.scanning.redact import StreamRedactor, scan_and_redact
from proxy.wire.sse import SSEParser, write_event
from tests.test_streaming import (
    SECRETS,
    TEXT_STREAMS,
    payloads,
    run,
    sse,
)

GITHUB_TOKEN = "ghp_" + "Qw3rTy7uIo9pAs2dFg4hJk6lZx8cVb1nMq5W"
AWS_KEY = "AKIA" + "Z7QW3RTY2UIO4PAS"
ANSWER = f"Use {AWS_KEY} with {GITHUB_TOKEN} now."
ASSISTANT_EVENT = TypeAdapter[Any](AssistantStreamEvent)


def assistants_text_stream(pieces: list[str]) -> bytes:
    """A run streaming one message, a delta a piece, as the Assistants API streams it."""
    message = {
        "id": "msg_1",
        "object": "thread.message",
        "created_at": 1,
        "thread_id": "thread_1",
        "role": "assistant",
        "status": "in_progress",
        "content": [],
        "attachments": [],
        "metadata": {},
        "assistant_id": "asst_1",
        "run_id": "run_1",
    }
    text = {"value": "".join(pieces), "annotations": []}
    completed = {**message, "status": "completed", "content": [{"type": "text", "text": text}]}
    return (
        sse(message, "thread.message.created")
        + b"".join(
            sse(
                {
                    "id": "msg_1",
                    "object": "thread.message.delta",
                    "delta": {"content": [{"index": 0, "type": "text", "text": {"value": piece}}]},
                },
                "thread.message.delta",
            )
            for piece in pieces
        )
        + sse(completed, "thread.message.completed")
        + b"event: done\ndata: [DONE]\n\n"
    )


def assistants_sdk_view(stream: bytes) -> tuple[str, list[str]]:
    """The message the SDK's event handler holds once the stream ends (``current_message_snapshot``)."""
    parser = SSEParser()
    events = parser.feed(stream) + parser.finish()[0]
    snapshot = None
    for event in events:
        if event.event == "done":
            break
        typed = ASSISTANT_EVENT.validate_python({"event": event.event, "data": json.loads(event.data or "")})
        if event.event == "thread.message.delta":
            snapshot, _ = accumulate_event(event=typed, current_message_snapshot=snapshot)
        elif event.event == "thread.message.created":
            snapshot = typed.data
    assert snapshot is not None
    return "".join(block.text.value for block in snapshot.content if block.type == "text"), []


def chat_chunks_text_stream(pieces: list[str]) -> bytes:
    """Chat completion chunks on a route no dialect knows (a gateway's own path)."""
    envelope = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse({**envelope, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    return b"".join(chunk({"content": piece}) for piece in pieces) + chunk({}, "stop") + b"data: [DONE]\n\n"


def chunks_view(stream: bytes) -> tuple[str, list[str]]:
    """The chunks joined as the OpenAI SDK joins deltas (``accumulate_delta``)."""
    joined: dict[object, object] = {}
    for _, payload in payloads(stream):
        joined = accumulate_delta(joined, payload)
    choices: Any = joined["choices"]
    return choices[0]["delta"].get("content") or "", []


def converse_text_stream(pieces: list[str]) -> bytes:
    """A Converse stream's events as the AWS event stream's messages read as SSE (``AwsFraming``)."""
    events: list[tuple[str, dict[str, Any]]] = [("messageStart", {"role": "assistant"})]
    events += [("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}}) for piece in pieces]
    events += [("contentBlockStop", {"contentBlockIndex": 0}), ("messageStop", {"stopReason": "end_turn"})]
    return b"".join(sse(payload, name) for name, payload in events)


def converse_view(stream: bytes) -> tuple[str, list[str]]:
    parser = SSEParser()
    events = parser.feed(stream) + parser.finish()[0]
    texts = [
        json.loads(event.data or "")["delta"].get("text", "")
        for event in events
        if event.event == "contentBlockDelta"
    ]
    return "".join(texts), []


def plain_text_stream(pieces: list[str]) -> bytes:
    """Events whose data is the text itself, a piece each, named as a server streaming tokens names them,
    then OpenAI's end of stream."""
    return b"".join(write_event(piece, "token") for piece in pieces) + b"data: [DONE]\n\n"


def plain_text_view(stream: bytes) -> tuple[str, list[str]]:
    """The events' data joined, as a client printing each token as it comes shows it."""
    parser = SSEParser()
    events = parser.feed(stream) + parser.finish()[0]
    return "".join(event.data or "" for event in events if event.event == "token"), []


STREAMS: dict[str, tuple[Dialect, Callable[[list[str]], bytes], Callable[[bytes], tuple[str, list[str]]]]] = {
    **TEXT_STREAMS,
    "bedrock_converse": (BedrockConverse(), converse_text_stream, converse_view),
    "assistants": (Generic(), assistants_text_stream, assistants_sdk_view),
    "chat_chunks_elsewhere": (Generic(), chat_chunks_text_stream, chunks_view),
    "plain_text_events": (Generic(), plain_text_stream, plain_text_view),
    **{
        f"plain_text_events_on_{name}": (dialect, plain_text_stream, plain_text_view)
        for name, (dialect, _, _) in TEXT_STREAMS.items()
    },
}
"""Every dialect that streams text: the dialect, a text stream of given deltas, the client's view."""


def redacting(where: str) -> TextFilter:
    return StreamRedactor(SECRETS)


def agent_reads(name: str, pieces: list[str], *, one_at_a_time: bool) -> str:
    dialect, text_stream, view = STREAMS[name]
    session = dialect.stream_session(StreamFilters(text_filter=redacting))
    stream = text_stream(pieces)
    if one_at_a_time:
        output = b"".join(session.feed(event.raw) for event in SSEParser().feed(stream)) + session.finish()
    else:
        output = run(session, stream)
    return view(output)[0]


@pytest.mark.parametrize("name", STREAMS)
def test_a_secret_split_at_any_place_reaches_the_agent_as_the_whole_texts_redaction(name: str) -> None:
    """Two deltas cut the answer at every place, three at every place with a piece of three characters
    between: read event by event or in one burst, the agent holds the whole answer's redaction."""
    whole = scan_and_redact(SECRETS, ANSWER).text
    assert AWS_KEY not in whole and GITHUB_TOKEN not in whole
    for cut in range(1, len(ANSWER)):
        in_two = [ANSWER[:cut], ANSWER[cut:]]
        in_three = [ANSWER[:cut], ANSWER[cut : cut + 3], ANSWER[cut + 3 :]]
        for pieces, one_at_a_time in ((in_two, True), (in_three, True), (in_two, False)):
            read = agent_reads(name, [piece for piece in pieces if piece], one_at_a_time=one_at_a_time)
            assert read == whole, (cut, pieces)


def test_a_deltas_strings_are_joined_at_the_place_its_index_names() -> None:
    """A delta's text joins the place its list items' ``index`` names, not where they stand; its type and
    index, what lies outside the delta and a streamed call's pieces are read within the event."""
    payload = {
        "id": "msg_1",
        "object": "thread.message.delta",
        "delta": {
            "content": [
                {"index": 2, "type": "text", "text": {"value": "AKIA", "annotations": []}},
                {"index": 0, "type": "image_file", "image_file": {"file_id": "file_1"}},
            ],
            "step_details": {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]},
        },
    }
    apart = {("delta", "step_details", "tool_calls", 0)}
    assert joined_strings(payload, apart) == [
        ("delta.content[0].text.value", "+delta.content[2].text.value", "AKIA"),
        ("delta.content[1].image_file.file_id", "+delta.content[0].image_file.file_id", "file_1"),
    ]


def test_what_a_joined_channel_held_goes_in_an_event_that_brings_it_alone() -> None:
    """The event carrying what a channel held keeps the path to its place (each item's index and type,
    the message's id and the event's kind) and nothing else a client would join twice."""
    payload = {
        "id": "msg_1",
        "object": "thread.message.delta",
        "delta": {
            "content": [
                {"index": 0, "type": "text", "text": {"value": "a", "annotations": [{"start_index": 3}]}},
                {"index": 1, "type": "text", "text": {"value": "b"}},
            ]
        },
    }
    assert delta_carrying(payload, "delta.content[1].text.value", "held") == {
        "id": "msg_1",
        "object": "thread.message.delta",
        "delta": {"content": [{"index": 1, "type": "text", "text": {"value": "held"}}]},
    }


FILLED = f"{AWS_KEY}{' ' * 140}ghp_{chr(0x200B) * 140} {GITHUB_TOKEN}{chr(9) * 140}"
"""Keys and a key's prefix, each followed by more filler than 128 characters."""


@pytest.mark.parametrize("name", STREAMS)
def test_filler_after_a_key_or_its_prefix_leaves_the_stream_as_the_whole_text_reads(name: str) -> None:
    """A key's prefix held open over filler does not run into the strings around the text (an event's id,
    its kind, the message given whole at its end): every event still reads as its client reads it, and
    the text is the whole text's redaction, however the deltas are cut."""
    whole = scan_and_redact(SECRETS, FILLED).text
    for cut in range(1, len(FILLED), 29):
        assert agent_reads(name, [FILLED[:cut], FILLED[cut:]], one_at_a_time=True) == whole, cut


class _Recorded:
    """An ``EventScan`` that only keeps what it is given to record, for the tests."""

    rewrites = False
    generation = 0

    def __init__(self) -> None:
        self.texts: list[str] = []

    def filter(self, kind: str, document: Any, handled: Any, *, alike: Any = None) -> tuple[Any, bool]:
        self.texts.append(document)
        return document, False


def test_a_run_of_plain_text_events_longer_than_is_kept_is_recorded_in_bounded_parts_and_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run of events that are not JSON as long as the stream is recorded read joined a bounded part
    at a time: nothing of it is kept past the bound, and every character of it is recorded once."""
    monkeypatch.setattr(stream, "_NOT_JSON_KEPT", 100)
    dialect = TEXT_STREAMS["openai_chat"][0]
    recorded = _Recorded()
    session = dialect.stream_session(StreamFilters(text_filter=redacting, residual=recorded))
    pieces = [f"token {index:03} " for index in range(200)]
    for event in SSEParser().feed(plain_text_stream(pieces)):
        session.feed(event.raw)
    session.finish()
    assert "".join(recorded.texts) == "".join(pieces)
    assert len(recorded.texts) > 1 and all(len(text) <= 100 for text in recorded.texts)
