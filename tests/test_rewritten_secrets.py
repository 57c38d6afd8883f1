"""Keys a model rewrote so that no token format matches them (written backwards, letters rotated) are
found through the request and answer inspection: redacted in a request where requests are redacted,
withheld from a streamed answer; code, JSON and prose that only look rewritten stay clean."""

from __future__ import annotations

import base64
import codecs
import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping

import pytest

from bench.disguises import disguised_corpus
from bench.policies import REDACTING_POLICY
from proxy.config.policy import parse_policy
from proxy.dialects.anthropic import Anthropic
from proxy.dialects.gemini import Gemini
from proxy.dialects.openai_responses import OpenAIResponses
from proxy.exchange import Part, RequestView, Source
from proxy.inspection import Detectors, TurnInspector
from proxy.model import Threat
from proxy.scanning.rulepack import Scanner, load_packaged_packs
from proxy.state import SqliteStateStore
from proxy.turn import Turn, TurnContext

GITHUB_TOKEN = "ghp_" + "R7mQ2xVt9LkP4sZa8NwE3yHc6JfB1uDg0TiO"
AWS_KEY = "AKIAQYLPMN5HHHFPZAM2"
SLACK_TOKEN = "xoxb-" + "2231847539-8843201927364-Kq4ZtVm8PwRy2NsB7cLdXe3H"
DETECTORS = Detectors(parse_policy(REDACTING_POLICY, "policy.yaml", environ={}), b"k" * 32)


def _inspector() -> TurnInspector:
    policy = parse_policy(REDACTING_POLICY, "policy.yaml", environ={})
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


OPENAI_KEY = "sk-proj-" + "AbC3dEf9GhJkLmN0pQrStUvWxYz12345AbC3dEf9GhJkLmN0"
ANTHROPIC_KEY = (
    "sk-ant-api03-"
    + "TOt9aL0Mk6OCVJ3iWHwF2dylxG5C1YLDa2iqN1Zv7SScN1TeqLcC5FJp5jjEMXiE09JQkk6aMnAlo9yYo6MJWjIXOjznMAA"
)
HEX_SECRET = "9f3c2b7a1e6d4c8b0a5f2e7d3c9b1a4f6e8d2c0b7a5f3e1d9c4b8a2f6e0d7c3b"
GOOGLE_KEY = "AIza" + "SyB3xK9mQ2vT7wLp4nR8cF1hJ6dG0sE5aZ_"
WRAPPED = "FmQiy3dWARW4XqtqZkeE7+pr9Qr+HmJnZrF7+skzQ8vT1cY5nR2wL0pH6gK3mB9xJ4dS7aE+UfZk2Lq8Rw5Tn1Yb3Vc"
DIGITALOCEAN_TOKEN = "dop_v1_" + "9f3c2b7a1e6d4c8b0a5f2e7d3c9b1a4f6e8d2c0b7a5f3e1d9c4b8a2f6e0d7c3b"


def _groups_of(key: str, size: int = 4) -> list[str]:
    return [key[index : index + size] for index in range(0, len(key), size)]


def _grouped(key: str, separator: str) -> str:
    return separator.join(_groups_of(key))


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
    "character codes in a list": (
        "codes: [" + ", ".join(str(ord(c)) for c in GITHUB_TOKEN) + "]",
        "103, 104",
    ),
    "String.fromCharCode": (
        "String.fromCharCode(" + ",".join(str(ord(c)) for c in AWS_KEY) + ")",
        ",".join(str(ord(c)) for c in AWS_KEY[:4]),
    ),
    "chr() joined": ("+".join(f"chr({ord(c)})" for c in AWS_KEY), "chr(65)+chr(75)"),
    "character codes one a line": ("\n".join(str(ord(c)) for c in SLACK_TOKEN), "120\n111\n120"),
    "character codes, every fourth zero-padded": (
        ",".join(f"{ord(c):03d}" if index % 4 == 0 else str(ord(c)) for index, c in enumerate(AWS_KEY)),
        "065,75,73,65,081",
    ),
    "zero-padded character codes": (
        "codes: [" + ", ".join(f"{ord(c):03d}" for c in GITHUB_TOKEN) + "]",
        "103, 104, 112, 095",
    ),
    "zero-padded codes one a line": ("\n".join(f"{ord(c):03d}" for c in AWS_KEY), "065\n075\n073"),
    "a list of its characters": (f"chars = {json.dumps(list(GITHUB_TOKEN))}", '"R", "7", "m", "Q"'),
    "its characters one a line in JSON": (
        json.dumps({"path": "notes/today.md", "k": list(AWS_KEY)}, indent=2),
        '"Q",\n    "Y",\n    "L"',
    ),
    "a Python list of its characters backwards": (
        f"''.join(reversed({list(SLACK_TOKEN[::-1])!r}))",
        "'H', '3', 'e', 'X'",
    ),
    "base32": (base64.b32encode(f"token {GITHUB_TOKEN}".encode()).decode(), "ORXWWZLOEBTWQ4C7"),
    "reversed rot13": (
        codecs.encode(GITHUB_TOKEN, "rot13")[::-1],
        codecs.encode(GITHUB_TOKEN, "rot13")[::-1],
    ),
    "in groups of four with dashes": (f"key: {_grouped(AWS_KEY, '-')} (rotate it)", AWS_KEY[4:12]),
    "in groups of four with spaces": (f"id {_grouped(AWS_KEY, ' ')} then the secret", AWS_KEY[4:12]),
    "in groups with dots, a full stop after": (f"It is {_grouped(GITHUB_TOKEN, '.')}.", GITHUB_TOKEN[4:12]),
    "in groups with underscores": (f"{_grouped(GITHUB_TOKEN, '_')}", GITHUB_TOKEN[4:12]),
    "in groups with slashes": (f"path {_grouped(AWS_KEY, '/')}", AWS_KEY[4:12]),
    "in groups with colons and spaces": (f"{_grouped(AWS_KEY, ' : ')} ok", AWS_KEY[4:12]),
    "in groups over lines": (f"first half and second:\n{AWS_KEY[:10]}\n{AWS_KEY[10:]}\nthanks", AWS_KEY[:10]),
    "in groups over indented lines": (f"  {GITHUB_TOKEN[:20]}\n  {GITHUB_TOKEN[20:]}\n", GITHUB_TOKEN[4:20]),
    "in halves a space apart": (f"{GITHUB_TOKEN[:20]} {GITHUB_TOKEN[20:]}", GITHUB_TOKEN[4:20]),
    "a one-case key lower-cased": (f"aws id {AWS_KEY.lower()} please", AWS_KEY.lower()),
    "a one-case key, each group of its own case": (
        f"aws id {'-'.join(part.lower() if i % 2 else part for i, part in enumerate(_groups_of(AWS_KEY)))}",
        AWS_KEY[4:8].lower(),
    ),
    "a one-case key lower-cased in groups backwards": (
        f"reverse this: {_grouped(AWS_KEY[::-1].lower(), '-')}",
        _grouped(AWS_KEY[::-1].lower(), "-")[:9],
    ),
    "a lower-case format upper-cased": (f"DO token {DIGITALOCEAN_TOKEN.upper()}", DIGITALOCEAN_TOKEN.upper()),
    "a one-case key in mixed case within its groups": (
        f"id {AWS_KEY[:8]}{AWS_KEY[8:14].lower()}{AWS_KEY[14:]}",
        AWS_KEY[4:12],
    ),
    "a one-case key in alternating case": (
        "id " + "".join(c.lower() if i % 2 else c for i, c in enumerate(AWS_KEY)) + " ok",
        "".join(c.lower() if i % 2 else c for i, c in enumerate(AWS_KEY))[4:12],
    ),
    **{
        f"{label} with its prefix cut by {name}": (
            f"use {key[:cut]}{glue}{key[cut:]} now",
            key[cut + 4 : cut + 14],
        )
        for name, glue in {
            "a space": " ",
            "a line break": "\n",
            "a line break and indentation": "\n    ",
            "a tab": "\t",
            "a zero-width space": "\u200b",
            "a dash": "-",
            "a dot": ".",
            "four spaces": "    ",
            "forty spaces": " " * 40,
            "as many spaces as a stream holds a cut for": " " * 128,
            "three blank lines": "\n\n\n\n",
            "tabs": "\t\t\t\t\t",
            "two dashes": "--",
            "a spaced dash": " - ",
            "a bar": "|",
            "a backslash": "\\",
            "a no-break space": "\u00a0",
            "an em space": "\u2003",
            "a narrow no-break space": "\u202f",
            "an ideographic space": "\u3000",
            "a zero-width space and a space": "\u200b ",
            "a blank line": "\n\n",
            "a line break and a no-break indentation": "\n\u00a0\u00a0",
        }.items()
        for label, key, cut in (
            ("an OpenAI key", OPENAI_KEY, 4),
            ("a GitHub token", GITHUB_TOKEN, 2),
            ("an AWS key id", AWS_KEY, 2),
            ("a Slack token", SLACK_TOKEN, 3),
            ("an Anthropic key", ANTHROPIC_KEY, 7),
        )
    },
    "a prefix joined from two literals": (f'k = "{OPENAI_KEY[:5]}" + "{OPENAI_KEY[5:]}"', OPENAI_KEY[8:18]),
    "a prefix joined from three literals": (
        f'k = "{OPENAI_KEY[:3]}" + "{OPENAI_KEY[3:5]}" + "{OPENAI_KEY[5:]}"',
        OPENAI_KEY[8:18],
    ),
    "a prefix in adjacent literals": (f"k = ('{GITHUB_TOKEN[:2]}' '{GITHUB_TOKEN[2:]}')", GITHUB_TOKEN[4:14]),
    "a named value wrapped at its line's width": (
        f'AWS_SECRET_ACCESS_KEY="{WRAPPED[:12]}\n{WRAPPED[12:47]}\n{WRAPPED[47:82]}\n{WRAPPED[82:]}"',
        WRAPPED[12:82],
    ),
    "a hex value wrapped at its line's width": (
        f"API_SECRET={HEX_SECRET[:29]}\n{HEX_SECRET[29:]}\nthanks",
        HEX_SECRET[29:],
    ),
    "a token ending in hex wrapped over two lines": (
        f"  DIGITALOCEAN_TOKEN={DIGITALOCEAN_TOKEN[:19]}\n"
        f"  {DIGITALOCEAN_TOKEN[19:57]}\n  {DIGITALOCEAN_TOKEN[57:]}\n",
        DIGITALOCEAN_TOKEN[19:57],
    ),
    "an upper-case hex value wrapped": (
        f"api_secret: {HEX_SECRET.upper()[:20]}\n{HEX_SECRET.upper()[20:52]}\n{HEX_SECRET.upper()[52:]}\nok",
        HEX_SECRET.upper()[20:52],
    ),
    "a named value wrapped over indented lines, a full stop after": (
        "    password = pypi-AgEIcHl\n    waS5vcmcUQSoZA1SSXjdQfV\n    0sJnh-7yV.",
        "waS5vcmcUQSoZA1SSXjdQfV",
    ),
    "a prefix cut and the key in mixed case": (f"AK IA{AWS_KEY[4:10].lower()}{AWS_KEY[10:]}", AWS_KEY[10:18]),
    "a prefix cut and the key in groups": (f"gh p_{_grouped(GITHUB_TOKEN[4:], ' ')}", GITHUB_TOKEN[4:8]),
    "a prefix in a list joined": (f'"".join(["{AWS_KEY[:2]}", "{AWS_KEY[2:]}"])', AWS_KEY[4:14]),
    **{
        f"{label} cut in its prefix in odd case": (
            f"id {written} then",
            key[len(written) - 2 : len(written) + 8],
        )
        for label, key, written in (
            ("a GitHub token", GITHUB_TOKEN, "Gh p_" + GITHUB_TOKEN[4:]),
            ("a GitHub token, upper case", GITHUB_TOKEN, "GH P_" + GITHUB_TOKEN[4:]),
            ("an AWS key id", AWS_KEY, "aK Ia" + AWS_KEY[4:]),
            ("an OpenAI key", OPENAI_KEY, "Sk-Pr oj-" + OPENAI_KEY[8:]),
            ("a Google key of a mixed-case format", GOOGLE_KEY, "AI za" + GOOGLE_KEY[4:]),
        )
    },
    "a prefix out of an f-string's expression": (f"k = f\"{{'gh'}}{GITHUB_TOKEN[2:]}\"", GITHUB_TOKEN[4:14]),
    "a prefix into an f-string's expression": (
        f"k = f\"gh{{'p_'}}{GITHUB_TOKEN[4:]}\"",
        GITHUB_TOKEN[4:14],
    ),
    "a prefix of two f-string expressions": (
        f"k = f\"{{'g'}}{{'h'}}{GITHUB_TOKEN[2:]}\"",
        GITHUB_TOKEN[4:14],
    ),
    "a prefix out of a template literal": (f"const k = `${{'AK'}}{AWS_KEY[2:]}`;", AWS_KEY[4:14]),
    "a prefix in adjacent shell quotes": (f"export K='gh''{GITHUB_TOKEN[2:]}'", GITHUB_TOKEN[4:14]),
    "a prefix quoted apart in shell": (f"export K=\"sk-p\"'{OPENAI_KEY[4:]}'", OPENAI_KEY[8:18]),
    "a prefix out of a quote in shell": (f"curl -H 'x: {AWS_KEY[:2]}'{AWS_KEY[2:]}", AWS_KEY[4:14]),
    "a prefix of bracketed literals joined": (f'k = ("{AWS_KEY[:2]}")+("{AWS_KEY[2:]}")', AWS_KEY[4:14]),
    "a key cut right after its keyword by a space": (
        f"key {ANTHROPIC_KEY[:10]} {ANTHROPIC_KEY[10:]} ok",
        ANTHROPIC_KEY[16:40],
    ),
    "a key cut right after its keyword by a line break": (
        f"key {ANTHROPIC_KEY[:10]}\n{ANTHROPIC_KEY[10:]}\nok",
        ANTHROPIC_KEY[16:40],
    ),
    "a decoy prefix glued before a cut one": (f"a-si-a-gh-p_{GITHUB_TOKEN[4:]}", GITHUB_TOKEN[4:14]),
    "a cut key after hundreds of what reads as cut prefixes": (
        "a si " * 400 + f"{AWS_KEY[:2]} {AWS_KEY[2:]}",
        AWS_KEY[4:14],
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


# Every place a key's prefix may be cut, by each cut, for keys of one and of mixed case.
CUT_KEYS = {
    "openai": (OPENAI_KEY, 8),
    "github": (GITHUB_TOKEN, 4),
    "aws": (AWS_KEY, 4),
    "slack": (SLACK_TOKEN, 5),
}
CUTS = {
    "space": " ",
    "line": "\n",
    "indent": "\n" + " " * 80,
    "tab": "\t",
    "dash": "-",
    "literals": '" + "',
    "spaces": "     ",
    "dashes": "--",
    "no-break space": "\u00a0",
    "ideographic space": "\u3000",
    "zero-width space": "\u200b",
    "f-string": "'}{'",
}


@pytest.mark.parametrize("size", [1, 2, 3, 7, 200])
@pytest.mark.parametrize("cut", sorted(CUTS))
@pytest.mark.parametrize("key", sorted(CUT_KEYS))
def test_no_piece_of_a_key_cut_inside_its_prefix_leaves_a_stream(key: str, cut: str, size: int) -> None:
    """Each piece a stream brings is held while a cut prefix may still be growing, from its first letter:
    the prefix's letters before the cut go out only as the key's placeholder."""
    value, prefix = CUT_KEYS[key]
    for place in range(1, prefix):
        text = f'k = "{value[:place]}{CUTS[cut]}{value[place:]}" now'
        out = _streamed(text, size)
        assert re.fullmatch(r'k = "\[REDACTED:[a-z0-9-]+\]" now', out), (place, out)


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
    "numbers of every day": (
        "pixels = [12, 200, 255, 0, 34, 56, 78, 90, 101, 45, 67, 89]\n"
        "2024-12-06 10:30:45 GET /api 200 118 ms from 10.0.3.17\nports: 80, 443, 8080, 8443\n"
        "| 45 | 67 | 89 | 101 | 99 | 120 | 77 | 64 |\n"
        "ascii = [72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100]"
    ),
    "zero-padded numbers": (
        "released 2026,012,005 and 2026,011,028; ZIP codes 02134, 01002, 07030, 00501, 02139, 03301\n"
        "order ids: 000123, 004567, 0099, 0117, 00042; lot 045,067,089,099,101,077,064,055,048\n"
        "| 001 | 045 | 067 | 089 | 099 | 120 | 077 | 064 | 032 | 101 |\n"
        "bins = [032, 045, 067, 089, 099, 101, 077, 064, 055, 048, 112, 100, 009, 000]"
    ),
    "lists of one-character strings": (
        f"ALPHABET = {list('abcdefghijklmnopqrstuvwxyz')}\nHEX = {json.dumps(list('0123456789abcdef'))}\n"
        'grades = ["A", "B", "C", "D", "E", "F"]; moves = ["U", "D", "L", "R", "U", "U", "D", "L", "R"]\n'
        f"{json.dumps({'vocab': list('.,;:!?-_()[]{}<>@#$%^&*+=~')}, indent=2)}"
    ),
    "prose about key prefixes": (
        "AKIA keys look like AKIA then sixteen more. The akia prefix and ASIA for temporary ones; "
        "ghp_ tokens have 36 more characters, dop_v1_ a 64 hex digit tail, xoxb- Slack bots.\n"
        "AKIA LIKE THIS KEYS WILL WORK FINE and AKIA 2024 REVIEW DONE\n"
    ),
    "identifiers and paths after a prefix": (
        "akia-ui/src/components/button-group.tsx, api-gateway-integration-response-template, "
        "key-value-store/v2/keys/list, AKIA_KEY_PREFIX_LENGTH = 4, ghp_token_prefix_regex\n"
        "sk-proj-settings.json api-2024-01-15.yaml AKIA.QYLP." + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" * 2
    ),
    "words and names around a cut prefix's letters": (
        "I co-founded it; a Kia in Asia, a sia-based team, AK IAM roles and sk- proj settings.\n"
        "gh p_values, xox b-side, Ak Ia ButtonGroupsLists, akia_ButtonGroup AKIAButtonGroupsList\n"
    ),
    "minified JS": "var r=e.split('').reverse().join('');function t(n){return n.replace(/[a-z]/g,c)}",
    "prose with runs of spaces and typographic spaces": (
        "As I always say,  a  si  a team in Asia\u00a0works; Gh\u00a0p and AK    IA roles, sk\u2003proj\n"
        "As I asked: Is it a\u3000si? A KIA, a  Kia 2024 model, Sk-Pr oj-settings and GH P_values.\n"
        "| gh | p_value |\n|----|---------|\n| ak | ia      |\nsk -- proj -- notes, a--si--a--si\n"
    ),
    "code with f-strings, templates and shell quoting": (
        "name = f\"{'gh'}p_{suffix}\"; path = f\"{base}/{'sk'}-proj-{user}.json\"\n"
        "const url = `${'https'}://${host}/api/${'v1'}/items`; msg = '{}p_{}'.format(a, b)\n"
        "echo 'gh''p_'\"$REST\"; export A='AK''IA'\"$ID\"; x = (\"sk\")+(\"-\")+(name)\n"
    ),
    "hashes, UUIDs and base64 in documentation": (
        "sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n"
        "commit 3f2b8c1e7d4a4e6b9c0f1a2b3c4d5e6f7a8b9c0d and id 3f2b8c1e-7d4a-4e6b-9c0f-1a2b3c4d5e6f\n"
        'integrity="sha384-oqVuAfXRKap7fdgcCY5uykM6+R9GqQ8K/uxy9rx7HNQlGYl1kPzQho1wx4JwY8wC"\n'
        "![logo](data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==)\n"
    ),
}


@pytest.mark.parametrize("name", sorted(CLEAN))
def test_text_that_only_looks_rewritten_passes_untouched(name: str) -> None:
    text = CLEAN[name]
    assert _sent(text) == (text, [])
    assert _streamed(text, 7) == text


# What each disguise read only where a key's prefix or a rule's match starts it finds of the secrets
# pack's examples (bench/disguises.py; a value known by its name alone is not read there).
RECALL = {
    "reversed": 0.85,
    "rot13": 0.85,
    "concatenated": 0.7,
    "adjacent-literals": 0.5,
    "char-codes": 0.5,
    "char-codes-zero-padded": 0.5,
    "character-list": 0.55,
    "character-list-indented": 0.5,
    "character-list-reversed": 0.45,
    "grouped-dash": 0.6,
    "grouped-space": 0.1,
    "grouped-lines": 0.6,
    "grouped-reversed": 0.6,
    "other-case": 0.6,
    "binary-codes": 0.5,
    "binary-codes-unspaced": 0.5,
    "binary-codes-7-bit": 0.5,
    "caesar-1": 0.8,
    "caesar-3": 0.8,
    "caesar-25": 0.8,
    "caesar-7-digits-too": 0.8,
    "rot47": 0.5,
}


def test_keyed_disguises_of_the_rule_examples_are_found_to_their_figures() -> None:
    packs = [pack for pack in load_packaged_packs() if pack.threat is Threat.DATA_EXFILTRATION]
    scanner = Scanner(packs, timeout_s=1.0)
    items = [
        item
        for item in disguised_corpus([pack for pack in packs if pack.name == "secrets"])
        if item.encoding in RECALL
    ]
    found: Counter[str] = Counter()
    for item in items:
        matches = scanner.scan_alone(item.text).matches
        found[item.encoding] += any(
            m.rule.pack == "secrets" and m.start < item.end and m.end > item.start for m in matches
        )
    totals = Counter(item.encoding for item in items)
    assert {name: found[name] / totals[name] >= floor for name, floor in RECALL.items()} == dict.fromkeys(
        RECALL, True
    )


def test_a_value_that_ends_its_line_takes_no_line_after_it_that_is_not_its_wrapped_rest() -> None:
    """A word of one case, an assignment or a line longer than the value is the text going on."""
    text = (
        "password = hunter2hunter2\nDEBUG\nAPI_KEY=Zq81rT0pLm4vXw7k\nnext_line = 3\n"
        "secret: 9f3c2b7a1e6d4c8b0a5f\nretries_before_giving_up_entirely_now\n"
    )
    sent, rules = _sent(text)
    assert rules
    for kept in ("\nDEBUG\n", "\nnext_line = 3\n", "\nretries_before_giving_up_entirely_now\n"):
        assert kept in sent


# Text that goes on after a key ending its line: a word, a sentence, a markdown line, a word of the
# key's width or of letters the key is not written in.
LINES_AFTER_A_KEY = {
    "a word and a full stop": "Done.",
    "a word and a mark": "Thanks!",
    "a word in capitals": "OK",
    "a line of prose": "Use it for deploys only.",
    "a markdown item": "- rotate it after the release",
    "a markdown heading": "## Next steps",
    "a word as wide as the key's line": "Acknowledged",
    "a line in letters the hex key is not written in": "XYZW",
    "a numbered item": "1. Rotate it",
    "a number alone": "2024",
    "a number and a full stop": "1.",
    "a short SHA": "9fceb02",
    "a SHA": "9fceb02d0ae598e95dc970b74767f19372d61af8",
    "a UUID": "3f2b8c1e-7d4a-4e6b-9c0f-1a2b3c4d5e6f",
}


@pytest.mark.parametrize(
    "key", [GITHUB_TOKEN, DIGITALOCEAN_TOKEN, "AWS_SECRET_ACCESS_KEY=FmQiy3dWARW4XqtqZkeE7pr9QrHmJnZrF7skzP"]
)
@pytest.mark.parametrize("after", sorted(LINES_AFTER_A_KEY))
def test_a_line_after_a_key_that_ends_its_line_is_not_taken_as_its_wrapped_rest(key: str, after: str) -> None:
    line = LINES_AFTER_A_KEY[after]
    text = f"Here it is:\n{key}\n{line}\nBye"
    sent, rules = _sent(text)
    assert rules and sent.endswith(f"]\n{line}\nBye")
    for size in (1, 5, 64):
        assert _streamed(text, size).endswith(f"]\n{line}\nBye")


SHAS = [hashlib.sha1(str(index).encode()).hexdigest() for index in range(4)]  # noqa: S324 - fixtures
DIGESTS = [hashlib.sha256(str(index).encode()).hexdigest() for index in range(4)]
# Lines under a key that ends its line, each a token of its own as wide as the key's line.
COLUMNS_UNDER_A_KEY = {
    "SHAs under a token": (GITHUB_TOKEN, SHAS),
    "short SHAs under a token": (GITHUB_TOKEN, [sha[:7] for sha in SHAS]),
    "digests under a named token as wide": ("GH_RELEASE_TOKEN_VALUES=" + GITHUB_TOKEN, DIGESTS),
    "ids of the token's width under it": (
        GITHUB_TOKEN,
        ["Zq81rT0pLm4vXw7kYb3VcHn6Ja9DsF2gWe5RtUi0", "Pq4Ws8Ed2Rf6Tg1Yh5Uj9Ik3Ol7Zx0Cv4Bn8Mq2"],
    ),
    "SHAs under a hex value": ("API_SECRET=" + HEX_SECRET, SHAS),
    "SHAs under a hex value as wide as one": ("API_SECRET=" + HEX_SECRET[:40], SHAS),
    "short SHAs under a hex value": ("API_SECRET=" + HEX_SECRET, [sha[:7] for sha in SHAS]),
    "digests under a token ending in hex": ("DIGITALOCEAN_TOKEN=" + DIGITALOCEAN_TOKEN, DIGESTS),
    "a numbered list under a named key": (
        "OPENAI_API_KEY=" + OPENAI_KEY,
        ["1. Rotate it", "2. Tell the team"],
    ),
}


@pytest.mark.parametrize("name", sorted(COLUMNS_UNDER_A_KEY))
def test_lines_of_tokens_under_a_key_are_not_taken_as_its_wrapped_rest(name: str) -> None:
    key, lines = COLUMNS_UNDER_A_KEY[name]
    text = "Here:\n" + "\n".join([key, *lines]) + "\nBye"
    sent, rules = _sent(text)
    assert rules and sent.endswith("]\n" + "\n".join(lines) + "\nBye")


def _history_with_call(dialect: str, arguments: Mapping[str, object]) -> tuple[object, dict[str, object]]:
    """A request of ``dialect`` whose history holds a call of a tool with ``arguments`` as an object."""
    if dialect == "anthropic":
        call = {"type": "tool_use", "id": "t1", "name": "save", "input": arguments}
        result = {"type": "tool_result", "tool_use_id": "t1", "content": "saved"}
        return Anthropic(), {
            "model": "m",
            "max_tokens": 5,
            "messages": [
                {"role": "user", "content": "save it"},
                {"role": "assistant", "content": [call]},
                {"role": "user", "content": [result]},
            ],
        }
    if dialect == "gemini":
        contents = [
            {"role": "user", "parts": [{"text": "save it"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "save", "args": arguments}}]},
        ]
        return Gemini(), {"contents": contents}
    item = {"type": "function_call", "call_id": "c1", "name": "save", "arguments": arguments}
    return OpenAIResponses(), {"model": "m", "input": [item]}


@pytest.mark.parametrize("dialect", ["anthropic", "gemini", "responses"])
@pytest.mark.parametrize(
    "arguments",
    [
        {"a": AWS_KEY[:8], "b": AWS_KEY[8:], "note": "weekly"},
        {"a": AWS_KEY[:2], "b": {"c": AWS_KEY[2:]}},
        {"parts": [GITHUB_TOKEN[:10], GITHUB_TOKEN[10:24], GITHUB_TOKEN[24:]]},
    ],
)
def test_a_key_in_pieces_over_a_calls_input_in_the_history_is_redacted_piece_by_piece(
    dialect: str, arguments: dict[str, object]
) -> None:
    reader, body = _history_with_call(dialect, arguments)
    inspector = _inspector()
    verdict = inspector.inspect_request(reader.parse_request(json.dumps(body).encode()))  # type: ignore[attr-defined]
    pieces = [text for text in _strings(arguments) if text in AWS_KEY or text in GITHUB_TOKEN]
    assert sorted(verdict.replacements.values()) == sorted(
        f"[REDACTED:{'aws-access-key-id' if piece in AWS_KEY else 'github-pat'}]" for piece in pieces
    )
    assert {finding.rule for finding in inspector.turn.findings} & {"aws-access-key-id", "github-pat"}


def _strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [text for child in value.values() for text in _strings(child)]
    if isinstance(value, list):
        return [text for child in value for text in _strings(child)]
    return [value] if isinstance(value, str) else []


@pytest.mark.parametrize("dialect", ["anthropic", "gemini", "responses"])
def test_a_calls_input_of_ordinary_values_in_the_history_is_left_as_it_is(dialect: str) -> None:
    arguments = {"path": "src/main.py", "mode": "r", "range": {"from": "2024-01-01", "to": "2024-12-31"}}
    reader, body = _history_with_call(dialect, arguments)
    inspector = _inspector()
    verdict = inspector.inspect_request(reader.parse_request(json.dumps(body).encode()))  # type: ignore[attr-defined]
    assert verdict.replacements == {} and inspector.turn.findings == []


@pytest.mark.parametrize(
    "cookies",
    [
        [f"a={AWS_KEY[:10]}; Path=/", f"b={AWS_KEY[10:]}; Secure"],
        [f"a={GITHUB_TOKEN[:2]}; Path=/", f'b="{GITHUB_TOKEN[2:20]}"', f"c={GITHUB_TOKEN[20:]}; HttpOnly"],
    ],
)
def test_a_key_spelt_across_the_cookies_an_answer_sets_is_redacted_piece_by_piece(cookies: list[str]) -> None:
    inspector = _inspector()
    sent = inspector.scan_headers([("Set-Cookie", cookie) for cookie in cookies])
    assert sent is not None and all("[REDACTED:" in value for _, value in sent)
    assert not any(_shows(key, " ".join(value for _, value in sent)) for key in (AWS_KEY, GITHUB_TOKEN[4:]))
    assert {finding.rule for finding in inspector.turn.findings} & {"aws-access-key-id", "github-pat"}


def test_session_cookies_an_answer_sets_are_not_read_across() -> None:
    cookies = [
        "sessionid=3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a; Path=/; Secure; HttpOnly",
        "csrftoken=Zq81rT0pLm4vXw7kYb3VcHn6Ja9DsF2g; Path=/",
        "sid=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "theme=dark; Max-Age=31536000",
    ]
    inspector = _inspector()
    assert inspector.scan_headers([("Set-Cookie", cookie) for cookie in cookies]) is None
    assert inspector.turn.findings == []
