"""``egressguard drill``: runs every drill case through a running proxy and prints what each one proved.

Asks the admin API for a drill run, sends each case through the proxy port as an agent would, then reads
back from the admin API the audit record of each case and whether its drill alert reached every
destination. Exit 0 when every case passed on every count, 1 on any miss, 2 when the drill could not run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from proxy.admin.client import (
    UNREAD_TOKEN,
    AdminClient,
    AdminError,
    add_connection_arguments,
    client_policy,
    operator,
    table,
)
from proxy.control.drill import CASE_HEADER, CASES, TOKEN_HEADER, Verdict, judge

DEFAULT_PROXY = "http://127.0.0.1:8080"
AGENT_TOKEN_FILE = "agent.token"  # noqa: S105 - a file name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--proxy",
        help=f"proxy URL, with or without agent:token@ (default {DEFAULT_PROXY} as the policy's first agent)",
    )
    parser.add_argument("--wait", type=float, default=20.0, help="seconds to wait for records and alerts")
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        admin = AdminClient.from_arguments(args)
        proxy = _proxy_url(args)
    except AdminError as error:
        print(f"egressguard: {error}", file=sys.stderr)
        return 2
    try:
        started = admin.call("POST", "/api/v1/drills", {"by": operator()})
        received = _send_cases(proxy, started["token"])
        report = _wait_for_report(admin, started["id"], args.wait)
        verdicts = [
            judge(
                case,
                *received[case.name],
                report["turns"].get(case.name),
                report["alerts"].get(case.name, {}),
            )
            for case in CASES
        ]
        passed = all(verdict.passed for verdict in verdicts)
        admin.call("POST", f"/api/v1/drills/{started['id']}/result", {"passed": passed, "by": operator()})
    except (AdminError, httpx.HTTPError) as error:
        print(f"egressguard: drill could not run: {error}", file=sys.stderr)
        return 2
    finally:
        admin.close()
    print(_render(verdicts, started))
    print(f"\ndrill {started['id']}: {'passed' if passed else 'FAILED'}")
    return 0 if passed else 1


def _proxy_url(args: argparse.Namespace) -> str:
    """The proxy URL with an agent's credentials: as given, or the policy's first agent's."""
    url = urlsplit(args.proxy or os.environ.get("EGRESSGUARD_PROXY_URL") or DEFAULT_PROXY)
    if url.username:
        return url.geturl()
    policy = client_policy(args.config)
    if not policy.agents:
        raise AdminError("the policy has no agents to drill as")
    agent = next(iter(policy.agents.values()))
    token = os.environ.get(agent.token_env or "") or ""
    if not token:
        token_path = policy.data_dir / AGENT_TOKEN_FILE
        if agent.token_env and token_path.exists():
            token = token_path.read_text().strip()
        elif agent.token != UNREAD_TOKEN:
            token = agent.token
    if not token:
        raise AdminError(
            f"no token for agent {agent.name}: set {agent.token_env} or pass --proxy with credentials"
        )
    netloc = f"{quote(agent.name, safe='')}:{quote(token, safe='')}@{url.hostname}:{url.port or 80}"
    return urlunsplit((url.scheme, netloc, url.path, "", ""))


def _send_cases(proxy: str, token: str) -> dict[str, tuple[int, bytes]]:
    received: dict[str, tuple[int, bytes]] = {}
    with httpx.Client(proxy=proxy, trust_env=False, timeout=30) as client:
        for case in CASES:
            headers = {**case.headers, TOKEN_HEADER: token, CASE_HEADER: case.name}
            reply = client.request(case.method, case.url, json=case.body, headers=headers)
            received[case.name] = (reply.status_code, reply.content)
    return received


def _wait_for_report(admin: AdminClient, run_id: str, wait_s: float) -> dict[str, Any]:
    """The run's records and alert outcomes, once every case has both (or when the wait is over)."""
    deadline = time.monotonic() + wait_s
    while True:
        report: dict[str, Any] = admin.call("GET", f"/api/v1/drills/{run_id}")
        settled = len(report["turns"]) == len(CASES) and all(
            report["alerts"].get(case.name)
            and all(state == "delivered" for state in report["alerts"][case.name].values())
            for case in CASES
        )
        if settled or time.monotonic() > deadline:
            return report
        time.sleep(0.2)


def _mark(ok: bool) -> str:
    return "ok" if ok else "MISS"


def _render(verdicts: list[Verdict], started: dict[str, Any]) -> str:
    rows = [
        [
            verdict.case,
            _mark(verdict.detected),
            ("enforced " if verdict.enforced else "observed ") + _mark(verdict.outcome),
            _mark(verdict.audited),
            _mark(verdict.alerted),
            verdict.notes or "-",
        ]
        for verdict in verdicts
    ]
    destinations = ", ".join(started.get("destinations", [])) or "-"
    heading = f"drill {started['id']} (alert destinations: {destinations})\n"
    return heading + table(rows, ["CASE", "DETECTED", "OUTCOME", "AUDIT", "ALERT", "NOTES"])
