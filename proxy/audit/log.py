"""Append-only JSONL audit log with a sha256 hash chain.

Each record carries ``prev_hash`` (the ``hash`` of the record before it, or the genesis value) and
``hash``: sha256 over the record's canonical JSON without ``hash``. Editing, deleting or reordering
any record breaks the chain from that record on.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def canonical_json(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(record: dict[str, Any]) -> str:
    body = {key: value for key, value in record.items() if key != "hash"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


class AuditLog:
    """Appends events to ``<directory>/audit.jsonl``, continuing the chain of what is already there."""

    def __init__(self, directory: Path, *, fsync: bool = False) -> None:
        self.directory = directory
        self.path = directory / "audit.jsonl"
        self.fsync = fsync
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        self._last_hash = _last_hash(self.path)

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Chain ``event``, write it as one line, and return the record as written."""
        with self._lock:
            record = {**event, "prev_hash": self._last_hash}
            record["hash"] = record_hash(record)
            line = canonical_json(record) + "\n"
            with self.path.open("a", encoding="utf-8") as sink:
                sink.write(line)
                sink.flush()
                if self.fsync:
                    os.fsync(sink.fileno())
            self._last_hash = record["hash"]
            return record

    def close(self) -> None:
        """Nothing is held open between appends; kept so callers treat every sink alike."""


def _last_hash(path: Path) -> str:
    if not path.exists():
        return GENESIS
    last = GENESIS
    with path.open(encoding="utf-8") as source:
        for line in source:
            if line.strip():
                last = json.loads(line)["hash"]
    return str(last)
