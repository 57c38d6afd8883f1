"""Runs mitmproxy in-process with the egressguard chain: the one place that starts a proxy."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mitmproxy import exceptions, hooks, options
from mitmproxy.tools.dump import DumpMaster

from addons import default_addons


class StartupError(Exception):
    """The proxy could not start: a bad option or a port already in use."""


@dataclass
class HangupHook(hooks.Hook):
    """SIGHUP arrived: every addon with a ``hangup()`` method acts on it (the audit log signs a
    checkpoint) and the proxy keeps serving."""


def serve(settings: dict[str, Any], passthrough: Sequence[str] = ()) -> None:
    """Serve until SIGINT or SIGTERM. ``passthrough`` holds raw ``option=value`` mitmproxy settings."""
    asyncio.run(_serve(settings, passthrough))


async def _serve(settings: dict[str, Any], passthrough: Sequence[str]) -> None:
    opts = options.Options()
    master = DumpMaster(opts, with_termlog=True, with_dumper=False)
    master.addons.add(*default_addons())
    try:
        opts.update(**settings)
        if passthrough:
            opts.set(*passthrough)
    except exceptions.OptionsError as error:
        raise StartupError(str(error)) from None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, master.shutdown)
    loop.add_signal_handler(signal.SIGHUP, master.addons.trigger, HangupHook())
    await master.run()
