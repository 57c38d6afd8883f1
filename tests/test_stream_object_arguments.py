"""A tool call whose arguments a server sends as a JSON object (or any JSON value but a string) where the
OpenAI APIs send their text: a client takes it (the OpenAI SDK's stream helper merges objects, others
take their JSON text), so it is read as its JSON text, decided on, recorded, and in enforce mode never
released as anything but what was decided. Chat's streamed deltas, its JSON answer and request, and the
Responses API's argument events."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from proxy.dialects.openai_chat import OpenAIChat
from proxy.dialects.openai_responses import OTHER_ARGUMENTS, OpenAIResponses
from proxy.dialects.stream import StreamFilters, StreamSession
from tests.test_stream_tool_gate import _inspector
from tests.test_streaming import payloads, run

CREDENTIALS = "/home/u/.aws/credentials"
ENVELOPE = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}


def _chunk(call: dict[str, Any] | None, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": {"tool_calls": [call]} if call else {}, "finish_reason": finish}
    return b"data: " + json.dumps({**ENVELOPE, "choices": [choice]}).encode() + b"\n\n"


def _chat_stream(*passed: Any, name: str = "read_file") -> bytes:
    """A call of ``name`` whose deltas pass each of ``passed`` as its ``arguments``, the first naming it."""
    first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": name}}
    deltas = [{**first, "function": {"name": name, "arguments": passed[0]}}]
    deltas += [{"index": 0, "function": {"arguments": value}} for value in passed[1:]]
    return b"".join(_chunk(delta) for delta in deltas) + _chunk(None, "tool_calls") + b"data: [DONE]\n\n"


def _enforced() -> StreamFilters:
    return _inspector("enforce").stream_filters()


def _sent_calls(output: bytes) -> list[tuple[str, Any]]:
    """The calls the OpenAI SDK's stream helper makes of what was sent: each name and arguments."""
    state = ChatCompletionStreamState()
    for _, payload in payloads(output):
        state.handle_chunk(ChatCompletionChunk.model_validate(payload))
    message = state.get_final_completion().choices[0].message
    return [(call.function.name, call.function.arguments) for call in message.tool_calls or []]


def _sent_text(output: bytes) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for _, payload in payloads(output)
        for choice in payload.get("choices", [])
    )


def _recorded(session: StreamSession) -> list[tuple[str, Any]]:
    return [(call.name, json.loads(call.arguments)) for call in session.completion.tool_calls]


@pytest.mark.parametrize(
    ("passed", "read"),
    [
        ([{"path": CREDENTIALS}], {"path": CREDENTIALS}),
        (["", {"path": CREDENTIALS}], {"path": CREDENTIALS}),
        ([{}, {"path": "/home/u/.a"}, {"path": "ws/credentials"}], {"path": CREDENTIALS}),
        (
            [{"path": "/home/u/.aws/"}, {"options": {"follow": True}}],
            {"path": "/home/u/.aws/", "options": {"follow": True}},
        ),
        (['{"path": "/home/u/.a', 'ws/credentials"}'], {"path": CREDENTIALS}),
    ],
    ids=["one object", "an empty text, then an object", "objects merged", "objects of other fields", "texts"],
)
def test_a_chat_call_s_object_arguments_are_recorded_as_a_client_reads_them(
    passed: list[Any], read: dict[str, Any]
) -> None:
    session = OpenAIChat().stream_session()
    run(session, _chat_stream(*passed))
    assert _recorded(session) == [("read_file", read)]


def test_a_chat_call_s_arguments_of_text_and_object_are_recorded_joined() -> None:
    """The SDK keeps the text and passes over the object; other clients take the object's JSON text: both
    are in what is recorded, which the detectors read."""
    session = OpenAIChat().stream_session()
    run(session, _chat_stream('{"path": "README.md"}', {"path": CREDENTIALS}))
    (call,) = session.completion.tool_calls
    assert call.arguments == '{"path": "README.md"}' + json.dumps(
        {"path": CREDENTIALS}, separators=(",", ":")
    )


@pytest.mark.parametrize(
    "passed",
    [
        [{"path": CREDENTIALS}],
        ["", {"path": CREDENTIALS}],
        [{}, {"path": "/home/u/.a"}, {"path": "ws/credentials"}],
        ['{"path": "README.md"}', {"path": CREDENTIALS}],
        [{"path": "README.md"}, '"x"', {"path": CREDENTIALS}],
    ],
    ids=["one object", "an empty text, then an object", "objects merged", "text, then an object", "mixed"],
)
def test_a_chat_credential_read_passed_as_an_object_is_withheld_where_enforced(passed: list[Any]) -> None:
    output = run(OpenAIChat().stream_session(_enforced()), _chat_stream(*passed))
    assert _sent_calls(output) == []
    assert "`read_file` was withheld" in _sent_text(output)
    assert "ws/credentials" not in output.decode() and "/home/u" not in output.decode()


def test_a_chat_command_passed_as_an_object_is_withheld_where_enforced() -> None:
    output = run(
        OpenAIChat().stream_session(_enforced()),
        _chat_stream({"command": "cat ~/.aws/credentials"}, name="bash"),
    )
    assert _sent_calls(output) == [] and "`bash` was withheld" in _sent_text(output)


def test_a_chat_everyday_read_passed_as_one_object_goes_on_as_it_came() -> None:
    """Released as it came, the object the gate decided on: what a client takes of it is what was read."""
    stream = _chat_stream({"path": "README.md"})
    output = run(OpenAIChat().stream_session(_enforced()), stream)
    assert [payload["choices"][0]["delta"] for _, payload in payloads(output)] == [
        payload["choices"][0]["delta"] for _, payload in payloads(stream)
    ]


@pytest.mark.parametrize(
    ("passed", "decided"),
    [
        ([{}, {"path": "READ"}, {"path": "ME.md"}], '{"path":"README.md"}'),
        (["", {"path": "README.md"}], '{"path":"README.md"}'),
        (['{"path": "README.md"', {"x": 1}], '{"path": "README.md"{"x":1}'),
    ],
    ids=["objects merged", "an empty text, then an object", "text, then an object"],
)
def test_a_chat_everyday_read_in_several_deltas_goes_on_as_the_text_decided_on(
    passed: list[Any], decided: str
) -> None:
    """A held call sent whole is sent as the one text it was decided on, which every client reads alike
    (the SDK would have kept the text and passed over the object)."""
    output = run(OpenAIChat().stream_session(_enforced()), _chat_stream(*passed))
    assert _sent_calls(output) == [("read_file", decided)]


def test_a_chat_call_released_from_its_name_passes_an_object_on_and_records_it() -> None:
    """A tool neither reading nor destructive streams on from its name: its object goes on as it came,
    and is what the call is recorded with."""
    stream = _chat_stream("", {"city": "Oslo"}, name="get_weather")
    session = OpenAIChat().stream_session(_enforced())
    output = run(session, stream)
    assert [
        call["function"].get("arguments")
        for _, payload in payloads(output)
        for call in payload["choices"][0]["delta"].get("tool_calls", [])
        if call["function"].get("arguments")
    ] == [{"city": "Oslo"}]
    assert _recorded(session) == [("get_weather", {"city": "Oslo"})]


def test_a_chat_answer_s_object_arguments_are_read_as_their_text() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "bash", "arguments": {"command": "ls"}}}
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "tool_calls": [call]}}]}
    (read,) = OpenAIChat().parse_response(json.dumps(body).encode()).tool_calls
    assert (read.name, json.loads(read.arguments)) == ("bash", {"command": "ls"})
    request = {"model": "m", "messages": [{"role": "assistant", "tool_calls": [call]}]}
    (sent,) = OpenAIChat().parse_request(json.dumps(request).encode()).tool_calls
    assert (sent.name, json.loads(sent.arguments)) == ("bash", {"command": "ls"})


def _responses_stream(delta: Any, done: Any, *, custom: bool = False, item_done: bool = False) -> bytes:
    """A call of ``read_file`` whose one delta passes ``delta`` and whose ``.done`` event (its item's
    last event where ``item_done``) passes ``done``: a function's call, or a custom tool's."""
    kind, field, prefix = (
        ("custom_tool_call", "input", "response.custom_tool_call_input")
        if custom
        else ("function_call", "arguments", "response.function_call_arguments")
    )
    item = {"type": kind, "id": "fc_1", "call_id": "call_1", "name": "read_file", field: ""}
    ending = (
        {"type": "response.output_item.done", "output_index": 0, "item": {**item, field: done}}
        if item_done
        else {"type": f"{prefix}.done", "output_index": 0, "item_id": "fc_1", field: done}
    )
    events = [
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": f"{prefix}.delta", "output_index": 0, "item_id": "fc_1", "delta": delta},
        ending,
    ]
    return b"".join(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode() for event in events)


@pytest.mark.parametrize(
    ("delta", "done"),
    [
        ({"path": CREDENTIALS}, None),
        ("", {"path": CREDENTIALS}),
        ({"path": CREDENTIALS}, {"path": CREDENTIALS}),
    ],
    ids=["a delta", "the done event", "both"],
)
def test_a_responses_call_s_object_arguments_are_recorded_and_withheld_where_enforced(
    delta: Any, done: Any
) -> None:
    stream = _responses_stream(delta, done)
    observed = OpenAIResponses().stream_session()
    assert run(observed, stream) == stream
    (call,) = observed.completion.tool_calls
    assert json.loads(call.arguments) == {"path": CREDENTIALS}
    enforced = run(OpenAIResponses().stream_session(_enforced()), stream)
    assert "/home/u" not in enforced.decode() and "`read_file` was withheld" in enforced.decode()


def test_a_responses_everyday_read_passed_as_an_object_goes_on_as_the_text_decided_on() -> None:
    output = run(
        OpenAIResponses().stream_session(_enforced()), _responses_stream({"path": "README.md"}, None)
    )
    sent = [payload for _, payload in payloads(output)]
    assert [event["delta"] for event in sent if event["type"].endswith("arguments.delta")] == [
        '{"path":"README.md"}'
    ]
    assert [event["arguments"] for event in sent if event["type"].endswith("arguments.done")] == [
        '{"path":"README.md"}'
    ]


@pytest.mark.parametrize(
    ("delta", "done"),
    [
        (json.dumps({"path": CREDENTIALS}), '{"path":"README.md"}'),
        ('{"path":"README.md"}', json.dumps({"path": CREDENTIALS})),
    ],
    ids=["the deltas read credentials", "the done event reads credentials"],
)
def test_a_responses_call_whose_done_event_differs_from_its_deltas_is_decided_on_both(
    delta: str, done: str
) -> None:
    """A client joining the deltas (the SDK, and the answer's item held to them) runs what they say, one
    reading the done event what it says: withheld where either reads credentials, and recorded as that."""
    session = OpenAIResponses().stream_session(_enforced())
    output = run(session, _responses_stream(delta, done)).decode()
    assert "/home/u" not in output and "credential material" in output
    (call,) = session.completion.tool_calls
    assert json.loads(call.arguments) == {"path": CREDENTIALS}


DIFFERING = pytest.mark.parametrize(
    ("delta", "done"),
    [
        (json.dumps({"path": CREDENTIALS}), '{"path":"README.md"}'),
        ('{"path":"README.md"}', json.dumps({"path": CREDENTIALS})),
    ],
    ids=["the deltas read credentials", "the whole text reads credentials"],
)
ENDINGS = pytest.mark.parametrize(
    ("custom", "item_done"),
    [(False, False), (False, True), (True, False), (True, True)],
    ids=[
        "a function's done event",
        "a function's item",
        "a custom tool's done event",
        "a custom tool's item",
    ],
)


@DIFFERING
@ENDINGS
def test_a_responses_call_given_whole_otherwise_than_its_deltas_is_recorded_as_both_where_observed(
    delta: str, done: str, custom: bool, item_done: bool
) -> None:
    """The completion holds the whole text, the other reading the deltas joined: both are inspected."""
    stream = _responses_stream(delta, done, custom=custom, item_done=item_done)
    session = OpenAIResponses().stream_session()
    assert run(session, stream) == stream
    (call,) = session.completion.tool_calls
    assert call.arguments == done
    other = dict(session.other_readings())[OTHER_ARGUMENTS]
    assert [(read.name, read.where, read.arguments) for read in other.tool_calls] == [
        ("read_file", "output[0]", delta)
    ]


@DIFFERING
@ENDINGS
def test_a_responses_call_given_whole_otherwise_than_its_deltas_is_decided_on_both_however_it_ends(
    delta: str, done: str, custom: bool, item_done: bool
) -> None:
    """Withheld where either reading reads credentials, recorded as that reading, the other beside it."""
    session = OpenAIResponses().stream_session(_enforced())
    output = run(session, _responses_stream(delta, done, custom=custom, item_done=item_done)).decode()
    assert "/home/u" not in output and "credential material" in output
    (call,) = session.completion.tool_calls
    other = dict(session.other_readings())[OTHER_ARGUMENTS]
    assert json.loads(call.arguments) == {"path": CREDENTIALS}
    assert [json.loads(read.arguments) for read in other.tool_calls] == [{"path": "README.md"}]


def test_a_responses_call_given_whole_as_its_deltas_joined_has_no_other_reading() -> None:
    stream = _responses_stream('{"path": "REA', '{"path": "REA', item_done=True)
    session = OpenAIResponses().stream_session()
    run(session, stream)
    assert OTHER_ARGUMENTS not in dict(session.other_readings())


def test_a_responses_call_whose_done_event_repeats_its_deltas_goes_on() -> None:
    stream = _responses_stream('{"path": "README.md"}', '{"path": "README.md"}')
    sent = [payload for _, payload in payloads(run(OpenAIResponses().stream_session(_enforced()), stream))]
    joined = "".join(event["delta"] for event in sent if event["type"].endswith("arguments.delta"))
    done = [event["arguments"] for event in sent if event["type"].endswith("arguments.done")]
    assert (joined, done) == ('{"path": "README.md"}', ['{"path": "README.md"}'])
