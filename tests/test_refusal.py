import pytest

from proxy.detectors.refusal import (
    OPENING_CHARS,
    RefusalDetector,
    is_refusal,
    opening,
    refusal_verdict,
)
from proxy.model import Action, Severity, Threat
from proxy.scanning.rulepack import load_pack, pack_path


@pytest.mark.parametrize(
    "text",
    [
        "I can't help with that.",
        "I'm sorry, but I cannot assist with this request.",
        "Sorry, but I can\u2019t assist with that.",
        "As an AI, I cannot share personal information about people.",
        "I won't be able to help with creating malware.",
        "I must respectfully decline to write that.",
        "It's not appropriate or ethical to provide instructions for hurting someone.",
        "I understand you're frustrated, but I cannot provide instructions for that.",
        "Lo siento, pero no puedo ayudar con eso.",
        "Je suis désolé, mais je ne peux pas vous aider.",
        "**I'm sorry, but I can't help with that.**",
    ],
)
def test_refusal_openings_are_detected(text: str) -> None:
    """Common refusal openings, typographic quotes and markup included, are refusals."""
    assert is_refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "Here are the steps to kill a Python process: run `kill -9 <pid>`.",
        "Sure! The capital of France is Paris.",
        "I'm sorry to hear that. Here are some resources that may help you.",
        "",
    ],
)
def test_compliant_answers_are_not_refusals(text: str) -> None:
    """Plain answers, and sympathy followed by help, are not refusals."""
    assert not is_refusal(text)


def test_late_caveat_is_not_a_refusal() -> None:
    """A compliant answer that says "I cannot guarantee" far down is not a refusal."""
    answer = "Here is a detailed plan for your trip. " * 10 + "I cannot provide any guarantee on prices."
    assert len(answer) > OPENING_CHARS
    assert not is_refusal(answer)


def test_premise_correction_is_not_a_refusal() -> None:
    """Declining a false premise ("fictional character") is a correction, not a safety refusal."""
    assert not is_refusal("I cannot provide Totoro's passport number. Totoro is a fictional character.")


def test_verdict_names_first_rule_and_scores_position() -> None:
    """The verdict carries the first matching rule; an immediate refusal scores 1.0."""
    verdict = refusal_verdict("Sorry, but I can't assist with that.")
    assert verdict.refusal
    assert verdict.rule == "refusal-apology-cannot"
    assert verdict.score == 1.0
    later = refusal_verdict("Thanks for asking about this topic, but I cannot help with that.")
    assert later.refusal
    assert 0.0 < later.score < 1.0


def test_opening_length_is_configurable() -> None:
    """A shorter opening misses a refusal that starts after it."""
    text = "Thanks for the detailed question about chemistry. However, I cannot help with that."
    assert RefusalDetector(opening_chars=200).is_refusal(text)
    assert not RefusalDetector(opening_chars=30).is_refusal(text)


def test_opening_must_be_positive() -> None:
    """A zero-length opening is a configuration error."""
    with pytest.raises(ValueError):
        RefusalDetector(opening_chars=0)


def test_opening_normalises_quotes_and_leading_markup() -> None:
    """Curly apostrophes become ASCII and leading markup is dropped."""
    assert opening("> **I\u2019m unable**", 50) == "I'm unable**"


def test_finding_is_a_low_jailbreak_note() -> None:
    """A refusal becomes a low-severity jailbreak flag for the rate baseline; compliance gives none."""
    detector = RefusalDetector([load_pack(pack_path("refusal"))])
    finding = detector.finding("I cannot help with that.", where="choices[0].message.content")
    assert finding is not None
    assert finding.threat is Threat.JAILBREAK
    assert finding.rule == "refusal-cannot-help"
    assert finding.severity is Severity.LOW
    assert finding.action is Action.FLAG
    assert finding.where == "choices[0].message.content"
    assert detector.finding("Sure, here it is.") is None
