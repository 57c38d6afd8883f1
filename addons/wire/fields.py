"""Header fields read in one pass: each ``Headers`` lookup walks every field, lower-casing each name."""

from __future__ import annotations

from collections.abc import Set

from mitmproxy import http


def field_values(headers: http.Headers, *names: bytes) -> dict[bytes, list[str]]:
    """The values of each of ``names`` (lower case) in order, decoded as ``Headers.get_all`` decodes
    them, from one walk of the fields."""
    found: dict[bytes, list[str]] = {name: [] for name in names}
    for name, value in headers.fields:
        values = found.get(name.lower())
        if values is not None:
            values.append(value.decode("utf-8", "surrogateescape"))
    return found


def drop_fields(headers: http.Headers, names: Set[bytes]) -> None:
    """Remove every field named one of ``names`` (lower case), in one rewrite of the fields."""
    if names:
        headers.fields = tuple(field for field in headers.fields if field[0].lower() not in names)


def take_fields(headers: http.Headers, *names: bytes) -> dict[bytes, list[str]]:
    """``field_values`` of ``names``, each of them present then removed: one walk of the fields and one
    rewrite, where ``Headers.pop`` walks them twice for each name (and raises and catches a ``KeyError``
    for one that is absent)."""
    found = field_values(headers, *names)
    drop_fields(headers, {name for name, values in found.items() if values})
    return found
