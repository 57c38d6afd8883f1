"""What an agent sends while a hook decides waits in its socket, not in the proxy's memory.

mitmproxy reads every connection without pause and hands each read to its layers. A layer waiting for a
hook (an egress lookup) or for its upstream connection to open keeps whatever reaches it meanwhile in a
queue without bound: a request body sent on while its head is being decided or its upstream's TLS
handshake is under way, the frames of an HTTP/2 stream. An agent that keeps sending for as long as that
takes could fill the proxy's memory. ``HeldReads`` stops reading an agent's connection once the layers of
that connection hold more than ``MAX_QUEUED_BYTES`` queued, and reads on once they have taken it: the
kernel's socket buffers fill and TCP slows the agent down, as it does for a slow receiver.

Only the agent's side is held. What a layer waits for may be a reply from upstream (the TLS handshake of
the connection a streamed body goes to), so holding an upstream's reads could wait for ever: what an
upstream sends while a hook decides is still kept in memory as it comes.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from mitmproxy import connection, ctx
from mitmproxy.proxy import layer
from mitmproxy.proxy.server import ConnectionHandler

MAX_QUEUED_BYTES = 1 << 20
"""Bytes the layers of one agent connection may hold while hooks decide, before its reads stop."""
EVENT_OVERHEAD_BYTES = 256
"""What a queued event costs beyond its data: an HTTP/1 chunk of one byte is an event of its own."""
DRAIN_POLL_S = 0.005
"""How often a held connection looks whether its layers have taken what they held: a held connection is
one whose peer sends far faster than its hooks decide, so a few milliseconds more wait nothing."""

_layers_of: weakref.WeakKeyDictionary[connection.Client, weakref.WeakSet[layer.Layer]] = (
    weakref.WeakKeyDictionary()
)


def _layers(client: connection.Client) -> weakref.WeakSet[layer.Layer]:
    """The layers of ``client``'s connection, a set made with its first (``setdefault`` would make one
    for every layer of every request, and throw it away)."""
    layers = _layers_of.get(client)
    if layers is None:
        layers = _layers_of[client] = weakref.WeakSet()
    return layers


def queued_bytes(layers: Iterable[layer.Layer]) -> int:
    """What the paused ones of ``layers`` hold until they resume: each event's data and its overhead."""
    total = 0
    for each in layers:
        if each._paused is not None:
            for event in each._paused_event_queue:
                data = getattr(event, "data", None)
                total += EVENT_OVERHEAD_BYTES + (len(data) if isinstance(data, bytes) else 0)
    return total


class HeldReader:
    """A connection's reader that reads only while the layers of its client hold no more than
    ``MAX_QUEUED_BYTES``; everything else is the reader's own."""

    def __init__(self, reader: Any, client: connection.Client) -> None:
        self._reader = reader
        self._layers = _layers(client)

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
        _layers(context.client).add(self)

    __init__.registers_layers = True  # type: ignore[attr-defined]
    return __init__


class HeldReads:
    """Gives every agent connection a ``HeldReader`` before mitmproxy starts reading it."""

    def load(self, loader: object) -> None:
        if not getattr(layer.Layer.__init__, "registers_layers", False):
            layer.Layer.__init__ = _registering(layer.Layer.__init__)  # type: ignore[method-assign,assignment]

    def client_connected(self, client: connection.Client) -> None:
        handler: ConnectionHandler | None = ctx.master.addons.get("proxyserver").connections.get(client.id)
        if handler is None:
            return
        transport = handler.transports.get(client)
        if transport is not None and transport.reader is not None:
            # mitmproxy reads a connection through read() alone.
            transport.reader = HeldReader(transport.reader, client)  # type: ignore[assignment]
