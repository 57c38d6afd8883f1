"""End to end with Go's standard library: the default HTTP client through egressguard with what the
banner prints (HTTPS_PROXY, SSL_CERT_FILE)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import AGENT, Proxy
from tests.upstream import FakeUpstream

PROGRAM = Path(__file__).parent / "go" / "proxied_call.go"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}]}


@pytest.fixture(scope="session")
def go_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.skip("go is not installed (Debian: golang-go)")
    directory = tmp_path_factory.mktemp("go")
    binary = directory / "proxied_call"
    environment = {**os.environ, "GOCACHE": str(directory / "cache"), "GOPATH": str(directory / "path")}
    subprocess.run(
        [go, "build", "-o", str(binary), str(PROGRAM)],
        env=environment, capture_output=True, check=True, timeout=600,
    )  # fmt: skip
    return binary


def call(binary: Path, url: str, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), f"{url}/v1/chat/completions", json.dumps(CHAT)],
        env=environment, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_go_default_client_through_egressguard(
    go_client: Path, named_proxy: Proxy, named_upstream: tuple[FakeUpstream, str, Path]
) -> None:
    """net/http's default client reads HTTPS_PROXY (credentials in the URL) and SSL_CERT_FILE."""
    environment = named_proxy.banner_environment()
    result = call(go_client, named_upstream[1], environment)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["choices"][0]["message"]["content"] == "Hello from the upstream model."
    [record] = named_proxy.wait_for_records(1)
    assert (record["agent_id"], record["dialect"]) == (AGENT, "openai_chat")


def test_go_goes_direct_to_localhost(go_client: Path, agent_env: Proxy, upstream: FakeUpstream) -> None:
    """Go never proxies `localhost` or loopback addresses, whatever NO_PROXY says: a model server on
    the agent's own host is reached directly (here refused on the certificate) and not audited."""
    result = call(go_client, upstream.url, agent_env.banner_environment())
    assert result.returncode != 0
    assert agent_env.wait_for_records(1, timeout=1) == []
