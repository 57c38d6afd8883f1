"""A peer that sends on while a hook decides is held in its socket: the proxy stops reading once the
connection's layers hold ``MAX_QUEUED_BYTES``, and reads on once the hook has returned."""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http, options
from mitmproxy.tools.dump import DumpMaster

from addons.wire.backpressure import EVENT_OVERHEAD_BYTES, MAX_QUEUED_BYTES, HeldReads, queued_bytes
from proxy.commands.localca import make_pki
from tests.harness import free_port

CHUNK = 1 << 16
SENT_AT_MOST = 64 << 20
STALL_S = 1.0


class DecidingSlowly:
    """A ``requestheaders`` hook that returns only when the test lets it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        self.entered.set()
        await asyncio.to_thread(self.release.wait, 60)


@contextlib.contextmanager
def running_proxy(*addons: object, **settings: Any) -> Iterator[int]:
    """mitmproxy with ``addons`` on a free port of its own event loop, in a thread; its port."""
    port = free_port()
    loop = asyncio.new_event_loop()
    masters: list[DumpMaster] = []

    async def serve() -> None:
        master = DumpMaster(
            options.Options(listen_host="127.0.0.1", listen_port=port),
            with_termlog=False,
            with_dumper=False,
        )
        master.addons.add(*addons)
        master.options.update(**settings)
        masters.append(master)
        await master.run()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the proxy did not start listening"
            time.sleep(0.05)
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(masters[0].shutdown)
        thread.join(10)


@pytest.fixture
def proxy() -> Iterator[tuple[int, DecidingSlowly]]:
    hook = DecidingSlowly()
    with running_proxy(HeldReads(), hook) as port:
        yield port, hook
        hook.release.set()


def test_a_body_sent_on_while_its_head_is_decided_waits_in_the_socket(
    proxy: tuple[int, DecidingSlowly],
) -> None:
    port, hook = proxy
    closed_port = free_port()
    with socket.create_connection(("127.0.0.1", port)) as agent:
        agent.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHUNK)
        agent.sendall(
            f"POST http://127.0.0.1:{closed_port}/upload HTTP/1.1\r\nHost: 127.0.0.1:{closed_port}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        assert hook.entered.wait(10)
        agent.setblocking(False)
        chunk = f"{CHUNK:x}\r\n".encode() + b"x" * CHUNK + b"\r\n"
        pending, sent = b"", 0
        while sent < SENT_AT_MOST:
            pending = pending or chunk
            if not select.select([], [agent], [], STALL_S)[1]:
                break
            written = agent.send(pending)
            sent, pending = sent + written, pending[written:]
        # What the kernel's buffers on both sides hold, plus the proxy's limit and one read past it.
        assert sent < 24 << 20, f"the proxy read {sent} bytes while its hook was deciding"
        assert sent > MAX_QUEUED_BYTES

        hook.release.set()
        agent.setblocking(True)
        agent.settimeout(30)
        agent.sendall(pending + b"0\r\n\r\n")
        answer = agent.recv(4096)
    assert answer.startswith(b"HTTP/1.1 502"), answer[:200]


def test_only_the_data_a_paused_layer_holds_counts() -> None:
    class Layer:
        def __init__(self, paused: bool, queued: list[object]) -> None:
            self._paused = object() if paused else None
            self._paused_event_queue = queued

    class Data:
        def __init__(self, size: int) -> None:
            self.data = b"x" * size

    layers = [Layer(True, [Data(3), object(), Data(4)]), Layer(False, [Data(100)])]
    assert queued_bytes(layers) == 7 + 3 * EVENT_OVERHEAD_BYTES  # type: ignore[arg-type]


def test_a_streamed_body_waiting_for_its_upstream_s_handshake_reaches_it(tmp_path: Path) -> None:
    """A body streamed on (over ``stream_large_bodies``) waits for its upstream connection, whose TLS
    handshake needs the upstream's answer read: held past the limit meanwhile, the agent is read on once
    the handshake is done, and the whole body arrives."""
    pki, body = make_pki(tmp_path), 4 << 20
    received = bytearray()
    upstream = socket.create_server(("127.0.0.1", 0))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)

    def serve_slowly() -> None:
        accepted, _ = upstream.accept()
        time.sleep(0.5)  # a distant upstream: the agent sends on while the handshake is under way
        with context.wrap_socket(accepted, server_side=True) as tls:
            tls.settimeout(30)
            while len(received) < body and (data := tls.recv(1 << 16)):
                received.extend(data)

    server = threading.Thread(target=serve_slowly, daemon=True)
    server.start()
    settings = {"stream_large_bodies": "64k", "ssl_verify_upstream_trusted_ca": str(pki.ca_cert)}
    with (
        running_proxy(HeldReads(), **settings) as port,
        socket.create_connection(("127.0.0.1", port)) as agent,
    ):
        upstream_port = upstream.getsockname()[1]
        agent.sendall(
            f"POST https://localhost:{upstream_port}/upload HTTP/1.1\r\nHost: localhost:{upstream_port}\r\n"
            f"Content-Length: {body}\r\n\r\n".encode()
        )
        agent.settimeout(30)
        agent.sendall(b"x" * body)
        server.join(30)
    upstream.close()
    assert len(received) >= body, f"the upstream received {len(received)} of the body's {body} bytes"
