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
import html
import itertools
import quopri
import re
import string
import unicodedata
import urllib.parse
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import ahocorasick_rs
import numpy as np
import regex

HIDDEN_CHARACTERS = "hidden_characters"
TAG_CHARACTERS = "tag_characters"
HOMOGLYPHS = "homoglyphs"
LETTER_SPACING = "letter_spacing"
TURNED = "turned"
LEETSPEAK = "leetspeak"
ACROSTIC = "acrostic"
BASE64 = "base64"
HEX = "hex"
URL_ENCODING = "url_encoding"
ESCAPES = "escapes"
QUOTED_PRINTABLE = "quoted_printable"
HTML_ENTITIES = "html_entities"
BASE32 = "base32"
BASE58 = "base58"
BINARY_DIGITS = "binary_digits"
MORSE = "morse"
UUENCODE = "uuencode"
CHARACTER_CODES = "character_codes"

MAX_DEPTH = 2
"""Decoded segments are normalised again, down to this many levels (base64 inside base64, ...)."""

MAX_DECODED_CHARS = 64_000
"""Total decoded text kept per call, so a body full of base64 cannot make the scan quadratic."""

MAX_SEGMENTS = 32


def caesar_table(letters: int, digits: int = 0) -> dict[int, int]:
    """The translation that moves each ASCII letter ``letters`` places along the alphabet, in its case,
    and each digit ``digits`` places along the digits, both wrapping around (a negative count moves
    back)."""
    lower, upper, numerals = string.ascii_lowercase, string.ascii_uppercase, string.digits
    letters, digits = letters % 26, digits % 10
    return str.maketrans(
        lower + upper + numerals,
        lower[letters:]
        + lower[:letters]
        + upper[letters:]
        + upper[:letters]
        + numerals[digits:]
        + numerals[:digits],
    )


ROT13_TABLE = caesar_table(13)
ROT47_TABLE = str.maketrans({code: 33 + (code - 33 + 47) % 94 for code in range(33, 127)})
"""ROT47: each printable ASCII character but the space moved 47 places along them (its own inverse)."""
_TURN_CUES = (
    "rot13", "rot-13", "rot 13", "rot_13", "caesar", "cipher", "backwards", "backward", "right to left",
    "right-to-left", "in reverse", "reverse this", "reverse it", "reverse the text", "reverse each",
    "reverse every", "reversed text", "text reversed", "reverse order", "reversed order", "reversing",
    "atbash", "last to first", "end to start", "upside down", "from the end", "from end to",
    "places in the alphabet", "positions in the alphabet", "letters in the alphabet", "down the alphabet",
    "up the alphabet", "back in the alphabet", "along the alphabet", "forward in the alphabet",
    "letters later", "letters earlier", "letters back", "letters forward", "places back", "places forward",
    "positions back", "positions forward",
    *(f"rot{joint}{digit}" for joint in ("", "-", " ", "_") for digit in "123456789"),
    "à l'envers", "a l'envers", "à l’envers", "déchiffr", "décod", "décrypt", "renvers", "rückwärts",
    "rueckwaerts",
    "entschlüssel", "dekodier", "umgekehrt", "spiegel", "al revés", "al reves", "descifr", "decodific",
    "ao contrário", "de trás para frente", "decifr", "al contrario", "rovescia", "наоборот",
    "задом наперёд", "задом наперед", "расшифру", "декодиру", "переверн", "倒过来", "反过来", "倒序", "解码",
    "解密", "反转", "逆から", "逆さ", "デコード", "復号", "解読",
)  # fmt: skip
"""Words that ask a reader to undo a turning, in the languages of the rule pack: a model follows ROT13,
a shift or reversed text when told to read it so, and a text that does not say so reads as the noise it
is. Looked for as parts of words, so each stem covers its forms ("déchiffr" "déchiffrez", "spiegel"
"spiegelverkehrt")."""
_ASKING_CUES = (
    "decode", "decipher", "decrypt", "unscramble", "descramble", "translate", "flip", "mirror", "invert",
    "shift", "rotat", "decoding", "rot", "reverse", "offset",
)  # fmt: skip
"""Words that ask for a turning only where they start a word and point at what to turn ("decode this:",
"flip the text below", "shift each letter by 3", "rotated by three", "rot -5"): as a word alone they
are every codec's and editor's documentation."""
_UNITS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
)  # fmt: skip
_NUMBER_WORDS = {word: value for value, word in enumerate(_UNITS)} | {
    f"twenty{joint}{word}": 20 + value
    for joint in ("-", " ", "")
    for value, word in enumerate(_UNITS[1:6], 1)
}
"""Shifts written as words ("a shift of three", "shifted back by twenty-one")."""
_AMOUNT = r"(?:\d{1,2}\b|\b(?:" + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True)) + r")\b)"
_NUMBER = r"(?:[-−]\s?)?" + _AMOUNT
_POINTING = re.compile(
    r"(?:s|d|e|es|ed|ing|ped|ping|red|ring|ion|ions|al)?\s*(?::|=|"
    + _NUMBER
    + r"|\b(?:this|that|it|these|those|following|below|above|here|each|every|all|and|then|from|back"
    r"|backwards?|letters?|by|of|left|right|forwards?|down|up|minus|negative|key|places|positions|steps"
    r"|the\s+(?:following|text|message|string|line|words?|sentence|letters?|characters?|instructions?"
    r"|note|payload|alphabet))\b)"
)
"""What follows a word of ``_ASKING_CUES`` that asks for a turning: an ending, then what it points at
(something to turn, a direction or an amount)."""
_ACROSTIC_CUES = (
    "first letter", "first character", "initial letter", "initials of", "acrostic", "first word of each",
    "first words of", "première lettre", "premières lettres", "acrostiche", "anfangsbuchstaben",
    "ersten buchstaben", "akrostichon", "primera letra", "primeras letras", "acróstico", "primeira letra",
    "primeiras letras", "prima lettera", "prime lettere", "acrostico", "первые буквы", "первая буква",
    "первых букв", "акростих", "首字母", "第一个字", "藏头", "頭文字", "最初の文字", "last letter",
    "last character", "final letter", "final character", "ending letter", "end letter", "last word of each",
    "last words of", "letter of each", "letters of each", "letter of every", "letters of every",
    "dernière lettre", "dernières lettres", "letzten buchstaben", "letzte buchstabe", "última letra",
    "últimas letras", "ultima lettera", "ultime lettere", "последние буквы", "последняя буква",
    "последних букв", "最后一个字", "尾字", "最後の文字",
)  # fmt: skip
"""Words that ask a reader to read the heads or tails of lines, sentences or words in a row: an
acrostic is read only where a text asks for it, as a turning is."""
_CUE_WORDS = _TURN_CUES + _ASKING_CUES + _ACROSTIC_CUES
_ASCII_CUE_WORDS = tuple(cue for cue in _CUE_WORDS if cue.isascii())
# The longest cue at a place: "rotate" is the asking "rotat", which points past its ending, not "rot".
_CUES = ahocorasick_rs.AhoCorasick(
    _CUE_WORDS,
    matchkind=ahocorasick_rs.MatchKind.LeftmostLongest,
    implementation=ahocorasick_rs.Implementation.DFA,
)
_ASCII_CUES = ahocorasick_rs.BytesAhoCorasick(
    [cue.encode("ascii") for cue in _ASCII_CUE_WORDS],
    matchkind=ahocorasick_rs.MatchKind.LeftmostLongest,
    implementation=ahocorasick_rs.Implementation.DFA,
)
_ASKS_ACROSTIC = frozenset(_ACROSTIC_CUES)
_ASKS_IF_POINTING = frozenset(_ASKING_CUES)
_SHIFT_NAMING = (
    "rot", "shift", "caesar", "rotat", "offset", "key", "mov", "advanc", "places", "positions", "letters",
)  # fmt: skip
"""Words that lead a shift named ("shift each letter by 3"); a shift whose amount comes first is followed
by one of ``_SHIFT_UNITS`` ("moved five places")."""
_SHIFT_UNITS = ("places", "positions", "letters", "steps")
_SHIFT_NAMED = re.compile(
    r"\b(?:"
    + "|".join(_SHIFT_NAMING)
    + r")[^.\n\d]{0,24}?("
    + _NUMBER
    + r")"
    + r"|("
    + _AMOUNT
    + r")\s*(?:"
    + "|".join(_SHIFT_UNITS)
    + r")\b"
)
"""A shift a text names, in digits or words, either sign ("shift each letter by 3", "rot-5", "caesar
cipher, key 7", "a shift of three", "shifted back by twenty-one", "moved five places")."""
_DEFAULT_SHIFT = 3
"""Caesar's own shift, which a model assumes where a text names none."""
_ATBASH_TABLE = str.maketrans(string.ascii_lowercase, string.ascii_lowercase[::-1])
_LEET_SIGNS = "013457@$!|"
_LEET = str.maketrans(_LEET_SIGNS, "oieastasil")
_LEET_OTHER = str.maketrans("1|", "li")
"""The other letter each ambiguous sign stands for ("a11" all, "|gnore" ignore): a word takes it where
only it spells a word of ``_GLUED_WORDS`` (``_leet_word``)."""
LEET_RUNS = 2
"""A single one is a version string or a name (ipv4, s3, log4j), read as it is."""
_LEET_SHAPES = bytes(
    ord("a") if chr(byte) in string.ascii_lowercase else ord("1") if chr(byte) in _LEET_SIGNS else ord(" ")
    for byte in range(256)
)
"""An ASCII text's lower-case letters as ``a``, its leet signs as ``1``, anything else a space."""
_LETTER_SHAPE = ord("a")
_SIGN_SPACING = 128
"""Bytes of ASCII text per sign up to which each sign is looked at in Python (``_leet_runs``): past that
(numbers, digests) only those a letter stands before are, found by the slower bytes search."""
TURN_REACH = 1024
"""How far from a word asking for it a turning is undone: what it points at stands beside it."""
LEET_REACH = 256
"""How far from leetspeak it is read as letters: a sentence's reach."""
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

# Three or more single letters with a separator (one to three of space, dot, dash, underscore, star,
# slash, bar, plus, tilde, comma, colon) after each: "i g n o r e", "i.g.n.o.r.e", "i--g--n", "i. g. n".
SPACING_SEPARATORS = " .-_*/|+~,:"
_LETTER_SPACED = re.compile(
    rf"(?<![^\W_])(?:[^\W\d_][{re.escape(SPACING_SEPARATORS)}]{{1,3}}){{2,}}[^\W\d_](?![^\W_])"
)
_SPACING_SEPARATOR_RUN = re.compile(rf"[{re.escape(SPACING_SEPARATORS)}]+")


def join_spaced(run: str) -> str:
    """A letter-spaced run (a ``_LETTER_SPACED`` match) as a reader joins it: the separator that stands
    most often between its letters (the first of those that stand as often) joins them, any other marks
    a gap between words ("i-g-n-o-r-e a-l-l", "i g n o r e  a l l": "ignore all")."""
    separators = _SPACING_SEPARATOR_RUN.findall(run)
    # Counted once: a count a separator, over a run of thousands, took minutes. Ties go to the first seen.
    joining = Counter(separators).most_common(1)[0][0]
    joined = [run[0]]
    position = 1
    for separator in separators:
        position += len(separator)
        joined.append(("" if separator == joining else " ") + run[position])
        position += 1
    return "".join(joined)


_HEX_CANDIDATE = re.compile(rb"(?<![0-9A-Za-z])(?:\\x|0x)?(?:[0-9a-fA-F]{2}(?:, ?0x|, ?|\\x|0x|[ :\-])?){8,}")
_HEX_NOISE = re.compile(r"\\x|0x|[ :,\-]")
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
# A one-letter escape written out against a word (`\nIgnore all previous...`) hides the word's start from a
# rule's word boundary: such a text is read unescaped, as one with a `\u` escape is.
_GLUED_ESCAPE = re.compile(r"\\[nrtbf](?=[^\W\d_])")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_ONE_LETTER_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "/": "/", "\\": "\\"}


@dataclass(frozen=True, slots=True)
class Normalized:
    """``texts[0]`` is the whole input in normal form; further entries are decoded or smuggled
    segments, each in normal form too. ``signals`` names the obfuscations found."""

    texts: tuple[str, ...]
    signals: frozenset[str]
    turned: tuple[str, ...] = ()
    """``texts`` as a reader undoing a turning reads them (``turned``): for phrase rules, which noise
    does not match, not for a classifier, which has not learnt what noise is."""
    readings: tuple[str, ...] = ()
    """The reading each of ``turned`` is (``TURNED``, ``LEETSPEAK``, ``ACROSTIC``, ``LETTER_SPACING``): a
    word asking for a turning is no obfuscation, so a reading's signal is the text's only where a rule
    finds in that reading what its plain forms do not hold."""

    @property
    def text(self) -> str:
        return self.texts[0]


def normalize(text: str, *, max_depth: int = MAX_DEPTH) -> Normalized:
    """Normalise ``text`` and every encoded segment in it (to ``max_depth`` levels)."""
    texts: list[str] = []
    originals: list[str] = []
    signals: set[str] = set()
    budget = [MAX_DECODED_CHARS]
    if not text.isascii():
        # A JSON body may carry a lone surrogate ("\ud800"): read as the replacement character a decoder
        # puts in its place, one for one, since the searches below take only text that encodes.
        text = _LONE_SURROGATE.sub("\ufffd", text)
    _normalize_into(text, max_depth, texts, originals, signals, budget)
    read = [
        reading
        for plain, original in zip(texts, originals, strict=True)
        for reading in turned(plain, signals, original)
    ]
    return Normalized(
        tuple(texts), frozenset(signals), tuple(form for _, form in read), tuple(name for name, _ in read)
    )


def turned(plain: str, signals: set[str], original: str | None = None) -> list[tuple[str, str]]:
    """``plain`` (in normal form; ``original`` before it was case-folded and its spaced letters joined)
    as a reader undoing a turning reads it, each reading with its signal: around each word asking for one
    (``TURN_REACH`` each way), undone from ROT13, from ROT47 (``original``'s, whose case it needs), from
    Atbash, from the Caesar shifts it names (in digits or words, each way; else Caesar's own where it
    speaks of shifts), from the shift each piece's letters say they are in (``_guessed_shifts``), read
    backwards and read with each word backwards; around its leetspeak (``LEET_REACH``), where it holds
    enough of it (``LEET_RUNS``), read as letters; the first and last letters and words of its lines,
    sentences and words read in a row (an acrostic), where it asks for that. Every window of a kind is
    read, joined into one span: no number of decoy cues puts a later one out of reach, and the span is
    never longer than the text, so each character is read a fixed number of times more at most."""
    read: list[tuple[str, str]] = []
    cues, asks_acrostic = _cue_spans(plain)
    if cues:
        span = _span(plain, cues, TURN_REACH)
        # The span backwards holds its words backwards in reverse order: one slice, not one a word.
        words_backwards = " ".join(reversed(span[::-1].split(" ")))
        forms = [span.translate(ROT13_TABLE), span[::-1], words_backwards, span.translate(_ATBASH_TABLE)]
        forms += [span.translate(_SHIFT_TABLES[shift]) for shift in _named_shifts(span)]
        # Two grids of pieces half a piece apart: a short shifted sentence fills most of a piece of one.
        forms += [_guessed_shifts(span), _guessed_shifts(span, GUESS_PIECE // 2)]
        if original is not None:
            # ROT47 turns upper and lower case apart: it is undone on the text as written (where lower
            # casing changed its length, the cues found there are a character or so off: within reach).
            same = len(original) == len(plain)
            source = _span(original, cues if same else _cue_spans(original.lower())[0], TURN_REACH)
            forms.append(source.translate(ROT47_TABLE).casefold())
        read += [(TURNED, form) for form in forms if form]
    runs = _leet_runs(plain)
    if len(runs) >= LEET_RUNS:
        read.append((LEETSPEAK, _as_letters(_span(plain, runs, LEET_REACH))))
    if LETTER_SPACING in signals:
        read += [(LETTER_SPACING, unglued(word)) for word in _glued_words(plain)]
    acrostic = _acrostic(plain) if asks_acrostic else ""
    if acrostic:
        read.append((ACROSTIC, acrostic))
    return read


def _cue_spans(plain: str) -> tuple[list[tuple[int, int]], bool]:
    """Where ``plain`` asks for a turning (a word of ``_TURN_CUES``, or one of ``_ASKING_CUES`` that
    starts a word and points at something, ``_POINTING``), and whether it asks for an acrostic."""
    ascii_text = plain.encode("ascii") if plain.isascii() else None
    words, found = (
        (_ASCII_CUE_WORDS, _ASCII_CUES.find_matches_as_indexes(ascii_text))
        if ascii_text is not None
        else (_CUE_WORDS, _CUES.find_matches_as_indexes(plain))
    )
    cues = [
        (start, end)
        for index, start, end in found
        if words[index] not in _ASKS_ACROSTIC
        and (
            words[index] not in _ASKS_IF_POINTING
            or ((start == 0 or not plain[start - 1].isalpha()) and _POINTING.match(plain, end))
        )
    ]
    return cues, any(words[index] in _ASKS_ACROSTIC for index, _, _ in found)


_SHIFT_TABLES = [caesar_table(-shift) for shift in range(26)]
"""Each shift's table: a letter moved that many places back in the alphabet, so that a text written
shifted forward by it reads plain."""
_ENGLISH_LETTERS = np.log(
    [8.2, 1.5, 2.8, 4.3, 12.7, 2.2, 2.0, 6.1, 7.0, 0.15, 0.77, 4.0, 2.4, 6.7, 7.5, 1.9, 0.095, 6.0, 6.3,
     9.1, 2.8, 0.98, 2.4, 0.15, 2.0, 0.074]
)  # fmt: skip
"""The log of each letter's frequency in English text, in percent."""
_SHIFT_LIKELIHOODS = np.array(
    [[_ENGLISH_LETTERS[(letter - shift) % 26] for shift in range(26)] for letter in range(26)]
)
"""For a letter as written (row) and a shift (column), how English that letter reads shifted back."""
GUESS_PIECE = 64
"""Characters of a span whose shift is guessed together: enough letters to tell English apart, few
enough that a shifted sentence inside plain prose has pieces of its own."""
_MIN_GUESS_LETTERS = 16


def _guessed_shifts(span: str, offset: int = 0) -> str:
    """``span`` with each piece (``GUESS_PIECE`` characters, the first ``offset`` shorter) shifted back by
    the shift under which its letters read most like English (0 for plain text), where it holds
    ``_MIN_GUESS_LETTERS``: a Caesar shift read whatever words name it, or none do, as a model reads it.
    Nothing where no piece is shifted. One count of the letters and one product of arrays, whatever the
    span's length."""
    codes = np.frombuffer(span.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    letters = np.flatnonzero((codes >= ord("a")) & (codes <= ord("z")))
    pieces = (len(codes) + offset) // GUESS_PIECE + 1
    counts = np.bincount(
        (letters + offset) // GUESS_PIECE * 26 + (codes[letters] - ord("a")), minlength=pieces * 26
    ).reshape(pieces, 26)
    shifts = np.argmax(counts @ _SHIFT_LIKELIHOODS, axis=1)
    shifts[counts.sum(axis=1) < _MIN_GUESS_LETTERS] = 0
    if not shifts.any():
        return ""
    # A piece that reads plain beside a shifted one takes its shift: shifted text that starts or ends
    # inside a piece of plain prose is read from its first letter to its last.
    plain = shifts == 0
    shifts[:-1][plain[:-1]] = shifts[1:][plain[:-1]]
    shifts[1:][plain[1:]] = np.maximum(shifts[1:][plain[1:]], shifts[:-1][plain[1:]])
    bounds = [0, *range(GUESS_PIECE - offset, len(span), GUESS_PIECE), len(span)]
    return "".join(
        span[low:high].translate(_SHIFT_TABLES[shift])
        for low, high, shift in zip(bounds, bounds[1:], shifts.tolist(), strict=False)
    )


def _as_letters(span: str) -> str:
    """``span``'s leetspeak read as letters, each word whose signs are ambiguous (``1``, ``|``) as the
    reading that spells a word of ``_GLUED_WORDS`` where only the other one does. Both readings are one
    translation each; they hold their words at the same places, so one split of each pairs them."""
    read = span.translate(_LEET)
    if "1" not in span and "|" not in span:
        return read
    other = span.translate(_LEET_OTHER).translate(_LEET)
    return "".join(
        second
        if first != second and first not in _GLUED_VOCABULARY and second in _GLUED_VOCABULARY
        else first
        for first, second in zip(_LEET_GAPS.split(read), _LEET_GAPS.split(other), strict=True)
    )


_LEET_GAPS = re.compile(r"([^a-z0-9]+)")
"""What stands between words once signs are read as letters: the same in either reading."""


def _span(plain: str, spans: list[tuple[int, int]], reach: int) -> str:
    """Every window of ``spans`` widened by ``reach`` (``_windows``), one line apart."""
    return "\n".join(plain[start:end] for start, end in _windows(spans, len(plain), reach))


ACROSTIC_LINES = 3
"""Lines or sentences whose heads and tails are read in a row, at least: fewer hold no instruction of
words one a line."""
_GLUED_WORDS = (
    "ignore", "disregard", "forget", "override", "bypass", "skip", "drop", "abandon", "reveal", "print",
    "show", "output", "repeat", "tell", "send", "give", "write", "say", "reply", "respond", "leak",
    "exfiltrate", "upload", "delete", "run", "execute", "pretend", "act", "jailbreak", "unrestricted",
    "all", "any", "every", "previous", "prior", "above", "earlier", "original", "initial", "system",
    "developer", "safety", "instructions", "instruction", "directions", "rules", "guidelines", "prompt",
    "prompts", "context", "conversation", "messages", "message", "and", "or", "the", "your", "you", "are",
    "now", "new", "as", "from", "this", "that", "these", "do", "not", "follow", "obey", "with", "only",
    "secret", "secrets", "password", "passwords", "key", "keys", "credentials", "token", "tokens",
    "contents", "content", "of", "to", "a", "an", "in", "on", "be", "is", "it", "i", "me", "my", "will",
    "must", "never", "always", "what", "everything", "told", "given", "mode", "dan", "filter", "filters",
    "restrictions", "admin", "root", "access", "granted", "pwned", "stop", "instead", "text", "ai",
    "assistant", "model", "hidden", "internal", "configuration", "environment", "variables", "file",
    "files", "data", "user", "email", "address", "url", "command", "commands", "shell", "here", "below",
    "orders", "directives", "guidance", "programming", "preceding", "before", "entirely", "attention",
    "pay", "no", "cancel", "rest", "maintenance", "disabled", "emails", "unfiltered",
    "called", "game", "play", "translate", "starting", "for", "at", "by", "users", "phrase", "been", "have",
    "has", "role",
)  # fmt: skip
"""The words injections are written in, for reading letters glued together (an acrostic's, a spaced
word's without its gaps) as words: a reader finds them where they spell an instruction."""
_GLUED_TRIGGERS = ahocorasick_rs.AhoCorasick(
    ["ignore", "disregard", "forget", "override", "bypass", "reveal", "jailbreak", "instruction",
     "pretend", "unrestricted", "exfiltrate", "credentials", "password", "systemprompt"],
)  # fmt: skip
_GLUED_VOCABULARY = frozenset(_GLUED_WORDS)
_LONGEST_GLUED = max(map(len, _GLUED_WORDS))
GLUED_REACH = 96
"""How far from a word that starts an instruction glued letters are read as words."""
_UNKNOWN_LETTER = 3
"""A letter no word covers costs this many words: a reading that covers the letters with known words
wins over one that skips them."""


def _glued_words(plain: str) -> list[str]:
    """The words of ``plain`` (at least ``_GLUED_MIN`` letters) that hold a word starting an instruction:
    letters joined from spacing that marked no gap between words ("i g n o r e a l l ..."), until they
    hold ``MAX_GLUED_LETTERS``."""
    found: dict[str, None] = {}
    done = letters = 0
    for _, start, end in _GLUED_TRIGGERS.find_matches_as_indexes(plain):
        if start < done:
            continue
        while start > 0 and plain[start - 1].isalpha():
            start -= 1
        while end < len(plain) and plain[end].isalpha():
            end += 1
        done = end
        if end - start >= _GLUED_MIN:
            found[plain[start:end]] = None
            letters += end - start
            if letters >= MAX_GLUED_LETTERS:
                break
    return list(found)


_GLUED_MIN = 14
"""Letters of a word read as glued words, at least: more than the longest word that starts an
instruction ("unrestricted", "instructions") with a short one glued on."""


def _acrostic(plain: str) -> str:
    """The heads and tails of ``plain`` in a row: the first and the last words of its lines and of its
    sentences (where they are ``ACROSTIC_LINES`` or more), those that hold a word that starts an
    instruction, and the first and last letters of those and of its words, read as words (``unglued``,
    in one reading, so bounded as one); else nothing."""
    words = _LETTER_WORD.findall(plain)
    letters = ["".join(word[0] for word in words), "".join(word[-1] for word in words)]
    rows = []
    for pieces in (plain.split("\n"), _SENTENCE_BREAK.split(plain)):
        if len(pieces) < ACROSTIC_LINES:
            continue
        found = [piece_words for piece in pieces if (piece_words := _LETTER_WORD.findall(piece))]
        if len(found) < ACROSTIC_LINES:
            continue
        heads, tails = [piece[0] for piece in found], [piece[-1] for piece in found]
        rows += [" ".join(heads), " ".join(tails)]
        letters += ["".join(head[0] for head in heads), "".join(tail[-1] for tail in tails)]
    read = [row for row in rows if _GLUED_TRIGGERS.find_matches_as_indexes(row)]
    return "\n".join([*read, unglued(" ".join(letters))]).strip()


_LETTER_WORD = re.compile(r"[^\W\d_]+")
_SENTENCE_BREAK = re.compile(r"[.!?;。！？]+(?:\s+|$)|\n")
"""Where a sentence ends: its mark and the space after it, or a line break."""


def unglued(letters: str) -> str:
    """``letters`` (glued, lower case) read as the words ``_GLUED_WORDS`` holds, around each word that
    starts an instruction (``GLUED_REACH``): the reading with the fewest words, a letter no word covers
    costing ``_UNKNOWN_LETTER`` (left as it is). Nothing where no such word stands."""
    hits = [(start, end) for _, start, end in _GLUED_TRIGGERS.find_matches_as_indexes(letters)]
    read: list[str] = []
    left = MAX_GLUED_LETTERS
    for start, end in _windows(hits, len(letters), GLUED_REACH):
        if left <= 0:
            break
        read.append(_segmented(letters[start : min(end, start + left)]))
        left -= end - start
    return "\n".join(read)


MAX_GLUED_LETTERS = 4096
"""Letters read as words in one text, at most: the reading costs a few microseconds a letter."""


def _segmented(letters: str) -> str:
    costs = [0] + [len(letters) * _UNKNOWN_LETTER + 1] * len(letters)
    back = [0] * (len(letters) + 1)
    for end in range(1, len(letters) + 1):
        costs[end], back[end] = costs[end - 1] + _UNKNOWN_LETTER, end - 1
        for start in range(max(0, end - _LONGEST_GLUED), end):
            if costs[start] + 1 < costs[end] and letters[start:end] in _GLUED_VOCABULARY:
                costs[end], back[end] = costs[start] + 1, start
    words = []
    end = len(letters)
    while end > 0:
        words.append(letters[back[end] : end])
        end = back[end]
    return " ".join(reversed(words))


def _named_shifts(span: str) -> list[int]:
    """The Caesar shifts ``span`` may be written in, each way: the ones it names (``_SHIFT_NAMED``), else
    Caesar's own where it speaks of shifts at all. ROT13 (its own inverse) is read already."""
    named = set()
    low = _first_shift_named(span)
    for match in itertools.islice(_SHIFT_NAMED.finditer(span, low) if low >= 0 else (), MAX_NAMED_SHIFTS):
        amount = (match.group(1) or match.group(2)).lstrip("-− ")
        named.add((int(amount) if amount.isdigit() else _NUMBER_WORDS[amount]) % 26)
    if not named and any(word in span for word in _SHIFT_WORDS):
        named = {_DEFAULT_SHIFT}
    return sorted({turn for shift in named for turn in (shift, 26 - shift)} - {0, 13, 26})


def _first_shift_named(span: str) -> int:
    """Where in ``span`` the first match of ``_SHIFT_NAMED`` may start, at the earliest; -1 where none can.
    Every match holds one of its words: one of ``_SHIFT_NAMING`` at its start, or one of ``_SHIFT_UNITS``
    after an amount and white space (the first such word's amount stands furthest back: white space
    before a later one holds no earlier word). A substring search for each costs a few microseconds in C,
    where the pattern tries its amounts' words at every place of a span that names no shift."""
    starts = [found for word in _SHIFT_NAMING if (found := span.find(word)) >= 0]
    for unit in _SHIFT_UNITS:
        found = span.find(unit)
        if found >= 0:
            starts.append(len(span[:found].rstrip()) - _LONGEST_AMOUNT)
    return max(0, min(starts)) if starts else -1


_LONGEST_AMOUNT = max(2, *map(len, _NUMBER_WORDS))
"""The most characters an amount (``_AMOUNT``) spans: two digits, or its longest word."""
_SHIFT_WORDS = ("caesar", "shift", "cipher", "rot", "rotate")
MAX_NAMED_SHIFTS = 4
"""Shifts named read, at most, the first a text names: each is two more readings of its windows; a
shift past them (behind decoys) is read by ``_guessed_shifts``."""


def _normalize_into(
    text: str, depth: int, texts: list[str], originals: list[str], signals: set[str], budget: list[int]
) -> None:
    if text.isascii():
        smuggled = ""
        visible = folded = text
    else:
        # Tag characters are invisible ones too: one search tells whether there is anything to remove.
        smuggled = ""
        visible = text
        if _INVISIBLE.search(text):
            # Every run of tag characters read together, in order, as one hidden text: a form each would
            # let a text of tag characters between letters make one form (scanned, and scored by the
            # classifier, alone) for every two characters, and it is as a whole that a model reads them.
            smuggled = decode_tag_run("".join(_TAG_BLOCK.findall(text)))
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
    originals.append(folded)
    if smuggled.strip():
        signals.add(TAG_CHARACTERS)
        hidden = fold_homoglyphs(unicodedata.normalize("NFKC", smuggled))
        texts.append(despace(hidden.casefold()))
        originals.append(hidden)
    for segment in decoded:
        if len(texts) >= MAX_SEGMENTS or budget[0] <= 0:
            break
        segment = segment[: budget[0]]
        budget[0] -= len(segment)
        _normalize_into(segment, depth - 1, texts, originals, signals, budget)


def _leet_runs(plain: str) -> list[tuple[int, int]]:
    """Where ``plain`` has digits or signs standing for letters inside a word ("pr3v10us"), which a model
    reads unasked: a run of ``_LEET_SIGNS`` between two lower-case ASCII letters, one of them past ``f``
    so that hex digests are no leetspeak. Each letter a sign follows is found by a search over one shape
    byte a character (one past ASCII, encoded as "?", is neither a letter nor a sign) and the run looked
    at from there: a pattern, which tries two branches at every place, costs far more. Where signs are
    few (prose), each sign is found instead and the letter before it checked: a search for a sign alone
    skips through the text, where one for a letter then a sign steps through prose a byte at a time
    (``"a1"`` in ``"aaaa aaa"``). In ASCII text a run's last letter may start the next run; in text past
    ASCII runs are apart, each looked for after the last one's end."""
    ascii_text = plain.encode("ascii", "replace")
    apart = not plain.isascii()
    shapes = ascii_text.translate(_LEET_SHAPES)
    signs_first = shapes.count(b"1") * _SIGN_SPACING <= len(shapes)
    sought = b"1" if signs_first else b"a1"
    runs = []
    resume = 0
    position = shapes.find(sought)
    while position >= 0:
        if signs_first:
            if position <= resume or shapes[position - 1] != _LETTER_SHAPE:
                position = shapes.find(sought, position + 1)
                continue
            position -= 1
        end = position + 2
        while shapes[end : end + 1] == b"1":
            end += 1
        if shapes[end : end + 1] == b"a" and max(ascii_text[position], ascii_text[end]) >= ord("g"):
            runs.append((position, end + 1))
            resume = end + apart
            position = shapes.find(sought, resume)
        else:
            position = shapes.find(sought, end)
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


_SHORT_TAG_RUN = 64


def decode_tag_run(run: str) -> str:
    """Unicode tag characters mirror ASCII (U+E0041 is a tagged "A"): text written in them is invisible
    on screen but read by models. A long run is read as an array of code points (it may be a megabyte
    long); a short one, which stands between two letters as often as a disguise puts one there, costs
    less read character by character."""
    if len(run) < _SHORT_TAG_RUN:
        return "".join(chr(ord(char) - 0xE0000) for char in run if 0xE0020 <= ord(char) <= 0xE007E)
    codes = np.frombuffer(run.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    printable = codes[(codes >= 0xE0020) & (codes <= 0xE007E)] - 0xE0000
    return printable.astype(np.uint8).tobytes().decode("ascii")


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
            parts += [text[done:start], join_spaced(match.group())]
            done = match.end()
    return "".join([*parts, text[done:]]) if parts else text


def _may_be_letter_spaced(text: str) -> bool:
    """Whether three single letters stand one to three separators apart somewhere (``_spaced_shapes``):
    an over-approximation of ``_LETTER_SPACED``, so where it finds nothing the regex is not run."""
    return next(_spaced_shapes(text), None) is not None


def _spaced_shapes(text: str) -> Iterator[int]:
    """Where three single letters stand one to three separators apart (the shape of "i g n", "i. g. n"),
    with no ASCII letter or digit just before the first or just after the third: every match of
    ``_LETTER_SPACED`` starts at one of them. Every character past ASCII counts as a letter. The text is
    turned into one class byte per character (``_SPACING_CLASSES``; UTF-8 continuation bytes dropped) and
    searched, in C, for a shape's middle: a separator, a letter, separators, a letter (``_SPACED_TAIL``),
    led by a fixed string the search skips ahead to, where a pattern led by a letter or by a run of
    separators is tried at every place; the separators and the letter before it are checked where one
    is found, which in prose is rare. In ASCII
    text the letters and digits around the shape are told apart in the class bytes too
    (``_ASCII_SPACING_CLASSES``)."""
    ascii_text = text.isascii()
    if ascii_text:
        classes = text.encode("ascii").translate(_ASCII_SPACING_CLASSES)
        tail = _ASCII_SPACED_TAIL
    else:
        classes = text.encode("utf-8", "surrogatepass").translate(_SPACING_CLASSES, _UTF8_CONTINUATION)
        tail = _SPACED_TAIL
    found = tail.search(classes)
    while found is not None:
        first = _first_letter(classes, found.start())
        if first >= 0:
            if ascii_text:
                if first == 0 or classes[first - 1] not in _LETTER_OR_DIGIT_CLASSES:
                    yield first
            elif (first == 0 or not _is_ascii_alnum(text[first - 1])) and (
                found.end() >= len(text) or not _is_ascii_alnum(text[found.end()])
            ):
                yield first
        found = tail.search(classes, found.start() + 1)


def _first_letter(classes: bytes, last_separator: int) -> int:
    """Where the letter stands that one to three separators ending at ``last_separator`` follow, or -1."""
    first = last_separator - 1
    while first >= 0 and classes[first] == _SEPARATOR_CLASS and last_separator - first < 3:
        first -= 1
    return first if first >= 0 and classes[first] == _LETTER_CLASS else -1


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
    if chr(byte) in SPACING_SEPARATORS
    else ord("O")
    for byte in range(256)
)
"""Letter (an ASCII letter, or the lead byte of any character past ASCII), separator, or other."""
_UTF8_CONTINUATION = bytes(range(0x80, 0xC0))
_SPACED_TAIL = regex.compile(rb"SL(?:SSS|SS|S)L")
_LETTER_CLASS, _SEPARATOR_CLASS = ord("L"), ord("S")
_ASCII_SPACING_CLASSES = bytes(
    ord("D") if chr(byte) in _DIGITS else _SPACING_CLASSES[byte] for byte in range(256)
)
"""``_SPACING_CLASSES`` with the ASCII digits a class of their own, "D": for ASCII text, where "L" is then
exactly an ASCII letter, and "L" or "D" an ASCII letter or digit."""
_ASCII_SPACED_TAIL = regex.compile(rb"SL(?:SSS|SS|S)L(?![LD])")
_LETTER_OR_DIGIT_CLASSES = b"LD"
_MIN_BASE64 = 16
_BASE64_ALPHABET = _byte_table(_ASCII_LETTERS + _DIGITS + "+/_-")
"""Standard and URL-safe base64, without the padding."""
_HEX_OR_SEPARATOR = _byte_table("0123456789abcdefABCDEFx\\ :,-./|")
"""The characters a ``_HEX_CANDIDATE`` match, binary octets or morse are made of."""
_MIN_HEX_PAIRS = 8
_URL_SAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_CONTROL_BYTES = bytes(byte for byte in [*range(0x20), 0x7F] if chr(byte) not in "\t\n\r")
_LETTER_BYTES = _ASCII_LETTERS.encode()


def _base64_candidate(encoded: bytes, start: int, end: int) -> str | None:
    """The run ``encoded[start:end]`` of base64's alphabet with the "=" (at most two) padding it, unless
    ``_may_be_text`` proves it cannot decode to text."""
    if (end - start) % 4 != 1 and _may_be_text(encoded[start:end]):
        padding = 2 if encoded.startswith(b"==", end) else 1 if encoded.startswith(b"=", end) else 0
        return encoded[start : end + padding].decode("ascii")
    return None


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


def _segments_of_runs(text: str, encoded: bytes) -> Iterator[tuple[str, str]]:
    """What the runs of each encoding's alphabet decode to, with the signal of each: base64, else base32
    (either case, and digits) or base58 (where the text names it); hex; binary digits; decimal codes
    (where the text names them); morse (its Unicode signs read as ASCII). Each alphabet costs one
    translation and substring searches over the text, and its regexes run only inside its runs."""
    names_base58: bool | None = None
    names_codes: bool | None = None
    for start, end in _runs(encoded, _BASE64_ALPHABET, _MIN_BASE64):
        candidate = _base64_candidate(encoded, start, end)
        decoded = _decode_base64(candidate) if candidate is not None else None
        if decoded is not None:
            yield BASE64, decoded
            continue
        run = encoded[start:end]
        if (run.isupper() or run.islower()) and not run.upper().translate(None, _BASE32_DIGITS):
            decoded = _decode_base32(run.upper().decode("ascii"))
            if decoded is not None:
                yield BASE32, decoded
                continue
        if names_base58 is None:
            names_base58 = _BASE58_NAMED.search(text) is not None
        if names_base58 and not run.translate(None, _BASE58_DIGITS):
            decoded = _decode_base58(run[:_MAX_BASE58].decode("ascii"))
            if decoded is not None:
                yield BASE58, decoded
    # Hex, binary digits, decimal codes and morse signs are all made of ``_CODED_ALPHABET``'s bytes: where
    # it has no run as long as the shortest of theirs, none of theirs is looked for (one translation, not
    # four). Morse spelt past ASCII is read from other bytes, and always looked for.
    coded = next(_runs(encoded, _CODED_ALPHABET, _MIN_CODED), None) is not None
    for start, end in _runs(encoded, _HEX_OR_SEPARATOR, 2 * _MIN_HEX_PAIRS) if coded else ():
        for match in _HEX_CANDIDATE.finditer(encoded, start, end):
            decoded = _decode_hex(match.group().decode("ascii"))
            if decoded is not None:
                yield HEX, decoded
    # Binary digits and decimal codes each in the stretches of their own characters: the regexes, tried
    # at every place of a stretch, never see the numbers, addresses and digests of a document.
    for start, end in _runs(encoded, _BINARY_ALPHABET, _MIN_BINARY) if coded else ():
        for match in _BINARY_RUN.finditer(encoded, start, end):
            decoded = _decode_binary(match.group())
            if decoded is not None:
                yield BINARY_DIGITS, decoded
    for start, end in _runs(encoded, _DECIMAL_ALPHABET, _MIN_DECIMAL) if coded else ():
        # Looked for once a run of codes is found: most texts hold none.
        if names_codes is None:
            lowered = text.lower()
            names_codes = any(name in lowered for name in _CODE_NAMES)
        if not names_codes:
            break
        for match in _DECIMAL_CODES.finditer(encoded, start, end):
            decoded = _decode_decimal(match.group())
            if decoded is not None:
                yield CHARACTER_CODES, decoded
    signs = encoded
    if not text.isascii() and _MORSE_DOTS.search(text) and _MORSE_DASHES.search(text):
        spelt = _MORSE_DASHES.sub("-", _MORSE_DOTS.sub(".", text))
        signs = spelt.encode("utf-8", "surrogatepass").translate(_UNDERSCORE_AS_DASH)
        coded = True
    elif coded and "_" in text:
        # Translated only where morse is looked for: code and docs are full of underscores, and of no run
        # of signs.
        signs = encoded.translate(_UNDERSCORE_AS_DASH)
    for start, end in _runs(signs, _MORSE_ALPHABET, _MIN_MORSE) if coded else ():
        if signs.find(b"-", start, end) >= 0 and signs.find(b".", start, end) >= 0:
            for match in _MORSE_RUN.finditer(signs, start, end):
                decoded = _decode_morse(match.group().decode("ascii"))
                if decoded is not None:
                    yield MORSE, decoded


def _decoded_segments(text: str, signals: set[str]) -> list[str]:
    segments: list[str] = []
    encoded = text.encode("utf-8", "surrogatepass")
    for name, decoded in _segments_of_runs(text, encoded):
        signals.add(name)
        segments.append(decoded)
    # A one-character search is a memchr, where a count or a pattern's search steps through the text a
    # character at a time: most texts hold no "%" and no backslash, and are told so first.
    if "%" in text and text.count("%") >= 3 and _URL_ENCODED.search(text):
        decoded_url = urllib.parse.unquote(text)
        if decoded_url != text:
            signals.add(URL_ENCODING)
            segments.append(decoded_url)
    if "\\" in text:
        if _UNICODE_ESCAPE.search(text):
            signals.add(ESCAPES)
            segments.append(_STRING_ESCAPE.sub(_unescape, text))
        elif glued := _glued_escape_lines(text):
            signals.add(ESCAPES)
            segments.append(_STRING_ESCAPE.sub(_unescape, glued))
    for name, decoded in _spelt_segments(text, encoded):
        signals.add(name)
        segments.append(decoded)
    return segments


def _spelt_segments(text: str, encoded: bytes) -> Iterator[tuple[str, str]]:
    """What quoted-printable, numeric HTML entities and uuencoding read as, with the signal of each: each
    is looked for by a one-character search in C or a search led by its literal, which skips ahead."""
    if "=" in text and _QUOTED_PRINTABLE.search(text):
        decoded = _as_text(quopri.decodestring(encoded))
        if decoded is not None and decoded != text:
            yield QUOTED_PRINTABLE, decoded
    if "&" in text:
        for run in _NUMERIC_ENTITIES.finditer(text):
            decoded = _as_text(html.unescape(run.group()).encode("utf-8", "surrogatepass"))
            if decoded is not None:
                yield HTML_ENTITIES, decoded
    if "\\" in text:
        for run in _OCTAL_ESCAPES.finditer(text):
            decoded = _as_text(bytes(int(code, 8) for code in run.group().split("\\")[1:]))
            if decoded is not None:
                yield CHARACTER_CODES, decoded
    # A uuencoded file's header ends its line: a text of one line holds none.
    for block in _UUENCODED.finditer(text) if "\n" in text else ():
        decoded = _decode_uu(block.group(1))
        if decoded is not None:
            yield UUENCODE, decoded
    for lines in _uu_blocks(text):
        decoded = _decode_uu(lines)
        if decoded is not None:
            yield UUENCODE, decoded


# Three "=XX" in a row: quoted-printable of text that is not plain ASCII (or written so on purpose).
_QUOTED_PRINTABLE = re.compile(r"=[0-9A-Fa-f]{2}=[0-9A-Fa-f]{2}=[0-9A-Fa-f]{2}")
_NUMERIC_ENTITY = r"&#(?:[xX][0-9a-fA-F]{1,6}|[0-9]{1,7});?\s?"
_NUMERIC_ENTITIES = re.compile(f"{_NUMERIC_ENTITY}(?:{_NUMERIC_ENTITY}){{2,}}")
"""Three numeric character references or more in a row, led by one's literal, which the search skips
ahead to."""
_MIN_BINARY = 6 * 7
_BINARY_ALPHABET = _byte_table("01 ,b")
_DECIMAL_ALPHABET = _byte_table("0123456789 ,;")
_MIN_DECIMAL = 6 * 2 + 5
_BINARY_RUN = re.compile(
    rb"(?<![0-9])(?:0b)?[01]+(?:[ ,]{1,2}(?:0b)?[01]+){5,}(?![0-9])|(?<![0-9])[01]{42,}(?![0-9])"
)
"""Binary digits, in six groups or more a space or a comma apart (each maybe led by ``0b``) or in one
run of six 7-bit characters or more, with no choice but where a group ends, so the search backtracks a
group at most; numbers, addresses and versions made of ones and zeros are shorter."""
_BINARY_GROUP = re.compile(rb"(?:0b)?([01]+)")
_BASE32_DIGITS = (string.ascii_uppercase + "234567").encode()
_MORSE_DOTS = re.compile("[·•∙⋅●・]")
_MORSE_DASHES = re.compile("[−—–‒―‐‑]")
"""The dots and dashes morse is written with past ASCII (middle dots, bullets, minus signs, dashes), read
as ``.`` and ``-`` by two substitutions in C, where a translation table is looked up in Python's
dictionary a character."""
_UNDERSCORE_AS_DASH = bytes.maketrans(b"_", b"-")
_MORSE_ALPHABET = _byte_table(".-/| ")
_MIN_MORSE = 24
_CODED_ALPHABET = bytes(
    max(tables)
    for tables in zip(
        _HEX_OR_SEPARATOR, _BINARY_ALPHABET, _DECIMAL_ALPHABET, _MORSE_ALPHABET, _byte_table("_"), strict=True
    )
)
"""Every byte of hex, binary digits, decimal codes and morse (an underscore is read as a dash there)."""
_MIN_CODED = min(2 * _MIN_HEX_PAIRS, _MIN_BINARY, _MIN_DECIMAL, _MIN_MORSE)
_MORSE_RUN = re.compile(rb"[.\-/| ]{24,}")
_MORSE = {
    ".-": "a", "-...": "b", "-.-.": "c", "-..": "d", ".": "e", "..-.": "f", "--.": "g", "....": "h",
    "..": "i", ".---": "j", "-.-": "k", ".-..": "l", "--": "m", "-.": "n", "---": "o", ".--.": "p",
    "--.-": "q", ".-.": "r", "...": "s", "-": "t", "..-": "u", "...-": "v", ".--": "w", "-..-": "x",
    "-.--": "y", "--..": "z", "-----": "0", ".----": "1", "..---": "2", "...--": "3", "....-": "4",
    ".....": "5", "-....": "6", "--...": "7", "---..": "8", "----.": "9",
}  # fmt: skip
_MORSE_WORDS = re.compile(r"\s*[/|]\s*|\s{2,}")
_UUENCODED = re.compile(r"begin [0-7]{3,4} [^\n]*\n((?:[!-`][ -`]*\n){1,2048})")
"""A uuencoded file: its header, then lines each led by its length. Led by the header's literal, which
the search skips ahead to."""
_UU_LINE = re.compile(r"[!-M][ -`]{4,60}(?=\n|\Z)")
"""A line that may be uuencoded: a length (1 to 45 bytes), then the characters of the encoding (no
lower-case letter, which rules out prose at its first word). Matched at the text's start and after each
line break (``_UU_LATER_LINE``): a search for a line start would try every character of the text."""
_UU_LATER_LINE = re.compile(r"\n([!-M][ -`]{4,60})(?=\n|\Z)")
"""``_UU_LINE`` after a line break, which the search skips ahead to."""


def _uu_blocks(text: str) -> Iterator[str]:
    """Runs of uuencoded lines without a file's header: each line as long as its length says (its
    trailing spaces possibly trimmed), the lines of a run in a row. Each line's reading stops at the first
    lower-case letter of a line of prose."""
    block: list[str] = []
    end = -1
    first = _UU_LINE.match(text)
    # A text of one line (most prompts) is not searched for a later one.
    later = _UU_LATER_LINE.finditer(text) if "\n" in text else ()
    lines = ([(first.group(), first.start(), first.end())] if first else []) + [
        (line.group(1), line.start(1), line.end(1)) for line in later
    ]
    for written, start, stop in lines:
        body = len(written) - 1
        size = ord(written[0]) - 32
        # Trailing spaces (zero bits) are often trimmed in transit: a line may be shorter than its length.
        if body > (size + 2) // 3 * 4:
            continue
        if block and start != end + 1:
            yield "\n".join(block)
            block = []
        block.append(written)
        end = stop
    if block:
        yield "\n".join(block)


_DECIMAL_CODES = re.compile(rb"(?<![0-9.])[0-9]{2,3}(?:[ ,;]{1,2}[0-9]{2,3}){5,}(?![0-9.])")
"""Six or more numbers of two or three digits a space, comma or semicolon apart: characters' decimal
codes, read where the text names them (``_CODE_NAMES``), as tables of numbers are every report's."""
_CODE_NAMES = (
    "ascii", "decimal", "char code", "charcode", "char_code", "character code", "code point", "codepoint",
    "chr(", "ord(", "unicode value",
)  # fmt: skip
"""What names characters' decimal codes, looked for in the lower-cased text, each by a substring search."""
_OCTAL_ESCAPES = re.compile(r"\\[0-3][0-7]{2}(?:\\[0-3][0-7]{2}){5,}")
"""Six or more octal escapes in a row (``\\151\\147``), as C, Python and shells write bytes. The first
written out of the repeat: the search then skips ahead to each backslash, where a pattern led by a
repeated group is tried at every place of the text."""


def _decode_decimal(run: bytes) -> str | None:
    codes = [int(code) for code in re.findall(rb"[0-9]+", run)]
    if max(codes) > 0x10FFFF:
        return None
    return _as_text("".join(map(chr, codes)).encode("utf-8", "surrogatepass"))


_BASE58_NAMED = regex.compile(r"58(?<=(?:base[ _-]?|\bb)58)", regex.IGNORECASE)
"""Base58 (Bitcoin's alphabet) is read only where a text names it: its alphabet is every identifier's."""
_BASE58_DIGITS = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BASE58_VALUES = {chr(char): value for value, char in enumerate(_BASE58_DIGITS)}
_MAX_BASE58 = 512
"""Characters of one base58 run decoded, at most: its number grows with the run, and its work with the
square of that."""


def _decode_base32(run: str) -> str | None:
    """RFC 4648 base32 (upper case, with or without its padding) where it decodes to text; a run of
    letters alone is a constant's name, not base32 of text, which holds digits."""
    stripped = run.rstrip("=")
    if "=" in stripped or stripped.isalpha() or len(stripped) % 8 in (1, 3, 6):
        return None
    try:
        return _as_text(base64.b32decode(stripped + "=" * (-len(stripped) % 8)))
    except (binascii.Error, ValueError):
        return None


def _decode_morse(run: str) -> str | None:
    """Morse with letters a space apart and words a slash, bar or two spaces apart, where every code is
    a letter's or digit's and both signs appear: rules of dashes and ellipses are no morse."""
    if "." not in run or "-" not in run:
        return None
    words = []
    for word in _MORSE_WORDS.split(run.strip()):
        letters = [_MORSE.get(code) for code in word.split()]
        if None in letters:
            return None
        words.append("".join(letter for letter in letters if letter))
    decoded = " ".join(word for word in words if word)
    return decoded if len(decoded) >= 8 else None


def _decode_binary(run: bytes) -> str | None:
    """Binary digits as text: groups (a space or comma apart) each a byte, leading zeros dropped or not;
    one run of them cut in octets, else in 7-bit groups (ASCII's), whichever reads as text."""
    groups = _BINARY_GROUP.findall(run)
    if len(groups) > 1:
        if len(groups) < _MIN_BINARY_GROUPS or max(map(len, groups)) > 8:
            return None
        return _as_text(bytes(int(group, 2) for group in groups))
    digits = groups[0]
    for width in (8, 7):
        if len(digits) % width == 0:
            decoded = _as_text(bytes(int(digits[at : at + width], 2) for at in range(0, len(digits), width)))
            if decoded is not None:
                return decoded
    return None


_MIN_BINARY_GROUPS = 6


def _decode_uu(lines: str) -> str | None:
    raw = bytearray()
    for line in lines.splitlines():
        try:
            raw += binascii.a2b_uu(line)
        except binascii.Error:
            return None
    return _as_text(bytes(raw))


def _decode_base58(run: str) -> str | None:
    number = 0
    for char in run:
        number = number * 58 + _BASE58_VALUES[char]
    leading = len(run) - len(run.lstrip("1"))
    return _as_text(b"\0" * leading + number.to_bytes((number.bit_length() + 7) // 8, "big"))


def _glued_escape_lines(text: str) -> str:
    """The lines of ``text`` where a one-letter escape is written against a word, each with the line after
    it (a phrase it starts may go on past a line break): code writes such escapes in a few of its lines, and
    only those need reading again."""
    if _GLUED_ESCAPE.search(text) is None:
        return ""
    lines = text.split("\n")
    kept = {
        number + step
        for number, line in enumerate(lines)
        if _GLUED_ESCAPE.search(line)
        for step in (0, 1)
        if number + step < len(lines)
    }
    return "\n".join(lines[number] for number in sorted(kept))


def _unescape(match: re.Match[str]) -> str:
    escape = match.group()
    if escape[1] != "u":
        return _ONE_LETTER_ESCAPES[escape[1]]
    if len(escape) == 12:  # a surrogate pair
        high, low = int(escape[2:6], 16), int(escape[8:12], 16)
        return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
    code = int(escape[2:], 16)
    return "\ufffd" if 0xD800 <= code <= 0xDFFF else chr(code)


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
