"""The audit log: daily files, one chain across them, checkpoints, retention, crash and disk errors."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.audit.heads import StoredCountWitness
from proxy.audit.keys import load_or_create_signing_key, load_public_key, sign, signature_valid
from proxy.audit.log import (
    CHECKPOINT,
    GENESIS,
    AuditLog,
    AuditUnavailable,
    canonical_json,
    checkpoint_message,
    daily_file_name,
    hashed_line,
    record_hash,
)
from proxy.audit.spool import Spool, read_count
from proxy.audit.verify import collect_files, verify_files
from proxy.state import SqliteStateStore


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def turn(number: int) -> dict[str, Any]:
    return {"type": "agent.turn", "event_id": f"e{number}", "agent_id": "bot", "findings": []}


def records(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in collect_files([directory]) for line in path.read_text().splitlines()]


def names(directory: Path) -> list[str]:
    """Each record's event id, or its type for the log's own records."""
    return [record.get("event_id", record["type"]) for record in records(directory)]


def intact(directory: Path) -> bool:
    return verify_files(collect_files([directory]), load_public_key(directory / "audit-signing.pub")).intact


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_append_returns_the_chained_record(tmp_path: Path, clock: Clock) -> None:
    """The first record chains to genesis and its hash covers everything but the hash."""
    audit = AuditLog(tmp_path, clock=clock)
    record = audit.append(turn(1))
    assert record["prev_hash"] == GENESIS
    assert record["hash"] == record_hash(record)
    assert record["ts"] == "2026-03-01T12:00:00.000Z"
    assert records(tmp_path) == [record]


@pytest.mark.parametrize("signing", ["checkpoint", "tick"])
def test_a_record_appended_after_a_checkpoint_is_returned_as_written(
    tmp_path: Path, clock: Clock, signing: str
) -> None:
    """The record handed on (to the alert router, the turn's log line) chains to the checkpoint written
    before it, as its line does, whether the checkpoint was asked for or came due by time."""
    audit = AuditLog(tmp_path, clock=clock, checkpoint_seconds=1)
    audit.append(turn(1))
    if signing == "checkpoint":
        audit.checkpoint()
    else:
        clock.advance(seconds=2)
        audit.tick()
    record = audit.append(turn(2))
    assert records(tmp_path)[-1] == record
    assert records(tmp_path)[-2]["type"] == CHECKPOINT


def test_chain_continues_across_daily_files(tmp_path: Path, clock: Clock) -> None:
    """A new day's file starts from the last hash of the day before."""
    audit = AuditLog(tmp_path, clock=clock)
    last_of_day_one = audit.append(turn(1))
    clock.advance(days=1)
    first_of_day_two = audit.append(turn(2))
    assert sorted(path.name for path in tmp_path.glob("audit-*.jsonl")) == [
        "audit-2026-03-01.jsonl",
        "audit-2026-03-02.jsonl",
    ]
    assert first_of_day_two["prev_hash"] == last_of_day_one["hash"]


def test_reopened_log_continues_the_chain(tmp_path: Path, clock: Clock) -> None:
    """A restart picks the chain up from the last record on disk."""
    first = AuditLog(tmp_path, clock=clock, checkpoint_every=100).append(turn(1))
    second = AuditLog(tmp_path, clock=clock, checkpoint_every=100).append(turn(2))
    assert second["prev_hash"] == first["hash"]


def test_signed_checkpoint_every_n_records(tmp_path: Path, clock: Clock) -> None:
    """Every N records a checkpoint covering the chain so far is signed with the log's key."""
    audit = AuditLog(tmp_path, clock=clock, checkpoint_every=2)
    audit.append(turn(1))
    second = audit.append(turn(2))
    checkpoint = records(tmp_path)[2]
    assert checkpoint["type"] == "audit.checkpoint"
    assert checkpoint["covers"] == checkpoint["prev_hash"] == second["hash"]
    assert checkpoint["records"] == 2
    public_key = load_public_key(tmp_path / "audit-signing.pub")
    assert signature_valid(public_key, checkpoint_message(checkpoint), checkpoint["signature"])


def test_close_writes_a_final_checkpoint(tmp_path: Path, clock: Clock) -> None:
    """Closing signs whatever was appended since the last checkpoint."""
    audit = AuditLog(tmp_path, clock=clock)
    audit.append(turn(1))
    audit.close()
    assert [record["type"] for record in records(tmp_path)] == ["agent.turn", "audit.checkpoint"]


def test_signing_key_is_private_and_public_half_exported(tmp_path: Path, clock: Clock) -> None:
    """The private key file is mode 0600 and the public key sits beside it as PEM."""
    AuditLog(tmp_path, clock=clock)
    assert stat.S_IMODE((tmp_path / "audit-signing.key").stat().st_mode) == 0o600
    assert (tmp_path / "audit-signing.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")


def test_retention_removes_old_files_and_records_their_last_hash(tmp_path: Path, clock: Clock) -> None:
    """Files older than retention_days go, and the chain says which and where they ended."""
    audit = AuditLog(tmp_path, clock=clock, retention_days=2)
    audit.append(turn(1))
    clock.advance(days=1)
    last_removed = audit.append(turn(2))
    clock.advance(days=3)
    audit.append(turn(3))
    audit.close()
    assert not (tmp_path / "audit-2026-03-01.jsonl").exists()
    assert not (tmp_path / "audit-2026-03-02.jsonl").exists()
    retention = next(record for record in records(tmp_path) if record["type"] == "audit.retention")
    assert retention["removed"][-1] == {"file": "audit-2026-03-02.jsonl", "last_hash": last_removed["hash"]}
    assert intact(tmp_path)


def test_partial_last_line_is_moved_aside_and_chain_resumes(tmp_path: Path, clock: Clock) -> None:
    """A line cut by a crash goes to a .partial file, is reported, and appending continues the chain."""
    audit = AuditLog(tmp_path, clock=clock)
    kept = audit.append(turn(1))
    day_file = tmp_path / "audit-2026-03-01.jsonl"
    with day_file.open("a") as sink:
        sink.write('{"type":"agent.turn","event_id":"e2","ag')
    reopened = AuditLog(tmp_path, clock=clock)
    assert [recovery.size for recovery in reopened.recovered] == [
        len('{"type":"agent.turn","event_id":"e2","ag')
    ]
    assert (tmp_path / "audit-2026-03-01.jsonl.partial").read_text().startswith('{"type":"agent.turn"')
    recovery = records(tmp_path)[1]
    assert recovery["type"] == "audit.recovery" and recovery["prev_hash"] == kept["hash"]
    reopened.append(turn(3))
    assert intact(tmp_path)


def break_directory(directory: Path) -> None:
    """Make the log's directory unwritable even for root: a file takes its place."""
    shutil.move(directory, directory.with_name("moved"))
    directory.write_text("not a directory")


def restore_directory(directory: Path) -> None:
    directory.unlink()
    shutil.move(directory.with_name("moved"), directory)


def test_unwritable_directory_buffers_events_when_open(tmp_path: Path, clock: Clock) -> None:
    """With on_error open, append never raises; buffered events land in order once the disk is back."""
    directory = tmp_path / "audit"
    reasons: list[str] = []
    audit = AuditLog(directory, clock=clock, on_unavailable=reasons.append)
    audit.append(turn(1))
    break_directory(directory)
    provisional = audit.append(turn(2))
    audit.append(turn(3))
    assert not audit.available and audit.buffered == 2
    assert len(reasons) == 1
    restore_directory(directory)
    audit.append(turn(4))
    assert audit.available and audit.buffered == 0
    written = records(directory)
    assert [record["event_id"] for record in written] == ["e1", "e2", "e3", "e4"]
    assert written[1]["hash"] == provisional["hash"]
    assert intact(directory)


def test_full_disk_raises_audit_unavailable_when_closed(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With on_error closed, a disk error surfaces as AuditUnavailable and nothing is half-written."""
    audit = AuditLog(tmp_path, clock=clock, on_error="closed")
    audit.append(turn(1))

    def disk_full(path: Path, line: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(audit, "_write_line", disk_full)
    with pytest.raises(AuditUnavailable, match="No space left on device"):
        audit.append(turn(2))
    assert audit.buffered == 0
    monkeypatch.undo()
    audit.append(turn(3))
    assert [record["event_id"] for record in records(tmp_path)] == ["e1", "e3"]
    assert intact(tmp_path)


def test_buffer_overflow_is_recorded_as_a_gap(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events beyond the memory bound are dropped, and the chain says how many."""
    audit = AuditLog(tmp_path, clock=clock, max_buffered=2)

    def disk_full(path: Path, line: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(audit, "_write_line", disk_full)
    for number in range(1, 6):
        audit.append(turn(number))
    monkeypatch.undo()
    audit.append(turn(6))
    written = records(tmp_path)
    assert [record.get("event_id", record["type"]) for record in written] == ["audit.gap", "e4", "e5", "e6"]
    assert written[0]["dropped"] == 3
    assert audit.dropped_total == 3
    assert intact(tmp_path)


def test_checkpoint_count_carries_across_restarts(tmp_path: Path, clock: Clock) -> None:
    """Records a previous run left unsigned count towards the next checkpoint."""
    first = AuditLog(tmp_path, clock=clock, checkpoint_every=3)
    first.append(turn(1))
    first.append(turn(2))
    AuditLog(tmp_path, clock=clock, checkpoint_every=3).append(turn(3))
    checkpoint = records(tmp_path)[-1]
    assert checkpoint["type"] == "audit.checkpoint" and checkpoint["records"] == 3


def test_checkpoint_signed_once_the_oldest_unsigned_record_is_old_enough(
    tmp_path: Path, clock: Clock
) -> None:
    """With checkpoint_seconds, no record stays unsigned longer than that (plus a timer tick)."""
    audit = AuditLog(tmp_path, clock=clock, checkpoint_seconds=5)
    audit.append(turn(1))
    clock.advance(seconds=4)
    audit.append(turn(2))
    audit.tick()
    assert [record["type"] for record in records(tmp_path)] == ["agent.turn", "agent.turn"]
    clock.advance(seconds=1)
    audit.tick()
    checkpoint = records(tmp_path)[-1]
    assert checkpoint["type"] == "audit.checkpoint" and checkpoint["records"] == 2
    audit.tick()
    assert len(records(tmp_path)) == 3
    audit.close()


def test_idle_log_signs_a_heartbeat_checkpoint(tmp_path: Path, clock: Clock) -> None:
    """An idle log still signs now and then, so a tail cut from a quiet log shows by its time."""
    audit = AuditLog(tmp_path, clock=clock, heartbeat_seconds=3600)
    clock.advance(seconds=3599)
    audit.tick()
    assert records(tmp_path) == []
    clock.advance(seconds=1)
    audit.tick()
    assert [(record["type"], record["records"]) for record in records(tmp_path)] == [("audit.checkpoint", 0)]
    audit.close()


def test_unsigned_tail_of_a_crashed_run_is_signed_on_the_first_tick(tmp_path: Path, clock: Clock) -> None:
    """A run killed before its checkpoint leaves records the next run signs as soon as it can."""
    AuditLog(tmp_path, clock=clock).append(turn(1))  # never closed: as if killed
    reopened = AuditLog(tmp_path, clock=clock, checkpoint_seconds=5)
    clock.advance(seconds=5)
    reopened.tick()
    assert [record["type"] for record in records(tmp_path)] == ["agent.turn", "audit.checkpoint"]
    assert records(tmp_path)[-1]["records"] == 1
    reopened.close()


def test_timer_thread_signs_without_further_writes(tmp_path: Path) -> None:
    """The checkpoint thread runs on the wall clock: a record is signed within seconds, unprompted."""
    audit = AuditLog(tmp_path, checkpoint_seconds=0.2)
    audit.append(turn(1))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(records(tmp_path)) < 2:
        time.sleep(0.05)
    assert [record["type"] for record in records(tmp_path)] == ["agent.turn", "audit.checkpoint"]
    audit.close()


def test_events_spooled_during_an_outage_reach_the_log_after_a_crash(tmp_path: Path, clock: Clock) -> None:
    """Acknowledged while the log's directory was gone, then the process died: the next start writes
    them from the spool after a gap record saying so, and the chain verifies."""
    directory, spool = tmp_path / "audit", tmp_path / "spool"
    audit = AuditLog(directory, clock=clock, spool=spool)
    audit.append(turn(1))
    break_directory(directory)
    audit.append(turn(2))
    audit.append(turn(3))
    restore_directory(directory)
    del audit  # killed: never closed, never drained
    AuditLog(directory, clock=clock, spool=spool).close()
    written = records(directory)
    assert names(directory) == ["e1", "audit.gap", "e2", "e3", "audit.checkpoint"]
    assert written[1]["spooled"] == 2 and written[1]["dropped"] == 0
    assert intact(directory)
    assert (spool / "spool.jsonl").read_bytes() == b""


def test_spool_is_emptied_when_the_disk_comes_back(tmp_path: Path, clock: Clock) -> None:
    """Events drained from memory once the disk returns are not written again at the next start."""
    directory, spool = tmp_path / "audit", tmp_path / "spool"
    audit = AuditLog(directory, clock=clock, spool=spool)
    break_directory(directory)
    audit.append(turn(1))
    restore_directory(directory)
    audit.append(turn(2))
    AuditLog(directory, clock=clock, spool=spool).close()
    assert names(directory) == ["e1", "e2", "audit.checkpoint"]


def left_behind(directory: Path, spool: Path, *events: dict[str, Any]) -> None:
    """Spool ``events`` as a run holding the log's key would have."""
    held = Spool(spool, load_or_create_signing_key(directory / "audit-signing.key"))
    for event in events:
        held.hold(event)
    held.close()


def test_forged_spool_lines_are_counted_not_written(tmp_path: Path, clock: Clock) -> None:
    """Whoever can write the spool but lacks the key cannot get events into the signed chain: lines
    without a valid MAC are counted as lost."""
    directory, spool = tmp_path / "audit", tmp_path / "spool"
    AuditLog(directory, clock=clock, spool=spool).append(turn(1))
    forged = json.dumps({**turn(9), "ts": "x"}, sort_keys=True)
    with (spool / "spool.jsonl").open("a") as sink:
        sink.write(json.dumps({"event": forged, "mac": "0" * 64}) + "\n")
        sink.write(forged + "\n")
    left_behind(directory, spool, {**turn(2), "ts": "y"})
    AuditLog(directory, clock=clock, spool=spool).close()
    assert names(directory) == ["e1", "audit.gap", "e2", "audit.checkpoint"]
    assert (records(directory)[1]["dropped"], records(directory)[1]["spooled"]) == (2, 1)


def test_spooled_events_already_in_the_log_are_not_written_twice(tmp_path: Path, clock: Clock) -> None:
    """A crash between draining the buffer and emptying the spool leaves events in both: one copy is kept."""
    directory, spool = tmp_path / "audit", tmp_path / "spool"
    audit = AuditLog(directory, clock=clock, spool=spool)
    audit.append(turn(1))
    left_behind(directory, spool, {**turn(1), "ts": records(directory)[0]["ts"]}, {**turn(2), "ts": "x"})
    AuditLog(directory, clock=clock, spool=spool).close()
    assert names(directory) == ["e1", "audit.gap", "e2", "audit.checkpoint"]
    assert records(directory)[1]["spooled"] == 1


def test_spool_holding_only_written_events_leaves_no_gap(tmp_path: Path, clock: Clock) -> None:
    """A crash after the buffer was written but before the spool was emptied lost nothing: no gap."""
    directory, spool = tmp_path / "audit", tmp_path / "spool"
    AuditLog(directory, clock=clock, spool=spool).append(turn(1))
    left_behind(directory, spool, {**turn(1), "ts": records(directory)[0]["ts"]})
    AuditLog(directory, clock=clock, spool=spool).close()
    assert names(directory) == ["e1", "audit.checkpoint"]
    assert (spool / "spool.jsonl").read_bytes() == b""


def test_a_count_not_signed_by_the_log_s_key_is_recorded_as_such(tmp_path: Path, clock: Clock) -> None:
    """A count zeroed by whoever lacks the key leaves a gap record saying the count was forged."""
    directory, spool = tmp_path / "audit", tmp_path / "spool"
    AuditLog(directory, clock=clock, spool=spool).append(turn(1))
    (spool / "unrecorded.count").write_bytes(b"0".ljust(159) + b"\n")
    AuditLog(directory, clock=clock, spool=spool).close()
    (gap,) = [record for record in records(directory) if record["type"] == "audit.gap"]
    assert "not signed by this log's key" in gap["reason"]


def witnessed_spool(spool: Path, key_dir: Path, store: SqliteStateStore) -> Spool:
    witness = StoredCountWitness(store, lambda: "writer-1")
    return Spool(spool, load_or_create_signing_key(key_dir / "audit-signing.key"), witness)


def test_a_signed_count_put_back_over_a_newer_one_is_found_out(tmp_path: Path) -> None:
    """Every count written raises its sequence and goes to the witness too: the log's own older count,
    copied back over the newer one, or a spool emptied altogether, is older than the witness's."""
    store = SqliteStateStore(None)
    spool = tmp_path / "spool"
    held = witnessed_spool(spool, tmp_path, store)
    older = (spool / "unrecorded.count").read_bytes()
    held.release()
    held.close()
    reopened = witnessed_spool(spool, tmp_path, store)
    assert not reopened.count_replayed
    reopened.close()
    (spool / "unrecorded.count").write_bytes(older)
    replayed = witnessed_spool(spool, tmp_path, store)
    assert replayed.count_replayed and replayed.count_signed
    assert replayed.sequence > read_count(older, None).sequence
    replayed.close()
    shutil.rmtree(spool)
    assert witnessed_spool(spool, tmp_path, store).count_replayed


def test_a_count_written_before_counts_had_a_sequence_still_verifies(tmp_path: Path) -> None:
    """A count line an earlier version signed reads as sequence 0, its signature still checked."""
    key = load_or_create_signing_key(tmp_path / "audit-signing.key")
    legacy = f"4 {sign(key, b'egressguard audit unrecorded count' + bytes([0]) + b'4')}".encode()
    assert read_count(legacy, key.public_key()) == (4, True, 0)
    assert read_count(legacy.replace(b"4 ", b"0 ", 1), key.public_key()).signed is False


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@given(st.dictionaries(st.text(max_size=12).filter(lambda key: key != "hash"), JSON_VALUES, max_size=8))
def test_a_record_is_hashed_and_written_from_one_encoding(record: dict[str, Any]) -> None:
    """The line written is the canonical JSON of the record with its hash, and the hash is the one
    verification recomputes, whichever keys sort before or after ``hash`` (none, all, unicode ones)."""
    digest, line = hashed_line(record)
    assert digest == record_hash({**record, "hash": digest})
    assert line == canonical_json({**record, "hash": digest})


HASH_STAND_IN = "#" * 64


@given(
    st.dictionaries(
        st.sampled_from(["", "a", "event_id", "hash2", "prev_hash", HASH_STAND_IN, "z"]),
        st.sampled_from([HASH_STAND_IN, HASH_STAND_IN * 2, f"x{HASH_STAND_IN}", {"hash": HASH_STAND_IN}])
        | JSON_VALUES,
        max_size=5,
    )
)
def test_a_record_holding_the_hash_stand_in_is_hashed_and_written_as_any(record: dict[str, Any]) -> None:
    """A record whose texts or keys hold what the encoding writes in the hash's place before it is known
    (an agent's id, a path, a nested ``hash``), or that has no key sorting before ``hash``, is hashed and
    written as the canonical JSON says all the same."""
    digest, line = hashed_line(record)
    assert digest == record_hash({**record, "hash": digest})
    assert line == canonical_json({**record, "hash": digest})


def test_batch_syncs_leave_the_appending_thread_and_a_checkpoint_syncs_what_they_left(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full batch's fsync runs on the log's sync thread, never on the thread that appends (the proxy's
    event loop); every file written before a checkpoint is synced before the checkpoint call returns."""
    synced_on: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(descriptor: int) -> None:
        synced_on.append(threading.current_thread().name)
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    audit = AuditLog(tmp_path, clock=clock, fsync="batch", fsync_batch=5, checkpoint_every=1000)
    for number in range(23):
        audit.append(turn(number))
    deadline = time.monotonic() + 10
    while synced_on.count("audit-sync") < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "audit-sync" in synced_on
    assert threading.current_thread().name not in synced_on
    before = len(synced_on)
    audit.checkpoint()
    # The checkpoint's own sync, on the caller's thread (a batch sync still queued may follow it).
    assert threading.current_thread().name in synced_on[before:]
    audit.close()
    assert intact(tmp_path)
    assert names(tmp_path).count("audit.checkpoint") == 1


def test_a_batch_handed_to_the_sync_thread_may_lose_its_file_to_age(tmp_path: Path, clock: Clock) -> None:
    """A file removed for age before its sync is skipped, by the sync thread and by a checkpoint."""
    audit = AuditLog(tmp_path, clock=clock, fsync="batch", fsync_batch=1, retention_days=1)
    audit.append(turn(1))
    clock.advance(days=3)
    audit.append(turn(2))
    audit.checkpoint()
    audit.close()
    assert intact(tmp_path)
    assert "e2" in names(tmp_path)


def wait_for(condition: Any) -> None:
    deadline = time.monotonic() + 10
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_checkpoint_reached_by_appending_is_published_after_its_sync_off_the_appending_thread(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The head a checkpoint publishes is published only once everything it covers is synced, and both
    happen on the sync thread, not on the thread that appended (the proxy's event loop)."""
    steps: list[tuple[str, str]] = []
    real_fsync = os.fsync

    def recording_fsync(descriptor: int) -> None:
        real_fsync(descriptor)
        steps.append(("sync", threading.current_thread().name))

    def publish(record: dict[str, Any]) -> None:
        steps.append(("publish " + record["covers"], threading.current_thread().name))

    monkeypatch.setattr(os, "fsync", recording_fsync)
    audit = AuditLog(
        tmp_path, clock=clock, fsync="batch", fsync_batch=1000, checkpoint_every=7, on_checkpoint=publish
    )
    for number in range(7):
        audit.append(turn(number))
    wait_for(lambda: any(step.startswith("publish") for step, _ in steps))
    covered = records(tmp_path)[-2]["hash"]
    assert steps == [("sync", "audit-sync"), ("publish " + covered, "audit-sync")]
    audit.close()
    assert intact(tmp_path)


def test_a_sync_the_disk_refuses_is_an_outage_and_publishes_no_head(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    outages: list[str] = []
    published: list[dict[str, Any]] = []
    real_fsync = os.fsync

    def failing_on_the_sync_thread(descriptor: int) -> None:
        if threading.current_thread().name == "audit-sync":
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", failing_on_the_sync_thread)
    audit = AuditLog(
        tmp_path,
        clock=clock,
        fsync="batch",
        checkpoint_every=3,
        on_checkpoint=published.append,
        on_unavailable=outages.append,
    )
    for number in range(3):
        audit.append(turn(number))
    wait_for(lambda: bool(outages))
    assert outages and "Input/output error" in outages[0]
    assert published == []
    audit.append(turn(3))  # the disk takes writes again: the log goes on
    audit.close()
    assert audit.available
    assert [record["type"] for record in published] == ["audit.checkpoint"]
    assert intact(tmp_path)


def test_each_record_is_on_disk_when_append_returns(tmp_path: Path, clock: Clock) -> None:
    """The file stays open between records, but nothing is held back in the process: what ``append``
    returned is in the file for any other reader (and for the next start after a crash)."""
    audit = AuditLog(tmp_path, clock=clock)
    for number in range(1, 4):
        audit.append(turn(number))
        assert names(tmp_path)[-1] == f"e{number}"
    recovered = AuditLog(tmp_path, clock=clock)  # a second start without the first's close
    recovered.append(turn(4))
    assert names(tmp_path) == ["e1", "e2", "e3", "e4"]
    assert intact(tmp_path)


@pytest.mark.parametrize("how", ["moved", "removed"])
def test_a_file_moved_or_removed_while_open_is_written_anew(tmp_path: Path, clock: Clock, how: str) -> None:
    """A daily file an operator moves or removes while the log runs is not written behind its back: the
    next record goes to a new file under the day's name, as when every record opened the file."""
    audit = AuditLog(tmp_path, clock=clock)
    audit.append(turn(1))
    (today,) = tmp_path.glob("audit-*.jsonl")
    if how == "moved":
        today.rename(tmp_path / "elsewhere.jsonl")
    else:
        today.unlink()
    audit.append(turn(2))
    assert [json.loads(line)["event_id"] for line in today.read_text().splitlines()] == ["e2"]
    if how == "moved":
        assert [
            json.loads(line)["event_id"] for line in (tmp_path / "elsewhere.jsonl").read_text().splitlines()
        ] == ["e1"]


def test_a_new_day_writes_to_its_own_file(tmp_path: Path, clock: Clock) -> None:
    audit = AuditLog(tmp_path, clock=clock)
    audit.append(turn(1))
    clock.advance(days=1)
    audit.append(turn(2))
    audit.close()
    files = sorted(tmp_path.glob("audit-*.jsonl"))
    assert len(files) == 2
    assert [json.loads(line).get("event_id") for line in files[1].read_text().splitlines()][:1] == ["e2"]
    assert intact(tmp_path)


@given(
    start=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
    ),
    steps=st.lists(st.integers(min_value=-200_000, max_value=200_000), max_size=12),
    offset=st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_the_day_of_each_line_is_the_clock_s_utc_day(
    tmp_path_factory: pytest.TempPathFactory, start: datetime, steps: list[int], offset: int
) -> None:
    """The day kept from line to line is the one the clock reads, whichever way and however far it moves,
    and in whatever zone it reads: each line goes to the file of its UTC day."""
    clock = Clock()
    zone = timezone(timedelta(minutes=offset))
    clock.now = start.astimezone(zone)
    directory = tmp_path_factory.mktemp("days")
    audit = AuditLog(directory, clock=clock, retention_days=None)
    for number, seconds in enumerate([0, *steps]):
        clock.advance(seconds=seconds)
        audit.append(turn(number))
        day = clock.now.astimezone(UTC).date()
        assert audit._today() == day
        last = (directory / daily_file_name(day)).read_text().splitlines()[-1]
        assert json.loads(last)["event_id"] == f"e{number}"
    audit.close()


def test_a_short_write_is_taken_back(tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A line the disk took only in part is cut off again, so the file never holds half a record."""
    audit = AuditLog(tmp_path, clock=clock, on_error="closed")
    audit.append(turn(1))
    (today,) = tmp_path.glob("audit-*.jsonl")
    size = today.stat().st_size
    real_write = os.write

    def short_write(descriptor: int, data: bytes) -> int:
        return real_write(descriptor, data[: len(data) // 2])

    monkeypatch.setattr(os, "write", short_write)
    with pytest.raises(AuditUnavailable, match="short write"):
        audit.append(turn(2))
    monkeypatch.undo()
    assert today.stat().st_size == size
    audit.append(turn(3))
    assert names(tmp_path) == ["e1", "e3"]
    assert intact(tmp_path)
