"""A tool call whose arguments a WebSocket upstream streams as fragments of their JSON object, a message
each: a Gemini Live ``toolCall``'s ``partialArgs`` (a value at its JSON path, a string continued by the
next piece at the same path) and a Chat delta whose ``arguments`` is an object (which the OpenAI SDK
merges into the call's). The fragments are joined as a client joins them, and the call decided on what
they make: a credential read cut over two fragments is withheld where enforced, recorded unenforced
where observed, and a key cut over two reaches the agent redacted."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from proxy.dialects.shapes import StreamedCalls, call_pieces
from proxy.dialects.stream import merged_arguments
from tests.test_message_calls import relay
from tests.test_stream_tool_gate import _inspector

AWS_KEY = "AKIA" + "Z7QW3RTY2UIO4PAS"
CREDENTIALS = ["/home/u/.a", "ws/credentials"]
KEY = [f"upload {AWS_KEY[:6]}", f"{AWS_KEY[6:]} now"]

Turn = Callable[[str, str, list[str]], list[dict[str, Any]]]


def live_turn(name: str, field: str, pieces: list[str]) -> list[dict[str, Any]]:
    """A Live call streamed a ``partialArgs`` piece a message, its name in the first."""
    messages = []
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        partial = {"jsonPath": f"$.{field}", "stringValue": piece, "willContinue": not last}
        call = {"id": "fc_1", "partialArgs": [partial], "willContinue": not last}
        messages.append({"toolCall": {"functionCalls": [{"name": name, **call} if index == 0 else call]}})
    return messages


def chat_turn(name: str, field: str, pieces: list[str]) -> list[dict[str, Any]]:
    """A Chat call whose ``arguments`` stream as objects, a chunk each, its name in the first."""
    first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": name, "arguments": {}}}
    calls = [first, *({"index": 0, "function": {"arguments": {field: piece}}} for piece in pieces)]
    return [
        {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}
        for call in calls
    ] + [
        {
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
        }
    ]


def live_snake_case_turn(name: str, field: str, pieces: list[str]) -> list[dict[str, Any]]:
    """The Live call's fields spelled in snake_case, which a server reading protocol buffers' JSON takes
    as it takes camelCase."""
    spelled = json.dumps(live_turn(name, field, pieces))
    for camel, snake in SNAKE_CASE.items():
        spelled = spelled.replace(f'"{camel}"', f'"{snake}"')
    return list(json.loads(spelled))


SNAKE_CASE = {
    "partialArgs": "partial_args",
    "willContinue": "will_continue",
    "jsonPath": "json_path",
    "stringValue": "string_value",
    "functionCalls": "function_calls",
    "toolCall": "tool_call",
}
TURNS: dict[str, Turn] = {"live": live_turn, "live, snake_case": live_snake_case_turn, "chat": chat_turn}


def carried(received: list[dict[str, Any]]) -> str:
    return json.dumps(received)


@pytest.mark.parametrize("dialect", sorted(TURNS))
def test_a_credential_read_cut_over_fragments_is_withheld(dialect: str) -> None:
    gate = _inspector("enforce")
    received = relay(gate, TURNS[dialect]("read_file", "path", CREDENTIALS))
    assert "credentials" not in carried(received)
    found = [f.enforced for f in gate.turn.findings if f.threat == "credential_theft"]
    assert found and all(found)


@pytest.mark.parametrize("dialect", sorted(TURNS))
def test_a_credential_read_cut_over_fragments_is_recorded_unenforced_when_observed(dialect: str) -> None:
    messages = TURNS[dialect]("read_file", "path", CREDENTIALS)
    gate = _inspector("observe")
    assert relay(gate, messages) == messages
    found = [f.enforced for f in gate.turn.findings if f.threat == "credential_theft"]
    assert found and not any(found)


@pytest.mark.parametrize("dialect", sorted(TURNS))
def test_an_everyday_call_in_fragments_arrives_as_it_came(dialect: str) -> None:
    messages = TURNS[dialect]("read_file", "path", ["docs/READ", "ME.md"])
    gate = _inspector("enforce")
    assert relay(gate, messages) == messages
    assert [f for f in gate.turn.findings if f.threat in ("credential_theft", "tool_abuse")] == []


@pytest.mark.parametrize("dialect", sorted(TURNS))
def test_a_key_cut_over_fragments_reaches_the_agent_redacted(dialect: str) -> None:
    gate = _inspector("enforce")
    received = relay(gate, TURNS[dialect]("search_docs", "text", KEY))
    assert AWS_KEY[6:] not in carried(received) and AWS_KEY[:6] not in carried(received)
    assert "[REDACTED:aws-access-key-id]" in carried(received)
    assert {f.enforced for f in gate.turn.findings if f.rule == "aws-access-key-id"} == {True}


def test_fragments_merge_as_the_sdk_merges_them() -> None:
    held = merged_arguments({}, {"command": "rm -", "options": {"force": True}})
    assert held is not None
    held = merged_arguments(held, {"command": "rf /", "options": {"depth": 2}, "paths": ["a"], "x": None})
    assert held is not None
    assert merged_arguments(held, {"paths": ["b"], "x": None}) == {
        "command": "rm -rf /",
        "options": {"force": True, "depth": 2},
        "paths": ["a", "b"],
        "x": None,
    }


@pytest.mark.parametrize(
    "fragment",
    [{"depth": 3}, {"command": {"run": "x"}}, {"options": "x"}, {"paths": {"0": "x"}}, {"force": False}],
    ids=[
        "a number again",
        "an object at a string",
        "a string at an object",
        "an object at a list",
        "truth again",
    ],
)
def test_fragments_clients_merge_apart_contradict(fragment: dict[str, Any]) -> None:
    """The SDK adds numbers and keeps the first of two kinds; a reader placing each piece keeps the last."""
    held = {"command": "rm", "options": {"a": 1}, "paths": ["a"], "depth": 2, "force": True}
    assert merged_arguments(held, fragment) is None


@pytest.mark.parametrize(
    "path",
    [
        "$..command",
        "$.*",
        "command",
        "$.paths[*]",
        "$.paths[-1]",
        "$.paths[01]",
        "$.paths[ 0 ]",
        "$.paths[1000000]",
        "$.paths[17]",
        "$[0]",
        "$.paths[0",
    ],
)
def test_a_live_piece_at_a_path_not_of_names_and_indexes_is_placed_nowhere(path: str) -> None:
    """A path read otherwise by one client than another names no one place: its message is withheld."""
    partial = {"jsonPath": path, "stringValue": "x", "willContinue": True}
    message = {"toolCall": {"functionCalls": [{"id": "fc_1", "name": "f", "partialArgs": [partial]}]}}
    assert [piece.key for piece in call_pieces(message)] == [None]


@pytest.mark.parametrize("field", ["partialArgs", "willContinue"])
def test_a_live_call_field_given_both_ways_is_placed_nowhere(field: str) -> None:
    """Readers part on which of a field's two spellings wins: the message naming both is withheld."""
    partial = {"jsonPath": "$.command", "stringValue": "x"}
    call = {"id": "fc_1", "name": "f", "partialArgs": [partial], "willContinue": True}
    call[SNAKE_CASE[field]] = call[field]
    assert [piece.key for piece in call_pieces({"toolCall": {"functionCalls": [call]}})] == [None]


@pytest.mark.parametrize(
    "partial",
    [
        {"jsonPath": "$.command", "json_path": "$.other", "stringValue": "x"},
        {"jsonPath": "$.command", "stringValue": "x", "numberValue": "rm -rf /"},
        {"jsonPath": "$.command", "stringValue": "x", "bool_value": True},
    ],
    ids=["a path both ways", "a string and a number", "a string and a truth value"],
)
def test_a_live_piece_read_two_ways_is_placed_nowhere(partial: dict[str, Any]) -> None:
    call = {"id": "fc_1", "name": "f", "partialArgs": [partial], "willContinue": True}
    assert [piece.key for piece in call_pieces({"toolCall": {"functionCalls": [call]}})] == [None]


def test_a_live_piece_whose_number_is_written_as_a_string_is_read_where_it_stands() -> None:
    """Protocol buffers' JSON takes a number written as a string: that string is read at its own place."""
    partial = {"jsonPath": "$.command", "numberValue": "12"}
    call = {"id": "fc_1", "name": "f", "partialArgs": [partial], "willContinue": True}
    (piece,) = call_pieces({"toolCall": {"functionCalls": [call]}})
    assert [leaf[0] for leaf in piece.leaves] == ["toolCall.functionCalls[0].partialArgs[0].numberValue"]


@pytest.mark.parametrize(
    "path", ["$.command", "$['command']", "$.options.force", "$.paths[0]", "$.a.b[2].c", "$['a'][0][1]"]
)
def test_a_live_piece_at_a_path_of_names_and_indexes_is_placed(path: str) -> None:
    partial = {"jsonPath": path, "stringValue": "x", "willContinue": True}
    call = {"id": "fc_1", "name": "f", "partialArgs": [partial], "willContinue": True}
    (piece,) = call_pieces({"toolCall": {"functionCalls": [call]}})
    assert piece.key is not None and piece.opens and piece.leaves


def _live_call(*partials: dict[str, Any], name: str = "f") -> dict[str, Any]:
    call = {"id": "fc_1", "partialArgs": list(partials), "willContinue": True}
    return {"toolCall": {"functionCalls": [{"name": name, **call} if name else call]}}


def _string_at(path: str, text: str) -> dict[str, Any]:
    return {"jsonPath": path, "stringValue": text, "willContinue": True}


@pytest.mark.parametrize(
    ("partials", "merged"),
    [
        (
            [("$.paths[0]", "/home/u/.a"), ("$.paths[0]", "ws/credentials")],
            {"paths": ["/home/u/.aws/credentials"]},
        ),
        ([("$.paths[0]", "a"), ("$.paths[1]", "b")], {"paths": ["a", "b"]}),
        ([("$.paths[1]", "b"), ("$.paths[0]", "a")], {"paths": ["a", "b"]}),
        ([("$.a.b[2].c", "x")], {"a": {"b": [None, None, {"c": "x"}]}}),
        ([("$.a[0].b", "x"), ("$.a[0].c", "y")], {"a": [{"b": "x", "c": "y"}]}),
        ([("$['a'][0][1]", "x")], {"a": [[None, "x"]]}),
        ([("$.paths[16]", "x")], {"paths": [None] * 16 + ["x"]}),
    ],
    ids=[
        "a string continued",
        "two items",
        "two items, the later first",
        "deep",
        "an item's fields",
        "a list in a list",
        "as far past the end as a list may grow",
    ],
)
def test_live_pieces_at_indexes_merge_into_lists_as_a_client_grows_them(
    partials: list[tuple[str, str]], merged: dict[str, Any]
) -> None:
    calls = StreamedCalls()
    for index, (path, text) in enumerate(partials):
        placed = calls.place(
            call_pieces(_live_call(_string_at(path, text), name="f" if index == 0 else "")), str
        )
        assert not placed.stray
    (call,) = calls.calls.values()
    assert json.loads(call.call().arguments) == merged


@pytest.mark.parametrize(
    "partials",
    [
        [_string_at("$.paths", "x"), _string_at("$.paths[0]", "y")],
        [_string_at("$.paths[0]", "x"), _string_at("$.paths.name", "y")],
        [{"jsonPath": "$.depth", "numberValue": 1}, {"jsonPath": "$.depth", "numberValue": 2}],
        [{"jsonPath": "$.force", "boolValue": True}, _string_at("$.force", "x")],
        [_string_at("$.paths[0]", "x"), _string_at("$.paths[18]", "y")],
    ],
    ids=[
        "a string, then a list at its place",
        "a list, then an object at its place",
        "two numbers at one place",
        "a truth value, then a string",
        "past how far a list may grow",
    ],
)
def test_live_pieces_that_contradict_each_other_are_placed_nowhere(partials: list[dict[str, Any]]) -> None:
    """Readers part on such a call (the SDK adds numbers, a reader placing each piece keeps the last): the
    message is withheld, in one message or over two."""
    assert [piece.key for piece in call_pieces(_live_call(*partials))] == [None]
    calls = StreamedCalls()
    assert not calls.place(call_pieces(_live_call(partials[0])), str).stray
    assert calls.place(call_pieces(_live_call(*partials[1:], name="")), str).stray


def test_an_index_far_past_a_list_s_end_grows_nothing() -> None:
    """An index is read where it stands, never as the list a client would grow to it: a short path cannot
    make the reading of a call grow."""
    calls = StreamedCalls()
    calls.place(call_pieces(_live_call(_string_at("$.paths[0]", "x"))), str)
    far = _live_call(_string_at("$.paths[999999]", "y"), name="")
    assert calls.place(call_pieces(far), str).stray
    (call,) = calls.calls.values()
    assert json.loads(call.call().arguments) == {"paths": ["x"]}
