"""End to end: a custom tool's call (free-form input) streamed through a real egressguard to the official
OpenAI SDK, in Chat Completions deltas (``type: custom``, each call's ``custom.input`` deltas joined into
the input the agent runs) and in the Responses API's ``custom_tool_call_input`` deltas, and a remote
MCP tool's call the API ran, in its ``mcp_call_arguments`` deltas: a key or a command cut over two
deltas is read whole, redacted or withheld where enforced and reaching the agent as sent where
observed, recorded either way."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import Proxy
from tests.test_e2e_inspect import _agent, ask, last_record, openai_client
from tests.test_stream_custom_calls import (
    GITHUB_TOKEN,
    RESPONSES_CALLS,
    chat_custom_events,
    responses_call_events,
)
from tests.upstream import FakeUpstream, Reply

NOTE = f"the release runner authenticates with {GITHUB_TOKEN} from now on"
COMMAND = "rm -rf /home/u/project"


def _receive(upstream: FakeUpstream) -> tuple[list[tuple[str, str]], str]:
    """The custom calls the SDK's chunks give, each name and input joined across its deltas as a client
    running custom tools joins them (the SDK's stream helper does not run them), and the answer's text."""
    stream = openai_client(upstream).chat.completions.create(model="m", messages=ask(), stream=True)
    names: dict[int, str] = {}
    inputs: dict[int, str] = {}
    text = ""
    for chunk in stream:
        delta = chunk.choices[0].delta if chunk.choices else None
        text += (delta.content if delta is not None else None) or ""
        for call in (delta.tool_calls if delta is not None else None) or []:
            assert call.function is None, call
            custom = (call.model_extra or {}).get("custom") or {}
            names[call.index] = names.get(call.index, "") + custom.get("name", "")
            inputs[call.index] = inputs.get(call.index, "") + custom.get("input", "")
    return [(names[index], inputs[index]) for index in sorted(names)], text


def _run(
    start_proxy: Callable[..., Proxy],
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    events: list[bytes],
) -> tuple[list[tuple[str, str]], str, list[dict[str, Any]]]:
    proxy = _agent(start_proxy(mode=mode), monkeypatch)
    upstream.reply = Reply(events=events, content_type="text/event-stream", pause_between_events=0.01)
    calls, text = _receive(upstream)
    return calls, text, last_record(proxy)["findings"]


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_key_cut_over_two_input_deltas_is_redacted_or_recorded(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    cut = NOTE.index(GITHUB_TOKEN) + 20
    events = chat_custom_events("save_note", "", NOTE[:cut], NOTE[cut:])
    calls, _, findings = _run(start_proxy, upstream, monkeypatch, mode, events)
    if mode == "enforce":
        assert calls == [("save_note", NOTE.replace(GITHUB_TOKEN, "[REDACTED:github-pat]"))]
    else:
        assert calls == [("save_note", NOTE)]
    found = [finding for finding in findings if finding["rule"] == "github-pat"]
    assert [(finding["where"], finding["enforced"]) for finding in found] == [
        ("choices[0].message.tool_calls[0]", mode == "enforce")
    ]
    assert GITHUB_TOKEN not in str(findings)


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_command_cut_over_two_input_deltas_is_withheld_or_recorded(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    cut = COMMAND.index("/home") + 3
    events = chat_custom_events("bash", "", COMMAND[:cut], COMMAND[cut:])
    calls, text, findings = _run(start_proxy, upstream, monkeypatch, mode, events)
    if mode == "enforce":
        assert calls == [] and "The call to the tool `bash` was withheld by egressguard" in text
        assert "/home/u" not in text
    else:
        assert calls == [("bash", COMMAND)] and "withheld" not in text
    found = [finding for finding in findings if finding["threat"] == "tool_abuse"]
    assert found and {finding["enforced"] for finding in found} == {mode == "enforce"}
    assert {finding["where"] for finding in found} == {"choices[0].message.tool_calls[0]"}


@pytest.mark.parametrize("kind", ["custom_tool_call", "mcp_call"])
@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_key_cut_over_two_responses_call_deltas_is_redacted_or_recorded(
    start_proxy: Callable[..., Proxy],
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    kind: str,
) -> None:
    """A custom tool's input, and a remote MCP tool's arguments the API ran: the SDK's events give the
    deltas joined, and the text the ``.done`` event and the final response give whole."""
    proxy = _agent(start_proxy(mode=mode), monkeypatch)
    field, events_named = RESPONSES_CALLS[kind]
    text = NOTE if kind == "custom_tool_call" else json.dumps({"note": NOTE})
    cut = text.index(GITHUB_TOKEN) + 20
    events = responses_call_events(kind, "save_note", text[:cut], text[cut:])
    upstream.reply = Reply(events=events, content_type="text/event-stream", pause_between_events=0.01)
    joined, whole = "", []
    for event in openai_client(upstream).responses.create(model="m", input="hi", stream=True):
        # The SDK's model of each kind's event, read by the field that kind gives its text in.
        given = event.model_dump()
        if event.type == f"{events_named}.delta":
            joined += given["delta"]
        elif event.type == f"{events_named}.done":
            whole.append(given[field])
        elif event.type == "response.completed":
            whole += [item.model_dump()[field] for item in event.response.output if item.type == kind]
    sent = text.replace(GITHUB_TOKEN, "[REDACTED:github-pat]") if mode == "enforce" else text
    assert (joined, whole) == (sent, [sent, sent])
    findings = last_record(proxy)["findings"]
    found = [finding for finding in findings if finding["rule"] == "github-pat"]
    assert [(finding["where"], finding["enforced"]) for finding in found] == [
        ("output[0]", mode == "enforce")
    ]
    assert GITHUB_TOKEN not in str(findings)
