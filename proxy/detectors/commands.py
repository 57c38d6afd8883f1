"""Destructive commands: what the arguments of a command-running tool would do, not only its name.

A shell, a code interpreter, a SQL console or a CLI wrapper is asked to run whatever its arguments say, so
``run {"cmd": "rm -rf ~"}`` is read for the command: the `destructive_commands` rule pack (and
`remote_access`, ``PACKS``) runs over the arguments' strings and over readings that undo what hides a
command from a plain search (quotes inside words, backslashes, ``$IFS``, variables, ``eval`` and ``sh -c``,
ANSI-C, hex and octal escapes, base64, argv lists, ``/bin/rm``, ``/???/r?``). Only those tools' arguments
are read, and another tool's fields that name a command (``command``, ``cmd``, ``script``; ``sql`` and
``query`` for the data-store rules alone), never prose or a tool's result, so documentation that mentions
``rm -rf`` is nothing here.

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
import functools
import json
import posixpath
import re
import shlex
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from proxy.detectors.tools import CatalogueEntry, glob_matches, name_matches
from proxy.exchange import ToolCall
from proxy.model import SEVERITY_ORDER, Severity
from proxy.scanning import relaxed
from proxy.scanning.rulepack import Match, Rule, RulePack, ScanBudget, Scanner

PACK = "destructive_commands"
PACKS = (PACK, "remote_access")
"""The packs read over a command tool's arguments: what destroys, and what hands the host to someone else
or keeps a way into it (a reverse shell, a key added to ``authorized_keys``, a tunnel)."""
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
SQL_RULES = "cmd-sql-"
"""Id prefix of the rules that read SQL statements, and nothing else."""
SHELL, SQL = "shell", "sql"
"""The two readings of a text: its commands one a line, and its SQL statements one a line."""

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
    return Scanner([pack for pack in packs if pack.name in PACKS])


def destructive_entry(
    call: ToolCall, scanner: Scanner, budget: ScanBudget, sent: int | None = None
) -> CatalogueEntry | None:
    """The rule a command tool's arguments (another tool's command fields) break, the most severe where
    several do, as a catalogue entry (the call then needs approval as a destructive tool does; a rule
    below high severity is only noted), or None. A rule out of time on them counts as broken, and at high
    severity whatever it looks for, so that no finding of a routine rule stands for it: what it did not
    read may be the command (the budget names it, for the record). ``sent``: the characters of the
    arguments the agent sent, where they hold more (what the conversation's other calls left, repeated
    where the call uses it again and again): the budget grows by their share alone."""
    if not scanner.rules or not judges(call.name, call.arguments):
        return None
    share = 1.0 if sent is None else min(1.0, sent / len(call.arguments))
    if budget.spent_for(round(len(call.arguments) * share)):
        scan = scanner.scan(call.arguments, budget)  # read by none of the rules: the pack is out of time
        found, timed_out = scan.found, scan.timed_out
    else:
        # The readings are made and charged as the scan is: arguments crafted to make them long or slow to
        # make cost the budget, and a spent budget makes none.
        budget.allow(round(len(call.arguments) * share))
        found, timed_out = [], ()
        with budget.metered() as meter:
            texts = _judged_texts(call.name, call.arguments)
            if not texts:
                return None
            for text, reading in texts:
                budget.allow(round(len(text) * share))
                scan = scanner.scan_metered(text, meter, merge=False)
                found += [match for match in scan.found if _reads(match.rule, reading)]
                timed_out += scan.timed_out
    if timed_out:
        return _unread_entry(scanner.rules_by_id[timed_out[0]])
    rule = _most_severe(found)
    return None if rule is None else _entry(rule, rule.severity)


def unread_entry(scanner: Scanner, budget: ScanBudget) -> CatalogueEntry | None:
    """The entry of a command tool's call whose commands are not known in time (what the conversation's
    other calls left it to run, ``scripts.run_arguments``): its packs out of time on it, in the budget too,
    as though the rules had no budget left to read it; the entry is the first pack's."""
    unread = [scanner.unread[name] for name in PACKS if name in scanner.unread]
    if not scanner.rules or not unread:
        return None
    for rule in unread:
        budget.timed_out.setdefault(rule.id, rule)
    return _unread_entry(unread[0])


def _unread_entry(rule: Rule) -> CatalogueEntry:
    return _entry(rule, max(rule.severity, Severity.HIGH, key=SEVERITY_ORDER.__getitem__), unread=True)


def _entry(rule: Rule, severity: Severity, *, unread: bool = False) -> CatalogueEntry:
    return CatalogueEntry(
        id=rule.id,
        description=f"what {rule.description} may be, unread: out of time" if unread else rule.description,
        severity=severity,
        owasp=rule.owasp,
        globs=(),
        by_arguments=True,
    )


def _reads(rule: Rule, reading: str) -> bool:
    """Whether a rule judges a reading: the SQL rules read statements alone (a shell's reading splits
    ``round(x, 2) WHERE`` at its brackets), the other data-store rules statements and commands, every other
    rule commands alone."""
    if reading == SQL:
        return rule.id.startswith(DATA_STORE_RULES)
    return not rule.id.startswith(SQL_RULES)


def _most_severe(found: list[Match]) -> Rule | None:
    rules = [match.rule for match in found]
    return max(rules, key=lambda rule: SEVERITY_ORDER[rule.severity], default=None)


def shell_readings(name: str, arguments: str) -> str:
    """The commands a tool's call runs, one a line with their disguises undone (``readings``), or nothing
    for a call that runs none: what other rules about commands (credential reads) read besides the
    arguments."""
    return "\n".join(text for text, reading in _judged_texts(name, arguments) if reading == SHELL)


# The destructive-command and credential-read checks of one call read the same readings, one after the
# other: the last few are kept.
@functools.lru_cache(maxsize=8)
def _judged_texts(name: str, arguments: str) -> tuple[tuple[str, str], ...]:
    """The readings of a call's arguments, each with what it reads (``SHELL`` or ``SQL``): a command
    tool's whole arguments; another tool's command fields, and its query fields as SQL."""
    if is_command_tool(name):
        return tuple(_both(readings(name, arguments)))
    commands, statements = _judged_fields(name, arguments)
    texts = []
    if commands:
        texts += _both(_joined(_readings_of(command, []) for command in commands))
    if statements:
        texts.append(("\n".join(sql_statements(statement) for statement in statements), SQL))
    return tuple(texts)


def _judged_fields(name: str, arguments: str) -> tuple[list[str], list[str]]:
    """Another tool's command fields, and its fields read as SQL."""
    searches = bool(_name_words(name) & SEARCH_WORDS)
    return _fields(arguments, COMMAND_FIELDS), _fields(
        arguments, SQL_FIELDS if searches else SQL_FIELDS | QUERY_FIELDS
    )


def judges(name: str, arguments: str) -> bool:
    """Whether a call has anything ``_judged_texts`` reads, found without making its readings."""
    if is_command_tool(name):
        return any(command_strings(arguments))
    return any(_judged_fields(name, arguments))


def _both(read: tuple[list[str], list[str]]) -> list[tuple[str, str]]:
    texts = (("\n".join(read[0]), SHELL), ("\n".join(read[1]), SQL))
    return [(text, reading) for text, reading in texts if text]


def _joined(reads: Iterable[tuple[list[str], list[str]]]) -> tuple[list[str], list[str]]:
    """Readings of several texts as one, each line once."""
    shell: dict[str, None] = {}
    statements: dict[str, None] = {}
    for commands, sql in reads:
        shell.update(dict.fromkeys(commands))
        statements.update(dict.fromkeys(sql))
    return list(shell), list(statements)


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
                    found += command_strings(json.dumps(field))
                else:
                    stack.append(field)
        elif isinstance(item, list):
            stack.extend(item)
    return found


def readings(name: str, arguments: str) -> tuple[list[str], list[str]]:
    """Every reading of a call's arguments: each string as given, its strings of code joined as an argv,
    its commands one a line with their disguises undone, and what base64 or hex in it decodes to, read the
    same way; apart, its SQL statements."""
    prefixes = [cli for cli in CLI_TOOLS if cli.split("-")[0] in _name_words(name)]
    return _joined(_readings_of(text, prefixes) for text in command_strings(arguments))


def _readings_of(text: str, prefixes: list[str]) -> tuple[list[str], list[str]]:
    return _joined(
        _read(window, 0)
        for variant in (text, *(f"{cli} {text}" for cli in prefixes if not text.lstrip().startswith(cli)))
        for window in _windows(variant)
    )


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


def command_strings(arguments: str) -> Iterator[str]:
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


def _read(text: str, depth: int) -> tuple[list[str], list[str]]:
    """``readings`` of one string, its commands and its SQL statements; a commit message (``-m '...'``
    with nothing the shell expands) and a here-document only stored or printed run nothing, and are left
    out, and so are quoted strings where nothing in the text runs strings (``runs_strings``)."""
    text = _MESSAGE.sub(" ", without_stored_heredocs(text))
    uncommented, masked = _quoting(text) or (text, text)
    runs = runs_strings(uncommented)
    shell = text if runs else masked
    # The commands are also read split as SQL splits statements, where a shell other than bash may split
    # them (PowerShell's ``"a\\"; rm -rf /``), ``--`` no comment before a word (``--filter``), as MySQL
    # reads it; the SQL rules read statements alone.
    out = [shell, shell_lines(shell), sql_statements(text, as_mysql=True)]
    statements = [sql_statements(text), *client_statements(shell)]
    if runs:
        joined = _joined_literals(text)
        if joined:
            out += [joined, shell_lines(joined), sql_statements(joined, as_mysql=True)]
            statements += [sql_statements(joined), *client_statements(joined)]
    if depth < _MAX_DEPTH:
        decoded = _joined(_read(decoding, depth + 1) for decoding in _decodings(text))
        out += decoded[0]
        statements += decoded[1]
    return out, statements


_WRAPPERS = (
    # Words that run the command after them, each with the shape of its options.
    ("sudo|doas", r"(?:[ \t]+-[A-Za-z]*[ugpCDhrtU][ \t]+\S+|[ \t]+--\w[\w-]*(?:=\S+)?|[ \t]+-[A-Za-z]+)*"),
    ("env", r"(?:[ \t]+-[uCS][ \t]*\S+|[ \t]+-\S+|[ \t]+[A-Za-z_]\w*=\S*)*"),
    ("nohup|time|exec|command|builtin|eval|then|do|else|if|elif|while|until|busybox|unbuffer", ""),
    ("nice|ionice|stdbuf|strace|watch|setsid", r"(?:[ \t]+-\S+(?:[ \t]+\d+)?)*"),
    # xargs and parallel: the command is given what they read or what follows ::: (``_fed_arguments``).
    ("xargs|parallel", r"(?:[ \t]+(?:-[IdEeLlnPsajNS][ \t]*\S+|--[\w-]+(?:=\S+|[ \t]+\d+)?|-\S+))*"),
    ("chroot", r"(?:[ \t]+-\S+)*[ \t]+\S+"),
    ("timeout", r"(?:[ \t]+-\S+)*[ \t]+\d+\w?"),
    ("cmd|cmd\\.exe", r"(?:[ \t]+/[A-Za-z](?::\S*)?)*"),
)
_WRAPPING = "|".join(f"(?:{words})(?=[ \\t]){options}" for words, options in _WRAPPERS)
_OPENING = r"(?:^|[\n;&|({`!]|\$\(|-exec(?:dir)?[ \t]|-ok[ \t]|\b(?:" + _WRAPPING + r")[ \t])[ \t]*"
"""Where a command starts: after a separator, a keyword or a wrapper (``_WRAPPERS``)."""
_PLAIN = r"[^\s;&|({`!]*"
"""What holds no separator, where a command could start again."""
_PLAIN_ASSIGNMENTS = rf"(?:[A-Za-z_]\w*={_PLAIN}[ \t]+)*"
_ASSIGNMENTS = r"(?:[A-Za-z_]\w*=\S*[ \t]+)*"
_RUNNER = (
    # A shell, interpreter, SQL client or tool that runs a string it is given, as a command, after the
    # assignments it is given. A directory before the name holds no separator (one that does is where a
    # command starts again).
    # ``.`` sources a file named as files are, not a sentence's full stop after code (``\`x\`. The``).
    rf"(?:{_PLAIN}/)?(?:(?:ba|da|z|k|mk|c|tc|a|fi|r)?sh|busybox|eval|exec|source|xargs"
    r"|parallel"
    r"|\.(?=[ \t]+(?:\S*/|[$~])|[ \t]+\S*\.(?:sh|bash|zsh|env|rc|profile)\b)"
    r"|watch|ssh|su|runuser|sudo|doas|script|flock|tmux|screen|expect|at|batch|crontab|trap|alias|env"
    r"|python[\d.]*|py|perl|ruby|irb|node(?:js)?|deno|bun|php|lua|rscript|osascript|pwsh|powershell"
    r"|cmd(?:\.exe)?|awk|gawk|mawk|nawk|sed|psql|mysql|mariadb|sqlite3?|duckdb|sqlcmd|clickhouse(?:-client)?"
    r"|cqlsh|snowsql|bq|mongo(?:sh)?|redis-cli|vagrant|gcloud|az|kubectl|oc|docker|podman|make|npx|hash|enable"
    r"|shopt|function)(?=[\s;&|)]|$)"
)
_RUNNER_AFTER_ASSIGNMENTS = re.compile(_ASSIGNMENTS + _RUNNER, re.IGNORECASE | re.MULTILINE)
_SEPARATED_ASSIGNMENT = re.compile(
    rf"{_OPENING}{_PLAIN_ASSIGNMENTS}[A-Za-z_]\w*={_PLAIN}[;&|({{`!]", re.IGNORECASE | re.MULTILINE
)
"""A command's assignment whose value holds a separator (``a=$(x) bash``), up to it."""
_WORD_END = re.compile(r"\S*[ \t]+|\S*")
_ASSIGNMENT_RUN = re.compile(r"(?:[A-Za-z_]\w*=\S*[ \t]+)*")
_STRING_RUNNERS = re.compile(
    # A command's assignments whose values hold a separator are read by ``_runs_after_assignments``.
    _OPENING
    + _PLAIN_ASSIGNMENTS
    + _RUNNER
    # A shell or an interpreter told to run a string, wherever it stands (after nice, chroot, uv run).
    + r"|(?:^|\s)(?:\S*/)?(?:(?:ba|da|z|k|mk|c|tc|a|fi|r)?sh|python[\d.]*|perl|ruby|node|php|pwsh|powershell"
    r"|osascript|cmd(?:\.exe)?)[ \t]+(?:[-/]\w+[ \t]+)*[-/]\w*[cCeE]\w*(?=[\s'\"]|$)"
    # A variable, a substitution's output or a file of the working folder run as the command.
    r"|(?:^|[\n;&|({!])[ \t]*(?:\$|`|\./)"
    # Code calling what runs a command or a statement: by a name that does nothing else, or a module
    # that runs commands named in the text (``from subprocess import run``), or a runner's receiver.
    r"|\b(?:system|popen\w*|spawn\w*|exec\w*|check_output|check_call|getoutput|getstatusoutput|shell_exec"
    r"|passthru|proc_open|eval|read_sql\w*|execa\w*|__import__)[ \t]*[(`]"
    r"|\b(?:subprocess|child_process|importlib|processbuilder|create_subprocess_\w+|open3|pty)\b"
    r"|\bos\.(?:system|popen|exec\w*|spawn\w*|posix_spawn\w*)|%x|(?-i:\bKernel\.|\bFunction[ \t]*\()"
    r"|\b(?:exec|Deno)\.Command\w*[ \t]*\(|\bCommand::new\b|\bProcess\.Start\b|\bStart-Process\b"
    r"|\bRuntime\.getRuntime\b|\bgetattr[ \t]*\([ \t]*(?:os|subprocess|builtins|__builtins__|pty|shutil)\b"
    r"|\b(?:c|ctx|conn|connection|context)\.(?:run|sudo)[ \t]*\("
    r"|(?:\.|->|\b(?:mysqli|pg|sqlsrv|oci|db2|odbc|sqlite)_)(?:query|raw|sql|exec\w*)[ \t]*\("
    r"|\bsql[ \t]*`"
    # SQL running a string: dynamic SQL, a program.
    r"|\b(?:execute|exec|prepare|sp_executesql|xp_cmdshell|dbms_sql|program)\b",
    re.IGNORECASE | re.MULTILINE,
)
_COMMAND_RUNNERS = (
    # Git and npm told to run a command of their configuration.
    (r"\bgit\b", r"[ \t](?:-c[ \t]|config\b)"),
    (r"\b(?:npm|yarn|pnpm)\b", r"[ \t](?:-c|exec|dlx|pkg[ \t]+set)\b"),
    # Written where a shell or a scheduler reads it later, or made executable.
    (
        r">|\btee\b",
        r"\.(?:bash|zsh|ksh)rc|\.profile|_profile|\.zshenv|\.zprofile|\.bash_log(?:in|out)|/etc/|cron"
        r"|authorized_keys|\.(?:sh|bash|zsh|py|pl|rb|js|ps1|bat|cmd|command|service|desktop|plist|sql)\b",
    ),
    (r"\bchmod\b", r"(?:\+x|[ \t][0-7]{3,4})\b"),
)
"""A command (its first pattern) that runs a string where something after it in the same command (its
second) says so; read from the first of each command, as any later one finds no more."""
_COMMAND_RUNNER = re.compile(
    "|".join(f"(?P<r{number}>{first})" for number, (first, _) in enumerate(_COMMAND_RUNNERS)), re.IGNORECASE
)
_RUNNER_SIGNS = [re.compile(sign, re.IGNORECASE) for _, sign in _COMMAND_RUNNERS]
_COMMAND_END = re.compile(r"[\n;|&]|\Z")
_RE_ONLY_CASES = str.maketrans({"\u0131": "i", "\u0130": "I"})
"""Letters Python's ``re`` reads as an ASCII one's other case where the loosened forms' table does not."""


class _Loosened:
    """A pattern's search made of RE2's and ``re``'s: its loosened form (``relaxed``, a line's start kept)
    finds, in time linear in the text, each place a match may start, and the pattern is tried there
    alone. ``re`` tries a pattern led by an alternation of dozens of words at every place of the text,
    the whole alternation at each (``_STRING_RUNNERS`` took some 1.2 ms a KB of prose, where its loosened
    form starts nowhere). RE2 reads on to where each loosened match ends (to a word's end for
    ``exec\\w*``: the whole text for ``exec`` repeated), so past ``_TRIED_PLACES`` places that start no
    match, ``re`` searches the rest of the text itself."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        inline = "".join(letter for flag, letter in _INLINE_FLAGS if pattern.flags & flag)
        loosened = relaxed.relaxed_source(f"(?{inline})" + pattern.pattern, line_starts=True)
        program = None if loosened is None else relaxed.re2_program(loosened.encode("utf-8"))
        if program is None or not program.ok():
            raise ValueError(f"no loosened form: {pattern.pattern}")
        self._program = program

    def search(self, text: str) -> re.Match[str] | None:
        """``self.pattern.search(text)``: every match of the pattern starts where its loosened form's
        does, so the first place that starts one is the first match's."""
        if text.isascii():
            encoded = text.encode("ascii")
        else:
            try:
                encoded = text.translate(_RE_ONLY_CASES).encode("utf-8")
            except UnicodeEncodeError:
                return self.pattern.search(text)  # a lone surrogate: RE2 reads UTF-8 alone
        # Where each place RE2 gives is in the text: counted on from the last, a character's length in
        # UTF-8 told by its first byte.
        position = at = read_to = 0
        for _ in range(_TRIED_PLACES):
            start = relaxed.first_start(self._program, encoded, position)
            if start < 0:
                return None
            at += start - read_to if encoded.isascii() else len(encoded[read_to:start].decode("utf-8"))
            match = self.pattern.match(text, at)
            if match is not None:
                return match
            read_to = start
            position = start + _UTF8_LENGTH[encoded[start]]
        return self.pattern.search(text, at + 1)


_TRIED_PLACES = 16
_UTF8_LENGTH = bytes(
    1 if byte < 0x80 else 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4 for byte in range(256)
)
_INLINE_FLAGS = ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"))


def _runs_after_assignments(text: str) -> bool:
    """Whether a command that runs strings follows assignments one of which holds a separator in its
    value (``a=$(x) bash``): each word such an assignment ends is read once for what follows it, and a run
    of assignments after it once, where a pattern read the word from each separator in it to its end
    (``|a=`` repeated: 8 s at 40 KB)."""
    read_to = -1
    first = _FIRST_SEPARATED_ASSIGNMENT.search(text)
    if first is None:
        return False
    at = first.start()
    while (assignment := _SEPARATED_ASSIGNMENT.search(text, at)) is not None:
        word = _WORD_END.match(text, assignment.end())
        at = word.end() if word is not None else len(text)
        if at == len(text) or text[at - 1] not in " \t" or at <= read_to:
            continue
        if _RUNNER_AFTER_ASSIGNMENTS.match(text, at):
            return True
        run = _ASSIGNMENT_RUN.match(text, at)
        read_to = run.end() if run is not None else at
    return False


def _runs_a_command(text: str) -> bool:
    """Whether a command of ``_COMMAND_RUNNERS`` in the text runs a string: each command read once from the
    first of them in it to its end, where a pattern read from every one of them to the end of the command
    (``>a`` repeated: 3 s at 20 KB)."""
    read_to = [-1] * len(_COMMAND_RUNNERS)
    """By runner: where the last command read for it ends."""
    first = _FIRST_COMMAND_RUNNER.search(text)
    if first is None:
        return False
    for runner in _COMMAND_RUNNER.finditer(text, first.start()):
        number = int(str(runner.lastgroup)[1:])
        if runner.start() < read_to[number]:
            continue
        end = _COMMAND_END.search(text, runner.end())
        read_to[number] = end.start() if end is not None else len(text)
        if _RUNNER_SIGNS[number].search(text, runner.end(), read_to[number]):
            return True
    return False


def runs_strings(text: str) -> bool:
    """Whether anything in the text may run a string as a command or a statement, read with its quotes and
    backslashes taken out (so that ``b''ash`` is ``bash``)."""
    readings = (_bare(reading) for reading in (text, _undisguised(text)))
    return any(
        _runs_a_string(reading) or _runs_after_assignments(reading) or _runs_a_command(reading)
        for reading in readings
    )


def _runs_a_string(text: str) -> bool:
    return _FIRST_STRING_RUNNER.search(text) is not None


_FIRST_STRING_RUNNER = _Loosened(_STRING_RUNNERS)
_FIRST_SEPARATED_ASSIGNMENT = _Loosened(_SEPARATED_ASSIGNMENT)
_FIRST_COMMAND_RUNNER = _Loosened(_COMMAND_RUNNER)


def masked_quotes(text: str) -> str | None:
    """The shell text without its comments, each quoted string holding whitespace put as ``'_'`` (one word
    of data), or None where its quotes cannot be read as the shell reads them (``_quoting``)."""
    quoting = _quoting(text)
    return None if quoting is None else quoting[1]


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
_SQL_TOKEN_MYSQL = re.compile(
    _SQL_TOKEN.pattern.replace("(?:''|[^'])*(?:'|$)", "(?:''|\\\\.|[^'\\\\])*(?:'|\\\\?$)").replace(
        "--[^\\n]*", "--(?=\\s|$)[^\\n]*"
    ),
    re.DOTALL,
)
"""As ``_SQL_TOKEN``, read as MySQL reads SQL: a backslash escaping the quote after it, ``--`` starting
a comment only before whitespace (``--hard; DROP TABLE users`` holds a statement), and a comment opened
with ``/*!`` (a version's digits after it) run as SQL (``DROP /*!50000 TABLE */ users``). Both readings are
made. A string left open runs to the end, a backslash ending the text with it: where that backslash
failed the string, every quote after the first was tried as another's start to the end (``'\\``
repeated cost seconds)."""
_MYSQL_SIGNS = re.compile(r"\\'|--\S|/\*!")
_MYSQL_RUN_COMMENT = re.compile(r"/\*!\d*(.*?)(?:\*/|$)", re.DOTALL)
_SQL_LINE_START = re.compile(r"(?im)^[ \t]*(?:drop|truncate|delete|update|alter|db\.|flush)")


def sql_statements(text: str, *, as_mysql: bool = False) -> str:
    """The SQL statements of a text one a line, their whitespace runs as one space, comments out (as a
    space, so that ``DROP/**/TABLE`` reads ``DROP TABLE``) and string literals as ``''``: data, not
    statements (``SELECT 'DROP TABLE x'``); a dollar-quoted body (a function's) is code and kept. A
    statement spanning lines is read from each of its lines that starts one too, for what a line of
    another language puts before it (``psql <<EOF``). Read as standard SQL and, where it would differ, as
    MySQL reads it; ``as_mysql``, as MySQL alone."""

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
    readings = [] if as_mysql else [_SQL_TOKEN.sub(token, text)]
    if as_mysql or _MYSQL_SIGNS.search(text):
        readings.append(_SQL_TOKEN_MYSQL.sub(token, _MYSQL_RUN_COMMENT.sub(r" \1 ", text)))
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


_LONGEST_LITERAL = 4096
"""Characters (an escape counts as one) a string literal is read as one up to: a longer one is none."""
_QUOTES = "\"'"
_QUOTE = re.compile(r"[\"']")
_BODIES = {closers: re.compile(rf"(?:\\[^\n]|[^\\\n{closers}])*+") for closers in (_QUOTES, "'", '"')}
"""What a literal closed by one of these quotes holds: escapes, and anything else but a line break."""
_ESCAPE_PAIR = re.compile(r"\\[^\n]")
_JOINER = re.compile(r"\s*(?:,|\|\||\+|\.)\s*")
_CONCATENATION = re.compile(r"""["']\s*(?:\+|\|\||\.\.?)\s*["']""")
_RAW_LITERAL = re.compile(r"""(["'])((?:(?!\1)[^\n]){1,4096})\1""")


class _Literals:
    """The string literals of a stretch of a text, found left to right as a pattern matching each from
    where the last ended would find them, in time linear in the stretch: where a literal opened at a
    quote is none (no quote closes it on its line, or it is longer than ``_LONGEST_LITERAL``), every quote
    it escapes opens none either, or the first of them near enough to the closing quote does, and the
    search goes on from there rather than from the quote after the failed one (a pattern tries each, and
    ``'\\`` repeated cost seconds)."""

    def __init__(self, text: str, end: int) -> None:
        self.text, self.end = text, end
        self._failed: dict[str, tuple[int, int, int]] = {}
        """By the quotes that close a literal: the last stretch opened at a quote that none closes, and
        where in it a literal may open after all (its end where none may)."""

    def closing(self, at: int, closers: str) -> tuple[int, int]:
        """Where the quote closing a literal opened at ``at`` (a quote) stands, or -1 and where the next
        literal may open."""
        start, stop, first = self._failed.get(closers, (-1, -1, -1))
        if start <= at < stop:
            return (stop, stop + 1) if at >= first else (-1, first)
        text = self.text
        body = _BODIES[closers].match(text, at + 1, self.end)
        stop = body.end() if body is not None else at + 1
        if stop == self.end or text[stop] not in closers:
            self._failed[closers] = (at, stop, stop)
            return -1, stop
        if stop - at - 1 <= _LONGEST_LITERAL:
            return stop, stop + 1
        escapes = [escape.start() for escape in _ESCAPE_PAIR.finditer(text, at + 1, stop)]
        if stop - at - 1 - len(escapes) <= _LONGEST_LITERAL:
            return stop, stop + 1
        # Too long: an escaped quote in it opens a literal only where what follows it to the closing
        # quote is short enough.
        first = stop
        for number, escape in enumerate(escapes):
            quote = escape + 1
            if text[quote] in closers and stop - quote - 1 - (len(escapes) - number - 1) <= _LONGEST_LITERAL:
                first = quote
                break
        self._failed[closers] = (at, stop, first)
        return -1, first

    def runs(self) -> Iterator[tuple[int, int]]:
        """The runs of literals a comma or an operator joins (``"rm", "-rf"``, ``'DROP ' || name``; a
        literal opened by either quote and closed by either), each as its start and end."""
        at = 0
        while (quote := _QUOTE.search(self.text, at, self.end)) is not None:
            close, at = self.closing(quote.start(), _QUOTES)
            if close < 0:
                continue
            end = close + 1
            while (joiner := _JOINER.match(self.text, end, self.end)) is not None:
                following = joiner.end()
                if following == self.end or self.text[following] not in _QUOTES:
                    break
                close, _ = self.closing(following, _QUOTES)
                if close < 0:
                    break
                end = close + 1
            yield quote.start(), end
            at = end

    def bodies(self, start: int) -> Iterator[str]:
        """What each literal from ``start`` holds, a literal closed by the quote that opened it. Where one
        opened by a quote is none, the other quote may still open one inside it: each is looked for from
        where a literal it opens may stand."""
        text, end = self.text, self.end
        at = start
        after = {quote: start for quote in _QUOTES}
        """By quote: where the next literal it opens may stand."""
        found = {quote: text.find(quote, start, end) for quote in _QUOTES}
        """By quote: where it next stands, at or after ``after`` (-1: nowhere)."""
        while True:
            for quote, position in found.items():
                if 0 <= position < max(at, after[quote]):
                    found[quote] = text.find(quote, max(at, after[quote]), end)
            standing = [position for position in found.values() if position >= 0]
            if not standing:
                return
            opened = min(standing)
            close, after[text[opened]] = self.closing(opened, text[opened])
            if close >= 0:
                yield text[opened + 1 : close]
                at = close + 1


def _joined_literals(text: str) -> str:
    """The string literals of code, a run separated by commas or joined (``||``, ``+``, ``.``) joined by
    spaces, one run a line: what ``subprocess.run(["rm", "-rf", "/"])``, ``exec.Command("rm", "-rf", "/")``,
    ``os.system('...')`` or ``EXECUTE 'DROP TABLE ' || name`` runs; and the text with literals that an
    operator joins made one, as code inside a shell's quotes makes them (``"open('/root/.' + 'aws')"``)."""
    if "'" not in text and '"' not in text:
        return ""
    lines = []
    for start, end in _Literals(text, len(text)).runs():
        pieces = [piece for piece in _Literals(text, end).bodies(start) if piece.strip()]
        if pieces:
            lines.append(" ".join(_unescaped(piece) for piece in pieces))
    glued = _CONCATENATION.sub("", text)
    if glued != text:
        lines.append(glued)
    if "\\" in text:
        # SQL, cmd and PowerShell's single quotes take a backslash as it stands: ``'rd /s /q C:\'`` ends
        # at its second quote.
        lines += [match.group(2) for match in _RAW_LITERAL.finditer(text) if "\\" in match.group(2)]
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
_DECODER = (
    r"(?P<decoder>\bbase32\b|\bxxd\b(?=[^|;&\n<]{0,64}?[ \t]-[a-z]*r)|\b(?:base64|basenc|openssl)\b"
    r"(?=[^|;&\n<]{0,64}?(?:[ \t]-[a-z]*[dD][a-z]*\b|--decode)))"
)
_ENCODED = r"""(['"]?)(?P<token>[\w+/=-]{2,})"""
_FED_TO_DECODER = (
    re.compile(
        r"""\b(?:echo|printf)(?:[ \t]+-[neE]+|[ \t]+['"]?%s(?:\\n)?['"]?)?[ \t]+"""
        rf"{_ENCODED}\1[ \t]*\|[ \t]*{_DECODER}"
    ),
    re.compile(rf"{_DECODER}[^|;&\n<]{{0,64}}<<<[ \t]*{_ENCODED}\2"),
)
"""A word echoed into a decoder or given it as a here-string (``echo ZW52 | base64 -d``, ``base64 -d <<<
ZW52``, ``xxd -r -p <<< 656e76``): decoded whatever its length, as it is certain to be decoded."""


def _fed_decodings(text: str) -> Iterator[str]:
    for match in (found for pattern in _FED_TO_DECODER for found in pattern.finditer(text)):
        token, decoder = match.group("token"), match.group("decoder")
        try:
            if decoder == "xxd":
                raw = bytes.fromhex(token)
            elif decoder == "base32" or "--base32" in match.group(0):
                raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
            else:
                raw = _base64_decoded(token)
        except (binascii.Error, ValueError):
            continue
        decoded = _readable(raw)
        if decoded:
            yield decoded


def _base64_decoded(token: str) -> bytes:
    return base64.b64decode(
        token + "=" * (-len(token) % 4), altchars=b"-_" if "-" in token or "_" in token else None
    )


_REVERSED = re.compile(
    r"""\b(?:echo|printf)(?:[ \t]+-[neE]+)?[ \t]+(['"]?)([^\n'"|;&]{1,400})\1[ \t]*\|[ \t]*rev\b"""
    r"""|\brev\b[^|;&\n<]{0,64}<<<[ \t]*(['"]?)([^\n'"|;&]{1,400})\3"""
)
"""Text echoed into ``rev`` or given it as a here-string (``echo vne | rev | sh``): what it prints is the
text backwards."""


_TR_SET = r"""(?:'[^'\n]{1,64}'|"[^"\n]{1,64}"|[^\s'"|;&<>]{1,64})"""
_TRANSLATED = re.compile(
    r"""\b(?:echo|printf)(?:[ \t]+-[neE]+)?[ \t]+(?P<quote>['"]?)(?P<text>[^\n'"|;&]{1,400})(?P=quote)"""
    rf"""[ \t]*\|[ \t]*tr(?P<options>(?:[ \t]+-[cdsCt]+)*)[ \t]+(?P<first>{_TR_SET})"""
    rf"""(?:[ \t]+(?P<second>{_TR_SET}))?"""
    r"""(?=[ \t]*(?:$|[|;&\n)]))"""
)
"""Text echoed into ``tr`` (``echo 'png ~/.njf/perqragvnyf' | tr a-z n-za-m | sh``, ``tr -d X``): what it
prints is the text with its characters mapped or deleted."""
_TR_CLASSES = {
    "[:lower:]": "abcdefghijklmnopqrstuvwxyz",
    "[:upper:]": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "[:digit:]": "0123456789",
    "[:space:]": " \t\n\r\v\f",
    "[:blank:]": " \t",
}


_TR_LONGEST = 256


def _tr_characters(spec: str) -> str:
    """The characters a ``tr`` set names, its ranges (``a-z``) and classes (``[:upper:]``) spelled out, as
    many as ``_TR_LONGEST``: tr maps bytes."""
    spec = _unescaped(spec[1:-1] if spec[:1] in "'\"" else spec)
    for name, members in _TR_CLASSES.items():
        spec = spec.replace(name, members)
    characters: list[str] = []
    at = 0
    while at < len(spec) and len(characters) < _TR_LONGEST:
        if at + 2 < len(spec) and spec[at + 1] == "-" and spec[at] <= spec[at + 2]:
            last = min(ord(spec[at + 2]), ord(spec[at]) + _TR_LONGEST)
            characters += [chr(code) for code in range(ord(spec[at]), last + 1)]
            at += 3
        else:
            characters.append(spec[at])
            at += 1
    return "".join(characters[:_TR_LONGEST])


def _translated(match: re.Match[str]) -> str | None:
    """What ``tr`` prints of the text echoed into it; None for options whose output is not worked out
    here (``-c``, ``-s`` alone)."""
    options = set(match.group("options").replace("-", "").replace(" ", "").replace("\t", ""))
    first, second = _tr_characters(match.group("first")), match.group("second")
    if options == {"d"} and second is None:
        return match.group("text").translate({ord(character): None for character in first})
    if options - {"t"} or second is None:
        return None
    into = _tr_characters(second)
    if not into:
        return None
    if "t" in options:
        first = first[: len(into)]
    into = into[: len(first)].ljust(len(first), into[-1])
    return match.group("text").translate(str.maketrans(first, into))


def _decodings(text: str) -> Iterator[str]:
    """What base64 and hex runs of the text decode to, where that is readable text, any word fed to a
    decoder (``_FED_TO_DECODER``) text fed to ``rev`` (``_REVERSED``) and to ``tr`` (``_TRANSLATED``)."""
    yield from _fed_decodings(text)
    for match in _REVERSED.finditer(text):
        yield (match.group(2) or match.group(4))[::-1]
    yield from filter(None, map(_translated, _TRANSLATED.finditer(text)))
    for match in _BASE64.finditer(text):
        try:
            raw = _base64_decoded(match.group(0))
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
_DEFAULTED = re.compile(r"\$\{(?:[A-Za-z_]\w*|[0-9]+|[@*]):?[-=+]([^}]*)\}")
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
    r"^[ \t]*(?:(?:" + _WRAPPING + r")[ \t]+|[A-Za-z_]\w*=\S*[ \t]+|set[ \t]+--[ \t]+|!(?=\S)|![ \t]+"
    r"|(?:\S*/)?(?:ba|da|z|k|c|tc|a)?sh(?:[ \t]+-[a-bd-z]+)*[ \t]+-c[ \t]+)"
)
_COMMAND_PATH = re.compile(r"^(\s*)\S*/(?=[^\s/]+(?:\s|$))")


def shell_lines(text: str) -> str:
    """The commands of a shell text, one a line with a pipe's commands after ``|``, their disguises undone
    (line continuations, quotes inside and around words, ``$IFS``, ANSI-C quoting, ``$(echo ...)``,
    defaults and empty expansions, simple variables, brace lists, wrappers such as ``sudo``, ``env``,
    ``xargs``, ``eval``, ``bash -c`` and ``VAR=1``, a command's directory and a glob standing for its
    name), read twice: backslashes dropped as the shell drops them (``r\\m``), and escapes decoded as
    printf and ``echo -e`` decode them. Before the lines, each of the two texts whole, for what spans
    separators (a fork bomb). What a loop or a substitution feeds a command is read as piped to it
    (``_fed``), and a command that runs somewhere a ``cd``, ``env -C`` or ``GIT_WORK_TREE`` names is read
    a second time with that place written into it (``_Places``)."""
    out: list[str] = []
    calls = frozenset(f"{callee}({argument}" for callee, argument in _NAME_CALL.findall(text))
    for reading in _whole_readings(text):
        out.append(reading)
        places = _Places()
        # xargs' and parallel's placeholder for what they are given is a word, not a group of commands.
        text = _PLACEHOLDER.sub(_GIVEN, "\n".join((reading, *_fed(reading))))
        for part in _separated(text, calls):
            if _SEPARATOR.fullmatch(part):
                places.nest(part)
                continue
            pieces = [(piece, command) for piece in part.split("|") if (command := _command(piece))]
            if not pieces:
                continue
            commands = [command for _, command in pieces]
            placed = [places.placed(piece, command) for piece, command in pieces]
            out += [" | ".join(commands), " | ".join(placed)]
    return "\n".join(dict.fromkeys(out))


_NAME_CALL = re.compile(r"([\w.]{1,64})\([ \t]*([A-Za-z_][\w.]{0,64})[ \t]*[,)]")
"""A call of code given a name as it is written (``print(env)``, ``len(x, y)``): no group of commands."""
_CALLEE = re.compile(r"[\w.]{1,64}$")
_ARGUMENT = re.compile(r"[ \t]*([A-Za-z_][\w.]{0,64})[ \t]*[,)]")


def _separated(text: str, calls: frozenset[str]) -> Iterator[str]:
    """The text split at its separators, each kept as a part of its own, but at the ``(`` of a call that
    the text as written (before its quotes are undone) gives a name, not a string: ``print(env)`` calls
    ``print`` with a variable, where ``os.system("env")`` runs ``env``."""
    at = 0
    for separator in _SEPARATOR.finditer(text):
        if separator[0] == "(" and calls:
            callee = _CALLEE.search(text, max(0, separator.start() - 64), separator.start())
            argument = _ARGUMENT.match(text, separator.end())
            if callee and argument and f"{callee[0]}({argument[1]}" in calls:
                continue
        yield text[at : separator.start()]
        yield separator[0]
        at = separator.end()
    yield text[at:]


_PLACEHOLDER = re.compile(r"\{\}")
_GIVEN = "ARGUMENT"
_REACH = 400
"""Characters a loop's body, or the command around a substitution, is looked for in: what a command line
spans, so that the search costs no more than that at each loop or substitution however long the text."""
_FOR_LOOP = re.compile(
    r"\bfor[ \t]+([A-Za-z_]\w*)[ \t]+in[ \t]+([^;\n]{0,400}?)[ \t]*[;\n][ \t\n]*do\b(.{0,400}?)\bdone\b",
    re.DOTALL,
)
_READ_LOOP = re.compile(
    r"\bwhile[ \t]+(?:[A-Za-z_]\w*=\S*[ \t]+)*read\b([^;\n]{0,100})[;\n][ \t\n]*do\b(.{0,400}?)\bdone\b"
    r"(?:[ \t]*<[ \t]*<\(([^()\n]{0,400})\))?",
    re.DOTALL,
)
_PIPE_ENDS = "\n;&|()"
"""What ends the command a pipe's ``|`` follows."""
_COMMAND_ENDS = "\n;&|()`"
"""What ends the command around a substitution."""
_SUBSTITUTION = re.compile(r"\$\(([^()`\n]{0,400})\)|`([^`\n]{0,400})`")
_COMMAND_AFTER = re.compile(r"[^\n;&|()`]*")
_FED_IN = re.compile(r"([^\n;&|()`]{0,400}?)[ \t]*<[ \t]*<\(([^()\n]{0,400})\)")
_FEEDING = re.compile(r"<[ \t]*<\([^()\n]{0,400}\)")
"""Where ``_FED_IN`` matches end: the search for it starts here, and it is matched from the one place
before where it may start (from every place, it was tried 400 characters on at each)."""
_BODY_SEPARATOR = re.compile(r"&&|\|\||;|\n")


def _fed(reading: str) -> list[str]:
    """Commands given what a listing prints, as ``LISTING | COMMAND`` (what ``xargs`` makes of it): the
    body of a ``while read`` loop the listing is piped or fed to, of a ``for`` loop over a substitution,
    a command given a substitution as its arguments (``rm -rf $(ls /)``) or as its input
    (``xargs rm -rf < <(ls /)``); a ``for`` loop's body over
    words with its variable filled in (``for f in /*; do rm -rf $f; done`` is ``rm -rf /*``)."""
    fed: list[str] = []
    for loop in _READ_LOOP.finditer(reading):
        listing = _piped(reading, max(0, loop.start() - _REACH), loop.start()) or loop.group(3) or ""
        names = [word for word in loop.group(1).split() if re.fullmatch(r"[A-Za-z_]\w*", word)]
        fed += [f"{listing} | {command}" for command in _using(loop.group(2), names)]
    for loop in _FOR_LOOP.finditer(reading):
        name, words, body = loop.groups()
        listing = _SUBSTITUTION.fullmatch(words.strip())
        if listing is not None:
            fed += [f"{listing.group(1) or listing.group(2)} | {command}" for command in _using(body, [name])]
        else:
            fed += [_filled(body, name, words)]
    fed += [f"{fed_in.group(2)} | {fed_in.group(1)}" for fed_in in _fed_in(reading)]
    for substitution in _SUBSTITUTION.finditer(reading):
        start = substitution.start()
        after = _COMMAND_AFTER.match(reading, substitution.end(), substitution.end() + _REACH)
        command = reading[_after_last(reading, _COMMAND_ENDS, max(0, start - _REACH), start) : start]
        if command.strip() and not command.rstrip().endswith(("=", " in")):
            listing = substitution.group(1) or substitution.group(2)
            fed.append(f"{listing} | {command} {after.group(0) if after else ''}")
    return fed


def _after_last(text: str, ends: str, start: int, end: int) -> int:
    """Where the last stretch of ``text[start:end]`` without any of ``ends`` starts: a search of a
    pattern for it tried each place before that to the next of them."""
    return max(start, *(text.rfind(char, start, end) + 1 for char in ends))


def _piped(text: str, start: int, end: int) -> str | None:
    """The command of ``text[start:end]`` that a pipe ending it (``ls / |``) follows, or None."""
    bar = len(text[start:end].rstrip(" \t")) + start - 1
    if bar < start or text[bar] != "|":
        return None
    return text[_after_last(text, _PIPE_ENDS, start, bar) : bar]


def _fed_in(text: str) -> Iterator[re.Match[str]]:
    """The matches of ``_FED_IN`` in the text, left to right: each from the first place before a
    ``< <(...)`` that it may start at (the one farthest back its command's 400 characters reach)."""
    at = 0
    while (feeding := _FEEDING.search(text, at)) is not None:
        blank = len(text[at : feeding.start()].rstrip(" \t")) + at
        start = max(_after_last(text, _COMMAND_ENDS, max(at, blank - 400), blank), blank - 400, at)
        fed_in = _FED_IN.match(text, start)
        if fed_in is None:  # it matches from there, as its command may be empty
            return
        yield fed_in
        at = fed_in.end()


_VARIABLE_USE = re.compile(r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)")


def _using(body: str, names: list[str]) -> list[str]:
    """The commands of a loop's body that use one of the loop's variables, the variables taken out."""
    return [
        _filled(command, name, "")
        for command in _BODY_SEPARATOR.split(body)
        for name in names
        if any(name in use.groups() for use in _VARIABLE_USE.finditer(command))
    ]


def _filled(text: str, name: str, value: str) -> str:
    """The text with a variable's uses replaced by a value."""
    return _VARIABLE_USE.sub(lambda use: value if name in use.groups() else use.group(0), text)


_CHANGE_DIRECTORY = frozenset({"cd", "pushd", "chdir", "set-location", "sl", "push-location"})
_WORK_TREE = re.compile(r"(?:^|\s)GIT_WORK_TREE=(\S+)")
_CHDIR = re.compile(
    r"(?:^|\s)(?:env|sudo|doas)(?:[ \t]+-\S+)*?[ \t]+(?:-[CD][ \t]*|--chdir(?:=|[ \t]+))(\S+)"
)
_GIT_PLACE = re.compile(r"(?<!\S)(-C[ \t]+|--work-tree(?:=|[ \t]+))(\S+)")
_RELATIVE = re.compile(r"(?![-{])[\w.*?@%+,\[\]-][^\s:=$]*")
_FIND_PATTERNS = frozenset({"-name", "-iname", "-regex", "-iregex", "-path", "-ipath", "-wholename",
                            "-iwholename", "-lname", "-ilname"})  # fmt: skip
"""``find``'s tests whose word is a pattern of names, never a path from where it runs."""


class _Places:
    """Where the commands of a shell text run, as far as the text says: the folder a ``cd`` moved to and
    the work tree ``GIT_WORK_TREE`` names, those set in a subshell undone at its end."""

    def __init__(self) -> None:
        self._nested: list[tuple[str | None, str | None]] = [(None, None)]

    def nest(self, separator: str) -> None:
        if separator in ("(", "$("):
            self._nested.append(self._nested[-1])
        elif separator == ")" and len(self._nested) > 1:
            self._nested.pop()

    def placed(self, piece: str, command: str) -> str:
        """The command with where it runs written into it: a work tree or folder given to ``git`` as its
        ``--work-tree`` or ``-C``, to ``find`` as its path where it names none, and the folder before each
        relative path (``cd / && rm -rf usr`` is ``rm -rf /usr``). A ``cd`` and an exported
        ``GIT_WORK_TREE`` move where the commands after it run."""
        directory, work_tree = self._nested[-1]
        word, _, rest = command.partition(" ")
        tree = _WORK_TREE.search(piece)
        if word.lower() in _CHANGE_DIRECTORY:
            arguments = [argument for argument in rest.split() if not argument.startswith("-")]
            self._nested[-1] = (_moved(directory, arguments[0] if arguments else "~"), work_tree)
            return command
        if tree is not None and word != "git":
            self._nested[-1] = (directory, _moved(directory, tree.group(1)))
            return command
        chdir = _CHDIR.search(piece)
        if chdir is not None:
            directory = _moved(directory, chdir.group(1))
        if word == "git":
            tree_named = _moved(directory, tree.group(1)) if tree is not None else work_tree
            if _GIT_PLACE.search(rest):
                return "git " + _git_placed(directory, rest)
            if tree_named is not None:
                return f"git --work-tree={tree_named} {rest}"
            return command if directory is None else f"git -C {directory} {rest}"
        if directory is None:
            return command
        given = rest.split()
        operands = [
            at for at, value in enumerate(given)
            if not value.startswith("-") and not (at and given[at - 1] in _VALUED_OPTIONS)
        ]  # fmt: skip
        # A search's pattern is no path (``grep key``, ``fd keychain``).
        pattern = operands[0] if operands and _searches(word, given) else None
        words = [
            _moved(directory, value)
            if _RELATIVE.fullmatch(value)
            and at != pattern
            and not (at and given[at - 1].lower() in _FIND_PATTERNS)
            else value
            for at, value in enumerate(given)
        ]
        if word == "find" and (not words or words[0].startswith("-")):
            words.insert(0, directory)
        elif _lists_here(word, given, len(operands) - (pattern is not None)):
            words.append(directory)
        return " ".join((word, *words))


_SEARCHERS = frozenset({"grep", "egrep", "fgrep", "rg", "fd", "fdfind"})
"""Commands whose first operand is a pattern, the others the files or folders they search."""
_VALUED_OPTIONS = frozenset({"-e", "--extension", "-t", "--type", "-E", "--exclude", "-d", "--max-depth"})
"""The options of those that take a value, which is no operand."""
_LISTERS = frozenset({"ls", "dir", "tree", "du", "gci", "get-childitem", "fd", "fdfind"})
"""Commands that list or search the folder they run in where they name none."""


def _searches(word: str, given: list[str]) -> bool:
    return word in _SEARCHERS and not (word == "rg" and "--files" in given)


def _lists_here(word: str, given: list[str], folders: int) -> bool:
    """Whether a command given no folder lists or searches the one it runs in: a lister, or ``rg
    --files``."""
    return folders == 0 and (word.lower() in _LISTERS or (word == "rg" and "--files" in given))


def _git_placed(directory: str | None, arguments: str) -> str:
    """Git's arguments with where it runs written in: each ``-C`` is taken from where the one before it
    led (``-C /tmp -C ..`` is ``-C /``), so only the last is kept, and a ``--work-tree`` is read from
    there."""
    here = directory
    for place in _GIT_PLACE.finditer(arguments):
        if place.group(1).startswith("-C"):
            here = _moved(here, place.group(2))

    def placed(place: re.Match[str]) -> str:
        return "" if place.group(1).startswith("-C") else place.group(1) + _moved(here, place.group(2))

    rest = " ".join(_GIT_PLACE.sub(placed, arguments).split())
    return rest if here is None else f"-C {here} {rest}"


def _moved(directory: str | None, path: str) -> str:
    """Where a path leads from a folder (None: not known), as ``_normal_path`` spells it; an absolute path
    or one from the home folder leads there from anywhere."""
    if path.startswith(("/", "~", "$HOME", "${HOME}")) or re.match(r"[A-Za-z]:", path):
        return _normal_path(path)
    if directory is None or path == "-":
        return path
    return _normal_path(posixpath.join(directory, path))


_BACKSLASHES = re.compile(r"\\+(.)", re.DOTALL)
"""A run of backslashes and what it escapes: each shell a text is nested in (``bash -c "bash -c
'rm\\\\ -rf ~'"``) drops one, and a text read with all of them undone drops the run."""
_ESCAPED_QUOTE = re.compile(r"""(?<!\\)\\*['"]""")
"""A quote with the backslashes that escape it at each nesting (``\\"`` inside ``"..."``), matched from a
run's first backslash alone, so that a long run is read once."""


# The commands of a text and its SQL clients' statements are read from the same readings, one after the
# other.
@functools.lru_cache(maxsize=2)
def _whole_readings(text: str) -> tuple[str, str]:
    """A shell text with its disguises and quotes undone, backslashes dropped as the shell drops them and
    escapes decoded as printf and ``echo -e`` decode them."""
    undisguised = _undisguised(text)
    return _bare(undisguised), _unescaped(_ESCAPED_QUOTE.sub("", undisguised))


def _bare(text: str) -> str:
    """The text with its quotes and backslashes taken out, however deep the shells it is nested in."""
    return _BACKSLASHES.sub(r"\1", _ESCAPED_QUOTE.sub("", text))


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


_SQL_CLIENT = re.compile(
    r"(?i)(?:^|[\s;&|(/])(?:psql|mysql|mariadb|sqlite3?|duckdb|sqlcmd|clickhouse(?:-client)?|cqlsh|snowsql|bq"
    r"|mongo(?:sh)?|redis-cli|cockroach|vsql|isql|usql)(?=\s)"
)
_STATEMENT_WORD = re.compile(r"(?i)(?<=\s)(?:drop|truncate|delete|update|alter|db\.|flush)")


def client_statements(text: str) -> Iterator[str]:
    """The SQL a SQL client is given on a line of a shell text, read with its disguises and quotes undone
    (``psql -c DROP TABLE users``) from each word after the client that may start a statement to the line's
    end, as SQL: brackets and all (``round(x, 2) WHERE``)."""
    for line in (line for reading in _whole_readings(text) for line in reading.split("\n")):
        client = _SQL_CLIENT.search(line)
        if client is not None:
            for word in _STATEMENT_WORD.finditer(line, client.end()):
                yield sql_statements(line[word.start() :])


_HEREDOC = re.compile(r"""<<-?[ \t]*(['"]?)([A-Za-z_]\w*)\1([^\n]*)\n""")
_MAX_HEREDOCS = 16
_INTERPRETERS = re.compile(
    r"(?:^|[\s/|;&(])(?:(?:ba|da|z|k|c|tc|a)?sh|python[\d.]*|perl|ruby|node|php|psql|mysql|sqlite3|redis-cli|"
    r"mongo(?:sh)?|ssh|exec|eval|source|xargs|kubectl|docker|podman|osascript|pwsh|powershell)(?=[\s;|&)]|$)"
)


def without_stored_heredocs(text: str) -> str:
    """The text without the here-documents fed to a command that only stores or prints them
    (``cat > notes.md <<'EOF'``): data, not commands. One fed to a shell or an interpreter, expanding a
    command (``$(...)``, backquotes, where its delimiter is not quoted), or stored in a file the text names
    again (``cat > x.sh <<EOF ... EOF; bash x.sh``), is kept and read as commands."""
    kept: list[str] = []
    at = 0
    for heredoc in _heredocs(text):
        if heredoc.stored:
            kept.append(text[at : heredoc.start] + heredoc.rest + "\n")
            at = heredoc.end
    return "".join(kept) + text[at:]


def written_by_commands(text: str) -> list[tuple[str, str]]:
    """The files the text's commands write what it spells out in, each with what is written: a
    here-document's (``cat > x.sh <<'EOF'``), whether the text reads it as commands or leaves it unread as
    data; what ``echo`` or ``printf`` prints into one (``echo 'rm -rf ~' > x.sh``, ``| tee x.sh``); the
    pipelines whose output a redirect or ``tee`` or ``dd of=`` stores (``echo cm0= | base64 -d > x.sh``:
    the output is theirs, read as they are); and the string literals of code that opens a file
    to write (``open('x.sh', 'w').write('rm -rf ~')``, ``fs.writeFileSync``, ``File.write``,
    ``Set-Content``), at two depths for code inside a shell's quotes. A later command that runs one by its
    name (``bash x.sh``) runs what it holds."""
    files = [(heredoc.path, heredoc.body) for heredoc in _heredocs(text) if heredoc.path]
    files += [(match.group(2), _printed(match.group(1))) for match in _PRINTED_INTO.finditer(text)]
    # A pipeline's output is read as what it prints only where a command of it is fed another's (``echo
    # cm0= | base64 -d``): a command's own output stored in a log (``terraform destroy > tf.log``) is no
    # command, nor a copy of one run when the log is read.
    files += [(path, pipeline) for path, pipeline in redirected_by_commands(text) if "|" in pipeline]
    paths = [next(path for path in match.groups() if path) for match in _WRITTEN_BY_CODE.finditer(text)]
    if paths:
        written = "\n".join(
            line
            for code in [text, *_shell_words(text)]
            for line in (_joined_literals(code), *map(_unescaped, _Literals(code, len(code)).bodies(0)))
        )
        files += [(path, written) for path in dict.fromkeys(paths)]
    return files


def _shell_words(text: str) -> list[str]:
    """The words of a shell text with the shell's quotes taken off (the code ``python3 -c "..."`` runs), or
    none where its quotes do not pair."""
    try:
        return shlex.split(text, comments=False, posix=True)
    except ValueError:
        return []


def redirected_by_commands(text: str) -> list[tuple[str, str]]:
    """The files a redirect, ``tee`` or ``dd of=`` stores a pipeline's output in (not a device, not
    another descriptor), each with the pipeline's commands: what runs before it since the last command
    separator or the last such store."""
    stored = []
    pipeline_start = 0
    for match in _STORED_TO.finditer(text):
        before = text[pipeline_start : match.start()]
        start = pipeline_start + 1 + max(before.rfind(separator) for separator in _PIPELINE_ENDS)
        pipeline_start = match.end()
        if not match.group("path").startswith("/dev/"):
            stored.append((match.group("path"), text[start : match.start()].strip()))
    return stored


_PIPELINE_ENDS = ("\n", ";", "&", "<", ">", "(", ")", "`")
"""What ends a pipeline a store takes its output from, looking back from the store."""
_STORED_TO = re.compile(
    r"(?:(?<![<>&=-])\d?>>?[ \t]*(?![&=])|\|[ \t]*(?:sudo[ \t]+)?tee(?:[ \t]+-\S+)*[ \t]+"
    r"|\bdd\b[^\n;&|]{0,160}?[ \t]of=)"
    r"""(?P<path>[^\s;&|<>()'"`]+)"""
)
"""A redirect, ``tee`` or ``dd of=`` and the file it stores in; found alone and the pipeline looked back
for, as a search from each place for a pipeline that ends in a store would read a line once a place (a
20 KB line of words: 10 s). ``dd``'s ``of=`` is looked for within 160 characters of it, so that a line of
``dd`` alone costs that much a word, not the line's length."""
_CODE_PATH = r"""[ \t]*['"]([^'"\n]{1,256})['"]"""
_WRITTEN_BY_CODE = re.compile(
    # Python, Ruby, PHP, Lua, C: open('x.sh', 'w'), File.open, fopen, io.open.
    r"(?i)open[ \t]*\(" + _CODE_PATH + r"""[ \t]*,[ \t]*(?:mode[ \t]*=[ \t]*)?['"][rbt+]*[wax]"""
    # Perl: open(my $f, '>', 'x.sh'), open(F, ">x.sh").
    r"""|\bopen[ \t]*\(?[ \t]*(?:my[ \t]+)?\$?\w+[ \t]*,[ \t]*['"]\+?>>?(?:['"][ \t]*,[ \t]*['"])?"""
    r"""[ \t]*([^'"\n]{1,256})['"]"""
    r"|\bPath[ \t]*\(" + _CODE_PATH + r"[ \t]*\)[ \t]*\.[ \t]*write_(?:text|bytes)\b"
    # Node, Deno, Ruby, PHP, .NET.
    r"|\b(?:write_?file(?:sync)?|append_?file(?:sync)?|output_?file(?:sync)?|createwritestream"
    r"|writetextfile(?:sync)?|file_put_contents|binwrite|writeall(?:text|bytes|lines)|appendall(?:text|lines)"
    r"|(?:file|io)\.write)[ \t]*\("
    + _CODE_PATH
    # PowerShell.
    + r"|\b(?:set-content|add-content|out-file)(?:[ \t]+-(?:path|filepath|literalpath))?"
    r"""[ \t]+['"]?([^\s'"|;&)]+)"""
)


_PRINTED_INTO = re.compile(
    r"""(?:^|[;&|(\n])[ \t]*(?:echo|printf)(?:[ \t]+-[neE]+)*[ \t]+"""
    r"""((?:'[^'\n]*'|"(?:[^"\\\n]|\\.)*"|[^\n;&|<>'"])*?)"""
    r"""[ \t]*(?:>>?|\|[ \t]*(?:sudo[ \t]+)?tee(?:[ \t]+-\S+)*)[ \t]*([^\s;&|<>'"]+)"""
)


def _printed(words: str) -> str:
    """What ``echo`` prints of its words: their quotes taken off (the words as they stand where they do
    not split as the shell splits them)."""
    try:
        return " ".join(shlex.split(words))
    except ValueError:
        return words


@dataclass(frozen=True, slots=True)
class _Heredoc:
    start: int
    end: int
    rest: str
    path: str
    body: str
    stored: bool
    """Only stored or printed: ``without_stored_heredocs`` leaves it out."""


def _heredocs(text: str) -> Iterator[_Heredoc]:
    """Each ended here-document of the text, but those inside the body of one only stored (data)."""
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
        stored = not expands and not named_again and not _INTERPRETERS.search(command)
        yield _Heredoc(opening.start(), end.end(), rest, written.group(1) if written else "", body, stored)
        if stored:
            at = end.end()


_WRITTEN = re.compile(r"(?:>>?|\btee(?:[ \t]+-\S+)*)[ \t]*([^\s;&|<>]+)")


def _substituted(text: str) -> str:
    """Variables a text assigns (``a=rm; $a -rf /``) filled in where it uses them, twice over for a
    variable built from others."""
    assigned = [
        (match.group(1), next(group for group in match.groups()[1:] if group is not None))
        for match in _ASSIGNMENT.finditer(text)
    ]
    # A variable expanded where IFS was set is split at its characters (IFS=,; x=rm,-rf,/; $x).
    splits = {ord(character): " " for name, value in assigned if name == "IFS" for character in value}
    values = {name: value.translate(splits) for name, value in assigned if name != "IFS"}
    text = _emptied_after_unset(text, values.keys())
    if not values:
        return text
    for _ in range(2):
        text = _USE.sub(lambda match: values.get(match.group(1) or match.group(2), match.group(0)), text)
    return text


_UNSET = re.compile(r"(?:^|(?<=[\s;&|(]))unset((?:[ \t]+-[vn]+)?(?:[ \t]+[A-Za-z_]\w*)+)")


def _emptied_after_unset(text: str, assigned: Iterable[str]) -> str:
    """The text with each use of a variable it unsets and never assigns emptied after the first ``unset``
    (``unset X; rm -rf "$X"/`` is ``rm -rf /``); a use before it may be the environment's value, and one
    the text assigns is filled in (``_substituted``). One pass, however many names are unset."""
    unset_at: dict[str, int] = {}
    for unset in _UNSET.finditer(text):
        for name in unset.group(1).split():
            if name[0] != "-":
                unset_at.setdefault(name, unset.end())
    for name in assigned:
        unset_at.pop(name, None)
    if not unset_at:
        return text

    def used(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return "" if match.start() >= unset_at.get(name, len(text) + 1) else match.group(0)

    return _USE.sub(used, text)


def _command(piece: str) -> str:
    """One command with its wrappers and its directory taken off, a glob for its name read as the
    dangerous command it matches, what parallel gives it after ``:::`` in place of its placeholder or
    after it, and a switch set to true as the switch (``--all=true`` is ``--all``; set to false, nothing)."""
    for _ in range(8):
        stripped = _WRAPPER.sub("", _COMMAND_PATH.sub(r"\1", piece), count=1)
        if stripped == piece:
            break
        piece = stripped
    command, given, arguments = piece.partition(":::")
    if given:
        arguments = " ".join(word for word in arguments.split() if not word.startswith(":::"))
        piece = command.replace(_GIVEN, arguments) if _GIVEN in command else f"{command} {arguments}"
    piece = piece.strip()
    word, _, rest = piece.partition(" ")
    # A bracket no ``]`` closes stands for itself, and no dangerous word holds one: such a glob names none
    # (and fnmatch reads every such bracket to the end, ``[[[`` repeated costing seconds).
    if any(char in word for char in "?*[") and "/" not in word and "[" not in word[word.rfind("]") + 1 :]:
        word = next((candidate for candidate in _DANGEROUS_WORDS if glob_matches(candidate, word)), word)
    words = (_switch(argument) for argument in rest.split(" "))
    return f"{word} {' '.join(_normal_path(argument) for argument in words if argument is not None)}".strip()


_SWITCH = re.compile(r"(?i)(--?[a-z][\w-]*)=(?:(true|yes|on|1)|false|no|off|0)")


def _switch(argument: str) -> str | None:
    switch = _SWITCH.fullmatch(argument)
    if switch is None:
        return argument
    return switch.group(1) if switch.group(2) else None


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
