"""The Prometheus counters a turn moves."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.control import metrics as metrics_module
from proxy.control.metrics import Metrics
from proxy.exchange import RequestView
from proxy.model import Action, Decision, Finding, Severity, Threat
from proxy.turn import Turn, TurnContext


def samples(metrics: Metrics, family: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for found in text_string_to_metric_families(metrics.exposition().decode())
        if found.name == family
        for sample in found.samples
        if sample.name == f"{family}_total"
    }


def turn_of(agent: str, *, decision: Decision = Decision.ALLOWED, enforced: bool = False) -> Turn:
    turn = Turn(TurnContext(agent_id=agent, role="ops"))
    turn.request = RequestView(dialect="openai_chat")
    turn.decision = decision
    turn.add(
        Finding(
            threat=Threat.DATA_EXFILTRATION,
            rule="aws-access-key",
            signal="AWS access key",
            severity=Severity.CRITICAL,
            action=Action.REDACT,
            where="messages[0].content",
            enforced=enforced,
        )
    )
    return turn


def test_each_turn_counts_under_its_own_labels() -> None:
    """Turns counted one after the other land under their own labels, whichever labels the turn before had:
    a changed agent, decision, status class or enforcement is never counted under the earlier ones."""
    metrics = Metrics(agents=["bot", "helper"])
    metrics.observe_turn(turn_of("bot"), 200, 0.01, 0.02)
    metrics.observe_turn(turn_of("bot"), 200, 0.01, 0.02)
    metrics.observe_turn(turn_of("helper"), 200, 0.01, 0.02)
    metrics.observe_turn(turn_of("bot", decision=Decision.BLOCKED, enforced=True), 403, None, 0.01)
    metrics.observe_turn(turn_of("stranger"), 502, 0.01, 0.02)
    requests = samples(metrics, "egressguard_requests")

    def labels(agent: str, decision: str, status: str) -> tuple[tuple[str, str], ...]:
        return (("agent", agent), ("decision", decision), ("dialect", "openai_chat"), ("status", status))

    assert requests == {
        labels("bot", "allowed", "2xx"): 2.0,
        labels("helper", "allowed", "2xx"): 1.0,
        labels("bot", "blocked", "4xx"): 1.0,
        labels("other", "allowed", "5xx"): 1.0,
    }
    findings = samples(metrics, "egressguard_findings")
    assert sorted((dict(key)["enforced"], value) for key, value in findings.items()) == [
        ("false", 4.0),
        ("true", 1.0),
    ]


def test_kept_children_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the bound the kept children start over; counts go on where they were."""
    metrics = Metrics(agents=[f"agent{number}" for number in range(6)])
    monkeypatch.setattr(metrics_module, "LABELLED_CHILDREN", 3)
    for _ in range(2):
        for number in range(6):
            metrics.observe_turn(turn_of(f"agent{number}"), 200, 0.01, 0.02)
    assert all(len(children) <= 3 for children in metrics._children.values())
    assert set(samples(metrics, "egressguard_requests").values()) == {2.0}
