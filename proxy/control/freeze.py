"""Freezes: users, sessions and agents that egressguard refuses for a while, kept in the state store.

A freeze is a key with an expiry, so it lifts by itself and survives restarts (and is shared between
replicas when the store is); the store never forgets one earlier to keep its kind within the cap
(``proxy.state.keys.capped``), however many others are made. Alert rules set them (``freeze_user``,
``revoke_session``, ``block_agent``) and so do repeated prompt-injection attempts by one user of an agent,
or by the users of one agent together (``record_injection_attempt``). A user id is the agent's word for
who it serves: a user is frozen for the agent that named it (and everywhere only by an alert naming no
agent), so no agent freezes another agent's user by naming it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, get_args

from proxy.alerts import Alert
from proxy.model import Action, Finding, Severity, Threat
from proxy.state import JSONValue, StateStore, digest
from proxy.state.fallback import serving_locally
from proxy.state.keys import FREEZES

FreezeKind = Literal["agent", "user", "session"]
FREEZE_KINDS: tuple[FreezeKind, ...] = get_args(FreezeKind)

_ATTEMPTS_PREFIX = "injection.attempts"
FREEZE_RULE = "repeat-offender-freeze"
_ACTION_KINDS: dict[str, FreezeKind] = {
    "freeze_user": "user",
    "revoke_session": "session",
    "block_agent": "agent",
}
_STATE_WORDS: dict[FreezeKind, str] = {"agent": "blocked", "user": "frozen", "session": "revoked"}


UNNAMED_CAUSE = Threat.LATERAL_MOVEMENT
"""The threat a freeze is filed under when what made it names none (an alert over an SQL query, a freeze
made before freezes kept their threat): refusing an identity's every request is an egress control, the
taxonomy's answer to lateral movement, and no detector's finding is claimed for it."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused: which of its identities is frozen, the reason given at the time, and the
    threat the freeze answers (what made it: injection attempts, an alert's findings)."""

    kind: FreezeKind
    identity: str
    reason: str
    threat: Threat = UNNAMED_CAUSE
    by_attempts: bool = False
    """Made by repeated prompt-injection attempts (``record_injection_attempt``), not by an alert."""

    def __str__(self) -> str:
        return f"{self.kind} {self.identity!r} is {_STATE_WORDS[self.kind]}: {self.reason}"


def _key(kind: FreezeKind, identity: str, agent_id: str | None = None, *, by_attempts: bool = False) -> str:
    # A freeze made by attempts has a key of its own: written over an alert's, it would turn a block the
    # policy enforces in every mode into one it may only observe, and end it sooner.
    scoped = identity if agent_id is None else f"{agent_id}\x00{identity}"
    return f"{FREEZES}{kind}{'.attempts' if by_attempts else ''}:{digest(scoped)}"


def _freeze(
    store: StateStore,
    kind: FreezeKind,
    identity: str,
    ttl_s: float,
    reason: str,
    threat: Threat | None,
    *,
    agent_id: str | None = None,
    by_attempts: bool = False,
    recorded_identity: str | None = None,
) -> None:
    """Keyed by ``identity`` as requests name it; the entry keeps ``recorded_identity`` (default: the same),
    the identity as the audit records it, so that a secret in an agent's user id is never stored."""
    if ttl_s <= 0:
        raise ValueError(f"a freeze needs a positive duration, not {ttl_s}")
    # The identity is kept in the value (the audit log records it too) so operators can list freezes.
    entry: dict[str, JSONValue] = {
        "reason": reason,
        "kind": kind,
        "identity": identity if recorded_identity is None else recorded_identity,
        "until": time.time() + ttl_s,
    }
    if threat is not None:
        entry["threat"] = str(threat)
    if agent_id is not None:
        entry["agent"] = agent_id
    if by_attempts:
        entry["by_attempts"] = True
    store.put(_key(kind, identity, agent_id, by_attempts=by_attempts), entry, ttl_s)


def freeze_user(
    store: StateStore,
    user_id: str,
    ttl_s: float,
    reason: str,
    threat: Threat | None = None,
    *,
    agent_id: str | None = None,
) -> None:
    """Refuse the user's requests through ``agent_id`` (through every agent where None) for ``ttl_s``
    seconds (a later freeze replaces the earlier one), in answer to ``threat`` (``UNNAMED_CAUSE`` when
    None)."""
    _freeze(store, "user", user_id, ttl_s, reason, threat, agent_id=agent_id)


def revoke_session(
    store: StateStore, session_id: str, ttl_s: float, reason: str, threat: Threat | None = None
) -> None:
    """Refuse every request of the session for ``ttl_s`` seconds, in answer to ``threat``."""
    _freeze(store, "session", session_id, ttl_s, reason, threat)


def block_agent(
    store: StateStore, agent_id: str, ttl_s: float, reason: str, threat: Threat | None = None
) -> None:
    """Refuse every request of the agent for ``ttl_s`` seconds, whatever the policy's mode, in answer to
    ``threat``."""
    _freeze(store, "agent", agent_id, ttl_s, reason, threat)


def lift(store: StateStore, kind: FreezeKind, identity: str) -> bool:
    """End a freeze before it expires (a user's through every agent); False when there was none."""
    keys = [
        key
        for key, entry in store.items(FREEZES).items()
        if isinstance(entry, dict) and entry.get("kind") == kind and entry.get("identity") == identity
    ]
    for key in {_key(kind, identity), _key(kind, identity, by_attempts=True), *keys}:
        store.delete(key)
    return bool(keys)


def active_freezes(store: StateStore) -> list[dict[str, JSONValue]]:
    """Every freeze in force: kind, identity, reason and until (Unix time), earliest end first."""
    found = [value for value in store.items(FREEZES).values() if isinstance(value, dict)]
    return sorted(found, key=lambda entry: float(str(entry.get("until") or 0)))


class FreezeMemory:
    """The freezes one process has read from the store: all of them at its first check, then each as it
    is checked again (a lifted one forgotten). While the shared store is away under ``on_error: open``
    the store answers from this process's local state, which holds none, and a blocked agent, frozen
    user or revoked session is still refused from here until its end."""

    def __init__(self) -> None:
        self.known: dict[str, JSONValue] = {}
        self.loaded = False

    def through(self, store: StateStore, key: str, stored: JSONValue | None) -> JSONValue | None:
        """What the store answered for ``key``, or while it serves locally what was read before."""
        if serving_locally(store):
            return stored if stored is not None else self._live(key)
        if not self.loaded:
            everything = store.items(FREEZES)
            if not serving_locally(store):
                self.known, self.loaded = dict(everything), True
        if stored is None:
            self.known.pop(key, None)
        else:
            self.known[key] = stored
        return stored

    def _live(self, key: str) -> JSONValue | None:
        entry = self.known.get(key)
        if isinstance(entry, dict) and float(str(entry.get("until") or 0)) > time.time():
            return entry
        return None


def refusal(
    store: StateStore,
    agent_id: str | None,
    user_id: str | None,
    session_id: str | None,
    memory: FreezeMemory | None = None,
) -> Refusal | None:
    """The first freeze that applies to these identities (``refusals``), if any."""
    return next(refusals(store, agent_id, user_id, session_id, memory), None)


def refusals(
    store: StateStore,
    agent_id: str | None,
    user_id: str | None,
    session_id: str | None,
    memory: FreezeMemory | None = None,
) -> Iterator[Refusal]:
    """Every freeze that applies to these identities, agent, then user, then session, each made by an
    alert before one made by attempts (a freeze the policy only observes must not hide one it enforces);
    ``memory`` answers for the shared store while it is away."""
    # A user frozen for this agent (by an alert or by attempts), or by an alert naming no agent for every
    # agent; attempts freeze an agent, and a user for the agent only.
    candidates: list[tuple[FreezeKind, str | None, str | None, bool]] = [
        ("agent", agent_id, None, False),
        ("agent", agent_id, None, True),
        *((("user", user_id, agent_id, False), ("user", user_id, agent_id, True)) if agent_id else ()),
        ("user", user_id, None, False),
        ("session", session_id, None, False),
    ]
    for kind, identity, scope, by_attempts in candidates:
        if not identity:
            continue
        key = _key(kind, identity, scope, by_attempts=by_attempts)
        stored = store.get(key)
        if memory is not None:
            stored = memory.through(store, key, stored)
        if stored is not None:
            entry = stored if isinstance(stored, dict) else {}
            reason = str(entry.get("reason") or "no reason recorded")
            named = str(entry.get("threat"))
            threat = Threat(named) if named in set(Threat) else UNNAMED_CAUSE
            yield Refusal(kind, identity, reason, threat, entry.get("by_attempts") is True)


def refusal_reason(
    store: StateStore, agent_id: str | None, user_id: str | None, session_id: str | None
) -> str | None:
    """Why a request from these identities must be refused, or None when none of them is frozen."""
    found = refusal(store, agent_id, user_id, session_id)
    return str(found) if found is not None else None


def record_injection_attempt(
    store: StateStore,
    agent_id: str,
    user_id: str | None,
    *,
    window_s: float,
    threshold: int,
    agent_threshold: int | None,
    ttl_s: float,
    recorded_user_id: str | None = None,
) -> FreezeKind | None:
    """Count one prompt-injection attempt by ``user_id`` (None: unnamed) through ``agent_id``, for the
    user of that agent and for the agent: at ``threshold`` attempts of the user within ``window_s``
    seconds the user is frozen for that agent, at ``agent_threshold`` of the agent's users together
    (named, renamed or unnamed) the agent is blocked (None: the agent's are not counted), each for
    ``ttl_s`` seconds. A user's freeze keeps ``recorded_user_id`` (``_freeze``). Returns what was frozen
    (the agent before its user), or None."""
    within = _duration(window_s)
    # Keyed by the agent's policy name, as its other counters are: one agent minting user ids fills a kind
    # of its own (``proxy.state.keys``), never another agent's counts.
    if (
        agent_threshold is not None
        and store.hit(f"{_ATTEMPTS_PREFIX}.agent:{agent_id}", window_s) >= agent_threshold
    ):
        reason = f"{agent_threshold} prompt-injection attempts by its users within {within}"
        _freeze(store, "agent", agent_id, ttl_s, reason, Threat.PROMPT_INJECTION, by_attempts=True)
        return "agent"
    if user_id is None:
        return None
    attempts = store.hit(f"{_ATTEMPTS_PREFIX}:{agent_id}:{digest(user_id)}", window_s)
    if attempts < threshold:
        return None
    reason = f"{attempts} prompt-injection attempts within {within}"
    _freeze(
        store,
        "user",
        user_id,
        ttl_s,
        reason,
        Threat.PROMPT_INJECTION,
        agent_id=agent_id,
        by_attempts=True,
        recorded_identity=recorded_user_id,
    )
    return "user"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def apply_alert_action(store: StateStore, action: str, alert: Alert, ttl_s: float) -> list[str]:
    """Apply a built-in alert action to the identities the alert names; return those frozen.

    ``freeze_user`` freezes the alert's users (for the agents it names, which named them; for every
    agent where it names none), ``revoke_session`` its sessions and ``block_agent`` its agents, each for
    ``ttl_s`` seconds.
    """
    kind = _ACTION_KINDS.get(action)
    if kind is None:
        raise ValueError(f"unknown alert action {action!r}")
    identities = {"agent": alert.agent_ids, "user": alert.user_ids, "session": alert.session_ids}[kind]
    threat = alert_threat(alert)
    scopes: list[str | None] = list(alert.agent_ids) if kind == "user" and alert.agent_ids else [None]
    for identity in identities:
        for scope in scopes:
            reason = f"alert {alert.rule} ({alert.alert_id})"
            _freeze(store, kind, identity, ttl_s, reason, threat, agent_id=scope)
    return list(identities)


def alert_threat(alert: Alert) -> Threat | None:
    """The threat an alert's freeze answers: of the threats its findings (or, for a rule over an SQL
    query, its rows' ``threat`` column) name, the first in the taxonomy's order; None where none is named."""
    named = set(alert.threats) | {str(row.get("threat")) for row in alert.rows}
    return next((threat for threat in Threat if threat in named), None)


_OWASP = {
    # The taxonomy's OWASP LLM column (DESIGN.md), first entry of each row.
    Threat.PROMPT_INJECTION: "LLM01",
    Threat.JAILBREAK: "LLM01",
    Threat.TOOL_ABUSE: "LLM07",
    Threat.DATA_EXFILTRATION: "LLM02",
    Threat.CONTEXT_POISONING: "LLM03",
    Threat.CREDENTIAL_THEFT: "LLM06",
    Threat.LATERAL_MOVEMENT: "LLM08",
}


def freeze_finding(found: Refusal, *, enforced: bool) -> Finding:
    """The finding a refused (or, in observe mode, would-be refused) request carries, filed under the
    threat the freeze answers."""
    return Finding(
        threat=found.threat,
        rule=FREEZE_RULE,
        signal=str(found),
        severity=Severity.HIGH,
        action=Action.BLOCK,
        where="request",
        owasp=_OWASP.get(found.threat),
        enforced=enforced,
    )
