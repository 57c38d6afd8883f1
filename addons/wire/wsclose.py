"""An open WebSocket judged again as it goes: what the proxy decides about a connection after its upgrade
(its agent's token rotated away, its user frozen) must end it, and mitmproxy's WebSocket layer has no way
to close one from a hook.

A hook marks the flow's two connections in ``CLOSING``; the next event either side produces is answered
by ``addons.wire.wslimits.BoundedConnection`` with a close frame instead, which the layer sends to both
sides before it lets both connections go. An empty message injected from the agent's side is that next
event, so the close goes out at once rather than when either side next speaks.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass

from mitmproxy import connection, ctx, http, websocket

POLICY_VIOLATION = 1008
"""RFC 6455's close code for a message that breaks the endpoint's policy."""
CLOSING: MutableMapping[connection.Connection, int] = weakref.WeakKeyDictionary()
"""The connections (the agent's and the upstream's side of a flow) to close, with the code to close with;
read and written on the event loop only (hooks and the WebSocket layer)."""
CLOSE_REASONS: MutableMapping[connection.Connection, str] = weakref.WeakKeyDictionary()
"""The reason to close with, where the proxy gives one (``close_reason``)."""


@dataclass(frozen=True, slots=True)
class LastWords:
    """What goes to the agent before an upstream's close reaches it."""

    sending: list[tuple[bytes, bool]]
    """Messages, in order: each one's content, and whether it goes as a text frame."""
    refusal: str = ""
    """Where set, the close goes with it as its reason and ``POLICY_VIOLATION`` as its code: the agent is
    told so of what the proxy withheld as the connection ended, where its protocol has no other way."""


UPSTREAM_CLOSING: MutableMapping[connection.Connection, Callable[[], LastWords]] = weakref.WeakKeyDictionary()
"""By a flow's upstream side, what the proxy lets out before the upstream's close goes to the agent (the
words and calls it held to inspect whole), asked once, as the close comes (``addons.wire.wslimits``)."""


def close_websocket(flow: http.HTTPFlow, code: int = POLICY_VIOLATION, reason: str = "") -> None:
    """Close both sides of the flow's WebSocket with ``code`` and ``reason``, now."""
    CLOSING[flow.client_conn] = CLOSING[flow.server_conn] = code
    CLOSE_REASONS[flow.client_conn] = CLOSE_REASONS[flow.server_conn] = reason
    ctx.master.commands.call("inject.websocket", flow, False, b"", True)


REJUDGE_S = 1.0
"""How often at most what the agent sends on an open WebSocket is judged again for one concern: each
judging reads the state store, and a realtime session sends audio many times a second."""


def due_agent_message(flow: http.HTTPFlow, concern: str) -> websocket.WebSocketMessage | None:
    """The message the agent just sent on the flow's WebSocket, when ``concern`` (a metadata key of the
    caller's) is due to judge it again; None for a message from the upstream, one injected, or one sent
    within ``REJUDGE_S`` of the last judged."""
    if flow.websocket is None:
        return None
    message = flow.websocket.messages[-1]
    now = time.monotonic()
    if not message.from_client or message.injected or now < flow.metadata.get(concern, 0.0):
        return None
    flow.metadata[concern] = now + REJUDGE_S
    return message
