import multiprocessing
import os
import sqlite3
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from proxy.state import JSONValue, SqliteStateStore, StateStore
from proxy.state.buckets import bucket_width
from proxy.state.redis_store import RedisSettings, RedisStateStore
from proxy.state.sqlite import DATABASE_NAME
from proxy.state.sqlite_shared import SharedSqliteStateStore, enter_wal
from proxy.state.store import SET_CAPACITY, TALLY_WRITE_S
from proxy.state.wal_index import WalIndexHeader
from tests.redis_server import RedisServer

START = 1_700_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


type Opener = Callable[[], StateStore]


@pytest.fixture(params=["sqlite", "sqlite-shared", "redis"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Opener:
    """Opens a store on one backend; a second one opened sees what the first one wrote."""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return lambda: RedisStateStore(RedisSettings(url=server.url), clock=clock)
    if request.param == "sqlite-shared":
        return lambda: SharedSqliteStateStore(tmp_path, clock=clock)
    return lambda: SqliteStateStore(tmp_path, clock=clock)


@pytest.fixture
def store(open_store: Opener) -> Iterator[StateStore]:
    """Each behaviour of the Protocol, on every backend."""
    opened = open_store()
    yield opened
    opened.close()


@pytest.fixture
def sqlite_store(tmp_path: Path, clock: FakeClock) -> Iterator[SqliteStateStore]:
    opened = SqliteStateStore(tmp_path, clock=clock)
    yield opened
    opened.close()


def on_disk(directory: Path, query: str, parameters: tuple[str, ...] = ()) -> list[tuple[object, ...]]:
    """Rows as a second connection sees them: what a restart after a crash would find."""
    reader = sqlite3.connect(directory / DATABASE_NAME)
    try:
        return reader.execute(query, parameters).fetchall()
    finally:
        reader.close()


def reopen(store: StateStore, open_store: Opener) -> StateStore:
    store.close()
    return open_store()


def test_store_satisfies_protocol(store: StateStore) -> None:
    """Every backend is usable wherever a StateStore is expected."""
    assert store.counter("nothing") == 0


# --- counters --------------------------------------------------------------------------------------------


def test_incr_counts_up_from_zero(store: StateStore) -> None:
    """incr starts at zero and returns the new value."""
    assert [store.incr("requests") for _ in range(3)] == [1, 2, 3]
    assert store.incr("requests", 5) == 8
    assert store.counter("requests") == 8


def test_incr_ttl_is_a_fixed_window(store: StateStore, clock: FakeClock) -> None:
    """The TTL runs from the first increment; later increments do not extend it."""
    store.incr("calls", ttl_s=60)
    clock.advance(50)
    assert store.incr("calls", ttl_s=60) == 2
    clock.advance(10)
    assert store.counter("calls") == 0
    assert store.incr("calls", ttl_s=60) == 1


def test_counter_without_ttl_never_expires(store: StateStore, clock: FakeClock) -> None:
    """A counter created without a TTL survives any amount of time."""
    store.incr("total")
    clock.advance(10 * 365 * 86400)
    assert store.counter("total") == 1


# --- sliding windows -------------------------------------------------------------------------------------


def test_hit_returns_count_within_window(store: StateStore, clock: FakeClock) -> None:
    """hit records an event and returns how many fell within the window."""
    assert store.hit("tool:delete", 60) == 1
    clock.advance(30)
    assert store.hit("tool:delete", 60) == 2
    clock.advance(31)
    assert store.hit("tool:delete", 60) == 2


def test_hit_accepts_explicit_time(store: StateStore) -> None:
    """An explicit ``now`` is used instead of the clock."""
    assert store.hit("k", 10, now=START + 100) == 1
    assert store.hit("k", 10, now=START + 105) == 2
    assert store.count("k", 10, now=START + 111) == 1


def test_count_reads_any_window_up_to_retention(store: StateStore, clock: FakeClock) -> None:
    """count narrows the window without recording an event."""
    for _ in range(3):
        store.hit("k", 3600)
        clock.advance(600)
    assert store.count("k", 3600) == 3
    assert store.count("k", 700) == 1
    assert store.count("k", 3600) == 3


def test_count_never_reaches_past_retention(store: StateStore, clock: FakeClock) -> None:
    """Events older than the longest window a key was hit with are gone."""
    store.hit("k", 60)
    clock.advance(120)
    assert store.count("k", 3600) == 0


def test_count_of_unknown_key_is_zero(store: StateStore) -> None:
    """A key never hit counts zero."""
    assert store.count("never", 60) == 0


def test_out_of_order_hits_are_counted(store: StateStore) -> None:
    """An event stamped earlier than the last one still lands in the right place."""
    store.hit("k", 100, now=START + 50)
    store.hit("k", 100, now=START + 10)
    assert store.count("k", 30, now=START + 50) == 1
    assert store.count("k", 100, now=START + 50) == 2


def stored_buckets(store: StateStore, key: str, tmp_path: Path, request: pytest.FixtureRequest) -> int:
    """How many entries a window takes where its backend keeps it: Redis fields, SQLite rows."""
    if isinstance(store, RedisStateStore):
        server: RedisServer = request.getfixturevalue("redis_server")
        return int(server.client().hlen(f"egressguard:b:{key}"))
    [(rows,)] = on_disk(tmp_path, "SELECT COUNT(*) FROM buckets WHERE key = ?", (key,))
    assert isinstance(rows, int)
    return rows


def exact(times: list[float], window_s: float, now: float) -> int:
    return sum(now - window_s < at <= now for at in times)


@pytest.mark.parametrize("window_s", [10.0, 60.0, 3600.0, 7 * 86400.0])
def test_count_is_never_below_the_window_and_at_most_one_bucket_above(
    store: StateStore, clock: FakeClock, window_s: float
) -> None:
    """Bucketed counts: every event of the window, and only events at most one bucket width older."""
    width = bucket_width(window_s)
    times: list[float] = []
    spacing = window_s / 97.3
    for step in range(400):
        clock.advance(spacing * (0.2 + (step * 7919 % 13) / 8))
        times.append(clock.now)
        recorded = store.hit("k", window_s)
        assert exact(times, window_s, clock.now) <= recorded <= exact(times, window_s + width, clock.now)
        narrow = window_s / 6
        counted = store.count("k", narrow)
        assert exact(times, narrow, clock.now) <= counted <= exact(times, narrow + width, clock.now)


@pytest.mark.parametrize(("window_s", "buckets"), [(60.0, 61), (7 * 86400.0, 673)])
def test_a_busy_key_stays_bounded_over_many_windows(
    store: StateStore,
    clock: FakeClock,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    window_s: float,
    buckets: int,
) -> None:
    """However many events a key takes, it keeps at most retention / width + 1 buckets, on every backend;
    the count stays right across many windows."""
    hits = 4000
    spacing = window_s * 8 / hits
    for _ in range(hits):
        store.hit("busy", window_s)
        clock.advance(spacing)
    assert stored_buckets(store, "busy", tmp_path, request) <= buckets
    per_window = round(window_s / spacing)
    assert (
        per_window
        <= store.count("busy", window_s)
        <= per_window * (1 + bucket_width(window_s) / window_s) + 1
    )


def test_two_hundred_thousand_hits_cost_a_minute_of_buckets(
    tmp_path: Path, clock: FakeClock, request: pytest.FixtureRequest
) -> None:
    """A rate-limit key hit 200k times (100 a second for over half an hour) holds 61 one-second buckets
    in memory and on disk, and the memory it took does not grow with the hits."""
    store = SqliteStateStore(tmp_path, clock=clock)
    for _ in range(150_000):
        store.hit("busy", 60)
        clock.advance(0.01)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(50_000):
        store.hit("busy", 60)
        clock.advance(0.01)
    grown = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    assert store.count("busy", 60) in range(6000, 6101)
    assert stored_buckets(store, "busy", tmp_path, request) <= 61
    assert grown < 64 * 1024
    store.close()


def test_hits_of_an_older_data_dir_are_folded_into_buckets(tmp_path: Path, clock: FakeClock) -> None:
    """A data dir written with one row per event opens with the same counts and without that table."""
    legacy = sqlite3.connect(tmp_path / DATABASE_NAME)
    legacy.executescript(
        "CREATE TABLE windows (key TEXT PRIMARY KEY, retention REAL NOT NULL);"
        "CREATE TABLE hits (key TEXT NOT NULL, ts REAL NOT NULL);"
    )
    legacy.execute("INSERT INTO windows VALUES ('k', 3600)")
    legacy.executemany("INSERT INTO hits VALUES ('k', ?)", [(START - 60 * step,) for step in range(50)])
    legacy.commit()
    legacy.close()
    for opened in (SqliteStateStore(tmp_path, clock=clock), SharedSqliteStateStore(tmp_path, clock=clock)):
        assert opened.count("k", 3600) == 50
        assert opened.count("k", 600) in range(10, 12)
        opened.close()
    assert on_disk(tmp_path, "SELECT name FROM sqlite_master WHERE name = 'hits'") == []


# --- expiring sets ---------------------------------------------------------------------------------------


def test_add_if_new_true_only_first_time(store: StateStore) -> None:
    """A member is new once within its TTL."""
    assert store.add_if_new("dest:agent-1", "api.openai.com", 3600)
    assert not store.add_if_new("dest:agent-1", "api.openai.com", 3600)
    assert store.add_if_new("dest:agent-1", "api.anthropic.com", 3600)
    assert store.add_if_new("dest:agent-2", "api.openai.com", 3600)


def test_add_if_new_again_after_expiry(store: StateStore, clock: FakeClock) -> None:
    """Once the TTL has passed the member is new again; repeats do not extend the TTL."""
    store.add_if_new("s", "m", 100)
    clock.advance(99)
    assert not store.add_if_new("s", "m", 100)
    clock.advance(1)
    assert store.add_if_new("s", "m", 100)


def stored_members(store: StateStore, set_name: str, tmp_path: Path, request: pytest.FixtureRequest) -> int:
    """How many members a set keeps where its backend keeps them: Redis keys, SQLite rows."""
    if isinstance(store, RedisStateStore):
        server: RedisServer = request.getfixturevalue("redis_server")
        prefix = f"egressguard:s:{len(set_name)}:{set_name}:"
        return sum(1 for _ in server.client().scan_iter(match=prefix + "*", count=1000))
    [(rows,)] = on_disk(tmp_path, "SELECT COUNT(*) FROM members WHERE set_name = ?", (set_name,))
    assert isinstance(rows, int)
    return rows


def test_a_set_keeps_at_most_its_capacity(
    store: StateStore, clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A set fed a new member per event (a prompt part, a host) stops growing at SET_CAPACITY: the oldest
    members are forgotten and count as new again; the newest are still known; other sets are untouched."""
    store.add_if_new("other", "kept", 3600)
    for index in range(SET_CAPACITY + 50):
        assert store.add_if_new("seen:agent", f"part-{index}", 3600)
        clock.advance(0.001)
    assert stored_members(store, "seen:agent", tmp_path, request) == SET_CAPACITY
    assert not store.add_if_new("seen:agent", f"part-{SET_CAPACITY + 49}", 3600)
    assert not store.add_if_new("seen:agent", "part-50", 3600)
    assert store.add_if_new("seen:agent", "part-0", 3600)
    assert not store.add_if_new("other", "kept", 3600)
    assert stored_members(store, "seen:agent", tmp_path, request) == SET_CAPACITY


# --- key/values ------------------------------------------------------------------------------------------


def test_put_get_round_trips_json(store: StateStore) -> None:
    """Values come back as equal JSON-shaped data."""
    value: JSONValue = {"frozen": True, "by": "rule-7", "rates": [0.1, 0.25], "count": 3, "note": "日本"}
    store.put("freeze:session-1", value)
    assert store.get("freeze:session-1") == value


def test_get_returns_a_copy(store: StateStore) -> None:
    """Mutating a returned value does not change what is stored."""
    store.put("baseline", {"tools": ["search"]})
    first = store.get("baseline")
    assert isinstance(first, dict)
    first["tools"] = ["rm"]
    assert store.get("baseline") == {"tools": ["search"]}


def test_put_replaces_and_ttl_expires(store: StateStore, clock: FakeClock) -> None:
    """A put replaces the old value and its TTL; the value is gone once the TTL passes."""
    store.put("freeze", "a")
    store.put("freeze", "b", ttl_s=30)
    assert store.get("freeze") == "b"
    clock.advance(30)
    assert store.get("freeze") is None


def test_get_missing_is_none_and_delete_forgets(store: StateStore) -> None:
    """A missing key reads None; delete removes a key and tolerates a missing one."""
    assert store.get("absent") is None
    store.put("k", 1)
    store.delete("k")
    store.delete("k")
    assert store.get("k") is None


def test_put_rejects_non_json(store: StateStore) -> None:
    """Only JSON-shaped values are stored, so any backend can hold them."""
    with pytest.raises(TypeError):
        store.put("k", {"when": object()})  # type: ignore[dict-item]


# --- persistence -----------------------------------------------------------------------------------------


def test_everything_survives_reopen(open_store: Opener, clock: FakeClock) -> None:
    """Close and reopen the same store: counters, windows, sets and values are all there."""
    store = open_store()
    store.incr("c", 4, ttl_s=600)
    store.hit("w", 60)
    store.hit("w", 60)
    store.add_if_new("s", "m", 600)
    store.put("v", {"x": 1}, ttl_s=600)
    clock.advance(10)
    store = reopen(store, open_store)
    assert store.counter("c") == 4
    assert store.count("w", 60) == 2
    assert store.hit("w", 60) == 3
    assert not store.add_if_new("s", "m", 600)
    assert store.get("v") == {"x": 1}
    store.close()


def test_expiry_still_applies_after_reopen(open_store: Opener, clock: FakeClock) -> None:
    """Entries keep their expiry across a restart and are not loaded once expired."""
    store = open_store()
    store.incr("c", ttl_s=60)
    store.hit("w", 60)
    store.add_if_new("s", "m", 60)
    store.put("v", 1, ttl_s=60)
    clock.advance(61)  # a window's bucket (1 s here) is let go once all of it is older than the window
    store = reopen(store, open_store)
    assert store.counter("c") == 0
    assert store.count("w", 60) == 0
    assert store.add_if_new("s", "m", 60)
    assert store.get("v") is None
    store.close()


def test_write_is_on_disk_before_close(tmp_path: Path, clock: FakeClock) -> None:
    """A second connection sees a write at once: nothing waits for close, so a crash loses nothing."""
    store = SqliteStateStore(tmp_path, clock=clock)
    store.put("freeze:s1", True)
    assert on_disk(tmp_path, "SELECT value FROM kv WHERE key = 'freeze:s1'") == [("true",)]
    store.close()


def test_database_uses_wal(tmp_path: Path, clock: FakeClock) -> None:
    """The database runs in WAL mode."""
    SqliteStateStore(tmp_path, clock=clock).close()
    assert on_disk(tmp_path, "PRAGMA journal_mode") == [("wal",)]


def test_directory_is_created(tmp_path: Path, clock: FakeClock) -> None:
    """A missing state directory is created."""
    store = SqliteStateStore(tmp_path / "a" / "b", clock=clock)
    store.close()
    assert (tmp_path / "a" / "b" / DATABASE_NAME).exists()


@pytest.mark.parametrize("kind", [SqliteStateStore, SharedSqliteStateStore])
def test_sweep_purges_expired_rows(
    tmp_path: Path, clock: FakeClock, kind: type[SqliteStateStore | SharedSqliteStateStore]
) -> None:
    """Expired entries nobody touches again are purged from disk by the periodic sweep."""
    store = kind(tmp_path, clock=clock, sweep_interval_s=100)
    store.incr("c", ttl_s=10)
    store.add_if_new("s", "m", 10)
    store.put("v", 1, ttl_s=10)
    store.hit("w", 10)
    store.merge("m", {"f": 1}, 10)
    clock.advance(100)
    store.counter("anything")
    tables = ("counters", "members", "kv", "buckets", "windows", "fields")
    counts = {table: on_disk(tmp_path, f"SELECT COUNT(*) FROM {table}") for table in tables}  # noqa: S608 -- table names are the literals above
    assert counts == {table: [(0,)] for table in tables}
    store.close()


# --- lifecycle and threads -------------------------------------------------------------------------------


def test_in_memory_store_needs_no_directory(clock: FakeClock) -> None:
    """Without a directory the store works the same and keeps nothing."""
    store = SqliteStateStore(None, clock=clock)
    assert store.incr("c") == 1
    store.close()


def test_use_after_close_raises(store: StateStore) -> None:
    """A closed store refuses use; closing twice is fine."""
    store.close()
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.get("k")


def test_concurrent_increments_are_not_lost(store: StateStore) -> None:
    """Increments from several threads all count."""

    def work() -> None:
        for _ in range(200):
            store.incr("shared")
            store.hit("window", 60)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.counter("shared") == 800
    assert store.count("window", 60) == 800


def test_a_tally_counts_at_once_like_a_hit(store: StateStore, clock: FakeClock) -> None:
    """A tallied event is in every count from the moment the call returns, in the same window as a hit's,
    and a hit after tallies counts them."""
    for _ in range(5):
        store.tally("turns:agent:a", 600)
    assert store.count("turns:agent:a", 600) == 5
    assert store.hit("turns:agent:a", 600) == 6
    clock.advance(700)
    store.tally("turns:agent:a", 600)
    assert store.count("turns:agent:a", 600) == 1


def test_tally_and_count_answers_as_its_tallies_then_counts_would(
    store: StateStore, clock: FakeClock
) -> None:
    """One call tallies and then counts, the counts seeing its own tallies, each window read as ``count``
    reads it; and a second store on the same data counts the same."""
    for _ in range(3):
        store.tally("turns:agent:a", 3600)
    clock.advance(1200)
    counts = [("turns:agent:a", 600), ("refusals:agent:a", 600), ("turns:agent:a", 3600), ("never", 60)]
    tallies = [("turns:agent:a", 3600), ("refusals:agent:a", 3600)]
    assert store.tally_and_count(tallies, counts) == [1, 1, 4, 0]
    assert [store.count(key, window) for key, window in counts] == [1, 1, 4, 0]
    assert store.tally_and_count([], counts) == [1, 1, 4, 0]
    assert store.tally_and_count(tallies, []) == []
    assert store.count("turns:agent:a", 3600) == 5


def test_close_writes_every_tally(open_store: Opener) -> None:
    """A store closed right after tallies (a clean stop) loses none of them."""
    store = open_store()
    for _ in range(7):
        store.tally("turns:session:0123456789abcdef0123456789abcdef", 3600)
    store = reopen(store, open_store)
    assert store.count("turns:session:0123456789abcdef0123456789abcdef", 3600) == 7
    store.close()


SQLITE_STORES = pytest.mark.parametrize("sqlite_store_class", [SqliteStateStore, SharedSqliteStateStore])
type SqliteStoreClass = type[SqliteStateStore] | type[SharedSqliteStateStore]


@SQLITE_STORES
def test_tallies_reach_the_disk_within_their_write_period(
    tmp_path: Path, clock: FakeClock, sqlite_store_class: SqliteStoreClass
) -> None:
    """Tallies are committed together at most ``TALLY_WRITE_S`` after the first of them, with the window
    row they opened, without waiting for close; and again after a quiet spell."""
    store = sqlite_store_class(tmp_path, clock=clock)
    query = "SELECT SUM(events) FROM buckets WHERE key = ?"
    for expected in (20, 21):
        for _ in range(20 if expected == 20 else 1):
            store.tally("refusals:agent:a", 3600)
        deadline = time.monotonic() + TALLY_WRITE_S + 2
        while on_disk(tmp_path, query, ("refusals:agent:a",)) != [(expected,)]:
            assert time.monotonic() < deadline, "tallies were not written"
            time.sleep(0.05)
    assert on_disk(tmp_path, "SELECT retention FROM windows WHERE key = 'refusals:agent:a'") == [(3600.0,)]
    store.close()


def test_a_worker_counts_its_tallies_at_once_and_the_others_once_written(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Workers sharing the file: a tally counts at once in its own worker and in the others' counts
    within ``TALLY_WRITE_S``; a hit counts at once everywhere, and a hit after tallies counts them."""
    mine, other = (SharedSqliteStateStore(tmp_path, clock=clock) for _ in range(2))
    for _ in range(3):
        mine.tally("refusals:agent:a", 3600)
    assert mine.count("refusals:agent:a", 3600) == 3
    assert mine.count("refusals:agent:a", 60) == 3
    deadline = time.monotonic() + TALLY_WRITE_S + 2
    while other.count("refusals:agent:a", 3600) != 3:
        assert time.monotonic() < deadline, "the other worker never counted the tallies"
        time.sleep(0.05)
    mine.tally("refusals:agent:a", 3600)
    assert other.hit("refusals:agent:a", 3600) == 4  # the other's hit does not wait for the tally
    assert mine.count("refusals:agent:a", 3600) == 5  # its own tally, and the other's hit, at once
    mine.tally("refusals:agent:a", 3600)
    assert mine.hit("refusals:agent:a", 3600) == 7  # a hit writes the tallies before it
    assert other.count("refusals:agent:a", 3600) == 7
    clock.advance(3700)
    assert mine.count("refusals:agent:a", 3600) == other.count("refusals:agent:a", 3600) == 0
    mine.close()
    other.close()


@pytest.fixture(params=["index header", "data_version only"])
def change_check(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How a shared store learns that the file changed: from the WAL index's header first, or, where the
    index cannot be mapped, by asking SQLite at every read."""
    if request.param == "data_version only":
        monkeypatch.setattr(WalIndexHeader, "open", classmethod(lambda cls, database: None))
    return str(request.param)


@pytest.mark.usefixtures("change_check")
def test_a_worker_reads_what_another_wrote_at_once_after_reading_it_before(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A worker keeps what it read only while the file is unchanged: each write of another worker, and
    each of its own, is read by the very next read of the same thing."""
    mine, other = (SharedSqliteStateStore(tmp_path, clock=clock) for _ in range(2))

    def reads() -> tuple[object, ...]:
        return (
            mine.get("freeze:user:mallory"),
            mine.items("freeze:"),
            mine.counter("limit:agent:a"),
            mine.count("turns:agent:a", 60),
            mine.count("turns:agent:a", 3600),
            mine.add_if_new("hosts:agent:a", "example.com", 3600),
        )

    writes: list[Callable[[SharedSqliteStateStore], object]] = [
        lambda store: store.put("freeze:user:mallory", {"reason": "injection"}),
        lambda store: store.incr("limit:agent:a"),
        lambda store: store.hit("turns:agent:a", 3600),
        lambda store: store.delete("freeze:user:mallory"),
        lambda store: store.hit("turns:agent:a", 3600),
    ]
    seen = [reads(), reads()]
    assert seen[0][:-1] == seen[1][:-1] and seen[1][-1] is False  # the first read claimed the host
    for writer in (other, mine):
        for write in writes:
            before = reads()[:-1]
            write(writer)
            after = reads()[:-1]
            assert after != before, write
    fresh = SharedSqliteStateStore(tmp_path, clock=clock)
    assert (
        reads()[:-1]
        == (
            fresh.get("freeze:user:mallory"),
            fresh.items("freeze:"),
            fresh.counter("limit:agent:a"),
            fresh.count("turns:agent:a", 60),
            fresh.count("turns:agent:a", 3600),
        )
        == (None, {}, 2, 4, 4)
    )
    clock.advance(66)  # time alone moves a window's count (by 5 s buckets here), with nothing written
    assert mine.count("turns:agent:a", 60) == fresh.count("turns:agent:a", 60) == 0
    assert mine.count("turns:agent:a", 3600) == 4
    for store in (mine, other, fresh):
        store.close()


WRITES_FROM_ANOTHER_PROCESS: dict[str, Callable[[SharedSqliteStateStore], object]] = {
    "freeze": lambda store: store.put("freeze:agent:a", {"reason": "injection"}),
    "limit": lambda store: store.incr("limit:agent:a"),
    "hit": lambda store: store.hit("turns:agent:a", 3600),
    "thaw": lambda store: store.delete("freeze:agent:a"),
}


def _write_when_asked(directory: Path, asked: Connection) -> None:
    """Another worker: makes each write it is sent, answering once it is committed."""
    store = SharedSqliteStateStore(directory)
    while (write := asked.recv()) is not None:
        WRITES_FROM_ANOTHER_PROCESS[write](store)
        asked.send(write)
    store.close()


@pytest.mark.usefixtures("change_check")
def test_a_worker_reads_what_another_process_committed_by_its_next_read(tmp_path: Path) -> None:
    """Workers are processes: every read made after another process's write returned sees the write,
    however often the same thing was read (and kept) before it."""
    mine = SharedSqliteStateStore(tmp_path)

    def reads() -> tuple[object, ...]:
        return (
            mine.get("freeze:agent:a"),
            mine.items("freeze:"),
            mine.counter("limit:agent:a"),
            mine.count("turns:agent:a", 3600),
        )

    asking, asked = multiprocessing.get_context("spawn").Pipe()
    other = multiprocessing.get_context("spawn").Process(target=_write_when_asked, args=(tmp_path, asked))
    other.start()
    try:
        expected = {
            "freeze": lambda seen: seen[0] == {"reason": "injection"} and seen[1] != {},
            "limit": lambda seen: seen[2] == 1,
            "hit": lambda seen: seen[3] == 1,
            "thaw": lambda seen: seen[0] is None and seen[1] == {},
        }
        for write, written in expected.items():
            for _ in range(3):
                assert not written(reads()), write
            asking.send(write)
            assert asking.recv() == write
            assert written(reads()), write
        asking.send(None)
        other.join(60)
        assert other.exitcode == 0
    finally:
        if other.is_alive():
            other.kill()
        mine.close()


def test_a_read_of_an_unchanged_file_runs_no_statement(tmp_path: Path, clock: FakeClock) -> None:
    """While no one commits, the reads a turn repeats are answered from memory without a statement (not
    even ``PRAGMA data_version``); one commit by another store makes the next reads ask the file."""
    mine, other = (SharedSqliteStateStore(tmp_path, clock=clock) for _ in range(2))
    statements: list[str] = []
    mine._db.set_trace_callback(statements.append)

    def turn() -> None:
        mine.get("freeze:agent:a")
        mine.count("turns:agent:a", 3600)
        mine.add_if_new("hosts:agent:a", "example.com", 3600)

    turn()  # claims the host: a commit of its own, after which the reads ask the file again
    turn()
    assert statements
    statements.clear()
    for _ in range(5):
        turn()
    assert statements == []
    other.put("freeze:agent:b", {"reason": "injection"})
    turn()
    assert "PRAGMA data_version" in statements and len(statements) > 1
    mine.close()
    other.close()


def test_an_unwritten_tally_of_a_wider_window_counts_in_the_buckets_it_will_be_written_to(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A tally that widens a key's retention counts, before it is written, as it will once written."""
    store = SharedSqliteStateStore(tmp_path, clock=clock)
    store.hit("turns:agent:a", 60)
    clock.advance(30)
    store.tally("turns:agent:a", 7 * 86400)
    before = [store.count("turns:agent:a", window) for window in (10, 60, 3600)]
    store.close()
    reopened = SharedSqliteStateStore(tmp_path, clock=clock)
    assert [reopened.count("turns:agent:a", window) for window in (10, 60, 3600)] == before
    assert before[-1] == 2
    reopened.close()


def _tally_then_crash(directory: Path, sqlite_store_class: SqliteStoreClass) -> None:
    store = sqlite_store_class(directory)
    for _ in range(30):
        store.tally("turns:agent:a", 3600)
    time.sleep(TALLY_WRITE_S + 1)
    store.tally("turns:agent:a", 3600)
    os._exit(0)  # no close: what a crash leaves on disk


@SQLITE_STORES
def test_a_crash_loses_at_most_the_last_period_of_tallies(
    tmp_path: Path, sqlite_store_class: SqliteStoreClass
) -> None:
    """A process that dies without closing its store has written every tally older than one write period;
    only those of its last moments may be missing."""
    worker = multiprocessing.get_context("spawn").Process(
        target=_tally_then_crash, args=(tmp_path, sqlite_store_class)
    )
    worker.start()
    worker.join(60)
    assert worker.exitcode == 0
    store = sqlite_store_class(tmp_path)
    assert 30 <= store.count("turns:agent:a", 3600) <= 31
    store.close()


@SQLITE_STORES
def test_a_hit_after_a_tally_of_its_key_is_written_with_its_window(
    tmp_path: Path, clock: FakeClock, sqlite_store_class: SqliteStoreClass
) -> None:
    """A hit is on disk when it returns, with the window row a tally of the same key opened before it."""
    store = sqlite_store_class(tmp_path, clock=clock)
    store.tally("tool.calls:a", 3600)
    store.hit("tool.calls:a", 3600)
    assert on_disk(tmp_path, "SELECT retention FROM windows WHERE key = 'tool.calls:a'") == [(3600.0,)]
    assert on_disk(tmp_path, "SELECT SUM(events) FROM buckets WHERE key = 'tool.calls:a'") == [(2,)]
    store.close()


@SQLITE_STORES
def test_a_forgotten_key_leaves_no_tally_on_disk(
    tmp_path: Path, clock: FakeClock, sqlite_store_class: SqliteStoreClass
) -> None:
    """Tallies of a key the kind's cap forgets are written before it is deleted, never after: a reopened
    store finds only the keys kept."""
    store = sqlite_store_class(tmp_path, clock=clock, keys_per_kind=3)
    keys = [f"turns:session:{index:032x}" for index in range(6)]
    for key in keys:
        store.tally(key, 3600)
        clock.advance(1)
    store.close()
    on_file = {row[0] for row in on_disk(tmp_path, "SELECT DISTINCT key FROM buckets")}
    assert on_file == set(keys[3:])
    reopened = sqlite_store_class(tmp_path, clock=clock, keys_per_kind=3)
    assert [reopened.count(key, 3600) for key in keys] == [0, 0, 0, 1, 1, 1]
    reopened.close()


def _increment_from_another_process(directory: Path, times: int) -> None:
    store = SharedSqliteStateStore(directory)
    for _ in range(times):
        store.incr("shared")
        store.hit("window", 60)
    store.close()


def test_worker_processes_share_one_sqlite_file(tmp_path: Path) -> None:
    """Processes on one host sharing the SQLite file lose no increment and count one window."""
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_increment_from_another_process, args=(tmp_path, 150)) for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    store = SharedSqliteStateStore(tmp_path)
    assert store.counter("shared") == 450
    assert store.count("window", 60) == 450
    store.close()


def test_items_lists_live_values_under_a_prefix(store: StateStore, clock: FakeClock) -> None:
    """items() returns every unexpired value whose key starts with the prefix, and nothing else (glob
    characters in the prefix match themselves)."""
    store.put("a*b:1", 1)
    store.put("axb:2", 2)
    assert store.items("a*b:") == {"a*b:1": 1}
    store.put("freeze.user:a", {"reason": "x"})
    store.put("freeze.user:b", 2, ttl_s=10)
    store.put("freezer", "not under the prefix")
    assert store.items("freeze.") == {"freeze.user:a": {"reason": "x"}, "freeze.user:b": 2}
    clock.advance(11)
    assert store.items("freeze.") == {"freeze.user:a": {"reason": "x"}}
    assert store.items("nothing:") == {}


def test_merge_returns_the_fields_before_the_write(store: StateStore) -> None:
    """merge() sets fields and answers with what the map held before; with no fields it only reads."""
    assert store.merge("vault:a", {"p1": "one"}, 60) == {}
    assert store.merge("vault:a", {"p2": {"v": 2}}, 60) == {"p1": "one"}
    assert store.merge("vault:a", {}, 60) == {"p1": "one", "p2": {"v": 2}}
    assert store.merge("vault:a", {"p1": "uno"}, 60) == {"p1": "one", "p2": {"v": 2}}
    assert store.merge("vault:a", {}, 60)["p1"] == "uno"
    assert store.merge("vault:b", {}, 60) == {}


def test_merge_fields_expire_one_by_one(store: StateStore, clock: FakeClock) -> None:
    """Each field expires ttl after it was last set; setting it again refreshes it, and a read does not."""
    store.merge("vault:a", {"old": 1, "kept": 2}, 10)
    clock.advance(6)
    store.merge("vault:a", {"kept": 3, "new": 4}, 10)
    clock.advance(6)
    assert store.merge("vault:a", {}, 10) == {"kept": 3, "new": 4}
    clock.advance(5)
    assert store.merge("vault:a", {}, 10) == {}


def test_merge_survives_reopen(open_store: Opener, clock: FakeClock) -> None:
    """Fields are persisted with their expiry."""
    first = open_store()
    first.merge("vault:a", {"p": "v"}, 10)
    second = reopen(first, open_store)
    assert second.merge("vault:a", {}, 10) == {"p": "v"}
    clock.advance(11)
    assert second.merge("vault:a", {}, 10) == {}
    second.close()


def test_concurrent_merges_lose_no_field(store: StateStore) -> None:
    """Fields set by many threads at once into one map are all kept."""

    def work(worker: int) -> None:
        for number in range(25):
            store.merge("vault:shared", {f"{worker}-{number}": number}, 600)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.merge("vault:shared", {}, 600)) == 100


class _SwitchedOnThirdTry:
    """A connection whose switch to WAL another process's switch refuses twice, as SQLite refuses it."""

    def __init__(self, refusal: sqlite3.OperationalError) -> None:
        self.refusal = refusal
        self.tries = 0

    def execute(self, sql: str) -> None:
        assert sql == "PRAGMA journal_mode=WAL"
        self.tries += 1
        if self.tries < 3:
            raise self.refusal


def _refusal(message: str, code: int) -> sqlite3.OperationalError:
    refusal = sqlite3.OperationalError(message)
    refusal.sqlite_errorcode = code
    return refusal


def test_the_switch_to_wal_is_tried_again_while_another_process_switches() -> None:
    """Processes that open a new shared database together: the one SQLite answers "locked" at once (not
    after its busy timeout) tries again; any other error is raised as it is."""
    db = _SwitchedOnThirdTry(_refusal("database is locked", sqlite3.SQLITE_BUSY))
    enter_wal(db)  # type: ignore[arg-type]
    assert db.tries == 3
    broken = _SwitchedOnThirdTry(_refusal("disk I/O error", sqlite3.SQLITE_IOERR))
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        enter_wal(broken)  # type: ignore[arg-type]
    assert broken.tries == 1


def _open_shared_store(directory: Path, start: Any, opened: Any) -> None:
    start.wait()
    try:
        SharedSqliteStateStore(directory).close()
        opened.put("opened")
    except sqlite3.Error as error:
        opened.put(repr(error))


def test_workers_opening_a_new_shared_store_together_all_open_it(tmp_path: Path) -> None:
    """Workers start at once: each of four processes opens the same new store, rounds on end."""
    context = multiprocessing.get_context("forkserver")
    # The process the workers fork from imports this module once (as egressguard's does its own), where
    # each worker imported it, and with it pytest and egressguard, again (some 0.6 s a worker).
    context.set_forkserver_preload([__name__])
    outcomes = []
    for round_ in range(60):
        start, opened = context.Barrier(4), context.Queue()
        workers = [
            context.Process(target=_open_shared_store, args=(tmp_path / str(round_), start, opened))
            for _ in range(4)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        outcomes += [opened.get(timeout=5) for _ in workers]
    assert set(outcomes) == {"opened"}


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that lets every file be read by anyone, as a careless service manager sets."""
    previous = os.umask(0)
    yield
    os.umask(previous)


@pytest.mark.parametrize("store_class", [SqliteStateStore, SharedSqliteStateStore])
def test_the_state_database_its_wal_and_shared_memory_are_private_from_creation(
    tmp_path: Path, open_umask: None, store_class: type[SqliteStateStore] | type[SharedSqliteStateStore]
) -> None:
    """The store keeps approvals, vault entries and baselines: its files are the owner's alone whatever
    the umask, and the WAL and shared-memory files SQLite makes beside the database are too."""
    directory = tmp_path / "state"
    store = store_class(directory)
    try:
        store.put("approval:1", {"agent": "a"})
        store.incr("count:a", 1)
        database = directory / DATABASE_NAME
        files = [
            database,
            database.with_name(f"{DATABASE_NAME}-wal"),
            database.with_name(f"{DATABASE_NAME}-shm"),
        ]
        assert all(path.exists() for path in files)
        assert {oct(path.stat().st_mode & 0o777) for path in files} == {oct(0o600)}
        assert directory.stat().st_mode & 0o777 == 0o700
    finally:
        store.close()


def test_a_state_database_an_earlier_version_left_readable_is_taken_back(tmp_path: Path) -> None:
    first = SqliteStateStore(tmp_path)
    first.put("k", "v")
    first.close()
    database = tmp_path / DATABASE_NAME
    database.chmod(0o644)
    reopened = SqliteStateStore(tmp_path)
    try:
        assert reopened.get("k") == "v"
        assert database.stat().st_mode & 0o777 == 0o600
    finally:
        reopened.close()
