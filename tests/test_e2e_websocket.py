"""End to end: WebSocket messages through a real egressguard process, text and binary frames alike."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterator

import pytest
import websockets.sync.client
import websockets.sync.server

from proxy.commands.localca import UpstreamPKI
from tests.harness import Proxy

AWS_KEY = "AKIAQWERTY234567ABCD"
HEADERS = {"X-User-Id": "u-1", "X-Purpose": "support", "X-Consent-Id": "c-1"}


class Sender:
    """A TLS WebSocket server that answers each connection with one binary frame and one text frame."""

    def __init__(self, pki: UpstreamPKI) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki.server_cert, pki.server_key)
        self.server = websockets.sync.server.serve(self._serve, "127.0.0.1", 0, ssl=context)
        self.port = self.server.socket.getsockname()[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _serve(self, connection: websockets.sync.server.ServerConnection) -> None:
        connection.send(f'{{"delta": "binary key {AWS_KEY}"}}'.encode())
        connection.send(f'{{"delta": "text key {AWS_KEY}"}}')
        connection.recv()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def sender(upstream_pki: UpstreamPKI) -> Iterator[Sender]:
    server = Sender(upstream_pki)
    yield server
    server.close()


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_key_in_a_binary_frame_is_treated_as_in_a_text_frame(
    start_proxy: Callable[..., Proxy], sender: Sender, mode: str
) -> None:
    """A binary frame whose bytes are text carries a key as a text frame would: redacted in enforce mode
    (the agent still gets a binary frame), recorded either way."""
    proxy = start_proxy(mode=mode)
    context = ssl.create_default_context(cafile=proxy.ca_cert)
    with websockets.sync.client.connect(
        f"wss://localhost:{sender.port}/v1/realtime",
        proxy=proxy.url(),
        ssl=context,
        additional_headers=HEADERS,
        open_timeout=10,
    ) as connection:
        binary, text = connection.recv(timeout=10), connection.recv(timeout=10)
        connection.send("bye")
    assert isinstance(binary, bytes) and isinstance(text, str)
    enforcing = mode == "enforce"
    assert (AWS_KEY.encode() in binary) is not enforcing and (AWS_KEY in text) is not enforcing
    record = proxy.wait_for_records(1)[0]
    found = [f for f in record["findings"] if f["rule"] == "aws-access-key-id"]
    assert {f["where"] for f in found} >= {"websocket[0]", "websocket[1]"} or sum(
        f["count"] for f in found
    ) >= 2
    assert all(f["enforced"] is enforcing for f in found)
