"""End to end over HTTP/2: the agent speaks HTTP/2 to egressguard (httpx with ``http2=True``, the OpenAI
SDK on top of it), egressguard HTTP/1.1 to the TLS fake upstream. Every check that holds over HTTP/1
holds here: prompts redacted, over-cap and compressed-bomb bodies refused, streamed completions
redacted, a missing token answered 407, and the connection keeps serving its other streams."""

from __future__ import annotations

import gzip
import json
import ssl
import time
from collections.abc import Callable, Iterable, Iterator

import h2.config
import h2.connection
import h2.events
import httpx
import openai
import pytest

from tests.harness import Proxy
from tests.test_credential_channel import GITHUB
from tests.test_e2e_bodies import AWS_KEY, CONTEXT, over_cap_findings
from tests.test_e2e_credential_channel import assert_never_written
from tests.test_e2e_fronting import tunnel
from tests.upstream import FakeUpstream, Reply

CAP = 64 << 10
REDACTED = "[REDACTED:aws-access-key-id]"


@pytest.fixture
def enforce(start_proxy: Callable[..., Proxy]) -> Proxy:
    return start_proxy(
        mode="enforce",
        extra=f"inspection: {{max_body_bytes: {CAP}}}\nredaction: {{requests: true}}\n",
    )


class PrefersHttp2(ssl.SSLContext):
    """A TLS context that offers ``h2`` before ``http/1.1``, as curl, Go and browsers do. httpx offers
    ``http/1.1`` first and egressguard (like mitmproxy) honours the client's order, so httpx on its own
    would never be answered in HTTP/2."""

    def set_alpn_protocols(self, alpn_protocols: Iterable[str]) -> None:
        super().set_alpn_protocols(["h2", "http/1.1"])


def h2_client(proxy: Proxy, proxy_url: str | None = None) -> httpx.Client:
    context = PrefersHttp2(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(proxy.ca_cert))
    return httpx.Client(
        http2=True, proxy=proxy_url or proxy.url(), verify=context, timeout=30, headers=CONTEXT
    )


def chat(client: httpx.Client, upstream: FakeUpstream, content: str, **extra: object) -> httpx.Response:
    return client.post(
        f"{upstream.url}/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": content}], **extra},
    )


def test_the_agent_speaks_http2_to_the_proxy(enforce: Proxy, upstream: FakeUpstream) -> None:
    """The premise of every test here: the agent's side of the proxy is HTTP/2."""
    with h2_client(enforce) as client:
        answer = chat(client, upstream, "hi")
    assert (answer.status_code, answer.http_version) == (200, "HTTP/2")


def test_a_secret_in_a_prompt_is_redacted(enforce: Proxy, upstream: FakeUpstream) -> None:
    with h2_client(enforce) as client:
        answer = chat(client, upstream, f"my key is {AWS_KEY}")
    assert answer.status_code == 200
    sent = upstream.received[-1].body.decode()
    assert AWS_KEY not in sent and REDACTED in sent


def test_a_secret_in_a_completion_is_redacted_json_and_sdk(enforce: Proxy, upstream: FakeUpstream) -> None:
    """JSON completions, read with the official SDK over HTTP/2."""
    upstream.reply = Reply(text=f"the key is {AWS_KEY}")
    sdk = openai.OpenAI(
        base_url=f"{upstream.url}/v1",
        api_key="sk-test",
        max_retries=0,
        # The SDK takes an httpx client as well as its own httpx2 one; this one also makes raw requests.
        http_client=h2_client(enforce),  # type: ignore[arg-type]
    )
    answer = sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == f"the key is {REDACTED}"


def test_a_streamed_completion_is_redacted(enforce: Proxy, upstream: FakeUpstream) -> None:
    """SSE over HTTP/2, a secret split across many small events: the SDK reassembles it redacted."""
    upstream.reply = Reply(text=f"the key is {AWS_KEY} and more", piece_size=3)
    sdk = openai.OpenAI(
        base_url=f"{upstream.url}/v1",
        api_key="sk-test",
        max_retries=0,
        # The SDK takes an httpx client as well as its own httpx2 one; this one also makes raw requests.
        http_client=h2_client(enforce),  # type: ignore[arg-type]
    )
    text = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in sdk.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        if chunk.choices
    )
    assert text == f"the key is {REDACTED} and more"


def chunks(body: bytes) -> Iterator[bytes]:
    return (body[start : start + (64 << 10)] for start in range(0, len(body), 64 << 10))


@pytest.mark.parametrize("framing", ["content-length", "no length"])
def test_an_over_cap_prompt_is_refused_413_at_once(
    enforce: Proxy, upstream: FakeUpstream, framing: str
) -> None:
    """Over HTTP/2 a body's length is optional: with or without it, a prompt over the cap is refused with
    a readable 413 before any byte leaves, and the same connection serves the next request."""
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * (8 << 20)}]}).encode()
    with h2_client(enforce) as client:
        started = time.monotonic()
        answer = client.post(
            f"{upstream.url}/v1/chat/completions",
            content=body if framing == "content-length" else chunks(body),
            headers={"content-type": "application/json"},
        )
        took = time.monotonic() - started
        assert answer.status_code == 413
        assert "inspection.decoded_over_cap" in answer.json()["error"]["message"]
        assert took < 5
        assert upstream.received == []
        assert chat(client, upstream, "next").status_code == 200
    (refused, _) = enforce.wait_for_records(2)
    assert [finding["enforced"] for finding in over_cap_findings(refused)] == [True]


def test_a_compressed_bomb_is_refused(start_proxy: Callable[..., Proxy], upstream: FakeUpstream) -> None:
    """256 KB that inflate to 256 MiB, under the default 8 MiB cap, as prompt and as completion: refused
    413 and 502, never decoded whole, and the proxy keeps serving."""
    proxy = start_proxy(mode="enforce")
    bomb = gzip.compress(b"A" * (256 << 20), 9)
    with h2_client(proxy) as client:
        answer = client.post(
            f"{upstream.url}/v1/chat/completions",
            content=bomb,
            headers={"content-type": "application/json", "content-encoding": "gzip"},
        )
        assert answer.status_code == 413
        assert "inspection.decoded_over_cap" in answer.json()["error"]["message"]
        assert upstream.received == []
        upstream.reply = Reply(encoded_body=("gzip", bomb))
        answer = chat(client, upstream, "hi")
        assert answer.status_code == 502
        assert "inspection.decoded_over_cap" in answer.json()["error"]["message"]
        upstream.reply = Reply()
        assert chat(client, upstream, "next").status_code == 200


def test_a_missing_token_is_answered_407(enforce: Proxy, upstream: FakeUpstream) -> None:
    """HTTP/2 begins inside the tunnel, so a missing token is refused at its CONNECT: httpx raises the
    proxy's 407 at once."""
    with (
        h2_client(enforce, f"http://127.0.0.1:{enforce.port}") as client,
        pytest.raises(httpx.ProxyError, match="407"),
    ):
        chat(client, upstream, "hi")


def test_cookie_crumbs_reach_the_upstream_joined_and_keep_the_turn_whole(
    enforce: Proxy, upstream: FakeUpstream
) -> None:
    """HTTP/2 lets a client send its cookie in several ``cookie`` fields (crumbs, RFC 9113 8.2.3): the
    request passes, the HTTP/1 upstream gets them as one header joined with "; ", and the turn keeps its
    agent, user and destination."""
    crumbs = [("cookie", "session=abc123"), ("cookie", "theme=dark")]
    with h2_client(enforce) as client:
        answer = client.post(
            f"{upstream.url}/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            headers=crumbs,
        )
    assert (answer.status_code, answer.http_version) == (200, "HTTP/2")
    sent = {name.lower(): value for name, value in upstream.received[-1].headers.items()}
    assert sent["cookie"] == "session=abc123; theme=dark"
    (record,) = enforce.wait_for_records(1)
    assert (record["agent_id"], record["user_id"], record["decision"]) == ("support-bot", "u-1", "allowed")
    assert [finding["rule"] for finding in record["findings"]] == ["egress.first_seen"]


def test_a_key_split_across_cookie_crumbs_is_refused(enforce: Proxy, upstream: FakeUpstream) -> None:
    """A provider's key split across two crumbs, which the receiver joins into one cookie header, is read
    joined: ``credential.unexpected``, refused 403 in the API's error shape before anything is sent, and
    no record or log line holds the key."""
    crumbs = [("cookie", f"s={GITHUB[:20]}"), ("cookie", GITHUB[20:])]
    with h2_client(enforce) as client:
        answer = client.post(
            f"{upstream.url}/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            headers=crumbs,
        )
        assert answer.status_code == 403 and "credential.unexpected" in answer.json()["error"]["message"]
        assert upstream.received == []
    (record,) = enforce.wait_for_records(1)
    found = [(finding["rule"], finding["where"], finding["enforced"]) for finding in record["findings"]]
    assert found == [
        ("egress.first_seen", "egress", False),
        ("credential.unexpected", 'headers ["cookie"]', True),
    ]
    assert_never_written(enforce, GITHUB, GITHUB[:20], GITHUB[20:])


def send_unannounced(
    proxy: Proxy, upstream: FakeUpstream, body: bytes, trailers: list[tuple[str, str]] | None = None
) -> list[h2.events.Event]:
    """One HTTP/2 POST of ``body`` with no content-length (HTTP/2 ends a body by its frames; clients may
    announce none), its trailers after it; the events of the answer, up to its end."""
    with tunnel(proxy, upstream.port, alpn="h2") as tls:
        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        connection.initiate_connection()
        head = [
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", f"localhost:{upstream.port}"),
            (":path", "/upload"),
            ("content-type", "text/plain"),
            *((name.lower(), value) for name, value in CONTEXT.items()),
        ]
        connection.send_headers(1, head)
        connection.send_data(1, body, end_stream=trailers is None)
        if trailers is not None:
            connection.send_headers(1, trailers, end_stream=True)
        tls.sendall(connection.data_to_send())
        events: list[h2.events.Event] = []
        while not any(isinstance(event, h2.events.StreamEnded | h2.events.StreamReset) for event in events):
            data = tls.recv(65536)
            if not data:
                break
            events += connection.receive_data(data)
            tls.sendall(connection.data_to_send())
        return events


SMUGGLED_CALL = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "tools/call",
        "params": {"name": "delete_customer", "arguments": {}},
    }
).encode()
A_REQUEST_AS_A_BODY = (
    b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(SMUGGLED_CALL), SMUGGLED_CALL)
)


@pytest.mark.parametrize(
    ("cap", "trailers"),
    [(CAP, None), (CAP, [("x-note", "done")]), (64, None)],
    ids=["whole", "with-trailers", "relayed-as-it-arrives"],
)
def test_an_unannounced_http2_body_reaches_an_http1_upstream_as_one_body(
    start_proxy: Callable[..., Proxy],
    upstream: FakeUpstream,
    cap: int,
    trailers: list[tuple[str, str]] | None,
) -> None:
    """The upstream speaks HTTP/1.1, which needs a length or chunks to find a body's end: the body is
    framed (a length where it is whole, else chunked), so it is read as the body it is and never as a
    request of its own that nothing judged (here an MCP call of a destructive tool). Observe mode relays
    a body over the cap as it arrives."""
    proxy = start_proxy(mode="observe", extra=f"inspection: {{max_body_bytes: {cap}}}\n")
    events = send_unannounced(proxy, upstream, A_REQUEST_AS_A_BODY, trailers)
    assert any(isinstance(event, h2.events.ResponseReceived) for event in events)
    assert [(received.path, received.body) for received in upstream.received] == [
        ("/upload", A_REQUEST_AS_A_BODY)
    ]
