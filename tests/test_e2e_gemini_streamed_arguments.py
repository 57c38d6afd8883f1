"""End to end: a call whose arguments ``streamGenerateContent?alt=sse`` streams as ``partialArgs`` over the
parts of several chunks (Vertex AI's ``streamFunctionCallArguments``), a string continued over two pieces
at its JSON path, through a real egressguard, to the google-genai SDK: decided on the arguments the
pieces make joined, a credential read or a destructive command withheld for its notice where enforced,
reaching the agent piece by piece as sent where observed, recorded either way; an everyday read passes
as it came."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import Proxy
from tests.test_e2e_inspect import _agent, last_record
from tests.test_e2e_stream_credential_reads import gemini_client
from tests.test_gemini_streamed_arguments import CREDENTIALS, _chunk, _streamed
from tests.upstream import FakeUpstream, Reply

CALLS: dict[str, tuple[str, str, list[str], str]] = {
    "a credential read": ("read_file", "$.path", CREDENTIALS, "credential_theft"),
    "a credential read of a list's item": ("read_many_files", "$.paths[0]", CREDENTIALS, "credential_theft"),
    "a destructive command": ("run_shell_command", "$.command", ["rm -r", "f ~"], "tool_abuse"),
}


def _receive(upstream: FakeUpstream) -> tuple[list[tuple[str | None, list[str]]], str]:
    """The function call parts the agent got (each name and the strings its ``partial_args`` carry) and
    the text."""
    calls: list[tuple[str | None, list[str]]] = []
    text = ""
    client = gemini_client(upstream)  # held while it streams: a client collected closes its connection
    for chunk in client.models.generate_content_stream(model="gemini-2.5-flash", contents="hello"):
        content = chunk.candidates[0].content if chunk.candidates else None
        for part in (content.parts if content else None) or []:
            text += part.text or ""
            if part.function_call is not None:
                pieces = [piece.string_value or "" for piece in part.function_call.partial_args or []]
                calls.append((part.function_call.name, pieces))
    return calls, text


def _run(
    proxy: Proxy, upstream: FakeUpstream, name: str, path: str, pieces: list[str]
) -> tuple[list[tuple[str | None, list[str]]], str, list[dict[str, Any]]]:
    events = [
        _chunk({"text": "Reading."}),
        *_streamed(name, path, pieces),
        _chunk({"text": ""}, finish="STOP"),
    ]
    upstream.reply = Reply(events=events, content_type="text/event-stream")
    calls, text = _receive(upstream)
    return calls, text, last_record(proxy)["findings"]


@pytest.mark.parametrize("mode", ["enforce", "observe"])
@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_call_streamed_as_partial_args_is_decided_on_them_joined(
    call: str,
    mode: str,
    start_proxy: Callable[..., Proxy],
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name, path, pieces, threat = CALLS[call]
    proxy = _agent(start_proxy(mode=mode), monkeypatch)
    calls, text, findings = _run(proxy, upstream, name, path, pieces)
    if mode == "enforce":
        assert calls == [] and f"The call to the tool `{name}` was withheld by egressguard" in text
        assert pieces[0] not in text
    else:
        assert calls == [(name, []), (None, pieces[:1]), (None, pieces[1:])] and "withheld" not in text
    found = [finding["enforced"] for finding in findings if finding["threat"] == threat]
    assert found and set(found) == {mode == "enforce"}


def test_an_everyday_read_streamed_as_partial_args_reaches_the_agent_as_it_came(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = _agent(start_proxy(mode="enforce"), monkeypatch)
    calls, text, findings = _run(proxy, upstream, "read_file", "$.path", ["docs/READ", "ME.md"])
    assert calls == [("read_file", []), (None, ["docs/READ"]), (None, ["ME.md"])]
    assert "withheld" not in text and not [f for f in findings if f["threat"] == "credential_theft"]
