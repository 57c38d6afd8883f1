"""End to end: a body that is not text (NUL bytes, bytes that are not UTF-8) is read for secrets in its
printable runs; a secret there refuses it where the policy enforces that, and is recorded otherwise."""

from __future__ import annotations

import gzip
import random
import ssl
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.harness import Proxy
from tests.upstream import FakeUpstream, Reply

TOKEN = "ghp_Qw3rTy7uIo9pAs2dFg4hJk6lZx8cVb1nMq5W"
AWS_KEY = "AKIAQWERTY234567ABCD"
NOISE = random.Random(11)  # noqa: S311 - reproducible test bytes, nothing secret
UPLOADED = Reply(body=b'{"id": "file-1", "object": "file"}')

PADDED = {
    "nul": b"\x00" + TOKEN.encode(),
    "junk": NOISE.randbytes(64) + b"\xff" + TOKEN.encode() + b"\x80" + NOISE.randbytes(64),
    "utf16": b"\xff\xfe" + f"key={AWS_KEY}".encode("utf-16-le") + b"\x00\x00",
    "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00" + AWS_KEY.encode() + b"\x00IEND\xaeB`\x82",
}
HEADERS = {
    "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    "jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01",
    "zip": b"PK\x03\x04\x14\x00\x00\x00\x08\x00",
    "protobuf": b"\x08\x96\x01\x12\x07testing\x1a\x03\x08\x96\x01",
}


def _post(proxy: Proxy, upstream: FakeUpstream, body: bytes) -> httpx.Response:
    context = ssl.create_default_context(cafile=proxy.ca_cert)
    with httpx.Client(proxy=proxy.url(), verify=context, timeout=60) as client:
        return client.post(
            f"{upstream.url}/v1/files", content=body, headers={"content-type": "application/octet-stream"}
        )


def _secret_findings(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in record["findings"] if f["threat"] in ("data_exfiltration", "credential_theft")]


@pytest.mark.parametrize("padding", sorted(PADDED))
def test_a_secret_in_a_binary_request_is_refused_where_enforced(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, padding: str
) -> None:
    proxy = start_proxy(mode="enforce")
    reply = _post(proxy, upstream, PADDED[padding])
    assert reply.status_code == 403 and "egressguard blocked this request" in reply.text
    assert upstream.received == []
    record = proxy.wait_for_records(1)[0]
    assert record["decision"] == "blocked" and _secret_findings(record)
    assert TOKEN not in str(record) and AWS_KEY not in str(record)


@pytest.mark.parametrize("padding", sorted(PADDED))
def test_a_secret_in_a_binary_request_is_recorded_where_observed(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, padding: str
) -> None:
    proxy = start_proxy(mode="observe")
    upstream.reply = UPLOADED
    reply = _post(proxy, upstream, PADDED[padding])
    assert reply.status_code == 200 and upstream.received[-1].body == PADDED[padding]
    record = proxy.wait_for_records(1)[0]
    found = _secret_findings(record)
    assert found and not any(finding["enforced"] for finding in found)
    assert TOKEN not in str(record) and AWS_KEY not in str(record)


def test_binary_bodies_without_a_secret_pass_untouched(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """Random bytes under real formats' headers (and gzip'd) raise nothing: a few MB of them in all."""
    proxy = start_proxy(mode="enforce")
    upstream.reply = UPLOADED
    bodies = [header + NOISE.randbytes(1 << 20) for header in HEADERS.values()]
    bodies.append(gzip.compress(NOISE.randbytes(1 << 19), compresslevel=1))
    for body in bodies:
        reply = _post(proxy, upstream, body)
        assert reply.status_code == 200 and upstream.received[-1].body == body
    records = proxy.wait_for_records(len(bodies))
    for record in records:
        # The first connection to the test's upstream is recorded as such: nothing is found in the body.
        assert record["decision"] == "allowed"
        assert [finding for finding in record["findings"] if finding["where"] != "egress"] == []
        assert any("read for secrets in its printable runs" in error for error in record["errors"])


def test_a_secret_in_a_binary_response_is_withheld_where_enforced(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    proxy = start_proxy(mode="enforce")
    upstream.reply = Reply(body=PADDED["nul"], content_type="application/octet-stream")
    reply = _post(proxy, upstream, b'{"purpose": "download"}')
    assert reply.status_code == 502 and TOKEN not in reply.text
    assert _secret_findings(proxy.wait_for_records(1)[0])


def test_a_secret_in_a_binary_response_is_recorded_where_observed(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    proxy = start_proxy(mode="observe")
    upstream.reply = Reply(body=PADDED["junk"], content_type="application/octet-stream")
    reply = _post(proxy, upstream, b'{"purpose": "download"}')
    assert reply.status_code == 200 and reply.content == PADDED["junk"]
    found = _secret_findings(proxy.wait_for_records(1)[0])
    assert found and not any(finding["enforced"] for finding in found)
