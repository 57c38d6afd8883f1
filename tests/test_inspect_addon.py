"""The inspect addon's handling of WebSocket messages (realtime APIs), with mitmproxy's test flows."""

from __future__ import annotations

import asyncio
import textwrap

from mitmproxy.test import taddons, tflow
from mitmproxy.websocket import WebSocketMessage
from wsproto.frame_protocol import Opcode

from addons.inspect import Inspect
from addons.turns import METADATA_KEY
from proxy.config.policy import parse_policy
from proxy.runtime import Runtime
from proxy.state import SqliteStateStore
from proxy.turn import Turn, TurnContext

AWS_KEY = "AKIAQWERTY234567ABCD"


def inspected_websocket(mode: str) -> tuple[Inspect, tflow.HTTPFlow]:
    policy = parse_policy(
        textwrap.dedent(f"""\
            mode: {mode}
            agents:
              bot: {{token: t, role: r}}
            roles:
              r: {{egress: {{allow: [api.openai.com]}}}}
            """),
        "p.yaml",
        environ={},
    )
    addon = Inspect(Runtime(policy, SqliteStateStore(None)))
    flow = tflow.twebsocketflow()
    flow.metadata[METADATA_KEY] = Turn(TurnContext(agent_id="bot", role="r"))
    upgrade, flow.response = flow.response, None  # the request hook runs before the upstream answers
    asyncio.run(addon.request(flow))
    flow.response = upgrade
    return addon, flow


def server_says(flow: tflow.HTTPFlow, text: str) -> WebSocketMessage:
    assert flow.websocket is not None
    message = WebSocketMessage(Opcode.TEXT, False, text.encode())
    flow.websocket.messages.append(message)
    return message


def test_secret_in_server_message_redacted_in_enforce_mode() -> None:
    """A key in a realtime API's message is redacted before the agent reads it."""
    addon, flow = inspected_websocket("enforce")
    with taddons.context(addon):
        message = server_says(flow, f'{{"delta": "your key is {AWS_KEY}"}}')
        addon.websocket_message(flow)
    assert message.text == '{"delta": "your key is [REDACTED:aws-access-key-id]"}'
    turn = flow.metadata[METADATA_KEY]
    assert [
        (finding.where, finding.enforced) for finding in turn.findings if finding.rule == "aws-access-key-id"
    ] == [("websocket[3]", True)]
    assert turn.decision == "redacted"


def test_observe_mode_leaves_messages_alone() -> None:
    """Observe mode records the finding and forwards the message untouched."""
    addon, flow = inspected_websocket("observe")
    with taddons.context(addon):
        message = server_says(flow, f"key {AWS_KEY}")
        addon.websocket_message(flow)
    assert message.text == f"key {AWS_KEY}"
    turn = flow.metadata[METADATA_KEY]
    assert [finding.enforced for finding in turn.findings if finding.rule == "aws-access-key-id"] == [False]
    assert turn.decision == "allowed"
