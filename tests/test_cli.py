"""The command line: check, ca export, and run's refusal of a bad policy."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.cli import main

BAD_POLICY = """\
mode: observe
agents:
  bot: {token_env: BOT_TOKEN, role: sales}
roles:
  support:
    egress: {allow: [api.openai.com], alow: [x]}
"""


def run_proxy(tmp_path: Path, policy: str, *options: str) -> subprocess.CompletedProcess[str]:
    """`python -m proxy run` on this policy text, in its own process and working directory."""
    config = tmp_path / "policy.yaml"
    config.write_text(policy)
    return subprocess.run(
        [sys.executable, "-m", "proxy", "run", "--config", str(config), *options],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )


def test_check_prints_every_problem_with_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`check` on a policy with an unknown key and an undefined role prints both, with lines, exit 2."""
    monkeypatch.setenv("BOT_TOKEN", "x")
    policy = tmp_path / "policy.yaml"
    policy.write_text(BAD_POLICY)
    assert main(["check", str(policy)]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert f"{policy}:6: unknown key 'alow' in roles.support.egress (known: allow, deny)" in errors
    assert f"{policy}:3: agent 'bot' names role 'sales', which is not defined under roles" in errors
    assert "Traceback" not in "\n".join(errors)


def test_check_accepts_a_good_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A valid policy checks clean with exit 0."""
    monkeypatch.setenv("BOT_TOKEN", "x")
    policy = tmp_path / "policy.yaml"
    policy.write_text(BAD_POLICY.replace("sales", "support").replace(", alow: [x]", ""))
    assert main(["check", str(policy)]) == 0
    assert "ok (1 agents, 1 roles" in capsys.readouterr().out


def test_ca_export_writes_certificate_never_key(tmp_path: Path) -> None:
    """`ca export` writes the CA certificate; the private key stays behind, readable by the owner only."""
    confdir = tmp_path / "ca"
    out = tmp_path / "ca.pem"
    assert main(["ca", "export", "--out", str(out), "--set", f"confdir={confdir}"]) == 0
    exported = out.read_text()
    assert exported.startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" not in exported
    key = confdir / "mitmproxy-ca.pem"
    assert "PRIVATE KEY" in key.read_text()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_ca_export_makes_an_existing_data_dir_private(tmp_path: Path) -> None:
    """A data dir created open to others is closed to the owner alone before keys go into it."""
    confdir = tmp_path / "shared" / "ca"
    confdir.mkdir(parents=True, mode=0o755)
    confdir.chmod(0o755)
    assert main(["ca", "export", "--out", str(tmp_path / "ca.pem"), "--set", f"confdir={confdir}"]) == 0
    assert stat.S_IMODE(confdir.stat().st_mode) == 0o700


def test_run_with_bad_policy_exits_2_without_traceback(tmp_path: Path) -> None:
    """`run` refuses to start on a bad policy, printing the problems, never a traceback."""
    result = run_proxy(tmp_path, BAD_POLICY)
    assert result.returncode == 2
    assert ":6: unknown key 'alow'" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_refuses_modes_without_agent_authentication(tmp_path: Path) -> None:
    """`--set mode=socks5` would let clients in without credentials: run refuses to start."""
    policy = "agents:\n  bot: {token: t, role: r}\nroles:\n  r: {}\n"
    result = run_proxy(tmp_path, policy, "--listen-port", "0", "--set", "mode=socks5")
    assert result.returncode == 2
    assert "mode 'socks5' would let clients in without agent credentials" in result.stderr
