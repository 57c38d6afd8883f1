"""The proxy's long-lived objects are kept out of the collector's passes once it runs and after a reload."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from mitmproxy.test import taddons

from addons.process.admin import POLICY_RELOADED
from addons.process.heap import YOUNG_OBJECTS, LongLivedHeap


class Node:
    """An object in a reference cycle: only the collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    """What a test freezes, and the collector's thresholds, are put back, so the rest of the run collects
    as usual."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def cycle_dropped_after_freeze() -> weakref.ref[Node]:
    """A weak reference to a cycle that was alive when the heap was frozen and is garbage now."""
    node = Node()
    gc.freeze()
    reference = weakref.ref(node)
    del node
    gc.collect()
    return reference


def test_running_moves_the_heap_out_of_the_collectors_reach() -> None:
    """Once the proxy runs, what exists is frozen; garbage at that moment is collected first."""
    garbage = Node()
    reference = weakref.ref(garbage)
    del garbage
    kept = Node()
    LongLivedHeap().running()
    assert reference() is None
    assert gc.get_freeze_count() > 0
    assert not any(candidate is kept for candidate in gc.get_objects())


def test_running_leaves_frozen_what_was_frozen_before_it() -> None:
    """A worker is forked from a process that froze its heap once built: starting walks none of that
    (thawed and collected, every object of it was written to, and its pages were no longer shared), even
    a cycle in it that is garbage by then; what was made since is frozen with it."""
    reference = cycle_dropped_after_freeze()
    made_since = Node()
    LongLivedHeap().running()
    assert reference() is not None
    assert not any(candidate is made_since for candidate in gc.get_objects())


def test_running_collects_the_youngest_objects_less_often() -> None:
    """Turns in flight hold objects that swing past the collector's default every few requests: the
    youngest generation is collected every ``YOUNG_OBJECTS``, the older ones as before."""
    older = gc.get_threshold()[1:]
    LongLivedHeap().running()
    assert gc.get_threshold() == (YOUNG_OBJECTS, *older)


def test_a_reload_collects_what_was_frozen_and_is_garbage_now() -> None:
    """The previous policy's detectors were frozen with everything else: a reload frees them."""
    reference = cycle_dropped_after_freeze()
    assert reference() is not None, "a frozen cycle stays until the heap is settled again"
    LongLivedHeap().configure({POLICY_RELOADED})
    assert reference() is None
    assert gc.get_freeze_count() > 0


def test_other_option_changes_leave_the_heap_alone() -> None:
    """Only a reload settles the heap again: an ordinary option change costs no full collection."""
    reference = cycle_dropped_after_freeze()
    heap = LongLivedHeap()
    with taddons.context(heap) as tctx:
        tctx.configure(heap, listen_port=0)
    assert reference() is not None
