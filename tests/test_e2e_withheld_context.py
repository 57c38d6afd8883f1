"""A provider keeps a stored response or a conversation and hands the model the whole of it when a later
request continues it: where egressguard withheld part of an answer (a destructive call), a request that
continues it is refused, through a real egressguard and the official OpenAI SDK."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest

from tests.harness import Proxy
from tests.upstream import FakeUpstream, Reply, ToolCallReply

CONTEXT = {"X-User-Id": "u-1", "X-Purpose": "support", "X-Consent-Id": "c-1"}
STORED = "resp_test0001"
"""The id the fake upstream gives every Responses answer."""
DESTRUCTIVE = Reply(text="", tool_calls=[ToolCallReply("delete_customer", {"id": 42})])


def ask(client: openai.OpenAI, *, stream: bool = False, **fields: Any) -> list[str]:
    """One Responses turn; the names of the calls that reached the agent."""
    if stream:
        with client.responses.stream(model="m", input="go on", **fields) as events:
            output = events.get_final_response().output
    else:
        output = client.responses.create(model="m", input="go on", **fields).output
    return [item.name for item in output if item.type == "function_call"]


def refusal(client: openai.OpenAI, **fields: Any) -> str:
    with pytest.raises(openai.PermissionDeniedError) as raised:
        ask(client, **fields)
    return str(raised.value)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_stored_response_with_a_withheld_call_cannot_be_continued(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, stream: bool
) -> None:
    proxy = start_proxy(mode="enforce")
    client = proxy.openai_client(upstream.url, headers=CONTEXT)
    assert ask(client, stream=stream) == []  # a clean answer, stored
    assert ask(client, previous_response_id=STORED) == []  # continued: nothing was withheld from it
    upstream.reply = DESTRUCTIVE
    assert ask(client, stream=stream) == []  # the call is withheld; the provider keeps it all the same
    upstream.reply = Reply()
    assert "inspection.withheld_context" in refusal(client, previous_response_id=STORED)
    record = proxy.wait_for_records(4)[-1]
    found = {(finding["rule"], finding["where"], finding["enforced"]) for finding in record["findings"]}
    assert ("inspection.withheld_context", "previous_response_id", True) in found
    assert record["decision"] == "blocked"


def test_an_answer_the_provider_does_not_keep_leaves_nothing_to_refuse(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """With ``store: false`` the provider keeps nothing of the answer, so nothing continues from it."""
    proxy = start_proxy(mode="enforce")
    client = proxy.openai_client(upstream.url, headers=CONTEXT)
    upstream.reply = DESTRUCTIVE
    assert ask(client, store=False) == []
    upstream.reply = Reply()
    assert ask(client, previous_response_id=STORED) == []


def test_a_conversation_an_answer_with_a_withheld_call_joined_cannot_be_continued(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    proxy = start_proxy(mode="enforce")
    client = proxy.openai_client(upstream.url, headers=CONTEXT)
    upstream.reply = DESTRUCTIVE
    assert ask(client, conversation="conv_7") == []
    upstream.reply = Reply()
    assert "inspection.withheld_context" in refusal(client, conversation={"id": "conv_7"})
    assert ask(client, conversation="conv_8") == []


def test_observe_mode_records_the_continuation_and_lets_it_pass(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """Observe mode withholds nothing, so nothing is remembered and every continuation passes."""
    proxy = start_proxy(mode="observe")
    client = proxy.openai_client(upstream.url, headers=CONTEXT)
    upstream.reply = DESTRUCTIVE
    assert ask(client) == ["delete_customer"]
    upstream.reply = Reply()
    assert ask(client, previous_response_id=STORED) == []
    rules = {finding["rule"] for finding in proxy.wait_for_records(2)[-1]["findings"]}
    assert "inspection.withheld_context" not in rules


def test_a_stream_broken_after_its_call_was_withheld_cannot_be_continued(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """A stream that breaks off after the gate withheld its call (the agent gone, the upstream cut) was
    kept by the provider all the same, and the agent holds its id from its first event."""
    proxy = start_proxy(mode="enforce")
    client = proxy.openai_client(upstream.url, headers=CONTEXT)
    upstream.reply = Reply(
        text="", tool_calls=[ToolCallReply("delete_customer", {"id": 42})], cut_after_events=7
    )
    with pytest.raises(openai.APIError):
        ask(client, stream=True)
    upstream.reply = Reply()
    assert "inspection.withheld_context" in refusal(client, previous_response_id=STORED)
