"""End to end: a request answered before its body was read (a 407, a body over the inspection cap, a
refused destination) gets its answer at once, whatever the size of the body still on its way, and the
proxy keeps serving. A body of no announced length that grows past the cap is refused where enforced
before any byte of it leaves, and relayed and recorded where observed."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest

from proxy.control.freeze import block_agent
from proxy.state.redis_store import RedisSettings, RedisStateStore
from tests.harness import AGENT, Proxy
from tests.redis_server import RedisServer
from tests.test_e2e_bodies import assert_still_serving, client_for, over_cap_findings, sdk
from tests.test_e2e_fronting import tunnel
from tests.test_e2e_shared_state import state_yaml
from tests.upstream import FakeUpstream

CAP = 64 << 10
OVER_CAP = f"inspection: {{max_body_bytes: {CAP}}}\n"
PROMPT_SIZES = [CAP + 1, 8 << 20, 64 << 20]
"""Just over the cap, a body the kernel's buffers cannot hold, and one a client takes a while to send."""
PROMPT_TIME = 3.0
"""Seconds an answer may take, the whole upload of the largest body included where it is drained."""


@pytest.fixture(scope="module")
def plain_upstream_server() -> Iterator[FakeUpstream]:
    server = FakeUpstream(None)
    yield server
    server.close()


@pytest.fixture
def plain_upstream(plain_upstream_server: FakeUpstream) -> FakeUpstream:
    """The fake upstream over plain HTTP: requests to it go through the proxy in absolute form, each
    one authenticated on its own, so a missing token is answered with the body on its way."""
    plain_upstream_server.received.clear()
    return plain_upstream_server


def prompt_body(size: int) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * size}]}).encode()


def chunked(body: bytes) -> Iterator[bytes]:
    return (body[start : start + (64 << 10)] for start in range(0, len(body), 64 << 10))


def timed_post(client: httpx.Client, url: str, body: bytes, framing: str) -> tuple[httpx.Response, float]:
    """POST ``body`` with its length announced, or chunked (a generator, which httpx sends chunked)."""
    content = body if framing == "content-length" else chunked(body)
    started = time.monotonic()
    answer = client.post(url, content=content, headers={"content-type": "application/json"})
    return answer, time.monotonic() - started


@pytest.mark.parametrize("size", PROMPT_SIZES)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_missing_token_is_answered_407_at_once_whatever_the_body(
    start_proxy: Callable[..., Proxy], plain_upstream: FakeUpstream, size: int, framing: str
) -> None:
    """An unauthenticated upload over the cap gets its 407 within seconds, not the client's timeout;
    nothing reaches the upstream and the proxy serves the next request."""
    proxy = start_proxy(extra=OVER_CAP)
    body = prompt_body(size)
    with httpx.Client(proxy=f"http://127.0.0.1:{proxy.port}", timeout=30) as client:
        answer, took = timed_post(client, f"{plain_upstream.url}/v1/chat/completions", body, framing)
    assert answer.status_code == 407
    assert took < PROMPT_TIME
    assert plain_upstream.received == []
    with httpx.Client(proxy=proxy.url(), timeout=30) as client:
        next_answer = client.post(f"{plain_upstream.url}/v1/chat/completions", json={"model": "m"})
    assert next_answer.status_code == 200


def test_the_openai_sdk_gets_its_407_without_a_token(
    start_proxy: Callable[..., Proxy], plain_upstream: FakeUpstream
) -> None:
    """The official SDK, pointed at the proxy with no credentials, raises a readable 407 at once."""
    proxy = start_proxy(extra=OVER_CAP)
    client = openai.OpenAI(
        base_url=f"{plain_upstream.url}/v1",
        api_key="sk-test",
        max_retries=0,
        http_client=openai.DefaultHttpxClient(proxy=f"http://127.0.0.1:{proxy.port}", timeout=30),
    )
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x" * (8 << 20)}])
    assert raised.value.status_code == 407
    assert time.monotonic() - started < PROMPT_TIME


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_an_over_cap_prompt_is_refused_413_where_enforced(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, framing: str
) -> None:
    """Enforce mode: a prompt no detector can read is answered 413 in the API's error shape, before any
    byte of it reaches the upstream, with or without an announced length; the record says it was enforced."""
    proxy = start_proxy(mode="enforce", extra=OVER_CAP)
    body = prompt_body(8 << 20)
    with client_for(proxy) as client:
        answer, took = timed_post(client, f"{upstream.url}/v1/chat/completions", body, framing)
    assert answer.status_code == 413
    assert "inspection.decoded_over_cap" in answer.json()["error"]["message"]
    assert took < PROMPT_TIME
    assert upstream.received == []
    (record,) = proxy.wait_for_records(1)
    assert [finding["enforced"] for finding in over_cap_findings(record)] == [True]
    assert record["decision"] == "blocked"
    assert record["status"] == 413
    assert_still_serving(proxy, upstream)


def test_the_openai_sdk_raises_a_readable_413_for_an_over_cap_prompt(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """Through a TLS tunnel, with the official SDK: the refusal is an APIStatusError naming the rule."""
    proxy = start_proxy(mode="enforce", extra=OVER_CAP)
    with pytest.raises(openai.APIStatusError) as raised:
        sdk(proxy, upstream).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x" * (8 << 20)}]
        )
    assert raised.value.status_code == 413
    assert "inspection.decoded_over_cap" in raised.value.message
    assert upstream.received == []


def test_a_chunked_prompt_growing_past_the_cap_is_relayed_and_recorded_where_observed(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """Observe mode changes no traffic: the body is relayed whole; the record says it was not inspected."""
    proxy = start_proxy(mode="observe", extra=OVER_CAP)
    body = prompt_body(CAP * 4)
    with client_for(proxy) as client:
        answer, _ = timed_post(client, f"{upstream.url}/v1/chat/completions", body, "chunked")
    assert answer.status_code == 200
    assert upstream.received[-1].body == body
    (record,) = proxy.wait_for_records(1)
    assert [finding["enforced"] for finding in over_cap_findings(record)] == [False]
    assert record["decision"] == "allowed"


def test_a_refused_destination_inside_a_tunnel_is_answered_at_once(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """A request fronting another host, sent with a body over the cap, gets its refusal and a closed
    connection while the body is still on its way."""
    proxy = start_proxy(mode="enforce", extra=OVER_CAP)
    size = 64 << 20
    with tunnel(proxy, upstream.port) as tls:
        tls.settimeout(PROMPT_TIME)
        tls.sendall(
            f"POST {upstream.url}/v1/chat/completions HTTP/1.1\r\nHost: localhost:{upstream.port}\r\n"
            f"Host: evil.example\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        answer = b""
        with pytest.raises((ssl.SSLError, ConnectionError)):
            for _ in range(size >> 16):
                tls.sendall(b"x" * (1 << 16))
        while chunk := tls.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 403 ") or answer.startswith(b"HTTP/1.1 400 ")
    assert upstream.received == []
    assert_still_serving(proxy, upstream)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_blocked_agent_is_refused_before_its_large_body_leaves(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, redis_server: RedisServer, framing: str
) -> None:
    """A blocked agent is refused in every mode: observe mode relays a body over the cap as it arrives,
    so the refusal is decided on the headers (or when a chunked body grows past the cap) and answered at
    once, before any byte of the body reaches the upstream."""
    proxy = start_proxy(mode="observe", extra=OVER_CAP + state_yaml(redis_server))
    block_agent(RedisStateStore(RedisSettings(url=redis_server.url, namespace="e2e")), AGENT, 300, "test")
    with client_for(proxy) as client:
        answer, took = timed_post(
            client, f"{upstream.url}/v1/chat/completions", prompt_body(8 << 20), framing
        )
    assert answer.status_code == 403
    assert "frozen" in answer.text or "blocked" in answer.text
    assert took < PROMPT_TIME
    assert upstream.received == []
