"""End to end: a request inside an allowed tunnel, or a plain-HTTP request, that names another destination
(a second Host header, an absolute-form target, ``:authority``, forwarding headers) is refused as domain
fronting, and the proxy's own credentials never reach an upstream."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest

from tests.harness import Proxy, proxy_authorization
from tests.upstream import FakeUpstream

BODY = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'


@pytest.fixture
def enforce(start_proxy: Callable[..., Proxy]) -> Proxy:
    # Lazy connections let mitmproxy speak HTTP/2 to a client whatever the HTTP/1 test upstream speaks.
    return start_proxy(mode="enforce", args=("--set", "connection_strategy=lazy"))


def tunnel(proxy: Proxy, port: int, alpn: str = "http/1.1") -> ssl.SSLSocket:
    """A TLS connection to the upstream through a CONNECT tunnel to ``localhost:port``."""
    raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    raw.sendall(
        f"CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n".encode()
        + proxy_authorization()
        + b"\r\n"
    )
    assert b" 200 " in raw.recv(4096)
    context = ssl.create_default_context(cafile=str(proxy.ca_cert))
    context.set_alpn_protocols([alpn])
    return context.wrap_socket(raw, server_hostname="localhost")


def exchange(proxy: Proxy, port: int, head: str) -> int:
    """Send one HTTP/1 request head (and a small JSON body) through a tunnel; the status that comes back,
    0 when the connection is closed without an answer."""
    with tunnel(proxy, port) as tls:
        tls.sendall(
            head.replace("\n", "\r\n").encode() + f"Content-Length: {len(BODY)}\r\n\r\n".encode() + BODY
        )
        answer = b""
        while b"\r\n" not in answer:
            chunk = tls.recv(4096)
            if not chunk:
                return 0
            answer += chunk
    return int(answer.split(b" ", 2)[1])


PATH = "/v1/chat/completions"
HOST = "Host: localhost"
TARGET = "Host: localhost:{port}"


def head(target: str, *headers: str, version: str = "HTTP/1.1") -> str:
    return f"POST {target} {version}\n" + "".join(f"{header}\n" for header in headers)


FRONTED = {
    "second Host header": head(PATH, TARGET, "Host: evil.example"),
    "second Host header first": head(PATH, "Host: evil.example", TARGET),
    "repeated identical Host": head(PATH, HOST, "host: localhost"),
    "absolute-form other host": head(f"https://evil.example{PATH}", TARGET),
    "absolute-form other port": head(f"https://localhost:1{PATH}", TARGET),
    "absolute-form userinfo": head(f"https://localhost@evil.example{PATH}", HOST),
    "absolute-form plain http other host": head(f"http://evil.example{PATH}", HOST),
    "Host other host": head(PATH, "Host: evil.example"),
    "Host other port": head(PATH, "Host: localhost:1"),
    "Host userinfo": head(PATH, "Host: localhost@evil.example"),
    "Host list": head(PATH, "Host: localhost, evil.example"),
    "Host inner space": head(PATH, "Host: localhost evil.example"),
    "Host folded line": head(PATH, HOST, " evil.example"),
    "Host IPv6 literal": head(PATH, "Host: [2001:db8::1]:{port}"),
    "Host unbracketed IPv6": head(PATH, "Host: 2001:db8::1"),
    "Host path": head(PATH, "Host: evil.example/localhost"),
    "X-Forwarded-Host": head(PATH, HOST, "X-Forwarded-Host: evil.example"),
    "X-Forwarded-Host list": head(PATH, HOST, "X-Forwarded-Host: localhost, evil.example"),
    "Forwarded host": head(PATH, HOST, "Forwarded: for=10.0.0.1;host=evil.example"),
    "Forwarded quoted host": head(PATH, HOST, 'Forwarded: proto=https;host="evil.example:443"'),
    # Python's http.client and http.server (urllib3, requests) end a header line at a bare CR as well:
    # a field the proxy reads as one is two there, a Host the proxy never saw among them.
    "Host after a bare CR in another field": head(PATH, TARGET, "X-Note: a\rHost: evil.example"),
    "Host after a bare CR in the Host field": head(PATH, "Host: localhost\rHost: evil.example"),
    "Content-Length after a bare CR": head(PATH, TARGET, "X-Note: a\rContent-Length: 0"),
    "a NUL in a field": head(PATH, TARGET, "X-Note: a\x00b"),
}

ALLOWED = {
    "plain": head(PATH, TARGET),
    "case and trailing dot": head(PATH, "Host: LocalHost.:{port}"),
    "no port": head(PATH, HOST),
    "absolute-form same target": head(f"https://localhost:{{port}}{PATH}", TARGET),
    "HTTP/1.0 without Host": head(PATH, version="HTTP/1.0"),
    "forwarding headers naming the target": head(
        PATH, HOST, "X-Forwarded-Host: localhost:{port}", "Forwarded: for=10.0.0.1;proto=https"
    ),
}


REFUSED_BY_PARSER = {"absolute-form userinfo"}
"""mitmproxy answers these 400 itself, before any hook: nothing is forwarded, and the turn is recorded as
the protocol error it is."""


def requests_recorded(proxy: Proxy, count: int) -> list[dict[str, Any]]:
    """The turns of requests inside tunnels (each tunnel's CONNECT is a turn of its own)."""
    deadline = time.monotonic() + 10
    while True:
        records = [
            record for record in proxy.audit_records() if record.get("method") not in (None, "CONNECT")
        ]
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def test_fronted_requests_inside_a_tunnel_are_refused(enforce: Proxy, upstream: FakeUpstream) -> None:
    """Each way of naming another destination inside an allowed tunnel never reaches the upstream: it is
    refused with 403 and recorded as lateral movement under one rule (or mitmproxy cannot parse it, and
    it is recorded as a protocol error, answered 400)."""
    statuses = {
        variant: exchange(enforce, upstream.port, template.format(port=upstream.port))
        for variant, template in FRONTED.items()
    }
    assert upstream.received == []
    assert statuses == {variant: 400 if variant in REFUSED_BY_PARSER else 403 for variant in FRONTED}
    records = requests_recorded(enforce, len(FRONTED))
    assert len(records) == len(FRONTED)
    unread = [record for record in records if record["decision"] == "protocol_error"]
    assert [(record["status"], record["forwarded"]) for record in unread] == [(400, False)] * len(
        REFUSED_BY_PARSER
    )
    for record in records:
        if record in unread:
            continue
        assert record["decision"] == "blocked" and record["status"] == 403
        assert [
            (finding["threat"], finding["rule"], finding["enforced"]) for finding in record["findings"]
        ] == [("lateral_movement", "egress.domain_fronting", True)]


def test_requests_naming_their_own_tunnel_pass(enforce: Proxy, upstream: FakeUpstream) -> None:
    """Case, a trailing dot, an omitted port, the absolute form of the same target, HTTP/1.0 without a
    Host and forwarding headers naming the target itself are the same destination."""
    statuses = {
        variant: exchange(enforce, upstream.port, template.format(port=upstream.port))
        for variant, template in ALLOWED.items()
    }
    assert 403 not in statuses.values()
    # The test upstream routes origin-form paths only, so the absolute-form request is its 404.
    assert statuses == dict.fromkeys(ALLOWED, 200) | {
        "absolute-form same target": statuses["absolute-form same target"]
    }
    assert len(upstream.received) == len(ALLOWED)


@pytest.mark.parametrize("variant", ["Host other host", "absolute-form other host", "X-Forwarded-Host"])
def test_observe_mode_refuses_fronting_too(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, variant: str
) -> None:
    """Where lateral movement is only observed, a request naming another host than its tunnel is still
    refused, and recorded as refused: forwarded, it would reach whatever host the server routes that name
    to, not the one decided on and recorded."""
    proxy = start_proxy(mode="observe")
    status = exchange(proxy, upstream.port, FRONTED[variant].format(port=upstream.port))
    assert status == 403 and upstream.received == []
    (record,) = requests_recorded(proxy, 1)
    assert record["decision"] == "blocked" and record["egress_host"] == "localhost"
    fronting = [finding for finding in record["findings"] if finding["rule"] == "egress.domain_fronting"]
    assert [finding["enforced"] for finding in fronting] == [True]


def h2_request(proxy: Proxy, port: int, headers: list[tuple[str, str]]) -> int:
    """One HTTP/2 request through a tunnel, headers exactly as given; its status, 0 when reset or closed."""
    with tunnel(proxy, port, alpn="h2") as tls:
        assert tls.selected_alpn_protocol() == "h2"
        connection = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
            )
        )
        connection.initiate_connection()
        connection.send_headers(1, headers)
        connection.send_data(1, BODY, end_stream=True)
        tls.sendall(connection.data_to_send())
        while True:
            data = tls.recv(65535)
            if not data:
                return 0
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    return int(dict(event.headers)[b":status"])
                if isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    return 0
            tls.sendall(connection.data_to_send())


def h2_headers(authority: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", authority),
        (":path", "/v1/chat/completions"),
        ("content-type", "application/json"),
        *extra,
    ]


H2_FRONTED: dict[str, Callable[[int], list[tuple[str, str]]]] = {
    "authority other host": lambda port: h2_headers("evil.example"),
    "host header vs authority": lambda port: h2_headers(f"localhost:{port}", ("host", "evil.example")),
    "authority vs host header": lambda port: h2_headers("evil.example", ("host", f"localhost:{port}")),
    "authority other port": lambda port: h2_headers("localhost:1"),
    "x-forwarded-host": lambda port: h2_headers(f"localhost:{port}", ("x-forwarded-host", "evil.example")),
}


H2_REFUSED_BY_PARSER = {"host header vs authority", "authority vs host header"}
"""The HTTP/2 stack resets a stream whose Host and ``:authority`` differ, before any hook."""


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_http2_authority_and_host_must_name_the_tunnel(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, mode: str
) -> None:
    """Over HTTP/2, ``:authority`` and any Host header both name the tunnel's target, or nothing leaves,
    where lateral movement is only observed too."""
    proxy = start_proxy(mode=mode, args=("--set", "connection_strategy=lazy"))
    statuses = {
        variant: h2_request(proxy, upstream.port, make(upstream.port)) for variant, make in H2_FRONTED.items()
    }
    assert upstream.received == []
    assert statuses == dict.fromkeys(H2_FRONTED, 403) | dict.fromkeys(H2_REFUSED_BY_PARSER, 0)


def test_http2_naming_its_own_tunnel_passes(enforce: Proxy, upstream: FakeUpstream) -> None:
    """The control: a plain HTTP/2 request to the tunnel's target goes through."""
    assert h2_request(enforce, upstream.port, h2_headers(f"localhost:{upstream.port}")) == 200
    assert len(upstream.received) == 1


def test_proxy_credentials_inside_a_tunnel_are_not_forwarded(enforce: Proxy, upstream: FakeUpstream) -> None:
    """A Proxy-Authorization header sent inside a tunnel, once or twice, never reaches the upstream."""
    head = (
        "POST /v1/chat/completions HTTP/1.1\nHost: localhost\n"
        + 2 * proxy_authorization().decode().replace("\r\n", "\n")
    )
    assert exchange(enforce, upstream.port, head) == 200
    assert not any(name.lower() == "proxy-authorization" for name in upstream.received[0].headers)


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_plain_http_request_with_another_host_header_is_refused(
    start_proxy: Callable[..., Proxy], plain_upstream: list[dict[str, Any]], mode: str
) -> None:
    """A plain-HTTP request whose Host names another host than its URL is fronting too, refused where
    lateral movement is only observed as well; one that agrees goes through without the proxy's
    credentials."""
    proxy = start_proxy(mode=mode)
    port = plain_upstream.pop()["port"]
    status, _ = proxy.raw(
        f"GET http://localhost:{port}/ HTTP/1.1\r\nHost: evil.example\r\n".encode()
        + proxy_authorization()
        + b"\r\n"
    )
    assert status == 403 and plain_upstream == []
    status, _ = proxy.raw(
        f"GET http://localhost:{port}/ HTTP/1.1\r\nHost: localhost:{port}\r\n".encode()
        + proxy_authorization()
        + b"\r\n"
    )
    assert status == 200
    (request,) = plain_upstream
    assert not any(name.lower() == "proxy-authorization" for name, _ in request["headers"])
