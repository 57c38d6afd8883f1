"""Tool calls recognised by their shape in any JSON document, whatever route carried it: an answer read by
the generic reader (a provider's model behind another path, a local server, a batch's results), an event
of a stream, a line of NDJSON, a WebSocket message. Each model API's own reader turns the shape into a
call, so a call found here is read as the dialect that writes it reads it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

from proxy.dialects.anthropic import TOOL_USE_TYPES, tool_use_call
from proxy.dialects.base import as_dict, as_str
from proxy.dialects.gemini import function_call_of, function_response_parts
from proxy.dialects.locator import Step, format_locator, parse_locator
from proxy.dialects.openai_chat import message_calls
from proxy.dialects.openai_responses import CALL_ITEMS, OUTPUT_ITEMS, item_call, output_parts, returned_parts
from proxy.exchange import Part, ToolCall

REALTIME_CALL_DONE = "response.function_call_arguments.done"
"""The Realtime API's event ending a function call's arguments: it names the call and holds them whole."""
MARKERS = ("_call", "tool_use", "functionCall", "mcp_approval_request")
"""Words one of the shapes holds in a key or a type (``_call`` is in ``tool_calls``, ``function_call``,
each Responses call item and the Realtime event; ``tool_use`` in ``server_tool_use``): a text holding none
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
    """What tools the API ran returned inside their calls (a remote MCP tool's output), to be read as a
    tool's result is."""
    return [part for _, item in _shapes(document, ()) if item is not None for part in item]


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
    where = format_locator(steps)
    whole = _item_of(value, where)
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


def _item_of(value: dict[str, Any], where: str) -> tuple[ToolCall, list[Part] | None] | None:
    """The call ``value`` is as a whole: a Responses item, an Anthropic block, the Realtime event that ends
    a call's arguments."""
    kind = as_str(value.get("type"))
    if kind in CALL_ITEMS and (CALL_ITEMS[kind][1] is not None or as_str(value.get("name"))):
        return item_call(value, where), returned_parts(value, where)
    if kind == REALTIME_CALL_DONE and as_str(value.get("name")):
        return item_call(value, where), None
    if kind in TOOL_USE_TYPES and as_str(value.get("name")):
        return tool_use_call(value, where), None
    return None


def _held_calls(value: dict[str, Any], steps: tuple[Step, ...]) -> list[ToolCall]:
    """The calls ``value`` holds under a key: a Gemini part's ``functionCall`` (its ``args`` an object) or
    a Gemini Live ``toolCall``'s ``functionCalls``, a Chat or Ollama message's ``tool_calls`` (a list of
    objects naming a function or custom tool) and legacy ``function_call``, not any value that happens to
    sit under such a key. A list's other items do not hide the calls in it: a client reads each object
    on its own."""
    calls = []
    for key in ("functionCall", "function_call"):
        function = as_dict(value.get(key))
        # ``arguments`` makes a ``function_call`` Chat's legacy call, read below; never a ``functionCall``.
        if as_str(function.get("name")) and (key == "functionCall" or "arguments" not in function):
            calls.append(function_call_of(function, format_locator((*steps, key))))
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
    read_as_gemini = bool(calls)
    for call in message_calls(value, format_locator(steps) if steps else ""):
        legacy = call.where.endswith("function_call")
        if call.name and not (legacy and read_as_gemini) and (legacy or listed is not None):
            calls.append(dataclasses.replace(call, where=call.where.removeprefix(".")))
    return calls
