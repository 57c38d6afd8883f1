"""The files a body has the provider read by reference: a content block's ``source.file_id`` (Anthropic's
``document``, ``image``, ``container_upload``), an ``input_file`` or ``input_image`` part's ``file_id``
(Responses), a Chat ``file`` part's ``file.file_id``, Assistants' ``attachments`` and ``image_file``,
a vector store's, a container's or a code interpreter's ``file_ids``, a batch's ``input_file_id``, a
fine-tuning job's ``training_file``, Gemini's ``fileData.fileUri`` and a batch's or a file search
store's ``fileName``, and a form's fields so named (urlencoded or multipart). The provider hands the
model (or the store, the container, the job) the whole of such a file, unread by whoever sends the
reference.

A key is read in any case, with or without ``_`` and ``-`` (``fileUri``, ``file_uri``), at any depth and
in any API's body, since each names a file by the one id its provider gave it. A reference is the file's
id, or an address or name holding ``files/{id}`` (Gemini's ``https://.../v1beta/files/abc``,
``files/abc``), read as that id: the one a route ``/files/{id}`` names
(``proxy.dialects.continued_by_route``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import unquote

from proxy.dialects.locator import Step, format_locator
from proxy.wire.forms import field_key

_ID_KEYS = frozenset(
    {"fileid", "fileids", "inputfileid", "fileuri", "fileuris", "trainingfile", "validationfile"}
)
"""Keys (folded: lower case, no ``_`` or ``-``) whose string, or list of strings, names a file by id."""
_NAME_KEYS = frozenset({"filename", "filenames"})
"""Keys that name a file by its name where it is ``files/{id}`` (Gemini), and by its title elsewhere."""
_FILE_ID_TYPE = "file_id"
"""An object ``{"type": "file_id", "id": ...}`` (an eval run's data source) names a file by its ``id``."""
NAMED_FILE = re.compile(r"(?:\A|/)files/([^/?#:\s]+)")
"""``files/{id}`` in a reference or a route: the id up to the next step, query or method (``:download``)."""
_FOLD = str.maketrans("", "", "_-")
_NESTED = (dict, list)
_Container = dict[str, Any] | list[Any]
_BY_ID, _BY_NAME = "id", "name"


def may_name_files(text: str | bytes) -> bool:
    """Whether ``text`` (JSON, or its UTF-8) may name a file by reference (``files_named``): every key that
    does, and the ``file_id`` type, reads ``file`` once lower-cased without ``_`` and ``-`` (``_kind``; no
    character past ASCII lower-cases into those letters but U+0130, whose ``i`` a dot follows), unless an
    escape spells it. False for almost all of it, at the cost of three passes over its bytes in C, where
    ``files_named`` walks every value of the document."""
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    return b"\\u" in raw or b"file" in raw.lower().replace(b"_", b"").replace(b"-", b"")


def files_named(document: Any, steps: tuple[Step, ...] = ()) -> dict[str, str]:
    """Each file ``document`` (found at ``steps``) names by reference, by the locator of the string
    naming it, as ``stored_file`` reads it."""
    found: dict[str, str] = {}
    if isinstance(document, _NESTED):
        _collect(document, list(steps), found)
    return found


def form_files(fields: Iterable[tuple[str, str, str]]) -> dict[str, str]:
    """Each file a form names by reference, by locator: its fields given as (locator, name, value), each
    named as a server reads a form's names (in any case, with an index: ``file_ids[]``) under the keys a
    JSON body names a file by."""
    found = {}
    for where, name, value in fields:
        if _names_file(_kind(field_key(name)), value):
            found[where] = stored_file(value)
    return found


def _names_file(kind: str | None, reference: str) -> bool:
    """Whether ``reference``, under a key naming a file as ``kind`` says, names a kept file."""
    return (
        kind is not None
        and bool(reference.strip())
        and (kind == _BY_ID or bool(NAMED_FILE.search(unquote(reference))))
    )


def stored_file(reference: str) -> str:
    """The id a file reference names: the id in ``files/{id}`` where it holds one (percent-decoded, as
    the server decodes an address), else the reference without surrounding whitespace."""
    named = NAMED_FILE.search(unquote(reference))
    return named.group(1) if named is not None else reference.strip()


def _collect(document: _Container, steps: list[Step], found: dict[str, str]) -> None:
    """Walks ``document`` at ``steps`` (a path grown and cut back in place: a locator is only written for
    a reference found, every body being walked), depth first and each object's key after what its value
    holds. The walk keeps its own stack: a body nests as deep as the JSON reader accepts, deeper than
    Python's recursion limit."""
    frames: list[tuple[_Container, Iterator[tuple[Step, Any]]]] = [(document, _entries(document))]
    while frames:
        container, entries = frames[-1]
        entry = next(entries, None)
        if entry is None:
            frames.pop()
            if frames:
                step = steps.pop()
                parent = frames[-1][0]
                if isinstance(parent, dict) and isinstance(step, str):
                    _check(parent, step, steps, found)
            continue
        step, child = entry
        if isinstance(child, _NESTED):
            steps.append(step)
            frames.append((child, _entries(child)))
        elif isinstance(container, dict) and isinstance(step, str):
            _check(container, step, steps, found)


def _entries(container: _Container) -> Iterator[tuple[Step, Any]]:
    return iter(enumerate(container)) if isinstance(container, list) else iter(container.items())


def _check(value: dict[str, Any], key: str, steps: list[Step], found: dict[str, str]) -> None:
    """Records the file ``value[key]`` names, if any, ``value`` being found at ``steps``."""
    child = value[key]
    kind = _kind(key)
    if kind is not None:
        for where, reference in _references(child, (*steps, key)):
            if _names_file(kind, reference):
                found[where] = stored_file(reference)
    elif key == "id" and value.get("type") == _FILE_ID_TYPE and isinstance(child, str):
        found[format_locator((*steps, key))] = stored_file(child)


@functools.lru_cache(maxsize=4096)
def _kind(key: str) -> str | None:
    """How a key names a file (``_BY_ID``, ``_BY_NAME``), None where it names none: asked of every key of
    every body, of which most are the same few (``type``, ``text``, ``role``)."""
    folded = key.lower().translate(_FOLD)
    return _BY_ID if folded in _ID_KEYS else _BY_NAME if folded in _NAME_KEYS else None


def _references(value: Any, steps: tuple[Step, ...]) -> list[tuple[str, str]]:
    """A reference given as a string, or each of a list of them."""
    if isinstance(value, str):
        return [(format_locator(steps), value)]
    if isinstance(value, list):
        listed = enumerate(value)
        return [(format_locator((*steps, index)), item) for index, item in listed if isinstance(item, str)]
    return []
