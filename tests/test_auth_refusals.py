"""Refused proxy authentications: counted per client and reason, recorded without the credential, and
the shipped ``proxy-auth-failures`` rule fires on repeated failures from one client."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mitmproxy.test import taddons, tflow

from addons.gate.identity import REFUSAL_KEY, AgentIdentity, AuthRefusal
from addons.record.audit import Audit
from proxy.alerts import RuleEngine, load_alerts_config
from proxy.audit.refusals import RefusalCounter
from proxy.config.policy import parse_policy
from proxy.runtime import Runtime
from proxy.state import SqliteStateStore
from tests.harness import AGENT, AGENT_TOKEN, Proxy

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
GUESSED_TOKEN = "guessed-" + "Zq8Xw7Cv6Bn5Mm4Ll3"


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def test_first_refusal_is_recorded_at_once_and_the_rest_per_window() -> None:
    """A burst costs two records: the first refusal, then the count of the others when the window ends."""
    counter = RefusalCounter(timedelta(seconds=10))
    first = counter.refused("10.0.0.7", "invalid", "support-bot", at(0))
    assert [(event["attempts"], event["client"], event["reason"]) for event in first] == [
        (1, "10.0.0.7", "invalid")
    ]
    assert all(counter.refused("10.0.0.7", "invalid", None, at(n / 10)) == [] for n in range(1, 50))
    assert counter.due(at(9)) == []
    (summary,) = counter.due(at(10))
    assert summary["attempts"] == 49 and summary["agents"] == ["support-bot"]
    assert counter.due(at(30)) == []


def test_clients_and_reasons_are_counted_apart() -> None:
    """Two clients, and a missing header against a wrong one, are separate windows; only a wrong
    credential is a finding (no credentials is how challenge-response clients begin)."""
    counter = RefusalCounter()
    events = [
        *counter.refused("10.0.0.7", "invalid", None, at(0)),
        *counter.refused("10.0.0.8", "invalid", None, at(0)),
        *counter.refused("10.0.0.7", "missing", None, at(0)),
    ]
    assert [(event["client"], event["reason"]) for event in events] == [
        ("10.0.0.7", "invalid"),
        ("10.0.0.8", "invalid"),
        ("10.0.0.7", "missing"),
    ]
    assert [[finding["rule"] for finding in event["findings"]] for event in events] == [
        ["proxy-auth-invalid"],
        ["proxy-auth-invalid"],
        [],
    ]


def test_a_refusal_after_the_window_reports_the_old_window_first() -> None:
    """Without a timer tick, the next refusal closes the ended window before opening a new one."""
    counter = RefusalCounter(timedelta(seconds=10))
    counter.refused("10.0.0.7", "invalid", None, at(0))
    counter.refused("10.0.0.7", "invalid", None, at(1))
    events = counter.refused("10.0.0.7", "invalid", None, at(12))
    assert [event["attempts"] for event in events] == [1, 1]
    assert counter.drain() == []


def shipped_engine() -> RuleEngine:
    return RuleEngine(load_alerts_config(None).rules, started=START)


def records_for(counter: RefusalCounter, client: str, attempts: int, start: float) -> list[dict[str, Any]]:
    events = [
        event
        for n in range(attempts)
        for event in counter.refused(client, "invalid", None, at(start + n / 100))
    ]
    return events + counter.due(at(start + 60))


def test_shipped_rule_fires_on_repeated_failures_from_one_client() -> None:
    """Ten wrong tokens from one address within five minutes page on-call, grouped by that address."""
    engine = shipped_engine()
    fired = [
        alert
        for record in records_for(RefusalCounter(), "10.0.0.7", 10, 0)
        for rule, alert in engine.evaluate(record)
    ]
    assert [alert.rule for alert in fired] == ["proxy-auth-failures"]
    assert fired[0].group == {"client": "10.0.0.7"} and fired[0].count == 10


def test_shipped_rule_stays_quiet_below_the_threshold_and_across_clients() -> None:
    """Nine failures, or failures spread over many addresses, or agents without credentials, do not page."""
    engine = shipped_engine()
    counter = RefusalCounter()
    records = records_for(counter, "10.0.0.7", 9, 0)
    records += [event for n in range(20) for event in counter.refused(f"10.0.1.{n}", "invalid", None, at(70))]
    records += [
        event for n in range(30) for event in counter.refused("10.0.0.9", "missing", None, at(80 + n))
    ]
    records += counter.drain()
    assert [alert for record in records for _, alert in engine.evaluate(record)] == []


def identity_and_audit(tmp_path: Path) -> tuple[AgentIdentity, Audit]:
    policy = parse_policy(
        f"""\
mode: enforce
data_dir: {tmp_path / "data"}
agents:
  {AGENT}: {{token: "{AGENT_TOKEN}", role: support}}
roles:
  support: {{}}
audit: {{path: {tmp_path / "audit"}}}
""",
        "p.yaml",
        environ={},
    )
    runtime = Runtime(policy, SqliteStateStore(None))
    return AgentIdentity(runtime), Audit(runtime)


def connect_with(header: str | None) -> Any:
    flow = tflow.tflow()
    flow.request.method = "CONNECT"
    flow.response = None
    if header is not None:
        flow.request.headers["Proxy-Authorization"] = header
    return flow


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_refused_connects_are_audited_without_the_credential(tmp_path: Path) -> None:
    """Wrong tokens, an unknown agent and a missing header each give 407 and an auth.refused record that
    names the client and the known agent, never the token tried."""
    identity, audit = identity_and_audit(tmp_path)
    with taddons.context(identity, audit) as tctx:
        tctx.configure(identity)
        tctx.configure(audit)
        flows = [
            connect_with(basic(AGENT, GUESSED_TOKEN)),
            connect_with(basic(AGENT, GUESSED_TOKEN + "2")),
            connect_with(basic("intruder", GUESSED_TOKEN)),
            connect_with(None),
            connect_with("Bearer " + GUESSED_TOKEN),
        ]
        for flow in flows:
            identity.http_connect(flow)
            assert flow.response is not None and flow.response.status_code == 407
            assert isinstance(flow.metadata[REFUSAL_KEY], AuthRefusal)
            audit.http_connect(flow)
        accepted = connect_with(basic(AGENT, AGENT_TOKEN))
        identity.http_connect(accepted)
        assert accepted.response is None and REFUSAL_KEY not in accepted.metadata
        audit.done()
    text = "".join(path.read_text() for path in (tmp_path / "audit").glob("audit-*.jsonl"))
    assert GUESSED_TOKEN not in text and "intruder" not in text
    records = [json.loads(line) for line in text.splitlines()]
    refused = [record for record in records if record["type"] == "auth.refused"]
    assert sum(record["attempts"] for record in refused) == 5
    assert {record["reason"] for record in refused} == {"invalid", "missing"}
    assert {agent for record in refused for agent in record["agents"]} == {AGENT}
    assert all(record["status"] == 407 and record["client"] for record in refused)


def test_wrong_token_through_a_real_proxy_is_recorded(start_proxy: Any) -> None:
    """End to end: a client with a wrong token gets 407; the audit and the log show the refusal, not
    the token."""
    proxy: Proxy = start_proxy()
    header = "Proxy-Authorization: " + basic(AGENT, GUESSED_TOKEN) + "\r\n"
    for _ in range(3):
        status, _ = proxy.raw(
            f"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n{header}\r\n".encode()
        )
        assert status == 407
    proxy.process.terminate()  # a clean stop writes what the open windows still hold
    proxy.process.wait(timeout=20)
    refused = [record for record in proxy.audit_records() if record.get("type") == "auth.refused"]
    assert sum(record["attempts"] for record in refused) == 3
    assert refused[0]["client"] == "127.0.0.1" and refused[0]["agents"] == [AGENT]
    assert GUESSED_TOKEN not in json.dumps(proxy.audit_records())
    assert GUESSED_TOKEN not in proxy.output() and "auth.refused" in proxy.output()


def test_clients_from_ever_new_addresses_keep_a_bounded_number_of_windows_and_lose_no_count() -> None:
    """Beyond ``max_open`` windows the oldest closes early with its record: every refusal is still
    counted in some record."""
    counter = RefusalCounter(timedelta(seconds=10), max_open=20)
    events = []
    for index in range(300):
        for _ in range(3):
            events += counter.refused(f"2001:db8::{index:x}", "invalid", None, at(index / 100))
        assert counter.open_windows() <= 20
    events += counter.drain()
    assert sum(event["attempts"] for event in events) == 900
    assert {event["client"] for event in events} == {f"2001:db8::{index:x}" for index in range(300)}
