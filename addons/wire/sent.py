"""Which requests the HTTP layer handed to an upstream connection: the one proof that a request left.

The request hooks' end is not: an agent that goes away while they run has its request dropped after them,
unsent. The HTTP/1 and HTTP/2 connections to upstreams (``addons.wire.trailers``) mark each request as
its head is written to them; the audit record's ``forwarded`` reads the mark."""

from __future__ import annotations

import weakref

from mitmproxy import http
from mitmproxy.proxy.layers.http._events import HttpEvent, RequestHeaders

_SENT: weakref.WeakSet[http.Request] = weakref.WeakSet()


def mark_sent(event: HttpEvent) -> None:
    """Called with each event an upstream connection is about to send."""
    if isinstance(event, RequestHeaders):
        _SENT.add(event.request)


def was_sent(request: http.Request) -> bool:
    return request in _SENT
