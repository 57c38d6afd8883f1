"""The printable runs of a binary body: the text a secret hidden in binary (a NUL byte before it, junk
bytes around it, UTF-16 as Windows writes strings) still reads as, found the way ``strings`` finds it."""

from __future__ import annotations

import re

MIN_RUN = 8
"""Shorter than any token format a rule looks for (a prefix and its random part)."""

_PRINTABLE = b"\\t\\n\\r\\x20-\\x7e"


def _runs(min_length: int) -> tuple[re.Pattern[bytes], re.Pattern[bytes], re.Pattern[bytes]]:
    char = b"[" + _PRINTABLE + b"]"
    count = b"{%d,}" % min_length
    return (
        re.compile(char + count),
        re.compile(b"(?:" + char + b"\\x00)" + count),
        re.compile(b"(?:\\x00" + char + b")" + count),
    )


_DEFAULT_RUNS = _runs(MIN_RUN)


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
