"""Requests the provider stores to run later, or context it stores to read later: a batch of requests, a
batch input file, cached contents, a conversation's items, an Assistants thread, a Realtime session's
configuration. Each request or piece of context such a body carries is read by the dialect whose request
it is, as its own route would be read (its prompts inspected, the tools it lets the API run and the
addresses it has the API fetch checked, its secrets redacted); every other string in the body is read as
any body's. A batch input file is read line by line, each line as the request it names.

The answer to such a route is no model's answer (a batch's or a file's record): it is read as any body's.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from proxy.dialects.anthropic import Anthropic
from proxy.dialects.base import (
    Dialect,
    ErrorResponse,
    ParsedBody,
    as_dict,
    as_list,
    as_str,
    json_of,
    load_json,
    readable_text,
)
from proxy.dialects.filerefs import files_named
from proxy.dialects.gemini import Gemini
from proxy.dialects.generic import MULTIPART, Generic, form_references
from proxy.dialects.locator import Step, format_locator, get_at, parse_locator, set_at, walk_strings
from proxy.dialects.openai_chat import OpenAIChat
from proxy.dialects.openai_responses import OpenAIResponses, output_parts
from proxy.dialects.stream import SHAPE_ERRORS, StreamFilters, StreamSession, encode_json
from proxy.exchange import Attachment, Completion, DeclaredTool, Fetch, Part, RequestView, Source, ToolCall
from proxy.wire import jsontext
from proxy.wire.multipart import part_spans, replace_parts
from proxy.wire.sse import encode_text

Located = TypeVar("Located", Part, ToolCall, DeclaredTool, Fetch, Attachment)
RouteReader = Callable[[str, bytes], Dialect | None]
"""The dialect of a model API's route (a path, percent-encoded or not) and body, None for another route."""


@dataclass(frozen=True, slots=True)
class Embedded:
    """A request (or a piece of one) carried at ``at`` in a body, read by ``dialect`` as found at ``inside``
    in a request of its own (a conversation's ``items`` are a Responses request's ``input``)."""

    at: tuple[Step, ...]
    dialect: Dialect
    inside: tuple[Step, ...] = ()


def _whole(dialect: Callable[[], Dialect], inside: tuple[Step, ...] = ()) -> Callable[[Any], list[Embedded]]:
    """A route whose body is one request of ``dialect``'s, read as found at ``inside``."""

    def embedded(document: Any) -> list[Embedded]:
        return [Embedded((), dialect(), inside)]

    return embedded


Carried = tuple[str, Callable[[], Dialect], tuple[Step, ...]]
"""A key of a body, the dialect whose request its value is a piece of, and where that request holds it."""


def _keyed(*carried: Carried) -> Callable[[Any], list[Embedded]]:
    """A route whose body carries, under each key it has of ``carried``, a piece of a request."""

    def embedded(document: Any) -> list[Embedded]:
        fields = as_dict(document)
        return [Embedded((key,), dialect(), inside) for key, dialect, inside in carried if key in fields]

    return embedded


_ASSISTANT_SETUP: tuple[Carried, ...] = (
    ("instructions", OpenAIResponses, ("instructions",)),
    ("additional_instructions", OpenAIResponses, ("instructions",)),
    ("tools", OpenAIChat, ("tools",)),
)
"""What an assistant, or a run overriding it, sets up the model with: its instructions, read as a system
prompt, and its tools, declared as Chat's are (``{"type": "function", "function": {...}}``)."""


def _anthropic_batch(document: Any) -> list[Embedded]:
    """A Message Batch: each request's ``params`` is a Messages request."""
    return [
        Embedded(("requests", index, "params"), Anthropic())
        for index, request in enumerate(as_list(as_dict(document).get("requests")))
        if "params" in as_dict(request)
    ]


def _gemini_batch(document: Any) -> list[Embedded]:
    """A Gemini batch of inline requests: each ``request`` under ``batch.inputConfig.requests.requests``
    is a generateContent request (keys in camelCase or snake_case, as the API reads them)."""
    batch = as_dict(as_dict(document).get("batch"))
    config_key = "inputConfig" if "inputConfig" in batch else "input_config"
    requests = as_dict(as_dict(batch.get(config_key)).get("requests")).get("requests")
    return [
        Embedded(("batch", config_key, "requests", "requests", index, "request"), Gemini())
        for index, request in enumerate(as_list(requests))
        if "request" in as_dict(request)
    ]


_STORED_ROUTES: tuple[tuple[re.Pattern[str], Callable[[Any], list[Embedded]]], ...] = (
    (re.compile(r"/messages/batches\Z"), _anthropic_batch),
    (re.compile(r"/cachedContents(?:/[^/]+)?\Z"), _whole(Gemini)),
    (re.compile(r":batchGenerateContent\Z"), _gemini_batch),
    (re.compile(r"/conversations(?:/[^/]+/items)?\Z"), _keyed(("items", OpenAIResponses, ("input",)))),
    (re.compile(r"/realtime/client_secrets\Z"), _keyed(("session", OpenAIResponses, ()))),
    (re.compile(r"/realtime/sessions\Z"), _whole(OpenAIResponses)),
    (re.compile(r"/assistants(?:/[^/]+)?\Z"), _keyed(*_ASSISTANT_SETUP)),
    (re.compile(r"/threads\Z"), _whole(OpenAIChat)),
    (re.compile(r"/threads/runs\Z"), _keyed(("thread", OpenAIChat, ()), *_ASSISTANT_SETUP)),
    (re.compile(r"/threads/[^/]+/messages\Z"), _whole(OpenAIChat, ("messages", 0))),
    (
        re.compile(r"/threads/[^/]+/runs\Z"),
        _keyed(("additional_messages", OpenAIChat, ("messages",)), *_ASSISTANT_SETUP),
    ),
)
"""The routes that store model input, and where each body carries it: Anthropic's Message Batches,
Gemini's cached contents and batches, OpenAI's conversations and their items, Realtime sessions and
client secrets, Assistants, their threads, messages and runs."""
_FILES = re.compile(r"/files\Z")
"""A file upload (OpenAI's ``/v1/files``, Gemini's ``/upload/v1beta/files``): a batch input file among
them is read line by line."""


def is_stored_route(route: str) -> bool:
    return (
        _FILES.search(route) is not None
        or _TOOL_OUTPUTS.search(route) is not None
        or any(pattern.search(route) for pattern, _ in _STORED_ROUTES)
    )


class Stored(Dialect):
    name = "stored"
    CASED_KEYS = frozenset({"inputConfig"})
    SNAKE_CASE_TOO = True
    READS_ANSWERS = False
    REMOVES_CALLS = False

    def __init__(
        self, route: str = "", read_route: RouteReader | None = None, boundary: bytes | None = None
    ) -> None:
        """``boundary``: the one the Content-Type of the body it reads names (``Generic``'s)."""
        super().__init__()
        self.route = route
        self.read_route = read_route
        self.any_body = Generic(boundary)

    def framed(self, boundary: bytes | None) -> Stored:
        return Stored(self.route, self.read_route, boundary)

    def parse_request(self, body: bytes, parsed: ParsedBody | None = None) -> RequestView:
        if _FILES.search(self.route) is None or json_of(body, parsed)[1] is None:
            return super().parse_request(body, parsed)
        # A file of JSON lines, or a form carrying one: each line is read as the request it names.
        spans = part_spans(body, self.any_body.boundary)
        if spans is None and readable_text(body) is None:
            return self.any_body.parse_request(body, parsed)
        view = RequestView(dialect=self.name)
        try:
            if spans is None:
                self._read_lines(view, body, ())
            for index, (start, end) in enumerate(spans or ()):
                self._read_lines(view, body[start:end], (MULTIPART, index))
        except SHAPE_ERRORS as error:
            shape = f"unexpected body shape: {type(error).__name__}"
            return RequestView(dialect=self.name, parse_error=shape)
        view.files_read |= form_references(body, self.any_body.boundary)
        return view

    def _read_lines(self, view: RequestView, content: bytes, base: tuple[Step, ...]) -> None:
        """The lines of a text file (or form field) at ``base``, each read as the request it names where
        it is a JSON one, else as text; a binary one is left to the reading of binary content."""
        text = readable_text(content)
        if text is None:
            return
        for index, line in enumerate(text.split("\n")):
            if not line.strip():
                continue
            try:
                document = jsontext.loads(line)
            except (ValueError, RecursionError):
                view.parts.append(Part(Source.USER, line, format_locator((*base, index))))
                continue
            self.merge(view, document, self._line_requests(document), (*base, index))
            view.files_read |= files_named(document, (*base, index))

    def _line_requests(self, line: Any) -> list[Embedded]:
        """The request a batch input file's line holds: OpenAI's names its route (``url``) and carries its
        ``body``; Gemini's carries a generateContent ``request``."""
        fields = as_dict(line)
        route = as_str(fields.get("url"))
        if route is not None and "body" in fields and self.read_route is not None:
            dialect = self.read_route(route, encode_json(fields["body"]))
            return [Embedded(("body",), dialect)] if dialect is not None else []
        return [Embedded(("request",), Gemini())] if "request" in fields else []

    def _request_from(self, document: Any) -> RequestView:
        view = RequestView(dialect=self.name)
        if _FILES.search(self.route):
            # A batch input file of one line is a JSON document.
            self.merge(view, document, self._line_requests(document), ())
            return view
        embedded = next((find for pattern, find in _STORED_ROUTES if pattern.search(self.route)), None)
        self.merge(
            view, document, embedded(document) if embedded else [], (), _tool_outputs(self.route, document)
        )
        return view

    @staticmethod
    def merge(
        view: RequestView,
        document: Any,
        requests: list[Embedded],
        base: tuple[Step, ...],
        route_parts: list[Part] | None = None,
    ) -> None:
        """Adds to ``view`` the parts the route reads itself (``route_parts``) and what each embedded
        request's dialect reads in it, its locators leading from ``base`` into ``document``, then every
        other string of ``document`` as any body's."""
        view.parts += route_parts or ()
        read = {part.where for part in route_parts or ()}
        for request in requests:
            carried = get_at(document, format_locator(request.at))
            own = request.dialect._request_from(_placed(request.inside, carried))
            read.update(carry(view, own, base + request.at, len(request.inside)))
        for where, text in walk_strings(document, base):
            if where not in read:
                view.parts.append(Part(Source.USER, text, where))

    def rewrite_request(self, body: bytes, replacements: Mapping[str, str]) -> bytes:
        if not replacements:
            return body
        if load_json(body)[1] is None:
            return super().rewrite_request(body, replacements)
        spans = part_spans(body, self.any_body.boundary)
        if spans is None:
            return _rewrite_lines(body, replacements)
        by_part: dict[int, dict[str, str]] = {}
        for where, text in replacements.items():
            steps = parse_locator(where)
            if len(steps) < 2 or steps[0] != MULTIPART or not isinstance(steps[1], int):
                raise ValueError(f"{where} names no part of this body")
            by_part.setdefault(steps[1], {})[format_locator(steps[2:])] = text
        contents = {}
        for index, inside in by_part.items():
            start, end = spans[index]
            contents[index] = _rewrite_lines(body[start:end], inside)
        return replace_parts(body, self.any_body.boundary, contents)

    def parse_response(self, body: bytes, parsed: ParsedBody | None = None) -> Completion:
        return self.any_body.parse_response(body, parsed)

    def _rewrite_text_response(self, body: bytes, text_map: Callable[[str], str]) -> bytes:
        return self.any_body._rewrite_text_response(body, text_map)

    def stream_session(self, filters: StreamFilters | None = None) -> StreamSession:
        return self.any_body.stream_session(filters)

    def error_response(self, status: int, message: str, code: str) -> ErrorResponse:
        return self.any_body.error_response(status, message, code)

    def _completion_from(self, document: Any) -> Completion:
        return self.any_body._completion_from(document)

    def _drop_calls(self, document: Any, dropped: list[ToolCall], notice: str | None) -> None:
        self.any_body._drop_calls(document, dropped, notice)


def carry(view: RequestView, own: RequestView, base: tuple[Step, ...], dropped: int = 0) -> set[str]:
    """Adds to ``view`` what ``own`` reads of a request carried at ``base``, each locator led from there
    (its first ``dropped`` steps left out); the locators of the strings and files it read."""
    moved = _Relocation(base, dropped)
    parts, attachments = moved.each(own.parts), moved.each(own.attachments)
    view.model = view.model or own.model
    view.parts += parts
    view.tools_offered += own.tools_offered
    view.tool_calls += moved.each(own.tool_calls)
    view.declared_tools += moved.each(own.declared_tools)
    view.fetches += moved.each(own.fetches)
    view.attachments += attachments
    view.continues |= {moved.where(where): stored for where, stored in own.continues.items()}
    return {part.where for part in parts} | {file.where for file in attachments}


_TOOL_OUTPUTS = re.compile(r"/threads/[^/]+/runs/[^/]+/submit_tool_outputs\Z")
"""What an Assistants run's tool calls returned, which the run hands to the model as their results."""


def _tool_outputs(route: str, document: Any) -> list[Part]:
    """The ``output`` of each of ``tool_outputs`` on ``/threads/{id}/runs/{id}/submit_tool_outputs``, read
    as a Responses ``function_call_output``'s is: a tool's result, for the call it names."""
    if _TOOL_OUTPUTS.search(route) is None:
        return []
    return [
        part
        for index, output in enumerate(as_list(as_dict(document).get("tool_outputs")))
        for part in output_parts(
            {"call_id": as_dict(output).get("tool_call_id"), "output": as_dict(output).get("output")},
            f"tool_outputs[{index}]",
        )
    ]


def _placed(inside: tuple[Step, ...], value: Any) -> Any:
    """``value`` where a request of its own holds it (``inside``): ``{"input": value}`` for ``("input",)``."""
    for step in reversed(inside):
        value = [value] if isinstance(step, int) else {step: value}
    return value


@dataclass(frozen=True, slots=True)
class _Relocation:
    """A locator into an embedded request as read on its own, made one into the body carrying it."""

    base: tuple[Step, ...]
    dropped: int

    def each(self, located: list[Located]) -> list[Located]:
        return [dataclasses.replace(item, where=self.where(item.where)) for item in located]

    def where(self, where: str) -> str:
        return format_locator((*self.base, *parse_locator(where)[self.dropped :]))


def _rewrite_lines(content: bytes, replacements: Mapping[str, str]) -> bytes:
    """A file of lines with the string at each locator (``[line]`` or ``[line].key...``) replaced: a line
    that is JSON is written again as JSON, one that is not is replaced whole."""
    text = readable_text(content)
    if text is None:
        raise ValueError("the file is not text")
    lines = text.split("\n")
    for where, replacement in replacements.items():
        steps = parse_locator(where)
        if not steps or not isinstance(steps[0], int) or not 0 <= steps[0] < len(lines):
            raise ValueError(f"{where} names no line of this file")
        line = steps[0]
        if len(steps) == 1:
            lines[line] = replacement
            continue
        document = set_at(jsontext.loads(lines[line]), format_locator(steps[1:]), replacement)
        lines[line] = encode_json(document).decode("utf-8", "surrogateescape")
    return encode_text("\n".join(lines))


REALTIME_EVENTS = ("session.update", "conversation.item.create", "response.create")
"""The OpenAI Realtime client events that configure what the API runs (a session's tools, the tools a
response asks for itself) or add what it fetches (an item's images and files, a response's own input)."""


def may_configure_realtime(text: str) -> bool:
    """Whether a WebSocket client message may be one ``realtime_request`` reads anything of."""
    return "\\u" in text or any(event in text for event in REALTIME_EVENTS)


def realtime_request(message: Any) -> RequestView:
    """What an OpenAI Realtime client event lets the API run or fetch, read as a Responses request's: the
    ``session`` a ``session.update`` configures (its tools), the ``item`` a ``conversation.item.create``
    adds (its images and files by URL), the ``response`` a ``response.create`` asks for (its own tools and
    input items, which it answers with in place of the session's)."""
    view = RequestView(dialect=Stored.name)
    event = as_dict(message)
    carried = {
        "session.update": Embedded(("session",), OpenAIResponses()),
        "conversation.item.create": Embedded(("item",), OpenAIResponses(), ("input", 0)),
        "response.create": Embedded(("response",), OpenAIResponses()),
    }.get(as_str(event.get("type")) or "")
    if carried is not None and carried.at[0] in event:
        # A reader's failure reaches the caller, which refuses what it could not read where enforced.
        Stored.merge(view, event, [carried], ())
    return view
