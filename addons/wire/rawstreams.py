"""Refuses connections that stop being HTTP, which no detector can read.

mitmproxy relays bytes it cannot read as HTTP untouched, in both directions: whatever an agent sends
through a CONNECT tunnel that is not HTTP (plain or inside the TLS egressguard intercepts), and whatever
follows a ``101 Switching Protocols`` to a protocol other than WebSocket (``h2c``, a custom one). Where
a threat decided on a body's words is enforced, such a stream carries nothing: a tunnel's raw stream is
connected nowhere, and an upgrade's 101 is answered with a 502 in the API's shape instead. In observe
mode it is relayed, on the record. A tunnel to an ``inspect: false`` destination is relayed raw by
policy, whatever it carries.
"""

from __future__ import annotations

import weakref
from collections.abc import MutableMapping

import wsproto.handshake
from mitmproxy import connection, ctx, http, tcp
from mitmproxy.proxy.server_hooks import ServerConnectionHookData

from addons.gate.turns import answer_in_dialect, policy_of, turn_of
from addons.inspect import body_finding
from proxy.inspection import inspection_threat, reading_threat
from proxy.model import Decision, Finding
from proxy.runtime import Runtime
from proxy.turn import Turn

RAW_STREAM_RULE = "inspection.raw_stream"
RAW_STREAM_CODE = "egressguard_raw_stream"
ORIGIN_KEY = "egressguard.raw_stream_origin"
"""On a TCP flow: the HTTP flow whose turn records it (``addons.record.audit`` writes that turn)."""
REFUSAL_KEY = "egressguard.raw_stream_refusal"
TUNNEL_SIGNAL = "the tunnel carried bytes that are not HTTP; they cannot be inspected"
UPGRADE_SIGNAL = "the upstream switched the connection to {protocol!r}, not HTTP; it cannot be inspected"


class RawStreams:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.origins: MutableMapping[connection.Client, http.HTTPFlow] = weakref.WeakKeyDictionary()
        """The flow a raw stream on this client connection would continue: its CONNECT, or a request
        the upstream answered 101."""
        self.refused: MutableMapping[connection.Client, str] = weakref.WeakKeyDictionary()

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if turn_of(flow) is not None and flow.response is None:
            self.origins[flow.client_conn] = flow

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """Decided on the head: the upstream's side of the connection reads on as a raw stream from the
        moment it parsed a 101, before the response hook."""
        turn = turn_of(flow)
        response = flow.response
        if turn is None or response is None or response.status_code != 101 or is_websocket(flow):
            return
        signal = UPGRADE_SIGNAL.format(protocol=response.headers.get("upgrade", "")[:40])
        finding = self._record(flow, turn, signal, "response")
        if not finding.enforced:
            self.origins[flow.client_conn] = flow
            return
        message = f"egressguard blocked this response: {finding.threat} ({finding.rule}); audit event "
        refusal = answer_in_dialect(flow.request, 502, message + turn.event_id, RAW_STREAM_CODE)
        refusal.headers["connection"] = "close"
        # Rewritten in place, not replaced: the upstream's side of the connection holds this same response
        # and, seeing a 502 that closes the connection rather than a 101, relays nothing more either way.
        response.data = refusal.data
        flow.metadata[REFUSAL_KEY] = refusal.content

    def response(self, flow: http.HTTPFlow) -> None:
        """The refusal's body, which the end of the 101's (empty) body replaced."""
        refusal = flow.metadata.pop(REFUSAL_KEY, None)
        if isinstance(refusal, bytes) and flow.response is not None:
            flow.response.content = refusal

    def tcp_start(self, flow: tcp.TCPFlow) -> None:
        origin = self.origins.pop(flow.client_conn, None)
        turn = turn_of(origin) if origin is not None else None
        if origin is None or turn is None:
            self.refused[flow.client_conn] = "a stream that is not HTTP, of no recorded turn"
            return
        if origin.request.method != "CONNECT" or turn.tunnelled:
            return  # an upgrade, recorded when its 101 was relayed; or a tunnel relayed raw by policy
        flow.metadata[ORIGIN_KEY] = origin
        if self._record(origin, turn, TUNNEL_SIGNAL, "tunnel").enforced:
            self.refused[flow.client_conn] = TUNNEL_SIGNAL

    def _record(self, flow: http.HTTPFlow, turn: Turn, signal: str, where: str) -> Finding:
        """The turn's finding about its raw stream, enforced (and the turn blocked) where the policy
        enforces a threat decided on a body's words."""
        policy = policy_of(flow, self.runtime)
        enforced = reading_threat(policy) is not None
        finding = body_finding(RAW_STREAM_RULE, signal, where, inspection_threat(policy), enforced=enforced)
        turn.add(finding)
        if enforced:
            turn.escalate(Decision.BLOCKED)
        return finding

    def server_connect(self, data: ServerConnectionHookData) -> None:
        reason = self.refused.get(data.client)
        if reason is not None:
            data.server.error = f"egressguard refused it: {reason}"


def is_websocket(flow: http.HTTPFlow) -> bool:
    """Whether mitmproxy reads what follows this 101 as WebSocket messages (which ``addons.inspect``
    inspects), by the test it applies once the response is whole."""
    assert flow.response is not None
    return (
        flow.response.headers.get("upgrade", "").lower() == "websocket"
        and flow.request.headers.get("sec-websocket-version", "").encode()
        == wsproto.handshake.WEBSOCKET_VERSION
        and bool(ctx.options.websocket)
    )
