"""The command line: check, ca export, and run's refusal of a bad policy."""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.commands.agentenv import DEFAULT_TOKEN_ENV, system_ca_file
from proxy.commands.cli import advertised_address, main
from proxy.config.paths import default_data_dir
from proxy.config.policy import default_policy_text
from tests.conftest import ENVIRONMENT_LEAKS
from tests.harness import free_port

BAD_POLICY = """\
mode: observe
agents:
  bot: {token_env: BOT_TOKEN, role: sales}
roles:
  support:
    egress: {allow: [api.openai.com], alow: [x]}
"""


def run_proxy(
    tmp_path: Path, policy: str, *options: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m proxy run` on this policy text, in its own process and working directory."""
    config = tmp_path / "policy.yaml"
    config.write_text(policy)
    return subprocess.run(
        [sys.executable, "-m", "proxy", "run", "--config", str(config), *options],
        capture_output=True,
        text=True,
        timeout=timeout,
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
    assert stat.S_IMODE(out.stat().st_mode) == 0o644  # agents under any user id can read it
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


WORKERS_RUN_S = 240
"""How long a run of two workers may take to start and stop: three processes that each load mitmproxy,
the policy and its detectors (8 s of CPU in all) took 34 s at a load of 15 on two cores. A hang is no
end at all."""


@pytest.mark.timeout(WORKERS_RUN_S + 30)
def test_a_worker_that_cannot_start_stops_the_run(tmp_path: Path) -> None:
    """With several workers, one that cannot start (its audit directory is a file) ends `run` with its
    status and stops the others, not a hang."""
    policy = f"data_dir: {tmp_path / 'data'}\nagents:\n  bot: {{token: t, role: r}}\nroles:\n  r: {{}}\n"
    (tmp_path / "data" / "audit").mkdir(parents=True)
    (tmp_path / "data" / "audit" / "w1").write_text("not a directory")
    result = run_proxy(tmp_path, policy, "--workers", "2", "--listen-port", "0", timeout=WORKERS_RUN_S)
    assert "audit log at" in result.stderr and "w1 cannot be opened" in result.stderr
    # The other worker may read the broken directory and give up first: the run ends with whichever
    # status came first, and the rest are stopped.
    assert result.returncode in (1, 2)
    assert f"exited with {result.returncode} before it served; stopping the others" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_bad_worker_counts_are_refused(
    tmp_path: Path, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--workers takes a positive number or auto."""
    with pytest.raises(SystemExit) as exited:
        main(["run", "--config", str(tmp_path / "p.yaml"), "--workers", value])
    assert exited.value.code == 2
    assert "--workers" in capsys.readouterr().err


def test_ca_export_bundle_holds_system_cas_then_egressguards(tmp_path: Path) -> None:
    """`ca export --bundle` writes the system's trusted CAs followed by egressguard's CA, so an agent's
    SSL_CERT_FILE still trusts hosts relayed without interception or listed in NO_PROXY."""
    confdir = tmp_path / "ca"
    certificate, bundle = tmp_path / "ca.pem", tmp_path / "bundle.pem"
    assert main(["ca", "export", "--out", str(certificate), "--set", f"confdir={confdir}"]) == 0
    assert main(["ca", "export", "--bundle", "--out", str(bundle), "--set", f"confdir={confdir}"]) == 0
    system = system_ca_file()
    assert system is not None
    text = bundle.read_text()
    assert text.startswith(system.read_text().rstrip("\n"))
    assert text.endswith(certificate.read_text())
    assert text.count("BEGIN CERTIFICATE") == system.read_text().count("BEGIN CERTIFICATE") + 1
    assert "PRIVATE KEY" not in text
    assert ssl.create_default_context(cafile=str(bundle)).cert_store_stats()["x509_ca"] > 1


def start_and_read_banner(tmp_path: Path, *arguments: str, env: dict[str, str]) -> str:
    """Start `egressguard run`, return what it printed up to its last banner line, and stop it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "run", "--listen-port", str(free_port()), *arguments],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    printed = []
    try:
        for line in process.stdout:
            printed.append(line)
            if line.startswith("  NODE_USE_ENV_PROXY") or process.poll() is not None:
                break
    finally:
        process.terminate()
        process.wait(timeout=10)
    return "".join(printed)


def agent_environ(**extra: str) -> dict[str, str]:
    return {
        **{name: value for name, value in os.environ.items() if name not in ENVIRONMENT_LEAKS},
        **extra,
    }


def test_copy_of_the_embedded_policy_runs_as_it_is(tmp_path: Path) -> None:
    """A copy of rules/default-policy.yaml checks clean and starts without EGRESSGUARD_AGENT_TOKEN set:
    the agent token is kept under the default data dir, as with the embedded policy."""
    copy = tmp_path / "policy.yaml"
    copy.write_text(default_policy_text())
    environ = {name: value for name, value in agent_environ().items() if name != DEFAULT_TOKEN_ENV}
    checked = subprocess.run(
        [sys.executable, "-m", "proxy", "check", str(copy)],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    banner = start_and_read_banner(tmp_path, "--config", str(copy), env=environ)
    token_file = default_data_dir(os.environ) / "agent.token"
    assert f"HTTPS_PROXY=http://agent:$(cat {token_file})@127.0.0.1:" in banner, banner
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    assert not (tmp_path / "egressguard-data").exists()  # nothing lands in the working directory


def test_banner_prints_the_advertised_address(tmp_path: Path) -> None:
    """Listening on every interface (as in a container), the banner gives the address agents dial."""
    environ = agent_environ(EGRESSGUARD_ADVERTISE="egressguard:8080", EGRESSGUARD_AGENT_TOKEN="t")
    banner = start_and_read_banner(tmp_path, "--listen-host", "0.0.0.0", env=environ)  # noqa: S104 - a container's listener
    assert " on 0.0.0.0:" in banner
    assert "HTTPS_PROXY=http://agent:$EGRESSGUARD_AGENT_TOKEN@egressguard:8080   # role default" in banner
    assert "HTTP_PROXY=http://agent:$EGRESSGUARD_AGENT_TOKEN@egressguard:8080\n" in banner
    assert "@0.0.0.0" not in banner


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (None, "127.0.0.1:8080"),
        ("guard", "guard:8080"),
        ("guard:3128", "guard:3128"),
        ("fd00::5", "[fd00::5]:8080"),
        ("[fd00::5]:3128", "[fd00::5]:3128"),
    ],
)
def test_advertised_address_forms(address: str | None, expected: str) -> None:
    """A host alone gets the listening port; a host with a port is taken as it is; IPv6 gets brackets."""
    assert advertised_address("127.0.0.1", 8080, address) == expected


def test_no_proxy_bypass_warned_by_check_and_run(tmp_path: Path) -> None:
    """A NO_PROXY entry covering an allowed model host is a warning at `check` and in the banner."""
    environ = agent_environ(NO_PROXY="localhost,.openai.com", EGRESSGUARD_AGENT_TOKEN="t")
    policy = tmp_path / "policy.yaml"
    policy.write_text(default_policy_text())
    checked = subprocess.run(
        [sys.executable, "-m", "proxy", "check", str(policy), "--no-proxy", "anthropic.com"],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert checked.returncode == 0
    assert "warning: NO_PROXY entry '.openai.com' sends 'api.openai.com'" in checked.stderr
    assert "warning: NO_PROXY entry 'anthropic.com' sends 'api.anthropic.com'" in checked.stderr
    assert "'localhost'" not in checked.stderr
    banner = start_and_read_banner(tmp_path, env=environ)
    assert "warning: NO_PROXY entry '.openai.com' sends 'api.openai.com'" in banner


def test_ca_export_needs_no_agent_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ca export --config` reads only the policy's data dir: it runs where the agents' token variables
    are not set (the sidecar's one-shot export container)."""
    monkeypatch.delenv("BOT_TOKEN", raising=False)
    policy = tmp_path / "policy.yaml"
    agents = "agents:\n  bot: {token_env: BOT_TOKEN, role: r}\nroles:\n  r: {}\n"
    policy.write_text(f"data_dir: {tmp_path / 'data'}\n{agents}")
    out = tmp_path / "ca.pem"
    assert main(["ca", "export", "--config", str(policy), "--out", str(out)]) == 0
    assert out.read_bytes() == (tmp_path / "data" / "ca" / "mitmproxy-ca-cert.pem").read_bytes()
