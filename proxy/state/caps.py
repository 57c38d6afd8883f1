"""How a store in memory keeps each kind of expiring key within its cap (``KEYS_PER_KIND``).

Per kind (``proxy.state.keys.kind``), the keys in the order they expire (for keys of one retention, the
order they were last used) with the entries each holds: beyond the cap, the keys that expire first are
forgotten, never the one just written. A freeze (``proxy.state.keys.capped``) is not accounted for: it is
never forgotten before it expires. The SQLite store shared by workers and the Redis store keep the
same account in a table and in a sorted set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from proxy.state.keys import capped, kind

log = structlog.get_logger("egressguard.state")


@dataclass(slots=True)
class _Kind:
    keys: dict[str, tuple[float, int]] = field(default_factory=dict)
    """Key -> (expiry, entries), in the order of expiry."""
    entries: int = 0
    full: bool = False
    """Whether the kind has reached its cap since it was opened (logged once)."""


class KindCaps:
    def __init__(self, entries_per_kind: int) -> None:
        self.entries_per_kind = entries_per_kind
        self.forgotten = 0
        self._kinds: dict[str, _Kind] = {}
        self._kind_of: dict[str, str] = {}

    def track(self, key: str, expires: float, entries: int = 1) -> list[str]:
        """Account for ``key`` written to last until ``expires`` with ``entries`` entries; return the keys
        of its kind to forget to keep the kind within its cap."""
        if not capped(key):
            return []
        name = self._kind_of.get(key)
        if name is None:
            name = self._kind_of[key] = kind(key)
        tracked = self._kinds.setdefault(name, _Kind())
        before = tracked.keys.get(key)
        if before is not None and expires > before[0]:
            del tracked.keys[key]  # written again to last longer: it moves to the end of the order
        tracked.keys[key] = (expires if before is None else max(expires, before[0]), entries)
        tracked.entries += entries - (0 if before is None else before[1])
        victims: list[str] = []
        while tracked.entries > self.entries_per_kind and len(tracked.keys) > 1:
            victim = next(candidate for candidate in tracked.keys if candidate != key)
            tracked.entries -= tracked.keys.pop(victim)[1]
            del self._kind_of[victim]
            victims.append(victim)
        if victims:
            if not tracked.full:
                tracked.full = True
                log.warning("state.kind_full", kind=name, cap=self.entries_per_kind)
            self.forgotten += len(victims)
        return victims

    def untrack(self, key: str) -> None:
        name = self._kind_of.pop(key, None)
        if name is None:
            return
        tracked = self._kinds[name]
        tracked.entries -= tracked.keys.pop(key)[1]
        if not tracked.keys:
            del self._kinds[name]

    def expire(self, now: float) -> None:
        """Drop the account of every key expired by ``now``."""
        expired = [
            key
            for tracked in self._kinds.values()
            for key, (expires, _) in tracked.keys.items()
            if expires <= now
        ]
        for key in expired:
            self.untrack(key)
