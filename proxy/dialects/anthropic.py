"""Anthropic Messages (``/v1/messages``): system, content blocks, tool_use / tool_result, SSE events."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from proxy.dialects.attachments import (
    add_file,
    binary_file,
    domain_fetches,
    is_media,
    read_fetched,
    read_file,
    text_file,
)
from proxy.dialects.base import (
    Dialect,
    ErrorResponse,
    as_dict,
    as_int,
    as_list,
    as_position,
    as_str,
    canonical_arguments,
    json_error,
    read_call_input,
    reparse_arguments,
    require_object,
)
from proxy.dialects.browsing import hosted_tool_browsing, request_browsing
from proxy.dialects.locator import Step, format_locator, locator_steps, parse_locator, set_at, walk_strings
from proxy.dialects.schema import content_texts, schema_descriptions
from proxy.dialects.stream import (
    BlockCallSession,
    GrowingText,
    Path,
    StreamFilters,
    StreamSession,
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
from proxy.wire.eventstream import CHUNKS
from proxy.wire.sse import SSEEvent

ROLE_SOURCES = {"user": Source.USER, "assistant": Source.ASSISTANT}
BLOCK_TEXT_KEYS = {"text": "text", "thinking": "thinking"}
"""Content blocks whose text streams in deltas, and the field that carries it."""
DELTA_TEXT_KEYS = {"text_delta": "text", "thinking_delta": "thinking"}
TOOL_USE_TYPES = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})
"""Blocks that call a tool: the agent's own, one the API runs (web search and fetch, code execution) and
one the API calls on a remote MCP server. Each is a tool call, gated by its name and input."""
RAN_UPSTREAM_TYPES = TOOL_USE_TYPES - {"tool_use"}
"""Tool uses the API has run by the time it answers."""
SERVER_TOOL_TYPES = ("web_search_", "web_fetch_", "code_execution_")
"""Prefixes of the versioned tool types the API runs itself (``web_search_20250305``); ``bash_*``,
``text_editor_*`` and ``computer_*`` are the agent's to run, their calls gated in the answer."""
_UNREAD_RESULT_KEYS = frozenset(
    {"type", "id", "tool_use_id", "file_id", "url", "media_type", "error_code", "page_age", "retrieved_at"}
)
"""Keys of a server-run tool's result that hold an identifier, an address or a label, not what the tool
returned (the residual scan reads them for secrets)."""
_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def is_server_result(block_type: str) -> bool:
    """Whether a content block is what a tool the API ran returned (``web_search_tool_result``,
    ``web_fetch_tool_result``, ``code_execution_tool_result``, ``mcp_tool_result``, ...), which the model
    reads as it reads the agent's ``tool_result``."""
    return block_type != "tool_result" and block_type.endswith("_tool_result")


def server_result_parts(block: dict[str, Any], where: str, names_by_call_id: dict[str, str]) -> list[Part]:
    """The texts of a server-run tool's result block (``is_server_result``) as tool results: every string
    of its content but identifiers, addresses and opaque data (``encrypted_content``), so a fetched page,
    a search result's title, a program's output or an MCP tool's text; and a document it fetched in base64
    (``_encoded_sources``) where that is text, written back encoded."""
    call_id = as_str(block.get("tool_use_id"))
    name = names_by_call_id.get(call_id or "")
    content = (*parse_locator(where), "content")
    parts = [
        Part(Source.TOOL_RESULT, text, text_where, name, call_id)
        for text_where, text in walk_strings(block.get("content"), content, _unread_in_result)
    ]
    for steps, source in _encoded_sources(block.get("content"), content):
        if (file := text_file(source["data"])) is not None:
            data_where = format_locator((*steps, "data"))
            parts.append(Part(Source.TOOL_RESULT, file[1], data_where, name, call_id, encoded=file[0]))
    return parts


def server_result_files(block: dict[str, Any], where: str) -> list[Attachment]:
    """The documents a server-run tool's result block fetched in base64 (``_encoded_sources``) that are
    binary (a PDF), read as binary content a tool returned, or that do not decode."""
    return [
        file
        for steps, source in _encoded_sources(block.get("content"), (*parse_locator(where), "content"))
        if (
            file := binary_file(
                source["data"],
                format_locator((*steps, "data")),
                Source.TOOL_RESULT,
                as_str(source.get("media_type")),
                declared=True,
            )
        )
        is not None
    ]


def _encoded_sources(
    value: Any, steps: tuple[Step, ...]
) -> Iterator[tuple[tuple[Step, ...], dict[str, Any]]]:
    """Each source given in base64 within ``value`` at ``steps`` (a ``web_fetch_result``'s document's
    ``source``) that is no image, audio or video."""
    if isinstance(value, dict):
        if (
            value.get("type") == "base64"
            and isinstance(value.get("data"), str)
            and not is_media(as_str(value.get("media_type")))
        ):
            yield steps, value
        for key, child in value.items():
            yield from _encoded_sources(child, (*steps, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _encoded_sources(child, (*steps, index))


def _unread_in_result(container: dict[str, Any], key: str) -> bool:
    return (
        key in _UNREAD_RESULT_KEYS
        or key.startswith("encrypted_")
        or (key == "data" and container.get("type") != "text")
    )


def tool_use_call(block: dict[str, Any], where: str) -> ToolCall:
    return ToolCall(
        id=as_str(block.get("id")),
        name=as_str(block.get("name")) or "",
        arguments=canonical_arguments(block.get("input")),
        where=where,
        ran_upstream=block.get("type") in RAN_UPSTREAM_TYPES,
    )


def _configured_tools(configuration: dict[str, Any]) -> tuple[str, ...] | None:
    """The tools an MCP server's ``tool_configuration`` lets the API run: those it lists, none where it is
    disabled, all of them (None) where it lists none."""
    if configuration.get("enabled") is False:
        return ()
    allowed = configuration.get("allowed_tools")
    return None if allowed is None else tuple(name for name in as_list(allowed) if isinstance(name, str))


def _mcp_toolsets(tools: list[Any]) -> dict[str, tuple[str, ...] | None]:
    """By MCP server name, the tools its ``mcp_toolset`` entry lets the API run: all of them (None) but
    where its ``default_config`` disables them, then those its ``configs`` enable."""
    toolsets: dict[str, tuple[str, ...] | None] = {}
    for raw_tool in tools:
        tool = as_dict(raw_tool)
        server = as_str(tool.get("mcp_server_name"))
        if tool.get("type") != "mcp_toolset" or server is None:
            continue
        configs = as_dict(tool.get("configs"))
        if as_dict(tool.get("default_config")).get("enabled") is not False:
            toolsets[server] = None
        else:
            toolsets[server] = tuple(
                name for name, config in configs.items() if as_dict(config).get("enabled") is True
            )
    return toolsets


class Anthropic(Dialect):
    name = "anthropic"
    aws_framing = CHUNKS

    def _request_from(self, document: Any) -> RequestView:
        body = require_object(document)
        view = self._view_with_model_and_stream(body)
        for where, text in content_texts(body.get("system"), "system"):
            view.parts.append(Part(Source.SYSTEM, text, where))
        names_by_call_id: dict[str, str] = {}
        for position, raw_message in enumerate(as_list(body.get("messages"))):
            message = as_dict(raw_message)
            source = ROLE_SOURCES.get(as_str(message.get("role")) or "", Source.USER)
            base = f"messages[{position}].content"
            content = message.get("content")
            if isinstance(content, str):
                view.parts.append(Part(source, content, base))
            for index, raw_block in enumerate(as_list(content)):
                block = as_dict(raw_block)
                where = f"{base}[{index}]"
                block_type = as_str(block.get("type"))
                if block_type == "text" and isinstance(block.get("text"), str):
                    view.parts.append(Part(source, block["text"], f"{where}.text"))
                elif block_type in TOOL_USE_TYPES:
                    call = tool_use_call(block, where)
                    view.tool_calls.append(call)
                    steps = ("messages", position, "content", index, "input")
                    read_call_input(view, block.get("input"), steps, call)
                    if call.id is not None:
                        names_by_call_id[call.id] = call.name
                elif block_type is not None and is_server_result(block_type):
                    view.parts.extend(server_result_parts(block, where, names_by_call_id))
                    view.attachments.extend(server_result_files(block, where))
                elif block_type == "tool_result":
                    call_id = as_str(block.get("tool_use_id"))
                    name = names_by_call_id.get(call_id or "")
                    for text_where, text in content_texts(block.get("content"), f"{where}.content"):
                        view.parts.append(Part(Source.TOOL_RESULT, text, text_where, name, call_id))
                    # A tool result may hold search results and documents, which the model reads too.
                    for inner, raw_inner in enumerate(as_list(block.get("content"))):
                        inner_where = f"{where}.content[{inner}]"
                        if _is_document(inner_block := as_dict(raw_inner)):
                            _read_document(view, inner_block, inner_where)
                        _read_source_url(view, inner_block, inner_where)
                elif _is_document(block):
                    _read_document(view, block, where)
                _read_source_url(view, block, where)
        for position, raw_tool in enumerate(as_list(body.get("tools"))):
            tool = as_dict(raw_tool)
            name = as_str(tool.get("name")) or as_str(tool.get("type")) or ""
            view.tools_offered.append(name)
            if (as_str(tool.get("type")) or "").startswith(SERVER_TOOL_TYPES):
                view.declared_tools.append(DeclaredTool(name, f"tools[{position}]"))
                view.fetches.extend(_server_tool_fetches(tool, f"tools[{position}]"))
            view.fetches += hosted_tool_browsing(tool, f"tools[{position}]")
            described = {key: tool[key] for key in ("description", "input_schema") if key in tool}
            for where, text in schema_descriptions(described, ("tools", position)):
                view.parts.append(Part(Source.TOOL_DESCRIPTION, text, where, tool_name=name))
        toolsets = _mcp_toolsets(as_list(body.get("tools")))
        for position, raw_server in enumerate(as_list(body.get("mcp_servers"))):
            server = as_dict(raw_server)
            name = as_str(server.get("name")) or ""
            view.declared_tools.append(
                DeclaredTool(
                    name,
                    f"mcp_servers[{position}]",
                    as_str(server.get("url")),
                    toolsets.get(name, _configured_tools(as_dict(server.get("tool_configuration")))),
                    mcp_server=True,
                )
            )
        view.fetches += request_browsing(body)
        # A container is named by its id, or by ``{"id": ...}`` beside the skills it loads.
        container = body.get("container")
        named = as_str(container) or as_str(as_dict(container).get("id"))
        if named:
            view.continues["container"] = named
        return view

    def _completion_from(self, document: Any) -> Completion:
        body = require_object(document)
        completion = Completion(model=as_str(body.get("model")), stop_reason=as_str(body.get("stop_reason")))
        completion.containers = _container_of(body)
        completion.files_written = [
            file for block in as_list(body.get("content")) for file in _written(block)
        ]
        names_by_call_id: dict[str, str] = {}
        for index, raw_block in enumerate(as_list(body.get("content"))):
            block = as_dict(raw_block)
            block_type = as_str(block.get("type")) or ""
            key = BLOCK_TEXT_KEYS.get(block_type)
            text = as_str(block.get(key)) if key else None
            if key and text:
                completion.text.append(
                    TextSegment(text, f"content[{index}].{key}", reasoning=key == "thinking")
                )
            elif block_type in TOOL_USE_TYPES:
                call = tool_use_call(block, f"content[{index}]")
                completion.tool_calls.append(call)
                if call.id is not None:
                    names_by_call_id[call.id] = call.name
            elif is_server_result(block_type):
                completion.add_read_content(server_result_parts(block, f"content[{index}]", names_by_call_id))
                completion.attachments += server_result_files(block, f"content[{index}]")
        completion.usage = _usage(body.get("usage"))
        return completion

    def _drop_calls(self, document: Any, dropped: list[ToolCall], notice: str | None) -> None:
        """A withheld call goes with the result of it a server-run tool returned: the API refuses a result
        whose call the history does not hold."""
        removed = {int(parse_locator(call.where)[1]) for call in dropped}
        results_of = {call.id for call in dropped if call.id is not None}
        content = [
            block
            for index, block in enumerate(as_list(document.get("content")))
            if index not in removed and as_dict(block).get("tool_use_id") not in results_of
        ]
        if notice is not None:
            content.append({"type": "text", "text": notice})
        document["content"] = content
        if document.get("stop_reason") == "tool_use" and not any(
            as_dict(block).get("type") == "tool_use" for block in content
        ):
            document["stop_reason"] = "end_turn"

    def error_response(self, status: int, message: str, code: str) -> ErrorResponse:
        error_type = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return json_error(status, {"type": "error", "error": {"type": error_type, "message": message}})

    def stream_session(self, filters: StreamFilters | None = None) -> StreamSession:
        return AnthropicStreamSession(filters)


def _read_source_url(view: RequestView, block: dict[str, Any], where: str) -> None:
    """An image or a document given by URL (``source: {"type": "url"}``), for the API to fetch."""
    source = as_dict(block.get("source"))
    if block.get("type") in ("image", "document") and source.get("type") == "url":
        read_fetched(view, source.get("url"), f"{where}.source.url", as_str(block.get("type")) or "")


def _server_tool_fetches(tool: dict[str, Any], where: str) -> list[Fetch]:
    """The domains a web search or fetch tool may fetch from (``domain_fetches``); ``blocked_domains``
    alone leaves it every other address."""
    tool_type = as_str(tool.get("type")) or ""
    kind = next((kind for kind in ("web_fetch", "web_search") if tool_type.startswith(f"{kind}_")), None)
    return [] if kind is None else domain_fetches(tool.get("allowed_domains"), where, "allowed_domains", kind)


def _is_document(block: dict[str, Any]) -> bool:
    return block.get("type") in ("document", "search_result")


_DESCRIBING_KEYS = ("title", "context", "source")
"""What describes a document (its title, its context) or a search result (its title, its source): the
model reads each with the text, so each is read as the text is."""


def _read_document(view: RequestView, block: dict[str, Any], where: str) -> None:
    """A document's or search result's texts: its source given as text, in base64 (a text file read as
    text, a PDF as binary content) or as content blocks, its own content blocks, and what describes it."""
    for key in _DESCRIBING_KEYS:
        if isinstance(described := block.get(key), str):
            view.parts.append(Part(Source.RETRIEVED_DOCUMENT, described, f"{where}.{key}"))
    source = as_dict(block.get("source"))
    if isinstance(source.get("data"), str) and source.get("type") == "text":
        view.parts.append(Part(Source.RETRIEVED_DOCUMENT, source["data"], f"{where}.source.data"))
    elif source.get("type") == "base64" and not is_media(media_type := as_str(source.get("media_type"))):
        data_where = f"{where}.source.data"
        file = read_file(source.get("data"), data_where, Source.RETRIEVED_DOCUMENT, media_type=media_type)
        add_file(view, file)
    for text_where, text in content_texts(source.get("content"), f"{where}.source.content"):
        view.parts.append(Part(Source.RETRIEVED_DOCUMENT, text, text_where))
    for text_where, text in content_texts(block.get("content"), f"{where}.content"):
        view.parts.append(Part(Source.RETRIEVED_DOCUMENT, text, text_where))


def _usage(value: Any) -> Usage:
    usage = as_dict(value)
    return Usage(as_int(usage.get("input_tokens")), as_int(usage.get("output_tokens")))


@dataclass(slots=True)
class _Block:
    block_type: str
    text: GrowingText = field(default_factory=GrowingText)
    call: ToolCall | None = None
    partial_json: GrowingText | None = None
    returned: list[Part] = field(default_factory=list)
    """What a server-run tool returned, for a result block (``is_server_result``)."""
    files: list[Attachment] = field(default_factory=list)
    """What of it is a binary document (``server_result_files``)."""


def _block_call(block: _Block) -> ToolCall:
    """A tool_use block's call, with the input its deltas streamed when they did."""
    assert block.call is not None
    if block.partial_json is None:
        return block.call
    call = block.call
    return replace(call, arguments=reparse_arguments(block.partial_json.text))


def _written(block: Any) -> list[str]:
    """The files a code execution tool's result block names (each output's ``file_id``, under any of the
    tool's versions: bash, text editor, Python): what the code wrote, kept by the provider's Files API."""
    block = as_dict(block)
    if not (as_str(block.get("type")) or "").endswith("code_execution_tool_result"):
        return []
    return [
        file for where, file in walk_strings(block.get("content")) if parse_locator(where)[-1:] == ["file_id"]
    ]


def _container_of(message: dict[str, Any]) -> list[str]:
    """The container a message's code ran in (``container: {"id": ...}``), in an answer or its delta."""
    container = as_str(as_dict(message.get("container")).get("id"))
    return [container] if container else []


class AnthropicStreamSession(BlockCallSession):
    READS_PLACES = True

    def __init__(self, filters: StreamFilters | None = None) -> None:
        super().__init__(filters)
        self._model: str | None = None
        self._stop_reason: str | None = None
        self._usage = Usage()
        self._containers: list[str] = []
        """The containers the answer's code ran in, as its start and its end named them."""
        self._written: list[str] = []
        """The files the answer's code wrote, as its result blocks named them."""
        self._blocks: dict[int, _Block] = {}
        # Block positions as the agent sees them: the SDKs index their snapshot by it, so no gaps.
        self._out_index: dict[int, int] = {}
        self._next_out_index = 0
        self._released_tool_uses = 0
        self._dropped: set[int] = set()
        self._sealed: set[int] = set()
        """Blocks sent whole after being held: nothing more is added to their input."""
        self._names_by_call_id: dict[str, str] = {}
        self._dropped_call_ids: set[str] = set()
        """Calls withheld: a server-run tool's result of one is withheld with it."""
        self._withheld: dict[int, str] = {}
        """Server-run tools' result blocks a document in them refuses (``StreamFilters.file_reader``), by
        index, with what the agent reads instead."""

    @property
    def completion(self) -> Completion:
        completion = Completion(model=self._model, usage=self._usage, stop_reason=self._stop_reason)
        completion.containers = list(dict.fromkeys(self._containers))
        completion.files_written = list(self._written)
        for index in sorted(self._blocks):
            block = self._blocks[index]
            if block.call is not None:
                completion.tool_calls.append(_block_call(block))
            elif block.returned or block.files:
                completion.add_read_content(block.returned)
                completion.attachments += block.files
            elif block.block_type in BLOCK_TEXT_KEYS and block.text:
                key = BLOCK_TEXT_KEYS[block.block_type]
                completion.text.append(
                    TextSegment(block.text.text, f"content[{index}].{key}", reasoning=key == "thinking")
                )
        return completion

    def _observe(self, event: SSEEvent, payload: Any) -> None:
        body = as_dict(payload)
        event_type = as_str(body.get("type")) or event.type
        if event_type == "message_start":
            message = as_dict(body.get("message"))
            self._model = as_str(message.get("model"))
            self._usage = _usage(message.get("usage"))
            self._containers += _container_of(message)
        elif event_type == "content_block_start":
            index = as_int(body.get("index")) or 0
            block = as_dict(body.get("content_block"))
            block_type = as_str(block.get("type")) or ""
            call = tool_use_call(block, f"content[{index}]") if block_type in TOOL_USE_TYPES else None
            if call is not None and call.id is not None:
                self._names_by_call_id[call.id] = call.name
            key = BLOCK_TEXT_KEYS.get(block_type)
            text = GrowingText((as_str(block.get(key)) if key else None) or "")
            files = server_result_files(block, f"content[{index}]") if is_server_result(block_type) else []
            self._written += _written(block)
            self._blocks[index] = _Block(
                block_type, text, call, returned=self._returned(block, index), files=files
            )
            notice = self._refusing(files)
            if notice is not None:
                self._withheld[index] = notice
        elif event_type == "content_block_delta" and (block_state := self._started_block(body)) is not None:
            delta = as_dict(body.get("delta"))
            key = DELTA_TEXT_KEYS.get(as_str(delta.get("type")) or "")
            if key:
                block_state.text.add(as_str(delta.get(key)) or "")
            elif delta.get("type") == "input_json_delta":
                if block_state.partial_json is None:
                    block_state.partial_json = GrowingText()
                block_state.partial_json.add(as_str(delta.get("partial_json")) or "")
        elif event_type == "message_delta":
            self._stop_reason = as_str(as_dict(body.get("delta")).get("stop_reason")) or self._stop_reason
            self._containers += _container_of(as_dict(body.get("delta")))
            usage = as_dict(body.get("usage"))
            self._usage = Usage(
                as_int(usage.get("input_tokens")) or self._usage.tokens_in,
                as_int(usage.get("output_tokens")) or self._usage.tokens_out,
            )
        elif event_type == "error":
            self.notes.append("upstream sent an error event")

    def _transform(self, event: SSEEvent, payload: Any) -> list[bytes]:
        body = as_dict(payload)
        event_type = as_str(body.get("type")) or event.type
        if event_type == "content_block_start":
            return self._block_start(event, body)
        if event_type in ("content_block_delta", "content_block_stop"):
            index = self._opened(body)
            if index is None:
                return self._unplaced(event_type)
            if index in self._held:
                return self._keep_held(index, event, body, stops=event_type == "content_block_stop")
            if index in self._dropped or (index in self._sealed and event_type == "content_block_delta"):
                return []
            renumbered = body.get("index") != self._out_index.get(index, index)
            body["index"] = self._out_index.get(index, index)
            if event_type == "content_block_stop":
                return [*self._end_text(index), *self._end_arguments(index), rewritten(event, body)]
            delta = as_dict(body.get("delta"))
            key = DELTA_TEXT_KEYS.get(as_str(delta.get("type")) or "")
            if key:
                text = delta.get(key)
                released = self._filter_text(f"content[{index}].{key}", as_str(text) or "")
                if not released:
                    return []
                if released == text and not renumbered:
                    return [self._as_sent(event, body)]
                delta[key] = released
                if not renumbered and isinstance(text, str):
                    return [self._text_written(event, body, text, released)]
            elif delta.get("type") == "input_json_delta" and self.filters.argument_filter is not None:
                released = self._filter_arguments(
                    f"content[{index}]", as_str(delta.get("partial_json")) or ""
                )
                if not released:
                    return []
                delta["partial_json"] = released
            return [rewritten(event, body)]
        if event_type == "message_delta":
            before = self._end_of_stream()
            delta = as_dict(body.get("delta"))
            if delta.get("stop_reason") == "tool_use" and self._dropped and not self._released_tool_uses:
                delta["stop_reason"] = "end_turn"
                return [*before, rewritten(event, body)]
            return [*before, event.raw]
        if event_type == "message_stop":
            return [*self._end_of_stream(), event.raw]
        return [event.raw]

    def _plain_texts(self, event: SSEEvent, payload: Any) -> list[tuple[str, str]] | None:
        body = payload if isinstance(payload, dict) else {}
        if (as_str(body.get("type")) or event.type) != "content_block_delta":
            return None
        index = self._opened(body)
        delta = body.get("delta")
        if (
            index is None
            or index in self._held
            or index in self._dropped
            or index in self._sealed
            or not isinstance(delta, dict)
        ):
            return None
        key = DELTA_TEXT_KEYS.get(as_str(delta.get("type")) or "")
        text = delta.get(key) if key else None
        if not isinstance(text, str):
            return None
        return [(f"content[{index}].{key}", text)] if text else []

    def _started_block(self, body: dict[str, Any]) -> _Block | None:
        """The block a delta's index names, if its start was read. A delta at no such place is joined to
        no block's text (filtered, it is dropped; unfiltered, clients place it differently): the residual
        scan reads its strings on their own."""
        index = as_position(body.get("index"))
        return None if index is None else self._blocks.get(index)

    def _opened(self, body: dict[str, Any]) -> int | None:
        """The block an event's index names, if a start opened it: the SDKs take index -1 or 1.0 for a
        block the filters did not read the event's text with."""
        index = as_position(body.get("index"))
        started = index is not None and (
            index in self._out_index or index in self._held or index in self._dropped
        )
        return index if started else None

    def _block_start(self, event: SSEEvent, body: dict[str, Any]) -> list[bytes]:
        index = as_int(body.get("index")) or 0
        block = as_dict(body.get("content_block"))
        block_type = as_str(block.get("type")) or ""
        if block_type in TOOL_USE_TYPES:
            call = tool_use_call(block, f"content[{index}]")
            instead = self._gate_block(index, call, event, body)
            if instead is not None:
                return instead
            if block_type == "tool_use":
                self._released_tool_uses += 1  # the calls the agent runs, whose end the stop reason says
            if block.get("input"):
                block["input"] = self._filter_argument_value(f"content[{index}]", block["input"])
        elif is_server_result(block_type):
            if block.get("tool_use_id") in self._dropped_call_ids:
                self._dropped.add(index)
                return []
            if index in self._withheld:
                # A binary document a finding in it refuses cannot be rewritten: the block is not sent.
                self._dropped.add(index)
                return self._notice_block(self._withheld.pop(index))
            for part, sent in zip(
                self._returned(block, index), self._returned(block, index, "content_block"), strict=True
            ):
                set_at(body, sent.where, self._read_content_out(part))
        self._out_index[index] = self._next_out_index
        self._next_out_index += 1
        body["index"] = self._out_index[index]
        key = BLOCK_TEXT_KEYS.get(as_str(block.get("type")) or "")
        initial_text = as_str(block.get(key)) if key else None
        if key and initial_text:
            block[key] = self._filter_text(f"content[{index}].{key}", initial_text)
        return [rewritten(event, body)]

    def _handled(self, event: SSEEvent, payload: Any) -> Collection[Path]:
        body = as_dict(payload)
        event_type = as_str(body.get("type")) or event.type
        if event_type == "content_block_delta" and self._started_block(body) is not None:
            delta = as_dict(body.get("delta"))
            key = DELTA_TEXT_KEYS.get(as_str(delta.get("type")) or "")
            if key:
                return {("delta", key)}
            if delta.get("type") == "input_json_delta":
                return {("delta", "partial_json")}
        elif event_type == "content_block_start":
            block = as_dict(body.get("content_block"))
            block_type = as_str(block.get("type")) or ""
            if block_type in BLOCK_TEXT_KEYS:
                return {("content_block", BLOCK_TEXT_KEYS[block_type])}
            if block_type in TOOL_USE_TYPES:
                return {("content_block", "input")}
            return {locator_steps(part.where) for part in self._returned(block, 0, "content_block")}
        return ()

    def _returned(self, block: dict[str, Any], index: int, where: str | None = None) -> list[Part]:
        """What a server-run tool's result block at ``index`` returned, located in the completion or, with
        ``where``, at that place."""
        if not is_server_result(as_str(block.get("type")) or ""):
            return []
        return server_result_parts(block, where or f"content[{index}]", self._names_by_call_id)

    def _drop_block(self, index: int, call: ToolCall) -> list[bytes]:
        self._dropped.add(index)
        if call.id is not None:
            self._dropped_call_ids.add(call.id)
        notice = self._notice(call)
        return self._notice_block(notice) if notice else []

    def _complete_held(self, index: int) -> list[bytes]:
        """A held tool_use block stopped (or the message ended): decided on its complete input, its
        events are sent as they came, or the block is dropped for its notice."""
        held = self._held.pop(index)
        block = self._blocks.get(index)
        if block is None or block.call is None:
            call = tool_use_call(as_dict(held[0][1].get("content_block")), f"content[{index}]")
        else:
            call = _block_call(block)
        if self._decide(call, complete=True) == "drop":
            return self._drop_block(index, call)
        output = self._replay(held)
        self._sealed.add(index)
        return output

    def _notice_block(self, notice: str) -> list[bytes]:
        index = self._next_out_index
        self._next_out_index += 1
        return [
            synthesised(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            ),
            self._text_delta(index, notice),
            synthesised({"type": "content_block_stop", "index": index}, "content_block_stop"),
        ]

    def _text_delta(self, out_index: int, text: str, key: str = "text") -> bytes:
        delta_type = "thinking_delta" if key == "thinking" else "text_delta"
        payload = {
            "type": "content_block_delta",
            "index": out_index,
            "delta": {"type": delta_type, key: text},
        }
        return synthesised(payload, "content_block_delta")

    def _end_text(self, index: int) -> list[bytes]:
        """The delta carrying what the block's text filter still held, before the block stops."""
        output = []
        for key in BLOCK_TEXT_KEYS.values():
            flushed = self._close_channel(f"content[{index}].{key}")
            if flushed:
                output.append(self._text_delta(self._out_index.get(index, index), flushed, key))
        return output

    def _end_arguments(self, index: int) -> list[bytes]:
        flushed = self._close_arguments(f"content[{index}]")
        if not flushed:
            return []
        payload = {
            "type": "content_block_delta",
            "index": self._out_index.get(index, index),
            "delta": {"type": "input_json_delta", "partial_json": flushed},
        }
        return [synthesised(payload, "content_block_delta")]

    def _end_of_stream(self) -> list[bytes]:
        output = [piece for index in list(self._held) for piece in self._complete_held(index)]
        for where in self._open_argument_channels():
            output.extend(self._end_arguments(int(parse_locator(where)[1])))
        for where in self._open_channels():
            output.extend(self._end_text(int(parse_locator(where)[1])))
        return output
