"""Prometheus metrics, with the official client and a registry of the proxy's own.

Labels are bounded sets: agent ids come from the policy (an unknown one is ``other``), dialects, decisions,
threats, severities and actions are enums, statuses are classes (``2xx``). Never a user id, a host, a path
or anything else an agent or an upstream chooses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from proxy.dialects import by_name
from proxy.turn import Turn

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OTHER = "other"

LABELLED_CHILDREN = 4096
"""Children of one labelled counter kept for the next turn with the same labels."""


class Sources:
    """Where the collected-on-scrape figures come from: callables, so the objects behind them (audit
    log, alert router) can be replaced by a reload without the metrics holding on to old ones."""

    def __init__(
        self,
        audit: Callable[[], tuple[int, int] | None] = lambda: None,
        alerts: Callable[[], tuple[int, int, int, int] | None] = lambda: None,
        state: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.audit = audit
        """(events dropped while the disk refused writes, events waiting in memory)."""
        self.alerts = alerts
        """(delivered, retried, dropped, waiting in the spool)."""
        self.state = state
        """Expiring state keys forgotten to keep their kind within its cap."""


class _Live(Collector):
    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        audit = self.sources.audit()
        if audit is not None:
            yield CounterMetricFamily(
                "egressguard_audit_gaps", "Audit events dropped while the log could not be written", audit[0]
            )
            yield GaugeMetricFamily(
                "egressguard_audit_buffered", "Audit events waiting in memory for the disk", audit[1]
            )
        alerts = self.sources.alerts()
        if alerts is not None:
            delivered, retried, dropped, spooled = alerts
            yield CounterMetricFamily("egressguard_alert_deliveries", "Alerts delivered", delivered)
            yield CounterMetricFamily(
                "egressguard_alert_retries", "Alert delivery attempts that failed", retried
            )
            yield CounterMetricFamily(
                "egressguard_alert_records_dropped", "Audit records the alert queue had no room for", dropped
            )
            yield GaugeMetricFamily("egressguard_alert_spool_depth", "Alerts waiting for delivery", spooled)
        forgotten = self.sources.state()
        if forgotten is not None:
            yield CounterMetricFamily(
                "egressguard_state_keys_forgotten",
                "State keys per session, user or tool forgotten to keep their kind within its cap",
                forgotten,
            )


class Metrics:
    def __init__(self, agents: Collection[str] = (), sources: Sources | None = None) -> None:
        self.registry = CollectorRegistry()
        self.agents = frozenset(agents)
        self.sources = sources or Sources()
        self.registry.register(_Live(self.sources))
        self._children: dict[Counter, dict[tuple[str, ...], Counter]] = {}
        self.requests = Counter(
            "egressguard_requests",
            "Agent turns, by agent, API dialect, decision and status class",
            ["agent", "dialect", "decision", "status"],
            registry=self.registry,
        )
        self.findings = Counter(
            "egressguard_findings",
            "Findings, by threat, severity and action",
            ["threat", "severity", "action", "enforced"],
            registry=self.registry,
        )
        self.upstream_seconds = Histogram(
            "egressguard_upstream_seconds",
            "Time from forwarding a request to the upstream's last byte (streams: the whole stream)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.overhead_seconds = Histogram(
            "egressguard_overhead_seconds",
            "Time egressguard itself added to a turn: the turn's duration less the upstream's",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.audit_writes = Counter(
            "egressguard_audit_writes", "Audit records written", registry=self.registry
        )
        self.audit_errors = Counter(
            "egressguard_audit_write_errors",
            "Audit records that could not be written",
            registry=self.registry,
        )
        self.stream_events = Counter(
            "egressguard_stream_events",
            "Server-sent events read from streamed responses",
            registry=self.registry,
        )
        self.inspected_bytes = Counter(
            "egressguard_inspected_bytes", "Body bytes read by the detectors", registry=self.registry
        )
        self.reloads = Counter(
            "egressguard_policy_reloads", "Policy reloads, by result", ["result"], registry=self.registry
        )
        self.approvals = Counter(
            "egressguard_approval_decisions",
            "Approvals granted or denied",
            ["decision"],
            registry=self.registry,
        )
        self.drill_success = Gauge(
            "egressguard_drill_last_success_timestamp_seconds",
            "When the last drill that passed every check finished (Unix time; 0: never since start)",
            registry=self.registry,
        )
        self.policy_loaded = Gauge(
            "egressguard_policy_loaded_timestamp_seconds",
            "When the policy in force was loaded",
            registry=self.registry,
        )
        self.policy_loaded.set(time.time())

    def _labelled(self, family: Counter, labels: tuple[str, ...]) -> Counter:
        """``family.labels(*labels)``, its child kept by the exact label values: looking one up through
        prometheus_client validates and locks each time. The labels are bounded sets, and so is this."""
        children = self._children.setdefault(family, {})
        child = children.get(labels)
        if child is None:
            if len(children) >= LABELLED_CHILDREN:
                children.clear()
            child = children[labels] = family.labels(*labels)
        return child

    def agent_label(self, agent: str) -> str:
        return agent if agent in self.agents else OTHER

    def observe_turn(self, turn: Turn, status: int | None, upstream_s: float | None, total_s: float) -> None:
        dialect = by_name(turn.request.dialect).name if turn.request is not None else "none"
        status_class = f"{status // 100}xx" if status is not None and 100 <= status < 600 else "none"
        self._labelled(
            self.requests,
            (self.agent_label(turn.context.agent_id), dialect, str(turn.decision), status_class),
        ).inc()
        for finding in turn.findings:
            labels = (
                str(finding.threat),
                str(finding.severity),
                str(finding.action),
                str(finding.enforced).lower(),
            )
            self._labelled(self.findings, labels).inc()
        if upstream_s is not None:
            self.upstream_seconds.observe(upstream_s)
        self.overhead_seconds.observe(max(0.0, total_s - (upstream_s or 0.0)))
        if turn.stream_events:
            self.stream_events.inc(turn.stream_events)
        if turn.inspected_bytes:
            self.inspected_bytes.inc(turn.inspected_bytes)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


_LATEST = ("_timestamp_seconds",)
_EARLIEST = ("_created",)


class _Merged(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def merge_expositions(texts: Iterable[str]) -> bytes:
    """One exposition for the processes of one host (the workers), from each one's own: a sample is the
    sum of its values in every process (counters, histogram buckets, sums and counts, and gauges such as
    buffered events and spool depth, which each process holds its own part of), but a time: a gauge named
    ``*_timestamp_seconds`` is the latest of them, a ``*_created`` the earliest."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                values[family.name] = {}
            combine = (
                max if family.name.endswith(_LATEST) else min if family.name.endswith(_EARLIEST) else None
            )
            samples = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                previous = samples.get(key)
                if previous is None:
                    samples[key] = sample.value
                else:
                    samples[key] = combine(previous, sample.value) if combine else previous + sample.value
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(list(families.values())))
    return generate_latest(registry)


def worker_restarts_exposition(restarts: Mapping[str, int]) -> str:
    """The supervisor's own figure, to merge with its workers' expositions: how often each worker was
    started again after it exited."""
    family = CounterMetricFamily(
        "egressguard_worker_restarts", "Workers started again after they exited", labels=["worker"]
    )
    for worker, count in restarts.items():
        family.add_metric([worker], count)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged([family]))
    return generate_latest(registry).decode("utf-8")
