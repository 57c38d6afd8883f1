"""End to end: official SDK clients through a real egressguard process to a fake upstream over TLS."""

from __future__ import annotations

import itertools
import json
from typing import Any

import anthropic
import openai

from proxy.audit.log import record_hash
from tests.harness import AGENT, AGENT_TOKEN, Proxy, proxy_authorization
from tests.upstream import FakeUpstream, Reply

EVENT_FIELDS = {
    "type",
    "ts",
    "agent_id",
    "user_id",
    "session_id",
    "purpose",
    "consent_id",
    "approval_id",
    "egress_host",
    "method",
    "path",
    "status",
    "dialect",
    "model",
    "latency_ms",
    "tokens_in",
    "tokens_out",
    "tools",
    "findings",
    "decision",
    "mode",
    "input_sha256",
    "output_sha256",
    "prev_hash",
    "hash",
}
PROMPT = "Summarise ticket 4411 about the refund for order 99-1234, please."


def openai_client(upstream: FakeUpstream, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{upstream.url}/v1", api_key="sk-test", max_retries=0, default_headers=headers or None
    )


def test_openai_chat_through_proxy_returns_upstream_answer(agent_env: Proxy, upstream: FakeUpstream) -> None:
    """The OpenAI SDK's chat.completions.create through egressguard returns the upstream's answer."""
    completion = openai_client(upstream).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}]
    )
    assert completion.choices[0].message.content == "Hello from the upstream model."
    assert upstream.received[-1].json()["messages"][0]["content"] == PROMPT


def test_anthropic_messages_through_proxy(agent_env: Proxy, upstream: FakeUpstream) -> None:
    """The Anthropic SDK's messages.create through egressguard returns the upstream's answer."""
    upstream.reply = Reply(text="Bonjour.", model="claude-test-model")
    client = anthropic.Anthropic(base_url=upstream.url, api_key="sk-ant-test", max_retries=0)
    message = client.messages.create(
        model="claude-test-model", max_tokens=64, messages=[{"role": "user", "content": PROMPT}]
    )
    assert message.content[0].text == "Bonjour."  # type: ignore[union-attr]


def test_streamed_chat_arrives_whole(agent_env: Proxy, upstream: FakeUpstream) -> None:
    """A streamed chat completion arrives through the proxy with every delta."""
    upstream.reply = Reply(text="one two three four five", piece_size=3)
    stream = openai_client(upstream).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "one two three four five"


def test_connect_without_credentials_gets_407(proxy: Proxy, upstream: FakeUpstream) -> None:
    """egressguard is never an open proxy: CONNECT without credentials is answered 407."""
    status, head = proxy.raw(
        f"CONNECT localhost:{upstream.port} HTTP/1.1\r\nHost: localhost:{upstream.port}\r\n\r\n".encode(),
    )
    assert status == 407
    assert b"proxy-authenticate: basic" in head.lower()
    assert upstream.received == []


def test_connect_with_wrong_token_gets_407(proxy: Proxy, upstream: FakeUpstream) -> None:
    """A known agent with the wrong token is refused like an unknown one."""
    for agent, token in ((AGENT, "wrong-token"), ("nobody", AGENT_TOKEN)):
        status, _ = proxy.raw(
            b"CONNECT localhost:%d HTTP/1.1\r\nHost: localhost:%d\r\n"
            b"%s\r\n" % (upstream.port, upstream.port, proxy_authorization(agent, token)),
        )
        assert status == 407


def test_plain_http_without_credentials_gets_407(proxy: Proxy) -> None:
    """Plain-HTTP proxying needs credentials too."""
    status, _ = proxy.raw(b"GET http://localhost:9/ HTTP/1.1\r\nHost: localhost:9\r\n\r\n")
    assert status == 407


def test_connect_with_valid_token_opens_tunnel(proxy: Proxy, upstream: FakeUpstream) -> None:
    """The right agent and token open a tunnel (200 Connection established)."""
    status, _ = proxy.raw(
        b"CONNECT localhost:%d HTTP/1.1\r\nHost: localhost:%d\r\n"
        b"%s\r\n" % (upstream.port, upstream.port, proxy_authorization()),
    )
    assert status == 200


def test_openai_sdk_without_token_raises(proxy: Proxy, upstream: FakeUpstream, monkeypatch: Any) -> None:
    """An agent configured with a wrong token gets a connection error from its SDK, not an answer."""
    monkeypatch.setenv("HTTPS_PROXY", proxy.url(token="nope"))
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca_cert))
    try:
        openai_client(upstream).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    except openai.APIConnectionError:
        pass
    else:
        raise AssertionError("the request went through without valid proxy credentials")
    assert upstream.received == []


def test_audit_event_has_every_field_and_no_prompt_text(agent_env: Proxy, upstream: FakeUpstream) -> None:
    """One agent.turn event per exchange, with every contract field, ids from headers, and no raw text."""
    client = openai_client(
        upstream,
        **{"X-User-Id": "u-42", "X-Purpose": "support", "X-Consent-Id": "c-7", "X-Session-Id": "s-1"},
    )
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}])
    (record,) = agent_env.wait_for_records(1)
    assert record.keys() >= EVENT_FIELDS
    assert record["agent_id"] == AGENT
    assert (record["user_id"], record["purpose"], record["consent_id"], record["session_id"]) == (
        "u-42",
        "support",
        "c-7",
        "s-1",
    )
    assert record["egress_host"] == "localhost"
    assert (record["method"], record["path"], record["status"]) == ("POST", "/v1/chat/completions", 200)
    assert record["decision"] == "allowed" and record["mode"] == "observe"
    assert len(record["input_sha256"]) == 64 and len(record["output_sha256"]) == 64
    audit_text = "".join(path.read_text() for path in (agent_env.data_dir / "audit").glob("*"))
    assert "refund for order" not in audit_text
    assert "Hello from the upstream" not in audit_text
    assert AGENT_TOKEN not in agent_env.output() + audit_text


def test_context_headers_are_stripped_before_upstream(agent_env: Proxy, upstream: FakeUpstream) -> None:
    """X-User-Id and friends are read by the proxy and never forwarded to the model provider."""
    openai_client(upstream, **{"X-User-Id": "u-42", "X-Approval-Id": "a-1"}).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    forwarded = {name.lower() for name in upstream.received[-1].headers}
    assert "x-user-id" not in forwarded and "x-approval-id" not in forwarded
    assert "proxy-authorization" not in forwarded


def test_audit_chain_links_every_record(agent_env: Proxy, upstream: FakeUpstream) -> None:
    """Each record's prev_hash is the hash of the one before, and each hash covers its record."""
    client = openai_client(upstream)
    for _ in range(3):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    records = agent_env.wait_for_records(3)
    assert len(records) == 3
    for before, after in itertools.pairwise(records):
        assert after["prev_hash"] == before["hash"]
    assert all(record_hash(record) == record["hash"] for record in records)


def test_canonical_log_line_per_flow(agent_env: Proxy, upstream: FakeUpstream) -> None:
    """The proxy logs one structured JSON line per flow with agent, host, decision and latency."""
    openai_client(upstream).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    agent_env.wait_for_records(1)
    lines = [json.loads(line) for line in agent_env.output().splitlines() if line.startswith("{")]
    (line,) = [entry for entry in lines if entry.get("event") == "agent.turn"]
    assert line["agent"] == AGENT and line["host"] == "localhost" and line["decision"] == "allowed"
    assert isinstance(line["latency_ms"], float)


def test_tls_to_upstream_is_verified(
    start_proxy: Any, upstream: FakeUpstream, monkeypatch: Any, tmp_path: Any
) -> None:
    """A proxy that does not trust the upstream's CA refuses its certificate: verification is on."""
    from proxy.commands.localca import make_pki

    proxy = start_proxy(upstream_ca=make_pki(tmp_path / "other-pki").ca_cert)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca_cert))
    try:
        openai_client(upstream).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    except (openai.APIStatusError, openai.APIConnectionError):
        pass
    else:
        raise AssertionError("an upstream with an untrusted certificate was accepted")
    assert upstream.received == []


def test_one_client_connection_carries_many_requests(agent_env: Proxy, upstream: FakeUpstream) -> None:
    """An agent that keeps its connection open gets every answer: the upstream connection, pinned to the
    address that was checked, is reused by the tunnel's next request instead of piling up new ones."""
    client = openai.OpenAI(base_url=f"{upstream.url}/v1", api_key="sk-test", max_retries=0, timeout=20)
    for turn in range(12):
        completion = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"{PROMPT} ({turn})"}]
        )
        assert completion.choices[0].message.content == "Hello from the upstream model."
    assert len(upstream.received) == 12
