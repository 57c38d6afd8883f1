"""mitmproxy's own body reads go through egressguard's capped decoders once the addon is configured."""

from __future__ import annotations

import gzip
import textwrap
from collections.abc import Iterator

import brotli  # type: ignore[import-untyped]  # brotli ships neither type hints nor stubs
import pytest
from mitmproxy.net import encoding
from mitmproxy.test import taddons, tflow

from addons.wire.decoding import CappedDecoding
from proxy.config.policy import parse_policy
from proxy.runtime import Runtime
from proxy.state import SqliteStateStore

CAP = 1 << 20


@pytest.fixture
def capped() -> Iterator[CappedDecoding]:
    policy = parse_policy(
        textwrap.dedent(f"""\
            agents:
              bot: {{token: t, role: r}}
            roles:
              r: {{egress: {{allow: [api.openai.com]}}}}
            inspection: {{max_body_bytes: {CAP}}}
            """),
        "p.yaml",
        environ={},
    )
    original = encoding.custom_decode
    addon = CappedDecoding(Runtime(policy, SqliteStateStore(None)))
    with taddons.context(addon) as context:
        context.configure(addon)
        yield addon
    encoding.custom_decode = original


def test_mitmproxy_reads_of_a_bomb_stop_at_the_cap(capped: CappedDecoding) -> None:
    """``.content``, ``.text`` and ``get_content`` of a 64 MiB br bomb fail or fall back to the raw
    bytes instead of inflating it."""
    flow = tflow.tflow(resp=True)
    assert flow.response is not None
    bomb = brotli.compress(b"A" * (64 << 20), quality=5)
    flow.response.headers["content-encoding"] = "br"
    flow.response.raw_content = bomb
    with pytest.raises(ValueError, match="exceeds the cap"):
        _ = flow.response.content
    assert flow.response.get_content(strict=False) == bomb
    assert len(flow.response.get_text(strict=False) or "") <= len(bomb)


def test_mitmproxy_reads_every_gzip_member_and_stacked_codings(capped: CappedDecoding) -> None:
    """Bodies mitmproxy alone decoded in part (first member) or not at all (a list of codings) decode
    whole; text still decodes through its charset."""
    flow = tflow.tflow()
    flow.request.headers["content-encoding"] = "gzip"
    flow.request.raw_content = gzip.compress(b"first ") + gzip.compress(b"second")
    assert flow.request.content == b"first second"
    flow.request.headers["content-encoding"] = "gzip, br"
    flow.request.headers["content-type"] = "text/plain; charset=latin-1"
    flow.request.raw_content = brotli.compress(gzip.compress("caf\u00e9".encode("latin-1")))
    assert flow.request.text == "caf\u00e9"


def test_codecs_that_are_no_http_coding_are_not_applied(capped: CappedDecoding) -> None:
    """``bz2`` and ``zlib`` would reach Python's codecs, unbounded: they are refused."""
    flow = tflow.tflow()
    flow.request.headers["content-encoding"] = "bz2"
    flow.request.raw_content = b"BZh9..."
    assert flow.request.get_content(strict=False) == b"BZh9..."
    with pytest.raises(ValueError, match="cannot be decoded"):
        _ = flow.request.content


def test_no_websocket_compression_is_negotiated(capped: CappedDecoding) -> None:
    """wsproto inflates permessage-deflate without a bound: the offer and an answer that accepts one
    anyway are both removed, so messages travel uncompressed."""
    flow = tflow.twebsocketflow()
    assert flow.response is not None
    flow.request.headers["Sec-WebSocket-Extensions"] = "permessage-deflate; client_max_window_bits"
    flow.response.headers["Sec-WebSocket-Extensions"] = "permessage-deflate"
    capped.requestheaders(flow)
    capped.responseheaders(flow)
    assert "sec-websocket-extensions" not in flow.request.headers
    assert "sec-websocket-extensions" not in flow.response.headers
