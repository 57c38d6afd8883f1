"""The admin API's routes: health, readiness, metrics and the JSON operations (approvals, freezes, reload,
alerts, drills), each with the access it needs. The OpenAPI description is built from the same table, so
it cannot drift from what is served.

Reading (health aside, which a load balancer probes without a token) needs the read-only token; anything
that changes state needs the full token, and is written to the audit log with who did it.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote, unquote_plus

from proxy import __version__
from proxy.admin.feed import Feed
from proxy.admin.http import BadRequest, Request, Response
from proxy.admin.tokens import Access, AdminTokens
from proxy.alerts import AlertRouter
from proxy.config.units import parse_duration
from proxy.control import freeze, tokens
from proxy.control.approvals import GRANT_TTL_S, ApprovalError, Approvals
from proxy.control.drill import CASES
from proxy.control.metrics import CONTENT_TYPE, Metrics
from proxy.runtime import Runtime

API = "/api/v1"


class Operations(Protocol):
    """What the routes need from the running proxy beyond its runtime."""

    async def reload(self, by: str) -> tuple[bool, list[str]]:
        """Re-read the policy: (True, []) when it is in force, else (False, the file:line problems)."""
        ...

    def record(self, event: dict[str, Any]) -> None:
        """Write an operator's action to the audit log."""
        ...

    def readiness(self) -> dict[str, str | None]:
        """Each dependency's problem, or None when it answers."""
        ...


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: str
    access: Access | None
    summary: str
    handler: Callable[[Control, Request, dict[str, str]], Awaitable[Response]]
    body: dict[str, str] | None = None
    """Request body fields (name: description), for the OpenAPI description."""

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The route's parameters, when ``path`` (percent-decoded) is the whole of its pattern: a path
        holding a control character (a newline, which ``$`` lets through at the end, NUL, a line
        separator) is no route's, nor is one with anything after the pattern."""
        if method != self.method or not path.isprintable():
            return None
        found = _route_regex(self.pattern).fullmatch(path)
        return found.groupdict() if found else None


@functools.cache
def _route_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern))


class Control:
    """Serves admin requests for one running proxy."""

    def __init__(
        self,
        runtime: Runtime,
        metrics: Metrics,
        tokens: AdminTokens,
        operations: Operations,
        routes: Sequence[Route] | None = None,
    ) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.tokens = tokens
        self.operations = operations
        self.routes = ROUTES if routes is None else list(routes)
        """The API's routes, and the dashboard's where the listener serves it."""
        self.feed = Feed(lambda: runtime.policy.audit.path)

    @property
    def approvals(self) -> Approvals:
        return Approvals(self.runtime.state)

    async def handle(self, request: Request) -> Response:
        if self.tokens.written_in(_url_texts(request)):
            # Whatever is in front of the listener (a reverse proxy, a load balancer) may log its URLs.
            return Response.error(
                400,
                "an admin token was sent in the URL, which proxies and servers in between may log: send it "
                "as Authorization: Bearer, and replace it",
            )
        path_known = False
        for route in self.routes:
            params = route.match(request.method, request.path)
            if params is None:
                path_known = path_known or route.match(route.method, request.path) is not None
                continue
            if route.access is not None:
                granted = self.tokens.access(request.headers.get("authorization"))
                if granted is None:
                    return Response.error(
                        401,
                        "a bearer token is required",
                        **{"WWW-Authenticate": 'Bearer realm="egressguard"'},
                    )
                if route.access is Access.FULL and granted is not Access.FULL:
                    return Response.error(
                        403, "this operation needs the full admin token, not the read-only one"
                    )
            try:
                return await route.handler(self, request, params)
            except BadRequest as error:
                return Response.error(400, str(error))
        if path_known:
            return Response.error(405, f"{request.method} is not allowed here")
        return Response.error(404, f"no such endpoint: {request.path}")


def _url_texts(request: Request) -> list[str]:
    """A request's URL as a token could have been written in it: its path and query as sent, and each
    percent-decoded (``+`` as a space in the query, as forms write it)."""
    return [request.path, unquote(request.path), request.query_string, unquote_plus(request.query_string)]


def _operator(request: Request) -> str:
    """Who acted, as the caller says (``by``), with the token that allowed it."""
    by = request.json().get("by")
    if by is not None and (not isinstance(by, str) or not by.strip() or len(by) > 100):
        raise BadRequest("by must be a non-empty name of at most 100 characters")
    return f"{(by or 'unnamed').strip()} (admin token)"


# -- handlers ------------------------------------------------------------------------------------------


async def healthz(control: Control, request: Request, params: dict[str, str]) -> Response:
    return Response.json(200, {"status": "alive", "version": __version__})


async def readyz(control: Control, request: Request, params: dict[str, str]) -> Response:
    """Served without a token, for load balancers: which check fails. Why (a dependency's error, which
    can name an internal address or a user) only with a token."""
    checks = control.operations.readiness()
    ready = all(problem is None for problem in checks.values())
    detailed = control.tokens.access(request.headers.get("authorization")) is not None
    shown = {
        name: "ok" if problem is None else problem if detailed else "failing"
        for name, problem in checks.items()
    }
    return Response.json(200 if ready else 503, {"ready": ready, "checks": shown})


async def metrics(control: Control, request: Request, params: dict[str, str]) -> Response:
    return Response(200, control.metrics.exposition(), CONTENT_TYPE)


async def openapi(control: Control, request: Request, params: dict[str, str]) -> Response:
    return Response.json(200, openapi_document(control.routes))


async def status(control: Control, request: Request, params: dict[str, str]) -> Response:
    policy = control.runtime.policy
    return Response.json(
        200,
        {
            "version": __version__,
            "policy": {"source": policy.source, "sha256": policy.sha256, "mode": str(policy.mode)},
            "threat_modes": {str(threat): str(policy.mode_for(threat)) for threat in _threats()},
            "agents": sorted(policy.agents),
        },
    )


async def list_approvals(control: Control, request: Request, params: dict[str, str]) -> Response:
    wanted = request.query.get("status")
    listed = [
        approval.to_dict() for approval in control.approvals.list() if wanted in (None, approval.status)
    ]
    return Response.json(200, {"approvals": listed})


async def show_approval(control: Control, request: Request, params: dict[str, str]) -> Response:
    approval = control.approvals.get(params["id"])
    if approval is None:
        return Response.error(404, f"no approval {params['id']} (unknown or expired)")
    return Response.json(200, approval.to_dict())


async def approve(control: Control, request: Request, params: dict[str, str]) -> Response:
    return _decide(control, request, params["id"], grant=True)


async def deny(control: Control, request: Request, params: dict[str, str]) -> Response:
    return _decide(control, request, params["id"], grant=False)


def _decide(control: Control, request: Request, approval_id: str, *, grant: bool) -> Response:
    body = request.json()
    by = _operator(request)
    uses = body.get("uses", 1)
    if not isinstance(uses, int) or isinstance(uses, bool):
        raise BadRequest("uses must be a whole number")
    try:
        ttl_s = parse_duration(str(body["ttl"])).total_seconds() if "ttl" in body else GRANT_TTL_S
    except ValueError as error:
        raise BadRequest(f"ttl: {error}") from None
    try:
        decided = control.approvals.decide(approval_id, grant=grant, by=by, uses=uses, ttl_s=ttl_s)
    except ApprovalError as error:
        return Response.error(409 if "already" in str(error) else 404, str(error))
    control.metrics.approvals.labels(decision=decided.status).inc()
    control.operations.record(
        {
            "type": "admin.approval",
            "approval_id": decided.id,
            "decision": decided.status,
            "by": by,
            "agent_id": decided.agent_id,
            "tool": decided.tool,
            "arguments_sha256": decided.arguments_sha256,
            "uses": decided.uses,
        }
    )
    return Response.json(200, decided.to_dict())


async def list_freezes(control: Control, request: Request, params: dict[str, str]) -> Response:
    return Response.json(200, {"freezes": freeze.active_freezes(control.runtime.state)})


async def list_token_rotations(control: Control, request: Request, params: dict[str, str]) -> Response:
    return Response.json(200, {"rotations": tokens.rotations(control.runtime.state)})


async def issue_token(control: Control, request: Request, params: dict[str, str]) -> Response:
    """A new token for a policy's agent, in the answer alone: the store keeps its digest, so it cannot be
    shown again, and issuing another replaces it."""
    agent, by = params["agent"], _operator(request)
    if agent not in control.runtime.policy.agents:
        return Response.error(404, f"no agent {agent!r} in the policy")
    token = tokens.rotate(control.runtime.state, agent, f"issued by {by}")
    control.operations.record({"type": "admin.token_issued", "agent_id": agent, "by": by})
    return Response.json(200, {"agent": agent, "token": token})


async def lift_freeze(control: Control, request: Request, params: dict[str, str]) -> Response:
    body = request.json()
    kind, identity = body.get("kind"), body.get("identity")
    if kind not in freeze.FREEZE_KINDS or not isinstance(identity, str) or not identity:
        raise BadRequest(
            f"kind must be one of {', '.join(freeze.FREEZE_KINDS)} and identity a non-empty string"
        )
    by = _operator(request)
    if not freeze.lift(control.runtime.state, kind, identity):
        return Response.error(404, f"no {kind} {identity!r} is frozen")
    control.operations.record({"type": "admin.freeze_lifted", "kind": kind, "identity": identity, "by": by})
    return Response.json(200, {"lifted": {"kind": kind, "identity": identity}, "by": by})


async def reload(control: Control, request: Request, params: dict[str, str]) -> Response:
    by = _operator(request)
    loaded, problems = await control.operations.reload(by)
    if not loaded:
        return Response.json(422, {"reloaded": False, "errors": problems})
    policy = control.runtime.policy
    return Response.json(200, {"reloaded": True, "source": policy.source, "sha256": policy.sha256})


async def start_drill(control: Control, request: Request, params: dict[str, str]) -> Response:
    by = _operator(request)
    run = control.runtime.drills.start()
    control.operations.record({"type": "drill.started", "drill": run.id, "by": by})
    return Response.json(
        201,
        {
            "id": run.id,
            "token": run.token,
            "expires": run.expires,
            "cases": [case.name for case in CASES],
            "destinations": _destinations(control),
        },
    )


async def drill_report(control: Control, request: Request, params: dict[str, str]) -> Response:
    run = control.runtime.drills.get(params["id"])
    if run is None:
        return Response.error(404, f"no drill {params['id']} (unknown or over)")
    router = control.runtime.alert_router
    alerts = {
        case: {
            name: (router.outcomes.get((alert_id, name)) if router else None) or "pending"
            for name in _destinations(control)
        }
        for case, alert_id in run.alerts.items()
    }
    return Response.json(200, {"id": run.id, "turns": run.turns, "alerts": alerts})


async def drill_result(control: Control, request: Request, params: dict[str, str]) -> Response:
    run = control.runtime.drills.get(params["id"])
    if run is None:
        return Response.error(404, f"no drill {params['id']} (unknown or over)")
    passed = request.json().get("passed")
    if not isinstance(passed, bool):
        raise BadRequest("passed must be true or false")
    by = _operator(request)
    if passed:
        control.metrics.drill_success.set(time.time())
    control.operations.record({"type": "drill.finished", "drill": run.id, "passed": passed, "by": by})
    return Response.json(200, {"id": run.id, "passed": passed})


async def test_alert(control: Control, request: Request, params: dict[str, str]) -> Response:
    rule, by = _rule_name(request), _operator(request)
    router = _router(control)
    try:
        alert_id, destinations = router.test_alert(rule)
    except KeyError as error:
        return Response.error(404, str(error.args[0]))
    control.operations.record({"type": "alerts.test", "rule": rule, "alert_id": alert_id, "by": by})
    return Response.json(200, {"rule": rule, "alert_id": alert_id, "destinations": destinations})


async def run_rule(control: Control, request: Request, params: dict[str, str]) -> Response:
    rule, by = _rule_name(request), _operator(request)
    router = _router(control)
    try:
        alert = await asyncio.to_thread(router.run_now, rule)
    except KeyError as error:
        return Response.error(404, str(error.args[0]))
    except ValueError as error:
        raise BadRequest(str(error)) from None
    control.operations.record({"type": "alerts.run", "rule": rule, "by": by})
    if alert is None:
        return Response.json(200, {"rule": rule, "rows": 0, "alert_id": None, "destinations": []})
    destinations = next(r.destinations for r in router.config.rules if r.id == rule)
    return Response.json(
        200,
        {"rule": rule, "rows": alert.count, "alert_id": alert.alert_id, "destinations": list(destinations)},
    )


async def alert_deliveries(control: Control, request: Request, params: dict[str, str]) -> Response:
    router = _router(control)
    outcomes = {
        target: outcome
        for (alert_id, target), outcome in list(router.outcomes.items())
        if alert_id == params["id"]
    }
    return Response.json(200, {"alert_id": params["id"], "deliveries": outcomes})


def _rule_name(request: Request) -> str:
    rule = request.json().get("rule")
    if not isinstance(rule, str) or not rule:
        raise BadRequest("rule must name an alert rule")
    return rule


def _router(control: Control) -> AlertRouter:
    router = control.runtime.alert_router
    if router is None:
        raise BadRequest("the alert router is not running")
    return router


def _destinations(control: Control) -> list[str]:
    alerts = control.runtime.policy.alerts
    return sorted(alerts.destinations) if alerts is not None else []


def _threats() -> list[Any]:
    from proxy.model import Threat

    return list(Threat)


ROUTES: list[Route] = [
    Route("GET", "/healthz", None, "Alive: the process answers", healthz),
    Route("GET", "/readyz", None, "Ready: policy, audit log, state store and alert spool all answer", readyz),
    Route("GET", "/metrics", Access.READ, "Prometheus metrics", metrics),
    Route("GET", f"{API}/openapi.json", Access.READ, "This description", openapi),
    Route("GET", f"{API}/status", Access.READ, "Version, policy in force and its modes", status),
    Route(
        "GET", f"{API}/approvals", Access.READ, "Approvals (?status=pending|granted|denied)", list_approvals
    ),
    Route("GET", f"{API}/approvals/{{id}}", Access.READ, "One approval", show_approval),
    Route(
        "POST",
        f"{API}/approvals/{{id}}/approve",
        Access.FULL,
        "Grant a pending approval",
        approve,
        {"by": "who approves", "uses": "calls it covers (default 1)", "ttl": "how long it stays usable (1h)"},
    ),
    Route(
        "POST",
        f"{API}/approvals/{{id}}/deny",
        Access.FULL,
        "Deny a pending approval",
        deny,
        {"by": "who denies"},
    ),
    Route(
        "GET", f"{API}/freezes", Access.READ, "Frozen users, revoked sessions, blocked agents", list_freezes
    ),
    Route(
        "POST",
        f"{API}/freezes/lift",
        Access.FULL,
        "Lift a freeze",
        lift_freeze,
        {"kind": "agent, user or session", "identity": "its id", "by": "who lifts it"},
    ),
    Route("GET", f"{API}/tokens", Access.READ, "Agents whose token was rotated", list_token_rotations),
    Route(
        "POST",
        f"{API}/tokens/{{agent}}",
        Access.FULL,
        "Issue an agent a new token (shown once)",
        issue_token,
        {"by": "who issues it"},
    ),
    Route("POST", f"{API}/reload", Access.FULL, "Re-read the policy file", reload, {"by": "who reloads"}),
    Route(
        "POST",
        f"{API}/alerts/test",
        Access.FULL,
        "Send one test alert of a rule",
        test_alert,
        {"rule": "its id"},
    ),
    Route(
        "POST",
        f"{API}/alerts/run",
        Access.FULL,
        "Evaluate a query rule now",
        run_rule,
        {"rule": "its id"},
    ),
    Route(
        "GET",
        f"{API}/alerts/{{id}}/deliveries",
        Access.READ,
        "Each destination's latest outcome for an alert",
        alert_deliveries,
    ),
    Route(
        "POST",
        f"{API}/drills",
        Access.FULL,
        "Start a drill run (egressguard drill)",
        start_drill,
        {"by": "who"},
    ),
    Route(
        "GET", f"{API}/drills/{{id}}", Access.READ, "A drill run's records and alert deliveries", drill_report
    ),
    Route(
        "POST",
        f"{API}/drills/{{id}}/result",
        Access.FULL,
        "Record a drill's verdict",
        drill_result,
        {"passed": "true when every case passed", "by": "who"},
    ),
]


def openapi_document(routes: Sequence[Route] | None = None) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES if routes is None else routes:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "security": [] if route.access is None else [{"bearer": []}],
            "x-access": str(route.access) if route.access else "none",
            "responses": {"200": {"description": "OK"}},
        }
        names = re.findall(r"\{(\w+)\}", route.pattern)
        if names:
            operation["parameters"] = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in names
            ]
        if route.body:
            operation["requestBody"] = {
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                name: {"description": description} for name, description in route.body.items()
                            },
                        }
                    }
                }
            }
        paths.setdefault(route.pattern, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "egressguard admin API", "version": __version__},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }
