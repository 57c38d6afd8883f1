"""End to end: a WebSocket text message the proxy rewrites or holds reaches the agent as it was inspected,
through a real egressguard process: a key redacted out of a long message leaves every other letter as
it came (mitmproxy cut changed messages every 4000 bytes and replaced the halves of a letter across a
cut with U+FFFD), so does a message held behind a streamed call, and a JSON escape of half a surrogate
pair goes back as the escape it came as."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

import pytest
import websockets.exceptions

from proxy.commands.localca import UpstreamPKI
from tests.harness import Proxy
from tests.test_e2e_inspect import AWS_KEY
from tests.test_e2e_websocket import Sender, connect, next_messages
from tests.test_e2e_ws_calls import TEXT_AFTER, relay, split_call

REDACTED = "[REDACTED:aws-access-key-id]"
ACROSS_A_CUT = "a" * 3988 + "é" * 20 + "ü€𝄞" * 700
"""Two-byte letters across the 4000th byte of a JSON message, then letters of two, three and four bytes
across each later 4000th."""


def received_text(proxy: Proxy, upstream_pki: UpstreamPKI, text: str) -> str:
    server = Sender(upstream_pki, (text,))
    try:
        with connect(proxy, server.port) as connection:
            (received,) = next_messages(proxy, connection, 1)
            connection.send("bye")
    finally:
        server.close()
    assert isinstance(received, str)
    return received


def test_a_long_message_a_key_was_redacted_from_keeps_every_other_letter(
    start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    proxy = start_proxy(mode="enforce")
    text = json.dumps({"type": "text", "text": f"{ACROSS_A_CUT} {AWS_KEY}"}, ensure_ascii=False)
    assert received_text(proxy, upstream_pki, text) == text.replace(AWS_KEY, REDACTED)
    (record,) = proxy.wait_for_records(1)
    assert [(f["rule"], f["enforced"]) for f in record["findings"] if f["threat"] == "data_exfiltration"] == [
        ("aws-access-key-id", True)
    ]


@pytest.mark.parametrize("escape", ["\\ud83d", "\\udc80", "\\udfff"])
def test_half_a_surrogate_pair_escaped_in_json_goes_back_as_its_escape(
    escape: str, start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    """JSON's escape of a lone surrogate in a message the proxy rewrites as JSON (a key split across two
    deltas, redacted as they join, what was held sent before the upstream's close): the agent reads the
    same value, escaped as it came, in messages that are UTF-8; nothing failed to be inspected."""
    proxy = start_proxy(mode="enforce")
    first = json.dumps({"type": "response.text.delta", "delta": "The key is AKIAQWERTY"})
    second = f'{{"type": "response.text.delta", "delta": "234567ABCD {escape} now"}}'
    server = Sender(upstream_pki, (first, second))
    try:
        with connect(proxy, server.port) as connection:
            received = next_messages(proxy, connection, 2)
            connection.send("bye")
            with contextlib.suppress(websockets.exceptions.ConnectionClosed):
                received += list(connection)
    finally:
        server.close()
    assert all(isinstance(message, str) for message in received)
    assert any(escape in str(message) for message in received)
    assert not any("AKIAQWERTY" in str(message) or "234567ABCD" in str(message) for message in received)
    deltas = "".join(json.loads(message)["delta"] for message in received)
    assert deltas == f"The key is {REDACTED} " + json.loads(f'"{escape}"') + " now"
    (record,) = proxy.wait_for_records(1)
    assert [f["rule"] for f in record["findings"] if f["threat"] == "data_exfiltration"] == [
        "aws-access-key-id"
    ]
    assert not [f for f in record["findings"] if f["rule"].startswith("inspection.")]


def test_a_long_message_held_behind_a_streamed_call_reaches_the_agent_whole(
    start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    """A message the proxy held while a call streamed over messages, and sent once the call was decided:
    every letter as it came, in order."""
    first, second, end = split_call(("read_", "file"), ('{"path": "REA', 'DME.md"}'))
    long_text = {"type": "text", "text": ACROSS_A_CUT}
    messages = [first, long_text, second, end, TEXT_AFTER]
    received, told, _ = relay(start_proxy(mode="enforce"), upstream_pki, messages)
    assert received == messages and told == 0
