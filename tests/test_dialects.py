"""Dialect detection, request and response parsing, rewriting and error shapes."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from anthropic.types import Message
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from hypothesis import given
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from proxy.dialects import (
    MCP,
    Anthropic,
    BedrockConverse,
    Dialect,
    Gemini,
    Generic,
    OpenAIChat,
    OpenAIResponses,
    by_name,
    detect,
    is_event_stream,
)
from proxy.dialects.base import load_json_with_shadowed, readable_text
from proxy.dialects.locator import format_locator, get_at, locator_steps, parse_locator, sibling_strings
from proxy.exchange import Source
from tests.dialect_fixtures import fixture, request_fixture, response_fixture

REQUESTS: dict[str, Dialect] = {
    "openai_chat": OpenAIChat(),
    "openai_responses": OpenAIResponses(),
    "anthropic": Anthropic(),
    "gemini": Gemini(model_hint="gemini-2.5-flash", streaming=True),
    "mcp_tools_call": MCP(request_id=7),
    "bedrock_converse": BedrockConverse(),
}
RESPONSES: dict[str, Dialect] = {
    "openai_chat": OpenAIChat(),
    "openai_responses": OpenAIResponses(),
    "anthropic": Anthropic(),
    "gemini": Gemini(),
    "mcp_tools_call": MCP(),
    "mcp_tools_list": MCP(),
    "bedrock_converse": BedrockConverse(),
}
ALL_DIALECTS = [OpenAIChat(), OpenAIResponses(), Anthropic(), Gemini(), MCP(), BedrockConverse(), Generic()]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    *("messages", "content", "role", "choices", "output", "candidates", "parts", "result"),
                    *("message", "toolUse", "toolResult", "x"),
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


def request_view(name: str) -> Any:
    return REQUESTS[name].parse_request(request_fixture(name))


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        ("POST", "/v1/chat/completions", b'{"model":"gpt-4o","messages":[]}', "openai_chat"),
        ("POST", "/api/v1/chat/completions?x=1", b"{}", "openai_chat"),
        (
            "POST",
            "/openai/deployments/prod-gpt4o/chat/completions?api-version=2024-10-21",
            b"{}",
            "openai_chat",
        ),
        ("POST", "/v1/responses", b'{"input":"hi"}', "openai_responses"),
        ("GET", "/v1/responses/resp_abc123", b"", "openai_responses"),
        ("POST", "/v1/messages", b'{"max_tokens":5,"messages":[]}', "anthropic"),
        ("POST", "/api/chat/messages", b'{"channel":"C1","text":"hi"}', "generic"),
        ("POST", "/v1beta/models/gemini-2.5-flash:generateContent", b"{}", "gemini"),
        ("POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", b"{}", "gemini"),
        (
            "POST",
            "/v1/projects/p/locations/us/publishers/google/models/gemini-2.0:generateContent",
            b"{}",
            "gemini",
        ),
        ("POST", "/anything/mcp", b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}', "mcp"),
        ("POST", "/messages?sessionId=1", b'{"jsonrpc": "2.0", "id": 3, "method": "tools/call"}', "mcp"),
        ("POST", "/rpc", b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', "mcp"),
        ("GET", "/mcp", b"", "mcp"),
        ("POST", "/upload", b"plain text", "generic"),
        ("POST", "/model/amazon.nova-pro-v1%3A0/converse", b"{}", "bedrock_converse"),
        (
            "POST",
            "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream",
            b"{}",
            "bedrock_converse",
        ),
    ],
)
def test_detect_by_method_path_and_body_shape(method: str, path: str, body: bytes, expected: str) -> None:
    """Dialects are recognised from the request alone, on any host."""
    assert detect(method, path, "application/json", body).name == expected


def test_detect_carries_what_the_path_says() -> None:
    """Gemini's model and streaming come from the path, Azure's deployment from its path, MCP's id from
    the body."""
    gemini = detect("POST", "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse", None, b"{}")
    view = gemini.parse_request(b'{"contents": []}')
    assert (view.model, view.stream) == ("gemini-2.5-pro", True)
    azure = detect("POST", "/openai/deployments/prod-gpt4o/chat/completions", None, b"{}")
    assert azure.parse_request(b'{"messages": []}').model == "prod-gpt4o"
    mcp = detect("POST", "/mcp", None, b'{"jsonrpc":"2.0","id":"a-1","method":"tools/call"}')
    assert json.loads(mcp.error_response(403, "blocked", "egress")[2])["id"] == "a-1"


def test_by_name_and_event_stream_helpers() -> None:
    """Dialects are found by their audit name; SSE is recognised by content type."""
    assert by_name("anthropic").name == "anthropic" and by_name("nope").name == "generic"
    assert is_event_stream("text/event-stream; charset=utf-8") and not is_event_stream("application/json")


def test_openai_chat_request_parts_and_sources() -> None:
    """Roles map to sources; tool results carry their call id and the tool's name; images are skipped."""
    view = request_view("openai_chat")
    sources = [(part.source, part.where) for part in view.parts if part.source != Source.TOOL_DESCRIPTION]
    assert sources == [
        (Source.SYSTEM, "messages[0].content"),
        (Source.SYSTEM, "messages[1].content[0].text"),
        (Source.USER, "messages[2].content[0].text"),
        (Source.TOOL_RESULT, "messages[4].content"),
        (Source.ASSISTANT, "messages[5].content"),
        (Source.USER, "messages[6].content"),
    ]
    tool_result = view.parts[3]
    assert (tool_result.tool_name, tool_result.tool_call_id) == ("get_weather", "call_Wx81")
    assert view.tools_offered == ["get_weather", "lookup_ticket"]
    assert [(call.name, call.where) for call in view.tool_calls] == [
        ("get_weather", "messages[3].tool_calls[0]")
    ]
    assert (view.model, view.stream) == ("gpt-4o-2024-08-06", True)
    descriptions = [part.where for part in view.parts if part.source == Source.TOOL_DESCRIPTION]
    assert "tools[0].function.parameters.properties.city.description" in descriptions


def test_openai_responses_request_parts_and_sources() -> None:
    """Instructions are system text; function_call_output is a tool result named after its call."""
    view = request_view("openai_responses")
    assert view.parts[0].source == Source.SYSTEM and view.parts[0].where == "instructions"
    tool_result = next(part for part in view.parts if part.source == Source.TOOL_RESULT)
    assert (tool_result.where, tool_result.tool_name) == ("input[2].output", "get_build_log")
    assert [part.source for part in view.parts if part.where == "input[4].content"] == [Source.SYSTEM]
    assert view.tools_offered == ["rerun_build", "web_search_preview"]
    assert [call.id for call in view.tool_calls] == ["call_build"]


def test_anthropic_request_parts_and_sources() -> None:
    """System blocks, tool_result blocks and documents each get their source."""
    view = request_view("anthropic")
    by_where = {part.where: part for part in view.parts}
    assert by_where["system[0].text"].source == Source.SYSTEM
    assert by_where["messages[2].content[0].content[0].text"].source == Source.TOOL_RESULT
    assert by_where["messages[2].content[0].content[0].text"].tool_name == "bash"
    assert by_where["messages[2].content[1].source.data"].source == Source.RETRIEVED_DOCUMENT
    assert by_where["tools[0].input_schema.properties.command.description"].source == Source.TOOL_DESCRIPTION
    assert [(call.name, call.arguments) for call in view.tool_calls] == [("bash", '{"command":"ls -la"}')]


def test_gemini_request_parts_and_sources() -> None:
    """systemInstruction, functionResponse strings and function declarations are all read."""
    view = request_view("gemini")
    by_where = {part.where: part for part in view.parts}
    assert by_where["systemInstruction.parts[0].text"].source == Source.SYSTEM
    response_note = by_where["contents[2].parts[0].functionResponse.response.result[0].note"]
    assert (response_note.source, response_note.tool_name) == (Source.TOOL_RESULT, "find_restaurants")
    assert view.tools_offered == ["find_restaurants", "book_table"]
    assert view.tool_calls[0].arguments == '{"city":"Rome","time":"20:00"}'
    assert (view.model, view.stream) == ("gemini-2.5-flash", True)


def test_gemini_snake_case_fields_are_read() -> None:
    """The REST API's snake_case spellings are read like the camelCase ones."""
    body = json.dumps(
        {
            "system_instruction": {"parts": [{"text": "sys"}]},
            "contents": [{"parts": [{"function_call": {"name": "f", "args": {}}}]}],
        }
    ).encode()
    view = Gemini().parse_request(body)
    assert [(part.where, part.source) for part in view.parts] == [
        ("system_instruction.parts[0].text", Source.SYSTEM)
    ]
    assert view.tool_calls[0].name == "f"


def test_mcp_tools_call_request() -> None:
    """tools/call is a tool call whose argument strings are parts the agent wrote."""
    view = request_view("mcp_tools_call")
    (call,) = view.tool_calls
    assert (call.id, call.name, call.where) == ("7", "send_email", "params")
    assert [part.where for part in view.parts] == [
        "params.arguments.to",
        "params.arguments.subject",
        "params.arguments.body",
    ]
    assert {part.source for part in view.parts} == {Source.ASSISTANT}


@pytest.mark.parametrize("method", ["Tools/Call", "TOOLS/CALL", "tools/CALL"])
def test_mcp_tools_call_in_another_case_is_a_tool_call(method: str) -> None:
    """A server that folds the method's case runs it: it is read as the call it may be."""
    call = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {"name": "rm", "arguments": {"p": "/"}}}
    view = MCP().parse_request(json.dumps(call).encode())
    assert [(call.name, call.arguments) for call in view.tool_calls] == [("rm", '{"p":"/"}')]
    assert [(part.where, part.source) for part in view.parts] == [("params.arguments.p", Source.ASSISTANT)]
    other = {**call, "method": "tools/calls"}
    assert MCP().parse_request(json.dumps(other).encode()).tool_calls == []


def test_mcp_tools_list_descriptions_are_tool_description_parts() -> None:
    """Tool descriptions and schema descriptions in tools/list are where poisoning hides."""
    completion = MCP().parse_response(fixture("mcp_tools_list_response.json"))
    assert [(part.source, part.tool_name, part.where) for part in completion.parts] == [
        (Source.TOOL_DESCRIPTION, "add", "result.tools[0].description"),
        (Source.TOOL_DESCRIPTION, "add", "result.tools[0].inputSchema.properties.sidenote.description"),
        (Source.TOOL_DESCRIPTION, "search_docs", "result.tools[1].description"),
    ]
    assert any("id_rsa" in segment.text for segment in completion.text)
    assert completion.full_text == ""  # read content, not the model's answer a refusal is judged on


def test_mcp_tools_call_result_text_is_tool_result() -> None:
    """Text content of a tools/call result is TOOL_RESULT; images are skipped."""
    completion = MCP().parse_response(fixture("mcp_tools_call_response.json"))
    assert [(part.source, part.where) for part in completion.parts] == [
        (Source.TOOL_RESULT, "result.content[0].text"),
        (Source.TOOL_RESULT, "result.structuredContent.status"),
    ]


def test_generic_reads_json_strings_and_text_bodies() -> None:
    """Unknown JSON yields every string; text is one part; binary is a parse error."""
    view = Generic().parse_request(b'{"a": {"b c": ["x", 1]}, "d": "y"}')
    assert [(part.where, part.text) for part in view.parts] == [('a["b c"][0]', "x"), ("d", "y")]
    assert [(part.where, part.text) for part in Generic().parse_request(b"hello").parts] == [("$", "hello")]
    assert Generic().parse_request(b"\xff\xfe\x00").parse_error == "not UTF-8 text"


@pytest.mark.parametrize("name", REQUESTS)
def test_every_request_part_locator_points_at_its_text(name: str) -> None:
    """get_at(body, part.where) is the part's text (encoded as it came, for a file given in base64), so
    rewrites and findings can find it."""
    document = json.loads(request_fixture(name))
    view = request_view(name)
    assert view.parts and view.parse_error is None
    for part in view.parts:
        assert get_at(document, part.where) == part.written(part.text)


@pytest.mark.parametrize("name", RESPONSES)
def test_every_response_segment_locator_points_at_its_text(name: str) -> None:
    """get_at(body, segment.where) is the segment's text."""
    document = json.loads(response_fixture(name))
    completion = RESPONSES[name].parse_response(response_fixture(name))
    assert completion.text and completion.parse_error is None
    for segment in completion.text:
        assert get_at(document, segment.where) == segment.text


def test_response_fields_are_read() -> None:
    """Model, usage, stop reason and tool calls come out of each API's response."""
    chat = OpenAIChat().parse_response(fixture("openai_chat_response.json"))
    assert (chat.model, chat.stop_reason, chat.usage.tokens_in, chat.usage.tokens_out) == (
        "gpt-4o-2024-08-06",
        "tool_calls",
        212,
        31,
    )
    claude = Anthropic().parse_response(fixture("anthropic_response.json"))
    assert [(call.id, call.arguments) for call in claude.tool_calls] == [
        ("toolu_01B", '{"command":"rm -rf build/"}')
    ]
    responses = OpenAIResponses().parse_response(fixture("openai_responses_response.json"))
    assert (responses.stop_reason, responses.tool_calls[0].id) == ("completed", "call_rerun")
    gemini = Gemini().parse_response(fixture("gemini_response.json"))
    assert (gemini.model, gemini.usage.tokens_in, gemini.stop_reason) == ("gemini-2.5-flash", 142, "STOP")


def test_gemini_json_array_stream_is_merged() -> None:
    """streamGenerateContent without alt=sse (a JSON array) reads like the merged response."""
    chunks = [
        {"candidates": [{"content": {"parts": [{"text": piece}]}, "index": 0}]} for piece in ("Hel", "lo")
    ]
    completion = Gemini().parse_response(json.dumps(chunks).encode())
    assert [(segment.text, segment.where) for segment in completion.text] == [
        ("Hello", "candidates[0].content.parts[0].text")
    ]


@pytest.mark.parametrize("dialect", ALL_DIALECTS, ids=lambda dialect: dialect.name)
@pytest.mark.parametrize(
    "body", [b"", b"{", b'{"messages": "nope", "choices": 3}', b"[1, 2]", b"null", b"\xff"]
)
def test_malformed_bodies_never_raise(dialect: Dialect, body: bytes) -> None:
    """Malformed or oddly shaped bodies give views, with parse_error when not JSON."""
    view = dialect.parse_request(body)
    completion = dialect.parse_response(body)
    assert view.dialect == dialect.name
    if body in (b"", b"{") and dialect.name != "generic":
        assert view.parse_error and completion.parse_error
    assert dialect.rewrite_response(body, str.upper) is not None


@given(JSON_VALUES)
def test_arbitrary_json_shapes_never_raise(document: Any) -> None:
    """No JSON document makes any dialect raise while parsing or rewriting."""
    body = json.dumps(document).encode()
    for dialect in ALL_DIALECTS:
        dialect.parse_request(body)
        dialect.parse_response(body)
        dialect.rewrite_response(body, str.upper, {"x"}, "notice")


def test_rewrite_request_replaces_parts_by_locator() -> None:
    """Replacing a part's text by its locator changes exactly that text."""
    dialect = OpenAIChat()
    body = fixture("openai_chat_request.json")
    rewritten = dialect.rewrite_request(body, {"messages[4].content": "[removed]"})
    after = dialect.parse_request(rewritten)
    assert next(part.text for part in after.parts if part.where == "messages[4].content") == "[removed]"
    assert len(after.parts) == len(dialect.parse_request(body).parts)


def test_rewrite_request_rejects_unknown_locators() -> None:
    """A locator that names no string is an error, not a silent no-op."""
    with pytest.raises(ValueError, match="no value"):
        Anthropic().rewrite_request(fixture("anthropic_request.json"), {"messages[9].content": "x"})
    with pytest.raises(ValueError, match="not a string"):
        Anthropic().rewrite_request(fixture("anthropic_request.json"), {"messages": "x"})


def test_generic_text_body_is_rewritten_whole() -> None:
    """A text body's only locator is the whole body."""
    assert Generic().rewrite_request(b"token=abc", {"$": "token=[redacted]"}) == b"token=[redacted]"
    assert Generic().rewrite_response(b"abc", str.upper) == b"ABC"


def test_rewrite_chat_response_drops_call_and_stays_valid() -> None:
    """Text is mapped, a dropped call removed, the notice appended; the OpenAI SDK model accepts it."""
    body = OpenAIChat().rewrite_response(
        fixture("openai_chat_response.json"),
        lambda text: text.replace("sk-proj-", "[x]"),
        {"call_Dl99"},
        "Held.",
    )
    message = ChatCompletion.model_validate_json(body).choices[0].message
    assert (
        message.content is not None and message.content.endswith("now.\n\nHeld.") and "[x]" in message.content
    )
    assert [call.id for call in message.tool_calls or []] == ["call_Tk42"]


@pytest.mark.parametrize("name", RESPONSES)
def test_rewrite_that_changes_nothing_returns_the_body_as_sent(name: str) -> None:
    """A rewrite whose text map changes no text and drops nothing keeps the upstream's bytes (spacing,
    line ends, key order): enforce mode encodes again only a body it changes."""
    body = b"  " + fixture(f"{name}_response.json").replace(b"\n", b"\r\n")
    assert RESPONSES[name].rewrite_response(body, str) is body
    assert RESPONSES[name].rewrite_response(body, str.upper) != body


def test_rewrite_chat_response_dropping_all_calls_stops() -> None:
    """With every call dropped, finish_reason becomes stop and tool_calls disappears."""
    body = OpenAIChat().rewrite_response(
        fixture("openai_chat_response.json"), str, {"call_Dl99", "call_Tk42"}, None
    )
    choice = ChatCompletion.model_validate_json(body).choices[0]
    assert (choice.finish_reason, choice.message.tool_calls) == ("stop", None)


def test_rewrite_responses_response_drops_item_and_stays_valid() -> None:
    """A dropped function_call item is removed and the notice is a message item."""
    body = OpenAIResponses().rewrite_response(
        fixture("openai_responses_response.json"), str.upper, {"call_rerun"}, "Held."
    )
    response = Response.model_validate_json(body)
    assert [item.type for item in response.output] == ["message", "message"]
    assert response.output_text == "THE BUILD FAILED AT STEP 4; RE-RUNNING NOW.Held."


def test_rewrite_anthropic_response_drops_tool_use_and_stays_valid() -> None:
    """A dropped tool_use block is removed, the notice is a text block, stop_reason is end_turn."""
    body = Anthropic().rewrite_response(fixture("anthropic_response.json"), str, {"toolu_01B"}, "Held.")
    message = Message.model_validate_json(body)
    assert [block.type for block in message.content] == ["text", "text"]
    assert message.stop_reason == "end_turn"


def test_rewrite_gemini_response_drops_call_by_locator() -> None:
    """Gemini calls without an id are dropped by their locator."""
    dialect = Gemini()
    body = fixture("gemini_response.json")
    (call,) = dialect.parse_response(body).tool_calls
    assert call.id is None
    response = genai_types.GenerateContentResponse.model_validate_json(
        dialect.rewrite_response(body, str, {call.where}, "Held.")
    )
    assert response.function_calls is None and response.text is not None and response.text.endswith("Held.")


def test_rewrite_mcp_result_maps_text_and_adds_notice() -> None:
    """Tool result text is mapped and a notice becomes another text content item."""
    body = MCP().rewrite_response(
        fixture("mcp_tools_call_response.json"), lambda text: "[checked]", (), "Note."
    )
    content = json.loads(body)["result"]["content"]
    assert [item.get("text") for item in content] == ["[checked]", None, "Note."]


def sdk_client(response: tuple[int, dict[str, str], bytes]) -> httpx2.Client:
    """An HTTP client (of the httpx fork these SDK releases use) that answers every request with
    ``response``."""
    status, headers, body = response
    return httpx2.Client(
        transport=httpx2.MockTransport(lambda request: httpx2.Response(status, headers=headers, content=body))
    )


def test_openai_error_shape_is_a_readable_sdk_exception() -> None:
    """The OpenAI SDK raises a typed error carrying our message and code."""
    response = OpenAIChat().error_response(
        403, "blocked by rule egress.allowlist (event e1)", "egressguard_blocked"
    )
    client = openai.OpenAI(api_key="k", http_client=sdk_client(response), max_retries=0)
    with pytest.raises(openai.PermissionDeniedError, match=r"egress\.allowlist") as raised:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.code == "egressguard_blocked"


def test_anthropic_error_shape_is_a_readable_sdk_exception() -> None:
    """The Anthropic SDK raises a typed error carrying our message."""
    response = Anthropic().error_response(400, "prompt injection detected (event e2)", "egressguard_blocked")
    client = anthropic.Anthropic(api_key="k", http_client=sdk_client(response), max_retries=0)
    with pytest.raises(anthropic.BadRequestError, match="prompt injection detected"):
        client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert json.loads(response[2])["error"]["type"] == "invalid_request_error"


def test_gemini_error_shape_is_a_readable_sdk_exception() -> None:
    """google-genai turns the error body into a ClientError with our message and status."""
    status, headers, body = Gemini().error_response(403, "blocked (event e3)", "egressguard_blocked")
    with pytest.raises(genai_errors.ClientError, match="blocked") as raised:
        genai_errors.APIError.raise_for_response(httpx.Response(status, headers=headers, content=body))
    assert raised.value.status == "PERMISSION_DENIED"


def test_mcp_error_is_a_jsonrpc_error_for_the_request() -> None:
    """MCP gets a JSON-RPC error answering the request id, with our code in data."""
    status, headers, body = MCP(request_id=7).error_response(
        403, "tool needs approval", "egressguard_blocked"
    )
    assert (status, headers["content-type"]) == (200, "application/json")
    assert json.loads(body) == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {
            "code": -32000,
            "message": "tool needs approval",
            "data": {"code": "egressguard_blocked", "status": 403},
        },
    }


@given(st.lists(st.one_of(st.integers(min_value=0, max_value=99), st.text(max_size=6)), max_size=5))
def test_locator_round_trips(steps: list[str | int]) -> None:
    """Every path of keys and indexes has one spelling that parses back to it."""
    assert parse_locator(format_locator(steps)) == steps


@given(st.lists(st.one_of(st.integers(min_value=0, max_value=10**6), st.text(max_size=60)), max_size=8))
def test_locator_steps_are_the_parsed_path(steps: list[str | int]) -> None:
    """``locator_steps`` reads a locator as ``parse_locator`` does, short (remembered) or long alike."""
    locator = format_locator(steps)
    assert locator_steps(locator) == tuple(steps) == tuple(parse_locator(locator))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"a": "plain \xc3\xa9 text"}', '{"a": "plain \u00e9 text"}'),
        (b"\xef\xbb\xbf" + b'{"a": "with a BOM"}', '{"a": "with a BOM"}'),
        (
            b'{"a": "one stray \xff byte in a long enough text"}',
            '{"a": "one stray \udcff byte in a long enough text"}',
        ),
        (b"\x80\x81\x82\x83" * 8, None),
        (b"text with a NUL \x00 byte", None),
        ('{"a": "utf-16"}'.encode("utf-16"), '{"a": "utf-16"}'),
    ],
)
def test_readable_text_fast_and_slow_paths_agree(body: bytes, expected: str | None) -> None:
    """Valid UTF-8 takes the strict decode; a body with stray bytes is still read, keeping each byte."""
    assert readable_text(body) == expected


DECODED_ONCE_CASES = [
    (OpenAIChat(), "openai_chat"),
    (OpenAIResponses(), "openai_responses"),
    (Anthropic(), "anthropic"),
    (Gemini("gemini-2.0-flash"), "gemini"),
    (MCP(), "mcp_tools_call"),
    (BedrockConverse(), "bedrock_converse"),
    (Generic(), "openai_chat"),
]


@pytest.mark.parametrize(("dialect", "name"), DECODED_ONCE_CASES)
def test_a_body_decoded_by_the_caller_reads_as_one_decoded_by_the_dialect(
    dialect: Dialect, name: str
) -> None:
    """Handing a dialect the body the caller decoded (with the values repeated keys shadow) gives the
    same view of the request and the response as letting it decode the body itself."""
    for body, parse in [
        (request_fixture(name), dialect.parse_request),
        (response_fixture(name), dialect.parse_response),
        (
            b'{"model": "a", "model": "b", "messages": [{"role": "user", "content": "hi"}]}',
            dialect.parse_request,
        ),
        (b"plain text, not JSON", dialect.parse_request),
        (b"plain text, not JSON", dialect.parse_response),
        (b"", dialect.parse_request),
    ]:
        assert parse(body, load_json_with_shadowed(body)) == parse(body), (name, body[:40])


GEMINI_CHUNKS = [
    {"candidates": [{"content": {"parts": [{"text": "Deleting the "}], "role": "model"}, "index": 0}]},
    {"candidates": [{"content": {"parts": [{"text": "branch now."}], "role": "model"}, "index": 0}]},
    {
        "candidates": [
            {
                "content": {"parts": [{"functionCall": {"name": "delete_branch", "args": {"name": "main"}}}]},
                "index": 0,
                "finishReason": "STOP",
            }
        ]
    },
]
REWRITTEN_BODIES = {
    **{name: (dialect, fixture(f"{name}_response.json")) for name, dialect in RESPONSES.items()},
    "gemini_array": (Gemini(), json.dumps(GEMINI_CHUNKS, indent=1).encode()),
}


def _first_text_changed(dialect: Dialect, body: bytes) -> Any:
    """A text map that changes the first text of the completion only (a redaction of one secret)."""
    texts = dialect.parse_response(body).text
    target = texts[0].text if texts else None
    return lambda text: text + " [checked]" if text == target else text


@pytest.mark.parametrize("name", REWRITTEN_BODIES)
@pytest.mark.parametrize("mapping", ["same", "first text", "upper"])
@pytest.mark.parametrize("drops", ["none", "unknown", "every call"])
@pytest.mark.parametrize("notice", [None, "Held."])
def test_a_rewrite_changes_the_body_exactly_when_its_document_changes(
    name: str, mapping: str, drops: str, notice: str | None
) -> None:
    """Whether a rewrite returns the upstream's bytes is decided exactly, for every dialect and the Gemini
    array: the body as sent when the rewritten document equals the one received (a map that changes
    nothing, drops that name no call of it), else the new encoding; deciding it on the caller's parse
    gives the same bytes and leaves that parse as it was."""
    dialect, body = REWRITTEN_BODIES[name]
    text_map = {
        "same": str,
        "first text": _first_text_changed(dialect, body),
        "upper": str.upper,
    }[mapping]
    calls = dialect.parse_response(body).tool_calls
    drop = {
        "none": set(),
        "unknown": {"call_unknown", "candidates[7].content.parts[0]"},
        "every call": {call.id or call.where for call in calls},
    }[drops]
    parsed = load_json_with_shadowed(body)
    before = json.dumps(parsed[0])
    rewritten = dialect.rewrite_response(body, text_map, drop, notice)
    assert dialect.rewrite_response(body, text_map, drop, notice, parsed) == rewritten
    assert json.dumps(parsed[0]) == before
    assert (rewritten is body) == (json.loads(rewritten) == json.loads(body))
    if rewritten is not body:
        assert dialect.rewrite_response(body, text_map, drop, notice, parsed) is not body
    after = dialect.parse_response(rewritten)
    assert after.tool_calls == ([] if drops == "every call" else calls)


def test_a_call_in_a_gemini_array_is_dropped_by_its_place_in_the_merged_response() -> None:
    """The calls of streamGenerateContent's JSON array are named as the merged response has them (a
    call's part counts the text parts merged before it): the chunk holding the named call loses it, the
    other chunks keep theirs, and the notice ends the last chunk."""
    chunks = [*GEMINI_CHUNKS[:2], GEMINI_CHUNKS[2], GEMINI_CHUNKS[2]]
    body = json.dumps(chunks).encode()
    dialect = Gemini()
    first, second = dialect.parse_response(body).tool_calls
    assert (first.where, second.where) == ("candidates[0].content.parts[1]", "candidates[0].content.parts[2]")
    rewritten = json.loads(dialect.rewrite_response(body, str, {second.where}, "Held."))
    assert [len(chunk["candidates"][0]["content"]["parts"]) for chunk in rewritten] == [1, 1, 1, 1]
    assert "functionCall" in rewritten[2]["candidates"][0]["content"]["parts"][0]
    assert rewritten[3]["candidates"][0]["content"]["parts"] == [{"text": "Held."}]
    assert [call.where for call in dialect.parse_response(json.dumps(rewritten).encode()).tool_calls] == [
        first.where
    ]


@pytest.mark.parametrize(
    "body",
    [
        b"\x00{" + b"ghp_Qw3rTy7uIo9pAs2dFg4hJk6lZx8cVb1nMq5W",
        b"A\x00" + b"AKIAQWERTY234567ABCD",
        b"\x00\x00\x00[abcd",
    ],
)
def test_bytes_read_as_utf16_only_by_their_nuls_are_binary_unless_json(body: bytes) -> None:
    """JSON's encoding rule reads NULs in the first bytes as UTF-16 or UTF-32: bytes that are no JSON in
    that reading are binary (their runs are read), not text of CJK letters hiding the ASCII in them."""
    assert readable_text(body) is None
    assert readable_text('{"a": "b"}'.encode("utf-16-le")) == '{"a": "b"}'
    assert readable_text("plain".encode("utf-16")) == "plain"


def test_a_tool_calls_arguments_are_read_in_runs_of_fields_next_to_each_other() -> None:
    """Each run of two to four values in document order, nested objects and lists read through, that may
    be pieces of a key (no white space), by locator and span; a value of prose or another type ends a
    run."""
    arguments = {"a": "AKIAQYLP", "b": "MN5H", "note": "two words", "c": "x", "d": ["ghp_R7m", "Qx9", 3]}
    assert sibling_strings(arguments, ("arguments",)) == [
        [("arguments.a", 0, 8), ("arguments.b", 0, 4)],
        [("arguments.c", 0, 1), ("arguments.d[0]", 0, 7)],
        [("arguments.c", 0, 1), ("arguments.d[0]", 0, 7), ("arguments.d[1]", 0, 3)],
        [("arguments.d[0]", 0, 7), ("arguments.d[1]", 0, 3)],
    ]
