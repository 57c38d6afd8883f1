"""The alert router: takes audit records off the request path, evaluates rules, delivers alerts.

``submit`` only puts the record on a bounded queue. One worker thread evaluates rules (and runs
scheduled queries); another delivers, with its own httpx client. Every alert is written to a spool
file under the data directory before the first attempt and removed once delivered, so alerts for a
destination that is down survive restarts; failed attempts are retried with exponential backoff and
jitter.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import queue
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import structlog

from proxy.alerts.destinations import DeliveryError, deliver
from proxy.alerts.engine import Alert, RuleEngine, alert_heading
from proxy.alerts.rules import BUILTIN_ACTIONS, AlertRule, AlertsConfig, DestinationConfig
from proxy.audit.query import QueryError, files_since, open_audit, plain, run_sql
from proxy.model import Severity
from proxy.state import StateStore

SPOOL_DIRECTORY = "alert-spool"
MAX_OUTCOMES = 1000
ActionHandler = Callable[[str, Alert], None]

log = structlog.get_logger("egressguard.alerts")


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(order=True, slots=True)
class _Pending:
    due: float
    sequence: int
    target: str = field(compare=False)
    alert: dict[str, Any] = field(compare=False)
    path: Path | None = field(compare=False)
    attempts: int = field(default=0, compare=False)


class AlertRouter:
    """Route audit records to alerts; rule windows and fired marks live in ``store`` when given (shared by
    workers and replicas, so a burst over all of them alerts once). ``action_handler(action, alert)``
    applies ``freeze_user``, ``revoke_session`` and ``block_agent``; it runs on the router's thread and
    must not block long."""

    def __init__(
        self,
        config: AlertsConfig,
        *,
        data_dir: Path,
        audit_dir: Path | None = None,
        action_handler: ActionHandler | None = None,
        store: StateStore | None = None,
        clock: Callable[[], datetime] = _utc_now,
        retry_base_seconds: float = 1.0,
        retry_max_seconds: float = 300.0,
        http_timeout_seconds: float = 5.0,
        queue_size: int = 10_000,
        tick_seconds: float = 1.0,
        batch_pause_seconds: float = 0.05,
    ) -> None:
        self.config = config
        self.spool_dir = data_dir / SPOOL_DIRECTORY
        self.audit_dir = audit_dir
        self.action_handler = action_handler
        self.clock = clock
        self.retry_base_seconds = retry_base_seconds
        self.retry_max_seconds = retry_max_seconds
        self.tick_seconds = tick_seconds
        self.batch_pause_seconds = batch_pause_seconds
        self.dropped = 0
        self.delivered = 0
        self.retried = 0
        self.outcomes: OrderedDict[tuple[str, str], str] = OrderedDict()
        """The latest outcome per (alert id, destination): ``delivered``, ``retrying: why`` or
        ``rejected: why``; the most recent 1,000, for drills that check their alerts went out."""
        self._targets: dict[str, DestinationConfig] = {
            **config.destinations,
            **{f"action.{name}": action for name, action in config.actions.items()},
        }
        self._engine = RuleEngine(config.rules, started=clock(), store=store)
        # A SimpleQueue (in C): handing a record over is a fraction of a Queue's cost on the event loop.
        self._records: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._queue_size = queue_size
        self._pending: list[_Pending] = []
        self._sequence = itertools.count()
        self._wakeup = threading.Condition()
        self._closing = False
        self._client = httpx.Client(timeout=http_timeout_seconds, trust_env=False)
        self._load_spool()
        self._evaluator = threading.Thread(target=self._evaluate_loop, name="egressguard-alerts", daemon=True)
        self._deliverer = threading.Thread(
            target=self._deliver_loop, name="egressguard-delivery", daemon=True
        )
        self._evaluator.start()
        self._deliverer.start()

    @property
    def pending(self) -> int:
        """Alerts waiting for a (re)delivery attempt."""
        with self._wakeup:
            return len(self._pending)

    def submit(self, record: dict[str, Any]) -> None:
        """Hand an audit record to the router without waiting; a full queue drops it (counted)."""
        if self._records.qsize() < self._queue_size:
            self._records.put_nowait(record)
            return
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.error("alerts.queue_full", dropped=self.dropped)

    def raise_alert(
        self,
        rule: str,
        description: str,
        severity: Severity,
        *,
        agent_ids: list[str] | None = None,
        event_ids: list[str] | None = None,
    ) -> str:
        """Send an alert that no rule produced (egressguard's own trouble, such as an unwritable audit
        log, or an approval request) to every destination, through the same spool and retries; return
        its alert id."""
        now = self.clock()
        alert = Alert(
            **alert_heading(rule, description, severity, now),
            dedup_key=rule,
            group={},
            count=1,
            window_seconds=0,
            agent_ids=agent_ids or [],
            user_ids=[],
            session_ids=[],
            event_ids=event_ids or [],
            threats=[],
            finding_rules=[],
        )
        log.info("alerts.raised", rule=rule, alert_id=alert.alert_id)
        for name in self.config.destinations:
            self._enqueue(name, alert.to_dict())
        return alert.alert_id

    def test_alert(self, rule_id: str) -> tuple[str, list[str]]:
        """Send one alert of this rule, marked as a test, to the rule's destinations; its id and the
        destinations. Raises KeyError for an unknown rule."""
        rule = self._rule(rule_id)
        alert = Alert(
            **alert_heading(rule.id, f"[TEST] {rule.description}", rule.severity, self.clock()),
            dedup_key=f"test:{rule.id}",
            group={},
            count=0,
            window_seconds=0,
            agent_ids=[],
            user_ids=[],
            session_ids=[],
            event_ids=[],
            threats=[],
            finding_rules=[],
        )
        for name in rule.destinations:
            self._enqueue(name, alert.to_dict())
        log.info("alerts.test_sent", rule=rule.id, alert_id=alert.alert_id)
        return alert.alert_id, list(rule.destinations)

    def run_now(self, rule_id: str) -> Alert | None:
        """Evaluate a query rule now, off its schedule (blocking: its query reads the audit log); the
        alert it raised, if its query's result called for one. Raises KeyError for an unknown rule and
        ValueError for one without a query."""
        rule = self._rule(rule_id)
        if rule.query is None:
            raise ValueError(f"rule {rule_id} is not a query rule")
        return self._run_scheduled(rule)

    def _rule(self, rule_id: str) -> AlertRule:
        for rule in self.config.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(f"no alert rule {rule_id!r}")

    def close(self, timeout_seconds: float = 5.0) -> None:
        """Finish evaluating what was submitted, make one more delivery pass, and stop.

        Alerts still undelivered stay in the spool and go out on the next start.
        """
        deadline = time.monotonic() + timeout_seconds
        self._records.put(None)
        self._evaluator.join(max(0.0, deadline - time.monotonic()))
        with self._wakeup:
            self._closing = True
            self._wakeup.notify_all()
        self._deliverer.join(max(0.0, deadline - time.monotonic()))
        self._client.close()

    # -- evaluation ------------------------------------------------------------------------------------

    def _evaluate_loop(self) -> None:
        self._seed_first_seen()
        while True:
            try:
                batch = [self._records.get(timeout=self.tick_seconds)]
            except queue.Empty:
                batch = [{}]
            else:
                # Records are taken in batches: while this thread pauses, a busy proxy's records gather
                # without waking it, so the event loop is not made to hand over the GIL for each one.
                time.sleep(self.batch_pause_seconds)
                batch.extend(_drain(self._records))
            for record in batch:
                if record is None:
                    return
                self._evaluate(record)

    def _evaluate(self, record: dict[str, Any]) -> None:
        try:
            for rule, alert in self._engine.evaluate(record):
                self._dispatch(rule, alert)
            for rule in self._engine.due(self.clock()):
                self._run_scheduled(rule)
        except Exception:
            # One malformed record or rule error must not stop alerting for everything after it.
            log.exception("alerts.evaluation_failed", event_id=record.get("event_id"))

    def _seed_first_seen(self) -> None:
        rules = [rule for rule in self.config.rules if rule.first_seen is not None]
        if not rules or self.audit_dir is None:
            return
        try:
            connection = open_audit([self.audit_dir])
            for rule in rules:
                assert rule.first_seen is not None
                columns = ", ".join(rule.first_seen)
                result = run_sql(connection, f"SELECT DISTINCT {columns} FROM turns")  # noqa: S608 - validated names
                self._engine.seed_seen(rule.id, result.rows, self.clock())
        except QueryError as exc:
            log.error("alerts.first_seen_seed_failed", error=str(exc))

    def _run_scheduled(self, rule: AlertRule) -> Alert | None:
        if self.audit_dir is None or rule.query is None:
            log.warning("alerts.scheduled_rule_without_audit", rule=rule.id)
            return None
        now = self.clock()
        parameters = {"now": now} if "$now" in rule.query else None
        sources = files_since(self.audit_dir, now - rule.reads) if rule.reads else [self.audit_dir]
        try:
            result = run_sql(open_audit(sources), rule.query, parameters)
        except QueryError as exc:
            log.error("alerts.scheduled_query_failed", rule=rule.id, error=str(exc))
            return None
        rows = [{key: plain(value) for key, value in row.items()} for row in result.as_dicts()]
        alert = self._engine.scheduled_alert(rule, rows, now)
        if alert is not None:
            self._dispatch(rule, alert)
        return alert

    def _dispatch(self, rule: AlertRule, alert: Alert) -> None:
        data = alert.to_dict()
        log.info("alerts.fired", rule=rule.id, alert_id=alert.alert_id, count=alert.count)
        for name in rule.destinations:
            self._enqueue(name, data)
        for action in rule.auto_actions:
            if action not in BUILTIN_ACTIONS:
                self._enqueue(f"action.{action}", data)
            elif self.action_handler is None:
                log.warning("alerts.no_action_handler", rule=rule.id, action=action)
            else:
                try:
                    self.action_handler(action, alert)
                except Exception:
                    log.exception("alerts.action_failed", rule=rule.id, action=action)

    # -- spool and delivery ----------------------------------------------------------------------------

    def _enqueue(self, target: str, alert: dict[str, Any]) -> None:
        path: Path | None = self.spool_dir / _safe(target) / f"{time.time_ns()}-{alert['alert_id']}.json"
        try:
            assert path is not None
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = path.with_suffix(".tmp")
            staging.write_text(json.dumps({"target": target, "alert": alert}, default=str), encoding="utf-8")
            os.replace(staging, path)
        except OSError as exc:
            log.error("alerts.spool_unwritable", error=str(exc))
            path = None
        self._schedule(_Pending(time.monotonic(), next(self._sequence), target, alert, path))

    def _schedule(self, item: _Pending) -> None:
        with self._wakeup:
            heapq.heappush(self._pending, item)
            self._wakeup.notify_all()

    def _load_spool(self) -> None:
        if not self.spool_dir.is_dir():
            return
        for path in sorted(self.spool_dir.glob("*/*.json"), key=lambda found: found.name):
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
                target, alert = str(stored["target"]), dict(stored["alert"])
            except (OSError, ValueError, KeyError, TypeError):
                log.error("alerts.spool_unreadable", file=str(path))
                continue
            self._pending.append(_Pending(time.monotonic(), next(self._sequence), target, alert, path))
        heapq.heapify(self._pending)
        if self._pending:
            log.info("alerts.spool_loaded", alerts=len(self._pending))

    def _deliver_loop(self) -> None:
        while True:
            with self._wakeup:
                while not self._pending or self._pending[0].due > time.monotonic():
                    if self._closing:
                        return
                    wait = self._pending[0].due - time.monotonic() if self._pending else None
                    self._wakeup.wait(wait)
                item = heapq.heappop(self._pending)
            self._attempt(item)

    def _attempt(self, item: _Pending) -> None:
        destination = self._targets.get(item.target)
        if destination is None:
            log.error(
                "alerts.unknown_destination", destination=item.target, alert_id=item.alert.get("alert_id")
            )
            return
        try:
            deliver(destination, item.alert, self._client)
        except DeliveryError as exc:
            item.attempts += 1
            if not exc.retry:
                log.error("alerts.delivery_rejected", destination=item.target, error=str(exc))
                self._note(item, f"rejected: {exc}")
                self._set_aside(item)
                return
            self.retried += 1
            self._note(item, f"retrying: {exc}")
            delay = min(self.retry_max_seconds, self.retry_base_seconds * 2 ** (item.attempts - 1))
            delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter spreads retries, it guards nothing
            log.warning(
                "alerts.delivery_failed", destination=item.target, attempts=item.attempts, retry_in=delay
            )
            item.due = time.monotonic() + delay
            self._schedule(item)
            return
        self.delivered += 1
        self._note(item, "delivered")
        if item.path is not None:
            item.path.unlink(missing_ok=True)

    def _note(self, item: _Pending, outcome: str) -> None:
        self.outcomes[(str(item.alert.get("alert_id")), item.target)] = outcome
        while len(self.outcomes) > MAX_OUTCOMES:
            self.outcomes.popitem(last=False)

    def _set_aside(self, item: _Pending) -> None:
        """Keep an alert the destination refused (4xx) for a person to look at, out of the retry loop."""
        if item.path is None:
            return
        rejected = item.path.parent / "rejected"
        rejected.mkdir(exist_ok=True)
        os.replace(item.path, rejected / item.path.name)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _drain[T](waiting: queue.SimpleQueue[T]) -> list[T]:
    """Everything on the queue now, without waiting."""
    taken: list[T] = []
    while True:
        try:
            taken.append(waiting.get_nowait())
        except queue.Empty:
            return taken
