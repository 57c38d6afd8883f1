"""What a peer sends while a hook decides waits in the peer's socket, not in the proxy's memory.

mitmproxy reads every connection without pause and hands each read to its layers. A layer waiting for a
hook (an egress lookup, a request's inspection the answer waits for) keeps whatever reaches it meanwhile
in a queue without bound: a request body sent on while its head is being decided, an answer streamed
while its request is still being read, the frames of an HTTP/2 stream. A peer that keeps sending for as
long as a hook takes could fill the proxy's memory. ``HeldReads`` stops reading a connection, client or
server, once the layers of its client connection hold more than ``MAX_QUEUED_BYTES`` queued, and reads on
once they have taken it: the kernel's socket buffers fill and TCP slows the peer down, as it does for a
slow receiver.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from mitmproxy import connection, ctx
from mitmproxy.proxy import layer
from mitmproxy.proxy.server import ConnectionHandler
from mitmproxy.proxy.server_hooks import ServerConnectionHookData

MAX_QUEUED_BYTES = 1 << 20
"""Bytes the layers of one client connection may hold while hooks decide, before its reads stop."""
DRAIN_POLL_S = 0.005
"""How often a held connection looks whether its layers have taken what they held: a held connection is
one whose peer sends far faster than its hooks decide, so a few milliseconds more wait nothing."""

_layers_of: weakref.WeakKeyDictionary[connection.Client, weakref.WeakSet[layer.Layer]] = (
    weakref.WeakKeyDictionary()
)


def queued_bytes(layers: Iterable[layer.Layer]) -> int:
    """Bytes of data the paused ones of ``layers`` hold until their hook returns."""
    total = 0
    for each in layers:
        if each._paused is not None:
            for event in each._paused_event_queue:
                data = getattr(event, "data", None)
                if isinstance(data, bytes):
                    total += len(data)
    return total


class HeldReader:
    """A connection's reader that reads only while the layers of its client hold no more than
    ``MAX_QUEUED_BYTES``; everything else is the reader's own."""

    def __init__(self, reader: Any, client: connection.Client) -> None:
        self._reader = reader
        self._layers = _layers_of.setdefault(client, weakref.WeakSet())

    async def read(self, size: int = -1) -> bytes:
        while queued_bytes(self._layers) > MAX_QUEUED_BYTES:
            await asyncio.sleep(DRAIN_POLL_S)
        data: bytes = await self._reader.read(size)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


def _registering(init: Callable[[layer.Layer, Any], None]) -> Callable[[layer.Layer, Any], None]:
    def __init__(self: layer.Layer, context: Any) -> None:
        init(self, context)
        _layers_of.setdefault(context.client, weakref.WeakSet()).add(self)

    __init__.registers_layers = True  # type: ignore[attr-defined]
    return __init__


class HeldReads:
    """Gives every client and server connection a ``HeldReader`` before mitmproxy starts reading it."""

    def load(self, loader: object) -> None:
        if not getattr(layer.Layer.__init__, "registers_layers", False):
            layer.Layer.__init__ = _registering(layer.Layer.__init__)  # type: ignore[method-assign,assignment]

    def client_connected(self, client: connection.Client) -> None:
        self._hold(client, client)

    def server_connected(self, data: ServerConnectionHookData) -> None:
        self._hold(data.client, data.server)

    def _hold(self, client: connection.Client, peer: connection.Connection) -> None:
        handler: ConnectionHandler | None = ctx.master.addons.get("proxyserver").connections.get(client.id)
        if handler is None:
            return
        transport = handler.transports.get(peer)
        if transport is not None and transport.reader is not None:
            # mitmproxy reads a connection through read() alone.
            transport.reader = HeldReader(transport.reader, client)  # type: ignore[assignment]
