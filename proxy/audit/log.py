"""Append-only, hash-chained JSONL audit log in daily files, with signed checkpoints and retention.

Each record carries ``prev_hash`` (the ``hash`` of the record before it, or the genesis value) and
``hash``: sha256 over the record's canonical JSON without ``hash``. The chain runs across the daily
files (``audit-YYYY-MM-DD.jsonl``): a file's first ``prev_hash`` is the last ``hash`` of the file before.
Editing, deleting or reordering any record breaks the chain from that record on.

The log writes records of its own into the same chain:

- ``audit.checkpoint`` every ``checkpoint_every`` records, within ``checkpoint_seconds`` of any record
  written, every ``heartbeat_seconds`` while idle, and on close: an Ed25519 signature over the
  checkpoint (whose ``prev_hash`` covers everything before it), so a rewritten chain can be told apart
  from the original by whoever holds the public key, and a cut tail by the time it was last signed;
- ``audit.retention`` naming the files removed for age and their last hash, so verification can start
  from the oldest file that is left;
- ``audit.recovery`` when a partial last line left by a crash was moved aside at start;
- ``audit.gap`` when events were dropped because the disk stayed unwritable longer than the buffer lasts,
  or when a run that ended during an outage left events in the spool (see ``proxy.audit.spool``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from proxy.audit.keys import PRIVATE_KEY_NAME, key_id, load_or_create_signing_key, sign
from proxy.audit.spool import CountWitness, Spool
from proxy.audit.sync import BackgroundSync, run_after_sync, sync_file

GENESIS = "0" * 64
DAILY_FILE = re.compile(r"audit-(\d{4}-\d{2}-\d{2})\.jsonl\Z")
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


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
"""``json.dumps`` with these options builds an encoder for every call; this one is built once."""


def canonical_json(record: dict[str, Any]) -> str:
    return _CANONICAL.encode(record)


def record_hash(record: dict[str, Any]) -> str:
    body = {key: value for key, value in record.items() if key != "hash"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


_HASH_STAND_IN = "#" * 64
"""Written where the hash goes, then replaced by it: as long as a hex digest, and found once in a line
only where the record's own texts do not hold it."""
_HASH_MEMBER = f',"hash":"{_HASH_STAND_IN}"'


def hashed_line(record: dict[str, Any]) -> tuple[str, str]:
    """``record_hash(record)`` and the canonical line of ``record`` with that hash, from one encoding: the
    line with a stand-in for the hash is the hashed text once that member is taken out, and the stand-in
    is then replaced by the hash. A record whose texts hold the stand-in, or whose first key sorts after
    ``hash``, is encoded in the halves around it (``_hashed_line_in_halves``)."""
    line = canonical_json({**record, "hash": _HASH_STAND_IN})
    if line.count(_HASH_STAND_IN) != 1 or _HASH_MEMBER not in line:
        return _hashed_line_in_halves(record)
    digest = hashlib.sha256(line.replace(_HASH_MEMBER, "", 1).encode()).hexdigest()
    return digest, line.replace(_HASH_STAND_IN, digest, 1)


def _hashed_line_in_halves(record: dict[str, Any]) -> tuple[str, str]:
    """``hashed_line`` from the members that sort before ``hash`` and those after it: keys are written
    sorted, so the line is the hashed text with ``"hash"`` put in its place."""
    before = canonical_json({key: value for key, value in record.items() if key < "hash"})[1:-1]
    after = canonical_json({key: value for key, value in record.items() if key > "hash"})[1:-1]
    digest = hashlib.sha256(_object_of(before, after).encode()).hexdigest()
    return digest, _object_of(before, f'"hash":"{digest}"', after)


def _object_of(*members: str) -> str:
    """A JSON object from the encoded members of others (``canonical_json`` without its braces)."""
    return "{" + ",".join(member for member in members if member) + "}"


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
    records, and before each checkpoint is published, on a thread of its own (``proxy.audit.sync``);
    ``checkpoint()`` and ``close()`` sync and publish on the caller's thread. ``on_error``: ``"open"``
    keeps up to ``max_buffered`` events in memory while the disk refuses writes, retries them on the next
    append and calls ``on_unavailable(reason)`` once per outage (a refused sync is one too);
    ``"closed"`` makes ``append`` raise ``AuditUnavailable``.
    With ``spool`` (a directory away from the log's), events held in memory during an outage are also
    held there, so a crash or stop before the disk returns loses none unrecorded.

    ``checkpoint_seconds`` and ``heartbeat_seconds`` (None: off) start a thread that signs a checkpoint
    once the oldest unsigned record is that old, and once no checkpoint has been signed for that long.
    ``on_checkpoint(record)`` is called with each checkpoint once it is written (to publish the head);
    ``count_witness`` keeps a second copy of the spool's signed count (``proxy.audit.spool``).
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
        spool: Path | None = None,
        checkpoint_seconds: float | None = None,
        heartbeat_seconds: float | None = None,
        on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
        count_witness: CountWitness | None = None,
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
        if any(seconds is not None and seconds <= 0 for seconds in (checkpoint_seconds, heartbeat_seconds)):
            raise ValueError("checkpoint_seconds and heartbeat_seconds must be positive")
        self.directory = directory
        self.fsync: FsyncPolicy = fsync
        self.fsync_batch = fsync_batch
        self.checkpoint_every = checkpoint_every
        self.retention_days = retention_days
        self.on_error: ErrorPolicy = on_error
        self.max_buffered = max_buffered
        self.on_unavailable = on_unavailable
        self.clock = clock
        self.checkpoint_seconds = checkpoint_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.on_checkpoint = on_checkpoint
        self.recovered: list[Recovery] = []
        self.dropped_total = 0
        self._lock = threading.Lock()
        self._pending: deque[dict[str, Any]] = deque()
        self._chained: tuple[dict[str, Any], dict[str, Any], str] | None = None
        """The event ``append`` is writing, with the record it chained and its line, so that writing it
        does not hash or encode it again."""
        self._file: tuple[date, Path] | None = None
        """Today's file, made once a day rather than for every line."""
        self._held: tuple[Path, str, int, tuple[int, int]] | None = None
        """The file lines are appended to, its path as text, its descriptor and its identity (device,
        inode)."""
        self._day_span: tuple[datetime, datetime, date] | None = None
        """The UTC day the clock last read in, from its start to the next one's: a reading within it is
        that day without working the date out."""
        self._dropped = 0
        self._unavailable: str | None = None
        self._since_checkpoint = 0
        self._unsynced: set[Path] = set()
        self._unsynced_count = 0
        self._background_sync = BackgroundSync(self._sync_failed)
        """Syncs each full batch off the writing thread (see ``proxy.audit.sync``)."""
        self._day: date | None = None
        try:
            directory.mkdir(parents=True, exist_ok=True)
            signing_key_path = key_path or directory / PRIVATE_KEY_NAME
            self._key: Ed25519PrivateKey = load_or_create_signing_key(signing_key_path)
            self._key_id = key_id(self._key.public_key())
            self._recover_partial_line()
            self._tail_hash, self._since_checkpoint, last_checkpoint = self._find_tail()
            self._spool = Spool(spool, self._key, count_witness) if spool is not None else None
        except (OSError, ValueError) as exc:
            raise AuditUnavailable(f"audit log at {directory} cannot be opened: {exc}") from exc
        self._provisional_hash = self._tail_hash
        started = self.clock()
        self._last_checkpoint_at = last_checkpoint or started
        # Records a previous run left unsigned are signed as soon as the timer first looks.
        self._unsigned_since: datetime | None = started if self._since_checkpoint else None
        with self._lock:
            self._take_spool()
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
            if not self._drain_or_hold():
                self._hold_in_spool(self._pending)
        self._stop_timer = threading.Event()
        self._timer: threading.Thread | None = None
        tick = min(seconds for seconds in (checkpoint_seconds, heartbeat_seconds, 2.0) if seconds is not None)
        if checkpoint_seconds is not None or heartbeat_seconds is not None:
            self._timer = threading.Thread(
                target=self._run_timer, args=(tick / 2,), name="audit-checkpoints", daemon=True
            )
            self._timer.start()

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The public half of the key this log signs its checkpoints with."""
        return self._key.public_key()

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
        with self._lock:
            if "ts" not in body:
                # Stamped under the lock, so a record's ts is never older than a checkpoint before it.
                body["ts"] = format_ts(self.clock())
            self._pending.append(body)
            record, line = self._chain(body, self._provisional_hash)
            self._provisional_hash = record["hash"]
            self._chained = (body, record, line)
            try:
                drained = self._drain_or_hold()
            finally:
                self._chained = None  # the caller may add to the record it gets: never write that
            if drained:
                return record
            if self.on_error == "closed":
                self._pending.pop()
                self._provisional_hash = self._tail_hash
                raise AuditUnavailable(f"audit log unavailable: {self._unavailable}")
            self._hold_in_spool([body])
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
                    self._commit_checkpoint(wait=True)
                except OSError as exc:
                    self._mark_unavailable(exc)

    def tick(self) -> None:
        """Sign a checkpoint if one is due by time (called by the timer thread)."""
        with self._lock:
            if self._checkpoint_due() and self._drain_or_hold():
                try:
                    self._commit_checkpoint()
                except OSError as exc:
                    self._mark_unavailable(exc)

    def close(self) -> None:
        """Flush what is buffered, sign a final checkpoint and sync the files. Events the disk still
        refuses stay in the spool for the next start."""
        if self._timer is not None:
            self._stop_timer.set()
            self._timer.join()
            self._timer = None
        self._background_sync.stop()
        with self._lock:
            try:
                self._close_locked()
            finally:
                self._release_descriptor()

    def _close_locked(self) -> None:
        if not self._drain_or_hold():
            log.error(
                "audit.close_with_buffered_events",
                buffered=len(self._pending),
                spooled=self._spool is not None,
            )
            return
        try:
            if self._since_checkpoint:
                self._commit_checkpoint(wait=True)
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
        if self._spool is not None and self._spool.holding:
            try:
                self._spool.release()
            except OSError as exc:
                # Written twice at worst: the next start skips spooled events already in the log.
                log.error("audit.spool_not_released", error=str(exc))
        if self._unavailable is not None:
            log.warning("audit.writable_again", after=self._unavailable)
            self._unavailable = None
        return True

    def _hold_in_spool(self, events: Iterable[dict[str, Any]]) -> None:
        if self._spool is not None:
            for event in events:
                self._spool.hold(event)

    def _take_spool(self) -> None:
        """Queue what an earlier run left in the spool, after a gap record that says so."""
        if self._spool is None:
            return
        spooled, counted = self._spool.take()
        forged = not self._spool.count_signed
        replayed = self._spool.count_replayed
        if not spooled and not counted and not forged and not replayed:
            return
        already = self._keys_in_newest_file()
        missing = [event for event in spooled if _event_key(event) not in already]
        if not missing and not counted and not forged and not replayed:
            return  # all written before the spool was emptied: nothing was lost
        reason = "a previous run ended while the log could not be written; spooled events follow"
        if forged:
            reason += "; the count of events neither written nor spooled was not signed by this log's key"
        if replayed:
            reason += (
                "; the spool's count was older than the one its witness (the state store) saw last: an "
                "earlier count was put back, and the witness's is taken"
            )
        self._pending.append(
            {
                "type": GAP,
                "ts": format_ts(self.clock()),
                "dropped": counted,
                "spooled": len(missing),
                "reason": reason,
            }
        )
        self._pending.extend(missing)
        log.warning("audit.spool_taken", spooled=len(missing), lost=counted)

    def _keys_in_newest_file(self) -> set[str]:
        files = daily_files(self.directory)
        if not files:
            return set()
        keys = set()
        with files[-1].open("rb") as source:
            for raw in source:
                try:
                    keys.add(_event_key(json.loads(raw)))
                except (ValueError, TypeError):
                    continue
        return keys

    def _checkpoint_due(self) -> bool:
        now = self.clock()
        unsigned_for = (now - self._unsigned_since).total_seconds() if self._unsigned_since else None
        idle_for = (now - self._last_checkpoint_at).total_seconds()
        return (
            self.checkpoint_seconds is not None
            and unsigned_for is not None
            and unsigned_for >= self.checkpoint_seconds
        ) or (self.heartbeat_seconds is not None and idle_for >= self.heartbeat_seconds)

    def _run_timer(self, interval: float) -> None:
        while not self._stop_timer.wait(interval):
            try:
                self.tick()
            except Exception as exc:  # the timer must outlive any one failure; the next tick retries
                log.error("audit.checkpoint_timer_failed", error=f"{type(exc).__name__}: {exc}")

    def _chain(self, body: dict[str, Any], prev_hash: str) -> tuple[dict[str, Any], str]:
        """The record of ``body`` after ``prev_hash``, and its line."""
        record = {**body, "prev_hash": prev_hash}
        record["hash"], line = hashed_line(record)
        return record, line

    def _commit(self, body: dict[str, Any]) -> dict[str, Any]:
        chained = self._chained
        if chained is not None and chained[0] is body and chained[1]["prev_hash"] == self._tail_hash:
            _, record, line = chained  # hashed by append on the same tail: nothing was written in between
        else:
            record, line = self._chain(body, self._tail_hash)
        self._write_line(self._todays_file(), line + "\n")
        self._tail_hash = record["hash"]
        if record.get("type") != CHECKPOINT:
            self._since_checkpoint += 1
            if self._unsigned_since is None:
                self._unsigned_since = self.clock()
        return record

    def _commit_checkpoint(self, *, wait: bool = False) -> None:
        """Sign and write a checkpoint; it is published once everything before it is synced, on the sync
        thread, or on this one when ``wait``."""
        body: dict[str, Any] = {
            "type": CHECKPOINT,
            "ts": format_ts(self.clock()),
            "covers": self._tail_hash,
            "records": self._since_checkpoint,
            "key_id": self._key_id,
            "prev_hash": self._tail_hash,
        }
        body["signature"] = sign(self._key, checkpoint_message(body))
        record = self._commit(body)
        if not self._pending:
            # Nothing waits to be written: the next record appended chains to this checkpoint.
            self._provisional_hash = self._tail_hash
        self._since_checkpoint = 0
        self._unsigned_since = None
        self._last_checkpoint_at = self.clock()
        publish = [partial(self.on_checkpoint, record)] if self.on_checkpoint is not None else []
        if wait or self.fsync == "always":
            self._sync()
            run_after_sync(publish)
        else:
            self._background_sync.hand(self._unsynced, *publish)
            self._unsynced = set()
            self._unsynced_count = 0

    def _write_line(self, path: Path, line: str) -> None:
        data = line.encode()
        descriptor = self._descriptor_of(path)
        try:
            written = os.write(descriptor, data)
        except OSError:
            self._release_descriptor()  # nothing of the line was written: the next one opens anew
            raise
        if written != len(data):
            # A half-written line would read as tampering: take it back before giving up.
            try:
                os.ftruncate(descriptor, os.fstat(descriptor).st_size - written)
            finally:
                self._release_descriptor()
            raise OSError(f"short write to {path.name}: {written} of {len(data)} bytes")
        if self.fsync == "always":
            os.fsync(descriptor)
        else:
            self._unsynced.add(path)
            self._unsynced_count += 1
            if self._unsynced_count >= self.fsync_batch:
                self._background_sync.hand(self._unsynced)
                self._unsynced = set()
                self._unsynced_count = 0

    def _descriptor_of(self, path: Path) -> int:
        """A descriptor appending to ``path``, kept from line to line while ``path`` still names the file it
        opened: one moved or removed, or whose directory was, is opened anew, as each line once was. A line
        is in the operating system's hands when ``os.write`` returns either way, so a crash loses none."""
        held = self._held
        if held is not None:
            held_path, text, descriptor, identity = held
            # The day's path is one object all day (``_todays_file``): told apart without comparing, and
            # looked up by its text, which a ``Path`` would work out again for each line.
            if held_path is path or held_path == path:
                try:
                    status = os.stat(text)
                except OSError:
                    status = None
                if status is not None and (status.st_dev, status.st_ino) == identity:
                    return descriptor
            self._release_descriptor()
        text = os.fspath(path)
        descriptor = os.open(text, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            status = os.fstat(descriptor)
        except OSError:
            os.close(descriptor)
            raise
        self._held = (path, text, descriptor, (status.st_dev, status.st_ino))
        return descriptor

    def _release_descriptor(self) -> None:
        if self._held is not None:
            descriptor, self._held = self._held[2], None
            os.close(descriptor)

    def _sync(self) -> None:
        """Sync every file written since the last sync, those handed to the sync thread included, then
        publish the checkpoints that waited for them."""
        handed, then = self._background_sync.take()
        for path in sorted(self._unsynced | handed):
            try:
                sync_file(path)
            except FileNotFoundError:
                continue  # removed for age: nothing of it is left to keep
        self._unsynced.clear()
        self._unsynced_count = 0
        run_after_sync(then)

    def _sync_failed(self, error: OSError) -> None:
        """Called by the sync thread: the disk refused a sync, an outage like a refused write."""
        with self._lock:
            self._mark_unavailable(error)

    def _mark_unavailable(self, exc: OSError) -> None:
        reason = f"{type(exc).__name__}: {exc.strerror or exc}"
        if self._unavailable is None:
            self._unavailable = reason
            log.error("audit.unwritable", reason=reason, on_error=self.on_error)
            if self.on_unavailable is not None:
                self.on_unavailable(reason)

    def _today(self) -> date:
        """The clock's UTC day, read for every line written (retention, the day's file)."""
        now = self.clock()
        span = self._day_span
        if span is None or not span[0] <= now < span[1]:
            day = now.astimezone(UTC).date()
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            span = self._day_span = (start, start + timedelta(days=1), day)
        return span[2]

    def _todays_file(self) -> Path:
        today = self._today()
        if self._file is None or self._file[0] != today:
            self._file = (today, self.directory / daily_file_name(today))
        return self._file[1]

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

    def _find_tail(self) -> tuple[str, int, datetime | None]:
        """The last hash on disk, how many records follow the last checkpoint (so ``checkpoint_every``
        counts across restarts) and when that checkpoint was signed."""
        tail_hash: str | None = None
        unsigned = 0
        for path in reversed(daily_files(self.directory)):
            for record in _records_from_end(path):
                if tail_hash is None:
                    tail_hash = str(record["hash"])
                if record.get("type") == CHECKPOINT:
                    return tail_hash, unsigned, _parse_ts(record.get("ts"))
                unsigned += 1
        return tail_hash or GENESIS, unsigned, None


def _event_key(record: dict[str, Any]) -> str:
    """What identifies an event whether it sits in the spool or in the chain."""
    if isinstance(record.get("event_id"), str):
        return f"{record.get('type')}:{record['event_id']}"
    return canonical_json({key: value for key, value in record.items() if key not in ("hash", "prev_hash")})


def _parse_ts(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _last_record_hash(path: Path) -> str | None:
    return next((str(record["hash"]) for record in _records_from_end(path)), None)


def _records_from_end(path: Path) -> Iterator[dict[str, Any]]:
    """The file's complete records, last first, read in blocks from the end."""
    with path.open("rb") as source:
        position = source.seek(0, os.SEEK_END)
        carry = b""
        while position > 0:
            step = min(1 << 16, position)
            position -= step
            source.seek(position)
            lines = (source.read(step) + carry).split(b"\n")
            carry = lines.pop(0) if position > 0 else b""
            for line in reversed(lines):
                if line.strip():
                    yield json.loads(line)
