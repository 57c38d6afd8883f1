"""Views of a text with its encodings and disguises undone, so secret rules see what a model would read.

A credential written as base64 or hex, percent-encoded, as JSON ``\\u`` escapes or HTML entities,
letter-spaced, split by zero-width characters, or with look-alike letters from other scripts (``АKIA``
with a Cyrillic А) reads the same to a model and to anyone it is sent to, but matches no token format.
``views`` finds such spans and returns each as a ``View``: the decoded text plus the map from every
offset in it back to the span of the original text that produced it, so a redaction covers the whole
encoded span that carried the secret.

Two kinds of view, each undone again inside the other down to ``MAX_DEPTH`` levels (base64 of a
percent-encoded token, entities of a letter-spaced one):

- ``disguise``: regions around escapes, invisible characters, look-alike letters and letter-spaced runs,
  rewritten character by character (a plain character maps to itself, an escape to its span);
- ``base64`` and ``hex``: a segment that decodes to UTF-8 text, or to binary holding enough printable
  bytes for a key (``+binary``: its printable runs, as a binary body is read); everything in it maps to
  the segment.

Cost stays linear: features are found with one C-level regex search per kind, only the regions around
them are rewritten, and decoded segments are never longer than their encoding. Segments too short to hold
a key beside binary, and binary with too few printable bytes for one (hashes, git SHAs, SRI digests), are
dropped before any rule runs.

Pure: text in, views out.
"""

# The docs name look-alike letters on purpose.
# ruff: noqa: RUF002, RUF003

from __future__ import annotations

import base64
import binascii
import bisect
import bz2
import codecs
import functools
import html
import itertools
import lzma
import re
import string
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import regex

from proxy.scanning import relaxed
from proxy.scanning.normalize import (
    LOOKALIKES,
    ROT13_TABLE,
    ROT47_TABLE,
    caesar_table,
    decode_tag_run,
    starts_binary,
)
from proxy.wire.printable import bridged_runs, printable_runs

MAX_DEPTH = 4
"""A view is searched for further encodings down to this many levels (base64 of hex of a percent-encoded,
letter-spaced token is four)."""

BASE64 = "base64"
BASE32 = "base32"
HEX = "hex"
BINARY = "binary"
"""What a base64 or hex segment that decodes to binary is read as: its printable runs."""
DISGUISE = "disguise"

# Zero-width characters, joiners, word joiner and invisible operators, BOM, soft hyphen, Mongolian vowel
# separator, bidirectional controls and Unicode tag characters: a model reads across them. So it does
# across what is drawn as nothing (Hangul fillers, the braille blank, Khmer's inherent vowels) and what
# sits on a letter without making it another (combining marks, variation selectors): a key with an accent
# over every letter is the key.
_INVISIBLE = (
    "\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\u061c\ufeff\U000e0000-\U000e007f"
    "\u115f\u1160\u3164\uffa0\u2800\u17b4\u17b5"
    "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f\ufe00-\ufe0f\U000e0100-\U000e01ef"
)


def _fold_table() -> dict[int, str]:
    """One plain character for each look-alike; full-width form, mathematical, circled, squared,
    superscript or subscript letter or digit; and digit of any other script (Arabic-Indic ٣, Devanagari
    ३, ...), each of which a model reads as the ASCII one."""
    table = {ord(char): latin for char, latin in LOOKALIKES.items()}
    for code in (
        *range(0xFF01, 0xFF5F),
        *range(0x1D400, 0x1D800),
        *range(0x2460, 0x2500),
        *range(0x1F130, 0x1F150),
        *range(0x2070, 0x20A0),
        0xB2,
        0xB3,
        0xB9,
    ):
        folded = unicodedata.normalize("NFKC", chr(code))
        if len(folded) == 1 and folded.isascii() and folded.isprintable():
            table[code] = folded
    for code in range(0x80, 0x20000):
        if chr(code).isdecimal():
            table.setdefault(code, str(unicodedata.decimal(chr(code))))
    return table


def _class_of(codes: list[int]) -> str:
    """A regex character class's inside holding ``codes``, as ranges."""
    ranges: list[list[int]] = []
    for code in sorted(codes):
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return "".join(
        re.escape(chr(low)) + ("" if low == high else "-" + re.escape(chr(high))) for low, high in ranges
    )


_FOLD = _fold_table()
_FOLDABLE_CLASS = _class_of(list(_FOLD))
_WIDE_CLASS = "\uff01-\uff5e\U0001d400-\U0001d7ff\u2460-\u24ff\U0001f130-\U0001f14f"
_SPACED_CHAR = "A-Za-z0-9_+/=:.~$!*#@-"

# What marks a disguise, each kind looked for only when a cheap test says it can be there. Look-alikes and
# other characters with a fold count only next to a plain letter or digit (a mixed-script word such as
# "АKIA", a key with one Arabic-Indic digit), so Russian, Greek or Arabic prose is not rewritten.
_PERCENT_ESCAPE = r"%[0-9A-Fa-f]{2}"
# Escapes of one character in source code: JSON's and C's "\u0073", "\x73", "\U00000073", C's octal "\163",
# the braced "\u{73}" (JavaScript, Rust, Swift, Ruby) and "\x{73}" (Perl, PHP), and the white space
# escapes "\n", "\r", "\t": written out, a line break glues its "n" to the key after it ("\nghp_..."),
# where any reader of the string (a model, a decoder) reads a key starting a line.
_CODE_ESCAPE = (
    r"\\(?:u[0-9A-Fa-f]{4}|x[0-9A-Fa-f]{2}|U[0-9A-Fa-f]{8}|[0-3][0-7]{2}|[ux]\{[0-9A-Fa-f]{1,6}\}|[nrt])"
)
_WHITESPACE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t"}
_ENTITY_ESCAPE = r"&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});"
_PERCENT = re.compile(_PERCENT_ESCAPE)
_ESCAPE = re.compile(_CODE_ESCAPE)
_ENTITY = re.compile(_ENTITY_ESCAPE)
_NON_ASCII = re.compile(
    f"[{_INVISIBLE}]+"
    f"|[{_FOLDABLE_CLASS}]+(?=[A-Za-z0-9])|(?<=[A-Za-z0-9])[{_FOLDABLE_CLASS}]+"
    f"|[{_WIDE_CLASS}]{{4,}}"
)
# Letters may be spaced by spaces, tabs, no-break spaces or the typographic spaces (thin, figure, ...).
_GAP_CHARS = "\t \u00a0\u2000-\u200a\u202f\u205f\u3000"
_GAP = f"[{_GAP_CHARS}]{{1,3}}"
# Eight or more single characters each followed by one to three spaces: "g h p _ 1 a ...". The run is
# looked for only where a cheap search finds " x x x x " (a search led by a literal space is fast), on a
# copy of the text with every other gap character read as a space.
_SPACED_HINT = re.compile(r" \S {1,3}\S {1,3}\S {1,3}\S ")
# The hint's search tries a match at every space of the text. RE2 finds its shape in one linear pass over
# a copy of the text with each character past ASCII a "?" (one byte a character, so offsets carry over,
# and none of them a space): "[^ ]" holds every "\S" there, so every hint starts where the shape does
# and is asked for only there.
_SPACED_SHAPE = relaxed.re2_program(rb" [^ ] {1,3}[^ ] {1,3}[^ ] {1,3}[^ ] ")
_SPACED = re.compile(
    f"(?<![A-Za-z0-9_+-])(?:[{_SPACED_CHAR}]{_GAP}){{7,}}[{_SPACED_CHAR}](?![A-Za-z0-9_+/=-])"
)
# Characters written one at a time with one separator between each two, the same all along, of one to
# three characters of which one is not a space: "s-k---p-r-o-j" (the key's own "-" stands between two
# separators), "s.k.-.p", "s, k, -, p", one character a line. Every (1 + separator)th character is the
# text. Looked for where letters and digits that stand alone (no letter or digit either side) lie close
# together, six or more: one vectorised pass over a copy of the text with each letter or digit a 1. A
# separator may also be any character past ASCII that is no letter, digit or space: a bullet, an arrow, a
# middle dot, an emoji ("g•h•p•_", "g🙂h🙂p").
_SEPARATOR_CHARS = "-._|,/:;*~+\r\n "
_SEPARATOR_CLASS = f"(?:[{re.escape(_SEPARATOR_CHARS)}]|[^\\x00-\\x7f\\w\\s])"
_ALNUM_BYTES = bytes(int(chr(code).isascii() and chr(code).isalnum()) for code in range(256))
_ALONE_GAP = 8
"""The farthest apart two letters or digits of a separated run stand (a three-character separator, a
separator of the key's own between them, another separator)."""
_ALONE_RUN = 6
# A separated run's first four characters, each with its separator: where it starts (a key's first
# characters may be punctuation).
_SEPARATED_HINT = f"[!-~](?P<separator>{_SEPARATOR_CLASS}{{1,3}})(?:[!-~](?P=separator)){{3}}"
_SEPARATED = re.compile(f"[!-~](?P<separator>{_SEPARATOR_CLASS}{{1,3}})(?:[!-~](?P=separator)){{6,}}[!-~]")
ESCAPED_CHARACTER = f"{_PERCENT_ESCAPE}|{_CODE_ESCAPE}|{_ENTITY_ESCAPE}"
"""One character written as any escape a disguise view decodes (a pattern, to be grouped)."""
LONGEST_ESCAPE = 34
"""The longest match of ``ESCAPED_CHARACTER``: a named entity, "&", 32 letters or digits, ";"."""
DROPPED = f"[{_INVISIBLE}]"
"""One character a disguise view drops (invisible and combining characters), as a pattern."""
SPACING = f"(?:[{_GAP_CHARS}]|{_SEPARATOR_CLASS})"
"""One character of what a letter-spaced or separated run puts between its characters (a pattern)."""
# The rewrite itself: the units a view replaces, each kind led by a character of its own that no unit of
# another kind holds (and each letter-spaced run found for the features, read once). Each kind is looked
# for alone, with a pattern that opens with its literal: such a search skips ahead in C, where one
# alternation of them all, or a repeated group, steps through every character.
_ESCAPE_UNITS = (
    ("%", "percent", re.compile(f"{_PERCENT_ESCAPE}(?:{_PERCENT_ESCAPE})*")),
    ("\\", "escape", _ESCAPE),
    ("&", "entity", _ENTITY),
)
_INVISIBLE_UNIT = "invisible"
_INVISIBLE_RUN = re.compile(f"[{_INVISIBLE}]+")
# Spelt as one character then more (not "+"), so that the search skips to the first in C.
_PAST_ASCII_RUN = re.compile(r"[^\x00-\x7f][^\x00-\x7f]*")
_SPACED_UNIT = "spaced"
_GAP_CODES = np.array([0x09, 0x20, 0xA0, *range(0x2000, 0x200B), 0x202F, 0x205F, 0x3000], dtype=np.uint32)
_IS_GAP = np.zeros(int(_GAP_CODES.max()) + 2, dtype=bool)
_IS_GAP[_GAP_CODES] = True
"""Whether each code up to the last gap's is a gap; every code past it reads the last entry, False."""
# A region reaches this far either side of a feature: far enough for the longest token around it.
_REACH = 4096  # a 4096-bit RSA key in PEM
# How far back a region's start looks for whitespace, so a view never starts inside a token.
_SNAP = 256

# Base64 and hex segments are runs of their alphabet found on a one-byte-per-character copy of the text
# (every non-ASCII character one "?") where every base64 character reads "a" and anything else " ": a
# literal search for twenty "a"s skips through it many times faster than a character-class regex runs
# over the text.
_MIN_SEGMENT = 20
_SEGMENT_CLASSES = bytes(
    ord("a") if chr(code).isascii() and (chr(code).isalnum() or chr(code) in "+/_-") else ord(" ")
    for code in range(256)
)
_SEGMENT_NEEDLE = b"a" * _MIN_SEGMENT
_SEGMENT_REST = re.compile(b"a*")
_HEX_RUN = re.compile("[0-9A-Fa-f]+")
_MIN_HEX = 24
# Led by a literal "0x", so the search skips ahead fast (three times faster than `"0x" in text` over prose).
_PREFIXED_HEX = re.compile(r"0x[0-9A-Fa-f]{2}[ ,]{0,2}(?:0x[0-9A-Fa-f]{2}[ ,]{0,2}){11,}")
_HEX_NOISE = re.compile(r"0x|[ ,:-]")
# Bytes written as hex pairs with one separator between them ("de:ad:be:ef", "de-ad-...", "de ad ..."),
# twelve or more: looked for on a copy of the text where each hex digit reads "h" and each separator ":".
_PAIRS_CLASSES = bytes(
    ord("h") if chr(code) in string.hexdigits else ord(":") if chr(code) in ": -" else ord(" ")
    for code in range(256)
)
_PAIRS_NEEDLE = b"hh:" * 11 + b"hh"
_PAIRS = re.compile(r"[0-9A-Fa-f]{2}([:\- ])(?:[0-9A-Fa-f]{2}\1){10,}[0-9A-Fa-f]{2}(?![0-9A-Fa-f])")
# Base64 wrapped at a fixed width (MIME's 76 characters, PEM's 64): lines of one length, a multiple of
# four, and a last line no longer, joined before decoding.
_MIN_WRAP = 40
_LINE_BREAK = re.compile(r"\r?\n")
_LAST_LINE = re.compile(rf"\r?\n([A-Za-z0-9+/_-]{{1,{_MIN_SEGMENT - 1}}}={{0,2}})(?![A-Za-z0-9+/_=-])")
# Base64 or hex wrapped at a width too short for its lines to be segments of their own (anything from 4 to
# 19 hides a key from the search for twenty in a row): two lines or more of one width holding nothing
# else but an indentation of up to eight, and a last line no wider. Looked for at a line break: a search
# led by it skips ahead fast, and a line of prose or code fails within a few characters.
_SHORT_LINE = f"[A-Za-z0-9+/_-]{{4,{_MIN_SEGMENT - 1}}}"
_SHORT_WRAP_HINT = f"\n[ \t]{{0,8}}{_SHORT_LINE}\r?\n[ \t]{{0,8}}{_SHORT_LINE}\r?\n"
_SHORT_WRAP = re.compile(_SHORT_WRAP_HINT)
_WRAPPED_LINE = re.compile(r"[ \t]{0,8}([A-Za-z0-9+/_-]+={0,2})\r?(?:\n|\Z)")
_LEADING_RUN = re.compile(r"[ \t]{0,8}([A-Za-z0-9+/_-]+={0,2})(?![A-Za-z0-9+/_=-])")
# Compressed data read as what it holds: gzip, zlib, bzip2 and xz, told by their first bytes, and
# decompressed to at most this many times their size (and at most MAX_INFLATED characters), so a small
# bomb costs little.
_INFLATION = 64
MAX_INFLATED = 1 << 20

# How base64 of each starts (gzip; zlib at each level, default window; bzip2; xz in either alphabet): other
# segments are not decoded to ask.
_COMPRESSED_BASE64 = ("H4sI", "eJ", "eN", "eA", "eF", "Qlpo", "/Td6WFo", "_Td6WFo")


def _compression(raw: bytes) -> str | None:
    """Which compression ``raw`` starts as, by its first bytes."""
    if raw.startswith(b"\x1f\x8b"):
        return "gzip"
    if len(raw) > 1 and raw[0] & 0x0F == 8 and (raw[0] << 8 | raw[1]) % 31 == 0:
        return "zlib"
    if raw.startswith(b"BZh"):
        return "bzip2"
    if raw.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    return None


# Characters of a long segment decoded first; one that is not text is told within them.
_PROBE = 64
# Binary a segment decodes to is read for its printable runs where it can hold a key after a byte of
# binary: a key of the shortest format a rule finds is this many printable bytes.
_MIN_KEY = 20
_MIN_BINARY_BYTES = _MIN_KEY + 1
_GLUED = 4
_MIN_BINARY_BASE64 = -(-_MIN_BINARY_BYTES // 3) * 4
_PRINTABLE_BYTES = bytes(range(0x20, 0x7F))
# A decoded segment counts as text when nearly all of it is printable.
_PRINTABLE_SHARE = 0.9
_UNREADABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd]")


@dataclass(frozen=True, slots=True)
class View:
    """Decoded text and where each part of it came from.

    ``pieces`` run in order over ``text``: ``(view_start, origin_start, origin_end, literal)``; a literal
    piece maps character by character, any other piece as a whole. Offsets of ``origin`` are in the
    parent view's text, or in the scanned text when ``parent`` is None.
    """

    text: str
    kind: str
    pieces: tuple[tuple[int, int, int, bool], ...]
    parent: View | None = None
    letters: dict[int, npt.NDArray[np.intp]] = field(default_factory=dict)
    """For a piece of a letter-spaced run (by index): the origin offset of each of its characters."""
    backwards: bool = False
    """Whether the literal pieces are read backwards: each maps its first character to its origin's last."""
    scattered: bool = False
    """Whether the pieces map to places of the text in no order (a key's pieces assigned to names, used in
    another order): a span then maps from the first to the last origin of all the pieces it covers."""

    def original(self, start: int, end: int) -> tuple[int, int]:
        """The span of the scanned text that produced ``text[start:end]``."""
        # A view read backwards maps its first character after its last.
        first_origin, last_origin = self._origin(start), self._origin(max(start, end - 1))
        first, last = min(first_origin[0], last_origin[0]), max(first_origin[1], last_origin[1])
        if self.scattered:
            starts = [piece[0] for piece in self.pieces]
            inner = self.pieces[bisect.bisect_right(starts, start) : bisect.bisect_left(starts, end)]
            first = min([first, *(piece[1] for piece in inner)])
            last = max([last, *(piece[2] for piece in inner)])
        if self.parent is not None:
            return self.parent.original(first, last)
        return first, last

    def _origin(self, position: int) -> tuple[int, int]:
        starts = [piece[0] for piece in self.pieces]
        index = max(0, bisect.bisect_right(starts, position) - 1)
        view_start, origin_start, origin_end, literal = self.pieces[index]
        if index in self.letters:
            at = int(self.letters[index][min(position - view_start, len(self.letters[index]) - 1)])
            return at, at + 1
        if literal:
            offset = position - view_start
            at = (
                max(origin_end - 1 - offset, origin_start)
                if self.backwards
                else min(origin_start + offset, origin_end - 1)
            )
            return at, at + 1
        return origin_start, origin_end

    @property
    def kinds(self) -> str:
        """The disguises undone to reach this view, outermost first: ``base64+disguise``."""
        return self.kind if self.parent is None else f"{self.parent.kinds}+{self.kind}"


def views(text: str, *, max_depth: int = MAX_DEPTH) -> Iterator[View]:
    """Every decoded or undisguised view of ``text``, nested ones included."""
    yield from _views_of(text, None, max_depth)


def _views_of(text: str, parent: View | None, depth: int) -> Iterator[View]:
    if depth <= 0:
        return
    encoded = _class_bytes(text)
    for view in (*assembled_views(text, parent), *quoted_printable_views(text, parent)):
        yield view
        yield from _views_of(view.text, view, depth - 1)
    if text.isascii() and not relaxed.possible(_MAY_HOLD_VIEW, encoded, 0, len(encoded)):
        return  # ordinary prose, code and documents: no search of each kind of view
    views = (
        *_disguise_views(text, encoded, parent),
        *_segment_views(text, encoded, parent),
        *_base85_views(text, encoded, parent),
    )
    for view in (*views, *_code_views(text, encoded, parent), *_character_views(text, encoded, parent)):
        yield view
        yield from _views_of(view.text, view, depth - 1)


# Printable ASCII written as numbers: decimal codes 32 to 126, four of them apart by one to eight other
# characters, or binary ones of seven or eight digits so apart, or 56 binary digits in a row (the hint of
# ``_code_views``; one RE2 pass finds where it may start). A code below 100 may be padded to three digits
# ("095"): read as the decimal number a decoder's int() gives, not as octal. The hint spells every number
# ``_CODES`` reads that ``_code_views`` keeps, so a stream's trigger (``may_unmask``) is told of every run
# the whole text's views read.
_CODE = "(?:0?(?:3[2-9]|[4-9][0-9])|1[01][0-9]|12[0-6])"
_BIT_CODE = "[01]{7,8}"
_BIT_RUN = 56
"""The fewest binary digits in a row read as codes: eight characters of seven bits, seven of eight."""
_FOUR_CODES = "|".join(f"{code}(?:[^0-9]{{1,8}}{code}){{3}}" for code in (_CODE, _BIT_CODE))
_CODES_HINT = f"(?:{_FOUR_CODES}|[01]{{{_BIT_RUN}}})"
_MAY_HOLD_CODES = relaxed.re2_program(_CODES_HINT.encode("ascii"))


def _codes_run(number: str, glue: str) -> str:
    """Eight or more ``number``s with one separator between each two, the same all along (a pattern whose
    separator is the group ``glue``)."""
    return f"(?<![0-9]){number}(?P<{glue}>[^0-9]{{1,8}})(?:{number}(?P={glue})){{6,}}{number}(?![0-9])"


# Such runs: "103,104", "103, 104", "chr(103)+chr(104)", "CHAR(103)||CHAR(104)", one a line; "01100111
# 01101000", one octet a line; and binary digits in a row, cut in octets or in 7-bit groups.
_CODES = re.compile(
    f"{_codes_run('[0-9]{2,3}', 'glue')}|{_codes_run(_BIT_CODE, 'bit_glue')}"
    f"|(?<![0-9])(?P<bits>[01]{{{_BIT_RUN},}})(?![0-9])"
)
_NUMBER = re.compile("[0-9]+")
CODES = "codes"

# One character in quotes (JSON's, or escaped as a JSON string holding JSON writes them), four of them each
# two joined by a comma, as a list of characters is written (the hint of ``_character_views``). A key's
# characters are printable ASCII but quotes and backslash.
_CHARACTER = r"[!#-&(-\[\]-~]"
_LISTED_QUOTE = r"\\?[\"']"
_LIST_COMMA = r"[ \t]*,\s{0,16}"
_LISTED_CHARACTER = f"{_LISTED_QUOTE}{_CHARACTER}{_LISTED_QUOTE}"
_CHARACTERS_HINT = f"{_LISTED_CHARACTER}(?:{_LIST_COMMA}{_LISTED_CHARACTER}){{3}}"
_MAY_HOLD_CHARACTERS = relaxed.re2_program(_CHARACTERS_HINT.encode("ascii"))
# Eight or more such literals in the same quotes: ["g", "h", "p", "_", …], ['s', 'k', '-', …], one a line.
_CHARACTERS = re.compile(
    f"(?P<quote>{_LISTED_QUOTE}){_CHARACTER}(?P=quote)(?:{_LIST_COMMA}(?P=quote){_CHARACTER}(?P=quote)){{7,}}"
)
_LISTED = {
    quote: re.compile(f"{re.escape(quote)}({_CHARACTER}){re.escape(quote)}")
    for quote in ('"', "'", '\\"', "\\'")
}
CHARACTERS = "characters"

# Base85 of ASCII text: five characters stand for four bytes, and four bytes below 0x80 are a number below
# 2**31, whose first digit in base 85 is at most 41. So every fifth character of such an encoding is one
# of the first 42 of its alphabet: Ascii85's "!" to "J" (btoa, Adobe's <~ ~>, Python's a85encode), RFC
# 1924's digits, capitals and "a" to "f" (Python's b85encode, git's binary patches). Five such groups in a
# row are the hint (one RE2 pass finds where one may start); a text that holds no base85 of ASCII seldom
# holds it, where runs of the alphabets alone stand in most code and URLs.
_ASCII85_DIGITS = "!-u"
_BASE85_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase + "!#$%&()*+-;<=>?@^_`{|}~"
_BASE85_DIGITS = re.escape(_BASE85_ALPHABET)
_ASCII85_HINT = f"(?:[!-J][{_ASCII85_DIGITS}]{{4}}){{5}}"
_BASE85_HINT = f"(?:[0-9A-Za-f][{_BASE85_DIGITS}]{{4}}){{5}}"
# Such groups as long as they go on, and a last group of two to four characters (one to three bytes).
ASCII85 = "ascii85"
BASE85 = "base85"
_BASE85_KINDS = (
    (
        ASCII85,
        relaxed.re2_program(_ASCII85_HINT.encode("ascii")),
        re.compile(f"{_ASCII85_HINT}(?:[!-J][{_ASCII85_DIGITS}]{{4}})*(?:[!-J][{_ASCII85_DIGITS}]{{1,3}})?"),
        bytes(code - 0x21 if 0x21 <= code <= 0x75 else 0xFF for code in range(256)),
    ),
    (
        BASE85,
        relaxed.re2_program(_BASE85_HINT.encode("ascii")),
        re.compile(
            f"{_BASE85_HINT}(?:[0-9A-Za-f][{_BASE85_DIGITS}]{{4}})*(?:[0-9A-Za-f][{_BASE85_DIGITS}]{{1,3}})?"
        ),
        bytes(_BASE85_ALPHABET.find(chr(code)) % 0x100 for code in range(256)),
    ),
)
_BASE85_POWERS = np.array([85**4, 85**3, 85**2, 85, 1], dtype=np.uint64)
_NOT_BASE64 = re.compile("[^A-Za-z0-9+/=_-]")

FEATURE_REACH = 60
"""The longest of what ``may_unmask`` looks for (two lines of base64 wrapped short, indented, with their
line breaks)."""
# What a view starts at, in one search: an escape or entity, "0x", a run of base64 as long as the shortest
# segment, twelve hex pairs, a letter-spaced run's hint (gaps read as spaces there) and four characters
# each followed by one separator.
_VIEW_START = re.compile(
    f"{_PERCENT_ESCAPE}|{_CODE_ESCAPE}|{_ENTITY_ESCAPE}|0x"
    f"|[A-Za-z0-9+/_-]{{{_MIN_SEGMENT}}}|[0-9A-Fa-f]{{2}}(?:[: -][0-9A-Fa-f]{{2}}){{11}}"
    f"|[{_GAP_CHARS}]\\S(?:[{_GAP_CHARS}]{{1,3}}\\S){{3}}[{_GAP_CHARS}]|{_SEPARATED_HINT}|{_SHORT_WRAP_HINT}"
    f"|(?<![0-9]){_CODES_HINT}(?![0-9])|{_CHARACTERS_HINT}|{_ASCII85_HINT}|{_BASE85_HINT}"
)
# What can make a disguise feature of the characters it joins: invisible and wide characters alone, a
# character with a fold next to a plain letter or digit.
_DISGUISING = re.compile(
    f"[{_INVISIBLE}{_WIDE_CLASS}]|[{_FOLDABLE_CLASS}](?=[A-Za-z0-9])|(?<=[A-Za-z0-9])[{_FOLDABLE_CLASS}]"
)


def _ascii_class(pattern: str) -> str:
    """The ASCII characters ``pattern`` matches, as a character class RE2 reads."""
    return "".join(f"\\x{code:02x}" for code in range(128) if re.fullmatch(pattern, chr(code)))


# Whether ASCII text may hold a match of ``_VIEW_START``, in one pass of RE2 over its bytes: each of that
# regex's alternatives spelt for RE2 (the short-wrap hint by its first line break, the separated hint
# with any separators where it repeats one), so where this finds nothing that regex finds nothing either.
# That regex tries each alternative at every character; over prose this costs a fifth of it.
_GAP = _ascii_class(f"[{_GAP_CHARS}]")
_NOT_SPACE = _ascii_class(r"\S")
_SEPARATOR = _ascii_class(f"[{re.escape(_SEPARATOR_CHARS)}]")
_STARTS_BUT_LINES = (
    f"{_PERCENT_ESCAPE}|{_CODE_ESCAPE}|{_ENTITY_ESCAPE}|0x"
    f"|[A-Za-z0-9+/_-]{{{_MIN_SEGMENT}}}|[0-9A-Fa-f]{{2}}(?:[: -][0-9A-Fa-f]{{2}}){{11}}"
    f"|[{_GAP}][{_NOT_SPACE}](?:[{_GAP}]{{1,3}}[{_NOT_SPACE}]){{3}}[{_GAP}]"
    f"|[!-~][{_SEPARATOR}]{{1,3}}(?:[!-~][{_SEPARATOR}]{{1,3}}){{3}}|{_CODES_HINT}|{_CHARACTERS_HINT}"
    f"|{_ASCII85_HINT}|{_BASE85_HINT}"
)
"""Every alternative of the view starts for RE2 but the short-wrap hint (the code hint without the
lookarounds the view-start regex adds: as ``_code_views`` looks for it)."""


def _view_hint(short_wrap: str) -> Any:
    program = relaxed.re2_program(f"{_STARTS_BUT_LINES}|{short_wrap}".encode("ascii"))
    if not program.ok():  # a program RE2 refused would find nothing, and every text would pass unread
        raise RuntimeError(f"RE2 refuses a view hint: {program.error()}")
    return program


_MAY_START_VIEW = _view_hint("\\n")
# Whether a whole ASCII text may hold a view at all, in the same pass: with the short-wrap hint whole,
# from a line break or the text's start as ``_short_wrapped`` reads it, where a growing text's newest
# part may end in its first line break. Documents and code of several lines most often hold none.
_MAY_HOLD_VIEW = _view_hint(f"(?:\\A|\\n)[ \\t]{{0,8}}{_SHORT_LINE}\\r?\\n[ \\t]{{0,8}}{_SHORT_LINE}\\r?\\n")
VIEW_OVERHANG = 32
"""How far past the last thing it was found by a view reaches: the padding and short last line of wrapped
base64, the last pair or character of hex and letter-spaced runs."""


def may_unmask(text: str, since: int) -> bool:
    """Whether ``text[since:]``, the newest part of a growing text, brings what ``views`` starts a view
    at (an escape, entity, invisible, wide or look-alike character, a letter-spaced run's hint, a run of
    base64 or hex, hex pairs, ``0x`` bytes) or ends one begun before it. ``text`` holds at least
    ``FEATURE_REACH`` characters before ``since``, or all the text there is.

    False is exact: every view of the whole text then starts at something an earlier part brought, and
    reaches at most ``VIEW_OVERHANG`` characters past where that part ended. True may also be said of
    something that ended up to ``FEATURE_REACH`` characters before ``since``."""
    if since >= len(text):
        return False
    start = max(0, since - FEATURE_REACH + 1)
    if not text.isascii():
        if _DISGUISING.search(text, max(0, since - 1)) is not None:
            return True
    elif not relaxed.possible(_MAY_START_VIEW, text.encode("ascii"), start, len(text)):
        return False
    return _VIEW_START.search(text, start) is not None


def _features(text: str, hinted: str, spaced: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """Spans of every disguise feature (the letter-spaced runs ``spaced`` among them), in order.

    ``hinted`` is ``text`` with its gaps as spaces: when that is ASCII, the only other characters are
    gaps, and no gap is a look-alike, invisible or wide character.
    """
    spans: list[tuple[int, int]] = []
    for hint, pattern in (("%", _PERCENT), ("\\", _ESCAPE), ("&", _ENTITY)):
        if hint in text:
            spans.extend(found.span() for found in pattern.finditer(text))
    if not hinted.isascii():
        # Every feature found so is made of characters past ASCII: each run of them is searched alone,
        # with the ASCII character either side of it for the lookarounds.
        for run in _PAST_ASCII_RUN.finditer(text):
            spans.extend(found.span() for found in _NON_ASCII.finditer(text, run.start(), run.end() + 1))
    spans.extend((start, end) for start, end, _ in spaced)
    return sorted(spans)


def _gaps_as_spaces(text: str) -> str:
    """``text`` with every gap character (tab, no-break and typographic spaces) read as a space."""
    if text.isascii():
        return text.replace("\t", " ")
    codes = _codes(text)
    spaced = np.where(_gaps(codes), np.uint32(ord(" ")), codes)
    return spaced.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")


def _gaps(codes: npt.NDArray[np.uint32]) -> npt.NDArray[np.bool_]:
    """Whether each of ``codes`` is a gap character (``_GAP_CODES``)."""
    return _IS_GAP[np.minimum(codes, len(_IS_GAP) - 1)]


def _spaced_runs(text: str, encoded: bytes, hinted: str) -> list[tuple[int, int, int]]:
    """Letter-spaced runs of ``text``, looked for where ``hinted`` (its gaps as spaces) hints at one, as
    ``(start, end, 0)``; and runs of characters with a separator between each two (``_SEPARATED``), as
    ``(start, end, step)``: every ``step``-th character is the text. No two runs overlap."""
    runs: list[tuple[int, int, int]] = []
    position = 0
    probe = hinted.encode("ascii", "replace")
    while (hint := _next_hint(hinted, probe, position)) is not None:
        position = hint.end()
        # The hint starts at the space after a run's first character, or one or two spaces later.
        for start in range(max(0, hint.start() - 3), hint.start() + 2):
            if runs and start < runs[-1][1]:
                continue
            run = _SPACED.match(text, start)
            if run is not None:
                runs.append((run.start(), run.end(), 0))
                # Hints inside the run start nothing new; one just before its end may.
                position = max(position, run.end() - 1)
                break
    separated = [
        run for run in _separated_runs(text, encoded) if not any(_overlap(run, known) for known in runs)
    ]
    return sorted(runs + separated) if separated else runs


def _overlap(one: tuple[int, int, int], other: tuple[int, int, int]) -> bool:
    return one[0] < other[1] and other[0] < one[1]


def _separated_run(text: str, run: re.Match[str]) -> tuple[int, int, int]:
    """A match of ``_SEPARATED`` as ``(start, end, step)``: reaching back as far as its separator goes,
    and each of its ends a character of its own, not the end of a word next to it ("ok, A, K, I, A"
    starts at A)."""
    separator = run.group("separator")
    step = 1 + len(separator)
    start, end = run.span()
    # Only as far as an ASCII character: the view keeps every step-th character as ASCII.
    while (
        start >= step
        and text.startswith(separator, start - len(separator))
        and "!" <= text[start - step] <= "~"
    ):
        start -= step
    if start > 0 and text[start - 1].isalnum():
        start += step
    if end < len(text) and text[end].isalnum():
        end -= step
    return start, end, step


def _separated_runs(text: str, encoded: bytes) -> list[tuple[int, int, int]]:
    """Runs of eight or more characters with one separator between each two (``_SEPARATED``), a separator
    that is not white space alone (letter-spaced runs are read apart), as ``(start, end, step)``: looked
    for only around letters and digits that stand alone close together."""
    if len(text) < 15:
        return []
    alone = _standing_alone(encoded)
    if len(alone) < _ALONE_RUN + 1:
        return []
    # Where the next _ALONE_RUN stand close after one: the starts of clusters, merged where they touch.
    dense = (alone[_ALONE_RUN:] - alone[:-_ALONE_RUN] <= _ALONE_RUN * _ALONE_GAP).nonzero()[0]
    if not len(dense):
        return []
    breaks = (dense[1:] - dense[:-1] > 1).nonzero()[0]
    firsts = [int(dense[0]), *(dense[breaks + 1]).tolist()]
    lasts = [*(dense[breaks]).tolist(), int(dense[-1])]
    runs: list[tuple[int, int, int]] = []
    for first, last in zip(firsts, lasts, strict=True):
        low = max(0, int(alone[first]) - _ALONE_GAP)
        high = min(len(text), int(alone[last + _ALONE_RUN]) + _ALONE_GAP)
        for found in _SEPARATED.finditer(text, low, high):
            if not found.group("separator").strip(" \t"):
                continue
            run = _separated_run(text, found)
            if run[1] - run[0] >= 7 * run[2] + 1 and not any(_overlap(run, known) for known in runs):
                runs.append(run)
    return runs


def _standing_alone(encoded: bytes) -> npt.NDArray[np.intp]:
    """Where in ``encoded`` an ASCII letter or digit stands with no letter or digit either side. One
    translation of the bytes (which costs more than the array operations after it): a character stands
    alone where it reads 1 and both its neighbours (nothing, at the ends) read 0."""
    alnum = np.frombuffer(b"\0" + encoded.translate(_ALNUM_BYTES) + b"\0", dtype=np.uint8)
    alone: npt.NDArray[np.intp] = np.greater(alnum[1:-1], alnum[:-2] | alnum[2:]).nonzero()[0]
    return alone


def _next_hint(hinted: str, probe: bytes, position: int) -> re.Match[str] | None:
    """``_SPACED_HINT.search(hinted, position)``, tried only where ``_SPACED_SHAPE`` starts in ``probe``
    (``hinted`` with each character past ASCII a "?"): the leftmost shape starts no later than the
    leftmost hint, so the first start where the hint matches is the search's."""
    while (start := relaxed.first_start(_SPACED_SHAPE, probe, position)) >= 0:
        hint = _SPACED_HINT.match(hinted, start)
        if hint is not None:
            return hint
        position = start + 1
    return None


def _regions(text: str, features: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merged spans around the features, widened to whitespace."""
    regions: list[tuple[int, int]] = []
    for start, end in features:
        low, high = max(0, start - _REACH), min(len(text), end + _REACH)
        if regions and low <= regions[-1][1]:
            regions[-1] = (regions[-1][0], max(regions[-1][1], high))
        else:
            regions.append((low, high))
    return [(_snap_start(text, low), _snap_end(text, high)) for low, high in regions]


def _snap_start(text: str, low: int) -> int:
    if low == 0:
        return 0
    for index in range(low, max(0, low - _SNAP) - 1, -1):
        if text[index].isspace():
            return index + 1
    return low


def _snap_end(text: str, high: int) -> int:
    for index in range(high, min(len(text), high + _SNAP)):
        if text[index].isspace():
            return index
    return high


def _disguise_views(text: str, encoded: bytes, parent: View | None) -> list[View]:
    hinted = _gaps_as_spaces(text)
    spaced = _spaced_runs(text, encoded, hinted)
    features = _features(text, hinted, spaced)
    if not features:
        return []
    found = []
    for low, high in _regions(text, features):
        view = _undisguise(text, low, high, spaced, parent)
        if view.text != text[low:high]:
            found.append(view)
    return found


def _units(
    text: str, low: int, high: int, spaced: list[tuple[int, int, int]]
) -> Iterator[tuple[int, int, str | None, int]]:
    """``(start, end, kind, step)`` of each unit to rewrite in ``text[low:high]``, in order: escapes and
    invisible characters, and the letter-spaced or separated runs ``spaced`` that lie there (``step`` is
    a run's, 0 for the others)."""
    position = low
    inside = [run for run in spaced if low <= run[0] and run[1] <= high]
    for run_start, run_end, step in (*inside, (high, high, 0)):
        for start, end, kind in _escape_units(text, position, run_start):
            yield start, end, kind, 0
        if run_start < run_end:
            yield run_start, run_end, _SPACED_UNIT, step
        position = run_end


def _escape_units(text: str, low: int, high: int) -> list[tuple[int, int, str]]:
    """``(start, end, kind)`` of the escapes, entities and runs of invisible characters in
    ``text[low:high]``, in order. No unit holds a character another kind's unit starts with, so the
    searches for each kind alone find what one search for any of them would; invisible characters are
    looked for only in the runs of characters past ASCII."""
    units = [
        (found.start(), found.end(), kind)
        for lead, kind, pattern in _ESCAPE_UNITS
        if text.find(lead, low, high) >= 0
        for found in pattern.finditer(text, low, high)
    ]
    if not text.isascii():
        units += [
            (found.start(), found.end(), _INVISIBLE_UNIT)
            for run in _PAST_ASCII_RUN.finditer(text, low, high)
            for found in _INVISIBLE_RUN.finditer(text, run.start(), run.end())
        ]
    return sorted(units)


def _folded(text: str) -> str:
    """``text`` with look-alike, full-width and mathematical letters and digits plain (``_FOLD``). Only
    characters past ASCII have a fold, so only their runs are translated: ``str.translate`` looks the
    table up for every character of a text that holds one past ASCII."""
    if text.isascii():
        return text
    return _PAST_ASCII_RUN.sub(lambda run: run.group().translate(_FOLD), text)


def _undisguise(
    text: str, low: int, high: int, spaced: list[tuple[int, int, int]], parent: View | None
) -> View:
    parts: list[str] = []
    pieces: list[tuple[int, int, int, bool]] = []
    letters: dict[int, npt.NDArray[np.intp]] = {}
    length = 0

    def add(piece: str, start: int, end: int, literal: bool) -> None:
        nonlocal length
        if not piece and not literal:
            return
        pieces.append((length, start, end, literal))
        parts.append(piece)
        length += len(piece)

    position = low
    for start, end, kind, step in _units(text, low, high, spaced):
        if start > position:
            add(_folded(text[position:start]), position, start, True)
        raw = text[start:end]
        if kind == _SPACED_UNIT:
            # Each kept character maps to itself, so a match inside the run covers only its letters (all
            # ASCII: folding leaves them as they are). One piece, mapped through the letters' offsets:
            # a run may be a megabyte long.
            codes = _codes(raw)
            offsets = np.arange(0, len(raw), step) if step else np.flatnonzero(~_gaps(codes))
            letters[len(pieces)] = offsets + start
            add(codes[offsets].astype(np.uint8).tobytes().decode("ascii"), start, end, True)
        else:
            add(_decode_unit(kind, raw), start, end, False)
        position = end
    if position < high:
        add(_folded(text[position:high]), position, high, True)
    return View("".join(parts), DISGUISE, tuple(pieces), parent, letters)


def _class_bytes(text: str) -> bytes:
    """``text`` one byte a character, each past ASCII a NUL, for the searches that read the text by class
    of byte. No view is made of characters past ASCII: a NUL stands outside every alphabet a view's hint
    reads, where a "?" (base85's, a listed character) would have each of a run of them tried as a start."""
    if text.isascii():
        return text.encode("ascii")
    codes = _codes(text)
    return np.where(codes < 0x80, codes, 0).astype(np.uint8).tobytes()


def _codes(text: str) -> npt.NDArray[np.uint32]:
    """The code points of ``text`` (lone surrogates included)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _decode_unit(kind: str | None, raw: str) -> str:
    if kind == "percent":
        return bytes.fromhex(raw.replace("%", "")).decode("utf-8", "replace").translate(_FOLD)
    if kind == "escape":
        if raw[1] in _WHITESPACE_ESCAPES:
            return _WHITESPACE_ESCAPES[raw[1]]
        code = int(raw[1:], 8) if raw[1].isdigit() else int(raw[2:].strip("{}"), 16)
        if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
            return "\ufffd"  # half of a surrogate pair (or no character): nothing a token is made of
        return chr(code).translate(_FOLD)
    if kind == "entity":
        return html.unescape(raw).translate(_FOLD)
    return decode_tag_run(raw)  # invisible characters: only tag characters read as the ASCII they mirror


def _segment_views(text: str, encoded: bytes, parent: View | None) -> list[View]:
    found = []
    short = _short_wrapped(text)
    for start, end in _wrapped(text, list(_segment_runs(encoded))) + short:
        # The line breaks of wrapped base64 go, and the indentation of short lines (str.replace and
        # str.split: a regex would step through every character).
        if short and (start, end) in short:
            segment = "".join(text[start:end].split())
        else:
            segment = text[start:end].replace("\r\n", "\n").replace("\n", "")
        if len(segment) >= _MIN_HEX and _HEX_RUN.fullmatch(segment):
            decoded, kind = _decode_hex(segment), HEX
        else:
            decoded, kind = _decode_base64(segment), BASE64
            if decoded is None and _BASE32_RUN.fullmatch(segment):
                decoded, kind = _decode_base32(segment), BASE32
        if "/" not in segment or (decoded is not None and not decoded[1]):
            if decoded is not None:
                found.append(View(decoded[0], kind + decoded[1], ((0, start, end, False),), parent))
            continue
        # Base64's alphabet holds "/": a run that is not base64 text as a whole may be a path whose
        # segments are (``/v1/files/QUtJQ…``). Each segment that reads as text is a view of its own, so
        # a key in one is redacted with that segment alone; the run is read whole only where none is.
        pieces = _path_pieces(text, start, end)
        found.extend(View(*piece, parent) for piece in pieces)
        if decoded is not None and not pieces:
            found.append(View(decoded[0], kind + decoded[1], ((0, start, end, False),), parent))
    spans = _hex_pairs(text, encoded) + [match.span() for match in _PREFIXED_HEX.finditer(text)]
    for start, end in spans:
        decoded = _decode_hex(text[start:end])
        if decoded is not None:
            found.append(View(decoded[0], HEX + decoded[1], ((0, start, end, False),), parent))
    return found


def _path_pieces(text: str, start: int, end: int) -> list[tuple[str, str, tuple[tuple[int, int, int, bool]]]]:
    """The text, kind and piece of each "/"-parted part of ``text[start:end]`` that decodes to base64
    text (no binary, nothing inflated: a part of a path is read only as a segment standing alone would
    be). The base64 of a key's characters (letters, digits, "_-.") holds no "/": each 6 bits that would
    spell it need a byte ending in six 1 bits, "?" or DEL."""
    found = []
    position = start
    while position < end:
        cut = text.find("/", position, end)
        stop = end if cut < 0 else cut
        decoded = _decode_base64(text[position:stop]) if stop - position >= _MIN_SEGMENT else None
        if decoded is not None and not decoded[1]:
            found.append((decoded[0], BASE64, ((0, position, stop, False),)))
        position = stop + 1
    return found


def _is_segment_char(char: str) -> bool:
    return _SEGMENT_CLASSES[min(ord(char), 0xFF)] == ord("a")


def _short_wrapped(text: str) -> list[tuple[int, int]]:
    """Spans of base64 or hex wrapped at widths from 4 to 19 (``_SHORT_WRAP``), from the first line's
    first character to the last line's last. The first line may follow other text on its line ("key:
    QUJDREVG") and the last may have text after it: their runs of base64 join, if no wider."""
    if "\n" not in text:
        return []
    spans: list[tuple[int, int]] = []
    lined = "\n" + text  # so that a first line of the text starts after a line break too
    hint = _SHORT_WRAP.search(lined)
    while hint is not None:
        start = position = hint.start()
        width = lines = 0
        end = start
        while (line := _WRAPPED_LINE.match(text, position)) is not None and line.end() > position:
            length = len(line.group(1))
            if width and length > width:
                break
            end, position = line.end(1), line.end()
            width, lines = width or length, lines + 1
            if length < width:
                break  # the last line
        else:
            last = _LEADING_RUN.match(text, position)
            if last is not None and len(last.group(1)) <= width:
                end = last.end(1)
        if lines >= 2:
            line_start, start = start, _WRAPPED_LINE.match(text, start).start(1)  # type: ignore[union-attr]
            if line_start > 0:
                start = _run_before(text, line_start, width, start)
            if end - start >= _MIN_SEGMENT:
                spans.append((start, end))
        hint = _SHORT_WRAP.search(lined, max(end, hint.start() + 1))
    return spans


def _run_before(text: str, line: int, width: int, start: int) -> int:
    """Where wrapped base64 whose first full line starts at ``line`` (its characters at ``start``)
    begins: at the run of base64 that ends the line before, if that run is no wider than ``width`` and
    stands apart from what precedes it, else at ``start``."""
    end = line - 1 - (line >= 2 and text[line - 2] == "\r")
    run = end
    while run > 0 and end - run < width and _is_segment_char(text[run - 1]):
        run -= 1
    return run if run < end and (run == 0 or not _is_segment_char(text[run - 1])) else start


def _with_padding(text: str, end: int) -> int:
    run_end = end
    while end < len(text) and end - run_end < 3 and text[end] == "=":
        end += 1
    return end


def _wrapped(text: str, runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The runs with their padding, those of one base64 text wrapped over several lines joined into one
    span: lines of one width (a multiple of four, 40 or more) each ending in a line break, then a last
    line no wider."""
    spans: list[tuple[int, int]] = []
    index = 0
    while index < len(runs):
        start, end = runs[index]
        width = end - start
        last = index
        while (
            width >= _MIN_WRAP
            and width % 4 == 0
            and last + 1 < len(runs)
            and runs[last][1] - runs[last][0] == width
            and _LINE_BREAK.fullmatch(text, runs[last][1], runs[last + 1][0])
            and runs[last + 1][1] - runs[last + 1][0] <= width
        ):
            last += 1
        end = _with_padding(text, runs[last][1])
        if width >= _MIN_WRAP and width % 4 == 0 and runs[last][1] - runs[last][0] == width:
            # A last line shorter than a run of its own.
            tail = _LAST_LINE.match(text, runs[last][1])
            if tail is not None and len(tail.group(1)) <= width:
                end = tail.end()
        spans.append((start, end))
        index = last + 1
    return spans


def _hex_pairs(text: str, encoded: bytes) -> list[tuple[int, int]]:
    """Spans of twelve or more hex pairs with one separator between them."""
    classes = encoded.translate(_PAIRS_CLASSES)
    spans: list[tuple[int, int]] = []
    position = classes.find(_PAIRS_NEEDLE)
    while position >= 0:
        found = _PAIRS.match(text, position) if position == 0 or classes[position - 1] != ord("h") else None
        end = found.end() if found is not None else position + len(_PAIRS_NEEDLE)
        if found is not None:
            spans.append(found.span())
        position = classes.find(_PAIRS_NEEDLE, end)
    return spans


def _segment_runs(encoded: bytes) -> Iterator[tuple[int, int]]:
    """Spans of the runs of twenty or more base64 characters."""
    classes = encoded.translate(_SEGMENT_CLASSES)
    position = classes.find(_SEGMENT_NEEDLE)
    while position >= 0:
        start = classes.rfind(b" ", 0, position) + 1
        rest = _SEGMENT_REST.match(classes, position)
        end = rest.end() if rest is not None else position
        yield start, end
        position = classes.find(_SEGMENT_NEEDLE, end)


def _decode_base64(candidate: str) -> tuple[str, str] | None:
    """The text a base64 segment holds, and what was undone past base64 (``+gzip``, or nothing)."""
    # Runs of letters in one case are words or identifiers far more often than base64.
    if candidate.isalpha() and (candidate.islower() or candidate.isupper()):
        return None
    # Most runs are names and paths whose decoding no UTF-8 text starts with: the first two characters
    # tell (both alphabets give "-" and "_" the values of "+" and "/").
    stripped = candidate.rstrip("=")
    padded = stripped + "=" * (-len(stripped) % 4)
    # The URL-safe alphabet's "-" and "_" read as "+" and "/"; a segment may mix both alphabets.
    altchars = b"-_" if "-" in padded or "_" in padded else None
    try:
        if candidate.startswith(_COMPRESSED_BASE64):
            return _inflated(base64.b64decode(padded, altchars, validate=True))
        probe = padded[:_PROBE]
        binary = starts_binary(ord(candidate[0]), ord(candidate[1])) or (
            len(padded) > _PROBE and not _starts_as_text(base64.b64decode(probe, altchars, validate=True))
        )
        if binary and len(padded) < _MIN_BINARY_BASE64:
            return None
        raw = base64.b64decode(padded, altchars, validate=True)
    except (binascii.Error, ValueError):
        return None
    return _runs_of(raw) if binary else _text_or_runs(raw)


def _decode_hex(candidate: str) -> tuple[str, str] | None:
    """The text a hex segment holds, and what was undone past hex (``+gzip``, or nothing)."""
    digits = _HEX_NOISE.sub("", candidate)
    digits = digits[: len(digits) // 2 * 2]
    try:
        binary = False
        if len(digits) > _PROBE:
            probe = bytes.fromhex(digits[:_PROBE])
            binary = not _starts_as_text(probe) and _compression(probe) is None
        raw = bytes.fromhex(digits)
    except ValueError:
        return None
    return _runs_of(raw) if binary else _text_or_runs(raw)


def _text_of(raw: bytes) -> tuple[str, str] | None:
    """``raw`` as text (``_as_text``), or what it holds when it is compressed."""
    text = _as_text(raw)
    return (text, "") if text is not None else _inflated(raw)


def _text_or_runs(raw: bytes) -> tuple[str, str] | None:
    """``raw`` as text or what it holds compressed (``_text_of``), else as binary (``_runs_of``)."""
    return _text_of(raw) or _runs_of(raw)


def _runs_of(raw: bytes) -> tuple[str, str] | None:
    """What binary ``raw`` (a file's header, then a key; a PNG whose text chunk holds one) reads as where
    it holds enough printable bytes for a key: its printable runs and its tokens split by junk bytes read
    joined, as a binary body is read (``printable_runs``, ``bridged_runs``), and ``+binary``. A digest or
    short random bytes hold too few printable bytes, and are not searched for runs."""
    if len(raw) < _MIN_BINARY_BYTES or len(raw) - len(raw.translate(None, _PRINTABLE_BYTES)) < _MIN_KEY:
        return None
    runs = [*printable_runs(raw), *bridged_runs(raw)]
    # Bytes of binary that read as characters (a checksum, a length) glue to a key's ends and hide it
    # from a rule that wants it standing alone: each run's outer tokens are read again with up to
    # ``_GLUED`` characters cut off.
    cut = [
        piece
        for run in runs
        for first, last in [(run.split(maxsplit=1)[0], run.rsplit(maxsplit=1)[-1])]
        for count in range(1, _GLUED + 1)
        for piece in (first[count:], last[:-count])
        if len(piece) >= _MIN_KEY
    ]
    return ("\n".join([*runs, *cut]), f"+{BINARY}") if runs else None


def _inflated(raw: bytes) -> tuple[str, str] | None:
    """The text compressed ``raw`` holds, and ``+`` the compression's name: decompressed to at most
    ``_INFLATION`` times its size and ``MAX_INFLATED`` bytes; what lies past that is left unread."""
    limit = min(MAX_INFLATED, _INFLATION * len(raw))
    name = _compression(raw)
    try:
        if name in ("gzip", "zlib"):
            inflated = zlib.decompressobj(wbits=47).decompress(raw, limit)
        elif name == "bzip2":
            inflated = bz2.BZ2Decompressor().decompress(raw, limit)
        elif name == "xz":
            inflated = lzma.LZMADecompressor().decompress(raw, limit)
        else:
            return None
    except (zlib.error, OSError, EOFError, lzma.LZMAError):
        return None
    text = _as_text(inflated) if inflated else None
    return (text, f"+{name}") if text is not None else None


def _starts_as_text(raw: bytes) -> bool:
    """Whether ``raw`` can begin a UTF-8 text: a segment of binary (an image, a digest) fails here
    after a few bytes, without decoding the rest of it."""
    try:
        codecs.utf_8_decode(raw, "strict", False)
    except UnicodeDecodeError:
        return False
    return True


def _as_text(raw: bytes) -> str | None:
    """The decoding, if it reads as text: valid UTF-8 and nearly all printable."""
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if decoded.isprintable():
        return decoded
    unreadable = len(_UNREADABLE.findall(decoded))
    return decoded if unreadable <= (1 - _PRINTABLE_SHARE) * len(decoded) else None


# -- turned tokens: a key written backwards or with its letters rotated ------------------------------------

REVERSED = "reversed"
ROT13 = "rot13"
REVERSED_ROT13 = "reversed+rot13"
ROT47 = "rot47"


def _translation(table: dict[int, int]) -> Callable[[str], str]:
    return lambda text: text.translate(table)


def _shifted(letters: int, digits: int) -> str:
    """The kind of view of a token with its letters moved ``letters`` places along the alphabet (and its
    digits ``digits`` places along theirs): ``caesar3``, ``caesar3-digits``."""
    return f"caesar{letters}" + ("-digits" if digits else "")


_SHIFTS = {(letters, digits) for letters in range(1, 26) if letters != 13 for digits in {0, letters % 10}}
"""Each Caesar shift but ROT13 (a turning of its own), its digits left as they are or moved as far along
theirs."""
_TURNS: dict[str, tuple[Callable[[str], str], Callable[[str], str]]] = {
    REVERSED: (lambda text: text[::-1],) * 2,
    ROT13: (_translation(ROT13_TABLE),) * 2,
    REVERSED_ROT13: (lambda text: text[::-1].translate(ROT13_TABLE),) * 2,
    ROT47: (_translation(ROT47_TABLE),) * 2,
    **{
        _shifted(letters, digits): (
            _translation(caesar_table(letters, digits)),
            _translation(caesar_table(-letters, -digits)),
        )
        for letters, digits in sorted(_SHIFTS)
    },
}
"""Ways a model rewrites a token, each as how a key is turned and how the view of a turned token turns
it back."""
TURNINGS: dict[str, Callable[[str], str]] = {kind: undo for kind, (_, undo) in _TURNS.items()}
"""How the view of each kind of turned token reads it: turned back."""
_BACKWARDS = frozenset({REVERSED, REVERSED_ROT13})
"""The turnings that write a key backwards, its prefix last."""
SHIFTED = frozenset({ROT47, *(_shifted(letters, digits) for letters, digits in _SHIFTS)})
"""The turnings whose turned prefixes are syllables of words and names too (" low-level" is "xai-"
moved 14 letters on, " hit_count" "ghs_" moved one): a token holding one is read turned back only where
what follows the prefix reads as a key's rest (``_key_may_follow``)."""
_KEY_REST = re.compile("[A-Za-z0-9_+/=.-]{12,40}")
_KEY_MARK = re.compile("[0-9A-Z]")
_KEY_PROBE = 40
_TURN_REACH = 1024
"""How far a turned keyword's token is read the way its key runs: farther than any key."""
_TURN_EDGE = 16
"""How far it is read the other way: enough for what a rule looks behind a key for."""


def turned_keywords(spelt: Iterable[str], unspelt: Iterable[str] = ()) -> dict[str, tuple[str, ...]]:
    """Each turning of the keywords that is no keyword itself, with the turnings that give it: a token
    holding one may be a key turned, and is read turned back (``turned_views``). The keywords are
    ``spelt`` as keys write them, or ``unspelt`` (their capitals unknown), which are not turned in ROT47:
    it turns a capital and its small letter apart."""
    spelt, unspelt = set(spelt), set(unspelt)
    plain = spelt | unspelt
    turned: dict[str, list[str]] = {}
    for keyword in sorted(plain):
        for kind, (turn, _) in _TURNS.items():
            word = turn(keyword)
            if word in plain or (kind == ROT47 and keyword not in spelt):
                continue
            kinds = turned.setdefault(word, [])
            if kind not in kinds:
                kinds.append(kind)
    return {word: tuple(kinds) for word, kinds in turned.items()}


def turned_views(
    text: str, hits: Iterable[tuple[int, int, tuple[str, ...]]], parent: View | None
) -> Iterator[View]:
    """Views of the tokens of ``text`` that hold a turned keyword (``hits``: its span and the turnings
    that give it) where a key starts, each turned back: the token reversed maps every character to
    where it stands, so a match covers only what carried it. The hits of one turning whose stretches of
    a token overlap share one view, and each stretch of the text is searched for whitespace once, so the
    work and the views' length grow with the text, not with the hits in it; views are made as they are
    read. What stands before a prefix turned forwards is read as written: turned, a name or "=" before a
    key (ROT47 turns it into letters) would no longer be what its rule looks behind the key for."""
    spaces = _Spaces(text)
    pending: dict[str, tuple[int, int, int]] = {}
    for start, end, kinds in sorted(hits):
        for kind in kinds:
            backwards = kind in _BACKWARDS
            # A key starts where no letter, digit or "_" stands before it (what its rule looks behind
            # for): reversed, after its turned prefix. Elsewhere (inside base64, a hash, a word) a turned
            # prefix starts nothing.
            edge = text[end : end + 1] if backwards else text[start - 1 : start]
            if edge and (edge.isalnum() or edge == "_"):
                continue
            if kind in SHIFTED and not _key_may_follow(TURNINGS[kind](text[end : end + _KEY_PROBE])):
                continue
            # The token is read ``_TURN_REACH`` characters the way its key runs (back from a reversed
            # prefix) and a few the other way.
            before, after = (_TURN_REACH, _TURN_EDGE) if backwards else (_TURN_EDGE, _TURN_REACH)
            low = max(start - before, spaces.token_start(start))
            high = min(end + after, spaces.token_end(end))
            held = pending.get(kind)
            if held is not None and low <= held[2]:
                pending[kind] = (held[0], held[1], max(held[2], high))
                continue
            if held is not None:
                yield _turned_view(text, *held, kind, parent)
            pending[kind] = (low, low if backwards else start, high)
    for kind, (low, turned, high) in pending.items():
        yield _turned_view(text, low, turned, high, kind, parent)


def _key_may_follow(rest: str) -> bool:
    """Whether ``rest``, what follows a shifted prefix turned back, starts as a key's rest does: a dozen
    characters or more of what keys are made of, a digit or a capital among them (a key of random
    characters holds both, an identifier or a word of small letters neither)."""
    run = _KEY_REST.match(rest)
    return run is not None and _KEY_MARK.search(run.group()) is not None


def _turned_view(text: str, low: int, turned: int, high: int, kind: str, parent: View | None) -> View:
    """The view of ``text[low:high]`` turned back from ``turned`` on, as written before it."""
    pieces = ((0, low, turned, True),) if turned > low else ()
    return View(
        text[low:turned] + TURNINGS[kind](text[turned:high]),
        kind,
        (*pieces, (turned - low, turned, high, True)),
        parent,
        backwards=kind in _BACKWARDS,
    )


class _Spaces:
    """Where the token around each of a rising run of positions of a text starts and ends; the text
    between two positions is searched once, however long the token and however many positions."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._read = 0
        """How far back from a position whitespace has been looked for."""
        self._start = 0
        """Where the token at ``_read`` starts: after the last whitespace before it."""
        self._end = -1
        """The first whitespace at or after the last position asked about (or the text's end)."""

    def token_start(self, position: int) -> int:
        if position > self._read:
            # Anchored, ``.*`` runs to the position and gives back to its last whitespace once.
            space = _LAST_WHITESPACE.match(self._text, self._read, position)
            if space is not None:
                self._start = space.end()
            self._read = position
        return self._start

    def token_end(self, position: int) -> int:
        # Positions rise, and a keyword holds no whitespace: no whitespace lies between one asked
        # about and the end found for an earlier one past it.
        if self._end < position:
            space = _WHITESPACE.search(self._text, position)
            self._end = len(self._text) if space is None else space.start()
        return self._end


_WHITESPACE = re.compile(r"\s")
_LAST_WHITESPACE = re.compile(r"(?s:.*)\s")


# -- joined literals: a key cut into string literals that code or JSON joins ----------------------------

JOINED = "joined"
GROUPED = "grouped"
UPPERCASED = "uppercased"
LOWERCASED = "lowercased"
CASED = {UPPERCASED: str.upper, LOWERCASED: str.lower}
"""Ways a key of a format with letters of one case is written in the other (or mixed group by group):
the format tells the case back, so the key still leaves."""
REGROUPED = frozenset({GROUPED, *CASED})
"""The kinds of view of a key's prefix and the groups after it (``grouped_views``)."""
KEYED = frozenset({*TURNINGS, JOINED, *REGROUPED})
"""The kinds of view started at a rule's keyword (``keyed_views``)."""
_PIECE_CHARS = "A-Za-z0-9_+/=.~-"
# Backticks are left out: Markdown and reStructuredText quote code with them, ``like this``.
_QUOTE = "[\"']"
_JOINER = r"(?:[ \t]*(?:\+|\.\.?|\|\||&|,)\s{0,8}|\s{1,8})"
_NAME = rf"{_QUOTE}[{_PIECE_CHARS}]{{1,64}}{_QUOTE}[ \t]*:[ \t]*"
# What stands between two string literals that are joined: a closing quote, an operator of one of the
# languages that join strings (+ . .. || &), a comma (a list joined, JSON values), or nothing but white
# space (Python's and C's adjacent literals), the next value's name where JSON or a dict names it, and
# the next literal's opening quote.
_GLUE = re.compile(rf"(?<=[{_PIECE_CHARS}]){_QUOTE}{_JOINER}(?:{_NAME})?{_QUOTE}(?=[{_PIECE_CHARS}])")
# After a match (a value next to its name: secret = "uuj" + "Ct…") only an operator or white space joins:
# values of a list or of other names are other values ({"key": "id", "secret": "x"}).
_OPERATOR_GLUE = re.compile(
    rf"(?<=[{_PIECE_CHARS}]){_QUOTE}{_JOINER.replace('|,', '')}{_QUOTE}(?=[{_PIECE_CHARS}])"
)
_PIECE = re.compile(f"[{_PIECE_CHARS}]{{1,512}}")
# From a key's prefix or a match's end to the end of the literal it stands in: the rest of the literal,
# or a closing quote, an assignment and the literal assigned ("ghp_": "ab…, ghp_ = ('ab…). Possessive
# throughout: a prefix inside a long word or path fails once, without backtracking; and bounded, as a
# literal is: a text of nothing but prefixes ("AKIAAKIA…") would read to its end from each.
_NAME_CHARS = _PIECE_CHARS.replace("=", "")
_ASSIGNED = (
    rf"[{_NAME_CHARS}]{{0,512}}+{_QUOTE}?[ \t]*+(?:=>|:=|=|:)[ \t]*+(?P<opener>[(\[]\s{{0,8}}+)?{_QUOTE}"
)
_LEAD = rf"(?:{_ASSIGNED})?+[{_PIECE_CHARS}]{{0,512}}+"
# A start's lead and the first glue, in one match: most starts fail it within a few characters.
_JOINED_START = {glue: re.compile(f"{_LEAD}(?P<glue>{glue.pattern})") for glue in (_GLUE, _OPERATOR_GLUE)}
_LINE_REACH = 256
"""How far back from a key's start its view's line is read, at the most."""
_MAX_PIECES = 128
OPEN_JOINED = (
    rf"{_QUOTE}[{_PIECE_CHARS}]{{1,512}}{_QUOTE}"
    rf"(?:{_JOINER}(?:{_NAME})?{_QUOTE}[{_PIECE_CHARS}]{{1,512}}{_QUOTE})*"
    rf"{_JOINER}(?:{_QUOTE}[{_PIECE_CHARS}]{{0,512}}"
    rf"(?:{_QUOTE}[ \t]*:?[ \t]*(?:{_QUOTE}[{_PIECE_CHARS}]{{0,512}})?)?)?"
)
"""String literals of what keys are made of joined so far, and what may begin the next: the end of a text
that may still grow into a ``joined_views`` view (a pattern)."""


def keyed_views(
    text: str,
    turned: Iterable[tuple[int, int, tuple[str, ...]]],
    prefixes: Iterable[tuple[int, int]],
    matches: Iterable[tuple[int, int]],
    parent: View | None,
    split: SplitPrefixes | None = None,
    longest: Callable[[str], int] | None = None,
) -> Iterator[View]:
    """The views started at a key: a turned key prefix's token turned back (``turned_views``), the
    string literals after a key's prefix or a match joined (``joined_views``), the groups after a
    key's prefix joined or the key in the other case (``grouped_views``, no longer than ``longest``), and a
    key whose prefix a cut parts read without it (``split_views``, of ``split``'s prefixes)."""
    # Most texts hold no key's prefix, turned or not, and no match: only the cut prefixes are looked for.
    turned = list(turned)
    if turned:
        yield from turned_views(text, turned, parent)
    if split is not None and (parent is None or parent.kind != SPLIT):
        yield from split_views(text, split, parent)
    prefixes = list(prefixes)
    if prefixes:
        yield from grouped_views(text, prefixes, parent, longest)
    matches = list(matches)
    if prefixes or matches:
        starts = sorted(
            [*((start, end, True) for start, end in prefixes), *((s, e, False) for s, e in matches)]
        )
        yield from joined_views(text, starts, parent)


def joined_views(text: str, starts: Iterable[tuple[int, int, bool]], parent: View | None) -> list[View]:
    """Views of the line of each key's start (``starts``: a key's prefix, or a match of a rule, and
    which of the two) that string literals after it are joined on, with what joins them (``_GLUE``)
    left out: ``"ghp_R7m" + "Qx…"``, ``'ghp_' 'R7m…'``, ``["ghp_", "R7m…"]``, ``{"a": "ghp_R7m", "b":
    "Qx…"}``; after a match only an operator or white space joins (``secret = "uuj" + "Ct…"``). The
    rest maps character by character, so a match covers the literals that carried it and what joins
    them."""
    found: list[View] = []
    after = 0
    for start, end, starts_key in starts:
        if end <= after:
            continue
        glues = _GLUE if starts_key else _OPERATOR_GLUE
        lead = _JOINED_START[glues].match(text, end)
        if lead is None:
            continue
        low = text.rfind("\n", max(0, start - _LINE_REACH), start) + 1 or max(0, start - _LINE_REACH)
        # What is left out: a bracket opened before the first literal, and what joins each two.
        cuts = [lead.span("opener")] if lead.group("opener") else []
        cut: tuple[int, int] | None = lead.span("glue")
        close = end
        while cut is not None and len(cuts) <= _MAX_PIECES:
            cuts.append(cut)
            piece = _PIECE.match(text, cut[1])  # the glue is followed by one
            close = piece.end() if piece is not None else cut[1]
            glue = glues.match(text, close)
            cut = glue.span() if glue is not None else None
        close = min(len(text), close + 1)  # the last literal's closing quote
        view_pieces, parts, length = [], [], 0
        position = low
        for cut_start, cut_end in [*cuts, (close, close)]:
            view_pieces.append((length, position, cut_start, True))
            parts.append(text[position:cut_start])
            length += cut_start - position
            position = cut_end
        after = close
        found.append(View("".join(parts), JOINED, tuple(view_pieces), parent))
    return found


# -- assembled names: a key whose pieces are assigned to names, then used together ------------------------

ASSEMBLED = "assembled"
# A name assigned a literal of what keys are made of, in the languages' and shells' ways: ``A=gh``,
# ``export B="p_R7m…"``, ``const b = 'p_…'``, ``$b = "…"``, ``b := "…"``. Looked for from its "=" (a
# search led by a literal skips ahead in C), the name read back from there; a comparison (``==``, ``<=``,
# ``=>``) assigns nothing.
_IDENTIFIER = r"[A-Za-z_]\w{0,63}"
_ASSIGNMENT = re.compile(
    rf"=(?![=>~])[ \t]*(?P<quote>[\"'`]?)(?P<value>[{_PIECE_CHARS}]{{1,512}}+)(?P=quote)"
    rf"(?![{_PIECE_CHARS}])"
)
# A name read back from where it ends, on the reversed text before it (a search for a name that ends at a
# place tries every character before it): after white space and a ":" where it is assigned (``b := …``),
# PHP's and Perl's "$" before it, no letter, digit or "." (an attribute, ``self.a``) before that.
_ASSIGNED_NAME_BACK = re.compile(r"[ \t]*:?[ \t]*(?P<name>\w{1,64})\$?(?![\w$.])")
_NAME_BACK = re.compile(r"(?P<name>\w{1,64})\$?(?![\w$.])")
_NAME_REACH = 72
"""How far back a name is read: the longest name, a "$" and white space."""
# Where names are used in a template: ``$A``, ``${A}`` (shells, JavaScript's template literals, Perl,
# PHP), ``{a}`` (Python's f-strings and str.format), each led by a character a search skips to in C.
_REFERENCE = re.compile(
    rf"\$\{{(?P<braced>{_IDENTIFIER})\}}|\$(?P<bare>{_IDENTIFIER})|\{{(?P<field>{_IDENTIFIER})\}}"
)
# What joins two names in an expression: an operator of a language that joins strings, or a comma (the
# arguments of ``"{}{}".format(a, b)``, ``"%s%s" % (a, b)``, ``"".join([a, b])``).
# A "." alone joins with white space around it (PHP's ``$a . $b``): glued, it reads an attribute or a host
# name (``self.a``, ``x.io``).
_NAME_GLUE = re.compile(r"(?<=\w)(?:[ \t]*(?:\+|\.\.|,|&|\|\|)[ \t]*|[ \t]+\.[ \t]+)(?=\$?[A-Za-z_])")
# A name in an expression, PHP's and Perl's with their "$".
_NAME_AFTER = re.compile(rf"\$?(?P<name>{_IDENTIFIER})(?![\w(])")
_JOINED_NAMES = re.compile(rf"(?<![\w$.])\$?{_IDENTIFIER}{_NAME_GLUE.pattern}")
"""Two names an operator or a comma joins: where a text may use names together (``_joined_places``)."""
_TEMPLATE_TEXT = re.compile(f"[{_PIECE_CHARS}]{{0,512}}+")


def assembled_views(text: str, parent: View | None) -> list[View]:
    """One view of the places where names assigned literals earlier in ``text`` are used together, each
    name read as its literal: in a template with what stands between them (``"$A$B"``, ``"${A}p_${B}"``,
    `` `${a}${b}` ``, ``f"{a}{b}"``), or joined in an expression (``a + b``, ``"{}{}".format(a, b)``,
    ``"%s%s" % (a, b)``, ``"".join([a, b])``). A name's literal maps character by character to where it
    is assigned, so a key found is redacted where its pieces stand; each place is read once, after a line
    break that maps to the character after it, so two places never read as one."""
    if text.count("=") < 2 or (_REFERENCE.search(text) is None and _JOINED_NAMES.search(text) is None):
        return []  # no place uses two names: the assignments (a URL's query, a config) are not read
    values: dict[str, tuple[int, int]] = {}
    for assignment in _ASSIGNMENT.finditer(text):
        if text[assignment.start() - 1 : assignment.start()] in ("=", "!", "<", ">"):
            continue
        name = _name_before(_ASSIGNED_NAME_BACK, text, assignment.start())
        if name is not None:
            values[name] = assignment.span("value")
    if len(values) < 2:
        return []
    places = sorted([*_template_places(text, values), *_joined_places(text, values)])
    pieces: list[tuple[int, int, int, bool]] = []
    parts: list[str] = []
    length = 0
    after = -1
    for place in places:
        if place[0][0] < after:
            continue  # a template's names also read as joined ones
        for _, low, high in place:
            pieces.append((length, low, high, True))
            parts.append(text[low:high])
            length += high - low
        after = place[-1][0] + 1
        end = min(len(text) - 1, place[-1][0])
        pieces.append((length, end, end + 1, False))
        parts.append("\n")
        length += 1
    return [View("".join(parts), ASSEMBLED, tuple(pieces), parent, scattered=True)] if pieces else []


Place = list[tuple[int, int, int]]
"""What a place reads, in order: where it stands in the text (to order and part places), and the span
each part is read from (a name's literal where it is assigned, or the text between names)."""


def _name_before(back: re.Pattern[str], text: str, at: int) -> str | None:
    """The name ``back`` reads on the text before ``at`` reversed, if it is one (no digit first)."""
    read = back.match(text[max(0, at - _NAME_REACH) : at][::-1])
    name = read.group("name")[::-1] if read is not None else ""
    return name if name and not name[0].isdigit() else None


def _template_places(text: str, values: dict[str, tuple[int, int]]) -> Iterator[Place]:
    """The runs of template references (``_REFERENCE``) with what keys are made of between them, two or
    more parts of which one names an assigned literal."""
    position = 0
    while (reference := _REFERENCE.search(text, position)) is not None:
        start = reference.start()
        lead = start
        while lead > max(0, start - 512) and _PIECE.fullmatch(text, lead - 1, lead):
            lead -= 1
        place: Place = [(lead, lead, start)] if lead < start else []
        named = False
        while reference is not None:
            name = reference.group("braced") or reference.group("bare") or reference.group("field")
            span = values.get(name)
            named = named or span is not None
            place.append((reference.start(), *(span or reference.span())))
            between = _TEMPLATE_TEXT.match(text, reference.end())
            end = between.end() if between is not None else reference.end()
            if end > reference.end():
                place.append((reference.end(), reference.end(), end))
            reference = _REFERENCE.match(text, end)
            position = end
        if named and len(place) > 1:
            yield place
        position = max(position, start + 1)


def _joined_places(text: str, values: dict[str, tuple[int, int]]) -> Iterator[Place]:
    """The runs of two or more assigned names joined by an operator or a comma (``_NAME_GLUE``)."""
    place: Place = []
    for glue in _NAME_GLUE.finditer(text):
        if place and place[-1][0] == glue.start():
            right = _NAME_AFTER.match(text, glue.end())
            span = values.get(right.group("name")) if right is not None else None
            if right is not None and span is not None:
                place.append((right.end(), *span))
                continue
        if len(place) > 1:
            yield place
        place = []
        # Most glues are commas and full stops of prose: the name after is asked first, by one match.
        right = _NAME_AFTER.match(text, glue.end())
        if right is None or right.group("name") not in values:
            continue
        left = _name_before(_NAME_BACK, text, glue.start())
        if left is None or left not in values:
            continue
        place = [(glue.start(), *values[left]), (right.end(), *values[right.group("name")])]
    if len(place) > 1:
        yield place


# -- split prefixes: a key cut inside its own prefix ----------------------------------------------------

SPLIT = "split"
PIECED = frozenset({SPLIT, JOINED, ASSEMBLED, *REGROUPED, *TURNINGS})
"""Kinds of view that put a key together from pieces, or turn it: their joins glue what stood apart, so
the rules read them as written, with the word boundaries a glued key's reading drops (``Rule.written``)."""
# What may cut a key's prefix as people, models and code write it: a run of marks keys' groups and words are
# parted with (white space around them); a run of white space of any kind (no-break, typographic and
# ideographic spaces, zero-width and other invisible characters, line breaks), however long: a reader
# reads across any white space, and a bound would be one more space to exceed; or the end of a string
# literal joined to the next, in each language's way: an operator, white space or nothing between the
# quotes (``"sk-pr" + "oj-…"``, ``'gh' 'p_…'``, ``"gh""p_…"``, ``("gh")+("p_…")``, ``["AK", "IA…"]``), an
# expression of an f-string or template literal ending or starting (``f"{'gh'}p_…"``, ``f"gh{'p_'}…"``,
# `` `${"gh"}p_…` ``), or a quote alone, as a shell joins ``'gh'p_…``. Tag characters are no cut: a view
# reads them as the ASCII they mirror.
_CUT_SPACE = f"[{_GAP_CHARS}{_INVISIBLE.replace(chr(0xE0000) + '-' + chr(0xE007F), '')}]"
_CUT_QUOTE = "[\"'`]"
_CUT_WHITE = f"[{_CUT_SPACE[1:-1]}\r\n]"
_PREFIX_CUT = (
    rf"(?:{_CUT_SPACE}*+[-_.:/|,;\\~*]{{1,3}}{_CUT_SPACE}*+|{_CUT_WHITE}++"
    rf"|{_CUT_QUOTE}\)?\}}?{_JOINER}?\(?(?:\$?\{{)?{_CUT_QUOTE}|{_CUT_QUOTE}\}}(?:\$?\{{{_CUT_QUOTE})?"
    rf"|\$?\{{{_CUT_QUOTE}|{_CUT_QUOTE})"
)
_CUT_CHARACTERS = "".join(f"\\x{ord(char):02x}" for char in " \t\r\n\"'`+.|&,:;/_\\~*(){}$-")
"""Every ASCII character a cut holds, as the inside of a class RE2 reads (what a cut holds past ASCII is
a space to it: ``_hint_bytes``)."""
_SPLIT_REACH = 2048
"""How far past a cut prefix its key is read: longer than any token format, joined literals included."""
LONGEST_SPLIT = 512
"""The longest a cut prefix is read over, from its first letter to its last, white space left out: a
stream holds so much."""
_CUT_SPACES = np.zeros(0x10000, dtype=bool)
for _low, _high in re.findall("(.)(?:-(.))?", _CUT_SPACE[1:-1]):
    if ord(_low) < len(_CUT_SPACES):
        _CUT_SPACES[ord(_low) : ord(_high or _low) + 1] = True
"""Whether each code of the first plane is white space or invisible, as a cut holds them."""
_WHITE_LEFT_OUT = dict.fromkeys([*np.flatnonzero(_CUT_SPACES).tolist(), ord("\r"), ord("\n")])
"""White space a cut holds, to be left out of a text by ``str.translate``."""


def _hint_bytes(text: str) -> bytes:
    """``text`` one byte a character, as the cut prefixes' RE2 program reads it: white space and invisible
    characters past ASCII a space, every other character past ASCII a "?"."""
    if text.isascii():
        return text.encode("ascii")
    codes = _codes(text)
    spaced = _CUT_SPACES[np.minimum(codes, len(_CUT_SPACES) - 1)] & (codes < len(_CUT_SPACES))
    return np.where(spaced, 0x20, np.where(codes < 0x80, codes, 0x3F)).astype(np.uint8).tobytes()


Trie = dict[str, "Trie"]
"""Prefixes by character; the empty string marks a prefix's end."""


@dataclass(frozen=True)
class SplitPrefixes:
    """The key prefixes of a scanner's rules, each cut anywhere inside by ``_PREFIX_CUT``s: an RE2
    program that finds where one may start, the prefixes by character to read it from there, and the case
    each prefix's letters are written in by the rules it leads (where they agree)."""

    program: Any
    trie: Trie
    spellings: dict[str, str] = field(default_factory=dict)
    _first_letters: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _prose_program: Any = field(init=False, repr=False, compare=False)
    """For ``may_open_in``: an RE2 program over the letters of prose with a mark before each word
    (``_marked_words``) that finds where the letters from a word's start to the text's end are a start of
    a prefix's letters (``_prefix_letters``), or begin with all of them."""

    def __post_init__(self) -> None:
        # Where a prefix may start: its first letter (either case; a digit stands for any) at a word's start.
        letters = "".join("0-9" if char == "0" else re.escape(char) for char in sorted(self.trie))
        object.__setattr__(self, "_first_letters", re.compile(f"(?i)(?<![A-Za-z0-9])[{letters}]"))
        words = list(_words_of(self.trie))
        read = [_prefix_letters(word) for word in words]
        starts = {letters[:end] for letters, _ in read for end in range(1, len(letters) + 1)}
        whole = {letters for letters, digitless in read if digitless and letters}
        opening = f"{_from_a_word(whole)}|{_from_a_word(starts)}\\z"
        object.__setattr__(self, "_prose_program", relaxed.re2_program(opening.encode()))

    def may_open_in(self, text: str) -> bool:
        """Whether ``open_key`` may find a cut prefix in ``text``, of ASCII letters, spaces, commas and full
        stops alone: False is exact.
        A cut holds no letter and a prefix's digit only a digit, so the letters from a word's start to the
        text's end (words joined) are read over a prefix from there only as a start of its letters (the
        text ends inside it), or begin with all of them (a prefix without digits, whose key goes on)."""
        marked = _marked_words(text)
        return relaxed.possible(self._prose_program, marked, 0, len(marked))

    @classmethod
    def of(cls, spellings: dict[str, str | None]) -> SplitPrefixes | None:
        """From prefixes as keywords are looked for (lower case, each digit a 0), each with how its rules
        write it (None where they do not agree)."""
        words = sorted(spellings)
        if not words:
            return None
        # RE2 reads the prefix from a word's start up to its first cut, the cut as a run of the
        # characters cuts are made of, and three characters more: the exact cuts, spelt out for each
        # place of each prefix and read to its end, outgrow its DFA's memory; fewer characters after the
        # cut stand in prose ("the se…" for esecret_, "a si…" for asia) every few hundred bytes.
        runs = f"[{_CUT_CHARACTERS}]"
        hints = "|".join(
            sorted(
                {
                    f"{_spelt(word[:cut])}{runs}+{f'{runs}*'.join(map(_spelt, word[cut : cut + 2]))}"
                    for word in words
                    for cut in range(1, len(word))
                }
            )
        )
        trie: Trie = {}
        for word in words:
            node = trie
            for char in word:
                node = node.setdefault(char, {})
            node[""] = {}
        written = {word: spelling for word, spelling in spellings.items() if spelling is not None}
        return cls(relaxed.re2_program(f"(?i)\\b(?:{hints})".encode()), trie, written)

    def read_piece(self, tail: str, piece: str) -> tuple[bool, str]:
        """Whether ``piece``, a stream's newest, brings what may start a cut prefix (its first letters,
        a cut, two letters more) after ``tail``, the last characters of the text before it as this
        returned them; and those of the text with ``piece``. White space runs are read as one
        character, as they stand for one cut (a line break and its indentation) however long."""
        squeezed = _WHITE_RUN.sub(" ", piece)
        if tail.endswith(" ") and squeezed.startswith(" "):
            squeezed = squeezed[1:]
        joined = tail + squeezed
        encoded = _hint_bytes(joined)
        start, end = relaxed.first_span(self.program, encoded, 0)
        while start >= 0 and end <= len(tail):
            start, end = relaxed.first_span(self.program, encoded, start + 1)
        return start >= 0, joined[-_HINT_TAIL:]

    def open_key(self, text: str, low: int) -> int | None:
        """Where a key whose prefix a cut parts (``split_views``) may still be growing at the end of
        ``text`` starts, from ``low`` on: a cut prefix whose key runs on to the text's end in its groups
        (``gh p_R7mQ``, ``AK IA QYLP``), or the text's end inside what may yet be one (``AK``, ``sk-p
        ro``, ``"sk-" + "``). None where none is: a stream holds back what it returns until the key is
        whole, so no piece of it leaves before the view that reads it joined."""
        encoded = _hint_bytes(text)
        found: list[int] = []
        position = low
        while (start := relaxed.first_start(self.program, encoded, position)) >= 0:
            position = start + 1
            read = _cut_prefix(text, start + 1, self.trie_after(text, start), ())
            if _word_starts(text, start) and read is not None and _key_going_on(text, read[0]):
                found.append(start)
                break
        # Of a cut prefix, no more than the letters of the longest, its cuts' marks and quotes stand
        # between white space: the text's end can be inside one starting no further back than that.
        solid = _SOLID_TAIL.search(text, low) if len(text) - low > _SOLID_CHARACTERS else None
        tail = low if solid is None else solid.start()
        for first in self._first_letters.finditer(text, tail, min(found, default=len(text))):
            start = first.start()
            if _ends_inside(text, start + 1, self.trie_after(text, start), 0):
                return start
        return min(found, default=None)

    def trie_after(self, text: str, start: int) -> Trie:
        """The prefixes by character that go on from the first character of a prefix at ``start``."""
        first = text[start].lower()
        return self.trie.get("0" if first.isdigit() else first, {}) if first.isascii() else {}

    def spelt(self, letters: str) -> str:
        """A prefix's ``letters`` as read (in any case) in the case its rules write it."""
        spelling = self.spellings.get("".join("0" if char.isdigit() else char.lower() for char in letters))
        if spelling is None:
            return letters
        return "".join(
            written if char.isalpha() else char for char, written in zip(letters, spelling, strict=True)
        )


_WHITE_RUN = re.compile(r"\s+")
_LETTER_RUN = re.compile("[a-z]+")


def _words_of(trie: Trie, start: str = "") -> Iterator[str]:
    """The prefixes a trie holds."""
    for char, node in trie.items():
        if char:
            yield from _words_of(node, start + char)
        else:
            yield start


_WORD_MARK = "\x00"


def _marked_words(text: str) -> bytes:
    """The letters of a text of prose (lower case), a mark before each word."""
    return (_WORD_MARK + _WORD_MARK.join(_LETTER_RUN.findall(text.lower()))).encode("ascii")


def _from_a_word(words: Iterable[str]) -> str:
    """For RE2 over ``_marked_words``: a word's start, then one of ``words`` in letters that may run on
    over the next words."""
    spelt = ("\\x00?".join(word) for word in sorted(words) if word.isascii() and word.isalpha())
    return f"\\x00(?:{'|'.join(spelt)})"


def _prefix_letters(word: str) -> tuple[str, bool]:
    """The letters of a prefix (as the trie holds it) that a reading from its start can match before it
    needs a digit, and whether it has no digit (all of it can be read from letters and cuts)."""
    digit = word.find("0")
    readable = word if digit < 0 else word[:digit]
    return "".join(char for char in readable if char.isalpha()), digit < 0


_SOLID_CHARACTERS = 224
_SOLID_TAIL = regex.compile(
    rf"(?r)(?:{_CUT_WHITE}*+[^{_CUT_SPACE[1:-1]}\r\n]){{0,{_SOLID_CHARACTERS}}}+{_CUT_WHITE}*+\Z"
)
"""The end of a text as far back as ``_SOLID_CHARACTERS`` characters of it that are no white space: more
than a cut prefix holds (the letters of the longest, and a few marks or quotes a cut)."""
_HINT_TAIL = 48
"""Characters before a stream's piece a cut prefix's hint may begin in: longer than any."""
# What follows a cut prefix while its key may still be growing: the key's characters, in groups one to
# three spaces or a separator part, to the text's end.
_KEY_GOING_ON = regex.compile(r"[A-Za-z0-9_+/=-]*+(?:[ \t.:-]{1,3}+[A-Za-z0-9_+/=-]++)*+[ \t.:-]{0,3}+\Z")


_KEY_GROUP = re.compile("[A-Za-z0-9_+/=-]+")


def _key_going_on(text: str, at: int) -> bool:
    """Whether a key may still be growing from ``at`` to the text's end (``_KEY_GOING_ON``), its groups
    after the first of one length but the last, which may yet grow: words of prose differ in length,
    and a stream holds no sentence from a word that reads as a cut prefix ("As I always say …")."""
    if _KEY_GOING_ON.match(text, at) is None:
        return False
    lengths = [len(group) for group in _KEY_GROUP.findall(text, at)]
    return len(set(lengths[1:-1])) <= 1


def _word_starts(text: str, at: int) -> bool:
    return not (at and text[at - 1].isascii() and text[at - 1].isalnum())


def _spelt(word: str) -> str:
    return re.escape(word).replace("0", "[0-9]")


_CUT = re.compile(_PREFIX_CUT)
_CUT_FIRSTS = frozenset(" \t\r\n\"'`-_.:/|,;\\~*${})")


def _may_cut(char: str) -> bool:
    """Whether a cut may start with ``char`` (a letter or digit never does: most characters a prefix's
    reading stops at are told so without the cut's pattern)."""
    return char in _CUT_FIRSTS or not char.isascii()


_PREFIX_MARKS = frozenset("-_.:/")
"""The marks of a cut that key prefixes hold too."""
_MAX_CUTS = 32


def _cut_prefix(
    text: str, at: int, node: Trie, cuts: tuple[tuple[int, int], ...]
) -> tuple[int, tuple[tuple[int, int], ...]] | None:
    """The end of the longest prefix of ``node`` read from ``at`` with cuts in it (after ``cuts``),
    a letter or digit after it, and its cuts; None where none is."""
    best = None
    char = text[at : at + 1]
    if "" in node and cuts and char.isascii() and char.isalnum():
        best = (at, cuts)
    key = "0" if char.isdigit() else char.lower()
    if char.isascii() and key in node:
        read = _cut_prefix(text, at + 1, node[key], cuts)
        if read is not None and (best is None or read[0] > best[0]):
            best = read
    if (not cuts or cuts[-1][1] < at) and len(cuts) < _MAX_CUTS and _may_cut(char):
        cut = _CUT.match(text, at)
        for end in _cut_ends(text, at, cut.end()) if cut is not None else ():
            if cuts and len(text[cuts[0][0] : end].translate(_WHITE_LEFT_OUT)) > LONGEST_SPLIT:
                continue
            read = _cut_prefix(text, end, node, (*cuts, (at, end)))
            if read is not None and (best is None or read[0] > best[0]):
                best = read
    return best


def _cut_ends(text: str, at: int, end: int) -> Iterator[int]:
    """Where the cut from ``at`` to ``end`` may end: there, and, where it ends in marks that key prefixes
    hold too ("ghp-_…", "sk -proj"), before each of them, for the prefix to read them."""
    yield end
    while end > at + 1 and text[end - 1] in _PREFIX_MARKS:
        end -= 1
        if _CUT.fullmatch(text, at, end):
            yield end


_OPEN_CUT = regex.compile(_PREFIX_CUT)


def _ends_inside(text: str, at: int, node: Trie, cuts: int) -> bool:
    """Whether the text's end comes inside a prefix of ``node`` read from ``at`` with cuts in it (after
    ``cuts`` of them), before the key's first letter after it."""
    if at == len(text):
        return True
    char = text[at]
    key = "0" if char.isdigit() else char.lower()
    if char.isascii() and key in node and _ends_inside(text, at + 1, node[key], cuts):
        return True
    if cuts >= _MAX_CUTS or not _may_cut(char) or (cut := _OPEN_CUT.match(text, at, partial=True)) is None:
        return False
    return cut.partial or any(
        _ends_inside(text, end, node, cuts + 1) for end in _cut_ends(text, at, cut.end())
    )


def split_views(text: str, prefixes: SplitPrefixes, parent: View | None) -> list[View]:
    """Views of the keys whose prefix cuts part (``SplitPrefixes``), the cuts left out and the prefix's
    letters in the case its rules write them: ``sk-p roj-…``, ``gh\np_…``, ``Gh p_…``, ``"sk-" + "pr" +
    "oj-…"``. A key's view runs from the character before its prefix to ``_SPLIT_REACH`` past it and maps
    character by character, so a match covers the cuts. The prefix stands after no letter or digit.
    Prefixes whose views would overlap share one view, all their cuts left out (but one after a prefix
    that another prefix follows, which would glue the two), so the views are no longer than the text and
    one more reach for each stretch: prose full of what reads as a cut prefix ("a si a" of ``asia``)
    costs one more reading of it, not one a prefix."""
    encoded = _hint_bytes(text)
    readings: list[tuple[int, int, tuple[tuple[int, int], ...]]] = []
    position = 0
    while (start := relaxed.first_start(prefixes.program, encoded, position)) >= 0:
        position = start + 1
        if not _word_starts(text, start):
            continue
        read = _cut_prefix(text, start + 1, prefixes.trie_after(text, start), ())
        if read is None:
            continue
        # Of two readings that overlap, the one that reads further on is kept: "a si AK IA…" reads "a
        # si A" of asia, then AKIA, whose key goes on where the first's would start.
        if readings and start < readings[-1][1]:
            if read[0] <= readings[-1][1]:
                continue
            readings.pop()
        readings.append((start, *read))
    found: list[View] = []
    first = 0
    for index in range(1, len(readings) + 1):
        if index == len(readings) or readings[index][0] - 1 > readings[index - 1][1] + _SPLIT_REACH:
            found.append(_split_view(text, readings[first:index], prefixes, parent))
            first = index
    return found


def _split_view(
    text: str,
    readings: list[tuple[int, int, tuple[tuple[int, int], ...]]],
    prefixes: SplitPrefixes,
    parent: View | None,
) -> View:
    """One view of the cut prefixes ``readings`` (start, end, cuts; in order, each view's reach
    overlapping the next's), from the character before the first to ``_SPLIT_REACH`` past the last."""
    starts = {start for start, _, _ in readings}
    kept: list[tuple[int, int, str | None]] = []  # spans of the text, a prefix's letters respelt
    position = max(0, readings[0][0] - 1)
    for start, end, cuts in readings:
        # A cut after the prefix's last letter, before its key, is left out too, but where the next
        # prefix starts right after it: what parts the two stays.
        trailing = cuts[-1][1] == end
        letters_end = cuts[-1][0] if trailing else end
        bounds = [start, *itertools.chain.from_iterable(cuts[:-1] if trailing else cuts), letters_end]
        letters = [(low, high) for low, high in itertools.batched(bounds, 2) if low < high]
        spelt = prefixes.spelt("".join(text[low:high] for low, high in letters))
        kept.append((position, start, None))
        at = 0
        for low, high in letters:
            kept.append((low, high, spelt[at : at + high - low]))
            at += high - low
        position = end if trailing and end not in starts else letters_end
    kept.append((position, min(len(text), readings[-1][1] + _SPLIT_REACH), None))
    pieces, parts, length = [], [], 0
    for low, high, written in kept:
        if high <= low:
            continue
        pieces.append((length, low, high, True))
        parts.append(text[low:high] if written is None else written)
        length += high - low
    return View("".join(parts), SPLIT, tuple(pieces), parent)


# -- grouped keys: a key cut into groups by a separator, or written in the other case ------------------

# What parts the groups of a key as people and models write it out (AKIA-QYLP-..., AKIA QYLP ..., one
# group a line): one to three characters of these, the same all along, or a line break with its
# indentation.
_GROUP_SEPARATOR = re.compile(r"[ \t]*\r?\n[ \t]*|[-._/:,;|+*~\\ \t]{1,3}")
_LONGEST_GROUP = 40
_LONGEST_REST = 256
"""The longest first group after a prefix: a key's whole rest, cut from its prefix alone (``sk-ant-api
03-…``, where the format's own prefix runs on past the rule's keyword)."""
_MAX_GROUPS = 64
_SPACE_SEPARATOR = r"(?:[ \t]*\r?\n[ \t]*|[ \t]{1,3})"
OPEN_GROUPED = (
    rf"[A-Za-z0-9_-]*(?:{_SPACE_SEPARATOR}[A-Za-z0-9_-]{{1,{_LONGEST_REST}}})?"
    rf"(?:{_SPACE_SEPARATOR}[A-Za-z0-9_-]{{1,{_LONGEST_GROUP}}})*"
    rf"(?:{_SPACE_SEPARATOR}|[ \t]*\r?)"
)
"""What follows a key's prefix at the end of a text that may still grow into a ``grouped_views`` view of
groups that white space parts, to be held until the key is whole (a pattern)."""
_HEAD = re.compile("[A-Za-z0-9]*")
_DIGIT = re.compile("[0-9]")
_KEY_PUNCTUATION = "_-+/="
"""What keys hold besides letters and digits, in a group unless it parts the groups."""


@functools.cache
def _group(separator: str, longest: int) -> re.Pattern[str]:
    """A group of at most ``longest`` characters of a key whose groups ``separator`` parts."""
    held = re.escape("".join(char for char in _KEY_PUNCTUATION if char not in separator))
    return re.compile(f"[A-Za-z0-9{held}]{{1,{longest}}}(?![A-Za-z0-9{held}])")


def grouped_views(
    text: str,
    prefixes: Iterable[tuple[int, int]],
    parent: View | None,
    longest: Callable[[str], int] | None = None,
) -> Iterator[View]:
    """Views of the key at each prefix (``prefixes``, in order) read on across the groups a separator
    parts (the same separator all along), with the separators left out; and, where each group is of one
    case or a digit stands in them, the key upper-cased and lower-cased, for formats of one case. A view holds
    the character before the prefix and the one after its last group, so a rule's edges read as in the
    text. Groups parted with white space may run on into the words after the key: each of their ends is
    a view, as long as the groups between the first and the last are of one length and the last no
    longer (as keys are written out, in groups of four) and a digit stands in them, so words of prose
    are not joined. Keys of one group near one another are read in the other case in one view (every
    such key of a stretch turned, the text between as it is): a text of prefixes costs a reading or two
    of it, not two views a prefix. An end past ``longest`` (of a prefix: the longest key its rules match,
    0 where it leads none and is read for none) is no view: no key from the prefix runs to it, and the
    ends of groups of a prefix and a digit repeated (``akia2 akia2``) were as many views as groups, each
    as long as the groups before it."""
    after = 0
    cased: list[tuple[int, int]] = []
    for start, end in prefixes:
        if start < after:
            continue
        reach = None if longest is None else longest(text[start:end])
        if reach == 0:
            continue  # a prefix that leads no key: the prefixes after it are read from themselves
        chain = _groups(text, start, end)
        if chain is None:
            continue
        groups, spaced = chain
        after = groups[-1][1]
        length = 0
        for last in range(len(groups)) if spaced else (len(groups) - 1,):
            length += groups[last][1] - groups[last][0]
            if spaced and reach is not None and length > reach:
                break
            middle = {high - low for low, high in groups[1:last]}
            if len(middle) > 1 or (middle and groups[last][1] - groups[last][0] > min(middle)):
                break
            if last and spaced and not any(_DIGIT.search(text, *group) for group in groups[1 : last + 1]):
                continue  # words: a key's groups hold a digit
            yield from _grouped_views(text, start, end, groups[: last + 1], parent, cased)
    yield from _cased_views(text, cased, parent)


def _grouped_views(
    text: str,
    start: int,
    end: int,
    groups: list[tuple[int, int]],
    parent: View | None,
    cased: list[tuple[int, int]],
) -> Iterator[View]:
    """The view of the key at ``start``-``end`` read on over ``groups`` and its views in the other case;
    a key of one group is added to ``cased`` instead, to be read in the other case with those near it."""
    low, high = max(0, start - 1), min(len(text), groups[-1][1] + 1)
    pieces, parts, length = [], [], 0
    for piece_start, piece_end in [(low, groups[0][0]), *groups, (groups[-1][1], high)]:
        pieces.append((length, piece_start, piece_end, True))
        parts.append(text[piece_start:piece_end])
        length += piece_end - piece_start
    joined = "".join(parts)
    if len(groups) > 1:
        yield View(joined, GROUPED, tuple(pieces), parent)
    elif groups[0][1] == end:
        return  # the prefix alone
    # A key of one case written in mixed case, group by group or letter by letter, still holds a digit
    # past its prefix (sixteen of AKIA's or a hex key's characters without one are one chance in two
    # hundred); a name of mixed case after a prefix (``akia_ButtonGroup``) holds none.
    rest = [(end, groups[0][1]), *groups[1:]]
    parts = [text[a:b] for a, b in rest]
    if not (all(part in (part.upper(), part.lower()) for part in parts) or any(map(_DIGIT.search, parts))):
        return
    if len(groups) == 1:
        cased.append((low, high))
        return
    for kind, case in CASED.items():
        turned = case(joined)
        if turned != joined:
            yield View(turned, kind, tuple(pieces), parent)


_CASED_GAP = 256
"""Keys of one group closer than this are read in the other case in one view."""


def _cased_views(text: str, spans: list[tuple[int, int]], parent: View | None) -> Iterator[View]:
    """For each stretch of the keys of one group at ``spans`` (each with the character either side), a
    view of each case the stretch with those keys turned to it (``CASED``): one character for each, so
    the view maps character by character."""
    stretches: list[list[tuple[int, int]]] = []
    for low, high in sorted(spans):
        if stretches and low <= stretches[-1][-1][1] + _CASED_GAP:
            stretches[-1].append((low, max(high, stretches[-1][-1][1])))
        else:
            stretches.append([(low, high)])
    for stretch in stretches:
        first, last = stretch[0][0], stretch[-1][1]
        for kind, case in CASED.items():
            parts, position = [], first
            for low, high in stretch:
                low = max(low, position)
                piece = case(text[low:high])  # "ß" upper-cased is two letters: such a key is not turned
                parts += [text[position:low], piece if len(piece) == high - low else text[low:high]]
                position = max(position, high)
            turned = "".join(parts)
            if turned != text[first:last]:
                yield View(turned, kind, ((0, first, last, True),), parent)


def _groups(text: str, start: int, end: int) -> tuple[list[tuple[int, int]], bool] | None:
    """The groups of the key whose prefix stands at ``start``-``end`` (the prefix and the letters and
    digits after it, then each group after a separator, the same all along), and whether white space
    stands in what parts them; None where the same separator goes on to a group too long for a key's."""
    head = _HEAD.match(text, end)
    groups = [(start, head.end() if head is not None else end)]
    separator = ""
    position = groups[0][1]
    while len(groups) < _MAX_GROUPS:
        cut = _GROUP_SEPARATOR.match(text, position)
        if cut is None:
            break
        glue = cut.group()
        if not separator:
            separator = glue
        elif _separator_of(glue) != _separator_of(separator):
            break
        group = _group(glue, _LONGEST_REST if len(groups) == 1 else _LONGEST_GROUP).match(text, cut.end())
        if group is None:
            if text[cut.end() : cut.end() + 1].isalnum() and _separator_of(glue) == _separator_of(separator):
                return None
            break
        groups.append(group.span())
        position = group.end()
    return groups, any(char.isspace() for char in separator)


def _separator_of(glue: str) -> str:
    """A separator as it is compared with the next: a line break whatever its indentation."""
    return glue.strip(" \t") if "\n" in glue else glue


# -- quoted-printable: a MIME part or an e-mail that declares it ----------------------------------------

QUOTED_PRINTABLE = "quoted-printable"
_QUOTED_PRINTABLE_DECLARED = re.compile(
    r"content-transfer-encoding[ \t]*:[ \t]*[\"']?quoted-printable\b", re.IGNORECASE
)
# A part's header block ends at a blank line; a MIME boundary line ends its body (the next part's or
# the message's closing one).
_BLANK_LINE = re.compile(r"\r?\n[ \t]*\r?\n")
_BOUNDARY_LINE = re.compile(r"\r?\n--[^\s-]")
# A run of escaped bytes (decoded together: a character past ASCII is several), or a soft line break
# (an "=" ending a line, transport padding before the break), which a decoder drops: it cuts a line too
# long for mail anywhere, a key too.
_QUOTED_PRINTABLE_UNIT = re.compile(r"(?P<bytes>(?:=[0-9A-Fa-f]{2})+)|=[ \t]*\r?\n")


def quoted_printable_views(text: str, parent: View | None) -> list[View]:
    """A view of the body of each MIME part or e-mail in ``text`` that declares itself quoted-printable
    (``Content-Transfer-Encoding: quoted-printable``), decoded as its receiver decodes it: soft line
    breaks out, each ``=XX`` the byte it stands for. Only a declared body is decoded: ``x=10`` in code is
    no escape. Plain characters map to themselves, a run of escapes to itself as a whole. A body ends
    at a boundary line or where the next declaration stands, and each stretch of the text is searched
    once, however many declarations it holds."""
    if "=" not in text:
        return []
    found = []
    declared = _QUOTED_PRINTABLE_DECLARED.search(text)
    while declared is not None:
        following = _QUOTED_PRINTABLE_DECLARED.search(text, declared.end())
        limit = len(text) if following is None else following.start()
        blank = _BLANK_LINE.search(text, declared.end(), limit)
        declared = following
        if blank is None:
            continue
        boundary = _BOUNDARY_LINE.search(text, blank.end(), limit)
        view = _quoted_printable_view(
            text, blank.end(), limit if boundary is None else boundary.start(), parent
        )
        if view is not None:
            found.append(view)
    return found


def _quoted_printable_view(text: str, start: int, end: int, parent: View | None) -> View | None:
    pieces: list[tuple[int, int, int, bool]] = []
    parts: list[str] = []
    length = 0
    at = start
    for unit in (*_QUOTED_PRINTABLE_UNIT.finditer(text, start, end), None):
        unit_start = end if unit is None else unit.start()
        for piece, origin, literal in (
            (text[at:unit_start], (at, unit_start), True),
            (_escaped_bytes(unit), unit.span() if unit is not None else (end, end), False),
        ):
            if piece:
                pieces.append((length, *origin, literal))
                parts.append(piece)
                length += len(piece)
        at = end if unit is None else unit.end()
    decoded = "".join(parts)
    return None if decoded == text[start:end] else View(decoded, QUOTED_PRINTABLE, tuple(pieces), parent)


def _escaped_bytes(unit: re.Match[str] | None) -> str:
    """What a run of quoted-printable escapes stands for (a soft line break: nothing)."""
    escaped = None if unit is None else unit.group("bytes")
    return bytes.fromhex(escaped.replace("=", "")).decode("utf-8", "replace") if escaped else ""


# -- character codes: a key written as the numbers of its characters --------------------------------------


def _code_views(text: str, encoded: bytes, parent: View | None) -> list[View]:
    """Views of the runs of eight or more character codes (``_CODES``), each the text they stand for,
    each character mapped to its number: ``[103, 104, 112, 95, …]``, ``String.fromCharCode(103,
    104, …)``, ``chr(103)+chr(104)+…``, ``01100111 01101000 …``. A run with a number past printable
    ASCII stands for no text."""
    found: list[View] = []
    position = 0
    while (hint := relaxed.first_start(_MAY_HOLD_CODES, encoded, position)) >= 0:
        start = hint  # the hint may start inside a longer number
        while start > 0 and encoded[start - 1 : start].isdigit():
            start -= 1
        # From the first hint on, the regex looks for the next run itself (in C, one pass), so a long
        # table of numbers that are no run costs no step a number.
        run = _CODES.search(text, start)
        if run is None:
            break
        position = run.end()
        numbers = _numbers_of(run)
        if numbers is not None:
            letters = np.array([at for at, _ in numbers], dtype=np.intp)
            decoded = "".join(chr(code) for _, code in numbers)
            found.append(View(decoded, CODES, ((0, run.start(), run.end(), True),), parent, {0: letters}))
    return found


def _numbers_of(run: re.Match[str]) -> list[tuple[int, int]] | None:
    """Where each number of a run of ``_CODES`` stands and the code it is, or None where one is past
    printable ASCII. Binary digits in a row are cut in octets, else in 7-bit groups, whichever all read
    as printable ASCII."""
    bits = run.group("bits")
    if bits is None:
        base = 2 if run.group("bit_glue") is not None else 10
        numbers = [(number.start(), int(number.group(), base)) for number in _NUMBER.finditer(run.group())]
        return [(run.start() + at, code) for at, code in numbers] if _printable(numbers) else None
    for width in (8, 7):
        if len(bits) % width:
            continue
        numbers = [(run.start() + at, int(bits[at : at + width], 2)) for at in range(0, len(bits), width)]
        if _printable(numbers):
            return numbers
    return None


def _printable(numbers: list[tuple[int, int]]) -> bool:
    return all(32 <= code <= 126 for _, code in numbers)


# -- listed characters: a key written as a list of its characters ----------------------------------------


def _character_views(text: str, encoded: bytes, parent: View | None) -> list[View]:
    """Views of the lists of eight or more one-character strings (``_CHARACTERS``), each the characters
    joined, each mapped to where it stands: ``["g", "h", "p", "_", …]``, ``['s', 'k', '-', …]``, and the
    same in a JSON string (``[\\"g\\", \\"h\\", …]``)."""
    found: list[View] = []
    position = 0
    while (hint := relaxed.first_start(_MAY_HOLD_CHARACTERS, encoded, position)) >= 0:
        run = _CHARACTERS.search(text, hint)
        if run is None:
            break
        position = run.end()
        listed = list(_LISTED[run.group("quote")].finditer(text, run.start(), run.end()))
        letters = np.array([character.start(1) for character in listed], dtype=np.intp)
        decoded = "".join(character.group(1) for character in listed)
        found.append(View(decoded, CHARACTERS, ((0, run.start(), run.end(), True),), parent, {0: letters}))
    return found


# -- base85: Ascii85 and RFC 1924's alphabet ----------------------------------------------------------------


def _base85_views(text: str, encoded: bytes, parent: View | None) -> list[View]:
    """Views of the runs of base85 groups of ASCII (``_BASE85_KINDS``) that decode to text, in either
    alphabet. A run the hint finds may start a few characters early (a name glued before it fits the
    groups by chance), so the run is read from each of the five characters there; one all of base64's
    alphabet is left to the base64 views."""
    found: list[View] = []
    for kind, hint, groups, digits in _BASE85_KINDS:
        position = 0
        while (start := relaxed.first_start(hint, encoded, position)) >= 0:
            position = start + 1
            for at in range(start, min(start + 5, len(text))):
                run = groups.match(text, at)
                if run is None:
                    continue
                # The run is read once: a later start inside it begins a part of one of these five.
                position = max(position, run.end())
                if _NOT_BASE64.search(text, at, run.end()) is None:
                    continue
                decoded = _decode_base85(run.group(), digits)
                if decoded is not None:
                    found.append(View(decoded, kind, ((0, at, run.end(), False),), parent))
                    break
    return found


def _decode_base85(segment: str, digits: bytes) -> str | None:
    """The text a run of base85 groups holds (``digits``: each character's value in its alphabet). A run
    of groups that is not text is told by its first ``_PROBE`` characters; one that is may end in a
    character or three of what follows it (a full stop, a closing bracket), read without them."""
    probe = segment[: min(len(segment), _PROBE) // 5 * 5]
    if probe and _as_text(_base85_bytes(probe, digits) or b"\xff") is None:
        return None
    for end in range(len(segment), max(len(segment) - 4, 19), -1):
        raw = _base85_bytes(segment[:end], digits) if end % 5 != 1 else None
        text = _as_text(raw) if raw is not None else None
        if text is not None:
            return text
    return None


def _base85_bytes(segment: str, digits: bytes) -> bytes | None:
    """The bytes base85 ``segment`` stands for; None where a group is past 32 bits."""
    values = np.frombuffer(segment.encode("ascii").translate(digits), dtype=np.uint8)
    padding = -len(values) % 5  # a short last group is decoded as if filled with the highest digit
    filled = np.concatenate([values, np.full(padding, 84, dtype=np.uint8)]).reshape(-1, 5)
    numbers = filled.astype(np.uint64) @ _BASE85_POWERS
    if (numbers >= 1 << 32).any():
        return None
    raw = numbers.astype(">u4").tobytes()
    return raw[: len(raw) - padding]


# -- base32: RFC 4648's alphabet, capitals and 2 to 7 -----------------------------------------------------

_BASE32_RUN = re.compile("[A-Z2-7]+=*")


def _decode_base32(candidate: str) -> tuple[str, str] | None:
    """The text a base32 segment holds (tried only where base64 read none: a run of capitals and the
    digits 2 to 7 is base64 too), padded however much its padding was cut."""
    stripped = candidate.rstrip("=")
    try:
        raw = base64.b32decode(stripped + "=" * (-len(stripped) % 8))
    except (binascii.Error, ValueError):
        return None
    text = _as_text(raw)
    return (text, "") if text is not None else None
