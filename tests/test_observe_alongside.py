"""Observe mode: the request leaves at once, its inspection runs alongside, and the turn is audited with
the findings once both are done."""

from __future__ import annotations

import asyncio
import json
import textwrap
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.flow import Error
from mitmproxy.test import taddons

from addons.gate.turns import METADATA_KEY
from addons.inspect import Inspect
from addons.record.audit import Audit
from proxy.config.policy import parse_policy
from proxy.inspection import TurnInspector
from proxy.runtime import Runtime
from proxy.state import SqliteStateStore
from proxy.turn import Turn, TurnContext
from tests.test_inspect_addon import chat_flow as chat_request

AWS_KEY = "AKIAQWERTY234567ABCD"


def runtime(tmp_path: Path, mode: str) -> Runtime:
    policy = textwrap.dedent(f"""\
        mode: {mode}
        data_dir: {tmp_path / "data"}
        agents:
          bot: {{token: t0ken, role: r}}
        roles:
          r: {{egress: {{allow: [api.openai.com]}}}}
        audit: {{path: {tmp_path / "audit"}}}
        alerts: {{destinations: {{secops: {{type: file, path: {tmp_path / "alerts.jsonl"}}}}}}}
        """)
    return Runtime(parse_policy(policy, "p.yaml", environ={}), SqliteStateStore(None))


def chat_flow() -> Any:
    flow = chat_request(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": f"deploy with key {AWS_KEY}"}]}
    )
    flow.metadata[METADATA_KEY] = Turn(TurnContext(agent_id="bot", role="r", user_id="u-1"))
    return flow


class SlowInspection:
    """Holds every request inspection until released, and says when one has started and finished."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started, self.release, self.finished = threading.Event(), threading.Event(), threading.Event()
        inspect_request = TurnInspector.inspect_request

        def held(inspector: TurnInspector, view: Any) -> Any:
            self.started.set()
            self.release.wait(10)
            try:
                return inspect_request(inspector, view)
            finally:
                self.finished.set()

        monkeypatch.setattr(TurnInspector, "inspect_request", held)


def audited(
    tmp_path: Path, inspect: Inspect, audit: Audit, exchange: Coroutine[Any, Any, None]
) -> list[dict[str, Any]]:
    """Run ``exchange`` through the two addons, then read the turns the audit log holds."""
    with taddons.context(inspect, audit) as tctx:
        tctx.configure(audit)
        audit.running()
        asyncio.run(exchange)
        audit.done()
        inspect.done()
    return [
        json.loads(line)
        for path in sorted((tmp_path / "audit").rglob("*.jsonl"))
        for line in path.read_text().splitlines()
        if json.loads(line).get("type") == "agent.turn"
    ]


def test_request_leaves_before_inspection_ends_and_the_turn_keeps_its_findings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request hook returns (mitmproxy sends the request upstream) while inspection is held; the
    response waits for it, and the audit record names the secret the prompt carried."""
    slow = SlowInspection(monkeypatch)
    live = runtime(tmp_path, "observe")
    inspect, audit = Inspect(live), Audit(live)
    flow = chat_flow()
    sent = flow.request.content

    async def exchange() -> None:
        await asyncio.wait_for(inspect.request(flow), 5)
        assert slow.started.wait(5) and not slow.finished.is_set()
        assert flow.request.content == sent and flow.response is None
        flow.response = http.Response.make(200, b'{"choices": []}', {"content-type": "application/json"})
        answered = asyncio.ensure_future(inspect.response(flow))
        await asyncio.sleep(0.2)
        assert not answered.done()
        slow.release.set()
        await asyncio.wait_for(answered, 10)
        audit.response(flow)

    (record,) = audited(tmp_path, inspect, audit, exchange())
    assert "aws-access-key-id" in [finding["rule"] for finding in record["findings"]]
    assert AWS_KEY not in json.dumps(record)


def test_a_connection_error_waits_for_inspection_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An upstream that fails: the error hook waits for the inspection, so the record has its findings."""
    slow = SlowInspection(monkeypatch)
    live = runtime(tmp_path, "observe")
    inspect, audit = Inspect(live), Audit(live)
    flow = chat_flow()

    async def broken() -> None:
        await asyncio.wait_for(inspect.request(flow), 5)
        flow.error = Error("connection refused")
        threading.Timer(0.2, slow.release.set).start()
        await asyncio.wait_for(inspect.error(flow), 10)
        assert slow.finished.is_set()
        audit.error(flow)

    (record,) = audited(tmp_path, inspect, audit, broken())
    assert "aws-access-key-id" in [finding["rule"] for finding in record["findings"]]


def test_enforce_mode_inspects_before_the_request_leaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where a verdict can change the request, the request hook returns only after inspection."""
    slow = SlowInspection(monkeypatch)
    slow.release.set()
    inspect = Inspect(runtime(tmp_path, "enforce"))
    flow = chat_flow()
    with taddons.context(inspect):
        asyncio.run(inspect.request(flow))
        assert slow.finished.is_set()
        inspect.done()
    turn = flow.metadata[METADATA_KEY]
    assert "aws-access-key-id" in [finding.rule for finding in turn.findings]
