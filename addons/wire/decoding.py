"""Caps every body decode mitmproxy itself performs.

mitmproxy decodes a body whole, with no bound, wherever anything reads ``.content``, ``.text``,
``.json()`` or ``get_content()`` (its own addons included: ``modify_body``, ``hardump``, content views),
and hands a Content-Encoding it does not know to Python's codecs (``bz2``, ``zlib``). All of those go
through one table of decoders; this addon replaces it with the capped decoders egressguard reads bodies
with, so no read of a body can inflate it past the inspection cap.

WebSocket messages are the other place mitmproxy inflates: wsproto undoes ``permessage-deflate`` without
a bound. No WebSocket extension is negotiated through the proxy, so messages travel uncompressed (a
frame compressed anyway is a protocol error that closes the connection).
"""

from __future__ import annotations

from collections.abc import Set

from mitmproxy import http
from mitmproxy.net import encoding

from proxy.runtime import Runtime
from proxy.wire.decoding import CappedDecoders


class CappedDecoding:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def configure(self, updated: Set[str]) -> None:
        decoders = CappedDecoders(self.runtime.policy.max_body_bytes)
        encoding.custom_decode = decoders  # type: ignore[assignment]  # its table's type names its own functions

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        flow.request.headers.pop("sec-websocket-extensions", None)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            flow.response.headers.pop("sec-websocket-extensions", None)
