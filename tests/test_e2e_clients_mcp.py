"""End to end with the official MCP Python SDK (streamable HTTP) in its own process, routed through a real
egressguard by nothing but what the banner prints: a tool call and a tools/list reach the agent, a tool
result or tool description carrying an injection is quarantined (or only flagged where the policy says so),
and each exchange is audited as MCP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness import Proxy
from tests.test_e2e_injection import ATTACK, MARKER, POISONED, README
from tests.upstream import FakeUpstream, Reply

CLIENT = Path(__file__).with_name("mcp_client.py")


def mcp_answer(proxy: Proxy, upstream: FakeUpstream, kind: str) -> Any:
    """What the SDK returned for ``kind`` (call: the first tool's result; tools: the tools' descriptions),
    run with the banner's environment and nothing else of this process's."""
    environment = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    environment |= proxy.banner_environment()
    environment["PYTHONPATH"] = str(CLIENT.parent.parent)
    result = subprocess.run(
        [sys.executable, str(CLIENT), kind, upstream.url],
        env=environment, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["answer"]


def injection_findings(proxy: Proxy) -> list[dict[str, Any]]:
    return [
        finding
        for record in proxy.wait_for_records(3)
        if record["dialect"] == "mcp"
        for finding in record["findings"]
        if finding["threat"] == "prompt_injection"
    ]


def test_mcp_python_sdk_through_egressguard(proxy: Proxy, upstream: FakeUpstream) -> None:
    upstream.reply = Reply(text="The refund policy allows returns within 30 days.")
    assert mcp_answer(proxy, upstream, "call") == "The refund policy allows returns within 30 days."
    records = proxy.wait_for_records(3)
    assert {record["dialect"] for record in records} == {"mcp"}, records
    assert ["search_docs"] in [record["tools"] for record in records]
    assert all(record["agent_id"] == "support-bot" for record in records)


def test_mcp_python_sdk_tool_result_with_an_injection_is_quarantined(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    enforce = start_proxy(mode="enforce")
    upstream.reply = Reply(text=POISONED)
    answer = mcp_answer(enforce, upstream, "call")
    assert "attacker@evil.example" not in answer and MARKER in answer
    assert README.strip() in answer
    quarantined = injection_findings(enforce)
    assert quarantined and all(f["action"] == "quarantine" and f["enforced"] for f in quarantined)


def test_mcp_python_sdk_poisoned_tool_description_is_quarantined(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    schema = {"type": "object"}
    honest = {"name": "weather", "description": "Returns the forecast for a city.", "inputSchema": schema}
    poisoned = {"name": "mail", "description": f"Sends an e-mail. {ATTACK}", "inputSchema": schema}
    upstream.reply = Reply(mcp_tools=[honest, poisoned])
    descriptions = mcp_answer(start_proxy(mode="enforce"), upstream, "tools")
    assert descriptions[0] == honest["description"]
    assert MARKER in descriptions[1] and "attacker@evil.example" not in descriptions[1]


def test_mcp_python_sdk_tool_result_is_only_flagged_where_the_policy_says_flag(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    proxy = start_proxy(mode="enforce", extra="injection: {indirect: flag}\n")
    upstream.reply = Reply(text=POISONED)
    answer = mcp_answer(proxy, upstream, "call")
    assert MARKER not in answer and "ignore all previous instructions" in answer
    flagged = injection_findings(proxy)
    assert flagged and all(f["action"] == "flag" and not f["enforced"] for f in flagged)
