"""Bare mitmdump in several processes sharing one listening port, as egressguard's workers share theirs.

``bench/throughput.py`` measures it beside one bare mitmdump: what a second process gains bare mitmproxy
on the machine is the ceiling against which egressguard's second worker is read, since on a machine of
few cores the agents and the upstream take their share of the same cores.

    python3 bench/mitmdump_processes.py COUNT [mitmdump's arguments]

Each process is a ``multiprocessing`` child, as egressguard's workers are, so the benches find them the
same way. The CA under ``confdir`` must exist before they start, or each would write its own.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import signal
import sys
from typing import Any


def serve(arguments: list[str]) -> None:
    """One mitmdump, whose listening socket (``asyncio.start_server``'s) shares its port."""
    from mitmproxy.tools.main import mitmdump

    asyncio.start_server = functools.partial(asyncio.start_server, reuse_port=True)
    mitmdump(arguments)


def main() -> None:
    count, arguments = int(sys.argv[1]), sys.argv[2:]
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=serve, args=(arguments,)) for _ in range(count)]
    for child in children:
        child.start()

    def stop(*_: Any) -> None:
        for child in children:
            child.terminate()

    signal.signal(signal.SIGTERM, stop)
    for child in children:
        child.join()


if __name__ == "__main__":
    main()
