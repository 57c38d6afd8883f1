"""A key a realtime API's server streams split over the deltas of one text (the Realtime API's text and
transcript deltas, a WebSocket message each) reaches the agent redacted wherever it is cut: each run of
deltas is read joined, as the SDK joins it, what may begin a key held until the next delta or the run's
end. The key is recorded once, enforced."""

from __future__ import annotations

import json
from collections.abc import Callable
from itertools import combinations
from typing import Any

import pytest

from proxy.inspection import TurnInspector
from tests.test_inspection import clock, detectors, inspector_for, policy  # noqa: F401

AWS_KEY = "AKIA" + "Z7QW3RTY2UIO4PAS"
TEXT = f"Use {AWS_KEY} now."
REDACTED = "Use [REDACTED:aws-access-key-id] now."
PLACE = {"response_id": "resp_1", "item_id": "item_1", "output_index": 0, "content_index": 0}
KINDS = {
    "text": ("response.output_text", "text"),
    "transcript": ("response.output_audio_transcript", "transcript"),
}


def _cuts(parts: int) -> list[list[str]]:
    return [
        [TEXT[start:end] for start, end in zip((0, *cuts), (*cuts, len(TEXT)), strict=True)]
        for cuts in combinations(range(1, len(TEXT)), parts - 1)
    ]


def _agent_reads(inspector: TurnInspector, messages: list[dict[str, Any]], kind: str) -> tuple[str, str]:
    """The deltas the agent joins and the whole text of the ``.done`` event, as the proxy lets them go."""
    sent: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        text = json.dumps(message)
        forwarded = inspector.inspect_message(text, from_client=False, where=f"websocket[{index}]")
        assert forwarded is not None
        sent += [json.loads(before) for before, _ in inspector.words_before]
        sent.append(json.loads(forwarded))
    sent += [json.loads(content) for content, _ in inspector.end_messages(delivering=True)]
    event, field = KINDS[kind]
    joined = "".join(message["delta"] for message in sent if message["type"] == f"{event}.delta")
    (done,) = [message[field] for message in sent if message["type"] == f"{event}.done"]
    return joined, done


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("parts", [2, 3])
def test_a_key_split_over_realtime_deltas_reaches_the_agent_redacted(
    inspector_for: Callable[[], TurnInspector],  # noqa: F811
    kind: str,
    parts: int,
) -> None:
    event, field = KINDS[kind]
    for pieces in _cuts(parts):
        inspector = inspector_for()
        messages = [{"type": f"{event}.delta", **PLACE, "delta": piece} for piece in pieces]
        messages.append({"type": f"{event}.done", **PLACE, field: TEXT})
        assert _agent_reads(inspector, messages, kind) == (REDACTED, REDACTED), pieces
        found = [(f.rule, f.enforced) for f in inspector.turn.findings if f.rule == "aws-access-key-id"]
        assert ("aws-access-key-id", True) in found and ("aws-access-key-id", False) not in found, pieces
