"""Rule-pack loading, the scanner (prefilter, windows, timeouts, merging) and the named validators."""

from __future__ import annotations

import copy
import functools
import json
import secrets
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast
from unittest import mock

import hypothesis
import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.model import Severity, Threat
from proxy.scanning import relaxed, rulepack, validators
from proxy.scanning.residual import JsonScan
from proxy.scanning.rulepack import (
    _FEW_BLOCKS,
    _RUN_BLOCK,
    RESCAN_FACTOR,
    PackError,
    Rule,
    RulePack,
    Scanner,
    ScanTimeout,
    backtracking_paths,
    is_text_pack,
    load_pack,
    load_packaged_packs,
    pack_path,
    packaged_packs,
    rules_dir,
    token_end,
)
from proxy.scanning.rulepack import _TRIGGER_TABLE as TRIGGER_TABLE
from proxy.scanning.rulepack import _hits_across_space_runs as hits_across_space_runs
from proxy.scanning.rulepack import _Keywords as Keywords
from proxy.scanning.rulepack import _trigger_view as trigger_view
from proxy.scanning.rulepack import _uniform_runs as uniform_runs
from proxy.scanning.validators import (
    dutch_bsn_valid,
    iban_valid,
    is_example_value,
    is_placeholder,
    luhn_valid,
    payment_card_valid,
    phone_valid,
    shannon_entropy,
    spanish_dni_valid,
    ssn_valid,
)
from tests.budget_watch import READ, RUN, UNREAD, BudgetWatch

GITHUB_TOKEN = "ghp_" + "Qw3rTy7uIo9pAs2dFg4hJk6lZx8cVb1nMq5W"


def _write_pack(
    tmp_path: Path, rules_yaml: str, header: str = "pack: test\nthreat: credential_theft\n"
) -> Path:
    path = tmp_path / "test.yaml"
    path.write_text(header + "rules:\n" + rules_yaml, encoding="utf-8")
    return path


def _rule_yaml(
    rule_id: str, regex: str, keywords: str = "[]", extra: str = "", severity: str = "high"
) -> str:
    """One rule as YAML (8 lines plus ``extra``, which is a list of ``key: value`` lines)."""
    lines = [
        f"  - id: {rule_id}",
        "    description: test rule",
        f"    regex: '{regex}'",
        f"    keywords: {keywords}",
        f"    severity: {severity}",
        "    owasp: LLM06",
        "    examples: {match: [x]}",
        *(f"    {line}" for line in extra.splitlines()),
    ]
    return "\n".join(lines) + "\n"


def _scanner(tmp_path: Path, rules_yaml: str, *, timeout_s: float = 0.5) -> Scanner:
    return Scanner([load_pack(_write_pack(tmp_path, rules_yaml))], timeout_s=timeout_s)


def test_load_pack_reads_rules() -> None:
    """The secrets pack loads with its default threat and lowercase keywords."""
    pack = load_pack(pack_path("secrets"))
    rule = next(rule for rule in pack.rules if rule.id == "github-pat")
    assert pack.threat is Threat.DATA_EXFILTRATION
    assert rule.threat is Threat.DATA_EXFILTRATION
    assert rule.keywords == ("ghp_",)
    assert rule.severity is Severity.CRITICAL
    assert len(pack.rules) >= 150


def test_a_pack_is_read_again_when_its_file_changes_and_kept_while_it_does_not(tmp_path: Path) -> None:
    """A reload that changed no pack takes the packs as read; one whose file changed reads the new rules,
    and a file made bad is refused though its earlier text was read."""
    path = _write_pack(tmp_path, _rule_yaml("first", "abc"))
    first = load_pack(path)
    assert load_pack(path) is first
    _write_pack(tmp_path, _rule_yaml("second", "xyz"))
    assert [rule.id for rule in load_pack(path).rules] == ["second"]
    _write_pack(tmp_path, _rule_yaml("third", "(unclosed"))
    with pytest.raises(PackError, match="does not compile"):
        load_pack(path)
    path.unlink()
    with pytest.raises(PackError, match="cannot read pack"):
        load_pack(path)


def test_pack_errors_list_every_problem_with_its_line(tmp_path: Path) -> None:
    """Every problem of a pack is reported, each as path:line: message."""
    rules = _rule_yaml("ok-rule", "abc") + _rule_yaml("Bad Id", "(unclosed") + "  - id: no-fields\n"
    path = _write_pack(tmp_path, rules)
    with pytest.raises(PackError) as caught:
        load_pack(path)
    lines = str(caught.value).splitlines()
    assert any(line.startswith(f"{path}:11: id:") for line in lines)
    assert any(line.startswith(f"{path}:13: ") and "does not compile" in line for line in lines)
    assert any("'no-fields': regex is required" in line for line in lines)
    assert caught.value.line == 11


def test_unknown_validator_is_a_pack_error(tmp_path: Path) -> None:
    """A rule naming a validator that does not exist is rejected with the validator's line."""
    path = _write_pack(tmp_path, _rule_yaml("r", "abc", extra="validator: crc99"))
    with pytest.raises(PackError, match=r"test\.yaml:11: rule 'r': unknown validator 'crc99'"):
        load_pack(path)


def test_files_a_rule_names_must_be_matched_by_its_regex(tmp_path: Path) -> None:
    """A rule's ``files`` (what globs are judged against) must be paths its regex finds."""
    path = _write_pack(tmp_path, _rule_yaml("r", r"\.aws/credentials", extra='files: ["~/.aws/config"]'))
    with pytest.raises(PackError, match=r"test\.yaml:11: rule 'r': files: '~/.aws/config' is not matched"):
        load_pack(path)
    path = _write_pack(tmp_path, _rule_yaml("r", r"\.aws/credentials", extra='files: ["~/.aws/credentials"]'))
    assert load_pack(path).rules[0].files == ("~/.aws/credentials",)


def test_secret_group_must_exist(tmp_path: Path) -> None:
    """secret_group naming a group the regex lacks is rejected."""
    path = _write_pack(tmp_path, _rule_yaml("r", "a(b)c", extra="secret_group: value"))
    with pytest.raises(PackError, match="secret_group 'value' is not a group"):
        load_pack(path)


def test_invalid_yaml_is_a_pack_error_with_line(tmp_path: Path) -> None:
    """A YAML syntax error is reported with its line."""
    path = tmp_path / "broken.yaml"
    path.write_text("pack: x\nthreat: credential_theft\nrules: [\n  - {id: a\n", encoding="utf-8")
    with pytest.raises(PackError, match=r"broken\.yaml:\d+: not valid YAML"):
        load_pack(path)


def test_unknown_threat_is_a_pack_error(tmp_path: Path) -> None:
    """The pack's threat must be one of the shared threats."""
    path = _write_pack(tmp_path, _rule_yaml("r", "abc"), header="pack: t\nthreat: espionage\n")
    with pytest.raises(PackError, match="unknown threat 'espionage'"):
        load_pack(path)


def test_packaged_packs_are_the_text_packs_of_rules_dir() -> None:
    """The rules folder resolves and only YAML files with pack: and regex rules count as text packs."""
    paths = packaged_packs()
    names = {path.name for path in paths}
    assert {"secrets.yaml", "pii.yaml"} <= names
    assert all(path.parent == rules_dir() for path in paths)
    assert all(is_text_pack(path) for path in paths)
    assert not is_text_pack(rules_dir() / "__init__.py")


def test_rule_without_keyword_hit_does_not_run(tmp_path: Path) -> None:
    """The prefilter skips a rule whose keywords are absent even if its regex would match."""
    scanner = _scanner(tmp_path, _rule_yaml("r", "abc", keywords="[zzz]"))
    assert scanner.scan_alone("abc").matches == []
    assert [match.rule.id for match in scanner.scan_alone("abc zzz").matches] == ["r"]


def test_keywords_match_case_insensitively(tmp_path: Path) -> None:
    """Keywords are compared with the lowercased text."""
    scanner = _scanner(tmp_path, _rule_yaml("r", "TOKEN=[0-9]+", keywords="[Token=]"))
    assert len(scanner.scan_alone("TOKEN=123").matches) == 1


def test_rule_without_keywords_always_runs(tmp_path: Path) -> None:
    """A rule with no keywords and no shapes runs on every text."""
    scanner = _scanner(tmp_path, _rule_yaml("r", "abc"))
    assert len(scanner.scan_alone("xx abc").matches) == 1


def test_shapes_trigger_number_rules(tmp_path: Path) -> None:
    """A shape is looked for with every digit written as 0."""
    rule = _rule_yaml("r", r"\d{3}-\d{4}", extra='shapes: ["999-9999"]')
    scanner = _scanner(tmp_path, rule)
    assert [(match.start, match.end) for match in scanner.scan_alone("call 555-0132 now").matches] == [
        (5, 13)
    ]
    assert scanner.scan_alone("call 5550132 now").matches == []


def test_max_length_windows_a_rule_with_unbounded_repeats(tmp_path: Path) -> None:
    """max_length lets a pattern with unbounded repeats run in windows and still find its match."""
    rule = _rule_yaml("r", r"ignore\s+previous", keywords="[ignore]", extra="max_length: 40")
    scanner = _scanner(tmp_path, rule)
    text = "x " * 10_000 + "ignore   previous" + " y" * 10_000
    assert [(match.start, match.end) for match in scanner.scan_alone(text).matches] == [(20_000, 20_017)]


def test_anchored_rule_is_tried_at_each_keyword_hit(tmp_path: Path) -> None:
    """An anchored rule finds a match starting at a keyword hit, however long the match and the text."""
    rule = _rule_yaml("r", r"ignore\s+previous", keywords="[ignore]", extra="anchored: true")
    scanner = _scanner(tmp_path, rule)
    text = "x " * 10_000 + "ignore" + " " * 3_000 + "previous ignore next"
    assert [(match.start, match.end) for match in scanner.scan_alone(text).matches] == [(20_000, 23_014)]


def test_anchored_rule_does_not_look_before_its_hits(tmp_path: Path) -> None:
    """An anchored rule only reports matches that start where a keyword starts (the rule's contract)."""
    rule = _rule_yaml("r", r"(?:please\s+)?ignore", keywords="[ignore]", extra="anchored: true")
    assert [
        (match.start, match.end) for match in _scanner(tmp_path, rule).scan_alone("please ignore").matches
    ] == [(7, 13)]


def test_anchored_rule_runs_at_single_character_keywords(tmp_path: Path) -> None:
    """A single-character keyword of an anchored rule marks each place to try, not the whole text."""
    rule = _rule_yaml("r", r"\[system\]", keywords='["["]', extra="anchored: true")
    matches = _scanner(tmp_path, rule).scan_alone("[a] [b] [system] [c]").matches
    assert [(match.start, match.end) for match in matches] == [(8, 16)]


def test_anchored_rule_with_many_hits_in_a_long_text_finds_each_match(tmp_path: Path) -> None:
    """Hundreds of hits spread over a long text (one per line of code) are each tried or searched."""
    rule = _rule_yaml("r", r"(?<![\w-])env(?=\s*\|)", keywords="[env]", extra="anchored: true")
    lines = [f"os.environ['V{number}'] # env{number}" for number in range(600)]
    lines[123] = "env | grep KEY"
    lines[456] = "  env   | sort"
    text = "\n".join(lines)
    starts = [match.start for match in _scanner(tmp_path, rule).scan_alone(text).matches]
    assert starts == [text.index("env | grep"), text.index("env   | sort")]


@pytest.mark.parametrize("hits", [1, 9, 500])
def test_literal_led_rule_finds_every_match_however_many_hits(tmp_path: Path, hits: int) -> None:
    """A rule led by a literal finds each match whether it searches windows or the whole text."""
    rule = _rule_yaml(
        "r", r"(?<![A-Za-z0-9_])SK[0-9a-f]{8}(?![A-Za-z0-9_])", keywords="[sk]", extra="max_length: 10"
    )
    filler = " ".join(["ask the desk about the task"] * hits)
    text = f"SK0123abcd {filler} SK89abcdef {filler} skdeadbeef"
    spans = [(match.start, match.end) for match in _scanner(tmp_path, rule).scan_alone(text).matches]
    second = text.index("SK89")
    assert spans == [(0, 10), (second, second + 10)]


def test_anchored_must_be_true_or_false(tmp_path: Path) -> None:
    """An anchored value that is not a boolean is rejected."""
    path = _write_pack(tmp_path, _rule_yaml("r", "abc", extra="anchored: yes please"))
    with pytest.raises(PackError, match="anchored must be true or false"):
        load_pack(path)


@pytest.mark.parametrize(
    ("regex", "extra", "found"),
    [
        (r"(?<![A-Za-z0-9_])ab_c[0-9]{4}(?![A-Za-z0-9_])", "", ["ab_c1234", "ab_c5678"]),
        (r"(?<![A-Za-z0-9_])ab_c[0-9]{4}(?![A-Za-z0-9_])", "glued: false", ["ab_c1234"]),
        (r"(?<![A-Za-z0-9_])ab_[0-9]{4}(?![A-Za-z0-9_])", "", ["ab_1234"]),
        (r"(?<![A-Za-z0-9_])ab_[0-9]{4}(?![A-Za-z0-9_])", "glued: true", ["ab_1234", "ab_5678"]),
        (r"(?<![A-Za-z0-9_])a[bx]_c[0-9]{4}(?![A-Za-z0-9_])", "", ["ab_c1234", "ab_c5678"]),
    ],
)
def test_a_distinctive_prefix_reads_glued_after_a_word_character(
    tmp_path: Path, regex: str, extra: str, found: list[str]
) -> None:
    """A fixed prefix of four characters (a class counting as one) drops the word boundary before it; a
    rule says otherwise with ``glued``."""
    scanner = _scanner(tmp_path, _rule_yaml("r", regex, keywords="[ab_]", extra=extra))
    text = "ab_c1234 xab_c5678 ab_1234 9ab_5678"
    matches = [text[match.start : match.end] for match in scanner.scan_alone(text).matches]
    assert sorted(matches) == sorted(found)


@pytest.mark.parametrize(
    ("regex", "glued", "problem"),
    [
        (r"(?<![A-Za-z0-9_])ab_[0-9]{4}", "maybe", "glued must be true or false"),
        (r"\bab_[0-9]{4}", "true", r"glued is for a regex that opens with \(\?<!"),
    ],
)
def test_glued_is_a_choice_for_a_regex_with_a_word_start(
    tmp_path: Path, regex: str, glued: str, problem: str
) -> None:
    path = _write_pack(tmp_path, _rule_yaml("r", regex, extra=f"glued: {glued}"))
    with pytest.raises(PackError, match=problem):
        load_pack(path)


def test_keyword_with_a_space_is_found_across_any_whitespace(tmp_path: Path) -> None:
    """A keyword of two words is found when a line break or a tab separates them."""
    rule = _rule_yaml("r", r"do\s+not\s+tell", keywords='["do not"]', extra="max_length: 30")
    scanner = _scanner(tmp_path, rule)
    assert len(scanner.scan_alone("x" * 500 + " do\nnot\ttell").matches) == 1


@pytest.mark.parametrize("anchored", [False, True])
@pytest.mark.parametrize("gap", ["  ", "\n    ", " \t ", "\u00a0\u3000", " " * 70])
def test_keyword_with_a_space_is_found_across_a_run_of_whitespace(
    tmp_path: Path, gap: str, anchored: bool
) -> None:
    """However much whitespace separates a keyword's words, the rule runs where its regex matches."""
    extra = f"max_length: 100\nanchored: {str(anchored).lower()}"
    rule = _rule_yaml("r", r"do\s+not\s+tell", keywords='["do not"]', extra=extra)
    scanner = _scanner(tmp_path, rule)
    text = "x" * 500 + f" do{gap}not tell" + "  y" * 50
    assert [(match.start, match.end) for match in scanner.scan_alone(text).matches] == [(501, 511 + len(gap))]


def test_keywords_in_other_scripts_are_found_and_plain_ascii_text_is_still_scanned(tmp_path: Path) -> None:
    """Non-ASCII keywords trigger in non-ASCII text; ASCII text is searched for the ASCII keywords."""
    rules = _rule_yaml("cjk", "忽略指令", keywords="[忽略]") + _rule_yaml("latin", "abc", keywords="[abc]")
    scanner = _scanner(tmp_path, rules)
    assert [match.rule.id for match in scanner.scan_alone("请忽略指令 abc").matches] == ["cjk", "latin"]
    assert [match.rule.id for match in scanner.scan_alone("plain abc").matches] == ["latin"]
    only_cjk = _scanner(tmp_path, _rule_yaml("cjk", "忽略指令", keywords="[忽略]"))
    assert only_cjk.scan_alone("plain ascii text").matches == []


def test_keyword_inside_another_keyword_triggers_both_rules(tmp_path: Path) -> None:
    """Overlapping keyword hits are all reported: a keyword within a longer one still triggers its rule."""
    rules = _rule_yaml("long", "api_token=[0-9]{4}", keywords="[api_token]")
    rules += _rule_yaml("short", "token=[0-9]{4}", keywords="[token]")
    matches = _scanner(tmp_path, rules).scan_alone("x" * 500 + " api_token=1234", merge=False).matches
    assert sorted(match.rule.id for match in matches) == ["long", "short"]


def test_keywords_of_different_lengths_window_every_hit(tmp_path: Path) -> None:
    """Hits of a long and a short keyword of one rule, far apart and interleaved, each get their window."""
    rule = _rule_yaml("r", "(?:abcdefgh|cd)-[0-9]{3}", keywords="[abcdefgh, cd]")
    text = "abcdefgh-111" + " " * 300 + "cd-222" + " " * 300 + "abcdefgh-333"
    found = [text[match.start : match.end] for match in _scanner(tmp_path, rule).scan_alone(text).matches]
    assert found == ["abcdefgh-111", "cd-222", "abcdefgh-333"]


def test_window_start_does_not_hide_a_lookbehind(tmp_path: Path) -> None:
    """A lookbehind at the start of a window still sees the text before the window."""
    rule = _rule_yaml("r", "(?<![a-z])tok[0-9]", keywords="[tok]")
    scanner = _scanner(tmp_path, rule)
    assert scanner.scan_alone("y" * 500 + "atok1").matches == []
    assert len(scanner.scan_alone("y" * 500 + " tok1").matches) == 1


@pytest.mark.parametrize(
    "rule",
    [rule for pack in load_packaged_packs() for rule in pack.rules],
    ids=lambda rule: rule.id,
)
def test_scanner_finds_every_match_a_whole_text_search_finds(rule: Rule) -> None:
    """On each match example, and on it with its words spread apart, windows or anchored attempts find
    every match of the rule's regex (a whole-token rule's match reaching on to the end of its token)."""
    scanner = Scanner([RulePack(rule.pack, rule.threat, True, (replace(rule, enabled=True),))], timeout_s=1.0)
    # The same examples with their words further apart: keywords of two words are found across the run.
    spread = [example.replace(" ", gap) for example in rule.match_examples for gap in ("  ", "\n    ")]
    for example in (*rule.match_examples, *spread):
        expected = {hit.span(rule.secret_group) for hit in rule.pattern.finditer(example)}
        if rule.whole_token:
            # A key found with characters glued after it is no token running on: what is glued stays.
            expected = {(start, _end_read(rule, example, start, end)) for start, end in expected}
        found = {(match.start, match.end) for match in scanner.scan_alone(example, merge=False).matches}
        assert {span for span in expected if span[0] < span[1]} <= found, example


_GLUED_AFTER = regex.compile("[A-Za-z0-9_]")


def _end_read(rule: Rule, text: str, start: int, end: int) -> int:
    """Where a whole-token rule's match ends: its token's end, but for a key found glued to what follows."""
    return end if rule.glued and _GLUED_AFTER.match(text, end) else token_end(text, start, end)


def test_max_length_must_be_positive(tmp_path: Path) -> None:
    """A max_length that is not a positive integer is rejected."""
    path = _write_pack(tmp_path, _rule_yaml("r", "abc", extra="max_length: 0"))
    with pytest.raises(PackError, match="max_length must be a positive number"):
        load_pack(path)


def test_match_far_into_long_text_is_found(tmp_path: Path) -> None:
    """Windowed scanning finds a match anywhere in a long text, also right at its end."""
    scanner = Scanner([load_pack(pack_path("secrets"))])
    filler = "lorem ipsum dolor " * 20_000
    text = filler + GITHUB_TOKEN + " " + filler + GITHUB_TOKEN
    starts = [match.start for match in scanner.scan_alone(text).matches if match.rule.id == "github-pat"]
    assert starts == [len(filler), len(text) - len(GITHUB_TOKEN)]


def test_text_whose_lowercase_changes_length_is_still_scanned() -> None:
    """A character whose lowercase is longer (U+0130) does not shift the spans."""
    scanner = Scanner([load_pack(pack_path("secrets"))])
    text = "\u0130" * 50 + " token " + GITHUB_TOKEN
    matches = scanner.scan_alone(text).matches
    assert [(text[match.start : match.end]) for match in matches] == [GITHUB_TOKEN]


def test_timeout_skips_rule_and_is_reported(tmp_path: Path) -> None:
    """A regex that runs out of time is reported in timed_out; other rules still report."""
    rules = _rule_yaml("slow", "(?:a|aa)+$") + _rule_yaml("fast", "b{3}")
    scanner = _scanner(tmp_path, rules, timeout_s=0.01)
    result = scanner.scan_alone("bbb " + "a" * 40 + "!")
    assert result.timed_out == ("slow",)
    assert [match.rule.id for match in result.found] == ["fast"]


def test_a_rule_that_runs_out_of_time_is_run_again_with_the_larger_budget(tmp_path: Path) -> None:
    """A rule out of time under the scan's budget (none here: as on a machine too loaded to start it) is
    run once more alone with ``rescan_s``: it finishes there, and its match is reported, nothing timed out."""
    rules = _rule_yaml("slowish", "(?:a|aa)+b", keywords="[b]") + _rule_yaml("fast", "c{3}")
    pack = load_pack(_write_pack(tmp_path, rules))
    text = "ccc " + "a" * 18 + "b"
    result = Scanner([pack], timeout_s=0.0, rescan_s=5.0).scan_alone(text)
    assert result.timed_out == ()
    assert sorted((match.rule.id, text[match.start : match.end]) for match in result.found) == [
        ("fast", "ccc"),
        ("slowish", "a" * 18 + "b"),
    ]
    # With no budget at all the text is not read: its pack is out of time for it.
    assert Scanner([pack], timeout_s=0.0, rescan_s=0.0).scan_alone(text).timed_out == ("test-unread",)


def test_the_run_again_has_a_larger_budget_by_default(tmp_path: Path) -> None:
    scanner = _scanner(tmp_path, _rule_yaml("fast", "b{3}"), timeout_s=0.05)
    assert scanner.rescan_s == pytest.approx(0.05 * RESCAN_FACTOR) and scanner.rescan_s >= 1.0


@pytest.mark.parametrize(
    ("regex", "text"),
    [
        ("(?:a|aa)+$", "a" * 40 + "!"),
        ("(?:a|a)+$", "a" * 40 + "!"),
        ("(?:aa|a)+$", "a" * 40 + "-"),
        ("k=(?:a|aa)+$", "k=" + "a" * 40 + "."),
    ],
)
def test_a_rule_backtracking_without_end_is_reported_after_its_run_again(
    tmp_path: Path, regex: str, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Text crafted to make a rule backtrack without end outlasts the run again too: the rule is reported
    as timed out (the caller decides what that means), other rules still report, and no run starts once
    the scan's budget is spent."""
    rules = _rule_yaml("slow", regex) + _rule_yaml("fast", "b{3}")
    scanner = Scanner([load_pack(_write_pack(tmp_path, rules))], timeout_s=0.05, rescan_s=0.5)
    budget = scanner.budget()
    watch = BudgetWatch(monkeypatch)
    result = scanner.scan("bbb " + text, budget)
    assert budget.spent and RUN in {step.kind for step in watch.assert_nothing_starts_once_spent(budget)}
    assert result.timed_out == ("slow",)
    assert [match.rule.id for match in result.found] == ["fast"]


def test_overlapping_spans_merge_under_the_more_severe_rule(tmp_path: Path) -> None:
    """Overlapping spans become one span carrying the more severe rule's id."""
    rules = _rule_yaml("weak", "abcdef", severity="low") + _rule_yaml("strong", "defghi", severity="critical")
    result = _scanner(tmp_path, rules).scan_alone("xx abcdefghi yy")
    assert [(match.rule.id, match.start, match.end) for match in result.matches] == [("strong", 3, 12)]


def test_equal_severity_overlap_keeps_the_earlier_rule(tmp_path: Path) -> None:
    """On equal severity the rule listed first (the more specific by convention) wins."""
    rules = _rule_yaml("specific", "ghp_[a-z]+") + _rule_yaml("generic", "[a-z_]{6,}")
    result = _scanner(tmp_path, rules).scan_alone("ghp_abcdef")
    assert [match.rule.id for match in result.matches] == ["specific"]


def test_adjacent_spans_do_not_merge(tmp_path: Path) -> None:
    """Spans that touch without overlapping stay separate."""
    rules = _rule_yaml("a", "aaa") + _rule_yaml("b", "bbb")
    result = _scanner(tmp_path, rules).scan_alone("aaabbb")
    assert [(match.rule.id, match.start, match.end) for match in result.matches] == [("a", 0, 3), ("b", 3, 6)]


def test_unmerged_scan_keeps_every_rule(tmp_path: Path) -> None:
    """merge=False returns each rule's own span."""
    rules = _rule_yaml("weak", "abcdef", severity="low") + _rule_yaml("strong", "defghi", severity="critical")
    result = _scanner(tmp_path, rules).scan_alone("abcdefghi", merge=False)
    assert sorted(match.rule.id for match in result.matches) == ["strong", "weak"]


def test_secret_group_sets_the_span(tmp_path: Path) -> None:
    """The match span covers only the secret group."""
    rule = _rule_yaml("r", "key=(?P<value>[0-9]+)", extra="secret_group: value")
    match = _scanner(tmp_path, rule).scan_alone("key=12345").matches[0]
    assert (match.start, match.end) == (4, 9)


def test_entropy_threshold_filters_low_entropy_values(tmp_path: Path) -> None:
    """A value below the rule's entropy threshold is not reported."""
    scanner = _scanner(tmp_path, _rule_yaml("r", "[a-z0-9]{16}", extra="entropy: 3.5"))
    assert scanner.scan_alone("aaaaaaaabbbbbbbb").matches == []
    assert len(scanner.scan_alone("k3j9x2m8q4w7z1p5").matches) == 1


def test_validator_filters_invalid_values(tmp_path: Path) -> None:
    """A value its validator rejects is not reported."""
    scanner = _scanner(tmp_path, _rule_yaml("r", "[0-9]{16}", extra="validator: luhn"))
    assert scanner.scan_alone("4539578763621486").matches != []
    assert scanner.scan_alone("4539578763621487").matches == []


def test_disabled_rules_and_packs_do_not_run(tmp_path: Path) -> None:
    """enabled: false switches a rule or a pack off until it is explicitly enabled."""
    pack = load_pack(_write_pack(tmp_path, _rule_yaml("r", "abc", extra="enabled: false")))
    assert Scanner([pack]).scan_alone("abc").matches == []
    assert len(Scanner([pack.with_everything_enabled()]).scan_alone("abc").matches) == 1
    off = RulePack("p", Threat.CREDENTIAL_THEFT, False, pack.with_everything_enabled().rules)
    assert Scanner([off]).scan_alone("abc").matches == []


def test_every_packaged_rule_has_an_owasp_tag_and_description() -> None:
    """Packaged rules are documented: description and OWASP category present."""
    rules: list[Rule] = [rule for pack in load_packaged_packs() for rule in pack.rules]
    assert all(rule.description and rule.owasp for rule in rules)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("4539578763621486", True), ("4539 5787 6362 1486", True), ("4539578763621487", False), ("7", False)],
)
def test_luhn(value: str, expected: bool) -> None:
    """Luhn accepts valid check digits and ignores separators."""
    assert luhn_valid(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4539578763621486", True),  # Visa
        ("373982597919073", True),  # American Express, 15 digits
        ("371449635398431", False),  # a processor's published test number (Amex)
        ("4000 0566 5566 5556", False),  # Stripe's test debit Visa
        ("5555555555554444", False),  # too few distinct digits to be a real card
        ("9539578763621483", False),  # no brand starts with 9
        ("45395787636214", False),  # Visa never has 14 digits
    ],
)
def test_payment_card(value: str, expected: bool) -> None:
    """Cards need a brand prefix, a length that brand issues and a Luhn digit."""
    assert payment_card_valid(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("123-45-6789", True),
        ("000-45-6789", False),
        ("666-45-6789", False),
        ("900-45-6789", False),
        ("123-00-6789", False),
        ("123-45-0000", False),
    ],
)
def test_ssn(value: str, expected: bool) -> None:
    """SSNs with area 000/666/9xx, group 00 or serial 0000 are rejected."""
    assert ssn_valid(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("DE89370400440532013000", True),
        ("GB82 WEST 1234 5698 7654 32", True),
        ("DE89370400440532013001", False),  # mod-97 fails
        ("DE8937040044053201300", False),  # one short for Germany
        ("QQ89370400440532013000", False),  # no such country
    ],
)
def test_iban(value: str, expected: bool) -> None:
    """IBANs need the country's length and a mod-97 remainder of 1."""
    assert iban_valid(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"), [("+44 20 7946 0958", True), ("(212) 555-0198", True), ("123-456-7890", False)]
)
def test_phone(value: str, expected: bool) -> None:
    """Phone numbers are checked against their numbering plan (US when no country code)."""
    assert phone_valid(value) is expected


def test_eu_national_ids() -> None:
    """Spanish DNI control letters and the Dutch BSN eleven-test are checked."""
    assert spanish_dni_valid("12345678Z")
    assert not spanish_dni_valid("12345678A")
    assert dutch_bsn_valid("111222333")
    assert not dutch_bsn_valid("111222334")


def test_entropy() -> None:
    """Shannon entropy is 0 for one repeated symbol and log2(n) for n distinct ones."""
    assert shannon_entropy("aaaa") == 0
    assert shannon_entropy("abcd") == 2


@pytest.mark.parametrize(
    "value",
    ["YOUR_API_KEY", "xxxxxxxxxxxx", "****************", "$API_KEY", "${TOKEN}", "process.env.API_KEY",
     "<your-token>", "os.environ['KEY']", "{{ secrets.TOKEN }}", "changeme", "settings.api_key",
     "key_password", "SessionClientSecret", "get_password(user)", "postgres", "root", "guest"],
)  # fmt: skip
def test_placeholders_are_recognised(value: str) -> None:
    """Common stand-ins for secrets count as placeholders."""
    assert is_placeholder(value)


@pytest.mark.parametrize("value", ["k3J9x2M8q4W7z1P5", "Xk9#mQ2$vL7pRt4w", "hunter2hunter3!"])
def test_real_looking_values_are_not_placeholders(value: str) -> None:
    """Random-looking values are not mistaken for placeholders."""
    assert not is_placeholder(value)


def test_whole_token_pack_covers_the_rest_of_a_token(tmp_path: Path) -> None:
    """In a whole_tokens pack a match reaches over the rest of its token; a full stop after it stays."""
    rule = _rule_yaml("r", "tok_[a-z+/]{4}", keywords="[tok_]")
    header = "pack: test\nthreat: credential_theft\nwhole_tokens: true\n"
    scanner = Scanner([load_pack(_write_pack(tmp_path, rule, header))])
    text = "a tok_abcdXYZ123-4_5 b tok_wxyz. c tok_mnop/path d tok_q+r/more+x==, e"
    spans = [text[match.start : match.end] for match in scanner.scan_alone(text).matches]
    assert spans == ["tok_abcdXYZ123-4_5", "tok_wxyz", "tok_mnop", "tok_q+r/more+x=="]
    plain = _scanner(tmp_path, rule)
    first = plain.scan_alone(text).matches[0]
    assert text[first.start : first.end] == "tok_abcd"


@pytest.mark.parametrize("key", ["whole_tokens", "decode", "enabled"])
def test_pack_flags_must_be_booleans(tmp_path: Path, key: str) -> None:
    """A pack flag that is not true or false is an error naming its line."""
    header = f"pack: test\nthreat: credential_theft\n{key}: sometimes\n"
    with pytest.raises(PackError, match=f":3: {key}: must be true or false"):
        load_pack(_write_pack(tmp_path, _rule_yaml("r", "x"), header))


@pytest.mark.parametrize(
    "value",
    [
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "hf_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "sk-proj-XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        "<your-token>",
        "ghp_000000000000000000000000000000000000",
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
        "my-secret-pw",
        "glpat-************************",
        "password",
        "your_password",
        "PASSWD",
        "<password>",
    ],
)
def test_documentation_examples_and_stand_ins_are_recognised(value: str) -> None:
    """Published example keys and obvious stand-ins are not taken for secrets."""
    assert is_example_value(value)


@pytest.mark.parametrize(
    "value",
    [
        "AKIAQWERTY234567ABCD",
        GITHUB_TOKEN,
        "sk-proj-Qw3rTy7uIo9pAs2dFg4hJk6lZx8cVb1nMq5W",
        "xoxb-521530290660-4267974737433-ayOylcQ5XEqdymEUJHa9betV",
        "AAAAAAAAAAAAAAAAAAAAAAt8DeLq2eSB8mgzmT44DGp0Zx72nG4SAl8Lntd0wI",
        "Summer-Password-2024!",
        "MyPassw0rdIsLong#17",
        "db_passwd_Xk9v2LmQ",
        "OEaXAkQyB-BepqOOZBalo_9s",
        "Qx-zz",
    ],
)
def test_real_looking_tokens_are_not_stand_ins(value: str) -> None:
    """Random token bodies, whatever their prefix, are not stand-ins."""
    assert not is_example_value(value)


def test_random_url_safe_tokens_are_never_stand_ins() -> None:
    """Dashes and underscores split a random token into word-like pieces; none of them is taken for a
    provider prefix before a stand-in body."""
    drawn = [secrets.token_urlsafe(size) for size in (18, 24, 32) for _ in range(20_000)]
    assert [token for token in drawn if is_example_value(token)] == []


def test_a_value_ends_at_a_nul_that_joins_texts_scanned_together(tmp_path: Path) -> None:
    """Texts scanned as one, NUL-separated: a value at a text's end holds no NUL, so its fingerprint,
    validators and the vault-placeholder check read the value itself."""
    rule = _rule_yaml(
        "r", r"password=(?P<secret>[^\s]{8,64})", keywords="[password]", extra="secret_group: secret"
    )
    scanner = _scanner(tmp_path, rule)
    text = "password=Qv7mZ2kLx9pW\x00\n\x00next"
    assert [text[match.start : match.end] for match in scanner.scan_alone(text).matches] == ["Qv7mZ2kLx9pW"]
    assert scanner.scan_alone("password=egv_0123456789abcdef0123\x00\n\x00next").matches == []


def test_anchored_rule_that_can_backtrack_without_end_still_runs_out_of_time(tmp_path: Path) -> None:
    """An anchored rule whose repeated part matches in more than one way keeps the per-attempt limit."""
    rules = _rule_yaml("slow", "x(?:a|aa){1,60}$", keywords="[x]", extra="anchored: true") + _rule_yaml(
        "fast", "b{3}"
    )
    result = _scanner(tmp_path, rules, timeout_s=0.01).scan_alone("bbb x" + "a" * 60 + "!")
    assert result.timed_out == ("slow",)
    assert [match.rule.id for match in result.found] == ["fast"]


@pytest.mark.parametrize(
    ("pattern", "paths"),
    [
        (r"(?i:password|pwd)\s{0,8}=\s{0,8}(?P<secret>[^\s]{8,128}+)", 2 * 9 * 9),
        (r"(?<=(?:^|;)\s*)env(?=\s{0,256}\|)", 1 + 2 * 101 + 101),
        (r"(?:bearer\s{1,8})?token", 9),
        (r"(?:a|aa)+$", None),
        (r"(?:a+)+b", None),
        (r"(?:\w{1,4}\s){1,9}x", None),
        (r"(?:a?){1,30}", None),
        (r"(a)\1{2,}", None),
    ],
)
def test_backtracking_paths_bound_how_an_attempt_splits_a_span(pattern: str, paths: int | None) -> None:
    """Repeats multiply their counts, lookarounds add theirs; a repeat holding a choice has no bound."""
    assert backtracking_paths(pattern, 100) == paths


class _CountingAutomaton:
    """Counts the keyword hits the scanner's automaton hands back (the work a plan does per hit)."""

    def __init__(self, automaton: Any) -> None:
        self.automaton = automaton
        self.hits = 0

    def find_matches_as_indexes(self, text: str | bytes, *, overlapping: bool) -> list[tuple[int, int, int]]:
        found: list[tuple[int, int, int]] = self.automaton.find_matches_as_indexes(
            text, overlapping=overlapping
        )
        self.hits += len(found)
        return found


@pytest.mark.parametrize("run", ["a" * 1_000_000, "A" * 1_000_000, "7" * 1_000_000, "31415926" * 125_000])
@pytest.mark.parametrize("lead", ["", "\u0130"], ids=["ascii", "lowercase-longer"])
def test_run_of_one_character_costs_a_bounded_number_of_keyword_hits(run: str, lead: str) -> None:
    """A run of one character (any digits read as one) hits its keywords at its edges only, not at each
    of its positions, and a secret next to it is still found; also in a text holding U+0130, whose
    lowercase is longer than itself."""
    scanner = Scanner(load_packaged_packs())
    hits = _count_hits(scanner)
    result = scanner.scan_alone(lead + run + " " + GITHUB_TOKEN + " " + run)
    assert sum(counting.hits for counting in hits) < 10_000
    assert any(match.rule.id == "github-pat" for match in result.matches)


def _count_hits(scanner: Scanner) -> tuple[_CountingAutomaton, _CountingAutomaton]:
    """Counts the hits the keyword pass lists, from here on."""
    keywords = scanner._unrepeated
    ascii_counting = _CountingAutomaton(keywords._ascii_automaton)
    counting = _CountingAutomaton(keywords._automaton)
    keywords._ascii_automaton = ascii_counting  # type: ignore[assignment]
    keywords._automaton = counting  # type: ignore[assignment]
    return ascii_counting, counting


def _every_hit_listed(scanner: Scanner) -> Scanner:
    """The scanner as it was before keywords of one character repeated had their hits counted in
    stretches: every hit listed by the keyword automaton."""
    listing = copy.copy(scanner)
    listing._repeated = {}
    listing._unrepeated = scanner._keywords
    return listing


def _plan_of(scanner: Scanner, text: str) -> tuple[object, ...]:
    with scanner.budget().metered() as meter:
        plan = scanner._plan(text, meter)
    return plan.regions, plan.starts, plan.turned


def _numbers(first: int, count: int) -> list[str]:
    return [f"{number % 100_000:05d}" for number in range(first, first + count)]


def test_a_list_of_numbers_read_with_its_field_costs_a_few_keyword_hits_a_number() -> None:
    """Digits all read 0, and each number is read on from the 256 characters of the list before it: a
    run of zeros that number keywords hit at each place. Those hits are counted by stretches."""
    scanner = Scanner(load_packaged_packs())
    hits = _count_hits(scanner)
    scan = JsonScan(scanner, lambda rule: True)
    document = {"metadata": _numbers(0, 5_000)}
    read = scan.filter("", copy.deepcopy(document))
    assert sum(counting.hits for counting in hits) < 5_000
    old = JsonScan(_every_hit_listed(Scanner(load_packaged_packs())), lambda rule: True)
    assert old.filter("", copy.deepcopy(document)) == read
    assert [(found.where, found.rule.id) for found in old.found] == [
        (found.where, found.rule.id) for found in scan.found
    ]


_DIGIT_RUNS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from("0123456789"), st.integers(1, 400)).map(lambda piece: piece[0] * piece[1]),
        st.integers(0, 10**30).map(str),
        st.sampled_from(
            [
                " ",
                "\n",
                ", ",
                "::",
                ":" * 9,
                "A" * 25,
                "a" * 300,
                "-",
                "GB82 WEST 1234 5698 7654 32",
                "4111 1111 1111 1111",
                "4111111111111111",
                "12345678Z",
                GITHUB_TOKEN,
                "card number ",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAA%2FBBBB",
            ]
        ),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(pieces=_DIGIT_RUNS, lead=st.integers(0, 70))
def test_hits_counted_in_stretches_plan_what_every_hit_listed_planned(pieces: list[str], lead: int) -> None:
    """Runs of digits (and of the other characters a keyword repeats) of every length about the run
    blocks' and the keywords', among keywords and secrets, from any alignment."""
    text = "x" * lead + "".join(pieces)
    assert _plan_of(PACKAGED, text) == _plan_of(EVERY_HIT_LISTED, text)
    assert PACKAGED.scan_alone(text).matches == EVERY_HIT_LISTED.scan_alone(text).matches


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(alphabet="0123456789a:A -"),
    lambda children: (
        st.lists(children, max_size=8) | st.dictionaries(st.text(max_size=5), children, max_size=5)
    ),
    max_leaves=60,
)


@settings(max_examples=200, deadline=None)
@given(document=_JSON)
def test_json_of_numbers_is_read_alike_with_hits_counted_in_stretches(document: Any) -> None:
    """Hypothesis' JSON, as a text and as a body whose strings are read with their fields' text."""
    text = json.dumps(document)
    assert _plan_of(PACKAGED, text) == _plan_of(EVERY_HIT_LISTED, text)
    new, old = JsonScan(PACKAGED, lambda rule: True), JsonScan(EVERY_HIT_LISTED, lambda rule: True)
    assert new.filter("", copy.deepcopy(document)) == old.filter("", copy.deepcopy(document))
    assert [(found.where, found.rule.id) for found in new.found] == [
        (found.where, found.rule.id) for found in old.found
    ]


PACKAGED = Scanner([pack.with_everything_enabled() for pack in load_packaged_packs()], timeout_s=5.0)
EVERY_HIT_LISTED = _every_hit_listed(PACKAGED)


def _hits_by_rule_hit_by_hit(
    scanner: Scanner,
    searched: str,
    found: tuple[list[tuple[int, int, int]], Sequence[tuple[int, ...]]],
    across_runs: tuple[list[tuple[int, int, int]], Sequence[tuple[int, ...]]],
) -> tuple[dict[int, list[tuple[int, int]]], list[tuple[int, int]]]:
    """``Scanner._hits_by_rule`` as it was: each hit's rules and whether it is a key's prefix looked up
    hit by hit."""
    hits_by_rule: dict[int, list[tuple[int, int]]] = {}
    prefixes = []
    for word_index, start, end in found[0]:
        if found[1][word_index] and searched[start:end] in scanner._key_prefixes:
            prefixes.append((start, end))
        for index in found[1][word_index]:
            hits_by_rule.setdefault(index, []).append((start, end))
    for word_index, start, end in across_runs[0]:
        for index in across_runs[1][word_index]:
            hits_by_rule.setdefault(index, []).append((start, end))
    if across_runs[0]:
        for hits in hits_by_rule.values():
            hits.sort(key=lambda hit: hit[1])
    return hits_by_rule, prefixes


HIT_BY_HIT = copy.copy(PACKAGED)
HIT_BY_HIT._hits_by_rule = functools.partial(_hits_by_rule_hit_by_hit, HIT_BY_HIT)  # type: ignore[method-assign]
KEYWORDS = sorted(
    {trigger_view(word) for rule in PACKAGED.rules for word in rule.keywords} | PACKAGED._key_prefixes
)


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(
        st.one_of(
            st.sampled_from(KEYWORDS),
            st.sampled_from([" ", "  ", "\n", "\n\n", "-", "_", "=", '"', "x", "0", GITHUB_TOKEN]),
            st.sampled_from(KEYWORDS).map(str.upper),
        ),
        max_size=60,
    ),
    repeat=st.integers(1, 40),
)
def test_hits_taken_word_by_word_plan_what_hits_taken_one_by_one_did(pieces: list[str], repeat: int) -> None:
    """Keywords of every pack (and keys' prefixes), among spaces, runs of them and other text, a piece of
    text repeated as a long document repeats its words: each rule's hits are those listed hit by hit, in
    order of where they end, and what is planned and found is the same."""
    text = "".join(pieces) * repeat
    view = trigger_view(text)
    found = PACKAGED._unrepeated.find(view)
    across = hits_across_space_runs(PACKAGED._spaced_keywords, view)
    by_word, prefixes = PACKAGED._hits_by_rule(view, found, across)
    by_hit, prefixes_by_hit = _hits_by_rule_hit_by_hit(PACKAGED, view, found, across)
    assert list(by_word) == list(by_hit)
    assert prefixes == prefixes_by_hit
    for index, hits in by_word.items():
        assert hits == sorted(hits, key=lambda hit: hit[1])
        assert sorted(hits) == sorted(by_hit[index])
    assert _plan_of(PACKAGED, text) == _plan_of(HIT_BY_HIT, text)
    assert PACKAGED.scan_alone(text).matches == HIT_BY_HIT.scan_alone(text).matches


ASKED_ONE_BY_ONE = copy.copy(PACKAGED)
ASKED_ONE_BY_ONE._drop_unbounded_together = lambda encoded, plan, meter: None  # type: ignore[method-assign]
INJECTION_WORDS = sorted(
    {word for rule in PACKAGED.rules if rule.pack == "injection" for word in rule.keywords}
    | {example for rule in PACKAGED.rules if rule.pack == "injection" for example in rule.match_examples}
)


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(
        st.one_of(
            st.sampled_from(INJECTION_WORDS),
            st.sampled_from([" ", "  ", "\n", "the ", "all previous instructions", "user. ", "x", "é"]),
        ),
        max_size=30,
    ),
    repeat=st.integers(1, 20),
)
def test_unbounded_rules_asked_together_plan_and_find_what_each_asked_alone_did(
    pieces: list[str], repeat: int
) -> None:
    """Injection rules' keywords and examples among other text, repeated as a long document repeats its
    words: the rules whose matches have no bound on their length, asked about the text together, keep
    the attempts, and find the matches, that each asked alone kept and found."""
    text = "".join(pieces) * repeat
    assert _plan_of(PACKAGED, text) == _plan_of(ASKED_ONE_BY_ONE, text)
    assert PACKAGED.scan_alone(text).matches == ASKED_ONE_BY_ONE.scan_alone(text).matches


def test_a_document_that_holds_several_unbounded_rules_keywords_is_read_by_one_loosened_pass() -> None:
    """A document that says "ignore" and "do not" on every page and holds no injection: the rules those
    words trigger, whose matches have no bound on their length, are ruled out by one RE2 pass over it
    together, not one each."""
    page = (
        "Ignore the warnings about deprecated options; they go away after the first migration. Follow "
        "the steps in docs/deploy.md, and do not expose the admin port.\n\n"
    )
    text = page * 200
    with PACKAGED.budget().metered() as meter:
        plan = PACKAGED._plan_all(text, meter)
    unbounded = [index for index in plan.starts if PACKAGED._widths[index] is None]
    assert len(unbounded) >= 2
    with (
        mock.patch.object(relaxed, "possible", wraps=relaxed.possible) as asked,
        PACKAGED.budget().metered() as meter,
    ):
        planned = PACKAGED._plan(text, meter)
    assert not set(unbounded) & set(planned.starts)
    assert asked.call_count == 1
    assert PACKAGED.scan_alone(text).matches == ASKED_ONE_BY_ONE.scan_alone(text).matches == []


LONG_LEAD = "ab" * (_FEW_BLOCKS * _RUN_BLOCK // 2)
"""A lead of as many blocks as are looked for without numpy, none of them made of one character."""


def _ascii(char: str, ascii_only: bool) -> str:
    """``char``, or where only ASCII is wanted an ASCII character for each one past it."""
    return char if char.isascii() or not ascii_only else chr(ord("c") + ord(char) % 3)


def runs_by_definition(view: str, shortest: int) -> list[tuple[int, int]]:
    """Maximal stretches of whole aligned blocks made of one same character, at least ``shortest`` long."""
    blocks = [view[start : start + _RUN_BLOCK] for start in range(0, len(view) - _RUN_BLOCK + 1, _RUN_BLOCK)]
    runs: list[tuple[int, int]] = []
    for number, block in enumerate(blocks):
        if len(set(block)) != 1:
            continue
        if runs and runs[-1][1] == number * _RUN_BLOCK and view[runs[-1][0]] == block[0]:
            runs[-1] = (runs[-1][0], (number + 1) * _RUN_BLOCK)
        else:
            runs.append((number * _RUN_BLOCK, (number + 1) * _RUN_BLOCK))
    return [(low, high) for low, high in runs if high - low >= shortest]


@settings(max_examples=500, deadline=None)
@given(
    st.text(alphabet=[*map(chr, range(128)), *"\u0130\u212a\u00c9\u00a0\u2028\u3000\u03a3\ud800\U0001f600"])
)
def test_the_trigger_view_is_the_lowercased_text_through_the_table(text: str) -> None:
    """ASCII text (one table that lowercases too), text that lowercases to ASCII (the Kelvin sign, a
    dotted capital I) and other text read as its definition: lowercased, then the table."""
    ascii_text = text.encode("ascii", "ignore").decode()
    for read in (text, ascii_text):
        assert trigger_view(read) == read.replace("\u0130", "i").lower().translate(TRIGGER_TABLE)


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(
        st.tuples(st.sampled_from("ab0 \u0130\U0001f600"), st.integers(min_value=1, max_value=200)),
        max_size=30,
    ),
    shortest=st.sampled_from([_RUN_BLOCK, 2 * _RUN_BLOCK, 3 * _RUN_BLOCK + 5]),
    long=st.booleans(),
    ascii_only=st.booleans(),
)
def test_runs_of_one_character_are_found_by_whole_blocks(
    pieces: list[tuple[str, int]], shortest: int, long: bool, ascii_only: bool
) -> None:
    """Short and long texts alike (below and above the number of blocks numpy is set up for), ASCII
    (whose blocks are compared as integers) and not."""
    view = (LONG_LEAD if long else "") + "".join(_ascii(char, ascii_only) * length for char, length in pieces)
    assert uniform_runs(view, shortest) == runs_by_definition(view, shortest)


@settings(max_examples=300, deadline=None)
@given(
    blocks=st.lists(
        st.tuples(
            st.sampled_from("a0 \u0130\U0001f600"),
            st.one_of(st.none(), st.integers(min_value=0, max_value=_RUN_BLOCK - 1)),
            st.sampled_from("b\U0001f601"),
        ),
        min_size=1,
        max_size=40,
    ),
    offset=st.integers(min_value=0, max_value=3),
    long=st.booleans(),
    ascii_only=st.booleans(),
)
def test_a_block_of_one_character_but_one_place_is_no_run(
    blocks: list[tuple[str, int | None, str]], offset: int, long: bool, ascii_only: bool
) -> None:
    """Blocks made of one character except at one place (any place: the middle the search looks at
    first and all the others), and whole ones, in any order and alignment, in short and long texts,
    ASCII and not."""
    view = (
        (LONG_LEAD if long else "")
        + "x" * offset
        + "".join(
            _ascii(char, ascii_only) * _RUN_BLOCK
            if place is None
            else _ascii(char, ascii_only) * place
            + _ascii(other, ascii_only)
            + _ascii(char, ascii_only) * (_RUN_BLOCK - place - 1)
            for char, place, other in blocks
        )
    )
    for shortest in (_RUN_BLOCK, 2 * _RUN_BLOCK):
        assert uniform_runs(view, shortest) == runs_by_definition(view, shortest)


def test_rule_triggered_inside_a_run_still_finds_its_match_there(tmp_path: Path) -> None:
    """A keyword made of the run's character triggers its rule over the whole run, not only its edges."""
    rule = _rule_yaml("r", r"x{4}-[0-9]{6}", keywords="[xxxx]")
    scanner = _scanner(tmp_path, rule)
    text = "x" * 100_000 + "-123456 tail"
    assert [(match.start, match.end) for match in scanner.scan_alone(text).matches] == [(99_996, 100_007)]


KEYWORDS = [
    "ignore",
    "ign",
    "gnore",
    "do not",
    "not tell",
    " x",
    "y ",
    "a b c",
    "\u00e9t\u00e9",
    "\u5ffd\u7565",
    "  ",
    # Holding the separator of the stretches searched for keywords across runs.
    "x\x00 x",
    "y \x00",
    # As long as the longest, with a space as far from a run as it can be.
    "ignore x",
    " x ignor",
]
# Pieces of text that make keywords, parts of them, runs of spaces and other scripts.
PIECES = [
    "ignore",
    "ig",
    "nore",
    "do",
    "not",
    "tell",
    "x",
    "y",
    "a",
    "b",
    "c",
    " ",
    "  ",
    "     ",
    "\u00e9t\u00e9",
]
PIECES += ["\u5ffd", "\u7565", "\x00", "-"]


def _occurrences(words: list[str], text: str) -> Counter[tuple[int, int, int]]:
    """Every occurrence of each word in ``text``, overlapping ones too, found one by one."""
    found: Counter[tuple[int, int, int]] = Counter()
    for word_index, word in enumerate(words):
        start = text.find(word)
        while start >= 0:
            found[(word_index, start, start + len(word))] += 1
            start = text.find(word, start + 1)
    return found


def _by_word(found: list[tuple[int, int, int]], rules: Any) -> Counter[tuple[int, int, int]]:
    """Hits as (word, start, end), each word triggering the rule of its own number."""
    return Counter((rules[word_index][0], start, end) for word_index, start, end in found)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=60))
def test_keyword_search_finds_every_occurrence_of_every_keyword(pieces: list[str]) -> None:
    """ASCII text (searched as bytes for the ASCII keywords) and other text alike: each occurrence."""
    text = "".join(pieces)
    keywords = Keywords(KEYWORDS, [(word_index,) for word_index in range(len(KEYWORDS))])
    found, rules = keywords.find(text)
    assert _by_word(found, rules) == _occurrences(KEYWORDS, text)


def _collapsed(view: str) -> tuple[str, list[int]]:
    """``view`` with each run of spaces read as its first, and where each kept character stands."""
    places = [
        place for place in range(len(view)) if not (view[place] == " " and view[place - 1 : place] == " ")
    ]
    return "".join(view[place] for place in places), places


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=60))
# A run as far from a keyword's end or start as the keyword's length allows, in a long text.
@hypothesis.example(["q" * 40, "ignore", "   ", "x", "q" * 40])
@hypothesis.example(["q" * 40, "  ", "x ignor", "q" * 40])
# Stretches around two runs, one ending in "x", the next starting with " x": joined, they spell a
# keyword that holds the separator, which is no hit of the text.
@hypothesis.example(["a" * 100, "  ", "bbbbbbx", "dddddd", " x", "cccc", "  ", "e" * 100])
def test_hits_across_runs_of_spaces_are_the_keywords_of_the_collapsed_view_that_span_a_run(
    pieces: list[str],
) -> None:
    """A hit in the view read with runs of spaces as one space, mapped back to the view: those whose
    span in the view is longer than the keyword (they cross a run), and only those."""
    view = "".join(pieces)
    words = [word for word in KEYWORDS if " " in word.strip(" ")]
    keywords = Keywords(words, [(word_index,) for word_index in range(len(words))])
    collapsed, places = _collapsed(view)
    expected: Counter[tuple[int, int, int]] = Counter()
    for (word_index, start, end), count in _occurrences(words, collapsed).items():
        low, high = places[start], places[end - 1] + 1
        if high - low != end - start:
            expected[(word_index, low, high)] += count
    found, rules = hits_across_space_runs(keywords, view)
    assert _by_word(found, rules) == expected
    # Searched near the runs only, as a long text is.
    with mock.patch.object(rulepack, "_AROUND_RUNS_MIN", 0):
        found, rules = hits_across_space_runs(keywords, view)
    assert _by_word(found, rules) == expected


def test_the_runs_again_of_one_scan_share_one_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Text crafted to make many rules backtrack without end costs one run-again budget in all, not one
    a rule: every such rule is still reported as timed out, and the rule that finishes still reports.
    Every rule has its first run (six of 50 ms, within the budget of 1 s), and no run again starts once
    the budget is spent."""
    slow = [f"slow{number}" for number in range(6)]
    rules = "".join(_rule_yaml(rule_id, "(?:a|aa)+$") for rule_id in slow) + _rule_yaml("fast", "b{3}")
    scanner = Scanner([load_pack(_write_pack(tmp_path, rules))], timeout_s=0.05, rescan_s=1.0)
    budget = scanner.budget()
    watch = BudgetWatch(monkeypatch)
    result = scanner.scan("bbb " + "a" * 40 + "!", budget)
    assert sorted(result.timed_out) == slow
    assert [match.rule.id for match in result.found] == ["fast"]
    runs = [step for step in watch.assert_nothing_starts_once_spent(budget) if step.kind == RUN]
    assert budget.spent and len(runs) > len(slow) + 1, runs


class _CutShort:
    """A rule's pattern whose runs the regex module keeps stopping as if out of time, as it does when the
    process's other threads fill the CPU clock it counts a timeout in: each search stops after its first
    match, every other match attempt before it starts."""

    def __init__(self, pattern: regex.Pattern[str]) -> None:
        self._pattern = pattern
        self.pattern = pattern.pattern
        self.flags = pattern.flags
        self._attempts = 0

    def finditer(self, text: str, pos: int, endpos: int, timeout: float) -> Iterator[regex.Match[str]]:
        for count, hit in enumerate(self._pattern.finditer(text, pos, endpos, timeout=timeout)):
            if count:
                raise TimeoutError("regex timed out")
            yield hit

    def match(
        self, text: str, pos: int, endpos: int, timeout: float | None = None
    ) -> regex.Match[str] | None:
        self._attempts += 1
        if self._attempts % 2:
            raise TimeoutError("regex timed out")
        return self._pattern.match(text, pos, endpos, timeout=timeout)


def _keyed_scanner(pattern: _CutShort, *, anchored: bool) -> Scanner:
    """A scanner of one rule, keyed on ``key=``, whose pattern the regex module stops as ``pattern`` does."""
    rule = Rule(
        id="keyed",
        description="a key",
        pattern=pattern,  # type: ignore[arg-type]
        keywords=("key=",),
        threat=Threat.CREDENTIAL_THEFT,
        severity=Severity.HIGH,
        owasp="LLM02",
        entropy=None,
        validator=None,
        secret_group=0,
        match_examples=("key=123",),
        no_match_examples=(),
        enabled=True,
        anchored=anchored,
    )
    return Scanner([RulePack("test", Threat.CREDENTIAL_THEFT, True, (rule,))], timeout_s=60.0)


@pytest.mark.parametrize("anchored", [False, True])
def test_a_run_the_regex_module_stops_while_the_thread_has_time_left_goes_on(anchored: bool) -> None:
    """The regex module counts a timeout in the process's CPU time, which other threads' work fills too:
    a run it stops before the scanning thread has spent the rule's time is run on, and
    the rule finds every match rather than being out of time for another thread's work."""
    scanner = _keyed_scanner(_CutShort(regex.compile(r"key=\d{3}")), anchored=anchored)
    text = "key=111 and key=222, then key=333"
    result = scanner.scan_alone(text)
    assert result.timed_out == ()
    assert [text[match.start : match.end] for match in result.matches] == ["key=111", "key=222", "key=333"]


class _CutOnce(_CutShort):
    """A rule's pattern whose first search the regex module stops after its first match; later searches
    run whole."""

    def finditer(self, text: str, pos: int, endpos: int, timeout: float) -> Iterator[regex.Match[str]]:
        for count, hit in enumerate(self._pattern.finditer(text, pos, endpos, timeout=timeout)):
            if count and not self._attempts:
                self._attempts += 1
                raise TimeoutError("regex timed out")
            yield hit


def test_a_search_stopped_after_an_empty_match_goes_on_past_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A search that goes on from its last match finds an empty one there again first: it is not taken
    twice."""
    scanner = _keyed_scanner(_CutOnce(regex.compile(r"(?=key=\d)")), anchored=False)
    spans: list[tuple[int, int, bool]] = []
    spans_of = Scanner._spans

    def recorded(self: Scanner, *arguments: Any) -> Iterator[tuple[int, int, bool]]:
        for span in spans_of(self, *arguments):
            spans.append(span)
            yield span

    monkeypatch.setattr(Scanner, "_spans", recorded)
    scanner.scan_alone("key=1 and key=2")
    assert spans == [(0, 0, False), (10, 10, False)]


def test_a_partial_reading_is_not_taken_for_a_whole_one_without_saying_so(tmp_path: Path) -> None:
    """Where a rule ran out of time, ``matches`` raises: a caller reads what the others found only by
    asking for it (``found``), with the rules out of time beside it."""
    rules = _rule_yaml("slow", "(?:a|aa)+$") + _rule_yaml("fast", "b{3}")
    scanner = Scanner([load_pack(_write_pack(tmp_path, rules))], timeout_s=0.05, rescan_s=0.5)
    result = scanner.scan_alone("bbb " + "a" * 40 + "!")
    with pytest.raises(ScanTimeout) as raised:
        _ = result.matches
    assert raised.value.result is result and "slow" in str(raised.value)
    assert [match.rule.id for match in result.found] == ["fast"]
    assert scanner.scan_alone("bbb").matches[0].rule.id == "fast"


def test_many_crafted_texts_cost_one_budget_not_one_a_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Texts of one request share its budget: N texts that each make a rule backtrack without end cost
    about the budget in all, not N times it. Once it is spent, a later text is not read at all (not
    even for keywords): its pack is out of time for it, and a rule no text triggered is not named."""
    slow = "".join(_rule_yaml(f"slow{number}", "k=(?:a|aa)+$", keywords="[k=]") for number in range(3))
    rules = slow + _rule_yaml("fast", "b{3}", keywords="[bbb]") + _rule_yaml("idle", "z{3}", keywords="[zzz]")
    scanner = Scanner([load_pack(_write_pack(tmp_path, rules))], timeout_s=0.05, rescan_s=0.5)
    budget = scanner.budget()
    crafted = "bbb k=" + "a" * 40 + "!"
    watch = BudgetWatch(monkeypatch)
    results = [scanner.scan(crafted, budget) for _ in range(40)]
    # The budget and the one step under way past it; one budget a text would be 40 of them.
    steps = watch.assert_nothing_starts_once_spent(budget)
    assert [step.kind for step in steps[:2]] == [READ, RUN] and UNREAD in {step.kind for step in steps}
    assert budget.spent and {"slow0", "slow1", "slow2", "test-unread"} <= set(budget.timed_out)
    assert "idle" not in budget.timed_out
    assert all(result.timed_out for result in results)
    assert results[0].found and results[0].found[0].rule.id == "fast"
    assert results[-1].timed_out == ("test-unread",) and results[-1].found == []
    assert scanner.scan("nothing to trigger here", budget).timed_out == ("test-unread",)


def test_a_renewed_budget_has_all_its_seconds_and_no_rule_out_of_time(tmp_path: Path) -> None:
    """The budget of the next response or message starts afresh."""
    rules = _rule_yaml("slow", "k=(?:a|aa)+$", keywords="[k=]")
    scanner = Scanner([load_pack(_write_pack(tmp_path, rules))], timeout_s=0.002, rescan_s=0.01)
    budget = scanner.budget()
    scanner.scan("k=" + "a" * 40 + "!", budget)
    assert budget.spent and list(budget.timed_out) == ["slow"]
    budget.renew()
    assert not budget.spent and budget.left == 0.01 and budget.timed_out == {}


def test_a_text_of_matches_one_after_another_is_read_for_their_ends_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where a token's rest is read from each of many matches in one run ("hvs.hvs.…", a vault token's
    prefix over and over), the run is read about once, not once a match: each read before is gone on
    from."""
    read: list[int] = []
    rest_of = rulepack._token_rest

    class Counted:
        def __init__(self, pattern: Any) -> None:
            self.pattern = pattern

        def match(self, text: str, position: int, stop: int) -> Any:
            found = self.pattern.match(text, position, stop)
            read.append((found.end() if found is not None else position) - position)
            return found

    monkeypatch.setattr(rulepack, "_token_rest", lambda punctuation: Counted(rest_of(punctuation)))
    text = "hvs." * 50_000
    starts = range(0, len(text), 4)
    ends = [rulepack.token_end(text, start, start + 4) for start in starts]
    assert sum(read) <= len(text)
    for start in starts[::97]:
        rulepack._last_rests.clear()
        assert ends[start // 4] == rulepack.token_end(text, start, start + 4)


def test_a_value_is_validated_once_in_a_scan_however_many_views_hold_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A phone number's check against the numbering plans is made once for a value in a scan, in the text
    and in every view of it that holds the value again (a percent-encoded copy makes one)."""
    calls: Counter[str] = Counter()

    def counted(value: str) -> bool:
        calls[value] += 1
        return True

    monkeypatch.setitem(cast(dict[str, Any], validators.VALIDATORS), "phone", counted)
    rule = _rule_yaml("phone", r"\+\d{1,3}(?: \d{2,4}){3}", '["+"]', "validator: phone")
    header = "pack: test\nthreat: data_exfiltration\ndecode: true\n"
    scanner = Scanner([load_pack(_write_pack(tmp_path, rule, header))])
    found = scanner.scan_alone("call +1 415 555 0132, or %2B1 415 555 0132 after six").matches
    assert len(found) == 2 and calls == {"+1 415 555 0132": 1}


@functools.cache
def _packaged_scanner() -> Scanner:
    return Scanner(load_packaged_packs(), timeout_s=5.0)


class _NoHitsYet(rulepack._RepeatedHits):
    """No repeated keyword's hits, yet read as some: the plan of a text that triggers nothing is worked out
    the whole way, as before that case answered early."""

    def __bool__(self) -> bool:
        return True


# Keys whole, cut, encoded and disguised; near-keys; invisible characters and homoglyphs; what a view
# starts at and what joins literals.
_SCAN_PIECES = [
    *("the", "key", " ", "  ", "\n", "\t", "\r\n", ".", ",", "'", '"', "+", "|", "/", "_", "-", "=", "=="),
    *("%", "%2F", "\\x41", "\\u0041", "&#65;", "0x41", "QUJDREVGR0hJSktM", "103,104,112,95", '"g", "h", "p"'),
    *("ghp_", "gh p_", "sk-", "sk-p roj-", "AKIA", "AK IA", "xoxb-", "glpat-", "AIza", "eyJhbGciOi"),
    *("R7mQ2xVt9LkP4sZa8NwE3yHc6JfB1uDg0TiO", "QYLPMN5HHHFPZAM2", "00000000", "-----BEGIN"),
    *("a = 'gh'", "b = 'p_R7mQ2xVt9LkP4sZa8NwE3yHc6JfB1uDg0TiO'", "a + b", "${A}${B}", "A=gh", "B=p_R7mQ"),
    *("john@example.com", "+1 415 555 0100", "4111 1111 1111 1111", "123-45-6789"),
    *("\u200b", "\u00ad", "\U000e0041", "\u0430", "\uff41", "\u0130", "\u017fk-", "\u00e9", "\u03a9"),
]


@settings(max_examples=250, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(_SCAN_PIECES), max_size=30).map("".join))
def test_a_text_that_triggers_no_keyword_is_scanned_as_when_planned_the_whole_way(text: str) -> None:
    """A text with no keyword's hit has its plan answered early (the rules that need no keyword, and
    those of the single characters it holds), and no keyed view or merge is worked on: the findings,
    the disguises they were found under and what is out of time are those of the plan worked out whole."""
    scanner = _packaged_scanner()
    found = scanner.scan_alone(text, merge=False)
    merged = scanner.scan_alone(text)
    with mock.patch.object(rulepack._RepeatedHits, "of", classmethod(_planned_whole_way)):
        whole = scanner.scan_alone(text, merge=False)
        whole_merged = scanner.scan_alone(text)
    for mine, theirs in ((found, whole), (merged, whole_merged)):
        assert [(m.rule.id, m.start, m.end, m.disguise) for m in mine.matches] == [
            (m.rule.id, m.start, m.end, m.disguise) for m in theirs.matches
        ]
        assert mine.timed_out == theirs.timed_out


_REPEATED_OF = rulepack._RepeatedHits.of.__func__  # type: ignore[attr-defined]


def _planned_whole_way(
    cls: type[rulepack._RepeatedHits], repeated: dict[str, list[tuple[int, tuple[int, ...]]]], view: str
) -> rulepack._RepeatedHits:
    found = _REPEATED_OF(cls, repeated, view)
    return found or _NoHitsYet()
