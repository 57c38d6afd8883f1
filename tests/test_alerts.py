"""Alert rules, the rule engine, and the router delivering to real HTTP receivers on loopback."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from proxy.alerts import (
    Alert,
    AlertConfigError,
    AlertRouter,
    RuleEngine,
    load_alerts_config,
    load_alerts_file,
)
from proxy.alerts.destinations import SIGNATURE_HEADER, slack_payload
from proxy.audit.log import AuditLog
from proxy.config.policy import load_policy
from proxy.config.yamlschema import SchemaError
from proxy.state import SqliteStateStore, StateStore
from proxy.state.redis_store import RedisSettings, RedisStateStore
from tests.redis_server import RedisServer
from tests.webhook_receiver import Receiver

START = datetime(2026, 3, 10, 5, 0, tzinfo=UTC)


def finding(
    threat: str = "credential_theft", severity: str = "critical", rule: str = "secret.aws"
) -> dict[str, Any]:
    return {"threat": threat, "rule": rule, "signal": "pattern", "severity": severity, "action": "redact"}


def turn(number: int, *findings: dict[str, Any], at: datetime = START, **fields: Any) -> dict[str, Any]:
    return {
        "type": "agent.turn",
        "ts": at.isoformat().replace("+00:00", "Z"),
        "event_id": f"e{number}",
        "agent_id": "bot",
        "role": "support",
        "user_id": "u1",
        "session_id": "s1",
        "purpose": "support",
        "consent_id": "c1",
        "approval_id": None,
        "egress_host": "api.openai.com",
        "findings": list(findings),
        **fields,
    }


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


LEAK_RULE: dict[str, Any] = {
    "id": "leak",
    "description": "secret seen",
    "match": {"threat": ["credential_theft", "data_exfiltration"], "severity": "critical"},
    "threshold": ">=1",
    "window": "5m",
    "severity": "critical",
    "destinations": ["hook"],
}


def router_for(
    tmp_path: Path, destination: dict[str, Any], rules: list[dict[str, Any]] | None = None, **options: Any
) -> AlertRouter:
    config = load_alerts_config({"destinations": {"hook": destination}, "rules": rules or [LEAK_RULE]})
    options.setdefault("retry_base_seconds", 0.05)
    options.setdefault("tick_seconds", 0.05)
    return AlertRouter(config, data_dir=tmp_path / "data", **options)


# -- rules ----------------------------------------------------------------------------------------------


def test_shipped_rules_load() -> None:
    """The six shipped rules load against the default stdout destination."""
    config = load_alerts_config(None)
    assert [rule.id for rule in config.rules] == [
        "critical-secret-leak",
        "destructive-tool-without-approval",
        "injection-rate-spike",
        "first-seen-egress",
        "compliance-trace-gap",
        "proxy-auth-failures",
    ]


def test_rule_errors_name_file_and_line(tmp_path: Path) -> None:
    """Every mistake is reported with the file and the line of the offending key."""
    path = tmp_path / "alerts.yaml"
    path.write_text(
        "destinations:\n"
        "  ops: {type: stdout}\n"
        "rules:\n"
        "  - id: bad\n"
        "    match: {threat: prompt_injection}\n"
        "    threshold: 'about three'\n"
        "    destinations: [nowhere]\n"
        "  - id: cron\n"
        "    schedule: 'every day'\n"
        "    query: SELECT 1\n"
        "    destinations: [ops]\n"
        "    colour: red\n"
    )
    with pytest.raises(AlertConfigError) as raised:
        load_alerts_file(path)
    problems = raised.value.problems
    assert f"{path}:6: rule 'bad': threshold must look like '>=1' or '>3'" in problems
    assert any(
        problem.startswith(f"{path}:4: rule 'bad': sends to undefined destination") for problem in problems
    )
    assert any(
        problem.startswith(f"{path}:9: rule 'cron': schedule 'every day' is not a cron expression")
        for problem in problems
    )
    assert f"{path}:12: rule 'cron': unknown key 'colour'" in problems


def test_rules_inside_a_policy_name_their_lines(tmp_path: Path) -> None:
    """Rules written in the policy's own alerts section are reported at their lines too, never line 0."""
    path = tmp_path / "policy.yaml"
    path.write_text(
        "agents:\n"
        "  bot: {token: t, role: r}\n"
        "roles:\n"
        "  r: {egress: {allow: [api.openai.com]}}\n"
        "alerts:\n"
        "  destinations:\n"
        "    ops: {type: stdout}\n"
        "  rules:\n"
        "    - id: daily\n"
        "      query: SELECT 1 FROM turns\n"
        "      schedule: '0 9 *'\n"
        "      destinations: [ops]\n"
        "      colour: red\n"
    )
    with pytest.raises(SchemaError) as raised:
        load_policy(path)
    located = [(problem.line, problem.message) for problem in raised.value.problems]
    assert any(line == 11 and "schedule '0 9 *' is not a cron expression" in text for line, text in located)
    assert (13, "rule 'daily': unknown key 'colour'") in located


def test_missing_secret_env_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A webhook whose HMAC secret variable is unset fails at load, not at first alert."""
    monkeypatch.delenv("EG_TEST_SECRET", raising=False)
    with pytest.raises(AlertConfigError, match="EG_TEST_SECRET is not set"):
        load_alerts_config(
            {
                "destinations": {
                    "hook": {"type": "webhook", "url": "http://x", "secret_env": "EG_TEST_SECRET"}
                },
                "rules": [LEAK_RULE],
            }
        )


# -- engine ---------------------------------------------------------------------------------------------


def engine_for(rule: dict[str, Any], store: StateStore | None = None) -> RuleEngine:
    config = load_alerts_config({"destinations": {"hook": {"type": "stdout"}}, "rules": [rule]})
    return RuleEngine(config.rules, started=START, store=store)


@pytest.fixture(params=["sqlite", "redis"])
def shared_store(request: pytest.FixtureRequest) -> Iterator[StateStore]:
    """One store two engines share, as workers share SQLite and replicas share Redis."""
    store: StateStore
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        store = RedisStateStore(RedisSettings(url=server.url))
    else:
        store = SqliteStateStore(None)
    yield store
    store.close()


def test_a_burst_spread_over_two_engines_fires_once(shared_store: StateStore) -> None:
    """Two processes sharing a store count one window: the hit that crosses the threshold fires, once."""
    first, second = (engine_for({**LEAK_RULE, "threshold": ">=4"}, shared_store) for _ in range(2))
    results = [
        fired(engine, turn(n, finding(), at=START + timedelta(seconds=n)))
        for n, engine in enumerate([first, second, first, second, first, second])
    ]
    assert [len(alerts) for alerts in results] == [0, 0, 0, 1, 0, 0]
    assert results[3][0].count == 4


def test_a_scheduled_slot_runs_in_one_engine(shared_store: StateStore) -> None:
    """Processes sharing a store run each cron slot of a scheduled rule once between them."""
    rules = [rule for rule in load_alerts_config(None).rules if rule.schedule is not None]
    first, second = (RuleEngine(rules, started=START, store=shared_store) for _ in range(2))
    slot = START + timedelta(days=1, minutes=1)
    assert first.due(slot) == rules and second.due(slot) == []
    next_slot = slot + timedelta(days=1)
    assert second.due(next_slot) == rules and first.due(next_slot) == []


def test_first_seen_is_shared_between_engines(shared_store: StateStore) -> None:
    """A combination seen through one process is not new to another."""
    rules = [rule for rule in load_alerts_config(None).rules if rule.id == "first-seen-egress"]
    first, second = (RuleEngine(rules, started=START, store=shared_store) for _ in range(2))
    assert len(fired(first, turn(1, egress_host="new.example"))) == 1
    assert fired(second, turn(2, egress_host="new.example")) == []


def test_a_spike_over_baseline_spread_over_two_engines_fires_once(shared_store: StateStore) -> None:
    """Baseline and spike counts are shared: a steady rate seen half by each process never fires, and a
    burst of 8 split 4 and 4 (under min_events 5 for either alone) fires once between them."""
    rules = [rule for rule in load_alerts_config(None).rules if rule.id == "injection-rate-spike"]
    engines = [RuleEngine(rules, started=START, store=shared_store) for _ in range(2)]
    injection = finding("prompt_injection", "high", "injection.phrase")
    moment = START
    for number in range(48 * 2):
        assert fired(engines[number % 2], turn(number, injection, at=moment)) == []
        moment += timedelta(minutes=30)
    burst = [
        fired(engines[n % 2], turn(1000 + n, injection, at=moment + timedelta(minutes=n))) for n in range(8)
    ]
    assert sum(len(alerts) for alerts in burst) == 1
    late_process = RuleEngine(rules, started=START, store=shared_store)
    assert fired(late_process, turn(2000, injection, at=moment + timedelta(minutes=9))) == []


def test_a_steady_rate_after_a_quiet_start_does_not_fire() -> None:
    """Hours observed with no event count in the baseline; hours before observation began do not, so a
    process that just started never compares a first burst against nothing."""
    rules = [rule for rule in load_alerts_config(None).rules if rule.id == "injection-rate-spike"]
    engine = RuleEngine(rules, started=START, store=SqliteStateStore(None))
    injection = finding("prompt_injection", "high", "injection.phrase")
    quiet_start = [fired(engine, turn(n, injection, at=START + timedelta(minutes=n))) for n in range(10)]
    assert quiet_start == [[]] * 10


def fired(engine: RuleEngine, record: dict[str, Any]) -> list[Alert]:
    return [alert for _, alert in engine.evaluate(record)]


def test_threshold_counts_within_the_window() -> None:
    """'>3' in 5m fires on the fourth hit in the window, not when hits are spread wider."""
    engine = engine_for({**LEAK_RULE, "threshold": ">3"})
    spread = [fired(engine, turn(n, finding(), at=START + timedelta(minutes=3 * n))) for n in range(4)]
    assert spread == [[], [], [], []]
    close = [fired(engine, turn(n, finding(), at=START + timedelta(hours=1, seconds=n))) for n in range(4)]
    assert [len(alerts) for alerts in close] == [0, 0, 0, 1]
    assert close[3][0].count == 4 and close[3][0].event_ids == ["e0", "e1", "e2", "e3"]


def test_severity_is_a_minimum() -> None:
    """A high finding does not trigger a rule that asks for critical."""
    engine = engine_for(LEAK_RULE)
    assert fired(engine, turn(1, finding(severity="high"))) == []
    assert len(fired(engine, turn(2, finding(severity="critical")))) == 1


def test_duplicates_are_grouped_within_the_dedup_window() -> None:
    """Repeats within the dedup window are suppressed and counted in the next alert."""
    engine = engine_for({**LEAK_RULE, "dedup_window": "10m"})
    assert len(fired(engine, turn(1, finding()))) == 1
    assert fired(engine, turn(2, finding(), at=START + timedelta(minutes=1))) == []
    assert fired(engine, turn(3, finding(), at=START + timedelta(minutes=2))) == []
    later = fired(engine, turn(4, finding(), at=START + timedelta(minutes=11)))
    assert len(later) == 1 and later[0].suppressed == 2


def test_destructive_tool_rule_skips_approved_turns() -> None:
    """approved: false matches only turns without an approval id."""
    config = load_alerts_config(None)
    engine = RuleEngine(
        [rule for rule in config.rules if rule.id == "destructive-tool-without-approval"], started=START
    )
    tool = finding("tool_abuse", "high", "tool.destructive")
    assert fired(engine, turn(1, tool, approval_id="ap-7")) == []
    alerts = fired(engine, turn(2, tool))
    assert [(alert.rule, alert.user_ids) for alert in alerts] == [
        ("destructive-tool-without-approval", ["u1"])
    ]


def test_injection_spike_over_baseline() -> None:
    """A steady hourly rate never fires; a burst above 3x that rate does."""
    config = load_alerts_config(None)
    engine = RuleEngine([rule for rule in config.rules if rule.id == "injection-rate-spike"], started=START)
    injection = finding("prompt_injection", "high", "injection.phrase")
    moment = START
    for number in range(48 * 2):
        assert fired(engine, turn(number, injection, at=moment)) == []
        moment += timedelta(minutes=30)
    burst = [fired(engine, turn(1000 + n, injection, at=moment + timedelta(minutes=n))) for n in range(8)]
    assert [len(alerts) for alerts in burst].count(1) == 1
    assert burst[-1] == [] and sum(len(alerts) for alerts in burst) == 1


def test_drill_turns_count_in_no_baseline_or_window() -> None:
    """A drill's burst fires no ratio_to_baseline rule and moves nothing a real burst is compared with:
    after it, the real burst fires exactly as it does where no drill ran."""
    config = load_alerts_config(None)
    rules = [rule for rule in config.rules if rule.id == "injection-rate-spike"]
    assert rules and rules[0].baseline is not None
    injection = finding("prompt_injection", "high", "injection.phrase")
    drilled, undrilled = RuleEngine(rules, started=START), RuleEngine(rules, started=START)
    moment = START
    for number in range(48 * 2):
        for engine in (drilled, undrilled):
            assert fired(engine, turn(number, injection, at=moment)) == []
        moment += timedelta(minutes=30)
    for n in range(40):
        assert (
            fired(drilled, turn(500 + n, injection, at=moment + timedelta(seconds=n), drill=f"d:c{n}")) == []
        )
    bursts = [
        [
            len(fired(engine, turn(1000 + n, injection, at=moment + timedelta(minutes=1 + n))))
            for n in range(8)
        ]
        for engine in (drilled, undrilled)
    ]
    assert bursts[0] == bursts[1] and sum(bursts[0]) == 1


def test_first_seen_egress_fires_once_per_agent_and_host() -> None:
    """A new host fires once; a host seeded from the audit log never does."""
    config = load_alerts_config(None)
    engine = RuleEngine([rule for rule in config.rules if rule.id == "first-seen-egress"], started=START)
    engine.seed_seen("first-seen-egress", [("bot", "api.openai.com")], START)
    assert fired(engine, turn(1)) == []
    first = fired(engine, turn(2, egress_host="evil.example"))
    assert [alert.group for alert in first] == [{"agent_id": "bot", "egress_host": "evil.example"}]
    assert fired(engine, turn(3, egress_host="evil.example", at=START + timedelta(hours=2))) == []


def test_alerts_carry_ids_and_counts_only() -> None:
    """Whatever else a record holds, an alert is built from its ids, counts and finding metadata."""
    engine = engine_for(LEAK_RULE)
    record = turn(1, finding(), prompt="the raw prompt text", secret_value="AKIAEXAMPLEEXAMPLE00")
    (alert,) = fired(engine, record)
    text = json.dumps(alert.to_dict())
    assert "raw prompt" not in text and "AKIA" not in text


# -- router and destinations ------------------------------------------------------------------------------


def test_webhook_retries_after_failure_and_signs_the_body(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 500 is retried with backoff; the delivered body carries a valid HMAC-SHA256 signature."""
    monkeypatch.setenv("EG_HOOK_SECRET", "s3cret")
    server = Receiver(statuses=[500])
    try:
        router = router_for(tmp_path, {"type": "webhook", "url": server.url, "secret_env": "EG_HOOK_SECRET"})
        router.submit(turn(1, finding()))
        assert wait_until(lambda: router.delivered == 1)
        router.close()
        assert len(server.deliveries) == 2
        retried = server.deliveries[-1]
        expected = "sha256=" + hmac.new(b"s3cret", retried.body, hashlib.sha256).hexdigest()
        assert retried.headers[SIGNATURE_HEADER] == expected
        assert json.loads(retried.body)["rule"] == "leak" and json.loads(retried.body)["event_ids"] == ["e1"]
    finally:
        server.close()


def test_records_past_the_queue_bound_are_dropped_and_counted(tmp_path: Path, receiver: Receiver) -> None:
    """The hand-off holds at most ``queue_size`` records the router has not taken: more are dropped and
    counted, never block the proxy; what it holds is still evaluated and delivered at close."""
    router = router_for(
        tmp_path, {"type": "webhook", "url": receiver.url}, queue_size=3, batch_pause_seconds=1.0
    )
    router.submit(turn(1, finding()))
    # The router takes the first record, then pauses for the batch: the rest wait in the queue.
    assert wait_until(lambda: router._records.qsize() == 0)
    for number in range(2, 12):
        router.submit(turn(number, finding()))
    assert router.dropped == 7
    router.close()
    assert router.delivered >= 1


def test_slack_gets_readable_blocks(tmp_path: Path, receiver: Receiver) -> None:
    """Slack receives a header with the rule and fields for severity, agents and users."""
    router = router_for(tmp_path, {"type": "slack", "url": receiver.url})
    router.submit(turn(1, finding()))
    assert wait_until(lambda: router.delivered == 1)
    router.close()
    (message,) = receiver.bodies()
    assert "leak" in message["blocks"][0]["text"]["text"]
    field_texts = [entry["text"] for entry in message["blocks"][2]["fields"]]
    assert "*Severity*\ncritical" in field_texts and "*Users*\n`u1`" in field_texts


def test_pagerduty_gets_a_trigger_with_dedup_key(tmp_path: Path, receiver: Receiver) -> None:
    """PagerDuty receives an Events v2 trigger with the routing key, dedup key and mapped severity."""
    rule = {**LEAK_RULE, "group_by": ["agent_id"], "severity": "high"}
    router = router_for(tmp_path, {"type": "pagerduty", "url": receiver.url, "routing_key": "rk"}, [rule])
    router.submit(turn(1, finding()))
    assert wait_until(lambda: router.delivered == 1)
    router.close()
    (event,) = receiver.bodies()
    assert (event["routing_key"], event["event_action"], event["dedup_key"]) == (
        "rk",
        "trigger",
        "leak:agent_id=bot",
    )
    assert event["payload"]["severity"] == "error"


def test_down_destination_is_spooled_and_delivered_after_restart(tmp_path: Path) -> None:
    """Alerts for an unreachable destination survive a restart and go out when it is back."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    destination = {"type": "webhook", "url": f"http://127.0.0.1:{port}/hook"}
    first = router_for(tmp_path, destination)
    first.submit(turn(1, finding()))
    spool = tmp_path / "data" / "alert-spool" / "hook"
    assert wait_until(lambda: len(list(spool.glob("*.json"))) == 1)
    first.close()
    assert first.delivered == 0 and len(list(spool.glob("*.json"))) == 1
    server = Receiver(port=port)
    try:
        second = router_for(tmp_path, destination)
        assert wait_until(lambda: second.delivered == 1)
        second.close()
        assert [body["event_ids"] for body in server.bodies()] == [["e1"]]
        assert list(spool.glob("*.json")) == []
    finally:
        server.close()


def test_rejected_alert_is_set_aside(tmp_path: Path) -> None:
    """A 4xx answer is not retried; the alert is kept under rejected/ for a person."""
    server = Receiver(statuses=[400])
    try:
        router = router_for(tmp_path, {"type": "webhook", "url": server.url})
        router.submit(turn(1, finding()))
        rejected = tmp_path / "data" / "alert-spool" / "hook" / "rejected"
        assert wait_until(lambda: len(list(rejected.glob("*.json"))) == 1)
        router.close()
        assert len(server.deliveries) == 1
    finally:
        server.close()


def test_file_and_stdout_destinations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Local destinations write one JSON line per alert."""
    sink = tmp_path / "alerts.jsonl"
    config = load_alerts_config(
        {
            "destinations": {"disk": {"type": "file", "path": str(sink)}, "console": {"type": "stdout"}},
            "rules": [{**LEAK_RULE, "destinations": ["disk", "console"]}],
        }
    )
    router = AlertRouter(config, data_dir=tmp_path / "data", tick_seconds=0.05)
    router.submit(turn(1, finding()))
    assert wait_until(lambda: router.delivered == 2)
    router.close()
    assert json.loads(sink.read_text())["rule"] == "leak"
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["rule"] == "leak"


def test_auto_actions_call_the_handler_or_a_webhook(tmp_path: Path, receiver: Receiver) -> None:
    """Built-in actions go to the proxy's callback; others to the webhook configured for them."""
    applied: list[tuple[str, list[str]]] = []
    config = load_alerts_config(
        {
            "destinations": {"console": {"type": "file", "path": str(tmp_path / "out.jsonl")}},
            "actions": {"open_ticket": {"url": receiver.url}},
            "rules": [
                {**LEAK_RULE, "destinations": ["console"], "auto_actions": ["freeze_user", "open_ticket"]}
            ],
        }
    )
    router = AlertRouter(
        config,
        data_dir=tmp_path / "data",
        action_handler=lambda action, alert: applied.append((action, alert.user_ids + alert.session_ids)),
        tick_seconds=0.05,
    )
    router.submit(turn(1, finding()))
    assert wait_until(lambda: router.delivered == 2)
    router.close()
    assert applied == [("freeze_user", ["u1", "s1"])]
    (call,) = receiver.bodies()
    assert call["action"] == "open_ticket" and call["alert"]["rule"] == "leak"


def test_scheduled_compliance_rule_runs_its_query(tmp_path: Path) -> None:
    """At its cron time the compliance rule queries the audit and reports agents with gaps."""
    audit_dir = tmp_path / "audit"
    audit = AuditLog(audit_dir, clock=lambda: START)
    audit.append(turn(1, at=START))
    audit.append(turn(2, at=START, agent_id="quiet-bot", user_id=None, purpose=None))
    audit.close()
    now = [START + timedelta(minutes=59)]
    sink = tmp_path / "alerts.jsonl"
    shipped = load_alerts_config(None).rules
    compliance = next(rule for rule in shipped if rule.id == "compliance-trace-gap")
    config = load_alerts_config(
        {
            "destinations": {"secops": {"type": "file", "path": str(sink)}},
            "rules": [
                {
                    "id": compliance.id,
                    "description": compliance.description,
                    "schedule": compliance.schedule,
                    "query": compliance.query,
                    "destinations": ["secops"],
                }
            ],
        }
    )
    router = AlertRouter(
        config, data_dir=tmp_path / "data", audit_dir=audit_dir, clock=lambda: now[0], tick_seconds=0.02
    )
    time.sleep(0.1)
    assert not sink.exists()
    now[0] = START + timedelta(hours=1, seconds=1)
    assert wait_until(lambda: router.delivered == 1)
    router.close()
    alert = json.loads(sink.read_text())
    assert alert["agent_ids"] == ["quiet-bot"]
    assert alert["rows"][0]["missing_user_id"] == 1 and alert["rows"][0]["missing_purpose"] == 1


@pytest.mark.parametrize("reads", [None, "1d"])
def test_a_query_reads_only_the_days_its_rule_says(tmp_path: Path, reads: str | None) -> None:
    """A query rule reads the whole log, unless it says how far back its query looks: then the daily
    files of older days are not opened at all (one of them is damaged here, which would fail the query)."""
    audit_dir = tmp_path / "audit"
    for number, day in enumerate((START - timedelta(days=3), START - timedelta(days=1), START)):

        def on_the_day(moment: datetime = day) -> datetime:
            return moment

        audit = AuditLog(audit_dir, clock=on_the_day)
        audit.append(turn(number, at=day, user_id=None))
        audit.close()
    oldest = sorted(audit_dir.glob("*.jsonl"))[0]
    if reads:
        oldest.write_text(oldest.read_text() + "{not json\n")
    sink = tmp_path / "alerts.jsonl"
    rule: dict[str, Any] = {
        "id": "gaps",
        "schedule": "0 6 * * *",
        "query": "SELECT agent_id, count(*) AS turns FROM turns WHERE user_id IS NULL GROUP BY agent_id",
        "destinations": ["secops"],
        **({"reads": reads} if reads else {}),
    }
    config = load_alerts_config(
        {"destinations": {"secops": {"type": "file", "path": str(sink)}}, "rules": [rule]}
    )
    now = [START + timedelta(minutes=59)]
    router = AlertRouter(
        config, data_dir=tmp_path / "data", audit_dir=audit_dir, clock=lambda: now[0], tick_seconds=0.02
    )
    now[0] = START + timedelta(hours=1, seconds=1)
    assert wait_until(lambda: router.delivered == 1)
    router.close()
    assert json.loads(sink.read_text())["rows"] == [{"agent_id": "bot", "turns": 2 if reads else 3}]


def test_reads_applies_to_a_query_only() -> None:
    rule = {"id": "r", "match": {"threat": "data_exfiltration"}, "threshold": ">=1", "reads": "1d"}
    with pytest.raises(AlertConfigError, match="reads applies to a query"):
        load_alerts_config(
            {"destinations": {"d": {"type": "stdout"}}, "rules": [{**rule, "destinations": ["d"]}]}
        )


def test_submit_never_blocks_when_the_queue_is_full(tmp_path: Path) -> None:
    """A full queue drops (and counts) instead of holding up the request path."""
    router = router_for(tmp_path, {"type": "file", "path": str(tmp_path / "out.jsonl")}, queue_size=1)
    for number in range(200):
        router.submit(turn(number))
    router.close()
    assert router.dropped > 0


def test_groups_named_per_user_stay_within_the_cap_and_a_busy_group_still_fires() -> None:
    """A rule grouped by user id opens a group per id an agent sends: the process keeps at most
    ``max_groups`` of them (the least recently hit forgotten), and a group hit all along still reaches
    its threshold among a flood of new ones."""
    config = load_alerts_config(
        {
            "destinations": {"hook": {"type": "stdout"}},
            "rules": [{**LEAK_RULE, "threshold": ">=5", "group_by": ["user_id"]}],
        }
    )
    engine = RuleEngine(config.rules, started=START, store=SqliteStateStore(None), max_groups=50)
    alerts = []
    for number in range(500):
        at = START + timedelta(milliseconds=number)
        alerts += fired(engine, turn(number, finding(), at=at, user_id=f"minted-{number}"))
        if number % 100 == 0:
            alerts += fired(engine, turn(number, finding(), at=at, user_id="busy"))
        assert engine.groups() <= 50
    assert [alert.group for alert in alerts] == [{"user_id": "busy"}]
    assert alerts[0].count == 5


SLACK_LIMITS = {"header": 150, "section": 3000, "field": 2000, "context": 2000}
"""Slack's documented lengths for block texts: a message over any of them is refused (400), and an alert
refused with a 4xx is set aside, never retried."""


def slack_texts(message: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for block in message["blocks"]:
        if block["type"] in ("header", "section") and "text" in block:
            yield block["type"], block["text"]["text"]
        for entry in block.get("fields", []):
            yield "field", entry["text"]
        for element in block.get("elements", []):
            yield "context", element["text"]


@pytest.mark.parametrize("size", [1, 300, 5000])
def test_a_slack_message_keeps_within_slack_s_limits_whatever_it_lists(size: int) -> None:
    """Long user or agent ids, many event ids, a long rule name and query rows of any size are cut to fit
    each block, so Slack never refuses an alert for what an agent sent."""
    long = "v" * size
    alert = Alert(
        alert_id="a1",
        rule="r" * min(size, 200),
        description="d" * size,
        severity="critical",
        ts="2025-01-01T00:00:00Z",
        dedup_key="k",
        group={},
        count=3,
        window_seconds=300,
        agent_ids=[long] * 3,
        user_ids=[f"{long}{number}" for number in range(20)],
        session_ids=[],
        event_ids=[f"{long}e{number}" for number in range(20)],
        threats=["credential_theft"],
        finding_rules=[long] * 12,
        rows=[{"user_id": long, "n": number} for number in range(10)],
    )
    message = slack_payload(alert.to_dict())
    texts = list(slack_texts(message))
    assert {kind for kind, _ in texts} == {"header", "section", "field", "context"}
    for kind, text in texts:
        assert len(text) <= SLACK_LIMITS[kind], (kind, len(text))
    if size == 1:
        assert ("field", "*Users*\n`" + ", ".join(f"v{number}" for number in range(10)) + " …`") in texts
