"""Texts made to be slow to scan, and how each stage's cost grows with their length.

    python3 bench/hostile_shapes.py [--sizes 10,40] [--only SUBSTRING] [--keywords] [--rounds 3]
                                    [--stages scan,commands,credentials,inject tool,inject user,request,
                                              response]
                                    [--over 1.5]

For each shape (runs of digits, phone numbers, e-mails, URLs, escapes, full-width and combining letters,
invisible characters, JSON of many short strings, deep nesting, a key's prefix in groups, the quotes,
brackets and separators of commands, and with ``--keywords`` every keyword of every rule pack repeated
bare and with each separator) it prints the thread CPU in microseconds per KiB, the best of ``--rounds``
runs, of each stage (the secret and PII scan; a shell tool's call of the text read for destructive
commands, and for credential reads; the injection detector on a tool result and on a user's text; a chat
request's whole inspection, every detector on, requests redacted; a chat answer's whole inspection, its
body's residual scan included) at each size, and the growth: the cost per KiB at the largest size over
that at the smallest. A stage whose cost is linear in the text keeps a
growth near 1 (below it where a fixed cost is spread); one near the ratio of the sizes is quadratic. ``*``
marks a run whose budget ran out (its work bounded, the text left partly unread). On a loaded machine take
``--rounds 3`` before reading a growth of 2 as real.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import string
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.policies import REDACTING_POLICY
from proxy.config.policy import parse_policy
from proxy.detectors import commands, credentials, injection
from proxy.dialects import OpenAIChat
from proxy.exchange import Part, RequestView, Source, ToolCall
from proxy.inspection import Detectors, TurnInspector
from proxy.model import Threat
from proxy.scanning import rulepack
from proxy.state import SqliteStateStore
from proxy.turn import Turn, TurnContext

SEPARATORS = ("", " ", "\n", "=", "-", ".", '"')


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def shapes() -> dict[str, Callable[[int], str]]:
    """Each shape as a function of the length it is cut to."""
    rng = random.Random(1)  # noqa: S311 - reproducible filler text, not cryptography
    prose_words = (
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "the",
        "lazy",
        "dog",
        "reads",
        "its",
        "mail",
    )
    prose = " ".join(rng.choice(prose_words) for _ in range(200_000))

    def repeat(unit: str) -> Callable[[int], str]:
        return lambda n: (unit * (n // len(unit) + 1))[:n]

    def b64_nested(n: int) -> str:
        data = b"hello world " * (n // 12 + 1)
        for _ in range(3):
            data = base64.b64encode(data)
        return data.decode()[:n]

    def json_strings(n: int) -> str:
        return json.dumps(["ab"] * (n // 6))[:n]

    def json_object(n: int) -> str:
        return json.dumps({f"k{i}": "v" for i in range(n // 10)})[:n]

    return {
        **key_line_shapes(rng),
        "prose": lambda n: prose[:n],
        "digits": repeat("".join(rng.choices(string.digits, k=4096))),
        "7777": repeat("7"),
        "phones": repeat("+1 (555) 123-4567 "),
        "phones bare": repeat("555-123-4567 "),
        "cards": repeat("4111-1111-1111-1111 "),
        "ssn": repeat("123-45-6789 "),
        "emails": repeat("a@b.co "),
        "email chain": repeat("a@b.co"),
        "at-dots": repeat("a.a@"),
        "ipv4": repeat("10.0.0.1 "),
        "ipv6": repeat("fe80::1:2 "),
        "urls": repeat("http://a.b/"),
        "url query": repeat("https://x.io/?a=1&b=2 "),
        "percent": repeat("%41"),
        "base64": repeat("".join(rng.choices(string.ascii_letters + string.digits + "+/", k=4096))),
        "base64 nested": b64_nested,
        "hex": repeat("4a"),
        "\\u escapes": repeat("\\u0041"),
        "\\x escapes": repeat("\\x41"),
        "html entities": repeat("&#65;"),
        "quoted-printable parts": repeat("Content-Transfer-Encoding: quoted-printable\n\n=41=\n"),
        "quoted-printable body": lambda n: (
            "Content-Transfer-Encoding: quoted-printable\n\n" + (("=41" * 25 + "=\r\n") * (n // 80 + 1))[:n]
        ),
        "full-width": repeat("\uff41\uff42\uff43"),
        "full-width digits": repeat("\uff11\uff12\uff13"),
        "combining": repeat("a\u0301"),
        "rtl": repeat("\u202ea"),
        "zero-width": repeat("a\u200b"),
        "tag chars": repeat("a\U000e0041"),
        "tag prose": lambda n: "".join(chr(0xE0000 + ord(char)) for char in prose[:n]),
        "tag block": repeat("".join(chr(0xE0000 + code) for code in range(0x80))),
        "rtl override": repeat("\u202e"),
        "zero-width space": repeat("\u200b"),
        "password=x": repeat("password=x "),
        "key: value": repeat("api_key: x\n"),
        "quotes": repeat("\"'"),
        "brackets": repeat("[{(<"),
        "json strings": json_strings,
        "json object": json_object,
        "deep nesting": lambda n: _nested(n // 2),
        "one long line": repeat("abc def "),
        "many lines": repeat("a\n"),
        "leet": repeat("1gn0r3 "),
        "leet bars": repeat("a|b!c 1|! "),
        "turn cues": repeat("Rotate this by three: uryyb. "),
        "shift words": repeat("shifted back by twenty-five, rot -7 "),
        "acrostic lines": repeat("Read the last letter of each line.\nAlpha beta.\n"),
        "base32 lower": repeat("".join(rng.choices("abcdefghijklmnopqrstuvwxyz234567", k=4096))),
        "binary 7-bit": repeat("1101001 "),
        "binary run": repeat("1101001"),
        "uu lines": repeat("M" + "".join(rng.choices([chr(c) for c in range(32, 97)], k=60)) + "\n"),
        "morse unicode": repeat("\u00b7\u2212 \u2022\u2014 / "),
        "ignore previous": repeat("ignore previous "),
        "cyrillic": repeat("ign\u043ere "),
        # Each read quadratically once: by the secret scan's views of a key's groups, and by the readings
        # of a command (literals, globs, fed commands, the directories, assignments and files written of
        # commands that run strings).
        "key prefix groups": repeat("akia2 "),
        "keyword groups": repeat("pass2 "),
        "escaped quotes": repeat("'\\"),
        "quote and escape": repeat('"\\'),
        "open brackets": repeat("[[["),
        "joined literals": repeat("'+'"),
        "fed from <(": repeat("< <("),
        "pipes": repeat("|"),
        "parentheses": repeat("("),
        "writes": repeat(">a"),
        "assignments": repeat("|a="),
        "substitutions": repeat("$(a)"),
    }


def key_line_shapes(rng: random.Random) -> dict[str, Callable[[int], str]]:
    """Lines a value wrapped over lines or a key cut inside its prefix is read from: keys one a line, alone
    and after a name (each ends its line), SHAs under a key as wide as its line, and pieces of key
    prefixes with the cuts between them."""
    alphabet = string.ascii_letters + string.digits

    def lines(make: Callable[[], str]) -> Callable[[int], str]:
        unit = "\n".join(make() for _ in range(512)) + "\n"
        return lambda n: (unit * (n // len(unit) + 1))[:n]

    def token() -> str:
        return "ghp_" + "".join(rng.choices(alphabet, k=36))

    return {
        "key lines": lines(token),
        "named key lines": lines(
            lambda: "AWS_SECRET_ACCESS_KEY=" + "".join(rng.choices(alphabet + "+/", k=40))
        ),
        "wrapped base64": lines(lambda: "".join(rng.choices(alphabet + "+/", k=62))),
        "SHAs": lines(lambda: rng.choice(("", "token: ")) + "".join(rng.choices("0123456789abcdef", k=40))),
        "SHAs under keys": lines(
            lambda: rng.choice((token(), "".join(rng.choices("0123456789abcdef", k=40))))
        ),
        "prefix fragments": lines(
            lambda: " ".join(
                rng.choice(("sk- p", "AK IA", "gh\np_", "xox b", '"sk-" + "pr', "a si")) for _ in range(8)
            )
        ),
    }


def keyword_shapes(packs: list[rulepack.RulePack]) -> dict[str, Callable[[int], str]]:
    """Every keyword of every pack, repeated bare and with each separator."""
    keywords = sorted({keyword for pack in packs for rule in pack.rules for keyword in rule.keywords})
    return {
        f"{keyword!r}+{separator!r}": (lambda unit: lambda n: (unit * (n // len(unit) + 1))[:n])(
            keyword + separator
        )
        for keyword in keywords
        for separator in SEPARATORS
    }


def stages(packs: list[rulepack.RulePack]) -> dict[str, Callable[[str], bool]]:
    """Each stage: runs on a text, says whether its budget ran out."""
    scanner = rulepack.Scanner(
        [pack for pack in packs if pack.threat in {Threat.DATA_EXFILTRATION, Threat.CREDENTIAL_THEFT}]
    )
    detector = injection.InjectionDetector(
        [rulepack.load_pack(rulepack.pack_path("injection"))],
        injection.load_default_classifier(),
        cache_entries=0,
    )

    def scan(text: str) -> bool:
        return bool(scanner.scan(text, scanner.budget()).timed_out)

    command_scanner = commands.command_scanner(packs)

    def command(text: str) -> bool:
        # A budget of its own a text: the readings, made and charged before the scan, are what is timed,
        # made afresh each round (a call's readings are kept for the next check of the same call).
        commands._judged_texts.cache_clear()
        budget = command_scanner.budget()
        call = ToolCall(id=None, name="bash", arguments=json.dumps({"command": text}), where="bench")
        commands.destructive_entry(call, command_scanner, budget)
        return bool(budget.timed_out)

    credential_scanner = credentials.credential_scanner(packs)

    def credential(text: str) -> bool:
        commands._judged_texts.cache_clear()
        budget = credential_scanner.budget()
        call = ToolCall(id=None, name="bash", arguments=json.dumps({"command": text}), where="bench")
        credentials.credential_reads([call], credential_scanner, budget)
        return bool(budget.timed_out)

    def detect(source: Source) -> Callable[[str], bool]:
        def run(text: str) -> bool:
            budget = detector._scanner.budget()
            detector.detect(text, "bench", source, budget)
            return bool(budget.timed_out)

        return run

    policy = parse_policy(REDACTING_POLICY, "policy.yaml", environ={})
    detectors = Detectors(policy, b"k" * 32)

    def ran_out(turn: Turn) -> bool:
        return any(finding.rule.endswith("timeout") or "unread" in finding.rule for finding in turn.findings)

    def request(text: str) -> bool:
        turn = Turn(TurnContext(agent_id="bot", role="ops"))
        inspector = TurnInspector(detectors, policy, SqliteStateStore(None), turn)
        parts = [Part(Source.USER, text, "messages[0].content")]
        inspector.inspect_request(RequestView(dialect="openai_chat", parts=parts))
        return ran_out(turn)

    def response(text: str) -> bool:
        turn = Turn(TurnContext(agent_id="bot", role="ops"))
        inspector = TurnInspector(detectors, policy, SqliteStateStore(None), turn)
        message = {"role": "assistant", "content": text}
        body = json.dumps(
            {"object": "chat.completion", "choices": [{"index": 0, "message": message}]}
        ).encode()
        inspector.begin_response()
        inspector.begin_answer()
        inspector.inspect_completion(OpenAIChat().parse_response(body), rewrite=True)
        inspector.scan_body(body, body)
        return ran_out(turn)

    return {
        "scan": scan,
        "commands": command,
        "credentials": credential,
        "inject tool": detect(Source.TOOL_RESULT),
        "inject user": detect(Source.USER),
        "request": request,
        "response": response,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10,40", help="KiB, smallest first")
    parser.add_argument("--only", help="shapes whose name holds this")
    parser.add_argument("--keywords", action="store_true", help="every pack keyword repeated instead")
    parser.add_argument(
        "--stages", default="scan,commands,credentials,inject tool,inject user,request,response"
    )
    parser.add_argument("--rounds", type=int, default=1, help="the best of this many runs of each")
    parser.add_argument("--over", type=float, default=0.0, help="print only rows with a growth above this")
    args = parser.parse_args()
    sizes = [int(size) * 1024 for size in args.sizes.split(",")]
    packs = rulepack.load_packaged_packs()
    runs = {name: run for name, run in stages(packs).items() if name in args.stages.split(",")}
    table = keyword_shapes(packs) if args.keywords else shapes()
    header = (
        f"{'shape':<28}"
        + "".join(f"{stage[:11]:>12}{size // 1024:>4}K" for stage in runs for size in sizes)
        + "".join(f"{'growth ' + stage[:10]:>18}" for stage in runs)
    )
    print("us of thread CPU per KiB")
    print(header)
    for name, make in table.items():
        if args.only and args.only not in name:
            continue
        cells, growths = [], []
        for run in runs.values():
            per_kib = []
            for size in sizes:
                text = make(size)
                best = float("inf")
                for _ in range(args.rounds):
                    started = time.thread_time()
                    spent = run(text)
                    best = min(best, time.thread_time() - started)
                per_kib.append(best * 1e6 / (len(text) / 1024))
                cells.append(f"{per_kib[-1]:>15.0f}{'*' if spent else ' '}")
            growths.append(per_kib[-1] / max(per_kib[0], 1e-9))
        if max(growths) >= args.over:
            print(f"{name[:28]:<28}" + "".join(cells) + "".join(f"{growth:>18.2f}" for growth in growths))
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
