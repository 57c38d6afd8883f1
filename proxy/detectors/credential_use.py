"""Credential files a command uses without reading them out: the key an ``ssh -i`` signs with, a key
``ssh-add`` loads, a file ``chmod`` or ``test -f`` reaches by name.

``unread_names`` blanks those words out of a shell text, so the credential rules read what is left: every
other occurrence of the same path (``scp -i ~/.ssh/id_rsa ~/.ssh/id_rsa host:`` copies the second one out)
is still theirs. A word is blanked only where the command it belongs to is certain: a known command in
command position (no function, alias or ``PATH`` in the text that could make the name run something else),
its options parsed letter by letter (an option it does not know, or ``ssh-keygen -i``, which prints a
private key, leaves the whole command as written), and its output neither piped, substituted, nor sent to a
network path or an inherited descriptor.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from itertools import pairwise
from typing import NamedTuple

NAME_ONLY = frozenset(
    {"ls", "dir", "stat", "test", "[", "[[", "chmod", "chown", "chgrp", "chattr", "lsattr", "getfacl",
     "touch", "mkdir", "rm", "shred", "realpath", "readlink", "basename", "dirname"}
)  # fmt: skip
"""Commands that reach files' names and attributes, never what they hold: what they name reads no
credential unless what they print is passed on. (``du --files0-from``, ``file -f`` and ``setfacl -M`` read
a file's lines as names or ACL entries and print them back in their errors: none of them is here.)"""

# Letters of each command's options that take no value, and of those that take one, as OpenSSH's getopt
# strings have them; which of the latter name a key the command only signs or loads with. Left out of
# ssh-keygen's, so that a command with one is read as written: ``-i`` (prints the private key it imports)
# and the modes whose ``-f`` is no key but a file it prints lines of (``-F``, ``-R``, ``-H`` known hosts,
# ``-M`` moduli, ``-Y`` signers). Left out of each, the options naming a program, library or file of
# commands it runs (``scp -S``, ``sftp -D``/``-b``, ``ssh -F``/``-I``, a PKCS#11 or security key
# provider): what it runs can read the key's name out of its arguments (``/proc/$PPID/cmdline``).
_KEY_USERS = {
    "ssh": ("46AaCfGgKkMNnqsTtVvXxYy", "BbcDEeFiJLlmOoPpQRSWw", "i"),
    "scp": ("12346ABCTdfOpqRrstv", "FJPcilXo", "i"),
    "sftp": ("1246AafhNpqrvC", "FcilosBJPRX", "i"),
    "ssh-keygen": ("ABKLQUXceghklopquvy", "CEINOPVZabfmnrstz", "fs"),
    "ssh-add": ("cCDdKkLlqvXx", "EHhTt", ""),
}
# The one ``-F`` a key's user is given that reads no settings but those it reads anyway (or none): where
# the user's own config was written by an earlier call, that call is what is judged.
# As written: a ``~`` the shell expands only where it starts a word, and a word quoted otherwise than
# here may name another file (``'~/.ssh/config'`` is a folder ``~`` where the command runs).
_OWN_CONFIG = re.compile(
    r"/dev/null|(?:~|\$HOME|\$\{HOME\}|\"\$HOME|\"\$\{HOME\}|/root|/home/[\w.-]+|/Users/[\w.-]+)/\.ssh/config\"?"
)
# ``-o`` settings that run a command or load code, read more settings that may, or hand the key to an
# agent at a socket they name (``AddKeysToAgent`` with ``IdentityAgent``).
_RUNNING_OPTION = re.compile(
    r"(?i)^\s*(?:proxycommand|localcommand|permitlocalcommand|knownhostscommand|pkcs11provider"
    r"|securitykeyprovider|match|include|proxyjump|controlmaster|controlpath|identityagent|addkeystoagent)"
    r"(?![a-z])"
)
_SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh"})
# An interactive shell (``-i``) first runs rc files that may rebind any command, and expands aliases. A
# login shell (``-l``, as coding agents run each command: ``bash -lc``) runs the profile files the agent's
# own shell runs: no command they rebind is one this call's shell would not run, and a profile an earlier
# call wrote is judged with that call (``LEFT_BEHIND``).
_SHELL_C = re.compile(r"-[exuvl]*c[exuvl]*")
_WRAPPERS = {
    "sudo": ("EHnSk", "ug"),
    "doas": ("n", "u"),
    "env": ("", ""),
    "command": ("", ""),
    "builtin": ("", ""),
    "exec": ("", ""),
    "time": ("p", ""),
    "nice": ("", "n"),
}
"""Words that run the command after them unchanged, with the letters of their options that change
nothing of what it runs, without a value and with one: any other option (``exec -a``, ``env -S``,
``command -p``, ``sudo -i``) leaves the command unknown. Not ``nohup``, which may write what the command
prints to nohup.out."""
# Shell keywords that open a command, and ``export``, whose words are settings.
_OPENERS = frozenset({"if", "then", "elif", "else", "while", "until", "do", "!", "{", "export"})
# Folders whose programs only an administrator replaces: a command named by its path there is the one
# the shell would find.
_SYSTEM_PATH = re.compile(r"^(?:/usr)?/s?bin/([\w.+-]+)$")
# Variables and git settings whose value is an ssh command git or rsync runs.
_SSH_COMMAND = re.compile(r"(?i)^(?:GIT_SSH_COMMAND|RSYNC_RSH|core\.sshCommand)=")
_IDENTITY_OPTION = re.compile(r"(?i)^identityfile(?:[ \t]*=[ \t]*|[ \t]+)\S+$")
_ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")
_COMMAND_NAMES = sorted({*NAME_ONLY, *_KEY_USERS, *_SHELLS, "git", "rsync"})
_COMMAND_FILE = r"/(?:" + "|".join(map(re.escape, _COMMAND_NAMES)) + r")(?![\w./-])"
# Where a command starts: a separator, a substitution, or a keyword or wrapper before it.
_AT_COMMAND = (
    r"(?:^|(?<![<>])[;&|({\n`]|\b(?:then|do|else|exec|command|builtin|sudo|doas|env|time|nice|nohup)\s)\s*"
)
_SETTINGS_WORDS = (
    "ld_", "ssh_", "sudo_", "bash_", "zsh_", "git_", "rsync_", "env", "gconv_path", "locpath", "nlspath",
    "getconf_dir", "shellopts", "bashopts", "ps0", "ps1", "ps2", "ps3", "ps4", "prompt_command", "ifs",
    "zdotdir", "posixly_correct",
)  # fmt: skip
# A text that could make a command's name run something else (a function, alias or PATH of its own, a
# file written under the name of one of these commands), send its output to the network as a whole, or
# hand what it was given to another command: any of these patterns, read without case but where one says
# otherwise, each with words one of which a text it matches holds (without case): a pattern runs only
# over a text that holds one, a few scans of a plain string, where one pattern of them all tried each
# alternative at each character (some 0.25 s a search of 400 KB).
REBINDINGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        r"\b(?:alias|unalias|alias_method|define_method|function|enable|PATH)\b",
        ("alias", "define_method", "function", "enable", "path"),
    ),
    (r"\w\s*\(\s*\)", (")",)),
    # A routine defined in a script's language (``def ls``, Perl's ``sub ls {`` and ``*ls = ...``, Tcl's
    # ``proc ls {``), and ``hash`` run as a command (``hash -p /bin/cat ls``): the words alone are not.
    (r"\bdef\s+[\w.?!]+\s*(?:[(=;\n]|$|\s+[\w*&]+(?:\s*,\s*[\w*&]+)*\s*(?:[;\n]|$))", ("def",)),
    (r"\bsub\s*(?:[A-Za-z_][\w:']*\s*)?[{(;]", ("sub",)),
    (r"\bproc\s+\S+\s+\{", ("proc",)),
    (r"(?<![\w*])\*[A-Za-z_][\w:]*\s*=(?!=)", ("*",)),
    (r"(?m:" + _AT_COMMAND + r"hash\b)", ("hash",)),
    # Settings a command, the loader or a shell it starts reads for what to load or run, or where to send
    # what it is given (``LD_PRELOAD``, ``SSH_AUTH_SOCK``, ``SSH_ASKPASS``, ``BASH_ENV``, ``PS4``); git's
    # and rsync's but the ssh command they run, read as one.
    (
        r"(?-i:\b(?:(?:LD|DYLD|SSH|SUDO|BASH|ZSH)_\w+|GIT_(?!SSH_COMMAND\b)\w+|RSYNC_(?!RSH\b)\w+|ENV|GCONV_PATH"
        r"|LOCPATH|NLSPATH|GETCONF_DIR|SHELLOPTS|BASHOPTS|PS[0-4]|PROMPT_COMMAND|IFS|ZDOTDIR|POSIXLY_CORRECT)\b)",
        _SETTINGS_WORDS,
    ),
    (r"/dev/(?:tcp|udp)/", ("/dev/",)),
    (r"\bexec\s*\d*\s*[<>]", ("exec",)),
    (
        r"\b(?:coproc|trap|history|fc|eval|source|shopt)\b",
        ("coproc", "trap", "history", "fc", "eval", "source", "shopt"),
    ),
    # Programs git runs (its hooks, a file system monitor), each with the ssh command's setting in its
    # environment; PowerShell's aliases and evaluation.
    (r"hookspath", ("hookspath",)),
    (r"fsmonitor", ("fsmonitor",)),
    (r"\.git/(?:hooks|config)\b", (".git/",)),
    (r"\bhooks/", ("hooks/",)),
    (r"\bgit\s+config\b", ("config",)),
    (r"--template\b", ("--template",)),
    (
        r"\b(?:sal|nal|ipal|iex|invoke-expression|icm|invoke-command)\b",
        ("sal", "nal", "ipal", "iex", "invoke-", "icm"),
    ),
    # A file of the shell's own run (``. ./env.sh``), or a variable named by an expansion
    # (``export PA${x}TH=...``).
    (r"(?:^|[;&|({\n]|\b(?:then|do|else|exec|command|builtin)\s)\s*\.\s", (".",)),
    (
        r"\b(?:export|declare|typeset|local|readonly|read|readarray|mapfile|getopts|let|printf)\b[^;&|\n]*\$",
        ("export", "declare", "typeset", "local", "read", "mapfile", "getopts", "let", "printf"),
    ),
    # An ssh command's setting read back (``cat ${GIT_SSH_COMMAND#ssh -i }``, ``printenv``).
    (r"\$\{?(?:GIT_SSH_COMMAND|RSYNC_RSH)\b", ("git_ssh_command", "rsync_rsh")),
    (r"\$\{!", ("${!",)),
    (r"\b(?:printenv|compgen)\b", ("printenv", "compgen")),
    (r"\b(?:declare|typeset|export|readonly)\s+-\w*p", ("declare", "typeset", "export", "readonly")),
    (r"\b(?:env|set)\s*(?:$|[;&|>)\n])", ("env", "set")),
    # Commands that run alongside one another: one may read another's arguments from the process table.
    (r"(?<![<>&])&(?![&>])", ("&",)),
    (r"[<>]\(", ("<(", ">(")),
    # What a command was given, taken up by the next one: ``ls k; cat $_``, ``[[ k =~ (.*) ]]``.
    (r"\$\{?_\b", ("$_", "${_")),
    (r"\bBASH_(?:REMATCH|COMMAND|ARGV)\b", ("bash_",)),
    # A file written under the name of one of these commands (``cp /bin/cat ~/bin/ls``).
    (_COMMAND_FILE, tuple(f"/{name}" for name in _COMMAND_NAMES)),
)
_REBINDING_SEARCHES = tuple((re.compile("(?i)" + pattern).search, words) for pattern, words in REBINDINGS)
# The letters beyond ASCII that a pattern read without case takes for one of ASCII's (the long s for s,
# the Kelvin sign for k, Turkish dotted and dotless i for i).
_ASCII_CASES = str.maketrans({"\u017f": "s", "\u212a": "k", "\u0130": "i", "\u0131": "i"})


def may_rebind(text: str) -> bool:
    """Whether any of ``REBINDINGS`` matches in the text: as the patterns joined as one would, each run
    only where the text holds one of its words."""
    words = text.lower() if text.isascii() else text.translate(_ASCII_CASES).lower()
    return any(
        any(word in words for word in required) and search(text) is not None
        for search, required in _REBINDING_SEARCHES
    )


# A command named by its path in a system folder where a command starts (or a script's first line says
# what runs it), as the shell would find it.
_SYSTEM_COMMAND = re.compile(r"(?m)(" + _AT_COMMAND + r"(?:#!\s*)?)(?:/usr)?/s?bin/(?=[\w.+-]+(?:[ \t]|$))")
COMMAND_FILE = re.compile(_COMMAND_FILE)
"""A path naming a file as one of the commands whose words are read here."""
_IDENTITY_LINE = re.compile(r"(?im)^([ \t]*identityfile(?:[ \t]*=[ \t]*|[ \t]+))[^\s#]+(?=[ \t]*$)")
LEFT_BEHIND = re.compile(
    r"(?i)(?m:" + _AT_COMMAND + r"(?:export|declare|typeset|readonly|set|shopt|setsid|disown|screen|tmux"
    r"|systemd-run|at|batch|crontab|daemonize|start-stop-daemon|ln|install)\b)|\bnohup\b"
    r"|\.ssh/(?:config|rc|environment)|ssh_config|/etc/ssh/|ld\.so\.preload|\$profile\b|profile\.ps1"
    r"|gitconfig|\.config/git/"
    r"|/etc/(?:profile|bash\.bashrc|environment|zsh|sudoers)"
    r"|(?<![\w.])\.(?:bashrc|bash_profile|bash_login|bash_logout|profile|zshenv|zshrc|zprofile|zlogin"
    r"|kshrc|mkshrc|inputrc|config/fish)\b"
)
"""What a call can leave behind for a later one, in a shell that lives on or in a file it wrote: settings
a shell keeps (exports, options), a process that lives on (``nohup``, ``setsid``, ``screen``, ``at``), a
program put in place (``ln``, ``install``), or a file that configures what the key's users and shells run
(ssh's config and rc, git's config, the shells' rc files, the loader's preload list)."""
# Words that close a group, a loop or a condition: where its output is piped on, what each command in it
# prints goes with it.
_GROUP_END = re.compile(r"\s*(?:}|done|fi|esac)(?![^\s;&|<>])")
PIECES = re.compile(r"(&&|\|\||\|&?|;|(?<![<>])&(?!>)|\n|<\(|>\(|\$\(|`|[()])")
"""Where one command of a shell text ends and the next starts: separators, pipes, substitutions and
parentheses (``2>&1`` and ``&>`` are redirections, not separators)."""
# The one ``eval`` an everyday command runs: the settings ssh-agent prints.
_AGENT_EVAL = re.compile(
    r"""\beval\s+(\\?["']?)(?:\$\(|`)\s*ssh-agent(?:\s+-[sc])?\s*[)`]\1(?=\s*(?:$|[;&|\n]))"""
)
HIDING = re.compile(r"""[\\'"]|\$\{[^{}]*\}|\$\w+""")
_SUBSTITUTED = frozenset({"$(", "`", "<(", ">("})
_BLANK = "_"
_DEEPEST = 3


class _Word(NamedTuple):
    start: int
    end: int
    value: str
    redirection: bool = False


def unread_names(text: str, tick: Callable[[], None] = lambda: None) -> str:
    """The text with each word that names a file its command only uses (an identity, a key to load, a
    name to test, list or change the mode of) blanked out: what the credential rules read of a command.
    ``tick`` is called once for each of its commands read: the caller's budget, which it may stop."""
    return _blanked(_inlined(text, tick), tick) if text and commands_certain(text) else text


# A variable set alone to a plain word (``K=~/.ssh/id_rsa;``), and settings exported as they are made.
_SET_ALONE = re.compile(
    r"(?m)(?:^|(?<=[;\n]))[ \t]*([A-Za-z_]\w*)=([^\s;&|<>()$`'\"\\{}]+)[ \t]*(?=$|;|&&|\n)"
)
_ALL_EXPORTED = re.compile(r"\bset\b[^;&|\n]*(?:\s[-+]\w*a|allexport)")
_EXPANSION = re.compile(r"\$(?:([A-Za-z_]\w*)|\{([A-Za-z_]\w*)\})(?!\w)")
_NAME = re.compile(r"(?<!\w)[A-Za-z_]\w*(?!\w)")


# What the shell keeps of the commands it ran: the last word of the last one, what ``[[ =~ ]]`` matched,
# its history.
_KEPT = re.compile(r"\$\{?_\b|\bBASH_REMATCH\b|!(?:!|\$|\*|-?\d)|\b(?:history|fc)\b")
# Ways to reach a variable by a name computed when the command runs, or to list them all.
_INDIRECT = re.compile(
    r"\$\{!|\beval\b|\b(?:declare|typeset|local)\s+-\w*n|\b(?:compgen|printenv)\b"
    r"|\b(?:declare|typeset|export|readonly)\s+-\w*p|\b(?:env|set)\s*(?:$|[;&|>)\n])"
)


class ShellHistory:
    """The commands a conversation's calls ran, in its order, each with the variables it set alone: read
    once, so that what a call carries over of the others (``carried_over``) costs its own length and the
    settings, not each command read again."""

    def __init__(self, commands: Sequence[str]) -> None:
        self.commands = commands
        self.settings = [
            (index, setting[0].strip(), setting[1])
            for index, command in enumerate(commands)
            for setting in _SET_ALONE.finditer(command)
        ]


def carried_over(text: str, history: ShellHistory, at: int) -> str:
    """What of the commands a shell ran in the conversation's other calls than ``at`` a text's commands may
    read when it lives on between them: all of them where it reads what the shell kept of them (``$_``,
    ``BASH_REMATCH``, its history); else the settings of variables ``_inlined`` reads (``K=~/.ssh/id_rsa``)
    that it expands, or all of those where it may reach one by a computed name (``${!v}``, ``eval``). Read
    before the text, so that what it does with them is judged with it."""
    own = 1 if 0 <= at < len(history.commands) else 0
    if len(history.commands) == own:
        return ""
    plain = HIDING.sub("", text)
    if _KEPT.search(text) or _KEPT.search(plain):
        return "\n".join(command for index, command in enumerate(history.commands) if index != at)
    settings = [(setting, name) for index, setting, name in history.settings if index != at]
    if not settings:
        return ""
    every = bool(_INDIRECT.search(text) or _INDIRECT.search(plain))
    expanded = set(re.findall(r"\$\{?([A-Za-z_]\w*)", text))
    return "\n".join(setting for setting, name in settings if every or name in expanded)


_KNOWN = frozenset({*NAME_ONLY, *_KEY_USERS, "git", "rsync"})


def _runs_known(piece: str, tick: Callable[[], None]) -> bool:
    """Whether a piece only sets variables, or runs one of the commands whose words are read here: none
    of which reads a variable the text sets from its environment (a program that may, given one already
    exported, could read the key's name there)."""
    tick()
    words = _words(piece)
    if words is None:
        return False
    values = [word.value for word in _split_redirections(words)[0]]
    first = command_start(values)
    if first is None:
        return False
    name = known_name(values[first]) if first < len(values) else ""
    return name is not None and (not name or bool(_GROUP_END.fullmatch(name)) or name in _KNOWN)


def _inlined(text: str, tick: Callable[[], None]) -> str:
    """The text with each variable set once alone to a plain word, and named nowhere else than where it
    is expanded whole (``$K``, ``${K}``), written as its value there and its setting blanked: what a
    command it is given uses is read as that command's word (``K=~/.ssh/id_rsa; ssh -i $K h``). Not where
    settings are exported (``set -a``), as a program run may read them from its environment."""
    if "=" not in text or "$" not in text or _ALL_EXPORTED.search(text):
        return text
    settings: dict[str, re.Match[str] | None] = {}
    for found in _SET_ALONE.finditer(text):
        settings[found[1]] = None if found[1] in settings else found
    uses: dict[str, list[re.Match[str]]] = {}
    for use in _EXPANSION.finditer(text):
        uses.setdefault(use[1] or use[2], []).append(use)
    named = Counter(_NAME.findall(text))
    edits: list[tuple[int, int, str]] = []
    for name, setting in settings.items():
        if setting is not None and name in uses and named[name] == len(uses[name]) + 1:
            edits.append((setting.start(2), setting.end(2), _BLANK))
            edits += [
                (use.start(), use.end(), setting[2]) for use in uses[name] if use.start() > setting.end()
            ]
    if not edits or not all(_runs_known(piece, tick) for piece in _unescaped(PIECES.split(text))[::2]):
        return text
    out: list[str] = []
    kept = 0
    for start, end, value in sorted(edits):
        out += (text[kept:start], value)
        kept = end
    return "".join(out) + text[kept:]


# A call's strings are asked about by its blanking and by each of its readings, one after the other.
@functools.lru_cache(maxsize=4)
def commands_certain(text: str) -> bool:
    """Whether each command of the text is the one its name says and its output goes where its piece
    says: no function, alias or ``PATH`` of the text's own, nothing sent to the network as a whole, no
    group, loop or condition whose output is piped on or written to a file, no command run alongside
    another."""
    # Quotes, backslashes and expansions hide a name from a reading but not from the shell
    # (``al''ias``, ``PA\\TH=``, ``PA${x}TH=``).
    # A line the shell continues (``cp x \\<newline>/usr/bin/ls``) is one command with the next.
    text = _SYSTEM_COMMAND.sub(r"\1", _AGENT_EVAL.sub("", text.replace("\\\n", "")))
    if may_rebind(text) or may_rebind(HIDING.sub("", text)):
        return False
    pieces = _unescaped(PIECES.split(text))
    for at in range(0, len(pieces), 2):
        after = pieces[at + 1] if at + 1 < len(pieces) else ""
        group_end = (at and pieces[at - 1] == ")") or _GROUP_END.match(pieces[at])
        if group_end and ((after.startswith("|") and after != "||") or _redirected_out(pieces[at])):
            return False
    return True


def rebinds(text: str) -> bool:
    """Whether a shell text may change what a later command's name runs or where what it is given goes:
    one that is not ``commands_certain``, or that leaves settings, a process or a file behind
    (``LEFT_BEHIND``), however quoted."""
    return not commands_certain(text) or bool(
        LEFT_BEHIND.search(text) or LEFT_BEHIND.search(HIDING.sub("", text))
    )


def unread_settings(text: str) -> str:
    """An ssh config's text with the key each ``IdentityFile`` names blanked out, where none of its lines
    runs a command or reads more settings (``_RUNNING_OPTION``): as it stands it only names them."""
    if any(_RUNNING_OPTION.match(line) for line in text.splitlines()):
        return text
    return _IDENTITY_LINE.sub(r"\1" + _BLANK, text)


def _redirected_out(piece: str) -> bool:
    """Whether a group's output is written where a later command may read the names it printed."""
    words = _words(piece)
    if words is None:
        return True
    redirections = _split_redirections(words)[1]
    return redirections is None or bool(redirections)


def command_pieces(text: str) -> Iterator[tuple[str, str, bool]]:
    """Each command of a shell text with the separator after it, and whether what it prints goes on to
    another command (piped on, or substituted into one)."""
    pieces = _unescaped(PIECES.split(text))
    for at in range(0, len(pieces), 2):
        before = pieces[at - 1] if at else ""
        after = pieces[at + 1] if at + 1 < len(pieces) else ""
        # A pipeline's commands run side by side: what one is given, another may read.
        piped = (after.startswith("|") and after != "||") or (before.startswith("|") and before != "||")
        passed_on = piped or after == ">(" or before in _SUBSTITUTED
        yield pieces[at], after, passed_on


def _unescaped(pieces: list[str]) -> list[str]:
    """The pieces of a text (``PIECES``) with each separator a backslash escapes joined to the pieces on
    both sides: the shell reads it as a letter of a word (``cat x\\;ls ~/.ssh/id_rsa`` gives ``cat`` a
    word ``x;ls``, and the key)."""
    joined: list[str] = []
    command = pieces[:1]
    for separator, piece in zip(pieces[1::2], pieces[2::2], strict=True):
        if (len(command[-1]) - len(command[-1].rstrip("\\"))) % 2:
            command += (separator, piece)
        else:
            joined += ("".join(command), separator)
            command = [piece]
    return [*joined, "".join(command)]


def _blanked(text: str, tick: Callable[[], None], depth: int = 0) -> str:
    """The text with the words its commands only use blanked; a command's command (``sh -c``, an ssh
    command git runs) is read ``_DEEPEST`` deep, past that as written."""
    if depth > _DEEPEST:
        return text
    out: list[str] = []
    quoted = ""
    for piece, after, passed_on in command_pieces(text):
        tick()
        words = None if quoted or passed_on else _words(piece)
        spans = sorted(_unread(piece, words, tick, depth + 1)) if words is not None else []
        kept = 0
        for start, end, inner in spans:
            if start >= kept:
                out += (piece[kept:start], inner)
                kept = end
        out += (piece[kept:], after)
        quoted = _quote_after(piece + after, quoted)
    return "".join(out)


def _quote_after(text: str, quoted: str) -> str:
    """The quote open at the end of the text, from the one open at its start."""
    escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted != "'":
            escaped = True
        elif quoted and char == quoted:
            quoted = ""
        elif not quoted and char in "'\"":
            quoted = char
    return quoted


def _words(piece: str) -> list[_Word] | None:
    """The piece's words with where each stands and what it says unquoted, redirection operators as words
    of their own; None where a quote is left open (the piece starts or ends inside a string)."""
    words: list[_Word] = []
    at, size = 0, len(piece)
    while at < size:
        if piece[at] in " \t":
            at += 1
            continue
        if piece[at] in "<>":
            end = at
            while end < size and piece[end] in "<>&|":
                end += 1
            if words and words[-1].end == at and words[-1].value.isdigit():
                words.pop()
            words.append(_Word(at, end, piece[at:end], redirection=True))
            at = end
            continue
        start, value = at, []
        while at < size and piece[at] not in " \t<>":
            char = piece[at]
            if char == "\\":
                value.append(piece[at + 1 : at + 2])
                at += 2
            elif char in "'\"":
                close = _closing(piece, at)
                if close < 0:
                    return None
                inner = piece[at + 1 : close]
                value.append(inner if char == "'" else re.sub(r'\\([\\"$`])', r"\1", inner))
                at = close + 1
            else:
                value.append(char)
                at += 1
        words.append(_Word(start, min(at, size), "".join(value)))
    return words


def _closing(piece: str, at: int) -> int:
    quote, at = piece[at], at + 1
    while at < len(piece):
        if piece[at] == "\\" and quote == '"':
            at += 2
            continue
        if piece[at] == quote:
            return at
        at += 1
    return -1


def _unread(
    piece: str, words: list[_Word], tick: Callable[[], None], depth: int
) -> Iterator[tuple[int, int, str]]:
    """Spans of the piece to replace, each with what stands for it."""
    operands, redirections = _split_redirections(words)
    if redirections is None:
        return
    first = command_start([word.value for word in operands])
    if first is None:
        return
    for word in operands[:first]:
        yield from _command_value(piece, word, _SSH_COMMAND.match(word.value), tick, depth)
    name = known_name(operands[first].value) if first < len(operands) else None
    # A command named by a path may be any program (``./ls``): only one the shell looks up is known.
    if name is None:
        return
    arguments = operands[first + 1 :]
    if name in NAME_ONLY:
        # ``[[ k =~ (.*) ]]`` keeps what it matched in BASH_REMATCH, for a later command to read.
        if not redirections and not any(word.value == "=~" for word in arguments):
            yield from ((word.start, word.end, _BLANK) for word in arguments)
    elif name in _KEY_USERS:
        yield from _key_options(piece, name, arguments)
    elif name in _SHELLS and not redirections and arguments and _SHELL_C.fullmatch(arguments[0].value):
        yield from _inner_command(piece, arguments[1:], tick, depth)
    elif name == "git":
        yield from _git_settings(piece, arguments, tick, depth)
    elif name == "rsync":
        yield from _rsync_shell(piece, arguments, tick, depth)


def command_start(values: list[str]) -> int | None:
    """Where the command of a piece's words (without its redirections) is named, past the keywords,
    settings and ``_WRAPPERS`` before it (the words' count where none is): None where a wrapper's option
    may change what it runs."""
    at = 0
    while at < len(values):
        value = values[at]
        if value in _OPENERS or _ASSIGNMENT.match(value):
            at += 1
        elif value in _WRAPPERS:
            past = _past_options(values, at + 1, *_WRAPPERS[value])
            if past is None:
                return None
            at = past
        else:
            return at
    return at


def _past_options(values: list[str], at: int, flags: str, valued: str) -> int | None:
    while at < len(values) and values[at].startswith("-") and values[at] != "-":
        if values[at] == "--":
            return at + 1
        for offset, letter in enumerate(values[at][1:], start=1):
            if letter in valued:
                at += 0 if values[at][offset + 1 :] else 1
                break
            if letter not in flags:
                return None
        at += 1
    return at


def known_name(word: str) -> str | None:
    """The name of the command a word runs where the shell looks it up, or finds it in a system folder
    (``/usr/bin/ssh``): None for any other path (``./ls``, ``~/bin/ls``)."""
    if "/" not in word:
        return word
    system = _SYSTEM_PATH.match(word)
    return system[1] if system else None


def command_name(piece: str) -> str:
    """The name of the command a piece runs where it is known (``command_start``, ``known_name``) and its
    output goes nowhere but the standard streams: "" elsewhere."""
    words = _words(piece)
    if words is None:
        return ""
    operands, redirections = _split_redirections(words)
    values = [word.value for word in operands]
    first = command_start(values)
    if redirections is None or redirections or first is None or first == len(values):
        return ""
    return known_name(values[first]) or ""


def _split_redirections(words: list[_Word]) -> tuple[list[_Word], list[str] | None]:
    """The words that are not redirections, and where output is redirected to other than ``/dev/null``
    or the standard streams: None where that is a network path or another descriptor."""
    operands: list[_Word] = []
    targets: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if not word.redirection:
            operands.append(word)
            index += 1
            continue
        target = words[index + 1].value if index + 1 < len(words) else ""
        index += 2
        if ">" not in word.value:
            continue
        if word.value.endswith("&") and target not in ("1", "2", "-"):
            return operands, None
        if target not in ("/dev/null", "1", "2", "-"):
            targets.append(target)
    return operands, targets


def _key_options(piece: str, name: str, arguments: list[_Word]) -> Iterator[tuple[int, int, str]]:
    """The values of the options naming a key the command uses, up to its first operand: none where an
    option is not one it takes."""
    flags, valued, keys = _KEY_USERS[name]
    found: list[tuple[int, int, str]] = []
    index = 0
    destination = name != "ssh"
    while index < len(arguments):
        value = arguments[index].value
        if value == "--":
            break
        if not value.startswith("-") or value == "-":
            if destination:
                break
            # ssh reads options after its destination too, up to the command it runs there.
            destination = True
            index += 1
            continue
        for offset, letter in enumerate(value[1:], start=1):
            if letter in flags:
                continue
            if letter not in valued:
                return
            rest = value[offset + 1 :]
            word = arguments[index]
            raw = piece[word.start : word.end]
            if not rest:
                index += 1
                if index == len(arguments):
                    # A value left out is an error: the command runs nothing.
                    break
                word = arguments[index]
                rest, raw = word.value, piece[word.start : word.end]
            elif raw.startswith(value[: offset + 1]):
                raw = raw[offset + 1 :].replace("~", "\0")
            if (letter == "o" and _RUNNING_OPTION.match(rest)) or (
                letter == "F" and not _OWN_CONFIG.fullmatch(raw)
            ):
                return
            if letter in keys or (letter == "o" and _IDENTITY_OPTION.match(rest)):
                found.append((word.start, word.end, _BLANK))
            elif letter == "o" and rest.lower() == "identityfile" and index + 1 < len(arguments):
                # ``-o "IdentityFile k"`` with its quotes taken away, as a reading has it.
                index += 1
                found.append((arguments[index].start, arguments[index].end, _BLANK))
            break
        index += 1
    if name == "ssh-add" and all(not word.value.startswith("-") for word in arguments[index:]):
        # What ssh-add names past its options are keys it loads into the agent.
        found += [(word.start, word.end, _BLANK) for word in arguments[index:]]
    yield from found


def _command_value(
    piece: str, word: _Word, prefix: re.Match[str] | None, tick: Callable[[], None], depth: int
) -> Iterator[tuple[int, int, str]]:
    """A setting's value that is an ssh command (``GIT_SSH_COMMAND='ssh -i ~/.ssh/k'``), read as one."""
    if prefix is None:
        return
    raw = piece[word.start : word.end]
    head = raw[: raw.index("=") + 1]
    body = raw[len(head) :]
    if len(body) >= 2 and body[0] == body[-1] and body[0] in "'\"":
        inner = _blanked(body[1:-1], tick, depth)
        yield word.start, word.end, f"{head}{body[0]}{inner}{body[0]}"
    elif body and not any(char in body for char in "'\"\\"):
        yield word.start, word.end, head + _blanked(body, tick, depth)


def _inner_command(
    piece: str, arguments: list[_Word], tick: Callable[[], None], depth: int
) -> Iterator[tuple[int, int, str]]:
    """What ``sh -c`` runs: its quoted string read as a command, or, where the quotes were taken away, the
    words that follow (only the first of which the shell runs)."""
    if not arguments:
        return
    first = arguments[0]
    raw = piece[first.start : first.end]
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"" and len(arguments) == 1:
        yield first.start, first.end, raw[0] + _blanked(raw[1:-1], tick, depth) + raw[0]
    elif not any(char in raw for char in "'\"\\"):
        start, end = first.start, arguments[-1].end
        yield start, end, _blanked(piece[start:end], tick, depth)


def _git_settings(
    piece: str, arguments: list[_Word], tick: Callable[[], None], depth: int
) -> Iterator[tuple[int, int, str]]:
    """``git -c core.sshCommand=...``: the setting's value, read as the ssh command it is."""
    for option, setting in pairwise(arguments):
        if option.value == "-c":
            yield from _command_value(piece, setting, _SSH_COMMAND.match(setting.value), tick, depth)


def _rsync_shell(
    piece: str, arguments: list[_Word], tick: Callable[[], None], depth: int
) -> Iterator[tuple[int, int, str]]:
    """``rsync -e "ssh -i ..."`` (``--rsh``): the remote shell it runs, read as a command."""
    for option, value in pairwise(arguments):
        if option.value in ("-e", "--rsh"):
            yield from _inner_command(piece, [value], tick, depth)
    for option in arguments:
        if option.value.startswith("--rsh="):
            yield from _command_value(piece, option, re.match(r"--rsh=", option.value), tick, depth)
