"""A streamed tool call is decided once, at its place, on the name it has then: what names the call later
(a name fragment, another name in the item's last event or the final response, a call started again at
the same index, a call only the final response holds) never reaches the agent undecided. Checked through
the official SDKs' own stream accumulators."""

from __future__ import annotations

import json
from typing import Any

from proxy.dialects import Anthropic, OpenAIChat, OpenAIResponses, StreamFilters, ToolDecision
from proxy.dialects.stream import MISPLACED_RULE
from proxy.exchange import ToolCall
from tests.test_streaming import (
    ANTHROPIC_MESSAGE,
    anthropic_sdk_view,
    chat_sdk_view,
    gate_dropping,
    payloads,
    responses_sdk_view,
    run,
    sse,
)

ENVELOPE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}


def chat_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return sse({**ENVELOPE, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def chat_stream(*calls: dict[str, Any]) -> bytes:
    return (
        chat_chunk({"role": "assistant", "content": None})
        + b"".join(chat_chunk({"tool_calls": [{"index": 0, **call}]}) for call in calls)
        + chat_chunk({}, "tool_calls")
        + b"data: [DONE]\n\n"
    )


def test_chat_a_name_split_over_deltas_is_cut_when_a_later_fragment_renames_the_released_call() -> None:
    session = OpenAIChat().stream_session(gate_dropping("delete_customer"))
    stream = chat_stream(
        {"id": "call_1", "type": "function", "function": {"name": "d", "arguments": ""}},
        {"function": {"name": "elete_customer", "arguments": ""}},
        {"function": {"arguments": '{"id": 42}'}},
    )
    text, names = chat_sdk_view(run(session, stream))
    assert "delete_customer" not in names and names == ["d"]
    assert text == "[delete_customer needs approval]"
    assert session.dropped_tool_calls == [("delete_customer", "call_1")]
    assert session.completion.tool_calls[0].name == "delete_customer"


def test_chat_a_released_call_given_another_kind_is_cut() -> None:
    session = OpenAIChat().stream_session(gate_dropping())
    stream = chat_stream(
        {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": ""}},
        {"type": "custom", "custom": {"input": "rm -rf /"}},
    )
    output = run(session, stream)
    assert b"rm -rf" not in output
    assert session.notes == ["a released tool call was named again, as lookup; cut short"]


def test_chat_continuation_deltas_repeating_the_calls_kind_and_id_stream_on() -> None:
    """Some servers repeat ``type`` and ``id`` in every delta: neither changes the tool called."""
    session = OpenAIChat().stream_session(gate_dropping("delete_customer"))
    stream = chat_stream(
        {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": ""}},
        {"id": "call_1", "type": "function", "function": {"arguments": '{"id": 42}'}},
    )
    text, names = chat_sdk_view(run(session, stream))
    assert (text, names) == ("", ["lookup"])
    assert session.notes == [] and session.dropped_tool_calls == []


def test_chat_a_held_call_whose_name_grows_is_decided_on_its_whole_name_and_released_whole() -> None:
    """Held from its first piece, a call is asked again on the name the later pieces make: the gate's
    release of the whole call (an approval for it) lets it out, where the grown name was taken for
    another call at the place and dropped."""
    asked: list[tuple[str, bool]] = []

    def gate(call: ToolCall, complete: bool) -> ToolDecision:
        asked.append((call.name, complete))
        return "release" if complete else "hold"

    session = OpenAIChat().stream_session(
        StreamFilters(tool_gate=gate, drop_notice=lambda call: "[withheld]")
    )
    stream = chat_stream(
        {"id": "call_1", "type": "function", "function": {"name": "delete_", "arguments": ""}},
        {"function": {"name": "customer", "arguments": '{"id": '}},
        {"function": {"arguments": "42}"}},
    )
    text, names = chat_sdk_view(run(session, stream))
    assert (text, names) == ("", ["delete_customer"])
    assert asked == [("delete_", False), ("delete_customer", False), ("delete_customer", True)]
    assert session.notes == [] and session.ambiguities == {}


def test_chat_a_held_name_grown_into_one_the_gate_lets_through_goes_out_whole_at_once() -> None:
    def gate(call: ToolCall, complete: bool) -> ToolDecision:
        return "hold" if call.name == "read" else "release"

    session = OpenAIChat().stream_session(StreamFilters(tool_gate=gate))
    stream = chat_stream(
        {"id": "call_1", "type": "function", "function": {"name": "read", "arguments": ""}},
        {"function": {"name": "er_stats", "arguments": '{"id": 42}'}},
    )
    assert chat_sdk_view(run(session, stream)) == ("", ["reader_stats"])


def test_chat_a_released_call_whose_whole_name_is_said_again_streams_on_named_once() -> None:
    """Some servers repeat the name in every delta: no change of tool, so not cut; it leaves once, since
    the OpenAI SDK would append it to the name it has."""
    session = OpenAIChat().stream_session(gate_dropping("lookuplookup"))
    stream = chat_stream(
        {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": ""}},
        {"function": {"name": "lookup", "arguments": '{"id": 42}'}},
    )
    assert chat_sdk_view(run(session, stream)) == ("", ["lookup"])
    assert session.notes == [] and session.dropped_tool_calls == []
    assert session.completion.tool_calls[0].name == "lookup"


RESPONSE = {"id": "resp_1", "object": "response", "created_at": 1, "model": "gpt-4.1", "output": []}
RESPONSE |= {"status": "in_progress", "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}


def call_item(
    name: str, call_id: str = "call_1", item_id: str = "fc_1", arguments: str = ""
) -> dict[str, Any]:
    item = {"id": item_id, "type": "function_call", "status": "in_progress", "call_id": call_id}
    return item | {"name": name, "arguments": arguments}


def call_events(item: dict[str, Any], position: int, done: dict[str, Any]) -> list[dict[str, Any]]:
    located = {"item_id": item["id"], "output_index": position}
    return [
        {"type": "response.output_item.added", "output_index": position, "item": item},
        {"type": "response.function_call_arguments.delta", **located, "delta": done["arguments"]},
        {"type": "response.function_call_arguments.done", **located, "arguments": done["arguments"]},
        {"type": "response.output_item.done", "output_index": position, "item": done},
    ]


def responses_stream(events: list[dict[str, Any]], output: list[dict[str, Any]]) -> bytes:
    whole = [
        {"type": "response.created", "response": RESPONSE},
        *events,
        {"type": "response.completed", "response": {**RESPONSE, "status": "completed", "output": output}},
    ]
    return b"".join(
        sse({**event, "sequence_number": number}, event["type"]) for number, event in enumerate(whole)
    )


def final_calls(output: bytes) -> list[tuple[str, str, str]]:
    (completed,) = [payload for kind, payload in payloads(output) if kind == "response.completed"]
    return [
        (item["name"], item["call_id"], item["arguments"])
        for item in completed["response"]["output"]
        if item["type"] == "function_call"
    ]


def test_responses_a_call_renamed_in_its_last_event_and_the_final_response_is_sent_as_decided() -> None:
    session = OpenAIResponses().stream_session(gate_dropping("delete_customer"))
    done = {**call_item("delete_customer", "call_9", arguments='{"id": 42}'), "status": "completed"}
    output = run(session, responses_stream(call_events(call_item("lookup"), 0, done), [done]))
    assert b"delete_customer" not in output and b"call_9" not in output
    assert responses_sdk_view(output) == ("", ["lookup"])
    assert final_calls(output) == [("lookup", "call_1", '{"id": 42}')]
    assert session.ambiguities == {MISPLACED_RULE: 2}


def test_responses_a_call_only_the_final_response_holds_is_gated() -> None:
    session = OpenAIResponses().stream_session(gate_dropping("delete_customer"))
    kept = {**call_item("lookup", "call_2", "fc_2", '{"id": 1}'), "status": "completed"}
    hidden = {**call_item("delete_customer", arguments='{"id": 42}'), "status": "completed"}
    output = run(session, responses_stream([], [hidden, kept]))
    text, names = responses_sdk_view(output)
    assert names == ["lookup"] and text == "[delete_customer needs approval]"
    assert session.dropped_tool_calls == [("delete_customer", "call_1")]


def test_responses_a_second_call_at_a_used_output_index_is_dropped_not_given_the_first_decision() -> None:
    session = OpenAIResponses().stream_session(gate_dropping())
    first = {**call_item("lookup", arguments='{"id": 1}'), "status": "completed"}
    second = {**call_item("delete_customer", "call_2", "fc_2", '{"id": 42}'), "status": "completed"}
    events = call_events(call_item("lookup"), 0, first) + call_events(
        call_item("delete_customer", "call_2", "fc_2"), 0, second
    )
    output = run(session, responses_stream(events, [first]))
    assert b"delete_customer" not in output.replace(b"[delete_customer needs approval]", b"")
    assert session.dropped_tool_calls == [("delete_customer", "call_2")]
    assert session.ambiguities == {MISPLACED_RULE: 1}


def test_responses_a_held_call_renamed_before_its_arguments_end_is_dropped() -> None:
    """Held from its name, a call whose last event names another tool is not released on that name."""
    asked: list[tuple[str, bool]] = []

    def gate(call: ToolCall, complete: bool) -> ToolDecision:
        asked.append((call.name, complete))
        return "release" if complete or call.name == "lookup" else "hold"

    session = OpenAIResponses().stream_session(
        StreamFilters(tool_gate=gate, drop_notice=lambda call: "[withheld]")
    )
    done = {**call_item("lookup", arguments='{"id": 42}'), "status": "completed"}
    events = call_events(call_item("delete_customer"), 0, done)
    del events[2]  # no arguments.done: the last event, naming another tool, ends the held call
    output = run(session, responses_stream(events, [done]))
    assert responses_sdk_view(output) == ("[withheld]", [])
    assert asked == [("delete_customer", False)]


def anthropic_stream(blocks: list[dict[str, Any]]) -> bytes:
    events = [
        {"type": "message_start", "message": ANTHROPIC_MESSAGE},
        *blocks,
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 2},
        },
        {"type": "message_stop"},
    ]
    return b"".join(sse(event, event["type"]) for event in events)


def tool_use(index: int, name: str, call_id: str, arguments: dict[str, Any]) -> list[dict[str, Any]]:
    block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
    delta = {"type": "input_json_delta", "partial_json": json.dumps(arguments)}
    return [
        {"type": "content_block_start", "index": index, "content_block": block},
        {"type": "content_block_delta", "index": index, "delta": delta},
        {"type": "content_block_stop", "index": index},
    ]


def test_anthropic_a_block_started_again_at_a_used_index_is_dropped_not_given_the_first_decision() -> None:
    session = Anthropic().stream_session(gate_dropping())
    blocks = tool_use(0, "lookup", "t1", {"q": 1}) + tool_use(0, "delete_customer", "t2", {"id": 42})
    output = run(session, anthropic_stream(blocks))
    assert b"delete_customer" not in output.replace(b"[delete_customer needs approval]", b"")
    assert anthropic_sdk_view(output) == ("[delete_customer needs approval]", ["lookup"])
    assert session.dropped_tool_calls == [("delete_customer", "t2")]
    assert session.ambiguities == {MISPLACED_RULE: 1}


def test_anthropic_a_held_block_is_released_once_whole_and_not_taken_for_a_reused_index() -> None:
    """The held block's own start, sent once the gate releases it, keeps the decision just made."""

    def gate(call: ToolCall, complete: bool) -> ToolDecision:
        return "release" if complete else "hold"

    session = Anthropic().stream_session(StreamFilters(tool_gate=gate))
    output = run(session, anthropic_stream(tool_use(0, "delete_customer", "t1", {"id": 42})))
    assert anthropic_sdk_view(output) == ("", ["delete_customer"])
    assert session.notes == [] and session.ambiguities == {}
