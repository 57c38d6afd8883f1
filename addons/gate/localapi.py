"""Reserved hosts answered in-process (``proxy.inprocess.reserved``), and the local API at
``egressguard.internal`` (``proxy.inprocess.localapi``) among them, for authenticated agents over plain
HTTP and inside CONNECT tunnels.

``ReservedHosts`` is the one path every reserved host takes: a CONNECT to one is accepted without an
upstream, no TLS is started towards it, no connection to it is ever made, and a request the host's
service does not take is refused there. The local API sets the agent's turn aside as soon as a request
is known to be for it, so no later addon takes it for egress (no DNS lookup, no first-seen host); a
reported turn is put back only once answered, for the audit addon to chain like any other. The drill
target answers after inspection (``addons.gate.drill``), since a drill exercises the chain.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from mitmproxy import http
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from mitmproxy.tls import ClientHelloData

from addons.gate.freeze import judge_freeze
from addons.gate.turns import METADATA_KEY, policy_of, turn_of
from proxy.inprocess.localapi import (
    MAX_EVENT_BYTES,
    MAX_INSPECT_BYTES,
    BadRequest,
    inspect,
    parse_json,
    reported_turn,
    verdict_of,
)
from proxy.inprocess.reserved import Service, reserved_service
from proxy.inspection import TurnInspector
from proxy.runtime import Runtime
from proxy.turn import Turn

log = structlog.get_logger("egressguard")

LOCAL_KEY = "egressguard.local_api"
LIMITS = {"/v1/inspect": MAX_INSPECT_BYTES, "/v1/events": MAX_EVENT_BYTES}


def _json(status: int, document: dict[str, Any]) -> http.Response:
    return http.Response.make(status, json.dumps(document).encode(), {"content-type": "application/json"})


class ReservedHosts:
    def http_connect(self, flow: http.HTTPFlow) -> None:
        """An authenticated CONNECT to a reserved host is accepted here, without a connection upstream;
        the tunnel's requests are the turns."""
        if turn_of(flow) is None or flow.response is not None or reserved_service(flow.request.host) is None:
            return
        del flow.metadata[METADATA_KEY]
        flow.response = http.Response.make(200)

    def tls_clienthello(self, data: ClientHelloData) -> None:
        address = data.context.server.address
        if address is not None and reserved_service(address[0]) is not None:
            data.establish_server_tls_first = False

    def server_connect(self, data: ServerConnectionHookData) -> None:
        """Whatever path leads here, a reserved host is never looked up or connected to."""
        address = data.server.address
        service = reserved_service(address[0]) if address is not None else None
        if service is not None:
            data.server.error = f"{address[0] if address else ''} is answered by egressguard's {service}"

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """The drill target answers drill runs only: anything else sent there is refused, never taken
        for egress."""
        turn = turn_of(flow)
        if turn is None or flow.response is not None or turn.drill is not None:
            return
        if reserved_service(flow.request.host) is Service.DRILL:
            flow.response = _json(403, {"error": f"{flow.request.host} answers egressguard drill runs only"})


class LocalApi:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        turn = turn_of(flow)
        if turn is None or flow.response is not None:
            return
        if reserved_service(flow.request.host) is not Service.LOCAL_API:
            return
        flow.metadata[LOCAL_KEY] = flow.metadata.pop(METADATA_KEY)
        path = flow.request.path.split("?", 1)[0]
        if path not in LIMITS:
            flow.response = _json(404, {"error": f"no such endpoint: use POST {' or '.join(LIMITS)}"})
        elif flow.request.method != "POST":
            flow.response = _json(405, {"error": "use POST"})
        elif not flow.request.headers.get("content-length", "").isdigit():
            flow.response = _json(411, {"error": "a content-length is required"})
        elif int(flow.request.headers["content-length"]) > LIMITS[path]:
            flow.response = _json(413, {"error": f"body over the limit of {LIMITS[path]} bytes"})

    def request(self, flow: http.HTTPFlow) -> None:
        turn = flow.metadata.get(LOCAL_KEY)
        if not isinstance(turn, Turn) or flow.response is not None:
            return
        path = flow.request.path.split("?", 1)[0]
        try:
            document = parse_json(flow.request.get_content(strict=False) or b"", LIMITS[path])
            if path == "/v1/inspect":
                policy = policy_of(flow, self.runtime)
                # A frozen agent, user or session gets every step refused, as its API calls are.
                if judge_freeze(self.runtime, turn, policy) is not None:
                    flow.response = _json(200, verdict_of(turn, None).to_json())
                    return
                inspector = TurnInspector(self.runtime.detectors, policy, self.runtime.state, turn)
                flow.response = _json(200, inspect(inspector, document).to_json())
                return
            turn.egress_host = None
            reported_turn(turn, document)
        except BadRequest as error:
            flow.response = _json(400, {"error": str(error)})
            return
        except Exception as error:  # the proxy keeps serving; the agent gets a clear answer
            log.error("local_api.failed", path=path, error=type(error).__name__)
            flow.response = _json(500, {"error": "internal error; see the proxy's log"})
            return
        flow.metadata[METADATA_KEY] = turn
        flow.response = _json(202, {"event_id": turn.event_id})
