"""Credential theft: a file-read or shell tool call whose arguments name credential material.

The patterns are the `credential_access` rule pack; they run over the arguments of tools that read files
or run commands, never over prose or other tools' arguments (an email that mentions `.env` is not theft).
"""

from __future__ import annotations

import functools
import json
import posixpath
import re
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import unquote

from proxy.detectors.commands import is_command_tool, shell_readings, without_stored_heredocs
from proxy.detectors.credential_use import NAME_ONLY, command_pieces, commands_certain, unread_names
from proxy.detectors.tools import glob_matches, name_matches
from proxy.exchange import ToolCall
from proxy.model import Action, Finding
from proxy.scanning.rulepack import Rule, RulePack, ScanBudget, Scanner, scan_timeout_finding

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


def is_reading_tool(name: str) -> bool:
    return name_matches(name, READING_TOOLS)


def read_arguments(name: str, arguments: str) -> str:
    """The arguments of a call as far as they name what it reads: a writing tool's content left out (code
    it writes may name a token's path without reading it), its path and a viewing command kept."""
    if not name_matches(name, WRITING_TOOLS):
        return arguments
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):
        return arguments
    if not isinstance(value, dict):
        return arguments
    return json.dumps({key: item for key, item in value.items() if key.lower() not in WRITTEN_KEYS})


def credential_reads(calls: Iterable[ToolCall], scanner: Scanner, budget: ScanBudget) -> list[Finding]:
    """One finding per credential rule matched in a reading tool's arguments (or out of time on them:
    ``SCAN_TIMEOUT_RULE``); where the policy enforces ``credential_theft`` the call is withheld (an MCP
    ``tools/call`` refused), elsewhere recorded. The scans are charged to ``budget``."""
    findings = []
    for call in calls:
        if not is_reading_tool(call.name):
            continue
        arguments = read_arguments(call.name, call.arguments)
        rules, timed_out = _rules_read(call.name, arguments, scanner, budget, blank=False)
        blanked = unread_arguments(arguments) if rules and not timed_out else arguments
        if rules and not timed_out and not budget.spent_for(len(blanked)):
            # A credential file the call only uses (``ssh -i``, ``ssh-add``, ``chmod 600``) is no read:
            # its word is blanked out of the arguments, and out of each reading (a key a variable names,
            # ``K=~/.ssh/k; ssh -i $K``, is used where the reading puts it). Read again only where the
            # words as written name one, so a call that names none costs what it did; where the budget
            # leaves no time to read it again, what was found stands.
            rules, timed_out = _rules_read(call.name, blanked, scanner, budget, blank=True)
        # A rule out of time may have read a credential path there: the call is withheld all the same.
        findings += [
            scan_timeout_finding(
                scanner.rules_by_id[rule_id], call.where, action=Action.WITHHOLD, tool=call.name
            )
            for rule_id in timed_out
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
            for rule in rules.values()
        ]
    return findings


def _rules_read(
    name: str, arguments: str, scanner: Scanner, budget: ScanBudget, *, blank: bool
) -> tuple[dict[str, Rule], tuple[str, ...]]:
    """The credential rules a call's arguments match, and those out of time on them. The commands it runs
    are read with their disguises undone, their expansions also taken for nothing, paths as they resolve
    and braces expanded (``cat ~/.a''ws/credentials``, ``cat ~/.ss$(true)h/id_rsa``, ``/etc//shadow``,
    ``cat ~/.{aws,x}/credentials``), where the budget leaves time; with ``blank``, the words of the files
    they only use blanked out of those readings."""
    if is_command_tool(name):
        # What a here-document only stores or prints (``cat > notes.md <<'EOF'``) is data the command
        # writes, as a writing tool's content is: it names no file the command reads.
        arguments = _mapped_json_strings(arguments, without_stored_heredocs)
    commands = "" if budget.spent_for(len(arguments)) else shell_readings(name, arguments)
    commands = unread_names(commands) if blank else commands
    commands = "\n".join(
        (commands, emptied(commands), normal_paths(f"{arguments}\n{commands}"), environment_aliases(commands))
    )
    globbing = "\n".join(globbing_commands(commands))
    commands += "\n" + "\n".join(expanded_words(f"{arguments}\n{commands}"))
    scan = scanner.scan(f"{arguments}\n{commands}", budget)
    rules = {match.rule.id: match.rule for match in scan.found}
    globbing += "\n" + "\n".join(expanded_words(globbing))
    rules |= {rule.id: rule for rule in globbed_rules(globbing, scanner.rules) if rule.id not in rules}
    rules |= {rule.id: rule for rule in searched_rules(globbing, scanner.rules) if rule.id not in rules}
    return rules, tuple(scan.timed_out)


def unread_arguments(arguments: str) -> str:
    """The arguments with the words of credential files their commands only use blanked out of each
    string (``unread_names``), or of the whole text where it is no JSON."""
    if not commands_certain(arguments):
        return arguments
    return _mapped_json_strings(arguments, unread_names)


def _mapped_json_strings(arguments: str, change: Callable[[str], str]) -> str:
    """The arguments with each string of their JSON changed, or the whole text where it is no JSON; as
    given where nothing changed."""
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):
        return change(arguments)
    changed = _mapped_strings(value, change)
    return arguments if changed == value else json.dumps(changed, ensure_ascii=False)


def _mapped_strings(value: object, change: Callable[[str], str]) -> object:
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {key: _mapped_strings(item, change) for key, item in value.items()}
    if isinstance(value, list):
        return [_mapped_strings(item, change) for item in value]
    return value


_SUBSTITUTION = re.compile(r"""\$\([^()\n]*\)|`[^`\n]*`|\$\{[^{}\n]*\}""")
_LOCALE_QUOTE = re.compile(r'\$(?=")')


def emptied(commands: str) -> str:
    """The commands with every substitution and expansion taken for nothing, as one whose variable is
    unset or whose command prints nothing makes it (``~/.ss${x}h``, ``id_r$(true)sa``, ``${z:+x}``), and
    ``$"..."`` as the string it translates: "" where that changes nothing."""
    text = _SUBSTITUTION.sub("", _LOCALE_QUOTE.sub("", commands)).replace("'", "").replace('"', "")
    return "" if text == commands else text


_WHOLE_ENVIRONMENT = re.compile(
    r"(?:\bos\.environb?|\b(?:process|Bun)\.env|\bDeno\.env\.toObject\(\)|(?<![\w$.])ENV|\$_ENV|%ENV"
    r"|\bSystem\.getenv\(\s*\)|\bos\.Environ\(\)|\bgetenv\(\s*\)|\benv::vars(?:_os)?\(\))"
    # Not one variable of it (``os.environ["HOME"]``, ``process.env.PORT``, ``ENV.fetch``): the whole.
    r"(?![\w\[{]|\s*\[|\.(?!(?:copy|items|keys|values|to_h|to_hash|dup|clone)\b))"
)
_ENVIRONMENT_ALIAS = re.compile(
    r"(?m)(?:^|(?<=[;{]))[ \t]*(?:(?:const|let|var|my|local|our)[ \t]+)?"
    r"(?:(?P<name>\$?[A-Za-z_]\w*)|\{[ \t]*\.\.\.[ \t]*(?P<rest>[A-Za-z_$][\w$]*)[ \t]*\})"
    r"[ \t]*:?=(?![=~])[ \t]*"
    rf"(?P<value>[^;\n]{{0,200}}?{_WHOLE_ENVIRONMENT.pattern}[^;\n]{{0,200}}?)[ \t]*(?=[;\n]|$)"
)
_MOST_ALIASES = 8


def environment_aliases(code: str) -> str:
    """The code with each name it binds to the whole environment (``e = os.environ``, ``env =
    dict(os.environ)``, ``const e = process.env``, ``const {...all} = process.env``) written as what it
    binds wherever the code uses it after (``print(e)`` read as ``print(os.environ)``), so the rule that
    judges what dumps the environment judges what dumps it through a name; "" where the code binds none. A
    name standing for a property of its own (``spawn(cmd, {env})``) is written ``env: value``, as an
    environment handed to a child is no dump. Names bound from names bound before are followed
    ``_MOST_ALIASES`` deep."""
    if not _WHOLE_ENVIRONMENT.search(code):
        return ""
    written = code
    for _ in range(_MOST_ALIASES):
        binding = next(
            (found for found in _ENVIRONMENT_ALIAS.finditer(written) if _uses(written, found)), None
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


def _written_as(value: str, use: re.Match[str]) -> str:
    return f"{use[0]}: {value}" if use["own"] is not None else value


@functools.lru_cache(maxsize=64)
def _use_of(name: str) -> re.Pattern[str]:
    """Where a name is used as the whole mapping: not a part of another word, an attribute, a key, one
    variable of it (``e["HOME"]``) or a name bound again."""
    word = re.escape(name)
    return re.compile(
        rf"(?P<own>[{{,][ \t]*){word}(?=[ \t]*[,}}])|(?<![\w$.]){word}(?![\w$]|[ \t]*(?:\[|:?=(?!=)|:(?!:)))"
    )


def _uses(code: str, binding: re.Match[str]) -> bool:
    name = binding.group("name") or binding.group("rest")
    return _use_of(name).search(code, binding.end()) is not None


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


def globbing_commands(commands: str) -> Iterator[str]:
    """The pieces of the commands whose globs may read what they name: each command but one of
    ``NAME_ONLY`` whose output goes nowhere (neither piped on nor substituted into another)."""
    certain = commands_certain(commands)
    for piece, _, passed_on in command_pieces(commands):
        if not certain or passed_on or _command_word(piece) not in NAME_ONLY:
            yield piece


_RUNS_BEFORE = re.compile(
    r"^\s*(?:(?:sudo|doas|command|builtin|exec|nohup|time|nice|[{!])(?=\s)|-\S*|[A-Za-z_]\w*=\S*)\s*"
)


def _command_word(piece: str) -> str:
    """The name of the command a piece runs, past wrappers, options and assignments before it, without
    its folder."""
    for _ in range(8):
        rest = _RUNS_BEFORE.sub("", piece, count=1)
        if rest == piece:
            break
        piece = rest
    return piece.split(maxsplit=1)[0].rsplit("/", 1)[-1] if piece.strip() else ""


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
    r"""(?i)(?:(?<!\S)(?:-i?name|-filter|-include|--?i?glob|-g)|\b(?:[pm]?locate|fd|fdfind)(?:[ \t]+-\S*)*)"""
    r"""[ \t=]+["']?(?P<name>[^\s"';&|<>()]{1,256})"""
)
"""A file's name searched for wherever it is: ``find -name``/``-iname``, ``mdfind -name``, a glob of
``rg``/``fd`` (``-g``), PowerShell's ``-Filter``/``-Include``, the name ``locate`` or ``fd`` looks for."""
_SHARED_NAMES = frozenset(
    {"config", "config.json", "credentials", "hosts.yml", "hosts.json", "apps.json", "auth.json", "token",
     "cookies", "login data", "web data", "local state", "admin.conf"}
)  # fmt: skip
"""Credential files' names that as many other files bear: only their folder tells them apart."""
_EVERYDAY_NAMES = ("package.json", "index.js", "readme.md", "main.py", "data.db", "config.yaml", "makefile",
                   "notes.txt", "app.log", "test.sqlite", "schema.sql", "styles.css", "key.txt")  # fmt: skip
"""Files in any tree: a searched glob that names one of them is too wide to be a credential's (``*.json``)."""


def searched_rules(commands: str, rules: Iterable[Rule]) -> Iterator[Rule]:
    """The rules one of whose ``files`` a search by name in the commands finds wherever it is (``find ~
    -name logins.json``, ``find / -iname 'key*.db'``, ``locate .git-credentials``): by its last part,
    where that part is the credential's own (not ``config.json``) and a glob searched for names no
    everyday file."""
    searched = set()
    for match in list(_SEARCHED_NAME.finditer(commands))[:_MOST_WORDS]:
        # Compared without case: a search that minds it (``-name``) finds fewer, never other files.
        name = match["name"].lower()
        wide = _GLOB.search(name) is not None and any(
            glob_matches(everyday, name) for everyday in _EVERYDAY_NAMES
        )
        if _WILDCARDS.sub("", name) and not wide:
            searched.add(name)
    if not searched:
        return
    for rule in rules:
        lasts = {path.rsplit("/", 1)[-1].lower() for path in rule.files} - _SHARED_NAMES
        if any(glob_matches(last, name) for last in lasts for name in searched):
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
