"""Redaction of text, JSON values and streams of deltas."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re
import string

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.model import Severity, Threat
from proxy.scanning.redact import (
    ByteStreamRedactor,
    RedactionStyle,
    StreamRedactor,
    fingerprint,
    redact_json,
    redact_text,
    scan_and_redact,
    scan_glued,
)
from proxy.scanning.rulepack import WORD_START, Rule, RulePack, Scanner, ScanTimeout, load_pack, pack_path

GITHUB_TOKEN = "ghp_" + "Qw3rTy7uIo9pAs2dFg4hJk6lZx8cVb1nMq5W"
STRIPE_KEY = "sk_live_" + "Zr8Kq2Wm5Tx9Lp3Vb7Nc1Hd6Fg4Js0Ye"
KEY = b"per-install-test-key"
# Random base64 lines in the shape of a key body: not a key.
_BODY_RNG = random.Random(20261124)  # noqa: S311 - synthetic filler, not cryptography
KEY_BODY = [
    "".join(_BODY_RNG.choice(string.ascii_letters + string.digits + "+/") for _ in range(64))
    for _ in range(3)
]
PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(KEY_BODY) + "\n-----END RSA PRIVATE KEY-----"


@pytest.fixture(scope="module")
def scanner() -> Scanner:
    return Scanner([load_pack(pack_path("secrets")), load_pack(pack_path("pii"))])


def _stream(redactor: StreamRedactor, text: str, seed: int = 0) -> list[str]:
    """Feed ``text`` as 1-3 character deltas; return every chunk released, flush included."""
    rng = random.Random(seed)  # noqa: S311 - reproducible split points, not cryptography
    chunks: list[str] = []
    position = 0
    while position < len(text):
        size = rng.randint(1, 3)
        chunks.append(redactor.feed(text[position : position + size]))
        position += size
    chunks.append(redactor.flush())
    return chunks


def test_default_placeholder_names_the_rule(scanner: Scanner) -> None:
    """The default style replaces the value with [REDACTED:<rule-id>]."""
    result = scan_and_redact(scanner, f"token {GITHUB_TOKEN} here")
    assert result.text == "token [REDACTED:github-pat] here"


def test_hash_style_uses_eight_hex_of_the_keyed_hmac(scanner: Scanner) -> None:
    """The hash style appends the first 8 hex digits of the keyed fingerprint."""
    result = scan_and_redact(scanner, GITHUB_TOKEN, RedactionStyle.HASH, key=KEY)
    assert result.text == f"[REDACTED:github-pat:{fingerprint(GITHUB_TOKEN, KEY)[:8]}]"
    assert re.fullmatch(r"\[REDACTED:github-pat:[0-9a-f]{8}\]", result.text)


def test_last4_style_keeps_the_last_four_characters(scanner: Scanner) -> None:
    """The last4 style shows only the last four characters of a long value."""
    result = scan_and_redact(scanner, GITHUB_TOKEN, RedactionStyle.LAST4)
    assert result.text == f"[REDACTED:github-pat:...{GITHUB_TOKEN[-4:]}]"


def test_fingerprint_is_hmac_sha256_and_depends_on_the_key() -> None:
    """Fingerprints are HMAC-SHA256 hex, stable per key and different across keys."""
    expected = hmac.new(KEY, GITHUB_TOKEN.encode(), hashlib.sha256).hexdigest()
    assert fingerprint(GITHUB_TOKEN, KEY) == expected
    assert fingerprint(GITHUB_TOKEN, b"other-install") != expected


def test_redact_text_replaces_every_span(scanner: Scanner) -> None:
    """redact_text replaces each match and leaves the rest untouched."""
    text = f"a {GITHUB_TOKEN} b {STRIPE_KEY} c"
    matches = scanner.scan_alone(text).matches
    assert redact_text(text, matches) == "a [REDACTED:github-pat] b [REDACTED:stripe-live-secret-key] c"


def test_redactions_carry_rule_and_fingerprint_but_never_the_value(scanner: Scanner) -> None:
    """What is recorded about a redaction holds no part of the value."""
    result = scan_and_redact(scanner, f"key {STRIPE_KEY}", key=KEY)
    [redaction] = result.redactions
    assert redaction.rule_id == "stripe-live-secret-key"
    assert redaction.fingerprint == fingerprint(STRIPE_KEY, KEY)
    assert STRIPE_KEY not in repr(result.redactions)


def test_json_stays_valid_after_redaction(scanner: Scanner) -> None:
    """Strings inside a JSON value are redacted; the structure and other values stay as they were."""
    body = {
        "messages": [{"role": "user", "content": f"use {GITHUB_TOKEN} please"}],
        "temperature": 0.2,
        "meta": {"note": "nothing here", "n": [1, 2, None, True]},
        "pem": PRIVATE_KEY,
    }
    redacted, redactions = redact_json(body, scanner)
    encoded = json.dumps(redacted)
    assert json.loads(encoded) == redacted
    assert redacted["messages"][0]["content"] == "use [REDACTED:github-pat] please"
    assert redacted["meta"] == body["meta"]
    assert redacted["pem"] == "[REDACTED:private-key-rsa]"
    assert {redaction.rule_id for redaction in redactions} == {"github-pat", "private-key-rsa"}
    assert GITHUB_TOKEN not in encoded


@pytest.mark.parametrize("seed", range(5))
def test_stream_of_tiny_deltas_redacts_the_secret(scanner: Scanner, seed: int) -> None:
    """A secret fed as 1-3 character deltas is redacted and the text after it still arrives."""
    text = f"Your token is {GITHUB_TOKEN} and the rest of the answer follows."
    chunks = _stream(StreamRedactor(scanner), text, seed)
    assert "".join(chunks) == "Your token is [REDACTED:github-pat] and the rest of the answer follows."
    assert all(GITHUB_TOKEN[:8] not in chunk for chunk in chunks)


def test_stream_output_equals_whole_text_redaction(scanner: Scanner) -> None:
    """Streaming yields the same text as redacting the whole text at once."""
    text = f"one {GITHUB_TOKEN}\ntwo {STRIPE_KEY}, SSN 123-45-6789, card 4539 5787 6362 1486. end"
    streamed = "".join(_stream(StreamRedactor(scanner), text))
    assert streamed == scan_and_redact(scanner, text).text


def test_spaced_number_split_across_deltas_is_held_whole(scanner: Scanner) -> None:
    """A card number with spaces is held until it is complete, so no group leaks early."""
    redactor = StreamRedactor(scanner)
    released = redactor.feed("card 4539 5787 ") + redactor.feed("6362 1486") + redactor.feed(" ok")
    released += redactor.flush()
    assert released == "card [REDACTED:payment-card] ok"


def test_plain_text_flows_without_delay(scanner: Scanner) -> None:
    """Text ending in whitespace is released at once; only the open trailing word is held."""
    redactor = StreamRedactor(scanner)
    assert redactor.feed("hello there ") == "hello there "
    assert redactor.feed("gener") == ""
    assert redactor.feed("al kenobi") == "general "
    assert redactor.flush() == "kenobi"


def test_private_key_block_is_suppressed_while_streaming(scanner: Scanner) -> None:
    """Nothing from BEGIN to END reaches the output; the text after the block does."""
    text = f"Here you go:\n{PRIVATE_KEY}\nKeep it safe."
    redactor = StreamRedactor(scanner)
    chunks = _stream(redactor, text)
    output = "".join(chunks)
    assert output == "Here you go:\n[REDACTED:private-key-rsa]\nKeep it safe."
    assert not any(line[:16] in output for line in KEY_BODY)
    assert [redaction.rule_id for redaction in redactor.redactions] == ["private-key-rsa"]


KEY_BLOCK_EXAMPLES = [
    pytest.param(rule.id, example, id=f"{rule.id}:{number}")
    for rule in load_pack(pack_path("secrets")).rules
    # The header rule's examples are keys cut off before their END line: a stream withholds those to
    # its end (test_unterminated_private_key_is_suppressed_at_flush).
    if rule.id.startswith("private-key-") and rule.id != "private-key-header"
    for number, example in enumerate(rule.match_examples)
]


@pytest.mark.parametrize(("rule_id", "block"), KEY_BLOCK_EXAMPLES)
def test_every_kind_of_key_block_is_suppressed_while_streaming(
    scanner: Scanner, rule_id: str, block: str
) -> None:
    """Each private key example of the secrets pack is withheld whole when streamed in tiny deltas."""
    output = "".join(_stream(StreamRedactor(scanner), f"before\n{block}\nafter"))
    assert output == f"before\n[REDACTED:{rule_id}]\nafter"


def test_unterminated_private_key_is_suppressed_at_flush(scanner: Scanner) -> None:
    """A key block cut off by the end of the stream is still withheld."""
    redactor = StreamRedactor(scanner)
    text = "key:\n-----BEGIN OPENSSH PRIVATE KEY-----\n" + KEY_BODY[0] + "\n" + KEY_BODY[1]
    output = "".join(_stream(redactor, text))
    assert output == "key:\n[REDACTED:private-key-openssh]"


def test_private_key_inside_a_json_string_stream_is_suppressed(scanner: Scanner) -> None:
    """A key streamed as JSON-escaped text (escaped newlines) is suppressed too."""
    escaped = json.dumps({"content": PRIVATE_KEY, "after": "still here"})
    output = "".join(_stream(StreamRedactor(scanner), escaped))
    assert json.loads(output) == {"content": "[REDACTED:private-key-rsa]", "after": "still here"}


def test_key_marker_quoted_in_prose_does_not_suppress_the_answer(scanner: Scanner) -> None:
    """A BEGIN marker mentioned inside a sentence is not a key block: the rest of the text flows."""
    text = "A PEM key file starts with -----BEGIN RSA PRIVATE KEY----- on its first line. Next point."
    assert "".join(_stream(StreamRedactor(scanner), text)) == text


def test_key_block_without_end_stops_suppressing_after_the_longest_key(scanner: Scanner) -> None:
    """A block that never ends is cut off after the longest key size and the stream resumes."""
    redactor = StreamRedactor(scanner)
    released = redactor.feed("-----BEGIN PRIVATE KEY-----\n")
    released += redactor.feed(("A" * 63 + "\n") * 300)
    released += redactor.feed(" and then the answer goes on.") + redactor.flush()
    assert released.startswith("[REDACTED:private-key-pkcs8]")
    assert released.endswith(" and then the answer goes on.")
    assert len(released) < 4000


def test_long_run_without_whitespace_never_stalls(scanner: Scanner) -> None:
    """A long unbroken run is released progressively; at most max_hold characters are held."""
    redactor = StreamRedactor(scanner, max_hold=256)
    blob = "QUJD" * 2_000
    released = ""
    for position in range(0, len(blob), 100):
        released += redactor.feed(blob[position : position + 100])
        assert len(blob[: position + 100]) - len(released) <= 256
    assert released
    assert released + redactor.flush() == blob


def test_stream_records_fingerprints_of_redacted_values(scanner: Scanner) -> None:
    """The redactor exposes what it redacted, as rule ids and keyed fingerprints."""
    redactor = StreamRedactor(scanner, RedactionStyle.HASH, key=KEY)
    "".join(_stream(redactor, f"a {STRIPE_KEY} b"))
    assert [(redaction.rule_id, redaction.fingerprint) for redaction in redactor.redactions] == [
        ("stripe-live-secret-key", fingerprint(STRIPE_KEY, KEY))
    ]


PROVIDER_EXAMPLES = [
    example
    for rule in load_pack(pack_path("secrets")).rules
    if not rule.id.startswith(("generic-", "dotenv-", "private-key-"))
    for example in rule.match_examples
]
FILLER = ["hello", " ", "\n", "token", "=", ": ", '"', "the api_key is ", ",", "password", "x"]


# Derandomized: a random draw now and then glues two Fly tokens, the known discrepancy the strict xfail
# below keeps in view, and the suite must not pass or fail by the draw.
@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    pieces=st.lists(st.sampled_from(PROVIDER_EXAMPLES) | st.sampled_from(FILLER), min_size=1, max_size=10),
    sizes=st.lists(st.integers(1, 4), min_size=1, max_size=20),
)
def test_stream_never_releases_what_whole_text_redaction_hides(
    scanner: Scanner, pieces: list[str], sizes: list[int]
) -> None:
    """However the text is split, no 12 characters of a value hidden by whole-text redaction stream out."""
    text = "".join(pieces)
    redactor = StreamRedactor(scanner)
    chunks, position = [], 0
    for number in range(len(text)):
        if position >= len(text):
            break
        size = sizes[number % len(sizes)]
        chunks.append(redactor.feed(text[position : position + size]))
        position += size
    streamed = "".join(chunks) + redactor.flush()
    whole = scan_and_redact(scanner, text).text
    for match in scanner.scan_alone(text, merge=False).matches:
        value = text[match.start : match.end]
        hidden = {value[i : i + 12] for i in range(len(value) - 11)} - {""}
        assert not {part for part in hidden if part not in whole and part in streamed}


def test_text_read_ahead_goes_out_with_its_own_delta(scanner: Scanner) -> None:
    """Told what its next feeds bring, the redactor releases a word another delta completes at once; past
    that text it holds the open word again."""
    redactor = StreamRedactor(scanner)
    redactor.expect("hello gener" + "al kenobi")
    assert redactor.feed("hello gener") == "hello gener"
    assert redactor.feed("al kenobi") == "al "
    assert redactor.feed(" and") == "kenobi "
    assert redactor.flush() == "and"


def test_a_secret_read_ahead_is_held_from_its_start_and_recorded_once(scanner: Scanner) -> None:
    redactor = StreamRedactor(scanner)
    deltas = ["token ", GITHUB_TOKEN[:6], GITHUB_TOKEN[6:20], GITHUB_TOKEN[20:] + " ok", " then"]
    redactor.expect("".join(deltas[:4]))
    released = [redactor.feed(delta) for delta in deltas] + [redactor.flush()]
    assert released == ["token ", "", "", "[REDACTED:github-pat] ", "ok ", "then"]
    assert [redaction.rule_id for redaction in redactor.redactions] == ["github-pat"]


# Derandomized as the test above is, for the same reason.
@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    pieces=st.lists(st.sampled_from(PROVIDER_EXAMPLES) | st.sampled_from(FILLER), min_size=1, max_size=10),
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=20),
    bursts=st.lists(st.integers(1, 8), min_size=1, max_size=6),
)
def test_bursts_read_ahead_never_release_what_whole_text_redaction_hides(
    scanner: Scanner, pieces: list[str], sizes: list[int], bursts: list[int]
) -> None:
    """Deltas fed in bursts whose text is announced first (``expect``) release no 12 characters of a value
    that whole-text redaction hides."""
    text = "".join(pieces)
    deltas: list[str] = []
    position = 0
    while position < len(text):
        deltas.append(text[position : position + sizes[len(deltas) % len(sizes)]])
        position += len(deltas[-1])
    redactor = StreamRedactor(scanner)
    streamed, fed = "", 0
    for number in range(len(deltas)):
        if fed >= len(deltas):
            break
        burst = deltas[fed : fed + bursts[number % len(bursts)]]
        fed += len(burst)
        redactor.expect("".join(burst))
        streamed += "".join(redactor.feed(delta) for delta in burst)
    streamed += redactor.flush()
    whole = scan_and_redact(scanner, text).text
    for match in scanner.scan_alone(text, merge=False).matches:
        value = text[match.start : match.end]
        hidden = {value[i : i + 12] for i in range(len(value) - 11)} - {""}
        assert not {part for part in hidden if part not in whole and part in streamed}


@pytest.mark.xfail(
    strict=True,
    reason="two glued Fly tokens: whole-text redaction hides the second one's key name inside the first"
    " token's value, while the stream releases that name before it sees the value is one",
)
def test_two_glued_fly_tokens_stream_as_whole_text_redaction_hides_them(scanner: Scanner) -> None:
    """What whole-text redaction hides of two Fly tokens written with nothing between them stays hidden
    when they stream a character a burst."""
    token = next(example for example in PROVIDER_EXAMPLES if example.startswith("FLY_API_TOKEN="))
    text = token + token
    redactor = StreamRedactor(scanner)
    streamed = ""
    for character in text:
        redactor.expect(character)
        streamed += redactor.feed(character)
    streamed += redactor.flush()
    whole = scan_and_redact(scanner, text).text
    for match in scanner.scan_alone(text, merge=False).matches:
        value = text[match.start : match.end]
        hidden = {value[i : i + 12] for i in range(len(value) - 11)}
        assert not {part for part in hidden if part not in whole and part in streamed}


def test_byte_stream_redactor_reads_split_characters_and_keeps_bytes_that_are_not_text() -> None:
    """UTF-8 characters split across chunks are read whole; bytes that are not UTF-8 pass unchanged and do
    not stop the redaction of the text around them."""
    scanner = Scanner([load_pack(pack_path("secrets"))])
    text = "clé 🔑 AKIAQWERTY234567ABCD fin".encode()
    redactor = ByteStreamRedactor(StreamRedactor(scanner))
    out = b"".join(redactor.feed(text[index : index + 1]) for index in range(len(text))) + redactor.flush()
    assert out.decode() == "clé 🔑 [REDACTED:aws-access-key-id] fin"
    binary = ByteStreamRedactor(StreamRedactor(scanner))
    blob = b"\x89PNG\r\n\x1a\n\xff\xfe AKIAQWERTY234567ABCD \xe2\x82"
    out = binary.feed(blob[:3]) + binary.feed(blob[3:]) + binary.flush()
    assert out == b"\x89PNG\r\n\x1a\n\xff\xfe [REDACTED:aws-access-key-id] \xe2\x82"


def backtracking_scanner() -> Scanner:
    """A pack whose one rule backtracks without end on ``k=`` and a run of ``a`` not ended by ``b``."""
    rule = Rule(
        id="slow",
        description="backtracks without end",
        pattern=regex.compile(r"k=(?:a|aa)+b"),
        keywords=("k=",),
        threat=Threat.DATA_EXFILTRATION,
        severity=Severity.HIGH,
        owasp="LLM02",
        entropy=None,
        validator=None,
        secret_group=0,
        match_examples=("k=ab",),
        no_match_examples=(),
        enabled=True,
    )
    return Scanner(
        [RulePack("slow", Threat.DATA_EXFILTRATION, True, (rule,))], timeout_s=0.002, rescan_s=0.02
    )


@pytest.mark.parametrize("pieces", [1, 3, 9])
def test_a_stream_redactor_releases_nothing_of_a_window_a_rule_ran_out_of_time_on(pieces: int) -> None:
    """However the text comes, a window a rule runs out of time on raises ScanTimeout out of the
    redactor instead of being released: no part of it is known to be clean. The budget it shares names
    the rule."""
    scanner = backtracking_scanner()
    budget = scanner.budget()
    redactor = StreamRedactor(scanner, budget=budget)
    text = "fine so far. k=" + "a" * 40 + "!"
    size = -(-len(text) // pieces)
    released = ""
    with pytest.raises(ScanTimeout):
        for start in range(0, len(text), size):
            released += redactor.feed(text[start : start + size])
        released += redactor.flush()
    assert "k=" not in released and list(budget.timed_out) == ["slow"]


def test_a_stream_redactor_whose_budget_is_spent_releases_nothing_a_rule_would_read() -> None:
    """Once the response's budget is spent, text a rule would read is out of time at once: the redactor
    of the next channel raises too, and text no rule reads still goes out."""
    scanner = backtracking_scanner()
    budget = scanner.budget()
    first = StreamRedactor(scanner, budget=budget)
    with pytest.raises(ScanTimeout):
        first.feed("k=" + "a" * 40 + "!")
        first.flush()
    assert budget.spent
    other = StreamRedactor(scanner, budget=budget)
    assert other.feed("plain words ") + other.flush() == "plain words "
    with pytest.raises(ScanTimeout):
        third = StreamRedactor(scanner, budget=budget)
        third.feed("k=ab ")
        third.flush()


AWS_KEY_ID = "AKIA" + "QYLPMN5HHHFPZAM2"


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("drop_table_" + GITHUB_TOKEN, "drop_table_[REDACTED:github-pat]"),
        ("save_" + AWS_KEY_ID, "save_[REDACTED:aws-access-key-id]"),
        ("note_" + AWS_KEY_ID + "_later", "note_[REDACTED:aws-access-key-id]_later"),
        ("charge-" + STRIPE_KEY, "charge-[REDACTED:stripe-live-secret-key]"),
        ("AKIA-QYLP-MN5H-HHFP-ZAM2", "[REDACTED:aws-access-key-id]"),
        (GITHUB_TOKEN, "[REDACTED:github-pat]"),
    ],
)
def test_a_key_glued_into_a_name_is_redacted_in_its_glued_readings(
    scanner: Scanner, name: str, shown: str
) -> None:
    """A name read as its words (separators as breaks, separators gone, each stretch after one on its
    own) gives up a key that a rule reads as part of a word where it is written."""
    assert redact_json(name, scanner, glued=True)[0] == shown


def _reads_glued_after(rule: Rule) -> bool:
    """Whether the rule reads a key with characters glued after it: its regex as run is no longer the
    written one less its opening boundary (``glued_source``)."""
    return rule.written is not None and rule.pattern.pattern != rule.written.pattern[len(WORD_START) :]


def _glued_keys(*, after: bool = False) -> list[pytest.ParameterSet]:
    cases = []
    for rule in load_pack(pack_path("secrets")).rules:
        keys = [found.group(0) for found in map(rule.pattern.search, rule.match_examples) if found]
        if rule.glued and rule.enabled and keys and (not after or _reads_glued_after(rule)):
            cases += [pytest.param(rule.id, keys[0], glue, id=f"{rule.id}:{glue}") for glue in "x9"]
    return cases


GLUED_KEYS = _glued_keys()


def test_most_prefixed_keys_read_glued() -> None:
    """The rules whose keys open with a distinctive prefix are most of the secrets pack's."""
    assert len(GLUED_KEYS) > 2 * 100


@pytest.mark.parametrize(("rule_id", "key", "glue"), GLUED_KEYS)
def test_a_prefixed_key_glued_after_a_letter_or_digit_is_redacted(
    scanner: Scanner, rule_id: str, key: str, glue: str
) -> None:
    """A reader drops the one character written before the key (``?q=aghp_...``): it leaves no part."""
    redacted = scan_and_redact(scanner, f"here {glue}{key} end").text
    assert f"[REDACTED:{rule_id}]" in redacted
    assert key not in redacted
    assert not any(part in redacted for part in re.findall(r"[A-Za-z0-9]{12,}", key))


GLUED_AFTER_KEYS = _glued_keys(after=True)


def test_most_prefixed_keys_of_one_length_read_glued_after() -> None:
    """Most rules that read keys glued before read keys of one length, and so glued after too."""
    assert len(GLUED_AFTER_KEYS) > 2 * 70
    assert {"github-pat", "aws-access-key-id", "gcp-api-key"} <= {case.values[0] for case in GLUED_AFTER_KEYS}


@pytest.mark.parametrize(("rule_id", "key", "glue"), GLUED_AFTER_KEYS)
def test_a_prefixed_key_of_one_length_glued_before_a_letter_or_digit_is_redacted(
    scanner: Scanner, rule_id: str, key: str, glue: str
) -> None:
    """A reader drops what is written right after the key (``ghp_...x``), where the key's format gives its
    length: the key and what is glued to it are redacted, the key leaves no part."""
    for text in (f"here {key}{glue} end", f"?q={key}{glue}{glue}&x=1", f'"{key}{glue}"'):
        redacted = scan_and_redact(scanner, text).text
        assert f"[REDACTED:{rule_id}]" in redacted, text
        assert not any(part in redacted for part in re.findall(r"[A-Za-z0-9]{12,}", key)), text


def _ended_by_an_underscore() -> list[pytest.ParameterSet]:
    """The glued rules whose key's end holds no ``_`` and whose regex so closes, with their first key."""
    cases = []
    for rule in load_pack(pack_path("secrets")).rules:
        if rule.glued and rule.written is not None and rule.written.pattern.endswith("(?![A-Za-z0-9])"):
            key = next(found.group(0) for found in map(rule.written.search, rule.match_examples) if found)
            cases.append(pytest.param(rule.id, key, id=rule.id))
    return cases


ENDED_BY_AN_UNDERSCORE = _ended_by_an_underscore()


def test_keys_whose_end_holds_no_underscore_are_ended_by_one() -> None:
    ids = {case.values[0] for case in ENDED_BY_AN_UNDERSCORE}
    assert {"stripe-live-secret-key", "slack-refresh-token", "doppler-personal-token", "tailscale-key"} <= ids


@pytest.mark.parametrize(("rule_id", "key"), ENDED_BY_AN_UNDERSCORE)
def test_a_key_whose_end_holds_no_underscore_followed_by_one_is_redacted(
    scanner: Scanner, rule_id: str, key: str
) -> None:
    """A ``_`` glued after such a key, with a word after it (``xsk_live_..._old``), is no more of it: glued
    before as well, the key is redacted and what is glued to it stays."""
    for before in ("", "x", "9", "_"):
        redacted = scan_and_redact(scanner, f"here {before}{key}_old end").text
        assert redacted.startswith(f"here {before}[REDACTED:{rule_id}]"), redacted
        assert key not in redacted
        if before:
            assert redacted == f"here {before}[REDACTED:{rule_id}]_old end"


BASE64_AROUND = [("QWxsIHRoZSB3b3JsZC+", "Zm9vYmFy"), ("/dGhpc0lz", "Tm90QUtleQ=="), ("ab_", "cd")]


# A key whose form holds a marker at a fixed place, or of a prefix and a length, is a key inside a run
# (tests/test_rulepack_inside.py); a checksummed family's is where its checksum holds.
PROVEN = {rule.id for rule in load_pack(pack_path("secrets")).rules if rule.proof}


@pytest.mark.parametrize(
    ("rule_id", "key", "glue"), [case for case in GLUED_AFTER_KEYS if case.values[0] in PROVEN]
)
def test_a_checksummed_family_s_prefix_and_length_inside_a_base64_run_is_no_key(
    scanner: Scanner, rule_id: str, key: str, glue: str
) -> None:
    """Glued on both sides, a checksummed family's prefix and length whose checksum fails (the examples'
    keys are random) are a stretch of a longer run: no key of the rule is found in it."""
    for before, after in BASE64_AROUND:
        text = f"blob {before}{key}{glue}{after} end"
        assert rule_id not in {match.rule.id for match in scanner.scan_alone(text).matches}, text


@pytest.mark.parametrize(
    "name",
    [
        "list_files",
        "mcp__github__create_pull_request",
        "get-user_by-id_",
        "_",
        "run_sql_2024_11_05",
        "drop_duplicates",
        "search_docs-v2",
    ],
)
def test_an_ordinary_name_reads_as_written(scanner: Scanner, name: str) -> None:
    assert scan_glued(scanner, name, scanner.budget()).found == []
    assert redact_json(name, scanner, glued=True)[0] == name
