"""What the state-store reads of one turn cost while no one writes: the single-process store, and the
store workers share, which checks for other processes' commits before each read, from the header of the
file's WAL index (as it runs) and by asking SQLite's ``data_version`` at every read (as it did before).

A turn of the throughput bench reads two freezes, a first-seen host, an alert claim and four window
counts (the refusal and turn rates over an hour and a week); they are read here in a loop over a file
nothing else writes, as a worker reads them between the once-a-second writes of the statistics.

    python3 bench/state_reads.py [--turns 20000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.state import SqliteStateStore, StateStore
from proxy.state.sqlite_shared import SharedSqliteStateStore
from proxy.state.wal_index import WalIndexHeader

HOUR, WEEK = 3600.0, 7 * 86400.0


def turn(store: StateStore) -> None:
    store.get("freeze.agent:support-bot")
    store.get("freeze.user:4575a")
    store.add_if_new("egress.first_seen:support-bot", "api.openai.com", WEEK)
    store.add_if_new("alerts.seen:first-seen-egress", "support-bot", HOUR)
    for key in ("refusals:agent:support-bot", "turns:agent:support-bot"):
        store.count(key, HOUR)
        store.count(key, WEEK)


def microseconds_per_turn(open_store: Callable[[Path], StateStore], turns: int) -> float:
    with tempfile.TemporaryDirectory() as directory:
        store = open_store(Path(directory))
        for key in ("refusals:agent:support-bot", "turns:agent:support-bot"):
            store.hit(key, WEEK)
        turn(store)
        turn(store)
        began = time.perf_counter()
        for _ in range(turns):
            turn(store)
        spent = time.perf_counter() - began
        store.close()
    return spent / turns * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20000)
    turns = parser.parse_args().turns
    print(f"one turn's eight state reads, {turns} turns, nothing written meanwhile:")
    print(f"  single-process store: {microseconds_per_turn(SqliteStateStore, turns):.1f} us")
    print(f"  shared store, WAL-index header: {microseconds_per_turn(SharedSqliteStateStore, turns):.1f} us")
    with mock.patch.object(WalIndexHeader, "open", return_value=None):
        asked = microseconds_per_turn(SharedSqliteStateStore, turns)
    print(f"  shared store, data_version at every read: {asked:.1f} us")


if __name__ == "__main__":
    main()
