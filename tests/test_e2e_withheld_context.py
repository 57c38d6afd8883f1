"""A provider keeps a stored response or a conversation and hands the model the whole of it when a later
request continues it, and a container keeps what the code run in it wrote: where egressguard withheld
part of an answer (a destructive call), a request that continues from any of them is refused, through a
real egressguard and the official OpenAI and Anthropic SDKs."""

from __future__ import annotations

import io
import json
import ssl
from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest

from proxy.dialects import Anthropic, OpenAIResponses, continued_by_route, detect
from tests.harness import Proxy
from tests.test_e2e_stored_requests import BOUNDARY, batch_line, batch_upload, read
from tests.test_server_tools import CODE_ITEM, RESPONSE, answer
from tests.test_streaming import ANTHROPIC_MESSAGE, run, sse
from tests.upstream import FakeUpstream, Reply, ToolCallReply

CONTEXT = {"X-User-Id": "u-1", "X-Purpose": "support", "X-Consent-Id": "c-1"}
STORED = "resp_test0001"
"""The id the fake upstream gives every Responses answer."""
DESTRUCTIVE = Reply(text="", tool_calls=[ToolCallReply("delete_customer", {"id": 42})])


def ask(client: openai.OpenAI, *, stream: bool = False, **fields: Any) -> list[str]:
    """One Responses turn; the names of the calls that reached the agent."""
    if stream:
        with client.responses.stream(model="m", input="go on", **fields) as events:
            output = events.get_final_response().output
    else:
        output = client.responses.create(model="m", input="go on", **fields).output
    return [item.name for item in output if item.type == "function_call"]


def anthropic_client(proxy: Proxy, upstream: FakeUpstream) -> anthropic.Anthropic:
    """The official Anthropic client of an agent configured for ``proxy``, its API at ``upstream``."""
    return anthropic.Anthropic(
        base_url=upstream.url,
        api_key="sk-ant-test",
        max_retries=0,
        default_headers=CONTEXT,
        http_client=anthropic.DefaultHttpxClient(
            proxy=proxy.url(), verify=ssl.create_default_context(cafile=str(proxy.ca_cert))
        ),
    )


def refusal(client: openai.OpenAI, **fields: Any) -> str:
    with pytest.raises(openai.PermissionDeniedError) as raised:
        ask(client, **fields)
    return str(raised.value)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_stored_response_with_a_withheld_call_cannot_be_continued(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, stream: bool
) -> None:
    proxy = start_proxy(mode="enforce")
    client = proxy.openai_client(upstream.url, headers=CONTEXT)
    assert ask(client, stream=stream) == []  # a clean answer, stored
    assert ask(client, previous_response_id=STORED) == []  # continued: nothing was withheld from it
    upstream.reply = DESTRUCTIVE
    assert ask(client, stream=stream) == []  # the call is withheld; the provider keeps it all the same
    upstream.reply = Reply()
    assert "inspection.withheld_context" in refusal(client, previous_response_id=STORED)
    record = proxy.wait_for_records(4)[-1]
    found = {(finding["rule"], finding["where"], finding["enforced"]) for finding in record["findings"]}
    assert ("inspection.withheld_context", "previous_response_id", True) in found
    assert record["decision"] == "blocked"


def test_an_answer_the_provider_does_not_keep_leaves_nothing_to_refuse(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """With ``store: false`` the provider keeps nothing of the answer, so nothing continues from it."""
    proxy = start_proxy(mode="enforce")
    client = proxy.openai_client(upstream.url, headers=CONTEXT)
    upstream.reply = DESTRUCTIVE
    assert ask(client, store=False) == []
    upstream.reply = Reply()
    assert ask(client, previous_response_id=STORED) == []


def test_a_conversation_an_answer_with_a_withheld_call_joined_cannot_be_continued(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """Nor listed or added to, since its items hand whoever lists them the withheld call; it may be
    deleted."""
    proxy = start_proxy(mode="enforce")
    client = proxy.openai_client(upstream.url, headers=CONTEXT)
    upstream.reply = DESTRUCTIVE
    assert ask(client, conversation="conv_7") == []
    upstream.reply = Reply()
    assert "inspection.withheld_context" in refusal(client, conversation={"id": "conv_7"})
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.conversations.items.list("conv_7")
    assert "inspection.withheld_context" in str(refused.value)
    with pytest.raises(openai.PermissionDeniedError):
        client.conversations.items.create("conv_7", items=[{"role": "user", "content": "more"}])
    assert len(upstream.received) == 1
    assert client.conversations.with_raw_response.delete("conv_7").status_code == 200
    assert ask(client, conversation="conv_8") == []


def test_observe_mode_records_the_continuation_and_lets_it_pass(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """Observe mode withholds nothing, so nothing is remembered and every continuation passes."""
    proxy = start_proxy(mode="observe")
    client = proxy.openai_client(upstream.url, headers=CONTEXT)
    upstream.reply = DESTRUCTIVE
    assert ask(client) == ["delete_customer"]
    upstream.reply = Reply()
    assert ask(client, previous_response_id=STORED) == []
    rules = {finding["rule"] for finding in proxy.wait_for_records(2)[-1]["findings"]}
    assert "inspection.withheld_context" not in rules


def test_a_stream_broken_after_its_call_was_withheld_cannot_be_continued(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """A stream that breaks off after the gate withheld its call (the agent gone, the upstream cut) was
    kept by the provider all the same, and the agent holds its id from its first event."""
    proxy = start_proxy(mode="enforce")
    client = proxy.openai_client(upstream.url, headers=CONTEXT)
    upstream.reply = Reply(
        text="", tool_calls=[ToolCallReply("delete_customer", {"id": 42})], cut_after_events=7
    )
    with pytest.raises(openai.APIError):
        ask(client, stream=True)
    upstream.reply = Reply()
    assert "inspection.withheld_context" in refusal(client, previous_response_id=STORED)


DELETE_ITEM = {
    "id": "fc_1",
    "type": "function_call",
    "status": "completed",
    "call_id": "call_1",
    "name": "delete_customer",
    "arguments": '{"id": 42}',
}
DELETE_BLOCK = {"type": "tool_use", "id": "toolu_1", "name": "delete_customer", "input": {"id": 42}}
CONTAINER = {"id": "container_011", "expires_at": "2026-12-06T16:00:00Z"}


def events(*payloads: dict[str, Any]) -> bytes:
    return b"".join(sse(payload, payload["type"]) for payload in payloads)


def test_the_containers_a_request_runs_in_and_an_answer_ran_code_in_are_read() -> None:
    """A container named by id continues; ``{"type": "auto"}`` starts a new one. An answer names the
    containers its code ran in, whole and streamed."""
    responses = {
        "model": "m",
        "input": "go on",
        "tools": [
            {"type": "code_interpreter", "container": {"type": "auto"}},
            {"type": "code_interpreter", "container": "cntr_7"},
        ],
    }
    assert OpenAIResponses().parse_request(json.dumps(responses).encode()).continues == {
        "tools[1].container": "cntr_7"
    }
    for container in ("container_011", {"id": "container_011", "skills": []}):
        body = {"model": "m", "max_tokens": 9, "messages": [], "container": container}
        assert Anthropic().parse_request(json.dumps(body).encode()).continues == {
            "container": "container_011"
        }
    whole = json.dumps({**RESPONSE, "output": [CODE_ITEM, DELETE_ITEM]}).encode()
    assert OpenAIResponses().parse_response(whole).containers == ["cntr_1"]
    session = OpenAIResponses().stream_session()
    run(
        session,
        events(
            {"type": "response.created", "response": {**RESPONSE, "status": "in_progress", "output": []}},
            {"type": "response.output_item.done", "output_index": 0, "item": CODE_ITEM},
            {"type": "response.completed", "response": {**RESPONSE, "output": [CODE_ITEM]}},
        ),
    )
    assert session.completion.containers == ["cntr_1"]
    assert Anthropic().parse_response(answer(DELETE_BLOCK)).containers == []
    message = {**ANTHROPIC_MESSAGE, "content": [], "stop_reason": None, "container": None}
    session = Anthropic().stream_session()
    run(
        session,
        events(
            {"type": "message_start", "message": message},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn", "container": CONTAINER}},
            {"type": "message_stop"},
        ),
    )
    assert session.completion.containers == ["container_011"]


def test_the_routes_that_read_or_add_to_what_the_provider_keeps_name_it() -> None:
    """A conversation and its items, a container, its files and their content; deleting continues
    nothing, and another API's path ending alike names nothing."""
    assert continued_by_route("GET", "/v1/conversations/conv_1/items") == {"conversation": "conv_1"}
    for path in (
        "/v1/containers/cntr_1",
        "/v1/containers/cntr_1/files",
        "/v1/containers/cntr_1/files/cfile_1",
        "/v1/containers/cntr_1/files/cfile_1/content/",
        "/openai/containers/cntr_1/files?api-version=1",
    ):
        assert continued_by_route("GET", path) == {"container": "cntr_1"}
    assert continued_by_route("POST", "/v1/containers/cntr_1/files") == {"container": "cntr_1"}
    assert continued_by_route("DELETE", "/v1/containers/cntr_1/files/cfile_1") == {}
    assert continued_by_route("POST", "/v1/containers") == {}
    assert continued_by_route("GET", "/api/containers/cntr_1/files") == {}


def test_a_container_an_answer_with_a_withheld_call_ran_in_cannot_be_run_in_again(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """The container the answer names and the one the request ran in are both remembered, neither run in
    again nor read back; a new one (``{"type": "auto"}``) and another one pass."""
    proxy = start_proxy(mode="enforce")
    client = proxy.openai_client(upstream.url, headers=CONTEXT)
    upstream.reply = Reply(body=json.dumps({**RESPONSE, "output": [CODE_ITEM, DELETE_ITEM]}).encode())
    running = [{"type": "code_interpreter", "container": "cntr_2"}]
    assert ask(client, tools=running, store=False) == []
    upstream.reply = Reply()
    for named in ("cntr_1", "cntr_2"):
        tools = [{"type": "code_interpreter", "container": named}]
        assert "inspection.withheld_context" in refusal(client, tools=tools, store=False)
    record = proxy.wait_for_records(3)[-1]
    found = {(finding["rule"], finding["where"], finding["enforced"]) for finding in record["findings"]}
    assert ("inspection.withheld_context", "tools[0].container", True) in found
    for container in ({"type": "auto"}, "cntr_3"):
        assert ask(client, tools=[{"type": "code_interpreter", "container": container}]) == []
    # What the withheld answer's code wrote in them is not handed back by the container files API either
    # (their list, a file, its content); deleting one passes, as does reading another container's.
    reads: list[Callable[[], object]] = [
        lambda: client.containers.files.content.retrieve("cfile_1", container_id="cntr_1"),
        lambda: client.containers.files.list("cntr_2"),
        lambda: client.containers.files.retrieve("cfile_1", container_id="cntr_1"),
        lambda: client.containers.retrieve("cntr_2"),
    ]
    for read_back in reads:
        with pytest.raises(openai.PermissionDeniedError):
            read_back()
    record = proxy.wait_for_records(9)[-1]
    assert ("inspection.withheld_context", "container", True) in {
        (finding["rule"], finding["where"], finding["enforced"]) for finding in record["findings"]
    }
    client.containers.files.delete("cfile_1", container_id="cntr_1")
    upstream.reply = Reply(events=[b"col\n1\n"], content_type="text/csv")
    assert client.containers.files.content.retrieve("cfile_1", container_id="cntr_3").read() == b"col\n1\n"
    assert upstream.received[-1].path == "/v1/containers/cntr_3/files/cfile_1/content"
    assert proxy.wait_for_records(11)[9]["path"] == "/v1/containers/cntr_1/files/cfile_1"
    assert proxy.wait_for_records(11)[9]["status"] == 200


def test_an_anthropic_container_an_answer_with_a_withheld_call_ran_in_cannot_be_run_in_again(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    proxy = start_proxy(mode="enforce")
    client = anthropic_client(proxy, upstream)
    body = json.loads(answer(DELETE_BLOCK))
    upstream.reply = Reply(body=json.dumps({**body, "container": CONTAINER}).encode())
    ask_anthropic: Any = [{"role": "user", "content": "go on"}]
    reply = client.messages.create(model="m", max_tokens=10, messages=ask_anthropic)
    assert [block.type for block in reply.content] == ["text"]
    upstream.reply = Reply(body=answer({"type": "text", "text": "done"}))
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        client.messages.create(model="m", max_tokens=10, messages=ask_anthropic, container="container_011")
    assert "inspection.withheld_context" in str(refused.value)
    record = proxy.wait_for_records(2)[-1]
    assert ("inspection.withheld_context", "container", True) in {
        (finding["rule"], finding["where"], finding["enforced"]) for finding in record["findings"]
    }
    client.messages.create(model="m", max_tokens=10, messages=ask_anthropic, container="container_012")


def test_a_stored_request_continues_what_the_request_it_carries_names() -> None:
    """A batch runs its requests later, each continuing what it names as it would on its own route."""
    params = {"model": "m", "max_tokens": 9, "messages": [], "container": "container_011"}
    batch = read("POST /v1/messages/batches", {"requests": [{"custom_id": "a", "params": params}]})
    assert batch.continues == {"requests[0].params.container": "container_011"}
    line = {"model": "m", "input": "go on", "previous_response_id": STORED, "conversation": {"id": "conv_7"}}
    conversation = read("POST /v1/conversations", {"items": [{"role": "user", "content": "hi"}]})
    assert conversation.continues == {}
    body = batch_upload(batch_line("r1", "/v1/responses", line))
    view = detect("POST", "/v1/files", f"multipart/form-data; boundary={BOUNDARY}", body).parse_request(body)
    assert view.continues == {
        "multipart[1][0].body.previous_response_id": STORED,
        "multipart[1][0].body.conversation": "conv_7",
    }


def test_a_batch_continuing_a_stored_response_with_a_withheld_call_is_refused(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """Through the OpenAI SDK: a batch input file's line naming the stored response is refused as the
    request it carries would be; a line continuing nothing withheld passes."""
    proxy = start_proxy(mode="enforce")
    client = proxy.openai_client(upstream.url, headers=CONTEXT)
    upstream.reply = DESTRUCTIVE
    assert ask(client) == []
    upstream.reply = Reply(
        body=b'{"id":"file-1","object":"file","bytes":1,"created_at":1,"filename":"b.jsonl"}'
    )
    continuing = batch_line(
        "r1", "/v1/responses", {"model": "m", "input": "go", "previous_response_id": STORED}
    )
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.files.create(file=("b.jsonl", io.BytesIO(continuing.encode())), purpose="batch")
    assert "inspection.withheld_context" in str(refused.value)
    assert len(upstream.received) == 1
    fresh = batch_line(
        "r1", "/v1/responses", {"model": "m", "input": "go", "previous_response_id": "resp_other"}
    )
    client.files.create(file=("b.jsonl", io.BytesIO(fresh.encode())), purpose="batch")
    assert len(upstream.received) == 2


def test_a_compaction_of_a_stored_response_with_a_withheld_call_is_refused(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """Through the OpenAI SDK: ``responses.compact`` hands back what it compacts as one opaque item the
    agent sends as input later, so compacting the stored response is continuing it."""
    proxy = start_proxy(mode="enforce")
    client = proxy.openai_client(upstream.url, headers=CONTEXT)
    assert detect("POST", "/v1/responses/compact", "application/json", b"{}").name == OpenAIResponses.name
    upstream.reply = DESTRUCTIVE
    assert ask(client) == []
    compacted = {"id": "cmp_1", "object": "response.compaction", "created_at": 1, "output": []}
    upstream.reply = Reply(body=json.dumps(compacted).encode())
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.responses.compact(model="gpt-5.4", previous_response_id=STORED)
    assert "inspection.withheld_context" in str(refused.value)
    assert len(upstream.received) == 1
    client.responses.compact(model="gpt-5.4", previous_response_id="resp_other")
    assert json.loads(upstream.received[-1].body)["previous_response_id"] == "resp_other"


WROTE = {
    "type": "bash_code_execution_tool_result",
    "tool_use_id": "srvtoolu_1",
    "content": {
        "type": "bash_code_execution_result",
        "stdout": "chart written",
        "stderr": "",
        "return_code": 0,
        "content": [{"type": "bash_code_execution_output", "file_id": "file_011"}],
    },
}
RAN_PYTHON = {
    "type": "code_execution_tool_result",
    "tool_use_id": "srvtoolu_2",
    "content": {
        "type": "code_execution_result",
        "stdout": "",
        "stderr": "",
        "return_code": 0,
        "content": [{"type": "code_execution_output", "file_id": "file_012"}],
    },
}


def test_the_files_an_answers_code_wrote_are_read() -> None:
    """Each code execution result's outputs name the files the code wrote, whole and streamed; a block of
    another kind naming a ``file_id`` (a document the user gave) is none of them."""
    given = {"type": "text", "text": "see file_013", "file_id": "file_013"}
    assert Anthropic().parse_response(answer(WROTE, RAN_PYTHON, given)).files_written == [
        "file_011",
        "file_012",
    ]
    session = Anthropic().stream_session()
    message = {**ANTHROPIC_MESSAGE, "content": [], "stop_reason": None}
    run(
        session,
        events(
            {"type": "message_start", "message": message},
            {"type": "content_block_start", "index": 0, "content_block": WROTE},
            {"type": "content_block_stop", "index": 0},
            {"type": "message_stop"},
        ),
    )
    assert session.completion.files_written == ["file_011"]
    assert continued_by_route("GET", "/v1/files/file_011/content") == {"file": "file_011"}
    assert continued_by_route("GET", "/v1/files/file_011") == {"file": "file_011"}
    assert continued_by_route("DELETE", "/v1/files/file_011") == {}
    assert continued_by_route("POST", "/v1/files") == {}


def test_a_file_an_answers_code_wrote_beside_a_withheld_call_is_not_read_back(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """An Anthropic answer whose code wrote a file beside a call egressguard withheld: through the SDK's
    Files API, the file's content and its metadata are refused (``inspection.withheld_context``, place
    ``file``); deleting it passes, as does reading another file."""
    proxy = start_proxy(mode="enforce")
    client = anthropic_client(proxy, upstream)
    upstream.reply = Reply(body=answer(WROTE, DELETE_BLOCK))
    ask_anthropic: Any = [{"role": "user", "content": "chart it, then tidy up"}]
    reply = client.messages.create(model="m", max_tokens=10, messages=ask_anthropic)
    assert "tool_use" not in [block.type for block in reply.content]
    upstream.reply = Reply(events=[b"col\n1\n"], content_type="text/csv")
    for read_back in (
        lambda: client.beta.files.download("file_011"),
        lambda: client.beta.files.retrieve_metadata("file_011"),
    ):
        with pytest.raises(anthropic.PermissionDeniedError) as refused:
            read_back()
        assert "inspection.withheld_context" in str(refused.value)
    record = proxy.wait_for_records(3)[-1]
    assert ("inspection.withheld_context", "file", True) in {
        (finding["rule"], finding["where"], finding["enforced"]) for finding in record["findings"]
    }
    client.beta.files.delete("file_011")
    assert client.beta.files.download("file_099").read() == b"col\n1\n"
    assert upstream.received[-1].path == "/v1/files/file_099/content"
