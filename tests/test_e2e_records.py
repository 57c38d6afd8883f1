"""End to end: what the audit record says about a request the HTTP layer refused as malformed and about an
agent that went away before its answer is what happened to it: a protocol error is never `allowed`, the
status is what the agent received, and `forwarded` says whether any of the request left."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest

from addons.wire.heads import MAX_UNPARSED_BYTES
from proxy.commands.localca import UpstreamPKI
from tests.h2upstream import H2Upstream
from tests.harness import AGENT, Proxy, proxy_authorization
from tests.test_e2e_bodies import CONTEXT
from tests.test_e2e_fronting import tunnel
from tests.upstream import FakeUpstream

AWS_KEY = "AKIAQWERTY234567ABCD"
GONE = "agent: went away before its answer was complete; its request "
PATH = "/v1/chat/completions"
HEAD = "".join(f"{name}: {value}\r\n" for name, value in CONTEXT.items()).encode()
BODY = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": f"hi {AWS_KEY}"}]}).encode()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, upstream_pki: UpstreamPKI) -> Iterator[Proxy]:
    started = Proxy(
        tmp_path_factory.mktemp("records"),
        upstream_pki.ca_cert,
        mode="enforce",
        extra="redaction: {requests: true}\n",
    )
    yield started
    started.stop()


@pytest.fixture(scope="module")
def h2_upstream(upstream_pki: UpstreamPKI) -> Iterator[H2Upstream]:
    server = H2Upstream(upstream_pki)
    yield server
    server.close()


def turns(proxy: Proxy) -> int:
    return len([record for record in proxy.audit_records() if record.get("type") == "agent.turn"])


def answer_of(tls: ssl.SSLSocket) -> bytes:
    """What the proxy sends until it closes the connection."""
    answer = b""
    tls.settimeout(5)
    try:
        while chunk := tls.recv(65536):
            answer += chunk
    except (TimeoutError, ssl.SSLError, OSError):
        pass
    return answer


def new_record(proxy: Proxy, before: int) -> dict[str, Any]:
    (record,) = proxy.wait_for_records(before + 1)[before:]
    return record


MALFORMED = {
    "header-name": b"Bad Header: x\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY),
    "chunk-size": b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\nzz\r\n0\r\n\r\n" % (len(BODY), BODY),
    "chunk-end": b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%sXX0\r\n\r\n" % (len(BODY), BODY),
    "length-and-chunked": b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two-lengths": b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n123456",
}


@pytest.mark.parametrize("malformed", MALFORMED)
def test_an_http1_request_the_http_layer_refuses_is_recorded_as_a_protocol_error(
    proxy: Proxy, upstream: FakeUpstream, malformed: str
) -> None:
    """A bad header name, chunk size or chunk end, or a length beside chunked framing: mitmproxy answers
    400 and forwards nothing, and the record says so (never `allowed`)."""
    before = turns(proxy)
    with tunnel(proxy, upstream.port) as tls:
        tls.sendall(
            b"POST %s HTTP/1.1\r\nHost: localhost\r\n%s%s" % (PATH.encode(), HEAD, MALFORMED[malformed])
        )
        answer = answer_of(tls)
    record = new_record(proxy, before)
    assert upstream.received == []
    received = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
    assert (record["decision"], record["forwarded"], record["status"]) == ("protocol_error", False, received)
    assert record["errors"]


HEADS = {
    "request line with a fourth word": (
        b"POST /v1/chat/completions HTTP/1.1 x\r\nHost: localhost\r\n\r\n",
        400,
    ),
    "request line of one word": (b"POST\r\nHost: localhost\r\n\r\n", 400),
    "no version": (b"POST /v1/chat/completions\r\nHost: localhost\r\n\r\n", 400),
    "head past the limit": (b"POST / HTTP/1.1\r\nX-Long: " + b"a" * (MAX_UNPARSED_BYTES + 1), 431),
}


@pytest.mark.parametrize("head", HEADS)
def test_a_request_head_mitmproxy_cannot_read_is_recorded_as_a_protocol_error(
    proxy: Proxy, upstream: FakeUpstream, head: str
) -> None:
    """A head that is no request at all (a bad request line, one past the head limit) made no flow, and so
    no record: it is recorded as a protocol error with no method or path, nothing forwarded, and the
    status the agent got."""
    sent, status = HEADS[head]
    before = turns(proxy)
    with tunnel(proxy, upstream.port) as tls:
        with contextlib.suppress(OSError):
            tls.sendall(sent)
        answer = answer_of(tls)
    assert answer.startswith(b"HTTP/1.1 %d " % status)
    record = new_record(proxy, before)
    assert upstream.received == []
    found = (record["decision"], record["forwarded"], record["status"], record["method"], record["path"])
    assert found == ("protocol_error", False, status, "", "")
    assert record["agent_id"] == AGENT and record["errors"]


def head_of(upstream: FakeUpstream | H2Upstream) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", f"localhost:{upstream.port}"),
        (":path", PATH),
        ("content-type", "application/json"),
        *((name.lower(), value) for name, value in CONTEXT.items()),
    ]


def http2_request(proxy: Proxy, upstream: FakeUpstream) -> tuple[ssl.SSLSocket, h2.connection.H2Connection]:
    """An HTTP/2 connection with a request's head and the first half of its body sent."""
    tls = tunnel(proxy, upstream.port, alpn="h2")
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    connection.send_headers(1, head_of(upstream))
    connection.send_data(1, BODY[: len(BODY) // 2])
    tls.sendall(connection.data_to_send())
    time.sleep(0.3)
    return tls, connection


def test_an_invalid_http2_frame_is_recorded_as_a_protocol_error(proxy: Proxy, upstream: FakeUpstream) -> None:
    """A DATA frame on stream 0 mid-body: the proxy ends the connection (GOAWAY), and the request whose body
    was on its way is recorded as a protocol error that received no answer."""
    before = turns(proxy)
    tls, _ = http2_request(proxy, upstream)
    with tls:
        tls.sendall(b"\x00\x00\x05\x00\x00\x00\x00\x00\x00hello")
        answer_of(tls)
    record = new_record(proxy, before)
    assert upstream.received == []
    assert (record["decision"], record["forwarded"], record["status"]) == ("protocol_error", False, None)
    assert any("HTTP/2 protocol error" in error for error in record["errors"])


HEADER_BLOCKS = {
    "no :path": lambda head: [field for field in head if field[0] != ":path"],
    "an upper-case name": lambda head: [*head, ("X-Note", "1")],
    "a pseudo-header after a field": lambda head: [*head, (":path", "/other")],
    "a connection header": lambda head: [*head, ("connection", "keep-alive")],
}


@pytest.mark.parametrize("block", HEADER_BLOCKS)
def test_an_http2_header_block_that_ends_the_connection_is_recorded_as_a_protocol_error(
    proxy: Proxy, upstream: FakeUpstream, block: str
) -> None:
    """A header block h2 refuses ends the connection (GOAWAY) before mitmproxy made a request of it: it is
    recorded as a protocol error of no method or path, nothing forwarded, no answer received."""
    before = turns(proxy)
    with tunnel(proxy, upstream.port, alpn="h2") as tls:
        settings = h2.config.H2Configuration(
            client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
        )
        connection = h2.connection.H2Connection(settings)
        connection.initiate_connection()
        connection.send_headers(1, HEADER_BLOCKS[block](head_of(upstream)), end_stream=True)
        tls.sendall(connection.data_to_send())
        answer_of(tls)
    record = new_record(proxy, before)
    assert upstream.received == []
    found = (record["decision"], record["forwarded"], record["status"], record["method"], record["path"])
    assert found == ("protocol_error", False, None, "", "")
    assert any("HTTP/2 protocol error" in error for error in record["errors"])


def test_an_http2_stream_reset_mid_body_is_recorded(proxy: Proxy, upstream: FakeUpstream) -> None:
    before = turns(proxy)
    tls, connection = http2_request(proxy, upstream)
    with tls:
        connection.reset_stream(1)
        tls.sendall(connection.data_to_send())
        time.sleep(0.5)
    record = new_record(proxy, before)
    assert upstream.received == []
    assert (record["decision"], record["forwarded"], record["status"]) == ("allowed", False, None)
    assert f"{GONE}was not forwarded" in record["errors"]


def send(tls: ssl.SSLSocket, body: bytes, length: int | None = None) -> None:
    head = b"POST %s HTTP/1.1\r\nHost: localhost\r\n%sContent-Type: application/json\r\n" % (
        PATH.encode(),
        HEAD,
    )
    tls.sendall(head + b"Content-Length: %d\r\n\r\n%s" % (length or len(body), body))


def test_an_agent_gone_mid_body_is_recorded_as_gone_with_nothing_forwarded(
    proxy: Proxy, upstream: FakeUpstream
) -> None:
    before = turns(proxy)
    with tunnel(proxy, upstream.port) as tls:
        send(tls, BODY[:20], length=len(BODY))
    record = new_record(proxy, before)
    assert upstream.received == []
    assert (record["decision"], record["forwarded"], record["status"]) == ("allowed", False, None)
    assert f"{GONE}was not forwarded" in record["errors"]


def test_an_agent_gone_while_the_upstream_thinks_is_recorded_as_gone_after_forwarding(
    proxy: Proxy, upstream: FakeUpstream
) -> None:
    """The request left, its key redacted; the agent went away before the answer: no status was received,
    and the record says the request had been forwarded (and redacted)."""
    upstream.reply.think_seconds = 1.5
    before = turns(proxy)
    with tunnel(proxy, upstream.port) as tls:
        send(tls, BODY)
        deadline = time.monotonic() + 5
        while not upstream.received and time.monotonic() < deadline:
            time.sleep(0.02)
    record = new_record(proxy, before)
    assert len(upstream.received) == 1 and AWS_KEY.encode() not in upstream.received[0].body
    assert (record["decision"], record["forwarded"], record["status"]) == ("redacted", True, None)
    assert f"{GONE}had been forwarded" in record["errors"]


@pytest.mark.parametrize("attempt", range(3))
def test_an_agent_gone_right_after_its_request_is_recorded_as_what_happened(
    proxy: Proxy, upstream: FakeUpstream, attempt: int
) -> None:
    """The agent closes as soon as its request is sent: whether it left or not depends on the race, and the
    record says which, the status null either way (the agent received nothing)."""
    upstream.reply.think_seconds = 0.5
    before = turns(proxy)
    with tunnel(proxy, upstream.port) as tls:
        send(tls, BODY)
    record = new_record(proxy, before)
    time.sleep(1)
    assert record["forwarded"] is bool(upstream.received)
    assert record["status"] is None
    # Where the request was read before the agent left, its key was taken out, whether it left or not.
    assert record["decision"] in (("redacted",) if upstream.received else ("allowed", "redacted"))
    assert not [received for received in upstream.received if AWS_KEY.encode() in received.body]


UPSTREAM_RESET = "upstream: reset the stream before its answer was complete; the request had been forwarded"


def http2_exchange(proxy: Proxy, upstream: H2Upstream) -> tuple[ssl.SSLSocket, h2.connection.H2Connection]:
    """An HTTP/2 connection to the HTTP/2 upstream with a whole request sent on stream 1."""
    tls = tunnel(proxy, upstream.port, alpn="h2")
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    send_request(tls, connection, 1, upstream)
    return tls, connection


def send_request(
    tls: ssl.SSLSocket, connection: h2.connection.H2Connection, stream_id: int, upstream: H2Upstream
) -> None:
    connection.send_headers(stream_id, head_of(upstream))
    connection.send_data(stream_id, BODY, end_stream=True)
    tls.sendall(connection.data_to_send())


def reset(tls: ssl.SSLSocket, connection: h2.connection.H2Connection, stream_id: int) -> None:
    connection.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
    tls.sendall(connection.data_to_send())


def wait_until(done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not done():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def outcome_of(tls: ssl.SSLSocket, connection: h2.connection.H2Connection) -> int | str:
    """What the agent received on stream 1: the status of an answer, or the name of a reset's code."""
    tls.settimeout(10)
    while data := tls.recv(65536):
        for event in connection.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id == 1:
                return int(dict(event.headers)[b":status"])
            if isinstance(event, h2.events.StreamReset) and event.stream_id == 1:
                return h2.errors.ErrorCodes(event.error_code).name
        tls.sendall(connection.data_to_send())
    raise AssertionError("the connection closed with stream 1 unanswered")


@pytest.mark.parametrize(
    ("code", "received"),
    [(h2.errors.ErrorCodes.CANCEL, None), (h2.errors.ErrorCodes.INTERNAL_ERROR, 502)],
)
def test_an_http2_upstream_that_resets_the_stream_is_recorded_as_the_upstream_s_reset(
    proxy: Proxy, h2_upstream: H2Upstream, code: h2.errors.ErrorCodes, received: int | None
) -> None:
    """The upstream read the request (its key redacted) and reset the stream: the record says the upstream
    reset it after the request was forwarded, never that the agent went away, with the status the agent
    got: the reset passed on for CANCEL, 502 for an error."""
    h2_upstream.reset_with = code
    h2_upstream.received.clear()
    before = turns(proxy)
    tls, connection = http2_exchange(proxy, h2_upstream)
    with tls:
        outcome = outcome_of(tls, connection)
    assert outcome == (received or "CANCEL")
    record = new_record(proxy, before)
    (request,) = h2_upstream.received
    assert AWS_KEY.encode() not in request.body and request.headers[":path"] == PATH
    assert (record["decision"], record["forwarded"], record["status"]) == ("redacted", True, received)
    assert UPSTREAM_RESET in record["errors"]
    assert f"connection: stream reset by upstream ({code.name})" in record["errors"]
    assert not [error for error in record["errors"] if error.startswith(GONE) or "by client" in error]


def test_an_agent_that_resets_its_http2_stream_while_the_upstream_thinks_is_recorded_as_gone(
    proxy: Proxy, h2_upstream: H2Upstream
) -> None:
    """The agent cancels its stream after the request reached the upstream: the record says the agent went
    away after its request was forwarded, no status received, and the cancel reached the upstream."""
    h2_upstream.reset_with = None
    h2_upstream.received.clear()
    h2_upstream.resets.clear()
    before = turns(proxy)
    tls, connection = http2_exchange(proxy, h2_upstream)
    with tls:
        wait_until(lambda: bool(h2_upstream.received))
        reset(tls, connection, 1)
        record = new_record(proxy, before)
    assert len(h2_upstream.received) == 1
    assert (record["decision"], record["forwarded"], record["status"]) == ("redacted", True, None)
    assert f"{GONE}had been forwarded" in record["errors"]
    assert not [error for error in record["errors"] if error.startswith("upstream:")]
    wait_until(lambda: bool(h2_upstream.resets))
    assert h2_upstream.resets == [h2.errors.ErrorCodes.CANCEL]


def test_a_request_waiting_for_a_free_upstream_stream_is_not_forwarded_when_its_agent_resets_it(
    proxy: Proxy, upstream_pki: UpstreamPKI
) -> None:
    """The upstream takes one stream at a time and holds the first: the second request waits in the proxy,
    its head not written, and the agent's reset of it is recorded as not forwarded."""
    one_stream = H2Upstream(upstream_pki, max_streams=1)
    try:
        before = turns(proxy)
        tls, connection = http2_exchange(proxy, one_stream)
        with tls:
            wait_until(lambda: bool(one_stream.received) and one_stream.settings_acknowledged.is_set())
            send_request(tls, connection, 3, one_stream)
            time.sleep(0.5)
            reset(tls, connection, 3)
            waiting = new_record(proxy, before)
            reset(tls, connection, 1)
            held = new_record(proxy, before + 1)
    finally:
        one_stream.close()
    assert (waiting["forwarded"], waiting["status"]) == (False, None)
    assert f"{GONE}was not forwarded" in waiting["errors"]
    assert (held["forwarded"], held["status"]) == (True, None)
    assert f"{GONE}had been forwarded" in held["errors"]
    assert len(one_stream.received) == 1


def test_a_plain_request_to_a_tls_upstream_is_recorded_as_the_upstream_s_failure(
    proxy: Proxy, upstream: FakeUpstream
) -> None:
    """Plain HTTP sent to a port that speaks TLS never reaches the upstream's HTTP: the agent gets 502, and
    the record says the upstream failed before answering and that the (redacted) request had been
    written to it, as the key redacted out of it is what egressguard did."""
    before = turns(proxy)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as plain:
        plain.sendall(
            b"POST http://localhost:%d%s HTTP/1.1\r\nHost: localhost:%d\r\n%s%s"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (upstream.port, PATH.encode(), upstream.port, proxy_authorization(), HEAD, len(BODY), BODY)
        )
        plain.settimeout(10)
        answer = plain.recv(65536)
    record = new_record(proxy, before)
    assert answer.startswith(b"HTTP/1.1 502 ")
    assert upstream.received == []
    assert (record["status"], record["forwarded"]) == (502, True)
    assert (
        "upstream: failed before its answer was complete; the request had been forwarded" in record["errors"]
    )
    assert not any(error.startswith(GONE) for error in record["errors"])
    assert AWS_KEY not in json.dumps(record)
