"""What an error page mitmproxy writes itself may say.

When a peer sends what HTTP cannot parse, mitmproxy answers the agent with a page naming the error, and
its errors quote the offending bytes (``Bad HTTP response line: b'...'``, ``Invalid content-length header:
['...']``). An upstream's quoted bytes reach the agent that way without passing any detector: a token in a
status line that is not one, an instruction in a header that does not parse. The page keeps the error and
drops every quotation.
"""

from __future__ import annotations

import re

QUOTED = re.compile(r"""(?<!\w)b?(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""", re.DOTALL)
"""A Python ``repr`` of bytes or text, as mitmproxy, h11 and h2 quote what they read (not an apostrophe
inside a word)."""
UNCLOSED = re.compile(r"""(?<!\w)b?['"].*""", re.DOTALL)
"""A quotation cut short: it runs to the end of the message."""
ELIDED = "…"


def unquoted(message: str) -> str:
    """``message`` with each quotation (and an unclosed one, to its end) replaced by an ellipsis."""
    return UNCLOSED.sub(ELIDED, QUOTED.sub(ELIDED, message))
