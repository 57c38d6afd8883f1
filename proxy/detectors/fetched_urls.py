"""Credentials a tool is sent to by a URL it is handed, whatever the tool is called.

A ``file:`` URL names a file the tool reads: ``fetch``, ``browser_navigate`` or an upload's attachment
handed ``file:///root/.ssh/id_rsa`` reads the key as ``read_file`` would. An instance metadata URL names
the credentials of the host the agent runs on: a fetch tool handed
``http://169.254.169.254/latest/meta-data/iam/security-credentials/...`` gets them, and no proxy stands in
the way (clouds' images put the metadata address in ``NO_PROXY``). Tools that read files or run commands
(``credentials.is_reading_tool``) have every argument read as paths already; these are the others', read
only where a whole argument is one URL, so that a message or a document that mentions one is no read."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from proxy.detectors.credentials import argument_strings, is_reading_tool, normal_paths, read_findings
from proxy.exchange import ToolCall
from proxy.model import Finding
from proxy.scanning.rulepack import Rule, ScanBudget, Scanner

NETWORK_RULES = frozenset({"workload-identity-token"})
"""The credential rules a URL of another scheme than ``file:`` may break: a path on a web server is that
server's file (``https://example.com/.env``), an instance metadata path is the agent's host's credentials."""
_URL = re.compile(r"(?i)[a-z][a-z0-9+.-]{0,31}:(?=\S*/)\S+")
_ON_FILE = re.compile(r"(?i)(?:[a-z][a-z0-9+.-]{0,31}:)*?file:")
"""A URL that reads a file, within others (``view-source:file:``, ``jar:file:``) too."""
_APART = re.compile(r"[\s,;]+")
_LONGEST_URL = 8192
_MOST_URLS = 64
"""URLs of one call read: past them its arguments are a list of data, not what a tool is sent to."""


def url_reads(calls: Iterable[ToolCall], scanner: Scanner, budget: ScanBudget) -> list[Finding]:
    """One finding per credential rule a URL handed to a tool that reads no paths breaks, read as the
    server reads it too (percent escapes decoded, ``.``, ``..`` and doubled slashes resolved): a ``file:``
    URL against every rule, another against ``NETWORK_RULES``. Charged to ``budget``."""
    findings = []
    for call in calls:
        if is_reading_tool(call.name):
            continue
        urls = list(dict.fromkeys(handed_urls(call.arguments)))[:_MOST_URLS]
        on_file = [url for url in urls if _ON_FILE.match(url)]
        on_network = [url for url in urls if not _ON_FILE.match(url)]
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


def handed_urls(arguments: str) -> Iterator[str]:
    """The URLs with a path of the arguments' strings that hold nothing else (``file:///a, file:///b``
    is two of them; a sentence that mentions one holds none)."""
    for text in argument_strings(arguments):
        if len(text) <= _LONGEST_URL:
            words = [word for word in _APART.split(text) if word]
            if words and all(_URL.fullmatch(word) for word in words):
                yield from words
