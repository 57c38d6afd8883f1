"""Rotated agent tokens: a rotation issues an agent a new proxy token, which replaces the policy's.

The ``rotate_token`` alert action rotates the token of each agent its alert names: the old one, which the
alert suggests has leaked, is refused from then on. The new one is shown to no one, and the agent is
refused until an operator issues it one with ``egressguard tokens issue AGENT`` (through the admin API,
with the full admin token), which rotates again and prints the token once, to be set as the agent's
proxy password.

The state store (shared by workers and replicas) keeps of each only its digest
(``proxy.own_tokens.token_digest``), so no copy of the store, its file, a Redis dump or a backup, lets
anyone in. An entry an older version wrote holds the token itself: it is read as its digest, and
rewritten so by ``migrate`` when a store is opened.
"""

from __future__ import annotations

import time

from proxy.own_tokens import TokenKind, new_token, token_digest
from proxy.state import JSONValue, StateStore

_KEY_PREFIX = "agent.token:"
HOW_TO_ISSUE = "egressguard tokens issue {agent}"


def rotate(store: StateStore, agent: str, reason: str) -> str:
    """Issue ``agent`` a new token, replacing any earlier one (and the policy's), and return it: only
    its digest is kept."""
    token = new_token(TokenKind.AGENT)
    entry: dict[str, JSONValue] = {
        "agent": agent,
        "sha256": token_digest(token).hex(),
        "rotated_at": time.time(),
        "reason": reason,
    }
    store.put(_KEY_PREFIX + agent, entry)
    return token


def rotated_digest(store: StateStore, agent: str) -> bytes | None:
    """The digest of the token ``agent`` was issued by a rotation, if it was ever rotated."""
    return _digest(store.get(_KEY_PREFIX + agent))


def rotated_digests(store: StateStore) -> dict[str, bytes]:
    """Every rotated agent's token digest, by agent."""
    found = {_agent(entry): _digest(entry) for entry in store.items(_KEY_PREFIX).values()}
    return {agent: digest for agent, digest in found.items() if agent is not None and digest is not None}


def rotations(store: StateStore) -> list[dict[str, JSONValue]]:
    """Every rotated agent with when and why, oldest first; never a token or its digest."""
    found = [entry for entry in store.items(_KEY_PREFIX).values() if isinstance(entry, dict)]
    listed = [
        {key: value for key, value in entry.items() if key not in ("token", "sha256")} for entry in found
    ]
    return sorted(listed, key=lambda entry: float(entry.get("rotated_at") or 0))  # type: ignore[arg-type]


def migrate(store: StateStore) -> int:
    """Rewrite every entry holding a token itself (as an older version stored it) as its digest; how many
    were rewritten. Each is rewritten only where it still holds what was read (``StateStore.replace``):
    a rotation another worker or replica made meanwhile is never undone by the old token's digest."""
    rewritten = 0
    for key, entry in store.items(_KEY_PREFIX).items():
        legacy = entry.get("token") if isinstance(entry, dict) else None
        if isinstance(entry, dict) and isinstance(legacy, str):
            kept = {name: value for name, value in entry.items() if name != "token"}
            if store.replace(key, entry, {**kept, "sha256": token_digest(legacy).hex()}):
                rewritten += 1
    return rewritten


def _agent(entry: JSONValue | None) -> str | None:
    return str(entry["agent"]) if isinstance(entry, dict) and "agent" in entry else None


def _digest(entry: JSONValue | None) -> bytes | None:
    """None where the agent was never rotated. An entry whose digest cannot be read gives one no token
    matches: the agent stays refused, never let in again with the policy's token (the one that leaked)."""
    if entry is None:
        return None
    stored = entry.get("sha256") if isinstance(entry, dict) else None
    legacy = entry.get("token") if isinstance(entry, dict) else None
    if isinstance(legacy, str) and stored is None:
        return token_digest(legacy)
    try:
        return bytes.fromhex(stored) if isinstance(stored, str) else b""
    except ValueError:
        return b""
