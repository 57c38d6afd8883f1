"""The gate a streamed answer's tool calls pass: which calls it holds from their name until their arguments
end (destructive ones where ``tool_abuse`` is enforced, reading tools' where ``credential_theft`` is), and
what it decides on those arguments."""

from __future__ import annotations

import json
import textwrap

import pytest

from proxy.config.policy import parse_policy
from proxy.dialects import ToolGate
from proxy.exchange import ToolCall
from proxy.inspection import Detectors, TurnInspector
from proxy.state import SqliteStateStore
from proxy.turn import Turn, TurnContext

WHERE = "choices[0].delta.tool_calls[0]"
CREDENTIAL_PATHS = ["/home/u/.aws/credentials", "~/.ssh/id_rsa", "/srv/app/.env", "/root/.kube/config"]
EVERYDAY_PATHS = ["README.md", "src/config.py", "docs/environment.md", "package.json", ".env.example"]


def _inspector(mode: str, threats: str = "") -> TurnInspector:
    text = textwrap.dedent(f"""\
        mode: {mode}
        agents:
          bot: {{token: t, role: ops}}
        roles:
          ops: {{}}
        """) + (f"threats: {{{threats}}}\n" if threats else "")
    policy = parse_policy(text, "policy.yaml", environ={})
    turn = Turn(TurnContext(agent_id="bot", role="ops", user_id="u", purpose="p", consent_id="c"))
    return TurnInspector(Detectors(policy, b"k" * 32), policy, SqliteStateStore(None), turn)


def _gate(inspector: TurnInspector) -> ToolGate:
    gate = inspector.stream_filters().tool_gate
    assert gate is not None
    return gate


def _call(name: str, path: str = "") -> ToolCall:
    return ToolCall(name=name, id="call_1", arguments=json.dumps({"path": path}) if path else "", where=WHERE)


@pytest.mark.parametrize("name", ["read_file", "cat", "bash", "files__open"])
def test_a_reading_tool_is_held_from_its_name_where_credential_theft_is_enforced(name: str) -> None:
    assert _gate(_inspector("enforce"))(_call(name), False) == "hold"
    assert _gate(_inspector("observe", "credential_theft: enforce"))(_call(name), False) == "hold"


@pytest.mark.parametrize("name", ["get_weather", "lookup_order", "summarise"])
def test_a_call_neither_reading_nor_destructive_streams_on_from_its_name(name: str) -> None:
    assert _gate(_inspector("enforce"))(_call(name), False) == "release"


@pytest.mark.parametrize("path", CREDENTIAL_PATHS)
def test_a_held_read_of_credential_material_is_dropped_for_the_credential_notice(path: str) -> None:
    inspector = _inspector("enforce")
    call = _call("read_file", path)
    assert _gate(inspector)(call, True) == "drop"
    notice = inspector.stream_filters().drop_notice
    assert notice is not None
    text = notice(call)
    assert text is not None
    assert "`read_file` was withheld" in text and "credential material" in text
    assert path not in text


@pytest.mark.parametrize("path", EVERYDAY_PATHS)
def test_a_held_read_of_everyday_files_is_released(path: str) -> None:
    assert _gate(_inspector("enforce"))(_call("read_file", path), True) == "release"


def test_a_reading_tool_streams_on_where_credential_theft_is_only_observed() -> None:
    """Only ``tool_abuse`` enforced: a read is released at its name, and even whole it is not dropped
    (observe records it when the stream ends)."""
    gate = _gate(_inspector("observe", "tool_abuse: enforce"))
    assert gate(_call("read_file"), False) == "release"
    assert gate(_call("read_file", CREDENTIAL_PATHS[0]), True) == "release"
    assert gate(_call("delete_customer"), False) == "hold"


def test_a_destructive_call_is_not_held_where_only_credential_theft_is_enforced() -> None:
    gate = _gate(_inspector("observe", "credential_theft: enforce"))
    assert gate(_call("delete_customer"), False) == "release"


def test_no_gate_where_neither_threat_is_enforced() -> None:
    assert _inspector("observe").stream_filters().tool_gate is None
