"""Where a folder reaches past the name a command gives it: mounted into a container or bound elsewhere
under another name, served over HTTP, sent or linked off whole.

The credential rules name files by their paths (``.aws/credentials``); a command that mounts ``~/.aws`` at
``/x`` and reads ``/x/credentials`` reads the same file by a path no rule names, and one that serves
``~/.ssh`` over HTTP hands over each file in it without naming one. ``mounted_readings`` writes the paths
under a mount's target as the host's paths they reach; ``reached_folders`` names the folders a command
serves, sends, links or binds whole, and the home folder or the root it archives or copies, for the rules
to judge what is in them.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable, Iterator

from proxy.detectors.credential_use import command_pieces
from proxy.detectors.request_destinations import words_of

_CONTAINER_TOOLS = frozenset({"docker", "podman", "nerdctl", "finch", "buildah"})
"""Container CLIs whose ``run``, ``create`` and ``exec`` mount a host path with ``-v`` or ``--mount``."""
_BIND_OPTIONS = {
    # Each tool's options that bind a host path: "pair" is SRC:DST in one word, "two" is SRC DST.
    "apptainer": ({"-B", "--bind", "--mount"}, "pair"),
    "singularity": ({"-B", "--bind", "--mount"}, "pair"),
    "proot": ({"-b", "--bind"}, "pair"),
    "systemd-nspawn": ({"--bind", "--bind-ro"}, "pair"),
    "bwrap": ({"--bind", "--ro-bind", "--dev-bind", "--bind-try", "--ro-bind-try", "--dev-bind-try"}, "two"),
}
_MOUNT_BINDS = frozenset({"--bind", "-B", "--rbind", "-R"})
_HOST_PATH = re.compile(r"^(?:/|~|\$\{?(?:HOME|PWD)\}?|\.)")


def _command_words(piece: str) -> list[str]:
    """A piece's words as the shell reads them, past ``sudo`` and settings before the command."""
    words = [value for _, value in words_of(piece.strip())]
    while words and (words[0] in ("sudo", "doas", "command", "exec", "nohup") or _SETTING.match(words[0])):
        words = words[1:]
    if words:
        words[0] = posixpath.basename(words[0])
    return words


_SETTING = re.compile(r"^[A-Za-z_]\w*=")


def _option_values(words: list[str], names: set[str] | frozenset[str]) -> Iterator[str]:
    """The values the words give any of the options ``names``: ``-v x``, ``-v=x``, ``--volume=x`` and a
    short option's value glued to it (``-vx``)."""
    for at, word in enumerate(words):
        name, equals, value = word.partition("=")
        if word in names and at + 1 < len(words):
            yield words[at + 1]
        elif equals and name in names:
            yield value
        elif len(word) > 2 and word[1] != "-" and word[:2] in names:
            yield word[2:]


def container_mounts(words: list[str]) -> list[tuple[str, str]]:
    """The host paths a command binds, each with the path it is reached by there: a container's ``-v``,
    ``--volume`` and ``--mount type=bind`` (docker, podman, nerdctl), apptainer's and singularity's
    ``--bind``, bwrap's, proot's and systemd-nspawn's binds, and ``mount --bind``; a named volume is no
    host path. ``words``: the command's (``_command_words``)."""
    if not words:
        return []
    name = words[0]
    pairs: list[tuple[str, str]] = []
    if name in _CONTAINER_TOOLS:
        pairs += [_volume_pair(value) for value in _option_values(words, {"-v", "--volume"})]
        pairs += [_mount_pair(value) for value in _option_values(words, {"--mount"})]
    elif name in _BIND_OPTIONS:
        options, form = _BIND_OPTIONS[name]
        if form == "two":
            pairs += [(words[at + 1], words[at + 2]) for at, word in enumerate(words[:-2]) if word in options]
        else:
            values = _option_values(words, options)
            pairs += [_volume_pair(part) for value in values for part in value.split(",")]
    elif name in ("mount", "bindfs"):
        operands = [word for word in words[1:] if not word.startswith("-")]
        bound = name == "bindfs" or any(
            word in _MOUNT_BINDS or (word.startswith("-o") and "bind" in word) for word in words[1:]
        )
        if bound and len(operands) >= 2:
            pairs.append((operands[-2], operands[-1]))
    return [
        (source, target.rstrip("/"))
        for source, target in pairs
        if _HOST_PATH.match(source) and target.startswith("/") and target.rstrip("/")
    ]


def _volume_pair(value: str) -> tuple[str, str]:
    """``SRC:DST[:options]`` as its two paths; one path alone (an anonymous volume) as both."""
    source, _, rest = value.partition(":")
    return source, rest.partition(":")[0] if rest else source


def _mount_pair(value: str) -> tuple[str, str]:
    """``type=bind,source=SRC,target=DST`` as its two paths (in any order, by any of their names)."""
    fields = dict(field.partition("=")[::2] for field in value.split(","))
    source = fields.get("source") or fields.get("src") or ""
    target = fields.get("target") or fields.get("destination") or fields.get("dst") or ""
    return (source, target) if fields.get("type", "bind") == "bind" else ("", "")


def mounts_in(commands: str, tick: Callable[[], None] = lambda: None) -> list[tuple[str, str]]:
    """Each host path the commands bind (``container_mounts``), with the path it is reached by there.
    ``tick`` is called once for each command read."""
    if not _BINDING.search(commands):
        return []
    mounts = []
    for piece, _, _ in command_pieces(commands):
        tick()
        if _BINDING.search(piece):
            mounts += container_mounts(_command_words(piece))
    return mounts


def mounted_readings(
    commands: str, tick: Callable[[], None] = lambda: None, earlier: Iterable[tuple[str, str]] = ()
) -> str:
    """The lines of the commands that name a path under a mount's target (``docker run -v ~/.aws:/x alpine
    cat /x/credentials``), and the command each container CLI runs inside (``container_command``) that
    does, written with the host's path it reaches (``cat ~/.aws/credentials``); "" where none does.
    Every mount of the commands is read over all of their lines, and the mounts ``earlier`` calls made
    as well: a container started by one command is read by the next (``docker exec``), and a bind
    stays. ``tick`` is called once for each command and each line read: every line is, on the budget, so
    that no number of lines before a read hides it."""
    mounts = {target: source for source, target in (*earlier, *mounts_in(commands, tick))}
    if not mounts:
        return ""
    inside = []
    if _CONTAINER_TOOL.search(commands):
        for piece, _, _ in command_pieces(commands):
            tick()
            inside.append(container_command(_command_words(piece)))
    # The longest target first: a mount inside another (``-v ~:/h -v ~/.aws:/h/a``) is its own.
    targets = sorted(mounts, key=len, reverse=True)
    named = "|".join(map(re.escape, targets))
    under = re.compile(rf"""(?<![\w.~$/-])(?:{named})(?=/|$|[\s'";&|)<>`])""")

    def host(found: re.Match[str]) -> str:
        source = mounts[found[0]].rstrip("/")
        # The root mounted: what follows the target is its path from the root.
        return source or ("" if found.string.startswith("/", found.end()) else "/")

    lines = []
    for line in (*commands.splitlines(), *inside):
        tick()
        if under.search(line):
            lines.append(line)
    return "\n".join(under.sub(host, line) for line in lines)


_CONTAINER_FLAGS = frozenset({"--rm", "--privileged", "--init", "--read-only", "--detach", "--interactive",
                              "--tty", "--publish-all", "--no-healthcheck", "--oom-kill-disable", "--quiet",
                              "--sig-proxy", "--replace"})  # fmt: skip
"""A container's ``run`` and ``exec`` options that take no value; its short ones are of ``-ditPq``."""


def container_command(words: list[str]) -> str:
    """The command a container CLI's ``run``, ``create`` or ``exec`` runs inside it (what follows the
    image or the container), as a command of its own, its relative words read from the folder ``-w``
    names (``-w /x alpine cat credentials`` reads ``/x/credentials``): "" for any other."""
    if len(words) < 3 or words[0] not in _CONTAINER_TOOLS:
        return ""
    if words[1] == "container":
        words = words[1:]
    if words[1] not in ("run", "create", "exec"):
        return ""
    at = 2
    while at < len(words) and words[at].startswith("-"):
        flag = words[at] in _CONTAINER_FLAGS or "=" in words[at] or re.fullmatch(r"-[ditPq]+", words[at])
        at += 1 if flag else 2
    command = words[at + 1 :]
    workdir = next(_option_values(words[:at], {"-w", "--workdir"}), None)
    if workdir is not None and workdir.startswith("/"):
        command = command[:1] + [
            posixpath.join(workdir, word) if _RELATIVE_WORD.match(word) else word for word in command[1:]
        ]
    return " ".join(command)


_RELATIVE_WORD = re.compile(r"^(?![-/~$])[\w.]")


_BINDING = re.compile(
    r"\b(?:docker|podman|nerdctl|finch|buildah|apptainer|singularity|proot|systemd-nspawn|bwrap|mount|bindfs)\b"
)
_CONTAINER_TOOL = re.compile(r"\b(?:docker|podman|nerdctl|finch|buildah)\b")


_FILE_SERVER_MODULES = frozenset(
    {"http.server", "SimpleHTTPServer", "uploadserver", "RangeHTTPServer", "CGIHTTPServer"}
)
_FOLDER_OPTIONS = {
    # A server's option naming the folder it serves, and whether it serves the one it runs in without.
    "http-server": (set(), True),
    "serve": ({"-d", "--dir"}, True),
    "live-server": ({"--root"}, True),
    "miniserve": (set(), True),
    "darkhttpd": (set(), True),
    "updog": ({"-d", "--directory"}, True),
    "jwebserver": ({"-d", "--directory"}, True),
    "goshs": ({"-d", "--dir"}, True),
    "static-web-server": ({"-d", "--root"}, False),
    "webfsd": ({"-r"}, False),
    "caddy": ({"-r", "--root"}, True),
    "twistd": ({"--path"}, False),
}
_OPERAND_SERVERS = frozenset({"http-server", "serve", "live-server", "miniserve", "darkhttpd"})
"""Servers whose operand is the folder they serve."""
_VALUED = frozenset(
    {"-p", "--port", "-a", "--address", "-b", "--bind", "-i", "--interfaces", "-c", "--cache", "-l",
     "--listen", "--host", "-P", "--proxy", "-u", "--user", "--username", "-U", "--password", "-t",
     "--title", "--code"}
)  # fmt: skip
"""Options of servers and senders that take a value which is no folder."""
_DOCUMENT_ROOTS = (
    "/usr/share/nginx/html", "/usr/local/apache2/htdocs", "/var/www", "/usr/share/caddy", "/srv",
    "/var/www/localhost/htdocs", "/web", "/usr/local/openresty/nginx/html",
)  # fmt: skip
"""Where the web servers' images (nginx, httpd, caddy, php-apache, lighttpd, static-file-server, openresty)
serve files from: a folder mounted there is served."""
_RUNNERS = frozenset({"npx", "bunx", "pnpx"})
_SENDERS = {
    # A command that sends what it is given off the machine, by its subcommand: the operands it sends are
    # all but its last (the place it sends them to), or all of them.
    ("croc", "send"): "all", ("wormhole", "send"): "all", ("magic-wormhole", "send"): "all",
    ("ffsend", "upload"): "all", ("rclone", "serve"): "all", ("rclone", "copy"): "sources",
    ("rclone", "copyto"): "sources", ("rclone", "sync"): "sources", ("rclone", "move"): "sources",
    ("rclone", "moveto"): "sources", ("azcopy", "copy"): "sources", ("azcopy", "sync"): "sources",
    ("gsutil", "cp"): "sources", ("gsutil", "rsync"): "sources", ("gsutil", "mv"): "sources",
}  # fmt: skip
_COPIES_OFF = frozenset({"docker", "podman", "nerdctl", "kubectl", "oc"})
"""CLIs whose ``cp`` copies between the machine and a container or pod."""
_RELINKING = frozenset({"ln", "mv", "ditto"})
"""Commands that make what they are given (all but their last operand) reachable by another name."""
_HERE = "."
_COPIERS = frozenset({"tar", "bsdtar", "zip", "7z", "7za", "cp", "scp", "rsync"})
"""Archivers and copiers: what they take of the home folder or the root (``_copied``) goes whole."""
_HOME_OR_ROOT = re.compile(r"(?:~|\$\{?HOME\}?|/|/root|/home(?:/[^/\s]+)?|/Users(?:/[^/\s]+)?)/?")
"""The home folder or the root: archived or copied whole, every credential of the user's goes with it
(a credential folder named is ``credential-folder-copied``'s)."""


def reached_folders(texts: Iterable[str], tick: Callable[[], None] = lambda: None) -> Iterator[str]:
    """The folders and files the commands serve over HTTP (``python3 -m http.server --directory ~/.ssh``,
    ``php -S 0:8000 -t ~/.aws``, ``busybox httpd -h``, ``npx http-server ~/.ssh``, ``ruby -run -e
    httpd``, ``caddy file-server``), send off whole (``croc send``, ``rclone copy``, ``gsutil cp``, ``aws
    s3 sync``, ``docker cp``, ``kubectl cp``), link, move or bind under another name (``ln -s``,
    ``mv``, ``mount --bind``), and the home folder or the root they archive or copy whole (``tar czf
    h.tgz ~``): each where its text says it (a server given no folder serves the one a
    ``cd`` before it in the same text moved to). ``tick`` is called once for each command read."""
    for text in dict.fromkeys(texts):
        if not _REACHING.search(text):
            continue
        here: list[str | None] = [None]
        for piece, after, _ in command_pieces(text):
            tick()
            words = _command_words(piece)
            if words and words[0] in ("cd", "pushd"):
                here[-1] = _moved_to(here[-1], words[1:])
            for folder in _reached(words):
                joined = here[-1] if folder == _HERE else _joined(here[-1], folder)
                if joined is not None:
                    yield joined
            if after in ("(", "$("):
                here.append(here[-1])
            elif after == ")" and len(here) > 1:
                here.pop()


_REACHING = re.compile(
    r"\b(?:python[\d.]*|py|php|httpd|http-server|serve|live-server|miniserve|darkhttpd|updog|jwebserver|goshs"
    r"|static-web-server|webfsd|caddy|twistd|ruby|croc|wormhole|magic-wormhole|ffsend|rclone|azcopy|gsutil|aws"
    r"|gcloud|ngrok|docker|podman|nerdctl|finch|buildah|kubectl|oc|ln|mv|ditto|mount|bindfs|b?s?dtar|tar|zip|7za?|cp|scp|rsync)\b"
)
"""A word of a command ``_reached`` reads: a text without one reaches no folder."""


def _moved_to(here: str | None, given: list[str]) -> str | None:
    """Where a ``cd`` given these words moves: home where it names no folder, not known for ``cd -``."""
    if "-" in given:
        return None
    return _joined(here, next((word for word in given if not word.startswith("-")), "~"))


def _joined(here: str | None, path: str) -> str | None:
    if path.startswith(("/", "~", "$")):
        return path
    return None if here is None else posixpath.normpath(posixpath.join(here, path))


def _reached(words: list[str]) -> Iterator[str]:
    """What one command serves, sends or relinks whole: ``_HERE`` for the folder it runs in."""
    if len(words) < 2:
        return
    name = words[0]
    if name in _RUNNERS or (name in ("pnpm", "yarn") and words[1] == "dlx"):
        rest = [word for word in words[1:] if word not in ("dlx", "-y", "--yes")]
        words = [posixpath.basename(rest[0]).split("@")[0], *rest[1:]] if rest else []
        name = words[0] if words else ""
    if re.fullmatch(r"python[\d.]*|py", name):
        module = next(_option_values(words, {"-m"}), "")
        if module in _FILE_SERVER_MODULES:
            yield next(_option_values(words, {"-d", "--directory"}), _HERE)
    elif name == "php" and any(word.startswith("-S") for word in words):
        yield next(_option_values(words, {"-t"}), _HERE)
    elif (name == "busybox" and words[1] == "httpd") or (name == "httpd" and "-h" in words):
        yield next(_option_values(words, {"-h"}), _HERE)
    elif name == "ruby" and any(word in ("-run", "-rrun") for word in words):
        at = next((at for at, word in enumerate(words) if word in ("-ehttpd", "httpd")), None)
        if at is not None:
            yield next((word for word in words[at + 1 :] if not word.startswith("-")), _HERE)
    elif name in _FOLDER_OPTIONS:
        yield from _served(name, words)
    elif (name, _operands(words[1:])[0] if _operands(words[1:]) else "") in _SENDERS:
        subcommand, *operands = _operands(words[1:])
        yield from operands if _SENDERS[name, subcommand] == "all" else operands[:-1]
    elif name == "ngrok":
        # ngrok serves a folder given as a file: URL.
        yield from (word.removeprefix("file://") for word in words[1:] if word.startswith("file://"))
    elif name == "aws" and words[1:3] in (["s3", "cp"], ["s3", "sync"], ["s3", "mv"]):
        yield from _operands(words[3:])[:1]
    elif name == "gcloud" and words[1:3] in (["storage", "cp"], ["storage", "rsync"]):
        yield from _operands(words[3:])[:-1]
    elif name in _COPIES_OFF and words[1] == "cp":
        # A container's or pod's path (``c:/root/.aws``) is read as the path it is there.
        yield from (re.sub(r"^[\w.-]+:(?=/)", "", word) for word in _operands(words[2:])[:-1])
    elif name in _RELINKING:
        operands = _operands(words[1:])
        yield from operands[:-1] if len(operands) > 1 else operands
    elif name in ("mount", "bindfs"):
        yield from (source for source, _ in container_mounts(words))
    elif name in _COPIERS:
        yield from (word for word in _copied(name, words) if _HOME_OR_ROOT.fullmatch(word))
    if name in _CONTAINER_TOOLS:
        yield from (
            source
            for source, target in container_mounts(words)
            if any(target == root or target.startswith(root + "/") for root in _DOCUMENT_ROOTS)
        )


def _copied(name: str, words: list[str]) -> list[str]:
    """What an archiver creating an archive, or a copier, takes: never the archive, nor where a copy goes."""
    operands = [
        word
        for before, word in zip(["", *words[1:]], words[1:], strict=False)
        if not word.startswith("-") and before not in _COPIER_VALUED
    ]
    if name in ("tar", "bsdtar"):
        mode = words[1]
        creating = "--create" in words or "-c" in words or (not mode.startswith("--") and "c" in mode)
        # Where the archive goes is the value of the f in a bundle of letters (``czf x.tgz``).
        archive = next((at for at, word in enumerate(words) if re.fullmatch(r"-?[a-zA-Z]*f", word)), None)
        named = words[archive + 1] if archive is not None and archive + 1 < len(words) else None
        # What tar takes from the folder -C moved it to (``-C ~ .``) is that folder's.
        moved = next(_option_values(words, {"-C", "--directory"}), None)
        taken = [moved if moved and word in (".", "./") else word for word in operands]
        return [word for word in taken if word not in (named, mode)] if creating else []
    if name in ("zip", "7z", "7za"):
        return operands[1:] if name == "zip" else operands[2:] if operands[:1] == ["a"] else []
    targeted = any(
        word in ("-t", "--target-directory") or word.startswith("--target-directory=") for word in words
    )
    return operands if targeted else operands[:-1]


_COPIER_VALUED = frozenset(
    {"-C", "--directory", "-f", "--file", "-T", "--files-from", "-X", "--exclude-from", "--exclude",
     "-I", "--use-compress-program", "-t", "--target-directory", "-S", "--suffix", "-e", "--rsh",
     "--include", "--filter", "--include-from", "--temp-dir", "--port", "--log-file", "--backup-dir",
     "--compare-dest", "--link-dest", "--copy-dest", "--partial-dir", "-i", "-P", "-o", "-F", "-c",
     "-l", "-J", "-x", "-b", "-n"}
)  # fmt: skip
"""Options of tar, cp, rsync, scp and zip that take a value, which is no file they take."""


def _served(name: str, words: list[str]) -> Iterator[str]:
    options, serves_here = _FOLDER_OPTIONS[name]
    named = list(_option_values(words, options))
    if name in _OPERAND_SERVERS:
        named += _operands(words[1:])
    if name == "caddy" and "file-server" not in words:
        return
    if name == "twistd" and "web" not in words:
        return
    yield from named or ([_HERE] if serves_here else [])


def _operands(words: list[str]) -> list[str]:
    """The words that are neither options nor an option's value."""
    operands = []
    for at, word in enumerate(words):
        if word.startswith("-") or (at and words[at - 1] in _VALUED):
            continue
        operands.append(word)
    return operands
