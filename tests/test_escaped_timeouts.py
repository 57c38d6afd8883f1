"""A rule out of time whose ``ScanTimeout`` leaves an inspect hook unsettled (a reading that does not
handle it) never lets what the hook had still to read pass silently, nor kills a connection without a
record: where a reading threat is enforced it is refused (a 403, a dropped message), the rules out of
time enforced findings; elsewhere it passes with those findings and an ``inspection.failed`` finding,
none of them enforced."""

from __future__ import annotations

import asyncio
import json
from unittest import mock

import pytest
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons

from addons.gate.turns import METADATA_KEY
from addons.inspect import INSPECTION_FAILED_RULE, Inspect, request_inspected
from proxy.inspection import RequestVerdict, TurnInspector
from proxy.scanning.rulepack import SCAN_TIMEOUT_RULE, ScanTimeout
from proxy.turn import Turn
from tests.test_inspect_addon import inspect_addon, inspected_websocket, server_says
from tests.test_observe_alongside import chat_flow

NEAR_CARDS = "4111 1111 1111 1112 " * 200


def unsettled_timeout(self: TurnInspector, *_: object, **__: object) -> RequestVerdict:
    """A reading that scans with the budget and lets the rule out of time escape as it is."""
    raise ScanTimeout(self.detectors.sensitive.scan(NEAR_CARDS, self.budget))


def without_time(addon: Inspect) -> None:
    addon.runtime.detectors.sensitive.timeout_s = addon.runtime.detectors.sensitive.rescan_s = 0.0


def recorded(turn: Turn) -> dict[str, set[bool]]:
    """Whether each rule's findings were enforced."""
    found: dict[str, set[bool]] = {}
    for finding in turn.findings:
        found.setdefault(finding.rule, set()).add(finding.enforced)
    return found


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_request_whose_reading_let_a_timeout_escape(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read before it leaves (enforce mode) or alongside (observe mode): a 403 and enforced findings, or
    the request passed with findings that say so."""
    addon = inspect_addon(mode)
    without_time(addon)
    monkeypatch.setattr(TurnInspector, "inspect_request", unsettled_timeout)
    flow = chat_flow()
    turn = flow.metadata[METADATA_KEY]
    with taddons.context(addon):
        asyncio.run(addon.request(flow))
        asyncio.run(request_inspected(flow))  # observe mode reads it alongside
    found = recorded(turn)
    enforced = mode == "enforce"
    assert found[SCAN_TIMEOUT_RULE] == {enforced} and found[INSPECTION_FAILED_RULE] == {enforced}
    assert (flow.response is not None and flow.response.status_code == 403) is enforced
    assert (turn.decision == "blocked") is enforced
    assert any("ScanTimeout" in error or "rules out of time" in error for error in turn.errors)
    assert "4111" not in json.dumps([finding.signal for finding in turn.findings])


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_a_websocket_message_whose_reading_let_a_timeout_escape(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The message is dropped where enforced, delivered elsewhere; the findings are at its place."""
    addon, flow = inspected_websocket(mode)
    without_time(addon)
    inspector = flow.metadata["egressguard.inspector"]
    assert isinstance(inspector, TurnInspector)
    inspector.budget.seconds = inspector.budget.left = inspector.budget.per_char = 0.0
    monkeypatch.setattr(TurnInspector, "inspect_message", unsettled_timeout)
    message = server_says(flow, "hello")
    with (
        taddons.context(addon, Proxyserver()) as context,
        mock.patch.object(context.master.commands, "call") as call,
    ):
        addon.websocket_message(flow)
    turn = flow.metadata[METADATA_KEY]
    enforced = mode == "enforce"
    assert message.dropped is enforced
    assert call.called is enforced  # the agent is told: the connection is closed
    found = recorded(turn)
    assert found[SCAN_TIMEOUT_RULE] == {enforced} and found[INSPECTION_FAILED_RULE] == {enforced}
    assert flow.websocket is not None
    where = f"websocket[{len(flow.websocket.messages) - 1}]"
    assert {finding.where for finding in turn.findings if finding.rule == SCAN_TIMEOUT_RULE} == {where}
