"""API dialects: bytes of a model or tool API call in, the neutral exchange (``proxy.exchange``) out,
and back. A dialect is chosen from the method, path and body shape, never from the host name, so
OpenAI-compatible servers on any host are read as OpenAI.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

from proxy.detectors.credential_channel import is_model_provider
from proxy.dialects.anthropic import Anthropic
from proxy.dialects.base import Dialect, ErrorResponse, as_dict, body_text, is_text
from proxy.dialects.bedrock_converse import BedrockConverse
from proxy.dialects.gemini import Gemini
from proxy.dialects.generic import Generic
from proxy.dialects.mcp import MCP, holds_jsonrpc
from proxy.dialects.openai_chat import OpenAIChat
from proxy.dialects.openai_responses import OpenAIResponses
from proxy.dialects.stored import Stored, is_stored_route
from proxy.dialects.stream import (
    DropNotice,
    StreamFilters,
    StreamSession,
    TextFilter,
    TextFilterFactory,
    ToolDecision,
    ToolGate,
    chain_filters,
)
from proxy.egress import HostPattern, PatternKind, canonical_host
from proxy.exchange import RequestView
from proxy.staged import UploadStep
from proxy.wire import jsontext
from proxy.wire.eventstream import EVENTS, NAMED_CHUNKS
from proxy.wire.multipart import boundary_of

__all__ = [
    "MCP",
    "Anthropic",
    "BedrockConverse",
    "Dialect",
    "DropNotice",
    "ErrorResponse",
    "Gemini",
    "Generic",
    "OpenAIChat",
    "OpenAIResponses",
    "Stored",
    "StreamFilters",
    "StreamSession",
    "TextFilter",
    "TextFilterFactory",
    "ToolDecision",
    "ToolGate",
    "ToolServer",
    "by_name",
    "chain_filters",
    "continued_by_route",
    "detect",
    "is_event_stream",
    "is_text",
    "jsonrpc_messages",
    "read_batch_file",
    "staged_upload",
    "tool_server_route",
]

_AZURE_DEPLOYMENT = re.compile(r"/openai/deployments/([^/]+)/chat/completions\Z")
_RESPONSES = re.compile(r"/responses(?:/resp_[^/]+|/compact)?\Z")
"""A Responses request, a stored response, and a compaction, which hands back what it compacts (a stored
response it continues among it) as one item for a later request's input."""
_GEMINI = re.compile(
    r"(?:/(?:models|tunedModels|endpoints)/([^:]+))?:(generateContent|streamGenerateContent)\Z"
)
"""Gemini's methods on any resource: a base or tuned model (``tunedModels/x``), a model's version
(``models/g/versions/1``), a Vertex AI endpoint serving one (``endpoints/123``)."""
_VERTEX_ANTHROPIC = re.compile(r"/publishers/anthropic/models/([^/:]+):(?:rawPredict|streamRawPredict)\Z")
"""Claude on Vertex AI: a Messages body (``anthropic_version`` in it), the model in the path."""
_BEDROCK_INVOKE = re.compile(r"/model/(.+)/invoke(-with-response-stream)?\Z")
"""A model on Amazon Bedrock, whose body is the model provider's own (the model id may be an ARN, its
slashes percent-encoded)."""
_BEDROCK_CONVERSE = re.compile(r"/model/(.+)/(converse(?:-stream)?)\Z")
"""Bedrock's Converse API, one format for every model it serves (the model id as in ``_BEDROCK_INVOKE``)."""
_PROVIDER_API = re.compile(r"(?:/openai|/resumable(?=/upload/))?/(?:upload/)?v1(?:alpha|beta)?\d*/|/openai/")
"""The prefix of a provider's model API: OpenAI's and Anthropic's ``/v1``, Gemini's ``/v1beta`` (and its
uploads' ``/upload/v1beta`` and ``/resumable/upload/v1beta``), Vertex AI's ``/v1`` or ``/v1beta1``, Azure
OpenAI's ``/openai``."""
_UPLOAD = re.compile(r"/uploads/([^/]+)/(parts|complete)\Z")
_GOOGLE_UPLOAD = re.compile(r"(?:/resumable)?/upload/")
"""Where Google's APIs take uploads (Gemini's files, Cloud Storage's objects, Drive's files): each session
of their resumable protocols is named by the ``upload_id`` query parameter."""
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*\Z", re.IGNORECASE)
_MAY_NAME_JSONRPC = re.compile("[jJ][sS\u017f][oO][nN][rR][pP][cC]|\\\\u")
"""Text in which some key may read as ``jsonrpc``: spelled in any case (servers in Go match keys
regardless of case, and fold the long s to "s"), or with an escape."""
_NAMES: dict[str, type[Dialect]] = {
    dialect.name: dialect
    for dialect in (OpenAIChat, OpenAIResponses, Anthropic, BedrockConverse, Gemini, MCP, Stored, Generic)
}


def detect(method: str, path: str, content_type: str | None, body: bytes) -> Dialect:
    """The dialect of a request. ``path`` may carry a query string; ``body`` is decoded content. The
    route is read percent-decoded, as the servers that route it read it (``/chat/complet%69ons``).

    A model API's route decides: a body shaped otherwise (a ``jsonrpc`` key) does not make the model's
    answer unread. Elsewhere a body is JSON-RPC when it parses as one to a server (``jsonrpc_messages``),
    and then read as MCP: a reader that knows less of it would gate no tool call in it. A multipart
    body's parts are those of the boundary ``content_type`` names."""
    route = _route(path)
    boundary = boundary_of(content_type)
    model_api = _model_api(route, body, boundary)
    if model_api is not None:
        return model_api
    messages = jsonrpc_messages(body)
    if messages is not None:
        return MCP(request_id=as_dict(messages[0]).get("id") if messages else None)
    if method.upper() == "GET" and route.endswith("/mcp"):
        # The stream an MCP client opens for server-initiated messages: no body to recognise it by.
        return MCP()
    return Generic(boundary)


_KEPT_BY_ROUTE = (
    ("conversation", re.compile(r"/conversations/([^/]+)(?:/items(?:/[^/]+)?)?\Z")),
    ("container", re.compile(r"/containers/([^/]+)(?:/files(?:/[^/]+(?:/content)?)?)?\Z")),
    ("file", re.compile(r"/files/([^/:]+)(?:/content|:download)?\Z")),
)
"""What a provider keeps and hands back by its id in the route: a conversation and its items, a
container and the files the code run in it wrote (their list, each one, its content), a file of the
Files API (its metadata, its content; Gemini's ``:download``), where Anthropic's code execution keeps what
its code wrote, as a reference to it in a body names it (``proxy.dialects.filerefs``)."""


def continued_by_route(method: str, path: str) -> dict[str, str]:
    """What a provider API's route reads or adds to that the provider keeps (``_KEPT_BY_ROUTE``), which
    hands whoever reads it what it holds, a withheld part among it. Deleting it continues nothing."""
    route = _route(path)
    if method.upper() not in ("GET", "POST") or not _PROVIDER_API.match(route):
        return {}
    for kept, named in _KEPT_BY_ROUTE:
        found = named.search(route)
        if found is not None:
            return {kept: found.group(1)}
    return {}


@dataclass(frozen=True, slots=True)
class ToolServer:
    """An MCP server of the agent's a role names (``roles.NAME.tools.mcp_servers``): ``host/route``, a
    host name or address (ports 443 and 80 unless it names one, as egress entries) and the route its
    transport serves, with every route under it (``tools.internal/mcp`` serves ``/mcp`` and
    ``/mcp/messages``; ``tools.internal/`` every route of the host)."""

    text: str
    host: HostPattern
    route: str

    @classmethod
    def parse(cls, text: str) -> ToolServer:
        """Raises ValueError naming what is wrong: no route, a wildcard or network, a model provider's
        host (its ``/mcp`` is the provider's, which hands what it gets to the model), a dot segment."""
        authority, slash, path = text.strip().partition("/")
        if not slash or not authority:
            raise ValueError(f"{text!r} is not host/route (as in tools.internal/mcp)")
        host = HostPattern.parse(authority)
        if (
            host.kind is PatternKind.SUBDOMAIN
            or host.kind is PatternKind.ANY_PUBLIC
            or (host.network is not None and host.network.num_addresses != 1)
        ):
            raise ValueError(f"{text!r} names more than one host: name each MCP server")
        if host.kind is PatternKind.HOST and is_model_provider(host.name):
            raise ValueError(f"{text!r} is a model provider's host, never the agent's own MCP server")
        route = _route("/" + path)
        if _dot_segments(route):
            raise ValueError(f"{text!r} has a '.' or '..' step")
        return cls(text.strip(), host, route)

    def serves(self, host: str, port: int, path: str) -> bool:
        """Whether a request to ``path`` on ``host:port`` goes to this server: its route or one under it,
        spelled with no dot segment a server would resolve elsewhere."""
        route = _route(path)
        return (
            self.host.port_matches(port)
            and self.host.names(canonical_host(host))
            and not _dot_segments(route)
            and (route == self.route or route.startswith(self.route + "/"))
        )


def tool_server_route(servers: Collection[ToolServer], host: str, port: int, path: str) -> bool:
    """Whether a request to ``path`` on ``host:port`` is an agent's call to its own MCP server, which
    egressguard hands the vault's values instead of its placeholders: one of the ``servers`` its role
    names, none other. Decided by where the request goes, never by what its body looks like: a JSON-RPC
    body anywhere else is data leaving like any other."""
    return any(server.serves(host, port, path) for server in servers)


def _dot_segments(route: str) -> bool:
    steps = route.split("/")
    return "." in steps or ".." in steps


def _route(path: str) -> str:
    return unquote(path.split("?", 1)[0]).rstrip("/")


def _model_api(route: str, body: bytes, boundary: bytes | None = None) -> Dialect | None:
    """The model API a route names, if any (``/messages`` names Anthropic's only for a Messages body); a
    route that stores model input for the provider to run or read later is read by ``Stored``, a form's
    parts by the ``boundary`` its Content-Type names."""
    if route.endswith("/chat/completions"):
        azure = _AZURE_DEPLOYMENT.search(route)
        return OpenAIChat(model_hint=azure.group(1) if azure else None)
    if _RESPONSES.search(route):
        return OpenAIResponses()
    gemini = _GEMINI.search(route)
    if gemini:
        model = gemini.group(1)
        return Gemini(model_hint=model, streaming=gemini.group(2) == "streamGenerateContent")
    vertex = _VERTEX_ANTHROPIC.search(route)
    if vertex:
        return Anthropic(model_hint=vertex.group(1))
    converse = _BEDROCK_CONVERSE.search(route)
    if converse:
        streaming = converse.group(2) == "converse-stream"
        framing = EVENTS if streaming else None
        return BedrockConverse(model_hint=converse.group(1), streaming=streaming, framing=framing)
    bedrock = _BEDROCK_INVOKE.search(route)
    if bedrock:
        return _bedrock_invoke(bedrock.group(1), bedrock.group(2) is not None, body)
    if route.endswith("/messages"):
        # Many APIs have a /messages path; max_tokens is required by the Messages API and rare elsewhere.
        # A message endpoint of MCP's HTTP+SSE transport is one too: there a JSON-RPC body is MCP's.
        if route.endswith("/v1/messages") and b'"max_tokens"' in body:
            return Anthropic()
        if jsonrpc_messages(body) is None and "max_tokens" in _top_level_keys(body):
            return Anthropic()
    # Only a provider API's own routes store model input: many other APIs have a path ending in /files
    # or /threads, and a JSON-RPC body is MCP's whatever path its server chose.
    if _PROVIDER_API.match(route) and is_stored_route(route) and jsonrpc_messages(body) is None:
        return Stored(route, _embedded_route, boundary)
    return None


def staged_upload(
    path: str, upload_command: str = "", upload_offset: str = "", content_range: str = ""
) -> UploadStep | None:
    """What a request does to an upload the provider assembles from pieces: on a provider API's route, an
    OpenAI Upload's (``/uploads/{id}/parts`` adds a part, ``/uploads/{id}/complete`` joins them); of an
    upload session (``upload_id`` in the query), a chunk of either of Google's resumable protocols:
    ``X-Goog-Upload-Command`` at ``X-Goog-Upload-Offset``, or ``Content-Range`` (``uploadType=resumable``,
    Cloud Storage's XML API), or on a Google upload route (``/upload/...``, ``/resumable/upload/...``) the
    whole file in one request. None for any other request, and for one that sends no
    bytes and finalizes nothing (a ``start``, a ``query``, a ``bytes */*`` status check)."""
    route = _route(path)
    found = _UPLOAD.search(route)
    if found is not None and _PROVIDER_API.match(route):
        return UploadStep(found.group(1), completes=found.group(2) == "complete")
    uploads = parse_qs(path.partition("?")[2]).get("upload_id")
    # Cloud Storage's XML API takes a session's chunks on the object's own path: Google's headers say so.
    if not uploads or not (_GOOGLE_UPLOAD.match(route) or upload_command.strip() or content_range.strip()):
        return None
    # Servers differ in which of two ids they take, and a request that both protocols would read otherwise
    # is read by neither: a step no kept chunks complete, refused where enforced.
    unreadable = UploadStep(",".join(sorted(set(uploads))), completes=True, offset=-1)
    if len(set(uploads)) > 1 or (upload_command.strip() and content_range.strip()):
        return unreadable
    if upload_command.strip():
        commands = {command.strip().lower() for command in upload_command.split(",")}
        # A chunk may finalize the upload itself, or a bare finalize with no bytes may follow the last one.
        if not commands & {"upload", "finalize"}:
            return None
        offset = int(upload_offset) if upload_offset.strip().isdigit() else -1
        return UploadStep(uploads[0], completes="finalize" in commands, offset=offset)
    if not content_range.strip():
        return UploadStep(uploads[0], completes=True, offset=0)  # the whole file in one request
    span = _CONTENT_RANGE.match(content_range.strip())
    if span is None:
        return unreadable
    first, last, total = span.groups()
    if first is None:
        # ``bytes */N`` finalizes a file of N bytes whose chunks were all sent; ``bytes */*`` asks how far.
        return None if total == "*" else UploadStep(uploads[0], completes=True, offset=int(total))
    return UploadStep(uploads[0], completes=total != "*" and int(last) + 1 == int(total), offset=int(first))


def read_batch_file(content: bytes) -> RequestView:
    """A file read as a batch input file sent whole to ``/v1/files`` is: line by line, each line as the
    request it names."""
    return Stored("/v1/files", _embedded_route).parse_request(content)


def _embedded_route(path: str, body: bytes) -> Dialect | None:
    """The model API of a request a batch names by its path (``/v1/responses``), stored requests aside."""
    dialect = _model_api(_route(path), body)
    return None if isinstance(dialect, Stored) else dialect


def _bedrock_invoke(model: str, streaming: bool, body: bytes) -> Dialect | None:
    """The API whose format a model's own body on Bedrock's ``invoke`` is in, where egressguard knows it,
    from the model id or the body's keys: Claude's is the Messages API's, Amazon Nova's
    (``schemaVersion: messages-v1``) that of Converse."""
    if "anthropic." in model:
        return Anthropic(model_hint=model)
    framing = NAMED_CHUNKS if streaming else None
    if "amazon.nova" in model:
        return BedrockConverse(model_hint=model, streaming=streaming, framing=framing)
    keys = _top_level_keys(body)
    if "anthropic_version" in keys:
        return Anthropic(model_hint=model)
    if "schemaVersion" in keys:
        return BedrockConverse(model_hint=model, streaming=streaming, framing=framing)
    return None


def _top_level_keys(body: bytes) -> Collection[str]:
    """The keys of a body that is a JSON object, however each is spelled (``max\\u005ftokens`` is
    ``max_tokens`` to the server); none for any other body."""
    document = _parsed(body)
    return document.keys() if isinstance(document, dict) else ()


def jsonrpc_messages(body: bytes) -> list[Any] | None:
    """The messages of a body a JSON-RPC server reads as JSON-RPC: an object one of whose keys is
    ``jsonrpc`` to a server matching keys regardless of case, whatever its value, or a batch holding one
    (each of its messages is then read so). None for any other body. A body that looks like JSON and may
    name ``jsonrpc`` (the word in any case, or any escape, which may spell it) that Python's reader cannot
    read (nested deeper than it goes, cut short) may be JSON-RPC to a server whose reader reads it: no
    messages, so that MCP's reader fails on it and it is refused where enforced
    (``inspection.unreadable_json``), not read as text whose tool call no gate sees."""
    text = body_text(body)
    if not _MAY_NAME_JSONRPC.search(text):
        return None
    try:
        document = jsontext.loads(text)
    except (ValueError, RecursionError):
        return [] if text.lstrip("\ufeff \t\r\n")[:1] in ("{", "[") else None
    if not holds_jsonrpc(document):
        return None
    return document if isinstance(document, list) else [document]


def _parsed(body: bytes) -> Any:
    if not body.strip():
        return None
    try:
        return jsontext.loads(body_text(body))
    except (ValueError, RecursionError):
        return None


def by_name(name: str) -> Dialect:
    """A dialect from its ``name`` (as recorded in audit events); unknown names give the generic one."""
    return _NAMES.get(name, Generic)()


def is_event_stream(content_type: str | None) -> bool:
    """Whether a response with this content type is SSE and needs a stream session."""
    return (content_type or "").split(";", 1)[0].strip().lower() == "text/event-stream"
