"""Amazon Bedrock's Converse API (``/model/<id>/converse``, ``/converse-stream``): one message format for
every model Bedrock serves, and Amazon Nova's own on ``/model/<id>/invoke``. A content block is keyed by
its kind (``{"text": ...}``, ``{"toolUse": ...}``, ``{"toolResult": ...}``, ``{"document": ...}``), a
file travels in base64 (``source.bytes``) and the answer is ``output.message``. ``/converse-stream`` and
``/invoke-with-response-stream`` answer in AWS's binary event-stream framing, not SSE.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import Any

from proxy.dialects.attachments import add_file, bucket_address, read_as, read_file
from proxy.dialects.base import (
    Dialect,
    ErrorResponse,
    as_dict,
    as_int,
    as_list,
    as_position,
    as_str,
    canonical_arguments,
    entry,
    reparse_arguments,
    require_object,
)
from proxy.dialects.locator import Step, format_locator, parse_locator, walk_strings
from proxy.dialects.schema import content_texts, schema_descriptions
from proxy.dialects.stream import (
    BlockCallSession,
    GrowingText,
    Path,
    StreamFilters,
    StreamSession,
    encode_json,
    rewritten,
    synthesised,
)
from proxy.exchange import (
    Completion,
    DeclaredTool,
    Fetch,
    Part,
    RequestView,
    Source,
    TextSegment,
    ToolCall,
    Usage,
)
from proxy.wire.sse import SSEEvent

ROLE_SOURCES = {"user": Source.USER, "assistant": Source.ASSISTANT}
ANSWER = "output.message.content"
"""Where the answer's content blocks stand."""
MEDIA_BLOCKS = ("image", "document", "video")
"""The content blocks whose ``source`` may give a file by its place in S3 (``s3Location``)."""
OFFLINE_SYSTEM_TOOLS = frozenset({"nova_code_interpreter"})
"""The tools the API runs itself (``systemTool``) that reach no address the agent names: any other one
(``nova_grounding``, Nova's web search) may fetch what the model picks."""
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
        # converse-stream: its events' types (their ``:event-type``) and the index its block events carry
        "messageStart",
        "contentBlockStart",
        "contentBlockDelta",
        "contentBlockStop",
        "contentBlockIndex",
        "messageStop",
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
    text, reasoning, cited text, a document (its name and context; its text given as text, as content
    blocks or in base64) and, in a tool's result, every string of its JSON."""

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
    for kind in MEDIA_BLOCKS:
        location = as_dict(as_dict(block.get(kind)).get("source")).get("s3Location")
        if location is not None:
            where = format_locator((*steps, kind, "source", "s3Location", "uri"))
            address = bucket_address(as_dict(location).get("uri"), "s3")
            view.fetches.append(Fetch(where, address, f"{kind} in S3"))
    document = block.get("document")
    if not isinstance(document, dict):
        return
    read_from = read_as(source)
    document_source = as_dict(document.get("source"))
    # AWS warns that a document's name reaches the model too, open to injection as its text is.
    add(document.get("name"), "document", "name", read_from=read_from)
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

    def __init__(
        self, model_hint: str | None = None, streaming: bool = False, *, framing: str | None = None
    ) -> None:
        """``framing``: how AWS's event stream carries the streamed answer's events (``AwsFraming``):
        ``converse-stream``'s each in a message of its name, Nova's own on
        ``invoke-with-response-stream`` each in a chunk, as an object keyed by its name."""
        super().__init__(model_hint)
        self.streaming = streaming
        self.aws_framing = framing

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
            system_tool = as_str(as_dict(tool.get("systemTool")).get("name"))
            name = as_str(spec.get("name")) or system_tool
            if name is None:
                continue  # a cachePoint
            view.tools_offered.append(name)
            if system_tool is not None:
                where = f"toolConfig.tools[{position}].systemTool"
                view.declared_tools.append(DeclaredTool(system_tool, where))
                if system_tool.lower() not in OFFLINE_SYSTEM_TOOLS:
                    view.fetches.append(Fetch(where, None, system_tool))
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
        return ConverseStreamSession(self.model_hint, filters)


_TEXT_DELTAS = {"text": "text", "reasoningContent": "reasoningContent.reasoningText.text"}
"""The deltas that carry text, and where that text lands in the answer's block."""


@dataclass(slots=True)
class _Block:
    texts: dict[str, GrowingText] = field(default_factory=dict)
    """By the delta's key (``_TEXT_DELTAS``), the text streamed so far."""
    call: ToolCall | None = None
    partial_input: GrowingText | None = None


class ConverseStreamSession(BlockCallSession):
    """``/converse-stream``'s events, each read out of AWS's event-stream framing as an SSE event named by
    its ``:event-type``: ``contentBlockStart`` names a tool call (its input follows in ``toolUse`` deltas,
    held until ``contentBlockStop`` where the gate asks), ``contentBlockDelta`` carries text, reasoning or
    input, ``messageStop`` the stop reason and ``metadata`` the usage. A text block has no start."""

    CASED_KEYS = CONVERSE_CASED_KEYS

    def __init__(self, model_hint: str | None, filters: StreamFilters | None = None) -> None:
        super().__init__(filters)
        self._model = model_hint
        self._stop_reason: str | None = None
        self._usage = Usage()
        self._blocks: dict[int, _Block] = {}
        self._dropped: set[int] = set()
        self._sealed: set[int] = set()
        """Calls sent whole after being held: nothing more is added to their input."""
        self._released_calls = 0

    @property
    def completion(self) -> Completion:
        completion = Completion(model=self._model, usage=self._usage, stop_reason=self._stop_reason)
        for index in sorted(self._blocks):
            block = self._blocks[index]
            for key, text in block.texts.items():
                if text:
                    where = f"{ANSWER}[{index}].{_TEXT_DELTAS[key]}"
                    completion.text.append(TextSegment(text.text, where, reasoning=key != "text"))
            if block.call is not None:
                completion.tool_calls.append(_block_call(block))
        return completion

    def _observe(self, event: SSEEvent, payload: Any) -> None:
        body = as_dict(payload)
        index = as_position(body.get("contentBlockIndex"))
        if event.type == "contentBlockStart" and index is not None:
            tool_use = as_dict(body.get("start")).get("toolUse")
            if isinstance(tool_use, dict):
                self._blocks[index] = _Block(call=tool_use_call(tool_use, f"{ANSWER}[{index}]"))
        elif event.type == "contentBlockDelta" and index is not None:
            block = entry(self._blocks, index, _Block)
            for key, text in _delta_texts(as_dict(body.get("delta"))):
                entry(block.texts, key, GrowingText).add(text)
            tool_input = as_str(as_dict(as_dict(body.get("delta")).get("toolUse")).get("input"))
            if tool_input is not None:
                block.partial_input = block.partial_input or GrowingText()
                block.partial_input.add(tool_input)
        elif event.type == "messageStop":
            self._stop_reason = as_str(body.get("stopReason")) or self._stop_reason
        elif event.type == "metadata":
            self._usage = _usage(body.get("usage"))
        elif event.type.endswith("Exception"):
            self.notes.append("upstream sent an error event")

    def _transform(self, event: SSEEvent, payload: Any) -> list[bytes]:
        body = as_dict(payload)
        if event.type == "contentBlockStart":
            return self._block_start(event, body)
        if event.type == "messageStop":
            before = self._end_of_stream()
            if body.get("stopReason") == "tool_use" and self._dropped and not self._released_calls:
                body["stopReason"] = "end_turn"
                return [*before, rewritten(event, body)]
            return [*before, event.raw]
        if event.type not in ("contentBlockDelta", "contentBlockStop"):
            return [event.raw]
        index = as_position(body.get("contentBlockIndex"))
        if index is None:
            return self._unplaced(event.type)
        if index in self._held:
            return self._keep_held(index, event, body, stops=event.type == "contentBlockStop")
        if index in self._dropped or (index in self._sealed and event.type == "contentBlockDelta"):
            return []
        if event.type == "contentBlockStop":
            return [*self._end_block(index), event.raw]
        return self._delta(event, body, index)

    def _delta(self, event: SSEEvent, body: dict[str, Any], index: int) -> list[bytes]:
        delta = as_dict(body.get("delta"))
        released_any = False
        changed = False
        for key, text in _delta_texts(delta):
            released = self._filter_text(f"{ANSWER}[{index}].{_TEXT_DELTAS[key]}", text)
            holder = delta if key == "text" else as_dict(delta[key])
            holder["text"] = released
            released_any = released_any or bool(released)
            changed = changed or released != text
        tool_use = as_dict(delta.get("toolUse"))
        tool_input = as_str(tool_use.get("input"))
        if tool_input is not None:
            block = self._blocks.get(index)
            if block is None or block.call is None:
                # Input for no call the stream named: a client joins it to no call the gate saw.
                return self._unplaced(event.type)
            if self.filters.argument_filter is not None:
                released = self._filter_arguments(f"{ANSWER}[{index}]", tool_input)
                tool_use["input"] = released
                changed = changed or released != tool_input
            released_any = released_any or bool(tool_use["input"])
        if not released_any:
            return []
        return [rewritten(event, body)] if changed else [self._as_sent(event, body)]

    def _block_start(self, event: SSEEvent, body: dict[str, Any]) -> list[bytes]:
        tool_use = as_dict(body.get("start")).get("toolUse")
        if not isinstance(tool_use, dict):
            return [event.raw]
        index = as_position(body.get("contentBlockIndex"))
        if index is None:
            return self._unplaced(event.type)
        call = tool_use_call(tool_use, f"{ANSWER}[{index}]")
        instead = self._gate_block(index, call, event, body)
        if instead is not None:
            return instead
        self._released_calls += 1
        return [event.raw]

    def _drop_block(self, index: int, call: ToolCall) -> list[bytes]:
        """The call's block is not sent; its notice, if any, is a text block at its place."""
        self._dropped.add(index)
        notice = self._notice(call)
        if not notice:
            return []
        return [
            synthesised({"contentBlockIndex": index, "delta": {"text": notice}}, "contentBlockDelta"),
            synthesised({"contentBlockIndex": index}, "contentBlockStop"),
        ]

    def _complete_held(self, index: int) -> list[bytes]:
        """A held call stopped (or the message ended): decided on its whole input, its events are sent as
        they came, or the block is dropped for its notice."""
        held = self._held.pop(index)
        block = self._blocks.get(index)
        if block is None or block.call is None:
            start = as_dict(as_dict(held[0][1].get("start")).get("toolUse"))
            call = tool_use_call(start, f"{ANSWER}[{index}]")
        else:
            call = _block_call(block)
        if self._decide(call, complete=True) == "drop":
            return self._drop_block(index, call)
        self._released_calls += 1
        output = [piece for event, body in held[1:] for piece in self._transformed(event, body, changed=True)]
        self._sealed.add(index)
        opening, opening_body = held[0]
        return [rewritten(opening, opening_body), *output]  # as the residual scan left it

    def _end_block(self, index: int) -> list[bytes]:
        """Deltas carrying what the block's filters still held, before the block stops."""
        output = []
        for key, where in _TEXT_DELTAS.items():
            flushed = self._close_channel(f"{ANSWER}[{index}].{where}")
            if flushed:
                delta: dict[str, Any] = {"text": flushed} if key == "text" else {key: {"text": flushed}}
                output.append(synthesised({"contentBlockIndex": index, "delta": delta}, "contentBlockDelta"))
        flushed = self._close_arguments(f"{ANSWER}[{index}]")
        if flushed:
            delta = {"toolUse": {"input": flushed}}
            output.append(synthesised({"contentBlockIndex": index, "delta": delta}, "contentBlockDelta"))
        return output

    def _handled(self, event: SSEEvent, payload: Any) -> Collection[Path]:
        body = as_dict(payload)
        if event.type != "contentBlockDelta" or as_position(body.get("contentBlockIndex")) is None:
            return ()
        delta = as_dict(body.get("delta"))
        handled: set[Path] = {
            ("delta", "text") if key == "text" else ("delta", key, "text") for key, _ in _delta_texts(delta)
        }
        if isinstance(as_dict(delta.get("toolUse")).get("input"), str):
            handled.add(("delta", "toolUse", "input"))
        return handled

    def _end_of_stream(self) -> list[bytes]:
        output = [piece for index in list(self._held) for piece in self._complete_held(index)]
        places = {
            int(parse_locator(where)[3])
            for where in [*self._open_argument_channels(), *self._open_channels()]
        }
        for index in sorted(places):
            output.extend(self._end_block(index))
        return output


def _delta_texts(delta: dict[str, Any]) -> list[tuple[str, str]]:
    """The texts a delta carries, by their key in ``_TEXT_DELTAS``."""
    texts = []
    if isinstance(delta.get("text"), str):
        texts.append(("text", delta["text"]))
    reasoning = as_dict(delta.get("reasoningContent")).get("text")
    if isinstance(reasoning, str):
        texts.append(("reasoningContent", reasoning))
    return texts


def _block_call(block: _Block) -> ToolCall:
    """A toolUse block's call, with the input its deltas streamed."""
    assert block.call is not None
    if block.partial_input is None:
        return block.call
    return replace(block.call, arguments=reparse_arguments(block.partial_input.text))
