"""A key a WebSocket upstream streams split over the argument deltas of one tool call (the Realtime API's
``response.function_call_arguments.delta``, a server of its own sending Chat's or Anthropic's deltas a
message each) reaches the agent redacted wherever it is cut: each call's arguments are read joined, as
the SDK joins them, what may begin a key held until the next delta or the call's end. The arguments a
``.done`` event repeats whole agree with the deltas sent. The key is recorded once, enforced."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.test_message_calls import relay
from tests.test_stream_tool_gate import _inspector

AWS_KEY = "AKIA" + "Z7QW3RTY2UIO4PAS"
ARGUMENTS = json.dumps({"bucket": "logs", "key": AWS_KEY})
REDACTED = json.dumps({"bucket": "logs", "key": "[REDACTED:aws-access-key-id]"})
START = ARGUMENTS.index(AWS_KEY)
CUTS = [START + 1, START + 4, START + 9, START + len(AWS_KEY) - 1]
"""In the prefix, just after it, in the body, before the last character."""

Turn = Callable[[list[str]], list[dict[str, Any]]]
REALTIME_PLACE = {"response_id": "resp_1", "item_id": "fc_1", "output_index": 0, "call_id": "call_1"}


def realtime_turn(pieces: list[str]) -> list[dict[str, Any]]:
    item = {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "upload"}
    placed = {"response_id": "resp_1", "output_index": 0}
    whole = "".join(pieces)
    return [
        {
            "type": "response.output_item.added",
            **placed,
            "item": {**item, "status": "in_progress", "arguments": ""},
        },
        *(
            {"type": "response.function_call_arguments.delta", **REALTIME_PLACE, "delta": piece}
            for piece in pieces
        ),
        {
            "type": "response.function_call_arguments.done",
            **REALTIME_PLACE,
            "name": "upload",
            "arguments": whole,
        },
        {
            "type": "response.output_item.done",
            **placed,
            "item": {**item, "status": "completed", "arguments": whole},
        },
        {"type": "response.done", "response": {"id": "resp_1", "status": "completed", "output": []}},
    ]


def chat_turn(pieces: list[str]) -> list[dict[str, Any]]:
    first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "upload", "arguments": ""}}
    calls = [first, *({"index": 0, "function": {"arguments": piece}} for piece in pieces)]
    return [
        {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}
        for call in calls
    ] + [
        {
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
        }
    ]


def anthropic_turn(pieces: list[str]) -> list[dict[str, Any]]:
    block = {"type": "tool_use", "id": "toolu_1", "name": "upload", "input": {}}
    return [
        {"type": "content_block_start", "index": 0, "content_block": block},
        *(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": piece},
            }
            for piece in pieces
        ),
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}},
    ]


def joined_arguments(received: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The arguments the agent joins from the deltas it receives, and those it is given whole."""
    joined: list[str] = []
    whole: list[str] = []
    for message in received:
        kind = message.get("type")
        if kind == "response.function_call_arguments.delta":
            joined.append(message["delta"])
        elif kind == "response.function_call_arguments.done":
            whole.append(message["arguments"])
        elif kind == "response.output_item.done":
            whole.append(message["item"]["arguments"])
        elif kind == "content_block_delta":
            joined.append(message["delta"]["partial_json"])
        for choice in message.get("choices", []):
            for call in choice["delta"].get("tool_calls", []):
                joined.append(call["function"]["arguments"])
    return "".join(joined), whole


TURNS: dict[str, Turn] = {"realtime": realtime_turn, "chat": chat_turn, "anthropic": anthropic_turn}


@pytest.mark.parametrize("dialect", sorted(TURNS))
@pytest.mark.parametrize("cut", CUTS)
def test_a_key_split_over_argument_deltas_reaches_the_agent_redacted(dialect: str, cut: int) -> None:
    gate = _inspector("enforce")
    received = relay(gate, TURNS[dialect]([ARGUMENTS[:cut], ARGUMENTS[cut:]]))
    joined, whole = joined_arguments(received)
    assert AWS_KEY[:4] not in json.dumps(received), received
    assert joined == REDACTED
    assert all(arguments == REDACTED for arguments in whole), whole
    found = {found.enforced for found in gate.turn.findings if found.rule == "aws-access-key-id"}
    assert found == {True}


@pytest.mark.parametrize("dialect", sorted(TURNS))
@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_arguments_without_a_key_arrive_as_they_came(dialect: str, mode: str) -> None:
    """A piece that may begin a key is held back, yet the arguments reach the agent whole and unchanged:
    where the gate holds the call's messages, each as it came, and observed, as they came."""
    gate = _inspector(mode)
    arguments = json.dumps({"bucket": "logs", "key": "AKIA-is-a-prefix"})
    messages = TURNS[dialect]([arguments[:28], arguments[28:]])
    received = relay(gate, messages)
    joined, whole = joined_arguments(received)
    assert received == messages
    assert joined == arguments and all(one == arguments for one in whole)
    assert [f for f in gate.turn.findings if f.rule == "aws-access-key-id"] == []


@pytest.mark.parametrize("dialect", sorted(TURNS))
def test_a_key_split_over_argument_deltas_is_recorded_unenforced_when_observed(dialect: str) -> None:
    gate = _inspector("observe")
    cut = CUTS[1]
    messages = TURNS[dialect]([ARGUMENTS[:cut], ARGUMENTS[cut:]])
    assert relay(gate, messages) == messages
    found = {found.enforced for found in gate.turn.findings if found.rule == "aws-access-key-id"}
    assert found == {False}
