"""The ``agent.turn`` audit event, built from a finished turn. Raw text never enters it: only hashes."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Hashable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from proxy.dialects import MCP
from proxy.model import Mode
from proxy.scanning.redact import RedactionStyle, fingerprint, placeholder, redact_json
from proxy.scanning.rulepack import SCAN_TIMEOUT_RULE, Scanner
from proxy.scanning.validators import shannon_entropy
from proxy.turn import Turn


def turn_event(
    turn: Turn,
    *,
    mode: Mode,
    method: str,
    path: str,
    status: int | None,
    forwarded: bool | None = None,
    upstream_ms: float | None = None,
    input_sha256: str | None,
    output_sha256: str | None,
) -> dict[str, Any]:
    context = turn.context
    request = turn.request
    completion = turn.completion
    usage = completion.usage if completion else None
    calls = completion.tool_calls if completion else []
    if request is not None and request.dialect == MCP.name:
        # An MCP request is itself the tool call; its response only carries the result.
        calls = request.tool_calls
    tool_names = [call.name for call in calls]
    return {
        "type": "agent.turn",
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "event_id": turn.event_id,
        "agent_id": context.agent_id,
        "role": context.role,
        "user_id": context.user_id,
        "session_id": context.session_id,
        "purpose": context.purpose,
        "consent_id": context.consent_id,
        "approval_id": context.approval_id,
        "egress_host": turn.egress_host,
        "method": method,
        "path": path,
        "status": status,
        "forwarded": forwarded,
        "dialect": request.dialect if request else None,
        "model": (completion.model if completion and completion.model else None)
        or (request.model if request else None),
        "stream": turn.stream,
        "latency_ms": turn.reported_latency_ms
        if turn.reported_latency_ms is not None
        else round((time.monotonic() - turn.started) * 1000, 2),
        "upstream_ms": upstream_ms,
        "tokens_in": usage.tokens_in if usage else None,
        "tokens_out": usage.tokens_out if usage else None,
        "tools": tool_names,
        "findings": [finding.to_event() for finding in turn.findings],
        "refusal": turn.refusal,
        "context_sources": list(turn.context_sources),
        "decision": str(turn.decision),
        "mode": str(mode),
        "input_sha256": turn.input_sha256 or input_sha256,
        "output_sha256": turn.output_sha256 or output_sha256,
        "errors": list(turn.errors),
        **({"drill": turn.drill} if turn.drill is not None else {}),
        **({"reported_by": turn.reported_by} if turn.reported_by is not None else {}),
    }


AGENT_CONTROLLED = (
    "user_id",
    "session_id",
    "purpose",
    "consent_id",
    "approval_id",
    "egress_host",
    "path",
    "model",
    "tools",
    "errors",
)
"""Event fields whose text comes from agents or upstreams (headers, host names, paths, error messages):
a secret can hide in any of them (a webhook token in a path, data in a host label)."""


_FINDING_TEXTS = ("signal", "extra")
"""A finding's parts scrubbed as agent-controlled text."""
URL_FIELDS = ("path", "egress_host")
"""Fields that hold a URL part: read percent-decoded, and token-like pieces masked even without a rule."""
MASKED_FIELDS = (*URL_FIELDS, "errors", "tools")
"""Fields whose token-like pieces are masked even without a rule."""
URL_MASK_RULE = "url-token"
MAX_RECORDED_TEXT = 512
"""Characters an event keeps of one agent-controlled text (a user id, a path, a finding's signal)."""
_URL_RUN = re.compile(r"[A-Za-z0-9_\-.~+=]{16,}")
_HOST_LABEL_RUN = re.compile(r"[A-Za-z0-9_\-~+=]{16,}")
_PIECE_SEPARATORS = re.compile(r"[-_.~]")
MIN_TOKEN_PIECE = 16
MIN_TOKEN_ENTROPY = 3.0
"""Bits per character: random tokens of 16 or more characters score 3.5 and up; words, dates, version
strings and hyphenated model names have no piece this long that mixes letters and digits."""


def looks_like_token(run: str) -> bool:
    """A run of URL characters holding a piece of 16+ characters that mixes letters and digits with the
    entropy of a random string (an API key, a webhook secret, an id). Hyphenated words, dates, UUIDs
    (pieces of at most 12) and model names (``claude-3-5-sonnet-20241022``) do not."""
    for piece in _PIECE_SEPARATORS.split(run):
        if (
            len(piece) >= MIN_TOKEN_PIECE
            and any(char.isdigit() for char in piece)
            and any(char.isalpha() for char in piece)
            and shannon_entropy(piece) >= MIN_TOKEN_ENTROPY
        ):
            return True
    return False


def mask_url_tokens(text: str, key: bytes) -> str:
    """``text`` (a decoded path or host, a name an agent chose) with every token-like run replaced by a
    keyed placeholder: the same id gives the same placeholder, so records still correlate, and a secret
    no rule knows (or one glued to other characters, ``/botghp_...``) is never written."""
    return _mask_token_runs(_URL_RUN, text, key)


def recorded_text(text: str, scanner: Scanner, key: bytes) -> str:
    """An agent-controlled text of no URL (a user or session id) as an event records it (``scrub``): each
    secret its ``glued_readings`` hold replaced by a keyed placeholder, the rest as sent, so a store that
    keeps it matches the records."""
    redacted, _ = redact_json(text, scanner, key=key, remember=True, glued=True)
    return str(redacted)


def recorded_name(name: str, scanner: Scanner, key: bytes) -> str:
    """``name`` as it may be recorded, stored or echoed: each secret its ``glued_readings`` hold replaced
    by a keyed placeholder, then its token-like runs masked (``mask_url_tokens``). The same name always
    reads the same, so records and approvals still match it."""
    redacted, _ = redact_json(name, scanner, RedactionStyle.HASH, key=key, remember=True, glued=True)
    return mask_url_tokens(redacted, key)


def mask_host_labels(text: str, key: bytes) -> str:
    """``text`` (a host name, or a sentence naming one) with every token-like label replaced as in
    ``mask_url_tokens``, label by label: the registered domain stays readable when a label before it
    carries data."""
    return _mask_token_runs(_HOST_LABEL_RUN, text, key)


def _mask_token_runs(runs: re.Pattern[str], text: str, key: bytes) -> str:
    # An agent calls the same few paths and hosts turn after turn: a short text's masking is kept.
    return (_kept_masking if len(text) <= KEPT_MASKING_CHARS else _masking)(runs, text, key)


KEPT_MASKING_CHARS = 256
"""The longest text whose masked spelling is kept (the 1,024 most recent)."""


def _masking(runs: re.Pattern[str], text: str, key: bytes) -> str:
    return runs.sub(
        lambda run: (
            placeholder(URL_MASK_RULE, run.group(), RedactionStyle.HASH, key)
            if looks_like_token(run.group())
            else run.group()
        ),
        text,
    )


_kept_masking = functools.lru_cache(maxsize=1024)(_masking)


def bounded_text(text: str, key: bytes, limit: int = MAX_RECORDED_TEXT) -> str:
    """``text``, or when longer than ``limit`` its first characters with the count of the rest and a
    keyed hash of the whole (the same value always ends the same way, so records still correlate)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}[{len(text) - limit} more characters:{fingerprint(text, key)[:8]}]"


def _bounded(value: Any, key: bytes) -> tuple[Any, bool]:
    """``value`` with every string in it bounded (``bounded_text``), and whether any was cut."""
    if isinstance(value, str):
        cut = bounded_text(value, key)
        return cut, cut is not value
    if isinstance(value, list | tuple):
        items = [_bounded(item, key) for item in value]
        return ([item for item, _ in items], True) if any(cut for _, cut in items) else (value, False)
    if isinstance(value, dict):
        entries = {name: _bounded(item, key) for name, item in value.items()}
        if any(cut for _, cut in entries.values()):
            return {name: item for name, (item, _) in entries.items()}, True
    return value, False


def scrub(event: dict[str, Any], scanner: Scanner, key: bytes) -> dict[str, Any]:
    """The event with every detected secret in agent-controlled text replaced by its placeholder, so
    the audit log, the log line and alerts built from it never carry one. URL parts are read decoded and
    lose token-like pieces too (see ``mask_url_tokens``). Each of those texts is bounded: a header, a
    path or an upstream's error message of any length costs the record at most ``MAX_RECORDED_TEXT``
    characters of it."""
    texts = _scrubbed_texts(event)
    slot = (scanner, key, texts) if texts is not None else None
    kept = _kept_scrubs.get(slot, _UNKNOWN) if slot is not None else _UNKNOWN
    if kept is _UNKNOWN:
        changed, timed_out = _scrubbed(event, scanner, key)
        if slot is not None and not timed_out:
            if len(_kept_scrubs) >= KEPT_SCRUBS:
                _kept_scrubs.clear()
            _kept_scrubs[slot] = _frozen(list(changed), limit=None) if changed is not None else None
    else:
        changed = _thawed(kept) if kept is not None else None
    if changed is None:
        return event
    clean, scrubbed = changed
    findings = [{**original, **parts} for original, parts in zip(event["findings"], scrubbed, strict=True)]
    return {**event, **clean, "findings": findings}


KEPT_SCRUBS = 1024
"""How many recent events' scrubs are kept, by their agent-controlled texts (``_scrubbed_texts``): an
agent sends the same ids, host, path and model turn after turn."""
_kept_scrubs: dict[tuple[Scanner, bytes, Hashable], Hashable] = {}
_UNKNOWN = object()


class _Unkept(Exception):
    """A value ``_frozen`` does not keep: too long a text, or a type decoded JSON does not hold (a tuple,
    which scrubbing does not read as it reads a list)."""


_MAPPING, _FLOAT, _TRUE, _FALSE = object(), object(), object(), object()
"""Mark what a frozen value was where equal Python values encode apart: a dict, not a list; a float, not
an int (``1.0`` and ``1``, ``-0.0`` and ``0.0``); ``true``, not ``1``."""


def _frozen(value: Any, limit: int | None = KEPT_MASKING_CHARS) -> Hashable:
    """``value`` (decoded JSON) as a hashable that equals another only where both encode alike, and
    thaws back to it (``_thawed``); texts longer than ``limit`` are not kept."""
    kind = type(value)
    if kind is str:
        if limit is not None and len(value) > limit:
            raise _Unkept
        return value  # type: ignore[no-any-return]
    if value is None or kind is int:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        return _TRUE if value else _FALSE
    if kind is float:
        return (_FLOAT, repr(value))
    if kind is list:
        return tuple([_frozen(item, limit) for item in value])
    if kind is dict:
        if any(type(name) is not str for name in value):
            raise _Unkept
        return (_MAPPING, tuple([(name, _frozen(item, limit)) for name, item in value.items()]))
    raise _Unkept


def _thawed(frozen: Any) -> Any:
    if type(frozen) is tuple:
        if frozen and frozen[0] is _MAPPING:
            return {name: _thawed(item) for name, item in frozen[1]}
        if frozen and frozen[0] is _FLOAT:
            return float(frozen[1])
        return [_thawed(item) for item in frozen]
    if frozen is _TRUE or frozen is _FALSE:
        return frozen is _TRUE
    return frozen


def _scrubbed_texts(event: dict[str, Any]) -> Hashable | None:
    """Everything of ``event`` that ``_scrubbed`` reads, as a key under which its answer is the same for
    any event (the scan, masking and bounding of each text depend on the text and its field alone); None
    where a text is too long to keep."""
    try:
        return (
            tuple([(name, _frozen(event[name])) for name in AGENT_CONTROLLED if name in event]),
            tuple(
                [
                    (
                        finding.get("where") == "egress",
                        tuple([(name, _frozen(finding[name])) for name in _FINDING_TEXTS if name in finding]),
                    )
                    for finding in event["findings"]
                ]
            ),
        )
    except _Unkept:
        return None


def _scrubbed(
    event: dict[str, Any], scanner: Scanner, key: bytes
) -> tuple[tuple[dict[str, Any], list[dict[str, Any]]] | None, bool]:
    """The event's agent-controlled fields and each finding's signal and extra as scrubbed, or None when
    scrubbing changes nothing; and whether a scan ran out of time (its text was redacted whole)."""
    fields = {name: event[name] for name in AGENT_CONTROLLED if name in event}
    masked = {name: fields[name] for name in MASKED_FIELDS if name in fields}
    for name in URL_FIELDS:
        if isinstance(fields.get(name), str):
            fields[name] = unquote(fields[name])
    fields["findings"] = [
        {name: finding[name] for name in _FINDING_TEXTS if name in finding} for finding in event["findings"]
    ]
    clean, redactions = redact_json(fields, scanner, key=key, remember=True, glued=True)
    timed_out = any(redaction.rule_id == SCAN_TIMEOUT_RULE for redaction in redactions)
    if isinstance(clean.get("path"), str):
        clean["path"] = mask_url_tokens(clean["path"], key)
    if isinstance(clean.get("egress_host"), str):
        clean["egress_host"] = mask_host_labels(clean["egress_host"], key)
    masked_signals = False
    for original, finding in zip(event["findings"], clean["findings"], strict=True):
        # An egress finding names the host it refused, which may carry data in a label as egress_host does.
        if original.get("where") == "egress" and isinstance(finding.get("signal"), str):
            signal = mask_host_labels(finding["signal"], key)
            masked_signals |= signal != finding["signal"]
            finding["signal"] = signal
        extra = finding.get("extra")
        if isinstance(extra, dict) and isinstance(extra.get("tool"), str):
            tool = mask_url_tokens(extra["tool"], key)
            masked_signals |= tool != extra["tool"]
            finding["extra"] = {**extra, "tool": tool}
    if isinstance(clean.get("tools"), list):
        clean["tools"] = [
            mask_url_tokens(tool, key) if isinstance(tool, str) else tool for tool in clean["tools"]
        ]
    if isinstance(clean.get("errors"), list):
        # Sentences of the proxy's quoting what an upstream or agent sent (a content type, a parser's
        # complaint): a token no rule knows is masked there as in a path.
        clean["errors"] = [
            mask_url_tokens(error, key) if isinstance(error, str) else error for error in clean["errors"]
        ]
    clean, cut = _bounded(clean, key)
    if (
        not redactions
        and not cut
        and not masked_signals
        and all(clean[name] == value for name, value in masked.items())
    ):
        return None, timed_out
    return (clean, clean.pop("findings")), timed_out
