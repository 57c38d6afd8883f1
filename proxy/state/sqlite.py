"""The single-process state store: everything in memory, every write also committed to SQLite.

Reads never touch the disk. Each mutation is committed before the call returns (WAL journal), so a
restart with the same directory forgets nothing; ``durable=True`` also syncs each commit to disk so a
power loss forgets nothing either, at the cost of an fsync per write. Expired entries are dropped when
touched, and all of them in a sweep every ``sweep_interval_s`` of clock time.

The one write that waits is ``tally``, the hit of a statistic (refusal rates, tool call rates): it counts
in memory at once and is committed with the others of the same ``TALLY_WRITE_S`` in one transaction, by
a thread of the store's own, so a crash of the process loses at most that last second of them (``close``
and every delete write them first, so none lands after its key is forgotten).

One process owns a directory; replicas that share state use a networked store behind the same Protocol.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import structlog

from proxy.state.buckets import bucket_start, bucket_width, counted, expired
from proxy.state.caps import KindCaps
from proxy.state.store import KEYS_PER_KIND, SET_CAPACITY, TALLY_WRITE_S, Clock, JSONValue

log = structlog.get_logger("egressguard.state")

DATABASE_NAME = "state.sqlite3"
SECURE_DELETE = "PRAGMA secure_delete=ON"
"""A value replaced or forgotten is overwritten in the file, not left in its free space (where a copy of
the file would keep what was rewritten, such as a token an older version stored whole), whatever SQLite's
build defaults to."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL, expires REAL);
CREATE TABLE IF NOT EXISTS windows (key TEXT PRIMARY KEY, retention REAL NOT NULL);
CREATE TABLE IF NOT EXISTS buckets (
    key TEXT NOT NULL, width INTEGER NOT NULL, start INTEGER NOT NULL, events INTEGER NOT NULL,
    PRIMARY KEY (key, width, start)
);
CREATE INDEX IF NOT EXISTS buckets_by_start ON buckets (key, start);
CREATE TABLE IF NOT EXISTS members (
    set_name TEXT NOT NULL, member TEXT NOT NULL, expires REAL NOT NULL, PRIMARY KEY (set_name, member)
);
CREATE INDEX IF NOT EXISTS members_by_expiry ON members (expires);
CREATE INDEX IF NOT EXISTS members_by_set_expiry ON members (set_name, expires);
CREATE TABLE IF NOT EXISTS set_sizes (set_name TEXT PRIMARY KEY, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL);
CREATE TABLE IF NOT EXISTS fields (
    key TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (key, field)
);
CREATE TABLE IF NOT EXISTS tracked (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, expires REAL NOT NULL, entries INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tracked_by_kind ON tracked (kind, expires);
CREATE TABLE IF NOT EXISTS kind_sizes (kind TEXT PRIMARY KEY, entries INTEGER NOT NULL);
"""

RECORD_HIT = (
    "INSERT INTO buckets VALUES (?, ?, ?, 1)"
    " ON CONFLICT (key, width, start) DO UPDATE SET events = events + 1"
)
RECORD_HITS = (
    "INSERT INTO buckets VALUES (?, ?, ?, ?)"
    " ON CONFLICT (key, width, start) DO UPDATE SET events = events + excluded.events"
)


@dataclass(slots=True)
class _Window:
    """One key's buckets, ``(width, start) -> events``, ordered by where they end (oldest first)."""

    retention: float
    buckets: dict[tuple[int, int], int] = field(default_factory=dict)
    total: int = 0
    latest_start: float = -math.inf

    def add(self, slot: tuple[int, int], events: int = 1) -> None:
        behind = (
            slot not in self.buckets
            and bool(self.buckets)
            and _end(next(reversed(self.buckets))) > _end(slot)
        )
        self.buckets[slot] = self.buckets.get(slot, 0) + events
        self.total += events
        self.latest_start = max(self.latest_start, slot[1])
        if behind:
            # An event stamped earlier than the newest bucket: restore the order by end.
            self.buckets = dict(sorted(self.buckets.items(), key=lambda item: _end(item[0])))

    def prune(self, now: float) -> bool:
        """Drop the buckets wholly older than the retention; True if any were dropped."""
        dropped = False
        while self.buckets:
            slot = next(iter(self.buckets))
            if not expired(slot[1], slot[0], now, self.retention):
                break
            self.total -= self.buckets.pop(slot)
            dropped = True
        return dropped

    def count(self, window_s: float, now: float) -> int:
        oldest = now - min(window_s, self.retention)
        if not self.buckets:
            return 0
        first = next(iter(self.buckets))
        if counted(first[1], first[0], oldest, now) and self.latest_start <= now:
            return self.total
        found = 0
        for (width, start), events in reversed(self.buckets.items()):
            if start + width <= oldest:
                break
            if start <= now:
                found += events
        return found

    def empty(self) -> bool:
        return not self.buckets

    def expires(self) -> float:
        """When the newest bucket leaves the retention, and the key with it."""
        return max(map(_end, self.buckets), default=-math.inf) + self.retention


def _end(slot: tuple[int, int]) -> int:
    return slot[0] + slot[1]


def live(expires: float | None, now: float) -> bool:
    return expires is None or expires > now


def private_database(directory: Path) -> Path:
    """The database file under ``directory``, made the owner's alone before SQLite opens it: created
    0600 (and its folder 0700) whatever the umask, as SQLite gives the WAL and shared-memory files it
    makes the database file's mode; one an earlier version left open to others, and its WAL and
    shared-memory files, taken back to 0600. What the store keeps (approvals, vault entries, baselines)
    is no one else's to read."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    database = directory / DATABASE_NAME
    os.close(os.open(database, os.O_RDWR | os.O_CREAT, 0o600))
    for path in (
        database,
        database.with_name(f"{DATABASE_NAME}-wal"),
        database.with_name(f"{DATABASE_NAME}-shm"),
    ):
        if path.exists() and path.stat().st_mode & 0o077:
            path.chmod(0o600)
    return database


class SqliteStateStore:
    """A ``StateStore`` kept in memory and persisted to ``<directory>/state.sqlite3``.

    ``directory=None`` keeps the database in memory only (for tests and throwaway runs). Thread-safe:
    one lock serialises every call.
    """

    def __init__(
        self,
        directory: Path | None,
        *,
        clock: Clock = time.time,
        durable: bool = False,
        sweep_interval_s: float = 300.0,
        keys_per_kind: int = KEYS_PER_KIND,
    ) -> None:
        self._clock = clock
        self._caps = KindCaps(keys_per_kind)
        self._sweep_interval_s = sweep_interval_s
        self._lock = threading.Lock()
        self._closed = False
        self._tallied: dict[tuple[str, int, int], int] = {}
        """Events of tallies not written yet, by bucket (key, width, start)."""
        self._tallied_windows: dict[str, float] = {}
        """Retentions of windows tallies opened or widened, not written yet."""
        self._tallies_due = threading.Condition(self._lock)
        self._writer: threading.Thread | None = None
        target = ":memory:" if directory is None else str(private_database(directory))
        self._db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.execute(SECURE_DELETE)
        self._db.executescript(SCHEMA)
        migrate_hits(self._db)
        self._counters: dict[str, tuple[int, float | None]] = {}
        self._windows: dict[str, _Window] = {}
        # Per set, member -> expiry, in the order added (with one TTL per set, the order of expiry).
        self._members: dict[str, dict[str, float]] = {}
        self._values: dict[str, tuple[str, float | None]] = {}
        self._maps: dict[str, dict[str, tuple[str, float]]] = {}
        now = clock()
        self._last_sweep = now
        self._load(now)

    def _load(self, now: float) -> None:
        for key, value, expires in self._db.execute("SELECT key, value, expires FROM counters"):
            if live(expires, now):
                self._counters[key] = (value, expires)
        for key, retention in self._db.execute("SELECT key, retention FROM windows"):
            self._windows[key] = _Window(retention)
        for key, width, start, events in self._db.execute(
            "SELECT key, width, start, events FROM buckets ORDER BY start + width"
        ):
            if key in self._windows:
                self._windows[key].add((width, start), events)
        for set_name, member, expires in self._db.execute(
            "SELECT set_name, member, expires FROM members ORDER BY expires"
        ):
            if live(expires, now):
                self._members.setdefault(set_name, {})[member] = expires
        for key, text, expires in self._db.execute("SELECT key, value, expires FROM kv"):
            if live(expires, now):
                self._values[key] = (text, expires)
        for key, name, text, expires in self._db.execute("SELECT key, field, value, expires FROM fields"):
            if expires > now:
                self._maps.setdefault(key, {})[name] = (text, expires)
        self._sweep(now)
        expiring = [(expires, key, 1) for key, (_, expires) in self._counters.items() if expires is not None]
        expiring += [(window.expires(), key, 1) for key, window in self._windows.items()]
        expiring += [(expires, key, 1) for key, (_, expires) in self._values.items() if expires is not None]
        expiring += [
            (max(expires for _, expires in fields.values()), key, len(fields))
            for key, fields in self._maps.items()
        ]
        for expires, key, entries in sorted(expiring):
            self._keep(key, expires, entries)

    # --- counters ---------------------------------------------------------------------------------------

    def incr(self, key: str, amount: int = 1, *, ttl_s: float | None = None) -> int:
        with self._lock:
            now = self._begin()
            current = self._counters.get(key)
            if current is not None and live(current[1], now):
                value, expires = current[0] + amount, current[1]
            else:
                value, expires = amount, None if ttl_s is None else now + ttl_s
            self._counters[key] = (value, expires)
            self._db.execute("INSERT OR REPLACE INTO counters VALUES (?, ?, ?)", (key, value, expires))
            if expires is not None:
                self._keep(key, expires)
            return value

    def counter(self, key: str) -> int:
        with self._lock:
            now = self._begin()
            current = self._counters.get(key)
            return current[0] if current is not None and live(current[1], now) else 0

    # --- sliding windows --------------------------------------------------------------------------------

    def hit(self, key: str, window_s: float, now: float | None = None) -> int:
        with self._lock:
            at = self._begin() if now is None else self._begin(now)
            if key in self._tallied_windows:
                self._write_tallies()  # the key's window row goes to disk before this hit's bucket does
            window = self._record_hit(key, window_s, at, tallied=False)
            return window.count(window_s, at)

    def tally(self, key: str, window_s: float) -> None:
        with self._lock:
            self._hold_tallies([(key, window_s)], self._begin())

    def tally_and_count(
        self, tallies: Sequence[tuple[str, float]], counts: Sequence[tuple[str, float]]
    ) -> list[int]:
        with self._lock:
            at = self._begin()
            self._hold_tallies(tallies, at)
            return [self._count(key, window_s, at) for key, window_s in counts]

    def _hold_tallies(self, tallies: Sequence[tuple[str, float]], at: float) -> None:
        """Count the tallies now and leave them to the writing thread (the caller holds the lock)."""
        if not tallies:
            return
        waiting = bool(self._tallied or self._tallied_windows)
        for key, window_s in tallies:
            self._record_hit(key, window_s, at, tallied=True)
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="state-tallies", daemon=True)
            self._writer.start()
        elif not waiting:
            self._tallies_due.notify()

    def _record_hit(self, key: str, window_s: float, at: float, *, tallied: bool) -> _Window:
        """One event of ``key`` at ``at``, in memory, and on disk now or with the next tallies."""
        window = self._windows.get(key)
        if window is None or window.retention < window_s:
            window = self._windows.setdefault(key, _Window(window_s))
            window.retention = window_s
            if tallied:
                self._tallied_windows[key] = window_s
            else:
                self._db.execute("INSERT OR REPLACE INTO windows VALUES (?, ?)", (key, window_s))
        width = bucket_width(window.retention)
        slot = (width, bucket_start(at, width))
        opened = slot not in window.buckets
        window.add(slot)
        if tallied:
            bucket = (key, *slot)
            self._tallied[bucket] = self._tallied.get(bucket, 0) + 1
        else:
            self._db.execute(RECORD_HIT, (key, *slot))
        if window.prune(at):
            self._write_tallies()  # a delete comes after every write before it
            self._db.execute(
                "DELETE FROM buckets WHERE key = ? AND start + width <= ?", (key, at - window.retention)
            )
        if opened:  # the key lasts longer only when a bucket opens
            self._keep(key, _end(slot) + window.retention)
        return window

    def _write_loop(self) -> None:
        """Write the tallies of each second together, ``TALLY_WRITE_S`` after the first of them."""
        with self._lock:
            while not self._closed:
                if not (self._tallied or self._tallied_windows):
                    self._tallies_due.wait()
                    continue
                self._tallies_due.wait(TALLY_WRITE_S)
                if self._closed:
                    return
                try:
                    self._write_tallies()
                except sqlite3.Error as error:
                    log.error("state.tallies_unwritten", error=str(error))

    def _write_tallies(self) -> None:
        """Commit the tallies held in memory, in one transaction (the caller holds the lock)."""
        if not (self._tallied or self._tallied_windows):
            return
        windows, self._tallied_windows = self._tallied_windows, {}
        buckets, self._tallied = self._tallied, {}
        try:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO windows VALUES (?, ?)", windows.items())
            self._db.executemany(RECORD_HITS, [(*bucket, events) for bucket, events in buckets.items()])
            self._db.execute("COMMIT")
        except sqlite3.Error:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            # Kept for the next write: a bucket's events add up, so memory grows with keys, not events.
            self._tallied_windows = windows | self._tallied_windows
            for bucket, events in buckets.items():
                self._tallied[bucket] = self._tallied.get(bucket, 0) + events
            raise

    def count(self, key: str, window_s: float, now: float | None = None) -> int:
        with self._lock:
            return self._count(key, window_s, self._begin() if now is None else self._begin(now))

    def _count(self, key: str, window_s: float, at: float) -> int:
        window = self._windows.get(key)
        return 0 if window is None else window.count(window_s, at)

    # --- expiring sets ----------------------------------------------------------------------------------

    def add_if_new(self, set_name: str, member: str, ttl_s: float, now: float | None = None) -> bool:
        with self._lock:
            now = self._begin(now)
            members = self._members.setdefault(set_name, {})
            expires = members.get(member)
            if expires is not None and expires > now:
                return False
            members.pop(member, None)  # an expired member comes back as the newest
            members[member] = now + ttl_s
            self._db.execute(
                "INSERT OR REPLACE INTO members VALUES (?, ?, ?)", (set_name, member, now + ttl_s)
            )
            while len(members) > SET_CAPACITY:
                oldest = next(iter(members))
                del members[oldest]
                self._db.execute("DELETE FROM members WHERE set_name = ? AND member = ?", (set_name, oldest))
            return True

    # --- key/values -------------------------------------------------------------------------------------

    def put(self, key: str, value: JSONValue, ttl_s: float | None = None) -> None:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        with self._lock:
            now = self._begin()
            expires = None if ttl_s is None else now + ttl_s
            self._values[key] = (text, expires)
            self._db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (key, text, expires))
            if expires is not None:
                self._keep(key, expires)

    def replace(self, key: str, expected: JSONValue, value: JSONValue) -> bool:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        with self._lock:
            now = self._begin()
            stored = self._values.get(key)
            if stored is None or not live(stored[1], now) or json.loads(stored[0]) != expected:
                return False
            self._values[key] = (text, None)
            self._db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, NULL)", (key, text))
            return True

    def get(self, key: str) -> JSONValue | None:
        with self._lock:
            now = self._begin()
            stored = self._values.get(key)
            if stored is None:
                return None
            if not live(stored[1], now):
                self._forget_value(key)
                return None
            return cast(JSONValue, json.loads(stored[0]))

    def delete(self, key: str) -> None:
        with self._lock:
            self._begin()
            self._forget_value(key)

    def items(self, prefix: str) -> dict[str, JSONValue]:
        with self._lock:
            now = self._begin()
            return {
                key: cast(JSONValue, json.loads(text))
                for key, (text, expires) in self._values.items()
                if key.startswith(prefix) and live(expires, now)
            }

    def merge(
        self, key: str, fields: dict[str, JSONValue], ttl_s: float, *, capacity: int | None = None
    ) -> dict[str, JSONValue]:
        texts = {
            name: json.dumps(value, separators=(",", ":"), ensure_ascii=False)
            for name, value in fields.items()
        }
        with self._lock:
            now = self._begin()
            stored = {name: entry for name, entry in self._maps.get(key, {}).items() if entry[1] > now}
            before = {name: cast(JSONValue, json.loads(text)) for name, (text, _) in stored.items()}
            for name, text in texts.items():
                stored.pop(name, None)  # set again, it expires last: the end of the order
                stored[name] = (text, now + ttl_s)
                self._db.execute(
                    "INSERT OR REPLACE INTO fields VALUES (?, ?, ?, ?)", (key, name, text, now + ttl_s)
                )
            while capacity is not None and len(stored) > capacity:
                oldest = next(iter(stored))
                del stored[oldest]
                self._db.execute("DELETE FROM fields WHERE key = ? AND field = ?", (key, oldest))
            if stored:
                self._maps[key] = stored
                if texts:
                    self._keep(key, now + ttl_s, len(stored))
            else:
                self._maps.pop(key, None)
            return before

    def _forget_value(self, key: str) -> None:
        if self._values.pop(key, None) is not None:
            self._db.execute("DELETE FROM kv WHERE key = ?", (key,))
            self._caps.untrack(key)

    def _keep(self, key: str, expires: float, entries: int = 1) -> None:
        """Account for a write of an expiring key, forgetting the keys its kind holds beyond its cap."""
        victims = self._caps.track(key, expires, entries)
        if not victims:
            return
        self._write_tallies()
        self._db.execute("BEGIN")
        for victim in victims:
            self._counters.pop(victim, None)
            self._windows.pop(victim, None)
            self._values.pop(victim, None)
            self._maps.pop(victim, None)
            forget_key(self._db, victim)
        self._db.execute("COMMIT")

    @property
    def forgotten(self) -> int:
        return self._caps.forgotten

    # --- lifecycle --------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._write_tallies()
                self._closed = True
                self._tallies_due.notify_all()
                self._db.close()

    def _begin(self, now: float | None = None) -> float:
        """Refuse use after close, read the clock, and sweep when one is due; return the time."""
        if self._closed:
            raise RuntimeError("the state store is closed")
        at = self._clock() if now is None else now
        if at - self._last_sweep >= self._sweep_interval_s:
            self._sweep(at)
        return at

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        self._counters = {key: entry for key, entry in self._counters.items() if live(entry[1], now)}
        self._members = {
            set_name: live_members
            for set_name, members in self._members.items()
            if (live_members := {member: expires for member, expires in members.items() if expires > now})
        }
        self._values = {key: entry for key, entry in self._values.items() if live(entry[1], now)}
        self._maps = {
            key: live_fields
            for key, fields in self._maps.items()
            if (live_fields := {name: entry for name, entry in fields.items() if entry[1] > now})
        }
        for key in list(self._windows):
            window = self._windows[key]
            window.prune(now)
            if window.empty():
                del self._windows[key]
        self._caps.expire(now)
        self._write_tallies()
        self._db.execute("BEGIN")
        sweep_database(self._db, now)
        self._db.execute("COMMIT")


def sweep_database(db: sqlite3.Connection, now: float) -> None:
    """Delete every expired row, inside the caller's transaction."""
    db.execute("DELETE FROM counters WHERE expires <= ?", (now,))
    db.execute("DELETE FROM members WHERE expires <= ?", (now,))
    count_set_members(db)
    db.execute("DELETE FROM kv WHERE expires <= ?", (now,))
    db.execute("DELETE FROM fields WHERE expires <= ?", (now,))
    db.execute(
        "DELETE FROM buckets WHERE start + width"
        " <= ? - (SELECT retention FROM windows WHERE windows.key = buckets.key)",
        (now,),
    )
    db.execute("DELETE FROM windows WHERE key NOT IN (SELECT DISTINCT key FROM buckets)")
    db.execute("DELETE FROM tracked WHERE expires <= ?", (now,))
    db.execute("DELETE FROM kind_sizes")
    db.execute("INSERT INTO kind_sizes SELECT kind, SUM(entries) FROM tracked GROUP BY kind")


_FORGET_KEY = tuple(
    f"DELETE FROM {table} WHERE key = ?"  # noqa: S608 -- the table names are these constants
    for table in ("counters", "windows", "buckets", "kv", "fields", "tracked")
)


def forget_key(db: sqlite3.Connection, key: str) -> None:
    """Delete every row of ``key`` (whatever it holds), inside the caller's transaction."""
    for statement in _FORGET_KEY:
        db.execute(statement, (key,))


def count_set_members(db: sqlite3.Connection) -> None:
    """Recount ``set_sizes`` from the members table, inside the caller's transaction."""
    db.execute("DELETE FROM set_sizes")
    db.execute("INSERT INTO set_sizes SELECT set_name, COUNT(*) FROM members GROUP BY set_name")


def migrate_hits(db: sqlite3.Connection) -> None:
    """Fold the one-row-per-event ``hits`` table of older data dirs into buckets, then drop it."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'hits'").fetchone():
            rows = db.execute("SELECT hits.key, retention, ts FROM hits JOIN windows USING (key)")
            for key, retention, ts in rows.fetchall():
                width = bucket_width(retention)
                db.execute(RECORD_HIT, (key, width, bucket_start(ts, width)))
            db.execute("DROP TABLE hits")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
