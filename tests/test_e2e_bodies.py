"""End to end: compressed bodies through a real egressguard process under a 1 GiB memory limit.

Compression bombs of every coding (2 GiB of "A" in a few KB to a few MB), as request and as response,
JSON and event stream, must neither kill nor stall the proxy, and the request after each succeeds; bodies
of several gzip members or zstd frames are inspected whole.
"""

from __future__ import annotations

import gzip
import json
import ssl
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any, cast

import brotli  # type: ignore[import-untyped]  # brotli ships neither type hints nor stubs
import httpx
import openai
import pytest
from backports import zstd

from proxy.commands.localca import UpstreamPKI
from proxy.wire.decoding import BOMB_FLOOR
from tests.harness import Proxy
from tests.test_e2e_fronting import tunnel
from tests.upstream import FakeUpstream, Reply, openai_chat_json

MEMORY_LIMIT = 1 << 30
BOMB_SIZE = 2 << 30
AWS_KEY = "AKIAQWERTY234567ABCD"
CONTEXT = {"X-User-Id": "u-1", "X-Purpose": "support", "X-Consent-Id": "c-1"}


def _repeated_member(compress: Callable[[bytes], bytes]) -> bytes:
    """Codings whose bodies may hold many members: one 64 MiB member, repeated to the bomb's size."""
    return compress(b"A" * (64 << 20)) * (BOMB_SIZE // (64 << 20))


def _brotli_bomb() -> bytes:
    compressor = brotli.Compressor(quality=5)
    block = b"A" * (1 << 20)
    return b"".join(compressor.process(block) for _ in range(BOMB_SIZE >> 20)) + cast(
        bytes, compressor.finish()
    )


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """Each coding and some stacks of them, every one decoding to 2 GiB."""
    single = {
        "gzip": _repeated_member(lambda data: gzip.compress(data, 9)),
        "deflate": _repeated_member(lambda data: zlib.compress(data, 9)),
        "br": _brotli_bomb(),
        "zstd": _repeated_member(lambda data: zstd.compress(data, 19)),
    }
    stacked = {
        "gzip, br": brotli.compress(single["gzip"]),
        "br, gzip": gzip.compress(single["br"]),
        "zstd, deflate": zlib.compress(single["zstd"]),
        "x-gzip, zstd": zstd.compress(single["gzip"]),
    }
    return single | stacked


ENCODINGS = ["gzip", "deflate", "br", "zstd", "gzip, br", "br, gzip", "zstd, deflate", "x-gzip, zstd"]


@pytest.fixture
def limited(start_proxy: Callable[..., Proxy], request: pytest.FixtureRequest) -> Proxy:
    mode: str = request.param
    return start_proxy(mode=mode, memory_limit=MEMORY_LIMIT)


@pytest.fixture
def enforcing_limited(shared_proxy: Callable[..., Proxy]) -> Proxy:
    """The enforcing proxy under the memory limit that the tests of bodies which are no bombs share."""
    return shared_proxy(mode="enforce", memory_limit=MEMORY_LIMIT)


def client_for(proxy: Proxy) -> httpx.Client:
    return httpx.Client(
        proxy=proxy.url(),
        verify=ssl.create_default_context(cafile=proxy.ca_cert),
        timeout=60,
        headers=CONTEXT,
    )


def sdk(proxy: Proxy, upstream: FakeUpstream) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{upstream.url}/v1",
        api_key="sk-test",
        max_retries=0,
        default_headers=CONTEXT,
        # The SDK takes an httpx client as well as its own httpx2 one; this one also makes raw requests.
        http_client=client_for(proxy),  # type: ignore[arg-type]
    )


def assert_still_serving(proxy: Proxy, upstream: FakeUpstream) -> None:
    """The proxy is alive and the next request goes through."""
    upstream.reply = Reply(text="still here")
    answer = sdk(proxy, upstream).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content == "still here"
    assert proxy.process.poll() is None


OVER_CAP_RULES = {"inspection.decoded_over_cap", "inspection.decompression_bomb"}


def over_cap_findings(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [finding for finding in record["findings"] if finding["rule"] in OVER_CAP_RULES]


@pytest.mark.parametrize("limited", ["enforce"], indirect=True)
def test_request_bombs_are_refused_and_the_proxy_keeps_serving(
    limited: Proxy, upstream: FakeUpstream, bombs: dict[str, bytes]
) -> None:
    """Every coding: a prompt that inflates to 2 GiB is refused in the API's shape, never decoded whole."""
    with client_for(limited) as client:
        for encoding in ENCODINGS:
            answer = client.post(
                f"{upstream.url}/v1/chat/completions",
                content=bombs[encoding],
                headers={"content-type": "application/json", "content-encoding": encoding},
            )
            assert answer.status_code == 413, encoding
            assert "inspection.decoded_over_cap" in answer.json()["error"]["message"]
    assert upstream.received == []
    assert_still_serving(limited, upstream)
    records = limited.wait_for_records(len(ENCODINGS) + 1)
    for record in records[: len(ENCODINGS)]:
        assert record["decision"] == "blocked" and record["status"] == 413
        assert [finding["enforced"] for finding in over_cap_findings(record)] == [True]


@pytest.mark.parametrize("limited", ["enforce"], indirect=True)
def test_response_bombs_are_refused_to_the_sdk_and_the_proxy_keeps_serving(
    limited: Proxy, upstream: FakeUpstream, bombs: dict[str, bytes]
) -> None:
    """Every coding: a completion that inflates to 2 GiB reaches the SDK as a 502 error naming the rule."""
    client = sdk(limited, upstream)
    for encoding in ENCODINGS:
        upstream.reply = Reply(encoded_body=(encoding, bombs[encoding]))
        with pytest.raises(openai.APIStatusError) as raised:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert raised.value.status_code == 502, encoding
        assert "inspection.decoded_over_cap" in raised.value.message
    assert_still_serving(limited, upstream)
    records = limited.wait_for_records(len(ENCODINGS) + 1)
    for record in records[: len(ENCODINGS)]:
        assert record["decision"] == "blocked" and record["status"] == 502
        assert [finding["enforced"] for finding in over_cap_findings(record)] == [True]


@pytest.mark.parametrize("limited", ["enforce", "observe"], indirect=True)
def test_stream_bombs_are_cut_or_passed_by_policy_and_the_proxy_keeps_serving(
    limited: Proxy, upstream: FakeUpstream, bombs: dict[str, bytes], request: pytest.FixtureRequest
) -> None:
    """Every coding: an event stream that inflates to 2 GiB is decoded only up to the cap (or the bomb
    ratio); enforce mode cuts it there, observe mode passes it as sent; both record why it was not
    inspected."""
    enforced = request.node.callspec.params["limited"] == "enforce"
    for encoding in ENCODINGS:
        upstream.reply = Reply(encoded_body=(encoding, bombs[encoding]))
        with (
            client_for(limited) as client,
            client.stream(
                "POST",
                f"{upstream.url}/v1/chat/completions",
                json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
            ) as answer,
        ):
            # Enforce mode sends the decoded text and closes the connection where it is cut, before the
            # body's end, so the agent cannot take it for the whole answer; observe mode passes it as sent.
            received = 0
            try:
                for chunk in answer.iter_raw():
                    received += len(chunk)
                cut = False
            except httpx.RemoteProtocolError:
                cut = True
        assert cut is enforced, encoding
        assert received < BOMB_SIZE if enforced else received == len(bombs[encoding]), encoding
    assert_still_serving(limited, upstream)
    records = limited.wait_for_records(len(ENCODINGS) + 1)
    for record in records[: len(ENCODINGS)]:
        assert [finding["enforced"] for finding in over_cap_findings(record)] == [enforced]
        assert record["decision"] == ("blocked" if enforced else "allowed")


@pytest.mark.parametrize("limited", ["observe"], indirect=True)
def test_observe_mode_passes_bombs_as_sent_and_records_them(
    limited: Proxy, upstream: FakeUpstream, bombs: dict[str, bytes]
) -> None:
    """Observe mode changes nothing: each bomb passes as sent, and its record says it was not inspected."""
    with client_for(limited) as client:
        for encoding in ENCODINGS:
            upstream.reply = Reply(encoded_body=(encoding, bombs[encoding]))
            with client.stream(
                "POST",
                f"{upstream.url}/v1/chat/completions",
                content=bombs[encoding],
                headers={"content-type": "application/json", "content-encoding": encoding},
            ) as answer:
                assert b"".join(answer.iter_raw()) == bombs[encoding]
            assert upstream.received[-1].body == bombs[encoding]
    assert_still_serving(limited, upstream)
    records = limited.wait_for_records(len(ENCODINGS) + 1)
    for record in records[: len(ENCODINGS)]:
        assert [finding["where"] for finding in over_cap_findings(record)] == ["request", "response"]
        assert not any(finding["enforced"] for finding in over_cap_findings(record))
        assert record["decision"] == "allowed"


def _members(compress: Callable[[bytes], bytes], text: bytes) -> bytes:
    """The text split in two, each half compressed on its own, one member after the other."""
    half = len(text) // 2
    return compress(text[:half]) + compress(text[half:])


MULTI_MEMBER: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "zstd": zstd.compress,
    "deflate": zlib.compress,
}
DECODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.decompress,
    "zstd": zstd.decompress,
    "deflate": zlib.decompress,
}


@pytest.mark.parametrize("encoding", sorted(MULTI_MEMBER))
def test_every_member_of_a_compressed_body_is_inspected(
    enforcing_limited: Proxy, upstream: FakeUpstream, encoding: str
) -> None:
    """A secret in the second gzip member or zstd frame is found in a prompt and redacted in a JSON
    completion and in a stream: the part an SDK decodes is the part inspected."""
    compress = MULTI_MEMBER[encoding]
    completion = json.dumps(openai_chat_json(Reply(text=f"{'padding ' * 40} key {AWS_KEY}"))).encode()
    upstream.reply = Reply(encoded_body=(encoding, _members(compress, completion)))
    with (
        client_for(enforcing_limited) as client,
        client.stream(
            "POST", f"{upstream.url}/v1/chat/completions", json={"model": "m", "messages": []}
        ) as answer,
    ):
        # The redacted body goes on in the upstream's coding; httpx has no zstd decoder of its own.
        received = DECODERS[encoding](b"".join(answer.iter_raw()))
    content = json.loads(received)["choices"][0]["message"]["content"]
    assert AWS_KEY not in content and "[REDACTED:aws-access-key-id]" in content

    events = b"".join(
        b"data: %s\n\n" % json.dumps({"choices": [{"index": 0, "delta": {"content": piece}}]}).encode()
        for piece in ["padding " * 40, "key ", AWS_KEY[:10], AWS_KEY[10:], " done"]
    )
    upstream.reply = Reply(encoded_body=(encoding, _members(compress, events + b"data: [DONE]\n\n")))
    stream = sdk(enforcing_limited, upstream).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert AWS_KEY not in streamed and streamed.endswith(" done")

    prompt = json.dumps({"model": "m", "messages": [{"role": "user", "content": f"{'pad ' * 50} {AWS_KEY}"}]})
    upstream.reply = Reply()
    with client_for(enforcing_limited) as client:
        client.post(
            f"{upstream.url}/v1/chat/completions",
            content=_members(compress, prompt.encode()),
            headers={"content-type": "application/json", "content-encoding": encoding},
        )
    record = enforcing_limited.wait_for_records(3)[2]
    assert "aws-access-key-id" in {finding["rule"] for finding in record["findings"]}


def test_small_request_is_answered_while_a_large_prompt_is_inspected(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """A 15 MB prompt takes seconds to inspect; another agent's small requests, sent back to back from the
    moment its upload ends, are answered meanwhile, none waiting anywhere near as long as the inspection
    (inline on the event loop, the first would wait for all of it), and the large prompt's findings are
    the ones inline inspection records."""
    proxy = start_proxy(mode="enforce", extra="inspection: {max_body_bytes: 32MiB}\n")
    sentence = "The quarterly report lists revenue by region and the notes explain each change. "
    large = sentence * (15_000_000 // len(sentence)) + f"deploy key {AWS_KEY}"
    upstream.reply = Reply(text="small answer")
    uploaded, answered = threading.Event(), threading.Event()

    def trace(event: str, info: dict[str, Any]) -> None:
        if event == "http11.send_request_body.complete":
            uploaded.set()

    def send_large() -> None:
        with client_for(proxy) as client:
            client.post(
                f"{upstream.url}/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": large}]},
                extensions={"trace": trace},
            ).raise_for_status()
        answered.set()

    sender = threading.Thread(target=send_large)
    sender.start()
    assert uploaded.wait(60)
    small_seconds: list[float] = []
    other_agent = sdk(proxy, upstream)
    while not answered.is_set():
        started = time.perf_counter()
        small = other_agent.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        if not answered.is_set():
            small_seconds.append(time.perf_counter() - started)
        assert small.choices[0].message.content == "small answer"
    sender.join(120)
    records = proxy.wait_for_records(len(upstream.received))
    # Only the large prompt carries the key, and inline inspection records it once.
    (large_record,) = [
        record
        for record in records
        if "aws-access-key-id" in {finding["rule"] for finding in record["findings"]}
    ]
    assert small_seconds, "the large prompt was answered before any small request"
    assert max(small_seconds) * 1000 < large_record["latency_ms"] / 2, (
        small_seconds,
        large_record["latency_ms"],
    )


@pytest.mark.parametrize("tail", [b"trailing garbage", b"\x1f\x8b\x08broken second member"])
def test_a_member_followed_by_garbage_is_still_inspected(
    enforcing_limited: Proxy, upstream: FakeUpstream, tail: bytes
) -> None:
    """httpx hands on a gzip member and drops what follows it; the member is what the proxy inspects, so
    garbage after it does not make the body an uninspectable binary one."""
    completion = openai_chat_json(Reply(text=f"key {AWS_KEY}"))
    upstream.reply = Reply(encoded_body=("gzip", gzip.compress(json.dumps(completion).encode()) + tail))
    with client_for(enforcing_limited) as client:
        answer = client.post(f"{upstream.url}/v1/chat/completions", json={"model": "m", "messages": []})
    assert answer.json()["choices"][0]["message"]["content"] == "key [REDACTED:aws-access-key-id]"


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_request_body_over_the_cap_is_refused_where_enforced_and_recorded_either_way(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, mode: str
) -> None:
    """A prompt longer than the inspection cap cannot be inspected: in enforce mode not a byte of it
    reaches the upstream and the SDK raises a 413; in observe mode it passes; the record says which."""
    proxy = start_proxy(mode=mode, extra="inspection: {max_body_bytes: 64KiB}\n")
    prompt = f"my key is {AWS_KEY} " + "lorem ipsum " * 12_000
    client = sdk(proxy, upstream)
    if mode == "enforce":
        with pytest.raises(openai.APIStatusError) as raised:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}])
        assert raised.value.status_code == 413
        assert upstream.received == []
    else:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}])
        assert AWS_KEY.encode() in upstream.received[-1].body
    (record,) = proxy.wait_for_records(1)
    findings = over_cap_findings(record)
    assert [finding["enforced"] for finding in findings] == [mode == "enforce"]
    assert record["decision"] == ("blocked" if mode == "enforce" else "allowed")
    assert_still_serving(proxy, upstream)


def read_as_curl(tls: ssl.SSLSocket) -> tuple[bytes, bytes]:
    """Read one HTTP/1.1 answer to its end and decode it as curl does with ``--tr-encoding
    --compressed``: chunks joined, then every transfer and content coding (gzip) undone. Returns the
    head and trailers as received, and the decoded body."""
    answer = b""
    while chunk := tls.recv(65536):
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in head.decode().split("\r\n")[1:])
    }
    transfer = [
        coding.strip() for coding in headers.get("transfer-encoding", "").split(",") if coding.strip()
    ]
    if transfer and transfer[-1] == "chunked":
        joined, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                head += b"\r\n" + rest
                break
            joined, rest = joined + rest[:size], rest[size + 2 :]
        body, transfer = joined, transfer[:-1]
    content = [coding.strip() for coding in headers.get("content-encoding", "").split(",") if coding.strip()]
    for coding in reversed(content + transfer):
        assert coding == "gzip", coding
        body = zlib.decompress(body, wbits=31)
    return head, body


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_transfer_coding_does_not_switch_inspection_off(
    shared_proxy: Callable[..., Proxy], upstream: FakeUpstream, mode: str, stream: bool
) -> None:
    """An answer sent with ``Transfer-Encoding: gzip, chunked`` is decoded and inspected like a content
    coding: in enforce mode the client that undoes the transfer coding reads it redacted."""
    proxy = shared_proxy(mode=mode)
    upstream.reply = Reply(text=f"the key is {AWS_KEY} ok", gzip_transfer=True, piece_size=100)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream})
    with tunnel(proxy, upstream.port) as tls:
        tls.sendall(
            (
                "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                "Content-Type: application/json\r\n"
                + "".join(f"{name}: {value}\r\n" for name, value in CONTEXT.items())
                + f"Content-Length: {len(body)}\r\n\r\n{body}"
            ).encode()
        )
        _, received = read_as_curl(tls)
    (record,) = proxy.wait_for_records(1)
    assert any(finding["rule"] == "aws-access-key-id" for finding in record["findings"]), record
    if mode == "enforce":
        assert AWS_KEY.encode() not in received and b"[REDACTED:aws-access-key-id]" in received
    else:
        assert AWS_KEY.encode() in received


def raw_exchange(proxy: Proxy, port: int, head: str, body: bytes) -> tuple[bytes, bytes]:
    """One HTTP/1.1 request through a tunnel, the connection closed after it; the answer read as curl
    reads it (head with trailers, decoded body)."""
    with tunnel(proxy, port) as tls:
        tls.sendall(
            (
                f"{head}\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n"
                + "".join(f"{name}: {value}\r\n" for name, value in CONTEXT.items())
            ).encode()
            + body
        )
        return read_as_curl(tls)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_response_trailers_reach_the_agent_scanned(
    shared_proxy: Callable[..., Proxy], upstream: FakeUpstream, mode: str, stream: bool
) -> None:
    """A chunked answer that ends with trailer fields arrives whole (it used to hang the agent until its
    timeout: "incomplete chunked read"), its trailers after the last chunk, a secret in one redacted
    where enforced."""
    proxy = shared_proxy(mode=mode)
    upstream.reply = Reply(text="fine", trailers={"x-debug-token": f"k={AWS_KEY}", "x-cost": "3"})
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream})
    head, received = raw_exchange(
        proxy,
        upstream.port,
        "POST /v1/chat/completions HTTP/1.1",
        f"Content-Length: {len(body)}\r\n\r\n{body}".encode(),
    )
    assert b"fine" in received or b'"f' in received
    # The head as read ends with the trailers, which nothing else in it names.
    response_head, _, trailers = head.partition(b"\r\nx-debug-token")
    assert b"x-cost: 3" in trailers
    assert AWS_KEY.encode() not in response_head
    if mode == "enforce":
        assert AWS_KEY.encode() not in trailers and b"[REDACTED:aws-access-key-id]" in trailers
    else:
        assert AWS_KEY.encode() in trailers
    (record,) = proxy.wait_for_records(1)
    findings = [finding for finding in record["findings"] if finding["rule"] == "aws-access-key-id"]
    assert [finding["enforced"] for finding in findings] == [mode == "enforce"]


def test_a_chunked_request_with_trailers_is_relayed(
    shared_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """A request body that ends with trailer fields is forwarded whole with them, not dropped mid-way."""
    proxy = shared_proxy()
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    chunked = b"%x\r\n%s\r\n0\r\nx-checksum: abc\r\n\r\n" % (len(body), body)
    head, received = raw_exchange(
        proxy,
        upstream.port,
        "POST /v1/chat/completions HTTP/1.1",
        b"Transfer-Encoding: chunked\r\n\r\n" + chunked,
    )
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"chat.completion" in received
    assert upstream.received[-1].body == body


UNDECODABLE = ["compress", "X-Compress", "x-compress", "gzip, compress", "compress, br", "bzip2", "snappy"]
"""Codings egressguard cannot undo and a receiver might: a secret inside is unreadable to inspection."""


def unsupported_coding_findings(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [finding for finding in record["findings"] if finding["rule"] == "inspection.unsupported_coding"]


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_request_in_an_undecodable_coding_is_refused_where_enforced(
    shared_proxy: Callable[..., Proxy], upstream: FakeUpstream, mode: str
) -> None:
    """Every spelling of a coding that cannot be undone: refused 415 in the API's shape where enforced,
    nothing reaching the upstream; relayed as sent where observed; recorded as uninspected either way."""
    proxy = shared_proxy(mode=mode)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": f"key {AWS_KEY}"}]}).encode()
    with client_for(proxy) as client:
        for encoding in UNDECODABLE:
            answer = client.post(
                f"{upstream.url}/v1/chat/completions",
                content=body,
                headers={"content-type": "application/json", "content-encoding": encoding},
            )
            assert answer.status_code == (415 if mode == "enforce" else 200), encoding
            if mode == "enforce":
                assert "inspection.unsupported_coding" in answer.json()["error"]["message"]
    assert len(upstream.received) == (0 if mode == "enforce" else len(UNDECODABLE))
    records = proxy.wait_for_records(len(UNDECODABLE))
    for record in records:
        assert [finding["enforced"] for finding in unsupported_coding_findings(record)] == [mode == "enforce"]
        assert record["decision"] == ("blocked" if mode == "enforce" else "allowed")


@pytest.mark.parametrize("mode", ["enforce", "observe"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "event-stream"])
def test_a_response_in_an_undecodable_coding_is_refused_where_enforced(
    shared_proxy: Callable[..., Proxy], upstream: FakeUpstream, mode: str, stream: bool
) -> None:
    """A completion, JSON or event stream, in a coding that cannot be undone: the agent gets a 502 in
    its API's shape where enforced, the upstream's bytes as sent where observed; recorded either way."""
    proxy = shared_proxy(mode=mode)
    sent = b"\x1f\x9d\x90" + AWS_KEY.encode()
    with client_for(proxy) as client:
        for encoding in UNDECODABLE:
            upstream.reply = Reply(
                encoded_body=(encoding, sent), content_type="text/event-stream" if stream else None
            )
            with client.stream(
                "POST",
                f"{upstream.url}/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream},
            ) as answer:
                received = b"".join(answer.iter_raw())
            if mode == "enforce":
                assert answer.status_code == 502, encoding
                assert b"inspection.unsupported_coding" in received
            else:
                assert (answer.status_code, answer.headers["content-encoding"]) == (200, encoding)
                assert received == sent
    records = proxy.wait_for_records(len(UNDECODABLE))
    for record in records:
        assert [finding["enforced"] for finding in unsupported_coding_findings(record)] == [mode == "enforce"]
        assert not [error for error in record["errors"] if "inspection cap" in error]


def _inflating(encoding: str, size: int) -> bytes:
    """``size`` bytes of JSON-looking text compressed far past any real answer's ratio."""
    text = b'{"choices":[{"message":{"content":"' + b"A" * size + b'"}}]}'
    if encoding == "br":
        return cast(bytes, brotli.compress(text, quality=5))
    return gzip.compress(text, 6) if encoding == "gzip" else zstd.compress(text, 3)


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
def test_a_relayed_bomb_does_not_stall_other_agents(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, upstream_pki: UpstreamPKI, encoding: str
) -> None:
    """A compressed answer over the inspection cap is decoded and redacted as it arrives, on the event loop:
    one inflating to 256 MiB must neither hold the other agents up nor reach its agent unscanned. It is
    cut, recorded as a bomb, and the next request is served."""
    proxy = start_proxy(mode="enforce", extra="inspection: {max_body_bytes: 64KiB}\n")
    bomb = _inflating(encoding, 256 << 20)
    other_upstream = FakeUpstream(upstream_pki)
    other_upstream.reply = Reply(text="small answer")
    small_seconds: list[float] = []
    for stream in (False, True):
        upstream.reply = Reply(encoded_body=(encoding, bomb))
        received: list[bytes] = []

        def fetch(stream: bool = stream, received: list[bytes] = received) -> None:
            payload = {"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
            with (
                client_for(proxy) as client,
                client.stream("POST", f"{upstream.url}/v1/chat/completions", json=payload) as answer,
            ):
                if answer.status_code == 502:
                    received.append(b"<refused>")
                    return
                try:
                    received.extend(answer.iter_raw())
                except httpx.RemoteProtocolError:  # cut before the body's end
                    received.append(b"<cut>")

        sent_before = len(upstream.received)
        bomb_agent = threading.Thread(target=fetch)
        bomb_agent.start()
        while len(upstream.received) == sent_before and bomb_agent.is_alive():
            time.sleep(0.01)
        other_agent = sdk(proxy, other_upstream)
        asked = 0
        # At least one small request, even when the bomb was refused before the first one could start.
        while asked == 0 or bomb_agent.is_alive():
            asked += 1
            started = time.perf_counter()
            answer = other_agent.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
            small_seconds.append(time.perf_counter() - started)
            assert answer.choices[0].message.content == "small answer"
        bomb_agent.join()
        assert received[-1:] in ([b"<cut>"], [b"<refused>"]), encoding
        assert sum(len(piece) for piece in received) < (1 << 20), encoding
        # At most the floor of it was ever decoded and scanned; nothing past it reached the agent.
        assert b"".join(received).count(b"A") <= BOMB_FLOOR, encoding
    other_upstream.close()
    assert small_seconds and max(small_seconds) < 2, small_seconds
    assert_still_serving(proxy, upstream)
    records = proxy.wait_for_records(len(small_seconds) + 3)
    bombs = [record for record in records if over_cap_findings(record)]
    assert [record["decision"] for record in bombs] == ["blocked", "blocked"]
