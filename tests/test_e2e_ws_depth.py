"""End to end: a WebSocket message nested past what the proxy reads, from an agent or an upstream, through a
real egressguard: refused unread where enforced, its connection closed with a policy violation (1008) and
the refusal recorded, while the proxy goes on serving every other connection; observed, delivered on the
record."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping

import pytest
import websockets.exceptions
import websockets.sync.client

from proxy.commands.localca import UpstreamPKI
from proxy.inspection import TOO_DEEP_RULE
from tests.harness import Proxy
from tests.test_e2e_websocket import Realtime, connect, next_messages
from tests.wsupstream import WAIT_S

POLICY_VIOLATION = 1008
DEPTH = 990
"""Deep enough that each walk of it cost about a second of the proxy's CPU, shallow enough that Python's
JSON reader still reads it."""


def nested(event: Mapping[str, object], depth: int = DEPTH) -> str:
    """``event`` with a value nested ``depth`` deep beside what it says."""
    padding = '{"a": ' * depth + '"x"' + "}" * depth
    return json.dumps(event)[:-1] + f', "padding": {padding}}}'


TOOL_RESULT = {
    "type": "conversation.item.create",
    "item": {"type": "function_call_output", "call_id": "call_1", "output": "done"},
}
DESTRUCTIVE_CALL = {
    "type": "response.function_call_arguments.done",
    "call_id": "call_1",
    "name": "delete_customer",
    "arguments": '{"id": 42}',
}


def closed_with(connection: websockets.sync.client.ClientConnection) -> int | None:
    """The close code the agent's connection ends with, reading what arrives until then."""
    try:
        while True:
            connection.recv(timeout=WAIT_S)
    except websockets.exceptions.ConnectionClosed as closed:
        return None if closed.rcvd is None else closed.rcvd.code


def too_deep(proxy: Proxy, count: int) -> list[bool]:
    """Whether each ``inspection.too_deep`` finding the proxy recorded (of ``count`` records) is enforced."""
    return [
        finding["enforced"]
        for record in proxy.wait_for_records(count)
        for finding in record["findings"]
        if finding["rule"] == TOO_DEEP_RULE
    ]


def test_an_agents_nested_messages_close_their_connections_and_others_are_served(
    start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    """Three connections each send a tool result nested 990 deep: none reaches the API, each is closed
    (1008) and recorded; a connection open beside them gets its events and sends on as before."""
    proxy = start_proxy(mode="enforce")
    server = Realtime(upstream_pki)
    sent = json.dumps(TOOL_RESULT)
    try:
        with connect(proxy, server.port) as bystander:
            assert len(next_messages(proxy, bystander, 3)) == 3
            for _ in range(3):
                with connect(proxy, server.port) as hostile:
                    hostile.send(nested(TOOL_RESULT))
                    assert closed_with(hostile) == POLICY_VIOLATION
            bystander.send(sent)
            deadline = time.monotonic() + WAIT_S
            while sent not in server.received and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        server.close()
    assert sent in server.received
    assert not any("padding" in str(message) for message in server.received)
    assert too_deep(proxy, 4) == [True, True, True]


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_an_upstreams_nested_call_is_not_delivered_where_enforced(
    mode: str, start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    """An upstream's destructive call beside a value nested 990 deep: enforced, the agent never gets it and
    its connection closes (1008); observed, the agent gets it as it came. Recorded either way."""
    proxy = start_proxy(mode=mode)
    event = nested(DESTRUCTIVE_CALL)
    server = Realtime(upstream_pki, (event, json.dumps({"type": "response.done"})))
    try:
        with connect(proxy, server.port) as connection:
            if mode == "enforce":
                assert closed_with(connection) == POLICY_VIOLATION
            else:
                assert next_messages(proxy, connection, 1) == [event]
    finally:
        server.close()
    assert too_deep(proxy, 1) == [mode == "enforce"]
