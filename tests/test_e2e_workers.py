"""End to end: ``run --workers 2`` serves one port from two processes that share state through the SQLite
file, keep one audit chain each, and route an alert once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
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

from proxy.admin import http
from proxy.admin.gateway import Gateway
from proxy.audit.heads import head_key, writer_id
from proxy.commands.cli import main
from proxy.control.drill import CASE_HEADER, CASES_BY_NAME, TOKEN_HEADER
from proxy.state.sqlite_shared import SharedSqliteStateStore
from tests.harness import AGENT_TOKEN, AGENT_TOKEN_ENV, CLIENT_TIMEOUT_S, Proxy, free_port, policy_yaml
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


def descendants_of(pid: int) -> list[int]:
    """Processes that ``pid`` started, and those they started, and so on (from /proc)."""
    return [found for child in children_of(pid) for found in (child, *descendants_of(child))]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_stop_when_the_supervisor_is_killed(workers: Proxy) -> None:
    """A supervisor killed outright leaves no worker serving the port on its own."""
    spawned = [pid for pid in descendants_of(workers.process.pid) if alive(pid)]
    assert len(worker_pids(workers.process.pid)) == 2
    workers.process.kill()
    workers.process.wait()
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in spawned) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in spawned)


ESTABLISHED = "01"
LISTENING = "0A"
"""TCP states as /proc/net/tcp writes them."""


def tcp_sockets(state: str, port: int) -> dict[str, str]:
    """The TCP sockets in ``state`` on local ``port``, each as its descriptors read (``socket:[inode]``),
    with the table it is in (tcp, tcp6)."""
    found = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == state and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found[f"socket:[{fields[9]}]"] = table
    return found


def descriptors_of(pid: int) -> set[str]:
    """What each of process ``pid``'s descriptors refers to (from /proc)."""
    held = set()
    for descriptor in Path(f"/proc/{pid}/fd").glob("*"):
        with contextlib.suppress(OSError):
            held.add(os.readlink(descriptor))
    return held


def connections_held(pid: int, port: int) -> int:
    """How many established TCP connections to ``port`` process ``pid`` has accepted."""
    held = descriptors_of(pid)
    return sum(inode in held for inode in tcp_sockets(ESTABLISHED, port))


def worker_pids(supervisor: int) -> list[int]:
    """The worker processes of a supervisor: the children of the process they are forked from, one of the
    supervisor's two (the other is multiprocessing's resource tracker)."""
    return [
        pid
        for template in children_of(supervisor)
        if b"multiprocessing.forkserver" in command_line(template)
        for pid in children_of(template)
        if alive(pid)
    ]


def command_line(pid: int) -> bytes:
    """Process ``pid``'s command line (from /proc); empty once it has exited, as a killed worker may have
    between being listed and being read (its supervisor reaps it at any time)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def start_supervisor(workdir: Path, *args: str) -> subprocess.Popen[bytes]:
    """``run --workers 2`` with ``args``, its output in ``workdir/proxy.log``, without waiting for it."""
    (workdir / "policy.yaml").write_text(policy_yaml(workdir / "data"))
    with (workdir / "proxy.log").open("wb") as log:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "proxy", "run", "--workers", "2"),
                "--config",
                str(workdir / "policy.yaml"),
                *args,
            ],
            cwd=Path(__file__).resolve().parent.parent,
            env={**os.environ, AGENT_TOKEN_ENV: AGENT_TOKEN},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_for_output(supervisor: subprocess.Popen[bytes], workdir: Path, text: str, count: int = 1) -> str:
    """The supervisor's output once ``text`` is in it ``count`` times."""
    deadline = time.monotonic() + 90
    while (output := (workdir / "proxy.log").read_text()).count(text) < count:
        assert supervisor.poll() is None and time.monotonic() < deadline, output
        time.sleep(0.1)
    return output


def hold_as_they_start(supervisor: subprocess.Popen[bytes], workdir: Path, held: list[int]) -> None:
    """Stop each of ``supervisor``'s two workers (SIGSTOP) as soon as it exists, long before it could
    serve, and add it to ``held``. A worker exists once the process it is forked from has built the
    detectors, which takes a fresh interpreter's start: on a loaded machine, as long as a worker's own
    start once did. A worker forked then serves after some 0.3 s of CPU: looked for every 10 ms, it is
    held well before, and the looking leaves the starting processes the cores."""
    deadline = time.monotonic() + 90
    while len(held) < 2:
        assert supervisor.poll() is None and time.monotonic() < deadline, (workdir / "proxy.log").read_text()
        for pid in set(worker_pids(supervisor.pid)) - set(held):
            os.kill(pid, signal.SIGSTOP)
            held.append(pid)
        time.sleep(0.01)


def test_a_worker_whose_supervisor_is_killed_while_it_starts_stops(tmp_path: Path) -> None:
    """A worker watches the supervisor that started it from its start: one killed while its workers
    start (here held stopped until then) leaves none serving the port. Before, a worker took the parent
    it had once it got going for its supervisor, which by then was the one it got when its supervisor
    died, and served for ever."""
    supervisor = start_supervisor(tmp_path, "--listen-port", str(free_port()))
    workers: list[int] = []
    try:
        hold_as_they_start(supervisor, tmp_path, workers)
        supervisor.kill()
        supervisor.wait()
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + 60
        while any(alive(pid) for pid in workers):
            assert time.monotonic() < deadline, (tmp_path / "proxy.log").read_text()
            time.sleep(0.1)
    finally:
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_supervisor_started_after_one_killed_outright_waits_for_its_workers_to_stop(tmp_path: Path) -> None:
    """The workers of a supervisor killed outright serve on until each notices and stops (here they are
    held stopped, still holding the port): a supervisor started again at once on the data dir starts none
    of its own until they are gone, then serves. Before, it started its workers beside them, and the old
    ones took their share of the port's connections, unsupervised."""
    port = free_port()
    first = start_supervisor(tmp_path, "--listen-port", str(port))
    left = []
    second = None
    try:
        wait_for_output(first, tmp_path, "worker.ready", 2)
        left = worker_pids(first.pid)
        for pid in left:
            os.kill(pid, signal.SIGSTOP)
        first.kill()
        first.wait()
        second = start_supervisor(tmp_path, "--listen-port", str(port))
        wait_for_output(second, tmp_path, "waiting for the workers of a stopped egressguard")
        assert worker_pids(second.pid) == []
        for pid in left:
            os.kill(pid, signal.SIGCONT)
        output = wait_for_output(second, tmp_path, "worker.ready", 2)
        assert not any(alive(pid) for pid in left), output
        assert len(worker_pids(second.pid)) == 2
    finally:
        for pid in left:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if second is not None:
            second.terminate()
            second.wait(30)


def test_every_address_and_a_chosen_port_are_served_by_every_worker(tmp_path: Path) -> None:
    """`--listen-host ''` is every IPv4 and IPv6 address and `--listen-port 0` a port the kernel picks: the
    supervisor picks it once, the banner shows it, and both workers serve it on both families."""
    supervisor = start_supervisor(tmp_path, "--listen-host", "", "--listen-port", "0")
    try:
        output = wait_for_output(supervisor, tmp_path, "worker.ready", 2)
        banner = re.search(r"egressguard \S+ on \S+:(\d+) ", output)
        assert banner is not None, output
        port = int(banner[1])
        assert port != 0
        workers = worker_pids(supervisor.pid)
        assert len(workers) == 2
        for pid in workers:
            held = descriptors_of(pid)
            assert {table for inode, table in tcp_sockets(LISTENING, port).items() if inode in held} == {
                "tcp",
                "tcp6",
            }
        for address in ("127.0.0.1", "::1"):
            with socket.create_connection((address, port), timeout=30) as agent:
                agent.sendall(b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
                assert agent.recv(64).startswith(b"HTTP/1.1 407 "), address
    finally:
        supervisor.terminate()
        supervisor.wait(30)


SPREAD_AGENTS = 64
"""Connections opened the instant the port opens, each from a source port of its own (the kernel picks a
listener by hashing the connection's addresses and ports): all on one of two workers by chance, 1 in 2**63."""


def test_agents_connecting_while_the_workers_start_reach_every_worker(tmp_path: Path) -> None:
    """Every worker's socket listens before any worker runs: agents that connect the instant the port
    opens, while the workers are still starting (here held stopped until then), wait in the kernel on the
    sockets of every worker, and each worker accepts its share once it serves. Before, each worker
    listened once it got that far, and the first to listen took every connection made meanwhile and kept
    it for its life."""
    port = free_port()
    supervisor = start_supervisor(tmp_path, "--listen-port", str(port))
    workers: list[int] = []
    agents: list[socket.socket] = []
    try:
        hold_as_they_start(supervisor, tmp_path, workers)
        deadline = time.monotonic() + 20
        while not agents:
            assert time.monotonic() < deadline, "the port does not accept while the workers start"
            with contextlib.suppress(ConnectionRefusedError):
                agents.append(socket.create_connection(("127.0.0.1", port)))
        agents += [socket.create_connection(("127.0.0.1", port)) for _ in range(SPREAD_AGENTS - 1)]
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + 60
        while sum(held := [connections_held(pid, port) for pid in workers]) < SPREAD_AGENTS:
            assert time.monotonic() < deadline, f"accepted: {held}"
            time.sleep(0.05)
        assert all(held), held
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        for agent in agents:
            agent.close()
        supervisor.terminate()
        supervisor.wait(30)


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


def test_a_worker_that_dies_is_replaced_on_the_socket_it_served(
    workers_admin: Admin, upstream: FakeUpstream
) -> None:
    """A worker killed outright is replaced: the supervisor serves on, says so, counts it in the host's
    metrics, and starts another in its place on the listening socket it served, so the connections the
    kernel spreads to that socket are served again and the host keeps every core. Before, the supervisor
    stopped every worker when one exited."""
    proxy = workers_admin.proxy
    before = worker_pids(proxy.process.pid)
    assert len(before) == 2
    served = set(tcp_sockets(LISTENING, proxy.port)) & descriptors_of(before[0])
    assert served
    turns_before = per_writer(proxy)
    os.kill(before[0], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while not (replacements := set(worker_pids(proxy.process.pid)) - set(before)):
        assert time.monotonic() < deadline, proxy.output()
        time.sleep(0.1)
    while not admin_ready(workers_admin):
        assert time.monotonic() < deadline, proxy.output()
        time.sleep(0.1)
    assert served <= descriptors_of(replacements.pop())
    assert "exited with -9; starting another in its place in 1 s" in proxy.output()
    assert workers_admin.metric("egressguard_worker_restarts_total") == 1
    assert workers_admin.get("/healthz").json()["workers"] == {"w0": True, "w1": True}
    for _ in range(AGENTS):
        ask(client(proxy, upstream))
    proxy.wait_for_records(sum(turns_before.values()) + AGENTS)
    turns_after = per_writer(proxy)
    assert all(turns_after[writer] > turns_before.get(writer, 0) for writer in ("w0", "w1")), turns_after


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
        with httpx.Client(proxy=admin.proxy.url(), trust_env=False, timeout=CLIENT_TIMEOUT_S) as agent:
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
        gateway = Gateway(sockets, lambda: {"w0": True, "w1": True, "w2": False}, dict)
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


def test_a_supervisor_killed_outright_leaves_no_socket_directory_to_pile_up(workers_admin: Admin) -> None:
    """The workers' admin sockets live in one directory under the data dir: one left behind by a
    supervisor killed outright is removed by the next start, which serves from a fresh one, and a clean
    stop removes it."""
    proxy = workers_admin.proxy
    sockets = proxy.data_dir / "admin-sockets"
    assert sorted(path.name for path in sockets.iterdir()) == ["w0", "w1"]
    spawned = [pid for pid in descendants_of(proxy.process.pid) if alive(pid)]
    assert len(worker_pids(proxy.process.pid)) == 2
    proxy.process.kill()
    proxy.process.wait()
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in spawned):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    left = sockets / "left-by-the-killed-supervisor"
    left.touch()
    proxy.start()
    deadline = time.monotonic() + 30
    while not admin_ready(workers_admin):
        assert time.monotonic() < deadline, proxy.output()
        time.sleep(0.1)
    assert sorted(path.name for path in sockets.iterdir()) == ["w0", "w1"]
    proxy.stop()
    assert not sockets.exists()


def admin_ready(admin: Admin) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return admin.get("/readyz").status_code == 200
    return False


def run_beside(proxy: Proxy, workers: str) -> subprocess.CompletedProcess[str]:
    """`run --workers WORKERS` on ``proxy``'s policy and data dir, on ports of its own, to its end."""
    return subprocess.run(
        [
            *(sys.executable, "-m", "proxy", "run", "--config", str(proxy.policy_path)),
            *("--listen-port", str(free_port()), "--admin-listen", f"127.0.0.1:{free_port()}"),
            *("--workers", workers),
        ],
        cwd=proxy.workdir,
        env={**os.environ, AGENT_TOKEN_ENV: AGENT_TOKEN},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_second_egressguard_on_the_data_dir_of_a_supervisor_is_refused(workers_admin: Admin) -> None:
    """A second `run` on a data dir a supervisor serves, with workers or as a single process, would share
    its workers' audit chains and state (and remove their admin sockets): it is refused before it listens
    or prints its banner, and the first serves on. Before, a single process was not refused."""
    proxy = workers_admin.proxy
    for workers in ("2", "1"):
        second = run_beside(proxy, workers)
        assert second.returncode == 2, second.stderr
        running = f"another egressguard (pid {proxy.process.pid}, 2 workers) is running on {proxy.data_dir}"
        assert running in second.stderr
        assert "egressguard" not in second.stdout  # refused before its banner
    assert workers_admin.get("/readyz").json()["workers"] == {"w0": True, "w1": True}


def test_an_egressguard_on_the_data_dir_of_a_single_process_is_refused(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """The reverse: a single process holds its data dir as a supervisor does, from a supervisor's start
    and from another single process's."""
    proxy: Proxy = start_proxy()
    for workers in ("2", "1"):
        second = run_beside(proxy, workers)
        assert second.returncode == 2, second.stderr
        assert (
            f"another egressguard (pid {proxy.process.pid}) is running on {proxy.data_dir}" in second.stderr
        )
        assert "egressguard" not in second.stdout
    ask(client(proxy, upstream))
