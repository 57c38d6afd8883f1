"""``VerifiedChains``: the dashboard's verification of audit lines, kept per file between views. A file
unchanged is not verified again and one appended to only for its new lines, yet any edit is found, and
checkpoints count only when signed by the key it is given, never one an attacker wrote beside the log."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proxy.audit.keys import key_id, public_key_pem, sign
from proxy.audit.log import CHECKPOINT, AuditLog, canonical_json, checkpoint_message, record_hash
from proxy.audit.verify import INCOMPLETE, NOT_ON_A_LINE, NOT_YET_SIGNED, UNLINKED, VerifiedChains

Wanted = dict[str, Path]


def wanted_of(directory: Path) -> Wanted:
    """Every turn's hash in the files of ``directory``, with the file it is read from."""
    return {
        record["hash"]: path
        for path in sorted(directory.glob("audit-*.jsonl"))
        for line in path.read_bytes().splitlines(keepends=True)
        if line.endswith(b"\n") and (record := json.loads(line)).get("type") == "agent.turn"
    }


def files_of(directory: Path) -> list[Path]:
    return sorted(directory.glob("audit-*.jsonl"))


@pytest.fixture
def moment() -> list[datetime]:
    return [datetime(2026, 3, 1, 9, 0, tzinfo=UTC)]


@pytest.fixture
def audit(tmp_path: Path, moment: list[datetime]) -> AuditLog:
    """Five daily files of 50 turns, a checkpoint every 10 records; the log stays open on the last day."""
    log = AuditLog(tmp_path / "audit", clock=lambda: moment[0], checkpoint_every=10, fsync="always")
    for day in range(5):
        if day:
            moment[0] += timedelta(days=1)
        for number in range(50):
            log.append({"type": "agent.turn", "event_id": f"d{day}-{number}", "decision": "blocked"})
    log.checkpoint()
    return log


def edit(path: Path, event_id: str, *, rehash: bool) -> str:
    """The turn ``event_id`` in ``path`` made allowed in place; its hash after."""
    lines = path.read_bytes().splitlines(keepends=True)
    (index,) = [i for i, line in enumerate(lines) if f'"event_id":"{event_id}"'.encode() in line]
    record = json.loads(lines[index])
    record["decision"] = "allowed"
    if rehash:
        record["hash"] = record_hash(record)
    lines[index] = canonical_json(record).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    return str(record["hash"])


def forge(path: Path, event_id: str, key: Ed25519PrivateKey) -> None:
    """What whoever can write the log can do: the turn ``event_id`` made allowed, every record after it in
    ``path`` chained to it again and every checkpoint signed again with ``key``, whose public half is
    written beside the log where the signing key's was."""
    lines = path.read_bytes().splitlines()
    records = [json.loads(line) for line in lines]
    (start,) = [i for i, record in enumerate(records) if record.get("event_id") == event_id]
    records[start]["decision"] = "allowed"
    previous = records[start]["prev_hash"]
    for record in records[start:]:
        record["prev_hash"] = previous
        if record.get("type") == CHECKPOINT:
            record.pop("signature")
            record.pop("hash")
            record.update(covers=previous, key_id=key_id(key.public_key()))
            record["signature"] = sign(key, checkpoint_message(record))
        record["hash"] = previous = record_hash(record)
    path.write_bytes(b"".join(canonical_json(record).encode() + b"\n" for record in records))
    (path.parent / "audit-signing.pub").write_bytes(public_key_pem(key.public_key()))


def test_an_unchanged_window_is_verified_once_and_a_file_appended_to_for_its_new_lines(
    audit: AuditLog, moment: list[datetime]
) -> None:
    directory = audit.directory
    chains = VerifiedChains()
    states = chains.states(files_of(directory), audit.public_key, wanted_of(directory))
    assert len(states) == 250 and set(states.values()) == {None}
    assert chains.verified_whole == 5
    for _ in range(3):
        chains.states(files_of(directory), audit.public_key, wanted_of(directory))
    audit.append({"type": "agent.turn", "event_id": "late", "decision": "allowed"})
    audit.checkpoint()
    states = chains.states(files_of(directory), audit.public_key, wanted_of(directory))
    assert len(states) == 251 and set(states.values()) == {None}
    assert chains.verified_whole == 5


@pytest.mark.parametrize("rehash", [False, True], ids=["edited", "rehashed"])
@pytest.mark.parametrize("day", [0, 4], ids=["an old file", "the file being written"])
def test_an_edit_is_found_though_the_log_goes_on_writing_after_it(
    audit: AuditLog, rehash: bool, day: int
) -> None:
    """A line edited in place (the size kept), its hash left or computed again, while the log appends to
    the same file after it: the edit is named, and the turns before it still verify."""
    directory = audit.directory
    chains = VerifiedChains()
    chains.states(files_of(directory), audit.public_key, wanted_of(directory))
    path = files_of(directory)[day]
    edited = edit(path, f"d{day}-20", rehash=rehash)
    audit.append({"type": "agent.turn", "event_id": "after", "decision": "allowed"})
    states = chains.states(files_of(directory), audit.public_key, wanted_of(directory))
    assert states[edited] == (UNLINKED if rehash else "record does not match its hash (edited)")
    before = [claimed for claimed, found in wanted_of(directory).items() if found < path]
    assert all(states[claimed] is None for claimed in before)


def test_a_log_signed_again_with_another_key_beside_it_is_not_verified(audit: AuditLog) -> None:
    """The key file beside the log replaced along with the log: the checkpoints do not verify with the key
    the log signs with, and the turns from the forged one on say so."""
    directory = audit.directory
    forged_file = files_of(directory)[2]
    forge(forged_file, "d2-5", Ed25519PrivateKey.generate())
    states = chains_states(directory, audit)
    forged = hash_of(forged_file, "d2-5")
    assert "not by the given key" in str(states[forged])
    after = [claimed for claimed, found in wanted_of(directory).items() if found > forged_file]
    assert after and all(states[claimed] is not None for claimed in after)
    kept = [claimed for claimed, found in wanted_of(directory).items() if found < forged_file]
    assert kept and all(states[claimed] is None for claimed in kept)


def test_a_turn_is_verified_only_once_a_signed_checkpoint_covers_it(audit: AuditLog) -> None:
    """A turn after the last checkpoint waits for the next one, which may come in the next day's file."""
    directory = audit.directory
    chains = VerifiedChains()
    audit.append({"type": "agent.turn", "event_id": "fresh", "decision": "allowed"})
    fresh = hash_of(files_of(directory)[-1], "fresh")
    states = chains.states(files_of(directory), audit.public_key, wanted_of(directory))
    assert states[fresh] == NOT_YET_SIGNED
    audit.checkpoint()
    states = chains.states(files_of(directory), audit.public_key, wanted_of(directory))
    assert states[fresh] is None


def hash_of(path: Path, event_id: str) -> str:
    (line,) = [line for line in path.read_bytes().splitlines() if f'"event_id":"{event_id}"'.encode() in line]
    return str(json.loads(line)["hash"])


def chains_states(directory: Path, audit: AuditLog) -> dict[str, str | None]:
    return VerifiedChains().states(files_of(directory), audit.public_key, wanted_of(directory))


@pytest.mark.parametrize(
    "change",
    [
        lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
        lambda path: path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[::-1])),
    ],
    ids=["cut short", "reordered"],
)
def test_a_file_changed_otherwise_is_verified_whole_again(
    audit: AuditLog, change: Callable[[Path], None]
) -> None:
    directory = audit.directory
    chains = VerifiedChains()
    chains.states(files_of(directory), audit.public_key, wanted_of(directory))
    change(files_of(directory)[1])
    states = chains.states(files_of(directory), audit.public_key, wanted_of(directory))
    assert chains.verified_whole > 5
    assert any(state is not None for state in states.values())


def appended(path: Path, record: dict[str, Any], end: bytes = b"") -> str:
    """``record`` written after the last line of ``path`` with ``end`` after it; the hash it claims."""
    with path.open("ab") as target:
        target.write(canonical_json(record).encode() + end)
    return str(record["hash"])


def next_turn(path: Path, event_id: str) -> dict[str, Any]:
    """A turn that follows the last line of ``path`` and matches its hash, as the log writes one."""
    record: dict[str, Any] = {
        "type": "agent.turn",
        "event_id": event_id,
        "decision": "allowed",
        "prev_hash": json.loads(path.read_bytes().splitlines()[-1])["hash"],
    }
    return {**record, "hash": record_hash(record)}


FORGED: dict[str, Any] = {
    "type": "agent.turn",
    "event_id": "FORGED",
    "decision": "allowed",
    "prev_hash": "x",
    "hash": "deadbeef",
}


@pytest.mark.parametrize("warm", [False, True], ids=["first view", "a view after one"])
def test_a_line_with_no_end_is_not_verified_whatever_it_claims(audit: AuditLog, warm: bool) -> None:
    """Whoever can write the log appends a turn with no line end: one claiming any hash, or the hash of a
    turn a checkpoint proved (so a view that asks by hash cannot tell the two apart), or one that follows
    the last line as the log's next would. None is verified while its line has no end, and the turn whose
    hash was copied is not either; the one that follows, once its line ends, waits for a checkpoint."""
    directory = audit.directory
    chains = VerifiedChains()
    if warm:
        chains.states(files_of(directory), audit.public_key, wanted_of(directory))
    path = files_of(directory)[-1]
    copied = hash_of(path, "d4-7")
    states = chains.states(
        files_of(directory), audit.public_key, {**wanted_of(directory), appended(path, FORGED): path}
    )
    assert states["deadbeef"] == INCOMPLETE
    path.write_bytes(path.read_bytes().rsplit(b"\n", 1)[0] + b"\n")
    states = chains.states(
        files_of(directory),
        audit.public_key,
        {**wanted_of(directory), appended(path, {**FORGED, "hash": copied}): path},
    )
    assert states[copied] == INCOMPLETE
    assert all(state is None for claimed, state in states.items() if claimed != copied)
    path.write_bytes(path.read_bytes().rsplit(b"\n", 1)[0] + b"\n")
    following = appended(path, next_turn(path, "following"))
    states = chains.states(files_of(directory), audit.public_key, {**wanted_of(directory), following: path})
    assert states[following] == INCOMPLETE
    with path.open("ab") as target:
        target.write(b"\n")
    states = chains.states(files_of(directory), audit.public_key, wanted_of(directory))
    assert states[following] == NOT_YET_SIGNED


def test_a_hash_on_no_line_of_its_file_is_not_verified(audit: AuditLog) -> None:
    """A hash read from no line of the files, and a turn's hash asked of a file it is not in, are named as
    on no line; every turn of the files still verifies."""
    directory = audit.directory
    files = files_of(directory)
    elsewhere = hash_of(files[0], "d0-3")
    wanted = {**wanted_of(directory), "nothere": files[1], "0" * 64: files[-1]}
    states = VerifiedChains().states(files, audit.public_key, {**wanted, elsewhere: files[2]})
    assert states["nothere"] == states["0" * 64] == states[elsewhere] == NOT_ON_A_LINE
    assert all(
        state is None for claimed, state in states.items() if claimed not in ("nothere", "0" * 64, elsewhere)
    )


def test_a_line_copying_a_proved_hash_after_a_break_is_not_verified(audit: AuditLog) -> None:
    """After a line that breaks the chain, a whole line claiming the hash of a turn a checkpoint proved
    in an earlier file: whichever file that hash is asked of, it is not verified."""
    directory = audit.directory
    files = files_of(directory)
    copied = hash_of(files[0], "d0-3")
    appended(files[-1], FORGED, b"\n")
    appended(files[-1], {**FORGED, "event_id": "COPY", "hash": copied}, b"\n")
    for mapped in (files[0], files[-1]):
        states = VerifiedChains().states(files, audit.public_key, {**wanted_of(directory), copied: mapped})
        assert states[copied] is not None and states[hash_of(files[0], "d0-4")] is None
