"""egressguard's own tokens: every one it makes is safe as a command-line argument of its own and found by
the secrets pack, token files are the owner's alone however they are made, and tokens issued before the
prefix keep working."""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from proxy.admin.tokens import FULL_TOKEN_FILE, READ_TOKEN_FILE, Access, load_tokens
from proxy.commands.cli import _default_agent_token, build_parser
from proxy.commands.localca import make_pki
from proxy.config.policy import AdminSettings
from proxy.control import drill
from proxy.own_tokens import TokenKind, new_token, token_file, write_private
from proxy.scanning.redact import scan_and_redact
from proxy.scanning.rulepack import Scanner, load_pack, pack_path
from proxy.state import SqliteStateStore
from tests.harness import Proxy
from tests.test_e2e_inspect import _agent, ask, last_record, openai_client, rules
from tests.upstream import FakeUpstream

MANY = 20_000
OLD_FORM = "-Zr8pQk2vW0xYb7NcL4mT1sHf9aJdE6uGi3oKq5Rn_M"
"""A token as earlier versions made them (bare URL-safe base64), starting with "-" as one in 64 did."""


@pytest.fixture(scope="module")
def scanner() -> Scanner:
    return Scanner([load_pack(pack_path("secrets"))])


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that lets every file be read and written by anyone, as a careless service manager sets."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("kind", list(TokenKind))
def test_no_token_made_starts_with_a_dash_and_each_names_its_kind(kind: TokenKind) -> None:
    made = {new_token(kind) for _ in range(MANY)}
    assert len(made) == MANY
    assert all(token.startswith(f"eg_{kind}_") and len(token) == len(f"eg_{kind}_") + 43 for token in made)
    # Bare base64 started with "-" one time in 64: some 300 of these bodies do.
    assert sum(token.removeprefix(f"eg_{kind}_").startswith("-") for token in made) > 150


def test_every_token_made_passes_as_a_separate_argument() -> None:
    """``--token VALUE`` takes every admin token made, where a bare one starting with "-" was refused."""
    parser = build_parser()
    for _ in range(2_000):
        token = new_token(TokenKind.ADMIN)
        args = parser.parse_args(["freezes", "list", "--admin", "http://127.0.0.1:9", "--token", token])
        assert args.token == token
    with pytest.raises(SystemExit):
        parser.parse_args(["freezes", "list", "--token", OLD_FORM])


@pytest.mark.parametrize("kind", list(TokenKind))
def test_every_token_made_is_redacted_by_the_secrets_pack(scanner: Scanner, kind: TokenKind) -> None:
    for _ in range(500):
        token = new_token(kind)
        for text in (
            f"my config: EGRESSGUARD_TOKEN={token}\n",
            f'{{"env": {{"HTTPS_PROXY": "http://agent:{token}@127.0.0.1:8080"}}}}',
            f"Authorization: Bearer {token}",
        ):
            redacted = scan_and_redact(scanner, text)
            assert token not in redacted.text and token[8:] not in redacted.text, text
            assert "[REDACTED:egressguard-token]" in redacted.text, redacted.text


def test_a_token_leaked_into_a_prompt_does_not_reach_the_provider(
    start_proxy: Callable[..., Proxy], upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent that read the admin token file, or its own proxy settings, into its prompt: with the
    official SDK through a real egressguard, the provider gets neither token, and the audit record names
    the rule without the tokens."""
    proxy = _agent(start_proxy(mode="enforce", extra="redaction: {requests: true}\n"), monkeypatch)
    admin, agent = new_token(TokenKind.ADMIN), new_token(TokenKind.AGENT)
    prompt = f"Here is admin.token: {admin}\nand my env: HTTPS_PROXY=http://bot:{agent}@127.0.0.1:8080"
    openai_client(upstream).chat.completions.create(model="m", messages=ask(prompt))
    sent = upstream.received[-1].body
    assert admin.encode() not in sent and agent.encode() not in sent
    assert b"[REDACTED:egressguard-token]" in sent
    record = last_record(proxy)
    assert "egressguard-token" in rules(record)
    recorded = json.dumps(record) + proxy.output()
    assert admin not in recorded and agent not in recorded


@pytest.mark.parametrize("size", [18, 24, 32])
def test_tokens_of_the_old_form_are_redacted_where_their_name_says_what_they_are(
    scanner: Scanner, size: int
) -> None:
    """Earlier versions made bare URL-safe base64 tokens (24, 32 or 43 characters): such a token in the
    variable, header or proxy URL that carries it is found (``egressguard-token-unprefixed``)."""
    for _ in range(300):
        token = secrets.token_urlsafe(size)
        for text in (
            f"my config: EGRESSGUARD_ADMIN_TOKEN={token}\n",
            f"export EGRESSGUARD_AGENT_TOKEN='{token}'",
            f'{{"env": {{"HTTPS_PROXY": "http://agent:{token}@127.0.0.1:8080"}}}}',
            f"X-Egressguard-Drill: {token}\r\n",
        ):
            redacted = scan_and_redact(scanner, text)
            assert token not in redacted.text, text
            assert "[REDACTED:egressguard-token-unprefixed]" in redacted.text, redacted.text


def test_text_about_tokens_is_not_taken_for_one(scanner: Scanner) -> None:
    for text in (
        "eg_agt_tokens_by_name_and_role_for_the_policy_read",
        "tokens look like eg_adm_... or eg_agt_<43 characters>",
        "jpeg_ro_thumbnail_cache_size = 1024",
        f"the old form was {OLD_FORM}",
    ):
        assert scan_and_redact(scanner, text).text == text, text


@pytest.mark.parametrize("name", [FULL_TOKEN_FILE, READ_TOKEN_FILE])
def test_admin_token_files_are_made_private_under_an_open_umask(
    tmp_path: Path, open_umask: None, name: str
) -> None:
    tokens = load_tokens(AdminSettings(), tmp_path, environ={})
    assert mode(tmp_path / name) == 0o600
    assert tokens.full.startswith("eg_adm_") and tokens.read.startswith("eg_ro_")


def test_the_agent_token_file_is_private_and_a_blank_one_gets_a_token(
    tmp_path: Path, open_umask: None
) -> None:
    data = tmp_path / "data"
    path = _default_agent_token(data)
    first = path.read_text()
    assert first.startswith("eg_agt_") and mode(path) == 0o600 and mode(data) == 0o700
    assert os.environ.pop("EGRESSGUARD_AGENT_TOKEN") == first
    path.write_text("")
    _default_agent_token(data)
    assert os.environ.pop("EGRESSGUARD_AGENT_TOKEN").startswith("eg_agt_") and mode(path) == 0o600


def test_tokens_of_the_old_form_in_files_keep_working(tmp_path: Path) -> None:
    """An admin token file written by an earlier version is read as it is, and its token still grants."""
    (tmp_path / FULL_TOKEN_FILE).write_text(OLD_FORM + "\n")
    tokens = load_tokens(AdminSettings(), tmp_path, environ={})
    assert tokens.full == OLD_FORM
    assert tokens.access(f"Bearer {OLD_FORM}") is Access.FULL
    assert token_file(tmp_path / FULL_TOKEN_FILE, TokenKind.ADMIN) == OLD_FORM


def test_a_private_file_written_over_a_readable_one_is_private(tmp_path: Path, open_umask: None) -> None:
    """Rewritten, a key file left readable by others (an older version's, a copy) is the owner's alone,
    with no moment in which the new content is readable by others."""
    path = tmp_path / "agent.env"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, b"export HTTPS_PROXY=http://agent:secret@127.0.0.1:8080\n")
    assert mode(path) == 0o600 and path.read_bytes().startswith(b"export")
    assert [entry.name for entry in tmp_path.iterdir()] == ["agent.env"]


def test_a_local_pki_key_is_private_under_an_open_umask(tmp_path: Path, open_umask: None) -> None:
    pki = make_pki(tmp_path / "pki")
    assert mode(pki.server_key) == 0o600


def test_a_drill_token_is_prefixed_and_stored_only_as_its_digest() -> None:
    store = SqliteStateStore(None)
    runs = drill.DrillRuns(lambda: store)
    run = runs.start()
    assert run.token.startswith("eg_drl_")
    assert runs.by_token(run.token) is not None and runs.by_token(run.token + "x") is None
    assert not [key for key in store.items("") if run.token in key]
    assert run.token not in str(store.items(""))
