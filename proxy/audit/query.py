"""Triage queries over the audit log: DuckDB reads the JSONL files in place.

Three views: ``turns`` (one row per ``agent.turn`` record, ``ts`` as a UTC timestamp), ``findings``
(one row per finding, with the fields of its turn) and ``TaskEntry`` (the turns under the column names
the playbook's triage queries use, ``findings`` as JSON). Named queries answer on-call's first questions;
``--sql`` runs anything else over the same views. MySQL's ``JSON_UNQUOTE`` and ``FIELD`` are defined as
macros so the playbook's queries need only ``JSON_TABLE`` rewritten (``proxy.audit.playbook``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from proxy.audit.log import daily_file_name, daily_files
from proxy.audit.verify import collect_files, default_audit_directory
from proxy.commands.logs import escape_controls
from proxy.config.units import parse_duration

FINDING_TYPE = (
    'STRUCT(threat VARCHAR, rule VARCHAR, signal VARCHAR, severity VARCHAR, action VARCHAR, "where" VARCHAR,'
    " owasp VARCHAR, enforced BOOLEAN, fingerprint VARCHAR, origin VARCHAR, count INTEGER)[]"
)
EVENT_ONLY_COLUMNS = ("type", "passed", "prev_hash", "hash")
"""Columns of ``audit_records`` (operator events, the chain) that the ``turns`` view leaves out."""
# Declared rather than inferred: a day of files where a field is always null must still read as a column.
TURN_COLUMNS = {
    "type": "VARCHAR",
    "ts": "VARCHAR",
    "event_id": "VARCHAR",
    "agent_id": "VARCHAR",
    "role": "VARCHAR",
    "user_id": "VARCHAR",
    "session_id": "VARCHAR",
    "purpose": "VARCHAR",
    "consent_id": "VARCHAR",
    "approval_id": "VARCHAR",
    "egress_host": "VARCHAR",
    "method": "VARCHAR",
    "path": "VARCHAR",
    "status": "INTEGER",
    "forwarded": "BOOLEAN",
    "dialect": "VARCHAR",
    "model": "VARCHAR",
    "stream": "BOOLEAN",
    "latency_ms": "DOUBLE",
    "upstream_ms": "DOUBLE",
    "tokens_in": "BIGINT",
    "tokens_out": "BIGINT",
    "tools": "VARCHAR[]",
    "findings": FINDING_TYPE,
    "refusal": "BOOLEAN",
    "decision": "VARCHAR",
    "mode": "VARCHAR",
    "input_sha256": "VARCHAR",
    "output_sha256": "VARCHAR",
    "errors": "VARCHAR[]",
    "drill": "VARCHAR",
    "passed": "BOOLEAN",
    "prev_hash": "VARCHAR",
    "hash": "VARCHAR",
}
FINDING_FIELDS = (
    "threat",
    "rule",
    "signal",
    "severity",
    "action",
    "where",
    "owasp",
    "enforced",
    "fingerprint",
    "origin",
    "count",
)

TASK_ENTRY_VIEW = """
CREATE VIEW TaskEntry AS
SELECT event_id AS id, ts AS created_at, agent_id, role, user_id, session_id, purpose, consent_id,
       nullif(approval_id, '') AS approval_id, egress_host, method, path, status, dialect, model, tools,
       to_json(findings) AS findings, decision, mode, latency_ms, tokens_in, tokens_out, input_sha256,
       output_sha256
FROM turns
"""
"""The playbook's ``TaskEntry`` table over the audit log: one row per turn, ``created_at`` its time,
``findings`` a JSON array of ``{threat, rule, signal, severity, ...}`` objects, and an approval id that
is NULL when the turn carried none (its query 3 asks ``approval_id IS NULL``)."""


def _field_overload(count: int) -> str:
    """FIELD(value, v0, ..., v{count-1}): the 1-based position of value among the others, 0 when absent
    (DuckDB macros take a fixed number of arguments, so one overload per count)."""
    names = ", ".join(f"v{index}" for index in range(count))
    return f"(value, {names}) AS coalesce(list_position([{names}], value), 0)"


MYSQL_MACROS = (
    # DuckDB's own JSON_EXTRACT, JSON_CONTAINS and JSON_OBJECT already behave as MySQL's do on these
    # documents (containment in an array of objects, '$[*].signal' wildcards).
    "CREATE MACRO json_unquote(value) AS (value ->> '$')",
    "CREATE MACRO field" + ", ".join(_field_overload(count) for count in range(1, 13)),
)

NAMED_QUERIES: dict[str, tuple[str, str]] = {
    "incidents": (
        "hits and distinct users per threat and severity",
        """
        SELECT threat, severity, count(*) AS hits, count(DISTINCT user_id) AS users,
               count(DISTINCT agent_id) AS agents, min(ts) AS first_seen, max(ts) AS last_seen
        FROM findings WHERE ts >= $since AND ts <= $now
        GROUP BY threat, severity
        ORDER BY CASE severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END,
                 hits DESC, threat
        """,
    ),
    "injection-users": (
        "users who typed at least 3 prompt injections in the last 7 days (not users whose agent read one)",
        """
        SELECT user_id, count(DISTINCT event_id) AS attempts, count(DISTINCT agent_id) AS agents,
               min(ts) AS first_seen, max(ts) AS last_seen
        FROM findings
        WHERE threat = 'prompt_injection' AND origin = 'user' AND user_id IS NOT NULL
          AND ts >= $now - INTERVAL 7 DAY AND ts <= $now
        GROUP BY user_id HAVING count(DISTINCT event_id) >= 3 ORDER BY attempts DESC, user_id
        """,
    ),
    "unapproved-tools": (
        "tool-abuse findings on turns without an approval id",
        """
        SELECT ts, event_id, agent_id, user_id, session_id, rule, signal, severity, enforced
        FROM findings
        WHERE threat = 'tool_abuse' AND coalesce(approval_id, '') = '' AND ts >= $since AND ts <= $now
        ORDER BY ts, event_id
        """,
    ),
    "new-egress": (
        "hosts seen in the --since window but not in the 30 days before it",
        """
        SELECT egress_host, min(ts) AS first_seen, count(*) AS turns,
               string_agg(DISTINCT agent_id, ',' ORDER BY agent_id) AS agents
        FROM turns
        WHERE ts >= $since AND ts <= $now AND egress_host IS NOT NULL
          AND egress_host NOT IN (
            SELECT egress_host FROM turns
            WHERE ts >= $since - INTERVAL 30 DAY AND ts < $since AND egress_host IS NOT NULL)
        GROUP BY egress_host ORDER BY first_seen, egress_host
        """,
    ),
    "compliance-gaps": (
        "turns missing a purpose or a user id, per agent",
        """
        SELECT agent_id, count(*) AS turns,
               count(*) FILTER (WHERE coalesce(user_id, '') = '') AS missing_user_id,
               count(*) FILTER (WHERE coalesce(purpose, '') = '') AS missing_purpose,
               min(ts) AS first_seen, max(ts) AS last_seen
        FROM turns
        WHERE ts >= $since AND ts <= $now AND (coalesce(user_id, '') = '' OR coalesce(purpose, '') = '')
        GROUP BY agent_id ORDER BY turns DESC, agent_id
        """,
    ),
}


class QueryError(ValueError):
    """A query that cannot run: unknown name, bad duration or SQL error."""


@dataclass(frozen=True, slots=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]

    def as_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def open_audit(
    paths: Sequence[Path], *, skip_malformed: bool = False, hashed: bool = False
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the ``turns`` and ``findings`` views over the audit files under ``paths``,
    every writer's (the workers' directories inside an audit directory) read as one log; with ``hashed``
    each turn keeps its record's ``hash`` and each record the ``filename`` it was read from, by which its
    line's place in the chain is looked up.

    A malformed line (one being written this instant, or damage ``audit verify`` reports) fails a query,
    unless ``skip_malformed``: then it is left out, which suits a live view polled again in a moment."""
    files = collect_files(with_writers([path for path in paths if path.exists()]))
    connection = duckdb.connect(":memory:")
    connection.execute("SET TimeZone = 'UTC'")
    columns = ", ".join(f"'{name}': '{kind.replace("'", "''")}'" for name, kind in TURN_COLUMNS.items())
    if files:
        listing = ", ".join("'" + str(path).replace("'", "''") + "'" for path in files)
        source = (
            f"SELECT * FROM read_json([{listing}], format = 'newline_delimited', columns = {{{columns}}}, "  # noqa: S608
            f"ignore_errors = {str(skip_malformed).lower()}, filename = {str(hashed).lower()})"
        )
    else:
        source = "SELECT " + ", ".join(f'NULL::{kind} AS "{name}"' for name, kind in TURN_COLUMNS.items())
        source += ", NULL::VARCHAR AS filename" if hashed else ""
        source += " WHERE false"
    connection.execute(f"CREATE VIEW audit_records AS {source}")
    excluded = [name for name in EVENT_ONLY_COLUMNS if not (hashed and name == "hash")]
    connection.execute(
        f"CREATE VIEW turns AS SELECT * EXCLUDE ({', '.join(excluded)}) "  # noqa: S608
        "REPLACE (ts::TIMESTAMPTZ AS ts) FROM audit_records WHERE type = 'agent.turn' AND drill IS NULL"
    )
    finding_columns = ", ".join(f'finding."{name}" AS "{name}"' for name in FINDING_FIELDS)
    connection.execute(
        f"CREATE VIEW findings AS SELECT turn.* EXCLUDE (findings), {finding_columns} "  # noqa: S608
        "FROM turns AS turn CROSS JOIN unnest(turn.findings) AS finding_row(finding)"
    )
    connection.execute(TASK_ENTRY_VIEW)
    for macro in MYSQL_MACROS:
        connection.execute(macro)
    return connection


def with_writers(paths: Sequence[Path]) -> list[Path]:
    """The paths, and for each directory the writer directories inside it (``proxy.commands.workers``)."""
    found: list[Path] = []
    for path in paths:
        found.append(path)
        if path.is_dir():
            found.extend(sorted(child for child in path.iterdir() if child.is_dir() and daily_files(child)))
    return found


def files_since(directory: Path, since: datetime) -> list[Path]:
    """The daily files of ``directory`` and of its writers' directories that can hold records from
    ``since`` on (a file is named by the UTC day of its records)."""
    first = daily_file_name(since.astimezone(UTC).date())
    if not directory.is_dir():
        return []
    folders = [folder for folder in with_writers([directory]) if folder.is_dir()]
    return [path for folder in folders for path in daily_files(folder) if path.name >= first]


def run_named(
    connection: duckdb.DuckDBPyConnection, name: str, *, since: timedelta, now: datetime
) -> QueryResult:
    if name not in NAMED_QUERIES:
        raise QueryError(f"unknown query {name!r}; known: {', '.join(NAMED_QUERIES)}")
    sql = NAMED_QUERIES[name][1]
    # DuckDB refuses parameters a statement does not use.
    parameters = {key: value for key, value in {"since": now - since, "now": now}.items() if f"${key}" in sql}
    return run_sql(connection, sql, parameters)


def run_sql(
    connection: duckdb.DuckDBPyConnection, sql: str, parameters: dict[str, Any] | None = None
) -> QueryResult:
    try:
        cursor = connection.execute(sql, parameters) if parameters else connection.execute(sql)
        rows = cursor.fetchall()
    except duckdb.Error as exc:
        raise QueryError(str(exc)) from exc
    columns = [str(column[0]) for column in cursor.description or []]
    return QueryResult(columns, [tuple(row) for row in rows])


def plain(value: Any) -> Any:
    """A JSON- and CSV-friendly form of a DuckDB value."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    return value


def _cell(value: Any) -> str:
    """A value as a table or CSV cell shows it: agents chose most of what the log holds (user ids, hosts,
    tool names), so no control character of theirs reaches the operator's terminal."""
    value = plain(value)
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return escape_controls(str(value))


FORMULA_STARTS = ("=", "+", "-", "@")
"""What makes a spreadsheet read a CSV cell as a formula (``=HYPERLINK(...)``, ``+cmd|...``)."""


def _csv_cell(value: Any) -> str:
    """A cell as a spreadsheet opening the CSV takes it as text: a text that would start a formula gets a
    leading quote, as spreadsheets write one typed as text; numbers stay numbers."""
    cell = _cell(value)
    return f"'{cell}" if isinstance(plain(value), str) and cell.startswith(FORMULA_STARTS) else cell


def render_table(result: QueryResult) -> str:
    cells = [[_cell(value) for value in row] for row in result.rows]
    widths = [
        max([len(column), *(len(row[index]) for row in cells)]) for index, column in enumerate(result.columns)
    ]
    lines = ["  ".join(column.ljust(width) for column, width in zip(result.columns, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    lines.extend(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in cells
    )
    lines.append(f"({len(cells)} rows)")
    return "\n".join(line.rstrip() for line in lines) + "\n"


def render_json(result: QueryResult) -> str:
    return json.dumps([plain(row) for row in result.as_dicts()], indent=2) + "\n"


def render_csv(result: QueryResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(result.columns)
    writer.writerows([_csv_cell(value) for value in row] for row in result.rows)
    return buffer.getvalue()


RENDERERS: dict[str, Callable[[QueryResult], str]] = {
    "table": render_table,
    "json": render_json,
    "csv": render_csv,
}


def add_query_arguments(parser: argparse.ArgumentParser) -> None:
    names = ", ".join(f"{name} ({description})" for name, (description, _) in NAMED_QUERIES.items())
    parser.add_argument("name", nargs="?", help=f"named query: {names}")
    parser.add_argument(
        "--audit",
        type=Path,
        action="append",
        help="audit file or directory, repeatable (default: the default data dir's audit)",
    )
    parser.add_argument("--since", default="24h", help="window ending now: 30m, 24h, 7d (default 24h)")
    parser.add_argument("--format", choices=sorted(RENDERERS), default="table")
    parser.add_argument(
        "--sql", help="run this SQL over the views `turns`, `findings` and `TaskEntry` instead"
    )


def run_query(args: argparse.Namespace, now: datetime | None = None) -> int:
    """Print the result; exit 2 on a missing audit path, an unknown query, a bad duration or an SQL error."""
    if (args.name is None) == (args.sql is None):
        print("error: give a query name or --sql (one of them)", file=sys.stderr)
        return 2
    paths = args.audit or [default_audit_directory()]
    # A mistyped or relative path would otherwise read as an empty log: "0 rows" that mean nothing.
    missing = [path for path in paths if not path.exists()]
    if missing:
        print(
            f"error: no audit log at {', '.join(str(path) for path in missing)} (give --audit)",
            file=sys.stderr,
        )
        return 2
    try:
        connection = open_audit(paths)
        if args.sql is not None:
            result = run_sql(connection, args.sql)
        else:
            since = parse_duration(args.since)
            result = run_named(connection, args.name, since=since, now=now or datetime.now(UTC))
    except ValueError as exc:  # a QueryError, or a --since that is not a duration
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(RENDERERS[args.format](result))
    return 0
