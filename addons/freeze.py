"""Refuses requests from frozen users, revoked sessions and blocked agents, before anything reads bodies.

Freezes live in the state store (``proxy.freeze``). A blocked agent is refused in every mode; a frozen
user or revoked session only when prompt injection is enforced; in observe mode the turn carries the
finding that says enforce mode would have refused it.
"""

from __future__ import annotations

import structlog
from mitmproxy import http

from addons.turns import policy_of, refuse_without_state, turn_of
from proxy.dialects import detect
from proxy.freeze import FREEZE_RULE, Refusal, freeze_finding, refusal
from proxy.model import Decision, Threat
from proxy.runtime import Runtime
from proxy.state import StateUnavailable
from proxy.turn import Turn

log = structlog.get_logger("egressguard")

FROZEN_CODE = "egressguard_frozen"


class Freeze:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def request(self, flow: http.HTTPFlow) -> None:
        turn = turn_of(flow)
        if turn is None or flow.response is not None:
            return
        try:
            found = self._refusal(turn)
            if found is not None:
                self._apply(flow, turn, found)
        except StateUnavailable as error:  # only raised where state.on_error is closed
            refuse_without_state(flow, turn, error)
        except Exception as exc:
            # A broken state store must not break the agent's request: the freeze check fails open.
            log.error(
                "freeze.check_failed", event_id=turn.event_id, error=f"{type(exc).__name__}: {exc}"[:300]
            )

    def _refusal(self, turn: Turn) -> Refusal | None:
        store = self.runtime.state
        context = turn.context
        return refusal(store, context.agent_id, None, None) or refusal(
            store, None, context.user_id, context.session_id
        )

    def _apply(self, flow: http.HTTPFlow, turn: Turn, found: Refusal) -> None:
        enforced = found.kind == "agent" or policy_of(flow, self.runtime).enforces(Threat.PROMPT_INJECTION)
        turn.add(freeze_finding(found, enforced=enforced))
        log.warning(
            "freeze.refused" if enforced else "freeze.would_refuse", event_id=turn.event_id, kind=found.kind
        )
        if not enforced:
            return
        turn.escalate(Decision.BLOCKED)
        request = flow.request
        dialect = detect(
            request.method,
            request.path,
            request.headers.get("content-type"),
            request.get_content(strict=False) or b"",
        )
        message = f"egressguard: {found} (rule {FREEZE_RULE}, event {turn.event_id})"
        status, headers, body = dialect.error_response(403, message, FROZEN_CODE)
        flow.response = http.Response.make(status, body, headers)
