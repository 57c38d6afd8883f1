"""Sliding windows as time-bucketed counters, so a busy key costs the same memory as a quiet one.

A window keeps one counter per bucket of time instead of one entry per event: at a hundred events a
second, a week-long baseline is some seven hundred integers rather than sixty million timestamps. The
bucket width follows the longest window the key is kept for (its retention): about a six-hundredth of
it, rounded down to a step of ``WIDTHS`` and never under a second, so a 60 s rate limit counts in 1 s
buckets, an hour in 5 s buckets and a week in 15 min buckets. A key holds at most ``retention / width``
+ 1 buckets per width it has used (the width grows only when the retention does).

A count takes every bucket that overlaps the window whole: it never misses an event of the window and
may include events up to one bucket width older. Over-counting is the safe side for rate limits and
attempt thresholds, and the excess is at most one bucket in 600 of the retention window (less than 0.2 %
for a full-retention count; up to one bucket, e.g. 15 min of a week-kept key, for a narrower count).

Every backend applies these rules: the in-memory store here, the SQLite stores in SQL, Redis in Lua
(``proxy.state.redis_store``, which carries the same width table).
"""

from __future__ import annotations

import functools
import math

# Each a divisor-friendly step; beyond the last, widths are whole hours.
WIDTHS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
BUCKETS_PER_RETENTION = 600


@functools.lru_cache(maxsize=256)  # a few retentions, asked on every count
def bucket_width(retention_s: float) -> int:
    """The bucket width in seconds for a key kept ``retention_s`` seconds."""
    target = retention_s / BUCKETS_PER_RETENTION
    if target >= WIDTHS[-1]:
        return int(target // WIDTHS[-1]) * WIDTHS[-1]
    return max((width for width in WIDTHS if width <= target), default=WIDTHS[0])


def bucket_start(at: float, width: int) -> int:
    """The start of the bucket of width ``width`` that holds time ``at``."""
    return math.floor(at / width) * width


def counted(start: int, width: int, oldest: float, now: float) -> bool:
    """Whether a bucket counts toward a window ``(oldest, now]``: it overlaps it."""
    return start + width > oldest and start <= now


def expired(start: int, width: int, now: float, retention_s: float) -> bool:
    """Whether a bucket lies wholly before the retention and can be dropped."""
    return start + width <= now - retention_s
