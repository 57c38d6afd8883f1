"""A secret written one escaped character at a time, the escapes spaced or separated ("\\u{67} \\u{68} ...",
"\\147, \\150, ..."), is read by a disguise view once the run is whole. The stream redactor holds such a run
back while it may still grow, for every escape the views decode and every separator they read, so what the
stream releases is what whole-text redaction releases, whatever the deltas. So it is for a key padded
between its characters with what a view drops (combining marks, invisible characters) past the hold cap:
the cap counts what a view reads, and a run padded past what a stream may hold is withheld whole."""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable

import pytest

from proxy.scanning import unmask
from proxy.scanning.redact import PADDED_RUN_RULE, StreamRedactor, scan_and_redact
from proxy.scanning.rulepack import Scanner, load_pack, pack_path

SCANNER = Scanner((load_pack(pack_path("secrets")), load_pack(pack_path("pii"))), timeout_s=5)
KEY = "ghp_aB3dE6fG9hJ2kL5mN8pQ1rS4tU7vW0xY3zA6"

# Each form of each kind of escape unmask decodes (kind as unmask names it).
ESCAPES: dict[str, tuple[str, Callable[[str], str]]] = {
    "percent": ("percent", lambda char: f"%{ord(char):02X}"),
    "\\u": ("escape", lambda char: f"\\u{ord(char):04x}"),
    "\\x": ("escape", lambda char: f"\\x{ord(char):02x}"),
    "\\U": ("escape", lambda char: f"\\U{ord(char):08x}"),
    "octal": ("escape", lambda char: f"\\{ord(char):03o}"),
    "\\u{}": ("escape", lambda char: f"\\u{{{ord(char):x}}}"),
    "\\x{}": ("escape", lambda char: f"\\x{{{ord(char):x}}}"),
    "decimal entity": ("entity", lambda char: f"&#{ord(char)};"),
    "hex entity": ("entity", lambda char: f"&#x{ord(char):x};"),
}


def _spacing() -> list[str]:
    """The ASCII and white space characters a spaced or separated run puts between its characters, and
    some of those past ASCII it may (any that is no letter, digit or space): a bullet, an arrow, an
    emoji."""
    spaced = [chr(code) for code in range(0x110000) if chr(code).isascii() or chr(code).isspace()]
    return [char for char in spaced if re.fullmatch(unmask.SPACING, char)] + [
        "\u2022",
        "\u2192",
        "\U0001f642",
    ]


SEPARATORS = [*sorted(set(_spacing()) - {"\r"}), ", ", "\r\n", "  "]


def _streamed(text: str, cuts: list[int]) -> str:
    redactor = StreamRedactor(SCANNER)
    bounds = [0, *cuts, len(text)]
    released = [redactor.feed(text[start:end]) for start, end in itertools.pairwise(bounds)]
    return "".join(released) + redactor.flush()


def _splits(text: str) -> dict[str, list[int]]:
    chance = random.Random(len(text))  # noqa: S311 - reproducible splits, nothing secret
    return {
        "12-character deltas": list(range(12, len(text), 12)),
        "random splits": sorted(chance.sample(range(1, len(text)), len(text) // 9)),
        "two halves": [len(text) // 2],
    }


def test_every_escape_kind_unmask_decodes_is_covered() -> None:
    assert {kind for kind, _ in ESCAPES.values()} == {kind for _, kind, _ in unmask._ESCAPE_UNITS}
    for kind, encode in ESCAPES.values():
        for char in KEY:
            assert re.fullmatch(unmask.ESCAPED_CHARACTER, encode(char))
            assert unmask._decode_unit(kind, encode(char)) == char
    longest = "&" + "a" * 32 + ";"
    assert len(longest) == unmask.LONGEST_ESCAPE
    assert re.fullmatch(unmask.ESCAPED_CHARACTER, longest)
    assert not re.fullmatch(unmask.ESCAPED_CHARACTER, "&" + "a" * 33 + ";")


@pytest.mark.parametrize("separator", SEPARATORS, ids=ascii)
@pytest.mark.parametrize("escape", ESCAPES)
def test_a_spaced_escaped_key_is_released_as_whole_text_releases_it(escape: str, separator: str) -> None:
    encode = ESCAPES[escape][1]
    text = "the value is " + separator.join(encode(char) for char in KEY) + " and that is all."
    whole = scan_and_redact(SCANNER, text).text
    assert "[REDACTED:github-pat]" in whole
    for name, cuts in _splits(text).items():
        assert _streamed(text, cuts) == whole, name


# What a view drops between a key's characters: combining marks, zero-width and invisible characters.
PADDINGS = ["\u0301", "\u200b", "\u200d", "\u2060", "\ufeff", "\u00ad", "\ufe0f"]


@pytest.mark.parametrize("padding", PADDINGS, ids=ascii)
def test_a_key_padded_past_the_hold_cap_is_released_as_whole_text_releases_it(padding: str) -> None:
    """Sixty padding characters after each of the key's: 2,440 characters, more than a stream holds, of
    which a view reads 40."""
    text = "the value is " + "".join(char + padding * 60 for char in KEY) + " and that is all."
    whole = scan_and_redact(SCANNER, text).text
    assert "[REDACTED:github-pat]" in whole
    for name, cuts in _splits(text).items():
        assert _streamed(text, cuts) == whole, name


def test_a_key_padded_past_what_a_stream_may_hold_is_withheld_and_recorded() -> None:
    text = "the value is " + "".join(char + "\u0301" * 300 for char in KEY) + " and that is all."
    redactor = StreamRedactor(SCANNER)
    released = [redactor.feed(text[position : position + 12]) for position in range(0, len(text), 12)]
    out = "".join(released) + redactor.flush()
    assert out == f"the value is [REDACTED:{PADDED_RUN_RULE}] and that is all."
    assert [redaction.rule_id for redaction in redactor.redactions] == [PADDED_RUN_RULE]


def test_an_endless_run_of_combining_marks_holds_a_bounded_text() -> None:
    redactor = StreamRedactor(SCANNER, max_hold=256)
    released = []
    for _ in range(2000):
        released.append(redactor.feed("a" + "\u0301" * 11))
        assert len(redactor._pending) < 256 * 4
    assert "".join(released) == f"[REDACTED:{PADDED_RUN_RULE}]"
    assert redactor.feed(" then plain text. ") + redactor.flush() == " then plain text. "


def test_a_long_run_a_view_reads_still_flows_half_a_cap_at_a_time() -> None:
    blob = "".join(f"{index:08x}" for index in range(2000))  # 16,000 characters with no whitespace
    redactor = StreamRedactor(SCANNER)
    released = [redactor.feed(blob[position : position + 12]) for position in range(0, len(blob), 12)]
    assert len("".join(released)) >= len(blob) - 2048
    assert "".join(released) + redactor.flush() == blob
    assert not redactor.redactions
