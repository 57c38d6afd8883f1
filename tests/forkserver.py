"""Starts egressguard processes by forking a Python that has already imported egressguard and built its
detectors once, so a test's proxy starts in a fraction of the time a fresh interpreter takes.

Run as a script by ``tests.harness.ForkServer``. It reads one JSON request a line on stdin (``argv``,
``env``, ``cwd``, ``log``) and answers on stdout with ``{"pid": N}``, or ``{"error": "..."}``, and later
``{"exited": N, "code": C}`` when that process ends. A forked process takes the request's environment,
working directory and log as its stdout and stderr, then runs ``egressguard``'s ``main`` with the request's
arguments and exits as ``python -m proxy`` does: the same code from ``main`` on, in a process of its own.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import sys
import threading
from pathlib import Path
from typing import Any

# The directory of this script is not a package root: egressguard's packages come from the install.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

from proxy.commands import cli

ENTRY = Path(sys.modules["proxy"].__file__ or "proxy").parent / "__main__.py"
"""What ``sys.argv[0]`` is in ``python -m proxy``: argparse names the program after it."""


def warm_up() -> None:
    """Import what ``run`` imports and build the detectors of an observing and an enforcing policy, as the
    process several workers are forked from does (its import is the warm-up), so the caches a forked
    process inherits hold the rule packs' compiled patterns and analyses, out of the collector's reach."""
    import proxy.commands.worker_preload  # noqa: F401 - imported for the forked processes

    if threading.active_count() != 1:
        raise RuntimeError("the fork server must stay single-threaded to fork safely")


def serve(requests: int, replies: int) -> dict[str, Any]:
    """Answer requests until stdin closes (then end the processes still running and exit). Returns only
    in a forked process, with the request it is to run."""
    wakeup_read, wakeup_write = os.pipe()
    os.set_blocking(wakeup_write, False)
    signal.set_wakeup_fd(wakeup_write)
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
    selector = selectors.DefaultSelector()
    selector.register(requests, selectors.EVENT_READ)
    selector.register(wakeup_read, selectors.EVENT_READ)
    running: set[int] = set()
    pending = b""
    while True:
        for key, _ in selector.select():
            if key.fd == wakeup_read:
                os.read(wakeup_read, 4096)
                _reap(running, replies)
                continue
            chunk = os.read(requests, 65536)
            if not chunk:
                for pid in running:
                    os.kill(pid, signal.SIGTERM)
                raise SystemExit(0)
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    selector.close()
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    for descriptor in (requests, replies, wakeup_read, wakeup_write):
                        os.close(descriptor)
                    return dict(request)
                running.add(pid)
                _reply(replies, {"pid": pid})


def _reap(running: set[int], replies: int) -> None:
    while running:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        running.discard(pid)
        _reply(replies, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def _reply(replies: int, message: dict[str, Any]) -> None:
    os.write(replies, json.dumps(message).encode() + b"\n")


def run(request: dict[str, Any]) -> int:
    """In the forked process: become the requested command and run it."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    nothing = os.open(os.devnull, os.O_RDONLY)
    os.dup2(nothing, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(nothing)
    sys.argv = [str(ENTRY), *request["argv"]]
    return cli.main(request["argv"])


def main() -> None:
    requests = os.dup(0)
    replies = os.dup(1)
    nothing = os.open(os.devnull, os.O_RDWR)
    os.dup2(nothing, 0)
    os.dup2(nothing, 1)
    os.close(nothing)
    warm_up()
    _reply(replies, {"ready": True})
    request = serve(requests, replies)
    sys.exit(run(request))


if __name__ == "__main__":
    main()
