"""Writes one ``agent.turn`` event per finished turn and one canonical log line per flow."""

from __future__ import annotations

import hashlib
from collections.abc import Set

import structlog
from mitmproxy import http

from addons.turns import turn_of
from proxy.audit import AuditLog
from proxy.events import turn_event
from proxy.runtime import Runtime

log = structlog.get_logger("egressguard")

_WRITTEN = "egressguard_audited"


def _sha256(content: bytes | None) -> str | None:
    return hashlib.sha256(content).hexdigest() if content is not None else None


class Audit:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.sink: AuditLog | None = None

    def configure(self, updated: Set[str]) -> None:
        policy = self.runtime.policy
        if self.sink is None or self.sink.directory != policy.audit_path:
            settings = policy.audit
            self.sink = AuditLog(
                settings.path,
                fsync=settings.fsync,
                checkpoint_every=settings.checkpoint_every,
                retention_days=settings.retention_days,
                on_error=settings.on_error,
            )

    def http_connect(self, flow: http.HTTPFlow) -> None:
        """A CONNECT that an earlier addon answered (refused) is a turn of its own."""
        if flow.response is not None:
            self._write(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        self._write(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._write(flow)

    def done(self) -> None:
        if self.sink is not None:
            self.sink.close()

    def _write(self, flow: http.HTTPFlow) -> None:
        turn = turn_of(flow)
        if turn is None or flow.metadata.get(_WRITTEN):
            return
        flow.metadata[_WRITTEN] = True
        if flow.error is not None:
            turn.errors.append(f"connection: {flow.error.msg}")
        response = flow.response
        event = turn_event(
            turn,
            mode=self.runtime.policy.mode,
            method=flow.request.method,
            path=flow.request.path.split("?", 1)[0],
            status=response.status_code if response is not None else None,
            input_sha256=_sha256(flow.request.raw_content),
            output_sha256=_sha256(response.raw_content) if response is not None else None,
        )
        assert self.sink is not None
        record = self.sink.append(event)
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
