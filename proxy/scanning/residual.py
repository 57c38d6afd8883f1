"""Secrets in the strings of a JSON body or event that no dialect reads as text.

A dialect says where an API carries text (completions, reasoning, tool arguments); an upstream can put a
secret anywhere else too: an unknown field, an id, a key, a field of a newer API version. ``JsonScan``
scans every string value and every key of a decoded document except those the dialect already filters,
and redacts what the policy enforces, so what a dialect does not model is not a blind spot:

- a string that is itself JSON (a tool's arguments, a payload inside a field) is decoded and scanned as
  the receiver's ``json.loads`` will see it, at every level of nesting; one with JSON escapes that does not
  parse is scanned with its escapes decoded;
- in a stream, each field (the event type and the field's path, indices aside) keeps the tail of what it
  carried, so a secret split across two events is caught in the event that completes it; the part sent
  before is not held back (unknown fields cannot be held: nothing says when they end);
- a list of byte values (what ``logprobs`` gives for each token) is read as the text it decodes to, and
  rewritten as the bytes of the redacted text;
- a value read after the same text of its field as the last time it came, when that reading found
  nothing, is not scanned again (ids, types and model names, once the field's text is nothing but their
  repeats): the cost per event stays that of the new text. A value that repeats the last one is read
  on from the field's text all the same (a token sent a letter at a time doubles some letters; a secret
  can be two equal halves), so the joint text is the one a client that joins the values reads.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass
from typing import Any

import regex

from proxy.dialects.locator import Step, format_locator
from proxy.scanning.redact import RedactionStyle, StandIn, fingerprint, redact_text
from proxy.scanning.rulepack import Match, Rule, ScanBudget, Scanner, ScanResult
from proxy.wire import jsontext

Path = tuple[Step, ...]
# Between the strings of one batch: no secret pattern reads across a NUL and a line break, and each string
# starts after a line break and ends before one, where a rule that wants its match to start a text or
# follow a space (``(?<![^\s"'])``) reads it as it reads the string alone.
_SEPARATOR = "\n\x00\n"
CONTEXT_CHARS = 256
"""How much of what a field carried before a string is read with it (a secret split across list items)."""
_MAX_CACHED_KEYS = 4096
_MAX_ALIKE = 8
"""Kinds of alike documents whose strings a scan keeps (``JsonScan.filter``'s ``alike``)."""
_MAX_SHARED_QUIET = 4096
_SHARED_QUIET_CHARS = 256
"""Longest value whose quiet readings (``JsonScan``'s ``quiet``) are shared."""
_MAX_QUIET_TEXTS = 8
"""Longer values a scan keeps as read alone to nothing (``JsonScan``'s ``_quiet_texts``)."""
# A JSON escape (\uXXXX or \/) after a run of backslashes; the run's length says at which level of
# nested JSON the escape is read (1 backslash: this text's; 2: a JSON text inside one of its strings; ...).
_ESCAPE = regex.compile(r"(\\+)(?:u([0-9a-fA-F]{4})|(/))")
_PARTIAL_ESCAPE = regex.compile(r"(?r)\\+(?:u[0-9a-fA-F]{0,3})?\Z")
_MAX_PARTIAL_ESCAPE = 64


def _literal_safe(char: str, level: int) -> bool:
    """Whether an escape read at ``level`` may be written as the character itself. At the text's own
    level, any character JSON lets a string hold unescaped: what a reader decodes is unchanged. Deeper
    in (a JSON text inside a string), only letters and digits, which secrets are made of and escapes of
    which are rare in ordinary data: there the plain spelling changes the string a reader that does not
    decode it again would see."""
    if level == 1:
        code = ord(char)
        return code >= 0x20 and char not in '"\\' and not 0xD800 <= code < 0xE000
    return char.isascii() and char.isalnum()


def canonical_escapes(text: str) -> str:
    """JSON text with ``\\uXXXX`` and ``\\/`` escapes spelled plainly (see ``_literal_safe``), at every
    level of nesting, so a secret spelled with escapes is spelled plainly for the scanner."""

    def plain(match: regex.Match[str]) -> str:
        run = match.group(1)
        width = len(run) & -len(run)  # backslashes that make one escape character at its level
        char = chr(int(match.group(2), 16)) if match.group(2) else "/"
        level = width.bit_length()
        return run[: len(run) - width] + char if _literal_safe(char, level) else match.group(0)

    return _ESCAPE.sub(plain, text) if "\\" in text else text


def looks_nested(text: str) -> bool:
    """Whether a string may be a JSON object or array, whose own strings a scan reads as decoded."""
    stripped = text.strip()
    return stripped[:1] in ("{", "[") and stripped[-1:] in ("}", "]")


# The whitespace escapes of a JSON string (\n, \r, \t after an odd run of backslashes: this text's own
# level) are read as the characters they stand for, as a client decoding the string reads them: written as
# "\n", a line break glues its "n" to the token after it ("\nghp_..."), which no token rule then reads as
# a token's start, nor a decoded view as the start of a base64 run. The raw whitespace JSON allows only
# between its tokens stands in the meantime for control characters no JSON text holds raw (one that does,
# which no strict reader accepts, is escaped), so the filter's output is written back exactly.
_WHITESPACE_ESCAPE = regex.compile(r"(\\+)([nrt])")
_WHITESPACE_OF = {"n": "\n", "r": "\r", "t": "\t"}
_STAND_INS = str.maketrans(
    {"\x0b": "\\u000b", "\x0c": "\\u000c", "\x1c": "\\u001c", "\n": "\x0b", "\t": "\x0c", "\r": "\x1c"}
)
_WRITTEN_BACK = str.maketrans(
    {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x0b": "\n", "\x0c": "\t", "\x1c": "\r"}
)


def _read_whitespace(text: str) -> str:
    def plain(match: regex.Match[str]) -> str:
        run, letter = match.group(1), match.group(2)
        if len(run) % 2 == 0:
            return match.group(0)
        return run[:-1] + _WHITESPACE_OF[letter]

    text = text.translate(_STAND_INS)
    return _WHITESPACE_ESCAPE.sub(plain, text) if "\\" in text else text


def arguments_as_read(arguments: str) -> str:
    """A tool call's JSON arguments as the scanner reads them: escapes made plain and whitespace escapes
    read as whitespace, as the client's ``json.loads`` reads them, so that the ``n`` of a ``\\n`` is not
    read as part of the word after it (``\\n@pytest.fixture`` as an e-mail address, ``\\nghp_...`` as
    no token)."""
    return _read_whitespace(canonical_escapes(arguments))


class UnescapingFilter:
    """A text filter over streamed JSON text (a tool call's arguments) that hands the filter behind it
    the text with its escapes made plain (``canonical_escapes``) and its whitespace escapes read as the
    whitespace they stand for (``_read_whitespace``), and writes what it releases back as JSON text; an
    escape split across deltas is held until it is whole."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._held = ""

    def feed(self, text: str) -> str:
        text = self._held + text
        partial = _PARTIAL_ESCAPE.search(text)
        cut = partial.start() if partial and len(text) - partial.start() <= _MAX_PARTIAL_ESCAPE else len(text)
        self._held = text[cut:]
        return self._written(self._inner.feed(arguments_as_read(text[:cut])))

    def flush(self) -> str:
        held, self._held = self._held, ""
        released = self._written(self._inner.feed(arguments_as_read(held)))
        return released + self._written(self._inner.flush())

    @staticmethod
    def _written(released: Any) -> str:
        return str(released).translate(_WRITTEN_BACK)


@dataclass(frozen=True, slots=True)
class Found:
    """A secret found in a string no dialect models: where, which rule, and its keyed fingerprint."""

    where: str
    rule: Rule
    fingerprint: str
    sent_before: bool = False
    """The match began in the field's text of an earlier event, which has already been sent: redacting
    the rest of it does not keep the secret from the receiver."""
    placeholder: str | None = None
    """The vault placeholder the value leaves as, when the scan names them (requests in vault mode)."""


@dataclass(frozen=True, slots=True)
class _Strings:
    """What a scan reads of a document: each string outside what the dialect filters, with its path and
    its field (``_collect``), each key with its path, and the paths of the lists of bytes."""

    values: list[tuple[Path, Path, str]]
    keys: list[tuple[Path, str]]
    byte_lists: set[Path]


@dataclass(slots=True)
class _Piece:
    path: Path
    text: str
    shape: Path = ()
    context: str = ""
    key: bool = False
    decoded: bool = False
    """The piece is ``text`` with its escapes made plain: a match replaces the whole value."""
    earlier: tuple[tuple[Path, str], ...] = ()
    """Values of the same field earlier in this document, whose text ends the context: a match that
    began in them is redacted there too, since they have not been sent yet."""
    known: list[Match] | None = None
    """The scanner's matches of ``text``, read before (``JsonScan``'s ``known``): not scanned again."""


class JsonScan:
    """Scans decoded JSON documents (whole bodies, or the events of one stream in order).
    ``redacts(rule)`` says whether a match of that rule is redacted or only recorded in ``found``."""

    def __init__(
        self,
        scanner: Scanner,
        redacts: Callable[[Rule], bool],
        style: RedactionStyle = RedactionStyle.PLACEHOLDER,
        *,
        key: bytes | None = None,
        rewrites: bool = True,
        stand_in: StandIn | None = None,
        placeholder: Callable[[str], str] | None = None,
        known: Callable[[str], list[Match] | None] = lambda text: None,
        quiet: set[tuple[str, str]] | None = None,
        budget: ScanBudget | None = None,
    ) -> None:
        """``known(text)``: the matches the same scanner already found in ``text``, or None; a value that
        is known is not scanned again (a string is scanned apart from its neighbours either way).
        ``quiet``: pairs (a field's text, a short value after it) whose reading by the same scanner found
        nothing, shared with other scans of it (each stream carries the same types and model names).
        ``budget``: that of the request, response or message the documents are part of (else one of the
        scan's own), charged with the rules that run out of time."""
        self.rewrites = rewrites
        """Whether any rule is redacted; when not, documents are only read (observe mode)."""
        self._scanner = scanner
        self._budget = budget or scanner.budget()
        self._redacts = redacts
        self._style = style
        self._key = key
        self._stand_in = stand_in
        self._placeholder = placeholder
        self._known = known
        self.found: list[Found] = []
        self.timed_out: list[str] = []
        self._tails: dict[Path, str] = {}
        self._quiet: dict[tuple[str, Path], tuple[str, str]] = {}
        """By event type and field: the field's text before its last value and that value, when reading
        them found nothing (no rule timing out): read again after the same text, it finds nothing again."""
        self._shared_quiet = quiet if quiet is not None else set()
        self._quiet_texts: set[str] = set()
        """Values longer than those shared, each the first of its field, whose reading found nothing: read
        alone again, in any field (a stream's closing events each carry the whole answer), they find
        nothing again."""
        self._keys: dict[str, str] = {}
        self._alike: dict[Hashable, _Strings] = {}
        """By the token of alike documents, the strings collected of the last of them."""
        self.generation = 0
        """Counts the scans and the changes of a field's text: a document read again while it stands still,
        whose reading then scanned nothing and changed nothing, reads the same now."""

    def filter(
        self, kind: str, document: Any, handled: Collection[Path] = (), *, alike: Hashable = None
    ) -> tuple[Any, bool]:
        """The document with the secrets of every string outside ``handled`` redacted, and whether
        anything changed. ``kind`` names the stream's event type ("" for a body). ``alike``, where not
        None, names documents that hold the same keys, strings outside ``handled`` and lists of bytes
        at the same paths as every other document given with it (the events of one shape): they are
        taken from the last of them, not walked again."""
        strings = self._alike.get(alike) if alike is not None else None
        if strings is None:
            strings = _Strings([], [], set())
            _collect(document, (), (), handled, strings.values, strings.keys, strings.byte_lists)
            if alike is not None:
                if len(self._alike) >= _MAX_ALIKE:
                    self._alike.clear()
                self._alike[alike] = strings
        values, keys, byte_lists = strings.values, strings.keys, strings.byte_lists
        replacements: dict[Path, str] = {}
        renamed: dict[Path, str] = {}
        pieces: list[_Piece] = []
        in_document: dict[Path, list[tuple[Path, str]]] = {}
        read: list[tuple[Path, Path, str, str]] = []
        """The values read here (not as JSON) with the field's text before each, in order."""
        timeouts = len(self.timed_out)
        for path, shape, text in values:
            # The tail is kept per field whatever the event type, so renaming the event does not split
            # a secret's detection.
            field_values = in_document.setdefault(shape, [])
            field_values.append((path, text))
            context = self._tails.get(shape, "")
            tail = (context + text)[-CONTEXT_CHARS:]
            if tail != context:
                self._tails[shape] = tail
                self.generation += 1
            # Per event type and field: ids, types and model names repeat in every event.
            if (
                self._quiet.get((kind, shape)) == (context, text)
                or (context, text) in self._shared_quiet
                or (not context and text in self._quiet_texts)
            ):
                read.append((path, shape, context, text))  # a later value's match may reach back into it
                continue
            nested = self._nested(kind, path, text)
            if nested is not None:
                # Read again each time: its strings are read on from their own fields' text.
                if nested != text:
                    replacements[path] = nested
                continue
            read.append((path, shape, context, text))
            known = self._known(text)
            if known != []:  # a value known to hold nothing adds nothing to the scan
                pieces.append(_Piece(path, text, shape, known=known))
            if context and (kind or self._known(context + text) != []):
                # Read on from the field's earlier text too (a secret split across events or list items),
                # and on its own (a field that is no continuation: the joint text can hide a boundary).
                # In a body, the joint text of an item of a history the agent sends again every turn
                # comes again too: one known to hold nothing adds nothing.
                pieces.append(_Piece(path, text, shape, context, earlier=_within_reach(field_values)))
            plain = canonical_escapes(text)
            if plain != text:
                pieces.append(_Piece(path, plain, shape, decoded=True))
        for path, name in keys:
            cached = self._keys.get(name)
            if cached is None:
                known = self._known(name)
                if known != []:
                    pieces.append(_Piece(path, name, key=True, known=known))
                elif len(self._keys) < _MAX_CACHED_KEYS:
                    self._keys[name] = name
            elif cached != name:
                renamed[path] = cached
        spans: dict[Path, list[Match]] = {}
        touched: set[Path] = set()
        if pieces:
            self.generation += 1
        for piece, (found, reaching, any_found) in zip(pieces, self._scan(kind, pieces), strict=True):
            if any_found:
                touched.add(piece.path)
            for rule, covered in reaching:
                for path, earlier_text in reversed(piece.earlier):
                    if covered <= 0:
                        break
                    take = min(covered, len(earlier_text))
                    spans.setdefault(path, []).append(
                        Match(rule, len(earlier_text) - take, len(earlier_text))
                    )
                    covered -= take
            if piece.key:
                text = self._replace(piece.text, found) if found else piece.text
                if len(self._keys) < _MAX_CACHED_KEYS:
                    self._keys[piece.text] = text
                if text != piece.text:
                    renamed[piece.path] = text
            elif piece.decoded:
                if found:
                    # A value whose plain spelling holds a secret is sent in that spelling, redacted.
                    replacements[piece.path] = self._replace(piece.text, found)
            elif piece.path not in replacements:
                spans.setdefault(piece.path, []).extend(found)
        # Where a rule timed out, finding nothing says nothing.
        certain = len(self.timed_out) == timeouts
        for path, shape, context, text in read:
            if spans.get(path):
                # Its own matches, or those of a later value of the field that began in it.
                replacements[path] = self._replace(text, spans[path])
            if certain and path not in touched and path not in replacements:
                self._quiet[(kind, shape)] = (context, text)
                if len(text) <= _SHARED_QUIET_CHARS and (context, text) not in self._shared_quiet:
                    if len(self._shared_quiet) >= _MAX_SHARED_QUIET:
                        self._shared_quiet.clear()
                    self._shared_quiet.add((context, text))
                elif len(text) > _SHARED_QUIET_CHARS and not context:
                    if len(self._quiet_texts) >= _MAX_QUIET_TEXTS:
                        self._quiet_texts.clear()
                    self._quiet_texts.add(text)
            else:
                self._quiet.pop((kind, shape), None)
        changed: dict[Path, Any] = {
            path: list(text.encode("utf-8", "surrogateescape")) if path in byte_lists else text
            for path, text in replacements.items()
        }
        changed = {path: value for path, value in changed.items() if value != _at(document, path)}
        for path, value in changed.items():
            document = _put(document, path, value)
        for path, name in sorted(renamed.items(), key=lambda item: -len(item[0])):
            document = _rename(document, path, name)
        return document, bool(changed or renamed)

    def _replace(self, text: str, matches: list[Match]) -> str:
        return redact_text(text, matches, self._style, key=self._key, stand_in=self._stand_in)

    def _nested(self, kind: str, path: Path, text: str) -> str | None:
        """A string that is a JSON object or array: its own strings scanned as decoded; else None."""
        if not looks_nested(text):
            return None
        try:
            inner = jsontext.loads(text)
        except (ValueError, RecursionError):
            return None
        filtered, changed = self.filter(f"{kind}{format_locator(path)}:", inner)
        return json.dumps(filtered, ensure_ascii=False, separators=(",", ":")) if changed else text

    def _scan(
        self, kind: str, pieces: list[_Piece]
    ) -> list[tuple[list[Match], list[tuple[Rule, int]], bool]]:
        """Each piece's enforced matches, as spans of its text, those that began in its context (rule,
        characters of the context covered), and whether anything (enforced or not) was found in it, from
        one scan of all of them. A match lying wholly in a context was dealt with where that text was
        read."""
        if not pieces:
            return []
        local: dict[int, list[Match]] = {}
        reaching: dict[int, list[tuple[Rule, int]]] = {}
        found: dict[int, list[tuple[_Place, Found]]] = {}
        """By the piece a match begins in: recorded in the order of the pieces, then of the matches, each
        with its place (``_place``)."""
        batched = [index for index, piece in enumerate(pieces) if piece.known is None]
        regions: list[int] = []
        starts: list[int] = []
        batch: list[str] = []
        position = 0
        for index in batched:
            piece = pieces[index]
            regions.append(position)
            starts.append(position + len(piece.context))
            batch.append(piece.context + piece.text)
            position += len(piece.context) + len(piece.text) + len(_SEPARATOR)
        joined = _SEPARATOR.join(batch)
        result = self._scanner.scan(joined, self._budget) if batched else ScanResult()
        # A rule out of time is named in ``timed_out`` (and the budget's) for the caller to decide on.
        self.timed_out.extend(result.timed_out)
        for match in result.found:
            # The piece whose context or text the match begins in (a context piece follows the piece of
            # the same value on its own, so either names the same place).
            first = max(0, bisect.bisect_right(regions, match.start) - 1)
            last = max(0, bisect.bisect_right(starts, match.end - 1) - 1)
            touched = sent_before = False
            for place in range(first, last + 1):
                index = batched[place]
                begin, end = starts[place], starts[place] + len(pieces[index].text)
                span = (max(match.start, begin) - begin, min(match.end, end) - begin)
                if span[0] >= span[1]:
                    continue
                touched = True
                if self._redacts(match.rule):
                    local.setdefault(index, []).append(Match(match.rule, *span))
                context_start = begin - len(pieces[index].context)
                if context_start <= match.start < begin:
                    covered = begin - match.start
                    if self._redacts(match.rule):
                        reaching.setdefault(index, []).append((match.rule, covered))
                    sent_before = covered > sum(len(text) for _, text in pieces[index].earlier)
            if touched:
                first_piece = pieces[batched[first]]
                value = joined[match.start : match.end]
                found.setdefault(batched[first], []).append(
                    (
                        _place(first_piece, match.rule, match.start - starts[first], len(value)),
                        self._found(kind, first_piece, match, value, sent_before),
                    )
                )
        for index, piece in enumerate(pieces):
            for match in piece.known or ():
                if self._redacts(match.rule):
                    local.setdefault(index, []).append(Match(match.rule, match.start, match.end))
                value = piece.text[match.start : match.end]
                found.setdefault(index, []).append(
                    (
                        _place(piece, match.rule, match.start, len(value)),
                        self._found(kind, piece, match, value),
                    )
                )
        # A value read both alone and on from its field's earlier text finds a key that starts in it in
        # each reading: it is one key, recorded once.
        recorded: set[_Place] = set()
        for index in sorted(found):
            for where, item in found[index]:
                if where not in recorded:
                    recorded.add(where)
                    self.found.append(item)
        return [
            (local.get(index, []), reaching.get(index, []), index in found) for index in range(len(pieces))
        ]

    def _found(self, kind: str, piece: _Piece, match: Match, value: str, sent_before: bool = False) -> Found:
        where = f"{kind} {format_locator(piece.path)}".strip()
        placeholder = self._placeholder(value) if self._placeholder is not None else None
        return Found(where, match.rule, fingerprint(value, self._key), sent_before, placeholder)


_Place = tuple[Path, bool, str, int, int]


def _place(piece: _Piece, rule: Rule, start: int, length: int) -> _Place:
    """Where a match of ``rule`` lies: its value, whether read with escapes made plain, and its span from
    the start of the value's text (before it where it began in the context)."""
    return piece.path, piece.decoded, rule.id, start, length


def _within_reach(values: list[tuple[Path, str]]) -> tuple[tuple[Path, str], ...]:
    """The values of a field before its last that a match read on from the field's context can reach back
    into: the fewest that hold ``CONTEXT_CHARS`` characters, or all (a long list is not copied whole for
    every item)."""
    start = len(values) - 1
    held = 0
    while start > 0 and held < CONTEXT_CHARS:
        start -= 1
        held += len(values[start][1])
    return tuple(values[start:-1])


def _collect(
    value: Any,
    path: Path,
    shape: Path,
    handled: Collection[Path],
    values: list[tuple[Path, Path, str]],
    keys: list[tuple[Path, str]],
    byte_lists: set[Path],
) -> None:
    """Every string under ``value`` (outside ``handled``) with its path and its shape (the path with each
    list index as -1: one field across events and list items), every key, and every list of bytes."""
    if isinstance(value, str):
        values.append((path, shape, value))
    elif isinstance(value, dict):
        for name, child in value.items():
            child_path = (*path, name)
            keys.append((child_path, name))
            # Strings are taken here, and numbers, booleans and nulls hold none: only containers are
            # walked by a call (most of an event's fields are not).
            if child_path in handled:
                continue
            if isinstance(child, str):
                values.append((child_path, (*shape, name), child))
            elif isinstance(child, (dict, list)):
                _collect(child, child_path, (*shape, name), handled, values, keys, byte_lists)
    elif isinstance(value, list):
        if value and all(type(item) is int and 0 <= item < 256 for item in value):
            values.append((path, shape, bytes(value).decode("utf-8", "surrogateescape")))
            byte_lists.add(path)
            return
        for index, child in enumerate(value):
            child_path = (*path, index)
            if child_path in handled:
                continue
            if isinstance(child, str):
                values.append((child_path, (*shape, -1), child))
            elif isinstance(child, (dict, list)):
                _collect(child, child_path, (*shape, -1), handled, values, keys, byte_lists)


def _at(document: Any, path: Path) -> Any:
    for step in path:
        document = document[step]
    return document


def _put(document: Any, path: Path, value: Any) -> Any:
    if not path:
        return value
    _at(document, path[:-1])[path[-1]] = value
    return document


def _rename(document: Any, path: Path, name: str) -> Any:
    """The key at ``path`` renamed, keeping the order of its object's keys."""
    parent = _at(document, path[:-1])
    old = path[-1]
    renamed = {(name if key == old else key): child for key, child in parent.items()}
    parent.clear()
    parent.update(renamed)
    return document
