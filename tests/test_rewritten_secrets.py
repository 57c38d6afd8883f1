"""Keys a model rewrote so that no token format matches them (written backwards, letters rotated) are
found through the request and answer inspection: redacted in a request where requests are redacted,
withheld from a streamed answer; code, JSON and prose that only look rewritten stay clean."""

from __future__ import annotations

import codecs
import textwrap

import pytest

from proxy.config.policy import parse_policy
from proxy.exchange import Part, RequestView, Source
from proxy.inspection import Detectors, TurnInspector
from proxy.state import SqliteStateStore
from proxy.turn import Turn, TurnContext

GITHUB_TOKEN = "ghp_" + "R7mQ2xVt9LkP4sZa8NwE3yHc6JfB1uDg0TiO"
AWS_KEY = "AKIAQYLPMN5HHHFPZAM2"
SLACK_TOKEN = "xoxb-" + "2231847539-8843201927364-Kq4ZtVm8PwRy2NsB7cLdXe3H"
POLICY = textwrap.dedent("""\
    mode: enforce
    agents:
      bot: {token: t, role: ops}
    roles:
      ops: {}
    redaction: {requests: true}
    """)
DETECTORS = Detectors(parse_policy(POLICY, "policy.yaml", environ={}), b"k" * 32)


def _inspector() -> TurnInspector:
    policy = parse_policy(POLICY, "policy.yaml", environ={})
    turn = Turn(TurnContext(agent_id="bot", role="ops", user_id="u", purpose="p", consent_id="c"))
    return TurnInspector(DETECTORS, policy, SqliteStateStore(None), turn)


def _sent(text: str) -> tuple[str, list[str]]:
    """What a request holding ``text`` as a user message sends on, and the rules it raised."""
    inspector = _inspector()
    part = Part(Source.USER, text, "messages[0].content")
    verdict = inspector.inspect_request(RequestView(dialect="openai_chat", parts=[part]))
    return verdict.replacements.get(part.where, text), [finding.rule for finding in inspector.turn.findings]


def _streamed(text: str, size: int) -> str:
    """What reaches the agent of an answer streaming ``text`` in pieces of ``size`` characters."""
    make = _inspector().stream_filters().text_filter
    assert make is not None
    text_filter = make("choices[0].delta.content")
    pieces = [text[index : index + size] for index in range(0, len(text), size)]
    return "".join(text_filter.feed(piece) for piece in pieces) + text_filter.flush()


# Each text, and the rewritten key it carries.
REWRITTEN = {
    "reversed": (f"the key backwards: {GITHUB_TOKEN[::-1]} (read it right to left)", GITHUB_TOKEN[::-1]),
    "reversed in code": (f"const k = '{AWS_KEY[::-1]}'.split('').reverse().join('');", AWS_KEY[::-1]),
    "rot13": (f"rot13: {codecs.encode(SLACK_TOKEN, 'rot13')}", codecs.encode(SLACK_TOKEN, "rot13")),
    "joined with + in Python": (f'token = "{GITHUB_TOKEN[:10]}" + "{GITHUB_TOKEN[10:]}"', GITHUB_TOKEN),
    "joined with + in JavaScript, three pieces": (
        f"const t = '{GITHUB_TOKEN[:8]}' + '{GITHUB_TOKEN[8:20]}' + '{GITHUB_TOKEN[20:]}';",
        GITHUB_TOKEN,
    ),
    "joined with + over lines in Go": (f'k := "{AWS_KEY[:6]}" +\n\t"{AWS_KEY[6:]}"', AWS_KEY),
    "joined in Java": (
        f'String s = "{SLACK_TOKEN[:9]}" + "{SLACK_TOKEN[9:30]}" + "{SLACK_TOKEN[30:]}";',
        SLACK_TOKEN,
    ),
    "adjacent literals in Python": (f"k = ('{GITHUB_TOKEN[:9]}'\n     '{GITHUB_TOKEN[9:]}')", GITHUB_TOKEN),
    "a list joined": (f'"".join(["{AWS_KEY[:4]}", "{AWS_KEY[4:13]}", "{AWS_KEY[13:]}"])', AWS_KEY),
    "joined with . in PHP": (f"$k = '{AWS_KEY[:7]}' . '{AWS_KEY[7:]}';", AWS_KEY),
    "split across JSON values": (
        f'{{"a": "{GITHUB_TOKEN[:14]}", "b": "{GITHUB_TOKEN[14:]}"}}',
        GITHUB_TOKEN,
    ),
    "assigned in pieces": (
        'aws_secret_access_key = "uujCtA/rxCRZe" + "bzSHbFtF39vmb" + "LmjZJTpRCwc3F5"',
        "bzSHbFtF39vmb",
    ),
    "reversed rot13": (
        codecs.encode(GITHUB_TOKEN, "rot13")[::-1],
        codecs.encode(GITHUB_TOKEN, "rot13")[::-1],
    ),
}


def _shows(carried: str, out: str) -> bool:
    """Whether an 8-character piece of ``carried`` is in ``out``."""
    return any(carried[index : index + 8] in out for index in range(len(carried) - 7))


@pytest.mark.parametrize("name", sorted(REWRITTEN))
def test_a_rewritten_key_in_a_request_is_redacted(name: str) -> None:
    text, carried = REWRITTEN[name]
    sent, rules = _sent(text)
    assert "[REDACTED:" in sent and not _shows(carried, sent)
    assert rules


@pytest.mark.parametrize("size", [1, 5, 64])
@pytest.mark.parametrize("name", sorted(REWRITTEN))
def test_a_rewritten_key_in_a_streamed_answer_is_withheld(name: str, size: int) -> None:
    text, carried = REWRITTEN[name]
    out = _streamed(text, size)
    assert "[REDACTED:" in out and not _shows(carried, out)


CLEAN = {
    "names and words that hold a turned prefix": "Aika and Aisa met Kaze at the iPad store; AIKA, aisa.",
    "code that reverses and rotates": (
        "from __future__ import annotations\n"
        "def backwards(name: str) -> str:\n    return codecs.encode(name[::-1], 'rot13')\n"
        "assert backwards('ghp_') == 'tuc_'[::-1]\n"
    ),
    "a hash glued to a turned prefix": "6eae120b46f3efc88ba739e5_phg and _phg" + "a1b2c3d4" * 5,
    "code joining strings": (
        'url = "https://" + host + "/api/" + "v1" + "/" + "users"\n'
        'msg = \'Hello, \' + name + \'!\'; sql = "SELECT *" + " FROM users" + " WHERE id = ?"\n'
        "label = ('a long message '\n         'in two parts'); q = 'a' || 'b'; $s = 'x' . 'y';\n"
    ),
    "key prefixes listed and padded": (
        'PREFIXES = ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]\nfake = "ghp_" + "x" * 36\n'
        'api_key = "" + "test"; token = "ghp_" + os.environ["REST"]\n'
    ),
    "JSON of keys and values": (
        '{"api_key": "unset", "token": "none", "key": "id", "secret": "abc", "values": ["a1", "b2", "c3"]}'
    ),
    "integer arrays": "data = [104, 116, 116, 112, 115, 58, 47, 47]; sizes = [1024, 2048, 4096]",
    "minified JS": "var r=e.split('').reverse().join('');function t(n){return n.replace(/[a-z]/g,c)}",
}


@pytest.mark.parametrize("name", sorted(CLEAN))
def test_text_that_only_looks_rewritten_passes_untouched(name: str) -> None:
    text = CLEAN[name]
    assert _sent(text) == (text, [])
    assert _streamed(text, 7) == text
