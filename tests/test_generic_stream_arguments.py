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
