"""How an agent hears that egressguard refused a WebSocket message, in its protocol's own terms.

A message refused and nothing said leaves an agent waiting for an answer that never comes. The OpenAI
Realtime API answers a client event it rejects with an ``error`` event and goes on: the proxy does the
same, for a message of either side. No other protocol the proxy reads has an error a message long (the
Gemini Live API closes the session with a reason, as do tool channels of their own): there the
connection is closed with the refusal as its reason.
"""

from __future__ import annotations

import itertools
from typing import Any

from proxy.dialects.base import as_dict, as_str
from proxy.dialects.stream import dump_json
from proxy.wire import jsontext
from proxy.wire.textframes import json_message

MAX_CLOSE_REASON_BYTES = 123
"""RFC 6455: a close frame's payload is at most 125 bytes, two of them its code."""
_EVENT_IDS = itertools.count(1)


def speaks_realtime(path: str) -> bool:
    """Whether a WebSocket opened at ``path`` speaks the OpenAI Realtime API (OpenAI's and Azure's)."""
    return path.partition("?")[0].rstrip("/").endswith("/realtime")


def realtime_error(message: str, code: str, refused: str | None) -> bytes:
    """A Realtime ``error`` event saying ``message``; ``refused``, the text of a client event the proxy
    refused, is named by its ``event_id`` as the API names the client event it rejects."""
    event_id: str | None = None
    if refused is not None:
        try:
            event_id = as_str(as_dict(jsontext.loads(refused)).get("event_id"))
        except (ValueError, RecursionError):
            event_id = None
    error: dict[str, Any] = {
        "type": "invalid_request_error",
        "code": code,
        "message": message,
        "param": None,
        "event_id": event_id,
    }
    event = {"type": "error", "event_id": f"event_egressguard_{next(_EVENT_IDS)}", "error": error}
    return json_message(dump_json(event))


def close_reason(threat: str, rule: str, event_id: str) -> str:
    """The refusal as a close frame carries it: the audit event whole, then as much of the threat and rule
    as fits, cut on a character's boundary."""
    reason = f"egressguard blocked: audit event {event_id}; {threat} ({rule})"
    return reason.encode("utf-8")[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore")
