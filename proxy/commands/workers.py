"""Several proxy processes on one listen port: one per core, so inspection uses every core.

mitmproxy runs every addon hook on one event loop, and the detectors are CPU-bound Python, so one
process is one core. ``run`` with ``workers: N`` starts N complete proxy processes, each serving a
socket of its own on the same port (``SO_REUSEPORT``); the kernel spreads agents' connections over them.
They are forked from one process that imported egressguard and built the detectors once (``worker_context``).
Each worker is a separate audit writer (``<audit.path>/w<i>/``, one hash chain each, one signing key),
and all of them share one state store (the SQLite file opened by every worker, or Redis), so limits,
freezes, first-seen sets and alert windows see every worker's traffic and an alert is routed once.

What every worker would otherwise create on its first start, at the same moment as the others (the CA,
the fingerprint key, the audit signing key), is created here first, once. So are the listening sockets
(``bind_listeners``): the kernel spreads a connection only over the sockets that listen when it arrives,
and a connection stays on its worker for its life, so every worker's socket listens before any worker
runs. Agents that connect while the workers start (all of them, when they reconnect after a restart)
wait in the kernel on every worker's socket, rather than all reaching the first worker to listen.

The supervisor stops all workers on SIGINT or SIGTERM, and starts another in place of one that exits on
its own, on the same listening sockets, which it keeps open for that (after a wait that grows while the
worker keeps exiting soon after its start; each one is logged and counted in the host's metrics). It
passes SIGHUP on to every worker, and serves the host's one admin listener (``proxy.admin.gateway``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import multiprocessing
import os
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import forkserver, reduction
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import IO, Any

from proxy.admin import http
from proxy.admin.gateway import Gateway
from proxy.config.policy import AdminSettings

WORKER_OPTION = "egressguard_writer"
WORKER_PRELOAD = "proxy.commands.worker_preload"
"""What the process the workers are forked from imports first: it builds the detectors they inherit."""
WORKER_SOCKET = "unix:"
"""How the supervisor gives a worker the Unix socket its admin API listens on, in place of host:port."""


ADMIN_SOCKETS = "admin-sockets"
"""The directory under the data dir that holds the workers' admin sockets while a supervisor runs."""
RUN_LOCK = "run.lock"
"""The file under the data dir whose lock the one egressguard running on it holds (a single process, or
a supervisor), and which says which it is."""
SERVE_LOCK = "serve.lock"
"""The file under the data dir whose lock that egressguard and every worker it started hold."""
LEFT_WORKERS_WAIT_S = 30.0
"""How long a supervisor waits for the workers an earlier one left serving to stop (each stops within
about a second of its supervisor's death, and then finishes what it serves)."""
LISTEN_BACKLOG = socket.SOMAXCONN
"""Connections each worker's socket holds until its worker accepts them: those that arrive while the
workers start wait here."""
RESTART_DELAY_S = 1.0
"""How long after a worker exited another is started in its place."""
RESTART_DELAY_MAX_S = 30.0
RESTART_STEADY_S = 60.0
"""A worker that served this long before it exited is replaced after ``RESTART_DELAY_S`` again; one that
exited sooner, after twice the last wait, to at most ``RESTART_DELAY_MAX_S``."""
CHOSEN_PORT_ATTEMPTS = 10
"""How often a port the kernel chose for one address is tried on the others before giving up (another
process may hold it there)."""

Sockets = dict[str, list[socket.socket]]
"""A worker's listening sockets: by proxy mode (its spec), one socket per address the mode listens on."""


@dataclass(frozen=True)
class Listener:
    """Where one proxy mode (``spec``) listens: ``host`` (empty for every address, IPv4 and IPv6) and
    ``port`` (0 for one the kernel picks). ``default_port``: its port is the ``listen_port`` option."""

    spec: str
    host: str
    port: int
    default_port: bool


def writer_id(index: int) -> str:
    return f"w{index}"


def bind_listeners(listeners: Sequence[Listener], workers: int) -> list[Sockets]:
    """Each worker's own listening sockets, one for each of ``listeners``' addresses, every worker's bound
    to the same port with ``SO_REUSEPORT`` (a port of 0 is chosen once, for all of them) and listening
    before this returns. Raises ``OSError`` (the sockets bound so far closed) when an address cannot be
    listened on."""
    bound: list[Sockets] = [{} for _ in range(workers)]
    try:
        for listener in listeners:
            for sockets, shared in zip(
                bound, _bind_shared(listener.host, listener.port, workers), strict=True
            ):
                sockets[listener.spec] = shared
    except BaseException:
        close_all(bound)
        raise
    return bound


def bound_port(sockets: Sockets, spec: str) -> int:
    return int(sockets[spec][0].getsockname()[1])


def close_all(bound: Sequence[Sockets]) -> None:
    for sockets in bound:
        for shared in sockets.values():
            for listening in shared:
                listening.close()


def _bind_shared(host: str, port: int, workers: int) -> list[list[socket.socket]]:
    """``workers`` sets of sockets listening on ``host:port``, each with one socket per address ``host``
    resolves to, as ``asyncio.start_server`` binds them (an IPv6 one IPv6 only)."""
    found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    addresses = list(
        dict.fromkeys((family, kind, protocol, address) for family, kind, protocol, _, address in found)
    )
    if port == 0:
        for _ in range(CHOSEN_PORT_ATTEMPTS - 1):
            try:
                return _bind_all(addresses, workers)
            except OSError as error:
                if error.errno != errno.EADDRINUSE:
                    raise
    return _bind_all(addresses, workers)


def _bind_all(addresses: Sequence[tuple[Any, ...]], workers: int) -> list[list[socket.socket]]:
    """The port of the first address bound is every other socket's: the kernel's choice, for a port of 0."""
    bound: list[list[socket.socket]] = [[] for _ in range(workers)]
    try:
        chosen: int | None = None
        for family, kind, protocol, address in addresses:
            for shared in bound:
                listening = socket.socket(family, kind, protocol)
                shared.append(listening)
                listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    listening.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                listening.bind((address[0], address[1] if chosen is None else chosen, *address[2:]))
                chosen = listening.getsockname()[1]
        # Listening only once every socket is bound: no connection is queued before each worker's socket
        # can take its share.
        for shared in bound:
            for listening in shared:
                listening.listen(LISTEN_BACKLOG)
    except BaseException:
        for shared in bound:
            for listening in shared:
                listening.close()
        raise
    return bound


def worker_context() -> ForkServerContext:
    """Workers are forked from one process (multiprocessing's fork server) that has imported what a worker
    runs and built the detectors first (``proxy.commands.worker_preload``): each starts with them, where
    each was a fresh interpreter that imported and built everything again (some 4 s of CPU a worker). A
    worker still gets only its own sockets and the data dir's lock, and watches its supervisor."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([WORKER_PRELOAD])
    return context


def start_worker_template() -> None:
    """Start the process the workers are forked from now, so that it imports and builds while the
    supervisor checks the options and makes the CA and keys, rather than after."""
    worker_context()
    forkserver.ensure_running()


def supervise(
    listening: list[Sockets],
    target: Callable[..., None],
    settings: dict[str, Any],
    passthrough: list[str],
    data_dir: Path,
    serving: HeldLock,
    admin: AdminSettings | None = None,
) -> int:
    """Run ``target(settings, passthrough, sockets, serving, ready)`` in one process for each of
    ``listening`` (its own listening sockets, from ``bind_listeners``; ``serving`` from ``sole_server``;
    ``ready``, an event it sets once it serves) until a signal; return the exit status (0; that of a
    worker that could not start, see ``Workers.tend``; 2 when the admin listener cannot listen). A worker
    that exits on its own is started again on the same sockets, which are kept open here for that. With
    ``admin`` (its address and TLS), this process serves the host's one admin listener there, in front of each
    worker's admin API on a Unix socket of its own under ``data_dir`` (``proxy.admin.gateway``). SIGHUP is
    passed on to every worker: each re-reads the policy itself."""
    try:
        return asyncio.run(_supervise(listening, target, settings, passthrough, data_dir, serving, admin))
    finally:
        close_all(listening)


async def _supervise(
    listening: list[Sockets],
    target: Callable[..., None],
    settings: dict[str, Any],
    passthrough: list[str],
    data_dir: Path,
    serving: HeldLock,
    admin: AdminSettings | None,
) -> int:
    with contextlib.ExitStack() as cleanup:
        sockets = cleanup.enter_context(_admin_sockets(data_dir)) if admin else None
        workers = Workers(target, passthrough, serving)
        cleanup.callback(workers.stop)
        for index, worker_sockets in enumerate(listening):
            worker_settings = {**settings, WORKER_OPTION: writer_id(index)}
            if sockets is not None:
                worker_settings["egressguard_admin_listen"] = f"{WORKER_SOCKET}{sockets / writer_id(index)}"
            workers.add(Worker(writer_id(index), worker_settings, worker_sockets))
        return await _watch(workers, sockets, admin)


@dataclass
class Worker:
    """One worker's place: what it is started with, and the process that fills it."""

    writer: str
    settings: dict[str, Any]
    sockets: Sockets
    process: BaseProcess | None = None
    ready: Event | None = None
    """Set by the process once it serves."""
    started: float = 0.0
    restarts: int = 0
    delay: float = 0.0
    """How long the last start waited after its worker exited."""
    due: float | None = None
    """When the process that exited is to be replaced."""


class Workers:
    """The workers, each started again (``tend``) when it exits on its own: a worker that crashed would
    otherwise leave its core, and the share of the port's connections the kernel gives its socket,
    unserved for the supervisor's life."""

    def __init__(self, target: Callable[..., None], passthrough: list[str], serving: HeldLock) -> None:
        self.target = target
        self.passthrough = passthrough
        self.serving = serving
        self.context = worker_context()
        self.workers: dict[str, Worker] = {}

    def add(self, worker: Worker) -> None:
        self.workers[worker.writer] = worker
        self._start(worker)

    def _start(self, worker: Worker) -> None:
        worker.ready = self.context.Event()
        worker.process = self.context.Process(
            target=self.target,
            args=(worker.settings, self.passthrough, worker.sockets, self.serving, worker.ready),
            name=f"egressguard-{worker.writer}",
        )
        worker.process.start()
        worker.started = time.monotonic()
        worker.due = None

    def tend(self) -> int | None:
        """Schedule the start of another process in place of each that exited, ``RESTART_DELAY_S`` after
        it exited, or twice the last wait when it exited within ``RESTART_STEADY_S`` of its start (to at
        most ``RESTART_DELAY_MAX_S``): one that cannot start is not started again and again at once.
        A worker whose first process exited before it served cannot start at all (its audit directory
        unwritable, say), which starting it again would not change: its exit status is returned, and the
        run is to end with it."""
        now = time.monotonic()
        for worker in self.workers.values():
            process = worker.process
            if process is None or process.is_alive():
                continue
            if worker.restarts == 0 and worker.ready is not None and not worker.ready.is_set():
                status = process.exitcode or 0
                print(
                    f"egressguard: worker {process.name} exited with {status} before it served; "
                    "stopping the others",
                    file=sys.stderr,
                )
                return status
            if worker.due is None:
                steady = now - worker.started >= RESTART_STEADY_S
                worker.delay = (
                    RESTART_DELAY_S
                    if steady or not worker.delay
                    else min(2 * worker.delay, RESTART_DELAY_MAX_S)
                )
                worker.due = now + worker.delay
                print(
                    f"egressguard: worker {process.name} exited with {process.exitcode}; starting another "
                    f"in its place in {worker.delay:g} s",
                    file=sys.stderr,
                )
            elif now >= worker.due:
                worker.restarts += 1
                self._start(worker)
        return None

    def alive(self) -> dict[str, bool]:
        return {
            writer: worker.process is not None and worker.process.is_alive()
            for writer, worker in self.workers.items()
        }

    def restarts(self) -> dict[str, int]:
        return {writer: worker.restarts for writer, worker in self.workers.items()}

    def hang_up(self) -> None:
        for process in self._processes():
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGHUP)

    def stop(self) -> None:
        processes = self._processes()
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(15)
            if process.is_alive():
                process.kill()
                process.join()

    def _processes(self) -> list[BaseProcess]:
        return [worker.process for worker in self.workers.values() if worker.process is not None]


async def _watch(workers: Workers, sockets: Path | None, admin: AdminSettings | None) -> int:
    """Serve the admin listener and tend the workers until a signal; return the exit status."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, workers.hang_up)
    server: asyncio.Server | None = None
    try:
        if admin is not None and sockets is not None:
            gateway = Gateway(
                {writer: sockets / writer for writer in workers.workers}, workers.alive, workers.restarts
            )
            try:
                tls = http.server_context(admin.tls) if admin.tls else None
                server = await http.start(admin.host, admin.port, gateway.handle, tls, admin.hosts)
            except http.CertificateError as error:
                print(f"egressguard: {error}", file=sys.stderr)
                return 2
            except OSError as error:
                print(
                    f"egressguard: the admin listener cannot listen on {admin.host}:{admin.port}: "
                    f"{error.strerror or error}",
                    file=sys.stderr,
                )
                return 2
        while not stopping.is_set():
            status = workers.tend()
            if status is not None:
                return status
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 0.2)
        return 0
    finally:
        if server is not None:
            server.close()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(signum)


class AlreadyServed(Exception):
    """Another egressguard runs on this data dir, or the workers of one that stopped still serve it."""


class HeldLock:
    """An open file whose lock this process holds, given to each worker: the worker gets the same open file
    (not a new one), so the lock is held until the last process holding it is gone."""

    def __init__(self, descriptor: int) -> None:
        self.descriptor = descriptor

    def __reduce__(self) -> tuple[Callable[[Any], HeldLock], tuple[Any]]:
        return (_inherited_lock, (reduction.DupFd(self.descriptor),))


def _inherited_lock(duplicate: Any) -> HeldLock:
    return HeldLock(duplicate.detach())


@contextlib.contextmanager
def sole_server(data_dir: Path, workers: int) -> Iterator[HeldLock]:
    """Hold ``<data_dir>/run.lock`` while this egressguard (with ``workers``, or a single process) runs,
    or raise ``AlreadyServed`` before it binds or prints anything: two on one data dir would write the
    same audit chains and state file, each as if it were alone, and a supervisor removes the admin
    sockets of another's workers. The kernel lets go of the lock when its holder is gone, however it
    went, so a lock file left behind holds nothing. Then hold ``<data_dir>/serve.lock``, which every
    worker holds too (it is yielded for them): see ``_wait_for_left_workers``."""
    with open(data_dir / RUN_LOCK, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            running = _holder(lock.read())
            raise AlreadyServed(f"another egressguard{running} is running on {data_dir}") from None
        lock.truncate(0)
        lock.write(f"{os.getpid()} {workers}\n")
        lock.flush()
        with open(data_dir / SERVE_LOCK, "a") as serving:
            _wait_for_left_workers(serving, data_dir)
            yield HeldLock(serving.fileno())


def _holder(written: str) -> str:
    """What ``sole_server`` wrote of the egressguard holding the lock ("PID WORKERS"), as said of it."""
    match = re.fullmatch(r"(\d+) (\d+)\n", written)
    if match is None:
        return ""
    processes = f", {match[2]} workers" if int(match[2]) > 1 else ""
    return f" (pid {match[1]}{processes})"


def _wait_for_left_workers(serving: IO[str], data_dir: Path) -> None:
    """Take the lock of ``serving`` once no worker of an earlier supervisor holds it. The workers of a
    supervisor killed outright serve on until each has noticed and stopped: workers started beside them
    would share the port with them (``SO_REUSEPORT``), and they would go on taking their share of the
    connections, unsupervised, with the policy of before. Raises ``AlreadyServed`` when they are not gone
    within ``LEFT_WORKERS_WAIT_S``."""
    deadline: float | None = None
    while True:
        try:
            fcntl.flock(serving, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if deadline is None:
                deadline = time.monotonic() + LEFT_WORKERS_WAIT_S
                print(
                    f"egressguard: waiting for the workers of a stopped egressguard on {data_dir} to stop",
                    file=sys.stderr,
                )
            elif time.monotonic() > deadline:
                raise AlreadyServed(
                    f"the workers of a stopped egressguard still serve on {data_dir} after "
                    f"{LEFT_WORKERS_WAIT_S:g} s; stop them (`fuser -v {serving.name}` lists them)"
                ) from None
        time.sleep(0.1)


@contextlib.contextmanager
def _admin_sockets(data_dir: Path) -> Iterator[Path]:
    """The private directory (0700) of the workers' admin sockets, ``<data_dir>/admin-sockets``, removed
    when the supervisor stops. There is one for each data dir, which only its one supervisor uses
    (``sole_server``): one a supervisor killed outright left behind is removed by the next start, not
    left to pile up."""
    directory = data_dir / ADMIN_SOCKETS
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
