"""End to end: the reversible vault with the official SDKs, JSON and SSE. A database password in a prompt
reaches the model as a placeholder, the model's tool call with the placeholder reaches the agent with the
password, and the conversation's history never carries the password upstream; another agent replaying
the placeholder gets nothing."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any, cast

import anthropic
import httpx
import openai
import pytest
import websockets.exceptions
import websockets.sync.server
from openai.types.chat import ChatCompletionMessageParam

from proxy.commands.localca import UpstreamPKI, make_pki
from proxy.scanning.rulepack import load_packaged_packs
from tests.harness import CLIENT_TIMEOUT_S, Proxy
from tests.upstream import (
    FakeUpstream,
    Reply,
    ToolCallReply,
    anthropic_events,
    anthropic_json,
    openai_chat_events,
    openai_chat_json,
)
from tests.wsupstream import WAIT_S, WebSocketUpstream

PASSWORD = "Xk9v2!LmQ#p7Rz"
PROMPT = (
    "Count yesterday's orders. The database is postgres://app:" + PASSWORD + "@db.internal:5432/prod, "
    "and psql needs PGPASSWORD=" + PASSWORD + " set."
)
INTRUDER = "intruder-bot"
HEADERS = {"X-User-Id": "u-1", "X-Purpose": "support", "X-Consent-Id": "c-1"}
PLACEHOLDER = re.compile(r"egv_[0-9a-f]{20}")


VAULT = "redaction: {requests: vault}\n"


def mcp_servers(*entries: str) -> str:
    """The support role's tools section naming ``entries`` as its MCP servers."""
    return f"{{mcp_servers: [{', '.join(repr(entry) for entry in entries)}]}}"


@pytest.fixture
def vaulting(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> Proxy:
    """Vaulting in enforce mode, the fake upstream's ``/mcp`` the role's MCP server."""
    proxy = start_proxy(
        mode="enforce",
        extra="redaction: {requests: vault}\n",
        other_agent=INTRUDER,
        tools=mcp_servers(f"{upstream.url.split('//')[1]}/mcp"),
    )
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca_cert))
    return proxy


class Agent:
    """One agent's conversation through one SDK: sends the history, keeps what the model answered."""

    def __init__(self, sdk: str, upstream: FakeUpstream, *, stream: bool) -> None:
        self.sdk, self.stream = sdk, stream
        if sdk == "openai":
            self.openai = openai.OpenAI(
                base_url=f"{upstream.url}/v1", api_key="sk-test", max_retries=0, default_headers=HEADERS
            )
        else:
            self.anthropic = anthropic.Anthropic(
                base_url=upstream.url, api_key="sk-ant-test", max_retries=0, default_headers=HEADERS
            )
        self.messages: list[dict[str, Any]] = []

    def say(self, text: str) -> list[tuple[str, str, dict[str, Any]]]:
        """The user's turn; returns the tool calls the agent received as (id, name, arguments)."""
        self.messages.append({"role": "user", "content": text})
        return self._complete()

    def tool_results(self, results: dict[str, str]) -> list[tuple[str, str, dict[str, Any]]]:
        if self.sdk == "openai":
            self.messages += [
                {"role": "tool", "tool_call_id": key, "content": value} for key, value in results.items()
            ]
        else:
            blocks = [
                {"type": "tool_result", "tool_use_id": key, "content": value}
                for key, value in results.items()
            ]
            self.messages.append({"role": "user", "content": blocks})
        return self._complete()

    def _complete(self) -> list[tuple[str, str, dict[str, Any]]]:
        if self.sdk == "openai":
            text, calls = self._openai()
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                message["tool_calls"] = [
                    {
                        "id": key,
                        "type": "function",
                        "function": {"name": name, "arguments": json.dumps(arguments)},
                    }
                    for key, name, arguments in calls
                ]
        else:
            text, calls = self._anthropic()
            content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
            content += [
                {"type": "tool_use", "id": key, "name": name, "input": arguments}
                for key, name, arguments in calls
            ]
            message = {"role": "assistant", "content": content}
        self.messages.append(message)
        return calls

    def _openai(self) -> tuple[str, list[tuple[str, str, dict[str, Any]]]]:
        create = self.openai.chat.completions.create
        # Written in the chat API's shape whenever the SDK is OpenAI's (``say``, ``tool_results``).
        messages = cast(list[ChatCompletionMessageParam], self.messages)
        if not self.stream:
            reply = create(model="gpt-4o-mini", messages=messages)
            choice = reply.choices[0].message
            calls = [
                (call.id, call.function.name, json.loads(call.function.arguments))
                for call in choice.tool_calls or []
                if call.type == "function"
            ]
            return choice.content or "", calls
        text = ""
        pending: dict[int, dict[str, str]] = {}
        for chunk in create(model="gpt-4o-mini", messages=messages, stream=True):
            for streamed in chunk.choices:
                text += streamed.delta.content or ""
                for delta in streamed.delta.tool_calls or []:
                    call = pending.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                    call["id"] += delta.id or ""
                    if delta.function is not None:
                        call["name"] += delta.function.name or ""
                        call["arguments"] += delta.function.arguments or ""
        return text, [(call["id"], call["name"], json.loads(call["arguments"])) for call in pending.values()]

    def _anthropic(self) -> tuple[str, list[tuple[str, str, dict[str, Any]]]]:
        arguments: dict[str, Any] = {
            "model": "claude-sonnet-4-5",
            "max_tokens": 256,
            "messages": self.messages,
        }
        if self.stream:
            with self.anthropic.messages.stream(**arguments) as stream:
                message = stream.get_final_message()
        else:
            message = self.anthropic.messages.create(**arguments)
        text = "".join(block.text for block in message.content if block.type == "text")
        calls = [
            (block.id, block.name, dict(block.input)) for block in message.content if block.type == "tool_use"
        ]
        return text, calls


def sent_upstream(upstream: FakeUpstream) -> str:
    return upstream.received[-1].body.decode()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_vaulted_password_reaches_the_tool_and_never_the_model(
    vaulting: Proxy, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, sdk: str, stream: bool
) -> None:
    """The model only ever sees placeholders, turn after turn; the agent's tool call carries the password."""
    agent = Agent(sdk, upstream, stream=stream)
    upstream.reply = Reply(text="Sure, I will query it.")
    assert agent.say(PROMPT) == []
    first = sent_upstream(upstream)
    assert PASSWORD not in first
    placeholder = re.search(r"PGPASSWORD=(egv_[0-9a-f]{20})", first)
    assert placeholder is not None
    vaulted = placeholder.group(1)

    # The model's tool call uses the placeholder, streamed in pieces of 3 characters (split anywhere).
    upstream.reply = Reply(
        text="",
        piece_size=3,
        tool_calls=[
            ToolCallReply(
                "count_orders",
                {"command": f"PGPASSWORD={vaulted} psql -h db.internal -U app prod", "password": vaulted},
                id="call_sql",
            )
        ],
    )
    calls = agent.say("Go ahead.")
    assert calls == [
        (
            "call_sql",
            "count_orders",
            {"command": f"PGPASSWORD={PASSWORD} psql -h db.internal -U app prod", "password": PASSWORD},
        )
    ]
    second = sent_upstream(upstream)
    assert PASSWORD not in second and vaulted in second

    # The history now holds the password in the tool call, and the tool echoed it in words no rule knows.
    upstream.reply = Reply(text="There were 42 orders.")
    agent.tool_results({"call_sql": f"logged in with {PASSWORD}; count = 42"})
    third = sent_upstream(upstream)
    assert PASSWORD not in third
    assert third.count(vaulted) >= 3

    records = vaulting.wait_for_records(3)
    written = [*(vaulting.data_dir / "audit").rglob("*.jsonl"), *(vaulting.data_dir / "state").glob("*")]
    assert all(PASSWORD.encode() not in path.read_bytes() for path in written)
    assert PASSWORD not in vaulting.output()
    first_findings = [finding for finding in records[0]["findings"] if finding["action"] == "vault"]
    assert first_findings and all(finding["enforced"] for finding in first_findings)
    assert vaulted in {finding["extra"]["placeholder"] for finding in first_findings}
    restores = [finding for finding in records[1]["findings"] if finding["rule"] == "vault-restore"]
    assert restores and restores[0]["extra"]["placeholders"] == [vaulted]
    assert restores[0]["action"] == "vault"

    # Another agent replaying the placeholder gets it back as it is, and a finding says so.
    monkeypatch.setenv("HTTPS_PROXY", vaulting.url(INTRUDER, INTRUDER[::-1]))
    intruder = Agent(sdk, upstream, stream=stream)
    upstream.reply = Reply(
        text="", tool_calls=[ToolCallReply("count_orders", {"password": vaulted}, id="call_x")]
    )
    assert intruder.say("Run the query.") == [("call_x", "count_orders", {"password": vaulted})]
    replayed = vaulting.wait_for_records(4)[3]
    assert replayed["agent_id"] == INTRUDER
    unresolved = [finding for finding in replayed["findings"] if finding["rule"] == "vault-unresolved"]
    assert unresolved and unresolved[0]["extra"]["placeholders"] == [vaulted]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_responses_api_tool_call_gets_the_value(
    vaulting: Proxy, upstream: FakeUpstream, stream: bool
) -> None:
    """The OpenAI Responses API: the prompt leaves vaulted, the function call comes back with the value."""
    client = openai.OpenAI(
        base_url=f"{upstream.url}/v1", api_key="sk-test", max_retries=0, default_headers=HEADERS
    )
    upstream.reply = Reply(text="Noted.")
    client.responses.create(model="gpt-4o-mini", input=PROMPT)
    first = sent_upstream(upstream)
    assert PASSWORD not in first
    found = re.search(r"PGPASSWORD=(egv_[0-9a-f]{20})", first)
    assert found is not None
    upstream.reply = Reply(
        text="",
        piece_size=2,
        tool_calls=[ToolCallReply("count_orders", {"password": found.group(1)}, id="call_r")],
    )
    if stream:
        events = list(client.responses.create(model="gpt-4o-mini", input=PROMPT, stream=True))
        final = [event.response for event in events if event.type == "response.completed"][-1]
    else:
        final = client.responses.create(model="gpt-4o-mini", input=PROMPT)
    calls = [item for item in final.output if item.type == "function_call"]
    assert [json.loads(call.arguments) for call in calls] == [{"password": PASSWORD}]


def test_text_body_to_another_host_is_vaulted(vaulting: Proxy, upstream: FakeUpstream) -> None:
    """A body that is not JSON leaves with placeholders too."""
    body = f"deploy log\nexport PGPASSWORD={PASSWORD}\n"
    with httpx.Client(
        proxy=vaulting.url(),
        verify=ssl.create_default_context(cafile=vaulting.ca_cert),
        timeout=CLIENT_TIMEOUT_S,
    ) as client:
        client.post(f"{upstream.url}/upload", content=body, headers={**HEADERS, "content-type": "text/plain"})
    sent = sent_upstream(upstream)
    assert PASSWORD not in sent and PLACEHOLDER.search(sent)


def test_observe_mode_records_what_the_vault_would_do(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Observe mode changes nothing: the finding says vault, not enforced."""
    proxy = start_proxy(mode="observe", extra="redaction: {requests: vault}\n")
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca_cert))
    Agent("openai", upstream, stream=False).say(PROMPT)
    assert PASSWORD in sent_upstream(upstream)
    findings = [
        finding for finding in proxy.wait_for_records(1)[0]["findings"] if finding["action"] == "vault"
    ]
    assert findings and not any(finding["enforced"] for finding in findings)


def test_mcp_tool_call_gets_the_value_only_for_its_agent(vaulting: Proxy, upstream: FakeUpstream) -> None:
    """The agent's own MCP tools/call carries the value behind a placeholder its agent vaulted; another
    agent's call with the same placeholder goes out as it is."""
    Agent("openai", upstream, stream=False).say(PROMPT)
    found = re.search(r"PGPASSWORD=(egv_[0-9a-f]{20})", sent_upstream(upstream))
    assert found is not None
    call = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "count_orders", "arguments": {"env": {"PGPASSWORD": found.group(1)}}},
    }
    context = ssl.create_default_context(cafile=vaulting.ca_cert)
    for proxy_url, expected in (
        (vaulting.url(), PASSWORD),
        (vaulting.url(INTRUDER, INTRUDER[::-1]), found.group(1)),
    ):
        with httpx.Client(proxy=proxy_url, verify=context, timeout=CLIENT_TIMEOUT_S) as client:
            client.post(f"{upstream.url}/mcp", json=call, headers=HEADERS)
        assert upstream.received[-1].json()["params"]["arguments"] == {"env": {"PGPASSWORD": expected}}


def test_only_the_mcp_servers_the_role_names_get_the_value(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A role hands the vault's values to the MCP servers it names (host, port and route) and to no other
    route of MCP's transports on an allowed host: ``/mcp`` there, a route that only starts like the named
    one, one stepping out of it, or the named route on a role naming none, all get the placeholder."""
    authority = upstream.url.split("//")[1]
    proxies = {
        "named": start_proxy(mode="enforce", extra=VAULT, tools=mcp_servers(f"{authority}/tools/mcp")),
        "none": start_proxy(mode="enforce", extra=VAULT),
    }
    for name, proxy in proxies.items():
        monkeypatch.setenv("HTTPS_PROXY", proxy.url())
        monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca_cert))
        Agent("openai", upstream, stream=False).say(PROMPT)
        found = re.search(r"PGPASSWORD=(egv_[0-9a-f]{20})", sent_upstream(upstream))
        assert found is not None
        call = tools_call(f"PGPASSWORD={found.group(1)}")
        context = ssl.create_default_context(cafile=proxy.ca_cert)
        routes = {
            "/tools/mcp": name == "named",
            "/tools/mcp/messages?sessionId=1": name == "named",
            "/tools/%6dcp": name == "named",
            "/mcp": False,
            "/sse": False,
            "/messages": False,
            "/tools/mcpx": False,
            "/tools/mcp/%2e%2e/%2e%2e/mcp": False,
            "/api/mcp": False,
        }
        with httpx.Client(proxy=proxy.url(), verify=context, timeout=CLIENT_TIMEOUT_S) as client:
            for route, restored in routes.items():
                client.post(f"{upstream.url}{route}", json=call, headers=HEADERS)
                sent = upstream.received[-1].body.decode()
                assert (PASSWORD in sent, found.group(1) in sent) == (restored, not restored), (name, route)


AWS_KEY = "AKIAQWERTY234567ABCD"
TOOLS_CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "save", "arguments": {}}}


def tools_call(value: str, **fields: Any) -> dict[str, Any]:
    """A JSON-RPC ``tools/call`` whose arguments carry ``value``, with ``fields`` over its own."""
    return {**TOOLS_CALL, "params": {"name": "save", "arguments": {"note": value}}, **fields}


SHAPES: dict[str, Callable[[str], Any]] = {
    "call": tools_call,
    "batch": lambda value: [tools_call(value), {**tools_call(value), "id": 2}],
    "method in capitals": lambda value: tools_call(value, method="TOOLS/CALL"),
    "method padded": lambda value: tools_call(value, method=" tools/call\n"),
    "keys in capitals": lambda value: {
        "JSONRPC": "2.0",
        "ID": 1,
        "Method": "tools/call",
        "PARAMS": {"x": value},
    },
    "extra fields": lambda value: tools_call(value, model="m", purpose="batch", messages=[]),
}
PROVIDER_ROUTES = [
    "/v1/files",
    "/v1/messages",
    "/v1/messages/batches",
    "/v1/vector_stores/vs_1/files",
    "/v1/conversations/conv_1/items",
    "/v1/threads",
    "/upload/v1beta/files",
    "/v1beta/cachedContents",
    "/v1beta/models/g:batchGenerateContent",
    "/openai/files?api-version=2024-10-21",
    "/v1/mcp/files",
]


def test_a_jsonrpc_body_anywhere_but_an_mcp_server_s_route_is_vaulted(
    vaulting: Proxy, upstream: FakeUpstream
) -> None:
    """Whether a request goes to the agent's own MCP server is decided by where it goes, never by what
    its body looks like: a ``tools/call``, a batch of them, in any case and spelling, with any fields
    besides, sent to a provider's route (OpenAI's, Anthropic's, Gemini's, Azure OpenAI's) or to a route no
    MCP transport uses, leaves with the key as a placeholder; the same body to ``/mcp`` is the tool's."""
    upstream.reply = Reply(body=b'{"id": "file-1", "object": "file"}')
    context = ssl.create_default_context(cafile=vaulting.ca_cert)
    with httpx.Client(proxy=vaulting.url(), verify=context, timeout=CLIENT_TIMEOUT_S) as client:
        for shape, body in SHAPES.items():
            # Keys that differ only in case are refused whatever the route (``inspection.key_case``).
            refused = shape == "keys in capitals"
            for route in [*PROVIDER_ROUTES, "/rpc", "/gists"]:
                before = len(upstream.received)
                client.post(f"{upstream.url}{route}", json=body(AWS_KEY), headers=HEADERS)
                sent = [received.body.decode() for received in upstream.received[before:]]
                assert len(sent) == (0 if refused else 1), (shape, route)
                assert all(AWS_KEY not in text and PLACEHOLDER.search(text) for text in sent), (shape, route)
            before = len(upstream.received)
            client.post(f"{upstream.url}/mcp", json=body(AWS_KEY), headers=HEADERS)
            sent = [received.body.decode() for received in upstream.received[before:]]
            assert [AWS_KEY in text for text in sent] == ([] if refused else [True]), shape


def test_a_placeholder_in_a_jsonrpc_body_is_restored_only_for_an_mcp_server(
    vaulting: Proxy, upstream: FakeUpstream
) -> None:
    """The vault's value goes to the agent's own tool alone: a placeholder in a ``tools/call`` sent through
    the OpenAI and Anthropic SDKs to their Files and Messages routes leaves as the placeholder."""
    Agent("openai", upstream, stream=False).say(PROMPT)
    found = PLACEHOLDER.search(sent_upstream(upstream))
    assert found is not None
    call = tools_call(f"PGPASSWORD={found.group(0)}")
    upstream.reply = Reply(body=b'{"id": "file-1", "object": "file"}')
    sdk = openai.OpenAI(
        base_url=f"{upstream.url}/v1", api_key="sk-test", max_retries=0, default_headers=HEADERS
    )
    sdk.post("/files", body=call, cast_to=str)
    claude = anthropic.Anthropic(
        base_url=upstream.url, api_key="sk-ant-test", max_retries=0, default_headers=HEADERS
    )
    claude.post("/v1/messages", body=call, cast_to=str)
    for sent in upstream.received[-2:]:
        assert PASSWORD not in sent.body.decode() and found.group(0) in sent.body.decode()


PROVIDER_HOSTS = ("api.openai.com", "api.anthropic.com")


@pytest.fixture(scope="module")
def provider_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[UpstreamPKI, FakeUpstream]]:
    """A fake upstream whose certificate names the providers' real hosts, which the proxy resolves to it."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("giving the proxy an /etc/hosts of its own needs root and unshare")
    pki = make_pki(tmp_path_factory.mktemp("provider-pki"), hostnames=("localhost", *PROVIDER_HOSTS))
    server = FakeUpstream(pki)
    yield pki, server
    server.close()


def test_a_placeholder_in_a_tools_call_to_a_provider_s_mcp_route_leaves_as_the_placeholder(
    start_proxy: Callable[..., Proxy],
    provider_upstream: tuple[UpstreamPKI, FakeUpstream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A provider's host is never the agent's own MCP server: a ``tools/call`` to OpenAI's or Anthropic's
    ``/mcp`` (called by their real names) carries the placeholder, where the same call to the agent's
    own server gets the vault's value."""
    pki, provider = provider_upstream
    provider.received.clear()
    proxy = start_proxy(
        mode="enforce",
        extra="redaction: {requests: vault}\n",
        allow="['api.openai.com:*', 'api.anthropic.com:*', 'localhost:*']",
        tools=mcp_servers(f"{provider.url.split('//')[1]}/mcp"),
        upstream_ca=pki.ca_cert,
        hosts=dict.fromkeys(PROVIDER_HOSTS, "127.0.0.1"),
    )
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca_cert))
    Agent("openai", provider, stream=False).say(PROMPT)
    found = PLACEHOLDER.search(sent_upstream(provider))
    assert found is not None
    call = tools_call(f"PGPASSWORD={found.group(0)}")
    port = provider.url.rsplit(":", 1)[1]
    context = ssl.create_default_context(cafile=proxy.ca_cert)
    with httpx.Client(proxy=proxy.url(), verify=context, timeout=CLIENT_TIMEOUT_S) as client:
        for url in ("https://api.openai.com:{}/v1/mcp", "https://api.anthropic.com:{}/mcp"):
            client.post(url.format(port), json=call, headers=HEADERS)
            sent = provider.received[-1].body.decode()
            assert PASSWORD not in sent and found.group(0) in sent, url
        client.post(f"{provider.url}/mcp", json=call, headers=HEADERS)
    assert PASSWORD in provider.received[-1].body.decode()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_secret_in_a_field_no_dialect_reads_is_vaulted(
    vaulting: Proxy, upstream: FakeUpstream, sdk: str, stream: bool
) -> None:
    """A password only in a request field the dialect does not model (here an extra body field) leaves as
    a placeholder, and the record says vault, enforced, with that placeholder."""
    upstream.reply = Reply(text="Noted.")
    extra = {"deployment_notes": {"database": f"postgres://app:{PASSWORD}@db.internal:5432/prod"}}
    if sdk == "openai":
        client = openai.OpenAI(
            base_url=f"{upstream.url}/v1", api_key="sk-test", max_retries=0, default_headers=HEADERS
        )
        reply = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Count the orders."}],
            extra_body=extra,
            stream=stream,
        )
        if stream:
            list(reply)
    else:
        claude = anthropic.Anthropic(
            base_url=upstream.url, api_key="sk-ant-test", max_retries=0, default_headers=HEADERS
        )
        claude.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=64,
            messages=[{"role": "user", "content": "Count the orders."}],
            extra_body=extra,
            stream=stream,
        )
    sent = sent_upstream(upstream)
    assert PASSWORD not in sent
    placeholder = PLACEHOLDER.search(json.loads(sent)["deployment_notes"]["database"])
    assert placeholder is not None
    findings = [
        finding
        for finding in vaulting.wait_for_records(1)[0]["findings"]
        if finding["threat"] == "data_exfiltration" and finding["rule"] != "vault-restore"
    ]
    assert findings and all(finding["action"] == "vault" and finding["enforced"] for finding in findings)
    assert {finding["extra"]["placeholder"] for finding in findings} == {placeholder.group()}


KEY_PEM = next(
    rule.match_examples[0]
    for pack in load_packaged_packs()
    for rule in pack.rules
    if rule.id == "private-key-pkcs8"
)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_placeholder_in_json_inside_tool_arguments_gets_the_value_at_every_level(
    vaulting: Proxy, upstream: FakeUpstream, sdk: str, stream: bool
) -> None:
    """A vaulted private key (line breaks and all) comes back inside a JSON payload inside a JSON payload
    inside the tool call's arguments, streamed 3 characters at a time: decoded level by level, the agent
    reads the key."""
    agent = Agent(sdk, upstream, stream=stream)
    upstream.reply = Reply(text="Noted.")
    agent.say(f"Install this deploy key:\n{KEY_PEM}\n")
    first = sent_upstream(upstream)
    assert all(line not in first for line in KEY_PEM.splitlines()[1:])
    found = PLACEHOLDER.search(first)
    assert found is not None
    file = {"path": "/home/app/.ssh/id_deploy", "content": found.group(), "mode": "0600"}
    upstream.reply = Reply(
        text="",
        piece_size=3,
        tool_calls=[
            ToolCallReply("write_files", {"batch": json.dumps({"files": [json.dumps(file)]})}, id="call_k")
        ],
    )
    [(_, _, arguments)] = agent.say("Go ahead.")
    [written] = json.loads(arguments["batch"])["files"]
    assert json.loads(written) == {**file, "content": KEY_PEM}


def _unmodelled(placeholder: str) -> dict[str, Any]:
    """Fields no dialect models: a plain string, a list, and JSON text holding the placeholder."""
    return {
        "dsn": f"postgres://app:{placeholder}@db.internal/prod",
        "env": [f"PGPASSWORD={placeholder}"],
        "payload": json.dumps({"auth": {"password": placeholder}}),
    }


def _with_password(fields: dict[str, Any]) -> dict[str, Any]:
    return {
        **fields,
        "payload": json.loads(fields["payload"]),
    }


def _crafted(sdk: str, stream: bool, fields: dict[str, Any], text: str) -> Reply:
    """A reply whose body (or one of its events) carries ``fields`` under ``x_deployment``."""
    reply = Reply(text=text)
    if not stream:
        document = openai_chat_json(reply) if sdk == "openai" else anthropic_json(reply)
        return Reply(body=json.dumps({**document, "x_deployment": fields}).encode())
    events = list(openai_chat_events(reply) if sdk == "openai" else anthropic_events(reply))
    first = events[0].decode()
    head, _, data = first.rpartition("data: ")
    payload = json.loads(data)
    payload["x_deployment"] = fields
    events[0] = f"{head}data: {json.dumps(payload)}\n\n".encode()
    return Reply(events=events, content_type="text/event-stream")


def _received_fields(sdk: str, stream: bool, upstream: FakeUpstream, say: str) -> tuple[Any, str]:
    """``x_deployment`` and the text as the SDK hands them to the agent."""
    messages: Any = [{"role": "user", "content": say}]
    if sdk == "openai":
        client = openai.OpenAI(
            base_url=f"{upstream.url}/v1", api_key="sk-test", max_retries=0, default_headers=HEADERS
        )
        if not stream:
            reply = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
            return reply.to_dict()["x_deployment"], reply.choices[0].message.content or ""
        chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True))
        text = "".join(choice.delta.content or "" for chunk in chunks for choice in chunk.choices)
        return chunks[0].to_dict()["x_deployment"], text
    claude = anthropic.Anthropic(
        base_url=upstream.url, api_key="sk-ant-test", max_retries=0, default_headers=HEADERS
    )
    if not stream:
        message = claude.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=messages)
        text = "".join(block.text for block in message.content if block.type == "text")
        return message.to_dict()["x_deployment"], text
    events = list(
        claude.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=messages, stream=True)
    )
    text = "".join(
        event.delta.text
        for event in events
        if event.type == "content_block_delta" and event.delta.type == "text_delta"
    )
    return events[0].to_dict()["x_deployment"], text


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_placeholders_in_fields_no_dialect_models_reach_the_agent_as_values(
    vaulting: Proxy, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, sdk: str, stream: bool
) -> None:
    """Any string of the answer the dialect does not read as text (an unknown field, a list, JSON text in
    a string) carries the value to the agent; the text keeps the placeholder (restore_in_text is off);
    another agent's answer with the same placeholder keeps it, and a finding says so."""
    Agent(sdk, upstream, stream=False).say(PROMPT)
    found = re.search(r"PGPASSWORD=(egv_[0-9a-f]{20})", sent_upstream(upstream))
    assert found is not None
    vaulted = found.group(1)
    upstream.reply = _crafted(sdk, stream, _unmodelled(vaulted), f"Used {vaulted}.")
    fields, text = _received_fields(sdk, stream, upstream, "Deploy.")
    assert _with_password(fields) == _with_password(_unmodelled(PASSWORD))
    assert text == f"Used {vaulted}."
    restores = [f for f in vaulting.wait_for_records(2)[1]["findings"] if f["rule"] == "vault-restore"]
    assert restores and all(finding["extra"]["placeholders"] == [vaulted] for finding in restores)

    monkeypatch.setenv("HTTPS_PROXY", vaulting.url(INTRUDER, INTRUDER[::-1]))
    monkeypatch.setenv("SSL_CERT_FILE", str(vaulting.ca_cert))
    fields, _ = _received_fields(sdk, stream, upstream, "Deploy.")
    assert fields == _unmodelled(vaulted)
    unresolved = [f for f in vaulting.wait_for_records(3)[2]["findings"] if f["rule"] == "vault-unresolved"]
    assert unresolved


class RealtimeUpstream(WebSocketUpstream):
    """A fake realtime API: keeps each client event; answers a ``conversation.item.create`` with the
    function call ``arguments`` the test sets."""

    def __init__(self, pki: UpstreamPKI) -> None:
        self.arguments = "{}"
        super().__init__(pki)

    def _serve(self, connection: websockets.sync.server.ServerConnection) -> None:
        with contextlib.suppress(websockets.exceptions.ConnectionClosed, TimeoutError):
            while True:
                raw = connection.recv(timeout=WAIT_S)
                self.received.append(raw)
                if json.loads(raw).get("type") == "conversation.item.create":
                    connection.send(
                        json.dumps(
                            {
                                "type": "response.function_call_arguments.done",
                                "event_id": "event_1",
                                "response_id": "resp_1",
                                "item_id": "item_1",
                                "output_index": 0,
                                "call_id": "call_rt",
                                "name": "count_orders",
                                "arguments": self.arguments,
                            }
                        )
                    )


@pytest.fixture
def realtime(upstream_pki: UpstreamPKI) -> Iterator[RealtimeUpstream]:
    server = RealtimeUpstream(upstream_pki)
    yield server
    server.close()


def _realtime_call(proxy_url: str, realtime: RealtimeUpstream, say: str) -> dict[str, Any]:
    """One user message over the official SDK's realtime connection; the function call's arguments the
    agent receives."""
    client = openai.OpenAI(
        base_url=f"https://localhost:{realtime.port}/v1",
        api_key="sk-test",
        max_retries=0,
        default_headers=HEADERS,
        websocket_base_url=f"wss://localhost:{realtime.port}/v1",
    )
    options = {"proxy": proxy_url, "open_timeout": WAIT_S, "close_timeout": WAIT_S}
    with client.beta.realtime.connect(
        model="gpt-4o-realtime-preview",
        websocket_connection_options=options,  # type: ignore[arg-type]  # the SDK hands every option to websockets' connect, which takes these
    ) as connection:
        connection.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": say}]}
        )
        # The SDK's recv has no bound of its own: closing the connection ends a wait that runs out.
        watchdog = threading.Timer(WAIT_S, connection.close)
        watchdog.start()
        try:
            event = connection.recv()
        except websockets.exceptions.ConnectionClosed as closed:
            sent = [json.loads(raw)["type"] for raw in realtime.received]
            pytest.fail(f"no answer within {WAIT_S} s ({closed}); the server received {sent}")
        finally:
            watchdog.cancel()
        assert event.type == "response.function_call_arguments.done"
        return dict(json.loads(event.arguments))


def test_websocket_messages_are_vaulted_both_ways(vaulting: Proxy, realtime: RealtimeUpstream) -> None:
    """The realtime API through the official SDK: the password the agent sends leaves as a placeholder,
    the function call coming back with the placeholder reaches the agent with the password, and another
    agent replaying it gets the placeholder."""
    _realtime_call(vaulting.url(), realtime, PROMPT)
    sent = str(realtime.received[-1])
    assert PASSWORD not in sent
    found = re.search(r"PGPASSWORD=(egv_[0-9a-f]{20})", sent)
    assert found is not None
    vaulted = found.group(1)
    realtime.arguments = json.dumps(
        {"command": f"PGPASSWORD={vaulted} psql", "nested": json.dumps([vaulted])}
    )
    arguments = _realtime_call(vaulting.url(), realtime, "Go ahead.")
    assert arguments == {"command": f"PGPASSWORD={PASSWORD} psql", "nested": json.dumps([PASSWORD])}
    assert _realtime_call(vaulting.url(INTRUDER, INTRUDER[::-1]), realtime, "Run it.") == json.loads(
        realtime.arguments
    )
    records = vaulting.wait_for_records(3)
    vaulted_findings = [finding for finding in records[0]["findings"] if finding["action"] == "vault"]
    assert vaulted_findings and all(finding["enforced"] for finding in vaulted_findings)
    assert any(finding["rule"] == "vault-restore" for finding in records[1]["findings"])
    assert any(finding["rule"] == "vault-unresolved" for finding in records[2]["findings"])
    written = [*(vaulting.data_dir / "audit").rglob("*.jsonl"), *(vaulting.data_dir / "state").glob("*")]
    assert all(PASSWORD.encode() not in path.read_bytes() for path in written)


def test_websocket_messages_in_observe_mode_are_recorded_not_vaulted(
    start_proxy: Callable[..., Proxy], realtime: RealtimeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Observe mode forwards the realtime message as the agent wrote it; the finding says vault, not
    enforced."""
    proxy = start_proxy(mode="observe", extra="redaction: {requests: vault}\n")
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca_cert))
    _realtime_call(proxy.url(), realtime, PROMPT)
    assert PASSWORD in str(realtime.received[-1])
    findings = [f for f in proxy.wait_for_records(1)[0]["findings"] if f["action"] == "vault"]
    assert findings and not any(finding["enforced"] for finding in findings)


@pytest.mark.parametrize(("sdk", "stream"), [("openai", False), ("anthropic", True)], ids=["json", "sse"])
def test_a_secret_forgotten_beyond_the_cap_comes_back_as_its_placeholder(
    start_proxy: Callable[..., Proxy],
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    sdk: str,
    stream: bool,
) -> None:
    """With ``max_entries: 2``, the first of three secrets sent in three conversations is forgotten: the
    model's call with its placeholder reaches the agent with the placeholder (recorded as unresolved),
    never the secret, while the newest still resolves."""
    proxy = start_proxy(mode="enforce", extra="redaction: {requests: vault, vault: {max_entries: 2}}\n")
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca_cert))
    passwords = [f"Xk9v2!LmQ#p7R{index}z" for index in range(3)]
    vaulted = []
    upstream.reply = Reply(text="Noted.")
    for password in passwords:
        Agent(sdk, upstream, stream=stream).say(f"psql needs PGPASSWORD={password} set.")
        found = re.search(r"PGPASSWORD=(egv_[0-9a-f]{20})", sent_upstream(upstream))
        assert found is not None
        vaulted.append(found.group(1))
    upstream.reply = Reply(
        text="",
        tool_calls=[ToolCallReply("login", {"old": vaulted[0], "new": vaulted[2]}, id="call_login")],
    )
    calls = Agent(sdk, upstream, stream=stream).say("Log in with both.")
    assert calls == [("call_login", "login", {"old": vaulted[0], "new": passwords[2]})]
    record = proxy.wait_for_records(4)[3]
    unresolved = [finding for finding in record["findings"] if finding["rule"] == "vault-unresolved"]
    restored = [finding for finding in record["findings"] if finding["rule"] == "vault-restore"]
    assert unresolved and unresolved[0]["extra"]["placeholders"] == [vaulted[0]]
    assert restored and restored[0]["extra"]["placeholders"] == [vaulted[2]]
    assert all(password not in proxy.output() for password in passwords)
