"""End to end: a connection that stops being HTTP (raw bytes in a CONNECT tunnel, plain or inside the
TLS egressguard intercepts, or what follows a 101 to a protocol other than WebSocket) would be relayed
by mitmproxy uninspected both ways. In enforce mode it carries nothing; in observe mode it is recorded."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator

import pytest

from proxy.commands.localca import UpstreamPKI
from tests.harness import Proxy, proxy_authorization

AWS_KEY = "AKIAQWERTY234567ABCD"
GITHUB_TOKEN = "ghp_FWCnNkCLWNb6VBJGUkHrAEj9p3saO0ln0YoP"
UPGRADE = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n"


class RawServer:
    """A plain TCP server that records every byte it receives and answers the first read with
    ``greeting`` followed by a GitHub token: a service speaking its own protocol, over TLS with
    ``pki``'s certificate when given."""

    def __init__(self, greeting: bytes = b"", pki: UpstreamPKI | None = None) -> None:
        self.greeting = greeting
        self.tls: ssl.SSLContext | None = None
        if pki is not None:
            self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.tls.load_cert_chain(pki.server_cert, pki.server_key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = bytearray()
        self.protocols: list[str | None] = []
        """The ALPN protocol each TLS connection agreed on."""
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        answered = False
        with client, contextlib.suppress(OSError):
            client.settimeout(5)
            if self.tls is not None:
                client = self.tls.wrap_socket(client, server_side=True)
                self.protocols.append(client.selected_alpn_protocol())
            while data := client.recv(65536):
                self.received += data
                if not answered:
                    client.sendall(self.greeting + b"token " + GITHUB_TOKEN.encode() + b"\n")
                    answered = True

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def raw_server() -> Iterator[RawServer]:
    server = RawServer()
    yield server
    server.close()


@pytest.fixture
def raw_tls_server(upstream_pki: UpstreamPKI) -> Iterator[RawServer]:
    server = RawServer(pki=upstream_pki)
    yield server
    server.close()


def read_until_quiet(connection: socket.socket, seconds: float = 1.5) -> bytes:
    connection.settimeout(seconds)
    received = b""
    with contextlib.suppress(OSError):
        while data := connection.recv(65536):
            received += data
    return received


def open_tunnel(proxy: Proxy, port: int, *, tls: bool, protocols: tuple[str, ...] = ()) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    connection.sendall(b"CONNECT localhost:%d HTTP/1.1\r\n%s\r\n" % (port, proxy_authorization()))
    assert connection.recv(4096).startswith(b"HTTP/1.1 200")
    if not tls:
        return connection
    context = ssl.create_default_context(cafile=proxy.ca_cert)
    if protocols:
        context.set_alpn_protocols(list(protocols))
    return context.wrap_socket(connection, server_hostname="localhost")


def raw_stream_findings(proxy: Proxy) -> list[tuple[bool, str]]:
    records = proxy.wait_for_records(1)
    return [
        (finding["enforced"], record["decision"])
        for record in records
        for finding in record["findings"]
        if finding["rule"] == "inspection.raw_stream"
    ]


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "inside-tls"])
@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_raw_bytes_in_a_tunnel(
    start_proxy: Callable[..., Proxy], raw_server: RawServer, raw_tls_server: RawServer, tls: bool, mode: str
) -> None:
    """Enforce mode connects a tunnel's raw stream nowhere: the key does not leave and the service's token
    does not come back. Observe mode relays it, recorded either way."""
    proxy = start_proxy(mode=mode)
    raw_server = raw_tls_server if tls else raw_server
    with open_tunnel(proxy, raw_server.port, tls=tls) as connection:
        connection.sendall(b"\x00\x01HELLO " + AWS_KEY.encode() + b"\r\n")
        answer = read_until_quiet(connection)
    enforcing = mode == "enforce"
    assert (AWS_KEY.encode() in raw_server.received) is not enforcing
    assert (GITHUB_TOKEN.encode() in answer) is not enforcing
    assert raw_stream_findings(proxy) == [(enforcing, "blocked" if enforcing else "allowed")]


@pytest.mark.parametrize("protocol", [b"h2c", b"custom-protocol"])
@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_an_upgrade_to_a_protocol_that_is_not_websocket(
    start_proxy: Callable[..., Proxy], mode: str, protocol: bytes
) -> None:
    """A 101 to anything but WebSocket would turn the connection into raw bytes both ways: in enforce mode
    the agent gets a 502 in its API's shape, nothing after the upgrade request leaves and nothing after
    the 101's head comes back."""
    server = RawServer(greeting=UPGRADE % protocol)
    proxy = start_proxy(mode=mode)
    try:
        with open_tunnel(proxy, server.port, tls=False) as connection:
            connection.sendall(
                b"GET /v1/realtime HTTP/1.1\r\nHost: localhost:%d\r\n" % server.port
                + b"Upgrade: %s\r\nConnection: Upgrade\r\n\r\n" % protocol
            )
            head = read_until_quiet(connection, 1.0)
            with contextlib.suppress(OSError):
                connection.sendall(b"RAW " + AWS_KEY.encode() + b"\r\n")
            answer = head + read_until_quiet(connection, 1.0)
    finally:
        server.close()
    enforcing = mode == "enforce"
    assert answer.startswith(b"HTTP/1.1 502" if enforcing else b"HTTP/1.1 101")
    assert (GITHUB_TOKEN.encode() in answer) is not enforcing
    assert (AWS_KEY.encode() in server.received) is not enforcing
    assert raw_stream_findings(proxy) == [(enforcing, "blocked" if enforcing else "allowed")]
    # The upstream's bytes after its 101 are neither relayed nor read as events of a finished exchange.
    assert "Traceback" not in proxy.output() and GITHUB_TOKEN not in proxy.output()


def test_a_destination_relayed_without_interception_carries_raw_bytes(
    start_proxy: Callable[..., Proxy], raw_server: RawServer
) -> None:
    """``inspect: false`` is the policy saying a destination is relayed as it is: its raw stream passes in
    enforce mode, and its CONNECT is the turn."""
    proxy = start_proxy(mode="enforce", allow="[{host: 'localhost:*', inspect: false}]")
    with open_tunnel(proxy, raw_server.port, tls=False) as connection:
        connection.sendall(b"HELLO\r\n")
        answer = read_until_quiet(connection)
    assert GITHUB_TOKEN.encode() in answer
    assert raw_stream_findings(proxy) == []


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_alpn_offers_carry_no_data_upstream(
    start_proxy: Callable[..., Proxy], raw_tls_server: RawServer, mode: str
) -> None:
    """An agent's ALPN offers (any bytes, up to 255 a name) were copied into the proxy's own handshake with
    the upstream, unread: only the protocol ids registered for ALPN are offered upstream."""
    assert raw_tls_server.tls is not None
    raw_tls_server.tls.set_alpn_protocols([GITHUB_TOKEN, "http/1.1"])
    proxy = start_proxy(mode=mode)
    with open_tunnel(
        proxy, raw_tls_server.port, tls=True, protocols=(GITHUB_TOKEN, "http/1.1")
    ) as connection:
        connection.sendall(b"GET / HTTP/1.1\r\nHost: localhost:%d\r\n\r\n" % raw_tls_server.port)
        read_until_quiet(connection)
    assert raw_tls_server.protocols == ["http/1.1"]
