"""End to end: a streamed call of a reading tool whose arguments, split over several deltas, name credential
material is withheld for its notice where ``credential_theft`` is enforced and recorded in observe mode;
a read of an everyday file streams through whole. Each streamed dialect, through its official SDK."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytest
from openai.types.chat import ChatCompletionChunk

from tests.harness import Proxy
from tests.test_e2e_inspect import _agent, anthropic_client, ask, last_record, openai_client
from tests.upstream import FakeUpstream, Reply, ToolCallReply

CREDENTIALS = "/home/u/.aws/credentials"
NOTICE = "The call to the tool `read_file` was withheld by egressguard"
Calls = Sequence[tuple[str | None, Any]]


def _chat(upstream: FakeUpstream) -> tuple[Calls, str]:
    return chat_stream_calls(
        openai_client(upstream).chat.completions.create(model="m", messages=ask(), stream=True)
    )


def chat_stream_calls(stream: Iterable[ChatCompletionChunk]) -> tuple[Calls, str]:
    """The calls and the text a chat completion's stream makes, joined as the SDK's callers join them."""
    names: dict[int, str] = {}
    arguments: dict[int, str] = {}
    text = ""
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for call in delta.tool_calls or []:
            assert call.function is not None
            names[call.index] = names.get(call.index, "") + (call.function.name or "")
            arguments[call.index] = arguments.get(call.index, "") + (call.function.arguments or "")
    return [(names[index], json.loads(arguments[index])) for index in sorted(names)], text


def _responses(upstream: FakeUpstream) -> tuple[Calls, str]:
    events = list(openai_client(upstream).responses.create(model="m", input="hi", stream=True))
    (completed,) = [event for event in events if event.type == "response.completed"]
    output = completed.response.output
    calls = [(item.name, json.loads(item.arguments)) for item in output if item.type == "function_call"]
    return calls, completed.response.output_text


def _anthropic(upstream: FakeUpstream) -> tuple[Calls, str]:
    client = anthropic_client(upstream)
    with client.messages.stream(model="claude-test-model", max_tokens=64, messages=ask()) as events:
        message = events.get_final_message()
    calls = [(block.name, block.input) for block in message.content if block.type == "tool_use"]
    return calls, "".join(block.text for block in message.content if block.type == "text")


def gemini_client(upstream: FakeUpstream) -> Any:
    """The google-genai SDK's client of the Gemini API, its base URL the upstream's."""
    from google import genai
    from google.genai import types

    return genai.Client(
        api_key="test-key",
        http_options=types.HttpOptions(base_url=upstream.url, headers={"X-User-Id": "u-1"}),
    )


def _gemini(upstream: FakeUpstream) -> tuple[Calls, str]:
    calls: list[tuple[str | None, Any]] = []
    text = ""
    client = gemini_client(upstream)
    for chunk in client.models.generate_content_stream(model="gemini-2.5-flash", contents="hello"):
        content = chunk.candidates[0].content if chunk.candidates else None
        for part in (content.parts if content else None) or []:
            text += part.text or ""
            if part.function_call is not None:
                calls.append((part.function_call.name, part.function_call.args))
    return calls, text


DIALECTS: dict[str, tuple[str, Callable[[FakeUpstream], tuple[Calls, str]]]] = {
    "openai_chat": ("m", _chat),
    "openai_responses": ("m", _responses),
    "anthropic": ("claude-test-model", _anthropic),
    "gemini": ("gemini-2.5-flash", _gemini),
}


def stream_call(
    start_proxy: Callable[..., Proxy],
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    dialect: str,
    call: ToolCallReply,
    text: str,
) -> tuple[Calls, str, dict[str, Any]]:
    """What the agent got of an answer saying ``text`` and making ``call`` (arguments in 5-character
    deltas) next to a call of another tool, and the turn's record."""
    proxy = _agent(start_proxy(mode=mode), monkeypatch)
    model, receive = DIALECTS[dialect]
    answer_beside_another(upstream, model, call, text)
    calls, said = receive(upstream)
    return calls, said, last_record(proxy)


def answer_beside_another(upstream: FakeUpstream, model: str, call: ToolCallReply, text: str) -> None:
    """The upstream's next answer: ``text``, and ``call`` (arguments in 5-character deltas where streamed)
    next to a call of another tool."""
    upstream.reply = Reply(
        text=text,
        tool_calls=[ToolCallReply("get_weather", {"city": "Oslo"}, id="call_w"), call],
        model=model,
        piece_size=5,
    )


def _read(
    start_proxy: Callable[..., Proxy],
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    dialect: str,
    path: str,
) -> tuple[Calls, str, dict[str, Any]]:
    call = ToolCallReply("read_file", {"path": path}, id="call_r")
    return stream_call(start_proxy, upstream, monkeypatch, mode, dialect, call, "Reading.")


def _credential_findings(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [finding for finding in record["findings"] if finding["threat"] == "credential_theft"]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_streamed_credential_read_is_withheld_where_enforced(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, dialect: str
) -> None:
    calls, text, record = _read(start_proxy, upstream, monkeypatch, "enforce", dialect, CREDENTIALS)
    assert calls == [("get_weather", {"city": "Oslo"})]
    assert NOTICE in text and "cloud-credentials-file" in text and CREDENTIALS not in text
    found = _credential_findings(record)
    assert found and all(finding["enforced"] for finding in found)
    assert {finding["rule"] for finding in found} == {"cloud-credentials-file"}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_streamed_credential_read_is_recorded_in_observe_mode(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, dialect: str
) -> None:
    calls, text, record = _read(start_proxy, upstream, monkeypatch, "observe", dialect, CREDENTIALS)
    assert calls == [("get_weather", {"city": "Oslo"}), ("read_file", {"path": CREDENTIALS})]
    assert NOTICE not in text
    found = _credential_findings(record)
    assert found and not any(finding["enforced"] for finding in found)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_streamed_read_of_an_everyday_file_passes_intact(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, dialect: str
) -> None:
    calls, text, record = _read(start_proxy, upstream, monkeypatch, "enforce", dialect, "README.md")
    assert calls == [("get_weather", {"city": "Oslo"}), ("read_file", {"path": "README.md"})]
    assert NOTICE not in text and text.startswith("Reading.")
    assert not _credential_findings(record)


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    ("command", "rule"),
    [
        # The shell expands ``~/.a''ws/*`` to the credentials file: read as the shell reads it.
        ("cat ~/.a''ws/*", "cloud-credentials-file"),
        # ``$$`` is the shell's own process: its environ file holds every variable the agent runs with.
        ("cat /proc/$$/environ | tr '\\0' '\\n'", "environment-dump"),
    ],
)
def test_a_streamed_shell_call_that_reads_credentials_is_withheld(
    start_proxy: Callable[..., Proxy],
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    dialect: str,
    command: str,
    rule: str,
) -> None:
    call = ToolCallReply("bash", {"command": command}, id="call_r")
    calls, text, record = stream_call(
        start_proxy, upstream, monkeypatch, "enforce", dialect, call, "Reading."
    )
    assert calls == [("get_weather", {"city": "Oslo"})]
    assert "The call to the tool `bash` was withheld by egressguard" in text
    found = _credential_findings(record)
    assert {finding["rule"] for finding in found} == {rule}
    assert all(finding["enforced"] for finding in found)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_streamed_shell_call_that_sets_the_modes_of_keys_by_a_glob_passes_intact(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, dialect: str
) -> None:
    """``chmod`` reaches the files a glob names, never what they hold. (A shell is a destructive tool,
    held for approval where tool abuse is enforced: observed here, so only what is found is judged.)"""
    command = {"command": "chmod 600 ~/.ssh/* && ls -la ~/.ssh"}
    call = ToolCallReply("bash", command, id="call_r")
    calls, text, record = stream_call(
        start_proxy, upstream, monkeypatch, "observe", dialect, call, "Reading."
    )
    assert calls == [("get_weather", {"city": "Oslo"}), ("bash", command)]
    assert text.startswith("Reading.")
    assert not _credential_findings(record)
