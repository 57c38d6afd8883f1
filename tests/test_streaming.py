"""Stream sessions: incremental parsing, text filters and the tool-call gate, checked through the
official SDKs' own stream accumulators."""

from __future__ import annotations

import json
import re
from pathlib import Path
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
from proxy.dialects.stream import StreamSession
from proxy.sse import SSEParser

FIXTURES = Path(__file__).parent / "fixtures" / "dialects"
DIALECTS: dict[str, Dialect] = {
    "openai_chat": OpenAIChat(),
    "openai_responses": OpenAIResponses(),
    "anthropic": Anthropic(),
    "gemini": Gemini(model_hint="gemini-2.5-flash"),
}
SECRET = re.compile(r"sk-proj-\w+")
RESPONSE_EVENT = TypeAdapter[Any](ResponseStreamEvent)
ANTHROPIC_EVENT = TypeAdapter[Any](RawMessageStreamEvent)


def stream_fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}_stream.sse").read_bytes()


def json_fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}_response.json").read_bytes()


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
    assert session.completion == dialect.parse_response(json_fixture(name))
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
    filters = StreamFilters(text_filter=redactor, tool_gate=lambda tool, call_id: "release")
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
    def gate(name: str, call_id: str | None) -> ToolDecision:
        return "drop" if name in names else "release"

    return StreamFilters(tool_gate=gate, drop_notice=lambda name, call_id: f"[{name} needs approval]")


def test_chat_gate_drops_one_call_and_renumbers_the_rest() -> None:
    """A dropped call vanishes, the released one keeps index 0, and the notice becomes text."""
    session = OpenAIChat().stream_session(gate_dropping("lookup_ticket"))
    output = run(session, stream_fixture("openai_chat"))
    text, calls = chat_sdk_view(output)
    assert calls == ["delete_ticket"]
    assert text.endswith("[lookup_ticket needs approval]")
    assert session.dropped_tool_calls == [("lookup_ticket", "call_Tk42")]
    assert len(session.completion.tool_calls) == 2


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

    def gate(name: str, call_id: str | None) -> ToolDecision:
        decisions.append((name, call_id))
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
    filters = StreamFilters(tool_gate=lambda name, call_id: "drop")
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
    """An event whose data is not JSON is forwarded unchanged and recorded in notes."""
    stream = b"data: {not json\n\n" + stream_fixture("openai_chat")
    session = OpenAIChat().stream_session(StreamFilters(text_filter=redactor))
    output = run(session, stream)
    assert output.startswith(b"data: {not json\n\n")
    assert session.notes == ["event 'message' is not JSON; passed through"]


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
    assert session.completion == MCP().parse_response(json_fixture("mcp_tools_call"))


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
    filters = StreamFilters(tool_gate=lambda name, call_id: "drop")
    output = run(OpenAIResponses().stream_session(filters), stream_fixture("openai_responses"))
    indexes = {payload["output_index"] for _, payload in payloads(output) if "output_index" in payload}
    assert indexes == {0}
    assert responses_sdk_view(output) == ("The build failed at step 4; re-running now.", [])
