"""The playbook's five triage queries, as they run over the audit log's ``TaskEntry`` view.

Each is the published text with one rewrite, MySQL's ``JSON_TABLE`` (DuckDB has none):

    JSON_TABLE(t.findings, '$[*]' COLUMNS (value JSON PATH '$')) AS f
    ->  unnest(json_extract(t.findings, '$[*]')) AS f(value)

Everything else runs as written: ``JSON_EXTRACT``, ``JSON_CONTAINS`` and ``JSON_OBJECT`` are DuckDB's own
and behave as MySQL's on these documents, ``JSON_UNQUOTE`` and ``FIELD`` are macros the query layer
defines, and ``NOW() - INTERVAL 1 DAY`` is DuckDB syntax too. Alert rules name them as the playbook's file
does (``query: see_query_4_above``).
"""

from __future__ import annotations

import re

PLAYBOOK_QUERIES: dict[int, tuple[str, str]] = {
    1: (
        "Incidents per threat class, last 24h",
        """
SELECT
JSON_UNQUOTE(JSON_EXTRACT(f.value, '$.threat')) AS threat,
JSON_UNQUOTE(JSON_EXTRACT(f.value, '$.severity')) AS severity,
COUNT(*) AS hits,
COUNT(DISTINCT t.user_id) AS distinct_users
FROM TaskEntry t,
unnest(json_extract(t.findings, '$[*]')) AS f(value)
WHERE t.created_at > NOW() - INTERVAL 1 DAY
GROUP BY threat, severity
ORDER BY FIELD(severity, 'critical','high','medium','low'), hits DESC;
""",
    ),
    2: (
        "Per-user prompt-injection attempt rate (block-list candidates)",
        """
SELECT
user_id,
COUNT(*) AS injection_attempts,
MAX(created_at) AS last_attempt
FROM TaskEntry
WHERE created_at > NOW() - INTERVAL 7 DAY
AND JSON_CONTAINS(findings, JSON_OBJECT('threat', 'prompt_injection'))
GROUP BY user_id
HAVING injection_attempts >= 3
ORDER BY injection_attempts DESC;
""",
    ),
    3: (
        "Destructive tool calls without human approval",
        """
SELECT
t.agent_id,
t.user_id,
JSON_EXTRACT(t.findings, '$[*].signal') AS tool,
t.created_at
FROM TaskEntry t
WHERE t.created_at > NOW() - INTERVAL 1 DAY
AND JSON_CONTAINS(t.findings, JSON_OBJECT('threat', 'tool_abuse'))
AND t.approval_id IS NULL
ORDER BY t.created_at DESC
LIMIT 200;
""",
    ),
    4: (
        "Egress destinations not seen in the last 30 days (lateral-movement canary)",
        """
WITH baseline AS (
SELECT DISTINCT egress_host
FROM TaskEntry
WHERE created_at BETWEEN NOW() - INTERVAL 30 DAY AND NOW() - INTERVAL 1 DAY
)
SELECT t.agent_id, t.egress_host, COUNT(*) hits, MIN(t.created_at) first_seen
FROM TaskEntry t
LEFT JOIN baseline b ON b.egress_host = t.egress_host
WHERE t.created_at > NOW() - INTERVAL 1 DAY
AND b.egress_host IS NULL
AND t.egress_host IS NOT NULL
GROUP BY t.agent_id, t.egress_host
ORDER BY hits DESC;
""",
    ),
    5: (
        "Compliance-trace integrity check",
        """
SELECT created_at, agent_id, id
FROM TaskEntry
WHERE created_at > NOW() - INTERVAL 7 DAY
AND (purpose IS NULL OR purpose = '' OR user_id IS NULL);
""",
    ),
}

SEE_QUERY = re.compile(r"see_query_(\d+)_above")
"""How the playbook's alert file points at one of these queries instead of repeating it."""
INTERVAL_DAYS = re.compile(r"INTERVAL (\d+) DAY")
"""How each of these queries writes a window it looks back over."""


def lookback_days(reference: str) -> int:
    """How many days back the query a ``see_query_N_above`` reference names reads: its longest
    ``INTERVAL n DAY`` (every one of its windows is written so). Raises KeyError as
    ``referenced_query`` does for a reference to no query of the playbook."""
    found = SEE_QUERY.fullmatch(reference.strip())
    if found is None:
        raise KeyError(reference)
    return max(int(days) for days in INTERVAL_DAYS.findall(PLAYBOOK_QUERIES[int(found.group(1))][1]))


def referenced_query(text: str) -> str | None:
    """The SQL a ``see_query_N_above`` reference stands for; None when ``text`` is no such reference.
    Raises KeyError for a reference to a query the playbook does not have."""
    found = SEE_QUERY.fullmatch(text.strip())
    if found is None:
        return None
    return PLAYBOOK_QUERIES[int(found.group(1))][1]
