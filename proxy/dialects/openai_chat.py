"""OpenAI Chat Completions (``/v1/chat/completions``, Azure deployments and compatible servers)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from proxy.dialects.attachments import add_file, read_fetched, read_file, read_file_name
from proxy.dialects.base import (
    Dialect,
    ErrorResponse,
    as_dict,
    as_int,
    as_list,
    as_position,
    as_str,
    entry,
    json_error,
    require_object,
)
from proxy.dialects.browsing import hosted_tool_browsing, request_browsing
from proxy.dialects.locator import parse_locator
from proxy.dialects.schema import content_texts, schema_descriptions
from proxy.dialects.stream import (
    GrowingText,
    Path,
    StreamFilters,
    StreamSession,
    ToolDecision,
    arguments_text,
    dump_json,
    merged_arguments,
    rewritten,
    synthesised,
)
from proxy.exchange import Completion, Fetch, Part, RequestView, Source, TextSegment, ToolCall, Usage
from proxy.wire.sse import SSEEvent

ROLE_SOURCES = {
    "system": Source.SYSTEM,
    "developer": Source.SYSTEM,
    "user": Source.USER,
    "assistant": Source.ASSISTANT,
    "tool": Source.TOOL_RESULT,
    "function": Source.TOOL_RESULT,
}
TEXT_KEYS = ("reasoning_content", "reasoning", "content", "refusal")
"""Message fields that carry text: the reasoning that OpenAI-compatible servers send before the answer
(``reasoning_content``, ``reasoning``), then the answer."""
REASONING_KEYS = frozenset({"reasoning_content", "reasoning"})
LEGACY_CALL = -1
CALL_HOLDERS = {"function": "arguments", "custom": "input"}
"""The objects of a tool call that carry its name, and the field holding what the call passes."""

_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def openai_error(status: int, message: str, code: str) -> ErrorResponse:
    error_type = "server_error" if status >= 500 else _ERROR_TYPES.get(status, "invalid_request_error")
    return json_error(
        status, {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    )


def _arguments(value: Any) -> str:
    return value if isinstance(value, str) else dump_json(value)


MESSAGE_CALL_KEYS = frozenset({"tool_calls", "function_call"})
"""The keys of a message ``message_calls`` reads its calls from: one holding neither holds none."""
STEP_TOOLS: dict[str, str | None] = {"code_interpreter": "input", "file_search": None}
"""The tools an Assistants run step's ``tool_calls`` call that the API runs itself, each named by its
call's ``type`` and the object of that name, with the field of it holding what the model passes (a file
search shows nothing it passes)."""


def message_calls(message: dict[str, Any], base: str) -> list[ToolCall]:
    """A message's ``tool_calls`` (a function's, or a custom tool's with its free-form ``input`` for
    arguments), then its legacy ``function_call`` (which has no id), in a request's history or a
    response's choice alike."""
    calls = []
    for index, raw_call in enumerate(as_list(message.get("tool_calls"))):
        call = as_dict(raw_call)
        where = f"{base}.tool_calls[{index}]"
        kind = as_str(call.get("type")) or ""
        if kind == "custom":
            custom = as_dict(call.get("custom"))
            name = as_str(custom.get("name")) or ""
            calls.append(ToolCall(as_str(call.get("id")), name, _arguments(custom.get("input", "")), where))
        elif kind in STEP_TOOLS:
            calls.append(step_tool_call(call, kind, where))
        else:
            calls.append(_chat_call(as_str(call.get("id")), as_dict(call.get("function")), where))
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        calls.append(_chat_call(None, legacy, f"{base}.function_call"))
    return calls


def step_tool_call(call: dict[str, Any], kind: str, where: str) -> ToolCall:
    """An Assistants run step's call of a tool the API runs (``STEP_TOOLS``), which ran as it is listed."""
    field_name = STEP_TOOLS[kind]
    passed = as_dict(call.get(kind)).get(field_name, "") if field_name is not None else ""
    return ToolCall(as_str(call.get("id")), kind, _arguments(passed), where, ran_upstream=True)


def step_tool_results(call: dict[str, Any], where: str) -> list[Part]:
    """What the tool an Assistants run step's call (at ``where``) ran returned, read as a tool's result
    is: the code interpreter's logs, the texts each file search result holds."""
    kind = as_str(call.get("type")) or ""
    held = as_dict(call.get(kind)) if kind in STEP_TOOLS else {}
    base = f"{where}.{kind}"
    found = list(content_texts(held.get("outputs"), f"{base}.outputs", ("logs",)))
    for index, result in enumerate(as_list(held.get("results"))):
        found += content_texts(as_dict(result).get("content"), f"{base}.results[{index}].content")
    return [Part(Source.TOOL_RESULT, text, at, kind, as_str(call.get("id"))) for at, text in found]


def _chat_call(call_id: str | None, function: dict[str, Any], where: str) -> ToolCall:
    return ToolCall(
        id=call_id,
        name=as_str(function.get("name")) or "",
        arguments=_arguments(function.get("arguments", "")),
        where=where,
    )


class OpenAIChat(Dialect):
    name = "openai_chat"

    def _request_from(self, document: Any) -> RequestView:
        body = require_object(document)
        view = self._view_with_model_and_stream(body)
        names_by_call_id: dict[str, str] = {}
        for position, raw_message in enumerate(as_list(body.get("messages"))):
            message = as_dict(raw_message)
            role = as_str(message.get("role")) or "user"
            base = f"messages[{position}]"
            call_id = as_str(message.get("tool_call_id"))
            tool_name = None
            if role in ("tool", "function"):
                tool_name = names_by_call_id.get(call_id or "") or as_str(message.get("name"))
            source = ROLE_SOURCES.get(role, Source.USER)
            # A history sends every message again each turn: what a message does not hold is not asked for.
            for key in TEXT_KEYS:
                texts = message.get(key)
                if texts is None:
                    continue
                for where, text in content_texts(texts, f"{base}.{key}", ("text", "refusal")):
                    view.parts.append(Part(source, text, where, tool_name, call_id))
            for index, raw_part in enumerate(as_list(message.get("content"))):
                content_part = as_dict(raw_part)
                file = as_dict(content_part.get("file"))
                where = f"{base}.content[{index}]"
                read_file_name(
                    view, file.get("filename"), f"{where}.file.filename", source, tool_name, call_id
                )
                file_where = f"{where}.file.file_data"
                if not read_fetched(view, file.get("file_data"), file_where, "file"):
                    add_file(view, read_file(file.get("file_data"), file_where, source, tool_name, call_id))
                image = as_dict(content_part.get("image_url"))
                read_fetched(view, image.get("url"), f"{where}.image_url.url", "image")
            if "tool_calls" not in message and "function_call" not in message:
                continue
            for tool_call in message_calls(message, base):
                view.tool_calls.append(tool_call)
                if tool_call.id is not None:
                    names_by_call_id[tool_call.id] = tool_call.name
        for position, raw_tool in enumerate(as_list(body.get("tools"))):
            tool = as_dict(raw_tool)
            self._offer(view, as_dict(tool.get("function")), ("tools", position, "function"))
            view.fetches += hosted_tool_browsing(tool, f"tools[{position}]")
            if (as_str(tool.get("type")) or "").startswith("web_search"):
                # A gateway runs it as its own web search, which reads no filter of OpenAI's spelling.
                view.fetches.append(Fetch(f"tools[{position}]", None, "web_search"))
        for position, raw_function in enumerate(as_list(body.get("functions"))):
            self._offer(view, as_dict(raw_function), ("functions", position))
        if isinstance(body.get("web_search_options"), dict):
            # A search model searches the web with these, and names no domain to keep to.
            view.fetches.append(Fetch("web_search_options", None, "web_search"))
        view.fetches += request_browsing(body)
        return view

    @staticmethod
    def _offer(view: RequestView, function: dict[str, Any], steps: tuple[str | int, ...]) -> None:
        name = as_str(function.get("name")) or ""
        view.tools_offered.append(name)
        for where, text in schema_descriptions(
            {key: function[key] for key in ("description", "parameters") if key in function}, steps
        ):
            view.parts.append(Part(Source.TOOL_DESCRIPTION, text, where, tool_name=name))

    def _completion_from(self, document: Any) -> Completion:
        body = require_object(document)
        completion = Completion(model=as_str(body.get("model")))
        choices = as_list(body.get("choices"))
        for position, raw_choice in enumerate(choices):
            choice = as_dict(raw_choice)
            message = as_dict(choice.get("message"))
            base = f"choices[{position}].message"
            for key in TEXT_KEYS:
                for where, text in content_texts(message.get(key), f"{base}.{key}", ("text", "refusal")):
                    if text:
                        completion.text.append(TextSegment(text, where, key in REASONING_KEYS))
            completion.tool_calls.extend(message_calls(message, base))
        if choices:
            completion.stop_reason = as_str(as_dict(choices[0]).get("finish_reason"))
        usage = as_dict(body.get("usage"))
        completion.usage = Usage(as_int(usage.get("prompt_tokens")), as_int(usage.get("completion_tokens")))
        return completion

    def _drop_calls(self, document: Any, dropped: list[ToolCall], notice: str | None) -> None:
        removed: dict[int, set[int]] = {}
        for call in dropped:
            steps = parse_locator(call.where)
            position = int(steps[1])
            message = document["choices"][position]["message"]
            if steps[-1] == "function_call":
                del message["function_call"]
            else:
                removed.setdefault(position, set()).add(int(steps[-1]))
        for position, raw_choice in enumerate(as_list(document.get("choices"))):
            choice = as_dict(raw_choice)
            message = as_dict(choice.get("message"))
            calls = as_list(message.get("tool_calls"))
            kept = [call for index, call in enumerate(calls) if index not in removed.get(position, set())]
            if kept:
                message["tool_calls"] = kept
            else:
                message.pop("tool_calls", None)
            if (
                not kept
                and "function_call" not in message
                and choice.get("finish_reason")
                in (
                    "tool_calls",
                    "function_call",
                )
            ):
                choice["finish_reason"] = "stop"
            if notice is not None:
                existing = as_str(message.get("content"))
                message["content"] = f"{existing}\n\n{notice}" if existing else notice

    def error_response(self, status: int, message: str, code: str) -> ErrorResponse:
        return openai_error(status, message, code)

    def stream_session(self, filters: StreamFilters | None = None) -> StreamSession:
        return ChatStreamSession(filters)


@dataclass(slots=True)
class _CallState:
    call_id: str | None = None
    name: GrowingText = field(default_factory=GrowingText)
    arguments: GrowingText = field(default_factory=GrowingText)
    """What its deltas passed, joined: each string as it came, any other value as its JSON text."""
    merged: dict[str, Any] | None = None
    """Where every delta that passed anything passed an object: those objects merged as the OpenAI SDK
    merges them (``merged_arguments``), which is then what the call passes."""
    unmerged: bool = False
    """A delta passed something other than an object, or an object the others contradict."""
    custom: bool = False

    def add_arguments(self, value: Any) -> None:
        """Adds what one delta passes (its ``arguments``, or a custom tool's ``input``). A server may
        send an object (or any JSON value) where the API sends its text, and clients take it: the OpenAI
        SDK's stream helper merges objects, others take their JSON text. A string after an object, or an
        object after a string, is read as their texts joined."""
        text = arguments_text(value)
        self.arguments.add(text)
        if isinstance(value, dict) and not self.unmerged:
            self.merged = merged_arguments(self.merged or {}, value)
            self.unmerged = self.merged is None
        elif text:
            self.unmerged = True

    def call(self, where: str) -> ToolCall:
        merged = self.merged is not None and not self.unmerged
        arguments = dump_json(self.merged) if merged else self.arguments.text
        return ToolCall(self.call_id, self.name.text, arguments, where)


@dataclass(slots=True)
class _ChoiceState:
    texts: dict[str, GrowingText] = field(default_factory=dict)
    calls: dict[int, _CallState] = field(default_factory=dict)
    finish_reason: str | None = None


@dataclass(slots=True)
class _GatedCall:
    held: list[dict[str, Any]] = field(default_factory=list)
    merged: _CallState = field(default_factory=_CallState)
    """The held deltas read together, as they arrive."""
    decision: ToolDecision | None = None
    out_index: int = 0
    sealed: bool = False
    """Sent whole once its arguments ended: the arguments the gate decided on are all it gets."""


class ChatStreamSession(StreamSession):
    READS_PLACES = True
    HANDLED_BY_SHAPE = True

    def __init__(self, filters: StreamFilters | None = None) -> None:
        super().__init__(filters)
        self._model: str | None = None
        self._usage = Usage()
        self._choices: dict[int, _ChoiceState] = {}
        self._envelope: dict[str, Any] = {"object": "chat.completion.chunk"}
        self._gated: dict[tuple[int, int], _GatedCall] = {}
        self._released_calls: dict[int, int] = {}
        # Per choice, the released call whose arguments are streaming (calls stream one after another).
        self._open_arguments: dict[int, int] = {}

    @property
    def completion(self) -> Completion:
        completion = Completion(model=self._model, usage=self._usage)
        for index in sorted(self._choices):
            state = self._choices[index]
            base = f"choices[{index}].message"
            for key in TEXT_KEYS:
                if state.texts.get(key):
                    completion.text.append(
                        TextSegment(state.texts[key].text, f"{base}.{key}", key in REASONING_KEYS)
                    )
            for call_index in sorted(state.calls):
                completion.tool_calls.append(state.calls[call_index].call(_call_where(index, call_index)))
        if self._choices:
            completion.stop_reason = self._choices[min(self._choices)].finish_reason
        return completion

    def _observe(self, event: SSEEvent, payload: Any) -> None:
        # Read twice for every chunk (the stream and its read-back): its types are checked in place, where
        # a helper's call for each field cost as much again.
        chunk = as_dict(payload)
        if "error" in chunk:
            self.notes.append("upstream sent an error event")
        model = chunk.get("model")
        if model and isinstance(model, str):
            self._model = model
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = Usage(as_int(usage.get("prompt_tokens")), as_int(usage.get("completion_tokens")))
        choices = chunk.get("choices")
        for position, raw_choice in enumerate(choices if isinstance(choices, list) else ()):
            choice = raw_choice if isinstance(raw_choice, dict) else {}
            state = entry(self._choices, _index(choice, position), _ChoiceState)
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                delta = {}
            for key in TEXT_KEYS:
                if key not in delta:
                    continue
                text = delta[key]
                if not isinstance(text, str):
                    text = "".join(str(holder[name]) for holder, name in _text_slots(delta, key))
                if text:
                    entry(state.texts, key, GrowingText).add(text)
            calls = delta.get("tool_calls")
            for call_position, raw_call in enumerate(calls if isinstance(calls, list) else ()):
                call_delta = as_dict(raw_call)
                _accumulate(entry(state.calls, _index(call_delta, call_position), _CallState), call_delta)
            legacy = delta.get("function_call")
            if isinstance(legacy, dict):
                _accumulate(entry(state.calls, LEGACY_CALL, _CallState), {"function": legacy})
            finish_reason = choice.get("finish_reason")
            if finish_reason and isinstance(finish_reason, str):
                state.finish_reason = finish_reason

    def _transform(self, event: SSEEvent, payload: Any) -> list[bytes]:
        chunk = as_dict(payload)
        # Taken from what the residual scan left of the chunk: the chunks written here carry it.
        for key in ("id", "created", "model", "system_fingerprint"):
            if key in chunk:
                self._envelope[key] = chunk[key]
        choices = as_list(chunk.get("choices"))
        if not choices:
            return [event.raw]
        plain = _plain_slots(chunk)
        if plain is not None:
            return self._transform_plain(event, chunk, plain)
        before: list[bytes] = []
        touched = False  # whether anything of the chunk may have changed: only then is it written anew
        for position, raw_choice in enumerate(choices):
            if not isinstance(raw_choice, dict) or not isinstance(raw_choice.get("delta"), dict):
                continue
            touched = _write_index(raw_choice, position) or touched
            choice_index = raw_choice["index"]
            delta = raw_choice["delta"]
            for call_position, raw_call in enumerate(as_list(delta.get("tool_calls"))):
                if isinstance(raw_call, dict):
                    _write_index(raw_call, call_position)
            ending = isinstance(raw_choice.get("finish_reason"), str)
            touched = touched or ending or "tool_calls" in delta or "function_call" in delta
            for key in TEXT_KEYS:
                if key not in delta and not ending:
                    continue
                where = f"choices[{choice_index}].message.{key}"
                slots = _text_slots(delta, key)
                last = len(slots) - 1
                for position, (holder, name) in enumerate(slots):
                    released = self._filter_text(where, holder[name]) if holder[name] else ""
                    if ending and position == last:
                        released += self._close_channel(where)
                        if released and holder is delta:
                            before.append(self._text_chunk(choice_index, key, released))
                            released = ""
                    if released != holder[name]:
                        holder[name] = released
                        touched = True
                if ending and not slots:
                    flushed = self._close_channel(where)
                    if flushed:
                        before.append(self._text_chunk(choice_index, key, flushed))
            if self.filters.tool_gate is not None or self.filters.argument_filter is not None:
                before.extend(self._gate_calls(choice_index, delta, ending=ending))
            if self.filters.tool_gate is not None and ending:
                self._drop_undecided(choice_index)
                if raw_choice["finish_reason"] in (
                    "tool_calls",
                    "function_call",
                ) and not self._released_calls.get(choice_index):
                    raw_choice["finish_reason"] = "stop"
        if not touched:
            return [*before, self._as_sent(event, chunk)]
        if _is_empty_chunk(chunk):
            return before
        return [*before, rewritten(event, chunk)]

    def _transform_plain(
        self, event: SSEEvent, chunk: dict[str, Any], plain: list[tuple[str, dict[str, Any], str]]
    ) -> list[bytes]:
        """``_transform`` of a chunk that only carries text (``_plain_slots``): what the loop above does
        for it, without walking what it does not carry."""
        changed: list[tuple[str, str]] = []
        carries = False
        for where, delta, key in plain:
            text = delta[key]
            released = self._filter_text(where, text)
            carries = carries or bool(released)
            if released != text:
                delta[key] = released
                changed.append((text, released))
        if not changed:
            return [self._as_sent(event, chunk)]
        # A delta left with text is no empty chunk.
        if not carries and _is_empty_chunk(chunk):
            return []
        if len(changed) == 1:
            return [self._text_written(event, chunk, *changed[0])]
        return [rewritten(event, chunk)]

    def _plain_texts(self, event: SSEEvent, payload: Any) -> list[tuple[str, str]] | None:
        plain = _plain_slots(payload)
        return None if plain is None else [(where, delta[key]) for where, delta, key in plain]

    def _handled(self, event: SSEEvent, payload: Any) -> Collection[Path]:
        handled: set[Path] = set()
        choices = payload.get("choices") if isinstance(payload, dict) else None
        for position, raw_choice in enumerate(choices if isinstance(choices, list) else ()):
            delta = raw_choice.get("delta") if isinstance(raw_choice, dict) else None
            if not isinstance(delta, dict):
                continue
            base = ("choices", position, "delta")
            for key, value in delta.items():
                if key in TEXT_KEYS:
                    if isinstance(value, str):
                        handled.add((*base, key))
                    else:
                        for index, part in enumerate(as_list(value)):
                            handled.update((*base, key, index, name) for _, name in _text_slots(part, None))
                elif key == "tool_calls":
                    for call_position, raw_call in enumerate(as_list(value)):
                        holder = _passing(as_dict(raw_call))
                        if holder is not None:
                            handled.add((*base, "tool_calls", call_position, holder, CALL_HOLDERS[holder]))
                elif key == "function_call" and isinstance(as_dict(value).get("arguments"), str):
                    handled.add((*base, "function_call", "arguments"))
        return handled

    def _gate_calls(self, choice_index: int, delta: dict[str, Any], *, ending: bool) -> list[bytes]:
        """Gates and filters the call deltas of one choice; returns chunks to send before this one.
        A call's arguments end when the next call starts or the choice finishes: what its filter held
        is sent then, inside this chunk's delta for that call if there is one, so order is kept."""
        before: list[bytes] = []
        passed: dict[int, dict[str, Any]] = {}
        for position, raw_call in enumerate(as_list(delta.get("tool_calls"))):
            call_delta = as_dict(raw_call)
            call_index = _index(call_delta, position)
            open_call = self._open_arguments.get(choice_index)
            if open_call is not None and open_call != call_index:
                before.extend(self._end_arguments(choice_index, open_call, passed))
            before.extend(self._complete_held(choice_index, but=call_index))
            released, notice = self._gate_one(choice_index, call_index, call_delta)
            if released:
                passed[call_index] = released[0]
            before.extend(notice)
        legacy = delta.get("function_call")
        if isinstance(legacy, dict):
            released, notice = self._gate_one(choice_index, LEGACY_CALL, {"function": legacy})
            if released:
                passed[LEGACY_CALL] = released[0]
            before.extend(notice)
        if ending:
            before.extend(self._complete_held(choice_index))
        if ending and choice_index in self._open_arguments:
            before.extend(self._end_arguments(choice_index, self._open_arguments[choice_index], passed))
        kept = [call for index, call in passed.items() if index != LEGACY_CALL and not _carries_nothing(call)]
        if "tool_calls" in delta:
            if kept:
                delta["tool_calls"] = kept
            else:
                del delta["tool_calls"]
        if isinstance(legacy, dict):
            if LEGACY_CALL in passed and not _carries_nothing(passed[LEGACY_CALL]):
                delta["function_call"] = passed[LEGACY_CALL]["function"]
            else:
                del delta["function_call"]
        return before

    def _release_arguments(self, choice_index: int, call_index: int, call_delta: dict[str, Any]) -> None:
        holder = _passing(call_delta)
        if holder is not None:
            part, where = call_delta[holder], _call_where(choice_index, call_index)
            part[CALL_HOLDERS[holder]] = self._filter_arguments(where, part[CALL_HOLDERS[holder]])
        self._open_arguments[choice_index] = call_index

    def _holder_of(self, choice_index: int, call_index: int) -> str:
        """The object of the call's deltas a client joins what it passes in: a custom tool's or a
        function's, as the call's deltas said it is."""
        return "custom" if self._choices[choice_index].calls[call_index].custom else "function"

    def _end_arguments(
        self, choice_index: int, call_index: int, passed: dict[int, dict[str, Any]]
    ) -> list[bytes]:
        del self._open_arguments[choice_index]
        flushed = self._close_arguments(_call_where(choice_index, call_index))
        if not flushed:
            return []
        holder = self._holder_of(choice_index, call_index)
        part = passed[call_index].setdefault(holder, {}) if call_index in passed else None
        if part is not None and isinstance(part.get(CALL_HOLDERS[holder], ""), str):
            part[CALL_HOLDERS[holder]] = part.get(CALL_HOLDERS[holder], "") + flushed
            return []
        # Before the delta passing an object, which no text joins: the text goes on its own ahead of it.
        return [self._arguments_chunk(choice_index, call_index, flushed)]

    def _gate_one(
        self, choice_index: int, call_index: int, call_delta: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], list[bytes]]:
        gated = entry(self._gated, (choice_index, call_index), _GatedCall)
        if gated.decision == "release" and gated.sealed:
            self.notes.append("a tool call sent whole got more deltas after its arguments ended; dropped")
            return [], []
        if gated.decision == "release" and _renames(call_delta, gated.merged):
            return [], self._cut_short(choice_index, call_index)
        if gated.decision == "release":
            _drop_repeated_name(call_delta, gated.merged)
            if call_index != LEGACY_CALL:
                call_delta["index"] = gated.out_index
            self._release_arguments(choice_index, call_index, call_delta)
            return [call_delta], []
        if gated.decision == "drop":
            return [], []
        gated.held.append(call_delta)
        named = gated.merged.name.text
        _accumulate(gated.merged, call_delta)
        if gated.decision is None or gated.merged.name.text != named:
            # Asked once the name is known, and again on the whole name where more of it came while held;
            # a call it holds is asked again only when its arguments end.
            if not gated.merged.name and self.filters.tool_gate is not None:
                return [], []
            gated.decision = self._decide(self._held_call(choice_index, call_index))
        if gated.decision == "hold":
            if self._held_too_long(len(gated.merged.arguments)):
                return [], self._complete_one(choice_index, call_index)
            return [], []
        return self._settle(choice_index, call_index, self._held_call(choice_index, call_index))

    def _cut_short(self, choice_index: int, call_index: int) -> list[bytes]:
        """A released call named again: clients join the new name to the one the gate decided on, so the
        call they would run was never decided. Nothing more of it is sent; its notice is."""
        where = _call_where(choice_index, call_index)
        self._gated[(choice_index, call_index)].decision = "drop"
        if self._open_arguments.get(choice_index) == call_index:
            del self._open_arguments[choice_index]
            self._close_arguments(where)
        call = self._choices[choice_index].calls[call_index].call(where)
        self.notes.append(f"a released tool call was named again, as {call.name}; cut short")
        self.dropped_tool_calls.append((call.name, call.id))
        notice = self._notice(call)
        return [self._text_chunk(choice_index, "content", notice)] if notice else []

    def _held_call(self, choice_index: int, call_index: int) -> ToolCall:
        return self._gated[(choice_index, call_index)].merged.call(_call_where(choice_index, call_index))

    def _settle(
        self, choice_index: int, call_index: int, call: ToolCall
    ) -> tuple[list[dict[str, Any]], list[bytes]]:
        """A decided call's held deltas: released merged into one delta, or dropped for a notice."""
        gated = self._gated[(choice_index, call_index)]
        if gated.decision == "drop":
            gated.held.clear()
            notice = self._notice(call)
            return [], [self._text_chunk(choice_index, "content", notice)] if notice else []
        gated.out_index = self._released_calls.get(choice_index, 0)
        if call_index != LEGACY_CALL:
            self._released_calls[choice_index] = gated.out_index + 1
        first = gated.held[0] if len(gated.held) == 1 else _merged_delta(call, gated.merged.custom)
        if call_index != LEGACY_CALL:
            first["index"] = gated.out_index
        gated.held.clear()
        self._release_arguments(choice_index, call_index, first)
        return [first], []

    def _complete_held(self, choice_index: int, but: int | None = None) -> list[bytes]:
        """The choice's held calls (but the one still streaming) have all their arguments: each is
        decided on them and sent whole, in one chunk, or dropped for its notice."""
        held = [
            call_index
            for (gated_choice, call_index), gated in self._gated.items()
            if gated_choice == choice_index and call_index != but and gated.decision == "hold"
        ]
        return [chunk for call_index in held for chunk in self._complete_one(choice_index, call_index)]

    def _complete_one(self, choice_index: int, call_index: int) -> list[bytes]:
        gated = self._gated[(choice_index, call_index)]
        call = self._held_call(choice_index, call_index)
        gated.decision = self._decide(call, complete=True)
        released, notice = self._settle(choice_index, call_index, call)
        if not released:
            return notice
        gated.sealed = True
        self._end_arguments(choice_index, call_index, {call_index: released[0]})
        return [self._call_chunk(choice_index, call_index, released[0])]

    def _drop_undecided(self, choice_index: int) -> None:
        for (gated_choice, _), gated in self._gated.items():
            if gated_choice == choice_index and gated.decision is None:
                gated.decision = "drop"
                self.notes.append("a tool call ended before its name was known; dropped")

    def _on_text_event(self, event: SSEEvent) -> list[bytes]:
        if (event.data or "").strip() != "[DONE]":
            return super()._on_text_event(event)
        if not self.filters.active:
            return [event.raw]
        return [*self._end_of_stream(), event.raw]

    def _end_of_stream(self) -> list[bytes]:
        output: list[bytes] = []
        for where in self._open_channels():
            steps = parse_locator(where)
            released = self._close_channel(where)
            if released:
                output.append(self._text_chunk(int(steps[1]), str(steps[-1]), released))
        for choice_index, call_index in list(self._open_arguments.items()):
            output.extend(self._end_arguments(choice_index, call_index, {}))
        for choice_index in {choice for choice, _ in self._gated}:
            output.extend(self._complete_held(choice_index))
            self._drop_undecided(choice_index)
        return output

    def _arguments_chunk(self, choice_index: int, call_index: int, arguments: str) -> bytes:
        holder = self._holder_of(choice_index, call_index)
        call_delta: dict[str, Any] = {holder: {CALL_HOLDERS[holder]: arguments}}
        if call_index != LEGACY_CALL:
            call_delta = {"index": self._gated[(choice_index, call_index)].out_index, **call_delta}
        return self._call_chunk(choice_index, call_index, call_delta)

    def _call_chunk(self, choice_index: int, call_index: int, call_delta: dict[str, Any]) -> bytes:
        if call_index == LEGACY_CALL:
            delta: dict[str, Any] = {"function_call": call_delta["function"]}
        else:
            delta = {"tool_calls": [call_delta]}
        choice = {"index": choice_index, "delta": delta, "logprobs": None, "finish_reason": None}
        return synthesised({**self._envelope, "choices": [choice]})

    def _text_chunk(self, choice_index: int, key: str, text: str) -> bytes:
        delta = {key: text}
        choice = {"index": choice_index, "delta": delta, "logprobs": None, "finish_reason": None}
        return synthesised({**self._envelope, "choices": [choice]})


def _plain_slots(payload: Any) -> list[tuple[str, dict[str, Any], str]] | None:
    """For a chunk that carries nothing but text (no call, no end, no list of parts): the channel, delta
    and key of each text it carries, in the order ``_transform`` filters them; else None."""
    choices = payload.get("choices") if isinstance(payload, dict) else None
    if not isinstance(choices, list):
        return None
    slots: list[tuple[str, dict[str, Any], str]] = []
    for raw_choice in choices:
        delta = raw_choice.get("delta") if isinstance(raw_choice, dict) else None
        if not isinstance(delta, dict):
            continue
        index = as_position(raw_choice.get("index"))
        calls = "tool_calls" in delta or "function_call" in delta
        if calls or index is None or raw_choice.get("finish_reason") is not None:
            return None
        for key in TEXT_KEYS:
            text = delta.get(key)
            if isinstance(text, str):
                if text:
                    slots.append((f"choices[{index}].message.{key}", delta, key))
            elif text is not None:
                return None  # a list of parts
    return slots


def _text_slots(holder: Any, key: str | None) -> list[tuple[dict[str, Any], str]]:
    """Where a delta carries the text of one of its ``TEXT_KEYS``: the key itself when it holds a string,
    or the ``text`` (``refusal``) of each part when it holds a list of parts. With ``key`` None, the text
    fields of one part."""
    if key is None:
        part = as_dict(holder)
        return [(part, name) for name in ("text", "refusal") if isinstance(part.get(name), str)]
    value = as_dict(holder).get(key)
    if isinstance(value, str):
        return [(holder, key)]
    return [slot for part in as_list(value) for slot in _text_slots(part, None)]


def _index(item: dict[str, Any], position: int) -> int:
    index = as_position(item.get("index"))
    return position if index is None else index


def _write_index(item: dict[str, Any], position: int) -> bool:
    """Gives a choice or call the index its text was read at, where it names no place (no index, or -1,
    1.0, "1", true): a client that reads it as another place must not join it to that place's text.
    Returns whether the index changed."""
    index = _index(item, position)
    if as_position(item.get("index")) == index:
        return False
    item["index"] = index
    return True


def _accumulate(state: _CallState, call_delta: dict[str, Any]) -> None:
    if state.call_id is None:
        state.call_id = as_str(call_delta.get("id"))
    # A custom tool's call streams its name and free-form input as a function's does, its type (or its
    # ``custom`` object alone) in the first delta saying which the call is, as a client reads it.
    if _says_custom(call_delta):
        state.custom = True
    holder = "custom" if state.custom else "function"
    part = as_dict(call_delta.get(holder))
    # Names and arguments are concatenated across deltas, as the OpenAI SDK's own accumulator does; a
    # name said again whole changes nothing (it is not sent again where the gate runs: _drop_repeated_name).
    name = as_str(part.get("name")) or ""
    if name != state.name.text:
        state.name.add(name)
    state.add_arguments(part.get(CALL_HOLDERS[holder]))


def _renames(call_delta: dict[str, Any], state: _CallState) -> bool:
    """Whether a later delta of a call changes what it calls: it brings more of a name, which clients
    append to the name they have, or says the call is of the other kind. Its whole name said again is
    no change (``_drop_repeated_name``)."""
    kind = call_delta.get("type")
    if kind is not None and kind != ("custom" if state.custom else "function"):
        return True
    names = (as_str(as_dict(call_delta.get(holder)).get("name")) for holder in ("function", "custom"))
    return any(name and name != state.name.text for name in names)


def _drop_repeated_name(call_delta: dict[str, Any], state: _CallState) -> None:
    """A released call's delta that says its whole name again leaves without it: the OpenAI SDK appends
    a name to the one it has, and would run a call named twice over that the gate never decided."""
    for holder in ("function", "custom"):
        part = call_delta.get(holder)
        if isinstance(part, dict) and part.get("name") == state.name.text:
            del part["name"]


def _call_where(choice_index: int, call_index: int) -> str:
    base = f"choices[{choice_index}].message"
    return f"{base}.function_call" if call_index == LEGACY_CALL else f"{base}.tool_calls[{call_index}]"


def _says_custom(call_delta: dict[str, Any]) -> bool:
    """Whether a call's delta says the call is a custom tool's: its type, or its ``custom`` object alone."""
    return call_delta.get("type") == "custom" or ("custom" in call_delta and "function" not in call_delta)


def _passing(call_delta: dict[str, Any]) -> str | None:
    """The object of a call's delta whose field (``CALL_HOLDERS``) carries text the call passes, where
    it does: a custom tool's ``input`` where the delta says so (``_says_custom``), else a function's
    ``arguments``. Read from the delta alone, as a shape keeps it (``_handled``): the text so found is
    what the call's argument filter joins, and the residual scan reads every other string of the delta."""
    holder = "custom" if _says_custom(call_delta) else "function"
    return holder if isinstance(as_dict(call_delta.get(holder)).get(CALL_HOLDERS[holder]), str) else None


def _carries_nothing(call_delta: dict[str, Any]) -> bool:
    """A continuation delta whose argument text (a function's or a custom tool's) a filter held back
    entirely."""
    carried = set(call_delta) - {"index"}
    if len(carried) != 1:
        return False
    (holder,) = carried
    part = call_delta[holder]
    return (
        holder in CALL_HOLDERS
        and isinstance(part, dict)
        and set(part) <= {CALL_HOLDERS[holder]}
        and not part.get(CALL_HOLDERS[holder])
    )


def _merged_delta(call: ToolCall, custom: bool) -> dict[str, Any]:
    holder = "custom" if custom else "function"
    merged: dict[str, Any] = {
        "index": 0,
        "type": holder,
        holder: {"name": call.name, CALL_HOLDERS[holder]: call.arguments},
    }
    if call.id is not None:
        merged["id"] = call.id
    return merged


def _is_empty_chunk(chunk: dict[str, Any]) -> bool:
    """A chunk whose every delta lost its content to a filter or the gate: nothing left to send."""
    if chunk.get("usage") or any(
        key
        not in (
            "id",
            "object",
            "created",
            "model",
            "system_fingerprint",
            "choices",
            "service_tier",
            "usage",
            "obfuscation",
        )
        for key in chunk
    ):
        return False
    for raw_choice in as_list(chunk.get("choices")):
        choice = as_dict(raw_choice)
        if choice.get("finish_reason") is not None or choice.get("logprobs"):
            return False
        if any(value not in (None, "", []) for value in as_dict(choice.get("delta")).values()):
            return False
    return True
