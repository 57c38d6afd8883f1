"""Scan throughput of every rule pack on a generated mixed corpus, side by side with detect-secrets.

Prints, for egressguard's scanner and for detect-secrets on the same corpus: wall time, MB/s, findings,
and how many of the secrets and PII packs' own ``match`` examples each tool finds; then the recall on
those examples encoded and disguised (bench/disguises.py: base64, hex, percent, JSON and HTML escapes,
letter spacing, zero-width splits, look-alikes and combinations), the share of found ones redacted
whole, and false positives on hard negatives (hashes, digests, SRI, images, UUIDs, minified JS, ...);
and the PII pack's recall on phone numbers and addresses (bench/pii_corpus.py) with its look-alikes.
It also prints what the scanner's loosened-form check (proxy/scanning/relaxed.py) saves on each kind of
traffic, measured with and without it in one process.

    python3 bench/scan.py [--megabytes 4] [--document-kb 64] [--seed 7]
"""

from __future__ import annotations

import argparse
import base64
import bisect
import json
import random
import string
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from detect_secrets.core.secrets_collection import SecretsCollection
from detect_secrets.settings import default_settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.disguises import hard_negatives, recall_lines
from bench.pii_corpus import pii_corpus, pii_negatives
from proxy.model import Threat
from proxy.scanning.redact import StreamRedactor
from proxy.scanning.rulepack import RulePack, Scanner, load_packaged_packs

PROSE = (
    "the agent asked for a summary of the quarterly report and then called the search tool with the "
    "customer name before drafting a reply about shipping delays refunds and the new pricing page it "
    "also compared three vendors listed their support hours and noted that the migration plan needs one "
    "more review from the platform team before the release on friday"
)
WORDS = PROSE.split()


def _prose(rng: random.Random, size: int) -> str:
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words) + ".\n"


def _code(rng: random.Random) -> str:
    name = "".join(rng.choices(string.ascii_lowercase, k=8))
    return (
        f"def fetch_{name}(client, token=None):\n"
        f"    api_key = os.environ['{name.upper()}_API_KEY']\n"
        f"    headers = {{'Authorization': f'Bearer {{token}}', 'X-Request-Id': '{rng.getrandbits(64):x}'}}\n"
        f"    password = settings.db_password\n"
        f"    return client.get('https://api.example.com/v1/{name}', headers=headers, timeout=30)\n\n"
    )


def _json(rng: random.Random) -> str:
    record = {
        "id": f"msg_{rng.getrandbits(96):x}",
        "model": "gpt-4o-mini",
        "usage": {"prompt_tokens": rng.randint(1, 4000), "completion_tokens": rng.randint(1, 900)},
        "choices": [{"index": 0, "message": {"role": "assistant", "content": _prose(rng, 300)}}],
        "created": 1_760_000_000 + rng.randint(0, 10_000_000),
        "secret_santa": False,
        "access_token_ttl": 3600,
    }
    return json.dumps(record) + "\n"


def _log(rng: random.Random) -> str:
    level = rng.choice(("INFO", "INFO", "INFO", "WARN", "DEBUG", "ERROR"))
    minute, second = rng.randrange(60), rng.randrange(60)
    return (
        f"2026-03-14T09:{minute:02d}:{second:02d}.{rng.randrange(1000):03d}Z {level} "
        f"[worker-{rng.randrange(8)}] "
        f"request_id={rng.getrandbits(128):032x} method={rng.choice(('GET', 'POST'))} "
        f"path=/v1/{rng.choice(WORDS)}/{rng.randrange(10**6)} status={rng.choice((200, 201, 404, 500))} "
        f"latency_ms={rng.randrange(2000)} client=10.{rng.randrange(256)}.{rng.randrange(256)}.7 "
        f'trace={rng.getrandbits(64):016x} msg="{" ".join(rng.choices(WORDS, k=6))}"\n'
    )


def _blob(rng: random.Random) -> str:
    raw = rng.randbytes(rng.randint(300, 3000))
    return "attachment: " + base64.b64encode(raw).decode() + "\n"


Maker = Callable[[random.Random], str]
TRAFFIC: dict[str, Maker] = {
    "prose": lambda rng: _prose(rng, 800),
    "code": _code,
    "JSON": _json,
    "logs": _log,
    "base64": _blob,
}


@dataclass
class Corpus:
    documents: list[str]
    planted: int

    @property
    def size(self) -> int:
        return sum(len(document.encode()) for document in self.documents)


def make_corpus(
    megabytes: float, document_kb: int, examples: list[str], seed: int, makers: Sequence[Maker] = ()
) -> Corpus:
    """Documents mixing the traffic ``makers`` (all kinds by default), 30 % of them with a planted secret."""
    rng = random.Random(seed)  # noqa: S311 - reproducible filler text, not cryptography
    makers = makers or tuple(TRAFFIC.values())
    documents: list[str] = []
    planted = 0
    target = int(megabytes * 1024 * 1024)
    total = 0
    while total < target:
        parts: list[str] = []
        size = 0
        while size < document_kb * 1024:
            part = rng.choice(makers)(rng)
            parts.append(part)
            size += len(part)
        if rng.random() < 0.3:
            parts.insert(rng.randrange(len(parts)), f"\nconfig: {rng.choice(examples)}\n")
            planted += 1
        document = "".join(parts)
        documents.append(document)
        total += len(document.encode())
    return Corpus(documents, planted)


def _example_file(examples: list[str], folder: Path) -> tuple[Path, list[tuple[int, int]]]:
    """All examples in one file, two blank lines apart; returns each example's 1-based line range."""
    lines: list[str] = []
    ranges: list[tuple[int, int]] = []
    for example in examples:
        first = len(lines) + 1
        lines.extend(example.split("\n"))
        ranges.append((first, len(lines)))
        lines.extend(["", ""])
    path = folder / "examples.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, ranges


def _count_found(found_lines: set[int], ranges: list[tuple[int, int]]) -> int:
    return sum(1 for first, last in ranges if any(line in found_lines for line in range(first, last + 1)))


@dataclass
class Row:
    tool: str
    seconds: float
    megabytes_per_second: float
    findings: int
    examples_found: int


def bench_egressguard(
    label: str, corpus: Corpus, packs: list[RulePack], example_text: str, ranges: list[tuple[int, int]]
) -> Row:
    scanner = Scanner(packs, timeout_s=1.0)
    mbps = _megabytes_per_second(scanner, corpus)
    findings = sum(len(scanner.scan_alone(document).matches) for document in corpus.documents)
    line_starts = [0] + [index + 1 for index, char in enumerate(example_text) if char == "\n"]
    found_lines = {
        bisect.bisect_right(line_starts, match.start) for match in scanner.scan_alone(example_text).matches
    }
    return Row(label, corpus.size / mbps / 1e6, mbps, findings, _count_found(found_lines, ranges))


def _megabytes_per_second(scanner: Scanner, corpus: Corpus) -> float:
    """Best of two (the machine is shared)."""
    timings = []
    for _ in range(2):
        start = time.perf_counter()
        for document in corpus.documents:
            scanner.scan_alone(document)
        timings.append(time.perf_counter() - start)
    return corpus.size / min(timings) / 1e6


def bench_traffic(
    packs: list[RulePack], everything: list[RulePack], examples: list[str], document_kb: int, seed: int
) -> list[str]:
    """MB/s with every pack on each kind of traffic alone (1 MB of it, secrets planted as in the mix)."""
    default, optional = Scanner(packs, timeout_s=1.0), Scanner(everything, timeout_s=1.0)
    lines = [f"{'every pack, by traffic':<30} {'MB/s':>8} {'+opt MB/s':>10}"]
    for kind, maker in TRAFFIC.items():
        corpus = make_corpus(1.0, document_kb, examples, seed, (maker,))
        speeds = _megabytes_per_second(default, corpus), _megabytes_per_second(optional, corpus)
        lines.append(f"  {kind:<28} {speeds[0]:>8.1f} {speeds[1]:>10.1f}")
    return lines


def bench_loosened(packs: list[RulePack], examples: list[str], document_kb: int, seed: int) -> str:
    """MB/s of every pack on each kind of traffic with and without the loosened-form check (the same
    findings), from CPU time, the two alternated three times in this process (best of each)."""
    scanners = {False: Scanner(packs, timeout_s=1.0, loosened=False), True: Scanner(packs, timeout_s=1.0)}
    parts = []
    for kind, maker in TRAFFIC.items():
        corpus = make_corpus(0.5, document_kb, examples, seed, (maker,))
        best = dict.fromkeys(scanners, float("inf"))
        for _ in range(3):
            for loosened, scanner in scanners.items():
                start = time.process_time()
                for document in corpus.documents:
                    scanner.scan_alone(document)
                best[loosened] = min(best[loosened], time.process_time() - start)
        parts.append(f"{kind} {corpus.size / best[False] / 1e6:.1f} -> {corpus.size / best[True] / 1e6:.1f}")
    return "every pack, CPU time, without -> with the loosened-form check, MB/s: " + ", ".join(parts)


def bench_detect_secrets(
    corpus: Corpus, folder: Path, example_path: Path, ranges: list[tuple[int, int]]
) -> Row:
    paths = []
    for number, document in enumerate(corpus.documents):
        path = folder / f"doc{number}.txt"
        path.write_text(document, encoding="utf-8")
        paths.append(path)
    with default_settings():
        start = time.perf_counter()
        collection = SecretsCollection()
        for path in paths:
            collection.scan_file(str(path))
        seconds = time.perf_counter() - start
        findings = sum(len(secrets) for secrets in collection.data.values())
        examples = SecretsCollection()
        examples.scan_file(str(example_path))
        found_lines = {secret.line_number for secrets in examples.data.values() for secret in secrets}
    mbps = corpus.size / seconds / 1e6
    return Row("detect-secrets 1.5", seconds, mbps, findings, _count_found(found_lines, ranges))


def bench_stream(corpus: Corpus, packs: list[RulePack], delta_size: int, kilobytes: int = 256) -> str:
    """Streaming redaction cost: the corpus fed as deltas of ``delta_size`` characters."""
    scanner = Scanner(packs)
    text = "".join(corpus.documents)[: kilobytes * 1024]
    redactor = StreamRedactor(scanner)
    start = time.perf_counter()
    for position in range(0, len(text), delta_size):
        redactor.feed(text[position : position + delta_size])
    redactor.flush()
    seconds = time.perf_counter() - start
    deltas = -(-len(text) // delta_size)
    return (
        f"stream redaction, {delta_size}-char deltas: {len(text) / seconds / 1e6:.1f} MB/s, "
        f"{seconds / deltas * 1e6:.0f} us per delta"
    )


def bench_disguised(packs: list[RulePack]) -> list[str]:
    """Recall on the secrets pack's examples encoded and disguised, and hard-negative false positives."""
    scanner = Scanner(packs, timeout_s=1.0)
    lines = recall_lines(scanner, [pack for pack in packs if pack.name == "secrets"])
    negatives = hard_negatives()
    flagged: Counter[str] = Counter()
    for kind, text in negatives:
        if any(match.rule.pack == "secrets" for match in scanner.scan_alone(text).matches):
            flagged[kind] += 1
    share = sum(flagged.values()) / len(negatives)
    detail = ", ".join(f"{kind}: {count}" for kind, count in sorted(flagged.items())) or "none"
    lines.append(f"hard negatives flagged: {sum(flagged.values())}/{len(negatives)} = {share:.3f} ({detail})")
    return lines


def bench_pii(packs: list[RulePack]) -> list[str]:
    """Recall on phone numbers (US, UK, DE, FR, IN in every format) and addresses; false positives."""
    scanner = Scanner(packs, timeout_s=1.0)
    items = pii_corpus()
    found = 0
    for _, text, value in items:
        start = text.index(value)
        end = start + len(value)
        matches = scanner.scan_alone(text).matches
        found += any(m.rule.pack == "pii" and m.start <= start and m.end >= end for m in matches)
    negatives = pii_negatives()
    flagged = sum(1 for _, text in negatives if scanner.scan_alone(text).matches)
    return [
        f"PII dev corpus found whole: {found}/{len(items)} = {found / len(items):.3f}; "
        f"look-alikes flagged: {flagged}/{len(negatives)}"
    ]


def crafted_shapes() -> dict[str, str]:
    """Text made to be slow to scan, 1 MB of each (runs of one character, letter-spaced text, digits,
    base64 and hex alphabets, a key's prefix repeated), after 1 MB of prose to compare with."""
    rng = random.Random(1)  # noqa: S311 - reproducible filler text, not cryptography
    return {
        "prose": _prose(rng, 1_000_000),
        "aaaa": "a" * 1_000_000,
        "a a a": "a " * 500_000,
        "a\\ta": "a\t" * 500_000,
        "a<nbsp>a": "a\u00a0" * 500_000,
        "x y z": " ".join(rng.choices(string.ascii_lowercase, k=500_000)),
        "7777": "7" * 1_000_000,
        "digits": "".join(rng.choices(string.digits, k=1_000_000)),
        "base64": "".join(rng.choices(string.ascii_letters + string.digits + "+/", k=1_000_000)),
        "hex": "".join(rng.choices("0123456789abcdef", k=1_000_000)),
        # A key's prefix over and over: every one starts a key's reading.
        "AKIAAKIA": "AKIA" * 250_000,
        "hvs.hvs.": "hvs." * 250_000,
    }


def bench_crafted(packs: list[RulePack]) -> str:
    """MB/s of every pack on each crafted shape, next to prose."""
    scanner = Scanner(packs, timeout_s=1.0)
    speeds = []
    for name, text in crafted_shapes().items():
        start = time.perf_counter()
        scanner.scan_alone(text)
        speeds.append(f"{name} {len(text) / (time.perf_counter() - start) / 1e6:.1f}")
    return "every pack on text made to be slow, MB/s: " + ", ".join(speeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=4.0)
    parser.add_argument("--document-kb", type=int, default=64)
    parser.add_argument("--seed", type=int, default=7)
    options = parser.parse_args()

    packs = load_packaged_packs()
    data_packs = [
        pack for pack in packs if pack.threat in {Threat.CREDENTIAL_THEFT, Threat.DATA_EXFILTRATION}
    ]
    everything = [pack.with_everything_enabled() for pack in packs]
    examples = [example for pack in data_packs for rule in pack.rules for example in rule.match_examples]
    corpus = make_corpus(options.megabytes, options.document_kb, examples, options.seed)

    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        example_path, ranges = _example_file(examples, folder)
        example_text = example_path.read_text(encoding="utf-8")
        data_names = "+".join(pack.name for pack in data_packs)
        rows = [
            bench_egressguard(f"eg {data_names}", corpus, data_packs, example_text, ranges),
            bench_egressguard(
                f"eg {data_names} +opt",
                corpus,
                [pack.with_everything_enabled() for pack in data_packs],
                example_text,
                ranges,
            ),
            bench_egressguard("eg every pack", corpus, packs, example_text, ranges),
            bench_egressguard("eg every pack +opt", corpus, everything, example_text, ranges),
            *(
                bench_egressguard(f"eg {pack.name} only", corpus, [pack], example_text, ranges)
                for pack in packs
            ),
            bench_detect_secrets(corpus, folder, example_path, ranges),
        ]

    print(
        f"corpus: {corpus.size / 1e6:.2f} MB in {len(corpus.documents)} documents "
        f"of ~{options.document_kb} KB ({', '.join(TRAFFIC)} mixed), {corpus.planted} planted secrets"
    )
    for pack in everything:
        default_on = sum(rule.enabled for rule in next(p for p in packs if p.name == pack.name).rules)
        print(f"  pack {pack.name}: {len(pack.rules)} rules, {default_on} on by default")
    print(f"match examples of the secrets and PII packs: {len(examples)}\n")
    header = f"{'tool':<30} {'seconds':>9} {'MB/s':>8} {'findings':>9} {'examples found':>15}"
    print(header)
    print("-" * len(header))
    for row in rows:
        share = f"{row.examples_found}/{len(examples)}"
        speed = f"{row.megabytes_per_second:>8.1f}"
        print(f"{row.tool:<30} {row.seconds:>9.3f} {speed} {row.findings:>9} {share:>15}")
    ratio = rows[0].megabytes_per_second / rows[-1].megabytes_per_second
    print(f"\n{rows[0].tool} / detect-secrets throughput: {ratio:.1f}x")
    print("eg = egressguard; +opt = optional rules switched on; examples = the secrets and PII packs' own")
    print()
    for line in bench_traffic(packs, everything, examples, options.document_kb, options.seed):
        print(line)
    print(bench_crafted(packs))
    print(bench_loosened(packs, examples, options.document_kb, options.seed))
    print()
    for delta_size in (3, 40):
        print(f"eg {data_names} {bench_stream(corpus, data_packs, delta_size)}")
    print()
    for line in (*bench_disguised(data_packs), *bench_pii(data_packs)):
        print(line)


if __name__ == "__main__":
    main()
