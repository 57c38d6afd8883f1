"""Audit writers and their published heads: what lets ``audit verify`` notice a chain whose tail was cut.

Every directory an ``AuditLog`` writes (a single process's audit directory, or one worker's inside it)
is one writer with one hash chain. Its id is kept in the directory (``writer-id``, made on first start
and never changed), and each checkpoint it signs is also stored in the shared state store under that
id. Files cut back to an earlier checkpoint still verify on their own, since the chain up to there is
intact; the published head, kept where the log's host cannot rewrite history, says how far the chain
really went. The head also names the host and directory it was written from: the ``writer-id`` file sits
with the log, so whoever cuts a tail can delete or change it, or remove the writer's files altogether,
and only the heads themselves say which directories must reach them.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from proxy.audit.log import daily_files
from proxy.state import JSONValue, StateStore

WRITER_ID_FILE = "writer-id"


def writer_id(directory: Path, worker: str = "") -> str:
    """The id of the writer of ``directory``: read from it, or made (host, worker, random) and kept."""
    path = directory / WRITER_ID_FILE
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        made = "-".join(part for part in (socket.gethostname(), worker, secrets.token_hex(4)) if part)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        except FileExistsError:
            pass
        else:
            with os.fdopen(descriptor, "w") as sink:
                sink.write(made + "\n")
    return path.read_text(encoding="utf-8").strip()


def head_key(writer: str) -> str:
    return f"audit.head:{writer}"


HEAD_PREFIX = head_key("")


def publish_head(store: StateStore, directory: Path, worker: str, checkpoint: dict[str, Any]) -> None:
    """Store the latest signed checkpoint of the writer of ``directory`` (kept without expiry: one small
    value per writer), with where it was written."""
    head: dict[str, JSONValue] = {
        key: value for key, value in checkpoint.items() if isinstance(value, str | int)
    }
    head.update(host=socket.gethostname(), directory=str(directory.resolve()))
    store.put(head_key(writer_id(directory, worker)), head)


def spool_count_key(writer: str) -> str:
    return f"audit.spool_count:{writer}"


class StoredCountWitness:
    """A writer's spool count, also kept in the shared state store (``proxy.audit.spool.CountWitness``).
    ``writer`` gives the writer's id when first needed: the log makes its directory, where the id is
    kept, only as it opens."""

    def __init__(self, store: StateStore, writer: Callable[[], str]) -> None:
        self.store = store
        self.writer = writer

    def publish(self, line: str) -> None:
        self.store.put(spool_count_key(self.writer()), line)

    def latest(self) -> str | None:
        line = self.store.get(spool_count_key(self.writer()))
        return line if isinstance(line, str) else None


def writer_chains(paths: Sequence[Path]) -> dict[Path, list[Path]]:
    """The daily files under ``paths`` grouped by writer directory, each group in chain order: a
    directory's own files are one writer, each directory inside it holding daily files another."""
    chains: dict[Path, set[Path]] = {}
    for path in paths:
        if not path.is_dir():
            chains.setdefault(path.parent, set()).add(path)
            continue
        for directory in [path, *sorted(child for child in path.iterdir() if child.is_dir())]:
            files = daily_files(directory)
            if files:
                chains.setdefault(directory, set()).update(files)
    return {
        directory: sorted(files, key=lambda file: (file.name, str(file)))
        for directory, files in chains.items()
    }


def cut_tails(
    store: StateStore, roots: Sequence[Path], chains: Mapping[Path, Sequence[Path]]
) -> dict[Path, str]:
    """Each writer directory whose files end before a head published for it, with why: the head named by
    its ``writer-id`` file, and every head published from this host for a directory in ``roots`` (which
    no change to the files can hide), whether or not the directory still holds files."""
    expected: dict[Path, list[dict[str, JSONValue]]] = {}
    for directory in chains:
        path = directory / WRITER_ID_FILE
        head = store.get(head_key(path.read_text(encoding="utf-8").strip())) if path.is_file() else None
        if isinstance(head, dict):
            expected.setdefault(directory, []).append(head)
    resolved_chains = {directory.resolve(): directory for directory in chains}
    resolved_roots = [root.resolve() for root in roots]
    host = socket.gethostname()
    for head in store.items(HEAD_PREFIX).values():
        if not isinstance(head, dict) or head.get("host") != host:
            continue
        written_in = Path(str(head.get("directory")))
        if any(written_in == root or written_in.parent == root for root in resolved_roots):
            expected.setdefault(resolved_chains.get(written_in, written_in), []).append(head)
    cut: dict[Path, str] = {}
    for directory, heads in expected.items():
        hashes = _record_hashes(chains.get(directory, ()))
        missing = [head for head in heads if isinstance(head.get("hash"), str) and head["hash"] not in hashes]
        if missing:
            cut[directory] = (
                f"the checkpoint this writer published at {missing[0].get('ts')} is not in its files: "
                "records were cut from the end of the chain"
            )
    return cut


def _record_hashes(files: Sequence[Path]) -> set[str]:
    hashes: set[str] = set()
    for path in files:
        with path.open("rb") as source:
            for raw in source:
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("hash"), str):
                    hashes.add(record["hash"])
    return hashes
