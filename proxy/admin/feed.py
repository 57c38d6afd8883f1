"""The dashboard's live feed: each ``agent.turn`` record as the audit log gains it, sent as server-sent
events. It follows the log's daily files (every writer's directory), so the feed shows what was
recorded, by any worker, and there is no second store to drift from the log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

from proxy.audit.log import daily_files
from proxy.audit.query import with_writers
from proxy.audit.verify import AFTER_BREAK, last_hash, line_problem

POLL_S = 0.2
HEARTBEAT_S = 15.0
BACKLOG = 500
"""Records a slow subscriber may have waiting before it misses some (it is told, and reloads)."""
FOLLOWED_DAYS = 2
"""Only the newest daily files of each writer can grow: yesterday's until midnight's last write."""
MAX_SUBSCRIBERS = 32
"""Open event streams at once: each holds a connection and a queue, and a token holder could open many."""
MAX_READ = 4 * 1024 * 1024
"""Bytes read from one file per poll, so a burst is spread over polls instead of one huge read."""

FEED_FIELDS = (
    "event_id",
    "ts",
    "agent_id",
    "user_id",
    "session_id",
    "egress_host",
    "method",
    "dialect",
    "model",
    "status",
    "decision",
    "mode",
    "latency_ms",
    "upstream_ms",
    "tools",
)
FINDING_FIELDS = ("threat", "rule", "severity", "action", "enforced", "where")


def feed_entry(record: dict[str, Any], chain_problem: str | None) -> dict[str, Any]:
    """What the feed shows of one turn: who, where, what was decided and which rules fired; and whether its
    line verifies in its writer's hash chain (``verified``), else why not (``chain_problem``), which the
    page shows as a warning: a line edited in the log is not shown as the record egressguard wrote."""
    entry = {name: record.get(name) for name in FEED_FIELDS}
    entry["findings"] = [
        {name: finding.get(name) for name in FINDING_FIELDS}
        for finding in record.get("findings") or []
        if isinstance(finding, dict)
    ]
    entry["verified"] = chain_problem is None
    entry["chain_problem"] = chain_problem
    return entry


class AuditFollower:
    """Reads the lines appended to the audit files under one directory since the last call."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.offsets: dict[Path, int] = {}
        self.heads: dict[Path, str | None] = {}
        """Each writer's directory: the hash its next line must follow (None: not known)."""
        self.breaks: dict[Path, str] = {}
        """Each writer's directory whose chain broke while followed: where and why."""

    def skip_existing(self) -> None:
        for path in self._files():
            self.offsets[path] = _size(path)
            if self.offsets[path]:
                self.heads[path.parent] = last_hash(path)

    def read_new(self) -> list[tuple[dict[str, Any], str | None]]:
        """The records appended since the last call, each with what breaks its writer's chain at or before
        it (``chain_states``), None where the chain verifies through it."""
        records: list[tuple[dict[str, Any], str | None]] = []
        for path in self._files():
            offset = self.offsets.get(path, 0)
            size = _size(path)
            if size < offset:  # a write taken back after a failure
                offset = size
            if size == offset:
                self.offsets[path] = offset
                continue
            with path.open("rb") as source:
                source.seek(offset)
                chunk = source.read(min(size - offset, MAX_READ))
            complete = chunk.rfind(b"\n") + 1  # a line still being written waits for the next poll
            self.offsets[path] = offset + complete
            for line in chunk[:complete].splitlines():
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict):
                        records.append((record, self._chain_problem(path, line)))
        return records

    def _chain_problem(self, path: Path, line: bytes) -> str | None:
        writer = path.parent
        if writer in self.breaks:
            return self.breaks[writer]
        problem = line_problem(line + b"\n", self.heads.get(writer))[0]
        if problem is not None:
            self.breaks[writer] = f"{AFTER_BREAK} at {path.name}: {problem}"
            return problem
        self.heads[writer] = json.loads(line)["hash"]
        return None

    def _files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        folders = [folder for folder in with_writers([self.directory]) if folder.is_dir()]
        return [path for folder in folders for path in daily_files(folder)[-FOLLOWED_DAYS:]]


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def event(name: str, data: Any) -> bytes:
    """One server-sent event (JSON data on one line)."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n".encode()


class Feed:
    """Fans new turns out to every open event stream; follows the log only while someone listens."""

    def __init__(self, directory: Callable[[], Path | None]) -> None:
        self.directory = directory
        self.subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self.following: asyncio.Task[None] | None = None

    @property
    def full(self) -> bool:
        return len(self.subscribers) >= MAX_SUBSCRIBERS

    async def stream(self) -> AsyncGenerator[bytes]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(BACKLOG)
        self.subscribers.add(queue)
        if self.following is None or self.following.done():
            follower = self._follower()
            self.following = asyncio.get_running_loop().create_task(self._follow(follower))
        try:
            yield b"retry: 2000\n" + event("hello", {"audit": str(self.directory() or "")})
            while True:
                try:
                    entry = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                yield event("turn", entry) if entry is not None else event("gap", {})
        finally:
            self.subscribers.discard(queue)
            if not self.subscribers and self.following is not None:
                self.following.cancel()
                self.following = None

    def _follower(self) -> AuditFollower | None:
        directory = self.directory()
        if directory is None:
            return None
        follower = AuditFollower(directory)
        follower.skip_existing()
        return follower

    async def _follow(self, follower: AuditFollower | None) -> None:
        while follower is not None:
            await asyncio.sleep(POLL_S)
            for record, chain_problem in await asyncio.to_thread(follower.read_new):
                if record.get("type") == "agent.turn" and record.get("drill") is None:
                    self.publish(feed_entry(record, chain_problem))

    def publish(self, entry: dict[str, Any]) -> None:
        for queue in self.subscribers:
            if queue.full():
                # The reader fell behind: drop its backlog and tell it so (the page reloads the history
                # from the audit log) instead of growing without end.
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(None)
            queue.put_nowait(entry)
