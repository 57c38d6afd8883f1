"""The error pages mitmproxy writes itself quote no traffic.

mitmproxy answers a peer's unparseable HTTP with an error page built by ``format_error`` in each of its
HTTP/1, HTTP/2 and HTTP/3 layers, quoting the bytes it could not read: an upstream's bytes would reach
the agent there without passing any detector (``proxy.wire.errorpages``). ``QuietErrorPages`` installs a
``format_error`` that keeps each error and drops its quotations.
"""

from __future__ import annotations

from mitmproxy.addonmanager import Loader
from mitmproxy.proxy.layers.http import _base, _http1, _http2, _http3

from proxy.wire.errorpages import unquoted

LAYERS = (_http1, _http2, _http3)


def format_error(status_code: int, message: str) -> bytes:
    return _base.format_error(status_code, unquoted(message))


class QuietErrorPages:
    def load(self, loader: Loader) -> None:
        for layer in LAYERS:
            layer.format_error = format_error  # type: ignore[attr-defined]  # each layer's own binding
