"""Where a flow's ``Turn`` lives, so every addon finds it the same way, and how a turn is refused when
the shared state it needs cannot be reached."""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.net.http import url

from proxy.config.policy import Policy
from proxy.dialects import detect
from proxy.model import Decision
from proxy.runtime import Runtime
from proxy.state import StateUnavailable
from proxy.turn import Turn

METADATA_KEY = "egressguard"
POLICY_KEY = "egressguard.policy"
STATE_UNAVAILABLE_CODE = "egressguard_state_unavailable"
PRETTY_HOSTS = 1024
"""Host header values whose host part is kept (``pretty_host``)."""

_pretty_hosts: dict[str, str] = {}


def pretty_host(request: http.Request) -> str:
    """``request.pretty_host``, with the host part of each Host value (or HTTP/2 authority) kept by the
    exact value: an agent names the same few hosts turn after turn, and parsing one costs more than the
    rest of a lookup."""
    authority = request.host_header
    if not authority:
        return request.host
    host = _pretty_hosts.get(authority)
    if host is None:
        host = url.parse_authority(authority, check=False)[0]
        if len(_pretty_hosts) >= PRETTY_HOSTS:
            _pretty_hosts.clear()
        _pretty_hosts[authority] = host
    return host


def turn_of(flow: http.HTTPFlow) -> Turn | None:
    turn = flow.metadata.get(METADATA_KEY)
    return turn if isinstance(turn, Turn) else None


def refuse_without_state(flow: http.HTTPFlow, turn: Turn, error: StateUnavailable) -> None:
    """The shared store is down and ``state.on_error`` is closed: rate limits, freezes and approvals
    cannot be checked, so the agent gets a 503 in its API's error shape instead of an unchecked turn
    (unless a streamed answer is already on its way)."""
    turn.errors.append(f"state: {error}")
    turn.escalate(Decision.BLOCKED)
    if flow.response is not None and flow.response.stream:
        return
    message = f"egressguard: state store unavailable, on_error is closed (event {turn.event_id})"
    flow.response = answer_in_dialect(flow.request, 503, message, STATE_UNAVAILABLE_CODE)


def answer_in_dialect(request: http.Request, status: int, message: str, code: str) -> http.Response:
    """An error in the shape of the API the request speaks, so the agent's SDK raises a readable error."""
    dialect = detect(
        request.method,
        request.path,
        request.headers.get("content-type"),
        request.get_content(strict=False) or b"",
    )
    status, headers, body = dialect.error_response(status, message, code)
    return http.Response.make(status, body, headers)


def pin_policy(flow: http.HTTPFlow, policy: Policy) -> None:
    """A flow finishes under the policy it started with, whatever a reload does meanwhile."""
    flow.metadata[POLICY_KEY] = policy


def policy_of(flow: http.HTTPFlow, runtime: Runtime) -> Policy:
    pinned = flow.metadata.get(POLICY_KEY)
    return pinned if isinstance(pinned, Policy) else runtime.policy


def connect_is_a_turn(flow: http.HTTPFlow) -> bool:
    """A CONNECT is recorded on its own when it was answered, refused (its tunnel only carries the
    refusal back) or relayed without interception (nothing inside it is read)."""
    turn = turn_of(flow)
    return flow.response is not None or (
        turn is not None and (turn.tunnelled or turn.decision is Decision.BLOCKED)
    )
