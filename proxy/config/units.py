"""Human units in configuration: durations (``90s``, ``24h``, ``7d``) and sizes (``8MiB``)."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"\s*(\d+)\s*(ms|[smhdw])\s*")
_DURATION_UNITS = {
    "ms": "milliseconds",
    "s": "seconds",
    "m": "minutes",
    "h": "hours",
    "d": "days",
    "w": "weeks",
}
_SIZE = re.compile(r"(\d+)\s*([kmg]?)(?:i?b)?", re.IGNORECASE)


def parse_duration(text: str) -> timedelta:
    """``50ms``, ``90s``, ``5m``, ``24h``, ``7d``, ``2w``; raises ValueError otherwise."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use a number and ms, s, m, h, d or w, e.g. 24h)")
    try:
        return timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        raise ValueError(f"{text.strip()!r} is too long a duration") from None


def parse_size(text: str) -> int:
    """``8MiB``, ``512KiB``, ``1048576`` in bytes; raises ValueError otherwise."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size (like 8MiB, 512KiB or 1048576)")
    exponent = " kmg".index(match[2].lower() or " ")
    return int(match[1]) << (10 * exponent)


def parse_rate(text: str) -> tuple[int, float]:
    """``20/1h`` (calls per window) as (calls, window seconds); raises ValueError otherwise."""
    calls, sep, window = text.partition("/")
    if not sep or not calls.strip().isdigit() or int(calls) < 1:
        raise ValueError(f"not a rate: {text!r} (use calls/window, e.g. 20/1h)")
    return int(calls), parse_duration(window).total_seconds()
