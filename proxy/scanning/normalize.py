"""Text normalisation ahead of injection detection.

Attackers hide instructions from keyword filters with tricks that a language model still reads through:
invisible characters, look-alike letters from other scripts, full-width or "mathematical" letters,
letter-spaced words and encoded segments. ``normalize`` undoes those tricks so that rules and the
classifier see one plain, case-folded form, and reports which tricks it met: the trick itself is a signal.

Pure: text in, ``Normalized`` out. The expensive steps run only where a cheap check says they could
change something: ASCII text has no invisible, tag, compatibility or look-alike characters; the
letter-spacing join runs only where a substring search over one class byte per character finds the shape
of a spaced word, and only there; the decoders look only inside the stretches made of an encoding's
characters (one translation of the UTF-8 bytes and substring searches), and a base64 run is decoded only
when a cheap count over its bytes cannot prove that the result is binary noise (identifiers, paths and
long words are the runs documents are full of); text past ASCII is searched once for invisible characters
before anything is removed.
"""

# The look-alike table and its docs are made of ambiguous letters on purpose.
# ruff: noqa: RUF001, RUF002

from __future__ import annotations

import base64
import binascii
import re
import string
import unicodedata
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import ahocorasick_rs
import regex

HIDDEN_CHARACTERS = "hidden_characters"
TAG_CHARACTERS = "tag_characters"
HOMOGLYPHS = "homoglyphs"
LETTER_SPACING = "letter_spacing"
TURNED = "turned"
LEETSPEAK = "leetspeak"
BASE64 = "base64"
HEX = "hex"
URL_ENCODING = "url_encoding"
ESCAPES = "escapes"

MAX_DEPTH = 2
"""Decoded segments are normalised again, down to this many levels (base64 inside base64, ...)."""

MAX_DECODED_CHARS = 64_000
"""Total decoded text kept per call, so a body full of base64 cannot make the scan quadratic."""

MAX_SEGMENTS = 32

ROT13_TABLE = str.maketrans(
    string.ascii_lowercase + string.ascii_uppercase,
    string.ascii_lowercase[13:]
    + string.ascii_lowercase[:13]
    + string.ascii_uppercase[13:]
    + string.ascii_uppercase[:13],
)
_TURN_CUES = (
    "rot13", "rot-13", "rot 13", "rot_13", "caesar", "cipher", "backwards", "right to left",
    "right-to-left", "in reverse", "reverse this", "reverse it", "reverse the text", "reverse each",
    "reverse every", "reversed text", "text reversed", "reverse order", "reversed order", "reversing",
)  # fmt: skip
"""Words that ask a reader to undo a turning: a model follows ROT13 or reversed text when told to read it
so, and a text that does not say so reads as the noise it is."""
_CUES = ahocorasick_rs.AhoCorasick(_TURN_CUES, implementation=ahocorasick_rs.Implementation.DFA)
_ASCII_CUES = ahocorasick_rs.BytesAhoCorasick(
    [cue.encode("ascii") for cue in _TURN_CUES], implementation=ahocorasick_rs.Implementation.DFA
)
_LEET = str.maketrans("013457@$", "oieastas")
_LEET_RUN = re.compile(r"[g-z][013457@$]+[a-z]|[a-z][013457@$]+[g-z]")
"""Digits or signs standing for letters inside a word ("pr3v10us"), which a model reads unasked; a letter
beside them past ``f``, so that hex digests are no leetspeak."""
LEET_RUNS = 2
"""A single one is a version string or a name (ipv4, s3, log4j), read as it is."""
_LEET_SHAPES = bytes(
    ord("a") if chr(byte) in string.ascii_lowercase else ord("1") if chr(byte) in "013457@$" else ord(" ")
    for byte in range(256)
)
"""An ASCII text's lower-case letters as ``a``, its leet signs as ``1``, anything else a space."""
TURN_REACH = 1024
"""How far from a word asking for it a turning is undone: what it points at stands beside it."""
LEET_REACH = 256
"""How far from leetspeak it is read as letters: a sentence's reach."""
TURNED_WINDOWS = 8
"""Windows of a text read turned, at most: a document that says "cipher" on every page is read turned
where it first does, not whole three times over."""
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

_HEX_CANDIDATE = re.compile(rb"(?<![0-9A-Za-z])(?:\\x|0x)?(?:[0-9a-fA-F]{2}(?:\\x|0x|[ :])?){8,}")
_HEX_NOISE = re.compile(r"\\x|0x|[ :]")
# Three percent-escapes in one stretch without whitespace. Led by a plain "%" (not a repeated group), so
# the search skips ahead to each "%" instead of trying every position.
_URL_ENCODED = re.compile(r"%[0-9a-fA-F]{2}[^%\s]*(?:%[0-9a-fA-F]{2}[^%\s]*){2}")
# JSON and JavaScript string escapes: \uXXXX (a surrogate pair as two), and the one-letter ones. Text past
# ASCII inside a JSON document a tool returns is usually written this way. Led by its literal, the search
# tells a text without "\u" three times faster than `"\\u" in text`, whose search steps through prose.
_UNICODE_ESCAPE = re.compile(r"\\u[0-9a-fA-F]{4}")
_STRING_ESCAPE = re.compile(
    r"\\(?:u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|[nrtbf\"/\\])"
)
_ONE_LETTER_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "/": "/", "\\": "\\"}


@dataclass(frozen=True, slots=True)
class Normalized:
    """``texts[0]`` is the whole input in normal form; further entries are decoded or smuggled
    segments, each in normal form too. ``signals`` names the obfuscations found."""

    texts: tuple[str, ...]
    signals: frozenset[str]
    turned: tuple[str, ...] = ()
    """``texts[0]`` as a reader undoing a turning reads it (``turned``): for phrase rules, which noise
    does not match, not for a classifier, which has not learnt what noise is."""

    @property
    def text(self) -> str:
        return self.texts[0]


def normalize(text: str, *, max_depth: int = MAX_DEPTH) -> Normalized:
    """Normalise ``text`` and every encoded segment in it (to ``max_depth`` levels)."""
    texts: list[str] = []
    signals: set[str] = set()
    budget = [MAX_DECODED_CHARS]
    _normalize_into(text, max_depth, texts, signals, budget)
    forms = tuple(form for text in texts for form in turned(text, signals))
    return Normalized(tuple(texts), frozenset(signals), forms)


def turned(plain: str, signals: set[str]) -> tuple[str, ...]:
    """``plain`` (in normal form) around each word asking for a turning to be undone (``TURN_REACH`` each
    way) undone from ROT13, read backwards and read with each word backwards; and around its leetspeak
    (``LEET_REACH``), where it holds enough of it (``LEET_RUNS``), read as letters."""
    forms: list[str] = []
    ascii_text = plain.encode("ascii") if plain.isascii() else None
    cues = (
        _ASCII_CUES.find_matches_as_indexes(ascii_text)
        if ascii_text is not None
        else _CUES.find_matches_as_indexes(plain)
    )
    cued = _windows([(start, end) for _, start, end in cues], len(plain), TURN_REACH)
    for start, end in cued[:TURNED_WINDOWS]:
        window = plain[start:end]
        words_backwards = " ".join(word[::-1] for word in window.split(" "))
        forms += [window.translate(ROT13_TABLE), window[::-1], words_backwards]
        signals.add(TURNED)
    runs = _leet_runs(plain, ascii_text)
    if len(runs) >= LEET_RUNS:
        windows = _windows(runs, len(plain), LEET_REACH)[:TURNED_WINDOWS]
        forms += [plain[start:end].translate(_LEET) for start, end in windows]
        signals.add(LEETSPEAK)
    return tuple(forms)


def _normalize_into(text: str, depth: int, texts: list[str], signals: set[str], budget: list[int]) -> None:
    if text.isascii():
        smuggled: list[str] = []
        visible = folded = text
    else:
        # Tag characters are invisible ones too: one search tells whether there is anything to remove.
        smuggled = []
        visible = text
        if _INVISIBLE.search(text):
            smuggled = [decode_tag_run(run) for run in _TAG_BLOCK.findall(text)]
            visible = _INVISIBLE.sub("", text)
            signals.add(HIDDEN_CHARACTERS)
        visible = unicodedata.normalize("NFKC", visible)
        folded = fold_homoglyphs(visible)
        if folded != visible:
            signals.add(HOMOGLYPHS)
    decoded = _decoded_segments(visible, signals) if depth > 0 else []
    plain = folded.casefold()
    despaced = despace(plain) if _may_be_letter_spaced(visible) else plain
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


def _leet_runs(plain: str, ascii_text: bytes | None) -> list[tuple[int, int]]:
    """Where ``plain`` (its bytes where it is ASCII, else None) has signs standing for letters inside a
    word (``_LEET_RUN``). In ASCII, each letter a sign follows is found by a bytes search and the run
    looked at from there: the pattern, which tries two branches at every place, costs far more."""
    if ascii_text is None:
        return [match.span() for match in _LEET_RUN.finditer(plain)]
    shapes = ascii_text.translate(_LEET_SHAPES)
    runs = []
    position = shapes.find(b"a1")
    while position >= 0:
        end = position + 2
        while shapes[end : end + 1] == b"1":
            end += 1
        if shapes[end : end + 1] == b"a" and max(ascii_text[position], ascii_text[end]) >= ord("g"):
            runs.append((position, end + 1))
        position = shapes.find(b"a1", end)
    return runs


def _windows(spans: list[tuple[int, int]], length: int, reach: int) -> list[tuple[int, int]]:
    """``spans`` widened by ``reach`` each way within a text of ``length``, those that then meet merged."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        low, high = max(0, start - reach), min(length, end + reach)
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def decode_tag_run(run: str) -> str:
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
    """Join letter-spaced words: "i g n o r e" becomes "ignore". Every match starts where
    ``_spaced_shapes`` finds the shape, so the regex is tried only there (left to right, each after the
    last match, as a substitution over the whole text would find them): a long text with one "a b c" in
    it is not searched position by position."""
    parts: list[str] = []
    done = 0
    for start in _spaced_shapes(text):
        match = _LETTER_SPACED.match(text, start) if start >= done else None
        if match is not None:
            parts += [text[done:start], _SPACED_SEPARATORS.sub("", match.group())]
            done = match.end()
    return "".join([*parts, text[done:]]) if parts else text


def _may_be_letter_spaced(text: str) -> bool:
    """Whether three single letters stand one separator apart somewhere (``_spaced_shapes``): an
    over-approximation of ``_LETTER_SPACED``, so where it finds nothing the regex is not run."""
    return next(_spaced_shapes(text), None) is not None


def _spaced_shapes(text: str) -> Iterator[int]:
    """Where three single letters stand one separator apart (the shape of "i g n"), with no ASCII letter
    or digit just before the first or just after the third: every match of ``_LETTER_SPACED`` starts at
    one of them. Every character past ASCII counts as a letter. The text is turned into one class byte
    per character (``_SPACING_CLASSES``; UTF-8 continuation bytes dropped) and the shape is looked for as
    a substring, all in C. In ASCII text the letters and digits around the shape are told apart in the
    class bytes too (``_ASCII_SPACING_CLASSES``), and the regex module tries its lookarounds only where the
    shape stands: prose holds a shape at nearly every one-letter word ("behind a reverse"), each of which
    was looked at in Python."""
    if text.isascii():
        classes = text.encode("ascii").translate(_ASCII_SPACING_CLASSES)
        for shape in _ASCII_SPACED_SHAPE.finditer(classes, overlapped=True):
            yield shape.start()
        return
    classes = text.encode("utf-8", "surrogatepass").translate(_SPACING_CLASSES, _UTF8_CONTINUATION)
    found = classes.find(_SPACED_SHAPE)
    while found != -1:
        before, after = found - 1, found + len(_SPACED_SHAPE)
        if (before < 0 or not _is_ascii_alnum(text[before])) and (
            after >= len(text) or not _is_ascii_alnum(text[after])
        ):
            yield found
        found = classes.find(_SPACED_SHAPE, found + 1)


def _is_ascii_alnum(char: str) -> bool:
    return char.isascii() and char.isalnum()


def _byte_table(characters: str) -> bytes:
    """A ``bytes.translate`` table from UTF-8 bytes to 1 for the ASCII characters given, 0 for the others
    (bytes of characters past ASCII included)."""
    return bytes(chr(byte) in characters for byte in range(256))


def _runs(encoded: bytes, member: bytes, minimum: int) -> Iterator[tuple[int, int]]:
    """(start, end) of every stretch of at least ``minimum`` bytes of ``encoded`` that ``member`` (a
    ``_byte_table``) holds. Substring searches in C: the first ``minimum`` members in a row found at or
    after the end of a stretch start the next one (a member just before them would start an earlier
    match)."""
    inside = encoded.translate(member)
    shortest = b"\1" * minimum
    start = inside.find(shortest)
    while start != -1:
        end = inside.find(b"\0", start + minimum)
        if end == -1:
            end = len(inside)
        yield start, end
        start = inside.find(shortest, end)


_ASCII_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_DIGITS = "0123456789"
_SPACING_CLASSES = bytes(
    ord("L")
    if byte >= 0xC0 or chr(byte) in _ASCII_LETTERS
    else ord("S")
    if chr(byte) in " .-_*"
    else ord("O")
    for byte in range(256)
)
"""Letter (an ASCII letter, or the lead byte of any character past ASCII), separator, or other."""
_UTF8_CONTINUATION = bytes(range(0x80, 0xC0))
_SPACED_SHAPE = b"LSLSL"
_ASCII_SPACING_CLASSES = bytes(
    ord("D") if chr(byte) in _DIGITS else _SPACING_CLASSES[byte] for byte in range(256)
)
"""``_SPACING_CLASSES`` with the ASCII digits a class of their own, "D": for ASCII text, where "L" is then
exactly an ASCII letter, and "L" or "D" an ASCII letter or digit."""
_ASCII_SPACED_SHAPE = regex.compile(rb"(?<![LD])LSLSL(?![LD])")
_MIN_BASE64 = 16
_BASE64_ALPHABET = _byte_table(_ASCII_LETTERS + _DIGITS + "+/_-")
"""Standard and URL-safe base64, without the padding."""
_HEX_OR_SEPARATOR = _byte_table("0123456789abcdefABCDEFx\\ :")
"""The characters a ``_HEX_CANDIDATE`` match is made of."""
_MIN_HEX_PAIRS = 8
_URL_SAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_CONTROL_BYTES = bytes(byte for byte in [*range(0x20), 0x7F] if chr(byte) not in "\t\n\r")
_LETTER_BYTES = _ASCII_LETTERS.encode()


def _base64_candidates(encoded: bytes) -> Iterator[str]:
    """Every run of 16 or more base64-alphabet characters with the "=" (at most two) padding it, save
    those ``_may_be_text`` proves cannot decode to text."""
    for start, end in _runs(encoded, _BASE64_ALPHABET, _MIN_BASE64):
        if (end - start) % 4 != 1 and _may_be_text(encoded[start:end]):
            padding = 2 if encoded.startswith(b"==", end) else 1 if encoded.startswith(b"=", end) else 0
            yield encoded[start : end + padding].decode("ascii")


def _may_be_text(run: bytes) -> bool:
    """Whether the decoding of ``run`` (base64 whose length is not one more than a multiple of four)
    could pass ``_as_text``. Most runs of a document are identifiers, paths and long words whose
    "decoding" is binary noise: the first two characters alone settle most of them (``_NO_TEXT_START``),
    and the others have only their whole quadruples decoded (one C call, no exception on the common
    paths). A run is refused only where that proves ``_as_text`` would refuse its full decoding, which
    has at most two bytes more: never on a guess, so no encoded segment is lost."""
    if starts_binary(run[0], run[1]):
        return False
    quads = len(run) // 4 * 4
    raw = binascii.a2b_base64(run[:quads].translate(_URL_SAFE_TO_STANDARD))
    more = (len(run) - quads) * 3 // 4
    if not raw.isascii():
        # Most runs are names whose decoding is far from UTF-8: a byte that never starts a character
        # where one must proves the error early without raising it.
        early = _SURE_UTF8_ERROR.search(raw)
        if early is not None and early.start() < len(raw) - 4:
            return False
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as error:
            return error.start >= len(raw) - 3  # only a character cut by the end of the quadruples
        return True
    controls = len(raw) - len(raw.translate(None, _CONTROL_BYTES))
    letters = len(raw) - len(raw.translate(None, _LETTER_BYTES))
    # _as_text: at most 5 % unprintable characters, letters at least half of the characters but spaces.
    return 20 * controls <= len(raw) + more and 2 * (letters + more) >= len(raw) - raw.count(b" ")


# A byte no UTF-8 text holds; a continuation byte at the start or after an ASCII one; a lead byte before
# an ASCII or a lead byte. The error it shows is at the match's start or the byte after, at the latest.
_SURE_UTF8_ERROR = re.compile(
    rb"[\xc0\xc1\xf5-\xff]|(?:^|[\x00-\x7f])[\x80-\xbf]|[\xc2-\xf4][\x00-\x7f\xc0-\xff]"
)


def _sextets() -> dict[int, int]:
    """The value of each base64 character, standard and URL-safe."""
    standard = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return {**{char: value for value, char in enumerate(standard)}, ord("-"): 62, ord("_"): 63}


def _no_text_starts() -> frozenset[int]:
    """The first two characters of a run, as ``first << 8 | second``, that fix a sure UTF-8 error (the
    kinds ``_SURE_UTF8_ERROR`` finds) in the first two decoded bytes. They give the first byte and the
    high half of the second, which says whether the second continues a character: a first byte that
    never starts one, an ASCII byte before a continuation byte, or a lead byte before anything else.
    Most runs of a document, names in lowercase, start so."""
    sextets = _sextets()
    starts = set()
    for first, high in sextets.items():
        for second, low in sextets.items():
            byte = high << 2 | low >> 4
            continued = 0x8 <= low & 0xF <= 0xB
            if byte in (0xC0, 0xC1) or byte >= 0xF5 or 0x80 <= byte <= 0xBF or (byte < 0x80) == continued:
                starts.add(first << 8 | second)
    return frozenset(starts)


_NO_TEXT_START = _no_text_starts()


def starts_binary(first: int, second: int) -> bool:
    """Whether base64 whose first two characters have these codes (standard or URL-safe alphabet)
    decodes to bytes no UTF-8 text starts with (``_no_text_starts``)."""
    return first << 8 | second in _NO_TEXT_START


def _hex_candidates(encoded: bytes) -> Iterator[str]:
    """Every match of ``_HEX_CANDIDATE``, looked for only inside the stretches made of its characters
    (the lookbehind still sees the byte before a stretch)."""
    for start, end in _runs(encoded, _HEX_OR_SEPARATOR, 2 * _MIN_HEX_PAIRS):
        for match in _HEX_CANDIDATE.finditer(encoded, start, end):
            yield match.group().decode("ascii")


def _decoded_segments(text: str, signals: set[str]) -> list[str]:
    segments: list[str] = []
    encoded = text.encode("utf-8", "surrogatepass")
    for candidate in _base64_candidates(encoded):
        decoded = _decode_base64(candidate)
        if decoded is not None:
            signals.add(BASE64)
            segments.append(decoded)
    for candidate in _hex_candidates(encoded):
        decoded = _decode_hex(candidate)
        if decoded is not None:
            signals.add(HEX)
            segments.append(decoded)
    if text.count("%") >= 3 and _URL_ENCODED.search(text):
        decoded_url = urllib.parse.unquote(text)
        if decoded_url != text:
            signals.add(URL_ENCODING)
            segments.append(decoded_url)
    if _UNICODE_ESCAPE.search(text):
        signals.add(ESCAPES)
        segments.append(_STRING_ESCAPE.sub(_unescape, text))
    return segments


def _unescape(match: re.Match[str]) -> str:
    escape = match.group()
    if escape[1] != "u":
        return _ONE_LETTER_ESCAPES[escape[1]]
    if len(escape) == 12:  # a surrogate pair
        high, low = int(escape[2:6], 16), int(escape[8:12], 16)
        return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
    return chr(int(escape[2:], 16))


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
