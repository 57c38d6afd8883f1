"""End to end: what egressguard holds of a WebSocket upstream's messages when the connection closes. The
model's words held back for inspection (a link that may go on in the next delta) are read to their end
and, where the upstream closed and the agent's side still takes them, the redacted rest is delivered
before the close; a call still streaming is decided on what it got, and one withheld is told to the
agent (a Realtime ``error`` event, else the close's reason); where the agent closed, it is recorded."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import pytest
import websockets.exceptions
import websockets.sync.client
import websockets.sync.server
from google.genai import errors

from proxy.commands.localca import UpstreamPKI
from tests.harness import Proxy
from tests.test_e2e_live import session
from tests.test_e2e_shapes import ADDED, CONTEXT, realtime_agent, realtime_call
from tests.test_e2e_websocket import Realtime, connect
from tests.test_e2e_ws_calls import split_call
from tests.test_e2e_ws_words import pieces
from tests.wsupstream import WAIT_S

TEXT = "The chart is at [the chart](https://collector.example/c.png?d=PELICAN-42)"
"""A reply ending in a link to a host outside the allowlist: a link filter holds it until the text ends
(a title may follow it)."""
PLACED = {"response_id": "resp_1", "item_id": "item_1", "output_index": 0, "content_index": 0}
DELTAS = [{"type": "response.output_text.delta", **PLACED, "delta": piece} for piece in pieces(TEXT, 7)]
DELTA = {"type": "response.function_call_arguments.delta", "response_id": "resp_1", "output_index": 0}
DELETE_NAME, DELETE_ARGS = ("delete_", "customer"), ('{"id": ', "42}")


class Closing(Realtime):
    """Sends its messages once the agent's first message came, then closes the connection (1000)."""

    def _serve(self, connection: websockets.sync.server.ServerConnection) -> None:
        self.received.append(connection.recv(timeout=WAIT_S))
        for message in self.messages:
            connection.send(message)
        connection.close()


def realtime_until_closed(proxy: Proxy, upstream_pki: UpstreamPKI, events: list[dict[str, Any]]) -> list[Any]:
    """The events the OpenAI SDK's Realtime client receives through ``proxy`` of ``events`` an upstream
    sends and then closes on, up to the close."""
    server = Closing(upstream_pki, tuple(json.dumps(event) for event in events))
    received: list[Any] = []
    try:
        with realtime_agent(proxy, server.port, CONTEXT) as connection:
            connection.session.update(session={"type": "realtime", "instructions": "Be brief."})
            with contextlib.suppress(websockets.exceptions.ConnectionClosed):
                while True:
                    received.append(connection.recv())
    finally:
        server.close()
    return received


def record_of(proxy: Proxy) -> dict[str, Any]:
    (record,) = proxy.wait_for_records(1)
    return record


def exfiltration(record: dict[str, Any]) -> list[tuple[str, bool]]:
    return [(f["rule"], f["enforced"]) for f in record["findings"] if f["threat"] == "data_exfiltration"]


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_realtime_words_held_when_the_upstream_closes_arrive_redacted_before_the_close(
    mode: str, start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    """A reply's deltas ending in a link outside the allowlist, then the upstream's close with no event
    ending the text: enforced, the agent gets every delta before the close, the held link in a delta of
    its own, neutralised; observed, the deltas as sent. The link is recorded either way."""
    proxy = start_proxy(mode=mode)
    received = realtime_until_closed(proxy, upstream_pki, DELTAS)
    text = "".join(event.delta for event in received if event.type == "response.output_text.delta")
    enforcing = mode == "enforce"
    if enforcing:
        assert text.startswith("The chart is at [link removed") and "PELICAN-42" not in text
        assert len(received) > 1 and all(event.type == "response.output_text.delta" for event in received)
    else:
        assert text == TEXT
    found = [
        (f["rule"], f["enforced"]) for f in record_of(proxy)["findings"] if f["rule"].startswith("exfil")
    ]
    assert found == [("exfil-link-url", enforcing)]


def test_realtime_words_held_when_the_agent_closes_are_recorded_undelivered(
    start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    """The agent closes while the link ending the reply is held: it is read, recorded, and the turn
    records that what was held was not delivered."""
    proxy = start_proxy(mode="enforce")
    server = Realtime(upstream_pki, tuple(json.dumps(event) for event in DELTAS))
    text = ""
    try:
        with realtime_agent(proxy, server.port, CONTEXT) as connection:
            while text != "The chart is at ":
                event = connection.recv()
                assert event.type == "response.output_text.delta"
                text += event.delta
    finally:
        server.close()
    record = record_of(proxy)
    assert exfiltration(record) == [("exfil-link-url", True)]
    assert any("not delivered" in error for error in record["errors"])


def test_realtime_calls_streaming_when_the_upstream_closes_are_decided_and_told(
    start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    """Two calls whose arguments are streaming when the upstream closes, no event ending them: the
    destructive one is withheld and the agent told by an ``error`` event before the close; the everyday
    one's events, held until then, arrive after it."""
    proxy = start_proxy(mode="enforce")
    events = [
        realtime_call(ADDED, 0, "c1", "delete_customer", ""),
        DELTA | {"item_id": "i0", "call_id": "c1", "delta": '{"id": 42}'},
        realtime_call(ADDED, 1, "c2", "get_weather", "") | {"output_index": 1},
        DELTA | {"output_index": 1, "item_id": "i1", "call_id": "c2", "delta": '{"city": "Oslo"}'},
    ]
    received = realtime_until_closed(proxy, upstream_pki, events)
    assert [event.type for event in received] == ["error", ADDED, DELTA["type"]]
    assert "tool_abuse (tool-delete)" in received[0].error.message
    assert received[1].item.call_id == "c2" and received[2].delta == '{"city": "Oslo"}'
    found = [
        (f["rule"], f["where"], f["enforced"])
        for f in record_of(proxy)["findings"]
        if f["threat"] == "tool_abuse"
    ]
    assert found == [("tool-delete", "websocket[1].item", True)]


def test_live_words_held_when_the_upstream_closes_arrive_redacted_before_the_close(
    start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    """A Live model turn's text parts ending in a link outside the allowlist, then the upstream's close
    before the turn completes: the google-genai SDK's Live client gets the held link neutralised, in a
    text part of its own, before the session ends."""
    proxy = start_proxy(mode="enforce")
    turn = [{"serverContent": {"modelTurn": {"parts": [{"text": piece}]}}} for piece in pieces(TEXT, 7)]
    server = Closing(upstream_pki, (json.dumps({"setupComplete": {}}), *(json.dumps(m) for m in turn)))

    async def run() -> str:
        text = ""
        async with session(proxy, server.port).aio.live.connect(model="gemini-live-2.5-flash") as live:
            with contextlib.suppress(errors.APIError):
                async for message in live.receive():
                    text += message.text or ""
        return text

    try:
        text = asyncio.run(asyncio.wait_for(run(), 2 * WAIT_S))
    finally:
        server.close()
    assert text.startswith("The chart is at [link removed") and "PELICAN-42" not in text
    assert exfiltration(record_of(proxy)) == [("exfil-link-url", True)]


def test_a_call_withheld_as_a_socket_of_its_own_closes_is_told_by_the_close(
    start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    """A server of its own streams a destructive call in Chat deltas, then closes before the call's
    choice finishes: the call is decided on what came and withheld, none of it delivered, and the close
    the agent gets is 1008 with the refusal as its reason, where the upstream closed 1000."""
    proxy = start_proxy(mode="enforce")
    server = Closing(
        upstream_pki, tuple(json.dumps(message) for message in split_call(DELETE_NAME, DELETE_ARGS)[:2])
    )
    received: list[str | bytes] = []
    try:
        with connect(proxy, server.port, path="/v1/tools") as connection:
            connection.send('{"type": "hello"}')
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                while True:
                    received.append(connection.recv(timeout=WAIT_S))
    finally:
        server.close()
    assert received == []
    event_id = record_of(proxy)["event_id"]
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert (
        closed.value.rcvd.reason == f"egressguard blocked: audit event {event_id}; tool_abuse (tool-delete)"
    )
