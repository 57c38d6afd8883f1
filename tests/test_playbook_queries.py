"""The playbook's five triage queries run through `egressguard query --sql` over a generated audit log.

The log is written relative to the real clock, since the queries say ``NOW()``; each query returns the
rows the log was built to produce.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from proxy.audit.log import AuditLog, format_ts
from proxy.audit.playbook import PLAYBOOK_QUERIES, referenced_query
from proxy.commands.cli import main
from tests.test_query import NOW as FIXED_NOW
from tests.test_query import TURNS as QUERY_TURNS
from tests.test_query import turn

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


TURNS = [*QUERY_TURNS, turn(8 * DAY, "c", "u5", purpose=None)]
"""The other query tests' log, and a turn missing its purpose just outside query 5's week."""


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The turns at the same distances from the real clock as from the other tests' fixed one."""
    directory = tmp_path_factory.mktemp("audit")
    now = datetime.now(UTC)
    moment = [now]
    audit = AuditLog(directory, clock=lambda: moment[0], checkpoint_every=4, retention_days=None)
    for number, event in enumerate(TURNS):
        moment[0] = now - (FIXED_NOW - datetime.fromisoformat(event["ts"]))
        audit.append({**event, "ts": format_ts(moment[0]), "event_id": f"e{number}"})
    audit.close()
    return directory


def query(audit_dir: Path, number: int, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """Playbook query ``number`` through the command line, as JSON rows."""
    sql = PLAYBOOK_QUERIES[number][1]
    assert main(["query", "--sql", sql, "--audit", str(audit_dir), "--format", "json"]) == 0
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return rows


def test_1_incidents_per_threat_class(audit_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Findings of the last day per threat and severity, critical first, then by hits."""
    rows = [(r["threat"], r["severity"], r["hits"], r["distinct_users"]) for r in query(audit_dir, 1, capsys)]
    assert rows == [
        ("prompt_injection", "critical", 1, 1),
        ("tool_abuse", "high", 2, 2),
        ("prompt_injection", "high", 1, 1),
        ("jailbreak", "medium", 1, 1),
    ]


def test_2_injection_attempts_per_user(audit_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Three attempts within 7 days list a user; two, or three older ones, do not."""
    rows = query(audit_dir, 2, capsys)
    assert [(row["user_id"], row["injection_attempts"]) for row in rows] == [("u-evil", 3)]
    assert datetime.fromisoformat(rows[0]["last_attempt"]) > datetime.now(UTC) - 2 * HOUR


def test_3_destructive_tools_without_approval(audit_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The tool-abuse turn without an approval id, with its signals; the approved one is left out."""
    rows = query(audit_dir, 3, capsys)
    assert [(row["agent_id"], row["user_id"], row["tool"]) for row in rows] == [("b", "u2", ['"test"'])]


def test_4_first_seen_egress(audit_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Hosts of the last day absent from the 30 days before it."""
    rows = query(audit_dir, 4, capsys)
    assert [(row["agent_id"], row["egress_host"], row["hits"]) for row in rows] == [
        ("b", "new.example.com", 2)
    ]


def test_5_compliance_trace_gaps(audit_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Turns of the last 7 days missing a purpose or a user id (the older one is out of the window)."""
    rows = query(audit_dir, 5, capsys)
    assert sorted((row["agent_id"], row["id"]) for row in rows) == [("c", "e8"), ("c", "e9")]


def test_only_json_table_is_rewritten() -> None:
    """The MySQL-only function the queries may not use as published is JSON_TABLE; its rewrite is the
    documented one, and the other MySQL JSON functions stay as written."""
    texts = " ".join(sql for _, sql in PLAYBOOK_QUERIES.values())
    assert "JSON_TABLE" not in texts
    assert "unnest(json_extract(t.findings, '$[*]')) AS f(value)" in texts
    for kept in ("JSON_UNQUOTE(JSON_EXTRACT(", "JSON_CONTAINS(findings, JSON_OBJECT(", "FIELD(severity"):
        assert kept in texts


def test_alert_files_refer_to_queries_by_the_playbooks_words() -> None:
    """`see_query_4_above` is query 4; other text is no reference; a query it lacks is an error."""
    assert referenced_query("see_query_4_above") == PLAYBOOK_QUERIES[4][1]
    assert referenced_query("SELECT 1") is None
    with pytest.raises(KeyError):
        referenced_query("see_query_9_above")
