"""End to end: a known model API served at a provider's own route (Claude on Vertex AI and on Bedrock,
Gemini's tuned models, model versions and Vertex AI endpoints) is read in its dialect, so a destructive
tool call in its answer is withheld as it is on the API's own route."""

from __future__ import annotations

import base64
import contextlib
import json
import zlib
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import pytest

from tests.harness import Proxy
from tests.test_e2e_dialect_choice import CONTEXT, client, rules
from tests.test_e2e_inspect import AWS_KEY
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
        # The SDK's Vertex client reuses its own client's create, typed for that client's Messages.
        sdk.beta.messages.create(  # type: ignore[misc]
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


def event_stream_frame(payload: dict[str, Any], **headers: str) -> bytes:
    """One message of AWS's event-stream framing as Bedrock sends a chunk: prelude (total length, headers
    length, prelude CRC), headers, payload ``{"bytes": base64 of the model's event}``, message CRC. With
    ``headers``, a message of those headers whose payload is ``payload`` itself (an exception)."""
    fields = headers or {
        ":event-type": "chunk",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    raw = b""
    for name, value in fields.items():
        raw += bytes([len(name)]) + name.encode() + b"\x07" + len(value).to_bytes(2, "big") + value.encode()
    body = json.dumps(
        payload if headers else {"bytes": base64.b64encode(json.dumps(payload).encode()).decode()}
    )
    total = 12 + len(raw) + len(body.encode()) + 4
    prelude = total.to_bytes(4, "big") + len(raw).to_bytes(4, "big")
    prelude += zlib.crc32(prelude).to_bytes(4, "big")
    message = prelude + raw + body.encode()
    return message + zlib.crc32(message).to_bytes(4, "big")


def bedrock_stream(reply: Reply) -> list[bytes]:
    """The Messages stream of ``reply`` as Bedrock's invoke-with-response-stream frames it."""
    return [event_stream_frame(json.loads(event.split(b"data: ", 1)[1])) for event in anthropic_events(reply)]


def bedrock_client(proxy: Proxy, upstream: FakeUpstream, service: str = "bedrock-runtime") -> Any:
    """boto3's client of a Bedrock ``service`` (``bedrock-runtime``, or ``bedrock`` for jobs) reaching the
    fake upstream through ``proxy``."""
    boto3 = pytest.importorskip("boto3")
    from botocore.config import Config

    sdk = boto3.client(
        service,
        region_name="us-east-1",
        endpoint_url=upstream.url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        verify=str(proxy.ca_cert),
        config=Config(proxies={"https": proxy.url()}, retries={"total_max_attempts": 1}),
    )

    def add_context(request: Any, **_: Any) -> None:
        for name, value in CONTEXT.items():
            request.headers[name] = value

    sdk.meta.events.register(f"before-sign.{service}.*", add_context)
    return sdk


def streamed_events(sdk: Any) -> list[dict[str, Any]]:
    """The model's events boto3 reads out of invoke_model_with_response_stream's chunks."""
    body = {"anthropic_version": "bedrock-2023-05-31", **MESSAGES}
    answer = sdk.invoke_model_with_response_stream(modelId=CLAUDE, body=json.dumps(body))
    return [json.loads(event["chunk"]["bytes"]) for event in answer["body"]]


CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
STREAM_ROUTE = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke-with-response-stream"


def test_claude_streamed_on_bedrock_has_its_tool_call_withheld(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    """``invoke-with-response-stream`` frames each Messages event in a chunk of AWS's event stream: each is
    read as on ``/v1/messages``, the destructive call withheld for its notice, and what boto3 reads is
    framed again with checksums it accepts."""
    upstream.reply = Reply(events=bedrock_stream(Reply(text="On it.", tool_calls=DESTRUCTIVE.tool_calls)))
    upstream.reply.content_type = "application/vnd.amazon.eventstream"
    events = streamed_events(bedrock_client(enforce, upstream))
    assert upstream.received[-1].path == STREAM_ROUTE
    blocks = [event["content_block"]["type"] for event in events if event["type"] == "content_block_start"]
    assert "tool_use" not in blocks
    text = "".join(
        event["delta"].get("text", "") for event in events if event["type"] == "content_block_delta"
    )
    assert text.startswith("On it.") and "delete_customer" in text
    assert events[-1] == {"type": "message_stop"}
    assert "tool-delete" in rules(enforce, 1)


def test_claude_streamed_on_bedrock_passes_as_sent_in_observe_mode(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """Observe mode reads the chunks and changes nothing: the frames arrive as the upstream sent them and
    the call the policy would withhold is recorded."""
    proxy = start_proxy(mode="observe")
    frames = bedrock_stream(Reply(text="On it.", tool_calls=DESTRUCTIVE.tool_calls))
    upstream.reply = Reply(events=frames, content_type="application/vnd.amazon.eventstream")
    with client(proxy) as http:
        answer = http.post(f"{upstream.url}{STREAM_ROUTE}", json=MESSAGES)
    assert answer.content == b"".join(frames)
    record = proxy.wait_for_records(1)[0]
    assert record["tools"] == ["delete_customer"] and "tool-delete" in rules(proxy, 1)


def test_a_secret_split_across_bedrock_chunks_is_redacted(enforce: Proxy, upstream: FakeUpstream) -> None:
    """Text deltas in separate frames are one text: a key split across them reaches boto3 redacted."""
    leak = "The deploy key is AKIAQWERTY234567ABCD, keep it."
    upstream.reply = Reply(events=bedrock_stream(Reply(text=leak, piece_size=5)))
    upstream.reply.content_type = "application/vnd.amazon.eventstream"
    events = streamed_events(bedrock_client(enforce, upstream))
    text = "".join(
        event["delta"].get("text", "") for event in events if event["type"] == "content_block_delta"
    )
    assert text == "The deploy key is [REDACTED:aws-access-key-id], keep it."


def test_an_exception_in_a_bedrock_stream_reaches_the_sdk(enforce: Proxy, upstream: FakeUpstream) -> None:
    """A message that is no chunk (the model's error mid-stream) goes on with its own headers: boto3
    raises it by its type."""
    from botocore.exceptions import EventStreamError

    error = {":exception-type": "modelStreamErrorException", ":content-type": "application/json"}
    frames = bedrock_stream(Reply(text="Hel"))[:3]
    frames.append(
        event_stream_frame({"message": "the model stopped"}, **error, **{":message-type": "exception"})
    )
    upstream.reply = Reply(events=frames, content_type="application/vnd.amazon.eventstream")
    with pytest.raises(EventStreamError, match="modelStreamErrorException"):
        streamed_events(bedrock_client(enforce, upstream))


@pytest.mark.parametrize("damage", ["prelude", "message", "cut"])
def test_a_damaged_bedrock_frame_cuts_the_stream_where_enforced(
    enforce: Proxy, upstream: FakeUpstream, damage: str
) -> None:
    """A frame whose checksum does not match, or a stream ending inside a frame, is read by no one here:
    where enforced nothing of it or after it reaches the agent (the tool call behind it included), and an
    enforced ``inspection.binary_answer`` finding says so."""
    frames = bedrock_stream(Reply(text="Hi.", tool_calls=DESTRUCTIVE.tool_calls))
    damaged = bytearray(frames[4])
    if damage == "prelude":
        damaged[9] ^= 1
    elif damage == "message":
        damaged[-1] ^= 1
    else:
        damaged = damaged[:-3]
    frames = [*frames[:4], bytes(damaged), *([] if damage == "cut" else frames[5:])]
    upstream.reply = Reply(events=frames, content_type="application/vnd.amazon.eventstream")
    received = b""
    with (
        client(enforce) as http,
        http.stream("POST", f"{upstream.url}{STREAM_ROUTE}", json=MESSAGES) as answer,
    ):
        try:
            for piece in answer.iter_bytes():
                received += piece
        except httpx.HTTPError:
            pass
    assert b"delete_customer" not in received
    found = [
        finding
        for finding in enforce.wait_for_records(1)[0]["findings"]
        if finding["rule"] == "inspection.binary_answer"
    ]
    assert found and found[0]["enforced"]


NOVA_STREAM_ROUTE = "/model/us.amazon.nova-pro-v1%3A0/invoke-with-response-stream"


def nova_stream(text: str, call: str) -> list[bytes]:
    """Amazon Nova's own stream as Bedrock frames it: each event an object keyed by its name in a chunk,
    the last with Bedrock's invocation metrics beside it."""
    deltas = [{"delta": {"text": text[at : at + 4]}, "contentBlockIndex": 0} for at in range(0, len(text), 4)]
    start = {"start": {"toolUse": {"toolUseId": "tooluse_1", "name": call}}, "contentBlockIndex": 1}
    arguments = {"delta": {"toolUse": {"input": '{"id": 42}'}}, "contentBlockIndex": 1}
    events: list[dict[str, Any]] = [
        {"messageStart": {"role": "assistant"}},
        *({"contentBlockDelta": delta} for delta in deltas),
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {"contentBlockStart": start},
        {"contentBlockDelta": arguments},
        {"contentBlockStop": {"contentBlockIndex": 1}},
        {"messageStop": {"stopReason": "tool_use"}},
        {
            "metadata": {"usage": {"inputTokens": 5, "outputTokens": 9}},
            "amazon-bedrock-invocationMetrics": {"inputTokenCount": 5, "outputTokenCount": 9},
        },
    ]
    return [event_stream_frame(event) for event in events]


def test_nova_streamed_on_bedrock_is_read_and_its_tool_call_withheld(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    """Amazon Nova's own stream on ``invoke-with-response-stream`` is read as ``converse-stream``'s
    events: the destructive call is withheld for its notice, a key in the text redacted, and boto3 reads
    every chunk framed again, the invocation metrics kept."""
    upstream.reply = Reply(
        events=nova_stream(f"On it, key {AWS_KEY}.", "delete_customer"),
        content_type="application/vnd.amazon.eventstream",
    )
    body = {"schemaVersion": "messages-v1", "messages": [{"role": "user", "content": [{"text": "hi"}]}]}
    sdk = bedrock_client(enforce, upstream)
    answer = sdk.invoke_model_with_response_stream(modelId="us.amazon.nova-pro-v1:0", body=json.dumps(body))
    events = [json.loads(event["chunk"]["bytes"]) for event in answer["body"]]
    assert upstream.received[-1].path == NOVA_STREAM_ROUTE
    assert not any("contentBlockStart" in event for event in events)
    text = "".join(
        event["contentBlockDelta"]["delta"].get("text", "")
        for event in events
        if "contentBlockDelta" in event
    )
    assert text.startswith("On it, key [REDACTED:aws-access-key-id].") and "X-Approval-Id" in text
    assert [event["messageStop"]["stopReason"] for event in events if "messageStop" in event] == ["end_turn"]
    assert events[-1]["amazon-bedrock-invocationMetrics"] == {"inputTokenCount": 5, "outputTokenCount": 9}
    assert "tool-delete" in rules(enforce, 1)


def test_a_nova_chunk_naming_no_one_event_is_refused(enforce: Proxy, upstream: FakeUpstream) -> None:
    """A chunk holding two events, which no reader here places, is refused where enforced, its tool call
    never reaching the agent."""
    start = {"start": {"toolUse": {"toolUseId": "t", "name": "delete_customer"}}, "contentBlockIndex": 1}
    upstream.reply = Reply(
        body=event_stream_frame({"contentBlockStart": start, "messageStop": {"stopReason": "tool_use"}}),
        content_type="application/vnd.amazon.eventstream",
    )
    received = b""
    body = {"schemaVersion": "messages-v1", "messages": []}
    with (
        client(enforce) as http,
        http.stream("POST", f"{upstream.url}{NOVA_STREAM_ROUTE}", json=body) as answer,
        contextlib.suppress(httpx.HTTPError),
    ):
        for piece in answer.iter_raw():
            received += piece
    assert b"delete_customer" not in received
    assert "inspection.binary_answer" in rules(enforce, 1)
