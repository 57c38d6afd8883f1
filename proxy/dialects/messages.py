"""Tool calls an upstream streams over several WebSocket messages: the Realtime API's item added, its
argument deltas, its arguments done and its item done; a server of its own sending Chat's or Anthropic's
deltas a message each. Each call is joined from its pieces (``call_pieces``) as a client joins it, and
decided once, on its whole arguments, when they end (its item done, its response done, its choice
finished, the connection closed): none of its messages is judged on the part of it they carry.

Where a gate rewrites the connection, every message from a call's first piece on is held, in order,
until the calls it carries a piece of are decided, and then sent (or, carrying a dropped call, not).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from proxy.dialects.base import as_dict, as_str
from proxy.dialects.locator import join, parse_locator
from proxy.dialects.shapes import (
    DECIDED_REMEMBERED,
    STREAMED_ITEMS,
    CallPiece,
    Placed,
    StreamedCall,
    StreamedCalls,
    call_pieces,
)
from proxy.dialects.stream import MAX_HELD_BYTES

Sending = list[tuple[bytes, bool]]
"""Messages to send, in order: each one's content, and whether it goes as a text frame."""
RESPONSE_DONE = "response.done"
"""The Realtime API's event ending a response: every call of the response has all the arguments it gets."""


@dataclass(frozen=True, slots=True)
class HeldMessage:
    content: bytes | None
    """What goes out once its calls are released; None for a message withheld on its own findings."""
    is_text: bool
    keys: frozenset[Any]
    as_came: bytes | None = None
    """What goes out instead where the filters of the arguments it carries pieces of changed nothing of
    them (``MessageCalls.unchanged``): the pieces as they came."""
    held_of: Any = None
    """The call whose arguments' held text alone it carries: not sent where their filter changed nothing
    of them, the pieces having gone as they came."""


class MessageCalls:
    """The calls an upstream streams over the messages of one WebSocket connection."""

    def __init__(self) -> None:
        self.streamed = StreamedCalls()
        self.placed = Placed()
        """What the message last read brought to the calls."""
        self._held: deque[HeldMessage] = deque()
        self._held_bytes = 0
        self.unchanged: set[Any] = set()
        """The calls whose arguments, read joined, their filter let through as they came."""

    @property
    def streaming(self) -> bool:
        """Whether a call is undecided: every message is then read for its pieces (an Anthropic block's
        stop holds no word that marks a call)."""
        return any(call.decision is None for call in self.streamed.calls.values())

    def read(self, document: Any, where: str) -> set[str]:
        """Places the pieces ``document``, the message at ``where``, brings; returns the locators in it of
        the calls it opens, decided when their arguments end rather than on the part this one carries."""
        pieces = [
            piece
            for piece in in_responses(call_pieces(document), document)
            # Arguments given whole for no call streaming (a ``.done`` event alone) are a call whole,
            # gated in their message as such.
            if piece.given is None or piece.opens or piece.key in self.streamed.calls
        ]
        placed = self.streamed.place(pieces, lambda inside: join(where, *parse_locator(inside)))
        progressing = _in_progress(document)
        if progressing is not None:
            # The item of a call being written, repeated: held and sent as the call is decided.
            ids = {found for found in progressing if found}
            held = {key for key, call in self.streamed.calls.items() if ids & set(call.ids)}
            placed = dataclasses.replace(placed, keys=placed.keys | held)
        self.placed = placed
        opening = {piece.where for piece in pieces if piece.opens}
        return opening if progressing is None else opening | {"item"}

    def skip(self) -> None:
        """The message being read was not read for pieces."""
        self.placed = Placed()

    def take_placed(self) -> Placed:
        """What the message last read brought to the calls, read once."""
        placed, self.placed = self.placed, Placed()
        return placed

    def undecided(self) -> Iterator[tuple[Any, StreamedCall]]:
        return ((key, call) for key, call in self.streamed.calls.items() if call.decision is None)

    def hold(
        self,
        content: bytes | None,
        *,
        is_text: bool,
        keys: frozenset[Any],
        as_came: bytes | None = None,
        held_of: Any = None,
    ) -> Sending | None:
        """A message (``content``, None where withheld) carrying pieces of the calls at ``keys``, where
        calls are gated: None where it goes now as it stands, else the messages to send now in its place,
        in order (none where it is withheld or held behind a call still undecided; the messages held
        before it, and it, once their calls are decided). ``as_came`` and ``held_of``: ``HeldMessage``."""
        decisions = {self.streamed.calls[key].decision for key in keys}
        if not self._held and None not in decisions:
            return [] if content is None or "drop" in decisions else None
        self._held.append(HeldMessage(content, is_text, keys, as_came, held_of))
        self._held_bytes += len(content or b"")
        return self.release()

    def forget_decided(self) -> None:
        """Forgets the calls decided and ended, once no message carrying one is held: a connection's later
        turns call at the places its earlier ones did. A call dropped before its end is kept, so that its
        later messages are withheld with it, but for the oldest past ``DECIDED_REMEMBERED``: what is kept
        of a connection's calls stays bounded."""
        if self._held:
            return
        decided = [key for key, call in self.streamed.calls.items() if call.decision is not None]
        surplus = len(decided) - DECIDED_REMEMBERED
        for key in decided:
            if self.streamed.calls[key].ended or surplus > 0:
                surplus -= 1
                self.streamed.forget(key)
                self.unchanged.discard(key)

    def over_cap(self) -> bool:
        """Whether the held messages grew past ``MAX_HELD_BYTES``: their calls must be decided now."""
        return self._held_bytes > MAX_HELD_BYTES

    def release(self) -> Sending:
        """What the held messages let out now: those before the first that carries an undecided call, but
        for the ones withheld or carrying a dropped call."""
        released: Sending = []
        while self._held:
            message = self._held[0]
            decisions = {self.streamed.calls[key].decision for key in message.keys}
            if None in decisions:
                break
            self._held.popleft()
            self._held_bytes -= len(message.content or b"")
            content = self._as_decided(message)
            if content is not None and "drop" not in decisions:
                released.append((content, message.is_text))
        return released

    def _as_decided(self, message: HeldMessage) -> bytes | None:
        """A held message as it goes once its calls are decided: the pieces of calls whose arguments their
        filter changed nothing of as they came, and what that filter held back of them not again."""
        if message.content is None:
            return None
        if message.held_of is not None:
            return None if message.held_of in self.unchanged else message.content
        if message.as_came is not None and message.keys <= self.unchanged:
            return message.as_came
        return message.content


def in_responses(pieces: list[CallPiece], document: Any) -> list[CallPiece]:
    """The pieces of a Realtime event each placed within its response (an item's ``output_index`` counts
    from 0 in each response, and out-of-band responses run side by side); a ``response.done`` ends every
    call of its response."""
    event = as_dict(document)
    response = as_str(event.get("response_id"))
    if response is not None:
        scope = ("response", response)
        pieces = [
            piece if piece.key is None else dataclasses.replace(piece, key=(scope, *piece.key))
            for piece in pieces
        ]
    if as_str(event.get("type")) == RESPONSE_DONE:
        done = as_str(as_dict(event.get("response")).get("id"))
        if done is not None:
            pieces.append(CallPiece((("response", done),), "", ends=True))
    return pieces


def _in_progress(document: Any) -> tuple[str | None, str | None] | None:
    """The ids of the call item a Realtime ``conversation.item.created`` or ``.added`` event holds while
    the model writes it (``in_progress``, no arguments yet): not a call to judge, but the start of one whose
    arguments the events that follow carry. None where it holds no such item."""
    item = as_dict(as_dict(document).get("item"))
    status, arguments = as_str(item.get("status")), item.get("arguments")
    if as_str(item.get("type")) in STREAMED_ITEMS and status == "in_progress" and arguments in ("", None):
        return as_str(item.get("id")), as_str(item.get("call_id"))
    return None
