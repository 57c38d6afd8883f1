"""Refuses requests from frozen users, revoked sessions and blocked agents, before anything reads bodies
(before any of a body over the inspection cap leaves, too).

Freezes live in the state store (``proxy.control.freeze``). A blocked agent is refused in every mode; a frozen
user or revoked session only where the policy enforces the threat the freeze answers (prompt injection
for repeated attempts, an alert's findings' threat for its actions); in observe mode the turn carries the
finding that says enforce mode would have refused it.
"""

from __future__ import annotations

import structlog
from mitmproxy import http

from addons.gate.turns import answer_in_dialect, policy_of, refuse_without_state, turn_of
from addons.wire.wsclose import close_websocket, due_agent_message
from proxy.config.policy import Policy
from proxy.control.freeze import FREEZE_RULE, Refusal, freeze_finding, refusals
from proxy.model import Decision
from proxy.runtime import Runtime
from proxy.state import StateUnavailable
from proxy.turn import Turn

log = structlog.get_logger("egressguard")

FROZEN_CODE = "egressguard_frozen"
JUDGED_KEY = "egressguard.freeze.judged"
NEXT_JUDGING_KEY = "egressguard.freeze.next_judging"


class Freeze:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """A body over the inspection cap is relayed as it arrives, and the request hook runs only once it
        has left: such a request is judged on its headers and answered before its body is read
        (``addons.wire.early``)."""
        if flow.request.stream:
            self.request(flow)

    def requestovercap(self, flow: http.HTTPFlow) -> None:
        """A chunked body that grew past the inspection cap: judged before any of it leaves."""
        self.request(flow)

    def request(self, flow: http.HTTPFlow) -> None:
        turn = turn_of(flow)
        if turn is None or flow.response is not None or flow.metadata.get(JUDGED_KEY):
            return
        flow.metadata[JUDGED_KEY] = True
        try:
            found = judge_freeze(self.runtime, turn, policy_of(flow, self.runtime))
            if found is not None:
                self._refuse(flow, turn, found)
        except StateUnavailable as error:  # only raised where state.on_error is closed
            refuse_without_state(flow, turn, error)
        except Exception as exc:
            # A broken state store must not break the agent's request: the freeze check fails open.
            log.error(
                "freeze.check_failed", event_id=turn.event_id, error=f"{type(exc).__name__}: {exc}"[:300]
            )

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        """A WebSocket outlives the request that opened it: each message the agent sends is judged again
        (at most once a second: what a freeze made since then holds within that), and one from an agent,
        user or session frozen since is not delivered and closes the connection (1008) where enforced."""
        turn = turn_of(flow)
        message = due_agent_message(flow, NEXT_JUDGING_KEY) if turn is not None else None
        if turn is None or message is None:
            return
        try:
            judged = applying_freeze(self.runtime, turn, policy_of(flow, self.runtime))
        except Exception as exc:
            # Unlike a request's, this check fails closed only where state.on_error is closed: an open
            # connection cannot be answered, so it is closed.
            log.error(
                "freeze.check_failed", event_id=turn.event_id, error=f"{type(exc).__name__}: {exc}"[:300]
            )
            if isinstance(exc, StateUnavailable):
                message.drop()
                close_websocket(flow)
            return
        if judged is None:
            return
        found, enforced = judged
        if enforced or not any(finding.rule == FREEZE_RULE for finding in turn.findings):
            record_freeze(turn, found, enforced=enforced)
        if enforced:
            message.drop()
            close_websocket(flow)

    @staticmethod
    def _refuse(flow: http.HTTPFlow, turn: Turn, found: Refusal) -> None:
        message = f"egressguard: {found} (rule {FREEZE_RULE}, event {turn.event_id})"
        flow.response = answer_in_dialect(flow.request, 403, message, FROZEN_CODE)


def judge_freeze(runtime: Runtime, turn: Turn, policy: Policy) -> Refusal | None:
    """The freeze to enforce on the turn's agent, user (for that agent) or session, its finding added and
    the turn escalated to blocked; None when nothing is frozen or observe mode only records that it would
    refuse."""
    judged = applying_freeze(runtime, turn, policy)
    if judged is None:
        return None
    found, enforced = judged
    record_freeze(turn, found, enforced=enforced)
    return found if enforced else None


def applying_freeze(runtime: Runtime, turn: Turn, policy: Policy) -> tuple[Refusal, bool] | None:
    """The freeze that applies to the turn's identities, and whether it is enforced (an agent an alert
    blocked always; the rest where the threat the freeze answers is enforced): one that is, before one
    only observed."""
    store, context = runtime.state, turn.context
    applying = list(refusals(store, context.agent_id, context.user_id, context.session_id, runtime.freezes))
    if not applying:
        return None

    def enforced_by(found: Refusal) -> bool:
        return (found.kind == "agent" and not found.by_attempts) or policy.enforces(found.threat)

    found = next((found for found in applying if enforced_by(found)), applying[0])
    return found, enforced_by(found)


def record_freeze(turn: Turn, found: Refusal, *, enforced: bool) -> None:
    turn.add(freeze_finding(found, enforced=enforced))
    log.warning(
        "freeze.refused" if enforced else "freeze.would_refuse", event_id=turn.event_id, kind=found.kind
    )
    if enforced:
        turn.escalate(Decision.BLOCKED)
