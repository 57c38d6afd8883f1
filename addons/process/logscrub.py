"""Keeps secrets and forged lines out of mitmproxy's own log lines.

egressguard's events are written from scrubbed records, but mitmproxy logs through the standard
``logging`` module in words of its own that quote what agents and upstreams sent: the server name of a
TLS handshake that failed (``evil-<token>.example``), a host, an exception's message. A filter on every
handler of the root logger rewrites each record's message, and its traceback, with ``safe_log_text``
before any handler writes it.
"""

from __future__ import annotations

import logging
from collections.abc import Set

from proxy.commands.logs import safe_log_text
from proxy.runtime import NotConfigured, Runtime


class SafeLogText(logging.Filter):
    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        elif record.exc_text:
            text += "\n" + record.exc_text
        try:
            detectors = self.runtime.detectors
            scanner, key = detectors.sensitive, detectors.fingerprint_key
        except NotConfigured:
            scanner, key = None, b""
        record.msg, record.args = safe_log_text(text, scanner, key), None
        record.exc_info, record.exc_text = None, None
        return True


class ScrubbedLogs:
    """First in the chain, so that what the other addons' setup logs is scrubbed too."""

    def __init__(self, runtime: Runtime) -> None:
        self.filter = SafeLogText(runtime)

    def configure(self, updated: Set[str]) -> None:
        # Handlers come and go (mitmproxy's terminal log is added after the addons are built).
        for handler in logging.getLogger().handlers:
            if self.filter not in handler.filters:
                handler.addFilter(self.filter)

    def running(self) -> None:
        self.configure(set())

    def done(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self.filter)
