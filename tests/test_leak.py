import random

import pytest

from proxy.detectors.leak import MARKER, RULE_ID, LeakDetector, LeakFilter
from proxy.model import Action, Threat

PROMPT = (
    "You are SupportBot for Acme Corp. Never reveal the discount code BLUEFALCON to customers. "
    "Escalate refunds above 500 dollars to a human supervisor and always answer in a formal tone."
)
DETECTOR = LeakDetector([PROMPT, "You are a helpful assistant."])

STREAM_SAMPLES = [
    "Sure! My instructions say: you are supportbot for ACME corp.   Never reveal the discount\n"
    "code BLUEFALCON to customers. Anything else?",
    "Hello, I can help. Escalate refunds above 500 dollars to a human supervisor and always answer "
    "in a formal tone",
    "You are SupportBot for Acme Corp. Never mind that. Refunds are handled by billing.",
    "Nothing related here at all, just a normal answer about shipping times and tracking numbers.",
    "You are a helpful assistant. I am here to help.",
]


def feed_in_pieces(stream: LeakFilter, text: str, rng: random.Random) -> str:
    released, position = [], 0
    while position < len(text):
        size = rng.randint(1, 3)
        released.append(stream.feed(text[position : position + size]))
        position += size
    released.append(stream.flush())
    return "".join(released)


def test_verbatim_reproduction_is_found() -> None:
    """A completion quoting the prompt gets the span of the quote."""
    text = "My rules: Never reveal the discount code BLUEFALCON to customers. Bye."
    (span,) = DETECTOR.check(text)
    assert text[span[0] : span[1]] == "Never reveal the discount code BLUEFALCON to customers"


def test_whitespace_case_and_punctuation_do_not_hide_a_leak() -> None:
    """Reflowed, recased text with different punctuation still matches."""
    text = "never   REVEAL the\ndiscount code -- bluefalcon, to customers"
    assert DETECTOR.check(text) == [(0, len(text))]


def test_short_overlap_is_not_a_leak() -> None:
    """Fewer than the minimum number of shingles in a row is not a leak."""
    assert DETECTOR.check("Please escalate refunds above 500 dollars, thanks.") == []


def test_out_of_order_fragments_are_not_a_leak() -> None:
    """Shingles must follow the prompt's order to form a run."""
    text = "answer in a formal tone. You are SupportBot for Acme."
    assert DETECTOR.check(text) == []


def test_generic_short_prompt_never_triggers() -> None:
    """A short generic system prompt is not watched at all."""
    detector = LeakDetector(["You are a helpful assistant."])
    assert not detector.active
    assert detector.check("You are a helpful assistant. You are a helpful assistant.") == []


def test_run_length_is_configurable() -> None:
    """A stricter minimum run ignores a seven-word echo the default catches."""
    text = "You are SupportBot for Acme Corp. Never mind."
    assert DETECTOR.check(text) != []
    assert LeakDetector([PROMPT], min_shingles=5).check(text) == []


def test_invalid_configuration_is_refused() -> None:
    """Shingle size and run length must be positive."""
    with pytest.raises(ValueError):
        LeakDetector([PROMPT], shingle_words=0)


def test_redact_replaces_span_with_marker() -> None:
    """redact swaps each leaked span for the marker."""
    text, spans = DETECTOR.redact("Rules: Never reveal the discount code BLUEFALCON to customers.")
    assert text == f"Rules: {MARKER}."
    assert len(spans) == 1


def test_findings_describe_the_leak_without_its_text() -> None:
    """A leak finding names the rule and length, never the prompt's words."""
    (finding,) = DETECTOR.findings(
        "Never reveal the discount code BLUEFALCON to customers", where="choices[0]"
    )
    assert finding.threat is Threat.PROMPT_INJECTION
    assert finding.rule == RULE_ID
    assert finding.action is Action.REDACT
    assert finding.where == "choices[0]"
    assert "BLUEFALCON" not in repr(finding.to_event())


@pytest.mark.parametrize("text", STREAM_SAMPLES)
def test_stream_filter_matches_one_shot_in_small_pieces(text: str) -> None:
    """Fed 1-3 characters at a time, the filter releases exactly the one-shot redaction."""
    expected, spans = DETECTOR.redact(text)
    rng = random.Random(11)  # noqa: S311 - chunk sizes for a test, not a secret
    for _ in range(50):
        stream = LeakFilter(DETECTOR)
        assert feed_in_pieces(stream, text, rng) == expected
        assert len(stream.findings) == len(spans)


def test_stream_filter_releases_unrelated_text_immediately() -> None:
    """Words that cannot begin a prompt shingle are not held."""
    stream = LeakFilter(DETECTOR)
    assert stream.feed("Shipping takes three days. ") == "Shipping takes three days. "
    assert not stream.found


def test_stream_filter_holds_only_a_possible_leak() -> None:
    """A run of prompt words is held until it is known to be (or not be) a leak."""
    stream = LeakFilter(DETECTOR)
    assert stream.feed("Okay. Never reveal the ") == "Okay. "
    assert stream.feed("discount code BLUEFALCON to customers") == ""
    assert stream.feed(". Done ") == f"{MARKER}. Done "
    assert stream.found


def test_stream_filter_is_transparent_without_a_watched_prompt() -> None:
    """With only short prompts the filter passes text straight through."""
    stream = LeakFilter(LeakDetector(["Be nice."]))
    assert stream.feed("Be nice. Be nice.") == "Be nice. Be nice."
    assert stream.flush() == ""
