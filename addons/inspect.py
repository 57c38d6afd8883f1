"""Reads every request and response through its API dialect and applies what the detectors decide.

Requests are parsed into the neutral exchange and inspected before they leave; JSON responses are
inspected and, in enforce mode, rewritten; SSE responses are streamed through the dialect's incremental
session, never buffered. Nothing here raises into mitmproxy: a body that cannot be read is recorded on
the turn and passed through as it is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Set
from functools import wraps

import structlog
from mitmproxy import http

from addons.turns import turn_of
from proxy.dialects import Dialect, StreamSession, detect, is_event_stream
from proxy.exchange import RequestView
from proxy.inspection import TurnInspector
from proxy.runtime import Runtime
from proxy.turn import Turn

log = structlog.get_logger("egressguard")

DIALECT_KEY = "egressguard.dialect"
INSPECTOR_KEY = "egressguard.inspector"
BINARY_TYPES = (
    "image/",
    "audio/",
    "video/",
    "application/octet-stream",
    "application/pdf",
    "application/zip",
    "multipart/",
)
FINGERPRINT_KEY_FILE = "fingerprint.key"


def fail_open[Hook: Callable[..., None]](hook: Hook) -> Hook:
    """A detector bug must never take an agent's request down: record it on the turn and carry on."""

    @wraps(hook)
    def guarded(self: Inspect, flow: http.HTTPFlow) -> None:
        try:
            hook(self, flow)
        except Exception as error:  # fail open is the policy; the error is recorded
            turn = turn_of(flow)
            if turn is not None:
                turn.errors.append(f"inspect: {type(error).__name__} in {hook.__name__}")
            log.error("inspect.failed", hook=hook.__name__, error=type(error).__name__)

    return guarded  # type: ignore[return-value]


def read_body(message: http.Message, cap: int, turn: Turn, what: str) -> bytes | None:
    """The decoded body if it can and should be inspected; otherwise None, with the reason on the turn."""
    raw = message.raw_content
    if raw is None and message.stream:
        turn.errors.append(f"{what}: body over the inspection cap streamed through uninspected")
        return None
    if not raw:
        return None
    content_type = message.headers.get("content-type", "").lower()
    if content_type.startswith(BINARY_TYPES):
        turn.errors.append(f"{what}: binary body ({content_type.split(';')[0]}) not inspected")
        return None
    if len(raw) > cap:
        turn.errors.append(f"{what}: body of {len(raw)} bytes is over the inspection cap of {cap}")
        return None
    try:
        content = message.get_content(strict=True)
    except ValueError:
        encoding = message.headers.get("content-encoding", "")
        turn.errors.append(f"{what}: body does not decode as content-encoding {encoding!r}; not inspected")
        return None
    if content is None or len(content) > cap:
        turn.errors.append(f"{what}: decoded body is over the inspection cap of {cap}")
        return None
    return content


class Inspect:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def configure(self, updated: Set[str]) -> None:
        """Load the rule packs and the model now, not on the first request."""
        self.runtime.load_detectors()

    @fail_open
    def request(self, flow: http.HTTPFlow) -> None:
        turn = turn_of(flow)
        if turn is None or flow.response is not None:
            return
        policy = self.runtime.policy
        body = read_body(flow.request, policy.max_body_bytes, turn, "request")
        dialect = detect(
            flow.request.method, flow.request.path, flow.request.headers.get("content-type"), body or b""
        )
        if body is None:
            view = RequestView(dialect=dialect.name, model=dialect.model_hint)
        else:
            view = dialect.parse_request(body)
            if view.parse_error:
                turn.errors.append(f"request: {view.parse_error}")
        turn.request = view
        turn.stream = view.stream
        flow.metadata[DIALECT_KEY] = dialect
        inspector = TurnInspector(self.runtime.detectors, policy, self.runtime.state, turn)
        flow.metadata[INSPECTOR_KEY] = inspector
        if view.stream:
            # Compressed event streams cannot be read event by event.
            flow.request.headers["accept-encoding"] = "identity"
        verdict = inspector.inspect_request(view)
        if verdict.block is not None:
            finding = verdict.block
            status, headers, payload = dialect.error_response(
                403,
                f"egressguard blocked this request: {finding.threat} ({finding.rule}); "
                f"audit event {turn.event_id}",
                "egressguard_blocked",
            )
            flow.response = http.Response.make(
                status, payload, {**headers, "x-egressguard-event": turn.event_id}
            )
        elif verdict.replacements and body is not None:
            flow.request.content = dialect.rewrite_request(body, verdict.replacements)

    @fail_open
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        turn, inspector, dialect = self._state(flow)
        if turn is None or inspector is None or dialect is None or flow.response is None:
            return
        if not is_event_stream(flow.response.headers.get("content-type")):
            return
        if flow.response.headers.get("content-encoding", "identity").lower() != "identity":
            turn.errors.append("response: compressed event stream passed through uninspected")
            flow.response.stream = True
            return
        turn.stream = True
        session = dialect.stream_session(inspector.stream_filters())
        digest = hashlib.sha256()

        def relay(chunk: bytes) -> list[bytes]:
            out = session(chunk)
            digest.update(out)
            if not chunk:
                turn.output_sha256 = digest.hexdigest()
            # An empty chunk written to a chunked HTTP/1 body is its terminator: send nothing instead
            # while a filter holds text back.
            return [out] if out else []

        flow.response.stream = relay
        flow.metadata["egressguard.session"] = session

    @fail_open
    def response(self, flow: http.HTTPFlow) -> None:
        turn, inspector, dialect = self._state(flow)
        if turn is None or inspector is None or dialect is None or flow.response is None:
            return
        session = flow.metadata.get("egressguard.session")
        if isinstance(session, StreamSession):
            turn.errors.extend(f"stream: {note}" for note in session.notes)
            inspector.inspect_completion(session.completion, rewrite=False)
            return
        body = read_body(flow.response, self.runtime.policy.max_body_bytes, turn, "response")
        if body is None:
            return
        completion = dialect.parse_response(body)
        if completion.parse_error:
            turn.errors.append(f"response: {completion.parse_error}")
        plan = inspector.inspect_completion(completion, rewrite=flow.response.status_code < 400)
        if plan.rewrites:
            redacted = inspector.redact_tool_calls(body, plan.redact_calls) if plan.redact_calls else body
            rewritten = dialect.rewrite_response(
                redacted, plan.text_map or (lambda text: text), plan.drop_tool_calls, plan.notice
            )
            if rewritten != body:
                flow.response.content = rewritten

    @staticmethod
    def _state(flow: http.HTTPFlow) -> tuple[Turn | None, TurnInspector | None, Dialect | None]:
        inspector = flow.metadata.get(INSPECTOR_KEY)
        dialect = flow.metadata.get(DIALECT_KEY)
        return (
            turn_of(flow),
            inspector if isinstance(inspector, TurnInspector) else None,
            dialect if isinstance(dialect, Dialect) else None,
        )
