"""Rotated agent tokens: the ``rotate_token`` alert action issues an agent a new proxy token.

The new token lives in the state store (shared by workers and replicas) and replaces the policy's token
at once: the old one, which the alert suggests has leaked, is refused from then on. The agent gets the
new one from an operator: ``egressguard tokens show AGENT`` prints it (through the admin API, with the
full admin token), to be set as the agent's proxy password.
"""

from __future__ import annotations

import secrets
import time

from proxy.state import JSONValue, StateStore

_KEY_PREFIX = "agent.token:"
HOW_TO_FETCH = "egressguard tokens show {agent}"


def rotate(store: StateStore, agent: str, reason: str) -> None:
    """Issue ``agent`` a new token, replacing any earlier one (and the policy's)."""
    entry: dict[str, JSONValue] = {
        "agent": agent,
        "token": secrets.token_urlsafe(24),
        "rotated_at": time.time(),
        "reason": reason,
    }
    store.put(_KEY_PREFIX + agent, entry)


def rotated_token(store: StateStore, agent: str) -> str | None:
    """The token ``agent`` was issued by a rotation, if it was ever rotated."""
    entry = store.get(_KEY_PREFIX + agent)
    return str(entry["token"]) if isinstance(entry, dict) and "token" in entry else None


def rotated_tokens(store: StateStore) -> dict[str, str]:
    """Every rotated agent's token, by agent."""
    found = store.items(_KEY_PREFIX).values()
    return {
        str(entry["agent"]): str(entry["token"])
        for entry in found
        if isinstance(entry, dict) and "agent" in entry and "token" in entry
    }


def rotations(store: StateStore) -> list[dict[str, JSONValue]]:
    """Every rotated agent with when and why, oldest first; never the tokens."""
    found = [entry for entry in store.items(_KEY_PREFIX).values() if isinstance(entry, dict)]
    listed = [{key: value for key, value in entry.items() if key != "token"} for entry in found]
    return sorted(listed, key=lambda entry: float(entry.get("rotated_at") or 0))  # type: ignore[arg-type]
