"""The printable runs of a binary body: the text a secret hidden in binary (a NUL byte before it, junk
bytes around it, UTF-16 as Windows writes strings) still reads as, found the way ``strings`` finds it;
and among them the runs that read as words (``text_runs``), what a text file inside binary says."""

from __future__ import annotations

import re

MIN_RUN = 8
"""Shorter than any token format a rule looks for (a prefix and its random part)."""
MIN_TEXT_RUN = 32
"""A sentence: shorter runs of words are names, labels and format strings, not instructions."""
MIN_WORDS = 4
WORDY_SHARE = 0.6
"""Of a text run's whitespace-separated tokens, at least this share are words: prose and comments (a
URL or a path among them), not tables of identifiers, numbers or symbols."""

_PRINTABLE = b"\\t\\n\\r\\x20-\\x7e"
_UTF8_RUN = re.compile(
    b"(?:[\\t\\n\\r\\x20-\\x7e]|[\\xc2-\\xdf][\\x80-\\xbf]|[\\xe0-\\xef][\\x80-\\xbf]{2}|[\\xf0-\\xf4][\\x80-\\xbf]{3})"
    b"{%d,}" % MIN_TEXT_RUN
)
"""Printable ASCII and the multi-byte sequences of UTF-8: text in any language, as a text file holds it."""
_WORD = re.compile(r"""[("'\[]?[^\W\d_]{2,}(?:['-][^\W\d_]+)*[)"'\].,;:!?]*""")
"""A word as prose spells it: letters, maybe hyphenated, maybe between quotes or before punctuation."""


def _runs(min_length: int) -> tuple[re.Pattern[bytes], re.Pattern[bytes], re.Pattern[bytes]]:
    char = b"[" + _PRINTABLE + b"]"
    count = b"{%d,}" % min_length
    return (
        re.compile(char + count),
        re.compile(b"(?:" + char + b"\\x00)" + count),
        re.compile(b"(?:\\x00" + char + b")" + count),
    )


_DEFAULT_RUNS = _runs(MIN_RUN)
_TEXT_RUNS = _runs(MIN_TEXT_RUN)


def printable_runs(body: bytes, min_length: int = MIN_RUN) -> list[str]:
    """Each run of at least ``min_length`` consecutive printable ASCII characters (whitespace included)
    in ``body``, as single bytes, as UTF-16LE or as UTF-16BE, each once. One byte that is not printable
    ends a run: what follows it is another. UTF-16 text read a byte off reads as the other byte order,
    less a character: the same text, found again."""
    ascii_runs, little_endian, big_endian = _DEFAULT_RUNS if min_length == MIN_RUN else _runs(min_length)
    runs = [match.group().decode("ascii") for match in ascii_runs.finditer(body)]
    runs += [match.group().decode("utf-16-le") for match in little_endian.finditer(body)]
    runs += [match.group().decode("utf-16-be") for match in big_endian.finditer(body)]
    return list(dict.fromkeys(runs))


def text_runs(body: bytes) -> list[str]:
    """The runs of ``body`` that read as text, each once: at least ``MIN_TEXT_RUN`` characters of UTF-8
    (or of ASCII as UTF-16LE or BE) holding ``MIN_WORDS`` words, words making ``WORDY_SHARE`` of its
    tokens. Random and compressed bytes hold none (a printable byte is drawn 3 times in 8:
    a run of 32 is a chance in ten billion); strings of code and data (symbols, paths, format strings,
    tables) are not prose."""
    _, little_endian, big_endian = _TEXT_RUNS
    runs = [match.group().decode("utf-8", "replace") for match in _UTF8_RUN.finditer(body)]
    runs += [match.group().decode("utf-16-le") for match in little_endian.finditer(body)]
    runs += [match.group().decode("utf-16-be") for match in big_endian.finditer(body)]
    return [run for run in dict.fromkeys(runs) if _reads_as_words(run)]


def _reads_as_words(run: str) -> bool:
    tokens = run.split()
    words = sum(1 for token in tokens if _WORD.fullmatch(token))
    return words >= MIN_WORDS and words >= WORDY_SHARE * len(tokens)
