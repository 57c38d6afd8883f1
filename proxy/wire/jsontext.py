"""JSON text read as the receivers of a body read it.

Python refuses an integer of more than 4,300 digits (a guard against quadratic conversion), while
JavaScript and most servers read it as a number. A body holding one would otherwise be unreadable to
every detector and pass whole: such an integer is read as the float it spells (infinity beyond the
float range), in linear time.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

_MAX_DIGITS = sys.get_int_max_str_digits() or 4300


def parse_int(text: str) -> int | float:
    return int(text) if len(text) < _MAX_DIGITS else float(text)


def loads(
    text: str | bytes, *, object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None
) -> Any:
    """``json.loads`` with integers of any length read."""
    return json.loads(text, parse_int=parse_int, object_pairs_hook=object_pairs_hook)


def decoder(object_pairs_hook: Callable[[list[tuple[str, Any]]], Any]) -> json.JSONDecoder:
    """A ``json.JSONDecoder`` reading integers of any length, with ``object_pairs_hook``."""
    return json.JSONDecoder(parse_int=parse_int, object_pairs_hook=object_pairs_hook)
