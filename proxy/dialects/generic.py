"""Any other body: JSON (every string value is a part) or text (the whole body is one part, ``$``).

It is what bodies sent to non-model hosts are read with, so data leaving for an arbitrary API is still
scanned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections import deque
from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal
from urllib.parse import unquote_plus

from proxy.dialects.attachments import storage_location
from proxy.dialects.base import (
    BLOCKED_CODE,
    Dialect,
    ErrorResponse,
    ParsedBody,
    as_position,
    body_text,
    json_error,
    json_of,
    load_json,
    readable_text,
)
from proxy.dialects.filerefs import form_files
from proxy.dialects.locator import (
    ROOT,
    Step,
    format_locator,
    get_at,
    locator_steps,
    parse_locator,
    set_at,
    walk_strings,
)
from proxy.dialects.mcp import MCP, MCPStreamSession, holds_jsonrpc
from proxy.dialects.shapes import (
    CallPiece,
    Placed,
    StreamedCalls,
    StreamKey,
    body_may_hold_calls,
    call_pieces,
    may_hold_calls,
    shaped_calls,
    shaped_results,
)
from proxy.dialects.stream import (
    JOINED,
    MISPLACED_RULE,
    GrowingText,
    PerEventStreamSession,
    StreamFilters,
    StreamSession,
    dump_json,
    encode_json,
    rewritten,
)
from proxy.exchange import Completion, Part, RequestView, Source, TextSegment, ToolCall
from proxy.wire import jsontext
from proxy.wire.charsets import TRANSFER_DECODERS
from proxy.wire.forms import disposition_name, form_values, repeated
from proxy.wire.multipart import part_headers, part_spans, replace_parts
from proxy.wire.sse import SSEEvent, encode_text, write_event

MULTIPART = "multipart"
"""Locators of a multipart body's text fields: ``multipart[2]`` is its third part."""
FORM = "form"
"""Locators of a urlencoded form's fields, by name: ``form.file_id``, read only (the body is one text)."""


class Generic(Dialect):
    name = "generic"
    READS_ANSWERS = False
    REMOVES_CALLS = False

    def __init__(self, boundary: bytes | None = None) -> None:
        """``boundary``: the one the Content-Type of the body it reads names (``proxy.wire.multipart.
        boundary_of``); a multipart body's parts are read by that one alone, as its receiver reads them."""
        super().__init__()
        self.boundary = boundary

    def framed(self, boundary: bytes | None) -> Generic:
        return Generic(boundary)

    def parse_request(self, body: bytes, parsed: ParsedBody | None = None) -> RequestView:
        if json_of(body, parsed)[1] is None:
            return super().parse_request(body, parsed)
        lines = ndjson_documents(body)
        if lines is not None:
            return RequestView(
                dialect=self.name, parts=[Part(Source.USER, text, where) for where, text in by_field(lines)]
            )
        text = readable_text(body)
        if text is not None:
            return RequestView(
                dialect=self.name,
                parts=[Part(Source.USER, text, ROOT)] if text else [],
                repeated_fields=[
                    [(ROOT, start, end) for start, end in spans]
                    for spans in repeated((name, (start, end)) for name, start, end in form_values(text))
                ],
                files_read=form_references(body, self.boundary),
            )
        fields = multipart_texts(body, self.boundary)
        if fields is None:
            return RequestView(dialect=self.name, parse_error="not UTF-8 text")
        names = multipart_names(body, self.boundary)
        return RequestView(
            dialect=self.name,
            parts=[Part(Source.USER, field, where) for where, field in fields.items()],
            repeated_fields=repeated(
                (names[where], (where, 0, len(field))) for where, field in fields.items() if where in names
            ),
            files_read=multipart_files(fields, names),
        )

    def parse_response(self, body: bytes, parsed: ParsedBody | None = None) -> Completion:
        document, error = json_of(body, parsed)
        if error is None:
            completion = self._completion_from(document)
        else:
            lines = ndjson_documents(body)
            if lines is None:
                return self._text_completion(body)
            completion = Completion(text=[TextSegment(text, where) for where, text in by_field(lines)])
            document = lines
        if body_may_hold_calls(body):
            with_calls(completion, document)
        return completion

    def _text_completion(self, body: bytes) -> Completion:
        text = readable_text(body)
        if text is not None:
            return Completion(text=[TextSegment(text, ROOT)] if text else [])
        fields = multipart_texts(body, self.boundary)
        if fields is None:
            return Completion(parse_error="not UTF-8 text")
        return Completion(text=[TextSegment(field, where) for where, field in fields.items()])

    def rewrite_request(self, body: bytes, replacements: Mapping[str, str]) -> bytes:
        if load_json(body)[1] is None:
            return super().rewrite_request(body, replacements)
        lines = ndjson_documents(body)
        if lines is not None:
            for where, text in replacements.items():
                lines = set_at(lines, where, text)
            return encode_ndjson(lines)
        if set(replacements) <= {ROOT}:
            return encode_text(replacements.get(ROOT, body_text(body)))
        fields = {}
        for where, text in replacements.items():
            steps = parse_locator(where)
            if len(steps) != 2 or steps[0] != MULTIPART or not isinstance(steps[1], int):
                raise ValueError(f"{where} names no part of this body")
            fields[steps[1]] = encode_text(text)
        return replace_parts(body, self.boundary, fields)

    def _rewrite_text_response(self, body: bytes, text_map: Callable[[str], str]) -> bytes:
        lines = ndjson_documents(body)
        if lines is not None:
            changed = False
            for where, piece in list(walk_strings(lines)):
                mapped = text_map(piece)
                if mapped != piece:
                    lines, changed = set_at(lines, where, mapped), True
            return encode_ndjson(lines) if changed else body
        text = readable_text(body)
        if text is not None:
            return encode_text(text_map(text))
        parts = multipart_texts(body, self.boundary) or {}
        replacements = {where: text_map(part) for where, part in parts.items()}
        replacements = {where: part for where, part in replacements.items() if part != parts[where]}
        return self.rewrite_request(body, replacements) if replacements else body

    def _request_from(self, document: Any) -> RequestView:
        strings = list(walk_strings(document))
        fetches = [fetch for where, text in strings if (fetch := storage_location(where, text)) is not None]
        parts = [Part(Source.USER, text, where) for where, text in strings]
        return RequestView(dialect=self.name, parts=parts, fetches=fetches)

    def _completion_from(self, document: Any) -> Completion:
        if not holds_jsonrpc(document):
            return Completion(text=[TextSegment(text, where) for where, text in walk_strings(document)])
        # A JSON-RPC answer on a route no dialect knows (an MCP server mounted elsewhere, a replay): what it
        # gives the agent to read is read as MCP reads it, and every other string as any body's.
        completion = MCP()._completion_from(document)
        read = {segment.where for segment in completion.text}
        unread = [(where, text) for where, text in walk_strings(document) if where not in read]
        completion.text += [TextSegment(text, where) for where, text in unread]
        return completion

    def _drop_calls(self, document: Any, dropped: list[ToolCall], notice: str | None) -> None:
        """A generic body has no place known to hold a notice, nor to take a call out of exactly: an answer
        withholding a call is refused whole (``REMOVES_CALLS``) before it is rewritten."""

    def error_response(self, status: int, message: str, code: str) -> ErrorResponse:
        return json_error(status, {"error": {"message": message, "code": code}})

    def stream_session(self, filters: StreamFilters | None = None) -> StreamSession:
        return AnyStreamSession(filters)


def multipart_texts(body: bytes, boundary: bytes | None) -> dict[str, str] | None:
    """The text fields of a multipart body of ``boundary`` (a file upload is binary as a whole; the form
    fields beside the file are text) by locator (``multipart[2]``); None when the body is not multipart."""
    spans = part_spans(body, boundary)
    if spans is None:
        return None
    fields = {}
    for index, (start, end) in enumerate(spans):
        field = readable_text(body[start:end])
        if field:
            fields[format_locator((MULTIPART, index))] = field
    return fields


_RANGE_START = re.compile(r"\s*bytes\s+(\d{1,18})-", re.IGNORECASE)
"""The first byte a part's Content-Range names (``bytes 17-39/40``)."""


def assembled_parts(body: bytes, boundary: bytes | None) -> list[TextSegment]:
    """The text parts of a multipart body of ``boundary``, each at its locator (``multipart[2]``), in the
    order a client joins them into one text: by the first byte each one's Content-Range names where every
    part names one (a ``multipart/byteranges`` answer, whose parts are pieces of one file), else as they
    stand."""
    found = part_headers(body, boundary) or []
    texts = multipart_texts(body, boundary) or {}
    begins = [_RANGE_START.match(headers.get("content-range", "")) for headers, _, _ in found]
    firsts = [int(begin.group(1)) for begin in begins if begin is not None]
    order = list(range(len(found)))
    if found and len(firsts) == len(found):
        order.sort(key=firsts.__getitem__)
    located = (format_locator((MULTIPART, index)) for index in order)
    return [TextSegment(texts[where], where) for where in located if where in texts]


def form_references(body: bytes, boundary: bytes | None) -> dict[str, str]:
    """The files a form (urlencoded, or multipart of ``boundary``) names by reference, by locator."""
    fields = multipart_texts(body, boundary)
    if fields is not None:
        return multipart_files(fields, multipart_names(body, boundary))
    text = readable_text(body)
    return {} if text is None else urlencoded_files(text)


def urlencoded_files(form: str) -> dict[str, str]:
    """The files a urlencoded ``form`` names, each by its field (``form.file_id``), its name and value
    percent-decoded as a server decodes them."""
    decoded = [(unquote_plus(name), unquote_plus(form[start:end])) for name, start, end in form_values(form)]
    return form_files((format_locator((FORM, name)), name, value) for name, value in decoded)


def multipart_files(fields: dict[str, str], names: dict[str, str]) -> dict[str, str]:
    """The files a multipart form's text ``fields`` name, by the field ``names`` give each."""
    return form_files((where, names[where], field) for where, field in fields.items() if where in names)


def multipart_names(body: bytes, boundary: bytes | None) -> dict[str, str]:
    """The form field each part of a multipart body of ``boundary`` is, by locator (``multipart[2]``),
    where it names one."""
    names = {}
    for index, (headers, _, _) in enumerate(part_headers(body, boundary) or []):
        name = disposition_name(headers)
        if name is not None:
            names[format_locator((MULTIPART, index))] = name
    return names


def binary_parts(body: bytes, boundary: bytes | None) -> list[tuple[str, bytes]]:
    """The parts of a multipart body of ``boundary`` that are not text (a file, an image, an archive), each
    by locator with its content once its transfer encoding (base64, quoted-printable) is undone: read for
    what its printable runs and compressed streams hold, as ``multipart_texts`` are read as text."""
    found = part_headers(body, boundary)
    binaries = []
    for index, (headers, start, end) in enumerate(found or []):
        content = body[start:end]
        decoder = TRANSFER_DECODERS.get(headers.get("content-transfer-encoding", "").strip().lower())
        if decoder is not None:
            # Read as sent where it does not decode: the charset check refuses such a part where enforced.
            with contextlib.suppress(ValueError):
                content = decoder(content)
        if readable_text(content) is None:
            binaries.append((format_locator((MULTIPART, index)), content))
    return binaries


def ndjson_documents(body: bytes) -> list[Any] | None:
    """A body of JSON documents one a line (NDJSON, as Ollama streams its answers): the documents, or None
    when it is not one (fewer than two lines, or a line that is not JSON)."""
    text = readable_text(body)
    lines = [line for line in text.splitlines() if line.strip()] if text is not None else []
    if len(lines) < 2:
        return None
    try:
        return [jsontext.loads(line) for line in lines]
    except (ValueError, RecursionError):
        return None


def encode_ndjson(documents: list[Any]) -> bytes:
    return b"".join(encode_json(document) + b"\n" for document in documents)


def by_field(documents: list[Any]) -> list[tuple[str, str]]:
    """Every string of the documents with its locator (``[line].field``), those of one field read one
    after another across the lines: a client of an NDJSON stream joins a field's pieces so, and a secret
    split across lines is whole there."""
    fields: dict[tuple[Step, ...], list[tuple[str, str]]] = {}
    for where, text in walk_strings(documents):
        fields.setdefault(locator_steps(where)[1:], []).append((where, text))
    return [item for pieces in fields.values() for item in pieces]


def with_calls(completion: Completion, document: Any) -> None:
    """Adds to ``completion`` the tool calls ``document`` holds by their shape, and what the tools the API
    ran returned inside them as read content."""
    completion.tool_calls.extend(shaped_calls(document))
    completion.parts.extend(shaped_results(document))  # their texts are among the completion's already


UNPLACED_NOTICE = (
    f"egressguard withheld a piece of a tool call that no reading of the stream places ({MISPLACED_RULE})"
)


def error_event(message: str) -> bytes:
    """An ``error`` event telling the agent ``message`` (of a call withheld from an Assistants run's
    ``thread.run.requires_action``, say): the ``{"error": {...}}`` most APIs' streams tell an error by,
    which OpenAI's SDKs raise. A stream of unknown shape dropped such a call unsaid."""
    error = {"error": {"message": message, "type": "invalid_request_error", "code": BLOCKED_CODE}}
    return write_event(dump_json(error), "error")


def ends_stream(event: SSEEvent) -> bool:
    """Whether ``event`` says the stream is over: OpenAI's ``[DONE]`` (which the Assistants API sends as
    its ``done`` event's data)."""
    return event.event == "done" or (event.data or "").strip() == "[DONE]"


DELTA = "delta"
"""The key under which an event carries what a client appends to the text it holds (``joined_strings``)."""
REPLACED_KEYS = frozenset({"type", "index"})
"""Keys a client joining deltas replaces, not appends to: a discriminator, a place."""


def joined_strings(payload: Any, apart: Collection[tuple[Step, ...]] = ()) -> list[tuple[str, str, str]]:
    """The strings of one event that a client appends to the text it holds at the same place from the
    events before: those under a ``delta`` key (OpenAI's SDKs join an Assistants message's, a run step's
    and a chat chunk's deltas so, a list's item at the place its ``index`` names). Each with its locator in
    the event, the place it joins (its locator with each such item at its index) and its text; not one
    a client replaces (``REPLACED_KEYS``), nor one under a place in ``apart`` (a streamed call's pieces,
    which the tool gate reads). The place is named as a channel (``JOINED`` and its locator)."""
    found: list[tuple[str, str, str]] = []
    stack: list[tuple[Any, tuple[Step, ...], tuple[Step, ...], bool]] = [(payload, (), (), False)]
    while stack:  # not recursive: an event nested as deep as the parser reads stays readable
        value, steps, place, under = stack.pop()
        if steps in apart:
            continue
        if isinstance(value, str):
            if under and steps[-1] not in REPLACED_KEYS:
                found.append((format_locator(steps), JOINED + format_locator(place), value))
        elif isinstance(value, dict):
            stack += reversed(
                [(child, (*steps, key), (*place, key), under or key == DELTA) for key, child in value.items()]
            )
        elif isinstance(value, list):
            stack += reversed(
                [
                    (child, (*steps, position), (*place, _joined_at(child, position)), under)
                    for position, child in enumerate(value)
                ]
            )
    return found


def _joined_at(item: Any, position: int) -> int:
    """The place a client joins a list's item to: the one its ``index`` names, else where it stands."""
    index = as_position(item.get("index")) if isinstance(item, dict) else None
    return position if index is None else index


def delta_carrying(payload: Any, where: str, text: str) -> Any:
    """An event that brings ``text`` alone to the place ``where`` names in ``payload`` (an event of
    ``joined_strings``): the path to it, each object on it with its scalars (outside the delta: the
    event's kind, its message's id; inside: only those a client replaces), each list with that one item."""
    steps = parse_locator(where)
    carried: Any = text
    for depth in range(len(steps) - 1, -1, -1):
        parent = get_at(payload, format_locator(steps[:depth]))
        step = steps[depth]
        if isinstance(step, int):
            carried = [carried]
            continue
        inside = DELTA in steps[:depth]
        kept = {
            key: value
            for key, value in parent.items()
            if not isinstance(value, dict | list) and (not inside or key in REPLACED_KEYS)
        }
        carried = {**kept, step: carried}
    return carried


def without_items(document: Any, places: list[list[Step]]) -> Any | None:
    """``document`` without the list items at ``places`` (each a locator's steps), or None where one is
    no list's item or a list would be left empty: what was around a withheld call then says nothing
    without it (a ``tool_calls`` of none, its ``finish_reason`` still ``tool_calls``)."""
    taken: dict[tuple[Step, ...], set[int]] = {}
    for steps in places:
        if not steps or not isinstance(steps[-1], int):
            return None
        taken.setdefault(tuple(steps[:-1]), set()).add(steps[-1])
    for parent, indexes in taken.items():
        items = get_at(document, format_locator(parent))
        if not isinstance(items, list) or len(indexes) >= len(items):
            return None
        document = set_at(
            document,
            format_locator(parent),
            [item for index, item in enumerate(items) if index not in indexes],
        )
    return document


Fed = tuple[StreamKey, str, str, str]
"""A piece of a streamed call's arguments one event fed its filter: the call's key, the channel it fed
(``argument_channels``), the locator of the piece in the event, and the piece as it came."""


def argument_channels(call: str, piece: CallPiece) -> list[tuple[str, str]]:
    """The channels of the arguments of the call at ``call`` that ``piece`` feeds, each with the locator
    of its text in the event: the call's own for a string a client appends to its arguments (``call``),
    and one for each string of a fragment of their object, at the place in the arguments it is appended
    to, as a client merges it."""
    channels = [] if piece.text_at is None else [(call, piece.text_at)]
    steps = parse_locator(call)
    return channels + [(format_locator((*steps, *locator_steps(place))), at) for at, _, place in piece.leaves]


class GenericStreamSession(PerEventStreamSession):
    """Any event stream: each event's strings (or its whole data when not JSON) are filtered within
    the event. Locators are relative to one event's data.

    A tool call whose arguments stream over several events (``call_pieces``) is decided once they end
    (its choice finishes, its block stops, its item is done, or the stream ends), on every way a client
    may read it; where a gate rewrites the stream, every event from its first piece on is held until
    then, and sent as it came or, for a call dropped, not sent. Held events past ``MAX_HELD_BYTES`` drop
    the calls still undecided."""

    JSON_EVENTS = False

    def __init__(self, filters: StreamFilters | None = None) -> None:
        super().__init__(filters)
        self._calls: list[ToolCall] = []
        """The calls of the event last read, each at its place in the stream (``[event].place``, from 0)."""
        self._streamed = StreamedCalls()
        self._placed: tuple[SSEEvent, Placed] | None = None
        """The event last read, with what it brought to the calls whose arguments stream."""
        self._held: deque[tuple[list[bytes], frozenset[StreamKey]]] = deque()
        """What the events held since the first one carrying an undecided call let out, in order, each
        with the calls it carries a piece of."""
        self._held_bytes = 0
        self._told: list[bytes] = []
        """Events telling of the calls dropped since the held events last let anything out."""
        self._call_places: frozenset[tuple[Step, ...]] = frozenset()
        """The places of the event last read that carry a piece of a streamed call."""
        self._joined: dict[str, tuple[SSEEvent, Any, str | None]] = {}
        """The open channels of delta text (``joined_strings``, and the data of events that are not JSON),
        by the place they join, each with the last event that fed it, that event's payload and the
        locator of the text in it (None: its data): what a channel still holds when a client stops
        joining is sent in an event of that shape."""
        self._closed: list[bytes] = []
        """Those events, made while an event is read, sent before it."""
        self._in_deltas = False
        """Whether the stream has carried text in deltas."""
        self._argument_texts: list[tuple[StreamKey, str, str]] = []
        """The event last read's pieces of undecided streamed calls' arguments: each call's key, with the
        channel its piece feeds and the locator of the piece's text."""
        self._call_feeds: dict[StreamKey, dict[str, tuple[SSEEvent, Any, str]]] = {}
        """The streamed calls whose arguments are read joined and not yet closed, each with its channels
        open, each with the last event that fed it, its payload as sent and the locator of its text in it."""
        self._fragment_texts: dict[StreamKey, dict[str, GrowingText]] = {}
        """The strings of the fragments of undecided calls' arguments' objects, as they came, by call and
        channel: what each channel's filter is held to at the decision."""
        self._flushed: list[tuple[bytes, StreamKey]] = []
        """Events carrying what a call's arguments held back when they closed, each with the call's key:
        sent before the event that closed them, and withheld with the call."""
        self._as_read: dict[int, tuple[bytes, SSEEvent, Any, list[Fed]]] = {}
        """Held events that fed calls' arguments, by the identity of their bytes as filtered, each with
        the event, its payload as filtered and what it fed: where a gate holds a call until it is decided,
        the pieces of one whose filter changed nothing go as they came (``_as_decided``)."""
        self._flushes: dict[int, StreamKey] = {}
        """Held events of ``_flushed``, by the identity of their bytes, each with its call."""
        self._redacted: set[StreamKey] = set()
        """The decided calls whose arguments their filter changed."""

    @property
    def completion(self) -> Completion:
        if not self._streamed.calls:
            return self._completion
        streamed = [call.denied or call.call() for call in self._streamed.calls.values()]
        return dataclasses.replace(self._completion, tool_calls=[*self._completion.tool_calls, *streamed])

    def _observe(self, event: SSEEvent, payload: Any) -> None:
        self._completion.text.extend(TextSegment(text, where) for where, text in walk_strings(payload))
        self._calls = []
        marked = may_hold_calls(event.data or "")
        # Once a call has streamed, every event is read for its pieces: Anthropic's hold no marker.
        pieces = call_pieces(payload) if marked or self._streamed.calls else []
        self._call_places = frozenset(locator_steps(piece.where) for piece in pieces if not piece.ends)
        self._placed = (event, self._streamed.place(pieces, self._numbered)) if pieces else None
        calls = self._streamed.calls
        self._argument_texts = [
            (piece.key, channel, at)
            for piece in pieces
            if piece.key in calls and calls[piece.key].decision is None
            for channel, at in argument_channels(calls[piece.key].where, piece)
        ]
        if marked:
            streaming = {piece.where for piece in pieces if piece.opens}
            # Placed by the event's number: the places within events repeat from one event to the next.
            self._calls = [
                dataclasses.replace(call, where=self._numbered(call.where))
                for call in shaped_calls(payload)
                if call.where not in streaming
            ]
            self._completion.tool_calls.extend(self._calls)
            self._completion.parts.extend(shaped_results(payload))

    def _numbered(self, where: str) -> str:
        return format_locator((self.events - 1, *parse_locator(where)))

    def _event_output(self, event: SSEEvent, payload: Any) -> list[bytes]:
        output = super()._event_output(event, payload)
        # What the delta text's channels held goes before the event that closed them, on its own: it is
        # no piece of a call the event carries, and goes out whatever is decided of that call.
        closed, self._closed = self._closed, []
        placed = self._placed[1] if self._placed is not None and self._placed[0] is event else Placed()
        self._placed = None
        if ends_stream(event):
            for key in list(self._call_feeds):
                self._close_call(key)
        if self.filters.tool_gate is None:
            # Observed: each call is read whole at the end, and nothing is held.
            flushed, self._flushed = self._flushed, []
            return [*closed, *(piece for piece, _ in flushed), *output]
        if placed.stray:
            self.notes.append(
                f"event {event.type!r} carried a piece of a tool call no reading places; not sent"
            )
            self._ambiguous(MISPLACED_RULE)
            for piece in output:
                self._as_read.pop(id(piece), None)
            output = []
            for key in placed.keys:
                self._settle(key, forced="drop")
            if not placed.keys:
                # A piece naming no call (a delta at a place no call opened): what was withheld is told
                # as a call withheld is, or the agent waits on a call that never comes whole.
                self._told.append(error_event(UNPLACED_NOTICE))
        if not placed.keys and not self._held and not self._told and not self._flushed:
            return [*closed, *output]
        if closed:
            self._held.append((closed, frozenset()))
            self._held_bytes += sum(len(piece) for piece in closed)
        self._hold_flushed()
        if ends_stream(event):
            # A client stops reading at the stream's end: the calls still held are decided before it, so
            # the events telling of those withheld come where it reads them.
            for key in list(self._streamed.calls):
                self._settle(key)
            return [*self._release(), *output]
        self._held.append((output, placed.keys))
        self._held_bytes += sum(len(piece) for piece in output)
        for key in placed.ended:
            self._settle(key)
        if self._held_too_long(self._held_bytes):
            for key in list(self._streamed.calls):
                self._settle(key, forced="cut")
        return self._release()

    def _settle(self, key: StreamKey, forced: Literal["drop", "cut"] | None = None) -> None:
        """Decides the call at ``key`` on its arguments as they stand, on every reading of it: dropped
        unless the gate releases each (or where ``forced``: dropped, the gate told its arguments were cut
        short)."""
        call = self._streamed.calls[key]
        if call.decision is not None:
            return
        self._close_call(key, keep=forced is None)
        released = self.released_arguments.get(call.where, "")
        fragments = self._fragment_texts.pop(key, {})
        if released != call.arguments.text or any(
            self.released_arguments.get(channel, "") != text.text for channel, text in fragments.items()
        ):
            self._redacted.add(key)
        first, *others = call.readings()
        if forced == "drop":
            call.decision = "drop"
            self._drop_at(first)
            self._told.append(self._withheld_event(first))
            return
        self._cut = forced == "cut"
        call.decision = self._decide(first, complete=True, readings=others)
        call.denied = self._denied.get(first.where)
        if call.decision == "drop":
            self.notes.append(f"a streamed call to {first.name!r} was withheld; its events not sent")
            self._told.append(self._withheld_event(first))

    def _close_call(self, key: StreamKey, *, keep: bool = True) -> None:
        """Closes the joined reading of the arguments of the call at ``key``: what each channel's filter
        held back is to be sent (``_flushed``, unless not ``keep``) in an event of the shape of the last
        that fed it."""
        for channel, (event, payload, where) in self._call_feeds.pop(key, {}).items():
            flushed = self._close_arguments(channel)
            if flushed and keep:
                self._flushed.append((rewritten(event, delta_carrying(payload, where, flushed)), key))

    def _hold_flushed(self) -> None:
        """Holds the events of ``_flushed`` each with its call, so that a call withheld takes its own."""
        for piece, key in self._flushed:
            self._flushes[id(piece)] = key
            self._held.append(([piece], frozenset({key})))
            self._held_bytes += len(piece)
        self._flushed = []

    def _ended_here(self, event: SSEEvent) -> frozenset[StreamKey]:
        """The streamed calls whose arguments ``event``, the event last read, ends."""
        return self._placed[1].ended if self._placed is not None and self._placed[0] is event else frozenset()

    def _release(self) -> list[bytes]:
        """What the held events let out now: those before the first that carries an undecided call, but
        for the ones carrying a dropped call. The events telling of the calls dropped since go in order
        after the events held until then: an SDK raising the error reads nothing after it."""
        if self._told:
            self._held.append((self._told, frozenset()))
            self._told = []
        released: list[bytes] = []
        while self._held:
            output, keys = self._held[0]
            decisions = {self._streamed.calls[key].decision for key in keys}
            if None in decisions:
                break
            self._held.popleft()
            self._held_bytes -= sum(len(piece) for piece in output)
            sent = [self._as_decided(piece) for piece in output]
            if "drop" not in decisions:
                released += [piece for piece in sent if piece is not None]
        return released

    def _as_decided(self, piece: bytes) -> bytes | None:
        """A held event as sent once its calls are decided: the pieces of a call whose filter changed
        nothing as they came (its filter held back the end of a piece that may begin a secret), of one it
        changed as filtered; what a filter held back of a call it changed nothing of is not sent again."""
        flushed = self._flushes.pop(id(piece), None)
        if flushed is not None:
            return piece if flushed in self._redacted else None
        read = self._as_read.pop(id(piece), None)
        if read is None or read[0] is not piece:
            return piece
        _, event, payload, fed = read
        kept = [(where, text) for key, _, where, text in fed if key not in self._redacted]
        if not kept:
            return piece
        for where, text in kept:
            payload = set_at(payload, where, text)
        return rewritten(event, payload)

    def _end_of_stream(self) -> list[bytes]:
        """The stream ended: every call still undecided has all the arguments it will get."""
        for key in list(self._streamed.calls):
            self._settle(key)
        self._hold_flushed()
        released = self._release()
        self._close_joined()
        closed, self._closed = self._closed, []
        return [*released, *closed, *super()._end_of_stream()]

    def _close_joined(self, kept: str = "") -> None:
        """Closes every channel of delta text but ``kept``: what each held is to be sent (``_closed``) in
        an event of the shape of the last that fed it, where a client still joins it to the same place."""
        open_still = self._joined.pop(kept, None)
        for channel, (event, payload, where) in self._joined.items():
            flushed = self._close_channel(channel)
            if flushed:
                self._closed.append(
                    write_event(flushed, event.event, event.id, event.retry)
                    if where is None
                    else rewritten(event, delta_carrying(payload, where, flushed))
                )
        self._joined = {} if open_still is None else {kept: open_still}

    def _withheld_event(self, call: ToolCall) -> bytes:
        """``error_event`` telling the agent of ``call`` withheld, in place of the events it came in."""
        return error_event(self._notice(call) or f"egressguard withheld the call to {call.name}")

    def _texts(self, payload: Any) -> list[tuple[str, str]]:
        return list(walk_strings(payload))

    def _transform(self, event: SSEEvent, payload: Any) -> list[bytes]:
        dropped = [call for call in self._calls if self._decide(call, complete=True) == "drop"]
        told = [self._withheld_event(call) for call in dropped]
        if dropped:
            kept = without_items(payload, [parse_locator(call.where)[1:] for call in dropped])
            names = ", ".join(call.name for call in dropped)
            if kept is None:
                self.notes.append(f"event {event.type!r} carried a withheld call to {names}; not sent")
                return told
            # Each withheld call is an item of a list the event keeps others in (an Assistants run's
            # ``required_action`` asking for several): taken out, the others go, the agent told after.
            self.notes.append(f"event {event.type!r} carried a withheld call to {names}; sent without it")
            payload = kept
        elif self.filters.text_filter is None and self.filters.argument_filter is None:
            return [event.raw]
        payload, fed = self._filter_call_texts(event, payload)
        if self.filters.text_filter is not None:
            # A delta's text is read on from the deltas before it, as a client joins it: a secret split
            # over them is whole to the filter. Any other event ends the joining.
            joined = joined_strings(payload, self._call_places)
            if not joined:
                self._close_joined()
            # Once text comes in deltas, the other strings (ids, kinds, a message given whole at its end)
            # are no continuation of it: read on from a key's prefix it held, an id would be redacted.
            self._in_deltas = self._in_deltas or bool(joined)
            read_on = {where for where, _, _ in joined} | {where for _, _, where, _ in fed}
            own = self._filter_apart if self._in_deltas else self._filter_within_event
            for where, text in self._texts(payload):
                if where not in read_on:
                    payload = set_at(payload, where, own(where, text))
            for where, channel, text in joined:
                payload = set_at(payload, where, self._filter_text(channel, text))
                self._joined[channel] = (event, payload, where)
        for key, channel, where, _ in fed:
            if key not in self._ended_here(event):
                self._call_feeds.setdefault(key, {})[channel] = (event, payload, where)
        sent = rewritten(event, payload)
        if fed and self.filters.tool_gate is not None:
            self._as_read[id(sent)] = (sent, event, payload, fed)
        return [sent, *told]

    def _filter_call_texts(self, event: SSEEvent, payload: Any) -> tuple[Any, list[Fed]]:
        """``payload`` with the pieces of streamed calls' arguments it carries each read on from the
        pieces before it, as a client joins them to its call (an Assistants step's by its id and the
        call's index): a secret split over them is whole to the filter. A call whose arguments this
        event ends gets what its filter held back in its last piece here, or else in an event of its
        own (``_close_call``). Returns the payload and each piece it fed, in order."""
        fed: list[Fed] = []
        if self.filters.argument_filter is None:
            return payload, fed
        calls = self._streamed.calls
        for key, channel, where in self._argument_texts:
            text = get_at(payload, where)
            if isinstance(text, str) and calls[key].decision is None:
                payload = set_at(payload, where, self._filter_arguments(channel, text))
                fed.append((key, channel, where, text))
                if channel != calls[key].where:
                    self._fragment_texts.setdefault(key, {}).setdefault(channel, GrowingText()).add(text)
        last = {(key, channel): where for key, channel, where, _ in fed}
        for key in self._ended_here(event):
            feeds = self._call_feeds.get(key, {})
            for (ended, channel), where in last.items():
                if ended == key:
                    feeds.pop(channel, None)
                    held = self._close_arguments(channel)
                    payload = set_at(payload, where, get_at(payload, where) + held)
            self._close_call(key)
        return payload, fed

    def _on_text_event(self, event: SSEEvent) -> list[bytes]:
        """An event whose data is the text itself: read on from the data of the events of its name
        before it, as a client printing each as it comes joins them (a secret split over them is whole to
        the filter). What the other joined channels held goes before it; the stream's end (``[DONE]``)
        ends every joining without being text of any."""
        data = event.data or ""
        self._completion.text.append(TextSegment(data, ROOT))
        if self.filters.text_filter is None:
            return [event.raw]
        if ends_stream(event):
            released = self._filter_within_event(ROOT, data)
            self._close_joined()
        else:
            channel = f"{JOINED}{ROOT}{event.type}"
            self._close_joined(kept=channel)
            self._in_deltas = True
            self._joined[channel] = (event, None, None)
            released = self._filter_text(channel, data)
        return [write_event(released, event.event, event.id, event.retry)]


class AnyStreamSession(GenericStreamSession, MCPStreamSession):
    """A stream on a route no dialect knows, decided event by event: an event carrying a JSON-RPC message
    is read as MCP reads it (the server-to-agent stream of MCP's HTTP+SSE transport at ``/sse``, a server
    mounted at another path), any other as ``GenericStreamSession`` reads it."""

    @staticmethod
    def _reader_of(payload: Any) -> type[PerEventStreamSession]:
        """The session whose reading of an event this one takes."""
        return MCPStreamSession if holds_jsonrpc(payload) else GenericStreamSession

    def _observe(self, event: SSEEvent, payload: Any) -> None:
        self._reader_of(payload)._observe(self, event, payload)

    def _texts(self, payload: Any) -> list[tuple[str, str]]:
        return self._reader_of(payload)._texts(self, payload)

    def _transform(self, event: SSEEvent, payload: Any) -> list[bytes]:
        return self._reader_of(payload)._transform(self, event, payload)
