"""Stream sessions: incremental parsing, text filters and the tool-call gate, checked through the
official SDKs' own stream accumulators."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from google.genai import types as genai_types
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai import omit
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from proxy.dialects import (
    MCP,
    Anthropic,
    Dialect,
    Gemini,
    Generic,
    OpenAIChat,
    OpenAIResponses,
    StreamFilters,
    TextFilter,
    ToolDecision,
)
from proxy.dialects import stream as stream_module
from proxy.dialects.openai_chat import ChatStreamSession
from proxy.dialects.stream import Sent, StreamSession, UnexpectedText, sent_bytes
from proxy.exchange import ToolCall
from proxy.scanning.redact import StreamRedactor, scan_and_redact
from proxy.scanning.residual import JsonScan, UnescapingFilter
from proxy.scanning.rulepack import Scanner, ScanTimeout, load_pack, pack_path
from proxy.wire.sse import Serialised, SSEEvent, SSEParser
from tests.cpu_time import least_cpu_seconds
from tests.dialect_fixtures import response_fixture, stream_fixture
from tests.test_redact import backtracking_scanner

DIALECTS: dict[str, Dialect] = {
    "openai_chat": OpenAIChat(),
    "openai_responses": OpenAIResponses(),
    "anthropic": Anthropic(),
    "gemini": Gemini(model_hint="gemini-2.5-flash"),
}
SECRET = re.compile(r"sk-proj-\w+")
RESPONSE_EVENT = TypeAdapter[Any](ResponseStreamEvent)
ANTHROPIC_EVENT = TypeAdapter[Any](RawMessageStreamEvent)


class WordRedactor:
    """Releases whole words only, so a secret split across deltas is seen whole before release."""

    def __init__(self) -> None:
        self.held = ""

    def feed(self, text: str) -> str:
        self.held += text
        cut = max(self.held.rfind(" "), self.held.rfind("\n")) + 1
        released, self.held = self.held[:cut], self.held[cut:]
        return SECRET.sub("[REDACTED]", released)

    def flush(self) -> str:
        released, self.held = self.held, ""
        return SECRET.sub("[REDACTED]", released)


def redactor(where: str) -> TextFilter:
    return WordRedactor()


def run(session: StreamSession, stream: bytes, cuts: list[int] | None = None) -> bytes:
    output = b""
    previous = 0
    for cut in sorted(min(cut, len(stream)) for cut in cuts or []):
        output += session.feed(stream[previous:cut])
        previous = cut
    return output + session.feed(stream[previous:]) + session.finish()


def payloads(stream: bytes) -> list[tuple[str, Any]]:
    """Every dispatched event of a stream as (type, parsed JSON); fails if any data is not JSON."""
    parser = SSEParser()
    events = parser.feed(stream)
    last_events, tail = parser.finish()
    assert tail == b""
    return [
        (event.type, json.loads(event.data))
        for event in events + last_events
        if event.data not in (None, "[DONE]")
    ]


def chat_sdk_view(stream: bytes) -> tuple[str, list[str]]:
    state = ChatCompletionStreamState()
    for _, payload in payloads(stream):
        state.handle_chunk(ChatCompletionChunk.model_validate(payload))
    message = state.get_final_completion().choices[0].message
    return message.content or "", [call.function.name for call in message.tool_calls or []]


def responses_sdk_view(stream: bytes) -> tuple[str, list[str]]:
    state = ResponseStreamState[Any](input_tools=omit, text_format=omit)
    completed = None
    for _, payload in payloads(stream):
        for event in state.handle_event(RESPONSE_EVENT.validate_python(payload)):
            if event.type == "response.completed":
                completed = event.response
    assert completed is not None
    calls = [item.name for item in completed.output if item.type == "function_call"]
    return completed.output_text, calls


def anthropic_sdk_view(stream: bytes) -> tuple[str, list[str]]:
    snapshot = None
    json_buffers: dict[int, bytes] = {}
    for event_type, payload in payloads(stream):
        if event_type != "ping":
            event = ANTHROPIC_EVENT.validate_python(payload)
            snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_buffers)
    assert snapshot is not None
    Message.model_validate(snapshot.model_dump())
    text = "".join(block.text for block in snapshot.content if block.type == "text")
    return text, [block.name for block in snapshot.content if block.type == "tool_use"]


def gemini_sdk_view(stream: bytes) -> tuple[str, list[str]]:
    text, calls = "", []
    for _, payload in payloads(stream):
        response = genai_types.GenerateContentResponse.model_validate(payload)
        for part in response.parts or []:
            text += part.text or ""
            if part.function_call is not None:
                calls.append(part.function_call.name or "")
    return text, calls


SDK_VIEWS = {
    "openai_chat": chat_sdk_view,
    "openai_responses": responses_sdk_view,
    "anthropic": anthropic_sdk_view,
    "gemini": gemini_sdk_view,
}


@pytest.mark.parametrize("name", DIALECTS)
def test_stream_completion_equals_parse_of_equivalent_json(name: str) -> None:
    """The session's completion equals parse_response of the same answer given as JSON."""
    dialect = DIALECTS[name]
    session = dialect.stream_session()
    run(session, stream_fixture(name))
    assert session.completion == dialect.parse_response(response_fixture(name))
    assert session.completion.tool_calls and session.completion.usage.tokens_out
    assert session.notes == []


@pytest.mark.parametrize("name", DIALECTS)
def test_without_filters_the_stream_passes_byte_for_byte(name: str) -> None:
    """No filters: the output bytes are the input bytes."""
    stream = stream_fixture(name)
    assert run(DIALECTS[name].stream_session(), stream) == stream


def test_first_event_is_sent_before_the_stream_ends() -> None:
    """The first complete event is released by the chunk that completes it."""
    stream = stream_fixture("openai_chat")
    first_end = stream.index(b"\n\n") + 2
    session = OpenAIChat().stream_session(StreamFilters(text_filter=redactor))
    assert session.feed(stream[:first_end]) != b""


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(DIALECTS)),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=25),
)
def test_any_chunking_gives_the_same_completion_and_bytes(name: str, cuts: list[int]) -> None:
    """Cutting the stream at arbitrary byte positions changes neither the completion nor the output."""
    dialect = DIALECTS[name]
    stream = stream_fixture(name)
    filters = StreamFilters(
        text_filter=redactor,
        tool_gate=lambda call, complete: "release",
        argument_filter=lambda where: TrailingRedactor(),
    )
    whole_session = dialect.stream_session(filters)
    whole = run(whole_session, stream)
    chunked_session = dialect.stream_session(filters)
    assert run(chunked_session, stream, cuts) == whole
    assert chunked_session.completion == whole_session.completion


@pytest.mark.parametrize("name", DIALECTS)
def test_holding_filter_keeps_the_stream_valid_for_the_sdk(name: str) -> None:
    """With a filter that holds text, every event still parses and the SDK sees the filtered text."""
    dialect = DIALECTS[name]
    stream = stream_fixture(name)
    original_text, original_calls = SDK_VIEWS[name](stream)
    output = run(dialect.stream_session(StreamFilters(text_filter=redactor)), stream)
    text, calls = SDK_VIEWS[name](output)
    assert text == SECRET.sub("[REDACTED]", original_text)
    assert calls == original_calls


def test_secret_split_across_deltas_never_reaches_the_agent() -> None:
    """The secret arrives in three deltas; the output holds none of its pieces."""
    output = run(
        OpenAIChat().stream_session(StreamFilters(text_filter=redactor)), stream_fixture("openai_chat")
    )
    assert b"AbCdEf123456" not in output and b"sk-proj-" not in output
    assert chat_sdk_view(output)[0] == "Let me check that ticket. Your key is [REDACTED] for now."


TEXT_DELTAS = {
    "openai_chat": (
        b"",
        'data: {"id": "OTHER", "object": "chat.completion.chunk", "created": 1, "model": "m", '
        '"choices": [{"index": 0, "delta": {"content": "TEXT"}, "finish_reason": null}]}\n\n',
    ),
    "openai_responses": (
        b'event: response.output_item.added\ndata: {"type": "response.output_item.added", "output_index": 0, '
        b'"item": {"type": "message", "id": "msg_1", "role": "assistant", "content": []}}\n\n',
        'event: response.output_text.delta\ndata: {"type": "response.output_text.delta", "item_id": "OTHER", '
        '"output_index": 0, "content_index": 0, "delta": "TEXT"}\n\n',
    ),
    "gemini": (
        b"",
        'data: {"candidates": [{"content": {"parts": [{"text": "TEXT"}], "role": "model"}, "index": 0}], '
        '"responseId": "OTHER"}\n\n',
    ),
}


@pytest.mark.parametrize("name", sorted(TEXT_DELTAS))
@pytest.mark.parametrize(
    ("other", "kept"), [("resp-1", True), ("Your key sk-proj-AbC", False), ("caf\\u00e9", False)]
)
def test_event_whose_text_alone_changed_keeps_the_upstream_data_around_it(
    name: str, other: str, kept: bool
) -> None:
    """A held word changes a delta's text alone: the event goes out as the upstream wrote it (its spacing
    and key order) with the released text in place of the text; where the text's spelling is not that
    text's alone (another string spelled the same, an escape in the data) the payload is written anew. A
    client reads the same either way."""
    opening, delta = TEXT_DELTAS[name]
    event = delta.replace("OTHER", other).replace("TEXT", "Your key sk-proj-AbC").encode()
    session = DIALECTS[name].stream_session(StreamFilters(text_filter=redactor))
    session.feed(opening)
    output = session.feed(event)
    expected = delta.replace("OTHER", other).replace("TEXT", "Your key ").encode()
    assert payloads(output) == payloads(expected)
    assert (output == expected) is kept


def test_chat_chunk_written_for_held_text_carries_the_envelope_the_residual_scan_left() -> None:
    """The last chunk's model names a key and its text is held to the stream's end: the chunk written
    for that text takes the id and model of what the residual scan left, never the key."""
    key = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    secrets = Scanner([load_pack(pack_path("secrets"))])
    scan = JsonScan(secrets, lambda rule: True)
    session = OpenAIChat().stream_session(
        StreamFilters(text_filter=lambda where: StreamRedactor(secrets), residual=scan)
    )
    envelope = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1}
    chunks = [
        {**envelope, "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {"content": "Done "}}]},
        {**envelope, "model": key, "choices": [{"index": 0, "delta": {"content": "now"}}]},
    ]
    stream = b"".join(f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks) + b"data: [DONE]\n\n"
    output = run(session, stream)
    assert key.encode() not in output
    assert chat_sdk_view(output)[0] == "Done now"
    assert [found.rule.id for found in scan.found] == ["github-pat"]


def test_filter_factory_receives_the_segment_locator() -> None:
    """Each text channel's filter is made with the locator its TextSegment carries."""
    seen: list[str] = []

    def factory(where: str) -> TextFilter:
        seen.append(where)
        return WordRedactor()

    session = Anthropic().stream_session(StreamFilters(text_filter=factory))
    run(session, stream_fixture("anthropic"))
    assert seen == [segment.where for segment in session.completion.text]


def gate_dropping(*names: str) -> StreamFilters:
    def gate(call: ToolCall, complete: bool) -> ToolDecision:
        return "drop" if call.name in names else "release"

    return StreamFilters(tool_gate=gate, drop_notice=lambda call: f"[{call.name} needs approval]")


def test_chat_gate_drops_one_call_and_renumbers_the_rest() -> None:
    """A dropped call vanishes, the released one keeps index 0, and the notice becomes text."""
    session = OpenAIChat().stream_session(gate_dropping("lookup_ticket"))
    output = run(session, stream_fixture("openai_chat"))
    text, calls = chat_sdk_view(output)
    assert calls == ["delete_ticket"]
    assert text.endswith("[lookup_ticket needs approval]")
    assert session.dropped_tool_calls == [("lookup_ticket", "call_Tk42")]
    assert len(session.completion.tool_calls) == 2


LENIENT_JSON_EVENTS = [
    b'data: /*x*/{"choices": [{"index": 0, "delta": {"tool_calls": []}}]}\n\n',
    b'data: )]}\'\ndata: {"choices": []}\n\n',
    b"data: // note\ndata: [1]\n\n",
    b"data: while(1);{}\n\n",
]
"""Events whose data a lenient reader reads as JSON and Python does not."""


@pytest.mark.parametrize("event", LENIENT_JSON_EVENTS)
def test_an_event_that_looks_like_json_but_does_not_read_is_dropped_with_filters(event: bytes) -> None:
    """A lenient client reads a call in it that no gate saw: with filters it is not sent; without, it
    passes; either way it is counted. Text that does not look like JSON is read as text, as ever."""
    gated = OpenAIChat().stream_session(gate_dropping("drop_table"))
    assert run(gated, event + b"data: plain words\n\n") == b"data: plain words\n\n"
    observed = OpenAIChat().stream_session()
    assert run(observed, event) == event
    assert gated.unreadable_json_events == observed.unreadable_json_events == 1


def test_an_unknown_streams_text_events_are_not_taken_for_json() -> None:
    """A stream on a route no API dialect knows carries whatever its service writes: passed as text."""
    session = Generic().stream_session(gate_dropping("drop_table"))
    assert run(session, LENIENT_JSON_EVENTS[0]) == LENIENT_JSON_EVENTS[0]
    assert session.unreadable_json_events == 0


def test_done_is_not_taken_for_unreadable_json() -> None:
    """``[DONE]`` ends OpenAI's streams and is copied by others': passed as the text it is."""
    session = OpenAIResponses().stream_session(gate_dropping("drop_table"))
    assert run(session, b"data: [DONE]\n\n") == b"data: [DONE]\n\n"
    assert session.unreadable_json_events == 0


def test_chat_gate_dropping_every_call_turns_finish_reason_to_stop() -> None:
    """With no call left the stream says the turn stopped, not that tools were called."""
    output = run(
        OpenAIChat().stream_session(gate_dropping("lookup_ticket", "delete_ticket")),
        stream_fixture("openai_chat"),
    )
    finish_reasons = [choice["finish_reason"] for _, chunk in payloads(output) for choice in chunk["choices"]]
    assert "tool_calls" not in finish_reasons and "stop" in finish_reasons
    assert b"delete_ticket" not in output.replace(b"[delete_ticket needs approval]", b"")


def test_chat_gate_holds_deltas_until_the_name_arrives() -> None:
    """Argument deltas sent before the name are held, then released merged into one delta."""
    envelope = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def chunk(call: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": {"tool_calls": [call]} if call else {}, "finish_reason": finish}
        return b"data: " + json.dumps({**envelope, "choices": [choice]}).encode() + b"\n\n"

    stream = (
        chunk({"index": 0, "id": "call_1", "type": "function", "function": {"arguments": '{"a"'}})
        + chunk({"index": 0, "function": {"name": "lookup", "arguments": ": 1}"}})
        + chunk({}, "tool_calls")
        + b"data: [DONE]\n\n"
    )
    decisions: list[tuple[str, str | None]] = []

    def gate(call: ToolCall, complete: bool) -> ToolDecision:
        decisions.append((call.name, call.id))
        return "release"

    output = run(OpenAIChat().stream_session(StreamFilters(tool_gate=gate)), stream)
    assert decisions == [("lookup", "call_1")]
    state = ChatCompletionStreamState()
    for _, payload in payloads(output):
        state.handle_chunk(ChatCompletionChunk.model_validate(payload))
    (call,) = state.get_final_completion().choices[0].message.tool_calls or []
    assert (call.id, call.function.name, call.function.arguments) == ("call_1", "lookup", '{"a": 1}')


def test_anthropic_gate_replaces_dropped_tool_use_with_notice_block() -> None:
    """A dropped tool_use block becomes a text notice and stop_reason becomes end_turn."""
    output = run(Anthropic().stream_session(gate_dropping("bash")), stream_fixture("anthropic"))
    text, calls = anthropic_sdk_view(output)
    assert calls == [] and text.endswith("[bash needs approval]")
    assert b'"stop_reason":"end_turn"' in output and b"rm -rf" not in output


def test_anthropic_gate_without_notice_leaves_no_index_gap() -> None:
    """Dropping a block without a notice keeps block indexes contiguous for the SDK."""
    filters = StreamFilters(tool_gate=lambda call, complete: "drop")
    output = run(Anthropic().stream_session(filters), stream_fixture("anthropic"))
    indexes = {payload["index"] for _, payload in payloads(output) if "index" in payload}
    assert indexes == {0}
    assert anthropic_sdk_view(output) == ("Cleaning the build directory now.", [])


def test_responses_gate_drops_function_call_item_with_notice() -> None:
    """A dropped function_call item is replaced by a notice message consistently in every event."""
    session = OpenAIResponses().stream_session(gate_dropping("rerun_build"))
    output = run(session, stream_fixture("openai_responses"))
    text, calls = responses_sdk_view(output)
    assert calls == [] and text.endswith("[rerun_build needs approval]")
    assert b"881" not in output


def test_gemini_gate_drops_function_call_part() -> None:
    """A dropped functionCall part is replaced by the notice text."""
    output = run(Gemini().stream_session(gate_dropping("book_table")), stream_fixture("gemini"))
    text, calls = gemini_sdk_view(output)
    assert calls == [] and text.endswith("[book_table needs approval]")


def test_stream_cut_mid_event_yields_the_completion_so_far() -> None:
    """A stream that stops inside an event still gives the text of the complete events."""
    stream = stream_fixture("anthropic")
    cut = stream.index(b"directory") + 3
    session = Anthropic().stream_session()
    output = run(session, stream[:cut])
    assert session.completion.full_text == "Cleaning the build"
    assert output == stream[:cut]
    assert session.notes and "inside an event" in session.notes[0]


def test_cut_stream_with_filters_flushes_held_text_and_drops_the_partial_event() -> None:
    """With filters, held text is flushed at stream end and the unverifiable partial event is dropped."""
    stream = stream_fixture("openai_chat")
    cut = stream.index(b"7890XyZ") + 3
    output = run(OpenAIChat().stream_session(StreamFilters(text_filter=redactor)), stream[:cut])
    text, _ = chat_sdk_view(output)
    assert text == "Let me check that ticket. Your key is [REDACTED]"


def test_unparseable_event_passes_through_and_is_noted() -> None:
    """An event whose data is not JSON is forwarded as its text filtered (what could begin a secret held
    for the next such event, here sent in one of its own before the first JSON one) and recorded in notes;
    one that opens as JSON and does not read is not sent where filters rewrite the stream."""
    stream = b"data: not json\n\ndata: {not json\n\n" + stream_fixture("openai_chat")
    session = OpenAIChat().stream_session(StreamFilters(text_filter=redactor))
    output = run(session, stream)
    head = output[: output.index(b"data: {")]
    assert head.decode().replace("data: ", "").replace("\n\n", "") == "not json"
    assert b"{not json" not in output
    assert session.notes == [
        "event 'message' is not JSON; read as text with those after it",
        "event 'message' looks like JSON but cannot be read; dropped unread",
    ]


def test_event_of_unexpected_shape_passes_through() -> None:
    """A JSON event in a shape the dialect does not read is forwarded and noted, never raised."""
    stream = b"event: message_start\ndata: [1, 2]\n\n" + stream_fixture("anthropic")
    session = Anthropic().stream_session(StreamFilters(text_filter=redactor))
    output = run(session, stream)
    assert output.startswith(b"event: message_start\ndata: [1, 2]\n\n")
    assert session.completion.full_text == "Cleaning the build directory now."


def test_session_is_usable_as_the_mitmproxy_stream_callable() -> None:
    """Calling the session with chunks and then b"" is feed and finish."""
    stream = stream_fixture("gemini")
    session = Gemini().stream_session()
    assert session(stream[:100]) + session(stream[100:]) + session(b"") == stream
    assert session(b"") == b""


def test_mcp_stream_filters_tool_result_text() -> None:
    """MCP tool results in an SSE response go through the text filter within their event."""
    session = MCP().stream_session(StreamFilters(text_filter=lambda where: UpperFilter()))
    output = run(session, stream_fixture("mcp"))
    messages = [payload for _, payload in payloads(output)]
    assert messages[-1]["result"]["content"][0]["text"].startswith("EMAIL QUEUED.")
    assert messages[0]["method"] == "notifications/progress"
    assert session.completion == MCP().parse_response(response_fixture("mcp_tools_call"))


def test_generic_stream_filters_every_string() -> None:
    """An unknown event stream still has its strings filtered."""
    stream = b'data: {"msg": "hello"}\n\ndata: plain text\n\n'
    output = run(Generic().stream_session(StreamFilters(text_filter=lambda where: UpperFilter())), stream)
    assert output == b'data: {"msg":"HELLO"}\n\ndata: PLAIN TEXT\n\n'


class UpperFilter:
    def feed(self, text: str) -> str:
        return text.upper()

    def flush(self) -> str:
        return ""


def test_responses_gate_without_notice_keeps_output_indexes_contiguous() -> None:
    """Dropping an item without a notice leaves no gap in output_index and none in the final output."""
    filters = StreamFilters(tool_gate=lambda call, complete: "drop")
    output = run(OpenAIResponses().stream_session(filters), stream_fixture("openai_responses"))
    indexes = {payload["output_index"] for _, payload in payloads(output) if "output_index" in payload}
    assert indexes == {0}
    assert responses_sdk_view(output) == ("The build failed at step 4; re-running now.", [])


# -- tool-call arguments ---------------------------------------------------------------------------

PLACEHOLDER = "[REDACTED:openai-project-key]"
ARGUMENT_SECRET = "sk-proj-AbCdEf1234567890XyZ"
ARGUMENTS = '{"region": "eu-west-1", "token": "' + ARGUMENT_SECRET + '", "note": "sk-pro is not one"}'
REDACTED_ARGUMENTS = ARGUMENTS.replace(ARGUMENT_SECRET, PLACEHOLDER)


class TrailingRedactor:
    """Like the stream redactor: holds back a trailing margin and any run that may still become a
    secret, releases the rest with secrets replaced by a placeholder free of quotes and backslashes."""

    MARGIN = 8

    def __init__(self) -> None:
        self.held = ""

    def feed(self, text: str) -> str:
        self.held += text
        cut = min(len(self.held) - self.MARGIN, self._undecided_from())
        for match in SECRET.finditer(self.held):
            if match.start() < cut < match.end():
                cut = match.start()
        if cut <= 0:
            return ""
        released, self.held = self.held[:cut], self.held[cut:]
        return SECRET.sub(PLACEHOLDER, released)

    def flush(self) -> str:
        released, self.held = self.held, ""
        return SECRET.sub(PLACEHOLDER, released)

    def _undecided_from(self) -> int:
        for match in SECRET.finditer(self.held):
            if match.end() == len(self.held):
                return match.start()
        for size in range(min(len("sk-proj-"), len(self.held)), 0, -1):
            if self.held.endswith("sk-proj-"[:size]):
                return len(self.held) - size
        return len(self.held)


def argument_filters(where: str) -> TextFilter:
    return TrailingRedactor()


def split(text: str, sizes: list[int]) -> list[str]:
    """``text`` in pieces whose lengths cycle through ``sizes``."""
    pieces, position, turn = [], 0, 0
    while position < len(text):
        size = sizes[turn % len(sizes)] if sizes else len(text)
        pieces.append(text[position : position + size])
        position += size
        turn += 1
    return pieces


def sse(payload: Any, event: str | None = None) -> bytes:
    name = f"event: {event}\n" if event else ""
    return f"{name}data: {json.dumps(payload)}\n\n".encode()


def chat_call_stream(pieces: list[str]) -> bytes:
    envelope = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse({**envelope, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    def call(index: int, piece: str) -> bytes:
        return chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})

    def start(index: int, call_id: str, name: str) -> bytes:
        function = {"name": name, "arguments": ""}
        return chunk(
            {"tool_calls": [{"index": index, "id": call_id, "type": "function", "function": function}]}
        )

    return (
        chunk({"role": "assistant", "content": None})
        + start(0, "call_1", "deploy")
        + b"".join(call(0, piece) for piece in pieces)
        + start(1, "call_2", "notify")
        + b"".join(call(1, piece) for piece in pieces)
        + chunk({}, "tool_calls")
        + b"data: [DONE]\n\n"
    )


def responses_call_stream(pieces: list[str]) -> bytes:
    response = {"id": "resp_1", "object": "response", "created_at": 1, "model": "gpt-4.1", "output": []}
    response |= {"status": "in_progress", "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}
    item = {"id": "fc_1", "type": "function_call", "status": "in_progress", "call_id": "call_1"}
    item |= {"name": "deploy", "arguments": ""}
    done_item = {**item, "status": "completed", "arguments": ARGUMENTS}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        *(
            {
                "type": "response.function_call_arguments.delta",
                "item_id": "fc_1",
                "output_index": 0,
                "delta": piece,
            }
            for piece in pieces
        ),
        {
            "type": "response.function_call_arguments.done",
            "item_id": "fc_1",
            "output_index": 0,
            "arguments": ARGUMENTS,
        },
        {"type": "response.output_item.done", "output_index": 0, "item": done_item},
        {
            "type": "response.completed",
            "response": {**response, "status": "completed", "output": [done_item]},
        },
    ]
    return b"".join(
        sse({**event, "sequence_number": number}, event["type"]) for number, event in enumerate(events)
    )


ANTHROPIC_MESSAGE: dict[str, Any] = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "content": [],
    "model": "claude",
}
ANTHROPIC_MESSAGE |= {
    "stop_reason": None,
    "stop_sequence": None,
    "usage": {"input_tokens": 5, "output_tokens": 1},
}
ANTHROPIC_TEXT_START: list[dict[str, Any]] = [
    {"type": "message_start", "message": ANTHROPIC_MESSAGE},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
]
"""The first events of an Anthropic stream whose first block is text."""


def anthropic_call_stream(pieces: list[str]) -> bytes:
    events: list[dict[str, Any]] = [
        *ANTHROPIC_TEXT_START,
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Deploying."}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "deploy", "input": {}},
        },
        *(
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": piece},
            }
            for piece in pieces
        ),
        {"type": "content_block_stop", "index": 1},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 9},
        },
        {"type": "message_stop"},
    ]
    return b"".join(sse(event, event["type"]) for event in events)


def gemini_call_stream(pieces: list[str]) -> bytes:
    call = {"name": "deploy", "args": json.loads(ARGUMENTS)}
    return sse(
        {"candidates": [{"content": {"parts": [{"text": "Deploying."}], "role": "model"}, "index": 0}]}
    ) + sse(
        {
            "candidates": [
                {
                    "content": {"parts": [{"functionCall": call}], "role": "model"},
                    "index": 0,
                    "finishReason": "STOP",
                }
            ]
        }
    )


def chat_sdk_arguments(stream: bytes) -> list[str]:
    state = ChatCompletionStreamState()
    for _, payload in payloads(stream):
        state.handle_chunk(ChatCompletionChunk.model_validate(payload))
    return [
        call.function.arguments for call in state.get_final_completion().choices[0].message.tool_calls or []
    ]


def responses_sdk_arguments(stream: bytes) -> list[str]:
    """The arguments the SDK's snapshot accumulated from the deltas, checked against those of every
    event that carries them whole."""
    state = ResponseStreamState[Any](input_tools=omit, text_format=omit)
    accumulated: dict[int, str] = {}
    whole: list[str] = []
    for _, payload in payloads(stream):
        for event in state.handle_event(RESPONSE_EVENT.validate_python(payload)):
            if event.type == "response.function_call_arguments.delta":
                accumulated[event.output_index] = event.snapshot
            elif event.type == "response.function_call_arguments.done":
                whole.append(event.arguments)
            elif event.type == "response.output_item.done" and event.item.type == "function_call":
                whole.append(event.item.arguments)
            elif event.type == "response.completed":
                whole += [item.arguments for item in event.response.output if item.type == "function_call"]
    assert set(whole) == set(accumulated.values())
    return list(accumulated.values())


def anthropic_sdk_arguments(stream: bytes) -> list[str]:
    snapshot = None
    json_buffers: dict[int, bytes] = {}
    for _, payload in payloads(stream):
        event = ANTHROPIC_EVENT.validate_python(payload)
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_buffers)
    assert snapshot is not None
    return [json.dumps(block.input) for block in snapshot.content if block.type == "tool_use"]


def gemini_sdk_arguments(stream: bytes) -> list[str]:
    arguments = []
    for _, payload in payloads(stream):
        for part in genai_types.GenerateContentResponse.model_validate(payload).parts or []:
            if part.function_call is not None:
                arguments.append(json.dumps(part.function_call.args))
    return arguments


ARGUMENT_CASES = {
    "openai_chat": (chat_call_stream, chat_sdk_arguments, [ARGUMENTS, ARGUMENTS], [REDACTED_ARGUMENTS] * 2),
    "openai_responses": (responses_call_stream, responses_sdk_arguments, [ARGUMENTS], [REDACTED_ARGUMENTS]),
    "anthropic": (
        anthropic_call_stream,
        anthropic_sdk_arguments,
        [json.dumps(json.loads(ARGUMENTS))],
        [json.dumps(json.loads(REDACTED_ARGUMENTS))],
    ),
    "gemini": (
        gemini_call_stream,
        gemini_sdk_arguments,
        [json.dumps(json.loads(ARGUMENTS))],
        [json.dumps(json.loads(REDACTED_ARGUMENTS))],
    ),
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(ARGUMENT_CASES)),
    sizes=st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=6000), max_size=8),
)
def test_secret_in_streamed_arguments_is_redacted_for_the_sdk(
    name: str, sizes: list[int], cuts: list[int]
) -> None:
    """Arguments streamed in 1-3 character deltas reach the SDK redacted and still valid."""
    make_stream, sdk_arguments, original, redacted = ARGUMENT_CASES[name]
    stream = make_stream(split(ARGUMENTS, sizes))
    assert sdk_arguments(stream) == original
    session = DIALECTS[name].stream_session(StreamFilters(argument_filter=argument_filters))
    output = run(session, stream, cuts)
    assert sdk_arguments(output) == redacted
    assert b"AbCdEf" not in output


@pytest.mark.parametrize("name", sorted(ARGUMENT_CASES))
def test_completion_keeps_the_upstream_arguments(name: str) -> None:
    """Filtering what the agent sees leaves the completion's arguments as the upstream sent them."""
    make_stream, _, _, _ = ARGUMENT_CASES[name]
    stream = make_stream(split(ARGUMENTS, [2, 1, 3]))
    unfiltered = DIALECTS[name].stream_session()
    run(unfiltered, stream)
    session = DIALECTS[name].stream_session(StreamFilters(argument_filter=argument_filters))
    run(session, stream)
    assert session.completion == unfiltered.completion
    assert all(ARGUMENT_SECRET in call.arguments for call in session.completion.tool_calls)
    assert all(
        PLACEHOLDER in session.released_arguments[call.where] for call in session.completion.tool_calls
    )


@pytest.mark.parametrize("name", sorted(ARGUMENT_CASES))
def test_argument_filter_is_made_with_the_tool_call_locator(name: str) -> None:
    """Each call's argument filter receives the locator its ToolCall carries."""
    make_stream, _, _, _ = ARGUMENT_CASES[name]
    seen: list[str] = []

    def factory(where: str) -> TextFilter:
        seen.append(where)
        return TrailingRedactor()

    session = DIALECTS[name].stream_session(StreamFilters(argument_filter=factory))
    run(session, make_stream(split(ARGUMENTS, [3])))
    assert sorted(set(seen)) == sorted(call.where for call in session.completion.tool_calls)


def test_chat_held_arguments_are_flushed_before_the_next_call_starts() -> None:
    """All of one call's arguments are sent before the next call's first delta."""
    output = run(
        OpenAIChat().stream_session(StreamFilters(argument_filter=argument_filters)),
        chat_call_stream(split(ARGUMENTS, [2])),
    )
    first_call_arguments = ""
    for _, chunk in payloads(output):
        for choice in chunk["choices"]:
            calls = choice["delta"].get("tool_calls", [])
            if any(call.get("id") == "call_2" for call in calls):
                assert first_call_arguments == REDACTED_ARGUMENTS
                return
            first_call_arguments += "".join(
                call["function"]["arguments"] for call in calls if call["index"] == 0
            )
    raise AssertionError("the second call never started")


def test_arguments_pass_the_gate_before_the_filter() -> None:
    """A dropped call's arguments never reach the filter; the released call's are filtered."""
    seen: list[str] = []

    def factory(where: str) -> TextFilter:
        seen.append(where)
        return TrailingRedactor()

    def gate(call: ToolCall, complete: bool) -> ToolDecision:
        return "drop" if call.name == "deploy" else "release"

    filters = StreamFilters(argument_filter=factory, tool_gate=gate)
    output = run(OpenAIChat().stream_session(filters), chat_call_stream(split(ARGUMENTS, [3])))
    assert seen == ["choices[0].message.tool_calls[1]"]
    assert chat_sdk_arguments(output) == [REDACTED_ARGUMENTS]


def test_gemini_arguments_filtered_string_by_string_when_the_filter_breaks_json() -> None:
    """A filter whose output is not valid JSON text is applied to each string of the args instead."""

    class QuotingFilter:
        def __init__(self) -> None:
            self.text = ""

        def feed(self, text: str) -> str:
            self.text += text
            return ""

        def flush(self) -> str:
            return SECRET.sub('"secret"', self.text)

    filters = StreamFilters(argument_filter=lambda where: QuotingFilter())
    output = run(Gemini().stream_session(filters), gemini_call_stream([]))
    (arguments,) = gemini_sdk_arguments(output)
    assert json.loads(arguments)["token"] == '"secret"'


# -- oversized events ------------------------------------------------------------------------------

OVERSIZED_EVENT = b'data: {"padding": "' + b"a" * (2 << 20) + b'"}\n\n'


def in_chunks(session: StreamSession, stream: bytes, size: int = 65536) -> bytes:
    output = b"".join(session.feed(stream[start : start + size]) for start in range(0, len(stream), size))
    return output + session.finish()


def test_oversized_event_passes_through_raw_without_filters() -> None:
    """Without filters an event over the cap is forwarded as it is, noted, and the stream goes on."""
    stream = OVERSIZED_EVENT + stream_fixture("openai_chat")
    session = OpenAIChat().stream_session()
    assert in_chunks(session, stream) == stream
    assert session.notes == [f"an event longer than {1 << 20} bytes was passed through unread"]
    assert session.completion == OpenAIChat().parse_response(response_fixture("openai_chat"))


def test_oversized_event_is_dropped_when_filters_are_active() -> None:
    """With filters nothing of an event over the cap is sent; the events after it are filtered as usual."""
    stream = stream_fixture("openai_chat")
    first_end = stream.index(b"\n\n") + 2
    stream = stream[:first_end] + OVERSIZED_EVENT + stream[first_end:]
    session = OpenAIChat().stream_session(StreamFilters(text_filter=redactor))
    output = in_chunks(session, stream)
    assert b"aaaa" not in output
    assert chat_sdk_view(output)[0] == "Let me check that ticket. Your key is [REDACTED] for now."
    assert session.notes == [f"an event longer than {1 << 20} bytes was dropped unread"]


# -- calls held until their arguments are complete -------------------------------------------------


class HoldingGate:
    """Holds ``deploy`` until its arguments are complete, then gives ``verdict``; releases the rest."""

    def __init__(self, verdict: ToolDecision) -> None:
        self.verdict = verdict
        self.asked: list[tuple[bool, str]] = []

    def __call__(self, call: ToolCall, complete: bool) -> ToolDecision:
        if call.name != "deploy":
            return "release"
        self.asked.append((complete, call.arguments))
        return self.verdict if complete else "hold"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(ARGUMENT_CASES)),
    sizes=st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=6000), max_size=8),
    redacting=st.booleans(),
)
def test_a_held_call_released_on_its_complete_arguments_reaches_the_sdk_whole(
    name: str, sizes: list[int], cuts: list[int], redacting: bool
) -> None:
    """However the stream is cut, the gate decides a held call once on all of its arguments, and the SDK
    assembles exactly those (through the argument filter when one runs) with the rest of the turn."""
    make_stream, sdk_arguments, original, redacted = ARGUMENT_CASES[name]
    stream = make_stream(split(ARGUMENTS, sizes))
    gate = HoldingGate("release")
    filters = StreamFilters(tool_gate=gate, argument_filter=argument_filters if redacting else None)
    session = DIALECTS[name].stream_session(filters)
    output = run(session, stream, cuts)
    assert sdk_arguments(output) == (redacted if redacting else original)
    (deploy,) = [call for call in session.completion.tool_calls if call.name == "deploy"]
    assert gate.asked[-1] == (True, deploy.arguments)
    assert [complete for complete, _ in gate.asked] == ([True] if name == "gemini" else [False, True])
    assert SDK_VIEWS[name](output)[0] == SDK_VIEWS[name](stream)[0]


@pytest.mark.parametrize("name", sorted(ARGUMENT_CASES))
def test_a_held_call_dropped_on_its_complete_arguments_leaves_only_its_notice(name: str) -> None:
    """Dropped once its arguments are known: none of them reach the agent, the notice does, and the
    other calls stream as they came."""
    make_stream, sdk_arguments, original, _ = ARGUMENT_CASES[name]
    stream = make_stream(split(ARGUMENTS, [2, 5]))
    filters = StreamFilters(tool_gate=HoldingGate("drop"), drop_notice=lambda call: f"[{call.name} held]")
    session = DIALECTS[name].stream_session(filters)
    output = run(session, stream)
    text, calls = SDK_VIEWS[name](output)
    assert "deploy" not in calls and text.endswith("[deploy held]")
    assert ARGUMENT_SECRET.encode() not in output and b"eu-west-1" not in output
    assert sdk_arguments(output) == original[1:]  # chat's second call, notify, goes on
    assert session.dropped_tool_calls[0][0] == "deploy"


@pytest.mark.parametrize("name", ["openai_chat", "openai_responses", "anthropic"])
def test_nothing_of_a_held_call_is_sent_before_its_arguments_end(name: str) -> None:
    """While a call is held, the events fed so far release nothing of it."""
    make_stream, _, _, _ = ARGUMENT_CASES[name]
    stream = make_stream(split(ARGUMENTS, [4]))
    ending = {
        "openai_chat": b'"id": "call_2"',
        "openai_responses": b"response.function_call_arguments.done",
        "anthropic": b'"type": "content_block_stop", "index": 1',
    }[name]
    end_of_arguments = stream.rindex(b"data: ", 0, stream.index(ending)) - 1
    session = DIALECTS[name].stream_session(StreamFilters(tool_gate=HoldingGate("release")))
    early = session.feed(stream[:end_of_arguments])
    assert b"eu-w" in stream[:end_of_arguments]
    assert b"deploy" not in early and b"eu-w" not in early
    assert b"deploy" in early + session.feed(stream[end_of_arguments:]) + session.finish()


def test_chat_deltas_after_a_held_call_was_sent_whole_are_dropped() -> None:
    """An upstream that adds to a call's arguments after the call ended cannot change what was decided."""
    stream = chat_call_stream(split(ARGUMENTS, [6]))
    late = sse(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o",
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "[1]"}}]},
                    "finish_reason": None,
                }
            ],
        }
    )
    cut = stream.index(b"\n\n", stream.index(b'"id": "call_2"')) + 2
    session = OpenAIChat().stream_session(StreamFilters(tool_gate=HoldingGate("release")))
    output = run(session, stream[:cut] + late + stream[cut:])
    assert chat_sdk_arguments(output) == [ARGUMENTS, ARGUMENTS]
    assert any("after its arguments ended" in note for note in session.notes)


@pytest.mark.parametrize("verdict", ["drop", "release"])
@pytest.mark.parametrize("name", ["openai_chat", "openai_responses", "anthropic"])
def test_a_held_call_that_grows_too_long_is_dropped(
    name: str, verdict: ToolDecision, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upstream cannot make a held call fill memory: past the cap the gate is asked about the arguments
    so far, and the call is dropped whatever it answers (a credential path may lie past the cap, and no
    approval covers part of a call's arguments); the rest of the stream goes on."""
    monkeypatch.setattr(stream_module, "MAX_HELD_BYTES", 40)
    make_stream, sdk_arguments, original, _ = ARGUMENT_CASES[name]
    stream = make_stream(split(ARGUMENTS, [3]))
    gate = HoldingGate(verdict)
    filters = StreamFilters(tool_gate=gate, drop_notice=lambda call: f"[{call.name} held]")
    session = DIALECTS[name].stream_session(filters)
    output = run(session, stream)
    (complete, arguments) = gate.asked[-1]
    assert complete and arguments != ARGUMENTS and len(gate.asked) == 2
    assert any("grew past 40 bytes" in note for note in session.notes)
    assert b"eu-west-1" not in output and sdk_arguments(output) == original[1:]
    assert SDK_VIEWS[name](output)[0].endswith("[deploy held]")


SECRETS = Scanner([load_pack(pack_path("secrets"))])
GITHUB_TOKEN = "ghp_" + "Qw3rTy7uIo9pAs2dFg4hJk6lZx8cVb1nMq5W"
STRIPE_KEY = "sk_live_" + "Zr8Kq2Wm5Tx9Lp3Vb7Nc1Hd6Fg4Js0Ye"
ANSWER = f"The token is {GITHUB_TOKEN} and the key\n{STRIPE_KEY}, card 4539 5787 6362 1486 end."


def chat_text_stream(pieces: list[str]) -> bytes:
    envelope = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse({**envelope, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    return (
        chunk({"role": "assistant", "content": ""})
        + b"".join(chunk({"content": piece}) for piece in pieces)
        + chunk({}, "stop")
        + b"data: [DONE]\n\n"
    )


def anthropic_text_stream(pieces: list[str]) -> bytes:
    events: list[dict[str, Any]] = [
        *ANTHROPIC_TEXT_START,
        *(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
            for piece in pieces
        ),
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
    ]
    return b"".join(sse(event, event["type"]) for event in events)


def responses_text_stream(pieces: list[str]) -> bytes:
    text = "".join(pieces)
    response = {"id": "resp_1", "object": "response", "created_at": 1, "model": "gpt-4.1", "output": []}
    response |= {"status": "in_progress", "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}
    item = {"id": "msg_1", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
    part = {"type": "output_text", "text": "", "annotations": []}
    done_part = {**part, "text": text}
    done_item = {**item, "status": "completed", "content": [done_part]}
    place = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.content_part.added", **place, "part": part},
        *(
            {"type": "response.output_text.delta", **place, "delta": piece, "logprobs": []}
            for piece in pieces
        ),
        {"type": "response.output_text.done", **place, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **place, "part": done_part},
        {"type": "response.output_item.done", "output_index": 0, "item": done_item},
        {
            "type": "response.completed",
            "response": {**response, "status": "completed", "output": [done_item]},
        },
    ]
    return b"".join(
        sse({**event, "sequence_number": number}, event["type"]) for number, event in enumerate(events)
    )


def gemini_text_stream(pieces: list[str]) -> bytes:
    def chunk(parts: list[dict[str, Any]], **more: Any) -> bytes:
        candidate = {"content": {"role": "model", "parts": parts}, "index": 0, **more}
        return sse({"candidates": [candidate], "modelVersion": "gemini-2.5-flash"})

    return b"".join(chunk([{"text": piece}]) for piece in pieces) + chunk([], finishReason="STOP")


TEXT_STREAMS: dict[
    str, tuple[Dialect, Callable[[list[str]], bytes], Callable[[bytes], tuple[str, list[str]]]]
] = {
    "openai_chat": (OpenAIChat(), chat_text_stream, chat_sdk_view),
    "anthropic": (Anthropic(), anthropic_text_stream, anthropic_sdk_view),
    "openai_responses": (OpenAIResponses(), responses_text_stream, responses_sdk_view),
    "gemini": (Gemini(model_hint="gemini-2.5-flash"), gemini_text_stream, gemini_sdk_view),
}
"""Per dialect that reads a burst's text ahead: the dialect, a text stream of given deltas, the SDK's view."""


class PassThrough:
    """A text filter that releases every piece as it comes."""

    def feed(self, text: str) -> str:
        return text

    def flush(self) -> str:
        return ""


@pytest.mark.parametrize("name", TEXT_STREAMS)
def test_a_long_reply_is_read_in_time_linear_in_its_length(name: str) -> None:
    """The completion and what each channel released grow by keeping the pieces, not by copying all
    that came before each one: four times the text in pieces of the same size takes about four times
    as long (copying made it ten), and the completion is the whole text."""
    dialect, text_stream, _ = TEXT_STREAMS[name]

    def seconds(size: int) -> float:
        text = "word " * (size // 5)
        stream = text_stream(split(text, [512]))
        completions = []

        def read() -> None:
            session = dialect.stream_session(StreamFilters(text_filter=lambda where: PassThrough()))
            session.feed(stream)
            session.finish()
            completions.append(session.completion)

        seconds = least_cpu_seconds(read)
        assert all("".join(segment.text for segment in completion.text) == text for completion in completions)
        return seconds

    assert seconds(4 << 20) < 6.5 * seconds(1 << 20)


SPLIT_AND_CUT = given(
    sizes=st.lists(st.integers(min_value=1, max_value=14), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=6000), max_size=12),
)
"""A text in deltas whose lengths cycle through ``sizes``, its stream read in pieces cut at ``cuts``."""


class Redactors:
    """Makes the real stream redactor for each channel and keeps them, for what they recorded."""

    def __init__(self) -> None:
        self.made: list[StreamRedactor] = []

    def __call__(self, where: str) -> TextFilter:
        self.made.append(StreamRedactor(SECRETS))
        return self.made[-1]


@pytest.mark.parametrize("name", TEXT_STREAMS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@SPLIT_AND_CUT
def test_bursts_read_ahead_still_redact_every_secret_split_across_deltas(
    name: str, sizes: list[int], cuts: list[int]
) -> None:
    """However the events are split and however many arrive together (a burst's text is read ahead,
    ``Anticipating``), the agent gets the whole-text redaction, no piece of a secret, and every secret
    is recorded once."""
    dialect, text_stream, sdk_view = TEXT_STREAMS[name]
    stream = text_stream(split(ANSWER, sizes))
    redactors = Redactors()
    output = run(dialect.stream_session(StreamFilters(text_filter=redactors)), stream, cuts)
    assert sdk_view(output)[0] == scan_and_redact(SECRETS, ANSWER).text
    for secret in (GITHUB_TOKEN, STRIPE_KEY):
        assert not any(secret[i : i + 8].encode() in output for i in range(len(secret) - 7))
    recorded = [redaction.rule_id for redactor in redactors.made for redaction in redactor.redactions]
    assert sorted(recorded) == sorted(match.rule.id for match in SECRETS.scan_alone(ANSWER).matches)


@pytest.mark.parametrize("name", TEXT_STREAMS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(min_value=1, max_value=14), min_size=1, max_size=8))
def test_events_read_one_at_a_time_still_redact_every_secret_split_across_them(
    name: str, sizes: list[int]
) -> None:
    """A model that writes slower than the proxy reads: each event is read on its own, nothing is read
    ahead, and the agent still gets the whole-text redaction, no piece of a secret, each recorded once."""
    dialect, text_stream, sdk_view = TEXT_STREAMS[name]
    events = [event.raw for event in SSEParser().feed(text_stream(split(ANSWER, sizes)))]
    redactors = Redactors()
    session = dialect.stream_session(StreamFilters(text_filter=redactors))
    output = b"".join(session.feed(event) for event in events) + session.finish()
    assert sdk_view(output)[0] == scan_and_redact(SECRETS, ANSWER).text
    for secret in (GITHUB_TOKEN, STRIPE_KEY):
        assert not any(secret[i : i + 8].encode() in output for i in range(len(secret) - 7))
    recorded = [redaction.rule_id for redactor in redactors.made for redaction in redactor.redactions]
    assert sorted(recorded) == sorted(match.rule.id for match in SECRETS.scan_alone(ANSWER).matches)


READ_WHOLE = [True, True, True, False, False, False, False]
"""The text events of the stream below: three deltas read whole; the two pieces of the token and of the
open word "mo|re" written anew."""


@pytest.mark.parametrize(
    ("name", "kept"),
    [
        # the role before the text; the end after it (written anew: it flushes), [DONE]
        ("openai_chat", [True, *READ_WHOLE, False, True]),
        # the start and the block's start (numbered anew) before; the block's end (it flushes), the
        # message's end and stop after
        ("anthropic", [True, False, *READ_WHOLE, False, True, True]),
        # the response and its item before, then the part's start (written anew, as every event that
        # carries a part or the item); after the text, its end, the part's and item's ends, completed
        ("openai_responses", [True, True, False, *READ_WHOLE, False, False, False, False]),
        # the first text chunk opens the part, so it is not read ahead: its open word "rep" goes out
        # with the second, which is written anew too; the last chunk ends the candidate (it flushes)
        ("gemini", [False, False, *READ_WHOLE[2:], False]),
    ],
)
def test_events_of_a_burst_whose_text_needs_no_change_go_out_as_they_came(
    name: str, kept: list[bool]
) -> None:
    """Read ahead, a word cut between two events is seen whole: only the events whose text a secret or
    the word still open at the burst's end changes are written anew."""
    pieces = [
        "The customer rep",
        "orts that the ",
        "invoice is wrong; ",
        f"here: {GITHUB_TOKEN[:9]}",
        GITHUB_TOKEN[9:],
        " and mo",
        "re",
    ]
    dialect, text_stream, sdk_view = TEXT_STREAMS[name]
    stream = text_stream(pieces)
    output = run(dialect.stream_session(StreamFilters(text_filter=Redactors())), stream)
    sent = [event.raw for event in SSEParser().feed(output)]
    assert [event.raw in sent for event in SSEParser().feed(stream)] == kept
    assert sdk_view(output)[0] == "".join(pieces).replace(GITHUB_TOKEN, "[REDACTED:github-pat]")


def test_a_channel_fed_other_text_than_it_was_told_to_expect_stops_the_burst(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What was released in a burst was decided on the text announced: if other text comes, nothing of the
    burst is sent (the relay cuts the stream there)."""
    stream = chat_text_stream(["Hello ", "wor", "ld"])
    announced = [("choices[0].message.content", "Hello")]
    monkeypatch.setattr(ChatStreamSession, "_plain_texts", lambda self, event, payload: announced)
    with pytest.raises(UnexpectedText):
        OpenAIChat().stream_session(StreamFilters(text_filter=Redactors())).feed(stream)


@pytest.mark.parametrize("name", TEXT_STREAMS)
def test_a_burst_is_not_read_ahead_across_a_private_key_block(name: str) -> None:
    """A key block that begins inside a burst is still suppressed whole: it is never read ahead."""
    dialect, text_stream, sdk_view = TEXT_STREAMS[name]
    block = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow" + "A" * 64 + "\n-----END RSA PRIVATE KEY-----"
    output = run(
        dialect.stream_session(StreamFilters(text_filter=Redactors())),
        text_stream(split(f"key: {block} ok", [7])),
    )
    assert sdk_view(output)[0] == "key: [REDACTED:private-key-rsa] ok"
    assert b"MIIEow" not in output


NON_TEXT_STRING = {
    "openai_chat": b'"model": "gpt-4o"',
    "anthropic": b'"model": "claude"',
    "openai_responses": b'"logprobs": []',
    "gemini": b'"modelVersion": "gemini-2.5-flash"',
}
"""Per dialect of ``TEXT_STREAMS``: a field of its events after which a string no channel filters may
stand (in events no filter drops)."""


@pytest.mark.parametrize("name", TEXT_STREAMS)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@SPLIT_AND_CUT
def test_what_was_sent_reads_the_same_from_its_pieces_as_from_its_bytes(
    name: str, sizes: list[int], cuts: list[int]
) -> None:
    """A reader of what a session sent (the read-back) that takes the events sent as they came from the
    payloads the session read of their bytes, and the events it wrote from what it wrote them from, sees
    the same completion and finds the same secrets as one that parses the bytes again."""
    dialect, text_stream, _ = TEXT_STREAMS[name]
    text = f"ids 4539 5787 6362 1486 and {GITHUB_TOKEN} end"
    # A first event that ends a word: sent as it came however the rest is cut.
    stream = text_stream(["Hello ", *split(text, sizes)])
    field = NON_TEXT_STRING[name]
    stream = stream.replace(field, field + f', "user": "{STRIPE_KEY}"'.encode(), 3)
    sender = dialect.stream_session(StreamFilters(text_filter=Redactors()))
    sender.keep_sent()
    scans = [JsonScan(SECRETS, lambda rule: False, rewrites=False) for _ in range(2)]
    by_pieces, by_bytes = (dialect.stream_session(StreamFilters(residual=scan)) for scan in scans)
    read_from_payloads = read_as_written = 0
    previous = 0
    for cut in [*sorted(min(cut, len(stream)) for cut in cuts), len(stream), None]:
        sent = sender.feed(stream[previous:cut]) if cut is not None else sender.finish()
        previous = cut or previous
        pieces = sender.take_sent()
        assert sent_bytes(pieces) == sent
        by_bytes.feed(sent)
        for piece in pieces:
            by_pieces.read_sent(piece)
            read_from_payloads += isinstance(piece, tuple)
            if isinstance(piece, Serialised):
                read_as_written += 1
                assert SSEParser().feed(piece) == [piece.reading()]
    by_pieces.finish()
    by_bytes.finish()
    assert read_from_payloads and read_as_written
    assert by_pieces.completion == by_bytes.completion
    assert [found.fingerprint for found in scans[0].found] == [found.fingerprint for found in scans[1].found]
    assert scans[0].found


def test_events_rewritten_after_they_were_written_are_read_from_the_bytes_that_left() -> None:
    """A secret begun at the end of one text block and completed in the next is redacted in events the
    session had written and queued: the read-back reads those events from the bytes that left, not from
    what they were first written from, and sees no piece of the secret."""
    head, tail = GITHUB_TOKEN[:12], GITHUB_TOKEN[12:]

    def block(index: int, pieces: list[str]) -> list[dict[str, Any]]:
        return [
            {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
            *(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": piece},
                }
                for piece in pieces
            ),
            {"type": "content_block_stop", "index": index},
        ]

    events = [ANTHROPIC_TEXT_START[0], *block(0, ["see ", head]), *block(1, [tail, " done"])]
    stream = b"".join(sse(event, event["type"]) for event in events)
    sender = Anthropic().stream_session(StreamFilters(text_filter=Redactors()))
    sender.keep_sent()
    scan = JsonScan(SECRETS, lambda rule: False, rewrites=False)
    read_back = Anthropic().stream_session(StreamFilters(residual=scan))
    pieces: list[Any] = []
    for event in SSEParser().feed(stream):
        sender.feed(event.raw)
        pieces += sender.take_sent()
    sender.finish()
    pieces += sender.take_sent()
    for piece in pieces:
        read_back.read_sent(piece)
    read_back.finish()
    assert [segment.text for segment in read_back.completion.text] == [
        "see [REDACTED:github-pat]",
        "[REDACTED:github-pat] done",
    ]
    assert not scan.found
    assert head.encode() not in sent_bytes(pieces)


def residual_filters() -> StreamFilters:
    """The redactor on every text channel and the residual scan, which may rewrite, on everything else."""
    return StreamFilters(text_filter=Redactors(), residual=JsonScan(SECRETS, lambda rule: True))


def repeat_key(stream: bytes, key: bytes, first: bytes, occurrence: int) -> bytes:
    """The stream with the ``occurrence``-th ``"key":`` of it preceded by the same key holding ``first``:
    a reader that keeps a repeated key's first value reads ``first`` there."""
    marker = b'"' + key + b'":'
    at = -1
    for _ in range(occurrence + 1):
        at = stream.index(marker, at + 1)
    return stream[:at] + marker + first + b"," + stream[at:]


@pytest.mark.parametrize(
    ("name", "key", "occurrence"),
    [
        ("openai_chat", b"content", 2),  # a text delta in the middle of a burst
        ("openai_chat", b"model", 3),  # the envelope of a text-only chunk
        ("openai_chat", b"finish_reason", 0),
        ("anthropic", b"text", 3),
        ("anthropic", b"stop_reason", 1),  # message_delta, sent as it came
        ("anthropic", b"index", 2),
    ],
)
@pytest.mark.parametrize("whole", [True, False])
def test_an_event_that_repeats_a_key_is_written_anew_from_what_was_scanned(
    name: str, key: bytes, occurrence: int, whole: bool
) -> None:
    """JSON readers differ on a repeated key (this one keeps the last value, others the first): an event
    whose object names a key twice never goes out as it came, so no value the scans did not read does."""
    dialect, text_stream, sdk_view = TEXT_STREAMS[name]
    stream = repeat_key(
        text_stream(["Hello ", "there, ", "how ", "are ", "you?"]),
        key,
        f'"{GITHUB_TOKEN}"'.encode(),
        occurrence,
    )
    assert GITHUB_TOKEN.encode() in stream
    session = dialect.stream_session(residual_filters())
    output = run(session, stream, None if whole else list(range(0, len(stream), 97)))
    assert GITHUB_TOKEN.encode() not in output
    assert sdk_view(output)[0] == "Hello there, how are you?"


@pytest.mark.parametrize("name", TEXT_STREAMS)
@pytest.mark.parametrize(
    "data",
    [
        '{"choices":[{"index":0,"delta":{"content":"%s"}}]} trailing',
        '\ufeff{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"%s"}}',
        '{"choices":[{"index":0,"delta":{"content":"%s\t"}}]}',
        '{"x":' + "[" * 5000 + '"%s"' + "]" * 5000 + "}",
        "%s",
    ],
)
def test_an_event_whose_data_is_not_json_is_scanned_as_text(name: str, data: str) -> None:
    """Data this parser cannot read as JSON may still be read by a lenient client (a trailing word, a byte
    order mark, a raw tab inside a string, nesting past the interpreter's depth): its secrets do not
    leave, and the rest of the stream is read on. Data that looks like JSON is not sent at all (such a
    client may read a call in it); plain text is redacted."""
    dialect, text_stream, _ = TEXT_STREAMS[name]
    stream = text_stream(["Hello ", "there"])
    odd = f"data: {data % GITHUB_TOKEN}\n\n".encode()
    at = stream.index(b"data: ", stream.index(b"Hello"))
    session = dialect.stream_session(residual_filters())
    output = run(session, stream[:at] + odd + stream[at:])
    assert GITHUB_TOKEN.encode() not in output
    looks_like_json = data != "%s"
    assert (b"[REDACTED:github-pat]" in output) is not looks_like_json
    assert session.unreadable_json_events == looks_like_json
    assert session.completion.full_text == "Hello there"


def with_unmodelled_field(stream: bytes, marker: str, values: list[str]) -> bytes:
    """The stream with each event that carries the text ``marker`` given the next of ``values`` in a
    top-level field no dialect models (``x_annotation_delta``), as a newer API version might stream it."""
    parser = SSEParser()
    events = parser.feed(stream) + parser.finish()[0]
    left = iter(values)
    output = b""
    for event in events:
        payload = json.loads(event.data) if event.data not in (None, "[DONE]") else None
        if isinstance(payload, dict) and marker in json.dumps(payload):
            payload["x_annotation_delta"] = next(left)
            output += sse(payload, event.event)
        else:
            output += event.raw
    assert next(left, None) is None
    return output


@pytest.mark.parametrize("name", TEXT_STREAMS)
@pytest.mark.parametrize(
    "secret", ["ghp_aaB2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7RR"]
)
def test_a_secret_a_letter_an_event_in_a_field_no_dialect_models_never_leaves_whole(
    name: str, secret: str
) -> None:
    """A secret streamed a letter an event in a field no dialect models (each event otherwise the same as
    the last) leaves redacted where it completes, doubled letters and all: a client that joins the field
    does not read it whole."""
    dialect, text_stream, _ = TEXT_STREAMS[name]
    stream = with_unmodelled_field(text_stream(["~"] * len(secret)), '"~"', list(secret))
    filters = residual_filters()
    session = dialect.stream_session(filters)
    sent = run(session, stream)
    joined = "".join(
        payload.get("x_annotation_delta", "") for _, payload in payloads(sent) if isinstance(payload, dict)
    )
    assert secret not in joined
    assert isinstance(filters.residual, JsonScan) and filters.residual.found
    assert session.completion.full_text == "~" * len(secret)


def by_numeric_index(stream: bytes) -> dict[int, str]:
    """The text of each choice as a client that indexes its choices by the number the index spells reads
    it (a JavaScript array takes 1, 1.0 and "1" for the same place, a Python list -1 for its last)."""
    texts: dict[int, str] = {}
    for _, chunk in payloads(stream):
        for choice in chunk.get("choices", []) if isinstance(chunk, dict) else []:
            place = client_place(choice["index"])
            texts[place] = texts.get(place, "") + (choice["delta"].get("content") or "")
    return texts


@pytest.mark.parametrize("index", [1.0, "1", True, -1])
@pytest.mark.parametrize("whole", [True, False])
def test_a_choice_index_that_is_not_an_integer_is_written_as_the_channel_it_was_read_in(
    index: Any, whole: bool
) -> None:
    """A chunk's text goes to the channel of its choice's integer index, or of its place in the list where
    the index is no integer: the chunk leaves with that index, so a client that reads 1.0 or "1" as choice 1
    does not join to choice 1's text what the redactor read as choice 0's."""
    envelope = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}

    def chunk(*choices: tuple[Any, str]) -> bytes:
        listed = [{"index": at, "delta": {"content": text}, "finish_reason": None} for at, text in choices]
        return sse({**envelope, "choices": listed})

    stream = (
        chunk((0, "Hello "), (1, f"token {GITHUB_TOKEN[:12]}"))
        + chunk((0, "world, "))
        + chunk((index, f"{GITHUB_TOKEN[12:]} is it. "))
        + chunk((0, "Bye."))
        + sse({**envelope, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        + b"data: [DONE]\n\n"
    )
    output = run(OpenAIChat().stream_session(residual_filters()), stream, None if whole else [300, 500])
    assert not any(GITHUB_TOKEN in text for text in by_numeric_index(output).values())
    assert by_numeric_index(output)[0] == f"Hello world, {GITHUB_TOKEN[12:]} is it. Bye."


ODD_INDEXES = [1.0, "1", True, -1]
"""Indexes a lenient client reads as place 1 of two (JavaScript reads 1.0, "1" and true as 1, a Python
list reads -1 as its last place) that name no place to the proxy."""


def client_place(index: Any, opened: int = 2) -> int:
    place = int(float(index))
    return place + opened if place < 0 else place


def joined_by_place(pieces: list[tuple[Any, str]]) -> dict[Any, str]:
    texts: dict[Any, str] = {}
    for place, text in pieces:
        texts[place] = texts.get(place, "") + text
    return texts


def split_secret_stream(text_event: Callable[[Any, str], bytes], odd: Any, second: int = 1) -> bytes:
    """A text event at ``odd`` brings the head of a key and place 1 its tail; then place 1 ends on the
    head of a token and a text event at ``odd`` brings its tail."""
    return b"".join(
        [
            text_event(0, "Hello "),
            text_event(second, "Intro. "),
            text_event(odd, f"Or {STRIPE_KEY[:14]}"),
            text_event(second, f"{STRIPE_KEY[14:]} maybe. "),
            text_event(0, "world, "),
            text_event(second, f"token {GITHUB_TOKEN[:12]}"),
            text_event(odd, f"{GITHUB_TOKEN[12:]} is it. "),
            text_event(0, "Bye."),
        ]
    )


def anthropic_split_secret(odd: Any, second: int = 1) -> bytes:
    message: dict[str, Any] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }

    def event(payload: dict[str, Any]) -> bytes:
        return sse(payload, payload["type"])

    def delta(index: Any, text: str) -> bytes:
        return event(
            {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}
        )

    return b"".join(
        [
            event({"type": "message_start", "message": message}),
            *(
                event(
                    {
                        "type": "content_block_start",
                        "index": at,
                        "content_block": {"type": "text", "text": ""},
                    }
                )
                for at in (0, second)
            ),
            split_secret_stream(delta, odd, second),
            *(event({"type": "content_block_stop", "index": at}) for at in (0, second)),
            event(
                {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}}
            ),
            event({"type": "message_stop"}),
        ]
    )


def anthropic_by_place(stream: bytes) -> dict[Any, str]:
    return joined_by_place(
        [
            (client_place(body["index"]), body["delta"]["text"])
            for kind, body in payloads(stream)
            if kind == "content_block_delta"
        ]
    )


def responses_split_secret(odd: Any, odd_field: str, second: int = 1) -> bytes:
    """Two messages (``output_index``) or two parts of one (``content_index``)."""

    def event(payload: dict[str, Any]) -> bytes:
        return sse(payload, payload["type"])

    def place(at: Any) -> dict[str, Any]:
        other = "content_index" if odd_field == "output_index" else "output_index"
        return {odd_field: at, other: 0, "item_id": f"msg_{at}" if odd_field == "output_index" else "msg_0"}

    def delta(at: Any, text: str) -> bytes:
        return event({"type": "response.output_text.delta", **place(at), "delta": text, "logprobs": []})

    items = (0, second) if odd_field == "output_index" else (0,)
    parts = (0,) if odd_field == "output_index" else (0, 1)
    item = {"type": "message", "role": "assistant", "status": "in_progress", "content": []}
    part = {"type": "output_text", "text": "", "annotations": []}

    def item_event(kind: str, at: int) -> bytes:
        return event(
            {"type": f"response.output_item.{kind}", "output_index": at, "item": {**item, "id": f"msg_{at}"}}
        )

    return b"".join(
        [
            event({"type": "response.created", "response": {"id": "resp_1", "output": []}}),
            *(item_event("added", at) for at in items),
            *(
                event(
                    {
                        "type": "response.content_part.added",
                        "output_index": 0,
                        "content_index": at,
                        "part": part,
                    }
                )
                for at in parts
            ),
            split_secret_stream(delta, odd, second),
            *(item_event("done", at) for at in items),
            event(
                {
                    "type": "response.completed",
                    "response": {"id": "resp_1", "status": "completed", "output": []},
                }
            ),
        ]
    )


def responses_by_place(stream: bytes, odd_field: str) -> dict[Any, str]:
    return joined_by_place(
        [
            (client_place(body[odd_field]), body["delta"])
            for kind, body in payloads(stream)
            if kind == "response.output_text.delta"
        ]
    )


def gemini_split_secret(odd: Any) -> bytes:
    def chunk(at: Any, text: str) -> bytes:
        return sse({"candidates": [{"index": at, "content": {"role": "model", "parts": [{"text": text}]}}]})

    finish = [
        {"index": at, "content": {"role": "model", "parts": []}, "finishReason": "STOP"} for at in (0, 1)
    ]
    return split_secret_stream(chunk, odd) + sse({"candidates": finish, "modelVersion": "gemini-2.5-flash"})


def gemini_by_place(stream: bytes) -> dict[Any, str]:
    return joined_by_place(
        [
            (client_place(candidate["index"]), part.get("text", ""))
            for _, body in payloads(stream)
            for candidate in body.get("candidates", [])
            for part in candidate["content"]["parts"]
        ]
    )


def chat_calls_split_secret(odd: Any) -> bytes:
    """The arguments of two tool calls of one choice (``tool_calls[].index``)."""
    envelope = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse({**envelope, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    def arguments(at: Any, text: str) -> bytes:
        return chunk({"tool_calls": [{"index": at, "function": {"arguments": text}}]})

    starts = (
        chunk(
            {
                "tool_calls": [
                    {"index": at, "id": f"call_{at}", "type": "function", "function": {"name": "echo"}}
                ]
            }
        )
        for at in (0, 1)
    )
    return b"".join(
        [*starts, split_secret_stream(arguments, odd), chunk({}, "tool_calls"), b"data: [DONE]\n\n"]
    )


def chat_calls_by_place(stream: bytes) -> dict[Any, str]:
    return joined_by_place(
        [
            (client_place(call["index"]), call.get("function", {}).get("arguments") or "")
            for _, body in payloads(stream)
            for choice in body["choices"]
            for call in choice["delta"].get("tool_calls", [])
        ]
    )


PLACED_STREAMS: dict[
    str, tuple[Callable[[], StreamSession], Callable[[Any], bytes], Callable[[bytes], dict[Any, str]]]
] = {
    "anthropic": (
        lambda: Anthropic().stream_session(residual_filters()),
        anthropic_split_secret,
        anthropic_by_place,
    ),
    "responses output_index": (
        lambda: OpenAIResponses().stream_session(residual_filters()),
        partial(responses_split_secret, odd_field="output_index"),
        lambda stream: responses_by_place(stream, "output_index"),
    ),
    "responses content_index": (
        lambda: OpenAIResponses().stream_session(residual_filters()),
        partial(responses_split_secret, odd_field="content_index"),
        lambda stream: responses_by_place(stream, "content_index"),
    ),
    "gemini": (lambda: Gemini().stream_session(residual_filters()), gemini_split_secret, gemini_by_place),
    "chat tool_calls": (
        lambda: OpenAIChat().stream_session(residual_filters()),
        chat_calls_split_secret,
        chat_calls_by_place,
    ),
}


@pytest.mark.parametrize("odd", ODD_INDEXES)
@pytest.mark.parametrize("whole", [True, False])
@pytest.mark.parametrize("name", sorted(PLACED_STREAMS))
def test_text_at_an_index_that_names_no_place_is_not_joined_to_another_places_text(
    name: str, odd: Any, whole: bool
) -> None:
    """Text whose index is 1.0, "1", true or -1 is read by the proxy at another place than a lenient client
    reads it: it leaves at the place it was read at, or not at all, so no client joins it to the head or the
    tail of a secret at place 1."""
    make_session, make_stream, by_place = PLACED_STREAMS[name]
    output = run(make_session(), make_stream(odd), None if whole else [300, 700, 1100])
    texts = by_place(output)
    assert not any(GITHUB_TOKEN in text or STRIPE_KEY in text for text in texts.values())
    # Where the key's head is read at place 0, the word after it may be read as one of its groups and
    # redacted with it ("sk_live_Zr8Kq2world, Io9p..."); the rest of place 0 stays, in its order.
    assert texts[0].startswith("Hello ") and texts[0].endswith("Bye.")
    assert "world, " in texts[0] or "[REDACTED:stripe-live-secret-key]" in texts[0]


@pytest.mark.parametrize("whole", [True, False])
@pytest.mark.parametrize(
    ("make_session", "make_stream", "by_place"),
    [PLACED_STREAMS["anthropic"], PLACED_STREAMS["responses output_index"]],
    ids=["anthropic", "responses"],
)
def test_text_at_a_place_never_started_is_not_joined_to_the_place_renumbered_to_it(
    make_session: Callable[[], StreamSession],
    make_stream: Callable[..., bytes],
    by_place: Callable[[bytes], dict[Any, str]],
    whole: bool,
) -> None:
    """Upstream places 0 and 5 reach the client as 0 and 1: text at place 1, which no start opened, is dropped
    and noted, not sent at place 1, where the client joins it to the text the filters read at place 5."""
    session = make_session()
    output = run(session, make_stream(1, second=5), None if whole else [300, 700, 1100])
    texts = by_place(output)
    assert not any(GITHUB_TOKEN in text or STRIPE_KEY in text for text in texts.values())
    assert sorted(texts) == [0, 1] and texts[1].startswith("Intro. ")
    assert "Or " not in texts[1] and "is it. " not in texts[1]
    assert any("never opened" in note for note in session.notes)


@pytest.mark.parametrize("odd", ODD_INDEXES)
@pytest.mark.parametrize("filtering", [True, False])
def test_anthropic_text_at_an_index_that_names_no_block_is_read_apart_from_every_block(
    odd: Any, filtering: bool
) -> None:
    """The completion a stream is recorded by joins a delta at an index that names no started block to no
    block's text (filtered, that delta is dropped), and the residual scan reads it on its own, so a secret
    whole in it is still found."""
    scan = JsonScan(SECRETS, lambda rule: filtering, rewrites=filtering)
    filters = (
        StreamFilters(text_filter=Redactors(), residual=scan) if filtering else StreamFilters(residual=scan)
    )
    session = Anthropic().stream_session(filters)
    run(session, anthropic_split_secret(odd).replace(b" is it. ", f" is it. {GITHUB_TOKEN} ".encode()))
    recorded = [segment.text for segment in session.completion.text]
    assert recorded == ["Hello world, Bye.", f"Intro. {STRIPE_KEY[14:]} maybe. token {GITHUB_TOKEN[:12]}"]
    assert "github-pat" in {found.rule.id for found in scan.found}


def gemini_text_and_call(*, snake: bool, text: str = f"see {STRIPE_KEY} ") -> dict[str, Any]:
    """A Gemini answer whose part carries text and a function call at once (the SDK runs the call)."""
    call_key = "function_call" if snake else "functionCall"
    part = {"text": text, call_key: {"name": "deploy", "args": {"token": GITHUB_TOKEN}}}
    return {"candidates": [{"index": 0, "content": {"role": "model", "parts": [part]}}]}


@pytest.mark.parametrize("text", [f"see {STRIPE_KEY} ", "plain words "], ids=["secret-text", "plain-text"])
@pytest.mark.parametrize("snake", [False, True], ids=["camelCase", "snake_case"])
@pytest.mark.parametrize("verdict", ["drop", "release"])
def test_a_gemini_part_with_text_and_a_call_is_read_as_the_call(
    snake: bool, verdict: ToolDecision, text: str
) -> None:
    """The gate decides the call, its arguments are filtered, and its text is read by the residual scan:
    neither passes unread beside the other."""
    asked: list[str] = []

    def gate(call: ToolCall, complete: bool) -> ToolDecision:
        asked.append(call.name)
        return verdict

    filters = StreamFilters(
        tool_gate=gate,
        drop_notice=lambda call: f"[{call.name} needs approval]",
        argument_filter=Redactors(),
        residual=JsonScan(SECRETS, lambda rule: True),
    )
    session = Gemini(model_hint="gemini-2.5-flash").stream_session(filters)
    finish = {"candidates": [{"index": 0, "content": {"role": "model", "parts": []}, "finishReason": "STOP"}]}
    output = run(session, sse(gemini_text_and_call(snake=snake, text=text)) + sse(finish))
    assert asked == ["deploy"]
    assert [call.name for call in session.completion.tool_calls] == ["deploy"]
    assert GITHUB_TOKEN[4:12].encode() not in output and STRIPE_KEY[8:16].encode() not in output
    assert gemini_sdk_view(output)[1] == ([] if verdict == "drop" else ["deploy"])


@pytest.mark.parametrize("snake", [False, True], ids=["camelCase", "snake_case"])
def test_a_gemini_answer_part_with_text_and_a_call_records_the_call(snake: bool) -> None:
    """The same part in a JSON answer is read as the call it names."""
    body = json.dumps(gemini_text_and_call(snake=snake)).encode()
    completion = Gemini(model_hint="gemini-2.5-flash").parse_response(body)
    assert [call.name for call in completion.tool_calls] == ["deploy"]


@pytest.mark.parametrize("name", TEXT_STREAMS)
def test_a_secret_as_the_key_of_a_number_is_redacted_after_a_long_run_of_equal_events(name: str) -> None:
    """Once a stream's fields have settled (each event reads the same as the last, so the residual scan
    is not run again), an event that adds a top-level field holding a number, whose key is a secret, is
    still read: the key leaves redacted and the finding is recorded."""
    secret = "AKIA" + "Q3EGRIZLJ5X7B2NV"
    dialect, text_stream, _ = TEXT_STREAMS[name]
    parser = SSEParser()
    events = parser.feed(text_stream(["word "] * 400)) + parser.finish()[0]
    marked = 0
    stream = b""
    for event in events:
        payload = json.loads(event.data) if event.data not in (None, "[DONE]") else None
        if isinstance(payload, dict) and "word" in json.dumps(payload) and marked < 400:
            marked += 1
            if marked == 380:
                payload[secret] = 7
            stream += sse(payload, event.event)
        else:
            stream += event.raw
    filters = residual_filters()
    sent = run(dialect.stream_session(filters), stream)
    assert secret.encode() not in sent
    assert isinstance(filters.residual, JsonScan) and [found.rule.id for found in filters.residual.found] == [
        "aws-access-key-id"
    ]


def _stopped(session: StreamSession, stream: bytes) -> bytes:
    """What the session sent of ``stream`` before ``ScanTimeout`` left it (which it must)."""
    sent = b""
    with pytest.raises(ScanTimeout):
        for start in range(0, len(stream), 64):
            sent += session.feed(stream[start : start + 64])
        sent += session.finish()
    return sent


RUN_OUT = "k=" + "a" * 40 + "!"


@pytest.mark.parametrize("name", sorted(ARGUMENT_CASES))
def test_a_rule_out_of_time_on_streamed_arguments_stops_the_session(name: str) -> None:
    """In every dialect, where the stream redactor of a tool call's arguments runs a rule out of time,
    ``ScanTimeout`` leaves the session (the relay cuts the stream there): nothing of what it read was
    sent."""
    scanner = backtracking_scanner()
    budget = scanner.budget()
    session = DIALECTS[name].stream_session(
        StreamFilters(argument_filter=lambda where: UnescapingFilter(StreamRedactor(scanner, budget=budget)))
    )
    pieces = split(json.dumps({"note": RUN_OUT}), [7])
    # Gemini gives a call whole, its arguments as an object.
    call = {"functionCall": {"name": "deploy", "args": {"note": RUN_OUT}}}
    gemini = sse({"candidates": [{"content": {"parts": [call], "role": "model"}, "index": 0}]})
    sent = _stopped(session, gemini if name == "gemini" else ARGUMENT_CASES[name][0](pieces))
    assert b"k=" not in sent and list(budget.timed_out) == ["slow"]


@pytest.mark.parametrize("name", sorted(TEXT_STREAMS))
def test_a_rule_out_of_time_on_streamed_text_stops_the_session(name: str) -> None:
    """The same for the text a stream redactor reads."""
    scanner = backtracking_scanner()
    budget = scanner.budget()
    dialect, text_stream, _ = TEXT_STREAMS[name]
    session = dialect.stream_session(
        StreamFilters(text_filter=lambda where: StreamRedactor(scanner, budget=budget))
    )
    sent = _stopped(session, text_stream(split("Here: " + RUN_OUT, [7])))
    assert b"k=" not in sent and list(budget.timed_out) == ["slow"]


@pytest.mark.parametrize("shape_holds", [True, False])
def test_an_event_whose_refused_file_proves_of_an_unwritable_shape_is_not_sent(
    shape_holds: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file refused in a streamed MCP answer is recorded as withheld: the message goes out as a
    JSON-RPC error in its place, and where the event then proves of a shape its dialect cannot write,
    nothing of it goes out, rather than the file as it came."""
    blob = base64.b64encode(b"%PDF-1.7\n" + bytes(range(256))).decode()
    message = {
        "jsonrpc": "2.0",
        "id": 7,
        "result": {"contents": [{"uri": "file:///report.pdf", "mimeType": "application/pdf", "blob": blob}]},
    }
    filters = StreamFilters(text_filter=lambda where: PassThrough(), file_reader=lambda file: "refused")
    session = MCP().stream_session(filters)
    if not shape_holds:

        def unwritable(event: Any, payload: Any) -> list[bytes]:
            raise TypeError("an unexpected shape")

        monkeypatch.setattr(session, "_transform", unwritable)
    sent = session.feed(sse(message)) + session.finish()
    assert blob.encode() not in sent
    if shape_holds:
        assert b'"id": 7' in sent or b'"id":7' in sent
        assert b"egressguard_blocked" in sent
    else:
        assert sent == b""
        assert any("refused file" in note for note in session.notes)


def test_a_refused_file_of_an_event_that_failed_refuses_no_later_event() -> None:
    """An event that refused a file and then failed before it was sent leaves nothing behind that a later
    event, made where it stood in memory, could take for its own refusal."""
    blob = base64.b64encode(b"%PDF-1.7\n" + bytes(range(256))).decode()
    resource = {"uri": "file:///report.pdf", "mimeType": "application/pdf", "blob": blob}
    refused = {"jsonrpc": "2.0", "id": 7, "result": {"contents": [resource]}}
    filters = StreamFilters(text_filter=lambda where: PassThrough(), file_reader=lambda file: "refused")
    session = MCP().stream_session(filters)
    transform = session._transform

    def failing(event: Any, payload: Any) -> list[bytes]:
        raise TypeError("an unexpected shape")

    session._transform = failing  # type: ignore[method-assign]
    assert session.feed(sse(refused)) == b""
    session._transform = transform  # type: ignore[method-assign]
    for identifier in range(8, 40):
        answer = {"jsonrpc": "2.0", "id": identifier, "result": {"content": [{"type": "text", "text": "ok"}]}}
        assert b"egressguard_blocked" not in session.feed(sse(answer))


def as_piece(raw: bytes, kind: int) -> Sent:
    """Bytes as a session's piece of what it sent: plain, written here, or an event sent as it came."""
    return (raw, Serialised(raw), (SSEEvent(data=None, raw=raw), None))[kind]


@given(
    st.lists(st.builds(as_piece, st.binary(max_size=6), st.integers(min_value=0, max_value=2)), max_size=4),
    st.binary(max_size=20),
    st.integers(min_value=-1, max_value=20),
)
def test_pieces_are_compared_with_what_was_sent_as_the_bytes_they_join_to(
    pieces: list[Sent], other: bytes, cut: int
) -> None:
    """The read-back takes a session's pieces for what left only where they join to those bytes: compared
    in place, they are where joined they are, and not where any byte differs or is missing."""
    joined = sent_bytes(pieces)
    for sent in (joined, other, joined[:cut] if cut >= 0 else joined + b"x"):
        assert stream_module.sent_as(pieces, sent) == (joined == sent)
