"""The admin listener as an attacker meets it, on a real proxy: another site's page reaching it through a
name that resolves to loopback (DNS rebinding), requests whose headers say two things, and clients that
open connections and never finish a request."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from proxy.admin.http import MAX_CONNECTIONS
from proxy.commands.localca import UpstreamPKI
from tests.harness import Proxy
from tests.test_admin import Admin, admin, start_admin
from tests.test_admin_tls import admin_pki, start_tls_admin, trusting

__all__ = ["admin", "admin_pki", "start_admin"]


def exchange(admin: Admin, head: str, body: bytes = b"", timeout: float = 15.0) -> tuple[int, bytes]:
    """Send ``head`` (lines without their CRLF ends) and ``body`` on a connection of its own; the answer's
    status and body."""
    port = int(admin.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(head.replace("\n", "\r\n").encode("latin-1") + b"\r\n\r\n" + body)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1]


def get(admin: Admin, path: str, host: str | None, *headers: str) -> tuple[int, bytes]:
    lines = [f"GET {path} HTTP/1.1", *([f"Host: {host}"] if host is not None else []), *headers]
    return exchange(admin, "\n".join(lines))


@pytest.mark.parametrize("path", ["/", "/healthz", "/readyz", "/api/v1/status", "/metrics"])
def test_a_request_naming_another_host_is_refused(start_admin: Callable[..., Admin], path: str) -> None:
    """A page on evil.example whose name is made to resolve to 127.0.0.1 is, to the browser, of the
    listener's own origin: it gets no answer of any route, with a token or without. The listener's
    address, any IP literal, localhost and the names ``admin.hosts`` lists are answered."""
    admin = start_admin()
    port = admin.url.rsplit(":", 1)[1]
    token = f"Authorization: Bearer {admin.read}"
    for host in (
        f"evil.example:{port}",
        "evil.example",
        f"127.0.0.1.evil.example:{port}",
        "2130706433",
        "0x7f.0.0.1",
        "127.1",
        f"localhost.evil.example:{port}",
        "",
        " ",
    ):
        status, body = get(admin, path, host, token)
        assert status in (400, 421), (host, status, body)
    status, _ = get(admin, path, None, token)
    assert status == 400
    for host in (f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", "LOCALHOST", "[::1]:9", "10.1.2.3"):
        assert get(admin, path, host, token)[0] in (200, 503), host


def test_admin_hosts_names_the_listener(start_proxy: Callable[..., Proxy]) -> None:
    """``admin.hosts``: the DNS names the listener is reached by (a scraper's service name)."""
    from tests.harness import free_port
    from tests.test_admin import _wait_for_port

    port = free_port()
    proxy = start_proxy(extra=f'admin: {{listen: "127.0.0.1:{port}", hosts: [egressguard, Admin.Corp.]}}\n')
    _wait_for_port(port)
    admin = Admin(proxy, port)
    token = f"Authorization: Bearer {admin.read}"
    for host in (f"egressguard:{port}", "admin.corp", f"ADMIN.CORP.:{port}"):
        assert get(admin, "/api/v1/status", host, token)[0] == 200, host
    for host in ("evil.egressguard", "corp", "admin.corp.evil.example"):
        assert get(admin, "/api/v1/status", host, token)[0] == 421, host


@pytest.mark.parametrize(
    "headers",
    [
        ("Authorization: Bearer {full}", "Authorization: Bearer {read}"),
        ("Authorization: Bearer {read}", "Authorization: Bearer {full}"),
        ("Authorization: Bearer {full}", "authorization: Bearer {full}"),
        ("Host: evil.example", "Host: 127.0.0.1"),
        ("Content-Length: 0", "Content-Length: 0"),
    ],
)
def test_a_header_sent_twice_is_refused(admin: Admin, headers: tuple[str, str]) -> None:
    """Which of two Authorization headers counts is a guess; a request that sends one twice (or Host, or
    Content-Length) is refused whole, whatever the two say."""
    lines = [line.format(full=admin.full, read=admin.read) for line in headers]
    if not any(line.lower().startswith("host:") for line in lines):
        lines.insert(0, "Host: 127.0.0.1")
    status, body = exchange(admin, "\n".join(["POST /api/v1/reload HTTP/1.1", *lines]))
    assert status == 400, body
    assert b"more than once" in body


@pytest.mark.parametrize(
    "header",
    [
        "Authorization : Bearer {full}",
        " Authorization: Bearer {full}",
        "Author\tization: Bearer {full}",
        "Content-Length: \u00b2",
        "Content-Length: +0",
        "Content-Length: 1_0",
    ],
)
def test_a_malformed_header_is_refused(admin: Admin, header: str) -> None:
    """A header name with white space in or around it, and a length that is not plain digits, are not
    read as something they might be: 400, never 500, never the request served."""
    status, body = exchange(
        admin, "\n".join(["GET /api/v1/status HTTP/1.1", "Host: 127.0.0.1", header.format(full=admin.full)])
    )
    assert status == 400, body


def test_a_head_of_too_many_headers_is_refused(admin: Admin) -> None:
    lines = [f"X-H{number}: 1" for number in range(200)]
    status, _ = exchange(admin, "\n".join(["GET /healthz HTTP/1.1", "Host: 127.0.0.1", *lines]))
    assert status == 400


@contextmanager
def idle_connections(port: int, count: int, first: bytes = b"") -> Iterator[list[socket.socket]]:
    """``count`` connections that send ``first`` and then nothing."""
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            connection = socket.create_connection(("127.0.0.1", port), timeout=5)
            if first:
                connection.sendall(first)
            opened.append(connection)
        yield opened
    finally:
        for connection in opened:
            connection.close()


@pytest.mark.parametrize("first", [b"", b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a"])
def test_idle_and_slow_connections_do_not_lock_the_operator_out(admin: Admin, first: bytes) -> None:
    """Many times the listener's cap of connections, opened and left idle (or sending a head that never
    ends, a byte now and then): the operator's request is still answered at once, and the oldest of the
    unfinished connections are the ones closed to make room."""
    port = int(admin.url.rsplit(":", 1)[1])
    with idle_connections(port, MAX_CONNECTIONS * 3, first) as opened:
        started = time.monotonic()
        status, _ = get(admin, "/api/v1/status", "127.0.0.1", f"Authorization: Bearer {admin.read}")
        assert status == 200
        assert time.monotonic() - started < 5
        for connection in opened[-MAX_CONNECTIONS // 2 :]:
            connection.sendall(b"1")
        closed = 0
        for connection in opened[:MAX_CONNECTIONS]:
            connection.settimeout(5)
            try:
                closed += connection.recv(1) == b""
            except ConnectionError:
                closed += 1
        assert closed == MAX_CONNECTIONS


def test_tls_handshakes_never_finished_do_not_lock_the_operator_out(
    start_proxy: Callable[..., Proxy], admin_pki: UpstreamPKI
) -> None:
    """Over HTTPS a connection that never starts its handshake counts as much as one that never sends
    its head: the operator's request is answered with many times the cap of them open."""
    admin = start_tls_admin(start_proxy, admin_pki)
    port = int(admin.url.rsplit(":", 1)[1])
    with idle_connections(port, MAX_CONNECTIONS * 3):
        started = time.monotonic()
        context = trusting(admin_pki)
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as connection,
        ):
            connection.sendall(
                f"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {admin.read}"
                "\r\n\r\n".encode()
            )
            assert connection.recv(12).startswith(b"HTTP/1.1 200")
        assert time.monotonic() - started < 5


def test_the_metrics_endpoint_needs_the_token_and_names_no_secret(admin: Admin) -> None:
    assert get(admin, "/metrics", "127.0.0.1")[0] == 401


def test_cross_origin_reads_and_form_posts_are_refused(admin: Admin) -> None:
    """No CORS header is ever sent, so another origin's script reads nothing; a form POST from another
    origin carries no bearer token (a form cannot send one) and is refused."""
    status, _ = exchange(
        admin,
        "\n".join(
            [
                "POST /api/v1/freezes/lift HTTP/1.1",
                "Host: 127.0.0.1",
                "Origin: https://evil.example",
                "Content-Type: application/x-www-form-urlencoded",
                "Content-Length: 30",
            ]
        ),
        b"kind=user&identity=a&by=attack",
    )
    assert status == 401
    port = int(admin.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(
            f"OPTIONS /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://evil.example\r\n"
            f"Access-Control-Request-Method: GET\r\nAuthorization: Bearer {admin.full}\r\n\r\n".encode()
        )
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    assert b"access-control-allow" not in answer.lower()
