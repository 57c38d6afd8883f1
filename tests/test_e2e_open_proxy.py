"""The proxy's listener as an attacker would use it: an open proxy for anyone who reaches it, a way into
the host's loopback, its cloud metadata service or its link-local and private neighbours. A role that
allows any public host (``'*'``) still opens none of them, in any spelling of their addresses, through a
tunnel or a plain request, and a client without the agent's credentials gets nothing at all."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from tests.harness import Proxy, proxy_authorization

INTERNAL = [
    "127.0.0.1",
    "127.1",
    "127.0.0.2",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "0x7f.0.0.1",
    "0",
    "0.0.0.0",  # noqa: S104 - a destination asked for, not an address bound
    "localhost",
    "LocalHost.",
    "api.localhost",
    "[::1]",
    "[0:0:0:0:0:0:0:1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::127.0.0.1]",
    "[64:ff9b::7f00:1]",
    "169.254.169.254",
    "2852039166",
    "0xa9fea9fe",
    "[::ffff:169.254.169.254]",
    "[fd00:ec2::254]",
    "metadata.google.internal",
    "metadata",
    "100.100.100.200",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.0.1",
    "[fe80::1]",
    "[fc00::1]",
]


@pytest.fixture
def open_role(start_proxy: Callable[..., Proxy]) -> Proxy:
    return start_proxy(mode="enforce", allow="['*', '*:*']")


def _answer(proxy: Proxy, request: bytes, whole: bool = False) -> bytes:
    """What comes back to ``request``: its head, or (``whole``) everything until the proxy closes."""
    answer = b""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as connection:
        connection.sendall(request)
        while (whole or b"\r\n\r\n" not in answer) and (chunk := connection.recv(4096)):
            answer += chunk
    return answer


def test_any_public_host_opens_no_internal_address_in_any_spelling(open_role: Proxy) -> None:
    """CONNECT (then a request in the tunnel) and an absolute-form request to each spelling of loopback,
    metadata, link-local, unique-local and private addresses: refused (403), and a server listening on
    loopback at the port asked for is never connected to."""
    with socket.create_server(("127.0.0.1", 0)) as listening:
        listening.settimeout(0.2)
        port = listening.getsockname()[1]
        for host in INTERNAL:
            inner = f"GET /latest/meta-data/ HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
            for request, whole in (
                (f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n", True),
                (f"GET http://{host}:{port}/latest/meta-data/ HTTP/1.1\r\nHost: {host}:{port}\r\n", False),
            ):
                sent = request.encode() + proxy_authorization() + b"\r\n" + (inner.encode() if whole else b"")
                answer = _answer(open_role, sent, whole)
                assert b"HTTP/1.1 403" in answer, (host, request.split(" ")[0], answer[:300])
                with pytest.raises(TimeoutError):
                    listening.accept()[0].close()


def test_nothing_is_served_or_relayed_without_the_agent_s_credentials(open_role: Proxy) -> None:
    """Without a Proxy-Authorization (or with a wrong one) every request is 407, the proxy's own address
    and public hosts alike: the listener is no open proxy for whoever reaches its port."""
    for credentials in (b"", b"Proxy-Authorization: Basic Ym90Ondyb25n\r\n"):
        for start in (
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n",
            "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n",
            f"GET http://127.0.0.1:{open_role.port}/ HTTP/1.1\r\nHost: 127.0.0.1:{open_role.port}\r\n",
            "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        ):
            answer = _answer(open_role, start.encode() + credentials + b"\r\n")
            assert answer.startswith(b"HTTP/1.1 407") or answer.startswith(b"HTTP/1.1 400"), (
                start,
                answer[:200],
            )
