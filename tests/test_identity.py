"""The identity addon: agent tokens, 407 for strangers, turn context from headers."""

from __future__ import annotations

import textwrap

from mitmproxy import http
from mitmproxy.addons.proxyauth import mkauth
from mitmproxy.test import taddons, tflow, tutils

from addons.gate.identity import REFUSAL_KEY, AgentIdentity, AgentTokens
from addons.gate.turns import turn_of
from proxy.config.policy import Agent, parse_policy
from proxy.control import tokens
from proxy.runtime import Runtime
from proxy.state import SqliteStateStore
from proxy.state.fallback import FallbackStore
from proxy.state.redis_store import RedisSettings, RedisStateStore
from tests.redis_server import RedisServer

POLICY = textwrap.dedent("""\
    agents:
      bot: {token: "t0ken", role: support}
    roles:
      support: {}
    identity:
      headers: {purpose: X-Task}
    """)


def identity() -> AgentIdentity:
    return AgentIdentity(Runtime(parse_policy(POLICY, "p.yaml", environ={})))


def proxied_flow(authorization: str | None) -> http.HTTPFlow:
    flow = tflow.tflow()
    if authorization is not None:
        flow.request.headers["Proxy-Authorization"] = authorization
    return flow


def inside_tunnel(addon: AgentIdentity) -> http.HTTPFlow:
    """A request on a connection whose CONNECT the agent authenticated."""
    connect = proxied_flow(mkauth("bot", "t0ken"))
    connect.request.method = "CONNECT"
    addon.http_connect(connect)
    return tflow.tflow(client_conn=connect.client_conn)


def test_tokens_compare_exactly() -> None:
    """Only the exact token of a known agent validates."""
    tokens = AgentTokens({"bot": Agent(name="bot", role="r", token="t0ken")})
    assert tokens("bot", "t0ken")
    assert not tokens("bot", "t0ke")
    assert not tokens("bot", "t0ken ")
    assert not tokens("other", "t0ken")


def test_a_rotated_token_replaces_the_policys() -> None:
    """After rotate_token the policy's token is refused and only the issued one validates; an agent
    never rotated keeps the policy's."""
    store = SqliteStateStore(None)
    policy_agents = {name: Agent(name=name, role="r", token="t0ken") for name in ("bot", "other")}
    validator = AgentTokens(policy_agents, lambda: store)
    assert validator("bot", "t0ken")
    issued = tokens.rotate(store, "bot", "alert leak (a1)")
    assert issued.startswith("eg_agt_") and issued != "t0ken"
    assert not validator("bot", "t0ken")
    assert validator("bot", issued)
    assert not validator("other", issued) and validator("other", "t0ken")
    assert [entry["agent"] for entry in tokens.rotations(store)] == ["bot"]
    assert "token" not in tokens.rotations(store)[0]


def test_missing_credentials_get_407() -> None:
    """A request without proxy credentials is answered 407 with a Basic challenge and no turn."""
    addon = identity()
    with taddons.context(addon) as tctx:
        tctx.configure(addon)
        flow = proxied_flow(None)
        addon.requestheaders(flow)
        assert flow.response is not None and flow.response.status_code == 407
        assert "Proxy-Authenticate" in flow.response.headers
        assert turn_of(flow) is None


def test_valid_credentials_open_a_turn_with_context() -> None:
    """Valid credentials open a turn for the agent; configured headers fill the context and are removed."""
    addon = identity()
    with taddons.context(addon) as tctx:
        tctx.configure(addon)
        flow = proxied_flow(mkauth("bot", "t0ken"))
        flow.request.headers["X-User-Id"] = "u-1"
        flow.request.headers["X-Task"] = "billing"
        addon.requestheaders(flow)
        turn = turn_of(flow)
        assert flow.response is None and turn is not None
        assert (turn.context.agent_id, turn.context.role) == ("bot", "support")
        assert (turn.context.user_id, turn.context.purpose) == ("u-1", "billing")
        assert "X-User-Id" not in flow.request.headers and "X-Task" not in flow.request.headers
        assert "Proxy-Authorization" not in flow.request.headers


def test_connect_authenticates_the_tunnel() -> None:
    """After an authenticated CONNECT, requests inside the tunnel need no credentials of their own."""
    addon = identity()
    with taddons.context(addon) as tctx:
        tctx.configure(addon)
        inner = inside_tunnel(addon)
        addon.requestheaders(inner)
        assert inner.response is None and turn_of(inner) is not None


def test_proxy_credentials_inside_a_tunnel_are_removed() -> None:
    """Proxy-Authorization sent again inside an authenticated tunnel, once or several times, in any case,
    is removed before the request goes on: the upstream never sees the proxy's credentials."""
    addon = identity()
    with taddons.context(addon) as tctx:
        tctx.configure(addon)
        inner = inside_tunnel(addon)
        inner.request.headers.add("Proxy-Authorization", mkauth("bot", "t0ken"))
        inner.request.headers.add("proxy-authorization", mkauth("other", "guess"))
        addon.requestheaders(inner)
        assert inner.response is None and turn_of(inner) is not None
        assert inner.request.headers.get_all("proxy-authorization") == []


def test_already_answered_flow_is_left_alone() -> None:
    """A flow another addon already answered opens no turn."""
    addon = identity()
    with taddons.context(addon) as tctx:
        tctx.configure(addon)
        flow = proxied_flow(mkauth("bot", "t0ken"))
        flow.response = tutils.tresp()
        addon._open_turn(flow)
        assert turn_of(flow) is None


def test_context_headers_are_read_in_any_case_repeated_and_all_removed() -> None:
    """A context header is found whatever its case; a repeated one reads as its values joined, an empty
    one as absent; every copy of each leaves the request, and the other headers stay."""
    addon = identity()
    with taddons.context(addon) as tctx:
        tctx.configure(addon)
        flow = proxied_flow(mkauth("bot", "t0ken"))
        flow.request.headers.add("x-user-id", "u-1")
        flow.request.headers.add("X-USER-ID", "u-2")
        flow.request.headers["x-task"] = ""
        flow.request.headers["X-Other"] = "kept"
        addon.requestheaders(flow)
        turn = turn_of(flow)
        assert turn is not None
        context = turn.context
        assert (context.user_id, context.purpose, context.session_id) == ("u-1, u-2", None, None)
        assert [name.lower() for name in flow.request.headers] == [
            name.lower() for name in tflow.tflow().request.headers
        ] + ["x-other"]


def test_an_unreadable_store_makes_a_credential_unchecked_not_wrong(own_redis: RedisServer) -> None:
    """With the shared store down and on_error closed, whether the agent's token was rotated is unknown:
    the request gets a 503, and no refused authentication (an 'invalid' credential) is noted."""
    runtime = Runtime(parse_policy(POLICY, "p.yaml", environ={}))
    shared = RedisStateStore(RedisSettings(url=own_redis.url, timeout_s=0.5))
    runtime.state_or_none = FallbackStore(shared, SqliteStateStore(None), on_error="closed")
    addon = AgentIdentity(runtime)
    own_redis.stop()
    with taddons.context(addon) as context:
        context.configure(addon)
        for method in ("GET", "CONNECT"):
            flow = proxied_flow(mkauth("bot", "t0ken"))
            flow.request.method = method
            (addon.http_connect if method == "CONNECT" else addon.requestheaders)(flow)
            assert flow.response is not None and flow.response.status_code == 503
            assert REFUSAL_KEY not in flow.metadata and turn_of(flow) is None
        wrong = proxied_flow(None)
        addon.requestheaders(wrong)
        assert wrong.response is not None and wrong.response.status_code == 407
        assert wrong.metadata[REFUSAL_KEY].reason == "missing"


def test_a_rotated_token_stays_rotated_while_the_store_is_down_and_on_error_open(
    own_redis: RedisServer,
) -> None:
    """on_error open serves from this process's local state while Redis is away, which holds no rotation:
    the token an alert rotated away (the one that leaked) must not be let in again meanwhile. Rotations
    read at start and since are kept in the process."""
    shared = RedisStateStore(RedisSettings(url=own_redis.url, timeout_s=0.5))
    store = FallbackStore(shared, SqliteStateStore(None), on_error="open")
    agents = {name: Agent(name=name, role="r", token="t0ken") for name in ("bot", "seen", "other")}
    issued_bot = tokens.rotate(store, "bot", "alert leak (a1)")
    issued_seen = tokens.rotate(store, "seen", "alert leak (a2)")
    validator = AgentTokens(agents, lambda: store)  # made at start (configure): bot was rotated before
    assert validator("seen", issued_seen)
    own_redis.stop()
    assert not validator("bot", "t0ken") and not validator("seen", "t0ken")
    assert validator("bot", issued_bot) and validator("seen", issued_seen)
    assert validator("other", "t0ken")  # never rotated: the policy's token
