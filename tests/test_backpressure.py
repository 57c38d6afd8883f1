"""A peer that sends on while a hook decides is held in its socket: the proxy stops reading once the
connection's layers hold ``MAX_QUEUED_BYTES``, and reads on once the hook has returned."""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from mitmproxy import http, options
from mitmproxy.tools.dump import DumpMaster

from addons.wire.backpressure import MAX_QUEUED_BYTES, HeldReads, queued_bytes
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


@pytest.fixture
def proxy() -> Iterator[tuple[int, DecidingSlowly]]:
    port, hook = free_port(), DecidingSlowly()
    loop = asyncio.new_event_loop()
    masters: list[DumpMaster] = []

    async def serve() -> None:
        master = DumpMaster(
            options.Options(listen_host="127.0.0.1", listen_port=port),
            with_termlog=False,
            with_dumper=False,
        )
        master.addons.add(HeldReads(), hook)
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
    yield port, hook
    hook.release.set()
    loop.call_soon_threadsafe(masters[0].shutdown)
    thread.join(10)


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
    assert queued_bytes(layers) == 7  # type: ignore[arg-type]
