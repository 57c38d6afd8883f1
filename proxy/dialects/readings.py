"""Other readings of one stream event: where clients disagree on what an event says.

Clients join a streamed delta's text to the place its index names, and they read an index that is no
plain non-negative integer differently: JavaScript takes 1.0, "1" and true for place 1, a Python list
takes -1 for its last place and true for 1, and either may keep such an index as a place of its own.
A list that names one place twice in one event is joined by a client that reads indexes, while one
that takes ``choices[0]`` reads the first alone. A key repeated in one object is read as its last
value by Python and JavaScript and as its first by others. A session reads an event one way; these
are the other ways, so that what any of those clients reads is inspected too.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.wire import jsontext

PLACE_KEYS = ("index", "output_index", "content_index", "summary_index")
"""The fields that name the place of a streamed delta, in every dialect that streams places."""
_PLACE_KEYS = frozenset(PLACE_KEYS)

LENIENT = "lenient"
APART = "apart"
LISTED = "listed"
FIRST_VALUE = "first value"
DECLARED = "declared encoding"
READINGS = {
    LENIENT: 'an index read as the number it spells (1.0, "1", true as 1; -1 as the last place)',
    APART: "an index that names no place read as a place of its own",
    LISTED: "a place named twice in one list read by its position in the list",
    FIRST_VALUE: "a key repeated in one object read as its first value",
    DECLARED: "the body, or a part of it, decoded in the charset or transfer encoding it declares",
}

_NUMERAL = re.compile(r"-?(?:0|[1-9][0-9]*)")
_APART_BASE = 1 << 40
"""Places made for indexes read apart lie far beyond any place a stream opens."""


@dataclass(slots=True)
class Oddities:
    """What one event has that clients read differently."""

    misplaced: bool = False
    """An index that is no plain non-negative integer."""
    repeated: bool = False
    """A list in which two entries name one place."""


def is_place(value: Any) -> bool:
    return type(value) is int and value >= 0


def examine(payload: Any, highest: dict[str, int]) -> Oddities:
    """The event's oddities; ``highest`` keeps, per kind of index, the highest place named so far."""
    found = Oddities()
    _examine(payload, "", highest, found)
    return found


def _examine(value: Any, shape: str, highest: dict[str, int], found: Oddities) -> None:
    # Run on every event of a stream: one pass over each container, exact types compared.
    if type(value) is dict:
        for key, child in value.items():
            if key in _PLACE_KEYS:
                if type(child) is int and child >= 0:
                    if child > highest.get(shape + key, -1):
                        highest[shape + key] = child
                    continue
                found.misplaced = True
            if type(child) is dict or type(child) is list:
                # Under a place key too: what an odd index holds is read by some client all the same.
                _examine(child, f"{shape}{key}.", highest, found)
    elif type(value) is list:
        named: set[Any] = set()
        several = len(value) > 1  # one entry cannot name a place twice
        for item in value:
            if several and type(item) is dict and "index" in item:
                place = item["index"]
                marker = place if type(place) is int else _marker(place)
                found.repeated = found.repeated or marker in named
                named.add(marker)
            if type(item) is dict or type(item) is list:
                _examine(item, f"{shape}[].", highest, found)


def _marker(index: Any) -> Any:
    """One value per place a lenient client reads an index at."""
    number = _number(index)
    return number if number is not None else ("unread", json.dumps(index, sort_keys=True, default=str))


def _number(index: Any) -> int | None:
    """The integer an index spells to a lenient client, or None."""
    if isinstance(index, bool):
        return int(index)
    if isinstance(index, int):
        return index
    if isinstance(index, float) and index.is_integer():
        return int(index)
    if isinstance(index, str) and _NUMERAL.fullmatch(index):
        return int(index)
    return None


def lenient(payload: Any, highest: dict[str, int]) -> Any:
    """The event with every index as a lenient client reads it: the number it spells, counted from the
    end of the places named so far when negative. ``highest`` is as it stood before this event."""

    def read(index: Any, shape: str) -> Any:
        number = _number(index)
        if number is None:
            return index
        if number < 0:
            number += highest.get(shape, -1) + 1
        return number if number >= 0 else index

    return _reindexed(payload, read)


def apart(payload: Any, places: dict[str, int]) -> Any:
    """The event with every index that names no place read as a place of its own (one per spelling, kept
    in ``places`` across events), as a client that keys its places by the raw index does."""

    def read(index: Any, shape: str) -> Any:
        if is_place(index):
            return index
        spelled = f"{shape}={json.dumps(index, sort_keys=True, default=str)}"
        return places.setdefault(spelled, _APART_BASE + len(places))

    return _reindexed(payload, read)


def listed(payload: Any) -> Any:
    """The event with each entry of a list that names one place twice read at its position in the list."""
    copied = copy.deepcopy(payload)
    _by_position(copied)
    return copied


def without_repeats(payload: Any) -> tuple[Any, bool]:
    """The event with every later entry of a list that names a place an earlier entry named removed, and
    whether any was: what leaves is then read alike by clients that read indexes and those that read
    positions."""
    removed = False

    def prune(value: Any) -> Any:
        nonlocal removed
        if isinstance(value, dict):
            return {key: prune(child) for key, child in value.items()}
        if not isinstance(value, list):
            return value
        named: set[Any] = set()
        kept = []
        for item in value:
            if isinstance(item, dict) and "index" in item:
                place = _marker(item["index"])
                if place in named:
                    removed = True
                    continue
                named.add(place)
            kept.append(prune(item))
        return kept

    pruned = prune(payload)
    return (pruned, True) if removed else (payload, False)


def _by_position(value: Any) -> None:
    if isinstance(value, dict):
        for child in value.values():
            _by_position(child)
    elif isinstance(value, list):
        markers = [_marker(item["index"]) for item in value if isinstance(item, dict) and "index" in item]
        repeats = len(set(markers)) != len(markers)
        for position, item in enumerate(value):
            if repeats and isinstance(item, dict) and "index" in item:
                item["index"] = position
            _by_position(item)


def _reindexed(payload: Any, read: Callable[[Any, str], Any]) -> Any:
    copied = copy.deepcopy(payload)
    _apply(copied, "", read)
    return copied


def _apply(value: Any, shape: str, read: Callable[[Any, str], Any]) -> None:
    if isinstance(value, dict):
        for key in PLACE_KEYS:
            if key in value:
                value[key] = read(value[key], shape + key)
        for key, child in value.items():
            if isinstance(child, dict | list):
                _apply(child, f"{shape}{key}.", read)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list):
                _apply(item, f"{shape}[].", read)


def _keep_first(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        document.setdefault(key, value)
    return document


def first_values(text: str) -> Any:
    """JSON text read as a reader that keeps the first value of a repeated key reads it."""
    return jsontext.loads(text, object_pairs_hook=_keep_first)


def read_with_shadowed(text: str) -> tuple[Any, list[Any]]:
    """JSON text as Python reads it (a repeated key keeps its last value), and the values that drops,
    which a reader keeping the first value reads instead."""
    shadowed: list[Any] = []
    _SHADOWING.values = shadowed
    try:
        return _KEEP_LAST.decode(text), shadowed
    finally:
        _SHADOWING.values = None


def _keep_last(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        last = {key: index for index, (key, _) in enumerate(pairs)}
        _SHADOWING.values.extend(value for index, (key, value) in enumerate(pairs) if last[key] != index)
    return document


# One decoder for every body and event (one made per text cost more than reading a small one), whose
# hook notes what it drops in the list of the reading under way in its thread.
_KEEP_LAST = jsontext.decoder(_keep_last)
_SHADOWING = threading.local()


FOLDED_KEYS = "keys matched regardless of case"
READINGS[FOLDED_KEYS] = (
    "a key matched to the field it names regardless of case, the last such key winning (Go's encoding/json)"
)
# A quoted string holding an upper-case letter, an escape or a character past ASCII, then a colon. What
# comes before the first such character cannot be one, so a search that fails reads each string once (a
# lazy repeat retried the rest of a string at each capital: quadratic in a long value full of them).
# Each repeat is possessive: what follows it is a character it cannot read, so giving characters back
# finds nothing, and a value's string (which no colon follows) was read back to its start before failing.
_FOLDABLE_KEY = re.compile(r'"[^"A-Z\\\u0080-\U0010ffff]*+[A-Z\\\u0080-\U0010ffff][^"]*+"\s*+:')
"""A key a case-insensitive reader may match to a field spelled otherwise: an upper-case letter, an
escape or a letter outside ASCII (Go folds the long s, U+017F, to "s" and the Kelvin sign to "k")."""


class _Folded(dict[str, Any]):
    """A JSON object as a reader that matches keys to fields regardless of case reads it: a key asked for
    is the last of the object's keys equal to it under case folding. Each lookup answered by a key
    spelled otherwise is noted in ``folds``."""

    def __init__(self, pairs: list[tuple[str, Any]], folds: list[str]) -> None:
        super().__init__(pairs)
        self._folds = folds
        self._last = {key.casefold(): key for key, _ in pairs}

    def _key(self, key: Any) -> Any:
        if not isinstance(key, str):
            return key
        actual = self._last.get(key.casefold(), key)
        if actual != key:
            self._folds.append(key)
        return actual

    def get(self, key: Any, default: Any = None) -> Any:
        return super().get(self._key(key), default)

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(self._key(key))

    def __contains__(self, key: object) -> bool:
        return super().__contains__(self._key(key))


# A string's characters in runs between its escapes: read a character at a time (``(?:[^"\\]|\\.)*+``),
# the values of a chunk cost five times as much to pass over.
_KEY = re.compile(r'"([^"\\]*+(?:\\.[^"\\]*+)*+)"\s*+:')


def _may_fold(text: str, cased: frozenset[str]) -> bool:
    """Whether a key of ``text`` may be read as a field spelled otherwise, for a dialect whose own keys
    ``cased`` carry capitals: any other key with a capital, an escape or a letter outside ASCII, or one
    of its keys spelled in lower case (``functioncall``)."""
    lowered = _lowered(cased)
    unread = _unfolded(cased)
    for key in set(_KEY.findall(text)).difference(cased, unread):
        if key != key.lower() or "\\" in key or not key.isascii() or key in lowered:
            return True
        if len(unread) < _MAX_UNFOLDED:
            unread.add(key)
    return False


_MAX_UNFOLDED = 4096


@functools.cache
def _unfolded(cased: frozenset[str]) -> set[str]:
    """Keys found to be no other spelling of one of ``cased`` (every chunk of a stream names the same
    few): not looked at again."""
    return set()


@functools.cache
def _lowered(cased: frozenset[str]) -> frozenset[str]:
    return frozenset(key.lower() for key in cased)


def folded_keys(text: str, cased: frozenset[str] = frozenset()) -> tuple[Any, list[str]] | None:
    """JSON text as a case-insensitive reader reads it, and the list that notes each lookup it answers
    otherwise than an exact reader (filled as the document is read); None when no key of the text could
    be read so (the common case, found by one regular-expression search). ``cased``: the keys the
    dialect itself spells with capitals (Gemini's camelCase), which alone are not read twice."""
    if not (_may_fold(text, cased) if cased else _FOLDABLE_KEY.search(text) is not None):
        return None
    folds: list[str] = []
    return jsontext.loads(text, object_pairs_hook=lambda pairs: _Folded(pairs, folds)), folds


SPELLED_TWICE = "fields spelled both ways"
READINGS[SPELLED_TWICE] = "a field given in camelCase and in snake_case read as its snake_case value"


@functools.cache
def snake_case(camel: str) -> str:
    """``systemInstruction`` as ``system_instruction``."""
    # Asked for the few field names Gemini's reader reads, for every streamed chunk that lacks them.
    return "".join(f"_{char.lower()}" if char.isupper() else char for char in camel)


@functools.cache
def _snake_names(cased: frozenset[str]) -> frozenset[str]:
    return frozenset(snake_case(key) for key in cased)


# A key in snake_case, then a colon; also any key spelled with an escape (``"function\u005fcall"``),
# looked for only in a text with an escape (reading each string to its end costs five times as much).
_SNAKE_KEY = re.compile(r'"([a-z0-9]++_[a-z0-9_]*+)"\s*+:')
_SNAKE_OR_ESCAPED_KEY = re.compile(r'"([a-z0-9]++_[a-z0-9_]*+|[^"\\]*+\\.[^"\\]*+(?:\\.[^"\\]*+)*+)"\s*+:')


def _gives_snake_case(text: str, cased: frozenset[str]) -> bool:
    """Whether a key of ``text`` is the snake_case spelling of one of ``cased``."""
    names = _snake_names(cased)
    for key in (_SNAKE_OR_ESCAPED_KEY if "\\" in text else _SNAKE_KEY).findall(text):
        if "\\" in key:
            try:
                key = json.loads(f'"{key}"')
            except ValueError:
                continue
        if key in names:
            return True
    return False


def spelled_twice(text: str, document: Any, cased: frozenset[str]) -> tuple[Any, list[str]] | None:
    """For a dialect that reads each of its camelCase fields ``cased`` in snake_case too (taking the
    camelCase one where both are given), the document as a reader that takes the snake_case one reads
    it, and the fields given both ways; None where no object gives a field both ways (the common case,
    found by one search of the text's keys in snake_case or with escapes)."""
    if not cased or not _gives_snake_case(text, cased):
        return None
    twice: list[str] = []

    def snake_first(value: Any) -> Any:
        if isinstance(value, list):
            return [snake_first(item) for item in value]
        if not isinstance(value, dict):
            return value
        both = [key for key in cased if key in value and snake_case(key) in value]
        twice.extend(both)
        return {key: snake_first(child) for key, child in value.items() if key not in both}

    other = snake_first(document)
    return (other, twice) if twice else None
