"""A linear-time necessary condition for a rule: its pattern loosened into one RE2 can run.

RE2 (Google's regex engine, in C++) finds a match in time linear in the text, whatever the pattern, but
knows no lookarounds, backreferences or atomic groups. The loosened pattern drops every lookaround,
anchor and word boundary, reads atomic groups and possessive repeats as plain ones, and widens each
character class it cannot spell exactly (``\\w``, ``\\s``, ``\\d`` become supersets; a negated class
holding one of them becomes any character): so it matches every string the rule's own pattern matches,
and more. When it finds nothing in a text, the rule cannot match anywhere in it, and the scanner skips
the rule's backtracking attempts there, with their per-call time limit.

Case-insensitive letters are spelled out as the ``regex`` module reads them (its table of case
equivalents, which pairs "i" with "İ" where RE2's does not), so the two engines agree on them. A pattern
that the standard library's parser cannot read, or reads otherwise than ``regex`` might (POSIX classes,
fuzzy matching, counts and numeric escapes spread over spaces in verbose mode), or that uses a
backreference, gets no loosened form: its rule always runs.
"""

from __future__ import annotations

import functools
import importlib
import re
import warnings
from typing import Any

import re2
import regex

_sre_parse: Any = importlib.import_module("re._parser")
_sre_constants: Any = importlib.import_module("re._constants")
_regex_engine: Any = importlib.import_module("regex._regex")

# Counts above this are read as "one or more": RE2 refuses large counts (and a counted repeat copies its
# body that many times into the program).
_LARGEST_COUNT = 100
# A case-insensitive range wider than this is not spelled out character by character.
_LARGEST_FOLDED_RANGE = 512
# Supersets of the regex module's Unicode classes: exact over ASCII, every other character past it (the
# tests check every code point). Spelled out by Unicode property, the classes make programs many times
# larger and slower to build.
_PAST_ASCII = r"\x{80}-\x{10FFFF}"
_WORD = r"0-9A-Za-z_" + _PAST_ASCII
_SPACE = r"\t-\r\x{1C}-\x{20}" + _PAST_ASCII
_DIGIT = r"0-9" + _PAST_ASCII
_ANY = r"\x{0}-\x{10FFFF}"
_POSITIVE_CATEGORIES = {
    "CATEGORY_WORD": _WORD,
    "CATEGORY_SPACE": _SPACE,
    "CATEGORY_DIGIT": _DIGIT,
}
# Syntax the standard parser reads differently from the regex module, or might: a POSIX class (any "[:"
# that a ":]" closes, "[[:ASCII_Hex_Digit:]]" too); a branch reset or group call ("(?|", "(?&"); and a
# brace that opens no plain count ("{2}", "{2,}", "{,5}", "{2,5}") with a letter, digit, space or "#"
# after it, where the regex module may read a fuzzy constraint ("{e<=1}", "{e<=1:[a-z]}") or, in verbose
# mode, a count with spaces or a comment inside ("{1, 2}") while the standard parser reads literal text.
# A brace before anything else is a literal brace to both.
_REGEX_ONLY = regex.compile(r"\[:[^\]]*:\]|\(\?[|&]|\{(?!(?:\d+(?:,\d*)?|,\d*)\})(?=[\w\s#])")
# In verbose mode the regex module reads a numeric escape's digits across spaces and comments ("\0 12" is
# "\012", a line feed), the standard parser stops at the first space ("\0", then "12").
_VERBOSE = regex.compile(r"\(\?[A-Za-z-]*x")
_NUMERIC_ESCAPE = regex.compile(r"\\\d")


class _Unrelaxable(Exception):
    """The pattern holds something a loosened RE2 form cannot stand for."""


def relaxed_source(source: str, *, line_starts: bool = False) -> str | None:
    """An RE2 pattern (UTF-8 mode, case-sensitive) that matches every string ``source`` matches under
    the ``regex`` module, or None when no such form is built. With ``line_starts``, ``^`` is kept as the
    start of a line (of the text as a whole, where a search starts at a place of it, as ``re``'s search
    from a place reads it): a pattern that may start at any line's start or after a separator would
    otherwise start anywhere."""
    if _REGEX_ONLY.search(source) or (_VERBOSE.search(source) and _NUMERIC_ESCAPE.search(source)):
        return None
    try:
        # The standard parser warns of nested sets ("[[") the regex module reads as it does; a warnings
        # filter set to raise must not make a scanner fail to build.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            parsed = _sre_parse.parse(source)
    except (re.error, ValueError, TypeError, OverflowError, RecursionError):
        return None
    flags = parsed.state.flags
    if flags & re.LOCALE or not _read_alike(source, parsed.state):
        return None
    try:
        return _sequence(list(parsed), bool(flags & re.IGNORECASE), line_starts)
    except (_Unrelaxable, RecursionError):
        return None


def _read_alike(source: str, state: Any) -> bool:
    """Whether the regex module reads ``source`` with the groups and the global case and verbose flags
    the standard parser read (``state``): where the two part on its parentheses or flags, they part on
    what it matches."""
    try:
        own = regex_of(source)
    except (regex.error, ValueError, TypeError, OverflowError, RecursionError):
        return False
    return (
        own.groups == state.groups - 1
        and dict(own.groupindex) == state.groupdict
        and bool(own.flags & regex.IGNORECASE) == bool(state.flags & re.IGNORECASE)
        and bool(own.flags & regex.VERBOSE) == bool(state.flags & re.VERBOSE)
    )


def _sequence(items: list[tuple[Any, Any]], folded: bool, line_starts: bool) -> str:
    return "".join(_item(op, argument, folded, line_starts) for op, argument in items)


def _item(op: Any, argument: Any, folded: bool, line_starts: bool) -> str:
    constants = _sre_constants
    if op is constants.LITERAL:
        return _char_class([_cases(argument, folded)], negated=False)
    if op is constants.NOT_LITERAL:
        return _char_class([_cases(argument, folded)], negated=True)
    if op is constants.ANY:
        return f"[{_ANY}]"
    if op is constants.IN:
        return _in(argument, folded)
    if op is constants.BRANCH:
        return "(?:" + "|".join(_sequence(list(branch), folded, line_starts) for branch in argument[1]) + ")"
    if op is constants.SUBPATTERN:
        _group, add_flags, del_flags, inner = argument
        inner_folded = (folded or bool(add_flags & re.IGNORECASE)) and not del_flags & re.IGNORECASE
        return "(?:" + _sequence(list(inner), inner_folded, line_starts) + ")"
    if op is constants.ATOMIC_GROUP:
        return "(?:" + _sequence(list(argument), folded, line_starts) + ")"
    if op in (constants.MAX_REPEAT, constants.MIN_REPEAT, constants.POSSESSIVE_REPEAT):
        low, high, body = argument
        return "(?:" + _sequence(list(body), folded, line_starts) + ")" + _count(low, high)
    if op is constants.AT and argument is constants.AT_BEGINNING and line_starts:
        return "(?m:^)"  # a line's start or the text's, with or without MULTILINE
    if op in (constants.AT, constants.ASSERT, constants.ASSERT_NOT):
        return ""
    raise _Unrelaxable(str(op))


def _count(low: int, high: int) -> str:
    """A repeat's count, with no upper bound: ``.{0,30}`` after a part that can match in many places
    makes RE2's automaton track thirty places at once, and its states overflow the memory budget
    (the search then falls back to a slower engine)."""
    if low == high and low <= _LARGEST_COUNT:
        return f"{{{low}}}"
    return f"{{{low},}}" if low <= _LARGEST_COUNT else "+"


def _cases(code: int, folded: bool) -> list[int]:
    """``code`` and, when case is ignored, every character the regex module reads as the same letter."""
    if not folded:
        return [code]
    return sorted({code, *_regex_engine.get_all_cases(regex.IGNORECASE, code)})


def _in(items: list[tuple[Any, Any]], folded: bool) -> str:
    constants = _sre_constants
    negated = False
    codes: list[list[int]] = []
    spelled: list[str] = []
    for op, argument in items:
        if op is constants.NEGATE:
            negated = True
        elif op is constants.LITERAL:
            codes.append(_cases(argument, folded))
        elif op is constants.RANGE:
            low, high = argument
            if not folded:
                spelled.append(f"\\x{{{low:X}}}-\\x{{{high:X}}}")
            elif high - low <= _LARGEST_FOLDED_RANGE:
                codes.extend(_cases(code, folded) for code in range(low, high + 1))
            elif negated:
                return f"[{_ANY}]"
            else:
                spelled.append(_ANY)
        elif op is constants.CATEGORY and str(argument) in _POSITIVE_CATEGORIES and not negated:
            spelled.append(_POSITIVE_CATEGORIES[str(argument)])
        elif op is constants.CATEGORY:
            # A negated category, or any category in a negated class: only "any character" is sure to
            # hold every character the regex module's class holds.
            return f"[{_ANY}]"
        else:
            raise _Unrelaxable(str(op))
    return _char_class(codes, negated, spelled)


def _char_class(codes: list[list[int]], negated: bool, spelled: list[str] | None = None) -> str:
    members = "".join(f"\\x{{{code:X}}}" for group in codes for code in group)
    return "[" + ("^" if negated else "") + members + "".join(spelled or ()) + "]"


# google-re2's search wrapper encodes the text and builds match objects on every call; the scanner
# encodes a text once and asks its engine object directly whether a stretch holds a match.
_ENGINE: Any = re2._re2
_UNANCHORED = _ENGINE.RE2.Anchor.UNANCHORED
_AT_START = _ENGINE.RE2.Anchor.ANCHOR_START
_NO_MATCH = (-1, -1)


@functools.lru_cache(maxsize=8192)
def regex_of(source: str) -> regex.Pattern[str]:
    """``source`` compiled by the regex module, kept by its text: a rule's pattern is compiled when its
    pack is read and again by each question of its loosened form, and the module's own cache keeps 500
    patterns, fewer than the packs hold."""
    return regex.compile(source)


@functools.cache
def compiled(source: str, flags: int | None = None) -> Any:
    """The loosened form of ``source`` compiled by RE2, or None when there is none. ``flags`` are those
    of the rule's compiled pattern: a flag its source does not set itself (IGNORECASE passed to
    ``regex.compile``) is not in the loosened form, so such a pattern gets none. Made once per process:
    every scanner (the proxy's for each policy, the detectors', the CLI's) shares it, and RE2 matches
    from any thread."""
    if flags is not None and flags != _own_flags(source):
        return None
    loosened = relaxed_source(source)
    if loosened is None:
        return None
    program = re2_program(loosened.encode("utf-8"))
    return program if program.ok() else None


@functools.lru_cache(maxsize=1024)
def compiled_any(sources: tuple[tuple[str, int], ...]) -> Any:
    """One RE2 program that matches where the loosened form of any of ``sources`` ((source, flags), as
    ``compiled`` takes them) does, or None when one of them has none: whether any of several rules can
    match in a stretch, asked in one pass over it. Bounded: which rules a text brings together is the
    sender's to choose, and each new choice would otherwise keep a program for the process's life."""
    if any(compiled(source, flags) is None for source, flags in sources):
        return None
    loosened = "|".join(f"(?:{relaxed_source(source)})" for source, _ in sources)
    program = re2_program(loosened.encode("utf-8"))
    return program if program.ok() else None


def re2_program(source: bytes, *, max_mem: int | None = None) -> Any:
    """``source`` compiled by RE2, capturing nothing: for ``possible`` and ``first_start``. ``max_mem``
    bounds the memory of its automata in bytes, past RE2's 8 MB: a search whose automaton outgrows its
    bound runs many times slower."""
    options = re2.Options()
    options.never_capture = True
    if max_mem is not None:
        options.max_mem = max_mem
    return _ENGINE.RE2(source, options)


def first_start(program: Any, encoded: bytes, low: int) -> int:
    """Where the leftmost match of an RE2 program (``re2_program``) in ``encoded[low:]`` starts; -1 where
    there is none."""
    return first_span(program, encoded, low)[0]


def first_span(program: Any, encoded: bytes, low: int) -> tuple[int, int]:
    """The span of the leftmost match of an RE2 program in ``encoded[low:]``; (-1, -1) where there is
    none."""
    start, end = program.Match(_UNANCHORED, encoded, low, len(encoded))[0]
    return int(start), int(end)


def _own_flags(source: str) -> int | None:
    """The flags the regex module compiles ``source`` with by itself; None when it cannot compile it
    alone (a pattern valid only under a flag passed to ``regex.compile``, VERSION1's set operations)."""
    try:
        return regex_of(source).flags
    except (regex.error, ValueError, TypeError, OverflowError, RecursionError):
        return None


def possible(program: Any, encoded: bytes, low: int, high: int, *, at_low: bool = False) -> bool:
    """Whether a loosened form (``compiled``) matches in the UTF-8 bytes ``encoded[low:high]`` (with
    ``at_low``, a match starting at ``low``); always True without one."""
    if program is None or not 0 <= low <= high <= len(encoded):
        return True  # RE2 answers "no match" to a stretch outside the text: the rule runs instead
    return bool(program.Match(_AT_START if at_low else _UNANCHORED, encoded, low, high)[0] != _NO_MATCH)
