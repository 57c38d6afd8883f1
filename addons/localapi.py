"""The local API at ``egressguard.internal`` (``proxy.inprocess.localapi``), answered in-process for
authenticated agents over plain HTTP and inside CONNECT tunnels.

The agent's turn is set aside as soon as the request is known to be for the local API, so no later addon
takes it for egress: no DNS lookup, no first-seen host, no upstream connection. A reported turn is put
back only once answered, for the audit addon to chain like any other.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from mitmproxy import http
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from mitmproxy.tls import ClientHelloData

from addons.freeze import judge_freeze
from addons.turns import METADATA_KEY, policy_of, turn_of
from proxy.egress import canonical_host
from proxy.inprocess.localapi import (
    LOCAL_API_HOST,
    MAX_EVENT_BYTES,
    MAX_INSPECT_BYTES,
    BadRequest,
    inspect,
    parse_json,
    reported_turn,
    verdict_of,
)
from proxy.inspection import TurnInspector
from proxy.runtime import Runtime
from proxy.turn import Turn

log = structlog.get_logger("egressguard")

LOCAL_KEY = "egressguard.local_api"
LIMITS = {"/v1/inspect": MAX_INSPECT_BYTES, "/v1/events": MAX_EVENT_BYTES}


def is_local(host: str | None) -> bool:
    return host is not None and canonical_host(host) == LOCAL_API_HOST


def _json(status: int, document: dict[str, Any]) -> http.Response:
    return http.Response.make(status, json.dumps(document).encode(), {"content-type": "application/json"})


class LocalApi:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def http_connect(self, flow: http.HTTPFlow) -> None:
        """An authenticated CONNECT to the local host is accepted here, without a connection upstream."""
        if turn_of(flow) is None or flow.response is not None or not is_local(flow.request.host):
            return
        del flow.metadata[METADATA_KEY]
        flow.response = http.Response.make(200)

    def tls_clienthello(self, data: ClientHelloData) -> None:
        address = data.context.server.address
        if address is not None and is_local(address[0]):
            data.establish_server_tls_first = False

    def server_connect(self, data: ServerConnectionHookData) -> None:
        """Whatever path leads here, the local host is never looked up or connected to."""
        address = data.server.address
        if address is not None and is_local(address[0]):
            data.server.error = f"{LOCAL_API_HOST} is answered by egressguard"

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        turn = turn_of(flow)
        if turn is None or flow.response is not None or not is_local(flow.request.host):
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
