"""End to end: JSON nested deep enough to parse but not to walk made a detector fail, and a failed
detector let the exchange through uninspected: a key at the bottom reached the upstream, or the agent.
Where the policy enforces, every depth is now redacted or refused."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from proxy.commands.localca import UpstreamPKI
from tests.harness import Proxy
from tests.test_e2e_rawstreams import open_tunnel, read_until_quiet
from tests.upstream import FakeUpstream

AWS_KEY = "AKIAQWERTY234567ABCD"
GITHUB_TOKEN = "ghp_FWCnNkCLWNb6VBJGUkHrAEj9p3saO0ln0YoP"
DEPTHS = [100, 900, 980, 1000, 1100, 1500, 3000]
"""Around the depth where Python's JSON reader still reads and a recursive walk of it runs out."""


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, upstream_pki: UpstreamPKI) -> Iterator[Proxy]:
    started = Proxy(
        tmp_path_factory.mktemp("deep-json"),
        upstream_pki.ca_cert,
        mode="enforce",
        extra="redaction: {requests: true}\n",
    )
    yield started
    started.stop()


def nested(depth: int, secret: str) -> str:
    return "[" * depth + json.dumps({"k": f"key {secret}"}) + "]" * depth


def post(proxy: Proxy, upstream: FakeUpstream, body: str) -> bytes:
    with open_tunnel(proxy, upstream.port, tls=True) as connection:
        connection.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost:%d\r\nContent-Type: application/json\r\n"
            b"X-Purpose: test\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (upstream.port, len(body), body.encode())
        )
        return read_until_quiet(connection, 5.0)


@pytest.mark.parametrize("depth", DEPTHS)
def test_a_key_deep_in_a_request_does_not_leave(proxy: Proxy, upstream: FakeUpstream, depth: int) -> None:
    body = (
        '{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "x": '
        + nested(depth, AWS_KEY)
        + "}"
    )
    answer = post(proxy, upstream, body)
    assert all(AWS_KEY.encode() not in received.body for received in upstream.received)
    assert answer.startswith((b"HTTP/1.1 200", b"HTTP/1.1 400", b"HTTP/1.1 403"))


@pytest.mark.parametrize("depth", DEPTHS)
def test_a_key_deep_in_an_answer_does_not_reach_the_agent(
    proxy: Proxy, upstream: FakeUpstream, depth: int
) -> None:
    upstream.reply.body = (
        '{"id": "c", "object": "chat.completion", "choices": [{"index": 0, "message": '
        '{"role": "assistant", "content": "hi"}}], "x": ' + nested(depth, GITHUB_TOKEN) + "}"
    ).encode()
    answer = post(proxy, upstream, '{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}')
    assert GITHUB_TOKEN.encode() not in answer
    assert answer.startswith((b"HTTP/1.1 200", b"HTTP/1.1 502"))
