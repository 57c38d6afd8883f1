"""Counts every finished turn in the Prometheus metrics (``proxy.control.metrics``), with its upstream time
and egressguard's own time. Last in the chain, so it sees each turn as the audit log recorded it."""

from __future__ import annotations

import time

from mitmproxy import http

from addons.gate.turns import connect_is_a_turn, turn_of
from proxy.runtime import Runtime

_COUNTED = "egressguard.counted"
_FORWARDED = "egressguard.forwarded"


class TurnMetrics:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def request(self, flow: http.HTTPFlow) -> None:
        """Every request hook has run: from here on the time is the upstream's."""
        if flow.response is None:
            flow.metadata[_FORWARDED] = time.time()

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if connect_is_a_turn(flow):
            self._count(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        if flow.websocket is None:
            self._count(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._count(flow)

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        self._count(flow)

    def _count(self, flow: http.HTTPFlow) -> None:
        turn = turn_of(flow)
        if turn is None or flow.metadata.get(_COUNTED):
            return
        flow.metadata[_COUNTED] = True
        response = flow.response
        total_s = time.time() - flow.request.timestamp_start
        self.runtime.metrics.observe_turn(
            turn, response.status_code if response else None, upstream_seconds(flow), total_s
        )


def upstream_seconds(flow: http.HTTPFlow) -> float | None:
    """From forwarding the request to the upstream's last byte; None when nothing was forwarded or the
    answer is not complete."""
    forwarded = flow.metadata.get(_FORWARDED)
    response = flow.response
    if isinstance(forwarded, float) and response is not None and response.timestamp_end:
        return max(0.0, response.timestamp_end - forwarded)
    return None
