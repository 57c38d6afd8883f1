"""OpenAI Responses (``/v1/responses``): instructions, input items, output items, named SSE events."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import Any

from proxy.dialects.attachments import add_file, domain_fetches, read_fetched, read_file, read_file_name
from proxy.dialects.base import (
    Dialect,
    ErrorResponse,
    as_dict,
    as_int,
    as_list,
    as_position,
    as_str,
    read_call_input,
    require_object,
)
from proxy.dialects.browsing import hosted_tool_browsing, request_browsing
from proxy.dialects.locator import format_locator, parse_locator, set_at
from proxy.dialects.openai_chat import openai_error
from proxy.dialects.schema import content_texts, schema_descriptions
from proxy.dialects.stream import (
    MISPLACED_RULE,
    GrowingText,
    Path,
    StreamFilters,
    StreamSession,
    arguments_text,
    dump_json,
    rewritten,
    synthesised,
)
from proxy.exchange import Completion, DeclaredTool, Part, RequestView, Source, TextSegment, ToolCall, Usage
from proxy.wire.sse import SSEEvent

ROLE_SOURCES = {
    "system": Source.SYSTEM,
    "developer": Source.SYSTEM,
    "user": Source.USER,
    "assistant": Source.ASSISTANT,
}
CONTENT_TEXT_KEYS = {"output_text": "text", "input_text": "text", "refusal": "refusal"}
TERMINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")


@dataclass(frozen=True, slots=True)
class _Channel:
    """A text channel of the stream: the list in its item that holds it (``content`` or ``summary``),
    the event field that indexes that list, and the field of the part that carries the text."""

    delta_type: str
    parts: str
    index_field: str
    key: str
    reasoning: bool = False

    def where(self, position: int, body: dict[str, Any]) -> str:
        return f"output[{position}].{self.parts}[{part_index(body, self.index_field)}].{self.key}"


def part_index(body: dict[str, Any], index_field: str) -> int:
    """The part of its item an event's text is read into: the first where the index names no place."""
    return as_position(body.get(index_field)) or 0


PART_INDEX_FIELDS = ("content_index", "summary_index")

_CHANNELS = [
    _Channel("response.output_text.delta", "content", "content_index", "text"),
    _Channel("response.refusal.delta", "content", "content_index", "refusal"),
    _Channel("response.reasoning_text.delta", "content", "content_index", "text", reasoning=True),
    _Channel("response.reasoning_summary_text.delta", "summary", "summary_index", "text", reasoning=True),
]
DELTA_CHANNELS = {channel.delta_type: channel for channel in _CHANNELS}
DONE_CHANNELS = {channel.delta_type.removesuffix(".delta") + ".done": channel for channel in _CHANNELS}
ITEM_TEXTS = {"message": ("content",), "reasoning": ("summary", "content")}
"""Output items whose parts carry text, and the lists that hold the parts."""
PART_TEXT_KEYS = {**CONTENT_TEXT_KEYS, "reasoning_text": "text", "summary_text": "text"}


def _item_type(item: dict[str, Any]) -> str:
    return as_str(item.get("type")) or ("message" if "role" in item else "")


CALL_ITEMS: dict[str, tuple[str, str | None]] = {
    "function_call": ("arguments", None),
    "custom_tool_call": ("input", None),
    "local_shell_call": ("action", "local_shell"),
    "shell_call": ("action", "shell"),
    "apply_patch_call": ("operation", "apply_patch"),
    "computer_call": ("action", "computer"),
    "mcp_call": ("arguments", None),
    "mcp_approval_request": ("arguments", None),
    "web_search_call": ("action", "web_search"),
    "file_search_call": ("queries", "file_search"),
    "code_interpreter_call": ("code", "code_interpreter"),
}
"""Items that call a tool, the agent's (a function, a custom or built-in tool, the computer) or one the API
runs (web and file search, the code interpreter, a remote MCP server's tool, and the approval such a call
asks of the agent): the field holding what the call passes (a custom tool takes free-form text, a
built-in tool an object), and a built-in tool's name (None: the item's ``name``)."""
RAN_UPSTREAM_ITEMS = frozenset({"mcp_call", "web_search_call", "file_search_call", "code_interpreter_call"})
"""Calls the API has run by the time it answers (an ``mcp_approval_request`` waits for the agent's
approval; a ``computer_call`` is the agent's to run)."""
SERVER_TOOL_TYPES = ("web_search", "file_search", "code_interpreter", "image_generation")
"""Prefixes of the tool types the API runs itself (``web_search_preview``), named as their calls are;
``local_shell``, ``shell`` and ``computer_use*`` are the agent's to run, their calls gated in the answer."""
ARGUMENT_EVENTS = {
    "function_call": "response.function_call_arguments",
    "custom_tool_call": "response.custom_tool_call_input",
    "mcp_call": "response.mcp_call_arguments",
    "code_interpreter_call": "response.code_interpreter_call_code",
}
"""The call items whose arguments stream, which the argument filter joins as they come (a function's, a
custom tool's free-form input, and what the API runs: a remote MCP tool's arguments, the code
interpreter's code), each with the name its events streaming them (``.delta``) and giving them whole
(``.done``) begin with; the item's field holding them, and the ``.done`` event's, is its ``CALL_ITEMS``
field."""
INPUT_DELTAS = frozenset(f"{events}.delta" for events in ARGUMENT_EVENTS.values())
INPUT_DONES = {f"{events}.done": CALL_ITEMS[item_type][0] for item_type, events in ARGUMENT_EVENTS.items()}
OTHER_ARGUMENTS = "a call's arguments read as the other of its deltas joined and the event giving them whole"
CALL_IDENTITY = ("type", "name", "call_id")
"""What in a call item says which tool it calls and which call an answer goes to."""
OUTPUT_ITEMS = (
    "function_call_output",
    "custom_tool_call_output",
    "local_shell_call_output",
    "shell_call_output",
    "apply_patch_call_output",
    "computer_call_output",
)


def item_call(item: dict[str, Any], where: str) -> ToolCall:
    field_name, built_in = CALL_ITEMS.get(_item_type(item), ("arguments", None))
    arguments = item.get(field_name, "")
    return ToolCall(
        id=as_str(item.get("call_id")) or as_str(item.get("id")),
        name=built_in or as_str(item.get("name")) or "",
        arguments=arguments if isinstance(arguments, str) else dump_json(arguments),
        where=where,
        ran_upstream=_item_type(item) in RAN_UPSTREAM_ITEMS,
    )


def output_parts(item: dict[str, Any], base: str, tool_name: str | None = None) -> list[Part]:
    """What the agent sends back as a call's result (a ``function_call_output`` item), read as a tool's
    result is."""
    call_id = as_str(item.get("call_id"))
    return [
        Part(Source.TOOL_RESULT, text, where, tool_name, call_id)
        for where, text in content_texts(item.get("output"), f"{base}.output", ("text", "stdout", "stderr"))
    ]


def returned_parts(item: dict[str, Any], base: str) -> list[Part]:
    """What a tool the API ran returned in its own item, read as the model reads a tool's result: a remote
    MCP tool's ``output`` (or ``error``), the texts a file search found, the code interpreter's logs; and
    the descriptions of the tools an MCP server listed (``mcp_list_tools``), where poisoning hides."""
    item_type = _item_type(item)
    texts: list[tuple[str, str]] = []
    if item_type == "mcp_call":
        texts = [(f"{base}.{key}", text) for key in ("output", "error") if (text := as_str(item.get(key)))]
    elif item_type == "file_search_call":
        texts = list(content_texts(item.get("results"), f"{base}.results"))
    elif item_type == "code_interpreter_call":
        texts = list(content_texts(item.get("outputs"), f"{base}.outputs", ("logs",)))
    call = item_call(item, base)
    parts = [Part(Source.TOOL_RESULT, text, where, call.name, call.id) for where, text in texts]
    for position, raw_tool in enumerate(as_list(item.get("tools")) if item_type == "mcp_list_tools" else ()):
        tool = as_dict(raw_tool)
        described = {key: tool[key] for key in ("description", "input_schema") if key in tool}
        for where, text in schema_descriptions(described, (*parse_locator(base), "tools", position)):
            parts.append(Part(Source.TOOL_DESCRIPTION, text, where, tool_name=as_str(tool.get("name"))))
    return parts


def _read_files(
    view: RequestView,
    content: Any,
    base: str,
    source: Source,
    tool_name: str | None = None,
    call_id: str | None = None,
) -> None:
    """The files a message's or a tool output's parts carry or give by URL (``_read_file``); an output
    that is one part (a ``computer_call_output``'s screenshot) is read as one."""
    if isinstance(content, dict):
        _read_file(view, content, base, source, tool_name, call_id)
    for index, raw_part in enumerate(as_list(content)):
        _read_file(view, as_dict(raw_part), f"{base}[{index}]", source, tool_name, call_id)


def _read_file(
    view: RequestView,
    part: dict[str, Any],
    where: str,
    source: Source,
    tool_name: str | None = None,
    call_id: str | None = None,
) -> None:
    """The file an ``input_file`` part carries in ``file_data`` and its name, and the file or image an
    ``input_file``, ``input_image`` or ``computer_screenshot`` part gives by URL, for the API to fetch."""
    if part.get("type") == "input_file":
        read_file_name(view, part.get("filename"), f"{where}.filename", source, tool_name, call_id)
        add_file(view, read_file(part.get("file_data"), f"{where}.file_data", source, tool_name, call_id))
        read_fetched(view, part.get("file_url"), f"{where}.file_url", "file")
    elif part.get("type") in ("input_image", "computer_screenshot"):
        read_fetched(view, part.get("image_url"), f"{where}.image_url", "image")


def _read_continuation(view: RequestView, body: dict[str, Any]) -> None:
    """What the request continues (a stored response, a conversation given by id or as ``{"id": ...}``),
    and whether the provider keeps this exchange (``store`` defaults to true)."""
    previous = as_str(body.get("previous_response_id"))
    if previous:
        view.continues["previous_response_id"] = previous
    conversation = body.get("conversation")
    named = as_str(conversation) or as_str(as_dict(conversation).get("id"))
    if named:
        view.continues["conversation"] = named
    for position, tool in enumerate(as_list(body.get("tools"))):
        # A container named by id is one an earlier answer's code ran in; ``{"type": "auto"}`` is a new one.
        container = as_str(as_dict(tool).get("container"))
        if container:
            view.continues[f"tools[{position}].container"] = container
    view.kept = body.get("store") is not False


def _read_prompt_variables(view: RequestView, prompt: Any) -> None:
    """A stored prompt's ``variables``, which the API writes into the prompt: a string or an
    ``input_text`` as the user's text, an ``input_file`` or ``input_image`` as the same part in ``input``."""
    for name, value in as_dict(as_dict(prompt).get("variables")).items():
        where = format_locator(("prompt", "variables", name))
        variable = as_dict(value)
        if isinstance(value, str):
            view.parts.append(Part(Source.USER, value, where))
        elif variable.get("type") == "input_text" and isinstance(variable.get("text"), str):
            view.parts.append(Part(Source.USER, variable["text"], f"{where}.text"))
        else:
            _read_file(view, variable, where, Source.USER)


def _declared_tool(tool: dict[str, Any], where: str) -> DeclaredTool | None:
    """A tool the API runs itself: an MCP server (by its label, and its address or the connector or tunnel
    it is; the tools it allows, given as names or ``{"tool_names": [...]}``, None where it names none),
    or a built-in tool named by its type."""
    tool_type = as_str(tool.get("type")) or ""
    if tool_type == "mcp":
        allowed = tool.get("allowed_tools")
        # A filter without names (``read_only``) takes the server's word for what its tools do: all of them.
        listed = as_dict(allowed).get("tool_names") if isinstance(allowed, dict) else allowed
        connector = as_str(tool.get("connector_id")) or as_str(tool.get("tunnel_id"))
        return DeclaredTool(
            as_str(tool.get("server_label")) or connector or "",
            where,
            as_str(tool.get("server_url")),
            None if listed is None else tuple(name for name in as_list(listed) if isinstance(name, str)),
            mcp_server=True,
            connector=connector,
            asks_approval=tool.get("require_approval") == "always",
            approval_asked_for=_approval_asked_for(tool.get("require_approval")),
        )
    prefix = next((prefix for prefix in SERVER_TOOL_TYPES if tool_type.startswith(prefix)), None)
    return DeclaredTool(prefix, where) if prefix is not None else None


def _approval_asked_for(approval: Any) -> tuple[str, ...]:
    """The tools a ``require_approval`` filter object (``{"always": {"tool_names": [...]}, "never":
    {...}}``) names under ``always`` and not under ``never``: the API asks before each of their calls. A
    tool named under ``never``, or by neither, is asked about no more than where ``require_approval`` is
    absent; a ``read_only`` filter takes the server's word for what its tools do, and names none."""
    if not isinstance(approval, dict):
        return ()

    def named(key: str) -> set[str]:
        names = as_list(as_dict(approval.get(key)).get("tool_names"))
        return {name for name in names if isinstance(name, str)}

    return tuple(sorted(named("always") - named("never")))


def _item_texts(item: dict[str, Any], base: str) -> list[TextSegment]:
    """The texts of a message's or a reasoning item's parts."""
    segments: list[TextSegment] = []
    reasoning = _item_type(item) == "reasoning"
    for parts in ITEM_TEXTS.get(_item_type(item), ()):
        for position, raw_part in enumerate(as_list(item.get(parts))):
            part = as_dict(raw_part)
            key = PART_TEXT_KEYS.get(as_str(part.get("type")) or "")
            text = as_str(part.get(key)) if key else None
            if key and text:
                segments.append(TextSegment(text, f"{base}.{parts}[{position}].{key}", reasoning))
    return segments


def notice_item(item_id: str, text: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


class OpenAIResponses(Dialect):
    name = "openai_responses"

    def _request_from(self, document: Any) -> RequestView:
        body = require_object(document)
        view = self._view_with_model_and_stream(body)
        _read_continuation(view, body)
        instructions = as_str(body.get("instructions"))
        if instructions is not None:
            view.parts.append(Part(Source.SYSTEM, instructions, "instructions"))
        given_input = body.get("input")
        if isinstance(given_input, str):
            view.parts.append(Part(Source.USER, given_input, "input"))
        _read_prompt_variables(view, body.get("prompt"))
        names_by_call_id: dict[str, str] = {}
        for position, raw_item in enumerate(as_list(given_input)):
            item = as_dict(raw_item)
            base = f"input[{position}]"
            item_type = _item_type(item)
            if item_type == "message":
                source = ROLE_SOURCES.get(as_str(item.get("role")) or "", Source.USER)
                for where, text in content_texts(item.get("content"), f"{base}.content", ("text", "refusal")):
                    view.parts.append(Part(source, text, where))
                _read_files(view, item.get("content"), f"{base}.content", source)
            elif item_type in CALL_ITEMS:
                call = item_call(item, base)
                view.tool_calls.append(call)
                if call.id is not None:
                    names_by_call_id[call.id] = call.name
                view.parts.extend(returned_parts(item, base))
                if isinstance(arguments := item.get("arguments"), dict | list):
                    read_call_input(view, arguments, ("input", position, "arguments"), call)
            elif item_type == "mcp_list_tools":
                view.parts.extend(returned_parts(item, base))
            elif item_type in OUTPUT_ITEMS:
                call_id = as_str(item.get("call_id"))
                tool_name = names_by_call_id.get(call_id or "")
                view.parts.extend(output_parts(item, base, tool_name))
                _read_files(
                    view, item.get("output"), f"{base}.output", Source.TOOL_RESULT, tool_name, call_id
                )
        for position, raw_tool in enumerate(as_list(body.get("tools"))):
            tool = as_dict(raw_tool)
            name = (
                as_str(tool.get("name")) or as_str(tool.get("server_label")) or as_str(tool.get("type")) or ""
            )
            view.tools_offered.append(name)
            declared = _declared_tool(tool, f"tools[{position}]")
            if declared is not None:
                view.declared_tools.append(declared)
            if (as_str(tool.get("type")) or "").startswith("web_search"):
                domains = as_dict(tool.get("filters")).get("allowed_domains")
                view.fetches += domain_fetches(
                    domains, f"tools[{position}]", "filters.allowed_domains", "web_search"
                )
            view.fetches += hosted_tool_browsing(tool, f"tools[{position}]")
            described = {key: tool[key] for key in ("description", "parameters") if key in tool}
            for where, text in schema_descriptions(described, ("tools", position)):
                view.parts.append(Part(Source.TOOL_DESCRIPTION, text, where, tool_name=name))
        view.fetches += request_browsing(body)
        return view

    def _completion_from(self, document: Any) -> Completion:
        body = require_object(document)
        completion = Completion(model=as_str(body.get("model")), stop_reason=as_str(body.get("status")))
        completion.response_id = as_str(body.get("id"))
        for position, raw_item in enumerate(as_list(body.get("output"))):
            item = as_dict(raw_item)
            item_type = _item_type(item)
            if item_type in ITEM_TEXTS:
                completion.text.extend(_item_texts(item, f"output[{position}]"))
            elif item_type in CALL_ITEMS:
                completion.tool_calls.append(item_call(item, f"output[{position}]"))
            completion.add_read_content(returned_parts(item, f"output[{position}]"))
            completion.containers += _container_of(item)
        completion.usage = _usage(body.get("usage"))
        return completion

    def _drop_calls(self, document: Any, dropped: list[ToolCall], notice: str | None) -> None:
        removed = {int(parse_locator(call.where)[1]) for call in dropped}
        output = [
            item for position, item in enumerate(as_list(document.get("output"))) if position not in removed
        ]
        if notice is not None:
            output.append(notice_item("msg_egressguard_notice", notice))
        document["output"] = output

    def error_response(self, status: int, message: str, code: str) -> ErrorResponse:
        return openai_error(status, message, code)

    def stream_session(self, filters: StreamFilters | None = None) -> StreamSession:
        return ResponsesStreamSession(filters)


def _usage(value: Any) -> Usage:
    usage = as_dict(value)
    return Usage(as_int(usage.get("input_tokens")), as_int(usage.get("output_tokens")))


def _container_of(item: dict[str, Any]) -> list[str]:
    """The container an output item's code ran in (a code interpreter call's ``container_id``)."""
    container = as_str(item.get("container_id"))
    return [container] if container else []


@dataclass(slots=True)
class _Item:
    item_type: str
    texts: dict[str, tuple[GrowingText, bool]] = field(default_factory=dict)
    """By locator, in the order the texts began: each text, and whether it is reasoning."""
    call: ToolCall | None = None
    arguments: GrowingText | None = None
    """The call's arguments as their deltas brought them, until they are done."""
    streamed: str | None = None
    """Once an event gave the arguments whole (their ``.done``, the item given again): what their deltas
    brought, which a client joining the deltas runs (and the answer's item is held to,
    ``_released_arguments_of``) where the two differ."""
    returned: list[Part] = field(default_factory=list)
    """What the tool the API ran returned (``returned_parts``), as the item's last event gave it."""

    def tool_call(self) -> ToolCall | None:
        if self.call is None or self.arguments is None:
            return self.call
        return replace(self.call, arguments=self.arguments.text)

    def joined(self) -> str | None:
        """What the call's deltas brought, joined, where any came."""
        return self.streamed if self.arguments is None else self.arguments.text

    def other_reading(self, recorded: ToolCall) -> ToolCall | None:
        """Where an event gave the call's arguments whole otherwise than its deltas joined them, the one
        of those two readings other than the one the answer is ``recorded`` as."""
        call = self.tool_call()
        if call is None or self.streamed in (None, call.arguments):
            return None
        return call if recorded.arguments == self.streamed else replace(call, arguments=self.streamed)

    def segments(self) -> list[TextSegment]:
        return [
            TextSegment(text.text, where, reasoning)
            for where, (text, reasoning) in self.texts.items()
            if text
        ]


class ResponsesStreamSession(StreamSession):
    READS_PLACES = True
    HANDLED_BY_SHAPE = True

    def __init__(self, filters: StreamFilters | None = None) -> None:
        super().__init__(filters)
        self._model: str | None = None
        self._status: str | None = None
        self._response_id: str | None = None
        self._containers: dict[str, None] = {}
        """The containers the answer's items ran code in, in the order they came."""
        self._usage = Usage()
        self._items: dict[int, _Item] = {}
        # Output positions as the agent sees them: dropped calls leave no gap, or become a notice item.
        self._out_index: dict[int, int] = {}
        self._notices: dict[int, dict[str, Any]] = {}
        self._dropped: set[int] = set()
        self._next_out_index = 0
        self._call_item_ids: dict[int, str | None] = {}
        self._delta_types: dict[int, str] = {}
        """By position, the type of the events streaming the call's arguments there: what its filter held
        goes out in one of them."""
        self._channel_of: dict[str, _Channel] = {}
        self._held: dict[int, list[tuple[SSEEvent, dict[str, Any]]]] = {}
        """Events of the function calls the gate holds until their arguments are done, by position."""
        self._held_bytes: dict[int, int] = {}
        self._sealed: set[int] = set()
        """Calls sent whole after being held: later events carry the arguments they were decided on."""
        self._released_content: dict[str, tuple[str, str]] = {}
        """By locator, read content as it came and as it went out (``_rewrite_item``)."""
        self._released_calls: dict[int, dict[str, Any]] = {}
        """By position, what names the call released there (``CALL_IDENTITY``), as its added item said:
        the item's last event and the final response are held to it."""

    @property
    def completion(self) -> Completion:
        completion = Completion(model=self._model, usage=self._usage, stop_reason=self._status)
        completion.response_id = self._response_id
        completion.containers = list(self._containers)
        for position in sorted(self._items):
            item = self._items[position]
            call = item.tool_call()
            if call is not None:
                # Recorded as the reading the gate withheld it for, where it was one of several.
                completion.tool_calls.append(self._denied.get(call.where, call))
            completion.text.extend(item.segments())
            completion.add_read_content(item.returned)
        return completion

    def other_readings(self) -> list[tuple[str, Completion]]:
        """Beside the readings of ``StreamSession``: each call whose deltas joined give other arguments
        than the event giving them whole (its ``.done``, its item's last event, the final response), read
        as the one of the two its completion does not hold. A client joining the deltas (the SDK's
        stream helper) runs what they say, one reading the whole event what that says."""
        others: list[ToolCall] = []
        for item in self._items.values():
            call = item.tool_call()
            other = None if call is None else item.other_reading(self._denied.get(call.where, call))
            if other is not None:
                others.append(other)
        readings = super().other_readings()
        return [*readings, (OTHER_ARGUMENTS, Completion(tool_calls=others))] if others else readings

    def _observe(self, event: SSEEvent, payload: Any) -> None:
        body = as_dict(payload)
        event_type = as_str(body.get("type")) or event.type
        response = body.get("response")
        if isinstance(response, dict):
            self._model = as_str(response.get("model")) or self._model
            self._status = as_str(response.get("status")) or self._status
            self._response_id = as_str(response.get("id")) or self._response_id
            if isinstance(response.get("usage"), dict):
                self._usage = _usage(response["usage"])
            if event_type in TERMINAL_EVENTS:
                for position, raw_item in enumerate(as_list(response.get("output"))):
                    self._record_item(position, as_dict(raw_item))
            return
        if event_type == "error":
            self.notes.append("upstream sent an error event")
        output_index = as_position(body.get("output_index"))
        if output_index is None:
            return
        if event_type in ("response.output_item.added", "response.output_item.done"):
            self._record_item(output_index, as_dict(body.get("item")))
            return
        # Read twice for every delta (the stream and its read-back): no closure is made for each.
        item = self._items.get(output_index)
        if item is None:
            item = self._items[output_index] = _Item("message")
        delta = as_str(body.get("delta")) or ""
        channel = DELTA_CHANNELS.get(event_type)
        if channel is not None:
            where = channel.where(output_index, body)
            text = item.texts.get(where)
            if text is None:
                text = item.texts[where] = (GrowingText(), channel.reasoning)
            text[0].add(delta)
        elif event_type in INPUT_DELTAS and item.call is not None:
            if item.arguments is None:
                item.arguments = GrowingText(item.call.arguments)
            item.arguments.add(arguments_text(body.get("delta")))
        elif event_type in INPUT_DONES and item.call is not None:
            done = arguments_text(body.get(INPUT_DONES[event_type]))
            if done:
                item.streamed = item.joined()
                item.call.arguments, item.arguments = done, None

    def _record_item(self, position: int, item: dict[str, Any]) -> None:
        item_type = _item_type(item)
        self._containers.update(dict.fromkeys(_container_of(item)))
        where = f"output[{position}]"
        if item_type in CALL_ITEMS:
            before = self._items.get(position)
            self._items[position] = _Item(item_type, call=item_call(item, where))
            if before is not None and before.call is not None:
                # Given again whole, the call is still what its deltas brought to a client joining them.
                self._items[position].streamed = before.joined()
        if item_type in CALL_ITEMS or item_type == "mcp_list_tools":
            self._items.setdefault(position, _Item(item_type)).returned = returned_parts(item, where)
        if item_type in ITEM_TEXTS:
            recorded = self._items.setdefault(position, _Item(item_type))
            for segment in _item_texts(item, where):
                recorded.texts[segment.where] = (GrowingText(segment.text), segment.reasoning)
        self._items.setdefault(position, _Item(item_type))

    def _transform(self, event: SSEEvent, payload: Any) -> list[bytes]:
        body = as_dict(payload)
        event_type = as_str(body.get("type")) or event.type
        if event_type in TERMINAL_EVENTS and isinstance(body.get("response"), dict):
            flushed_events = self._end_of_stream(body.get("sequence_number"))
            self._rewrite_output(body["response"])
            return [*flushed_events, rewritten(event, body)]
        if "output_index" not in body:
            return [event.raw]
        position = as_position(body.get("output_index"))
        if position is None:
            return self._unplaced(event_type)
        renumbered = False
        for index_field in PART_INDEX_FIELDS:
            if index_field in body:
                # The event leaves with the part its text was read into, which a client reading "1" or
                # 1.0 as part 1 would otherwise join it to.
                renumbered = renumbered or as_position(body[index_field]) is None
                body[index_field] = part_index(body, index_field)
        if event_type == "response.output_item.added":
            return self._item_added(event, body, position)
        if position in self._held:
            self._held[position].append((event, body))
            self._held_bytes[position] += len(event.raw)
            ending = event_type in INPUT_DONES or event_type == "response.output_item.done"
            if ending or self._held_too_long(self._held_bytes[position]):
                return self._complete_held(position)
            return []
        if position in self._dropped:
            return []
        if position not in self._out_index:
            return self._unplaced(event_type)
        renumbered = renumbered or body["output_index"] != self._out_index[position]
        body["output_index"] = self._out_index[position]
        before: list[bytes] = []
        if event_type in DELTA_CHANNELS:
            where = DELTA_CHANNELS[event_type].where(position, body)
            self._channel_of[where] = DELTA_CHANNELS[event_type]
            delta = body.get("delta")
            released = self._filter_text(where, as_str(delta) or "")
            if not released:
                return []
            if released == delta and not renumbered:
                return [self._as_sent(event, body)]
            body["delta"] = released
            if not renumbered and isinstance(delta, str):
                return [self._text_written(event, body, delta, released)]
        elif event_type in DONE_CHANNELS:
            channel = DONE_CHANNELS[event_type]
            where = channel.where(position, body)
            flushed = self._close_channel(where)
            if flushed:
                before.append(self._text_delta(channel, body, flushed))
            body[channel.key] = self.released_text.get(where, "")
        elif event_type in INPUT_DELTAS:
            self._delta_types.setdefault(position, event_type)
            # An object a server sends for the text goes on as the JSON text it was read and decided as.
            released = self._filter_arguments(f"output[{position}]", arguments_text(body.get("delta")))
            if not released:
                return []
            body["delta"] = released
        elif event_type in INPUT_DONES:
            before.extend(self._end_arguments(position, body))
            if self.filters.argument_filter is not None or position in self._sealed:
                field_name = INPUT_DONES[event_type]
                body[field_name] = self._released_arguments_of(position, body.get(field_name))
        elif event_type == "response.content_part.done":
            self._rewrite_part(
                as_dict(body.get("part")),
                f"output[{position}].content[{part_index(body, 'content_index')}]",
            )
        elif event_type == "response.reasoning_summary_part.done":
            self._rewrite_part(
                as_dict(body.get("part")),
                f"output[{position}].summary[{part_index(body, 'summary_index')}]",
            )
        elif event_type == "response.output_item.done":
            item = as_dict(body.get("item"))
            if _item_type(item) in CALL_ITEMS and position not in self._released_calls:
                return self._unplaced(event_type)
            if _item_type(item) in ARGUMENT_EVENTS:
                before.extend(self._end_arguments(position, body))
            self._rewrite_item(item, position)
        return [*before, rewritten(event, body)]

    def _plain_texts(self, event: SSEEvent, payload: Any) -> list[tuple[str, str]] | None:
        body = payload if isinstance(payload, dict) else {}
        channel = DELTA_CHANNELS.get(as_str(body.get("type")) or event.type)
        position = as_position(body.get("output_index"))
        delta = body.get("delta")
        if (
            channel is None
            or position is None
            or position in self._held
            or position in self._dropped
            or position not in self._out_index
            or not isinstance(delta, str)
        ):
            return None
        return [(channel.where(position, body), delta)] if delta else []

    def _item_added(self, event: SSEEvent, body: dict[str, Any], position: int) -> list[bytes]:
        item = as_dict(body.get("item"))
        if _item_type(item) in CALL_ITEMS and self.filters.tool_gate is not None:
            call = item_call(item, f"output[{position}]")
            decision = self._decide(call)
            if decision == "hold":
                self._held[position] = [(event, body)]
                self._held_bytes[position] = len(event.raw)
                return []
            if decision == "drop":
                return self._drop_call(body, position, call)
        self._out_index[position] = self._next_out_index
        self._next_out_index += 1
        if _item_type(item) in CALL_ITEMS:
            self._released_calls[position] = {key: item[key] for key in CALL_IDENTITY if key in item}
        else:
            self._released_calls.pop(position, None)
        item_type = _item_type(item)
        if item_type in ARGUMENT_EVENTS:
            self._call_item_ids[position] = as_str(item.get("id")) or as_str(body.get("item_id"))
            self._delta_types[position] = f"{ARGUMENT_EVENTS[item_type]}.delta"
            field_name = CALL_ITEMS[item_type][0]
            arguments = item.get(field_name)
            # Opens the call's argument channel, so what it holds is flushed however the call ends.
            released = self._filter_arguments(
                f"output[{position}]", arguments if isinstance(arguments, str) else ""
            )
            if self.filters.argument_filter is not None and isinstance(arguments, str):
                item[field_name] = released
                return [rewritten(event, {**body, "output_index": self._out_index[position]})]
        if self._out_index[position] == position:
            return [event.raw]
        body["output_index"] = self._out_index[position]
        return [rewritten(event, body)]

    def _drop_call(self, body: dict[str, Any], position: int, call: ToolCall) -> list[bytes]:
        self._dropped.add(position)
        notice = self._notice(call)
        if notice is None:
            return []
        self._out_index[position] = self._next_out_index
        self._next_out_index += 1
        self._notices[position] = notice_item(f"msg_egressguard_{position}", notice)
        return self._notice_events(body, position, notice)

    def _complete_held(self, position: int) -> list[bytes]:
        """A held call's arguments are done: decided on them, its events are sent as they came (their
        arguments pinned to what was decided on), or the call is dropped for its notice."""
        held = self._held.pop(position)
        item = self._items.get(position)
        call = item.tool_call() if item is not None else None
        first_body = held[0][1]
        if call is None:
            call = item_call(as_dict(first_body.get("item")), f"output[{position}]")
        streamed = item.streamed if item is not None else None
        readings = [] if streamed in (None, call.arguments) else [replace(call, arguments=streamed)]
        if self._decide(call, complete=True, readings=readings) == "drop":
            return self._drop_call(first_body, position, self._denied.get(call.where, call))
        self._sealed.add(position)
        return self._replay(held)

    def _notice_events(self, body: dict[str, Any], position: int, notice: str) -> list[bytes]:
        item = self._notices[position]
        sequence = body.get("sequence_number")
        located = {"item_id": item["id"], "output_index": self._out_index[position], "content_index": 0}
        empty_part = {"type": "output_text", "text": "", "annotations": []}
        in_progress = {**item, "status": "in_progress", "content": []}
        events = [
            {
                "type": "response.output_item.added",
                "output_index": located["output_index"],
                "item": in_progress,
            },
            {"type": "response.content_part.added", **located, "part": empty_part},
            {"type": "response.output_text.delta", **located, "delta": notice, "logprobs": []},
            {"type": "response.output_text.done", **located, "text": notice, "logprobs": []},
            {"type": "response.content_part.done", **located, "part": item["content"][0]},
            {"type": "response.output_item.done", "output_index": located["output_index"], "item": item},
        ]
        return [synthesised({**payload, "sequence_number": sequence}, payload["type"]) for payload in events]

    def _text_delta(self, channel: _Channel, body: dict[str, Any], text: str) -> bytes:
        payload = {
            "type": channel.delta_type,
            "sequence_number": body.get("sequence_number"),
            "item_id": body.get("item_id"),
            "output_index": body.get("output_index"),
            channel.index_field: body.get(channel.index_field),
            "delta": text,
        }
        if channel.delta_type == "response.output_text.delta":
            payload["logprobs"] = []
        return synthesised(payload, channel.delta_type)

    def _handled(self, event: SSEEvent, payload: Any) -> Collection[Path]:
        body = as_dict(payload)
        event_type = as_str(body.get("type")) or event.type
        if as_position(body.get("output_index")) is None:
            return ()
        if event_type in DELTA_CHANNELS or event_type in INPUT_DELTAS:
            return {("delta",)}
        if event_type in INPUT_DONES:
            return {(INPUT_DONES[event_type],)}
        if event_type in ("response.output_item.added", "response.output_item.done"):
            item = as_dict(body.get("item"))
            item_type = _item_type(item)
            handled = {("item", *parse_locator(part.where)[2:]) for part in returned_parts(item, "output[0]")}
            if item_type in ARGUMENT_EVENTS and isinstance(item.get(CALL_ITEMS[item_type][0]), str):
                handled.add(("item", CALL_ITEMS[item_type][0]))
            return handled
        return ()

    def _end_arguments(self, position: int, body: dict[str, Any]) -> list[bytes]:
        """The delta event carrying what the call's filter still held, sent before the event that
        ends the call's arguments."""
        flushed = self._close_arguments(f"output[{position}]")
        if not flushed:
            return []
        event_type = self._delta_types[position]
        payload = {
            "type": event_type,
            "sequence_number": body.get("sequence_number"),
            "item_id": self._call_item_ids.get(position) or body.get("item_id"),
            "output_index": self._out_index.get(position, position),
            "delta": flushed,
        }
        return [synthesised(payload, event_type)]

    def _released_arguments_of(self, position: int, upstream: Any) -> Any:
        """The call's arguments as the agent was sent them; arguments never streamed are filtered whole."""
        where = f"output[{position}]"
        if where in self.released_arguments:
            return self.released_arguments[where]
        if not isinstance(upstream, str):
            return upstream
        return self._filter_arguments(where, upstream) + self._close_arguments(where)

    def _pin_call(self, item: dict[str, Any], position: int) -> None:
        """Holds a call item of a later event to the call released at its place: what names it is set
        back to what was decided on."""
        released = self._released_calls.get(position)
        if released is None:
            return
        renamed = [key for key in CALL_IDENTITY if item.get(key) != released.get(key)]
        for key in renamed:
            if key in released:
                item[key] = released[key]
            else:
                del item[key]
        if renamed:
            self.notes.append(f"a released call at output[{position}] came again with another {renamed[0]}")
            self._ambiguous(MISPLACED_RULE)

    def _rewrite_item(self, item: dict[str, Any], position: int) -> None:
        came_as = _item_type(item)
        if came_as in CALL_ITEMS:
            self._pin_call(item, position)
        # The field of the kind the call was released as, and that of the kind the item came as, which the
        # residual scan leaves to this (``_handled``): each carries the arguments as they went out.
        kinds = sorted({came_as, _item_type(item)} & ARGUMENT_EVENTS.keys())
        if kinds and (self.filters.argument_filter is not None or position in self._sealed):
            for kind in kinds:
                field_name = CALL_ITEMS[kind][0]
                item[field_name] = self._released_arguments_of(position, item.get(field_name))
        else:
            self._rewrite_message(item, position)
        for part in returned_parts(item, f"output[{position}]"):
            # The item's last event and the final response carry the same texts: read out once.
            released = self._released_content.get(part.where)
            if released is None or released[0] != part.text:
                released = self._released_content[part.where] = (part.text, self._read_content_out(part))
            set_at(item, format_locator(parse_locator(part.where)[2:]), released[1])

    def _rewrite_part(self, part: dict[str, Any], base: str) -> None:
        key = PART_TEXT_KEYS.get(as_str(part.get("type")) or "")
        if key and f"{base}.{key}" in self.released_text:
            part[key] = self.released_text[f"{base}.{key}"]

    def _rewrite_message(self, item: dict[str, Any], position: int) -> None:
        for parts in ITEM_TEXTS.get(_item_type(item), ()):
            for index, raw_part in enumerate(as_list(item.get(parts))):
                self._rewrite_part(as_dict(raw_part), f"output[{position}].{parts}[{index}]")

    def _rewrite_output(self, response: dict[str, Any]) -> None:
        output: list[Any] = []
        for position, raw_item in enumerate(as_list(response.get("output"))):
            item = as_dict(raw_item)
            if _item_type(item) in CALL_ITEMS and not (
                position in self._released_calls or position in self._dropped
            ):
                self._decide_unstreamed(item, position)
            if position in self._notices:
                output.append(self._notices[position])
            elif position not in self._dropped:
                self._rewrite_item(item, position)
                output.append(raw_item)
        response["output"] = output

    def _decide_unstreamed(self, item: dict[str, Any], position: int) -> None:
        """A call the final response holds that no event streamed: decided whole there, and dropped for
        its notice where the gate drops it."""
        call = item_call(item, f"output[{position}]")
        if self.filters.tool_gate is None or self._decide(call, complete=True) != "drop":
            return
        self._dropped.add(position)
        notice = self._notice(call)
        if notice is not None:
            self._notices[position] = notice_item(f"msg_egressguard_{position}", notice)

    def _end_of_stream(self, sequence_number: Any = None) -> list[bytes]:
        output = [piece for position in list(self._held) for piece in self._complete_held(position)]
        for where in self._open_argument_channels():
            output.extend(
                self._end_arguments(int(parse_locator(where)[1]), {"sequence_number": sequence_number})
            )
        for where in self._open_channels():
            steps = parse_locator(where)
            position, index = int(steps[1]), int(steps[3])
            flushed = self._close_channel(where)
            channel = self._channel_of[where]
            if flushed:
                located = {
                    "output_index": self._out_index.get(position, position),
                    channel.index_field: index,
                }
                output.append(self._text_delta(channel, located, flushed))
        return output
