"""`audit verify`: an intact chain passes; every kind of tampering is named by file and line."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proxy.audit.keys import load_or_create_signing_key, load_public_key, public_key_pem, sign
from proxy.audit.log import AuditLog, canonical_json, checkpoint_message, record_hash
from proxy.audit.spool import Spool, count_line
from proxy.audit.verify import (
    add_pubkey_arguments,
    add_verify_arguments,
    collect_files,
    parse_moment,
    run_pubkey,
    run_verify,
    verify_files,
)

DAY_ONE = "audit-2026-03-01.jsonl"
DAY_TWO = "audit-2026-03-02.jsonl"
DAY_THREE = "audit-2026-03-03.jsonl"


@pytest.fixture
def audit_dir(tmp_path: Path) -> Path:
    """Three daily files of four turns each and a checkpoint every three records (the last one too)."""
    moment = [datetime(2026, 3, 1, 9, 0, tzinfo=UTC)]
    audit = AuditLog(tmp_path / "audit", clock=lambda: moment[0], checkpoint_every=3)
    for day in range(3):
        for number in range(4):
            audit.append({"type": "agent.turn", "event_id": f"d{day}-{number}", "agent_id": "bot"})
            moment[0] += timedelta(minutes=1)
        moment[0] += timedelta(days=1)
    audit.close()
    return tmp_path / "audit"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def rewrite(path: Path, new_lines: list[str]) -> None:
    path.write_text("".join(new_lines))


def verify(directory: Path, *options: str) -> int:
    parser = argparse.ArgumentParser()
    add_verify_arguments(parser)
    return run_verify(parser.parse_args([*options, str(directory)]))


def first_break(directory: Path) -> tuple[str, int, str]:
    report = verify_files(collect_files([directory]), load_public_key(directory / "audit-signing.pub"))
    assert report.first_break is not None
    return report.first_break.file.name, report.first_break.line, report.first_break.reason


def test_intact_log_exits_zero_with_a_summary(audit_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An untouched log verifies: records, files and checkpoints are counted."""
    assert verify(audit_dir) == 0
    output = capsys.readouterr().out
    assert "intact: 16 records in 3 files, 4 checkpoint signatures verified" in output


def test_edited_record_is_named(audit_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Changing a field without rehashing breaks at that very line, and the CLI exits 1."""
    content = lines(audit_dir / DAY_TWO)
    content[1] = content[1].replace('"agent_id":"bot"', '"agent_id":"other"')
    rewrite(audit_dir / DAY_TWO, content)
    assert verify(audit_dir) == 1
    assert f"{DAY_TWO}:2: record does not match its hash (edited)" in capsys.readouterr().out


def test_edited_and_rehashed_record_breaks_the_next_link(audit_dir: Path) -> None:
    """Recomputing the edited record's hash still breaks the record after it."""
    content = lines(audit_dir / DAY_TWO)
    record = json.loads(content[1])
    record["agent_id"] = "other"
    record["hash"] = record_hash(record)
    content[1] = canonical_json(record) + "\n"
    rewrite(audit_dir / DAY_TWO, content)
    assert first_break(audit_dir)[:2] == (DAY_TWO, 3)


@pytest.mark.parametrize(
    "edit",
    [
        lambda line: '{"agent_id":"other",' + line[1:],
        lambda line: line.replace('"agent_id":"bot"', '"agent_id":"bot","agent_id":"bot"'),
        lambda line: json.dumps(json.loads(line)) + "\n",
        lambda line: json.dumps(dict(reversed(json.loads(line).items())), separators=(",", ":")) + "\n",
    ],
    ids=["a-repeated-key-in-front", "a-repeated-key-in-place", "spaced", "reordered"],
)
def test_a_line_in_another_form_than_written_is_named_even_where_json_reads_the_same_record(
    audit_dir: Path, edit: Callable[[str], str]
) -> None:
    """JSON keeps the last of a repeated key, so a copy put in front of a record (``"agent_id":"other"``,
    which a reader keeping the first copy would show) leaves the record's hash intact; a line is written in
    one form only, so any other form of it is an edit."""
    content = lines(audit_dir / DAY_TWO)
    content[1] = edit(content[1])
    rewrite(audit_dir / DAY_TWO, content)
    assert first_break(audit_dir) == (
        DAY_TWO,
        2,
        "record is not in the form it was written (edited: a key repeated, reordered or spaced)",
    )


def test_deleted_record_is_named(audit_dir: Path) -> None:
    """Removing a line breaks the chain at the line that now follows the gap."""
    content = lines(audit_dir / DAY_ONE)
    del content[1]
    rewrite(audit_dir / DAY_ONE, content)
    assert first_break(audit_dir)[:2] == (DAY_ONE, 2)


def test_reordered_records_are_named(audit_dir: Path) -> None:
    """Swapping two lines breaks at the first of them."""
    content = lines(audit_dir / DAY_ONE)
    content[0], content[1] = content[1], content[0]
    rewrite(audit_dir / DAY_ONE, content)
    assert first_break(audit_dir)[:2] == (DAY_ONE, 1)


def test_truncated_record_is_named(audit_dir: Path) -> None:
    """A last line cut short reads as a truncated record."""
    path = audit_dir / DAY_THREE
    path.write_bytes(path.read_bytes()[:-20])
    name, line, reason = first_break(audit_dir)
    assert (name, line) == (DAY_THREE, len(lines(path)))
    assert "truncated" in reason


def test_deleted_middle_file_is_named(audit_dir: Path) -> None:
    """Removing a whole day breaks at the first line of the day after it."""
    (audit_dir / DAY_TWO).unlink()
    name, line, reason = first_break(audit_dir)
    assert (name, line) == (DAY_THREE, 1)
    assert DAY_ONE in reason


def test_deleted_first_file_without_retention_record_is_named(audit_dir: Path) -> None:
    """A chain that starts mid-way with no retention record naming its start is a break."""
    (audit_dir / DAY_ONE).unlink()
    name, line, reason = first_break(audit_dir)
    assert (name, line) == (DAY_TWO, 1)
    assert "retention" in reason


def test_forged_checkpoint_signature_is_named(audit_dir: Path) -> None:
    """A whole chain rewritten and re-signed with another key fails at its first checkpoint."""
    path = audit_dir / DAY_ONE
    content = lines(path)
    forged: dict[str, Any] = json.loads(content[3])
    assert forged["type"] == "audit.checkpoint"
    forged["signature"] = sign(Ed25519PrivateKey.generate(), checkpoint_message(forged))
    forged["hash"] = record_hash(forged)
    content[3] = canonical_json(forged) + "\n"
    rewrite(path, content)
    assert first_break(audit_dir) == (DAY_ONE, 4, "checkpoint signature is not valid")


def test_wrong_public_key_is_named(audit_dir: Path, tmp_path: Path) -> None:
    """Verifying with a key that did not sign the checkpoints fails at the first one."""
    other = tmp_path / "other.pub"
    other.write_bytes(public_key_pem(Ed25519PrivateKey.generate().public_key()))
    report = verify_files(collect_files([audit_dir]), load_public_key(other))
    assert report.first_break is not None
    assert (report.first_break.file.name, report.first_break.line) == (DAY_ONE, 4)
    assert "not by the given key" in report.first_break.reason


def test_chain_after_retention_verifies_from_the_named_hash(tmp_path: Path) -> None:
    """After old files are removed, verification starts from the hash the retention record names."""
    moment = [datetime(2026, 3, 1, tzinfo=UTC)]
    audit = AuditLog(tmp_path, clock=lambda: moment[0], retention_days=1)
    for day in range(4):
        audit.append({"type": "agent.turn", "event_id": f"d{day}"})
        moment[0] += timedelta(days=1)
    audit.close()
    report = verify_files(collect_files([tmp_path]), load_public_key(tmp_path / "audit-signing.pub"))
    assert report.intact and report.anchored_by_retention


def test_retention_record_not_yet_signed_does_not_excuse_a_missing_start(tmp_path: Path) -> None:
    """With the key, the record that names the removed files counts only once a checkpoint signs it:
    otherwise it could have been written along with a fabricated chain."""
    moment = [datetime(2026, 3, 1, tzinfo=UTC)]
    audit = AuditLog(tmp_path, clock=lambda: moment[0], retention_days=1)
    for day in range(4):
        audit.append({"type": "agent.turn", "event_id": f"d{day}"})
        moment[0] += timedelta(days=1)
    audit.close()
    newest = collect_files([tmp_path])[-1]
    content = lines(newest)
    assert json.loads(content[-1])["type"] == "audit.checkpoint"
    rewrite(newest, content[:-1])
    assert verify_files(collect_files([tmp_path]), None).intact
    report = verify_files(collect_files([tmp_path]), load_public_key(tmp_path / "audit-signing.pub"))
    assert report.first_break is not None
    assert "not covered by a signed checkpoint" in report.first_break.reason


def test_pubkey_command_exports_the_public_key(audit_dir: Path, tmp_path: Path) -> None:
    """`audit pubkey --out` writes the PEM that verifies the checkpoints."""
    parser = argparse.ArgumentParser()
    add_pubkey_arguments(parser)
    out = tmp_path / "exported.pub"
    assert run_pubkey(parser.parse_args(["--audit", str(audit_dir), "--out", str(out)])) == 0
    assert out.read_bytes() == (audit_dir / "audit-signing.pub").read_bytes()


FINAL_CHECKPOINT = "2026-03-03T09:11:00Z"
"""When the fixture's log was closed (its last checkpoint)."""


def cut_tail(directory: Path, keep: int) -> None:
    """What an attacker with write access does: drop the last records of the newest file."""
    rewrite(directory / DAY_THREE, lines(directory / DAY_THREE)[:keep])


def test_signed_through_is_reported(audit_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The summary says up to when the log is signed."""
    assert verify(audit_dir, "--require-signed-through", FINAL_CHECKPOINT) == 0
    output = capsys.readouterr().out
    assert "signed through 2026-03-03T09:11:00.000Z" in output
    assert "nothing written before it was cut" in output


@pytest.mark.parametrize(
    "keep", [5, 4, 2, 0], ids=["last-checkpoint", "checkpoint-and-records", "more", "day"]
)
def test_cut_tail_fails_when_signed_through_is_required(
    audit_dir: Path, keep: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cut tail still chains, so plain verify passes; requiring the time the log was last known
    signed exposes it."""
    cut_tail(audit_dir, keep)
    assert verify(audit_dir, "--pubkey", str(audit_dir / "audit-signing.pub")) == 0
    assert verify(audit_dir, "--require-signed-through", FINAL_CHECKPOINT) == 1
    assert "NOT SIGNED THROUGH 2026-03-03T09:11:00.000Z" in capsys.readouterr().out


def test_dropped_newest_file_fails_when_signed_through_is_required(audit_dir: Path) -> None:
    """Deleting the whole last day is a cut tail too."""
    (audit_dir / DAY_THREE).unlink()
    assert verify(audit_dir, "--require-signed-through", FINAL_CHECKPOINT) == 1


def test_unsigned_tail_is_reported(audit_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Records after the last checkpoint are counted and dated: nothing proves what followed them."""
    cut_tail(audit_dir, 4)
    assert verify(audit_dir) == 0
    output = capsys.readouterr().out
    assert "unsigned tail: 2 records since 2026-03-03T09:09:00.000Z" in output


def test_old_checkpoint_replayed_at_the_end_is_named(audit_dir: Path) -> None:
    """A genuine signed checkpoint copied to the end does not chain there."""
    old_checkpoint = lines(audit_dir / DAY_ONE)[3]
    assert json.loads(old_checkpoint)["type"] == "audit.checkpoint"
    cut_tail(audit_dir, 3)
    rewrite(audit_dir / DAY_THREE, [*lines(audit_dir / DAY_THREE), old_checkpoint])
    assert first_break(audit_dir)[:2] == (DAY_THREE, 4)


def test_files_renamed_out_of_order_are_named(audit_dir: Path) -> None:
    """Swapping two days' files breaks the chain where the first one starts."""
    (audit_dir / DAY_ONE).rename(audit_dir / "swap")
    (audit_dir / DAY_TWO).rename(audit_dir / DAY_ONE)
    (audit_dir / "swap").rename(audit_dir / DAY_TWO)
    assert first_break(audit_dir)[0] == DAY_ONE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-04T09:00:00Z", datetime(2026, 3, 4, 9, tzinfo=UTC)),
        ("2026-03-04T09:00:00", datetime(2026, 3, 4, 9, tzinfo=UTC)),
        ("2026-03-04T10:00:00+01:00", datetime(2026, 3, 4, 9, tzinfo=UTC)),
        ("10m", datetime(2026, 3, 4, 8, 50, tzinfo=UTC)),
        ("1d", datetime(2026, 3, 3, 9, tzinfo=UTC)),
    ],
)
def test_required_time_is_iso_or_an_age(text: str, expected: datetime) -> None:
    """--require-signed-through takes an ISO time (UTC when unzoned) or an age."""
    assert parse_moment(text, datetime(2026, 3, 4, 9, tzinfo=UTC)) == expected


def test_required_time_needs_a_key_and_a_valid_time(
    audit_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a public key a signature proves nothing, and a bad time is a usage error."""
    assert verify(audit_dir, "--require-signed-through", "yesterday") == 2
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in audit_dir.glob("*.jsonl"):
        (copy / path.name).write_bytes(path.read_bytes())
    assert verify(copy, "--require-signed-through", "1h") == 2
    assert "needs the public key" in capsys.readouterr().err


def test_gaps_are_counted_in_the_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """audit.gap records are reported with the number of events they say were lost."""
    audit = AuditLog(tmp_path)
    audit.append({"type": "audit.gap", "dropped": 3})
    audit.append({"type": "audit.gap", "dropped": 2, "spooled": 4})
    audit.close()
    assert verify(tmp_path) == 0
    assert "gaps: 2 audit.gap records, 5 events lost in outages" in capsys.readouterr().out


def spool_of(directory: Path, spool: Path, *, counted: int = 0) -> None:
    """The spool a proxy with this log's key leaves: its count signed when opened, then ``counted``
    events acknowledged that could be neither written nor spooled."""
    key = load_or_create_signing_key(directory / "audit-signing.key")
    Spool(spool, key).close()
    if counted:
        (spool / "unrecorded.count").write_bytes(count_line(2, counted, key))


def test_an_empty_spool_with_its_count_signed_verifies(
    audit_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The count the proxy leaves carries the log's signature and says nothing is missing."""
    spool = tmp_path / "spool"
    spool_of(audit_dir, spool)
    assert verify(audit_dir, "--spool", str(spool)) == 0
    assert "spool: empty, its count signed" in capsys.readouterr().out


@pytest.mark.parametrize("forged", [b"0\n", b"0 " + b"A" * 88 + b"\n", b""])
def test_a_count_without_the_log_s_signature_fails(
    audit_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], forged: bytes
) -> None:
    """A count zeroed, lowered or emptied by whoever lacks the key is named as forged."""
    spool = tmp_path / "spool"
    spool_of(audit_dir, spool, counted=3)
    (spool / "unrecorded.count").write_bytes(forged)
    assert verify(audit_dir, "--spool", str(spool)) == 1
    assert "SPOOL COUNT FORGED" in capsys.readouterr().out


def test_events_counted_but_not_written_make_the_log_not_whole(
    audit_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Acknowledged events that only reached the count are reported until the proxy records them."""
    spool = tmp_path / "spool"
    spool_of(audit_dir, spool, counted=2)
    assert verify(audit_dir, "--spool", str(spool)) == 1
    assert "NOT WHOLE: 0 events wait in the spool and 2 were acknowledged" in capsys.readouterr().out
