"""Runs every detector over one turn and says what to do about it. Pure: no mitmproxy, no I/O but the
state store.

``Detectors`` is built once per policy (rule packs, the injection model, the tool catalogue).
``TurnInspector`` is made per turn: ``inspect_request`` before the request leaves, then either
``stream_filters`` (set up before the first event) plus ``inspect_completion`` at the end of a stream, or
``inspect_completion`` with ``rewrite=True`` for a JSON response.

Findings always come from the same one-shot detection over the upstream's original text, so a streamed
and a JSON completion give the same findings; enforce mode additionally rewrites what the agent receives
(stream filters or a JSON rewrite), each threat only when the policy enforces it.

A finding is recorded as not enforced, and becomes ``enforced`` only once its action has reached the
bytes: the addon that applies a block, a rewrite or a stream filter reports it (``request_blocked``,
``request_sent``, ``response_sent``, ``stream_sent``), and a redaction counts only when the secret is
gone from what was sent, found by scanning it again. The turn's decision follows the same marks.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import functools
import hashlib
import itertools
import re
import time
import weakref
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, unquote_plus

from proxy.audit.events import recorded_name, recorded_text
from proxy.config.policy import Policy
from proxy.control import freeze
from proxy.control.approvals import Approvals, canonical_arguments
from proxy.detectors import (
    commands,
    compliance,
    credentials,
    handed_files,
    injection,
    leak,
    links,
    refusal,
    scripts,
    tools,
    uploads,
)
from proxy.detectors.baseline import (
    DropThresholds,
    SpikeThresholds,
    Window,
    refusal_rate_drop,
    tool_rate_spike,
)
from proxy.detectors.credential_channel import (
    UNSENT_FIELDS,
    is_provider_key,
    unexpected_finding,
)
from proxy.dialects import (
    MCP,
    Dialect,
    Generic,
    StreamFilters,
    TextFilter,
    TextFilterFactory,
    ToolDecision,
    ToolGate,
    chain_filters,
)
from proxy.dialects.base import ParsedBody, load_json, load_json_with_shadowed, readable_text
from proxy.dialects.filerefs import files_named, may_name_files
from proxy.dialects.gemini import live_request, may_ask_fetches
from proxy.dialects.generic import assembled_parts
from proxy.dialects.locator import get_at, join, locator_steps, parse_locator, set_at
from proxy.dialects.message_text import Channel, Ended, MessageText, delta_places, may_hold_words
from proxy.dialects.messages import MessageCalls, Sending
from proxy.dialects.shapes import may_hold_calls, may_hold_results, sent_results, shaped_calls, shaped_results
from proxy.dialects.stored import may_configure_realtime, realtime_request
from proxy.dialects.stream import (
    AMBIGUOUS_RULES,
    DUPLICATE_KEY_RULE,
    MAX_HELD_BYTES,
    MISPLACED_RULE,
    SHAPE_ERRORS,
    EventScan,
    dump_json,
    encode_json,
)
from proxy.egress import canonical_host, decide, parse_ip_literal
from proxy.exchange import Completion, Part, RequestView, Source, TextSegment, ToolCall
from proxy.model import Action, Decision, Finding, Severity, Threat
from proxy.scanning.redact import (
    ByteStreamRedactor,
    RedactionStyle,
    StreamRedactor,
    fingerprint,
    redact_json,
    redact_text,
    scan_glued,
)
from proxy.scanning.residual import Found, JsonScan, Path, UnescapingFilter, arguments_as_read, looks_nested
from proxy.scanning.rulepack import (
    SCAN_TIMEOUT_RULE,
    Match,
    Rule,
    Scanner,
    load_packaged_packs,
    scan_timeout_finding,
    unread_rule,
)
from proxy.scanning.vault import (
    PREFIX,
    RestoringFilter,
    RestoringScan,
    Scope,
    Sealer,
    Vault,
    known_replacer,
    map_strings,
    restore,
    restore_strings,
)
from proxy.state import StateStore, digest
from proxy.turn import Turn
from proxy.wire import jsontext
from proxy.wire.forms import form_values, repeated
from proxy.wire.multipart import body_framing_doubt, boundary_of, frame_text
from proxy.wire.printable import bridged_runs, printable_runs, text_runs
from proxy.wire.textframes import json_message

CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "cookie",
        "x-amz-security-token",
        "ocp-apim-subscription-key",
    }
)
"""Request headers that carry the agent's own credentials for the API it calls, not data it sends."""
PII_PACK = "pii"
"""The pack of personal data rules: the only rules a credential header's value is read for as data."""
ADDRESS_RULES = frozenset({"ipv4-address", "ipv6-address"})
"""Personal data rules a credential header's value is not read for: load balancers and sticky sessions
write the addresses of servers and clients into the cookies agents return to them."""
CREDENTIAL_HEADER_NAME = re.compile(
    r"(?:^|[-_])(?:[a-z]*(?:token|secret|password|passwd|credentials?)|(?:api|access|private)?key|auth"
    r"(?:entication|orization)?)(?:$|[-_])"
)
"""A request header or query parameter named as a credential (``PRIVATE-TOKEN``, ``X-Auth-Token``,
``DD-API-KEY``, ``apikey``, ``?key=``, ``?access_token=``): tool APIs each name their own, and an agent
sends its key in one on every call."""


@functools.lru_cache(maxsize=1024)
def is_credential_header(name: str) -> bool:
    # Asked for every header of every request, of the same few names turn after turn.
    lowered = name.lower()
    return lowered in CREDENTIAL_HEADERS or CREDENTIAL_HEADER_NAME.search(lowered) is not None


SPLIT_KEY_REACH = 512
"""How far past the value it starts in a provider key split across a header's values is looked for: the
longest keys run to about 200 characters."""


MAX_SPLIT_WINDOWS = 64
"""The most values of one header read each from its own start on; a header of more (a cookie of
thousands of empty pairs, each window a scan of every rule) is read once, its values joined, where a key
that a rule wants no letter before is found only after a value that does not end in one."""


def _across(pieces: list[str]) -> Callable[[Match], bool]:
    """Whether a match in ``pieces`` joined runs across the end of one of them."""
    ends = list(itertools.accumulate(map(len, pieces)))
    return lambda match: bisect.bisect_right(ends, match.start) != bisect.bisect_right(ends, match.end - 1)


def _reaching(pieces: list[str], reach: int) -> str:
    """``pieces`` joined, as far as the first piece that brings them to ``reach`` characters."""
    joined = ""
    for piece in pieces:
        joined += piece
        if len(joined) >= reach:
            break
    return joined


_AROUND_COOKIE_VALUE = ' \t"'
"""What a cookie's reader takes off around its value: the white space around it and the quotes it may be
written in."""


def _set_cookie_value(header: str) -> tuple[int, int]:
    """The span of a ``set-cookie`` header's cookie value as its client reads it (``cookie_values``):
    after its name's ``=``, up to its attributes, without the spaces and quotes around it."""
    end = header.find(";")
    end = len(header) if end < 0 else end
    start = header.find("=", 0, end) + 1
    while start < end and header[start] in _AROUND_COOKIE_VALUE:
        start += 1
    while end > start and header[end - 1] in _AROUND_COOKIE_VALUE:
        end -= 1
    return start, end


def _read_in_credentials(match: Match, *, keys: bool = True) -> bool:
    """Whether a credential header's value is read for ``match``: personal data, and with ``keys`` a
    provider's key (``is_provider_key``); not the other secret rules, which tokens and session cookies,
    random by design, match."""
    return (match.rule.pack == PII_PACK and match.rule.id not in ADDRESS_RULES) or (
        keys and is_provider_key(match.rule)
    )


def cookie_values(cookie: str) -> list[str]:
    """The values of a ``Cookie`` header's pairs (a crumb without ``=`` is a value without a name), as the
    server reads them: spaces and the quotes a value may be written in taken off."""
    return [
        (value if equals else name).strip(_AROUND_COOKIE_VALUE)
        for name, equals, value in (crumb.partition("=") for crumb in cookie.split(";"))
    ]


def credential_parameters(target: str) -> list[tuple[str, int, int]]:
    """The query parameters of a decoded request target named as a credential: each name and the span of
    its value."""
    return [found for found in _query_values(target) if CREDENTIAL_HEADER_NAME.search(found[0].lower())]


def _query_values(target: str) -> list[tuple[str, int, int]]:
    """Each query parameter of a decoded request target that has a value: its name and its value's span."""
    path, mark, query = target.partition("?")
    return form_values(query, len(path) + len(mark)) if mark else []


NAME_SEPARATORS = str.maketrans("", "", "-_")


def name_readings(host: str) -> str:
    """A host name as those it reaches may read it, one reading a line: as written; its labels joined
    two to ``NAME_LABELS_JOINED`` at a time (a key longer than a label's 63 characters spans several,
    and whoever serves the domain joins them); each without the hyphens and underscores that may split a
    key inside a label (``AKIA-QYLP-...``); each also upper-cased (names are read in any case, and a key
    of one case, as an AWS key id is, loses nothing in the other). An address is read as written."""
    readings = [host]
    if parse_ip_literal(host) is None:
        labels = host.split(".")
        readings += [
            "".join(labels[start : start + count])
            for count in range(2, NAME_LABELS_JOINED + 1)
            for start in range(len(labels) - count + 1)
        ]
    readings += [
        reading.translate(NAME_SEPARATORS) for reading in readings if "-" in reading or "_" in reading
    ]
    text = "\n".join(readings)
    return f"{text}\n{text.upper()}"


def credential_values(target: str) -> list[tuple[int, int]]:
    """The spans of a decoded request target's query values whose parameter is named as a credential."""
    return [(start, end) for _, start, end in credential_parameters(target)]


STANDARD_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
METHOD_FIELD = ":method"
"""The name a request method is scanned under with the headers: no header can be named so."""
METHOD_RULE = "inspection.method"
HOST_RULE = "inspection.host"
MULTIPART_RULE = "inspection.multipart"
FRAME_FIELD = "multipart frame"
"""The name a multipart body's frame is scanned under: a header name holds no space."""
WITHHELD_CONTEXT_RULE = "inspection.withheld_context"
TOO_DEEP_RULE = "inspection.too_deep"
HELD_OVER_CAP_RULE = "inspection.held_call_over_cap"
"""Tool calls an upstream streams over a WebSocket's messages, held for the gate's decision past
``MAX_HELD_BYTES``: dropped undecided (their arguments never all read), and the agent told."""
MAX_WORDS_READ = 4096
"""Digests of a WebSocket connection's model texts kept as read (``TurnInspector._words_read``)."""
MAX_MESSAGE_DEPTH = 128
"""The deepest a WebSocket message's arrays and objects may nest to be read: far past any event of a
realtime API (a tool's schema nested 60 levels fits), near enough that walking each level stays cheap."""
KEPT_BY_PROVIDER_S = 30 * 86400
"""How long a provider keeps a stored response or a conversation for a later request to continue (the
Responses API keeps them 30 days): so long is what was withheld from one remembered."""
WITHHOLDING = frozenset({Action.WITHHOLD, Action.QUARANTINE, Action.BLOCK})
NAME_LABELS_JOINED = 5
"""The most labels of a host name read joined: a name is at most 253 characters, so a key of up to about
250 spans at most five labels of 63 or fewer."""

READING_THREATS = (
    Threat.DATA_EXFILTRATION,
    Threat.PROMPT_INJECTION,
    Threat.TOOL_ABUSE,
    Threat.CREDENTIAL_THEFT,
)
"""The threats whose enforcement acts on what a body says (redact, block, quarantine, withhold), in the
order a finding about how a body reads (``inspection.*``: read otherwise by some clients, or not at all)
is filed under them. The others decide on destinations and headers (``lateral_movement``,
``compliance_gap``) or only flag (``jailbreak``, ``context_poisoning``)."""


def reading_threat(policy: Policy) -> Threat | None:
    """The threat whose enforcement refuses, cuts or normalises a body no detector can vouch for, since
    its verdicts are made on one reading of it; None where the policy enforces none of ``READING_THREATS``."""
    return next((threat for threat in READING_THREATS if policy.enforces(threat)), None)


def inspection_threat(policy: Policy) -> Threat:
    """The threat an ``inspection.*`` finding is filed under: ``reading_threat``, or ``data_exfiltration``
    (observed) where none is enforced. Its ``enforced`` can then only say what that threat's policy did."""
    return reading_threat(policy) or Threat.DATA_EXFILTRATION


def repeated_parameters(target: str) -> list[list[tuple[int, int]]]:
    """For each query parameter of a decoded request target named more than once (``repeated``), the
    spans of its values in order. Parameters named as a credential are the agent's own key
    (``credential_values``)."""
    return repeated(
        (name, (start, end))
        for name, start, end in _query_values(target)
        if not CREDENTIAL_HEADER_NAME.search(name.lower())
    )


RESPONSE_CREDENTIAL_HEADERS = frozenset({"set-cookie"})
HEADERS_WHERE = "headers"
UNREAD_LOCATOR = "(a place whose name a rule ran out of time on)"
"""A finding's locator where reading it for secrets ran out of time: written in no record as it was."""
"""Where a finding in a message's headers is: ``headers`` and the header's locator after a space."""
CONTEXT_SOURCES = frozenset({Source.TOOL_RESULT, Source.RETRIEVED_DOCUMENT, Source.TOOL_DESCRIPTION})
INJECTION_SOURCES = CONTEXT_SOURCES | {Source.USER}
SEEN_ONCE_SOURCES = frozenset({Source.SYSTEM, Source.TOOL_DESCRIPTION})
"""Sources that repeat verbatim in every request of a conversation: inspected the first time an agent
sends them, so one poisoned tool description is one finding, not one per turn."""
SEEN_TTL_S = 30 * 24 * 3600.0
INDIRECT_ACTIONS = {"flag": Action.FLAG, "quarantine": Action.QUARANTINE, "block": Action.BLOCK}
# Baselines compare the last hour with the week before it.
REFUSAL_WINDOW_S = TOOL_WINDOW_S = 3600.0
REFUSAL_BASELINE_S = TOOL_BASELINE_S = 7 * 24 * 3600.0
SEQUENCE_HISTORY = 20
"""Tool-using turns an agent needs behind it before a new tool sequence counts as unusual."""
HISTORY_CACHE_ENTRIES = 8192
REPEATED_ENTRIES = 4096
REPEATED_CHARS = 512
"""Longest string of a JSON body or of the response headers (a key, a value no dialect reads as text, a
header's name or value, or a short value read on from the tail of the values of its field before it)
whose matches are kept across turns once it came twice: field names, a date, a server's name, types,
model names, the roles of a conversation's messages."""
ENTROPY_HISTORY = 20
"""Calls of a tool needed before its argument entropy has a baseline."""
ENTROPY_SCALE = 1_000_000
"""Entropies are summed as integers in millionths of a bit, so that store counters can hold them."""


class Detectors:
    """The detectors a policy switches on, loaded once."""

    def __init__(self, policy: Policy, fingerprint_key: bytes, *, vault_key: bytes | None = None) -> None:
        packs = load_packaged_packs()
        optional = set(policy.detection.optional_packs)
        self.sensitive_packs = [
            pack if pack.name not in optional else pack.with_everything_enabled()
            for pack in packs
            if pack.threat is Threat.DATA_EXFILTRATION
        ]
        self.credential_reads = credentials.credential_scanner(packs)
        self.commands = commands.command_scanner(packs)
        time_limit = policy.detection.rule_time_limit_s
        self.sensitive = Scanner(self.sensitive_packs, timeout_s=time_limit)
        self.sensitive_rules = self.sensitive.rules_by_id
        self.sensitive_unread = frozenset(rule.id for rule in self.sensitive.unread.values())
        enforced = [pack for pack in self.sensitive_packs if policy.enforces(pack.threat)]
        # Where every pack is enforced (the packs share one threat), redacting reads what detection read:
        # one scanner, so a turn's scan of a text serves both (``TurnInspector._scan_once``).
        self.redacting = (
            self.sensitive
            if enforced == self.sensitive_packs
            else Scanner(enforced, timeout_s=time_limit)
            if enforced
            else None
        )
        self.injection = injection.load_default(time_limit)
        self.refusal = refusal.default_detector()
        self.tools = tools.ToolCatalogue.load()
        self.fingerprint_key = fingerprint_key
        self.history_matches: dict[str, list[Match]] = {}
        """Secret and PII matches of history texts by digest: a conversation resends them every turn."""
        self.repeated_matches: dict[str, list[Match] | None] = {}
        """Secret and PII matches of short strings (``REPEATED_CHARS``) by digest, once one came twice
        (None: seen once): APIs send the same field names, types and model names in every body, servers
        the same header names, the same date within a second."""
        self.quiet_reads: set[tuple[str, str]] = set()
        """Pairs (a field's text, a short value after it) in which a residual scan found nothing: each
        stream reads the same types and model names after the same text of their field."""
        self.clean_repeats: set[str] = set()
        """Short strings that came twice and in which a scan of their own found nothing (names, types):
        answered without a digest. They hold no secret, so they are kept as they are."""
        self.sealer = Sealer(vault_key) if vault_key is not None and policy.detection.vault else None


@dataclass
class RequestVerdict:
    """``block`` is the finding that stops the request in enforce mode; ``replacements`` rewrite parts."""

    block: Finding | None = None
    replacements: dict[str, str] = field(default_factory=dict)


@dataclass
class ResponsePlan:
    text_map: Callable[[str], str] | None = None
    drop_tool_calls: set[str] = field(default_factory=set)
    notice: str | None = None
    withheld: set[str] = field(default_factory=set)
    """Locators of the tool calls dropped."""
    withheld_for: Finding | None = None
    """The finding of the first call dropped."""
    joined: dict[str, str] = field(default_factory=dict)
    """Texts at locators that carry part of a secret split across two of them, redacted."""

    @property
    def rewrites(self) -> bool:
        return (
            self.text_map is not None
            or bool(self.drop_tool_calls)
            or self.notice is not None
            or bool(self.joined)
        )


LEAK_UNREAD = unread_rule(leak.RULE_ID, Threat.PROMPT_INJECTION, "LLM01", "The system-prompt leak detector")
LINKS_UNREAD = unread_rule("links", Threat.DATA_EXFILTRATION, "LLM02", "The reader of links and images")
"""What a completion's text that the budget had nothing left for is out of time for, besides the scanners'
own (``Scanner.unread``): the readers of a whole completion that are no scan (``_read_bounded``)."""


EXPLAINED_RULES = frozenset(
    {tools.MCP_SERVER_EGRESS_RULE, tools.PROVIDER_FETCH_RULE, MISPLACED_RULE, HELD_OVER_CAP_RULE}
)
"""Refusals whose signal the agent is told: which address the API would reach for it, why a call streamed
to it was dropped unread."""


def block_message(finding: Finding, event_id: str) -> str:
    """What an agent reads when its request is refused: the threat, the rule and the audit event; for a
    tool call, why, and how to get it approved; for ``EXPLAINED_RULES``, why."""
    message = f"egressguard blocked this request: {finding.threat} ({finding.rule}); audit event {event_id}"
    if finding.threat is not Threat.TOOL_ABUSE and finding.rule not in EXPLAINED_RULES:
        return message
    message += f". {finding.signal}."
    pending = finding.extra.get("pending_approval")
    if isinstance(pending, str):
        message += " " + tools.approval_notice(str(finding.extra.get("tool")), pending)
    return message


def _known_while(inspector: weakref.ref[TurnInspector]) -> Callable[[str], list[Match] | None]:
    """``TurnInspector._known`` of ``inspector`` for the scans it makes, which it keeps (``residual``): held
    weakly, so that the inspector and what it holds are freed with their flow rather than left as a cycle
    for the garbage collector (some seventy objects a turn, a collection every ten turns). A scan outliving
    its inspector knows nothing ahead, and scans each text with its document."""

    def known(text: str) -> list[Match] | None:
        alive = inspector()
        return None if alive is None else alive._known(text)

    return known


_CONVERSATION_SOURCES = frozenset({Source.USER, Source.ASSISTANT, Source.TOOL_RESULT})
"""Parts of a request that carry a conversation: one holding none continues one kept elsewhere."""


def _reading_notice(name: str, withholding: list[Finding]) -> str:
    """Why a call that reads credentials, or uploads local data outside the allowlist, cannot run."""
    read = [finding.rule for finding in withholding if finding.rule != uploads.UPLOAD_RULE]
    return credentials.withheld_notice(name, read) if read else uploads.withheld_notice(name)


class TurnInspector:
    def __init__(
        self,
        detectors: Detectors,
        policy: Policy,
        state: StateStore,
        turn: Turn,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.detectors = detectors
        self.clock = clock
        self.policy = policy
        self.state = state
        self.turn = turn
        role = policy.roles[turn.context.role]
        self.overrides = tools.RoleOverrides(
            destructive=role.destructive_tools, exempt=role.exempt_tools, connectors=role.connectors
        )
        self.egress = role.egress
        self.system_prompts: list[str] = []
        self._leak_built: tuple[tuple[str, ...], leak.LeakDetector | None] | None = None
        """The leak detector of ``system_prompts`` as they were when it was built: a response reads its
        text and then rewrites it against the same prompts, and building one shingles every prompt."""
        self._request_from = 0
        self._response_from = 0
        """Where the request's and the response's findings start in ``turn.findings``."""
        self._answer_from: int | None = None
        """Where the findings of the answer (its headers on) start: ``begin_answer``."""
        self.approvals = Approvals(state, clock=clock)
        self.stream_notices: dict[tuple[str | None, ...], str] = {}
        """The notice that stands in for each call a stream's gate dropped, by ``call_identity``: why a
        credential read cannot run, or the pending approval a destructive call needs."""
        self._decided: dict[tuple[str | None, ...], Finding] = {}
        """The finding of each destructive call decided in this turn, by ``_decision_keys``: an approval
        is redeemed once per call, though a streamed call is seen by the gate and again at the end, and
        a realtime API's call in each message that repeats it. Another call at a call's place (a block
        started again at its index, a reading of it with another name or other arguments) is decided on
        its own, never given that call's finding."""
        self._behaviour: dict[tuple[str | None, ...], list[Finding]] = {}
        """What ``_tool_behaviour`` found of each call of a WebSocket message, by ``_decision_keys``: a
        call repeated in later messages is counted once."""
        self._scanned: dict[str, list[Match]] = {}
        """The secret and PII matches of each text this turn has scanned (in scans no rule timed out in):
        the findings, the JSON rewrite, the residual scan of the body and the read-back of what was sent
        read the same text, and the scan of it is the same each time."""
        self._timed_out: dict[str, tuple[list[Match], tuple[str, ...]]] = {}
        """The scans of this turn in which a rule ran out of time even when run again: a text crafted to
        keep a rule busy costs its budgets once per turn, not once for each of those readings."""
        self.locator_budget = detectors.sensitive.budget()
        """The budget of reading findings' locators (``_locator``): the proxy's account of where a finding
        is, kept apart so it neither spends ``budget`` nor is bounded by one budget a finding."""
        self.budget = detectors.sensitive.budget()
        """What every scan of the request, then of the response (``begin_response``) or of one WebSocket
        message, may spend on rules that run out of time, whichever detector runs them; the rules that
        did are settled into findings before anything of it is let through (``_settle_timeouts``)."""
        self._direction_from = 0
        """Where the findings of the request, response or message being read start in ``turn.findings``."""
        self.residual = self.json_scan(redacts=True)
        self._message_scans: dict[bool, JsonScan] = {}
        """The scans of a WebSocket connection's messages, one per direction (True: the agent's), each
        keeping the tail of every field's text across messages."""
        self.message_calls = MessageCalls()
        """The calls an upstream streams over several WebSocket messages, each decided once."""
        self._calls_judged: list[ToolCall] = []
        """The calls read for credential reads so far, in order: what ran before a later call of the turn
        (or of the connection), in a shell that may live on between them."""
        self._judged_fields: set[tuple[object, ...]] = set()
        """The fields of each call of ``_calls_judged``, which tell a call equal to one of them in time
        independent of how many there are."""
        self.calls_refused: list[Finding] = []
        """Why each call streamed over a WebSocket's messages was withheld since the agent was last told."""
        self._message_words: MessageText | None = None
        self._words_read: set[str] = set()
        """Digests of the model's texts a WebSocket connection's messages repeat whole, read once."""
        self.words_before: list[tuple[bytes, Channel | None]] = []
        """The messages to send before the upstream's message last read: the held text of the channels it
        ends, each with the place of the call whose arguments it is (None for the model's words)."""
        self.arguments_as_came: str | None = None
        """The upstream's message last read as it came, where only the arguments of calls in it were
        filtered: sent so where their filters changed nothing of them (``MessageCalls.unchanged``)."""
        self._read_as_text_at = ""
        """The place of the WebSocket message last read as text alone, its JSON nested too deep to walk."""
        self._sent_before: set[str] = set()
        """Fingerprints of secrets part of which left in an earlier event before the rest was found: no
        redaction of them is enforced."""
        settings = policy.detection.vault
        self.vault = (
            Vault(
                state,
                Scope(turn.context.agent_id, turn.context.session_id),
                detectors.sealer,
                detectors.fingerprint_key,
                settings.ttl_s,
                settings.max_entries,
            )
            if settings is not None and detectors.sealer is not None
            else None
        )
        self._uses_recorded = 0

    @property
    def message_words(self) -> MessageText:
        """The model's words a WebSocket upstream streams over its messages, filtered as a stream's text:
        made at a WebSocket's first message, as it holds this inspector (a cycle, left to the garbage
        collector, that an HTTP turn does without)."""
        if self._message_words is None:
            self._message_words = MessageText(self._word_filter, self._argument_filter)
        return self._message_words

    def json_scan(self, *, redacts: bool, placeholder: Callable[[str], str] | None = None) -> JsonScan:
        """A scan of every string of a JSON document (``proxy.scanning.residual``) that redacts what the
        policy enforces when ``redacts``, and otherwise only finds; with ``placeholder`` (a request in
        vault mode) what it finds is recorded as vaulted under the placeholder it names."""
        rewrites = redacts and self.detectors.redacting is not None
        enforces = self.policy.enforces
        return JsonScan(
            self.detectors.sensitive,
            lambda rule: rewrites and enforces(rule.threat),
            RedactionStyle(self.policy.detection.redaction_style),
            key=self.detectors.fingerprint_key,
            rewrites=rewrites,
            placeholder=placeholder,
            known=_known_while(weakref.ref(self)),
            quiet=self.detectors.quiet_reads,
            budget=self.budget,
        )

    # -- request -------------------------------------------------------------------------------------

    def inspect_request(self, view: RequestView) -> RequestVerdict:
        self.system_prompts = [part.text for part in view.parts if part.source is Source.SYSTEM]
        self._request_from = len(self.turn.findings)
        verdict = RequestVerdict()
        # Who, why and under what consent belong to turns that carry a prompt or a tool call; a body-less
        # DELETE or an MCP notification is not a turn an audit asks that of.
        if view.parts or view.tool_calls:
            self._record(self._compliance())
        # An MCP tools/call has no history: its arguments are the agent's data leaving for the tool, read
        # for injection as the prompt is, since a tool may hand what it is passed to a model of its own.
        mcp_call = view.dialect == MCP.name
        fresh = list(view.parts) if mcp_call else self._fresh_parts(view.parts)
        vaults = self.vault is not None and not view.tool_server
        joined = self._across_fields(view)
        self._record(finding for finding, _ in joined)
        pieces_at: dict[str, list[Match]] = {}
        for _, pieces in joined:
            for where, piece in pieces:
                pieces_at.setdefault(where, []).append(piece)
        for part in fresh:
            if part.source in CONTEXT_SOURCES:
                self.turn.context_sources.append(_text_digest(part.text))
            outgoing = part.text
            if part.source in INJECTION_SOURCES or (mcp_call and part.source is Source.ASSISTANT):
                found = self._injection_findings(part)
                self._record(found)
                # A rule that ran out of time is no attempt by the user: it refuses, it does not freeze.
                if part.source is Source.USER and any(finding.rule != SCAN_TIMEOUT_RULE for finding in found):
                    self._count_injection_attempt()
                outgoing = self._quarantined(part, found)
            outgoing = self._secrets_redacted(
                part,
                outgoing,
                self._sensitive(part.text, part.where),
                vaulted=vaults,
                joined=pieces_at.get(part.where, []),
            )
            if outgoing is not part.text:
                verdict.replacements[part.where] = part.written(outgoing)
        # History comes back with every request. Read content's verdict is cached, and what was withheld
        # when it was fresh is withheld again, or the next turn would carry it to the model. An agent keeps
        # its own unredacted history: a secret redacted when it was fresh leaves again in every later
        # request unless it is redacted again there.
        fresh_ids = {id(part) for part in fresh}
        for part in view.parts:
            if id(part) in fresh_ids:
                continue
            outgoing = part.text
            if part.source in CONTEXT_SOURCES:
                found = self._injection_findings(part)
                outgoing = self._quarantined(part, found)
                if outgoing is not part.text:
                    self._record(found)
            outgoing = self._secrets_redacted(
                part,
                outgoing,
                self._sensitive_seen(part.text),
                vaulted=vaults,
                joined=pieces_at.get(part.where, []),
            )
            if outgoing is not part.text:
                verdict.replacements[part.where] = part.written(outgoing)
        if mcp_call:
            # An MCP tools/call is the agent calling the tool itself: withholding it means refusing it.
            self._record(self._destructive_calls(view.tool_calls))
            self._record(self._reads_and_uploads(view.tool_calls) + self._name_secrets(view.tool_calls))
            for call in view.tool_calls:
                self._record(self._rate_limits(call, self.turn.context.agent_id, self.turn.context.user_id))
        self._record_run_upstream(view)
        self._record(self._withheld_continuations(view.continues | view.files_read))
        verdict.block = self.request_block()
        return verdict

    def _record_run_upstream(self, view: RequestView) -> None:
        """What a request lets the API run or fetch for the agent before it answers: the tools it declares
        and the addresses it gives, refused where the agent may not run or reach them."""
        declared = tools.declared_tool_findings(
            view.declared_tools, self.detectors.tools, self.overrides, self._host_allowed
        )
        self._record(declared + tools.fetch_findings(view.fetches, self._host_allowed))

    def _withheld_continuations(self, named: dict[str, str]) -> list[Finding]:
        """What a request or an agent's message continues (a stored response, a conversation, a
        container) or has the provider read (a file), by the locator naming it (``named``), in which
        egressguard withheld something from the agent: the provider hands the model the whole of it, the
        withheld part too, so what names it is refused where that part's threat is enforced."""
        findings = []
        for where, stored in named.items():
            threat = self.state.get(_withheld_key(stored))
            if not isinstance(threat, str) or threat not in Threat:
                continue
            signal = (
                f"names at {where} what the provider keeps, in which egressguard withheld {threat} "
                "content from the agent; the provider would hand it on unread"
            )
            findings.append(
                Finding(
                    threat=Threat(threat),
                    rule=WITHHELD_CONTEXT_RULE,
                    signal=signal,
                    severity=Severity.HIGH,
                    action=Action.BLOCK,
                    where=where,
                    owasp="LLM01",
                )
            )
        return findings

    def remember_withheld(self) -> None:
        """Once the answer is settled: where egressguard withheld any of it (a call, a quarantined tool
        result, the whole answer), the ids the provider keeps it under (the stored response, the
        conversation it joins, the containers its code ran in, the files it wrote) are remembered, so
        that no later request continues from them (``_withheld_continuations``). A stored response the
        request continued keeps only what it held already."""
        view, completion = self.turn.request, self.turn.completion
        if view is None or completion is None or self._answer_from is None:
            return
        withheld = [
            finding
            for finding in self.turn.findings[self._answer_from :]
            if finding.enforced and finding.action in WITHHOLDING
        ]
        if not withheld:
            return
        stored = [completion.response_id] if view.kept and completion.response_id else []
        stored += [kept for where, kept in view.continues.items() if where != "previous_response_id"]
        stored += completion.containers + completion.files_written
        for kept in stored:
            self.state.put(_withheld_key(kept), withheld[0].threat.value, ttl_s=KEPT_BY_PROVIDER_S)

    def _secrets_redacted(
        self, part: Part, outgoing: str, matches: list[Match], *, vaulted: bool, joined: list[Match]
    ) -> str:
        """Records the ``matches`` of a part's text (as vaulted when ``vaulted``); returns ``outgoing`` (the
        part's text, or what is sent instead of it) with them, and the ``joined`` pieces of secrets that
        repeated form fields spell together (``_across_fields``, recorded there), redacted where the policy
        redacts requests. Withheld spans take their secrets with them: what is left of a rewritten text is
        scanned again."""
        self._record(self._sensitive_findings(part.text, matches, part.where, vaulted=vaulted))
        redacted = matches + joined
        if redacted and self.policy.detection.redact_requests and self._redacts(redacted):
            kept = redacted if outgoing is part.text else self._sensitive(outgoing)
            outgoing = self._redact(outgoing, kept)
        return outgoing

    def _across_fields(self, view: RequestView) -> list[tuple[Finding, list[tuple[str, Match]]]]:
        """Secrets and PII a repeated form field's values spell read one after another
        (``RequestView.repeated_fields``), where no one value holds them: each finding, at the part holding
        its first piece, with its pieces, each by the part holding it and its span there."""
        texts = {part.where: part.text for part in view.parts}
        found = []
        spanned: set[tuple[str, tuple[tuple[str, int, int], ...]]] = set()
        for values in view.repeated_fields:
            placed = [(where, start, end) for where, start, end in values if where in texts]
            segments = [TextSegment(texts[where][start:end], where) for where, start, end in placed]
            for match, pieces in self._across(segments):
                joined = "".join(segments[index].text[start:end] for index, start, end in pieces)
                spans = [
                    (placed[index][0], Match(match.rule, placed[index][1] + start, placed[index][1] + end))
                    for index, start, end in pieces
                ]
                places = (match.rule.id, tuple((where, piece.start, piece.end) for where, piece in spans))
                if places in spanned:
                    continue  # the same pieces read again in a longer run of a tool call's fields
                spanned.add(places)
                value = fingerprint(joined, self.detectors.fingerprint_key)
                found.append((self._finding(match.rule, value, spans[0][0]), spans))
        return found

    def scan_url(self, host: str, target: str) -> str | None:
        """A request's target (path and query), read percent-decoded (a query's ``+`` as a space), scanned
        for secrets and PII, since data leaves in a URL as in a body; recorded under ``url`` (not the
        agent's own key in a parameter named as a credential, which ``host`` expects). Returns the target
        with what the policy redacts in requests redacted, or None when nothing changes. The host is read
        where it is decided on, before it is looked up (``scan_host``)."""
        since = len(self.turn.findings)
        for text in {unquote(target), unquote_plus(target)}:
            self._record(self._sensitive_findings(text, self._not_own_credentials(text), "url"))
            self._record(finding for finding, _ in self._across_parameters(text))
        self._record(
            {
                (finding.where, finding.fingerprint): finding
                for text in {unquote(target), unquote_plus(target)}
                for name, start, end in credential_parameters(text)
                for finding in self._unexpected_credentials(
                    canonical_host(unquote(host)), "query parameter", name, text[start:end], f"url ?{name}"
                )
            }.values()
        )
        decoded = unquote_plus(target) if "+" in target else unquote(target)
        matches = self._not_own_credentials(decoded) + [
            piece for finding, pieces in self._across_parameters(decoded) for piece in pieces
        ]
        if not (matches and self.policy.detection.guards_requests and self._redacts(matches)):
            return None
        redacted = self._redact(
            decoded, [match for match in matches if self.policy.enforces(match.rule.threat)]
        )
        sent = quote(redacted, safe="/?&=:;,@!$'()*~+")
        texts = {unquote(sent), unquote_plus(sent)}
        left = self._left_in(texts) | {
            finding.fingerprint or "" for text in texts for finding, _ in self._across_parameters(text)
        }
        self._carry_out_redactions(since, left, None)
        return sent

    def scan_host(self, host: str) -> Finding | None:
        """A destination's name, read before anything looks it up: every name server on the way reads a
        name, and TLS sends it as the server name, so what it holds has left once the proxy resolves it.
        Read as its readers may read it (``name_readings``). A name cannot be rewritten: one holding what
        the policy redacts in requests is a blocking finding (``inspection.host``, under the secret's
        threat), returned for the caller to refuse."""
        text = name_readings(host)
        found = {
            (finding.rule, finding.fingerprint): finding
            for finding in self._sensitive_findings(text, self._sensitive(text, "host"), "host")
        }
        self._record(found.values())
        return self._unrewritable(found.values(), HOST_RULE, "host", "the destination's name")

    def scan_method(self, method: str) -> None:
        """A request's method is a token of any length and letters, sent upstream like a header: scanned
        as one (``scan_headers``). A method cannot be rewritten, so one holding what the policy redacts in
        requests refuses the request (``inspection.method``, under the secret's threat)."""
        if method in STANDARD_METHODS:
            return
        self._scan_unrewritable(METHOD_FIELD, method, METHOD_RULE, "method", "the request method")

    def scan_multipart_frame(self, body: bytes, content_type: str | None) -> None:
        """A multipart body's preamble, boundary (the one its Content-Type, ``content_type``, names), part
        headers and epilogue (``frame_text``), read as one text and scanned as a request's header is. The
        frame is not rewritten: one holding a secret the policy redacts in requests refuses the request
        (``inspection.multipart``, under the secret's threat). Personal data there (an e-mail address in a
        file's name) is recorded, as a header's is. A body its receivers may read as different parts is a
        blocking finding, enforced where data exfiltration is: a Content-Type naming no boundary or two
        (``framing_doubt``), a ``--`` and the boundary some receiver takes for a delimiter and another for
        content (``loose_delimiters``), a body opening with another boundary's parts
        (``framed_otherwise``)."""
        boundary = boundary_of(content_type)
        doubt = body_framing_doubt(body, content_type)
        if doubt is not None:
            self._refuse_part(Threat.DATA_EXFILTRATION, MULTIPART_RULE, "multipart", doubt)
        text = frame_text(body, boundary)
        if text:
            self._scan_unrewritable(
                FRAME_FIELD, text, MULTIPART_RULE, "multipart", "a multipart body's frame", secrets_only=True
            )

    def _scan_unrewritable(
        self, field: str, text: str, rule: str, where: str, part: str, *, secrets_only: bool = False
    ) -> None:
        """``text``, a ``part`` of the request sent as it is, scanned as a request's header named ``field``
        is (``scan_headers``); what it holds that the policy redacts in requests (``secrets_only``: its
        secrets alone) refuses the request (``_unrewritable``)."""
        since = len(self.turn.findings)
        self.scan_headers([(field, text)], sent_by_agent=True)
        found = [
            finding
            for finding in self.turn.findings[since:]
            if not secrets_only or finding.severity is Severity.CRITICAL
        ]
        self._unrewritable(found, rule, where, part)

    def _unrewritable(self, found: Iterable[Finding], rule: str, where: str, part: str) -> Finding | None:
        """A ``part`` of the request that cannot be rewritten (found at ``where``), holding what the policy
        redacts in requests (``found``), is a blocking finding under ``rule`` and the secret's threat:
        recorded, and returned where it is enforced for the caller to refuse."""
        held = [finding for finding in found if finding.action is Action.REDACT]
        if not (held and self.policy.detection.guards_requests):
            return None
        signal = f"{part} holds what is redacted in requests, and cannot be rewritten"
        return self._refuse_part(held[0].threat, rule, where, signal)

    def _refuse_part(self, threat: Threat, rule: str, where: str, signal: str) -> Finding | None:
        """A part of the request that cannot be sent as inspected (found at ``where``): a blocking finding
        under ``rule``, recorded, and returned where it is enforced for the caller to refuse."""
        refusal = Finding(threat, rule, signal, Severity.HIGH, Action.BLOCK, where, "LLM02")
        self._record([refusal])
        return refusal if self._enforceable(refusal) else None

    def _unexpected_credentials(
        self, host: str, kind: str, name: str, value: str, where: str
    ) -> list[Finding]:
        """A credential header's or query parameter's (``kind``) provider keys that ``host`` does not expect
        in a field so named (``proxy.detectors.credential_channel``); a key in the name itself is never
        expected."""
        if name.lower() in UNSENT_FIELDS:
            return []
        expected = self.policy.credentials.expected(host, name.lower())
        return self._unexpected_keys(host, kind, name, frozenset(), where) + self._unexpected_keys(
            host, kind, value, expected, where
        )

    def _unexpected_keys(
        self,
        host: str,
        kind: str,
        text: str,
        expects: Collection[str],
        where: str,
        counted: Callable[[Match], bool] = lambda match: True,
    ) -> list[Finding]:
        """The provider keys in ``text`` of a kind not in ``expects`` (and ``counted``), as findings."""
        found = []
        known = self._known(text)
        for match in self._sensitive(text, where) if known is None else known:
            if is_provider_key(match.rule) and match.rule.id not in expects and counted(match):
                key = fingerprint(text[match.start : match.end], self.detectors.fingerprint_key)
                found.append(unexpected_finding(match.rule, kind, where, host, key))
        return found

    def _split_credentials(self, host: str, fields: list[tuple[str, str]]) -> list[Finding]:
        """The provider keys a credential header repeated (in any case) spells only across its values: an
        HTTP/2 ``cookie`` sent in crumbs (RFC 9113, 8.2.3), which its receiver joins, or any credential
        header sent twice; and those a cookie spells across its values (``a=AKIA...; b=...``), which
        whoever reads the cookies can join. Read one after another from each value on, as far as a key
        reaches (a key must start where a value starts or within it, and a key's rule may ask for no letter
        before it); a key wholly in one value is that value's (``_unexpected_credentials``)."""
        values: dict[str, list[str]] = {}
        for name, value in fields:
            lowered = name.lower()
            values.setdefault(lowered, []).extend(cookie_values(value) if lowered == "cookie" else [value])
        found = []
        for name, pieces in values.items():
            if len(pieces) < 2 or name in UNSENT_FIELDS:
                continue
            expected = self.policy.credentials.expected(host, name)
            where = f'{HEADERS_WHERE} ["{name}"]'
            if len(pieces) > MAX_SPLIT_WINDOWS:
                found += self._unexpected_keys(
                    host, "header", "".join(pieces), expected, where, _across(pieces)
                )
                continue
            for first in range(len(pieces) - 1):
                window = _reaching(pieces[first:], len(pieces[first]) + SPLIT_KEY_REACH)

                def across(match: Match, first_end: int = len(pieces[first])) -> bool:
                    # A key starting further on is a later window's.
                    return match.start < first_end < match.end

                found += self._unexpected_keys(host, "header", window, expected, where, across)
        return found

    def _not_own_credentials(self, target: str) -> list[Match]:
        """The matches in a decoded request target read without the agent's own key for the API, a query
        parameter named as a credential (``?key=`` of Google's REST APIs), as in such a header. The key is
        blanked, not its matches dropped: a match may run from it on into the parameters after it."""
        masked = target
        for start, end in credential_values(target):
            masked = masked[:start] + "\n" * (end - start) + masked[end:]
        # An agent calls the same host and path turn after turn: the scan of a repeated one is kept.
        known = self._known(masked)
        return self._sensitive(masked, "url") if known is None else known

    def _across_parameters(self, target: str) -> list[tuple[Finding, list[Match]]]:
        """Secrets and PII a repeated query parameter's values spell read one after another
        (``repeated_parameters``), where no one value holds them: each finding, under ``url``, with the
        pieces of it in ``target``."""
        found = []
        for spans in repeated_parameters(target):
            segments = [TextSegment(target[start:end], "url") for start, end in spans]
            for match, pieces in self._across(segments):
                joined = "".join(segments[index].text[start:end] for index, start, end in pieces)
                finding = self._finding(
                    match.rule, fingerprint(joined, self.detectors.fingerprint_key), "url"
                )
                at = [spans[index][0] for index, _, _ in pieces]
                found.append(
                    (
                        finding,
                        [
                            Match(match.rule, base + start, base + end)
                            for base, (_, start, end) in zip(at, pieces, strict=True)
                        ],
                    )
                )
        return found

    def response_refused(self) -> Finding | None:
        """The response's first finding that a rule ran out of time on it where the policy enforces that
        rule's threat (any the budget saw settled first): the answer is refused (its findings enforced,
        the turn blocked); None otherwise."""
        return self._refused("response")

    def _refused(self, where: str) -> Finding | None:
        """``response_refused`` of what is being read (a response, a WebSocket message), the findings the
        budget settles placed at ``where``."""
        self._settle_timeouts(where)
        refused = next(
            (
                finding
                for finding in self.turn.findings[self._direction_from :]
                if finding.rule == SCAN_TIMEOUT_RULE and self._enforceable(finding)
            ),
            None,
        )
        if refused is not None:
            self._carry_out(
                self._direction_from, lambda finding: finding.rule == SCAN_TIMEOUT_RULE, Decision.BLOCKED
            )
        return refused

    def settle_escaped_timeouts(self, where: str, *, refused: bool) -> None:
        """A reading stopped at a rule out of time that no caller settled: the rules the budget saw run out
        are findings at ``where``, enforced where what was being read was ``refused``."""
        self._settle_timeouts(where)
        if refused:
            self._carry_out(
                self._direction_from, lambda finding: finding.rule == SCAN_TIMEOUT_RULE, Decision.BLOCKED
            )

    def stream_refused(self) -> Finding | None:
        """``response_refused`` for a response relayed as it arrives, asked after each piece: cheap while no
        rule has run out of time on it."""
        return self.response_refused() if self.budget.timed_out else None

    def _reads_and_uploads(self, calls: list[ToolCall]) -> list[Finding]:
        """``credentials.credential_reads`` of the calls, after the conversation's earlier calls: those
        the request's history holds, then those read before in this turn; not known where the request
        carries no conversation of its own (an MCP ``tools/call``, a stored response or conversation
        continued, an Assistants run, a WebSocket's session). The credential files and metadata URLs
        handed to tools that read no paths (``handed_files.handed_reads``), and the local data the calls'
        commands upload outside the role's egress allowlist (``uploads.outside_allowlist``), which the
        proxy does not see where the commands go straight out."""
        earlier = self._earlier_calls(calls)
        found = credentials.credential_reads(
            calls, self.detectors.credential_reads, self.budget, earlier, self.policy.credentials
        )
        found += handed_files.handed_reads(calls, self.detectors.credential_reads, self.budget)
        found += uploads.outside_allowlist(calls, self._host_allowed, self.budget)
        return tools.ran_upstream(found, calls)

    def _earlier_calls(self, calls: list[ToolCall]) -> list[ToolCall] | None:
        """The calls of the conversation before ``calls``: those the request's history holds, then those
        judged before in this turn (which ``calls`` join); None where the request carries no conversation
        of its own (an MCP ``tools/call``, a stored response or conversation continued, an Assistants run,
        a WebSocket's session)."""
        request = self.turn.request
        judging = {(call.name, call.arguments) for call in calls}
        judged = [call for call in self._calls_judged if (call.name, call.arguments) not in judging]
        new = [call for call in calls if dataclasses.astuple(call) not in self._judged_fields]
        self._calls_judged += new
        self._judged_fields.update(dataclasses.astuple(call) for call in new)
        if (
            request is None
            or request.dialect == MCP.name
            or {"previous_response_id", "conversation"} & set(request.continues)
            or not any(part.source in _CONVERSATION_SOURCES for part in request.parts)
        ):
            return None
        return [*request.tool_calls, *judged]

    def request_blocked(self) -> None:
        """The request was answered with the block response: nothing of it left, so each of its findings
        whose threat the policy enforces is enforced, whatever its action (a secret it would have
        redacted did not leave either), the rules that ran out of time on it among them."""
        self._settle_timeouts("request")
        self._carry_out(self._request_from, lambda _: True, Decision.BLOCKED)

    def begin_answer(self) -> None:
        """The answer's headers arrived: its findings start here (once)."""
        if self._answer_from is None:
            self._answer_from = len(self.turn.findings)

    def answer_withheld(self) -> None:
        """The answer was replaced whole by a refusal: nothing of it reached the agent, so each of its
        findings (headers, body, other readings) whose threat the policy enforces is enforced, whatever
        its action, and the turn is blocked."""
        self.begin_answer()
        assert self._answer_from is not None
        self._settle_timeouts("response")
        self._carry_out(self._answer_from, lambda _: True, Decision.BLOCKED)
        self.turn.escalate(Decision.BLOCKED)

    def scan_request(
        self,
        body: bytes,
        view: RequestView,
        parsed: ParsedBody | None = None,
        original: bytes | None = None,
        original_parsed: ParsedBody | None = None,
    ) -> bytes:
        """A request body (after the parts' rewrite) with every string no part of ``view`` covers scanned:
        fields no dialect models (``metadata``, ``user``, ``prediction``, tool definitions' other fields,
        unknown keys), tool calls in the history, object keys, JSON inside strings, escapes decoded.
        What it finds is recorded, and redacted where the policy redacts requests; in vault mode it is
        recorded as vaulted (``vault_request`` replaces it). ``parsed``: ``body`` as decoded already;
        ``original``: the body as the agent sent it, when ``body`` is its rewrite, and ``original_parsed``
        that body as decoded already."""
        handled = {locator_steps(part.where) for part in view.parts}
        vaulted = self.vault is not None and not view.tool_server
        scan = self.json_scan(
            redacts=self.policy.detection.redact_requests,
            placeholder=self.vault.placeholder if vaulted and self.vault is not None else None,
        )
        return self._scan_document(body, scan, handled, original, parsed, original_parsed)

    def request_sent(self, sent: RequestView, document: Any) -> None:
        """The request left rewritten as the body ``document`` was decoded from (None where it is not JSON;
        ``sent`` is its parse): a redaction is enforced when its secret is nowhere in it (scanned again
        whole), a quarantine when its part carries the notice."""
        left = self._left_in([part.text for part in sent.parts], document) | {
            finding.fingerprint or "" for finding, _ in self._across_fields(sent)
        }
        self._carry_out_redactions(self._request_from, left, None)
        self._carry_out_quarantines(self._request_from, sent.parts)

    def vault_request(self, body: bytes, dialect: Dialect, view: RequestView) -> bytes:
        """The request body as it leaves in vault mode, where the policy enforces it (else ``body``): every
        secret in any string of it (parts, history, fields no dialect reads, JSON inside strings) and
        every value the scope already holds replaced by its placeholder. A message to the agent's own MCP
        server (``RequestView.tool_server``) goes to its tool instead: placeholders in it are replaced by
        their values."""
        vault = self._enforced_vault()
        if vault is None:
            return body
        if view.tool_server:
            replacements = {}
            for part in view.parts:
                restored = _restored(vault, part.text, part.where)
                if restored != part.text:
                    replacements[part.where] = part.written(restored)
            self.record_vault_uses()
            return dialect.rewrite_request(body, replacements) if replacements else body
        document, error = load_json(body)
        if error is not None:
            text = readable_text(body)
            vaulted = text if text is None else self._vault_text(vault, text)
            return body if vaulted == text or vaulted is None else vaulted.encode("utf-8", "surrogateescape")
        document, changed = self._vault_document(vault, document)
        return encode_json(document) if changed else body

    def _vault_document(self, vault: Vault, document: Any, kind: str = "") -> tuple[Any, bool]:
        """A decoded JSON request (or message: ``kind`` names it) with its secrets and the values the
        scope holds replaced by placeholders, and whether anything changed."""
        scan = JsonScan(
            self.detectors.sensitive,
            lambda rule: self.policy.enforces(rule.threat),
            key=self.detectors.fingerprint_key,
            stand_in=lambda rule_id, value: vault.stand_in(value),
            budget=self.budget,
        )
        document, changed = scan.filter(kind, document, ())
        replace_known = known_replacer(vault.commit())
        self._record_vaulted(scan.found)
        if replace_known is not None:
            replaced = map_strings(document, replace_known)
            changed = changed or replaced != document
            document = replaced
        return document, changed

    def _vault_text(self, vault: Vault, text: str) -> str:
        """A request body that is not JSON, vaulted as one text."""
        matches = [match for match in self._sensitive(text) if self.policy.enforces(match.rule.threat)]
        text = redact_text(text, matches, stand_in=lambda rule_id, value: vault.stand_in(value))
        replace_known = known_replacer(vault.commit())
        return text if replace_known is None else replace_known(text)

    def _enforced_vault(self) -> Vault | None:
        return self.vault if self.policy.enforces(Threat.DATA_EXFILTRATION) else None

    def _record_vaulted(self, found: Iterable[Found]) -> None:
        """Secrets of the residual scan that entered the vault with this request and that no finding of
        the turn names yet (what the history carries was recorded when it was fresh)."""
        assert self.vault is not None
        seen = {(finding.rule, finding.fingerprint) for finding in self.turn.findings}
        for item in found:
            placeholder = self.vault.placeholder_of(item.fingerprint)
            if (
                placeholder is None
                or not self.vault.is_new(placeholder)
                or (item.rule.id, item.fingerprint) in seen
            ):
                continue
            seen.add((item.rule.id, item.fingerprint))
            self._record([_vaulted(self._finding(item.rule, item.fingerprint, item.where), placeholder)])

    def record_vault_uses(self) -> None:
        """Findings for the placeholders met on the way back since the last call: one per place for those
        restored (which vaulted secrets this turn used), and one per place for those that do not resolve
        in this agent's and session's vault, which passed on as text."""
        vault = self.vault
        if vault is None:
            return
        uses, self._uses_recorded = vault.uses[self._uses_recorded :], len(vault.uses)
        restored: dict[str, set[str]] = {}
        unresolved: dict[str, set[str]] = {}
        for use in uses:
            (restored if use.value_fingerprint is not None else unresolved).setdefault(use.where, set()).add(
                use.placeholder
            )
        for where, placeholders in restored.items():
            self.turn.add(
                Finding(
                    threat=Threat.DATA_EXFILTRATION,
                    rule="vault-restore",
                    signal="vaulted secrets restored for the agent",
                    severity=Severity.LOW,
                    action=Action.VAULT,
                    where=where,
                    owasp="LLM02",
                    enforced=True,
                    extra={"placeholders": sorted(placeholders)},
                )
            )
        for where, placeholders in unresolved.items():
            self._record(
                [
                    Finding(
                        threat=Threat.CREDENTIAL_THEFT,
                        rule="vault-unresolved",
                        signal="placeholders not vaulted for this agent and session (another's, "
                        "expired, or forgotten beyond the vault's caps) passed on as text",
                        severity=Severity.HIGH,
                        action=Action.FLAG,
                        where=where,
                        owasp="LLM08",
                        extra={"placeholders": sorted(placeholders)},
                    )
                ]
            )

    def restore_response(self, body: bytes, dialect: Dialect) -> bytes:
        """A JSON response as the agent receives it in vault mode: placeholders in every tool call's
        arguments and every string the dialect does not read as text (and in the text too, when the
        policy says so) replaced by their values."""
        vault = self._enforced_vault()
        if vault is None or PREFIX.encode() not in body:
            return body
        document, error = load_json(body)
        if error is not None:
            return body
        completion = dialect.parse_response(body)
        calls = [call.where for call in completion.tool_calls]
        texts = [segment.where for segment in completion.text]
        places = calls + texts if self._restores_text() else calls
        for where in places:
            document = set_at(document, where, _restored(vault, get_at(document, where), where))
        skip = {locator_steps(where) for where in [*calls, *texts]}
        document = restore_strings(document, vault.resolver, skip)
        resolved_before = sum(use.value_fingerprint is not None for use in vault.uses[: self._uses_recorded])
        self.record_vault_uses()
        resolved = sum(use.value_fingerprint is not None for use in vault.uses) - resolved_before
        return encode_json(document) if resolved else body

    def _restores_text(self) -> bool:
        return self.policy.detection.vault is not None and self.policy.detection.vault.restore_in_text

    def _restoring(self, *, json_text: bool) -> TextFilterFactory | None:
        vault = self._enforced_vault()
        if vault is None:
            return None
        return lambda where: RestoringFilter(vault.resolver(where), json_text=json_text)

    def _fresh_parts(self, parts: Iterable[Part]) -> list[Part]:
        """What this request adds to the conversation: everything after the last assistant message (the
        new user turn, new tool results), plus system prompts and tool descriptions the agent has not sent
        before. History was inspected for injection when it was fresh; its secrets are redacted every time."""
        ordered = list(parts)
        last_assistant = max(
            (index for index, part in enumerate(ordered) if part.source is Source.ASSISTANT), default=-1
        )
        fresh = []
        for index, part in enumerate(ordered):
            if part.source in SEEN_ONCE_SOURCES:
                digest = _text_digest(f"{part.source}\0{part.text}")
                # A drill's prompts are read every time and remembered for nobody.
                if self.turn.drill is not None or self.state.add_if_new(
                    f"seen:{self.turn.context.agent_id}", digest, SEEN_TTL_S
                ):
                    fresh.append(part)
            elif index > last_assistant and part.source is not Source.ASSISTANT:
                fresh.append(part)
        return fresh

    def _injection_findings(self, part: Part) -> list[Finding]:
        """The injection detector's findings for a part; in read content, prompt-injection findings take
        the action the policy chose for indirect injection."""
        found = self.detectors.injection.detect(part.text, part.where, part.source, self.budget)
        if part.source not in CONTEXT_SOURCES:
            return found
        action = INDIRECT_ACTIONS[self.policy.detection.indirect_injection]
        return [
            dataclasses.replace(finding, action=action)
            if finding.threat is Threat.PROMPT_INJECTION
            else finding
            for finding in found
        ]

    def _quarantined(self, part: Part, found: list[Finding], *, whole: Action | None = None) -> str:
        """The part's text with what carries an injection withheld, when the policy enforces quarantine
        (or ``whole``, withholding all of it); the part's own text, unchanged, otherwise."""
        enforceable = [
            finding
            for finding in found
            if finding.threat is Threat.PROMPT_INJECTION
            and finding.action in (Action.QUARANTINE, whole)
            and self._enforceable(finding)
        ]
        if not enforceable:
            return part.text
        marker = injection.quarantine_marker((finding.rule for finding in enforceable), self.turn.event_id)
        # Where a rule ran out of time, no span of the text is known to be clean.
        if any(finding.action is whole or finding.rule == SCAN_TIMEOUT_RULE for finding in enforceable):
            return marker
        return self.detectors.injection.quarantine(part.text, part.source, marker, self.budget)

    def _carry_out_quarantines(self, since: int, sent: Iterable[Part]) -> None:
        """Quarantines from index ``since`` are enforced when the part they name went out carrying this
        turn's withheld-content notice."""
        notice = f"{injection.QUARANTINE_NOTICE} ("
        withheld = {part.where for part in sent if notice in part.text and self.turn.event_id in part.text}

        def applied(finding: Finding) -> bool:
            return (
                finding.threat is Threat.PROMPT_INJECTION
                and finding.action in (Action.QUARANTINE, Action.BLOCK)
                and finding.origin == injection.CONTENT_ORIGIN
                and finding.where in withheld
            )

        self._carry_out(since, applied, Decision.REDACTED)

    def _compliance(self) -> list[Finding]:
        settings = self.policy.detection
        context = self.turn.context
        values = {name: getattr(context, name) for name in ("user_id", "session_id", "purpose", "consent_id")}
        # Fields under `require` refuse the turn whether or not `required` also lists them.
        blocking = list(settings.blocking_fields)
        flagged = [name for name in settings.required_fields if name not in settings.blocking_fields]
        return compliance.missing_fields(values, flagged) + compliance.missing_fields(
            values, blocking, block=True
        )

    def _count_injection_attempt(self) -> None:
        context = self.turn.context
        settings = self.policy.detection
        if self.turn.drill is not None:
            return
        recorded_user_id = (
            None
            if context.user_id is None
            else recorded_text(context.user_id, self.detectors.sensitive, self.detectors.fingerprint_key)
        )
        frozen = freeze.record_injection_attempt(
            self.state,
            context.agent_id,
            context.user_id,
            window_s=settings.freeze_window_s,
            threshold=settings.freeze_after,
            agent_threshold=settings.freeze_agent_after,
            ttl_s=settings.freeze_for_s,
            recorded_user_id=recorded_user_id,
        )
        if frozen is not None:
            attempts = settings.freeze_agent_after if frozen == "agent" else settings.freeze_after
            self._record(
                [
                    Finding(
                        threat=Threat.PROMPT_INJECTION,
                        rule="repeat-offender",
                        signal=f"{attempts} injection attempts within the window: {frozen} frozen",
                        severity=Severity.HIGH,
                        action=Action.BLOCK,
                        where=f"context.{frozen}_id",
                        owasp="LLM01",
                    )
                ]
            )

    # -- response ------------------------------------------------------------------------------------

    def stream_filters(self) -> StreamFilters:
        """Filters that rewrite a stream as it passes, for the threats the policy enforces; the residual
        scan also records, in observe mode, what it would redact."""
        redactor = self._stream_redactor()
        factories: list[TextFilterFactory] = [redactor] if redactor is not None else []
        factories += self._answer_filters()
        text_restorer = self._restoring(json_text=False)
        if text_restorer is not None and self._restores_text():
            factories.append(text_restorer)
        # Placeholders are restored after the redactor has read the arguments: a restored secret is the
        # agent's own, not one the model leaked.
        on_arguments = [factory for factory in (redactor, self._restoring(json_text=True)) if factory]
        arguments = chain_filters(*on_arguments)
        gate = self._tool_gate()
        return StreamFilters(
            text_filter=chain_filters(*factories) if factories else None,
            tool_gate=gate,
            drop_notice=self._stream_notice if gate else None,
            argument_filter=(lambda where: UnescapingFilter(arguments(where))) if on_arguments else None,
            residual=self._restoring_residual(),
            content_filter=self._stream_quarantine if self._quarantines() else None,
        )

    def _stream_redactor(self) -> TextFilterFactory | None:
        """A redactor of a stream's text, one a channel, of the secrets the policy enforces (none where it
        enforces none), charged to the budget of what is being read."""
        redacting = self.detectors.redacting
        if redacting is None:
            return None
        style, key = RedactionStyle(self.policy.detection.redaction_style), self.detectors.fingerprint_key

        def make_redactor(where: str) -> TextFilter:
            return StreamRedactor(redacting, style, key=key, budget=self.budget)

        return make_redactor

    def _answer_filters(self) -> list[TextFilterFactory]:
        """The filters of a model's words the policy enforces beside secrets: a leaked system prompt
        redacted, links to hosts outside the allowlist neutralised."""
        factories: list[TextFilterFactory] = []
        leak_detector = self._leak_detector()
        if leak_detector is not None:
            factories.append(lambda where: leak.LeakFilter(leak_detector))
        if self.policy.enforces(Threat.DATA_EXFILTRATION):
            factories.append(lambda where: links.LinkFilter(self._host_allowed, where))
        return factories

    def _word_filter(self, where: str) -> TextFilter:
        """A filter of one channel of a WebSocket upstream's model words, made when the channel starts:
        the system prompts the session set by then are those a leak is read against. Its secrets are
        redacted read joined, as a stream's (``_words_redacted``)."""
        redactor = self._stream_redactor() if self._words_redacted() else None
        return chain_filters(*([redactor] if redactor else []), *self._answer_filters())(where)

    def _argument_filter(self, where: str) -> TextFilter:
        """A filter of the arguments of one call a WebSocket upstream streams a delta a message, JSON text:
        its secrets redacted read joined, as a stream's calls' arguments are (``stream_filters``)."""
        redactor = self._stream_redactor()
        return UnescapingFilter(chain_filters(*([redactor] if redactor else []))(where))

    def _words_redacted(self) -> bool:
        """Whether the secrets of the model's words a WebSocket upstream streams are redacted by their
        channels' filters, read joined: where the policy redacts some, and restores no placeholder in
        them (a restored secret is the agent's own, and restoring comes before those filters)."""
        return self.detectors.redacting is not None and self._enforced_vault() is None

    def _restoring_residual(self) -> EventScan:
        """The residual scan of a stream's events, restoring placeholders after it in vault mode."""
        vault = self._enforced_vault()
        return self.residual if vault is None else RestoringScan(self.residual, vault.resolver)

    def _quarantines(self) -> bool:
        """Enforce mode withholds injections found in read content (quarantine or block)."""
        action = INDIRECT_ACTIONS[self.policy.detection.indirect_injection]
        return action is not Action.FLAG and self.policy.enforces(Threat.PROMPT_INJECTION)

    def _stream_quarantine(self, part: Part) -> str:
        """A streamed piece of read content as it may go out: as in a JSON answer, quarantined, or
        withheld whole when the policy blocks (a response cannot be blocked half-way). Its findings are
        recorded when the stream ends, from the same cached verdict; ``stream_sent`` reads the notice back
        from the bytes that left."""
        return self._quarantined(part, self._injection_findings(part), whole=Action.BLOCK)

    def stream_sent(self, received: Completion, scan: JsonScan) -> None:
        """The stream reached the client as ``received``, read back from the bytes that left by a session
        of the dialect whose ``scan`` (made with ``json_scan(redacts=False)``) read every other string of
        its events: what those bytes no longer carry was enforced, whatever filters ran."""
        left = {found.fingerprint for found in scan.found} | self._left_in_completion(received)
        self._carry_out_response(received, left)

    def response_sent(self, received: Completion, body: bytes) -> None:
        """The JSON response left rewritten as ``body`` and reads back as ``received``: what it no longer
        carries was enforced (see ``_carry_out_response``)."""
        left = self._left_in_completion(received) | self._left_in([], load_json(body)[0])
        self._carry_out_response(received, left)

    def _carry_out_response(self, received: Completion, left: set[str]) -> None:
        """A redaction is enforced when its secret is not among the fingerprints ``left`` in what was
        sent (one without a fingerprint, a link or a leaked prompt, when reading ``received`` again no
        longer finds it), a withheld call when ``received`` does not carry it (its id and name), a
        quarantine when its part carries the notice."""
        original = self.turn.completion.tool_calls if self.turn.completion is not None else []

        def withheld(finding: Finding) -> bool:
            call = next((call for call in original if call.where == finding.where), None)
            if finding.action is not Action.WITHHOLD or call is None:
                return False
            if call.id is not None:
                # A call sent under the id with another name (held to the name decided on) is not this one.
                return not any((sent.id, sent.name) == (call.id, call.name) for sent in received.tool_calls)
            named = [sent for sent in received.tool_calls if sent.name == call.name]
            return len(named) < sum(1 for other in original if other.name == call.name)

        self._carry_out(self._response_from, withheld, Decision.REDACTED)
        self._carry_out_redactions(self._response_from, left, self._found_again(received))
        self._carry_out_quarantines(self._response_from, received.parts)

    def _left_in(self, texts: Iterable[str], document: Any = None) -> set[str]:
        """Fingerprints of the secrets and PII still in ``texts`` and anywhere in ``document`` (every
        string and key, JSON inside strings, escapes decoded)."""
        key = self.detectors.fingerprint_key
        left = {
            fingerprint(text[match.start : match.end], key)
            for text in texts
            for match in self._sensitive(text)
        }
        if document is not None:
            scan = self.json_scan(redacts=False)
            scan.filter("", document, ())
            left |= {found.fingerprint for found in scan.found}
        return left

    def _left_in_completion(self, received: Completion) -> set[str]:
        """Fingerprints still in a completion's texts, in texts read one after another, and in its tool
        calls' arguments as the client decodes them."""
        texts = [segment.text for segment in received.text]
        texts += [arguments_as_read(call.arguments) for call in received.tool_calls]
        return self._left_in(texts) | {
            finding.fingerprint or "" for finding in self._across_findings(received.text)
        }

    def _found_again(self, received: Completion) -> set[tuple[str, str]]:
        """(rule, where) of the link and system-prompt-leak findings that reading ``received`` gives."""
        found: list[Finding] = []
        leak_detector = self._leak_detector(enforced_only=False)
        for segment in received.text:
            found += links.neutralise(segment.text, self._host_allowed, segment.where)[1]
            if leak_detector is not None:
                found += leak_detector.findings(segment.text, segment.where)
        return {(finding.rule, finding.where) for finding in found}

    def refuses_nesting(self, text: str, where: str) -> bool:
        """Whether the WebSocket message ``text`` at ``where`` is refused unread, its JSON nested past
        ``MAX_MESSAGE_DEPTH`` levels: each reading of its shapes walks every level, so a message nested
        thousands deep would hold the proxy's worker from every other connection, and one past a
        reader's recursion would show it no call. Recorded (``inspection.too_deep``); refused where a
        reading threat is enforced, elsewhere read as text alone, on the record."""
        if not jsontext.nests_past(text, MAX_MESSAGE_DEPTH):
            return False
        threat = reading_threat(self.policy)
        refused = threat is not None
        self.turn.add(
            Finding(
                threat=inspection_threat(self.policy),
                rule=TOO_DEEP_RULE,
                signal=f"a WebSocket message nests past {MAX_MESSAGE_DEPTH} levels: "
                + ("refused unread" if refused else "read as text alone"),
                severity=Severity.HIGH,
                action=Action.BLOCK,
                where=where,
                owasp="LLM02",
                enforced=refused,
            )
        )
        if refused:
            self.turn.escalate(Decision.BLOCKED)
        else:
            self._read_as_text_at = where
        return refused

    def _message_json(self, text: str, where: str) -> tuple[Any, str | None]:
        """``load_json`` of the message at ``where``; none for one ``refuses_nesting`` let pass as text."""
        if where == self._read_as_text_at:
            return None, f"nested past {MAX_MESSAGE_DEPTH} levels"
        return load_json(text.encode("utf-8", "surrogatepass"))

    def inspect_message(self, text: str, *, from_client: bool, where: str) -> str | None:
        """One WebSocket text message (realtime APIs, tool channels): findings recorded; the text to
        forward, redacted where the policy enforces it. In vault mode a message the agent sends leaves
        with placeholders (as a request does), and one it receives has the placeholders its agent and
        session vaulted restored in every string (nothing of a message is modelled as text). None where a
        rule ran out of time on it and the policy enforces that rule's threat: the message must not be
        forwarded (its finding is then enforced). Each message has a budget of its own."""
        self._begin_direction()
        forwarded = self._inspect_message(text, from_client=from_client, where=where)
        return None if self._refused(where) is not None else forwarded

    def _inspect_message(self, text: str, *, from_client: bool, where: str) -> str:
        since = len(self.turn.findings)
        matches = self._sensitive(text, where)
        self._record(
            self._sensitive_findings(text, matches, where, vaulted=from_client and self.vault is not None)
        )
        if from_client:
            users = self._users_words(text, where)
            self._record(self.detectors.injection.detect(users, where, Source.USER, self.budget))
        vault = self._enforced_vault()
        if from_client and vault is not None:
            text = self._vault_message(vault, text, where)
            self._carry_out_redactions(since, self._left_in([text]), None)
            return text
        if matches and self._redacts(matches) and (not from_client or self.policy.detection.redact_requests):
            text = self._redact(text, [match for match in matches if self.policy.enforces(match.rule.threat)])
            self._carry_out_redactions(since, self._left_in([text]), None)
        text = self._read_on_across_messages(text, from_client, where)
        if vault is not None and PREFIX in text:
            text = self._restore_message(vault, text, where)
        return text if from_client else self._filter_words(text, where)

    def _users_words(self, text: str, where: str) -> str:
        """An agent's message as the user's words in it are read: without the texts its shape says are
        not the user's (a session's instructions, the descriptions of the tools it declares, its calls'
        results), each read as what it is (``_read_shapes``), as a request's parts are, where a tool's
        description read as a user's prompt escapes the rules of read content and is blamed on the user."""
        if not _may_carry_shapes(text):
            return text
        document, error = self._message_json(text, where)
        if error is not None:
            return text
        try:
            parts = [
                *sent_results(document),
                *live_request(document).parts,
                *realtime_request(document).parts,
            ]
        except SHAPE_ERRORS:  # unread by its shapes (a session that is no object): all of it is the user's
            return text
        blanked = False
        for part in parts:
            with contextlib.suppress(ValueError):
                if part.source is not Source.USER and get_at(document, part.where) == part.text:
                    set_at(document, part.where, "")
                    blanked = True
        return dump_json(document) if blanked else text

    def _filter_words(self, text: str, where: str) -> str:
        """An upstream's message with the model's words it carries read as an answer's text is (a leaked
        system prompt, links to hosts outside the allowlist), each run of deltas as a stream
        (``MessageText``): rewritten where enforced, the held words of the channels it ends to go before
        it (``words_before``). The arguments of calls it streams are read joined so too, where their
        secrets are redacted so (``_joins_arguments``)."""
        self.words_before = []
        self.arguments_as_came = None
        arguments = self._joins_arguments(text)
        if not arguments and not may_hold_words(text):
            return text
        document, error = self._message_json(text, where)
        if error is not None:
            return text
        filtered = self.message_words.filter(document, where, arguments=arguments)
        self._note_unchanged(filtered.ended)
        if filtered.changed and not filtered.reworded:
            self.arguments_as_came = text
        self._read_words(filtered.ended)
        self._read_words(Ended(*whole) for whole in filtered.whole)
        self.words_before = [(json_message(dump_json(before)), call) for before, call in filtered.before]
        return dump_json(filtered.document) if filtered.changed else text

    def _note_unchanged(self, ended: list[Ended]) -> None:
        """Notes the calls whose arguments ended as they came: where the gate held their messages, those
        go as they came (``MessageCalls.unchanged``)."""
        self.message_calls.unchanged.update(
            text.call for text in ended if text.call is not None and text.sent == text.received
        )

    def _joins_arguments(self, text: str) -> bool:
        """Whether the upstream's message ``text`` is read for pieces of calls' arguments, joined: where
        the words' secrets are redacted joined, and it may hold one or end one streaming."""
        return self._words_redacted() and (may_hold_calls(text) or self.message_words.streams_arguments)

    def _read_words(self, texts: Iterable[Ended]) -> None:
        """Findings in the model's texts as received, each read once a connection (its events repeat a
        text whole several times); enforced where what was sent no longer holds them."""
        for text in texts:
            digest = _text_digest(text.received)
            if not text.received.strip() or digest in self._words_read:
                continue
            if len(self._words_read) >= MAX_WORDS_READ:
                self._words_read.clear()
            self._words_read.add(digest)
            since = len(self.turn.findings)
            segment = TextSegment(text.received, text.where)
            leak_detector = self._leak_detector(enforced_only=False)
            # A call's arguments are read as a call's, when it is decided: only a secret split over them here.
            if leak_detector is not None and text.call is None:
                self._read_bounded(segment, LEAK_UNREAD, leak_detector.findings)
            if text.call is None:
                self._read_bounded(segment, LINKS_UNREAD, self._link_findings)
            sent = Completion(text=[TextSegment(text.sent, text.where)])
            found_again = self._found_again(sent) if text.sent != text.received else None
            # A secret split over deltas is read here, where they are joined (one whole in a delta was read
            # with its message), and recorded once a turn, as the residual scan records its findings.
            seen = {(finding.rule, finding.fingerprint) for finding in self.turn.findings}
            split = [
                finding
                for finding in self._sensitive_findings(
                    text.received,
                    [
                        match
                        for match in self._sensitive(text.received, text.where)
                        if any(match.start < cut < match.end for cut in text.cuts)
                    ],
                    text.where,
                )
                if (finding.rule, finding.fingerprint) not in seen
            ]
            self._record(split)
            left = self._left_in([text.sent]) if split else set()
            self._carry_out_redactions(since, left, found_again)

    def gate_message(self, text: str, *, from_client: bool, where: str) -> Finding | None:
        """A WebSocket message ``inspect_message`` has read, read on for what a realtime API carries in it
        by its shape: the tool calls an upstream's event holds, gated as an answer's are (destructive
        calls, credential-file reads), and what tools the API ran returned; the results of its calls an
        agent sends back, read as tool results. A call whose pieces stream over several messages is
        decided once its arguments end (``MessageCalls``), not on the part of it one message carries.
        Findings recorded; the one that withholds the message where the policy enforces it, as it refuses
        a request or answer: a call or injection (an agent's own prompt too) found in it, not a secret its
        redaction took out."""
        self.message_calls.skip()
        if from_client:
            reads = _may_carry_shapes(text) or may_name_files(text)
        else:
            reads = self.message_calls.streaming or may_hold_calls(text)
        if reads and where != self._read_as_text_at:
            with contextlib.suppress(ValueError, RecursionError):  # else read as text alone
                self._read_shapes(jsontext.loads(text), from_client=from_client, where=where)
        refusing = list(filter(self._withholds, self.turn.findings[self._direction_from :]))
        if refusing:
            self._carry_out(self._direction_from, refusing.__contains__, Decision.BLOCKED)
            for key in self.message_calls.placed.keys:
                self.message_calls.streamed.calls[key].refused = True
        for key in self.message_calls.placed.ended:
            self._settle_message_call(key)
        return refusing[0] if refusing else None

    def _withholds(self, finding: Finding) -> bool:
        """Enforce mode withholds the message or call it is of: not a redaction, which rewrites it."""
        return self._enforceable(finding) and finding.action not in (Action.REDACT, Action.VAULT)

    def hold_message(self, content: bytes | None, *, is_text: bool, where: str) -> Sending | None:
        """An upstream's message ``gate_message`` has read (``content`` as it may go, None where
        withheld), where the policy gates calls: None where it goes now as it stands; else the messages to
        send in its place now, in order (``MessageCalls.hold``). One carrying a piece no reading places (a
        delta of no call, a second call started at a call's place, another call's id) is withheld, and the
        call it names dropped."""
        calls = self.message_calls
        placed = calls.take_placed()
        before, self.words_before = self.words_before, []
        as_came, self.arguments_as_came = self.arguments_as_came, None
        if self._tool_gate() is None:
            calls.forget_decided()
            if not before:
                return None
            sent: Sending = [(words, True) for words, _ in before]
            return sent + ([(content, is_text)] if content is not None else [])
        going: Sending = []
        for words, call in before:
            # The held arguments of a call go with it, withheld where it is (or where no call is there).
            if call is not None and call not in calls.streamed.calls:
                continue
            keys = frozenset(() if call is None else (call,))
            released = calls.hold(words, is_text=True, keys=keys, held_of=call)
            going += [(words, True)] if released is None else released
        if placed.stray:
            # The message is withheld and the calls it names dropped: the agent is told once, of both.
            self.calls_refused += self.record_ambiguities({MISPLACED_RULE: 1}, where, normalised=True)
            content = None
            self._drop_message_calls(placed.keys)
        came = json_message(as_came) if as_came is not None and is_text and content is not None else None
        held = calls.hold(content, is_text=is_text, keys=placed.keys, as_came=came)
        sending: Sending | None = going + held if held is not None else None
        if held is None and before and content is not None:
            sending = [*going, (content, is_text)]
        if calls.over_cap():
            cut = Finding(
                threat=inspection_threat(self.policy),
                rule=HELD_OVER_CAP_RULE,
                signal=f"tool calls streamed over messages were held past {MAX_HELD_BYTES} bytes; dropped",
                severity=Severity.HIGH,
                action=Action.BLOCK,
                where=where,
                owasp="LLM02",
                enforced=True,
            )
            self.turn.add(cut)
            self.turn.escalate(Decision.BLOCKED)
            if self._drop_message_calls([key for key, _ in calls.undecided()]):
                self.calls_refused.append(cut)
            sending = (sending or []) + calls.release()
        calls.forget_decided()
        return sending

    def end_messages(self, *, delivering: bool) -> Sending:
        """The connection closes: every call still undecided has all the arguments it will get and is
        decided (one withheld is in ``calls_refused``), and each run of the model's words still streaming
        ends, its held text read and filtered to its end. What was held then goes, in order: the messages
        held behind the calls, but for those of a call withheld, and each run's held text in a delta of its
        own. Where not ``delivering`` (the agent's side no longer takes it) none of it goes, and the turn
        records how much had nowhere to go."""
        for key, _ in list(self.message_calls.undecided()):
            self._settle_message_call(key)
        ended = self.message_words.end()
        self._note_unchanged(ended.ended)
        self._read_words(ended.ended)
        calls, gated = self.message_calls, self._tool_gate() is not None

        def goes(call: Channel | None) -> bool:
            # Where the gate held a call's messages, what its arguments held goes as they went.
            if call is None or not gated:
                return True
            known = calls.streamed.calls.get(call)
            return known is not None and known.decision != "drop" and call not in calls.unchanged

        sending = calls.release() + [
            (json_message(dump_json(held)), True) for held, call in ended.before if goes(call)
        ]
        if delivering or not sending:
            return sending
        self.turn.errors.append(
            f"websocket: {len(sending)} messages held for inspection were not delivered: closed to the agent"
        )
        return []

    def _drop_message_calls(self, keys: Iterable[Any]) -> bool:
        """Drops the calls at ``keys`` streamed over messages, those still undecided, without deciding
        them: whether the agent was not yet told of any of them (by a refusal of a message of it)."""
        calls = [self.message_calls.streamed.calls[key] for key in keys]
        dropped = [call for call in calls if call.decision is None]
        untold = any(not call.refused for call in dropped)
        for call in dropped:
            call.decision = "drop"
            call.refused = True
        return untold

    def _settle_message_call(self, key: Any) -> None:
        """Decides a call streamed over messages on its arguments as they stand, on every reading of it,
        as a call an answer holds whole is decided: dropped where a finding on any reading withholds it.
        Its findings are recorded, at the place of its first piece."""
        call = self.message_calls.streamed.calls[key]
        if call.decision is not None:
            return
        first, *others = call.readings()
        for reading in (first, *others):
            found = (
                self._destructive_calls([reading], repeated=True)
                + self._reads_and_uploads([reading])
                + self._name_secrets([reading])
            )
            if reading is first:
                found += self._repeated_behaviour([reading])
            withholds = any(self._withholds(finding) for finding in found)
            since = len(self.turn.findings)
            if reading is first or withholds:
                self._record(found)
            if withholds:
                call.decision = "drop"
                self._carry_out(since, self._withholds, Decision.BLOCKED)
                if not call.refused:  # else its message's refusal told the agent of it
                    self.calls_refused.append(next(filter(self._withholds, found)))
                return
        # A piece of it refused with its message, the rest cannot go as the call the model made.
        call.decision = "drop" if call.refused else "release"

    def _read_shapes(self, document: Any, *, from_client: bool, where: str) -> None:
        if from_client:
            parts = sent_results(document)
            asked = live_request(document)
            configured = realtime_request(document)
            # A session's instructions are the system prompt its answers must not give away.
            self.system_prompts += [
                part.text
                for part in (*asked.parts, *configured.parts)
                if part.source is Source.SYSTEM and part.text not in self.system_prompts
            ]
            asked.declared_tools += configured.declared_tools
            asked.fetches += configured.fetches
            asked.declared_tools = [
                dataclasses.replace(tool, where=_within(where, tool.where)) for tool in asked.declared_tools
            ]
            asked.fetches = [
                dataclasses.replace(fetch, where=_within(where, fetch.where)) for fetch in asked.fetches
            ]
            self._record_run_upstream(asked)
            named = files_named(document)
            self._record(
                self._withheld_continuations({_within(where, at): file for at, file in named.items()})
            )
            parts += [
                part for part in (*asked.parts, *configured.parts) if part.source is Source.TOOL_DESCRIPTION
            ]
        else:
            opening = self.message_calls.read(document, where)
            calls = [
                dataclasses.replace(call, where=_within(where, call.where))
                for call in shaped_calls(document)
                if call.where not in opening
            ]
            self._record(
                self._destructive_calls(calls, repeated=True)
                + self._reads_and_uploads(calls)
                + self._name_secrets(calls)
            )
            self._record(self._repeated_behaviour(calls))
            parts = shaped_results(document)
        for part in parts:
            self._record(
                self._injection_findings(dataclasses.replace(part, where=_within(where, part.where)))
            )

    def _repeated_behaviour(self, calls: list[ToolCall]) -> list[Finding]:
        """``_tool_behaviour`` of the calls of a message that may repeat calls earlier messages held: a
        repeated call counts once against the limits and baselines, and what was found of it when it came
        first (a rate limit it went over) is found again in each message that repeats it."""
        keys = _decision_keys(calls, by_id=True)
        found = self._tool_behaviour(
            [call for call, key in zip(calls, keys, strict=True) if key not in self._behaviour]
        )
        for call, key in zip(calls, keys, strict=True):
            if key in self._behaviour:
                found += [_repeated(finding, call.where) for finding in self._behaviour[key]]
            else:
                self._behaviour[key] = [finding for finding in found if finding.where == call.where]
        return found

    def _read_on_across_messages(self, text: str, from_client: bool, where: str) -> str:
        """A message's strings read on from the same field's text in the messages before it, as the
        events of a stream are (``JsonScan``): a realtime API sends a reply a delta a message, and a secret
        split across messages is found in the one that completes it, its part there redacted where the
        policy enforces it (the part sent before has left: that finding is not enforced)."""
        scan = self._message_scans.get(from_client)
        if scan is None:
            redacts = not from_client or self.policy.detection.redact_requests
            scan = self._message_scans[from_client] = self.json_scan(redacts=redacts)
        document, error = self._message_json(text, where)
        since = len(self.turn.findings)
        # The deltas of the model's words and calls' arguments are read joined by their channels' filters,
        # which redact them.
        arguments = not from_client and self._joins_arguments(text)
        words = not from_client and self._words_redacted() and may_hold_words(text)
        handled = (
            delta_places(document, arguments=arguments) if error is None and (arguments or words) else ()
        )
        filtered, changed = scan.filter("websocket", text if error is not None else document, handled)
        self._record_residual(scan, where)
        if not changed:
            return text
        sent = filtered if error is not None else dump_json(filtered)
        self._carry_out_redactions(since, self._left_in([sent]), None)
        return str(sent)

    def _vault_message(self, vault: Vault, text: str, where: str) -> str:
        document, error = self._message_json(text, where)
        if error is not None:
            return self._vault_text(vault, text)
        document, changed = self._vault_document(vault, document, where)
        return dump_json(document) if changed else text

    def _restore_message(self, vault: Vault, text: str, where: str) -> str:
        document, error = self._message_json(text, where)
        if error is not None:
            restored = restore(text, vault.resolver(where))
        else:
            resolved = restore_strings(document, vault.resolver, kind=where)
            restored = text if resolved is document else dump_json(resolved)
        self.record_vault_uses()
        return restored

    def inspect_binary(
        self, body: bytes, where: str, *, read_as: Source | None, answer: bool
    ) -> Finding | None:
        """A binary body's printable runs (``printable_runs``), and its tokens split by junk bytes or
        invisible characters read joined (``bridged_runs``), scanned for secrets as any text is; its runs
        read as the same text in its place is: what the model reads as input (``read_as`` says who wrote
        it: the user, a tool's result, a retrieved document; None, or the agent's own tool arguments,
        where it is not read so) for prompt
        injection in its runs that read as words (``text_runs``), each on its own (a text file's
        paragraph, as a text part is read, taking the action the policy chose for an indirect injection
        in read content); an answer (``answer``) for a leaked system prompt and links to hosts outside
        the allowlist in every run (constructs random bytes do not spell). Its findings are recorded.
        Binary cannot be rewritten: a finding whose threat the policy enforces refuses it, and is returned
        (None when nothing refuses it). A link there is flagged, not refused: a file is not rendered by
        the agent's client, so nothing fetches its links unasked, and a package would be refused for the
        badges in its README."""
        since = len(self.turn.findings)
        text = "\n".join(printable_runs(body))
        tokens = "\n".join([text, *bridged_runs(body)])
        self._record(self._sensitive_findings(tokens, self._sensitive(tokens, where), where))
        if read_as in INJECTION_SOURCES:
            found = [
                finding
                for run in text_runs(body)
                for finding in self._injection_findings(Part(read_as, run, where))
            ]
            self._record(found)
            if any(finding.rule != SCAN_TIMEOUT_RULE for finding in found):
                self._count_injection_attempt()
        elif answer:
            leak_detector = self._leak_detector(enforced_only=False)
            if leak_detector is not None:
                self._record(leak_detector.findings(text, where))
            linked = links.neutralise(text, self._host_allowed, where)[1]
            self._record(dataclasses.replace(finding, action=Action.FLAG) for finding in linked)
        self._carry_out(since, lambda _: True, Decision.BLOCKED)
        return next((finding for finding in self.turn.findings[since:] if finding.enforced), None)

    def body_redactor(self) -> ByteStreamRedactor | None:
        """For a text body too large to hold whole: secrets redacted as it passes, where enforced."""
        if self.detectors.redacting is None:
            return None
        style = RedactionStyle(self.policy.detection.redaction_style)
        return ByteStreamRedactor(
            StreamRedactor(
                self.detectors.redacting, style, key=self.detectors.fingerprint_key, budget=self.budget
            )
        )

    def inspect_completion(self, completion: Completion, *, rewrite: bool) -> ResponsePlan:
        """Findings for the completion as the upstream sent it; with ``rewrite`` also the JSON rewrite
        that enforce mode applies."""
        self.turn.completion = completion
        self._response_from = len(self.turn.findings)
        leak_detector = self._leak_detector(enforced_only=False)
        for segment in completion.text:
            matches = self._sensitive(segment.text, segment.where)
            self._record(self._sensitive_findings(segment.text, matches, segment.where))
            if leak_detector is not None:
                self._read_bounded(segment, LEAK_UNREAD, leak_detector.findings)
            self._read_bounded(segment, LINKS_UNREAD, self._link_findings)
        self._record(self._across_findings(completion.text))
        for call in completion.tool_calls:
            # Scanned as the client's json.loads will read them, escapes decoded.
            arguments = arguments_as_read(call.arguments)
            matches = self._sensitive(arguments, call.where)
            self._record(self._sensitive_findings(arguments, matches, call.where))
        quarantined: dict[str, str] = {}
        for part in completion.parts:
            if part.source in CONTEXT_SOURCES:
                self.turn.context_sources.append(_text_digest(part.text))
                found = self._injection_findings(part)
                self._record(found)
                # A response cannot be blocked half-way: blocking read content there withholds it whole.
                outgoing = self._quarantined(part, found, whole=Action.BLOCK)
                if outgoing is not part.text:
                    quarantined[part.text] = outgoing
        tool_findings = self._destructive_calls(completion.tool_calls) + self._tool_behaviour(
            completion.tool_calls
        )
        self._record(tool_findings)
        credential_findings = self._reads_and_uploads(completion.tool_calls) + self._name_secrets(
            completion.tool_calls
        )
        self._record(credential_findings)
        self._refusal(completion.full_text)
        self._record_residual(self.residual)
        if not rewrite:
            self.record_vault_uses()  # a stream was restored as it passed
            # Sent already: what the budget left unread of the whole text is recorded, not enforced.
            self._settle_timeouts("response")
        call_findings = tool_findings + credential_findings
        return self._json_plan(completion, call_findings, quarantined) if rewrite else ResponsePlan()

    def _read_bounded(
        self, segment: TextSegment, unread: Rule, read: Callable[[str, str], Iterable[Finding]]
    ) -> None:
        """Records what ``read`` finds in a segment's text, charged to the budget as a scan is; where the
        budget has nothing left for the text, ``unread`` is out of time there instead."""
        if segment.text and self.budget.spent_for(len(segment.text)):
            self.budget.timed_out.setdefault(unread.id, unread)
            self._record([scan_timeout_finding(unread, segment.where)])
            return
        self.budget.allow(len(segment.text))
        with self.budget.metered():
            found = list(read(segment.text, segment.where))
        self._record(found)

    def _link_findings(self, text: str, where: str) -> list[Finding]:
        return links.neutralise(text, self._host_allowed, where)[1]

    def inspect_other_readings(self, readings: list[tuple[str, Completion]]) -> None:
        """Findings in what clients that read a stream otherwise than its dialect's session read
        (``StreamSession.other_readings``): secrets and PII in texts (across texts too) and arguments,
        destructive calls and credential reads, injection in read content. Recorded once, marked with the
        reading, where the session's own reading did not find them; none changes what was sent (what is
        read otherwise is only left unrewritten where nothing filters the stream)."""
        for reading, completion in readings:
            found: list[Finding] = []
            for segment in completion.text:
                found += self._sensitive_findings(segment.text, self._sensitive(segment.text), segment.where)
            found += self._across_findings(completion.text)
            for call in completion.tool_calls:
                arguments = arguments_as_read(call.arguments)
                found += self._sensitive_findings(arguments, self._sensitive(arguments), call.where)
            found += tools.check_tool_calls(
                completion.tool_calls,
                None,
                self.detectors.tools,
                self.overrides,
                judge=self._command_judge(completion.tool_calls),
            )
            found += self._reads_and_uploads(completion.tool_calls)
            for part in completion.parts:
                if part.source in CONTEXT_SOURCES:
                    found += self._injection_findings(part)
            self._record_read_as(found, reading)

    def inspect_other_request(self, view: RequestView, other: RequestView, reading: str) -> None:
        """Findings in ``other``, the request as a reader that reads its body otherwise than ``view`` reads
        it (a repeated key's first value), where its parts differ: injection, secrets and PII, and for an
        MCP call destructive tools and credential reads. Recorded, marked with the reading; the body that
        left is what it was (only observe mode leaves it so)."""
        read = {part.text for part in view.parts}
        found: list[Finding] = []
        for part in other.parts:
            if part.text in read:
                continue
            if part.source in INJECTION_SOURCES:
                found += self._injection_findings(part)
            found += self._sensitive_findings(part.text, self._sensitive(part.text), part.where)
        if other.dialect == MCP.name:
            found += tools.check_tool_calls(
                other.tool_calls,
                None,
                self.detectors.tools,
                self.overrides,
                judge=self._command_judge(other.tool_calls),
            )
            found += self._reads_and_uploads(other.tool_calls)
        self._record_read_as(found, reading)

    def _record_read_as(self, found: list[Finding], reading: str) -> None:
        """Findings of another reading that the turn does not hold yet, marked with that reading."""
        known = {(finding.rule, finding.fingerprint or finding.where) for finding in self.turn.findings}
        for finding in found:
            if (finding.rule, finding.fingerprint or finding.where) in known:
                continue
            known.add((finding.rule, finding.fingerprint or finding.where))
            self._record([dataclasses.replace(finding, extra={**finding.extra, "read_as": reading})])

    def record_ambiguities(
        self, ambiguities: dict[str, int], where: str, *, normalised: bool
    ) -> list[Finding]:
        """Records what clients read differently in a body or stream (``StreamSession.ambiguities``):
        ``normalised`` when it left rewritten to the one reading that was inspected. The findings."""
        normalised = normalised and self.normalises
        found: list[Finding] = []
        for rule, count in ambiguities.items():
            found.append(
                Finding(
                    threat=inspection_threat(self.policy),
                    rule=rule,
                    signal=AMBIGUOUS_RULES[rule],
                    severity=Severity.MEDIUM,
                    action=Action.REDACT,
                    where=where,
                    owasp="LLM02",
                    enforced=normalised,
                    count=count,
                )
            )
            self.turn.add(found[-1])
            if normalised:
                self.turn.escalate(Decision.REDACTED)
        return found

    def _json_plan(
        self, completion: Completion, call_findings: list[Finding], quarantined: dict[str, str]
    ) -> ResponsePlan:
        """``quarantined`` maps read content (MCP tool results and descriptions) to what is sent instead;
        ``call_findings`` are those about tool calls, whose calls are withheld where their threat is
        enforced (destructive calls for ``tool_abuse``, credential reads for ``credential_theft``)."""
        plan = ResponsePlan()
        steps: list[Callable[[str], str]] = []
        if quarantined:
            steps.append(lambda text: quarantined.get(text, text))
        if self.detectors.redacting is not None:
            steps.append(self._redact_enforced)
        # A reader the budget ran out on refuses the answer (``response_refused``): it is not run again.
        leak_detector = self._leak_detector()
        if leak_detector is not None and LEAK_UNREAD.id not in self.budget.timed_out:
            steps.append(lambda text: leak_detector.redact(text)[0])
        if self.policy.enforces(Threat.DATA_EXFILTRATION) and LINKS_UNREAD.id not in self.budget.timed_out:
            steps.append(lambda text: links.neutralise(text, self._host_allowed)[0])
        if steps:
            plan.text_map = _compose(steps)
        plan.joined = self._redact_across(completion.text)
        withholding = [
            finding
            for finding in call_findings
            if finding.action is Action.WITHHOLD and self.policy.enforces(finding.threat)
        ]
        dropped = [call for call in completion.tool_calls if call.where in {f.where for f in withholding}]
        plan.drop_tool_calls = {call.id or call.where for call in dropped}
        plan.withheld = {call.where for call in dropped}
        plan.withheld_for = next((finding for finding in withholding if finding.where in plan.withheld), None)
        if dropped:
            plan.notice = "\n\n".join(self._withheld_notice(call, withholding) for call in dropped)
        return plan

    def _withheld_notice(self, call: ToolCall, withholding: list[Finding]) -> str:
        """A call withheld for a secret in its name says so; a destructive call's notice says how to get it
        approved; a credential read's or an upload's, why it cannot run."""
        name = self._shown_name(call.name)
        if call.ran_upstream:
            return tools.ran_upstream_notice(name)
        own = [finding for finding in withholding if finding.where == call.where]
        # A secret in the name withholds the call whatever else does: no approval would let it run.
        named = [finding for finding in own if finding.rule != uploads.UPLOAD_RULE]
        if any(finding.threat is Threat.DATA_EXFILTRATION for finding in named):
            return tools.secret_name_notice(name)
        destructive = [finding for finding in own if finding.threat is Threat.TOOL_ABUSE]
        if destructive:
            pending = destructive[0].extra.get("pending_approval")
            return tools.approval_notice(name, str(pending) if pending is not None else None)
        return _reading_notice(name, own)

    def _tool_behaviour(self, calls: list[ToolCall]) -> list[Finding]:
        """Per-tool rate limits, call frequency against the agent's baseline, argument entropy against the
        tool's usual arguments, and tool sequences the agent has never produced. A drill's calls are none
        of the agent's behaviour: they neither count against its limits nor move its baselines."""
        if not calls or self.turn.drill is not None:
            return []
        agent, user = self.turn.context.agent_id, self.turn.context.user_id
        findings: list[Finding] = []
        for call in calls:
            findings += self._rate_limits(call, agent, user)
            findings += self._entropy(call, agent)
        for name in {call.name for call in calls}:
            key = f"tool.calls:{agent}:{digest(name)}"
            for _ in range(sum(call.name == name for call in calls)):
                self.state.tally(key, TOOL_BASELINE_S)
            recent_calls = self.state.count(key, TOOL_WINDOW_S)
            recent = Window(events=recent_calls, exposure=TOOL_WINDOW_S / 3600)
            baseline = Window(
                events=max(0, self.state.count(key, TOOL_BASELINE_S) - recent_calls),
                exposure=self._observed_hours(agent),
            )
            spike = tool_rate_spike(name, recent, baseline, SpikeThresholds())
            findings += [spike] if spike else []
        names = [call.name for call in calls]
        tool_turns = self.state.incr(f"tool.turns:{agent}")
        is_new = self.state.add_if_new(f"tool.sequences:{agent}", tools.sequence_key(names), SEEN_TTL_S)
        if is_new and tool_turns > SEQUENCE_HISTORY:
            unseen = tools.unseen_sequence_finding(names, known_keys=())
            findings += [unseen] if unseen else []
        return findings

    def _observed_hours(self, agent: str) -> float:
        """Hours of baseline behind the recent window: since the agent was first seen, up to a week."""
        first = self.state.get(f"tool.first_seen:{agent}")
        now = self.clock()
        if not isinstance(first, float | int):
            self.state.put(f"tool.first_seen:{agent}", now, TOOL_BASELINE_S)
            return 0.0
        return max(0.0, min(now - float(first), TOOL_BASELINE_S) - TOOL_WINDOW_S) / 3600

    def _rate_limits(self, call: ToolCall, agent: str, user: str | None) -> list[Finding]:
        findings = []
        for glob, limit, window_s in self.policy.roles[self.turn.context.role].tool_limits:
            if not tools.name_matches(call.name, (glob,)):
                continue
            for scope in (f"agent:{agent}", *([f"user:{digest(user)}"] if user else [])):
                calls = self.state.hit(f"tool.limit:{digest(glob)}:{scope}", window_s)
                if calls > limit:
                    findings.append(
                        Finding(
                            threat=Threat.TOOL_ABUSE,
                            rule="tool-rate-limit",
                            signal=f"{call.name}: call {calls} in the window, over {limit} per "
                            f"{scope.split(':')[0]}",
                            severity=Severity.MEDIUM,
                            action=Action.WITHHOLD,
                            where=call.where,
                            owasp="LLM08",
                            extra={"tool": call.name, "limit": limit, "window_s": window_s},
                        )
                    )
                    break
        return tools.ran_upstream(findings, [call])

    def _entropy(self, call: ToolCall, agent: str) -> list[Finding]:
        """The tool's argument entropy against the mean and deviation of its earlier calls; outliers flag
        once the baseline has enough calls.

        The baseline is three counters (calls, sum and sum of squares in millionths) because a counter
        increment is atomic in every store: workers and replicas sharing one baseline never lose each
        other's calls, as a read-then-write of a mean and variance would."""
        value = tools.argument_entropy(call.arguments)
        if value is None:
            return []
        prefix = f"tool.window-entropy:{agent}:{digest(call.name)}"
        scaled, scaled_square = round(value * ENTROPY_SCALE), round(value * value * ENTROPY_SCALE)
        count = self.state.incr(prefix + ":n", ttl_s=TOOL_BASELINE_S) - 1
        total = (self.state.incr(prefix + ":sum", scaled, ttl_s=TOOL_BASELINE_S) - scaled) / ENTROPY_SCALE
        squares = (
            self.state.incr(prefix + ":squares", scaled_square, ttl_s=TOOL_BASELINE_S) - scaled_square
        ) / ENTROPY_SCALE
        if count < ENTROPY_HISTORY:
            return []
        mean = total / count
        variance = max(0.0, (squares - count * mean * mean) / (count - 1))
        finding = tools.argument_entropy_finding(call, value, mean, variance**0.5)
        return [finding] if finding else []

    def scan_assembled_parts(self, body: bytes, boundary: bytes | None) -> bytes:
        """A multipart answer of ``boundary``, after its texts were read whole and as the body it is, with
        what its parts' contents hold joined in the order a client assembles them (``assembled_parts``: a
        byte range's pieces of one file) recorded, and redacted in each part where enforced: a secret
        split over two ranges is whole to such a client, and to no other reading."""
        segments = assembled_parts(body, boundary)
        self._record(self._across_findings(segments))
        joined = self._redact_across(segments)
        return Generic(boundary).rewrite_request(body, joined) if joined else body

    def scan_body(
        self, body: bytes, sent_by_upstream: bytes, upstream_parsed: ParsedBody | None = None
    ) -> bytes:
        """A JSON response body, after the dialect's rewrite of what the upstream sent, with every string
        the dialect does not read as text (unknown fields, keys, JSON inside strings, tool arguments as
        decoded) scanned, and redacted where enforced. Its findings are recorded; a body that is not JSON
        is returned as is. ``upstream_parsed``: ``sent_by_upstream`` as decoded already (its document the
        scan's to change where ``body`` is that body)."""
        parsed = upstream_parsed if body is sent_by_upstream else None
        return self._scan_document(body, self.residual, (), sent_by_upstream, parsed, upstream_parsed)

    def _scan_document(
        self,
        body: bytes,
        scan: JsonScan,
        handled: Collection[Path],
        original: bytes | None = None,
        parsed: ParsedBody | None = None,
        original_parsed: ParsedBody | None = None,
    ) -> bytes:
        """``body`` with what ``scan`` redacts outside ``handled`` redacted, its findings recorded. The
        values a repeated key shadows in it (or in the ``original`` it was rewritten from) are scanned
        too, and where the scan rewrites, the body is sent without them: a reader that keeps a repeated
        key's first value must read what was inspected. ``parsed`` is ``body`` decoded (its document is
        the scan's to change), ``original_parsed`` the ``original`` decoded (its shadowed values read)."""
        document, shadowed, error = parsed if parsed is not None else load_json_with_shadowed(body)
        if error is not None:
            return body
        if original is not None and original != body:
            before = original_parsed if original_parsed is not None else load_json_with_shadowed(original)
            shadowed = shadowed + before[1]
        filtered, changed = scan.filter("", document, handled)
        if shadowed:
            scan.filter("shadowed by a repeated key", shadowed, ())
            changed = changed or self.normalises
            self.record_ambiguities({DUPLICATE_KEY_RULE: len(shadowed)}, "body", normalised=changed)
        self._record_residual(scan)
        return encode_json(filtered) if changed else body

    @property
    def normalises(self) -> bool:
        """Whether a body that readers may read otherwise leaves as the one reading inspected (or is
        refused): where the policy enforces a threat decided on what the body says (``reading_threat``),
        since every verdict is made on that reading."""
        return reading_threat(self.policy) is not None

    def scan_headers(
        self, headers: list[tuple[str, str]], *, sent_by_agent: bool = False
    ) -> list[tuple[str, str]] | None:
        """Response headers (or, ``sent_by_agent``, a request's) with secrets in their names or values
        redacted where enforced (for a request, where requests are redacted); findings recorded either
        way; None when nothing changes. A request's credential headers (the agent's own credentials for the
        API it calls: ``is_credential_header``) are read for provider keys the host does not expect there and
        for personal data only; a response's ``set-cookie`` (a session a server hands its client, random by
        design) for provider keys and personal data only (``_credential_redacted``)."""

        kept = [
            is_credential_header(name) if sent_by_agent else name.lower() in RESPONSE_CREDENTIAL_HEADERS
            for name, _ in headers
        ]
        redacts = self.policy.detection.guards_requests if sent_by_agent else True
        fields = [header for header, credential in zip(headers, kept, strict=True) if not credential]
        # One object per header: each name is a field of its own, so a value is read on from the values
        # of the same header before it (a list joins them), not from every other header's text. The scan
        # is this call's alone: a header it would only file away (its name and value known to hold
        # nothing, no other value of its name, in any case, to read on into) is left out, its place kept.
        named = Counter(name.lower() for name, _ in fields)
        document = [
            {} if named[name.lower()] == 1 and self._reads_as_nothing(name, value) else {name: value}
            for name, value in fields
        ]
        since = len(self.turn.findings)
        credentials_sent: dict[int, str] = {}
        host = self.turn.egress_host or ""
        for index, (name, value) in enumerate(headers):
            if not kept[index]:
                continue
            where = f'{HEADERS_WHERE} ["{name}"]'
            if sent_by_agent:
                self._record(self._unexpected_credentials(host, "header", name, value, where))
            sent = self._credential_redacted(value, where, redacts=redacts, keys=not sent_by_agent)
            if sent != value:
                credentials_sent[index] = sent
        if sent_by_agent:
            credential_fields = [
                header for header, credential in zip(headers, kept, strict=True) if credential
            ]
            self._record(self._split_credentials(host, credential_fields))
        else:
            credentials_sent.update(self._cookies_across(headers, kept, credentials_sent))
        if not any(document):
            return self._credentials_rewritten(since, headers, credentials_sent)
        # A scan of their own: a body's scan reads each field on from its text before (in a stream, from
        # the events before), and a header read into it would redact a body value by a header's text.
        scan = self.json_scan(redacts=redacts)
        filtered, changed = scan.filter(HEADERS_WHERE, document, ())
        spellings: dict[str, set[str]] = {}
        for entry in filtered:
            for name in entry:
                spellings.setdefault(name.lower(), set()).add(name)
        if any(len(names) > 1 for names in spellings.values()):
            # A header named in several cases is one field to its receiver: read again under one name,
            # its values are read on from one another as those of one spelling are.
            folded = [{name.lower(): value for name, value in entry.items()} for entry in filtered]
            rescan = self.json_scan(redacts=redacts)
            refolded, changed_again = rescan.filter(HEADERS_WHERE, folded, ())
            scan.found += rescan.found
            scan.timed_out += rescan.timed_out
            if changed_again:
                filtered = [
                    dict(zip(entry, again.values(), strict=True))
                    for entry, again in zip(filtered, refolded, strict=True)
                ]
                changed = True
        self._record_residual(scan, HEADERS_WHERE)
        if not changed:
            return self._credentials_rewritten(since, headers, credentials_sent)
        self._carry_out_redactions(since, self._left_in(credentials_sent.values(), filtered), None)
        scanned = (next(iter(item.items()), field) for field, item in zip(fields, filtered, strict=True))
        return [
            (name, credentials_sent.get(index, value)) if kept[index] else next(scanned)
            for index, (name, value) in enumerate(headers)
        ]

    def _credential_redacted(self, value: str, where: str, *, redacts: bool, keys: bool) -> str:
        """A credential header's value with the personal data in it, and with ``keys`` the provider keys
        (``is_provider_key``), recorded, and redacted where ``redacts`` and the policy enforces them. The
        other secret rules do not count there: tokens, JWTs and session cookies are random by design, which
        the generic secret rules read as secrets. A request's provider keys are the agent's own credentials
        (one the host does not expect is ``_unexpected_credentials``'); a cookie a server sets holds none of
        a provider's."""
        known = self._known(value)
        found = self._sensitive(value, where) if known is None else known
        matches = [match for match in found if _read_in_credentials(match, keys=keys)]
        self._record(self._sensitive_findings(value, matches, where))
        if matches and redacts and self._redacts(matches):
            return self._redact(
                value, [match for match in matches if self.policy.enforces(match.rule.threat)]
            )
        return value

    def _cookies_across(
        self, headers: list[tuple[str, str]], kept: list[bool], sent: dict[int, str]
    ) -> dict[int, str]:
        """A provider key or personal data that a response's cookies spell only across their values
        (``a=AKIA…`` and ``b=…`` in two ``set-cookie`` headers), which whoever reads the cookies can join,
        as a request's ``cookie`` crumbs are (``_split_credentials``): recorded, and each piece redacted in
        its header where enforced. Returns the headers so rewritten, by index; those ``sent`` rewrote
        already are not read again."""
        spans = {
            index: (value, *_set_cookie_value(value))
            for index, (_, value) in enumerate(headers)
            if kept[index] and index not in sent
        }
        if len(spans) < 2:
            return {}
        indexes = list(spans)
        segments = [
            TextSegment(value[start:end], f'{HEADERS_WHERE} ["{headers[index][0]}"]')
            for index, (value, start, end) in spans.items()
        ]
        across = [(match, pieces) for match, pieces in self._across(segments) if _read_in_credentials(match)]
        key = self.detectors.fingerprint_key
        pieces_of: dict[int, list[Match]] = {}
        for match, pieces in across:
            joined = "".join(segments[index].text[start:end] for index, start, end in pieces)
            self._record([self._finding(match.rule, fingerprint(joined, key), segments[pieces[0][0]].where)])
            if self.detectors.redacting is not None and self.policy.enforces(match.rule.threat):
                for index, start, end in pieces:
                    pieces_of.setdefault(index, []).append(Match(match.rule, start, end))
        rewritten = {}
        for segment, matches in pieces_of.items():
            value, start, end = spans[indexes[segment]]
            rewritten[indexes[segment]] = (
                value[:start] + self._redact(value[start:end], matches) + value[end:]
            )
        return rewritten

    def _credentials_rewritten(
        self, since: int, headers: list[tuple[str, str]], sent: dict[int, str]
    ) -> list[tuple[str, str]] | None:
        """``headers`` with the credential values at the indexes of ``sent`` rewritten (their redactions
        from index ``since`` carried out), or None when ``sent`` is empty."""
        if not sent:
            return None
        self._carry_out_redactions(since, self._left_in(sent.values()), None)
        return [(name, sent.get(index, value)) for index, (name, value) in enumerate(headers)]

    def _reads_as_nothing(self, name: str, value: str) -> bool:
        """Whether a header first of its name, in a scan of its own, adds nothing to it: its name and value
        known to hold nothing (a value with an escape or that may be JSON is read decoded too), or its value
        read before, first of its field, finding nothing."""
        if not self._known_clean(name):
            return False
        if ("", value) in self.detectors.quiet_reads:
            return True
        return self._known_clean(value) and "\\" not in value and not looks_nested(value)

    def _known_clean(self, text: str) -> bool:
        """``_known(text) == []``, without counting a sighting of ``text``."""
        known = self._scanned.get(text)
        if known is not None:
            return not known
        return len(text) <= REPEATED_CHARS and (not text or text in self.detectors.clean_repeats)

    def _known(self, text: str) -> list[Match] | None:
        """The matches of ``text`` known without scanning it with the rest of its document: this turn's scan
        of it, or, for a short string that came in an earlier turn too, a scan of its own kept across
        turns; else None. A string seen for the first time is scanned with the others, as it would be; at
        its second sighting it is scanned alone and its matches kept (not those of a scan in which a rule
        timed out, which the residual scan then records)."""
        known = self._scanned.get(text)
        if known is not None or len(text) > REPEATED_CHARS:
            return known
        if not text or text in self.detectors.clean_repeats:
            return []
        # Large bodies are inspected in worker threads beside the event loop's: another inspection may
        # clear or change the cache between any two of these steps, so each is one that cannot fail (a
        # key cleared since it was found reads as seen once).
        cache = self.detectors.repeated_matches
        key = _text_digest(text)
        if key not in cache:
            if len(cache) >= REPEATED_ENTRIES:
                cache.clear()
            cache[key] = None
            return None
        matches = cache.get(key)
        if matches is None:
            matches, timed_out = self._scan_once(text)
            if timed_out:
                return None
            if matches:
                cache[key] = matches
            else:
                cache.pop(key, None)
                if len(self.detectors.clean_repeats) >= REPEATED_ENTRIES:
                    self.detectors.clean_repeats.clear()
                self.detectors.clean_repeats.add(text)
        self._scanned[text] = matches
        return matches

    def _record_residual(self, scan: JsonScan, where: str = "body") -> None:
        """Findings of a residual scan not already recorded from the dialect's own reading; a rule that ran
        out of time in it is recorded at ``where``."""
        # A secret found in the headers is found in the body too, where it is: each place is redacted
        # (or not) on its own, and its finding says so.
        in_headers = _in_headers(where)
        seen = {
            (finding.rule, finding.fingerprint)
            for finding in self.turn.findings
            if _in_headers(finding.where) == in_headers
        }
        found, scan.found = scan.found, []
        self._record_timeouts(scan.timed_out, where)
        scan.timed_out = []
        for item in found:
            if item.sent_before:
                self._sent_before.add(item.fingerprint)
            if (item.rule.id, item.fingerprint) in seen:
                continue
            seen.add((item.rule.id, item.fingerprint))
            finding = self._finding(item.rule, item.fingerprint, item.where)
            self._record([finding if item.placeholder is None else _vaulted(finding, item.placeholder)])

    def _across(self, segments: list[TextSegment]) -> list[tuple[Match, list[tuple[int, int, int]]]]:
        """Matches in the texts read one after another that span two or more of them, each with its
        pieces: (segment index, start, end) in that segment's text. The boundary between two content
        blocks or channels is not one for detection."""
        if len(segments) < 2:
            return []
        starts, position = [], 0
        for segment in segments:
            starts.append(position)
            position += len(segment.text)
        joined = "".join(segment.text for segment in segments)
        spanning = []
        for match in self._sensitive(joined):
            first = bisect.bisect_right(starts, match.start) - 1
            last = bisect.bisect_right(starts, match.end - 1) - 1
            if first == last:
                continue
            pieces = []
            for index in range(first, last + 1):
                begin, end = starts[index], starts[index] + len(segments[index].text)
                if max(match.start, begin) < min(match.end, end):
                    pieces.append((index, max(match.start, begin) - begin, min(match.end, end) - begin))
            spanning.append((match, pieces))
        return spanning

    def _across_findings(self, segments: list[TextSegment]) -> list[Finding]:
        findings = []
        for match, pieces in self._across(segments):
            joined = "".join(segments[index].text[start:end] for index, start, end in pieces)
            findings.append(
                self._finding(
                    match.rule,
                    fingerprint(joined, self.detectors.fingerprint_key),
                    segments[pieces[0][0]].where,
                )
            )
        return findings

    def _redact_across(self, segments: list[TextSegment]) -> dict[str, str]:
        """The texts of segments holding part of an enforced secret split across segments, redacted."""
        spans: dict[int, list[Match]] = {}
        for match, pieces in self._across(segments):
            if self.detectors.redacting is not None and self.policy.enforces(match.rule.threat):
                for index, start, end in pieces:
                    spans.setdefault(index, []).append(Match(match.rule, start, end))
        return {
            segments[index].where: self._redact(segments[index].text, found) for index, found in spans.items()
        }

    def _refusal(self, text: str) -> None:
        if not text.strip():
            return
        verdict = self.detectors.refusal.assess(text, self.budget)
        if not verdict.read:
            return  # out of time (``_settle_timeouts``): a turn not read counts towards no refusal rate
        found = refusal.refusal_finding(verdict)
        self.turn.refusal = found is not None
        if found is not None:
            self._record([found])
        if self.turn.drill is not None:
            return  # a drill's completions are not the agent's: its refusal rates stay as they were
        agent = self.turn.context.agent_id
        session = self.turn.context.session_id
        for scope in (f"agent:{agent}", *([f"session:{digest(session)}"] if session else [])):
            recent, baseline = self._refusal_windows(scope, refused=found is not None)
            drop = refusal_rate_drop(recent, baseline, DropThresholds(), where=scope.split(":", 1)[0])
            if drop is not None:
                self._record([drop])

    def _refusal_windows(self, scope: str, *, refused: bool) -> tuple[Window, Window]:
        turns_key, refusals_key = f"turns:{scope}", f"refusals:{scope}"
        tallies = [
            (turns_key, REFUSAL_BASELINE_S),
            *([(refusals_key, REFUSAL_BASELINE_S)] if refused else []),
        ]
        # One call: the four counts come from one store at one moment, so the week holds the hour (a
        # shared store that went away between separate reads answered the later ones from the local
        # store, whose week can hold fewer); the floor keeps any store that disagrees from failing a turn.
        recent_refusals, recent_turns, week_refusals, week_turns = self.state.tally_and_count(
            tallies,
            [
                (refusals_key, REFUSAL_WINDOW_S),
                (turns_key, REFUSAL_WINDOW_S),
                (refusals_key, REFUSAL_BASELINE_S),
                (turns_key, REFUSAL_BASELINE_S),
            ],
        )
        recent = Window(events=recent_refusals, exposure=recent_turns)
        baseline = Window(
            events=max(0, week_refusals - recent_refusals), exposure=max(0, week_turns - recent_turns)
        )
        return recent, baseline

    def _tool_gate(self) -> ToolGate | None:
        """A stream's destructive call and command tool's call (where ``tool_abuse`` is enforced) and reading
        tool's call (where ``credential_theft`` is) are held from their name until their arguments are
        complete, then decided on them like a JSON completion's: a credential read dropped, a destructive
        call (by name, or a command tool's by what its arguments run) released under a granted approval
        for exactly these arguments, else dropped (its notice names the pending approval). Other calls go
        on at once, with no wait; a call asked about whole (the generic reader's, an event at a time) is
        decided so too."""
        guards_tools = self.policy.enforces(Threat.TOOL_ABUSE)
        guards_credentials = self.policy.enforces(Threat.CREDENTIAL_THEFT)
        guards_names = self.policy.enforces(Threat.DATA_EXFILTRATION)
        if not guards_tools and not guards_credentials and not guards_names:
            return None
        catalogue, overrides = self.detectors.tools, self.overrides

        def gate(call: ToolCall, complete: bool) -> ToolDecision:
            if guards_names and self._name_secrets([call], recorded=False):
                notice = tools.secret_name_notice(self._shown_name(call.name))
                self.stream_notices[call_identity(call)] = notice
                return "drop"
            judged = guards_tools and (
                catalogue.is_destructive(call.name, overrides) is not None
                or commands.is_command_tool(call.name)
            )
            if not complete:
                reading = guards_credentials or guards_names
                held = judged or (reading and credentials.is_reading_tool(call.name))
                return "hold" if held else "release"
            reads = [
                finding
                for finding in self._reads_and_uploads([call])
                if finding.action is Action.WITHHOLD and self.policy.enforces(finding.threat)
            ]
            if reads:
                self.stream_notices[call_identity(call)] = _reading_notice(self._shown_name(call.name), reads)
                return "drop"
            destructive = self._destructive_calls([call]) if judged else []
            if not destructive or destructive[0].action is not Action.WITHHOLD:
                return "release"
            pending = destructive[0].extra.get("pending_approval")
            self.stream_notices[call_identity(call)] = tools.approval_notice(
                self._shown_name(call.name), pending if isinstance(pending, str) else None
            )
            return "drop"

        return gate

    def _stream_notice(self, call: ToolCall) -> str:
        name = self._shown_name(call.name)
        if call.ran_upstream:
            return tools.ran_upstream_notice(name)
        return self.stream_notices.get(call_identity(call)) or tools.approval_notice(name, None)

    # -- approvals -----------------------------------------------------------------------------------

    def _destructive_calls(self, calls: list[ToolCall], *, repeated: bool = False) -> list[Finding]:
        """Findings for destructive calls, each call checked against the turn's approval once (a streamed
        call is decided when its arguments are complete, and that decision stands at the end of the
        stream; where ``repeated`` may hold calls earlier messages held, the one decision of each,
        ``_decision_keys``);
        in enforce mode each withheld call names its pending approval, and ``approval_requested`` marks
        the finding of the turn that opened it, the one whose alert asks an operator."""
        keys = _decision_keys(calls, by_id=repeated)
        judge = self._command_judge(calls)
        findings = []
        for call, key in zip(calls, keys, strict=True):
            if key not in self._decided:
                checked = tools.check_tool_calls(
                    [call],
                    self.turn.context.approval_id,
                    self.detectors.tools,
                    self.overrides,
                    self._approve,
                    judge,
                )
                for finding in tools.ran_upstream(checked, [call]):
                    self._decided[key] = self._with_pending_approval(finding, call)
            decided = self._decided.get(key)
            if decided is not None:
                findings.append(decided if decided.where == call.where else _repeated(decided, call.where))
        return findings

    def _name_secrets(self, calls: list[ToolCall], *, recorded: bool = True) -> list[Finding]:
        """A secret or PII glued into a call's name (``drop_table_ghp_...``) leaves with the call wherever
        the agent logs or forwards it, and no redaction of the name leaves a call the agent can run: the
        call is withheld where ``data_exfiltration`` is enforced, as one a key in its arguments would leave
        redacted. The rules that ran out of time on a name are ``recorded`` as out of time there."""
        findings = []
        for call in calls:
            if not call.name:
                continue
            scan = scan_glued(self.detectors.sensitive, call.name, self.budget)
            if recorded:
                self._record_timeouts(scan.timed_out, call.where)
            shown = self._shown_name(call.name)
            findings += [
                dataclasses.replace(
                    self._finding(
                        match.rule,
                        fingerprint(call.name[match.start : match.end], self.detectors.fingerprint_key),
                        call.where,
                    ),
                    action=Action.WITHHOLD,
                    signal=f"the name of tool {shown} carries {match.rule.description}",
                    extra={"tool": shown},
                )
                for match in scan.found
            ]
        return findings

    def _command_judge(self, calls: list[ToolCall]) -> tools.CallJudge:
        """``commands.destructive_entry`` of each of the calls, read with what it runs that the
        conversation's other calls left (``scripts.run_arguments``: ``bash cleanup.sh`` after a call stored
        ``rm -rf ~`` in it, ``rm -rf $T`` after ``export T=~``, a downloaded file run as ``curl | sh``), its
        reading charged to the budget and its scan's share sized from what the agent sent; out of time
        where what it runs is not known in time."""
        conversation = [*(self._earlier_calls(calls) or ()), *calls]
        left = functools.cache(lambda: scripts.left_by(conversation, self.budget))

        def judge(call: ToolCall) -> tools.CatalogueEntry | None:
            if not commands.judges(call.name, call.arguments):
                return None
            run = scripts.run_arguments(call, left(), self.budget)
            if run is None:
                return commands.unread_entry(self.detectors.commands, self.budget)
            arguments, sent = run
            return commands.destructive_entry(
                dataclasses.replace(call, arguments=arguments), self.detectors.commands, self.budget, sent
            )

        return judge

    def _with_pending_approval(self, finding: Finding, call: ToolCall) -> Finding:
        if (
            finding.action is not Action.WITHHOLD
            or not self.policy.enforces(Threat.TOOL_ABUSE)
            or self.turn.drill is not None
            or call.ran_upstream  # an approval could not undo it
            # Withheld for its name whatever is approved: asking an operator would change nothing.
            or (self.policy.enforces(Threat.DATA_EXFILTRATION) and self._name_secrets([call], recorded=False))
        ):
            return finding
        # The ids are the agent's headers, kept in the store as the turn's record keeps them.
        key = self.detectors.fingerprint_key
        user_id, session_id = (
            None if header is None else recorded_text(header, self.detectors.sensitive, key)
            for header in (self.turn.context.user_id, self.turn.context.session_id)
        )
        approval, opened = self.approvals.request(
            agent_id=self.turn.context.agent_id,
            user_id=user_id,
            session_id=session_id,
            tool=self._shown_name(call.name),
            arguments=call.arguments,
            redact=self._redact_all,
        )
        extra = {**finding.extra, "pending_approval": approval.id}
        if opened:
            extra["approval_requested"] = True
        return dataclasses.replace(finding, extra=extra)

    def _approve(self, call: ToolCall) -> str | None:
        return self.approvals.redeem(
            (self.turn.context.approval_id or "").strip(),
            agent_id=self.turn.context.agent_id,
            tool=self._shown_name(call.name),
            arguments=call.arguments,
        )

    def _shown_name(self, name: str) -> str:
        """A name the agent chose (a tool's, its user's or session's) as the agent's notice, an approval and
        a record may hold it (``recorded_name``)."""
        return recorded_name(name, self.detectors.sensitive, self.detectors.fingerprint_key)

    def _redact_all(self, text: str) -> str:
        """Every secret and PII match replaced, whatever the policy enforces (for text an operator reads),
        in the text's ``glued_readings`` too: what an agent's call names is stored and shown as it is."""
        style = RedactionStyle(self.policy.detection.redaction_style)
        key = self.detectors.fingerprint_key
        redacted: str = redact_json(text, self.detectors.sensitive, style, key=key, glued=True)[0]
        return redacted

    def _leak_detector(self, *, enforced_only: bool = True) -> leak.LeakDetector | None:
        if enforced_only and not self.policy.enforces(Threat.PROMPT_INJECTION):
            return None
        prompts = tuple(self.system_prompts)
        built = self._leak_built
        if built is None or built[0] != prompts:
            detector = leak.LeakDetector(prompts)
            built = self._leak_built = (prompts, detector if detector.active else None)
        return built[1]

    def _host_allowed(self, host: str, port: int = 443) -> bool:
        agent, role = self.turn.context.agent_id, self.turn.context.role
        return decide(agent, role, self.egress, host, port, []).allowed

    # -- secrets and PII -----------------------------------------------------------------------------

    def _sensitive_seen(self, text: str) -> list[Match]:
        """``_sensitive`` for text that repeats in every request of a conversation: cached by its digest,
        and taken as this turn's scan of it, so the turn's other readings of the same text (the residual
        scan of the body, the read-back of what was sent) do not scan it again."""
        key = _text_digest(text)
        cache = self.detectors.history_matches
        matches = cache.get(key)
        if matches is None:
            errors = len(self.turn.errors)
            matches = self._sensitive(text)
            if len(self.turn.errors) == errors:  # a rule that timed out is tried again next time
                if len(cache) >= HISTORY_CACHE_ENTRIES:
                    cache.clear()
                cache[key] = matches
        else:
            self._scanned.setdefault(text, matches)
        return matches

    def _sensitive(self, text: str, where: str = "body") -> list[Match]:
        """The secret and PII matches of ``text``, read at ``where``; a rule that ran out of time on it is
        recorded (``_record_timeouts``)."""
        if not text:
            return []
        matches, timed_out = self._scan_once(text)
        self._record_timeouts(timed_out, where)
        return matches

    def _record_timeouts(self, rule_ids: Iterable[str], where: str) -> None:
        """A finding for each rule that ran out of time on a text at ``where`` (``scan_timeout_finding``):
        a blocking one under the rule's threat, so that a text crafted to make a rule run long is refused
        where the policy enforces that threat, and recorded where it observes it."""
        known = {
            (finding.extra.get("rule"), finding.where)
            for finding in self.turn.findings
            if finding.rule == SCAN_TIMEOUT_RULE
        }
        for rule_id in rule_ids:
            self.turn.errors.append(f"rule {rule_id} timed out")
            if (rule_id, where) in known:
                continue
            known.add((rule_id, where))
            self._record([scan_timeout_finding(self.detectors.sensitive_rules[rule_id], where)])

    def _settle_timeouts(self, where: str) -> None:
        """A finding at ``where`` for each rule the budget of what is being read saw run out of time that
        no finding of it names yet: whichever detector or scan ran it, and whatever its caller made of
        it, what is read is not let through as if the rule had read it."""
        if not self.budget.timed_out:
            return
        named = {
            finding.extra.get("rule")
            for finding in self.turn.findings[self._direction_from :]
            if finding.rule == SCAN_TIMEOUT_RULE
        }
        self._record(
            scan_timeout_finding(rule, where)
            for rule_id, rule in self.budget.timed_out.items()
            if rule_id not in named
        )

    def begin_response(self) -> None:
        """The request is read: what is read from now on is the response's, with a budget of its own."""
        self._settle_timeouts("request")
        self._begin_direction()

    def _begin_direction(self) -> None:
        """What is read from here on (a response, a WebSocket message) has findings and budgets of its own."""
        self._direction_from = len(self.turn.findings)
        self.budget.renew()
        self.locator_budget.renew()

    def message_refusal(self) -> Finding:
        """The finding for which the WebSocket message just read is refused: the first enforced finding of
        it that withholds (a rule out of time on it where that is enforced)."""
        return next(
            f for f in self.turn.findings[self._direction_from :] if f.enforced and self._withholds(f)
        )

    def first_enforceable(self) -> Finding | None:
        """The first finding of what is being read (the request, the response or a message) that enforce
        mode acts on, redactions included."""
        return next((f for f in self.turn.findings[self._direction_from :] if self._enforceable(f)), None)

    def request_block(self) -> Finding | None:
        """The first finding that enforce mode refuses the request for, if any (read before its response)."""
        self._settle_timeouts("request")
        return next(
            (
                finding
                for finding in self.turn.findings
                if self._enforceable(finding) and finding.action in (Action.BLOCK, Action.WITHHOLD)
            ),
            None,
        )

    def _scan_once(self, text: str) -> tuple[list[Match], tuple[str, ...]]:
        """The secret and PII matches of ``text`` and the rules that timed out: this turn's earlier scan
        of the same text, else a new scan (charged to ``budget``)."""
        known = self._scanned.get(text)
        if known is not None:
            return known, ()
        if text in self._timed_out:
            matches, timed_out = self._timed_out[text]
            for rule_id in timed_out:
                self.budget.timed_out.setdefault(rule_id, self.detectors.sensitive_rules[rule_id])
            return matches, timed_out
        result = self.detectors.sensitive.scan(text, self.budget)
        if not result.timed_out:
            self._scanned[text] = result.found
        # A text left unread for want of budget is read by the next budget with time left for it.
        elif not self.detectors.sensitive_unread.intersection(result.timed_out):
            self._timed_out[text] = result.found, result.timed_out
        return result.found, result.timed_out

    def _sensitive_findings(
        self, text: str, matches: list[Match], where: str, *, vaulted: bool = False
    ) -> list[Finding]:
        """A secret or PII in a prompt, completion or tool output is exfiltration wherever it travels (the
        taxonomy's own detector); reading credential material is the separate ``credential_theft``.
        ``vaulted``: the request is vaulted, and each finding names the placeholder its secret leaves as."""
        key = self.detectors.fingerprint_key
        findings = []
        for match in matches:
            value = text[match.start : match.end]
            finding = self._finding(match.rule, fingerprint(value, key), where, disguise=match.disguise)
            if vaulted and self.vault is not None:
                finding = _vaulted(finding, self.vault.placeholder(value))
            findings.append(finding)
        return findings

    @staticmethod
    def _finding(
        rule: Rule,
        value_fingerprint: str,
        where: str,
        *,
        disguise: str | None = None,
    ) -> Finding:
        """A secret or PII finding; ``disguise`` names the encoding the value was found under."""
        return Finding(
            threat=rule.threat,
            rule=rule.id,
            signal=f"{rule.description} ({disguise})" if disguise else rule.description,
            severity=rule.severity,
            action=Action.REDACT,
            where=where,
            owasp=rule.owasp,
            fingerprint=value_fingerprint,
        )

    def _redacts(self, matches: list[Match]) -> bool:
        return any(self.policy.enforces(match.rule.threat) for match in matches)

    def _redact(self, text: str, matches: list[Match]) -> str:
        style = RedactionStyle(self.policy.detection.redaction_style)
        return redact_text(text, matches, style, key=self.detectors.fingerprint_key)

    def _redact_enforced(self, text: str) -> str:
        redacting = self.detectors.redacting
        assert redacting is not None
        if redacting is self.detectors.sensitive:
            matches = self._scan_once(text)[0]
        else:
            # A rule out of time is the budget's to settle (``response_refused``).
            matches = redacting.scan(text, self.budget).found
        return self._redact(text, matches) if matches else text

    def _record(self, findings: Iterable[Finding]) -> None:
        for finding in findings:
            # A locator spells the keys on its way, and a key can be a secret: never written as one. The
            # same locators come turn after turn (``messages[3].content``): their scan is kept across turns.
            finding = dataclasses.replace(finding, enforced=False, where=self._locator(finding.where))
            self.turn.add(self._naming_shown(finding))

    def _naming_shown(self, finding: Finding) -> Finding:
        """``finding`` with the tool it names, in its ``extra`` and its signal, as ``_shown_name`` shows it:
        the signal reaches the agent in a refusal (``block_message``), the extra an approval's alert."""
        tool = finding.extra.get("tool")
        if not isinstance(tool, str):
            return finding
        shown = self._shown_name(tool)
        if shown == tool:
            return finding
        return dataclasses.replace(
            finding, signal=finding.signal.replace(tool, shown), extra={**finding.extra, "tool": shown}
        )

    def _locator(self, where: str) -> str:
        """``where`` as a record may hold it: its secrets redacted, or ``UNREAD_LOCATOR`` where a rule ran
        out of time on it. Its scan has a budget of its own: a locator is the proxy's account of a place, not
        a text it relays, so it makes no finding of its own (``locator_budget``)."""
        matches = self._known(where)
        if matches is None:
            scan = self.detectors.sensitive.scan(where, self.locator_budget)
            if scan.timed_out:
                return UNREAD_LOCATOR
            matches = self._scanned[where] = scan.found
        return redact_text(where, matches) if matches else where

    def _enforceable(self, finding: Finding) -> bool:
        """Enforce mode acts on it: an action other than flag, for a threat the policy enforces."""
        return finding.action is not Action.FLAG and self.policy.enforces(finding.threat)

    def _carry_out(self, since: int, applied: Callable[[Finding], bool], decision: Decision) -> None:
        """Mark enforced the enforceable findings from index ``since`` whose action ``applied`` says
        reached the bytes; the turn's decision rises when any did."""
        findings = self.turn.findings
        for index in range(since, len(findings)):
            finding = findings[index]
            if not finding.enforced and self._enforceable(finding) and applied(finding):
                findings[index] = dataclasses.replace(finding, enforced=True)
                self.turn.escalate(decision)

    def _carry_out_redactions(
        self, since: int, left: set[str], found_again: set[tuple[str, str]] | None
    ) -> None:
        """Redactions from index ``since`` whose secret's fingerprint is not ``left`` in what was sent are
        enforced; one without a fingerprint (a leaked prompt, a link) when ``found_again``, what reading
        what was sent finds, does not hold its rule and place (never, when None)."""

        def applied(finding: Finding) -> bool:
            if finding.action not in (Action.REDACT, Action.VAULT):
                return False
            if finding.fingerprint is None:
                return found_again is not None and (finding.rule, finding.where) not in found_again
            return finding.fingerprint not in left and finding.fingerprint not in self._sent_before

        self._carry_out(since, applied, Decision.REDACTED)


def _may_carry_shapes(text: str) -> bool:
    """Whether an agent's WebSocket message may be one ``_read_shapes`` reads anything of."""
    return may_hold_results(text) or may_ask_fetches(text) or may_configure_realtime(text)


def _withheld_key(stored: str) -> str:
    """The state key remembering that something kept under the provider's id ``stored`` was withheld."""
    return f"withheld:{digest(stored)}"


def _vaulted(finding: Finding, placeholder: str) -> Finding:
    """A secret finding as the vault carries it out: the secret leaves as ``placeholder``."""
    return dataclasses.replace(finding, action=Action.VAULT, extra={"placeholder": placeholder})


def _restored(vault: Vault, value: Any, where: str) -> Any:
    """``value`` (a decoded JSON value) with the placeholders in its strings resolved, uses recorded."""
    resolve = vault.resolver(where)
    return map_strings(value, lambda text: restore(text, resolve))


def _decision_keys(calls: list[ToolCall], *, by_id: bool) -> list[tuple[str | None, ...]]:
    """What the decision on each of ``calls`` is kept under for the turn: its ``call_identity``; ``by_id``
    (the messages of a realtime API, each of which may repeat a call an earlier one held: its item
    created, its arguments done, its item done, its response done), a call that has an id by its id,
    name and arguments, so that its repeats are the one call an approval was spent on, and a call that
    borrows its id with another name or other arguments is a call of its own. A call repeating an earlier
    one of the same message is a call of its own (its client runs each): kept under its locator."""
    keys: list[tuple[str | None, ...]] = []
    for call in calls:
        key = (call.id, call.name, call.arguments) if by_id and call.id else call_identity(call)
        keys.append((call.where,) if key in keys else key)
    return keys


def call_identity(call: ToolCall) -> tuple[str | None, ...]:
    """What makes a call the one a decision was made on: its place, id, name and arguments (as an
    approval binds them). A stream asks about a call when its name is known and again once its arguments
    end, and the turn's end reads it once more; another call at its place, or the call as a client reads
    it otherwise (its name's first piece, arguments given whole besides), is not it."""
    return (call.where, call.id, call.name, canonical_arguments(call.arguments))


def _repeated(decided: Finding, where: str) -> Finding:
    """The finding of a call found before, for a message repeating it at ``where``: the approval it
    opened is asked for once."""
    extra = {key: value for key, value in decided.extra.items() if key != "approval_requested"}
    return dataclasses.replace(decided, where=where, extra=extra)


def _within(message: str, where: str) -> str:
    """A locator inside a message's document placed under the message's own (``websocket[3]``)."""
    return join(message, *parse_locator(where))


def _in_headers(where: str) -> bool:
    """Whether a finding's place is a message's headers (or trailers, or start line), not its body."""
    return where == HEADERS_WHERE or where.startswith(HEADERS_WHERE + " ")


def _text_digest(text: str) -> str:
    """sha256 of text that may hold lone surrogates (undecodable bytes, JSON escapes of one)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _compose(steps: list[Callable[[str], str]]) -> Callable[[str], str]:
    def apply(text: str) -> str:
        for step in steps:
            text = step(text)
        return text

    return apply
