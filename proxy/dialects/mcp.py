"""MCP over streamable HTTP: JSON-RPC 2.0 messages in a JSON body or an SSE stream.

Requests of interest are ``tools/call`` (a tool call the agent makes, with arguments it wrote). Responses
carry text the agent will read as input: tool results (TOOL_RESULT), tool descriptions and their schemas
from ``tools/list`` (TOOL_DESCRIPTION, where tool poisoning hides) and resource contents
(RETRIEVED_DOCUMENT). Locators are relative to one JSON-RPC message; in a batch they are prefixed by
the message's position.
"""

from __future__ import annotations

from typing import Any

from proxy.dialects.attachments import binary_file, is_media, text_file
from proxy.dialects.base import (
    BLOCKED_CODE,
    Dialect,
    ErrorResponse,
    as_dict,
    as_list,
    as_str,
    canonical_arguments,
    json_error,
    read_call_input,
)
from proxy.dialects.locator import Step, format_locator, set_at, walk_strings
from proxy.dialects.schema import schema_descriptions
from proxy.dialects.stream import PerEventStreamSession, StreamFilters, StreamSession, rewritten
from proxy.exchange import Attachment, Completion, Part, RequestView, Source, ToolCall
from proxy.wire.sse import SSEEvent

JSONRPC_SERVER_ERROR = -32000
MIN_ENCODED_FILE = 128
"""The shortest argument of a tool call read as a file it may carry in base64 (a PDF, an archive, whose
compressed streams no scan of the text reads): shorter ones are identifiers, digests and tokens."""


def jsonrpc_error(identifier: Any, status: int, message: str, code: str) -> dict[str, Any]:
    """A JSON-RPC error answering the request ``identifier``: MCP clients surface its message to the
    caller."""
    error = {"code": JSONRPC_SERVER_ERROR, "message": message, "data": {"code": code, "status": status}}
    return {"jsonrpc": "2.0", "id": identifier, "error": error}


def is_jsonrpc_like(message: Any) -> bool:
    """Whether a parsed message is JSON-RPC to some server: an object with a key that is ``jsonrpc``
    under case folding (Go's readers match keys so), whatever its value."""
    return isinstance(message, dict) and any(
        isinstance(key, str) and key.casefold() == "jsonrpc" for key in message
    )


def holds_jsonrpc(document: Any) -> bool:
    """Whether a parsed body or event is JSON-RPC to some reader: a JSON-RPC message, or a batch holding
    one (``is_jsonrpc_like``)."""
    return any(map(is_jsonrpc_like, document if isinstance(document, list) else [document]))


def is_tool_call(message: dict[str, Any]) -> bool:
    """Whether a JSON-RPC message calls a tool: its method ``tools/call`` in any case. The official SDKs'
    servers match method names exactly and answer ``Tools/Call`` with an error, but a server that folds
    the case would run it, so it is gated as the call it may be, never passed on unread."""
    method = message.get("method")
    return isinstance(method, str) and method.casefold() == "tools/call"


def _request_id(message: dict[str, Any]) -> str | None:
    identifier = message.get("id")
    return None if identifier is None or isinstance(identifier, bool) else str(identifier)


def _messages(document: Any) -> list[tuple[tuple[Step, ...], dict[str, Any]]]:
    if isinstance(document, list):
        return [((position,), as_dict(message)) for position, message in enumerate(document)]
    if not isinstance(document, dict):
        raise TypeError("expected a JSON-RPC message")
    return [((), document)]


DESCRIBED_LISTINGS = {
    "tools": ("description", "inputSchema", "outputSchema"),
    "prompts": ("description", "arguments"),
    "resources": ("description",),
    "resourceTemplates": ("description",),
}
"""What a server lists, and the fields that describe each entry to the model (where tool poisoning hides):
prompts, resources and templates are described as tools are."""


def _resource_parts(resource: dict[str, Any], steps: tuple[Step, ...], call_id: str | None) -> list[Part]:
    """The text of one resource at ``steps`` (embedded in content, or read), as retrieved documents: its
    ``text``, and its base64 ``blob`` where that decodes to text and is no image, audio or video. A
    resource carrying both has each read: the agent receives both."""
    parts = []
    if isinstance(resource.get("text"), str):
        parts.append(
            Part(Source.RETRIEVED_DOCUMENT, resource["text"], format_locator((*steps, "text")), None, call_id)
        )
    if not is_media(as_str(resource.get("mimeType"))) and (file := text_file(resource.get("blob"))):
        where = format_locator((*steps, "blob"))
        parts.append(Part(Source.RETRIEVED_DOCUMENT, file[1], where, None, call_id, encoded=file[0]))
    return parts


def _content_items(
    message: dict[str, Any], prefix: tuple[Step, ...]
) -> list[tuple[tuple[Step, ...], Any, Source]]:
    """Each content item of one message from a server, at its place, with who wrote it: a result's
    content (a tool's), and the messages a server hands the agent's model (a prompt's, a sampling
    request's: retrieved), whose content is one item or a list of them."""
    result = message.get("result")
    if message.get("method") == "sampling/createMessage":
        holder, base = as_dict(message.get("params")), (*prefix, "params")
    elif isinstance(result, dict):
        holder, base = result, (*prefix, "result")
    else:
        return []
    items = [
        ((*base, "content", index), item, Source.TOOL_RESULT)
        for index, item in enumerate(as_list(holder.get("content")))
    ]
    for index, raw_message in enumerate(as_list(holder.get("messages"))):
        content = as_dict(raw_message).get("content")
        at = (*base, "messages", index, "content")
        if isinstance(content, dict):
            items.append((at, content, Source.RETRIEVED_DOCUMENT))
        items += [
            ((*at, position), item, Source.RETRIEVED_DOCUMENT)
            for position, item in enumerate(as_list(content))
        ]
    return items


def _resources(
    message: dict[str, Any], prefix: tuple[Step, ...]
) -> list[tuple[tuple[Step, ...], dict[str, Any]]]:
    """Each resource one message from a server carries, at its place: embedded in a content item, or
    read (``resources/read``'s ``contents``)."""
    resources = [
        ((*steps, "resource"), resource)
        for steps, item, _ in _content_items(message, prefix)
        if (resource := as_dict(as_dict(item).get("resource")))
    ]
    if isinstance(message.get("result"), dict):
        base = (*prefix, "result", "contents")
        resources += [
            ((*base, index), as_dict(content))
            for index, content in enumerate(as_list(message["result"].get("contents")))
        ]
    return resources


def result_parts(message: dict[str, Any], prefix: tuple[Step, ...] = ()) -> list[Part]:
    """The text in one JSON-RPC message from a server that the agent or its model will read, with its
    source: a response's results and listings, the resources it reads, and a sampling request's
    messages."""
    call_id = _request_id(message)
    parts = [
        Part(source, item["text"], format_locator((*steps, "text")), None, call_id)
        for steps, item, source in _content_items(message, prefix)
        if isinstance(as_dict(item).get("text"), str)
    ]
    parts += [
        part
        for steps, resource in _resources(message, prefix)
        for part in _resource_parts(resource, steps, call_id)
    ]
    if message.get("method") == "sampling/createMessage":
        params = as_dict(message.get("params"))
        if isinstance(params.get("systemPrompt"), str):
            where = format_locator((*prefix, "params", "systemPrompt"))
            parts.append(Part(Source.RETRIEVED_DOCUMENT, params["systemPrompt"], where, None, call_id))
        return parts
    result = message.get("result")
    if not isinstance(result, dict):
        return parts
    base = (*prefix, "result")
    for where, text in walk_strings(result.get("structuredContent"), (*base, "structuredContent")):
        parts.append(Part(Source.TOOL_RESULT, text, where, None, call_id))
    for listing, described_keys in DESCRIBED_LISTINGS.items():
        for index, raw_entry in enumerate(as_list(result.get(listing))):
            listed = as_dict(raw_entry)
            described = {key: listed[key] for key in described_keys if key in listed}
            name = as_str(listed.get("name"))
            for where, text in schema_descriptions(described, (*base, listing, index)):
                parts.append(Part(Source.TOOL_DESCRIPTION, text, where, tool_name=name))
    return parts


def binary_resources(message: dict[str, Any], prefix: tuple[Step, ...] = ()) -> list[Attachment]:
    """The resources of one message from a server (``_resources``) whose base64 ``blob`` is binary (a
    PDF, a text file with a NUL), not an image, audio or video: retrieved documents read as binary
    content; and those whose blob does not decode."""
    files = []
    for steps, resource in _resources(message, prefix):
        media_type = as_str(resource.get("mimeType"))
        where = format_locator((*steps, "blob"))
        if not is_media(media_type) and (
            file := binary_file(
                resource.get("blob"), where, Source.RETRIEVED_DOCUMENT, media_type, declared=True
            )
        ):
            files.append(file)
    return files


def _add_message(
    completion: Completion, message: dict[str, Any], prefix: tuple[Step, ...] = ()
) -> list[Attachment]:
    """Adds what one message gives to be read to ``completion``; returns its files read as binary."""
    completion.add_read_content(result_parts(message, prefix))
    files = binary_resources(message, prefix)
    completion.attachments += files
    if "error" in message or as_dict(message.get("result")).get("isError") is True:
        completion.stop_reason = "error"
    return files


MCP_CASED_KEYS = frozenset(
    {
        "structuredContent",
        "isError",
        "inputSchema",
        "outputSchema",
        "resourceTemplates",
        "systemPrompt",
        "mimeType",
    }
)
"""The camelCase fields this dialect reads: a key holding no capital, escape or letter outside ASCII is
read as one of them by a case-insensitive reader (a Go client) only if it spells one in lower case
(``structuredcontent``)."""


class MCP(Dialect):
    name = "mcp"
    CASED_KEYS = MCP_CASED_KEYS

    def __init__(self, request_id: Any = None) -> None:
        super().__init__()
        self.request_id = request_id

    def _request_from(self, document: Any) -> RequestView:
        view = RequestView(dialect=self.name)
        for prefix, message in _messages(document):
            params = as_dict(message.get("params"))
            if not is_tool_call(message):
                # Another method's params (another JSON-RPC protocol's too: A2A's message/send) are read
                # as the generic reader reads a body: every string in them is the user's.
                view.parts += [
                    Part(Source.USER, text, where)
                    for where, text in walk_strings(message.get("params"), (*prefix, "params"))
                ]
                continue
            call = ToolCall(
                _request_id(message),
                as_str(params.get("name")) or "",
                canonical_arguments(params.get("arguments")),
                format_locator((*prefix, "params")),
            )
            view.tool_calls.append(call)
            arguments = (*prefix, "params", "arguments")
            for part in read_call_input(view, params.get("arguments"), arguments, call):
                if len(part.text) >= MIN_ENCODED_FILE and (
                    file := binary_file(part.text, part.where, Source.ASSISTANT, None)
                ):
                    view.attachments.append(file)
        return view

    def _completion_from(self, document: Any) -> Completion:
        completion = Completion()
        for prefix, message in _messages(document):
            _add_message(completion, message, prefix)
        return completion

    def _drop_calls(self, document: Any, dropped: list[ToolCall], notice: str | None) -> None:
        if notice is None:
            return
        for _, message in _messages(document):
            content = as_dict(message.get("result")).get("content")
            if isinstance(content, list):
                content.append({"type": "text", "text": notice})

    def error_response(self, status: int, message: str, code: str) -> ErrorResponse:
        """A JSON-RPC error answering the request. Sent with HTTP 200: MCP clients surface a JSON-RPC
        error's message to the caller, while an HTTP error status reaches it without the body."""
        return json_error(200, jsonrpc_error(self.request_id, status, message, code))

    def stream_session(self, filters: StreamFilters | None = None) -> StreamSession:
        return MCPStreamSession(filters)


class MCPStreamSession(PerEventStreamSession):
    """Each event carries one complete JSON-RPC message, so each text is filtered within its event, and
    each file read as binary is read before its event is sent."""

    CASED_KEYS = MCP_CASED_KEYS

    def __init__(self, filters: StreamFilters | None = None) -> None:
        super().__init__(filters)
        self._withheld: tuple[SSEEvent, dict[tuple[Step, ...], str]] | None = None
        """The event last read whose messages a file refuses (``StreamFilters.file_reader``), each with
        what the agent reads instead. Held by the event itself, not its id: an event that failed before it
        was sent leaves nothing that a later one, made where it stood in memory, takes for its own."""

    def _observe(self, event: SSEEvent, payload: Any) -> None:
        withheld: dict[tuple[Step, ...], str] = {}
        for prefix, message in _messages(payload):
            notice = self._refusing(_add_message(self._completion, message, prefix))
            if notice is not None:
                withheld[prefix] = notice
        self._withheld = (event, withheld) if withheld else None

    def _texts(self, payload: Any) -> list[tuple[str, str]]:
        return [
            (part.where, part.text)
            for prefix, message in _messages(payload)
            for part in result_parts(message, prefix)
        ]

    def _transform(self, event: SSEEvent, payload: Any) -> list[bytes]:
        """Read content is whole in its event: it is quarantined as a JSON answer's would be, then
        redacted. A message a file in it refuses is answered with a JSON-RPC error instead, as a JSON
        answer is withheld whole."""
        withheld = self._withheld[1] if self._withheld is not None and self._withheld[0] is event else {}
        self._withheld = None
        changed = bool(withheld)
        for prefix, message in _messages(payload):
            notice = withheld.get(prefix)
            if notice is not None:
                payload = set_at(
                    payload,
                    format_locator(prefix),
                    jsonrpc_error(message.get("id"), 502, notice, BLOCKED_CODE),
                )
                continue
            if self.filters.content_filter is None and self.filters.text_filter is None:
                continue
            for part in result_parts(message, prefix):
                payload = set_at(payload, part.where, self._read_content_out(part))
                changed = True
        return [rewritten(event, payload)] if changed else [event.raw]
