"""A policy's own rule whose value spans several words (a passphrase of words, a key block between marker
lines of words) is held whole while it streams: cut anywhere over two or three deltas, no word of the
value leaves before the match is complete, and what leaves is the whole text's redaction. The shipped
packs' values lie in their last word, so nothing about them changes."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import pytest

from proxy.scanning.redact import StreamRedactor, scan_and_redact
from proxy.scanning.rulepack import Scanner, load_pack, pack_path
from tests.test_stream_prose_path import CountingPlain

WORDY_RULES = """pack: wordy
threat: data_exfiltration
rules:
  - id: corp-passphrase
    description: a passphrase of three words after its codeword
    regex: 'codeword is (?P<secret>[a-z]+ [a-z]+ [a-z]+)'
    secret_group: secret
    keywords: ["codeword"]
    severity: high
    owasp: LLM06
    examples: {match: ["the codeword is correct horse battery"], no_match: ["the codeword is long"]}
  - id: corp-key-block
    description: a key between marker words, of any width
    regex: 'BEGIN CORP KEY [A-Za-z0-9 ]+? END CORP KEY'
    keywords: ["begin corp key"]
    severity: high
    owasp: LLM06
    examples: {match: ["BEGIN CORP KEY abcd efgh END CORP KEY"], no_match: ["BEGIN CORP KEY"]}
"""
PASSPHRASE = "Sure, the codeword is correct horse battery, as agreed."
KEY_BLOCK = "Here: BEGIN CORP KEY abcd efgh ijkl END CORP KEY and done."
VALUES = {PASSPHRASE: ("correct", "horse", "battery"), KEY_BLOCK: ("BEGIN", "abcd", "efgh", "ijkl")}


@pytest.fixture(scope="module")
def scanner(tmp_path_factory: pytest.TempPathFactory) -> Scanner:
    path = Path(tmp_path_factory.mktemp("wordy")) / "wordy.yaml"
    path.write_text(WORDY_RULES, encoding="utf-8")
    return Scanner([load_pack(path), load_pack(pack_path("secrets"))], timeout_s=60)


def _streamed(scanner: Scanner, pieces: list[str]) -> list[str]:
    redactor = StreamRedactor(scanner)
    return [*(redactor.feed(piece) for piece in pieces), redactor.flush()]


def _cuts(text: str, parts: int) -> list[list[str]]:
    return [
        [text[start:end] for start, end in zip((0, *cuts), (*cuts, len(text)), strict=True)]
        for cuts in combinations(range(1, len(text)), parts - 1)
    ]


@pytest.mark.parametrize("text", VALUES, ids=["passphrase", "key block"])
@pytest.mark.parametrize("parts", [2, 3])
def test_a_value_of_several_words_is_held_whole_wherever_it_is_cut(
    scanner: Scanner, text: str, parts: int
) -> None:
    whole = scan_and_redact(scanner, text).text
    assert all(word not in whole for word in VALUES[text])
    for pieces in _cuts(text, parts):
        released = _streamed(scanner, pieces)
        assert "".join(released) == whole, pieces
        assert not any(word in piece for piece in released for word in VALUES[text]), pieces


def test_prose_after_a_value_of_no_known_width_goes_by_the_prose_path(scanner: Scanner) -> None:
    """Once the match of a rule of no known width is complete, and its text lies behind what is scanned,
    plain prose takes the prose path again: no rule is looked at as still open."""
    text = KEY_BLOCK + " The customer reports that the invoice total does not match the order." * 8
    redactor = CountingPlain(scanner)
    deltas = [text[at : at + 12] for at in range(0, len(text), 12)]
    out = "".join(redactor.feed(delta) for delta in deltas) + redactor.flush()
    assert out == scan_and_redact(scanner, text).text
    assert redactor.taken > len(deltas) // 3
