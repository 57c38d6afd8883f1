"""End to end: what a peer sends and HTTP/1 cannot yet parse (a head before its blank line, a chunk's size
line) is held up to a limit, so neither a client, authenticated or not, nor an upstream can fill the
proxy's memory with one endless line."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest

from addons.wire.heads import MAX_UNPARSED_BYTES
from proxy.commands.localca import UpstreamPKI
from tests.harness import Proxy
from tests.test_e2e_rawstreams import RawServer, open_tunnel, read_until_quiet
from tests.upstream import FakeUpstream

ENDLESS = 256 * MAX_UNPARSED_BYTES
"""What each test offers to send: the proxy holding it all would grow by this much."""
GROWTH = ENDLESS // 4
"""What the proxy's resident memory may grow by meanwhile (allocator noise, a first tunnel's set-up)."""


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, upstream_pki: UpstreamPKI) -> Iterator[Proxy]:
    started = Proxy(tmp_path_factory.mktemp("head-limits"), upstream_pki.ca_cert, mode="enforce")
    yield started
    started.stop()


def resident_mib(proxy: Proxy) -> int:
    with open(f"/proc/{proxy.process.pid}/status") as lines:
        return next(int(line.split()[1]) // 1024 for line in lines if line.startswith("VmRSS"))


def send_endlessly(connection: socket.socket, head: bytes) -> tuple[int, bytes]:
    """Sends ``head`` and then one line that never ends; how much of it went out before the proxy closed
    the connection, and what came back."""
    connection.sendall(head)
    sent = 0
    with contextlib.suppress(OSError):
        while sent < ENDLESS:
            sent += connection.send(b"a" * (256 << 10))
    return sent, read_until_quiet(connection, 1.0)


def test_an_endless_request_head_from_an_unauthenticated_client_is_refused_431(
    proxy: Proxy, upstream: FakeUpstream
) -> None:
    before = resident_mib(proxy)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as connection:
        sent, answer = send_endlessly(connection, b"GET http://localhost/ HTTP/1.1\r\nX-Long: ")
    assert sent < ENDLESS
    assert answer.startswith(b"HTTP/1.1 431")
    assert (resident_mib(proxy) - before) << 20 < GROWTH
    assert proxy.raw(b"GET http://localhost/ HTTP/1.1\r\n\r\n")[0] == 407  # and it serves on


def test_an_endless_chunk_size_line_ends_the_request(proxy: Proxy, upstream: FakeUpstream) -> None:
    before = resident_mib(proxy)
    with open_tunnel(proxy, upstream.port, tls=True) as connection:
        sent, _ = send_endlessly(
            connection,
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost:%d\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\n{}\r\n" % upstream.port,
        )
    assert sent < ENDLESS
    assert (resident_mib(proxy) - before) << 20 < GROWTH
    assert upstream.received == []


def test_a_head_under_the_limit_passes(proxy: Proxy, upstream: FakeUpstream) -> None:
    with open_tunnel(proxy, upstream.port, tls=True) as connection:
        connection.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost:%d\r\n%s"
            b"Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
            # Many long fields: the fake model refuses a line over 64 KiB.
            % (upstream.port, b"".join(b"X-Long-%d: %s\r\n" % (n, b"a" * 60_000) for n in range(12)))
        )
        answer = read_until_quiet(connection)
    assert answer.startswith(b"HTTP/1.1 200")
    assert len(upstream.received) == 1


def test_an_upstream_s_endless_head_ends_as_a_502(proxy: Proxy) -> None:
    server = RawServer(greeting=b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * ENDLESS)
    before = resident_mib(proxy)
    try:
        with open_tunnel(proxy, server.port, tls=False) as connection:
            connection.sendall(b"GET /v1/models HTTP/1.1\r\nHost: localhost:%d\r\n\r\n" % server.port)
            answer = read_until_quiet(connection, 5.0)
    finally:
        server.close()
    assert answer.startswith(b"HTTP/1.1 502")
    assert (resident_mib(proxy) - before) << 20 < GROWTH
