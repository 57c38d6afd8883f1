"""The reversible vault: a secret in a request leaves as a placeholder the model copies, and the placeholder
in what comes back reaches the agent as the secret again, for the agent (and session) that sent it only.

- A placeholder is ``egv_`` and 20 lowercase hex digits: a keyed HMAC of the scope and the value, so one
  secret always reads the same within its scope (a conversation stays coherent turn after turn), two
  scopes never share one, and nothing about the value can be read from it. Letters and digits only, so
  a model copies it whole, and JSON, shells and URLs carry it without escaping.
- Entries live in the state store under their scope (``StateStore.merge``: one map per agent and
  session, each field expiring on its own), sealed with AES-GCM under a key of their own; the scope and
  the placeholder are the associated data, so an entry copied elsewhere in the store does not open.
- Values a scope holds are also replaced wherever they appear literally in later requests: a password
  restored into a tool call comes back in the conversation's history, where no rule may recognise it.
- On the way back placeholders are replaced as text streams: a possible beginning of one is held back
  until it is decided, whatever the deltas' boundaries. In JSON text (tool arguments as they stream)
  the value is escaped for the string it lands in.

Nothing here logs or returns a vaulted value except to the restore path; findings carry the placeholder
and the value's keyed fingerprint.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable, Collection, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import regex
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from proxy.dialects.locator import Step, format_locator
from proxy.scanning.redact import fingerprint
from proxy.scanning.residual import JsonScan
from proxy.scanning.validators import VAULT_PLACEHOLDER
from proxy.state import StateStore, digest
from proxy.wire import jsontext

PREFIX = "egv_"
DIGITS = 20
_PARTIAL = regex.compile(rf"(?r)e(?:g(?:v(?:_[0-9a-f]{{0,{DIGITS - 1}}})?)?)?\Z")
_NONCE_BYTES = 12
MIN_LITERAL = 4
"""Known values shorter than this are not replaced where no rule finds them: too likely to be a word."""

Resolve = Callable[[str], str | None]


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose secrets: an agent, and within it a session when the turn names one."""

    agent: str
    session: str | None = None

    @property
    def key(self) -> str:
        """The state key of the scope's map (a session id is agent-controlled: kept as a digest)."""
        return f"vault:{self.agent}:{digest(self.session) if self.session else '-'}"


def placeholder_for(value: str, scope: Scope, key: bytes) -> str:
    return PREFIX + fingerprint(f"{scope.key}\0{value}", key)[:DIGITS]


class Sealer:
    """AES-GCM under the vault key, bound to the scope and placeholder as associated data."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, scope: Scope, placeholder: str, value: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, value.encode("utf-8", "surrogatepass"), _bound(scope, placeholder))
        return base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, scope: Scope, placeholder: str, sealed: object) -> str | None:
        """The value, or None for an entry that does not open (another key, another scope, tampered)."""
        if not isinstance(sealed, str):
            return None
        try:
            raw = base64.b64decode(sealed, validate=True)
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _bound(scope, placeholder))
        except (InvalidTag, ValueError, binascii.Error):
            return None
        return plain.decode("utf-8", "surrogatepass")


def _bound(scope: Scope, placeholder: str) -> bytes:
    return f"{scope.key}\0{placeholder}".encode()


@dataclass(frozen=True, slots=True)
class Use:
    """A placeholder met on the way back: resolved (with the value's fingerprint) or not."""

    placeholder: str
    where: str
    value_fingerprint: str | None


@dataclass
class Vault:
    """One turn's access to its scope's vault. ``stand_in`` hands out placeholders while a request is
    rewritten; ``commit`` stores them and learns what the scope already held; ``resolve`` answers on the
    way back and records each use."""

    store: StateStore
    scope: Scope
    sealer: Sealer
    fingerprint_key: bytes
    ttl_s: float
    max_entries: int
    """The most entries the scope keeps (the store forgets the least recently sent beyond it, and the
    entries of the agent's least recently used sessions beyond its cap for the kind): a forgotten
    placeholder stays a placeholder on the way back, recorded as unresolved."""
    uses: list[Use] = field(default_factory=list)
    _pending: dict[str, str] = field(default_factory=dict)
    _known: dict[str, str] | None = None
    _new: set[str] = field(default_factory=set)
    _by_fingerprint: dict[str, str] = field(default_factory=dict)

    def placeholder(self, value: str) -> str:
        return placeholder_for(value, self.scope, self.fingerprint_key)

    def stand_in(self, value: str) -> str:
        placeholder = self.placeholder(value)
        self._pending[placeholder] = value
        self._by_fingerprint[fingerprint(value, self.fingerprint_key)] = placeholder
        return placeholder

    def placeholder_of(self, value_fingerprint: str) -> str | None:
        """The placeholder handed out this turn for the value with this fingerprint."""
        return self._by_fingerprint.get(value_fingerprint)

    def commit(self) -> dict[str, str]:
        """Store the placeholders handed out (refreshing their expiry) and return every value the scope
        holds, by placeholder."""
        sealed: dict[str, Any] = {
            placeholder: self.sealer.seal(self.scope, placeholder, value)
            for placeholder, value in self._pending.items()
        }
        before = self._open_all(
            self.store.merge(self.scope.key, sealed, self.ttl_s, capacity=self.max_entries)
        )
        self._new |= set(self._pending) - set(before)
        self._known = {**before, **self._pending}
        self._pending = {}
        return self._known

    def is_new(self, placeholder: str) -> bool:
        """Whether a committed placeholder entered the vault with this turn."""
        return placeholder in self._new

    def known(self) -> dict[str, str]:
        if self._known is None:
            self._known = self._open_all(
                self.store.merge(self.scope.key, {}, self.ttl_s, capacity=self.max_entries)
            )
        return self._known

    def resolver(self, where: str) -> Resolve:
        """Resolves placeholders met at ``where``, recording each use."""

        def resolve(placeholder: str) -> str | None:
            value = self.known().get(placeholder)
            value_fingerprint = None if value is None else fingerprint(value, self.fingerprint_key)
            self.uses.append(Use(placeholder, where, value_fingerprint))
            return value

        return resolve

    def _open_all(self, stored: Mapping[str, Any]) -> dict[str, str]:
        opened = {
            placeholder: self.sealer.open(self.scope, placeholder, sealed)
            for placeholder, sealed in stored.items()
        }
        return {placeholder: value for placeholder, value in opened.items() if value is not None}


# -- known values, in requests ------------------------------------------------------------------------------


def known_replacer(known: Mapping[str, str]) -> Callable[[str], str] | None:
    """A function replacing each known value (``known`` maps placeholders to values) not inside a longer
    word by its placeholder, longest first; None when no value is long enough to look for."""
    by_value = {value: placeholder for placeholder, value in known.items() if len(value) >= MIN_LITERAL}
    if not by_value:
        return None
    alternatives = "|".join(regex.escape(value) for value in sorted(by_value, key=len, reverse=True))
    pattern = regex.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])")
    return lambda text: pattern.sub(lambda match: by_value[match.group()], text)


# -- placeholders, on the way back --------------------------------------------------------------------------


def restore(text: str, resolve: Resolve) -> str:
    """Placeholders in plain text replaced by their values; one that does not resolve stays as it is."""
    if PREFIX not in text:
        return text
    return VAULT_PLACEHOLDER.sub(lambda match: resolve(match.group()) or match.group(), text)


def map_strings(value: Any, transform: Callable[[str], str]) -> Any:
    """A decoded JSON value with ``transform`` applied to every string value; a string that is itself a
    JSON object or array (tool arguments) is decoded, transformed the same way and encoded again, so a
    value lands correctly escaped at any depth."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in ("{", "[") and stripped[-1:] in ("}", "]"):
            try:
                inner = jsontext.loads(value)
            except (ValueError, RecursionError):
                return transform(value)
            mapped = map_strings(inner, transform)
            return value if mapped == inner else json.dumps(mapped, ensure_ascii=False, separators=(",", ":"))
        return transform(value)
    if isinstance(value, dict):
        return {name: map_strings(item, transform) for name, item in value.items()}
    if isinstance(value, list):
        return [map_strings(item, transform) for item in value]
    return value


def restore_strings(
    value: Any, resolver: Callable[[str], Resolve], skip: Collection[tuple[Step, ...]] = (), *, kind: str = ""
) -> Any:
    """A decoded JSON document with the placeholders of every string outside ``skip`` resolved (JSON
    inside strings too, escaped for where it lands; see ``map_strings``), the very same object when none
    changed. ``resolver`` gets the locator of each string (after ``kind``, an event's type) to record
    where each placeholder was met. Keys are left as they are: a value restored into a key would be a
    name the agent's code never expects."""

    def walk(item: Any, path: tuple[Step, ...]) -> Any:
        if path in skip:
            return item
        if isinstance(item, str):
            if PREFIX not in item:
                return item
            resolve = resolver(f"{kind} {format_locator(path)}".strip())
            restored = map_strings(item, lambda text: restore(text, resolve))
            return item if restored == item else restored
        if isinstance(item, dict):
            walked = {name: walk(inner, (*path, name)) for name, inner in item.items()}
            return item if all(walked[name] is inner for name, inner in item.items()) else walked
        if isinstance(item, list):
            items = [walk(inner, (*path, index)) for index, inner in enumerate(item)]
            return item if all(new is old for new, old in zip(items, item, strict=True)) else items
        return item

    return walk(value, ())


class RestoringScan:
    """The residual scan of a stream's events (``proxy.scanning.residual.JsonScan``) followed by the
    restoring of placeholders in every string it reads (those the dialect does not filter as text or
    arguments itself), so a field no dialect models reaches the agent with its values too. A placeholder
    split across two events of such a field is not restored: nothing says when a field's text ends."""

    rewrites = True

    def __init__(self, scan: JsonScan, resolver: Callable[[str], Resolve]) -> None:
        self._scan = scan
        self._resolver = resolver

    @property
    def generation(self) -> int:
        return self._scan.generation

    def filter(
        self, kind: str, document: Any, handled: Collection[tuple[Step, ...]], *, alike: Hashable = None
    ) -> tuple[Any, bool]:
        filtered, changed = self._scan.filter(kind, document, handled, alike=alike)
        restored = restore_strings(filtered, self._resolver, handled, kind=kind)
        return restored, changed or restored is not filtered


class _JsonStrings:
    """Follows, character by character, how deep JSON text (as it streams) is inside strings: a string
    whose content starts with ``{`` or ``[`` is read as JSON text in its turn (tool arguments holding a
    JSON payload), whose own strings are followed the same way, to any depth."""

    _HEX_DIGITS = 4

    def __init__(self) -> None:
        self._in_string = False
        self._opening = False
        """In a string whose first non-blank character has not come yet (it says whether it is JSON)."""
        self._escape: str | None = None
        """The escape being read: "" after a backslash, then the hex digits of a ``\\u`` escape."""
        self._inner: _JsonStrings | None = None

    @property
    def depth(self) -> int:
        """How many strings enclose the current position: what a value written here is escaped for."""
        if not self._in_string:
            return 0
        return 1 + (self._inner.depth if self._inner is not None else 0)

    @property
    def settled(self) -> bool:
        """Nothing but a quote or a backslash can change the state (a fast path for plain text)."""
        if not self._in_string:
            return True
        return self._escape is None and not self._opening and (self._inner is None or self._inner.settled)

    def feed(self, text: str) -> None:
        if self.settled and '"' not in text and "\\" not in text:
            return
        for char in text:
            self._char(char)

    def _char(self, char: str) -> None:
        if not self._in_string:
            if char == '"':
                self._in_string, self._opening, self._inner = True, True, None
            return
        if self._escape is not None:
            self._escaped(char)
        elif char == "\\":
            self._escape = ""
        elif char == '"':
            self._in_string, self._opening, self._inner = False, False, None
        else:
            self._content(char)

    def _escaped(self, char: str) -> None:
        escape = self._escape or ""
        if escape == "" and char != "u":
            self._escape = None
            self._content(_SIMPLE_ESCAPES.get(char, char))
            return
        escape += char
        if len(escape) <= self._HEX_DIGITS:
            self._escape = escape
            return
        self._escape = None
        try:
            self._content(chr(int(escape[1:], 16)))
        except ValueError:
            self._content("\ufffd")

    def _content(self, char: str) -> None:
        """One character of the current string as its reader decodes it."""
        if self._opening:
            if char.isspace():
                return
            self._opening = False
            if char in "{[":
                self._inner = _JsonStrings()
        if self._inner is not None:
            self._inner._char(char)


_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


def escaped_for(value: str, depth: int) -> str:
    """``value`` as written inside ``depth`` nested JSON strings."""
    for _ in range(depth):
        value = json.dumps(value, ensure_ascii=False)[1:-1]
    return value


class RestoringFilter:
    """A stream text filter that replaces placeholders by their values. A trailing run that may still
    become a placeholder (``e``, ``egv_3f``, ...) is held until the next delta decides it, so a
    placeholder split anywhere across deltas is still replaced. With ``json_text`` the text is JSON as it
    streams (a tool call's arguments): a value landing inside a string is written with JSON escapes, once
    for each string it lies in (a JSON payload inside an argument string, and so on down)."""

    def __init__(self, resolve: Resolve, *, json_text: bool) -> None:
        self._resolve = resolve
        self._json_text = json_text
        self._held = ""
        self._strings = _JsonStrings()

    def feed(self, text: str) -> str:
        text = self._held + text
        partial = _PARTIAL.search(text)
        cut = partial.start() if partial is not None else len(text)
        self._held = text[cut:]
        return self._restore(text[:cut])

    def flush(self) -> str:
        held, self._held = self._held, ""
        return self._restore(held)

    def _restore(self, text: str) -> str:
        if not self._json_text:
            return restore(text, self._resolve)
        out: list[str] = []
        position = 0
        for match in VAULT_PLACEHOLDER.finditer(text) if PREFIX in text else ():
            before = text[position : match.start()]
            self._strings.feed(before)
            value = self._resolve(match.group())
            self._strings.feed(match.group())
            out += [before, match.group() if value is None else escaped_for(value, self._strings.depth)]
            position = match.end()
        self._strings.feed(text[position:])
        out.append(text[position:])
        return "".join(out)
