"""End to end: egressguard chained to the proxy a network requires (``--set mode=upstream:URL``). Every
request still goes through its agent's credentials, the allowlist and inspection before the upstream
proxy is asked to connect anywhere, and the upstream proxy's own credentials (``upstream_auth``) are
egressguard's, never an agent's."""

from __future__ import annotations

import base64
import contextlib
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest

from tests.harness import CLIENT_TIMEOUT_S, Proxy
from tests.upstream import FakeUpstream, Reply

AWS_KEY = "AKIAQWERTY234567ABCD"
UPSTREAM_AUTH = "egress:corp-pass"
CONTEXT = {"X-User-Id": "u-1", "X-Purpose": "support", "X-Consent-Id": "c-1"}


class NetworkProxy:
    """The network's CONNECT proxy: it records each tunnel asked of it and the credentials sent, and
    relays bytes; with ``required`` it answers 407 to a CONNECT without those credentials."""

    def __init__(self, required: str | None = None) -> None:
        self.tunnels: list[str] = []
        self.credentials: list[str | None] = []
        network = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                head = b""
                while not head.endswith(b"\r\n\r\n") and len(head) < 65536:
                    line = self.rfile.readline()
                    if not line:
                        return
                    head += line
                request, *lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request.split(" ")
                headers = {
                    name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)
                }
                sent = headers.get("proxy-authorization")
                network.tunnels.append(f"{method} {target}")
                network.credentials.append(sent)
                expected = f"Basic {base64.b64encode(required.encode()).decode()}" if required else None
                if method != "CONNECT" or (expected is not None and sent != expected):
                    self.wfile.write(
                        b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
                    )
                    return
                host, _, port = target.rpartition(":")
                with socket.create_connection((host, int(port)), timeout=CLIENT_TIMEOUT_S) as onward:
                    self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    self.wfile.flush()
                    _relay(self.connection, onward)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _relay(one: socket.socket, other: socket.socket) -> None:
    def pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    back = threading.Thread(target=pump, args=(other, one), daemon=True)
    back.start()
    pump(one, other)
    back.join(CLIENT_TIMEOUT_S)


@pytest.fixture
def network_proxy() -> Iterator[NetworkProxy]:
    server = NetworkProxy(required=UPSTREAM_AUTH)
    yield server
    server.close()


@pytest.fixture
def chained(start_proxy: Callable[..., Proxy], network_proxy: NetworkProxy) -> Proxy:
    return start_proxy(
        mode="enforce",
        extra="redaction: {requests: true}\n",
        args=(
            "--set",
            f"mode=upstream:http://127.0.0.1:{network_proxy.port}",
            "--set",
            f"upstream_auth={UPSTREAM_AUTH}",
        ),
    )


def agent(proxy: Proxy, upstream_url: str) -> openai.OpenAI:
    return proxy.openai_client(upstream_url, headers=CONTEXT)


def test_an_agents_turn_is_inspected_then_tunnelled_through_the_network_proxy(
    chained: Proxy, network_proxy: NetworkProxy, upstream: FakeUpstream
) -> None:
    """The key in the prompt is redacted before the request leaves; the network proxy is asked for a
    tunnel to the model API with egressguard's credentials for it, never the agent's."""
    answer = agent(chained, upstream.url).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"store {AWS_KEY} for me"}]
    )
    assert answer.choices[0].message.content
    sent = upstream.received[-1].json()["messages"][0]["content"]
    assert AWS_KEY not in sent and "[REDACTED" in sent
    assert network_proxy.tunnels == [f"CONNECT localhost:{upstream.port}"]
    expected = f"Basic {base64.b64encode(UPSTREAM_AUTH.encode()).decode()}"
    assert network_proxy.credentials == [expected]
    (record,) = chained.wait_for_records(1)
    assert record["decision"] == "redacted" and record["egress_host"] == "localhost"


def test_a_host_outside_the_allowlist_is_refused_before_the_network_proxy_is_asked(
    chained: Proxy, network_proxy: NetworkProxy
) -> None:
    with pytest.raises(openai.PermissionDeniedError):
        agent(chained, "https://exfil.example.net").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
        )
    assert network_proxy.tunnels == []


def test_a_request_without_agent_credentials_never_reaches_the_network_proxy(
    chained: Proxy, network_proxy: NetworkProxy, upstream: FakeUpstream
) -> None:
    """Chaining does not make egressguard an open proxy to the network's proxy."""
    address = chained.url().split("@")[-1]
    anonymous = httpx.Client(proxy=f"http://{address}", verify=False, timeout=CLIENT_TIMEOUT_S)  # noqa: S501
    with anonymous, pytest.raises(httpx.ProxyError):
        anonymous.get(f"{upstream.url}/v1/models")
    assert network_proxy.tunnels == []


def test_a_streamed_answer_through_the_network_proxy_is_redacted_as_it_arrives(
    chained: Proxy, upstream: FakeUpstream
) -> None:
    upstream.reply = Reply(text=f"The key is {AWS_KEY}, keep it safe.", piece_size=4)
    stream = agent(chained, upstream.url).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "the key?"}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert AWS_KEY not in text and text.startswith("The key is [REDACTED") and text.endswith("keep it safe.")
