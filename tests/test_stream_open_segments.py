"""A token encoded in a form that holds whitespace (base64 wrapped over lines, hex pairs a space apart,
"0x" bytes a space or comma apart) is read by a decoded view only once the run is whole. The stream
redactor holds such a run back while it may still grow, so what the stream releases is what whole-text
redaction releases, at every delta size: none of the encoding leaves before the view is read."""

from __future__ import annotations

import base64
import textwrap
from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy.scanning import redact
from proxy.scanning.redact import StreamRedactor, scan_and_redact
from proxy.scanning.rulepack import Scanner, load_pack, pack_path

_PACKS = (load_pack(pack_path("secrets")), load_pack(pack_path("pii")))
SCANNER = Scanner(_PACKS, timeout_s=5)
TOKEN_RULES = (
    "github-pat",
    "aws-access-key-id",
    "slack-bot-token",
    "openai-project-key",
    "stripe-live-secret-key",
)
TOKENS = [rule.match_examples[0] for pack in _PACKS for rule in pack.rules if rule.id in TOKEN_RULES]


def _wrapped(width: int, newline: str) -> Callable[[bytes], str]:
    return lambda data: newline.join(textwrap.wrap(base64.b64encode(data).decode(), width))


ENCODINGS: dict[str, Callable[[bytes], str]] = {
    "base64 wrapped at 76": _wrapped(76, "\n"),
    "base64 wrapped at 64, CRLF": _wrapped(64, "\r\n"),
    "hex pairs a space apart": lambda data: " ".join(f"{byte:02x}" for byte in data),
    "labelled hex pairs": lambda data: "bytes:" + " ".join(f"{byte:02X}" for byte in data),
    "0x bytes a space apart": lambda data: " ".join(f"0x{byte:02x}" for byte in data),
    "0x bytes a comma and space apart": lambda data: ", ".join(f"0x{byte:02x}" for byte in data),
}


def _streamed(text: str, size: int) -> str:
    redactor = StreamRedactor(SCANNER)
    released = [redactor.feed(text[position : position + size]) for position in range(0, len(text), size)]
    return "".join(released) + redactor.flush()


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("token", TOKENS)
def test_an_encoded_token_is_released_as_whole_text_redaction_releases_it(encoding: str, token: str) -> None:
    note = f"notes for the week: the ci runners use {token} for deploys, rotate it monthly\n"
    text = "Here is the file, as you asked:\n" + ENCODINGS[encoding](note.encode() * 2) + "\nThat is all."
    whole = scan_and_redact(SCANNER, text).text
    assert "[REDACTED:" in whole
    for size in (1, 3, 7, 13, 20, 41):
        assert _streamed(text, size) == whole, size


def test_words_ending_in_hex_letters_are_released_whole_and_unscanned() -> None:
    """Prose whose words end in letters a hex pair is made of ("need", "code", "face") starts no run:
    each delta still goes out as it comes but for its open word."""
    text = "we need the code and the face of the page to be made ready " * 4
    redactor = StreamRedactor(SCANNER)
    released = [redactor.feed(text[position : position + 9]) for position in range(0, len(text), 9)]
    assert released[:3] == ["we need ", "the code ", "and the "]
    assert "".join(released) + redactor.flush() == text


def _hold_searching_every_pattern(pending: str, max_hold: int) -> int:
    """What ``_hold_in`` gives, from every pattern searched whatever the text holds."""
    hold = len(pending)
    look_from = max(0, hold - max_hold - 1)
    for pattern in (
        redact._OPEN_TOKEN,
        redact._OPEN_NUMBER,
        redact._OPEN_SPACED,
        redact._OPEN_JOINED,
        redact._OPEN_CODES,
    ):
        found = pattern.search(pending, look_from)
        if found is not None:
            hold = min(hold, found.start())
    for pattern, _ in redact._OPEN_SEGMENTS:
        found = pattern.search(pending, look_from)
        if found is not None:
            word = redact._OPEN_TOKEN.search(pending, look_from, found.start())
            hold = min(hold, found.start() if word is None else word.start())
    low = max(look_from, len(pending) - redact._LONGEST_GROUPED)
    grouped = SCANNER._open_grouped.search(pending, low)
    if grouped is not None:
        hold = min(hold, grouped.start())
    split = SCANNER.open_split_key(pending, low)
    if split is not None:
        hold = min(hold, split)
    begin = redact._KEY_BLOCK_BEGIN.search(
        pending, max(0, len(pending) - redact._LONGEST_BEGIN_MARKER), partial=True
    )
    if begin is not None and begin.partial:
        hold = min(hold, begin.start())
    if len(pending) - hold > max_hold:
        hold = len(pending) - max_hold // 2
    return hold


HOLD_PIECES = [
    "0x", "0x1f ", "0xab, ", "0x0", "1f ", "ab ", "e", " ", ", ", "\n", "\r", "\r\n", "-", "-----BEGIN ",
    "---- BEGIN SSH2", "-----BEGIN RSA PRIV", "PuTTY-User-Key", "PuTTY-User-Key-File-3: ssh-rsa", "P", "the ",
    "word", "A", "B9", "(", ")", ".", "&#104; ", "%41", "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0MTIzNDU2Nzg5",
    "\\u0067 ", "g ", "ok ", "to", "cafe ", "xyz", "de", "%de ", "\\uabcd ", "&amp; ", "\t", "\u00a0",
    "\u3000", "\x1c", "Z ", "a ", "  ", "invoice ", "sk", "ab", "akia ", "Q7x2 ", "\n  ",
]  # fmt: skip


@settings(max_examples=500)
@given(st.lists(st.sampled_from(HOLD_PIECES), max_size=12), st.sampled_from([2048, 16]))
def test_the_hold_skips_only_searches_that_cannot_match(pieces: list[str], max_hold: int) -> None:
    """Where the redactor holds back the open end of its text is the same whether or not it skips the
    searches whose patterns the text cannot match (no "0x", no space near the end, no "-" or "P")."""
    pending = "".join(pieces)
    assert redact._hold_in(pending, max_hold, SCANNER) == _hold_searching_every_pattern(pending, max_hold)


PROSE_WORDS = [
    "the", "invoice", "ok", "de", "cafe", "a", "I", "xyz", "ab", "ssh", "rsa", "fg", "0x", "1f", "AB", "12",
    "&#104;", "(555)", "ab-CD", "abcdefghijklmnopqrstuvwxyz" * 2, "AKIA", "ghp_R7m", "q2x9",
]  # fmt: skip
PROSE_GAPS = [" ", "  ", "\t", "\u00a0", "\n", "\x1c", "", "%", "\\u", "&", ";", ":", "-", "P", ",", "."]


@settings(max_examples=1000)
@given(
    st.lists(st.tuples(st.sampled_from(PROSE_WORDS), st.sampled_from(PROSE_GAPS)), max_size=8),
    st.text(alphabet="abcdefgxyzAB01.-;&# \n", max_size=12),
    st.sampled_from([2048, 16, 4]),
)
@example([("abcdefghijklmnopqrstuvwxyz" * 2, "\n")], "abc", 2048)
@example([("abcdefghijklmnopqrstuvwxyz" * 2, "\r")], "", 2048)
@example([("invoice", " "), ("xy", " ")], "0x", 2048)
def test_the_hold_after_prose_is_that_of_every_pattern(
    words: list[tuple[str, str]], tail: str, max_hold: int
) -> None:
    """Where the last word follows a space after another word's small letters (``_ends_in_a_word``), the
    hold looks no further than that word and a key block's marker: it is where every pattern, searched,
    puts it, for words of hex letters, escapes, single letters, capitals, digits, base64 lines and
    separators before it, other spaces, and holds that are capped."""
    pending = "".join(word + gap for word, gap in words) + tail
    assert redact._hold_in(pending, max_hold, SCANNER) == _hold_searching_every_pattern(pending, max_hold)
