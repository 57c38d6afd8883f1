"""The vocabulary every part of egressguard shares: threats, findings, modes and decisions."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Threat(StrEnum):
    PROMPT_INJECTION = "prompt_injection"
    JAILBREAK = "jailbreak"
    TOOL_ABUSE = "tool_abuse"
    DATA_EXFILTRATION = "data_exfiltration"
    CONTEXT_POISONING = "context_poisoning"
    CREDENTIAL_THEFT = "credential_theft"
    LATERAL_MOVEMENT = "lateral_movement"
    COMPLIANCE_GAP = "compliance_gap"


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Action(StrEnum):
    """What enforce mode does about a finding."""

    FLAG = "flag"
    REDACT = "redact"
    WITHHOLD = "withhold"
    QUARANTINE = "quarantine"
    """Replace the offending span of read content with a notice; the rest of the content passes."""
    VAULT = "vault"
    """Replace a secret in a request with a placeholder that is restored on the way back to its agent."""
    BLOCK = "block"


class Mode(StrEnum):
    OBSERVE = "observe"
    ENFORCE = "enforce"


class Decision(StrEnum):
    """What happened to the exchange as a whole."""

    ALLOWED = "allowed"
    REDACTED = "redacted"
    PROTOCOL_ERROR = "protocol_error"
    """The HTTP layer refused the agent's request as malformed (a bad request line, header, chunk or
    frame, a head over its limit): none of it was forwarded, whatever was found in what had arrived."""
    BLOCKED = "blocked"


FindingIdentity = tuple[str, str, str, str, bool, str | None, str | None]
"""``Finding.identity``: threat, rule, place, action, enforced, origin, and the rule a finding names."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One detection. Never holds the detected value itself: a keyed fingerprint at most.

    ``action`` is what enforce mode does; ``enforced`` says whether it was applied to this exchange
    (False in observe mode, so the finding reads as "enforce mode would have ..."). ``origin`` says who
    put an injection there: ``user`` (typed it: an attacker) or ``content`` (the agent read it: its user
    is a victim). ``count`` is how many times the rule matched in that place.
    """

    threat: Threat
    rule: str
    signal: str
    severity: Severity
    action: Action
    where: str
    owasp: str | None = None
    enforced: bool = False
    fingerprint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    origin: str | None = None
    count: int = 1

    def to_event(self) -> dict[str, Any]:
        """The finding as the audit event records it: built field by field (``dataclasses.asdict`` walks
        and copies every field, several times the cost, for each finding of each turn); ``extra``, JSON
        values, is copied."""
        record: dict[str, Any] = {
            "threat": str(self.threat),
            "rule": self.rule,
            "signal": self.signal,
            "severity": str(self.severity),
            "action": str(self.action),
            "where": self.where,
            "owasp": self.owasp,
            "enforced": self.enforced,
            "fingerprint": self.fingerprint,
        }
        if self.extra:
            record["extra"] = copy.deepcopy(self.extra)
        if self.origin is not None:
            record["origin"] = self.origin
        if self.count != 1:
            record["count"] = self.count
        return record

    @property
    def identity(self) -> FindingIdentity:
        """What makes two findings the same finding repeated: one rule, one place, one outcome. A finding
        about another rule (a rule that ran out of time) is one finding per rule it names."""
        return (
            self.threat,
            self.rule,
            self.where,
            self.action,
            self.enforced,
            self.origin,
            self.extra.get("rule"),
        )


SEVERITY_ORDER = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}
