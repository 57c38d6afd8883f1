"""Tools the API runs itself: Anthropic's ``server_tool_use`` and ``mcp_tool_use`` blocks are tool calls,
and what they return (``web_fetch_tool_result``, ``web_search_tool_result``, ``code_execution_tool_result``,
``mcp_tool_result``, ...) is read as a tool result, in requests, JSON answers and streams."""

from __future__ import annotations

import base64
import json
from typing import Any

from openai.types.responses import Response

from proxy.dialects import Anthropic, OpenAIResponses, StreamFilters, ToolDecision
from proxy.exchange import Part, Source, ToolCall
from tests.test_streaming import ANTHROPIC_MESSAGE, anthropic_sdk_view, payloads, run, sse

PAGE = "The orders service runs on port 8080."
FETCH: dict[str, Any] = {
    "type": "server_tool_use",
    "id": "srvtoolu_1",
    "name": "web_fetch",
    "input": {"url": "https://x.test/"},
}
FETCHED: dict[str, Any] = {
    "type": "web_fetch_tool_result",
    "tool_use_id": "srvtoolu_1",
    "content": {
        "type": "web_fetch_result",
        "url": "https://x.test/",
        "retrieved_at": "2025-09-01T00:00:00Z",
        "content": {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": PAGE},
            "title": "Orders",
        },
    },
}
SEARCHED: dict[str, Any] = {
    "type": "web_search_tool_result",
    "tool_use_id": "srvtoolu_2",
    "content": [
        {
            "type": "web_search_result",
            "url": "https://y.test/",
            "title": "Result",
            "encrypted_content": "EqQB",
        }
    ],
}
RAN: dict[str, Any] = {
    "type": "bash_code_execution_tool_result",
    "tool_use_id": "srvtoolu_3",
    "content": {"type": "bash_code_execution_result", "stdout": "total 0", "stderr": "", "return_code": 0},
}
MCP_CALL: dict[str, Any] = {
    "type": "mcp_tool_use",
    "id": "mcptoolu_1",
    "name": "read_file",
    "server_name": "files",
    "input": {"path": "notes.txt"},
}
MCP_RESULT: dict[str, Any] = {
    "type": "mcp_tool_result",
    "tool_use_id": "mcptoolu_1",
    "is_error": False,
    "content": [{"type": "text", "text": "meeting at noon"}],
}
PDF: dict[str, Any] = {
    "type": "document",
    "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQKJeLjz9MK"},
}


def answer(*blocks: dict[str, Any]) -> bytes:
    return json.dumps({**ANTHROPIC_MESSAGE, "content": list(blocks), "stop_reason": "end_turn"}).encode()


def test_server_and_mcp_tool_uses_are_tool_calls_and_their_results_tool_results() -> None:
    completion = Anthropic().parse_response(answer(FETCH, FETCHED, SEARCHED, RAN, MCP_CALL, MCP_RESULT))
    assert [(call.name, call.id, call.where) for call in completion.tool_calls] == [
        ("web_fetch", "srvtoolu_1", "content[0]"),
        ("read_file", "mcptoolu_1", "content[4]"),
    ]
    assert [(part.where, part.text, part.tool_name) for part in completion.parts] == [
        ("content[1].content.content.source.data", PAGE, "web_fetch"),
        ("content[1].content.content.title", "Orders", "web_fetch"),
        ("content[2].content[0].title", "Result", None),
        ("content[3].content.stdout", "total 0", None),
        ("content[3].content.stderr", "", None),
        ("content[5].content[0].text", "meeting at noon", "read_file"),
    ]
    assert {part.source for part in completion.parts} == {Source.TOOL_RESULT}
    # Redacted as any text, but not the model's answer: a page saying "I can't" is no refusal.
    assert [segment.where for segment in completion.text] == [part.where for part in completion.parts]
    assert completion.full_text == ""


def test_a_base64_source_and_identifiers_are_not_read_as_text() -> None:
    """An encrypted search result, a URL or a file id is no text the model reads, nor is a PDF given as
    base64 (read as binary content instead)."""
    fetched_pdf = {**FETCHED, "content": {**FETCHED["content"], "content": PDF}}
    completion = Anthropic().parse_response(answer(FETCH, fetched_pdf))
    assert completion.parts == []


def test_the_history_carries_server_tool_uses_as_calls_and_results_as_tool_results() -> None:
    body = {
        "model": "claude",
        "max_tokens": 10,
        "messages": [
            {"role": "user", "content": "what does x.test say?"},
            {"role": "assistant", "content": [FETCH, FETCHED, MCP_CALL, MCP_RESULT]},
            {"role": "user", "content": "thanks"},
        ],
    }
    view = Anthropic().parse_request(json.dumps(body).encode())
    assert [(call.name, call.where) for call in view.tool_calls] == [
        ("web_fetch", "messages[1].content[0]"),
        ("read_file", "messages[1].content[2]"),
    ]
    results = [(part.where, part.tool_name) for part in view.parts if part.source is Source.TOOL_RESULT]
    assert results == [
        ("messages[1].content[1].content.content.source.data", "web_fetch"),
        ("messages[1].content[1].content.content.title", "web_fetch"),
        ("messages[1].content[3].content[0].text", "read_file"),
    ]


def test_a_withheld_server_tool_use_goes_with_its_result() -> None:
    """The API refuses a result whose call is not in the history: both leave the answer."""
    body = answer(FETCH, FETCHED, {"type": "text", "text": "done"})
    dialect = Anthropic()
    rewritten = json.loads(dialect.rewrite_response(body, lambda text: text, {"srvtoolu_1"}, "[withheld]"))
    assert [block["type"] for block in rewritten["content"]] == ["text", "text"]


def stream_of(*blocks: dict[str, Any]) -> bytes:
    events: list[dict[str, Any]] = [{"type": "message_start", "message": ANTHROPIC_MESSAGE}]
    for index, block in enumerate(blocks):
        if block["type"] in ("server_tool_use", "mcp_tool_use"):
            arguments = json.dumps(block["input"])
            events += [
                {"type": "content_block_start", "index": index, "content_block": {**block, "input": {}}},
                *(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": arguments[start : start + 5]},
                    }
                    for start in range(0, len(arguments), 5)
                ),
            ]
        else:
            events.append({"type": "content_block_start", "index": index, "content_block": block})
        events.append({"type": "content_block_stop", "index": index})
    events += [
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}},
        {"type": "message_stop"},
    ]
    return b"".join(sse(event, event["type"]) for event in events)


def test_a_stream_gates_server_tool_uses_on_their_whole_input_and_reads_their_results() -> None:
    asked: list[tuple[str, str, bool]] = []

    def gate(call: ToolCall, complete: bool) -> ToolDecision:
        asked.append((call.name, call.arguments, complete))
        return "hold" if not complete else "drop" if call.name == "read_file" else "release"

    def quarantine(part: Part) -> str:
        return part.text.upper()

    filters = StreamFilters(
        tool_gate=gate, drop_notice=lambda call: f"[{call.name} withheld]", content_filter=quarantine
    )
    session = Anthropic().stream_session(filters)
    output = run(session, stream_of(FETCH, FETCHED, MCP_CALL, MCP_RESULT))
    assert asked == [
        ("web_fetch", "{}", False),
        ("web_fetch", '{"url":"https://x.test/"}', True),
        ("read_file", "{}", False),
        ("read_file", '{"path":"notes.txt"}', True),
    ]
    text, calls = anthropic_sdk_view(output)
    assert text == "[read_file withheld]" and calls == []
    starts = [payload["content_block"] for kind, payload in payloads(output) if kind == "content_block_start"]
    assert [block["type"] for block in starts] == ["server_tool_use", "web_fetch_tool_result", "text"]
    assert starts[1]["content"]["content"]["source"]["data"] == PAGE.upper()
    assert b"meeting at noon" not in output and b"notes.txt" not in output
    completion = session.completion
    assert [call.name for call in completion.tool_calls] == ["web_fetch", "read_file"]
    assert [part.where for part in completion.parts] == [
        "content[1].content.content.source.data",
        "content[1].content.content.title",
        "content[3].content[0].text",
    ]


RESPONSE: dict[str, Any] = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1,
    "model": "gpt-4.1",
    "status": "completed",
}
RESPONSE |= {"parallel_tool_calls": True, "tool_choice": "auto", "tools": []}
MCP_CALL_ITEM: dict[str, Any] = {
    "id": "mcp_1",
    "type": "mcp_call",
    "server_label": "files",
    "name": "read_file",
    "arguments": '{"path":"notes.txt"}',
    "output": "meeting at noon",
    "status": "completed",
}
FILE_SEARCH_ITEM: dict[str, Any] = {
    "id": "fs_1",
    "type": "file_search_call",
    "status": "completed",
    "queries": ["orders"],
    "results": [{"file_id": "file-1", "filename": "readme.md", "score": 0.9, "text": PAGE, "attributes": {}}],
}
CODE_ITEM: dict[str, Any] = {
    "id": "ci_1",
    "type": "code_interpreter_call",
    "status": "completed",
    "code": "print(6 * 7)",
    "container_id": "cntr_1",
    "outputs": [{"type": "logs", "logs": "42"}],
}
WEB_SEARCH_ITEM: dict[str, Any] = {
    "id": "ws_1",
    "type": "web_search_call",
    "status": "completed",
    "action": {"type": "search", "query": "orders service"},
}
MCP_TOOLS_ITEM: dict[str, Any] = {
    "id": "mcpl_1",
    "type": "mcp_list_tools",
    "server_label": "files",
    "tools": [{"name": "read_file", "description": "Reads a file.", "input_schema": {"type": "object"}}],
}
IMAGE_ITEM: dict[str, Any] = {
    "id": "ig_1",
    "type": "image_generation_call",
    "status": "completed",
    "result": "iVBORw0KGgo=",
}
RESPONSES_ITEMS: list[dict[str, Any]] = [
    MCP_TOOLS_ITEM,
    MCP_CALL_ITEM,
    FILE_SEARCH_ITEM,
    CODE_ITEM,
    WEB_SEARCH_ITEM,
    IMAGE_ITEM,
]


def response_of(*items: dict[str, Any]) -> bytes:
    return json.dumps({**RESPONSE, "output": list(items)}).encode()


def test_responses_items_of_tools_the_api_runs_are_calls_and_what_they_returned_is_read() -> None:
    completion = OpenAIResponses().parse_response(response_of(*RESPONSES_ITEMS))
    assert [(call.name, call.where) for call in completion.tool_calls] == [
        ("read_file", "output[1]"),
        ("file_search", "output[2]"),
        ("code_interpreter", "output[3]"),
        ("web_search", "output[4]"),
    ]
    assert completion.tool_calls[2].arguments == "print(6 * 7)"
    assert [(part.source, part.where, part.text) for part in completion.parts] == [
        (Source.TOOL_DESCRIPTION, "output[0].tools[0].description", "Reads a file."),
        (Source.TOOL_RESULT, "output[1].output", "meeting at noon"),
        (Source.TOOL_RESULT, "output[2].results[0].text", PAGE),
        (Source.TOOL_RESULT, "output[3].outputs[0].logs", "42"),
    ]
    assert completion.full_text == ""


def test_responses_history_items_of_tools_the_api_ran_are_read_as_tool_results() -> None:
    body = {"model": "gpt-4.1", "input": [{"role": "user", "content": "hi"}, *RESPONSES_ITEMS]}
    view = OpenAIResponses().parse_request(json.dumps(body).encode())
    assert [call.name for call in view.tool_calls] == [
        "read_file",
        "file_search",
        "code_interpreter",
        "web_search",
    ]
    assert [(part.source, part.where) for part in view.parts[1:]] == [
        (Source.TOOL_DESCRIPTION, "input[1].tools[0].description"),
        (Source.TOOL_RESULT, "input[2].output"),
        (Source.TOOL_RESULT, "input[3].results[0].text"),
        (Source.TOOL_RESULT, "input[4].outputs[0].logs"),
    ]


def responses_stream_of(*items: dict[str, Any]) -> bytes:
    events: list[dict[str, Any]] = [{"type": "response.created", "response": {**RESPONSE, "output": []}}]
    for position, item in enumerate(items):
        started = {**item, "status": "in_progress", "arguments": "", "output": None}
        events.append({"type": "response.output_item.added", "output_index": position, "item": started})
        located = {"output_index": position, "item_id": item["id"]}
        events += [
            {
                "type": "response.mcp_call_arguments.delta",
                **located,
                "delta": item["arguments"][start : start + 4],
            }
            for start in range(0, len(item["arguments"]), 4)
        ]
        events.append({"type": "response.mcp_call_arguments.done", **located, "arguments": item["arguments"]})
        events.append({"type": "response.output_item.done", "output_index": position, "item": item})
    events.append({"type": "response.completed", "response": {**RESPONSE, "output": list(items)}})
    return b"".join(
        sse({**event, "sequence_number": number}, event["type"]) for number, event in enumerate(events)
    )


def test_a_responses_stream_gates_mcp_calls_on_their_whole_arguments_and_reads_their_output() -> None:
    asked: list[tuple[str, str, bool]] = []

    def gate(call: ToolCall, complete: bool) -> ToolDecision:
        asked.append((call.name, call.arguments, complete))
        return "hold" if not complete else "drop" if call.name == "delete_repository" else "release"

    deleting = {**MCP_CALL_ITEM, "id": "mcp_2", "name": "delete_repository", "arguments": '{"repo":"orders"}'}
    deleting["output"] = "repository orders deleted"
    filters = StreamFilters(
        tool_gate=gate,
        drop_notice=lambda call: f"[{call.name} withheld]",
        content_filter=lambda part: part.text.upper(),
    )
    session = OpenAIResponses().stream_session(filters)
    output = run(session, responses_stream_of(MCP_CALL_ITEM, deleting))
    assert asked == [
        ("read_file", "", False),
        ("read_file", '{"path":"notes.txt"}', True),
        ("delete_repository", "", False),
        ("delete_repository", '{"repo":"orders"}', True),
    ]
    events = payloads(output)
    final = Response.model_validate(events[-1][1]["response"])
    assert [item.type for item in final.output] == ["mcp_call", "message"]
    assert final.output[0].output == "MEETING AT NOON"  # type: ignore[union-attr]
    (done,) = [payload["item"] for kind, payload in events if kind == "response.output_item.done"][:1]
    assert done["output"] == "MEETING AT NOON"
    assert b"repository orders deleted" not in output and b'"repo' not in output
    assert [part.where for part in session.completion.parts] == ["output[0].output", "output[1].output"]


def test_a_document_a_server_tool_fetched_in_base64_is_read_as_text_or_binary() -> None:
    """A fetched document's base64 source: text is read, and rewritten, inside it; a PDF is read as binary
    content a tool returned, in the answer and in the history; an image is not read."""
    pdf = b"%PDF-1.4\n\x00\x01\xff" + PAGE.encode()

    def fetched_as(data: bytes, media_type: str) -> dict[str, Any]:
        document = {"type": "base64", "media_type": media_type, "data": base64.b64encode(data).decode()}
        return {
            **FETCHED,
            "content": {**FETCHED["content"], "content": {"type": "document", "source": document}},
        }

    blocks = [
        fetched_as(PAGE.encode(), "text/plain"),
        fetched_as(pdf, "application/pdf"),
        fetched_as(pdf, "image/png"),
    ]
    body = answer(FETCH, *blocks)
    completion = Anthropic().parse_response(body)
    data = "content.content.source.data"
    assert [(part.where, part.text) for part in completion.parts] == [(f"content[1].{data}", PAGE)]
    assert [(file.where, file.content, file.source) for file in completion.attachments] == [
        (f"content[2].{data}", pdf, Source.TOOL_RESULT)
    ]
    rewritten = json.loads(Anthropic().rewrite_response(body, str.upper))["content"]
    assert base64.b64decode(rewritten[1]["content"]["content"]["source"]["data"]).decode() == PAGE.upper()
    assert rewritten[2:] == blocks[1:]
    history = {
        "model": "m",
        "max_tokens": 1,
        "messages": [{"role": "assistant", "content": [FETCH, *blocks]}],
    }
    view = Anthropic().parse_request(json.dumps(history).encode())
    assert [file.where for file in view.attachments] == [f"messages[0].content[2].{data}"]
