"""`egressguard run` reports configuration errors before its banner, always with exit code 2; a stop is
quiet."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness import Proxy, free_port, proxy_authorization

BANNER = "Set in each agent's environment"


def run(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"data_dir: {tmp_path / 'data'}\nagents:\n  bot: {{token_env: BOT, role: r}}\nroles:\n  r: {{}}\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "proxy", "run", "--config", str(policy), *options],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
        env={**os.environ, "BOT": "t"},
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--set", "no_such_option=1"), "no_such_option"),
        (("--set", "map_local=|example.com|/etc/hosts"), "option map_local belongs to mitmproxy's MapLocal"),
        (("--set", "save_stream_file=/tmp/flows"), "option save_stream_file belongs to mitmproxy's Save"),
        (("--set", "listen_port=eighty"), "listen_port"),
        (("--set", "mode=transparent"), "would let clients in without agent credentials"),
        (("--set", "novalue"), "--set takes OPTION=VALUE"),
        (("--mode", "strict"), "invalid choice"),
        (("--admin-listen", "nowhere"), "--admin-listen takes HOST:PORT"),
    ],
)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_bad_options_exit_2_before_the_banner(
    tmp_path: Path, options: tuple[str, ...], message: str, workers: str
) -> None:
    """A bad --set, mode or admin address is refused with the reason, exit 2, and no banner is printed,
    by a single process and by the supervisor of several workers alike (reported once, before any
    worker starts)."""
    result = run(tmp_path, "--listen-port", str(free_port()), "--workers", workers, *options)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and BANNER not in result.stdout
    assert result.stderr.count(message) == 1 and "exited with" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use_exits_2_before_the_banner(tmp_path: Path) -> None:
    """The proxy port taken by another process: the error names it, exit 2, no banner."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(tmp_path, "--listen-port", str(port))
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and BANNER not in result.stdout


def test_an_admin_port_in_use_exits_2_before_the_banner(tmp_path: Path) -> None:
    """The admin port taken: the same, naming the admin listener."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(tmp_path, "--listen-port", str(free_port()), "--admin-listen", f"127.0.0.1:{port}")
    assert result.returncode == 2
    assert (
        f"admin listener cannot listen on 127.0.0.1:{port}" in result.stderr and BANNER not in result.stdout
    )


def test_a_stop_with_connections_open_exits_0_and_quietly(start_proxy: Callable[..., Proxy]) -> None:
    """SIGTERM while agents hold connections (one idle, one inside a tunnel): each connection's task is
    cancelled, which the stream server on Python 3.12.1 reported as a traceback a connection."""
    proxy = start_proxy()
    with (
        socket.create_connection(("127.0.0.1", proxy.port)),
        socket.create_connection(("127.0.0.1", proxy.port)) as tunnelled,
    ):
        tunnelled.sendall(
            b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n"
            + proxy_authorization()
            + b"\r\n"
        )
        assert tunnelled.recv(1024).startswith(b"HTTP/1.1 200")
        proxy.process.terminate()
        assert proxy.process.wait(timeout=20) == 0
    output = proxy.output()
    assert "Traceback" not in output and "CancelledError" not in output
