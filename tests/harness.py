"""Starts a real egressguard proxy as a subprocess on a free loopback port, with its own data dir."""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import queue
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import openai

CGROUP_MEMORY = Path("/sys/fs/cgroup/memory")
IDLE_ADDRESS_SPACE = 1 << 30
"""An idle proxy maps about this much address space (thread stacks, allocator arenas), little of it used."""

BANNER_MARK = b"Set in each agent's environment:"
"""A line of the banner a proxy prints once its options are accepted."""

AGENT = "support-bot"
AGENT_TOKEN = "s3cret-support-token"
AGENT_TOKEN_ENV = "SUPPORT_BOT_TOKEN"
CLIENT_TIMEOUT_S = 60
"""What a raw HTTP client of the tests waits for an answer: the first request through a fresh proxy took
3.4 s at a load of 17 on two cores, where httpx's own 5 s leaves little to spare."""


def proxy_authorization(agent: str = AGENT, token: str = AGENT_TOKEN) -> bytes:
    """The header line an agent sends with each CONNECT or plain-HTTP request."""
    return b"Proxy-Authorization: Basic " + base64.b64encode(f"{agent}:{token}".encode()) + b"\r\n"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def policy_yaml(
    data_dir: Path,
    *,
    mode: str = "observe",
    allow: str = "[api.openai.com, api.anthropic.com, 'localhost:*']",
    tools: str = "{}",
    extra: str = "",
    other_agent: str = "",
    audit: str = "",
    pool: int = 0,
) -> str:
    """``tools`` is the support role's tools section (flow style); ``extra`` is appended at the top level;
    ``other_agent`` names a second agent of the same role, whose token is its name reversed; ``audit``
    adds settings to the audit section (flow style, after its path); ``pool`` adds that many agents of the
    same role (``pool_agent``)."""
    indent = "\n" + " " * 10  # the agents' indentation in the template below, before it is dedented
    other = f"{indent}{other_agent}: {{token: {other_agent[::-1]}, role: support}}" if other_agent else ""
    other += "".join(
        f"{indent}{pool_agent(number)}: {{token_env: {pool_token_env(number)}, role: support}}"
        for number in range(pool)
    )
    return textwrap.dedent(
        f"""\
        version: 1
        mode: {mode}
        data_dir: {data_dir}
        agents:
          {AGENT}: {{token_env: {AGENT_TOKEN_ENV}, role: support}}{other}
        roles:
          support:
            egress: {{allow: {allow}}}
            tools: {tools}
        audit: {{path: {data_dir / "audit"}{f", {audit}" if audit else ""}}}
        """
    ) + textwrap.dedent(extra)


def pool_agent(number: int) -> str:
    return f"{AGENT}-{number}"


def pool_token_env(number: int) -> str:
    return f"{AGENT_TOKEN_ENV}_{number}"


def pool_token(number: int) -> str:
    return f"{AGENT_TOKEN}-{number}"


class ForkedProcess:
    """An egressguard process the fork server started: what the tests use of ``subprocess.Popen``."""

    def __init__(self, server: ForkServer, pid: int) -> None:
        self.server = server
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        code = self.server.wait(self.pid, timeout)
        if code is None:
            raise subprocess.TimeoutExpired(f"egressguard (pid {self.pid})", timeout or 0.0)
        self.returncode = code
        return code

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """``tests/forkserver.py``: a Python with egressguard imported and its detectors built once, which
    forks each proxy a test starts (a fresh interpreter spends most of a proxy's start on just that).
    One a test process, started with its first proxy."""

    _shared: ForkServer | None = None
    _shared_lock = threading.Lock()

    @classmethod
    def shared(cls) -> ForkServer:
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
                atexit.register(cls._shared.close)
            return cls._shared

    def __init__(self) -> None:
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 - held open for the server's life
        self._process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("forkserver.py"))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errors,
        )  # fmt: skip
        self._lock = threading.Lock()
        self._started: queue.Queue[dict[str, Any]] = queue.Queue()
        self._exits: dict[int, int] = {}
        self._exited = threading.Condition()
        assert self._process.stdout is not None
        if json.loads(self._process.stdout.readline() or "{}").get("ready") is not True:
            raise RuntimeError(f"the fork server did not start:\n{self._error_text()}")
        threading.Thread(target=self._read_replies, name="fork-server-replies", daemon=True).start()

    def _error_text(self) -> str:
        self._errors.seek(0)
        return self._errors.read().decode(errors="replace")

    def _read_replies(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            reply = json.loads(line)
            if "exited" in reply:
                with self._exited:
                    self._exits[reply["exited"]] = reply["code"]
                    self._exited.notify_all()
            else:
                with self._exited:
                    # The exit of an earlier process that had this pid (pids are reused) is not this one's.
                    self._exits.pop(reply.get("pid"), None)
                self._started.put(reply)
        self._started.put({"error": f"the fork server exited:\n{self._error_text()}"})

    def start(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> ForkedProcess:
        """Run ``egressguard`` with ``argv`` in a forked process, its output appended to ``log``."""
        request = {"argv": argv, "env": env, "cwd": str(cwd), "log": str(log)}
        with self._lock:
            assert self._process.stdin is not None
            self._process.stdin.write(json.dumps(request).encode() + b"\n")
            self._process.stdin.flush()
            reply = self._started.get(timeout=30)
        if "pid" not in reply:
            raise RuntimeError(reply.get("error", reply))
        return ForkedProcess(self, int(reply["pid"]))

    def exit_code(self, pid: int) -> int | None:
        with self._exited:
            return self._exits.get(pid)

    def wait(self, pid: int, timeout: float | None) -> int | None:
        with self._exited:
            self._exited.wait_for(lambda: pid in self._exits, timeout)
            return self._exits.get(pid)

    def close(self) -> None:
        """Closing its stdin ends the server, which ends the processes it forked that still run."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(timeout=30)


HOME_NETWORK = os.stat("/proc/thread-self/ns/net").st_ino
"""The network namespace the tests start in (the fork server's)."""


def _in_own_network_namespace() -> bool:
    """Whether this thread has entered a network namespace other than the one the tests start in."""
    return os.stat("/proc/thread-self/ns/net").st_ino != HOME_NETWORK


class Proxy:
    """One egressguard process. ``url(agent, token)`` is what goes into an agent's HTTPS_PROXY."""

    def __init__(
        self,
        workdir: Path,
        upstream_ca: Path,
        *,
        args: tuple[str, ...] = (),
        memory_limit: int | None = None,
        hosts: dict[str, str] | None = None,
        listen_host: str = "127.0.0.1",
        pool: int = 0,
        **policy_options: str,
    ) -> None:
        """``policy_options`` (mode, allow, tools, extra, audit) shape the policy; see ``policy_yaml``.
        ``pool`` declares that many more agents, which ``take_pool_agent`` hands out one at a time.
        ``memory_limit`` runs the process in a memory cgroup of that many bytes, which kills it past the
        limit as a container would; where no cgroup can be made, RLIMIT_AS caps its address space at the
        limit plus the ~1 GiB of address space an idle proxy maps. ``hosts`` (name: address) is what the
        proxy's resolver answers for those names, through an ``/etc/hosts`` of its own in a mount namespace
        of its own, so a test can call a provider's real host name and reach the fake upstream."""
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.policy_path = workdir / "policy.yaml"
        self.policy_path.write_text(policy_yaml(self.data_dir, pool=pool, **policy_options))
        self.pool = pool
        self.agent = AGENT
        """The agent ``url`` and the clients made here speak as."""
        self.agent_token = AGENT_TOKEN
        self._pool_taken = 0
        self._records_forgotten = 0
        self.upstream_ca = upstream_ca
        self.args = args
        self.memory_limit = memory_limit
        self.hosts = hosts or {}
        self.listen_host = listen_host
        self.cgroup: Path | None = None
        self.log_path = workdir / "proxy.log"
        self._log = self.log_path.open("ab")
        self.start()

    def start(self) -> None:
        self.port = free_port()
        self._log.flush()
        self._output_before_start = self.log_path.stat().st_size
        env = {
            **os.environ,
            AGENT_TOKEN_ENV: AGENT_TOKEN,
            **{pool_token_env(number): pool_token(number) for number in range(self.pool)},
        }
        arguments = [
            "run",
            "--config",
            str(self.policy_path),
            "--listen-host",
            self.listen_host,
            "--listen-port",
            str(self.port),
            "--set",
            f"ssl_verify_upstream_trusted_ca={self.upstream_ca}",
            # One process unless a test asks for workers (the default is one per core).
            *([] if "--workers" in self.args else ["--workers", "1"]),
            *self.args,
        ]
        self.process: subprocess.Popen[bytes] | ForkedProcess
        if (
            self.memory_limit is None
            and not self.hosts
            and "--workers" not in self.args
            and not _in_own_network_namespace()
        ):
            self.process = ForkServer.shared().start(arguments, env, self.workdir, self.log_path)
        else:
            # A memory limit applies to a command of its own; several workers start their own
            # interpreters (``spawn``), which a fresh ``python -m proxy`` sets up as it does in use; a
            # test that entered a network namespace starts the proxy in it, where the server is not.
            command = [*self._limit_memory(), *self._own_hosts(), sys.executable, "-m", "proxy", *arguments]
            self.process = subprocess.Popen(
                command, cwd=self.workdir, env=env, stdout=self._log, stderr=subprocess.STDOUT
            )
        try:
            self._wait_until_listening()
        except RuntimeError:
            self._terminate()  # no test holds a proxy that failed to start, so none would stop it
            raise

    def _limit_memory(self) -> list[str]:
        """The command prefix that puts the proxy under ``memory_limit``."""
        if self.memory_limit is None:
            return []
        cgroup = CGROUP_MEMORY / f"egressguard-test-{os.getpid()}-{self.port}"
        try:
            cgroup.mkdir()
            (cgroup / "memory.limit_in_bytes").write_text(str(self.memory_limit))
        except OSError:
            return ["prlimit", f"--as={self.memory_limit + IDLE_ADDRESS_SPACE}", "--"]
        self.cgroup = cgroup
        return ["sh", "-c", f'echo $$ > {cgroup / "cgroup.procs"} && exec "$@"', "sh"]

    def _own_hosts(self) -> list[str]:
        """The command prefix that gives the proxy ``hosts`` as its ``/etc/hosts``."""
        if not self.hosts:
            return []
        hosts_file = self.workdir / "hosts"
        lines = [f"{address} {name}" for name, address in self.hosts.items()]
        hosts_file.write_text("\n".join(["127.0.0.1 localhost", *lines, ""]))
        return [
            "unshare",
            "--mount",
            "--",
            "sh",
            "-c",
            f'mount --bind {hosts_file} /etc/hosts && exec "$@"',
            "sh",
        ]

    def restart(self) -> None:
        """Stop and start again on the same policy and data dir (a new port)."""
        self._terminate()
        self.start()

    def _wait_until_listening(self, timeout: float = 90.0) -> None:
        """Ready means this start of the proxy has accepted its options (the banner it prints once they
        are, which is after its CA is written), its CA is whole, every worker of several serves (the
        supervisor's sockets accept before the workers do), and its port accepts: a connection alone
        could reach another test's server that took the free port first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"egressguard exited early ({code}):\n{self.output()}")
            if self._announced() and self._ca_written() and self._workers_ready():
                try:
                    socket.create_connection((self.listen_host, self.port), timeout=0.2).close()
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"egressguard did not start listening:\n{self.output()}")

    def _announced(self) -> bool:
        return BANNER_MARK in self._output_of_this_start()

    def _workers_ready(self) -> bool:
        workers = int(self.args[self.args.index("--workers") + 1]) if "--workers" in self.args else 1
        return workers == 1 or self._output_of_this_start().count(b"worker.ready") >= workers

    def _output_of_this_start(self) -> bytes:
        self._log.flush()
        with self.log_path.open("rb") as log:
            log.seek(self._output_before_start)
            return log.read()

    def _ca_written(self) -> bool:
        try:
            return b"-----END CERTIFICATE-----" in self.ca_cert.read_bytes()
        except OSError:
            return False

    @property
    def ca_cert(self) -> Path:
        return self.data_dir / "ca" / "mitmproxy-ca-cert.pem"

    def url(self, agent: str | None = None, token: str | None = None) -> str:
        """The proxy URL of ``agent`` (default: ``self.agent``) with ``token`` (default: that agent's
        token for ``self.agent``, ``AGENT_TOKEN`` for any other)."""
        agent = self.agent if agent is None else agent
        if token is None:
            token = self.agent_token if agent == self.agent else AGENT_TOKEN
        return f"http://{agent}:{token}@{self.listen_host}:{self.port}"

    def authorization(self) -> bytes:
        """``proxy_authorization`` of ``self.agent``."""
        return proxy_authorization(self.agent, self.agent_token)

    def take_pool_agent(self) -> None:
        """Speak from now on as the next agent of the pool, which has sent nothing yet: the counts, windows,
        freezes, first-seen sets and prompts seen that the proxy keeps per agent start empty for it, as
        they do in a proxy just started."""
        if self._pool_taken == self.pool:
            raise RuntimeError(f"all {self.pool} agents of the pool were taken")
        self.agent, self.agent_token = pool_agent(self._pool_taken), pool_token(self._pool_taken)
        self._pool_taken += 1

    def http_client(self) -> httpx.Client:
        """An agent's own HTTP client configured for this proxy (as ``self.agent``), the proxy's CA
        trusted."""
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        return httpx.Client(proxy=self.url(), verify=context, timeout=CLIENT_TIMEOUT_S)

    def openai_client(
        self,
        upstream_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        api_key: str = "sk-test",
        agent: str | None = None,
        token: str | None = None,
    ) -> openai.OpenAI:
        """The official OpenAI client of an agent configured for this proxy: the proxy (as ``agent``,
        default ``self.agent``) in its own HTTP client, the proxy's CA trusted, no retries; its API at
        ``upstream_url``'s ``/v1``."""
        transport = openai.DefaultHttpxClient(
            proxy=self.url(agent, token),
            verify=ssl.create_default_context(cafile=str(self.ca_cert)),
            timeout=CLIENT_TIMEOUT_S,
        )
        return openai.OpenAI(
            base_url=f"{upstream_url}/v1",
            api_key=api_key,
            max_retries=0,
            default_headers=headers,
            http_client=transport,
        )

    def raw(self, request: bytes) -> tuple[int, bytes]:
        """Send raw bytes to the proxy port; return the status code and what came back in the first read
        window (head and, where the proxy sent one, a short body)."""
        with socket.create_connection((self.listen_host, self.port), timeout=10) as connection:
            connection.sendall(request)
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = connection.recv(4096)
                if not chunk:
                    break
                answer += chunk
            connection.settimeout(0.3)
            with contextlib.suppress(TimeoutError):
                answer += connection.recv(4096)
        return int(answer.split(b" ", 2)[1]), answer

    def banner_environment(self) -> dict[str, str]:
        """What the banner tells an agent to set (first agent), with its token filled in: the tests of
        each client runtime set exactly this and nothing else."""
        lines = self.output().split(BANNER_MARK.decode() + "\n", 1)[1].splitlines()
        environment: dict[str, str] = {}
        for line in lines:
            if not line.startswith("  "):
                break
            name, _, value = line.strip().partition("=")
            environment.setdefault(name, value.split("   #")[0].replace(f"${AGENT_TOKEN_ENV}", AGENT_TOKEN))
        return environment

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def audit_records(self) -> list[dict[str, Any]]:
        """The records written since ``forget_records`` (or the start)."""
        return self._every_record()[self._records_forgotten :]

    def forget_records(self) -> None:
        """Leave the records written so far out of ``audit_records`` (and so of ``wait_for_records``), so
        that a test sharing this proxy with earlier ones reads the records of its own requests alone. The
        mark is set once no record has been written for a moment: a flow of an earlier test that ended as
        the test did may write its record a little after."""
        count = len(self._every_record())
        while True:
            time.sleep(0.05)
            settled, count = count, len(self._every_record())
            if count == settled:
                break
        self._records_forgotten = count

    def _every_record(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        # Several workers each write their own directory inside the audit directory.
        for path in sorted((self.data_dir / "audit").rglob("*.jsonl")):
            # A line the proxy is appending may be read half written: only a line its newline ends is whole.
            whole_lines = path.read_text().split("\n")[:-1]
            records += [json.loads(line) for line in whole_lines if line.strip()]
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
        self._terminate()
        self._log.close()

    def _terminate(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                try:
                    self.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    raise RuntimeError(f"egressguard (pid {self.process.pid}) outlived SIGKILL") from None
        if self.cgroup is not None:
            self.cgroup.rmdir()
            self.cgroup = None
