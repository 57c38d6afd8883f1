"""The model's words a realtime API's server messages carry, read as a stream's text is.

The OpenAI Realtime API sends a reply's text and its audio's transcript a delta a message
(``response.output_text.delta``, ``response.output_audio_transcript.delta``, and their beta names), then
repeats the whole of it in the events that end it (the part, the item, the response). The Gemini Live API
sends a model turn's text parts and its output transcription a chunk a message until the turn completes.
Each run of deltas is one channel, read through text filters (``TextFilter``) as an event stream's text
is: what could still become a match is held and sent with the next delta or, when the channel ends, in a
delta of its own sent before the message that ends it. Whole texts are filtered whole.

The arguments of a tool call streamed a delta a message (``call_pieces``: the Realtime API's
``response.function_call_arguments.delta``, a server of its own sending Chat's or Anthropic's deltas) are
a channel each too, joined by the call's place as the SDK joins them, through filters of their own, and
ended by what ends the call's arguments (its ``.done`` event, its block's stop, its choice's end).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from proxy.dialects.anthropic import DELTA_TEXT_KEYS
from proxy.dialects.base import as_dict, as_list, as_position, as_str
from proxy.dialects.gemini import field_of
from proxy.dialects.generic import delta_carrying
from proxy.dialects.locator import Step, format_locator, parse_locator
from proxy.dialects.messages import in_responses
from proxy.dialects.openai_chat import TEXT_KEYS
from proxy.dialects.shapes import call_pieces
from proxy.dialects.stream import TextFilter

LIVE_FIELDS_IN_SNAKE_CASE = ("server_content", "model_turn", "output_transcription")
"""How ``field_of`` also finds the Live fields read here: a server reading protocol buffers' JSON takes
either spelling, so a message may carry either."""

Channel = tuple[Hashable, ...]
"""A run of deltas: its response, item and content part, and whether it is text or a transcript."""

DELTAS = {
    "response.text.delta": "text",
    "response.output_text.delta": "text",
    "response.audio_transcript.delta": "transcript",
    "response.output_audio_transcript.delta": "transcript",
}
"""Realtime events carrying a piece of the model's words in ``delta``, by the channel kind."""
DONE = {
    "response.text.done": "text",
    "response.output_text.done": "text",
    "response.audio_transcript.done": "transcript",
    "response.output_audio_transcript.done": "transcript",
}
"""Realtime events ending a channel, with its whole text in the field the kind names."""
ITEM_EVENTS = (
    "response.output_item.added",
    "response.output_item.done",
    "conversation.item.created",
    "conversation.item.added",
    "conversation.item.done",
    "conversation.item.retrieved",
)
"""Realtime events holding an item whole (an assistant message's text and transcripts)."""
PART_EVENTS = ("response.content_part.added", "response.content_part.done")
LIVE_TURN_ENDS = ("turnComplete", "generationComplete", "interrupted")
"""What ends a Live model turn, and with it the turn's text and transcription."""
CHAT = "chat"
"""What a channel of a Chat chunk's delta text is keyed by before its choice's index and field."""
ANTHROPIC = "anthropic"
"""What a channel of an Anthropic block's delta text is keyed by before the block's index and field."""
ANTHROPIC_ENDS = ("message_delta", "message_stop")
"""Anthropic events ending every block of a message."""
MARKERS = (
    "text",
    "transcript",
    "response.done",
    *LIVE_TURN_ENDS,
    "turn_complete",
    "generation_complete",
    "choices",
    "content_block",
    *ANTHROPIC_ENDS,
)
"""Words a message holding or ending the model's words holds (a Live turn's end in either spelling, a
Chat chunk's choices, an Anthropic block's delta or stop and a message's end)."""
ARGUMENTS = "arguments"
"""What a channel of a call's arguments is keyed by before the call's place (``read_arguments``)."""
MAX_CHANNELS = 64
"""Channels open at once on a connection; past it the oldest is ended (its held text sent)."""
MAX_KEPT_CHARS = 1 << 20
"""How much of a channel's text is kept to be read whole when it ends; past it the head is let go."""


@dataclass(frozen=True, slots=True)
class Piece:
    """A string of a message holding the model's words: a delta of ``channel``, or a whole text (None)."""

    steps: tuple[Step, ...]
    text: str
    channel: Channel | None
    call: Channel | None = None
    """The place of the call whose arguments the channel is of (``read_arguments``)."""


@dataclass(slots=True)
class Reading:
    """What a server message holds of the model's words."""

    pieces: list[Piece] = field(default_factory=list)
    ends: list[Channel] = field(default_factory=list)
    """Prefixes of the channels the message ends (a channel, a whole response, a Live turn)."""


def may_hold_words(text: str) -> bool:
    """Whether the server message ``text`` may be one ``read_message`` finds anything in: false for the
    audio a realtime session streams, at the cost of a few substring searches."""
    return "\\u" in text or any(marker in text for marker in MARKERS)


def read_message(document: Any) -> Reading:
    """Where the server message ``document`` holds the model's words (``Reading``)."""
    event = as_dict(document)
    kind = as_str(event.get("type"))
    if kind is not None:
        return (
            _anthropic(event, kind)
            if kind.startswith(("content_block_", "message_"))
            else _realtime(event, kind)
        )
    reading = Reading()
    choices = event.get("choices")
    if isinstance(choices, list):
        _chat(reading, choices)
    content_key, content = field_of(event, "serverContent")
    if isinstance(content, dict):
        _live(reading, content, (content_key,))
    return reading


def read_arguments(document: Any) -> Reading:
    """Where the server message ``document`` holds pieces of the arguments of calls that stream, each a
    delta of the channel of its call's place, and the channels whose arguments it ends: the place's, or
    every call's under it (a response's end, a choice's)."""
    reading = Reading()
    for piece in in_responses(call_pieces(document), document):
        if piece.key is None:
            continue  # a place clients read otherwise: the message is withheld (``MessageCalls``)
        channel = (ARGUMENTS, *piece.key)
        if piece.text_at is not None:
            reading.pieces.append(
                Piece(tuple(parse_locator(piece.text_at)), piece.arguments, channel, piece.key)
            )
        # A fragment of the arguments' object: each of its strings is appended to the one at its place.
        reading.pieces += [
            Piece(tuple(parse_locator(at)), text, (*channel, place), piece.key)
            for at, text, place in piece.leaves
        ]
        if piece.ends or piece.given is not None:
            reading.ends.append(channel)
    return reading


def _realtime(event: dict[str, Any], kind: str) -> Reading:
    reading = Reading()
    response = as_str(event.get("response_id"))
    if kind in DELTAS and isinstance(event.get("delta"), str):
        channel = _channel(event, response, DELTAS[kind])
        reading.pieces.append(Piece(("delta",), event["delta"], channel))
    elif kind in DONE:
        text_key = DONE[kind]
        reading.ends.append(_channel(event, response, text_key))
        if isinstance(event.get(text_key), str):
            reading.pieces.append(Piece((text_key,), event[text_key], None))
    elif kind in PART_EVENTS:
        reading.pieces += _content_texts(as_dict(event.get("part")), ("part",))
    elif kind in ITEM_EVENTS:
        reading.pieces += _item_texts(event.get("item"), ("item",))
    elif kind == "response.done":
        body = as_dict(event.get("response"))
        reading.ends.append((as_str(body.get("id")) or response,))
        for index, item in enumerate(as_list(body.get("output"))):
            reading.pieces += _item_texts(item, ("response", "output", index))
    return reading


def _chat(reading: Reading, choices: list[Any]) -> None:
    """A Chat chunk's delta texts, a channel each by its choice's index and the field, as the OpenAI SDK
    joins them; a choice's ``finish_reason`` ends its channels."""
    for position, choice in enumerate(choices):
        if not isinstance(choice, dict):
            continue
        index = as_position(choice.get("index"))
        place = position if index is None else index
        delta = as_dict(choice.get("delta"))
        for key in TEXT_KEYS:
            if isinstance(delta.get(key), str):
                reading.pieces.append(
                    Piece(("choices", position, "delta", key), delta[key], (CHAT, place, key))
                )
        if as_str(choice.get("finish_reason")):
            reading.ends.append((CHAT, place))


def _anthropic(event: dict[str, Any], kind: str) -> Reading:
    """An Anthropic event's delta text (a block's ``text_delta`` or ``thinking_delta``), a channel each by
    its block's index and the field, as the SDK joins them; a block's stop ends its channels, a message's
    end every block's."""
    reading = Reading()
    index = as_position(event.get("index"))
    if kind == "content_block_delta":
        delta = as_dict(event.get("delta"))
        key = DELTA_TEXT_KEYS.get(as_str(delta.get("type")) or "")
        if key is not None and isinstance(delta.get(key), str):
            reading.pieces.append(Piece(("delta", key), delta[key], (ANTHROPIC, index, key)))
    elif kind == "content_block_stop":
        reading.ends.append((ANTHROPIC, index))
    elif kind in ANTHROPIC_ENDS:
        reading.ends.append((ANTHROPIC,))
    return reading


def _channel(event: dict[str, Any], response: str | None, kind: str) -> Channel:
    return (response, event.get("item_id"), event.get("output_index"), event.get("content_index"), kind)


def _item_texts(item: Any, steps: tuple[Step, ...]) -> list[Piece]:
    """The texts and transcripts of an assistant message item (a user's own words are not the model's)."""
    body = as_dict(item)
    if body.get("role") != "assistant":
        return []
    return [
        piece
        for index, content in enumerate(as_list(body.get("content")))
        for piece in _content_texts(as_dict(content), (*steps, "content", index))
    ]


def _content_texts(content: dict[str, Any], steps: tuple[Step, ...]) -> list[Piece]:
    return [
        Piece((*steps, key), content[key], None)
        for key in ("text", "transcript")
        if isinstance(content.get(key), str)
    ]


def _live(reading: Reading, content: dict[str, Any], steps: tuple[Step, ...]) -> None:
    turn_key, turn = field_of(content, "modelTurn")
    parts_key, parts = field_of(as_dict(turn), "parts")
    for index, part in enumerate(as_list(parts)):
        text = as_str(as_dict(part).get("text"))
        if text is not None:
            reading.pieces.append(Piece((*steps, turn_key, parts_key, index, "text"), text, ("live", "text")))
    spoken_key, spoken = field_of(content, "outputTranscription")
    text = as_str(as_dict(spoken).get("text"))
    if text is not None:
        reading.pieces.append(Piece((*steps, spoken_key, "text"), text, ("live", "transcript")))
    if any(field_of(content, end)[1] for end in LIVE_TURN_ENDS):
        reading.ends.append(("live",))


def delta_places(document: Any, *, arguments: bool) -> set[tuple[Step, ...]]:
    """Where the server message ``document`` holds deltas of the model's words (``read_message``), and
    with ``arguments`` of calls' arguments (``read_arguments``)."""
    pieces = read_message(document).pieces + (read_arguments(document).pieces if arguments else [])
    return {piece.steps for piece in pieces if piece.channel is not None}


def _delta_message(key: Channel, document: Any, steps: tuple[Step, ...]) -> Callable[[str], Any]:
    """A message carrying nothing but a delta of the channel ``key`` whose first delta ``document`` held
    at ``steps``: the Realtime event itself with another delta, a Live message of one text part or
    transcription, the path to a call's arguments or a Chat or Anthropic delta's text with the scalars a
    client reads on its way."""
    if key[0] in (ARGUMENTS, CHAT, ANTHROPIC):
        where = format_locator(steps)
        return lambda text: {
            name: value
            for name, value in as_dict(delta_carrying(document, where, text)).items()
            if name != "event_id"
        }
    if key[0] != "live":
        event = {name: value for name, value in as_dict(document).items() if name != "event_id"}
        return lambda text: {**event, "delta": text}
    if key[1] == "text":
        return lambda text: {"serverContent": {"modelTurn": {"role": "model", "parts": [{"text": text}]}}}
    return lambda text: {"serverContent": {"outputTranscription": {"text": text}}}


@dataclass(slots=True)
class Ended:
    """A channel that ended: where its first delta came, and its text as received and as sent."""

    where: str
    received: str
    sent: str
    cuts: tuple[int, ...] = ()
    """Where in ``received`` one delta ends and the next begins."""
    call: Channel | None = None
    """The place of the call whose arguments it is (``read_arguments``); None for the model's words."""


@dataclass(slots=True)
class _Open:
    filter: TextFilter
    where: str
    template: Callable[[str], Any]
    call: Channel | None
    received: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    kept: int = 0

    def keep(self, received: str, sent: str) -> None:
        self.received.append(received)
        self.sent.append(sent)
        self.kept += len(received)
        while self.kept > MAX_KEPT_CHARS and len(self.received) > 1:
            self.kept -= len(self.received.pop(0))
            self.sent.pop(0)

    def end(self) -> tuple[str, Ended]:
        held = self.filter.flush()
        self.sent.append(held)
        cuts = list(accumulate(len(piece) for piece in self.received[:-1]))
        ended = Ended(self.where, "".join(self.received), "".join(self.sent), tuple(cuts), self.call)
        return held, ended


@dataclass(slots=True)
class Filtered:
    """A server message's model words as they may go."""

    document: Any
    changed: bool = False
    reworded: bool = False
    """Whether it changed the model's words, not calls' arguments alone."""
    before: list[tuple[Any, Channel | None]] = field(default_factory=list)
    """Messages to send before it: the held text of the channels it ends, each with the place of the call
    whose arguments it is (None for the model's words)."""
    ended: list[Ended] = field(default_factory=list)
    whole: list[tuple[str, str, str]] = field(default_factory=list)
    """The whole texts it holds: where, as received and as sent."""


class MessageText:
    """The channels of the model's words and of calls' arguments on one WebSocket connection, each
    filtered as a stream, by a filter from ``filters`` or ``argument_filters``."""

    def __init__(
        self, filters: Callable[[str], TextFilter], argument_filters: Callable[[str], TextFilter]
    ) -> None:
        self._filters = filters
        self._argument_filters = argument_filters
        self._open: dict[Channel, _Open] = {}

    @property
    def streams_arguments(self) -> bool:
        """Whether a call's arguments are streaming: every message is then read for their end (an
        Anthropic block's stop holds no word that marks a call)."""
        return any(key[0] == ARGUMENTS for key in self._open)

    def filter(self, document: Any, where: str, *, arguments: bool = False) -> Filtered:
        """``document`` (a server message at ``where``) with its model words filtered, and with
        ``arguments`` the pieces of calls' arguments it holds; it may be rewritten in place."""
        reading = read_message(document)
        if arguments:
            read = read_arguments(document)
            reading.pieces += read.pieces
            reading.ends += read.ends
        result = Filtered(document)
        fed: dict[Channel, tuple[tuple[Step, ...], str]] = {}
        for piece in reading.pieces:
            place = f"{where}.{format_locator(piece.steps)}"
            if piece.channel is None:
                whole = self._filters(place)
                sent = whole.feed(piece.text) + whole.flush()
                result.whole.append((place, piece.text, sent))
                result.reworded |= self._put(result, piece.steps, piece.text, sent)
                continue
            channel = self._open.get(piece.channel)
            if channel is None:
                channel = self._start(piece.channel, piece, document, place, result)
            sent = channel.filter.feed(piece.text)
            channel.keep(piece.text, sent)
            fed[piece.channel] = (piece.steps, sent)
            put = self._put(result, piece.steps, piece.text, sent)
            result.reworded |= put and piece.channel[0] != ARGUMENTS
        for prefix in reading.ends:
            for key in [key for key in self._open if key[: len(prefix)] == prefix]:
                if key in fed:
                    # The message ending it carries its last delta: the held text goes with that delta.
                    held, ended = self._open.pop(key).end()
                    result.ended.append(ended)
                    steps, sent = fed[key]
                    put = self._put(result, steps, sent, sent + held)
                    result.reworded |= put and key[0] != ARGUMENTS
                else:
                    self._end(key, result)
        return result

    def _end(self, key: Channel, result: Filtered) -> None:
        """Ends the channel ``key``: its held text goes in a delta of its own, before the message."""
        channel = self._open.pop(key)
        held, ended = channel.end()
        result.ended.append(ended)
        if held:
            result.before.append((channel.template(held), channel.call))

    def end(self) -> Filtered:
        """The connection closes: every channel ends, its held text in a delta of its own (``before``),
        to go before the close where the agent's side still takes it."""
        result = Filtered(None)
        for key in list(self._open):
            self._end(key, result)
        return result

    def _start(self, key: Channel, piece: Piece, document: Any, place: str, result: Filtered) -> _Open:
        """Opens the channel ``key`` at its first delta, ``piece`` of ``document``."""
        if len(self._open) >= MAX_CHANNELS:
            self._end(next(iter(self._open)), result)
        made = self._filters if piece.call is None else self._argument_filters
        template = _delta_message(key, document, piece.steps)
        channel = self._open[key] = _Open(made(place), place, template, piece.call)
        return channel

    @staticmethod
    def _put(result: Filtered, steps: tuple[Step, ...], received: str, sent: str) -> bool:
        """Whether it changed the document."""
        if sent == received:
            return False
        parent = result.document
        for step in steps[:-1]:
            parent = parent[step]
        parent[steps[-1]] = sent
        result.changed = True
        return True
