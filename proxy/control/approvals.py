"""Approvals for withheld destructive tool calls, kept in the state store.

A withheld call registers a pending approval bound to the agent, the tool and the sha256 of the call's
canonical arguments. An operator grants or denies it (admin API, ``egressguard approvals``); a granted
approval lets exactly that call through, for the number of uses the approver set, until it expires.
Every other ``X-Approval-Id`` is refused (rule ``approval-invalid``).

Uses are counted with the store's atomic ``incr``, so two replicas cannot both spend the last use.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, cast

from proxy.state import JSONValue, StateStore, digest

PENDING_TTL_S = 3600.0
"""How long a pending approval waits for an operator."""
GRANT_TTL_S = 3600.0
"""How long a granted approval stays usable, unless the approver says otherwise."""
SUMMARY_CHARS = 200

_RECORD_PREFIX = "approval:"
_USES_PREFIX = "approval.used:"
_PENDING_INDEX = "approval.pending:"
_GENERATION_SUFFIX = ":generation"
_GENERATION_TTL_S = 7 * 24 * 3600.0
"""Outlives every claim made under it (a claim lasts as long as a pending approval)."""
_CLAIM_READS = 20
_CLAIM_READ_PAUSE_S = 0.01

Status = Literal["pending", "granted", "denied"]


class ApprovalError(ValueError):
    """An operator's decision that cannot be applied (unknown id, already decided, bad count)."""


@dataclass(frozen=True, slots=True)
class Approval:
    id: str
    agent_id: str
    user_id: str | None
    session_id: str | None
    tool: str
    arguments_sha256: str
    summary: str
    created: float
    expires: float
    status: Status = "pending"
    uses: int = 1
    used: int = 0
    decided_by: str | None = None
    decided_at: float | None = None

    def to_dict(self) -> dict[str, JSONValue]:
        return cast(dict[str, JSONValue], asdict(self))


def canonical_arguments(arguments: str) -> str:
    """Arguments as one canonical text: JSON re-serialised with sorted keys and no spacing, so the same
    call spelled with other whitespace or key order binds to the same approval; other text as sent."""
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return arguments.strip()
    return json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def arguments_sha256(arguments: str) -> str:
    return hashlib.sha256(canonical_arguments(arguments).encode("utf-8")).hexdigest()


def summarise(tool: str, arguments: str, redact: Callable[[str], str]) -> str:
    """``tool(arguments)`` shortened for a person to read, with ``redact`` applied before shortening so a
    secret cut in half is still found."""
    text = f"{tool}({redact(canonical_arguments(arguments))})"
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


def new_id() -> str:
    return "apr_" + secrets.token_hex(10)


def _pending_index(agent_id: str, tool: str, sha: str) -> str:
    return f"{_PENDING_INDEX}{digest(agent_id)}:{digest(tool)}:{sha}"


class Approvals:
    """Approval records in a state store. ``clock`` is wall time (expiries are persisted)."""

    def __init__(self, store: StateStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def request(
        self,
        *,
        agent_id: str,
        user_id: str | None,
        session_id: str | None,
        tool: str,
        arguments: str,
        redact: Callable[[str], str],
    ) -> tuple[Approval, bool]:
        """The pending approval for a withheld call, and whether this request opened it. The same call
        withheld again while its approval is pending gets that one back, so a retrying agent raises one
        request (and one alert), not one per retry; once it is decided or expired the next one is new.

        Of two requests racing for the same call (workers, replicas) the store's atomic ``incr`` on the
        call's claim lets one open the approval; the other reads it back. A decision starts a new
        generation of claims for the call."""
        sha = arguments_sha256(arguments)
        index = _pending_index(agent_id, tool, sha)
        existing = self._pending_at(index)
        if existing is not None:
            return existing, False
        claim = f"{index}:claim:{self.store.counter(index + _GENERATION_SUFFIX)}"
        if self.store.incr(claim, ttl_s=PENDING_TTL_S) > 1:
            for _ in range(_CLAIM_READS):
                existing = self._pending_at(index)
                if existing is not None:
                    return existing, False
                time.sleep(_CLAIM_READ_PAUSE_S)
        now = self.clock()
        approval = Approval(
            id=new_id(),
            agent_id=agent_id,
            user_id=user_id,
            session_id=session_id,
            tool=tool,
            arguments_sha256=sha,
            summary=summarise(tool, arguments, redact),
            created=now,
            expires=now + PENDING_TTL_S,
        )
        self._save(approval)
        self.store.put(index, approval.id, PENDING_TTL_S)
        return approval, True

    def _pending_at(self, index: str) -> Approval | None:
        approval_id = self.store.get(index)
        approval = self.get(approval_id) if isinstance(approval_id, str) else None
        return approval if approval is not None and approval.status == "pending" else None

    def get(self, approval_id: str) -> Approval | None:
        stored = self.store.get(_RECORD_PREFIX + approval_id)
        if not isinstance(stored, dict):
            return None
        approval = Approval(**cast(dict[str, Any], stored))
        return replace(approval, used=self.store.counter(_USES_PREFIX + approval.id))

    def list(self) -> list[Approval]:
        found = [self.get(key.removeprefix(_RECORD_PREFIX)) for key in self.store.items(_RECORD_PREFIX)]
        return sorted((approval for approval in found if approval is not None), key=lambda a: a.created)

    def decide(
        self, approval_id: str, *, grant: bool, by: str, uses: int = 1, ttl_s: float = GRANT_TTL_S
    ) -> Approval:
        """Grant (for ``uses`` calls within ``ttl_s`` seconds) or deny a pending approval."""
        if uses < 1 or ttl_s <= 0:
            raise ApprovalError("an approval needs at least one use and a positive lifetime")
        approval = self.get(approval_id)
        if approval is None:
            raise ApprovalError(f"no approval {approval_id!r} (unknown or expired)")
        if approval.status != "pending":
            raise ApprovalError(f"approval {approval_id} was already {approval.status}")
        now = self.clock()
        decided = replace(
            approval,
            status="granted" if grant else "denied",
            uses=uses,
            decided_by=by,
            decided_at=now,
            expires=now + ttl_s if grant else approval.expires,
        )
        self._save(decided)
        # Decided, it no longer stands for the call: the same call withheld again asks anew.
        index = _pending_index(approval.agent_id, approval.tool, approval.arguments_sha256)
        self.store.delete(index)
        self.store.incr(index + _GENERATION_SUFFIX, ttl_s=_GENERATION_TTL_S)
        return decided

    def redeem(self, approval_id: str, *, agent_id: str, tool: str, arguments: str) -> str | None:
        """Spend one use of a granted approval on this call; None when it may run, else why not."""
        approval = self.get(approval_id)
        if approval is None:
            return f"approval {approval_id!r} is unknown or expired"
        if approval.status != "granted":
            return f"approval {approval.id} is {approval.status}, not granted"
        if approval.agent_id != agent_id:
            return f"approval {approval.id} is for another agent"
        if approval.tool != tool:
            return f"approval {approval.id} is for the tool {approval.tool}, not {tool}"
        if approval.arguments_sha256 != arguments_sha256(arguments):
            return f"approval {approval.id} was given for other arguments"
        remaining = approval.expires - self.clock()
        if remaining <= 0:
            return f"approval {approval.id} has expired"
        if self.store.incr(_USES_PREFIX + approval.id, ttl_s=remaining) > approval.uses:
            return f"approval {approval.id} has been used up ({approval.uses} use(s))"
        return None

    def _save(self, approval: Approval) -> None:
        ttl = max(1.0, approval.expires - self.clock())
        self.store.put(_RECORD_PREFIX + approval.id, approval.to_dict(), ttl)
