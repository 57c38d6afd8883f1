"""Text normalisation ahead of injection detection.

Attackers hide instructions from keyword filters with tricks that a language model still reads through:
invisible characters, look-alike letters from other scripts, full-width or "mathematical" letters,
letter-spaced words and encoded segments. ``normalize`` undoes those tricks so that rules and the
classifier see one plain, case-folded form, and reports which tricks it met: the trick itself is a signal.

Pure: text in, ``Normalized`` out. The expensive steps run only where a cheap check says they could
change something: ASCII text has no invisible, tag, compatibility or look-alike characters, and the
decoders and the letter-spacing join look only where an array pass over the code points finds a run that
could be an encoding or a spaced word.
"""

# The look-alike table and its docs are made of ambiguous letters on purpose.
# ruff: noqa: RUF001, RUF002

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

HIDDEN_CHARACTERS = "hidden_characters"
TAG_CHARACTERS = "tag_characters"
HOMOGLYPHS = "homoglyphs"
LETTER_SPACING = "letter_spacing"
BASE64 = "base64"
HEX = "hex"
URL_ENCODING = "url_encoding"

MAX_DEPTH = 2
"""Decoded segments are normalised again, down to this many levels (base64 inside base64, ...)."""

MAX_DECODED_CHARS = 64_000
"""Total decoded text kept per call, so a body full of base64 cannot make the scan quadratic."""

MAX_SEGMENTS = 32

# Zero-width characters, joiners, word joiner and invisible operators, BOM, soft hyphen, Mongolian vowel
# separator, and the bidirectional controls (embeddings, overrides, isolates, marks).
_INVISIBLE = re.compile(
    "[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\u061c\ufeff\U000e0000-\U000e007f]"
)
_TAG_BLOCK = re.compile("[\U000e0000-\U000e007f]+")

# Look-alikes NFKC leaves alone: Cyrillic and Greek letters drawn like Latin ones, and small capitals.
_CONFUSABLES: dict[str, str] = {
    # Cyrillic
    "а": "a", "в": "b", "с": "c", "е": "e", "һ": "h", "і": "i", "ј": "j", "к": "k", "м": "m", "н": "h",
    "о": "o", "р": "p", "ԛ": "q", "ѕ": "s", "т": "t", "у": "y", "х": "x", "ԝ": "w", "ӏ": "l", "ү": "y",
    "А": "A", "В": "B", "С": "C", "Е": "E", "Н": "H", "І": "I", "Ј": "J", "К": "K", "М": "M", "О": "O",
    "Р": "P", "Ѕ": "S", "Т": "T", "Х": "X", "У": "Y", "ԁ": "d", "ɡ": "g", "ո": "n", "ց": "g",
    # Greek
    "α": "a", "ο": "o", "ρ": "p", "ι": "i", "κ": "k", "ν": "v", "τ": "t", "υ": "u", "χ": "x", "ε": "e",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Latin small capitals and other letter-like symbols
    "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ꜰ": "f", "ɢ": "g", "ʜ": "h", "ɪ": "i", "ᴊ": "j",
    "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ʀ": "r", "ꜱ": "s", "ᴛ": "t", "ᴜ": "u",
    "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z", "ı": "i",
}  # fmt: skip
LOOKALIKES: Mapping[str, str] = MappingProxyType(_CONFUSABLES)
"""Each look-alike and its Latin twin, shared with the secret detector's unmasking
(proxy/scanning/unmask.py)."""
_CONFUSABLE_TABLE = str.maketrans(_CONFUSABLES)
_ANY_CONFUSABLE = re.compile("[" + "".join(_CONFUSABLES) + "]")
_WORD = re.compile(r"\w+")
_LATIN_LETTER = re.compile(r"[a-zA-Z]")
_OTHER_SCRIPT_LETTER = re.compile(r"[\u0370-\u03ff\u0400-\u052f]")

# Three or more single letters each followed by one separator (space, dot, dash, underscore, star):
# "i g n o r e", "i.g.n.o.r.e". Two spaces or more between runs keep the words apart.
_LETTER_SPACED = re.compile(r"(?<![^\W_])(?:[^\W\d_][ .\-_*]){2,}[^\W\d_](?![^\W_])")
_SPACED_SEPARATORS = re.compile(r"[ .\-_*]")

_HEX_CANDIDATE = re.compile(r"(?<![0-9A-Za-z])(?:\\x|0x)?(?:[0-9a-fA-F]{2}(?:\\x|0x|[ :])?){8,}")
_HEX_NOISE = re.compile(r"\\x|0x|[ :]")
# Three percent-escapes in one stretch without whitespace; anchored on "%" so the search skips ahead.
_URL_ENCODED = re.compile(r"(?:%[0-9a-fA-F]{2}[^%\s]*){3}")


@dataclass(frozen=True, slots=True)
class Normalized:
    """``texts[0]`` is the whole input in normal form; further entries are decoded or smuggled
    segments, each in normal form too. ``signals`` names the obfuscations found."""

    texts: tuple[str, ...]
    signals: frozenset[str]

    @property
    def text(self) -> str:
        return self.texts[0]


def normalize(text: str, *, max_depth: int = MAX_DEPTH) -> Normalized:
    """Normalise ``text`` and every encoded segment in it (to ``max_depth`` levels)."""
    texts: list[str] = []
    signals: set[str] = set()
    budget = [MAX_DECODED_CHARS]
    _normalize_into(text, max_depth, texts, signals, budget)
    return Normalized(tuple(texts), frozenset(signals))


def _normalize_into(text: str, depth: int, texts: list[str], signals: set[str], budget: list[int]) -> None:
    if text.isascii():
        smuggled: list[str] = []
        visible = folded = text
    else:
        smuggled = [_decode_tag_run(run) for run in _TAG_BLOCK.findall(text)]
        visible = _INVISIBLE.sub("", text)
        if len(visible) != len(text):
            signals.add(HIDDEN_CHARACTERS)
        visible = unicodedata.normalize("NFKC", visible)
        folded = fold_homoglyphs(visible)
        if folded != visible:
            signals.add(HOMOGLYPHS)
    shapes = _Shapes(visible)
    decoded = _decoded_segments(visible, signals, shapes) if depth > 0 else []
    plain = folded.casefold()
    despaced = despace(plain) if shapes.may_be_letter_spaced() else plain
    if despaced != plain:
        signals.add(LETTER_SPACING)
    texts.append(despaced)
    for segment in smuggled:
        if segment.strip():
            signals.add(TAG_CHARACTERS)
            texts.append(despace(fold_homoglyphs(unicodedata.normalize("NFKC", segment)).casefold()))
    for segment in decoded:
        if len(texts) >= MAX_SEGMENTS or budget[0] <= 0:
            break
        segment = segment[: budget[0]]
        budget[0] -= len(segment)
        _normalize_into(segment, depth - 1, texts, signals, budget)


def _decode_tag_run(run: str) -> str:
    """Unicode tag characters mirror ASCII (U+E0041 is a tagged "A"): text written in them is invisible
    on screen but read by models."""
    return "".join(chr(ord(char) - 0xE0000) for char in run if 0xE0020 <= ord(char) <= 0xE007E)


def fold_homoglyphs(text: str) -> str:
    """Replace look-alike letters by their Latin twin inside words that are written in Latin script.

    A word is folded when it mixes Latin letters with look-alikes ("іgnоrе" with Cyrillic і, о, е), or
    when it is made only of look-alikes in text that is mostly Latin. Russian or Greek prose stays as it
    is, so rules written in those languages still apply.
    """
    if not _ANY_CONFUSABLE.search(text):
        return text
    latin = len(_LATIN_LETTER.findall(text))
    other = len(_OTHER_SCRIPT_LETTER.findall(text))
    mostly_latin = latin >= other

    def fold(match: re.Match[str]) -> str:
        word = match.group()
        folded = word.translate(_CONFUSABLE_TABLE)
        if folded == word:
            return word
        if _LATIN_LETTER.search(word) or (mostly_latin and not _OTHER_SCRIPT_LETTER.search(folded)):
            return folded
        return word

    return _WORD.sub(fold, text)


def despace(text: str) -> str:
    """Join letter-spaced words: "i g n o r e" becomes "ignore"."""
    return _LETTER_SPACED.sub(lambda match: _SPACED_SEPARATORS.sub("", match.group()), text)


class _Shapes:
    """Cheap array checks over a text's code points, each an over-approximation of a regex: where it
    finds nothing, the regex cannot match either and is not run."""

    def __init__(self, text: str) -> None:
        self.text = text
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        self.codes = codes
        clipped = np.minimum(codes, 128)
        self.base64 = _BASE64_ALPHABET[clipped]
        self.hex = _HEX_DIGIT[clipped]

    def base64_runs(self) -> list[tuple[int, int]]:
        """(start, end) of every run of 16 or more base64-alphabet characters."""
        edges = np.diff(self.base64.view(np.int8), prepend=np.int8(0), append=np.int8(0))
        starts = np.flatnonzero(edges == 1)
        ends = np.flatnonzero(edges == -1)
        long = ends - starts >= _MIN_BASE64
        return list(zip(starts[long].tolist(), ends[long].tolist(), strict=True))

    def may_hold_hex(self) -> bool:
        """Whether some stretch is dense enough in hex digits to hold 8 pairs with separators between."""
        if len(self.codes) < 2 * _MIN_HEX_PAIRS:
            return False
        before = np.concatenate(([0], np.cumsum(self.hex, dtype=np.int32)))
        span = min(len(self.codes), _HEX_SPAN)
        return bool((before[span:] - before[:-span] >= 2 * _MIN_HEX_PAIRS).any())

    def may_be_letter_spaced(self) -> bool:
        """Whether three single letters stand one separator apart somewhere (the shape of "i g n"): no
        word character just before the first or just after the third."""
        codes = self.codes
        if len(codes) < 5:
            return False
        clipped = np.minimum(codes, 128)
        letter = _LETTER[clipped]
        separator = _SEPARATOR[clipped]
        apart = np.ones(len(codes) + 2, dtype=bool)
        apart[1:-1] = ~_WORDISH[clipped]
        shape = letter[:-4] & separator[1:-3] & letter[2:-2] & separator[3:-1] & letter[4:]
        return bool((shape & apart[: len(codes) - 4] & apart[6:]).any())


def _table(characters: str, *, beyond_ascii: bool) -> npt.NDArray[np.bool_]:
    """A lookup by code point clipped to 128: the ASCII characters given, and everything past ASCII."""
    table = np.zeros(129, dtype=bool)
    table[[ord(char) for char in characters]] = True
    table[128] = beyond_ascii
    return table


_ASCII_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_BASE64_ALPHABET = _table(_ASCII_LETTERS + "0123456789+/_-", beyond_ascii=False)
_HEX_DIGIT = _table("0123456789abcdefABCDEF", beyond_ascii=False)
_LETTER = _table(_ASCII_LETTERS, beyond_ascii=True)
_WORDISH = _table(_ASCII_LETTERS + "0123456789", beyond_ascii=False)
_SEPARATOR = _table(" .-_*", beyond_ascii=False)
_MIN_BASE64 = 16
_MIN_HEX_PAIRS = 8
_HEX_SPAN = 2 * _MIN_HEX_PAIRS + 2 * _MIN_HEX_PAIRS
"""Eight pairs, each after a separator of at most two characters ("\\x", "0x"), fit in 32 characters:
a text with no 32 holding 16 hex digits has no hex segment."""


def _decoded_segments(text: str, signals: set[str], shapes: _Shapes) -> list[str]:
    segments: list[str] = []
    for start, end in shapes.base64_runs():
        padding = len(text[end : end + 2]) - len(text[end : end + 2].lstrip("="))
        decoded = _decode_base64(text[start : end + padding])
        if decoded is not None:
            signals.add(BASE64)
            segments.append(decoded)
    for match in _HEX_CANDIDATE.finditer(text) if shapes.may_hold_hex() else ():
        decoded = _decode_hex(match.group())
        if decoded is not None:
            signals.add(HEX)
            segments.append(decoded)
    if "%" in text and _URL_ENCODED.search(text):
        decoded_url = urllib.parse.unquote(text)
        if decoded_url != text:
            signals.add(URL_ENCODING)
            segments.append(decoded_url)
    return segments


def _decode_base64(candidate: str) -> str | None:
    # Long runs of letters only are ordinary words or identifiers far more often than base64.
    if candidate.isalpha() and (candidate.islower() or candidate.isupper()):
        return None
    stripped = candidate.rstrip("=")
    padded = stripped + "=" * (-len(stripped) % 4)
    try:
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return None
    return _as_text(raw)


def _decode_hex(candidate: str) -> str | None:
    digits = _HEX_NOISE.sub("", candidate)
    if len(digits) % 2:
        digits = digits[:-1]
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        return None
    return _as_text(raw)


def _as_text(raw: bytes) -> str | None:
    """Keep a decoding only if it reads as text: valid UTF-8, mostly printable, some letters."""
    if len(raw) < 6:
        return None
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(1 for char in decoded if char.isprintable() or char in "\n\r\t")
    letters = sum(1 for char in decoded if char.isalpha())
    if printable < 0.95 * len(decoded) or letters < 0.5 * len(decoded.replace(" ", "")):
        return None
    return decoded
