"""End to end, with the official SDKs through a real egressguard: a key in base64 whose decoding starts as
binary (two bytes of a file's header before it) in a field of a Chat Completions request, or in the text
chunk of a PNG sent as an image (a Chat or Responses ``data:`` URL, an Anthropic image block, a Gemini
``inlineData`` part), is found: kept from leaving in enforce mode, recorded in observe mode."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest
from google import genai
from google.genai import types

from tests.harness import Proxy
from tests.test_e2e_injection import AWS_KEY
from tests.test_e2e_inspect import _agent, last_record, openai_client, rules
from tests.test_unmask import _png
from tests.upstream import FakeUpstream

BLOB = base64.b64encode(b"\xfb\xff deploy key " + AWS_KEY.encode()).decode()


def _send(upstream: FakeUpstream) -> str:
    ask: list[dict[str, str]] = [{"role": "user", "content": "store this"}]
    openai_client(upstream).chat.completions.create(model="m", messages=ask, extra_body={"blob": BLOB})  # type: ignore[arg-type]
    sent = json.loads(upstream.received[-1].body)["blob"]
    assert isinstance(sent, str)
    return sent


def test_binary_prefixed_base64_key_is_redacted_in_enforce_mode(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = _agent(start_proxy(mode="enforce", extra="redaction: {requests: true}\n"), monkeypatch)
    sent = _send(upstream)
    assert BLOB not in sent
    assert AWS_KEY.encode() not in base64.b64decode(sent + "==", validate=False)
    assert "aws-access-key-id" in rules(last_record(proxy))


def test_binary_prefixed_base64_key_is_recorded_in_observe_mode(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = _agent(start_proxy(mode="observe"), monkeypatch)
    assert _send(upstream) == BLOB
    assert "aws-access-key-id" in rules(last_record(proxy))


def test_key_in_a_png_text_chunk_of_an_image_data_url_does_not_leave(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = _agent(start_proxy(mode="enforce", extra="redaction: {requests: true}\n"), monkeypatch)
    url = (
        "data:image/png;base64,"
        + base64.b64encode(_png(b"Comment\x00deploy key " + AWS_KEY.encode())).decode()
    )
    content: Any = [{"type": "text", "text": "describe"}, {"type": "image_url", "image_url": {"url": url}}]
    with contextlib.suppress(openai.APIStatusError):  # refused: nothing left
        openai_client(upstream).chat.completions.create(
            model="m", messages=[{"role": "user", "content": content}]
        )
    for request in upstream.received:
        assert AWS_KEY.encode() not in request.body
        assert url.encode() not in request.body
    assert "aws-access-key-id" in rules(last_record(proxy))


def test_png_with_ordinary_metadata_passes_untouched(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    _agent(start_proxy(mode="enforce", extra="redaction: {requests: true}\n"), monkeypatch)
    url = "data:image/png;base64," + base64.b64encode(_png(b"Software\x00Adobe ImageReady CC 2019")).decode()
    content: Any = [{"type": "text", "text": "describe"}, {"type": "image_url", "image_url": {"url": url}}]
    openai_client(upstream).chat.completions.create(
        model="m", messages=[{"role": "user", "content": content}]
    )
    assert json.loads(upstream.received[-1].body)["messages"][0]["content"][1]["image_url"]["url"] == url


PNG = _png(b"Comment\x00deploy key " + AWS_KEY.encode())
PNG_BASE64 = base64.b64encode(PNG).decode()


def _send_image(api: str, upstream: FakeUpstream) -> None:
    """A prompt with ``PNG`` as an image, sent by ``api``'s official SDK."""
    if api == "anthropic":
        image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_BASE64}}
        client = anthropic.Anthropic(base_url=upstream.url, api_key="sk-ant-test", max_retries=0)
        content: Any = [image, {"type": "text", "text": "describe"}]
        client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": content}])
    elif api == "gemini":
        gemini = genai.Client(api_key="test-key", http_options=types.HttpOptions(base_url=upstream.url))
        image_part = types.Part.from_bytes(data=PNG, mime_type="image/png")
        gemini.models.generate_content(model="gemini-2.5-flash", contents=[image_part, "describe"])
    else:
        url = f"data:image/png;base64,{PNG_BASE64}"
        parts: Any = [{"type": "input_image", "image_url": url}, {"type": "input_text", "text": "describe"}]
        openai_client(upstream).responses.create(model="m", input=[{"role": "user", "content": parts}])


@pytest.mark.parametrize("api", ["anthropic", "gemini", "responses"])
def test_key_in_a_png_text_chunk_of_an_image_does_not_leave(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, api: str
) -> None:
    proxy = _agent(start_proxy(mode="enforce", extra="redaction: {requests: true}\n"), monkeypatch)
    with contextlib.suppress(openai.APIStatusError, anthropic.APIStatusError, genai.errors.APIError):
        _send_image(api, upstream)
    for request in upstream.received:
        assert AWS_KEY.encode() not in request.body and PNG_BASE64.encode() not in request.body
    assert "aws-access-key-id" in rules(last_record(proxy))
