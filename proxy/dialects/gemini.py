"""Google Gemini ``models/<m>:generateContent`` and ``:streamGenerateContent`` (``alt=sse`` or a JSON
array). The REST API accepts camelCase and snake_case field names; both are read.

A streamed response is equivalent to one response whose consecutive text parts are merged: locators of
a streamed completion point into that merged response.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from proxy.dialects.attachments import add_file, is_media, read_file, read_file_uri
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
    is_dropped,
    json_error,
    read_call_input,
    require_object,
)
from proxy.dialects.locator import (
    Step,
    format_locator,
    get_at,
    locator_steps,
    parse_locator,
    set_at,
    walk_strings,
)
from proxy.dialects.readings import snake_case
from proxy.dialects.schema import schema_descriptions
from proxy.dialects.stream import (
    MISPLACED_RULE,
    CallPiece,
    GrowingText,
    IndexedItems,
    Path,
    Placed,
    StreamedCall,
    StreamedCalls,
    StreamFilters,
    StreamKey,
    StreamSession,
    ToolDecision,
    dump_json,
    merged_arguments,
    rewritten,
    synthesised,
)
from proxy.exchange import (
    Attachment,
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

ROLE_SOURCES = {"user": Source.USER, "model": Source.ASSISTANT, "function": Source.TOOL_RESULT}
CODE_EXECUTION = "code_execution"
"""The tool name the code the API runs (its ``codeExecution`` tool) is called under, and its output read
under: the name a role lists under ``tools.destructive`` to have it refused where a request declares it."""
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


BROWSING_TOOLS = ("googleSearch", "googleSearchRetrieval", "enterpriseWebSearch", "urlContext")
"""Tools with which the API fetches web pages for the model, none limited to domains: search reaches
whatever it finds (``excludeDomains`` lists only where not to go), and ``urlContext`` fetches the addresses
any text of the prompt names, those a fetched page or a tool's result wrote among them."""


def field_of(mapping: dict[str, Any], camel: str) -> tuple[str, Any]:
    """(key, value) for a field spelled in camelCase or snake_case."""
    if camel in mapping:
        return camel, mapping[camel]
    snake = snake_case(camel)
    return snake, mapping.get(snake)


def _inline_file(
    part: dict[str, Any],
    where: str,
    source: Source,
    tool_name: str | None = None,
    call_id: str | None = None,
) -> Part | Attachment | None:
    """The file a part carries in ``inlineData`` (``read_file``), unless it is an image, audio or video."""
    inline_key, inline = field_of(part, "inlineData")
    if not isinstance(inline, dict) or is_media(media_type := as_str(field_of(inline, "mimeType")[1])):
        return None
    data_where = f"{where}.{inline_key}.data"
    return read_file(inline.get("data"), data_where, source, tool_name, call_id, media_type)


def _read_file_uri(view: RequestView, part: dict[str, Any], where: str) -> None:
    """The file a part's ``fileData`` gives by URI, for the API to fetch (``read_file_uri``)."""
    file_key, file = field_of(part, "fileData")
    uri_key, uri = field_of(as_dict(file), "fileUri")
    read_file_uri(view, uri, f"{where}.{file_key}.{uri_key}")


def code_output(part: dict[str, Any], where: str) -> Part | None:
    """What code the API ran returned (``codeExecutionResult``'s ``output``): a tool's result."""
    result_key, result = field_of(part, "codeExecutionResult")
    output = as_str(as_dict(result).get("output"))
    if not output:
        return None
    return Part(Source.TOOL_RESULT, output, f"{where}.{result_key}.output", CODE_EXECUTION)


def code_call(part: dict[str, Any], where: str) -> ToolCall | None:
    """The code a part of the model's answer has the API run (``executableCode``, its ``language`` and
    ``code``): a call to ``code_execution``, which ran before the answer came."""
    _, code = field_of(part, "executableCode")
    if not isinstance(code, dict):
        return None
    arguments = canonical_arguments(code)
    return ToolCall(id=None, name=CODE_EXECUTION, arguments=arguments, where=where, ran_upstream=True)


_CALL_FIELDS = frozenset(
    spelling.lower()
    for camel in ("functionCall", "executableCode")
    for spelling in (camel, snake_case(camel))
)
"""The fields ``_part_call`` reads a call from, in either spelling and any case (Go's decoder matches a
field's name in any case): a part with none of them is no call."""


def _part_call(part: dict[str, Any], where: str) -> ToolCall | None:
    """The call a part of the model's answer is: a function's the agent runs, or code the API ran."""
    _, call = field_of(part, "functionCall")
    return function_call_of(call, where) if isinstance(call, dict) else code_call(part, where)


def _returned(part: dict[str, Any], where: str) -> Part | Attachment | None:
    """What the agent reads of a part of a model's answer that is neither text nor a call: the output of
    code the API ran, or a file the model returned (``_inline_file``)."""
    return code_output(part, where) or _inline_file(part, where, Source.ASSISTANT)


def _add_returned(completion: Completion, returned: Part | Attachment | None) -> None:
    """Adds what a part returned (``_returned``) to ``completion``: text as read content (redacted and
    quarantined inside it, a file's written back encoded), else the file."""
    if isinstance(returned, Part):
        completion.add_read_content([returned])
    elif returned is not None:
        completion.attachments.append(returned)


def function_call_of(call: dict[str, Any], where: str) -> ToolCall:
    return ToolCall(
        id=as_str(call.get("id")),
        name=as_str(call.get("name")) or "",
        arguments=canonical_arguments(call.get("args")),
        where=where,
    )


_STREAMED_SNAKE_CASE = {
    "partial_args": "partialArgs",
    "will_continue": "willContinue",
    "json_path": "jsonPath",
    "string_value": "stringValue",
    "number_value": "numberValue",
    "bool_value": "boolValue",
}
"""The fields of a call whose arguments stream (Vertex AI's ``streamFunctionCallArguments``, the Live
API's), in snake_case, by their camelCase names."""
_SNAKE_CASE_OF = {camel: snake for snake, camel in _STREAMED_SNAKE_CASE.items()}
_PARTIAL_VALUES = ("stringValue", "numberValue", "boolValue")
"""A piece's value, one of them (a protocol buffers oneof)."""
_STREAMED_CALL_FIELDS = frozenset({"partialArgs", "willContinue", "partial_args", "will_continue"})


def streams_arguments(call: dict[str, Any]) -> bool:
    """Whether a ``functionCall`` (a part's, a Live ``toolCall``'s) is a piece of a call whose arguments
    stream: it holds ``partialArgs`` or ``willContinue``."""
    return not _STREAMED_CALL_FIELDS.isdisjoint(call)


@dataclass(frozen=True, slots=True)
class PartialCall:
    """What one piece of a call whose arguments stream gives (``partial_call``)."""

    id: str | None
    name: str
    merges: dict[str, Any]
    """The fragment of the arguments its ``partialArgs`` give (``partial_arguments``)."""
    leaves: tuple[tuple[str, str, str], ...]
    """The fragment's strings, each with its locator and its place in the arguments."""
    given: str | None
    """Arguments it gives whole (``args``), which a client may take in place of those streamed."""
    continues: bool
    """Whether it says another piece of its call follows (``willContinue``)."""


def streamed_call_pieces(
    call: dict[str, Any], where: tuple[Step, ...], place: Callable[[str | None], StreamKey | None]
) -> list[CallPiece]:
    """What the ``functionCall`` at ``where``, a piece of a call whose arguments stream (``partial_call``),
    brings to its call, at the place ``place`` gives for the call's id (the Live API's by its id, a
    stream's by its candidate), and its end where it says no other piece follows. One clients may read
    apart is placed nowhere."""
    located = format_locator(where)
    piece = partial_call(call, where)
    if piece is None:
        return [CallPiece(None, located)]
    key = place(piece.id)
    joined = CallPiece(
        key,
        located,
        (piece.id,) if piece.id else (),
        piece.name,
        given=piece.given,
        opens=bool(piece.name),
        joins=True,
        merges=piece.merges,
        leaves=piece.leaves,
    )
    return [joined] if piece.continues else [joined, CallPiece(key, located, ends=True)]


def partial_call(call: dict[str, Any], where: tuple[Step, ...]) -> PartialCall | None:
    """The piece of a call whose arguments stream that the ``functionCall`` at ``where`` is, each of its
    ``partialArgs`` a value at its JSON path, a string continued by the next piece at the same path, the
    call ending at the piece whose ``willContinue`` is not true; None where clients may read it apart
    (a field given both ways, a piece placed nowhere: ``partial_arguments``)."""
    item = camel_cased(call)
    if item is None:
        return None
    spelled = "partialArgs" if "partialArgs" in call else "partial_args"
    merges, leaves = partial_arguments(item.get("partialArgs"), (*where, spelled))
    if merges is None:
        return None
    given = canonical_arguments(item["args"]) if isinstance(item.get("args"), dict) else None
    name = as_str(item.get("name")) or ""
    return PartialCall(as_str(item.get("id")), name, merges, leaves, given, item.get("willContinue") is True)


def camel_cased(call: dict[str, Any]) -> dict[str, Any] | None:
    """``call`` (a ``functionCall``, or one of its ``partialArgs``) with its snake_case fields under their
    camelCase names, as a server reading protocol buffers' JSON takes either; None where a field is given
    both ways (readers part on which one wins)."""
    renamed = dict(call)
    for snake, camel in _STREAMED_SNAKE_CASE.items():
        if snake in renamed:
            if camel in renamed:
                return None
            renamed[camel] = renamed.pop(snake)
    return renamed


def partial_arguments(
    partials: Any, where: tuple[Step, ...]
) -> tuple[dict[str, Any] | None, tuple[tuple[str, str, str], ...]]:
    """The fragment of a call's arguments its ``partialArgs`` (at ``where``) give, and its strings, each
    with its locator and its place in the arguments. None where a piece names its place otherwise than
    by names of objects and indexes of lists (``$.a.b``, ``$['a']``, ``$.items[0]``), which clients may
    read apart from how it is read here, gives more than one value, or gives a place a value its other
    pieces contradict (``merged_arguments``)."""
    fragment: dict[str, Any] | None = {}
    leaves = []
    for index, given in enumerate(as_list(partials)):
        partial = camel_cased(as_dict(given))
        steps = _json_path_steps(as_str(partial.get("jsonPath")) or "") if partial is not None else None
        if partial is None or steps is None:
            return None, ()
        values = [field for field in _PARTIAL_VALUES if field in partial]
        if len(values) > 1:
            return None, ()
        value: Any = partial[values[0]] if values else None
        if isinstance(value, str):
            spelled = values[0] if values[0] in as_dict(given) else _SNAKE_CASE_OF[values[0]]
            leaves.append((format_locator((*where, index, spelled)), value, format_locator(steps)))
        for step in reversed(steps[1:]):
            value = IndexedItems({step: value}) if isinstance(step, int) else {step: value}
        fragment = merged_arguments(fragment or {}, {str(steps[0]): value})
        if fragment is None:
            return None, ()
    return fragment, tuple(leaves)


_PATH_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\['([^'\\]*)'\]|\[(0|[1-9][0-9]{0,5})\]")
"""A step of a JSON path (RFC 9535) through an object's name or a list's index, as every reader reads
it: no negative index (from the end of a list still growing), no blank space, no leading zero."""


def _json_path_steps(path: str) -> list[str | int] | None:
    """The steps a JSON path of names and indexes takes from the arguments' object (its first a name),
    or None."""
    if not path.startswith("$"):
        return None
    steps: list[str | int] = []
    at = 1
    while at < len(path):
        step = _PATH_STEP.match(path, at)
        if step is None:
            return None
        name, quoted, index = step.groups()
        steps.append(int(index) if index is not None else name if name is not None else quoted)
        at = step.end()
    return steps if steps and isinstance(steps[0], str) else None


def read_tools(view: RequestView, tools: object, steps: tuple[Step, ...]) -> None:
    """Adds to ``view`` what the ``tools`` at ``steps`` (a request's, a Live session's setup's) let the
    API do: browse (``BROWSING_TOOLS``), run code (``codeExecution``), call the functions they declare,
    whose descriptions the model reads."""
    for position, raw_tool in enumerate(as_list(tools)):
        tool = as_dict(raw_tool)
        for browsing in BROWSING_TOOLS:
            browsing_key, enabled = field_of(tool, browsing)
            if isinstance(enabled, dict):
                view.fetches.append(Fetch(format_locator((*steps, position, browsing_key)), None, browsing))
        code_key, code = field_of(tool, "codeExecution")
        if isinstance(code, dict):
            view.declared_tools.append(
                DeclaredTool(CODE_EXECUTION, format_locator((*steps, position, code_key)))
            )
        declarations_key, declarations = field_of(tool, "functionDeclarations")
        for index, raw_declaration in enumerate(as_list(declarations)):
            declaration = as_dict(raw_declaration)
            name = as_str(declaration.get("name")) or ""
            view.tools_offered.append(name)
            described = {key: declaration[key] for key in declaration if key in ("description", "parameters")}
            for where, text in schema_descriptions(described, (*steps, position, declarations_key, index)):
                view.parts.append(Part(Source.TOOL_DESCRIPTION, text, where, tool_name=name))


LIVE_REQUEST_MARKERS = ("fileData", "file_data", '"setup"')
"""Words a Live client message that asks the API to fetch or run something holds: a file by URI, the
session's setup (its tools)."""


def may_ask_fetches(text: str) -> bool:
    """Whether a client message may be one ``live_request`` reads anything of."""
    return "\\u" in text or any(marker in text for marker in LIVE_REQUEST_MARKERS)


def read_system(view: RequestView, body: dict[str, Any], steps: tuple[Step, ...]) -> None:
    """The system instruction of a request (or a Live session's ``setup``) at ``steps``: a text, or a
    content's text parts."""
    system_key, system = field_of(body, "systemInstruction")
    if isinstance(system, str):
        view.parts.append(Part(Source.SYSTEM, system, format_locator((*steps, system_key))))
    for position, raw_part in enumerate(as_list(as_dict(system).get("parts"))):
        text = as_str(as_dict(raw_part).get("text"))
        if text is not None:
            where = format_locator((*steps, system_key, "parts", position, "text"))
            view.parts.append(Part(Source.SYSTEM, text, where))


def live_request(message: object) -> RequestView:
    """What a Live API client message lets the API fetch or run, and the system instruction its ``setup``
    gives: the tools of its ``setup`` (``read_tools``)
    and each file a part gives by an ``http(s)`` URI (``fileData``), in its turns and in the parts of the
    function responses it sends back alike."""
    view = RequestView(dialect=Gemini.name)
    setup_key, setup = field_of(as_dict(message), "setup")
    read_system(view, as_dict(setup), (setup_key,))
    read_tools(view, as_dict(setup).get("tools"), (setup_key, "tools"))
    for steps, part in _file_parts(message, ()):
        _read_file_uri(view, part, format_locator(steps))
    return view


def _file_parts(value: object, steps: tuple[Step, ...]) -> Iterator[tuple[tuple[Step, ...], dict[str, Any]]]:
    if isinstance(value, list):
        for index, child in enumerate(value):
            yield from _file_parts(child, (*steps, index))
    elif isinstance(value, dict):
        if isinstance(field_of(value, "fileData")[1], dict):
            yield steps, value
        for key, child in value.items():
            yield from _file_parts(child, (*steps, key))


def function_response_parts(
    response: dict[str, Any], steps: tuple[Step, ...], names_by_call_id: dict[str, str] | None = None
) -> list[Part]:
    """What a ``functionResponse`` (or an item of the Live API's ``toolResponse.functionResponses``) at
    ``steps`` sends back as its call's result: every string of its ``response``, a tool's result under the
    name it gives, else the name of the call its id answers."""
    call_id = as_str(response.get("id"))
    name = as_str(response.get("name")) or (names_by_call_id or {}).get(call_id or "")
    return [
        Part(Source.TOOL_RESULT, text, where, name, call_id)
        for where, text in walk_strings(response.get("response"), (*steps, "response"))
    ]


GEMINI_CASED_KEYS = frozenset(
    {
        # Requests
        "systemInstruction",
        "generationConfig",
        "safetySettings",
        "toolConfig",
        "functionDeclarations",
        "functionCallingConfig",
        "allowedFunctionNames",
        "cachedContent",
        "maxOutputTokens",
        "topP",
        "topK",
        "candidateCount",
        "stopSequences",
        "presencePenalty",
        "frequencyPenalty",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "responseModalities",
        "thinkingConfig",
        "thinkingBudget",
        "includeThoughts",
        "speechConfig",
        "mediaResolution",
        "googleSearch",
        "googleSearchRetrieval",
        "enterpriseWebSearch",
        "codeExecution",
        "urlContext",
        "parametersJsonSchema",
        "responseLogprobs",
        "enableEnhancedCivicAnswers",
        # Parts, both ways
        "functionCall",
        "functionResponse",
        "inlineData",
        "fileData",
        "mimeType",
        "fileUri",
        "executableCode",
        "codeExecutionResult",
        "thoughtSignature",
        "videoMetadata",
        "partMetadata",
        "willContinue",
        "partialArgs",
        "jsonPath",
        "stringValue",
        "numberValue",
        "boolValue",
        # Responses
        "finishReason",
        "finishMessage",
        "safetyRatings",
        "citationMetadata",
        "citationSources",
        "startIndex",
        "endIndex",
        "groundingMetadata",
        "groundingChunks",
        "groundingSupports",
        "webSearchQueries",
        "searchEntryPoint",
        "renderedContent",
        "retrievalMetadata",
        "avgLogprobs",
        "logprobsResult",
        "topCandidates",
        "chosenCandidates",
        "logProbability",
        "tokenId",
        "tokenCount",
        "usageMetadata",
        "promptTokenCount",
        "candidatesTokenCount",
        "totalTokenCount",
        "cachedContentTokenCount",
        "thoughtsTokenCount",
        "toolUsePromptTokenCount",
        "promptTokensDetails",
        "candidatesTokensDetails",
        "cacheTokensDetails",
        "toolUsePromptTokensDetails",
        "modelVersion",
        "responseId",
        "createTime",
        "promptFeedback",
        "blockReason",
        "blockReasonMessage",
        "urlContextMetadata",
        "urlMetadata",
        "retrievedUrl",
        "urlRetrievalStatus",
    }
)
"""The camelCase keys of the Gemini API: any other key with a capital is read again as a case-insensitive
reader (the Go SDK's encoding/json) reads it, as is one of these in lower case (``functioncall``)."""


class Gemini(Dialect):
    name = "gemini"
    CASED_KEYS = GEMINI_CASED_KEYS
    SNAKE_CASE_TOO = True

    def __init__(self, model_hint: str | None = None, streaming: bool = False) -> None:
        super().__init__(model_hint)
        self.streaming = streaming

    def _request_from(self, document: Any) -> RequestView:
        body = require_object(document)
        view = RequestView(dialect=self.name, model=as_str(body.get("model")), stream=self.streaming)
        read_system(view, body, ())
        names_by_call_id: dict[str, str] = {}
        for position, raw_content in enumerate(as_list(body.get("contents"))):
            content = as_dict(raw_content)
            source = ROLE_SOURCES.get(as_str(content.get("role")) or "user", Source.USER)
            for index, raw_part in enumerate(as_list(content.get("parts"))):
                part = as_dict(raw_part)
                where = f"contents[{position}].parts[{index}]"
                call_key, call = field_of(part, "functionCall")
                response_key, response = field_of(part, "functionResponse")
                add_file(view, _inline_file(part, where, source))
                _read_file_uri(view, part, where)
                if isinstance(call, dict):
                    tool_call = function_call_of(call, where)
                    view.tool_calls.append(tool_call)
                    args = ("contents", position, "parts", index, call_key, "args")
                    read_call_input(view, call.get("args"), args, tool_call)
                    names_by_call_id[tool_call.id or tool_call.name] = tool_call.name
                elif isinstance(part.get("text"), str):
                    view.parts.append(Part(source, part["text"], f"{where}.text"))
                elif (output := code_output(part, where)) is not None:
                    view.parts.append(output)
                elif isinstance(response, dict):
                    steps = ("contents", position, "parts", index, response_key)
                    view.parts.extend(function_response_parts(response, steps, names_by_call_id))
                    call_id = as_str(response.get("id"))
                    name = as_str(response.get("name")) or names_by_call_id.get(call_id or "")
                    # A function's response may carry files of its own, as parts beside its JSON.
                    for inner, raw_inner in enumerate(as_list(response.get("parts"))):
                        inner_where = f"{where}.{response_key}.parts[{inner}]"
                        file = _inline_file(
                            as_dict(raw_inner), inner_where, Source.TOOL_RESULT, name, call_id
                        )
                        add_file(view, file)
                        _read_file_uri(view, as_dict(raw_inner), inner_where)
        read_tools(view, body.get("tools"), ("tools",))
        return view

    def _completion_from(self, document: Any) -> Completion:
        if isinstance(document, list):
            # streamGenerateContent without alt=sse: a JSON array of the chunks an SSE stream would carry.
            merged = _MergedResponse(self.model_hint)
            for chunk in document:
                merged.add(as_dict(chunk))
            return merged.completion()
        body = require_object(document)
        completion = Completion(model=as_str(field_of(body, "modelVersion")[1]) or self.model_hint)
        for position, raw_candidate in enumerate(as_list(body.get("candidates"))):
            candidate = as_dict(raw_candidate)
            base = f"candidates[{position}].content.parts"
            for index, raw_part in enumerate(as_list(as_dict(candidate.get("content")).get("parts"))):
                part = as_dict(raw_part)
                call = _part_call(part, f"{base}[{index}]")
                text = as_str(part.get("text"))
                if call is not None:
                    completion.tool_calls.append(call)
                elif text is None:
                    _add_returned(completion, _returned(part, f"{base}[{index}]"))
                elif text:
                    completion.text.append(
                        TextSegment(text, f"{base}[{index}].text", part.get("thought") is True)
                    )
            if position == 0:
                completion.stop_reason = as_str(field_of(candidate, "finishReason")[1])
        completion.usage = _usage(body)
        return completion

    def _drop_calls(self, document: Any, dropped: list[ToolCall], notice: str | None) -> None:
        removed: set[tuple[int, int]] = set()
        for call in dropped:
            steps = parse_locator(call.where)
            removed.add((int(steps[1]), int(steps[4])))
        for position, raw_candidate in enumerate(as_list(document.get("candidates"))):
            content = as_dict(as_dict(raw_candidate).get("content"))
            parts = as_list(content.get("parts"))
            # What withheld code printed goes with it: the part after it that holds its result.
            removed |= {
                (position, index + 1)
                for index in range(len(parts) - 1)
                if (position, index) in removed and code_output(as_dict(parts[index + 1]), "") is not None
            }
            kept = [part for index, part in enumerate(parts) if (position, index) not in removed]
            if notice is not None:
                kept.append({"text": notice})
            content["parts"] = kept

    def _rewrite_document(
        self,
        document: Any,
        text_map: Callable[[str], str],
        drop_tool_calls: Collection[str],
        notice: str | None,
        *,
        apply: bool = True,
    ) -> tuple[Any, bool]:
        if not isinstance(document, list):
            return super()._rewrite_document(document, text_map, drop_tool_calls, notice, apply=apply)
        # A JSON array of chunks: each is rewritten on its own, its calls dropped by the id or the locator
        # they have in the merged response (what the completion read, and so the drops, name).
        merged = _MergedResponse(self.model_hint)
        changed = False
        last = len(document) - 1
        for position, chunk in enumerate(document):
            landed = merged.add(as_dict(chunk))
            completion = self._completion_from(chunk)
            dropped = [
                call
                for call in completion.tool_calls
                if is_dropped(replace(call, where=_merged_where(chunk, call.where, landed)), drop_tool_calls)
            ]
            chunk, chunk_changed = self._rewrite_completion(
                chunk, completion, text_map, dropped, notice if position == last else None, apply=apply
            )
            if apply:
                document[position] = chunk
            changed = changed or chunk_changed
        return document, changed

    def error_response(self, status: int, message: str, code: str) -> ErrorResponse:
        status_name = _STATUS_NAMES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
        return json_error(status, {"error": {"code": status, "message": message, "status": status_name}})

    def stream_session(self, filters: StreamFilters | None = None) -> StreamSession:
        return GeminiStreamSession(self.model_hint, filters)


Leaves = tuple[tuple[str, str, str], ...]
"""The strings of a fragment of a call's arguments, each with its locator and its place in them."""


def _calls(part: dict[str, Any]) -> bool:
    """Whether a part names a function call, in either spelling."""
    return "functionCall" in part or "function_call" in part


def _merged_where(chunk: dict[str, Any], where: str, landed: dict[tuple[int, int], int]) -> str:
    """The locator in the merged response of the call at ``where`` in ``chunk`` (``landed``: where the
    chunk's parts landed in it, from ``_MergedResponse.add``)."""
    steps = parse_locator(where)
    position, part = int(steps[1]), int(steps[4])
    index = candidate_index(as_dict(as_list(chunk["candidates"])[position]), position)
    return f"candidates[{index}].content.parts[{landed[(index, part)]}]"


def _usage(body: dict[str, Any]) -> Usage:
    usage = as_dict(field_of(body, "usageMetadata")[1])
    return Usage(
        as_int(field_of(usage, "promptTokenCount")[1]), as_int(field_of(usage, "candidatesTokenCount")[1])
    )


@dataclass(slots=True)
class _MergedPart:
    text: GrowingText | None = None
    thought: bool = False
    call: ToolCall | None = None
    streamed: StreamedCall | None = None
    """A call whose arguments stream over parts of several chunks (Vertex AI's
    ``streamFunctionCallArguments``), its pieces joined as the Live API's are (``streamed_call_pieces``)."""
    returned: Part | Attachment | None = None
    """What the part returned (``_returned``): code's output, or a file."""


@dataclass(slots=True)
class _MergedCandidate:
    parts: list[_MergedPart] = field(default_factory=list)
    finish_reason: str | None = None


def candidate_index(candidate: dict[str, Any], position: int) -> int:
    """The candidate a streamed candidate's text belongs to: its index, or its place in the chunk where
    the index names no place."""
    index = as_position(candidate.get("index"))
    return position if index is None else index


class _MergedResponse:
    """Chunks of a streamed response folded into the one response they are equivalent to."""

    def __init__(self, model_hint: str | None = None) -> None:
        self.model = model_hint
        self.usage = Usage()
        self.candidates: dict[int, _MergedCandidate] = {}
        self.streamed = StreamedCalls()
        """The calls whose arguments are streaming, one a candidate, each at the candidate's index."""
        self._streaming: dict[int, int] = {}
        """Per candidate, the place of its call whose arguments are streaming."""
        self.pieces: dict[tuple[int, int], tuple[Placed, Leaves]] = {}
        """What each (candidate, part position) of the chunk last added that is a piece of a streamed
        call brought to it, and its strings (``CallPiece.leaves``, each located in its part)."""

    def add(self, chunk: dict[str, Any]) -> dict[tuple[int, int], int]:
        """Folds one chunk in; returns where each (candidate, part position) of the chunk landed."""
        # Read twice for every chunk (the stream and its read-back): types are checked in place, where a
        # helper's call for each field cost as much again.
        landed: dict[tuple[int, int], int] = {}
        if self.pieces:
            self.pieces = {}
        model = field_of(chunk, "modelVersion")[1]
        if model and isinstance(model, str):
            self.model = model
        if isinstance(field_of(chunk, "usageMetadata")[1], dict):
            self.usage = _usage(chunk)
        candidates = chunk.get("candidates")
        for position, raw_candidate in enumerate(candidates if isinstance(candidates, list) else ()):
            candidate = raw_candidate if isinstance(raw_candidate, dict) else {}
            index = candidate_index(candidate, position)
            merged = entry(self.candidates, index, _MergedCandidate)
            content = candidate.get("content")
            parts = content.get("parts") if isinstance(content, dict) else None
            for part_position, raw_part in enumerate(parts if isinstance(parts, list) else ()):
                part = raw_part if isinstance(raw_part, dict) else {}
                call_key, function_call = field_of(part, "functionCall") if _calls(part) else ("", None)
                # While a call streams, any call of its candidate is a piece of it (its last may hold none
                # of the streamed fields), or names another tool.
                if isinstance(function_call, dict) and (
                    streams_arguments(function_call) or index in self._streaming
                ):
                    landed[(index, part_position)] = self._add_piece(
                        index, merged, (call_key, function_call), part_position
                    )
                else:
                    landed[(index, part_position)] = self._add_part(index, merged, part)
            finish_reason = field_of(candidate, "finishReason")[1]
            if finish_reason and isinstance(finish_reason, str):
                merged.finish_reason = finish_reason
        return landed

    def _add_piece(
        self,
        index: int,
        merged: _MergedCandidate,
        keyed_call: tuple[str, dict[str, Any]],
        part_position: int,
    ) -> int:
        """Joins a piece of a streamed call to the candidate's call whose arguments are streaming, or
        starts one where it names its tool. A piece that names a tool while a call streams is placed
        nowhere: clients part on whether it starts a call of its own or renames the one streaming."""
        key = (index,)
        streaming = self._streaming.get(index)
        position = len(merged.parts) if streaming is None else streaming
        call_key, function_call = keyed_call
        pieces = streamed_call_pieces(function_call, (call_key,), lambda _: key)
        named = "".join(self.streamed.calls[key].names) if streaming is not None else None
        # Its name said again is no new name: only another is.
        renames = named is not None and any(piece.name not in ("", named) for piece in pieces)
        pieces = [replace(piece, name="") if piece.name == named else piece for piece in pieces]
        located = f"candidates[{index}].content.parts[{position}]"
        placed = Placed(stray=True) if renames else self.streamed.place(pieces, lambda _: located)
        self.pieces[(index, part_position)] = (placed, pieces[0].leaves)
        if streaming is None:
            opened = self.streamed.calls.get(key) if key in placed.keys else None
            merged.parts.append(_MergedPart(streamed=opened))
            if opened is not None:
                self._streaming[index] = position
        for ended in placed.ended:
            self.streamed.forget(ended)
            del self._streaming[index]
        return position

    @staticmethod
    def _add_part(index: int, merged: _MergedCandidate, part: dict[str, Any]) -> int:
        text = as_str(part.get("text"))
        thought = part.get("thought") is True
        # A part that names no call (a text, for every chunk of an answer) has none: its place is not
        # written out for it.
        call = (
            None
            if _CALL_FIELDS.isdisjoint(str(key).lower() for key in part)
            else _part_call(part, f"candidates[{index}].content.parts[{len(merged.parts)}]")
        )
        last = merged.parts[-1] if merged.parts else None
        if call is not None:
            merged.parts.append(_MergedPart(call=call))
        elif text is not None and last is not None and last.text is not None and last.thought == thought:
            last.text.add(text)
        elif text is not None:
            merged.parts.append(_MergedPart(text=GrowingText(text), thought=thought))
        else:
            where = f"candidates[{index}].content.parts[{len(merged.parts)}]"
            merged.parts.append(_MergedPart(returned=_returned(part, where)))
        return len(merged.parts) - 1

    def completion(self) -> Completion:
        completion = Completion(model=self.model, usage=self.usage)
        for index in sorted(self.candidates):
            candidate = self.candidates[index]
            for position, part in enumerate(candidate.parts):
                if part.text:
                    where = f"candidates[{index}].content.parts[{position}].text"
                    completion.text.append(TextSegment(part.text.text, where, part.thought))
                elif part.call is not None:
                    completion.tool_calls.append(part.call)
                elif part.streamed is not None:
                    completion.tool_calls.append(part.streamed.denied or part.streamed.call())
                else:
                    _add_returned(completion, part.returned)
        if self.candidates:
            completion.stop_reason = self.candidates[min(self.candidates)].finish_reason
        return completion


@dataclass(slots=True)
class _HeldPieces:
    """A streamed call whose arguments have not ended, as the session sends it."""

    decision: ToolDecision | None = None
    """What the gate decided once its tool was named (None: no gate)."""
    parts: list[Any] = field(default_factory=list)
    """Its pieces the gate holds, as their filters released them."""
    originals: list[Any] = field(default_factory=list)
    """Those pieces as they came: what is sent where the filters changed nothing of what they read."""
    fed: dict[str, GrowingText] = field(default_factory=dict)
    """What each channel of its arguments' strings was fed."""
    size: int = 0
    feeds: dict[str, tuple[Any, str, dict[str, Any]]] = field(default_factory=dict)
    """Per channel of its arguments' strings (a place in them), the last piece that fed it, the locator
    of the string in it and its ``partialArgs`` entry but its ``willContinue``: where that piece has
    left, what the filter holds back at the end goes in such an entry."""


class GeminiStreamSession(StreamSession):
    READS_PLACES = True
    HANDLED_BY_SHAPE = True
    CASED_KEYS = GEMINI_CASED_KEYS

    def __init__(self, model_hint: str | None, filters: StreamFilters | None = None) -> None:
        super().__init__(filters)
        self._merged = _MergedResponse(model_hint)
        self._landed: dict[tuple[int, int], int] = {}
        self._open_text: dict[int, tuple[str, bool]] = {}
        """Per candidate, the text part being streamed and whether it is a thought."""
        self._code_withheld: set[int] = set()
        """The candidates whose last part was code the gate withheld: the output of it that comes next
        goes with it."""
        self._withheld: dict[tuple[int, int], str] = {}
        """Parts of the merged response whose file refuses them (``StreamFilters.file_reader``), by
        candidate and position, with what the agent reads instead."""
        self._pieces: dict[tuple[int, int], _HeldPieces] = {}
        """The streamed calls whose arguments have not ended, by candidate and position in the merged
        response."""

    @property
    def completion(self) -> Completion:
        return self._merged.completion()

    def _observe(self, event: SSEEvent, payload: Any) -> None:
        if "error" in as_dict(payload):
            self.notes.append("upstream sent an error event")
        self._landed = self._merged.add(as_dict(payload))
        for (candidate, _), position in self._landed.items():
            file = self._merged.candidates[candidate].parts[position].returned
            if isinstance(file, Attachment) and (notice := self._refusing([file])) is not None:
                self._withheld[candidate, position] = notice

    def _transform(self, event: SSEEvent, payload: Any) -> list[bytes]:
        chunk = as_dict(payload)
        candidates = as_list(chunk.get("candidates"))
        if not candidates:
            return [event.raw]
        as_came = True  # whether the filters left every part as it came but for its text
        changed: list[tuple[str, str]] = []  # each text the filters changed, and what they released
        for position, raw_candidate in enumerate(candidates):
            candidate = as_dict(raw_candidate)
            index = candidate_index(candidate, position)
            if as_position(candidate.get("index")) != index:
                # Its text went to the candidate of this index: a client that reads "1", 1.0 or -1 as
                # another candidate must not join it to that candidate's text.
                candidate["index"] = index
                as_came = False
            content = as_dict(candidate.get("content"))
            parts: list[Any] = []
            for part_position, raw_part in enumerate(as_list(content.get("parts"))):
                part = as_dict(raw_part)
                text = part.get("text")
                merged_position = self._landed.get((index, part_position), 0)
                piece = self._merged.pieces.get((index, part_position))
                sent = (
                    self._transform_part(index, merged_position, raw_part)
                    if piece is None
                    else self._gate_piece(index, merged_position, raw_part, piece)
                )
                as_came = as_came and len(sent) == 1 and sent[0] is raw_part and not _calls(part)
                if isinstance(text, str) and part.get("text") != text:
                    changed.append((text, part["text"]))
                parts.extend(sent)
            if field_of(candidate, "finishReason")[1]:
                parts.extend(self._settle_pieces(index))
                closed = self._close_text(index)
                as_came = as_came and not closed
                parts.extend(closed)
            if "parts" in content:
                content["parts"] = parts
        if as_came and not changed:
            return [self._as_sent(event, chunk)]
        if as_came and len(changed) == 1:
            return [self._text_written(event, chunk, *changed[0])]
        return [rewritten(event, chunk)]

    def _plain_texts(self, event: SSEEvent, payload: Any) -> list[tuple[str, str]] | None:
        """A chunk whose every candidate only carries text that joins the text part each is streaming."""
        candidates = as_dict(payload).get("candidates")
        if not isinstance(candidates, list) or not candidates:
            return None
        plain: list[tuple[str, str]] = []
        indexes: set[int] = set()
        for raw_candidate in candidates:
            candidate = as_dict(raw_candidate)
            index = as_position(candidate.get("index"))
            parts = as_dict(candidate.get("content")).get("parts")
            open_text = self._open_text.get(index) if index is not None else None
            if (
                index is None
                or index in indexes
                or open_text is None
                or field_of(candidate, "finishReason")[1]
                or not isinstance(parts, list)
                or not self._streams_into(index, open_text)
            ):
                return None
            indexes.add(index)
            where, thought = open_text
            for raw_part in parts:
                part = as_dict(raw_part)
                text = part.get("text")
                if not isinstance(text, str) or (part.get("thought") is True) != thought or _calls(part):
                    return None
                if text:
                    plain.append((where, text))
        return plain

    def _streams_into(self, index: int, open_text: tuple[str, bool]) -> bool:
        """Whether text parts of ``index`` that come next join the open text part (``_MergedResponse``):
        it is the candidate's last part."""
        merged = self._merged.candidates.get(index)
        if merged is None or not merged.parts:
            return False
        last = merged.parts[-1]
        where, thought = open_text
        return (
            last.text is not None
            and last.thought == thought
            and where == f"candidates[{index}].content.parts[{len(merged.parts) - 1}].text"
        )

    def _transform_part(self, index: int, merged_position: int, raw_part: Any) -> list[Any]:
        part = as_dict(raw_part)
        text = as_str(part.get("text"))
        if text is not None and not isinstance(field_of(part, "functionCall")[1], dict):
            where = f"candidates[{index}].content.parts[{merged_position}].text"
            open_text = self._open_text.get(index)
            before = self._close_text(index) if open_text is not None and open_text[0] != where else []
            self._open_text[index] = (where, part.get("thought") is True)
            part["text"] = self._filter_text(where, text)
            return [*before, part]
        before = self._close_text(index)
        notice = self._withheld.pop((index, merged_position), None)
        if notice is not None:
            # A binary file a finding in it refuses cannot be rewritten: the part is not sent.
            return [*before, {"text": notice}]
        returned = self._merged.candidates[index].parts[merged_position].returned
        if (
            isinstance(returned, Part)
            and returned.tool_name == CODE_EXECUTION
            and index in self._code_withheld
        ):
            return before  # what withheld code printed goes with it
        if isinstance(returned, Part):
            # Read whole in its part: the file's data or the code's output, at the last two steps.
            key, field_name = map(str, parse_locator(returned.where)[-2:])
            sent = self._read_content_out(returned)
            holder = as_dict(part[key])
            if sent != holder[field_name]:
                return [*before, {**part, key: {**holder, field_name: sent}}]
            return [*before, raw_part]
        _, call = field_of(part, "functionCall")
        where = f"candidates[{index}].content.parts[{merged_position}]"
        tool_call = _part_call(part, where)
        self._code_withheld.discard(index)
        # A function call (or code) arrives whole, arguments and all.
        gated = self.filters.tool_gate is not None
        if tool_call is not None and gated and self._decide(tool_call, complete=True) == "drop":
            if tool_call.ran_upstream:
                self._code_withheld.add(index)
            notice = self._notice(tool_call)
            return [*before, {"text": notice}] if notice else before
        if isinstance(call, dict) and call.get("args") is not None:
            call["args"] = self._filter_argument_value(where, call["args"])
        return [*before, raw_part]

    def _gate_piece(
        self, index: int, merged_position: int, raw_part: Any, read: tuple[Placed, Leaves]
    ) -> list[Any]:
        """A part that is a piece of a streamed call (``_MergedResponse._add_piece``). The gate is asked
        once its tool is named: a call it releases streams on, one it holds is held until its arguments
        end, then decided on all of them and its pieces sent as they came, or dropped for its notice. Each
        string of a piece is read joined with those before it at its place (``_filter_piece``). A piece
        no reading places is not sent, nor is the call streaming in its candidate."""
        placed, leaves = read
        before = self._close_text(index)
        call = (index, merged_position)
        streamed = self._merged.candidates[index].parts[merged_position].streamed
        if placed.stray or streamed is None:
            self.notes.append("a piece of a streamed call that no reading places; not sent")
            self._ambiguous(MISPLACED_RULE)
            if call not in self._pieces:
                return before
            return [*before, *self._settle_piece(call, forced=True)]
        pieces = self._pieces.get(call)
        if pieces is None:
            # The piece naming its tool: asked about once, as any call is once its name is known.
            pieces = self._pieces[call] = _HeldPieces()
            if self.filters.tool_gate is not None:
                pieces.decision = self._decide(streamed.call())
        if pieces.decision == "drop":
            return before if not placed.ended else [*before, *self._settle_piece(call)]
        if pieces.decision == "hold":
            pieces.originals.append(copy.deepcopy(raw_part))
        self._filter_piece(pieces, streamed, raw_part, leaves)
        if pieces.decision == "hold":
            pieces.parts.append(raw_part)
            pieces.size += len(dump_json(raw_part))
            if placed.ended or self._held_too_long(pieces.size):
                return [*before, *self._settle_piece(call)]
            return before
        if placed.ended:
            return [*before, *self._settle_piece(call, raw_part), raw_part]
        return [*before, raw_part]

    def _filter_piece(
        self, pieces: _HeldPieces, streamed: StreamedCall, raw_part: dict[str, Any], leaves: Leaves
    ) -> None:
        """Feeds each string of a piece to the argument filter of its place in the call's arguments,
        joined with those before it there, and leaves in the piece what it released."""
        if self.filters.argument_filter is None:
            return
        for at, text, place in leaves:
            channel = format_locator((*parse_locator(streamed.where), *locator_steps(place)))
            released = self._filter_arguments(channel, text)
            entry(pieces.fed, channel, GrowingText).add(text)
            if released != text:
                set_at(raw_part, at, released)
            steps = parse_locator(at)
            given = {
                name: value
                for name, value in as_dict(get_at(raw_part, format_locator(steps[:-1]))).items()
                if name not in ("willContinue", "will_continue")
            }
            pieces.feeds[channel] = (raw_part, at, given)

    def _settle_piece(self, call: tuple[int, int], last: Any = None, *, forced: bool = False) -> list[Any]:
        """The streamed call at ``call`` (its candidate and place) ended (at the piece ``last``, being
        read, which goes after what this returns): a call the gate held is decided on its arguments as
        they stand, as every client may read them (``StreamedCall.readings``), and its pieces are sent,
        or its notice (also where ``forced``, a piece of it placed nowhere, and where the gate dropped it
        from its name). What a filter held back at a place goes at the end of the last string there, or in
        a piece of its own where that string was sent."""
        index, position = call
        streamed = self._merged.candidates[index].parts[position].streamed
        assert streamed is not None  # a call's pieces are kept only once it streams
        pieces = self._pieces.pop(call)
        first, *others = streamed.readings()
        decision = pieces.decision
        if forced and decision != "drop":
            decision = "drop"
            self._drop_at(first)
        elif decision == "hold":
            decision = self._decide(first, complete=True, readings=others)
            streamed.denied = self._denied.get(first.where)
        streamed.decision = decision or "release"
        unsent = {id(part) for part in (*pieces.parts, last)}
        flushed = []
        for channel, (part, at, given) in pieces.feeds.items():
            rest = self._close_arguments(channel)
            if rest and id(part) in unsent:
                set_at(part, at, get_at(part, at) + rest)
            elif rest:
                entry = {**given, str(parse_locator(at)[-1]): rest}
                flushed.append({"functionCall": {"partialArgs": [entry], "willContinue": True}})
        if decision == "drop":
            notice = self._notice(streamed.denied or first)
            return [{"text": notice}] if notice else []
        if pieces.decision == "hold" and all(
            self.released_arguments.get(channel) == fed.text for channel, fed in pieces.fed.items()
        ):
            return pieces.originals
        return [*pieces.parts, *flushed]

    def _settle_pieces(self, index: int) -> list[Any]:
        """The candidate ended: its streamed calls still open have all the arguments they will get."""
        open_calls = [call for call in self._pieces if call[0] == index]
        return [part for call in open_calls for part in self._settle_piece(call)]

    def _close_text(self, index: int) -> list[Any]:
        open_text = self._open_text.pop(index, None)
        if open_text is None:
            return []
        where, thought = open_text
        flushed = self._close_channel(where)
        if not flushed:
            return []
        return [{"text": flushed, "thought": True} if thought else {"text": flushed}]

    def _handled(self, event: SSEEvent, payload: Any) -> Collection[Path]:
        handled: set[Path] = set()
        for position, raw_candidate in enumerate(as_list(as_dict(payload).get("candidates"))):
            base = ("candidates", position, "content", "parts")
            for index, raw_part in enumerate(
                as_list(as_dict(as_dict(raw_candidate).get("content")).get("parts"))
            ):
                part = as_dict(raw_part)
                call_key, call = field_of(part, "functionCall")
                if isinstance(call, dict):
                    # A part that names a call is read as the call (clients run it): its text, if any,
                    # is read by the residual scan.
                    if call.get("args") is not None:
                        handled.add((*base, index, call_key, "args"))
                elif isinstance(part.get("text"), str):
                    handled.add((*base, index, "text"))
                else:
                    result_key, result = field_of(part, "codeExecutionResult")
                    inline_key, inline = field_of(part, "inlineData")
                    if isinstance(as_dict(result).get("output"), str):
                        handled.add((*base, index, result_key, "output"))
                    elif (
                        isinstance(inline, dict)
                        and isinstance(inline.get("data"), str)
                        and not is_media(as_str(field_of(inline, "mimeType")[1]))
                    ):
                        # Read as the file it is (``_inline_file``): as text, as binary, or as undecodable.
                        handled.add((*base, index, inline_key, "data"))
        return handled

    def _end_of_stream(self) -> list[bytes]:
        output: list[bytes] = []
        for index in sorted({candidate for candidate, _ in self._pieces}):
            settled = self._settle_pieces(index)
            if settled:
                candidate = {"content": {"role": "model", "parts": settled}, "index": index}
                output.append(synthesised({"candidates": [candidate]}))
        for index in list(self._open_text):
            flushed = self._close_text(index)
            if flushed:
                candidate = {"content": {"role": "model", "parts": flushed}, "index": index}
                output.append(synthesised({"candidates": [candidate]}))
        return output
