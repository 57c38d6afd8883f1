"""End to end: the audit log of a real proxy is signed within seconds and on SIGHUP, a cut tail fails
``audit verify --require-signed-through``, and turns acknowledged during a disk outage survive SIGKILL."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from proxy.audit.heads import WRITER_ID_FILE, StoredCountWitness
from proxy.audit.log import AuditLog
from proxy.commands.cli import main
from proxy.state.redis_store import RedisSettings, RedisStateStore
from tests.harness import CLIENT_TIMEOUT_S, Proxy
from tests.redis_server import RedisServer
from tests.test_e2e_alerts import ask, wait_until
from tests.upstream import FakeUpstream, Reply


def with_audit_options(proxy: Proxy, options: str) -> None:
    audit = proxy.data_dir / "audit"
    text = proxy.policy_path.read_text()
    proxy.policy_path.write_text(
        text.replace(f"audit: {{path: {audit}}}", f"audit: {{path: {audit}, {options}}}")
    )
    proxy.restart()


def client_for(proxy: Proxy, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> openai.OpenAI:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    monkeypatch.setenv("SSL_CERT_FILE", str(proxy.ca_cert))
    return openai.OpenAI(base_url=f"{upstream.url}/v1", api_key="sk-test", max_retries=0)


def records_of_type(proxy: Proxy, kind: str) -> list[dict[str, Any]]:
    return [record for record in proxy.audit_records() if record.get("type") == kind]


def verify(*arguments: str) -> int:
    return main(["audit", "verify", *arguments])


def test_sighup_signs_a_checkpoint_and_the_proxy_keeps_serving(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGHUP is not a kill: the chain so far is signed and the next request is served and recorded."""
    proxy = start_proxy()
    with_audit_options(proxy, "checkpoint_after: 1h, heartbeat: 1h")
    client = client_for(proxy, upstream, monkeypatch)
    assert ask(client) is not None
    assert proxy.wait_for_records(1)
    assert records_of_type(proxy, "audit.checkpoint") == []
    proxy.process.send_signal(signal.SIGHUP)
    checkpoints = wait_until(lambda: records_of_type(proxy, "audit.checkpoint"))
    assert checkpoints and checkpoints[0]["records"] == 1
    assert proxy.process.poll() is None
    assert ask(client) is not None
    assert len(proxy.wait_for_records(2)) == 2


def test_written_turns_are_signed_within_seconds_and_a_cut_tail_is_caught(
    start_proxy: Callable[..., Proxy],
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With no shutdown and far fewer records than checkpoint_every, the turns are signed by time; an
    auditor holding the public key elsewhere proves the log whole up to then, and notices a cut."""
    proxy = start_proxy()
    with_audit_options(proxy, "checkpoint_after: 1s")
    audit = proxy.data_dir / "audit"
    pubkey = tmp_path / "kept-elsewhere.pub"
    assert main(["audit", "pubkey", "--audit", str(audit), "--out", str(pubkey)]) == 0
    client = client_for(proxy, upstream, monkeypatch)
    for _ in range(3):
        assert ask(client) is not None
    turns = proxy.wait_for_records(3)
    checkpoint = wait_until(
        lambda: [
            record
            for record in records_of_type(proxy, "audit.checkpoint")
            if record["prev_hash"] == turns[-1]["hash"]
        ]
    )
    assert checkpoint, "the last turn was not signed within seconds"
    last_turn_at = turns[-1]["ts"]
    assert verify("--pubkey", str(pubkey), "--require-signed-through", last_turn_at, str(audit)) == 0

    proxy.process.kill()  # the checkpoint on close is not what proved it
    proxy.process.wait()
    (day_file,) = audit.glob("audit-*.jsonl")
    kept = day_file.read_text().splitlines(keepends=True)
    day_file.write_text("".join(kept[:-2]))  # the last checkpoint and the turn before it
    capsys.readouterr()
    assert verify("--pubkey", str(pubkey), str(audit)) == 0, "a cut tail still chains"
    assert verify("--pubkey", str(pubkey), "--require-signed-through", last_turn_at, str(audit)) == 1
    assert "NOT SIGNED THROUGH" in capsys.readouterr().out


def test_turns_acknowledged_during_a_disk_outage_survive_sigkill(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """on_error open: agents are answered while the audit directory is gone; the proxy is then killed
    with SIGKILL. After a restart every acknowledged turn is in the log, after a gap record, and the
    chain verifies."""
    proxy = start_proxy()
    client = client_for(proxy, upstream, monkeypatch)
    assert ask(client) is not None
    assert proxy.wait_for_records(1)
    audit = proxy.data_dir / "audit"
    shutil.move(audit, audit.with_name("audit-moved"))
    audit.write_text("a regular file where the audit directory was")  # unwritable even for root
    acknowledged = sum(ask(client) is not None for _ in range(4))
    assert acknowledged == 4
    assert wait_until(lambda: (proxy.data_dir / "audit-spool" / "spool.jsonl").read_text().count("\n") >= 4)
    proxy.process.kill()
    proxy.process.wait()
    audit.unlink()
    shutil.move(audit.with_name("audit-moved"), audit)

    proxy.start()
    turns = proxy.wait_for_records(5)
    assert len(turns) == 5
    (gap,) = records_of_type(proxy, "audit.gap")
    assert gap["spooled"] == 4 and gap["dropped"] == 0
    assert ask(client_for(proxy, upstream, monkeypatch)) is not None
    assert len(proxy.wait_for_records(6)) == 6
    assert verify(str(audit)) == 0
    proxy.stop()


DISK_FULL_RUN = textwrap.dedent(
    """\
    import os, resource, signal, sys
    from pathlib import Path
    from proxy.audit.log import AuditLog
    directory, spool = Path(sys.argv[1]), Path(sys.argv[2])
    log = AuditLog(directory, spool=spool)
    log.append({"type": "agent.turn", "event_id": "before"})
    # From here every file grows no further than 64 bytes: the log and the spool refuse new lines,
    # as on a full disk; the count file, allocated at start, is rewritten in place.
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, resource.RLIM_INFINITY))
    for number in range(5):
        log.append({"type": "agent.turn", "event_id": f"during-{number}", "note": "x" * 200})
        print(f"acknowledged during-{number}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_turns_neither_written_nor_spooled_are_counted_in_a_gap_after_sigkill(tmp_path: Path) -> None:
    """When the spool's disk is full too, a process killed mid-outage still leaves the count of what
    it acknowledged, and the next start writes it as an audit.gap."""
    directory, spool = tmp_path / "audit", tmp_path / "spool"
    run = subprocess.run(
        [sys.executable, "-c", DISK_FULL_RUN, str(directory), str(spool)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[1],
    )
    assert run.returncode == -signal.SIGKILL, run.stderr
    acknowledged = run.stdout.count("acknowledged ")
    assert acknowledged == 5
    AuditLog(directory, spool=spool).close()
    written = [record for path in sorted(directory.glob("audit-*.jsonl")) for record in _records(path)]
    turns = [record for record in written if record["type"] == "agent.turn"]
    (gap,) = [record for record in written if record["type"] == "audit.gap"]
    assert len(turns) - 1 + gap["dropped"] + gap["spooled"] == acknowledged
    assert gap["dropped"] == acknowledged
    assert verify(str(directory)) == 0
    assert datetime.fromisoformat(gap["ts"]) <= datetime.now(UTC)


WITNESSED_DISK_FULL_RUN = DISK_FULL_RUN.replace(
    "log = AuditLog(directory, spool=spool)",
    "from proxy.audit.heads import StoredCountWitness\n"
    "from proxy.state.redis_store import RedisSettings, RedisStateStore\n"
    "witness = StoredCountWitness(RedisStateStore(RedisSettings(url=sys.argv[3])), lambda: 'writer-1')\n"
    "log = AuditLog(directory, spool=spool, count_witness=witness)\n"
    "before = (spool / 'unrecorded.count').read_bytes()\n"
    "print('count before ' + before.hex(), flush=True)",
)


def test_an_older_signed_count_put_back_after_sigkill_is_found_out(
    tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whoever can write the spool saves its signed zero before an outage and puts it back after the
    proxy was killed counting lost turns: the count is the log's own, but older than the one published
    to the state store. The next start records the witness's count in a gap saying it was replayed, and
    ``audit verify --spool --config`` fails on the spool as left."""
    directory, spool = tmp_path / "audit", tmp_path / "spool"
    run = subprocess.run(
        [sys.executable, "-c", WITNESSED_DISK_FULL_RUN, str(directory), str(spool), redis_server.url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[1],
    )
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert run.stdout.count("acknowledged ") == 5
    older = bytes.fromhex(run.stdout.split("count before ", 1)[1].split()[0])
    (spool / "unrecorded.count").write_bytes(older)
    config = tmp_path / "policy.yaml"
    config.write_text(
        f"version: 1\ndata_dir: {tmp_path}\nstate: {{backend: redis, url: '{redis_server.url}'}}\n"
    )
    (directory / WRITER_ID_FILE).write_text("writer-1\n")
    capsys.readouterr()
    assert verify(str(directory), "--spool", str(spool), "--config", str(config)) == 1
    assert "SPOOL COUNT REPLAYED" in capsys.readouterr().out
    witness = StoredCountWitness(RedisStateStore(RedisSettings(url=redis_server.url)), lambda: "writer-1")
    AuditLog(directory, spool=spool, count_witness=witness).close()
    written = [record for path in sorted(directory.glob("audit-*.jsonl")) for record in _records(path)]
    (gap,) = [record for record in written if record["type"] == "audit.gap"]
    assert gap["dropped"] == 5
    assert "put back" in gap["reason"]


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_status_is_what_the_agent_got_when_the_upstream_breaks(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream
) -> None:
    """An answer that breaks before it is whole reaches the agent as mitmproxy's 502, and 502 is what
    the audit says, not the upstream's 200; a stream that breaks after its head went out keeps its 200."""
    proxy = start_proxy()
    request = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    verify_ca = ssl.create_default_context(cafile=proxy.ca_cert)
    statuses = []
    for content_type in ("application/json", None):  # held whole (labelled JSON), then streamed
        upstream.reply = Reply(
            text="a long enough answer to be cut", content_type=content_type, cut_after_events=2
        )
        with (
            httpx.Client(proxy=proxy.url(), verify=verify_ca, timeout=CLIENT_TIMEOUT_S) as client,
            client.stream("POST", f"{upstream.url}/v1/chat/completions", json=request) as response,
        ):
            statuses.append(response.status_code)  # the head the agent received
            with contextlib.suppress(httpx.RemoteProtocolError):
                response.read()  # the streamed body breaks off
    assert statuses == [502, 200]
    records = proxy.wait_for_records(2)
    assert [record["status"] for record in records] == [502, 200]
