"""Tool calls an upstream streams over the messages of one WebSocket connection, turn after turn: each
turn's calls are joined and decided once though they reuse the places of the turns before, a late piece of
a decided call is still withheld, and what the connection keeps of its calls stays bounded."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.dialects.messages import MessageCalls
from proxy.dialects.shapes import DECIDED_REMEMBERED
from proxy.dialects.stream import MISPLACED_RULE
from proxy.inspection import TurnInspector
from tests.test_stream_tool_gate import _inspector as inspector


def anthropic_turn(call_id: str, name: str, arguments: str) -> list[dict[str, Any]]:
    """A turn calling a tool at block 0, as Anthropic's events, a message each."""
    block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
    return [
        {"type": "message_start", "message": {"id": f"msg_{call_id}", "role": "assistant", "content": []}},
        {"type": "content_block_start", "index": 0, "content_block": block},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": arguments},
        },
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}},
    ]


def chat_turn(call_id: str, name: str, arguments: str) -> list[dict[str, Any]]:
    """A turn calling a tool at index 0, as Chat chunks, a message each."""
    first = {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
    rest = {"index": 0, "function": {"arguments": arguments}}
    return [
        {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}
        for call in (first, rest)
    ] + [
        {
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
        }
    ]


TURNS = {"anthropic": anthropic_turn, "chat": chat_turn}
EVERYDAY = ("read_file", '{"path": "README.md"}')
DESTRUCTIVE = ("delete_customer", '{"id": 42}')


def relay(gate: TurnInspector, messages: list[dict[str, Any]]) -> list[Any]:
    """What reaches the agent of ``messages`` an upstream sends through ``gate``, as the proxy relays them."""
    received: list[Any] = []
    for index, message in enumerate(messages):
        text, where = json.dumps(message), f"websocket[{index}]"
        read = gate.inspect_message(text, from_client=False, where=where)
        assert read is not None
        # The addon gates the message as it came, as the model made its calls.
        refused = gate.gate_message(text, from_client=False, where=where) is not None
        content = None if refused else read.encode()
        sending = gate.hold_message(content, is_text=True, where=where)
        sent = [content] if sending is None and content is not None else [sent for sent, _ in sending or []]
        received += [json.loads(one) for one in sent]
    # The upstream closes: what was held goes before its close.
    return received + [json.loads(one) for one, _ in gate.end_messages(delivering=True)]


def findings(gate: TurnInspector, rule: str) -> list[tuple[str, bool]]:
    """Where ``gate`` found what ``rule`` (or threat) names, and whether it enforced it."""
    return [
        (found.where, found.enforced) for found in gate.turn.findings if rule in (found.rule, found.threat)
    ]


@pytest.mark.parametrize("dialect", sorted(TURNS))
def test_two_turns_calling_at_one_place_both_arrive(dialect: str) -> None:
    """Two turns of one connection, each calling an everyday tool at index 0, reach the agent whole and in
    order: the second call is a call of its own, not a piece of the first out of place."""
    turn = TURNS[dialect]
    messages = turn("call_1", *EVERYDAY) + turn("call_2", *EVERYDAY)
    gate = inspector("enforce")
    assert relay(gate, messages) == messages
    assert findings(gate, MISPLACED_RULE) == []
    assert gate.message_calls.streamed.calls == {}


@pytest.mark.parametrize("dialect", sorted(TURNS))
def test_each_turns_call_at_one_place_is_decided_once(dialect: str) -> None:
    """Observed, a destructive call in each of two turns at index 0 is found once each, at its own first
    piece, and every message arrives."""
    turn = TURNS[dialect]
    first, second = turn("call_1", *DESTRUCTIVE), turn("call_2", *DESTRUCTIVE)
    gate = inspector("observe")
    assert relay(gate, first + second) == first + second
    opening = 1 if dialect == "anthropic" else 0
    place = "content_block" if dialect == "anthropic" else "choices[0].delta.tool_calls[0]"
    wheres = [where for where, _ in findings(gate, "tool_abuse")]
    assert wheres == [f"websocket[{opening}].{place}", f"websocket[{len(first) + opening}].{place}"]


@pytest.mark.parametrize("dialect", sorted(TURNS))
def test_a_destructive_call_at_a_reused_place_is_still_gated(dialect: str) -> None:
    """An everyday call, then a destructive one at the same place in the next turn: enforced, the first
    arrives whole; of the second, only its messages that carry none of it."""
    turn = TURNS[dialect]
    first, second = turn("call_1", *EVERYDAY), turn("call_2", *DESTRUCTIVE)
    gate = inspector("enforce")
    received = relay(gate, first + second)
    carrying = range(1, 4) if dialect == "anthropic" else range(2)
    assert received == first + [message for index, message in enumerate(second) if index not in carrying]
    assert [enforced for _, enforced in findings(gate, "tool_abuse")] == [True]
    assert findings(gate, MISPLACED_RULE) == []


LATE: dict[str, dict[str, Any]] = {
    "anthropic: its block started again": {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "tool_use", "id": "call_1", "name": "delete_customer", "input": {}},
    },
    "anthropic: its arguments streamed on": {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "input_json_delta", "partial_json": '{"path": "/home/u/.aws/credentials"}'},
    },
    "chat: a delta naming no call": {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "x"}}]}}],
    },
    "chat: its id again": {
        "object": "chat.completion.chunk",
        "choices": [
            {"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function"}]}}
        ],
    },
}


def test_a_call_naming_no_id_at_a_decided_place_is_a_call_of_its_own() -> None:
    """Turns of a server that gives its calls no id, each calling at index 0: the second turn's call is
    decided on its own (an everyday one arrives whole, a destructive one is withheld as such), not
    withheld as a piece of the first; a later delta naming no tool is still one."""

    def without_ids(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for message in messages:
            for call in message["choices"][0]["delta"].get("tool_calls", []):
                call.pop("id", None)
        return messages

    first, everyday, destructive = (
        without_ids(chat_turn("", *call)) for call in (EVERYDAY, EVERYDAY, DESTRUCTIVE)
    )
    late = LATE["chat: a delta naming no call"]
    gate = inspector("enforce")
    received = relay(gate, [*first, *everyday, *destructive, late])
    assert received == [*first, *everyday, destructive[-1]]
    assert findings(gate, "tool_abuse") == [
        (f"websocket[{2 * len(first)}].choices[0].delta.tool_calls[0]", True)
    ]
    assert findings(gate, MISPLACED_RULE) == [(f"websocket[{3 * len(first)}]", True)]


@pytest.mark.parametrize("name", sorted(LATE))
def test_a_late_piece_of_a_decided_call_is_withheld(name: str) -> None:
    """A piece of a call already decided and sent, after its turn (its id again, a delta naming no call at
    its place), fits no call: enforced, it is withheld as out of place, and what follows arrives."""
    turn = TURNS[name.split(":")[0]]("call_1", *EVERYDAY)
    after = {"type": "ping"}
    gate = inspector("enforce")
    assert relay(gate, [*turn, LATE[name], after]) == [*turn, after]
    assert findings(gate, MISPLACED_RULE) == [(f"websocket[{len(turn)}]", True)]


@pytest.mark.parametrize("dialect", sorted(TURNS))
def test_what_a_connection_keeps_of_its_calls_stays_bounded(dialect: str) -> None:
    """Over 10,000 turns each calling at index 0 with an id of its own, a connection keeps no call once it
    is decided, and remembers at most ``DECIDED_REMEMBERED`` decided ones."""
    calls = MessageCalls()
    for turn_number in range(10_000):
        for index, message in enumerate(TURNS[dialect](f"call_{turn_number}", *EVERYDAY)):
            where = f"websocket[{index}]"
            calls.read(message, where)
            placed = calls.take_placed()
            assert not placed.stray
            for key in placed.ended:
                calls.streamed.calls[key].decision = "release"
            calls.hold(json.dumps(message).encode(), is_text=True, keys=placed.keys)
            calls.forget_decided()
        assert calls.streamed.calls == {}
    assert len(calls.streamed.decided_places) == 1
    assert len(calls.streamed.decided_ids) == DECIDED_REMEMBERED
