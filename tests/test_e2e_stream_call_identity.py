"""End to end, in enforce mode, through the official SDKs: a streamed tool call that names a destructive
tool only after the gate decided it (a later name fragment, another name in the item's last event or the
final response, a call only the final response holds, a call started again at a used index) never
reaches the agent, and the record says the call was withheld."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import pytest

from tests.harness import Proxy
from tests.upstream import (
    FakeUpstream,
    Reply,
    ToolCallReply,
    anthropic_json,
    responses_events,
    responses_json,
    sse,
)

CONTEXT = {"X-User-Id": "u-1", "X-Purpose": "support", "X-Consent-Id": "c-1"}


def findings(proxy: Proxy) -> dict[str, bool]:
    (record,) = proxy.wait_for_records(1)
    return {finding["rule"]: finding["enforced"] for finding in record["findings"]}


def event_type(raw: bytes) -> str:
    return str(json.loads(raw.partition(b"data: ")[2])["type"])


def final_names(proxy: Proxy, upstream: FakeUpstream, events: list[bytes]) -> list[str]:
    upstream.reply = Reply(events=events)
    names = []
    with proxy.openai_client(upstream.url, headers=CONTEXT).responses.stream(model="m", input="hi") as stream:
        for event in stream:
            item = getattr(event, "item", None)
            names.append(getattr(item, "name", None) or "")
        final = stream.get_final_response()
    return names + [getattr(item, "name", None) or "" for item in final.output]


@pytest.mark.parametrize(
    "renamed_in",
    [
        ("response.output_item.done",),
        ("response.completed",),
        ("response.output_item.done", "response.completed"),
    ],
)
def test_responses_a_call_renamed_after_its_decision_reaches_the_agent_as_decided(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, renamed_in: tuple[str, ...]
) -> None:
    proxy = start_proxy(mode="enforce")
    events = [
        raw.replace(b'"lookup"', b'"delete_customer"') if event_type(raw) in renamed_in else raw
        for raw in responses_events(Reply(text="", tool_calls=[ToolCallReply("lookup", {"id": 42})]))
    ]
    names = final_names(proxy, upstream, events)
    assert "delete_customer" not in names and names[-1] == "lookup"
    found = findings(proxy)
    assert found["inspection.ambiguous_place"] is True
    assert found.get("tool-delete", True) is True


def test_responses_a_call_only_the_final_response_holds_is_withheld(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    proxy = start_proxy(mode="enforce")
    with_call = responses_json(Reply(text="ok", tool_calls=[ToolCallReply("delete_customer", {"id": 42})]))
    events = []
    for raw in responses_events(Reply(text="ok")):
        if event_type(raw) == "response.completed":
            body = json.loads(raw.partition(b"data: ")[2])
            raw = sse({**body, "response": with_call}, "response.completed")
        events.append(raw)
    assert "delete_customer" not in final_names(proxy, upstream, events)
    assert findings(proxy)["tool-delete"] is True


def test_responses_a_second_call_at_a_used_output_index_is_withheld(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    proxy = start_proxy(mode="enforce")
    first = list(responses_events(Reply(text="", tool_calls=[ToolCallReply("lookup", {"id": 1})])))
    second = responses_events(
        Reply(text="", tool_calls=[ToolCallReply("delete_customer", {"id": 42}, id="call_2")])
    )
    reused = [
        raw for raw in second if event_type(raw).startswith(("response.output_item", "response.function"))
    ]
    assert "delete_customer" not in final_names(proxy, upstream, [*first[:-1], *reused, first[-1]])
    assert findings(proxy)["inspection.ambiguous_place"] is True


def anthropic_tool_use(call_id: str, name: str, arguments: str) -> list[bytes]:
    block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
    delta = {"type": "input_json_delta", "partial_json": arguments}
    return [
        sse({"type": "content_block_start", "index": 0, "content_block": block}, "content_block_start"),
        sse({"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta"),
        sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
    ]


def test_anthropic_a_block_started_again_at_a_used_index_is_withheld(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = start_proxy(mode="enforce")
    message: dict[str, Any] = {**anthropic_json(Reply(text="")), "content": [], "stop_reason": None}
    ending = {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 2}}
    upstream.reply = Reply(
        events=[
            sse({"type": "message_start", "message": message}, "message_start"),
            *anthropic_tool_use("t1", "lookup", '{"q": 1}'),
            *anthropic_tool_use("t2", "delete_customer", '{"id": 42}'),
            sse(ending, "message_delta"),
            sse({"type": "message_stop"}, "message_stop"),
        ]
    )
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca_cert))
    client = anthropic.Anthropic(base_url=upstream.url, api_key="k", default_headers=CONTEXT, max_retries=0)
    with client.messages.stream(
        model="claude", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        final = stream.get_final_message()
    assert [getattr(block, "name", None) for block in final.content if block.type == "tool_use"] == ["lookup"]
    found = findings(proxy)
    assert found["inspection.ambiguous_place"] is True and found["tool-delete"] is True


def test_chat_a_name_split_over_deltas_never_reaches_the_agent_whole(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    proxy = start_proxy(mode="enforce")

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return sse(
            {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]}
        )

    first, rest = "d", "elete_customer"
    upstream.reply = Reply(
        events=[
            chunk({"role": "assistant", "content": None}),
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "call_1", "type": "function", "function": {"name": first}}
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"name": rest, "arguments": ""}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"id": 42}'}}]}),
            chunk({}, "tool_calls"),
            b"data: [DONE]\n\n",
        ]
    )
    client = proxy.openai_client(upstream.url, headers=CONTEXT)
    with client.beta.chat.completions.stream(
        model="m", messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert [call.function.name for call in message.tool_calls or []] == [first]
    assert "delete_customer" in (message.content or "")
    assert findings(proxy)["tool-delete"] is True
