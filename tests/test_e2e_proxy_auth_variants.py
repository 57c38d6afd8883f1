"""What an agent can send as proxy credentials: only its own name with its own token, as Basic in
``Proxy-Authorization``, opens a turn; every other spelling gets 407. An agent cannot claim another
agent's identity through headers it controls, and no token tried, right or wrong, reaches the logs."""

from __future__ import annotations

import base64
import socket
from collections.abc import Callable

import pytest

from tests.harness import AGENT, AGENT_TOKEN, Proxy, free_port

OTHER = "other-bot"
OTHER_TOKEN = OTHER[::-1]
WRONG_TOKEN = "wr0ng-guess-" + AGENT_TOKEN[::-1]


def _whole_response(connection: socket.socket) -> bytes:
    """One HTTP/1.1 response read to the end of its body (by its Content-Length), whatever the reads bring."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = connection.recv(65536)
        assert chunk, answer[:200]
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    fields = (line.split(b":", 1) for line in head.split(b"\r\n")[1:])
    length = next(int(value) for name, value in fields if name.strip().lower() == b"content-length")
    while len(body) < length:
        chunk = connection.recv(65536)
        assert chunk, answer[:200]
        body += chunk
    return head + b"\r\n\r\n" + body


def _basic(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return "Basic " + base64.b64encode(raw).decode()


REFUSED_HEADER_LINES = [
    "",
    f"Authorization: {_basic(f'{AGENT}:{AGENT_TOKEN}')}",
    f"X-Proxy-Authorization: {_basic(f'{AGENT}:{AGENT_TOKEN}')}",
    f"Proxy-Authorization: {_basic(f'{AGENT}:{WRONG_TOKEN}')}",
    f"Proxy-Authorization: {_basic(f'{AGENT}:{AGENT_TOKEN.upper()}')}",
    f"Proxy-Authorization: {_basic(f'{AGENT}:{AGENT_TOKEN} ')}",
    f"Proxy-Authorization: {_basic(f'{AGENT}:{AGENT_TOKEN[:-1]}')}",
    f"Proxy-Authorization: {_basic(f'{AGENT}:{AGENT_TOKEN}'.encode() + bytes([0]))}",
    f"Proxy-Authorization: {_basic(f'{AGENT}:')}",
    f"Proxy-Authorization: {_basic(f':{AGENT_TOKEN}')}",
    f"Proxy-Authorization: {_basic(AGENT_TOKEN)}",
    f"Proxy-Authorization: {_basic(f'{OTHER}:{AGENT_TOKEN}')}",
    f"Proxy-Authorization: {_basic(f'{AGENT}:{OTHER_TOKEN}')}",
    f"Proxy-Authorization: {_basic(f'{AGENT.upper()}:{AGENT_TOKEN}')}",
    f"Proxy-Authorization: {_basic(f'unknown:{AGENT_TOKEN}')}",
    f"Proxy-Authorization: Bearer {AGENT_TOKEN}",
    f"Proxy-Authorization: Digest {AGENT_TOKEN}",
    f"Proxy-Authorization: {AGENT}:{AGENT_TOKEN}",
    f"Proxy-Authorization: Basic {AGENT}:{AGENT_TOKEN}",
    "Proxy-Authorization: Basic",
    "Proxy-Authorization: Basic !!!!",
    f"Proxy-Authorization: {_basic(f'{AGENT}:{AGENT_TOKEN}'.encode('utf-16'))}",
]


def _request(proxy: Proxy, target: str, header_lines: list[str]) -> bytes:
    lines = [f"GET http://{target}/ HTTP/1.1", f"Host: {target}", *header_lines, "Connection: close"]
    answer = b""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as connection:
        connection.sendall(("\r\n".join(line for line in lines if line) + "\r\n\r\n").encode())
        while chunk := connection.recv(4096):
            answer += chunk
    return answer


@pytest.fixture
def enforcing(start_proxy: Callable[..., Proxy]) -> Proxy:
    return start_proxy(mode="enforce", other_agent=OTHER)


def test_only_the_agent_s_own_name_and_token_pass(enforcing: Proxy) -> None:
    target = f"localhost:{free_port()}"
    for line in REFUSED_HEADER_LINES:
        answer = _request(enforcing, target, [line])
        assert answer.startswith(b"HTTP/1.1 407 "), (line, answer[:200])
    for good in (_basic(f"{AGENT}:{AGENT_TOKEN}"), "basic " + _basic(f"{AGENT}:{AGENT_TOKEN}")[6:]):
        answer = _request(enforcing, target, [f"Proxy-Authorization: {good}"])
        assert not answer.startswith(b"HTTP/1.1 407 "), (good, answer[:200])
    logged = enforcing.output() + "".join(
        path.read_text(errors="replace") for path in (enforcing.data_dir / "audit").rglob("*.jsonl")
    )
    for secret in (AGENT_TOKEN, WRONG_TOKEN, OTHER_TOKEN, AGENT_TOKEN.upper()):
        assert secret not in logged
        assert base64.b64encode(f"{AGENT}:{secret}".encode()).decode() not in logged


def test_headers_an_agent_controls_never_change_who_it_is(enforcing: Proxy) -> None:
    """An agent naming another in any header it sends stays itself in the audit log."""
    claims = [
        f"X-Agent-Id: {OTHER}",
        f"X-Egressguard-Agent: {OTHER}",
        "X-Role: admin",
        f"X-User-Id: {OTHER}",
        f"X-Forwarded-User: {OTHER}",
        f"Proxy-Authorization: {_basic(f'{AGENT}:{AGENT_TOKEN}')}",
        f"Proxy-Authorization: {_basic(f'{OTHER}:{OTHER_TOKEN}')}",
    ]
    answer = _request(enforcing, f"localhost:{free_port()}", claims)
    assert answer.startswith(b"HTTP/1.1 407 ")  # two credentials are no credential
    answer = _request(enforcing, f"localhost:{free_port()}", [*claims[:5], claims[5]])
    assert not answer.startswith(b"HTTP/1.1 407 ")
    records = enforcing.wait_for_records(1)
    assert records and all(record["agent_id"] == AGENT for record in records)


def test_inside_a_tunnel_another_agent_s_credentials_change_nothing(enforcing: Proxy) -> None:
    """A tunnel is its CONNECT's agent for its life: a request inside it naming another agent with that
    agent's own valid token is still recorded as the tunnel's agent, and the credentials do not travel on."""
    target = f"localhost:{free_port()}"
    request = (
        f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
        f"Proxy-Authorization: {_basic(f'{AGENT}:{AGENT_TOKEN}')}\r\n\r\n"
        f"GET / HTTP/1.1\r\nHost: {target}\r\n"
        f"Proxy-Authorization: {_basic(f'{OTHER}:{OTHER_TOKEN}')}\r\nX-Agent-Id: {OTHER}\r\n"
        "Connection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", enforcing.port), timeout=10) as connection:
        connection.sendall(request.encode())
        while connection.recv(4096):
            pass
    records = enforcing.wait_for_records(1)
    assert records and all(record["agent_id"] == AGENT for record in records)


def test_each_plain_http_request_on_a_kept_alive_connection_needs_credentials(enforcing: Proxy) -> None:
    """Only a CONNECT authenticates a connection: after a plain-HTTP request with credentials, the next
    one on the same connection without them gets 407, not the first one's identity."""
    target = "egressguard.internal"  # answered in-process, so the connection stays open between the two
    credentials = _basic(f"{AGENT}:{AGENT_TOKEN}")
    first = f"GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {credentials}\r\n\r\n"
    second = f"GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
    answer = b""
    with socket.create_connection(("127.0.0.1", enforcing.port), timeout=10) as connection:
        connection.sendall(first.encode())
        answer = _whole_response(connection)
        assert not answer.startswith(b"HTTP/1.1 407 "), answer[:200]
        connection.sendall(second.encode())
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 407 "), answer[:200]
