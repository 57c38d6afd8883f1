"""The admin listener's tokens: no spelling of an empty or absent token is ever granted access, and a
token file left empty (a crash between creating and writing it, or ``touch``) is never an empty token."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from proxy.admin.api import Control
from proxy.admin.http import Request
from proxy.admin.tokens import (
    FULL_TOKEN_FILE,
    READ_TOKEN_FILE,
    Access,
    AdminTokens,
    TokenFileError,
    load_tokens,
)
from proxy.config.policy import AdminSettings
from proxy.control.metrics import Metrics
from proxy.own_tokens import TokenKind, new_token
from proxy.runtime import Runtime

EMPTY_PRESENTATIONS = [
    None,
    "",
    "Bearer",
    "Bearer ",
    "Bearer  ",
    "Bearer \t",
    "bearer   ",
    "BEARER \r",
    "Bearer \x0b",
    "Basic ",
    " Bearer ",
]


@pytest.mark.parametrize("left_in_file", ["", "\n", "   \n", "\t"])
@pytest.mark.parametrize("name", [FULL_TOKEN_FILE, READ_TOKEN_FILE])
def test_an_empty_token_file_gets_a_fresh_token_and_no_empty_bearer_passes(
    tmp_path: Path, name: str, left_in_file: str
) -> None:
    (tmp_path / name).write_text(left_in_file)
    tokens = load_tokens(AdminSettings(), tmp_path, environ={})
    written = (tmp_path / name).read_text().strip()
    assert len(written) >= 32
    assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    assert written in (tokens.full, tokens.read)
    for presented in EMPTY_PRESENTATIONS:
        assert tokens.access(presented) is None, repr(presented)


@pytest.mark.parametrize("blank", ["", " ", "\t\n"])
def test_a_blank_token_variable_is_taken_as_unset(tmp_path: Path, blank: str) -> None:
    tokens = load_tokens(
        AdminSettings(),
        tmp_path,
        environ={"EGRESSGUARD_ADMIN_TOKEN": blank, "EGRESSGUARD_ADMIN_READ_TOKEN": blank},
    )
    assert tokens.full == (tmp_path / FULL_TOKEN_FILE).read_text().strip()
    assert tokens.read == (tmp_path / READ_TOKEN_FILE).read_text().strip()
    for presented in EMPTY_PRESENTATIONS:
        assert tokens.access(presented) is None, repr(presented)


@pytest.mark.parametrize("empty", ["", " ", "\t"])
def test_tokens_that_are_empty_grant_nothing(empty: str) -> None:
    tokens = AdminTokens(full=empty, read=empty)
    for presented in [*EMPTY_PRESENTATIONS, f"Bearer {empty}", "Bearer x"]:
        assert tokens.access(presented) is None, repr(presented)


def test_each_token_grants_its_access_in_any_scheme_case_and_nothing_near_it() -> None:
    tokens = AdminTokens(full="f" * 43, read="r" * 43)
    assert tokens.access("Bearer " + "f" * 43) is Access.FULL
    assert tokens.access("bearer " + "r" * 43) is Access.READ
    for near in ["f" * 42, "f" * 44, "F" * 43, "r" * 42, "f" * 43 + "\x00", "%66" * 43]:
        assert tokens.access("Bearer " + near) is None, near
    assert tokens.access("Basic " + "f" * 43) is None
    assert tokens.access("Token " + "f" * 43) is None


SECRET_PART = "kept-token-4c1d"


def _not_utf8(path: Path) -> None:
    path.write_bytes(SECRET_PART.encode() + b"\xff\xfe" + SECRET_PART.encode())


def _directory(path: Path) -> None:
    path.mkdir()


def _dangling_link(path: Path) -> None:
    path.symlink_to(path.with_name("nowhere"))


UNREADABLE = {
    "not UTF-8": (_not_utf8, "not UTF-8 text"),
    "a directory": (_directory, "Is a directory"),
    "a link to nowhere": (_dangling_link, "No such file or directory"),
}


@pytest.mark.parametrize("name", [FULL_TOKEN_FILE, READ_TOKEN_FILE])
@pytest.mark.parametrize("unreadable", UNREADABLE)
def test_a_token_file_that_cannot_be_read_is_named_with_why_and_nothing_it_holds(
    tmp_path: Path, name: str, unreadable: str
) -> None:
    make, why = UNREADABLE[unreadable]
    make(tmp_path / name)
    with pytest.raises(TokenFileError) as raised:
        load_tokens(AdminSettings(), tmp_path, environ={})
    assert str(tmp_path / name) in str(raised.value) and why in str(raised.value)
    assert SECRET_PART not in str(raised.value) and "\\x" not in str(raised.value)


def test_a_data_dir_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where the data dir should be")
    named = re.escape(f"{tmp_path / 'data' / FULL_TOKEN_FILE} cannot be read or created")
    with pytest.raises(TokenFileError, match=named):
        load_tokens(AdminSettings(), tmp_path / "data", environ={})


def test_a_token_variable_is_read_without_the_whitespace_around_it(tmp_path: Path) -> None:
    """A token variable written with a trailing newline or spaces is the token inside them: presented
    without them it grants its access, and blank presentations still grant nothing."""
    full, read = "f" * 43, "r" * 43
    tokens = load_tokens(
        AdminSettings(),
        tmp_path,
        environ={"EGRESSGUARD_ADMIN_TOKEN": f" {full}\n", "EGRESSGUARD_ADMIN_READ_TOKEN": f"\t{read} "},
    )
    assert tokens.access(f"Bearer {full}") is Access.FULL
    assert tokens.access(f"Bearer {read}") is Access.READ
    for presented in EMPTY_PRESENTATIONS:
        assert tokens.access(presented) is None, repr(presented)


class FailingStore:
    """What the proxy's readiness says while its Redis refuses connections."""

    async def reload(self, by: str) -> tuple[bool, list[str]]:
        raise AssertionError("not called")

    def record(self, event: dict[str, Any]) -> None:
        raise AssertionError("not called")

    def readiness(self) -> dict[str, str | None]:
        return {
            "policy": None,
            "state": "redis: AuthenticationError: WRONGPASS for user ops at 10.20.30.40:6380",
        }


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Basic Zm9vOmJhcg=="])
def test_readiness_without_a_token_names_the_failing_check_and_nothing_of_why(
    authorization: str | None,
) -> None:
    """A load balancer needs ready or not and which check fails; the failing dependency's message (an
    internal address, a user name) is for a token holder."""
    control = Control(Runtime(), Metrics(frozenset()), AdminTokens("full-1", "read-1"), FailingStore())
    headers = {"authorization": authorization} if authorization else {}
    answer = asyncio.run(control.handle(Request("GET", "/readyz", {}, headers)))
    assert answer.status == 503
    assert json.loads(answer.body)["checks"] == {"policy": "ok", "state": "failing"}
    assert b"10.20.30.40" not in answer.body and b"ops" not in answer.body
    detailed = asyncio.run(control.handle(Request("GET", "/readyz", {}, {"authorization": "Bearer read-1"})))
    assert json.loads(detailed.body)["checks"]["state"].startswith("redis: AuthenticationError")


@pytest.mark.parametrize(
    "written",
    ["{token}", "x=foo:{token}", "{token},y", "zz{token}zz", "a b\t{token}-", "/api/{token}/x"],
)
def test_a_token_is_found_written_alone_or_glued_inside_a_longer_value(written: str) -> None:
    full, read = new_token(TokenKind.ADMIN), new_token(TokenKind.READ)
    tokens = AdminTokens(full=full, read=read)
    for token in (full, read):
        assert tokens.written_in(["/api/v1/status", written.format(token=token)])


def test_a_text_holding_part_of_a_token_or_none_is_no_token_written() -> None:
    full = new_token(TokenKind.ADMIN)
    tokens = AdminTokens(full=full, read=new_token(TokenKind.READ))
    assert not tokens.written_in([full[:-1], full[1:], f"{full[:20]}:{full[20:]}", "a" * 16_000, ""])
    assert not AdminTokens(full="", read=" ").written_in(["", " ", "x"])
