"""The vault's pure logic: placeholders, sealing, restoring in text and in streamed JSON, known values."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest

from proxy.scanning.validators import VAULT_PLACEHOLDER
from proxy.scanning.vault import (
    RestoringFilter,
    Scope,
    Sealer,
    Vault,
    known_replacer,
    map_strings,
    placeholder_for,
    restore,
    restore_strings,
)
from proxy.state import SqliteStateStore

KEY = b"k" * 32
PASSWORD = 'Xk9v2"LmQ\\p7Rz'
AGENT = Scope("support-bot")


def vault(scope: Scope = AGENT, store: SqliteStateStore | None = None) -> Vault:
    return Vault(store or SqliteStateStore(None), scope, Sealer(os.urandom(32)), KEY, 600, 1000)


def test_placeholder_is_stable_per_scope_and_copyable() -> None:
    """One secret, one placeholder within a scope; another scope or session gets another one."""
    first = placeholder_for(PASSWORD, AGENT, KEY)
    assert first == placeholder_for(PASSWORD, AGENT, KEY)
    assert VAULT_PLACEHOLDER.fullmatch(first)
    others = {
        placeholder_for(PASSWORD, Scope("other-bot"), KEY),
        placeholder_for(PASSWORD, Scope("support-bot", "s-1"), KEY),
        placeholder_for(PASSWORD, AGENT, b"x" * 32),
        placeholder_for(PASSWORD + "x", AGENT, KEY),
    }
    assert first not in others and len(others) == 4


def test_sealed_entry_opens_only_in_its_scope_and_place() -> None:
    """AES-GCM with the scope and placeholder as associated data: moved or tampered, it does not open."""
    sealer = Sealer(os.urandom(32))
    sealed = sealer.seal(AGENT, "egv_" + "0" * 20, PASSWORD)
    assert PASSWORD not in sealed
    assert sealer.open(AGENT, "egv_" + "0" * 20, sealed) == PASSWORD
    assert sealer.open(Scope("other-bot"), "egv_" + "0" * 20, sealed) is None
    assert sealer.open(AGENT, "egv_" + "1" * 20, sealed) is None
    assert sealer.open(AGENT, "egv_" + "0" * 20, sealed[:-4] + "AAAA") is None
    assert Sealer(os.urandom(32)).open(AGENT, "egv_" + "0" * 20, sealed) is None
    assert sealer.open(AGENT, "egv_" + "0" * 20, 42) is None


def test_vault_resolves_only_its_own_scope() -> None:
    """What one agent vaulted resolves for it, and for no other agent or session on the same store."""
    store = SqliteStateStore(None)
    sealer = Sealer(os.urandom(32))
    mine = Vault(store, AGENT, sealer, KEY, 600, 1000)
    placeholder = mine.stand_in(PASSWORD)
    assert mine.commit() == {placeholder: PASSWORD}
    assert mine.is_new(placeholder)
    again = Vault(store, AGENT, sealer, KEY, 600, 1000)
    assert again.resolver("x")(placeholder) == PASSWORD
    again.stand_in(PASSWORD)
    again.commit()
    assert not again.is_new(placeholder)
    for scope in (Scope("other-bot"), Scope("support-bot", "s-1")):
        assert Vault(store, scope, sealer, KEY, 600, 1000).resolver("x")(placeholder) is None
    stored = json.dumps(store.merge(AGENT.key, {}, 600))
    assert PASSWORD not in stored and placeholder in stored


def test_restore_in_text_leaves_unknown_placeholders() -> None:
    known = {"egv_" + "a" * 20: PASSWORD}
    text = f"use egv_{'a' * 20} not egv_{'b' * 20}"
    assert restore(text, known.get) == f"use {PASSWORD} not egv_{'b' * 20}"


def test_map_strings_escapes_values_inside_json_strings_at_any_depth() -> None:
    """A value lands in arguments given as JSON text, and JSON text inside that, correctly escaped."""
    placeholder = "egv_" + "c" * 20
    inner = json.dumps({"dsn": f"postgres://app:{placeholder}@db/prod"})
    document = {"arguments": json.dumps({"command": inner, "list": [placeholder]})}
    result = map_strings(document, lambda text: restore(text, {placeholder: PASSWORD}.get))
    arguments = json.loads(result["arguments"])
    assert json.loads(arguments["command"])["dsn"] == f"postgres://app:{PASSWORD}@db/prod"
    assert arguments["list"] == [PASSWORD]


@pytest.mark.parametrize("json_text", [False, True])
def test_streamed_placeholder_split_at_every_boundary_is_restored(json_text: bool) -> None:
    """Whatever byte boundaries the deltas fall on, the agent reads the value (escaped inside JSON)."""
    placeholder = "egv_" + "0123456789abcdef0123"
    stream = (
        json.dumps({"password": placeholder, "note": "e eg egv egv_ fine"})
        if json_text
        else (f"pass {placeholder}, then e and egv_12 end e")
    )
    expected = stream.replace(placeholder, json.dumps(PASSWORD)[1:-1] if json_text else PASSWORD)
    for first in range(len(stream)):
        for second in range(first, len(stream), 7):
            flt = RestoringFilter({placeholder: PASSWORD}.get, json_text=json_text)
            pieces = [stream[:first], stream[first:second], stream[second:]]
            assert "".join(flt.feed(piece) for piece in pieces) + flt.flush() == expected
    if json_text:
        assert json.loads(expected)["password"] == PASSWORD


def _nested_arguments(placeholder: str, depth: int) -> str:
    """Tool arguments whose ``dsn`` holds the placeholder inside ``depth`` levels of JSON text."""
    value: object = {"dsn": f"postgres://app:{placeholder}@db/prod", "note": 'say "hi" {x}'}
    for level in range(depth - 1):
        value = {"payload": json.dumps(value), "level": level}
    return json.dumps(value)


def _unwrap(arguments: str, depth: int) -> object:
    value = json.loads(arguments)
    for _ in range(depth - 1):
        value = json.loads(value["payload"])
    return value


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_streamed_placeholder_in_json_inside_json_is_escaped_for_every_level(depth: int) -> None:
    """A placeholder inside JSON text inside an argument string (to any depth) reaches the agent as the
    value once every level is decoded, wherever the deltas split the escapes and the placeholder."""
    placeholder = "egv_" + "0123456789abcdef0123"
    stream = _nested_arguments(placeholder, depth)
    for size in (1, 2, 3, 5, 8, 13, len(stream)):
        flt = RestoringFilter({placeholder: PASSWORD}.get, json_text=True)
        sent = "".join(flt.feed(stream[at : at + size]) for at in range(0, len(stream), size)) + flt.flush()
        assert _unwrap(sent, depth) == {
            "dsn": f"postgres://app:{PASSWORD}@db/prod",
            "note": 'say "hi" {x}',
        }


def test_streamed_placeholder_in_a_plain_string_with_quotes_is_escaped_once() -> None:
    """A string that is not JSON text (it does not start with a brace) is one level, whatever quotes and
    braces it holds before the placeholder."""
    placeholder = "egv_" + "b" * 20
    arguments = json.dumps(
        {"command": f'echo "{{" "[" && PGPASSWORD={placeholder} psql', "list": [placeholder]}
    )
    flt = RestoringFilter({placeholder: PASSWORD}.get, json_text=True)
    sent = "".join(flt.feed(char) for char in arguments) + flt.flush()
    assert json.loads(sent) == {"command": f'echo "{{" "[" && PGPASSWORD={PASSWORD} psql', "list": [PASSWORD]}


def test_streamed_placeholder_outside_a_string_is_written_plain() -> None:
    """JSON text with a placeholder outside any string (invalid as it stands) gets the value as is."""
    placeholder = "egv_" + "d" * 20
    flt = RestoringFilter({placeholder: "abc"}.get, json_text=True)
    assert flt.feed(f'{{"a": "x\\"y", "b": {placeholder}}}') + flt.flush() == '{"a": "x\\"y", "b": abc}'


def test_known_values_are_replaced_only_as_whole_words() -> None:
    """Values the scope holds are replaced where they stand alone, not inside longer words, longest first."""
    known = {"egv_" + "e" * 20: PASSWORD, "egv_" + "f" * 20: "hunter22", "egv_" + "a" * 20: "hunter22!x"}
    known["egv_" + "9" * 20] = "abc"
    replace = known_replacer(known)
    assert replace is not None
    text = f'{{"pw": "{PASSWORD}"}} hunter22 xhunter22 hunter22x hunter22!x abc'
    assert replace(text) == (
        f'{{"pw": "egv_{"e" * 20}"}} egv_{"f" * 20} xhunter22 hunter22x egv_{"a" * 20} abc'
    )
    assert known_replacer({"egv_" + "9" * 20: "abc"}) is None


def test_restore_strings_reaches_every_string_outside_the_skipped_places() -> None:
    """Every string of a document (lists, JSON text inside strings) resolves, skipped places and keys
    aside; each resolver is asked for the string's locator; nothing to resolve gives the same object."""
    placeholder = "egv_" + "a" * 20
    document = {
        "text": f"said {placeholder}",
        "extra": {"env": [f"PW={placeholder}"], "payload": json.dumps({"pw": placeholder}), placeholder: 1},
    }
    places: list[str] = []

    def resolver(where: str) -> Callable[[str], str | None]:
        places.append(where)
        return {placeholder: PASSWORD}.get

    restored = restore_strings(document, resolver, {("text",)}, kind="message_start")
    assert restored["text"] == document["text"]
    assert restored["extra"]["env"] == [f"PW={PASSWORD}"]
    assert json.loads(restored["extra"]["payload"]) == {"pw": PASSWORD}
    assert placeholder in restored["extra"]
    assert places == ["message_start extra.env[0]", "message_start extra.payload"]
    untouched = {"a": ["b", {"c": "d"}]}
    assert restore_strings(untouched, resolver) is untouched


def test_a_session_beyond_its_cap_forgets_the_secrets_sent_least_recently_and_never_leaks_them() -> None:
    """A session holds ``max_entries`` secrets: the one sent least recently is forgotten, its placeholder
    comes back as the placeholder (recorded as a use that did not resolve), never as the secret; one sent
    again stays."""
    store = SqliteStateStore(None)
    sealer = Sealer(os.urandom(32))
    scope = Scope("support-bot", "s-1")
    secrets = [f"{PASSWORD}-{index}" for index in range(5)]
    placeholders = []
    for index, secret in enumerate(secrets):
        turn = Vault(store, scope, sealer, KEY, 600, 3)
        placeholders.append(turn.stand_in(secret))
        if index == 4:
            turn.stand_in(secrets[1])
        turn.commit()
    later = Vault(store, scope, sealer, KEY, 600, 3)
    assert set(later.known()) == {placeholders[1], placeholders[3], placeholders[4]}
    text = " ".join(placeholders)
    restored = restore(text, later.resolver("x"))
    assert restored == " ".join([placeholders[0], secrets[1], placeholders[2], secrets[3], secrets[4]])
    assert secrets[0] not in restored and secrets[2] not in restored
    forgotten = {use.placeholder for use in later.uses if use.value_fingerprint is None}
    assert forgotten == {placeholders[0], placeholders[2]}


def test_an_agent_minting_sessions_keeps_a_bounded_vault_and_other_agents_keep_theirs() -> None:
    """Every session's entries count toward the agent's vault (one kind of key): sessions minted per
    request push out the agent's least recently used sessions, never another agent's."""
    store = SqliteStateStore(None, keys_per_kind=20)
    sealer = Sealer(os.urandom(32))
    other = Vault(store, Scope("billing-bot", "b-1"), sealer, KEY, 600, 1000)
    kept = other.stand_in(PASSWORD)
    other.commit()
    for index in range(200):
        minted = Vault(store, Scope("support-bot", f"s-{index}"), sealer, KEY, 600, 1000)
        minted.stand_in(f"{PASSWORD}-{index}-a")
        minted.stand_in(f"{PASSWORD}-{index}-b")
        minted.commit()
    alive = [
        index
        for index in range(200)
        if Vault(store, Scope("support-bot", f"s-{index}"), sealer, KEY, 600, 1000).known()
    ]
    assert alive == list(range(190, 200))
    assert Vault(store, Scope("billing-bot", "b-1"), sealer, KEY, 600, 1000).known() == {kept: PASSWORD}
    assert store.forgotten == 190
