"""End to end: a tool call an upstream streams over several WebSocket messages, through a real egressguard
process: joined from its pieces, decided once on its whole arguments, its messages held until then and
sent in order; the pieces no reading places (out of order, a place or id reused) withheld."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from proxy.commands.localca import UpstreamPKI
from proxy.dialects.stream import MISPLACED_RULE
from proxy.inspection import HELD_OVER_CAP_RULE
from tests.harness import Proxy
from tests.test_e2e_shapes import ADDED, CONTEXT, ITEM_DONE, realtime_agent, realtime_call
from tests.test_e2e_websocket import Realtime, connect, next_messages


def chat_delta(call: dict[str, Any] | None = None, finish: str | None = None) -> dict[str, Any]:
    """A Chat chunk as a server of its own sends one a message: a piece of a call, or its end."""
    delta = {"tool_calls": [{"index": 0, **call}]} if call else {}
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def split_call(
    name: tuple[str, str], arguments: tuple[str, str], call_id: str = "call_1"
) -> list[dict[str, Any]]:
    """A call whose name and arguments each come in two messages, then its choice's end."""
    first = {"id": call_id, "type": "function", "function": {"name": name[0], "arguments": arguments[0]}}
    second = {"function": {"name": name[1], "arguments": arguments[1]}}
    return [chat_delta(first), chat_delta(second), chat_delta(finish="tool_calls")]


TEXT_BEFORE, TEXT_AFTER = {"type": "text", "text": "Cleaning up."}, {"type": "text", "text": "done"}
SPLIT: dict[str, tuple[list[dict[str, Any]], str | None]] = {
    "a destructive tool's name split": (
        split_call(("delete_", "customer"), ('{"id": ', "42}")),
        "tool_abuse",
    ),
    "a credential path split": (
        split_call(("read_", "file"), ('{"path": "/home/u/.a', 'ws/credentials"}')),
        "credential_theft",
    ),
    "an everyday read split": (split_call(("read_", "file"), ('{"path": "REA', 'DME.md"}')), None),
}


def relay(
    proxy: Proxy, upstream_pki: UpstreamPKI, messages: list[dict[str, Any]]
) -> tuple[list[Any], int, list[Any]]:
    """What an agent receives through ``proxy`` of ``messages`` an upstream sends, up to the last, but for
    the error events telling it of a call withheld (the path is a Realtime API's), their count, and the
    findings the proxy recorded of the connection."""
    server = Realtime(upstream_pki, tuple(json.dumps(message, ensure_ascii=False) for message in messages))
    try:
        with connect(proxy, server.port) as connection:
            received = [json.loads(next_messages(proxy, connection, 1)[0])]
            while received[-1] != messages[-1]:
                received += [json.loads(message) for message in next_messages(proxy, connection, 1)]
    finally:
        server.close()
    (record,) = proxy.wait_for_records(1)
    told = [message for message in received if message.get("type") == "error"]
    return [message for message in received if message not in told], len(told), record["findings"]


@pytest.mark.parametrize("mode", ["enforce", "observe"])
@pytest.mark.parametrize("name", sorted(SPLIT))
def test_a_call_split_across_messages_is_decided_once_on_the_whole_call(
    name: str, mode: str, start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    """A call whose name and arguments a generic WebSocket server splits over messages (a tool named in
    two halves, a credential path in two) is joined as a client joins it and decided once it ends:
    enforced, none of the messages carrying it reaches the agent, the others do, in order; an
    everyday call reaches it whole, in order, after being held; observed, everything passes, recorded."""
    pieces, threat = SPLIT[name]
    proxy = start_proxy(mode=mode)
    messages = [TEXT_BEFORE, *pieces, TEXT_AFTER]
    received, told, findings = relay(proxy, upstream_pki, messages)
    gated = mode == "enforce" and threat is not None
    assert told == gated
    # The choice's end carries no call: it goes, after the text before, once the call is decided.
    assert received == ([TEXT_BEFORE, pieces[-1], TEXT_AFTER] if gated else messages)
    found = [(f["threat"], f["where"], f["enforced"]) for f in findings if f["threat"] == threat]
    place = "websocket[1].choices[0].delta.tool_calls[0]"
    assert found == ([] if threat is None else [(threat, place, gated)])


@pytest.mark.parametrize("second", ["an everyday read", "a destructive call"])
def test_each_turns_call_at_a_reused_index_is_decided_on_its_own(
    second: str, start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    """Two turns over one connection, each calling a tool at index 0 of a server's own Chat deltas: the
    first, an everyday read, reaches the agent whole; the second is a call of its own, not a piece out of
    place: an everyday one arrives whole too, a destructive one is withheld, its choice's end arrives."""
    proxy = start_proxy(mode="enforce")
    first = split_call(("read_", "file"), ('{"path": "REA', 'DME.md"}'))
    destructive = second == "a destructive call"
    name, arguments = (
        (("delete_", "customer"), ('{"id": ', "42}"))
        if destructive
        else (("read_", "file"), ('{"path": "do', 'cs/a.md"}'))
    )
    later = split_call(name, arguments, "call_2")
    received, told, findings = relay(proxy, upstream_pki, [*first, *later, TEXT_AFTER])
    assert received == [*first, *(later[-1:] if destructive else later), TEXT_AFTER]
    assert told == destructive
    gated = [(f["threat"], f["where"], f["enforced"]) for f in findings if f["threat"] == "tool_abuse"]
    place = f"websocket[{len(first)}].choices[0].delta.tool_calls[0]"
    assert gated == ([("tool_abuse", place, True)] if destructive else [])
    assert [f for f in findings if f["rule"] == MISPLACED_RULE] == []


def test_arguments_streamed_after_their_call_was_decided_are_withheld(
    start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    """An Anthropic block's arguments streamed on after the block stopped and its call, an everyday read,
    was decided and sent: a client joining them would run the call on arguments no one read, so they are
    withheld as out of place, and what follows arrives."""
    proxy = start_proxy(mode="enforce")
    call = {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {}}
    arguments = {"type": "input_json_delta", "partial_json": '{"path": "README.md"}'}
    late = {"type": "input_json_delta", "partial_json": '{"path": "/home/u/.aws/credentials"}'}
    turn = [
        {"type": "content_block_start", "index": 0, "content_block": call},
        {"type": "content_block_delta", "index": 0, "delta": arguments},
        {"type": "content_block_stop", "index": 0},
    ]
    received, _, findings = relay(
        proxy, upstream_pki, [*turn, {"type": "content_block_delta", "index": 0, "delta": late}, TEXT_AFTER]
    )
    assert received == [*turn, TEXT_AFTER]
    misplaced = [(f["where"], f["enforced"]) for f in findings if f["rule"] == MISPLACED_RULE]
    assert misplaced == [("websocket[3]", True)]


DELTA = {"type": "response.function_call_arguments.delta", "response_id": "resp_1", "output_index": 0}
RESPONSE_DONE = {"type": "response.done", "response": {"id": "resp_1", "status": "completed", "output": []}}
LAST: dict[str, Any] = {"type": "rate_limits.updated", "rate_limits": []}
DELETE = ("c1", "delete_customer")
OUT_OF_PLACE: dict[str, tuple[list[dict[str, Any]], list[str]]] = {
    "a delta before its item": (
        [
            DELTA | {"item_id": "i0", "call_id": "c1", "delta": '{"id": 42}'},
            realtime_call(ADDED, 0, "c1", "get_weather", ""),
            realtime_call(ITEM_DONE, 0, "c1", "get_weather", '{"city": "Oslo"}'),
        ],
        [ADDED, ITEM_DONE],
    ),
    "a second item added at a call's place": (
        [
            realtime_call(ADDED, 0, "c1", "get_weather", ""),
            realtime_call(ADDED, 0, "c9", "delete_customer", ""),
            realtime_call(ITEM_DONE, 0, "c1", "get_weather", '{"city": "Oslo"}'),
        ],
        [],
    ),
    "a delta naming another call's id": (
        [
            realtime_call(ADDED, 0, "c1", "get_weather", ""),
            DELTA | {"item_id": "i0", "call_id": "c9", "delta": '{"city": "Oslo"}'},
            realtime_call(ITEM_DONE, 0, "c1", "get_weather", '{"city": "Oslo"}'),
        ],
        [],
    ),
    "a delta of no call": (
        [
            DELTA | {"item_id": "i7", "call_id": "c7", "delta": '{"id": 42}'},
            realtime_call(ADDED, 0, "c1", "get_weather", ""),
            realtime_call(ITEM_DONE, 0, "c1", "get_weather", '{"city": "Oslo"}'),
        ],
        [ADDED, ITEM_DONE],
    ),
}


def realtime_session(
    proxy: Proxy, upstream_pki: UpstreamPKI, events: list[dict[str, Any]]
) -> tuple[list[str], list[str], dict[str, Any]]:
    """The types of the events the OpenAI SDK's Realtime client receives through ``proxy`` of ``events``
    an upstream sends, up to the last, the messages of the ``error`` events among them, and the proxy's
    record of the connection."""
    server = Realtime(upstream_pki, tuple(json.dumps(event) for event in events))
    received: list[Any] = []
    try:
        with realtime_agent(proxy, server.port, CONTEXT) as connection:
            while not received or received[-1].type != events[-1]["type"]:
                received.append(connection.recv())
    finally:
        server.close()
    (record,) = proxy.wait_for_records(1)
    told = [event.error.message for event in received if event.type == "error"]
    return [event.type for event in received], told, record


@pytest.mark.parametrize("name", sorted(OUT_OF_PLACE))
def test_a_realtime_call_piece_no_reading_places_is_withheld(
    name: str, start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    """A piece of a call that comes out of order, starts a second call at a call's place, names
    another call's id or no call at all is placed by no one reading of the session: enforced, it is not
    delivered (``inspection.ambiguous_place``), and a call it names is dropped with every message of it;
    the agent is told once, by an ``error`` event saying why, and the messages after it arrive, in order.
    The agent is the OpenAI SDK's Realtime client."""
    proxy = start_proxy(mode="enforce")
    pieces, released = OUT_OF_PLACE[name]
    events = [*pieces, RESPONSE_DONE, LAST]
    delivered, told, record = realtime_session(proxy, upstream_pki, events)
    assert delivered.count("error") == 1
    assert [kind for kind in delivered if kind != "error"] == [*released, RESPONSE_DONE["type"], LAST["type"]]
    (misplaced,) = told
    assert f"({MISPLACED_RULE}); audit event {record['event_id']}. a streamed delta" in misplaced
    found = [(f["rule"], f["enforced"]) for f in record["findings"] if f["rule"] == MISPLACED_RULE]
    assert found == [(MISPLACED_RULE, True)]


def test_a_realtime_call_completed_only_in_its_response_done_is_decided_there_once(
    start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    """A call whose item is added and whose arguments stream in deltas, with no event ending it but the
    response's end holding it whole, is decided there, once: none of its events is delivered (an
    ``error`` event tells of the call, and another of the response's end withheld), and it opens one
    approval."""
    proxy = start_proxy(mode="enforce")
    call = realtime_call(ITEM_DONE, 0, *DELETE, '{"id": 42}')["item"]
    events = [
        realtime_call(ADDED, 0, *DELETE, ""),
        *(DELTA | {"item_id": "i0", "call_id": "c1", "delta": delta} for delta in ('{"id": ', "42}")),
        {"type": "response.done", "response": {"id": "resp_1", "status": "completed", "output": [call]}},
        LAST,
    ]
    delivered, _, record = realtime_session(proxy, upstream_pki, events)
    assert delivered == ["error", "error", LAST["type"]]
    found = {f["where"]: f for f in record["findings"] if f["threat"] == "tool_abuse"}
    assert set(found) == {"websocket[0].item", "websocket[3].response.output[0]"}
    assert len({f["extra"]["pending_approval"] for f in found.values()}) == 1
    assert sum(f["extra"].get("approval_requested", False) for f in found.values()) == 1
    assert all(f["enforced"] for f in found.values())


def test_realtime_calls_held_past_the_cap_are_dropped_and_told(
    start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI
) -> None:
    """A call whose arguments stream past the 1 MiB its held messages may take, its end never seen:
    enforced, none of it is delivered, the agent is told by an ``error`` event naming the cap, the turn
    records it, and the response's end and what follows arrive."""
    proxy = start_proxy(mode="enforce")
    piece = "x" * (400 << 10)
    events = [
        realtime_call(ADDED, 0, "c1", "get_weather", ""),
        *(DELTA | {"item_id": "i0", "call_id": "c1", "delta": piece} for _ in range(3)),
        RESPONSE_DONE,
        LAST,
    ]
    delivered, told, record = realtime_session(proxy, upstream_pki, events)
    assert delivered == ["error", RESPONSE_DONE["type"], LAST["type"]]
    (cut,) = told
    assert f"({HELD_OVER_CAP_RULE}); audit event {record['event_id']}" in cut and "1048576 bytes" in cut
    found = [
        (f["rule"], f["where"], f["enforced"]) for f in record["findings"] if f["rule"] == HELD_OVER_CAP_RULE
    ]
    assert found == [(HELD_OVER_CAP_RULE, "websocket[3]", True)]
