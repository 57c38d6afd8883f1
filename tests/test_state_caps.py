"""Each kind of expiring key stays within its cap on every backend, whatever ids agents send."""

import hashlib
import sqlite3
import textwrap
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from proxy.config.policy import parse_policy
from proxy.control.freeze import (
    FREEZE_KINDS,
    FreezeKind,
    active_freezes,
    block_agent,
    freeze_user,
    record_injection_attempt,
    refusal,
    revoke_session,
)
from proxy.runtime import Runtime, open_state_store
from proxy.state import SqliteStateStore, StateStore, digest
from proxy.state.fallback import FallbackStore
from proxy.state.redis_store import RedisSettings, RedisStateStore
from proxy.state.sqlite import DATABASE_NAME
from proxy.state.sqlite_shared import SharedSqliteStateStore
from tests.redis_server import RedisServer
from tests.test_state import FakeClock, on_disk

CAP = 40
BEYOND = 3 * CAP

type Opener = Callable[..., StateStore]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite", "sqlite-shared", "redis"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Opener:
    """Opens a store with a cap of ``CAP`` entries per kind (or ``cap``) on one backend."""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return lambda cap=CAP: RedisStateStore(RedisSettings(url=server.url), clock=clock, keys_per_kind=cap)
    if request.param == "sqlite-shared":
        return lambda cap=CAP: SharedSqliteStateStore(tmp_path, clock=clock, keys_per_kind=cap)
    return lambda cap=CAP: SqliteStateStore(tmp_path, clock=clock, keys_per_kind=cap)


@pytest.fixture
def store(open_store: Opener) -> Iterator[StateStore]:
    opened = open_store()
    yield opened
    opened.close()


def held(
    store: StateStore, tmp_path: Path, request: pytest.FixtureRequest, key_kind: str, pattern: str
) -> int:
    """How many keys of a kind the backend holds: Redis keys of ``key_kind`` ("b", "c", "v", "m"), or
    SQLite rows whose key is LIKE ``pattern``."""
    if isinstance(store, RedisStateStore):
        server: RedisServer = request.getfixturevalue("redis_server")
        match = f"egressguard:{key_kind}:" + pattern.replace("%", "*")
        return sum(1 for _ in server.client().scan_iter(match=match, count=1000))
    table = {"b": "windows", "c": "counters", "v": "kv", "m": "fields"}[key_kind]
    column = "DISTINCT key" if table == "fields" else "key"
    [(rows,)] = on_disk(tmp_path, f"SELECT COUNT({column}) FROM {table} WHERE key LIKE ?", (pattern,))  # noqa: S608
    assert isinstance(rows, int)
    return rows


def session(index: int) -> str:
    return f"turns:session:{digest(f'session-{index}')}"


def approval_record(index: int) -> str:
    return f"approval:apr_{digest(str(index))[:20]}"


def test_windows_named_per_session_stop_at_the_cap_and_the_agent_wide_window_counts_them_all(
    store: StateStore, clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """An agent that sends a new session id with every request grows its per-session windows to the cap
    and no further (the sessions least recently used are forgotten and count from zero again), while the
    agent-wide window above them, a kind of its own, counts every request."""
    for index in range(BEYOND):
        store.hit(session(index), 3600)
        store.hit("turns:agent:billing", 3600)
        clock.advance(1)
    assert held(store, tmp_path, request, "b", "turns:session:%") == CAP
    assert store.count("turns:agent:billing", 3600) == BEYOND
    assert store.count(session(BEYOND - 1), 3600) == 1
    assert store.count(session(BEYOND - CAP), 3600) == 1
    assert store.count(session(BEYOND - CAP - 1), 3600) == 0
    assert store.count(session(0), 3600) == 0
    assert store.forgotten == BEYOND - CAP


def test_a_session_in_use_outlives_a_flood_of_new_ones(store: StateStore, clock: FakeClock) -> None:
    """The keys forgotten first are those that expire first: a session hit again keeps its count while
    fresh sessions push out the ones nobody uses."""
    busy = session(-1)
    for index in range(BEYOND):
        store.hit(busy, 60)
        store.hit(session(index), 60)
        clock.advance(1)
    assert store.count(busy, 60) >= 60
    assert store.count(session(0), 60) == 0


def test_per_user_rate_limit_escaped_by_rotating_ids_still_meets_the_agent_limit(
    store: StateStore, clock: FakeClock
) -> None:
    """Rotating user ids forgets per-user windows (and a fresh id starts at zero anyway); the per-agent
    limit on the same tool, which no user id names, still sees every call."""
    glob = digest("shell.*")
    limit = 25
    over_agent_limit = []
    for index in range(BEYOND):
        per_user = store.hit(f"tool.limit:{glob}:user:{digest(f'user-{index}')}", 60)
        per_agent = store.hit(f"tool.limit:{glob}:agent:billing", 60)
        assert per_user == 1
        over_agent_limit.append(per_agent > limit)
        clock.advance(0.1)
    assert over_agent_limit.index(True) == limit
    assert all(over_agent_limit[limit:])


def test_counters_and_values_with_a_ttl_are_capped_and_those_kept_forever_are_not(
    store: StateStore, clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    for index in range(BEYOND):
        store.incr(f"tool.entropy:billing:{digest(str(index))}:n", ttl_s=3600)
        store.put(approval_record(index), {"index": index}, 3600)
        store.incr(f"forever:{digest(str(index))}")
        clock.advance(1)
    assert held(store, tmp_path, request, "c", "tool.entropy:%") == CAP
    assert held(store, tmp_path, request, "v", "approval:%") == CAP
    assert store.get(approval_record(BEYOND - 1)) == {"index": BEYOND - 1}
    assert store.get(approval_record(0)) is None
    assert store.counter(f"tool.entropy:billing:{digest(str(BEYOND - 1))}:n") == 1
    assert store.counter(f"tool.entropy:billing:{digest('0')}:n") == 0
    assert all(store.counter(f"forever:{digest(str(index))}") == 1 for index in range(BEYOND))


def test_a_map_keeps_its_capacity_and_its_fields_count_toward_the_kind(
    store: StateStore, clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """``capacity`` bounds one map (the fields set least recently go first); every field of every map of
    a kind counts toward the kind's cap, so many small maps are bounded as one large one would be."""
    scope = f"vault:billing:{digest('s')}"
    for index in range(25):
        store.merge(scope, {f"p{index}": index}, 3600, capacity=10)
        clock.advance(1)
    store.merge(scope, {"p16": "again"}, 3600, capacity=10)
    kept = store.merge(scope, {}, 3600)
    assert sorted(kept) == sorted(f"p{index}" for index in range(15, 25))
    assert kept["p16"] == "again"
    for index in range(BEYOND):
        clock.advance(1)
        store.merge(
            f"vault:billing:{digest(str(index))}", {"a": 1, "b": 2, "c": 3, "d": 4}, 3600, capacity=10
        )
    assert held(store, tmp_path, request, "m", "vault:billing:%") == CAP // 4
    assert store.merge(scope, {}, 3600) == {}
    assert store.merge(f"vault:billing:{digest(str(BEYOND - 1))}", {}, 3600) == {
        "a": 1,
        "b": 2,
        "c": 3,
        "d": 4,
    }


def test_kinds_of_other_agents_and_other_rules_are_never_pushed_out(
    store: StateStore, clock: FakeClock
) -> None:
    store.hit(f"refusals:agent:support:{digest('s')}", 3600)
    store.put(f"freeze.agent:{digest('support')}", {"frozen": True}, 3600)
    for index in range(BEYOND):
        store.hit(f"refusals:agent:billing:{digest(str(index))}", 3600)
        clock.advance(1)
    assert store.count(f"refusals:agent:support:{digest('s')}", 3600) == 1
    assert store.get(f"freeze.agent:{digest('support')}") == {"frozen": True}


FREEZE: dict[FreezeKind, Callable[[StateStore, str, float, str], None]] = {
    "user": freeze_user,
    "session": revoke_session,
    "agent": block_agent,
}


def frozen(store: StateStore, kind: FreezeKind, identity: str, agent: str | None = None) -> bool:
    identities = {kind: identity}
    found = refusal(
        store, agent or identities.get("agent"), identities.get("user"), identities.get("session")
    )
    return found is not None and found.identity == identity


def test_an_injection_freeze_outlives_any_number_of_newer_ones(store: StateStore, clock: FakeClock) -> None:
    """An agent that mints user ids and gets each one frozen (three injection attempts apiece) never
    unfreezes a user frozen before: every freeze holds, while the attempt windows, counters, are capped."""

    def offend(user: str) -> list[str | None]:
        return [
            # One agent's users: this test is of the user freezes and counters, not of the agent's count.
            record_injection_attempt(
                store, "bot", user, window_s=24 * 3600, threshold=3, agent_threshold=10**6, ttl_s=3600
            )
            for _ in range(3)
        ]

    assert offend("mallory") == [None, None, "user"]
    for index in range(BEYOND):
        clock.advance(1)
        assert offend(f"minted-{index}") == [None, None, "user"]
    assert frozen(store, "user", "mallory", "bot")
    assert all(frozen(store, "user", f"minted-{index}", "bot") for index in range(BEYOND))
    assert len(active_freezes(store)) == BEYOND + 1
    assert store.forgotten == BEYOND + 1 - CAP


@pytest.mark.parametrize("kind", FREEZE_KINDS)
def test_no_flood_of_newer_freezes_of_a_kind_forgets_the_first(
    store: StateStore, clock: FakeClock, kind: FreezeKind
) -> None:
    FREEZE[kind](store, "first", 3600, "alert repeat-leaks")
    for index in range(BEYOND):
        clock.advance(1)
        FREEZE[kind](store, f"minted-{index}", 3600, "alert repeat-leaks")
    assert frozen(store, kind, "first")
    assert store.forgotten == 0


def test_a_freeze_kept_through_a_flood_still_lifts_at_its_time(
    store: StateStore, clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    freeze_user(store, "mallory", 600, "3 prompt-injection attempts within 24h")
    for index in range(BEYOND):
        freeze_user(store, f"minted-{index}", 3600, "3 prompt-injection attempts within 24h")
    clock.advance(599)
    assert frozen(store, "user", "mallory")
    clock.advance(2)
    assert not frozen(store, "user", "mallory")
    assert frozen(store, "user", f"minted-{BEYOND - 1}")
    clock.advance(3600)
    assert active_freezes(store) == []
    if isinstance(store, RedisStateStore):
        # The server reclaims each at its own time, on its own clock.
        client = request.getfixturevalue("redis_server").client()
        expiries = {name: client.pttl(name) for name in client.scan_iter(match="egressguard:v:freeze.*")}
        assert len(expiries) == BEYOND + 1
        assert all(0 < left <= 3_600_000 for left in expiries.values())
        assert expiries[f"egressguard:v:freeze.user:{digest('mallory')}".encode()] <= 600_000
    else:
        assert held(store, tmp_path, request, "v", "freeze.%") == 0


def test_freezes_survive_a_reopen_under_a_smaller_cap(open_store: Opener, clock: FakeClock) -> None:
    first = open_store(BEYOND * 2)
    for index in range(BEYOND):
        freeze_user(first, f"minted-{index}", 3600, "alert repeat-leaks")
    first.close()
    second = open_store(CAP // 2)
    freeze_user(second, "one-more", 3600, "alert repeat-leaks")
    assert all(frozen(second, "user", f"minted-{index}") for index in range(BEYOND))
    assert second.forgotten == 0
    second.close()


def test_freezes_a_single_process_store_wrote_are_kept_by_workers(tmp_path: Path, clock: FakeClock) -> None:
    """Workers opening a data dir rebuild the account of its keys by kind, and leave freezes out of it
    (the single-process store never counted them, nor should an account an older version left)."""
    single = SqliteStateStore(tmp_path, clock=clock, keys_per_kind=BEYOND * 2)
    for index in range(BEYOND):
        freeze_user(single, f"minted-{index}", 3600, "alert repeat-leaks")
    single.close()
    older = sqlite3.connect(tmp_path / DATABASE_NAME)
    with older:
        older.execute("INSERT INTO tracked SELECT key, 'freeze.user:*', expires, 1 FROM kv")
        older.execute("INSERT INTO kind_sizes VALUES ('freeze.user:*', ?)", (BEYOND,))
    older.close()
    workers = [SharedSqliteStateStore(tmp_path, clock=clock, keys_per_kind=CAP) for _ in range(2)]
    for index in range(BEYOND, 2 * BEYOND):
        freeze_user(workers[index % 2], f"minted-{index}", 3600, "alert repeat-leaks")
    assert all(frozen(workers[index % 2], "user", f"minted-{index}") for index in range(2 * BEYOND))
    assert on_disk(tmp_path, "SELECT COUNT(*) FROM tracked WHERE key LIKE 'freeze.%'") == [(0,)]
    for worker in workers:
        worker.close()


def test_a_live_freeze_costs_the_in_process_store_under_half_a_kilobyte(clock: FakeClock) -> None:
    """What an agent's flood of freezes costs in memory until they expire (traced allocations)."""
    store = SqliteStateStore(None, clock=clock, keys_per_kind=CAP)
    reason = "3 prompt-injection attempts within 24h"
    tracemalloc.start()
    try:
        freeze_user(store, "minted-0", 3600, reason)
        before = tracemalloc.get_traced_memory()[0]
        for index in range(1, 5001):
            freeze_user(store, f"minted-{index}", 3600, reason)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert (after - before) / 5000 < 512
    store.close()


def test_keys_that_expire_leave_room_without_forgetting_others(store: StateStore, clock: FakeClock) -> None:
    for index in range(CAP):
        store.hit(session(index), 60)
    clock.advance(600)
    for index in range(CAP, 2 * CAP):
        store.hit(session(index), 3600)
    assert all(store.count(session(index), 3600) == 1 for index in range(CAP, 2 * CAP))


def test_the_cap_holds_across_a_reopen_and_a_smaller_cap_trims(
    open_store: Opener, clock: FakeClock, request: pytest.FixtureRequest
) -> None:
    first = open_store()
    for index in range(CAP):
        first.hit(session(index), 3600)
        clock.advance(1)
    first.close()
    second = open_store(CAP // 2)
    second.hit(session(CAP), 3600)
    assert second.count(session(CAP), 3600) == 1
    assert sum(second.count(session(index), 3600) for index in range(CAP + 1)) == CAP // 2
    assert second.count(session(0), 3600) == 0
    second.close()


def test_a_data_dir_the_single_process_store_wrote_is_capped_by_workers(
    tmp_path: Path, clock: FakeClock
) -> None:
    single = SqliteStateStore(tmp_path, clock=clock, keys_per_kind=BEYOND)
    for index in range(BEYOND):
        single.hit(session(index), 3600)
        clock.advance(1)
    single.close()
    workers = [SharedSqliteStateStore(tmp_path, clock=clock, keys_per_kind=CAP) for _ in range(2)]
    for index in range(BEYOND, BEYOND + 10):
        workers[index % 2].hit(session(index), 3600)
    counts = [workers[0].count(session(index), 3600) for index in range(BEYOND + 10)]
    assert sum(counts) == CAP
    assert counts[-CAP:] == [1] * CAP
    for worker in workers:
        worker.close()


def test_every_redis_key_of_a_flood_carries_an_expiry(redis_server: RedisServer, clock: FakeClock) -> None:
    store = RedisStateStore(RedisSettings(url=redis_server.url), clock=clock, keys_per_kind=CAP)
    for index in range(BEYOND):
        store.hit(session(index), 3600)
        store.incr(f"tool.entropy:billing:{digest(str(index))}:n", ttl_s=3600)
        store.put(approval_record(index), 1, 3600)
        store.merge(f"vault:billing:{digest(str(index))}", {"a": 1}, 3600, capacity=10)
        freeze_user(store, f"user-{index}", 3600, "test")
    client = redis_server.client()
    names = list(client.scan_iter(match="egressguard:*", count=1000))
    assert len(names) <= 2 * 4 * (CAP + 1) + 8 + BEYOND
    assert all(client.pttl(name) > 0 for name in names)
    assert store.forgotten == 4 * (BEYOND - CAP)
    store.close()


def test_memory_of_the_in_process_store_stays_flat_once_kinds_are_full(clock: FakeClock) -> None:
    """Past the cap, tripling the ids an agent mints leaves the single-process store's memory where it
    was (traced allocations, not the process's: only what the store keeps)."""
    store = SqliteStateStore(None, clock=clock, keys_per_kind=500)

    def mint(first: int, last: int) -> None:
        for index in range(first, last):
            store.hit(session(index), 3600)
            store.hit(f"tool.limit:{digest('g')}:user:{digest(str(index))}", 60)
            store.merge(f"vault:billing:{digest(str(index))}", {"egv_0": "sealed"}, 3600, capacity=10)
            clock.advance(0.01)

    tracemalloc.start()
    try:
        mint(0, 1000)
        full = tracemalloc.get_traced_memory()[0]
        mint(1000, 4000)
        later = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert later < full * 1.1
    assert store.forgotten == 3 * 3500
    store.close()


@pytest.mark.parametrize("backend", ["sqlite", "sqlite-shared", "redis"])
def test_the_policy_sets_the_cap_on_every_backend_and_the_fallback(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """``state.keys_per_kind`` reaches the store the policy opens (and, with Redis, the local store that
    serves during an outage); ``redaction.vault.max_entries`` reaches the vault settings."""
    section = "keys_per_kind: 7\n"
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        section += f"backend: redis\nurl: {server.url}\n"
    text = (
        f"agents: {{}}\nroles: {{default: {{}}}}\ndata_dir: {tmp_path}\n"
        "redaction: {requests: vault, vault: {max_entries: 3}}\nstate:\n"
    )
    policy = parse_policy(text + textwrap.indent(section, "  "), "p.yaml", environ={})
    assert policy.detection.vault is not None and policy.detection.vault.max_entries == 3
    store = open_state_store(policy.state, policy.data_dir, shared=backend == "sqlite-shared")
    stores = [store.shared, store.local] if isinstance(store, FallbackStore) else [store]
    for each in stores:
        for index in range(20):
            each.hit(session(index), 60)
        assert sum(each.count(session(index), 60) for index in range(20)) == 7
    assert store.forgotten == 13 * len(stores)
    store.close()


def test_keys_forgotten_are_counted_on_the_metrics(tmp_path: Path) -> None:
    """What the store forgets to keep a kind within its cap is a counter an operator can alert on."""
    text = f"agents: {{}}\nroles: {{default: {{}}}}\ndata_dir: {tmp_path}\nstate: {{keys_per_kind: 3}}\n"
    runtime = Runtime(parse_policy(text, "p.yaml", environ={}))
    assert b"egressguard_state_keys_forgotten" not in runtime.metrics.exposition()
    for index in range(10):
        runtime.state.hit(session(index), 60)
    assert b"egressguard_state_keys_forgotten_total 7.0" in runtime.metrics.exposition()
    runtime.close()


def test_a_digest_is_the_values_sha256_whether_kept_or_not() -> None:
    """A short value's digest is kept: asked again, it is still the value's own, as a long value's is."""
    values = ["support-bot", "api.openai.com", "session-é", "u" * 256, "u" * 257, "x" * 5000]
    for _ in range(2):
        for value in values:
            assert digest(value) == hashlib.sha256(value.encode()).hexdigest()[:32]
