"""Refused proxy authentications (407), counted per client address and reason in short windows.

One ``auth.refused`` record is written at once for a client's first refusal in a window, and one more
when the window ends if further refusals came in it, with their count in ``attempts``: a client that
tries a thousand passwords a minute costs a few records, not a thousand. The credential tried is never
kept: only whether a header came at all (``missing`` or ``invalid``) and, when the user name is an
agent's, that agent's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from proxy.audit.log import format_ts
from proxy.model import Action, Finding, Severity, Threat

Reason = Literal["missing", "invalid"]
AUTH_REFUSED = "auth.refused"
INVALID_RULE = "proxy-auth-invalid"
MAX_OPEN_WINDOWS = 10_000
"""Windows open at once: clients from that many addresses (IPv6 gives a host many) within one window
are counted without growing memory further, the oldest window closed early (its record written then)."""


@dataclass(slots=True)
class _Window:
    started: datetime
    last: datetime
    attempts: int = 0
    reported: int = 0
    agents: set[str] = field(default_factory=set)


class RefusalCounter:
    def __init__(self, window: timedelta = timedelta(seconds=10), max_open: int = MAX_OPEN_WINDOWS) -> None:
        self.window = window
        self.max_open = max_open
        self._open: dict[tuple[str, Reason], _Window] = {}

    def refused(self, client: str, reason: Reason, agent: str | None, now: datetime) -> list[dict[str, Any]]:
        """Count one refusal; return the records to write now."""
        key = (client, reason)
        events = []
        current = self._open.get(key)
        if current is not None and now - current.started >= self.window:
            events += self._close(key)
            current = None
        if current is None:
            current = self._open[key] = _Window(started=now, last=now)
            if len(self._open) > self.max_open:
                events += self._close(next(iter(self._open)))
        current.attempts += 1
        current.last = now
        if agent is not None:
            current.agents.add(agent)
        if current.reported == 0:
            events.append(self._report(key, current))
        return events

    def open_windows(self) -> int:
        return len(self._open)

    def due(self, now: datetime) -> list[dict[str, Any]]:
        """Records for the windows that have ended by ``now``."""
        ended = [key for key, window in self._open.items() if now - window.started >= self.window]
        return [event for key in ended for event in self._close(key)]

    def drain(self) -> list[dict[str, Any]]:
        """Records for every window still open (at shutdown)."""
        return [event for key in list(self._open) for event in self._close(key)]

    def _close(self, key: tuple[str, Reason]) -> list[dict[str, Any]]:
        window = self._open.pop(key)
        return [self._report(key, window)] if window.attempts > window.reported else []

    @staticmethod
    def _report(key: tuple[str, Reason], window: _Window) -> dict[str, Any]:
        client, reason = key
        attempts = window.attempts - window.reported
        window.reported = window.attempts
        # No credentials at all is how a challenge-response client starts: recorded, but not a finding.
        findings = []
        if reason == "invalid":
            finding = Finding(
                threat=Threat.CREDENTIAL_THEFT,
                rule=INVALID_RULE,
                signal=f"{attempts} proxy authentication(s) refused: wrong agent name or token",
                severity=Severity.MEDIUM,
                action=Action.BLOCK,
                where="proxy-authorization",
                enforced=True,
            )
            findings.append(finding.to_event())
        return {
            "type": AUTH_REFUSED,
            "ts": format_ts(window.last),
            "client": client,
            "reason": reason,
            "attempts": attempts,
            "since": format_ts(window.started),
            "agents": sorted(window.agents),
            "status": 407,
            "decision": "blocked",
            "findings": findings,
        }
