"""Keys found by their own structure (a rule's ``inside`` form and its ``proof``), glued on both sides."""

from __future__ import annotations

import random
import string
import zlib
from pathlib import Path

import pytest

from proxy.scanning import relaxed
from proxy.scanning.redact import StreamRedactor, scan_and_redact
from proxy.scanning.rulepack import PackError, Rule, Scanner, load_pack, pack_path
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
