"""API dialects: bytes of a model or tool API call in, the neutral exchange (``proxy.exchange``) out,
and back. A dialect is chosen from the method, path and body shape, never from the host name, so
OpenAI-compatible servers on any host are read as OpenAI.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from proxy.dialects.anthropic import Anthropic
from proxy.dialects.base import Dialect, ErrorResponse, is_text
from proxy.dialects.gemini import Gemini
from proxy.dialects.generic import Generic
from proxy.dialects.mcp import MCP, is_jsonrpc
from proxy.dialects.openai_chat import OpenAIChat
from proxy.dialects.openai_responses import OpenAIResponses
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
from proxy.wire import jsontext

__all__ = [
    "MCP",
    "Anthropic",
    "Dialect",
    "DropNotice",
    "ErrorResponse",
    "Gemini",
    "Generic",
    "OpenAIChat",
    "OpenAIResponses",
    "StreamFilters",
    "StreamSession",
    "TextFilter",
    "TextFilterFactory",
    "ToolDecision",
    "ToolGate",
    "by_name",
    "chain_filters",
    "detect",
    "is_event_stream",
    "is_text",
]

_AZURE_DEPLOYMENT = re.compile(r"/openai/deployments/([^/]+)/chat/completions\Z")
_RESPONSES = re.compile(r"/responses(?:/resp_[^/]+)?\Z")
_GEMINI = re.compile(r"/models/([^/:]+):(generateContent|streamGenerateContent)\Z")
_NAMES: dict[str, type[Dialect]] = {
    dialect.name: dialect for dialect in (OpenAIChat, OpenAIResponses, Anthropic, Gemini, MCP, Generic)
}


def detect(method: str, path: str, content_type: str | None, body: bytes) -> Dialect:
    """The dialect of a request. ``path`` may carry a query string; ``body`` is decoded content. The
    route is read percent-decoded, as the servers that route it read it (``/chat/complet%69ons``)."""
    route = unquote(path.split("?", 1)[0]).rstrip("/")
    if b'"jsonrpc"' in body:
        try:
            document = jsontext.loads(body)
        except (ValueError, RecursionError):
            document = None
        if is_jsonrpc(document):
            first = document[0] if isinstance(document, list) else document
            return MCP(request_id=first.get("id"))
    if method.upper() == "GET" and route.endswith("/mcp"):
        # The stream an MCP client opens for server-initiated messages: no body to recognise it by.
        return MCP()
    if route.endswith("/chat/completions"):
        azure = _AZURE_DEPLOYMENT.search(route)
        return OpenAIChat(model_hint=azure.group(1) if azure else None)
    if _RESPONSES.search(route):
        return OpenAIResponses()
    if route.endswith("/messages") and _names_max_tokens(body):
        # Many APIs have a /messages path; max_tokens is required by the Messages API and rare elsewhere.
        return Anthropic()
    gemini = _GEMINI.search(route)
    if gemini:
        return Gemini(model_hint=gemini.group(1), streaming=gemini.group(2) == "streamGenerateContent")
    return Generic()


def _names_max_tokens(body: bytes) -> bool:
    """Whether a body names ``max_tokens`` at its top level, however its key is spelled (``max\\u005ftokens``
    is the same key to the server)."""
    if b'"max_tokens"' in body:
        return True
    if b"\\u" not in body:
        return False
    try:
        document = jsontext.loads(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(document, dict) and "max_tokens" in document


def by_name(name: str) -> Dialect:
    """A dialect from its ``name`` (as recorded in audit events); unknown names give the generic one."""
    return _NAMES.get(name, Generic)()


def is_event_stream(content_type: str | None) -> bool:
    """Whether a response with this content type is SSE and needs a stream session."""
    return (content_type or "").split(";", 1)[0].strip().lower() == "text/event-stream"
