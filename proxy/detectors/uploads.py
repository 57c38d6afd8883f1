"""Local data a command sends to a host the agent's role may not reach.

The proxy holds an agent's own connections to its role's egress allowlist, but the commands its shell
tool runs often go straight out (a sandbox without ``HTTPS_PROXY``, a host in ``NO_PROXY``). A command
that sends a local file or what another command prints is an upload: curl's ``-T``, ``--upload-file``,
``-d @file``, ``--data-binary @-`` fed by a pipe, ``-F name=@file``; wget's ``--post-file`` and
``--body-file``; HTTPie's ``@file`` items and the input piped to it; scp, rsync and sftp to a remote;
nc, ncat and socat fed a file or a pipe; a redirection to ``/dev/tcp``; code that reads a file and posts.
Where it goes is read as ``request_destinations`` reads a request, for certain or not at all: an upload
to a host outside the allowlist, or to one not known for certain, is found. Literal data (``curl -d
'{"q":1}'``, ``echo '{}' | curl -d @-``), a download and a send to the machine itself (loopback) are no
uploads. Pure: no I/O."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from proxy.detectors.commands import command_strings, shell_readings, without_stored_heredocs
from proxy.detectors.credentials import WRITING_TOOLS, is_reading_tool
from proxy.detectors.request_destinations import (
    Read,
    Stage,
    Words,
    code_hosts,
    code_sends,
    destinations,
    httpie_request,
    names_a_host,
    operand_host,
    read_curl,
    read_httpie,
    read_options,
    read_wget,
    stages_in,
)
from proxy.detectors.tools import name_matches
from proxy.egress import canonical_host, parse_ip_literal
from proxy.exchange import ToolCall
from proxy.model import Action, Finding, Severity, Threat
from proxy.scanning.rulepack import ScanBudget

UPLOAD_RULE = "cmd-upload-outside-allowlist"
HostAllowed = Callable[[str, int], bool]
"""Whether the role's egress allowlist lets the agent reach a host on a port."""


@dataclass(frozen=True, slots=True)
class Upload:
    """A command that sends local data: the hosts it sends to (None where they are not known for
    certain) and the port, where the command names one."""

    command: str
    hosts: tuple[str, ...] | None
    port: int = 443


def uploads_in(text: str, tick: Callable[[], None], *, lines: bool = False) -> Iterator[Upload]:
    """The uploads of a shell text, and of the text read as code; a here-document it only stores or prints
    (``cat > notes.md <<'EOF'``) is data, not commands. With ``lines``, a text of readings one a line
    (``stages_in``). ``tick`` is called for each command."""
    tick()
    code = _code_upload(without_stored_heredocs(text))
    if code is not None:
        yield code
    for stage in stages_in(text, tick, lines=lines):
        tick()
        upload = _stage_upload(stage)
        if upload is not None:
            yield upload


def outside_allowlist(calls: Iterable[ToolCall], allowed: HostAllowed, budget: ScanBudget) -> list[Finding]:
    """One finding for each call that uploads local data to a host the role may not reach, or to one not
    known for certain: the strings of a tool's that runs commands or code, and the commands any call runs
    with their disguises undone (``commands.shell_readings``: another tool's command fields too); withheld
    where ``data_exfiltration`` is enforced. Charged to ``budget``: a call that may send and is not read in
    time is found too."""
    findings = []
    for call in calls:
        runs = is_reading_tool(call.name) and not name_matches(call.name, WRITING_TOOLS)
        texts = list(command_strings(call.arguments)) if runs else []
        try:
            outside = _outside(call, texts, allowed, budget)
        except _OutOfTime:
            if not any(_MAY_SEND.search(text) for text in texts):
                continue
            outside = "a destination not read in time"
        if outside is not None:
            findings.append(
                Finding(
                    threat=Threat.DATA_EXFILTRATION,
                    rule=UPLOAD_RULE,
                    signal=f"{call.name}: a command sends local data to {outside}, outside the role's egress"
                    " allowlist",
                    severity=Severity.HIGH,
                    action=Action.WITHHOLD,
                    where=call.where,
                    owasp="LLM02",
                    extra={"tool": call.name},
                )
            )
    return findings


def withheld_notice(name: str) -> str:
    """The assistant text that stands in for a withheld upload."""
    return (
        f"The call to the tool `{name}` was withheld by egressguard: it sends local data to a host this"
        " agent's egress allowlist does not include, or to one that cannot be read for certain."
    )


class _OutOfTime(Exception):
    """The budget the reading is charged to is spent."""


def _outside(call: ToolCall, texts: list[str], allowed: HostAllowed, budget: ScanBudget) -> str | None:
    """What the first upload of the call that goes outside the allowlist goes to, as its signal says it:
    of its ``texts`` as written; where they hold none, of the commands it runs with their disguises undone,
    to a host they name (a reading blanks quoted words out, a URL or an ssh command's port among them: a
    destination it leaves unknown or a port it drops says nothing of the command)."""
    budget.allow(len(call.arguments))
    with budget.metered() as meter:

        def tick() -> None:
            if meter.left() <= 0:
                raise _OutOfTime

        found = [upload for text in texts for upload in uploads_in(text, tick)]
        if not found:
            readings = shell_readings(call.name, call.arguments)
            found = [upload for upload in uploads_in(readings, tick, lines=True) if upload.hosts is not None]
        for upload in found:
            if upload.hosts is None:
                return f"a destination not known for certain ({upload.command})"
            for host in upload.hosts:
                if not _on_this_machine(host) and not allowed(host, upload.port):
                    return f"{host} ({upload.command})"
    return None


_MAY_SEND = re.compile(
    r"(?i)\b(?:curl|wget2?|https?|xhs?|scp|rsync|sftp|nc|ncat|netcat|socat|requests|httpx|aiohttp|urllib3?"
    r"|urlopen|fetch|axios|socket|invoke-webrequest|invoke-restmethod|iwr|irm)\b|/dev/(?:tcp|udp)/"
)
"""A text that may send: where its reading runs out of time, the call is found all the same."""
_LOOPBACK_NAMES = re.compile(r"(?i)(?:[\w-]+\.)*localhost\.?|ip6-localhost|ip6-loopback")


def _on_this_machine(host: str) -> bool:
    """A loopback name or address: what is sent there does not leave the machine."""
    name = canonical_host(host)
    address = parse_ip_literal(name)
    return address.is_loopback if address is not None else bool(_LOOPBACK_NAMES.fullmatch(name))


_LITERAL_PRINTERS = frozenset({"echo", "printf"})
_SUBSTITUTION = re.compile(r"\$\(|`")


def _feeds_local_data(stage: Stage) -> bool:
    """Whether what a stage reads on its input is local data: a file redirected to it, or what the stage
    before it prints, but a literal ``echo`` or ``printf``; a here-document or here-string only where a
    substitution fills it."""
    for raw, _ in stage.arguments:
        if raw.startswith("<<"):
            if _SUBSTITUTION.search(stage.text):
                return True
        elif raw.startswith("<") and raw[1:2] not in ("(", "&"):
            return True
    return stage.fed_by is not None and not _prints_literal(stage.fed_by, stage.pipeline)


def _prints_literal(feeding: str, pipeline: str) -> bool:
    """Whether a stage prints only what it writes: an ``echo`` or ``printf`` of no expansion, a
    ``cat`` of a here-document or here-string that no substitution fills, or of nothing (where a
    reading dropped the here-document; one fed passes its feed on, ``stages_in``)."""
    words = feeding.split()
    if not words or _SUBSTITUTION.search(pipeline):
        return False
    if words[0] in _LITERAL_PRINTERS:
        return "$" not in feeding
    return words[0] == "cat" and all(word.startswith("<<") for word in words[1:2])


_STDIN = frozenset({"-", ".", "/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"})
_CURL_DATA = frozenset({"d", "data", "data-binary", "data-ascii", "json"})
_CURL_FORM = frozenset({"F", "form"})
_FORM_FILE = re.compile(r"[^=]*=[@<](.*)", re.S)
_NAMED_FILE = re.compile(r"[^=@]*@(.*)", re.S)
"""``--data-urlencode name@file`` and ``--variable name@file``: a ``=`` before it makes the value literal."""


def _curl_sends(values: Words) -> list[str]:
    """The files curl's options send (``-`` and ``.`` its input)."""
    sent = []
    for option, value in values:
        if option in ("T", "upload-file"):
            sent.append(value)
        elif option in _CURL_DATA and value.startswith("@"):
            sent.append(value[1:])
        elif option in _CURL_FORM and (found := _FORM_FILE.fullmatch(value)):
            sent.append(found[1].split(";", 1)[0])
        elif option in ("data-urlencode", "variable") and (found := _NAMED_FILE.fullmatch(value)):
            sent.append(found[1])
    return sent


def _wget_sends(values: Words) -> list[str]:
    return [value for option, value in values if option in ("post-file", "body-file")]


_HTTPIE_FILE = re.compile(r"(?:[^=:@\\]|\\.)*(?::=@|=@|@)(.+)", re.S)
"""An HTTPie item that sends a file: ``@file`` the body, ``field@file`` a file field, ``field=@file`` and
``field:=@file`` a field of its contents."""
_HTTPIE_IGNORES_INPUT = frozenset({"--ignore-stdin", "-I"})


def _httpie_sends(read: Read, stage: Stage) -> list[str]:
    items = httpie_request(read[0])[1:]
    sent = [found[1] for _, value in items if (found := _HTTPIE_FILE.fullmatch(value))]
    if not {value for _, value in stage.arguments} & _HTTPIE_IGNORES_INPUT:
        sent.append("-")
    return sent


_READERS: dict[str, tuple[Callable[[Words], Read | None], Callable[[Read, Stage], list[str]]]] = {
    "curl": (read_curl, lambda read, _: _curl_sends(read[1])),
    "wget": (read_wget, lambda read, _: _wget_sends(read[1])),
    "wget2": (read_wget, lambda read, _: _wget_sends(read[1])),
    "http": (read_httpie, _httpie_sends),
    "https": (read_httpie, _httpie_sends),
    "xh": (read_httpie, _httpie_sends),
    "xhs": (read_httpie, _httpie_sends),
}
"""Each HTTP client's reading of its words, and the files its reading sends."""
_UPLOAD_OPTION = re.compile(r"-T|(?:--upload-file|--post-file|--body-file)(?:=.+)?")
_DATA_OPTION = re.compile(r"-[dF]|--data(?:-binary|-ascii|-urlencode)?|--json|--form")
_DATA_FILE = re.compile(r"(?:-[dF]|--data(?:-binary|-ascii|-urlencode)?=|--json=|--form=)?[^=\s@]*=?[@<].+")


def _unread_upload(stage: Stage, command: str) -> Upload | None:
    """A stage whose words cannot be read as its client's: an upload to a destination not known where an
    option of a client's uploads (``-T``, ``--post-file``, ``-d @file``, ``-F f=@file``) and a word
    names a host or a URL."""
    words = [value for _, value in stage.arguments]
    uploads = any(
        _UPLOAD_OPTION.fullmatch(word)
        or (word[:2] in ("-d", "-F") and _DATA_FILE.fullmatch(word))
        or (_DATA_OPTION.fullmatch(word) and at + 1 < len(words) and _DATA_FILE.fullmatch(words[at + 1]))
        for at, word in enumerate(words)
    )
    return Upload(command, None) if uploads and names_a_host(stage.arguments) else None


def _stage_upload(stage: Stage) -> Upload | None:
    name = stage.name
    if name is None:
        # A command that may be any client: an upload's words make it one, to a destination not known.
        return _unread_upload(stage, "a command not known for certain")
    reader = _READERS.get(name)
    if reader is not None:
        return _client_upload(name, stage, *reader)
    transfer = _TRANSFERS.get(name)
    if transfer is not None:
        return transfer(stage)
    if name in _RUNNERS:
        # What it runs with arguments of its own (``xargs curl -T {}``, ``find -exec scp {} h:``).
        words = stage.arguments
        run = next((at for at, (_, value) in enumerate(words) if value in _READERS | _TRANSFERS), None)
        if run is not None:
            return _stage_upload(dataclasses.replace(stage, name=words[run][1], arguments=words[run + 1 :]))
    redirected = _DEVICE_REDIRECTION.search(stage.text)
    if redirected is not None and not (name in _LITERAL_PRINTERS and not _SUBSTITUTION.search(stage.text)):
        host = operand_host(redirected[1], f"tcp://{redirected[1]}")
        return Upload("/dev/tcp", (host,) if host else None, int(redirected[2]))
    return _code_upload(stage.text) if _INTERPRETER.fullmatch(name) else None


_INTERPRETER = re.compile(
    r"python[\d.]*|pypy3?|ipython|node(?:js)?|deno|bun|ruby|perl|php|pwsh|powershell|uv|poetry|pipenv"
)
"""Commands that run the code their words hold."""


_RUNNERS = frozenset({"xargs", "find", "watch", "parallel", "flock", "chronic", "unbuffer"})
"""Commands that run the command their arguments name."""
_DEVICE_REDIRECTION = re.compile(r">\s*/dev/(?:tcp|udp)/([^/\s]+)/(\d{1,5})")


def _client_upload(
    name: str,
    stage: Stage,
    read_words: Callable[[Words], Read | None],
    sends: Callable[[Read, Stage], list[str]],
) -> Upload | None:
    read = read_words(stage.arguments)
    if read is None:
        # An option sends the request elsewhere, or reads more of it from elsewhere.
        return _unread_upload(stage, name)
    sent = sends(read, stage)
    fed = _feeds_local_data(stage)
    if not any(fed or file not in _STDIN for file in sent):
        return None
    return Upload(name, destinations(name, stage.arguments), _url_port(stage.arguments))


_URL_PORT = re.compile(r"(?i)([a-z][a-z0-9+.-]*)://(?:[^/?#@\s]*@)?(?:\[[^\]]*\]|[^/?#:\s]*)(?::(\d{1,5}))?")
_SCHEME_PORTS = {"ftp": 21, "ftps": 990, "sftp": 22, "scp": 22, "smtp": 25, "smtps": 465, "tftp": 69}


def _url_port(words: Words) -> int:
    """The port of the first URL among a client's words that goes to another than the web's (a port it
    names, its scheme's own), where one does; 443 else."""
    for _, value in words:
        found = _URL_PORT.match(value)
        if found is not None:
            port = int(found[2]) if found[2] else _SCHEME_PORTS.get(found[1].lower(), 443)
            if port not in (443, 80):
                return port
    return 443


_SSH_VALUED = "bcDEeFiIJlLmoOPpQRSWwX"
_SSH_REROUTING = re.compile(r"(?i)\s*(?:proxy\w*|hostname|include|localcommand|permitlocalcommand)\b")
_REMOTE = re.compile(r"(?:[^@/\s]*@)?(\[[^\]/]*\]|[^@/:\s]*):(?!//)(?::)?.*", re.S)
"""``[user@]host:path`` (``host::module`` rsync's daemon's): a word with a colon before any slash."""
_TRANSFER_URL = re.compile(r"(?i)(?:scp|sftp|rsync|ssh)://")


def _remote_host(raw: str, value: str) -> str | None:
    """The host a transfer's operand names: "" for a local path, None where it is not known for certain
    (an expansion or a glob in it)."""
    if _TRANSFER_URL.match(value):
        return operand_host(raw, value)
    found = _REMOTE.fullmatch(value)
    if found is None:
        return ""
    host = found[1].strip("[]")
    if not host or re.search(r"[$`*?{}]", host):
        return None
    return host.lower()


def _ssh_options(words: Words, valued: str) -> tuple[Words, int, bool]:
    """A transfer's operands, the port an option names (22 else) and whether an option may send it through
    another host (a proxy, a jump host, another configuration, another program for ssh)."""
    operands, values = read_options(words, valued, "", _SSH_LONG_VALUED, _NO_OPTION) or ([], [])
    port, rerouted = 22, False
    for option, given in values:
        if option in ("J", "S", "F") or (option == "o" and _SSH_REROUTING.match(given)):
            rerouted = True
        elif option in ("e", "rsh", "rsync-path"):
            rerouted |= _ssh_rerouted(given)
            port_given = re.search(r"-p\s*(\d{1,5})", given)
            port = int(port_given[1]) if port_given else port
        elif option in ("P", "port") and given.isdigit():
            port = int(given)
    return operands, port, rerouted


_SSH_LONG_VALUED = frozenset({"rsh", "rsync-path", "port"})
_NO_OPTION = re.compile("(?!)")


def _ssh_rerouted(command: str) -> bool:
    """Whether the ssh command a transfer runs may go through another host."""
    return bool(_SSH_REROUTING.search(command)) or "-J" in command or "-F" in command


def _copy_upload(stage: Stage) -> Upload | None:
    """scp and rsync: the last operand is where the others go; a remote one, with a local one before it,
    is an upload."""
    valued = _SSH_VALUED if stage.name == "scp" else "efBMT"
    operands, port, rerouted = _ssh_options(stage.arguments, valued)
    if len(operands) < 2:
        return None
    hosts = [_remote_host(raw, value) for raw, value in operands]
    if hosts[-1] == "" or all(host != "" for host in hosts[:-1]):
        return None
    destination = hosts[-1]
    return Upload(stage.name or "", None if rerouted or destination is None else (destination,), port)


_SFTP_PUTS = re.compile(r"(?i)\b(?:put|reput|mput)\b")


def _sftp_upload(stage: Stage) -> Upload | None:
    """sftp: an upload where its batch (``-b``), the here-document or the input it reads puts a file."""
    operands, port, rerouted = _ssh_options(stage.arguments, "BbcDFiJloPRSsX")
    batch = any(value.startswith("-b") for _, value in stage.arguments)
    puts = _SFTP_PUTS.search(f"{stage.pipeline}\n{stage.fed_by or ''}") is not None
    if not operands or not (batch or puts):
        return None
    host = _remote_host(operands[0][0], operands[0][1] if ":" in operands[0][1] else f"{operands[0][1]}:")
    return Upload("sftp", None if rerouted or not host else (host,), port)


_NETCAT_VALUED = "IiMmOPpqsTVwXx"


def _netcat_upload(stage: Stage) -> Upload | None:
    """nc, ncat and netcat fed local data, connecting to a host (not listening)."""
    operands: Words = []
    rerouted = listening = False
    at = 0
    words = stage.arguments
    while at < len(words):
        raw, value = words[at]
        at += 1
        if raw.startswith("<") or (at > 1 and words[at - 2][0] == "<"):
            continue
        if value.startswith("--"):
            option = value[2:].split("=", 1)[0]
            listening |= option == "listen"
            rerouted |= option.startswith("proxy")
            if "=" not in value and option in ("proxy", "proxy-type", "proxy-auth", "source", "wait"):
                at += 1
            continue
        if value.startswith("-") and len(value) > 1:
            letters = value[1:]
            listening |= "l" in letters
            rerouted |= "x" in letters or "X" in letters
            valued = next((letter for letter in letters if letter in _NETCAT_VALUED), None)
            if valued is not None and letters.endswith(valued):
                at += 1
            continue
        operands.append((raw, value))
    if listening or not operands or not _feeds_local_data(stage):
        return None
    host = operand_host(operands[0][0], f"tcp://{operands[0][1]}")
    port = int(operands[1][1]) if len(operands) > 1 and operands[1][1].isdigit() else 443
    return Upload(stage.name or "", None if rerouted or not host else (host,), port)


_SOCAT_NETWORK = re.compile(
    r"(?i)(?:tcp[46]?|udp[46]?|sctp[46]?|dccp[46]?|openssl|ssl)(?:-connect|-sendto|-datagram)?:([^:,]+):(\d{1,5})"
)
_SOCAT_THROUGH = re.compile(r"(?i)(?:socks\w*|proxy(?:-connect)?):")
_SOCAT_LOCAL = re.compile(r"(?i)(?:file|open|gopen|exec|system|pipe|create):|/|\./")
_SOCAT_INPUT = re.compile(r"(?i)-|stdin|stdio")


def _socat_upload(stage: Stage) -> Upload | None:
    """socat joining a network address to a file, a command or its input (fed local data)."""
    addresses = [
        (raw, value)
        for index, (raw, value) in enumerate(stage.arguments)
        if (not value.startswith("-") or value == "-")
        and not raw.startswith(("<", ">"))
        and not (index and stage.arguments[index - 1][0] in ("<", ">"))
    ]
    if len(addresses) != 2:
        return None
    for (_, network), (_, other) in (addresses, addresses[::-1]):
        fed = _SOCAT_INPUT.fullmatch(other.split(",", 1)[0]) and _feeds_local_data(stage)
        local = _SOCAT_LOCAL.match(other) or fed
        if not local:
            continue
        if _SOCAT_THROUGH.match(network):
            return Upload("socat", None)
        found = _SOCAT_NETWORK.match(network)
        if found is not None:
            host = operand_host(found[1], f"tcp://{found[1]}")
            return Upload("socat", (host,) if host else None, int(found[2]))
    return None


_TRANSFERS: dict[str, Callable[[Stage], Upload | None]] = {
    "scp": _copy_upload,
    "rsync": _copy_upload,
    "sftp": _sftp_upload,
    "nc": _netcat_upload,
    "ncat": _netcat_upload,
    "netcat": _netcat_upload,
    "nc.openbsd": _netcat_upload,
    "nc.traditional": _netcat_upload,
    "socat": _socat_upload,
}

_CODE_FILE_SENT = re.compile(
    r"(?i)(?:\b(?:data|content|json)=(?!=)|\bbody\s*:)[^\n]{0,160}?(?:\bopen\s*\(|\.read_(?:bytes|text)\s*\("
    r"|\breadFileSync\b|\bcreateReadStream\b|\bBun\.file\b|\bDeno\.readFile)|-InFile\b|\bsendfile\s*\("
    r"|\.sendall\s*\([^\n]{0,160}?\bopen\s*\("
)
"""A request of code whose data is a file it reads as it sends (a keyword argument ``data=open(...)``,
``body: fs.readFileSync(...)``): an assignment (``data = r.read()``) is none."""
_FILES_FIELD = re.compile(r"\bfiles\s*=\s*[\[{(]")
"""A request's files (requests', httpx's ``files={...}``): sent where the code reads one."""
_CODE_READS = re.compile(
    r"""(?i)\bopen\s*\((?![^\n]{0,160}?,\s*(?:mode\s*=\s*)?["'][wax])|\.read_(?:bytes|text)\s*\("""
)
"""Code that opens a file to read it."""


def _code_upload(text: str) -> Upload | None:
    """Code whose request sends a file it reads: to the hosts of the URLs it writes."""
    if not code_sends(text):
        return None
    if not _CODE_FILE_SENT.search(text) and not (_FILES_FIELD.search(text) and _CODE_READS.search(text)):
        return None
    return Upload("code", code_hosts(text))
