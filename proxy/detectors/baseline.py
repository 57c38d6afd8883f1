"""Rates against a baseline: the maths behind "refusals dropped" and "this tool is called 5x as often".

Pure functions over counts. The state store keeps the windows; this module only decides whether the
recent window differs from the baseline enough, and on enough data, to be worth a finding.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.model import Action, Finding, Severity, Threat

REFUSAL_RATE_DROP_RULE = "refusal-rate-drop"
TOOL_RATE_SPIKE_RULE = "tool-call-rate-spike"


@dataclass(frozen=True, slots=True)
class Window:
    """``events`` seen over ``exposure`` opportunities (turns for a refusal rate, seconds for a call rate)."""

    events: int
    exposure: float

    def __post_init__(self) -> None:
        if self.events < 0 or self.exposure < 0:
            raise ValueError("a window's counts cannot be negative")

    @property
    def rate(self) -> float | None:
        return self.events / self.exposure if self.exposure else None


@dataclass(frozen=True, slots=True)
class DropThresholds:
    """When a fall in the refusal rate is worth an alert.

    A model that stops refusing is the signature of a jailbreak that worked; a handful of turns is too
    few to tell that from chance, hence the minimum sizes.
    """

    max_relative_drop: float = 0.30
    min_recent_turns: int = 20
    min_baseline_turns: int = 50
    min_baseline_refusals: int = 5


@dataclass(frozen=True, slots=True)
class SpikeThresholds:
    """When a rate far above its baseline is worth an alert."""

    min_ratio: float = 5.0
    min_recent_events: int = 10
    min_baseline_exposure: float = 1.0


def relative_drop(recent: Window, baseline: Window) -> float | None:
    """How far the recent rate fell below the baseline rate, as a fraction of the baseline rate
    (0.5 = halved; negative when it rose). None when either rate is undefined or the baseline is 0."""
    recent_rate, baseline_rate = recent.rate, baseline.rate
    if recent_rate is None or not baseline_rate:
        return None
    return (baseline_rate - recent_rate) / baseline_rate


def refusal_rate_drop(
    recent: Window,
    baseline: Window,
    thresholds: DropThresholds = DropThresholds(),
    *,
    where: str = "agent",
) -> Finding | None:
    """A jailbreak finding when the refusal rate (refusals per turn) dropped by more than the threshold.

    ``where`` names the scope the counts belong to (``agent``, ``session:<id>``)."""
    if recent.exposure < thresholds.min_recent_turns or baseline.exposure < thresholds.min_baseline_turns:
        return None
    if baseline.events < thresholds.min_baseline_refusals:
        return None
    drop = relative_drop(recent, baseline)
    if drop is None or drop <= thresholds.max_relative_drop:
        return None
    return Finding(
        threat=Threat.JAILBREAK,
        rule=REFUSAL_RATE_DROP_RULE,
        signal=f"refusal rate fell {drop:.0%} below baseline",
        severity=Severity.HIGH,
        action=Action.FLAG,
        where=where,
        owasp="LLM01",
        extra={
            "recent_rate": round(recent.rate or 0.0, 4),
            "baseline_rate": round(baseline.rate or 0.0, 4),
            "relative_drop": round(drop, 4),
        },
    )


def rate_ratio(recent: Window, baseline: Window) -> float | None:
    """Recent rate over baseline rate. A baseline with no events counts as one event over its whole
    exposure (the rarest rate it could not tell from zero), so a never-seen burst gets a finite ratio."""
    recent_rate = recent.rate
    if recent_rate is None or not baseline.exposure:
        return None
    baseline_rate = max(baseline.events, 1) / baseline.exposure
    return recent_rate / baseline_rate


def exceeds_baseline(
    recent: Window,
    baseline: Window,
    thresholds: SpikeThresholds = SpikeThresholds(),
) -> float | None:
    """The ratio when the recent rate is at least ``min_ratio`` times the baseline, on enough data."""
    if recent.events < thresholds.min_recent_events or baseline.exposure < thresholds.min_baseline_exposure:
        return None
    ratio = rate_ratio(recent, baseline)
    if ratio is None or ratio < thresholds.min_ratio:
        return None
    return ratio


def tool_rate_spike(
    tool_name: str,
    recent: Window,
    baseline: Window,
    thresholds: SpikeThresholds = SpikeThresholds(),
) -> Finding | None:
    """A tool-abuse finding when one tool is called far more often than its baseline."""
    ratio = exceeds_baseline(recent, baseline, thresholds)
    if ratio is None:
        return None
    return Finding(
        threat=Threat.TOOL_ABUSE,
        rule=TOOL_RATE_SPIKE_RULE,
        signal=f"tool {tool_name} called {ratio:.1f}x its baseline rate",
        severity=Severity.MEDIUM,
        action=Action.FLAG,
        where=f"tool:{tool_name}",
        owasp="LLM08",
        extra={"tool": tool_name, "ratio": round(ratio, 2)},
    )
