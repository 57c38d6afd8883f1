"""The egress addon's own decisions: when it looks names up, and what an unresolvable name gets."""

from __future__ import annotations

import asyncio
import textwrap

import pytest
from mitmproxy import connection, http
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from mitmproxy.test import taddons, tflow
from mitmproxy.tls import ClientHello, ClientHelloData

import addons.gate.egress
from addons.gate.egress import Egress
from addons.gate.turns import METADATA_KEY
from proxy.config.policy import parse_policy
from proxy.runtime import Runtime
from proxy.state import SqliteStateStore
from proxy.turn import Turn, TurnContext

POLICY = textwrap.dedent("""\
    mode: enforce
    agents:
      bot: {token: t, role: support}
    roles:
      support:
        egress: {allow: ["*.openai.com"]}
    """)


def connect_flow(host: str) -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.request.method = "CONNECT"
    flow.request.host, flow.request.port = host, 443
    flow.metadata[METADATA_KEY] = Turn(TurnContext(agent_id="bot", role="support"))
    return flow


def refusal(egress: Egress, flow: http.HTTPFlow) -> str | None:
    """Why the CONNECT's tunnel was refused (its first request is answered with it), or None."""
    found = egress.tunnels[flow.client_conn].refusal
    turn = flow.metadata[METADATA_KEY]
    assert found is None or (flow.response is None and str(turn.decision) == "blocked")
    return found[0] if found is not None else None


@pytest.fixture
def egress() -> Egress:
    runtime = Runtime(parse_policy(POLICY, "p.yaml", environ={}), SqliteStateStore(None))
    return Egress(runtime)


def test_names_the_role_cannot_reach_are_never_looked_up(
    egress: Egress, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused name is refused before any DNS query, so the query cannot carry data out."""
    looked_up: list[str] = []

    def resolve_noted(host: str, port: int) -> list[str]:
        looked_up.append(host)
        return ["1.2.3.4"]

    monkeypatch.setattr(addons.gate.egress, "resolve", resolve_noted)
    with taddons.context(egress):
        flow = connect_flow("secret-data.attacker.example")
        asyncio.run(egress.http_connect(flow))
    assert refusal(egress, flow) is not None
    assert looked_up == []


def test_unresolvable_allowed_name_is_refused(egress: Egress, monkeypatch: pytest.MonkeyPatch) -> None:
    """An allowed name that does not resolve is refused, never let through to be resolved again later."""

    def fail(host: str, port: int) -> list[str]:
        raise OSError(-2, "Name or service not known")

    monkeypatch.setattr(addons.gate.egress, "resolve", fail)
    with taddons.context(egress):
        flow = connect_flow("api.openai.com")
        asyncio.run(egress.http_connect(flow))
    assert "does not resolve" in (refusal(egress, flow) or "")


def test_resolved_name_is_pinned_to_the_checked_address(
    egress: Egress, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An allowed name is connected to the address that was checked."""
    monkeypatch.setattr(addons.gate.egress, "resolve", lambda host, port: ["104.18.6.192"])
    with taddons.context(egress):
        flow = connect_flow("api.openai.com")
        asyncio.run(egress.http_connect(flow))
        assert flow.response is None
        assert egress.pins[flow.client_conn][("api.openai.com", 443)] == "104.18.6.192"


def test_a_client_asking_for_ever_new_names_keeps_a_bounded_set_of_pins(
    egress: Egress, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One client connection naming a new allowed host per request keeps at most MAX_PINS_PER_CLIENT
    pins, and the name its latest request asked for is always pinned to the address checked for it."""
    monkeypatch.setattr(addons.gate.egress, "resolve", lambda host, port: [f"104.18.{len(host) % 200}.9"])
    client = tflow.tflow().client_conn
    with taddons.context(egress):
        for index in range(3 * addons.gate.egress.MAX_PINS_PER_CLIENT):
            host = f"h{index}.openai.com"
            flow = connect_flow(host)
            flow.client_conn = client
            asyncio.run(egress.http_connect(flow))
            pins = egress.pins[client]
            assert len(pins) <= addons.gate.egress.MAX_PINS_PER_CLIENT
            assert pins[(host, 443)] == f"104.18.{len(host) % 200}.9"
        assert ("h0.openai.com", 443) not in egress.pins[client]


OBSERVED = POLICY.replace("mode: enforce", "mode: observe")


@pytest.fixture
def observing() -> Egress:
    runtime = Runtime(parse_policy(OBSERVED, "p.yaml", environ={}), SqliteStateStore(None))
    return Egress(runtime)


def tunnelled_request(connect: http.HTTPFlow, **headers: str) -> http.HTTPFlow:
    """A request inside ``connect``'s tunnel, as mitmproxy hands it over: addressed to the tunnel's host."""
    flow = tflow.tflow()
    flow.client_conn = connect.client_conn
    flow.request.host, flow.request.port = connect.request.host, connect.request.port
    flow.request.authority = ""
    flow.request.headers.clear()
    for name, value in headers.items():
        flow.request.headers[name.replace("_", "-")] = value
    flow.metadata[METADATA_KEY] = Turn(TurnContext(agent_id="bot", role="support"))
    return flow


FRONTING_NAMES = {
    "Host header": ({"host": "evil.example"}, None),
    "X-Forwarded-Host": ({"host": "api.openai.com", "x_forwarded_host": "evil.example"}, None),
    "Forwarded host": ({"host": "api.openai.com", "forwarded": "host=evil.example"}, None),
    "TLS SNI": ({"host": "api.openai.com"}, "evil.example"),
}


@pytest.mark.parametrize("variant", FRONTING_NAMES)
@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_request_naming_another_host_than_its_tunnel_is_refused_in_every_mode(
    egress: Egress, observing: Egress, monkeypatch: pytest.MonkeyPatch, mode: str, variant: str
) -> None:
    """Where lateral movement is only observed too, a request whose names disagree with its tunnel is
    refused and recorded as refused: its connection would go to the tunnel's host, while the server there
    routes by the name the request carries, a host nobody decided on and the record does not name."""
    gate = egress if mode == "enforce" else observing
    monkeypatch.setattr(addons.gate.egress, "resolve", lambda host, port: ["104.18.6.192"])
    headers, sni = FRONTING_NAMES[variant]
    with taddons.context(gate):
        connect = connect_flow("api.openai.com")
        asyncio.run(gate.http_connect(connect))
        connect.client_conn.sni = sni
        flow = tunnelled_request(connect, **headers)
        asyncio.run(gate.requestheaders(flow))
    assert flow.response is not None and flow.response.status_code == 403
    turn = flow.metadata[METADATA_KEY]
    assert str(turn.decision) == "blocked"
    assert turn.egress_host == "api.openai.com"
    assert [(finding.rule, finding.enforced) for finding in turn.findings] == [
        ("egress.domain_fronting", True)
    ]


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_request_naming_its_tunnel_goes_to_the_address_checked(
    egress: Egress, observing: Egress, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """The control: the same request naming its tunnel's host in another spelling passes, pinned."""
    gate = egress if mode == "enforce" else observing
    monkeypatch.setattr(addons.gate.egress, "resolve", lambda host, port: ["104.18.6.192"])
    with taddons.context(gate):
        connect = connect_flow("api.openai.com")
        asyncio.run(gate.http_connect(connect))
        connect.client_conn.sni = "API.OpenAI.com."
        flow = tunnelled_request(connect, host="api.OPENAI.com.:443")
        asyncio.run(gate.requestheaders(flow))
    assert flow.response is None
    assert flow.metadata[METADATA_KEY].egress_host == "api.openai.com"
    assert gate.pins[flow.client_conn][("api.openai.com", 443)] == "104.18.6.192"


def client_hello(sni: str | None, *extensions: int) -> ClientHello:
    """A TLS 1.2 client hello naming ``sni`` (none when None) and carrying empty ``extensions``."""
    fields = []
    if sni is not None:
        name = sni.encode()
        entry = b"\x00" + len(name).to_bytes(2) + name
        fields.append((0, len(entry).to_bytes(2) + entry))
    fields += [(kind, b"") for kind in extensions]
    block = b"".join(kind.to_bytes(2) + len(body).to_bytes(2) + body for kind, body in fields)
    hello = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    return ClientHello(hello + len(block).to_bytes(2) + block)


RELAYED = POLICY.replace(
    '["*.openai.com"]', "[{host: 'pinned.example', inspect: false}, {host: '203.0.113.5', inspect: false}]"
)

HELLOS = {
    "its own name": ("pinned.example", client_hello("pinned.example"), True),
    "its own name in another case": ("pinned.example", client_hello("Pinned.Example."), True),
    "an address without a name": ("203.0.113.5", client_hello(None), True),
    "another name": ("pinned.example", client_hello("evil.example"), False),
    "no name for a named host": ("pinned.example", client_hello(None), False),
    "an encrypted inner name": (
        "pinned.example",
        client_hello("pinned.example", addons.gate.egress.ENCRYPTED_CLIENT_HELLO),
        False,
    ),
}


@pytest.mark.parametrize("variant", HELLOS)
def test_an_inspect_false_tunnel_is_relayed_only_when_its_hello_names_its_own_host(
    monkeypatch: pytest.MonkeyPatch, variant: str
) -> None:
    """A server picks the site it serves from the hello's name, else from the Host header inside the
    TLS it decrypts, or from an encrypted inner hello: only a hello that can name nothing but the tunnel's
    host is relayed unread; any other is intercepted, where each request's names are checked."""
    host, hello, relayed = HELLOS[variant]
    runtime = Runtime(parse_policy(RELAYED, "p.yaml", environ={}), SqliteStateStore(None))
    gate = Egress(runtime)
    monkeypatch.setattr(addons.gate.egress, "resolve", lambda host, port: ["203.0.113.5"])
    with taddons.context(gate) as context:
        connect = connect_flow(host)
        asyncio.run(gate.http_connect(connect))
        assert gate.tunnels[connect.client_conn].relayed
        data = ClientHelloData(Context(connect.client_conn, context.options), hello)
        gate.tls_clienthello(data)
    assert data.ignore_connection is relayed


def server_connection(flow: http.HTTPFlow) -> ServerConnectionHookData:
    """The hook data of the upstream connection mitmproxy opens for ``flow``, by the name it asked for."""
    server = connection.Server(address=(flow.request.host, flow.request.port))
    return ServerConnectionHookData(server=server, client=flow.client_conn)


def test_where_observed_a_name_the_role_may_not_reach_is_decided_and_connected_on_its_address(
    observing: Egress, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name outside the allowlist that resolves to the metadata service is recorded as that (critical),
    not only as outside the allowlist, and connected to that very address, not looked up again."""
    monkeypatch.setattr(addons.gate.egress, "resolve", lambda host, port: ["169.254.169.254"])
    with taddons.context(observing):
        flow = connect_flow("sneaky.attacker.example")
        asyncio.run(observing.http_connect(flow))
        data = server_connection(flow)
        observing.server_connect(data)
    turn = flow.metadata[METADATA_KEY]
    assert [(finding.rule, str(finding.severity), finding.enforced) for finding in turn.findings] == [
        ("egress.cloud_metadata", "critical", False)
    ]
    assert data.server.error is None and data.server.address == ("169.254.169.254", 443)


@pytest.mark.parametrize("host", ["unresolvable.attacker.example", "bad_host-.example"])
def test_where_observed_a_name_with_no_checked_address_is_connected_nowhere(
    observing: Egress, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    """A name that did not resolve, or is no host, is recorded and let through, but its connection is
    refused: a lookup at connect time could answer with an address nobody checked (a rebinding server
    failing the first query)."""

    def fail(host: str, port: int) -> list[str]:
        raise OSError(-2, "Name or service not known")

    monkeypatch.setattr(addons.gate.egress, "resolve", fail)
    with taddons.context(observing):
        flow = connect_flow(host)
        asyncio.run(observing.http_connect(flow))
        data = server_connection(flow)
        observing.server_connect(data)
    assert flow.response is None and refusal(observing, flow) is None
    assert [finding.enforced for finding in flow.metadata[METADATA_KEY].findings] == [False]
    assert data.server.error == f"egress: no address of {host} was checked"
