"""The command line's audit, query and scan subcommands, through ``proxy.commands.cli.main``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from proxy.audit import AuditLog
from proxy.commands.cli import main


def turn(event_id: str, *findings: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "agent.turn",
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "event_id": event_id,
        "agent_id": "support-bot",
        "user_id": "u-1",
        "egress_host": "api.openai.com",
        "findings": list(findings),
        "decision": "allowed",
    }


LEAK = {
    "threat": "credential_theft",
    "rule": "aws-access-key-id",
    "signal": "AWS access key id",
    "severity": "critical",
    "action": "redact",
    "where": "completion",
}


@pytest.fixture
def audit_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "audit"
    log = AuditLog(directory, checkpoint_every=2)
    for number in range(5):
        log.append(turn(f"e{number}", *([LEAK] if number == 3 else [])))
    log.close()
    return directory


def daily_file(directory: Path) -> Path:
    (path,) = directory.glob("audit-*.jsonl")
    return path


def test_audit_verify_accepts_an_intact_log(audit_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`audit verify DIR` exits 0 and says the chain is intact, with checkpoints checked."""
    assert main(["audit", "verify", str(audit_dir)]) == 0
    assert capsys.readouterr().out.startswith("intact: ")


def test_audit_verify_names_file_and_line_of_an_edit(
    audit_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An edited record makes `audit verify` exit 1 naming the file and the line."""
    path = daily_file(audit_dir)
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace('"u-1"', '"u-2"')
    path.write_text("\n".join(lines) + "\n")
    assert main(["audit", "verify", str(path)]) == 1
    assert f"BROKEN: {path}:2:" in capsys.readouterr().out


def test_audit_pubkey_prints_the_checkpoint_key(audit_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`audit pubkey --audit DIR` prints the PEM public key kept next to the log."""
    assert main(["audit", "pubkey", "--audit", str(audit_dir)]) == 0
    assert capsys.readouterr().out == (audit_dir / "audit-signing.pub").read_text()


def test_audit_pubkey_without_a_key_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With no signing key there is nothing to print: exit 2 and say why."""
    assert main(["audit", "pubkey", "--audit", str(tmp_path)]) == 2
    assert "no signing key" in capsys.readouterr().err


def test_audit_needs_an_action(capsys: pytest.CaptureFixture[str]) -> None:
    """`audit` alone is a usage error."""
    with pytest.raises(SystemExit) as exit_info:
        main(["audit"])
    assert exit_info.value.code == 2


def test_query_incidents_reports_the_finding(audit_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`query incidents --audit DIR` reports the critical finding with its hit count."""
    assert main(["query", "incidents", "--audit", str(audit_dir), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(row["threat"], row["severity"], row["hits"]) for row in rows] == [
        ("credential_theft", "critical", 1)
    ]


def test_query_sql_runs_over_the_turns_view(audit_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`query --sql` runs free SQL over the turns view."""
    assert main(["query", "--sql", "SELECT count(*) AS n FROM turns", "--audit", str(audit_dir)]) == 0
    assert "5" in capsys.readouterr().out


def test_query_without_name_or_sql_exits_2(audit_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A query needs a name or --sql."""
    assert main(["query", "--audit", str(audit_dir)]) == 2
    assert "give a query name or --sql" in capsys.readouterr().err


SYNTHETIC_AWS_KEY = "AKIA" + "Q7ZT4WNB2XK5RM3P"


def test_scan_reports_a_secret_without_its_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`scan FILE` exits 1 with a JSON finding naming the rule and line, never the key itself."""
    source = tmp_path / "notes.txt"
    source.write_text(f"deploy notes\naws key {SYNTHETIC_AWS_KEY} for staging\n")
    assert main(["scan", str(source)]) == 1
    output = capsys.readouterr().out
    finding = json.loads(output.splitlines()[0])
    assert (finding["rule"], finding["line"]) == ("aws-access-key-id", 2)
    assert SYNTHETIC_AWS_KEY not in output


def test_scan_redact_prints_the_text_without_the_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`scan --redact` prints the input with the key replaced."""
    source = tmp_path / "notes.txt"
    source.write_text(f"aws key {SYNTHETIC_AWS_KEY} for staging\n")
    main(["scan", "--redact", str(source)])
    output = capsys.readouterr().out
    assert output.startswith("aws key ") and output.endswith(" for staging\n")
    assert SYNTHETIC_AWS_KEY not in output


def test_scan_of_clean_text_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing found: exit 0 and no output."""
    source = tmp_path / "clean.txt"
    source.write_text("the refund for order 4411 went out on Monday\n")
    assert main(["scan", str(source)]) == 0
    assert capsys.readouterr().out == ""
