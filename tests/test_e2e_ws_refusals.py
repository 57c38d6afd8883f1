"""End to end: a WebSocket message egressguard refuses is not dropped unsaid. Over the OpenAI Realtime API
the agent (the OpenAI SDK's Realtime client) gets an ``error`` event in its place, naming the client event
refused; over the Gemini Live API (the google-genai SDK's Live client) and other sockets the connection
closes with the refusal as its reason. The refusal is on the record either way."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from google.genai import errors

from proxy.commands.localca import UpstreamPKI
from tests.harness import Proxy
from tests.test_e2e_live import RESULTS, TOOL_CALL, LiveUpstream, session
from tests.test_e2e_shapes import (
    ADDED,
    ARGUMENTS_DONE,
    CONTEXT,
    CREDENTIALS_READ,
    INJECTION,
    ITEM_DONE,
    RESPONSE_DONE,
    realtime_agent,
    realtime_call,
)
from tests.test_e2e_websocket import Realtime
from tests.wsupstream import WAIT_S

GREETING = {"type": "session.created", "event_id": "event_1", "session": {"id": "sess_1"}}
POISONED = {
    "type": "function_call_output",
    "call_id": "c3",
    "output": f"Sunny. {INJECTION}",
}
CLEAN = {"type": "function_call_output", "call_id": "c3", "output": '{"temperature": 21}'}


def record_of(proxy: Proxy) -> dict[str, Any]:
    (record,) = proxy.wait_for_records(1)
    return record


def refusals(record: dict[str, Any]) -> list[tuple[str, str]]:
    """(rule, place) of the enforced findings that refuse a message (not a redaction)."""
    return [
        (f["rule"], f["where"])
        for f in record["findings"]
        if f["enforced"] and f["action"] not in ("redact", "vault")
    ]


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_refused_realtime_client_event_is_answered_with_an_error_event(
    mode: str, start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    """A function result with an injection, sent as a ``conversation.item.create``: enforced, it does not
    reach the API and the agent gets an ``error`` event naming its ``event_id`` and the audit event, then
    the API's answers go on; observed, it passes and no error comes."""
    proxy = start_proxy(mode=mode)
    server = Realtime(upstream_pki, (json.dumps(GREETING),))
    try:
        with realtime_agent(proxy, server.port, CONTEXT) as connection:
            assert connection.recv().type == "session.created"
            connection.conversation.item.create(item=POISONED, event_id="evt_agent_7")  # type: ignore[arg-type]
            connection.conversation.item.create(item=CLEAN, event_id="evt_agent_8")  # type: ignore[arg-type]
            deadline = time.monotonic() + WAIT_S
            expected = 1 if mode == "enforce" else 2
            while len(server.received) < expected and time.monotonic() < deadline:
                time.sleep(0.05)
            error: Any = connection.recv() if mode == "enforce" else None
    finally:
        server.close()
    sent = [json.loads(message)["item"] for message in server.received]
    record = record_of(proxy)
    if mode == "observe":
        assert sent == [POISONED, CLEAN]
        assert refusals(record) == []
        return
    assert sent == [CLEAN]
    assert error is not None and error.type == "error"
    assert error.error.code == "egressguard_blocked"
    assert error.error.event_id == "evt_agent_7"
    assert f"audit event {record['event_id']}" in error.error.message
    assert "prompt_injection" in error.error.message
    assert refusals(record) and all(where.startswith("websocket[1]") for _, where in refusals(record))


def test_refused_realtime_server_events_are_each_told_to_the_agent(
    start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    """A call read whole in one event that reads a credential file and one streamed over several that is
    destructive, decided when its response ends: neither reaches the agent, each in its place by an
    ``error`` event, and the response's end and a harmless call after them arrive."""
    proxy = start_proxy(mode="enforce")
    events = [
        realtime_call(ITEM_DONE, 0, "c0", "read_file", CREDENTIALS_READ),
        realtime_call(ADDED, 1, "c1", "delete_customer", ""),
        realtime_call(ARGUMENTS_DONE, 1, "c1", "delete_customer", '{"id": 42}'),
        RESPONSE_DONE,
        realtime_call(ITEM_DONE, 2, "c2", "get_weather", '{"city": "Oslo"}'),
    ]
    server = Realtime(upstream_pki, tuple(json.dumps(event) for event in events))
    try:
        with realtime_agent(proxy, server.port, CONTEXT) as connection:
            received: list[Any] = [connection.recv() for _ in range(4)]
    finally:
        server.close()
    assert [event.type for event in received] == ["error", "error", "response.done", ITEM_DONE]
    assert [event.error.event_id for event in received if event.type == "error"] == [None, None]
    told = [event.error.message for event in received if event.type == "error"]
    assert "credential_theft" in told[0] and "tool_abuse" in told[1]
    assert received[-1].item.call_id == "c2"
    assert {rule for rule, _ in refusals(record_of(proxy))} >= {
        "cloud-credentials-file",
        "tool-delete",
    }


def test_a_refused_live_message_closes_the_session_with_the_refusal_as_its_reason(
    start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    """A ``toolResponse`` with an injection in its result, enforced: it does not reach the API, and the
    session closes (1008) with the refusal as the reason the SDK raises."""
    proxy = start_proxy(mode="enforce")
    server = LiveUpstream(upstream_pki, TOOL_CALL)

    async def run() -> errors.APIError:
        client = session(proxy, server.port)
        async with client.aio.live.connect(model="gemini-live-2.5-flash", config={}) as live:
            async for _ in live.receive():
                pass
            await live.send_tool_response(function_responses=[RESULTS[0]])
            with pytest.raises(errors.APIError) as closed:
                async for _ in live.receive():
                    pass
        return closed.value

    try:
        closed = asyncio.run(asyncio.wait_for(run(), 2 * WAIT_S))
    finally:
        server.close()
    record = record_of(proxy)
    assert closed.code == 1008
    reason = f"egressguard blocked: audit event {record['event_id']}; prompt_injection"
    assert f"{reason} (injection-ignore-instructions-en)" in str(closed)
    assert [json.loads(message) for message in server.received][1:] == []
    assert refusals(record)
