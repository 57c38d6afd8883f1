"""A custom tool's call in a stream: in Chat Completions deltas (``type: custom``, its free-form text in
each delta's ``custom.input`` where a function's call has ``function.arguments``) and in the Responses
API's ``custom_tool_call_input`` deltas. Its input is joined across its deltas as a function's arguments
are, so a key or a command cut over two deltas is read whole, redacted or withheld where enforced,
recorded whole where observed; what a filter held flushes into the input a client joins, and the events
giving the input whole carry what the deltas went out as. So too the Responses calls the API runs itself:
a remote MCP tool's arguments (``mcp_call_arguments``) and the code interpreter's code
(``code_interpreter_call_code``). A custom call in a Chat JSON answer and in a request's history passes
its input as arguments."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from proxy.dialects import Dialect, OpenAIChat, OpenAIResponses, StreamFilters
from proxy.dialects.openai_chat import ChatStreamSession
from proxy.wire.sse import SSEParser
from tests.test_stream_tool_gate import _inspector
from tests.test_streaming import PLACEHOLDER, TrailingRedactor, payloads, run, split, sse

ENVELOPE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
GITHUB_TOKEN = "ghp_Qw3rTy7uIo9pAs2dFg4hJk6lZx8cVb1nMq5W"
NOTE = f"export GH_TOKEN={GITHUB_TOKEN}\ngh release list\n"
WHERE = "choices[0].message.tool_calls[0]"


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return sse({**ENVELOPE, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def chat_custom_events(name: str, *pieces: str) -> list[bytes]:
    """The events of a Chat answer calling the custom tool ``name``, whose deltas pass each of ``pieces``
    as its input, the first naming it."""
    first = {"index": 0, "id": "call_1", "type": "custom", "custom": {"name": name, "input": pieces[0]}}
    deltas = [first, *({"index": 0, "custom": {"input": piece}} for piece in pieces[1:])]
    return [
        _chunk({"role": "assistant", "content": "On it."}),
        *(_chunk({"tool_calls": [delta]}) for delta in deltas),
        _chunk({}, "tool_calls"),
        b"data: [DONE]\n\n",
    ]


def _custom_stream(name: str, *pieces: str) -> bytes:
    return b"".join(chat_custom_events(name, *pieces))


def _cut(text: str, inside: str) -> tuple[str, str]:
    """``text`` cut in two halfway through ``inside``."""
    middle = text.index(inside) + len(inside) // 2
    return text[:middle], text[middle:]


def _sent_inputs(output: bytes) -> dict[int, str]:
    """What a client joins of each custom call's deltas, by index; every call delta sent is checked to
    carry its text where a custom call's is read, never in a function's arguments."""
    inputs: dict[int, str] = {}
    for _, payload in payloads(output):
        for choice in payload["choices"]:
            for call in choice["delta"].get("tool_calls", []):
                assert "function" not in call, call
                piece = call.get("custom", {}).get("input", "")
                inputs[call["index"]] = inputs.get(call["index"], "") + piece
    return inputs


def _sent_text(output: bytes) -> str:
    choices = [choice for _, payload in payloads(output) for choice in payload["choices"]]
    return "".join(choice["delta"].get("content") or "" for choice in choices)


RESPONSES_CALLS = {
    "function_call": ("arguments", "response.function_call_arguments"),
    "custom_tool_call": ("input", "response.custom_tool_call_input"),
    "mcp_call": ("arguments", "response.mcp_call_arguments"),
    "code_interpreter_call": ("code", "response.code_interpreter_call_code"),
}
"""The Responses call items whose arguments stream, each with the field holding them (in the item and in
the ``.done`` event) and the name its events begin with."""


def responses_call_events(kind: str, name: str, *pieces: str) -> list[bytes]:
    """The events of a Responses answer making a call of ``kind`` to ``name``, whose deltas pass each of
    ``pieces``, given whole by its ``.done`` event, its item's last event and the final response."""
    field, events_named = RESPONSES_CALLS[kind]
    item: dict[str, Any] = {"type": kind, "id": "it_1", field: ""}
    if kind == "code_interpreter_call":
        item |= {"container_id": "cntr_1", "outputs": None}
    elif kind == "mcp_call":
        item |= {"server_label": "notes", "name": name, "output": None}
    else:
        item |= {"call_id": "call_1", "name": name}
    whole = {**item, "status": "completed", field: "".join(pieces)}
    response = {"id": "resp_1", "object": "response", "model": "m", "status": "in_progress", "output": []}
    located = {"output_index": 0, "item_id": "it_1"}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        *({"type": f"{events_named}.delta", **located, "delta": piece} for piece in pieces),
        {"type": f"{events_named}.done", **located, field: whole[field]},
        {"type": "response.output_item.done", "output_index": 0, "item": whole},
        {"type": "response.completed", "response": {**response, "status": "completed", "output": [whole]}},
    ]
    return [sse({**event, "sequence_number": number}, event["type"]) for number, event in enumerate(events)]


def responses_sent(kind: str, output: bytes) -> list[str]:
    """What a client joins of the call's deltas, then what each event giving the call's text whole gives."""
    field, events_named = RESPONSES_CALLS[kind]
    joined, whole = "", []
    for _, event in payloads(output):
        if event["type"] == f"{events_named}.delta":
            joined += event["delta"]
        elif event["type"] == f"{events_named}.done":
            whole.append(event[field])
        elif event["type"] == "response.output_item.done":
            whole.append(event["item"][field])
        elif event["type"] == "response.completed":
            whole += [item[field] for item in event["response"]["output"]]
    return [joined, *whole]


def _chat_inputs(output: bytes) -> list[str]:
    return list(_sent_inputs(output).values())


DIALECTS: dict[str, tuple[Dialect, Callable[..., list[bytes]], Callable[[bytes], list[str]], str]] = {
    "openai_chat": (OpenAIChat(), chat_custom_events, _chat_inputs, WHERE),
    "openai_responses": (
        OpenAIResponses(),
        partial(responses_call_events, "custom_tool_call"),
        partial(responses_sent, "custom_tool_call"),
        "output[0]",
    ),
}
"""Each dialect streaming custom calls: its events of one, what a client reads of the input in what was
sent, and where the call is."""


@pytest.mark.parametrize("name", DIALECTS)
def test_a_key_cut_over_two_input_deltas_is_redacted_whole_where_enforced(name: str) -> None:
    """In the input the deltas join and in every event giving it whole."""
    dialect, events, sent_inputs, where = DIALECTS[name]
    session = dialect.stream_session(_inspector("enforce").stream_filters())
    output = run(session, b"".join(events("save_note", *_cut(NOTE, GITHUB_TOKEN))))
    assert GITHUB_TOKEN[:12].encode() not in output and GITHUB_TOKEN[-12:].encode() not in output
    redacted = NOTE.replace(GITHUB_TOKEN, "[REDACTED:github-pat]")
    assert set(sent_inputs(output)) == {redacted} and session.released_arguments[where] == redacted
    (call,) = session.completion.tool_calls
    assert (call.name, call.where, call.arguments) == ("save_note", where, NOTE)


@pytest.mark.parametrize("name", DIALECTS)
def test_a_key_cut_over_two_input_deltas_is_recorded_whole_and_passes_where_observed(name: str) -> None:
    dialect, events, _, where = DIALECTS[name]
    stream = b"".join(events("save_note", *_cut(NOTE, GITHUB_TOKEN)))
    session = dialect.stream_session()
    assert run(session, stream) == stream
    (call,) = session.completion.tool_calls
    assert (call.name, call.where, call.arguments) == ("save_note", where, NOTE)


@pytest.mark.parametrize("sizes", [[1], [2, 5], [7, 3, 1]])
def test_the_input_a_filter_held_flushes_into_the_custom_input_however_it_was_cut(sizes: list[int]) -> None:
    """Cut into deltas of 1 to 7 characters, the input reaches the client joined and redacted, what the
    filter held at the call's end sent as more of its input."""
    pieces = split("deploy with sk-proj-AbCdEf0123 now", sizes)
    filters = StreamFilters(argument_filter=lambda where: TrailingRedactor())
    output = run(OpenAIChat().stream_session(filters), _custom_stream("notify", *pieces))
    assert b"AbCdEf" not in output
    assert _sent_inputs(output) == {0: f"deploy with {PLACEHOLDER} now"}


def test_a_key_filling_one_input_delta_is_redacted_once() -> None:
    """The argument filter reads the input; the scan of the event's other strings does not read it again."""
    session = OpenAIChat().stream_session(_inspector("enforce").stream_filters())
    output = run(session, _custom_stream("save_note", "token: ", GITHUB_TOKEN, " ok"))
    assert _sent_inputs(output) == {0: "token: [REDACTED:github-pat] ok"}


def test_a_function_call_s_custom_object_is_not_taken_for_its_arguments() -> None:
    """A function's delta that also carries a ``custom`` object: its arguments are what the filter
    joins, and the custom object's text is read with the event's other strings."""
    start = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "notify", "arguments": ""}}
    both = {"index": 0, "function": {"arguments": '{"to": "ops"}'}, "custom": {"input": GITHUB_TOKEN}}
    stream = _chunk({"tool_calls": [start]}) + _chunk({"tool_calls": [both]}) + b"data: [DONE]\n\n"
    (_, event, _) = SSEParser().feed(stream)
    handled = ChatStreamSession()._handled(event, json.loads(event.data or ""))
    assert set(handled) == {("choices", 0, "delta", "tool_calls", 0, "function", "arguments")}
    output = run(OpenAIChat().stream_session(_inspector("enforce").stream_filters()), stream)
    assert GITHUB_TOKEN.encode() not in output
    joined = "".join(
        call.get("function", {}).get("arguments", "")
        for _, payload in payloads(output)
        for call in payload["choices"][0]["delta"].get("tool_calls", [])
    )
    assert joined == '{"to": "ops"}'


@pytest.mark.parametrize("command", ["rm -rf /home/u/project", "cat /home/u/.aws/credentials"])
def test_a_command_cut_over_two_input_deltas_is_withheld_whole_where_enforced(command: str) -> None:
    session = OpenAIChat().stream_session(_inspector("enforce").stream_filters())
    output = run(session, _custom_stream("bash", *_cut(command, command.split()[-1])))
    assert b"/home/u" not in output and _sent_inputs(output) == {}
    assert "`bash` was withheld" in _sent_text(output)
    assert session.dropped_tool_calls == [("bash", "call_1")]
    (call,) = session.completion.tool_calls
    assert call.arguments == command


def test_a_custom_call_in_a_json_answer_and_in_a_request_passes_its_input_as_arguments() -> None:
    call = {"id": "call_1", "type": "custom", "custom": {"name": "save_note", "input": NOTE}}
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    answer = {"object": "chat.completion", "choices": [{"index": 0, "message": message}]}
    (answered,) = OpenAIChat().parse_response(json.dumps(answer).encode()).tool_calls
    assert (answered.name, answered.arguments, answered.where) == ("save_note", NOTE, WHERE)
    request = {"model": "m", "messages": [{"role": "user", "content": "hi"}, message]}
    (asked,) = OpenAIChat().parse_request(json.dumps(request).encode()).tool_calls
    assert (asked.name, asked.arguments, asked.where) == ("save_note", NOTE, "messages[1].tool_calls[0]")


@pytest.mark.parametrize(
    ("released", "came_as"),
    [("custom_tool_call", "function_call"), ("function_call", "custom_tool_call")],
    ids=["a custom call's item given as a function's", "a function's item given as a custom call's"],
)
def test_a_responses_call_s_item_given_again_as_the_other_kind_carries_what_was_released(
    released: str, came_as: str
) -> None:
    """The item is held to the kind it was released as, and the field of the kind it came as carries the
    arguments as they went out too: neither leaves as the upstream wrote it."""
    fields = {"function_call": "arguments", "custom_tool_call": "input"}
    item = {"type": released, "id": "it_1", "call_id": "call_1", "name": "save_note", fields[released]: ""}
    again = {"type": came_as, "id": "it_1", "call_id": "call_1", "name": "save_note", fields[came_as]: NOTE}
    events: list[dict[str, Any]] = [
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.output_item.done", "output_index": 0, "item": again},
    ]
    stream = b"".join(sse(event, event["type"]) for event in events)
    output = run(OpenAIResponses().stream_session(_inspector("enforce").stream_filters()), stream)
    assert GITHUB_TOKEN[:12].encode() not in output and GITHUB_TOKEN[-12:].encode() not in output
    (_, done) = payloads(output)
    assert done[1]["item"]["type"] == released


AWS_KEY_ID = "AKIAQWERTY234567ABCD"
SERVER_RUN_CALLS = ("mcp_call", "code_interpreter_call")


def _call_text(kind: str, key: str) -> str:
    """A call's text carrying ``key``: code for the code interpreter, JSON arguments for the others."""
    if kind == "code_interpreter_call":
        return f'client = connect(key="{key}")\nprint(client.status())\n'
    return json.dumps({"note": f"deploy with {key} today"})


@pytest.mark.parametrize(("key", "rule"), [(GITHUB_TOKEN, "github-pat"), (AWS_KEY_ID, "aws-access-key-id")])
@pytest.mark.parametrize("kind", RESPONSES_CALLS)
def test_a_key_cut_anywhere_over_two_responses_call_deltas_never_goes_out_where_enforced(
    kind: str, key: str, rule: str
) -> None:
    """Each kind of call whose text streams, the agent's and those the API runs (a remote MCP tool's
    arguments, the code interpreter's code): cut at every place in the key, none of it goes out, its
    deltas joined and every event giving the text whole carrying it redacted, recorded whole."""
    text = _call_text(kind, key)
    start = text.index(key)
    for cut in range(start + 1, start + len(key)):
        session = OpenAIResponses().stream_session(_inspector("enforce").stream_filters())
        output = run(session, b"".join(responses_call_events(kind, "save_note", text[:cut], text[cut:])))
        assert not [key[at : at + 6] for at in range(len(key) - 5) if key[at : at + 6].encode() in output]
        assert responses_sent(kind, output) == [text.replace(key, f"[REDACTED:{rule}]")] * 4, cut
        (call,) = session.completion.tool_calls
        assert (call.where, call.arguments) == ("output[0]", text)


@pytest.mark.parametrize("kind", SERVER_RUN_CALLS)
def test_a_key_cut_over_two_server_run_call_deltas_is_recorded_whole_and_passes_where_observed(
    kind: str,
) -> None:
    text = _call_text(kind, GITHUB_TOKEN)
    stream = b"".join(responses_call_events(kind, "save_note", *_cut(text, GITHUB_TOKEN)))
    session = OpenAIResponses().stream_session()
    assert run(session, stream) == stream
    (call,) = session.completion.tool_calls
    assert (call.arguments, call.ran_upstream) == (text, True)


def test_a_destructive_mcp_call_cut_over_two_argument_deltas_is_withheld_whole_where_enforced() -> None:
    """As in a JSON answer, a remote MCP tool's call the API ran is withheld from the agent, with what it
    returned, for what its arguments say joined."""
    arguments = json.dumps({"command": "rm -rf /home/u/project"})
    events = responses_call_events("mcp_call", "run_shell", *_cut(arguments, "/home/u/project"))
    session = OpenAIResponses().stream_session(_inspector("enforce").stream_filters())
    output = run(session, b"".join(events))
    assert b"/home/u" not in output
    assert b"the API ran this tool itself" in output
    (call,) = session.completion.tool_calls
    assert (call.name, call.arguments, call.ran_upstream) == ("run_shell", arguments, True)
