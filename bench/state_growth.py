"""What a busy sliding window costs as it is hit: resident memory of the single-process store, rows on
disk, and the time of a count on the shared SQLite store, after each block of hits.

The hits are the refusal-rate baseline's: one key kept a week, hit once a second by a fake clock, so three
blocks of 300,000 hits span ten days and the week-long window fills and then slides (the buckets a key
keeps do not depend on how many hits land in each; ``--rate 100`` packs the same hits in 2.5 hours).
Printed per block: hits so
far, resident memory growth since the start (VmRSS), buckets on disk for the key in each SQLite store, and
the median time of a week-long and an hour-long ``count`` on the shared store.

    python3 bench/state_growth.py [--hits 300000] [--blocks 3] [--rate 1]
"""

from __future__ import annotations

import argparse
import gc
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.state import SqliteStateStore
from proxy.state.sqlite import DATABASE_NAME
from proxy.state.sqlite_shared import SharedSqliteStateStore

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hits", type=int, default=300_000, help="hits per block")
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1.0, help="hits per second of fake time")
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
