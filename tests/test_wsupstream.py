"""The WebSocket test helpers: an agent's handshake that runs out of time ends the test, not hangs it."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator

import pytest
import websockets.sync.client

from proxy.commands.localca import UpstreamPKI
from tests.wsupstream import AgentConnection


@pytest.fixture
def silent_port(upstream_pki: UpstreamPKI) -> Iterator[int]:
    """A TLS server that reads an upgrade request and never answers it, keeping the connection open."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(upstream_pki.server_cert, upstream_pki.server_key)
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with_tls = context.wrap_socket(connection, server_side=True)
            with_tls.recv(65536)
            held.append(with_tls)

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()
    for connection in held:
        connection.close()


def test_a_handshake_that_runs_out_of_time_ends_with_its_timeout(
    silent_port: int, upstream_pki: UpstreamPKI
) -> None:
    """The server's TLS session tickets leave the agent's reading thread blocked in a TLS read; the
    agent's connection wakes it when the handshake runs out, where a plain client waits on it for as
    long as the server keeps the connection open (here, until the test's own timeout fails it)."""
    with pytest.raises(TimeoutError):
        websockets.sync.client.connect(
            f"wss://localhost:{silent_port}/",
            ssl=ssl.create_default_context(cafile=upstream_pki.ca_cert),
            open_timeout=1,
            create_connection=AgentConnection,
        )
