"""End to end: a known model API served at a provider's own route (Claude on Vertex AI and on Bedrock,
Gemini's tuned models, model versions and Vertex AI endpoints) is read in its dialect, so a destructive
tool call in its answer is withheld as it is on the API's own route."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import pytest

from tests.harness import Proxy
from tests.test_e2e_dialect_choice import CONTEXT, client, rules
from tests.test_e2e_inspect import _agent as through_proxy
from tests.upstream import FakeUpstream, Reply, ToolCallReply, anthropic_events, anthropic_json, gemini_json

DESTRUCTIVE = Reply(text="", tool_calls=[ToolCallReply("delete_customer", {"id": 42}, id="toolu_del")])
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
