"""End to end, per client runtime: what the banner says to set routes each client through egressguard.

Each test gives the client exactly the environment the banner prints and nothing else, then checks the
answer came from the upstream and the turn is in the audit log.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import requests

from tests.harness import Proxy
from tests.upstream import FakeUpstream

CHAT: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}]}
ANSWER = "Hello from the upstream model."


@pytest.fixture
def banner_env(agent_env: Proxy, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process configured with the banner's lines alone."""
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.delenv("SSL_CERT_FILE")
    environment = agent_env.banner_environment()
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


@pytest.fixture
def plain_upstream() -> Iterator[FakeUpstream]:
    """The fake model API over plain HTTP, for clients calling an http:// URL."""
    server = FakeUpstream(None)
    yield server
    server.close()


def answered_and_audited(proxy: Proxy, reply: dict[str, Any], host: str = "localhost") -> None:
    assert reply["choices"][0]["message"]["content"] == ANSWER
    [record] = proxy.wait_for_records(1)
    assert (record["egress_host"], record["dialect"], record["status"]) == (host, "openai_chat", 200)


def test_banner_prints_both_proxy_variables_and_every_ca_variable(agent_env: Proxy) -> None:
    """HTTP_PROXY sits next to HTTPS_PROXY with the same URL, each in both spellings; NO_PROXY and
    no_proxy are exported empty; each runtime's CA variable is printed."""
    environment = agent_env.banner_environment()
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        assert environment[name] == agent_env.url(), name
    assert environment["NO_PROXY"] == environment["no_proxy"] == ""
    ca = str(agent_env.ca_cert.resolve())
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"):
        assert environment[name] == ca
    assert environment["NODE_USE_ENV_PROXY"] == "1"


def test_httpx(banner_env: dict[str, str], agent_env: Proxy, upstream: FakeUpstream) -> None:
    """httpx reads HTTPS_PROXY and SSL_CERT_FILE."""
    reply = httpx.post(f"{upstream.url}/v1/chat/completions", json=CHAT, timeout=10)
    answered_and_audited(agent_env, reply.json())


def test_requests(banner_env: dict[str, str], agent_env: Proxy, upstream: FakeUpstream) -> None:
    """requests reads HTTPS_PROXY and REQUESTS_CA_BUNDLE (it ignores SSL_CERT_FILE)."""
    reply = requests.post(f"{upstream.url}/v1/chat/completions", json=CHAT, timeout=10)
    answered_and_audited(agent_env, reply.json())


AIOHTTP_AGENT = """
import asyncio, json, sys
import aiohttp

async def call():
    async with aiohttp.ClientSession(trust_env=True) as session:
        async with session.post(sys.argv[1], json=json.loads(sys.argv[2])) as reply:
            print(json.dumps(await reply.json()))

asyncio.run(call())
"""


def test_aiohttp(banner_env: dict[str, str], agent_env: Proxy, upstream: FakeUpstream) -> None:
    """aiohttp reads HTTPS_PROXY with ``trust_env=True``, and SSL_CERT_FILE when it is imported (it builds
    its TLS context then), so the variables must be set before the agent starts, as they are here."""
    result = subprocess.run(
        [sys.executable, "-c", AIOHTTP_AGENT, f"{upstream.url}/v1/chat/completions", json.dumps(CHAT)],
        env={**os.environ, **banner_env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answered_and_audited(agent_env, json.loads(result.stdout))


@pytest.mark.parametrize(
    "client",
    [
        lambda url: httpx.post(url, json=CHAT, timeout=10).json(),
        lambda url: requests.post(url, json=CHAT, timeout=10).json(),
    ],
    ids=["httpx", "requests"],
)
def test_plain_http_request_is_audited(
    banner_env: dict[str, str],
    agent_env: Proxy,
    plain_upstream: FakeUpstream,
    client: Callable[[str], Any],
) -> None:
    """A client calling an http:// URL goes through HTTP_PROXY and its turn is inspected and audited."""
    answered_and_audited(agent_env, client(f"{plain_upstream.url}/v1/chat/completions"))
    assert plain_upstream.received[-1].json() == CHAT


def test_plain_http_without_http_proxy_is_not_seen(
    agent_env: Proxy, plain_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why the banner prints HTTP_PROXY: with HTTPS_PROXY alone an http:// call leaves unseen."""
    reply = httpx.post(f"{plain_upstream.url}/v1/chat/completions", json=CHAT, timeout=10)
    assert reply.json()["choices"][0]["message"]["content"] == ANSWER
    assert agent_env.wait_for_records(1, timeout=1) == []


def curl(*arguments: str, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("curl")
    if executable is None:
        pytest.skip("curl is not installed")
    return subprocess.run(
        [executable, "--silent", "--show-error", "--max-time", "20", *arguments],
        env={"PATH": "/usr/bin:/bin", **environment},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def curl_chat(url: str, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return curl(
        "-H", "content-type: application/json", "-d", '{"model": "m", "messages": []}',
        f"{url}/v1/chat/completions", environment=environment,
    )  # fmt: skip


def test_curl_with_curl_ca_bundle(agent_env: Proxy, upstream: FakeUpstream) -> None:
    """curl reads HTTPS_PROXY and CURL_CA_BUNDLE."""
    environment = agent_env.banner_environment()
    result = curl_chat(upstream.url, environment)
    assert result.returncode == 0, result.stderr
    assert ANSWER in result.stdout
    assert agent_env.wait_for_records(1)[0]["egress_host"] == "localhost"


def test_curl_skips_ssl_cert_file_when_ssl_cert_dir_is_set(agent_env: Proxy, upstream: FakeUpstream) -> None:
    """Why CURL_CA_BUNDLE is printed: curl reads CURL_CA_BUNDLE, else SSL_CERT_DIR, and SSL_CERT_FILE only
    when neither is set; many images set SSL_CERT_DIR, and then the proxy's certificate is refused."""
    environment = agent_env.banner_environment()
    del environment["CURL_CA_BUNDLE"]
    environment["SSL_CERT_DIR"] = "/etc/ssl/certs"
    assert curl_chat(upstream.url, environment).returncode == 60
    environment["CURL_CA_BUNDLE"] = str(agent_env.ca_cert)
    assert curl_chat(upstream.url, environment).returncode == 0


def test_curl_plain_http_reads_lowercase_http_proxy(agent_env: Proxy, plain_upstream: FakeUpstream) -> None:
    """curl takes the proxy for http:// URLs from lowercase ``http_proxy`` only (uppercase is ignored as
    a CGI hazard), which is why the banner prints both spellings."""
    environment = agent_env.banner_environment()
    proxy_url = environment.pop("http_proxy")
    assert environment["HTTP_PROXY"] == proxy_url
    assert curl_chat(plain_upstream.url, environment).returncode == 0
    assert agent_env.wait_for_records(1, timeout=1) == []
    assert curl_chat(plain_upstream.url, {**environment, "http_proxy": proxy_url}).returncode == 0
    assert agent_env.wait_for_records(1)[0]["status"] == 200


INHERITED = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "no_proxy": "localhost"}
"""What an agent's surroundings may already export in lower case: a stale proxy, a NO_PROXY for local
hosts."""

UPPERCASE_ONLY = ("https_proxy", "http_proxy", "no_proxy", "NO_PROXY")


def urllib_chat(url: str) -> dict[str, Any]:
    """Python's urllib, as the playbook's telemetry posts: it prefers the lower-case variables."""
    request = urllib.request.Request(  # noqa: S310 - the test's own http(s) URL
        f"{url}/v1/chat/completions",
        data=json.dumps(CHAT).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.build_opener().open(request, timeout=10) as reply:
        return dict(json.load(reply))


@pytest.mark.parametrize("plain_http", [False, True], ids=["https", "http"])
def test_banner_lines_override_inherited_lowercase_variables(
    agent_env: Proxy,
    upstream: FakeUpstream,
    plain_upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    plain_http: bool,
) -> None:
    """An agent that exports the banner's lines goes through egressguard even where its surroundings set
    lower-case ``https_proxy``/``http_proxy``/``no_proxy``: urllib reads those first, so upper case alone
    would leave the inherited values in force (``no_proxy=localhost`` sends the call straight out)."""
    url = plain_upstream.url if plain_http else upstream.url
    monkeypatch.delenv("HTTPS_PROXY")
    environment = agent_env.banner_environment()
    for name, value in (
        INHERITED | {k: v for k, v in environment.items() if k not in UPPERCASE_ONLY}
    ).items():
        monkeypatch.setenv(name, value)
    # Straight out: answered unseen over http://, refused by the upstream's certificate over https://.
    with contextlib.suppress(urllib.error.URLError):
        urllib_chat(url)
    assert agent_env.wait_for_records(1, timeout=1) == []
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    answered_and_audited(agent_env, urllib_chat(url))
