"""The local API: inspection and turn reports for tools an agent runs itself, served by egressguard at a
reserved host reached through the proxy, so an agent's identity is its proxy credential.

``POST /v1/inspect`` puts one piece of a turn (the user's input, a tool call about to run, a tool's result,
the final output) through the same ``TurnInspector`` the proxy applies to API traffic: one verdict
everywhere. ``POST /v1/events`` takes the agent's own ``agent.turn`` report (hashes, tools, findings,
latency; never text) and turns it into a ``Turn`` the audit log chains and the alert rules read.

Pure: request validation and the verdict; the addon does the I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from proxy.exchange import Completion, Part, RequestView, Source, TextSegment, ToolCall
from proxy.inspection import TurnInspector
from proxy.model import Action, Decision, Finding, Severity, Threat
from proxy.turn import Turn

LOCAL_API_HOST = "egressguard.internal"
"""Answered by egressguard itself: never forwarded, never looked up in DNS, never recorded as egress."""
MAX_INSPECT_BYTES = 1024 * 1024
MAX_EVENT_BYTES = 64 * 1024
MAX_ITEMS = 64
MAX_LABEL = 200
MAX_SIGNAL = 300
KINDS = ("input", "tool_call", "tool_result", "output")
REPORTED_BY_AGENT = "agent"
_LABEL = re.compile(r"[\w.:/@+\- ]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class BadRequest(ValueError):
    """A request the local API refuses, with the reason the agent gets in its 400."""


@dataclass(frozen=True, slots=True)
class Verdict:
    decision: Decision
    findings: list[dict[str, Any]]
    text: str | None
    """The text as the proxy would let it through (redacted where enforced); None for a tool call, and
    for an output refused whole (a rule ran out of time on it where that is enforced)."""

    def to_json(self) -> dict[str, Any]:
        return {"decision": str(self.decision), "findings": self.findings, "text": self.text}


def parse_json(body: bytes, limit: int) -> dict[str, Any]:
    if len(body) > limit:
        raise BadRequest(f"body of {len(body)} bytes is over the limit of {limit}")
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(f"body is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise BadRequest("body must be a JSON object")
    return document


def _only(document: dict[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(document) - allowed)
    if unknown:
        raise BadRequest(f"{what}: unknown field(s) {', '.join(map(repr, unknown))}")


def _label(document: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    """A short identifier (agent, user, tool, rule name): bounded, no free text."""
    value = document.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_LABEL or not _LABEL.fullmatch(value):
        raise BadRequest(f"{key!r} must be a non-empty label of at most {MAX_LABEL} word characters")
    return value


def inspect(inspector: TurnInspector, document: dict[str, Any]) -> Verdict:
    """The verdict of the proxy's inspection on one piece of a locally run turn."""
    _only(document, {"kind", "text", "tool", "arguments", "source"}, "inspect")
    kind = document.get("kind")
    if kind not in KINDS:
        raise BadRequest(f"'kind' must be one of {', '.join(KINDS)}")
    _label(document, "source")
    turn = inspector.turn
    if kind == "tool_call":
        tool = _label(document, "tool", required=True)
        assert tool is not None
        arguments = document.get("arguments", {})
        if not isinstance(arguments, dict):
            raise BadRequest("'arguments' must be a JSON object")
        call = ToolCall(id=None, name=tool, arguments=json.dumps(arguments, sort_keys=True), where=kind)
        plan = inspector.inspect_completion(Completion(tool_calls=[call]), rewrite=True)
        if kind in plan.withheld or inspector.response_refused() is not None:
            turn.escalate(Decision.BLOCKED)
        return verdict_of(turn, None)
    text = document.get("text")
    if not isinstance(text, str):
        raise BadRequest("'text' must be a string")
    if kind == "output":
        plan = inspector.inspect_completion(Completion(text=[TextSegment(text, kind)]), rewrite=True)
        if inspector.response_refused() is not None:
            # A rule ran out of time on it where that is enforced: no part of it is known to be clean.
            return verdict_of(turn, None)
        outgoing = plan.text_map(text) if plan.text_map is not None else text
    else:
        source = Source.USER if kind == "input" else Source.TOOL_RESULT
        part = Part(source, text, kind, tool_name=_label(document, "tool"))
        verdict = inspector.inspect_request(RequestView(dialect="local", parts=[part]))
        if verdict.block is not None:
            turn.escalate(Decision.BLOCKED)
        outgoing = verdict.replacements.get(kind, text)
    if outgoing != text:
        turn.escalate(Decision.REDACTED)
    return verdict_of(turn, outgoing)


def verdict_of(turn: Turn, text: str | None) -> Verdict:
    return Verdict(turn.decision, [finding.to_event() for finding in turn.findings], text)


_EVENT_FIELDS = {
    "type", "agent_id", "user_id", "session_id", "purpose", "consent_id", "approval_id", "tools",
    "findings", "input_sha256", "output_sha256", "latency_ms", "ts", "decision",
}  # fmt: skip
_FINDING_FIELDS = {
    "threat", "rule", "signal", "severity", "action", "where", "owasp", "enforced", "args_hash",
}  # fmt: skip


def reported_turn(turn: Turn, document: dict[str, Any]) -> None:
    """Fill ``turn`` (opened for the authenticated agent) from the agent's report, validated strictly:
    labels, enums, hashes and numbers only, so no raw text reaches the audit log."""
    _only(document, _EVENT_FIELDS, "event")
    if document.get("type", "agent.turn") != "agent.turn":
        raise BadRequest("'type' must be 'agent.turn'")
    claimed = _label(document, "agent_id")
    if claimed is not None and claimed != turn.context.agent_id:
        raise BadRequest("'agent_id' names another agent than the proxy credential")
    context = turn.context
    for key in ("user_id", "session_id", "purpose", "consent_id", "approval_id"):
        value = _label(document, key)
        if value is not None:
            setattr(context, key, value)
    tools = _list(document, "tools")
    if not all(isinstance(name, str) for name in tools):
        raise BadRequest("'tools' must be a list of tool names")
    turn.completion = Completion(
        tool_calls=[
            ToolCall(id=None, name=_label({"tool": name}, "tool", required=True) or name, arguments="",
                     where=f"tools[{index}]")
            for index, name in enumerate(tools)
        ]
    )  # fmt: skip
    for index, item in enumerate(_list(document, "findings")):
        turn.add(_finding(item, index))
    for key in ("input_sha256", "output_sha256"):
        value = document.get(key)
        if value is not None and (not isinstance(value, str) or not _SHA256.fullmatch(value)):
            raise BadRequest(f"{key!r} must be a lowercase hex sha256")
    turn.input_sha256, turn.output_sha256 = document.get("input_sha256"), document.get("output_sha256")
    latency = document.get("latency_ms")
    if latency is not None and (
        isinstance(latency, bool) or not isinstance(latency, int | float) or not 0 <= latency < 86_400_000
    ):
        raise BadRequest("'latency_ms' must be a number of milliseconds")
    turn.reported_latency_ms = float(latency) if latency is not None else None
    decision = document.get("decision", "allowed")
    if decision not in {str(item) for item in Decision}:
        raise BadRequest("'decision' must be allowed, redacted or blocked")
    turn.escalate(Decision(decision))
    turn.reported_by = REPORTED_BY_AGENT


def _list(document: dict[str, Any], key: str) -> list[Any]:
    value = document.get(key, [])
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise BadRequest(f"{key!r} must be a list of at most {MAX_ITEMS} items")
    return value


def _finding(item: Any, index: int) -> Finding:
    """A finding in egressguard's shape or the playbook's (threat, signal, severity, args_hash)."""
    if not isinstance(item, dict):
        raise BadRequest(f"findings[{index}] must be an object")
    _only(item, _FINDING_FIELDS, f"findings[{index}]")
    try:
        threat, severity = Threat(str(item.get("threat"))), Severity(str(item.get("severity")))
        action = Action(item.get("action", "flag"))
    except ValueError as error:
        raise BadRequest(f"findings[{index}]: {error}") from None
    signal = item.get("signal")
    if not isinstance(signal, str) or not 0 < len(signal) <= MAX_SIGNAL or not signal.isprintable():
        # Detector signals are short descriptions; the audit scrubs any secret from them as it does
        # from every agent-controlled field.
        raise BadRequest(f"findings[{index}]: 'signal' must be one line of at most {MAX_SIGNAL} characters")
    args_hash = item.get("args_hash")
    if args_hash is not None and (not isinstance(args_hash, str) or not _SHA256.fullmatch(args_hash)):
        raise BadRequest(f"findings[{index}]: 'args_hash' must be a lowercase hex sha256")
    enforced = item.get("enforced", False)
    if not isinstance(enforced, bool):
        raise BadRequest(f"findings[{index}]: 'enforced' must be true or false")
    return Finding(
        threat=threat,
        rule=_label(item, "rule") or f"agent.{threat}",
        signal=signal,
        severity=severity,
        action=action,
        where=_label(item, "where") or "agent",
        owasp=_label(item, "owasp"),
        enforced=enforced,
        fingerprint=args_hash,
    )
