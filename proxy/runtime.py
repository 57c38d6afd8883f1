"""State the addons share for the life of the proxy: the loaded policy and what is built from it."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.policy import Policy
from proxy.state import SqliteStateStore, StateStore


class NotConfigured(RuntimeError):
    """An addon ran before the policy was loaded: a wiring bug, never a user error."""


@dataclass
class Runtime:
    policy_or_none: Policy | None = None
    state_or_none: StateStore | None = None

    @property
    def policy(self) -> Policy:
        if self.policy_or_none is None:
            raise NotConfigured("the egressguard policy is not loaded yet")
        return self.policy_or_none

    @property
    def state(self) -> StateStore:
        """Counters, windows and first-seen sets, persisted under the policy's data dir."""
        if self.state_or_none is None:
            self.state_or_none = SqliteStateStore(self.policy.data_dir / "state")
        return self.state_or_none

    def close(self) -> None:
        if self.state_or_none is not None:
            self.state_or_none.close()
            self.state_or_none = None
