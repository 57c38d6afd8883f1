"""End to end with the JDK's own HTTP client: Java reads no proxy or CA environment variable, so it is
configured with the standard system properties, a truststore holding egressguard's CA, and an
Authenticator for the proxy credentials."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from proxy.localca import make_pki
from tests.harness import AGENT, AGENT_TOKEN, Proxy
from tests.upstream import FakeUpstream

PROGRAM = Path(__file__).parent / "java" / "ProxiedCall.java"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}]}


@pytest.fixture
def named_upstream(tmp_path: Path) -> Iterator[tuple[FakeUpstream, str, Path]]:
    """The fake upstream under this machine's host name: the JDK's proxy selector always connects
    directly to `localhost` and 127.x, whatever http.nonProxyHosts says, so a test on loopback needs a
    name it does not recognise. Yields the upstream, its base URL and the CA that signed it."""
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError:
        address = ""
    if address != "127.0.0.1":
        pytest.skip(f"this machine's name {name!r} does not resolve to 127.0.0.1")
    pki = make_pki(tmp_path / "named-pki", hostnames=(name,))
    server = FakeUpstream(pki)
    yield server, f"https://{name}:{server.port}", pki.ca_cert
    server.close()


@pytest.fixture
def java_proxy(named_upstream: tuple[FakeUpstream, str, Path], start_proxy: Callable[..., Proxy]) -> Proxy:
    _, url, ca = named_upstream
    return start_proxy(upstream_ca=ca, allow=f"[{url.split('//')[1].split(':')[0]}]")


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
    java_proxy: Proxy, named_upstream: tuple[FakeUpstream, str, Path], tmp_path: Path
) -> None:
    """java.net.http.HttpClient with the README's properties reaches the upstream through egressguard."""
    java, keytool = java_tools()
    proxy, url = java_proxy, named_upstream[1]
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
    java_proxy: Proxy, named_upstream: tuple[FakeUpstream, str, Path], tmp_path: Path
) -> None:
    """Why Java needs properties: with only HTTPS_PROXY in its environment the JDK connects directly
    (here the direct connection fails on the upstream's certificate) and egressguard sees nothing."""
    java, keytool = java_tools()
    proxy, url = java_proxy, named_upstream[1]
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
