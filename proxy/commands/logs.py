"""Structured logging: one JSON object a line on stderr, the shape log shippers expect; and what a log
line may hold of text it quotes."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO, cast

import structlog
import structlog.tracebacks

from proxy.audit.events import mask_url_tokens
from proxy.scanning.redact import RedactionStyle, scan_and_redact
from proxy.scanning.rulepack import Scanner


def configure_logging(level: int = logging.INFO) -> None:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # Frame locals can hold request text or a secret: tracebacks name frames, never their variables.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(serializer=_LineEncoder(), sort_keys=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # One write a line: print() writes the line and its end apart, two system calls every turn.
        logger_factory=structlog.WriteLoggerFactory(cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=True,
    )


class _CurrentStderr:
    """``sys.stderr`` as it is at each line: whoever replaces it after logging is set up (an embedding
    program, a test's capture) gets the lines, and a stream it closed is never written to."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _LineEncoder:
    """``json.dumps`` for the renderer, with every text of a line cut to ``MAX_LOG_TEXT``: an exception's
    message or a peer's words quoted in a field cannot make one line of any length.

    The renderer passes the same options with every line: the encoder for them is built once, where
    ``json.dumps`` builds one a line. A text is never shorter encoded than it is, so a line no longer than
    ``MAX_LOG_TEXT`` holds no text to cut: only a longer one is looked through, and encoded again."""

    def __init__(self) -> None:
        self._built: tuple[dict[str, Any], json.JSONEncoder] | None = None

    def __call__(self, event: MutableMapping[str, Any], **options: Any) -> str:
        built = self._built
        if built is None or built[0] != options:
            built = self._built = (options, json.JSONEncoder(**options))
        line = built[1].encode(event)
        return line if len(line) <= MAX_LOG_TEXT else built[1].encode(_bounded_texts(event))


def _bounded_texts(event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``event`` with each of its texts longer than ``MAX_LOG_TEXT`` cut to it."""
    for name, value in event.items():
        if isinstance(value, str) and len(value) > MAX_LOG_TEXT:
            event[name] = _cut(value, MAX_LOG_TEXT)
    return event


MAX_LOG_TEXT = 2000
"""Longest message a log line keeps of text the proxy did not write (mitmproxy's own messages quote
hosts, SNI and exceptions): the rest is counted, never written."""


def safe_log_text(text: str, scanner: Scanner | None, key: bytes, limit: int = MAX_LOG_TEXT) -> str:
    """``text`` fit for a log line: each detected secret, and each token-like run no rule knows, replaced
    by its placeholder; control characters (a newline that would forge a line, terminal escapes) written
    as escapes; cut to ``limit`` characters with the count of those dropped."""
    if scanner is not None:
        text = scan_and_redact(scanner, text, RedactionStyle.HASH, key=key).text
    return _cut(escape_controls(mask_url_tokens(text, key)), limit)


def escape_controls(text: str) -> str:
    """``text`` with each control character written as its escape: a newline that would forge a line or
    a table row, a terminal escape (colours, a title, a hyperlink, the clipboard), a bidi override or a
    zero-width character that makes one text read as another."""
    return _CONTROL.sub(lambda found: found.group().encode("unicode_escape").decode("ascii"), text)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
