"""Tool calls recognised by their shape in any JSON document, whatever route carried it: an answer read by
the generic reader (a provider's model behind another path, a local server, a batch's results), an event
of a stream, a line of NDJSON, a WebSocket message. Each model API's own reader turns the shape into a
call, so a call found here is read as the dialect that writes it reads it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Hashable, Iterator
from typing import Any

from proxy.dialects.anthropic import TOOL_USE_TYPES, tool_use_call
from proxy.dialects.base import as_dict, as_list, as_position, as_str
from proxy.dialects.bedrock_converse import tool_use_call as converse_tool_use_call
from proxy.dialects.gemini import (
    code_call,
    code_output,
    function_call_of,
    function_response_parts,
    partial_call,
    streams_arguments,
)
from proxy.dialects.locator import Step, format_locator, locator_steps, parse_locator, walk_strings
from proxy.dialects.openai_chat import (
    CALL_HOLDERS,
    MESSAGE_CALL_KEYS,
    STEP_TOOLS,
    message_calls,
    step_tool_results,
)
from proxy.dialects.openai_responses import (
    CALL_ITEMS,
    INPUT_DELTAS,
    INPUT_DONES,
    OUTPUT_ITEMS,
    item_call,
    output_parts,
    returned_parts,
)
from proxy.dialects.stream import GrowingText, ToolDecision, dump_json, grown, merged_arguments
from proxy.exchange import Part, ToolCall

REALTIME_CALL_DONE = "response.function_call_arguments.done"
"""The Realtime API's event ending a function call's arguments: it names the call and holds them whole."""
MARKERS = (
    "_call",
    "tool_use",
    "functionCall",
    "mcp_approval_request",
    "executableCode",
    "executable_code",
    "codeExecutionResult",
    "code_execution_result",
    "toolUse",
    "input_json_delta",
)
"""Words one of the shapes holds in a key or a type (``_call`` is in ``tool_calls``, ``function_call``,
each Responses call item and the Realtime event; ``tool_use`` in ``server_tool_use``; Gemini's code and what
it printed; Bedrock Converse's ``toolUse``; an Anthropic block's arguments streamed, which a reader of
messages sees alone once the call they would join was decided): a text holding none
of them (and no escape, which may spell one) holds no call, and is not parsed for one. Few, so that the
check reads the text few times."""
RESULT_MARKERS = ("_call_output", "functionResponse", "function_response")
"""Words one of the shapes of a call's result holds in a key or a type, as ``MARKERS`` are for calls."""
_BYTE_MARKERS = tuple(marker.encode() for marker in MARKERS)


def may_hold_calls(text: str) -> bool:
    """Whether ``text`` may hold a tool call's shape: false for almost all traffic, at the cost of a few
    substring searches."""
    return "\\u" in text or any(marker in text for marker in MARKERS)


def body_may_hold_calls(body: bytes) -> bool:
    """``may_hold_calls`` for a body in UTF-8; one in another encoding (UTF-16 JSON) is read for them."""
    if json.detect_encoding(body) != "utf-8":
        return True
    return b"\\u" in body or any(marker in body for marker in _BYTE_MARKERS)


def shaped_calls(document: Any) -> list[ToolCall]:
    """The tool calls ``document`` holds anywhere in it, each at its locator."""
    return [call for call, _ in _shapes(document, ())]


def shaped_results(document: Any) -> list[Part]:
    """What tools the API ran returned, to be read as a tool's result is: inside their calls (a remote MCP
    tool's output), or beside them (what Gemini's code printed, ``codeExecutionResult``)."""
    returned = [part for _, item in _shapes(document, ()) if item is not None for part in item]
    return returned + _code_outputs(document, ())


def _code_outputs(value: Any, steps: tuple[Step, ...]) -> list[Part]:
    if isinstance(value, list):
        return [part for index, child in enumerate(value) for part in _code_outputs(child, (*steps, index))]
    if not isinstance(value, dict):
        return []
    output = code_output(value, "")
    if output is not None:
        # Placed once found: formatting every object's locator on the way down costs its depth each.
        where = format_locator(steps) if steps else ""
        return [dataclasses.replace(output, where=(where + output.where).removeprefix("."))]
    if as_str(value.get("type")) in STEP_TOOLS:  # an Assistants run step's call: its logs, its search's texts
        where = format_locator(steps) if steps else ""
        return [
            dataclasses.replace(part, where=part.where.removeprefix("."))
            for part in step_tool_results(value, where)
        ]
    return [part for key, child in value.items() for part in _code_outputs(child, (*steps, key))]


def may_hold_results(text: str) -> bool:
    """``may_hold_calls`` for what an agent sends: whether ``text`` may hold a call's result by its shape."""
    return "\\u" in text or any(marker in text for marker in RESULT_MARKERS)


def sent_results(document: Any, steps: tuple[Step, ...] = ()) -> list[Part]:
    """What an agent sends back as its calls' results anywhere in ``document``, read as a tool's result
    is: a ``function_call_output`` item (as a Realtime client's ``conversation.item.create`` carries one),
    a Gemini part's ``functionResponse`` and each of the Live API's ``toolResponse.functionResponses``."""
    if isinstance(document, list):
        return [part for index, child in enumerate(document) for part in sent_results(child, (*steps, index))]
    if not isinstance(document, dict):
        return []
    if as_str(document.get("type")) in OUTPUT_ITEMS:
        parts = output_parts(document, format_locator(steps) if steps else "")
        return [dataclasses.replace(part, where=part.where.removeprefix(".")) for part in parts]
    parts = []
    for key, child in document.items():
        if key in ("functionResponse", "function_response") and isinstance(child, dict):
            parts += function_response_parts(child, (*steps, key))
        elif key in ("functionResponses", "function_responses") and isinstance(child, list):
            for index, item in enumerate(child):
                if isinstance(item, dict):
                    parts += function_response_parts(item, (*steps, key, index))
        else:
            parts += sent_results(child, (*steps, key))
    return parts


def _shapes(value: Any, steps: tuple[Step, ...]) -> Iterator[tuple[ToolCall, list[Part] | None]]:
    if isinstance(value, list):
        for index, child in enumerate(value):
            yield from _shapes(child, (*steps, index))
        return
    if not isinstance(value, dict):
        return
    whole = _item_of(value, steps)
    if whole is not None:
        yield whole
        return
    held = _held_calls(value, steps)
    for call in held:
        yield call, None
    taken = {parse_locator(call.where)[len(steps)] for call in held}
    for key, child in value.items():
        if key not in taken:
            yield from _shapes(child, (*steps, key))


def _item_of(value: dict[str, Any], steps: tuple[Step, ...]) -> tuple[ToolCall, list[Part] | None] | None:
    """The call ``value``, at ``steps``, is as a whole: a Responses item, an Anthropic block, the Realtime
    event that ends a call's arguments."""
    kind = as_str(value.get("type"))
    if kind in CALL_ITEMS and (CALL_ITEMS[kind][1] is not None or as_str(value.get("name"))):
        where = format_locator(steps)
        return item_call(value, where), returned_parts(value, where)
    if kind == REALTIME_CALL_DONE and as_str(value.get("name")):
        return item_call(value, format_locator(steps)), None
    if kind in TOOL_USE_TYPES and as_str(value.get("name")):
        return tool_use_call(value, format_locator(steps)), None
    return None


HELD_CALL_KEYS = MESSAGE_CALL_KEYS | {
    "functionCall",
    "toolUse",
    "tool_use",
    "executableCode",
    "executable_code",
    "functionCalls",
    "function_calls",
}
"""The keys under which ``_held_calls`` finds a call: an object holding none holds none there."""


def _held_calls(value: dict[str, Any], steps: tuple[Step, ...]) -> list[ToolCall]:
    """The calls ``value`` holds under a key: a Bedrock Converse block's ``toolUse`` (naming a tool and
    its id or input), a Gemini part's ``functionCall`` (its ``args`` an object),
    its ``executableCode`` (code the API ran) or
    a Gemini Live ``toolCall``'s ``functionCalls``, a Chat or Ollama message's ``tool_calls`` (a list of
    objects naming a function or custom tool) and legacy ``function_call``, not any value that happens to
    sit under such a key. A list's other items do not hide the calls in it: a client reads each object
    on its own."""
    if not value.keys() & HELD_CALL_KEYS:
        return []
    calls = []
    for key in ("functionCall", "function_call"):
        function = as_dict(value.get(key))
        # ``arguments`` makes a ``function_call`` Chat's legacy call, read below; never a ``functionCall``.
        if as_str(function.get("name")) and (key == "functionCall" or "arguments" not in function):
            calls.append(function_call_of(function, format_locator((*steps, key))))
    for key in ("toolUse", "tool_use"):  # a Bedrock Converse content block
        tool_use = as_dict(value.get(key))
        if as_str(tool_use.get("name")) and ({"toolUseId", "tool_use_id", "input"} & tool_use.keys()):
            calls.append(converse_tool_use_call(tool_use, format_locator((*steps, key))))
    code = code_call(value, "")
    if code is not None:
        code_key = "executableCode" if "executableCode" in value else "executable_code"
        calls.append(dataclasses.replace(code, where=format_locator((*steps, code_key))))
    for key in ("functionCalls", "function_calls"):  # the Live API's toolCall message
        listed = value.get(key)
        if isinstance(listed, list):
            calls += [
                function_call_of(item, format_locator((*steps, key, index)))
                for index, item in enumerate(listed)
                if isinstance(item, dict) and as_str(item.get("name"))
            ]
    listed = value.get("tool_calls")
    if isinstance(listed, list) and not any(isinstance(item, dict) for item in listed):
        listed = None
    if not value.keys() & MESSAGE_CALL_KEYS:
        return calls
    read_as_gemini = bool(calls)
    for call in message_calls(value, format_locator(steps) if steps else ""):
        legacy = call.where.endswith("function_call")
        if call.name and not (legacy and read_as_gemini) and (legacy or listed is not None):
            calls.append(dataclasses.replace(call, where=call.where.removeprefix(".")))
    return calls


StreamKey = tuple[Hashable, ...]
"""A call whose arguments stream, as a client finds it again in a later event: the places on its way, each
list's item by the index a client reads it at."""
STREAMED_ITEMS = frozenset({"function_call", "custom_tool_call", "mcp_call", "code_interpreter_call"})
"""The Responses and Realtime call items whose arguments stream in delta events (``INPUT_DELTAS``)."""


@dataclasses.dataclass(frozen=True, slots=True)
class CallPiece:
    """What one event brings to a tool call whose arguments stream over several events (a Chat delta, an
    Anthropic ``tool_use`` block and its ``input_json_delta``, a Responses call item and its argument
    deltas), or that it ends (``ends``: every call whose key starts with ``key``, as a Chat choice's
    ``finish_reason`` ends all its calls). ``key`` is None where clients may read the place otherwise (an
    index of 1.0, "1", true or -1): no one reading of the stream can follow such a call."""

    key: StreamKey | None
    where: str
    ids: tuple[str, ...] = ()
    """The ids the event gives the call, the call's own first (a Responses item's call id, then its id)."""
    name: str = ""
    arguments: str = ""
    given: str | None = None
    """Arguments the event gives whole (an Anthropic block's input, a Responses ``.done`` event's), which
    a client may take in place of those streamed."""
    opens: bool = False
    """It may be a call's first piece: a Chat delta (any of a call's may come first), an Anthropic block's
    start, a Responses item's addition."""
    joins: bool = False
    """It may come after a call's first piece: a Chat delta, an argument delta or ``.done`` event."""
    ends: bool = False
    tool: str = ""
    """The tool the API runs that the call is of (an Assistants step's code interpreter): it names a call
    no piece names, and the call ran upstream."""
    text_at: str | None = None
    """The locator in the event of the string ``arguments`` is, where a client appends it to the call's."""
    merges: dict[str, Any] | None = None
    """Arguments given as a fragment of their JSON object, which a client merges into the call's (a
    string appended to the one at its place, an object merged in): a Chat delta's object ``arguments``,
    a Gemini Live call's ``partialArgs``."""
    leaves: tuple[tuple[str, str, str], ...] = ()
    """The strings of ``merges``, each with its locator in the event and the place in the arguments it
    is appended to."""


def call_pieces(document: Any) -> list[CallPiece]:
    """What ``document`` (one event's data) brings to calls whose arguments stream, anywhere in it."""
    pieces: list[CallPiece] = []
    stack: list[tuple[Any, tuple[Step, ...], StreamKey | None]] = [(document, (), ())]
    while stack:  # not recursive: a document nested as deep as the parser reads stays readable
        value, steps, key = stack.pop()
        # Children are taken in the order they are written: pieces of one call in one event join so.
        if isinstance(value, list):
            stack += reversed(
                [(child, (*steps, index), _item_key(key, child, index)) for index, child in enumerate(value)]
            )
        elif isinstance(value, dict):
            pieces += _pieces_of(value, steps, key)
            stack += reversed([(child, (*steps, name), _within(key, name)) for name, child in value.items()])
    return pieces


def _item_key(key: StreamKey | None, item: Any, position: int) -> StreamKey | None:
    """A list item's key: by its ``index`` where it names one, as a client joins it to its place."""
    if key is None or not isinstance(item, dict) or "index" not in item:
        return None if key is None else (*key, position)
    index = as_position(item["index"])
    return None if index is None else (*key, index)


def _within(key: StreamKey | None, *steps: Hashable) -> StreamKey | None:
    return None if key is None else (*key, *steps)


def _pieces_of(value: dict[str, Any], steps: tuple[Step, ...], key: StreamKey | None) -> list[CallPiece]:
    pieces = (
        _chat_pieces(value, steps, key) + _step_pieces(value, steps, key) + _live_pieces(value, steps, key)
    )
    kind = as_str(value.get("type"))
    # Anthropic's and the Responses API's events name the block or item they add to by a field of theirs.
    block = _within(key, "block", as_position(value.get("index"))) if "index" in value else None
    item = _within(key, "item", as_position(value.get("output_index"))) if "output_index" in value else None
    content_block = as_dict(value.get("content_block"))
    if as_str(content_block.get("type")) in TOOL_USE_TYPES:
        call = tool_use_call(content_block, format_locator((*steps, "content_block")))
        given = dump_json(content_block["input"]) if "input" in content_block else None
        pieces.append(CallPiece(block, call.where, _ids(call.id), call.name, given=given, opens=True))
    delta = as_dict(value.get("delta"))
    if as_str(delta.get("type")) == "input_json_delta":
        partial = as_str(delta.get("partial_json")) or ""
        streams = isinstance(delta.get("partial_json"), str)
        text_at = format_locator((*steps, "delta", "partial_json")) if streams else None
        pieces.append(
            CallPiece(
                block, format_locator((*steps, "delta")), arguments=partial, joins=True, text_at=text_at
            )
        )
    if kind == "content_block_stop":
        pieces.append(CallPiece(block, format_locator(steps), ends=True))
    added = as_dict(value.get("item"))
    if kind == "response.output_item.added" and as_str(added.get("type")) in STREAMED_ITEMS:
        call = item_call(added, format_locator((*steps, "item")))
        ids = _ids(as_str(added.get("call_id")), as_str(added.get("id")))
        pieces.append(CallPiece(item, call.where, ids, call.name, call.arguments, opens=True))
    elif kind == "response.output_item.done":
        pieces.append(CallPiece(item, format_locator(steps), ends=True))
    ids = _ids(as_str(value.get("item_id")), as_str(value.get("call_id")))
    if kind in INPUT_DELTAS:
        delta_text = as_str(value.get("delta"))
        where = format_locator((*steps, "delta"))
        text_at = None if delta_text is None else where
        pieces.append(CallPiece(item, where, ids, arguments=delta_text or "", joins=True, text_at=text_at))
    if kind in INPUT_DONES:
        field = INPUT_DONES[kind]
        given = as_str(value.get(field))
        pieces.append(CallPiece(item, format_locator((*steps, field)), ids, given=given, joins=True))
    return pieces


def _chat_pieces(value: dict[str, Any], steps: tuple[Step, ...], key: StreamKey | None) -> list[CallPiece]:
    """A Chat choice's call deltas, each joined to its call by index as the OpenAI SDK joins it, and the
    end of all its calls when it finishes."""
    delta = value.get("delta")
    if not isinstance(delta, dict):
        return []
    pieces = []
    for position, raw_call in enumerate(as_list(delta.get("tool_calls"))):
        if isinstance(raw_call, dict):
            where = format_locator((*steps, "delta", "tool_calls", position))
            pieces.append(
                _chat_piece(
                    raw_call, _item_key(_within(key, "delta", "tool_calls"), raw_call, position), where
                )
            )
    legacy = delta.get("function_call")
    if isinstance(legacy, dict):
        where = format_locator((*steps, "delta", "function_call"))
        pieces.append(_chat_piece({"function": legacy}, _within(key, "delta", "function_call"), where, ()))
    if as_str(value.get("finish_reason")):
        pieces.append(CallPiece(key, format_locator(steps), ends=True))
    return pieces


STEP_HOLDERS = {"function": "arguments", "code_interpreter": "input"}
"""The objects of an Assistants run step's call whose text streams, and the field of each holding it."""
RUN_WAITING = frozenset({"queued", "in_progress", "cancelling"})
"""The statuses of a run (or a run step, ``in_progress``) whose calls may still stream."""


def _step_pieces(value: dict[str, Any], steps: tuple[Step, ...], key: StreamKey | None) -> list[CallPiece]:
    """An Assistants run step's call deltas (``thread.run.step.delta``), each joined to its call by the
    step's id and its index as the OpenAI SDK joins it; the end of a step's calls once the step is no longer
    in progress, and of every step's once the run stops for the agent or ends."""
    kind = as_str(value.get("object"))
    step = _within(key, "step")
    status = as_str(value.get("status"))
    if kind == "thread.run" and status is not None and status not in RUN_WAITING:
        return [CallPiece(step, format_locator(steps), ends=True)]
    if kind == "thread.run.step" and status is not None and status not in RUN_WAITING:
        return [CallPiece(_within(step, as_str(value.get("id"))), format_locator(steps), ends=True)]
    if kind != "thread.run.step.delta":
        return []
    listed = as_dict(as_dict(value.get("delta")).get("step_details")).get("tool_calls")
    calls = _within(step, as_str(value.get("id")), "tool_calls")
    pieces = []
    for position, raw_call in enumerate(as_list(listed)):
        if not isinstance(raw_call, dict):
            continue
        where = format_locator((*steps, "delta", "step_details", "tool_calls", position))
        holders = [holder for holder in STEP_HOLDERS if isinstance(raw_call.get(holder), dict)]
        if len(holders) > 1:
            # One call holding a function's and the code interpreter's text: clients read either.
            pieces.append(CallPiece(None, where))
        for holder in holders[:1]:
            field = STEP_HOLDERS[holder]
            text = raw_call[holder].get(field, "")
            streams = isinstance(raw_call[holder].get(field), str)
            pieces.append(
                CallPiece(
                    _within(_item_key(calls, raw_call, position), holder),
                    where,
                    _ids(as_str(raw_call.get("id"))),
                    as_str(raw_call[holder].get("name")) or "",
                    text if isinstance(text, str) else dump_json(text),
                    tool="" if holder == "function" else holder,
                    opens=True,
                    joins=True,
                    text_at=format_locator((*parse_locator(where), holder, field)) if streams else None,
                )
            )
    return pieces


def _chat_piece(
    call_delta: dict[str, Any], key: StreamKey | None, where: str, holder_at: tuple[str, ...] | None = None
) -> CallPiece:
    """``holder_at``: the steps from ``where`` to the object holding the call's text (a legacy
    ``function_call`` is that object itself); by default, the call's own ``function`` or ``custom``."""
    custom = call_delta.get("type") == "custom" or ("custom" in call_delta and "function" not in call_delta)
    kind = "custom" if custom else "function"
    holder = as_dict(call_delta.get(kind))
    arguments = holder.get(CALL_HOLDERS[kind], "")
    at = (*parse_locator(where), *((kind,) if holder_at is None else holder_at), CALL_HOLDERS[kind])
    merges = arguments if isinstance(arguments, dict) else None
    return CallPiece(
        key,
        where,
        _ids(as_str(call_delta.get("id"))),
        as_str(holder.get("name")) or "",
        arguments if isinstance(arguments, str) else "" if merges is not None else dump_json(arguments),
        opens=True,
        joins=True,
        text_at=format_locator(at) if isinstance(arguments, str) else None,
        merges=merges,
        leaves=tuple(
            (format_locator((*at, *locator_steps(inside))), text, inside)
            for inside, text in walk_strings(merges or {})
        ),
    )


LIVE_CALL_LISTS = ("functionCalls", "function_calls")
"""The keys of a Gemini Live ``toolCall`` listing its calls, in either spelling."""


def _live_pieces(value: dict[str, Any], steps: tuple[Step, ...], key: StreamKey | None) -> list[CallPiece]:
    """The pieces of a Gemini Live call whose arguments stream (``partial_call``), joined to their call by
    its id, and its end where a piece says no other follows."""
    pieces = []
    for list_key in LIVE_CALL_LISTS:
        for position, listed in enumerate(as_list(value.get(list_key))):
            if not isinstance(listed, dict) or not streams_arguments(listed):
                continue
            where = (*steps, list_key, position)
            located = format_locator(where)
            piece = partial_call(listed, where)
            if piece is None:
                pieces.append(CallPiece(None, located))
                continue
            call = _within(key, list_key, piece.id or position)
            pieces.append(
                CallPiece(
                    call,
                    located,
                    _ids(piece.id),
                    piece.name,
                    given=piece.given,
                    opens=bool(piece.name),
                    joins=True,
                    merges=piece.merges,
                    leaves=piece.leaves,
                )
            )
            if not piece.continues:
                pieces.append(CallPiece(call, located, ends=True))
    return pieces


def _ids(*ids: str | None) -> tuple[str, ...]:
    return tuple(found for found in ids if found)


@dataclasses.dataclass(slots=True)
class StreamedCall:
    """A call whose arguments stream over several events, as the events read so far give it."""

    where: str
    ids: list[str] = dataclasses.field(default_factory=list)
    names: list[str] = dataclasses.field(default_factory=list)
    """The pieces of its name, which the OpenAI SDK joins and other clients take the first of."""
    tool: str = ""
    """``CallPiece.tool``, as its pieces gave it."""
    arguments: GrowingText = dataclasses.field(default_factory=GrowingText)
    given: dict[str, None] = dataclasses.field(default_factory=dict)
    """Arguments events gave whole besides, each once."""
    merged: dict[str, Any] | None = None
    """The fragments of its arguments' object pieces gave (``CallPiece.merges``), merged."""
    streamed: bool = False
    ended: bool = False
    decision: ToolDecision | None = None
    denied: ToolCall | None = None
    """The reading the gate did not release, where it was not ``call()``: what the call is recorded as."""
    refused: bool = False
    """Whether a message carrying a piece of it was refused: it cannot go whole, and the agent was told."""

    def add(self, piece: CallPiece) -> bool:
        """Joins ``piece`` to the call; False, adding nothing, where its fragment contradicts the
        arguments merged so far (``merged_arguments``)."""
        merged = None if piece.merges is None else merged_arguments(self.merged or {}, piece.merges)
        if piece.merges is not None and merged is None:
            return False
        self.ids += [found for found in piece.ids if found not in self.ids]
        if piece.name:
            self.names.append(piece.name)
        self.tool = piece.tool or self.tool
        if piece.arguments or piece.joins:
            self.streamed = self.streamed or bool(piece.arguments)
            self.arguments.add(piece.arguments)
        if piece.given is not None:
            self.given[piece.given] = None
        if merged is not None:
            self.merged = merged
        return True

    def call(self) -> ToolCall:
        """The call as the OpenAI and Anthropic SDKs read it: its name joined, its arguments streamed
        (where none streamed, those merged from fragments, else the last given whole)."""
        if self.streamed or (self.merged is None and not self.given):
            arguments = self.arguments.text
        else:
            arguments = dump_json(grown(self.merged)) if self.merged is not None else list(self.given)[-1]
        name = "".join(self.names) or self.tool
        return ToolCall(self.ids[0] if self.ids else None, name, arguments, self.where, bool(self.tool))

    def readings(self) -> list[ToolCall]:
        """The call as each client may read it: ``call()`` first, then with its name's first piece alone
        and with each of its arguments given whole."""
        first = self.call()
        names = dict.fromkeys([first.name, *self.names[:1]])
        merged = [] if self.merged is None else [dump_json(grown(self.merged))]
        arguments = dict.fromkeys([first.arguments, self.arguments.text, *merged, *self.given])
        return [first] + [
            dataclasses.replace(first, name=name, arguments=text)
            for name in names
            for text in arguments
            if (name, text) != (first.name, first.arguments)
        ]


@dataclasses.dataclass(frozen=True, slots=True)
class Placed:
    """What one event brought to the calls whose arguments stream: the calls it carries a piece of, those
    whose arguments it ends, and whether it carries a piece no one reading of the stream places (at an
    index clients read otherwise, naming another call's id, continuing no call or one already decided,
    starting a second call where one is, or giving its arguments a value those before contradict)."""

    keys: frozenset[StreamKey] = frozenset()
    ended: frozenset[StreamKey] = frozenset()
    stray: bool = False


DECIDED_REMEMBERED = 1024
"""How many calls forgotten once decided a reader still knows, by their key and ids, as decided."""


class StreamedCalls:
    """The calls whose arguments stream over several events (or WebSocket messages), by their key, as
    the events read so far give them.

    A reader of a stream without end (a WebSocket connection) forgets a call once it is decided and sent
    (``forget``), so that the next turn may call at the same place; the last ``DECIDED_REMEMBERED`` it
    forgot stay known as decided: a late piece of one (its id again, or a place's piece naming no call)
    fits no call, as a piece of a decided call does not."""

    def __init__(self) -> None:
        self.calls: dict[StreamKey, StreamedCall] = {}
        self.decided_places: dict[Hashable, None] = {}
        self.decided_ids: dict[Hashable, None] = {}

    def forget(self, key: StreamKey) -> None:
        """Forgets the decided call at ``key``, remembering its place and ids as decided."""
        call = self.calls.pop(key)
        places: list[Hashable] = [key]
        for remembered, found in ((self.decided_places, places), (self.decided_ids, list(call.ids))):
            for entry in found:
                remembered.pop(entry, None)
                remembered[entry] = None
            while len(remembered) > DECIDED_REMEMBERED:
                del remembered[next(iter(remembered))]

    def _decided_before(self, piece: CallPiece) -> bool:
        """Whether ``piece``, at no call's place, is of a call decided and forgotten: naming its id, or at
        its place naming neither an id nor a tool. One naming a tool and no id starts a call of its own,
        as one naming a new id does: a server that gives its calls no id calls again at the same place."""
        if piece.ids:
            return any(found in self.decided_ids for found in piece.ids)
        return not piece.name and piece.key in self.decided_places

    def place(self, pieces: list[CallPiece], locate: Callable[[str], str]) -> Placed:
        """Joins the pieces one event brings to their calls; ``locate`` places a piece's locator within
        the event in the stream (a new call is found at its first piece's place)."""
        keys: set[StreamKey] = set()
        ended: set[StreamKey] = set()
        stray = False
        for piece in pieces:
            key = piece.key
            if key is None:
                stray = True
            elif piece.ends:
                ended.update(known for known in self.calls if known[: len(key)] == key)
                if key in self.calls:
                    keys.add(key)  # a block's stop, an item's done event: of the call, withheld with it
            elif key not in self.calls:
                if not piece.opens or self._decided_before(piece):
                    stray = True
                    continue
                call = self.calls[key] = StreamedCall(locate(piece.where))
                keys.add(key)
                stray = not call.add(piece) or stray
            else:
                call = self.calls[key]
                keys.add(key)
                foreign = call.ids and not set(piece.ids) <= set(call.ids)
                if not piece.joins or foreign or call.decision is not None:
                    stray = True
                    continue
                stray = not call.add(piece) or stray
        ended = {key for key in ended if not self.calls[key].ended}
        for key in ended:
            self.calls[key].ended = True
        return Placed(frozenset(keys), frozenset(ended), stray)
