"""The raw-stream addon's decisions: a connection that stops being HTTP carries nothing where a threat
decided on a body's words is enforced, and is recorded either way."""

from __future__ import annotations

import textwrap

import pytest
from mitmproxy import connection, http, tcp
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from mitmproxy.test import taddons, tflow, tutils

from addons.gate.turns import METADATA_KEY
from addons.wire.rawstreams import ORIGIN_KEY, RAW_STREAM_RULE, RawStreams
from proxy.config.policy import parse_policy
from proxy.runtime import Runtime
from proxy.state import SqliteStateStore
from proxy.turn import Turn, TurnContext


def raw_streams(mode: str, threats: str = "") -> RawStreams:
    policy = textwrap.dedent(f"""\
        mode: {mode}
        {threats}
        agents:
          bot: {{token: t, role: support}}
        roles:
          support:
            egress: {{allow: [api.openai.com]}}
        """)
    return RawStreams(Runtime(parse_policy(policy, "p.yaml", environ={}), SqliteStateStore(None)))


def turn_flow(method: str = "CONNECT") -> http.HTTPFlow:
    flow = tflow.tflow(resp=False)
    flow.request.method = method
    flow.metadata[METADATA_KEY] = Turn(TurnContext(agent_id="bot", role="support"))
    return flow


def raw_stream_on(origin: http.HTTPFlow) -> tcp.TCPFlow:
    flow = tflow.ttcpflow()
    flow.client_conn = origin.client_conn
    return flow


def raw_stream_in_tunnel(addon: RawStreams, *, tunnelled: bool = False) -> tuple[http.HTTPFlow, tcp.TCPFlow]:
    """A CONNECT (relayed without interception where ``tunnelled``) and the raw stream that follows it."""
    with taddons.context(addon):
        connect = turn_flow()
        connect.metadata[METADATA_KEY].tunnelled = tunnelled
        addon.http_connect(connect)
        stream = raw_stream_on(connect)
        addon.tcp_start(stream)
    return connect, stream


def connects(addon: RawStreams, client: connection.Client) -> bool:
    server = connection.Server(address=("api.openai.com", 443))
    addon.server_connect(ServerConnectionHookData(client=client, server=server))
    return server.error is None


def upgrade_answer(flow: http.HTTPFlow, protocol: str) -> None:
    flow.response = tutils.tresp(status_code=101, headers=((b"upgrade", protocol.encode()),), content=b"")


def findings(flow: http.HTTPFlow) -> list[tuple[str, bool]]:
    return [(found.rule, found.enforced) for found in flow.metadata[METADATA_KEY].findings]


def test_a_tunnel_that_carries_no_http_connects_nowhere_in_enforce_mode() -> None:
    """Raw bytes in an intercepted tunnel never reach a server: the turn is blocked, its finding enforced,
    and the stream carries the CONNECT for the audit to record."""
    addon = raw_streams("enforce")
    connect, stream = raw_stream_in_tunnel(addon)
    assert not connects(addon, stream.client_conn)
    assert findings(connect) == [(RAW_STREAM_RULE, True)]
    assert str(connect.metadata[METADATA_KEY].decision) == "blocked"
    assert stream.metadata[ORIGIN_KEY] is connect


def test_observe_mode_relays_the_raw_stream_on_the_record() -> None:
    addon = raw_streams("observe")
    connect, stream = raw_stream_in_tunnel(addon)
    assert connects(addon, stream.client_conn)
    assert findings(connect) == [(RAW_STREAM_RULE, False)]
    assert str(connect.metadata[METADATA_KEY].decision) == "allowed"


def test_only_threats_decided_on_words_refuse_a_raw_stream() -> None:
    """A policy enforcing only where agents connect lets the stream pass, recorded as not enforced."""
    addon = raw_streams("observe", "threats: {lateral_movement: enforce}")
    connect, _ = raw_stream_in_tunnel(addon)
    assert connects(addon, connect.client_conn)
    assert findings(connect) == [(RAW_STREAM_RULE, False)]


def test_a_tunnel_relayed_without_interception_carries_what_it_carries() -> None:
    """``inspect: false`` destinations are relayed raw by policy: no finding, nothing refused."""
    addon = raw_streams("enforce")
    connect, _ = raw_stream_in_tunnel(addon, tunnelled=True)
    assert connects(addon, connect.client_conn)
    assert findings(connect) == []


def test_a_raw_stream_of_no_turn_connects_nowhere() -> None:
    addon = raw_streams("observe")
    with taddons.context(addon):
        stream = tflow.ttcpflow()
        addon.tcp_start(stream)
        assert not connects(addon, stream.client_conn)


@pytest.mark.parametrize("protocol", ["h2c", "foo", "websocket"])
def test_an_upgrade_to_what_is_not_websocket_is_answered_502_in_enforce_mode(protocol: str) -> None:
    """mitmproxy relays what follows a 101 it does not read as WebSocket (a websocket upgrade with a
    version it does not speak included) as raw bytes: the agent gets a 502 in its API's shape instead,
    and the connection closes."""
    addon = raw_streams("enforce")
    with taddons.context(addon):
        flow = turn_flow("GET")
        upgrade_answer(flow, protocol)
        addon.responseheaders(flow)
        addon.response(flow)
    assert flow.response is not None and flow.response.status_code == 502
    assert flow.response.headers["connection"] == "close"
    assert RAW_STREAM_RULE in (flow.response.text or "")
    assert findings(flow) == [(RAW_STREAM_RULE, True)]


def test_an_upgrade_in_observe_mode_is_relayed_and_recorded_on_its_turn() -> None:
    addon = raw_streams("observe")
    with taddons.context(addon):
        flow = turn_flow("GET")
        upgrade_answer(flow, "h2c")
        addon.responseheaders(flow)
        addon.response(flow)
        stream = raw_stream_on(flow)
        addon.tcp_start(stream)
        assert connects(addon, stream.client_conn)
    assert flow.response is not None and flow.response.status_code == 101
    assert findings(flow) == [(RAW_STREAM_RULE, False)]
    assert ORIGIN_KEY not in stream.metadata  # written already, when the 101 was


def test_a_websocket_upgrade_is_left_to_the_websocket_inspection() -> None:
    addon = raw_streams("enforce")
    with taddons.context(addon):
        flow = tflow.twebsocketflow()
        flow.metadata[METADATA_KEY] = Turn(TurnContext(agent_id="bot", role="support"))
        addon.responseheaders(flow)
        addon.response(flow)
    assert flow.response is not None and flow.response.status_code == 101
    assert findings(flow) == []


def test_a_flow_another_addon_answered_is_no_origin() -> None:
    """A CONNECT egress refused connects nowhere anyway; it is recorded on its own."""
    addon = raw_streams("enforce")
    with taddons.context(addon):
        connect = turn_flow()
        connect.response = tutils.tresp(status_code=403)
        addon.http_connect(connect)
        stream = raw_stream_on(connect)
        addon.tcp_start(stream)
    assert findings(connect) == []
    assert ORIGIN_KEY not in stream.metadata
