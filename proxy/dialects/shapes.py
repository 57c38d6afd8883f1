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
    streamed_call_pieces,
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
    ARGUMENT_EVENTS,
    CALL_ITEMS,
    INPUT_DELTAS,
    INPUT_DONES,
    OUTPUT_ITEMS,
    item_call,
    output_parts,
    returned_parts,
)
from proxy.dialects.stream import DECIDED_REMEMBERED as DECIDED_REMEMBERED
from proxy.dialects.stream import CallPiece as CallPiece
from proxy.dialects.stream import Placed as Placed
from proxy.dialects.stream import StreamedCall as StreamedCall
from proxy.dialects.stream import StreamedCalls as StreamedCalls
from proxy.dialects.stream import StreamKey as StreamKey
from proxy.dialects.stream import dump_json
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


STREAMED_ITEMS = frozenset(ARGUMENT_EVENTS)
"""The Responses and Realtime call items whose arguments stream in delta events (``INPUT_DELTAS``)."""


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
    """The pieces of a Gemini Live call whose arguments stream (``streamed_call_pieces``), joined to their
    call by its id."""
    pieces = []
    for list_key in LIVE_CALL_LISTS:
        for position, listed in enumerate(as_list(value.get(list_key))):
            if isinstance(listed, dict) and streams_arguments(listed):
                where = (*steps, list_key, position)
                pieces += streamed_call_pieces(listed, where, _live_place(key, list_key, position))
    return pieces


def _live_place(
    key: StreamKey | None, list_key: str, position: int
) -> Callable[[str | None], StreamKey | None]:
    """Where a Live call is found again: by its id, else by its place in its message's list."""
    return lambda call_id: _within(key, list_key, call_id or position)


def _ids(*ids: str | None) -> tuple[str, ...]:
    return tuple(found for found in ids if found)
