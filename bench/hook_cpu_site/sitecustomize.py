"""The thread CPU each addon hook of an egressguard process spends, for ``bench/hook_cpu.py``.

Python imports this module at start when its folder is on ``PYTHONPATH``; it does nothing unless
``EGRESSGUARD_HOOK_CPU`` names a folder. There each process (the supervisor and its workers) writes, every
0.2 s, a JSON object ``{"Addon.hook": [seconds, calls], ...}`` to ``<pid>.json``. A handler's time is that
of its own call and, for a coroutine, of each of its steps: not the time it waits, nor what another
thread does for it (a large body inspected off the event loop).
"""

from __future__ import annotations

import inspect
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from pathlib import Path
from typing import Any

FOLDER = os.environ.get("EGRESSGUARD_HOOK_CPU")
Spent = dict[str, list[float]]


def _charge(spent: Spent, key: str, seconds: float) -> None:
    entry = spent.setdefault(key, [0.0, 0])
    entry[0] += seconds
    entry[1] += 1


class _TimedSteps:
    """An awaitable whose steps' thread CPU is charged to ``key``, awaiting ``awaitable``."""

    def __init__(self, awaitable: Awaitable[Any], spent: Spent, key: str) -> None:
        self.awaitable = awaitable
        self.spent = spent
        self.key = key

    def __await__(self) -> Generator[Any, Any, Any]:
        steps = self.awaitable.__await__()
        sent: Any = None
        raised: BaseException | None = None
        total = 0.0
        try:
            while True:
                started = time.thread_time()
                try:
                    step = steps.throw(raised) if raised is not None else steps.send(sent)
                except StopIteration as stop:
                    return stop.value
                finally:
                    total += time.thread_time() - started
                try:
                    sent, raised = (yield step), None
                except BaseException as error:  # handed on to the awaited coroutine, as await does
                    sent, raised = None, error
        finally:
            _charge(self.spent, self.key, total)


def _timed(handler: Callable[..., Any], spent: Spent, key: str) -> Callable[..., Any]:
    def timed(*arguments: Any) -> Any:
        started = time.thread_time()
        try:
            result = handler(*arguments)
        finally:
            seconds = time.thread_time() - started
        if result is not None and inspect.isawaitable(result):
            # The call made the coroutine; its steps are its work.
            return _TimedSteps(result, spent, key)
        _charge(spent, key, seconds)
        return result

    return timed


def _install(folder: Path) -> None:
    from addons.process.server import HookIndex

    spent: Spent = {}
    looked_up = HookIndex._handlers

    def handlers(self: HookIndex, name: str) -> list[Any]:
        if name not in self._index:
            self._index[name] = [
                (addon, _timed(handler, spent, f"{type(addon).__name__}.{name}") if handler else None, parent)
                for addon, handler, parent in looked_up(self, name)
            ]
        return self._index[name]

    HookIndex._handlers = handlers  # type: ignore[method-assign]

    def write() -> None:
        target = folder / f"{os.getpid()}.json"
        while True:
            time.sleep(0.2)
            written = target.with_suffix(".tmp")
            written.write_text(json.dumps({key: list(value) for key, value in list(spent.items())}))
            written.replace(target)

    threading.Thread(target=write, name="hook-cpu", daemon=True).start()


if FOLDER:
    _install(Path(FOLDER))
