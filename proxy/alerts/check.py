"""What ``egressguard check`` adds for alert rules: a rules file checked on its own, and every rule's SQL
run once over an empty audit log, so a query that cannot run is an error before the proxy starts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from proxy.alerts.rules import AlertsConfig, load_alerts_config, read_yaml
from proxy.audit.query import QueryError, open_audit, run_sql

TARGET_COLUMNS = frozenset({"agent_id", "user_id", "session_id"})
"""The columns a query rule's auto actions act on (``rotate_token`` and ``block_agent`` the agents,
``freeze_user`` the users, ``revoke_session`` the sessions)."""


def is_rules_file(document: Any) -> bool:
    """A document of alert rules (``rules:`` at the top), rather than a policy."""
    return isinstance(document, Mapping) and "rules" in document and "agents" not in document


def load_rules_file(path: Path) -> tuple[AlertsConfig, list[str]]:
    """The rules of a standalone rules file, and the destination names they send to: those are defined
    under ``alerts.destinations`` of the policy that uses the file, so here any name is taken."""
    document = read_yaml(path)
    names: set[str] = set()
    for rule in document.get("rules") or [] if isinstance(document, Mapping) else []:
        if isinstance(rule, Mapping) and isinstance(rule.get("destinations"), list):
            names.update(str(name) for name in rule["destinations"])
    destinations = {name: {"type": "stdout"} for name in sorted(names)}
    config = load_alerts_config(
        {"destinations": destinations, "rules": str(path.resolve())}, source=str(path), base_dir=path.parent
    )
    return config, sorted(names)


def check_queries(config: AlertsConfig) -> tuple[list[str], list[str]]:
    """Each query rule's SQL run over an empty log: the problems (``file:line: message``) of those that
    fail, and warnings for polled queries that read the whole log each time and for auto actions whose
    query returns none of the columns they act on."""
    problems: list[str] = []
    warnings: list[str] = []
    connection = open_audit([])
    for rule in config.rules:
        if rule.query is None:
            continue
        parameters = {"now": datetime.now(UTC)} if "$now" in rule.query else None
        try:
            columns = set(run_sql(connection, rule.query, parameters).columns)
        except QueryError as error:
            problems.append(f"{rule.source}: rule {rule.id!r}: its query does not run: {error}")
            continue
        if rule.every is not None and rule.reads is None:
            warnings.append(
                f"{rule.source}: rule {rule.id!r}: its query reads the whole audit log every"
                f" {rule.every.total_seconds():g}s; give reads: the longest window it looks at (such as 5m)"
            )
        if rule.auto_actions and not columns & TARGET_COLUMNS:
            warnings.append(
                f"{rule.source}: rule {rule.id!r}: auto actions {', '.join(rule.auto_actions)} act on the"
                f" agent_id, user_id and session_id its query returns, and it returns none of them"
            )
    return problems, warnings
