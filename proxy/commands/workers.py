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
worker that cannot serve is an operator's problem to see, not one to hide behind the others.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

WORKER_OPTION = "egressguard_writer"


def writer_id(index: int) -> str:
    return f"w{index}"


def supervise(
    workers: int, target: Callable[..., None], settings: dict[str, Any], passthrough: list[str]
) -> int:
    """Run ``target(settings, passthrough)`` in ``workers`` processes until a signal or a worker's exit;
    return the exit status (that of the first worker to stop on its own, 0 after a signal)."""
    context = multiprocessing.get_context("spawn")
    processes: list[BaseProcess] = []
    for index in range(workers):
        worker_settings = {**settings, WORKER_OPTION: writer_id(index)}
        worker = context.Process(
            target=target, args=(worker_settings, passthrough), name=f"egressguard-{writer_id(index)}"
        )
        worker.start()
        processes.append(worker)
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        while not stopping:
            ended = [process for process in processes if not process.is_alive()]
            if ended:
                status = ended[0].exitcode or 0
                print(
                    f"egressguard: worker {ended[0].name} exited with {status}; stopping the others",
                    file=sys.stderr,
                )
                break
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(15)
            if process.is_alive():
                process.kill()
                process.join()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status
