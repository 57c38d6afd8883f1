"""The admin listener's tokens: no spelling of an empty or absent token is ever granted access, and a
token file left empty (a crash between creating and writing it, or ``touch``) is never an empty token."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.admin.tokens import FULL_TOKEN_FILE, READ_TOKEN_FILE, Access, AdminTokens, load_tokens
from proxy.config.policy import AdminSettings

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
