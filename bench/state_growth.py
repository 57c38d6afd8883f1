"""What state costs as agents use it: a busy sliding window as it is hit, and an agent minting a new session
and user id (and a new vaulted secret) with every request.

Busy window: resident memory of the single-process store, rows on disk, and the time of a count on the
shared SQLite store, after each block of hits.

The hits are the refusal-rate baseline's: one key kept a week, hit once a second by a fake clock, so three
blocks of 300,000 hits span ten days and the week-long window fills and then slides (the buckets a key
keeps do not depend on how many hits land in each; ``--rate 100`` packs the same hits in 2.5 hours).
Printed per block: hits so
far, resident memory growth since the start (VmRSS), buckets on disk for the key in each SQLite store, and
the median time of a week-long and an hour-long ``count`` on the shared store.

Minted ids (``--ids``, run in a fresh process per cap so resident memory starts clean): per request, what
the proxy keeps for a turn of a new session and user (the session's refusal-rate windows, the user's tool
rate limit beside the agent's, the user's injection-attempt window, a new tool's argument baseline) and
one secret vaulted in the session's vault, 100 requests a second of fake time. Printed per fifth of the
requests: resident memory growth, keys the store holds, keys it forgot, with the default cap per kind
(``state.keys_per_kind``) and, for comparison, with no cap.

    python3 bench/state_growth.py [--hits 300000] [--blocks 3] [--rate 1] [--ids 100000]
"""

from __future__ import annotations

import argparse
import gc
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.scanning.vault import Scope, Sealer, Vault
from proxy.state import SqliteStateStore, digest
from proxy.state.redis_store import RedisSettings, RedisStateStore
from proxy.state.sqlite import DATABASE_NAME
from proxy.state.sqlite_shared import SharedSqliteStateStore
from proxy.state.store import KEYS_PER_KIND
from tests.redis_server import RedisServer

WEEK_S = 7 * 24 * 3600.0
START = 1_700_000_000.0
KEY = "turns:agent:busy"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def buckets_on_disk(directory: Path) -> int:
    reader = sqlite3.connect(directory / DATABASE_NAME)
    try:
        [(rows,)] = reader.execute("SELECT COUNT(*) FROM buckets WHERE key = ?", (KEY,)).fetchall()
        return int(rows)
    finally:
        reader.close()


def median_count_us(store: SharedSqliteStateStore, window_s: float, now: float) -> float:
    times = []
    for _ in range(200):
        began = time.perf_counter()
        store.count(KEY, window_s, now)
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1e6


def keys_held(directory: Path) -> int:
    reader = sqlite3.connect(directory / DATABASE_NAME)
    try:
        [(rows,)] = reader.execute(
            "SELECT (SELECT COUNT(*) FROM windows) + (SELECT COUNT(*) FROM counters)"
            " + (SELECT COUNT(DISTINCT key) FROM fields)"
        ).fetchall()
        return int(rows)
    finally:
        reader.close()


def minted_ids(ids: int, cap: int, redis_url: str | None) -> None:
    """One agent, a new session and user id per request: the figures for one cap, of the single-process
    store (this process's resident memory) or of Redis (the server's ``used_memory``)."""
    tool_limit = digest("shell.*")
    clock = [START]
    sealer, fingerprint_key = Sealer(os.urandom(32)), os.urandom(32)
    with tempfile.TemporaryDirectory() as directory:
        store: SqliteStateStore | RedisStateStore
        if redis_url is None:
            store = SqliteStateStore(Path(directory), clock=lambda: clock[0], keys_per_kind=cap)
            client = None
        else:
            store = RedisStateStore(RedisSettings(url=redis_url), clock=lambda: clock[0], keys_per_kind=cap)
            client = redis.Redis.from_url(redis_url)
            client.flushall()

        def memory_mib() -> float:
            return rss_mib() if client is None else int(client.info("memory")["used_memory"]) / 2**20

        def keys() -> int:
            return keys_held(Path(directory)) if client is None else int(client.dbsize())

        gc.collect()
        baseline = memory_mib()
        for request in range(1, ids + 1):
            session, user = digest(f"session-{request}"), digest(f"user-{request}")
            store.hit(f"turns:session:{session}", WEEK_S)
            store.hit(f"refusals:session:{session}", WEEK_S)
            store.hit(f"tool.limit:{tool_limit}:user:{user}", 60)
            store.hit(f"tool.limit:{tool_limit}:agent:bench", 60)
            store.hit(f"injection.attempts:{user}", 24 * 3600)
            store.incr(f"tool.entropy:bench:{digest(f'tool-{request}')}:n", ttl_s=WEEK_S)
            vault = Vault(
                store, Scope("bench", f"session-{request}"), sealer, fingerprint_key, 24 * 3600, 1000
            )
            vault.stand_in(f"PGPASSWORD=Xk9v2!LmQ#{request}")
            vault.commit()
            clock[0] += 0.01
            if request % (ids // 5) == 0:
                gc.collect()
                print(
                    f"{'memory' if client is None else 'redis':>7} {'none' if cap >= ids * 10 else cap:>6} "
                    f"{request:>8} {memory_mib() - baseline:>9.1f} MiB {keys():>10} {store.forgotten:>10}",
                    flush=True,
                )
        store.close()


def busy_window(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as memory_dir, tempfile.TemporaryDirectory() as shared_dir:
        memory = SqliteStateStore(Path(memory_dir), clock=lambda: START)
        shared = SharedSqliteStateStore(Path(shared_dir), clock=lambda: START)
        gc.collect()
        baseline = rss_mib()
        print(
            f"{'hits':>10} {'RSS growth':>11} {'buckets (memory store)':>23} {'buckets (shared)':>17} "
            f"{'count week':>11} {'count hour':>11}"
        )
        done = 0
        for _ in range(args.blocks):
            for step in range(done, done + args.hits):
                at = START + step / args.rate
                memory.hit(KEY, WEEK_S, now=at)
                # The shared store writes a transaction per hit: every 10th keeps the run short and
                # fills the same buckets.
                if step % 10 == 0:
                    shared.hit(KEY, WEEK_S, now=at)
            done += args.hits
            now = START + done / args.rate
            gc.collect()
            print(
                f"{done:>10} {rss_mib() - baseline:>9.1f} MiB {buckets_on_disk(Path(memory_dir)):>23} "
                f"{buckets_on_disk(Path(shared_dir)):>17} {median_count_us(shared, WEEK_S, now):>8.0f} µs "
                f"{median_count_us(shared, 3600, now):>8.0f} µs"
            )
        memory.close()
        shared.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hits", type=int, default=300_000, help="hits per block")
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1.0, help="hits per second of fake time")
    parser.add_argument("--ids", type=int, default=100_000, help="requests with a new session and user id")
    parser.add_argument("--part", choices=["both", "busy", "ids"], default="both")
    parser.add_argument("--redis", action="store_true", help="also on a redis-server started for the run")
    parser.add_argument("--cap", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cap is not None:
        minted_ids(args.ids, args.cap, args.redis_url)
        return
    if args.part in ("both", "busy"):
        busy_window(args)
    if args.part in ("both", "ids"):
        print(f"\n{'store':>7} {'cap':>6} {'requests':>8} {'growth':>13} {'keys held':>10} {'forgotten':>10}")
        runs = [[], *([["--redis-url"]] if args.redis else [])]
        with tempfile.TemporaryDirectory() as redis_dir:
            server = RedisServer(Path(redis_dir)) if args.redis else None
            try:
                for run in runs:
                    for cap in (KEYS_PER_KIND, args.ids * 10):
                        extra = [*run, server.url] if run and server is not None else []
                        command = [
                            sys.executable,
                            __file__,
                            "--ids",
                            str(args.ids),
                            "--cap",
                            str(cap),
                            *extra,
                        ]
                        subprocess.run(command, check=True)
            finally:
                if server is not None:
                    server.stop()


if __name__ == "__main__":
    main()
