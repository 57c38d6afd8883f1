"""How much CPU a piece of work costs, for tests that bound how cost grows with input, not how fast a
machine is."""

from __future__ import annotations

import gc
import re
import time
from collections import Counter
from collections.abc import Callable

_REFERENCE_TEXT = "curl -H 'Authorization: Bearer $TOKEN' https://api.example.com/v1/items?page=7\n" * 3000
_REFERENCE_PATTERN = re.compile(r"(?i)\b(?:bearer|token|secret)\b\s*[:=]?\s*\S+|\$\{?[A-Za-z_]\w*")
_REFERENCE_SECONDS = 0.0082
"""The reference work's least CPU time on the machine the tests' bounds were set on, idle."""


def _reference_work() -> None:
    """What the code measured does most: regular expressions over text, words split and counted, strings
    joined."""
    found = [match.group() for match in _REFERENCE_PATTERN.finditer(_REFERENCE_TEXT)]
    counted = Counter(_REFERENCE_TEXT.split())
    "".join(found) + "".join(counted)


def _cpu_seconds(work: Callable[[], object]) -> float:
    started = time.process_time()
    work()
    return time.process_time() - started


def least_cpu_seconds(work: Callable[[], object], runs: int = 3) -> float:
    """The least CPU time of ``runs`` calls of ``work``, with the garbage collector paused (a full
    collection of a test worker's heap, thousands of tests old, can take longer than the work measured,
    and the best of a few runs leaves out the machine's other work), in seconds of the machine the
    tests' bounds were set on: where a fixed reference work, run beside each call, takes longer (a slower
    machine, or one whose other work shares this core's caches), the time is scaled down by as much."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        least = reference = float("inf")
        for _ in range(runs):
            reference = min(reference, _cpu_seconds(_reference_work))
            least = min(least, _cpu_seconds(work))
        return least / max(1.0, reference / _REFERENCE_SECONDS)
    finally:
        if collecting:
            gc.enable()
