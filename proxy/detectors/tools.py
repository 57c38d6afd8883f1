"""Tool abuse: destructive tool calls without approval, odd arguments and never-seen call sequences.

The catalogue of destructive tools is data (``rules/tools.yaml``); a role may add globs or exempt them.
Everything here is pure: the counts and the set of known sequences live in the state store.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import importlib.resources
import re
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from proxy.exchange import DeclaredTool, Fetch, ToolCall
from proxy.model import SEVERITY_ORDER, Action, Finding, Severity, Threat
from proxy.scanning.validators import shannon_entropy

APPROVAL_HEADER = "X-Approval-Id"
INVALID_APPROVAL_RULE = "approval-invalid"
ROLE_ADDED_RULE = "tool-role-destructive"
ARGUMENT_ENTROPY_RULE = "tool-argument-entropy"
ENTROPY_WINDOW = 64
"""Characters of a tool call's arguments whose entropy is measured together."""
UNSEEN_SEQUENCE_RULE = "tool-sequence-unseen"
_NAMESPACE_SEPARATORS = ("__", ".", "/", ":")


class ToolCatalogueError(ValueError):
    """The catalogue file is not a valid tool catalogue."""


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    id: str
    description: str
    severity: Severity
    owasp: str | None
    globs: tuple[str, ...]
    match_examples: tuple[str, ...] = ()
    """Names the entry must match (``examples.match``)."""
    no_match_examples: tuple[str, ...] = ()
    """Names no entry may match (``examples.no_match``): those that only read or ask about the act."""
    by_arguments: bool = False
    """The call is destructive for what its arguments run (a command tool's), not for its name."""
    unless: tuple[str, ...] = ()
    """Globs of names the entry's globs reach that only read about the act (``deploy_status``)."""


@dataclass(frozen=True, slots=True)
class RoleOverrides:
    """A role's changes to the catalogue: globs it adds as destructive and globs it exempts.
    An exemption wins over both the catalogue and the role's own additions."""

    destructive: tuple[str, ...] = ()
    exempt: tuple[str, ...] = ()
    connectors: tuple[str, ...] = ()
    """Globs of the provider-hosted MCP connectors and tunnels (by id) the API may reach for the role."""


NO_OVERRIDES = RoleOverrides()


def _candidate_names(name: str) -> tuple[str, ...]:
    """The lowercased name, its last segment when it is namespaced (``files__delete_file``), and its words
    joined as the catalogue spells names (``deleteCustomer``, ``delete-customer``: ``delete_customer``)."""
    lowered = name.strip().lower()
    last = lowered
    for separator in _NAMESPACE_SEPARATORS:
        last = last.rsplit(separator, 1)[-1]
    return tuple(
        dict.fromkeys(candidate for candidate in (lowered, last, "_".join(_words(name))) if candidate)
    )


def _acting_names(name: str) -> tuple[str, ...]:
    """``_candidate_names``, and each run of two or more of the name's last words after a prefix that may
    name a system (``crm_delete_customer``: ``delete_customer``), unless a word before the run says the
    call only reads or asks (``get_send_status``, ``can_delete_user``, ``preview_transfer_funds``)."""
    words = _words(name)
    runs = []
    for start in range(1, len(words) - 1):
        if words[start - 1] in _ASKING_WORDS:
            break
        runs.append("_".join(words[start:]))
    return tuple(dict.fromkeys((*_candidate_names(name), *runs)))


def _words(name: str) -> list[str]:
    return [word.lower() for word in _NOT_A_WORD.split(_CASE_CHANGE.sub("_", name)) if word]


_CASE_CHANGE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
"""Where camelCase and PascalCase start a word: ``runShellCommand``, ``HTTPDelete``."""
_NOT_A_WORD = re.compile(r"[^A-Za-z0-9]+")
_ASKING_WORDS = frozenset(
    {"get", "list", "read", "fetch", "search", "find", "describe", "show", "view", "preview", "check",
     "count", "query", "lookup", "validate", "estimate", "simulate", "explain", "can", "is", "has", "should",
     "status"}
)  # fmt: skip


def glob_matches(name: str, glob: str) -> bool:
    """``fnmatch.fnmatchcase`` for a glob a sender wrote (in a command): fnmatch keeps the compiled form
    of up to 32,768 globs for the process's life, and a command's word may be 16 KB long. Only globs up
    to ``_KEPT_GLOB`` characters are kept here, ``_KEPT_GLOBS`` of them; a longer one is compiled again
    each time (and kept, if at all, by ``re``'s own cache of a few hundred patterns)."""
    compiled = _compiled_glob(glob) if len(glob) <= _KEPT_GLOB else _glob_pattern(glob)
    return compiled.match(name) is not None


_KEPT_GLOB = 256
_KEPT_GLOBS = 1024


def _glob_pattern(glob: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(glob))


_compiled_glob = functools.lru_cache(maxsize=_KEPT_GLOBS)(_glob_pattern)


def _matches_any(names: Iterable[str], globs: Iterable[str]) -> bool:
    patterns = [glob.lower() for glob in globs]
    return any(fnmatch.fnmatchcase(name, pattern) for name in names for pattern in patterns)


def name_matches(name: str, globs: Iterable[str]) -> bool:
    """Whether a tool name, read as any of the names it may act as (``_acting_names``), matches any of the
    globs: for what makes a call riskier (destructive, reading files, rate-limited), where matching too
    widely costs a question and too narrowly lets a call through."""
    if len(name) <= _KEPT_NAME:
        return _kept_match(name, tuple(globs), acting=True)
    return _matches_any(_acting_names(name), globs)


def name_is(name: str, globs: Iterable[str]) -> bool:
    """Whether the tool name itself, its namespace's last segment or its words in snake case match any
    of the globs: for an exemption, which must not reach a name that only ends like an exempt one."""
    if len(name) <= _KEPT_NAME:
        return _kept_match(name, tuple(globs), acting=False)
    return _matches_any(_candidate_names(name), globs)


_KEPT_NAME = 256
"""A history's calls come back with every request, each name asked about by several detectors against
the same globs: the answers for names up to this long are kept (a longer name, which an agent's tools
do not have, is matched anew)."""


@functools.lru_cache(maxsize=8192)
def _kept_match(name: str, globs: tuple[str, ...], *, acting: bool) -> bool:
    return _matches_any(_acting_names(name) if acting else _candidate_names(name), globs)


def _examples(raw: Any, label: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """An entry's ``examples`` (``{match: [...], no_match: [...]}``, either list may be left out)."""
    if not isinstance(raw, Mapping):
        raise ToolCatalogueError(f"{label}: `examples` must be a mapping with match and no_match lists")
    lists = []
    for key in ("match", "no_match"):
        values = raw.get(key, [])
        if not isinstance(values, list) or not all(isinstance(value, str) and value for value in values):
            raise ToolCatalogueError(f"{label}: `examples.{key}` must be a list of names")
        lists.append(tuple(values))
    return lists[0], lists[1]


@dataclass(frozen=True, slots=True)
class ToolCatalogue:
    entries: tuple[CatalogueEntry, ...]

    @classmethod
    def load(cls, path: str | Path | None = None) -> ToolCatalogue:
        """Load a catalogue file; without a path, the one shipped in the rule packs."""
        if path is None:
            text = importlib.resources.files("egressguard_rules").joinpath("tools.yaml").read_text("utf-8")
            origin = "tools.yaml"
        else:
            text = Path(path).read_text("utf-8")
            origin = str(path)
        return cls.from_mapping(yaml.safe_load(text), origin=origin)

    @classmethod
    def from_mapping(cls, data: Any, *, origin: str = "<catalogue>") -> ToolCatalogue:
        if not isinstance(data, Mapping) or data.get("catalogue") != "tools":
            raise ToolCatalogueError(f"{origin}: not a tool catalogue (expected `catalogue: tools`)")
        raw_entries = data.get("tools")
        if not isinstance(raw_entries, list) or not raw_entries:
            raise ToolCatalogueError(f"{origin}: `tools` must be a non-empty list")
        entries = []
        seen_ids: set[str] = set()
        for index, raw in enumerate(raw_entries):
            if not isinstance(raw, Mapping):
                raise ToolCatalogueError(f"{origin}: tools[{index}] must be a mapping")
            entry_id = raw.get("id")
            globs = raw.get("globs")
            if not isinstance(entry_id, str) or not entry_id:
                raise ToolCatalogueError(f"{origin}: tools[{index}] needs an `id`")
            if entry_id in seen_ids:
                raise ToolCatalogueError(f"{origin}: duplicate id {entry_id!r}")
            seen_ids.add(entry_id)
            if not isinstance(globs, list) or not globs or not all(isinstance(g, str) and g for g in globs):
                raise ToolCatalogueError(f"{origin}: {entry_id}: `globs` must be a non-empty list of strings")
            try:
                severity = Severity(raw.get("severity", Severity.HIGH))
            except ValueError:
                raise ToolCatalogueError(
                    f"{origin}: {entry_id}: unknown severity {raw['severity']!r}"
                ) from None
            match_examples, no_match_examples = _examples(raw.get("examples", {}), f"{origin}: {entry_id}")
            unless = raw.get("unless", [])
            if not isinstance(unless, list) or not all(isinstance(g, str) and g for g in unless):
                raise ToolCatalogueError(f"{origin}: {entry_id}: `unless` must be a list of globs")
            entries.append(
                CatalogueEntry(
                    id=entry_id,
                    description=str(raw.get("description", "")),
                    severity=severity,
                    owasp=raw.get("owasp"),
                    globs=tuple(globs),
                    match_examples=match_examples,
                    no_match_examples=no_match_examples,
                    unless=tuple(unless),
                )
            )
        return cls(tuple(entries))

    def entry_for(self, name: str, overrides: RoleOverrides = NO_OVERRIDES) -> CatalogueEntry | None:
        """The catalogue entry that makes this tool destructive for the role, if any."""
        if name_is(name, overrides.exempt):
            return None
        names = _acting_names(name)
        if _matches_any(names, overrides.destructive):
            return CatalogueEntry(
                id=ROLE_ADDED_RULE,
                description="Declared destructive by the role.",
                severity=Severity.HIGH,
                owasp="LLM07",
                globs=overrides.destructive,
            )
        for entry in self.entries:
            if _matches_any(names, entry.globs) and not _matches_any(names, entry.unless):
                return entry
        return None

    def is_destructive(self, name: str, overrides: RoleOverrides = NO_OVERRIDES) -> str | None:
        """The rule id that makes ``name`` destructive for the role, or None."""
        entry = self.entry_for(name, overrides)
        return entry.id if entry else None


MCP_SERVER_EGRESS_RULE = "egress.mcp_server"
"""A request declares an MCP server its agent may not reach (outside its egress allowlist, or a provider's
connector or tunnel its role does not name): the API would reach it for the agent."""
UNRESTRICTED_SERVER_RULE = "tool-mcp-unrestricted"
"""A request declares an MCP server without saying which of its tools the API may run, nor asking
approval: the API may run any of them, destructive ones among them, unasked."""

PROVIDER_FETCH_RULE = "egress.provider_fetch"
"""A request gives the API an address to fetch for the agent (an image or a file by URL, a domain a server
tool fetches from) that its agent may not reach."""

HostCheck = Callable[[str, int], bool]
"""Whether the agent's egress allowlist lets it reach a host at a port."""


def declared_tool_findings(
    declared: Iterable[DeclaredTool],
    catalogue: ToolCatalogue,
    overrides: RoleOverrides,
    host_allowed: HostCheck,
) -> list[Finding]:
    """A tool the API would run itself is refused where the request declares it, the one place left to
    stop it. Under lateral movement: an MCP server the API would reach for the agent that the agent may not
    reach, a remote one outside its egress allowlist, a provider-hosted connector or tunnel its role does
    not name (``RoleOverrides.connectors``). Under tool abuse: a tool the API may run without asking
    anyone that is destructive (the catalogue, the role's overrides), a server tool by name or one an MCP
    server allows, and an MCP server allowing all of its tools (unless the role exempts it by name)."""
    findings: list[Finding] = []
    for tool in declared:
        findings += _destination_findings(tool, overrides, host_allowed)
        if not tool.asks_approval:
            findings += _unasked_findings(tool, catalogue, overrides)
    return findings


def _destination_findings(
    tool: DeclaredTool, overrides: RoleOverrides, host_allowed: HostCheck
) -> list[Finding]:
    refused: list[tuple[str, dict[str, Any]]] = []
    if tool.connector is not None and not _matches_any((tool.connector.lower(),), overrides.connectors):
        refused.append(
            (
                f"MCP connector {tool.connector} ({tool.name}) is not among the connectors the agent's role "
                "allows (tools.connectors)",
                {"tool": tool.name, "connector": tool.connector},
            )
        )
    refused_server, host = _refused_host(tool.server_url, host_allowed)
    if tool.server_url is not None and refused_server:
        refused.append(
            (
                f"MCP server {tool.name} at {host or 'an unreadable address'} is not on the agent's egress "
                "allowlist",
                {"tool": tool.name, "host": host},
            )
        )
    return [
        _destination_finding(MCP_SERVER_EGRESS_RULE, signal, tool.where, extra) for signal, extra in refused
    ]


def fetch_findings(fetches: Iterable[Fetch], host_allowed: HostCheck) -> list[Finding]:
    """An address the API would fetch for the agent (``Fetch``) that the agent may not reach itself is
    refused under lateral movement, as a remote MCP server is: the API would carry there what its URL
    holds, and bring back what is there. One the model picks (no address given) is refused: the request
    can limit it to domains."""
    findings = []
    for fetch in fetches:
        if fetch.url is None:
            signal = f"{fetch.what} may fetch any address, not only those on the agent's egress allowlist"
            extra: dict[str, Any] = {}
        elif (refused := _refused_host(fetch.url, host_allowed))[0]:
            host = refused[1] or "an unreadable address"
            signal = f"{fetch.what} at {host} is not on the agent's egress allowlist"
            extra = {"host": refused[1]}
        else:
            continue
        findings.append(
            _destination_finding(PROVIDER_FETCH_RULE, f"the API would fetch: {signal}", fetch.where, extra)
        )
    return findings


def _destination_finding(rule: str, signal: str, where: str, extra: dict[str, Any]) -> Finding:
    return Finding(
        threat=Threat.LATERAL_MOVEMENT,
        rule=rule,
        signal=signal,
        severity=Severity.HIGH,
        action=Action.BLOCK,
        where=where,
        owasp="LLM08",
        extra=extra,
    )


def _refused_host(url: str | None, host_allowed: HostCheck) -> tuple[bool, str | None]:
    """Whether the agent's egress allowlist refuses it the host and port ``url`` names (as it does a URL
    naming none readably), and that host."""
    host, port = _server_address(url)
    return host is None or not host_allowed(host, port), host


def _unasked_findings(
    tool: DeclaredTool, catalogue: ToolCatalogue, overrides: RoleOverrides
) -> list[Finding]:
    if tool.mcp_server and tool.allowed_tools is None:
        if name_is(tool.name, overrides.exempt):
            return []
        return [
            Finding(
                threat=Threat.TOOL_ABUSE,
                rule=UNRESTRICTED_SERVER_RULE,
                signal=f"MCP server {tool.name} declared without allowed tools: the API may run any of its "
                "tools, destructive ones among them, without approval",
                severity=Severity.HIGH,
                action=Action.BLOCK,
                where=tool.where,
                owasp="LLM07",
                extra={"tool": tool.name},
            )
        ]
    findings = []
    unasked = (
        [name for name in tool.allowed_tools or () if name not in tool.approval_asked_for]
        if tool.mcp_server
        else [tool.name]
    )
    for name in unasked:
        entry = catalogue.entry_for(name, overrides)
        if entry is not None:
            findings.append(
                Finding(
                    threat=Threat.TOOL_ABUSE,
                    rule=entry.id,
                    signal=f"destructive tool {name} declared for the API to run without approval",
                    severity=entry.severity,
                    action=Action.BLOCK,
                    where=tool.where,
                    owasp=entry.owasp,
                    extra={"tool": name},
                )
            )
    return findings


_C0_OR_SPACE = "".join(map(chr, range(0x21)))


def _server_address(url: str | None) -> tuple[str | None, int]:
    """The host and port a URL names (host None when it names none readably), as the API's fetcher reads
    it: a WHATWG parser takes ``\\`` for ``/`` in a web URL, so ``https://evil.example\\@allowed.example``
    names evil.example, however Python's splitting reads it."""
    url = (url or "").strip(_C0_OR_SPACE)
    if url[:6].lower().startswith(("http:", "https:", "ws:", "wss:")):
        url = url.replace("\\", "/")
    try:
        parts = urllib.parse.urlsplit(url)
        return parts.hostname, parts.port or (80 if parts.scheme == "http" else 443)
    except ValueError:
        return None, 443


CallJudge = Callable[[ToolCall], CatalogueEntry | None]
"""The entry a call is destructive under for what its arguments run, or None."""

ApprovalCheck = Callable[[ToolCall], str | None]
"""Whether the turn's approval id lets this destructive call run: None when it does, else why not."""


def _only_noted(entry: CatalogueEntry) -> bool:
    """What a command tool's arguments run is routine enough to pass (a scratch table dropped, a checkout
    reset) where its rule is below high severity: noted, not withheld, unless the tool's name is."""
    return entry.by_arguments and SEVERITY_ORDER[entry.severity] < SEVERITY_ORDER[Severity.HIGH]


def check_tool_calls(
    calls: Sequence[ToolCall],
    approval_id: str | None,
    catalogue: ToolCatalogue,
    overrides: RoleOverrides = NO_OVERRIDES,
    approve: ApprovalCheck | None = None,
    judge: CallJudge | None = None,
) -> list[Finding]:
    """Findings for the destructive calls in a completion (or an MCP ``tools/call``): by name, or where
    ``judge`` reads the arguments of a command tool as destructive, by what they run (first, as the more
    telling; a role's exemption of the name does not lift it; a rule only noting the call gives way to the
    name's).

    Without an approval id each one is withheld (replaced by :func:`approval_notice` in enforce mode).
    With one, ``approve`` decides: an approved call is recorded as a low-severity note carrying the
    approval, so the audit log shows who approved what; any other is withheld under
    ``approval-invalid``, with the reason. Without ``approve`` no approval id is honoured.
    """
    findings = []
    presented = (approval_id or "").strip()
    for call in calls:
        judged = judge(call) if judge is not None else None
        named = catalogue.entry_for(call.name, overrides)
        entry = judged if judged is not None and (named is None or not _only_noted(judged)) else named
        if entry is None:
            continue
        rule, severity, action, extra = entry.id, entry.severity, Action.WITHHOLD, {"tool": call.name}
        subject = (
            f"tool {call.name} running {entry.description}"
            if entry.by_arguments
            else f"destructive tool {call.name}"
        )
        if _only_noted(entry):
            signal, action = f"{subject} noted", Action.FLAG
        elif not presented:
            signal = f"{subject} called without approval"
        else:
            problem = approve(call) if approve is not None else "approvals are not checked here"
            if problem is None:
                signal = f"{subject} called under approval"
                severity, action, extra["approval_id"] = Severity.LOW, Action.FLAG, presented
            else:
                signal = f"{subject}: {problem}"
                rule, extra["presented_approval_id"] = INVALID_APPROVAL_RULE, presented
        findings.append(
            Finding(
                threat=Threat.TOOL_ABUSE,
                rule=rule,
                signal=signal,
                severity=severity,
                action=action,
                where=call.where,
                owasp=entry.owasp,
                extra=extra,
            )
        )
    return findings


def ran_upstream(findings: list[Finding], calls: Sequence[ToolCall]) -> list[Finding]:
    """``findings`` with those about a call the API already ran (``ToolCall.ran_upstream``) saying so:
    withholding such a call keeps it and its output from the agent, it did not stop it."""
    upstream = {call.where for call in calls if call.ran_upstream}
    said = "the API ran it before answering: withheld from the agent, not prevented"
    return [
        replace(
            finding,
            signal=f"{finding.signal}; {said}",
            extra={**finding.extra, "ran_upstream": True},
        )
        if finding.where in upstream
        else finding
        for finding in findings
    ]


def ran_upstream_notice(name: str) -> str:
    """The assistant text that stands in for a withheld call the API already ran."""
    return (
        f"The call to the tool `{name}` and what it returned were withheld by egressguard: the API ran this "
        f"tool itself, and its policy does not allow it for this agent."
    )


def secret_name_notice(name: str) -> str:
    """The assistant text that stands in for a call whose name carried a secret (``name`` as redacted)."""
    return (
        f"The call to the tool `{name}` was withheld by egressguard: its name carries a secret, which this "
        f"agent's policy does not let leave."
    )


def approval_notice(name: str, approval_id: str | None = None, header: str = APPROVAL_HEADER) -> str:
    """The assistant text that stands in for a withheld call, telling the caller how to get it run."""
    notice = (
        f"The call to the tool `{name}` was withheld by egressguard: it is a destructive action that "
        f"needs human approval."
    )
    if approval_id is None:
        return notice + (
            f" To run it, obtain an approval id and resend this request with the header "
            f"`{header}: <approval id>`."
        )
    return notice + (
        f" Approval {approval_id} is pending (an operator runs "
        f"`egressguard approvals approve {approval_id}`); "
        f"once it is granted, resend this request with the header `{header}: {approval_id}`. "
        f"The approval covers this tool with these exact arguments only."
    )


def entropy_outlier(
    value: float, mean: float, stddev: float, *, z: float = 3.0, min_stddev: float = 0.15
) -> bool:
    """Whether ``value`` lies more than ``z`` standard deviations above the baseline mean.

    Only high entropy is suspicious (encoded or encrypted payloads smuggled in arguments). The floor on
    the deviation keeps a baseline of near-identical arguments from flagging every small change.
    """
    return value > mean + z * max(stddev, min_stddev)


def argument_entropy(arguments: str) -> float | None:
    """The entropy of the most random stretch of ``ENTROPY_WINDOW`` characters of ``arguments`` (windows
    half a window apart, the last one ending at the end), or None for arguments shorter than a window.

    A string's entropy over its own characters grows with its length, as a longer string holds more of
    its alphabet: measured whole, a tool's one long ordinary command stood out against its twenty short
    ones. Windows of one length put every call on one scale, and the most random of them still finds a
    payload of a window and a half or more inside ordinary arguments. Shorter arguments (an id, a path,
    a short query) hold too few characters for their entropy to tell random from written."""
    if len(arguments) < ENTROPY_WINDOW:
        return None
    last = len(arguments) - ENTROPY_WINDOW
    starts = [*range(0, last, ENTROPY_WINDOW // 2), last]
    return max(shannon_entropy(arguments[start : start + ENTROPY_WINDOW]) for start in starts)


def argument_entropy_finding(
    call: ToolCall, entropy: float, mean: float, stddev: float, *, z: float = 3.0, min_stddev: float = 0.15
) -> Finding | None:
    """A flag when a call's arguments, of ``entropy`` (``argument_entropy``), are far more random than this
    tool's usual arguments."""
    if not entropy_outlier(entropy, mean, stddev, z=z, min_stddev=min_stddev):
        return None
    return Finding(
        threat=Threat.TOOL_ABUSE,
        rule=ARGUMENT_ENTROPY_RULE,
        signal=f"arguments of {call.name} have unusual entropy ({entropy:.2f} bits/char vs {mean:.2f})",
        severity=Severity.MEDIUM,
        action=Action.FLAG,
        where=call.where,
        owasp="LLM08",
        extra={"tool": call.name, "entropy": round(entropy, 3)},
    )


def sequence_key(names: Sequence[str]) -> str:
    """A fixed-length signature of the order in which tools were called in one turn.

    Case is folded and immediate repeats collapse (search, search, fetch == search, fetch): a loop that
    runs once more is the same behaviour, a new tool or a new order is not.
    """
    collapsed: list[str] = []
    for name in names:
        lowered = name.strip().lower()
        if not collapsed or collapsed[-1] != lowered:
            collapsed.append(lowered)
    return hashlib.sha256("\x1f".join(collapsed).encode("utf-8")).hexdigest()[:32]


def unseen_sequence_finding(names: Sequence[str], known_keys: Collection[str]) -> Finding | None:
    """A flag when this turn's tool sequence was never seen for the agent (injected behaviour often
    shows up as a new chain of calls)."""
    if not names:
        return None
    key = sequence_key(names)
    if key in known_keys:
        return None
    return Finding(
        threat=Threat.PROMPT_INJECTION,
        rule=UNSEEN_SEQUENCE_RULE,
        signal=f"tool sequence never seen for this agent: {' > '.join(names)}",
        severity=Severity.LOW,
        action=Action.FLAG,
        where="completion.tool_calls",
        owasp="LLM01",
        extra={"sequence_key": key},
    )
