"""The admin listener's bearer tokens: a full token (operations) and a read-only one (health, metrics,
listings; what a dashboard or a Prometheus scraper gets). Each comes from the environment variable the
policy names or, without one, from a file under the data dir created on first start (mode 0600)."""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from proxy.config.policy import AdminSettings
from proxy.own_tokens import TokenKind, same_token, token_digest, token_file

FULL_TOKEN_FILE = "admin.token"  # noqa: S105 - a file name
READ_TOKEN_FILE = "admin-read.token"  # noqa: S105 - a file name
DEFAULT_FULL_ENV = "EGRESSGUARD_ADMIN_TOKEN"
DEFAULT_READ_ENV = "EGRESSGUARD_ADMIN_READ_TOKEN"


_TOKEN_RUN = re.compile(rb"[A-Za-z0-9_-]+")
"""A run of the characters of URL-safe base64, which every token is written in (a token set by hand may hold
others: it is then found only where the URL holds it alone)."""


class Access(StrEnum):
    READ = "read"
    FULL = "full"


@dataclass(frozen=True, slots=True)
class AdminTokens:
    full: str = field(repr=False)
    read: str = field(repr=False)

    def access(self, authorization: str | None) -> Access | None:
        """What a request's ``Authorization: Bearer`` header grants, compared in constant time."""
        scheme, _, presented = (authorization or "").partition(" ")
        offered = presented.strip()
        if scheme.lower() != "bearer" or not offered:
            return None
        full, read = self._granting(offered)
        return Access.FULL if full else Access.READ if read else None

    def written_in(self, texts: Iterable[str]) -> bool:
        """Whether one of the tokens is written anywhere in one of ``texts``, alone or glued inside a
        longer value (``x=foo:TOKEN``, ``TOKEN,y``): every stretch of a token's length within a run of the
        characters tokens are made of is compared with it in constant time, so how long the search takes
        tells nothing of how much of a token a text holds."""
        tokens = [token.encode() for token in (self.full, self.read) if token.strip()]
        for text in dict.fromkeys(texts):
            for run in _TOKEN_RUN.findall(text.encode("utf-8", "surrogatepass")):
                for token in tokens:
                    windows = (run[start : start + len(token)] for start in range(len(run) - len(token) + 1))
                    if any(hmac.compare_digest(window, token) for window in windows):
                        return True
        return False

    def _granting(self, offered: str) -> tuple[bool, bool]:
        # Both compared whatever the first says; an empty token is never one: it would match any blank
        # bearer ("Bearer  ").
        full = same_token(token_digest(self.full), offered) and bool(self.full.strip())
        read = same_token(token_digest(self.read), offered) and bool(self.read.strip())
        return full, read


class TokenFileError(Exception):
    """A token file that cannot be read or made: the message names the file and why, never what it holds."""


def load_tokens(
    settings: AdminSettings, data_dir: Path, environ: dict[str, str] | None = None
) -> AdminTokens:
    """Raises TokenFileError."""
    env = os.environ if environ is None else environ
    return AdminTokens(
        full=_token(
            env.get(settings.token_env or DEFAULT_FULL_ENV), data_dir / FULL_TOKEN_FILE, TokenKind.ADMIN
        ),
        read=_token(
            env.get(settings.read_token_env or DEFAULT_READ_ENV), data_dir / READ_TOKEN_FILE, TokenKind.READ
        ),
    )


def _token(from_env: str | None, path: Path, kind: TokenKind) -> str:
    if from_env and from_env.strip():
        return from_env.strip()
    try:
        return token_file(path, kind)
    except UnicodeDecodeError:
        # Its message would quote the bytes it could not read, which are the token's.
        raise TokenFileError(f"the admin token file {path} cannot be read: it is not UTF-8 text") from None
    except OSError as error:
        raise TokenFileError(
            f"the admin token file {path} cannot be read or created: {error.strerror or type(error).__name__}"
        ) from None
