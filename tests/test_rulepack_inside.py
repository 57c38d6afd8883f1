"""Keys found by their own structure (a rule's ``inside`` form and its ``proof``), glued on both sides."""

from __future__ import annotations

import random
import string
import zlib
from pathlib import Path

import pytest

from proxy.scanning import relaxed
from proxy.scanning.redact import StreamRedactor, scan_and_redact
from proxy.scanning.rulepack import PackError, Rule, Scanner, load_pack, longest_run, pack_path
from proxy.scanning.validators import base62_crc32_valid

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
# The example GitHub token of its format's public description: ghp_, 30 characters, their checksum.
PUBLISHED = "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"


def _checksummed(prefix: str, rng: random.Random) -> str:
    body = "".join(rng.choices(BASE62, k=30))
    crc, tail = zlib.crc32(body.encode()), ""
    for _ in range(6):
        crc, digit = divmod(crc, 62)
        tail = BASE62[digit] + tail
    return prefix + body + tail


@pytest.fixture(scope="module")
def scanner() -> Scanner:
    return Scanner([load_pack(pack_path("secrets"))], timeout_s=1.0)


def test_the_checksum_reads_the_published_token_and_no_change_of_one_character() -> None:
    assert base62_crc32_valid(PUBLISHED)
    for place in range(4, len(PUBLISHED)):
        for other in "0aZ":
            changed = PUBLISHED[:place] + other + PUBLISHED[place + 1 :]
            assert changed == PUBLISHED or not base62_crc32_valid(changed), changed
    assert not base62_crc32_valid(PUBLISHED[:-1])
    assert not base62_crc32_valid(PUBLISHED[:-1] + "-")


_RNG = random.Random(20261207)  # noqa: S311 - reproducible keys of a test, not cryptography
_B64URL = string.ascii_letters + string.digits + "_-"
KEYS = {
    "github-pat": _checksummed("ghp_", _RNG),
    "github-oauth-token": _checksummed("gho_", _RNG),
    "github-user-to-server-token": _checksummed("ghu_", _RNG),
    "github-server-to-server-token": _checksummed("ghs_", _RNG),
    "npm-access-token": _checksummed("npm_", _RNG),
    "openai-legacy-key": "sk-"
    + "".join(_RNG.choices(BASE62, k=20))
    + "T3BlbkFJ"
    + "".join(_RNG.choices(BASE62, k=20)),
    "anthropic-api-key": "sk-ant-api03-" + "".join(_RNG.choices(_B64URL, k=93)) + "AA",
    "anthropic-admin-key": "sk-ant-admin01-" + "".join(_RNG.choices(_B64URL, k=93)) + "AA",
    "github-fine-grained-pat": "github_pat_"
    + "".join(_RNG.choices(BASE62, k=22))
    + "_"
    + "".join(_RNG.choices(BASE62, k=59)),
    "slack-bot-token": "xoxb-5215302906601-4267974737433-" + "".join(_RNG.choices(BASE62, k=24)),
}
GLUES = [("x", "y"), ("9", "Z"), ("_", "_"), ("QmFzZTY0", "QmFzZTY0")]


@pytest.mark.parametrize("rule_id", sorted(KEYS))
@pytest.mark.parametrize(("before", "after"), GLUES)
def test_a_key_its_structure_proves_is_redacted_alone_glued_on_both_sides(
    scanner: Scanner, rule_id: str, before: str, after: str
) -> None:
    """What is glued on either side (a letter, a digit, an underscore, a run of base64) stays; the key,
    found by its checksum or its marker at a fixed place, is what is redacted."""
    text = f"d={before}{KEYS[rule_id]}{after} end"
    result = scan_and_redact(scanner, text)
    assert result.text == f"d={before}[REDACTED:{rule_id}]{after} end"


@pytest.mark.parametrize("rule_id", sorted(KEYS))
def test_a_key_glued_on_both_sides_streamed_a_character_at_a_time_is_redacted_as_whole_text_is(
    scanner: Scanner, rule_id: str
) -> None:
    """No piece of the key leaves before it is known whole."""
    text = f"see x{KEYS[rule_id]}y and more"
    redactor = StreamRedactor(scanner)
    chunks = [redactor.feed(char) for char in text] + [redactor.flush()]
    assert "".join(chunks) == f"see x[REDACTED:{rule_id}]y and more"


@pytest.mark.parametrize("rule_id", [rule_id for rule_id in sorted(KEYS) if KEYS[rule_id][3] == "_"])
def test_a_checksummed_family_glued_on_both_sides_with_a_wrong_checksum_is_no_key(
    scanner: Scanner, rule_id: str
) -> None:
    key = KEYS[rule_id]
    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert scanner.scan_alone(f"d=x{wrong}y end").matches == []


def test_random_base62_glued_after_a_checksummed_prefix_is_no_key(scanner: Scanner) -> None:
    """A random run after ghp_ passes the checksum once in 62**6: 20,000 runs glued in one text find none
    (a refresh token's regex takes 36 to 76 characters, and so a run glued after it, as it did before)."""
    rng = random.Random(7)  # noqa: S311 - reproducible runs, not cryptography
    prefixes = ("ghp_", "gho_", "ghu_", "ghs_", "npm_")
    text = (
        "x" + "".join(rng.choice(prefixes) + "".join(rng.choices(BASE62, k=41)) for _ in range(20_000)) + "y"
    )
    assert scanner.scan_alone(text).matches == []


INSIDE_RULES = [rule for rule in load_pack(pack_path("secrets")).rules if rule.inside is not None]


@pytest.mark.parametrize("rule", INSIDE_RULES, ids=lambda rule: rule.id)
def test_the_loosened_regex_finds_every_key_of_the_inside_form(rule: Rule) -> None:
    """The scanner searches a rule's inside form only where the loosened form of its regex matches: that
    form matches each key the inside form finds in the rule's examples, all of it."""
    assert rule.inside is not None
    program = relaxed.compiled(rule.pattern.pattern, rule.pattern.flags)
    keys = [hit.group() for example in rule.match_examples for hit in rule.inside.finditer(example)]
    assert keys
    for key in keys:
        assert relaxed.possible(program, key.encode(), 0, len(key), at_low=True), key
        assert relaxed.first_span(program, key.encode(), 0) == (0, len(key)), key


@pytest.mark.parametrize("rule", [rule for rule in INSIDE_RULES if rule.proof], ids=lambda rule: rule.id)
def test_no_key_of_a_proven_form_starts_inside_another(rule: Rule) -> None:
    """A match that fails its proof is searched on from its end: no match of the form may start within one
    (two keys back to back hold none but at each key's start)."""
    assert rule.inside is not None
    key = KEYS[rule.id] if rule.id in KEYS else _checksummed(rule.inside.pattern[:4], random.Random(5))  # noqa: S311
    twice = key + key
    starts = [place for place in range(len(twice)) if rule.inside.match(twice, place)]
    assert starts == [0, len(key)]


def _pack(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "test.yaml"
    path.write_text(
        "pack: test\nthreat: credential_theft\nrules:\n  - id: r\n    description: test rule\n"
        "    regex: '(?<![A-Za-z0-9_])abc_[0-9]{8}(?![A-Za-z0-9_])'\n    keywords: [abc_]\n"
        "    severity: high\n    owasp: LLM06\n    examples: {match: [x]}\n" + extra,
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("    proof: base62_crc32\n", "proof is a validator's name, for a rule with inside"),
        ("    inside: 'abc_[0-9]{8}'\n    proof: crc64\n", "proof is a validator's name"),
        ("    inside: 'abc_[0-9]{8,}'\n", "inside must be of bounded length"),
        ("    inside: 'abc_[0-9]{9}'\n", "no longer than the regex"),
        ("    inside: 'abc_[0-9'\n", "regex does not compile"),
        ("    inside: 'abc_[0-9]{0,2}[0-9]{0,2}[0-9]{0,2}[0-9]{0,2}'\n", "may backtrack 64 ways at most"),
    ],
)
def test_an_inside_form_is_bounded_and_a_proof_needs_one(tmp_path: Path, extra: str, problem: str) -> None:
    with pytest.raises(PackError, match=problem):
        load_pack(_pack(tmp_path, extra))


def test_an_inside_match_counts_only_where_its_proof_holds(tmp_path: Path) -> None:
    """With a proof, the form finds what passes it; without, what the form matches."""
    key = _checksummed("abc_", random.Random(3))  # noqa: S311 - a reproducible key
    rule = "    regex: '(?<![A-Za-z0-9_])abc_[A-Za-z0-9]{36}(?![A-Za-z0-9_])'\n"
    wrong = key[:-1] + ("B" if key[-1] != "B" else "C")
    for extra, found in (("    proof: base62_crc32\n", [key]), ("", [key, wrong])):
        path = _pack(tmp_path, "    inside: 'abc_[A-Za-z0-9]{36}'\n" + extra)
        path.write_text(
            path.read_text().replace("    regex: '(?<![A-Za-z0-9_])abc_[0-9]{8}(?![A-Za-z0-9_])'\n", rule)
        )
        scanner = Scanner([load_pack(path)], timeout_s=1.0)
        text = f"x{key}y x{wrong}y"
        spans = [text[match.start : match.end] for match in scanner.scan_alone(text).matches]
        assert spans == found


KEYED_RULES = [rule for rule in INSIDE_RULES if rule.inside_runs]


def _key_of(rule: Rule) -> str:
    assert rule.inside is not None
    return next(hit.group() for example in rule.match_examples for hit in rule.inside.finditer(example))


def test_every_glued_key_of_one_length_is_read_by_its_prefix_and_length_or_its_proof() -> None:
    """The glued rules with a key of one length and no form written in the pack (AWS's AKIA, Google's
    AIza, Shopify's shpat_ ...) all read a key glued on both sides."""
    assert len(KEYED_RULES) > 60
    assert {"aws-access-key-id", "gcp-api-key", "shopify-access-token"} <= {rule.id for rule in KEYED_RULES}
    assert not any(rule.inside_runs for rule in INSIDE_RULES if rule.proof)


@pytest.mark.parametrize("rule", KEYED_RULES, ids=lambda rule: rule.id)
@pytest.mark.parametrize(("before", "after"), [*GLUES, ("x-", "-y"), ("a.b", "c.d")])
def test_a_key_of_a_prefix_and_a_length_glued_on_both_sides_is_redacted_alone(
    scanner: Scanner, rule: Rule, before: str, after: str
) -> None:
    """Letters, digits, ``_``, ``-``, ``.`` or a run of base64 glued before stay, and glued after, but where
    the key stands with nothing glued to it but a ``-`` or ``.`` and so its token is redacted to its end."""
    key = _key_of(rule)
    redacted = scan_and_redact(scanner, f"d={before}{key}{after} end").text
    assert redacted.startswith(f"d={before}[REDACTED:{rule.id}]"), redacted
    assert redacted.endswith(f"]{after} end") or redacted.endswith("] end"), redacted
    assert key not in redacted


def _longest_run_around(rule: Rule) -> int:
    """The longest run of base62 (and the key's own characters) the rule's first example key may stand in."""
    return longest_run(rule.inside_runs, frozenset(BASE62 + _key_of(rule)))


@pytest.mark.parametrize(
    "rule", [rule for rule in KEYED_RULES if _longest_run_around(rule) < 100_000], ids=lambda rule: rule.id
)
def test_a_key_of_a_prefix_and_a_length_in_a_longer_run_than_its_chance_allows_is_no_key(
    scanner: Scanner, rule: Rule
) -> None:
    """A random run that long holds such a key by chance often enough (an image, a JWT, an id): in it the
    prefix and the length are no key; in a run one character shorter on each side they are."""
    key = _key_of(rule)
    rng = random.Random(rule.id)  # noqa: S311 - reproducible runs, not cryptography
    side = (_longest_run_around(rule) - len(key)) // 2 + 1
    # Letters and digits: a "+" or "/" right after the key ends it as a word (the regex as run finds it).
    before, after = "".join(rng.choices(BASE62, k=side)), "".join(rng.choices(BASE62, k=side))
    ids = [match.rule.id for match in scanner.scan_alone(f"blob {before}{key}{after} end").matches]
    assert rule.id not in ids
    shorter = f"blob {before[2:]}{key}{after[2:]} end"
    assert rule.id in [match.rule.id for match in scanner.scan_alone(shorter).matches]


@pytest.mark.parametrize("rule_id", ["aws-access-key-id", "gcp-api-key", "shopify-access-token"])
def test_a_key_of_a_prefix_and_a_length_glued_on_both_sides_streamed_is_redacted_as_whole_text_is(
    scanner: Scanner, rule_id: str
) -> None:
    rule = next(rule for rule in KEYED_RULES if rule.id == rule_id)
    text = f"see x{_key_of(rule)}y and more"
    redactor = StreamRedactor(scanner)
    chunks = [redactor.feed(char) for char in text] + [redactor.flush()]
    assert "".join(chunks) == f"see x[REDACTED:{rule_id}]y and more"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("XAKIABWQEEQK4UOQQRXIVX", True),
        ("QQQQQQQQQQAKIABWQEEQK4UOQQRXIVQ", False),
        ("qqqqqqqqqqAKIABWQEEQK4UOQQRXIVQ", True),
        ("0123456789ACCAFEDCBA234567ABCD" + "0123456789ABCDEF" * 3, True),
        ("0123456789ACCAFEDCBA234567ABCD" + "0123456789ABCDEF" * 5, False),
    ],
)
def test_a_run_is_judged_by_the_narrowest_alphabet_its_characters_may_be_drawn_from(
    scanner: Scanner, text: str, found: bool
) -> None:
    """AKIA and 16 capitals and digits 2-7 are themselves base32: a run of nothing else (base32 text) holds
    one by chance once in about a million places, and so only a short one reads as a key; a run with a
    character no base32 holds is read as base64. ACCA is hex, and a run of upper-case hex holds ACCA keys."""
    assert bool(scanner.scan_alone(f"v {text} end").matches) is found


def test_a_prefix_and_a_length_are_no_key_in_a_turned_or_regrouped_reading(scanner: Scanner) -> None:
    """Read uppercased, a base64 run holds AKIA and 16 capitals and digits far more often than as written:
    the prefix and the length are read in the text as it stands and decoded, not in such readings."""
    assert scanner.scan_alone("iVBORw0KGgoAKIABWQEEQK4UOQQRXIaAAAASUhEUgAA").matches == []
