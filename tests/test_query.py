"""Triage queries over a generated audit log whose answers are known."""

from __future__ import annotations

import argparse
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from proxy.audit.log import AuditLog, format_ts
from proxy.audit.query import (
    QueryError,
    add_query_arguments,
    open_audit,
    run_named,
    run_query,
    run_sql,
)
from proxy.config.units import parse_duration

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


def finding(threat: str, severity: str = "high", origin: str | None = None) -> dict[str, Any]:
    """A finding; prompt-injection findings are typed by the user unless ``origin`` says otherwise."""
    record: dict[str, Any] = {
        "threat": threat,
        "rule": f"{threat}.rule",
        "signal": "test",
        "severity": severity,
        "action": "flag",
        "where": "request",
        "owasp": None,
        "enforced": False,
    }
    if origin is not None or threat == "prompt_injection":
        record["origin"] = origin or "user"
    return record


def turn(
    ago: timedelta, agent: str, user: str | None, *findings: dict[str, Any], **fields: Any
) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "agent.turn",
        "ts": format_ts(NOW - ago),
        "agent_id": agent,
        "role": "support",
        "user_id": user,
        "purpose": "support",
        "approval_id": None,
        "egress_host": "api.openai.com",
        "tools": [],
        "findings": list(findings),
        "decision": "allowed",
    }
    return {**base, **fields}


TURNS = [
    turn(20 * DAY, "a", "u1"),
    *(turn(10 * DAY, "a", "u-old", finding("prompt_injection")) for _ in range(3)),
    turn(5 * DAY, "a", "u1", egress_host="api.anthropic.com"),
    turn(2 * DAY, "a", "u-evil", finding("prompt_injection")),
    turn(30 * HOUR, "a", "u-mild", finding("prompt_injection")),
    turn(25 * HOUR, "b", "u-evil", finding("prompt_injection")),
    turn(5 * HOUR, "c", "u4", purpose="", egress_host="api.anthropic.com"),
    turn(4 * HOUR, "c", None, purpose=None),
    turn(3 * HOUR, "a", "u-mild", finding("prompt_injection")),
    turn(2 * HOUR, "b", "u2", finding("tool_abuse"), egress_host="new.example.com", tools=["delete_repo"]),
    turn(2 * HOUR, "b", "u3", finding("tool_abuse"), egress_host="new.example.com", approval_id="ap-1"),
    turn(HOUR, "a", "u-evil", finding("prompt_injection", "critical"), finding("jailbreak", "medium")),
]


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("audit")
    moment = [NOW]
    audit = AuditLog(directory, clock=lambda: moment[0], checkpoint_every=4, retention_days=None)
    for number, event in enumerate(TURNS):
        moment[0] = datetime.fromisoformat(event["ts"])
        audit.append({**event, "event_id": f"e{number}"})
    audit.close()
    return directory


def named(audit_dir: Path, name: str, since: str = "24h") -> list[dict[str, Any]]:
    return run_named(open_audit([audit_dir]), name, since=parse_duration(since), now=NOW).as_dicts()


def test_incidents_counts_hits_and_users_per_threat_and_severity(audit_dir: Path) -> None:
    """Findings of the last 24 h, grouped, most severe first."""
    rows = [
        (row["threat"], row["severity"], row["hits"], row["users"]) for row in named(audit_dir, "incidents")
    ]
    assert rows == [
        ("prompt_injection", "critical", 1, 1),
        ("tool_abuse", "high", 2, 2),
        ("prompt_injection", "high", 1, 1),
        ("jailbreak", "medium", 1, 1),
    ]


def test_injection_users_needs_three_attempts_in_seven_days(audit_dir: Path) -> None:
    """Three attempts within 7 days count; two, or three that are older, do not."""
    rows = named(audit_dir, "injection-users")
    assert [(row["user_id"], row["attempts"], row["agents"]) for row in rows] == [("u-evil", 3, 2)]


def test_injection_users_lists_attackers_not_victims(tmp_path: Path) -> None:
    """Users whose agent read a poisoned document (origin content) or whose model leaked its system
    prompt (no origin) are victims: only users who typed the injections are listed."""
    audit = AuditLog(tmp_path, clock=lambda: NOW, checkpoint_every=4, retention_days=None)
    events = [
        *(turn(DAY, "a", "u-victim", finding("prompt_injection", origin="content")) for _ in range(3)),
        *(turn(DAY, "a", "u-leaked", {**finding("prompt_injection"), "origin": None}) for _ in range(3)),
        *(turn(DAY, "a", "u-attacker", finding("prompt_injection", origin="user")) for _ in range(3)),
    ]
    for number, event in enumerate(events):
        audit.append({**event, "event_id": f"v{number}"})
    audit.close()
    assert [row["user_id"] for row in named(tmp_path, "injection-users")] == ["u-attacker"]


def test_unapproved_tools_skips_approved_turns(audit_dir: Path) -> None:
    """Only the tool-abuse finding whose turn had no approval id is listed."""
    rows = named(audit_dir, "unapproved-tools")
    assert [(row["event_id"], row["user_id"]) for row in rows] == [("e11", "u2")]


def test_new_egress_lists_hosts_unseen_in_the_previous_30_days(audit_dir: Path) -> None:
    """Hosts already seen before the window are not new."""
    rows = named(audit_dir, "new-egress")
    assert [(row["egress_host"], row["turns"], row["agents"]) for row in rows] == [
        ("new.example.com", 2, "b")
    ]


def test_compliance_gaps_counts_missing_user_and_purpose(audit_dir: Path) -> None:
    """Turns with an empty or missing purpose or user id, per agent."""
    rows = named(audit_dir, "compliance-gaps")
    assert [
        (row["agent_id"], row["turns"], row["missing_user_id"], row["missing_purpose"]) for row in rows
    ] == [("c", 2, 1, 2)]


def test_since_widens_the_window(audit_dir: Path) -> None:
    """With --since 3d the turns from 25 and 30 hours ago are counted too."""
    rows = named(audit_dir, "incidents", since="3d")
    high_injection = next(
        row for row in rows if (row["threat"], row["severity"]) == ("prompt_injection", "high")
    )
    assert high_injection["hits"] == 4


def test_sql_runs_over_turns_and_findings(audit_dir: Path) -> None:
    """Free SQL sees one row per turn and one per finding, checkpoints excluded."""
    connection = open_audit([audit_dir])
    assert run_sql(connection, "SELECT count(*) FROM turns").rows == [(len(TURNS),)]
    assert run_sql(connection, "SELECT count(*) FROM findings").rows == [(11,)]


def test_empty_directory_gives_empty_results(tmp_path: Path) -> None:
    """No audit files yet: the views exist and return nothing."""
    assert run_named(open_audit([tmp_path]), "incidents", since=DAY, now=NOW).rows == []


def test_unknown_query_and_bad_duration_are_errors(audit_dir: Path) -> None:
    """A misspelt name raises QueryError and a bad duration ValueError, each with a readable message."""
    with pytest.raises(QueryError, match="unknown query"):
        run_named(open_audit([audit_dir]), "incident", since=DAY, now=NOW)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("yesterday")


def cli(audit_dir: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_query_arguments(parser)
    return run_query(parser.parse_args([*argv, "--audit", str(audit_dir)]), now=NOW)


def test_cli_json_format(audit_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--format json prints a list of objects with ISO timestamps."""
    assert cli(audit_dir, "unapproved-tools", "--format", "json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["event_id"] == "e11" and rows[0]["ts"].endswith("Z")


def test_cli_csv_format(audit_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--format csv prints a header and one line per row."""
    assert cli(audit_dir, "compliance-gaps", "--format", "csv") == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0][:4] == ["agent_id", "turns", "missing_user_id", "missing_purpose"]
    assert rows[1][:4] == ["c", "2", "1", "2"]


def test_cli_table_and_sql(audit_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--sql with the default table format prints aligned columns and a row count."""
    assert cli(audit_dir, "--sql", "SELECT agent_id, count(*) AS n FROM turns GROUP BY 1 ORDER BY 1") == 0
    output = capsys.readouterr().out
    assert output.splitlines()[0].split() == ["agent_id", "n"]
    assert "(3 rows)" in output


def test_cli_sql_error_exits_2(audit_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A broken SQL statement is reported, not raised."""
    assert cli(audit_dir, "--sql", "SELECT nope FROM turns") == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("missing", ["no-such-dir", "audit/typo.jsonl"])
def test_cli_missing_audit_path_exits_2(
    tmp_path: Path, missing: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A path that does not exist is an error naming it, not an empty result."""
    assert cli(tmp_path / missing, "incidents") == 2
    captured = capsys.readouterr()
    assert captured.out == "" and f"no audit log at {tmp_path / missing}" in captured.err
