"""`egressguard scan`: run the text rule packs over a file or stdin and report findings or redact.

Prompt injection goes through the proxy's own detector (``proxy.detectors.injection``: normalisation,
rules, classifier, the thresholds of the text's source), so a text gets the verdict it would get in the
proxy; the other packs report each match's span. Findings are printed without the detected values.

With ``--redact`` the output is the input with secrets and personal data redacted and, where the text
carries an injection for its source, the pieces that carry it withheld behind the proxy's quarantine
marker (``[egressguard: content withheld as a suspected prompt injection (rules)]``), as the proxy
quarantines read content; the injection findings go to stderr, one line each.
Exit status: 0 no findings, 1 findings, 2 bad input.
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from proxy.detectors.injection import (
    InjectionDetector,
    load_default_classifier,
    quarantine_marker,
    withhold,
)
from proxy.exchange import Source
from proxy.model import Finding, Threat
from proxy.scanning.redact import RedactionStyle, redact_text
from proxy.scanning.rulepack import Match, PackError, Scanner, load_packaged_packs

EXIT_CLEAN = 0
EXIT_FINDINGS = 1
EXIT_BAD_INPUT = 2
INJECTION_SOURCES = (Source.USER, Source.TOOL_RESULT, Source.RETRIEVED_DOCUMENT, Source.TOOL_DESCRIPTION)
# Per-rule time budget while scanning a whole file: generous, a file is not a request on the hot path.
_SECONDS_PER_MEGABYTE = 1.0
_MIN_TIMEOUT_S = 0.5


class ScanInputError(Exception):
    """Input that cannot be scanned; the message says where and why."""


@dataclass(frozen=True)
class Record:
    number: int  # 1-based line number of the record in the input
    text: str
    source: str | None = None
    raw: dict[str, Any] | None = None

    def prompt_source(self, default: Source) -> Source:
        """Where the text would reach the model from: the record's ``source`` when it names one
        (``tool`` is a tool result), else the default."""
        if self.source == "tool":
            return Source.TOOL_RESULT
        return Source(self.source) if self.source in set(Source) else default


def add_scan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", default="-", help="file to scan; - or nothing reads stdin")
    parser.add_argument(
        "--input",
        choices=("text", "jsonl"),
        default="text",
        help="text: the whole input is one text; jsonl: one JSON object a line with a 'text' field",
    )
    parser.add_argument(
        "--format",
        choices=("json", "text"),
        default="json",
        help="json: one JSON object per finding; text: one readable line per finding",
    )
    parser.add_argument("--redact", action="store_true", help="print the input with findings redacted")
    parser.add_argument(
        "--style",
        choices=[style.value for style in RedactionStyle],
        default=RedactionStyle.PLACEHOLDER.value,
        help="placeholder style for --redact",
    )
    parser.add_argument(
        "--source",
        choices=[str(source) for source in INJECTION_SOURCES],
        default=str(Source.USER),
        help="where the text would come from in a request, for prompt-injection verdicts (a jsonl "
        "record's own source wins when it names one)",
    )
    parser.add_argument("--rules", type=Path, default=None, help="folder of rule packs (default: built in)")
    parser.add_argument("--all-rules", action="store_true", help="also run optional packs and rules")


def _read_input(name: str, stdin: TextIO) -> str:
    try:
        if name == "-":
            return stdin.read()
        return Path(name).read_bytes().decode("utf-8")
    except OSError as error:
        raise ScanInputError(f"{name}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ScanInputError(f"{name}: not UTF-8 text (byte {error.start})") from None


def _records(name: str, content: str, input_kind: str) -> list[Record]:
    if input_kind == "text":
        return [Record(1, content)]
    records: list[Record] = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as error:
            raise ScanInputError(f"{name}:{number}: not a JSON object: {error.msg}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("text"), str):
            raise ScanInputError(f"{name}:{number}: each record needs a string 'text' field")
        source = raw.get("source")
        records.append(Record(number, raw["text"], source if isinstance(source, str) else None, raw))
    return records


def _located(record: Record, start: int, end: int, line_starts: list[int], input_kind: str) -> dict[str, Any]:
    if input_kind == "text":
        index = bisect.bisect_right(line_starts, start) - 1
        line, line_start = index + 1, line_starts[index]
    else:
        line, line_start = record.number, 0
    return {"line": line, "start": start - line_start, "end": end - line_start}


def _finding(record: Record, match: Match, line_starts: list[int], input_kind: str) -> dict[str, Any]:
    finding: dict[str, Any] = {
        **_located(record, match.start, match.end, line_starts, input_kind),
        "rule": match.rule.id,
        "pack": match.rule.pack,
        "threat": str(match.rule.threat),
        "severity": str(match.rule.severity),
    }
    if record.source is not None:
        finding["source"] = record.source
    return finding


def _injection_finding(
    record: Record, found: Finding, start: int, end: int, line_starts: list[int], input_kind: str
) -> dict[str, Any]:
    """A prompt-injection verdict, placed at the first piece of the text that carries it (what the proxy
    would withhold)."""
    finding: dict[str, Any] = {
        **_located(record, start, end, line_starts, input_kind),
        "rule": found.rule,
        "pack": "injection",
        "threat": str(found.threat),
        "severity": str(found.severity),
        "signal": found.signal,
        "origin": found.origin,
    }
    if record.source is not None:
        finding["source"] = record.source
    return finding


def _line_starts(text: str) -> list[int]:
    starts = [0]
    position = text.find("\n")
    while position >= 0:
        starts.append(position + 1)
        position = text.find("\n", position + 1)
    return starts


def _report(findings: list[dict[str, Any]], name: str, output_format: str, out: TextIO) -> None:
    for finding in findings:
        if output_format == "json":
            out.write(json.dumps(finding) + "\n")
        else:
            where = f"{name}:{finding['line']}:{finding['start'] + 1}"
            out.write(f"{where}: {finding['rule']} ({finding['threat']}, {finding['severity']})\n")


def run_scan(
    args: argparse.Namespace,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        packs = load_packaged_packs(args.rules)
        if args.all_rules:
            packs = [pack.with_everything_enabled() for pack in packs]
        content = _read_input(args.file, stdin)
        records = _records(args.file, content, args.input)
    except (ScanInputError, PackError) as error:
        print(f"egressguard scan: {error}", file=stderr)
        return EXIT_BAD_INPUT
    if not packs:
        print("egressguard scan: no rule packs found", file=stderr)
        return EXIT_BAD_INPUT

    largest = max((len(record.text) for record in records), default=0)
    injection_packs = [pack for pack in packs if pack.threat is Threat.PROMPT_INJECTION]
    packs = [pack for pack in packs if pack.threat is not Threat.PROMPT_INJECTION]
    detector = InjectionDetector(injection_packs, load_default_classifier()) if injection_packs else None
    scanner = Scanner(packs, timeout_s=max(_MIN_TIMEOUT_S, largest / 1e6 * _SECONDS_PER_MEGABYTE))
    style = RedactionStyle(args.style)
    found = 0
    timed_out: set[str] = set()
    for record in records:
        source = record.prompt_source(Source(args.source))
        injections = detector.detect(record.text, "scan", source) if detector is not None else []
        spans = detector.suspect_spans(record.text, source) if detector and injections else []
        line_starts = _line_starts(record.text) if args.input == "text" else []
        findings = [
            _injection_finding(record, injection, spans[0][0], spans[0][1], line_starts, args.input)
            for injection in injections
        ]
        text = record.text
        if args.redact and injections:
            # As the proxy quarantines read content: the spans that carry the injection are withheld, and
            # what is left is scanned for secrets.
            text = withhold(text, spans, quarantine_marker(injection.rule for injection in injections))
        # Each text with a budget of its own; a rule out of time on it is said on stderr below.
        result = scanner.scan_alone(text)
        timed_out.update(result.timed_out)
        found += len(result.found) + len(findings)
        if args.redact:
            redacted = redact_text(text, result.found, style)
            if record.raw is None:
                stdout.write(redacted)
            else:
                stdout.write(json.dumps({**record.raw, "text": redacted}, ensure_ascii=False) + "\n")
            # The redacted text is the output; what was withheld as an injection is said on stderr.
            _report(findings, args.file, "text", stderr)
            continue
        _report(
            [_finding(record, match, line_starts, args.input) for match in result.found],
            args.file,
            args.format,
            stdout,
        )
        _report(findings, args.file, args.format, stdout)
    for rule_id in sorted(timed_out):
        print(f"egressguard scan: rule {rule_id} timed out; its findings may be incomplete", file=stderr)
    return EXIT_FINDINGS if found else EXIT_CLEAN


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="egressguard scan", description=__doc__.splitlines()[0])
    add_scan_arguments(parser)
    return run_scan(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
