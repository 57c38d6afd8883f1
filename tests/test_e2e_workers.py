"""End to end: ``run --workers 2`` serves one port from two processes that share state through the SQLite
file, keep one audit chain each, and route an alert once."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from proxy.audit.heads import head_key, writer_id
from proxy.commands.cli import main
from proxy.state.sqlite_shared import SharedSqliteStateStore
from tests.harness import Proxy
from tests.test_e2e_shared_state import AWS_KEY, BURST_RULE, INJECTION, alerts_yaml, ask, client, rules_of
from tests.upstream import FakeUpstream, Reply, ToolCallReply
from tests.webhook_receiver import Receiver

AGENTS = 12
"""Agents, each on a connection of its own: the kernel spreads connections over the workers, and the
chance that twelve all land on one of two is 1 in 2048."""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


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
