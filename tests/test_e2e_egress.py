"""End to end: egress allowlists, the internal-address guard and first-seen destinations."""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import openai
import pytest

from proxy.commands.localca import UpstreamPKI
from tests.harness import CLIENT_TIMEOUT_S, Proxy
from tests.upstream import FakeUpstream


def connect(proxy: Proxy, target: str) -> tuple[int, bytes]:
    """CONNECT to ``target``, speak TLS through the tunnel (trusting egressguard's CA) and send one request;
    the status and answer of that request, since a refused tunnel answers its first request itself."""
    host = target.rsplit(":", 1)[0].strip("[]")
    context = ssl.create_default_context(cafile=str(proxy.ca_cert))
    context.check_hostname = False
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        raw.sendall(
            f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n".encode() + proxy.authorization() + b"\r\n"
        )
        assert b" 200 " in raw.recv(4096)
        with context.wrap_socket(raw, server_hostname=host if not _is_ip(host) else None) as tls:
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += tls.recv(4096)
            head, _, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            while length is not None and len(body) < int(length[1]):
                body += tls.recv(4096)
    return int(answer.split(b" ", 2)[1]), head + b"\r\n\r\n" + body


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


def chat(upstream_url: str) -> str | None:
    client = openai.OpenAI(base_url=f"{upstream_url}/v1", api_key="sk-test", max_retries=0)
    reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    return reply.choices[0].message.content


def use_proxy(monkeypatch: pytest.MonkeyPatch, proxy: Proxy) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca_cert))


def test_enforce_refuses_host_outside_allowlist_over_https(shared_proxy: Callable[..., Proxy]) -> None:
    """In enforce mode a tunnel to a host outside the role's allowlist answers its first request 403 with
    the reason and the CONNECT's event id; the CONNECT is the one recorded turn."""
    proxy = shared_proxy(mode="enforce")
    status, answer = connect(proxy, "93.184.216.34:443")
    assert status == 403
    assert b"not allowlisted" in answer.lower() or b"allow" in answer.lower()
    (record,) = proxy.wait_for_records(1)
    assert record["decision"] == "blocked" and record["egress_host"] == "93.184.216.34"
    assert record["event_id"].encode() in answer
    assert [finding["threat"] for finding in record["findings"]] == ["lateral_movement"]
    assert record["findings"][0]["enforced"] is True


def test_enforce_refuses_host_outside_allowlist_over_http(shared_proxy: Callable[..., Proxy]) -> None:
    """Plain-HTTP proxying to a host outside the allowlist gets 403 too."""
    proxy = shared_proxy(mode="enforce")
    status, _ = proxy.raw(
        b"GET http://93.184.216.34/ HTTP/1.1\r\nHost: 93.184.216.34\r\n" + proxy.authorization() + b"\r\n"
    )
    assert status == 403


@pytest.mark.parametrize(
    "target",
    [
        "169.254.169.254:80",
        "metadata.google.internal:80",
        "127.0.0.1:{port}",
        "2130706433:{port}",
        "0x7f000001:{port}",
        "0177.0.0.1:{port}",
        "127.1:{port}",
        "[::ffff:127.0.0.1]:{port}",
        "[::1]:{port}",
        "localhost:{port}",
        "10.0.0.1:443",
    ],
)
def test_wildcard_allow_never_opens_internal_addresses(
    shared_proxy: Callable[..., Proxy], upstream: FakeUpstream, target: str
) -> None:
    """With allow: ["*"], metadata and loopback in every spelling still get 403, and nothing connects."""
    proxy = shared_proxy(mode="enforce", allow='["*"]')
    status, _ = connect(proxy, target.format(port=upstream.port))
    assert status == 403
    assert upstream.received == []


def test_observe_mode_records_but_does_not_block(
    shared_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Observe mode lets an internal destination through and records what enforce would have done."""
    proxy = shared_proxy(mode="observe")
    use_proxy(monkeypatch, proxy)
    assert chat(f"https://127.0.0.1:{upstream.port}") == "Hello from the upstream model."
    (record,) = proxy.wait_for_records(1)
    assert record["decision"] == "allowed"
    (refusal,) = [finding for finding in record["findings"] if finding["action"] == "block"]
    assert refusal["threat"] == "lateral_movement" and refusal["enforced"] is False


def get_through(proxy: Proxy, host: str, port: int, plain_upstream: list[dict[str, Any]]) -> None:
    """Sends a plain GET for `host:port` through the proxy and checks it reached the upstream."""
    status, _ = proxy.raw(
        f"GET http://{host}:{port}/ HTTP/1.1\r\nHost: {host}:{port}\r\n".encode()
        + proxy.authorization()
        + b"\r\n"
    )
    assert status == 200 and len(plain_upstream) == 1


def test_observe_mode_connects_a_name_outside_the_allowlist_to_the_address_it_recorded(
    start_proxy: Callable[..., Proxy], plain_upstream: list[dict[str, Any]]
) -> None:
    """Where lateral movement is only observed, a name outside the allowlist is looked up and decided on
    its address: the record says it is a loopback address, where it said only "not in the allowlist", and
    the request reaches that address."""
    port = plain_upstream.pop()["port"]
    proxy = start_proxy(mode="observe", hosts={"sneaky.example": "127.0.0.1"})
    get_through(proxy, "sneaky.example", port, plain_upstream)
    (record,) = proxy.wait_for_records(1)
    assert record["egress_host"] == "sneaky.example"
    (refusal,) = [finding for finding in record["findings"] if finding["action"] == "block"]
    assert (refusal["rule"], refusal["enforced"]) == ("egress.internal_address", False)
    assert "resolves to 127.0.0.1" in refusal["signal"]


@pytest.mark.parametrize("spelling", ["2130706433", "0x7f000001", "0177.0.0.1", "127.1", "0x7f.1"])
def test_observe_mode_connects_an_address_in_any_spelling_to_the_address_it_recorded(
    shared_proxy: Callable[..., Proxy], plain_upstream: list[dict[str, Any]], spelling: str
) -> None:
    """Where lateral movement is only observed, an address spelled as inet_aton reads it reaches the
    address the record names, and the record says which address that spelling means."""
    port = plain_upstream.pop()["port"]
    proxy = shared_proxy(mode="observe", allow="[api.openai.com]")
    get_through(proxy, spelling, port, plain_upstream)
    (record,) = proxy.wait_for_records(1)
    (refusal,) = [finding for finding in record["findings"] if finding["action"] == "block"]
    assert (refusal["rule"], refusal["enforced"]) == ("egress.internal_address", False)
    assert refusal["signal"].startswith(f"{spelling} means 127.0.0.1, a loopback address")


def test_allowlisted_host_passes_in_enforce_mode(
    shared_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An explicitly allowed internal name (localhost) works in enforce mode."""
    proxy = shared_proxy(mode="enforce")
    use_proxy(monkeypatch, proxy)
    assert chat(upstream.url) == "Hello from the upstream model."


def test_domain_fronting_refused(shared_proxy: Callable[..., Proxy], upstream: FakeUpstream) -> None:
    """A Host header that differs from the CONNECT target is refused as domain fronting."""
    proxy = shared_proxy(mode="enforce")
    context = ssl.create_default_context(cafile=str(proxy.ca_cert))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        raw.sendall(
            f"CONNECT localhost:{upstream.port} HTTP/1.1\r\nHost: localhost\r\n".encode()
            + proxy.authorization()
            + b"\r\n"
        )
        assert b" 200 " in raw.recv(4096)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 2\r\n\r\n{}"
            )
            answer = tls.recv(4096)
    assert answer.split(b" ", 2)[1] == b"403"
    assert upstream.received == []


def test_first_seen_once_per_host_and_survives_restart(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first request to a host is a low first-seen finding; repeats and restarts add none."""
    proxy = start_proxy()
    use_proxy(monkeypatch, proxy)
    chat(upstream.url)
    chat(upstream.url)
    proxy.restart()
    use_proxy(monkeypatch, proxy)
    chat(upstream.url)
    records = proxy.wait_for_records(3)
    first_seen = [
        [f["rule"] for f in record["findings"] if f["rule"] == "egress.first_seen"] for record in records
    ]
    assert first_seen == [["egress.first_seen"], [], []]


def test_inspect_false_destination_is_relayed_without_interception(
    shared_proxy: Callable[..., Proxy], upstream: FakeUpstream, upstream_pki: UpstreamPKI
) -> None:
    """An allow entry with `inspect: false` is tunnelled untouched: the client sees the upstream's own
    certificate, and the CONNECT is recorded."""
    proxy = shared_proxy(mode="enforce", allow="[{host: 'localhost:*', inspect: false}]")
    context = ssl.create_default_context(cafile=upstream_pki.ca_cert)
    with httpx.Client(proxy=proxy.url(), verify=context, timeout=CLIENT_TIMEOUT_S) as client:
        reply = client.post(f"{upstream.url}/v1/chat/completions", json={"model": "m", "messages": []})
    assert reply.status_code == 200
    (record,) = proxy.wait_for_records(1)
    assert (record["method"], record["egress_host"], record["decision"]) == (
        "CONNECT",
        "localhost",
        "allowed",
    )
    assert [finding["rule"] for finding in record["findings"]] == ["egress.first_seen"]


def test_inspect_false_tunnel_without_a_server_name_is_intercepted(
    shared_proxy: Callable[..., Proxy], upstream: FakeUpstream, upstream_pki: UpstreamPKI
) -> None:
    """A hello without a server name lets the server pick its site by the Host header inside the TLS: such
    a tunnel to an `inspect: false` host is intercepted, so a Host naming another host is seen and
    refused, never relayed unread to a server that may route it there."""
    proxy = shared_proxy(mode="enforce", allow="[{host: 'localhost:*', inspect: false}]")
    context = ssl.create_default_context(cafile=upstream_pki.ca_cert)
    context.load_verify_locations(cafile=proxy.ca_cert)
    context.check_hostname = False
    target = f"localhost:{upstream.port}"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        raw.sendall(
            f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n".encode() + proxy.authorization() + b"\r\n"
        )
        assert b" 200 " in raw.recv(4096)
        with context.wrap_socket(raw, server_hostname=None) as tls:
            tls.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 0\r\n\r\n"
            )
            answer = tls.recv(4096)
    assert answer.startswith(b"HTTP/1.1 403 ") and upstream.received == []
    records = proxy.wait_for_records(2)
    assert [(record["method"], record["decision"]) for record in records] == [
        ("CONNECT", "allowed"),
        ("POST", "blocked"),
    ]
    assert "egress.domain_fronting" in [finding["rule"] for finding in records[1]["findings"]]


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_sdks_raise_a_readable_error_for_a_refused_host(
    shared_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, sdk: str
) -> None:
    """The official SDKs get a 403 in their API's own error shape, naming the reason and the audit event,
    instead of a bare connection error; nothing reaches the refused host."""
    proxy = shared_proxy(mode="enforce", allow="[api.openai.com]")
    use_proxy(monkeypatch, proxy)
    if sdk == "openai":
        with pytest.raises(openai.PermissionDeniedError) as raised:
            chat(upstream.url)
        error: Exception = raised.value
    else:
        client = anthropic.Anthropic(base_url=upstream.url, api_key="sk-ant-test", max_retries=0)
        with pytest.raises(anthropic.PermissionDeniedError) as raised_anthropic:
            client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
        error = raised_anthropic.value
        assert raised_anthropic.value.body["type"] == "error"  # type: ignore[index]
    (record,) = proxy.wait_for_records(1)
    assert "egress to localhost refused" in str(error) and record["event_id"] in str(error)
    assert record["method"] == "CONNECT" and record["decision"] == "blocked"
    assert upstream.received == []


def absolute_form(proxy: Proxy, url: str) -> tuple[int, bytes]:
    """One plain-HTTP request in absolute form (``GET http://host:port/ HTTP/1.1``): its status and answer."""
    authority = url.split("//", 1)[1].split("/", 1)[0]
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        raw.sendall(
            f"GET {url} HTTP/1.1\r\nHost: {authority}\r\n".encode()
            + proxy.authorization()
            + b"Connection: close\r\n\r\n"
        )
        answer = b""
        while chunk := raw.recv(4096):
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


@pytest.mark.parametrize(
    ("allow", "host"),
    [
        ("[localhost]", "localhost"),
        ("[LOCALHOST.]", "localhost"),
        ("['127.0.0.0/8']", "127.0.0.1"),
        ("['127.0.0.1']", "127.0.0.1"),
        ("[{host: localhost, inspect: false}]", "localhost"),
    ],
)
def test_an_entry_without_a_port_opens_no_other_port(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, allow: str, host: str
) -> None:
    """An allow entry without a port covers 443 and 80 only: a CONNECT and an absolute-form request to the
    same host on another port (a database, SSH, a local service) are refused, the reason says how to open
    the port, and nothing connects."""
    proxy = start_proxy(mode="enforce", allow=allow)
    hint = f"port {upstream.port} of {host} is not in the allowlist"
    status, answer = connect(proxy, f"{host}:{upstream.port}")
    assert status == 403 and hint in answer.decode()
    status, answer = absolute_form(proxy, f"http://{host}:{upstream.port}/v1/models")
    assert status == 403 and hint in answer.decode()
    assert upstream.received == []
    records = proxy.wait_for_records(2)
    assert [record["decision"] for record in records] == ["blocked", "blocked"]
    refusals = [f for record in records for f in record["findings"] if f["threat"] == "lateral_movement"]
    assert refusals and all(f["enforced"] and hint in f["signal"] for f in refusals)


@pytest.mark.parametrize("allow", ["['localhost:{port}']", "['localhost:*']", "['127.0.0.0/8:*']"])
def test_an_entry_naming_the_port_or_every_port_opens_it(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, allow: str
) -> None:
    """``host:port`` and ``host:*`` open the port an entry without one does not: the SDK call goes through."""
    proxy = start_proxy(mode="enforce", allow=allow.format(port=upstream.port))
    use_proxy(monkeypatch, proxy)
    host = "127.0.0.1" if "127" in allow else "localhost"
    assert chat(f"https://{host}:{upstream.port}") == "Hello from the upstream model."


def test_sdk_call_to_another_port_of_an_allowed_host_is_refused(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The official SDK gets a readable 403 for an allowed host on a port no entry names."""
    proxy = start_proxy(mode="enforce", allow="[api.openai.com, localhost]")
    use_proxy(monkeypatch, proxy)
    with pytest.raises(openai.PermissionDeniedError) as raised:
        chat(upstream.url)
    assert f"{upstream.port}" in str(raised.value) and upstream.received == []
