"""A real ``redis-server`` on a free loopback port, started and stopped by the tests themselves."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def require_redis_server() -> str:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does)")
    return REDIS_SERVER


class RedisServer:
    """One redis-server process with no persistence. ``stop`` and ``start`` again keep the port, as a
    restarted server would; ``tls`` serves TLS only, with a password, on that port."""

    def __init__(
        self, directory: Path, *, password: str | None = None, tls: tuple[Path, Path, Path] | None = None
    ):
        self.binary = require_redis_server()
        self.directory = directory
        self.port = free_port()
        self.password = password
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def arguments(self) -> list[str]:
        arguments = [self.binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        arguments += ["--dir", str(self.directory)]
        if self.tls is None:
            arguments += ["--port", str(self.port)]
        else:
            ca, cert, key = self.tls
            arguments += ["--port", "0", "--tls-port", str(self.port)]
            arguments += [
                "--tls-ca-cert-file",
                str(ca),
                "--tls-cert-file",
                str(cert),
                "--tls-key-file",
                str(key),
            ]
            arguments += ["--tls-auth-clients", "no"]
        if self.password is not None:
            arguments += ["--requirepass", self.password]
        return arguments

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.arguments(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start listening")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def client(self) -> redis.Redis:
        assert self.tls is None, "tests read a TLS server through the store under test"
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password)
