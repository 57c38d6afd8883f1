"""Guard a locally run agent turn with egressguard's own inspection, through the proxy the agent already
uses (``HTTPS_PROXY``, or ``HTTP_PROXY``): the agent's proxy credential is its identity, and no text goes
anywhere but the proxy.

    with guard(user_id=session.user_id, purpose="customer_support") as sec:
        message = sec.inspect_input(message)
        sec.inspect_tool("shell", {"command": command})   # raises Refused if the policy refuses it
        answer = sec.inspect_output(answer)

Telemetry never breaks the agent: by default a proxy that cannot be reached is logged (without text) and
the turn goes on uninspected. ``fail_closed=True`` raises ``GuardUnavailable`` instead. A refusal is not a
telemetry failure: a refused tool (or input or output) raises ``Refused`` in both modes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx

from proxy.inprocess.localapi import LOCAL_API_HOST

log = logging.getLogger("egressguard.guard")

API = f"https://{LOCAL_API_HOST}/v1"
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
EVENT_FINDING_FIELDS = ("threat", "rule", "signal", "severity", "action", "where", "owasp", "enforced")


class GuardUnavailable(RuntimeError):
    """The proxy could not inspect or record (only raised with ``fail_closed=True``)."""


class Refused(RuntimeError):
    """The policy refuses this step of the turn: a tool must not run, an input or output must not pass."""

    def __init__(self, kind: str, tool: str | None, findings: list[dict[str, Any]]) -> None:
        self.kind, self.tool, self.findings = kind, tool, findings
        rules = ", ".join(sorted({str(finding.get("rule")) for finding in findings if finding.get("action")}))
        approvals = [finding["extra"]["pending_approval"] for finding in findings if "pending_approval" in
                     finding.get("extra", {})]  # fmt: skip
        what = f"tool {tool!r}" if tool else kind
        hint = f"; approval {approvals[0]} is pending" if approvals else ""
        super().__init__(f"egressguard refused {what} ({rules}){hint}")


def _client(timeout: float) -> httpx.Client:
    proxy = next((os.environ[name] for name in PROXY_VARIABLES if os.environ.get(name)), None)
    if proxy is None:
        raise GuardUnavailable("no HTTPS_PROXY or HTTP_PROXY: nothing is sent without the proxy")
    # The proxy is set explicitly so that NO_PROXY and the like never send text around it.
    return httpx.Client(proxy=proxy, timeout=timeout, trust_env=True)


class Guard:
    def __init__(self, client: httpx.Client | None, headers: dict[str, str], *, fail_closed: bool) -> None:
        self.client, self.headers, self.fail_closed = client, headers, fail_closed
        self.findings: list[dict[str, Any]] = []
        self.tools: list[str] = []
        self.decision = "allowed"
        self.input: str | None = None
        self.output: str | None = None

    def inspect_input(self, text: str) -> str:
        """The user's input as the policy lets it through (redacted where enforced)."""
        self.input = text
        return self._text("input", text)

    def inspect_tool(self, name: str, arguments: dict[str, Any]) -> None:
        """Before a tool runs: raises ``Refused`` when the policy refuses the call."""
        self.tools.append(name)
        self._inspect({"kind": "tool_call", "tool": name, "arguments": arguments})

    def inspect_tool_result(self, name: str, text: str) -> str:
        """What a tool returned, before the model reads it (injections in read content, secrets)."""
        return self._text("tool_result", text, tool=name)

    def inspect_output(self, text: str) -> str:
        """The final answer as the policy lets it reach the user (redacted where enforced)."""
        self.output = text
        return self._text("output", text)

    def _text(self, kind: str, text: str, **extra: str) -> str:
        verdict = self._inspect({"kind": kind, "text": text, **extra})
        answer = verdict.get("text") if verdict else None
        return answer if isinstance(answer, str) else text

    def _inspect(self, request: dict[str, Any]) -> dict[str, Any] | None:
        verdict = self._post("inspect", request)
        if verdict is None:
            return None
        findings = [finding for finding in verdict.get("findings", []) if isinstance(finding, dict)]
        self.findings += findings
        decision = verdict.get("decision")
        if decision == "redacted" and self.decision == "allowed":
            self.decision = "redacted"
        if decision == "blocked":
            self.decision = "blocked"
            raise Refused(request["kind"], request.get("tool"), findings)
        return verdict

    def event(self, latency_ms: float) -> dict[str, Any]:
        """The turn as the playbook reports it: hashes, never text."""
        return {
            "type": "agent.turn",
            "tools": self.tools,
            "findings": [
                {name: finding[name] for name in EVENT_FINDING_FIELDS if finding.get(name) is not None}
                for finding in self.findings
            ],
            "input_sha256": hashlib.sha256((self.input or "").encode()).hexdigest(),
            "output_sha256": hashlib.sha256((self.output or "").encode()).hexdigest(),
            "latency_ms": round(latency_ms, 2),
            "decision": self.decision,
        }

    def _post(self, endpoint: str, document: dict[str, Any]) -> dict[str, Any] | None:
        try:
            if self.client is None:
                raise GuardUnavailable("no proxy configured")
            response = self.client.post(f"{API}/{endpoint}", json=document, headers=self.headers)
            response.raise_for_status()
            answer = response.json()
            if not isinstance(answer, dict):
                raise ValueError("answer is not a JSON object")
            return answer
        except (httpx.HTTPError, ValueError, GuardUnavailable) as error:
            # The error's type and status only: a message could quote what was sent.
            status = getattr(getattr(error, "response", None), "status_code", None)
            log.warning("egressguard %s failed: %s (status %s)", endpoint, type(error).__name__, status)
            if self.fail_closed:
                raise GuardUnavailable(f"egressguard {endpoint} failed: {type(error).__name__}") from None
            return None


@contextlib.contextmanager
def guard(
    *,
    user_id: str | None = None,
    purpose: str | None = None,
    session_id: str | None = None,
    consent_id: str | None = None,
    approval_id: str | None = None,
    fail_closed: bool = False,
    timeout: float = 5.0,
) -> Iterator[Guard]:
    """Wrap one agent turn. The agent is whoever the proxy credential names; the turn's event (hashes,
    tools, findings, latency) is chained into egressguard's audit log when the block ends."""
    started = time.monotonic()
    headers = {
        header: value
        for header, value in (
            ("X-User-Id", user_id),
            ("X-Purpose", purpose),
            ("X-Session-Id", session_id),
            ("X-Consent-Id", consent_id),
            ("X-Approval-Id", approval_id),
        )
        if value is not None
    }
    try:
        client: httpx.Client | None = _client(timeout)
    except GuardUnavailable:
        if fail_closed:
            raise
        log.warning("egressguard guard: no proxy configured; the turn runs uninspected")
        client = None
    sec = Guard(client, headers, fail_closed=fail_closed)
    try:
        yield sec
    finally:
        try:
            sec._post("events", sec.event((time.monotonic() - started) * 1000))
        finally:
            if client is not None:
                client.close()


__all__ = ["Guard", "GuardUnavailable", "Refused", "guard"]
