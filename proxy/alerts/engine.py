"""Rule evaluation over audit records: deterministic (time comes from each record's ``ts``).

Threshold windows, first-seen sets and the "already fired" marks live in the state store, so workers and
replicas sharing a store count one burst together and the alert for it fires once: whichever process sees
the record that crosses the threshold claims the alert (``add_if_new`` on its dedup key), and the others
find it claimed. The alert's details (event ids, users) are those this process saw; its count is everyone's.
Ratio-to-baseline rules count in the store too: the current window is the shared window above, the
baseline is hourly counters (coarse: the baseline is the whole hours before the window's first hour), and
the moment observation began is shared, so a spike spread over workers fires once.

An alert is built only from the audit record's identifiers and counts; audit records hold no raw text
and no detected value, so neither can an alert.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict
from zoneinfo import ZoneInfo

from croniter import croniter

from proxy.alerts.rules import AlertRule
from proxy.model import Severity
from proxy.state import SqliteStateStore, StateStore, digest

MAX_EVENT_IDS = 20
MAX_ROWS = 50
EVALUATED_TYPES = frozenset({"agent.turn", "auth.refused"})
"""Records real-time rules look at: agent turns, and refused proxy authentications."""
SCHEDULE_CLAIM_S = 7 * 24 * 3600.0
"""How long a scheduled rule's claim on a slot is kept: longer than any process's clock can lag."""
FIRST_SEEN_TTL_S = 90 * 24 * 3600.0
"""How long a first-seen combination stays seen: the audit log's default retention, which reseeds it."""
HOUR_S = 3600
MAX_GROUPS = 10_000
"""Groups whose recent hits this process keeps (a rule grouped by user or session id opens one per id an
agent sends); beyond it the least recently hit are forgotten, and count from the shared window alone."""


@dataclass(frozen=True, slots=True)
class Alert:
    alert_id: str
    rule: str
    description: str
    severity: str
    ts: str
    dedup_key: str
    group: dict[str, Any]
    count: int
    window_seconds: int
    agent_ids: list[str]
    user_ids: list[str]
    session_ids: list[str]
    event_ids: list[str]
    threats: list[str]
    finding_rules: list[str]
    suppressed: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Hit:
    ts: datetime
    event_id: str
    agent_id: str | None
    user_id: str | None
    session_id: str | None
    threats: tuple[str, ...]
    rules: tuple[str, ...]
    weight: int = 1
    """How many events the record stands for (``attempts`` of an aggregated record)."""


@dataclass(slots=True)
class _GroupState:
    hits: deque[_Hit] = field(default_factory=deque)
    closed_hours: dict[int, int] = field(default_factory=dict)
    """Baseline hours already read from the store: an hour that has ended no longer changes."""
    suppressed: int = 0


def parse_ts(value: Any) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)


def format_ts(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class AlertHeading(TypedDict):
    """The fields every alert opens with, whatever raised it: ``Alert(**alert_heading(...), ...)``."""

    alert_id: str
    rule: str
    description: str
    severity: str
    ts: str


def alert_heading(rule: str, description: str, severity: Severity, now: datetime) -> AlertHeading:
    """A fresh alert id, the raising rule and the moment it was raised."""
    return AlertHeading(
        alert_id=uuid.uuid4().hex,
        rule=rule,
        description=description,
        severity=str(severity),
        ts=format_ts(now),
    )


def next_run(rule: AlertRule, after: datetime) -> datetime:
    """The rule's next cron slot after ``after``, its fields read in the rule's time zone (UTC unless
    ``tz`` says otherwise), so ``0 8 * * *`` with ``tz: Europe/Paris`` is 08:00 in Paris all year; for a
    query without a schedule, ``every`` after ``after``."""
    if rule.schedule is None:
        assert rule.every is not None
        return after + rule.every
    local: datetime = croniter(rule.schedule, after.astimezone(ZoneInfo(rule.tz))).get_next(datetime)
    return local.astimezone(UTC)


def query_value(rows: Sequence[Mapping[str, Any]]) -> int:
    """What a query rule's threshold is compared with: the number a query returns as its one cell
    (``SELECT COUNT(*) ...``), otherwise its number of rows (``SELECT 1 ...`` per match)."""
    if len(rows) == 1 and len(rows[0]) == 1:
        (value,) = rows[0].values()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
    return len(rows)


class RuleEngine:
    """Evaluates a set of rules: windows, first-seen sets and fired marks in ``store`` (shared by every
    process using it; this process's own memory when none is given), baselines and schedules here."""

    def __init__(
        self,
        rules: Sequence[AlertRule],
        *,
        started: datetime,
        store: StateStore | None = None,
        max_groups: int = MAX_GROUPS,
    ) -> None:
        self.max_groups = max_groups
        self.realtime = [rule for rule in rules if rule.query is None]
        self.scheduled = [rule for rule in rules if rule.query is not None]
        self._records = 0
        self._records_at_run: dict[str, int] = {}
        self.store: StateStore = store if store is not None else SqliteStateStore(None)
        self._groups: dict[tuple[str, tuple[Any, ...]], _GroupState] = {}
        self._observed_since: dict[str, tuple[float, float]] = {}
        """Per baseline rule: when observation began, and when this process last read and renewed that."""
        self._next_run = {rule.id: next_run(rule, started) for rule in self.scheduled}

    def seed_seen(self, rule_id: str, keys: Iterable[tuple[Any, ...]], now: datetime) -> None:
        """Mark combinations as already seen (from the audit log, so a restart does not re-alert)."""
        for key in keys:
            self._first_seen(rule_id, tuple(key), now)

    def _first_seen(self, rule_id: str, key: tuple[Any, ...], now: datetime) -> bool:
        member = digest(json.dumps(key, default=str))
        return self.store.add_if_new(f"alerts.seen:{rule_id}", member, FIRST_SEEN_TTL_S, now.timestamp())

    def evaluate(self, record: Mapping[str, Any]) -> list[tuple[AlertRule, Alert]]:
        """The alerts this record fires. A drill's record counts in no rule's window or baseline: a
        drill proves delivery with its own alert and must not move what real traffic is compared with."""
        if record.get("type") not in EVALUATED_TYPES or record.get("drill"):
            return []
        self._records += 1
        now = parse_ts(record["ts"])
        fired: list[tuple[AlertRule, Alert]] = []
        for rule in self.realtime:
            alert = self._evaluate_rule(rule, record, now)
            if alert is not None:
                fired.append((rule, alert))
        return fired

    def due(self, now: datetime) -> list[AlertRule]:
        """Query rules whose time has come; each is due once per slot, in one process. A query without a
        schedule is due only when records arrived since it last ran: over an unchanged log it would
        find what it found before."""
        due = []
        for rule in self.scheduled:
            slot = self._next_run[rule.id]
            if now >= slot:
                self._next_run[rule.id] = next_run(rule, now)
                if rule.schedule is None:
                    if self._records_at_run.get(rule.id) == self._records:
                        continue
                    self._records_at_run[rule.id] = self._records
                # Of all the processes sharing the store, the first to reach a slot runs it.
                claim = f"{rule.id}:{slot.isoformat()}"
                if self.store.add_if_new("alerts.scheduled", claim, SCHEDULE_CLAIM_S, now.timestamp()):
                    due.append(rule)
        return due

    def scheduled_alert(
        self, rule: AlertRule, rows: Sequence[Mapping[str, Any]], now: datetime
    ) -> Alert | None:
        """The alert a query rule's result raises: any row, or a value meeting its threshold. A query
        polled every few seconds finds the same rows again while they stay in its window, so it alerts
        once per ``dedup_window`` (across every process sharing the store)."""
        value = query_value(rows)
        if not rows or (rule.threshold is not None and not rule.threshold.met(value)):
            return None
        if rule.schedule is None and not self.store.add_if_new(
            "alerts.fired", rule.id, rule.dedup_window.total_seconds(), now.timestamp()
        ):
            return None
        agents = sorted({str(row["agent_id"]) for row in rows if row.get("agent_id")})
        users = sorted({str(row["user_id"]) for row in rows if row.get("user_id")})
        return Alert(
            **alert_heading(rule.id, rule.description, rule.severity, now),
            dedup_key=f"{rule.id}:{now.date().isoformat()}",
            group={},
            count=value,
            window_seconds=0,
            agent_ids=agents,
            user_ids=users,
            session_ids=sorted({str(row["session_id"]) for row in rows if row.get("session_id")}),
            event_ids=[],
            threats=[],
            finding_rules=[],
            rows=[dict(row) for row in rows[:MAX_ROWS]],
        )

    def _evaluate_rule(self, rule: AlertRule, record: Mapping[str, Any], now: datetime) -> Alert | None:
        findings: list[Mapping[str, Any]] = []
        if rule.match is not None:
            if not rule.match.turn_matches(record):
                return None
            findings = [item for item in record.get("findings") or [] if rule.match.finding_matches(item)]
            if not findings:
                return None
        group_fields = rule.first_seen or rule.group_by
        group_key = tuple(record.get(name) for name in group_fields)
        if rule.first_seen is not None and (
            any(value in (None, "") for value in group_key) or not self._first_seen(rule.id, group_key, now)
        ):
            return None
        group_id = f"{rule.id}:{digest(json.dumps(group_key, default=str))}"
        state = self._group((rule.id, group_key))
        hit = _Hit(
            ts=now,
            event_id=str(record.get("event_id", "")),
            agent_id=record.get("agent_id"),
            user_id=record.get("user_id"),
            session_id=record.get("session_id"),
            threats=tuple(sorted({str(item.get("threat")) for item in findings})),
            rules=tuple(sorted({str(item.get("rule")) for item in findings})),
            weight=max(1, int(record.get("attempts") or 1)),
        )
        state.hits.append(hit)
        while state.hits and state.hits[0].ts <= now - rule.window:
            state.hits.popleft()
        shared = self.store.hit(f"alerts.window:{group_id}", rule.window.total_seconds(), now.timestamp())
        # The shared window counts records; a record here may stand for several attempts (its weight),
        # so the other processes' records count once each and this process's with their weights.
        count = shared - len(state.hits) + sum(hit.weight for hit in state.hits)
        if rule.baseline is not None:
            if not self._spiking(rule, group_id, state, shared, now):
                return None
        elif rule.threshold is not None and not rule.threshold.met(count):
            return None
        claim_s = rule.dedup_window.total_seconds()
        if not self.store.add_if_new("alerts.fired", group_id, claim_s, now.timestamp()):
            state.suppressed += 1
            return None
        alert = self._build(rule, dict(zip(group_fields, group_key, strict=True)), state, now, count)
        state.suppressed = 0
        return alert

    def _group(self, key: tuple[str, tuple[Any, ...]]) -> _GroupState:
        """The group's state, as the most recently hit; the least recently hit beyond the cap forgotten."""
        state = self._groups.pop(key, None) or _GroupState()
        self._groups[key] = state
        if len(self._groups) > self.max_groups:
            del self._groups[next(iter(self._groups))]
        return state

    def groups(self) -> int:
        """How many groups this process keeps recent hits for."""
        return len(self._groups)

    def _spiking(
        self, rule: AlertRule, group_id: str, state: _GroupState, current: int, now: datetime
    ) -> bool:
        """``current`` (the shared window's count) at least ``min_events`` and above ``ratio`` times the
        average window of the baseline: the whole hours observed in the ``baseline_days`` before the
        window's first hour."""
        assert rule.baseline is not None
        baseline_s = rule.baseline.baseline_days * 24 * HOUR_S
        hour = int(now.timestamp() // HOUR_S)
        self.store.incr(
            f"alerts.hourly:{group_id}:{hour}", ttl_s=baseline_s + rule.window.total_seconds() + HOUR_S
        )
        window_start = now.timestamp() - rule.window.total_seconds()
        first_hour = -(-self._observed(rule, now) // HOUR_S)
        end_hour = int(window_start // HOUR_S)
        hours = range(max(int(first_hour), end_hour - baseline_s // HOUR_S), end_hour)
        periods = len(hours) * HOUR_S / rule.window.total_seconds()
        if periods < 1:
            return False
        for stale in [known for known in state.closed_hours if known < hours.start]:
            del state.closed_hours[stale]
        for missing in (known for known in hours if known not in state.closed_hours):
            state.closed_hours[missing] = self.store.counter(f"alerts.hourly:{group_id}:{missing}")
        average = sum(state.closed_hours[known] for known in hours) / periods
        return current >= rule.baseline.min_events and current > rule.baseline.ratio * average

    def _observed(self, rule: AlertRule, now: datetime) -> float:
        """When the processes sharing the store began observing for ``rule`` (a baseline needs that much
        history); the mark lasts one baseline period past the last process that saw a record."""
        assert rule.baseline is not None
        key = f"alerts.observed:{rule.id}"
        ttl_s = rule.baseline.baseline_days * 24 * HOUR_S
        since, renewed = self._observed_since.get(rule.id, (None, 0.0))
        if since is None or now.timestamp() - renewed >= HOUR_S:
            stored = self.store.get(key)
            since = float(stored) if isinstance(stored, (int, float)) else now.timestamp()
            self.store.put(key, since, ttl_s)
            self._observed_since[rule.id] = (since, now.timestamp())
        return since

    def _build(
        self, rule: AlertRule, group: dict[str, Any], state: _GroupState, now: datetime, count: int
    ) -> Alert:
        hits = list(state.hits)
        group_text = ",".join(f"{key}={value}" for key, value in group.items())
        return Alert(
            **alert_heading(rule.id, rule.description, rule.severity, now),
            dedup_key=f"{rule.id}:{group_text}" if group_text else rule.id,
            group=group,
            count=max(count, sum(hit.weight for hit in hits)),
            window_seconds=int(rule.window.total_seconds()),
            agent_ids=sorted({hit.agent_id for hit in hits if hit.agent_id}),
            user_ids=sorted({hit.user_id for hit in hits if hit.user_id}),
            session_ids=sorted({hit.session_id for hit in hits if hit.session_id}),
            event_ids=[hit.event_id for hit in hits[-MAX_EVENT_IDS:]],
            threats=sorted({threat for hit in hits for threat in hit.threats}),
            finding_rules=sorted({name for hit in hits for name in hit.rules}),
            suppressed=state.suppressed,
        )
