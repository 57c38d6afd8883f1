"""What happens when the shared store cannot be reached: the policy's ``state.on_error``.

``open``: every operation the shared store cannot serve is served by this process's local store, so
agents keep working with what this process knows (its own rate-limit counts, its own freezes) while the
outage lasts; each outage is logged once when it starts and once when it ends, counted, and visible as
``degraded`` so the turns served meanwhile record it. ``closed``: the operation raises
``StateUnavailable`` and the caller refuses the request.

After a failure the shared store is not asked again for ``retry_after_s``, so an outage costs requests
one failed attempt a second, not a timeout each.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Literal

import structlog

from proxy.state.store import JSONValue, StateStore, StateUnavailable

log = structlog.get_logger("egressguard.state")

type OnError = Literal["open", "closed"]


class FallbackStore:
    """A ``StateStore`` that serves from ``shared`` and, while it is unavailable, follows ``on_error``."""

    def __init__(
        self,
        shared: StateStore,
        local: StateStore,
        *,
        on_error: OnError,
        retry_after_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shared = shared
        self.local = local
        self.on_error = on_error
        self.retry_after_s = retry_after_s
        self.fallbacks = 0
        """Operations served by the local store (``open``) or refused (``closed``) since the start."""
        self.outages = 0
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._down_until: float | None = None
        self._reason = ""

    @property
    def degraded(self) -> bool:
        """True while the shared store is known to be unreachable."""
        return self._down_until is not None

    def _call[T](self, operation: Callable[[StateStore], T]) -> T:
        down_until = self._down_until
        if down_until is None or self._monotonic() >= down_until:
            try:
                result = operation(self.shared)
            except StateUnavailable as error:
                self._went_down(str(error))
            else:
                if down_until is not None:
                    self._came_back()
                return result
        with self._lock:
            self.fallbacks += 1
        if self.on_error == "closed":
            raise StateUnavailable(f"shared state store unavailable ({self._reason}); on_error is closed")
        return operation(self.local)

    def _went_down(self, reason: str) -> None:
        with self._lock:
            first = self._down_until is None
            self._down_until = self._monotonic() + self.retry_after_s
            self._reason = reason
            if first:
                self.outages += 1
        if first:
            log.error("state.unavailable", reason=reason, on_error=self.on_error)

    def _came_back(self) -> None:
        with self._lock:
            if self._down_until is None:
                return
            self._down_until = None
        log.warning("state.available", served_meanwhile=self.fallbacks)

    # --- the StateStore Protocol --------------------------------------------------------------------------

    def incr(self, key: str, amount: int = 1, *, ttl_s: float | None = None) -> int:
        return self._call(lambda store: store.incr(key, amount, ttl_s=ttl_s))

    def counter(self, key: str) -> int:
        return self._call(lambda store: store.counter(key))

    def hit(self, key: str, window_s: float, now: float | None = None) -> int:
        return self._call(lambda store: store.hit(key, window_s, now))

    def tally(self, key: str, window_s: float) -> None:
        self._call(lambda store: store.tally(key, window_s))

    def count(self, key: str, window_s: float, now: float | None = None) -> int:
        return self._call(lambda store: store.count(key, window_s, now))

    def tally_and_count(
        self, tallies: Sequence[tuple[str, float]], counts: Sequence[tuple[str, float]]
    ) -> list[int]:
        return self._call(lambda store: store.tally_and_count(tallies, counts))

    def add_if_new(self, set_name: str, member: str, ttl_s: float, now: float | None = None) -> bool:
        return self._call(lambda store: store.add_if_new(set_name, member, ttl_s, now))

    def put(self, key: str, value: JSONValue, ttl_s: float | None = None) -> None:
        self._call(lambda store: store.put(key, value, ttl_s))

    def get(self, key: str) -> JSONValue | None:
        return self._call(lambda store: store.get(key))

    def delete(self, key: str) -> None:
        self._call(lambda store: store.delete(key))

    def replace(self, key: str, expected: JSONValue, value: JSONValue) -> bool:
        return self._call(lambda store: store.replace(key, expected, value))

    def merge(
        self, key: str, fields: dict[str, JSONValue], ttl_s: float, *, capacity: int | None = None
    ) -> dict[str, JSONValue]:
        return self._call(lambda store: store.merge(key, fields, ttl_s, capacity=capacity))

    def items(self, prefix: str) -> dict[str, JSONValue]:
        return self._call(lambda store: store.items(prefix))

    @property
    def forgotten(self) -> int:
        return self.shared.forgotten + self.local.forgotten

    def close(self) -> None:
        self.shared.close()
        self.local.close()


def serving_locally(store: StateStore) -> bool:
    """Whether ``store`` answers from this process's local state: a shared store found away under
    ``on_error: open``. What only the shared store holds (a rotated token, a freeze) is then unknown."""
    return isinstance(store, FallbackStore) and store.degraded
