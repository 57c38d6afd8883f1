"""Names for state keys built from values agents control (user and session ids, hosts, tool names).

Such a value can carry a secret, and the state store is a file on disk: keys hold a digest of the
value, never the value.

A digest in a key's name is also what marks the key as one of many that agents can grow: the key's
kind (``kind``) is its name with every digest, id (a run of 16 or more hex digits, with an optional short
prefix such as ``apr_``) and number read as ``*``. The stores bound how
many keys of one kind they keep (``proxy.state.store.KEYS_PER_KIND``), so an agent sending a new
session or user id with every request grows one kind to its cap and no further, and never pushes out
the keys of another kind (another agent's, or the agent-wide ones above a per-session key).

Freezes, which record an enforcement decision, are never forgotten to keep a kind within its cap
(``capped``): each lasts until its own expiry, so no flood of newer freezes can undo one early.
"""

from __future__ import annotations

import functools
import hashlib
import re

DIGEST_LENGTH = 32
FREEZES = "freeze."
"""The prefix of a freeze's key (``proxy.control.freeze``): a user, session or agent refused until then."""
_VARYING = re.compile(r"(?<=[:.])(?:(?:[a-z]{1,8}_)?[0-9a-f]{16,}|[0-9]+)(?=[:.]|\Z)")


def digest(value: str) -> str:
    # The same few agent, user and session ids and hosts are digested for several keys every turn.
    return _kept_digest(value) if len(value) <= KEPT_DIGEST_CHARS else _digest(value)


KEPT_DIGEST_CHARS = 256
"""The longest value whose digest is kept (the 256 most recent: the ids and hosts of the turns in flight,
while the memory of a store whose kinds are full stays flat)."""


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:DIGEST_LENGTH]


_kept_digest = functools.lru_cache(maxsize=256)(_digest)


def kind(key: str) -> str:
    """The kind a key counts toward: ``turns:session:<digest>`` is ``turns:session:*``, while
    ``turns:agent:billing`` (an agent the policy names) is a kind of its own."""
    return _VARYING.sub("*", key)


def capped(key: str) -> bool:
    """Whether a store may forget ``key`` before it expires, to keep its kind within the cap: every
    expiring key but a freeze. Forgetting a freeze early would undo an enforcement decision; and each is
    made only by what is recorded and alerted on (a user's injection attempts, an alert's action), so how
    many are live is bounded by how fast an agent can get frozen times how long each freeze lasts."""
    return not key.startswith(FREEZES)
