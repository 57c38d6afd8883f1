"""egressguard's own tokens (the admin tokens, agents' proxy tokens, a drill run's token): how they are
made, kept in files and compared."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from enum import StrEnum
from pathlib import Path

PREFIX = "eg_"
TOKEN_BYTES = 32


class TokenKind(StrEnum):
    """What a token opens, written after ``eg_`` in the token itself."""

    ADMIN = "adm"
    READ = "ro"
    AGENT = "agt"
    DRILL = "drl"


def new_token(kind: TokenKind) -> str:
    """256 random bits in URL-safe base64 behind ``eg_<kind>_``. The prefix keeps every token safe to pass
    as an argument of its own (base64's alphabet has ``-``, and one bare token in 64 began with it, which
    argparse takes for a flag), says what a token found somewhere is, and lets secret scanners find one
    leaked (``egressguard-token`` in the secrets pack)."""
    return f"{PREFIX}{kind}_{secrets.token_urlsafe(TOKEN_BYTES)}"


def token_digest(token: str) -> bytes:
    """What is stored of a token instead of the token.

    SHA-256 alone, neither salted nor keyed: a stored digest is only ever of a token made by
    ``new_token``, 256 random bits, which no dictionary holds and no search over the digest can reach,
    so a salt or a slow hash would protect nothing more. A key would have to be shared by every process
    that checks the digest (the workers and replicas sharing a Redis store), so it would sit beside the
    store and keep from it no one who can read both."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def same_token(digest: bytes, presented: str) -> bool:
    """Whether ``presented`` is the token ``digest`` was made of, compared in constant time (digests are
    all 32 bytes, so not even a token's length is told)."""
    return hmac.compare_digest(digest, token_digest(presented))


def token_file(path: Path, kind: TokenKind) -> str:
    """The token kept in ``path``, created (0600, from the start) when absent. A file left blank (a crash
    between creating and writing it, or ``touch``) holds no token anyone knows: it gets a fresh one,
    never an empty one. Raises OSError and UnicodeDecodeError."""
    # lexists: a link to nowhere is no absent file, and O_EXCL refuses it (it is read, and fails, below).
    if not os.path.lexists(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # made by another worker between the two calls
            _write_new(path, new_token(kind))
    token = path.read_text().strip()
    if token:
        return token
    fresh = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    _write_new(fresh, new_token(kind))
    fresh.replace(path)
    return path.read_text().strip()


def write_private(path: Path, data: bytes) -> None:
    """``data`` in ``path``, readable by its owner alone from the moment it exists, and no copy of an
    earlier file at ``path`` (whatever its mode) left open to others while it is written."""
    fresh = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    _write_new(fresh, data)
    fresh.replace(path)


def _write_new(path: Path, data: str | bytes) -> None:
    """Create ``path`` 0600 (O_EXCL: never through a link or over a file) and write ``data``."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as sink:
        sink.write(data.encode() if isinstance(data, str) else data)
