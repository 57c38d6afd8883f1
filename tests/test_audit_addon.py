"""The audit addon: records turns, feeds the alert router, applies actions, survives an unwritable log."""

from __future__ import annotations

import contextlib
import json
import shutil
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import exceptions, http
from mitmproxy.flow import Error
from mitmproxy.test import taddons, tflow

from addons.gate.turns import METADATA_KEY
from addons.record.audit import UNAVAILABLE_TYPE, Audit
from proxy.alerts import Alert
from proxy.audit.keys import load_public_key
from proxy.audit.verify import collect_files, verify_files
from proxy.config.policy import parse_policy
from proxy.control.freeze import refusal_reason
from proxy.runtime import Runtime
from proxy.state import SqliteStateStore
from proxy.turn import Turn, TurnContext


def audit_addon(tmp_path: Path, *, on_error: str = "open", audit_path: Path | None = None) -> Audit:
    alerts_file = tmp_path / "alerts.jsonl"
    policy = textwrap.dedent(f"""\
        mode: enforce
        data_dir: {tmp_path / "data"}
        agents:
          bot: {{token: "t0ken", role: support}}
        roles:
          support: {{}}
        audit: {{path: {audit_path or tmp_path / "audit"}, on_error: {on_error}}}
        alerts:
          destinations:
            secops: {{type: file, path: {alerts_file}}}
        """)
    runtime = Runtime(parse_policy(policy, "p.yaml", environ={}), SqliteStateStore(None))
    return Audit(runtime)


def turn_flow() -> Any:
    flow = tflow.tflow(resp=True)
    flow.metadata[METADATA_KEY] = Turn(context=TurnContext(agent_id="bot", role="support", user_id="u-1"))
    return flow


def break_directory(directory: Path) -> None:
    """Make the audit directory unusable even for root: a regular file where the directory was."""
    shutil.rmtree(directory)
    directory.write_text("not a directory")


@contextlib.contextmanager
def unwritable_log(tmp_path: Path, *, on_error: str) -> Iterator[Audit]:
    """A running addon whose audit directory breaks after start; shut down when the block ends."""
    addon = audit_addon(tmp_path, on_error=on_error)
    with taddons.context(addon) as tctx:
        tctx.configure(addon)
        addon.running()
        break_directory(tmp_path / "audit")
        yield addon
        addon.done()


def answer_then_request(addon: Audit) -> tuple[Any, Any]:
    """One answer through the response hook, then a fresh request through requestheaders."""
    answered = turn_flow()
    addon.response(answered)
    later = turn_flow()
    later.response = None
    addon.requestheaders(later)
    return answered, later


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_turn_is_written_and_log_closed_on_done(tmp_path: Path) -> None:
    """A finished flow becomes one agent.turn record, followed by a signed checkpoint on shutdown."""
    addon = audit_addon(tmp_path)
    with taddons.context(addon) as tctx:
        tctx.configure(addon)
        addon.running()
        addon.response(turn_flow())
        addon.done()
    lines = [
        json.loads(line)
        for path in (tmp_path / "audit").glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert [record["type"] for record in lines] == ["agent.turn", "audit.checkpoint"]


def test_configure_twice_with_the_same_policy_keeps_router_and_log(tmp_path: Path) -> None:
    """The router and the log are built once per policy, not on every option change."""
    addon = audit_addon(tmp_path)
    with taddons.context(addon) as tctx:
        tctx.configure(addon)
        addon.running()
        router, sink = addon.router, addon.sink
        tctx.configure(addon)
        assert router is not None and addon.router is router and addon.sink is sink
        addon.done()


def test_changed_audit_settings_continue_one_chain(tmp_path: Path) -> None:
    """A policy change that reopens the log (a reload) closes the old writer first: the chain stays one,
    signed, and a rejected change keeps the old log recording."""
    addon = audit_addon(tmp_path)
    with taddons.context(addon) as tctx:
        tctx.configure(addon)
        addon.response(turn_flow())
        policy = addon.runtime.policy
        addon.runtime.policy_or_none = replace(policy, audit=replace(policy.audit, checkpoint_every=5))
        tctx.configure(addon)
        addon.response(turn_flow())
        (tmp_path / "file").write_text("x")
        addon.runtime.policy_or_none = replace(
            policy, audit=replace(policy.audit, path=tmp_path / "file" / "a")
        )
        with pytest.raises(exceptions.OptionsError):
            tctx.configure(addon)
        addon.response(turn_flow())
        addon.done()
    directory = tmp_path / "audit"
    report = verify_files(collect_files([directory]), load_public_key(directory / "audit-signing.pub"))
    assert report.intact and report.unsigned_tail == 0
    assert report.records - report.checkpoints == 3


def test_unopenable_audit_directory_stops_the_start(tmp_path: Path) -> None:
    """An audit path under a regular file is an option error at start, not a failure per request."""
    (tmp_path / "file").write_text("x")
    addon = audit_addon(tmp_path, audit_path=tmp_path / "file" / "audit")
    with taddons.context(addon) as tctx, pytest.raises(exceptions.OptionsError, match="audit log"):
        tctx.configure(addon)
    assert addon.router is None


def test_router_waits_for_the_proxy_to_run(tmp_path: Path) -> None:
    """Options tried while the proxy starts open no router threads; running does."""
    addon = audit_addon(tmp_path)
    with taddons.context(addon) as tctx:
        tctx.configure(addon)
        assert addon.router is None
        addon.running()
        assert addon.router is not None
        addon.done()


def test_closed_log_refuses_requests_with_503(tmp_path: Path) -> None:
    """With on_error closed, once the log is unwritable the unrecorded answer and later requests get 503."""
    with unwritable_log(tmp_path, on_error="closed") as addon:
        answered, refused = answer_then_request(addon)
        assert answered.response.status_code == 503
        assert refused.response is not None and refused.response.status_code == 503
        error = json.loads(refused.response.content)["error"]
        assert error["type"] == UNAVAILABLE_TYPE
        assert error["message"].startswith("egressguard: audit log unavailable")


def test_open_log_lets_requests_through_while_unwritable(tmp_path: Path) -> None:
    """With on_error open, an unwritable log never changes the agent's traffic."""
    with unwritable_log(tmp_path, on_error="open") as addon:
        answered, later = answer_then_request(addon)
        assert answered.response.status_code == 200
        assert later.response is None


def test_unwritable_log_raises_an_alert(tmp_path: Path) -> None:
    """The first failed write raises a critical audit-unavailable alert to every destination."""
    with unwritable_log(tmp_path, on_error="open") as addon:
        addon.response(turn_flow())
        alerts_file = tmp_path / "alerts.jsonl"
        assert wait_for(lambda: alerts_file.exists() and alerts_file.read_text().strip())
    alert = json.loads(alerts_file.read_text().splitlines()[0])
    assert (alert["rule"], alert["severity"]) == ("audit-unavailable", "critical")


def test_alert_action_freezes_the_user_in_the_state_store(tmp_path: Path) -> None:
    """The router's freeze_user action freezes the alert's users for the policy's freeze duration."""
    addon = audit_addon(tmp_path)
    with taddons.context(addon) as tctx:
        tctx.configure(addon)
        addon.running()
        assert addon.router is not None and addon.router.action_handler is not None
        alert = Alert("a1", "r", "d", "high", "t", "k", {}, 1, 60, ["bot"], ["u-1"], [], [], [], [])
        addon.router.action_handler("freeze_user", alert)
        addon.done()
    reason = refusal_reason(addon.runtime.state, "bot", "u-1", None)
    assert reason == "user 'u-1' is frozen: alert r (a1)"
    assert refusal_reason(addon.runtime.state, "other-bot", "u-1", None) is None


def test_write_failure_never_escapes_the_hook(tmp_path: Path) -> None:
    """An unexpected error while recording is logged, and the flow goes on."""
    addon = audit_addon(tmp_path)
    with taddons.context(addon) as tctx:
        tctx.configure(addon)
        addon.running()
        flow = turn_flow()
        flow.metadata[METADATA_KEY].context = None  # a turn broken by a bug elsewhere
        addon.response(flow)
        assert flow.response.status_code == 200
        addon.done()


def recorded_status(tmp_path: Path, prepare: Any) -> Any:
    """The status written for a flow that ``prepare`` shaped, through the hook mitmproxy would call."""
    addon = audit_addon(tmp_path)
    flow = turn_flow()
    prepare(flow)
    with taddons.context(addon) as tctx:
        tctx.configure(addon)
        if flow.error is None:
            addon.response(flow)
        else:
            addon.error(flow)
        addon.done()
    (record,) = [
        json.loads(line)
        for path in (tmp_path / "audit").glob("*.jsonl")
        for line in path.read_text().splitlines()
        if '"agent.turn"' in line
    ]
    return record["status"]


def upstream_broke(flow: Any) -> None:
    """The upstream's head arrived (200), then its body broke (a bad chunk): mitmproxy answers 502."""
    flow.error = Error("HTTP/1 protocol error: Malformed chunked body")


def stream_broke(flow: Any) -> None:
    """Streamed: the 200 head went out before the body broke."""
    flow.response.stream = True
    upstream_broke(flow)


def client_left(flow: Any) -> None:
    flow.error = Error("Client disconnected.")


def killed(flow: Any) -> None:
    flow.error = Error(Error.KILLED_MESSAGE)


def request_unreadable(flow: Any) -> None:
    flow.response = None
    flow.request.timestamp_end = None
    flow.error = Error("Request body exceeds mitmproxy's body_size_limit.")


def refused_by_egressguard(flow: Any) -> None:
    flow.response = http.Response.make(403, b"refused")


@pytest.mark.parametrize(
    ("prepare", "status"),
    [
        (lambda flow: None, 200),
        (upstream_broke, 502),
        (stream_broke, 200),
        (client_left, None),
        (killed, None),
        (request_unreadable, 413),
        (refused_by_egressguard, 403),
    ],
    ids=["answered", "bad-chunk", "stream-cut", "client-left", "killed", "request-too-large", "refused"],
)
def test_status_is_what_the_agent_received(tmp_path: Path, prepare: Any, status: int | None) -> None:
    """The recorded status is the one the agent got, not the upstream's, and None when it got none."""
    assert recorded_status(tmp_path, prepare) == status
