"""An agent cannot use egressguard to reach egressguard: its admin listener and its own proxy port are
refused as destinations through the proxy in every spelling, even where the role allows the host they
listen on (``localhost`` for a local model server, say), and recorded where the policy only observes."""

from __future__ import annotations

import socket
from collections.abc import Callable

import httpx
import pytest

from tests.harness import Proxy, free_port, proxy_authorization
from tests.test_admin import Admin, _wait_for_port, admin_policy

LOOPBACK_SPELLINGS = [
    "localhost",
    "LOCALHOST.",
    "127.0.0.1",
    "127.1",
    "2130706433",
    "0x7f000001",
    "[::ffff:127.0.0.1]",
]
ALLOWS_LOOPBACK = (
    "[api.openai.com, 'localhost:*', 'LOCALHOST:*', '127.0.0.0/8:*', '[::ffff:127.0.0.0/104]:*']"
)


@pytest.fixture
def start_admin_allowing_loopback(start_proxy: Callable[..., Proxy]) -> Callable[[str], Admin]:
    def start(mode: str) -> Admin:
        port = free_port()
        proxy = start_proxy(mode=mode, allow=ALLOWS_LOOPBACK, extra=admin_policy(port))
        _wait_for_port(port)
        return Admin(proxy, port)

    return start


def _through_proxy(proxy: Proxy, host: str, port: int, path: str) -> tuple[int, bytes]:
    request = (
        f"GET http://{host}:{port}{path} HTTP/1.1\r\nHost: {host}:{port}\r\n".encode()
        + proxy_authorization()
        + b"Connection: close\r\n\r\n"
    )
    return proxy.raw(request)


def _connect_through_proxy(proxy: Proxy, host: str, port: int) -> bytes:
    """CONNECT, then one plain-HTTP request inside the tunnel: everything that comes back until close."""
    request = (
        f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n".encode()
        + proxy_authorization()
        + f"\r\nGET /api/v1/status HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
    )
    answer = b""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as connection:
        connection.sendall(request)
        while chunk := connection.recv(4096):
            answer += chunk
    return answer


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_the_admin_listener_and_the_proxy_port_are_refused_through_the_proxy(
    start_admin_allowing_loopback: Callable[[str], Admin], host: str
) -> None:
    admin = start_admin_allowing_loopback("enforce")
    admin_port = int(admin.url.rsplit(":", 1)[1])
    for port, path in [(admin_port, "/healthz"), (admin_port, "/api/v1/status"), (admin.proxy.port, "/")]:
        status, answer = _through_proxy(admin.proxy, host, port, path)
        assert status == 403, (host, port, answer[:300])
        assert b"own listener" in answer, answer[:300]
    # the same host on another port is still what the role allows: only the listeners are closed
    assert _through_proxy(admin.proxy, host, free_port(), "/")[0] != 403


def test_a_tunnel_to_the_admin_listener_is_refused(
    start_admin_allowing_loopback: Callable[[str], Admin],
) -> None:
    admin = start_admin_allowing_loopback("enforce")
    admin_port = int(admin.url.rsplit(":", 1)[1])
    answer = _connect_through_proxy(admin.proxy, "127.0.0.1", admin_port)
    assert answer.startswith(b"HTTP/1.1 200 ")  # the tunnel opens; its first request carries the refusal
    assert b"HTTP/1.1 403" in answer and b"own listener" in answer, answer[:600]
    assert b'"status"' not in answer


def test_observe_mode_records_a_request_to_an_own_listener(
    start_admin_allowing_loopback: Callable[[str], Admin],
) -> None:
    admin = start_admin_allowing_loopback("observe")
    admin_port = int(admin.url.rsplit(":", 1)[1])
    status, _ = _through_proxy(admin.proxy, "localhost", admin_port, "/healthz")
    assert status == 200
    records = admin.proxy.wait_for_records(1)
    findings = [finding for record in records for finding in record.get("findings", [])]
    assert any(finding["rule"] == "egress.own_listener" and not finding["enforced"] for finding in findings)
    assert httpx.get(admin.url + "/healthz", trust_env=False).status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "egressguard.internal.evil"])
def test_an_origin_form_request_to_the_proxy_port_never_reaches_the_admin_listener(
    start_admin_allowing_loopback: Callable[[str], Admin], host: str
) -> None:
    """The proxy port spoken to as if it were a web server, the Host naming the admin listener."""
    admin = start_admin_allowing_loopback("enforce")
    admin_port = int(admin.url.rsplit(":", 1)[1])
    status, answer = admin.proxy.raw(
        f"GET /api/v1/status HTTP/1.1\r\nHost: {host}:{admin_port}\r\n".encode()
        + proxy_authorization()
        + b"Connection: close\r\n\r\n"
    )
    assert status in (400, 403), answer[:300]
    assert b'"policy' not in answer and b"sha256" not in answer


def test_workers_refuse_the_admin_listener_run_moved_with_admin_listen(
    start_proxy: Callable[..., Proxy],
) -> None:
    """With workers, the host's admin listener is the supervisor's, at the address ``--admin-listen``
    gives, not the policy's: the workers refuse that one too."""
    moved = free_port()
    proxy = start_proxy(
        mode="enforce",
        allow=ALLOWS_LOOPBACK,
        extra=admin_policy(free_port()),
        args=("--workers", "2", "--admin-listen", f"127.0.0.1:{moved}"),
    )
    _wait_for_port(moved)
    for _ in range(4):  # each connection may land on either worker
        status, answer = _through_proxy(proxy, "localhost", moved, "/healthz")
        assert status == 403 and b"own listener" in answer, answer[:300]
