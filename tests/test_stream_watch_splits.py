"""The stream redactor's trigger watch sees a keyword however the stream splits the text before and
inside it: whatever the delta sizes, the delta that completes a keyword is told of, and a value the
keyword names is redacted as whole-text redaction redacts it."""

from __future__ import annotations

import pytest

from proxy.scanning.redact import StreamRedactor, scan_and_redact
from proxy.scanning.rulepack import Scanner, load_pack, pack_path

SCANNER = Scanner([load_pack(pack_path("secrets")), load_pack(pack_path("pii"))])
QUIET = "the order total does not match the invoice we sent to the customer "
"""Text in which no keyword, shape or decoded view starts."""
KEYWORDS = ["password", "passphrase", "api_key", "client_secret", "github_pat_", "pypi-AgEIcHlwaS5vcmc"]


def _pieces(text: str, size: int) -> list[str]:
    return [text[position : position + size] for position in range(0, len(text), size)]


@pytest.mark.parametrize("keyword", KEYWORDS)
def test_the_delta_that_completes_a_keyword_is_told_of_at_every_split(keyword: str) -> None:
    for lead in range(0, 40):
        text = QUIET[:lead] + " " + keyword
        for size in range(1, len(text) + 1):
            watch = SCANNER.watch()
            told = [watch.feed(piece) for piece in _pieces(text, size)]
            assert told[-1] is not None, (lead, size)


@pytest.mark.parametrize("name", ["DB_PASSWORD=", "smtp_password: ", "export API_KEY=", "passphrase = "])
def test_a_value_named_by_a_split_keyword_is_redacted_as_in_the_whole_text(name: str) -> None:
    """Every lead of quiet text and every delta size: the value never leaves."""
    value = "Xk9mP2vL7qR4wZa8Tq3"
    for lead in range(0, 32):
        text = QUIET[:lead] + " " + name + value + " and that is all."
        whole = scan_and_redact(SCANNER, text).text
        assert value not in whole
        for size in range(1, 33):
            redactor = StreamRedactor(SCANNER)
            streamed = "".join(redactor.feed(delta) for delta in _pieces(text, size)) + redactor.flush()
            assert streamed == whole, (lead, size)
