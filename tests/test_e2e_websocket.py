"""End to end: WebSocket messages through a real egressguard process, text and binary frames alike."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import websockets.exceptions
import websockets.frames
import websockets.sync.client
import websockets.sync.server
from wsproto.frame_protocol import FrameProtocol, Opcode
from wsproto.utilities import generate_accept_token

from proxy.commands.localca import UpstreamPKI
from tests.harness import Proxy, proxy_authorization
from tests.wsupstream import WAIT_S, AgentConnection, WebSocketUpstream

AWS_KEY = "AKIAQWERTY234567ABCD"
HEADERS = {"X-User-Id": "u-1", "X-Purpose": "support", "X-Consent-Id": "c-1"}


BINARY_TEXT = f'{{"delta": "binary key {AWS_KEY}"}}'.encode()
GZIPPED_TEXT = gzip.compress(BINARY_TEXT, mtime=0)
PROTOBUF_WITH_KEY = b"\x08\x96\x01\x12\x14" + AWS_KEY.encode() + b"\x1a\x03\xff\x80\x00"


class Sender(WebSocketUpstream):
    """Answers each connection with its frames (by default one binary frame that is text and one text
    frame), then waits for one message."""

    def __init__(self, pki: UpstreamPKI, frames: tuple[bytes | str, ...] | None = None) -> None:
        self.frames = frames or (BINARY_TEXT, f'{{"delta": "text key {AWS_KEY}"}}')
        super().__init__(pki)

    def _serve(self, connection: websockets.sync.server.ServerConnection) -> None:
        for frame in self.frames:
            connection.send(frame)
        with contextlib.suppress(websockets.exceptions.ConnectionClosed, TimeoutError):
            connection.recv(timeout=WAIT_S)


def connect(
    proxy: Proxy, port: int, max_size: int | None = 1 << 20, path: str = "/v1/realtime"
) -> websockets.sync.client.ClientConnection:
    """An agent's WebSocket connection to ``path`` on ``port`` through ``proxy``; a handshake that runs out
    of time fails the test with the proxy's last log lines."""
    try:
        return websockets.sync.client.connect(
            f"wss://localhost:{port}{path}",
            proxy=proxy.url(),
            ssl=ssl.create_default_context(cafile=proxy.ca_cert),
            additional_headers=HEADERS,
            open_timeout=WAIT_S,
            create_connection=AgentConnection,
            close_timeout=WAIT_S,
            max_size=max_size,
        )
    except TimeoutError as late:
        pytest.fail(
            f"the handshake through the proxy ran out ({late}); its log ends:\n{proxy.output()[-4000:]}"
        )


@pytest.fixture
def sender(upstream_pki: UpstreamPKI) -> Iterator[Sender]:
    server = Sender(upstream_pki)
    yield server
    server.close()


@pytest.fixture
def binary_sender(upstream_pki: UpstreamPKI) -> Iterator[Sender]:
    """Sends a protobuf-like frame with a key among its bytes, a gzip'd frame with one, then "done"."""
    server = Sender(upstream_pki, (PROTOBUF_WITH_KEY, GZIPPED_TEXT, "done"))
    yield server
    server.close()


def receive(proxy: Proxy, port: int) -> list[bytes | str]:
    """The messages an agent receives through the proxy, up to "done"."""
    received: list[bytes | str] = []
    with connect(proxy, port) as connection:
        while "done" not in received:
            received += next_messages(proxy, connection, 1)
        connection.send("bye")
    return received


def next_messages(
    proxy: Proxy, connection: websockets.sync.client.ClientConnection, count: int
) -> list[bytes | str]:
    """The next ``count`` messages the agent receives; fewer (the connection closed, or a wait ran out)
    fail the test with what the proxy recorded of the connection."""
    received: list[bytes | str] = []
    try:
        while len(received) < count:
            received.append(connection.recv(timeout=WAIT_S))
    except (websockets.exceptions.ConnectionClosed, TimeoutError) as ended:
        recorded = [
            (finding["rule"], finding["where"])
            for record in proxy.wait_for_records(1, timeout=2)
            for finding in record["findings"]
        ]
        pytest.fail(
            f"the agent received {received} of {count} messages ({ended!r}); the proxy recorded {recorded}"
        )
    return received


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_key_in_a_binary_frame_that_is_not_text_withholds_it_where_enforced(
    start_proxy: Callable[..., Proxy], binary_sender: Sender, mode: str
) -> None:
    """A binary frame that is not text is read in its printable runs and what its compressed start
    decodes to: it cannot be rewritten, so in enforce mode it is not delivered, a Realtime ``error``
    event in its place (the next frames are)."""
    proxy = start_proxy(mode=mode)
    received = receive(proxy, binary_sender.port)
    enforcing = mode == "enforce"
    if enforcing:
        errors = [json.loads(message)["error"] for message in received[:2]]
        assert [error["code"] for error in errors] == ["egressguard_blocked"] * 2
        received = received[2:]
    assert received == (["done"] if enforcing else [PROTOBUF_WITH_KEY, GZIPPED_TEXT, "done"])
    record = proxy.wait_for_records(1)[0]
    found = [f for f in record["findings"] if f["rule"] == "aws-access-key-id"]
    assert {f["where"] for f in found} == {"websocket[0]", "websocket[1]"}
    assert all(f["enforced"] is enforcing for f in found)


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_key_in_a_binary_frame_is_treated_as_in_a_text_frame(
    start_proxy: Callable[..., Proxy], sender: Sender, mode: str
) -> None:
    """A binary frame whose bytes are text carries a key as a text frame would: redacted in enforce mode
    (the agent still gets a binary frame), recorded either way."""
    proxy = start_proxy(mode=mode)
    with connect(proxy, sender.port) as connection:
        binary, text = next_messages(proxy, connection, 2)
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


GITHUB_TOKEN = "ghp_FWCnNkCLWNb6VBJGUkHrAEj9p3saO0ln0YoP"


class Realtime(WebSocketUpstream):
    """Speaks like a realtime API: by default a reply a delta a message, a key split over two of them, and
    a token whole in a third (else the ``messages`` given); it keeps what the agent sends."""

    def __init__(self, pki: UpstreamPKI, messages: tuple[str, ...] | None = None) -> None:
        deltas = ("The key is AKIAQWERTY", "234567ABCD", f" and {GITHUB_TOKEN}.")
        self.messages = messages or tuple(
            json.dumps({"type": "response.text.delta", "delta": delta}) for delta in deltas
        )
        super().__init__(pki)

    def _serve(self, connection: websockets.sync.server.ServerConnection) -> None:
        for message in self.messages:
            connection.send(message)
        with contextlib.suppress(websockets.exceptions.ConnectionClosed, TimeoutError):
            while True:
                self.received.append(connection.recv(timeout=WAIT_S / 2))


@pytest.fixture
def realtime(upstream_pki: UpstreamPKI) -> Iterator[Realtime]:
    server = Realtime(upstream_pki)
    yield server
    server.close()


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_key_split_across_messages_is_found_in_the_one_that_completes_it(
    start_proxy: Callable[..., Proxy], realtime: Realtime, mode: str
) -> None:
    """Each message is read on from the same field's text in the messages before it, both ways: a key
    split across two is found, and in enforce mode its part in the completing message is redacted (the
    part before has left, so that finding is not enforced); a token whole in one message is redacted
    and enforced as before."""
    proxy = start_proxy(mode=mode, extra="redaction: {requests: true}\n")
    with connect(proxy, realtime.port) as connection:
        deltas = [json.loads(message)["delta"] for message in next_messages(proxy, connection, 3)]
        for text in ("send AKIAQWERTY", "234567ABCD now"):
            connection.send(json.dumps({"type": "input_text", "text": text}))
        deadline = time.monotonic() + WAIT_S
        while len(realtime.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # both reach the server before the connection closes
    enforcing = mode == "enforce"
    assert ("234567ABCD" in deltas[1]) is not enforcing and (GITHUB_TOKEN in deltas[2]) is not enforcing
    sent = [json.loads(message)["text"] for message in realtime.received]
    assert len(sent) == 2 and ("234567ABCD" in sent[1]) is not enforcing
    found = [
        (finding["rule"], finding["enforced"])
        for finding in proxy.wait_for_records(1)[0]["findings"]
        if finding["rule"] in ("aws-access-key-id", "github-pat")
    ]
    assert sorted(found) == [("aws-access-key-id", False), ("github-pat", enforcing)]


def test_a_message_past_the_inspection_cap_closes_the_connection(
    start_proxy: Callable[..., Proxy], realtime: Realtime
) -> None:
    """mitmproxy joins a message's fragments in memory, with no bound: one growing past the inspection cap
    closes the connection (1009 to both sides) before the proxy holds it, and the turn records it."""
    proxy = start_proxy(mode="observe", extra="inspection: {max_body_bytes: 1MiB}\n")
    with (
        connect(proxy, realtime.port, max_size=None) as connection,
        contextlib.suppress(websockets.exceptions.ConnectionClosed),
    ):
        connection.send(b"a" * (256 << 10) for _ in range(64))  # 16 MiB in fragments of 256 KiB
    assert all(len(message) < (1 << 20) for message in realtime.received)
    record = proxy.wait_for_records(1)[0]
    found = [(f["rule"], f["enforced"]) for f in record["findings"] if f["rule"].startswith("inspection.")]
    assert found == [("inspection.message_over_cap", True)] and record["decision"] == "blocked"


def test_pings_through_the_proxy_are_answered(start_proxy: Callable[..., Proxy], realtime: Realtime) -> None:
    """A ping's payload crosses as a stand-in (``addons.wire.wslimits``), and its pong comes back with the
    payload sent: an agent's keepalive, which waits for the pong echoing its ping, still works."""
    proxy = start_proxy(mode="enforce")
    with connect(proxy, realtime.port) as connection:
        for payload in (b"1234", AWS_KEY.encode(), b""):
            assert connection.ping(payload).wait(WAIT_S)


class Closer(Sender):
    """A TLS WebSocket server that closes each connection with ``reason``, or (``reason`` None) waits for
    the agent to close and keeps the close frame it receives."""

    def __init__(self, pki: UpstreamPKI, reason: str | None = None) -> None:
        self.reason = reason
        self.closes: list[websockets.frames.Close] = []
        super().__init__(pki)

    def _serve(self, connection: websockets.sync.server.ServerConnection) -> None:
        if self.reason is not None:
            connection.close(4000, self.reason)
            return
        with contextlib.suppress(TimeoutError):
            try:
                connection.recv(timeout=WAIT_S)
            except websockets.exceptions.ConnectionClosed as closed:
                if closed.rcvd is not None:
                    self.closes.append(closed.rcvd)


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_close_reason_carries_nothing_across(
    start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI, mode: str
) -> None:
    """A close frame's reason (up to 123 bytes of text, relayed unread both ways by mitmproxy) does not
    cross the proxy, from the agent or from the upstream: its code does, so each side still learns why."""
    proxy = start_proxy(mode=mode)
    listener = Closer(upstream_pki)
    try:
        with connect(proxy, listener.port) as connection:
            connection.close(4000, f"key {GITHUB_TOKEN}")
        deadline = time.monotonic() + WAIT_S
        while not listener.closes and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        listener.close()
    assert [(close.code, close.reason) for close in listener.closes] == [(4000, "")]
    closing = Closer(upstream_pki, reason=f"key {GITHUB_TOKEN}")
    try:
        with (
            connect(proxy, closing.port) as connection,
            pytest.raises(websockets.exceptions.ConnectionClosed) as closed,
        ):
            connection.recv(timeout=WAIT_S)
    finally:
        closing.close()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "")


class OneWriteUpstream:
    """A TLS upstream that answers the upgrade with its 101 and its first message in one write, so both
    reach the proxy in one read, then echoes the agent's first message."""

    def __init__(self, pki: UpstreamPKI) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(pki.server_cert, pki.server_key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(WAIT_S)
        self.port = self.listener.getsockname()[1]
        self.received: list[bytes] = []
        self.serving = threading.Thread(target=self._serve, daemon=True)
        self.serving.start()

    def _serve(self) -> None:
        raw, _ = self.listener.accept()
        with self.context.wrap_socket(raw, server_side=True) as connection:
            connection.settimeout(WAIT_S)
            head, rest = read_head(connection)
            key = next(
                line.split(b":", 1)[1].strip()
                for line in head
                if line.lower().startswith(b"sec-websocket-key:")
            )
            frames = FrameProtocol(client=False, extensions=[])
            connection.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: "
                + generate_accept_token(key)
                + b"\r\n\r\n"
                + frames.send_data('{"type": "session.created"}', fin=True)
            )
            (message,) = read_messages(connection, frames, rest, 1)
            self.received.append(message)
            connection.sendall(frames.send_data("echo " + message.decode(), fin=True))
            with contextlib.suppress(OSError):
                connection.recv(1)  # until the agent goes

    def close(self) -> None:
        self.listener.close()
        self.serving.join(WAIT_S)


def read_head(connection: socket.socket) -> tuple[list[bytes], bytes]:
    """An HTTP/1 head's lines, and what came after it in the same reads."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        assert chunk, f"the connection closed before the end of the head: {data!r}"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return head.split(b"\r\n"), rest


def read_messages(connection: socket.socket, frames: FrameProtocol, data: bytes, count: int) -> list[bytes]:
    """The payloads of the next ``count`` text frames, ``data`` read already."""
    messages: list[bytes] = []
    while True:
        frames.receive_bytes(data)
        for frame in frames.received_frames():
            assert frame.opcode == Opcode.TEXT, f"{frame.opcode.name} {frame.payload!r} after {messages}"
            messages.append(str(frame.payload).encode())
        if len(messages) >= count:
            return messages
        data = connection.recv(65536)
        assert data, f"the connection closed after {messages}"


@pytest.mark.parametrize("early", [False, True], ids=["after-101", "with-its-request"])
def test_a_first_message_in_the_same_read_as_the_upgrade_is_relayed(
    start_proxy: Callable[..., Proxy], upstream_pki: UpstreamPKI, early: bool
) -> None:
    """The orderings at the upgrade, provoked rather than left to load: the upstream's first message reaches
    the proxy in one read with its 101, and the agent's first message with its request (before the 101
    came back) or after it. Each reaches the other side (the upgrade is read whole, with the head cap, the
    joined body data and the message limits in place) and the connection goes on."""
    proxy = start_proxy(mode="enforce")
    upstream = OneWriteUpstream(upstream_pki)
    try:
        with socket.create_connection((proxy.listen_host, proxy.port), timeout=WAIT_S) as raw:
            target = f"localhost:{upstream.port}".encode()
            raw.sendall(
                b"CONNECT "
                + target
                + b" HTTP/1.1\r\nHost: "
                + target
                + b"\r\n"
                + proxy_authorization()
                + b"\r\n"
            )
            answer, _ = read_head(raw)
            assert answer[0].split()[1] == b"200", answer
            context = ssl.create_default_context(cafile=proxy.ca_cert)
            with context.wrap_socket(raw, server_hostname="localhost") as connection:
                frames = FrameProtocol(client=True, extensions=[])
                request = (
                    b"GET /v1/realtime HTTP/1.1\r\nHost: " + target + b"\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
                    + base64.b64encode(os.urandom(16))
                    + b"\r\n"
                    + b"".join(f"{name}: {value}\r\n".encode() for name, value in HEADERS.items())
                    + b"\r\n"
                )
                first = frames.send_data('{"type": "input_text", "text": "hi"}', fin=True)
                connection.sendall(request + first if early else request)
                head, rest = read_head(connection)
                assert b" 101 " in head[0], head
                if not early:
                    connection.sendall(first)
                messages = read_messages(connection, frames, rest, 2)
    finally:
        upstream.close()
    assert messages == [b'{"type": "session.created"}', b'echo {"type": "input_text", "text": "hi"}']
    assert upstream.received == [b'{"type": "input_text", "text": "hi"}']
