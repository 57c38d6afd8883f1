"""End to end: a streamed call whose arguments an OpenAI-compatible server sends as a JSON object where the
API sends their text, through a real egressguard, to the official OpenAI SDK (which passes the object on
to the agent as it came): a credential read so passed is withheld for its notice where enforced and
reaches the agent as sent where observed, recorded either way; an everyday read passes as it came. Chat's
deltas and the Responses API's argument deltas."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import Proxy
from tests.test_e2e_inspect import _agent, ask, last_record, openai_client
from tests.upstream import FakeUpstream, Reply, sse

CREDENTIALS = "/home/u/.aws/credentials"
ENVELOPE = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}


def _chat_events(arguments: dict[str, Any]) -> list[bytes]:
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "bash", "arguments": ""}}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse({**ENVELOPE, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    return [
        chunk({"role": "assistant", "content": "Reading."}),
        chunk({"tool_calls": [call]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]}),
        chunk({}, "tool_calls"),
        b"data: [DONE]\n\n",
    ]


def _chat(upstream: FakeUpstream) -> tuple[list[tuple[str, Any]], str]:
    """The calls (each name and the arguments the SDK's chunks gave, joined or as the object) and the text."""
    stream = openai_client(upstream).chat.completions.create(model="m", messages=ask(), stream=True)
    names: dict[int, str] = {}
    passed: dict[int, list[Any]] = {}
    text = ""
    for chunk in stream:
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for call in delta.tool_calls or []:
            assert call.function is not None
            names[call.index] = names.get(call.index, "") + (call.function.name or "")
            if call.function.arguments:
                passed.setdefault(call.index, []).append(call.function.arguments)
    return [(names[index], _joined(passed.get(index, []))) for index in sorted(names)], text


def _joined(passed: list[Any]) -> Any:
    """An object passed alone as it came; texts joined and read as JSON."""
    if len(passed) == 1 and isinstance(passed[0], dict):
        return passed[0]
    return json.loads("".join(passed))


def _responses_events(arguments: Any, whole: str | None = None) -> list[bytes]:
    """A call of ``bash`` whose one delta passes ``arguments``, and whose item's last event (and a
    ``.done`` event, where ``whole`` is given) give them whole: as their JSON text, or as ``whole``."""
    item = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "bash", "arguments": ""}
    text = json.dumps(arguments) if whole is None else whole
    done = {**item, "status": "completed", "arguments": text}
    response = {"id": "resp_1", "object": "response", "model": "m", "status": "in_progress", "output": []}
    located = {"output_index": 0, "item_id": "fc_1"}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.function_call_arguments.delta", **located, "delta": arguments},
        *(
            [{"type": "response.function_call_arguments.done", **located, "arguments": whole}]
            if whole
            else []
        ),
        {"type": "response.output_item.done", "output_index": 0, "item": done},
        {"type": "response.completed", "response": {**response, "status": "completed", "output": [done]}},
    ]
    return [sse({**event, "sequence_number": number}, event["type"]) for number, event in enumerate(events)]


def _responses(upstream: FakeUpstream) -> tuple[list[tuple[str, Any]], str]:
    """The calls the agent's events give (what the argument deltas passed) and the text of its notices."""
    events = list(openai_client(upstream).responses.create(model="m", input="hi", stream=True))
    passed = [event.delta for event in events if event.type == "response.function_call_arguments.delta"]
    names = [
        event.item.name
        for event in events
        if event.type == "response.output_item.added" and event.item.type == "function_call"
    ]
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    return [(name, _joined(passed)) for name in names], text


DIALECTS: dict[str, tuple[Callable[[dict[str, Any]], list[bytes]], Callable[[FakeUpstream], Any]]] = {
    "openai_chat": (_chat_events, _chat),
    "openai_responses": (_responses_events, _responses),
}


def _run(
    start_proxy: Callable[..., Proxy],
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    dialect: str,
    arguments: dict[str, Any],
) -> tuple[list[tuple[str, Any]], str, list[dict[str, Any]]]:
    proxy = _agent(start_proxy(mode=mode), monkeypatch)
    events, receive = DIALECTS[dialect]
    upstream.reply = Reply(events=events(arguments), content_type="text/event-stream")
    calls, text = receive(upstream)
    found = [finding for finding in last_record(proxy)["findings"] if finding["threat"] == "credential_theft"]
    return calls, text, found


@pytest.mark.parametrize("mode", ["enforce", "observe"])
@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_credential_read_passed_as_an_object_is_withheld_or_recorded(
    start_proxy: Callable[..., Proxy],
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    dialect: str,
    mode: str,
) -> None:
    command = {"command": f"cat {CREDENTIALS}"}
    calls, text, found = _run(start_proxy, upstream, monkeypatch, mode, dialect, command)
    if mode == "enforce":
        assert calls == [] and "The call to the tool `bash` was withheld by egressguard" in text
        assert CREDENTIALS not in text
    else:
        assert calls == [("bash", command)] and "withheld" not in text
    assert found and {finding["enforced"] for finding in found} == {mode == "enforce"}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_an_everyday_command_passed_as_an_object_reaches_the_agent(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, dialect: str
) -> None:
    """A shell is a destructive tool, held for approval where tool abuse is enforced: observed here, and
    only credential theft enforced."""
    command = {"command": "ls docs"}
    proxy = _agent(start_proxy(extra="threats: {credential_theft: enforce}\n"), monkeypatch)
    events, receive = DIALECTS[dialect]
    upstream.reply = Reply(events=events(command), content_type="text/event-stream")
    calls, text = receive(upstream)
    assert calls == [("bash", command)] and "withheld" not in text
    assert not [f for f in last_record(proxy)["findings"] if f["threat"] == "credential_theft"]


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_responses_call_whose_done_event_differs_from_its_deltas_is_recorded_as_both(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """The deltas read credentials, the ``.done`` event and the item an everyday folder: a client joining
    the deltas runs the read, so it is withheld where enforced, and recorded either way beside the
    reading of the whole text."""
    read, everyday = json.dumps({"command": f"cat {CREDENTIALS}"}), json.dumps({"command": "ls docs"})
    proxy = _agent(start_proxy(mode=mode), monkeypatch)
    upstream.reply = Reply(events=_responses_events(read, everyday), content_type="text/event-stream")
    calls, text = _responses(upstream)
    if mode == "enforce":
        assert calls == [] and "The call to the tool `bash` was withheld by egressguard" in text
    else:
        assert calls == [("bash", json.loads(read))] and "withheld" not in text
    findings = last_record(proxy)["findings"]
    found = [finding for finding in findings if finding["threat"] == "credential_theft"]
    assert found and {finding["enforced"] for finding in found} == {mode == "enforce"}
    assert {finding["where"] for finding in found} == {"output[0]"}
