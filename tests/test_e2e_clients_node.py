"""End to end with the official Node SDKs (openai, @anthropic-ai/sdk, the MCP TypeScript SDK), streamed
and not, through a real egressguard, with what the banner prints plus, on a Node whose fetch ignores
HTTPS_PROXY, the README's one-line preload. MCP answers come as SSE (the SDK asks for it): an injection in a
streamed tool result or tool description is quarantined as in a JSON answer."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Proxy
from tests.test_e2e_injection import ATTACK, MARKER, POISONED, README
from tests.upstream import FakeUpstream, Reply

PACKAGE = Path(__file__).parent / "node"
FILES = ("package.json", "package-lock.json", "clients.mjs", "env-proxy.mjs")


def node_version(node: str) -> tuple[int, int]:
    text = subprocess.run([node, "-p", "process.versions.node"], capture_output=True, text=True, check=True)
    major, minor, _ = text.stdout.strip().split(".", 2)
    return int(major), int(minor)


def honours_node_use_env_proxy(version: tuple[int, int]) -> bool:
    """NODE_USE_ENV_PROXY=1 routes fetch and http(s) through HTTP(S)_PROXY from Node 22.21 and 24.5."""
    return (22, 21) <= version < (23, 0) or version >= (24, 5)


@pytest.fixture(scope="session")
def node_clients(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """`npm ci` of tests/node into a cache dir keyed by its lock file: the node binary and that dir."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (CI installs Debian's nodejs and npm)")
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("node is installed but npm is not: install npm to run the Node client tests")
    lock = (PACKAGE / "package-lock.json").read_bytes()
    cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "egressguard-tests"
    directory = cache_root / f"node-{hashlib.sha256(lock).hexdigest()[:16]}"
    directory.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(PACKAGE / name, directory / name)
    if not (directory / "node_modules" / ".package-lock.json").exists():
        installed = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=directory, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert installed.returncode == 0, installed.stderr
    return node, directory


def node_environment(proxy: Proxy, clients: Path, version: tuple[int, int]) -> dict[str, str]:
    """What the banner prints, and the README's preload where this Node ignores NODE_USE_ENV_PROXY."""
    environment = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    environment |= proxy.banner_environment()
    if not honours_node_use_env_proxy(version):
        environment["NODE_OPTIONS"] = f"--import {clients / 'env-proxy.mjs'}"
    return environment


def run_client(
    node_clients: tuple[str, Path], kind: str, base_url: str, environment: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    node, directory = node_clients
    return subprocess.run(
        [node, "clients.mjs", kind, base_url],
        cwd=directory, env=environment, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


DIALECTS = {
    "openai": "openai_chat",
    "openai-stream": "openai_chat",
    "anthropic": "anthropic",
    "anthropic-stream": "anthropic",
    "mcp": "mcp",
}


@pytest.mark.parametrize("kind", list(DIALECTS))
def test_node_sdk_through_egressguard(
    node_clients: tuple[str, Path], agent_env: Proxy, upstream: FakeUpstream, kind: str
) -> None:
    """Each SDK gets the upstream's answer through egressguard, and the turn is audited."""
    upstream.reply = Reply(text="Hello from the upstream model, via Node.")
    node, directory = node_clients
    environment = node_environment(agent_env, directory, node_version(node))
    result = run_client(node_clients, kind, upstream.url, environment)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["answer"] == "Hello from the upstream model, via Node."
    records = agent_env.wait_for_records(1)
    assert DIALECTS[kind] in {record["dialect"] for record in records}, records
    assert all(record["agent_id"] == "support-bot" for record in records)


def test_streamed_completion_secret_redacted_for_node(
    node_clients: tuple[str, Path], start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """In enforce mode a secret streamed to the Node SDK arrives redacted."""
    proxy = start_proxy(mode="enforce")
    upstream.reply = Reply(text="the key is AKIAQWERTY234567ABCD, keep it safe", piece_size=3)
    node, directory = node_clients
    result = run_client(
        node_clients, "openai-stream", upstream.url, node_environment(proxy, directory, node_version(node))
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)["answer"]
    assert "AKIAQWERTY234567ABCD" not in answer
    assert "[REDACTED:aws-access-key-id]" in answer


def test_node_without_the_preload_bypasses_the_proxy(
    node_clients: tuple[str, Path], agent_env: Proxy, upstream: FakeUpstream
) -> None:
    """Why the README gives the preload: a Node before 22.21/24.5 ignores HTTPS_PROXY even with
    NODE_USE_ENV_PROXY=1, so without it the SDK connects straight out and egressguard sees nothing."""
    node, directory = node_clients
    if honours_node_use_env_proxy(node_version(node)):
        pytest.skip("this Node honours NODE_USE_ENV_PROXY")
    environment = node_environment(agent_env, directory, node_version(node))
    del environment["NODE_OPTIONS"]
    run_client(node_clients, "openai", upstream.url, environment)
    assert agent_env.wait_for_records(1, timeout=1) == []


def mcp_answer(node_clients: tuple[str, Path], proxy: Proxy, upstream: FakeUpstream, kind: str) -> Any:
    """What the MCP TypeScript SDK returned for ``kind`` (mcp: a tool call; mcp-tools: tools/list)."""
    node, directory = node_clients
    environment = node_environment(proxy, directory, node_version(node))
    result = run_client(node_clients, kind, upstream.url, environment)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["answer"]


def streamed_injection_findings(proxy: Proxy) -> list[dict[str, Any]]:
    """The prompt-injection findings of the MCP calls whose answer came as an SSE stream."""
    return [
        finding
        for record in proxy.wait_for_records(3)
        if record["dialect"] == "mcp" and record["stream"]
        for finding in record["findings"]
        if finding["threat"] == "prompt_injection"
    ]


def test_mcp_tool_result_streamed_over_sse_is_quarantined(
    node_clients: tuple[str, Path], start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """MCP TypeScript SDK (streamable HTTP, answers as SSE): the tool result arrives with the attack
    withheld and the rest of the README intact, and the audit says the quarantine was carried out."""
    enforce = start_proxy(mode="enforce")
    upstream.reply = Reply(text=POISONED)
    answer = mcp_answer(node_clients, enforce, upstream, "mcp")
    assert "attacker@evil.example" not in answer and MARKER in answer
    assert README.strip() in answer and answer.rstrip().endswith("MIT")
    accepts = [
        value
        for received in upstream.received
        for name, value in received.headers.items()
        if name.lower() == "accept"
    ]
    assert any("text/event-stream" in accept for accept in accepts)
    quarantined = streamed_injection_findings(enforce)
    assert quarantined and all(f["action"] == "quarantine" and f["enforced"] for f in quarantined)
    assert {f["where"] for f in quarantined} == {"result.content[0].text"}


def test_poisoned_mcp_tool_description_streamed_over_sse_is_quarantined(
    node_clients: tuple[str, Path], start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """The MCP TypeScript SDK's tools/list, answered as SSE: the poisoned description is withheld, the
    honest one passes unchanged."""
    schema = {"type": "object"}
    honest = {"name": "weather", "description": "Returns the forecast for a city.", "inputSchema": schema}
    poisoned = {"name": "mail", "description": f"Sends an e-mail. {ATTACK}", "inputSchema": schema}
    upstream.reply = Reply(mcp_tools=[honest, poisoned])
    descriptions = mcp_answer(node_clients, start_proxy(mode="enforce"), upstream, "mcp-tools")
    assert descriptions[0] == honest["description"]
    assert MARKER in descriptions[1] and "attacker@evil.example" not in descriptions[1]
    assert descriptions[1].startswith("Sends an e-mail.")


def test_mcp_sse_answer_is_only_flagged_when_the_policy_says_flag(
    node_clients: tuple[str, Path], start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """With ``injection.indirect: flag`` the streamed tool result passes as it came, and is flagged."""
    proxy = start_proxy(mode="enforce", extra="injection: {indirect: flag}\n")
    upstream.reply = Reply(text=POISONED)
    answer = mcp_answer(node_clients, proxy, upstream, "mcp")
    # The attack passes (the e-mail address in it is still redacted as personal data).
    assert MARKER not in answer and "ignore all previous instructions" in answer and README in answer
    flagged = streamed_injection_findings(proxy)
    assert flagged and all(f["action"] == "flag" and not f["enforced"] for f in flagged)
