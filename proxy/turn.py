"""What egressguard knows about one agent turn while it is in flight.

The addons keep one ``Turn`` per flow (``flow.metadata["egressguard"]``); each adds what it learns, and
the audit addon turns it into the ``agent.turn`` event at the end.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace

from proxy.exchange import Completion, RequestView
from proxy.model import Decision, Finding, FindingIdentity


def new_event_id() -> str:
    """A random (version 4) UUID in hex, as ``uuid.uuid4().hex`` spells it, without building a ``UUID``
    (whose constructor costs several times the 16 random bytes)."""
    value = int.from_bytes(os.urandom(16))
    value = (value & ~(0xC000 << 48)) | (0x8000 << 48)  # the RFC 4122 variant
    value = (value & ~(0xF000 << 64)) | (4 << 76)  # version 4
    return f"{value:032x}"


@dataclass(slots=True)
class TurnContext:
    """Who is behind a request: the authenticated agent and the ids its caller passed along."""

    agent_id: str
    role: str
    user_id: str | None = None
    session_id: str | None = None
    purpose: str | None = None
    consent_id: str | None = None
    approval_id: str | None = None


@dataclass(slots=True)
class Turn:
    context: TurnContext
    event_id: str = field(default_factory=new_event_id)
    started: float = field(default_factory=time.monotonic)
    egress_host: str | None = None
    request: RequestView | None = None
    completion: Completion | None = None
    stream: bool = False
    findings: list[Finding] = field(default_factory=list)
    decision: Decision = Decision.ALLOWED
    errors: list[str] = field(default_factory=list)
    refusal: bool | None = None
    context_sources: list[str] = field(default_factory=list)
    tunnelled: bool = False
    """The connection is relayed without TLS interception: the CONNECT is all there is to record."""
    output_sha256: str | None = None
    """The sha256 of what the agent received, where the proxy computed it (streams, rewrites)."""
    inspected_bytes: int = 0
    stream_events: int = 0
    drill: str | None = None
    """The drill case this turn is, when an operator's drill sent it (``egressguard drill``)."""
    reported_by: str | None = None
    """``agent`` for a turn the agent reported itself (``proxy.inprocess.localapi``): its hashes, latency,
    tools and findings are the agent's word, not what the proxy saw."""
    input_sha256: str | None = None
    reported_latency_ms: float | None = None
    _positions: dict[FindingIdentity, int] = field(default_factory=dict, repr=False)

    def add(self, *findings: Finding) -> None:
        """Record findings; a repeat of one already recorded (same rule, place and outcome) raises that
        one's count instead, so a tool result with hundreds of e-mail addresses is one finding."""
        for finding in findings:
            position = self._positions.get(finding.identity)
            if position is None:
                self._positions[finding.identity] = len(self.findings)
                self.findings.append(finding)
            else:
                seen = self.findings[position]
                self.findings[position] = replace(seen, count=seen.count + finding.count)

    def escalate(self, decision: Decision) -> None:
        """Raise the turn's decision; a turn never goes from blocked back to redacted or allowed."""
        order = (Decision.ALLOWED, Decision.REDACTED, Decision.PROTOCOL_ERROR, Decision.BLOCKED)
        if order.index(decision) > order.index(self.decision):
            self.decision = decision
