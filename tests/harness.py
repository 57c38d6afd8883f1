"""Starts a real egressguard proxy as a subprocess on a free loopback port, with its own data dir."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

AGENT = "support-bot"
AGENT_TOKEN = "s3cret-support-token"
AGENT_TOKEN_ENV = "SUPPORT_BOT_TOKEN"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def policy_yaml(data_dir: Path, *, mode: str = "observe", extra: str = "") -> str:
    return textwrap.dedent(
        f"""\
        version: 1
        mode: {mode}
        data_dir: {data_dir}
        agents:
          {AGENT}: {{token_env: {AGENT_TOKEN_ENV}, role: support}}
        roles:
          support:
            egress: {{allow: [api.openai.com, api.anthropic.com, localhost]}}
        audit: {{path: {data_dir / "audit"}}}
        """
    ) + textwrap.dedent(extra)


class Proxy:
    """One egressguard process. ``url(agent, token)`` is what goes into an agent's HTTPS_PROXY."""

    def __init__(
        self,
        workdir: Path,
        upstream_ca: Path,
        *,
        policy: str | None = None,
        mode: str = "observe",
        args: tuple[str, ...] = (),
    ) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.policy_path = workdir / "policy.yaml"
        self.policy_path.write_text(policy or policy_yaml(self.data_dir, mode=mode))
        self.port = free_port()
        self.log_path = workdir / "proxy.log"
        env = {**os.environ, AGENT_TOKEN_ENV: AGENT_TOKEN}
        command = [
            sys.executable,
            "-m",
            "proxy",
            "run",
            "--config",
            str(self.policy_path),
            "--listen-port",
            str(self.port),
            "--set",
            f"ssl_verify_upstream_trusted_ca={upstream_ca}",
            *args,
        ]
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self._wait_until_listening()

    def _wait_until_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"egressguard exited early:\n{self.output()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"egressguard did not start listening:\n{self.output()}")

    @property
    def ca_cert(self) -> Path:
        return self.data_dir / "ca" / "mitmproxy-ca-cert.pem"

    def url(self, agent: str = AGENT, token: str = AGENT_TOKEN) -> str:
        return f"http://{agent}:{token}@127.0.0.1:{self.port}"

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def audit_records(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for path in sorted((self.data_dir / "audit").glob("*.jsonl")):
            records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return records

    def wait_for_records(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Audit events are written when a flow ends, which can trail the client's last byte a little."""
        deadline = time.monotonic() + timeout
        while True:
            records = [record for record in self.audit_records() if record.get("type") == "agent.turn"]
            if len(records) >= count or time.monotonic() > deadline:
                return records
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
