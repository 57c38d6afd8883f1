import math

import pytest

from proxy.detectors.baseline import (
    REFUSAL_RATE_DROP_RULE,
    TOOL_RATE_SPIKE_RULE,
    DropThresholds,
    SpikeThresholds,
    Window,
    exceeds_baseline,
    rate_ratio,
    refusal_rate_drop,
    relative_drop,
    tool_rate_spike,
)
from proxy.model import Action, Threat

BASELINE = Window(events=40, exposure=200)  # 20 % refusals


def test_window_rejects_negative_counts() -> None:
    """Counts cannot be negative."""
    with pytest.raises(ValueError):
        Window(events=-1, exposure=10)


def test_window_rate_is_none_without_exposure() -> None:
    """An empty window has no rate rather than a division error."""
    assert Window(0, 0).rate is None


def test_relative_drop_halved() -> None:
    """A rate that halves has dropped by 0.5."""
    assert relative_drop(Window(10, 100), BASELINE) == pytest.approx(0.5)


def test_relative_drop_undefined_for_zero_baseline() -> None:
    """A baseline with no refusals cannot drop."""
    assert relative_drop(Window(0, 100), Window(0, 100)) is None


def test_refusal_rate_drop_over_threshold_is_a_finding() -> None:
    """Refusals falling from 20 % to 10 % is a jailbreak flag carrying both rates."""
    finding = refusal_rate_drop(Window(5, 50), BASELINE, where="session:s1")
    assert finding is not None
    assert finding.threat is Threat.JAILBREAK
    assert finding.rule == REFUSAL_RATE_DROP_RULE
    assert finding.action is Action.FLAG
    assert finding.where == "session:s1"
    assert finding.extra == {"recent_rate": 0.1, "baseline_rate": 0.2, "relative_drop": 0.5}


def test_refusal_rate_drop_within_threshold_is_quiet() -> None:
    """A drop of exactly 30 % is not more than 30 %."""
    assert refusal_rate_drop(Window(14, 100), BASELINE) is None


def test_refusal_rate_rise_is_quiet() -> None:
    """More refusals than usual is not a jailbreak signal."""
    assert refusal_rate_drop(Window(30, 50), BASELINE) is None


def test_refusal_rate_drop_needs_enough_recent_turns() -> None:
    """Too few recent turns say nothing, however low their rate."""
    assert refusal_rate_drop(Window(0, 19), BASELINE) is None
    assert refusal_rate_drop(Window(0, 20), BASELINE) is not None


def test_refusal_rate_drop_needs_enough_baseline() -> None:
    """A short baseline, or one with too few refusals, is not compared against."""
    assert refusal_rate_drop(Window(0, 100), Window(20, 49)) is None
    assert refusal_rate_drop(Window(0, 100), Window(4, 400)) is None


def test_refusal_rate_drop_thresholds_are_configurable() -> None:
    """A stricter threshold alerts on a smaller drop and smaller samples."""
    strict = DropThresholds(max_relative_drop=0.1, min_recent_turns=5, min_baseline_turns=10)
    assert refusal_rate_drop(Window(1, 6), BASELINE, strict) is not None


def test_rate_ratio() -> None:
    """Ten calls a minute against two a minute is a ratio of five."""
    assert rate_ratio(Window(10, 60), Window(120, 3600)) == pytest.approx(5.0)


def test_rate_ratio_treats_an_empty_baseline_as_one_event() -> None:
    """A tool never seen in the baseline gets a finite ratio."""
    ratio = rate_ratio(Window(10, 60), Window(0, 3600))
    assert ratio is not None
    assert math.isfinite(ratio)
    assert ratio == pytest.approx(600.0)


def test_exceeds_baseline_at_five_times() -> None:
    """Five times the baseline rate is a spike; just under is not."""
    assert exceeds_baseline(Window(10, 60), Window(120, 3600)) == pytest.approx(5.0)
    assert exceeds_baseline(Window(10, 60), Window(121, 3600)) is None


def test_exceeds_baseline_needs_minimum_samples() -> None:
    """A burst of fewer than the minimum number of events is not judged."""
    assert exceeds_baseline(Window(9, 1), Window(1, 3600)) is None
    assert exceeds_baseline(Window(9, 1), Window(1, 3600), SpikeThresholds(min_recent_events=5)) is not None


def test_tool_rate_spike_finding() -> None:
    """A spike is a tool-abuse flag naming the tool and the ratio."""
    finding = tool_rate_spike("send_email", Window(50, 60), Window(10, 3600))
    assert finding is not None
    assert finding.threat is Threat.TOOL_ABUSE
    assert finding.rule == TOOL_RATE_SPIKE_RULE
    assert finding.extra["tool"] == "send_email"
    assert finding.extra["ratio"] == pytest.approx(300.0)


def test_tool_rate_without_spike_is_quiet() -> None:
    """A tool at its usual rate gives no finding."""
    assert tool_rate_spike("search", Window(10, 60), Window(600, 3600)) is None
