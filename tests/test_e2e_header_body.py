"""End to end: a response's headers and its body are scanned apart, so neither hides or changes what the
other holds, JSON and streamed alike."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable

import httpx
import openai
import pytest
import requests

from tests.harness import CLIENT_TIMEOUT_S, Proxy
from tests.upstream import FakeUpstream, Reply

TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
REDACTED = "[REDACTED:github-pat]"


def places(record: dict[str, object]) -> list[tuple[str, str, bool]]:
    findings = record["findings"]
    assert isinstance(findings, list)
    return sorted(
        (f["rule"], "headers" if f["where"].startswith("headers ") else "body", f["enforced"])
        for f in findings
        if f["rule"] == "github-pat"
    )


@pytest.mark.parametrize("stream", [False, True])
def test_a_token_in_a_response_header_and_the_completion_is_redacted_and_recorded_in_both(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, stream: bool
) -> None:
    """The SDK receives the header and the completion redacted; the record has a finding at each place,
    each enforced, where the header's finding used to stand for the body's."""
    proxy = start_proxy(mode="enforce")
    upstream.reply = Reply(text=f"your token is {TOKEN} ok", headers={"X-Note": TOKEN})
    client = proxy.openai_client(upstream.url)
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    if stream:
        with client.chat.completions.with_streaming_response.create(
            model="m", messages=messages, stream=True
        ) as response:
            header = response.headers["x-note"]
            text = "".join(
                chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices
            )
    else:
        raw = client.chat.completions.with_raw_response.create(model="m", messages=messages)
        header = raw.headers["x-note"]
        text = raw.parse().choices[0].message.content or ""
    assert header == REDACTED and TOKEN not in text and REDACTED in text
    (record,) = proxy.wait_for_records(1)
    found = places(record)
    assert {place for _, place, _ in found} == {"body", "headers"}
    assert all(enforced for _, _, enforced in found)


@pytest.mark.parametrize("cut", [10, 24])
def test_a_token_split_between_a_header_and_a_body_field_of_its_name_leaves_the_body_alone(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, cut: int
) -> None:
    """A body field named as a header holding the rest of a token is not read on from the header: the
    body arrives as the upstream sent it, and nothing is recorded as found in it."""
    proxy = start_proxy(mode="enforce")
    body = json.dumps([{"x-note": TOKEN[cut:]}]).encode()
    upstream.reply = Reply(body=body, headers={"X-Note": TOKEN[:cut]})
    with httpx.Client(
        proxy=proxy.url(),
        verify=ssl.create_default_context(cafile=str(proxy.ca_cert)),
        timeout=CLIENT_TIMEOUT_S,
    ) as client:
        reply = client.post(f"{upstream.url}/v1/things", json={"q": 1})
    assert reply.status_code == 200 and reply.content == body and reply.headers["x-note"] == TOKEN[:cut]
    (record,) = proxy.wait_for_records(1)
    assert places(record) == []


@pytest.mark.parametrize("mode", ["observe", "enforce"])
def test_an_upstreams_own_egressguard_headers_never_reach_the_agent(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, mode: str
) -> None:
    """An answer that names an audit event and a verdict in egressguard's namespace, in any case, reaches
    the SDK without them, and the record says fields were removed; the answer itself passes."""
    proxy = start_proxy(mode=mode)
    upstream.reply = Reply(
        text="fine",
        headers={"X-Egressguard-Event": "deadbeef", "x-egressguard-decision": "blocked", "X-Other": "kept"},
    )
    client = proxy.openai_client(upstream.url)
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    raw = client.chat.completions.with_raw_response.create(model="m", messages=messages)
    assert raw.parse().choices[0].message.content == "fine"
    assert raw.headers["x-other"] == "kept"
    assert not [name for name in raw.headers if name.lower().startswith("x-egressguard-")]
    (record,) = proxy.wait_for_records(1)
    assert record["decision"] == "allowed"
    assert "response: 2 header(s) the upstream sent in egressguard's namespace removed" in record["errors"]


@pytest.mark.parametrize("mode", ["observe", "enforce"])
def test_an_upstream_header_with_a_bare_cr_reaches_the_agent_as_the_one_field_inspected(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """requests (urllib3, Python's http.client) ends a header line at a bare CR too: an answer's field
    ``X-Note: a<CR>Content-Type: ...`` is read there as a second Content-Type, one the proxy never read
    the body under. The agent gets the field with a space in the CR's place (RFC 9110 5.5), one field,
    and the record says so."""
    proxy = start_proxy(mode=mode)
    upstream.reply = Reply(text="fine", headers={"X-Note": "a\rContent-Type: text/plain; charset=utf-7"})
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(proxy.ca_cert))
    reply = requests.post(
        f"{upstream.url}/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        timeout=CLIENT_TIMEOUT_S,
    )
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] == "fine"
    assert reply.headers["x-note"] == "a Content-Type: text/plain; charset=utf-7"
    assert reply.headers["content-type"] == "application/json"
    (record,) = proxy.wait_for_records(1)
    assert (
        "response: 1 header(s) holding a bare CR, LF or NUL read with a space in its place"
        in record["errors"]
    )
