"""The proxy's addon manager looks each hook's handlers up once and calls them as mitmproxy would."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from mitmproxy import exceptions, hooks, options
from mitmproxy.addonmanager import AddonManager
from mitmproxy.master import Master
from mitmproxy.proxy.layers.http._hooks import HttpRequestHook
from mitmproxy.test import tflow

from addons.process.server import HookIndex


class Recorder:
    """Writes each hook it sees to a shared list, under its own name."""

    def __init__(self, name: str, calls: list[str]) -> None:
        self.name = name
        self.calls = calls

    def request(self, flow: Any) -> None:
        self.calls.append(f"{self.name}.request")


class AsyncRecorder(Recorder):
    # A handler may be a coroutine in mitmproxy, which awaits it where it would call a plain one.
    async def request(self, flow: Any) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        self.calls.append(f"{self.name}.request")


class Halting(Recorder):
    def request(self, flow: Any) -> None:
        self.calls.append(f"{self.name}.request")
        raise exceptions.AddonHalt


class Failing(Recorder):
    def request(self, flow: Any) -> None:
        self.calls.append(f"{self.name}.request")
        raise ValueError("boom")


class Parent:
    """An addon with sub-addons, as mitmproxy's script loader is: the children may change at any time."""

    def __init__(self, children: list[object]) -> None:
        self.addons = children


def indexed_master() -> Master:
    master = Master(options.Options(), event_loop=asyncio.new_event_loop(), with_termlog=False)
    HookIndex.install(master.addons)
    return master


def trigger(manager: AddonManager, event: hooks.Hook) -> None:
    asyncio.run(manager.trigger_event(event))


def test_handlers_run_in_chain_order_sync_and_async() -> None:
    """Every addon with the hook runs, in the chain's order, whether its handler is sync or async."""
    calls: list[str] = []
    master = indexed_master()
    master.addons.add(Recorder("a", calls), AsyncRecorder("b", calls), Recorder("c", calls))
    trigger(master.addons, HttpRequestHook(tflow.tflow()))
    trigger(master.addons, HttpRequestHook(tflow.tflow()))
    assert calls == ["a.request", "b.request", "c.request"] * 2


def test_an_event_no_addon_handles_calls_nothing() -> None:
    """``update`` (sent after every flow event) has no handler here: nothing runs, nothing fails."""
    calls: list[str] = []
    master = indexed_master()
    master.addons.add(Recorder("a", calls))
    trigger(master.addons, hooks.UpdateHook([tflow.tflow()]))
    assert calls == []


def test_addon_added_or_removed_later_is_seen() -> None:
    """The index is rebuilt when the chain changes."""
    calls: list[str] = []
    master = indexed_master()
    first = Recorder("a", calls)
    master.addons.add(first)
    trigger(master.addons, HttpRequestHook(tflow.tflow()))
    master.addons.add(Recorder("b", calls))
    master.addons.remove(first)
    trigger(master.addons, HttpRequestHook(tflow.tflow()))
    assert calls == ["a.request", "b.request"]


def test_sub_addons_are_walked_on_each_event() -> None:
    """A parent's children are read at each event, as a reloaded script swaps them."""
    calls: list[str] = []
    master = indexed_master()
    parent = Parent([Recorder("old", calls)])
    master.addons.add(parent)
    trigger(master.addons, HttpRequestHook(tflow.tflow()))
    parent.addons = [Recorder("new", calls)]
    trigger(master.addons, HttpRequestHook(tflow.tflow()))
    assert calls == ["old.request", "new.request"]


def test_halt_ends_the_event_and_an_error_is_logged_and_passed(caplog: pytest.LogCaptureFixture) -> None:
    """``AddonHalt`` stops the handlers after it; any other error is logged and the next handler runs."""
    calls: list[str] = []
    master = indexed_master()
    master.addons.add(Failing("a", calls), Recorder("b", calls), Halting("c", calls), Recorder("d", calls))
    with caplog.at_level(logging.ERROR):
        trigger(master.addons, HttpRequestHook(tflow.tflow()))
    assert calls == ["a.request", "b.request", "c.request"]
    assert "Addon error: boom" in caplog.text


class RecordingParent(Parent, Recorder):
    """A parent with a handler of its own."""

    def __init__(self, name: str, calls: list[str], children: list[object]) -> None:
        Parent.__init__(self, children)
        Recorder.__init__(self, name, calls)


class NotCallable:
    request = "not a handler"


def test_a_parent_without_sub_addons_runs_its_own_handler_alone() -> None:
    """A parent runs its own handler with or without children, each child's once it has some, and a
    parent with neither (the script loader without scripts) runs nothing."""
    calls: list[str] = []
    master = indexed_master()
    parent = RecordingParent("loader", calls, [])
    master.addons.add(Parent([]), parent)
    trigger(master.addons, HttpRequestHook(tflow.tflow()))
    parent.addons = [Recorder("child", calls)]
    trigger(master.addons, HttpRequestHook(tflow.tflow()))
    parent.addons = []
    trigger(master.addons, HttpRequestHook(tflow.tflow()))
    assert calls == ["loader.request", "loader.request", "child.request", "loader.request"]


def test_a_handler_that_cannot_be_called_is_reported_and_the_others_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An attribute of a hook's name that is not callable is reported as mitmproxy reports it."""
    calls: list[str] = []
    master = indexed_master()
    master.addons.add(NotCallable(), Recorder("b", calls))
    with caplog.at_level(logging.ERROR):
        trigger(master.addons, HttpRequestHook(tflow.tflow()))
    assert calls == ["b.request"]
    assert "not callable" in caplog.text
