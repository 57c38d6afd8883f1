"""Reads every request and response through its API dialect and applies what the detectors decide.

Requests are parsed into the neutral exchange and inspected before they leave; JSON responses are
inspected and, in enforce mode, rewritten; SSE responses are streamed through the dialect's incremental
session, never buffered. Nothing here raises into mitmproxy: a body that cannot be read is recorded on
the turn and passed through as it is.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import hashlib
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Set
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial, wraps
from pathlib import Path

import structlog
from mitmproxy import ctx, http
from mitmproxy.net.http import status_codes
from mitmproxy.websocket import WebSocketMessage

from addons.gate.turns import answer_in_dialect, policy_of, pretty_host, refuse_without_state, turn_of
from addons.wire.fields import drop_fields
from addons.wire.wsclose import UPSTREAM_CLOSING, LastWords, close_websocket
from proxy.config.policy import Policy
from proxy.dialects import (
    MCP,
    Dialect,
    Generic,
    StreamFilters,
    StreamSession,
    continued_by_route,
    detect,
    is_event_stream,
    is_text,
    read_batch_file,
    staged_upload,
    tool_server_route,
)
from proxy.dialects.base import (
    BLOCKED_CODE,
    ParsedBody,
    body_text,
    load_json,
    load_json_with_shadowed,
    readable_text,
)
from proxy.dialects.generic import binary_parts
from proxy.dialects.locator import parse_locator
from proxy.dialects.messages import Sending
from proxy.dialects.readings import (
    DECLARED,
    FIRST_VALUE,
    FOLDED_KEYS,
    READINGS,
    SPELLED_TWICE,
    first_values,
    folded_keys,
    spelled_twice,
)
from proxy.dialects.socket_refusal import close_reason, realtime_error, speaks_realtime
from proxy.dialects.stored import carry
from proxy.dialects.stream import DUPLICATE_KEY_RULE, KEY_CASE_RULE, encode_json, sent_as
from proxy.exchange import Attachment, Completion, RequestView, Source
from proxy.inspection import MULTIPART_RULE, TurnInspector, block_message, inspection_threat, reading_threat
from proxy.model import Action, Decision, Finding, Severity, Threat
from proxy.runtime import Runtime
from proxy.scanning.residual import CONTEXT_CHARS
from proxy.scanning.rulepack import ScanTimeout
from proxy.staged import STAGED_FILE, StagedParts, UnseenPartError, UploadStep, named_parts
from proxy.state import StateUnavailable
from proxy.turn import Turn
from proxy.wire import jsontext
from proxy.wire.charsets import (
    CHARSET_RULE,
    ORDER_MARK_BYTES,
    PART_ENCODING_RULE,
    ReadEveryWay,
    TextEncoding,
    UnreadableEncodingError,
    declared_charsets,
    labelled_utf8,
    marked_charset,
    part_readings,
    read_in,
    reads_as_utf8,
    reads_unknowably,
    text_encoding,
)
from proxy.wire.decoding import (
    BOMB_RATIO,
    BombError,
    DecodingError,
    OverCapError,
    StreamDecoder,
    UninspectableError,
    UnsupportedCodingError,
    decode_body,
    supported,
)
from proxy.wire.embedded import opened
from proxy.wire.eventstream import AwsFraming, EventStreamError, is_aws_event_stream
from proxy.wire.fieldbreaks import field_break, mend_field_breaks
from proxy.wire.multipart import body_framing_doubt, boundary_of, part_spans
from proxy.wire.sse import DEFAULT_MAX_EVENT_BYTES, encode_text
from proxy.wire.textframes import text_message

log = structlog.get_logger("egressguard")

DIALECT_KEY = "egressguard.dialect"
INSPECTOR_KEY = "egressguard.inspector"
SESSION_KEY = "egressguard.session"
RELAYED_UNREAD_KEY = "egressguard.inspect.relayed_unread"
"""A response relayed as it arrived in a coding that cannot be undone, where that is not enforced."""
READER_KEY = "egressguard.request_reader"
"""The dialect the request body was read with: its API's, or the generic reader where that cannot."""
PENDING_KEY = "egressguard.inspect.pending"
RELAYED_KEY = "egressguard.inspect.relayed_messages"
"""The upstream's messages a WebSocket flow injected to the agent and has not yet seen go by, in order."""
LAST_WORDS_KEY = "egressguard.inspect.last_words"
"""What goes to the agent before the upstream's close (``Inspect._end_messages``)."""
ALONGSIDE_THREADS = 4
"""Threads inspecting observed requests that have already left (they share one core's GIL)."""
LARGE_THREADS = 1
"""Threads inspecting large bodies (``OFF_LOOP_BYTES``). Inspection holds the GIL, so a second thread
adds nothing to what is inspected a second, and each thread that wants the GIL lengthens the event
loop's every wait for it: six large bodies at once in six threads held each small request of every other
agent for 20 s and more. Large bodies wait for each other instead."""
OVER_CAP_RULE = "inspection.decoded_over_cap"
BOMB_RULE = "inspection.decompression_bomb"
UNSUPPORTED_CODING_RULE = "inspection.unsupported_coding"
INSPECTION_FAILED_RULE = "inspection.failed"
NOT_UTF8_RULE = "inspection.not_utf8"
REASON_FIELD = ":reason"
"""The name a response's reason phrase is scanned under with its headers: no header can be named so."""
UNREADABLE_JSON_RULE = "inspection.unreadable_json"
UNREADABLE_ANSWER_RULE = "inspection.binary_answer"
UNREAD_ATTACHMENT_RULE = "inspection.attachment"
"""A file a request carries encoded (base64, a ``data:`` URL), or an answer gives to be read in a field
that holds base64, that does not decode: a lenient decoder may read what no detector saw."""
STAGED_UPLOAD_RULE = "inspection.staged_upload"
"""An upload's ``complete`` whose file egressguard cannot read whole (a part it did not see, or that
passed unread), or whose reading would rewrite a part that has already left."""
TEXT_ENCODING_KEY = "egressguard.inspect.text_encoding"
"""The encoding other than UTF-8 the request body came in (``as_utf8``), which a rewrite goes back in."""
OTHER_READINGS_KEY = "egressguard.inspect.other_readings"
"""The request as readers that read it otherwise read it (keys matched regardless of case, the charset
or part encodings it declares), by reading, where the request leaves as sent: inspected too."""
EVERY_READING_KEY = "egressguard.inspect.every_reading"
"""A request whose declared charset reads otherwise (``ReadEveryWay``): every reading is inspected, in
enforce mode too, and it is refused only where one finds what the policy acts on."""
OFF_LOOP_BYTES = 256 << 10
"""Bodies this large or larger are inspected in a worker thread (a 7.5 MB prompt takes seconds), as are
those whose ``inspection_weight`` is."""
SLOW_ON_LOOP_SECONDS = 0.1
"""CPU an inspection on the event loop may take before its agent's bodies go off the loop (``SlowAgents``):
an 8 KB prompt takes about a millisecond, 8 KB of documentation about two."""
SLOW_AGENT_SECONDS = 600.0
"""How long an agent whose body was slow to inspect has its bodies inspected off the event loop."""
SLOW_AGENTS_KEPT = 10_000
"""Agents marked slow that are remembered at once (agent names come from the policy; the cap is a bound)."""


def observes_only(policy: Policy) -> bool:
    """Nothing request inspection finds can change the request: every threat is observed, and a shared
    store that is down does not refuse turns either."""
    return policy.state.on_error != "closed" and not any(policy.enforces(threat) for threat in Threat)


async def request_inspected(flow: http.HTTPFlow) -> None:
    """Wait for request inspection started alongside the request (observe mode), if any."""
    pending = flow.metadata.pop(PENDING_KEY, None)
    if isinstance(pending, Future):
        await asyncio.wrap_future(pending)


def fail_open[Hook: Callable[..., None]](hook: Hook) -> Hook:
    """A detector bug must never take the proxy down: record it on the turn and carry on. What the hook
    was reading is then uninspected, so where the policy enforces a threat decided on a body's words it
    does not pass (``refuse_uninspected``: text crafted to make a detector fail, such as JSON nested
    deeper than a walker's recursion, would otherwise switch inspection off); elsewhere it passes, on the
    record. A shared store that is down where the policy says closed refuses the turn instead; a rule
    out of time that no reading settled is handled as a failure, with findings that say so
    (``refuse_timed_out``)."""

    @wraps(hook)
    def guarded(self: Inspect, flow: http.HTTPFlow, *args: object) -> None:
        try:
            hook(self, flow, *args)
        except StateUnavailable as error:  # only raised where state.on_error is closed
            turn = turn_of(flow)
            if turn is not None:
                refuse_without_state(flow, turn, error)
        except Exception as error:  # recorded; refused where a reading threat is enforced
            turn = turn_of(flow)
            if turn is not None and isinstance(error, ScanTimeout):
                turn.errors.append(f"inspect: {error} in {hook.__name__}")
                refuse_timed_out(flow, turn, policy_of(flow, self.runtime), hook.__name__)
            elif turn is not None:
                turn.errors.append(f"inspect: {type(error).__name__} in {hook.__name__}")
                refuse_uninspected(flow, turn, policy_of(flow, self.runtime), hook.__name__)
            # Rules out of time are named by their ids, never by the text they read.
            fields = {"timed_out": list(error.result.timed_out)} if isinstance(error, ScanTimeout) else {}
            log.error(
                "inspect.failed",
                hook=hook.__name__,
                error=type(error).__name__,
                at=raised_at(error),
                **fields,
            )

    return guarded  # type: ignore[return-value]


def raised_at(error: BaseException) -> str:
    """Where ``error`` was raised, as "package/module.py:line in function", so a failure can be traced in
    the code; never its message, which can quote the text that was read."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return "unknown"
    frame = frames[-1]
    return f"{'/'.join(Path(frame.filename).parts[-2:])}:{frame.lineno} in {frame.name}"


def refuse_uninspected(flow: http.HTTPFlow, turn: Turn, policy: Policy, hook: str) -> bool:
    """Where the policy enforces a threat decided on a body's words, what a failed hook left uninspected
    does not reach its receiver: a WebSocket message is dropped, a request refused (403), a whole answer
    replaced by a 502, and one whose head is on its way (or already relayed) cut by closing the
    connection. An ``inspection.failed`` finding records it. Whether it was refused."""
    threat = reading_threat(policy)
    if threat is None:
        return False
    finding = body_finding(
        INSPECTION_FAILED_RULE, f"{hook} failed: not inspected", "inspection", threat, enforced=True
    )
    turn.add(finding)
    turn.escalate(Decision.BLOCKED)
    response = flow.response
    if flow.websocket is not None and flow.websocket.messages:
        refuse_message(flow, turn, finding, flow.websocket.messages[-1])
    elif response is None:
        flow.response = answer_in_dialect(
            flow.request, 403, block_message(finding, turn.event_id), BLOCKED_CODE
        )
    elif response.timestamp_end is not None and not response.stream:
        flow.response = answer_in_dialect(
            flow.request, 502, block_message(finding, turn.event_id), BLOCKED_CODE
        )
    elif flow.killable:
        flow.kill()
    return True


def refuse_message(flow: http.HTTPFlow, turn: Turn, finding: Finding, message: WebSocketMessage) -> None:
    """A WebSocket message is not delivered, for ``finding``, and the agent is told so as its protocol
    tells of an error (``proxy.dialects.socket_refusal``): a Realtime ``error`` event in the refused
    message's place, else the connection closed with the refusal as its reason."""
    message.drop()
    tell_refused(flow, turn, finding, message.text if message.from_client and message.is_text else None)


def tell_refused(flow: http.HTTPFlow, turn: Turn, finding: Finding, refused: str | None) -> None:
    """The agent is told that what it sent (the client event ``refused``) or what the upstream sent it
    was refused for ``finding``: see ``refuse_message``."""
    if not speaks_realtime(flow.request.path):
        close_websocket(flow, reason=close_reason(finding.threat, finding.rule, turn.event_id))
        return
    error = realtime_error(block_message(finding, turn.event_id), BLOCKED_CODE, refused)
    Relayed.of(flow).coming.append(error)
    ctx.master.commands.call("inject.websocket", flow, True, error, True)


def not_text(inspector: TurnInspector, where: str) -> Finding:
    """The finding refusing a text message that what the proxy wrote into it (a secret restored from the
    vault that was not UTF-8) leaves with no UTF-8: no text message can carry it, and altered to fit, it
    would not be what was inspected."""
    signal = "a text message rewritten by the proxy is not UTF-8, which a text message carries only"
    threat = inspection_threat(inspector.policy)
    finding = body_finding(NOT_UTF8_RULE, signal, where, threat, enforced=True)
    inspector.turn.add(finding)
    inspector.turn.escalate(Decision.BLOCKED)
    return finding


def refuse_timed_out(flow: http.HTTPFlow, turn: Turn, policy: Policy, hook: str) -> None:
    """A rule ran out of time in a hook that did not settle it (its ``ScanTimeout`` left the hook): what
    the hook had still to read is unread, refused where a reading threat is enforced
    (``refuse_uninspected``), and the rules the budget saw run out are ``inspection.scan_timeout``
    findings where it was reading, enforced where it was refused. Where nothing refused it, an
    ``inspection.failed`` finding, not enforced, records that it passed unread."""
    refused = refuse_uninspected(flow, turn, policy, hook)
    inspector = flow.metadata.get(INSPECTOR_KEY)
    if isinstance(inspector, TurnInspector):
        inspector.settle_escaped_timeouts(reading_place(flow), refused=refused)
    if not refused:
        signal = f"{hook} failed: a rule ran out of time; passed unread"
        threat = inspection_threat(policy)
        turn.add(body_finding(INSPECTION_FAILED_RULE, signal, "inspection", threat, enforced=False))


def reading_place(flow: http.HTTPFlow) -> str:
    """Where a hook of ``flow`` was reading: its last WebSocket message, its response or its request."""
    if flow.websocket is not None and flow.websocket.messages:
        return message_place(flow)
    return "response" if flow.response is not None else "request"


@dataclasses.dataclass(slots=True)
class Relayed:
    """The upstream's messages a WebSocket flow held and let out later, injected to the agent."""

    coming: deque[bytes] = dataclasses.field(default_factory=deque)
    """Those not yet seen go by, in order."""
    closed: bool = False
    """The upstream closed: what was held goes before its close as its own last messages, not injected."""
    count: int = 0
    """Those seen: a message is named by its place among those the peers sent, which they are not."""

    @staticmethod
    def of(flow: http.HTTPFlow) -> Relayed:
        relayed = flow.metadata.get(RELAYED_KEY)
        if not isinstance(relayed, Relayed):
            relayed = flow.metadata[RELAYED_KEY] = Relayed()
        return relayed


def message_place(flow: http.HTTPFlow) -> str:
    """The locator of the flow's last WebSocket message, counted among the messages its peers sent."""
    assert flow.websocket is not None
    return f"websocket[{len(flow.websocket.messages) - 1 - Relayed.of(flow).count}]"


def coding_headers(message: http.Message) -> tuple[str | None, str]:
    """The ``Content-Encoding`` (None when absent) and ``Transfer-Encoding`` values, each header's fields
    joined as ``Headers.get`` joins them. Asked some five times a turn: each is two lookups in the index of
    the fields the proxy keeps (``addons.process.speedups``), where a walk of the fields lowered each name."""
    headers = message.headers
    content = headers.get_all("content-encoding")
    return (", ".join(content) if content else None), ", ".join(headers.get_all("transfer-encoding"))


def transfer_codings(message: http.Message) -> list[str]:
    """The transfer codings other than chunked (``Transfer-Encoding: gzip, chunked``): mitmproxy undoes
    chunked only, and a client that honours the rest (curl) would read text no detector saw."""
    return _listed_transfer_codings(coding_headers(message)[1])


def _listed_transfer_codings(value: str) -> list[str]:
    listed = (coding.strip().lower() for coding in value.split(","))
    return [coding for coding in listed if coding not in ("", "chunked", "identity")]


def codings(message: http.Message) -> str:
    """The codings to undo to read a body as its receiver does: its content codings, then its transfer
    codings, which were applied after them."""
    content, transfer = coding_headers(message)
    return ", ".join([content if content is not None else "identity", *_listed_transfer_codings(transfer)])


def is_large(message: http.Message | None) -> bool:
    """A body whose inspection takes long enough to hold up other agents, if run on the event loop: one
    of ``OFF_LOOP_BYTES`` or more (``inspection_weight``)."""
    raw = message.raw_content if message is not None else None
    return raw is not None and inspection_weight(raw) >= OFF_LOOP_BYTES


class SlowAgents:
    """Agents a body of whose took long to inspect on the event loop: their bodies are inspected in a
    thread of their own for ``SLOW_AGENT_SECONDS`` after. Size and quotes (``inspection_weight``) foretell
    most slow bodies; this catches a text slow to read at any size (a page of phone numbers, one key's
    prefix over and over, a shape no one has timed yet) after its first stall, so an agent that keeps
    sending such bodies holds every other agent up once, not at each request."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}

    def slow(self, agent: str) -> bool:
        until = self._until.get(agent)
        return until is not None and until > self._clock()

    def took(self, agent: str, seconds: float) -> None:
        """An inspection of one of ``agent``'s bodies held the event loop ``seconds`` of CPU."""
        if seconds < SLOW_ON_LOOP_SECONDS:
            return
        now = self._clock()
        if len(self._until) >= SLOW_AGENTS_KEPT:
            self._until = {name: until for name, until in self._until.items() if until > now}
            while len(self._until) >= SLOW_AGENTS_KEPT:
                # Marked earliest, so ending soonest.
                del self._until[next(iter(self._until))]
        self._until.pop(agent, None)
        self._until[agent] = now + SLOW_AGENT_SECONDS


def may_grow(message: http.Message | None) -> bool:
    """A smaller body that is compressed: it may decode to the inspection cap, so it is not inspected on
    the event loop either, nor made to wait behind large ones (most answers come compressed)."""
    return message is not None and bool(message.raw_content) and is_compressed(message)


def inspection_weight(raw: bytes) -> int:
    """A body's size as its inspection's work goes: every string of a JSON body no dialect reads is read
    with up to ``CONTEXT_CHARS`` characters of what its field carried before, so each quote (half a string,
    or of a key) counts for half of that too. A list of 20,000 five-digit strings (180 KB) took 5 s."""
    return len(raw) + raw.count(b'"') * (CONTEXT_CHARS // 2)


def is_compressed(message: http.Message) -> bool:
    return codings(message).replace("identity", "").strip(", ") != ""


def set_content(message: http.Message, content: bytes) -> None:
    """Replace a body with ``content`` (plain, or encoded as its Content-Encoding says): its transfer
    codings other than chunked went with the old bytes."""
    message.content = content
    if transfer_codings(message):
        if message.http_version == "HTTP/1.1":
            message.headers["transfer-encoding"] = "chunked"
        else:
            del message.headers["transfer-encoding"]


def as_headers(fields: list[tuple[str, str]]) -> http.Headers:
    return http.Headers(
        [
            (name.encode("utf-8", "surrogateescape"), value.encode("utf-8", "surrogateescape"))
            for name, value in fields
        ]
    )


def scan_request_fields(
    inspector: TurnInspector, request: http.Request, body: bytes | None
) -> dict[str, list[tuple[str, str]]]:
    """A request's method, headers, trailers and multipart frame scanned as data it sends
    (``TurnInspector.scan_method``, ``scan_headers``, ``scan_multipart_frame``): what changes, by the
    attribute that holds it (a method and a frame are never rewritten)."""
    # As sent: ``request.method`` reads it in upper case, which is not what leaves.
    inspector.scan_method(request.data.method.decode("utf-8", "surrogateescape"))
    if body is not None:
        inspector.scan_multipart_frame(body, request.headers.get("content-type"))
    scanned = {}
    for name in ("headers", "trailers"):
        fields = getattr(request, name)
        if fields:
            changed = inspector.scan_headers(list(fields.items(multi=True)), sent_by_agent=True)
            if changed is not None:
                scanned[name] = changed
    return scanned


@dataclasses.dataclass(frozen=True, slots=True)
class BinaryBody:
    """A decoded body that is not text: read for secrets in its printable runs alone
    (``TurnInspector.inspect_binary``)."""

    content: bytes


def read_body(message: http.Message, cap: int, turn: Turn, what: str) -> bytes | BinaryBody | None:
    """The decoded body if it can be inspected (a binary one as ``BinaryBody``); otherwise None, with the
    reason on the turn.

    Raises ``UninspectableError`` for a body that decodes past ``cap`` or is in a coding that cannot be
    undone (``compress``): the caller decides whether it passes. What a body claims to be is not trusted:
    a body labelled binary is read when it is text, and a text body whose content-encoding does not
    decode is read as it stands, since that is what a receiver that ignores the label gets. Compressed
    data that turns corrupt or stops part way is inspected as far as it decodes, since that is what a
    receiver reading as it goes hands on.
    """
    raw = message.raw_content
    if raw is None and message.stream:
        turn.errors.append(f"{what}: body over the inspection cap streamed through uninspected")
        return None
    if not raw:
        return None
    if len(raw) > cap:
        turn.errors.append(f"{what}: body of {len(raw)} bytes is over the inspection cap of {cap}")
        return None
    encoding = codings(message)
    try:
        content, problem = decode_body(raw, encoding, cap)
    except UninspectableError:
        raise
    except DecodingError:
        turn.errors.append(f"{what}: body does not decode as content-encoding {encoding!r}; read as sent")
        content, problem = raw, None
    if problem is not None and is_text(raw):
        turn.errors.append(f"{what}: body does not decode as content-encoding {encoding!r}; read as sent")
        content = raw
    elif problem is not None:
        turn.errors.append(f"{what}: {problem}; the part that decodes is inspected")
    charsets = declared_charsets(message.headers.get("content-type"))
    multipart = part_spans(content, boundary_of(message.headers.get("content-type")))
    if not is_text(content) and multipart is None and all(map(reads_as_utf8, charsets)):
        content_type = message.headers.get("content-type", "unlabelled").split(";")[0]
        turn.errors.append(f"{what}: binary body ({content_type}) read in its printable runs")
        return BinaryBody(content)
    return content


def as_utf8(message: http.Message, body: bytes) -> tuple[bytes, TextEncoding | None]:
    """A body in the one encoding other than UTF-8 all its receivers read it in (``text_encoding``: a
    Latin-1, EBCDIC or UTF-16 body that declares so, UTF-16 JSON) as the UTF-8 the detectors read, with
    that encoding; the body as it is, and None, otherwise."""
    encoding = text_encoding(body, message.headers.get("content-type"))
    return (body, None) if encoding is None else (encoding.to_utf8(body), encoding)


def set_text(message: http.Message, content: bytes, encoding: TextEncoding | None) -> None:
    """Replace a body with ``content``, the UTF-8 the detectors read, in the encoding the body came in
    (``as_utf8``); as UTF-8, labelled so, where that encoding has no character for something written into
    it: the Content-Type always says what the bytes are."""
    if encoding is not None:
        encoded = encoding.from_utf8(content)
        if encoded is not None:
            set_content(message, encoded)
            return
        message.headers["content-type"] = labelled_utf8(message.headers.get("content-type", "text/plain"))
    set_content(message, content)


def declared_readings(
    message: http.Message, body: bytes, *, transcoded: bool = False
) -> tuple[list[bytes], UnreadableEncodingError | None]:
    """``body`` (UTF-8) as receivers honouring the charset it declares, or the transfer encodings and
    charsets of its parts, read it, where that differs from the detectors' reading; and the finding's
    error for such a body (a charset or encoding no codec here undoes: no reading at all). A body
    ``transcoded`` from its declared charset (``as_utf8``) is read in it already."""
    try:
        readings = part_readings(body, boundary_of(message.headers.get("content-type"))) or []
        rule = PART_ENCODING_RULE if readings else CHARSET_RULE
        declared = [] if transcoded else declared_charsets(message.headers.get("content-type"))
        charsets = [charset for charset in declared if not reads_as_utf8(charset)]
        ours = (readable_text(body) or "") if charsets else ""
        for charset in charsets:
            readings += [
                text.encode("utf-8", "surrogatepass") for text in read_in(body, charset) if text != ours
            ]
    except UnreadableEncodingError as error:
        return [], error
    if not readings:
        return [], None
    if rule == CHARSET_RULE and any(map(reads_unknowably, charsets)):
        message_text = (
            f"declares charset {', '.join(map(repr, charsets))}, which its decoders read differently"
        )
        return readings, UnreadableEncodingError(rule, message_text)
    what = f"charset {', '.join(map(repr, charsets))}" if rule == CHARSET_RULE else "a part's own encoding"
    message_text = f"declares {what}, in which it reads otherwise than as UTF-8; read both ways"
    kind = ReadEveryWay if rule == CHARSET_RULE else UnreadableEncodingError
    return readings, kind(rule, message_text)


def read_every_way(inspector: TurnInspector, where: str, error: ReadEveryWay) -> Finding | None:
    """A body whose declared charset reads otherwise, read every way it reads (enforce mode): where any
    reading found what the policy acts on, one body cannot be rewritten into every reading, so it is
    refused, and its charset finding (returned) says so; else it leaves as sent, the finding a flag."""
    acted_on = inspector.first_enforceable()
    finding = uninspectable_finding(
        where, error, inspection_threat(inspector.policy), enforced=acted_on is not None
    )
    inspector.turn.errors.append(f"{where}: {error}")
    if acted_on is None:
        inspector.turn.add(dataclasses.replace(finding, action=Action.FLAG))
        return None
    inspector.turn.add(finding)
    return finding


def _agent_read_as(side: str) -> Source | None:
    """What a binary body on ``side`` is read as: the agent's own in a request, not as input in an answer."""
    return Source.USER if side == "request" else None


def read_request(reader: Dialect, body: bytes, boundary: bytes | None) -> RequestView:
    """A request body as ``reader`` reads it, or as any body (the parts of ``boundary``, the one its
    Content-Type names) where it cannot."""
    view = reader.parse_request(body)
    if view.parse_error and not isinstance(reader, Generic):
        return dataclasses.replace(Generic(boundary).parse_request(body), dialect=reader.name)
    return view


def read_response(dialect: Dialect, body: bytes, boundary: bytes | None) -> Completion:
    """A response body as ``dialect`` reads it, or as any body (``read_request``) where it cannot."""
    completion = dialect.parse_response(body)
    return Generic(boundary).parse_response(body) if completion.parse_error else completion


def read_otherwise(
    flow: http.HTTPFlow,
    inspector: TurnInspector,
    view: RequestView,
    body: bytes | None,
    parsed: ParsedBody | None,
) -> None:
    """Where the request leaves as the agent sent it, what readers that read it otherwise than ``view``
    read is inspected too (``TurnInspector.inspect_other_request``): a repeated key's first value, keys
    matched regardless of case, the charset or part encodings it declares. Where a threat decided on its
    words is enforced, such a body was refused or leaves as the one reading inspected."""
    others = flow.metadata.pop(OTHER_READINGS_KEY, [])
    if inspector.normalises:
        if EVERY_READING_KEY in flow.metadata:
            for reading, other in others:
                if reading == DECLARED:
                    inspector.inspect_other_request(view, other, READINGS[reading])
        return
    if body is not None and parsed is not None and parsed[1]:
        others.append(
            (FIRST_VALUE, flow.metadata[READER_KEY].parse_request(encode_json(first_values(body_text(body)))))
        )
    for reading, other in others:
        inspector.inspect_other_request(view, other, READINGS[reading])


def uninspectable_rule(error: UninspectableError) -> str:
    if isinstance(error, UnreadableEncodingError):
        return error.rule
    if isinstance(error, BombError):
        return BOMB_RULE
    return OVER_CAP_RULE if isinstance(error, OverCapError) else UNSUPPORTED_CODING_RULE


def uninspectable_finding(
    where: str, error: UninspectableError, threat: Threat, *, enforced: bool
) -> Finding:
    """A body no detector can read: it decodes past the inspection cap, or not at all; or one read in its
    declared encoding too, which clients read otherwise."""
    unread = "" if isinstance(error, UnreadableEncodingError) else "; it cannot be inspected"
    return body_finding(
        uninspectable_rule(error),
        f"{where} body {error}{unread}",
        where,
        threat,
        enforced=enforced,
    )


def body_finding(rule: str, signal: str, where: str, threat: Threat, *, enforced: bool) -> Finding:
    """A body the detectors cannot vouch for: refused where ``enforced``."""
    return Finding(
        threat=threat,
        rule=rule,
        signal=signal,
        severity=Severity.HIGH,
        action=Action.BLOCK,
        where=where,
        owasp="LLM02",
        enforced=enforced,
    )


OWN_HEADER_PREFIX = b"x-egressguard-"
"""The namespace of the headers egressguard sets on what it answers (``x-egressguard-event``)."""


def strip_own_namespace(flow: http.HTTPFlow) -> None:
    """An upstream's own fields in egressguard's namespace are removed before any is set, and counted in
    the turn's errors: relayed, an answer could pose as egressguard's verdict on it."""
    response = flow.response
    if response is None:
        return
    names = {
        name.lower() for name, _ in response.headers.fields if name.lower().startswith(OWN_HEADER_PREFIX)
    }
    if not names:
        return
    drop_fields(response.headers, names)
    turn = turn_of(flow)
    if turn is not None:
        # Counted, not named: a name is any text the upstream likes, a key included.
        turn.errors.append(
            f"response: {len(names)} header(s) the upstream sent in egressguard's namespace removed"
        )


def mend_response_fields(flow: http.HTTPFlow) -> None:
    """An upstream's field holding a bare CR, LF or NUL reaches the agent with a space in its place, in
    every mode: relayed as written, a client that ends a line at a bare CR (requests, urllib3) would read
    fields no check read, a Content-Type the body was not read under among them. Counted in the turn's
    errors."""
    response = flow.response
    if response is None or field_break(response.headers.fields) is None:
        return
    response.headers.fields, changed = mend_field_breaks(response.headers.fields)
    turn = turn_of(flow)
    if turn is not None:
        turn.errors.append(
            f"response: {changed} header(s) holding a bare CR, LF or NUL read with a space in its place"
        )


def looks_like_json(body: bytes) -> bool:
    return jsontext.opens_json(body_text(body))


def unreadable_json_finding(where: str, reason: str, inspector: TurnInspector) -> Finding:
    """A body of an API dialect that looks like JSON Python cannot read (nested past its reader's depth,
    a comment, a trailing comma): a lenient receiver may read calls and fields in it that no detector
    saw, so where a threat decided on its words is enforced it does not pass."""
    signal = f"{where} body looks like JSON but cannot be read ({reason}); it was read as text"
    return unread_body_finding(UNREADABLE_JSON_RULE, signal, where, inspector)


def binary_answer_finding(dialect: Dialect, inspector: TurnInspector) -> Finding:
    """A model API's answer that is binary (Bedrock's event-stream framing of a Messages stream): its
    dialect reads no tool call or text in it, so where a threat decided on its words is enforced it does
    not pass."""
    signal = f"a {dialect.name} answer in a binary framing its dialect's reader cannot read or gate"
    return unread_body_finding(UNREADABLE_ANSWER_RULE, signal, "response", inspector)


def unread_body_finding(rule: str, signal: str, where: str, inspector: TurnInspector) -> Finding:
    """A body the dialect cannot read: refused where a threat decided on a body's words is enforced."""
    threat = inspection_threat(inspector.policy)
    return body_finding(rule, signal, where, threat, enforced=inspector.normalises)


def read_completed_upload(
    parts: StagedParts, step: UploadStep | None, body: bytes, view: RequestView, cap: int
) -> UninspectableError | UnseenPartError | None:
    """A request that makes the file an upload's pieces make (``proxy.staged``): that file read as a
    batch input file sent whole is and added to ``view`` under ``upload``, or, where it is not text, added
    to its attachments, to be read as binary content; the error where it cannot be read whole. None for
    any other request, and for a Gemini upload's one chunk, read as the file."""
    if step is None or not step.completes or step.offset == 0:
        return None
    try:
        if step.offset is None:
            content = parts.assemble(step.upload, named_parts(body), cap)
        else:
            content = parts.assemble_chunks(step.upload, step.offset, cap - len(body)) + body
    except (OverCapError, UnseenPartError) as error:
        return error
    if readable_text(content) is None:
        # A PDF or an image uploaded in parts is read as one uploaded whole in a multipart body is.
        view.attachments.append(Attachment(STAGED_FILE, content, Source.USER))
        return None
    read = read_batch_file(content)
    if read.parse_error:
        return UnseenPartError(f"the file its parts make does not read: {read.parse_error}")
    carry(view, read, (STAGED_FILE,))
    return None


def upload_step(flow: http.HTTPFlow) -> UploadStep | None:
    """What ``flow``'s request does to an upload the provider assembles from pieces (``staged_upload``),
    the upload named by the server it is sent to and the agent sending it as well as by its id: an id is
    the server's, and another agent naming the same one must not replace or complete its pieces."""
    request = flow.request
    headers = request.headers
    step = staged_upload(
        request.path,
        headers.get("x-goog-upload-command", ""),
        headers.get("x-goog-upload-offset", ""),
        headers.get("content-range", ""),
    )
    if step is None:
        return None
    turn = turn_of(flow)
    agent = turn.context.agent_id if turn is not None else ""
    return dataclasses.replace(step, upload=f"{request.host}:{request.port}\n{agent}\n{step.upload}")


def unsent_rewrite(inspector: TurnInspector, replacements: Mapping[str, str]) -> Finding | None:
    """Where the request's verdict would rewrite the file an upload's parts make, which left with them:
    the finding that asks it (the request is refused instead, no rewrite being possible)."""
    staged = [where for where in replacements if parse_locator(where)[:1] == [STAGED_FILE]]
    if not staged:
        return None
    found = (finding for finding in inspector.turn.findings if finding.where in staged and finding.enforced)
    signal = "the file an upload's parts make would be rewritten, and its parts have left"
    threat = inspection_threat(inspector.policy)
    return next(found, body_finding(STAGED_UPLOAD_RULE, signal, staged[0], threat, enforced=True))


def request_refusal_status(error: UninspectableError) -> int:
    """413 for a body too large to inspect, 415 for one in a coding that cannot be undone."""
    return 413 if isinstance(error, OverCapError) else 415


def refusal(dialect: Dialect, turn: Turn, status: int, message: str) -> http.Response:
    """The error the agent gets instead of the exchange, in its API's own shape."""
    status, headers, payload = dialect.error_response(status, message, BLOCKED_CODE)
    return http.Response.make(status, payload, {**headers, "x-egressguard-event": turn.event_id})


def looks_like_event_stream(body: bytes) -> bool:
    return body.lstrip().startswith((b"data:", b"event:", b"id:", b": "))


def stream_session(dialect: Dialect, filters: StreamFilters, policy: Policy) -> StreamSession:
    """The dialect's session for an answer's event stream. One that filters holds an event whole before
    anything of it is sent, so an event over ``DEFAULT_MAX_EVENT_BYTES`` is dropped unread; one that only
    reads (the upstream's bytes go on as they came) reads every event up to the inspection cap."""
    session = dialect.stream_session(filters)
    if not filters.active:
        session.read_events_of(max(DEFAULT_MAX_EVENT_BYTES, policy.max_body_bytes))
    return session


def aws_framing(dialect: Dialect, content_type: str | None) -> AwsFraming | None:
    """How to read an answer in AWS's event-stream framing as the SSE stream the dialect's session reads
    (``Dialect.aws_framing``); None for any other answer, or a dialect that reads none."""
    if dialect.aws_framing is None or not is_aws_event_stream(content_type):
        return None
    return AwsFraming(dialect.aws_framing)


def framed(
    framing: AwsFraming, session: StreamSession
) -> tuple[Callable[[bytes], bytes], Callable[[], bytes]]:
    """``feed`` and ``finish`` of a session reading the SSE events an AWS event stream carries, what it
    sends framed again (``AwsFraming``). The messages of a read before one that does not decode are read
    and let out as any others (``EventStreamError.sent``) before the stream is cut at it."""

    def feed(data: bytes) -> bytes:
        try:
            events = framing.to_sse(data)
        except EventStreamError as error:
            error.sent = framing.from_sse(session.feed(error.events))
            raise
        return framing.from_sse(session.feed(events))

    def finish() -> bytes:
        framing.end()
        return framing.from_sse(session.finish())

    return feed, finish


def record_unread_events(inspector: TurnInspector, session: StreamSession) -> None:
    """Events of a stream its session could not read: too long (``stream_session``), an
    ``inspection.decoded_over_cap`` finding; looking like JSON it cannot read, an
    ``inspection.unreadable_json`` one. Each enforced where they were dropped, not sent."""
    dropped = session.filters.active
    fate = "dropped unread" if dropped else "passed through unread"
    unread = (
        (OVER_CAP_RULE, session.unread_events, f"an event longer than {session.max_event_bytes} bytes"),
        (
            UNREADABLE_JSON_RULE,
            session.unreadable_json_events,
            "an event that looks like JSON but cannot be read",
        ),
    )
    for rule, count, what in unread:
        if not count:
            continue
        finding = body_finding(
            rule, f"{what} was {fate}", "stream", inspection_threat(inspector.policy), enforced=dropped
        )
        inspector.turn.add(dataclasses.replace(finding, count=count))
        if dropped:
            inspector.turn.escalate(Decision.REDACTED)


READ_BACK_EVENT_BYTES = 8 * DEFAULT_MAX_EVENT_BYTES
"""The longest event sent that the read-back holds whole. The filtering session sends no event it read
over 1 MiB, but what it writes from one may be longer (a 6-character address redacted to a placeholder
five times its length): 8 MiB covers every rewrite of a 1 MiB event. An event sent that is longer still
cannot be read back: the stream is cut there and nothing the filters did is claimed."""


class ReadBack:
    """What left for the client, read as the client reads it: the dialect's stream session with no
    filters, whose scan reads every string its channels do not, so what the record says was enforced
    is proved from the bytes sent, not from the filters that ran. An event too long to read back
    (``READ_BACK_EVENT_BYTES``) proves nothing: ``unproved``."""

    def __init__(
        self,
        dialect: Dialect,
        inspector: TurnInspector,
        sender: StreamSession | None = None,
        framing: AwsFraming | None = None,
    ) -> None:
        self.inspector = inspector
        self.scan = inspector.json_scan(redacts=False)
        self.session = dialect.stream_session(StreamFilters(residual=self.scan))
        self.session.read_events_of(READ_BACK_EVENT_BYTES)
        self.framing = framing
        """Reads the frames sent as the SSE events they carry: a sender's events, written into frames,
        are not the bytes sent, so none is taken from it."""
        self.sender = sender if framing is None else None
        """The session that wrote what is sent: the events it sent as they came are read from what it
        read of their bytes, which are those bytes parsed."""
        if sender is not None:
            sender.keep_sent()

    def feed(self, sent: bytes) -> None:
        if self.framing is not None:
            self.session.feed(self.framing.to_sse(sent))
            return
        pieces = self.sender.take_sent() if self.sender is not None else []
        if not pieces or not sent_as(pieces, sent):
            self.session.feed(sent)
            return
        for piece in pieces:
            self.session.read_sent(piece)

    @property
    def unproved(self) -> bool:
        """An event sent was too long to read back: what it carries is not known."""
        return self.session.unread_events > 0

    def prove(self) -> None:
        """The stream ended: findings whose action what was sent bears out are marked enforced; none where
        an event sent could not be read back, said in the turn's errors."""
        self.session.finish()
        if self.unproved:
            self.inspector.turn.errors.append(
                f"read-back: an event sent was over {READ_BACK_EVENT_BYTES} bytes and could not be read back;"
                " no action on the stream is claimed enforced"
            )
            return
        self.inspector.stream_sent(self.session.completion, self.scan)


class BodyRelay:
    """mitmproxy's ``flow.response.stream`` callable for a body read as it passes: decodes what the upstream
    compressed, hands the plain bytes to ``feed`` (a stream session, a redactor) and, when it ``rewrites``,
    sends what that returns (at the end, what ``finish`` returns) instead of what the upstream sent; it
    records the sha256 of everything the agent received. A body that decodes past the decoder's cap is
    cut there when it rewrites, and passes as sent when it does not (observe mode), recorded either way."""

    def __init__(
        self,
        turn: Turn,
        decoder: StreamDecoder,
        feed: Callable[[bytes], bytes],
        finish: Callable[[], bytes],
        *,
        rewrites: bool,
        threat: Threat,
        read_back: ReadBack | None = None,
        refused: Callable[[], Finding | None] = lambda: None,
    ) -> None:
        self.turn = turn
        self.refused = refused
        """Asked after each chunk where it rewrites: the finding that refuses the rest of the body (a rule
        that ran out of time on it where that is enforced: ``TurnInspector.stream_refused``)."""
        self.threat = threat
        """The threat whose enforcement rewrites the body (``inspection_threat``): a body cut short for
        decoding past its cap is recorded under it."""
        self.decoder = decoder
        self.feed = feed
        self.finish = finish
        self.rewrites = rewrites
        self.read_back = read_back
        """Reads what is sent; None when nothing is rewritten, or reading it failed: nothing is proved."""
        self.digest = hashlib.sha256()
        self.undecodable = False
        self.cut = False
        """The body was cut short where it rewrites: the agent must not take what it got for all of it."""
        self.timed_out = False
        """It was cut for a rule that ran out of time on it (``refused``)."""
        self.withheld = False
        """Nothing more is sent: an event could not be read back (``ReadBack.unproved``)."""
        self.head: bytes | None = b""
        """The body's first bytes, until they tell whether a byte order mark names another charset."""

    def install(self, response: http.Response) -> BodyRelay:
        """The headers that go with what the agent receives: plain bytes of a length known only at the end,
        or the upstream's own headers when the body goes on as sent."""
        if self.rewrites:
            response.headers.pop("content-encoding", None)
            response.headers.pop("content-length", None)
            response.headers.pop("transfer-encoding", None)
            if response.http_version == "HTTP/1.1":
                response.headers["transfer-encoding"] = "chunked"
        return self

    def __call__(self, chunk: bytes) -> list[bytes]:
        out = b""
        if not self.undecodable:
            try:
                plain = self.decoder.feed(chunk) if chunk else self.decoder.flush()
                self._check_order_mark(plain, ended=not chunk)
                out = self.feed(plain)
                if self.rewrites and self.refused() is not None:
                    out = self._cut_for_timeout()
            except ScanTimeout:
                # A filter cannot tell what of its text is clean: none of what it holds may go out.
                out = self._cut_for_timeout()
            except EventStreamError as error:
                # The messages before the one that does not decode were read: they go out as any others.
                out = error.sent
                if self.rewrites and self.refused() is not None:
                    out = self._cut_for_timeout()
                out += self._cut_for_malformed(error)
            except UninspectableError as error:  # past the cap, or in a charset read here as no one reads it
                self.undecodable = True
                self.turn.errors.append(f"response: {error}")
                self.turn.add(uninspectable_finding("response", error, self.threat, enforced=self.rewrites))
                if self.rewrites:
                    self.cut = True
                    self.turn.escalate(Decision.BLOCKED)
            except DecodingError as error:
                self.undecodable = True
                self.turn.errors.append(f"response: body does not decode: {error}")
            except Exception as error:  # raised into mitmproxy, it would hang the agent's stream
                self.undecodable = True
                self.cut = self.rewrites
                self.turn.errors.append(f"response: {type(error).__name__} reading the stream; cut there")
                log.error("inspect.stream_failed", error=type(error).__name__)
        if not chunk and not self.cut:
            out += self._finished()
        if not self.rewrites:
            out = chunk  # the decoded copy was only read
        if self.withheld:
            out = b""
        if self.read_back is not None and out:
            try:
                self.read_back.feed(out)
            except Exception as error:  # what cannot be read back proves nothing: it is not sent
                out = self._withhold_unread(error)
            else:
                out = self._withhold_unproved(out)
        self.digest.update(out)
        if not chunk:
            self.turn.output_sha256 = self.digest.hexdigest()
        # An empty chunk written to a chunked HTTP/1 body is its terminator: send nothing instead while a
        # filter holds text back.
        return [out] if out else []

    def _check_order_mark(self, plain: bytes, *, ended: bool) -> None:
        """A body whose first bytes are a UTF-16 or UTF-32 byte order mark is text in that charset, which
        the stream's reader (UTF-8 alone) does not read: raises ``UnreadableEncodingError`` for it."""
        if self.head is None:
            return
        self.head += plain[: ORDER_MARK_BYTES - len(self.head)]
        if len(self.head) < ORDER_MARK_BYTES and not ended:
            return
        charset, self.head = marked_charset(self.head), None
        if charset is not None:
            raise UnreadableEncodingError(
                CHARSET_RULE, f"is relayed as it arrives in {charset}, which its byte order mark names"
            )

    def _finished(self) -> bytes:
        """What ``finish`` sends at the body's end (what filters held back), unless a rule runs out of
        time on it."""
        try:
            out = self.finish()
        except ScanTimeout:
            return self._cut_for_timeout()
        except EventStreamError as error:
            return self._cut_for_malformed(error)
        return self._cut_for_timeout() if self.rewrites and self.refused() is not None else out

    def _cut_for_malformed(self, error: EventStreamError) -> bytes:
        """A frame of AWS's event stream does not decode (a checksum that does not match, a length past
        its message, the stream ending inside one): what it carries is read by no one here, so where the
        body is rewritten nothing more is sent and the connection is closed at its end."""
        if not self.undecodable:
            self.undecodable = True
            self.cut = self.rewrites
            self.turn.errors.append(f"response: {error}")
            signal = f"an event-stream message that does not decode ({error}); the stream was cut there"
            self.turn.add(
                body_finding(UNREADABLE_ANSWER_RULE, signal, "response", self.threat, enforced=self.rewrites)
            )
            if self.cut:
                self.turn.escalate(Decision.BLOCKED)
        return b""

    def _cut_for_timeout(self) -> bytes:
        """A rule ran out of time on the body: nothing more of it is sent, and the connection is closed
        at its end (``cut``), as for any body cut short; its finding is enforced (``refused``)."""
        self.undecodable = True
        self.cut = self.rewrites
        self.timed_out = True
        self.refused()
        self.turn.errors.append("response: a rule ran out of time on the body; cut there")
        if self.cut:
            self.turn.escalate(Decision.BLOCKED)
        return b""

    def _withhold_unread(self, error: Exception) -> bytes:
        """Reading back what is sent failed: nothing the filters did is proved (no finding of the stream
        claims enforced), so nothing more is sent; the stream is cut there, the turn blocked, and an
        ``inspection.failed`` finding says so."""
        self.read_back = None
        self.withheld = self.cut = True
        name = type(error).__name__
        self.turn.errors.append(f"read-back: {name} reading what was sent; the stream cut there")
        self.turn.add(
            body_finding(
                INSPECTION_FAILED_RULE,
                "reading back what was sent failed: the stream was cut there",
                "response",
                self.threat,
                enforced=True,
            )
        )
        self.turn.escalate(Decision.BLOCKED)
        log.error("inspect.read_back_failed", error=name)
        return b""

    def _withhold_unproved(self, out: bytes) -> bytes:
        """``out``, or nothing once it holds an event too long to read back: the event is not finished at
        the agent (it never reads it) and the stream is cut there, the turn blocked."""
        assert self.read_back is not None
        if not self.read_back.unproved or self.withheld:
            return out
        self.withheld = self.cut = True
        self.turn.errors.append("response: an event too long to read back was not sent; the stream cut there")
        self.turn.escalate(Decision.BLOCKED)
        return b""


class Substitute:
    """``flow.response.stream`` for a response replaced while its body still arrives: the replacement's
    body goes out with the first chunk, and everything the upstream sends is dropped."""

    def __init__(self, body: bytes) -> None:
        self.body: bytes | None = body

    def __call__(self, chunk: bytes) -> list[bytes]:
        body, self.body = self.body, None
        return [body] if body else []


class Inspect:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._alongside = ThreadPoolExecutor(ALONGSIDE_THREADS, thread_name_prefix="egressguard-inspect")
        self._large = ThreadPoolExecutor(LARGE_THREADS, thread_name_prefix="egressguard-inspect-large")
        self._slow = SlowAgents()
        self._slow_threads = ThreadPoolExecutor(1, thread_name_prefix="egressguard-inspect-slow")
        """Where a slow agent's bodies are inspected (``SlowAgents``): one thread, as large bodies have,
        but apart from them, so its small prompts do not wait behind another agent's megabytes."""
        self._observing: tuple[Policy, bool] | None = None
        """The last policy a request was inspected under and whether it ``observes_only``: a policy does
        not change, and every request asks (walking the threats cost some 3.5 µs a request)."""

    def done(self) -> None:
        self._alongside.shutdown(wait=True)
        self._large.shutdown(wait=True)
        self._slow_threads.shutdown(wait=True)

    def configure(self, updated: Set[str]) -> None:
        """Load the rule packs and the model now, not on the first request."""
        self.runtime.load_detectors()

    @fail_open
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """A request whose announced length is over the inspection cap is relayed by mitmproxy as it
        arrives (``stream_large_bodies``), never read whole, so no detector sees it."""
        turn = turn_of(flow)
        if turn is None or flow.response is not None or flow.request.stream is not True:
            return
        length = flow.request.headers.get("content-length", "an unannounced number of")
        cap = policy_of(flow, self.runtime).max_body_bytes
        error = OverCapError(f"has {length} bytes, over the inspection cap of {cap}")
        self._refuse_unread(flow, turn, error)

    @fail_open
    def requestovercap(self, flow: http.HTTPFlow) -> None:
        """A body of no announced length (chunked) grew past the inspection cap while held, before any
        byte of it left (``addons.wire.early``)."""
        turn = turn_of(flow)
        if turn is None or flow.response is not None:
            return
        cap = policy_of(flow, self.runtime).max_body_bytes
        self._refuse_unread(flow, turn, OverCapError(f"grew past the inspection cap of {cap} on its way"))

    def _refuse_unread(self, flow: http.HTTPFlow, turn: Turn, error: OverCapError) -> None:
        """Where the policy enforces data_exfiltration, nothing of a body no detector can read may leave:
        it is answered 413 in the API's shape before its first byte leaves (``addons.wire.early`` sends the
        answer at once and drops the rest of the body). Elsewhere it is relayed as it arrives, and the
        record says so."""
        refused = self._uninspectable(flow, turn, "request", error)
        if refused is not None:
            request = flow.request
            dialect = detect(request.method, request.path, request.headers.get("content-type"), b"")
            flow.response = refusal(dialect, turn, 413, block_message(refused, turn.event_id))
            turn.errors.append("request: refused before any byte of its body left")

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.request.raw_content and self._observes_only(policy_of(flow, self.runtime)):
            self.start_request_inspection(flow)
        else:
            await self._off_loop_if_large(self.inspect_request, flow, flow.request)

    def _observes_only(self, policy: Policy) -> bool:
        kept = self._observing
        if kept is None or kept[0] is not policy:
            kept = self._observing = (policy, observes_only(policy))
        return kept[1]

    async def response(self, flow: http.HTTPFlow) -> None:
        await request_inspected(flow)
        await self._off_loop_if_large(self.inspect_response, flow, flow.response)
        self.inspect_trailers(flow)
        self.remember_withheld(flow)
        relay = flow.response.stream if flow.response is not None else None
        if isinstance(relay, BodyRelay) and relay.cut and flow.killable:
            # Its headers are gone already: closing the connection before the body's end is the only
            # way left to tell the agent that what it read is not the whole answer.
            flow.kill()

    @fail_open
    def remember_withheld(self, flow: http.HTTPFlow) -> None:
        """What the provider keeps of an answer egressguard withheld part of is not to be continued from
        (``TurnInspector.remember_withheld``)."""
        inspector = self._state(flow)[1]
        if inspector is not None:
            inspector.remember_withheld()

    @fail_open
    def inspect_trailers(self, flow: http.HTTPFlow) -> None:
        """Trailers (HTTP/1 chunked or HTTP/2) arrive after the body and reach the client after this hook:
        scanned and redacted like headers."""
        turn, inspector, dialect = self._state(flow)
        if turn is None or inspector is None or flow.response is None or not flow.response.trailers:
            return
        scanned = inspector.scan_headers(list(flow.response.trailers.items(multi=True)))
        if scanned is not None:
            flow.response.trailers = as_headers(scanned)
        refused = inspector.stream_refused()
        if refused is None:
            return
        # They come after the body: one relayed already is cut before its end (``response``), one read
        # whole is refused.
        if isinstance(flow.response.stream, BodyRelay):
            flow.response.stream.cut = True
        elif dialect is not None and not flow.response.stream:
            flow.response = refusal(dialect, turn, 502, block_message(refused, turn.event_id))
        elif flow.killable:
            flow.kill()

    async def _off_loop_if_large(
        self, inspect: Callable[[http.HTTPFlow], None], flow: http.HTTPFlow, message: http.Message | None
    ) -> None:
        """Inspect a large or compressed body, or any of an agent whose body was slow to inspect
        (``SlowAgents``), off the event loop (``_threads_for``), so the loop keeps serving every other agent
        meanwhile; the same code runs either way, so the verdict is the same. mitmproxy holds the flow
        until the hook returns, so nothing else touches it while the thread works."""
        turn = turn_of(flow)
        agent = turn.context.agent_id if turn is not None else None
        threads = self._threads_for(message)
        if threads is None and agent is not None and self._slow.slow(agent):
            threads = self._slow_threads
        if threads is None:
            started = time.thread_time()
            inspect(flow)
            if agent is not None:
                self._slow.took(agent, time.thread_time() - started)
            return
        work = partial(contextvars.copy_context().run, inspect, flow)
        await asyncio.get_running_loop().run_in_executor(threads, work)

    def _threads_for(self, message: http.Message | None) -> ThreadPoolExecutor | None:
        """Where a body is inspected off the event loop: a large one in the large bodies' thread, a small
        compressed one beside observed requests (``may_grow``); None for one inspected on the loop."""
        if is_large(message):
            return self._large
        return self._alongside if may_grow(message) else None

    @fail_open
    def inspect_request(self, flow: http.HTTPFlow) -> None:
        prepared = self._prepare_request(flow)
        if prepared is not None:
            self._decide_request(flow, *prepared)

    @fail_open
    def start_request_inspection(self, flow: http.HTTPFlow) -> None:
        """Observe only: the request leaves now and its detectors run in a worker thread meanwhile; the
        response hooks (and ``error``) wait for them, so the turn is audited with their findings."""
        prepared = self._prepare_request(flow)
        if prepared is None:
            return
        threads = self._threads_for(flow.request) or self._alongside
        flow.metadata[PENDING_KEY] = threads.submit(self._inspect_concurrently, flow, *prepared)

    @fail_open
    def _inspect_concurrently(
        self,
        flow: http.HTTPFlow,
        inspector: TurnInspector,
        view: RequestView,
        body: bytes | None,
        parsed: ParsedBody | None,
    ) -> None:
        verdict = inspector.inspect_request(view)
        inspector.scan_url(pretty_host(flow.request), flow.request.path)
        scan_request_fields(inspector, flow.request, body)
        read_otherwise(flow, inspector, view, body, parsed)
        scanned = inspector.scan_request(body, view, parsed) if body is not None else body
        if verdict.block is not None or verdict.replacements or scanned != body:
            # Observe mode decides nothing; should a verdict come anyway, the record says it was not applied.
            inspector.turn.errors.append("request: a verdict came after the request had left; not applied")

    def _prepare_request(
        self, flow: http.HTTPFlow
    ) -> tuple[TurnInspector, RequestView, bytes | None, ParsedBody | None] | None:
        """Read and parse the request and set up its inspector; None when there is nothing to inspect or
        the request was refused here (a body that cannot be inspected where that is enforced)."""
        turn = turn_of(flow)
        if turn is None or flow.response is not None:
            return None
        policy = policy_of(flow, self.runtime)
        unreadable: UninspectableError | None = None
        read: bytes | BinaryBody | None = None
        try:
            read = read_body(flow.request, policy.max_body_bytes, turn, "request")
        except UninspectableError as error:
            unreadable = error
        body = read if isinstance(read, bytes) else None
        declared: list[bytes] = []
        if body is not None:
            body, encoding = as_utf8(flow.request, body)
            flow.metadata[TEXT_ENCODING_KEY] = encoding
            declared, unreadable = declared_readings(flow.request, body, transcoded=encoding is not None)
        content_type = flow.request.headers.get("content-type")
        dialect = detect(flow.request.method, flow.request.path, content_type, body or b"")
        parsed = None
        reader = dialect
        misread: str | None = None
        if body is None:
            view = RequestView(dialect=dialect.name, model=dialect.model_hint)
        else:
            turn.inspected_bytes += len(body)
            # Decoded once: the dialect's reading and the scan of the rest of the body share it.
            parsed = load_json_with_shadowed(body)
            view = dialect.parse_request(body, parsed)
            if view.parse_error:
                turn.errors.append(f"request: {view.parse_error}")
                if not isinstance(dialect, Generic):
                    misread = view.parse_error
                    # Its upstream may read what this parser cannot (a lenient or deeper-nesting JSON
                    # reader): the body is read, and rewritten, as the text it is.
                    reader = Generic(boundary_of(content_type))
                    view = dataclasses.replace(reader.parse_request(body), dialect=dialect.name)
        view.continues |= continued_by_route(flow.request.method, flow.request.path)
        host = pretty_host(flow.request)
        servers = policy.roles[turn.context.role].mcp_servers
        view.tool_server = isinstance(dialect, MCP) and tool_server_route(
            servers, host, flow.request.port, flow.request.path
        )
        turn.request = view
        turn.stream = view.stream
        flow.metadata[DIALECT_KEY] = dialect
        flow.metadata[READER_KEY] = reader
        inspector = TurnInspector(self.runtime.detectors, policy, self.runtime.state, turn)
        flow.metadata[INSPECTOR_KEY] = inspector
        if view.stream:
            # Ask for a plain stream; one compressed anyway is decoded as it passes.
            flow.request.headers["accept-encoding"] = "identity"
        if isinstance(unreadable, ReadEveryWay) and reading_threat(policy) is not None:
            flow.metadata[EVERY_READING_KEY] = unreadable  # decided once every reading is inspected
            unreadable = None
        refused = unreadable and self._uninspectable(flow, turn, "request", unreadable)
        if unreadable and refused:
            self._refuse_request(flow, dialect, inspector, request_refusal_status(unreadable), refused)
            return None
        refused = self._read_binaries(flow, inspector, read, "request") or self._read_attachments(
            flow, inspector, view.attachments, "request"
        )
        if refused is not None:
            status = 400 if refused.rule == UNREAD_ATTACHMENT_RULE else 403
            self._refuse_request(flow, dialect, inspector, status, refused)
            return None
        others = [(DECLARED, read_request(reader, other, boundary_of(content_type))) for other in declared]
        if body is not None and parsed is not None and parsed[2] is None:
            keys_read_otherwise = self._read_keys_otherwise(
                turn, inspector, body, parsed, lambda found: reader.parse_request(body, found), dialect
            )
            if keys_read_otherwise and inspector.normalises:
                self._refuse_request(flow, dialect, inspector, 400, turn.findings[-1])
                return None
            others += keys_read_otherwise
        flow.metadata[OTHER_READINGS_KEY] = others
        if misread is not None and body is not None and looks_like_json(body):
            finding = unreadable_json_finding("request", misread, inspector)
            turn.add(finding)
            if finding.enforced:
                self._refuse_request(flow, dialect, inspector, 400, finding)
                return None
        # A completing request may carry no bytes (a bare finalize), or binary ones (a file's last chunk).
        sent = body if body is not None else read.content if isinstance(read, BinaryBody) else b""
        if self._refuse_unread_upload(flow, dialect, inspector, view, sent):
            return None
        return inspector, view, body, parsed

    def _refuse_unread_upload(
        self, flow: http.HTTPFlow, dialect: Dialect, inspector: TurnInspector, view: RequestView, body: bytes
    ) -> bool:
        """An Upload's ``complete`` is read with the file its parts make (``read_completed_upload``), a
        binary one as binary content; one whose file cannot be read whole, or whose binary content holds
        what the policy enforces, is refused (True)."""
        cap = inspector.policy.max_body_bytes
        step = upload_step(flow)
        read_before = len(view.attachments)
        error = read_completed_upload(self.runtime.staged_parts, step, body, view, cap)
        refused_binary = self._read_attachments(flow, inspector, view.attachments[read_before:], "request")
        if refused_binary is not None:
            self._refuse_request(flow, dialect, inspector, 403, refused_binary)
            return True
        if isinstance(error, UninspectableError):
            refused = self._uninspectable(flow, inspector.turn, "request", error)
            if refused is not None:
                self._refuse_request(flow, dialect, inspector, request_refusal_status(error), refused)
            return refused is not None
        if error is None:
            return False
        signal = f"request {error}: the file it completes cannot be inspected"
        finding = unread_body_finding(STAGED_UPLOAD_RULE, signal, "request", inspector)
        inspector.turn.add(finding)
        if finding.enforced:
            self._refuse_request(flow, dialect, inspector, 403, finding)
        return finding.enforced

    @staticmethod
    def _read_keys_otherwise[Read](
        turn: Turn,
        inspector: TurnInspector,
        body: bytes,
        parsed: ParsedBody,
        read: Callable[[ParsedBody], Read],
        dialect: Dialect,
    ) -> list[tuple[str, Read]]:
        """The body as readers that read its keys otherwise than the dialect read it, where they do: one
        matching keys to fields regardless of case (Go's encoding/json: ``"Messages"`` for ``messages``),
        recorded as an ``inspection.key_case`` finding, and one taking a field given in both camelCase
        and snake_case as its snake_case value, recorded as an ``inspection.duplicate_key`` finding; each
        enforced (the body refused) where the policy enforces any threat."""
        text = body_text(body)
        candidates = [
            (
                FOLDED_KEYS,
                KEY_CASE_RULE,
                "keys read otherwise by a reader ignoring case",
                folded_keys(text, dialect.CASED_KEYS),
            )
        ]
        if dialect.SNAKE_CASE_TOO:
            twice = spelled_twice(text, parsed[0], dialect.CASED_KEYS)
            candidates.append(
                (SPELLED_TWICE, DUPLICATE_KEY_RULE, "fields given in camelCase and snake_case", twice)
            )
        found: list[tuple[str, Read]] = []
        for reading, rule, said, other in candidates:
            if other is None:
                continue
            document, names = other
            read_so = read((document, [], None))
            if not names:  # noted as the document is read
                continue
            enforced = inspector.normalises
            signal = f"{said}: {', '.join(sorted(set(names))[:5])}"
            turn.add(
                body_finding(rule, signal, "body", inspection_threat(inspector.policy), enforced=enforced)
            )
            if enforced:
                turn.escalate(Decision.BLOCKED)
            found.append((reading, read_so))
        return found

    @staticmethod
    def _decide_request(
        flow: http.HTTPFlow,
        inspector: TurnInspector,
        view: RequestView,
        body: bytes | None,
        parsed: ParsedBody | None,
    ) -> None:
        dialect, reader = flow.metadata[DIALECT_KEY], flow.metadata[READER_KEY]
        verdict = inspector.inspect_request(view)
        verdict.block = verdict.block or unsent_rewrite(inspector, verdict.replacements)
        target = inspector.scan_url(pretty_host(flow.request), flow.request.path)
        fields = scan_request_fields(inspector, flow.request, body)
        read_otherwise(flow, inspector, view, body, parsed)
        if target is not None and verdict.block is None:
            flow.request.path = target
        if verdict.block is None:
            for name, scanned in fields.items():
                setattr(flow.request, name, as_headers(scanned))
        sent = body
        if body is not None:
            if verdict.replacements and verdict.block is None:
                rewritten = reader.rewrite_request(body, verdict.replacements)
                sent = inspector.scan_request(rewritten, view, original=body, original_parsed=parsed)
            else:
                sent = inspector.scan_request(body, view, parsed)
        # The URL, header and residual scans may refuse it too (a rule that ran out of time there).
        block = verdict.block or inspector.request_block()
        every_way = flow.metadata.pop(EVERY_READING_KEY, None)
        if isinstance(every_way, ReadEveryWay):
            refused = read_every_way(inspector, "request", every_way)
            if refused is not None:
                Inspect._refuse_request(flow, dialect, inspector, 415, refused)
                return
        if sent is not None and block is None:
            sent = inspector.vault_request(sent, reader, view)
        if block is not None:
            Inspect._refuse_request(flow, dialect, inspector, 403, block)
        elif sent is not None and sent != body:
            set_text(flow.request, sent, flow.metadata.get(TEXT_ENCODING_KEY))
            # Decoded once: read back by the dialect and scanned whole (a body this proxy encoded repeats
            # no key, so it shadows no value).
            document, error = load_json(sent)
            inspector.request_sent(reader.parse_request(sent, (document, [], error)), document)

    async def responseheaders(self, flow: http.HTTPFlow) -> None:
        await request_inspected(flow)
        strip_own_namespace(flow)
        mend_response_fields(flow)
        self.inspect_response_headers(flow)

    @fail_open
    def inspect_response_headers(self, flow: http.HTTPFlow) -> None:
        turn, inspector, dialect = self._state(flow)
        if turn is None or inspector is None or dialect is None or flow.response is None:
            return
        inspector.begin_response()
        inspector.begin_answer()
        response = flow.response
        fields = list(response.headers.items(multi=True))
        # An HTTP/1 reason phrase is any text an upstream likes, relayed to the agent: read with the headers.
        reason = response.reason
        if reason == status_codes.RESPONSES.get(response.status_code):
            reason = ""
        scanned = inspector.scan_headers([(REASON_FIELD, reason), *fields] if reason else fields)
        if scanned is not None:
            if reason:
                response.reason = scanned.pop(0)[1]
            response.headers = as_headers(scanned)
        encoding = codings(flow.response)
        content_type = flow.response.headers.get("content-type")
        framing = aws_framing(dialect, content_type)
        event_stream = is_event_stream(content_type) or framing is not None
        relayed = event_stream or flow.response.stream is True
        # A body read whole is refused by the response hook; one relayed leaves with these headers.
        if relayed and self._relay_settled(flow, turn, inspector, dialect):
            return
        if not event_stream:
            if flow.response.stream is True:
                self._relay_unread(
                    flow, turn, inspector, dialect, flow.response.headers.get("content-length")
                )
            return
        turn.stream = True
        filters = self._stream_filters(flow, inspector)
        session = stream_session(dialect, filters, inspector.policy)
        feed: Callable[[bytes], bytes] = session.feed
        finish: Callable[[], bytes] = session.finish
        if framing is not None:
            feed, finish = framed(framing, session)
        flow.response.stream = BodyRelay(
            turn,
            self._relay_decoder(flow, encoding),
            feed,
            finish,
            rewrites=filters.active,
            threat=inspection_threat(inspector.policy),
            read_back=(
                ReadBack(dialect, inspector, session, aws_framing(dialect, content_type))
                if filters.active
                else None
            ),
            refused=inspector.stream_refused,
        ).install(flow.response)
        flow.metadata[SESSION_KEY] = session

    @fail_open
    def inspect_response(self, flow: http.HTTPFlow) -> None:
        turn, inspector, dialect = self._state(flow)
        if turn is None or inspector is None or dialect is None or flow.response is None:
            return
        if self._finish_stream(flow, turn, inspector):
            return
        if isinstance(flow.response.stream, Substitute) or flow.metadata.pop(RELAYED_UNREAD_KEY, False):
            # Refused, or passed unread, as it arrived, on the record already: no body was held to read.
            return
        # An answer's parts are those of the boundary its own Content-Type names.
        boundary = boundary_of(flow.response.headers.get("content-type"))
        dialect = dialect.framed(boundary)
        inspector.begin_answer()
        try:
            body = read_body(flow.response, policy_of(flow, self.runtime).max_body_bytes, turn, "response")
        except UninspectableError as error:
            refused = self._uninspectable(flow, turn, "response", error)
            if refused is not None:
                self._withhold(flow, dialect, inspector, refused)
            return
        secret = self._read_binaries(flow, inspector, body, "response")
        if secret is not None:
            self._withhold(flow, dialect, inspector, secret)
            return
        if isinstance(body, BinaryBody) and dialect.READS_ANSWERS:
            unread = binary_answer_finding(dialect, inspector)
            turn.add(unread)
            if unread.enforced:
                turn.escalate(Decision.BLOCKED)
                self._withhold(flow, dialect, inspector, unread)
            return
        if not isinstance(body, bytes):
            return
        doubt = body_framing_doubt(body, flow.response.headers.get("content-type"))
        if doubt is not None:
            # Its receiver may hand the agent parts no reader here framed, as a request so framed is refused.
            framing = unread_body_finding(MULTIPART_RULE, f"response: {doubt}", "response", inspector)
            turn.add(framing)
            if framing.enforced:
                turn.escalate(Decision.BLOCKED)
                self._withhold(flow, dialect, inspector, framing)
                return
        body, encoding = as_utf8(flow.response, body)
        declared, otherwise = declared_readings(flow.response, body, transcoded=encoding is not None)
        every_way = otherwise if isinstance(otherwise, ReadEveryWay) and inspector.normalises else None
        refused = (
            self._uninspectable(flow, turn, "response", otherwise) if otherwise and not every_way else None
        )
        if refused is not None:
            self._withhold(flow, dialect, inspector, refused)
            return
        turn.inspected_bytes += len(body)
        # Decoded once: the dialect's reading and the scan of the rest of the body share it.
        parsed = load_json_with_shadowed(body)
        completion = dialect.parse_response(body, parsed)
        if completion.parse_error:
            turn.errors.append(f"response: {completion.parse_error}")
            if looks_like_event_stream(body):
                # Read as a stream, it is read in UTF-8 alone: a charset that reads otherwise is
                # uninspectable there, refused where enforced.
                refused = self._uninspectable(flow, turn, "response", every_way) if every_way else None
                if refused is not None:
                    self._withhold(flow, dialect, inspector, refused)
                    return
                self._read_as_stream(flow, dialect, inspector, body, encoding)
                return
            if dialect.READS_ANSWERS and looks_like_json(body):
                finding = unreadable_json_finding("response", completion.parse_error, inspector)
                turn.add(finding)
                if finding.enforced:
                    turn.escalate(Decision.BLOCKED)
                    self._withhold(flow, dialect, inspector, finding)
                    return
            dialect = Generic(boundary)
            completion = dialect.parse_response(body)
        keys_read_otherwise = (
            self._read_keys_otherwise(
                turn, inspector, body, parsed, lambda found: dialect.parse_response(body, found), dialect
            )
            if parsed[2] is None
            else []
        )
        if keys_read_otherwise and inspector.normalises:
            self._withhold(flow, dialect, inspector, turn.findings[-1])
            return
        secret = self._read_attachments(flow, inspector, completion.attachments, "response")
        if secret is not None:
            self._withhold(flow, dialect, inspector, secret)
            return
        # An error answer is rewritten as any other: the upstream picks the status.
        plan = inspector.inspect_completion(completion, rewrite=True)
        if plan.withheld_for is not None and not dialect.REMOVES_CALLS:
            # A call that cannot be taken out of the answer exactly is withheld with the whole answer.
            self._withhold(flow, dialect, inspector, plan.withheld_for)
            return
        rewritten = body
        if plan.rewrites:
            try:
                rewritten = dialect.rewrite_request(body, plan.joined) if plan.joined else body
            except ValueError:
                turn.errors.append("response: a secret split across texts could not be located to redact")
            rewritten = dialect.rewrite_response(
                rewritten,
                plan.text_map or (lambda text: text),
                plan.drop_tool_calls,
                plan.notice,
                parsed if rewritten is body else None,
            )
        if boundary is not None:
            rewritten = inspector.scan_assembled_parts(rewritten, boundary)
        rewritten = inspector.scan_body(rewritten, body, parsed)
        refused = inspector.response_refused()
        if refused is not None:
            self._withhold(flow, dialect, inspector, refused)
            return
        if parsed[1] and rewritten == body:
            # Left as it came (nothing is enforced): what a reader keeping first values reads is recorded.
            other = dialect.parse_response(encode_json(first_values(body_text(body))))
            inspector.inspect_other_readings([(READINGS[FIRST_VALUE], other)])
        inspector.inspect_other_readings([(READINGS[name], other) for name, other in keys_read_otherwise])
        inspector.inspect_other_readings(
            [(READINGS[DECLARED], read_response(dialect, other, boundary)) for other in declared]
        )
        refused = read_every_way(inspector, "response", every_way) if every_way is not None else None
        if refused is not None:
            turn.escalate(Decision.BLOCKED)
            self._withhold(flow, dialect, inspector, refused)
            return
        if rewritten != body:
            set_text(flow.response, rewritten, encoding)
            inspector.response_sent(dialect.parse_response(rewritten), rewritten)
        # Last, once every check has read the upstream's words: what the agent gets has its secrets back.
        restored = inspector.restore_response(rewritten, dialect)
        if restored != rewritten:
            set_text(flow.response, restored, encoding)

    async def error(self, flow: http.HTTPFlow) -> None:
        await request_inspected(flow)
        self.finish_broken_stream(flow)
        # The provider keeps an answer whoever reads it to its end: an agent that went away holds its id.
        self.remember_withheld(flow)

    @fail_open
    def finish_broken_stream(self, flow: http.HTTPFlow) -> None:
        """A stream that broke off: what arrived before the break is still inspected and recorded."""
        turn, inspector, _ = self._state(flow)
        if turn is not None and inspector is not None:
            self._finish_stream(flow, turn, inspector)

    @staticmethod
    def _refuse_request(
        flow: http.HTTPFlow, dialect: Dialect, inspector: TurnInspector, status: int, finding: Finding
    ) -> None:
        """The request is refused for ``finding`` before it leaves: the agent gets ``status`` in its API's
        shape, and none of the request's findings left (``TurnInspector.request_blocked``)."""
        turn = inspector.turn
        flow.response = refusal(dialect, turn, status, block_message(finding, turn.event_id))
        inspector.request_blocked()
        turn.escalate(Decision.BLOCKED)

    @staticmethod
    def _withhold(flow: http.HTTPFlow, dialect: Dialect, inspector: TurnInspector, finding: Finding) -> None:
        """The answer is refused for ``finding``: the agent gets a 502 in its API's shape instead, and
        none of the answer's findings reached it (``TurnInspector.answer_withheld``)."""
        turn = inspector.turn
        flow.response = refusal(dialect, turn, 502, block_message(finding, turn.event_id))
        inspector.answer_withheld()

    def _uninspectable(
        self, flow: http.HTTPFlow, turn: Turn, where: str, error: UninspectableError
    ) -> Finding | None:
        """Record a body no detector can read; its finding when the policy enforces a threat decided on
        what a body says (``reading_threat``), and the body must not pass."""
        policy = policy_of(flow, self.runtime)
        enforced = reading_threat(policy) is not None
        finding = uninspectable_finding(where, error, inspection_threat(policy), enforced=enforced)
        turn.errors.append(f"{where}: {error}")
        turn.add(finding)
        if not finding.enforced:
            return None
        turn.escalate(Decision.BLOCKED)
        return finding

    def _refuse_relayed(
        self, flow: http.HTTPFlow, turn: Turn, dialect: Dialect, error: UninspectableError
    ) -> bool:
        """A response relayed as it arrives (an event stream, a body over the cap) that cannot be read as
        its client reads it (a coding that cannot be undone, a charset other than UTF-8): where enforced
        the agent gets a 502 in its API's shape instead, and the upstream's bytes are dropped (True);
        elsewhere it passes, on the record."""
        refused = self._uninspectable(flow, turn, "response", error)
        if refused is None:
            return False
        self._substitute(flow, turn, dialect, refused)
        return True

    @staticmethod
    def _substitute(flow: http.HTTPFlow, turn: Turn, dialect: Dialect, refused: Finding) -> None:
        """A response about to be relayed is answered with a 502 in its API's shape instead, naming
        ``refused``; the upstream's bytes are dropped."""
        assert flow.response is not None
        replacement = refusal(dialect, turn, 502, block_message(refused, turn.event_id))
        inspector = Inspect._state(flow)[1]
        if inspector is not None:
            inspector.answer_withheld()
        flow.response.status_code = replacement.status_code
        flow.response.reason = replacement.reason
        flow.response.headers = replacement.headers
        flow.response.stream = Substitute(replacement.content or b"")

    @staticmethod
    def _finish_stream(flow: http.HTTPFlow, turn: Turn, inspector: TurnInspector) -> bool:
        session = flow.metadata.pop(SESSION_KEY, None)
        if not isinstance(session, StreamSession):
            return False
        turn.errors.extend(f"stream: {note}" for note in session.notes)
        turn.stream_events += session.events
        turn.inspected_bytes += session.bytes
        inspector.inspect_completion(session.completion, rewrite=False)
        inspector.inspect_other_readings(session.other_readings())
        inspector.record_ambiguities(session.ambiguities, "stream", normalised=session.filters.active)
        record_unread_events(inspector, session)
        relay = flow.response.stream if flow.response is not None else None
        if isinstance(relay, BodyRelay) and relay.timed_out:
            inspector.response_refused()  # what the whole of it reads as is refused with the rest
        if isinstance(relay, BodyRelay) and relay.read_back is not None:
            relay.read_back.prove()
        return True

    @fail_open
    def websocket_message(self, flow: http.HTTPFlow) -> None:
        turn, inspector, _ = self._state(flow)
        if turn is None or inspector is None or flow.websocket is None:
            return
        message = flow.websocket.messages[-1]
        relayed = Relayed.of(flow)
        coming = relayed.coming
        held = message.injected or relayed.closed
        if held and not message.from_client and coming and coming[0] == message.content:
            coming.popleft()  # a message held and let out: read when it came
            relayed.count += 1
            return
        where = message_place(flow)
        self._read_message(flow, inspector, message, where)
        if not message.from_client:
            content = None if message.dropped else message.content
            sending = inspector.hold_message(content, is_text=message.is_text, where=where)
            # The agent hears of a call withheld before the messages its decision lets out.
            refused, inspector.calls_refused = inspector.calls_refused, []
            for finding in refused:
                tell_refused(flow, turn, finding, None)
            self._send_in_place(flow, message, sending, coming)

    def _read_message(
        self, flow: http.HTTPFlow, inspector: TurnInspector, message: WebSocketMessage, where: str
    ) -> None:
        # A binary frame whose bytes are text is read as text by a receiver that decodes it: inspected
        # like a text frame, and rewritten as the same kind of frame.
        text = message.text if message.is_text else readable_text(message.content)
        if text is None:
            # Not rewritable: a message holding what the policy enforces against is not delivered.
            read = self._read_binary(
                flow,
                inspector,
                message.content,
                where,
                "websocket",
                read_as=Source.USER if message.from_client else None,
            )
            if read is not None:
                refuse_message(flow, inspector.turn, read, message)
            return
        if inspector.refuses_nesting(text, where):
            message.drop()
            close_websocket(flow)
            return
        forwarded = inspector.inspect_message(text, from_client=message.from_client, where=where)
        withheld = (
            None
            if forwarded is None
            else inspector.gate_message(text, from_client=message.from_client, where=where)
        )
        if forwarded is None:
            # A rule ran out of time on it where that is enforced: no part of it is known to be clean.
            refuse_message(flow, inspector.turn, inspector.message_refusal(), message)
        elif withheld is not None:
            # A call or tool result of unknown layout cannot be taken out of it exactly: withheld whole.
            refuse_message(flow, inspector.turn, withheld, message)
        elif forwarded != text:
            # A binary message takes any bytes: what stood for undecodable ones goes back as them.
            content = text_message(forwarded) if message.is_text else encode_text(forwarded)
            if content is None:
                refuse_message(flow, inspector.turn, not_text(inspector, where), message)
            else:
                message.content = content

    @staticmethod
    def _send_in_place(
        flow: http.HTTPFlow, message: WebSocketMessage, sending: Sending | None, coming: deque[bytes]
    ) -> None:
        """An upstream's message goes on (``sending`` None) or gives way to ``sending``, the messages held
        with it that go now, injected in order. While messages injected are on their way, one that
        would go as it stands goes after them, injected too: the agent gets the upstream's messages in the
        order they came."""
        if sending is None:
            if not coming or message.dropped:
                return
            sending = [(message.content, message.is_text)]
        message.drop()
        for content, as_text in sending:
            coming.append(content)
            ctx.master.commands.call("inject.websocket", flow, True, content, as_text)

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        UPSTREAM_CLOSING[flow.server_conn] = partial(self._upstream_closing, weakref.ref(flow))

    def _upstream_closing(self, flow_ref: weakref.ref[http.HTTPFlow]) -> LastWords:
        """The upstream closes, the agent's side still open: what goes to the agent before the close."""
        flow = flow_ref()
        if flow is None:
            return LastWords([])
        self._end_messages(flow, True)
        said = flow.metadata.pop(LAST_WORDS_KEY, None)
        return said if isinstance(said, LastWords) else LastWords([])

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        """Where the connection ended otherwise than by the upstream's close (the agent's, the proxy's),
        what was held is read to its end, and recorded undelivered."""
        if UPSTREAM_CLOSING.pop(flow.server_conn, None) is not None:
            self._end_messages(flow, False)

    @fail_open
    def _end_messages(self, flow: http.HTTPFlow, delivering: bool) -> None:
        """The calls an upstream streamed over the connection's messages and left undecided are decided
        on what they got, and the model's words it held read to their end (``end_messages``). Where
        ``delivering``, the agent's side still open, what goes before the close is left for it
        (``LAST_WORDS_KEY``): the agent told of each call withheld (a Realtime ``error`` event, else the
        close's reason), then what was held and not withheld. Elsewhere the turn records what was not told."""
        turn, inspector, _ = self._state(flow)
        if turn is None or inspector is None:
            return
        sending = inspector.end_messages(delivering=delivering)
        refused, inspector.calls_refused = inspector.calls_refused, []
        if not delivering:
            if refused:
                turn.errors.append(
                    f"websocket: {len(refused)} tool calls withheld at the close were not told"
                )
            return
        refusal = ""
        if refused and speaks_realtime(flow.request.path):
            told = [
                realtime_error(block_message(finding, turn.event_id), BLOCKED_CODE, None)
                for finding in refused
            ]
            sending = [(error, True) for error in told] + sending
        elif refused:
            refusal = close_reason(refused[0].threat, refused[0].rule, turn.event_id)
        relayed = Relayed.of(flow)
        relayed.closed = True
        relayed.coming += (content for content, _ in sending)
        flow.metadata[LAST_WORDS_KEY] = LastWords(sending, refusal)

    def _read_attachments(
        self, flow: http.HTTPFlow, inspector: TurnInspector, files: list[Attachment], side: str
    ) -> Finding | None:
        """The files a request carries encoded, or an answer gives to be read, that do not read as text (a
        PDF, an archive), each read as binary content (``_read_binary``) written by whom it says (a
        tool's result, a retrieved document), with the text it holds where its media type says it is
        text; one that does not decode is recorded unread, refusing where the policy enforces a threat
        decided on what a message says: the finding that refuses the message, if any."""
        for file in files:
            if file.undecodable is not None:
                signal = f"the file at {file.where} does not decode ({file.undecodable}); it was not read"
                finding = body_finding(
                    UNREAD_ATTACHMENT_RULE,
                    signal,
                    file.where,
                    inspection_threat(inspector.policy),
                    enforced=inspector.normalises,
                )
                inspector.turn.add(finding)
                if finding.enforced:
                    return finding
                continue
            inspector.turn.errors.append(f"{side}: the file at {file.where} read in its printable runs")
            content = file.content
            if file.declared_text is not None:
                content = b"\x00".join([content, file.declared_text.encode("utf-8", "surrogateescape")])
            refused = self._read_binary(flow, inspector, content, file.where, side, read_as=file.source)
            if refused is not None:
                return refused
        return None

    def _stream_filters(self, flow: http.HTTPFlow, inspector: TurnInspector) -> StreamFilters:
        """The filters of an answer's event stream, with a reader of the files its events give to be read
        that do not read as text, each read as a JSON answer's is (``_read_attachments``)."""

        def read_file(file: Attachment) -> str | None:
            refused = self._read_attachments(flow, inspector, [file], "response")
            return None if refused is None else block_message(refused, inspector.turn.event_id)

        return dataclasses.replace(inspector.stream_filters(), file_reader=read_file)

    def _read_binaries(
        self, flow: http.HTTPFlow, inspector: TurnInspector, body: bytes | BinaryBody | None, side: str
    ) -> Finding | None:
        """A binary body, or the binary parts of a multipart one (files, images; the parts of the boundary
        the message's Content-Type names), each read as binary (``_read_binary``): the finding that
        refuses the message, if any."""
        if isinstance(body, BinaryBody):
            return self._read_binary(
                flow, inspector, body.content, f"{side} body", side, read_as=_agent_read_as(side)
            )
        message = flow.request if side == "request" else flow.response
        boundary = boundary_of(message.headers.get("content-type")) if message is not None else None
        for where, content in binary_parts(body, boundary) if body is not None else []:
            inspector.turn.errors.append(f"{side}: binary part {where} read in its printable runs")
            refused = self._read_binary(
                flow, inspector, content, f"{side} body {where}", side, read_as=_agent_read_as(side)
            )
            if refused is not None:
                return refused
        return None

    def _read_binary(
        self,
        flow: http.HTTPFlow,
        inspector: TurnInspector,
        content: bytes,
        where: str,
        side: str,
        *,
        read_as: Source | None,
    ) -> Finding | None:
        """Binary content read in its printable runs, and in those of what the compressed streams it
        starts with decode to (``proxy.wire.embedded``), within the inspection cap and the bomb ratio
        (``TurnInspector.inspect_binary``: secrets and PII; the runs that read as words for what the same
        text from ``read_as``, or in an answer, is read for); one that stops there is an uninspectable
        finding. Returns the finding that refuses it where the policy enforces, else None (recorded)."""
        turn = inspector.turn
        inside = opened(content, policy_of(flow, self.runtime).max_body_bytes)
        turn.inspected_bytes += len(content) + sum(map(len, inside.contents))
        if inside.contents:
            turn.errors.append(f"{where}: {len(inside.contents)} compressed stream(s) inside opened and read")
        secret = inspector.inspect_binary(
            b"\x00".join([content, *inside.contents]),
            where,
            read_as=read_as,
            answer=side == "response",
        )
        unread = self._uninspectable(flow, turn, side, inside.error) if inside.error is not None else None
        return secret or unread

    def _read_as_stream(
        self,
        flow: http.HTTPFlow,
        dialect: Dialect,
        inspector: TurnInspector,
        body: bytes,
        encoding: TextEncoding | None,
    ) -> None:
        """An event stream that did not say so: read and filtered as the stream it is. A stream the session
        stops reading (as a relayed one is cut there) does not pass where it rewrites: raised into the
        hook, it would leave the upstream's whole body unread."""
        assert flow.response is not None
        turn = inspector.turn
        filters = self._stream_filters(flow, inspector)
        session = stream_session(dialect, filters, inspector.policy)
        try:
            filtered = session.feed(body) + session.finish()
        except Exception as error:  # what was read cannot be sent, and what was not must not be
            turn.errors.append(f"response: {type(error).__name__} reading the stream")
            # A rule that ran out of time there (``ScanTimeout``) is a finding, enforced by the refusal.
            inspector.response_refused()
            if filters.active:
                message = f"egressguard could not read this response; audit event {turn.event_id}"
                flow.response = refusal(dialect, turn, 502, message)
                inspector.answer_withheld()
            return
        inspector.inspect_completion(session.completion, rewrite=False)
        inspector.inspect_other_readings(session.other_readings())
        inspector.record_ambiguities(session.ambiguities, "stream", normalised=filters.active)
        record_unread_events(inspector, session)
        refused = inspector.response_refused()
        if refused is not None:
            flow.response = refusal(dialect, turn, 502, block_message(refused, turn.event_id))
            return
        if filtered != body:
            read_back = ReadBack(dialect, inspector)
            read_back.feed(filtered)
            read_back.prove()
            if read_back.unproved:
                message = f"egressguard could not read back this response; audit event {turn.event_id}"
                flow.response = refusal(dialect, turn, 502, message)
                inspector.answer_withheld()
                return
            set_text(flow.response, filtered, encoding)

    @fail_open
    def responseovercap(self, flow: http.HTTPFlow) -> None:
        """An answer of no announced length grew past the inspection cap while held, and is relayed as it
        arrives from here on (``addons.wire.early``): none of it has reached the agent yet."""
        turn, inspector, dialect = self._state(flow)
        if turn is None or inspector is None or dialect is None or flow.response is None:
            return
        if not self._relay_settled(flow, turn, inspector, dialect):
            self._relay_unread(flow, turn, inspector, dialect, None)

    def _relay_settled(
        self, flow: http.HTTPFlow, turn: Turn, inspector: TurnInspector, dialect: Dialect
    ) -> bool:
        """What every answer relayed as it arrives must pass before any of it leaves: no rule ran out of
        time on the request where that is enforced, a coding that can be undone (else refused where
        enforced, or passed unread on the record), and a charset read as UTF-8, as it is read on its way
        (a client honouring another would read what no detector did). True when the answer is settled
        here, refused or passed unread."""
        assert flow.response is not None
        refused = inspector.stream_refused()
        if refused is not None:
            self._substitute(flow, turn, dialect, refused)
            return True
        encoding = codings(flow.response)
        if not supported(encoding):
            if not self._refuse_relayed(flow, turn, dialect, UnsupportedCodingError(encoding)):
                flow.response.stream = True
                flow.metadata[RELAYED_UNREAD_KEY] = True
            return True
        charsets = declared_charsets(flow.response.headers.get("content-type"))
        if all(map(reads_as_utf8, charsets)):
            return False
        declared = ", ".join(map(repr, charsets))
        error = UnreadableEncodingError(CHARSET_RULE, f"is relayed as it arrives in charset {declared}")
        return self._refuse_relayed(flow, turn, dialect, error)

    def _relay_unread(
        self,
        flow: http.HTTPFlow,
        turn: Turn,
        inspector: TurnInspector,
        dialect: Dialect,
        announced: str | None,
    ) -> None:
        """An answer over the inspection cap is relayed as it arrives, read by the secret redactor alone:
        no detector gates the calls or reads the results in it. A model API's or an MCP server's answer
        (whose size the model or the server chooses) is refused where a threat decided on a body's words
        is enforced, as a request over the cap is; any other (a download) passes through the redactor.
        Each is on the record as unread. ``announced``: the length the answer announced, if any."""
        assert flow.response is not None
        policy = policy_of(flow, self.runtime)
        cap = policy.max_body_bytes
        error = OverCapError(
            f"grew past the inspection cap of {cap} on its way"
            if announced is None
            else f"has {announced} bytes, over the inspection cap of {cap}"
        )
        if dialect.READS_ANSWERS:
            if self._refuse_relayed(flow, turn, dialect, error):
                return
        else:
            turn.add(uninspectable_finding("response", error, inspection_threat(policy), enforced=False))
        self._redact_large_body(flow, turn, inspector)

    def _redact_large_body(self, flow: http.HTTPFlow, turn: Turn, inspector: TurnInspector) -> None:
        """mitmproxy relays a body over the inspection cap as it arrives (``stream_large_bodies``): in
        enforce mode its text still passes a redactor on the way."""
        assert flow.response is not None
        if flow.response.stream is not True:
            return  # read whole: the response hook inspects it
        encoding = codings(flow.response)
        redactor = inspector.body_redactor()
        if redactor is None or not supported(encoding):
            return

        flow.response.stream = BodyRelay(
            turn,
            self._relay_decoder(flow, encoding),
            redactor.feed,
            redactor.flush,
            rewrites=True,
            threat=inspection_threat(inspector.policy),
            refused=inspector.stream_refused,
        ).install(flow.response)

    def _relay_decoder(self, flow: http.HTTPFlow, encoding: str) -> StreamDecoder:
        """The decoder of a body relayed as it arrives: its scan runs on the event loop, chunk by chunk,
        so no chunk may decode to more than ``BOMB_RATIO`` times its size once past ``BOMB_FLOOR``."""
        cap = policy_of(flow, self.runtime).max_stream_decoded_bytes
        return StreamDecoder(encoding, cap, max_ratio=BOMB_RATIO)

    @staticmethod
    def _state(flow: http.HTTPFlow) -> tuple[Turn | None, TurnInspector | None, Dialect | None]:
        inspector = flow.metadata.get(INSPECTOR_KEY)
        dialect = flow.metadata.get(DIALECT_KEY)
        return (
            turn_of(flow),
            inspector if isinstance(inspector, TurnInspector) else None,
            dialect if isinstance(dialect, Dialect) else None,
        )
