"""Redaction evasion, end to end: every crafted answer in ``tests/evasion_cases.py`` goes from the fake
upstream through a real egressguard in enforce mode to the official SDK of its API, and the secret must
not reach the client in any form the client decodes (parsed objects, raw bodies, events, headers, JSON
inside strings, byte lists), nor as the text of two channels read one after the other. The audit
records the secret's rule either way."""

from __future__ import annotations

import contextlib
import json
import os
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from proxy.commands.localca import UpstreamPKI
from tests.evasion_cases import CASES, Case
from tests.harness import CLIENT_TIMEOUT_S, Proxy
from tests.upstream import FakeUpstream, Reply

HEADERS = {"X-User-Id": "u-1", "X-Purpose": "support", "X-Consent-Id": "c-1"}
FRAGMENT = 8
"""No piece of a secret this long may reach the client, unless the case says the secret is only caught
once its last part arrives (split across fields no dialect models, which cannot be held back)."""


@pytest.fixture(scope="module")
def enforcing(tmp_path_factory: pytest.TempPathFactory, upstream_pki: UpstreamPKI) -> Iterator[Proxy]:
    proxy = Proxy(tmp_path_factory.mktemp("evasion"), upstream_pki.ca_cert, mode="enforce")
    yield proxy
    proxy.stop()


@pytest.fixture
def agent(enforcing: Proxy, monkeypatch: pytest.MonkeyPatch) -> Proxy:
    monkeypatch.setenv("HTTPS_PROXY", enforcing.url())
    monkeypatch.setenv("SSL_CERT_FILE", str(enforcing.ca_cert))
    return enforcing


def decoded(value: Any) -> Iterator[str]:
    """Every string a client can get out of a decoded value: keys, values, JSON inside strings (as its
    own ``json.loads`` reads it), and lists of byte values as the text they spell."""
    if isinstance(value, str):
        yield value
        if value.strip()[:1] in ("{", "[", '"'):
            try:
                inner = json.loads(value)
            except ValueError:
                return
            yield from decoded(inner)
    elif isinstance(value, dict):
        for key, child in value.items():
            yield str(key)
            yield from decoded(child)
    elif isinstance(value, list):
        if value and all(type(item) is int and 0 <= item < 256 for item in value):
            yield bytes(value).decode("utf-8", "replace")
            return
        for child in value:
            yield from decoded(child)


def dump(model: Any) -> Any:
    return model.model_dump(mode="json", warnings=False) if hasattr(model, "model_dump") else model


def raw_json(body: bytes) -> Any:
    return json.loads(body.decode("utf-8", "replace"))


def received_json(raw: Any) -> list[Any]:
    """A JSON answer as a lenient client decodes it (bytes that are not UTF-8 replaced), its headers, and
    what the SDK parsed, when it can (a body with such bytes makes some SDKs raise)."""
    received = [raw_json(raw.http_response.content), dict(raw.http_response.headers)]
    with contextlib.suppress(ValueError):
        received.append(dump(raw.parse()))
    return received


def openai_client(upstream: FakeUpstream) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{upstream.url}/v1", api_key="sk-test", max_retries=0, default_headers=HEADERS
    )


def chat(upstream: FakeUpstream, case: Case) -> list[Any]:
    client = openai_client(upstream)
    messages: Any = [{"role": "user", "content": "hello"}]
    if case.stream:
        return [
            dump(chunk)
            for chunk in client.chat.completions.create(model="gpt-4o", messages=messages, stream=True)
        ]
    return received_json(client.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages))


def responses(upstream: FakeUpstream, case: Case) -> list[Any]:
    client = openai_client(upstream)
    if case.stream:
        return [dump(event) for event in client.responses.create(model="gpt-4o", input="hello", stream=True)]
    return received_json(client.responses.with_raw_response.create(model="gpt-4o", input="hello"))


def messages(upstream: FakeUpstream, case: Case) -> list[Any]:
    client = anthropic.Anthropic(
        base_url=upstream.url, api_key="sk-ant-test", max_retries=0, default_headers=HEADERS
    )
    asked: Any = [{"role": "user", "content": "hello"}]
    if case.stream:
        raw = client.messages.with_raw_response.create(
            model="claude-sonnet-4-5", max_tokens=64, messages=asked, stream=True
        )
        return [dict(raw.http_response.headers), *(dump(event) for event in raw.parse())]
    return received_json(
        client.messages.with_raw_response.create(model="claude-sonnet-4-5", max_tokens=64, messages=asked)
    )


def gemini(upstream: FakeUpstream, case: Case) -> list[Any]:
    from google import genai
    from google.genai import types

    client = genai.Client(
        api_key="test-key", http_options=types.HttpOptions(base_url=upstream.url, headers=HEADERS)
    )
    if case.stream:
        return [
            dump(chunk)
            for chunk in client.models.generate_content_stream(model="gemini-2.5-flash", contents="hello")
        ]
    return [dump(client.models.generate_content(model="gemini-2.5-flash", contents="hello"))]


def mcp(upstream: FakeUpstream, case: Case) -> list[Any]:
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "lookup", "arguments": {}},
    }
    accept = "application/json, text/event-stream"
    trusted = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    with httpx.Client(
        verify=trusted, trust_env=True, headers={**HEADERS, "accept": accept}, timeout=CLIENT_TIMEOUT_S
    ) as client:
        response = client.post(f"{upstream.url}/mcp", json=request)
    if case.stream:
        return [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
    return [response.json()]


CLIENTS: dict[str, Callable[[FakeUpstream, Case], list[Any]]] = {
    "openai_chat": chat,
    "openai_responses": responses,
    "anthropic": messages,
    "gemini": gemini,
    "mcp": mcp,
}


@pytest.fixture(scope="module")
def turn_count() -> list[int]:
    """Turns made through the module's proxy so far: each case makes exactly one."""
    return [0]


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{case.dialect}-{'sse' if case.stream else 'json'}-{case.id}" for case in CASES]
)
def test_secret_never_reaches_the_client(
    agent: Proxy, upstream: FakeUpstream, turn_count: list[int], case: Case
) -> None:
    """Enforce mode: the secret is not in anything the SDK decodes, whichever channel or encoding carried
    it, and the audit records it."""
    upstream.reply = Reply(body=case.body, events=case.events, headers=case.headers)
    turn_count[0] += 1
    try:
        received = CLIENTS[case.dialect](upstream, case)
    except (
        openai.APIError,
        anthropic.APIError,
        ValueError,
    ) as error:  # what the SDK raised is what it decoded
        received = [str(error), getattr(error, "body", None)]
    strings = [text for value in received for text in decoded(value)]
    assert not [text for text in strings if case.secret in text]
    joined = "".join(strings)
    assert case.secret not in joined
    if case.whole:
        pieces = {case.secret[start : start + FRAGMENT] for start in range(len(case.secret) - FRAGMENT + 1)}
        assert not [piece for piece in pieces if piece in joined]
    record = agent.wait_for_records(turn_count[0])[turn_count[0] - 1]
    assert record["findings"], record
    assert all(case.secret not in json.dumps(finding) for finding in record["findings"])


def test_cases_cover_every_dialect_in_json_and_sse() -> None:
    """The suite has both framings for each dialect it knows."""
    covered = {(case.dialect, case.stream) for case in CASES}
    assert covered >= {(dialect, stream) for dialect in CLIENTS for stream in (False, True)}


def test_proxy_still_serves_after_the_suite(agent: Proxy, upstream: FakeUpstream) -> None:
    """No crafted answer left the proxy unable to serve the next ordinary request."""
    upstream.reply = Reply(text="All good.")
    reply = openai_client(upstream).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "All good."
