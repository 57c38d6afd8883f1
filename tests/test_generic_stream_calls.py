"""A tool call whose arguments stream over several events of a stream no dialect knows (Chat deltas,
Anthropic's ``input_json_delta``, the Responses API's argument deltas) is decided once they end, on every
way a client may read it, and held whole until then where a gate rewrites the stream: however the call is
split, a credential path in its later pieces is read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from proxy.dialects import Generic
from proxy.dialects.stream import MAX_HELD_BYTES, StreamSession
from tests.test_stream_tool_gate import _inspector

CREDENTIALS = '{"path": "/home/u/.aws/credentials"}'
EVERYDAY = '{"path": "docs/README.md"}'


def _session(mode: str = "enforce") -> StreamSession:
    return Generic().stream_session(_inspector(mode).stream_filters())


def _sse(document: Any) -> bytes:
    return b"data: " + json.dumps(document).encode() + b"\n\n"


def _run(session: StreamSession, events: list[Any], told: list[Any] | None = None) -> list[Any]:
    """The events the session sends, read back as JSON; the ``error`` events telling the agent of a call
    withheld are kept apart, in ``told`` where given."""
    sent = b"".join(session.feed(_sse(event)) for event in events) + session.finish()
    read: list[Any] = []
    for block in filter(None, sent.split(b"\n\n")):
        name, _, data = block.rpartition(b"data: ")
        if name != b"event: error\n":
            read.append(json.loads(data))
        elif told is not None:
            told.append(json.loads(data))
    return read


def _chunk(*calls: dict[str, Any], finish: str | None = None, content: str | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {} if content is None else {"content": content}
    if calls:
        delta["tool_calls"] = list(calls)
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _piece(
    index: Any, arguments: str = "", name: str | None = None, call_id: str | None = None
) -> dict[str, Any]:
    function: dict[str, Any] = {"arguments": arguments}
    piece: dict[str, Any] = {"index": index, "function": function}
    if name is not None:
        function["name"] = name
        piece |= {"type": "function", "id": call_id or f"call_{index}"}
    return piece


def _split(text: str, size: int = 5) -> Iterator[str]:
    return (text[start : start + size] for start in range(0, len(text), size))


def _chat_call(arguments: str, name: str = "read_file", index: int = 0) -> list[dict[str, Any]]:
    """A call as Chat streams it: the name with empty arguments, then the arguments a few characters a
    delta."""
    return [_chunk(_piece(index, name=name)), *(_chunk(_piece(index, part)) for part in _split(arguments))]


def _chat_calls(events: list[Any]) -> dict[int, tuple[str, str]]:
    """The calls a Chat client joins from the events, by index: name and arguments."""
    calls: dict[int, tuple[str, str]] = {}
    for event in events:
        for choice in event.get("choices", []):
            for piece in choice["delta"].get("tool_calls", []):
                name, arguments = calls.get(piece["index"], ("", ""))
                function = piece["function"]
                calls[piece["index"]] = (name + function.get("name", ""), arguments + function["arguments"])
    return calls


def _text(events: list[Any]) -> str:
    """The text a Chat client joins from the events' deltas (the last word of one held to the next)."""
    return "".join(
        choice["delta"]["content"]
        for event in events
        for choice in event.get("choices", [])
        if "content" in choice["delta"]
    )


def _read_alike(sent: list[Any], events: list[Any]) -> bool:
    """Whether a Chat client joins the same text and calls from ``sent`` as from ``events``, which end
    alike."""
    return (_text(sent), _chat_calls(sent), sent[-1]) == (_text(events), _chat_calls(events), events[-1])


def test_a_credential_path_in_a_chat_calls_later_deltas_withholds_the_call() -> None:
    session = _session()
    events = [_chunk(content="Reading it."), *_chat_call(CREDENTIALS), _chunk(finish="tool_calls")]
    told: list[Any] = []
    sent = _run(session, events, told)
    assert _chat_calls(sent) == {} and _text(sent) == "Reading it."
    ((error,),) = [list(event.values()) for event in told]
    assert error["code"] == "egressguard_blocked" and "read_file" in error["message"]
    assert sent[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert session.dropped_tool_calls == [("read_file", "call_0")]
    (call,) = session.completion.tool_calls
    assert (call.name, call.arguments, call.where) == (
        "read_file",
        CREDENTIALS,
        "[1].choices[0].delta.tool_calls[0]",
    )


def test_a_read_of_everyday_files_streams_through() -> None:
    events = [_chunk(content="Reading it."), *_chat_call(EVERYDAY), _chunk(finish="tool_calls")]
    session = _session()
    assert _read_alike(_run(session, events), events)
    assert session.dropped_tool_calls == [] and session.notes == []


@pytest.mark.parametrize(
    "events",
    [
        pytest.param(
            [_chunk(_piece(0, name="read_")), _chunk(_piece(0, CREDENTIALS, name="file"))], id="name split"
        ),
        pytest.param(
            [_chunk(_piece(0, CREDENTIALS[:9])), _chunk(_piece(0, CREDENTIALS[9:], name="read_file"))],
            id="arguments before the name",
        ),
        pytest.param(
            [_chunk(_piece(0, name="cat"), _piece(0, '{"path": "~/.ss'), _piece(0, 'h/id_rsa"}'))],
            id="pieces of one call in one event",
        ),
        pytest.param(
            [{"data": event} for event in _chat_call(CREDENTIALS)], id="wrapped in an object of another API"
        ),
        pytest.param(
            [
                _chunk(_piece(0, name="read_file")),
                _chunk(_piece(0, '{"path": "/home/u/.aws/cred')),
                _chunk(_piece(0, 'entials"}')),
            ],
            id="a path whole only once joined",
        ),
    ],
)
def test_every_split_of_a_credential_read_is_withheld(events: list[Any]) -> None:
    session = _session()
    sent = _run(session, [*events, _chunk(finish="tool_calls")])
    assert len(sent) == 1 and "tool_calls" not in sent[0]["choices"][0]["delta"]
    assert len(session.dropped_tool_calls) == 1


def test_interleaved_calls_are_each_decided_on_their_own_arguments() -> None:
    """Deltas of two calls taking turns: the everyday read is sent, in its order, the credential read
    not; an event carrying pieces of both goes with the one withheld."""
    first, second = list(_split(EVERYDAY)), list(_split(CREDENTIALS))
    events = [_chunk(_piece(0, name="read_file")), _chunk(_piece(1, name="read_file"))]
    for n in range(len(second)):
        if n == 2:
            events.append(_chunk(_piece(0, first[n]), _piece(1, second[n])))
            continue
        if n < len(first):
            events.append(_chunk(_piece(0, first[n])))
        events.append(_chunk(_piece(1, second[n])))
    events.append(_chunk(finish="tool_calls"))
    session = _session()
    sent = _run(session, events)
    assert session.dropped_tool_calls == [("read_file", "call_1")]
    assert 1 not in _chat_calls(sent)
    name, arguments = _chat_calls(sent)[0]
    assert name == "read_file" and arguments == "".join(part for n, part in enumerate(first) if n != 2)


def test_a_second_call_reusing_an_index_withholds_both() -> None:
    events = [*_chat_call(EVERYDAY), _chunk(_piece(0, CREDENTIALS, name="read_file", call_id="call_other"))]
    session = _session()
    sent = _run(session, [*events, _chunk(finish="tool_calls")])
    assert _chat_calls(sent) == {} and [name for name, _ in session.dropped_tool_calls] == ["read_file"]


def test_a_piece_after_its_call_was_decided_is_not_sent() -> None:
    events = [*_chat_call(EVERYDAY), _chunk(finish="tool_calls"), _chunk(_piece(0, "/../../.ssh/id_rsa"))]
    session = _session()
    sent = _run(session, events)
    assert _chat_calls(sent) == {0: ("read_file", EVERYDAY)}
    assert any("no reading places" in note for note in session.notes)


@pytest.mark.parametrize("index", [1.0, "1", True, -1])
def test_a_piece_at_an_index_clients_read_otherwise_is_not_sent(index: Any) -> None:
    """A client reading 1.0, "1" or true as 1 would join the piece to the call at 1, one reading -1 as the
    last place to the last call: no reading of the stream places it, and it is not sent."""
    events = [_chunk(_piece(1, name="read_file")), _chunk(_piece(index, CREDENTIALS)), _chunk(finish="stop")]
    session = _session()
    sent = _run(session, events)
    assert _chat_calls(sent) == {1: ("read_file", "")} and "credentials" not in json.dumps(sent)


@pytest.mark.parametrize("arguments", [CREDENTIALS, EVERYDAY])
def test_a_call_the_stream_never_finishes_is_decided_on_what_came(arguments: str) -> None:
    session = _session()
    sent = _run(session, _chat_call(arguments))
    assert _chat_calls(sent) == ({} if arguments == CREDENTIALS else {0: ("read_file", arguments)})


def test_a_held_call_past_the_bound_is_dropped_and_its_later_pieces_too() -> None:
    padding = " " * 4096
    events = [_chunk(_piece(0, name="read_file")), _chunk(_piece(0, '{"path": "docs/README.md"'))]
    events += [_chunk(_piece(0, padding)) for _ in range(MAX_HELD_BYTES // 4096 + 1)]
    events += [_chunk(_piece(0, "}")), _chunk(content="Done."), _chunk(finish="tool_calls")]
    session = _session()
    sent = _run(session, events)
    assert _chat_calls(sent) == {} and _text(sent) == "Done."
    assert any("grew past" in note for note in session.notes)


def test_a_call_that_is_not_gated_streams_when_its_arguments_end() -> None:
    events = [
        _chunk(content="Checking."),
        *_chat_call('{"city": "Oslo"}', name="get_weather"),
        _chunk(finish="tool_calls"),
    ]
    assert _read_alike(_run(_session(), events), events)


def test_observed_nothing_is_held_and_the_joined_call_is_read() -> None:
    session = _session("observe")
    events = [*_chat_call(CREDENTIALS), _chunk(finish="tool_calls")]
    assert _run(session, events) == events
    assert [(call.name, call.arguments) for call in session.completion.tool_calls] == [
        ("read_file", CREDENTIALS)
    ]


def _anthropic(partials: list[str], name: str = "read_file", start_input: Any = None) -> list[Any]:
    block = {"type": "tool_use", "id": "toolu_1", "name": name, "input": start_input or {}}
    return [
        {"type": "message_start", "message": {"id": "msg_1", "role": "assistant", "content": []}},
        {"type": "content_block_start", "index": 0, "content_block": block},
        *(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": part},
            }
            for part in partials
        ),
        {"type": "content_block_stop", "index": 0},
        {"type": "message_stop"},
    ]


@pytest.mark.parametrize(
    ("events", "withheld"),
    [
        pytest.param(_anthropic(list(_split(CREDENTIALS))), True, id="credential path in its deltas"),
        pytest.param(_anthropic([], start_input={"path": "~/.ssh/id_rsa"}), True, id="in its start"),
        pytest.param(_anthropic(list(_split(EVERYDAY))), False, id="everyday"),
    ],
)
def test_an_anthropic_tool_use_is_decided_when_its_block_stops(events: list[Any], withheld: bool) -> None:
    session = _session()
    sent = _run(session, events)
    kinds = [event["type"] for event in sent]
    assert kinds == (["message_start", "message_stop"] if withheld else [event["type"] for event in events])


def _responses(deltas: list[str], done: str) -> list[Any]:
    item = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "read_file", "arguments": ""}
    return [
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        *(
            {
                "type": "response.function_call_arguments.delta",
                "output_index": 0,
                "item_id": "fc_1",
                "delta": part,
            }
            for part in deltas
        ),
        {
            "type": "response.function_call_arguments.done",
            "output_index": 0,
            "item_id": "fc_1",
            "arguments": done,
        },
        {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": {**item, "arguments": "".join(deltas)},
        },
        {"type": "response.completed", "response": {"id": "resp_1", "status": "completed"}},
    ]


@pytest.mark.parametrize(
    ("events", "withheld"),
    [
        pytest.param(
            _responses(list(_split(CREDENTIALS)), CREDENTIALS), True, id="credential path in its deltas"
        ),
        pytest.param(_responses(list(_split(EVERYDAY)), CREDENTIALS), True, id="in its done event alone"),
        pytest.param(_responses(list(_split(EVERYDAY)), EVERYDAY), False, id="everyday"),
    ],
)
def test_a_responses_call_item_is_decided_when_it_is_done(events: list[Any], withheld: bool) -> None:
    sent = _run(_session(), events)
    assert [event["type"] for event in sent] == (
        ["response.completed"] if withheld else [event["type"] for event in events]
    )


def test_a_delta_naming_another_item_withholds_the_call() -> None:
    events = _responses(list(_split(EVERYDAY)), EVERYDAY)
    events[2] = {**events[2], "item_id": "fc_other"}
    assert [event["type"] for event in _run(_session(), events)] == ["response.completed"]


def _step_delta(step_id: str, *calls: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": step_id,
        "object": "thread.run.step.delta",
        "delta": {"step_details": {"type": "tool_calls", "tool_calls": list(calls)}},
    }


def _step(step_id: str, status: str, *calls: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": step_id,
        "object": "thread.run.step",
        "type": "tool_calls",
        "status": status,
        "step_details": {"type": "tool_calls", "tool_calls": list(calls)},
    }


def _step_call(
    kind: str, text: str = "", name: str | None = None, call_id: str | None = None
) -> dict[str, Any]:
    """A piece of an Assistants run step's tool call: a function's arguments (``name`` on the first), the
    code interpreter's input."""
    holder: dict[str, Any] = {"arguments": text} if kind == "function" else {"input": text}
    if name is not None:
        holder["name"] = name
    piece: dict[str, Any] = {"index": 0, "type": kind, kind: holder}
    if call_id is not None:
        piece["id"] = call_id
    return piece


def _assistants_call(kind: str, text: str, name: str | None = None, step_id: str = "step_1") -> list[Any]:
    """A run step's call as the Assistants API streams it: the call opened, its text a few characters a
    ``thread.run.step.delta``, then the step completed with the call whole."""
    whole = _step_call(kind, text, name, "call_1")
    return [
        _step(step_id, "in_progress"),
        _step_delta(step_id, _step_call(kind, "", name, "call_1")),
        *(_step_delta(step_id, _step_call(kind, part)) for part in _split(text)),
        _step(step_id, "completed", {key: value for key, value in whole.items() if key != "index"}),
    ]


@pytest.mark.parametrize(
    ("kind", "text", "name"),
    [
        pytest.param("function", CREDENTIALS, "read_file", id="a function reading credentials"),
        pytest.param(
            "code_interpreter", "import shutil; shutil.rmtree('/')", None, id="code wiping the disk"
        ),
    ],
)
def test_an_assistants_step_call_is_decided_on_its_streamed_arguments(
    kind: str, text: str, name: str | None
) -> None:
    """The call's pieces in ``thread.run.step.delta`` events are joined by step and index as the SDK joins
    them: none is sent, nor the completed step carrying the call whole; the call is read whole."""
    session = _session()
    sent = _run(session, _assistants_call(kind, text, name))
    assert [(event["object"], event["status"]) for event in sent] == [("thread.run.step", "in_progress")]
    expected = name or "code_interpreter"
    assert [call.name for call in session.completion.tool_calls if call.arguments == text] == [expected] * 2
    assert [dropped for dropped, _ in session.dropped_tool_calls][:1] == [expected]


@pytest.mark.parametrize(
    ("kind", "text", "name"),
    [
        pytest.param("function", EVERYDAY, "read_file", id="a function reading docs"),
        pytest.param("code_interpreter", "print(sum(range(10)))", None, id="arithmetic"),
    ],
)
def test_an_everyday_assistants_step_call_streams_through(kind: str, text: str, name: str | None) -> None:
    events = _assistants_call(kind, text, name)
    session = _session()
    assert _run(session, events) == events
    assert session.dropped_tool_calls == [] and session.notes == []


def test_assistants_steps_calling_at_the_same_index_are_each_their_own() -> None:
    """Two steps each open a call at index 0: each is joined on its own step, the everyday one sent."""
    first = _assistants_call("function", EVERYDAY, "read_file", "step_1")
    second = _assistants_call("function", CREDENTIALS, "read_file", "step_2")
    sent = _run(_session(), [*first, *second])
    assert sent == [*first, second[0]]


def test_a_listed_run_steps_code_interpreter_call_and_its_results_are_read() -> None:
    """A run step listed whole (``GET .../runs/{id}/steps``): its code interpreter call is a call of the
    code interpreter on its input, its logs and the file search's texts are what tools returned."""
    code = {
        "id": "call_1",
        "type": "code_interpreter",
        "code_interpreter": {"input": "import os", "outputs": [{"type": "logs", "logs": "done"}]},
    }
    search = {
        "id": "call_2",
        "type": "file_search",
        "file_search": {"results": [{"file_id": "f", "content": [{"type": "text", "text": "found"}]}]},
    }
    page = {"object": "list", "data": [_step("step_1", "completed", code, search)]}
    completion = Generic().parse_response(json.dumps(page).encode())
    assert [(call.name, call.arguments, call.where, call.ran_upstream) for call in completion.tool_calls] == [
        ("code_interpreter", "import os", "data[0].step_details.tool_calls[0]", True),
        ("file_search", "", "data[0].step_details.tool_calls[1]", True),
    ]
    assert [(part.source.value, part.text, part.where, part.tool_name) for part in completion.parts] == [
        (
            "tool_result",
            "done",
            "data[0].step_details.tool_calls[0].code_interpreter.outputs[0].logs",
            "code_interpreter",
        ),
        (
            "tool_result",
            "found",
            "data[0].step_details.tool_calls[1].file_search.results[0].content[0].text",
            "file_search",
        ),
    ]


def test_the_notice_of_a_call_held_at_the_streams_end_comes_before_it() -> None:
    """A call still held when ``[DONE]`` ends the stream is decided there: the ``error`` event telling of
    it comes before the end, after which a client reads nothing."""
    session = _session()
    sent = b"".join(session.feed(_sse(event)) for event in _chat_call(CREDENTIALS))
    sent += session.feed(b"data: [DONE]\n\n") + session.finish()
    assert sent.startswith(b"event: error\n") and sent.endswith(b"\n\ndata: [DONE]\n\n")
    assert session.dropped_tool_calls == [("read_file", "call_0")]


@pytest.mark.parametrize(
    ("path", "withheld"), [("/home/u/.aws/credentials", True), ("docs/README.md", False)]
)
def test_a_chat_calls_object_arguments_are_merged_before_they_are_read(path: str, withheld: bool) -> None:
    """Arguments streamed as objects, which the OpenAI SDK merges (a string appended to the one at its
    place): the path they make is read, not each object's JSON on its own."""
    session = _session()
    pieces = [_piece(0, name="read_file")] + [
        {"index": 0, "function": {"arguments": {"path": part}}} for part in _split(path)
    ]
    events = [_chunk(piece) for piece in pieces] + [_chunk(finish="tool_calls")]
    sent = _run(session, events)
    carried = [event for event in sent if event["choices"][0]["delta"].get("tool_calls")]
    assert (carried == []) is withheld
    (call,) = session.completion.tool_calls
    assert json.loads(call.arguments) == {"path": path}
    assert session.dropped_tool_calls == ([("read_file", "call_0")] if withheld else [])


AWS_KEY = "AKIA" + "Z7QW3RTY2UIO4PAS"


@pytest.mark.parametrize("mode", ["enforce", "observe"])
@pytest.mark.parametrize("cut", [6, 13])
def test_a_key_cut_over_a_chat_calls_object_arguments_is_read_joined(mode: str, cut: int) -> None:
    """Each string of arguments streamed as objects is read on from the strings before it at the same
    place, as the OpenAI SDK appends them: a key cut over two is redacted where enforced; observed, the
    events go as they came and the call is read whole."""
    session = _session(mode)
    text = f"upload {AWS_KEY} now"
    pieces = [_piece(0, name="search_docs")] + [
        {"index": 0, "function": {"arguments": {"query": part}}}
        for part in (text[: 7 + cut], text[7 + cut :])
    ]
    events = [_chunk(piece) for piece in pieces] + [_chunk(finish="tool_calls")]
    sent = _run(session, events)
    joined = "".join(
        piece["function"]["arguments"].get("query", "")
        for event in sent
        for piece in event["choices"][0]["delta"].get("tool_calls", [])
        if isinstance(piece["function"].get("arguments"), dict)
    )
    enforcing = mode == "enforce"
    assert joined == ("upload [REDACTED:aws-access-key-id] now" if enforcing else text)
    assert (sent == events) is not enforcing
    # Observed, nothing is filtered: the call is read whole at the end, its key there for the scan.
    (call,) = session.completion.tool_calls
    assert json.loads(call.arguments) == {"query": text}
