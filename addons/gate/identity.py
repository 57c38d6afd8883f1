"""Authenticates agents by their proxy credentials and opens a turn for every request they make.

mitmproxy's own ProxyAuth already parses ``Proxy-Authorization``, answers 407, and remembers a client
that authenticated on CONNECT for the requests inside its tunnel; this addon gives it a validator backed
by the policy's agents and turns the authenticated name into a ``Turn``. What it remembers is checked
again against the tokens rotated since, on each request in a tunnel and on what an agent sends over an
open WebSocket: a token rotated away (it leaked) ends the connections opened with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass

import structlog
from mitmproxy import http
from mitmproxy.addonmanager import Loader
from mitmproxy.addons.proxyauth import (
    ProxyAuth,
    Validator,
    http_auth_header,
    is_http_proxy,
    parse_http_basic_auth,
)
from mitmproxy.utils.strutils import always_bytes

from addons.gate.turns import (
    METADATA_KEY,
    STATE_UNAVAILABLE_CODE,
    answer_in_dialect,
    pin_policy,
    pretty_host,
    turn_of,
)
from addons.wire.fields import take_fields
from addons.wire.wsclose import close_websocket, due_agent_message
from proxy.audit.refusals import INVALID_RULE, Reason
from proxy.config.policy import Agent
from proxy.control import tokens
from proxy.model import Action, Decision, Finding, Severity, Threat
from proxy.own_tokens import same_token, token_digest
from proxy.runtime import Runtime
from proxy.state import StateStore, StateUnavailable
from proxy.state.fallback import serving_locally
from proxy.turn import Turn, TurnContext

_UNKNOWN_AGENT_DIGEST = b"\x00" * 32
REFUSAL_KEY = "egressguard.auth_refused"
NEXT_CHECK_KEY = "egressguard.identity.next_check"

log = structlog.get_logger("egressguard")


@dataclass(frozen=True, slots=True)
class AuthRefusal:
    """A refused proxy authentication, as the audit records it: never the credential tried."""

    client: str
    reason: Reason
    agent: str | None
    """The agent named in the user name, when it is one (an unknown name could be anything)."""


class AgentTokens(Validator):
    """Checks ``agent:token`` against the policy, in constant time whether or not the agent exists. A
    token issued by a rotation (``proxy.control.tokens``, in the state store) replaces the policy's. Tokens
    are compared by their digests, all of one length, which are all the store keeps of rotated ones."""

    def __init__(self, agents: Mapping[str, Agent], store: Callable[[], StateStore] | None = None) -> None:
        self.digests = {name: token_digest(agent.token) for name, agent in agents.items()}
        self.store = store
        self.unavailable = False
        """Set by a check that could not read the store (``state.on_error`` closed): whether the agent's
        token was rotated is unknown, so the credential was neither right nor wrong. mitmproxy calls the
        validator and answers inside one hook, on the event loop, so the hook reads this right after."""
        self.rotated: dict[str, bytes] = {}
        """Digests of rotated tokens read from the store, at start and by each check since. While the
        shared store is away under ``on_error: open`` the store answers from this process's local state,
        which knows no rotation: the token an alert rotated away (the one that leaked) is not let in
        again meanwhile."""
        if store is not None:
            with contextlib.suppress(StateUnavailable):
                self.rotated = tokens.rotated_digests(store())

    def __call__(self, username: str, password: str) -> bool:
        self.unavailable = False
        expected = self.digests.get(username)
        if expected is not None and self.store is not None:
            store = self.store()
            try:
                rotated = tokens.rotated_digest(store, username)
            except StateUnavailable:
                self.unavailable = True
                return False
            if rotated is not None:
                self.rotated[username] = rotated
            elif serving_locally(store):
                rotated = self.rotated.get(username)
            expected = rotated if rotated is not None else expected
        matches = same_token(expected if expected is not None else _UNKNOWN_AGENT_DIGEST, password)
        return expected is not None and matches


class AgentIdentity(ProxyAuth):
    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime
        self._names: tuple[Mapping[str, str], tuple[tuple[str, bytes], ...]] | None = None
        self.tokens = AgentTokens({})

    def load(self, loader: Loader) -> None:
        """Agents come from the policy, so mitmproxy's ``proxyauth`` option is not ours to declare."""

    def configure(self, updated: Set[str]) -> None:
        self.validator = self.tokens = AgentTokens(self.runtime.policy.agents, lambda: self.runtime.state)

    def http_connect(self, f: http.HTTPFlow) -> None:
        answered = f.response is not None
        super().http_connect(f)
        self._note_refusal(f, answered)
        self._open_turn(f)

    def requestheaders(self, f: http.HTTPFlow) -> None:
        answered = f.response is not None
        tunnel = self.authenticated.get(f.client_conn)
        if not answered and tunnel is not None and not self._still_valid(f, tunnel):
            return
        super().requestheaders(f)
        self._note_refusal(f, answered)
        # Credentials for this proxy are never the upstream's business: mitmproxy removes them only from
        # the request it checked them on, not from requests inside a tunnel, nor a repeated header.
        self._open_turn(f, dropped=(b"proxy-authorization",))

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        """A WebSocket outlives the request that opened it: the agent's credentials are checked again as
        it sends (at most once a second), and a token rotated away since closes the connection (1008)."""
        credentials = flow.metadata.get("proxyauth")
        message = due_agent_message(flow, NEXT_CHECK_KEY) if credentials is not None else None
        if credentials is None or message is None or self._still_hold(credentials):
            return
        unavailable, self.tokens.unavailable = self.tokens.unavailable, False
        turn = turn_of(flow)
        if turn is not None:
            why = "the state store is unavailable and on_error is closed" if unavailable else "rotated away"
            signal = f"the proxy credentials this WebSocket opened with no longer hold ({why}); closed"
            turn.add(
                Finding(
                    threat=Threat.CREDENTIAL_THEFT,
                    rule=INVALID_RULE,
                    signal=signal,
                    severity=Severity.MEDIUM,
                    action=Action.BLOCK,
                    where="proxy-authorization",
                    enforced=True,
                )
            )
            turn.escalate(Decision.BLOCKED)
        log.warning("identity.revoked", agent=credentials[0], channel="websocket")
        message.drop()
        close_websocket(flow)

    def _still_valid(self, flow: http.HTTPFlow, credentials: tuple[str, str]) -> bool:
        """Whether the credentials a tunnel's CONNECT carried still hold (its agent's token may have been
        rotated away since, by an alert or an operator); a request in a tunnel whose credentials no longer
        do is answered 407 and the tunnel closed, as a new connection with them would be refused. Where
        the store cannot say (``state.on_error`` closed), the request goes on to the gates that read it,
        which refuse it in the API's shape and record the turn."""
        if self._still_hold(credentials) or self.tokens.unavailable:
            self.tokens.unavailable = False
            return True
        del self.authenticated[flow.client_conn]
        agent = credentials[0] if credentials[0] in self.runtime.policy.agents else None
        flow.metadata[REFUSAL_KEY] = AuthRefusal(client=_client(flow), reason="invalid", agent=agent)
        flow.response = http.Response.make(
            407,
            b"egressguard: this tunnel's proxy credentials are no longer valid\n",
            {"Proxy-Authenticate": 'Basic realm="egressguard"'},
        )
        if not (flow.request.is_http2 or flow.request.is_http3):
            # HTTP/2 has no such field; there each later request of the tunnel is asked for credentials.
            flow.response.headers["Connection"] = "close"
        return False

    def _still_hold(self, credentials: tuple[str, str]) -> bool:
        """Whether a connection's credentials still hold: not where the store says its agent's token was
        rotated away, or cannot be read (``tokens.unavailable``); a check that fails otherwise is logged
        and lets them hold, as the freeze check does with a broken store."""
        try:
            return self.tokens(*credentials)
        except Exception as exc:
            log.error("identity.recheck_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            return True

    def _answered_unavailable(self, flow: http.HTTPFlow) -> bool:
        """Answered 503 where the last check could not read the store (``state.on_error`` closed)."""
        if not self.tokens.unavailable:
            return False
        self.tokens.unavailable = False
        message = "egressguard: state store unavailable, on_error is closed: credentials not checked"
        flow.response = answer_in_dialect(flow.request, 503, message, STATE_UNAVAILABLE_CODE)
        return True

    def _note_refusal(self, flow: http.HTTPFlow, answered_before: bool) -> None:
        if answered_before or flow.response is None or "proxyauth" in flow.metadata:
            return
        if self._answered_unavailable(flow):
            return
        header = flow.request.headers.get(http_auth_header(is_http_proxy(flow)), "")
        try:
            name: str | None = parse_http_basic_auth(header)[1]
        except ValueError:
            name = None
        flow.metadata[REFUSAL_KEY] = AuthRefusal(
            client=_client(flow),
            reason="invalid" if header else "missing",
            agent=name if name in self.runtime.policy.agents else None,
        )

    def _open_turn(self, flow: http.HTTPFlow, dropped: tuple[bytes, ...] = ()) -> None:
        """Open the flow's turn with the context its headers carry, and take those headers (and the
        ``dropped`` ones, whether or not a turn opens) off the request: the fields are read in one walk,
        and rewritten once, rather than walked for each name."""
        policy = self.runtime.policy
        opening = flow.response is None and "proxyauth" in flow.metadata
        names = self._context_names(policy.context_headers) if opening else ()
        headers = flow.request.headers
        found = take_fields(headers, *dropped, *(name for _, name in names))
        if not opening:
            return
        agent = policy.agents.get(flow.metadata["proxyauth"][0])
        if agent is None:
            # Authenticated on a tunnel's CONNECT, removed from the policy by a reload since.
            flow.response = http.Response.make(407, b"egressguard: this agent is no longer in the policy\n")
            return
        values: dict[str, str | None] = {}
        for field, name in names:
            # Every copy of a header is read, joined as Headers.get joins them, by the first field naming it.
            values[field] = ", ".join(found.pop(name, ())) or None
        context = TurnContext(agent_id=agent.name, role=agent.role, **values)
        flow.metadata[METADATA_KEY] = Turn(context=context, egress_host=pretty_host(flow.request))
        pin_policy(flow, policy)

    def _context_names(self, context_headers: Mapping[str, str]) -> tuple[tuple[str, bytes], ...]:
        """Each context field and the lower-case name of its header, made once per policy."""
        kept = self._names
        if kept is None or kept[0] is not context_headers:
            names = tuple(
                (field, always_bytes(name, "utf-8", "surrogateescape").lower())
                for field, name in context_headers.items()
            )
            kept = self._names = (context_headers, names)
        return kept[1]


def _client(flow: http.HTTPFlow) -> str:
    return str(flow.client_conn.peername[0]) if flow.client_conn.peername else "unknown"
