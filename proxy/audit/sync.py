"""Batch syncs of the audit log's files, off the thread that writes them.

With ``fsync: batch`` the log syncs its files every ``fsync_batch`` records. An fsync can take tens of
milliseconds, and the log is written from the proxy's event loop, where it would stall every agent's
request; the files are handed to a thread of their own instead. Nothing changes for a process crash
(every record is already in the operating system's cache when ``append`` returns); on a power loss the
records at risk are those of one batch plus the ones written while its sync runs. A checkpoint, and
``close``, still sync synchronously everything written before them, including what a hand-off left
unsynced.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


def sync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class BackgroundSync:
    """Syncs the files handed to it on its own thread (started at the first hand-off)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._waiting: set[Path] = set()
        self._syncing: set[Path] = set()
        self._failed: set[Path] = set()
        """Retried with the next hand-off, not at once: a disk that fails keeps failing for a while."""
        self._stopping = False
        self._thread: threading.Thread | None = None

    def hand(self, paths: Iterable[Path]) -> None:
        with self._changed:
            self._waiting.update(paths)
            self._waiting.update(self._failed)
            self._failed = set()
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._run, name="audit-sync", daemon=True)
                self._thread.start()
            self._changed.notify()

    def take(self) -> set[Path]:
        """The files handed over whose sync has not finished: the caller syncs them itself."""
        with self._changed:
            taken = self._waiting | self._syncing | self._failed
            self._waiting, self._failed = set(), set()
            return taken

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._waiting and not self._stopping:
                    self._changed.wait()
                if not self._waiting:
                    return
                self._syncing, self._waiting = self._waiting, set()
                batch = sorted(self._syncing)
            failed = []
            for path in batch:
                try:
                    sync_file(path)
                except FileNotFoundError:
                    continue  # removed for age meanwhile: nothing of it is left to keep
                except OSError as exc:
                    # Left for the next hand-off, or for the next checkpoint's own sync, which reports a
                    # disk that still fails as the log's outage.
                    failed.append(path)
                    log.error("audit.sync_failed", file=path.name, error=f"{type(exc).__name__}: {exc}")
            with self._changed:
                self._syncing = set()
                self._failed.update(failed)
