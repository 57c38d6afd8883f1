"""Where a flow's ``Turn`` lives, so every addon finds it the same way."""

from __future__ import annotations

from mitmproxy import http

from proxy.turn import Turn

METADATA_KEY = "egressguard"


def turn_of(flow: http.HTTPFlow) -> Turn | None:
    turn = flow.metadata.get(METADATA_KEY)
    return turn if isinstance(turn, Turn) else None
