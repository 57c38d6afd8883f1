"""State the addons share for the life of the proxy: the loaded policy and what is built from it."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from proxy.config.policy import Policy, StateSettings
from proxy.control import tokens
from proxy.control.drill import DrillRuns
from proxy.control.freeze import FreezeMemory
from proxy.control.metrics import Metrics, Sources
from proxy.inspection import Detectors
from proxy.staged import StagedParts
from proxy.state import SqliteStateStore, StateStore, StateUnavailable
from proxy.state.fallback import FallbackStore
from proxy.state.redis_store import RedisStateStore
from proxy.state.sqlite_shared import SharedSqliteStateStore

if TYPE_CHECKING:
    from proxy.alerts import AlertRouter
    from proxy.audit import AuditLog

FINGERPRINT_KEY_FILE = "fingerprint.key"
VAULT_KEY_FILE = "vault.key"


class NotConfigured(RuntimeError):
    """An addon ran before the policy was loaded: a wiring bug, never a user error."""


@dataclass
class Runtime:
    policy_or_none: Policy | None = None
    state_or_none: StateStore | None = None
    writer: str = ""
    """This process's writer id when it is one of several workers; empty for a single process."""
    _detectors: tuple[Policy, Detectors] | None = field(default=None, repr=False)
    audit_log: AuditLog | None = None
    alert_router: AlertRouter | None = None
    _metrics: Metrics | None = field(default=None, repr=False)
    _staged_parts: tuple[Path, StagedParts] | None = field(default=None, repr=False)
    drills: DrillRuns = field(init=False, repr=False)
    freezes: FreezeMemory = field(default_factory=FreezeMemory, repr=False)
    """The freezes this process has read, for while the shared store is away (``on_error: open``)."""
    startup_error: str | None = None
    """Set by an addon that could not start (the admin port in use): the proxy stops with it."""

    def __post_init__(self) -> None:
        self.drills = DrillRuns(lambda: self.state)

    @property
    def policy(self) -> Policy:
        if self.policy_or_none is None:
            raise NotConfigured("the egressguard policy is not loaded yet")
        return self.policy_or_none

    @property
    def state(self) -> StateStore:
        """Counters, windows, freezes and first-seen sets: the store the policy's ``state`` names."""
        if self.state_or_none is None:
            self.state_or_none = open_state_store(
                self.policy.state, self.policy.data_dir, shared=bool(self.writer)
            )
        return self.state_or_none

    @property
    def state_degraded(self) -> bool:
        """True while the shared store is down and this process serves with its own local state."""
        store = self.state_or_none
        return isinstance(store, FallbackStore) and store.degraded

    @property
    def staged_parts(self) -> StagedParts:
        """The parts of uploads kept until their file is read (``proxy.staged``), under ``data_dir``: made
        once per data dir, where every request asked (a path joined anew each time)."""
        data_dir = self.policy.data_dir
        kept = self._staged_parts
        if kept is None or kept[0] is not data_dir:
            kept = self._staged_parts = (data_dir, StagedParts(data_dir / "staged"))
        return kept[1]

    @property
    def detectors(self) -> Detectors:
        return self.load_detectors()

    def load_detectors(self) -> Detectors:
        """The detectors the current policy switches on, built once per policy."""
        policy = self.policy
        if self._detectors is None or self._detectors[0] is not policy:
            self._detectors = (policy, build_detectors(policy))
        return self._detectors[1]

    @property
    def metrics(self) -> Metrics:
        if self._metrics is None:
            sources = Sources(audit=self._audit_figures, alerts=self._alert_figures, state=self._state_figure)
            self._metrics = Metrics(self.policy.agents, sources)
        return self._metrics

    def install(self, policy: Policy, detectors: Detectors) -> None:
        """Swap in a reloaded policy with its detectors, built beforehand: one assignment each, so a
        request sees the old policy or the new one, never a mix."""
        self._detectors = (policy, detectors)
        self.policy_or_none = policy
        self.metrics.agents = frozenset(policy.agents)

    def _audit_figures(self) -> tuple[int, int] | None:
        sink = self.audit_log
        return None if sink is None else (sink.dropped_total, sink.buffered)

    def _state_figure(self) -> int | None:
        store = self.state_or_none
        return None if store is None else store.forgotten

    def _alert_figures(self) -> tuple[int, int, int, int] | None:
        router = self.alert_router
        return None if router is None else (router.delivered, router.retried, router.dropped, router.pending)

    def close(self) -> None:
        if self.state_or_none is not None:
            self.state_or_none.close()
            self.state_or_none = None


def open_state_store(settings: StateSettings, data_dir: Path, *, shared: bool = False) -> StateStore:
    """SQLite under the data dir (read and written in place when ``shared`` by several workers), or Redis
    with this process's in-memory store to fall back on. Rotated tokens an older version kept whole are
    rewritten as their digests; a shared store that does not answer keeps them until the next opening
    (they are read as digests meanwhile)."""
    store = _state_store(settings, data_dir, shared=shared)
    with contextlib.suppress(StateUnavailable):
        tokens.migrate(store)
    return store


def _state_store(settings: StateSettings, data_dir: Path, *, shared: bool) -> StateStore:
    cap = settings.keys_per_kind
    if settings.redis is None:
        directory = data_dir / "state"
        if shared:
            return SharedSqliteStateStore(directory, keys_per_kind=cap)
        return SqliteStateStore(directory, keys_per_kind=cap)
    return FallbackStore(
        RedisStateStore(settings.redis, keys_per_kind=cap),
        SqliteStateStore(None, keys_per_kind=cap),
        on_error=settings.on_error,
    )


def build_detectors(policy: Policy) -> Detectors:
    vault = vault_key(policy.data_dir) if policy.detection.vault is not None else None
    return Detectors(policy, fingerprint_key(policy.data_dir), vault_key=vault)


def fingerprint_key(data_dir: Path) -> bytes:
    """A per-install key for the HMAC fingerprints that let repeats of one secret be correlated without
    storing it (and that derive the vault's placeholders)."""
    return _key_file(data_dir / FINGERPRINT_KEY_FILE)


def vault_key(data_dir: Path) -> bytes:
    """The AES-256 key that seals vaulted secrets in the state store; replicas sharing a Redis store
    share this file too."""
    return _key_file(data_dir / VAULT_KEY_FILE)


def _key_file(path: Path) -> bytes:
    """32 random bytes kept in ``path``: created once, readable by the owner only."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes()
        with os.fdopen(descriptor, "wb") as sink:
            sink.write(os.urandom(32))
    return path.read_bytes()
