"""End to end: a key the Realtime API streams split over two ``response.function_call_arguments.delta``
events of one call, through a real egressguard, to the OpenAI SDK's Realtime client: the arguments it
joins from the deltas and those the ``.done`` and item events give whole are the same, the key redacted
in each, recorded once, enforced."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from proxy.commands.localca import UpstreamPKI
from tests.harness import Proxy
from tests.test_e2e_shapes import CONTEXT, realtime_agent
from tests.test_e2e_websocket import Realtime
from tests.test_message_argument_deltas import ARGUMENTS, AWS_KEY, CUTS, REDACTED, realtime_turn


def received_turn(proxy: Proxy, upstream_pki: UpstreamPKI, events: list[dict[str, Any]]) -> list[Any]:
    """The events the OpenAI SDK's Realtime client receives through ``proxy``, up to the response's end."""
    server = Realtime(upstream_pki, tuple(json.dumps(event) for event in events))
    received: list[Any] = []
    try:
        with realtime_agent(proxy, server.port, CONTEXT) as connection:
            while not received or received[-1].type != "response.done":
                received.append(connection.recv())
    finally:
        server.close()
    return received


@pytest.mark.parametrize("cut", [CUTS[0], CUTS[-1]])
def test_a_key_split_over_realtime_argument_deltas_reaches_the_sdk_redacted(
    cut: int, start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    proxy = start_proxy(mode="enforce")
    received = received_turn(proxy, upstream_pki, realtime_turn([ARGUMENTS[:cut], ARGUMENTS[cut:]]))
    joined = "".join(
        event.delta for event in received if event.type == "response.function_call_arguments.delta"
    )
    (done,) = [event.arguments for event in received if event.type == "response.function_call_arguments.done"]
    (item,) = [event.item.arguments for event in received if event.type == "response.output_item.done"]
    assert (joined, done, item) == (REDACTED, REDACTED, REDACTED)
    assert not any(AWS_KEY[:4] in event.model_dump_json() for event in received)
    (record,) = proxy.wait_for_records(1)
    found = {f["enforced"] for f in record["findings"] if f["rule"] == "aws-access-key-id"}
    assert found == {True}
