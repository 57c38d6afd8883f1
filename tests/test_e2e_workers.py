"""End to end: ``run --workers 2`` serves one port from two processes that share state through the SQLite
file, keep one audit chain each, and route an alert once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from addons.server import _listen_with_reuse_port
from proxy.admin import http
from proxy.admin.gateway import Gateway
from proxy.audit.heads import head_key, writer_id
from proxy.commands.cli import main
from proxy.control.drill import CASE_HEADER, CASES_BY_NAME, TOKEN_HEADER
from proxy.state.sqlite_shared import SharedSqliteStateStore
from tests.harness import Proxy, free_port
from tests.test_admin import Admin, admin_policy
from tests.test_drill import _targets, drill
from tests.test_e2e_shared_state import AWS_KEY, BURST_RULE, INJECTION, alerts_yaml, ask, client, rules_of
from tests.upstream import FakeUpstream, Reply, ToolCallReply
from tests.webhook_receiver import Receiver

AGENTS = 12
"""Agents, each on a connection of its own: the kernel spreads connections over the workers, and the
chance that twelve all land on one of two is 1 in 2048."""


@pytest.fixture
def workers(start_proxy: Callable[..., Proxy], receiver: Receiver) -> Proxy:
    proxy: Proxy = start_proxy(
        mode="enforce",
        args=("--workers", "2"),
        tools='{limits: {"lookup_*": 2/1h}}',
        extra=alerts_yaml(receiver),
    )
    deadline = time.monotonic() + 30
    while proxy.output().count("worker.ready") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return proxy


def per_writer(proxy: Proxy) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in (proxy.data_dir / "audit").glob("w*/audit-*.jsonl"):
        turns = [line for line in path.read_text().splitlines() if '"agent.turn"' in line]
        counts[path.parent.name] = counts.get(path.parent.name, 0) + len(turns)
    return counts


def test_two_workers_share_the_port_and_the_state(workers: Proxy, upstream: FakeUpstream) -> None:
    """Both workers serve; a host is first-seen once and a tool limit of 2 holds over both of them."""
    upstream.reply = Reply(text="", tool_calls=[ToolCallReply("lookup_order", {"order": "99-1234"})])
    passed = [bool(ask(client(workers, upstream)).choices[0].message.tool_calls) for _ in range(AGENTS)]
    assert passed.count(True) == 2
    records = workers.wait_for_records(AGENTS)
    assert len(records) == AGENTS
    assert sorted(per_writer(workers)) == ["w0", "w1"]
    assert sum("egress.first_seen" in rules_of(record) for record in records) == 1
    assert sum("tool-rate-limit" in rules_of(record) for record in records) == AGENTS - 2


def test_a_freeze_holds_on_every_worker(workers: Proxy, upstream: FakeUpstream) -> None:
    """Three injection attempts, wherever they land, freeze the user on both workers."""
    for _ in range(3):
        with pytest.raises(openai.PermissionDeniedError):
            ask(client(workers, upstream, user="mallory"), INJECTION)
    for _ in range(6):
        with pytest.raises(openai.PermissionDeniedError) as frozen:
            ask(client(workers, upstream, user="mallory"))
        assert "frozen" in str(frozen.value).lower()
    assert ask(client(workers, upstream, user="alice")).choices


def test_a_burst_over_both_workers_alerts_once_and_the_log_reads_as_one(
    workers: Proxy, upstream: FakeUpstream, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """Leaks spread over both workers cross the threshold once; the workers' chains verify together,
    against the heads they published, and the query reads every worker's turns."""
    upstream.reply = Reply(text=f"The deploy key is {AWS_KEY}.")
    for _ in range(AGENTS):
        ask(client(workers, upstream))
    workers.wait_for_records(AGENTS)
    deadline = time.monotonic() + 10
    while not receiver.accepted() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)  # room for a second, wrong, alert to arrive
    alerts = [alert for alert in receiver.accepted() if alert["rule"] == BURST_RULE]
    assert len(alerts) == 1
    audit = workers.data_dir / "audit"
    workers.stop()  # each worker signs a last checkpoint and publishes it as its head
    pubkey = str(audit / "audit-signing.pub")
    config = str(workers.policy_path)
    assert main(["audit", "verify", "--pubkey", pubkey, "--config", config, str(audit)]) == 0
    out = capsys.readouterr().out
    assert f"writer {audit / 'w0'}: intact" in out and f"writer {audit / 'w1'}: intact" in out
    heads = SharedSqliteStateStore(workers.data_dir / "state")
    assert all(heads.get(head_key(writer_id(audit / writer))) for writer in ("w0", "w1"))
    heads.close()
    capsys.readouterr()
    assert (
        main(
            [
                "query",
                "--sql",
                "SELECT count(*) AS turns FROM turns",
                "--audit",
                str(audit),
                "--since",
                "1h",
                "--format",
                "json",
            ]
        )
        == 0
    )
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    assert rows == [{"turns": AGENTS}]


def children_of(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_stop_when_the_supervisor_is_killed(workers: Proxy) -> None:
    """A supervisor killed outright leaves no worker serving the port on its own."""
    spawned = [pid for pid in children_of(workers.process.pid) if alive(pid)]
    assert len(spawned) >= 2
    workers.process.kill()
    workers.process.wait()
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in spawned) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in spawned)


def connections_held(pid: int, port: int) -> int:
    """How many established TCP connections to ``port`` process ``pid`` has accepted (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    held = 0
    for descriptor in Path(f"/proc/{pid}/fd").glob("*"):
        with contextlib.suppress(OSError):
            held += os.readlink(descriptor) in inodes
    return held


def test_agents_connecting_the_moment_the_port_opens_are_spread_over_every_worker(
    start_proxy: Callable[..., Proxy],
) -> None:
    """No worker accepts before every worker has bound the port: connections opened the moment it first
    accepts one (agents reconnecting after a restart) reach both workers, where the first worker up
    used to take them all and keep them for their life. (Sixteen connections all on one of two by
    chance: 1 in 32768.)"""
    proxy = start_proxy(args=("--workers", "2"))  # returns as soon as the port accepts a connection
    agents = [socket.create_connection(("127.0.0.1", proxy.port)) for _ in range(16)]
    try:
        spawned = children_of(proxy.process.pid)
        deadline = time.monotonic() + 20
        while sum(held := [connections_held(pid, proxy.port) for pid in spawned]) < len(agents):
            assert time.monotonic() < deadline, f"accepted: {held}"
            time.sleep(0.05)
        assert len([count for count in held if count]) == 2, held
    finally:
        for agent in agents:
            agent.close()


def bind_unless_second(settings: dict[str, Any], passthrough: list[str], together: Any) -> None:
    """A worker target for ``supervise``: the first worker binds a port and waits for the others as a
    proxy worker does, stopping gracefully on SIGTERM; the second never gets as far as binding."""
    if settings["egressguard_writer"] != "w0":
        time.sleep(600)
    _listen_with_reuse_port(together)

    async def serve() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        listening = asyncio.create_task(asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0))
        await asyncio.sleep(0.5)
        Path(settings["waiting"]).touch()
        await stop.wait()
        listening.cancel()

    asyncio.run(serve())


def test_a_stop_while_a_worker_waits_for_the_others_to_bind_is_prompt(tmp_path: Path) -> None:
    """Stopped while one worker has bound the port and waits for another that never gets there (a worker
    that fails to start), the supervisor and its workers are gone within seconds, not once the wait or
    the grace period before a kill runs out."""
    supervisor = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from proxy.commands.workers import supervise\n"
            "from tests.test_e2e_workers import bind_unless_second\n"
            f"supervise(2, bind_unless_second, {{'waiting': {str(tmp_path / 'waiting')!r}}}, [])",
        ],
        cwd=Path(__file__).resolve().parent.parent,
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / "waiting").exists():  # the first worker waits for the second
        assert time.monotonic() < deadline and supervisor.poll() is None
        time.sleep(0.05)
    supervisor.send_signal(signal.SIGTERM)
    began = time.monotonic()
    supervisor.wait(30)
    assert time.monotonic() - began < 5


@pytest.fixture
def workers_admin(start_proxy: Callable[..., Proxy], receiver: Receiver) -> Admin:
    """Two workers behind one admin listener, every worker ready."""
    port = free_port()
    proxy = start_proxy(args=("--workers", "2"), extra=admin_policy(port, alerts_yaml(receiver)))
    admin = Admin(proxy, port)
    deadline = time.monotonic() + 30
    while True:
        try:
            if admin.get("/readyz").status_code == 200:
                return admin
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, proxy.output()
        time.sleep(0.1)


def reloaded_by_writer(proxy: Proxy) -> dict[str, list[str]]:
    """The policy sha256 of each worker's `policy.reloaded` records, by writer."""
    found: dict[str, list[str]] = {}
    for path in sorted((proxy.data_dir / "audit").glob("w*/audit-*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record["type"] == "policy.reloaded":
                found.setdefault(path.parent.name, []).append(record["sha256"])
    return found


def test_one_admin_listener_speaks_for_every_worker(workers_admin: Admin, upstream: FakeUpstream) -> None:
    """With two workers the host has one admin listener: readiness covers both, metrics add up both
    workers' turns, and tokens are still required."""
    admin = workers_admin
    ready = admin.get("/readyz").json()
    assert ready["ready"] and ready["workers"] == {"w0": True, "w1": True}
    assert admin.get("/healthz").json()["workers"] == {"w0": True, "w1": True}
    assert admin.get("/metrics").status_code == 401
    assert admin.post("/api/v1/reload", {}, admin.read).status_code == 403
    for _ in range(AGENTS):
        ask(client(admin.proxy, upstream))
    admin.proxy.wait_for_records(AGENTS)
    assert sorted(per_writer(admin.proxy)) == ["w0", "w1"]
    deadline = time.monotonic() + 10
    while admin.metric("egressguard_requests_total") < AGENTS:
        assert time.monotonic() < deadline, admin.get("/metrics", admin.read).text
        time.sleep(0.1)
    assert admin.metric("egressguard_requests_total") == AGENTS
    assert admin.metric("egressguard_audit_writes_total") == AGENTS
    assert admin.metric("egressguard_upstream_seconds_count") == AGENTS
    turns = admin.get("/api/v1/dashboard/turns?window=1h&limit=100", admin.read)
    assert turns.status_code == 200 and len(turns.json()["turns"]) == AGENTS  # every worker's turns
    with httpx.stream(
        "GET", f"{admin.url}/api/v1/dashboard/feed", headers={"Authorization": f"Bearer {admin.read}"}
    ) as feed:
        assert feed.status_code == 200 and feed.headers["content-type"].startswith("text/event-stream")


def test_reload_and_sighup_reach_every_worker(workers_admin: Admin, upstream: FakeUpstream) -> None:
    """`egressguard reload` reloads both workers, each recording it in its own chain; a policy with
    errors is refused by both, and both keep theirs; SIGHUP to the supervisor reloads both again."""
    admin = workers_admin
    policy = admin.proxy.policy_path
    policy.write_text(policy.read_text().replace("mode: observe", "mode: enforce"))
    result = admin.cli("reload", "--by", "alice")
    assert result.returncode == 0, result.stderr
    status = admin.get("/api/v1/status", admin.read).json()
    assert status["policy"]["mode"] == "enforce"
    assert reloaded_by_writer(admin.proxy) == {
        "w0": [status["policy"]["sha256"]],
        "w1": [status["policy"]["sha256"]],
    }
    assert admin.metric("egressguard_policy_reloads_total", result="loaded") == 2
    for _ in range(AGENTS):  # enforced on whichever worker the agent reaches
        with pytest.raises(openai.PermissionDeniedError):
            ask(client(admin.proxy, upstream), INJECTION)

    good = policy.read_text()
    policy.write_text(good.replace("mode: enforce", "mode: sometimes"))
    refused = admin.post("/api/v1/reload", {"by": "bob"}, admin.full)
    assert refused.status_code == 422
    assert refused.json()["errors"] and set(refused.json()["workers"]) == {"w0", "w1"}
    assert admin.metric("egressguard_policy_reloads_total", result="refused") == 2

    policy.write_text(good.replace("mode: enforce", "mode: observe"))
    admin.proxy.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while [len(shas) for shas in reloaded_by_writer(admin.proxy).values()] != [2, 2]:
        assert time.monotonic() < deadline, reloaded_by_writer(admin.proxy)
        time.sleep(0.1)
    assert admin.proxy.process.poll() is None
    assert all(ask(client(admin.proxy, upstream), INJECTION).choices for _ in range(4))
    assert admin.get("/readyz").json()["ready"]


def test_a_drill_through_two_workers_passes(workers_admin: Admin) -> None:
    """`egressguard drill` passes against two workers; a run started through the one admin listener marks
    its requests on whichever worker they reach, and its report joins both workers' cases."""
    admin = workers_admin
    result = drill(admin.proxy.workdir, *_targets(admin), "--config", str(admin.proxy.policy_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "MISS" not in result.stdout
    assert admin.metric("egressguard_drill_last_success_timestamp_seconds") > time.time() - 120

    run = admin.post("/api/v1/drills", {"by": "carol"}, admin.full).json()
    case = CASES_BY_NAME["missing-purpose"]
    for _ in range(AGENTS):  # each on a connection of its own, so both workers serve some
        with httpx.Client(proxy=admin.proxy.url(), trust_env=False) as agent:
            headers = {**case.headers, TOKEN_HEADER: run["token"], CASE_HEADER: case.name}
            assert agent.request(case.method, case.url, json=case.body, headers=headers).status_code == 200
    marked: dict[str, int] = {}
    for path in (admin.proxy.data_dir / "audit").glob("w*/audit-*.jsonl"):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        marked[path.parent.name] = sum(
            record.get("drill") == f"{run['id']}:{case.name}" for record in records
        )
    assert sorted(marked) == ["w0", "w1"] and all(marked.values()) and sum(marked.values()) == AGENTS
    report = admin.get(f"/api/v1/drills/{run['id']}", admin.read).json()
    assert list(report["turns"]) == [case.name] and report["id"] == run["id"]


def test_the_host_is_ready_only_when_every_worker_is(tmp_path: Path) -> None:
    """Through real sockets: one worker whose audit log is not writable, one that does not answer at all;
    the host's readiness says which worker fails which check; health names the worker that stopped."""

    async def ready(request: http.Request) -> http.Response:
        return http.Response.json(200, {"ready": True, "checks": {"audit": "ok", "state": "ok"}})

    async def unwritable(request: http.Request) -> http.Response:
        checks = {"audit": "not writable (3 buffered)", "state": "ok"}
        return http.Response.json(503, {"ready": False, "checks": checks})

    async def scenario() -> tuple[dict[str, Any], int, dict[str, Any], int]:
        servers = [
            await http.start_unix(tmp_path / "w0", ready),
            await http.start_unix(tmp_path / "w1", unwritable),
        ]
        sockets = {name: tmp_path / name for name in ("w0", "w1", "w2")}
        gateway = Gateway(sockets, lambda: {"w0": True, "w1": True, "w2": False})
        answer = await gateway.handle(http.Request("GET", "/readyz", {}, {}))
        health = await gateway.handle(http.Request("GET", "/healthz", {}, {}))
        for server in servers:
            server.close()
        return json.loads(answer.body), answer.status, json.loads(health.body), health.status

    readiness, status, health, health_status = asyncio.run(scenario())
    assert status == 503 and readiness["ready"] is False
    assert readiness["workers"] == {"w0": True, "w1": False, "w2": False}
    assert readiness["checks"] == {
        "workers": "w2: not answering",
        "audit": "w1: not writable (3 buffered)",
        "state": "ok",
    }
    assert health_status == 503 and health["workers"]["w2"] is False
