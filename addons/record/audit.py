"""Writes one ``agent.turn`` event per finished turn, hands it to the alert router, and logs one line.

When the audit log cannot be written and the policy says ``on_error: closed``, agents' requests are
refused (503) instead of being forwarded unaudited; with ``on_error: open`` they go on and the log
buffers. Either way the outage is logged and raised as an alert. No exception leaves a hook: a
failure here must never turn into a broken connection for the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Set
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import structlog
from mitmproxy import exceptions, http, tcp
from mitmproxy.flow import Error

from addons.gate.identity import REFUSAL_KEY, AuthRefusal
from addons.gate.turns import connect_is_a_turn, policy_of, turn_of
from addons.record.metrics import upstream_seconds
from addons.wire.heads import OVERSIZE_HEAD
from addons.wire.rawstreams import ORIGIN_KEY
from addons.wire.sent import was_sent
from addons.wire.trailers import PEER_RESET, UPSTREAM_RESET
from proxy.alerts import Alert, AlertRouter, AlertsConfig
from proxy.audit import AuditLog, AuditUnavailable
from proxy.audit.events import scrub, turn_event
from proxy.audit.heads import StoredCountWitness, publish_head, writer_id
from proxy.audit.keys import PRIVATE_KEY_NAME
from proxy.audit.refusals import RefusalCounter
from proxy.config.policy import AuditSettings, Policy
from proxy.control import freeze, tokens
from proxy.control.drill import split_mark
from proxy.model import Decision, Severity
from proxy.runtime import Runtime
from proxy.state import StateStore

log = structlog.get_logger("egressguard")

_WRITTEN = "egressguard_audited"
AUDIT_UNAVAILABLE_RULE = "audit-unavailable"
APPROVAL_REQUESTED_RULE = "approval-requested"
DRILL_RULE = "egressguard-drill"
UNAVAILABLE_TYPE = "egressguard_audit_unavailable"
CLIENT_GONE = ("client disconnected", PEER_RESET)
"""How mitmproxy's error messages start, read in lower case, when the agent itself went away (its
HTTP/1 layer says "Client disconnected.", its server "client disconnected", HTTP/2 "stream reset by
client"; an upstream's reset reads "stream reset by upstream", ``addons.wire.trailers``)."""
UNANSWERED_RESETS = ("(CANCEL)", "(HTTP_1_1_REQUIRED)")
"""The upstream's reset codes mitmproxy passes on to the agent as a reset of its own, where it answers any
other with 502."""
BODY_CUT = "http/1 protocol error: peer closed connection"
"""How h11's message for a body cut short starts: the agent's when its request was not read whole."""
UNANSWERED_ERRORS = ("HTTP/1 protocol error", "HTTP/2 protocol error", "HTTP/2 connection closed")
"""How mitmproxy's error messages start for a request it gave up on by closing the agent's connection
unanswered: an HTTP/1 body it cannot read, an HTTP/2 connection it ends with a GOAWAY."""
DEGRADED_STATE = "state: shared store unavailable; served with this process's local state (on_error: open)"


def _sha256(content: bytes | None) -> str | None:
    return hashlib.sha256(content).hexdigest() if content is not None else None


def _milliseconds(seconds: float | None) -> float | None:
    return round(seconds * 1000, 2) if seconds is not None else None


def _failure(exc: BaseException) -> str:
    """What may be logged about an unexpected error: its type and message, never its frame locals."""
    return f"{type(exc).__name__}: {exc}"[:300]


def received_status(flow: http.HTTPFlow) -> int | None:
    """The HTTP status the agent received, which is not always the upstream's: None when it received
    none (it went away first, or the flow was killed)."""
    response, error = flow.response, flow.error
    if error is None:
        return response.status_code if response is not None else None
    if response is not None and response.stream:
        return response.status_code  # relayed as it arrived: the head went out before the break
    if error.msg == Error.KILLED_MESSAGE or client_went_away(flow):
        return None
    if error.msg.startswith(UPSTREAM_RESET) and error.msg.endswith(UNANSWERED_RESETS):
        return None
    if refused_as_malformed(flow):
        # The agent's own request could not be read whole: mitmproxy answers a bad head 400 and a body
        # over its limit 413, and closes on a body or HTTP/2 frame it cannot read without an answer.
        if error.msg.startswith(UNANSWERED_ERRORS):
            return None
        if error.msg.startswith(OVERSIZE_HEAD):
            return 431
        return 413 if error.msg.startswith("Request body exceeds") else 400
    return 502  # mitmproxy answers an upstream that failed before its answer was complete with 502


def client_went_away(flow: http.HTTPFlow) -> bool:
    message = flow.error.msg.lower() if flow.error is not None else ""
    return message.startswith(CLIENT_GONE) or (
        flow.request.timestamp_end is None and message.startswith(BODY_CUT)
    )


def refused_as_malformed(flow: http.HTTPFlow) -> bool:
    """Whether the HTTP layer gave up on the agent's request itself (a bad header, chunk or frame, a body
    over mitmproxy's limit) before it was read whole, rather than the agent leaving or the upstream
    failing."""
    error = flow.error
    return (
        error is not None
        and flow.request.timestamp_end is None
        and error.msg != Error.KILLED_MESSAGE
        and not client_went_away(flow)
    )


def unavailable_response(reason: str, event_id: str | None) -> http.Response:
    message = f"egressguard: audit log unavailable ({reason}); on_error is closed, so requests are refused"
    if event_id is not None:
        message += f" (event {event_id})"
    body = json.dumps({"error": {"message": message, "type": UNAVAILABLE_TYPE}}).encode()
    return http.Response.make(503, body, {"Content-Type": "application/json"})


class Audit:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.sink: AuditLog | None = None
        self.router: AlertRouter | None = None
        self._sink_settings: AuditSettings | None = None
        self._router_settings: tuple[AlertsConfig | None, Path, Path] | None = None
        self._outage: str | None = None
        self._running = False
        self.refusals = RefusalCounter()
        self._refusal_flusher: asyncio.Task[None] | None = None

    def configure(self, updated: Set[str]) -> None:
        """Open the log (and, once running, the router) once per policy; a log that cannot be opened
        stops the start."""
        policy = self.runtime.policy
        if policy.audit != self._sink_settings:
            previous, previous_settings = self.sink, self._sink_settings
            if previous is not None:
                # Closed before the new log reads the chain's tail: two writers would fork the chain.
                previous.close()
            try:
                self.sink = self._open_sink(policy.audit)
            except exceptions.OptionsError:
                # A rejected change leaves the log recording as it was.
                self.sink = self._open_sink(previous_settings) if previous_settings is not None else None
                self.runtime.audit_log = self.sink
                raise
            self._sink_settings = policy.audit
            self.runtime.audit_log = self.sink
        if self._running:
            self._ensure_router()

    def running(self) -> None:
        """The router's threads start once the proxy runs, not for the options tried while it starts."""
        self._running = True
        self._ensure_router()
        with contextlib.suppress(RuntimeError):  # no event loop: nothing to flush on a timer
            self._refusal_flusher = asyncio.get_running_loop().create_task(self._flush_refusals_on_time())

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """With ``on_error: closed``, refuse requests while the log is known to be unwritable."""
        self._count_refusal(flow)
        turn = turn_of(flow)
        sink = self.sink
        if turn is None or flow.response is not None or sink is None:
            return
        if sink.on_error == "closed" and not sink.available:
            flow.response = unavailable_response(self._outage or "not writable", turn.event_id)
            log.warning("audit.request_refused", event_id=turn.event_id, agent=turn.context.agent_id)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        """A CONNECT that an earlier addon answered or refused, or one whose tunnel is relayed without
        interception, is a turn of its own."""
        self._count_refusal(flow)
        if connect_is_a_turn(flow):
            self._write(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        if flow.websocket is not None:
            return  # the turn goes on in WebSocket messages; recorded when the connection ends
        if not self._write(flow) and flow.response is not None and not flow.response.stream:
            # The upstream answered but the turn could not be recorded: the agent does not get an
            # answer nobody can account for.
            turn = turn_of(flow)
            event_id = turn.event_id if turn is not None else None
            flow.response = unavailable_response(self._outage or "not writable", event_id)

    def error(self, flow: http.HTTPFlow) -> None:
        self._write(flow)

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        self._write(flow)

    def tcp_start(self, flow: tcp.TCPFlow) -> None:
        """A tunnel carrying a stream that is not HTTP is recorded as its CONNECT's turn
        (``addons.wire.rawstreams``)."""
        origin = flow.metadata.get(ORIGIN_KEY)
        if isinstance(origin, http.HTTPFlow):
            self._write(origin)

    def hangup(self) -> None:
        """SIGHUP: sign what is written so far and carry on."""
        if self.sink is not None:
            try:
                self.sink.checkpoint()
            except Exception as exc:
                log.error("audit.checkpoint_failed", error=_failure(exc))

    def done(self) -> None:
        if self._refusal_flusher is not None:
            self._refusal_flusher.cancel()
        self._write_refusals(self.refusals.drain())
        self._close_router()
        if self.sink is not None:
            try:
                self.sink.close()
            except Exception as exc:
                log.error("audit.close_failed", error=_failure(exc))

    # -- building --------------------------------------------------------------------------------------

    def _ensure_router(self) -> None:
        policy = self.runtime.policy
        router_settings = (policy.alerts, policy.data_dir, policy.audit.path)
        if router_settings != self._router_settings:
            self._close_router()
            self.router = self._build_router(policy)
            self.runtime.alert_router = self.router
            self._router_settings = router_settings

    def _build_router(self, policy: Policy) -> AlertRouter | None:
        if policy.alerts is None:
            return None
        # The store is opened here, on the proxy's thread, and handed to the router's thread.
        return AlertRouter(
            policy.alerts,
            data_dir=policy.data_dir,
            audit_dir=policy.audit.path,
            action_handler=partial(self._apply_action, self.runtime.state),
            store=self.runtime.state,
        )

    def _open_sink(self, settings: AuditSettings) -> AuditLog:
        if settings.spool.resolve() == settings.path.resolve():
            raise exceptions.OptionsError("audit.spool must be a directory other than audit.path")
        # One of several workers keeps its own chain (and spool) in its own directory, signed with the
        # one key.
        writer = self.runtime.writer
        directory = settings.path / writer if writer else settings.path
        try:
            head = partial(self._publish_head, directory, writer)
            return AuditLog(
                directory,
                key_path=settings.path / PRIVATE_KEY_NAME if writer else None,
                fsync=settings.fsync,
                checkpoint_every=settings.checkpoint_every,
                checkpoint_seconds=settings.checkpoint_after,
                heartbeat_seconds=settings.heartbeat,
                retention_days=settings.retention_days,
                on_error=settings.on_error,
                on_unavailable=self._audit_unavailable,
                spool=settings.spool / writer if writer else settings.spool,
                on_checkpoint=head,
                count_witness=StoredCountWitness(self.runtime.state, partial(writer_id, directory, writer)),
            )
        except AuditUnavailable as exc:
            raise exceptions.OptionsError(str(exc)) from None

    def _publish_head(self, directory: Path, worker: str, checkpoint: dict[str, Any]) -> None:
        """Each signed checkpoint is also this writer's head in the shared store (``proxy.audit.heads``)."""
        publish_head(self.runtime.state, directory, worker, checkpoint)

    def _close_router(self) -> None:
        if self.router is not None:
            try:
                self.router.close()
            except Exception as exc:
                log.error("alerts.close_failed", error=_failure(exc))
            self.router = None

    # -- callbacks -------------------------------------------------------------------------------------

    def _audit_unavailable(self, reason: str) -> None:
        """Called by the log once per outage, on the thread that found the disk refusing writes."""
        self._outage = reason
        on_error = self.sink.on_error if self.sink is not None else self.runtime.policy.audit.on_error
        log.error(
            "audit.unavailable", reason=reason, on_error=on_error, path=str(self.runtime.policy.audit.path)
        )
        if self.router is None:
            return
        consequence = "agents' requests are refused" if on_error == "closed" else "events are buffered"
        try:
            self.router.raise_alert(
                AUDIT_UNAVAILABLE_RULE,
                f"The audit log cannot be written ({reason}); {consequence} until it can",
                Severity.CRITICAL,
            )
        except Exception as exc:
            log.error("alerts.raise_failed", rule=AUDIT_UNAVAILABLE_RULE, error=_failure(exc))

    def _apply_action(self, store: StateStore, action: str, alert: Alert) -> None:
        """Built-in alert actions, run on the router's thread: freezes and rotated tokens in the shared
        state store."""
        if action == "rotate_token":
            for agent in alert.agent_ids:
                # The old token stops working now, and the new one is shown to no one: the agent is let in
                # again with the one an operator issues it.
                tokens.rotate(store, agent, f"alert {alert.rule} ({alert.alert_id})")
                log.warning(
                    "alerts.token_rotated",
                    agent=agent,
                    rule=alert.rule,
                    issue=tokens.HOW_TO_ISSUE.format(agent=agent),
                )
            return
        frozen = freeze.apply_alert_action(store, action, alert, self.runtime.policy.detection.freeze_for_s)
        log.warning("alerts.action_applied", action=action, rule=alert.rule, targets=frozen)

    # -- refused authentications -------------------------------------------------------------------

    def _count_refusal(self, flow: http.HTTPFlow) -> None:
        refusal = flow.metadata.pop(REFUSAL_KEY, None)
        if isinstance(refusal, AuthRefusal):
            now = datetime.now(UTC)
            self._write_refusals(self.refusals.refused(refusal.client, refusal.reason, refusal.agent, now))

    async def _flush_refusals_on_time(self) -> None:
        while True:
            await asyncio.sleep(1)
            self._write_refusals(self.refusals.due(datetime.now(UTC)))

    def _write_refusals(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            log.warning(
                "auth.refused",
                client=event["client"],
                reason=event["reason"],
                attempts=event["attempts"],
                agents=event["agents"],
            )
            if self.sink is None:
                continue
            try:
                record = self.sink.append(event)
            except Exception as exc:  # the refusal stands; only its record is lost, and that is logged
                log.error("audit.refusal_not_recorded", error=_failure(exc))
                continue
            if self.router is not None:
                self.router.submit(record)

    def _drill_recorded(self, record: dict[str, Any]) -> None:
        """A drill turn goes to its run's report and, instead of the alert rules (a drill freezes nobody),
        raises one drill alert to every destination."""
        run_id, case = split_mark(record["drill"])
        run = self.runtime.drills.get(run_id)
        if run is None:
            return
        run.turns[case] = {
            name: record.get(name) for name in ("event_id", "decision", "status", "egress_host", "mode")
        } | {
            "findings": [
                {name: finding.get(name) for name in ("threat", "rule", "severity", "enforced")}
                for finding in record["findings"]
            ]
        }
        if self.router is None:
            return
        threats = sorted({finding["threat"] for finding in record["findings"]}) or ["nothing"]
        run.alerts[case] = self._alert_about(
            record,
            DRILL_RULE,
            f"[DRILL {run_id}] {case}: {', '.join(threats)} detected, decision {record['decision']}. "
            f"A drill, not an incident.",
            Severity.LOW,
        )

    def _request_approvals(self, record: dict[str, Any]) -> None:
        """Each approval a withheld call opened is routed to the alert destinations, like an alert, naming
        its id (never the arguments: the operator reads their redacted summary in the approval). A retry
        of the same call names the same pending approval and asks nobody again."""
        assert self.router is not None
        for finding in record["findings"]:
            extra = finding.get("extra", {})
            approval_id = extra.get("pending_approval")
            if not isinstance(approval_id, str) or extra.get("approval_requested") is not True:
                continue
            tool = finding["extra"].get("tool")
            self._alert_about(
                record,
                APPROVAL_REQUESTED_RULE,
                f"Agent {record['agent_id']} asks to run the destructive tool {tool}: approval {approval_id} "
                f"is pending (egressguard approvals approve|deny {approval_id})",
                Severity.HIGH,
            )

    def _alert_about(self, record: dict[str, Any], rule: str, description: str, severity: Severity) -> str:
        """An alert of egressguard's own about one audit record, to every destination; its id."""
        assert self.router is not None
        return self.router.raise_alert(
            rule, description, severity, agent_ids=[record["agent_id"]], event_ids=[record["event_id"]]
        )

    # -- writing ---------------------------------------------------------------------------------------

    def _write(self, flow: http.HTTPFlow) -> bool:
        """Record the flow's turn (once); False only when the log refused it (``on_error: closed``)."""
        try:
            return self._write_turn(flow)
        except Exception as exc:
            log.error("audit.write_failed", error=_failure(exc))
            return True

    def _write_turn(self, flow: http.HTTPFlow) -> bool:
        turn = turn_of(flow)
        if turn is None or flow.metadata.get(_WRITTEN) or self.sink is None:
            return True
        flow.metadata[_WRITTEN] = True
        left = was_sent(flow.request)
        if flow.error is not None:
            turn.errors.append(f"connection: {flow.error.msg}")
            if refused_as_malformed(flow) and not left:
                turn.escalate(Decision.PROTOCOL_ERROR)
            sent = "had been forwarded" if left else "was not forwarded"
            if client_went_away(flow):
                turn.errors.append(f"agent: went away before its answer was complete; its request {sent}")
            elif flow.error.msg.startswith(UPSTREAM_RESET):
                turn.errors.append(
                    f"upstream: reset the stream before its answer was complete; the request {sent}"
                )
            elif received_status(flow) == 502:
                # The upstream never answered (refused, closed, spoke no HTTP: plain HTTP to a TLS port):
                # what egressguard did to the request stands, and the record says it got no answer.
                turn.errors.append(f"upstream: failed before its answer was complete; the request {sent}")
        if self.runtime.state_degraded:
            turn.errors.append(DEGRADED_STATE)
        response = flow.response
        event = turn_event(
            turn,
            mode=policy_of(flow, self.runtime).mode,
            method=flow.request.method,
            path=flow.request.path.split("?", 1)[0],
            status=received_status(flow),
            forwarded=left if flow.request.method != "CONNECT" else None,
            upstream_ms=_milliseconds(upstream_seconds(flow)),
            input_sha256=_sha256(flow.request.raw_content),
            output_sha256=_sha256(response.raw_content) if response is not None else None,
        )
        detectors = self.runtime.detectors
        event = scrub(event, detectors.sensitive, detectors.fingerprint_key)
        try:
            record = self.sink.append(event)
        except AuditUnavailable as exc:
            self.runtime.metrics.audit_errors.inc()
            log.error("audit.turn_not_recorded", event_id=turn.event_id, reason=str(exc))
            return False
        self.runtime.metrics.audit_writes.inc()
        if record.get("drill"):
            self._drill_recorded(record)
        elif self.router is not None:
            self.router.submit(record)
            self._request_approvals(record)
        log.info(
            "agent.turn",
            event_id=record["event_id"],
            agent=record["agent_id"],
            host=record["egress_host"],
            method=record["method"],
            status=record["status"],
            decision=record["decision"],
            latency_ms=record["latency_ms"],
            findings=[finding["rule"] for finding in record["findings"]],
        )
        return True
