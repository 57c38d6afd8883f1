"""Several proxy processes on one listen port: one per core, so inspection uses every core.

mitmproxy runs every addon hook on one event loop, and the detectors are CPU-bound Python, so one
process is one core. ``run`` with ``workers: N`` starts N complete proxy processes that each bind the
same port with ``SO_REUSEPORT``; the kernel spreads agents' connections over them. Each worker is a
separate audit writer (``<audit.path>/w<i>/``, one hash chain each, one signing key), and all of them
share one state store (the SQLite file opened by every worker, or Redis), so limits, freezes, first-seen
sets and alert windows see every worker's traffic and an alert is routed once.

What every worker would otherwise create on its first start, at the same moment as the others (the CA,
the fingerprint key, the audit signing key), is created here first, once.

The supervisor stops all workers on SIGINT or SIGTERM, and stops them all if one of them exits: a
worker that cannot serve is an operator's problem to see, not one to hide behind the others. It passes
SIGHUP on to every worker, and serves the host's one admin listener (``proxy.admin.gateway``).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from proxy.admin import http
from proxy.admin.gateway import Gateway

WORKER_OPTION = "egressguard_writer"
WORKER_SOCKET = "unix:"
"""How the supervisor gives a worker the Unix socket its admin API listens on, in place of host:port."""


def writer_id(index: int) -> str:
    return f"w{index}"


def supervise(
    workers: int,
    target: Callable[..., None],
    settings: dict[str, Any],
    passthrough: list[str],
    admin: tuple[str, int] | None = None,
) -> int:
    """Run ``target(settings, passthrough, together)`` in ``workers`` processes until a signal or a
    worker's exit (``together`` is a barrier of all of them, which each passes once it has bound the port);
    return the exit status (that of the first worker to stop on its own, 0 after a signal, 2 when the
    admin listener cannot listen). With ``admin`` (host, port), this process serves the host's one admin
    listener there, in front of each worker's admin API on a Unix socket of its own
    (``proxy.admin.gateway``). SIGHUP is passed on to every worker: each re-reads the policy itself."""
    return asyncio.run(_supervise(workers, target, settings, passthrough, admin))


async def _supervise(
    workers: int,
    target: Callable[..., None],
    settings: dict[str, Any],
    passthrough: list[str],
    admin: tuple[str, int] | None,
) -> int:
    context = multiprocessing.get_context("spawn")
    # A private directory (0700) for the workers' admin sockets, short enough for a socket's path.
    sockets = Path(tempfile.mkdtemp(prefix="egressguard-admin-")) if admin else None
    processes: dict[str, BaseProcess] = {}
    together = context.Barrier(workers)
    for index in range(workers):
        worker_settings = {**settings, WORKER_OPTION: writer_id(index)}
        if sockets is not None:
            worker_settings["egressguard_admin_listen"] = f"{WORKER_SOCKET}{sockets / writer_id(index)}"
        worker = context.Process(
            target=target,
            args=(worker_settings, passthrough, together),
            name=f"egressguard-{writer_id(index)}",
        )
        worker.start()
        processes[writer_id(index)] = worker
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, _hang_up, processes)
    server: asyncio.Server | None = None
    status = 0
    try:
        if admin is not None and sockets is not None:
            gateway = Gateway(
                {worker: sockets / worker for worker in processes},
                lambda: {worker: process.is_alive() for worker, process in processes.items()},
            )
            try:
                server = await http.start(admin[0], admin[1], gateway.handle)
            except OSError as error:
                print(
                    f"egressguard: the admin listener cannot listen on {admin[0]}:{admin[1]}: "
                    f"{error.strerror or error}",
                    file=sys.stderr,
                )
                return 2
        while not stopping.is_set():
            ended = [process for process in processes.values() if not process.is_alive()]
            if ended:
                status = ended[0].exitcode or 0
                print(
                    f"egressguard: worker {ended[0].name} exited with {status}; stopping the others",
                    file=sys.stderr,
                )
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 0.2)
    finally:
        if server is not None:
            server.close()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        # A worker still waiting for the others to bind the port would otherwise stop only once its
        # wait ran out.
        together.abort()
        await asyncio.to_thread(_stop, list(processes.values()))
        if sockets is not None:
            shutil.rmtree(sockets, ignore_errors=True)
    return status


def _hang_up(processes: dict[str, BaseProcess]) -> None:
    for process in processes.values():
        if process.pid is not None and process.is_alive():
            os.kill(process.pid, signal.SIGHUP)


def _stop(processes: list[BaseProcess]) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(15)
        if process.is_alive():
            process.kill()
            process.join()
