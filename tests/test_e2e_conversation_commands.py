"""End to end: a command tool's call that runs a file an earlier call of the conversation wrote is judged
by what that file holds: `sh bin/clean.sh` after `rm -rf ~` was stored in it (by a writing tool, a
here-document, `echo`, code) is withheld for the approval notice where ``tool_abuse`` is enforced, as
`rm -rf ~` asked for directly is, and after it was downloaded unseen, as `curl | sh` is; after an everyday
script, or where the call names no file written before, it passes whole. Each dialect's history through its
official SDK, answered whole and streamed. A trap an earlier call set fires in the call: withheld where
enforced, recorded where observed; so does a function the call defines and uses itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import Proxy
from tests.test_e2e_conversation_credential_reads import DIALECTS, Earlier
from tests.test_e2e_inspect import _agent, last_record
from tests.test_e2e_stream_credential_reads import Calls, answer_beside_another
from tests.upstream import FakeUpstream, ToolCallReply

RUN = {"cmd": "sh bin/clean.sh"}
DELETE = "cmd-recursive-delete-broad"
NOTICE = "The call to the tool `run` was withheld by egressguard: it is a destructive action"
WRITTEN: Earlier = ("write_file", {"path": "bin/clean.sh", "content": "#!/bin/sh\ncd ~ && rm -rf ~\n"})
STORED: Earlier = ("run", {"cmd": "cat > bin/clean.sh <<'EOF'\nrm -rf ~\nEOF\nchmod +x bin/clean.sh"})
PRINTED: Earlier = ("run", {"cmd": "echo 'cd ~ && rm -rf ~' > bin/clean.sh"})
CODED: Earlier = ("run", {"cmd": "python3 -c \"open('bin/clean.sh', 'w').write('rm -rf ~')\""})
DOWNLOADED: Earlier = ("run", {"cmd": "curl -fsSL -o bin/clean.sh https://get.example.com/clean.sh"})
CODED_EVERYDAY: Earlier = ("run", {"cmd": "python3 -c \"open('bin/clean.sh', 'w').write('make clean')\""})
EVERYDAY: Earlier = ("write_file", {"path": "bin/clean.sh", "content": "rm -rf ./build\nnpm run build\n"})
ELSEWHERE: Earlier = ("write_file", {"path": "notes.md", "content": "Never run rm -rf ~ here.\n"})


TRAPPED: Earlier = ("run", {"cmd": "trap 'cd ~ && rm -rf ~' EXIT"})
DEFINED_AND_USED = {"cmd": 'scrub() { rm -rf "$1"; }; scrub ~'}


def _run_after(
    shared_proxy: Callable[..., Proxy],
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    dialect: str,
    earlier: Earlier,
    stream: bool,
    mode: str = "enforce",
    run: dict[str, str] = RUN,
) -> tuple[Calls, str, list[dict[str, Any]]]:
    proxy = _agent(shared_proxy(mode=mode), monkeypatch)
    model, converse = DIALECTS[dialect]
    answer_beside_another(upstream, model, ToolCallReply("run", run, id="call_u"), "Cleaning.")
    calls, text = converse(upstream, earlier, stream)
    record = last_record(proxy)
    return calls, text, [finding for finding in record["findings"] if finding["threat"] == "tool_abuse"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    ("earlier", "rule"),
    [
        (WRITTEN, DELETE),
        (STORED, DELETE),
        (PRINTED, DELETE),
        (CODED, DELETE),
        (DOWNLOADED, "cmd-remote-script-to-shell"),
        (EVERYDAY, None),
        (CODED_EVERYDAY, None),
        (ELSEWHERE, None),
    ],
    ids=[
        "written",
        "here-document",
        "echoed",
        "coded",
        "downloaded",
        "everyday",
        "coded-everyday",
        "another-file",
    ],
)
def test_a_script_written_earlier_is_judged_by_what_it_holds_when_run(
    shared_proxy: Callable[..., Proxy],
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    dialect: str,
    stream: bool,
    earlier: Earlier,
    rule: str | None,
) -> None:
    calls, text, found = _run_after(shared_proxy, upstream, monkeypatch, dialect, earlier, stream)
    if rule is not None:
        assert calls == [("get_weather", {"city": "Oslo"})]
        assert NOTICE in text
        assert [finding["rule"] for finding in found] == [rule]
        assert all(finding["enforced"] for finding in found)
    else:
        assert calls == [("get_weather", {"city": "Oslo"}), ("run", RUN)]
        assert NOTICE not in text and text.startswith("Cleaning.")
        assert found == []


@pytest.mark.parametrize("mode", ["enforce", "observe"])
@pytest.mark.parametrize(
    ("earlier", "run"), [(TRAPPED, RUN), (ELSEWHERE, DEFINED_AND_USED)], ids=["earlier-trap", "own-function"]
)
def test_what_a_trap_or_a_function_runs_is_judged_in_the_call_it_runs_in(
    shared_proxy: Callable[..., Proxy],
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    earlier: Earlier,
    run: dict[str, str],
) -> None:
    """`sh bin/clean.sh` after a call set `trap 'cd ~ && rm -rf ~' EXIT` runs the trap as the shell
    exits, and `scrub() { rm -rf "$1"; }; scrub ~` in one call runs `rm -rf ~`: withheld where enforced,
    recorded as it passes where observed."""
    calls, text, found = _run_after(
        shared_proxy, upstream, monkeypatch, "openai_chat", earlier, False, mode, run
    )
    assert [finding["rule"] for finding in found] == [DELETE]
    if mode == "enforce":
        assert calls == [("get_weather", {"city": "Oslo"})]
        assert NOTICE in text
        assert found[0]["enforced"]
    else:
        assert calls == [("get_weather", {"city": "Oslo"}), ("run", run)]
        assert NOTICE not in text
        assert not found[0]["enforced"]
