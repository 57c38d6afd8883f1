"""JSON-path-like locators (``messages[3].content[0].text``) into a parsed body, and their inverse.

Keys that are identifiers are written ``.key``; any other key is written ``["key"]`` with JSON string
escaping, so every location in any JSON document has exactly one spelling. The whole document is ``$``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

Step = str | int
ROOT = "$"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TOKEN = re.compile(r'\.?([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]')
_REMEMBERED = 8192
_REMEMBERED_LENGTH = 128
"""Locators up to this long are parsed once and remembered (the most recent ``_REMEMBERED``)."""


def format_locator(steps: tuple[Step, ...] | list[Step]) -> str:
    if not steps:
        return ROOT
    pieces: list[str] = []
    for step in steps:
        if isinstance(step, int):
            pieces.append(f"[{step}]")
        elif _IDENTIFIER.match(step):
            pieces.append(f".{step}" if pieces else step)
        else:
            pieces.append(f"[{json.dumps(step, ensure_ascii=False)}]")
    return "".join(pieces)


def join(base: str, *steps: Step) -> str:
    """``base`` extended by ``steps``; ``base`` is itself a locator."""
    return format_locator([*parse_locator(base), *steps])


def parse_locator(locator: str) -> list[Step]:
    return list(locator_steps(locator))


def locator_steps(locator: str) -> tuple[Step, ...]:
    """``parse_locator`` as a tuple: a path to compare or hash, not copied into a list and back."""
    if len(locator) <= _REMEMBERED_LENGTH:
        # A conversation's history gives the same hundred locators (``messages[12].content``) every turn.
        return _remembered_steps(locator)
    return tuple(_steps(locator))


@functools.lru_cache(maxsize=_REMEMBERED)
def _remembered_steps(locator: str) -> tuple[Step, ...]:
    return tuple(_steps(locator))


def _steps(locator: str) -> list[Step]:
    if locator == ROOT:
        return []
    steps: list[Step] = []
    position = 0
    while position < len(locator):
        match = _TOKEN.match(locator, position)
        if match is None or (match.group(0).startswith(".") and position == 0):
            raise ValueError(f"not a locator: {locator!r}")
        key, index, quoted = match.groups()
        if key is not None:
            steps.append(key)
        elif index is not None:
            steps.append(int(index))
        else:
            steps.append(json.loads(quoted))
        position = match.end()
    return steps


def get_at(document: Any, locator: str) -> Any:
    value = document
    for step in parse_locator(locator):
        value = _child(value, step)
    return value


def set_at(document: Any, locator: str, new_value: Any) -> Any:
    """Sets the value at ``locator`` in place; returns the document (a new one when the root is set).
    Raises ValueError when the locator names no existing value."""
    steps = parse_locator(locator)
    if not steps:
        return new_value
    parent = document
    for step in steps[:-1]:
        parent = _child(parent, step)
    _child(parent, steps[-1])
    parent[steps[-1]] = new_value
    return document


def _child(value: Any, step: Step) -> Any:
    if isinstance(step, int) and isinstance(value, list) and 0 <= step < len(value):
        return value[step]
    if isinstance(step, str) and isinstance(value, dict) and step in value:
        return value[step]
    raise ValueError(f"no value at step {step!r}")


_PIECE = re.compile(r"[A-Za-z0-9_+/=.-]{1,128}")
_MOST_PIECES = 4


def sibling_strings(value: Any, steps: tuple[Step, ...] = ()) -> list[list[tuple[str, int, int]]]:
    """Of the scalars of ``value`` in document order, nested objects and lists read through, every run
    of two to four in a row that are strings of what keys are made of (no white space), each as its
    locator and its whole span: members next to each other of one object or list (``{"a": "AKIA…",
    "b": "QYLP…"}``), or one closing an object and the next opening another (``{"a": "AKIA…", "b":
    {"c": "QYLP…"}}``). A receiver may join them (a tool given a key in pieces), so each run is read one
    after another as a repeated form field's values are (``RequestView.repeated_fields``)."""
    pieces = [
        (where, 0, len(text)) if isinstance(text, str) and _PIECE.fullmatch(text) else None
        for where, text in _scalars(value, steps)
    ]
    found: list[list[tuple[str, int, int]]] = []
    for first in range(len(pieces)):
        for last in range(first + 1, min(first + _MOST_PIECES, len(pieces))):
            run = pieces[first : last + 1]
            if None in run:
                break
            found.append([piece for piece in run if piece is not None])
    return found


def _scalars(value: Any, steps: tuple[Step, ...]) -> Iterator[tuple[str, Any]]:
    """Every value of ``value`` that is no object or list, with its locator, in document order."""
    if isinstance(value, dict | list):
        members = value.items() if isinstance(value, dict) else enumerate(value)
        for step, child in members:
            yield from _scalars(child, (*steps, step))
    else:
        yield format_locator(steps), value


def walk_strings(
    value: Any, steps: tuple[Step, ...] = (), passed_over: Callable[[dict[str, Any], str], bool] | None = None
) -> Iterator[tuple[str, str]]:
    """Every string in ``value`` with its locator, in document order; with ``passed_over``, not those under
    a key of an object it names (``passed_over(object, key)``). The walk keeps its own stack: a body nests
    as deep as the JSON reader accepts, deeper than Python's recursion limit."""
    pending: list[tuple[Any, tuple[Step, ...]]] = [(value, steps)]
    while pending:
        value, steps = pending.pop()
        if isinstance(value, str):
            yield format_locator(steps), value
            continue
        if isinstance(value, dict):
            children = [
                (child, (*steps, key))
                for key, child in value.items()
                if passed_over is None or not passed_over(value, key)
            ]
        elif isinstance(value, list):
            children = [(child, (*steps, index)) for index, child in enumerate(value)]
        else:
            continue
        pending.extend(reversed(children))
