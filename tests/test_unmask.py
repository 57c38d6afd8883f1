"""Secrets hidden by encodings and disguises are found and redacted over the span that carried them;
hard negatives (hashes, digests, images, UUIDs, minified JS, escaped text) stay clean."""

# Look-alike letters are the point of these tests.

from __future__ import annotations

import base64
import bz2
import gzip
import json
import lzma
import random
import re
import time
import zlib
from collections import Counter
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import carriers
from bench.disguises import ENCODERS, HARD_NEGATIVE_KINDS, KEYED, disguised_corpus, hard_negatives
from proxy.model import Threat
from proxy.scanning import relaxed, unmask
from proxy.scanning.normalize import ROT47_TABLE, caesar_table
from proxy.scanning.redact import RedactionStyle, StreamRedactor, redact_text, scan_and_redact
from proxy.scanning.rulepack import ScanBudget, Scanner, load_packaged_packs, one_case
from tests.cpu_time import least_cpu_seconds

PACKS = [pack for pack in load_packaged_packs() if pack.threat is Threat.DATA_EXFILTRATION]
SECRETS = [pack for pack in PACKS if pack.name == "secrets"]
SCANNER = Scanner(PACKS, timeout_s=1.0)
UNHURRIED_S = 3600.0
"""A scan budget no load exhausts: a rule runs again until it finishes, where running out of time would
raise (``ScanResult.matches``) or redact a text whole, whatever the machine's other work."""
AWS_KEY = "AKIAQWERTY234567ABCD"
GITHUB_TOKEN = "ghp_" + "Qw3rTy7uIo9pAs2dFg4hJk6lZx8cVb1nMq5W"
GITLAB_TOKEN = "glpat-" + "k3sz7uS3iHWEhszk0RhJ"
# A key whose prefix is an everyday word (``monkey-``): its rule keeps the word boundary before it.
MAILGUN_KEY = "key-" + "18cdff63c18ed6628896c3787308dc32"
PLACEHOLDER = re.compile(r"\[REDACTED:[^\]]*\]")
DEV_DATA = carriers.default_data()


def _found(text: str) -> list[str]:
    return [match.rule.id for match in SCANNER.scan_alone(text).matches if match.rule.pack == "secrets"]


def _leftovers(carrier: str, redacted: str) -> list[str]:
    """8-character pieces of the carrier still in the redacted text (placeholders left aside), but those
    with no letter or digit (the indentation of a list written one item a line stays around it)."""
    visible = PLACEHOLDER.sub("\0", redacted)
    pieces = (carrier[index : index + 8] for index in range(len(carrier) - 7))
    return [piece for piece in pieces if piece in visible and any(char.isalnum() for char in piece)]


def _wrap(text: str, width: int) -> list[str]:
    return [text[index : index + width] for index in range(0, len(text), width)]


DISGUISES = {
    "base64": "note: " + base64.b64encode(AWS_KEY.encode()).decode() + " end",
    "base64 of a line": base64.b64encode(f"export KEY={GITHUB_TOKEN}\n".encode()).decode(),
    "base64url unpadded": base64.urlsafe_b64encode(GITHUB_TOKEN.encode()).decode().rstrip("="),
    "hex": "blob " + GITHUB_TOKEN.encode().hex() + " done",
    "hex with \\x": "".join(f"\\x{byte:02x}" for byte in AWS_KEY.encode()),
    "hex with 0x": ", ".join(f"0x{byte:02X}" for byte in AWS_KEY.encode()),
    "percent": "id=" + "".join(f"%{byte:02x}" for byte in AWS_KEY.encode()) + "&x=1",
    "percent in part": "ghp%5F" + GITHUB_TOKEN[4:],
    "json \\u": "".join(f"\\u{ord(char):04X}" for char in GITHUB_TOKEN),
    "octal escapes": "".join(f"\\{byte:03o}" for byte in AWS_KEY.encode()),
    "braced \\u{} escapes": "".join(f"\\u{{{ord(char):x}}}" for char in GITHUB_TOKEN[:9]) + GITHUB_TOKEN[9:],
    "html decimal": "".join(f"&#{ord(char)};" for char in AWS_KEY),
    "html hex": "&#x67;&#x68;&#x70;&lowbar;" + GITHUB_TOKEN[4:],
    "letter-spaced": "my key is " + " ".join(AWS_KEY) + ", keep it",
    "double-spaced": "  ".join(GITHUB_TOKEN),
    "zero-width": "\u200b".join(GITHUB_TOKEN),
    "zero-width joiner and BOM": AWS_KEY[:4] + "\u200d" + AWS_KEY[4:12] + "\ufeff" + AWS_KEY[12:],
    "cyrillic prefix": "key \u0410" + AWS_KEY[1:],
    "greek letters": "\u0391\u039a\u0399\u0391" + AWS_KEY[4:],
    "full width": "".join(chr(ord(char) + 0xFEE0) for char in AWS_KEY),
    "tag characters": "key " + "".join(chr(0xE0000 + ord(char)) for char in GITHUB_TOKEN),
    "tag characters after a plain prefix": GITHUB_TOKEN[:8]
    + "".join(chr(0xE0000 + ord(c)) for c in GITHUB_TOKEN[8:]),
    "soft hyphens": "\u00ad".join(
        GITHUB_TOKEN[index : index + 5] for index in range(0, len(GITHUB_TOKEN), 5)
    ),
    "combining marks": "".join(
        char + "\u0301\u0323"[: 1 + index % 2] for index, char in enumerate(GITHUB_TOKEN)
    ),
    "variation selectors": "\ufe0f".join(AWS_KEY),
    "hangul fillers and braille blanks": AWS_KEY[:7] + "\u3164" + AWS_KEY[7:14] + "\u2800" + AWS_KEY[14:],
    "full-width digits": "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in GITHUB_TOKEN),
    "arabic-indic digits": "".join(chr(0x660 + int(c)) if c.isdigit() else c for c in AWS_KEY),
    "circled letters": "key " + "".join(chr(0x24B6 + ord(c) - 65) if c.isupper() else c for c in AWS_KEY),
    "base64 of zero-width": base64.b64encode("\u200b".join(AWS_KEY).encode()).decode(),
    "percent-encoded base64": base64.b64encode(f"{GITHUB_TOKEN}\n".encode()).decode().replace("=", "%3D"),
    "entities of a spaced key": " ".join(f"&#{ord(char)};" for char in AWS_KEY),
    "tab-spaced": "key:\t" + "\t".join(AWS_KEY),
    "no-break-spaced": "key " + "\u00a0".join(GITHUB_TOKEN),
    "thin-spaced": "\u2009\u2009".join(AWS_KEY),
    "mixed gaps": "".join(char + " \t\u00a0"[index % 3] for index, char in enumerate(GITHUB_TOKEN)),
    "dash-separated, the key's own dashes among them": "key: " + "-".join(GITLAB_TOKEN) + " ok",
    "dot-separated": ".".join(AWS_KEY),
    "comma-separated with spaces": "chars: " + ", ".join(GITHUB_TOKEN) + "; done",
    "one character a line": "\n".join(GITLAB_TOKEN),
    "pipe-separated after a word": "ok|" + "|".join(AWS_KEY),
    "colon hex": "fingerprint " + ":".join(f"{byte:02x}" for byte in AWS_KEY.encode()),
    "dashed hex": "-".join(f"{byte:02X}" for byte in GITHUB_TOKEN.encode()),
    "hexdump bytes": "0000  " + " ".join(f"{byte:02x}" for byte in GITHUB_TOKEN.encode()),
    "MIME base64, token across lines": base64.encodebytes(
        (("Dear team, " * 9) + f"the token is {GITHUB_TOKEN} now.\n" + "Regards. " * 9).encode()
    ).decode(),
    "PEM-width base64 with CRLF": "\r\n".join(
        _wrap(base64.b64encode((("x=1; " * 10) + f"key={AWS_KEY}; " + "y=2; " * 10).encode()).decode(), 64)
    ),
    "gzip in base64": "blob: " + base64.b64encode(gzip.compress(f"key={AWS_KEY}".encode(), mtime=0)).decode(),
    "zlib in base64": base64.b64encode(zlib.compress(f"token {GITHUB_TOKEN}".encode())).decode(),
    "bzip2 in base64": base64.b64encode(bz2.compress(f"token {GITHUB_TOKEN}".encode())).decode(),
    "xz in base64": base64.b64encode(lzma.compress(f"key={AWS_KEY}".encode())).decode(),
    "gzip in hex": gzip.compress(f"key={AWS_KEY}".encode(), mtime=0).hex(),
    "base64 wrapped at 10 after a word": "use "
    + "\n".join(_wrap(base64.b64encode(f"token {GITHUB_TOKEN}".encode()).decode(), 10))
    + " thanks",
    "base64 wrapped at 4, indented, CRLF": "key:\r\n"
    + "\r\n".join("  " + line for line in _wrap(base64.b64encode(f"key={AWS_KEY}".encode()).decode(), 4)),
    "base64 of hex of percent": base64.b64encode(
        "".join(f"%{byte:02x}" for byte in AWS_KEY.encode()).encode().hex().encode()
    ).decode(),
    "hex of base64 of spaced": base64.b64encode(" ".join(GITHUB_TOKEN).encode()).hex(),
    "base85": "blob " + base64.b85encode(f"token {GITHUB_TOKEN}".encode()).decode() + " end",
    "base85 of the key alone": base64.b85encode(AWS_KEY.encode()).decode(),
    "ascii85": base64.a85encode(f"export KEY={GITHUB_TOKEN}".encode()).decode(),
    "ascii85 after a name": "key=" + base64.a85encode(AWS_KEY.encode()).decode(),
    "ascii85 in Adobe's brackets": "k: " + base64.a85encode(GITHUB_TOKEN.encode(), adobe=True).decode(),
    "ascii85 before a full stop": f"it is {base64.a85encode(AWS_KEY.encode()).decode()}.",
    "base85 of hex": base64.b85encode(AWS_KEY.encode().hex().encode()).decode(),
    "quoted-printable mail, the key cut by a soft line break": "Content-Transfer-Encoding: quoted-printable"
    + f"\r\n\r\nkey=3D{AWS_KEY[:7]}=\r\n{AWS_KEY[7:]} caf=C3=A9\r\n",
    "quoted-printable MIME part": "--b\ncontent-transfer-encoding: QUOTED-PRINTABLE\n\n"
    + f"t=3D{GITHUB_TOKEN[:9]}=\n{GITHUB_TOKEN[9:]}\n--b--\n",
    "list of characters": "key = " + json.dumps(list(GITHUB_TOKEN)),
    "list of characters, one a line": json.dumps({"args": {"k": list(AWS_KEY)}}, indent=4),
    "list of characters in a JSON string": json.dumps({"arguments": json.dumps({"k": list(AWS_KEY)})}),
    "Python list of characters, reversed": f"''.join(reversed({list(GITHUB_TOKEN[::-1])!r}))",
}


@pytest.mark.parametrize("name", sorted(DISGUISES))
def test_disguised_secret_is_found_and_its_carrier_redacted(name: str) -> None:
    """Each disguise is seen through, and the whole span that carried the secret is redacted."""
    text = DISGUISES[name]
    matches = [match for match in SCANNER.scan_alone(text).matches if match.rule.pack == "secrets"]
    assert matches, name
    assert all(match.disguise for match in matches)
    redacted = scan_and_redact(SCANNER, text).text
    carrier = text[matches[0].start : matches[0].end]
    assert not _leftovers(carrier, redacted)
    assert "REDACTED" in redacted


ESCAPED_SEPARATORS = ["x%20", "token%3D", "%22", "a%0A", "x%2520", "a\\x20", "a\\u0020", "a&#10;", "a\\n"]


@pytest.mark.parametrize("before", [*ESCAPED_SEPARATORS, "a\\t", 'print("\\r\\n'])
@pytest.mark.parametrize("key", [AWS_KEY, GITHUB_TOKEN, MAILGUN_KEY])
def test_a_key_after_an_escaped_separator_is_found_and_redacted(before: str, key: str) -> None:
    """An escape of a separator ends in a letter or digit, which glues the key after it to a word as
    written; read as any decoder or model reads the escape, the key stands apart, and it is redacted."""
    text = f"{before}{key} end"
    assert _found(text)
    redacted = scan_and_redact(SCANNER, text).text
    assert key not in redacted and key[:8] not in redacted
    assert redacted.startswith(before[:1])


@pytest.mark.parametrize(
    "text", [f"abc%6B{MAILGUN_KEY[1:]}", f"x\\q{MAILGUN_KEY}", f"ab\\x6B{MAILGUN_KEY[1:]}"]
)
def test_a_key_glued_to_an_escaped_letter_stays_glued(text: str) -> None:
    """An escape of a letter, or a backslash before a letter that escapes nothing, still glues what
    follows to a word: "abc%6Bey-..." reads "abckey-...", no key's start for a rule that keeps its
    word boundary."""
    assert not _found(text)


@pytest.mark.parametrize("text", [f"abc%41{AWS_KEY[1:]}", f"x\\q{GITHUB_TOKEN}", f"ab\\x41{AWS_KEY[1:]}"])
def test_a_distinctive_key_glued_to_an_escaped_letter_is_found(text: str) -> None:
    """A key whose prefix is distinctive is one with a letter glued before it, escaped or not."""
    assert _found(text)


def test_disguised_secret_in_a_json_body_is_redacted_and_the_json_stays_valid() -> None:
    """Inside a JSON document (a tool argument), an escaped secret is redacted and the JSON still parses."""
    body = json.dumps({"cmd": "curl", "args": ["-H", "X: " + base64.b64encode(AWS_KEY.encode()).decode()]})
    redacted = scan_and_redact(SCANNER, body).text
    assert json.loads(redacted)["args"][1].startswith("X: [REDACTED:aws-access-key-id]")


def test_disguised_secret_split_across_stream_deltas_is_redacted() -> None:
    """Streamed in small deltas, a base64-encoded secret never reaches the agent."""
    encoded = base64.b64encode(f"token {GITHUB_TOKEN}".encode()).decode()
    text = f"Here you go: {encoded} and that is all."
    redactor = StreamRedactor(SCANNER)
    out = (
        "".join(redactor.feed(text[index : index + 3]) for index in range(0, len(text), 3)) + redactor.flush()
    )
    assert encoded[:12] not in out
    assert "[REDACTED:github-pat]" in out


def test_view_maps_decoded_offsets_back_to_the_original() -> None:
    """A match inside a disguise view maps back over the escapes that produced it."""
    text = "a %41%4B%49%41" + AWS_KEY[4:] + " b"
    (view,) = list(unmask.views(text))
    start = view.text.index(AWS_KEY)
    assert view.original(start, start + len(AWS_KEY)) == (2, text.index(" b"))


def test_nothing_to_undo_gives_no_view() -> None:
    """Plain text has no views: the decoded scan costs nothing there."""
    assert list(unmask.views("plain words, a path /usr/lib and a number 12345")) == []


def test_lone_surrogates_do_not_stop_the_scan() -> None:
    """A lone surrogate (as JSON "\\ud800" decodes) next to a secret, or escaped, does not break scanning."""
    text = json.loads('"\\ud800 ' + AWS_KEY + ' \\\\ud83d \\\\udc4d"')
    assert _found(text) == ["aws-access-key-id"]


def test_every_encoding_of_the_rule_examples_is_mostly_found() -> None:
    """Of every secrets-pack match example in every encoding, nearly all are found and fully redacted."""
    items = disguised_corpus(SECRETS)
    assert {item.encoding for item in items} == set(ENCODERS)
    found = fully = 0
    for item in items:
        if item.encoding in KEYED:
            continue  # held to their own figures (tests/test_rewritten_secrets.py)
        matches = SCANNER.scan(item.text, ScanBudget(UNHURRIED_S)).matches
        secrets = [match for match in matches if match.rule.pack == "secrets"]
        if any(match.start < item.end and match.end > item.start for match in secrets):
            found += 1
            # What ``scan_and_redact`` writes, without scanning the text again.
            redacted = redact_text(item.text, matches, RedactionStyle.PLACEHOLDER)
            fully += not _leftovers(item.text[item.start : item.end], redacted)
    assert found >= 0.95 * sum(item.encoding not in KEYED for item in items)
    assert fully >= 0.98 * found


def test_hard_negatives_stay_clean() -> None:
    """Hashes, digests, SRI strings, images, UUIDs, minified JS and escaped text hold no secret."""
    flagged = Counter(kind for kind, text in hard_negatives(per_kind=15) if _found(text))
    assert set(HARD_NEGATIVE_KINDS) >= set(flagged)
    assert sum(flagged.values()) == 0, flagged


def test_wrapped_base64_that_is_binary_and_hardware_addresses_stay_clean() -> None:
    """A MIME-wrapped image, MAC addresses and a short colon-separated fingerprint are not read as text."""
    image = base64.encodebytes(bytes(range(256)) * 4).decode()
    macs = "00:1a:2b:3c:4d:5e 00-1A-2B-3C-4D-5F, fe80::1ff:fe23:4567:890a"
    fingerprint = "SHA256 " + ":".join(f"{byte:02x}" for byte in bytes(range(200, 232)))
    for text in (image, macs, fingerprint):
        assert _found(text) == [], text


@pytest.mark.parametrize(
    "name",
    [
        "letter-spaced",
        "double-spaced",
        "entities of a spaced key",
        "percent",
        "tab-spaced",
        "mixed gaps",
        "dash-separated, the key's own dashes among them",
        "comma-separated with spaces",
        "one character a line",
        "base64 wrapped at 4, indented, CRLF",
    ],
)
def test_disguised_secret_streamed_character_by_character_never_shows(name: str) -> None:
    """Streamed one character at a time, a spaced or escaped secret is held until it can be read whole."""
    text = DISGUISES[name]
    redactor = StreamRedactor(SCANNER)
    out = "".join(redactor.feed(char) for char in text) + redactor.flush()
    assert out == scan_and_redact(SCANNER, text).text


@pytest.mark.parametrize("gap", [" ", "\t", "\u00a0", "  "])
def test_long_letter_spaced_run_is_one_piece_mapped_letter_by_letter(gap: str) -> None:
    """A megabyte of letter-spaced text becomes a view of a few pieces (not one per letter), and a
    letter-spaced secret in the middle of it is still found and mapped back over its own letters only."""
    filler = gap.join("a" * 200_000)
    text = filler + "\n" + gap.join(GITHUB_TOKEN) + "\n" + filler
    (view,) = list(unmask.views(text))
    assert len(view.pieces) < 10
    start = view.text.index(GITHUB_TOKEN)
    low, high = view.original(start, start + len(GITHUB_TOKEN))
    assert text[low:high] == gap.join(GITHUB_TOKEN)
    assert "github-pat" in _found(text)


def test_separated_key_is_redacted_over_its_own_characters_and_nothing_next_to_it() -> None:
    """A key written with a separator between its characters is redacted from its first character to its
    last; the word before it and the text after it stay."""
    separated = "-".join(GITLAB_TOKEN)
    text = f"ok, {separated} then more"
    redacted = scan_and_redact(SCANNER, text).text
    assert redacted.startswith("ok, [REDACTED:")
    assert redacted.endswith("] then more")
    assert not _leftovers(separated, redacted)


def test_a_compression_bomb_is_read_only_to_its_bound() -> None:
    """Base64 of a gzip bomb (20 KB that inflate to 20 MB) is inflated to a bounded size: the view
    holds at most MAX_INFLATED characters and the scan ends quickly, finding the key at its start."""
    bomb = gzip.compress(f"key={AWS_KEY} ".encode() + b"A" * 20_000_000, compresslevel=9, mtime=0)
    text = base64.b64encode(bomb).decode()
    started = time.process_time()
    inflated = [view for view in unmask.views(text) if view.kind == "base64+gzip"]
    assert inflated
    assert all(len(view.text) <= unmask.MAX_INFLATED for view in inflated)
    assert "aws-access-key-id" in _found(text)
    assert time.process_time() - started < 5


def test_compressed_text_without_a_key_and_short_lines_stay_clean() -> None:
    """Compressed configuration in base64, and lines of short words of one width, hold no secret."""
    config = json.dumps({"name": "svc", "replicas": 3, "image": "nginx:1.27"}).encode()
    texts = [
        base64.b64encode(gzip.compress(config, mtime=0)).decode(),
        base64.b64encode(zlib.compress(config)).decode(),
        "done\nexit\nquit\nnext\nstop\n------\n------\nABCDEF\n123456",
    ]
    for text in texts:
        assert _found(text) == [], text


def test_marks_superscripts_and_digits_of_other_scripts_stay_clean() -> None:
    """Accents written as combining marks, units with superscripts and numbers in Arabic-Indic or
    Devanagari digits are no disguise that makes a key of ordinary text."""
    texts = [
        "Cafe\u0301 cre\u0300me and the re\u0301sume\u0301 of Se\u00f1or Nu\u0301n\u0303ez",
        "Area 12 m\u00b2 and volume 3 m\u00b3; x\u2081 + x\u2082; \u2460 install \u2461 run",
        "\u0627\u0644\u0633\u0639\u0631 \u0663\u0665\u0660 order 12\u0664\u0665\u0666",
        "\u092e\u0942\u0932\u094d\u092f \u096a\u096b\u0966 INV2024\u096a\u096b",
    ]
    for text in texts:
        assert _found(text) == [], text


@pytest.mark.parametrize("gap", [chr(code) for code in unmask._GAP_CODES.tolist()])
def test_no_gap_character_is_a_disguise_feature(gap: str) -> None:
    """Text whose only non-ASCII characters are gaps skips the search for non-ASCII features: a gap
    must then be no look-alike, invisible or wide character, wherever it stands."""
    for text in (f"a{gap}b", f"{gap}{gap}{gap}{gap}", f"AKIA{gap}", f"{gap}ghp"):
        assert unmask._NON_ASCII.search(text) is None


# Characters (single ones mostly) each followed by a gap: every kind of space, several spaces, a line
# break; characters past ASCII among them (a lone surrogate too): the shapes a letter-spaced run's hint is
# made of, and what breaks them.
_HINT_CHARACTERS = ["a", "Z", "7", "_", "=", "-", "é", "\u0430", "\ud800", "\U0001d400", "ab", "word"]
_HINT_GAPS = [" ", "  ", "   ", "    ", "\t", "\u00a0", "\u2003", "\u3000", "\n", "\x0b", "\x85", "\u2028"]
_SPACED_TEXT = st.lists(
    st.sampled_from(_HINT_CHARACTERS).flatmap(lambda char: st.sampled_from(_HINT_GAPS).map(char.__add__)),
    max_size=40,
)


@given(_SPACED_TEXT.map(lambda pieces: " " + "".join(pieces)))
def test_hint_is_asked_only_where_its_shape_starts_and_found_as_the_search_finds_it(text: str) -> None:
    """Every letter-spaced run's hint the regex search finds, from any position, is the one found by
    asking the regex only where RE2 finds the hint's shape: so the runs, and the views, are the same."""
    hinted = unmask._gaps_as_spaces(text)
    probe = hinted.encode("ascii", "replace")
    for position in range(len(hinted) + 1):
        searched = unmask._SPACED_HINT.search(hinted, position)
        asked = unmask._next_hint(hinted, probe, position)
        assert (asked and asked.span()) == (searched and searched.span())


def _reference_standing_alone(encoded: bytes) -> list[int]:
    """Where a letter or digit stands with none either side, spelt out one byte at a time."""

    def alnum(position: int) -> bool:
        return (
            0 <= position < len(encoded)
            and chr(encoded[position]).isascii()
            and chr(encoded[position]).isalnum()
        )

    return [
        position
        for position in range(len(encoded))
        if alnum(position) and not alnum(position - 1) and not alnum(position + 1)
    ]


_STANDING_PIECES = ["a", "Z", "7", " ", "-", ".", ", ", "\n", "?", "ab", "_", "é", "s-k-p", "x = 1"]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(_STANDING_PIECES), max_size=80).map("".join))
def test_letters_standing_alone_are_those_of_the_obvious_reading(text: str) -> None:
    """The separated runs are looked for around the letters and digits standing alone that one
    translation finds: exactly those a byte-by-byte reading finds."""
    encoded = text.encode("ascii", "replace")
    assert unmask._standing_alone(encoded).tolist() == _reference_standing_alone(encoded)


@pytest.mark.skipif(not (DEV_DATA / carriers.TOOL_RESULTS_FILE).is_file(), reason="no development data here")
def test_letters_standing_alone_in_development_texts_are_those_of_the_obvious_reading() -> None:
    """Over the development data's tool results (docs, code, JSON, logs), the same positions."""
    texts = [carrier.text[:20_000] for carrier in carriers.load_tool_results(DEV_DATA)]
    assert len(texts) > 100
    for text in texts:
        encoded = text.encode("ascii", "replace")
        assert unmask._standing_alone(encoded).tolist() == _reference_standing_alone(encoded)


def _views_searched(text: str) -> list[unmask.View]:
    """The views of ``text`` (not nested), each kind searched for: what ``views`` yielded before its one
    RE2 pass over ASCII text could answer that there is none."""
    encoded = text.encode("ascii", "replace")
    return [
        *unmask._disguise_views(text, encoded, None),
        *unmask._segment_views(text, encoded, None),
        *unmask._code_views(text, encoded, None),
    ]


def _nothing_may_start_a_view(text: str) -> bool:
    encoded = text.encode("ascii")
    return not relaxed.possible(unmask._MAY_HOLD_VIEW, encoded, 0, len(encoded))


# Pieces of what each kind of view starts at, and of what comes near it without being it.
_START_PIECES = [
    *("the", "key", "is", "ok", "a", "Z", "7", "_", "I"),
    *(" ", "  ", "\t", "\n", "\r\n", ", ", ",", ".", "-", ":", "|", "+", "/", "=", "~", ";", "*"),
    *("%", "%4", "%41", "\\", "\\x4", "\\x41", "\\u0041", "\\101", "\\u{41}", "&", "&amp", "&amp;", "&#65;"),
    *("0x", "0x4", "0x41", "de", "ad", "be:", "ef-", "de:ad:be:ef:00:11:22:33:44:55:66"),
    *("QUJDREVG", "R0hJSktM", "TU5PUFFS", "abcdefghij", "0123456789", "Qw3rTy7u"),
    *("40", "040", "103", "104", "112", "95", "095", "127", "31", "chr(", ")", ")+", "||", "(103"),
]


@settings(max_examples=3000, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(_START_PIECES), max_size=40).map("".join))
def test_ascii_text_the_re2_pass_finds_nothing_in_has_no_view(text: str) -> None:
    """Where the one RE2 pass of what may start a view finds nothing in ASCII text, searching for each
    kind of view finds none either, so ``views`` answers without searching."""
    if _nothing_may_start_a_view(text):
        assert _views_searched(text) == []
        assert list(unmask.views(text)) == []
    else:
        assert [view.text for view in unmask.views(text, max_depth=1)] == [
            view.text for view in _views_searched(text)
        ]


def test_ascii_texts_of_every_corpus_with_nothing_to_start_a_view_have_none() -> None:
    """The disguised secrets, the hard negatives and the development data's tool results: every ASCII
    text the RE2 pass finds nothing in has no view, and the rest have the views they had."""
    texts = [item.text for item in disguised_corpus(PACKS)] + [text for _, text in hard_negatives()]
    if (DEV_DATA / carriers.TOOL_RESULTS_FILE).is_file():
        texts += [carrier.text[:20_000] for carrier in carriers.load_tool_results(DEV_DATA)]
    skipped = 0
    for text in texts:
        if text.isascii() and _nothing_may_start_a_view(text):
            skipped += 1
            assert _views_searched(text) == []
    assert skipped


def test_character_codes_with_a_leading_zero_start_a_view_and_give_it() -> None:
    """Codes written with a leading zero ("040") start the view-start regex, whose four codes must stand
    alone, as they start ``_code_views``: a stream's trigger is told of them and their view is read."""
    text = "the key is 040,41,42,43,044,045,046,047 ok"
    assert unmask._VIEW_START.search(text) is not None
    assert unmask.may_unmask(text, len("the key is "))
    assert not _nothing_may_start_a_view(text)
    assert [(view.kind, view.text) for view in unmask.views(text)] == [("codes", "()*+,-./")]


@pytest.mark.parametrize(
    ("meant", "unit", "glue"),
    [
        ("ghp_R7mQ2xVt9LkP4sZa8NwE3yHc6JfB1uDg0TiO", "{:03d}", ", "),
        ("AKIA)QYLPMN5HHHFPZAM2", "{:03d}", "\n"),
        ("xoxb-2231847539", "chr({:03d})", "+"),
    ],
)
def test_zero_padded_codes_are_read_as_the_decimal_numbers_they_spell(
    meant: str, unit: str, glue: str
) -> None:
    """A code padded to three digits is its decimal number, as a decoder's int() reads it: "095" is "_"
    (no octal digit is 9) and "041" is ")", not the "!" octal 041 would be."""
    written = "[" + glue.join(unit.format(ord(char)) for char in meant) + "]"
    assert [(view.kind, view.text) for view in unmask.views(written)] == [("codes", meant)]


def test_a_keys_groups_are_read_joined_and_in_the_case_of_its_format() -> None:
    """After a key's prefix, groups one separator parts are read joined, and a key of one case's format
    in the other case; the character either side stays, so a rule's edges read as in the text."""
    text = "id akia-QYLP-mn5h-HHFP-zam2, then"
    views = {view.kind: view.text for view in unmask.grouped_views(text, [(3, 7)], None)}
    assert views == {
        unmask.GROUPED: " akiaQYLPmn5hHHFPzam2,",
        unmask.UPPERCASED: " AKIAQYLPMN5HHHFPZAM2,",
        unmask.LOWERCASED: " akiaqylpmn5hhhfpzam2,",
    }


def test_groups_read_past_the_longest_key_of_their_prefix_give_no_view() -> None:
    """Groups of a prefix and a digit repeated (``akia2 akia2 ...``) were read in a view for each of up to
    64 ends, each as long as the groups before it: views 55 times as long as the text, some 19 ms of scan
    a KB. An end past the longest key the prefix leads is no view (AKIA's keys are 20 characters)."""
    text = "akia2 " * 2000
    prefixes = [(match.start(), match.end()) for match in re.finditer("akia", text)]
    views = list(unmask.grouped_views(text, prefixes, None, lambda prefix: 20))
    assert {view.text for view in views} >= {" akia2akia2akia2akia2 ", " AKIA2AKIA2AKIA2AKIA2 "}
    assert sum(len(view.text) for view in views) < len(text)


@pytest.mark.parametrize("word", ["pass", "auth", "password: pass"])
def test_a_key_in_groups_after_a_word_that_leads_no_key_is_found(word: str) -> None:
    """A keyword that is no key's prefix (``pass``, some rule's name for a password) starts no groups of
    its own: the key whose groups follow it is read from its own prefix, where the word's groups took it
    in and no rule read them."""
    text = f"{word} " + " ".join(GITHUB_TOKEN[at : at + 4] for at in range(0, len(GITHUB_TOKEN), 4)) + " ok"
    assert "github-pat" in {match.rule.id for match in SCANNER.scan_alone(text).found}


@pytest.mark.parametrize("unit", ["akia2 ", "AKIA2 ", "pass2 ", "ghp_a "])
def test_a_prefix_repeated_in_groups_is_scanned_in_time(unit: str) -> None:
    """40 KB of a prefix's groups repeated is scanned within a quarter of a second of CPU: it took from
    0.5 to 0.8 s (views 55 times the text), and takes some 40 ms; the bound leaves room for a loaded
    machine."""
    text = unit * (40 * 1024 // len(unit))
    assert least_cpu_seconds(lambda: SCANNER.scan_alone(text), runs=2) < 0.25


def _tagged(text: str) -> str:
    return "".join(chr(0xE0000 + ord(char)) for char in text)


PAST_ASCII_RUNS = {
    "tag characters of prose": _tagged("the quick brown fox reads its mail "),
    "right-to-left overrides": "\u202e",
    "zero-width spaces": "\u200b",
    "full-width letters": "\uff41\uff42\uff43",
}


@pytest.mark.parametrize("name", sorted(PAST_ASCII_RUNS))
def test_a_text_of_characters_past_ascii_is_scanned_in_time_linear_in_it(name: str) -> None:
    """40 KB of invisible, tag or wide characters is scanned within 30 ms of CPU, and 160 KB within
    six times that: each character past ASCII was read as base85 (a "?" to the hint, which every one
    stood for), and tag characters decoded one by one in Python, from 100 to 130 ms at 40 KB; some 2 to
    8 ms now. A key among them is still found."""
    unit = PAST_ASCII_RUNS[name]
    text = (unit * (40 * 1024 // len(unit) + 1))[: 40 * 1024]
    cost = least_cpu_seconds(lambda: SCANNER.scan_alone(text), runs=2)
    assert cost < 0.03
    longer = text * 4
    assert least_cpu_seconds(lambda: SCANNER.scan_alone(longer), runs=2) < max(6 * cost, 0.02)
    key = _tagged(GITHUB_TOKEN) if name.startswith("tag") else GITHUB_TOKEN
    assert "github-pat" in _found(f"{text} {key} {text}")


@pytest.mark.parametrize(
    "text",
    [
        f"x=10\nkey=3D{AWS_KEY[:7]}=\n{AWS_KEY[7:]}",
        f"Content-Transfer-Encoding: base64\n\nkey=3D{AWS_KEY[:7]}=\n{AWS_KEY[7:]}",
        f"Content-Transfer-Encoding: quoted-printable\n\nok\n--b\n\nkey=3D{AWS_KEY[:7]}=\n{AWS_KEY[7:]}",
    ],
    ids=["no declaration", "another encoding declared", "after the declared part's boundary"],
)
def test_quoted_printable_is_decoded_only_where_declared(text: str) -> None:
    """``=XX`` and a line's last ``=`` are read as quoted-printable only in the body of a part or mail
    that declares it: code's ``x=3D`` and ``a =`` ending a line are no escapes elsewhere."""
    assert [view.kind for view in unmask.views(text) if view.kind == unmask.QUOTED_PRINTABLE] == []
    assert not _found(text)


def test_groups_of_no_one_case_or_of_prose_give_no_view() -> None:
    """A group mixing cases is no key of one case written in another; words white space parts are no
    groups unless a digit stands in them; a separator going on to a run too long for a group ends nothing."""
    mixed = "akiaQyLp"
    assert [view.kind for view in unmask.grouped_views(mixed, [(0, 4)], None)] == []
    prose = "AKIA keys look like this"
    assert [view.text for view in unmask.grouped_views(prose, [(0, 4)], None)] == []
    long_run = "AKIA-QYLP-" + "A" * 60
    assert list(unmask.grouped_views(long_run, [(0, 4)], None)) == []


@pytest.mark.parametrize(
    ("pattern", "case"),
    [
        ("(?<![A-Za-z0-9_])AKIA[A-Z2-7]{16}(?![A-Za-z0-9_])", "upper"),
        ("dop_v1_[a-f0-9]{64}", "lower"),
        ("ghp_[A-Za-z0-9]{36}", None),
        ("(?i)akia[a-z0-9]{16}", None),
        ("api-(?:[a-f0-9]{8}|\\w+)", None),
    ],
)
def test_the_case_of_a_format(pattern: str, case: str | None) -> None:
    assert one_case(pattern) == case


def _png(text_chunk: bytes) -> bytes:
    """A 1x1 grey PNG with a ``tEXt`` chunk holding ``text_chunk`` (keyword, NUL, text)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = (1).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"tEXt", text_chunk)
        + chunk(b"IDAT", zlib.compress(b"\x00\x80"))
        + chunk(b"IEND", b"")
    )


BINARY_CARRIERS = {
    "base64 after two binary bytes": base64.b64encode(b"\xfb\xff deploy key " + AWS_KEY.encode()).decode(),
    "URL-safe base64 after two binary bytes": base64.urlsafe_b64encode(
        b"\xfb\xff" + GITHUB_TOKEN.encode()
    ).decode(),
    "base64 of a PNG whose text chunk holds a key": base64.b64encode(
        _png(b"Comment\x00" + GITHUB_TOKEN.encode())
    ).decode(),
    # The chunk's checksum after this key starts with a byte that reads "R", glued to the key.
    "base64 of a PNG whose checksum glues to the key": base64.b64encode(
        _png(b"Comment\x00deploy key AKIAQYLPMN5HHHFPZAM2")
    ).decode(),
    "base64 of a key then binary": base64.b64encode(AWS_KEY.encode() + bytes(range(128, 228))).decode(),
    "hex after a binary header": (b"\x89\x00\x01" + GITLAB_TOKEN.encode()).hex(),
}


@pytest.mark.parametrize("name", BINARY_CARRIERS)
def test_key_in_base64_or_hex_of_binary_is_found(name: str) -> None:
    """A segment that decodes to binary is read for its printable runs: a key there is found."""
    carrier = BINARY_CARRIERS[name]
    matches = [
        match for match in SCANNER.scan_alone(f"data: {carrier} end").matches if match.rule.pack == "secrets"
    ]
    assert matches
    assert all(match.disguise.endswith("+binary") for match in matches)


def test_binary_segments_without_a_key_raise_nothing() -> None:
    """Random bytes of every length in base64 and hex, and images with ordinary metadata, are no secret."""
    generator = random.Random(7)  # noqa: S311 - reproducible test bytes, not a secret
    for length in range(16, 600, 7):
        raw = generator.randbytes(length)
        for encoded in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(), raw.hex()):
            assert _found(f"blob: {encoded}") == [], encoded
    for metadata in (
        b"Software\x00Adobe ImageReady",
        b"Model\x00Canon EOS 5D Mark IV",
        b"Comment\x00Created with GIMP",
    ):
        assert _found(base64.b64encode(_png(metadata)).decode()) == []


def test_short_binary_segments_are_not_read_for_runs() -> None:
    """Digests and short binary hold too little for a key beside binary: no view."""
    assert list(unmask.views("sha256-" + base64.b64encode(bytes(range(200, 232))).decode())) == []
    assert list(unmask.views(bytes(range(160, 192)).hex())) == []


@pytest.mark.parametrize(
    "path",
    [
        "https://x.test/v1/{}",
        "GET /v1/chat/completions/{}/x",
        "/api/v1/files/{}/content",
        "see /v1/{} and /v2/{}",
        "x/{}",
    ],
)
@pytest.mark.parametrize("key", [AWS_KEY, GITHUB_TOKEN, f"https://x.test/?key={GITHUB_TOKEN}"])
def test_a_key_in_base64_as_a_path_segment_is_redacted_with_that_segment_alone(path: str, key: str) -> None:
    """Base64's alphabet holds "/": a key's base64 between a path's slashes is found wherever it stands,
    and the path before it stays as written."""
    encoded = base64.b64encode(key.encode()).decode()
    redacted = scan_and_redact(SCANNER, path.format(encoded, encoded)).text
    before = path.split("{}")
    assert encoded[4:-4] not in redacted
    assert re.match(r"\[REDACTED:[^\]]*\]".join(map(re.escape, before[:-1])), redacted), redacted


def test_paths_of_base64_ids_and_words_stay_clean() -> None:
    """Paths of ids, digests and words (no key in any segment) give nothing, whole or segment by segment."""
    generator = random.Random(11)  # noqa: S311 - reproducible test bytes, not a secret
    segments = [base64.urlsafe_b64encode(generator.randbytes(24)).decode() for _ in range(6)]
    for path in (
        "/v1/projects/" + "/".join(segments),
        "/repos/octocat/Hello-World/git/commits/7638417db6d59f3c431d3e1f261cc637155684cd/statuses",
        "/v1/files/" + base64.b64encode(b"quarterly-report-2024.pdf").decode() + "/content",
    ):
        assert _found(path) == [], path


OPENAI_KEY = "sk-proj-" + "Xy7Qa9Lm2Np4Rs6Tu8Vw0Yz1Bc3De5Fg7Hi9Jk2Lm4No6Pq8Rs0Tu2Vw4Xy6Za8Bc0De2Fg4Hi6"
ASSEMBLED = {
    "python format": f'a = "sk-proj-"\nb = "{OPENAI_KEY[8:]}"\nkey = "{{}}{{}}".format(a, b)',
    "python percent": f'a = "sk-proj-"\nb = "{OPENAI_KEY[8:]}"\nkey = "%s%s" % (a, b)',
    "python join": f'a = "sk-"\nb = "proj-"\nc = "{OPENAI_KEY[8:]}"\nkey = "".join([a, b, c])',
    "python plus": f"b = '{OPENAI_KEY[8:]}'\na = 'sk-proj-'\nkey = a + b",
    "python f-string": f'a = "gh"\nb = "{GITHUB_TOKEN[2:]}"\nheaders = {{"Authorization": f"{{a}}{{b}}"}}',
    "js template": f'const a = "sk-proj-"; const b = "{OPENAI_KEY[8:]}"; const k = `${{a}}${{b}}`;',
    "js template with text": f"let a = 'gh'; let b = '{GITHUB_TOKEN[4:]}'; f(u, {{t: `${{a}}p_${{b}}`}})",
    "shell": f'A=sk-proj-\nB={OPENAI_KEY[8:]}\ncurl -H "Authorization: Bearer $A$B" {{url}}',
    "shell quoted": f'export A="AKIA"\nexport B="{AWS_KEY[4:]}"\necho "$A$B"',
    "shell braced": f'A=gh\nB=p_{GITHUB_TOKEN[4:]}\necho "${{A}}${{B}}"',
    "php": f"$a = 'AKIA';\n$b = '{AWS_KEY[4:]}';\n$key = $a . $b;",
    "go": f'a := "gh"\nb := "{GITHUB_TOKEN[2:]}"\nkey := a + b',
}


@pytest.mark.parametrize("name", sorted(ASSEMBLED))
def test_a_key_assembled_from_names_assigned_its_pieces_is_found_where_they_are_assigned(name: str) -> None:
    """Pieces of a key assigned to names, then used together in a template or an expression, are read
    joined: the key is found, and no piece of it is left in the text."""
    text = ASSEMBLED[name]
    assert _found(text)
    redacted = scan_and_redact(SCANNER, text).text
    for key in (OPENAI_KEY, GITHUB_TOKEN, AWS_KEY):
        assert not any(key[index : index + 8] in redacted for index in range(2, len(key) - 7)), redacted


def test_names_used_together_in_ordinary_code_give_nothing() -> None:
    """Names assigned words, paths, versions and ids, used together in templates and expressions, as
    code and scripts do every day, are no key."""
    for text in (
        'greeting = "Hello"\nname = "World"\nprint(f"{greeting}, {name}!", "{}{}".format(greeting, name))',
        'first = "Ada"\nlast = "Lovelace"\nfull = first + " " + last\nlabel = "%s%s" % (first, last)',
        'DIR=/opt/app\nFILE=config.yaml\nVERSION=1.2.3\ncp "$DIR/$FILE" "${DIR}/${FILE}.${VERSION}.bak"',
        "const host = 'api'; const zone = 'eu-west-1'; const url = `https://${host}.${zone}.example.com`;",
        'sha = "7638417db6d59f3c431d3e1f261cc637155684cd"\nref = "refs/heads/main"\nlog(sha + ref)',
        'a = "AKIA"\nb = "is the prefix of an AWS key id"\nprint(a, b)',
    ):
        assert _found(text) == [], text


@pytest.mark.parametrize(
    "gap",
    [" " * 129, " " * 5000, "\u00a0" * 300, "\n\n\n", "\n \n\t\n  \n", "\u200b" * 200 + " " * 200],
    ids=["129 spaces", "5000 spaces", "300 no-break spaces", "3 line breaks", "indented lines", "invisible"],
)
def test_a_key_cut_inside_its_prefix_by_white_space_of_any_length_is_found(gap: str) -> None:
    """However much white space cuts a key's prefix, the key is read joined: no length of it is one more
    space than the reading takes."""
    for key in (GITHUB_TOKEN, AWS_KEY):
        text = f"the key is {key[:2]}{gap}{key[2:]} ok"
        assert _found(text), gap
        assert key[4:12] not in scan_and_redact(SCANNER, text).text


# -- binary codes, separators past ASCII, Caesar shifts and ROT47 ------------------------------------------

OPENAI_KEY = "sk-proj-" + "AbC3dEf9GhJkLmN0pQrStUvWxYz12345AbC3dEf9GhJkLmN0"
ANTHROPIC_KEY = (
    "sk-ant-api03-"
    + "TOt9aL0Mk6OCVJ3iWHwF2dylxG5C1YLDa2iqN1Zv7SScN1TeqLcC5FJp5jjEMXiE09JQkk6aMnAlo9yYo6MJWjIXOjznMAA"
)
SLACK_TOKEN = "xoxb-" + "2231847539-8843201927364-Kq4ZtVm8PwRy2NsB7cLdXe3H"
KEYS = {
    "github-pat": GITHUB_TOKEN,
    "aws-access-key-id": AWS_KEY,
    "openai-project-key": OPENAI_KEY,
    "anthropic-api-key": ANTHROPIC_KEY,
    "slack-bot-token": SLACK_TOKEN,
}


def _bits(width: int, separator: str) -> Callable[[str], str]:
    return lambda key: separator.join(f"{ord(char):0{width}b}" for char in key)


def _shifted(letters: int, digits: int = 0) -> Callable[[str], str]:
    return lambda key: key.translate(caesar_table(letters, digits))


WRITTEN_APART = {
    "8-bit binary codes": _bits(8, " "),
    "8-bit binary codes in a row": _bits(8, ""),
    "8-bit binary codes one a line": _bits(8, "\n"),
    "7-bit binary codes after commas": _bits(7, ", "),
    "7-bit binary codes in a row": _bits(7, ""),
    "an emoji between its characters": "\U0001f642".join,
    "a bullet between its characters": "\u2022".join,
    "an arrow between its characters": "\u2192".join,
    "a middle dot between its characters": "\u00b7".join,
    "a bullet and spaces between its characters": " \u2022 ".join,
    "letters moved one on": _shifted(1),
    "letters moved three on": _shifted(3),
    "letters moved twenty-five on": _shifted(25),
    "letters moved seven on, digits too": _shifted(7, 7),
    "letters moved twelve on, digits two": _shifted(12, 12),
    "rot47": lambda key: key.translate(ROT47_TABLE),
}
"""A key written as the binary codes of its characters, with a separator past ASCII between its characters,
or shifted along the alphabet (its digits left or moved as far along theirs) or along printable ASCII."""


@pytest.mark.parametrize("rule", sorted(KEYS))
@pytest.mark.parametrize("name", sorted(WRITTEN_APART))
def test_a_key_in_binary_codes_separated_past_ascii_or_shifted_is_found_and_redacted(
    name: str, rule: str
) -> None:
    written = WRITTEN_APART[name](KEYS[rule])
    text = f"here: {written} end"
    matches = [match for match in SCANNER.scan_alone(text).matches if match.rule.pack == "secrets"]
    assert rule in {match.rule.id for match in matches}
    assert all(match.disguise for match in matches)
    redacted = scan_and_redact(SCANNER, text).text
    assert redacted.startswith("here: [REDACTED:") and redacted.endswith("] end"), redacted
    assert not _leftovers(written, redacted)


@pytest.mark.parametrize("name", sorted(WRITTEN_APART))
def test_a_key_in_binary_codes_separated_past_ascii_or_shifted_never_shows_in_a_stream(name: str) -> None:
    """Streamed a character or seven at a time, such a key is held until it is read whole."""
    text = f"the key: {WRITTEN_APART[name](GITHUB_TOKEN)} done"
    for size in (1, 7):
        redactor = StreamRedactor(SCANNER)
        pieces = [text[index : index + size] for index in range(0, len(text), size)]
        out = "".join(redactor.feed(piece) for piece in pieces) + redactor.flush()
        assert out == scan_and_redact(SCANNER, text).text
        assert "[REDACTED:" in out


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        (_bits(8, " ")("Hi there"), "Hi there"),
        (_bits(8, "")("Hello, world"), "Hello, world"),
        (_bits(7, "\n")("password"), "password"),
        (_bits(7, "")("12345678"), "12345678"),
    ],
)
def test_binary_codes_are_read_as_the_characters_they_spell(written: str, meant: str) -> None:
    """Octets or 7-bit groups, apart or in a row (cut where every group is printable ASCII), each
    character mapped to where its group starts."""
    (view,) = [view for view in unmask.views(written) if view.kind == unmask.CODES]
    assert view.text == meant
    step = -(-len(written) // len(meant))  # a group and what follows it
    assert view.original(1, 2) == (step, step + 1)


def test_a_binary_run_of_no_printable_characters_is_no_view() -> None:
    """Bits that are no printable ASCII in octets nor in 7-bit groups (a mask, a register) spell nothing."""
    text = "mask " + "00000001" * 9 + " regs " + " ".join(["11111111"] * 8)
    assert [view for view in unmask.views(text) if view.kind == unmask.CODES] == []


BENIGN_LOOK_ALIKES = {
    "binary dumps of words": (
        " ".join(f"{ord(char):08b}" for char in "deploy the release on friday")
        + "\n"
        + "".join(f"{ord(char):08b}" for char in "Hello, world")
        + "\n"
        + " ".join(f"{ord(char):07b}" for char in "shipping refund vendor")
        + "\nflags 10110010 01001101 11100001 00011110 10101010 01010101 11110000 00001111"
    ),
    "bullet lists": "\u2022 agent \u2022 report \u2022 summary\n" + " \u2022 ".join("\u2022abcdefg"),
    "arrows in prose and state machines": (
        "build \u2192 test \u2192 deploy \u2192 monitor; states " + "\u2192".join("ABCDEFGHI")
    ),
    "middle dots in addresses and menus": (
        "12 Rue de la Paix \u00b7 75002 Paris \u00b7 France\nHome \u00b7 Docs \u00b7 Blog; grades "
        + "\u00b7".join("PIRHGZXTU")
        + ", "
        + "\u00b7".join("12345678")
    ),
    "emoji between words and letters": "ship \U0001f680 it \U0001f680 now; " + "\U0001f642".join("abcdefgh"),
    "identifiers that start as a shifted prefix": (
        "a low-level API; hit_count = hit_count_total + 1; DNLD_REGION = 'eu'; jks_review = load()\n"
        "`12-jdk17-al2023-amazoncorretto`, bljb-mirror, 89A0 89A0, Caesar(3) of attack is dwwdfn"
    ),
}


@pytest.mark.parametrize("name", sorted(BENIGN_LOOK_ALIKES))
def test_text_that_looks_written_apart_or_shifted_stays_clean(name: str) -> None:
    text = BENIGN_LOOK_ALIKES[name]
    assert _found(text) == []
    assert scan_and_redact(SCANNER, text).text == text
    redactor = StreamRedactor(SCANNER)
    assert "".join(redactor.feed(char) for char in text) + redactor.flush() == text


LOOKING_SHIFTED: dict[str, Callable[[int], str]] = {
    # ROT47 of "ghp_" is "89A0": with a small "a" it turns back to no prefix.
    "hex digests": lambda index: f"89a0{index:036x}",
    # "ghs_" moved one on, before a word of small letters.
    "identifiers": lambda index: f" hit_count_{index}",
    # "AKIA" moved three on, before no key's rest (no digit, no capital).
    "constants": lambda index: "DNLD_region_name_value",
    # "DO00" moved back two, in small letters: base64 of text that starts with "not".
    "base64 of notes": lambda index: base64.b64encode(f"note number {index} of many".encode()).decode(),
}


@pytest.mark.parametrize("name", sorted(LOOKING_SHIFTED))
def test_many_tokens_that_only_look_shifted_are_read_in_time(name: str) -> None:
    """Hundreds of tokens that start as a shifted prefix, none of them a key, make no view each: a log
    of hex digests, code full of such identifiers or base64 of notes is read, not out of time."""
    text = " ".join(LOOKING_SHIFTED[name](index) for index in range(600))
    result = SCANNER.scan_alone(text)
    assert result.timed_out == ()
    assert result.found == []


@pytest.mark.parametrize("separator", ["\u0301", "\u2022", "-"])
def test_a_separated_run_reaches_back_only_over_ascii(separator: str) -> None:
    """Text written with combining accents (each letter followed by U+0301, as decomposed text is) reads
    as letters with a separator past ASCII between them; a run reaching back over a letter that is not
    ASCII would be no view's to keep: such text is read, and a key separated after one is found."""
    decomposed = (
        "use \u0179\u00e9 \u0301m\u0301i\u0301r\u0301 \u0301u\u0301\u00fc\u0301n\u0301g\u0301e\u0301n\u0301"
    )
    assert scan_and_redact(SCANNER, decomposed).text == decomposed
    key = "ghp_" + "Qw3rTy7uIo9pAs2dFg4hJk6lZx8cVb1nMq5W"
    text = "\u00fc" + separator + separator.join(key) + " end"
    assert scan_and_redact(SCANNER, text).text == "\u00fc" + separator + "[REDACTED:github-pat] end"
