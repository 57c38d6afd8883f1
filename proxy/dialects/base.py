"""The interface every API dialect implements, and the JSON plumbing they share."""

from __future__ import annotations

import codecs
import copy
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping
from typing import Any, ClassVar

from proxy.dialects.filerefs import files_named, may_name_files
from proxy.dialects.locator import Step, get_at, set_at, sibling_strings, walk_strings
from proxy.dialects.readings import read_with_shadowed
from proxy.dialects.stream import SHAPE_ERRORS, StreamFilters, StreamSession, dump_json, encode_json
from proxy.exchange import Completion, Part, RequestView, Source, ToolCall, written
from proxy.wire import jsontext

ErrorResponse = tuple[int, dict[str, str], bytes]
BLOCKED_CODE = "egressguard_blocked"
"""The code of the error an agent gets where egressguard refuses what it sent or withholds an answer."""
JSON_HEADERS = {"content-type": "application/json"}
_UNDECODABLE = re.compile("[\udc80-\udcff]")
_ORDER_MARKS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def body_text(body: bytes) -> str:
    """A body as text. Bytes that are not UTF-8 do not make it unreadable: each stands in the text as a
    lone surrogate (``surrogateescape``), is read like any other character that is not a letter, and is
    written back as the same byte when the body is rewritten (``encode_json``). A body in UTF-16 or
    UTF-32, which JSON readers detect from its first bytes, is read in that encoding."""
    encoding = json.detect_encoding(body)
    if encoding != "utf-8":
        try:
            return body.decode(encoding)
        except UnicodeDecodeError:
            pass
    return body.decode("utf-8", "surrogateescape")


def readable_text(body: bytes) -> str | None:
    """The body as text when it reads as text: a few bytes that are not UTF-8 are kept (see
    ``body_text``); a body with many of them, or with NUL bytes, is binary."""
    encoding = json.detect_encoding(body)
    if encoding == "utf-8":
        # Almost every body is valid UTF-8: decoded at C speed, it needs no count of undecodable bytes.
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return None if "\x00" in text else text
    text = body_text(body)
    if encoding.startswith(("utf-16", "utf-32")) and not body.startswith(_ORDER_MARKS) and not _is_json(text):
        # Read as UTF-16 or UTF-32 only because its first bytes hold NULs where JSON's would: bytes that
        # are no JSON read so as CJK letters, hiding the ASCII among them. Binary: its runs are read.
        return None
    undecodable = len(_UNDECODABLE.findall(text))
    if "\x00" in text or undecodable * 16 > len(text):
        return None
    return text


def _is_json(text: str) -> bool:
    try:
        jsontext.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def is_text(body: bytes) -> bool:
    """Whether a body is read by the detectors: text, or JSON however many of its bytes are not UTF-8."""
    return readable_text(body) is not None or load_json(body)[1] is None


def load_json(body: bytes) -> tuple[Any, str | None]:
    """The parsed body, or None and the reason it is not JSON."""
    if not body.strip():
        return None, "empty body"
    try:
        return jsontext.loads(body_text(body)), None
    except (ValueError, RecursionError) as error:
        return None, f"invalid JSON: {type(error).__name__}"


ParsedBody = tuple[Any, list[Any], str | None]
"""What ``load_json_with_shadowed`` reads from a body: its document, the values repeated keys shadow in
it, and why it is not JSON (None when it is)."""


def load_json_with_shadowed(body: bytes) -> ParsedBody:
    """``load_json``, and the values of keys repeated in one object that the parsed body drops: a reader
    that keeps the first of a repeated key (not Python's) sees them instead of what was inspected."""
    if not body.strip():
        return None, [], "empty body"
    try:
        return (*read_with_shadowed(body_text(body)), None)
    except (ValueError, RecursionError) as error:
        return None, [], f"invalid JSON: {type(error).__name__}"


def require_object(document: Any) -> dict[str, Any]:
    """The parsed body when it is a JSON object; anything else is a shape error (TypeError)."""
    if not isinstance(document, dict):
        raise TypeError("expected a JSON object")
    return document


def entry[Key, State](states: dict[Key, State], key: Key, make: Callable[[], State]) -> State:
    """``states[key]``, made on first use: ``setdefault`` would build a new one for every event."""
    state = states.get(key)
    if state is None:
        state = states[key] = make()
    return state


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def as_position(value: Any) -> int | None:
    """A place in a list as every client reads it: clients differ on 1.0, "1" and true, and -1 is the
    last place to one in Python and no place to one in JavaScript, so only a plain non-negative integer
    is read as a place."""
    position = as_int(value)
    return position if position is not None and position >= 0 else None


def canonical_arguments(value: Any) -> str:
    """Tool arguments given as a JSON object, spelled one way whether they arrived whole or streamed."""
    return dump_json(value if value is not None else {})


def reparse_arguments(text: str) -> str:
    """Streamed argument text in the canonical spelling when it is complete JSON, else as received."""
    if not text.strip():
        return canonical_arguments({})
    try:
        return canonical_arguments(jsontext.loads(text))
    except (ValueError, RecursionError):
        return text


def read_call_input(view: RequestView, value: Any, steps: tuple[Step, ...], call: ToolCall) -> list[Part]:
    """A tool call's input given as JSON (an MCP call's arguments; an Anthropic ``tool_use``'s
    ``input``, a Gemini ``functionCall``'s ``args`` or a Responses call's ``arguments`` as an object in
    the history a request sends): each string a part of the call's, and each run of sibling strings
    read joined (``sibling_strings``), since the tool that reads them may join them (``{"a": "AKIA",
    "b": "QYLP…"}``). The parts, added to ``view``."""
    view.repeated_fields += sibling_strings(value, steps)
    parts = [
        Part(Source.ASSISTANT, text, where, call.name, call.id) for where, text in walk_strings(value, steps)
    ]
    view.parts += parts
    return parts


def is_dropped(call: ToolCall, drop_tool_calls: Collection[str]) -> bool:
    return (call.id is not None and call.id in drop_tool_calls) or call.where in drop_tool_calls


CHECKED_PARTS = 8
"""Parts from which a request's body is first checked for a key naming a file (``may_name_files``, some
2 ns a byte) before its values are walked for one (``files_named``, about 1 µs a message): a few parts are
walked at once, however long their texts."""


class Dialect(ABC):
    """One API's request, response and stream formats. ``detect`` may return an instance carrying what
    the path told it (Gemini's model, the JSON-RPC id of an MCP request)."""

    name: ClassVar[str]
    CASED_KEYS: ClassVar[frozenset[str]] = frozenset()
    """The keys the API itself spells with capitals (Gemini's camelCase): a body holding no other key
    with a capital, an escape or a letter outside ASCII, nor one of these in lower case, reads alike in
    every reader, whether or not it matches keys regardless of case."""
    READS_ANSWERS: ClassVar[bool] = True
    """Whether the API's answers are a model's or a tool server's, with the calls and results the
    detectors gate: one the dialect cannot read (binary, over the inspection cap, JSON it cannot parse)
    is refused where a threat decided on a body's words is enforced. Any other answer (a download, an
    API's record of what it stored) is read as any body."""
    REMOVES_CALLS: ClassVar[bool] = True
    """Whether ``rewrite_response`` takes a withheld call out of the answer exactly, leaving the rest."""
    aws_framing: str | None = None
    """How the dialect's stream session reads a stream in AWS's event-stream framing (``proxy.wire.
    eventstream``): its own events carried in ``chunk`` messages (``CHUNKS``, Bedrock's
    ``invoke-with-response-stream``), or each message one of its events (``EVENTS``, ``converse-stream``);
    None where it reads none, and such a stream is refused as a binary answer where enforced."""
    SNAKE_CASE_TOO: ClassVar[bool] = False
    """Whether the dialect reads each of ``CASED_KEYS`` spelled in snake_case too, taking the camelCase
    spelling where both are given (``readings.spelled_twice``)."""

    def __init__(self, model_hint: str | None = None) -> None:
        self.model_hint = model_hint

    def framed(self, boundary: bytes | None) -> Dialect:
        """The dialect reading a body whose Content-Type names ``boundary`` (an answer's, where the request
        named another or none): itself, for an API whose bodies are never multipart."""
        return self

    def parse_request(self, body: bytes, parsed: ParsedBody | None = None) -> RequestView:
        """The neutral view of a request body; ``parsed`` is the body as the caller decoded it already
        (``load_json_with_shadowed``), so that it is not decoded twice."""
        document, error = json_of(body, parsed)
        if error is not None:
            return RequestView(dialect=self.name, model=self.model_hint, parse_error=error)
        try:
            view = self._request_from(document)
        except SHAPE_ERRORS as shape_error:
            return RequestView(dialect=self.name, model=self.model_hint, parse_error=_shape(shape_error))
        # The walk reads every value, a history's every message each turn it is sent again: a body of many
        # parts is walked only where one pass over its bytes finds that some key may name a file.
        if len(view.parts) < CHECKED_PARTS or may_name_files(body):
            view.files_read = files_named(document)
        if view.model is None:
            view.model = self.model_hint
        return view

    def parse_response(self, body: bytes, parsed: ParsedBody | None = None) -> Completion:
        """The neutral view of a response body (``parsed`` as for ``parse_request``)."""
        document, error = json_of(body, parsed)
        if error is not None:
            return Completion(parse_error=error)
        try:
            return self._completion_from(document)
        except SHAPE_ERRORS as shape_error:
            return Completion(parse_error=_shape(shape_error))

    @abstractmethod
    def stream_session(self, filters: StreamFilters | None = None) -> StreamSession: ...

    def rewrite_request(self, body: bytes, replacements: Mapping[str, str]) -> bytes:
        """The body with the string at each locator (a ``Part.where``) replaced.
        Raises ValueError when the body is not JSON or a locator names no string in it."""
        document, error = load_json(body)
        if error is not None:
            raise ValueError(error)
        for where, text in replacements.items():
            document = _replace_string(document, where, text)
        return encode_json(document)

    def rewrite_response(
        self,
        body: bytes,
        text_map: Callable[[str], str],
        drop_tool_calls: Collection[str] = frozenset(),
        notice: str | None = None,
        parsed: ParsedBody | None = None,
    ) -> bytes:
        """The body with every completion text passed through ``text_map``, the tool calls whose id (or
        ``where``, for calls without an id) is in ``drop_tool_calls`` removed, and ``notice`` added as
        assistant text. A body that is not JSON goes to ``_rewrite_text_response``; one of another
        shape, or one in which nothing changes, is returned as it is (not encoded again). ``parsed`` is
        the body as the caller decoded it (``load_json_with_shadowed``), read and left as it is: a body
        whose texts the map keeps, with no call to drop and no notice, is decided on it, and the body is
        decoded again only to be rewritten."""
        mapped: dict[str, str] = {}

        def mapping(text: str) -> str:
            result = mapped.get(text)
            if result is None:
                result = mapped[text] = text_map(text)
            return result

        if parsed is not None and parsed[2] is None:
            try:
                if not self._rewrite_document(parsed[0], mapping, drop_tool_calls, notice, apply=False)[1]:
                    return body
            except SHAPE_ERRORS:
                return body
        document, error = load_json(body)
        if error is not None:
            return self._rewrite_text_response(body, text_map)
        try:
            document, changed = self._rewrite_document(document, mapping, drop_tool_calls, notice)
        except SHAPE_ERRORS:
            return body
        return encode_json(document) if changed else body

    def _rewrite_text_response(self, body: bytes, text_map: Callable[[str], str]) -> bytes:
        """A response that is not JSON is not this API's answer: it passes unchanged."""
        return body

    def _rewrite_document(
        self,
        document: Any,
        text_map: Callable[[str], str],
        drop_tool_calls: Collection[str],
        notice: str | None,
        *,
        apply: bool = True,
    ) -> tuple[Any, bool]:
        """The document rewritten in place and whether that changed it (a text the map changes, a call
        dropped, a notice added); without ``apply``, the document as it is and whether the rewrite may
        change it (False only where it changes nothing)."""
        completion = self._completion_from(document)
        dropped = [call for call in completion.tool_calls if is_dropped(call, drop_tool_calls)]
        return self._rewrite_completion(document, completion, text_map, dropped, notice, apply=apply)

    def _rewrite_completion(
        self,
        document: Any,
        completion: Completion,
        text_map: Callable[[str], str],
        dropped: list[ToolCall],
        notice: str | None,
        *,
        apply: bool,
    ) -> tuple[Any, bool]:
        """``_rewrite_document`` once the completion is read and the calls to drop are known."""
        changed = False
        for segment in completion.text:
            text = text_map(segment.text)
            if text != segment.text:
                changed = True
                if apply:
                    document = set_at(document, segment.where, written(segment.encoded, text))
        if dropped or notice is not None:
            if not apply:
                return document, True  # whether dropping changes anything is known once it is done
            # Rare (a call withheld): a dialect's drop may find nothing to remove or no place for the notice.
            before = copy.deepcopy(document)
            self._drop_calls(document, dropped, notice)
            changed = changed or document != before
        return document, changed

    @abstractmethod
    def error_response(self, status: int, message: str, code: str) -> ErrorResponse:
        """A complete response (status, headers, body) in this API's error shape."""

    def _view_with_model_and_stream(self, body: dict[str, Any]) -> RequestView:
        """An empty view holding the top-level ``model`` and ``stream: true`` of an OpenAI or Anthropic
        request body."""
        return RequestView(
            dialect=self.name, model=as_str(body.get("model")), stream=body.get("stream") is True
        )

    @abstractmethod
    def _request_from(self, document: Any) -> RequestView: ...

    @abstractmethod
    def _completion_from(self, document: Any) -> Completion: ...

    @abstractmethod
    def _drop_calls(self, document: Any, dropped: list[ToolCall], notice: str | None) -> None:
        """Removes ``dropped`` from the parsed response in place and adds ``notice`` as assistant text."""


def json_of(body: bytes, parsed: ParsedBody | None = None) -> tuple[Any, str | None]:
    """``load_json(body)``, from what the caller decoded when it did (the documents are the same: both
    keep the last value of a repeated key, where its first stood)."""
    return (parsed[0], parsed[2]) if parsed is not None else load_json(body)


def _replace_string(document: Any, where: str, text: str) -> Any:
    if not isinstance(get_at(document, where), str):
        raise ValueError(f"{where} is not a string")
    return set_at(document, where, text)


def _shape(error: BaseException) -> str:
    return f"unexpected body shape: {type(error).__name__}"


def json_error(status: int, document: dict[str, Any]) -> ErrorResponse:
    return status, dict(JSON_HEADERS), encode_json(document)
