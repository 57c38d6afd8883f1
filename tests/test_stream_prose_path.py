"""The stream redactor releases plain prose without the looks ``_hold_in`` takes for what prose cannot hold
(``StreamRedactor._release_plain``). These tests hold it to the redactor without that path, on random
streams of prose, code, JSON, secrets and personal data split at every place and tool calls: every delta
releases the same text, and the same redactions are recorded; through a dialect's stream session and the
read-back, the same bytes go out and the turn records the same findings."""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from addons.inspect import ReadBack, stream_session
from bench.latency import bench_policy
from proxy.config.policy import parse_policy
from proxy.dialects import Anthropic, Gemini, OpenAIChat, OpenAIResponses
from proxy.inspection import Detectors, TurnInspector
from proxy.scanning.redact import StreamRedactor
from proxy.scanning.rulepack import Scanner, load_pack, pack_path
from proxy.state import SqliteStateStore
from proxy.turn import Turn, TurnContext
from tests.harness import AGENT_TOKEN, AGENT_TOKEN_ENV
from tests.upstream import (
    Reply,
    ToolCallReply,
    anthropic_events,
    gemini_events,
    openai_chat_events,
    responses_events,
)

KEY = b"per-install-test-key"
_PACKS = (load_pack(pack_path("secrets")), load_pack(pack_path("pii")))
# Timeouts far from any the machine's load reaches: the two redactors differ only by their paths.
SCANNER = Scanner(_PACKS, timeout_s=60)
EXAMPLES = [example for pack in _PACKS for rule in pack.rules for example in rule.match_examples]
NEAR_MISSES = [example for pack in _PACKS for rule in pack.rules for example in rule.no_match_examples]
# Prose, with words that begin key prefixes (as, sk, access, api, dp, key, pat, ghp, xox, web), are
# keywords (token, secret, password, auth), hex pairs (be, ad, fade, cafe), capitals and numbers' groups
# (I, A, OK, AKIA), a P (which begins a key block's marker) and single letters.
WORDS = [
    "the",
    "customer",
    "reports",
    "that",
    "invoice",
    "total",
    "does",
    "not",
    "match",
    "order",
    "confirmation",
    "as",
    "ask",
    "task",
    "skip",
    "sky",
    "access",
    "accept",
    "api",
    "apiary",
    "dp",
    "dpa",
    "key",
    "keys",
    "pat",
    "patch",
    "ghost",
    "gh",
    "xo",
    "xox",
    "web",
    "webhook",
    "token",
    "secret",
    "password",
    "auth",
    "author",
    "be",
    "ad",
    "fade",
    "cafe",
    "bead",
    "I",
    "A",
    "OK",
    "AKIA",
    "ASIA",
    "Park",
    "PuTTY",
    "a",
    "b",
    "c",
    "d",
    "e",
    "s",
    "t",
    "x",
    "g",
    "h",
    "p",
    "k",
    "i",
]
JOINERS = [" ", " ", " ", ", ", ". ", "  ", " . ", ",", "."]
OTHER = [
    "\n",
    "\n\n",
    "\t",
    "def fetch(client, token=None):\n    return client.get(url, headers=headers)\n",
    '{"id": "msg_01", "usage": {"prompt_tokens": 812}, "content": "shipped on Monday"}\n',
    "2026-03-14T09:12:44Z INFO path=/v1/orders/42 status=200\n",
    "password: ",
    'api_key = "',
    "Bearer ",
    "AK IA ",
    "gh p_",
    "sk- proj",
    "-----BEGIN ",
    "PRIVATE KEY",
    "mail me at jane.doe@example.com ",
    "call +1 415 555 0199 ",
    "4539 1488 0343 6467 ",
    "0x41 0x42 ",
    "de ad be ef ca fe ",
    "g h p _ 1 a ",
    "%20",
    "\u200b",
    "clé ",
]


def _prose(rng: random.Random, words: int) -> str:
    return "".join(rng.choice(WORDS) + rng.choice(JOINERS) for _ in range(words))


def _text(rng: random.Random) -> str:
    """Prose, most of it, with secrets, near misses, code, JSON, logs and disguises among it."""
    parts: list[str] = []
    for _ in range(rng.randint(1, 8)):
        kind = rng.random()
        if kind < 0.5:
            parts.append(_prose(rng, rng.randint(1, 30)))
        elif kind < 0.7:
            parts.append(rng.choice(EXAMPLES))
        elif kind < 0.8:
            parts.append(rng.choice(NEAR_MISSES))
        else:
            parts.append(rng.choice(OTHER))
    return "".join(parts)


def _deltas(rng: random.Random, text: str) -> list[str]:
    deltas: list[str] = []
    at = 0
    while at < len(text):
        size = rng.choice((1, 2, 3, 5, 8, 12, 12, 12, 16, 24, 40))
        deltas.append(text[at : at + size])
        at += size
    return deltas


class FullPath(StreamRedactor):
    """The redactor that takes ``_hold_in``'s looks and ``_release``'s for every delta."""

    def _release_plain(self) -> str | None:
        return None


def _run(redactor: StreamRedactor, deltas: list[str]) -> tuple[list[str], list[Any], Any]:
    released = [redactor.feed(delta) for delta in deltas]
    released.append(redactor.flush())
    return released, list(redactor.redactions), redactor.continued()


def _assert_alike(deltas: list[str], context: str = "") -> None:
    plain, full = StreamRedactor(SCANNER, key=KEY), FullPath(SCANNER, key=KEY)
    if context:
        plain.continue_from(context)
        full.continue_from(context)
    assert _run(plain, deltas) == _run(full, deltas), deltas


class CountingPlain(StreamRedactor):
    """A redactor that counts the releases it made by the prose path (``taken``)."""

    taken = 0

    def _release_plain(self) -> str | None:
        released = super()._release_plain()
        self.taken += released is not None
        return released


def test_prose_path_is_taken() -> None:
    """Plain prose goes out by the prose path (else the tests below compare the full path with itself)."""
    text = "The customer reports that the invoice total does not match the order confirmation. " * 4
    redactor = CountingPlain(SCANNER, key=KEY)
    for at in range(0, len(text), 12):
        redactor.feed(text[at : at + 12])
    assert redactor.taken > len(text) // 12 // 2


def test_random_streams_release_alike() -> None:
    rng = random.Random(20261207)  # noqa: S311 - reproducible streams, nothing secret
    for _ in range(400):
        text = _text(rng)
        _assert_alike(_deltas(rng, text))


def test_secrets_split_at_every_place_release_alike() -> None:
    """Each secret and personal value between prose, cut in two at every place, and one character a
    delta; read on from another channel's text too."""
    rng = random.Random(7)  # noqa: S311 - reproducible streams, nothing secret
    for value in rng.sample(EXAMPLES, 60):
        before, after = _prose(rng, 3), _prose(rng, 3)
        text = f"{before}{value} {after}"
        for cut in range(len(before), len(before) + len(value) + 1):
            _assert_alike([text[:cut], text[cut:]])
        _assert_alike(list(text))
        _assert_alike(_deltas(rng, text), context=rng.choice(("sk-", "the ", "AKIA")))


PROSE_RULES = """pack: prose
threat: data_exfiltration
rules:
  - id: prose-codeword
    description: a codeword of words after a keyword
    regex: 'codeword,? is [a-z]+ [a-z]+'
    keywords: ["codeword"]
    severity: high
    owasp: LLM06
    examples: {match: ["the codeword is alpha bravo"], no_match: ["the codeword"]}
  - id: prose-sesame
    description: words after a keyword that reach back over the text before it
    regex: '[a-z]+ [a-z]+ sesame'
    keywords: ["sesame"]
    severity: high
    owasp: LLM06
    examples: {match: ["open up sesame"], no_match: ["sesame"]}
"""


def test_rules_of_prose_release_alike(tmp_path: Path) -> None:
    """Rules whose matches are prose: a trigger read makes the next deltas take the full path, which
    scans for them."""
    path = tmp_path / "prose.yaml"
    path.write_text(PROSE_RULES, encoding="utf-8")
    scanner = Scanner([load_pack(path), *_PACKS], timeout_s=60)
    rng = random.Random(11)  # noqa: S311 - reproducible streams, nothing secret
    for _ in range(150):
        text = "".join(
            rng.choice(("the codeword is alpha bravo ", "open up sesame, ", "codeword, is ")) + _prose(rng, 6)
            if rng.random() < 0.5
            else _prose(rng, 6)
            for _ in range(4)
        )
        deltas = _deltas(rng, text)
        plain, full = StreamRedactor(scanner, key=KEY), FullPath(scanner, key=KEY)
        released = _run(plain, deltas)
        assert released == _run(full, deltas), deltas
        if "codeword is alpha bravo" in text:
            assert "alpha bravo" not in "".join(released[0])


def test_redacted_across_deltas_on_the_prose_path() -> None:
    """A key cut over deltas of prose is redacted whole, however the prose around it goes out."""
    secret = next(example for example in EXAMPLES if example.startswith("ghp_"))
    text = f"the customer reports that the key is {secret} and the invoice total does not match"
    for cut in range(len(text)):
        redactor = StreamRedactor(SCANNER, key=KEY)
        out = redactor.feed(text[:cut]) + redactor.feed(text[cut:]) + redactor.flush()
        assert secret not in out and "[REDACTED:" in out


# Through the proxy's stream path: a dialect's session with the filters of an answer in enforce mode
# with every detector on, and the read-back that proves what went out.
STREAMS: dict[str, tuple[Callable[[], Any], Callable[[Reply], Iterator[bytes]]]] = {
    "chat": (OpenAIChat, openai_chat_events),
    "responses": (OpenAIResponses, responses_events),
    "gemini": (lambda: Gemini(model_hint="gemini-2.0-flash"), gemini_events),
    "anthropic": (Anthropic, anthropic_events),
}


@pytest.fixture(scope="module")
def answering() -> tuple[Any, Detectors, SqliteStateStore]:
    data_dir = Path(tempfile.mkdtemp(prefix="egressguard-prose-path-"))
    policy = parse_policy(bench_policy(data_dir), "policy.yaml", environ={AGENT_TOKEN_ENV: AGENT_TOKEN})
    return policy, Detectors(policy, b"k" * 32), SqliteStateStore(None)


def _through_session(
    answering: tuple[Any, Detectors, SqliteStateStore], api: str, reply: Reply, together: int
) -> tuple[list[bytes], list[Any], str]:
    policy, detectors, state = answering
    make, events_of = STREAMS[api]
    events = list(events_of(reply))
    context = TurnContext(agent_id="test", role="support", user_id="u", purpose="p", consent_id="c")
    turn = Turn(context)
    inspector = TurnInspector(detectors, policy, state, turn)
    inspector.begin_response()
    inspector.begin_answer()
    dialect = make()
    session = stream_session(dialect, inspector.stream_filters(), policy)
    read_back = ReadBack(dialect, inspector, session)
    sent: list[bytes] = []
    for at in range(0, len(events), together):
        out = session(b"".join(events[at : at + together]))
        read_back.feed(out)
        sent.append(out)
    out = session(b"")
    read_back.feed(out)
    sent.append(out)
    # What the addon does at the stream's end (``Inspect._finish_stream``).
    inspector.inspect_completion(session.completion, rewrite=False)
    read_back.prove()
    return sent, [repr(finding) for finding in turn.findings], turn.decision.value


@pytest.mark.parametrize("api", list(STREAMS))
def test_random_streams_send_alike(
    api: str, answering: tuple[Any, Detectors, SqliteStateStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(f"prose-path-{api}")  # noqa: S311 - reproducible streams, nothing secret
    cases = []
    for _ in range(12):
        text = _text(rng)
        calls = (
            [ToolCallReply("read_file", {"path": _text(rng)[:80], "note": rng.choice(EXAMPLES)})]
            if rng.random() < 0.4
            else []
        )
        reply = Reply(text=text, tool_calls=calls, piece_size=rng.choice((3, 7, 12, 12, 20)))
        cases.append((reply, rng.choice((1, 1, 3))))
    plain = [_through_session(answering, api, reply, together) for reply, together in cases]
    monkeypatch.setattr(StreamRedactor, "_release_plain", FullPath._release_plain)
    full = [_through_session(answering, api, reply, together) for reply, together in cases]
    assert plain == full
    assert any(findings for _, findings, _ in plain)
