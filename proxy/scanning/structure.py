"""What kind of text a part is: JSON, a log, code (or configuration) or prose.

Read content is judged against what that kind of text usually says: source code and its comments
address a reader in the imperative all day, a JSON answer or a log almost never does, so the
injection classifier keeps one threshold per kind (``bench/train_injection.py`` picks each on
cross-validation folds). The proxy and ``egressguard scan`` call this same function on the same text, so
they pick the same threshold.

Pure and cheap: a look at both ends of the text and at most ``SAMPLED_LINES`` of its first lines.
"""

from __future__ import annotations

import re
from enum import StrEnum
from itertools import islice


class Structure(StrEnum):
    JSON = "json"
    LOG = "log"
    CODE = "code"
    PROSE = "prose"


SAMPLED_LINES = 64
SAMPLED_CHARS = 8192
"""Non-blank lines looked at, from the start and within this many characters: a tool result is one kind
of text throughout."""

# A line that starts with a timestamp (ISO date, clock time, syslog month) or is an access-log line.
_LOG_LINE = re.compile(
    r"\s*\[?(?:\d{4}-\d\d-\d\d[T ]\d\d:\d\d|\d\d:\d\d:\d\d|[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d)"
    r"|\S+ \S+ \S+ \[\d\d/[A-Z][a-z]{2}/\d{4}:"
)
# A line of code or configuration: a keyword or a comment, decorator, closing bracket or diff marker at
# its start, an assignment or a lowercase key with its value (not "Note: ..."), a tag, an entry of a data
# literal, or a line ending as a statement or block does.
_CODE_LINE = re.compile(
    r"\s*(?:(?:def|class|import|from|return|if|elif|else|for|while|try|except|finally|with|raise|yield|"
    r"async|await|const|let|var|function|public|private|protected|static|package|func|fn|use|pub|"
    r"struct|enum|type|interface|namespace|using)\b|#|@\w|//|/\*|"
    r"\*[\s/]|[-+](?=\s|[\w#@])|[})\]]|[a-z_$][\w.\[\]'\"-]*\s*(?::|=|:=|=>)\s*\S|<\s*/?[A-Za-z!]|"
    r"(?:'[^'\n]*'|\"[^\"\n]*\"|0x[\da-fA-F]+|\d+)\s*[,:#)])"
    r"|.*(?:[;{(\[]|\)\s*:|:\s*#.*)\s*$"
)


def structure_of(text: str) -> Structure:
    """The kind of ``text``: JSON when it opens and closes like a JSON array or object; a log when at
    least half its sampled lines start with a timestamp; code when at least two in five look like code
    or configuration; prose otherwise."""
    if text[:SAMPLED_CHARS].lstrip()[:1] in ("{", "[") and text[-SAMPLED_CHARS:].rstrip()[-1:] in ("}", "]"):
        return Structure.JSON
    lines = list(islice((line for line in text[:SAMPLED_CHARS].splitlines() if line.strip()), SAMPLED_LINES))
    if not lines:
        return Structure.PROSE
    if 2 * sum(bool(_LOG_LINE.match(line)) for line in lines) >= len(lines):
        return Structure.LOG
    if 5 * sum(bool(_CODE_LINE.match(line)) for line in lines) >= 2 * len(lines):
        return Structure.CODE
    return Structure.PROSE
