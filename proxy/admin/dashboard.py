"""The dashboard served by the admin listener: its page (package data, no token: it holds nothing and asks
for one) and the read-only endpoints it draws from.

History comes from the audit log through the DuckDB views of ``egressguard query`` (``turns``,
``findings``, ``audit_records``), read from the daily files the window needs; the live feed follows the
same files (``proxy.admin.feed``). Approvals and freezes are the admin API's own endpoints.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.resources
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from proxy.admin.api import Control, Route
from proxy.admin.feed import FEED_FIELDS, MAX_SUBSCRIBERS, feed_entry
from proxy.admin.http import BadRequest, Request, Response
from proxy.admin.tokens import Access
from proxy.audit.keys import load_public_key
from proxy.audit.query import QueryResult, files_since, open_audit, plain, run_sql
from proxy.audit.verify import NOT_ON_A_LINE, VerifiedChains
from proxy.control import freeze
from proxy.scanning.rulepack import rules_dir

WINDOWS: dict[str, tuple[timedelta, timedelta]] = {
    "1h": (timedelta(hours=1), timedelta(minutes=1)),
    "24h": (timedelta(days=1), timedelta(minutes=30)),
}
"""The windows the page offers, each with its chart bucket."""
ACTIVE_WINDOW = timedelta(minutes=5)
RATE_WINDOW = timedelta(minutes=1)
BASELINE_WINDOW = timedelta(days=7)
DRILL_WINDOW = timedelta(days=31)
"""The playbook asks for a drill every 30 days: an older one is as good as none."""
LOOKUP_WINDOW = timedelta(days=31)
"""How far back a turn opened from the feed is looked for."""
FEED_LIMIT = 500
STATIC_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


# -- the page -------------------------------------------------------------------------------------------


@functools.cache
def _asset(name: str) -> bytes:
    return importlib.resources.files("proxy.admin").joinpath("static", name).read_bytes()


async def page(control: Control, request: Request, params: dict[str, str]) -> Response:
    return _static("index.html")


async def asset(control: Control, request: Request, params: dict[str, str]) -> Response:
    if params["name"] not in STATIC_TYPES:
        return Response.error(404, f"no such file: {params['name']}")
    return _static(params["name"])


def _static(name: str) -> Response:
    return Response(200, _asset(name), STATIC_TYPES[name], dict(PAGE_HEADERS))


# -- queries over the audit log -------------------------------------------------------------------------


async def _query(control: Control, since: datetime, work: Callable[[Callable[..., QueryResult]], Any]) -> Any:
    """Run ``work(sql)`` in a thread over the audit files from ``since`` on; ``sql(text, **parameters)``
    answers a QueryResult."""
    directory = control.runtime.policy.audit.path

    def run() -> Any:
        connection = open_audit(files_since(directory, since), skip_malformed=True, hashed=True)
        try:
            return work(lambda text, **parameters: run_sql(connection, text, parameters or None))
        finally:
            connection.close()

    return await asyncio.to_thread(run)


Handler = Callable[[Control, Request, dict[str, str]], Awaitable[Response]]


def shared_for(seconds: float) -> Callable[[Handler], Handler]:
    """Serve every request for the same path and query within ``seconds`` from one run of the handler:
    a page polls, and ten open pages must not read the audit log ten times as often."""

    def wrap(handler: Handler) -> Handler:
        recent: dict[str, tuple[float, asyncio.Future[Response]]] = {}

        @functools.wraps(handler)
        async def shared(control: Control, request: Request, params: dict[str, str]) -> Response:
            moment = time.monotonic()
            for stale in [key for key, (started, _) in recent.items() if moment - started > seconds]:
                del recent[stale]
            key = f"{request.path}?{sorted(request.query.items())}"
            if key not in recent:
                recent[key] = (moment, asyncio.ensure_future(handler(control, request, params)))
            return await asyncio.shield(recent[key][1])

        return shared

    return wrap


VERIFIED = VerifiedChains()
"""Each audit file's verification, kept between views (``VerifiedChains``)."""
UNREADABLE_KEY = (
    OSError,
    ValueError,
    TypeError,  # an encrypted private key, read without its password
    UnsupportedAlgorithm,
)


def trusted_key(control: Control) -> tuple[Ed25519PublicKey | None, str]:
    """The key checkpoints are checked with: the one the policy names (``audit.pubkey``), else the one the
    running log signs with; never a key file beside the log, which whoever rewrites the log rewrites too.
    Without one, why not."""
    configured = control.runtime.policy.audit.pubkey
    if configured is not None:
        try:
            return load_public_key(configured), ""
        except UNREADABLE_KEY as error:
            reason = error.strerror if isinstance(error, OSError) else str(error) or type(error).__name__
            return None, f"unverified: the public key {configured} (audit.pubkey) cannot be read: {reason}"
    sink = control.runtime.audit_log
    if sink is None:
        return None, "unverified: the audit log is not open, so no signing key is held to check it with"
    return sink.public_key, ""


async def _chain_problems(
    control: Control, since: datetime, records: list[dict[str, Any]]
) -> dict[str, str | None]:
    """Where each of ``records`` (read from the audit files from ``since`` on, each with its ``hash`` and
    ``filename``) stands in its writer's hash chain (``VerifiedChains``): None where the chain verifies
    through its line, checkpoints signed by the trusted key, else why not."""
    key, missing = trusted_key(control)
    if key is None:
        return {str(record.get("hash")): missing for record in records}
    wanted = {str(record.get("hash")): Path(str(record.get("filename"))) for record in records}
    files = files_since(control.runtime.policy.audit.path, since)
    return await asyncio.to_thread(VERIFIED.states, files, key, wanted)


def _chain_problem(problems: dict[str, str | None], record: dict[str, Any]) -> str | None:
    return problems.get(str(record.get("hash")), NOT_ON_A_LINE)


def _rows(result: QueryResult) -> list[dict[str, Any]]:
    return [plain(row) for row in result.as_dicts()]


def _window(request: Request) -> tuple[str, timedelta, timedelta]:
    name = request.query.get("window", "1h")
    if name not in WINDOWS:
        raise BadRequest(f"window must be one of {', '.join(WINDOWS)}")
    return (name, *WINDOWS[name])


# -- now ------------------------------------------------------------------------------------------------


NOW_SQL = """
SELECT count(*) FILTER (WHERE ts >= $minute) AS turns_last_minute,
       count(*) AS turns,
       count(*) FILTER (WHERE decision = 'blocked') AS blocked,
       count(*) FILTER (WHERE decision = 'redacted') AS redacted,
       count(*) FILTER (WHERE len(findings) > 0) AS with_findings,
       coalesce(list(DISTINCT agent_id ORDER BY agent_id) FILTER (WHERE ts >= $active), []) AS active_agents
FROM turns WHERE ts >= $hour AND ts <= $now
"""
LAST_DRILL_SQL = """
SELECT drill, passed, ts FROM audit_records
WHERE type = 'drill.finished' AND ts::TIMESTAMPTZ >= $since ORDER BY ts DESC LIMIT 1
"""


@shared_for(1.0)
async def now(control: Control, request: Request, params: dict[str, str]) -> Response:
    moment = datetime.now(UTC)
    hour = moment - timedelta(hours=1)
    (counts,) = await _query(
        control,
        hour,
        lambda sql: _rows(
            sql(NOW_SQL, now=moment, hour=hour, minute=moment - RATE_WINDOW, active=moment - ACTIVE_WINDOW)
        ),
    )
    turns_last_minute = counts.pop("turns_last_minute")
    checks = control.operations.readiness()
    router = control.runtime.alert_router
    latest: dict[str, str] = {}
    for (_, target), outcome in list(router.outcomes.items()) if router is not None else []:
        latest[target] = outcome  # in the order alerts were raised: the newest alert's outcome stays
    return Response.json(
        200,
        {
            "ts": plain(moment),
            "turns_per_second": round(turns_last_minute / RATE_WINDOW.total_seconds(), 3),
            "last_hour": counts,
            "alerts": {
                "failing_destinations": sorted(t for t, outcome in latest.items() if outcome != "delivered"),
                "waiting": router.pending if router is not None else 0,
                "enabled": router is not None,
            },
            "audit": {
                "health": checks.get("audit") or "ok",
                "checks": {name: problem or "ok" for name, problem in checks.items()},
            },
            "mode": str(control.runtime.policy.mode),
        },
    )


async def last_drill(control: Control, request: Request, params: dict[str, str]) -> Response:
    """Apart from ``now``: it reads a month of the log, so the page asks for it once a minute."""
    moment = datetime.now(UTC)
    since = moment - DRILL_WINDOW
    drills = await _query(control, since, lambda sql: _rows(sql(LAST_DRILL_SQL, since=since)))
    if not drills:
        return Response.json(200, {"last_drill": None, "window_days": DRILL_WINDOW.days})
    finished = datetime.fromisoformat(drills[0]["ts"].replace("Z", "+00:00"))
    return Response.json(
        200,
        {
            "last_drill": {
                "id": drills[0]["drill"],
                "passed": drills[0]["passed"],
                "ts": drills[0]["ts"],
                "age_s": round((moment - finished).total_seconds()),
            },
            "window_days": DRILL_WINDOW.days,
        },
    )


# -- per agent ------------------------------------------------------------------------------------------


AGENTS_SQL = """
SELECT agent_id, count(*) AS turns,
       count(*) FILTER (WHERE decision = 'blocked') AS blocked,
       count(*) FILTER (WHERE decision = 'redacted') AS redacted,
       sum(len(findings)) AS findings,
       count(*) FILTER (WHERE refusal) AS refusals, count(refusal) AS judged,
       max(ts) AS last_seen
FROM turns WHERE ts >= $since GROUP BY agent_id ORDER BY turns DESC, agent_id
"""
BASELINE_SQL = """
SELECT agent_id, count(*) FILTER (WHERE refusal) AS refusals, count(refusal) AS judged
FROM turns WHERE ts >= $baseline AND ts < $since GROUP BY agent_id
"""
HOSTS_SQL = """
SELECT turn.agent_id, turn.egress_host AS host, count(*) AS turns, max(turn.ts) AS last_seen,
       min(seen.ts) AS first_seen
FROM turns AS turn
LEFT JOIN (SELECT DISTINCT event_id, ts FROM findings
           WHERE rule = 'egress.first_seen' AND ts >= $since) AS seen
  ON seen.event_id = turn.event_id
WHERE turn.ts >= $since AND turn.egress_host IS NOT NULL
GROUP BY ALL ORDER BY turn.agent_id, turns DESC, host
"""
TOOLS_SQL = """
SELECT agent_id, tool, count(*) AS calls
FROM (SELECT agent_id, unnest(tools) AS tool FROM turns WHERE ts >= $since)
GROUP BY ALL ORDER BY agent_id, calls DESC, tool
"""
THREATS_SQL = """
SELECT agent_id, time_bucket(to_seconds($bucket), ts) AS bucket, threat, count(*) AS findings
FROM findings WHERE ts >= $since GROUP BY ALL ORDER BY agent_id, bucket, threat
"""
IDENTITIES_SQL = """
SELECT DISTINCT agent_id, user_id, session_id FROM turns
WHERE ts >= $since AND (list_contains($users, user_id) OR list_contains($sessions, session_id))
"""


@shared_for(5.0)
async def agents(control: Control, request: Request, params: dict[str, str]) -> Response:
    name, span, bucket = _window(request)
    moment = datetime.now(UTC)
    since = moment - span
    freezes = freeze.active_freezes(control.runtime.state)
    frozen = {
        kind: [str(f["identity"]) for f in freezes if f.get("kind") == kind] for kind in freeze.FREEZE_KINDS
    }

    def work(sql: Callable[..., QueryResult]) -> dict[str, list[dict[str, Any]]]:
        return {
            "agents": _rows(sql(AGENTS_SQL, since=since)),
            "baseline": _rows(sql(BASELINE_SQL, since=since, baseline=since - BASELINE_WINDOW)),
            "hosts": _rows(sql(HOSTS_SQL, since=since)),
            "tools": _rows(sql(TOOLS_SQL, since=since)),
            "threats": _rows(sql(THREATS_SQL, since=since, bucket=bucket.total_seconds())),
            "identities": _rows(
                sql(
                    IDENTITIES_SQL,
                    since=since,
                    users=frozen["user"] or [""],
                    sessions=frozen["session"] or [""],
                )
            ),
        }

    found = await _query(control, since - BASELINE_WINDOW, work)
    baseline = {row["agent_id"]: row for row in found["baseline"]}
    summaries = []
    for row in found["agents"]:
        agent = row["agent_id"]
        before = baseline.get(agent, {"refusals": 0, "judged": 0})
        identities = [entry for entry in found["identities"] if entry["agent_id"] == agent]
        summaries.append(
            {
                **row,
                "refusal_rate": _rate(row["refusals"], row["judged"]),
                "baseline_refusal_rate": _rate(before["refusals"], before["judged"]),
                "hosts": [_without_agent(h) for h in found["hosts"] if h["agent_id"] == agent],
                "tools": [_without_agent(t) for t in found["tools"] if t["agent_id"] == agent],
                "threats": [_without_agent(t) for t in found["threats"] if t["agent_id"] == agent],
                "frozen": {
                    "agent": agent in frozen["agent"],
                    "users": sorted({e["user_id"] for e in identities if e["user_id"] in frozen["user"]}),
                    "sessions": sorted(
                        {e["session_id"] for e in identities if e["session_id"] in frozen["session"]}
                    ),
                },
            }
        )
    return Response.json(
        200, {"window": name, "bucket_s": bucket.total_seconds(), "since": plain(since), "agents": summaries}
    )


def _rate(events: int, of: int) -> float | None:
    return round(events / of, 4) if of else None


def _without_agent(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key != "agent_id"}


# -- charts ---------------------------------------------------------------------------------------------


FINDINGS_CHART_SQL = """
SELECT time_bucket(to_seconds($bucket), ts) AS bucket, threat, count(*) AS findings
FROM findings WHERE ts >= $since GROUP BY ALL ORDER BY bucket, threat
"""
LATENCY_CHART_SQL = """
SELECT time_bucket(to_seconds($bucket), ts) AS bucket, count(*) AS turns,
       round(avg(latency_ms - coalesce(upstream_ms, 0)), 2) AS own_ms,
       round(avg(upstream_ms), 2) AS upstream_ms,
       round(quantile_cont(latency_ms - coalesce(upstream_ms, 0), 0.95), 2) AS own_p95_ms
FROM turns WHERE ts >= $since AND latency_ms IS NOT NULL GROUP BY ALL ORDER BY bucket
"""


@shared_for(5.0)
async def charts(control: Control, request: Request, params: dict[str, str]) -> Response:
    name, span, bucket = _window(request)
    moment = datetime.now(UTC)
    since = moment - span

    def work(sql: Callable[..., QueryResult]) -> dict[str, list[dict[str, Any]]]:
        seconds = bucket.total_seconds()
        return {
            "findings": _rows(sql(FINDINGS_CHART_SQL, since=since, bucket=seconds)),
            "latency": _rows(sql(LATENCY_CHART_SQL, since=since, bucket=seconds)),
        }

    found = await _query(control, since, work)
    return Response.json(
        200,
        {
            "window": name,
            "since": plain(since),
            "now": plain(moment),
            "bucket_s": bucket.total_seconds(),
            **found,
        },
    )


# -- turns: the feed's history and one turn's record ----------------------------------------------------


FEED_COLUMNS = (*FEED_FIELDS, "findings", "hash", "filename")
FEED_FILTERS = {
    "agent": "agent_id = ${name}",
    "decision": "decision = ${name}",
    "threat": "event_id IN (SELECT event_id FROM findings WHERE threat = ${name} AND ts >= $since)",
    "severity": "event_id IN (SELECT event_id FROM findings WHERE severity = ${name} AND ts >= $since)",
}


async def turns(control: Control, request: Request, params: dict[str, str]) -> Response:
    name, span, _ = _window(request)
    since = datetime.now(UTC) - span
    limit_text = request.query.get("limit", "200")
    if not limit_text.isdigit() or not 0 < int(limit_text) <= FEED_LIMIT:
        raise BadRequest(f"limit must be a whole number from 1 to {FEED_LIMIT}")
    wanted = {key: request.query[key] for key in FEED_FILTERS if request.query.get(key)}
    conditions = "".join(f" AND {FEED_FILTERS[key].replace('{name}', key)}" for key in wanted)
    columns = ", ".join(FEED_COLUMNS)
    statement = (
        f"SELECT {columns} FROM turns WHERE ts >= $since{conditions} "  # noqa: S608 - names are ours, values parameters
        f"ORDER BY ts DESC, event_id LIMIT {int(limit_text)}"
    )
    rows = await _query(control, since, lambda sql: _rows(sql(statement, since=since, **wanted)))
    problems = await _chain_problems(control, since, rows)
    return Response.json(
        200, {"window": name, "turns": [feed_entry(row, _chain_problem(problems, row)) for row in rows]}
    )


TURN_SQL = "SELECT * FROM audit_records WHERE type = 'agent.turn' AND event_id = $event_id LIMIT 1"


async def turn(control: Control, request: Request, params: dict[str, str]) -> Response:
    since = datetime.now(UTC) - LOOKUP_WINDOW
    rows = await _query(control, since, lambda sql: _rows(sql(TURN_SQL, event_id=params["event_id"])))
    if not rows:
        return Response.error(404, f"no turn {params['event_id']} in the last {LOOKUP_WINDOW.days} days")
    chain_problem = _chain_problem(await _chain_problems(control, since, rows), rows[0])
    record = {
        key: value
        for key, value in rows[0].items()
        if value is not None and key not in ("passed", "filename")
    }
    descriptions = rule_descriptions()
    rules = sorted({str(f.get("rule")) for f in record.get("findings") or []})
    return Response.json(
        200,
        {
            "record": record,
            "verified": chain_problem is None,
            "chain_problem": chain_problem,
            "why": explain(record),
            "rules": [
                {
                    "id": rule,
                    "description": descriptions.get(rule),
                    "source": "rule pack" if rule in descriptions else "built in (see the finding's signal)",
                }
                for rule in rules
            ],
        },
    )


def explain(record: dict[str, Any]) -> list[str]:
    """Why the turn was decided as it was, in the words an operator reads: which findings were enforced,
    and which ones enforce mode would have acted on."""
    findings = [f for f in record.get("findings") or [] if isinstance(f, dict)]
    decision = record.get("decision") or "unknown"
    enforced = [f for f in findings if f.get("enforced") and f.get("action") not in (None, "flag")]
    would = [f for f in findings if not f.get("enforced") and f.get("action") not in (None, "flag")]
    flagged = [f for f in findings if f.get("action") == "flag"]

    def named(group: list[dict[str, Any]]) -> str:
        return ", ".join(
            f"{f.get('rule')} ({f.get('threat')}, {f.get('severity')}: {f.get('action')})" for f in group
        )

    lines = [f"decision: {decision} (policy mode {record.get('mode') or 'unknown'})"]
    if enforced:
        lines.append(f"enforced: {named(enforced)}")
    if would:
        lines.append(f"observed only, enforce mode would have acted: {named(would)}")
    if flagged:
        lines.append(f"flagged for review: {named(flagged)}")
    if not findings:
        lines.append("no rule matched")
    lines.extend(f"error: {error}" for error in record.get("errors") or [])
    return lines


@functools.cache
def rule_descriptions(directory: Path | None = None) -> dict[str, str]:
    """Every rule id in the rule packs (text rules, tool catalogues, alert rules) with its description."""
    found: dict[str, str] = {}
    for path in sorted((directory or rules_dir()).glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        lists = data.values() if isinstance(data, dict) else []
        for entries in lists:
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                    found.setdefault(entry["id"], str(entry.get("description") or "").strip())
    return found


# -- live feed and session ------------------------------------------------------------------------------


async def feed(control: Control, request: Request, params: dict[str, str]) -> Response:
    if control.feed.full:
        return Response.error(503, f"{MAX_SUBSCRIBERS} event streams are open already; close one")
    return Response(
        200,
        b"",
        "text/event-stream; charset=utf-8",
        {"X-Accel-Buffering": "no"},
        stream=control.feed.stream(),
    )


async def session(control: Control, request: Request, params: dict[str, str]) -> Response:
    """What the presented token may do, so the page shows or hides the buttons that need the full one."""
    granted = control.tokens.access(request.headers.get("authorization"))
    return Response.json(
        200, {"access": str(granted), "can_act": granted is Access.FULL, "server_time": time.time()}
    )


DASHBOARD = "/api/v1/dashboard"


DASHBOARD_ROUTES: list[Route] = [
    Route("GET", "/", None, "The dashboard page (it asks for a token; every datum it shows needs one)", page),
    Route("GET", "/static/{name}", None, "The dashboard's script and style", asset),
    Route("GET", f"{DASHBOARD}/session", Access.READ, "What the presented token may do", session),
    Route("GET", f"{DASHBOARD}/now", Access.READ, "Turns per second, blocked, redacted, health", now),
    Route("GET", f"{DASHBOARD}/drill", Access.READ, "The last drill's verdict and age (31 days)", last_drill),
    Route(
        "GET",
        f"{DASHBOARD}/agents",
        Access.READ,
        "Per agent (?window=1h|24h): turns, hosts, tools, findings over time, refusal rate, freezes",
        agents,
    ),
    Route(
        "GET",
        f"{DASHBOARD}/charts",
        Access.READ,
        "Findings by threat and latency (own vs upstream) per bucket (?window=1h|24h)",
        charts,
    ),
    Route(
        "GET",
        f"{DASHBOARD}/turns",
        Access.READ,
        "Recent turns (?window, agent, threat, severity, decision, limit)",
        turns,
    ),
    Route("GET", f"{DASHBOARD}/feed", Access.READ, "New turns as server-sent events", feed),
    Route(
        "GET",
        f"{DASHBOARD}/turns/{{event_id}}",
        Access.READ,
        "One turn's audit record, why it was decided so, its rules with descriptions",
        turn,
    ),
]
