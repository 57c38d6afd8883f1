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
from anthropic.types import MessageParam

from proxy.dialects import Anthropic, OpenAIResponses
from proxy.exchange import DeclaredTool
from tests.harness import Proxy
from tests.test_e2e_inspect import _agent, anthropic_client, last_record, openai_client
from tests.test_server_tools import answer, response_of
from tests.upstream import FakeUpstream, Reply

QUESTION = "what does the orders README say?"
ASK: list[MessageParam] = [{"role": "user", "content": QUESTION}]
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
    approval = {"always": {"tool_names": ["a", "b", 3]}, "never": {"tool_names": ["b"], "read_only": True}}
    body = {"model": "m", "input": "hi", "tools": [mcp_tool(require_approval=approval)]}
    (declared,) = OpenAIResponses().parse_request(json.dumps(body).encode()).declared_tools
    assert (declared.asks_approval, declared.approval_asked_for) == (False, ("a",))


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
    assert refusals(last_record(enforce)) == [
        ("lateral_movement", "egress.mcp_server", "tools[0]", True),
        ("tool_abuse", "tool-mcp-unrestricted", "tools[0]", True),
    ]


def test_an_anthropic_mcp_server_outside_the_egress_allowlist_is_refused(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    server = {"type": "url", "url": "https://mcp.example/sse", "name": "ops"}
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        anthropic_client(upstream).beta.messages.create(
            model="m",
            max_tokens=100,
            messages=[{"role": "user", "content": QUESTION}],
            betas=MCP_BETA,
            mcp_servers=[server],  # type: ignore[list-item]
        )
    assert "mcp.example" in str(refused.value)
    assert upstream.received == []
    assert refusals(last_record(enforce)) == [
        ("lateral_movement", "egress.mcp_server", "mcp_servers[0]", True),
        ("tool_abuse", "tool-mcp-unrestricted", "mcp_servers[0]", True),
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
        {"type": "file_search", "vector_store_ids": ["vs_1"]},
        mcp_tool(server_url=ALLOWED_URL, allowed_tools=["delete_repository"], require_approval="always"),
    ]
    openai_client(upstream).responses.create(model="m", input="hi", tools=tools)  # type: ignore[arg-type]
    assert json.loads(upstream.received[-1].body)["tools"] == tools
    upstream.reply = Reply(body=answer({"type": "text", "text": "done"}))
    anthropic_client(upstream).messages.create(
        model="m",
        max_tokens=100,
        messages=ASK,
        tools=[{"name": "read_file", "input_schema": {"type": "object"}}],
    )
    assert json.loads(upstream.received[-1].body)["tools"][0]["name"] == "read_file"
    assert [refusals(record) for record in enforce.wait_for_records(2)] == [[], []]


CONNECTOR = {
    "type": "mcp",
    "server_label": "mail",
    "connector_id": "connector_gmail",
    "authorization": "oauth-access-token",
    "allowed_tools": ["search_emails"],
    "require_approval": "never",
}
TOOLSET_BETA = ["mcp-client-2025-11-20"]
ALLOWED_SERVER = {"type": "url", "url": ALLOWED_URL, "name": "ops"}


def toolset(**fields: Any) -> dict[str, Any]:
    return {"type": "mcp_toolset", "mcp_server_name": "ops", **fields}


def test_connectors_tunnels_unrestricted_servers_and_toolsets_are_read() -> None:
    """A Responses connector or tunnel is read by its id; a server that lists no tools (or only a
    ``read_only`` filter, the server's own word) allows all of them (None); an Anthropic server's
    ``mcp_toolset`` says which of its tools the API may run, over its ``tool_configuration``."""
    tools = [
        CONNECTOR,
        {"type": "mcp", "server_label": "inside", "tunnel_id": "tun_1"},
        mcp_tool(allowed_tools={"read_only": True}),
    ]
    view = OpenAIResponses().parse_request(json.dumps({"model": "m", "input": "hi", "tools": tools}).encode())
    assert view.declared_tools == [
        DeclaredTool(
            "mail", "tools[0]", None, ("search_emails",), mcp_server=True, connector="connector_gmail"
        ),
        DeclaredTool("inside", "tools[1]", None, None, mcp_server=True, connector="tun_1"),
        DeclaredTool("ops", "tools[2]", "https://mcp.example", None, mcp_server=True),
    ]
    servers = [
        {**ALLOWED_SERVER, "tool_configuration": {"allowed_tools": ["delete_repository"]}},
        {**ALLOWED_SERVER, "name": "docs"},
        {**ALLOWED_SERVER, "name": "off", "tool_configuration": {"enabled": False}},
        {**ALLOWED_SERVER, "name": "all"},
    ]
    body = {
        "model": "m",
        "messages": ASK,
        "mcp_servers": servers,
        "tools": [
            toolset(default_config={"enabled": False}, configs={"search": {"enabled": True}}),
            toolset(mcp_server_name="docs", configs={"delete_page": {"enabled": False}}),
        ],
    }
    declared = Anthropic().parse_request(json.dumps(body).encode()).declared_tools
    assert [(tool.name, tool.allowed_tools) for tool in declared] == [
        ("ops", ("search",)),
        ("docs", None),
        ("off", ()),
        ("all", None),
    ]


@pytest.mark.parametrize("allowed", [False, True])
def test_a_responses_connector_is_reached_only_where_the_role_names_it(
    start_proxy: Callable[..., Proxy], monkeypatch: pytest.MonkeyPatch, upstream: FakeUpstream, allowed: bool
) -> None:
    """A provider-hosted connector is an egress destination the API reaches for the agent, with no URL to
    check: refused under lateral movement unless the role's ``tools.connectors`` names it."""
    tools = "{connectors: [connector_gmail]}" if allowed else "{connectors: [connector_dropbox]}"
    proxy = _agent(start_proxy(mode="enforce", tools=tools), monkeypatch)
    upstream.reply = Reply(body=response_of())
    client = openai_client(upstream)
    if allowed:
        client.responses.create(model="m", input="find the invoice", tools=[CONNECTOR])  # type: ignore[list-item]
        assert json.loads(upstream.received[-1].body)["tools"] == [CONNECTOR]
        assert refusals(last_record(proxy)) == []
        return
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.responses.create(model="m", input="find the invoice", tools=[CONNECTOR])  # type: ignore[list-item]
    assert "connector_gmail" in str(refused.value)
    assert upstream.received == []
    assert refusals(last_record(proxy)) == [("lateral_movement", "egress.mcp_server", "tools[0]", True)]


def test_an_mcp_server_allowing_all_its_tools_unasked_is_refused_unless_approval_or_the_role_says(
    start_proxy: Callable[..., Proxy], monkeypatch: pytest.MonkeyPatch, upstream: FakeUpstream
) -> None:
    """An allowed server that lists no tools lets the API run any of them, destructive ones among them,
    without asking: refused under tool abuse, naming the server. Asking approval for each call, or the
    role exempting the server by name, lets it through."""
    proxy = _agent(start_proxy(mode="enforce", tools="{exempt: [docs]}"), monkeypatch)
    client = openai_client(upstream)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.responses.create(model="m", input="clean up", tools=[mcp_tool(server_url=ALLOWED_URL)])  # type: ignore[list-item]
    assert "tool-mcp-unrestricted" in str(refused.value) and "ops" in str(refused.value)
    assert upstream.received == []
    assert refusals(last_record(proxy)) == [("tool_abuse", "tool-mcp-unrestricted", "tools[0]", True)]
    upstream.reply = Reply(body=response_of())
    passing = [
        mcp_tool(server_url=ALLOWED_URL, require_approval="always"),
        mcp_tool(server_label="docs", server_url=ALLOWED_URL),
    ]
    client.responses.create(model="m", input="clean up", tools=passing)  # type: ignore[arg-type]
    assert json.loads(upstream.received[-1].body)["tools"] == passing
    assert refusals(last_record(proxy, 2)) == []


@pytest.mark.parametrize(
    ("tools", "refused"),
    [
        (
            [toolset(default_config={"enabled": False}, configs={"delete_repository": {"enabled": True}})],
            "tool-delete",
        ),
        ([toolset()], "tool-mcp-unrestricted"),
        ([toolset(default_config={"enabled": False}, configs={"search": {"enabled": True}})], None),
    ],
)
def test_an_anthropic_mcp_toolset_says_which_tools_the_api_may_run(
    enforce: Proxy, upstream: FakeUpstream, tools: list[Any], refused: str | None
) -> None:
    """The toolset of an allowed server is read: a destructive tool it enables is refused by its catalogue
    rule, all of the server's tools (its default) as an unrestricted server, a harmless one passes."""
    upstream.reply = Reply(body=answer({"type": "text", "text": "done"}))
    client = anthropic_client(upstream)

    def send() -> None:
        client.beta.messages.create(
            model="m",
            max_tokens=100,
            messages=[{"role": "user", "content": QUESTION}],
            betas=TOOLSET_BETA,
            mcp_servers=[ALLOWED_SERVER],  # type: ignore[list-item]
            tools=tools,
        )

    if refused is None:
        send()
        assert json.loads(upstream.received[-1].body)["tools"] == tools
        assert refusals(last_record(enforce)) == []
        return
    with pytest.raises(anthropic.PermissionDeniedError, match=refused):
        send()
    assert upstream.received == []
    assert refusals(last_record(enforce)) == [("tool_abuse", refused, "mcp_servers[0]", True)]


NAMED = ["read_file", "delete_repository"]
APPROVAL_FILTERS: list[tuple[dict[str, Any], list[str] | None, str | None]] = [
    ({"always": {"tool_names": ["delete_repository"]}, "never": {"tool_names": ["read_file"]}}, NAMED, None),
    ({"always": {"tool_names": ["delete_repository"]}}, NAMED, None),
    ({"never": {"tool_names": ["delete_repository"]}}, NAMED, "tool-delete"),
    ({"always": {"tool_names": ["read_file"]}}, NAMED, "tool-delete"),
    ({"always": {"read_only": False}}, NAMED, "tool-delete"),
    ({"always": {"tool_names": NAMED}, "never": {"tool_names": ["delete_repository"]}}, NAMED, "tool-delete"),
    ({"always": {"tool_names": NAMED}}, None, "tool-mcp-unrestricted"),
]
"""A ``require_approval`` filter object, the tools the server allows, and what refuses the request: a
tool named under ``always`` is asked about before each call; one under ``never`` (there too), named by
neither, or matched by a ``read_only`` filter only is not."""


def test_a_require_approval_filter_asks_approval_for_the_tools_it_names_under_always(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    upstream.reply = Reply(body=response_of())
    client = openai_client(upstream)
    for count, (approval, allowed, refused) in enumerate(APPROVAL_FILTERS, start=1):
        fields = {"require_approval": approval} | ({} if allowed is None else {"allowed_tools": allowed})
        tools = [mcp_tool(server_url=ALLOWED_URL, **fields)]
        if refused is None:
            client.responses.create(model="m", input="clean up", tools=tools)  # type: ignore[arg-type]
            assert json.loads(upstream.received[-1].body)["tools"] == tools
        else:
            with pytest.raises(openai.PermissionDeniedError):
                client.responses.create(model="m", input="clean up", tools=tools)  # type: ignore[arg-type]
        expected = [] if refused is None else [("tool_abuse", refused, "tools[0]", True)]
        assert refusals(last_record(enforce, count)) == expected, approval
