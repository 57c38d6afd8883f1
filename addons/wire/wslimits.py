"""A WebSocket connection holds at most one message under the inspection cap, however long it lives,
and its pings and close reasons carry nothing across the proxy.

mitmproxy joins a message's frames in memory before anyone sees it, with no bound (one message in 1 MiB
fragments grew the proxy by 2.5 times what was sent), and keeps every message of a connection on its
flow until the connection closes (a realtime session streaming audio grows for as long as it lasts).
``WebSocketLimits`` installs connections that close both sides with 1009 (message too big) once a message
grows past ``inspection.max_body_bytes`` (it could not be inspected whole anyway), and lets go of each
message's content once the next one arrives (its place and count stay: findings name messages by index).
The turn records it (``inspection.message_over_cap``). A ping's payload, which mitmproxy relays
unread both ways (up to 125 bytes a frame), crosses as a keyed digest of it, and the pong that echoes the
digest goes back with the payload: keepalives work, and no data rides on them. A close frame crosses
with its code and without its reason, which mitmproxy relayed unread both ways; an upstream's close goes
after what the proxy held of its messages (``UPSTREAM_CLOSING``), relayed as its last messages.
``WebSocketLimits`` comes after ``addons.inspect`` and before ``addons.record.audit`` in the chain.
"""

from __future__ import annotations

import hmac
import itertools
import secrets
import threading
import weakref
from collections import OrderedDict
from collections.abc import Generator, Iterator, MutableMapping, Set
from typing import Any

import wsproto.events
from mitmproxy import connection, http
from mitmproxy.proxy.layers import websocket

from addons.gate.turns import policy_of, turn_of
from addons.inspect import body_finding
from addons.wire.wsclose import CLOSE_REASONS, CLOSING, POLICY_VIOLATION, UPSTREAM_CLOSING, LastWords
from proxy.inspection import inspection_threat
from proxy.model import Decision
from proxy.runtime import Runtime

TOO_BIG = 1009
"""RFC 6455's close code for a message too big to process."""
PING_KEY = secrets.token_bytes(32)
PING_TOKEN_BYTES = 8
MAX_PINGS = 4096
PINGED: OrderedDict[bytes, bytes] = OrderedDict()
"""Ping payloads by the stand-in they were relayed as, until their pong: a ping's payload (up to 125
bytes a frame, any number of frames) never crosses the proxy, where it was relayed unread both ways."""
PINGED_LOCK = threading.Lock()
"""Held over each reading and change of ``PINGED``: every connection shares it, and nothing keeps it to
the event loop's thread (an in-process proxy, a hook run in a worker thread)."""
OVER_CAP_RULE = "inspection.message_over_cap"
OVERFLOWED: MutableMapping[connection.Connection, int] = weakref.WeakKeyDictionary()
"""The connections (agent's or upstream's side) whose peer sent a message over the cap, with the cap."""


def stand_in(payload: bytes) -> bytes:
    """What a ping's payload is relayed as: a keyed digest of it, remembered until its pong comes back."""
    if not payload:
        return payload
    token = hmac.digest(PING_KEY, payload, "sha256")[:PING_TOKEN_BYTES]
    with PINGED_LOCK:
        PINGED[token] = payload
        PINGED.move_to_end(token)
        while len(PINGED) > MAX_PINGS:
            PINGED.popitem(last=False)
    return token


def answered(payload: bytes) -> bytes:
    """What a pong's payload is relayed as: the payload of the ping it answers, or (a pong no relayed
    ping asked for) a stand-in that is never answered."""
    if not payload:
        return payload
    with PINGED_LOCK:
        pinged = PINGED.pop(payload, None)
    return pinged or hmac.digest(PING_KEY, payload, "sha256")[:PING_TOKEN_BYTES]


class BoundedConnection(websocket.WebsocketConnection):
    max_message_bytes = 8 << 20
    """Set from the policy (``WebSocketLimits.configure``)."""

    _message_bytes = 0

    def events(self) -> Iterator[wsproto.events.Event]:
        for event in super().events():
            # Asked before each event: a hook that closes the connection runs while the layer is between
            # two events of one read, and no message after that one may be relayed.
            closing = CLOSING.get(self.conn)
            if closing is not None:
                yield wsproto.events.CloseConnection(code=closing, reason=CLOSE_REASONS.get(self.conn, ""))
                return
            if isinstance(event, wsproto.events.Ping):
                event = wsproto.events.Ping(payload=stand_in(bytes(event.payload)))
            elif isinstance(event, wsproto.events.Pong):
                event = wsproto.events.Pong(payload=answered(bytes(event.payload)))
            elif isinstance(event, wsproto.events.CloseConnection):
                event = yield from self._last_words(event)
            elif isinstance(event, wsproto.events.Message):
                self._message_bytes += len(event.data)
                if self._message_bytes > self.max_message_bytes:
                    OVERFLOWED[self.conn] = self.max_message_bytes
                    reason = f"message over {self.max_message_bytes} bytes"
                    yield wsproto.events.CloseConnection(code=TOO_BIG, reason=reason)
                    return
                if event.message_finished:
                    self._message_bytes = 0
            yield event

    def _last_words(
        self, close: wsproto.events.CloseConnection
    ) -> Generator[wsproto.events.Event, None, wsproto.events.CloseConnection]:
        """What the proxy held of the upstream's messages goes before the upstream's close, as the
        upstream's last messages, while the agent's side still takes them; the close that follows. A close
        reason is up to 123 bytes of text mitmproxy relays unread to both sides: it does not cross."""
        said = UPSTREAM_CLOSING.pop(self.conn, None)
        words = LastWords([]) if said is None else said()
        if words.sending:
            self.frame_buf = [b""]  # a message the close cut short is not relayed: nothing joins it
        for content, as_text in words.sending:
            yield from WholeCharacters([], as_text)(content)
        if words.refusal:
            return wsproto.events.CloseConnection(code=POLICY_VIOLATION, reason=words.refusal)
        return wsproto.events.CloseConnection(code=close.code)


class WholeCharacters(websocket.Fragmentizer):
    """Cuts a message into frames as mitmproxy does (the sizes it came in, or 4000 bytes where the proxy
    changed it), a text message's cuts moved back to a character's start. mitmproxy cut through a
    character and decoded each frame with ``errors="replace"``: a changed or injected text message past
    4000 bytes reached its peer with U+FFFD in place of the letters across a cut, not as inspected. A
    text message is UTF-8 by then (``proxy.wire.textframes``): one that is not raises, never sent
    altered."""

    def __call__(self, content: bytes) -> Iterator[wsproto.events.Message[Any]]:
        if not self.is_text:
            yield from super().__call__(content)
            return
        cuts = list(itertools.accumulate(self.fragment_lengths[:-1]))
        if sum(self.fragment_lengths) != len(content):
            cuts = list(range(self.FRAGMENT_SIZE, len(content), self.FRAGMENT_SIZE))
        starts = sorted({0, *(character_start(content, cut) for cut in cuts)})
        ends = [*starts[1:], len(content)]
        for start, end in zip(starts, ends, strict=True):
            yield wsproto.events.TextMessage(
                content[start:end].decode("utf-8"), message_finished=end == len(content)
            )


def character_start(content: bytes, cut: int) -> int:
    """The start of the UTF-8 character ``content[cut]`` is in (a continuation byte is 0b10xxxxxx)."""
    while cut > 0 and content[cut] & 0xC0 == 0x80:
        cut -= 1
    return cut


class WebSocketLimits:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def load(self, loader: object) -> None:
        websocket.WebsocketConnection = BoundedConnection  # type: ignore[misc]  # the layer looks it up here
        websocket.Fragmentizer = WholeCharacters  # type: ignore[misc]

    def configure(self, updated: Set[str]) -> None:
        BoundedConnection.max_message_bytes = self.runtime.policy.max_body_bytes

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        """The turn records a connection closed for a message over the cap: closed in every mode, since
        holding the message whole is what the cap prevents."""
        turn = turn_of(flow)
        cap = OVERFLOWED.pop(flow.client_conn, None) or OVERFLOWED.pop(flow.server_conn, None)
        if turn is None or cap is None:
            return
        policy = policy_of(flow, self.runtime)
        signal = f"a WebSocket message grew past the inspection cap of {cap} bytes; the connection was closed"
        turn.add(body_finding(OVER_CAP_RULE, signal, "websocket", inspection_threat(policy), enforced=True))
        turn.escalate(Decision.BLOCKED)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        messages = flow.websocket.messages if flow.websocket is not None else []
        if len(messages) > 1:
            messages[-2].content = b""
