"""A tool call's arguments streamed over events on a route no dialect knows (an Assistants run's
``thread.run.step.delta`` events, Chat chunks, Anthropic's and the Responses API's argument deltas) are
read joined as the SDKs join them (an Assistants step's by its id and the call's index): a key split
anywhere over two or three deltas reaches the client redacted, and a call withheld takes with it whatever
its filter held back."""

from __future__ import annotations

import json
from itertools import combinations
from typing import Any

import pytest

from proxy.dialects import Generic, StreamFilters
from proxy.dialects.stream import ToolDecision
from proxy.exchange import ToolCall
from proxy.scanning.redact import StreamRedactor
from tests.test_e2e_assistants import sse, step_call_stream
from tests.test_streaming import SECRETS

AWS = "AKIA" + "Z7QW3RTY2UIO4PAS"
ARGUMENTS = json.dumps({"key": AWS})


def _step_stream(pieces: list[str]) -> bytes:
    opened = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "save", "arguments": ""}}
    return step_call_stream(opened, "arguments", pieces)


def _chunk(call: dict[str, Any] | None, finish: str | None = None) -> bytes:
    delta = {} if call is None else {"tool_calls": [{"index": 0, **call}]}
    chunk = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def _chat_stream(pieces: list[str]) -> bytes:
    opened = {"id": "call_1", "type": "function", "function": {"name": "save", "arguments": ""}}
    body = _chunk(opened) + b"".join(_chunk({"function": {"arguments": piece}}) for piece in pieces)
    return body + _chunk(None, "tool_calls") + b"data: [DONE]\n\n"


def _anthropic_stream(pieces: list[str]) -> bytes:
    block = {"type": "tool_use", "id": "toolu_1", "name": "save", "input": {}}
    body = sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block})
    for piece in pieces:
        delta = {"type": "input_json_delta", "partial_json": piece}
        body += sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
    return body + sse("content_block_stop", {"type": "content_block_stop", "index": 0})


def _responses_stream(pieces: list[str]) -> bytes:
    item = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "save", "arguments": ""}
    body = sse(
        "response.output_item.added", {"type": "response.output_item.added", "output_index": 0, "item": item}
    )
    for piece in pieces:
        kind = "response.function_call_arguments.delta"
        body += sse(kind, {"type": kind, "item_id": "fc_1", "output_index": 0, "delta": piece})
    return body


def _streamed_arguments(data: Any) -> str:
    """The arguments one event adds to the call, as the SDK of its shape joins them."""
    if data.get("object") == "thread.run.step.delta":
        (call,) = data["delta"]["step_details"]["tool_calls"]
        return str(call["function"].get("arguments", ""))
    if data.get("object") == "chat.completion.chunk":
        calls = data["choices"][0]["delta"].get("tool_calls", [])
        return "".join(call.get("function", {}).get("arguments", "") for call in calls)
    if data.get("type") == "content_block_delta":
        return str(data["delta"]["partial_json"])
    return str(data["delta"]) if data.get("type") == "response.function_call_arguments.delta" else ""


SHAPES = {
    "assistants step deltas": _step_stream,
    "chat chunks": _chat_stream,
    "anthropic input_json_delta": _anthropic_stream,
    "responses argument deltas": _responses_stream,
}


def _sent(shape: str, pieces: list[str], decision: ToolDecision) -> bytes:
    def gate(call: ToolCall, complete: bool) -> ToolDecision:
        return decision

    session = Generic().stream_session(
        StreamFilters(
            text_filter=lambda where: StreamRedactor(SECRETS),
            argument_filter=lambda where: StreamRedactor(SECRETS),
            tool_gate=gate,
        )
    )
    return session.feed(SHAPES[shape](pieces)) + session.finish()


def _joined_arguments(sent: bytes) -> str:
    """The call's arguments as a client accumulates them from the events sent."""
    joined = ""
    for block in filter(None, sent.split(b"\n\n")):
        data = block.partition(b"data: ")[2]
        if data.startswith(b"{"):
            joined += _streamed_arguments(json.loads(data))
    return joined


def _splits(parts: int) -> list[list[str]]:
    return [
        [ARGUMENTS[start:end] for start, end in zip((0, *cuts), (*cuts, len(ARGUMENTS)), strict=True)]
        for cuts in combinations(range(1, len(ARGUMENTS)), parts - 1)
    ]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("parts", [2, 3])
def test_a_key_split_anywhere_over_a_calls_deltas_is_redacted(shape: str, parts: int) -> None:
    leaks = []
    for pieces in _splits(parts):
        sent = _sent(shape, pieces, "release")
        joined = _joined_arguments(sent)
        if AWS[4:12].encode() in sent or AWS[-8:].encode() in sent or AWS in joined:
            leaks.append(pieces)
        assert json.loads(joined).keys() == {"key"}
    assert leaks == []


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("parts", [2, 3])
def test_a_withheld_calls_held_back_arguments_are_never_sent(shape: str, parts: int) -> None:
    for pieces in _splits(parts):
        sent = _sent(shape, pieces, "drop")
        assert _joined_arguments(sent) == ""
        assert AWS[:4].encode() + AWS[4:6].encode() not in sent and AWS[-4:].encode() not in sent


def _two_pieces_in_one_event(pieces: list[str]) -> bytes:
    """Chat chunks whose last carries the last two pieces of the call's arguments, each an entry of its
    ``tool_calls`` at the call's index (which the SDK joins in order), and finishes the choice."""
    opened = {"id": "call_1", "type": "function", "function": {"name": "save", "arguments": ""}}
    body = _chunk(opened) + b"".join(_chunk({"function": {"arguments": piece}}) for piece in pieces[:-2])
    calls = [{"index": 0, "function": {"arguments": piece}} for piece in pieces[-2:]]
    last = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": "tool_calls"}],
    }
    return body + b"data: " + json.dumps(last).encode() + b"\n\ndata: [DONE]\n\n"


@pytest.mark.parametrize("parts", [2, 3])
def test_an_event_carrying_two_pieces_of_one_call_gets_what_was_held_in_the_last(parts: int) -> None:
    """What a call's arguments held back goes in the last of the pieces the event ending them carries:
    joined in order, as the SDK joins them, the key is redacted and the arguments whole."""
    for pieces in _splits(parts):
        session = Generic().stream_session(
            StreamFilters(
                text_filter=lambda where: StreamRedactor(SECRETS),
                argument_filter=lambda where: StreamRedactor(SECRETS),
                tool_gate=lambda call, complete: "release",
            )
        )
        sent = session.feed(_two_pieces_in_one_event(pieces)) + session.finish()
        joined = _joined_arguments(sent)
        assert AWS[4:12].encode() not in sent and AWS[-8:].encode() not in sent, pieces
        assert json.loads(joined) == {"key": "[REDACTED:aws-access-key-id]"}, pieces


OTHER = json.dumps({"path": "notes/today.md"})


def _two_calls_stream(pieces: list[str], others: list[str]) -> bytes:
    """Chat chunks streaming two calls at once: each chunk a piece of the first call's arguments (``pieces``)
    and one of the second's (``others``)."""
    opened = [
        {
            "index": index,
            "id": f"call_{index}",
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        for index, name in enumerate(("save", "read"))
    ]
    chunks = [opened] + [
        [{"index": index, "function": {"arguments": piece}} for index, piece in enumerate((first, second))]
        for first, second in zip(pieces, others, strict=True)
    ]
    body = b"".join(
        b"data: "
        + json.dumps(
            {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"tool_calls": calls}}]}
        ).encode()
        + b"\n\n"
        for calls in chunks
    )
    return body + _chunk(None, "tool_calls") + b"data: [DONE]\n\n"


def _arguments_by_call(sent: bytes) -> dict[int, str]:
    joined: dict[int, str] = {}
    for block in filter(None, sent.split(b"\n\n")):
        data = block.partition(b"data: ")[2]
        if data.startswith(b"{"):
            for call in json.loads(data)["choices"][0]["delta"].get("tool_calls", []):
                joined[call["index"]] = joined.get(call["index"], "") + call["function"].get("arguments", "")
    return joined


@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("decision", ["release", "hold"])
def test_two_calls_streamed_in_the_same_events_are_each_redacted_on_their_own(
    parts: int, decision: ToolDecision
) -> None:
    """Two calls whose pieces share each event, the key in the first's: the first's arguments reach the
    client redacted, the second's exactly as they came, wherever the key is cut (and whether the gate
    released the calls at once or once their arguments ended)."""
    others = [OTHER[: len(OTHER) // 3], OTHER[len(OTHER) // 3 : len(OTHER) // 2], OTHER[len(OTHER) // 2 :]]
    for pieces in _splits(parts):
        shared = [*others[: parts - 1], "".join(others[parts - 1 :])]

        def gate(call: ToolCall, complete: bool) -> ToolDecision:
            return "release" if complete else decision

        session = Generic().stream_session(
            StreamFilters(
                text_filter=lambda where: StreamRedactor(SECRETS),
                argument_filter=lambda where: StreamRedactor(SECRETS),
                tool_gate=gate,
            )
        )
        sent = session.feed(_two_calls_stream(pieces, shared)) + session.finish()
        joined = _arguments_by_call(sent)
        assert AWS[4:12].encode() not in sent and AWS[-8:].encode() not in sent, pieces
        assert json.loads(joined[0]) == {"key": "[REDACTED:aws-access-key-id]"}, pieces
        assert joined[1] == OTHER, pieces
