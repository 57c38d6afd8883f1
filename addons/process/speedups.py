"""Direct equivalents of mitmproxy's general code paths that run many times a request.

mitmproxy is written for every use; a few of its general paths (a type check of every message field, a
header lookup that converts every field's name) cost more CPU per request than most addons. Each
replacement here gives the same result for every input (tests compare them with mitmproxy's own on
values of every kind) with less work, and is installed once, by the process that serves the proxy.
"""

from __future__ import annotations

import copy
import types
import typing
from collections.abc import Set
from dataclasses import fields
from typing import Any

from mitmproxy import connection, hooks, http, optmanager
from mitmproxy.utils import typecheck

FieldCheck = tuple[str, Any, tuple[type, ...] | None]
"""A message field's name, its declared type, and the classes a value of it may be an instance of (None
where mitmproxy's check is more than an ``isinstance``)."""
_FIELD_CHECKS: dict[type, tuple[FieldCheck, ...]] = {}


def accepted_classes(declared: Any) -> tuple[type, ...] | None:
    """The classes whose instances pass mitmproxy's ``check_option_type`` against ``declared``: a class,
    or a union of classes, with an int accepted for a float as it accepts one. None for any other kind of
    type (tuples, sequences, ``Any``, I/O), whose check is left to mitmproxy whatever the value."""
    union = typing.get_origin(declared) in (typing.Union, types.UnionType)
    accepted: list[type] = []
    for member in typing.get_args(declared) if union else (declared,):
        if (
            not isinstance(member, type)
            or member is typing.Any
            or typing.get_origin(member) is not None
            or issubclass(member, typing.IO)
        ):
            return None
        accepted += [member, int] if member is float else [member]
    return tuple(accepted)


def _field_checks(kind: type) -> tuple[FieldCheck, ...]:
    checks = _FIELD_CHECKS.get(kind)
    if checks is None:
        checks = tuple((field.name, field.type, accepted_classes(field.type)) for field in fields(kind))
        _FIELD_CHECKS[kind] = checks
    return checks


def _check_message_fields(message: http.MessageData) -> None:
    """mitmproxy's check of a new message's fields, with the same outcome: a value of an accepted class
    passes at once, and any other is handed to mitmproxy's checker, which raises its ``TypeError``."""
    for name, declared, accepted in _field_checks(type(message)):
        value = getattr(message, name)
        if accepted is None or not isinstance(value, accepted):
            typecheck.check_option_type(name, value, declared)


_LOOKUP = "_egressguard_lookup"
"""The attribute under which a ``Headers`` keeps its fields as they were indexed, and that index."""
_KEY_ENTRIES = 512
_KEYS: dict[str | bytes, bytes] = {}
"""Each name asked for, as the lower-case bytes it is compared as (at most ``_KEY_ENTRIES`` kept)."""


def _key(name: str | bytes) -> bytes:
    """``name`` as the lower-case bytes a field's name is compared with."""
    key = _KEYS.get(name)
    if key is None:
        if len(_KEYS) >= _KEY_ENTRIES:
            _KEYS.clear()
        key = _KEYS[name] = http._always_bytes(name).lower()
    return key


Index = tuple[tuple[tuple[bytes, bytes], ...], dict[bytes, list[bytes]]]
"""A tuple of header fields and the raw values of each lower-case name among them, in order."""


def _indexed(headers: http.Headers) -> Index | None:
    """The index of the fields the headers hold now, kept on them: every change to a ``Headers`` puts a
    new tuple of fields in place, and a tuple of tuples of bytes cannot change, so the index serves while
    the headers hold that very tuple. None for fields of any other kind (a list, which could change in
    place), which are walked at each lookup as mitmproxy walks them."""
    fields = headers.fields
    if type(fields) is not tuple:
        return None
    index: dict[bytes, list[bytes]] = {}
    for field in fields:
        if type(field) is not tuple:
            return None
        name, value = field
        lowered = name.lower()
        values = index.get(lowered)
        if values is None:
            index[lowered] = [value]
        else:
            values.append(value)
    kept = headers.__dict__[_LOOKUP] = (fields, index)
    return kept


def header_values(headers: http.Headers, name: str | bytes) -> list[str]:
    """``Headers.get_all``: the values of every field named ``name`` in any case, in order, as mitmproxy
    gives them, looked up in an index of the fields built once for them (``_indexed``), where mitmproxy
    lowers every field's name through a method call at each lookup (some 35 lookups a request)."""
    key = _KEYS.get(name) or _key(name)
    index = _index_of(headers)
    if index is None:
        return [http._native(value) for field, value in headers.fields if field.lower() == key]
    values = index.get(key)
    return [http._native(value) for value in values] if values else []


def _index_of(headers: http.Headers) -> dict[bytes, list[bytes]] | None:
    kept = headers.__dict__.get(_LOOKUP)
    if kept is None or kept[0] is not headers.fields:
        kept = _indexed(headers)
        if kept is None:
            return None
    return kept[1]


def raw_field_values(headers: http.Headers, name: bytes) -> list[bytes] | None:
    """The raw values of every field named ``name`` (lower case), in order, from the headers' index; None
    where their fields cannot be indexed (``_indexed``) and have to be walked."""
    index = _index_of(headers)
    if index is None:
        return None
    return index.get(name, [])


def drop_named_fields(headers: http.Headers, names: Set[bytes]) -> None:
    """Remove every field named one of ``names`` (lower case) in one rewrite of the fields, the index of
    those left made from the index of those there were, where it would be built anew by the next lookup."""
    index = _index_of(headers)
    kept = tuple(field for field in headers.fields if field[0].lower() not in names)
    headers.fields = kept
    if index is not None:
        headers.__dict__[_LOOKUP] = (
            kept,
            {name: values for name, values in index.items() if name not in names},
        )


def header_count(headers: http.Headers) -> int:
    """``len(headers)``, which ``if headers`` calls too: how many names in any case the fields hold, the
    size of their index, where mitmproxy lowers every field's name into a set at each call."""
    index = _index_of(headers)
    return len({field.lower() for field, _ in headers.fields}) if index is None else len(index)


def header_value(headers: http.Headers, name: str | bytes, default: Any = None) -> Any:
    """``Headers.get``: the values of ``name`` joined as mitmproxy folds them, or ``default`` where there
    is none, without the ``KeyError`` the mapping's own ``get`` raises and catches for a missing name."""
    values = header_values(headers, name)
    return ", ".join(values) if values else default


def has_header(headers: http.Headers, name: object) -> bool:
    """``name in headers``: whether a field has that name in any case."""
    return bool(header_values(headers, name))  # type: ignore[arg-type]


_UNCHANGEABLE = frozenset({type(None), bool, int, float, str, bytes})
"""Classes whose instances ``copy.deepcopy`` returns as they are (a subclass of one it copies)."""


def option_current(option: optmanager._Option) -> Any:
    """``_Option.current``: the option's value, or its default where none is set, deep-copied, so that a
    reader cannot change the option's value in place; a value of a class that cannot change (a flag, a
    number, a string) is returned as it is, which is what the copy returns for it, without its walk."""
    value = option.value
    if value is optmanager.unset:
        value = option._default
    return value if type(value) in _UNCHANGEABLE else copy.deepcopy(value)


def option_value(options: optmanager.OptManager, name: str) -> Any:
    """``OptManager.__getattr__`` (every ``ctx.options.name`` read): the named option's current value."""
    option = options._options.get(name)
    if option is None:
        raise AttributeError(f"No such option: {name}")
    return option_current(option)


_HOOK_FIELDS: dict[type, tuple[str, ...]] = {}
"""The names of each hook class's fields, in order (a class's fields are fixed when it is made)."""


def hook_args(hook: hooks.Hook) -> list[Any]:
    """``Hook.args``: the values of the hook's fields, in order, as its handlers are called with them."""
    kind = type(hook)
    names = _HOOK_FIELDS.get(kind)
    if names is None:
        names = _HOOK_FIELDS[kind] = tuple(field.name for field in fields(hook))  # type: ignore[arg-type]
    return [getattr(hook, name) for name in names]


_connection_equal = connection.Connection.__eq__


def connection_equal(self: connection.Connection, other: object) -> bool:
    """``Connection.__eq__``: mitmproxy's layers compare connections several times for each piece of data
    a connection receives, and its check that ``other`` is a connection asks the abstract class's
    instance check. The same connection, and a client or server of mitmproxy's own classes, are answered
    without it (equal by id, as mitmproxy answers them); anything else is asked of mitmproxy's own."""
    if self is other:
        return True
    kind = type(other)
    if kind is connection.Client or kind is connection.Server:
        same: bool = self.id == other.id  # type: ignore[attr-defined]
        return same
    return bool(_connection_equal(self, other))


def install_speedups() -> None:
    """Give mitmproxy's general code paths that run many times a request their direct equivalents.

    Where Python runs without -O, mitmproxy checks every field of each request and response it builds
    (``MessageData.__post_init__``) with a general checker that formats an error message for each field
    and raises and catches a ``TypeError`` for each optional field left empty: about 20 µs of a request's
    CPU and 15 of a response's, and three exceptions a message whose tracebacks are reference cycles the
    garbage collector has to find. The check stays, done as ``_check_message_fields`` does it.

    A header is looked up some 35 times a request (mitmproxy's HTTP/1 layer reads the body's framing
    headers at each step, the addons read theirs): each lookup lowered every field's name through a
    method call, and a missing one raised and caught a ``KeyError``. Each ``Headers`` indexes its fields
    by lower-case name once for the tuple of fields it holds, and a lookup is a dictionary's
    (``header_values``, ``header_value``, ``has_header``): about a quarter of the walk's time at 16
    fields. Their count (``len``, and ``if headers``) is the index's size (``header_count``).

    Every read of an option (``ctx.options.name``, many times a request in mitmproxy's layers and
    addons) deep-copied its value, a flag or a number included, through ``copy.deepcopy``'s general
    walk: a value that cannot change is returned as it is (``option_current``), as that copy returns it.

    Each event's arguments (``Hook.args``, a dozen events a request) were read through
    ``dataclasses.fields``, which builds the list of the class's fields anew each time: the names are
    kept per class (``hook_args``).

    Connections are compared (``connection_equal``) without the abstract class's instance check where
    both are mitmproxy's own client or server: several times for each piece of data received, which is
    each event of a stream whose events arrive one at a time."""
    if "__post_init__" in vars(http.MessageData):  # absent under -O, where mitmproxy checks nothing
        http.MessageData.__post_init__ = _check_message_fields  # type: ignore[method-assign]
    http.Headers.get_all = header_values  # type: ignore[assignment]
    http.Headers.get = header_value  # type: ignore[assignment]
    http.Headers.__contains__ = has_header  # type: ignore[assignment]
    http.Headers.__len__ = header_count  # type: ignore[method-assign, assignment]
    optmanager._Option.current = option_current  # type: ignore[method-assign, assignment]
    optmanager.OptManager.__getattr__ = option_value  # type: ignore[method-assign]
    hooks.Hook.args = hook_args  # type: ignore[method-assign, assignment]
    connection.Connection.__eq__ = connection_equal  # type: ignore[method-assign]
