"""Destructive commands: what the arguments of a command-running tool would do, not only its name.

A shell, a code interpreter, a SQL console or a CLI wrapper is asked to run whatever its arguments say, so
``run {"cmd": "rm -rf ~"}`` is read for the command: the `destructive_commands` rule pack runs over the
arguments' strings and over readings that undo what hides a command from a plain search (quotes inside
words, backslashes, ``$IFS``, variables, ``eval`` and ``sh -c``, ANSI-C, hex and octal escapes, base64,
argv lists, ``/bin/rm``, ``/???/r?``). Only those tools' arguments are read, never prose or a tool's
result, so documentation that mentions ``rm -rf`` is nothing here.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from fnmatch import fnmatchcase
from typing import Any

from proxy.detectors.tools import CatalogueEntry, name_matches
from proxy.exchange import ToolCall
from proxy.scanning.rulepack import RulePack, ScanBudget, Scanner

PACK = "destructive_commands"
COMMAND_TOOLS = (
    "*shell*", "*bash*", "sh", "zsh", "*_sh", "*terminal*", "*console*", "*exec*", "*command*", "*cmd*",
    "run", "run_*", "*_run", "*runner*", "*python*", "*interpreter*", "*repl*", "*jupyter*", "*notebook*",
    "*script*", "eval", "eval_*", "*sql*", "*query*", "*database*", "db", "db_*", "*_db", "*mysql*",
    "*sqlite*", "*postgres*", "*mongo*", "*redis*", "*snowflake*", "*bigquery*", "*duckdb*",
    "*clickhouse*", "*kubectl*", "*helm*", "*terraform*", "*tofu*", "*pulumi*", "*aws*", "*gcloud*",
    "*gsutil*", "az", "az_*", "*docker*", "*ssh*", "*powershell*", "pwsh", "git", "git_*", "*_git", "cli",
    "*_cli", "cli_*", "*process*", "*sandbox*", "container*", "*code_execution*", "*code_interpreter*",
)  # fmt: skip
"""Tools that run what their arguments say, by the names agent frameworks and MCP servers give them."""

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
    return name_matches(name, COMMAND_TOOLS)


def command_scanner(packs: list[RulePack]) -> Scanner:
    return Scanner([pack for pack in packs if pack.name == PACK])


def destructive_entry(call: ToolCall, scanner: Scanner, budget: ScanBudget) -> CatalogueEntry | None:
    """The rule a command tool's arguments break, as a catalogue entry (the call then needs approval as a
    destructive tool does), or None. A rule out of time on them counts as broken: what it did not read may
    be the command."""
    if not scanner.rules or not is_command_tool(call.name):
        return None
    if budget.spent_for(len(call.arguments)):
        scan = scanner.scan(call.arguments, budget)  # read by none of the rules: the pack is out of time
    else:
        # The readings are charged as the scan is: an argument crafted to make them long costs the budget.
        budget.allow(len(call.arguments))
        with budget.metered() as meter:
            text = readings(call.name, call.arguments)
            budget.allow(len(text))
            scan = scanner.scan_metered(text, meter)
    rule = next((match.rule for match in scan.found), None) or next(
        (scanner.rules_by_id[rule_id] for rule_id in scan.timed_out), None
    )
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


def readings(name: str, arguments: str) -> str:
    """Every reading of a call's arguments, one after another: each string as given, its strings of
    code joined as an argv, its commands one a line with their disguises undone, and what base64 or hex
    in it decodes to, read the same way."""
    prefixes = [cli for cli in CLI_TOOLS if cli.split("-")[0] in _name_words(name)]
    out: list[str] = []
    for text in _strings(arguments):
        for variant in (text, *(f"{cli} {text}" for cli in prefixes if not text.lstrip().startswith(cli))):
            for window in _windows(variant):
                out += _read(window, 0)
    return "\n".join(dict.fromkeys(out))


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
    here-document only stored or printed run nothing, and are left out."""
    text = _MESSAGE.sub(" ", _without_stored_heredocs(text))
    out = [text, shell_lines(text)]
    joined = _joined_literals(text)
    if joined:
        out += [joined, shell_lines(joined)]
    if depth < _MAX_DEPTH:
        for decoded in _decodings(text):
            out += _read(decoded, depth + 1)
    return out


_LITERAL = re.compile(r"""(?:\b[rbuf]{1,2})?(["'])((?:\\.|(?!\1)[^\\\n]){0,4096})\1""")
_LITERAL_RUN = re.compile(
    r"""(?:["'](?:\\.|[^\\\n"']){0,4096}["']\s*,\s*)*["'](?:\\.|[^\\\n"']){0,4096}["']"""
)


def _joined_literals(text: str) -> str:
    """The string literals of code, a run separated by commas joined by spaces, one run a line: what
    ``subprocess.run(["rm", "-rf", "/"])``, ``exec.Command("rm", "-rf", "/")`` or ``os.system('...')``
    runs."""
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
_BRACES = re.compile(r"\{([^{}\s,]*(?:,[^{}\s,]*)+)\}")
_SEPARATOR = re.compile(r"&&|\|\||;|(?<![>&<0-9])&(?![>&])|\n|\$\(|`|[(){}]")
_WRAPPER = re.compile(
    r"""^\s*(?:(?:sudo|doas)(?:\s+-[A-Za-z]*[ugpCDhrtU]\s+\S+|\s+--\w[\w-]*(?:=\S+)?|\s+-[A-Za-z]+)*\s+"""
    r"""|env(?:\s+-\S+|\s+[A-Za-z_]\w*=\S*)*\s+|[A-Za-z_]\w*=\S*\s+"""
    r"""|(?:nohup|time|exec|command|builtin|eval|then|do|else|if|elif|while|until|!|busybox|unbuffer)\s+"""
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
    text = _CONTINUATION.sub("", text)
    text = _ECHOED.sub(_echoed, text)
    text = _substituted(text)
    text = _IFS.sub(" ", text)
    text = _ANSI_C.sub(lambda match: _unescaped(match.group(1)), text)
    text = _DEFAULTED.sub(lambda match: match.group(1), text)
    text = _EMPTY_EXPANSION.sub("", text)
    text = _BRACES.sub(lambda match: match.group(1).replace(",", " "), text)
    unquoted = text.replace("'", "").replace('"', "")
    out: list[str] = []
    for reading in (_BACKSLASH.sub(r"\1", unquoted), _unescaped(unquoted)):
        out.append(reading)
        for line in _SEPARATOR.split(reading):
            if not line.strip():
                continue
            joined = " | ".join(command for piece in line.split("|") if (command := _command(piece)))
            if joined:
                out.append(joined)
    return "\n".join(dict.fromkeys(out))


_BACKSLASH = re.compile(r"\\(.)", re.DOTALL)
_HEREDOC = re.compile(r"""<<-?[ \t]*(['"]?)([A-Za-z_]\w*)\1([^\n]*)\n""")
_MAX_HEREDOCS = 16
_INTERPRETERS = re.compile(
    r"(?:^|[\s/|;&(])(?:(?:ba|da|z|k|c|tc|a)?sh|python[\d.]*|perl|ruby|node|php|psql|mysql|sqlite3|redis-cli|"
    r"mongo(?:sh)?|ssh|exec|eval|source|xargs|kubectl|docker|podman|osascript|pwsh|powershell)(?=[\s;|&)]|$)"
)


def _without_stored_heredocs(text: str) -> str:
    """The text without the bodies of here-documents fed to a command that only stores or prints them
    (``cat > notes.md <<'EOF'``): data, not commands. One fed to a shell or an interpreter, or expanding a
    command (``$(...)``, backquotes, where its delimiter is not quoted), is kept and read as commands."""
    kept: list[str] = []
    at = 0
    for count, opening in enumerate(_HEREDOC.finditer(text)):
        if count == _MAX_HEREDOCS or opening.start() < at:
            break
        quoted, word, rest = opening.groups()
        end = re.compile(rf"\n[ \t]*{re.escape(word)}[ \t]*(?=\n|$)").search(text, opening.end() - 1)
        if end is None:
            continue  # unended: maybe no here-document at all (C++'s `cout << x`), read as it stands
        stop = end.start()
        body = text[opening.end() : stop]
        command = text[text.rfind("\n", 0, opening.start()) + 1 : opening.start()] + rest
        expands = not quoted and ("$(" in body or "`" in body)
        if not expands and not _INTERPRETERS.search(command):
            kept.append(text[at : opening.end()])
            at = stop
    return "".join(kept) + text[at:]


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
        found = next((candidate for candidate in _DANGEROUS_WORDS if fnmatchcase(candidate, word)), None)
        if found:
            piece = f"{found} {rest}".strip()
    return piece
