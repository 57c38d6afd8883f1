"""Keeps what lives as long as the proxy out of the garbage collector's full passes.

The rule packs, the injection model, the policy and mitmproxy's own state are a hundred thousand objects
or more that never become garbage; left to the collector, each full pass walked all of them (about a
tenth of a second, every few hundred requests) for the few cycles a request leaves behind. Once the
proxy is up, and again after a policy reload, they are moved out of its reach (``gc.freeze``): full
passes then walk only what requests made since.
"""

from __future__ import annotations

import gc
from collections.abc import Set

from addons.process.admin import POLICY_RELOADED


def settle_heap() -> None:
    """Collect what is garbage now, then exempt everything left from later collections. What was exempted
    before is put back first: a reload's previous detectors, garbage now, are collected with the rest."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class LongLivedHeap:
    """Last in the chain: its ``running`` comes after every other addon has built what it keeps."""

    def running(self) -> None:
        settle_heap()

    def configure(self, updated: Set[str]) -> None:
        if POLICY_RELOADED in updated:
            settle_heap()
