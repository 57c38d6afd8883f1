"""The printable runs of a binary body: the text a secret hidden in binary (a NUL byte before it, junk
bytes around it, UTF-16 as Windows writes strings) still reads as, found the way ``strings`` finds it;
the tokens split by single junk bytes or invisible characters read joined (``bridged_runs``), as the
text scan reads across invisible characters; and among the runs those that read as words
(``text_runs``), what a text file inside binary says."""

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


_TOKEN = b"[A-Za-z0-9_+/=.:~-]"
_SEPARATOR = (
    b"\\xe2\\x80[\\x8b-\\x8f]|\\xe2\\x81[\\xa0-\\xa4]|\\xef\\xbb\\xbf|\\xc2\\xad|[^\\t\\n\\r\\x20-\\x7e]"
)
"""One junk byte, or one invisible character in UTF-8 (zero-width space, joiners, word joiner, byte order
mark, soft hyphen), which the text scan reads across."""
# Led where a run of token characters starts, each run taken whole: tried at every character of a run, a
# stretch that ends in no separator was looked for again from each of them, and a megabyte of one letter
# (a file of padding, a compression bomb's bytes) took hours of the GIL.
_BRIDGED = re.compile(b"(?<!" + _TOKEN + b")" + _TOKEN + b"++(?:(?:" + _SEPARATOR + b")" + _TOKEN + b"++)+")
_SEPARATORS = re.compile(_SEPARATOR)
MAX_BRIDGED_PIECES = 4
"""A token read joined across up to this many pieces (three separators)."""


def bridged_runs(body: bytes) -> list[str]:
    """The tokens that single separators split (``sk-proj-abc\\x00def``, ``AKIA\\u200b...``), read with
    the separators taken out: of each stretch of token characters split so, every join of up to
    ``MAX_BRIDGED_PIECES`` consecutive pieces at least ``MIN_RUN`` long, each once. Every window is read,
    not the whole stretch, since what stands before or after the token (a chunk name, a length read as
    a letter) would glue to it and hide it from rules that want it to stand alone."""
    runs: dict[str, None] = {}
    for stretch in _BRIDGED.finditer(body):
        if stretch.end() - stretch.start() <= MIN_RUN:  # random bytes hold many, all short
            continue
        pieces = _SEPARATORS.split(stretch.group())
        for start in range(len(pieces) - 1):
            for end in range(start + 2, min(start + MAX_BRIDGED_PIECES, len(pieces)) + 1):
                joined = b"".join(pieces[start:end])
                if len(joined) >= MIN_RUN:
                    runs[joined.decode("ascii")] = None
    return list(runs)


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
