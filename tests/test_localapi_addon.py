"""The local API addon on its own: frozen identities get every step refused, as their API calls are."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mitmproxy.test import taddons, tflow

from addons.gate.localapi import LocalApi
from addons.gate.turns import METADATA_KEY
from proxy.control.freeze import block_agent, freeze_user
from proxy.runtime import Runtime
from proxy.state import SqliteStateStore
from proxy.turn import Turn, TurnContext
from tests.test_freeze import runtime as freeze_runtime


def runtime(mode: str) -> Runtime:
    return freeze_runtime(mode, SqliteStateStore(None))


def ask(addon: LocalApi, document: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    flow = tflow.tflow()
    flow.request.method, flow.request.host, flow.request.path = "POST", "egressguard.internal", "/v1/inspect"
    flow.request.content = json.dumps(document).encode()
    flow.request.headers["content-length"] = str(len(flow.request.content))
    context = TurnContext(agent_id="bot", role="support", user_id="u-1", purpose="support", consent_id="c")
    flow.metadata[METADATA_KEY] = Turn(context=context)
    with taddons.context(addon):
        addon.requestheaders(flow)
        addon.request(flow)
    assert flow.response is not None and METADATA_KEY not in flow.metadata
    return flow.response.status_code, json.loads(flow.response.content or b"{}")


HARMLESS = {"kind": "tool_call", "tool": "search_docs", "arguments": {"query": "refunds"}}


@pytest.mark.parametrize("mode", ["observe", "enforce"])
def test_a_blocked_agent_gets_every_step_refused_in_every_mode(mode: str) -> None:
    addon = LocalApi(runtime(mode))
    assert ask(addon, HARMLESS)[1]["decision"] == "allowed"
    block_agent(addon.runtime.state, "bot", 60, "compromised")
    status, verdict = ask(addon, HARMLESS)
    assert status == 200 and verdict["decision"] == "blocked"
    assert verdict["findings"][0]["enforced"] is True


def test_a_frozen_user_is_refused_in_enforce_mode_and_flagged_in_observe_mode() -> None:
    enforcing, observing = LocalApi(runtime("enforce")), LocalApi(runtime("observe"))
    for addon in (enforcing, observing):
        freeze_user(addon.runtime.state, "u-1", 60, "injection attempts")
    assert ask(enforcing, HARMLESS)[1]["decision"] == "blocked"
    status, verdict = ask(observing, HARMLESS)
    assert status == 200 and verdict["decision"] == "allowed" and verdict["findings"][0]["enforced"] is False
