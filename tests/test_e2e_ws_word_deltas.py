"""End to end: a reply a WebSocket server of its own streams as Chat chunks or as Anthropic's events, a
message each, on a route no dialect knows, through a real egressguard: an AWS access key id cut over two
text deltas (a Chat delta's ``content`` or ``reasoning_content``, an Anthropic ``text_delta`` or
``thinking_delta``) reaches the agent redacted where enforced and as it was sent where observed, recorded
enforced or not."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from proxy.commands.localca import UpstreamPKI
from tests.harness import Proxy
from tests.test_e2e_websocket import Realtime, connect, next_messages
from tests.test_message_word_deltas import KEYS, REPLIES, pieces_of

RULE = "aws-access-key-id"
ROUTE = "/v1/stream"
"""A path no dialect reads: the messages are read by their shape alone."""


def relayed(
    proxy: Proxy, upstream_pki: UpstreamPKI, messages: list[dict[str, Any]]
) -> tuple[list[Any], list[Any]]:
    """What an agent receives through ``proxy`` of ``messages`` a server sends on ``ROUTE``, up to the
    last (which carries no text), and the findings the proxy recorded of the connection."""
    server = Realtime(upstream_pki, tuple(json.dumps(message) for message in messages))
    received: list[Any] = []
    try:
        with connect(proxy, server.port, path=ROUTE) as connection:
            while not received or received[-1] != messages[-1]:
                received += [json.loads(message) for message in next_messages(proxy, connection, 1)]
    finally:
        server.close()
    (record,) = proxy.wait_for_records(1)
    return received, record["findings"]


@pytest.mark.parametrize("mode", ["enforce", "observe"])
@pytest.mark.parametrize("reply", sorted(REPLIES))
def test_a_key_split_over_two_text_deltas_on_a_route_no_dialect_knows(
    reply: str, mode: str, start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    make, text_of = REPLIES[reply]
    messages = make(pieces_of(RULE, 5))
    proxy = start_proxy(mode=mode)
    received, findings = relayed(proxy, upstream_pki, messages)
    enforcing = mode == "enforce"
    if enforcing:
        assert KEYS[RULE][5:] not in json.dumps(received)
        assert "".join(text_of(message) for message in received) == f"Use [REDACTED:{RULE}] now."
    else:
        assert received == messages
    assert {f["enforced"] for f in findings if f["rule"] == RULE} == {enforcing}
