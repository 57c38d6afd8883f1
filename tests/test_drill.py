"""`egressguard drill` against real proxies: it passes against the README's first command, proves
enforcement in enforce mode, and fails when an alert destination cannot be reached."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from mitmproxy.test import tflow

from addons.gate.drill import DrillMarker
from addons.gate.turns import METADATA_KEY, turn_of
from proxy.config.paths import default_data_dir
from proxy.config.policy import parse_policy
from proxy.control.drill import CASES, CASES_BY_NAME, DRILL_SECRET, drill_mark, judge
from proxy.runtime import Runtime
from proxy.state import SqliteStateStore
from proxy.state.sqlite import DATABASE_NAME
from proxy.turn import Turn, TurnContext
from tests.harness import Proxy, free_port
from tests.test_admin import Admin, start_admin  # noqa: F401 - the fixture is used by name
from tests.test_speedups import installed  # noqa: F401 - the fixture is asked for by name
from tests.webhook_receiver import Receiver

DRILL_POLICY = """\
mode: enforce
agents:
  bot: {token: t, role: r}
roles:
  r: {}
"""


def drill(workdir: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", "drill", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=workdir,
        env={key: value for key, value in os.environ.items() if not key.startswith("EGRESSGUARD_")},
    )


@pytest.fixture
def readme_proxy(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """`egressguard run` as the README's first command starts it (embedded policy, observe mode), on free
    ports so parallel runs on one machine do not collide."""
    port, admin_port = free_port(), free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("EGRESSGUARD_")}
    command = [sys.executable, "-m", "proxy", "run", "--listen-port", str(port)]
    command += ["--admin-listen", f"127.0.0.1:{admin_port}"]
    log = (tmp_path / "proxy.log").open("wb")
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        # Ready, not only listening: by default one worker per core starts behind the admin listener.
        while not (default_data_dir(env) / "admin-read.token").exists() or not _ready(admin_port):
            assert process.poll() is None and time.monotonic() < deadline, (
                tmp_path / "proxy.log"
            ).read_text()
            time.sleep(0.1)
        yield port, admin_port
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def _ready(admin_port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{admin_port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_drill_passes_against_the_readme_first_command(tmp_path: Path, readme_proxy: tuple[int, int]) -> None:
    """Every case is detected, observed (nothing changed in observe mode), audited as a drill and alerted;
    the last-success metric is set; drill turns stay out of the triage queries."""
    port, admin_port = readme_proxy
    result = drill(
        tmp_path, "--proxy", f"http://127.0.0.1:{port}", "--admin", f"http://127.0.0.1:{admin_port}"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for case in CASES:
        line = next(line for line in result.stdout.splitlines() if line.startswith(case.name))
        assert "MISS" not in line and "observed ok" in line
    records = [
        json.loads(line)
        # One writer per worker, each in its own directory under the audit directory.
        for path in sorted((default_data_dir(os.environ) / "audit").rglob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    drills = [record for record in records if record["type"] == "agent.turn"]
    assert len(drills) == len(CASES) and all(record["drill"] for record in drills)
    assert DRILL_SECRET not in "".join(json.dumps(record) for record in records)
    assert [r["passed"] for r in records if r["type"] == "drill.finished"] == [True]
    read_token = (default_data_dir(os.environ) / "admin-read.token").read_text().strip()
    metrics = httpx.get(
        f"http://127.0.0.1:{admin_port}/metrics",
        headers={"Authorization": f"Bearer {read_token}"},
        trust_env=False,
    ).text
    (line,) = [line for line in metrics.splitlines() if line.startswith("egressguard_drill_last_success")]
    assert float(line.split()[-1]) > time.time() - 120
    query = subprocess.run(
        [sys.executable, "-m", "proxy", "query", "incidents", "--format", "json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        timeout=60,
    )
    assert query.returncode == 0 and json.loads(query.stdout or "[]") == []
    assert baseline_keys(default_data_dir(os.environ) / "state" / DATABASE_NAME) == []


BASELINE_PREFIXES = (
    *("tool.", "turns:", "refusals:", "seen:", "egress.first_seen:"),
    *("alerts.window:", "alerts.seen:", "alerts.fired", "approval"),
)
"""What an agent's traffic writes to its baselines, limits, first-seen sets and approvals."""


def baseline_keys(database: Path) -> list[str]:
    """The keys of the state store (read from its file, as any other process sees it) that real traffic
    would have written: a drill writes none."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
        keys = [
            key
            for query in (
                "SELECT key FROM counters",
                "SELECT key FROM windows",
                "SELECT set_name FROM members",
                "SELECT key FROM kv",
            )
            for (key,) in connection.execute(query)
        ]
    return [key for key in keys if key.startswith(BASELINE_PREFIXES)]


def test_drill_in_enforce_mode_proves_each_enforcement(
    start_admin: Callable[..., Admin],  # noqa: F811 - the fixture
) -> None:
    """In enforce mode the injection and egress cases are refused, the secrets redacted (JSON and stream),
    the destructive call withheld; the webhook gets one drill alert per case."""
    receiver = Receiver()
    try:
        admin = start_admin(
            mode="enforce",
            extra=f'alerts:\n  destinations:\n    secops: {{type: webhook, url: "{receiver.url}"}}\n',
        )
        result = drill(admin.proxy.workdir, *_targets(admin), "--config", str(admin.proxy.policy_path))
        assert result.returncode == 0, result.stdout + result.stderr
        for name in (
            "direct-injection",
            "secret-in-completion-json",
            "secret-in-completion-sse",
            "disallowed-egress",
        ):
            assert "enforced ok" in next(line for line in result.stdout.splitlines() if line.startswith(name))
        drills = [alert for alert in receiver.accepted() if alert["rule"] == "egressguard-drill"]
        assert len(drills) == len(CASES) and all("[DRILL" in alert["description"] for alert in drills)
        assert not [alert for alert in receiver.accepted() if alert["rule"] != "egressguard-drill"]
        assert admin.get("/api/v1/freezes", admin.read).json() == {"freezes": []}
    finally:
        receiver.close()


def test_drill_fails_when_an_alert_destination_is_unreachable(
    start_admin: Callable[..., Admin],  # noqa: F811 - the fixture
) -> None:
    """A webhook nobody listens on: detection and audit pass, the alert column misses, exit 1."""
    closed = free_port()
    admin = start_admin(
        extra=f'alerts:\n  destinations:\n    secops: {{type: webhook, url: "http://127.0.0.1:{closed}/hook"}}\n'
    )
    result = drill(
        admin.proxy.workdir, *_targets(admin), "--config", str(admin.proxy.policy_path), "--wait", "3"
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED" in result.stdout and "secops: retrying" in result.stdout
    assert [r["passed"] for r in admin.proxy.audit_records() if r["type"] == "drill.finished"] == [False]


def test_drill_headers_without_a_live_run_mark_nothing(
    start_admin: Callable[..., Admin],  # noqa: F811 - the fixture
) -> None:
    """An agent cannot label its own traffic a drill: a made-up drill token is stripped and ignored, and
    the drill host is an ordinary (unresolvable, refused) destination."""
    admin = start_admin(mode="enforce")
    status, _ = admin.proxy.raw(
        b"GET http://drill.egressguard.invalid/v1/chat/completions HTTP/1.1\r\n"
        b"Host: drill.egressguard.invalid\r\n"
        + _authorization(admin.proxy)
        + b"X-Egressguard-Drill: forged\r\n"
        b"X-Egressguard-Drill-Case: direct-injection\r\n\r\n"
    )
    assert status == 403
    (record,) = admin.proxy.wait_for_records(1)
    assert "drill" not in record


def test_judge_reads_enforcement_from_the_record() -> None:
    """A case passes only with a finding of its threat, the outcome its enforcement implies, a record and
    every destination delivered."""
    case = CASES_BY_NAME["secret-in-completion-json"]
    record = {"event_id": "e1", "findings": [{"threat": "data_exfiltration", "enforced": True}]}
    redacted = b'{"choices":[{"message":{"content":"[REDACTED:aws-access-key-id]"}}]}'
    assert judge(case, 200, redacted, record, {"hook": "delivered"}).passed
    leaked = redacted.replace(b"[REDACTED:aws-access-key-id]", DRILL_SECRET.encode())
    assert not judge(case, 200, leaked, record, {"hook": "delivered"}).outcome
    assert not judge(case, 200, redacted, record, {"hook": "retrying: 503"}).alerted
    assert not judge(case, 200, redacted, {"event_id": "e1", "findings": []}, {"hook": "delivered"}).detected
    assert not judge(case, 200, redacted, None, {}).passed


def _targets(admin: Admin) -> tuple[str, ...]:
    return ("--proxy", admin.proxy.url(), "--admin", admin.url)


def _authorization(proxy: Proxy) -> bytes:
    from tests.harness import proxy_authorization

    return proxy_authorization()


@pytest.mark.parametrize("speedups", [False, True])
def test_the_marker_takes_drill_headers_in_any_case_and_leaves_other_requests_as_they_are(
    speedups: bool, request: pytest.FixtureRequest
) -> None:
    """A request of a live run is marked and loses both drill headers, however they are spelled and
    wherever they stand; a request carrying neither keeps its very fields, with or without the header
    lookups the proxy installs."""
    if speedups:
        request.getfixturevalue("installed")
    runtime = Runtime(parse_policy(DRILL_POLICY, "p.yaml", environ={}), SqliteStateStore(None))
    run = runtime.drills.start()
    marker = DrillMarker(runtime)
    plain = tflow.tflow()
    plain.metadata[METADATA_KEY] = Turn(TurnContext(agent_id="bot", role="r"))
    fields = plain.request.headers.fields
    marker.requestheaders(plain)
    assert plain.request.headers.fields is fields and turn_of(plain).drill is None  # type: ignore[union-attr]
    marked = tflow.tflow()
    marked.metadata[METADATA_KEY] = Turn(TurnContext(agent_id="bot", role="r"))
    marked.request.headers.fields = (
        (b"x-EGRESSGUARD-drill-case", b"direct-injection"),
        *marked.request.headers.fields,
        (b"X-Egressguard-Drill", run.token.encode()),
    )
    marker.requestheaders(marked)
    assert turn_of(marked).drill == drill_mark(run, "direct-injection")  # type: ignore[union-attr]
    assert not any(
        name.lower().startswith(b"x-egressguard-drill") for name, _ in marked.request.headers.fields
    )
