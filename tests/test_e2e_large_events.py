"""End to end: an event of an answer's stream longer than the 1 MiB a filtering session holds. Where
nothing filters the stream (observe mode) it is read whole up to the inspection cap and its findings
recorded, the stream passing as sent; where filters rewrite it (enforce mode) it is not sent, on the
record; past the inspection cap it passes unread in observe mode, on the record."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import Proxy
from tests.test_e2e_inspect import ask, chat_stream_text, last_record, openai_client
from tests.upstream import FakeUpstream, Reply, sse

AWS_KEY = "AKIAQWERTY234567ABCD"
PADDING = "lorem ipsum dolor sit amet " * ((2 << 20) // 27)


def _delta(content: str) -> bytes:
    return sse(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1_732_000_000,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
        }
    )


EVENTS = [_delta("Before. "), _delta(f"{PADDING} key {AWS_KEY} end. "), _delta("After."), b"data: [DONE]\n\n"]


def _secret_findings(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in record["findings"] if f["rule"].startswith("aws")]


def _over_cap(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in record["findings"] if f["rule"] == "inspection.decoded_over_cap"]


def _stream(proxy: Proxy, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca_cert))
    upstream.reply = Reply(events=EVENTS)
    stream = openai_client(upstream).chat.completions.create(model="m", messages=ask(), stream=True)
    return chat_stream_text(stream)


def test_an_event_over_a_mebibyte_is_read_whole_where_observed(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = start_proxy(mode="observe")
    text = _stream(proxy, upstream, monkeypatch)
    assert text == f"Before. {PADDING} key {AWS_KEY} end. After."
    record = last_record(proxy)
    found = _secret_findings(record)
    assert found and not any(f["enforced"] for f in found)
    assert _over_cap(record) == [] and AWS_KEY not in json.dumps(record)


def test_an_event_over_the_inspection_cap_passes_unread_on_the_record_where_observed(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = start_proxy(mode="observe", extra="inspection: {max_body_bytes: 1MiB}\n")
    assert _stream(proxy, upstream, monkeypatch).endswith(f"{AWS_KEY} end. After.")
    record = last_record(proxy)
    (unread,) = _over_cap(record)
    assert not unread["enforced"] and "passed through unread" in unread["signal"]


def test_an_event_over_a_mebibyte_is_not_sent_where_filters_rewrite_the_stream(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = start_proxy(mode="enforce")
    assert _stream(proxy, upstream, monkeypatch) == "Before. After."
    record = last_record(proxy)
    (dropped,) = _over_cap(record)
    assert dropped["enforced"] and "dropped unread" in dropped["signal"]
    assert record["decision"] in ("redacted", "blocked")
