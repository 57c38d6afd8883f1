"""Reserved hosts: one table of hosts egressguard answers itself, one addon path for all of them."""

from __future__ import annotations

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow

from addons.gate.localapi import ReservedHosts
from addons.gate.turns import METADATA_KEY
from proxy.control.drill import DRILL_HOST
from proxy.inprocess.localapi import LOCAL_API_HOST
from proxy.inprocess.reserved import RESERVED_HOSTS, Service, reserved_service
from proxy.turn import Turn, TurnContext


@pytest.mark.parametrize(
    ("host", "service"),
    [
        ("egressguard.internal", Service.LOCAL_API),
        ("EGRESSGUARD.Internal.", Service.LOCAL_API),
        ("drill.egressguard.invalid", Service.DRILL),
        ("Drill.EgressGuard.invalid.", Service.DRILL),
        ("api.openai.com", None),
        ("egressguard.internal.evil.example", None),
        ("internal", None),
        (None, None),
    ],
)
def test_every_spelling_of_a_reserved_host_names_its_service(
    host: str | None, service: Service | None
) -> None:
    """Case and a trailing dot do not make a reserved host a real one; look-alikes stay real hosts."""
    assert reserved_service(host) is service


def test_the_table_holds_both_services() -> None:
    assert RESERVED_HOSTS == {LOCAL_API_HOST: Service.LOCAL_API, DRILL_HOST: Service.DRILL}


def turn_flow(host: str, *, drill: str | None = None) -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.request.host = host
    turn = Turn(context=TurnContext(agent_id="bot", role="support"))
    turn.drill = drill
    flow.metadata[METADATA_KEY] = turn
    return flow


@pytest.mark.parametrize("host", [LOCAL_API_HOST, DRILL_HOST])
def test_a_connect_to_any_reserved_host_is_accepted_in_process(host: str) -> None:
    """The CONNECT is answered 200 without an upstream and is no turn of its own."""
    flow = turn_flow(host)
    flow.request.method = "CONNECT"
    with taddons.context(ReservedHosts()):
        ReservedHosts().http_connect(flow)
    assert flow.response is not None and flow.response.status_code == 200
    assert METADATA_KEY not in flow.metadata


def test_a_connect_elsewhere_is_left_to_egress() -> None:
    flow = turn_flow("api.openai.com")
    ReservedHosts().http_connect(flow)
    assert flow.response is None and METADATA_KEY in flow.metadata


def test_the_drill_target_answers_drill_runs_only() -> None:
    """A request to the drill host outside a drill run is refused there (never looked up or sent out);
    a drill-marked one goes on to be inspected and answered by the drill target."""
    stray, drill = turn_flow(DRILL_HOST), turn_flow(DRILL_HOST, drill="run-1:prompt-injection")
    ReservedHosts().requestheaders(stray)
    ReservedHosts().requestheaders(drill)
    assert stray.response is not None and stray.response.status_code == 403
    assert drill.response is None
