"""Redaction of the spans a Scanner found: in text, inside JSON values, and in a stream of text deltas.

Nothing here returns, logs or raises with a detected value. What leaves is the redacted text and, per
redaction, the rule id and a keyed fingerprint (HMAC-SHA256) so the same secret can be recognised across
findings without being stored.
"""

from __future__ import annotations

import codecs
import hashlib
import hmac
import re
import secrets
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import regex

from proxy.model import Severity, Threat
from proxy.scanning import unmask
from proxy.scanning.rulepack import (
    RUN_LOOKBEHIND,
    SCAN_TIMEOUT_RULE,
    UNBOUNDED,
    Match,
    Rule,
    ScanBudget,
    Scanner,
    ScanResult,
    Triggered,
)

# Used when the caller has no per-install key: fingerprints then only correlate within this process.
_PROCESS_KEY = secrets.token_bytes(32)


class RedactionStyle(StrEnum):
    PLACEHOLDER = "placeholder"  # [REDACTED:rule-id]
    HASH = "hash"  # [REDACTED:rule-id:1a2b3c4d]
    LAST4 = "last4"  # [REDACTED:rule-id:...wxyz]


def fingerprint(value: str, key: bytes | None = None) -> str:
    """Keyed HMAC-SHA256 of a detected value, hex. Stable per key, useless without it."""
    return hmac.new(key or _PROCESS_KEY, _utf8(value), hashlib.sha256).hexdigest()


def _utf8(text: str) -> bytes:
    """Text read from a body may hold lone surrogates (undecodable bytes, JSON escapes): hashed as is."""
    return text.encode("utf-8", "surrogatepass")


# Below this length the last four characters are too large a share of the value to show.
_LAST4_MIN_LENGTH = 12


def placeholder(rule_id: str, value: str, style: RedactionStyle, key: bytes | None = None) -> str:
    if style is RedactionStyle.HASH:
        return f"[REDACTED:{rule_id}:{fingerprint(value, key)[:8]}]"
    if style is RedactionStyle.LAST4 and len(value) >= _LAST4_MIN_LENGTH:
        return f"[REDACTED:{rule_id}:...{value[-4:]}]"
    return f"[REDACTED:{rule_id}]"


StandIn = Callable[[str, str], str]
"""What replaces a detected value, from the rule id and the value (the vault's placeholders)."""


@dataclass(frozen=True)
class Redaction:
    """One redacted value, as a finding may record it: never the value itself."""

    rule_id: str
    threat: Threat
    severity: Severity
    fingerprint: str

    @classmethod
    def of(cls, rule: Rule, value: str, key: bytes | None) -> Redaction:
        return cls(rule.id, rule.threat, rule.severity, fingerprint(value, key))


@dataclass
class RedactedText:
    text: str
    redactions: list[Redaction] = field(default_factory=list)


def redact_text(
    text: str,
    matches: Iterable[Match],
    style: RedactionStyle = RedactionStyle.PLACEHOLDER,
    *,
    key: bytes | None = None,
    stand_in: StandIn | None = None,
) -> str:
    """``text`` with each match's span replaced by its placeholder (or by what ``stand_in`` makes of the
    rule id and the value); overlapping later spans are skipped."""
    parts: list[str] = []
    position = 0
    for match in sorted(matches, key=lambda item: (item.start, -item.end)):
        if match.start < position:
            continue
        parts.append(text[position : match.start])
        value = text[match.start : match.end]
        parts.append(
            stand_in(match.rule.id, value) if stand_in else placeholder(match.rule.id, value, style, key)
        )
        position = match.end
    parts.append(text[position:])
    return "".join(parts)


def scan_and_redact(
    scanner: Scanner,
    text: str,
    style: RedactionStyle = RedactionStyle.PLACEHOLDER,
    *,
    key: bytes | None = None,
    budget: ScanBudget | None = None,
) -> RedactedText:
    """``text`` with what ``scanner`` finds redacted (charged to ``budget``, or one of its own); a text a
    rule ran out of time on is replaced whole (``SCAN_TIMEOUT_RULE``): no span of it is known to be
    clean."""
    return _redacted(scanner, text, scanner.scan(text, budget or scanner.budget()), style, key)


NAME_SEPARATORS = frozenset("_-")
"""Characters that join the words of a name (``drop_table``, ``list-files``) and that a key's rule reads
as part of a word, so a key glued to a word by one of them (``save_AKIA...``) matches no rule as written."""
NAME_REACH = 128
"""How far past a separator a key glued after it is looked for: longer than any token format."""
GLUED_STARTS_WITHIN = 1024
"""Keys glued after a separator are looked for in a text's first characters only: twice what a record
keeps of one (``MAX_RECORDED_TEXT``), so a long text costs at most this many stretches."""
_READINGS_SEPARATOR = "\n\x00\n"


def glued_readings(text: str) -> tuple[str, Callable[[int], int]]:
    """``text`` as written and, where it holds a name separator, its head (``GLUED_STARTS_WITHIN`` and a
    key's reach past it) as a reader of its words reads it: each separator a line break (a key glued
    between words), the separators gone (a key split by them, ``AKIA-QYLP-...``), and each stretch that
    starts after a separator on a line of its own (a key that has separators of its own, ``ghp_...``,
    glued after a word). One text, and where in ``text`` each of its characters was read from: what the
    readings add is bounded by the head, however long the text."""
    head = text[: GLUED_STARTS_WITHIN + NAME_REACH]
    starts = [
        index + 1
        for index, char in enumerate(head[:GLUED_STARTS_WITHIN])
        if char in NAME_SEPARATORS and index + 1 < len(text)
    ]
    if not starts:
        return text, lambda position: position
    kept = [index for index, char in enumerate(head) if char not in NAME_SEPARATORS]
    # Each reading after the text itself, with where it was read from: an offset its characters follow
    # on from, or the offset of each.
    pieces: list[tuple[str, int | list[int]]] = [
        ("".join("\n" if char in NAME_SEPARATORS else char for char in head), 0),
        ("".join(head[index] for index in kept), kept),
        *((text[start : start + NAME_REACH], start) for start in starts),
    ]
    beginnings: list[int] = [0]
    origins: list[int | list[int]] = [0]
    position = len(text)
    for reading, origin in pieces:
        first = origin if isinstance(origin, int) else origin[0] if origin else 0
        beginnings += [position, position + len(_READINGS_SEPARATOR)]
        origins += [[first] * len(_READINGS_SEPARATOR), origin]
        position += len(_READINGS_SEPARATOR) + len(reading)

    def origin_of(at: int) -> int:
        number = bisect_right(beginnings, at) - 1
        origin, offset = origins[number], at - beginnings[number]
        return origin + offset if isinstance(origin, int) else origin[offset]

    return _READINGS_SEPARATOR.join([text, *(reading for reading, _ in pieces)]), origin_of


def scan_glued(scanner: Scanner, text: str, budget: ScanBudget) -> ScanResult:
    """What ``scanner`` finds in any of ``text``'s ``glued_readings``, as spans of ``text``: for a name an
    agent or a model chose (a tool's, a server's, a file's), read where it is recorded or echoed."""
    reading, origin_of = glued_readings(text)
    scan = scanner.scan(reading, budget)
    if reading is text:
        return scan
    found = {
        (match.rule.id, origin_of(match.start), origin_of(match.end - 1) + 1): Match(
            match.rule, origin_of(match.start), origin_of(match.end - 1) + 1, match.disguise
        )
        for match in scan.found
    }
    return ScanResult(list(found.values()), scan.timed_out)


def _redacted(
    scanner: Scanner, text: str, scan: ScanResult, style: RedactionStyle, key: bytes | None
) -> RedactedText:
    if scan.timed_out:
        rule = scanner.rules_by_id[scan.timed_out[0]]
        whole = RedactionStyle.HASH if style is RedactionStyle.HASH else RedactionStyle.PLACEHOLDER
        return RedactedText(
            placeholder(SCAN_TIMEOUT_RULE, text, whole, key),
            [Redaction(SCAN_TIMEOUT_RULE, rule.threat, Severity.HIGH, fingerprint(text, key))],
        )
    matches = scan.matches
    redactions = [Redaction.of(match.rule, text[match.start : match.end], key) for match in matches]
    return RedactedText(redact_text(text, matches, style, key=key), redactions)


MAX_REMEMBERED_TEXT = 256
"""Longest string whose redaction ``redact_json(..., remember=True)`` keeps: ids, hosts, paths, names."""
MAX_REMEMBERED = 4096
_remembered: dict[
    tuple[Scanner, str, RedactionStyle, bytes | None, bool], tuple[str, tuple[Redaction, ...]]
] = {}


def _redact_remembered(
    scanner: Scanner, text: str, style: RedactionStyle, key: bytes | None, budget: ScanBudget, *, glued: bool
) -> tuple[str, tuple[Redaction, ...]]:
    """The redaction of a short string, computed once: the same user id, host or model name comes back
    on every turn. A scan in which a rule timed out is not kept, so a slow moment is not remembered."""
    slot = (scanner, text, style, key, glued)
    known = _remembered.get(slot)
    if known is not None:
        return known
    scan = (scan_glued if glued else Scanner.scan)(scanner, text, budget)
    result = _redacted(scanner, text, scan, style, key)
    answer = (result.text, tuple(result.redactions))
    if not scan.timed_out:
        if len(_remembered) >= MAX_REMEMBERED:
            _remembered.clear()
        _remembered[slot] = answer
    return answer


def redact_json(
    value: Any,
    scanner: Scanner,
    style: RedactionStyle = RedactionStyle.PLACEHOLDER,
    *,
    key: bytes | None = None,
    remember: bool = False,
    glued: bool = False,
) -> tuple[Any, list[Redaction]]:
    """A copy of a decoded JSON value with every string redacted, so it still encodes to valid JSON.

    With ``remember`` the redactions of short strings are kept and reused (for values that repeat); with
    ``glued`` each string is read in its ``glued_readings`` (names an agent chose). Its strings share one
    budget (``ScanBudget``); one a rule ran out of time on is replaced whole."""
    redactions: list[Redaction] = []
    budget = scanner.budget()

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            if remember and len(node) <= MAX_REMEMBERED_TEXT:
                text, found = _redact_remembered(scanner, node, style, key, budget, glued=glued)
                redactions.extend(found)
                return text
            scan = (scan_glued if glued else Scanner.scan)(scanner, node, budget)
            result = _redacted(scanner, node, scan, style, key)
            redactions.extend(result.redactions)
            return result.text
        if isinstance(node, dict):
            return {name: walk(item) for name, item in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return walk(value), redactions


# Private key blocks are suppressed whole while streaming: from the BEGIN line to the END line nothing
# is released, and the block is never held in memory either (only a keyed digest of it is kept).
# A marker only opens a block when its line ends right after it (a real newline, or an escaped one
# inside a JSON string); a marker quoted in prose is left to the ordinary rules.
_KEY_BLOCK_BEGIN = regex.compile(
    r"(?:-----BEGIN (?P<label>[A-Z0-9 ]{0,30}PRIVATE KEY(?: BLOCK)?)-----"
    r"|---- BEGIN (?P<label>SSH2 ENCRYPTED PRIVATE KEY) ----"
    r"|(?P<label>PuTTY)-User-Key-File-\d: [a-z0-9-]{1,40})"
    r"[ \t]*(?:\r?\n|(?:\\r)?\\n)"
)
# Longer than any key block the secrets pack matches: past this, suppression ends and text flows again.
_MAX_KEY_BLOCK = 16_000
_KEY_BLOCK_END = {
    # PuTTY v3 MACs are 64 hex digits (HMAC-SHA-256), v2 ones 40 (HMAC-SHA-1).
    "PuTTY": regex.compile(r"Private-MAC: (?:[0-9a-f]{64}|[0-9a-f]{40}(?=[^0-9a-f]))"),
    "SSH2 ENCRYPTED PRIVATE KEY": regex.compile(r"---- END SSH2 ENCRYPTED PRIVATE KEY ----"),
}
_PEM_END = regex.compile(r"-----END [A-Z0-9 ]{0,30}PRIVATE KEY(?: BLOCK)?-----")
_KEY_BLOCK_RULES = {
    "RSA PRIVATE KEY": "private-key-rsa",
    "DSA PRIVATE KEY": "private-key-dsa",
    "EC PRIVATE KEY": "private-key-ec",
    "OPENSSH PRIVATE KEY": "private-key-openssh",
    "PRIVATE KEY": "private-key-pkcs8",
    "ENCRYPTED PRIVATE KEY": "private-key-pkcs8-encrypted",
    "PGP PRIVATE KEY BLOCK": "private-key-pgp",
    "SSH2 ENCRYPTED PRIVATE KEY": "private-key-ssh2-encrypted",
    "PuTTY": "private-key-putty",
}
_LONGEST_END_MARKER = 128  # longer than any end marker (PuTTY: "Private-MAC: " and 64 hex)
# A run that could still grow into a match: the trailing whitespace-free token, a trailing number
# written with separators (cards, SSNs, phone numbers and IBANs contain spaces) ...
# Each is searched backwards from the end ((?r)), so its cost does not grow with the held text.
_OPEN_TOKEN = regex.compile(r"(?r)\S+\Z")
_OPEN_NUMBER = regex.compile(r"(?r)(?:[+(]?[0-9A-Z]+[)]?[ .-]){1,8}[0-9A-Z]*\Z")
# ... or a trailing run of single characters (or escapes of one) one to three spaces or separators
# apart: a letter-spaced or separated secret ("g h p _ 1 a ...", "&#103; &#104; ...", "\\u{67}, \\u{68}",
# one character a line) is only recognised once complete. Its units and separators are those the views
# read (scanning/unmask.py), so no escape a view decodes ends such a run early; the last unit may be
# incomplete yet.
_OPEN_SPACED = regex.compile(
    rf"(?r)(?<!\S)(?:(?:\S|{unmask.ESCAPED_CHARACTER}){unmask.SPACING}{{1,3}})+\S{{0,{unmask.LONGEST_ESCAPE}}}\Z"
)
# ... or a trailing run of string literals that code or JSON joins, with what may begin the next: a key cut
# into them is read joined (scanning/unmask.py) only once its last piece has come.
_OPEN_JOINED = regex.compile(f"(?r){unmask.OPEN_JOINED}\\Z")
# ... or a trailing run of numbers with up to eight other characters between each two, which may be a key
# written as the codes of its characters (scanning/unmask.py), decimal or binary (seven or eight ones and
# zeros; binary digits in a row are a token). No two small letters and a space stand between them (no
# separator of codes holds them), so a run never ends past a word ``_ends_in_a_word`` stops at.
_CODE_SEPARATOR = r"(?:(?![a-z][a-z] )[^0-9])"
_OPEN_CODES = regex.compile(
    rf"(?r)(?<![0-9])(?:[0-9]{{2,3}}|[01]{{7,8}})(?:{_CODE_SEPARATOR}{{1,8}}(?:[0-9]{{1,3}}|[01]{{4,8}}))*"
    rf"{_CODE_SEPARATOR}{{0,8}}\Z"
)
_LONGEST_BEGIN_MARKER = 64
_LONGEST_GROUPED = 320
"""How far back a key written out in groups white space parts is held from: its prefix, at the most (a
first group as long as a key's rest, ``unmask.OPEN_GROUPED``, after the longest prefix)."""
# A run is held up to ``max_hold`` characters that a view reads: those it drops (invisible and combining
# characters) do not count, so a secret padded with them between its characters is not released before it
# is whole. Held text stays bounded: a run this many caps long of which no more than one cap is read
# (nothing but padding, or a secret padded past what a stream may hold) is withheld whole, with the rest of
# it up to the next whitespace, and recorded as ``PADDED_RUN_RULE``.
_PADDED_CAPS = 4
_DROPPED_RUN = regex.compile(f"{unmask.DROPPED}+")
_WHITESPACE = regex.compile(r"\s")
PADDED_RUN_RULE = "inspection.padded_run"
# ... or a trailing run of an encoding that holds whitespace, which a decoded view reads as one segment
# (scanning/unmask.py) only once it is whole: base64 wrapped over lines of 40 characters or more, or of 4
# to 19 (lines of nothing else: the run that ends a line of other text before them is not held), hex
# pairs a space apart, and "0x" bytes a space or comma apart, each from a pair or byte that no letter or
# digit is glued to (a word ending in "ed" starts no run). Released as it came, the start of such a run
# (most of a token it encodes) went out before the view that decodes it could be read.
# Each with what a text must hold for it to match at all (the last pair's space among its last three
# characters, a "0x"): most deltas hold neither, and the look costs a tenth of the search.
_OPEN_SEGMENTS: tuple[tuple[regex.Pattern[str], Callable[[str, int], bool]], ...] = (
    (regex.compile(r"(?r)(?:[A-Za-z0-9+/_-]{40,}={0,2}\r?\n)+[A-Za-z0-9+/_=-]*\Z"), lambda text, start: True),
    (
        regex.compile(r"(?r)(?:[A-Za-z0-9+/_-]{40,}={0,2}\r?\n)*[A-Za-z0-9+/_-]{40,}={0,2}\r\Z"),
        lambda text, start: True,
    ),
    (
        regex.compile(
            r"(?r)(?:(?<![^\n])[ \t]{0,8}[A-Za-z0-9+/_-]{4,19}={0,2}\r?\n)+"
            r"(?:[ \t]{0,8}[A-Za-z0-9+/_=-]{0,19}\r?)?\Z"
            r"|(?<![^\n])[ \t]{0,8}[A-Za-z0-9+/_-]{4,19}={0,2}\r\Z"
        ),
        lambda text, start: "\n" in text[-32:] or text.endswith("\r"),
    ),
    (
        regex.compile(r"(?r)(?<![0-9A-Za-z])(?:[0-9A-Fa-f]{2} )+[0-9A-Fa-f]{0,2}\Z"),
        lambda text, start: " " in text[-3:],
    ),
    (
        regex.compile(r"(?r)(?<![0-9A-Za-z])(?:0x[0-9A-Fa-f]{2}[ ,]{1,2})+(?:0(?:x[0-9A-Fa-f]{0,2})?)?\Z"),
        lambda text, start: text.find("0x", start) >= 0,
    ),
)
_DIGIT = re.compile("[0-9]")
_OPEN_RUNS: tuple[tuple[regex.Pattern[str], Callable[[str, int], bool]], ...] = (
    (_OPEN_NUMBER, lambda text, start: True),
    (_OPEN_SPACED, lambda text, start: True),
    (_OPEN_JOINED, lambda text, start: text.find('"', start) >= 0 or text.find("'", start) >= 0),
    (_OPEN_CODES, lambda text, start: _DIGIT.search(text, start) is not None),
)
"""The runs other than encodings ``_open_run`` holds, each with what a text must hold for it to match at
all (a quote that opens a literal, the digits of a code): most deltas of prose hold neither."""
_MAX_TRIGGERS = 32
_PLAIN = re.compile("[A-OQ-Za-z ,.]*")
"""Plain prose (``StreamRedactor._release_plain``): ASCII letters but P (which begins a key block's
marker), spaces, commas and full stops."""
_PLAIN_LONGEST = 256
"""The longest pending text ``_release_plain`` reads: where ``_hold_in`` looks at all of it."""


@dataclass(frozen=True, slots=True)
class _Trigger:
    """Something the stream brought that a rule or a decoded view may start from, in stream offsets: it
    lies before ``before``, and a match holding it ends before ``reach``, or within its run of
    non-whitespace when it is ``confined`` (``Triggered``)."""

    before: int
    reach: int
    confined: bool


@dataclass(frozen=True, slots=True)
class _Ahead:
    """What a redactor read in the text it was told of ahead (``StreamRedactor.expect``): the scanned text
    from stream offset ``base`` on, its matches (in the offsets of that text), and the stream offset where
    the part of it that may still grow into a match starts. Valid while the known text ends where it did."""

    base: int
    text: str
    matches: tuple[Match, ...]
    hold: int

    @property
    def end(self) -> int:
        return self.base + len(self.text)


class StreamRedactor:
    """Redacts a stream of text deltas, releasing everything that can no longer become part of a match.

    ``feed`` returns the text that is safe to send now; ``flush`` returns the rest at end of stream. Only
    the trailing run that could still grow into a match is held back, never more than ``max_hold``
    characters, so a stream never stalls. ``redactions`` lists what was redacted so far.
    """

    def __init__(
        self,
        scanner: Scanner,
        style: RedactionStyle = RedactionStyle.PLACEHOLDER,
        *,
        key: bytes | None = None,
        max_hold: int = 2048,
        context: int = 256,
        budget: ScanBudget | None = None,
    ) -> None:
        """``budget``: that of the response (or message) the stream is part of, else one of its own. A
        rule that runs out of time on a window raises ``ScanTimeout`` out of ``expect``, ``feed`` or
        ``flush``: no text of that window is known to be clean, so none of it may be released."""
        self._scanner = scanner
        self._budget = budget or scanner.budget()
        self._style = style
        self._key = key
        self._max_hold = max_hold
        self._context_size = context
        self._context = ""  # the tail of the original text already released, for rules' lookbehinds
        self._pending = ""
        self._passed = 0  # original characters released or suppressed so far
        self._recorded: set[int] = set()  # stream offsets of matches already listed in redactions
        self._key_block: tuple[str, regex.Pattern[str], Any] | None = None  # rule id, end marker, digest
        self._key_block_tail = ""
        self._key_block_size = 0
        self._continued: tuple[int, str] | None = None
        self._expected = 0  # characters of the text announced by ``expect`` that have not come yet
        self._ahead: _Ahead | None = None
        self._watch = scanner.watch()
        self._read_ahead = 0  # characters announced by ``expect`` that the watch has read and not come yet
        self._triggers: list[_Trigger] = []  # those that may still make a scan find something
        self._padded = False  # withholding the rest of an overlong padded run
        self._spread: frozenset[int] = frozenset()  # rules whose value may span words, triggered, still open
        self.redactions: list[Redaction] = []

    def expect(self, text: str) -> None:
        """``text`` is what the next feeds bring, in order (the caller vouches for it: the rest of a burst
        of events already read). What each of those feeds releases is decided on all of it, as if it had
        come at once: one scan covers it, and text that what follows shows to be no secret's start goes
        out with its own delta instead of with the next one. Not while a private key block may open in it,
        or while this channel's start is read on from another's text."""
        self._expected = 0
        self._ahead = None
        if self._read_ahead:
            # Text announced before has not all come: what the watch read of it may not be what follows.
            # Windows holding the place are scanned whole, and the watch starts afresh.
            self._watch = self._scanner.watch()
            self._read_ahead = 0
            self._note(Triggered(0, UNBOUNDED))
        base = self._passed - len(self._context)
        known = self._pending + text
        begins = _key_block_begins(known, max(0, len(self._pending) - _LONGEST_BEGIN_MARKER))
        if not text or self._key_block is not None or self._padded or base < 0 or begins is not None:
            return
        self._expected = self._read_ahead = len(text)
        self._note(self._watch.feed(text), self._passed + len(known))
        scanned = self._context_to_scan()
        offset = scanned or 0
        window = self._context[len(self._context) - offset :] + known
        matches: tuple[Match, ...] = ()
        if scanned is not None:
            matches = tuple(match for match in self._scan(window) if match.end > offset)
        hold = self._passed + _hold_in(known, self._max_hold, self._scanner, self._open_value(known))
        self._ahead = _Ahead(self._passed - offset, window, matches, hold)

    def feed(self, delta: str) -> str:
        out: list[str] = []
        text = delta
        self._expected = max(0, self._expected - len(delta))
        while text:
            if self._key_block is not None:
                text = self._consume_key_block(text, out)
                continue
            if self._padded:
                text = self._skip_padded(text)
                continue
            # Only the new text, and a marker that may have started just before it, need a look.
            look_from = max(0, len(self._pending) - _LONGEST_BEGIN_MARKER)
            self._pending += text
            # What ``expect`` announced, the watch has read.
            read = min(self._read_ahead, len(text))
            self._read_ahead -= read
            if read < len(text):
                self._note(self._watch.feed(text[read:]))
            text = ""
            plain = self._release_plain()
            if plain is not None:
                out.append(plain)
                continue
            begin = _key_block_begins(self._pending, look_from)
            if begin is not None:
                out.append(self._release(begin.start(), final=True))
                text = self._pending
                self._pending = ""
                self._start_key_block(begin, text)
                self._passed += begin.end() - begin.start()
                text = text[begin.end() - begin.start() :]
                continue
            padded = _padded_run(self._pending, self._max_hold)
            if padded is not None:
                out.append(self._release(padded, final=False))
                out.append(self._withhold_padded())
                continue
            out.append(self._release(self._hold_from(), final=False))
        return "".join(out)

    def _withhold_padded(self) -> str:
        """Withholds the held run, which no view may read whole before more than the stream may hold
        has come."""
        run = self._pending
        self._passed += len(run)
        self._pending = self._context = ""
        self._padded = True
        self.redactions.append(
            Redaction(PADDED_RUN_RULE, Threat.DATA_EXFILTRATION, Severity.HIGH, fingerprint(run, self._key))
        )
        whole = RedactionStyle.HASH if self._style is RedactionStyle.HASH else RedactionStyle.PLACEHOLDER
        return placeholder(PADDED_RUN_RULE, run, whole, self._key)

    def _skip_padded(self, text: str) -> str:
        """Drops the withheld run's continuation; returns what follows it from the next whitespace on."""
        end = _WHITESPACE.search(text)
        skipped = len(text) if end is None else end.start()
        self._passed += skipped
        self._padded = end is None
        return text[skipped:]

    def continue_from(self, text: str) -> None:
        """Reads what follows as the continuation of ``text``, which another channel already carried:
        a secret that began there is redacted from where this channel starts (``continued`` says how
        much of ``text`` it covered)."""
        if not self._pending and not self._passed:
            self._context = text[-self._context_size :]

    def continued(self) -> tuple[int, str] | None:
        return self._continued

    def flush(self) -> str:
        out: list[str] = []
        if self._key_block is not None:
            out.append(self._close_key_block())
        out.append(self._release(len(self._pending), final=True))
        return "".join(out)

    def _release_plain(self) -> str | None:
        """What ``_release(self._hold_from(), final=False)`` releases, for pending text of plain prose
        (``_PLAIN``) while nothing the stream brought may make a scan find anything (no trigger, nothing
        read ahead, a context of this channel's own that ends in white space): ``_hold_in``'s looks for
        what prose cannot hold left out, and no scan. None for any other pending text or state.

        Exact: prose holds no key block's marker (each starts with "-" or "P"), its last word is its one
        run of non-whitespace, a text this short is no padded run nor over the cap, and where no cut
        prefix can open in it (``Scanner.may_open_split_key``) ``open_split_key`` finds none."""
        pending = self._pending
        if (
            self._triggers
            or self._spread
            or self._ahead is not None
            or len(pending) > min(_PLAIN_LONGEST, self._max_hold)
            or _PLAIN.fullmatch(pending) is None
            or self._passed < len(self._context)
            or (self._context and not self._context[-1].isspace())
        ):
            return None
        scanner = self._scanner
        hold = pending.rfind(" ") + 1
        if not _ends_in_a_word(pending, hold):
            hold = _open_run(pending, 0, hold)
        for open_key in (
            scanner.open_grouped_key(pending, 0),
            scanner.open_split_key(pending, 0) if scanner.may_open_split_key(pending) else None,
        ):
            if open_key is not None:
                hold = min(hold, open_key)
        if hold <= 0:
            return ""
        window = self._context + pending
        cut = len(self._context) + hold
        self._passed += hold
        if self._recorded:
            self._recorded = {start for start in self._recorded if start >= self._passed - self._context_size}
        self._context = window[max(0, cut - self._context_size) : cut]
        self._pending = pending[hold:]
        return pending[:hold]

    def _hold_from(self) -> int:
        """Where the part of the pending text that may still grow into a match starts."""
        ahead = self._known_ahead()
        if ahead is None:
            return _hold_in(self._pending, self._max_hold, self._scanner, self._open_value(self._pending))
        return max(0, min(len(self._pending), ahead.hold - self._passed))

    def _open_value(self, pending: str) -> int:
        """Where in ``pending`` the value of a match it ends inside of starts, of a rule whose value may
        span words that the stream triggered (``Scanner.open_value``): held whole, its first words are not
        released before it is complete. ``len(pending)`` where none is open; the rules no match is open
        of any more are no longer looked at."""
        if not self._spread:
            return len(pending)
        opened, self._spread = self._scanner.open_value(self._context + pending, 0, self._spread)
        return len(pending) if opened is None else max(0, opened - len(self._context))

    def _known_ahead(self) -> _Ahead | None:
        """What ``expect`` read, while the text known still ends where it did then."""
        ahead = self._ahead
        if ahead is not None and ahead.end != self._passed + len(self._pending) + self._expected:
            ahead = self._ahead = None
        return ahead

    def _release(self, upto: int, *, final: bool) -> str:
        """Redact and return ``pending[:upto]``.

        A match crossing ``upto`` is held back whole unless that would hold more than ``max_hold``, or
        the release is final (end of stream, or a key block starts): then its part before the cut is
        redacted now and the rest when it is released.
        """
        if upto <= 0 and not final:
            return ""
        window = self._context + self._pending
        offset = len(self._context)
        base = self._passed - offset  # stream offset of window[0]
        cut = offset + upto
        matches = self._matches(window, offset, base)
        if not final:
            for match, _ in matches:
                if match.start < cut < match.end and cut - match.start <= self._max_hold:
                    # A match that began in text already released is held from where the pending starts.
                    cut = max(match.start, offset)
        out: list[str] = []
        position = offset
        for match, value in matches:
            if match.start >= cut:
                break
            start, end = max(match.start, offset), min(match.end, cut)
            out.append(window[position:start])
            stand_in = placeholder(match.rule.id, value, self._style, self._key)
            out.append(stand_in)
            if base + match.start < 0 and self._continued is None:
                self._continued = (-(base + match.start), stand_in)
            if base + match.start not in self._recorded:
                self._recorded.add(base + match.start)
                self.redactions.append(Redaction.of(match.rule, value, self._key))
            position = end
        out.append(window[position:cut])
        self._passed += cut - offset
        if self._recorded:  # most streams redact nothing
            self._recorded = {start for start in self._recorded if start >= self._passed - self._context_size}
        self._context = window[max(0, cut - self._context_size) : cut]
        self._pending = window[cut:]
        return "".join(out)

    def _matches(self, window: str, offset: int, base: int) -> list[tuple[Match, str]]:
        """Matches in the window that reach past its context, each with its value; those ``expect`` found
        may reach before the window or past its end. While the context holds text of another channel
        (before stream offset 0), this channel's own text is also scanned alone: the joint text can hide a
        boundary a rule needs (``abc`` + ``AKIA...`` reads as one word)."""
        ahead = self._known_ahead()
        if ahead is not None:
            shift = ahead.base - base
            return [
                (Match(hit.rule, hit.start + shift, hit.end + shift), ahead.text[hit.start : hit.end])
                for hit in ahead.matches
                if hit.end + shift > offset
            ]
        scanned = self._context_to_scan()
        if scanned is None:
            return []
        left_out = offset - scanned
        return [
            (
                replace(match, start=match.start + left_out, end=match.end + left_out),
                window[match.start + left_out : match.end + left_out],
            )
            for match in self._scanned(window[left_out:], scanned, base + left_out)
        ]

    def _note(self, triggered: Triggered | None, end: int | None = None) -> None:
        """Keeps what the watch found in the text that ends at stream offset ``end`` (the pending text's
        end by default)."""
        if triggered is None:
            return
        if triggered.spread:
            self._spread |= triggered.spread
        end = self._passed + len(self._pending) if end is None else end
        self._triggers.append(_Trigger(end + triggered.extent, end + triggered.reach, triggered.reach == 0))
        if len(self._triggers) > _MAX_TRIGGERS:
            # Tiny deltas full of triggers: one that lasts as long as the longest-lasting of them stands
            # for all, so a release never reads more than a few.
            triggers = self._triggers
            self._triggers = [
                _Trigger(
                    max(trigger.before for trigger in triggers),
                    max(trigger.reach for trigger in triggers),
                    all(trigger.confined for trigger in triggers),
                )
            ]

    def _context_to_scan(self) -> int | None:
        """How many characters of the context a scan of the window needs to find every match that reaches
        the pending text (and the text announced after it); None when no scan can find one.

        Each trigger the stream brought either lies before the context (a scan of the window does not
        run the rules it triggers), or lets no match reach as far as the pending text, or is confined to
        its run of non-whitespace: since the context ends in whitespace (so no token grows over it
        either), the matches of the last kind that reach the pending text lie in it, and need only the
        few characters before it that such a rule looks back at. A context read from another channel,
        or cut inside a token, is scanned whole."""
        start = self._passed - len(self._context)
        self._triggers = [
            trigger for trigger in self._triggers if trigger.before > start and trigger.reach >= self._passed
        ]
        if start < 0 or (self._context and not self._context[-1].isspace()):
            return len(self._context)
        if not self._triggers:
            return None
        if all(trigger.confined for trigger in self._triggers):
            return min(len(self._context), RUN_LOOKBEHIND)
        return len(self._context)

    def _scan(self, window: str) -> list[Match]:
        return self._scanner.scan(window, self._budget).matches

    def _scanned(self, window: str, offset: int, base: int) -> list[Match]:
        found = [match for match in self._scan(window) if match.end > offset]
        own = -base
        if own <= 0:
            return found
        found += [
            Match(match.rule, match.start + own, match.end + own)
            for match in self._scan(window[own:])
            if match.end + own > offset
        ]
        kept: list[Match] = []
        for match in sorted(found, key=lambda item: (item.start, -item.end)):
            if not kept or match.start >= kept[-1].end:
                kept.append(match)
        return kept

    def _start_key_block(self, begin: regex.Match[str], text: str) -> None:
        label = begin.group("label")
        rule_id = _KEY_BLOCK_RULES.get(label, "private-key-other")
        digest = hmac.new(self._key or _PROCESS_KEY, digestmod=hashlib.sha256)
        digest.update(_utf8(text[: begin.end() - begin.start()]))
        self._key_block = (rule_id, _KEY_BLOCK_END.get(label, _PEM_END), digest)
        self._key_block_tail = ""
        self._key_block_size = 0

    def _consume_key_block(self, text: str, out: list[str]) -> str:
        """Swallow key material; return what follows the END marker (or "" while the block is open)."""
        assert self._key_block is not None
        _, end_marker, digest = self._key_block
        searchable = self._key_block_tail + text
        end = end_marker.search(searchable)
        if end is None:
            room = _MAX_KEY_BLOCK - self._key_block_size
            if len(text) >= room:
                digest.update(_utf8(text[:room]))
                self._passed += room
                out.append(self._close_key_block())
                return text[room:]
            digest.update(_utf8(text))
            self._passed += len(text)
            self._key_block_size += len(text)
            self._key_block_tail = searchable[-_LONGEST_END_MARKER:]
            return ""
        consumed = end.end() - len(self._key_block_tail)
        digest.update(_utf8(text[:consumed]))
        self._passed += consumed
        out.append(self._close_key_block())
        return text[consumed:]

    def _close_key_block(self) -> str:
        assert self._key_block is not None
        rule_id, _, digest = self._key_block
        self._key_block = None
        self._key_block_tail = ""
        # Rules must not look back into a key block that was never released.
        self._context = ""
        rule = next((rule for rule in self._scanner.rules if rule.id == rule_id), None)
        threat = rule.threat if rule else Threat.DATA_EXFILTRATION
        severity = rule.severity if rule else Severity.CRITICAL
        self.redactions.append(Redaction(rule_id, threat, severity, digest.hexdigest()))
        # The block's digest stands in for the value: the block itself was never kept.
        if self._style is RedactionStyle.HASH:
            return f"[REDACTED:{rule_id}:{digest.hexdigest()[:8]}]"
        return f"[REDACTED:{rule_id}]"


def _key_block_begins(text: str, start: int, *, partial: bool = False) -> regex.Match[str] | None:
    """``_KEY_BLOCK_BEGIN.search(text, start, partial=partial)``, not searched where no marker can start:
    each starts with "-" or "P". (Where none can, a partial search finds at most the empty match at the
    text's end, which holds nothing back.)"""
    if text.find("-", start) < 0 and text.find("P", start) < 0:
        return None
    return _KEY_BLOCK_BEGIN.search(text, start, partial=partial)


def _hold_in(pending: str, max_hold: int, scanner: Scanner, value: int | None = None) -> int:
    """Where the part of ``pending`` that may still grow into a match starts; ``value``: where a value of
    several words that may still grow starts (``StreamRedactor._open_value``), at the latest."""
    # A run longer than max_hold is cut below anyway, so only the last max_hold + 1 characters need a
    # look: searched whole, a long letter-spaced run ("a a a ...") costs time quadratic in its length.
    look_from = max(0, len(pending) - max_hold - 1)
    word = _OPEN_TOKEN.search(pending, max(0, len(pending) - max_hold * _PADDED_CAPS))
    hold = len(pending) if word is None else word.start()
    if not _ends_in_a_word(pending, hold):
        hold = _open_run(pending, look_from, hold)
    low = max(look_from, len(pending) - _LONGEST_GROUPED)
    split_low = max(look_from, low - unmask.LONGEST_SPLIT)
    for open_key in (scanner.open_grouped_key(pending, low), scanner.open_split_key(pending, split_low)):
        if open_key is not None:
            hold = min(hold, open_key)
    begin = _key_block_begins(pending, max(0, len(pending) - _LONGEST_BEGIN_MARKER), partial=True)
    if begin is not None and begin.partial:
        hold = min(hold, begin.start())
    if value is not None:
        hold = min(hold, value)
    if len(pending) - hold > max_hold and _read_length(pending, hold) > max_hold:
        # Over the cap: release down to half of it, so a long run costs one scan per half cap.
        hold = len(pending) - max_hold // 2
    return hold


def _padded_run(pending: str, max_hold: int) -> int | None:
    """Where the run that ends ``pending`` starts, if it is ``_PADDED_CAPS`` caps long or more and a view
    reads no more than one cap of it."""
    if len(pending) < max_hold * _PADDED_CAPS:
        return None
    run = _OPEN_TOKEN.search(pending)
    if (
        run is None
        or len(run.group()) < max_hold * _PADDED_CAPS
        or _read_length(pending, run.start()) > max_hold
    ):
        return None
    return run.start()


def _read_length(text: str, start: int) -> int:
    """How many characters of ``text[start:]`` a view reads: those it drops do not count."""
    return len(text) - start - sum(len(run) for run in _DROPPED_RUN.findall(text, start))


def _open_run(pending: str, look_from: int, hold: int) -> int:
    """``hold``, or where a number with separators, a letter-spaced run or an encoding that holds
    whitespace starts before it at the end of ``pending``."""
    for pattern, may_match in _OPEN_RUNS:
        found = pattern.search(pending, look_from) if may_match(pending, look_from) else None
        if found is not None:
            hold = min(hold, found.start())
    for pattern, may_match in _OPEN_SEGMENTS:
        found = pattern.search(pending, look_from) if may_match(pending, look_from) else None
        if found is not None:
            # From the start of the word the run begins in ("bytes:de ad ..."), so what is released ends
            # in whitespace as before.
            word = _OPEN_TOKEN.search(pending, look_from, found.start())
            hold = min(hold, found.start() if word is None else word.start())
    return hold


_NOT_HEX = frozenset("ghijklmnopqrstuvwxyz")


def _ends_in_a_word(pending: str, word: int) -> bool:
    """Whether nothing but the last word of ``pending`` (``pending[word:]``, perhaps none) and a key
    block's begin marker can still grow into a match: that word follows one space after two small
    letters, one of them no hex digit. Then every number with separators, letter-spaced run, run of hex
    pairs or "0x" bytes and base64 lines that ends ``pending`` starts in that word: a number's groups
    end in a digit or a capital; a letter-spaced run's units are single characters and escapes, whose
    last two are hex digits, each a whole word; a pair and a byte end in two hex digits; and a space
    follows any line end."""
    before = pending[word - 3 : word] if word >= 3 else ""
    return (
        before[2:] == " "
        and before.isascii()
        and before[:2].isalpha()
        and before[:2].islower()
        and (before[0] in _NOT_HEX or before[1] in _NOT_HEX)
    )


class ByteStreamRedactor:
    """A :class:`StreamRedactor` over UTF-8 bytes, for text bodies relayed as they arrive because they are
    too large to hold whole. A byte that is not UTF-8 does not stop it: it is read as a lone surrogate
    (``surrogateescape``), which no rule matches, and written back as the same byte, so what is not
    redacted reaches the receiver exactly as sent."""

    def __init__(self, text: StreamRedactor) -> None:
        self._text = text
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")

    def feed(self, chunk: bytes) -> bytes:
        return _restore_bytes(self._text.feed(self._decoder.decode(chunk)))

    def flush(self) -> bytes:
        tail = self._decoder.decode(b"", final=True)
        return _restore_bytes(self._text.feed(tail) + self._text.flush())


def _restore_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")
