"""Every example of every rule pack in rules/: true positives found, near misses not, in real shapes too."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace

import pytest

from proxy.model import Threat
from proxy.scanning.rulepack import Rule, RulePack, Scanner, load_packaged_packs

PACKS = load_packaged_packs()
# Secrets and PII are looked for anywhere in raw bodies, so their examples must survive being wrapped
# in other formats and buried in longer text.
RAW_BODY_PACKS = [pack for pack in PACKS if pack.threat is Threat.DATA_EXFILTRATION]


def _single_rule_scanner(rule: Rule) -> Scanner:
    pack = RulePack(rule.pack, rule.threat, True, (replace(rule, enabled=True),))
    return Scanner([pack], timeout_s=1.0)


def _rule_finds(rule: Rule, text: str) -> bool:
    return any(match.rule.id == rule.id for match in _single_rule_scanner(rule).scan_alone(text).matches)


def _cases(kind: str, packs: list[RulePack] = PACKS) -> list[pytest.ParameterSet]:
    cases = []
    for pack in packs:
        for rule in pack.rules:
            examples = rule.match_examples if kind == "match" else rule.no_match_examples
            for number, example in enumerate(examples):
                cases.append(pytest.param(rule, example, id=f"{pack.name}:{rule.id}:{number}"))
    return cases


def _as_yaml_block(example: str) -> str:
    return "config:\n  value: |\n    " + example.replace("\n", "\n    ") + "\n"


def _as_header(example: str) -> str:
    return f"X-Forwarded-Data: {example}\r\n"


def _as_sse(example: str) -> str:
    return "data: " + json.dumps({"choices": [{"delta": {"content": example}}]}, ensure_ascii=False) + "\n\n"


SHAPES: dict[str, Callable[[str], str]] = {
    "json": lambda example: json.dumps(example, ensure_ascii=False),
    "escaped-json": lambda example: json.dumps(json.dumps(example, ensure_ascii=False), ensure_ascii=False),
    "yaml": _as_yaml_block,
    "sse": _as_sse,
}


def test_packs_are_found() -> None:
    """The secrets and PII packs are among the packaged text packs."""
    names = {pack.name for pack in PACKS}
    assert {"secrets", "pii"} <= names


@pytest.mark.parametrize("rule", [rule for pack in PACKS for rule in pack.rules], ids=lambda rule: rule.id)
def test_no_rule_matches_the_empty_string(rule: Rule) -> None:
    """A pattern with an empty alternative ("a||b") finds an empty match at every place it is run, each
    one dropped: a scan's work for nothing, and its loosened form can rule no place out."""
    for text in ("", "plain words", "\n"):
        assert all(match.end() > match.start() for match in rule.pattern.finditer(text)), rule.id


@pytest.mark.parametrize(("rule", "example"), _cases("match"))
def test_match_example_is_found(rule: Rule, example: str) -> None:
    """Each true-positive example is found by its own rule."""
    assert _rule_finds(rule, example)


@pytest.mark.parametrize(("rule", "example"), _cases("match", RAW_BODY_PACKS))
def test_match_example_is_found_deep_inside_long_text(rule: Rule, example: str) -> None:
    """A true positive in the middle of a long text is found: windows around keyword hits reach it."""
    filler = "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\n" * 80
    assert _rule_finds(rule, filler + example + "\n" + filler)


@pytest.mark.parametrize(("rule", "example"), _cases("no_match"))
def test_no_match_example_is_not_found(rule: Rule, example: str) -> None:
    """Each deliberate near miss is not reported by its rule."""
    assert not _rule_finds(rule, example)


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize(("rule", "example"), _cases("match", RAW_BODY_PACKS))
def test_match_example_is_found_inside_shape(rule: Rule, example: str, shape: str) -> None:
    """A true positive is still found inside JSON, escaped JSON, YAML and an SSE data line."""
    assert _rule_finds(rule, SHAPES[shape](example))


@pytest.mark.parametrize(
    ("rule", "example"), [case for case in _cases("match", RAW_BODY_PACKS) if "\n" not in str(case.values[1])]
)
def test_single_line_match_example_is_found_in_header(rule: Rule, example: str) -> None:
    """A single-line true positive is still found as an HTTP header value."""
    assert _rule_finds(rule, _as_header(example))
