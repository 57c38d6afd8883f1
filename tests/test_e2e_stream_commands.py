"""End to end: a command tool's call is judged by what its arguments run. Streamed in 5-character deltas
through each streamed dialect's official SDK, a destructive command (`run {"cmd": "cd /tmp && rm -rf ~"}`,
and the same in base64 piped to a shell) is held until its arguments end and withheld for the approval
notice where ``tool_abuse`` is enforced, recorded in observe mode, while an everyday command streams
through whole; a call whose name carries a key is withheld where ``data_exfiltration`` is enforced."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from tests.harness import Proxy
from tests.test_e2e_inspect import _agent, ask, last_record, openai_client
from tests.test_e2e_stream_credential_reads import DIALECTS, Calls, stream_call
from tests.upstream import FakeUpstream, Reply, ToolCallReply

DESTRUCTIVE = {"cmd": "cd /tmp && rm -rf ~"}
ENCODED = {"cmd": f"echo {base64.b64encode(b'rm -rf /').decode()} | base64 -d | bash"}
EVERYDAY = {"cmd": "rm -rf ./build && npm run build"}
NOTICE = "The call to the tool `run` was withheld by egressguard: it is a destructive action"
KEY = "ghp_" + "x7Kq2LmN9pR4sT6vW8yZ1aB3cD5eF7gH9jK0"


Run = Callable[[str, str, dict[str, Any]], tuple[Calls, str, dict[str, Any]]]


@pytest.fixture(params=list(DIALECTS), ids=list(DIALECTS))
def run(
    request: pytest.FixtureRequest,
    start_proxy: Callable[..., Proxy],
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> Run:
    """In each streamed dialect: ``run(mode, name, arguments)`` streams a call of ``name`` with
    ``arguments`` beside another through a proxy in ``mode``; what the SDK got, and the turn's record."""

    def streamed(mode: str, name: str, arguments: dict[str, Any]) -> tuple[Calls, str, dict[str, Any]]:
        call = ToolCallReply(name, arguments, id="call_r")
        return stream_call(start_proxy, upstream, monkeypatch, mode, request.param, call, "Running.")

    return streamed


def _found(record: dict[str, Any], threat: str) -> list[dict[str, Any]]:
    return [finding for finding in record["findings"] if finding["threat"] == threat]


@pytest.mark.parametrize("arguments", [DESTRUCTIVE, ENCODED], ids=["plain", "base64"])
def test_a_streamed_destructive_command_is_withheld_where_enforced(
    run: Run, arguments: dict[str, str]
) -> None:
    calls, text, record = run("enforce", "run", arguments)
    assert calls == [("get_weather", {"city": "Oslo"})]
    assert NOTICE in text and "rm -rf" not in text
    found = _found(record, "tool_abuse")
    assert found and all(finding["enforced"] for finding in found)
    assert {finding["rule"] for finding in found} <= {"cmd-recursive-delete-broad", "cmd-decoded-to-shell"}
    assert all(finding["extra"].get("pending_approval") for finding in found)


def test_a_streamed_destructive_command_is_recorded_in_observe_mode(run: Run) -> None:
    calls, text, record = run("observe", "run", DESTRUCTIVE)
    assert calls == [("get_weather", {"city": "Oslo"}), ("run", DESTRUCTIVE)]
    assert NOTICE not in text
    found = _found(record, "tool_abuse")
    assert [finding["rule"] for finding in found] == ["cmd-recursive-delete-broad"]
    assert not found[0]["enforced"]


def test_a_streamed_everyday_command_passes_intact(run: Run) -> None:
    calls, text, record = run("enforce", "run", EVERYDAY)
    assert calls == [("get_weather", {"city": "Oslo"}), ("run", EVERYDAY)]
    assert NOTICE not in text and text.startswith("Running.")
    assert not _found(record, "tool_abuse")


def test_a_streamed_call_whose_name_carries_a_key_is_withheld(run: Run) -> None:
    calls, text, record = run("enforce", f"drop_table_{KEY}", {"table": "t"})
    assert calls == [("get_weather", {"city": "Oslo"})]
    assert "its name carries a secret" in text and KEY not in text
    found = [finding for finding in _found(record, "data_exfiltration") if finding["action"] == "withhold"]
    assert found and all(finding["enforced"] for finding in found)
    assert KEY not in json.dumps(record)


def _json_answer(upstream: FakeUpstream, calls: list[tuple[str, dict[str, Any]]]) -> tuple[Calls, str]:
    """A Chat answer calling these tools, as the OpenAI SDK reads it through the proxy: the calls that
    passed, with their arguments, and the answer's text."""
    upstream.reply = Reply(
        text="",
        tool_calls=[
            ToolCallReply(name, arguments, id=f"c{number}") for number, (name, arguments) in enumerate(calls)
        ],
        model="m",
    )
    message = openai_client(upstream).chat.completions.create(model="m", messages=ask()).choices[0].message
    called = message.tool_calls or []
    functions = [call for call in called if isinstance(call, ChatCompletionMessageFunctionToolCall)]
    assert len(functions) == len(called)
    return [
        (call.function.name, json.loads(call.function.arguments)) for call in functions
    ], message.content or ""


def test_a_json_answer_s_destructive_command_is_withheld_and_its_sql_twin_without_where_too(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not streamed: a Chat answer's `python` call removing the home folder and `sql` call deleting every
    row are withheld, a `sql` call deleting one row passes."""
    proxy = _agent(start_proxy(mode="enforce"), monkeypatch)
    code = {"code": "import shutil, os\nshutil.rmtree(os.path.expanduser('~'))"}
    one_row = {"query": "DELETE FROM users WHERE id = 5"}
    sent, text = _json_answer(
        upstream, [("python", code), ("sql", {"query": "DELETE FROM users"}), ("sql", one_row)]
    )
    assert sent == [("sql", one_row)]
    assert "`python` was withheld" in text and "`sql` was withheld" in text
    rules = {finding["rule"] for finding in _found(last_record(proxy), "tool_abuse")}
    assert rules == {"code-recursive-delete-broad", "cmd-sql-destructive"}


def test_a_disguised_command_is_withheld_and_quoted_or_scratch_ones_pass(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not streamed, through the OpenAI SDK in enforce mode: `rm` spelled in ANSI-C escapes and a command
    in the `command` field of a tool of no command name are withheld; a search for `rm -rf /` and a
    scratch table's drop pass, the drop noted in the record."""
    proxy = _agent(start_proxy(mode="enforce"), monkeypatch)
    search = {"command": "grep -rn 'rm -rf /' ."}
    scratch = {"query": "DROP TABLE IF EXISTS tmp_orders"}
    sent, text = _json_answer(
        upstream,
        [
            ("bash", {"command": "$'\\x72\\x6d' -rf /"}),
            ("my_tool", {"command": "r''m -rf ~"}),
            ("run", search),
            ("sql", scratch),
        ],
    )
    assert sent == [("run", search), ("sql", scratch)]
    assert "`bash` was withheld" in text and "`my_tool` was withheld" in text
    found = {finding["rule"]: finding for finding in _found(last_record(proxy), "tool_abuse")}
    assert set(found) == {"cmd-recursive-delete-broad", "cmd-sql-scratch-table"}
    assert found["cmd-recursive-delete-broad"]["action"] == "withhold"
    assert found["cmd-sql-scratch-table"]["action"] == "flag"
    assert found["cmd-sql-scratch-table"]["severity"] == "medium"
