"""Where the requests of a shell text or code go, read for certain or not at all.

A secret of a service's name may go only where its request provably goes to that service's hosts
(``credential_channel.sent_where_it_belongs``). Each request is read as the shell runs it: its quotes
kept (a ``;`` ``|`` ``&`` inside them ends no command), its here-documents with it, its pipeline whole.
Its destinations are ``None``, not known, wherever they cannot be read for certain: a host written
without a scheme, a substitution, a glob or a variable where a destination stands, a command that runs
the request with arguments of its own (``xargs curl``), an option or setting that sends it through
another host (a proxy, ``--resolve``, ``-K``, ``gh --hostname``, ``GH_HOST``), code with no literal URL
or with a proxy. A DNS lookup (``dig``, ``nslookup``, ``host``, ``ping``) sends the name it looks up.
Pure: no I/O; each text is read once, in time linear in its length.
"""

from __future__ import annotations

import itertools
import posixpath
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

NETWORK_COMMANDS = frozenset({"curl", "wget", "wget2", "http", "https", "xh", "xhs", "gh", "git"})
"""Commands that send requests whose destinations their words name."""
LOOKUPS = frozenset(
    {"dig", "nslookup", "host", "drill", "kdig", "delv", "ping", "ping6", "getent", "resolvectl",
     "traceroute", "tracepath", "mtr", "whois"}
)  # fmt: skip
"""Commands that look a name up: what the name holds goes to a resolver, and through it to the name's
own servers."""
LONGEST_REQUEST = 32_768
"""The longest pipeline whose words are read: one longer goes where no reading is sure of."""
_SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh"})
_DEEPEST = 3
# Words that run the command after them, and the letters of their options that take a value.
_WRAPPERS = {
    "sudo": "ugCDhpRrTU",
    "doas": "u",
    "env": "uC",
    "time": "fo",
    "nohup": "",
    "command": "",
    "builtin": "",
    "exec": "a",
    "nice": "n",
    "ionice": "cnp",
    "stdbuf": "ioe",
    "timeout": "sk",
    "caffeinate": "t",
}
_SYSTEM_FOLDER = re.compile(r"(?:/usr)?(?:/local)?/s?bin/[\w.+-]+")

ROUTE_SETTING = re.compile(
    # A proxy, a resolver's or a client's settings, or gh's host, set in the environment or a file.
    r"(?i)\b(?:https?|all|ftp|socks\w*|wss?|grpc)_proxy\b[\"']?\s*[\]=:,)]"
    r"|(?-i:\b(?:CURL_HOME|WGETRC|SYSTEM_WGETRC|HOME|XDG_CONFIG_HOME|GH_HOST|GH_REPO|GH_CONFIG_DIR"
    r"|GH_ENTERPRISE_TOKEN|HOSTALIASES|RES_OPTIONS|LOCALDOMAIN|LD_PRELOAD|BASH_ENV|ENV|PATH)\+?=)"
    r"|\bsetenv\s+\w*proxy|\bset\s+-\w*x\w*\s+\w*proxy"
    r"|[._]curlrc\b|\bwgetrc\b|/etc/(?:hosts|resolv\.conf|nsswitch\.conf|gai\.conf)\b|\.config/gh\b"
    r"|\bgh\s+(?:config|alias|extension|ext)\b|\binsteadof\b|\bproxy(?:command)?\s*="
    # What makes a network command's name run something else: an alias, a function, a file of its name.
    r"|\balias\b[^\n;&|]*?(?:^|[\s'\"])(?:curl|wget2?|https?|xhs?|gh|git)="
    r"|(?:^|[\s;&|({])(?:function\s+)?(?:curl|wget2?|https?|xhs?|gh|git)\s*\(\s*\)"
    r"|\bfunction\s+(?:curl|wget2?|https?|xhs?|gh|git)\b|\bhash\s+-\w*p|\benable\s+-\w*f"
    r"|(?:\bln\b|\bcp\b|\bmv\b|\binstall\b|\btee\b|>)[^\n;&|]*/(?:curl|wget2?|https?|xhs?|gh|git)"
    r"(?=[\s'\";&|)]|$)"
)
"""A text that may change where a later request goes, in its shell or on the machine: it is read in the
request's own call and in the conversation's calls before it."""

_CODE_SENDS = re.compile(
    r"(?i)\b(?:requests|httpx|aiohttp|urllib3?|axios|got|superagent|needle|ky|http\.client|https?)\s*\.\s*\w"
    r"|\b(?:urlopen|fetch|Request|file_get_contents|curl_init"
    r"|curl_setopt|create_connection|gethostbyname|getaddrinfo|WebSocket|HttpClient|WebClient)\s*\("
    r"|\bNet::HTTP\b|\bHTTP::Tiny\b|\bLWP::|\bsocket\.socket\b|\bdns\.(?:resolve|lookup)"
    r"|\b(?:axios|superagent|needle|undici|node-fetch)\b"
    r"|\brequire\(\s*[\"'](?:https?|got|ky)[\"']"
    r"|\b(?:invoke-webrequest|invoke-restmethod|iwr|irm|resolve-dnsname)\b"
)
"""Code that sends a request or looks a name up: where it goes is read off the URLs it writes."""
_CODE_REROUTES = re.compile(
    r"(?i)\bprox(?:y|ies)\b|_proxy\b|ProxyHandler|ProxyAgent|\bsocks\w*|\btrust_env\b|\bmounts\s*="
    r"|\btransport\s*=|\bresolve\s*[=:(]|\blookup\s*:|\bsocketPath\b|\bunix_socket\b"
)
_URL_START = re.compile(r"(?i)\b[a-z][a-z0-9+.-]{0,15}://")
_LITERAL_HOST = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.?", re.I)
_CODE_HOST = re.compile(
    r"(?i)(?:[^\s/?#@\"'`]{0,256}@)?(\[[0-9a-f:.]{2,64}\]|"
    + _LITERAL_HOST.pattern
    + r")(?=[:/?#\"'`\s),;]|$)"
)
SECRET_VARIABLE = re.compile(
    r"""\$\{(?:env:)?([A-Za-z_]\w*)(?![\w.(])|\$(?:env:)?([A-Za-z_]\w*)|%([A-Za-z_]\w*)%"""
    r"""|(?:\bos\.environb?(?:\[|\.get\()|\b(?:os\.)?getenv\(|\bENV(?:\[|\.fetch\()|\$ENV\{"""
    r"""|\bSystem\.getenv\(|\bGetEnvironmentVariable\()[ \t]*["']?([A-Za-z_]\w*)"""
    r"""|\b(?:process|Bun)\.env(?:\.|\[[ \t]*["'`])([A-Za-z_]\w*)"""
)
"""A variable read by its name, in a shell (``$X``, ``${X}``, ``$env:X``, ``%X%``) or code (``os.environ
["X"]``, ``process.env.X``, a template literal's ``${process.env.X}``)."""
SECRET_NAME = re.compile(
    r"(?i)(?:^|_)(?:token|secret|password|passwd|passphrase|pat|pass|pwd|credentials?|creds"
    r"|(?:api|access|secret|private|auth|client|app)_?key)$"
)
"""A variable's name that ends in a word of a secret (``GITHUB_TOKEN``, ``AWS_SECRET_ACCESS_KEY``; not
``AWS_ACCESS_KEY_ID``): as an operand of a request, a header a reading took out of its quotes."""
PRINTED_TOKEN = re.compile(
    r"(?i)(?:\$\(|`)[ \t]*(gcloud|az|gh)\b[^()`\n]{0,300}?"
    r"\b(?:print-(?:access|identity)-token|get-access-token|auth[ \t]+token)\b[^()`\n]{0,300}?[)`]"
)
"""A cloud or forge CLI's token substituted where it is used (``$(gcloud auth print-access-token)``): a
secret of the CLI's service, read as a variable named by the CLI (group 1)."""


@dataclass(frozen=True, slots=True)
class Request:
    """A command or call of code that sends: the variables (and CLIs' tokens, ``PRINTED_TOKEN``) it
    names, and the hosts it goes to, ``None`` where they are not known for certain; a ``lookup`` sends
    what it names as a name to resolve."""

    names: frozenset[str]
    hosts: tuple[str, ...] | None
    text: str
    lookup: bool = False

    def unknown(self) -> Request:
        """The request, where what ran before may send it elsewhere than it says."""
        return Request(self.names, None, self.text, self.lookup)


def requests_in(
    text: str, tick: Callable[[], None], *, code: bool = False, lines: bool = False, depth: int = 0
) -> Iterator[Request]:
    """The requests of a shell text that name a variable, each a pipeline with its here-documents; with
    ``code``, the whole text read as one program too (what a session's headers hold goes with its
    requests); with ``lines``, no quote or bracket open past its line (readings of a text, one a line,
    where one left open would run on through the others). ``tick`` is called once for each command
    read: the caller's budget, which it may stop."""
    if code:
        tick()
        request = _code_request(text)
        if request is not None:
            yield request
    for pipeline in _pipelines(text, tick, lines=lines):
        tick()
        names = _names(pipeline)
        if not names:
            continue
        if len(pipeline) > LONGEST_REQUEST:
            yield Request(names, None, pipeline)
            continue
        for stage in _stages(pipeline):
            yield from _stage_requests(stage.strip(), names, pipeline, tick, depth)


def _names(text: str) -> frozenset[str]:
    found = {next(group for group in match.groups() if group) for match in SECRET_VARIABLE.finditer(text)}
    found |= {f"$({match[1].lower()})" for match in PRINTED_TOKEN.finditer(text)}
    return frozenset(found)


def _code_request(text: str) -> Request | None:
    """The code's one request, where it sends and names a variable: to the hosts of every URL it writes,
    none where one has no literal host or the code sets a proxy."""
    if _CODE_SENDS.search(text) is None:
        return None
    names = _names(text)
    if not names:
        return None
    return Request(names, code_hosts(text), text)


def code_sends(text: str) -> bool:
    """Whether code sends a request or looks a name up."""
    return _CODE_SENDS.search(text) is not None


def code_hosts(text: str) -> tuple[str, ...] | None:
    """The hosts of every URL code writes: None where one has no literal host, it writes none, or the code
    sets a proxy."""
    if _CODE_REROUTES.search(text):
        return None
    hosts = []
    for start in _URL_START.finditer(text):
        host = _CODE_HOST.match(text, start.end())
        if host is None:
            return None
        hosts.append(host[1].strip("[]").rstrip(".").lower())
    return tuple(hosts) or None


def _stage_requests(
    stage: str, names: frozenset[str], pipeline: str, tick: Callable[[], None], depth: int
) -> Iterator[Request]:
    if stage[:1] in "({" and stage[-1:] in ")}" and depth < _DEEPEST:
        # A subshell or a group: its commands, read as a text of their own.
        yield from requests_in(stage[1:-1], tick, depth=depth + 1)
        return
    words = words_of(stage)
    at = _command_at(words)
    if at is None:
        yield Request(names, None, pipeline)
        return
    if at == len(words):
        return
    raw, value = words[at]
    name = posixpath.basename(value)
    system = "/" not in value or _SYSTEM_FOLDER.fullmatch(value)
    if name in NETWORK_COMMANDS or name in LOOKUPS:
        if not system or raw != value:
            yield Request(names, None, pipeline)
        elif name in LOOKUPS:
            yield Request(names, None, pipeline, lookup=True)
        else:
            yield Request(names, _DESTINATIONS[name](words[at + 1 :]), pipeline)
        return
    if _EXPANSION.search(value.split(":", 1)[0]) and names_a_host(words[at + 1 :]):
        # A command named by an expansion may be any of them.
        yield Request(names, None, pipeline)
        return
    arguments = words[at + 1 :]
    if name in _SHELLS and depth < _DEEPEST:
        inner = _shell_string(arguments)
        if inner is not None:
            yield from requests_in(inner, tick, depth=depth + 1)
            return
    if any(posixpath.basename(word) in NETWORK_COMMANDS | LOOKUPS for _, word in arguments):
        # A command that runs a request with arguments of its own (``xargs curl``, ``watch curl``).
        yield Request(names, None, pipeline)
        return
    request = _code_request(stage)
    if request is not None:
        yield request


@dataclass(frozen=True, slots=True)
class Stage:
    """A command of a pipeline: the one it runs (``name``, None where that is not known for certain: a
    setting before it that may send it elsewhere, a name an expansion, quotes or a folder of the user's own
    gives) and its words after the name; the text of it and of its pipeline (with its here-documents); and
    the text of the stage before it that feeds it (``fed_by``; None for a pipeline's first)."""

    name: str | None
    arguments: Words
    text: str
    pipeline: str
    fed_by: str | None


def stages_in(
    text: str,
    tick: Callable[[], None],
    *,
    lines: bool = False,
    fed_by: str | None = None,
    depth: int = 0,
) -> Iterator[Stage]:
    """The commands of a shell text as it runs them, those of a subshell, a group and ``sh -c`` within
    them too (up to ``_DEEPEST``), a group fed by what feeds it, a stage after a ``cat`` of no file by
    what feeds the ``cat``; with ``lines``, no quote or bracket open
    past its line (as ``requests_in``). ``tick`` is called once for each."""
    for pipeline in _pipelines(text, tick, lines=lines):
        tick()
        if len(pipeline) > LONGEST_REQUEST:
            yield Stage(None, [], pipeline, pipeline, fed_by)
            continue
        feeding = fed_by
        for stage in _stages(pipeline):
            command = stage.strip()
            yield from _stage_commands(command, pipeline, feeding, tick, depth)
            # A cat of no file passes on what feeds it.
            feeding = feeding if command == "cat" and feeding is not None else command


def _stage_commands(
    stage: str, pipeline: str, fed_by: str | None, tick: Callable[[], None], depth: int
) -> Iterator[Stage]:
    if stage[:1] in "({" and stage[-1:] in ")}" and depth < _DEEPEST:
        yield from stages_in(stage[1:-1], tick, fed_by=fed_by, depth=depth + 1)
        return
    words = words_of(stage)
    at = _command_at(words)
    if at is None:
        yield Stage(None, words, stage, pipeline, fed_by)
        return
    if at == len(words):
        return
    raw, value = words[at]
    arguments = words[at + 1 :]
    name = posixpath.basename(value)
    if name in _SHELLS and depth < _DEEPEST:
        inner = _shell_string(arguments)
        if inner is not None:
            yield from stages_in(inner, tick, fed_by=fed_by, depth=depth + 1)
            return
    system = "/" not in value or _SYSTEM_FOLDER.fullmatch(value)
    known = raw == value and system and not _EXPANSION.search(value)
    yield Stage(name if known else None, arguments, stage, pipeline, fed_by)


def names_a_host(words: list[tuple[str, str]]) -> bool:
    """Whether a word names a host, with a scheme or without."""
    return any(_URL_START.match(value) or _BARE_HOST.fullmatch(value) for _, value in words)


def _shell_string(arguments: list[tuple[str, str]]) -> str | None:
    """What ``sh -c STRING`` runs: None for a shell given no ``-c``."""
    for index, (_, value) in enumerate(arguments):
        if not value.startswith("-"):
            return None
        if "c" in value[1:] and not value.startswith("--") and index + 1 < len(arguments):
            return arguments[index + 1][1]
    return None


_EXPANSION = re.compile(r"[$`]")
_ASSIGNMENT = re.compile(r"[A-Za-z_]\w*\+?=")
_ROUTE_VARIABLE = re.compile(
    r"(?i)[\w]*_proxy|(?-i:CURL_HOME|WGETRC|SYSTEM_WGETRC|HOME|XDG_CONFIG_HOME|GH_HOST|GH_REPO|GH_CONFIG_DIR"
    r"|GH_ENTERPRISE_TOKEN|HOSTALIASES|RES_OPTIONS|LOCALDOMAIN|LD_\w+|BASH_ENV|ENV|PATH)"
)


def _command_at(words: list[tuple[str, str]]) -> int | None:
    """Where the command of a stage's words is named, past settings and wrappers; None where a setting
    may send it elsewhere (a proxy, gh's host) or a wrapper's option is not known."""
    at = 0
    while at < len(words):
        raw, value = words[at]
        setting = _ASSIGNMENT.match(raw)
        if setting:
            if _ROUTE_VARIABLE.fullmatch(setting[0].rstrip("+=")):
                return None
            at += 1
            continue
        wrapper = _WRAPPERS.get(value)
        if wrapper is None or raw != value:
            return at
        at += 1
        if value == "env" and at < len(words) and words[at][1] in ("-S", "--split-string"):
            return None
        while at < len(words) and words[at][1].startswith("-") and words[at][1] != "-":
            option = words[at][1]
            at += 1
            if option == "--":
                break
            if option[1:2] in wrapper and len(option) == 2 and not option.startswith("--"):
                at += 1
        if value == "timeout" and at < len(words):
            at += 1
    return at


def words_of(stage: str) -> list[tuple[str, str]]:
    """The stage's words, each as written and as the shell reads it unquoted (expansions left as
    written)."""
    words: list[tuple[str, str]] = []
    at, size = 0, len(stage)
    while at < size:
        if stage[at] in " \t\n" or stage.startswith(_ESCAPED_BLANKS, at):
            # A line continued, or a reading that joined its lines with the backslash left: no word.
            at += 1
            continue
        start, value = at, []
        while at < size and stage[at] not in " \t\n" and not stage.startswith(_ESCAPED_BLANKS, at):
            char = stage[at]
            if stage.startswith("$(", at) or char == "`":
                # A substitution is one word with what is around it, whatever spaces it holds.
                close = _substitution_end(stage, at)
                value.append(stage[at:close])
                at = close
            elif char == "\\":
                value.append(stage[at + 1 : at + 2])
                at += 2
            elif char in "'\"":
                close = stage.find(char, at + 1) if char == "'" else _double_quote_end(stage, at + 1)
                close = size if close < 0 else close
                value.append(stage[at + 1 : close])
                at = close + 1
            else:
                value.append(char)
                at += 1
        words.append((stage[start : min(at, size)], "".join(value)))
    return words


def _substitution_end(text: str, at: int) -> int:
    """Where the substitution at ``at`` (``$(...)`` or a backquoted one) ends: the text's end where it
    is left open."""
    if text[at] == "`":
        close = text.find("`", at + 1)
        return len(text) if close < 0 else close + 1
    depth = 0
    for found in _PARENTHESIS.finditer(text, at + 1):
        depth += 1 if found[0] == "(" else -1
        if depth == 0:
            return found.end()
    return len(text)


_PARENTHESIS = re.compile(r"[()]")


def _double_quote_end(text: str, at: int) -> int:
    while at < len(text):
        if text[at] == "\\":
            at += 2
            continue
        if text[at] == '"':
            return at
        at += 1
    return -1


_TICKS = 4096
"""Marks of a text read between two calls of the budget's ``tick``."""
_ESCAPED_BLANKS = ("\\ ", "\\\t", "\\\n")
_SPECIAL = re.compile(r"[\\'\"`$;&|\n(){}<]")
_HEREDOC = re.compile(r"<<-?[ \t]*(['\"]?)([A-Za-z_][\w.-]*)\1")


def _pipelines(text: str, tick: Callable[[], None], *, lines: bool) -> Iterator[str]:
    """The pipelines of a shell text, each with the here-documents its commands read: a separator (``;``
    ``&`` ``&&`` ``||``, a newline not continued) ends one only outside quotes, substitutions and
    brackets."""
    stack: list[str] = []
    start = at = 0
    heredocs: list[tuple[str, bool]] = []
    size = len(text)
    for read in itertools.count():
        found = _SPECIAL.search(text, at)
        if found is None:
            break
        if read % _TICKS == 0:
            tick()
        at = found.start()
        char = text[at]
        if lines and stack and char == "\n":
            stack.clear()
        inside = stack[-1] if stack else ""
        if inside == "'":
            if char == "'":
                stack.pop()
            at += 1
            continue
        if char == "\\":
            at += 2
            continue
        if inside in ('"', "`"):
            if char == inside:
                stack.pop()
            elif char == "$" and text.startswith("$(", at):
                stack.append("(")
                at += 1
            elif char == "`":
                stack.append("`")
            at += 1
            continue
        if char in "'\"`":
            stack.append(char)
        elif char == "$":
            if text.startswith("$(", at):
                stack.append("(")
                at += 1
        elif char in "({":
            stack.append(char)
        elif char in ")}":
            if stack and stack[-1] == "({"[")}".index(char)]:
                stack.pop()
        elif char == "<":
            heredoc = _HEREDOC.match(text, at)
            if heredoc is not None and not stack:
                heredocs.append((heredoc[2], heredoc[0].startswith("<<-")))
                at = heredoc.end()
                continue
        elif not stack and char == "\n" and heredocs:
            at = _past_heredocs(text, at + 1, heredocs)
            heredocs = []
            yield text[start:at]
            start = at
            continue
        elif not stack and (char in ";\n" or (char == "&" and not _redirection(text, at))):
            yield text[start:at]
            start = at + 1
        elif not stack and char == "|" and text.startswith("||", at):
            yield text[start:at]
            at += 2
            start = at
            continue
        at += 1
    if start < size:
        yield text[start:]


def _redirection(text: str, at: int) -> bool:
    """Whether the ``&`` at ``at`` is part of a redirection (``2>&1``, ``&>``), no separator."""
    return (at and text[at - 1] in "<>") or text.startswith("&>", at)


def _past_heredocs(text: str, at: int, heredocs: list[tuple[str, bool]]) -> int:
    """Where the bodies of the here-documents that start at ``at`` end."""
    for delimiter, tabs in heredocs:
        while at < len(text):
            end = text.find("\n", at)
            end = len(text) if end < 0 else end
            line = text[at:end]
            at = end + 1
            if (line.lstrip("\t") if tabs else line) == delimiter:
                break
    return min(at, len(text))


def _stages(pipeline: str) -> list[str]:
    """The commands of a pipeline: split at each ``|`` outside quotes, substitutions and brackets."""
    stages: list[str] = []
    depth_marks = _pipe_places(pipeline)
    start = 0
    for place in depth_marks:
        stages.append(pipeline[start:place])
        start = place + 1
    stages.append(pipeline[start:])
    return stages


def _pipe_places(pipeline: str) -> list[int]:
    places = []
    quote = ""
    depth = 0
    at = 0
    while at < len(pipeline):
        char = pipeline[at]
        if quote == "'":
            quote = "" if char == "'" else quote
        elif char == "\\":
            at += 1
        elif quote:
            quote = "" if char == quote else quote
        elif char in "'\"`":
            quote = char
        elif char in "({":
            depth += 1
        elif char in ")}":
            depth = max(0, depth - 1)
        elif char == "|" and depth == 0 and not pipeline.startswith("|&", at):
            places.append(at)
        at += 1
    return places


Words = list[tuple[str, str]]
Read = tuple[Words, Words]
"""A command's operands and its options' values (each as option, value)."""
_NOT_A_DESTINATION = ""


def operand_host(raw: str, value: str, *, bare: bool = True) -> str | None:
    """The host a command's operand sends to: ``_NOT_A_DESTINATION`` for a word that names none (a word
    of no dot, a secret's own variable, a header a reading took out of its quotes), None where it is not
    known for certain (a host without a scheme, with ``bare``; a substitution, a glob, a variable)."""
    if "$(" in raw or "`" in raw:
        return _NOT_A_DESTINATION if PRINTED_TOKEN.fullmatch(value) else None
    url = _URL_START.match(value)
    if url is not None:
        return _url_host(value[url.end() :])
    if any(space in value.split("/", 1)[0] for space in " \t\n"):
        return _NOT_A_DESTINATION
    if "$" in value:
        variable = _LONE_VARIABLE.fullmatch(value)
        return _NOT_A_DESTINATION if variable and SECRET_NAME.search(variable[1]) else None
    if (raw == value and _GLOB.search(value)) or (bare and _BARE_HOST.fullmatch(value)):
        return None
    return _NOT_A_DESTINATION


def _url_host(rest: str) -> str | None:
    """The host of a URL past its scheme's ``://``: None where its authority is not a literal host
    (a variable, a glob, a backslash, a second ``@``), which a client may read otherwise than here."""
    authority = _AUTHORITY_END.split(rest, maxsplit=1)[0]
    user, _, place = authority.rpartition("@")
    if "\\" in authority or "@" in user or any(char.isspace() for char in authority):
        return None
    ipv6 = _IPV6.match(place)
    host = ipv6[0] if ipv6 else place.split(":", 1)[0]
    if not (ipv6 or _LITERAL_HOST.fullmatch(host)) or not _PORT.fullmatch(place[len(host) :]):
        return None
    return host.strip("[]").rstrip(".").lower()


_AUTHORITY_END = re.compile(r"[/?#]")
_IPV6 = re.compile(r"\[[0-9a-fA-F:.]+\]")
_PORT = re.compile(r"(?::\d*)?")
_LONE_VARIABLE = re.compile(r"\$\{?([A-Za-z_]\w*)\}?")
_GLOB = re.compile(r"[*?\[{]")
_BARE_HOST = re.compile(r"[\w.-]+\.[\w-]+(?::\d+)?(?:/.*)?|[\w.-]+:\d+(?:/.*)?|\[[0-9a-fA-F:.]+\].*", re.S)
"""A host written without a scheme (an address, a name, a port), which curl takes as a URL of its own."""


def read_options(
    words: Words,
    short_valued: str,
    short_rerouting: str,
    long_valued: frozenset[str],
    long_rerouting: re.Pattern[str],
) -> Read | None:
    """The operands of a command's words and its options' values (each as option, value); None where an
    option sends its requests elsewhere or reads more of them from elsewhere."""
    operands: list[tuple[str, str]] = []
    values: list[tuple[str, str]] = []
    at = 0
    while at < len(words):
        raw, value = words[at]
        at += 1
        if value == "--":
            operands += words[at:]
            break
        if value.startswith("--"):
            name, equals, given = value[2:].partition("=")
            if long_rerouting.fullmatch(name):
                return None
            if name in long_valued:
                if not equals and at < len(words):
                    given = words[at][1]
                    raw = words[at][0]
                    at += 1
                values.append((name, given))
                if name == "url":
                    operands.append((raw.split("=", 1)[-1] if equals else raw, given))
            continue
        if value.startswith("-") and len(value) > 1:
            for offset, letter in enumerate(value[1:], start=1):
                if letter in short_rerouting:
                    return None
                if letter in short_valued:
                    given = value[offset + 1 :]
                    if not given and at < len(words):
                        given = words[at][1]
                        at += 1
                    values.append((letter, given))
                    break
            continue
        operands.append((raw, value))
    return operands, values


def _hosts_of(operands: list[tuple[str, str]], *, bare: bool = True) -> tuple[str, ...] | None:
    hosts = []
    for raw, value in operands:
        host = operand_host(raw, value, bare=bare)
        if host is None:
            return None
        if host:
            hosts.append(host)
    return tuple(hosts) or None


_HOST_HEADER = re.compile(r"(?i)\s*host\s*:")
_CURL_VALUED = frozenset(
    {"output", "upload-file", "write-out", "data", "data-raw", "data-binary", "data-urlencode", "data-ascii",
     "json", "form", "form-string", "header", "proxy-header", "user", "user-agent", "referer", "cookie",
     "cookie-jar", "cacert", "capath", "cert", "cert-type", "key", "key-type", "request", "max-time",
     "connect-timeout", "retry", "retry-delay", "retry-max-time", "range", "dump-header", "url",
     "url-query", "oauth2-bearer", "aws-sigv4", "max-redirs", "limit-rate", "speed-limit", "speed-time",
     "continue-at", "time-cond", "trace", "trace-ascii", "stderr", "output-dir", "proxy-user", "quote",
     "ciphers", "tls-max", "pinnedpubkey", "variable", "etag-save", "etag-compare", "create-file-mode",
     "expect100-timeout", "happy-eyeballs-timeout-ms", "keepalive-time", "mail-from", "mail-rcpt",
     "netrc-file", "telnet-option", "tlsuser", "tlspassword", "crlfile", "engine", "hostpubmd5",
     "pubkey", "login-options", "sasl-authzid", "service-name", "local-port", "unix-socket-path"}
)  # fmt: skip
_CURL_REROUTING = re.compile(
    r"proxy(?:1\.0|-[\w-]+)?|preproxy|socks\w*|resolve|connect-to|config|next|dns-\w+|doh-\w+|unix-socket"
    r"|abstract-unix-socket|interface|location-trusted|haproxy-\w+|expand-[\w-]+|url-globbing"
)
_WGET_VALUED = frozenset(
    {"output-document", "output-file", "append-output", "directory-prefix", "header", "user-agent", "user",
     "password", "http-user", "http-password", "post-data", "post-file", "body-data", "body-file",
     "method", "tries", "timeout", "wait", "quota", "level", "accept", "reject", "domains", "referer",
     "load-cookies", "save-cookies", "ca-certificate", "certificate", "private-key", "limit-rate",
     "read-timeout", "connect-timeout", "dns-timeout", "waitretry", "max-redirect", "retry-on-http-error"}
)  # fmt: skip
_WGET_REROUTING = re.compile(
    r"execute|input-file|base|config|input-metalink|proxy-\w+|bind-address|bind-dns-address|dns-servers"
    r"|use-askpass"
)
_HTTPIE_VALUED = frozenset(
    {"auth", "auth-type", "output", "session", "session-read-only", "cert", "cert-key", "verify", "timeout",
     "max-redirects", "pretty", "style", "print", "format-options", "response-charset", "response-mime",
     "ssl", "ciphers", "default-scheme", "bearer", "body", "raw"}
)  # fmt: skip
_HTTPIE_REROUTING = re.compile(r"proxy|resolve|unix-socket|interface|follow")
_GH_VALUED = frozenset(
    {"header", "field", "raw-field", "method", "input", "jq", "template", "cache", "preview", "repo", "body",
     "title", "base", "head", "json", "limit", "state", "label", "assignee", "author", "branch", "workflow",
     "ref", "env", "org", "visibility", "description", "with-token"}
)  # fmt: skip
_GH_REROUTING = re.compile(r"hostname")
_METHOD = re.compile(r"GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS")
_GITHUB_API = "api.github.com"


def _with_urls_given(operands: Words, values: Words) -> Words:
    """The operands, and each option's value that is a URL: where a reading dropped an empty argument
    (``-d ''``), the option took the URL after it for its value."""
    return [*operands, *((value, value) for _, value in values if _URL_START.match(value))]


def _curl(words: Words) -> tuple[str, ...] | None:
    read = read_curl(words)
    if read is None or any(
        _HOST_HEADER.match(value) for option, value in read[1] if option in ("H", "header")
    ):
        return None
    return _hosts_of(_with_urls_given(*read))


def _wget(words: Words) -> tuple[str, ...] | None:
    read = read_wget(words)
    if read is None or any(_HOST_HEADER.match(value) for option, value in read[1] if option == "header"):
        return None
    return _hosts_of(_with_urls_given(*read))


def read_curl(words: Words) -> Read | None:
    """curl's operands and options' values: None where an option sends its requests elsewhere or reads
    more of them from elsewhere."""
    return read_options(words, "AbcCdDeEFHmoPQrtTuUwXyYz", "xK:", _CURL_VALUED, _CURL_REROUTING)


def read_wget(words: Words) -> Read | None:
    """wget's operands and options' values, as ``read_curl``."""
    return read_options(words, "aAoOPQtTwlRDIXU", "eiB", _WGET_VALUED, _WGET_REROUTING)


def read_httpie(words: Words) -> Read | None:
    """HTTPie's and xh's operands and options' values, as ``read_curl``."""
    return read_options(words, "aAopsv", "x", _HTTPIE_VALUED, _HTTPIE_REROUTING)


def httpie_request(operands: Words) -> Words:
    """HTTPie's and xh's ``[METHOD] URL [ITEMS]``: the URL and the items, past a method."""
    return operands[1:] if operands and _METHOD.fullmatch(operands[0][1]) else operands


def _httpie(words: Words) -> tuple[str, ...] | None:
    """HTTPie and xh: the URL is the first operand but a method (``:PORT`` the local host's); the items
    after it are headers and data, a ``Host:`` header among them sending the request elsewhere."""
    read = read_httpie(words)
    if read is None:
        return None
    operands = httpie_request(read[0])
    if not operands or any(_HOST_HEADER.match(value) for _, value in operands[1:]):
        return None
    if _LOCAL_SHORTHAND.fullmatch(operands[0][1]):
        return ("localhost",)
    return _hosts_of(operands[:1])


_LOCAL_SHORTHAND = re.compile(r":\d*(?:/.*)?", re.S)
"""HTTPie's URL of the local host (``:3000/items``)."""


def _gh(words: Words) -> tuple[str, ...] | None:
    """gh sends to GitHub's API, or to the host a ``--hostname`` or a full URL names."""
    read = read_options(words, "HfFXqtpRbBLsj", "", _GH_VALUED | {"hostname"}, re.compile("(?!)"))
    if read is None:
        return None
    operands, values = read
    hosts = [value.lower() for option, value in values if option == "hostname"]
    for option, value in values:
        if option in ("R", "repo") and value.count("/") >= 2:
            hosts.append(value.split("/", 1)[0].lower())
    urls = [(raw, value) for raw, value in operands if _URL_START.match(value) or "$(" in raw or "`" in raw]
    named = _hosts_of(urls, bare=False) if urls else ()
    if named is None or not all(_LITERAL_HOST.fullmatch(host) for host in hosts):
        return None
    return (*hosts, *named) if hosts or named else (_GITHUB_API,)


_GIT_REROUTING = re.compile(r"(?i)insteadof|proxy|sshcommand|\.url=|^include|^core\.")


def _git(words: Words) -> tuple[str, ...] | None:
    """git sends to the URLs it is given (``git clone https://x:$T@github.com/o/r``); to a remote it
    names only by its name (``origin``), nowhere it says."""
    urls = []
    at = 0
    while at < len(words):
        raw, value = words[at]
        at += 1
        if value == "-c" and at < len(words):
            if _GIT_REROUTING.search(words[at][1]):
                return None
            at += 1
        elif _URL_START.match(value) or "$(" in raw or "`" in raw:
            urls.append((raw, value))
        elif re.fullmatch(r"[\w.-]+@[\w.-]+:.*", value):
            urls.append((raw, f"ssh://{value.replace(':', '/', 1)}"))
    return _hosts_of(urls, bare=False) if urls else None


_DESTINATIONS: dict[str, Callable[[Words], tuple[str, ...] | None]] = {
    "curl": _curl,
    "wget": _wget,
    "wget2": _wget,
    "http": _httpie,
    "https": _httpie,
    "xh": _httpie,
    "xhs": _httpie,
    "gh": _gh,
    "git": _git,
}


def destinations(name: str, words: Words) -> tuple[str, ...] | None:
    """The hosts a network command (``NETWORK_COMMANDS``) of these words sends to, None where they are not
    known for certain."""
    return _DESTINATIONS[name](words)
