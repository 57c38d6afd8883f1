"""Rotated agent tokens in the real state stores (a SQLite file, a redis-server): what is stored is a
digest, never the token, and the token authenticates; tokens an older version stored whole are rewritten
as digests when the store is opened, and still authenticate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
import redis

from addons.gate.identity import AgentTokens
from proxy.config.policy import Agent, StateSettings
from proxy.control import tokens
from proxy.runtime import open_state_store
from proxy.state import JSONValue, StateStore
from proxy.state.redis_store import RedisSettings
from proxy.state.sqlite import SqliteStateStore
from proxy.state.sqlite_shared import SharedSqliteStateStore
from tests.redis_server import RedisServer

AGENTS = {
    name: Agent(name=name, role="r", token=f"policy-token-of-{name}") for name in ("bot", "old", "other")
}
LEGACY = "Q2xlYXJ0ZXh0LXJvdGF0ZWQtdG9rZW4tZnJvbS12MQ"
"""A rotated token as an older version stored it: whole, under ``token``."""


def legacy_rotation(store: StateStore, agent: str, token: str) -> None:
    store.put(
        f"agent.token:{agent}", {"agent": agent, "token": token, "rotated_at": 1.0, "reason": "alert a"}
    )


def sqlite_bytes(directory: Path) -> bytes:
    """Everything the store has on disk: the database, its write-ahead log and its index."""
    return b"".join(path.read_bytes() for path in sorted(directory.glob("state/*")) if path.is_file())


def redis_values(client: redis.Redis) -> str:
    """Every key and value the server holds, whatever its type, as one text."""
    found: list[object] = []
    for key in client.keys("*"):
        kind = client.type(key)
        if kind == b"string":
            found += (key, client.get(key))
        elif kind == b"hash":
            found += (key, client.hgetall(key))
        elif kind == b"zset":
            found += (key, client.zrange(key, 0, -1))
        else:
            raise AssertionError(f"a {kind!r} at {key!r}: read it here too")
    return repr(found)


def authenticates(store: StateStore, agent: str, token: str) -> bool:
    return AgentTokens(AGENTS, lambda: store)(agent, token)


SQLITE_STORES: dict[str, Callable[[Path], StateStore]] = {
    "sqlite": lambda directory: SqliteStateStore(directory / "state"),
    "shared sqlite": lambda directory: SharedSqliteStateStore(directory / "state"),
}


@pytest.mark.parametrize("make", SQLITE_STORES.values(), ids=SQLITE_STORES.keys())
def test_a_rotated_token_is_stored_as_its_digest_in_sqlite(
    tmp_path: Path, make: Callable[[Path], StateStore]
) -> None:
    store = make(tmp_path)
    issued = tokens.rotate(store, "bot", "alert a")
    assert authenticates(store, "bot", issued) and not authenticates(store, "bot", "policy-token-of-bot")
    store.close()
    assert issued.encode() not in sqlite_bytes(tmp_path)
    reopened = make(tmp_path)
    assert authenticates(reopened, "bot", issued) and not authenticates(reopened, "bot", issued[:-1])
    reopened.close()


@pytest.mark.parametrize("shared", [False, True])
def test_tokens_an_older_version_stored_whole_are_rewritten_when_sqlite_opens(
    tmp_path: Path, shared: bool
) -> None:
    older = (SharedSqliteStateStore if shared else SqliteStateStore)(tmp_path / "state")
    legacy_rotation(older, "old", LEGACY)
    older.close()
    assert LEGACY.encode() in sqlite_bytes(tmp_path)
    store = open_state_store(StateSettings(), tmp_path, shared=shared)
    assert authenticates(store, "old", LEGACY) and not authenticates(store, "old", "policy-token-of-old")
    issued = tokens.rotate(store, "bot", "alert b")
    assert authenticates(store, "bot", issued) and authenticates(store, "other", "policy-token-of-other")
    assert [entry["agent"] for entry in tokens.rotations(store)] == ["old", "bot"]
    store.close()
    on_disk = sqlite_bytes(tmp_path)
    assert LEGACY.encode() not in on_disk and issued.encode() not in on_disk
    again = open_state_store(StateSettings(), tmp_path, shared=shared)
    assert authenticates(again, "old", LEGACY) and authenticates(again, "bot", issued)
    again.close()


def redis_settings(server: RedisServer) -> StateSettings:
    return StateSettings(backend="redis", redis=RedisSettings(url=server.url))


def test_a_rotated_token_is_stored_as_its_digest_in_redis(redis_server: RedisServer) -> None:
    store = open_state_store(redis_settings(redis_server), Path("/nonexistent"))
    issued = tokens.rotate(store, "bot", "alert a")
    assert issued not in redis_values(redis_server.client())
    replica = open_state_store(redis_settings(redis_server), Path("/nonexistent"))
    assert authenticates(replica, "bot", issued) and not authenticates(replica, "bot", "policy-token-of-bot")
    store.close()
    replica.close()


def test_tokens_an_older_version_stored_whole_are_rewritten_when_redis_opens(
    redis_server: RedisServer,
) -> None:
    older = open_state_store(redis_settings(redis_server), Path("/nonexistent"))
    legacy_rotation(older, "old", LEGACY)
    assert LEGACY in redis_values(redis_server.client())
    # Read before any newer process opened the store: the whole token is compared by its digest.
    assert authenticates(older, "old", LEGACY) and not authenticates(older, "old", "policy-token-of-old")
    store = open_state_store(redis_settings(redis_server), Path("/nonexistent"))
    assert LEGACY not in redis_values(redis_server.client())
    assert authenticates(store, "old", LEGACY) and not authenticates(store, "old", "policy-token-of-old")
    issued = tokens.rotate(store, "bot", "alert b")
    assert authenticates(older, "bot", issued) and authenticates(store, "other", "policy-token-of-other")
    assert issued not in redis_values(redis_server.client())
    older.close()
    store.close()


def test_a_digest_that_cannot_be_read_lets_no_token_in(tmp_path: Path) -> None:
    """A rotated entry damaged in the store keeps the agent refused: never let in with the policy's token,
    the one the rotation took away."""
    store = SqliteStateStore(None)
    store.put("agent.token:bot", {"agent": "bot", "sha256": "not hex", "rotated_at": 1.0})
    store.put("agent.token:other", "neither a digest nor a token")
    assert not authenticates(store, "bot", "policy-token-of-bot")
    assert not authenticates(store, "other", "policy-token-of-other")
    assert authenticates(store, "old", "policy-token-of-old")


class RotatedWhileMigrating:
    """A store whose listing is followed, before anything is rewritten, by another process rotating the
    agent it lists: the interleaving a migration meets when another worker or replica rotates the token
    of an agent the migration has just read."""

    def __init__(self, store: StateStore, other: StateStore) -> None:
        self.store, self.other, self.issued = store, other, ""

    def items(self, prefix: str) -> dict[str, JSONValue]:
        found = self.store.items(prefix)
        self.issued = tokens.rotate(self.other, "old", "alert c")
        return found

    def replace(self, key: str, expected: JSONValue, value: JSONValue) -> bool:
        return self.store.replace(key, expected, value)


def _migration_keeps_a_rotation_made_meanwhile(store: StateStore, other: StateStore) -> None:
    legacy_rotation(store, "old", LEGACY)
    racing = RotatedWhileMigrating(store, other)
    assert tokens.migrate(cast(StateStore, racing)) == 0
    assert authenticates(store, "old", racing.issued) and not authenticates(store, "old", LEGACY)
    # With nothing racing it, the same migration rewrites what it read.
    legacy_rotation(store, "old", LEGACY)
    assert tokens.migrate(store) == 1
    assert authenticates(other, "old", LEGACY)


@pytest.mark.parametrize("make", SQLITE_STORES.values(), ids=SQLITE_STORES.keys())
def test_a_migration_never_undoes_a_rotation_made_meanwhile_in_sqlite(
    tmp_path: Path, make: Callable[[Path], StateStore]
) -> None:
    """Read then written, the migration would put the leaked token's digest back over the new one."""
    store = make(tmp_path)
    other = SharedSqliteStateStore(tmp_path / "state") if isinstance(store, SharedSqliteStateStore) else store
    _migration_keeps_a_rotation_made_meanwhile(store, other)
    for each in {id(store): store, id(other): other}.values():
        each.close()


def test_a_migration_never_undoes_a_rotation_made_meanwhile_in_redis(redis_server: RedisServer) -> None:
    store = open_state_store(redis_settings(redis_server), Path("/nonexistent"))
    replica = open_state_store(redis_settings(redis_server), Path("/nonexistent"))
    _migration_keeps_a_rotation_made_meanwhile(store, replica)
    assert not store.replace("agent.token:none", {"agent": "none"}, {"agent": "x"})
    store.close()
    replica.close()
