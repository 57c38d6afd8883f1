"""Destructive commands: what the arguments of a command-running tool would do, not only its name.

A shell, a code interpreter, a SQL console or a CLI wrapper is asked to run whatever its arguments say, so
``run {"cmd": "rm -rf ~"}`` is read for the command: the `destructive_commands` rule pack runs over the
arguments' strings and over readings that undo what hides a command from a plain search (quotes inside
words, backslashes, ``$IFS``, variables, ``eval`` and ``sh -c``, ANSI-C, hex and octal escapes, base64,
argv lists, ``/bin/rm``, ``/???/r?``). Only those tools' arguments are read, and another tool's fields
that name a command (``command``, ``cmd``, ``script``; ``sql`` and ``query`` for the data-store rules alone),
never prose or a tool's result, so documentation that mentions ``rm -rf`` is nothing here.

A quoted string holding a space is one word to the shell and a string to code: data, not a command
(``grep -rn 'rm -rf /'``, ``print('rm -rf /')``), unless something in the same text runs strings (a shell
or interpreter, ``eval``, ``ssh``, ``xargs``, a SQL client, ``os.system``, ``subprocess``, a variable run as
a command, a file of commands written to). SQL is read statement by statement with its comments and
string literals taken out (``SELECT 'DROP TABLE x'``, ``-- DROP TABLE``), ``DROP/**/TABLE`` read as
``DROP TABLE``.
"""

from __future__ import annotations

import base64
import binascii
import json
import posixpath
import re
from collections.abc import Iterator
from fnmatch import fnmatchcase
from typing import Any

from proxy.detectors.tools import CatalogueEntry, name_matches
from proxy.exchange import ToolCall
from proxy.model import SEVERITY_ORDER
from proxy.scanning.rulepack import Match, Rule, RulePack, ScanBudget, Scanner

PACK = "destructive_commands"
COMMAND_TOOLS = (
    "*shell*", "*bash*", "sh", "zsh", "*_sh", "*terminal*", "*console*", "*exec*", "*command*", "*cmd*",
    "run", "run_*", "*_run", "*runner*", "*python*", "*interpreter*", "*repl*", "*jupyter*", "*notebook*",
    "*script*", "eval", "eval_*", "*sql*", "db", "db_*", "*_db", "*mysql*",
    "*sqlite*", "*postgres*", "*mongo*", "*redis*", "*snowflake*", "*bigquery*", "*duckdb*",
    "*clickhouse*", "*kubectl*", "*helm*", "*terraform*", "*tofu*", "*pulumi*", "*aws*", "*gcloud*",
    "*gsutil*", "az", "az_*", "*docker*", "*ssh*", "*powershell*", "pwsh", "git", "git_*", "*_git", "cli",
    "*_cli", "cli_*", "*process*", "*sandbox*", "container*", "*code_execution*", "*code_interpreter*",
)  # fmt: skip
"""Tools that run what their arguments say, by the names agent frameworks and MCP servers give them."""
QUERY_TOOLS = ("*query*", "*database*")
"""Names of tools that run a query, unless a word of the name says the query is a search
(``SEARCH_WORDS``: ``search_database``, ``vector_query``): those are read for their command fields alone."""
SEARCH_WORDS = frozenset(
    {"search", "vector", "semantic", "similar", "similarity", "knowledge", "kb", "docs", "doc", "web", "rag",
     "retrieve", "retrieval", "embedding", "embeddings", "faq", "memory", "nl", "natural", "ask", "lookup",
     "find", "fulltext", "text"}
)  # fmt: skip
COMMAND_FIELDS = frozenset(
    {"command", "commands", "cmd", "cmdline", "command_line", "script", "shell", "bash", "sh", "powershell",
     "exec", "code"}
)  # fmt: skip
"""Fields of any tool's arguments read as commands by every rule of the pack."""
SQL_FIELDS = frozenset({"sql", "statement", "statements", "stmt"})
"""Fields of a tool that is no command tool read by the data-store rules alone."""
QUERY_FIELDS = frozenset({"query", "queries"})
"""Fields read as ``SQL_FIELDS`` are, unless the tool's name says it searches: there a query is a phrase
to look for (``search_docs {"query": "DROP TABLE syntax"}``). A phrase elsewhere is prose and reads as no
statement (``how do I drop a table``)."""
DATA_STORE_RULES = ("cmd-sql-", "cmd-datastore-")
"""Id prefixes of the rules that read SQL and other data stores' commands."""

CLI_TOOLS = ("kubectl", "helm", "terraform", "tofu", "pulumi", "aws", "gcloud", "gsutil", "az", "git",
             "docker", "psql", "mysql", "redis-cli", "systemctl")  # fmt: skip
"""Command lines whose tool may be given only the words after the program's name (``aws_cli
{"command": "s3 rm s3://b --recursive"}``): those arguments are read with the name before them too."""

_DANGEROUS_WORDS = ("rm", "rmdir", "dd", "mkfs", "shred", "wipefs", "chmod", "chown", "kill", "pkill",
                    "killall", "find", "sh", "bash", "dash", "zsh", "shutdown", "reboot", "poweroff", "halt",
                    "curl", "wget", "base64", "xxd", "git", "kubectl", "terraform", "aws", "gcloud",
                    "python", "python3", "perl", "setenforce", "iptables", "history")  # fmt: skip
"""What a glob standing as a command's name (``/???/r?``) is taken for, where it matches one."""

WINDOW = 16 * 1024
"""Characters of a string read for commands at once: a longer one (a script) is read in windows that
overlap by ``_OVERLAP``, so that the readings' cost grows with its length and no more."""
_OVERLAP = 1024
_MAX_DEPTH = 2
"""Decodings read within decodings (base64 holding hex), enough for what a one-line command nests."""


def is_command_tool(name: str) -> bool:
    if name_matches(name, COMMAND_TOOLS):
        return True
    return name_matches(name, QUERY_TOOLS) and not _name_words(name) & SEARCH_WORDS


def command_scanner(packs: list[RulePack]) -> Scanner:
    return Scanner([pack for pack in packs if pack.name == PACK])


def destructive_entry(call: ToolCall, scanner: Scanner, budget: ScanBudget) -> CatalogueEntry | None:
    """The rule a command tool's arguments (another tool's command fields) break, the most severe where
    several do, as a catalogue entry (the call then needs approval as a destructive tool does; a rule
    below high severity is only noted), or None. A rule out of time on them counts as broken: what it did
    not read may be the command."""
    if not scanner.rules:
        return None
    texts = _judged_texts(call)
    if not texts:
        return None
    if budget.spent_for(len(call.arguments)):
        scan = scanner.scan(call.arguments, budget)  # read by none of the rules: the pack is out of time
        found, timed_out = scan.found, scan.timed_out
    else:
        # The readings are charged as the scan is: an argument crafted to make them long costs the budget.
        budget.allow(len(call.arguments))
        found, timed_out = [], ()
        with budget.metered() as meter:
            for text, data_store_only in texts:
                budget.allow(len(text))
                scan = scanner.scan_metered(text, meter, merge=False)
                found += [match for match in scan.found if not data_store_only or _reads_data_stores(match)]
                timed_out += scan.timed_out
    rule = _most_severe(found) or next((scanner.rules_by_id[rule_id] for rule_id in timed_out), None)
    if rule is None:
        return None
    return CatalogueEntry(
        id=rule.id,
        description=rule.description,
        severity=rule.severity,
        owasp=rule.owasp,
        globs=(),
        by_arguments=True,
    )


def _reads_data_stores(match: Match) -> bool:
    return match.rule.id.startswith(DATA_STORE_RULES)


def _most_severe(found: list[Match]) -> Rule | None:
    rules = [match.rule for match in found]
    return max(rules, key=lambda rule: SEVERITY_ORDER[rule.severity], default=None)


def _judged_texts(call: ToolCall) -> list[tuple[str, bool]]:
    """The readings of a call's arguments, each with whether only the data-store rules may read it: a
    command tool's whole arguments; another tool's command fields, and its query fields as SQL."""
    if is_command_tool(call.name):
        return [(readings(call.name, call.arguments), False)]
    searches = bool(_name_words(call.name) & SEARCH_WORDS)
    commands = _fields(call.arguments, COMMAND_FIELDS)
    statements = _fields(call.arguments, SQL_FIELDS if searches else SQL_FIELDS | QUERY_FIELDS)
    texts = []
    if commands:
        texts.append(("\n".join(text for command in commands for text in _readings_of(command, [])), False))
    if statements:
        texts.append(("\n".join(sql_statements(statement) for statement in statements), True))
    return texts


def _fields(arguments: str, names: frozenset[str]) -> list[str]:
    """The strings of JSON arguments under a field of one of these names, at any depth."""
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):
        return []
    found: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, field in item.items():
                if _field_name(str(key)) in names:
                    found += _strings(json.dumps(field))
                else:
                    stack.append(field)
        elif isinstance(item, list):
            stack.extend(item)
    return found


def readings(name: str, arguments: str) -> str:
    """Every reading of a call's arguments, one after another: each string as given, its strings of
    code joined as an argv, its commands one a line with their disguises undone, and what base64 or hex
    in it decodes to, read the same way."""
    prefixes = [cli for cli in CLI_TOOLS if cli.split("-")[0] in _name_words(name)]
    out: list[str] = []
    for text in _strings(arguments):
        out += _readings_of(text, prefixes)
    return "\n".join(dict.fromkeys(out))


def _readings_of(text: str, prefixes: list[str]) -> list[str]:
    out: list[str] = []
    for variant in (text, *(f"{cli} {text}" for cli in prefixes if not text.lstrip().startswith(cli))):
        for window in _windows(variant):
            out += _read(window, 0)
    return out


def _windows(text: str) -> Iterator[str]:
    """``WINDOW``-long pieces of the text, cut after a line where one ends in their second half, each
    starting at the line that overlaps the one before by at most ``_OVERLAP`` (by ``_OVERLAP`` where no
    line ends there), so that a command cut at one window's end is read whole in the next."""
    start = 0
    while True:
        end = start + WINDOW
        if end >= len(text):
            yield text[start:]
            return
        cut = text.rfind("\n", start + WINDOW // 2, end)
        end = cut if cut > 0 else end
        yield text[start:end]
        line = text.rfind("\n", end - _OVERLAP, end)
        start = line + 1 if line > start else end - _OVERLAP


def _name_words(name: str) -> set[str]:
    return {word for word in re.split(r"[^a-z0-9]+", name.lower()) if word}


_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _field_name(key: str) -> str:
    """A field's name as snake case, its words in order: ``commandLine``, ``command-line`` and
    ``command_line`` alike."""
    return "_".join(word for word in re.split(r"[^a-z0-9]+", _CAMEL_HUMP.sub("_", key).lower()) if word)


def _strings(arguments: str) -> Iterator[str]:
    """The strings of JSON arguments (a list of strings also as one command line, as an argv is run), or
    the arguments themselves where they are no JSON (a custom tool's free-form input)."""
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):
        yield arguments
        return
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            if item and all(isinstance(element, str) for element in item):
                yield " ".join(item)
            stack.extend(item)


def _read(text: str, depth: int) -> list[str]:
    """``readings`` of one string; a commit message (``-m '...'`` with nothing the shell expands) and a
    here-document only stored or printed run nothing, and are left out, and so are quoted strings where
    nothing in the text runs strings (``runs_strings``)."""
    text = _MESSAGE.sub(" ", _without_stored_heredocs(text))
    uncommented, masked = _quoting(text) or (text, text)
    runs = runs_strings(uncommented)
    shell = text if runs else masked
    out = [shell, shell_lines(shell), sql_statements(text)]
    if runs:
        joined = _joined_literals(text)
        if joined:
            out += [joined, shell_lines(joined), sql_statements(joined)]
    if depth < _MAX_DEPTH:
        for decoded in _decodings(text):
            out += _read(decoded, depth + 1)
    return out


_COMMAND_START = (
    r"(?:^|[\n;&|({`!]|\$\(|-exec(?:dir)?[ \t]|-ok[ \t]"
    r"|\b(?:then|do|else|elif|if|while|until|time|nohup|nice|setsid|stdbuf|command|builtin"
    r"|timeout[ \t]+\S+)[ \t])"
    r"[ \t]*(?:[A-Za-z_]\w*=\S*[ \t]+)*"
)
_STRING_RUNNERS = re.compile(
    # A shell, interpreter, SQL client or tool that runs a string it is given, as a command.
    _COMMAND_START + r"(?:\S*/)?(?:(?:ba|da|z|k|mk|c|tc|a|fi|r)?sh|busybox|eval|exec|source|\.|xargs|parallel"
    r"|watch|ssh|su|runuser|sudo|doas|script|flock|tmux|screen|expect|at|batch|crontab|trap|alias|env"
    r"|python[\d.]*|py|perl|ruby|irb|node(?:js)?|deno|bun|php|lua|rscript|osascript|pwsh|powershell"
    r"|cmd(?:\.exe)?|awk|gawk|mawk|nawk|sed|psql|mysql|mariadb|sqlite3?|duckdb|sqlcmd|clickhouse(?:-client)?"
    r"|cqlsh|snowsql|bq|mongo(?:sh)?|redis-cli|vagrant|gcloud|az|kubectl|oc|docker|podman|make|npx|hash|enable"
    r"|shopt|function)(?=[\s;&|)]|$)"
    # A shell or an interpreter told to run a string, wherever it stands (after nice, chroot, uv run).
    r"|(?:^|\s)(?:\S*/)?(?:(?:ba|da|z|k|mk|c|tc|a|fi|r)?sh|python[\d.]*|perl|ruby|node|php|pwsh|powershell"
    r"|osascript|cmd(?:\.exe)?)[ \t]+(?:[-/]\w+[ \t]+)*[-/]\w*[cCeE]\w*(?=[\s'\"]|$)"
    # A variable, a substitution's output or a file of the working folder run as the command.
    r"|(?:^|[\n;&|({!])[ \t]*(?:\$|`|\./)"
    # Code calling what runs a command or a statement.
    r"|\b(?:system|popen\w*|spawn\w*|exec\w*|subprocess|check_output|check_call|getoutput|getstatusoutput|run"
    r"|call|command|start|shell_exec|passthru|proc_open|eval|execute\w*|query|raw|sql|read_sql\w*|text"
    r"|processbuilder|runtime|child_process|__import__|getattr|importlib|compile|function)[ \t]*[(`]"
    r"|\bos\.(?:system|popen|exec\w*|spawn\w*|posix_spawn\w*)|\bpty\b|%x|\bopen3\b|\bkernel\b"
    # SQL running a string: dynamic SQL, a program.
    r"|\b(?:execute|exec|prepare|sp_executesql|xp_cmdshell|dbms_sql|program)\b"
    # Git and npm told to run a command of their configuration.
    r"|\bgit\b[^\n;|&]*[ \t](?:-c[ \t]|config\b)"
    r"|\b(?:npm|yarn|pnpm)\b[^\n;|&]*[ \t](?:-c|exec|dlx|pkg[ \t]+set)\b"
    # Written where a shell or a scheduler reads it later, or made executable.
    r"|(?:>|\btee\b)[^\n;|&]*?(?:\.(?:bash|zsh|ksh)rc|\.profile|_profile|\.zshenv|\.zprofile|\.bash_log(?:in|out)"
    r"|/etc/|cron|authorized_keys|\.(?:sh|bash|zsh|py|pl|rb|js|ps1|bat|cmd|command|service|desktop|plist|sql)\b)"
    r"|\bchmod\b[^\n;|&]*(?:\+x|[ \t][0-7]{3,4})\b",
    re.IGNORECASE | re.MULTILINE,
)


def runs_strings(text: str) -> bool:
    """Whether anything in the text may run a string as a command or a statement, read with its quotes and
    backslashes taken out (so that ``b''ash`` is ``bash``)."""
    return any(
        _STRING_RUNNERS.search(_BACKSLASH.sub(r"\1", reading.replace("'", "").replace('"', "")))
        for reading in (text, _undisguised(text))
    )


def _quoting(text: str) -> tuple[str, str] | None:
    """The text without its comments, and that text with each quoted string holding whitespace put as
    ``'_'``: one word of data to the shell (``grep 'rm -rf /'``, or a command named ``rm -rf /`` that is
    nowhere), a string to code. Quotes are read as the shell reads them (backslashes, ``$'...'``, ``#``
    starting a word); where they cannot be (a quote left open, a here-document, a double-quoted string
    expanding a command or a parameter), None."""
    if _HEREDOC_OPENING.search(text):
        return None
    kept: list[str] = []
    masked: list[str] = []
    at, length, word_start = 0, len(text), True
    while at < length:
        char = text[at]
        if char == "\\":
            kept.append(text[at : at + 2])
            masked.append(text[at : at + 2])
            at, word_start = at + 2, False
            continue
        if char == "#" and word_start:
            end = text.find("\n", at)
            at = length if end < 0 else end
            continue
        ansi = char == "$" and text.startswith("'", at + 1)
        if char in "'\"" or ansi:
            quote_at = at + 1 if ansi else at
            quote = text[quote_at]
            end = quote_at + 1
            while end < length and text[end] != quote:
                end += 2 if text[end] == "\\" and (quote == '"' or ansi) else 1
            if end >= length:
                return None
            body = text[quote_at + 1 : end]
            if quote == '"' and ("`" in body or "$(" in body or "${" in body):
                return None
            kept.append(text[at : end + 1])
            masked.append("'_'" if any(part.isspace() for part in body) else text[at : end + 1])
            at, word_start = end + 1, False
            continue
        kept.append(char)
        masked.append(char)
        word_start = char.isspace() or char in ";&|()<>"
        at += 1
    return "".join(kept), "".join(masked)


_HEREDOC_OPENING = re.compile(r"<<(?!<)")
_SQL_TOKEN = re.compile(
    r"--[^\n]*|/\*.*?(?:\*/|$)|(\$\w*\$).*?(?:\1|$)|(?:(?<![\w$])[eEnNxXbB])?'(?:''|[^'])*(?:'|$)"
    r"|\"(?:\"\"|[^\"])*(?:\"|$)|`[^`]*(?:`|$)|;",
    re.DOTALL,
)
_SQL_TOKEN_ESCAPED = re.compile(_SQL_TOKEN.pattern.replace("(?:''|[^'])", "(?:''|\\\\.|[^'\\\\])"), re.DOTALL)
"""As ``_SQL_TOKEN``, a backslash escaping the quote after it as MySQL reads it: both readings are made."""
_SQL_LINE_START = re.compile(r"(?im)^[ \t]*(?:drop|truncate|delete|update|alter|db\.|flush)")


def sql_statements(text: str) -> str:
    """The SQL statements of a text one a line, their whitespace runs as one space, comments out (as a
    space, so that ``DROP/**/TABLE`` reads ``DROP TABLE``) and string literals as ``''``: data, not
    statements (``SELECT 'DROP TABLE x'``); a dollar-quoted body (a function's) is code and kept. A
    statement spanning lines is read from each of its lines that starts one too, for what a line of
    another language puts before it (``psql <<EOF``)."""

    def token(match: re.Match[str]) -> str:
        found = match.group(0)
        if found == ";":
            return "\0"
        if found.startswith(("--", "/*")):
            return " "
        if match.group(1) or found[0] in '"`':
            return found
        return "''"

    statements = []
    readings = [_SQL_TOKEN.sub(token, text)]
    if "\\'" in text:
        readings.append(_SQL_TOKEN_ESCAPED.sub(token, text))
    for statement in (piece for reading in readings for piece in reading.split("\0")):
        lines = [line for line in statement.split("\n") if line.strip()]
        if not lines:
            continue
        statements.append(" ".join(" ".join(lines).split()))
        statements += [
            " ".join(" ".join(lines[number:]).split())
            for number in range(1, len(lines))
            if _SQL_LINE_START.match(lines[number])
        ]
    return "\n".join(dict.fromkeys(statements))


_LITERAL = re.compile(r"""(?:\b[rbuf]{1,2})?(["'])((?:\\.|(?!\1)[^\\\n]){0,4096})\1""")
_LITERAL_RUN = re.compile(
    r"""(?:["'](?:\\.|[^\\\n"']){0,4096}["']\s*(?:,|\|\||\+|\.)\s*)*["'](?:\\.|[^\\\n"']){0,4096}["']"""
)


def _joined_literals(text: str) -> str:
    """The string literals of code, a run separated by commas or joined (``||``, ``+``, ``.``) joined by
    spaces, one run a line: what ``subprocess.run(["rm", "-rf", "/"])``, ``exec.Command("rm", "-rf", "/")``,
    ``os.system('...')`` or ``EXECUTE 'DROP TABLE ' || name`` runs."""
    if "'" not in text and '"' not in text:
        return ""
    lines = []
    for run in _LITERAL_RUN.finditer(text):
        pieces = [match.group(2) for match in _LITERAL.finditer(run.group(0)) if match.group(2).strip()]
        if pieces:
            lines.append(" ".join(_unescaped(piece) for piece in pieces))
    return "\n".join(lines)


_ESCAPE = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|([0-7]{1,3})|(.))", re.DOTALL)
_NAMED_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "a": "", "e": ""}


def _unescaped(text: str) -> str:
    """Backslash escapes as printf, ``echo -e``, ``$'...'`` and code read them; any other character after
    a backslash stands for itself, as the shell reads ``\\rm`` or ``r\\m``."""

    def one(match: re.Match[str]) -> str:
        hexa, uni, octal, other = match.groups()
        if hexa or uni:
            return chr(int(hexa or uni, 16))
        if octal:
            return chr(int(octal, 8))
        return _NAMED_ESCAPES.get(other, other)

    return _ESCAPE.sub(one, text) if "\\" in text else text


_BASE64 = re.compile(
    r"(?<![\w+/=])[A-Za-z0-9+/]{8,}={0,2}(?![\w+/=])|(?<![\w-])[A-Za-z0-9_-]{16,}={0,2}(?![\w=-])"
)
_HEX = re.compile(r"(?<![0-9a-fA-F])(?:[0-9a-fA-F]{2}[ :]?){6,}(?![0-9a-fA-F])")


def _decodings(text: str) -> Iterator[str]:
    """What base64 and hex runs of the text decode to, where that is readable text."""
    for match in _BASE64.finditer(text):
        token = match.group(0)
        try:
            raw = base64.b64decode(
                token + "=" * (-len(token) % 4), altchars=b"-_" if "-" in token or "_" in token else None
            )
        except (binascii.Error, ValueError):
            continue
        decoded = _readable(raw)
        if decoded:
            yield decoded
    for match in _HEX.finditer(text):
        digits = re.sub("[ :]", "", match.group(0))
        decoded = _readable(bytes.fromhex(digits)) if len(digits) % 2 == 0 else None
        if decoded:
            yield decoded


def _readable(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(char.isprintable() or char in "\n\t" for char in text)
    return text if text and printable == len(text) and any(char.isalpha() for char in text) else None


_CONTINUATION = re.compile(r"\\\r?\n")
_MESSAGE = re.compile(r"""(?<=\s)(?:-m|--message)(?:\s+|=)(?:'[^']*'|"[^"$`\\]*")""")
_ASSIGNMENT = re.compile(
    r"""(?:^|(?<=[\s;&|(]))(?:export\s+|local\s+|readonly\s+|declare\s+(?:-\w+\s+)?)?([A-Za-z_]\w*)="""
    r"""(?:'([^']*)'|"([^"$`]*)"|([^\s;&|'"`]*))"""
)
_USE = re.compile(r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)")
_IFS = re.compile(r"\$\{IFS[^}]*\}|\$IFS(?:\$\d|\$\{\d\})?")
_ANSI_C = re.compile(r"\$'((?:\\.|[^'\\])*)'")
_DEFAULTED = re.compile(r"\$\{[A-Za-z_]\w*:?[-=+]([^}]*)\}")
_ECHOED = re.compile(
    r"""\$\(\s*(?:echo|printf)\s+(?:-[neE]+\s+)?([^()`]*)\)|`\s*(?:echo|printf)\s+(?:-[neE]+\s+)?([^`()]*)`"""
)
_BASE64_PIPED = re.compile(r"""\s*['"]?([A-Za-z0-9+/=_-]+)['"]?\s*\|\s*base64\s+(?:-d|--decode|-D)\s*""")


def _echoed(match: re.Match[str]) -> str:
    """What ``$(echo ...)`` or ``$(printf ...)`` puts in place: the text, decoded where it is piped to
    ``base64 -d`` (a word of a command too short to be read as base64 alone: ``$(echo cm0= | base64 -d)``)."""
    echoed = match.group(1) or match.group(2) or ""
    piped = _BASE64_PIPED.fullmatch(echoed)
    if piped is not None:
        token = piped.group(1)
        try:
            decoded = _readable(base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_"))
        except (binascii.Error, ValueError):
            decoded = None
        return decoded or echoed
    return echoed


_EMPTY_EXPANSION = re.compile(r"\$[@*]|\$\{[@*]\}|(?<=[A-Za-z0-9_./-])\$\{?[A-Za-z_]\w*\}?(?=[A-Za-z0-9_./])")
_BRACED_NAME = re.compile(r"\$\{([A-Za-z_]\w*)\}")
_BRACES = re.compile(r"\{([^{}\s,]*(?:,[^{}\s,]*)+)\}")
_SEPARATOR = re.compile(r"&&|\|\||;|(?<![>&<0-9])&(?![>&])|\n|\$\(|`|[(){}]")
_WRAPPER = re.compile(
    r"""^\s*(?:(?:sudo|doas)(?:\s+-[A-Za-z]*[ugpCDhrtU]\s+\S+|\s+--\w[\w-]*(?:=\S+)?|\s+-[A-Za-z]+)*\s+"""
    r"""|env(?:\s+-\S+|\s+[A-Za-z_]\w*=\S*)*\s+|[A-Za-z_]\w*=\S*\s+"""
    r"""|(?:nohup|time|exec|command|builtin|eval|then|do|else|if|elif|while|until|!|busybox|unbuffer|set\s+--)\s+|!(?=\S)"""
    r"""|(?:nice|ionice|stdbuf|strace|watch|xargs|setsid|chroot\s+\S+)(?:\s+-\S+(?:\s+\d+)?)*\s+"""
    r"""|timeout(?:\s+-\S+)*\s+\d+\w?\s+"""
    r"""|(?:\S*/)?(?:ba|da|z|k|c|tc|a)?sh(?:\s+-[a-bd-z]+)*\s+-c\s+)"""
)
_COMMAND_PATH = re.compile(r"^(\s*)\S*/(?=[^\s/]+(?:\s|$))")


def shell_lines(text: str) -> str:
    """The commands of a shell text, one a line with a pipe's commands after ``|``, their disguises undone
    (line continuations, quotes inside and around words, ``$IFS``, ANSI-C quoting, ``$(echo ...)``,
    defaults and empty expansions, simple variables, brace lists, wrappers such as ``sudo``, ``env``,
    ``xargs``, ``eval``, ``bash -c`` and ``VAR=1``, a command's directory and a glob standing for its
    name), read twice: backslashes dropped as the shell drops them (``r\\m``), and escapes decoded as
    printf and ``echo -e`` decode them. Before the lines, each of the two texts whole, for what spans
    separators (a fork bomb)."""
    unquoted = _undisguised(text).replace("'", "").replace('"', "")
    out: list[str] = []
    for reading in (_BACKSLASH.sub(r"\1", unquoted), _unescaped(unquoted)):
        out.append(reading)
        for line in _SEPARATOR.split(reading):
            if not line.strip():
                continue
            commands = [command for piece in line.split("|") if (command := _command(piece))]
            if commands:
                out.append(" | ".join(commands))
            out += [statements for command in commands for statements in _client_statements(command)]
    return "\n".join(dict.fromkeys(out))


_BACKSLASH = re.compile(r"\\(.)", re.DOTALL)


def _undisguised(text: str) -> str:
    """A shell text with what disguises its words undone: line continuations, ``$(echo ...)``, simple
    variables, ``$IFS``, ANSI-C quoting, defaults and empty expansions, brace lists."""
    text = _CONTINUATION.sub("", text)
    text = _ECHOED.sub(_echoed, text)
    text = _substituted(text)
    text = _IFS.sub(" ", text)
    text = _ANSI_C.sub(lambda match: _unescaped(match.group(1)), text)
    text = _DEFAULTED.sub(lambda match: match.group(1), text)
    text = _EMPTY_EXPANSION.sub("", text)
    text = _BRACED_NAME.sub(r"$\1", text)
    return _BRACES.sub(lambda match: match.group(1).replace(",", " "), text)


_SQL_CLIENTS = frozenset(
    {"psql", "mysql", "mariadb", "sqlite3", "sqlite", "duckdb", "sqlcmd", "clickhouse-client", "clickhouse",
     "cqlsh", "snowsql", "bq", "mongo", "mongosh", "redis-cli", "cockroach", "vsql", "isql", "usql"}
)  # fmt: skip
_STATEMENT_WORD = re.compile(r"(?i)(?<=\s)(?:drop|truncate|delete|update|alter|db\.|flush)")


def _client_statements(command: str) -> Iterator[str]:
    """A SQL client's command line (its quotes gone: ``psql -c DROP TABLE users``) read as SQL from each
    word that may start a statement."""
    if posixpath.basename(command.partition(" ")[0]).lower() in _SQL_CLIENTS:
        for word in _STATEMENT_WORD.finditer(command):
            yield sql_statements(command[word.start() :])


_HEREDOC = re.compile(r"""<<-?[ \t]*(['"]?)([A-Za-z_]\w*)\1([^\n]*)\n""")
_MAX_HEREDOCS = 16
_INTERPRETERS = re.compile(
    r"(?:^|[\s/|;&(])(?:(?:ba|da|z|k|c|tc|a)?sh|python[\d.]*|perl|ruby|node|php|psql|mysql|sqlite3|redis-cli|"
    r"mongo(?:sh)?|ssh|exec|eval|source|xargs|kubectl|docker|podman|osascript|pwsh|powershell)(?=[\s;|&)]|$)"
)


def _without_stored_heredocs(text: str) -> str:
    """The text without the here-documents fed to a command that only stores or prints them
    (``cat > notes.md <<'EOF'``): data, not commands. One fed to a shell or an interpreter, expanding a
    command (``$(...)``, backquotes, where its delimiter is not quoted), or stored in a file the text names
    again (``cat > x.sh <<EOF ... EOF; bash x.sh``), is kept and read as commands."""
    kept: list[str] = []
    at = 0
    for count, opening in enumerate(_HEREDOC.finditer(text)):
        if count == _MAX_HEREDOCS or opening.start() < at:
            break
        quoted, word, rest = opening.groups()
        end = re.compile(rf"\n[ \t]*{re.escape(word)}[ \t]*(?=\n|$)").search(text, opening.end() - 1)
        if end is None:
            continue  # unended: maybe no here-document at all (C++'s `cout << x`), read as it stands
        line_start = text.rfind("\n", 0, opening.start()) + 1
        body = text[opening.end() : end.start()]
        command = text[line_start : opening.start()] + rest
        expands = not quoted and ("$(" in body or "`" in body)
        written = _WRITTEN.search(command)
        named_again = written is not None and (
            posixpath.basename(written.group(1)) in text[:line_start] + text[end.end() :]
        )
        if not expands and not named_again and not _INTERPRETERS.search(command):
            kept.append(text[at : opening.start()] + rest + "\n")
            at = end.end()
    return "".join(kept) + text[at:]


_WRITTEN = re.compile(r"(?:>>?|\btee(?:[ \t]+-\S+)*)[ \t]*([^\s;&|<>]+)")


def _substituted(text: str) -> str:
    """Variables a text assigns (``a=rm; $a -rf /``) filled in where it uses them, twice over for a
    variable built from others."""
    values = {
        match.group(1): next(group for group in match.groups()[1:] if group is not None)
        for match in _ASSIGNMENT.finditer(text)
        if match.group(1) != "IFS"
    }
    if not values:
        return text
    for _ in range(2):
        text = _USE.sub(lambda match: values.get(match.group(1) or match.group(2), match.group(0)), text)
    return text


def _command(piece: str) -> str:
    """One command with its wrappers and its directory taken off, a glob for its name read as the
    dangerous command it matches."""
    for _ in range(8):
        stripped = _WRAPPER.sub("", _COMMAND_PATH.sub(r"\1", piece), count=1)
        if stripped == piece:
            break
        piece = stripped
    piece = piece.strip()
    word, _, rest = piece.partition(" ")
    if any(char in word for char in "?*[") and "/" not in word:
        word = next((candidate for candidate in _DANGEROUS_WORDS if fnmatchcase(candidate, word)), word)
    return f"{word} {' '.join(_normal_path(argument) for argument in rest.split(' '))}".strip()


_HOME = re.compile(r"^(?:~|\$HOME|\$\{HOME\})(?=/|$)")


def _normal_path(word: str) -> str:
    """A path argument as the directory it names (``/usr/..`` is ``/``, ``~/x/..`` is ``~``, ``./../..``
    is ``../..``, ``//`` is ``/``), so that a broad path is known however it is spelled; a home
    folder left by ``..`` is ``/home``."""
    if not word.startswith(("/", "~", "$HOME", "${HOME}", ".")) or word in (".", "..", "/", "~"):
        return word
    home = _HOME.match(word)
    path = "/home/\0" + word[home.end() :] if home else re.sub("^/+", "/", word)
    normal = posixpath.normpath(path)
    if home and (normal == "/home/\0" or normal.startswith("/home/\0/")):
        return "~" + normal[len("/home/\0") :]
    return normal + "/" if word.endswith("/") and normal != "/" else normal
