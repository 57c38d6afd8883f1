"""End to end, with the Anthropic and OpenAI SDKs through a real egressguard in enforce mode: what a tool
the API runs returns (a fetched page, a search result or a file search's text, a program's output, a
remote MCP tool's output) is read as a tool result, quarantined where it carries an injection, in the
answer and in the history sent back; a call the API makes (a remote MCP server's tool above all) is gated
as a tool call, streamed or not, and withheld with what it returned where the policy withholds it. An
ordinary turn with these tools raises nothing."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import anthropic
import pytest
from anthropic.types import MessageParam

from tests.harness import Proxy
from tests.test_e2e_attachments import NOTE, assert_enforced_as_read_content, gemini_returns, pdf_of
from tests.test_e2e_injection import ATTACK, AWS_KEY, MARKER, README
from tests.test_e2e_inspect import _agent, anthropic_client, last_record, openai_client
from tests.test_server_tools import (
    CODE_ITEM,
    FETCH,
    FETCHED,
    FILE_SEARCH_ITEM,
    IMAGE_ITEM,
    MCP_CALL,
    MCP_CALL_ITEM,
    MCP_RESULT,
    MCP_TOOLS_ITEM,
    RAN,
    SEARCHED,
    WEB_SEARCH_ITEM,
    answer,
    response_of,
    responses_stream_of,
    stream_of,
)
from tests.upstream import FakeUpstream, Reply

MCP_BETA = ["mcp-client-2025-04-04"]
QUESTION = "what does the orders README say?"
ASK: list[MessageParam] = [{"role": "user", "content": QUESTION}]


@pytest.fixture
def enforce(shared_proxy: Callable[..., Proxy], monkeypatch: pytest.MonkeyPatch) -> Proxy:
    return _agent(shared_proxy(mode="enforce"), monkeypatch)


def fetched(page: str) -> dict[str, Any]:
    document = {**FETCHED["content"]["content"], "source": {"type": "text", "media_type": "text/plain"}}
    document["source"]["data"] = page
    return {**FETCHED, "content": {**FETCHED["content"], "content": document}}


def reading(record: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """The findings of a record other than the first sight of the fake upstream's host."""
    return [
        (finding["threat"], finding["rule"], finding["where"], finding["enforced"])
        for finding in record["findings"]
        if finding["rule"] != "egress.first_seen"
    ]


def test_an_injection_in_a_fetched_page_reaches_the_agent_quarantined(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    upstream.reply = Reply(
        body=answer(FETCH, fetched(f"{README}\n{ATTACK}\n"), {"type": "text", "text": "ok"})
    )
    message = anthropic_client(upstream).messages.create(model="m", max_tokens=100, messages=ASK)
    page = message.model_dump()["content"][1]["content"]["content"]["source"]["data"]
    assert "attacker@evil.example" not in page and MARKER in page and README.strip() in page
    assert message.content[2].type == "text"
    where = "content[1].content.content.source.data"
    injections = [finding for finding in reading(last_record(enforce)) if finding[0] == "prompt_injection"]
    assert injections and all(finding[2:] == (where, True) for finding in injections)


def test_an_injection_in_a_search_result_sent_back_in_the_history_is_quarantined(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    poisoned = {**SEARCHED, "content": [{**SEARCHED["content"][0], "title": ATTACK}]}
    search = {**FETCH, "id": "srvtoolu_2", "name": "web_search", "input": {"query": "orders"}}
    history = [
        *ASK,
        {"role": "assistant", "content": [search, poisoned]},
        {"role": "user", "content": "go on"},
    ]
    anthropic_client(upstream).messages.create(model="m", max_tokens=100, messages=history)  # type: ignore[arg-type]
    sent = json.loads(upstream.received[-1].body)["messages"][1]["content"][1]["content"][0]
    assert "attacker@evil.example" not in sent["title"] and MARKER in sent["title"]
    assert sent["encrypted_content"] == SEARCHED["content"][0]["encrypted_content"]
    (first,) = {finding[2] for finding in reading(last_record(enforce)) if finding[0] == "prompt_injection"}
    assert first == "messages[1].content[1].content[0].title"


def ran_upstream(record: dict[str, Any]) -> list[tuple[str, str | None]]:
    """What the record says of the calls the API ran: each finding's flag and any approval it opened."""
    return [
        (finding["signal"].rsplit("; ", 1)[-1], finding.get("extra", {}).get("pending_approval"))
        for finding in record["findings"]
        if finding.get("extra", {}).get("ran_upstream") is True
    ]


UPSTREAM_SIGNAL = "the API ran it before answering: withheld from the agent, not prevented"


def test_a_streamed_destructive_mcp_call_is_withheld_with_its_result(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    """The MCP connector's call streams its input in deltas: held, decided on the whole input, and
    withheld with the result the API got for it; the SDK reads a notice in their place. The call ran at
    the API: the record says so, and no approval is opened for it (granting one could not undo it)."""
    call = {**MCP_CALL, "name": "delete_repository", "input": {"repo": "orders"}}
    result = {**MCP_RESULT, "content": [{"type": "text", "text": "repository orders deleted"}]}
    upstream.reply = Reply(events=[stream_of(call, result, {"type": "text", "text": "done"})])
    client = anthropic_client(upstream)
    with client.beta.messages.stream(
        model="m", max_tokens=100, messages=[{"role": "user", "content": QUESTION}], betas=MCP_BETA
    ) as stream:
        message = stream.get_final_message()
    assert [block.type for block in message.content] == ["text", "text"]
    notice = message.content[0].text  # type: ignore[union-attr]
    assert "delete_repository" in notice and "the API ran this tool itself" in notice
    assert "repository orders deleted" not in json.dumps(message.model_dump())
    record = last_record(enforce)
    assert reading(record) == [("tool_abuse", "tool-delete", "content[0]", True)]
    assert ran_upstream(record) == [(UPSTREAM_SIGNAL, None)]


def test_an_mcp_call_reading_credentials_is_withheld_with_its_result(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    call = {**MCP_CALL, "input": {"path": "/home/agent/.aws/credentials"}}
    result = {**MCP_RESULT, "content": [{"type": "text", "text": "[default]"}]}
    upstream.reply = Reply(body=answer(call, result, {"type": "text", "text": "done"}))
    client = anthropic_client(upstream)
    message = client.beta.messages.create(
        model="m", max_tokens=100, messages=[{"role": "user", "content": QUESTION}], betas=MCP_BETA
    )
    assert [block.type for block in message.content] == ["text", "text"]
    assert "[default]" not in json.dumps(message.model_dump())
    record = last_record(enforce)
    (finding,) = reading(record)
    assert (finding[0], finding[2:]) == ("credential_theft", ("content[0]", True))
    assert ran_upstream(record) == [(UPSTREAM_SIGNAL, None)]


def test_a_turn_with_server_tools_raises_nothing(enforce: Proxy, upstream: FakeUpstream) -> None:
    """A fetched README, a search result, a command's output and an MCP tool's text: no finding, as the
    answer and as the history sent back."""
    blocks = [FETCH, fetched(README), SEARCHED, RAN, MCP_CALL, MCP_RESULT, {"type": "text", "text": "ok"}]
    upstream.reply = Reply(body=answer(*blocks))
    client = anthropic_client(upstream)
    message = client.beta.messages.create(
        model="m", max_tokens=100, messages=[{"role": "user", "content": QUESTION}], betas=MCP_BETA
    )
    assert json.loads(answer(*blocks))["content"] == [
        block.model_dump(exclude_none=True) for block in message.content
    ]
    history = [*ASK, {"role": "assistant", "content": blocks}, {"role": "user", "content": "thanks"}]
    client.messages.create(model="m", max_tokens=100, messages=history)  # type: ignore[arg-type]
    assert json.loads(upstream.received[-1].body)["messages"][1]["content"] == blocks
    assert [reading(record) for record in enforce.wait_for_records(2)] == [[], []]


def test_an_injection_in_a_remote_mcp_tools_output_reaches_the_agent_quarantined(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    """OpenAI SDK, Responses: the output of a tool the API called on a remote MCP server is read as a tool
    result."""
    poisoned = {**MCP_CALL_ITEM, "output": f"{README}\n{ATTACK}\n"}
    upstream.reply = Reply(body=response_of(poisoned))
    response = openai_client(upstream).responses.create(model="m", input="read the README")
    output = response.output[0].output  # type: ignore[union-attr]
    assert output is not None and "attacker@evil.example" not in output and MARKER in output
    injections = [finding for finding in reading(last_record(enforce)) if finding[0] == "prompt_injection"]
    assert injections and all(finding[2:] == ("output[0].output", True) for finding in injections)


def test_an_injection_in_a_file_search_result_sent_back_is_quarantined(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    result = {**FILE_SEARCH_ITEM["results"][0], "text": f"{README}\n{ATTACK}\n"}
    history = [{"role": "user", "content": "search"}, {**FILE_SEARCH_ITEM, "results": [result]}]
    openai_client(upstream).responses.create(model="m", input=history)  # type: ignore[arg-type]
    sent = json.loads(upstream.received[-1].body)["input"][1]["results"][0]["text"]
    assert "attacker@evil.example" not in sent and MARKER in sent
    (where,) = {finding[2] for finding in reading(last_record(enforce)) if finding[0] == "prompt_injection"}
    assert where == "input[1].results[0].text"


def test_a_streamed_destructive_remote_mcp_call_is_withheld(enforce: Proxy, upstream: FakeUpstream) -> None:
    deleting = {**MCP_CALL_ITEM, "name": "delete_repository", "arguments": '{"repo":"orders"}'}
    deleting["output"] = "repository orders deleted"
    upstream.reply = Reply(events=[responses_stream_of(deleting)])
    with openai_client(upstream).responses.stream(model="m", input="clean up") as stream:
        response = stream.get_final_response()
    assert [item.type for item in response.output] == ["message"]
    assert "delete_repository" in response.output_text
    assert "repository orders deleted" not in response.model_dump_json()
    record = last_record(enforce)
    assert reading(record) == [("tool_abuse", "tool-delete", "output[0]", True)]
    assert ran_upstream(record) == [(UPSTREAM_SIGNAL, None)]


def test_a_destructive_remote_mcp_call_in_a_json_answer_is_recorded_as_run_upstream(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    deleting = {**MCP_CALL_ITEM, "name": "delete_repository", "arguments": '{"repo":"orders"}'}
    upstream.reply = Reply(body=response_of(deleting))
    response = openai_client(upstream).responses.create(model="m", input="clean up")
    notice = response.output_text
    assert "delete_repository" in notice and "the API ran this tool itself" in notice
    record = last_record(enforce)
    assert reading(record) == [("tool_abuse", "tool-delete", "output[0]", True)]
    assert ran_upstream(record) == [(UPSTREAM_SIGNAL, None)]


def test_responses_items_of_the_apis_tools_raise_nothing(enforce: Proxy, upstream: FakeUpstream) -> None:
    """Listed MCP tools, an MCP call, a file search, the code interpreter, a web search and an image: no
    finding, as the answer and as the history sent back."""
    items = [
        {**MCP_TOOLS_ITEM},
        {**MCP_CALL_ITEM},
        {**FILE_SEARCH_ITEM},
        CODE_ITEM,
        WEB_SEARCH_ITEM,
        IMAGE_ITEM,
    ]
    items[2] = {**FILE_SEARCH_ITEM, "results": [{**FILE_SEARCH_ITEM["results"][0], "text": README}]}
    upstream.reply = Reply(body=response_of(*items))
    client = openai_client(upstream)
    response = client.responses.create(model="m", input="what does the README say?")
    assert [item.model_dump(exclude_none=True) for item in response.output] == items
    client.responses.create(model="m", input=[{"role": "user", "content": "hi"}, *items])  # type: ignore[list-item]
    assert json.loads(upstream.received[-1].body)["input"][1:] == items
    assert [reading(record) for record in enforce.wait_for_records(2)] == [[], []]


def fetched_file(content: bytes, media_type: str = "application/pdf") -> dict[str, Any]:
    """A ``web_fetch_tool_result`` whose document came as ``content`` in base64 (a fetched PDF)."""
    page = fetched("")
    source = {"type": "base64", "media_type": media_type, "data": base64.b64encode(content).decode()}
    return {
        **page,
        "content": {**page["content"], "content": {**page["content"]["content"], "source": source}},
    }


FETCHED_DATA = "content[1].content.content.source.data"
STREAMED = pytest.mark.parametrize("streamed", [False, True], ids=["json", "streamed"])


def fetch_answer(upstream: FakeUpstream, document: dict[str, Any], *, streamed: bool) -> Any:
    """What the Anthropic SDK makes of an answer in which web_fetch returned ``document``."""
    blocks = (FETCH, document, {"type": "text", "text": "summarised"})
    client = anthropic_client(upstream)
    if not streamed:
        upstream.reply = Reply(body=answer(*blocks))
        return client.messages.create(model="m", max_tokens=100, messages=ASK)
    upstream.reply = Reply(events=[stream_of(*blocks)])
    with client.messages.stream(model="m", max_tokens=100, messages=ASK) as stream:
        return stream.get_final_message()


@STREAMED
def test_an_injection_in_a_pdf_web_fetch_returned_is_withheld(
    enforce: Proxy, upstream: FakeUpstream, streamed: bool
) -> None:
    """A fetched PDF is binary, read as the tool's result it is: an injection in it cannot be quarantined
    inside, so a JSON answer is refused and a streamed one gets a notice in the result's place."""
    document = fetched_file(pdf_of(NOTE.replace("\n", " ")))
    if streamed:
        message = fetch_answer(upstream, document, streamed=True)
        assert [block.type for block in message.content] == ["server_tool_use", "text", "text"]
        assert "egressguard blocked" in message.content[1].text
        assert document["content"]["content"]["source"]["data"] not in json.dumps(message.model_dump())
    else:
        with pytest.raises(anthropic.APIStatusError) as refused:
            fetch_answer(upstream, document, streamed=False)
        assert refused.value.status_code == 502
    assert_enforced_as_read_content(enforce, FETCHED_DATA)


@STREAMED
def test_a_secret_in_a_pdf_web_fetch_returned_is_withheld(
    enforce: Proxy, upstream: FakeUpstream, streamed: bool
) -> None:
    document = fetched_file(pdf_of(f"key {AWS_KEY}"))
    if streamed:
        message = fetch_answer(upstream, document, streamed=True)
        assert "egressguard blocked" in message.content[1].text
    else:
        with pytest.raises(anthropic.APIStatusError):
            fetch_answer(upstream, document, streamed=False)
    assert ("data_exfiltration", "aws-access-key-id", FETCHED_DATA, True) in reading(last_record(enforce))


@STREAMED
def test_an_ordinary_pdf_web_fetch_returned_passes_as_sent(
    enforce: Proxy, upstream: FakeUpstream, streamed: bool
) -> None:
    document = fetched_file(pdf_of(README[:200]))
    message = fetch_answer(upstream, document, streamed=streamed)
    assert message.model_dump(exclude_none=True)["content"][1] == document
    assert reading(last_record(enforce)) == []


def undecodable_fetch(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with its fetched base64 broken by characters outside the alphabet."""
    source = document["content"]["content"]["source"]
    source["data"] = "JVBERi0x*!#" + source["data"][11:]
    return document


@STREAMED
def test_a_fetched_document_whose_base64_does_not_decode_is_withheld(
    enforce: Proxy, upstream: FakeUpstream, streamed: bool
) -> None:
    """A lenient decoder may read what none of it was read as: an answer carrying it does not pass."""
    document = undecodable_fetch(fetched_file(pdf_of(README[:200])))
    if streamed:
        message = fetch_answer(upstream, document, streamed=True)
        assert [block.type for block in message.content] == ["server_tool_use", "text", "text"]
        assert "egressguard blocked" in message.content[1].text
        assert "JVBERi0x*!#" not in json.dumps(message.model_dump())
    else:
        with pytest.raises(anthropic.APIStatusError) as refused:
            fetch_answer(upstream, document, streamed=False)
        assert refused.value.status_code == 502 and "inspection.attachment" in str(refused.value)
    assert ("data_exfiltration", "inspection.attachment", FETCHED_DATA, True) in reading(last_record(enforce))


def test_a_fetched_document_whose_base64_does_not_decode_is_recorded_in_observe_mode(
    shared_proxy: Callable[..., Proxy], monkeypatch: pytest.MonkeyPatch, upstream: FakeUpstream
) -> None:
    observe = _agent(shared_proxy(mode="observe"), monkeypatch)
    document = undecodable_fetch(fetched_file(pdf_of(README[:200])))
    message = fetch_answer(upstream, document, streamed=True)
    assert message.model_dump(exclude_none=True)["content"][1] == document
    (finding,) = [f for f in reading(last_record(observe)) if f[1] == "inspection.attachment"]
    assert finding[2:] == (FETCHED_DATA, False)


@pytest.mark.parametrize("undecodable", [False, True], ids=["injection", "undecodable"])
def test_a_fetched_pdf_sent_back_in_the_history_refuses_the_request(
    enforce: Proxy, upstream: FakeUpstream, undecodable: bool
) -> None:
    """An injection in it refuses the request (403); base64 that does not decode too (400), read by none."""
    document = fetched_file(pdf_of(NOTE.replace("\n", " ")))
    history = [
        *ASK,
        {"role": "assistant", "content": [FETCH, undecodable_fetch(document) if undecodable else document]},
        {"role": "user", "content": "go on"},
    ]
    refusal = anthropic.BadRequestError if undecodable else anthropic.PermissionDeniedError
    with pytest.raises(refusal):
        anthropic_client(upstream).messages.create(model="m", max_tokens=100, messages=history)  # type: ignore[arg-type]
    assert upstream.received == []
    where = "messages[1].content[1].content.content.source.data"
    if undecodable:
        assert ("data_exfiltration", "inspection.attachment", where, True) in reading(last_record(enforce))
    else:
        assert_enforced_as_read_content(enforce, where)


GEMINI_CODE_RAN = [{"executableCode": {"language": "PYTHON", "code": "print(open('README.md').read())"}}]


@STREAMED
def test_an_injection_in_the_output_of_code_gemini_ran_is_quarantined(
    enforce: Proxy, upstream: FakeUpstream, streamed: bool
) -> None:
    """What the Gemini API's code execution printed is a tool's result: read for injection and PII as any
    tool's result, where only its secrets were looked for."""
    ran = {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": f"{README}\n{ATTACK}\n"}}
    parts = gemini_returns(upstream, [*GEMINI_CODE_RAN, ran], streamed=streamed)
    output = parts[-1].code_execution_result.output
    assert "attacker@evil.example" not in output and MARKER in output and README.strip() in output
    where = "candidates[0].content.parts[2].codeExecutionResult.output"
    found = reading(last_record(enforce))
    assert any(finding[0] == "prompt_injection" and finding[2:] == (where, True) for finding in found)
    assert ("data_exfiltration", "email-address", where, True) in found


def test_an_injection_in_the_output_of_code_gemini_ran_sent_back_in_the_history_is_quarantined(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    from google import genai
    from google.genai import types

    ran = {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": f"{README}\n{ATTACK}\n"}}
    history = [
        {"role": "user", "parts": [{"text": "what does the README say?"}]},
        {"role": "model", "parts": [*GEMINI_CODE_RAN, ran]},
        {"role": "user", "parts": [{"text": "go on"}]},
    ]
    headers = {"X-User-Id": "u-1", "X-Purpose": "support", "X-Consent-Id": "c-1"}
    client = genai.Client(
        api_key="test-key", http_options=types.HttpOptions(base_url=upstream.url, headers=headers)
    )
    client.models.generate_content(model="gemini-2.5-flash", contents=history)
    sent = json.loads(upstream.received[-1].body)["contents"][1]["parts"][1]["codeExecutionResult"]["output"]
    assert "attacker@evil.example" not in sent and MARKER in sent
    where = "contents[1].parts[1].codeExecutionResult.output"
    assert any(
        finding[0] == "prompt_injection" and finding[2:] == (where, True)
        for finding in reading(last_record(enforce))
    )


@pytest.fixture
def code_guarded(shared_proxy: Callable[..., Proxy], monkeypatch: pytest.MonkeyPatch) -> Proxy:
    """Enforce mode, with a role that counts the code the Gemini API runs as a destructive tool."""
    return _agent(shared_proxy(mode="enforce", tools="{destructive: [code_execution]}"), monkeypatch)


@STREAMED
def test_code_gemini_ran_is_a_call_withheld_with_its_output_where_the_role_calls_it_destructive(
    code_guarded: Proxy, upstream: FakeUpstream, streamed: bool
) -> None:
    """``executableCode`` is a call to ``code_execution`` the API ran before answering: where the role
    lists it as destructive the code and what it printed are kept from the agent (a notice says the API
    ran it), recorded as run upstream with no approval opened; the text before it passes."""
    ran = {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "42 rows deleted\n"}}
    parts = gemini_returns(upstream, [*GEMINI_CODE_RAN, ran], streamed=streamed)
    assert [part.executable_code or part.code_execution_result for part in parts] == [None] * len(parts)
    text = "".join(part.text or "" for part in parts)
    assert text.startswith("Here it is.") and "code_execution" in text
    (finding,) = [f for f in last_record(code_guarded)["findings"] if f["threat"] == "tool_abuse"]
    assert finding["where"] == "candidates[0].content.parts[1]" and finding["enforced"] is True
    assert finding["extra"]["ran_upstream"] is True and "pending_approval" not in finding["extra"]


def test_a_request_declaring_gemini_code_execution_is_refused_where_the_role_calls_it_destructive(
    code_guarded: Proxy, upstream: FakeUpstream
) -> None:
    """The API runs the code its model writes unasked: the one place to stop it is the request that
    declares ``codeExecution``, refused (403) where the role lists ``code_execution`` as destructive."""
    from google import genai
    from google.genai import errors, types

    headers = {"X-User-Id": "u-1", "X-Purpose": "support", "X-Consent-Id": "c-1"}
    client = genai.Client(
        api_key="test-key", http_options=types.HttpOptions(base_url=upstream.url, headers=headers)
    )
    config = types.GenerateContentConfig(tools=[types.Tool(code_execution=types.ToolCodeExecution())])
    with pytest.raises(errors.ClientError, match="tool_abuse"):
        client.models.generate_content(model="gemini-2.5-flash", contents="count the rows", config=config)
    assert upstream.received == []
    found = [
        (f["rule"], f["where"]) for f in last_record(code_guarded)["findings"] if f["threat"] == "tool_abuse"
    ]
    assert [where for _, where in found] == ["tools[0].codeExecution"]
