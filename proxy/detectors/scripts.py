"""What the calls of a conversation leave for a later call to run, since the shell and the files of an agent
live on between its calls: files written (``credentials.written_files``), copied, moved or linked under
another name, files downloaded whose content the proxy never saw, and variables, aliases and functions
defined. A call is judged as the commands it runs with what the others left (``run_arguments``): ``bash
y.sh`` after ``cp x.sh y.sh`` after ``rm -rf ~`` was stored in ``x.sh``, ``rm -rf $T`` after ``export T=~``,
``del ~`` after ``alias del='rm -rf'``. Running a downloaded file is read as the download piped to a shell
(``curl URL | sh``), which is what it is: the downloaded file's name alone, hashed, listed or unpacked,
is no run of it.
"""

from __future__ import annotations

import functools
import itertools
import posixpath
import re
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from proxy.detectors.commands import command_strings, is_command_tool, redirected_by_commands, shell_readings
from proxy.detectors.credentials import ran_files, with_ran, written_files
from proxy.exchange import ToolCall

_MOST_PER_CALL = 32
"""Copies, downloads and definitions read of one call at most: a call's share of the walk stays bounded."""
_LONGEST_VALUE = 4096
_MOST_USES = 8
"""Uses of one alias or function in a text read as what they run: the definition is read at the first
ones, and a call repeating a use need not be read once more for each."""
"""Characters of a definition's value kept: the reading of its use stays bounded."""


@dataclass(frozen=True, slots=True)
class _Defined:
    variables: tuple[tuple[str, str], ...]
    """``NAME=value`` assignments, as written."""
    commands: tuple[tuple[str, str, bool], ...]
    """Aliases and functions: their name, what they run, and whether that takes the use's arguments in
    place of ``$1``, ``$@`` (a function) or after it (an alias)."""


@dataclass(frozen=True, slots=True)
class Left:
    """What one call of the conversation left: files by their path with what they hold, downloaded files
    by their path with where from, and what it defined."""

    files: tuple[tuple[str, str], ...]
    downloads: tuple[tuple[str, str], ...]
    defined: _Defined


def left_by(conversation: Sequence[ToolCall]) -> list[Left]:
    """What each call of the conversation left, in its order: a file copied, moved or linked from one an
    earlier call (or the same) wrote or downloaded holds what that one holds."""
    left: list[Left] = []
    files: dict[str, list[str]] = {}
    downloads: dict[str, list[str]] = {}
    for call in conversation:
        written, fetched, copies, defined = _own(call.name, call.arguments)
        for path, content in written:
            files.setdefault(_name(path), []).append(content)
        for path, url in fetched:
            downloads.setdefault(_name(path), []).append(url)
        copied = [(target, content) for source, target in copies for content in files.get(_name(source), ())]
        moved = [(target, url) for source, target in copies for url in downloads.get(_name(source), ())]
        for target, content in copied:
            files.setdefault(_name(target), []).append(content)
        for target, url in moved:
            downloads.setdefault(_name(target), []).append(url)
        left.append(Left((*written, *copied), (*fetched, *moved), defined))
    return left


def run_arguments(call: ToolCall, conversation: Sequence[ToolCall], left: Sequence[Left]) -> str:
    """A command call's arguments with what it runs of what the conversation's other calls left (files the
    others wrote that it names, a file downloaded before it or by it that it runs, the variables, aliases
    and functions of the calls before it that it uses), read as a command field of its; as they are where
    it runs none."""
    at = next((index for index, other in enumerate(conversation) if other is call), len(conversation))
    files = [file for index, other in enumerate(left) if index != at for file in other.files]
    ran = ran_files(call.arguments, files)
    texts = list(command_strings(call.arguments))
    named = set(_FILE_NAME.findall(call.arguments))
    downloads = [
        (path, url) for other in left[: at + 1] for path, url in other.downloads if _name(path) in named
    ]
    # The readings are made only for a call that names a downloaded file; destructive_entry reads them
    # again, from the cache, and charges them to the budget.
    readings = shell_readings(call.name, call.arguments) if downloads else ""
    fetched = [
        (path, f"curl {_plain(url)} | sh")
        for path, url in dict.fromkeys(downloads)
        if _runs("\n".join(texts), readings, _name(path))
    ]
    used_commands = {match.group(1) for text in texts for match in _COMMAND_START.finditer(text)}
    before = left[:at]
    variables = _assignments(
        call.arguments, [variable for other in before for variable in other.defined.variables]
    )
    # The latest definition of a name is the one in force, as in a shell.
    definitions = {
        name: (body, takes_arguments)
        for other in before
        for name, body, takes_arguments in other.defined.commands
        if name in used_commands
    }
    used = [
        ("", _used(text, name, body, takes_arguments))
        for name, (body, takes_arguments) in definitions.items()
        for text in texts
    ]
    defined = [("", "\n".join([*variables, *texts]))] if variables else []
    everything = [*ran, *fetched, *defined, *used]
    return with_ran(call.arguments, everything) if everything else call.arguments


def _assignments(arguments: str, variables: list[tuple[str, str]]) -> list[str]:
    """The assignments of the variables the arguments use, and of those their values use in turn (``B=$A``),
    in the order the calls made them, each value quoted as one word."""
    used = {first or second for first, second in _VARIABLE_USE.findall(arguments)}
    for _ in range(2):
        used |= {
            first or second
            for name, value in variables
            if name in used
            for first, second in _VARIABLE_USE.findall(value)
        }
    return list(dict.fromkeys(f"{name}={shlex.quote(value)}" for name, value in variables if name in used))


_FILE_NAME = re.compile(r"[\w.+-]+")
_VARIABLE_USE = re.compile(r"\$\{([A-Za-z_]\w*)|\$([A-Za-z_]\w*)")
_COMMAND_START = re.compile(r"(?:^|[;&|(`\n]|\$\()[ \t]*(?:sudo[ \t]+)?([\w.:+-]+)")


def _name(path: str) -> str:
    return posixpath.basename(path.rstrip("/"))


def _plain(url: str) -> str:
    """A URL as one word of a command line."""
    return re.sub(r"[\s|;&]", "", url)[:256]


@functools.lru_cache(maxsize=1024)
def _own(
    name: str, arguments: str
) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...], tuple[tuple[str, str], ...], _Defined]:
    """What one call writes, downloads, copies (each source with its target) and defines: the same call in
    each turn's history is read once."""
    call = ToolCall(id="", name=name, arguments=arguments, where="")
    written = tuple(written_files([call]))
    if not is_command_tool(name):
        return written, (), (), _Defined((), ())
    texts = list(command_strings(arguments))
    downloads = _first(download for text in texts for download in _downloads(text))
    copies = _first(copy for text in texts for copy in _copies(text))
    variables = _first(
        (match.group(1), _value(match.group(2))) for text in texts for match in _VARIABLE.finditer(text)
    )
    commands = _first(definition for text in texts for definition in _definitions(text))
    return written, downloads, copies, _Defined(variables, commands)


def _first[T](found: Iterator[T]) -> tuple[T, ...]:
    """The first ``_MOST_PER_CALL`` of what a call's reading finds, the rest not looked for."""
    return tuple(itertools.islice(found, _MOST_PER_CALL))


_SEGMENT = re.compile(r"&&|\|\||[;\n|&(){}`]|\$\(")
_COPIER = re.compile(r"(?i)(?:cp|mv|install|ln|link|rsync|copy-item|move-item|copy|move|cpi|mi)$")
_VALUED = frozenset({"-m", "--mode", "-o", "--owner", "-g", "--group", "-S", "--suffix", "-e"})
_CODE_COPY = re.compile(
    r"""(?i)\b(?:copy\w*|move\w*|rename\w*|replace|symlink\w*|link\w*|cp|mv|ln_s)[ \t]*\([ \t]*"""
    r"""['"]([^'"\n]{1,256})['"][ \t]*,[ \t]*['"]([^'"\n]{1,256})['"]"""
)


def _copies(text: str) -> Iterator[tuple[str, str]]:
    """Each file a copy, move or link makes from another (``cp x.sh y.sh``, ``ln -s x y``, ``cat x > y``,
    ``shutil.copy('x', 'y')``), as its source and its target (a folder's target named for its source)."""
    for segment in _SEGMENT.split(text):
        words = _words(segment)
        if len(words) >= 3 and _COPIER.match(posixpath.basename(words[0])):
            named = _operands(words[1:])
            *sources, target = named if len(named) >= 2 else ["", ""]
            for source in filter(None, sources):
                yield source, target + _name(source) if target.endswith("/") else target
    for path, pipeline in redirected_by_commands(text):
        for word in _words(pipeline)[1:]:
            yield word, path
    for match in _CODE_COPY.finditer(text):
        yield match.group(1), match.group(2)


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
    try:
        words = shlex.split(segment, comments=True)
    except ValueError:
        words = segment.split()
    while words and (words[0] in ("sudo", "env", "command", "exec", "nohup") or "=" in words[0]):
        words = words[1:]
    return words


_FETCHER = re.compile(r"(?i)(?:curl|wget2?|fetch|aria2c|iwr|invoke-webrequest)$")
_NAMED_BY_URL = re.compile(r"(?i)(?:wget2?|fetch|aria2c)$")
"""Download commands that store what they fetch under the URL's last name unless told otherwise."""
_URL = re.compile(r"(?i)^(?:[a-z][\w+.-]*://|www\.)\S+")
_REMOTE_NAME = re.compile(r"-[a-zA-Z]*O[a-zA-Z]*|--remote-name(?:-all)?")
_OUTPUT = frozenset({"-o", "--output", "-O", "--output-document", "-outfile", "--out", "-out"})


def _downloads(text: str) -> Iterator[tuple[str, str]]:
    """Each file a download command stores (``curl -o x.sh URL``, ``curl -O URL``, ``wget URL``, ``wget -O x
    URL``, ``curl URL > x``, ``iwr URL -OutFile x``, ``urlretrieve(URL, 'x')``), with the URL."""
    for segment in _SEGMENT.split(text):
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
_LOOK = 1024
"""How far along a line a file given to a pipe or read into ``sh -c`` is looked for from it: each place
of a crafted line is read at most this far, not to its end."""


def _runs(texts: str, readings: str, name: str) -> bool:
    """Whether a call's commands run the file of this name: by its path (``./x.sh``, ``exec ~/bin/x``), given
    to a shell or an interpreter as its script or its input, piped to one, or read into ``sh -c`` or
    ``eval``; the commands as written, and one a line in their readings."""
    file = rf"(?<![\w.-])(?:{_PATH_PART}/)?{re.escape(name)}"
    by_path = (
        rf"(?:^|[;&|(`\n]|\$\()[ \t]*(?:(?:sudo|exec|nohup|time)[ \t]+)*{_PATH_PART}/{re.escape(name)}"
        r"(?=[\s;&|)`]|$)"
    )
    return bool(
        re.search(by_path, texts)
        or re.search(
            rf"(?m)^[ \t]*(?:{_PATH_PART}/)?{_RUNNER}(?:[ \t]+-\S+)*[ \t]+<?[ \t]*{file}(?=\s|$)"
            rf"|{file}\b[^\n|]{{0,{_LOOK}}}\|[ \t]*(?:sudo[ \t]+)?(?:{_PATH_PART}/)?{_RUNNER}(?=\s|$)"
            rf"|(?:{_RUNNER}|eval)\b[^\n]{{0,{_LOOK}}}(?:\$\(|`)[ \t]*(?:cat[ \t]+|<[ \t]*){file}"
            r"[ \t]*(?:\)|`)",
            readings,
        )
    )


_VARIABLE = re.compile(
    r"""(?:^|(?<=[\s;&|(]))(?:export[ \t]+|declare[ \t]+(?:-\w+[ \t]+)*|typeset[ \t]+|readonly[ \t]+)?"""
    r"""([A-Za-z_]\w*)=('[^'\n]*'|"[^"\n]*"|[^\s;&|'"`]*)"""
)
_ALIAS = re.compile(r"""\balias[ \t]+([\w.:+-]+)=('[^'\n]*'|"[^"\n]*"|[^\s;&|]+)""")
_FUNCTION = re.compile(
    r"(?:\bfunction[ \t]+([\w.:+-]+)[ \t]*(?:\([ \t]*\))?|(?<![\w.:+-])([\w.:+-]+)[ \t]*\([ \t]*\))[ \t]*\{"
)


def _value(value: str) -> str:
    return value[1:-1] if value[:1] in "'\"" and value[-1:] == value[:1] and len(value) > 1 else value


def _definitions(text: str) -> Iterator[tuple[str, str, bool]]:
    for match in _ALIAS.finditer(text):
        yield match.group(1), _value(match.group(2))[:_LONGEST_VALUE], False
    for match in _FUNCTION.finditer(text):
        yield match.group(1) or match.group(2), _body(text, match.end()), True


def _body(text: str, start: int) -> str:
    """What a function's braces hold, from after its ``{`` to the ``}`` that closes it (or as far as the
    text, or ``_LONGEST_VALUE``, goes)."""
    depth = 1
    for at in range(start, min(len(text), start + _LONGEST_VALUE)):
        depth += {"{": 1, "}": -1}.get(text[at], 0)
        if depth == 0:
            return text[start:at]
    return text[start : start + _LONGEST_VALUE]


@functools.lru_cache(maxsize=256)
def _command_word(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"(?:^|[;&|(`\n]|\$\()[ \t]*(?:sudo[ \t]+)?{re.escape(name)}(?=[ \t;&|)`]|$)(?P<rest>[^\n;&|)`]*)"
    )


def _used(text: str, name: str, body: str, takes_arguments: bool) -> str:
    """Each use of an alias or a function in the text as what it runs: the alias's value before the use's
    arguments, the function's body with them in place of its positional parameters."""
    uses = []
    for match in itertools.islice(_command_word(name).finditer(text), _MOST_USES):
        rest = match.group("rest").strip()
        uses.append(_called(body, rest) if takes_arguments else f"{body} {rest}")
    return "\n".join(uses)


def _called(body: str, rest: str) -> str:
    """A function's body with a call's arguments in place of its positional parameters."""
    given = ["", *rest.split()[:9]] + [""] * 9
    filled = _POSITIONAL.sub(lambda number: given[int(number.group(1))], body)
    return _ALL_POSITIONAL.sub(lambda _: rest, filled)


_POSITIONAL = re.compile(r'"?\$\{?([1-9])\}?"?')
_ALL_POSITIONAL = re.compile(r'"?\$\{?[@*]\}?"?')
