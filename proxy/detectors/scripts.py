"""What the calls of a conversation leave for a later call to run, since the shell and the files of an agent
live on between its calls: files written (``credentials.written_files``), copied, moved or linked under
another name, files downloaded whose content the proxy never saw, and variables, aliases and functions
defined. A call is judged as the commands it runs with what the others left (``run_arguments``): ``bash
y.sh`` after ``cp x.sh y.sh`` after ``rm -rf ~`` was stored in ``x.sh``, ``rm -rf $T`` after ``export T=~``,
``del ~`` after ``alias del='rm -rf'``. Running a downloaded file is read as the download piped to a shell
(``curl URL | sh``), which is what it is, whether by its path, by its name alone where its folder is on
the shell's PATH, or through a pipe or a substitution however far along its line: the downloaded file's
name alone, hashed, listed or unpacked, is no run of it. What the shell runs of itself once a call set it
(a ``trap``, ``PROMPT_COMMAND``, the file ``BASH_ENV`` names, zsh's ``precmd``) is run by every later call,
and a name ``hash -p`` binds to a file runs the file.

What the calls left is gathered once for the conversation and looked up by the names a call uses, so
reading a conversation costs its length and judging a call its own and what it finds; both are charged
to the scan budget, and a call whose reading runs out of time runs what is not known (``run_arguments``
gives None).
"""

from __future__ import annotations

import bisect
import fnmatch
import functools
import itertools
import posixpath
import re
import shlex
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from proxy.detectors.commands import (
    command_strings,
    is_command_tool,
    masked_quotes,
    redirected_by_commands,
    shell_readings,
)
from proxy.detectors.credentials import with_ran, written_files
from proxy.exchange import ToolCall
from proxy.scanning.rulepack import ScanBudget

_MOST_PER_CALL = 32
"""Copies read of one call at most: a call's share of the walk stays bounded."""
_LONGEST_VALUE = 4096
"""Characters of a definition's value kept: the reading of its use stays bounded."""
_MOST_EXPANDED = 64 * 1024
"""Characters the uses of aliases and functions in one call may add to what it is judged as: past them
what it runs is not known in time, and it is judged out of time."""


@dataclass(frozen=True, slots=True)
class _Defined:
    variables: tuple[tuple[str, str], ...]
    """``NAME=value`` assignments, as written."""
    commands: tuple[tuple[str, str | None, bool, _Kind], ...]
    """Aliases and functions: their name, what they run (None where that was not read in time: a use of it
    is out of time), whether that takes the use's arguments in place of ``$1``, ``$@`` (a function) or
    after it (an alias), and what made it (``_Kind``), which tells what removes it."""
    hooks: tuple[tuple[str, str | None, bool], ...]
    """What the shell runs of itself in later calls (``_hooks``): the hook's key (``trap EXIT``), what it
    runs ("" for a hook reset, None where that is too long to read), and whether it adds to what the hook
    ran before (``add-zsh-hook``) rather than replacing it."""
    removed: tuple[tuple[_Kind, str], ...]
    """What the call removes of what the calls before it made (``_removals``): each kind of thing with its
    name, ``*`` for every one of that kind."""


class Leftovers:
    """What the calls of a conversation left, by name: files by the name of their path with what they hold
    and which calls wrote them (the first two, which tell whether any but a given one did), downloaded
    files with where from and the first call that stored them, and each variable's values and each
    alias's or function's definitions with the calls that made them, in the conversation's order.
    ``complete`` is False where the budget ran out before every call was read."""

    def __init__(self, conversation: Sequence[ToolCall]) -> None:
        self._conversation = conversation  # keeps the calls, whose identity tells their place
        self.place = {id(call): index for index, call in enumerate(conversation)}
        self.files: dict[str, dict[tuple[str, str], list[int]]] = {}
        self.downloads: dict[str, dict[tuple[str, str], int]] = {}
        self.variables: dict[str, list[tuple[int, int, str]]] = {}
        """By name: where it was made among all assignments, by which call, and the value."""
        self.commands: dict[str, list[tuple[int, str | None, bool, _Kind]]] = {}
        """By name: which call defined it, what it runs, whether it takes arguments and what made it
        (``_Kind.REMOVED`` where a call removed it)."""
        self.hooks: dict[str, list[tuple[int, str | None]]] = {}
        """By key (``_Defined.hooks``, a hook variable's name, ``function precmd``): which call set it and
        what it runs from then on, "" for nothing."""
        self.complete = True
        self._assigned = 0
        self._globbed: dict[tuple[int, str], list[str]] = {}

    def read(self, index: int, call: ToolCall) -> None:
        """What one call leaves, added: a file copied, moved or linked from one an earlier call (or this
        one) wrote or downloaded holds what that one holds."""
        written, fetched, copies, defined = _own(call.name, call.arguments)
        for path, content in written:
            self._wrote(path, content, index)
        for path, url in fetched:
            self.downloads.setdefault(_name(path), {}).setdefault((path, url), index)
        copied = [
            (target, content) for source, target in copies for _, content in self.files.get(_name(source), {})
        ]
        moved = [
            (target, url) for source, target in copies for _, url in self.downloads.get(_name(source), {})
        ]
        for target, content in copied:
            self._wrote(target, content, index)
        for target, url in moved:
            self.downloads.setdefault(_name(target), {}).setdefault((target, url), index)
        # What the call removes goes before what it defines: a name it both removes and defines stays.
        for kind, name in defined.removed:
            self._removed(kind, name, index)
        for name, value in defined.variables:
            made = self.variables.setdefault(name, [])
            # A value given again (``export PATH=~/bin:$PATH`` before each command) is the one in force
            # since it was first given: kept once, so that each use reads it once.
            if not made or made[-1][2] != value:
                made.append((self._assigned, index, value))
                self._assigned += 1
            reading = _HOOK_VARIABLES.get(name)
            if reading is not None:
                # ``PROMPT_COMMAND+='; x'`` keeps what it ran before: its value names the variable itself.
                run = reading(value) if len(value) <= _LONGEST_HOOK else None
                self._hooked(name, run, index, adds=bool(_variable_use(name).search(value)))
        for name, body, takes_arguments, made_by in defined.commands:
            self.commands.setdefault(name, []).append((index, body, takes_arguments, made_by))
            if name in _HOOK_FUNCTIONS:
                self._hooked(f"function {name}", name, index, adds=False)
        for key, text, adds in defined.hooks:
            self._hooked(key, text, index, adds=adds)

    def _removed(self, kind: _Kind, name: str, index: int) -> None:
        """A variable, function, alias or name ``hash`` keeps removed by the call ``index``, and the hook it
        made with it: a variable from then on is empty (``rm -rf "$T"/`` after ``unset T`` is ``rm -rf
        /``), the others run nothing. ``unset`` alone removes the function of the name where no variable
        of it was ever set, as bash does."""
        if kind in (_Kind.VARIABLE, _Kind.UNSET):
            was_set = bool(self.variables.get(name))
            made = self.variables.setdefault(name, [])
            if not made or made[-1][2] != "":
                made.append((self._assigned, index, ""))
                self._assigned += 1
            if name in _HOOK_VARIABLES:
                self._hooked(name, "", index, adds=False)
            if kind == _Kind.VARIABLE or was_set:
                return
            kind = _Kind.FUNCTION
        for removed in list(self.commands) if name == "*" else [name]:
            made_by = self.commands.get(removed, [])
            if made_by and made_by[-1][3] == kind:
                made_by.append((index, None, False, _Kind.REMOVED))
                if kind == _Kind.FUNCTION and removed in _HOOK_FUNCTIONS:
                    self._hooked(f"function {removed}", "", index, adds=False)

    def _hooked(self, key: str, text: str | None, index: int, *, adds: bool) -> None:
        made = self.hooks.setdefault(key, [])
        before = made[-1][1] if adds and made else ""
        text = _joined_hook([before, text] if before != "" else [text])
        if not made or made[-1][1] != text:
            made.append((index, text))

    def hooks_through(self, at: int) -> list[str] | None:
        """What the hooks in force at the end of the call ``at`` run (those it set itself among them: an
        ``EXIT`` or ``DEBUG`` trap fires in it), each hook's latest setting; None where one is too long to
        read. The hooks' keys are bounded (``_SIGNALS``, ``_HOOK_VARIABLES``, ``_HOOK_FUNCTIONS``), so a
        call looks up a bounded number of them."""
        run = []
        for made in self.hooks.values():
            before = bisect.bisect_right(made, at, key=lambda setting: setting[0])
            if before:
                text = made[before - 1][1]
                if text is None:
                    return None
                if text:
                    run.append(text)
        return run

    def _wrote(self, path: str, content: str, index: int) -> None:
        writers = self.files.setdefault(_name(path), {}).setdefault((path, content), [])
        if len(writers) < 2 and index not in writers:
            writers.append(index)

    def run_by(self, spelled: _Spelled, left: Mapping[str, object]) -> list[str]:
        """The names of ``left`` (the files or the downloads) the commands so spelled may run: those they
        spell, looked up, and those each of their globs matches, matched once for the conversation (every
        name where they give too many globs)."""
        if spelled.patterns is None:
            return list(left)
        found = dict.fromkeys(name for name in (*spelled.running, *spelled.commands) if name in left)
        for pattern in spelled.patterns:
            key = (id(left), pattern.pattern)
            if key not in self._globbed:
                self._globbed[key] = [name for name in left if pattern.fullmatch(name)]
            found |= dict.fromkeys(self._globbed[key])
        return list(found)

    def values_before(self, name: str, end: int) -> list[tuple[int, int, str]]:
        """The values the calls before the call ``end`` gave a variable, with where each was made."""
        made = self.variables.get(name, [])
        return made[: bisect.bisect_left(made, end, key=lambda assignment: assignment[1])]

    def value_before(self, name: str, end: int) -> str | None:
        """The value of a variable in force at the call ``end``: the latest one a call before it gave."""
        made = self.values_before(name, end)
        return made[-1][2] if made else None

    def definition_before(self, name: str, at: int) -> tuple[str | None, bool] | None:
        """The latest definition of an alias or function before the call ``at``: the one in force, as in a
        shell."""
        made = self.commands.get(name, [])
        before = bisect.bisect_left(made, at, key=lambda definition: definition[0])
        if not before or made[before - 1][3] == _Kind.REMOVED:
            return None
        return made[before - 1][1], made[before - 1][2]


def left_by(conversation: Sequence[ToolCall], budget: ScanBudget) -> Leftovers:
    """What the calls of the conversation left, read in its order on the budget with their characters'
    allowance: where it leaves no time to read them all, the leftovers are not ``complete``."""
    left = Leftovers(conversation)
    chars = sum(len(call.arguments) for call in conversation)
    if budget.spent_for(chars):
        left.complete = False
        return left
    # Read as a scan reads a text, on its characters' share of the budget.
    budget.allow(chars)
    with budget.metered() as meter:
        for index, call in enumerate(conversation):
            if meter.left() <= 0:
                left.complete = False
                break
            left.read(index, call)
    return left


def run_arguments(call: ToolCall, left: Leftovers, budget: ScanBudget) -> tuple[str, int] | None:
    """A command call's arguments with what it runs of what the conversation's other calls left (files the
    others wrote that it runs, a file downloaded before it or by it that it runs, the variables, aliases
    and functions of the calls before it that it uses), read as a command field of its; as they are where
    it runs none. With them, the characters of them the agent sent: its own, and each thing another call
    left once (what the uses of an alias or a function repeat of it is no more sent, so gives the scan
    budget no more time). None where that is not known in time: the leftovers are not complete, the
    budget ran out reading them, or the uses would add more than ``_MOST_EXPANDED``."""
    if not left.complete or budget.spent:
        return None
    with budget.metered() as meter:
        run = _what_runs(call, left)
        if meter.left() <= 0:
            return None
    return run


def _what_runs(call: ToolCall, left: Leftovers) -> tuple[str, int] | None:
    at = left.place.get(id(call), len(left.place))
    texts = list(command_strings(call.arguments))
    hooks = left.hooks_through(at)
    if hooks is None:
        return None
    # What the shell's hooks run, the call runs too: its commands and theirs are read as one.
    run = [*texts, *hooks]
    definitions: dict[str, _Definition | None] = {}

    def defined_before(name: str) -> _Definition | None:
        if name not in definitions:
            definitions[name] = left.definition_before(name, at)
        return definitions[name]

    uses = _uses([_without_removed_names(text) for text in run], defined_before, _defined_in(texts))
    if uses is None:
        return None
    # A file is run by what the aliases and functions used run too (``hash -p /tmp/x ls``, then ``ls``).
    spelled = _spellings([*run, *uses])
    ran = [
        (path, _commands_of(path, content))
        for name in left.run_by(spelled, left.files)
        for (path, content), writers in left.files[name].items()
        if writers != [at]
    ]
    downloads_named = [
        *_FILE_NAME.findall(call.arguments),
        *(name for text in [*hooks, *uses] for name in _FILE_NAME.findall(text)),
        *left.run_by(spelled, left.downloads),
    ]
    downloads = [
        (path, url)
        for name in dict.fromkeys(downloads_named)
        for (path, url), first in left.downloads.get(name, {}).items()
        if first <= at
    ]
    fetched = []
    if downloads:
        # The readings are made only for a call that names a downloaded file; destructive_entry reads them
        # again, from the cache, and charges them to the budget.
        runs = _runs(shell_readings(call.name, call.arguments))
        searched = _path_folders(left, at)
        fetched = [
            (path, f"curl {_plain(url)} | sh")
            for path, url in downloads
            if spelled.runs_file(_name(path))
            or _name(path) in runs.files
            or (
                (_name(path) in spelled.commands or _name(path) in runs.commands)
                and _on_path(_folder(path), searched)
            )
        ]
    word_uses = _word_uses([*run, *uses], lambda name: left.value_before(name, at))
    if word_uses is None:
        return None
    uses += word_uses
    # What the files it runs use of the variables is read too (``BASH_ENV`` naming one of ``rm -rf $T``).
    used = [call.arguments, *hooks, *uses, *(content for _, content in ran)]
    variables = _assignments("\n".join(used), left, at)
    # The call's own commands are read with what its uses run, so that what it assigns as it calls a
    # function (``X=~ scrub``) is what the function's body reads; the assignments before all of it.
    defined = [("", "\n".join([*variables, *run, *uses]))] if variables or hooks or uses else []
    everything = [*defined, *ran, *fetched]
    if not everything:
        return call.arguments, len(call.arguments)
    # Each definition a use runs was read (``_uses`` gives None for one that was not).
    bodies = [definition[0] or "" for definition in definitions.values() if definition is not None]
    sent = sum(len(text) for text in [call.arguments, *variables, *hooks, *bodies])
    sent += sum(len(content) for _, content in [*ran, *fetched])
    return with_ran(call.arguments, everything), sent


def _commands_of(path: str, content: str) -> str:
    """What a file a call runs holds as commands: a JSON file's strings one a line (``package.json``'s
    scripts, which ``npm run`` runs), any other file as written."""
    return "\n".join(command_strings(content)) if path.endswith(".json") else content


def _word_uses(texts: list[str], value: Callable[[str], str | None]) -> list[str] | None:
    """The texts read once for each word of a variable's value where it holds several (an array, ``read T
    <<< '/ ~'``, ``for T in / ~``): each use in its place as that word alone; ``${!N}`` as a use of the
    variable N names, ``"$@"`` and ``$1`` as what ``set --`` gave. ``value`` gives a variable's value in
    force, None where none was given. None past ``_MOST_EXPANDED`` characters."""
    room = _MOST_EXPANDED
    read: list[str] = []
    for original in texts:
        text = _INDIRECT.sub(lambda use: "${" + _named(value(use.group(1)) or "") + "}", original)
        if text != original:
            read.append(text)
        several = {
            name: given.split()
            for name in _used_names(text)
            if (given := value(name)) is not None and (given.split() != [given] or f"${{{name}[" in text)
        }
        positional = value("@")
        if positional is not None and (_POSITIONAL.search(text) or _ALL_POSITIONAL.search(text)):
            several["@"] = [positional]
        for name, words in several.items():
            use = _ALL_POSITIONAL if name == "@" else _variable_use(name)
            count = len(use.findall(text)) + (len(_POSITIONAL.findall(text)) if name == "@" else 0)
            readings = 1 + _shifts(text) if name == "@" else 1
            for word in words:
                room -= (len(text) + count * len(word)) * readings
                if room < 0:
                    return None
                read.append(_called(text, word) if name == "@" else use.sub(word.replace("\\", r"\\"), text))
    return read


_INDIRECT = re.compile(r"\$\{!([A-Za-z_]\w*)\}")


def _named(value: str) -> str:
    """The variable a value names, for ``${!N}``: itself where it is a name, else nothing known."""
    return value if _VARIABLE_NAME.fullmatch(value) else "_"


def _used_names(text: str) -> set[str]:
    return {first or second for first, second in _VARIABLE_USE.findall(text)}


@functools.lru_cache(maxsize=256)
def _variable_use(name: str) -> re.Pattern[str]:
    """A use of the variable: ``$T``, ``${T}``, ``${T[@]}``, ``${T[0]}``, quoted or not."""
    return re.compile(rf'"?\$(?:\{{{name}(?:\[[^]\n]*\])?\}}|{name}\b)"?')


def _assignments(arguments: str, left: Leftovers, at: int) -> list[str]:
    """The assignments of the variables the arguments use, and of those their values use in turn (``B=$A``),
    that the calls before ``at`` made, in the order they made them, each value quoted as one word."""
    made = {name: left.values_before(name, at) for name in _used_names(arguments)}
    for _ in range(2):
        more = {
            first or second
            for assignments in made.values()
            for _, _, value in assignments
            for first, second in _VARIABLE_USE.findall(value)
        }
        made |= {name: left.values_before(name, at) for name in more - made.keys()}
    ordered = sorted(
        (made_at, name, value) for name, assignments in made.items() for made_at, _, value in assignments
    )
    return list(dict.fromkeys(f"{name}={shlex.quote(value)}" for _, name, value in ordered))


_PATH_FOLDERS = frozenset(
    {"~/.local/bin", "~/bin", "~/go/bin", "~/.cargo/bin", "/usr/local/bin", "/usr/local/sbin", "/usr/bin",
     "/usr/sbin", "/bin", "/sbin", "/opt/homebrew/bin", "/snap/bin"}
)  # fmt: skip
"""Folders a shell's PATH holds as it starts, on the systems agents run on."""
_UNKNOWN_FOLDER = "$"
"""A PATH entry whose folder is not known (``$(go env GOPATH)/bin``): it may be any."""
_HOME_FOLDER = re.compile(r"^(?:\$\{?HOME\}?|/root|/home/[^/]+|/Users/[^/]+)(?=/|$)")
_HERE = re.compile(r"^(?:\$\{?PWD\}?|\.)(?:/|$)")


def _folder(path: str) -> str:
    """A path's folder, spelled as PATH entries are compared: the home folder as ``~``, the folder the
    shell is in as the empty string."""
    folder = _HERE.sub("", _HOME_FOLDER.sub("~", posixpath.dirname(path.rstrip("/"))))
    return folder.rstrip("/") if folder not in ("/", "") else folder


def _path_folders(left: Leftovers, at: int) -> frozenset[str]:
    """The folders a shell looks a command up in at the call ``at``: those it starts with, and each one
    that call or one before it put on PATH (``export PATH=~/.local/bin:$PATH``)."""
    return _PATH_FOLDERS | {
        _entry_folder(entry)
        for _, _, value in left.values_before("PATH", at + 1)
        for entry in value.split(":")
        if entry not in ("$PATH", "${PATH}")
    }


def _entry_folder(entry: str) -> str:
    folder = _folder(f"{entry}/x")
    return _UNKNOWN_FOLDER if _UNRESOLVED.search(folder) else folder


_UNRESOLVED = re.compile(r"[$`]")


def _on_path(folder: str, searched: frozenset[str]) -> bool:
    return folder in searched or _UNKNOWN_FOLDER in searched


_FILE_NAME = re.compile(r"[\w.+-]+")
_VARIABLE_USE = re.compile(r"\$\{([A-Za-z_]\w*)|\$([A-Za-z_]\w*)")
_NAME = re.compile(r"[\w.:+-]+")


def _name(path: str) -> str:
    return posixpath.basename(path.rstrip("/"))


def _plain(url: str) -> str:
    """A URL as one word of a command line."""
    return re.sub(r"[\s|;&]", "", url)[:256]


_Own = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...], tuple[tuple[str, str], ...], _Defined]
_CACHED_LONGEST = 8 * 1024
"""Characters of the longest arguments whose reading is kept for the next turns (at most some four times
as much: its files, values and bodies): what the cache holds stays some 20 MB however long the calls are,
and a longer call is read again each turn, in its time."""


def _own(name: str, arguments: str) -> _Own:
    """What one call writes, downloads, copies (each source with its target) and defines: the same short
    call in each turn's history is read once."""
    return _kept_own(name, arguments) if len(arguments) <= _CACHED_LONGEST else _read_own(name, arguments)


def _read_own(name: str, arguments: str) -> _Own:
    call = ToolCall(id="", name=name, arguments=arguments, where="")
    written = tuple(written_files([call]))
    if not is_command_tool(name):
        return written, (), (), _Defined((), (), (), ())
    texts = list(command_strings(arguments))
    downloads = _latest(
        [
            *(download for text in texts for download in _downloads(text)),
            *((path, url.group()) for path, content in written if (url := _fetched_by_code(content))),
        ]
    )
    copies = _first(copy for text in texts for copy in _copies(text))
    variables = _latest(setting for text in texts for setting in _settings(text))
    # A system command linked or copied under another name (``ln -s /bin/rm b/ls``) is that command where
    # the folder comes first on PATH: read as an alias of it wherever it is.
    linked = [
        (_name(target), (_name(source), False, _Kind.LINKED))
        for source, target in copies
        if _SYSTEM_COMMAND.fullmatch(source)
    ]
    commands = tuple(
        (name, *definition)
        for name, definition in _latest(
            [
                *(
                    (name, (body, takes_arguments, _Kind.FUNCTION if takes_arguments else _Kind.ALIAS))
                    for text in texts
                    for name, body, takes_arguments, _ in _definitions(text)
                ),
                *linked,
                *((name, (*bound, _Kind.HASHED)) for text in texts for name, bound in _hashed(text)),
            ]
        )
    )
    return written, downloads, copies, _Defined(variables, commands, _hooks(texts), _removals(texts))


class _Kind(StrEnum):
    """What made a name, or what a removal takes away (``UNSET``: ``unset`` alone, a variable, else a
    function)."""

    VARIABLE = "variable"
    UNSET = "unset"
    FUNCTION = "function"
    ALIAS = "alias"
    HASHED = "hashed"
    LINKED = "linked"
    REMOVED = "removed"


_REMOVER = re.compile(
    r"(?:^|[\n;&|(){}!]|\b(?:then|do|else|builtin|command)(?=[ \t]))[ \t]*"
    r"(unset|unfunction|unalias|hash)((?:[ \t]+[^\s;&|(){}]+)+)"
)


def _without_removed_names(text: str) -> str:
    """The text without the names a removal is given (``unset -f precmd``, ``unalias ls``, ``hash -d
    ls``): a name removed is no use of it. ``hash -p`` binds the names it is given and is kept, and so is
    any word but a name (``unset x`del```: what it expands runs)."""

    def removal(match: re.Match[str]) -> str:
        words = match.group(2).split()
        if match.group(1) == "hash" and any(_HASH_PATH.fullmatch(word) for word in words):
            return match.group(0)
        kept = [word for word in words if word[:1] == "-" or not _NAME.fullmatch(word)]
        return match.group(0)[: match.start(2) - match.start()] + "".join(f" {word}" for word in kept)

    return _REMOVER.sub(removal, text)


def _removals(texts: list[str]) -> tuple[tuple[_Kind, str], ...]:
    """What the texts' commands remove of what the shell holds, each kind with a name or ``*`` for all of
    it: a variable (``unset``, ``unset -v``), a function (``unset -f``, ``unfunction``), an alias
    (``unalias``, ``unalias -a``), a name ``hash -p`` bound (``hash -d``, ``hash -r``). Read only where
    the command starts a command outside quotes (``echo 'x; unset -f f'`` removes nothing), and not at all
    in a text whose quotes cannot be read: a removal not read keeps what may still run."""
    removed: list[tuple[_Kind, str]] = []
    for text in texts:
        masked = masked_quotes(text)
        for match in _REMOVER.finditer(masked or ""):
            command, words = match.group(1), _words_of(match.group(2))
            options = "".join(word[1:] for word in words if word[:1] == "-")
            names = [word for word in words if word[:1] != "-" and _NAME.fullmatch(word)]
            if command == "hash":
                kinds = [(_Kind.HASHED, "*")] if "r" in options else []
                removed += kinds + ([(_Kind.HASHED, name) for name in names] if "d" in options else [])
            elif command == "unalias":
                removed += [(_Kind.ALIAS, "*")] if "a" in options else [(_Kind.ALIAS, name) for name in names]
            else:
                kind = _Kind.FUNCTION if command == "unfunction" or "f" in options else _Kind.UNSET
                kind = _Kind.VARIABLE if kind == _Kind.UNSET and ("v" in options or "n" in options) else kind
                removed += [(kind, name) for name in names]
    return tuple(removed)


_SYSTEM_COMMAND = re.compile(r"(?:/usr)?(?:/local)?/s?bin/[\w.+-]+")

_LONGEST_HOOK = 4 * _LONGEST_VALUE
"""Characters of what a hook runs kept, added to again and again (``PROMPT_COMMAND+=``): past them what
it runs is not known in time, and each later call is out of time."""
_SIGNALS = frozenset(
    {"EXIT", "DEBUG", "ERR", "ZERR", "RETURN", "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "IOT", "BUS",
     "EMT", "FPE", "KILL", "USR1", "SEGV", "USR2", "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CLD", "CONT",
     "STOP", "TSTP", "TTIN", "TTOU", "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "POLL", "PWR",
     "INFO", "LOST", "SYS", "RTMIN", "RTMAX"}
)  # fmt: skip
"""The conditions a trap is set on, by name: any may fire in a later call (a signal the call sends itself,
``kill -USR1 $$``), so the trap of each is read as run by every later call."""
_REALTIME = re.compile(r"RTM(?:IN\+|AX-)(?:[1-9]|[12]\d|3[01])")
_UNKNOWN_SIGNAL = "?"
"""A trap's condition given by a variable or a substitution (``trap x $S``): it may be any."""
_TRAP = re.compile(
    r"""(?<![\w.-])['"\\]*t['"\\]*r['"\\]*a['"\\]*p['"]*"""
    r"""((?:[ \t]+(?:'[^']*'|"(?:[^"\\]|\\.)*+"|\\.|[^\s;&|'"\\)])+)+)"""
)
"""A ``trap`` command's words, however its name is quoted (``builtin trap``, ``'trap'``, ``t\\rap``): a
quoted body may hold separators and lines, and is read to the quote that closes it however far that is
(an opening quote with none after it reads to the text's end once: the next opening would close it)."""
_TRAP_LISTING = frozenset({"-l", "-p", "-P"})
_ZSH_HOOKS = frozenset({"chpwd", "periodic", "precmd", "preexec", "zshaddhistory", "zshexit"})
_ADD_ZSH_HOOK = re.compile(r"(?<![\w.-])add-zsh-hook((?:[ \t]+[^\s;&|)]+)+)")
_HASH = re.compile(r"(?<![\w.-])hash((?:[ \t]+[^\s;&|)]+)+)")
_HASH_PATH = re.compile(r"-[a-zA-Z]*p[a-zA-Z]*")


def _signal(word: str) -> str | None:
    """A trap's condition as one key for each spelling (``0``, ``EXIT``, ``SIGexit``), or None where it is
    none, which the shell refuses."""
    if _UNRESOLVED.search(word):
        return _UNKNOWN_SIGNAL
    name = word.upper().removeprefix("SIG")
    if name.isascii() and name.isdigit():
        number = int(name)
        return "EXIT" if number == 0 else str(number) if number <= 64 else None
    return name if name in _SIGNALS or _REALTIME.fullmatch(name) else None


def _traps(text: str) -> Iterator[tuple[str, str]]:
    """Each condition a ``trap`` sets (``trap -- 'x' EXIT ERR``), with what it then runs: "" where it is
    reset (``trap - EXIT``, ``trap EXIT``) or ignored (``trap '' INT``)."""
    for match in _TRAP.finditer(text):
        # An ANSI-C quoted body (``$'rm -rf ~'``) read as a quoted one.
        words = _words_of(match.group(1).replace("$'", "'"))
        if words[:1] == ["--"]:
            words = words[1:]
        if not words or words[0] in _TRAP_LISTING:
            continue
        body, conditions = ("", words[1:]) if words[0] == "-" or len(words) == 1 else (words[0], words[1:])
        if len(words) == 1:
            conditions = words
        for condition in conditions:
            key = _signal(condition)
            if key is not None:
                yield f"trap {key}", body


def _hooks(texts: list[str]) -> tuple[tuple[str, str | None, bool], ...]:
    """What a call sets the shell to run of itself later (``_Defined.hooks``): each trap at its latest,
    and the functions ``add-zsh-hook`` adds to a zsh hook, all of them."""
    traps: dict[str, str] = {}
    added: dict[str, list[str | None]] = {}
    for text in texts:
        for key, body in _traps(text):
            traps.pop(key, None)
            traps[key] = body
        for match in _ADD_ZSH_HOOK.finditer(text):
            words = _words_of(match.group(1))
            operands = [word for word in words if word[:1] != "-"]
            if len(operands) >= 2 and operands[0] in _ZSH_HOOKS and "-d" not in words and "-D" not in words:
                added.setdefault(f"{operands[0]}_functions", []).append(operands[1])
    return (
        *((key, body, False) for key, body in traps.items()),
        *((key, _joined_hook(names), True) for key, names in added.items()),
    )


def _joined_hook(texts: list[str | None]) -> str | None:
    """What a hook runs, of several: None where one is not known or all are past ``_LONGEST_HOOK``."""
    if None in texts or sum(len(text or "") for text in texts) > _LONGEST_HOOK:
        return None
    return "\n".join(text or "" for text in texts)


def _hashed(text: str) -> Iterator[tuple[str, tuple[str | None, bool]]]:
    """Each name ``hash -p`` binds to a file (``hash -p /tmp/x ls``: ``ls`` runs ``/tmp/x``), as an alias of
    the file's path, or of a system command's name (``hash -p /bin/rm ls``)."""
    for match in _HASH.finditer(text):
        words = _words_of(match.group(1))
        for position, word in enumerate(words[:-1]):
            if _HASH_PATH.fullmatch(word):
                path = words[position + 1]
                body = _name(path) if _SYSTEM_COMMAND.fullmatch(path) else path
                yield from ((name, (body, False)) for name in words[position + 2 :] if _NAME.fullmatch(name))
                break


def _run_whole_and_by_word(value: str) -> str:
    """What a hook variable of commands runs: its value as a command line, and each word of it as one (an
    array's elements: ``PROMPT_COMMAND=(a 'rm -rf ~')``, ``precmd_functions=(f g)``)."""
    return "\n".join([value, *_words_of(value)]) if value else ""


def _prompted(value: str) -> str:
    """What a prompt runs as it is shown: the substitutions in it (``PS1='$(x)'``)."""
    return f"echo {value}" if value else ""


def _sourced(value: str) -> str:
    """What a shell runs of a file a variable names as it starts (``BASH_ENV``, ``ENV``)."""
    return f". {value}" if value else ""


_HOOK_VARIABLES: dict[str, Callable[[str], str]] = {
    "PROMPT_COMMAND": _run_whole_and_by_word,
    **{f"{hook}_functions": _run_whole_and_by_word for hook in _ZSH_HOOKS},
    **{prompt: _prompted for prompt in ("PS0", "PS1", "PS2", "PS3", "PS4")},
    "BASH_ENV": _sourced,
    "ENV": _sourced,
}
"""Variables whose value the shell runs of itself, as what it runs: before each prompt, as it shows a
prompt, as a shell it starts starts."""
_HOOK_FUNCTIONS = frozenset(
    {
        *_ZSH_HOOKS,
        "command_not_found_handle",
        "command_not_found_handler",
        *(f"TRAP{name}" for name in _SIGNALS),
    }
)
"""Functions the shell calls of itself by their name: zsh's hooks and ``TRAPEXIT``-like traps, and what
runs in place of a command not found."""


def _latest[T](found: Iterable[tuple[str, T]]) -> tuple[tuple[str, T], ...]:
    """What a call's reading finds, each name (a variable's, a definition's, a download's path) at its
    latest: what the shell has at the call's end, however many names the call gives, in the order last
    given."""
    latest: dict[str, T] = {}
    for name, value in found:
        latest.pop(name, None)
        latest[name] = value
    return tuple(latest.items())


_kept_own = functools.lru_cache(maxsize=512)(_read_own)


def _first[T](found: Iterator[T]) -> tuple[T, ...]:
    """The first ``_MOST_PER_CALL`` copies a call's reading finds, the rest not looked for: a copy's target
    takes each content its source was given, and so many copies of a file written many times would
    make their product."""
    return tuple(itertools.islice(found, _MOST_PER_CALL))


_SEGMENT = re.compile(r"&&|\|\||[;\n|&(){}`]|\$\(")
_COPIER = re.compile(r"(?i)(?:cp|mv|install|ln|link|rsync|copy-item|move-item|copy|move|cpi|mi)$")
_COPIER_WORD = re.compile(
    r"(?i)(?<![\w-])(?:cp|mv|install|ln|link|rsync|copy-item|move-item|copy|move|cpi|mi|dd|tee)(?![\w-])"
)
"""A word that may name a copier: a segment without one is not split into words."""
_VALUED = frozenset({"-m", "--mode", "-o", "--owner", "-g", "--group", "-S", "--suffix", "-e"})
_CODE_COPY = re.compile(
    r"""(?i)\b(?:copy\w*|move\w*|rename\w*|replace|symlink\w*|link\w*|cp|mv|ln_s)[ \t]*\([ \t]*"""
    r"""['"]([^'"\n]{1,256})['"][ \t]*,[ \t]*['"]([^'"\n]{1,256})['"]"""
)


def _copies(text: str) -> Iterator[tuple[str, str]]:
    """Each file a copy, move or link makes from another (``cp x.sh y.sh``, ``git mv x y``, ``ln -s x y``,
    ``cat x > y``, ``cat < x > y``, ``tee y < x``, ``dd if=x of=y``, ``shutil.copy('x', 'y')``), as its source
    and its target (a folder's target named for its source)."""
    for segment in _SEGMENT.split(text):
        if not _COPIER_WORD.search(segment):
            continue
        words = _words(segment)
        if words[:1] in (["git"], ["busybox"]):
            words = words[1:]
        if len(words) >= 3 and _COPIER.match(posixpath.basename(words[0])):
            named = _operands(words[1:])
            *sources, target = named if len(named) >= 2 else ["", ""]
            for source in filter(None, sources):
                yield source, target + _name(source) if target.endswith("/") else target
        if words[:1] == ["dd"]:
            given = dict(word.partition("=")[::2] for word in words[1:])
            if given.get("if") and given.get("of"):
                yield given["if"], given["of"]
        if words[:1] == ["tee"]:
            for source in _INPUT.findall(segment):
                for target in _operands(words[1:]):
                    yield source, target
    for path, pipeline in redirected_by_commands(text):
        for word in _words(pipeline):
            yield word, path
    for match in _CODE_COPY.finditer(text):
        yield match.group(1), match.group(2)


_INPUT = re.compile(r"(?<![<\d])<(?![<(&])[ \t]*([^\s;&|<>()]+)")
"""A file a command reads as its input (``tee y < x``)."""


def _operands(words: list[str]) -> list[str]:
    """The words of a command that are no option, nor an option's value."""
    operands = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = word in _VALUED
        else:
            operands.append(word)
    return operands


def _words(segment: str) -> list[str]:
    """A command's words from its name on, past ``sudo``, ``env`` and assignments before it."""
    words = _words_of(segment)
    return list(
        itertools.dropwhile(
            lambda word: word in ("sudo", "env", "command", "exec", "nohup") or "=" in word, words
        )
    )


_FETCHER = re.compile(r"(?i)(?:curl|wget2?|fetch|aria2c|iwr|invoke-webrequest)$")
_FETCHER_WORD = re.compile(r"(?i)(?<![\w-])(?:curl|wget2?|fetch|aria2c|iwr|invoke-webrequest)(?![\w-])")
"""A word that may name a download command: a segment without one is not split into words."""
_NAMED_BY_URL = re.compile(r"(?i)(?:wget2?|fetch|aria2c)$")
"""Download commands that store what they fetch under the URL's last name unless told otherwise."""
_URL = re.compile(r"(?i)^(?:[a-z][\w+.-]*://|www\.)\S+")
_REMOTE_NAME = re.compile(r"-[a-zA-Z]*O[a-zA-Z]*|--remote-name(?:-all)?")
_OUTPUT = frozenset({"-o", "--output", "-O", "--output-document", "-outfile", "--out", "-out"})


def _downloads(text: str) -> Iterator[tuple[str, str]]:
    """Each file a download command stores (``curl -o x.sh URL``, ``curl -O URL``, ``wget URL``, ``wget -O x
    URL``, ``curl URL > x``, ``iwr URL -OutFile x``, ``urlretrieve(URL, 'x')``), with the URL."""
    for segment in _SEGMENT.split(text):
        if not _FETCHER_WORD.search(segment):
            continue
        words = _words(segment)
        if not words or not _FETCHER.match(posixpath.basename(words[0])):
            continue
        command = posixpath.basename(words[0])
        curl = command.lower() == "curl"
        url = next((word for word in words if _URL.match(word)), "")
        path = _downloaded_to(words, curl)
        by_url = _NAMED_BY_URL.match(command) or (
            curl and any(_REMOTE_NAME.fullmatch(word) for word in words)
        )
        if path is None and by_url:
            path = _name(url.split("?")[0].split("#")[0]) or "index.html"
        redirect = re.search(r"(?<![<>&\d])>>?[ \t]*([^\s;&|<>]+)", segment)
        if redirect is not None:
            path = redirect.group(1)
        if path and path != "-" and url:
            yield path, url
    for match in _RETRIEVED.finditer(text):
        yield match.group(2), match.group(1)


def _fetched_by_code(content: str) -> re.Match[str] | None:
    """The URL a file a command's code writes was fetched from, where the code fetches one (``urlopen``,
    ``fetch``, ``open('x.sh', 'w').write(requests.get(URL).text)``): what it holds is unseen."""
    return _URL_IN_CODE.search(content) if _FETCH_IN_CODE.search(content) else None


_FETCH_IN_CODE = re.compile(
    r"(?i)\b(?:urlopen|requests\.(?:get|post|request)|httpx\.\w+|fetch|axios(?:\.\w+)?|net::http\.\w+"
    r"|uri\.open|invoke-webrequest|download(?:string|file))[ \t]*\("
)
_URL_IN_CODE = re.compile(r"(?i)\b(?:https?|ftp)://[^\s'\"`)<>]+")
_RETRIEVED = re.compile(
    r"""(?i)\b(?:urlretrieve|download_?file|downloadfile)[ \t]*\([ \t]*['"]([^'"\n]{1,512})['"][ \t]*,"""
    r"""[ \t]*['"]([^'"\n]{1,256})['"]"""
)


def _downloaded_to(words: list[str], curl: bool) -> str | None:
    """Where a download command's options say it stores what it fetches, or None."""
    for word, following in zip(words, [*words[1:], ""], strict=True):
        option, equals, value = word.partition("=")
        if equals and option.lower() in _OUTPUT:
            return value
        if word.lower() in _OUTPUT and not (curl and word == "-O"):
            return following
        if curl and re.fullmatch(r"-[a-zA-Z]*o", word):
            return following
        if not curl and re.fullmatch(r"-[a-zA-Z]*O", word):
            return following
        if not curl and re.fullmatch(r"-[a-zA-Z]*O\S+", word):
            return word[word.index("O") + 1 :]
    return None


_RUNNER = (
    r"(?:(?:ba|da|z|k|fi|c|tc|a)?sh|python[\d.]*|perl|ruby|node|deno|bun|php|pwsh|powershell"
    r"|source|\.|exec|lua)"
)


_PATH_PART = r"[^\s;&|()`<>]*"
"""A path's directories: no run of them reaches past a command's separator, so that a search from each
separator reads no further than the next."""
_WORD = r"[^\s;&|()`<>]+"
_RUNNER_START = re.compile(
    rf"[ \t]*(?:sudo[ \t]+)?(?:{_PATH_PART}/)?{_RUNNER}(?=\s|$)(?:(?:[ \t]+-\S+)*[ \t]+<?[ \t]*({_WORD}))?"
)
_RUNNER_OR_EVAL = re.compile(rf"(?:{_RUNNER}|eval)\b")
_READ_IN = re.compile(rf"(?:\$\(|`)[ \t]*(?:cat[ \t]+|<[ \t]*)({_WORD})[ \t]*(?:\)|`)")
_PIPE = re.compile(r"(?<!\|)\|(?!\|)")
_FIRST_WORD = re.compile(r"[ \t]*(?:sudo[ \t]+)?([^\s;&|()`<>/]+)(?=\s|$)")


@dataclass(frozen=True, slots=True)
class _Runs:
    files: frozenset[str]
    """Names of the files the commands give to a shell or an interpreter."""
    commands: frozenset[str]
    """Names the commands run as commands, which the shell looks up in the folders of its PATH."""


def _runs(readings: str) -> _Runs:
    """What a call's commands run, read one a line in their readings (``commands.shell_readings``): a file
    given to a shell or an interpreter as its script or its input, piped to one from anywhere before it
    in its pipeline, or read into ``sh -c`` or ``eval`` anywhere after them on their line. Each part of
    the text is read once, so the cost is its length and no file stands too far from what runs it to be
    seen."""
    files: set[str] = set()
    commands: set[str] = set()
    for line in readings.splitlines():
        fed: list[str] = []  # what the pipeline gave since its last runner: those before it are in files
        for segment in _PIPE.split(line):
            runner = _RUNNER_START.match(segment)
            if runner is not None:
                files.update(fed)
                fed = []
                if runner.group(1):
                    files.add(_name(runner.group(1)))
            first = _FIRST_WORD.match(segment)
            if first is not None:
                commands.add(first.group(1))
            fed += [_name(word) for word in re.findall(_WORD, segment)]
        runner_or_eval = _RUNNER_OR_EVAL.search(line)
        if runner_or_eval is not None:
            files.update(_name(match.group(1)) for match in _READ_IN.finditer(line, runner_or_eval.end()))
    return _Runs(frozenset(files), frozenset(commands))


@dataclass(frozen=True, slots=True)
class _Spelled:
    """The files a call's commands may run, by how they spell them: what only reads, lists, hashes, copies or
    stages a file (``cat``, ``grep``, ``wc``, ``git add``) runs none of it."""

    running: frozenset[str]
    """Names run by their path (``./x.sh``), given to a pipeline that runs what it is given (a shell,
    ``source``, ``exec``, ``eval``, ``xargs``, ``find -exec``, a command spelled by a variable: ``$(which
    bash)``) or to an interpreter as its script, or given where a substitution may take what they hold;
    with their quotes and backslashes taken out (``bash x''.sh``), and a module's files for a name an
    interpreter is given (``python3 -m x``, ``import x``, ``node x``)."""
    commands: frozenset[str]
    """Names run as commands by their name alone (``x``), which the shell looks up in the folders of its
    PATH."""
    patterns: tuple[re.Pattern[str], ...] | None
    """Globs given to a pipeline that runs what it is given, a variable or a brace list standing for any
    text in them (``bash x.s?``, ``bash $F.sh``, ``bash {x,}.sh``), and the files a build or test command
    runs by their conventional names (``make``, ``npm run``, ``pytest``); None where there are more than
    ``_MOST_PATTERNS`` or one longer than ``_LONGEST_NAME``: every name may be one of them."""

    def runs(self, name: str) -> bool:
        """Whether the commands may run the file of this name, as a command of that name too."""
        return name in self.commands or self.runs_file(name)

    def runs_file(self, name: str) -> bool:
        """Whether the commands may run the file of this name otherwise than as a command looked up on
        PATH."""
        if name in self.running:
            return True
        return self.patterns is None or any(pattern.fullmatch(name) for pattern in self.patterns)


_MOST_PATTERNS = 64
_LONGEST_NAME = 255
"""The longest file name a file system takes: a longer glob is read as one that may be any name, not
matched."""
_PIPELINE = re.compile(r"&&|\|\||(?<![<>])&(?!>)|[;\n]")
_SHELL_WORD = re.compile(r"[^\s;&|()<>]+")
_STAGE_KEYWORDS = frozenset(
    {"if", "then", "else", "elif", "while", "until", "do", "!", "{", "time", "sudo", "env", "nohup", "nice",
     "command", "builtin", "timeout", "exec", "-"}
)  # fmt: skip
"""Words before a command's name that run it: what follows them is the command."""
_SHELLS = r"(?:ba|da|z|k|fi|c|tc|a)?sh|pwsh|powershell"
_RUNS_GIVEN = re.compile(rf"(?:{_SHELLS}|source|\.|eval|exec|xargs|parallel|watch|[$`].*)")
"""Commands that run the files or the text they are given, as a shell does, or whose name is not known
(``$(which bash)``, ``$SHELL``)."""
_RUNNING_WORD = re.compile(rf"(?:{_SHELLS}|-exec(?:dir)?|-ok(?:dir)?)")
"""Words that make a stage run what it names wherever they stand (``find -exec``, ``ssh host bash``)."""
_INTERPRETER = re.compile(r"(?:python[\d.]*|perl|ruby|node|deno|bun|php|lua)")
_MODULE_FILES = (".py", ".js", ".mjs", ".cjs", ".ts", ".rb", ".pl", ".pm", ".php", ".lua", "/__main__.py")
_CONVENTIONAL = {
    "make": ("Makefile", "makefile", "GNUmakefile", "*.mk"),
    "gmake": ("Makefile", "makefile", "GNUmakefile", "*.mk"),
    "npm": ("package.json",),
    "npx": ("package.json",),
    "yarn": ("package.json",),
    "pnpm": ("package.json",),
    "bun": ("package.json",),
    "pytest": ("conftest.py", "test_*.py", "*_test.py"),
    "py.test": ("conftest.py", "test_*.py", "*_test.py"),
    "tox": ("tox.ini", "conftest.py", "test_*.py"),
    "just": ("justfile", "Justfile", ".justfile"),
    "rake": ("Rakefile", "rakefile"),
    "task": ("Taskfile.yml", "Taskfile.yaml"),
    "git": ("pre-commit", "commit-msg", "prepare-commit-msg", "post-commit", "pre-push", "post-checkout",
            "post-merge"),
}  # fmt: skip
"""The files a build, test or version-control command runs without naming them."""


def _spellings(texts: list[str]) -> _Spelled:
    """How a call's commands name the files they may run (``_Spelled``), pipeline by pipeline: each word read
    once, so in time linear in the call."""
    running: set[str] = set(_STARTUP_FILES)
    commands_alone: set[str] = set()
    patterns: dict[str, None] = {}
    for text in texts:
        # A pipeline given again is read once; its words with their quotes and backslashes taken out.
        for pipeline in dict.fromkeys(_PIPELINE.split(text.translate(_UNQUOTED))):
            words = _SHELL_WORD.findall(pipeline)
            stages = (
                [_command_of(_SHELL_WORD.findall(stage)) for stage in pipeline.split("|")]
                if "|" in pipeline
                else [_command_of(words)]
            )
            commands = [stage.command for stage in stages]
            names = {_base(part) for word in words for part in (word, word.rpartition("=")[2])}
            running.update(stage.command for stage in stages if stage.by_path)
            commands_alone.update(stage.command for stage in stages if not stage.by_path)
            patterns.update(
                dict.fromkeys(glob for command in commands for glob in _CONVENTIONAL.get(command, ()))
            )
            interpreted = any(_INTERPRETER.fullmatch(command) for command in commands)
            if (
                any(_RUNS_GIVEN.fullmatch(command) for command in commands)
                or any(_RUNNING_WORD.fullmatch(word) for word in words)
                or _SUBSTITUTION.search(pipeline)
                or (interpreted and not _INLINE_CODE.intersection(words))
            ):
                running |= {name for name in names if not _GLOB.search(name)}
                # A variable alone may be any file: only where it is the command or what it is given first,
                # its script (``bash $F``), not in its code (``sh -c "cd $DIR && make"``).
                spelled = [name for name in names if not _WHOLE_VARIABLE.fullmatch(name)]
                spelled += [
                    word
                    for stage in stages
                    for word in (stage.command, stage.operand)
                    if word not in _SHELL_VARIABLES
                ]
                patterns.update(dict.fromkeys(word for word in spelled if _GLOB.search(word)))
            if interpreted:
                running |= {
                    module + ending
                    for name in names
                    for module in (name, name.rpartition(".")[2])
                    for ending in _MODULE_FILES
                }
    if len(patterns) > _MOST_PATTERNS or any(len(pattern) > _LONGEST_NAME for pattern in patterns):
        return _Spelled(frozenset(running), frozenset(commands_alone), None)
    compiled = tuple(re.compile(fnmatch.translate(_VARIABLE_PART.sub("*", pattern))) for pattern in patterns)
    return _Spelled(frozenset(running), frozenset(commands_alone), compiled)


_STARTUP_FILES = (".bashrc", ".bash_profile", ".bash_login", ".profile", ".zshenv", ".zprofile", ".zshrc")
"""Files a shell runs as it starts, which a command tool's shell may: each call may run them."""
_INLINE_CODE = frozenset({"-c", "-e", "--eval", "-E", "-p", "--print", "-r"})
"""An interpreter's options that give it its code inline: the files the code names are its data."""
_SHELL_VARIABLES = frozenset(
    {f"${name}" for name in ("HOME", "PATH", "PWD", "OLDPWD", "USER", "SHELL", "TMPDIR", "LANG", "TERM")}
)
"""Variables the shell itself sets, which name no file a call left."""
_GLOB = re.compile(r"[*?\[$`{]")
_WHOLE_VARIABLE = re.compile(r"\$\{[^}]*\}?|\$\w*|`[^`]*`?")
_VARIABLE_PART = re.compile(r"\$\{[^}]*\}?|\$\w*|`[^`]*`?|\{[^}]*\}?")
"""What in a word stands for text not known here: a variable, a substitution, a brace list."""
_SUBSTITUTION = re.compile(r"\$\(|`|<\(")
"""A substitution in a pipeline: what it reads of a file may be what the pipeline runs."""


class _Stage(NamedTuple):
    command: str
    """The name of the stage's command, past the words that run it (``if``, ``sudo``, ``time``, ``x=1``)."""
    operand: str
    """The first word it is given that is no option (a shell's or an interpreter's script)."""
    by_path: bool
    """Whether the command is run by its path (``./x.sh``), not looked up on PATH by its name."""


def _command_of(words: list[str]) -> _Stage:
    given = list(itertools.dropwhile(lambda word: word in _STAGE_KEYWORDS or _ASSIGNMENT.match(word), words))
    if not given:
        return _Stage("", "", False)
    operand = next((_base(word) for word in given[1:] if word[:1] != "-"), "")
    return _Stage(_base(given[0]), operand, "/" in given[0])


def _base(word: str) -> str:
    """A word's last name, as a path's: what it names of a file."""
    return word.rstrip("/").rpartition("/")[2]


_ASSIGNMENT = re.compile(r"[A-Za-z_]\w*\+?=")


_UNQUOTED = str.maketrans("", "", "\\'\"")
"""Quotes and backslashes, which a word's spelling takes out."""


_VARIABLE = re.compile(
    r"""(?:^|(?<=[\s;&|(]))(?:export[ \t]+|declare[ \t]+(?:-\w+[ \t]+)*|typeset[ \t]+|readonly[ \t]+)?"""
    r"""([A-Za-z_]\w*)(\[[^]\s]{0,64}\])?(\+?)="""
    r"""(\([^()\n]*\)|\$\([^()\n]*\)|`[^`\n]*`|'[^']*'|"[^"]*"|[^\s;&|'"`(]*)"""
)
"""An assignment: ``T=x``, ``T+=x``, ``T=(x y)``, ``T[1]=x``, ``T=$(x)``, after ``export``, ``declare -a`` and
so on; a quoted value over several lines too."""
_SETTER = re.compile(
    r"(?:^|(?<=[\s;&|(!{]))(?:(read|mapfile|readarray|for|select|getopts)|printf[ \t]+-v|(set)[ \t]+--?)"
    r"(?=[ \t])([^\n;&|)]*)"
)
"""A command that sets variables otherwise than by assigning them: ``read T``, ``mapfile -t T``, ``for T in
x``, ``printf -v T``, ``getopts o T``, and ``set -- x``, which sets the positional parameters."""
_ALIAS = re.compile(r"""\balias((?:[ \t]+(?:'[^'\n]*'|"(?:\\.|[^"\\\n])*"|\\.|[^\s;&|'"\\])+)+)""")
"""An ``alias`` command's words: each ``name=value`` of them defines one (``alias -- a=ls b='rm -rf'``)."""
_FUNCTION = re.compile(
    r"(?:\bfunction[ \t]+([\w.:+-]+)[ \t]*(?:\([ \t]*\))?|(?<![\w.:+-])([\w.:+-]+)[ \t]*\([ \t]*\))"
    r"(?:\s*([{])|[ \t]*([(])|[ \t]*(?=(?:if|for|while|until|case|select)\b|\[\[))"
)
"""A function's definition up to its body, a compound command: braces (from the next line on, too), a
subshell, or ``if``, a loop, ``case``, ``[[``."""
_CLOSING = {"{": "}", "(": ")"}
_KEYWORD = re.compile(r"\b(?:(if|for|while|until|case|select)|(fi|done|esac))\b|(\[\[)|(\]\])")


def _value(value: str) -> str:
    return value[1:-1] if value[:1] in "'\"" and value[-1:] == value[:1] and len(value) > 1 else value


def _settings(text: str) -> list[tuple[str, str]]:
    """Each variable the text sets with its latest value: an array's, or what a command that sets it
    otherwise is given (``read T <<< /``, ``for T in / ~``), as its words one after another, for each of
    which a use is read (``_word_uses``); ``+=`` adds to the value the text gave before (up to
    ``_LONGEST_VALUE``). ``set --`` sets ``@``."""
    given: dict[str, str] = {}

    def give(name: str, value: str) -> None:
        given.pop(name, None)
        given[name] = value

    for match in _VARIABLE.finditer(text):
        name, element, adds, value = match.groups()
        listed = value[:1] == "("
        value = value[1:-1] if listed else _value(value)
        if element:
            # An element set is read as one added, a word of its own, whole (``PROMPT_COMMAND[1]='x y'``).
            value = shlex.quote(value) if any(char.isspace() for char in value) else value
        if adds or element:
            joint = " " if listed or element else ""
            value = (given.get(name, f"${{{name}}}") + joint + value)[:_LONGEST_VALUE]
        give(name, value)
    for match in _SETTER.finditer(text):
        words = _words_of(match.group(3))
        if match.group(2):
            give("@", " ".join(words))
            continue
        operands = [word for word in words if word[:1] != "-" and word not in ("in", "<<<", "<")]
        leading = list(itertools.takewhile(_VARIABLE_NAME.fullmatch, operands))
        # ``read A B`` sets each name it is given; the others set one: getopts its second word, the rest
        # their first.
        names = set(
            leading
            if match.group(1) == "read"
            else operands[1:2]
            if match.group(1) == "getopts"
            else operands[:1]
        )
        values = " ".join(word for word in operands if word not in names)
        # A loop over a function's arguments (``for d in "$@"``) takes its values where it is called.
        if not _ALL_POSITIONAL.search(values):
            for name in names:
                give(name, values)
    return list(given.items())


_VARIABLE_NAME = re.compile(r"[A-Za-z_]\w*")


def _definitions(text: str) -> Iterator[tuple[str, str | None, bool, int]]:
    """Each alias and function the text defines, with where its definition ends. Bodies nested in one
    another, or left open, are read over again for each: past as many characters as the text has and one
    body more, what the next ones hold is not read (None), so that a crafted text of nested openings costs
    its length, not its length times ``_LONGEST_VALUE``, and its functions' uses are out of time."""
    for match in _ALIAS.finditer(text):
        for word in _words_of(match.group(1)):
            name, equals, value = word.partition("=")
            if equals and _NAME.fullmatch(name):
                yield name, value[:_LONGEST_VALUE], False, match.end()
    room = len(text) + _LONGEST_VALUE
    for match in _FUNCTION.finditer(text):
        name, opening = match.group(1) or match.group(2), match.group(3) or match.group(4)
        if room <= 0:
            yield name, None, True, match.end()
            continue
        body = _body(text, match.end(), opening) if opening else _compound(text, match.end())
        room -= len(body)
        yield name, body, True, match.end() + len(body)


_Definition = tuple[str | None, bool]
"""What an alias or a function runs (None where that was not read in time), and whether it takes a use's
arguments in place of its positional parameters (a function)."""
_DefinedIn = dict[str, list[tuple[tuple[int, int], _Definition]]]
"""A call's own definitions by name, each with where it ends (which of the call's texts, and where in
it), in that order."""


def _defined_in(texts: list[str]) -> _DefinedIn:
    """The aliases and functions the texts define, each in force from where its definition ends. One
    defined in a subshell or a function's body is read as defined there, for all that follows."""
    defined: _DefinedIn = {}
    for index, text in enumerate(texts):
        for name, body, takes_arguments, end in _definitions(text):
            defined.setdefault(name, []).append(((index, end), (body, takes_arguments)))
    for made in defined.values():
        made.sort(key=lambda definition: definition[0])
    return defined


def _words_of(text: str) -> list[str]:
    """A command's words as the shell gives them, its quotes and backslashes taken out."""
    try:
        return shlex.split(text, comments=True)
    except ValueError:
        return text.split()


def _body(text: str, start: int, opening: str) -> str:
    """What a function's braces or brackets hold, from after the opening one to the one that closes it (or
    as far as the text, or ``_LONGEST_VALUE``, goes)."""
    depth = 1
    steps = {opening: 1, _CLOSING[opening]: -1}
    for at in range(start, min(len(text), start + _LONGEST_VALUE)):
        depth += steps.get(text[at], 0)
        if depth == 0:
            return text[start:at]
    return text[start : start + _LONGEST_VALUE]


def _compound(text: str, start: int) -> str:
    """A function's body that is an ``if``, a loop, a ``case`` or a ``[[``: up to the ``fi``, ``done``,
    ``esac`` or ``]]`` that closes it (or as far as the text, or ``_LONGEST_VALUE``, goes)."""
    window = text[start : start + _LONGEST_VALUE]
    depth = 0
    for keyword in _KEYWORD.finditer(window):
        depth += 1 if keyword.group(1) or keyword.group(3) else -1
        if depth <= 0:
            return window[: keyword.end()]
    return window


_COMMAND_WORD = re.compile(r"(?<![^\s;&|(){}`!'\"\\])[\w.:+-]+['\"]?(?=[\s;&|)`}'\"]|$)(?P<rest>[^\n;&|)`]*)")
"""A word where it may be a command's name, wherever it stands (after ``if``, ``!``, ``{``, ``time``,
``x=1``, ``command``, ``xargs``, quoted or not), with the rest of its command: matched where a word of
``_NAME`` starts, it is that word whole. Where a shell would run it as a command is not worked out, every
such word of a name is read as a use."""


def _uses(
    texts: list[str], earlier: Callable[[str], _Definition | None], own: _DefinedIn
) -> list[str] | None:
    """Each use of an alias or a function in the texts as what it runs, each different use once: the alias's
    value before the use's arguments, the function's body with them in place of its positional
    parameters. What runs is the definition in force where the use stands: the latest of the call's own
    (``own``, a text after the call's commands, a hook, after all of them), else the one an earlier call
    made (``earlier``). None where they would add more than ``_MOST_EXPANDED`` characters (a use repeats
    its definition, and a crafted call's uses could make many times its length), or where what one runs
    was not read. What a use runs is read for uses in turn (a function whose body calls another), with
    every definition of the call in force; a function's uses of itself are its body again, read once. The
    words of each text are looked up once, so the reading is linear in its length however many names are
    defined."""
    room = _MOST_EXPANDED
    uses: dict[tuple[str, str, str], str] = {}
    read = [(text, "") for text in texts]
    for index, (text, running) in enumerate(read):
        places: dict[str, list[int]] = {}
        for word in _NAME.finditer(text):
            name = word.group()
            if name != running and (name in own or earlier(name) is not None):
                places.setdefault(name, []).append(word.start())
        for name, starts in places.items():
            made = own.get(name, [])
            end = 0
            for start in starts:
                match = _COMMAND_WORD.match(text, start) if start >= end else None
                if match is None:
                    continue
                # A use's arguments hold no other use of the same name (``d d d``): read with the first.
                end = match.end()
                before = bisect.bisect_right(made, (index, start), key=lambda definition: definition[0])
                definition = made[before - 1][1] if before else earlier(name)
                if definition is None:
                    continue
                body, takes_arguments = definition
                if body is None:
                    return None
                rest = match.group("rest").strip()
                if (name, body, rest) in uses:
                    continue
                positional = (
                    len(_POSITIONAL.findall(body)) + len(_ALL_POSITIONAL.findall(body))
                    if takes_arguments
                    else 1
                )
                readings = 1 + _shifts(body) if takes_arguments else 1
                room -= (len(body) + len(rest) * positional) * readings
                if room < 0:
                    return None
                uses[name, body, rest] = _called(body, rest) if takes_arguments else f"{body} {rest}"
                read.append((uses[name, body, rest], name))
    return list(uses.values())


def _called(body: str, rest: str) -> str:
    """A function's body with a call's arguments in place of its positional parameters: read as given, and
    again after each ``shift`` it makes (``shift; rm -rf "$1"``), where in the body it stands not worked
    out."""
    words = rest.split()
    return "\n".join(_filled(body, words, rest, shifted) for shifted in range(_shifts(body) + 1))


def _filled(body: str, words: list[str], rest: str, shifted: int) -> str:
    given = ["", *words[shifted : shifted + 9]] + [""] * 9
    filled = _POSITIONAL.sub(lambda number: given[int(number.group(1))], body)
    return _ALL_POSITIONAL.sub(lambda _: " ".join(words[shifted:]) if shifted else rest, filled)


def _shifts(body: str) -> int:
    """How far the ``shift`` commands of a body move its positional parameters, up to ``_MOST_SHIFTED``."""
    total = 0
    for match in _SHIFT.finditer(body):
        total += int(match.group(1) or 1)
        if total >= _MOST_SHIFTED:
            return _MOST_SHIFTED
    return total


_SHIFT = re.compile(r"(?<![\w.-])shift(?:[ \t]+([1-9]))?(?![\w.-])")
_MOST_SHIFTED = 9
"""Shifts read at most: each is one more reading of the body."""
_POSITIONAL = re.compile(r'"?\$\{?([1-9])\}?"?')
_ALL_POSITIONAL = re.compile(r'"?\$\{?[@*]\}?"?')
