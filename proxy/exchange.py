"""The neutral model of one agent turn, whatever API dialect carried it.

Dialects (``proxy.dialects``) turn request and response bytes into these objects; detectors read only
these objects, never raw bodies.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum


class Source(StrEnum):
    """Where a piece of prompt text came from: it decides which detectors see it and how findings are
    attributed (an injection in a tool result is indirect)."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL_RESULT = "tool_result"
    RETRIEVED_DOCUMENT = "retrieved_document"
    TOOL_DESCRIPTION = "tool_description"


@dataclass(slots=True)
class Part:
    """One piece of text in a request. ``where`` is a JSON-path-like locator into the body
    (``messages[3].content[0].text``) used in findings and by rewrites."""

    source: Source
    text: str
    where: str
    tool_name: str | None = None
    tool_call_id: str | None = None
    encoded: str | None = None
    """For the text of a file carried encoded (``proxy.dialects.attachments``): what stands before its
    encoding at ``where`` (a ``data:`` URL's head, or nothing for bare base64). A rewrite writes the text
    back encoded so (``written``)."""

    def written(self, text: str) -> str:
        """``text`` as it is written at ``where`` in place of this part's."""
        return written(self.encoded, text)


def written(head: str | None, text: str) -> str:
    """``text`` as a file encoded after ``head`` (``Part.encoded``) is written: in base64 after it, a
    percent-encoded ``data:`` URL's head saying so; as it is where nothing was encoded (None)."""
    if head is None:
        return text
    if head and not head.lower().endswith(";base64,"):
        head = head[:-1] + ";base64,"
    return head + base64.b64encode(text.encode("utf-8", "surrogateescape")).decode("ascii")


@dataclass(slots=True)
class ToolCall:
    id: str | None
    name: str
    arguments: str
    where: str
    ran_upstream: bool = False
    """The API ran it before answering (a server tool, a remote MCP server's tool): withholding it keeps
    the call and what it returned from the agent, it does not prevent it."""


@dataclass(frozen=True, slots=True)
class DeclaredTool:
    """A tool the request lets the API run itself (a server tool, an MCP server): named as its calls are,
    with the MCP server's address or the provider's connector or tunnel it is, and the tools the request
    allows of it (None: all of them)."""

    name: str
    where: str
    server_url: str | None = None
    allowed_tools: tuple[str, ...] | None = None
    mcp_server: bool = False
    connector: str | None = None
    """The id of a provider-hosted connector (Responses ``connector_id``) or tunnel (``tunnel_id``) the
    API reaches instead of a URL."""
    asks_approval: bool = False
    """The API asks the agent before each call (Responses ``require_approval: "always"``)."""
    approval_asked_for: tuple[str, ...] = ()
    """The tools the API asks the agent about before each of their calls (those a Responses
    ``require_approval`` filter names under ``always``)."""


@dataclass(frozen=True, slots=True)
class Fetch:
    """An address the API fetches for the agent before it answers (an image or a file given by URL, a
    domain a server tool may fetch from): a destination of the agent's, though the API reaches it."""

    where: str
    url: str | None
    """None: whatever address the model picks (a web search or fetch tool no domain filter limits)."""
    what: str
    """What is fetched there, for the finding's signal (``image``, ``file``, ``web_fetch domain``)."""


@dataclass(slots=True)
class Usage:
    tokens_in: int | None = None
    tokens_out: int | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file carried encoded that does not read as text, read as binary content by whom it reaches; or
    one that does not decode (``undecodable``), of which nothing is read."""

    where: str
    content: bytes
    source: Source
    """Who wrote what it holds, as for a part: a tool's result, or a retrieved document."""
    declared_text: str | None = None
    """Its text where its media type says it is text and a few bytes (NULs, UTF-16) made it read as
    binary: read besides its printable runs."""
    undecodable: str | None = None
    """Why it does not decode, where it does not (``content`` is then empty): a lenient decoder may read
    what no detector saw."""


@dataclass(slots=True)
class RequestView:
    dialect: str
    model: str | None = None
    parts: list[Part] = field(default_factory=list)
    tools_offered: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    declared_tools: list[DeclaredTool] = field(default_factory=list)
    """Tools the request lets the API run before it answers: gated here, their calls cannot be."""
    fetches: list[Fetch] = field(default_factory=list)
    """Addresses the API fetches for the agent before it answers: checked as the agent's destinations."""
    stream: bool = False
    parse_error: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    """Files the request carries encoded that do not read as text (read as binary content), or that do
    not decode."""
    continues: dict[str, str] = field(default_factory=dict)
    """What the provider keeps from earlier turns that this request continues, by the field naming it: a
    stored response (``previous_response_id``) or a conversation (``conversation``), whose whole content
    the provider hands the model, or a container the code the API runs works in (Anthropic's
    ``container``, a Responses code interpreter's ``tools[0].container``), which keeps what earlier code
    wrote there."""
    files_read: dict[str, str] = field(default_factory=dict)
    """The files the provider keeps that this request has it read by reference, by the field naming
    each (``proxy.dialects.filerefs``): the provider hands their whole content to the model, or to the
    store, container or job the request fills."""
    repeated_fields: list[list[tuple[str, int, int]]] = field(default_factory=list)
    """For each form field the body names more than once (``a=1&a=2`` in a urlencoded body, parts of one
    name in a multipart one), its values in order, each as the locator of the part holding it and its span
    in that part's text: the server reads them one after another (``proxy.wire.forms``)."""
    tool_server: bool = False
    """The request is an agent's message to its own MCP server: read as MCP and on a route of MCP's
    transports (``proxy.dialects.tool_server_route``). In vault mode it gets the vault's values where
    every other request gets placeholders."""
    kept: bool = False
    """The provider keeps this exchange for a later request to continue (the Responses API's ``store``)."""


@dataclass(slots=True)
class TextSegment:
    text: str
    where: str
    reasoning: bool = False
    """Not the model's answer: its reasoning (thinking blocks, reasoning fields), or content it or the
    agent reads (``Completion.add_read_content``). Scanned and redacted like any text, but not the answer
    a refusal is judged on."""
    encoded: str | None = None
    """As ``Part.encoded``: the text of a file, written back encoded (``written``)."""


@dataclass(slots=True)
class Completion:
    model: str | None = None
    text: list[TextSegment] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    stop_reason: str | None = None
    parse_error: str | None = None
    response_id: str | None = None
    """The id the provider keeps the answer under, for a later request to continue from."""
    containers: list[str] = field(default_factory=list)
    """The containers the answer's code ran in, which keep what it wrote for a later request to run in."""
    files_written: list[str] = field(default_factory=list)
    """The files the answer's code wrote (Anthropic's code execution), which the Files API hands back."""
    # Response text the agent will read as input rather than as model output (MCP tool results and tool
    # descriptions), with its source; the same strings are also in ``text`` so redaction covers them.
    parts: list[Part] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    """Files read as input that do not read as text (an MCP resource's binary blob): read as binary; or
    that do not decode."""

    def add_read_content(self, parts: Iterable[Part]) -> None:
        """Adds text that came in the answer to be read as input (a tool's result), both as read content
        and as text, so that redaction and quarantine reach it."""
        for part in parts:
            self.parts.append(part)
            self.text.append(TextSegment(part.text, part.where, reasoning=True, encoded=part.encoded))

    @property
    def full_text(self) -> str:
        return "".join(segment.text for segment in self.text if not segment.reasoning)
