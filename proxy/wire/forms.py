"""The fields of a form (a query string, a urlencoded body, a multipart body's parts) as a server reads one
named more than once: as one field whose values come one after another (a list, a case-insensitive
lookup, a PHP array), so that ``a=AKIAIOSF&a=ODNN7EXAMPLE`` holds the key its values spell together."""

from __future__ import annotations

import re
from collections.abc import Iterable

_INDEX = re.compile(r"(?:\[[^\]]*\])+$")
_DISPOSITION_NAME = re.compile(r'(?:^|;)\s*name\s*=\s*(?:"([^"]*)"|([^;\s]*))', re.IGNORECASE)


def field_key(name: str) -> str:
    """The field a name stands for to a server that joins repeated names: in any case, with or without an
    index (``n``, ``N``, ``n[]``, ``n[0]``)."""
    return _INDEX.sub("", name.lower())


def form_values(form: str, at: int = 0) -> list[tuple[str, int, int]]:
    """Each ``name=value`` pair of a urlencoded ``form`` that has a value: its name and the span of its
    value, offset by ``at`` (where the form stands in a longer text)."""
    found = []
    for pair in form.split("&"):
        name, equals, value = pair.partition("=")
        if equals and value:
            found.append((name, at + len(name) + 1, at + len(pair)))
        at += len(pair) + 1
    return found


def repeated[T](values: Iterable[tuple[str, T]]) -> list[list[T]]:
    """The values of each field named more than once (``field_key``), in order."""
    fields: dict[str, list[T]] = {}
    for name, value in values:
        fields.setdefault(field_key(name), []).append(value)
    return [found for found in fields.values() if len(found) > 1]


def disposition_name(headers: dict[str, str]) -> str | None:
    """The form field a multipart part's ``Content-Disposition`` names (``name=``, not ``filename=``)."""
    named = _DISPOSITION_NAME.search(headers.get("content-disposition", ""))
    return None if named is None else named.group(1) if named.group(1) is not None else named.group(2)
