"""What detectors plug into a streamed response, and the session machinery every dialect shares.

A session reads SSE bytes as they arrive, keeps the neutral ``Completion`` up to date, and when filters
are given rewrites the stream:

- a ``TextFilter`` per text channel (one per ``TextSegment.where``) sees every text delta and returns the
  text to release now; what it holds back comes out of ``flush()`` at the channel's end, in a delta event
  of the dialect's own shape sent before the event that ends the channel;
- a ``ToolGate`` decides, once a tool call's name is known, whether the call reaches the agent; deltas
  that arrive before that are held, and so is the whole call when the gate wants its complete arguments
  (a destructive call under an approval bound to them): it is then sent whole, or dropped, when they end;
- an argument filter (a ``TextFilter`` per released tool call, made with the call's ``ToolCall.where``)
  sees the call's raw argument text as it streams, with the same hold-back and flush as a text channel.
  Arguments that are a JSON string stay valid JSON as long as the filter's replacements contain no
  quote or backslash. ``completion`` keeps the upstream's original arguments either way.

Without filters every event is forwarded byte for byte.
"""

from __future__ import annotations

import contextlib
import copy
import re
from _json import encode_basestring, make_encoder
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal, NoReturn, Protocol, runtime_checkable

from proxy.dialects import readings
from proxy.dialects.locator import ROOT, locator_steps
from proxy.exchange import Attachment, Completion, Part, ToolCall
from proxy.wire import jsontext
from proxy.wire.sse import Serialised, SSEEvent, SSEParser, encode_text, is_serialised, write_event


class TextFilter(Protocol):
    """Incremental text transformer: a redactor holds back what might be the start of a secret."""

    def feed(self, text: str) -> str:
        """Takes the next piece of text; returns the text that may be released now."""
        ...

    def flush(self) -> str:
        """The channel ended: returns everything still held."""
        ...


@runtime_checkable
class Continuing(Protocol):
    """A filter that can read its channel as the continuation of text another channel carried, so a
    secret split across two channels (two content blocks, reasoning then answer) is still one match."""

    def continue_from(self, text: str) -> None: ...

    def continued(self) -> tuple[int, str] | None:
        """When a redacted match began in the text this channel continues: how many of that text's last
        characters it covers, and the placeholder that stands for it."""
        ...


@runtime_checkable
class Anticipating(Protocol):
    """A filter that can be told the text its next feeds bring (the rest of a burst of events read
    together), so that it decides what to release on all of it: see ``StreamRedactor.expect``."""

    def expect(self, text: str) -> None: ...


class UnexpectedText(Exception):
    """A channel was fed other text than it was told to expect: what its filter released was decided on
    text that did not come, so nothing of that burst may be sent. (Not a shape error: never passed on.)"""


Path = tuple[str | int, ...]

Sent = bytes | tuple[SSEEvent, Any]
"""A piece of what a session sent: bytes (``Serialised`` for an event written here), or an event sent as
it came with its payload (``take_sent``)."""


def sent_bytes(pieces: list[Sent]) -> bytes:
    return b"".join(piece if isinstance(piece, bytes) else piece[0].raw for piece in pieces)


def sent_as(pieces: list[Sent], sent: bytes) -> bool:
    """Whether ``pieces`` are the bytes ``sent`` (``sent_bytes(pieces) == sent``), each compared in its
    place without joining them: a copy of every event sent, made only to be compared."""
    at = 0
    for piece in pieces:
        raw = piece if isinstance(piece, bytes) else piece[0].raw
        if not sent.startswith(raw, at):
            return False
        at += len(raw)
    return at == len(sent)


class EventScan(Protocol):
    """Scans the strings of each event that the dialect does not filter as text (``proxy.scanning.residual``).
    ``rewrites`` says whether it may change them (enforce mode) or only records what it finds."""

    rewrites: bool

    @property
    def generation(self) -> int:
        """Moves whenever it scans or a field's text changes: an event whose reading scanned nothing and
        changed nothing reads the same again while it stands still."""
        ...

    def filter(
        self, kind: str, document: Any, handled: Collection[Path], *, alike: Hashable = None
    ) -> tuple[Any, bool]:
        """``alike``: a token naming documents whose keys and other strings are the same as those of every
        other document given with it (``JsonScan.filter``)."""
        ...


TextFilterFactory = Callable[[str], TextFilter]
"""Makes the filter for one text channel; receives the channel's locator (``TextSegment.where``)."""

ToolDecision = Literal["release", "drop", "hold"]
ToolGate = Callable[[ToolCall, bool], ToolDecision]
"""Decides a streamed tool call (its locator, name, id and the arguments so far) and whether they are
``complete``: asked first once the name is known. A call it holds is kept back whole, nothing of it sent,
and asked about again with its complete arguments when they end; then it is released or dropped
(a second ``"hold"`` drops it)."""

# A body that is valid JSON but not in the shape a dialect reads is still never an exception: these are
# what defensive reading of an arbitrary document can raise.
SHAPE_ERRORS = (TypeError, AttributeError, KeyError, ValueError, IndexError, RecursionError)

DropNotice = Callable[[ToolCall], str | None]
"""Text to show the agent in place of a dropped call, or None for no notice."""

ContentFilter = Callable[[Part], str]
"""What of one complete piece of read content (an MCP tool result or description) may be sent: its text
with a suspected injection withheld, or the text unchanged."""

FileReader = Callable[[Attachment], str | None]
"""Reads one file an event gives to be read that does not read as text (``Completion.attachments``), as
it arrives: None where it may be sent, else what the agent reads in place of the message carrying it (a
finding in it is enforced). Set whether or not filters rewrite: an observed stream's files are read too."""


@dataclass(frozen=True, slots=True)
class StreamFilters:
    text_filter: TextFilterFactory | None = None
    tool_gate: ToolGate | None = None
    drop_notice: DropNotice | None = None
    argument_filter: TextFilterFactory | None = None
    residual: EventScan | None = None
    content_filter: ContentFilter | None = None
    file_reader: FileReader | None = None
    active: bool = field(init=False)
    """Whether they rewrite the stream; asked several times an event, so worked out once."""

    def __post_init__(self) -> None:
        active = (
            self.text_filter is not None
            or self.content_filter is not None
            or self.tool_gate is not None
            or self.argument_filter is not None
            or (self.residual is not None and self.residual.rewrites)
        )
        object.__setattr__(self, "active", active)


class _ChainedFilter:
    def __init__(self, filters: list[TextFilter]) -> None:
        self._filters = filters

    def feed(self, text: str) -> str:
        for text_filter in self._filters:
            text = text_filter.feed(text)
        return text

    def expect(self, text: str) -> None:
        # Only the first filter's input is known ahead: the others read what it releases.
        if isinstance(self._filters[0], Anticipating):
            self._filters[0].expect(text)

    def flush(self) -> str:
        released = ""
        for text_filter in self._filters:
            released = (
                text_filter.flush() if not released else text_filter.feed(released) + text_filter.flush()
            )
        return released

    def continue_from(self, text: str) -> None:
        for text_filter in self._filters:
            if isinstance(text_filter, Continuing):
                text_filter.continue_from(text)

    def continued(self) -> tuple[int, str] | None:
        found = [
            text_filter.continued() for text_filter in self._filters if isinstance(text_filter, Continuing)
        ]
        return max((item for item in found if item is not None), default=None)


def chain_filters(*factories: TextFilterFactory) -> TextFilterFactory:
    """One factory whose filters pass text through each given filter in order (redactor, then a
    system-prompt-leak detector, ...)."""

    def make(where: str) -> TextFilter:
        return _ChainedFilter([factory(where) for factory in factories])

    return make


def _no_default(value: Any) -> NoReturn:
    """What ``JSONEncoder.default`` does with a value JSON has no form for."""
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


_COMPACT_JSON = make_encoder(None, _no_default, encode_basestring, None, ":", ",", False, False, True)
"""``json.dumps(value, ensure_ascii=False, separators=(",", ":"))``'s encoder, made once: ``json.dumps``
and ``JSONEncoder.encode`` build one per call, which costs as much as writing a delta event with it. It
keeps no record of the containers it is in (``JSONEncoder``'s ``check_circular``): a payload read from
JSON holds no cycle, and one that did would raise RecursionError instead of ValueError."""


def dump_json(value: Any) -> str:
    return "".join(_COMPACT_JSON(value, 0))


def encode_json(value: Any) -> bytes:
    """``value`` as compact JSON bytes, whatever strings it holds: see ``proxy.wire.sse.encode_text``."""
    return encode_text(dump_json(value))


MAX_ITEMS_SKIPPED = 16
"""How many places past a list's last item an index (``IndexedItems``) may name, each grown as ``null``:
one further contradicts the list, so that a short path cannot make the arguments a client builds (and
their reading here) grow without bound."""


class IndexedItems(dict[int, Any]):
    """A list's items as JSON paths name them (``$.paths[2]``), by index: merged by index, read as the
    list a client grows to hold them (``grown``)."""

    __slots__ = ()


def merged_arguments(held: dict[str, Any], fragment: dict[str, Any]) -> dict[str, Any] | None:
    """``held`` with ``fragment`` merged in as the OpenAI SDK merges deltas: a string appended to the one
    at its place, an object merged in (and items given by index at their index), a list's items added
    after. None where the two give one place values clients join apart (two values that are not
    strings, as the SDK adds numbers and a reader placing each piece keeps the last, or values of
    two kinds, as the SDK keeps the first and a reader by place the last), or an index further past a
    list's last item than ``MAX_ITEMS_SKIPPED``."""
    merged = dict(held)
    for name, value in fragment.items():
        joined = _joined(merged.get(name), value)
        if joined is _CONTRADICTED:
            return None
        merged[name] = joined
    return merged


_CONTRADICTED = object()


def _joined(before: Any, value: Any) -> Any:
    if value is None:  # a piece that gives no value, as the SDK reads a delta's null
        return before
    if before is None and not isinstance(value, dict):
        return value
    if before is None:
        # Merged into nothing, so that the places of items within it are held to their limit too.
        before = IndexedItems() if isinstance(value, IndexedItems) else {}
    if type(before) is not type(value):
        return _CONTRADICTED
    if isinstance(before, str):
        return before + value
    if isinstance(before, IndexedItems):
        items = IndexedItems(before)
        for index, item in sorted(value.items()):
            joined = _joined(items.get(index), item)
            if joined is _CONTRADICTED or index > max(items, default=-1) + 1 + MAX_ITEMS_SKIPPED:
                return _CONTRADICTED
            items[index] = joined
        return items
    if isinstance(before, dict):
        merged = merged_arguments(before, value)
        return _CONTRADICTED if merged is None else merged
    if isinstance(before, list):
        return before + value
    return _CONTRADICTED


def grown(value: Any) -> Any:
    """``value`` with every ``IndexedItems`` made the list a client grows to hold them, each place no
    item was given ``null``."""
    if isinstance(value, IndexedItems):
        items = [None] * (max(value, default=-1) + 1)
        for index, item in value.items():
            items[index] = grown(item)
        return items
    if isinstance(value, dict):
        return {name: grown(item) for name, item in value.items()}
    return value


def arguments_text(value: Any) -> str:
    """What a tool call's arguments given as ``value`` pass, as text: a string as it is, any other JSON
    value as its JSON text (a server may send an object where the API sends its text, and a client take
    it as the arguments), nothing for none."""
    if value is None:
        return ""
    return value if isinstance(value, str) else dump_json(value)


class GrowingText:
    """Text a stream brings piece by piece. A str extended piece by piece copies all it holds each time
    (quadratic in the length of a reply): the pieces are kept and joined when the text is read, and kept
    joined, so a text read once at its end costs its length however many pieces it came in."""

    __slots__ = ("_length", "_pieces")

    def __init__(self, text: str = "") -> None:
        self._pieces = [text] if text else []
        self._length = len(text)

    def add(self, piece: str) -> None:
        if piece:
            self._pieces.append(piece)
            self._length += len(piece)

    def __len__(self) -> int:
        return self._length

    @property
    def text(self) -> str:
        pieces = self._pieces
        if len(pieces) > 1:
            pieces[:] = ["".join(pieces)]
        return pieces[0] if pieces else ""


class TextsRead(Mapping[str, str]):
    """Growing texts by key, read as text."""

    def __init__(self, texts: dict[str, GrowingText]) -> None:
        self._texts = texts

    def __getitem__(self, key: str) -> str:
        return self._texts[key].text

    def __iter__(self) -> Iterator[str]:
        return iter(self._texts)

    def __len__(self) -> int:
        return len(self._texts)


_JOIN_CONTEXT = 256
MAX_HELD_BYTES = 1 << 20
"""What a held tool call may grow to before it is dropped, its arguments unread past it (no approval
covers them, and a credential path may lie beyond): an upstream cannot make a held call fill the proxy's
memory."""
_MAX_QUEUED_EVENTS = 64


@dataclass(slots=True)
class _Boundary:
    """A text channel closed on text it had held back, which may be the start of a secret the channel
    that follows it completes: what the session sends next is queued until that channel has read far
    enough to say (it released text, or closed), or text stops continuing."""

    where: str
    flushed: str
    forced: bool = False


class _Channels:
    """One filter per channel (a text segment, a tool call's arguments), made on first use, and what each
    channel released so far. A new channel reads on from the end of the text the previous one carried."""

    def __init__(self, factory: TextFilterFactory | None) -> None:
        self.factory = factory
        self.filters: dict[str, TextFilter] = {}
        self.released: dict[str, GrowingText] = {}
        self.follows: dict[str, str] = {}
        """Each channel that read on from another, and that other one."""
        self.retired: dict[str, TextFilter] = {}
        """Filters of the channels that closed, for what they found at the start."""
        self._tail = ""
        self._last_fed: str | None = None
        self._expected: dict[str, tuple[str, int]] = {}
        """Per channel, the text it was told to expect and how much of it has come."""

    def expect(self, where: str, text: str) -> None:
        """The next feeds of ``where`` bring ``text``, in order, before the burst being read is done."""
        self._expected[where] = (text, 0)
        channel = self.filters.get(where)
        if isinstance(channel, Anticipating):
            channel.expect(text)

    def unmet(self) -> list[str]:
        """Channels whose expected text has not all come."""
        return list(self._expected)

    def _check_expected(self, where: str, text: str) -> None:
        expected = self._expected.get(where)
        if expected is None:
            return
        announced, at = expected
        if not announced.startswith(text, at):
            raise UnexpectedText(f"{where} was fed other text than it was told to expect")
        at += len(text)
        if at == len(announced):
            del self._expected[where]
        else:
            self._expected[where] = (announced, at)

    def feed(self, where: str, text: str) -> str:
        if self.factory is None:
            released = text
        else:
            self._check_expected(where, text)
            channel = self.filters.get(where)
            if channel is None:
                channel = self.filters[where] = self.factory(where)
                if self._tail and isinstance(channel, Continuing):
                    channel.continue_from(self._tail)
                    if self._last_fed is not None and self._last_fed != where:
                        self.follows[where] = self._last_fed
                if where in self._expected and isinstance(channel, Anticipating):
                    announced, at = self._expected[where]
                    channel.expect(announced[at - len(text) :])
            self._last_fed = where
            released = channel.feed(text)
            self._tail = (self._tail + text)[-_JOIN_CONTEXT:]
        self._release(where, released)
        return released

    def _release(self, where: str, text: str) -> None:
        released = self.released.get(where)
        if released is None:
            self.released[where] = GrowingText(text)
        else:
            released.add(text)

    def close(self, where: str) -> str:
        channel = self.filters.pop(where, None)
        if channel is None:
            return ""
        self.retired[where] = channel
        released = channel.flush()
        self._release(where, released)
        return released

    def open(self) -> list[str]:
        return list(self.filters)

    def follower(self, where: str) -> tuple[str, TextFilter] | None:
        """The channel that read on from ``where``, with its filter."""
        for follower, followed in self.follows.items():
            if followed == where:
                channel = self.filters.get(follower) or self.retired.get(follower)
                return (follower, channel) if channel is not None else None
        return None

    def end_of(self, where: str, flushed: str, continued: tuple[int, str]) -> str:
        """Redacts the end of the text a closed channel released, where a secret the next one completed
        began; returns the new text of its last release."""
        covered, stand_in = continued
        cut = min(covered, len(flushed))
        released = self.released[where].text if where in self.released else ""
        replaced = flushed[: len(flushed) - cut] + stand_in
        if released.endswith(flushed):
            self.released[where] = GrowingText(released[: len(released) - len(flushed)] + replaced)
        return replaced


class _PerEvent[Value]:
    """Values kept for events of the bytes being read, by each event's identity. Each entry holds its
    event, so no other object can be given that event's id (Python reuses the id of an object collected)
    while the entry stands: a value is never read for an event it was not kept for."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[int, tuple[SSEEvent, Value]] = {}

    def __setitem__(self, event: SSEEvent, value: Value) -> None:
        self._entries[id(event)] = (event, value)

    def __contains__(self, event: SSEEvent) -> bool:
        return id(event) in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, event: SSEEvent) -> Value | None:
        # Most are empty: each is asked about every event, in the stream and in its read-back.
        entry = self._entries.get(id(event)) if self._entries else None
        return None if entry is None else entry[1]

    def pop(self, event: SSEEvent) -> Value | None:
        entry = self._entries.pop(id(event), None) if self._entries else None
        return None if entry is None else entry[1]

    def clear(self) -> None:
        if self._entries:  # most are empty: six are cleared after every read
            self._entries.clear()


DUPLICATE_KEY_RULE = "inspection.duplicate_key"
MISPLACED_RULE = "inspection.ambiguous_place"
REPEATED_PLACE_RULE = "inspection.repeated_place"
KEY_CASE_RULE = "inspection.key_case"
AMBIGUOUS_RULES = {
    DUPLICATE_KEY_RULE: "a key repeated in one JSON object, whose first value some readers keep",
    MISPLACED_RULE: (
        'a streamed delta at an index clients read as different places (1.0, "1", true, -1), or a tool call '
        "at a place another call already took"
    ),
    REPEATED_PLACE_RULE: "two entries of one streamed list at the same index, which clients join or not",
    KEY_CASE_RULE: "a key spelled in another case than its field, which case-insensitive readers take for it",
}


class StreamSession(ABC):
    """Feeds one SSE response through a dialect. Usable directly as mitmproxy's
    ``flow.response.stream`` callable: each chunk goes to ``feed``, the final ``b""`` to ``finish``."""

    READS_PLACES: ClassVar[bool] = False
    """Whether the dialect puts deltas at places named by index (``readings.PLACE_KEYS``)."""
    HANDLED_BY_SHAPE: ClassVar[bool] = False
    """Whether ``_handled`` reads only what a shape (``_Shape``) keeps: not the session's state, not the
    text's value (only that it is a string), not the value of a count."""
    JSON_EVENTS: ClassVar[bool] = True
    """Whether the API's events carry JSON: one that looks like JSON but cannot be read is then not
    passed as text where filters rewrite the stream (``unreadable_json_events``)."""
    CASED_KEYS: ClassVar[frozenset[str]] = frozenset()
    """The keys the dialect itself spells with capitals (``Dialect.CASED_KEYS``): an event with any other
    key a case-insensitive reader may fold is also read as such a reader reads it."""

    def __init__(self, filters: StreamFilters | None = None) -> None:
        self.filters = filters or StreamFilters()
        self.notes: list[str] = []
        self.dropped_tool_calls: list[tuple[str, str | None]] = []
        self._text = _Channels(self.filters.text_filter)
        self._arguments = _Channels(self.filters.argument_filter)
        self.released_text = TextsRead(self._text.released)
        self.released_arguments = TextsRead(self._arguments.released)
        """What each text channel and each call's arguments released so far."""
        self._parser = SSEParser()
        self._oversized_noted = 0
        self._finished = False
        self.events = 0
        self.bytes = 0
        """Events and bytes read, for the proxy's metrics."""
        self._boundaries: list[_Boundary] = []
        self._queued: list[bytes] = []
        self._not_json: tuple[str, SSEEvent, list[str], int] | None = None
        """The open channel of the data of events that are not JSON, with the last event that fed it, the
        data of each that did (at most ``_NOT_JSON_KEPT`` characters of it) and its length."""
        self._skeletons: dict[str, Any] = {}
        self._decisions: dict[str, ToolDecision] = {}
        self._decided_calls: dict[str, ToolCall] = {}
        """The call each decision was made on, by its place."""
        self._denied: dict[str, ToolCall] = {}
        """The reading of a call the gate did not release where it released the call as asked, by its
        place: what the call is recorded as."""
        self._replaying = False
        self._cut = False
        """A held call grew past ``MAX_HELD_BYTES``: the decision next asked for is on arguments cut short."""
        self._as_came: dict[int, tuple[SSEEvent, Any]] | None = None
        """While what is sent is kept (``keep_sent``): the events of the bytes being read that go out as
        they came, by the identity of their bytes, with the payload read from them."""
        self._sent: list[Sent] = []
        self._rewrite: _PerEvent[bool] = _PerEvent()
        """The events of the bytes being read whose payload does not say all their bytes do (by identity):
        each is written anew from what was read, never sent as it came."""
        self._files_refused = 0
        """Files ``_refusing`` refused so far: an event that refused one and then proved of a shape its
        dialect cannot write is not sent at all (``_event_output``)."""
        self.unreadable_json_events = 0
        """Events that look like JSON but cannot be read (a comment or an inclusion guard before it, nested
        past the interpreter's depth): a lenient client reads calls in them no gate saw."""
        self.ambiguities: dict[str, int] = {}
        """Per rule (``AMBIGUOUS_RULES``), how many events clients may read otherwise than this session."""
        self._highest: dict[str, int] = {}
        self._apart: dict[str, int] = {}
        self._others: _PerEvent[dict[str, Any]] = _PerEvent()
        """Per event of the bytes being read (by identity), its payload under each reading it differs in."""
        self._shadowed: _PerEvent[list[Any]] = _PerEvent()
        """Per event of the bytes being read, the values its repeated keys shadow."""
        self._folding: _PerEvent[tuple[Any, list[str]]] = _PerEvent()
        """Per event of the bytes being read that a case-insensitive reader may read otherwise, where
        filters rewrite the stream: the event as such a reader reads it."""
        self._folds: _PerEvent[list[str]] = _PerEvent()
        """Per event of the bytes being read that a case-insensitive reader may read otherwise, the keys
        its reading answered otherwise (filled as that reading is fed)."""
        self._readings: dict[str, StreamSession] = {}
        """Once a stream has an event some client reads otherwise (and no filter rewrites it to one
        reading), a copy of this session per such reading, fed every event as that reading gives it."""
        self._shapes: list[_Shape] = []
        """The shapes of the last events read whose one text the dialect filters (``_Shape``), newest
        first: an event of one of them is read without what its shape already answered."""
        self._fruitless: dict[str | None, int] = {}
        """Per event name, the shapes made since one of them last served: events that differ elsewhere
        than in their text (a sequence number) are not given more than a few."""
        self._read_as: _PerEvent[_Read] = _PerEvent()
        """Per event of the bytes being read (by identity), what reading it found (``_Read``)."""
        self._read_whole: SSEEvent | None = None
        """While ``_transform`` runs on an event whose payload is its data read whole and left so by the
        residual scan: that event (``_text_written``)."""

    @property
    @abstractmethod
    def completion(self) -> Completion:
        """What the upstream sent so far, as ``parse_response`` of the equivalent JSON would give it."""

    def __call__(self, chunk: bytes) -> bytes:
        return self.feed(chunk) if chunk else self.finish()

    def read_events_of(self, max_event_bytes: int) -> None:
        """Before any byte is fed: hold events up to ``max_event_bytes`` long whole, handing on unread only
        longer ones (``unread_events``)."""
        self._parser = SSEParser(max_event_bytes)

    @property
    def max_event_bytes(self) -> int:
        """The longest event read whole (``read_events_of``)."""
        return self._parser.max_event_bytes

    @property
    def unread_events(self) -> int:
        """Events longer than the parser holds, handed on with their fields unread."""
        return self._parser.oversized_events

    def keep_sent(self) -> None:
        """From now on, keeps what ``feed`` and ``finish`` return as pieces for ``take_sent``."""
        self._as_came = {}

    def take_sent(self) -> list[Sent]:
        """What ``feed`` and ``finish`` returned since the last call, in pieces: bytes written here, or an
        event sent as the upstream sent it with the payload read from its bytes (``read_sent`` reads
        it without reading those bytes again)."""
        sent, self._sent = self._sent, []
        return sent

    def read_sent(self, piece: Sent) -> None:
        """Reads one piece of what another session sent (``take_sent``), as ``feed`` reads its bytes: an
        event sent as it came from the payload read of its bytes, an event written here (``Serialised``)
        from the data it was written from, any other bytes parsed."""
        if isinstance(piece, tuple) and not (self._parser.holding or self._finished):
            # Sent as it came: read from its bytes, with nothing taken out.
            event, payload = piece
            self._read_as[event] = _Read(True, alike=False, whole=True, shape=None, among=[])
        elif type(piece) is Serialised and not (self._parser.holding or self._finished):
            event = piece.reading()
            shape = self._shape_of(event)
            payload, faithful = (
                (jsontext.loads(event.data or ""), True) if shape and shape.faithful else _payload_of(event)
            )
            if not faithful:
                self.feed(piece)
                return
            self._read_as[event] = _Read(True, alike=False, whole=True, shape=shape, among=self._shapes)
        else:
            self.feed(piece if isinstance(piece, bytes) else piece[0].raw)
            return
        self.events += 1
        self.bytes += len(event.raw)
        try:
            self._on_block(event, payload)
        finally:
            # What ``_keep`` clears after a feed: the bytes of an event read so are never fed.
            self._read_as.pop(event)

    def _read_payload(self, event: SSEEvent) -> Any:
        """``_payload_of`` the event; one whose bytes say more than what was read is never sent as it came,
        and one that clients read otherwise is noted, and read their ways too (``other_readings``). An
        event of a shape (``_Shape``) that read as it came and that clients read alike is read alike."""
        shape = self._shape_of(event)
        if shape is not None and shape.faithful and shape.ordinary:
            self._read_as[event] = _Read(True, alike=True, whole=True, shape=shape, among=self._shapes)
            return jsontext.loads(event.data or "")
        payload, faithful = _payload_of(event)
        others: dict[str, Any] = {}
        read_alike = faithful
        if not faithful:
            self._rewrite[event] = True
            self._ambiguous(DUPLICATE_KEY_RULE)
            assert event.data is not None
            self._shadowed[event] = readings.read_with_shadowed(event.data)[1]
            others[readings.FIRST_VALUE] = readings.first_values(event.data)
        if self.READS_PLACES and payload is not _NOT_JSON and _may_name_places(event.data):
            odd = readings.examine(payload, self._highest)
            read_alike = read_alike and not (odd.misplaced or odd.repeated)
            if odd.misplaced:
                self._ambiguous(MISPLACED_RULE)
            if odd.repeated:
                self._ambiguous(REPEATED_PLACE_RULE)
                if self.filters.active:
                    payload = readings.without_repeats(payload)[0]
                    self._rewrite[event] = True
                else:
                    others[readings.LISTED] = readings.listed(payload)
            if odd.misplaced and not self.filters.active:
                others[readings.LENIENT] = readings.lenient(payload, self._highest)
                others[readings.APART] = readings.apart(payload, self._apart)
        if payload is not _NOT_JSON and event.data:
            folding = readings.folded_keys(event.data, self.CASED_KEYS)
            read_alike = read_alike and folding is None
            if folding is not None and self.filters.active:
                self._folding[event] = folding
            elif folding is not None:
                others[readings.FOLDED_KEYS] = folding[0]
                self._folds[event] = folding[1]
        if others:
            self._others[event] = others
        whole = event not in self._rewrite
        self._read_as[event] = _Read(faithful, read_alike, whole, shape, self._shapes)
        return payload

    def _ambiguous(self, rule: str) -> None:
        self.ambiguities[rule] = self.ambiguities.get(rule, 0) + 1

    def other_readings(self) -> list[tuple[str, Completion]]:
        """What the stream read so far says to clients that read its events otherwise than this session
        (``proxy.dialects.readings``), each with a description of that reading."""
        return [(readings.READINGS[name], shadow.completion) for name, shadow in self._readings.items()]

    def _read_otherwise(self, event: SSEEvent, payload: Any) -> None:
        """Feeds the event to the copy of this session of each other reading, as that reading gives it; a
        copy is made, from the state before this event, by the first event that reading differs in."""
        others = self._others.pop(event) or {}
        if others or self._readings:  # most streams: no event any client reads otherwise
            for name in [*self._readings, *(name for name in others if name not in self._readings)]:
                shadow = self._readings.get(name)
                if shadow is None:
                    shadow = self._readings[name] = self._reader()
                try:
                    shadow._observe(event, others.get(name, payload))
                except SHAPE_ERRORS:
                    continue
        if self._folds.pop(event):
            self._ambiguous(KEY_CASE_RULE)

    def _folded_otherwise(self, event: SSEEvent) -> bool:
        """Whether a case-insensitive reader (a Go client) reads this event otherwise than this session:
        a copy of the session reads it as such a reader does. Where filters rewrite the stream, such an
        event cannot be rewritten into one reading, so it is not sent (``_unplaced``)."""
        folding = self._folding.pop(event)
        if folding is None:
            return False
        folded, folds = folding
        with contextlib.suppress(*SHAPE_ERRORS):
            self._reader()._observe(event, folded)
        if not folds:
            return False
        self._ambiguous(KEY_CASE_RULE)
        return True

    def _reader(self) -> StreamSession:
        """A copy of what this session read, with nothing of what it sends: it only reads on."""
        fresh: dict[str, Any] = {
            "filters": StreamFilters(),
            "_text": _Channels(None),
            "_arguments": _Channels(None),
            "_parser": SSEParser(),
            "_readings": {},
            "_rewrite": _PerEvent(),
            "_others": _PerEvent(),
            "_shadowed": _PerEvent(),
            "_folds": _PerEvent(),
            "_folding": _PerEvent(),
            "_read_as": _PerEvent(),
            "_sent": [],
            "_queued": [],
            "_boundaries": [],
        }
        memo = {id(getattr(self, name)): value for name, value in fresh.items()}
        return copy.deepcopy(self, memo)

    def _keep(self, output: list[bytes]) -> list[bytes]:
        self._rewrite.clear()
        self._read_as.clear()
        self._others.clear()
        self._shadowed.clear()
        self._folds.clear()
        self._folding.clear()
        if self._as_came is not None:
            for piece in output:
                came = self._as_came.get(id(piece))
                self._sent.append(came if came is not None and came[0].raw is piece else piece)
            self._as_came.clear()
        return output

    def feed(self, chunk: bytes) -> bytes:
        if self._finished:
            return b""
        self.bytes += len(chunk)
        events = self._parser.feed(chunk)
        if len(events) == 1 and not self._text._expected:
            # One event a read (a model writing slower than the proxy sends): nothing to anticipate.
            self.events += 1
            event = events[0]
            sent = self._on_block(event, self._read_payload(event))
            self._note_oversized()
            return b"".join(self._keep(sent))
        output: list[bytes] = []
        payloads = [self._read_payload(event) for event in events]
        anticipates = len(events) > 1 and self.filters.text_filter is not None
        run_end = 0
        for position, (event, payload) in enumerate(zip(events, payloads, strict=True)):
            if anticipates and position >= run_end:
                run_end = self._anticipate(events, payloads, position)
            self.events += 1
            output.extend(self._on_block(event, payload))
        self._check_expected()
        self._note_oversized()
        return b"".join(self._keep(output))

    def _anticipate(self, events: list[SSEEvent], payloads: list[Any], start: int) -> int:
        """Tells each text channel what the run of events from ``start`` that carry nothing but text
        will feed it, so its filter decides on all of it at once (``Anticipating``); returns where the
        run ends. Asked again after each event that is not such a one, in the state it left."""
        self._check_expected()
        expected: dict[str, list[str]] = {}
        end = start
        while end < len(events):
            payload = payloads[end]
            odd = payload is _NOT_JSON or events[end] in self._folding
            plain = None if odd else self._plain_texts(events[end], payload)
            if plain is None:
                break
            for where, text in plain:
                expected.setdefault(where, []).append(text)
            end += 1
        if end - start > 1:
            for where, texts in expected.items():
                self._text.expect(where, "".join(texts))
        return max(end, start + 1)

    def _check_expected(self) -> None:
        if not self._text._expected:
            return
        unmet = self._text.unmet()
        if unmet:
            raise UnexpectedText(f"{', '.join(unmet)} did not get all the text it was told to expect")

    def _plain_texts(self, event: SSEEvent, payload: Any) -> list[tuple[str, str]] | None:
        """For an event whose only effect on the text channels is to feed them: each (channel, text) it
        feeds, in the order ``_transform`` feeds them. None for any other event (one that may close a
        channel, or that carries anything a gate or another filter reads). Asked in the state the events
        before its run left, which events that only feed text do not change."""
        return None

    def finish(self) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        last_events, tail = self._parser.finish()
        self.events += len(last_events)
        output = [
            piece for event in last_events for piece in self._on_block(event, self._read_payload(event))
        ]
        if self._not_json is not None:
            output.extend(self._close_not_json())
        if self.filters.active:
            output.extend(self._through_boundaries(self._end_of_stream()))
        for boundary in self._boundaries:
            boundary.forced = True
        output.extend(self._through_boundaries([]))
        if tail:
            self.notes.append(f"stream ended inside an event ({len(tail)} bytes)")
            self._scan_raw("unfinished event", tail)
            if not self.filters.active:
                output.append(tail)
        return b"".join(self._keep(output))

    def _note_oversized(self) -> None:
        if self._oversized_noted == self._parser.oversized_events:
            return
        limit = self._parser.max_event_bytes
        fate = "dropped unread" if self.filters.active else "passed through unread"
        while self._oversized_noted < self._parser.oversized_events:
            self._oversized_noted += 1
            self.notes.append(f"an event longer than {limit} bytes was {fate}")

    def _on_block(self, event: SSEEvent, payload: Any) -> list[bytes]:
        output = self._event_output(event, payload)
        return self._through_boundaries(output) if self._boundaries else output

    def _through_boundaries(self, output: list[bytes]) -> list[bytes]:
        """The output to send now: all of it while no channel boundary is pending; else it joins the
        queue, which is sent once every pending boundary is decided (or the queue is too long to wait)."""
        if not self._boundaries:
            return output
        self._queued.extend(output)
        if len(self._queued) <= _MAX_QUEUED_EVENTS and not all(map(self._decided, self._boundaries)):
            return []
        queued, self._queued = self._queued, []
        for boundary in self._boundaries:
            follower = self._text.follower(boundary.where)
            continued = follower[1].continued() if follower and isinstance(follower[1], Continuing) else None
            if continued is None:
                continue
            replaced = self._text.end_of(boundary.where, boundary.flushed, continued)
            old, new = (encode_text(dump_json(text)[1:-1]) for text in (boundary.flushed, replaced))
            queued = [piece.replace(old, new) for piece in queued]
        self._boundaries = []
        return queued

    def _decided(self, boundary: _Boundary) -> bool:
        follower = self._text.follower(boundary.where)
        if boundary.forced or follower is None:
            return boundary.forced
        where = follower[0]
        return where in self._text.retired or bool(self._text.released.get(where))

    def _event_output(self, event: SSEEvent, payload: Any) -> list[bytes]:
        """What to send for one event; ``payload`` is its data read as JSON, or ``_NOT_JSON``."""
        if self._not_json is not None and not (
            payload is _NOT_JSON and event.type == self._not_json[1].type and not _ends(event)
        ):
            closed = self._close_not_json()
            if closed:
                return [*closed, *self._event_output(event, payload)]
        if event.oversized:
            # Its text cannot be filtered without holding all of it: with filters, none of it is sent.
            return [] if self.filters.active else [event.raw]
        if event.data is None:
            return self._on_dataless_event(event)
        if payload is _NOT_JSON:
            return self._on_text_event(event)
        refused_before = self._files_refused
        try:
            if not self.filters.active:
                self._read_otherwise(event, payload)
            elif self._folded_otherwise(event):
                return self._unplaced(event.type)
            self._observe(event, payload)
            self._scan_shadowed(event)
            payload, changed = self._scan_residual(event, payload)
            if not self.filters.active:
                return [event.raw]
            return self._transformed(event, payload, changed=changed or event in self._rewrite)
        except SHAPE_ERRORS as error:
            if self._files_refused != refused_before and self.filters.active:
                # A file in it was refused and recorded so: sent as it came, the file would go out all the
                # same, and the written notice that stands in for it cannot be placed in such a shape.
                self.notes.append(
                    f"event {event.type!r} carried a refused file and has an unexpected shape "
                    f"({type(error).__name__}); not sent"
                )
                return []
            self.notes.append(
                f"event {event.type!r} has an unexpected shape ({type(error).__name__}); its strings scanned"
            )
            return self._scan_unread(event)

    def _scan_unread(self, event: SSEEvent) -> list[bytes]:
        """An event the dialect could not read: every string of it goes to the residual scan, so a shape
        the dialect does not expect does not carry text past inspection."""
        residual = self.filters.residual
        if residual is None or event.data is None:
            return [event.raw]
        payload, changed = residual.filter(event.type, jsontext.loads(event.data), ())
        changed = changed or event in self._rewrite
        return [rewritten(event, payload)] if changed and self.filters.active else [event.raw]

    def _transformed(self, event: SSEEvent, payload: Any, *, changed: bool) -> list[bytes]:
        """``_transform`` of one event, its own bytes re-serialised when its payload ``changed``; a held
        event is replayed through here with ``changed`` True, as what the scan left of it."""
        self._read_whole = None if changed else event
        try:
            output = self._transform(event, payload)
        finally:
            self._read_whole = None
        if changed:
            output = [rewritten(event, payload) if piece is event.raw else piece for piece in output]
        return output

    def _text_written(self, event: SSEEvent, payload: Any, text: str, released: str) -> bytes:
        """The event whose payload the filters changed in one string alone, ``text`` now ``released``.
        Where that payload is the event's data read whole (no value taken out of it, no string the
        residual scan changed) and the data holds no escape, every string is spelled as it reads, so a
        spelling of ``text`` found once (overlaps counted) is that string's: the data is written with
        ``released`` in its place, the rest as it came, which costs a fraction of writing the payload
        anew. Else the payload is written anew."""
        data = event.data
        if self._read_whole is event and data is not None and "\\" not in data:
            spelled = f'"{text}"'
            start = data.find(spelled)
            if start >= 0 and data.find(spelled, start + 1) < 0:
                swapped = f"{data[:start]}{dump_json(released)}{data[start + len(spelled) :]}"
                return write_event(swapped, event.event, event.id, event.retry)
        return rewritten(event, payload)

    def _on_dataless_event(self, event: SSEEvent) -> list[bytes]:
        """An event without data (a comment, a name alone, or lines no SSE field names): an SSE client
        reads nothing in it, but a client that reads the body otherwise (a JSON answer labelled as an event
        stream) reads all of it, so its bytes are scanned as text, and written redacted where that
        redacts."""
        scanned = self._scan_raw(event.type, event.raw)
        if scanned is None or not self.filters.active:
            return [event.raw]
        self.notes.append("an event without data carried text; redacted")
        ending = event.raw[len(event.raw.rstrip(b"\r\n")) :]
        return [encode_text(scanned.rstrip("\r\n")) + ending]

    def _scan_raw(self, kind: str, raw: bytes) -> str | None:
        """``raw`` read as text by the residual scan; the redacted text when the scan changed it."""
        residual = self.filters.residual
        if residual is None or not raw.strip():
            return None
        scanned, changed = residual.filter(kind, raw.decode("utf-8", "surrogateescape"), ())
        return scanned if changed else None

    def _on_text_event(self, event: SSEEvent) -> list[bytes]:
        """An event whose data is not JSON (or nests deeper than can be read): a client that reads it
        leniently (a prefix, a byte order mark, a raw tab) may still find text in it, so its data is
        scanned whole as one string, and written anew where that redacts. Where it looks like JSON in an
        API whose events are JSON, such a client may also find a tool call in it: with filters, it is not
        sent (``[DONE]``, which ends OpenAI's streams and those that copy them, is not JSON to anyone).
        Where text is filtered, its data is read on from that of the events of its name before it, as a
        client printing each as it comes joins them (a secret split over them is whole to the filter),
        until an event of another kind comes."""
        text = event.data or ""
        if self.JSON_EVENTS and not _ends(event) and jsontext.opens_json(text):
            self.unreadable_json_events += 1
            if self.filters.active:
                self.notes.append(f"event {event.type!r} looks like JSON but cannot be read; dropped unread")
                return []
        if self.filters.text_filter is not None and not _ends(event):
            channel = f"{JOINED}{ROOT}{event.type}"
            if self._not_json is None:
                self.notes.append(f"event {event.type!r} is not JSON; read as text with those after it")
            texts, kept = ([], 0) if self._not_json is None else self._not_json[2:]
            if texts and kept + len(text) > _NOT_JSON_KEPT:
                # A run as long as the stream is not kept whole to be recorded: what is held is recorded
                # now (a secret cut exactly there is recorded as two; the filter redacts it all the same).
                self._record_not_json(event.type, texts)
                texts, kept = [], 0
            texts.append(text)
            self._not_json = (channel, event, texts, kept + len(text))
            return [write_event(self._filter_text(channel, text), event.event, event.id, event.retry)]
        residual = self.filters.residual
        data, changed = (
            (event.data, False) if residual is None else residual.filter(event.type, event.data, ())
        )
        if not changed or not self.filters.active:
            self.notes.append(f"event {event.type!r} is not JSON; passed through")
            return [event.raw]
        self.notes.append(f"event {event.type!r} is not JSON; its text redacted")
        return [write_event(data, event.event, event.id, event.retry)]

    def _close_not_json(self) -> list[bytes]:
        """Closes the channel of events that are not JSON: what its filter held goes in an event named as
        the last that fed it. The residual scan records what the joined text carries, read whole: read a
        piece at a time, a secret split over them would be one whose first part was sent, where the
        filter sent none of it (what was sent is read back once the stream ends)."""
        assert self._not_json is not None
        channel, last, texts, _ = self._not_json
        self._not_json = None
        self._record_not_json(last.type, texts)
        flushed = self._text.close(channel)
        return [write_event(flushed, last.event, last.id, last.retry)] if flushed else []

    def _record_not_json(self, event_type: str, texts: list[str]) -> None:
        if self.filters.residual is not None:
            self.filters.residual.filter(event_type, "".join(texts), ())

    def _as_sent(self, event: SSEEvent, payload: Any) -> bytes:
        """An event whose payload the filters left as it came: its own bytes where they are framed as
        ``serialise`` frames them (so every client reads them as this parser did), else written anew."""
        if not is_serialised(event):
            return rewritten(event, payload)
        if self._as_came is not None:
            self._as_came[id(event.raw)] = (event, payload)
        return event.raw

    def _scan_shadowed(self, event: SSEEvent) -> None:
        """The values the event's repeated keys shadow are read by some clients: scanned, never sent."""
        shadowed = self._shadowed.pop(event)
        if shadowed and self.filters.residual is not None:
            self.filters.residual.filter("shadowed by a repeated key", shadowed, ())

    def _scan_residual(self, event: SSEEvent, payload: Any) -> tuple[Any, bool]:
        residual = self.filters.residual
        if residual is None:
            return payload, False
        kind = payload.get("type") if isinstance(payload, dict) else None
        kind = kind if isinstance(kind, str) else event.type
        read = self._read_as.get(event)
        handled = self._handled_of(event, payload, read)
        shape = read.shape if read is not None and read.among is self._shapes else self._shape_of(event)
        if shape is not None and shape.handled == handled and shape.quiet == (kind, residual.generation):
            # Every byte but its text's is that of an event of its shape whose reading scanned nothing
            # and changed nothing, and no field's text has moved since (as for a skeleton, below).
            return payload, False
        # Compared only with a skeleton kept at the scan's present generation: while a stream's first
        # events grow their fields' text, none is, and the skeleton is made only if the scan stays quiet.
        kept = self._skeletons.get(kind)
        skeleton = (
            _skeleton(payload, handled) if kept is not None and kept[0] == residual.generation else None
        )
        if skeleton is not None and kept == (residual.generation, skeleton):
            # Every string it does not filter as text is the same as in the last event of its type, whose
            # reading scanned nothing and changed nothing, and no field's text has moved since: reading
            # it again would find the same nothing.
            if shape is not None and shape.handled == handled:
                shape.quiet = (kind, residual.generation)
            return payload, False
        generation = residual.generation
        # Every string of an event of a shape, but its text, is that of the event that set the shape.
        alike = shape if shape is not None and shape.handled == handled else None
        filtered, changed = residual.filter(kind, payload, handled, alike=alike)
        self._skeletons.pop(kind, None)
        quiet = not changed and residual.generation == generation
        if shape is None:
            shape = self._new_shape(event, payload, handled)
        if shape is not None and shape.handled == handled:
            shape.quiet = (kind, generation) if quiet else None
        if quiet and skeleton is None:
            # The scan changed nothing: the payload is as it was before it.
            skeleton = _skeleton(payload, handled)
        if quiet and skeleton is not None:
            if len(self._skeletons) >= _SKELETON_KINDS:
                del self._skeletons[next(iter(self._skeletons))]  # the kind kept longest ago
            # Kept apart from the payload, which the transform may change before the next event.
            self._skeletons[kind] = (generation, _json_copy(skeleton))
        return filtered, changed

    def _shape_of(self, event: SSEEvent) -> _Shape | None:
        """The shape of the event among the last ones read, if it has one of them."""
        data = event.data
        if data is None or event.oversized:
            return None
        kind = event.type
        for shape in self._shapes:
            if kind == shape.event_type and shape.matches(data):
                self._fruitless[kind] = 0
                return shape
        return None

    def _new_shape(self, event: SSEEvent, payload: Any, handled: Collection[Path]) -> _Shape | None:
        """The event's shape, kept among the last ones read, where it has one."""
        read = self._read_as.get(event)
        made = self._fruitless.get(event.type, 0)
        if read is None or not read.whole or made >= _SHAPES_KEPT:
            return None
        if event.type not in self._fruitless and len(self._fruitless) >= _SHAPED_EVENT_NAMES:
            return None  # an upstream naming every event anew gets no shapes, and no memory grows by it
        shape = _Shape.of(event, payload, handled, faithful=read.faithful, ordinary=read.alike)
        if shape is not None:
            self._shapes = [shape, *self._shapes[: _SHAPES_KEPT - 1]]
            self._fruitless[event.type] = made + 1
        return shape

    def _handled(self, event: SSEEvent, payload: Any) -> Collection[Path]:
        """Paths of the strings in this event that the dialect filters as text itself (its channels):
        every other string goes to the residual scan."""
        return ()

    def _handled_of(self, event: SSEEvent, payload: Any, read: _Read | None) -> Collection[Path]:
        """``_handled``; for an event of a shape whose payload is its data read whole, where the dialect's
        ``_handled`` reads only what a shape keeps (``HANDLED_BY_SHAPE``), that of the event that set the
        shape."""
        if self.HANDLED_BY_SHAPE and read is not None and read.shape is not None and read.whole:
            return read.shape.handled
        return self._handled(event, payload)

    @abstractmethod
    def _observe(self, event: SSEEvent, payload: Any) -> None:
        """Updates the completion from one parsed event."""

    @abstractmethod
    def _transform(self, event: SSEEvent, payload: Any) -> list[bytes]:
        """The bytes to send for one event when filters are active; may mutate ``payload``."""

    def _end_of_stream(self) -> list[bytes]:
        """Events to send when the stream ends: at least the flushed text of channels still open."""
        return []

    def _filter_text(self, where: str, text: str) -> str:
        return self._text.feed(where, text)

    def _refusing(self, files: list[Attachment]) -> str | None:
        """Reads each file (``StreamFilters.file_reader``) before what carries it is sent: what the agent
        reads in its place where one is refused and filters rewrite, else None."""
        reader = self.filters.file_reader
        if reader is None:
            return None
        for file in files:
            notice = reader(file)
            if notice is not None and self.filters.active:
                self._files_refused += 1
                return notice
        return None

    def _read_content_out(self, part: Part) -> str:
        """Read content (a tool's result) whole in its event, as it goes out: quarantined as a JSON
        answer's would be, then redacted, and written as it is at its place (a file encoded again)."""
        quarantine = self.filters.content_filter
        text = part.text if quarantine is None else quarantine(part)
        if self.filters.text_filter is not None:
            text = self._filter_text(part.where, text) + self._close_channel(part.where)
        return part.written(text)

    def _close_channel(self, where: str) -> str:
        flushed = self._text.close(where)
        if flushed:
            self._boundaries.append(_Boundary(where, flushed))
        return flushed

    def _open_channels(self) -> list[str]:
        return self._text.open()

    def _filter_arguments(self, where: str, text: str) -> str:
        """Argument text of the released call at ``where`` that may be sent now. Text no longer
        continues: a pending boundary is decided."""
        for boundary in self._boundaries:
            boundary.forced = True
        return self._arguments.feed(where, text)

    def _close_arguments(self, where: str) -> str:
        """The call's arguments ended: what its filter still held."""
        return self._arguments.close(where)

    def _open_argument_channels(self) -> list[str]:
        return self._arguments.open()

    def _filter_argument_value(self, where: str, value: Any) -> Any:
        """A call's arguments given whole as a JSON value, filtered as their JSON text; if the filter
        made that text invalid JSON, every string in the value is filtered on its own instead."""
        factory = self.filters.argument_filter
        if factory is None:
            return value
        filtered = _filter_once(factory(where), dump_json(value))
        try:
            result = jsontext.loads(filtered)
        except ValueError:
            result = _filter_strings(value, lambda string: _filter_once(factory(where), string))
        self._arguments.released[where] = GrowingText(dump_json(result))
        return result

    def _decide(
        self, call: ToolCall, *, complete: bool = False, readings: Sequence[ToolCall] = ()
    ) -> ToolDecision:
        """The gate's decision for the call at ``call.where``, asked once its name is known and, for a
        call it held, once more with ``complete`` arguments; a held call whose name grew (the rest of it
        came in later deltas, which clients append) is asked again on its whole name before anything of
        it is sent. A place is decided once: another call asked about at a place already decided (a
        reused index, a call renamed while held) is dropped as ambiguous, where it would have had the
        decision of the call before it. A complete call released is asked again as each of the other
        ``readings`` clients may make of it (``StreamedCall.readings``), dropped where one is not."""
        decided = self._decisions.get(call.where)
        if decided is not None and self._replaying:
            return decided
        if decided is not None and not (
            decided == "hold" and _asked_again(self._decided_calls[call.where], call, complete)
        ):
            return self._place_reused(call)
        gate = self.filters.tool_gate
        decision: ToolDecision = "release" if gate is None else gate(self._as_sent_upstream(call), complete)
        if complete and (decision == "hold" or self._cut):
            # A call whose arguments were cut short is never released on the part the gate read.
            decision = "drop"
        if complete and decision == "release" and gate is not None:
            denied = next((other for other in readings if gate(other, True) != "release"), None)
            if denied is not None:
                self._denied[call.where] = denied
                decision = "drop"
        self._cut = False
        self._decisions[call.where] = decision
        self._decided_calls[call.where] = call
        if decision == "drop":
            self.dropped_tool_calls.append((call.name, call.id))
        return decision

    def _as_sent_upstream(self, call: ToolCall) -> ToolCall:
        """``call`` under the name the upstream gave it: the residual scan may have redacted a key it read
        in the name (``drop_table_ghp_...``), and the gate must see the key to withhold the call for it
        (and its notice be found under the name it was decided on)."""
        sent = next((read.name for read in self.completion.tool_calls if read.where == call.where), call.name)
        return call if sent == call.name else replace(call, name=sent)

    def _place_reused(self, call: ToolCall) -> ToolDecision:
        first = self._decided_calls[call.where]
        self.notes.append(
            f"a call to {call.name or 'an unnamed tool'} came at {call.where}, where a call to "
            f"{first.name or 'an unnamed tool'} was decided; dropped"
        )
        self._ambiguous(MISPLACED_RULE)
        self._drop_at(call)
        return "drop"

    def _drop_at(self, call: ToolCall) -> None:
        """Drop ``call`` and decide its place for good: every later ask there gets "drop", the place still
        naming the call first decided at it."""
        self._decisions[call.where] = "drop"
        self._decided_calls.setdefault(call.where, call)
        self.dropped_tool_calls.append((call.name, call.id))

    def _replay(self, held: Sequence[tuple[SSEEvent, Any]]) -> list[bytes]:
        """A held call's events, sent once the gate released it: the start among them is not asked about
        again, its place holding the decision just made."""
        self._replaying = True
        try:
            return [piece for event, body in held for piece in self._transformed(event, body, changed=True)]
        finally:
            self._replaying = False

    def _held_too_long(self, size: int) -> bool:
        """Whether a held call of ``size`` bytes must be decided now, before its arguments end."""
        if size <= MAX_HELD_BYTES:
            return False
        self.notes.append(f"a held tool call grew past {MAX_HELD_BYTES} bytes; dropped")
        self._cut = True
        return True

    def _unplaced(self, event_type: str) -> list[bytes]:
        """Drops an event that puts text at a place the stream never opened, or names its place in a way
        clients read differently: a client would join it to text the filters read apart from it."""
        self.notes.append(f"event {event_type!r} names a place the stream never opened; dropped")
        return []

    def _notice(self, call: ToolCall) -> str | None:
        make_notice = self.filters.drop_notice
        return None if make_notice is None else make_notice(self._as_sent_upstream(call))


class PerEventStreamSession(StreamSession):
    """A stream whose every event carries complete texts (generic SSE, MCP's JSON-RPC messages): the
    completion grows event by event, and each text is filtered (fed and flushed) within its event."""

    def __init__(self, filters: StreamFilters | None = None) -> None:
        super().__init__(filters)
        self._completion = Completion()

    @property
    def completion(self) -> Completion:
        return self._completion

    def _filter_within_event(self, where: str, text: str) -> str:
        return self._filter_text(where, text) + self._close_channel(where)

    def _filter_apart(self, where: str, text: str) -> str:
        """A text read on from no other channel: one no client reads with the text around it (the id
        and kind of an event whose delta carries the text), which a secret held open in that text must
        not run into."""
        factory = self.filters.text_filter
        return text if factory is None else _filter_once(factory(where), text)

    def _handled(self, event: SSEEvent, payload: Any) -> Collection[Path]:
        return {locator_steps(where) for where, _ in self._texts(payload)}

    def _texts(self, payload: Any) -> list[tuple[str, str]]:
        """(locator, text) of the strings of one event that this session filters."""
        return []


class BlockCallSession(StreamSession):
    """A stream whose tool calls each open a block of their own at its index (Anthropic's ``tool_use``,
    Converse's ``toolUse``), decided when the block starts: a call the gate holds keeps its block's
    events until the block stops (``_complete_held``), then goes out as it came or for its notice."""

    def __init__(self, filters: StreamFilters | None = None) -> None:
        super().__init__(filters)
        self._held: dict[int, list[tuple[SSEEvent, dict[str, Any]]]] = {}
        """The events of each block whose call the gate holds, by index."""
        self._held_bytes: dict[int, int] = {}

    def _gate_block(
        self, index: int, call: ToolCall, event: SSEEvent, body: dict[str, Any]
    ) -> list[bytes] | None:
        """What a block's start that opens ``call`` sends instead of itself: nothing while the gate holds
        the call (the start kept with its block), the call's notice where the gate drops it; None where
        the call is released and its start goes on."""
        decision = self._decide(call) if self.filters.tool_gate is not None else "release"
        if decision == "hold":
            self._held[index] = [(event, body)]
            self._held_bytes[index] = len(event.raw)
            return []
        return self._drop_block(index, call) if decision == "drop" else None

    def _keep_held(self, index: int, event: SSEEvent, body: dict[str, Any], *, stops: bool) -> list[bytes]:
        """Keeps an event of a held block: when it stops the block, or the block grew too long to hold,
        the call is decided (``_complete_held``)."""
        self._held[index].append((event, body))
        self._held_bytes[index] += len(event.raw)
        if stops or self._held_too_long(self._held_bytes[index]):
            return self._complete_held(index)
        return []

    @abstractmethod
    def _drop_block(self, index: int, call: ToolCall) -> list[bytes]:
        """The call's block is not sent: what stands at its place instead."""

    @abstractmethod
    def _complete_held(self, index: int) -> list[bytes]:
        """The held block at ``index`` stopped: its call decided on its whole arguments, what is sent."""


_NOT_JSON = object()
_NOT_JSON_KEPT = 1 << 20
"""Characters of a run of events that are not JSON kept to be recorded read joined (``_close_not_json``)."""
JOINED = "+"
"""What a joined place's channel is named by before its locator: no locator of an event's own string
starts so, which each event's own channels are named by."""


def _ends(event: SSEEvent) -> bool:
    """Whether the event is OpenAI's ``[DONE]``, which ends its streams and those that copy them: no
    JSON to anyone, and no text either."""
    return (event.data or "").strip() == "[DONE]"


@dataclass(slots=True)
class _Read:
    """What reading one event found: whether its bytes say all its payload does (``_payload_of``),
    whether clients read it alike (no place or key read otherwise), whether its payload is its data read
    as JSON and nothing else (``whole``: no repeated place taken out), and its shape among ``among``, the
    shapes kept when it was read (None: none of them)."""

    faithful: bool
    alike: bool
    whole: bool
    shape: _Shape | None
    among: list[_Shape]


_SHAPES_KEPT = 4
"""Shapes a session keeps: the upstream's and what egressguard wrote (read back), a few event kinds."""
_SKELETON_KINDS = 16
"""Event kinds whose last event a session keeps to skip reading it again (``_scan_residual``): the
dialects' streams use a handful, and an upstream naming every event anew makes no memory grow by it."""
_SHAPED_EVENT_NAMES = 64
"""Event names a session makes shapes for; the dialects' streams use a handful."""
_MAX_SHAPED_DATA = 4096
"""The longest data a shape is made of (a delta's is a few hundred characters): a shape's pattern is
compiled, and kept among ``_PATTERNS_KEPT`` shared by every session, which an upstream's long events
must not fill with megabytes each."""
_PLAIN_STRING = r'"[^"\\\x00-\x1f]*"'
"""A JSON string written without an escape."""
_SPELLED_STRING = r'("[^"\\\x00-\x1f]*")'
"""A JSON string written without an escape, its spelling a group of the pattern's."""
_COUNT = r"(?:0|[1-9][0-9]{0,15})"
"""A JSON integer of at most 16 digits, written as digits alone."""
_COUNTED = re.compile(
    r'"([^"]*)"[ \t\r\n]*:[ \t\r\n]*(0|[1-9][0-9]{0,15})(?=[ \t\r\n]*[,}])|"[^"]*"([ \t\r\n]*:)?'
)
"""In JSON data without an escape, read from its start: each string, and where a string is a key whose
value is a short integer, that key and those digits; where it is another key, the colon after it."""


@dataclass(slots=True, eq=False)
class _Shape:
    """An event's data whose one text the dialect filters (its only place in ``handled``) is written as
    a string without an escape, in data that holds no other escape and no other string of the same text:
    that string is the only place in the data its spelling occurs. Its counts (the value of a key that
    names no place, written as a short integer: a sequence number, a token count) are digits that no
    string holds, each a whole JSON number. Data that is the same but for a string without an escape in
    the text's place and a short integer in each count's (``data``) reads as the same JSON but for that
    text and those counts: the same keys, places, strings and lists elsewhere. So what was learnt of the
    event that set the shape holds for it: whether its keys are unique (``faithful``), whether clients
    read it alike (``ordinary``: no place or key read otherwise, and a count is no place), and, for the
    same paths filtered as text and the same state of the residual scan, that reading its other strings
    finds nothing (``quiet``: that scan reads the keys, strings and lists of bytes of an event, never
    the number a key holds). Each shape is equal to itself alone: it names the events of it to the
    residual scan (``EventScan.filter``'s ``alike``)."""

    event_type: str
    data: re.Pattern[str]
    strings: tuple[str, ...]
    """The spelling of each string of the data that is no key, but the text, in order: the pattern's
    groups (keys are written in the pattern, the same in every stream)."""
    handled: Collection[Path]
    faithful: bool
    ordinary: bool
    quiet: tuple[str, int] | None = None
    """The event kind and the residual scan's generation at which its strings read as nothing."""

    @classmethod
    def of(
        cls, event: SSEEvent, payload: Any, handled: Collection[Path], *, faithful: bool, ordinary: bool
    ) -> _Shape | None:
        data = event.data
        if data is None or len(data) > _MAX_SHAPED_DATA or len(handled) != 1 or "\\" in data:
            return None
        (path,) = handled
        text: Any = payload
        try:
            for step in path:
                text = text[step]
        except SHAPE_ERRORS:
            return None
        if not isinstance(text, str):
            return None
        spelled = f'"{text}"'
        start = data.find(spelled)
        # Found once, overlaps counted: ``":"`` in ``"content":":"`` also ends the key before it.
        if re.fullmatch(_PLAIN_STRING, spelled) is None or start < 0 or data.find(spelled, start + 1) >= 0:
            return None
        # Every other string is a hole too, its spelling kept apart: the pattern is then the same for
        # the events of one shape in every stream (a stream's own id is no part of it), compiled once.
        holes: list[tuple[int, int, str]] = []
        strings: list[str] = []
        for found in _COUNTED.finditer(data):
            if found.start() == start:
                holes.append((start, start + len(spelled), _PLAIN_STRING))
            elif found.group(2) is None and found.group(3) is None:
                # A string that is no key: a stream's own (its id) as much as the schema's.
                holes.append((*found.span(), _SPELLED_STRING))
                strings.append(found.group())
            elif found.group(2) is not None and not found.group(1).lower().endswith("index"):
                # Every place key ends so: a key any reader may take for one (another case) is kept.
                holes.append((found.start(2), found.end(2), _COUNT))
        if (start, start + len(spelled), _PLAIN_STRING) not in holes:
            return None  # the text's spelling is no string of the data's own (cannot be, but unproved)
        pattern: list[str] = []
        written = 0
        for begin, end, hole in holes:
            pattern += [re.escape(data[written:begin]), hole]
            written = end
        pattern.append(re.escape(data[written:]))
        compiled = _shape_pattern("".join(pattern))
        return cls(event.type, compiled, tuple(strings), frozenset(handled), faithful, ordinary)

    def matches(self, data: str) -> bool:
        """Whether ``data`` is of this shape: its pattern, each string but the text's spelled alike."""
        found = self.data.fullmatch(data)
        return found is not None and found.groups() == self.strings


def _shape_pattern(source: str) -> re.Pattern[str]:
    """``source`` compiled, once for every session: the last ``_PATTERNS_KEPT`` are kept."""
    pattern = _PATTERNS.get(source)
    if pattern is None:
        if len(_PATTERNS) >= _PATTERNS_KEPT:
            del _PATTERNS[next(iter(_PATTERNS))]  # the one compiled longest ago
        pattern = _PATTERNS[source] = re.compile(source)
    return pattern


_PATTERNS: dict[str, re.Pattern[str]] = {}
_PATTERNS_KEPT = 256
"""Shape patterns kept compiled: the dialects' streams have a few shapes each."""


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    read = dict(pairs)
    if len(read) != len(pairs):
        raise _DuplicateKey
    return read


_UNIQUE_KEYS = jsontext.decoder(_unique_keys)
"""Reads JSON whose objects name each key once. Where a key repeats, this parser keeps the last value
and another (a client's) may keep the first: the bytes of such an event carry a value no scan read."""


def _payload_of(event: SSEEvent) -> tuple[Any, bool]:
    """An event's data read as JSON, or ``_NOT_JSON`` (no data, an oversized piece, not JSON, or nested
    past the interpreter's depth), and whether its bytes say just that: an object that repeats a key does
    not (another reader may take the value this one dropped)."""
    if event.data is None or event.oversized:
        return _NOT_JSON, True
    try:
        return _UNIQUE_KEYS.decode(event.data), True
    except _DuplicateKey:
        return jsontext.loads(event.data), False
    except (ValueError, RecursionError):
        return _NOT_JSON, True


def _may_name_places(data: str | None) -> bool:
    """Whether an event's data may hold a place index (``readings.PLACE_KEYS`` all end so), spelled
    plainly or with escapes: most events of a stream that names no place skip the walk."""
    return data is not None and ('index"' in data or "\\" in data)


def _skeleton(payload: Any, handled: Collection[Path]) -> dict[str, Any] | None:
    """What of an event the residual scan reads, for comparing two events: the payload with the strings
    the dialect filters blanked, and its top-level numbers too (sequence numbers, indices), not their keys:
    a key the residual scan reads all the same, whatever it holds. Only the containers on the way to a
    blanked string are copied; the payload itself is left as it is. None when the payload is not an
    object."""
    if not isinstance(payload, dict):
        return None
    skeleton = {
        key: None if isinstance(value, int | float) and not isinstance(value, bool) else value
        for key, value in payload.items()
    }
    for path in handled:
        parent: Any = skeleton
        for step in path[:-1]:
            child = parent[step]
            parent[step] = child = dict(child) if isinstance(child, dict) else list(child)
            parent = child
        parent[path[-1]] = None
    return skeleton


def _asked_again(held: ToolCall, call: ToolCall, complete: bool) -> bool:
    """Whether ``call`` is the call ``held`` was decided on, asked about again: whole, under its name,
    or, before it is whole, under a name that grew from it."""
    if held.id != call.id:
        return False
    if complete:
        return held.name == call.name
    return len(call.name) > len(held.name) and call.name.startswith(held.name)


def _json_copy(value: Any) -> Any:
    """``copy.deepcopy`` of a value read from JSON (objects, lists and immutable scalars), without the
    record of the objects copied that ``deepcopy`` keeps for cycles and shared parts, which JSON has not."""
    if isinstance(value, dict):
        return {key: _json_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_copy(item) for item in value]
    return value


def _filter_once(text_filter: TextFilter, text: str) -> str:
    return text_filter.feed(text) + text_filter.flush()


def _filter_strings(value: Any, transform: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return transform(value)
    if isinstance(value, list):
        return [_filter_strings(item, transform) for item in value]
    if isinstance(value, dict):
        return {key: _filter_strings(item, transform) for key, item in value.items()}
    return value


def rewritten(event: SSEEvent, payload: Any) -> bytes:
    """The event re-serialised with a new JSON payload, keeping its name and id."""
    return write_event(dump_json(payload), event.event, event.id, event.retry)


def synthesised(payload: Any, event_name: str | None = None) -> bytes:
    return write_event(dump_json(payload), event_name)


StreamKey = tuple[Hashable, ...]
"""A call whose arguments stream, as a client finds it again in a later event: the places on its way, each
list's item by the index a client reads it at."""


@dataclass(frozen=True, slots=True)
class CallPiece:
    """What one event brings to a tool call whose arguments stream over several events (a Chat delta, an
    Anthropic ``tool_use`` block and its ``input_json_delta``, a Responses call item and its argument
    deltas), or that it ends (``ends``: every call whose key starts with ``key``, as a Chat choice's
    ``finish_reason`` ends all its calls). ``key`` is None where clients may read the place otherwise (an
    index of 1.0, "1", true or -1): no one reading of the stream can follow such a call."""

    key: StreamKey | None
    where: str
    ids: tuple[str, ...] = ()
    """The ids the event gives the call, the call's own first (a Responses item's call id, then its id)."""
    name: str = ""
    arguments: str = ""
    given: str | None = None
    """Arguments the event gives whole (an Anthropic block's input, a Responses ``.done`` event's), which
    a client may take in place of those streamed."""
    opens: bool = False
    """It may be a call's first piece: a Chat delta (any of a call's may come first), an Anthropic block's
    start, a Responses item's addition."""
    joins: bool = False
    """It may come after a call's first piece: a Chat delta, an argument delta or ``.done`` event."""
    ends: bool = False
    tool: str = ""
    """The tool the API runs that the call is of (an Assistants step's code interpreter): it names a call
    no piece names, and the call ran upstream."""
    text_at: str | None = None
    """The locator in the event of the string ``arguments`` is, where a client appends it to the call's."""
    merges: dict[str, Any] | None = None
    """Arguments given as a fragment of their JSON object, which a client merges into the call's (a
    string appended to the one at its place, an object merged in): a Chat delta's object ``arguments``,
    a Gemini Live call's ``partialArgs``."""
    leaves: tuple[tuple[str, str, str], ...] = ()
    """The strings of ``merges``, each with its locator in the event and the place in the arguments it
    is appended to."""


@dataclass(slots=True)
class StreamedCall:
    """A call whose arguments stream over several events, as the events read so far give it."""

    where: str
    ids: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    """The pieces of its name, which the OpenAI SDK joins and other clients take the first of."""
    tool: str = ""
    """``CallPiece.tool``, as its pieces gave it."""
    arguments: GrowingText = field(default_factory=GrowingText)
    given: dict[str, None] = field(default_factory=dict)
    """Arguments events gave whole besides, each once."""
    merged: dict[str, Any] | None = None
    """The fragments of its arguments' object pieces gave (``CallPiece.merges``), merged."""
    streamed: bool = False
    ended: bool = False
    decision: ToolDecision | None = None
    denied: ToolCall | None = None
    """The reading the gate did not release, where it was not ``call()``: what the call is recorded as."""
    refused: bool = False
    """Whether a message carrying a piece of it was refused: it cannot go whole, and the agent was told."""

    def add(self, piece: CallPiece) -> bool:
        """Joins ``piece`` to the call; False, adding nothing, where its fragment contradicts the
        arguments merged so far (``merged_arguments``)."""
        merged = None if piece.merges is None else merged_arguments(self.merged or {}, piece.merges)
        if piece.merges is not None and merged is None:
            return False
        self.ids += [found for found in piece.ids if found not in self.ids]
        if piece.name:
            self.names.append(piece.name)
        self.tool = piece.tool or self.tool
        if piece.arguments or piece.joins:
            self.streamed = self.streamed or bool(piece.arguments)
            self.arguments.add(piece.arguments)
        if piece.given is not None:
            self.given[piece.given] = None
        if merged is not None:
            self.merged = merged
        return True

    def call(self) -> ToolCall:
        """The call as the OpenAI and Anthropic SDKs read it: its name joined, its arguments streamed
        (where none streamed, those merged from fragments, else the last given whole)."""
        if self.streamed or (self.merged is None and not self.given):
            arguments = self.arguments.text
        else:
            arguments = dump_json(grown(self.merged)) if self.merged is not None else list(self.given)[-1]
        name = "".join(self.names) or self.tool
        return ToolCall(self.ids[0] if self.ids else None, name, arguments, self.where, bool(self.tool))

    def readings(self) -> list[ToolCall]:
        """The call as each client may read it: ``call()`` first, then with its name's first piece alone
        and with each of its arguments given whole."""
        first = self.call()
        names = dict.fromkeys([first.name, *self.names[:1]])
        merged = [] if self.merged is None else [dump_json(grown(self.merged))]
        arguments = dict.fromkeys([first.arguments, self.arguments.text, *merged, *self.given])
        return [first] + [
            replace(first, name=name, arguments=text)
            for name in names
            for text in arguments
            if (name, text) != (first.name, first.arguments)
        ]


@dataclass(frozen=True, slots=True)
class Placed:
    """What one event brought to the calls whose arguments stream: the calls it carries a piece of, those
    whose arguments it ends, and whether it carries a piece no one reading of the stream places (at an
    index clients read otherwise, naming another call's id, continuing no call or one already decided,
    starting a second call where one is, or giving its arguments a value those before contradict)."""

    keys: frozenset[StreamKey] = frozenset()
    ended: frozenset[StreamKey] = frozenset()
    stray: bool = False


DECIDED_REMEMBERED = 1024
"""How many calls forgotten once decided a reader still knows, by their key and ids, as decided."""


class StreamedCalls:
    """The calls whose arguments stream over several events (or WebSocket messages), by their key, as
    the events read so far give them.

    A reader of a stream without end (a WebSocket connection) forgets a call once it is decided and sent
    (``forget``), so that the next turn may call at the same place; the last ``DECIDED_REMEMBERED`` it
    forgot stay known as decided: a late piece of one (its id again, or a place's piece naming no call)
    fits no call, as a piece of a decided call does not."""

    def __init__(self) -> None:
        self.calls: dict[StreamKey, StreamedCall] = {}
        self.decided_places: dict[Hashable, None] = {}
        self.decided_ids: dict[Hashable, None] = {}

    def forget(self, key: StreamKey) -> None:
        """Forgets the decided call at ``key``, remembering its place and ids as decided."""
        call = self.calls.pop(key)
        places: list[Hashable] = [key]
        for remembered, found in ((self.decided_places, places), (self.decided_ids, list(call.ids))):
            for entry in found:
                remembered.pop(entry, None)
                remembered[entry] = None
            while len(remembered) > DECIDED_REMEMBERED:
                del remembered[next(iter(remembered))]

    def _decided_before(self, piece: CallPiece) -> bool:
        """Whether ``piece``, at no call's place, is of a call decided and forgotten: naming its id, or at
        its place naming neither an id nor a tool. One naming a tool and no id starts a call of its own,
        as one naming a new id does: a server that gives its calls no id calls again at the same place."""
        if piece.ids:
            return any(found in self.decided_ids for found in piece.ids)
        return not piece.name and piece.key in self.decided_places

    def place(self, pieces: list[CallPiece], locate: Callable[[str], str]) -> Placed:
        """Joins the pieces one event brings to their calls; ``locate`` places a piece's locator within
        the event in the stream (a new call is found at its first piece's place)."""
        keys: set[StreamKey] = set()
        ended: set[StreamKey] = set()
        stray = False
        for piece in pieces:
            key = piece.key
            if key is None:
                stray = True
            elif piece.ends:
                ended.update(known for known in self.calls if known[: len(key)] == key)
                if key in self.calls:
                    keys.add(key)  # a block's stop, an item's done event: of the call, withheld with it
            elif key not in self.calls:
                if not piece.opens or self._decided_before(piece):
                    stray = True
                    continue
                call = self.calls[key] = StreamedCall(locate(piece.where))
                keys.add(key)
                stray = not call.add(piece) or stray
            else:
                call = self.calls[key]
                keys.add(key)
                foreign = call.ids and not set(piece.ids) <= set(call.ids)
                if not piece.joins or foreign or call.decision is not None:
                    stray = True
                    continue
                stray = not call.add(piece) or stray
        ended = {key for key in ended if not self.calls[key].ended}
        for key in ended:
            self.calls[key].ended = True
        return Placed(frozenset(keys), frozenset(ended), stray)
