"""What a WebSocket text message may carry: UTF-8 and nothing else (RFC 6455 5.6), which both peers'
WebSocket libraries check, so text the proxy writes into one is encoded here, never altered to fit.

Text read from a text message is UTF-8, so a lone surrogate in it came from a JSON ``\\ud800`` escape:
written back, it is that escape again (the encoding of bodies turns ``\\udc80``..``\\udcff`` into the
undecodable byte it stands for there, which no text message may hold). Text with a lone surrogate that is
not JSON (a secret restored into it that was not UTF-8) has no text message's encoding at all.
"""

from __future__ import annotations

import codecs

from proxy.wire import jsontext


def _escaped(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeEncodeError):
        raise error
    return "".join(f"\\u{ord(char):04x}" for char in error.object[error.start : error.end]), error.end


codecs.register_error("egressguard-frame", _escaped)


def json_message(text: str) -> bytes:
    """JSON text as a text message carries it: each lone surrogate in its strings as its escape."""
    return text.encode("utf-8", "egressguard-frame")


def text_message(text: str) -> bytes | None:
    """``text`` as a text message carries it (``json_message`` where it is JSON), or None where no text
    message can: it holds a lone surrogate outside JSON's strings."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    try:
        jsontext.loads(text)
    except (ValueError, RecursionError):
        return None
    return json_message(text)
