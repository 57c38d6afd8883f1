"""Append-only, hash-chained JSONL audit log in daily files, with signed checkpoints and retention.

Each record carries ``prev_hash`` (the ``hash`` of the record before it, or the genesis value) and
``hash``: sha256 over the record's canonical JSON without ``hash``. The chain runs across the daily
files (``audit-YYYY-MM-DD.jsonl``): a file's first ``prev_hash`` is the last ``hash`` of the file before.
Editing, deleting or reordering any record breaks the chain from that record on.

The log writes records of its own into the same chain:

- ``audit.checkpoint`` every ``checkpoint_every`` records and on close: an Ed25519 signature over the
  checkpoint (whose ``prev_hash`` covers everything before it), so a rewritten chain can be told apart
  from the original by whoever holds the public key;
- ``audit.retention`` naming the files removed for age and their last hash, so verification can start
  from the oldest file that is left;
- ``audit.recovery`` when a partial last line left by a crash was moved aside at start;
- ``audit.gap`` when events were dropped because the disk stayed unwritable longer than the buffer lasts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proxy.audit.keys import PRIVATE_KEY_NAME, key_id, load_or_create_signing_key, sign

GENESIS = "0" * 64
DAILY_FILE = re.compile(r"^audit-(\d{4}-\d{2}-\d{2})\.jsonl$")
CHECKPOINT = "audit.checkpoint"
RETENTION = "audit.retention"
RECOVERY = "audit.recovery"
GAP = "audit.gap"

FsyncPolicy = Literal["always", "batch"]
ErrorPolicy = Literal["open", "closed"]

log = structlog.get_logger("egressguard.audit")


class AuditUnavailable(RuntimeError):
    """The audit log cannot be written and the policy says traffic must stop (``on_error: closed``)."""


@dataclass(frozen=True, slots=True)
class Recovery:
    """A partial last line found at start, moved from ``source`` into ``moved_to``."""

    source: Path
    moved_to: Path
    size: int


def canonical_json(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(record: dict[str, Any]) -> str:
    body = {key: value for key, value in record.items() if key != "hash"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def checkpoint_message(record: dict[str, Any]) -> bytes:
    """What a checkpoint's signature covers: the record without its signature and hash."""
    body = {key: value for key, value in record.items() if key not in ("hash", "signature")}
    return canonical_json(body).encode()


def format_ts(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def daily_file_name(day: date) -> str:
    return f"audit-{day.isoformat()}.jsonl"


def daily_files(directory: Path) -> list[Path]:
    """The directory's daily audit files, oldest first."""
    return sorted(path for path in directory.iterdir() if DAILY_FILE.match(path.name))


def _utc_now() -> datetime:
    return datetime.now(UTC)


class AuditLog:
    """Appends events to ``<directory>/audit-YYYY-MM-DD.jsonl``, continuing the chain already there.

    ``fsync``: ``"always"`` (or True) syncs every record; ``"batch"`` (or False) every ``fsync_batch``
    records, at each checkpoint and on close. ``on_error``: ``"open"`` keeps up to ``max_buffered``
    events in memory while the disk refuses writes, retries them on the next append and calls
    ``on_unavailable(reason)`` once per outage; ``"closed"`` makes ``append`` raise ``AuditUnavailable``.
    The constructor raises ``AuditUnavailable`` if the directory or the signing key cannot be prepared.
    """

    def __init__(
        self,
        directory: Path,
        *,
        fsync: FsyncPolicy | bool = "batch",
        fsync_batch: int = 100,
        checkpoint_every: int = 1000,
        retention_days: int | None = 90,
        on_error: ErrorPolicy = "open",
        max_buffered: int = 10_000,
        key_path: Path | None = None,
        on_unavailable: Callable[[str], None] | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if fsync is True:
            fsync = "always"
        elif fsync is False:
            fsync = "batch"
        if fsync not in ("always", "batch"):
            raise ValueError(f"fsync must be 'always' or 'batch', not {fsync!r}")
        if on_error not in ("open", "closed"):
            raise ValueError(f"on_error must be 'open' or 'closed', not {on_error!r}")
        if checkpoint_every < 1 or fsync_batch < 1 or max_buffered < 1:
            raise ValueError("checkpoint_every, fsync_batch and max_buffered must be at least 1")
        self.directory = directory
        self.fsync: FsyncPolicy = fsync
        self.fsync_batch = fsync_batch
        self.checkpoint_every = checkpoint_every
        self.retention_days = retention_days
        self.on_error: ErrorPolicy = on_error
        self.max_buffered = max_buffered
        self.on_unavailable = on_unavailable
        self.clock = clock
        self.recovered: list[Recovery] = []
        self.dropped_total = 0
        self._lock = threading.Lock()
        self._pending: deque[dict[str, Any]] = deque()
        self._dropped = 0
        self._unavailable: str | None = None
        self._since_checkpoint = 0
        self._unsynced: set[Path] = set()
        self._unsynced_count = 0
        self._day: date | None = None
        try:
            directory.mkdir(parents=True, exist_ok=True)
            signing_key_path = key_path or directory / PRIVATE_KEY_NAME
            self._key: Ed25519PrivateKey = load_or_create_signing_key(signing_key_path)
            self._key_id = key_id(self._key.public_key())
            self._recover_partial_line()
            self._tail_hash = self._find_tail_hash()
        except (OSError, ValueError) as exc:
            raise AuditUnavailable(f"audit log at {directory} cannot be opened: {exc}") from exc
        self._provisional_hash = self._tail_hash
        with self._lock:
            for recovery in self.recovered:
                self._pending.append(
                    {
                        "type": RECOVERY,
                        "ts": format_ts(self.clock()),
                        "file": recovery.source.name,
                        "moved_to": recovery.moved_to.name,
                        "bytes": recovery.size,
                    }
                )
            self._drain_or_hold()

    @property
    def available(self) -> bool:
        """False while the disk refuses writes (events are being buffered or refused)."""
        return self._unavailable is None

    @property
    def buffered(self) -> int:
        return len(self._pending)

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Chain ``event`` and write it as one line; return the record as written.

        While the disk refuses writes (``on_error: open``) the returned record is provisional: its
        hashes are what they will be once written, unless events had to be dropped meanwhile.
        """
        body = dict(event)
        body.setdefault("ts", format_ts(self.clock()))
        with self._lock:
            self._pending.append(body)
            record = self._chain(body, self._provisional_hash)
            self._provisional_hash = record["hash"]
            if self._drain_or_hold():
                return record
            if self.on_error == "closed":
                self._pending.pop()
                self._provisional_hash = self._tail_hash
                raise AuditUnavailable(f"audit log unavailable: {self._unavailable}")
            while len(self._pending) > self.max_buffered:
                self._pending.popleft()
                self._dropped += 1
                self.dropped_total += 1
            return record

    def checkpoint(self) -> None:
        """Write a signed checkpoint now (also done every ``checkpoint_every`` records and on close)."""
        with self._lock:
            if self._drain_or_hold():
                try:
                    self._commit_checkpoint()
                except OSError as exc:
                    self._mark_unavailable(exc)

    def close(self) -> None:
        """Flush what is buffered, sign a final checkpoint and sync the files."""
        with self._lock:
            if not self._drain_or_hold():
                log.error("audit.close_with_buffered_events", buffered=len(self._pending))
                return
            try:
                if self._since_checkpoint:
                    self._commit_checkpoint()
                self._sync()
            except OSError as exc:
                self._mark_unavailable(exc)

    # -- writing ---------------------------------------------------------------------------------------

    def _drain_or_hold(self) -> bool:
        """Write everything pending, in order; on a disk error keep the rest pending and return False."""
        try:
            self._roll_day()
            if self._dropped:
                self._commit({"type": GAP, "ts": format_ts(self.clock()), "dropped": self._dropped})
                self._dropped = 0
            while self._pending:
                self._commit(self._pending[0])
                self._pending.popleft()
                if self._since_checkpoint >= self.checkpoint_every:
                    self._commit_checkpoint()
        except OSError as exc:
            self._mark_unavailable(exc)
            return False
        self._provisional_hash = self._tail_hash
        if self._unavailable is not None:
            log.warning("audit.writable_again", after=self._unavailable)
            self._unavailable = None
        return True

    def _chain(self, body: dict[str, Any], prev_hash: str) -> dict[str, Any]:
        record = {**body, "prev_hash": prev_hash}
        record["hash"] = record_hash(record)
        return record

    def _commit(self, body: dict[str, Any]) -> dict[str, Any]:
        record = self._chain(body, self._tail_hash)
        self._write_line(self.directory / daily_file_name(self._today()), canonical_json(record) + "\n")
        self._tail_hash = record["hash"]
        if record.get("type") != CHECKPOINT:
            self._since_checkpoint += 1
        return record

    def _commit_checkpoint(self) -> None:
        body: dict[str, Any] = {
            "type": CHECKPOINT,
            "ts": format_ts(self.clock()),
            "covers": self._tail_hash,
            "records": self._since_checkpoint,
            "key_id": self._key_id,
            "prev_hash": self._tail_hash,
        }
        body["signature"] = sign(self._key, checkpoint_message(body))
        self._commit(body)
        self._since_checkpoint = 0
        self._sync()

    def _write_line(self, path: Path, line: str) -> None:
        data = line.encode()
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            size_before = os.fstat(descriptor).st_size
            try:
                written = os.write(descriptor, data)
                if written != len(data):
                    raise OSError(f"short write to {path.name}: {written} of {len(data)} bytes")
            except OSError:
                # A half-written line would read as tampering: take it back before giving up.
                os.ftruncate(descriptor, size_before)
                raise
            if self.fsync == "always":
                os.fsync(descriptor)
            else:
                self._unsynced.add(path)
                self._unsynced_count += 1
                if self._unsynced_count >= self.fsync_batch:
                    os.fsync(descriptor)
                    self._unsynced.discard(path)
                    self._sync()
        finally:
            os.close(descriptor)

    def _sync(self) -> None:
        for path in sorted(self._unsynced):
            descriptor = os.open(path, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        self._unsynced.clear()
        self._unsynced_count = 0

    def _mark_unavailable(self, exc: OSError) -> None:
        reason = f"{type(exc).__name__}: {exc.strerror or exc}"
        if self._unavailable is None:
            self._unavailable = reason
            log.error("audit.unwritable", reason=reason, on_error=self.on_error)
            if self.on_unavailable is not None:
                self.on_unavailable(reason)

    def _today(self) -> date:
        return self.clock().astimezone(UTC).date()

    # -- retention -------------------------------------------------------------------------------------

    def _roll_day(self) -> None:
        today = self._today()
        if today == self._day:
            return
        if self.retention_days is not None:
            self._apply_retention(today)
        self._day = today

    def _apply_retention(self, today: date) -> None:
        assert self.retention_days is not None
        oldest_kept = today - timedelta(days=self.retention_days)
        expired = [
            path
            for path in daily_files(self.directory)
            if date.fromisoformat(DAILY_FILE.match(path.name).group(1)) < oldest_kept  # type: ignore[union-attr]
        ]
        if not expired:
            return
        removed = [{"file": path.name, "last_hash": _last_record_hash(path)} for path in expired]
        # Recorded before the files go: a crash in between leaves files the record calls removed,
        # which verifies; the other order could lose the anchor verification starts from.
        self._commit(
            {
                "type": RETENTION,
                "ts": format_ts(self.clock()),
                "retention_days": self.retention_days,
                "removed": removed,
            }
        )
        for path in expired:
            path.unlink(missing_ok=True)
            self._unsynced.discard(path)
        log.info("audit.retention", removed=[entry["file"] for entry in removed])

    # -- start-up --------------------------------------------------------------------------------------

    def _recover_partial_line(self) -> None:
        files = daily_files(self.directory)
        if not files:
            return
        newest = files[-1]
        data = newest.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        partial = data[cut:]
        moved_to = newest.with_name(newest.name + ".partial")
        with moved_to.open("ab") as sink:
            sink.write(partial + b"\n")
        with newest.open("r+b") as source:
            source.truncate(cut)
        self.recovered.append(Recovery(source=newest, moved_to=moved_to, size=len(partial)))
        log.warning("audit.partial_line_moved", file=newest.name, moved_to=moved_to.name, bytes=len(partial))

    def _find_tail_hash(self) -> str:
        for path in reversed(daily_files(self.directory)):
            last = _last_record_hash(path)
            if last is not None:
                return last
        return GENESIS


def _last_record_hash(path: Path) -> str | None:
    """The ``hash`` of the file's last complete line, read from the end."""
    with path.open("rb") as source:
        source.seek(0, os.SEEK_END)
        position = source.tell()
        tail = b""
        while position > 0:
            step = min(1 << 16, position)
            position -= step
            source.seek(position)
            tail = source.read(step) + tail
            lines = [line for line in tail.split(b"\n") if line.strip()]
            complete = lines if position == 0 else lines[1:]
            if complete:
                return str(json.loads(complete[-1])["hash"])
    return None
