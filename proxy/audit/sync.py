"""Syncs of the audit log's files, and the publication of its checkpoints, off the thread that writes.

With ``fsync: batch`` the log syncs its files every ``fsync_batch`` records and before it publishes each
signed checkpoint. An fsync can take tens of milliseconds, and the log is written from the proxy's event
loop (and by its checkpoint timer, under the lock every append takes), where it would stall every
agent's request; the files are handed to a thread of their own instead, and a checkpoint's publication
runs there once everything written before it is synced. Nothing changes for a process crash (every
record is already in the operating system's cache when ``append`` returns); on a power loss the records
at risk are those of one batch plus the ones written while its sync runs, and a head is never published
before what it covers is on disk. ``close`` and an explicit checkpoint still sync on the caller's thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


def sync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def run_after_sync(actions: Iterable[Callable[[], None]]) -> None:
    for action in actions:
        try:
            action()
        except Exception as exc:  # publishing a head must never stop the log
            log.error("audit.checkpoint_callback_failed", error=f"{type(exc).__name__}: {exc}"[:300])


class BackgroundSync:
    """Syncs the files handed to it on its own thread (started at the first hand-off), then runs what was
    handed with them. ``on_failure(error)`` is called from that thread when a file cannot be synced; what
    was to run after it is then dropped (a later checkpoint publishes a newer head)."""

    def __init__(self, on_failure: Callable[[OSError], None]) -> None:
        self._on_failure = on_failure
        self._changed = threading.Condition()
        self._waiting: set[Path] = set()
        self._then: list[Callable[[], None]] = []
        self._syncing: set[Path] = set()
        self._failed: set[Path] = set()
        """Retried with the next hand-off, not at once: a disk that fails keeps failing for a while."""
        self._stopping = False
        self._thread: threading.Thread | None = None

    def hand(self, paths: Iterable[Path], then: Callable[[], None] | None = None) -> None:
        with self._changed:
            self._waiting.update(paths)
            self._waiting.update(self._failed)
            self._failed = set()
            if then is not None:
                self._then.append(then)
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._run, name="audit-sync", daemon=True)
                self._thread.start()
            self._changed.notify()

    def take(self) -> tuple[set[Path], list[Callable[[], None]]]:
        """The files handed over whose sync has not finished, and what waits for them to be synced: the
        caller syncs them itself, then runs it."""
        with self._changed:
            taken = self._waiting | self._syncing | self._failed
            then = self._then
            self._waiting, self._failed, self._then = set(), set(), []
            return taken, then

    def stop(self) -> None:
        """Finish what was handed over and end the thread."""
        with self._changed:
            self._stopping = True
            self._changed.notify()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._waiting and not self._then and not self._stopping:
                    self._changed.wait()
                if not self._waiting and not self._then:
                    return
                self._syncing, self._waiting = self._waiting, set()
                then, self._then = self._then, []
                batch = sorted(self._syncing)
            failed = []
            for path in batch:
                try:
                    sync_file(path)
                except FileNotFoundError:
                    continue  # removed for age meanwhile: nothing of it is left to keep
                except OSError as exc:
                    failed.append(path)
                    log.error("audit.sync_failed", file=path.name, error=f"{type(exc).__name__}: {exc}")
                    self._on_failure(exc)
            with self._changed:
                self._syncing = set()
                self._failed.update(failed)
            if not failed:
                run_after_sync(then)
