"""End to end: a known model API served at a provider's own route (Claude on Vertex AI and on Bedrock,
Gemini's tuned models, model versions and Vertex AI endpoints) is read in its dialect, so a destructive
tool call in its answer is withheld as it is on the API's own route."""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Callable
from typing import Any

import anthropic
import pytest

from tests.harness import Proxy
from tests.test_e2e_dialect_choice import CONTEXT, client, rules
from tests.test_e2e_inspect import _agent as through_proxy
from tests.upstream import FakeUpstream, Reply, ToolCallReply, anthropic_events, anthropic_json, gemini_json

DESTRUCTIVE = Reply(text="", tool_calls=[ToolCallReply("delete_customer", {"id": 42}, id="toolu_del")])
DESTRUCTIVE_BLOCK = {"type": "tool_use", "id": "toolu_del", "name": "delete_customer", "input": {"id": 42}}
ASK: Any = [{"role": "user", "content": "hello"}]
MESSAGES = {"max_tokens": 64, "messages": ASK}


@pytest.fixture
def enforce(start_proxy: Callable[..., Proxy], monkeypatch: pytest.MonkeyPatch) -> Proxy:
    """An enforcing egressguard the SDKs reach through ``HTTPS_PROXY`` (they bring their own HTTP client)."""
    return through_proxy(start_proxy(mode="enforce"), monkeypatch)


def vertex(upstream: FakeUpstream) -> anthropic.AnthropicVertex:
    return anthropic.AnthropicVertex(
        region="us-east5",
        project_id="p",
        access_token="ya29.test",
        base_url=f"{upstream.url}/v1",
        max_retries=0,
        default_headers=CONTEXT,
    )


def test_claude_on_vertex_has_its_tool_calls_withheld(enforce: Proxy, upstream: FakeUpstream) -> None:
    """``:rawPredict`` and ``:streamRawPredict`` under ``publishers/anthropic`` are the Messages API: the
    destructive call is withheld from the answer and from the stream, and a remote MCP server the
    allowlist does not name is refused as on ``/v1/messages``."""
    sdk = vertex(upstream)
    upstream.reply = Reply(body=json.dumps(anthropic_json(DESTRUCTIVE)).encode())
    message = sdk.messages.create(model="claude-sonnet-4@20250514", max_tokens=64, messages=ASK)
    assert [block.type for block in message.content] == ["text"]
    assert upstream.received[-1].path.endswith(
        "/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict"
    )
    assert "tool-delete" in rules(enforce, 1)
    upstream.reply = Reply(events=list(anthropic_events(DESTRUCTIVE)))
    with sdk.messages.stream(model="claude-sonnet-4@20250514", max_tokens=64, messages=ASK) as stream:
        streamed = stream.get_final_message()
    assert upstream.received[-1].path.endswith(":streamRawPredict")
    assert "tool_use" not in [block.type for block in streamed.content]
    assert "tool-delete" in rules(enforce, 2)
    servers = [{"type": "url", "url": "https://attacker.example/mcp", "name": "x"}]
    sent = len(upstream.received)
    with pytest.raises(anthropic.PermissionDeniedError):
        sdk.beta.messages.create(
            model="claude-sonnet-4@20250514",
            max_tokens=64,
            messages=ASK,
            mcp_servers=servers,  # type: ignore[arg-type]
            betas=["mcp-client-2025-04-04"],
        )
    assert len(upstream.received) == sent


def test_claude_on_bedrock_has_its_tool_calls_withheld(enforce: Proxy, upstream: FakeUpstream) -> None:
    """``/model/<id>/invoke`` with a Messages body is the Messages API: the call is withheld."""
    upstream.reply = Reply(body=json.dumps(anthropic_json(DESTRUCTIVE)).encode())
    body = {"anthropic_version": "bedrock-2023-05-31", **MESSAGES}
    with client(enforce) as http:
        answer = http.post(
            f"{upstream.url}/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke", json=body
        )
    assert answer.status_code == 200
    assert [block["type"] for block in answer.json()["content"]] == ["text"]
    assert "tool-delete" in rules(enforce, 1)


@pytest.mark.parametrize(
    "route",
    [
        "/v1beta/tunedModels/support-bot:generateContent",
        "/v1/projects/p/locations/us-central1/endpoints/123:generateContent",
        "/v1beta/models/gemini-2.0-flash/versions/1:generateContent",
    ],
)
def test_gemini_on_other_resources_has_its_tool_calls_withheld(
    enforce: Proxy, upstream: FakeUpstream, route: str
) -> None:
    """Gemini's ``generateContent`` on a tuned model, a Vertex AI endpoint or a model version is Gemini:
    the ``functionCall`` is withheld."""
    upstream.reply = Reply(body=json.dumps(gemini_json(DESTRUCTIVE)).encode())
    body = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
    with client(enforce) as http:
        answer = http.post(f"{upstream.url}{route}", json=body)
    assert answer.status_code == 200
    assert "functionCall" not in answer.text and "delete_customer" in answer.text
    assert "tool-delete" in rules(enforce, 1)


def test_gemini_tuned_model_through_the_sdk(enforce: Proxy, upstream: FakeUpstream) -> None:
    """google-genai calling a tuned model gets no function call the policy withholds."""
    from google import genai
    from google.genai import types

    sdk = genai.Client(
        api_key="test-key", http_options=types.HttpOptions(base_url=upstream.url, headers=CONTEXT)
    )
    upstream.reply = Reply(body=json.dumps(gemini_json(DESTRUCTIVE)).encode())
    answer = sdk.models.generate_content(model="tunedModels/support-bot", contents="hello")
    assert upstream.received[-1].path.endswith("/tunedModels/support-bot:generateContent")
    assert not answer.function_calls
    assert "tool-delete" in rules(enforce, 1)


def event_stream_frame(payload: dict[str, Any]) -> bytes:
    """One message of AWS's event-stream framing as Bedrock sends a chunk: prelude (total length, headers
    length, prelude CRC), headers, payload ``{"bytes": base64 of the model's event}``, message CRC."""
    headers = b""
    for name, value in (
        (":event-type", "chunk"),
        (":content-type", "application/json"),
        (":message-type", "event"),
    ):
        headers += (
            bytes([len(name)]) + name.encode() + b"\x07" + len(value).to_bytes(2, "big") + value.encode()
        )
    body = json.dumps({"bytes": base64.b64encode(json.dumps(payload).encode()).decode()}).encode()
    total = 12 + len(headers) + len(body) + 4
    prelude = total.to_bytes(4, "big") + len(headers).to_bytes(4, "big")
    prelude += zlib.crc32(prelude).to_bytes(4, "big")
    message = prelude + headers + body
    return message + zlib.crc32(message).to_bytes(4, "big")


def test_claude_on_bedrock_streamed_in_event_stream_framing_is_refused(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    """``invoke-with-response-stream`` answers in AWS's binary event-stream framing, which no reader of
    the Messages API reads: where enforced it is refused (502) with an ``inspection.binary_answer``
    finding, so the tool call in it never reaches the agent."""
    events = [
        {"type": "message_start", "message": {**anthropic_json(Reply(text="")), "content": []}},
        {"type": "content_block_start", "index": 0, "content_block": DESTRUCTIVE_BLOCK},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_stop"},
    ]
    framed = b"".join(map(event_stream_frame, events))
    upstream.reply = Reply(body=framed, content_type="application/vnd.amazon.eventstream")
    body = {"anthropic_version": "bedrock-2023-05-31", **MESSAGES}
    route = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke-with-response-stream"
    with client(enforce) as http:
        answer = http.post(f"{upstream.url}{route}", json=body)
    assert answer.status_code == 502
    assert b"delete_customer" not in answer.content
    assert "inspection.binary_answer" in rules(enforce, 1)
