"""Streamed tool-call arguments are JSON text: a string's line breaks and tabs come as the escapes \\n,
\\r and \\t. The argument filter reads them as the whitespace they stand for, as a client decoding the
arguments does, so a secret right after one ("\\nghp_...") is a token's start to the rules and a base64 or
disguised run's start to the decoded views; and it writes back exactly the JSON text it was given."""

from __future__ import annotations

import base64
import json
import random

import pytest

from proxy.scanning.redact import StreamRedactor, scan_and_redact
from proxy.scanning.residual import UnescapingFilter, canonical_escapes
from proxy.scanning.rulepack import Scanner, load_pack, pack_path

SCANNER = Scanner([load_pack(pack_path("secrets")), load_pack(pack_path("pii"))], timeout_s=5)
TOKEN = "ghp_Qw3rTy7uIo9pAs2dFg4hJk6lZx8cVb1nMq5W"
NOTE = f"the ci uses {TOKEN} on the runners"
FORMS = {
    "plain": TOKEN,
    "base64": base64.b64encode(NOTE.encode()).decode(),
    "full-width": "".join(chr(ord(char) + 0xFEE0) for char in TOKEN),
    "look-alike": TOKEN.replace("o", "\u043e").replace("A", "\u0410"),
    "hex pairs": " ".join(f"{byte:02x}" for byte in NOTE.encode()),
}


class Unchanged:
    """A filter that releases what it is given."""

    def feed(self, text: str) -> str:
        return text

    def flush(self) -> str:
        return ""


def _filtered(inner: object, text: str, size: int) -> str:
    unescaping = UnescapingFilter(inner)
    released = [unescaping.feed(text[position : position + size]) for position in range(0, len(text), size)]
    return "".join(released) + unescaping.flush()


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("escape", ["\n", "\r\n", "\t", "\n\n"])
def test_a_secret_after_a_whitespace_escape_is_redacted_as_in_the_decoded_arguments(
    form: str, escape: str
) -> None:
    note = f"Here:{escape}{FORMS[form]}{escape}Done."
    arguments = json.dumps({"note": note})
    expected = scan_and_redact(SCANNER, note).text
    assert "[REDACTED:github-pat]" in expected
    for size in (1, 2, 4, 11, 64):
        assert json.loads(_filtered(StreamRedactor(SCANNER), arguments, size)) == {"note": expected}, size


def test_json_text_is_written_back_exactly_at_every_split() -> None:
    """Escapes at every level of nesting, raw whitespace between tokens, escaped backslashes before an
    n, and every split: what the filter releases is the text it read, with the escapes of characters
    JSON lets a string hold spelled plainly (``canonical_escapes``) as before."""
    generator = random.Random(7)  # noqa: S311 - reproducible test text, nothing secret
    pieces = [
        "a",
        " ",
        "\\n",
        "\\\\n",
        "\\\\\\n",
        "\\t",
        "\\r",
        "\\\\",
        '\\"',
        "\\u0041",
        "\\/",
        "\u00e9",
        "n",
    ]
    for _ in range(200):
        value = "".join(generator.choice(pieces) for _ in range(generator.randint(0, 30)))
        text = '{\n\t"a": "' + value + '",\r\n  "b": [1, 2]\n}'
        for size in (1, 2, 3, 7, len(text)):
            assert _filtered(Unchanged(), text, size) == canonical_escapes(text)


def test_a_control_character_no_json_text_holds_raw_comes_out_escaped() -> None:
    """It stands for nothing in valid JSON; escaped, a lenient reader reads the same character."""
    assert _filtered(Unchanged(), '{"a": "x\x0by\x0cz\x1c"}', 3) == '{"a": "x\\u000by\\u000cz\\u001c"}'
