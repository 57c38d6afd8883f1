"""End to end: the start lines of HTTP/1 messages carry text too. A request method is any token an agent
likes and a reason phrase any text an upstream likes, and mitmproxy relays both as they are; so are an
answer's headers, a cookie it sets among them."""

from __future__ import annotations

import base64
import json
import socket
import ssl
from collections.abc import Iterator

import httpx
import pytest

from proxy.commands.localca import UpstreamPKI
from tests.harness import AGENT_TOKEN, Proxy, proxy_authorization
from tests.test_e2e_request_residual import last_record
from tests.upstream import FakeUpstream

AWS_KEY = "AKIAQWERTY234567ABCD"
GITHUB_TOKEN = "ghp_FWCnNkCLWNb6VBJGUkHrAEj9p3saO0ln0YoP"
HEADERS = {"X-User-Id": "u-1", "X-Purpose": "support", "X-Consent-Id": "c-1"}


@pytest.fixture(scope="module", params=["enforce", "observe"])
def proxy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, upstream_pki: UpstreamPKI
) -> Iterator[Proxy]:
    started = Proxy(
        tmp_path_factory.mktemp("start-lines"),
        upstream_pki.ca_cert,
        mode=request.param,
        extra="redaction: {requests: true}\n",
    )
    yield started
    started.stop()


def enforcing(proxy: Proxy) -> bool:
    return "mode: enforce" in proxy.policy_path.read_text()


def client(proxy: Proxy) -> httpx.Client:
    trusted = ssl.create_default_context(cafile=proxy.ca_cert)
    return httpx.Client(verify=trusted, proxy=proxy.url(), headers=HEADERS, timeout=10)


def send_with_method(proxy: Proxy, upstream: FakeUpstream, method: str) -> bytes:
    """A request with ``method`` as sent (clients such as httpx send every method in upper case) through
    a tunnel; the status line and headers of the answer."""
    connection = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    connection.sendall(b"CONNECT localhost:%d HTTP/1.1\r\n%s\r\n" % (upstream.port, proxy_authorization()))
    assert connection.recv(4096).startswith(b"HTTP/1.1 200")
    trusted = ssl.create_default_context(cafile=proxy.ca_cert)
    with trusted.wrap_socket(connection, server_hostname="localhost") as tls:
        head = "".join(f"{name}: {value}\r\n" for name, value in HEADERS.items())
        tls.sendall(
            f"{method} /v1/records HTTP/1.1\r\nHost: localhost:{upstream.port}\r\n{head}\r\n".encode()
        )
        return tls.recv(65536)


@pytest.mark.parametrize(
    "method", [GITHUB_TOKEN, AWS_KEY, base64.b64encode(AWS_KEY.encode()).decode().rstrip("=")]
)
def test_a_secret_as_the_request_method_does_not_leave(
    proxy: Proxy, upstream: FakeUpstream, method: str
) -> None:
    """A method cannot be rewritten: where requests are redacted, a request whose method holds a secret
    (as it is, or base64-encoded) is refused (403) before it leaves; in observe mode it leaves, recorded.
    (A method that does not start with three letters is not read as HTTP at all: a raw stream.)"""
    answer = send_with_method(proxy, upstream, method)
    found = {
        (finding["rule"], finding["enforced"])
        for finding in last_record(proxy)["findings"]
        if finding["rule"] != "egress.first_seen"
    }
    secret_rule = "github-pat" if method == GITHUB_TOKEN else "aws-access-key-id"
    # Refused here, or answered by the upstream, which speaks no such method.
    assert answer.startswith(b"HTTP/1.1 403" if enforcing(proxy) else b"HTTP/1.1 501")
    assert found == {("inspection.method", enforcing(proxy)), (secret_rule, enforcing(proxy))}


def test_standard_methods_pass_unread(proxy: Proxy, upstream: FakeUpstream) -> None:
    with client(proxy) as agent:
        assert agent.delete(f"{upstream.url}/mcp").status_code == 200
    rules = [finding["rule"] for finding in last_record(proxy)["findings"]]
    assert "inspection.method" not in rules


@pytest.mark.parametrize("stream", [False, True])
def test_a_secret_in_the_reason_phrase_does_not_reach_the_agent(
    proxy: Proxy, upstream: FakeUpstream, stream: bool
) -> None:
    """The status line's reason phrase is scanned with the headers, JSON answer or event stream, and
    redacted where the policy enforces it."""
    upstream.reply.reason = f"OK {GITHUB_TOKEN}"
    with client(proxy) as agent:
        answer = agent.post(
            f"{upstream.url}/v1/chat/completions",
            json={"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": "hi"}]},
        )
    assert answer.status_code == 200
    assert (GITHUB_TOKEN in answer.reason_phrase) is not enforcing(proxy)
    found = [f for f in last_record(proxy)["findings"] if f["rule"] == "github-pat"]
    assert found and all(finding["enforced"] is enforcing(proxy) for finding in found)


def test_an_sdk_reads_an_answer_with_its_reason_phrase_redacted(proxy: Proxy, upstream: FakeUpstream) -> None:
    upstream.reply.reason = f"OK {AWS_KEY}"
    sdk = proxy.openai_client(upstream.url, headers=HEADERS)
    raw = sdk.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    assert (AWS_KEY in raw.http_response.reason_phrase) is not enforcing(proxy)
    assert raw.parse().choices[0].message.content == "Hello from the upstream model."


SESSION_COOKIE = "sessionid=3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a; Path=/; Secure; HttpOnly"
JWT_COOKIE = (
    "sid=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
    "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U; Path=/"
)
PERCENT_ENCODED = "".join(f"%{ord(letter):02X}" for letter in GITHUB_TOKEN)
SECRET_HEADERS = {
    "Set-Cookie": f"deploy={GITHUB_TOKEN}; Path=/; HttpOnly",
    "set-cookie": f"{AWS_KEY}=1; Path=/",
    "SET-COOKIE": f"k={PERCENT_ENCODED}",
    "Location": f"https://example.com/callback?code={PERCENT_ENCODED}",
    "WWW-Authenticate": f'Bearer realm="api", error_description="use {GITHUB_TOKEN}"',
    "X-Echo-Authorization": f"Bearer {AWS_KEY}",
}


@pytest.mark.parametrize("stream", [False, True])
def test_a_key_in_an_answers_headers_does_not_reach_the_agent(
    proxy: Proxy, upstream: FakeUpstream, stream: bool
) -> None:
    """A provider key an upstream hands the agent in a header (a cookie it sets, by name or value, plain
    or percent-encoded; a redirect's query; a challenge; a header echoing a credential) reaches it
    redacted in place where the policy enforces it, with the JSON answer or event stream, and is recorded
    by its rule and fingerprint, never its value."""
    upstream.reply.headers = SECRET_HEADERS
    with client(proxy) as agent:
        answer = agent.post(
            f"{upstream.url}/v1/chat/completions",
            json={"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": "hi"}]},
        )
        answer.read()
    assert answer.status_code == 200
    got = answer.headers.get_list("set-cookie") + [
        answer.headers[name] for name in ("location", "www-authenticate", "x-echo-authorization")
    ]
    assert len(got) == len(SECRET_HEADERS)
    for secret in (GITHUB_TOKEN, AWS_KEY, PERCENT_ENCODED):
        assert any(secret in value for value in got) is not enforcing(proxy)
    if enforcing(proxy):
        assert sorted(answer.headers.get_list("set-cookie")) == sorted(
            [
                "deploy=[REDACTED:github-pat]; Path=/; HttpOnly",
                "[REDACTED:aws-access-key-id]=1; Path=/",
                "k=[REDACTED:github-pat]",
            ]
        )
    record = last_record(proxy)
    found = [f for f in record["findings"] if f["rule"] in ("github-pat", "aws-access-key-id")]
    cookies = [f for f in found if "set-cookie" in f["where"].lower()]
    # One finding a secret and place: the same keys elsewhere are redacted under those already recorded.
    assert len(cookies) == 3 and {f["rule"] for f in found} == {"github-pat", "aws-access-key-id"}
    assert all(f["enforced"] is enforcing(proxy) and f["fingerprint"] for f in found)
    written = json.dumps(record)
    for secret in (GITHUB_TOKEN, AWS_KEY, PERCENT_ENCODED, AGENT_TOKEN):
        assert secret not in written


SPLIT_COOKIES = {"Set-Cookie": f"a={AWS_KEY[:10]}; Path=/", "set-cookie": f"b={AWS_KEY[10:]}; Secure"}


def test_a_key_split_over_two_cookies_an_answer_sets_does_not_reach_the_agent(
    proxy: Proxy, upstream: FakeUpstream
) -> None:
    """Whoever reads the cookies can join a key a server spells across two of them: each piece reaches the
    SDK redacted in its own header where enforced, the key recorded by its rule and fingerprint."""
    upstream.reply.headers = SPLIT_COOKIES
    sdk = proxy.openai_client(upstream.url, headers=HEADERS)
    raw = sdk.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    cookies = sorted(raw.http_response.headers.get_list("set-cookie"))
    if enforcing(proxy):
        assert cookies == ["a=[REDACTED:aws-access-key-id]; Path=/", "b=[REDACTED:aws-access-key-id]; Secure"]
    else:
        assert cookies == sorted(SPLIT_COOKIES.values())
    record = last_record(proxy)
    found = [f for f in record["findings"] if f["rule"] == "aws-access-key-id"]
    assert found and all(f["enforced"] is enforcing(proxy) and f["fingerprint"] for f in found)
    assert AWS_KEY not in json.dumps(record)


def test_a_session_cookie_an_answer_sets_passes_as_it_came(proxy: Proxy, upstream: FakeUpstream) -> None:
    """A session a server hands its client is random by design, a token or a JWT: it is the client's own
    credential, and reaches the SDK as it was sent, with nothing recorded of it."""
    upstream.reply.headers = {"Set-Cookie": SESSION_COOKIE, "set-cookie": JWT_COOKIE}
    sdk = proxy.openai_client(upstream.url, headers=HEADERS)
    raw = sdk.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    assert sorted(raw.http_response.headers.get_list("set-cookie")) == sorted([SESSION_COOKIE, JWT_COOKIE])
    assert raw.parse().choices[0].message.content == "Hello from the upstream model."
    assert not [f for f in last_record(proxy)["findings"] if "cookie" in f["where"].lower()]
