"""Alert rules and destinations as data: loading, validation and ``file:line: message`` errors.

A rule has exactly one trigger:

- ``match`` + ``threshold`` over a ``window``: real time, e.g. ">=1" critical secret leak in 5m;
- ``match`` + ``ratio_to_baseline``: the rate in ``window`` against the average window of the last
  ``baseline_days``;
- ``first_seen``: a combination of turn fields (e.g. agent and egress host) never seen before;
- ``query``: SQL over the audit log (its views ``turns``, ``findings`` and the playbook's ``TaskEntry``),
  run on a ``schedule`` (cron), or without one every ``every`` (default 10s) while records arrive; with
  a ``threshold`` the result (its one number, or else its row count) must meet it, without one any row
  alerts. As in the playbook's alert file, ``query`` may also be ``ratio_to_baseline(threat=...,
  window=..., baseline_days=...)`` (the ratio trigger, its ratio from ``threshold``) or
  ``see_query_N_above`` (the playbook's triage query N).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import croniter

from proxy.audit.playbook import lookback_days, referenced_query
from proxy.config.units import parse_duration
from proxy.config.yamlschema import LineLoader, LocatedMapping, unset_variable
from proxy.model import SEVERITY_ORDER, Severity, Threat

BUILTIN_ACTIONS = frozenset({"freeze_user", "revoke_session", "block_agent", "rotate_token"})
DESTINATION_TYPES = frozenset({"slack", "pagerduty", "webhook", "stdout", "syslog", "file"})
GROUP_FIELDS = frozenset(
    {"agent_id", "role", "user_id", "session_id", "egress_host", "model", "dialect", "client"}
)
THRESHOLD = re.compile(r"^\s*(>=|>)\s*(\d+)\s*$")
RATIO_CALL = re.compile(r"^\s*ratio_to_baseline\s*\((?P<arguments>.*)\)\s*$", re.DOTALL)
RATIO_ARGUMENT = re.compile(r"\s*(?P<name>\w+)\s*=\s*(?:'(?P<quoted>[^']*)'|(?P<bare>[\w.]+))\s*(?:,|$)")
DEFAULT_POLL = timedelta(seconds=10)
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
DEFAULT_DESTINATION = "secops"


class AlertConfigError(ValueError):
    """Every problem found in an alerts configuration, one ``file:line: message`` a line."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True, slots=True)
class Match:
    """Which findings a rule counts; an absent field matches anything."""

    threats: frozenset[str] | None = None
    min_severity: Severity | None = None
    rules: tuple[str, ...] | None = None
    agents: frozenset[str] | None = None
    roles: frozenset[str] | None = None
    approved: bool | None = None

    def turn_matches(self, record: Mapping[str, Any]) -> bool:
        if self.agents is not None and record.get("agent_id") not in self.agents:
            return False
        if self.roles is not None and record.get("role") not in self.roles:
            return False
        return self.approved is None or bool(record.get("approval_id")) == self.approved

    def finding_matches(self, finding: Mapping[str, Any]) -> bool:
        if self.threats is not None and finding.get("threat") not in self.threats:
            return False
        if self.min_severity is not None:
            severity = finding.get("severity")
            if (
                severity not in SEVERITY_ORDER
                or SEVERITY_ORDER[Severity(severity)] < SEVERITY_ORDER[self.min_severity]
            ):
                return False
        rule = str(finding.get("rule", ""))
        return self.rules is None or any(fnmatchcase(rule, pattern) for pattern in self.rules)


@dataclass(frozen=True, slots=True)
class Threshold:
    inclusive: bool
    value: int

    def met(self, count: int) -> bool:
        return count >= self.value if self.inclusive else count > self.value


@dataclass(frozen=True, slots=True)
class Baseline:
    ratio: float
    window: timedelta
    baseline_days: int
    min_events: int


@dataclass(frozen=True, slots=True)
class AlertRule:
    id: str
    description: str
    severity: Severity
    destinations: tuple[str, ...]
    source: str
    match: Match | None = None
    threshold: Threshold | None = None
    window: timedelta = timedelta(minutes=5)
    baseline: Baseline | None = None
    first_seen: tuple[str, ...] | None = None
    schedule: str | None = None
    tz: str = "UTC"
    """The time zone the schedule's cron fields are read in (an IANA name)."""
    query: str | None = None
    every: timedelta | None = None
    """How often a query without a schedule runs (while new records arrive)."""
    reads: timedelta | None = None
    """How far back a query reads: only the audit files that can hold records from this long ago on are
    opened (None: every file, which a query polled every few seconds pays for on each run)."""
    group_by: tuple[str, ...] = ()
    dedup_window: timedelta = timedelta(minutes=10)
    auto_actions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DestinationConfig:
    """Where alerts go. Secrets (webhook URLs, routing keys, HMAC secrets) come from env vars at load."""

    name: str
    type: str
    url: str | None = None
    routing_key: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    headers: tuple[tuple[str, str], ...] = ()
    path: Path | None = None
    action: str | None = None


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    rules: tuple[AlertRule, ...]
    destinations: Mapping[str, DestinationConfig]
    actions: Mapping[str, DestinationConfig] = field(default_factory=dict)


def read_yaml(path: Path) -> Any:
    """Parse ``path`` keeping line numbers (mappings come back as dicts that know their lines)."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=LineLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise AlertConfigError([f"{path}:{line}: {getattr(exc, 'problem', exc)}"]) from exc


def shipped_rules_path() -> Path:
    return Path(str(resources.files("egressguard_rules").joinpath("alerts.yaml")))


class _Problems:
    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, where: Any, message: str, key: str | None = None) -> None:
        line = 0
        if isinstance(where, LocatedMapping):
            line = where.key_lines.get(key, where.line) if key is not None else where.line
        self.items.append(f"{self.source}:{line}: {message}" if line else f"{self.source}: {message}")


def load_alerts_config(
    section: Mapping[str, Any] | None, *, source: str = "<policy>", base_dir: Path | None = None
) -> AlertsConfig:
    """Build the router's configuration from the policy's ``alerts:`` section (None: shipped rules).

    ``rules`` is a list of rules or a path to a rules file (relative to ``base_dir``); without it the
    shipped ``rules/alerts.yaml`` is used. Without ``destinations``, alerts go to ``secops`` = stdout.
    """
    section = section or {}
    problems = _Problems(source)
    destinations_section = section.get("destinations")
    if destinations_section is None:
        destinations: dict[str, DestinationConfig] = {
            DEFAULT_DESTINATION: DestinationConfig(DEFAULT_DESTINATION, "stdout")
        }
    else:
        destinations = _destinations(destinations_section, problems, "destination")
    actions = _destinations(section.get("actions") or {}, problems, "action")
    for name in list(actions):
        actions[name] = DestinationConfig(**{**_fields(actions[name]), "action": name})
    rules_section = section.get("rules")
    rules_source = problems
    if rules_section is None or isinstance(rules_section, str):
        path = shipped_rules_path() if rules_section is None else Path(rules_section)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            document = read_yaml(path)
        except OSError as exc:
            raise AlertConfigError([f"{source}: cannot read alert rules {path}: {exc}"]) from exc
        rules_source = _Problems(str(path))
        rules_section = document.get("rules") if isinstance(document, Mapping) else None
        if not isinstance(rules_section, list):
            rules_source.add(document, "expected a mapping with a `rules:` list")
            rules_section = []
    rules = _rules(rules_section, rules_source, destinations, actions)
    all_problems = problems.items + (rules_source.items if rules_source is not problems else [])
    if all_problems:
        raise AlertConfigError(all_problems)
    return AlertsConfig(rules=tuple(rules), destinations=destinations, actions=actions)


def load_alerts_file(path: Path) -> AlertsConfig:
    """A standalone YAML file holding an alerts section (``alerts:`` at the top, or the section itself)."""
    document = read_yaml(path)
    if isinstance(document, Mapping) and "alerts" in document:
        document = document["alerts"]
    if not isinstance(document, Mapping):
        raise AlertConfigError([f"{path}:1: expected a mapping"])
    return load_alerts_config(document, source=str(path), base_dir=path.parent)


def _fields(config: DestinationConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in DestinationConfig.__dataclass_fields__}


def _destinations(section: Any, problems: _Problems, kind: str) -> dict[str, DestinationConfig]:
    if not isinstance(section, Mapping):
        problems.add(section, f"{kind}s must be a mapping of name to settings")
        return {}
    found: dict[str, DestinationConfig] = {}
    for name, settings in section.items():
        if not isinstance(settings, Mapping):
            problems.add(section, f"{kind} {name!r} must be a mapping", name)
            continue
        config = _destination(str(name), settings, problems, kind)
        if config is not None:
            found[str(name)] = config
    return found


def _from_env(settings: Mapping[str, Any], key: str, problems: _Problems, label: str) -> str | None:
    """``key`` given directly, or ``key_env`` naming an environment variable that holds it."""
    if settings.get(key) is not None:
        return str(settings[key])
    env_name = settings.get(f"{key}_env")
    if env_name is None:
        return None
    value = os.environ.get(str(env_name))
    if not value:
        problems.add(settings, f"{label}: {unset_variable(f'{key}_env', env_name)}", f"{key}_env")
    return value


def _destination(
    name: str, settings: Mapping[str, Any], problems: _Problems, kind: str
) -> DestinationConfig | None:
    label = f"{kind} {name!r}"
    destination_type = str(settings.get("type", "webhook" if kind == "action" else ""))
    if destination_type not in DESTINATION_TYPES:
        problems.add(settings, f"{label}: type must be one of {', '.join(sorted(DESTINATION_TYPES))}", "type")
        return None
    url = _from_env(settings, "url", problems, label)
    routing_key = _from_env(settings, "routing_key", problems, label)
    secret = None
    if settings.get("secret_env") is not None:
        secret = os.environ.get(str(settings["secret_env"]))
        if not secret:
            problems.add(settings, f"{label}: {unset_variable('secret_env', settings['secret_env'])}")
    if destination_type == "pagerduty":
        url = url or PAGERDUTY_EVENTS_URL
        if routing_key is None:
            problems.add(settings, f"{label}: pagerduty needs routing_key or routing_key_env")
    if destination_type in ("slack", "webhook") and url is None:
        problems.add(settings, f"{label}: {destination_type} needs url or url_env")
    path = settings.get("path")
    if destination_type == "file" and path is None:
        problems.add(settings, f"{label}: file needs a path")
    headers = settings.get("headers") or {}
    if not isinstance(headers, Mapping):
        problems.add(settings, f"{label}: headers must be a mapping", "headers")
        headers = {}
    return DestinationConfig(
        name=name,
        type=destination_type,
        url=url,
        routing_key=routing_key,
        secret=secret,
        headers=tuple((str(key), str(value)) for key, value in headers.items()),
        path=Path(path) if path is not None else None,
    )


RULE_KEYS = frozenset(
    {
        "id",
        "description",
        "severity",
        "destinations",
        "match",
        "threshold",
        "window",
        "ratio_to_baseline",
        "first_seen",
        "schedule",
        "tz",
        "query",
        "every",
        "reads",
        "group_by",
        "dedup_window",
        "auto_actions",
    }
)
TRIGGERS = ("match", "ratio_to_baseline", "first_seen", "query")
MATCH_KEYS = frozenset({"threat", "severity", "rule", "agent", "role", "approved"})


def _rules(
    section: Any,
    problems: _Problems,
    destinations: Mapping[str, DestinationConfig],
    actions: Mapping[str, DestinationConfig],
) -> list[AlertRule]:
    if not isinstance(section, list):
        problems.add(section, "rules must be a list")
        return []
    rules: list[AlertRule] = []
    seen: set[str] = set()
    for entry in section:
        if not isinstance(entry, Mapping):
            problems.add(section, "each rule must be a mapping")
            continue
        rule = _rule(entry, problems, destinations, actions)
        if rule is None:
            continue
        if rule.id in seen:
            problems.add(entry, f"rule {rule.id!r} is defined twice", "id")
        seen.add(rule.id)
        rules.append(rule)
    return rules


def _rule(
    entry: Mapping[str, Any],
    problems: _Problems,
    destinations: Mapping[str, DestinationConfig],
    actions: Mapping[str, DestinationConfig],
) -> AlertRule | None:
    before = len(problems.items)
    rule_id = str(entry.get("id") or "")
    if not rule_id:
        problems.add(entry, "rule needs an id")
    label = f"rule {rule_id!r}"
    for key in entry:
        if key not in RULE_KEYS:
            problems.add(entry, f"{label}: unknown key {key!r}", key)
    entry = _playbook_query(entry, problems, label)
    triggers = [key for key in TRIGGERS if key in entry]
    if "ratio_to_baseline" in entry and "match" in entry:
        triggers.remove("match")  # the findings the ratio counts
    if len(triggers) != 1:
        problems.add(
            entry,
            f"{label}: needs exactly one trigger: match (with threshold), ratio_to_baseline, first_seen"
            " or query",
        )
    severity = _severity(entry, "severity", problems, label) or Severity.HIGH
    rule_destinations = _names(entry, "destinations", problems, label)
    if not rule_destinations:
        problems.add(entry, f"{label}: needs at least one destination", "destinations")
    for name in rule_destinations:
        if name not in destinations:
            problems.add(
                entry, f"{label}: sends to undefined destination {name!r} (define it under destinations)"
            )
    auto_actions = _names(entry, "auto_actions", problems, label)
    for action in auto_actions:
        if action not in BUILTIN_ACTIONS and action not in actions:
            problems.add(
                entry,
                f"{label}: auto action {action!r} is neither built in ({', '.join(sorted(BUILTIN_ACTIONS))})"
                " nor defined under actions",
                "auto_actions",
            )
    window = _duration(entry, "window", problems, label, timedelta(minutes=5))
    match = _match(entry["match"], problems, label) if "match" in entry else None
    threshold = None
    if "threshold" in entry:
        found = THRESHOLD.match(str(entry["threshold"]))
        if found is None:
            problems.add(entry, f"{label}: threshold must look like '>=1' or '>3'", "threshold")
        else:
            threshold = Threshold(inclusive=found.group(1) == ">=", value=int(found.group(2)))
        if match is None and "query" not in entry:
            problems.add(entry, f"{label}: a threshold rule needs a match or a query")
    elif match is not None and "ratio_to_baseline" not in entry:
        problems.add(entry, f"{label}: a match needs a threshold or a ratio_to_baseline")
    baseline = None
    if "ratio_to_baseline" in entry:
        baseline = _baseline(entry["ratio_to_baseline"], problems, label)
        if match is None:
            problems.add(entry, f"{label}: a ratio_to_baseline rule needs a match")
        if baseline is not None:
            window = baseline.window
    first_seen = None
    if "first_seen" in entry:
        first_seen = tuple(_names(entry, "first_seen", problems, label))
        _check_fields(entry, "first_seen", first_seen, problems, label)
    schedule = query = every = None
    if "query" in entry:
        query = entry["query"]
        if not isinstance(query, str) or not query.strip():
            problems.add(entry, f"{label}: query must be SQL text", "query")
    if "schedule" in entry:
        schedule = str(entry["schedule"])
        if len(schedule.split()) != 5 or not croniter.is_valid(schedule):
            problems.add(
                entry,
                f"{label}: schedule {schedule!r} is not a cron expression of five fields"
                " (minute hour day-of-month month day-of-week, e.g. '0 9 * * *')",
                "schedule",
            )
        if query is None:
            problems.add(entry, f"{label}: a scheduled rule needs an SQL query", "schedule")
        if "every" in entry:
            problems.add(entry, f"{label}: give a schedule or every, not both", "every")
    elif query is not None:
        every = _duration(entry, "every", problems, label, DEFAULT_POLL)
    elif "every" in entry:
        problems.add(entry, f"{label}: every applies to a query", "every")
    reads = None
    if "reads" in entry:
        reads = _duration(entry, "reads", problems, label, timedelta(0))
        if query is None:
            problems.add(entry, f"{label}: reads applies to a query", "reads")
    tz = str(entry.get("tz") or "UTC")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        problems.add(entry, f"{label}: tz {tz!r} is not a time zone name (such as UTC or Europe/Paris)", "tz")
    if "tz" in entry and schedule is None:
        problems.add(entry, f"{label}: tz applies to a schedule only", "tz")
    group_by = tuple(_names(entry, "group_by", problems, label))
    _check_fields(entry, "group_by", group_by, problems, label)
    dedup_window = _duration(entry, "dedup_window", problems, label, max(window, timedelta(minutes=10)))
    if len(problems.items) > before:
        return None
    return AlertRule(
        id=rule_id,
        description=str(entry.get("description") or rule_id),
        severity=severity,
        destinations=tuple(rule_destinations),
        source=f"{problems.source}:{getattr(entry, 'line', 0)}",
        match=match,
        threshold=threshold,
        window=window,
        baseline=baseline,
        first_seen=first_seen,
        schedule=schedule,
        tz=tz,
        query=query,
        every=every,
        reads=reads,
        group_by=group_by,
        dedup_window=dedup_window,
        auto_actions=tuple(auto_actions),
    )


def _playbook_query(entry: Mapping[str, Any], problems: _Problems, label: str) -> Mapping[str, Any]:
    """The playbook's alert file writes two triggers as a ``query``: ``ratio_to_baseline(threat='...',
    window='1h', baseline_days=14)`` with a ``threshold`` of ``">3"`` is the ratio trigger, and
    ``see_query_N_above`` names one of its triage queries. The rule with those read as this loader's
    own keys (the lines of the original keys kept for messages)."""
    query = entry.get("query")
    if not isinstance(query, str):
        return entry
    try:
        referenced = referenced_query(query)
    except KeyError:
        problems.add(entry, f"{label}: {query.strip()!r} names no query of the playbook (1 to 5)", "query")
        return entry
    if referenced is not None:
        return _replaced(entry, query=referenced, reads=entry.get("reads", f"{lookback_days(query)}d"))
    call = RATIO_CALL.match(query)
    if call is None:
        return entry
    arguments: dict[str, str] = {}
    rest = call.group("arguments")
    while rest.strip():
        found = RATIO_ARGUMENT.match(rest)
        if found is None:
            problems.add(entry, f"{label}: cannot read ratio_to_baseline arguments {rest.strip()!r}", "query")
            return entry
        arguments[found.group("name")] = (
            found.group("quoted") if found.group("quoted") is not None else found.group("bare")
        )
        rest = rest[found.end() :]
    unknown = set(arguments) - {"threat", "window", "baseline_days", "min_events"}
    if unknown:
        problems.add(
            entry,
            f"{label}: ratio_to_baseline takes threat, window, baseline_days and min_events,"
            f" not {', '.join(sorted(unknown))}",
            "query",
        )
        return entry
    threshold = THRESHOLD.match(str(entry.get("threshold", "")))
    if threshold is None:
        problems.add(
            entry, f"{label}: ratio_to_baseline needs a threshold such as '>3' (the ratio)", "threshold"
        )
        return entry
    baseline: dict[str, str] = {"ratio": threshold.group(2)}
    baseline |= {key: arguments[key] for key in ("window", "baseline_days", "min_events") if key in arguments}
    match = {"threat": arguments["threat"]} if "threat" in arguments else {}
    return _replaced(entry, query=None, threshold=None, ratio_to_baseline=baseline, match=match)


def _replaced(entry: Mapping[str, Any], **values: Any) -> Mapping[str, Any]:
    """``entry`` with keys replaced (None: removed), keeping the key lines of a located mapping."""
    replaced = LocatedMapping(getattr(entry, "line", 0))
    replaced.update(entry)
    replaced.key_lines.update(getattr(entry, "key_lines", {}))
    for key, value in values.items():
        if value is None:
            replaced.pop(key, None)
            continue
        replaced[key] = value
        replaced.key_lines.setdefault(key, replaced.key_lines.get("query", replaced.line))
    return replaced


def _names(entry: Mapping[str, Any], key: str, problems: _Problems, label: str) -> list[str]:
    value = entry.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    problems.add(entry, f"{label}: {key} must be a name or a list of names", key)
    return []


def _check_fields(
    entry: Mapping[str, Any], key: str, fields: Sequence[str], problems: _Problems, label: str
) -> None:
    for name in fields:
        if name not in GROUP_FIELDS:
            problems.add(entry, f"{label}: {key} field {name!r} is not one of {sorted(GROUP_FIELDS)}", key)


def _severity(entry: Mapping[str, Any], key: str, problems: _Problems, label: str) -> Severity | None:
    if key not in entry:
        return None
    try:
        return Severity(str(entry[key]))
    except ValueError:
        problems.add(entry, f"{label}: severity must be one of {', '.join(level for level in Severity)}", key)
        return None


def _duration(
    entry: Mapping[str, Any], key: str, problems: _Problems, label: str, default: timedelta
) -> timedelta:
    if key not in entry:
        return default
    try:
        return parse_duration(str(entry[key]))
    except ValueError as exc:
        problems.add(entry, f"{label}: {exc}", key)
        return default


def _match(section: Any, problems: _Problems, label: str) -> Match | None:
    if not isinstance(section, Mapping):
        problems.add(section, f"{label}: match must be a mapping")
        return None
    for key in section:
        if key not in MATCH_KEYS:
            problems.add(section, f"{label}: unknown match key {key!r} (known: {sorted(MATCH_KEYS)})", key)
    threats = _names(section, "threat", problems, label) or None
    for threat in threats or []:
        if threat not in {str(known) for known in Threat}:
            problems.add(section, f"{label}: unknown threat {threat!r}", "threat")
    approved = section.get("approved")
    if approved is not None and not isinstance(approved, bool):
        problems.add(section, f"{label}: approved must be true or false", "approved")
        approved = None
    rules = _names(section, "rule", problems, label)
    agents = _names(section, "agent", problems, label)
    roles = _names(section, "role", problems, label)
    return Match(
        threats=frozenset(threats) if threats else None,
        min_severity=_severity(section, "severity", problems, label),
        rules=tuple(rules) or None,
        agents=frozenset(agents) or None,
        roles=frozenset(roles) or None,
        approved=approved,
    )


def _baseline(section: Any, problems: _Problems, label: str) -> Baseline | None:
    if not isinstance(section, Mapping):
        problems.add(section, f"{label}: ratio_to_baseline must be a mapping (ratio, window, baseline_days)")
        return None
    try:
        ratio = float(section.get("ratio", 3))
        baseline_days = int(section.get("baseline_days", 7))
        min_events = int(section.get("min_events", 5))
    except (TypeError, ValueError):
        problems.add(section, f"{label}: ratio, baseline_days and min_events must be numbers")
        return None
    if ratio <= 0 or baseline_days < 1 or min_events < 1:
        problems.add(section, f"{label}: ratio, baseline_days and min_events must be positive")
        return None
    window = _duration(section, "window", problems, label, timedelta(hours=1))
    return Baseline(ratio=ratio, window=window, baseline_days=baseline_days, min_events=min_events)
