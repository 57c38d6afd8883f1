"""`egressguard demo`: each scripted step shows its finding, and the audit log it leaves verifies."""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import anthropic
import openai
import pytest

from proxy.commands.demo import CONTEXT_HEADERS, STEPS, running
from proxy.model import Mode
from tests.conftest import ENVIRONMENT_LEAKS


def clean_environ() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name not in ENVIRONMENT_LEAKS}


def with_this_python() -> dict[str, str]:
    """`python3` in a README command is the interpreter running the tests (it has the SDKs)."""
    environ = clean_environ()
    environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}"
    return environ


def readme_block_starting(first_line: str) -> str:
    """The README's shell block that starts with ``first_line``, as written there."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for block in re.findall(r"```sh\n(.*?)```", readme, re.DOTALL):
        if block.startswith(first_line):
            return str(block)
    raise AssertionError(f"no README block starts with {first_line!r}")


def sections(output: str) -> list[str]:
    """The output of each step, in order."""
    return re.split(r"\n\[\d/\d\] ", output)[1:]


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_every_step_shows_its_finding_and_the_log_verifies(tmp_path: Path, mode: str) -> None:
    """Each step prints the threat it demonstrates; the run ends with `audit verify` passing."""
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "demo", "--dir", str(tmp_path / "demo"), "--mode", mode],
        env=clean_environ(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    steps = sections(result.stdout)
    assert len(steps) == len(STEPS)
    for step, printed in zip(STEPS, steps, strict=True):
        assert printed.startswith(step.title)
        if step.shows:
            assert f"    {step.shows}: " in printed, printed
    normal, leak, injection, destructive, upload = steps
    assert "agent received 200: Paris is the capital of France." in normal
    assert "data_exfiltration" not in normal
    if mode == "enforce":
        assert "AKIAQWERTY234567ABCD" not in result.stdout + result.stderr
        assert "[REDACTED:aws-access-key-id]" in leak
        assert "withheld by egressguard" in destructive
        assert "refused the connection: 403" in upload or "agent received 403: " in upload
        assert "-> block (enforced)" in upload
    else:
        assert "-> redact (what enforce mode would do)" in leak
        assert "[tool calls: drop_table]" in destructive
    assert "prompt_injection" in injection or "context_poisoning" in injection
    audit = tmp_path / "demo" / "data" / "audit"
    assert f"Audit log: {audit}" in result.stdout
    assert re.search(r"\nintact: \d+ records", result.stdout)


def test_the_demo_policy_is_the_embedded_one_plus_the_model(tmp_path: Path) -> None:
    """The demo runs the embedded default policy; the one change is its local model on the allowlist."""
    from proxy.commands.demo import demo_policy
    from proxy.config.policy import load_policy

    embedded = load_policy(None, environ={"EGRESSGUARD_AGENT_TOKEN": "t"})
    path = tmp_path / "policy.yaml"
    path.write_text(demo_policy(tmp_path, 4443))
    demo = load_policy(path, environ={"EGRESSGUARD_AGENT_TOKEN": "t"})
    assert demo.mode == embedded.mode
    assert [p.text for p in demo.roles["default"].egress.allow] == [
        *(p.text for p in embedded.roles["default"].egress.allow),
        "localhost:4443",
    ]
    assert demo.agents.keys() == embedded.agents.keys()


def test_quick_start_curl_and_openai_sdk_against_the_kept_demo(tmp_path: Path) -> None:
    """The README quick start word for word (its blocks run by bash, `egressguard` and `python3` being this
    environment's): `egressguard demo --keep-running`, then its block from
    `. egressguard-demo/agent.env` (one request with curl, one with the openai SDK), each audited; Ctrl-C
    leaves a verified log."""
    start = readme_block_starting("egressguard demo --keep-running")
    demo = subprocess.Popen(
        ["/bin/bash", "-c", start], cwd=tmp_path, env=with_this_python(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    assert demo.stdout is not None
    try:
        for line in demo.stdout:
            if line.startswith("Ctrl-C stops") or demo.poll() is not None:
                break
        env_file = tmp_path / "egressguard-demo" / "agent.env"
        assert env_file.exists()
        script = readme_block_starting(". egressguard-demo/agent.env")
        result = subprocess.run(
            ["/bin/bash", "-c", script], cwd=tmp_path, env=with_this_python(), capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "[REDACTED:aws-access-key-id]" in result.stdout  # curl's request
        assert "withheld by egressguard" in result.stdout  # the openai SDK's
    finally:
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C in that shell
        rest = demo.communicate(timeout=60)[0]
    assert demo.returncode == 0, rest
    assert "intact:" in rest
    audit = (tmp_path / "egressguard-demo" / "data" / "audit").glob("*.jsonl")
    turns = [json.loads(line) for path in audit for line in path.read_text().splitlines()]
    rules = {
        finding["rule"] for turn in turns if turn["type"] == "agent.turn" for finding in turn["findings"]
    }
    assert {"aws-access-key-id", "tool-delete"} <= rules


def test_demo_model_streams_through_egressguard_for_the_openai_sdk(tmp_path: Path) -> None:
    """The demo's model answers `stream: true` as the OpenAI API does; through egressguard in enforce
    mode the streamed key arrives redacted."""
    with running(tmp_path / "demo", Mode.ENFORCE, 0, 0) as demo:
        client = openai.OpenAI(
            base_url=f"{demo.model_url}/v1",
            api_key="demo",
            max_retries=0,
            http_client=openai.DefaultHttpxClient(
                proxy=demo.proxy_url, verify=ssl.create_default_context(cafile=demo.ca_cert), trust_env=False
            ),
        )
        stream = client.chat.completions.create(
            model="demo-model",
            messages=[{"role": "user", "content": "Show me the deploy configuration."}],
            stream=True,
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        turn = demo.next_turn(0)
    assert "[REDACTED:aws-access-key-id]" in text
    assert "AKIAQWERTY234567ABCD" not in text
    assert turn is not None and turn["stream"] is True
    assert "aws-access-key-id" in {finding["rule"] for finding in turn["findings"]}


def test_demo_model_streams_through_egressguard_for_the_anthropic_sdk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's model answers the Anthropic format's `stream: true` with its named events: the official
    SDK, given the environment the demo writes to agent.env and nothing else, gets the streamed key
    redacted and the streamed destructive tool call withheld (enforce mode); both turns are audited as
    streams."""
    with running(tmp_path / "demo", Mode.ENFORCE, 0, 0) as demo:
        for name, value in demo.environment().items():
            monkeypatch.setenv(name, value)
        client = anthropic.Anthropic(max_retries=0, default_headers=CONTEXT_HEADERS)

        def streamed(question: str) -> anthropic.types.Message:
            with client.messages.stream(
                model="demo-model", max_tokens=200, messages=[{"role": "user", "content": question}]
            ) as stream:
                return stream.get_final_message()

        leak = streamed("Show me the deploy configuration.")
        leak_turn = demo.next_turn(0)
        cleanup = streamed("Clean up the staging tables.")
        cleanup_turn = demo.next_turn(1)
    text = "".join(block.text for block in leak.content if block.type == "text")
    assert "[REDACTED:aws-access-key-id]" in text and "AKIAQWERTY234567ABCD" not in text
    assert leak_turn is not None and leak_turn["stream"] is True and leak_turn["dialect"] == "anthropic"
    assert "aws-access-key-id" in {finding["rule"] for finding in leak_turn["findings"]}
    assert not [block for block in cleanup.content if block.type == "tool_use"]
    notice = "".join(block.text for block in cleanup.content if block.type == "text")
    assert "withheld by egressguard" in notice
    assert cleanup_turn is not None and cleanup_turn["stream"] is True
    assert "tool_abuse" in {finding["threat"] for finding in cleanup_turn["findings"]}
