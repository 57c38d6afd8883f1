"""End to end with the JDK's own HTTP client: Java reads no proxy or CA environment variable, so it is
configured with the standard system properties, a truststore holding egressguard's CA, and an
Authenticator for the proxy credentials."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import AGENT, AGENT_TOKEN, Proxy
from tests.upstream import FakeUpstream

PROGRAM = Path(__file__).parent / "java" / "ProxiedCall.java"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}]}


def java_tools() -> tuple[str, str]:
    java, keytool = shutil.which("java"), shutil.which("keytool")
    if java is None or keytool is None:
        pytest.skip("java and keytool are not installed")
    return java, keytool


def truststore(keytool: str, ca: Path, directory: Path) -> Path:
    """What `keytool -importcert` makes of the file `egressguard ca export` writes."""
    store = directory / "egressguard-truststore.p12"
    subprocess.run(
        [keytool, "-importcert", "-noprompt", "-alias", "egressguard", "-file", str(ca),
         "-keystore", str(store), "-storetype", "PKCS12", "-storepass", "changeit"],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    return store


def java_properties(proxy: Proxy, store: Path) -> list[str]:
    return [
        "-Dhttps.proxyHost=127.0.0.1",
        f"-Dhttps.proxyPort={proxy.port}",
        f"-Dhttps.proxyUser={AGENT}",
        f"-Dhttps.proxyPassword={AGENT_TOKEN}",
        # The JDK refuses Basic proxy authentication for HTTPS tunnels unless this list is emptied.
        "-Djdk.http.auth.tunneling.disabledSchemes=",
        f"-Djavax.net.ssl.trustStore={store}",
        "-Djavax.net.ssl.trustStorePassword=changeit",
    ]


def test_java_http_client_through_egressguard(
    named_proxy: Proxy, named_upstream: tuple[FakeUpstream, str, Path], tmp_path: Path
) -> None:
    """java.net.http.HttpClient with the README's properties reaches the upstream through egressguard."""
    java, keytool = java_tools()
    proxy, url = named_proxy, named_upstream[1]
    store = truststore(keytool, proxy.ca_cert, tmp_path)
    result = subprocess.run(
        [java, *java_properties(proxy, store), str(PROGRAM), f"{url}/v1/chat/completions", json.dumps(CHAT)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["choices"][0]["message"]["content"] == "Hello from the upstream model."
    [record] = proxy.wait_for_records(1)
    assert (record["agent_id"], record["dialect"]) == (AGENT, "openai_chat")


def test_java_ignores_the_proxy_environment(
    named_proxy: Proxy, named_upstream: tuple[FakeUpstream, str, Path], tmp_path: Path
) -> None:
    """Why Java needs properties: with only HTTPS_PROXY in its environment the JDK connects directly
    (here the direct connection fails on the upstream's certificate) and egressguard sees nothing."""
    java, keytool = java_tools()
    proxy, url = named_proxy, named_upstream[1]
    store = truststore(keytool, proxy.ca_cert, tmp_path)
    result = subprocess.run(
        [java, f"-Djavax.net.ssl.trustStore={store}", "-Djavax.net.ssl.trustStorePassword=changeit",
         "-Dhttps.proxyUser=x", "-Dhttps.proxyPassword=x", str(PROGRAM),
         f"{url}/v1/chat/completions", json.dumps(CHAT)],
        env={"PATH": "/usr/bin:/bin", "HTTPS_PROXY": proxy.url(), "https_proxy": proxy.url()},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert proxy.wait_for_records(1, timeout=1) == []
