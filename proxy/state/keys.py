"""Names for state keys built from values agents control (user and session ids, hosts, tool names).

Such a value can carry a secret, and the state store is a file on disk: keys hold a digest of the
value, never the value.
"""

from __future__ import annotations

import hashlib


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:32]
