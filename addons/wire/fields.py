"""Header fields read and removed by name, through the headers' index of their fields by lower-case
name (``addons.process.speedups``): a lookup of each name, where a walk of every field lowered each name."""

from __future__ import annotations

from collections.abc import Set

from mitmproxy import http

from addons.process.speedups import drop_named_fields, raw_field_values


def field_values(headers: http.Headers, *names: bytes) -> dict[bytes, list[str]]:
    """The values of each of ``names`` (lower case) in order, decoded as ``Headers.get_all`` decodes
    them."""
    found: dict[bytes, list[str]] = {}
    for name in names:
        values = raw_field_values(headers, name)
        if values is None:
            return _walked_field_values(headers, names)
        found[name] = [value.decode("utf-8", "surrogateescape") for value in values]
    return found


def _walked_field_values(headers: http.Headers, names: tuple[bytes, ...]) -> dict[bytes, list[str]]:
    """``field_values`` of fields that cannot be indexed (a list, which could change in place): one walk."""
    found: dict[bytes, list[str]] = {name: [] for name in names}
    for name, value in headers.fields:
        values = found.get(name.lower())
        if values is not None:
            values.append(value.decode("utf-8", "surrogateescape"))
    return found


def drop_fields(headers: http.Headers, names: Set[bytes]) -> None:
    """Remove every field named one of ``names`` (lower case), in one rewrite of the fields."""
    if names:
        drop_named_fields(headers, names)


def take_fields(headers: http.Headers, *names: bytes) -> dict[bytes, list[str]]:
    """``field_values`` of ``names``, each of them present then removed: one rewrite of the fields, where
    ``Headers.pop`` walks them twice for each name (and raises and catches a ``KeyError`` for one that is
    absent)."""
    found = field_values(headers, *names)
    drop_fields(headers, {name for name, values in found.items() if values})
    return found
