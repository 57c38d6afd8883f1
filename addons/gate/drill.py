"""Drill turns: marks the requests of an operator's drill run and answers them with the built-in target,
so a drill exercises the whole chain without anything leaving the proxy (``proxy.control.drill``).

Two classes because the chain runs every hook in list order: the marker must run before the egress
decision, the target after request inspection.
"""

from __future__ import annotations

from collections.abc import Iterable

from mitmproxy import http

from addons.gate.turns import turn_of
from addons.wire.fields import take_fields
from proxy.control.drill import CASE_HEADER, CASES_BY_NAME, TOKEN_HEADER, drill_mark, split_mark
from proxy.runtime import Runtime

TOKEN_FIELD, CASE_FIELD = TOKEN_HEADER.lower().encode(), CASE_HEADER.lower().encode()


class DrillMarker:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        headers = flow.request.headers
        if TOKEN_HEADER not in headers and CASE_HEADER not in headers:
            # Looked up in the fields' index, which the turn's opening built: a request that is no drill's
            # (nearly all) is not walked field by field.
            return
        found = take_fields(headers, TOKEN_FIELD, CASE_FIELD)
        # Every copy of a header, joined as ``Headers.pop`` joins them.
        token, case = (", ".join(found[name]) if found[name] else None for name in (TOKEN_FIELD, CASE_FIELD))
        turn = turn_of(flow)
        if turn is None or token is None or case not in CASES_BY_NAME:
            return
        run = self.runtime.drills.by_token(token)
        if run is not None:
            turn.drill = drill_mark(run, case)


class DrillTarget:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def request(self, flow: http.HTTPFlow) -> None:
        """Every drill request that got this far is answered here: a drill never reaches an upstream."""
        turn = turn_of(flow)
        if turn is None or turn.drill is None or flow.response is not None:
            return
        answer = CASES_BY_NAME[split_mark(turn.drill)[1]].answer
        content_type, body = answer() if answer is not None else ("application/json", b"{}")
        flow.response = http.Response.make(200, body, {"content-type": content_type})

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """mitmproxy sends an answer an addon made in one piece and never calls its stream: a drill's event
        stream is put through the stream filters here, as it would be in transit."""
        turn = turn_of(flow)
        response = flow.response
        if turn is None or turn.drill is None or response is None or not callable(response.stream):
            return
        relay = response.stream
        # The relay stays in place (mitmproxy does not call it for this answer): the inspection addon
        # reads from it that the stream went through its filters.
        body = _joined(relay(response.content or b"")) + _joined(relay(b""))
        response.headers.pop("transfer-encoding", None)
        response.content = body


def _joined(pieces: bytes | Iterable[bytes]) -> bytes:
    return pieces if isinstance(pieces, bytes) else b"".join(pieces)
