"""Amazon Bedrock's Converse API: its route, each place of a request the model reads, the answer's texts
and tool calls, a withheld call, the error shape, and the keys a reader ignoring case reads otherwise."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from proxy.dialects import Anthropic, BedrockConverse, detect
from proxy.dialects.readings import folded_keys
from proxy.exchange import Attachment, Source
from tests.dialect_fixtures import request_fixture, response_fixture

PDF = b"%PDF-1.7\n" + bytes(range(256)) * 4


def encoded(content: bytes) -> str:
    return base64.b64encode(content).decode()


def request_of(*blocks: dict[str, Any], role: str = "user") -> bytes:
    return json.dumps({"messages": [{"role": role, "content": list(blocks)}]}).encode()


def test_the_model_and_streaming_come_from_the_route() -> None:
    """A model id may be an inference profile's ARN, percent-encoded as the SDKs send it; ``invoke`` stays
    the model provider's own format."""
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-v2:0"
    route = "/model/" + arn.replace(":", "%3A").replace("/", "%2F") + "/converse-stream"
    dialect = detect("POST", route, "application/json", b"{}")
    assert isinstance(dialect, BedrockConverse)
    view = dialect.parse_request(request_of({"text": "hi"}))
    assert (view.dialect, view.model, view.stream) == ("bedrock_converse", arn, True)
    plain = detect("POST", "/model/amazon.nova-lite-v1%3A0/converse", None, b"{}")
    assert (plain.parse_request(b"{}").model, plain.parse_request(b"{}").stream) == (
        "amazon.nova-lite-v1:0",
        False,
    )
    invoke = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke"
    assert isinstance(detect("POST", invoke, None, b'{"anthropic_version": "bedrock-2023-05-31"}'), Anthropic)


NOVA_BODY = {
    "schemaVersion": "messages-v1",
    "system": [{"text": "You are terse."}],
    "messages": [{"role": "user", "content": [{"text": "hi"}]}],
    "inferenceConfig": {"max_new_tokens": 64, "top_p": 0.9},
}


@pytest.mark.parametrize(
    ("model", "body", "expected"),
    [
        ("us.amazon.nova-pro-v1%3A0", {}, "bedrock_converse"),
        (
            "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Acustom-model%2Fnova-ft",
            NOVA_BODY,
            "bedrock_converse",
        ),
        (
            "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Acustom-model%2Fnova-ft",
            {"prompt": "hi"},
            "generic",
        ),
        ("meta.llama3-70b-instruct-v1%3A0", {"prompt": "hi", "max_gen_len": 64}, "generic"),
    ],
)
def test_amazon_nova_on_invoke_is_read_as_converse(model: str, body: dict[str, Any], expected: str) -> None:
    """Nova's own body on ``invoke`` is Converse's (``schemaVersion: messages-v1``): known by its model id,
    or by that key where the id is a custom model's ARN; other models' bodies are read as any body."""
    for action, streaming in (("invoke", False), ("invoke-with-response-stream", True)):
        dialect = detect("POST", f"/model/{model}/{action}", "application/json", json.dumps(body).encode())
        assert dialect.name == expected
        if expected == "bedrock_converse":
            view = dialect.parse_request(json.dumps(NOVA_BODY).encode())
            assert view.stream == streaming
            assert [(part.source, part.text) for part in view.parts] == [
                (Source.SYSTEM, "You are terse."),
                (Source.USER, "hi"),
            ]
    assert folded_keys(json.dumps(NOVA_BODY), BedrockConverse.CASED_KEYS) is None


def test_every_place_of_a_request_the_model_reads_is_a_part_of_its_source() -> None:
    """System blocks and a guardrail's text are the system's; a text document is a retrieved document; a
    tool result's JSON and text are the named tool's result; tool descriptions and prompt variables are
    read; a toolUse in the history is a call; an image is not read."""
    view = BedrockConverse().parse_request(request_fixture("bedrock_converse"))
    call_id = "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q"
    assert [(part.source, part.where) for part in view.parts] == [
        (Source.SYSTEM, "system[0].text"),
        (Source.SYSTEM, "system[1].guardContent.text.text"),
        (Source.USER, "messages[0].content[0].text"),
        (Source.RETRIEVED_DOCUMENT, "messages[0].content[1].document.name"),
        (Source.RETRIEVED_DOCUMENT, "messages[0].content[1].document.source.bytes"),
        (Source.ASSISTANT, "messages[1].content[0].reasoningContent.reasoningText.text"),
        (Source.TOOL_RESULT, "messages[2].content[0].toolResult.content[0].json.status"),
        (Source.TOOL_RESULT, "messages[2].content[0].toolResult.content[0].json.carrier"),
        (Source.TOOL_RESULT, "messages[2].content[0].toolResult.content[1].text"),
        (Source.TOOL_DESCRIPTION, "toolConfig.tools[0].toolSpec.description"),
        (
            Source.TOOL_DESCRIPTION,
            "toolConfig.tools[0].toolSpec.inputSchema.json.properties.order.description",
        ),
        (Source.USER, "promptVariables.customer.text"),
    ]
    assert view.parts[4].text == "Order 1234 ships on Monday." and view.parts[4].encoded == ""
    results = [part for part in view.parts if part.source is Source.TOOL_RESULT]
    assert {(part.tool_name, part.tool_call_id) for part in results} == {("lookup_order", call_id)}
    assert [(call.id, call.name, call.arguments) for call in view.tool_calls] == [
        (call_id, "lookup_order", '{"order":1234}')
    ]
    assert view.tools_offered == ["lookup_order"] and view.attachments == []


def test_a_document_a_tool_returned_is_its_result() -> None:
    """A document in a toolResult is read as the tool's result: a text one as text, a PDF as binary
    content, bytes that are no base64 as undecodable."""
    content = [
        {"document": {"format": "md", "name": "readme", "source": {"bytes": encoded(b"# Notes\nship it")}}},
        {"document": {"format": "pdf", "name": "invoice", "source": {"bytes": encoded(PDF)}}},
        {"document": {"format": "txt", "name": "broken", "source": {"bytes": "not base64!"}}},
    ]
    view = BedrockConverse().parse_request(
        request_of({"toolResult": {"toolUseId": "t1", "content": content, "status": "success"}})
    )
    assert [(part.source, part.text, part.tool_call_id) for part in view.parts] == [
        (Source.TOOL_RESULT, "readme", "t1"),
        (Source.TOOL_RESULT, "# Notes\nship it", "t1"),
        (Source.TOOL_RESULT, "invoice", "t1"),
        (Source.TOOL_RESULT, "broken", "t1"),
    ]
    pdf, broken = view.attachments
    assert isinstance(pdf, Attachment) and pdf.content == PDF and pdf.source is Source.TOOL_RESULT
    assert (
        broken.undecodable
        and broken.where == "messages[0].content[0].toolResult.content[2].document.source.bytes"
    )


def test_a_document_given_as_text_or_content_blocks_is_read() -> None:
    """A document's text may stand in its source (``text``, ``content`` blocks) and beside it
    (``name``, ``context``): each is a retrieved document the model reads."""
    document = {
        "format": "txt",
        "name": "policy",
        "context": "Company policy",
        "source": {"text": "Refunds within 30 days.", "content": [{"text": "No refunds on sale items."}]},
    }
    view = BedrockConverse().parse_request(request_of({"document": document}))
    assert [(part.source, part.where, part.text) for part in view.parts] == [
        (Source.RETRIEVED_DOCUMENT, "messages[0].content[0].document.name", "policy"),
        (Source.RETRIEVED_DOCUMENT, "messages[0].content[0].document.context", "Company policy"),
        (Source.RETRIEVED_DOCUMENT, "messages[0].content[0].document.source.text", "Refunds within 30 days."),
        (
            Source.RETRIEVED_DOCUMENT,
            "messages[0].content[0].document.source.content[0].text",
            "No refunds on sale items.",
        ),
    ]


def test_the_answer_gives_its_texts_its_call_usage_and_stop_reason() -> None:
    """Text and reasoning are the completion's (reasoning marked so), a toolUse is a call at its block,
    and the model is the route's."""
    completion = BedrockConverse(model_hint="amazon.nova-pro-v1:0").parse_response(
        response_fixture("bedrock_converse")
    )
    assert [(segment.where, segment.reasoning) for segment in completion.text] == [
        ("output.message.content[0].reasoningContent.reasoningText.text", True),
        ("output.message.content[1].text", False),
    ]
    (call,) = completion.tool_calls
    assert (call.id, call.name, call.where) == ("tooluse_Xk2a", "cancel_order", "output.message.content[2]")
    assert json.loads(call.arguments) == {"order": 1234, "reason": "customer asked"}
    assert (completion.model, completion.stop_reason) == ("amazon.nova-pro-v1:0", "tool_use")
    assert (completion.usage.tokens_in, completion.usage.tokens_out) == (412, 58)


def test_cited_text_in_an_answer_is_read() -> None:
    """An answer citing documents gives its text in ``citationsContent``: read as the answer's text."""
    cited = {"citationsContent": {"content": [{"text": "Refunds take 30 days."}], "citations": []}}
    body = json.dumps({"output": {"message": {"role": "assistant", "content": [cited]}}}).encode()
    (segment,) = BedrockConverse().parse_response(body).text
    assert (segment.where, segment.text) == (
        "output.message.content[0].citationsContent.content[0].text",
        "Refunds take 30 days.",
    )


@pytest.mark.parametrize(("dropped", "stop_reason"), [({"tooluse_Xk2a"}, "end_turn"), (set(), "tool_use")])
def test_a_withheld_call_leaves_the_answer_for_its_notice(dropped: set[str], stop_reason: str) -> None:
    """The dropped toolUse block goes, the notice is a text block, and the stop reason asks for a tool
    only while a call is left."""
    body = BedrockConverse().rewrite_response(response_fixture("bedrock_converse"), str, dropped, "Held.")
    document = json.loads(body)
    content = document["output"]["message"]["content"]
    assert ("toolUse" in content[2]) == (not dropped) and content[-1] == {"text": "Held."}
    assert document["stopReason"] == stop_reason


def test_the_error_is_in_aws_shape() -> None:
    """The AWS SDKs read the error's type from ``x-amzn-ErrorType`` and its text from ``message``."""
    dialect = BedrockConverse()
    status, headers, body = dialect.error_response(403, "egressguard blocked this request", "x")
    assert (status, headers["x-amzn-errortype"]) == (403, "AccessDeniedException")
    assert json.loads(body) == {"message": "egressguard blocked this request"}
    assert dialect.error_response(502, "m", "x")[1]["x-amzn-errortype"] == "InternalServerException"


def test_a_key_in_lower_case_is_read_as_a_reader_ignoring_case_reads_it() -> None:
    """Bodies in the API's own spelling are not read twice; ``tooluse`` is a toolUse to a reader
    ignoring case, so that reading sees the call too."""
    for body in (request_fixture("bedrock_converse"), response_fixture("bedrock_converse")):
        assert folded_keys(body.decode(), BedrockConverse.CASED_KEYS) is None
    block = {"tooluse": {"toolUseId": "t", "name": "delete_customer", "input": {}}}
    text = json.dumps({"output": {"message": {"content": [block]}}})
    folded = folded_keys(text, BedrockConverse.CASED_KEYS)
    assert folded is not None
    document, folds = folded
    assert [call.name for call in BedrockConverse()._completion_from(document).tool_calls] == [
        "delete_customer"
    ]
    assert folds == ["toolUse"]
    assert BedrockConverse().parse_response(text.encode()).tool_calls == []


def test_an_image_and_a_cache_point_hold_nothing_to_read() -> None:
    """Images (media) and cache points are not text: a request of them alone has no part."""
    view = BedrockConverse().parse_request(
        request_of(
            {"image": {"format": "png", "source": {"bytes": encoded(b"\x89PNG")}}},
            {"cachePoint": {"type": "default"}},
        )
    )
    assert (view.parts, view.attachments) == ([], [])
