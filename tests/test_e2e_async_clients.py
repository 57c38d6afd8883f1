"""End to end with the official SDKs' asyncio clients (AsyncOpenAI, AsyncAnthropic, google-genai's
``client.aio``), configured by the environment alone as an agent is: each streamed answer arrives
through an egressguard in enforce mode with a key the model wrote redacted, however its pieces fall, and
the turn is audited as its dialect."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import types

from tests.harness import Proxy
from tests.upstream import FakeUpstream, Reply

KEY = "AKIAQWERTY234567ABCD"
ANSWER = f"the key is {KEY}, keep it safe"
CONTEXT = {"X-User-Id": "u-1", "X-Purpose": "support", "X-Consent-Id": "c-1"}


async def openai_chat(upstream: FakeUpstream) -> str:
    client = openai.AsyncOpenAI(
        base_url=f"{upstream.url}/v1", api_key="sk-test", max_retries=0, default_headers=CONTEXT
    )
    async with client:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}], stream=True
        )
        return "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])


async def openai_responses(upstream: FakeUpstream) -> str:
    client = openai.AsyncOpenAI(
        base_url=f"{upstream.url}/v1", api_key="sk-test", max_retries=0, default_headers=CONTEXT
    )
    async with client:
        stream = await client.responses.create(model="gpt-4o-mini", input="hello", stream=True)
        return "".join([event.delta async for event in stream if event.type == "response.output_text.delta"])


async def anthropic_messages(upstream: FakeUpstream) -> str:
    client = anthropic.AsyncAnthropic(
        base_url=upstream.url, api_key="sk-ant-test", max_retries=0, default_headers=CONTEXT
    )
    async with client:
        request: Any = {"role": "user", "content": "hello"}
        async with client.messages.stream(model="claude-x", max_tokens=64, messages=[request]) as stream:
            return "".join([text async for text in stream.text_stream])


async def gemini(upstream: FakeUpstream) -> str:
    options = types.HttpOptions(base_url=upstream.url, headers=CONTEXT)
    client = genai.Client(api_key="test-key", http_options=options)
    stream = await client.aio.models.generate_content_stream(model="gemini-2.0-flash", contents="hello")
    return "".join([chunk.text or "" async for chunk in stream])


CLIENTS: dict[str, tuple[Callable[[FakeUpstream], Coroutine[Any, Any, str]], str]] = {
    "AsyncOpenAI chat": (openai_chat, "openai_chat"),
    "AsyncOpenAI responses": (openai_responses, "openai_responses"),
    "AsyncAnthropic messages": (anthropic_messages, "anthropic"),
    "google-genai aio": (gemini, "gemini"),
}


@pytest.mark.parametrize("piece_size", [3, 64])
@pytest.mark.parametrize("name", list(CLIENTS))
def test_async_sdk_stream_arrives_with_the_key_redacted(
    start_proxy: Callable[..., Proxy],
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    piece_size: int,
) -> None:
    proxy = start_proxy(mode="enforce")
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca_cert))
    upstream.reply = Reply(text=ANSWER, piece_size=piece_size)
    call, dialect = CLIENTS[name]
    answer = asyncio.run(call(upstream))
    assert KEY not in answer
    assert answer == "the key is [REDACTED:aws-access-key-id], keep it safe"
    record = proxy.wait_for_records(1)[-1]
    assert (record["dialect"], record["stream"]) == (dialect, True)
    redacted = [finding for finding in record["findings"] if finding["rule"] == "aws-access-key-id"]
    assert redacted and all(finding["enforced"] for finding in redacted)
    assert KEY not in str(record)
