"""End to end: what is decided about an agent after its connection opened holds on that connection. A
token rotated away (an alert's ``rotate_token``: it leaked) ends the tunnel opened with it, and a token
rotated away or a freeze made since ends an open WebSocket, where both went on being served."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import websockets.exceptions

from proxy.commands.localca import UpstreamPKI
from proxy.control import tokens
from proxy.control.freeze import freeze_user
from proxy.model import Threat
from proxy.state.redis_store import RedisSettings, RedisStateStore
from tests.harness import AGENT, CLIENT_TIMEOUT_S, Proxy
from tests.redis_server import RedisServer
from tests.test_e2e_shared_state import state_yaml
from tests.test_e2e_websocket import HEADERS, Realtime, connect
from tests.upstream import FakeUpstream
from tests.wsupstream import WAIT_S

ASK = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
ITEM = json.dumps({"type": "conversation.item.create", "item": {"type": "message", "role": "user"}})


@pytest.fixture
def shared(own_redis: RedisServer) -> Iterator[RedisStateStore]:
    """The store the proxy keeps its state in, as an alert or an operator acting elsewhere reaches it."""
    store = RedisStateStore(RedisSettings(url=own_redis.url, namespace="e2e"))
    yield store
    store.close()


@pytest.fixture
def realtime(upstream_pki: UpstreamPKI) -> Iterator[Realtime]:
    server = Realtime(upstream_pki, messages=(json.dumps({"type": "session.created"}),))
    yield server
    server.close()


def test_a_tunnel_opened_with_a_token_rotated_away_since_is_refused_and_closed(
    start_proxy: Callable[..., Proxy], own_redis: RedisServer, shared: RedisStateStore, upstream: FakeUpstream
) -> None:
    proxy = start_proxy(mode="enforce", extra=state_yaml(own_redis))
    context = ssl.create_default_context(cafile=proxy.ca_cert)
    with httpx.Client(proxy=proxy.url(), verify=context, timeout=CLIENT_TIMEOUT_S, headers=HEADERS) as holder:
        assert holder.post(f"{upstream.url}/v1/chat/completions", json=ASK).status_code == 200
        tokens.rotate(shared, AGENT, "the token leaked")
        refused = holder.post(f"{upstream.url}/v1/chat/completions", json=ASK)
        assert refused.status_code == 407 and refused.headers["connection"] == "close"
        # The client opens a new tunnel with the same token: refused at its CONNECT.
        with pytest.raises(httpx.ProxyError, match="407"):
            holder.post(f"{upstream.url}/v1/chat/completions", json=ASK)
    assert len(upstream.received) == 1


def send_after_change(
    proxy: Proxy, realtime: Realtime, change: Callable[[], object]
) -> websockets.exceptions.ConnectionClosed | None:
    """Open a WebSocket, make ``change``, send one message: how the connection then ended, if it did."""
    with connect(proxy, realtime.port) as connection:
        connection.recv(timeout=WAIT_S)
        change()
        connection.send(ITEM)
        try:
            connection.recv(timeout=3)
        except websockets.exceptions.ConnectionClosed as closed:
            return closed
        except TimeoutError:
            return None
    return None


def test_a_websocket_opened_with_a_token_rotated_away_since_is_closed(
    start_proxy: Callable[..., Proxy], own_redis: RedisServer, shared: RedisStateStore, realtime: Realtime
) -> None:
    proxy = start_proxy(mode="enforce", extra=state_yaml(own_redis))
    closed = send_after_change(proxy, realtime, lambda: tokens.rotate(shared, AGENT, "the token leaked"))
    assert closed is not None and closed.rcvd is not None and closed.rcvd.code == 1008
    assert realtime.received == []
    (record,) = proxy.wait_for_records(1)
    assert record["decision"] == "blocked"
    assert [(f["rule"], f["enforced"]) for f in record["findings"] if f["rule"] == "proxy-auth-invalid"] == [
        ("proxy-auth-invalid", True)
    ]


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_user_frozen_while_their_websocket_is_open_is_cut_off_where_enforced(
    start_proxy: Callable[..., Proxy],
    own_redis: RedisServer,
    shared: RedisStateStore,
    realtime: Realtime,
    mode: str,
) -> None:
    """Enforce mode drops the frozen user's next message and closes the connection (1008); observe mode
    delivers it and records, once, that enforce mode would not have."""
    proxy = start_proxy(mode=mode, extra=state_yaml(own_redis))

    def freeze() -> None:
        freeze_user(shared, "u-1", 600, "three injection attempts", Threat.PROMPT_INJECTION, agent_id=AGENT)

    closed = send_after_change(proxy, realtime, freeze)
    enforcing = mode == "enforce"
    if enforcing:
        assert closed is not None and closed.rcvd is not None and closed.rcvd.code == 1008
        assert realtime.received == []
    else:
        deadline = time.monotonic() + WAIT_S
        while not realtime.received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert realtime.received == [ITEM]
    (record,) = proxy.wait_for_records(1)
    frozen = [(f["rule"], f["enforced"]) for f in record["findings"] if f["rule"] == "repeat-offender-freeze"]
    assert frozen == [("repeat-offender-freeze", enforcing)]
    assert (record["decision"] == "blocked") is enforcing
