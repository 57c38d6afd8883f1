"""Credentials a tool is handed by a path or a URL, whatever the tool is called.

A path, or a ``file:`` URL, names a file the tool reads: ``send_email`` attaching ``~/.ssh/id_rsa``,
``upload`` of ``~/.aws/credentials``, ``fetch`` or ``browser_navigate`` of ``file:///root/.ssh/id_rsa``
read the key as ``read_file`` would. An instance metadata URL names the credentials of the host the agent
runs on: a fetch tool handed ``http://169.254.169.254/latest/meta-data/iam/security-credentials/...``
gets them, and no proxy stands in the way (clouds' images put the metadata address in ``NO_PROXY``).
Tools that read files or run commands (``credentials.is_reading_tool``) have every argument read as paths
already; these are the others', read only where an argument is paths or URLs and nothing else, so that a
message or a document that mentions one is no read."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator

from proxy.detectors.credentials import WRITING_TOOLS, is_reading_tool, normal_paths, read_findings
from proxy.detectors.tools import name_matches
from proxy.exchange import ToolCall
from proxy.model import Finding
from proxy.scanning.rulepack import Rule, ScanBudget, Scanner

NETWORK_RULES = frozenset({"workload-identity-token"})
"""The credential rules a URL of another scheme than ``file:`` may break: a path on a web server is that
server's file (``https://example.com/.env``), an instance metadata path is the agent's host's credentials."""
_URL = re.compile(r"(?i)[a-z][a-z0-9+.-]{0,31}:(?=\S*/)\S+")
_ON_FILE = re.compile(r"(?i)(?:[a-z][a-z0-9+.-]{0,31}:)*?file:")
"""A URL that reads a file, within others (``view-source:file:``, ``jar:file:``) too."""
_PATH = re.compile(r"(?i)(?:/|~|\$\{?home\b|\$\{?userprofile\b|%userprofile%|[a-z]:[\\/]|\\\\)\S*")
"""A path from the root, a home folder or a drive (an absolute one: a relative one names a file of
wherever the tool runs, as any word may)."""
_HANDING_KEYS = re.compile(
    r"(?i)(?:attachments?|attached_?files?|files?|file_?(?:paths?|names?)|uploads?|upload_?(?:files?|paths?)"
    r"|documents?|local_?(?:files?|paths?)|source_?(?:files?|paths?)|src|media|media_?paths?)"
)
"""Keys under which a tool is handed a file it takes and carries on (an attachment, an upload, a copy's
source). Under others a path is one the tool uses (an ssh tool's ``key_path``, a deploy's ``env_file``)
or writes (``path``; a writing tool's every path): the file stays where it is."""
_APART = re.compile(r"[\s,;]+")
_LONGEST_VALUE = 8192
_DEEPEST = 4
"""JSON within JSON strings read, as frameworks nest a tool's input (``{"input": "{\\"url\\": ...}"}``)."""


def handed_reads(calls: Iterable[ToolCall], scanner: Scanner, budget: ScanBudget) -> list[Finding]:
    """One finding per credential rule a path or a URL handed to a tool that reads no paths breaks, read
    as the system reads it too (percent escapes decoded, ``.``, ``..`` and doubled slashes resolved): a path
    or a ``file:`` URL against every rule, another URL against ``NETWORK_RULES``. Charged to ``budget``."""
    findings = []
    for call in calls:
        if is_reading_tool(call.name):
            continue
        handing = not name_matches(call.name, WRITING_TOOLS)
        # Every one is read, in one scan of them all: a cap would let a list of harmless ones hide the last.
        handed = list(dict.fromkeys(handed_locations(call.arguments, paths=handing)))
        on_network = [place for place in handed if _URL.fullmatch(place) and not _ON_FILE.match(place)]
        on_file = [place for place in handed if place not in on_network]
        broken: dict[str, Rule] = {}
        timed_out: dict[str, Rule] = {}
        for read, rules in ((on_file, None), (on_network, NETWORK_RULES)):
            if not read:
                continue
            text = "\n".join(read)
            scan = scanner.scan(f"{text}\n{normal_paths(text)}", budget)
            broken |= {m.rule.id: m.rule for m in scan.found if rules is None or m.rule.id in rules}
            timed_out |= {rule: scanner.rules_by_id[rule] for rule in scan.timed_out}
        findings += read_findings(call, broken.values(), timed_out.values())
    return findings


def handed_locations(arguments: str, *, paths: bool = True) -> Iterator[str]:
    """The URLs of the arguments' strings, and the paths of those under a key that hands a file on
    (``_HANDING_KEYS``), that hold nothing else (``file:///a, file:///b`` is two; a sentence that mentions
    one holds none), in JSON strings within them too; without ``paths``, the URLs alone."""
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):
        value = arguments
    yield from _locations(value, "", _DEEPEST, paths)


def _locations(value: object, key: str, depth: int, paths: bool) -> Iterator[str]:
    if isinstance(value, dict):
        for inner_key, inner in value.items():
            yield from _locations(inner, str(inner_key), depth, paths)
    elif isinstance(value, list):
        for inner in value:
            yield from _locations(inner, key, depth, paths)
    elif isinstance(value, str) and len(value) <= _LONGEST_VALUE:
        if depth and value.lstrip()[:1] in ("{", "["):
            try:
                nested = json.loads(value)
            except (ValueError, RecursionError):
                pass
            else:
                yield from _locations(nested, key, depth - 1, paths)
                return
        words = [word for word in _APART.split(value) if word]
        hands_on = paths and _HANDING_KEYS.fullmatch(key) is not None
        if words and all(_URL.fullmatch(word) or (hands_on and _PATH.fullmatch(word)) for word in words):
            yield from words
