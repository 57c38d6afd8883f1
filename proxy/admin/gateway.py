"""The admin listener of a host running several workers (``run --workers N``): one address for the host,
served by the supervisor, in front of each worker's own admin API on a private Unix socket.

What every worker holds its own part of is asked of all of them and joined: ``/readyz`` is ready only
when every worker is, ``/metrics`` sums their figures (``proxy.control.metrics.merge_expositions``), a
reload is made by each worker on its own policy (each swaps it atomically and audits it in its own chain)
and answers for all, a drill's report and an alert's deliveries are each worker's cases and alerts
together. Everything else lives in the state store or the audit log the workers share (approvals,
freezes, drill runs, the dashboard's reads and live feed) and is answered by the first worker that
answers. Tokens are checked by the workers, as without workers:
the gateway passes the request on as it came.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncGenerator, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from proxy import __version__
from proxy.admin.http import Request, Response
from proxy.control.metrics import CONTENT_TYPE, merge_expositions, worker_restarts_exposition

FORWARDED_HEADERS = ("authorization", "content-type")
TIMEOUT_S = 30.0
_JOINED_ROUTES = (re.compile(r"/api/v1/drills/[^/]+"), re.compile(r"/api/v1/alerts/[^/]+/deliveries"))
"""Readings whose answer joins every worker's report (a drill's cases, an alert's deliveries)."""


def joined_route(path: str) -> bool:
    """Whether ``path`` is, whole, one of ``_JOINED_ROUTES`` (a control character anywhere in it is none)."""
    return path.isprintable() and any(route.fullmatch(path) for route in _JOINED_ROUTES)


class WorkerUnavailable(Exception):
    """A worker's admin API could not be reached (still starting, or gone); the request was not sent."""


class Gateway:
    """``workers`` maps each worker's id to its admin socket; ``alive`` says which worker processes run and
    ``restarts`` how often each was started again after it exited."""

    def __init__(
        self,
        workers: Mapping[str, Path],
        alive: Callable[[], Mapping[str, bool]],
        restarts: Callable[[], Mapping[str, int]],
    ) -> None:
        self.workers = dict(workers)
        self.alive = alive
        self.restarts = restarts

    async def handle(self, request: Request) -> Response:
        if request.method == "GET" and request.path == "/healthz":
            return self._health()
        if request.method == "GET" and request.path == "/readyz":
            return _readiness(await self._ask_all(request))
        answers_of_all = {
            ("GET", "/metrics"): self._metrics,
            ("POST", "/api/v1/reload"): _reloads,
        }
        join = answers_of_all.get((request.method, request.path))
        if join is None and request.method == "GET" and joined_route(request.path):
            join = _joined_reports
        if join is not None:
            answers = await self._ask_all(request)
            refused = _refusal(answers)
            if refused is not None:
                return refused
            missing = [worker for worker, answer in answers.items() if answer is None]
            if missing:
                return Response.error(503, f"worker(s) {', '.join(missing)} did not answer; try again")
            return join({worker: answer for worker, answer in answers.items() if answer is not None})
        for worker in self.workers:
            try:
                return await self._ask(worker, request)
            except WorkerUnavailable:
                continue
        return Response.error(503, "no worker answered; the proxy is starting or stopping")

    def _health(self) -> Response:
        alive = dict(self.alive())
        body = {"status": "alive" if all(alive.values()) else "degraded", "version": __version__}
        return Response.json(200 if all(alive.values()) else 503, {**body, "workers": alive})

    def _metrics(self, answers: Mapping[str, Response]) -> Response:
        failed = [worker for worker, answer in answers.items() if answer.status != 200]
        if failed:
            return Response.error(503, f"worker(s) {', '.join(failed)} could not report metrics")
        texts = [answer.body.decode("utf-8") for answer in answers.values()]
        texts.append(worker_restarts_exposition(self.restarts()))
        return Response(200, merge_expositions(texts), CONTENT_TYPE)

    async def _ask_all(self, request: Request) -> dict[str, Response | None]:
        async def ask(worker: str) -> Response | None:
            try:
                return await self._ask(worker, request)
            except WorkerUnavailable:
                return None

        answers = await asyncio.gather(*(ask(worker) for worker in self.workers))
        return dict(zip(self.workers, answers, strict=True))

    async def _ask(self, worker: str, request: Request) -> Response:
        transport = httpx.AsyncHTTPTransport(uds=str(self.workers[worker]))
        url = "http://egressguard-admin" + quote(request.path)
        if request.query_string:
            # As sent: the worker refuses a token written in it, which a parameter without a value would
            # be, and one read anew would have lost.
            url += "?" + request.query_string
        headers = {name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers}
        client = httpx.AsyncClient(transport=transport, timeout=TIMEOUT_S, trust_env=False)
        relaying = False
        try:
            outgoing = client.build_request(request.method, url, headers=headers, content=request.body)
            answer = await client.send(outgoing, stream=True)
            kept = {name: answer.headers[name] for name in ("www-authenticate",) if name in answer.headers}
            content_type = answer.headers.get("content-type", "application/json")
            if content_type.startswith("text/event-stream"):
                # The dashboard's live feed: relayed as it comes (every worker's feed reads every writer).
                relaying = True
                return Response(answer.status_code, b"", content_type, kept, stream=_relayed(client, answer))
            return Response(answer.status_code, await answer.aread(), content_type, kept)
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            # Nothing was sent: another worker may be asked instead.
            raise WorkerUnavailable(f"{worker}: {type(error).__name__}") from None
        except httpx.HTTPError as error:
            # Sent, but no answer came back: asking another worker could do it twice.
            return Response.error(502, f"worker {worker} did not finish answering ({type(error).__name__})")
        finally:
            if not relaying:
                await client.aclose()


async def _relayed(client: httpx.AsyncClient, answer: httpx.Response) -> AsyncGenerator[bytes]:
    try:
        async for chunk in answer.aiter_raw():
            yield chunk
    except httpx.HTTPError:
        return
    finally:
        await answer.aclose()
        await client.aclose()


def _refusal(answers: Mapping[str, Response | None]) -> Response | None:
    """The first answer that refuses the request itself (no token, read-only token, bad body, unknown
    drill): every worker would say the same."""
    for answer in answers.values():
        if answer is not None and answer.status in (400, 401, 403, 404, 405):
            return answer
    return None


def _body(answer: Response) -> Any:
    return json.loads(answer.body)


def _readiness(answers: Mapping[str, Response | None]) -> Response:
    """Ready when every worker is; each check is ``ok`` or says which workers fail it and why."""
    problems: dict[str, list[str]] = {"workers": []}
    workers: dict[str, bool] = {}
    for worker, answer in answers.items():
        if answer is None or answer.status not in (200, 503):
            workers[worker] = False
            problems["workers"].append(f"{worker}: {'not answering' if answer is None else answer.status}")
            continue
        body = _body(answer)
        workers[worker] = bool(body.get("ready"))
        for name, problem in body.get("checks", {}).items():
            problems.setdefault(name, [])
            if problem != "ok":
                problems[name].append(f"{worker}: {problem}")
    ready = all(workers.values())
    checks = {name: "; ".join(found) or "ok" for name, found in problems.items()}
    return Response.json(200 if ready else 503, {"ready": ready, "checks": checks, "workers": workers})


def _reloads(answers: Mapping[str, Response]) -> Response:
    """Reloaded when every worker reloaded; else the first refusal's errors, with each worker's answer."""
    bodies = {worker: _body(answer) for worker, answer in answers.items()}
    statuses = {answer.status for answer in answers.values()}
    loaded = statuses == {200}
    first = next(iter(bodies.values()))
    if loaded:
        return Response.json(200, {**first, "workers": bodies})
    refused = next((bodies[worker] for worker, answer in answers.items() if answer.status != 200), first)
    status = 422 if statuses <= {200, 422} else 500
    return Response.json(status, {"reloaded": False, "errors": refused.get("errors", []), "workers": bodies})


def _joined_reports(answers: Mapping[str, Response]) -> Response:
    """A drill run's or an alert's report: each worker knows the cases it served and the alerts it sent;
    the mappings in their answers are joined (a case's destinations, each from whoever delivered it)."""
    joined: dict[str, Any] = {}
    for answer in answers.values():
        if answer.status != 200:
            return answer
        for key, value in _body(answer).items():
            if isinstance(value, dict):
                section = joined.setdefault(key, {})
                for name, item in value.items():
                    if isinstance(item, dict) and isinstance(section.get(name), dict):
                        section[name] = {**section[name], **_known(item)}
                    else:
                        section[name] = item
            else:
                joined[key] = value
    return Response.json(200, joined)


def _known(outcomes: dict[str, Any]) -> dict[str, Any]:
    """A drill case's destination outcomes as one worker sees them, less the ones it has no news of."""
    return {name: state for name, state in outcomes.items() if state != "pending"}
