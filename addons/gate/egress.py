"""Applies the egress decision: where an agent may connect, checked before any byte leaves.

The decision itself is ``proxy.egress.decide`` (pure). This addon resolves the destination once, decides
on the resolved addresses, and pins the upstream connection to the address it checked, so DNS cannot
answer differently between the check and the connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import weakref
from collections.abc import MutableMapping

from mitmproxy import connection, ctx, http
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from mitmproxy.tls import ClientHelloData

from addons.gate.turns import METADATA_KEY, policy_of, refuse_without_state, turn_of
from addons.wire.fields import field_values
from proxy.config.policy import Policy
from proxy.dialects import detect
from proxy.egress import (
    EgressCode,
    EgressDecision,
    IPAddress,
    canonical_host,
    decide,
    egress_finding,
    first_seen,
    first_seen_finding,
    fronting_mismatch,
    own_listeners,
    parse_ip_literal,
    request_fronting,
    resolve,
    secret_in_name,
    unresolved,
)
from proxy.inprocess.reserved import reserved_service
from proxy.inspection import TurnInspector
from proxy.model import Action, Decision, Finding, Severity, Threat
from proxy.runtime import Runtime
from proxy.state import StateUnavailable
from proxy.turn import Turn
from proxy.wire.fieldbreaks import field_break

REFUSED_CODE = "egressguard_egress_refused"
ENCRYPTED_CLIENT_HELLO = 0xFE0D
"""The TLS extension of an encrypted client hello (ECH): its encrypted inner hello names the server."""
MAX_PINS_PER_CLIENT = 256
"""Names one client connection keeps pinned (a plain-HTTP client may ask for a new name per request):
beyond it the least recently asked for is unpinned. A pin is set by each request's own decision just
before its connection is opened, so unpinning an older name never lets a connection go unpinned."""


class Tunnel:
    """What was decided when a client opened a CONNECT tunnel, for the requests that follow inside it."""

    def __init__(
        self,
        host: str,
        port: int,
        decision: EgressDecision,
        addresses: list[str],
        *,
        relayed: bool,
        policy: Policy,
    ) -> None:
        self.host = host
        self.port = port
        self.decision = decision
        self.addresses = addresses
        self.relayed = relayed
        """True for ``inspect: false`` destinations: TLS passes through untouched."""
        self.policy = policy
        """The policy the decision was made under: a reload decides the tunnel's next request afresh."""
        self.name_findings: list[Finding] = []
        """What the tunnel's host name was found to hold (``TurnInspector.scan_host``): each request
        through the tunnel carries it, as it carries the decision."""
        self.refusal: tuple[str, str] | None = None
        """(reason, event id of the CONNECT) when the tunnel was refused: it is opened all the same, so
        the client's TLS completes against egressguard's CA and its first request gets a refusal its SDK
        can read; nothing is ever connected upstream."""


class Egress:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.tunnels: MutableMapping[connection.Client, Tunnel] = weakref.WeakKeyDictionary()
        self.pins: MutableMapping[connection.Client, dict[tuple[str, int], str | None]] = (
            weakref.WeakKeyDictionary()
        )
        """Per client, each name decided and the address checked for it; None where no address was checked
        (a name that did not resolve or is not a host, let through where lateral movement is observed):
        such a name is connected to nowhere, since a lookup at connect time may answer what none checked."""
        self.dialled: dict[str, tuple[str, int]] = {}
        """Server connection id -> the name it was asked for, while it connects to the pinned address."""

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        turn = turn_of(flow)
        if turn is None or flow.response is not None:
            return
        host, port = flow.request.host, flow.request.port
        policy = policy_of(flow, self.runtime)
        since = len(turn.findings)
        decision, addresses = await self._decide(policy, turn, host, port)
        role = policy.roles[turn.context.role]
        relayed = (
            decision.allowed
            and decide(turn.context.agent_id, role.name, role.tunnelled, host, port, addresses).allowed
        )
        tunnel = Tunnel(host, port, decision, addresses, relayed=relayed, policy=policy)
        tunnel.name_findings = turn.findings[since:]
        self.tunnels[flow.client_conn] = tunnel
        turn.tunnelled = relayed
        self._apply(flow, turn, decision, addresses)
        if relayed and flow.response is None:
            self._note_first_seen(flow, turn, decision.host)

    def tls_clienthello(self, data: ClientHelloData) -> None:
        """Destinations allowed with ``inspect: false`` are relayed without TLS interception, as long as
        the server can only read the tunnel's own host from the hello: its server name, or none for an
        address. A hello without a server name for a named host (a server picks its site by the Host
        header then) or with an encrypted one (ECH: the server routes by the inner name, which egressguard
        cannot read) is intercepted like any other tunnel, where the Host and SNI checks see its names."""
        tunnel = self.tunnels.get(data.context.client)
        if tunnel is None or not tunnel.relayed:
            return
        hello = data.client_hello
        if any(kind == ENCRYPTED_CLIENT_HELLO for kind, _ in hello.extensions):
            return
        if hello.sni is None and parse_ip_literal(tunnel.host) is None:
            return
        if fronting_mismatch(tunnel.host, hello.sni, None) is None:
            data.ignore_connection = True

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        turn = turn_of(flow)
        if turn is None or flow.response is not None:
            return
        if reserved_service(flow.request.host) is not None:
            return  # answered in-process (addons.gate.localapi.ReservedHosts), nothing leaves
        tunnel = self.tunnels.get(flow.client_conn)
        policy = policy_of(flow, self.runtime)
        request = flow.request
        destination = (request.host, request.port) if tunnel is None else (tunnel.host, tunnel.port)
        named = field_values(request.headers, b"host", b"x-forwarded-host", b"forwarded")
        fronting = field_break(request.headers.fields) or request_fronting(
            destination,
            request.authority,
            named[b"host"],
            x_forwarded_host=named[b"x-forwarded-host"],
            forwarded=named[b"forwarded"],
        )
        if tunnel is not None and fronting is None:
            fronting = fronting_mismatch(tunnel.host, flow.client_conn.sni, None)
        if fronting is not None:
            # The record names where the connection would have gone; the finding, the name that differs.
            turn.egress_host = canonical_host(destination[0])
            self._refuse_fronting(flow, turn, fronting)
            return
        if tunnel is None:
            decision, addresses = await self._decide(policy, turn, request.host, request.port)
        else:
            if tunnel.policy is not policy:
                since = len(turn.findings)
                tunnel.decision, tunnel.addresses = await self._decide(policy, turn, tunnel.host, tunnel.port)
                tunnel.policy, tunnel.refusal = policy, None
                tunnel.name_findings = turn.findings[since:]
            elif tunnel.refusal is not None:
                # The tunnel's CONNECT is the recorded turn; this request only carries its refusal back.
                reason, event_id = tunnel.refusal
                del flow.metadata[METADATA_KEY]
                flow.response = refusal_response(
                    flow.request, f"egressguard: {reason} (event {event_id})", event_id
                )
                return
            else:
                for finding in tunnel.name_findings:
                    turn.add(finding)
            decision, addresses = tunnel.decision, tunnel.addresses
        turn.egress_host = canonical_host(decision.host)
        self._apply(flow, turn, decision, addresses)
        if flow.response is None:
            self._note_first_seen(flow, turn, decision.host)

    def _note_first_seen(self, flow: http.HTTPFlow, turn: Turn, host: str) -> None:
        if turn.drill is not None:
            return  # a drill's destinations are not the agent's: they stay unseen for it
        try:
            if first_seen(self.runtime.state, turn.context.agent_id, host):
                turn.add(first_seen_finding(host))
        except StateUnavailable as error:  # only raised where state.on_error is closed
            refuse_without_state(flow, turn, error)

    def server_connect(self, data: ServerConnectionHookData) -> None:
        """Connect to the address that was checked; keep the name for SNI and certificate checks. A refused
        tunnel connects nowhere, whatever the client sends through it (TLS, HTTP or raw bytes)."""
        tunnel = self.tunnels.get(data.client)
        if tunnel is not None and tunnel.refusal is not None:
            data.server.error = f"egress refused: {tunnel.refusal[0]}"
            return
        address = data.server.address
        if address is None:
            return
        pins = self.pins.get(data.client, {})
        name = (address[0], address[1])
        if name not in pins:
            return
        pinned = pins[name]
        if pinned is None:
            data.server.error = f"egress: no address of {address[0]} was checked"
            return
        if data.server.sni is None:
            data.server.sni = address[0]
        data.server.address = (pinned, address[1])
        self.dialled[data.server.id] = address

    def server_connected(self, data: ServerConnectionHookData) -> None:
        """Once connected to the checked address, the connection goes by its name again: the next request
        for that name then reuses it, where a connection known only by its address would never match and
        every request would open one more."""
        name = self.dialled.pop(data.server.id, None)
        if name is not None:
            # mitmproxy guards the address of an open connection against changes that would redirect it;
            # this one only renames the established connection back to what was asked for.
            object.__setattr__(data.server, "address", name)

    def server_connect_error(self, data: ServerConnectionHookData) -> None:
        self.dialled.pop(data.server.id, None)

    async def _decide(
        self, policy: Policy, turn: Turn, host: str, port: int
    ) -> tuple[EgressDecision, list[str]]:
        """Decide on the name first and look it up only if it holds no secret the policy keeps from
        leaving and the role could reach it: a lookup carries whatever the agent put in the name to outside
        name servers (a key as a label of a wildcard-allowed domain reaches whoever serves that domain)."""
        agent, role = turn.context.agent_id, turn.context.role
        rules = policy.roles[role].egress
        own = own_listeners(_listener_ports(policy), _is_local_address)
        by_name = decide(agent, role, rules, host, port, [], own_listener=own)
        # Read whatever the role may reach: where lateral movement is only observed, a name it may not
        # reach is still connected to, and looked up on the way.
        inspector = TurnInspector(self.runtime.detectors, policy, self.runtime.state, turn)
        holding = inspector.scan_host(host)
        if holding is not None:
            inspector.request_blocked()
            return secret_in_name(by_name, f"request refused: {holding.signal}"), []
        if not by_name.allowed and (
            policy.enforces(Threat.LATERAL_MOVEMENT) or by_name.code is EgressCode.INVALID_DESTINATION
        ):
            return by_name, []
        # Where it is only observed, a name the role may not reach is looked up too: it is connected to the
        # address decided on, and the record says what that address is (a metadata or internal address).
        try:
            addresses = await asyncio.to_thread(resolve, host, port)
        except OSError as error:
            return (
                unresolved(by_name, error.strerror or type(error).__name__) if by_name.allowed else by_name
            ), []
        return decide(agent, role, rules, host, port, addresses, own_listener=own), addresses

    def _apply(self, flow: http.HTTPFlow, turn: Turn, decision: EgressDecision, addresses: list[str]) -> None:
        if decision.code is EgressCode.SECRET_IN_NAME:
            self._refuse(flow, turn, decision.reason)
            return
        enforced = policy_of(flow, self.runtime).enforces(Threat.LATERAL_MOVEMENT)
        finding = egress_finding(decision, enforced=enforced)
        if finding is not None:
            turn.add(finding)
            if enforced:
                self._refuse(
                    flow, turn, f"egress to {canonical_host(decision.host)} refused: {decision.reason}"
                )
                return
        pins = self.pins.setdefault(flow.client_conn, {})
        name = (flow.request.host, flow.request.port)
        pins.pop(name, None)
        pins[name] = addresses[0] if addresses else None
        if len(pins) > MAX_PINS_PER_CLIENT:
            del pins[next(iter(pins))]

    def _refuse_fronting(self, flow: http.HTTPFlow, turn: Turn, reason: str) -> None:
        """Refused whatever the mode: the connection goes where the tunnel or URL was decided, while the
        server (a CDN, a virtual host, a reverse proxy) routes by the name the request carries, so the
        request would reach a host nobody decided on and the record does not name."""
        turn.add(
            Finding(
                threat=Threat.LATERAL_MOVEMENT,
                rule="egress.domain_fronting",
                signal=reason,
                severity=Severity.HIGH,
                action=Action.BLOCK,
                where="egress",
                owasp="LLM08",
                enforced=True,
            )
        )
        self._refuse(flow, turn, f"request refused: {reason}")

    def _refuse(self, flow: http.HTTPFlow, turn: Turn, reason: str) -> None:
        turn.escalate(Decision.BLOCKED)
        if flow.request.method == "CONNECT":
            self.tunnels[flow.client_conn].refusal = (reason, turn.event_id)
            return
        message = f"egressguard: {reason} (event {turn.event_id})"
        flow.response = refusal_response(flow.request, message, turn.event_id)


def _listener_ports(policy: Policy) -> set[int]:
    """The ports egressguard listens on: the proxy port and the admin listener's, as ``run`` set it (the
    policy's, or ``--admin-listen``), and the policy's (a reload may have named another)."""
    ports = {int(ctx.options.listen_port or 8080)}
    if policy.admin is not None:
        ports.add(policy.admin.port)
    admin_port = int(getattr(ctx.options, "egressguard_admin_port", 0) or 0)
    if admin_port:
        ports.add(admin_port)
    return ports


def _is_local_address(address: IPAddress) -> bool:
    """Whether ``address`` is assigned to this host: only then can a socket be bound to it."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((str(address), 0))
        return True
    return False


def refusal_response(request: http.Request, message: str, event_id: str) -> http.Response:
    """A 403 in the error shape of the API the request speaks, so the agent's SDK raises a readable error.
    The body has not arrived yet: the Anthropic SDK's version header marks its Messages calls."""
    hint = b'"max_tokens"' if "anthropic-version" in request.headers else b""
    dialect = detect(request.method, request.path, request.headers.get("content-type"), hint)
    status, headers, body = dialect.error_response(403, message, REFUSED_CODE)
    return http.Response.make(status, body, {**headers, "x-egressguard-event": event_id})
