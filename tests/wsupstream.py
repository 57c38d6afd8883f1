"""A fake upstream that speaks WebSocket over TLS, every wait of it bounded."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading

import websockets.sync.client
import websockets.sync.server

from proxy.commands.localca import UpstreamPKI

WAIT_S = 20.0
"""The bound on every wait of an agent or a server in a WebSocket test (a handshake through a proxy on a
loaded machine included): one that runs out fails the test where a wait without one would hang it."""


class AgentConnection(websockets.sync.client.ClientConnection):
    """An agent's connection (``create_connection=AgentConnection``) whose every end is bounded. Closing
    it shuts the socket down first: a handshake that runs out of time closes the socket and then joins
    the thread that reads it, which may be blocked in a TLS read (the proxy's session tickets make the
    socket readable with no data behind them); a close alone does not wake that read on Linux, and the
    join would wait for as long as the proxy keeps the connection open."""

    def close_socket(self) -> None:
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)
        super().close_socket()


class WebSocketUpstream:
    """A TLS WebSocket server on a loopback port; a subclass's ``_serve`` answers each connection, and
    may keep what the agent sent in ``received``."""

    def __init__(self, pki: UpstreamPKI) -> None:
        self.received: list[str | bytes] = []
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki.server_cert, pki.server_key)
        self.server = websockets.sync.server.serve(
            self._serve, "127.0.0.1", 0, ssl=context, open_timeout=WAIT_S, close_timeout=WAIT_S
        )
        self.port = self.server.socket.getsockname()[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _serve(self, connection: websockets.sync.server.ServerConnection) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """``shutdown`` waits for every connection's handler to return, without a bound of its own."""
        stopping = threading.Thread(target=self.server.shutdown, daemon=True)
        stopping.start()
        stopping.join(3 * WAIT_S)
        assert not stopping.is_alive(), "the WebSocket server's connection handlers did not end"
