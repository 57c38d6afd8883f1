"""State the addons share for the life of the proxy: the loaded policy and the sinks built from it."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.policy import Policy


class NotConfigured(RuntimeError):
    """An addon ran before the policy was loaded: a wiring bug, never a user error."""


@dataclass
class Runtime:
    policy_or_none: Policy | None = None

    @property
    def policy(self) -> Policy:
        if self.policy_or_none is None:
            raise NotConfigured("the egressguard policy is not loaded yet")
        return self.policy_or_none
