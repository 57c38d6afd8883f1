"""How much CPU a piece of work costs, for tests that bound how cost grows with input, not how fast a
machine is."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable


def least_cpu_seconds(work: Callable[[], object], runs: int = 3) -> float:
    """The least CPU time of ``runs`` calls of ``work``, with the garbage collector paused: a full
    collection of a test worker's heap, thousands of tests old, can take longer than the work measured,
    and the best of a few runs leaves out the machine's other work."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        least = float("inf")
        for _ in range(runs):
            started = time.process_time()
            work()
            least = min(least, time.process_time() - started)
        return least
    finally:
        if collecting:
            gc.enable()
