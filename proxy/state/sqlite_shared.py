"""The state store for several worker processes on one host: the same SQLite file, read and written by all.

``SqliteStateStore`` keeps everything in memory and only persists to disk, so two processes would each
see their own counts. This store reads everything from the shared file: every operation is one SQLite
transaction on it (``BEGIN IMMEDIATE`` for read-modify-write, so increments from two workers are never
lost), in WAL mode so readers do not wait for writers. It is slower per operation than the in-memory
store (a write transaction each, tens of microseconds, no fsync) and needs no server; for several hosts
use Redis. Both SQLite stores use one schema, so a data dir can move between one worker and several.

A read keeps its answer for as long as no process has committed to the file since (``PRAGMA
data_version``, which each read asks first; this process's own writes drop the answers too), so a
freeze, a claim or a limit another worker writes is read by the next read, and the reads every turn
repeats (a freeze, a first-seen host, the refusal windows) cost a lookup while the file is unchanged.
Asking ``data_version`` opens a read transaction, most of a read's cost once its answer is kept: a
read first looks at the header of the file's WAL index (``proxy.state.wal_index``), which every commit
rewrites, and asks only when it is not what it was at the last asking.
A window count is kept by the whole seconds its ends fall in, over which it sums the same buckets: a
week-long window holds 672 of them, and summing them from the file took about ten times as long.

The one write that waits is ``tally``, the hit of a statistic (a refusal rate, a tool's call rate), which
every turn makes: written at once, it was a write transaction per turn, each queueing for the file's
write lock behind the other workers' (and sleeping a millisecond or more in SQLite's busy handler when
it met one) while the worker's event loop waited. A tally counts at once in this process's counts and
is written with the others of the same ``TALLY_WRITE_S`` in one transaction, by a thread of the store's
own, or earlier by any write transaction of this process (each writes the tallies first, so no delete,
sweep or forgotten key is followed by an older tally of it). The other workers count it once written,
at most ``TALLY_WRITE_S`` later, and a crash loses at most that last second of them.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import structlog

from proxy.state.buckets import bucket_start, bucket_width, counted
from proxy.state.keys import capped, kind
from proxy.state.sqlite import (
    RECORD_HITS,
    SCHEMA,
    SECURE_DELETE,
    count_set_members,
    forget_key,
    live,
    migrate_hits,
    private_database,
    sweep_database,
)
from proxy.state.store import KEYS_PER_KIND, SET_CAPACITY, TALLY_WRITE_S, Clock, JSONValue
from proxy.state.wal_index import WalIndexHeader

log = structlog.get_logger("egressguard.state")

BUSY_TIMEOUT_MS = 10_000
ANSWERS_KEPT = 4096
"""The most answers a store keeps between changes of the file (they are all dropped at each change)."""


def enter_wal(db: sqlite3.Connection) -> None:
    """Puts the database in WAL mode, waiting up to ``BUSY_TIMEOUT_MS`` for other processes. Two that
    open a new database at once both read it in rollback mode and then want its exclusive lock to switch:
    SQLite answers one of them "locked" at once instead of calling its busy handler (waiting would be a
    deadlock), so the one refused tries again once the other has switched."""
    give_up = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > give_up:
                raise
            time.sleep(0.01)


@dataclass(slots=True)
class _Tallies:
    """One key's tallies not written yet: the longest window they were made for, and their events by
    whole second (every bucket width is a whole number of seconds, so a second falls in one bucket)."""

    window_s: float
    events: dict[int, int] = field(default_factory=dict)

    def add(self, other: _Tallies) -> None:
        self.window_s = max(self.window_s, other.window_s)
        for second, events in other.events.items():
            self.events[second] = self.events.get(second, 0) + events


class SharedSqliteStateStore:
    """A ``StateStore`` on ``<directory>/state.sqlite3`` that any number of processes may open at once."""

    def __init__(
        self,
        directory: Path,
        *,
        clock: Clock = time.time,
        sweep_interval_s: float = 300.0,
        keys_per_kind: int = KEYS_PER_KIND,
    ) -> None:
        database = private_database(directory)
        self._clock = clock
        self._keys_per_kind = keys_per_kind
        self._forgotten = 0
        self._sweep_interval_s = sweep_interval_s
        self._lock = threading.Lock()
        self._closed = False
        self._tallied: dict[str, _Tallies] = {}
        self._tallies_due = threading.Condition(self._lock)
        self._writer: threading.Thread | None = None
        self._answers: dict[tuple[object, ...], object] = {}
        self._version: int | None = None
        self._version_header = b""
        """The WAL index's header when ``_version`` was read (empty: ask again at the next read)."""
        self._db = sqlite3.connect(str(database), isolation_level=None, check_same_thread=False, timeout=10)
        self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        enter_wal(self._db)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SECURE_DELETE)
        self._db.executescript(SCHEMA)
        self._db.create_function("kind", 1, kind, deterministic=True)
        self._db.create_function("capped", 1, capped, deterministic=True)
        migrate_hits(self._db)
        # The single-process store keeps neither set sizes nor kinds on disk: count them for a dir it wrote.
        with self._transaction() as db:
            count_set_members(db)
            track_all(db)
            for name, entries in db.execute(
                "SELECT kind, entries FROM kind_sizes WHERE entries > ?", (keys_per_kind,)
            ).fetchall():
                self._trim(db, name, entries, None)
        # The WAL index exists once a transaction has run in WAL mode.
        self._header = WalIndexHeader.open(database)
        self._last_sweep = clock()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken before anything is read so that no other process writes between;
        it writes this process's tallies first."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the state store is closed")
            self._db.execute("BEGIN IMMEDIATE")
            # This process's own commits leave the file's data_version as it is.
            self._answers.clear()
            tallies, self._tallied = self._tallied, {}
            try:
                for key, pending in tallies.items():
                    retention = self._widen(self._db, key, pending.window_s)
                    for second, events in pending.events.items():
                        self._record(self._db, key, retention, second, events)
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                # Kept for the next write: a second's events add up, so memory grows with keys, not events.
                for key, pending in tallies.items():
                    self._tallied.setdefault(key, _Tallies(pending.window_s)).add(pending)
                raise

    def _read[T](self, query: Callable[[sqlite3.Connection], T]) -> T:
        """``query`` under the lock, the answers kept by ``_answer`` forgotten if the file changed."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the state store is closed")
            # Read before asking, so that a commit between the two is seen as a change at the next read.
            header = self._header.read() if self._header is not None else b""
            if not header or header != self._version_header:
                [(version,)] = self._db.execute("PRAGMA data_version")
                if version != self._version:
                    self._version = version
                    self._answers.clear()
                self._version_header = header if WalIndexHeader.settled(header) else b""
            return query(self._db)

    def _answer[T](self, question: tuple[object, ...], ask: Callable[[], T]) -> T:
        """The answer read to ``question`` since the file last changed, or ``ask()``'s, kept (in a read:
        the caller holds the lock and has checked the file's version)."""
        if question in self._answers:
            return cast(T, self._answers[question])
        answer = ask()
        if len(self._answers) >= ANSWERS_KEPT:
            self._answers.clear()
        self._answers[question] = answer
        return answer

    def _now(self, now: float | None = None) -> float:
        at = self._clock() if now is None else now
        if at - self._last_sweep >= self._sweep_interval_s:
            self._last_sweep = at
            with self._transaction() as db:
                sweep_database(db, at)
        return at

    # --- counters ---------------------------------------------------------------------------------------

    def incr(self, key: str, amount: int = 1, *, ttl_s: float | None = None) -> int:
        now = self._now()
        with self._transaction() as db:
            row = db.execute("SELECT value, expires FROM counters WHERE key = ?", (key,)).fetchone()
            if row is not None and live(row[1], now):
                value, expires = row[0] + amount, row[1]
            else:
                value, expires = amount, None if ttl_s is None else now + ttl_s
                if expires is not None:  # a fixed window: tracked once, when it opens
                    self._keep(db, key, expires)
            db.execute("INSERT OR REPLACE INTO counters VALUES (?, ?, ?)", (key, value, expires))
            return int(value)

    def counter(self, key: str) -> int:
        now = self._now()
        row = self._read(
            lambda db: self._answer(
                ("counter", key),
                lambda: db.execute("SELECT value, expires FROM counters WHERE key = ?", (key,)).fetchone(),
            )
        )
        return int(row[0]) if row is not None and live(row[1], now) else 0

    # --- sliding windows --------------------------------------------------------------------------------

    def hit(self, key: str, window_s: float, now: float | None = None) -> int:
        at = self._now(now)
        with self._transaction() as db:
            retention = self._widen(db, key, window_s)
            self._record(db, key, retention, at, 1)
            return _count(db, key, window_s, retention, at)

    def _widen(self, db: sqlite3.Connection, key: str, window_s: float) -> float:
        """The retention of ``key``'s events, made at least ``window_s``."""
        row = db.execute("SELECT retention FROM windows WHERE key = ?", (key,)).fetchone()
        if row is not None and row[0] >= window_s:
            return float(row[0])
        db.execute("INSERT OR REPLACE INTO windows VALUES (?, ?)", (key, window_s))
        return window_s

    def _record(self, db: sqlite3.Connection, key: str, retention: float, at: float, events: int) -> None:
        """``events`` events of ``key`` at ``at``."""
        width = bucket_width(retention)
        start = bucket_start(at, width)
        [(held,)] = db.execute(RECORD_HITS + " RETURNING events", (key, width, start, events))
        if held == events:
            # A new bucket: the oldest may have left the retention since the last one was opened.
            db.execute("DELETE FROM buckets WHERE key = ? AND start + width <= ?", (key, at - retention))
            self._keep(db, key, start + width + retention)

    def tally(self, key: str, window_s: float) -> None:
        second = math.floor(self._now())
        with self._lock:
            if self._closed:
                raise RuntimeError("the state store is closed")
            self._hold_tallies([(key, window_s)], second)

    def tally_and_count(
        self, tallies: Sequence[tuple[str, float]], counts: Sequence[tuple[str, float]]
    ) -> list[int]:
        at = self._now()

        def query(db: sqlite3.Connection) -> list[int]:
            self._hold_tallies(tallies, math.floor(at))
            return [self._counted(db, key, window_s, at) for key, window_s in counts]

        return self._read(query)

    def _hold_tallies(self, tallies: Sequence[tuple[str, float]], second: int) -> None:
        """Keep the tallies in memory for the writing thread (the caller holds the lock)."""
        if not tallies:
            return
        waiting = bool(self._tallied)
        for key, window_s in tallies:
            pending = self._tallied.setdefault(key, _Tallies(window_s))
            pending.window_s = max(pending.window_s, window_s)
            pending.events[second] = pending.events.get(second, 0) + 1
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="state-tallies", daemon=True)
            self._writer.start()
        elif not waiting:
            self._tallies_due.notify()

    def _write_loop(self) -> None:
        """Write the tallies of each second together, ``TALLY_WRITE_S`` after the first of them."""
        while True:
            with self._lock:
                while not (self._closed or self._tallied):
                    self._tallies_due.wait()
                if not self._closed:
                    self._tallies_due.wait(TALLY_WRITE_S)
                if self._closed:
                    return
                if not self._tallied:  # another write took them
                    continue
            try:
                with self._transaction():
                    pass
            except RuntimeError:  # closed meanwhile, and the close wrote them
                return
            except sqlite3.Error as error:
                log.error("state.tallies_unwritten", error=str(error))

    def count(self, key: str, window_s: float, now: float | None = None) -> int:
        at = self._now(now)
        return self._read(lambda db: self._counted(db, key, window_s, at))

    def _counted(self, db: sqlite3.Connection, key: str, window_s: float, at: float) -> int:
        """``count`` in a read (the caller holds the lock)."""
        row = self._answer(
            ("retention", key),
            lambda: db.execute("SELECT retention FROM windows WHERE key = ?", (key,)).fetchone(),
        )
        pending = self._tallied.get(key)
        if row is None and pending is None:
            return 0
        # The tallies not written yet count as the buckets they will be written to.
        retention = max(row[0] if row is not None else 0.0, pending.window_s if pending else 0.0)
        width = bucket_width(retention)
        oldest = at - min(window_s, retention)
        unwritten = sum(
            events
            for second, events in (pending.events.items() if pending else ())
            if counted(bucket_start(second, width), width, oldest, at)
        )
        if row is None:
            return unwritten
        # Buckets start and end on whole seconds, so the same ones overlap every window whose ends
        # fall in the same two seconds: one answer serves a second's turns.
        bounds = ("events", key, math.floor(oldest), math.floor(at))
        return unwritten + self._answer(bounds, lambda: _count(db, key, window_s, retention, at))

    # --- expiring sets ----------------------------------------------------------------------------------

    def add_if_new(self, set_name: str, member: str, ttl_s: float, now: float | None = None) -> bool:
        at = self._now(now)
        # Most members asked about (hosts, tool sequences, alert groups) are there already: a read, which
        # in WAL mode takes no lock, answers them without queueing for the write lock behind other workers.
        seen = self._read(
            lambda db: self._answer(
                ("member", set_name, member),
                lambda: db.execute(
                    "SELECT expires FROM members WHERE set_name = ? AND member = ?", (set_name, member)
                ).fetchone(),
            )
        )
        if seen is not None and seen[0] > at:
            return False
        with self._transaction() as db:
            row = db.execute(
                "SELECT expires FROM members WHERE set_name = ? AND member = ?", (set_name, member)
            ).fetchone()
            if row is not None and row[0] > at:
                return False
            db.execute("INSERT OR REPLACE INTO members VALUES (?, ?, ?)", (set_name, member, at + ttl_s))
            if row is None:
                [(size,)] = db.execute(
                    "INSERT INTO set_sizes VALUES (?, 1)"
                    " ON CONFLICT (set_name) DO UPDATE SET size = size + 1 RETURNING size",
                    (set_name,),
                )
                if size > SET_CAPACITY:
                    db.execute(
                        "DELETE FROM members WHERE rowid IN"
                        " (SELECT rowid FROM members WHERE set_name = ? ORDER BY expires LIMIT ?)",
                        (set_name, size - SET_CAPACITY),
                    )
                    db.execute("UPDATE set_sizes SET size = ? WHERE set_name = ?", (SET_CAPACITY, set_name))
            return True

    # --- key/values -------------------------------------------------------------------------------------

    def put(self, key: str, value: JSONValue, ttl_s: float | None = None) -> None:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        now = self._now()
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO kv VALUES (?, ?, ?)",
                (key, text, None if ttl_s is None else now + ttl_s),
            )
            if ttl_s is not None:
                self._keep(db, key, now + ttl_s)

    def replace(self, key: str, expected: JSONValue, value: JSONValue) -> bool:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        now = self._now()
        with self._transaction() as db:
            row = db.execute("SELECT value, expires FROM kv WHERE key = ?", (key,)).fetchone()
            if row is None or not live(row[1], now) or json.loads(row[0]) != expected:
                return False
            db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, NULL)", (key, text))
            return True

    def get(self, key: str) -> JSONValue | None:
        now = self._now()
        row = self._read(
            lambda db: self._answer(
                ("value", key),
                lambda: db.execute("SELECT value, expires FROM kv WHERE key = ?", (key,)).fetchone(),
            )
        )
        if row is None or not live(row[1], now):
            return None
        return cast(JSONValue, json.loads(row[0]))

    def delete(self, key: str) -> None:
        self._now()
        with self._transaction() as db:
            db.execute("DELETE FROM kv WHERE key = ?", (key,))

    def merge(
        self, key: str, fields: dict[str, JSONValue], ttl_s: float, *, capacity: int | None = None
    ) -> dict[str, JSONValue]:
        texts = {
            name: json.dumps(value, separators=(",", ":"), ensure_ascii=False)
            for name, value in fields.items()
        }
        now = self._now()
        with self._transaction() as db:
            rows = db.execute(
                "SELECT field, value FROM fields WHERE key = ? AND expires > ?", (key, now)
            ).fetchall()
            if texts:
                db.execute("DELETE FROM fields WHERE key = ? AND expires <= ?", (key, now))
                db.executemany(
                    "INSERT OR REPLACE INTO fields VALUES (?, ?, ?, ?)",
                    [(key, name, text, now + ttl_s) for name, text in texts.items()],
                )
                [(held,)] = db.execute("SELECT COUNT(*) FROM fields WHERE key = ?", (key,))
                if capacity is not None and held > capacity:
                    # Replaced rows take new rowids: the lowest are the fields set least recently.
                    db.execute(
                        "DELETE FROM fields WHERE rowid IN"
                        " (SELECT rowid FROM fields WHERE key = ? ORDER BY expires, rowid LIMIT ?)",
                        (key, held - capacity),
                    )
                    held = capacity
                self._keep(db, key, now + ttl_s, held)
            return {name: cast(JSONValue, json.loads(text)) for name, text in rows}

    def items(self, prefix: str) -> dict[str, JSONValue]:
        now = self._now()
        rows = self._read(
            lambda db: self._answer(
                ("values", prefix),
                lambda: db.execute(
                    "SELECT key, value, expires FROM kv WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
                ).fetchall(),
            )
        )
        return {key: cast(JSONValue, json.loads(text)) for key, text, expires in rows if live(expires, now)}

    # --- caps -------------------------------------------------------------------------------------------

    def _keep(self, db: sqlite3.Connection, key: str, expires: float, entries: int = 1) -> None:
        """Account for a write of an expiring key, forgetting the keys its kind holds beyond its cap."""
        if not capped(key):
            return
        row = db.execute("SELECT expires, entries FROM tracked WHERE key = ?", (key,)).fetchone()
        if row is None:
            name = kind(key)
            db.execute("INSERT INTO tracked VALUES (?, ?, ?, ?)", (key, name, expires, entries))
            grown = entries
        else:
            if expires > row[0] or entries != row[1]:
                db.execute(
                    "UPDATE tracked SET expires = MAX(expires, ?), entries = ? WHERE key = ?",
                    (expires, entries, key),
                )
            grown = entries - row[1]
            if grown == 0:
                return
            name = kind(key)
        [(total,)] = db.execute(
            "INSERT INTO kind_sizes VALUES (?, ?)"
            " ON CONFLICT (kind) DO UPDATE SET entries = entries + excluded.entries RETURNING entries",
            (name, grown),
        )
        if total > self._keys_per_kind:
            self._trim(db, name, total, key)

    def _trim(self, db: sqlite3.Connection, name: str, total: int, keep: str | None) -> None:
        """Forget the keys of kind ``name`` that expire first until it holds no more than its cap."""
        excess = total - self._keys_per_kind
        candidates = db.execute(
            "SELECT key, entries FROM tracked WHERE kind = ? AND key IS NOT ? ORDER BY expires LIMIT ?",
            (name, keep, excess),
        ).fetchall()
        forgotten = 0
        for victim, entries in candidates:
            if forgotten >= excess:
                break
            forget_key(db, victim)
            forgotten += entries
            self._forgotten += 1
        db.execute("UPDATE kind_sizes SET entries = entries - ? WHERE kind = ?", (forgotten, name))

    @property
    def forgotten(self) -> int:
        return self._forgotten

    def close(self) -> None:
        """Write the tallies held, then close."""
        while True:
            with self._lock:
                if self._closed:
                    return
                if not self._tallied:
                    self._closed = True
                    self._tallies_due.notify_all()
                    self._db.close()
                    if self._header is not None:
                        self._header.release()
                    return
            try:
                with self._transaction():
                    pass  # writes them
            except sqlite3.Error as error:
                log.error("state.tallies_unwritten", error=str(error))
                with self._lock:
                    self._tallied.clear()


_TRACK_HELD = (
    "INSERT INTO tracked SELECT key, kind(key), expires, 1 FROM counters"
    " WHERE expires IS NOT NULL AND capped(key)"
    " ON CONFLICT (key) DO UPDATE SET expires = MAX(expires, excluded.expires)",
    "INSERT INTO tracked SELECT key, kind(key), expires, 1 FROM kv WHERE expires IS NOT NULL AND capped(key)"
    " ON CONFLICT (key) DO UPDATE SET expires = MAX(expires, excluded.expires)",
    "INSERT INTO tracked SELECT key, kind(key), MAX(start + width) + retention, 1"
    " FROM windows JOIN buckets USING (key) WHERE capped(key) GROUP BY key"
    " ON CONFLICT (key) DO UPDATE SET expires = MAX(expires, excluded.expires)",
    "INSERT INTO tracked SELECT key, kind(key), MAX(expires), COUNT(*) FROM fields"
    " WHERE capped(key) GROUP BY key"
    " ON CONFLICT (key) DO UPDATE SET expires = MAX(expires, excluded.expires), entries = excluded.entries",
)


def track_all(db: sqlite3.Connection) -> None:
    """Rebuild the account of expiring keys by kind from what the tables hold (freezes are never
    accounted for, even where an older version did), inside the caller's transaction."""
    db.execute("DELETE FROM tracked")
    for statement in _TRACK_HELD:
        db.execute(statement)
    db.execute("DELETE FROM kind_sizes")
    db.execute("INSERT INTO kind_sizes SELECT kind, SUM(entries) FROM tracked GROUP BY kind")


def _count(db: sqlite3.Connection, key: str, window_s: float, retention: float, now: float) -> int:
    oldest = now - min(window_s, retention)
    # Widths only grow with the retention, so no bucket that overlaps the window starts more than today's
    # width before it: the bound on start lets the index skip the older buckets.
    row = db.execute(
        "SELECT COALESCE(SUM(events), 0) FROM buckets"
        " WHERE key = ? AND start > ? AND start <= ? AND start + width > ?",
        (key, oldest - bucket_width(retention), now, oldest),
    ).fetchone()
    return int(row[0])
