"""Whether anyone may have committed to a SQLite database in WAL mode, read without a statement.

Each commit to a database in WAL mode, by any connection of any process, rewrites the header of the
database's WAL index (``<database>-shm``, a file every connection maps into memory): its change counter,
last frame and frame checksum move with every transaction, and readers learn of a commit by reading it
(https://www.sqlite.org/walformat.html, "The WAL-Index Header"; its layout is fixed across SQLite versions,
since processes running different versions share one index). So where this header is byte for byte what
it was, nothing has been committed since. ``PRAGMA data_version`` answers the same question exactly but
opens a read transaction (shared-memory locks, a few microseconds); a look at the header is a copy of 96
bytes. The header is two copies that a writer writes one after the other: read while a writer is between
them, the copies differ, which a caller takes as a change.

The header is read through a read-only mapping of the file. Closing any descriptor of a file drops every
POSIX lock the process holds on it, SQLite's own included, so the descriptor is kept open, and shared by
every user of the file in this process, until the last of them lets it go (after closing its
connections).
"""

from __future__ import annotations

import mmap
import os
import threading
from pathlib import Path

HEADER_BYTES = 96
"""The WAL-index header: two copies of the 48-byte ``WalIndexHdr``."""

_maps_lock = threading.Lock()
_maps: dict[Path, tuple[int, mmap.mmap, int]] = {}
"""Each mapped index file: its descriptor, its mapping, and how many ``WalIndexHeader`` use it."""


class WalIndexHeader:
    """The header of one WAL index, mapped from its file."""

    def __init__(self, index: Path, mapping: mmap.mmap) -> None:
        self._index = index
        self._mapping = mapping
        self._released = False

    @classmethod
    def open(cls, database: Path) -> WalIndexHeader | None:
        """The header of ``database``'s WAL index, which a connection of this process in WAL mode holds
        open; None where it cannot be mapped (no index file, or one not written yet)."""
        index = Path(f"{database}-shm").resolve()
        with _maps_lock:
            if index in _maps:
                descriptor, mapping, users = _maps[index]
            else:
                try:
                    descriptor = os.open(index, os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    return None
                try:
                    mapping = mmap.mmap(descriptor, HEADER_BYTES, mmap.MAP_SHARED, mmap.PROT_READ)
                except (OSError, ValueError):  # empty or too short: not an index SQLite has written
                    os.close(descriptor)
                    return None
                users = 0
            _maps[index] = (descriptor, mapping, users + 1)
        return cls(index, mapping)

    def read(self) -> bytes:
        """The header now: both copies, as one value to compare with an earlier one."""
        return self._mapping[:HEADER_BYTES]

    @staticmethod
    def settled(header: bytes) -> bool:
        """Whether no writer was between the two copies of ``header`` when it was read."""
        half = HEADER_BYTES // 2
        return header[:half] == header[half:]

    def release(self) -> None:
        """Let the mapping go: unmapped, and its descriptor closed, once no user in the process is left.
        Call it after closing this user's connections to the database."""
        with _maps_lock:
            if self._released:
                return
            self._released = True
            descriptor, mapping, users = _maps[self._index]
            if users > 1:
                _maps[self._index] = (descriptor, mapping, users - 1)
                return
            del _maps[self._index]
            mapping.close()
            os.close(descriptor)
