"""The policy: one YAML file that says who may talk to what, what to watch and what to enforce.

Loading checks the whole file and reports every problem with its line (``egressguard check``); a
policy that loads is immutable and safe to share between addons.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from proxy.alerts import AlertsConfig
from proxy.config.paths import default_data_dir
from proxy.config.units import parse_duration, parse_rate, parse_size
from proxy.config.yamlschema import (
    ANYTHING_WITH_LINES,
    BOOLEAN,
    POSITIVE_INTEGER,
    STRING,
    Checker,
    Custom,
    IntegerBetween,
    ListOf,
    MapOf,
    OneOf,
    Problem,
    Record,
    Scalar,
    SchemaError,
    Spec,
    check_document,
    unset_variable,
)
from proxy.detectors.credential_channel import (
    DEFAULT_EXPECTED,
    SECRETS_PACK,
    CredentialTable,
    Expected,
    expectations,
)
from proxy.dialects import ToolServer
from proxy.egress import DEFAULT_ROLE, EgressRules, HostPattern
from proxy.model import Mode, Threat
from proxy.scanning.rulepack import pack_path
from proxy.state.redis_store import RedisSettings
from proxy.state.store import KEYS_PER_KIND

DEFAULT_POLICY_NAME = "default-policy.yaml"
DEFAULT_MAX_STREAM_DECODED_BYTES = 64 << 20
CONTEXT_FIELDS = ("user_id", "session_id", "purpose", "consent_id", "approval_id")
DEFAULT_CONTEXT_HEADERS = {
    "user_id": "X-User-Id",
    "session_id": "X-Session-Id",
    "purpose": "X-Purpose",
    "consent_id": "X-Consent-Id",
    "approval_id": "X-Approval-Id",
}
MODES = tuple(str(mode) for mode in Mode)
INDIRECT_INJECTION_ACTIONS = ("flag", "quarantine", "block")
"""What enforce mode does with an injection found in tool results, retrieved documents and tool
descriptions: only report it, withhold the offending span and pass the rest, or block the request."""


_LOCATED = re.compile(r"(?P<path>[^:]+?)(?::(?P<line>\d+))?: (?P<message>.*)", re.DOTALL)


def _host_pattern(text: str) -> str:
    HostPattern.parse(text)
    return text


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container's cpuset narrows)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def parse_workers(value: str) -> int:
    """``auto`` (one per core) or a positive number of worker processes."""
    if str(value) == "auto":
        return available_cores()
    try:
        count = int(value)
    except ValueError:
        raise ValueError("must be a number of processes, or auto for one per core") from None
    if count < 1:
        raise ValueError("must be at least 1, or auto for one per core")
    return count


def _seconds(text: str) -> float:
    return parse_duration(text).total_seconds()


RULE_TIME_LIMIT_RANGE_S = (0.001, 5.0)
"""What ``inspection.rule_time_limit`` may be: a limit under a millisecond times out rules on ordinary
text, and one of seconds lets one crafted text hold a request for minutes (20 times it per direction)."""


def _rule_time_limit(text: str) -> float:
    seconds = _seconds(text)
    low, high = RULE_TIME_LIMIT_RANGE_S
    if not low <= seconds <= high:
        raise ValueError(f"{text.strip()!r} is out of range: a rule time limit is from 1ms to 5s")
    return seconds


HOST_PATTERN = Custom(_host_pattern, "a host pattern")
HOST_PATTERNS = ListOf(HOST_PATTERN)


class AllowEntry(Spec):
    """A host pattern, or ``{host: PATTERN, inspect: false}`` for a host whose TLS must not be
    intercepted (certificate pinning, mutual TLS): it is tunnelled, and only the egress decision applies."""

    description = "a host pattern or {host, inspect}"
    detailed = Record({"host": HOST_PATTERN, "inspect": BOOLEAN}, required=("host",))

    def check(self, node: yaml.Node, checker: Checker, where: str) -> Any:
        if isinstance(node, yaml.MappingNode):
            entry = self.detailed.check(node, checker, where)
            return (entry["host"], entry.get("inspect", True)) if entry and entry.get("host") else None
        pattern = HOST_PATTERN.check(node, checker, where)
        return (pattern, True) if pattern else None


DURATION = Custom(_seconds, "a duration")


class RequestRedaction(Spec):
    """``redaction.requests``: false, true (secrets in prompts redacted) or vault (replaced by
    placeholders the agent gets back as the real values)."""

    description = "true, false or vault"

    def check(self, node: yaml.Node, checker: Checker, where: str) -> Any:
        if isinstance(node, yaml.ScalarNode) and node.value == "vault":
            return "vault"
        return Scalar(bool, self.description).check(node, checker, where)


DEFAULT_ADMIN_LISTEN = ("127.0.0.1", 9090)


def _address(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``."""
    host, separator, port = str(text).rpartition(":")
    if not separator or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ValueError(f"{text!r} is not host:port")
    return host.strip("[]"), int(port)


_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DNS_NAME = re.compile(rf"(?=.{{1,253}}\.?\Z)(?:{_LABEL}\.)*{_LABEL}\.?")


def _dns_name(text: str) -> str:
    """``admin.hosts``: a whole name, lower-cased without its final dot; no wildcard, port or address
    (addresses are always answered)."""
    name = text.strip().lower()
    if _DNS_NAME.fullmatch(name) is None or name.rstrip(".").replace(".", "").isdigit():
        raise ValueError(f"{text!r} is not a DNS name (no wildcard, port or scheme)")
    return name.rstrip(".")


class ExpectedCredentials(Spec):
    """``credentials``: by host (``api.example.com``, ``*.example.com``, an address or network; no port),
    the secret rule ids of the credentials it takes and, optionally, the header or query parameter names
    it takes them in (``proxy.detectors.credential_channel``)."""

    description = "a mapping from hosts to {rules: [...], fields: [...]}"
    entry = Record({"rules": ListOf(STRING), "fields": ListOf(STRING)}, required=("rules",))

    def check(self, node: yaml.Node, checker: Checker, where: str) -> Any:
        entries = MapOf(self.entry).check(node, checker, where)
        if entries is None or not isinstance(node, yaml.MappingNode):
            return None
        expected: dict[str, Expected] = {}
        for key_node, _ in node.value:
            host, entry = str(key_node.value), entries.get(str(key_node.value))
            lists = [entry.get("rules"), entry.get("fields") or []] if entry else [None]
            if any(values is None or None in values for values in lists):
                continue  # reported where it is wrong
            unknown = sorted(set(entry["rules"]) - secret_rule_ids())
            if unknown:
                names = ", ".join(map(repr, unknown))
                checker.report(key_node, f"{where}.{host}: not a rule of the secrets pack: {names}")
            try:
                expected[host] = Expected.of(host, entry["rules"], entry.get("fields") or ())
            except ValueError as error:
                checker.report(key_node, f"{where}.{host}: {error}")
        return expected


@functools.cache
def secret_rule_ids() -> frozenset[str]:
    """The ids of the secrets pack's rules: what a ``credentials`` entry may name."""
    pack = yaml.safe_load(pack_path(SECRETS_PACK).read_text(encoding="utf-8"))
    return frozenset(str(rule["id"]) for rule in pack["rules"])


CONTEXT_FIELD_LIST = ListOf(OneOf(*CONTEXT_FIELDS))
AGENT = Record({"token_env": STRING, "token": STRING, "role": STRING})
ROLE = Record(
    {
        "egress": Record({"allow": ListOf(AllowEntry()), "deny": HOST_PATTERNS}),
        "tools": Record(
            {
                "destructive": ListOf(STRING),
                "exempt": ListOf(STRING),
                "connectors": ListOf(STRING),
                "mcp_servers": ListOf(Custom(ToolServer.parse, "host/route")),
                "limits": MapOf(Custom(parse_rate, "a rate like 20/1h")),
            }
        ),
    }
)
SCHEMA = Record(
    {
        # The only policy format there is; another number is a file written for something else.
        "version": IntegerBetween(1, 1),
        "mode": OneOf(*MODES),
        "threats": Record({str(threat): OneOf(*MODES) for threat in Threat}),
        "data_dir": STRING,
        "workers": Custom(parse_workers, "a number of workers or auto"),
        "agents": MapOf(AGENT),
        "roles": MapOf(ROLE),
        "identity": Record({"headers": Record({name: STRING for name in CONTEXT_FIELDS})}),
        "audit": Record(
            {
                "path": STRING,
                "fsync": OneOf("always", "batch"),
                "checkpoint_every": POSITIVE_INTEGER,
                "checkpoint_after": DURATION,
                "heartbeat": DURATION,
                "spool": STRING,
                "retention_days": POSITIVE_INTEGER,
                "on_error": OneOf("open", "closed"),
                "pubkey": STRING,
            }
        ),
        "inspection": Record(
            {
                "max_body_bytes": Custom(parse_size, "a size"),
                "max_stream_decoded_bytes": Custom(parse_size, "a size"),
                "rule_time_limit": Custom(_rule_time_limit, "a duration"),
            }
        ),
        "redaction": Record(
            {
                "style": OneOf("placeholder", "hash", "last4"),
                "requests": RequestRedaction(),
                "optional_packs": ListOf(STRING),
                "vault": Record(
                    {"ttl": DURATION, "restore_in_text": BOOLEAN, "max_entries": POSITIVE_INTEGER}
                ),
            }
        ),
        "compliance": Record({"required": CONTEXT_FIELD_LIST, "require": CONTEXT_FIELD_LIST}),
        "freeze": Record(
            {
                "after": POSITIVE_INTEGER,
                "agent_after": POSITIVE_INTEGER,
                "window": DURATION,
                "duration": DURATION,
            }
        ),
        "state": Record(
            {
                "backend": OneOf("sqlite", "redis"),
                "url": STRING,
                "url_env": STRING,
                "namespace": STRING,
                "username": STRING,
                "password_env": STRING,
                "ca_file": STRING,
                "cert_file": STRING,
                "key_file": STRING,
                "timeout": DURATION,
                "on_error": OneOf("open", "closed"),
                "keys_per_kind": POSITIVE_INTEGER,
            }
        ),
        "admin": Record(
            {
                "listen": Custom(_address, "host:port"),
                "token_env": STRING,
                "read_token_env": STRING,
                "tls": Record({"cert_file": STRING, "key_file": STRING}, required=("cert_file", "key_file")),
                "hosts": ListOf(Custom(_dns_name, "a DNS name")),
            }
        ),
        "injection": Record({"indirect": OneOf(*INDIRECT_INJECTION_ACTIONS)}),
        "credentials": ExpectedCredentials(),
        # The sections inside are checked by the alert loader (proxy.alerts), which knows their shape.
        "alerts": Record(
            {
                "destinations": ANYTHING_WITH_LINES,
                "rules": ANYTHING_WITH_LINES,
                "actions": ANYTHING_WITH_LINES,
            }
        ),
    }
)


@dataclass(frozen=True, slots=True)
class Agent:
    name: str
    role: str
    token: str = field(repr=False)
    token_env: str | None = None


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    egress: EgressRules = field(default_factory=lambda: EgressRules(allow=()))
    tunnelled: EgressRules = field(default_factory=lambda: EgressRules(allow=()))
    """Allowed destinations relayed without TLS interception (``inspect: false``)."""
    destructive_tools: tuple[str, ...] = ()
    exempt_tools: tuple[str, ...] = ()
    connectors: tuple[str, ...] = ()
    """Globs of the provider-hosted MCP connectors and tunnels, by id, the API may reach for the role."""
    mcp_servers: tuple[ToolServer, ...] = ()
    """The agent's own MCP servers, the only destinations handed the vault's values (``vault_request``)."""
    tool_limits: tuple[tuple[str, int, float], ...] = ()
    """(tool glob, calls, window seconds): more calls than that, per agent or per user, are withheld."""


@dataclass(frozen=True, slots=True)
class AuditSettings:
    path: Path
    spool: Path
    """Where events wait while ``path`` refuses writes: a directory away from the log's."""
    fsync: Literal["always", "batch"] = "batch"
    checkpoint_every: int = 1000
    checkpoint_after: float = 5.0
    """Seconds within which any record written is covered by a signed checkpoint."""
    heartbeat: float = 60.0
    """Seconds after which an idle log signs a checkpoint anyway, so a cut tail shows by its time."""
    retention_days: int = 90
    on_error: Literal["open", "closed"] = "open"
    pubkey: Path | None = None
    """The public key the dashboard checks checkpoints with (a copy kept away from the log); without one,
    the key the proxy signs with, never a key file beside the log."""


@dataclass(frozen=True, slots=True)
class StateSettings:
    """Where counters, windows, freezes and first-seen sets live: SQLite under the data dir (one process),
    or a Redis server shared by workers and replicas. ``on_error`` says what a process does while Redis
    cannot be reached: ``open`` serves with its own local state, ``closed`` refuses requests."""

    backend: Literal["sqlite", "redis"] = "sqlite"
    redis: RedisSettings | None = None
    on_error: Literal["open", "closed"] = "open"
    keys_per_kind: int = KEYS_PER_KIND
    """The most entries one kind of expiring key holds (``proxy.state.keys``): what per-session and
    per-user state can cost, whatever ids agents send."""


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """The admin listener (health, metrics, the operations API). Tokens come from these environment
    variables, or else from files under the data dir."""

    host: str = DEFAULT_ADMIN_LISTEN[0]
    port: int = DEFAULT_ADMIN_LISTEN[1]
    token_env: str | None = None
    read_token_env: str | None = None
    tls: AdminTLS | None = None
    """None: plain HTTP, for a loopback listener."""
    hosts: tuple[str, ...] = ()
    """The DNS names the listener is reached by, besides its IP addresses and ``localhost``: a request
    naming another host in its Host header is refused (``proxy.admin.http``)."""

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class AdminTLS:
    """The certificate chain (PEM, the listener's own certificate first) and private key the admin
    listener serves HTTPS with."""

    cert_file: Path
    key_file: Path


@dataclass(frozen=True, slots=True)
class VaultSettings:
    """``redaction.requests: vault``: how long a vaulted secret stays resolvable after a request last
    carried it, and whether placeholders in the model's prose are restored too (tool-call arguments
    always are)."""

    ttl_s: float = 24 * 3600.0
    restore_in_text: bool = False
    max_entries: int = 1000
    """The most secrets one agent's session keeps; beyond it the least recently sent are forgotten."""


@dataclass(frozen=True, slots=True)
class DetectionSettings:
    """How detectors act: redaction style and direction, required context fields, session freezes, and
    what becomes of an injection found in content the agent read."""

    redaction_style: str = "placeholder"
    redact_requests: bool = False
    optional_packs: tuple[str, ...] = ()
    required_fields: tuple[str, ...] = ("user_id", "purpose", "consent_id")
    blocking_fields: tuple[str, ...] = ()
    freeze_after: int = 3
    freeze_agent_after: int | None = None
    """Prompt-injection attempts by an agent's users together (named, renamed or unnamed) that block it;
    None counts none. Off unless set: one end user's attempts would otherwise block an agent for all."""
    freeze_window_s: float = 24 * 3600.0
    freeze_for_s: float = 3600.0
    indirect_injection: Literal["flag", "quarantine", "block"] = "quarantine"
    rule_time_limit_s: float = 0.05
    """The CPU time a secret or PII rule may take over one text before it is run again with what is left
    of the budget of the request, response or message (``ScanBudget``), and then recorded as
    ``inspection.scan_timeout``."""
    vault: VaultSettings | None = None
    """Set when requests are vaulted rather than redacted."""

    @property
    def guards_requests(self) -> bool:
        """Whether secrets an agent sends are kept from leaving, redacted or vaulted. The vault rewrites
        bodies only: what it cannot (the target, headers, the method, the destination's name) is guarded
        as redaction guards it, else vaulting would let out what redacting keeps in."""
        return self.redact_requests or self.vault is not None


@dataclass(frozen=True, slots=True)
class Policy:
    source: str
    mode: Mode
    threat_modes: dict[Threat, Mode]
    data_dir: Path
    agents: dict[str, Agent]
    roles: dict[str, Role]
    context_headers: dict[str, str]
    audit: AuditSettings
    max_body_bytes: int
    max_stream_decoded_bytes: int = DEFAULT_MAX_STREAM_DECODED_BYTES
    """How far a compressed body relayed as it arrives (an event stream, a completion over the cap) may
    inflate before it is cut (enforce mode) or passed as sent (observe): a compression bomb's bound."""
    workers: int = field(default_factory=available_cores)
    """Proxy processes sharing the listen port (``proxy.commands.workers``); one per core unless set."""
    detection: DetectionSettings = field(default_factory=DetectionSettings)
    state: StateSettings = field(default_factory=StateSettings)
    alerts: AlertsConfig | None = None
    admin: AdminSettings | None = None
    """None: no admin listener."""
    sha256: str = ""
    """The sha256 of the policy file's text, named in reload records."""
    warnings: tuple[Problem, ...] = ()
    credentials: CredentialTable = field(default_factory=lambda: CredentialTable(DEFAULT_EXPECTED))
    """The credentials each destination takes in its credential headers and query parameters."""

    @property
    def audit_path(self) -> Path:
        return self.audit.path

    def mode_for(self, threat: Threat) -> Mode:
        return self.threat_modes.get(threat, self.mode)

    def enforces(self, threat: Threat) -> bool:
        return self.mode_for(threat) is Mode.ENFORCE

    def with_mode(self, mode: Mode) -> Policy:
        """The same policy with every threat switched to ``mode`` (the CLI's ``--mode``)."""
        return replace(self, mode=mode, threat_modes={})


RESTART_ONLY = ("data_dir", "audit", "state", "workers")
"""Settings a reload cannot change: the open state store and audit log stay as they are."""


def reloaded_policy(current: Policy, path: Path | None, mode: Mode | None) -> Policy:
    """The policy file read again for a reload, with the same mode override; raises SchemaError with its
    problems, or with the settings that need a restart."""
    policy = load_policy(path)
    if mode is not None:
        policy = policy.with_mode(mode)
    changed = [name for name in RESTART_ONLY if getattr(policy, name) != getattr(current, name)]
    if changed:
        raise SchemaError(
            [
                Problem(policy.source, 0, f"{name} cannot change on reload; restart to apply it")
                for name in changed
            ]
        )
    return policy


def default_policy_text() -> str:
    return resources.files("egressguard_rules").joinpath(DEFAULT_POLICY_NAME).read_text(encoding="utf-8")


def load_policy(path: Path | None, *, environ: dict[str, str] | None = None) -> Policy:
    """Load and check a policy file, or the embedded default when ``path`` is None.

    Raises SchemaError listing every problem with its line.
    """
    if path is None:
        return parse_policy(default_policy_text(), f"<embedded {DEFAULT_POLICY_NAME}>", environ=environ)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SchemaError([Problem(str(path), 0, f"cannot read: {error}")]) from None
    return parse_policy(text, str(path), environ=environ)


def load_state_settings(path: Path) -> tuple[StateSettings, Path]:
    """The state store and data dir a policy names, read without its agents' tokens (for commands that
    read the store from outside the proxy, such as ``audit verify --config``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SchemaError([Problem(str(path), 0, f"cannot read: {error}")]) from None
    raw, problems = check_document(text, str(path), SCHEMA)
    state = _state(raw.get("state") or {}, dict(os.environ), str(path), problems)
    if problems:
        raise SchemaError(problems)
    return state, Path(raw["data_dir"]) if raw.get("data_dir") else default_data_dir(os.environ)


def parse_policy(text: str, source: str, *, environ: dict[str, str] | None = None) -> Policy:
    env = dict(os.environ) if environ is None else environ
    raw, problems = check_document(text, source, SCHEMA)
    warnings: list[Problem] = []

    roles = {name: _role(name, spec or {}) for name, spec in (raw.get("roles") or {}).items()}

    agents: dict[str, Agent] = {}
    for name, spec in (raw.get("agents") or {}).items():
        if spec is None:
            continue
        line = spec["__line__"]
        token = _agent_token(name, spec, env, source, line, problems, warnings)
        role = spec.get("role") or DEFAULT_ROLE
        if role not in roles:
            problems.append(
                Problem(source, line, f"agent {name!r} names role {role!r}, which is not defined under roles")
            )
        if ":" in name:
            problems.append(Problem(source, line, f"agent name {name!r} cannot contain ':'"))
        if token is not None:
            agents[name] = Agent(name=name, role=role, token=token, token_env=spec.get("token_env"))

    if problems:
        raise SchemaError(problems)

    alerts = _alerts(_without_line(raw["alerts"]) if raw.get("alerts") else None, source, problems)
    state = _state(raw.get("state") or {}, env, source, problems)
    vault = _vault(raw.get("redaction") or {}, source, problems)
    if problems:
        raise SchemaError(problems)

    data_dir = Path(raw["data_dir"]) if raw.get("data_dir") else default_data_dir(env)
    audit = _without_line(raw.get("audit") or {})
    audit_path = Path(audit.pop("path")) if audit.get("path") else data_dir / "audit"
    spool_path = Path(audit.pop("spool")) if audit.get("spool") else data_dir / "audit-spool"
    if audit.get("pubkey"):
        audit["pubkey"] = Path(audit["pubkey"])
    redaction = raw.get("redaction") or {}
    compliance = raw.get("compliance") or {}
    freeze = raw.get("freeze") or {}
    defaults = DetectionSettings()
    detection = DetectionSettings(
        redaction_style=redaction.get("style") or defaults.redaction_style,
        redact_requests=redaction.get("requests", defaults.redact_requests) is True,
        optional_packs=tuple(redaction.get("optional_packs") or ()),
        # `required: []` is taken as written (no field required); only an absent key keeps the default.
        required_fields=tuple(
            defaults.required_fields if compliance.get("required") is None else compliance["required"]
        ),
        blocking_fields=tuple(compliance.get("require") or ()),
        freeze_after=freeze.get("after") or defaults.freeze_after,
        freeze_agent_after=freeze.get("agent_after"),
        freeze_window_s=freeze.get("window") or defaults.freeze_window_s,
        freeze_for_s=freeze.get("duration") or defaults.freeze_for_s,
        indirect_injection=(raw.get("injection") or {}).get("indirect") or defaults.indirect_injection,
        rule_time_limit_s=(raw.get("inspection") or {}).get("rule_time_limit") or defaults.rule_time_limit_s,
        vault=vault,
    )
    headers = {**DEFAULT_CONTEXT_HEADERS, **_without_line((raw.get("identity") or {}).get("headers") or {})}
    return Policy(
        source=source,
        mode=Mode(raw.get("mode") or Mode.OBSERVE),
        threat_modes={
            Threat(name): Mode(mode) for name, mode in _without_line(raw.get("threats") or {}).items()
        },
        data_dir=data_dir,
        agents=agents,
        roles=roles,
        context_headers=headers,
        audit=AuditSettings(path=audit_path, spool=spool_path, **audit),
        max_body_bytes=(raw.get("inspection") or {}).get("max_body_bytes") or 8 * 1024 * 1024,
        max_stream_decoded_bytes=(raw.get("inspection") or {}).get("max_stream_decoded_bytes")
        or DEFAULT_MAX_STREAM_DECODED_BYTES,
        workers=raw.get("workers") or available_cores(),
        detection=detection,
        state=state,
        alerts=alerts,
        admin=_admin(raw.get("admin")),
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        warnings=tuple(warnings),
        credentials=expectations(raw.get("credentials") or {}),
    )


def _admin(section: dict[str, Any] | None) -> AdminSettings | None:
    if section is None:
        return None
    host, port = section.get("listen") or DEFAULT_ADMIN_LISTEN
    tls = section.get("tls")
    return AdminSettings(
        host=host,
        port=port,
        token_env=section.get("token_env"),
        read_token_env=section.get("read_token_env"),
        tls=AdminTLS(Path(tls["cert_file"]), Path(tls["key_file"])) if tls else None,
        hosts=tuple(section.get("hosts") or ()),
    )


def _role(name: str, spec: dict[str, Any]) -> Role:
    egress = spec.get("egress") or {}
    tools = spec.get("tools") or {}
    allow = _present(egress.get("allow"))
    return Role(
        name=name,
        egress=EgressRules(allow=[pattern for pattern, _ in allow], deny=_present(egress.get("deny"))),
        tunnelled=EgressRules(allow=[pattern for pattern, inspect in allow if not inspect]),
        destructive_tools=tuple(_present(tools.get("destructive"))),
        exempt_tools=tuple(_present(tools.get("exempt"))),
        connectors=tuple(_present(tools.get("connectors"))),
        mcp_servers=tuple(_present(tools.get("mcp_servers"))),
        tool_limits=tuple(
            (glob, *rate)
            for glob, rate in _without_line(tools.get("limits") or {}).items()
            if rate is not None
        ),
    )


def _state(spec: dict[str, Any], env: dict[str, str], source: str, problems: list[Problem]) -> StateSettings:
    line = spec.get("__line__", 0)
    on_error: Literal["open", "closed"] = "closed" if spec.get("on_error") == "closed" else "open"
    keys_per_kind = spec.get("keys_per_kind") or KEYS_PER_KIND
    if spec.get("backend") != "redis":
        extra = sorted(set(_without_line(spec)) - {"backend", "on_error", "keys_per_kind"})
        if extra:
            problems.append(Problem(source, line, f"state: {', '.join(extra)} apply to backend: redis only"))
        return StateSettings(on_error=on_error, keys_per_kind=keys_per_kind)

    def from_env(name: str) -> str | None:
        variable = spec.get(name)
        if variable is None:
            return None
        if not env.get(variable):
            problems.append(Problem(source, line, unset_variable(f"state.{name}", variable)))
        return env.get(variable)

    url = spec.get("url") or from_env("url_env")
    if spec.get("url") and spec.get("url_env"):
        problems.append(Problem(source, line, "state: give url or url_env, not both"))
    if not url:
        if "url_env" not in spec:
            problems.append(Problem(source, line, "state: backend redis needs url (or url_env)"))
        return StateSettings(on_error=on_error, keys_per_kind=keys_per_kind)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        problems.append(
            Problem(source, line, "state.url must start with redis://, rediss:// (TLS) or unix://")
        )
    tls_files = [name for name in ("ca_file", "cert_file", "key_file") if spec.get(name)]
    if tls_files and not url.startswith("rediss://"):
        problems.append(Problem(source, line, f"state: {', '.join(tls_files)} need a rediss:// (TLS) url"))
    if bool(spec.get("cert_file")) != bool(spec.get("key_file")):
        problems.append(Problem(source, line, "state: cert_file and key_file go together"))
    redis = RedisSettings(
        url=url,
        namespace=spec.get("namespace") or "egressguard",
        username=spec.get("username"),
        password=from_env("password_env"),
        ca_file=spec.get("ca_file"),
        cert_file=spec.get("cert_file"),
        key_file=spec.get("key_file"),
        timeout_s=spec.get("timeout") or 1.0,
    )
    return StateSettings(backend="redis", redis=redis, on_error=on_error, keys_per_kind=keys_per_kind)


def _vault(redaction: dict[str, Any], source: str, problems: list[Problem]) -> VaultSettings | None:
    section = redaction.get("vault")
    if redaction.get("requests") != "vault":
        if section is not None:
            problems.append(
                Problem(
                    source, section.get("__line__", 0), "redaction.vault applies with requests: vault only"
                )
            )
        return None
    section = section or {}
    defaults = VaultSettings()
    return VaultSettings(
        ttl_s=section.get("ttl") or defaults.ttl_s,
        restore_in_text=section.get("restore_in_text", defaults.restore_in_text) is True,
        max_entries=section.get("max_entries") or defaults.max_entries,
    )


def _present(values: list[Any] | None) -> list[Any]:
    """The entries of a checked list that were valid (a wrong entry is None and already reported)."""
    return [value for value in values or () if value is not None]


def _alerts(section: Any, source: str, problems: list[Problem]) -> AlertsConfig | None:
    from proxy.alerts import AlertConfigError, load_alerts_config

    if section is not None and not isinstance(section, dict):
        problems.append(Problem(source, 0, "alerts must be a mapping"))
        return None
    base_dir = Path(source).parent if not source.startswith("<") else None
    try:
        return load_alerts_config(section, source=source, base_dir=base_dir)
    except AlertConfigError as error:
        problems.extend(_as_problem(problem, source) for problem in error.problems)
        return None


def _as_problem(text: str, source: str) -> Problem:
    """The alert loader reports ``file:line: message`` (or ``file: message``) strings."""
    located = _LOCATED.fullmatch(text)
    if located is None:
        return Problem(source, 0, f"alerts: {text}")
    return Problem(located["path"], int(located["line"] or 0), located["message"])


def _agent_token(
    name: str,
    spec: dict[str, Any],
    env: dict[str, str],
    source: str,
    line: int,
    problems: list[Problem],
    warnings: list[Problem],
) -> str | None:
    if spec.get("token_env") and spec.get("token"):
        problems.append(Problem(source, line, f"agent {name!r} has both token_env and token; keep one"))
        return None
    # A token of nothing but whitespace is none: an agent whose proxy password is a space must not exist.
    if str(spec.get("token") or "").strip():
        warnings.append(
            Problem(
                source,
                line,
                f"agent {name!r} has a literal token in the policy; "
                f"prefer token_env so the file holds no secret",
            )
        )
        return str(spec["token"])
    variable = spec.get("token_env")
    if not variable:
        problems.append(Problem(source, line, f"agent {name!r} needs token_env (or token)"))
        return None
    token = env.get(variable)
    if not token or not token.strip():
        problems.append(Problem(source, line, f"agent {name!r}: {unset_variable('token_env', variable)}"))
        return None
    return token


def _without_line(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if key != "__line__" and value is not None}
