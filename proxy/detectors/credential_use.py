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

import re
from collections.abc import Iterator
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
    "ssh": ("46AaCfGgKkMNnqsTtVvXxYy", "BbcDEeiJLlmOoPpQRSWw", "i"),
    "scp": ("12346ABCTdfOpqRrstv", "JPcilXo", "i"),
    "sftp": ("1246AafhNpqrvC", "cilosBJPRX", "i"),
    "ssh-keygen": ("ABKLQUXceghklopquvy", "CEINOPVZabfmnrstz", "fs"),
    "ssh-add": ("cCDdKkLlqvXx", "EHhTt", ""),
}
# ``-o`` settings that run a command or load code, or read more settings that may.
_RUNNING_OPTION = re.compile(
    r"(?i)^\s*(?:proxycommand|localcommand|permitlocalcommand|knownhostscommand|pkcs11provider"
    r"|securitykeyprovider|match|include|proxyjump|controlmaster|controlpath)(?![a-z])"
)
_SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh"})
# An interactive or login shell (``-i``, ``-l``) first runs rc files that may rebind any command.
_SHELL_C = re.compile(r"-[exuv]*c[exuv]*")
# Words that run the command after them unchanged, and shell keywords that open one (not ``nohup``,
# which may write what it prints to nohup.out).
_PREFIXES = frozenset(
    {"sudo", "doas", "env", "command", "builtin", "exec", "time", "nice", "if", "then", "elif",
     "else", "while", "until", "do", "!", "{", "export"}
)  # fmt: skip
# Variables and git settings whose value is an ssh command git or rsync runs.
_SSH_COMMAND = re.compile(r"(?i)^(?:GIT_SSH_COMMAND|RSYNC_RSH|core\.sshCommand)=")
_IDENTITY_OPTION = re.compile(r"(?i)^identityfile(?:[ \t]*=[ \t]*|[ \t]+)\S+$")
_ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")
# A text that could make a command's name run something else (a function, alias or PATH of its own, a
# file written under the name of one of these commands), send its output to the network as a whole, or
# hand what it was given to another command.
_REBINDING = re.compile(
    r"(?i)\b(?:alias|unalias|function|def|sub|proc|define_method|hash|enable|BASH_ENV|PATH)\b|(?-i:\bENV=)|\w\s*\(\s*\)"
    r"|/dev/(?:tcp|udp)/|\bexec\s*\d*\s*[<>]|\b(?:coproc|trap|history|fc|eval|source|shopt)\b"
    # A file of the shell's own run (``. ./env.sh``), or a variable named by an expansion
    # (``export PA${x}TH=...``).
    r"|(?:^|[;&|({\n]|\b(?:then|do|else|exec|command|builtin)\s)\s*\.\s"
    r"|\b(?:export|declare|typeset|local|readonly|read|readarray|mapfile|getopts|let|printf)\b[^;&|\n]*\$"
    # An ssh command's setting read back (``cat ${GIT_SSH_COMMAND#ssh -i }``, ``printenv``).
    r"|\$\{?(?:GIT_SSH_COMMAND|RSYNC_RSH)\b|\$\{!|\b(?:printenv|compgen)\b"
    r"|\b(?:declare|typeset|export|readonly)\s+-\w*p|\b(?:env|set)\s*(?:$|[;&|>)\n])"
    # Commands that run alongside one another: one may read another's arguments from the process table.
    r"|(?<![<>&])&(?![&>])|[<>]\("
    # What a command was given, taken up by the next one: ``ls k; cat $_``, ``[[ k =~ (.*) ]]``.
    r"|\$\{?_\b|\bBASH_(?:REMATCH|COMMAND|ARGV)\b"
    r"|/(?:"
    + "|".join(sorted(re.escape(name) for name in {*NAME_ONLY, *_KEY_USERS, *_SHELLS, "git", "rsync"}))
    + r")(?![\w./-])"
)
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
_HIDING = re.compile(r"""[\\'"]|\$\{[^{}]*\}|\$\w+""")
_SUBSTITUTED = frozenset({"$(", "`", "<(", ">("})
_BLANK = "_"
_DEEPEST = 3


class _Word(NamedTuple):
    start: int
    end: int
    value: str
    redirection: bool = False


def unread_names(text: str) -> str:
    """The text with each word that names a file its command only uses (an identity, a key to load, a
    name to test, list or change the mode of) blanked out: what the credential rules read of a command."""
    return _blanked(text) if text and commands_certain(text) else text


def commands_certain(text: str) -> bool:
    """Whether each command of the text is the one its name says and its output goes where its piece
    says: no function, alias or ``PATH`` of the text's own, nothing sent to the network as a whole, no
    group, loop or condition whose output is piped on or written to a file, no command run alongside
    another."""
    # Quotes, backslashes and expansions hide a name from a reading but not from the shell
    # (``al''ias``, ``PA\\TH=``, ``PA${x}TH=``).
    text = _AGENT_EVAL.sub("", text)
    if _REBINDING.search(text) or _REBINDING.search(_HIDING.sub("", text)):
        return False
    pieces = PIECES.split(text)
    for at in range(0, len(pieces), 2):
        after = pieces[at + 1] if at + 1 < len(pieces) else ""
        group_end = (at and pieces[at - 1] == ")") or _GROUP_END.match(pieces[at])
        if group_end and ((after.startswith("|") and after != "||") or _redirected_out(pieces[at])):
            return False
    return True


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
    pieces = PIECES.split(text)
    for at in range(0, len(pieces), 2):
        before = pieces[at - 1] if at else ""
        after = pieces[at + 1] if at + 1 < len(pieces) else ""
        # A pipeline's commands run side by side: what one is given, another may read.
        piped = (after.startswith("|") and after != "||") or (before.startswith("|") and before != "||")
        passed_on = piped or after == ">(" or before in _SUBSTITUTED
        yield pieces[at], after, passed_on


def _blanked(text: str, depth: int = 0) -> str:
    """The text with the words its commands only use blanked; a command's command (``sh -c``, an ssh
    command git runs) is read ``_DEEPEST`` deep, past that as written."""
    if depth > _DEEPEST:
        return text
    out: list[str] = []
    quoted = ""
    for piece, after, passed_on in command_pieces(text):
        words = None if quoted or passed_on else _words(piece)
        spans = sorted(_unread(piece, words, depth + 1)) if words is not None else []
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


def _unread(piece: str, words: list[_Word], depth: int) -> Iterator[tuple[int, int, str]]:
    """Spans of the piece to replace, each with what stands for it."""
    operands, redirections = _split_redirections(words)
    if redirections is None:
        return
    first = 0
    while first < len(operands) and (
        operands[first].value in _PREFIXES or _ASSIGNMENT.match(operands[first].value)
    ):
        word = operands[first]
        yield from _command_value(piece, word, _SSH_COMMAND.match(word.value), depth)
        first += 1
    # A command named by a path may be any program (``./ls``): only one the shell looks up is known.
    if first == len(operands) or "/" in operands[first].value:
        return
    name = operands[first].value
    arguments = operands[first + 1 :]
    if name in NAME_ONLY:
        if not redirections:
            yield from ((word.start, word.end, _BLANK) for word in arguments)
    elif name in _KEY_USERS:
        yield from _key_options(name, arguments)
    elif name in _SHELLS and not redirections and arguments and _SHELL_C.fullmatch(arguments[0].value):
        yield from _inner_command(piece, arguments[1:], depth)
    elif name == "git":
        yield from _git_settings(piece, arguments, depth)
    elif name == "rsync":
        yield from _rsync_shell(piece, arguments, depth)


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


def _key_options(name: str, arguments: list[_Word]) -> Iterator[tuple[int, int, str]]:
    """The values of the options naming a key the command uses, up to its first operand: none where an
    option is not one it takes."""
    flags, valued, keys = _KEY_USERS[name]
    found: list[tuple[int, int, str]] = []
    index = 0
    while index < len(arguments):
        value = arguments[index].value
        if value == "--" or not value.startswith("-") or value == "-":
            break
        for offset, letter in enumerate(value[1:], start=1):
            if letter in flags:
                continue
            if letter not in valued:
                return
            rest = value[offset + 1 :]
            if not rest:
                index += 1
                if index == len(arguments):
                    # A value left out is an error: the command runs nothing.
                    break
                rest = arguments[index].value
                word = arguments[index]
            else:
                word = arguments[index]
            if letter == "o" and _RUNNING_OPTION.match(rest):
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
    piece: str, word: _Word, prefix: re.Match[str] | None, depth: int
) -> Iterator[tuple[int, int, str]]:
    """A setting's value that is an ssh command (``GIT_SSH_COMMAND='ssh -i ~/.ssh/k'``), read as one."""
    if prefix is None:
        return
    raw = piece[word.start : word.end]
    head = raw[: raw.index("=") + 1]
    body = raw[len(head) :]
    if len(body) >= 2 and body[0] == body[-1] and body[0] in "'\"":
        inner = _blanked(body[1:-1], depth)
        yield word.start, word.end, f"{head}{body[0]}{inner}{body[0]}"
    elif body and not any(char in body for char in "'\"\\"):
        yield word.start, word.end, head + _blanked(body, depth)


def _inner_command(piece: str, arguments: list[_Word], depth: int) -> Iterator[tuple[int, int, str]]:
    """What ``sh -c`` runs: its quoted string read as a command, or, where the quotes were taken away, the
    words that follow (only the first of which the shell runs)."""
    if not arguments:
        return
    first = arguments[0]
    raw = piece[first.start : first.end]
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"" and len(arguments) == 1:
        yield first.start, first.end, raw[0] + _blanked(raw[1:-1], depth) + raw[0]
    elif not any(char in raw for char in "'\"\\"):
        start, end = first.start, arguments[-1].end
        yield start, end, _blanked(piece[start:end], depth)


def _git_settings(piece: str, arguments: list[_Word], depth: int) -> Iterator[tuple[int, int, str]]:
    """``git -c core.sshCommand=...``: the setting's value, read as the ssh command it is."""
    for option, setting in pairwise(arguments):
        if option.value == "-c":
            yield from _command_value(piece, setting, _SSH_COMMAND.match(setting.value), depth)


def _rsync_shell(piece: str, arguments: list[_Word], depth: int) -> Iterator[tuple[int, int, str]]:
    """``rsync -e "ssh -i ..."`` (``--rsh``): the remote shell it runs, read as a command."""
    for option, value in pairwise(arguments):
        if option.value in ("-e", "--rsh"):
            yield from _inner_command(piece, [value], depth)
    for option in arguments:
        if option.value.startswith("--rsh="):
            yield from _command_value(piece, option, re.match(r"--rsh=", option.value), depth)
