"""The admin listener's bearer tokens: a full token (operations) and a read-only one (health, metrics,
listings; what a dashboard or a Prometheus scraper gets). Each comes from the environment variable the
policy names or, without one, from a file under the data dir created on first start (mode 0600)."""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from proxy.config.policy import AdminSettings

FULL_TOKEN_FILE = "admin.token"  # noqa: S105 - a file name
READ_TOKEN_FILE = "admin-read.token"  # noqa: S105 - a file name
DEFAULT_FULL_ENV = "EGRESSGUARD_ADMIN_TOKEN"
DEFAULT_READ_ENV = "EGRESSGUARD_ADMIN_READ_TOKEN"


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
        offered = presented.strip().encode()
        if scheme.lower() != "bearer" or not offered:
            return None
        # An empty token is never one: it would match any blank bearer ("Bearer  ").
        full = hmac.compare_digest(offered, self.full.encode()) and bool(self.full.strip())
        read = hmac.compare_digest(offered, self.read.encode()) and bool(self.read.strip())
        return Access.FULL if full else Access.READ if read else None


class TokenFileError(Exception):
    """A token file that cannot be read or made: the message names the file and why, never what it holds."""


def load_tokens(
    settings: AdminSettings, data_dir: Path, environ: dict[str, str] | None = None
) -> AdminTokens:
    """Raises TokenFileError."""
    env = os.environ if environ is None else environ
    return AdminTokens(
        full=_token(env.get(settings.token_env or DEFAULT_FULL_ENV), data_dir / FULL_TOKEN_FILE),
        read=_token(env.get(settings.read_token_env or DEFAULT_READ_ENV), data_dir / READ_TOKEN_FILE),
    )


def _token(from_env: str | None, path: Path) -> str:
    if from_env and from_env.strip():
        return from_env.strip()
    try:
        return token_file(path)
    except UnicodeDecodeError:
        # Its message would quote the bytes it could not read, which are the token's.
        raise TokenFileError(f"the admin token file {path} cannot be read: it is not UTF-8 text") from None
    except OSError as error:
        raise TokenFileError(
            f"the admin token file {path} cannot be read or created: {error.strerror or type(error).__name__}"
        ) from None


def token_file(path: Path) -> str:
    """The token kept in ``path``, created (0600) when absent. A file left blank (a crash between creating
    and writing it, or ``touch``) holds no token anyone knows: it gets a fresh one, never an empty one."""
    # lexists: a link to nowhere is no absent file, and O_EXCL refuses it (it is read, and fails, below).
    if not os.path.lexists(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # made by another worker between the two calls
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as sink:
                sink.write(secrets.token_urlsafe(32))
    token = path.read_text().strip()
    if token:
        return token
    fresh = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    with os.fdopen(os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as sink:
        sink.write(secrets.token_urlsafe(32))
    fresh.replace(path)
    return path.read_text().strip()
