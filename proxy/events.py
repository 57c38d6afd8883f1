"""The ``agent.turn`` audit event, built from a finished turn. Raw text never enters it: only hashes."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from proxy.dialects import MCP
from proxy.model import Mode
from proxy.redact import redact_json
from proxy.rulepack import Scanner
from proxy.turn import Turn


def turn_event(
    turn: Turn,
    *,
    mode: Mode,
    method: str,
    path: str,
    status: int | None,
    input_sha256: str | None,
    output_sha256: str | None,
) -> dict[str, Any]:
    context = turn.context
    request = turn.request
    completion = turn.completion
    usage = completion.usage if completion else None
    calls = completion.tool_calls if completion else []
    if request is not None and request.dialect == MCP.name:
        # An MCP request is itself the tool call; its response only carries the result.
        calls = request.tool_calls
    tool_names = [call.name for call in calls]
    return {
        "type": "agent.turn",
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "event_id": turn.event_id,
        "agent_id": context.agent_id,
        "role": context.role,
        "user_id": context.user_id,
        "session_id": context.session_id,
        "purpose": context.purpose,
        "consent_id": context.consent_id,
        "approval_id": context.approval_id,
        "egress_host": turn.egress_host,
        "method": method,
        "path": path,
        "status": status,
        "dialect": request.dialect if request else None,
        "model": (completion.model if completion and completion.model else None)
        or (request.model if request else None),
        "stream": turn.stream,
        "latency_ms": round((time.monotonic() - turn.started) * 1000, 2),
        "tokens_in": usage.tokens_in if usage else None,
        "tokens_out": usage.tokens_out if usage else None,
        "tools": tool_names,
        "findings": [finding.to_event() for finding in turn.findings],
        "refusal": turn.refusal,
        "context_sources": list(turn.context_sources),
        "decision": str(turn.decision),
        "mode": str(mode),
        "input_sha256": input_sha256,
        "output_sha256": turn.output_sha256 or output_sha256,
        "errors": list(turn.errors),
    }


AGENT_CONTROLLED = (
    "user_id",
    "session_id",
    "purpose",
    "consent_id",
    "approval_id",
    "egress_host",
    "path",
    "model",
    "tools",
    "errors",
)
"""Event fields whose text comes from agents or upstreams (headers, host names, paths, error messages):
a secret can hide in any of them (a webhook token in a path, data in a host label)."""


def scrub(event: dict[str, Any], scanner: Scanner, key: bytes) -> dict[str, Any]:
    """The event with every detected secret in agent-controlled text replaced by its placeholder, so
    the audit log, the log line and alerts built from it never carry one."""
    fields = {name: event[name] for name in AGENT_CONTROLLED if name in event}
    fields["findings"] = [
        {name: finding[name] for name in ("signal", "extra") if name in finding}
        for finding in event["findings"]
    ]
    clean, redactions = redact_json(fields, scanner, key=key)
    if not redactions:
        return event
    findings = [
        {**original, **scrubbed}
        for original, scrubbed in zip(event["findings"], clean.pop("findings"), strict=True)
    ]
    return {**event, **clean, "findings": findings}
