"""End to end: request shapes that HTTP/1 parsers read differently (request smuggling) are refused before
anything reaches an upstream, so no request can ride inside another past inspection."""

from __future__ import annotations

import pytest

from tests.harness import Proxy, proxy_authorization
from tests.upstream import FakeUpstream

SMUGGLED = b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello"
FRAMINGS = {
    "content-length and chunked": b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
    "two content lengths": b"Content-Length: 4\r\nContent-Length: 90\r\n",
    "chunked not last": b"Transfer-Encoding: chunked, identity\r\n",
    "unknown coding": b"Transfer-Encoding: xchunked\r\n",
    "folded coding": b"Transfer-Encoding:\r\n chunked\r\n",
    "space before the colon": b"Transfer-Encoding : chunked\r\n",
    "a signed length": b"Content-Length: +4\r\n",
}


@pytest.mark.parametrize("framing", sorted(FRAMINGS))
def test_ambiguous_request_framing_is_refused(proxy: Proxy, upstream: FakeUpstream, framing: str) -> None:
    """Each framing one HTTP/1 reader ends where another reads on is answered 400, and the upstream
    receives nothing."""
    body = b"0\r\n\r\n" + SMUGGLED
    status, _ = proxy.raw(
        b"POST http://localhost:%d/v1/chat/completions HTTP/1.1\r\nHost: localhost:%d\r\n%s%s\r\n%s"
        % (upstream.port, upstream.port, proxy_authorization(), FRAMINGS[framing], body)
    )
    assert status == 400
    assert upstream.received == []
