"""Secrets in the fields of a request no dialect reads as prompt text, end to end: each official SDK sends
a request whose ``metadata``, ``user``, ``prediction``, tool definitions' other fields, tool calls in the
history, unknown top-level fields (``extra_body``), object keys and JSON inside strings (escaped too)
each carry a distinct secret, through a real egressguard to the fake upstream. With request redaction
enforced, the upstream must see none of them, in any form its JSON reader decodes; the audit records
each one as enforced. In observe mode, or without request redaction, they pass and are recorded as not
enforced."""

from __future__ import annotations

import json
import os
import ssl
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from proxy.commands.localca import UpstreamPKI
from tests.evasion_cases import escaped
from tests.harness import CLIENT_TIMEOUT_S, Proxy
from tests.test_evasion import HEADERS, decoded
from tests.upstream import FakeUpstream

AWS_RULE = "aws-access-key-id"


def secret(number: int) -> str:
    """A distinct AWS access key id for each field."""
    return f"AKIAQWERTY2345{chr(65 + number // 26)}{chr(65 + number % 26)}WXYZ"


def nested_json(first: int, second: int) -> str:
    """A string holding JSON whose own string holds JSON, and JSON with the secret spelled in escapes."""
    inner = json.dumps({"k": secret(first)})
    return json.dumps({"inner": inner})[:-1] + f', "escaped": "{escaped(secret(second), 3)}"}}'


def extra_fields(first: int) -> dict[str, Any]:
    """Unknown top-level fields: an object, a list, JSON inside a string, escapes, and a secret as a key."""
    return {
        "unknown_field": {"deep": [{"note": secret(first)}]},
        "payload": nested_json(first + 1, first + 2),
        "raw_escapes": '{"k": "' + escaped(secret(first + 3), 2) + '"}',
        secret(first + 4): "a secret spelled as a key",
    }


def trusted() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])


def chat(upstream: FakeUpstream) -> int:
    client = openai.OpenAI(
        base_url=f"{upstream.url}/v1", api_key="sk-test", max_retries=0, default_headers=HEADERS
    )
    history: Any = [
        {"role": "user", "content": "look it up"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": json.dumps({"q": secret(0)})},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "found it"},
    ]
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Look a record up.",
                "parameters": {
                    "type": "object",
                    "properties": {"q": {"type": "string", "default": secret(1), "examples": [secret(2)]}},
                },
            },
            "x-vendor": {"token": secret(3)},
        }
    ]
    client.chat.completions.create(
        model="gpt-4o",
        messages=history,
        tools=tools,
        metadata={"note": secret(4)},
        user=secret(5),
        prediction={"type": "content", "content": secret(6)},
        extra_body=extra_fields(7),
    )
    return 12


def responses(upstream: FakeUpstream) -> int:
    client = openai.OpenAI(
        base_url=f"{upstream.url}/v1", api_key="sk-test", max_retries=0, default_headers=HEADERS
    )
    tools: Any = [
        {
            "type": "function",
            "name": "lookup",
            "description": "Look a record up.",
            "parameters": {"type": "object", "properties": {"q": {"type": "string", "default": secret(0)}}},
            "strict": False,
        }
    ]
    history: Any = [
        {"role": "user", "content": "look it up"},
        {
            "type": "function_call",
            "call_id": "c1",
            "name": "lookup",
            "arguments": json.dumps({"q": secret(1)}),
        },
        {"type": "function_call_output", "call_id": "c1", "output": "found it"},
    ]
    client.responses.create(
        model="gpt-4o",
        input=history,
        tools=tools,
        metadata={"note": secret(2)},
        extra_body={"user": secret(3), **extra_fields(4)},
    )
    return 9


def messages(upstream: FakeUpstream) -> int:
    client = anthropic.Anthropic(
        base_url=upstream.url, api_key="sk-ant-test", max_retries=0, default_headers=HEADERS
    )
    history: Any = [
        {"role": "user", "content": "look it up"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": secret(0)}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "found"}]},
    ]
    tools: Any = [
        {
            "name": "lookup",
            "description": "Look a record up.",
            "input_schema": {"type": "object", "properties": {"q": {"type": "string", "default": secret(1)}}},
        }
    ]
    client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=history,
        tools=tools,
        metadata={"user_id": secret(2)},
        extra_body=extra_fields(3),
    )
    return 8


def gemini(upstream: FakeUpstream) -> int:
    from google import genai
    from google.genai import types

    client = genai.Client(
        api_key="test-key", http_options=types.HttpOptions(base_url=upstream.url, headers=HEADERS)
    )
    history = [
        types.Content(role="user", parts=[types.Part(text="look it up")]),
        types.Content(
            role="model",
            parts=[types.Part(function_call=types.FunctionCall(name="lookup", args={"q": secret(0)}))],
        ),
        types.Content(
            role="user",
            parts=[types.Part(function_response=types.FunctionResponse(name="lookup", response={"r": "ok"}))],
        ),
    ]
    declaration = types.FunctionDeclaration(
        name="lookup",
        description="Look a record up.",
        parameters=types.Schema(
            type=types.Type.OBJECT, properties={"q": types.Schema(type=types.Type.STRING, default=secret(1))}
        ),
    )
    client.models.generate_content(
        model="gemini-2.5-flash",
        contents=history,
        config=types.GenerateContentConfig(
            tools=[types.Tool(function_declarations=[declaration])],
            http_options=types.HttpOptions(extra_body=extra_fields(2)),
        ),
    )
    return 7


def mcp(upstream: FakeUpstream) -> int:
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": "lookup",
            "arguments": {"q": secret(0), "filters": [{"owner": secret(1)}], "payload": nested_json(2, 3)},
            "_meta": {"progressToken": secret(4)},
        },
    }
    headers = {**HEADERS, "accept": "application/json, text/event-stream"}
    with httpx.Client(verify=trusted(), trust_env=True, headers=headers, timeout=CLIENT_TIMEOUT_S) as client:
        client.post(f"{upstream.url}/mcp", json=request)
    return 5


def generic(upstream: FakeUpstream) -> int:
    body = {secret(0): "a secret spelled as a key", "items": [{secret(1): 1}], "note": secret(2)}
    with httpx.Client(verify=trusted(), trust_env=True, headers=HEADERS, timeout=CLIENT_TIMEOUT_S) as client:
        client.post(f"{upstream.url}/v1/records", json=body)
    return 3


SENDERS: dict[str, Callable[[FakeUpstream], int]] = {
    "openai_chat": chat,
    "openai_responses": responses,
    "anthropic": messages,
    "gemini": gemini,
    "mcp": mcp,
    "generic": generic,
}


@pytest.fixture(scope="module")
def redacting(tmp_path_factory: pytest.TempPathFactory, upstream_pki: UpstreamPKI) -> Iterator[Proxy]:
    proxy = Proxy(
        tmp_path_factory.mktemp("request-residual"),
        upstream_pki.ca_cert,
        mode="enforce",
        extra="redaction: {requests: true}\n",
    )
    yield proxy
    proxy.stop()


def use(proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca_cert))


def upstream_strings(upstream: FakeUpstream) -> tuple[bytes, list[str]]:
    """The last body the upstream received, and every string its JSON reader gets out of it."""
    body = upstream.received[-1].body
    return body, list(decoded(json.loads(body)))


def found_count(findings: list[dict[str, Any]]) -> int:
    """Matches the findings stand for: repeats of one rule in one field make one finding with a count."""
    return sum(int(finding.get("count", 1)) for finding in findings)


def last_record(proxy: Proxy) -> dict[str, Any]:
    count = len([record for record in proxy.audit_records() if record.get("type") == "agent.turn"])
    return proxy.wait_for_records(count)[-1]


@pytest.mark.parametrize("dialect", SENDERS)
def test_no_secret_in_an_unmodelled_request_field_reaches_the_upstream(
    redacting: Proxy, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, dialect: str
) -> None:
    """Enforce mode with request redaction: every field's secret is redacted before it leaves, in every
    spelling the upstream decodes, and each is recorded as enforced."""
    use(redacting, monkeypatch)
    count = SENDERS[dialect](upstream)
    body, strings = upstream_strings(upstream)
    sent = [secret(number) for number in range(count)]
    assert not [value for value in sent if value.encode() in body or any(value in text for text in strings)]
    assert json.loads(body)  # still a JSON body the upstream reads
    record = last_record(redacting)
    findings = [finding for finding in record["findings"] if finding["rule"] == AWS_RULE]
    assert found_count(findings) >= count, findings
    assert all(finding["enforced"] for finding in findings)
    assert record["decision"] == "redacted"
    assert all(value not in json.dumps(record) for value in sent)


@pytest.mark.parametrize("setting", ["mode: observe\n", "mode: enforce\n"])
def test_without_request_redaction_the_fields_pass_and_are_recorded_unenforced(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    """Observe mode, or enforce mode without ``redaction.requests``: nothing is changed, and the record
    says each secret was found and not enforced."""
    proxy = start_proxy(mode=setting.split()[1])
    use(proxy, monkeypatch)
    count = chat(upstream)
    body, _ = upstream_strings(upstream)
    assert all(secret(number).encode() in body for number in (4, 5, 6))
    findings = [finding for finding in last_record(proxy)["findings"] if finding["rule"] == AWS_RULE]
    assert found_count(findings) >= count, findings
    assert not any(finding["enforced"] for finding in findings)


MULTIPART_BOUNDARY = "----egressguard-test"


def multipart(*parts: tuple[str, str, bytes]) -> bytes:
    """A multipart/form-data body of (name, content type, content) parts."""
    body = b""
    for name, content_type, content in parts:
        body += (
            (
                f'--{MULTIPART_BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n'
                f"Content-Type: {content_type}\r\n\r\n"
            ).encode()
            + content
            + b"\r\n"
        )
    return body + f"--{MULTIPART_BOUNDARY}--\r\n".encode()


FRAMED_REQUESTS: dict[str, tuple[str, str, bytes]] = {
    "form-encoded": (
        "/v1/records",
        "application/x-www-form-urlencoded",
        f"note=key+{secret(0)}&other=1".encode(),
    ),
    "form-encoded-percent": (
        "/v1/records",
        "application/x-www-form-urlencoded",
        ("note=" + "".join(f"%{byte:02X}" for byte in secret(0).encode())).encode(),
    ),
    "duplicate-key-first-shadowed": (
        "/v1/chat/completions",
        "application/json",
        b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "metadata": {"k": "'
        + secret(0).encode()
        + b'", "k": "fine"}}',
    ),
    "bom-prefixed-json": (
        "/v1/chat/completions",
        "application/json",
        b"\xef\xbb\xbf"
        + json.dumps(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "user": secret(0)}
        ).encode(),
    ),
    "multipart-text-field-beside-a-binary-file": (
        "/v1/files",
        f"multipart/form-data; boundary={MULTIPART_BOUNDARY}",
        multipart(
            ("file", "application/octet-stream", bytes(range(256)) * 64),
            ("purpose", "text/plain", f"key {secret(0)}".encode()),
        ),
    ),
}


@pytest.mark.parametrize("name", FRAMED_REQUESTS)
def test_request_framings_do_not_carry_a_secret_past_redaction(
    redacting: Proxy, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Form-encoded (plain and percent-encoded), a repeated JSON key whose first value a reader may keep,
    a BOM before JSON, and a text field of a multipart upload beside a binary file: the secret does not
    reach the upstream in any spelling its reader decodes."""
    use(redacting, monkeypatch)
    path, content_type, body = FRAMED_REQUESTS[name]
    with httpx.Client(verify=trusted(), trust_env=True, headers=HEADERS, timeout=CLIENT_TIMEOUT_S) as client:
        client.post(f"{upstream.url}{path}", content=body, headers={"content-type": content_type})
    received = upstream.received[-1].body
    assert secret(0).encode() not in received
    assert secret(0).encode() not in urllib.parse.unquote_to_bytes(received.replace(b"+", b" "))
    findings = [finding for finding in last_record(redacting)["findings"] if finding["rule"] == AWS_RULE]
    assert findings and all(finding["enforced"] for finding in findings)


def test_a_secret_redacted_when_fresh_is_redacted_again_in_the_history_of_later_turns(
    redacting: Proxy, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent keeps its own unredacted history and resends it every turn: the user's secret from turn
    one, and one an assistant message carries, must not leave with turn two either."""
    use(redacting, monkeypatch)
    client = openai.OpenAI(
        base_url=f"{upstream.url}/v1", api_key="sk-test", max_retries=0, default_headers=HEADERS
    )
    history: Any = [{"role": "user", "content": f"my key is {secret(0)}"}]
    reply = client.chat.completions.create(model="gpt-4o", messages=history)
    history += [
        {"role": "assistant", "content": f"{reply.choices[0].message.content} (noted {secret(1)})"},
        {"role": "user", "content": "thanks, what next?"},
    ]
    client.chat.completions.create(model="gpt-4o", messages=history)
    for received in upstream.received[-2:]:
        assert not [number for number in (0, 1) if secret(number).encode() in received.body]
    findings = [finding for finding in last_record(redacting)["findings"] if finding["rule"] == AWS_RULE]
    assert found_count(findings) >= 2 and all(finding["enforced"] for finding in findings)
