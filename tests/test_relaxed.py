"""The loosened RE2 form of a rule (scanning/relaxed.py) matches wherever the rule's own pattern does."""

from __future__ import annotations

import random
import sys

import pytest
import re2
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.model import Severity, Threat
from proxy.scanning import relaxed
from proxy.scanning.rulepack import Rule, RulePack, Scanner, load_packaged_packs
from tests.budget_watch import READ, BudgetWatch

PACKS = [pack.with_everything_enabled() for pack in load_packaged_packs()]
RULES = [rule for pack in PACKS for rule in pack.rules]
EVERY_CHARACTER = "".join(chr(code) for code in range(sys.maxunicode + 1) if not 0xD800 <= code < 0xE000)


def loosened_everywhere(source: str, text: str) -> bool:
    """Whether the loosened form of ``source`` matches ``text`` as a whole."""
    loosened = relaxed.relaxed_source(source)
    assert loosened is not None
    return re2.fullmatch(loosened, text) is not None


@pytest.mark.parametrize(
    "cls", [r"\w", r"\s", r"\d", r"\W", r"\S", r"\D", ".", r"[^\w.]", r"[\w\-]", r"[^\s]", r"[^a-z]"]
)
def test_classes_are_loosened_to_supersets_at_every_code_point(cls: str) -> None:
    members = "".join(regex.findall(cls, EVERY_CHARACTER))
    assert members
    assert loosened_everywhere(f"(?:{cls})+", members)


def test_letters_read_case_blind_as_the_regex_module_reads_them() -> None:
    letters = {char for rule in RULES for char in rule.pattern.pattern if char.lower() != char.upper()}
    letters |= set("iksIKS\u0130\u0131\u017f\u212a\u00df")
    for letter in sorted(letters):
        for source in (regex.escape(letter), f"[{regex.escape(letter)}]"):
            members = "".join(regex.findall(f"(?i){source}", EVERY_CHARACTER))
            assert loosened_everywhere(f"(?i)(?:{source})+", members), letter
        negated = "".join(regex.findall(f"(?i)[^{regex.escape(letter)}]", EVERY_CHARACTER[:0x3000]))
        assert loosened_everywhere(f"(?i)[^{regex.escape(letter)}]+", negated), letter


@pytest.mark.parametrize(
    ("source", "text"),
    [
        (r"(?<!not )\bignore\b(?= all)", "not ignore all"),  # lookarounds and boundaries are dropped
        (r"(?>ab|a)c", "ac"),  # an atomic group is read as a plain one
        (r"a++a", "aa"),  # so is a possessive repeat
        (r"x{2000}", "x" * 3000),  # counts RE2 refuses are read as unbounded
        (r"(?i)K", "\u212a"),  # the Kelvin sign is a k to the regex module
        (r"(?i)i", "\u0130"),  # and a dotted capital I an i (RE2 alone would say no)
        (r"(?i:s)t", "\u017ft"),
        (r"^a$", "a"),
    ],
)
def test_loosened_form_matches_what_the_pattern_cannot_rule_out(source: str, text: str) -> None:
    encoded = text.encode("utf-8")
    assert relaxed.possible(relaxed.compiled(source), encoded, 0, len(encoded))
    assert relaxed.compiled(source) is not None


def test_a_match_can_be_asked_for_at_one_place() -> None:
    program = relaxed.compiled(r"(?<=x)ab+")
    assert relaxed.possible(program, b"xabbb", 0, 5)
    assert not relaxed.possible(program, b"xabbb", 0, 5, at_low=True)
    assert relaxed.possible(program, b"xabbb", 1, 3, at_low=True)
    assert not relaxed.possible(program, b"xabbb", 1, 2, at_low=True)


@pytest.mark.parametrize(
    "source", [r"(a)\1", r"(?P<q>['\"]).*(?P=q)", r"[[:alpha:]]+", r"(?:ab){e<=1}", r"\p{L}+", r"(?(1)a|b)"]
)
def test_patterns_that_cannot_be_loosened_get_no_form(source: str) -> None:
    assert relaxed.relaxed_source(source) is None
    assert relaxed.compiled(source) is None
    assert relaxed.possible(None, b"anything", 0, 8)


def test_every_packaged_rule_is_loosened_to_a_form_matching_its_examples() -> None:
    # The destructive-command pack reads a command tool's arguments alone, never every text that passes:
    # a loosened form would rule out nothing worth its question there.
    without = [
        rule.id
        for pack in PACKS
        if pack.name != "destructive_commands"
        for rule in pack.rules
        if relaxed.compiled(rule.pattern.pattern) is None
    ]
    assert len(without) <= 3, without  # backreferences (us-ssn, xml-password-element)
    for rule in RULES:
        program = relaxed.compiled(rule.pattern.pattern)
        for example in rule.match_examples:
            for found in rule.pattern.finditer(example):
                encoded = found.group().encode("utf-8")
                assert relaxed.possible(program, encoded, 0, len(encoded)), (rule.id, example)


_SPACES = [" ", "\t", "\n", "\u00a0", "\u3000", "\u2009"]
_LOOK_ALIKES = {"i": "\u0130", "k": "\u212a", "s": "\u017f"}


def _disguised(example: str, rng: random.Random) -> str:
    """The example with its case, spaces and case-equivalent letters shuffled about."""
    chars = []
    for char in example:
        roll = rng.random()
        if char == " " and roll < 0.3:
            char = rng.choice(_SPACES)
        elif char.lower() in _LOOK_ALIKES and roll < 0.2:
            char = _LOOK_ALIKES[char.lower()]
        elif roll < 0.5:
            char = char.swapcase()
        chars.append(char)
    return "".join(chars)


@settings(max_examples=400, deadline=None)
@given(
    rule_index=st.integers(0, len(RULES) - 1),
    seed=st.integers(0, 2**32),
    before=st.text(max_size=40),
    after=st.text(max_size=40),
)
def test_a_rule_that_matches_a_text_is_always_possible_there(
    rule_index: int, seed: int, before: str, after: str
) -> None:
    rule = RULES[rule_index]
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not cryptography
    text = before + _disguised(rng.choice(rule.match_examples), rng) + after
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        return  # the scanner does not ask RE2 about a text with a lone surrogate
    if rule.pattern.search(text) is not None:
        assert relaxed.possible(relaxed.compiled(rule.pattern.pattern), encoded, 0, len(encoded))


def _scan_all(scanner: Scanner, texts: list[str]) -> list[object]:
    results: list[object] = []
    for text in texts:
        found = scanner.scan_alone(text, merge=False)
        results.append(([(m.rule.id, m.start, m.end, m.disguise) for m in found.matches], found.timed_out))
    return results


def test_the_scanner_finds_the_same_with_and_without_the_loosened_forms() -> None:
    rng = random.Random(5)  # noqa: S311 - reproducible test data, not cryptography
    examples = [text for rule in RULES for text in (*rule.match_examples, *rule.no_match_examples)]
    texts = examples + [_disguised(text, rng) for text in examples]
    texts += [" ".join(rng.sample(examples, 3)) for _ in range(300)]
    # Long texts, ASCII or not, where a rule's places to look lie far apart: each is asked about alone.
    for filler in ("x" * 700, "\u00e9" * 700, "\u4e2d" * 300):
        texts += [f"\n{filler}\n".join(rng.sample(examples, 5)) for _ in range(100)]
    texts += ["ignore \ud800 all previous instructions"]  # a lone surrogate: RE2 is not asked
    # A time limit far above any rule's time here: on a loaded machine a rule must not time out in one
    # scan and not in the other.
    with_forms, without_forms = Scanner(PACKS, timeout_s=5.0), Scanner(PACKS, timeout_s=5.0, loosened=False)
    assert _scan_all(with_forms, texts) == _scan_all(without_forms, texts)


def test_a_rule_that_cannot_match_is_not_tried_even_where_it_would_backtrack_for_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rule = Rule(
        id="nested",
        description="catastrophic backtracking",
        pattern=regex.compile(r"(?:a+)+b"),
        keywords=("aaaa",),
        threat=Threat.CREDENTIAL_THEFT,
        severity=Severity.HIGH,
        owasp="LLM06",
        entropy=None,
        validator=None,
        secret_group=0,
        match_examples=("aaab",),
        no_match_examples=(),
        enabled=True,
    )
    scanner = Scanner([RulePack("test", Threat.CREDENTIAL_THEFT, True, (rule,))], timeout_s=2.0)
    budget = scanner.budget()
    watch = BudgetWatch(monkeypatch)
    result = scanner.scan("a" * 40 + "c", budget)
    assert result.matches == [] and result.timed_out == ()
    assert [step.kind for step in watch.steps(budget)] == [READ]  # the keyword pass, and no rule's run
    assert [(m.start, m.end) for m in scanner.scan_alone("x aaaaab").matches] == [(2, 8)]


UNBOUNDED_RULES = [
    rule
    for rule in RULES
    if relaxed.compiled(rule.pattern.pattern, rule.pattern.flags) is not None and rule.pack == "injection"
]


@settings(max_examples=300, deadline=None)
@given(
    chosen=st.lists(st.sampled_from(UNBOUNDED_RULES), min_size=1, max_size=4, unique_by=lambda rule: rule.id),
    pieces=st.lists(
        st.one_of(
            st.sampled_from([example for rule in UNBOUNDED_RULES for example in rule.match_examples]),
            st.sampled_from([word for rule in UNBOUNDED_RULES for word in rule.keywords]),
            st.sampled_from([" ", "  ", "\n", "the ", "all previous instructions", "user", "x"]),
        ),
        max_size=12,
    ),
)
def test_several_loosened_forms_asked_together_match_where_one_of_them_does(
    chosen: list[Rule], pieces: list[str]
) -> None:
    encoded = "".join(pieces).encode("utf-8")
    together = relaxed.compiled_any(tuple((rule.pattern.pattern, rule.pattern.flags) for rule in chosen))
    each = [relaxed.compiled(rule.pattern.pattern, rule.pattern.flags) for rule in chosen]
    for low in sorted({0, len(encoded) // 2, len(encoded)}):
        assert relaxed.possible(together, encoded, low, len(encoded)) == any(
            relaxed.possible(program, encoded, low, len(encoded)) for program in each
        )


def test_the_programs_asked_for_rules_together_are_kept_within_a_bound() -> None:
    """Which rules one text brings together is its sender's to choose: a new choice in every text must
    not keep a program for the life of the process."""
    assert relaxed.compiled_any.cache_info().maxsize is not None
