"""An Anthropic text delta whose text alone the filters changed is written as its own data with the
released text in place of the one that came (``StreamSession._text_written``), where its whole payload
was written anew: random streams, their texts cut at random, full of secrets, quotes, escapes and texts
spelled as the event's own keys and values, must send events a client reads as the same JSON, read back
as the same completion, with the same findings, as a session that writes every such event anew.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from proxy.dialects import Anthropic, StreamFilters
from proxy.dialects.stream import StreamSession, rewritten
from proxy.scanning.redact import StreamRedactor
from proxy.scanning.residual import JsonScan
from proxy.scanning.rulepack import Scanner, load_pack, pack_path
from proxy.wire.sse import SSEEvent, SSEParser
from tests.upstream import Reply, anthropic_events

SCANNER = Scanner([load_pack(pack_path("secrets")), load_pack(pack_path("pii"))])
KEY = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
WORDS = [
    "The invoice total ",
    "does not match. ",
    KEY,
    " AKIA" + "IOSFODNN7EXAMPLE ",
    "mail jane.doe@example.com now ",
    'a "quoted" word ',
    "back\\slash ",
    "line\nend ",
    "caf\u00e9 \u2028 ",
    "text",
    "text_delta",
    "content_block_delta",
    "delta",
    "index",
    "type",
    '"',
    "sk-proj-",
    " ",
]


def _texts(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30)))


def _relay(chunks: list[bytes]) -> tuple[list[Any], Any, Any, list[tuple[str, str, str]]]:
    """What an Anthropic session filtering as enforce mode sends (each event read as JSON), what it and
    its read-back read, and what the scans of the strings that are no text found."""
    sending = JsonScan(SCANNER, lambda rule: True, rewrites=True)
    reading = JsonScan(SCANNER, lambda rule: False, rewrites=False)
    dialect = Anthropic()
    sender = dialect.stream_session(
        StreamFilters(text_filter=lambda where: StreamRedactor(SCANNER), residual=sending)
    )
    reader = dialect.stream_session(StreamFilters(residual=reading))
    sender.keep_sent()
    parser = SSEParser()
    sent: list[SSEEvent] = []
    for chunk in [*chunks, b""]:
        sent += parser.feed(sender(chunk))
        for piece in sender.take_sent():
            reader.read_sent(piece)
    reader.finish()
    read = [(event.event, json.loads(event.data) if event.data else None) for event in sent]
    found = [(found.where, found.rule.id, found.fingerprint) for found in (*sending.found, *reading.found)]
    return read, sender.completion, reader.completion, found


def _written_anew(self: StreamSession, event: SSEEvent, payload: Any, text: str, released: str) -> bytes:
    return rewritten(event, payload)


@pytest.mark.parametrize("seed", range(6))
def test_an_anthropic_text_written_in_place_reads_as_written_anew(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(f"written-text-{seed}")  # noqa: S311 - reproducible streams, nothing secret
    streams = []
    texts = [_texts(rng) for _ in range(8)]
    for text in texts:
        events = list(anthropic_events(Reply(text=text, piece_size=rng.choice((1, 3, 7, 12, 20)))))
        together = rng.choice((1, 1, 2, 5))
        streams.append([b"".join(events[at : at + together]) for at in range(0, len(events), together)])
    in_place = [_relay(chunks) for chunks in streams]
    monkeypatch.setattr(StreamSession, "_text_written", _written_anew)
    anew = [_relay(chunks) for chunks in streams]
    assert in_place == anew
    read_back = [segment.text for _, _, completion, _ in in_place for segment in completion.text]
    assert any(KEY in text for text in texts)
    assert read_back and not any(KEY in text for text in read_back)


def test_an_anthropic_text_delta_goes_out_with_the_upstreams_spelling() -> None:
    dialect = Anthropic()
    sender = dialect.stream_session(StreamFilters(text_filter=lambda where: StreamRedactor(SCANNER)))
    events = list(anthropic_events(Reply(text="The invoice total does not match", piece_size=12)))
    sent = b"".join(sender(event) for event in [*events, b""])
    assert b'{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "' in sent
