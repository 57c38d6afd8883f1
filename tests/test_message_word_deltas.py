"""A key a WebSocket upstream no dialect knows streams split over the text deltas of a reply it sends as
Chat chunks (``choices[].delta.content``, a reasoning model's ``reasoning_content``) or as Anthropic's
events (``content_block_delta``'s ``text_delta`` and ``thinking_delta``), a message each, reaches the agent
redacted wherever it is cut, as the SDK joins the deltas: enforced where the policy enforces, recorded
unenforced where it observes, the messages then as they came."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.test_message_calls import relay
from tests.test_stream_tool_gate import _inspector

KEYS = {
    "aws-access-key-id": "AKIA" + "Z7QW3RTY2UIO4PAS",
    "github-pat": "ghp_" + "x1Y2z3W4v5U6t7S8r9Q0" + "p1O2n3M4l5K6j7I8",
}

Reply = Callable[[list[str]], list[dict[str, Any]]]


def chat_reply(field: str) -> Reply:
    def reply(pieces: list[str]) -> list[dict[str, Any]]:
        chunks = [{"index": 0, "delta": {"role": "assistant", field: piece}} for piece in pieces]
        chunks.append({"index": 0, "delta": {}, "finish_reason": "stop"})
        return [{"id": "c1", "object": "chat.completion.chunk", "choices": [chunk]} for chunk in chunks]

    return reply


def anthropic_reply(kind: str) -> Reply:
    block = {"type": kind, kind: ""} if kind == "text" else {"type": kind, kind: "", "signature": ""}

    def reply(pieces: list[str]) -> list[dict[str, Any]]:
        deltas = [
            {"type": "content_block_delta", "index": 0, "delta": {"type": f"{kind}_delta", kind: piece}}
            for piece in pieces
        ]
        return [
            {"type": "content_block_start", "index": 0, "content_block": block},
            *deltas,
            {"type": "content_block_stop", "index": 0},
            {"type": "message_stop"},
        ]

    return reply


REPLIES: dict[str, tuple[Reply, Callable[[dict[str, Any]], str]]] = {
    "chat content": (chat_reply("content"), lambda m: m["choices"][0]["delta"].get("content", "")),
    "chat reasoning": (
        chat_reply("reasoning_content"),
        lambda m: m["choices"][0]["delta"].get("reasoning_content", ""),
    ),
    "anthropic text": (
        anthropic_reply("text"),
        lambda m: m["delta"]["text"] if m["type"] == "content_block_delta" else "",
    ),
    "anthropic thinking": (
        anthropic_reply("thinking"),
        lambda m: m["delta"]["thinking"] if m["type"] == "content_block_delta" else "",
    ),
}


def pieces_of(rule: str, cut: int) -> list[str]:
    text = f"Use {KEYS[rule]} now."
    return [text[: 4 + cut], text[4 + cut :]]


@pytest.mark.parametrize("reply", sorted(REPLIES))
@pytest.mark.parametrize(("rule", "cut"), [("aws-access-key-id", 1), ("github-pat", 12)])
def test_a_key_split_over_text_deltas_reaches_the_agent_redacted(reply: str, rule: str, cut: int) -> None:
    make, text_of = REPLIES[reply]
    gate = _inspector("enforce")
    received = relay(gate, make(pieces_of(rule, cut)))
    assert KEYS[rule][cut:] not in json.dumps(received)
    assert "".join(text_of(message) for message in received) == f"Use [REDACTED:{rule}] now."
    assert {found.enforced for found in gate.turn.findings if found.rule == rule} == {True}


@pytest.mark.parametrize("reply", sorted(REPLIES))
def test_a_key_split_over_text_deltas_is_recorded_unenforced_when_observed(reply: str) -> None:
    rule = "aws-access-key-id"
    messages = REPLIES[reply][0](pieces_of(rule, 5))
    gate = _inspector("observe")
    assert relay(gate, messages) == messages
    assert {found.enforced for found in gate.turn.findings if found.rule == rule} == {False}


@pytest.mark.parametrize("reply", sorted(REPLIES))
def test_text_without_a_key_arrives_as_it_came(reply: str) -> None:
    """A piece that may begin a key is held back, yet the text reaches the agent whole."""
    make, text_of = REPLIES[reply]
    gate = _inspector("enforce")
    received = relay(gate, make(["The prefix AKIA", " is how an access key id begins."]))
    assert "".join(text_of(message) for message in received) == (
        "The prefix AKIA is how an access key id begins."
    )
    assert [found for found in gate.turn.findings if found.threat == "data_exfiltration"] == []
