"""Amazon Bedrock's Converse API (``/model/<id>/converse``, ``/converse-stream``): one message format for
every model Bedrock serves, and Amazon Nova's own on ``/model/<id>/invoke``. A content block is keyed by
its kind (``{"text": ...}``, ``{"toolUse": ...}``, ``{"toolResult": ...}``, ``{"document": ...}``), a
file travels in base64 (``source.bytes``) and the answer is ``output.message``. ``/converse-stream`` and
``/invoke-with-response-stream`` answer in AWS's binary event-stream framing, not SSE.
"""

from __future__ import annotations

from typing import Any

from proxy.dialects.attachments import add_file, read_as, read_file
from proxy.dialects.base import (
    Dialect,
    ErrorResponse,
    as_dict,
    as_int,
    as_list,
    as_str,
    canonical_arguments,
    require_object,
)
from proxy.dialects.generic import Generic
from proxy.dialects.locator import Step, format_locator, parse_locator, walk_strings
from proxy.dialects.schema import content_texts, schema_descriptions
from proxy.dialects.stream import StreamFilters, StreamSession, encode_json
from proxy.exchange import Completion, Part, RequestView, Source, TextSegment, ToolCall, Usage

ROLE_SOURCES = {"user": Source.USER, "assistant": Source.ASSISTANT}
ANSWER = "output.message.content"
"""Where the answer's content blocks stand."""
_TEXT_DOCUMENTS = {"txt": "text/plain", "md": "text/markdown", "html": "text/html", "csv": "text/csv"}
"""A document's ``format`` that says it is text, as the media type a file's reader takes."""
_ERROR_TYPES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    503: "ServiceUnavailableException",
}

CONVERSE_CASED_KEYS = frozenset(
    {
        # Requests
        "schemaVersion",
        "inferenceConfig",
        "maxTokens",
        "topP",
        "stopSequences",
        "toolConfig",
        "toolSpec",
        "inputSchema",
        "toolChoice",
        "systemTool",
        "guardrailConfig",
        "guardrailIdentifier",
        "guardrailVersion",
        "streamProcessingMode",
        "additionalModelRequestFields",
        "additionalModelResponseFieldPaths",
        "promptVariables",
        "requestMetadata",
        "performanceConfig",
        "serviceTier",
        # Content blocks, both ways
        "toolUse",
        "toolUseId",
        "toolResult",
        "guardContent",
        "reasoningContent",
        "reasoningText",
        "redactedContent",
        "cachePoint",
        "citationsContent",
        "s3Location",
        "bucketOwner",
        "sourceContent",
        "documentChar",
        "documentPage",
        "documentChunk",
        "documentIndex",
        # Answers
        "stopReason",
        "inputTokens",
        "outputTokens",
        "totalTokens",
        "cacheReadInputTokens",
        "cacheWriteInputTokens",
        "latencyMs",
        "additionalModelResponseFields",
    }
)
"""The camelCase keys of the Converse API: any other key with a capital is read again as a reader that
ignores case reads it, as is one of these in lower case (``tooluse``)."""


def tool_use_call(tool_use: dict[str, Any], where: str) -> ToolCall:
    """The call a ``toolUse`` block makes; ``where`` is the content block holding it."""
    return ToolCall(
        id=as_str(tool_use.get("toolUseId")),
        name=as_str(tool_use.get("name")) or "",
        arguments=canonical_arguments(tool_use.get("input")),
        where=where,
    )


def _read_block(
    view: RequestView,
    block: dict[str, Any],
    steps: tuple[Step, ...],
    source: Source,
    tool_name: str | None = None,
    call_id: str | None = None,
) -> None:
    """Adds to ``view`` what the model reads of one content block at ``steps``: its text, a guardrail's
    text, reasoning, cited text, a document (given as text, as content blocks or in base64) and, in a
    tool's result, every string of its JSON."""

    def add(text: Any, *inner: Step, read_from: Source = source) -> None:
        if isinstance(text, str):
            view.parts.append(Part(read_from, text, format_locator((*steps, *inner)), tool_name, call_id))

    add(block.get("text"), "text")
    add(as_dict(as_dict(block.get("guardContent")).get("text")).get("text"), "guardContent", "text", "text")
    reasoning = as_dict(as_dict(block.get("reasoningContent")).get("reasoningText"))
    add(reasoning.get("text"), "reasoningContent", "reasoningText", "text")
    cited = format_locator((*steps, "citationsContent", "content"))
    for where, text in content_texts(as_dict(block.get("citationsContent")).get("content"), cited):
        view.parts.append(Part(source, text, where, tool_name, call_id))
    if "json" in block:
        for where, text in walk_strings(block["json"], (*steps, "json")):
            view.parts.append(Part(source, text, where, tool_name, call_id))
    document = block.get("document")
    if not isinstance(document, dict):
        return
    read_from = read_as(source)
    document_source = as_dict(document.get("source"))
    add(document.get("context"), "document", "context", read_from=read_from)
    add(document_source.get("text"), "document", "source", "text", read_from=read_from)
    contents = format_locator((*steps, "document", "source", "content"))
    for where, text in content_texts(document_source.get("content"), contents):
        view.parts.append(Part(read_from, text, where, tool_name, call_id))
    media_type = _TEXT_DOCUMENTS.get((as_str(document.get("format")) or "").lower())
    where = format_locator((*steps, "document", "source", "bytes"))
    add_file(view, read_file(document_source.get("bytes"), where, source, tool_name, call_id, media_type))


def _usage(value: Any) -> Usage:
    usage = as_dict(value)
    return Usage(as_int(usage.get("inputTokens")), as_int(usage.get("outputTokens")))


class BedrockConverse(Dialect):
    name = "bedrock_converse"
    CASED_KEYS = CONVERSE_CASED_KEYS

    def __init__(self, model_hint: str | None = None, streaming: bool = False) -> None:
        super().__init__(model_hint)
        self.streaming = streaming

    def _request_from(self, document: Any) -> RequestView:
        body = require_object(document)
        view = RequestView(dialect=self.name, model=self.model_hint, stream=self.streaming)
        for position, raw_block in enumerate(as_list(body.get("system"))):
            _read_block(view, as_dict(raw_block), ("system", position), Source.SYSTEM)
        names_by_call_id: dict[str, str] = {}
        for position, raw_message in enumerate(as_list(body.get("messages"))):
            message = as_dict(raw_message)
            source = ROLE_SOURCES.get(as_str(message.get("role")) or "", Source.USER)
            for index, raw_block in enumerate(as_list(message.get("content"))):
                block = as_dict(raw_block)
                steps: tuple[Step, ...] = ("messages", position, "content", index)
                tool_use = block.get("toolUse")
                if isinstance(tool_use, dict):
                    call = tool_use_call(tool_use, format_locator(steps))
                    view.tool_calls.append(call)
                    if call.id is not None:
                        names_by_call_id[call.id] = call.name
                result = block.get("toolResult")
                if isinstance(result, dict):
                    call_id = as_str(result.get("toolUseId"))
                    name = names_by_call_id.get(call_id or "")
                    for inner, raw_inner in enumerate(as_list(result.get("content"))):
                        inner_steps = (*steps, "toolResult", "content", inner)
                        _read_block(view, as_dict(raw_inner), inner_steps, Source.TOOL_RESULT, name, call_id)
                _read_block(view, block, steps, source)
        for position, raw_tool in enumerate(as_list(as_dict(body.get("toolConfig")).get("tools"))):
            tool = as_dict(raw_tool)
            spec = as_dict(tool.get("toolSpec"))
            name = as_str(spec.get("name")) or as_str(as_dict(tool.get("systemTool")).get("name"))
            if name is None:
                continue  # a cachePoint
            view.tools_offered.append(name)
            described = {key: spec[key] for key in ("description", "inputSchema") if key in spec}
            for where, text in schema_descriptions(described, ("toolConfig", "tools", position, "toolSpec")):
                view.parts.append(Part(Source.TOOL_DESCRIPTION, text, where, tool_name=name))
        for variable, value in as_dict(body.get("promptVariables")).items():
            prompt = as_str(as_dict(value).get("text"))
            if prompt is not None:
                where = format_locator(("promptVariables", variable, "text"))
                view.parts.append(Part(Source.USER, prompt, where))
        return view

    def _completion_from(self, document: Any) -> Completion:
        body = require_object(document)
        completion = Completion(
            model=self.model_hint, stop_reason=as_str(body.get("stopReason")), usage=_usage(body.get("usage"))
        )
        content = as_list(as_dict(as_dict(body.get("output")).get("message")).get("content"))
        for index, raw_block in enumerate(content):
            block = as_dict(raw_block)
            where = f"{ANSWER}[{index}]"
            tool_use = block.get("toolUse")
            if isinstance(tool_use, dict):
                completion.tool_calls.append(tool_use_call(tool_use, where))
            text = as_str(block.get("text"))
            if text:
                completion.text.append(TextSegment(text, f"{where}.text"))
            reasoning = as_str(
                as_dict(as_dict(block.get("reasoningContent")).get("reasoningText")).get("text")
            )
            if reasoning:
                completion.text.append(
                    TextSegment(reasoning, f"{where}.reasoningContent.reasoningText.text", reasoning=True)
                )
            cited = as_dict(block.get("citationsContent")).get("content")
            for text_where, cited_text in content_texts(cited, f"{where}.citationsContent.content"):
                if cited_text:
                    completion.text.append(TextSegment(cited_text, text_where))
        return completion

    def _drop_calls(self, document: Any, dropped: list[ToolCall], notice: str | None) -> None:
        removed = {parse_locator(call.where)[-1] for call in dropped}
        message = as_dict(as_dict(document.get("output")).get("message"))
        content = [
            block for index, block in enumerate(as_list(message.get("content"))) if index not in removed
        ]
        if notice is not None:
            content.append({"text": notice})
        message["content"] = content
        if document.get("stopReason") == "tool_use" and not any(
            "toolUse" in as_dict(block) for block in content
        ):
            document["stopReason"] = "end_turn"

    def error_response(self, status: int, message: str, code: str) -> ErrorResponse:
        """AWS's JSON error: the SDKs take the error's type from ``x-amzn-ErrorType`` and its text from
        ``message``."""
        error_type = _ERROR_TYPES.get(
            status, "InternalServerException" if status >= 500 else "ValidationException"
        )
        headers = {"content-type": "application/json", "x-amzn-errortype": error_type}
        return status, headers, encode_json({"message": message})

    def stream_session(self, filters: StreamFilters | None = None) -> StreamSession:
        """Converse streams in AWS's event-stream framing, never SSE: an SSE answer on its route is read
        as any event stream is, every string of each event and each call by its shape."""
        return Generic().stream_session(filters)
