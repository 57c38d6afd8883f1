"""The Redis state store on a real redis-server: namespacing, expiry, TLS and auth, outages and on_error.

The Protocol's behaviours run against both backends in test_state.py; this file holds what only a
shared, networked store has.
"""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path

import pytest

from proxy.commands.localca import make_pki
from proxy.config.policy import parse_policy
from proxy.config.yamlschema import SchemaError
from proxy.runtime import open_state_store
from proxy.state import SqliteStateStore, StateStore
from proxy.state.fallback import FallbackStore
from proxy.state.redis_store import RedisSettings, RedisStateStore
from proxy.state.store import StateUnavailable
from tests.redis_server import RedisServer

PASSWORD = "redis-test-password"


def exercise(store: StateStore) -> None:
    """One of every operation, with and without expiry."""
    store.incr("requests")
    store.incr("calls", ttl_s=60)
    store.hit("window", 30)
    store.add_if_new("seen:agent", "host", 600)
    store.put("forever", {"a": 1})
    store.put("freeze:u", {"reason": "x"}, ttl_s=3600)
    store.merge("vault:a", {"p": "sealed"}, 600)


def test_keys_are_namespaced_and_expiring_ones_carry_a_redis_expiry(redis_server: RedisServer) -> None:
    """Every key sits under the namespace; each key of an expiring entry has a server-side expiry."""
    store = RedisStateStore(RedisSettings(url=redis_server.url, namespace="team-a"))
    exercise(store)
    client = redis_server.client()
    keys = sorted(key.decode() if isinstance(key, bytes) else key for key in client.keys("*"))
    assert keys and all(key.startswith("team-a:") for key in keys)
    persistent = {key for key in keys if client.pttl(key) == -1}
    assert persistent == {"team-a:c:requests", "team-a:v:forever"}
    store.close()


def test_namespaces_do_not_see_each_other(redis_server: RedisServer) -> None:
    """Two deployments on one server, with different namespaces, share nothing."""
    first = RedisStateStore(RedisSettings(url=redis_server.url, namespace="one"))
    second = RedisStateStore(RedisSettings(url=redis_server.url, namespace="two"))
    first.put("freeze", True)
    assert first.incr("c") == 1
    assert second.get("freeze") is None
    assert second.incr("c") == 1
    first.close()
    second.close()


def test_a_busy_window_stays_bounded_on_the_server(redis_server: RedisServer) -> None:
    """A key hit thousands of times holds only its window's buckets."""
    store = RedisStateStore(RedisSettings(url=redis_server.url))
    start = 1_700_000_000.0
    for step in range(3000):
        store.hit("busy", 10, now=start + step * 0.1)
    assert store.count("busy", 10, now=start + 2999 * 0.1) in range(100, 111)
    assert redis_server.client().hlen("egressguard:b:busy") <= 11
    store.close()


def test_processes_sharing_a_server_share_state(redis_server: RedisServer) -> None:
    """What one client writes, another sees; increments from many threads and clients all count."""
    stores = [RedisStateStore(RedisSettings(url=redis_server.url)) for _ in range(3)]
    stores[0].put("freeze:user", {"reason": "r"}, ttl_s=60)
    assert stores[1].get("freeze:user") == {"reason": "r"}
    assert stores[1].add_if_new("seen", "m", 60)
    assert not stores[2].add_if_new("seen", "m", 60)

    def work(store: StateStore) -> None:
        for _ in range(100):
            store.incr("shared", ttl_s=60)
            store.hit("window", 60)

    threads = [threading.Thread(target=work, args=(store,)) for store in stores for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stores[0].counter("shared") == 600
    assert stores[2].count("window", 60) == 600
    for store in stores:
        store.close()


def test_claim_is_taken_once_across_clients(redis_server: RedisServer) -> None:
    """add_if_new used as a claim: of many concurrent claimers exactly one wins."""
    stores = [RedisStateStore(RedisSettings(url=redis_server.url)) for _ in range(4)]
    wins: list[bool] = []
    barrier = threading.Barrier(len(stores))

    def claim(store: StateStore) -> None:
        barrier.wait()
        wins.append(store.add_if_new("alerts.fired", "rule:group", 60))

    threads = [threading.Thread(target=claim, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [False, False, False, True]
    for store in stores:
        store.close()


def test_tls_with_a_ca_file_and_a_password(tmp_path: Path) -> None:
    """rediss:// with the server's CA and the password works; without the password, or without the CA,
    the store reports itself unavailable instead of crashing."""
    pki = make_pki(tmp_path / "pki", ("localhost",))
    server = RedisServer(tmp_path, password=PASSWORD, tls=(pki.ca_cert, pki.server_cert, pki.server_key))
    try:
        good = RedisStateStore(RedisSettings(url=server.url, password=PASSWORD, ca_file=str(pki.ca_cert)))
        assert good.incr("c") == 1
        assert good.incr("c") == 2
        good.close()
        no_password = RedisStateStore(RedisSettings(url=server.url, ca_file=str(pki.ca_cert)))
        with pytest.raises(StateUnavailable):
            no_password.incr("c")
        no_password.close()
        untrusted = RedisStateStore(RedisSettings(url=server.url, password=PASSWORD))
        with pytest.raises(StateUnavailable):
            untrusted.incr("c")
        untrusted.close()
    finally:
        server.stop()


def test_password_from_the_url_also_works(tmp_path: Path) -> None:
    """The password may be part of the URL, as redis clients accept it."""
    server = RedisServer(tmp_path, password=PASSWORD)
    try:
        store = RedisStateStore(RedisSettings(url=f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"))
        store.put("k", 1)
        assert store.get("k") == 1
        store.close()
    finally:
        server.stop()


def test_a_stopped_server_is_reported_at_once(own_redis: RedisServer) -> None:
    """With the server gone, an operation raises StateUnavailable quickly rather than hanging or crashing."""
    store = RedisStateStore(RedisSettings(url=own_redis.url))
    store.incr("c")
    own_redis.stop()
    started = time.monotonic()
    with pytest.raises(StateUnavailable):
        store.incr("c")
    assert time.monotonic() - started < 1.5
    store.close()


# --- on_error -------------------------------------------------------------------------------------------


class StepClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_open_serves_locally_during_an_outage_and_returns(own_redis: RedisServer) -> None:
    """on_error open: an outage switches to the local store (counted, flagged), and the shared store is
    used again once it answers."""
    monotonic = StepClock()
    store = FallbackStore(
        RedisStateStore(RedisSettings(url=own_redis.url)),
        SqliteStateStore(None),
        on_error="open",
        retry_after_s=1.0,
        monotonic=monotonic,
    )
    assert store.incr("c") == 1
    own_redis.stop()
    assert store.incr("c") == 1  # the local store knows nothing of the shared count
    assert store.degraded and store.fallbacks == 1 and store.outages == 1
    assert store.incr("c") == 2
    own_redis.start()
    assert store.incr("c") == 3  # still within retry_after: local
    monotonic.now = 1.5
    assert store.incr("c") == 1  # the restarted server (no persistence) answers again
    assert not store.degraded and store.outages == 1
    store.close()


def test_a_batch_of_tallies_and_counts_is_served_whole_by_one_store(own_redis: RedisServer) -> None:
    """on_error open: a tally_and_count is answered by the shared store while it answers and wholly by the
    local one once it is gone, never partly by each."""
    store = FallbackStore(
        RedisStateStore(RedisSettings(url=own_redis.url)), SqliteStateStore(None), on_error="open"
    )
    counts = [("turns:agent:a", 60), ("turns:agent:a", 3600)]
    for _ in range(3):
        store.tally("turns:agent:a", 3600)
    assert store.tally_and_count([("turns:agent:a", 3600)], counts) == [4, 4]
    assert own_redis.client().exists("egressguard:b:turns:agent:a") == 1
    own_redis.stop()
    assert store.tally_and_count([("turns:agent:a", 3600)], counts) == [1, 1]
    assert store.degraded and store.fallbacks == 1
    store.close()


def test_closed_refuses_during_an_outage(own_redis: RedisServer) -> None:
    """on_error closed: every operation raises StateUnavailable while the server is gone."""
    store = FallbackStore(
        RedisStateStore(RedisSettings(url=own_redis.url)), SqliteStateStore(None), on_error="closed"
    )
    store.put("freeze:u", True)
    own_redis.stop()
    with pytest.raises(StateUnavailable, match="on_error is closed"):
        store.get("freeze:u")
    with pytest.raises(StateUnavailable):
        store.incr("c")
    assert store.degraded
    store.close()


# --- the policy's state section -------------------------------------------------------------------------


def state_policy(data_dir: Path, section: str, environ: dict[str, str]) -> StateStore:
    text = f"agents: {{}}\nroles: {{default: {{}}}}\ndata_dir: {data_dir}\nstate:\n"
    policy = parse_policy(text + textwrap.indent(section, "  "), "p.yaml", environ=environ)
    return open_state_store(policy.state, policy.data_dir)


def test_policy_opens_redis_with_password_from_env(tmp_path: Path) -> None:
    """state: {backend: redis, url, password_env} reaches a server that needs the password."""
    server = RedisServer(tmp_path, password=PASSWORD)
    try:
        section = f"backend: redis\nurl: {server.url}\npassword_env: REDIS_PW\nnamespace: eg\n"
        store = state_policy(tmp_path, section, {"REDIS_PW": PASSWORD})
        store.put("k", {"v": 1})
        assert server.client().exists("eg:v:k") == 1
        store.close()
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("backend: redis\n", "needs url"),
        ("backend: redis\nurl: http://x\n", "must start with redis://"),
        ("backend: redis\nurl: redis://h\nca_file: ca.pem\n", "need a rediss://"),
        ("backend: redis\nurl: rediss://h\ncert_file: c.pem\n", "go together"),
        ("backend: redis\nurl: redis://h\nurl_env: U\n", "not both"),
        ("backend: redis\nurl_env: UNSET\n", "environment variable UNSET is not set or empty"),
        ("url: redis://h\n", "backend: redis only"),
        ("backend: redis\nurl: redis://h\non_error: maybe\n", "on_error"),
    ],
)
def test_bad_state_sections_are_reported(section: str, message: str) -> None:
    """Each mistake in the state section is an error naming the problem."""
    text = "agents: {}\nroles: {default: {}}\nstate:\n" + textwrap.indent(section, "  ")
    with pytest.raises(SchemaError) as raised:
        parse_policy(text, "p.yaml", environ={})
    assert message in str(raised.value)


def test_sqlite_stays_the_default(tmp_path: Path) -> None:
    """Without a state section the store is SQLite under the data dir."""
    store = state_policy(tmp_path, "on_error: open\n", {})
    assert isinstance(store, SqliteStateStore)
    store.close()


def test_readme_state_example_checks_clean() -> None:
    """The Redis section shown in the README is a valid policy section."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    example = readme.split("## Shared state", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    policy = parse_policy(example, "README.md", environ={"REDIS_PASSWORD": "pw"})
    assert policy.state.backend == "redis" and policy.state.redis is not None
    assert policy.state.redis.ca_file == "/etc/egressguard/redis-ca.pem"
