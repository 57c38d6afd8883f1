"""Model input a provider assembles from pieces sent one request at a time: an OpenAI Upload's parts
(``POST /v1/uploads/{id}/parts``, each the form field ``data``), joined in the order its ``complete``
names them (``part_ids``), and the chunks of a Google resumable upload (``X-Goog-Upload-Command:
upload`` at ``X-Goog-Upload-Offset``, or a ``Content-Range``), joined by offset when the last one
finalizes the upload, each into the file a batch then runs. Each piece is read as any body as it passes,
yet a batch line (or a prompt) split across two pieces is whole only once they are joined: the pieces are
kept on disk, at most the inspection cap an upload, so that the file they make can be read line by line,
as a batch input file uploaded whole is, before the request that makes it one leaves.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from proxy.own_tokens import write_private
from proxy.wire import jsontext
from proxy.wire.decoding import OverCapError
from proxy.wire.multipart import part_headers

OVER_CAP_MARK = "over-cap"
"""The file that says an upload's parts grew past the cap: their file can no longer be read whole."""
UNREAD_MARK = "unread"
"""The file that says a part of an upload passed without its content being kept (a body relayed unread)."""
KEPT_S = 2 * 3600.0
"""How long an upload's parts are kept after its last part: OpenAI lets an upload be completed for an
hour after it is created."""
MOST_UPLOADS = 256
"""The uploads kept at once; the oldest is forgotten first (its ``complete`` then names parts not kept)."""


STAGED_FILE = "upload"
"""The first step of a locator into the file an upload's parts make (``upload[3].body.input``: line 3)."""
_FIELD_NAME = re.compile(r'(?:^|;)\s*name="([^"]*)"')
_PERSISTED = re.compile(r"bytes=0-(\d+)\s*\Z", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class UploadStep:
    """What a request does to an upload the provider assembles: adds a piece, or makes the file
    (``completes``; Gemini's last chunk does both). ``offset``: where a Gemini chunk starts (-1 where its
    header does not say), None for an OpenAI part, which the provider's answer names."""

    upload: str
    completes: bool
    offset: int | None = None


class UnseenPartError(ValueError):
    """``complete`` names a part egressguard did not keep: sent around it, forgotten, or never read."""


class StagedParts:
    """The parts of uploads under ``directory``, a folder an upload, a file a part (both named by a
    digest of their id, so no id names a path). Writes are atomic (a file renamed into place), so
    workers sharing the directory each see a part whole or not at all."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def keep(self, upload: str, part: str, content: bytes | None, cap: int) -> None:
        """Keeps ``part`` of ``upload``; ``content`` None for a part whose content was not read. Past
        ``cap`` bytes for the upload, its parts are dropped and the upload marked as over the cap."""
        folder = self._folder(upload)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.mkdir(mode=0o700, exist_ok=True)
        self._forget_old(keep=folder)
        if content is None:
            _write(folder / UNREAD_MARK, b"")
            return
        if (folder / OVER_CAP_MARK).exists():
            return
        held = _parts_in(folder)
        if sum(entry.stat().st_size for entry in held) + len(content) > cap:
            _write(folder / OVER_CAP_MARK, b"")
            for entry in held:
                entry.unlink(missing_ok=True)
            return
        _write(folder / _digest(part), content)

    def assemble(self, upload: str, parts: Sequence[str], cap: int) -> bytes:
        """The file ``upload``'s ``parts`` make in this order. Raises ``OverCapError`` where they grew
        past ``cap``, ``UnseenPartError`` where one of them was not kept or not read."""
        folder = self._readable(upload, cap)
        pieces = [_piece(folder, part, f"part {index}") for index, part in enumerate(parts)]
        return _within(b"".join(pieces), cap)

    def assemble_chunks(self, upload: str, end: int, cap: int) -> bytes:
        """The file ``upload``'s chunks make from offset 0 up to ``end``, each kept under its offset;
        raises as ``assemble`` does, ``UnseenPartError`` too where they leave a gap or overlap."""
        folder = self._readable(upload, cap)
        pieces: list[bytes] = []
        offset = 0
        while offset < end:
            piece = _piece(folder, str(offset), f"the chunk at offset {offset}")
            if not piece:
                break
            pieces.append(piece)
            offset += len(piece)
        if offset != end:
            raise UnseenPartError(f"its chunks end at offset {offset}, not {end}")
        return _within(b"".join(pieces), cap)

    def _readable(self, upload: str, cap: int) -> Path:
        """The folder of ``upload``, whose parts passed read and under ``cap`` (else raises)."""
        folder = self._folder(upload)
        if (folder / OVER_CAP_MARK).exists():
            raise OverCapError(f"its upload's parts together exceed the inspection cap of {cap} bytes")
        if (folder / UNREAD_MARK).exists():
            raise UnseenPartError("a part of its upload passed unread")
        return folder

    def forget(self, upload: str) -> None:
        shutil.rmtree(self._folder(upload), ignore_errors=True)

    def _folder(self, upload: str) -> Path:
        return self.directory / _digest(upload)

    def _forget_old(self, keep: Path) -> None:
        """Drops the uploads whose last part is older than ``KEPT_S``, and the oldest past
        ``MOST_UPLOADS``: what is on disk stays bounded whatever uploads are begun and never completed."""
        folders = sorted((_modified(entry), entry) for entry in self.directory.iterdir() if entry != keep)
        stale = time.time() - KEPT_S
        for position, (modified, folder) in enumerate(folders):
            if modified < stale or position < len(folders) - (MOST_UPLOADS - 1):
                shutil.rmtree(folder, ignore_errors=True)


def _parts_in(folder: Path) -> list[Path]:
    """The parts kept in ``folder``: neither a mark nor a part being written (``_write``)."""
    return [entry for entry in folder.iterdir() if entry.name not in _MARKS and "." not in entry.name]


_MARKS = (OVER_CAP_MARK, UNREAD_MARK)


def _modified(path: Path) -> float:
    """When ``path`` last changed; long ago where another worker has just removed it."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _piece(folder: Path, name: str, said: str) -> bytes:
    try:
        return (folder / _digest(name)).read_bytes()
    except OSError:
        raise UnseenPartError(f"it names {said}, which did not pass here") from None


def _within(joined: bytes, cap: int) -> bytes:
    if len(joined) > cap:  # a part named twice
        raise OverCapError(f"the file its parts make exceeds the inspection cap of {cap} bytes")
    return joined


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def _write(path: Path, content: bytes) -> None:
    """Written whole (renamed into place) and the owner's alone from its creation: an upload's part may
    hold what an agent sent, secrets included, whatever the umask."""
    write_private(path, content)
    os.utime(path.parent)


def bytes_taken(offset: int, persisted: str) -> int:
    """How many bytes of a chunk sent at ``offset`` the server holds, by the ``Range: bytes=0-N`` of its
    308 answer (none where it names no range, as Google's protocol says)."""
    found = _PERSISTED.match(persisted.strip())
    return max(0, int(found.group(1)) + 1 - offset) if found is not None else 0


def named_parts(body: bytes) -> list[str]:
    """The parts a ``complete`` request names, in order (``part_ids``); raises ``UnseenPartError`` where
    it names none that can be read."""
    try:
        document = jsontext.loads(body.decode("utf-8", "surrogateescape"))
    except (ValueError, RecursionError):
        raise UnseenPartError("its body does not read as JSON") from None
    parts = document.get("part_ids") if isinstance(document, dict) else None
    if not isinstance(parts, list) or not all(isinstance(part, str) for part in parts):
        raise UnseenPartError("it names its parts otherwise than as a list of ids")
    return parts


def form_field(body: bytes, boundary: bytes | None, name: str) -> bytes | None:
    """The content of the form field ``name`` of a ``multipart/form-data`` body of ``boundary``; None where
    it has none, or more than one: servers differ in which of them they keep, so none is known to be the
    part."""
    found = [
        body[start:end]
        for headers, start, end in part_headers(body, boundary) or ()
        if (field := _FIELD_NAME.search(headers.get("content-disposition", ""))) is not None
        and field.group(1) == name
    ]
    return found[0] if len(found) == 1 else None
