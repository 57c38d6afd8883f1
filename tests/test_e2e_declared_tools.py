"""End to end, with the Anthropic and OpenAI SDKs through a real egressguard in enforce mode: a tool the
API runs itself is refused where the request declares it, since its call in the answer has already run.
A remote MCP server outside the agent's egress allowlist (the API would reach it for the agent) and a
destructive tool the API may run without asking anyone are refused, naming them, before anything leaves;
a server tool the policy allows and ordinary function tools leave unchanged."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest

from proxy.dialects import Anthropic, OpenAIResponses
from proxy.exchange import DeclaredTool
from tests.harness import Proxy
from tests.test_e2e_inspect import _agent, anthropic_client, last_record, openai_client
from tests.test_server_tools import answer, response_of
from tests.upstream import FakeUpstream, Reply

ASK = [{"role": "user", "content": "what does the orders README say?"}]
MCP_BETA = ["mcp-client-2025-04-04"]
FUNCTION = {"type": "function", "name": "read_file", "parameters": {"type": "object", "properties": {}}}
ALLOWED_URL = "https://localhost:8443/mcp"
DELETING = ("delete_repository",)


@pytest.fixture
def enforce(start_proxy: Callable[..., Proxy], monkeypatch: pytest.MonkeyPatch) -> Proxy:
    return _agent(start_proxy(mode="enforce"), monkeypatch)


def mcp_tool(**fields: Any) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "ops", "server_url": "https://mcp.example", **fields}


def refusals(record: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    return [
        (finding["threat"], finding["rule"], finding["where"], finding["enforced"])
        for finding in record["findings"]
        if finding["action"] == "block" and finding["rule"] != "egress.first_seen"
    ]


def test_declared_tools_are_read_from_both_apis() -> None:
    anthropic_body = {
        "model": "m",
        "messages": ASK,
        "tools": [
            {"type": "web_search_20250305", "name": "web_search"},
            {"type": "bash_20250124", "name": "bash"},
            {"name": "read_file", "input_schema": {"type": "object"}},
        ],
        "mcp_servers": [
            {
                "type": "url",
                "url": "https://mcp.example/sse",
                "name": "ops",
                "tool_configuration": {"allowed_tools": ["delete_repository"]},
            }
        ],
    }
    assert Anthropic().parse_request(json.dumps(anthropic_body).encode()).declared_tools == [
        DeclaredTool("web_search", "tools[0]"),
        DeclaredTool(
            "ops", "mcp_servers[0]", "https://mcp.example/sse", ("delete_repository",), mcp_server=True
        ),
    ]
    tools = [
        mcp_tool(allowed_tools={"tool_names": ["delete_repository"]}, require_approval="always"),
        {"type": "web_search_preview"},
        {"type": "local_shell"},
        FUNCTION,
    ]
    view = OpenAIResponses().parse_request(json.dumps({"model": "m", "input": "hi", "tools": tools}).encode())
    assert view.declared_tools == [
        DeclaredTool(
            "ops",
            "tools[0]",
            "https://mcp.example",
            ("delete_repository",),
            mcp_server=True,
            asks_approval=True,
        ),
        DeclaredTool("web_search", "tools[1]"),
    ]


def test_a_remote_mcp_server_outside_the_egress_allowlist_is_refused(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    with pytest.raises(openai.PermissionDeniedError) as refused:
        openai_client(upstream).responses.create(
            model="m",
            input="clean up",
            tools=[mcp_tool(require_approval="never")],  # type: ignore[list-item]
        )
    assert "mcp.example" in str(refused.value) and "ops" in str(refused.value)
    assert upstream.received == []
    assert refusals(last_record(enforce)) == [("lateral_movement", "egress.mcp_server", "tools[0]", True)]


def test_an_anthropic_mcp_server_outside_the_egress_allowlist_is_refused(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    server = {"type": "url", "url": "https://mcp.example/sse", "name": "ops"}
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        anthropic_client(upstream).beta.messages.create(
            model="m",
            max_tokens=100,
            messages=ASK,
            betas=MCP_BETA,
            mcp_servers=[server],  # type: ignore[list-item]
        )
    assert "mcp.example" in str(refused.value)
    assert upstream.received == []
    assert refusals(last_record(enforce)) == [
        ("lateral_movement", "egress.mcp_server", "mcp_servers[0]", True)
    ]


def test_a_destructive_tool_an_allowed_mcp_server_may_run_unasked_is_refused(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    tool = mcp_tool(server_url=ALLOWED_URL, allowed_tools=["read_file", "delete_repository"])
    with pytest.raises(openai.PermissionDeniedError) as refused:
        openai_client(upstream).responses.create(model="m", input="clean up", tools=[tool])  # type: ignore[list-item]
    assert "delete_repository" in str(refused.value)
    assert upstream.received == []
    assert refusals(last_record(enforce)) == [("tool_abuse", "tool-delete", "tools[0]", True)]


def test_allowed_declarations_leave_unchanged(enforce: Proxy, upstream: FakeUpstream) -> None:
    """Function tools, a server tool the catalogue does not name, an allowed MCP server whose destructive
    tool the API asks approval for: the request leaves as the SDK wrote it and nothing is refused."""
    upstream.reply = Reply(body=response_of())
    tools = [
        FUNCTION,
        {"type": "web_search_preview"},
        mcp_tool(server_url=ALLOWED_URL, allowed_tools=["delete_repository"], require_approval="always"),
    ]
    openai_client(upstream).responses.create(model="m", input="hi", tools=tools)  # type: ignore[arg-type]
    assert json.loads(upstream.received[-1].body)["tools"] == tools
    upstream.reply = Reply(body=answer({"type": "text", "text": "done"}))
    anthropic_client(upstream).messages.create(
        model="m",
        max_tokens=100,
        messages=ASK,  # type: ignore[arg-type]
        tools=[{"name": "read_file", "input_schema": {"type": "object"}}],
    )
    assert json.loads(upstream.received[-1].body)["tools"][0]["name"] == "read_file"
    assert [refusals(record) for record in enforce.wait_for_records(2)] == [[], []]
