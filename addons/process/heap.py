"""Keeps what lives as long as the proxy out of the garbage collector's full passes.

The rule packs, the injection model, the policy and mitmproxy's own state are a hundred thousand objects
or more that never become garbage; left to the collector, each full pass walked all of them (about a
tenth of a second, every few hundred requests) for the few cycles a request leaves behind. Once the
proxy is up, and again after a policy reload, they are moved out of its reach (``gc.freeze``): full
passes then walk only what requests made since.

A turn leaves no cycle behind, so a collection of the youngest objects finds no garbage and walks only
what the requests in flight hold; with 32 agents at once their count swings past the collector's default
of 700 every seven requests or so, and those passes (and the older generations' passes they lead to)
cost some 50 µs a request. The youngest generation is collected every ``YOUNG_OBJECTS`` instead.
"""

from __future__ import annotations

import gc
from collections.abc import Set

from addons.process.admin import POLICY_RELOADED

YOUNG_OBJECTS = 7000
"""Objects made and not freed since the last collection that start the next one (Python's default: 700)."""


def settle_heap(*, thaw: bool) -> None:
    """Collect what is garbage now, then exempt everything left from later collections. With ``thaw``, what
    was exempted before is put back first: a reload's previous detectors, garbage now, are collected with
    the rest."""
    if thaw:
        gc.unfreeze()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_OBJECTS, *gc.get_threshold()[1:])


class LongLivedHeap:
    """Last in the chain: its ``running`` comes after every other addon has built what it keeps."""

    def running(self) -> None:
        # What is frozen before the proxy runs is what a worker was forked with (the rule packs' caches,
        # ``proxy.commands.worker_preload``): thawed, the collection walked all of it at every start (a
        # tenth of a second of CPU) and wrote to each of its objects, so none of their pages stayed shared.
        settle_heap(thaw=False)

    def configure(self, updated: Set[str]) -> None:
        if POLICY_RELOADED in updated:
            settle_heap(thaw=True)
