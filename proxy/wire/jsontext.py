"""JSON text read as the receivers of a body read it.

Python refuses an integer of more than 4,300 digits (a guard against quadratic conversion), while
JavaScript and most servers read it as a number. A body holding one would otherwise be unreadable to
every detector and pass whole: such an integer is read as the float it spells (infinity beyond the
float range), in linear time.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

_MAX_DIGITS = sys.get_int_max_str_digits() or 4300
_WHITESPACE = " \t\n\r"
"""What JSON reads as whitespace around a value."""
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NESTING = np.zeros(256, dtype=np.int8)
_NESTING[list(b"[{")], _NESTING[list(b"]}")] = 1, -1
"""How each byte outside a string changes the depth it is at."""


_BEFORE_JSON = re.compile(
    r"(?:[\s\ufeff]+|//[^\n]*|/\*.*?(?:\*/|\Z)|\)\]\}'?,?|while\s*\(\s*(?:1|true)\s*\)\s*;|for\s*\(\s*;\s*;\s*\)\s*;)*",
    re.S,
)


def opens_json(text: str) -> bool:
    """A text that opens a JSON object or array, once what lenient readers skip before one is skipped:
    comments, and the guards APIs put in front of JSON against script inclusion (``)]}'``,
    ``while(1);``), which their own clients strip; or one that ends in a whole JSON object or array
    behind any prefix such a reader may cut off (``json_behind``)."""
    skipped = _BEFORE_JSON.match(text)
    return text[skipped.end() if skipped else 0 :][:1] in ("{", "[") or json_behind(text) is not None


MAX_PREFIX_LINES = 64
"""Line starts tried for a JSON value behind a prefix: a reader that cuts lines off cuts a few (a ``#!``
line, a guard, a banner)."""
_CLOSERS = {"{": "}", "[": "]"}
_LINE_OPENER = re.compile(r"\n[^\n{\[]*([{\[])")


def json_behind(text: str) -> int | None:
    """Where a JSON object or array starts that runs to the end of ``text`` (trailing whitespace aside),
    behind a prefix a lenient reader cuts off: everything before the first bracket (``#!...``, ``for(;;);``,
    a NUL, any guard), or the first lines; None where there is none. A value there is what such a reader
    reads, so a text holding one is JSON to it, whatever comes first."""
    end = len(text.rstrip(_WHITESPACE))
    if end == 0 or text[end - 1] not in "}]":
        return None
    starts = [index for index in (text.find("{"), text.find("[")) if index >= 0]
    for _, line in zip(range(MAX_PREFIX_LINES), _LINE_OPENER.finditer(text, 0, end), strict=False):
        starts.append(line.start(1))
    spent = 0
    for start in sorted(set(starts)):
        if _CLOSERS[text[start]] != text[end - 1]:
            continue
        spent += end - start
        if spent > MAX_SCANNED * max(end, 1 << 16):
            return start  # more lenient readings than are worth trying: taken for JSON, to be refused
        if _scans_to(text, start) == end:
            return start
    return None


MAX_SCANNED = 2
"""Times its length a text is read for a JSON value behind a prefix before it is taken for one."""


def _scans_to(text: str, start: int) -> int | None:
    """Where the JSON value at ``start`` ends (an integer of any length read), or None."""
    for scan in (_SHORT_SCAN, _LONG_SCAN):
        try:
            return scan(text, start)[1]
        except ValueError:
            continue  # an integer past Python's digit limit: read again as a float
        except (StopIteration, RecursionError):
            return None
    return None


def parse_int(text: str) -> int | float:
    return int(text) if len(text) < _MAX_DIGITS else float(text)


def loads(
    text: str | bytes, *, object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None
) -> Any:
    """``json.loads`` with integers of any length read."""
    if object_pairs_hook is None and isinstance(text, str) and not text.startswith("\ufeff"):
        return _PLAIN.decode(text)
    return json.loads(text, parse_int=parse_int, object_pairs_hook=object_pairs_hook)


class Decoder:
    """``JSONDecoder.decode`` with integers of any length read and ``object_pairs_hook``, made once
    (``json.loads`` with options builds a decoder per call). A text shorter than the digit limit holds no
    integer that reaches it: Python's own integer reading reads it alike, without a call per number."""

    def __init__(self, object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None) -> None:
        short = json.JSONDecoder(object_pairs_hook=object_pairs_hook)
        long = json.JSONDecoder(parse_int=parse_int, object_pairs_hook=object_pairs_hook)
        self._short = (short, _scan_of(short))
        self._long = (long, _scan_of(long))

    def decode(self, text: str) -> Any:
        decoder, scan = self._short if len(text) < _MAX_DIGITS else self._long
        if text and text[0] not in _WHITESPACE:
            # ``JSONDecoder.decode`` skips the whitespace either side of the value and wraps its scan in
            # two calls: text that starts with the value and ends with it is read by the scan alone.
            try:
                value, end = scan(text, 0)
            except StopIteration:
                pass  # ``decode`` raises the error
            else:
                if end == len(text):
                    return value
        return decoder.decode(text)


def _scan_of(decoder: json.JSONDecoder) -> Callable[[str, int], tuple[Any, int]]:
    """The decoder's scan of one value from an offset (its C scanner where there is one)."""
    scan: Callable[[str, int], tuple[Any, int]] = decoder.scan_once  # type: ignore[attr-defined]
    return scan


_PLAIN = Decoder()
_SHORT_SCAN = _scan_of(json.JSONDecoder())
_LONG_SCAN = _scan_of(json.JSONDecoder(parse_int=parse_int))


def decoder(object_pairs_hook: Callable[[list[tuple[str, Any]]], Any]) -> Decoder:
    """A ``Decoder`` reading integers of any length, with ``object_pairs_hook``."""
    return Decoder(object_pairs_hook)


def nests_past(text: str, limit: int) -> bool:
    """Whether the arrays and objects of JSON ``text`` nest more than ``limit`` deep, as a receiver's
    reader goes down them, whether or not this one's recursion reaches that far (a bracket inside a
    string is none). Linear in the text, and a text of few brackets is not looked at further."""
    if text.count("[") + text.count("{") <= limit:
        return False
    outside = np.frombuffer(_STRING.sub("", text).encode("utf-8", "surrogatepass"), dtype=np.uint8)
    # The depth changes at brackets alone: their steps are summed, not a step for every byte.
    steps = _NESTING[outside]
    steps = steps[steps != 0]
    return bool(steps.size) and int(steps.cumsum().max()) > limit
