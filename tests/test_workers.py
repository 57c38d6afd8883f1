"""The supervisor's listening sockets (``proxy.commands.workers.bind_listeners``), through real sockets, and
its hold on the data dir, through real locks."""

from __future__ import annotations

import fcntl
import re
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import pytest

from proxy.commands import workers
from proxy.commands.workers import (
    SERVE_LOCK,
    AlreadyServed,
    HeldLock,
    Listener,
    Sockets,
    Worker,
    Workers,
    bind_listeners,
    close_all,
    sole_server,
)

ANY_ADDRESS = Listener("regular", "", 0, default_port=True)


@pytest.fixture
def bound() -> Iterator[list[Sockets]]:
    listening = bind_listeners([ANY_ADDRESS], 3)
    yield listening
    close_all(listening)


def listens(listening: socket.socket) -> bool:
    return bool(listening.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))


def test_every_worker_gets_a_listening_socket_on_one_chosen_port_for_each_address(
    bound: list[Sockets],
) -> None:
    """An empty host is every IPv4 and IPv6 address, as mitmproxy listens on it; a port of 0 is chosen
    once, and every worker's sockets listen on it, in the port's reuseport group, before any worker runs."""
    ports = {listening.getsockname()[1] for sockets in bound for listening in sockets["regular"]}
    assert len(ports) == 1 and ports != {0}
    for sockets in bound:
        families = sorted(listening.family for listening in sockets["regular"])
        assert families == [socket.AF_INET, socket.AF_INET6]
        assert all(listens(listening) for listening in sockets["regular"])
        assert all(
            listening.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for listening in sockets["regular"]
        )
        ipv6 = next(listening for listening in sockets["regular"] if listening.family == socket.AF_INET6)
        assert ipv6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    (port,) = ports
    for address in ("127.0.0.1", "::1"):
        socket.create_connection((address, port), timeout=5).close()


def test_connections_queue_on_every_workers_socket_before_any_accepts(bound: list[Sockets]) -> None:
    """Connections made before any worker accepts are spread over every worker's socket by the kernel and
    wait there: each of three workers has some of 64 (all on one by chance: 1 in 3**63)."""
    (port,) = {sockets["regular"][0].getsockname()[1] for sockets in bound}
    agents = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(64)]
    try:
        queued = []
        for sockets in bound:
            ipv4 = next(listening for listening in sockets["regular"] if listening.family == socket.AF_INET)
            ipv4.setblocking(False)
            accepted = []
            while True:
                try:
                    accepted.append(ipv4.accept()[0])
                except BlockingIOError:
                    break
            queued.append(len(accepted))
            for connection in accepted:
                connection.close()
        assert sum(queued) == 64 and all(queued), queued
    finally:
        for agent in agents:
            agent.close()


def test_an_address_in_use_is_reported_and_nothing_is_left_listening() -> None:
    """A port another process listens on without ``SO_REUSEPORT`` cannot be shared: ``OSError``, and the
    sockets bound before it (the other listener's) are closed."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        free = socket.create_server(("127.0.0.1", 0))
        free_port = free.getsockname()[1]
        free.close()
        listeners = [
            Listener("regular", "127.0.0.1", free_port, True),
            Listener("regular@1", "127.0.0.1", port, False),
        ]
        with pytest.raises(OSError):
            bind_listeners(listeners, 2)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", free_port), timeout=5)


def test_workers_left_serving_that_do_not_stop_are_reported_and_a_free_data_dir_is_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(workers, "LEFT_WORKERS_WAIT_S", 0.3)
    with open(tmp_path / SERVE_LOCK, "a") as left:
        fcntl.flock(left, fcntl.LOCK_EX)
        held = sole_server(tmp_path, 2)
        with pytest.raises(AlreadyServed, match=r"still serve on .* after 0\.3 s; stop them \(`fuser -v "):
            held.__enter__()
    assert "waiting for the workers of a stopped egressguard" in capsys.readouterr().err
    with sole_server(tmp_path, 2) as serving:
        assert serving.descriptor >= 0
    assert capsys.readouterr().err == ""


def exit_at_once(
    settings: dict[str, Any], passthrough: Sequence[str], sockets: Sockets, serving: HeldLock, ready: Event
) -> None:
    sys.exit(3)


def serve_then_exit(
    settings: dict[str, Any], passthrough: Sequence[str], sockets: Sockets, serving: HeldLock, ready: Event
) -> None:
    ready.set()
    sys.exit(3)


def test_a_worker_that_keeps_exiting_after_it_served_is_started_again_after_a_growing_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(workers, "RESTART_DELAY_S", 0.05)
    monkeypatch.setattr(workers, "RESTART_DELAY_MAX_S", 0.2)
    with open(tmp_path / SERVE_LOCK, "a") as lock:
        tended = Workers(serve_then_exit, [], HeldLock(lock.fileno()))
        tended.add(Worker("w0", {}, {}))
        deadline = time.monotonic() + 120
        while tended.restarts()["w0"] < 4:
            assert time.monotonic() < deadline
            assert tended.tend() is None
            time.sleep(0.01)
        tended.stop()
    waits = re.findall(r"exited with 3; starting another in its place in (\S+) s", capsys.readouterr().err)
    assert waits == ["0.05", "0.1", "0.2", "0.2"]


def test_a_worker_that_exits_before_it_first_served_ends_the_run_with_its_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open(tmp_path / SERVE_LOCK, "a") as lock:
        tended = Workers(exit_at_once, [], HeldLock(lock.fileno()))
        tended.add(Worker("w0", {}, {}))
        deadline = time.monotonic() + 120
        while (status := tended.tend()) is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        tended.stop()
    assert status == 3 and tended.restarts() == {"w0": 0}
    assert (
        "worker egressguard-w0 exited with 3 before it served; stopping the others" in capsys.readouterr().err
    )
