"""End to end: the OpenAI Assistants API's answers through a real egressguard, the agent the official
``openai`` SDK's beta Assistants client: a run's required action, the tool calls it asks the agent to run
(``required_action.submit_tool_outputs.tool_calls``), is gated by the tool policy as a chat's tool calls
are, on every route that answers with a run, whole or streamed; a thread's messages are read as the
model's answer (a link outside the allowlist neutralised)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest

from proxy.scanning.redact import scan_and_redact
from tests.harness import Proxy
from tests.test_e2e_inspect import enforce, last_record, openai_client  # noqa: F401
from tests.test_stream_joined_deltas import ANSWER, assistants_text_stream
from tests.test_streaming import SECRETS
from tests.upstream import FakeUpstream, Reply

DELETE = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "delete_customer", "arguments": '{"id": 42}'},
}
WEATHER = {
    "id": "call_2",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
}


def run(*calls: dict[str, Any]) -> dict[str, Any]:
    """A run as the API answers with one, waiting for the agent to run ``calls``."""
    return {
        "id": "run_1",
        "object": "thread.run",
        "created_at": 1700000000,
        "thread_id": "thread_1",
        "assistant_id": "asst_1",
        "status": "requires_action",
        "required_action": {
            "type": "submit_tool_outputs",
            "submit_tool_outputs": {"tool_calls": list(calls)},
        },
        "model": "gpt-4o",
        "instructions": "",
        "tools": [],
        "parallel_tool_calls": True,
    }


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


ROUTES: dict[str, Callable[[openai.OpenAI], Any]] = {
    "POST /v1/threads/{id}/runs": lambda client: client.beta.threads.runs.create(
        thread_id="thread_1", assistant_id="asst_1"
    ),
    "POST /v1/threads/runs": lambda client: client.beta.threads.create_and_run(assistant_id="asst_1"),
    "GET /v1/threads/{id}/runs/{id}": lambda client: client.beta.threads.runs.retrieve(
        "run_1", thread_id="thread_1"
    ),
    "POST /v1/threads/{id}/runs/{id}/submit_tool_outputs": lambda client: (
        client.beta.threads.runs.submit_tool_outputs(
            "run_0", thread_id="thread_1", tool_outputs=[{"tool_call_id": "call_0", "output": "21 degrees"}]
        )
    ),
}


def gated(record: dict[str, Any]) -> list[tuple[str, str, bool]]:
    return [(f["rule"], f["where"], f["enforced"]) for f in record["findings"] if f["threat"] == "tool_abuse"]


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_a_runs_required_action_is_gated_on_every_route_answering_with_a_run(
    route: str,
    enforce: Proxy,  # noqa: F811
    upstream: FakeUpstream,
) -> None:
    """A run asking the agent to run a destructive call beside an everyday one: the answer is withheld
    (502), the agent told which call needs which approval; a run asking for the everyday one alone
    arrives whole."""
    client = openai_client(upstream)
    upstream.reply = Reply(body=json.dumps(run(DELETE, WEATHER)).encode())
    with pytest.raises(openai.APIStatusError) as refused:
        ROUTES[route](client)
    assert refused.value.status_code == 502
    assert "tool_abuse (tool-delete)" in refused.value.message and "X-Approval-Id" in refused.value.message
    place = "required_action.submit_tool_outputs.tool_calls[0]"
    assert gated(last_record(enforce)) == [("tool-delete", place, True)]
    upstream.reply = Reply(body=json.dumps(run(WEATHER)).encode())
    answered = ROUTES[route](client)
    assert answered.required_action.submit_tool_outputs.tool_calls[0].function.name == "get_weather"
    assert gated(last_record(enforce, 2)) == []


def test_a_streamed_runs_required_action_is_gated_and_told(
    enforce: Proxy,  # noqa: F811
    upstream: FakeUpstream,
) -> None:
    """A streamed run whose ``thread.run.requires_action`` asks for a destructive call: the event is
    withheld and an ``error`` event in its place makes the SDK raise the call's notice; an everyday
    call's event arrives."""
    client = openai_client(upstream)
    created = sse("thread.run.created", {**run(), "status": "queued", "required_action": None})

    def stream(*calls: dict[str, Any]) -> list[Any]:
        body = created + sse("thread.run.requires_action", run(*calls)) + sse("done", "[DONE]")
        upstream.reply = Reply(body=body, content_type="text/event-stream")
        events: list[Any] = []
        with client.beta.threads.runs.stream(thread_id="thread_1", assistant_id="asst_1") as events_of_run:
            events.extend(events_of_run)
        return events

    with pytest.raises(openai.APIError) as told:
        stream(DELETE)
    assert "delete_customer" in told.value.message and "egressguard approvals approve" in told.value.message
    assert gated(last_record(enforce)) == [
        ("tool-delete", "[1].required_action.submit_tool_outputs.tool_calls[0]", True)
    ]
    events = stream(WEATHER)
    assert [event.event for event in events] == ["thread.run.created", "thread.run.requires_action"]
    assert events[-1].data.required_action.submit_tool_outputs.tool_calls[0].id == "call_2"


def test_a_streamed_runs_required_action_withholds_only_its_gated_call(
    enforce: Proxy,  # noqa: F811
    upstream: FakeUpstream,
) -> None:
    """A streamed run asking for a destructive call beside an everyday one: the agent reads the
    ``thread.run.requires_action`` with the everyday call alone, then the ``error`` event that makes the
    SDK raise the destructive call's notice; the record names the call withheld and says the event went
    without it."""
    client = openai_client(upstream)
    created = sse("thread.run.created", {**run(), "status": "queued", "required_action": None})
    body = created + sse("thread.run.requires_action", run(DELETE, WEATHER)) + sse("done", "[DONE]")
    upstream.reply = Reply(body=body, content_type="text/event-stream")
    events: list[Any] = []
    with (
        pytest.raises(openai.APIError) as told,
        client.beta.threads.runs.stream(thread_id="thread_1", assistant_id="asst_1") as events_of_run,
    ):
        events.extend(events_of_run)
    assert "delete_customer" in told.value.message and "get_weather" not in told.value.message
    assert [event.event for event in events] == ["thread.run.created", "thread.run.requires_action"]
    asked = events[-1].data.required_action.submit_tool_outputs.tool_calls
    assert [(call.id, call.function.name) for call in asked] == [("call_2", "get_weather")]
    record = last_record(enforce)
    assert gated(record) == [("tool-delete", "[1].required_action.submit_tool_outputs.tool_calls[0]", True)]
    assert any("delete_customer; sent without it" in error for error in record["errors"])


def test_a_threads_messages_are_read_as_the_models_answer(
    enforce: Proxy,  # noqa: F811
    upstream: FakeUpstream,
) -> None:
    """An assistant's message listed from its thread links to a host outside the allowlist: the agent
    reads it neutralised, and the record names the message's text."""
    text = "See [the chart](https://collector.example/c.png?d=PELICAN-42)."
    message = {
        "id": "msg_1",
        "object": "thread.message",
        "created_at": 1700000000,
        "thread_id": "thread_1",
        "role": "assistant",
        "status": "completed",
        "attachments": [],
        "metadata": {},
        "assistant_id": "asst_1",
        "run_id": "run_1",
        "content": [{"type": "text", "text": {"value": text, "annotations": []}}],
    }
    page = {"object": "list", "data": [message], "first_id": "msg_1", "last_id": "msg_1", "has_more": False}
    upstream.reply = Reply(body=json.dumps(page).encode())
    listed = openai_client(upstream).beta.threads.messages.list(thread_id="thread_1")
    (read,) = [content.text.value for message in listed.data for content in message.content]  # type: ignore[union-attr]
    assert read.startswith("See [link removed") and "PELICAN-42" not in read
    found = [
        (f["rule"], f["where"], f["enforced"])
        for f in last_record(enforce)["findings"]
        if f["threat"] == "data_exfiltration"
    ]
    assert found == [("exfil-link-url", "data[0].content[0].text.value", True)]


def run_step(status: str, *calls: dict[str, Any]) -> dict[str, Any]:
    """A run step calling tools, as the API gives one: created in a stream, listed whole."""
    return {
        "id": "step_1",
        "object": "thread.run.step",
        "created_at": 1700000000,
        "run_id": "run_1",
        "assistant_id": "asst_1",
        "thread_id": "thread_1",
        "type": "tool_calls",
        "status": status,
        "step_details": {"type": "tool_calls", "tool_calls": list(calls)},
    }


def step_delta(*calls: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "step_1",
        "object": "thread.run.step.delta",
        "delta": {"step_details": {"type": "tool_calls", "tool_calls": list(calls)}},
    }


def step_call_stream(opened: dict[str, Any], field: str, pieces: list[str]) -> bytes:
    """A run's stream creating a step, opening the call ``opened`` in a delta and streaming its text (the
    ``field`` of the object its ``type`` names) in ``pieces``, a delta each."""
    kind = opened["type"]
    deltas = [step_delta({"index": 0, "type": kind, kind: {field: piece}}) for piece in pieces]
    return (
        sse("thread.run.step.created", run_step("in_progress"))
        + sse("thread.run.step.delta", step_delta(opened))
        + b"".join(sse("thread.run.step.delta", delta) for delta in deltas)
        + sse("done", "[DONE]")
    )


WIPE = "import shutil\nshutil.rmtree('/')"


def test_a_streamed_run_steps_code_is_gated_on_its_deltas(
    enforce: Proxy,  # noqa: F811
    upstream: FakeUpstream,
) -> None:
    """A run step's code interpreter call streamed a few characters a ``thread.run.step.delta``, the code
    wiping the disk: its deltas are withheld and an ``error`` event makes the SDK raise the notice; the
    record has the call gated on its code joined."""
    client = openai_client(upstream)
    opened = {
        "index": 0,
        "id": "call_1",
        "type": "code_interpreter",
        "code_interpreter": {"input": "", "outputs": []},
    }
    pieces = [WIPE[start : start + 4] for start in range(0, len(WIPE), 4)]
    body = step_call_stream(opened, "input", pieces)
    upstream.reply = Reply(body=body, content_type="text/event-stream")
    events: list[Any] = []
    with (
        pytest.raises(openai.APIError) as told,
        client.beta.threads.runs.stream(thread_id="thread_1", assistant_id="asst_1") as events_of_run,
    ):
        events.extend(events_of_run)
    inputs = [event for event in events if event.event == "thread.run.step.delta"]
    assert "code_interpreter" in told.value.message and inputs == []
    assert gated(last_record(enforce)) == [
        ("code-recursive-delete-broad", "[1].delta.step_details.tool_calls[0]", True)
    ]


def test_a_listed_run_steps_code_is_gated(
    enforce: Proxy,  # noqa: F811
    upstream: FakeUpstream,
) -> None:
    """The run steps listed whole (``runs.steps.list``) hold a code interpreter call wiping the disk: the
    answer is withheld, the agent told of the call; a step running arithmetic arrives."""

    def page(code: str) -> bytes:
        call = {
            "id": "call_1",
            "type": "code_interpreter",
            "code_interpreter": {"input": code, "outputs": []},
        }
        step = run_step("completed", call)
        return json.dumps(
            {"object": "list", "data": [step], "first_id": "step_1", "last_id": "step_1", "has_more": False}
        ).encode()

    client = openai_client(upstream)
    upstream.reply = Reply(body=page(WIPE))
    with pytest.raises(openai.APIStatusError) as refused:
        client.beta.threads.runs.steps.list("run_1", thread_id="thread_1")
    assert refused.value.status_code == 502 and "code_interpreter" in refused.value.message
    assert gated(last_record(enforce)) == [
        ("code-recursive-delete-broad", "data[0].step_details.tool_calls[0]", True)
    ]
    upstream.reply = Reply(body=page("print(6 * 7)"))
    (listed,) = client.beta.threads.runs.steps.list("run_1", thread_id="thread_1").data
    assert listed.step_details.tool_calls[0].code_interpreter.input == "print(6 * 7)"  # type: ignore[union-attr]


def test_a_streamed_messages_secret_split_over_its_deltas_reaches_the_sdk_redacted(
    enforce: Proxy,  # noqa: F811
    upstream: FakeUpstream,
) -> None:
    """A message streamed in ``thread.message.delta`` events carries an AWS key and a GitHub token, the
    answer cut into two deltas at every place: the text the SDK shows as it streams (its text deltas
    joined) and the message it holds at the end are the whole text's redaction, and the record names
    both secrets."""
    client = openai_client(upstream)
    whole = scan_and_redact(SECRETS, ANSWER).text
    for cut in range(1, len(ANSWER)):
        body = assistants_text_stream([ANSWER[:cut], ANSWER[cut:]])
        upstream.reply = Reply(body=body, content_type="text/event-stream")
        with client.beta.threads.runs.stream(thread_id="thread_1", assistant_id="asst_1") as events_of_run:
            shown = "".join(events_of_run.text_deltas)
            (message,) = events_of_run.get_final_messages()
        assert shown == whole, cut
        assert [content.text.value for content in message.content] == [whole], cut  # type: ignore[union-attr]
        found = {f["rule"] for f in last_record(enforce)["findings"] if f["threat"] == "data_exfiltration"}
        assert {"aws-access-key-id", "github-pat"} <= found, cut


def test_a_streamed_calls_key_split_over_its_step_deltas_reaches_the_sdk_redacted(
    enforce: Proxy,  # noqa: F811
    upstream: FakeUpstream,
) -> None:
    """A function call's arguments streamed in ``thread.run.step.delta`` events hold an AWS key, cut into
    two deltas at every place: the call's arguments the SDK holds at the end (its deltas joined by step
    and index) are the same redaction whatever the cut, valid JSON without the key, and the record names
    the key."""
    client = openai_client(upstream)
    aws = "AKIA" + "Z7QW3RTY2UIO4PAS"
    arguments = json.dumps({"key": aws})
    opened = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "save", "arguments": ""}}
    seen = set()
    for cut in range(1, len(arguments)):
        body = step_call_stream(opened, "arguments", [arguments[:cut], arguments[cut:]])
        upstream.reply = Reply(body=body, content_type="text/event-stream")
        with client.beta.threads.runs.stream(thread_id="thread_1", assistant_id="asst_1") as events_of_run:
            events_of_run.until_done()
            (step,) = events_of_run.get_final_run_steps()
        (call,) = step.step_details.tool_calls  # type: ignore[union-attr]
        held = call.function.arguments  # type: ignore[union-attr]
        assert aws[4:] not in held and json.loads(held).keys() == {"key"}, cut
        seen.add(held)
        found = {f["rule"] for f in last_record(enforce)["findings"] if f["threat"] == "data_exfiltration"}
        assert "aws-access-key-id" in found, cut
    assert len(seen) == 1
