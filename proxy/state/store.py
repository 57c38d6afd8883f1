"""The state-store interface the detectors and addons program against.

Every operation is small and maps onto one Redis command or script, so a Redis implementation can sit
behind the same Protocol for replicas that share state: ``incr`` is INCRBY plus EXPIRE NX, ``hit`` and
``count`` a hash of time buckets (HINCRBY, HGETALL, HDEL), ``add_if_new`` SET NX EX on one key per member,
``put``/``get``/``delete`` SET EX, GET and DEL with the value as JSON, ``items`` SCAN MATCH plus MGET,
``merge`` a hash whose fields each carry their own expiry, read and written by one script.

Times are seconds since the epoch from an injectable clock: wall time, not monotonic, because expiries
are persisted and must mean the same thing after a restart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

type Clock = Callable[[], float]

# The most members an expiring set keeps: sets named per agent take one member per new prompt part, host
# or tool sequence, which traffic alone would grow for their whole TTL.
SET_CAPACITY = 10_000

# The most entries the expiring keys of one kind (``proxy.state.keys.kind``) hold, by default: a key
# counts one, a map one per field. Beyond it the keys of that kind that expire first are forgotten
# (for keys of one retention, the least recently used), so keys named per session or user id, which
# an agent can mint with every request, cost a bounded amount of memory. Keys kept forever (no TTL) are
# written for what the policy bounds (agents, writers, tokens) and are not counted.
KEYS_PER_KIND = 10_000


TALLY_WRITE_S = 1.0
"""How long a ``tally`` may wait in memory before it is written: the most a crash of the process can lose
of the statistics kept with it (a clean stop writes them all)."""


class StateUnavailable(RuntimeError):
    """The store cannot be reached. A shared store raises it; what happens next is the policy's
    ``state.on_error`` (``proxy.state.fallback``)."""


type JSONValue = str | int | float | bool | list[JSONValue] | dict[str, JSONValue] | None


class StateStore(Protocol):
    def incr(self, key: str, amount: int = 1, *, ttl_s: float | None = None) -> int:
        """Add ``amount`` to a counter and return its new value.

        A counter that is absent or expired starts from zero and, given ``ttl_s``, expires that long
        after this call; later increments keep that expiry (a fixed window).
        """
        ...

    def counter(self, key: str) -> int:
        """A counter's current value; 0 when absent or expired."""
        ...

    def hit(self, key: str, window_s: float, now: float | None = None) -> int:
        """Record one event at ``now`` and return how many fell within the last ``window_s`` seconds.

        Events are kept for the longest window a key has been hit with, counted in time buckets
        (``proxy.state.buckets``): the count never misses an event of the window and may include
        events up to one bucket width older; the memory a key takes is bounded whatever the traffic.
        """
        ...

    def tally(self, key: str, window_s: float) -> None:
        """``hit`` now, for a statistic whose last moment a crash may lose (a refusal rate, a tool's call
        rate against its baseline), never for a limit or anything else enforced: the event counts at once
        in this process's counts, but a SQLite store may write it to its file up to ``TALLY_WRITE_S``
        later, so that workers sharing the file count it that much later (Redis writes it at once)."""
        ...

    def count(self, key: str, window_s: float, now: float | None = None) -> int:
        """How many events of ``key`` fell within the ``window_s`` seconds up to ``now`` (bucketed as
        ``hit`` says)."""
        ...

    def tally_and_count(
        self, tallies: Sequence[tuple[str, float]], counts: Sequence[tuple[str, float]]
    ) -> list[int]:
        """``tally`` each (key, window_s) of ``tallies``, then ``count`` each of ``counts``, all at one
        moment and in one call (one lock; on Redis one transaction): the counts of a rate and its baseline
        read together, whatever other processes write meanwhile."""
        ...

    def add_if_new(self, set_name: str, member: str, ttl_s: float, now: float | None = None) -> bool:
        """Add ``member`` for ``ttl_s`` seconds from ``now``; True if it was not there (or had expired).

        A repeated add neither refreshes the expiry nor writes anything. Used as a claim, it is taken by
        exactly one caller however many processes share the store. A set holds at most ``SET_CAPACITY``
        members: adding one more forgets the member that expires first (the oldest, for a set added to
        with one TTL), which is then new again if it comes back.
        """
        ...

    def put(self, key: str, value: JSONValue, ttl_s: float | None = None) -> None:
        """Store a JSON-shaped value, replacing any previous one; kept forever without ``ttl_s``."""
        ...

    def get(self, key: str) -> JSONValue | None:
        """A fresh copy of the stored value, or None when absent or expired."""
        ...

    def delete(self, key: str) -> None:
        """Forget a stored value (absent is fine)."""
        ...

    def replace(self, key: str, expected: JSONValue, value: JSONValue) -> bool:
        """Store ``value`` at ``key`` (with no expiry) only where it still holds ``expected``, and say
        whether it did. Atomic: no other process writes ``key`` between the reading and the writing, so a
        value rewritten from what was read never undoes a write made meanwhile."""
        ...

    def merge(
        self, key: str, fields: dict[str, JSONValue], ttl_s: float, *, capacity: int | None = None
    ) -> dict[str, JSONValue]:
        """Set each of ``fields`` in the map at ``key`` for ``ttl_s`` seconds from now (setting a field
        again refreshes its expiry) and return the live fields as they were before; with no ``fields``,
        only read. Atomic: fields set at once by several processes are all kept, and none is read half
        written. Expired fields are dropped. Given ``capacity``, the map keeps at most that many fields:
        beyond it the fields that expire first (the least recently set) are forgotten."""
        ...

    def items(self, prefix: str) -> dict[str, JSONValue]:
        """Every live stored value whose key starts with ``prefix`` (for listings an operator reads:
        freezes, approvals), keyed by the full key."""
        ...

    @property
    def forgotten(self) -> int:
        """How many keys this process has forgotten to keep a kind within its cap, since it started."""
        ...

    def close(self) -> None:
        """Release the backing store; the object is unusable afterwards. Calling it twice is fine."""
        ...
