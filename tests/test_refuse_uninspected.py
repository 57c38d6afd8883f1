"""A hook that fails leaves what it read uninspected: refused where the policy enforces a threat decided
on a body's words, passed on the record elsewhere."""

from __future__ import annotations

import textwrap
from collections.abc import MutableMapping
from typing import Any
from unittest import mock

import pytest
import structlog.testing
from mitmproxy import http
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons, tflow

from addons.gate.turns import METADATA_KEY, POLICY_KEY
from addons.inspect import INSPECTION_FAILED_RULE, fail_open, refuse_uninspected
from proxy.config.policy import Policy, parse_policy
from proxy.scanning.rulepack import ScanResult, ScanTimeout
from proxy.turn import Turn, TurnContext


def policy(mode: str) -> Policy:
    return parse_policy(
        textwrap.dedent(f"""\
            mode: {mode}
            agents:
              bot: {{token: t, role: support}}
            roles:
              support:
                egress: {{allow: [api.openai.com]}}
            """),
        "p.yaml",
        environ={},
    )


def refused(flow: http.HTTPFlow, mode: str) -> Turn:
    turn = Turn(TurnContext(agent_id="bot", role="support"))
    flow.metadata[METADATA_KEY] = turn
    refuse_uninspected(flow, turn, policy(mode), "inspect_request")
    return turn


def test_a_request_is_refused_403() -> None:
    flow = tflow.tflow()
    turn = refused(flow, "enforce")
    assert flow.response is not None and flow.response.status_code == 403
    assert INSPECTION_FAILED_RULE in (flow.response.text or "")
    assert [(f.rule, f.enforced) for f in turn.findings] == [(INSPECTION_FAILED_RULE, True)]
    assert str(turn.decision) == "blocked"


def test_a_whole_answer_is_replaced_by_a_502() -> None:
    flow = tflow.tflow(resp=True)
    refused(flow, "enforce")
    assert flow.response is not None and flow.response.status_code == 502


@pytest.mark.parametrize("relayed", [False, True], ids=["head only", "relayed"])
def test_an_answer_on_its_way_is_cut(relayed: bool) -> None:
    """At the head, a replaced answer would be filled with the upstream's body; a relayed one has left in
    part: the connection is closed instead."""
    flow = tflow.tflow(resp=True)
    assert flow.response is not None
    flow.response.timestamp_end = None if not relayed else flow.response.timestamp_end
    flow.response.stream = relayed
    refused(flow, "enforce")
    assert flow.response.status_code == 200 and flow.killable is False


def test_a_websocket_message_is_dropped() -> None:
    """The message is not delivered, and the agent is told by the connection's close (the proxy's
    ``inject.websocket`` command carries it)."""
    flow = tflow.twebsocketflow()
    with (
        taddons.context(Proxyserver()) as context,
        mock.patch.object(context.master.commands, "call") as call,
    ):
        refused(flow, "enforce")
    assert flow.websocket is not None and flow.websocket.messages[-1].dropped
    call.assert_called_once_with("inject.websocket", flow, False, b"", True)


def test_observe_mode_passes_on_the_record() -> None:
    flow = tflow.tflow()
    turn = refused(flow, "observe")
    assert flow.response is None and turn.findings == []


class _Hooks:
    runtime = None

    def __init__(self, error: Exception) -> None:
        self.error = error

    @fail_open
    def inspect_request(self, flow: http.HTTPFlow) -> None:
        raise self.error


def failed(error: Exception) -> tuple[http.HTTPFlow, Turn, MutableMapping[str, Any], str]:
    """A request whose hook raised ``error`` in enforce mode, its turn, its one inspect.failed log line
    and all that was logged."""
    flow = tflow.tflow()
    turn = Turn(TurnContext(agent_id="bot", role="support"))
    flow.metadata[METADATA_KEY] = turn
    flow.metadata[POLICY_KEY] = policy("enforce")
    with structlog.testing.capture_logs() as logged:
        _Hooks(error).inspect_request(flow)
    [line] = [entry for entry in logged if entry["event"] == "inspect.failed"]
    assert line["at"].startswith("tests/test_refuse_uninspected.py:")
    assert line["at"].endswith(" in inspect_request")
    return flow, turn, line, str(logged)


def test_a_failed_hook_is_refused_and_logged_with_where_it_failed_without_its_message() -> None:
    """A hook that raised (a worker thread's inspection as much as the event loop's) is refused where
    enforced, and its log line names the code it failed at, never the exception's text."""
    flow, turn, line, logged = failed(KeyError("a secret the hook read"))
    assert flow.response is not None and flow.response.status_code == 403
    assert turn.errors == ["inspect: KeyError in inspect_request"]
    assert line["error"] == "KeyError" and "timed_out" not in line
    assert "secret" not in logged


def test_a_hook_out_of_time_is_logged_once_naming_the_rules_out_of_time() -> None:
    flow, turn, line, _ = failed(ScanTimeout(ScanResult(timed_out=("secrets.aws-access-key-id",))))
    assert flow.response is not None
    assert turn.errors == ["inspect: rules out of time: secrets.aws-access-key-id in inspect_request"]
    assert (line["error"], line["timed_out"]) == ("ScanTimeout", ["secrets.aws-access-key-id"])
