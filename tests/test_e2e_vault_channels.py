"""End to end: the vault replaces secrets in request bodies only. What it cannot rewrite there (the
destination's name, the method, the query, a header) is guarded as ``redaction: {requests: true}``
guards it, so vaulting requests never lets more out than redacting them."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable

import pytest

from tests.harness import Proxy, proxy_authorization
from tests.test_e2e_secret_names import NAME, UNREWRITABLE
from tests.upstream import FakeUpstream

AWS_KEY = "AKIAQWERTY234567ABCD"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
REDACTIONS = ["true", "vault"]


def start(start_proxy: Callable[..., Proxy], requests: str) -> Proxy:
    return start_proxy(
        mode="enforce",
        allow="['*.svc.test:*', 'localhost:*']",
        extra=f"redaction: {{requests: {requests}}}\ncompliance: {{required: []}}\n",
    )


def found(proxy: Proxy) -> set[tuple[str, str, bool]]:
    (record,) = proxy.wait_for_records(1)
    return {(finding["rule"], finding["where"], finding["enforced"]) for finding in record["findings"]}


@pytest.mark.parametrize("requests", REDACTIONS)
def test_a_key_in_the_query_and_a_header_is_redacted(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, requests: str
) -> None:
    """The key leaves neither in the target nor in the header, and the record says both were enforced."""
    proxy = start(start_proxy, requests)
    with proxy.http_client() as client:
        answer = client.post(
            f"{upstream.url}/v1/chat/completions?note={AWS_KEY}", json=CHAT, headers={"X-Note": AWS_KEY}
        )
    assert answer.status_code == 200
    (sent,) = upstream.received
    assert AWS_KEY not in sent.path and AWS_KEY not in str(sent.headers)
    places = {
        (where.split(" ")[0], enforced)
        for rule, where, enforced in found(proxy)
        if rule == "aws-access-key-id"
    }
    assert places == {("url", True), ("headers", True)}


@pytest.mark.parametrize("requests", REDACTIONS)
def test_a_key_in_the_destination_s_name_is_refused(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, requests: str
) -> None:
    """A name cannot be rewritten: refused before it is looked up, so no name server reads the key."""
    proxy = start(start_proxy, requests)
    with proxy.http_client() as client:
        answer = client.post(f"https://{NAME}:{upstream.port}/v1/chat/completions", json=CHAT)
    assert answer.status_code == 403 and UNREWRITABLE in answer.text
    assert ("inspection.host", "host", True) in found(proxy)
    assert upstream.received == []


@pytest.mark.parametrize("requests", REDACTIONS)
def test_a_key_as_the_method_is_refused(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, requests: str
) -> None:
    """A method cannot be rewritten either: refused before the request leaves."""
    proxy = start(start_proxy, requests)
    connection = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    connection.sendall(b"CONNECT localhost:%d HTTP/1.1\r\n%s\r\n" % (upstream.port, proxy_authorization()))
    assert connection.recv(4096).startswith(b"HTTP/1.1 200")
    with ssl.create_default_context(cafile=proxy.ca_cert).wrap_socket(
        connection, server_hostname="localhost"
    ) as tls:
        tls.sendall(f"{AWS_KEY} /v1/records HTTP/1.1\r\nHost: localhost:{upstream.port}\r\n\r\n".encode())
        assert tls.recv(65536).startswith(b"HTTP/1.1 403")
    assert ("inspection.method", "method", True) in found(proxy)
    assert upstream.received == []


def test_the_vault_still_replaces_the_body_s_key(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """Guarding the other channels leaves the body to the vault: a placeholder, not a redaction."""
    proxy = start(start_proxy, "vault")
    body = {"model": "m", "messages": [{"role": "user", "content": f"key {AWS_KEY}"}]}
    with proxy.http_client() as client:
        assert client.post(f"{upstream.url}/v1/chat/completions", json=body).status_code == 200
    (sent,) = upstream.received
    assert AWS_KEY not in sent.body.decode() and "egv_" in sent.body.decode()
