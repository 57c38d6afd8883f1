"""Rule packs (YAML data) and the scanner that runs them over text.

A pack file looks like::

    pack: secrets
    threat: data_exfiltration       # default threat of its rules
    enabled: true                   # optional packs say false
    whole_tokens: true              # a match reaches to the end of the token it starts (secrets)
    decode: true                    # rules also run over encoded and disguised text (scanning/unmask.py)
    skip_examples: true             # published doc examples and stand-ins (sk-xxxx...) are no finding
    rules:
      - id: github-pat
        description: GitHub personal access token (classic)
        regex: '(?<![A-Za-z0-9_])ghp_[A-Za-z0-9]{36}(?![A-Za-z0-9_])'
        keywords: [ghp_]            # any of these in the lowercased text makes the rule run
        severity: critical
        owasp: LLM06
        examples: {match: [...], no_match: [...]}
        # optional: entropy (minimum bits/char of the value), validator (a name in proxy.scanning.validators),
        # secret_group (group number or name holding the sensitive value; 0 = whole match),
        # shapes (like keywords, but looked for in the text with every digit written as 0, for
        # numbers: [000-00-0000]), max_length (longest possible match, for patterns with unbounded
        # repeats such as "one or more spaces" that would otherwise run over the whole text; in a
        # whole_tokens pack a token running past it is still covered to its end),
        # anchored (true when every match starts with one of the keywords or shapes: the regex is then
        # only tried at each hit, never across a window, so even a common word is a cheap keyword),
        # glued (whether a word character written right before the key still lets it match; see below),
        # inside and proof (the key's own structure and a validator proving it, found glued on both
        # sides; see below), threat, enabled

A regex that opens with the left word boundary ``(?<![A-Za-z0-9_])`` and then a fixed prefix of at
least ``GLUED_PREFIX`` characters (``ghp_``, ``xox[bp]-``, ``AKIA``) runs without that boundary: a key
so marked stays a key with a character glued before it (``?q=aghp_...``), which a reader drops as
easily as a space. A rule says ``glued: false`` where its prefix is an everyday word or common in
encoded data (``key-``, ``EAAA``), and ``glued: true`` where a shorter prefix is as distinctive
(``hf_``). Where such a regex closes with a word boundary (``(?![A-Za-z0-9_])``) after a key of one
length (``ghp_`` and 36 characters, ``AKIA`` and 16), the key is also found with characters glued after
it (``ghp_...x``), as long as nothing base64 could hold stands right before its prefix: a key glued on
one side, not a stretch of an encoded blob. Readings that put a key together from pieces (split,
joined, regrouped) or turn it run the regex as written: their joins make runs that are no key glued to
anything.

A key whose format proves it wherever it stands is found glued on both sides (``xghp_...y``) by its
rule's ``inside`` form: a regex of the key alone, no boundary at either end and of bounded length (no
longer than the rule's own matches, so it is searched where the rule is), with few enough ways to
backtrack (``INSIDE_PATHS``) to be searched without a time limit. A match of it is a key where
``proof`` names a validator it passes (``base62_crc32``: GitHub's and npm's checksum), or, with no
proof, where the form itself holds a marker at a fixed place (OpenAI's ``T3BlbkFJ``, Anthropic's ``AA``
after 93 characters) that a run of base64 or a word holds by chance too rarely to matter. It counts
where the regex found no match starting at the same place, and covers the key alone: what is glued
to it stays. A match that fails its proof is searched on from its end, so a form with a proof is one
in which no match can start inside another (the body of ``ghp_...`` holds no ``_``).

A glued rule of a key of one length with no ``inside`` form written has one of its prefix and length
alone, its regex less the boundaries (``prefix_length_inside``: ``xAKIA...y``, ``foo_AIza..._bar``). How
often a run of random characters holds a match is read from the regex, for each alphabet of the random
runs agents read (base64, base64url, base62, hex, base32, ``_RUN_ALPHABETS``); a match counts in a run of
base64 characters no longer than one holding such a key by chance ``GLUED_RUN_CHANCE`` of the time, in
the narrowest alphabet the run's characters may be drawn from (``longest_run``): AKIA and 16 characters
in any run but one of base32, which the key itself is; AIza and 35 in no more than about 550 characters of
base64 (an image is longer). It is read in the text as it stands and decoded, not in the readings that put
a key together or turn it (their joins and turnings make the runs).

A rule with neither keywords nor shapes runs on every text. Every match of a rule must contain one of
its keywords or shapes: a hit only makes the rule run in a window around it. Keywords are looked for
with any whitespace character read as a space, so "do not" also finds "do\tnot" (not "do  not").

Scanning makes one Aho-Corasick pass over the lowercased text to pick the rules whose keywords occur,
drops those whose loosened RE2 form (scanning/relaxed.py, linear time) finds nothing where they would
look, then runs only the rest's regexes, each under a time limit so a pathological input skips a rule
instead of hanging a request.
"""

from __future__ import annotations

import bisect
import functools
import importlib.resources
import itertools
import math
import operator
import re
import string
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import compress
from pathlib import Path
from typing import Any

import ahocorasick_rs
import numpy as np
import numpy.typing as npt
import regex
import yaml

from proxy.model import SEVERITY_ORDER, Action, Finding, Severity, Threat
from proxy.scanning import relaxed, unmask
from proxy.scanning.validators import (
    VALIDATORS,
    Validator,
    is_example_value,
    is_vault_placeholder,
    shannon_entropy,
)

RULES_PACKAGE = "egressguard_rules"

# The standard library's private regex parser measures a pattern's longest match; `regex` cannot.
_sre_parse: Any = importlib.import_module("re._parser")
_sre_constants: Any = importlib.import_module("re._constants")

# The C loader when libyaml is there (several times faster), otherwise the pure-Python one; both safe.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_RULE_ID = regex.compile(r"[a-z0-9][a-z0-9._-]*\Z")
_REQUIRED_RULE_KEYS = ("id", "description", "regex", "severity", "owasp", "examples")
_OPTIONAL_RULE_KEYS = (
    "keywords",
    "shapes",
    "max_length",
    "anchored",
    "glued",
    "inside",
    "proof",
    "entropy",
    "validator",
    "secret_group",
    "threat",
    "enabled",
    "files",
)
_PACK_FLAGS = {"enabled": True, "whole_tokens": False, "decode": False, "skip_examples": False}
_PACK_KEYS = ("pack", "threat", "description", "version", "rules", *_PACK_FLAGS)

WORD_START = "(?<![A-Za-z0-9_])"
"""The left word boundary a rule's regex opens with, which a rule with a distinctive prefix runs without."""
GLUED_PREFIX = 4
"""The fewest characters of fixed prefix that still read as a key with a word character glued before."""
PACKS_KEPT = 128
"""Packs kept read, by file and text: a reload, and each scanner a policy builds, reads the same packs."""
PATTERN_FACTS_KEPT = 8192
"""What the scanner works out of each rule's pattern (its widths, lookbehind, whitespace, start), kept by
the pattern's text: every scanner built from the same packs asks the same questions."""


@dataclass(frozen=True)
class Rule:
    id: str
    description: str
    pattern: regex.Pattern[str]
    keywords: tuple[str, ...]
    threat: Threat
    severity: Severity
    owasp: str
    entropy: float | None
    validator: str | None
    secret_group: int | str
    match_examples: tuple[str, ...]
    no_match_examples: tuple[str, ...]
    enabled: bool
    pack: str = ""
    shapes: tuple[str, ...] = ()
    max_length: int | None = None
    anchored: bool = False
    glued: bool = False
    """Whether the regex runs without the left word boundary it was written with (``WORD_START``)."""
    written: regex.Pattern[str] | None = None
    """The regex as the pack writes it, where ``pattern`` reads keys glued (``glued``): what a disguised
    reading of a text runs."""
    inside: regex.Pattern[str] | None = None
    """The key's own structure, found with anything glued to either side (the module says when)."""
    inside_runs: tuple[tuple[frozenset[str], int], ...] = ()
    """For an ``inside`` form of a prefix and a length alone (``prefix_length_inside``), the longest run of
    each alphabet a match of it may stand in (``longest_run``); none for a form written in the pack."""
    proof: str | None = None
    """The validator a match of ``inside`` must pass (a checksum); None where the structure is the proof."""
    whole_token: bool = False
    decoded: bool = False
    skip_examples: bool = False
    files: tuple[str, ...] = ()
    """Paths the rule names, spelled out: what a glob in a command (``~/.aws/*``) is judged against."""


_NEVER = regex.compile(r"(?!)")


def unread_rule(pack: str, threat: Threat, owasp: str, reader: str | None = None) -> Rule:
    """The pseudo-rule out of time (``SCAN_TIMEOUT_RULE``) for a text that ``pack``'s rules (and, as
    ``reader`` says, what reads with them) had no budget left to read: ``<pack>-unread``, one for the text
    in place of one for each rule, under the pack's threat. It matches nothing."""
    return Rule(
        id=f"{pack}-unread",
        description=f"{reader or f'The {pack} rules'} had no budget left to read the text",
        pattern=_NEVER,
        keywords=(),
        threat=threat,
        severity=Severity.HIGH,
        owasp=owasp,
        entropy=None,
        validator=None,
        secret_group=0,
        match_examples=(),
        no_match_examples=(),
        enabled=True,
        pack=pack,
    )


@dataclass(frozen=True)
class RulePack:
    name: str
    threat: Threat
    enabled: bool
    rules: tuple[Rule, ...]
    path: Path | None = None

    def with_everything_enabled(self) -> RulePack:
        """This pack with the pack and each of its rules switched on (for optional packs)."""
        return replace(self, enabled=True, rules=tuple(replace(rule, enabled=True) for rule in self.rules))


@dataclass(frozen=True)
class Match:
    """Where a rule found a sensitive value: the span of the value, not of the whole regex match."""

    rule: Rule
    start: int
    end: int
    disguise: str = ""
    """How the value was hidden when it was found in a decoded view (``base64``, ``disguise``, ...)."""


class ScanTimeout(Exception):
    """A rule ran out of time on a text even when run again (or its budget was spent before it could
    run): what it looks for there is not known. Raised by ``ScanResult.matches``; ``result`` holds what
    the other rules found."""

    def __init__(self, result: ScanResult) -> None:
        self.result = result
        super().__init__(f"rules out of time: {', '.join(result.timed_out)}")


@dataclass(frozen=True)
class ScanResult:
    found: list[Match] = field(default_factory=list)
    """What the rules found: all there is only where ``timed_out`` is empty."""
    timed_out: tuple[str, ...] = ()
    """The rules that ran out of time on the text (ids, in the order they ran)."""

    @property
    def matches(self) -> list[Match]:
        """What the rules found; raises ``ScanTimeout`` where a rule ran out of time, so that a caller
        cannot take a partial reading for a whole one without saying so (``found``)."""
        if self.timed_out:
            raise ScanTimeout(self)
        return self.found


class ScanBudget:
    """The CPU seconds the scans of one request, one response or one WebSocket message may spend in all,
    shared by every scanner and every text read for it, and the rules that ran out of time in them.
    It holds ``seconds`` at the start, and every text handed to a scan adds ``per_char`` seconds a
    character (``BUDGET_CHARS``); everything a scan does is charged in CPU time (``metered``): the
    keyword pass, the loosened forms' question, every rule's run and run again, the decoded views; and
    so is the work of detectors around their scans (the injection detector's normalisation and
    classifier). Once it is spent no text is read any more, not even by a keyword pass: every pack a
    later text (or the rest of a text's views) is handed to is out of time for it (``Scanner.unread``).
    The work of one request is so bounded by ``seconds`` and ``per_char`` a character scanned, plus the
    one step under way when it ran out."""

    def __init__(self, seconds: float, per_char: float = 0.0) -> None:
        self.seconds = seconds
        self.per_char = per_char
        self.left = seconds
        self.timed_out: dict[str, Rule] = {}
        """By id, every rule that ran out of time in a scan charged here (rules of several scanners)."""

    @property
    def spent(self) -> bool:
        """Nothing is left of it: no rule runs any more."""
        return self.left <= 0

    def spent_for(self, chars: int) -> bool:
        """Spent even with the share a text of ``chars`` characters would add: nothing may read it."""
        return self.left + self.per_char * chars <= 0

    def renew(self) -> None:
        """The budget of the next request, response or message: all seconds back, no rule out of time."""
        self.left = self.seconds
        self.timed_out = {}

    def allow(self, chars: int) -> None:
        """A text of ``chars`` characters is handed to a scan: its allowance is added."""
        self.left += self.per_char * chars

    def metered(self) -> Meter:
        """Work charged to this budget when it ends (a ``with`` block), the meter telling meanwhile what
        is left."""
        return Meter(self)


_EXACT_EVERY = 0.002
"""Wall seconds after which a meter reads the CPU clock again where the answer depends on it: in between it
counts the time that passed, an upper bound of the CPU time, so a meter is never ahead of the truth by
more than this where it tells that the budget (or a run's limit) is spent."""


class Meter:
    """What one piece of work charged to a ``ScanBudget`` has spent so far in the thread's CPU time. A
    thread's CPU time grows no faster than the wall clock, so between readings of the CPU clock (a system
    call of one to three microseconds on a virtual machine) the wall clock (a vDSO call) bounds it from
    above, and the CPU clock is read at the start, at the end, and between only where the wall clock's bound
    comes within reach of a limit and was last checked ``_EXACT_EVERY`` ago or more."""

    def __init__(self, budget: ScanBudget) -> None:
        self.budget = budget
        self._wall = time.monotonic()
        """The wall clock at the last reading of the CPU clock."""
        self._cpu = time.thread_time()
        self._spent = 0.0
        """The seconds spent up to ``_wall``."""

    def spent(self) -> float:
        """The seconds spent so far: never less than the truth, at most ``_EXACT_EVERY`` more."""
        now = time.monotonic()
        if now - self._wall >= _EXACT_EVERY:
            self._read_cpu(now)
            return self._spent
        return self._spent + now - self._wall

    def left(self, exact_below: float = 0.0) -> float:
        """What is left of the budget: never more than the truth, and at most ``_EXACT_EVERY`` less where
        that is ``exact_below`` or less (a rule's run limit, which the budget cuts short only there).
        Under load the wall clock runs far ahead of the thread's CPU time; the CPU clock is read only
        where the wall clock's bound leaves the budget spent, or below ``exact_below``."""
        now = time.monotonic()
        left = self.budget.left - self._spent - (now - self._wall)
        if left > exact_below or now - self._wall < _EXACT_EVERY:
            return left
        self._read_cpu(now)
        return self.budget.left - self._spent

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *raised: object) -> None:
        # A context manager of its own rather than a generator's: a turn enters some ten of them.
        self.budget.left -= self.settle()

    def settle(self) -> float:
        """The CPU seconds this work cost."""
        self._read_cpu(time.monotonic())
        return self._spent

    def _read_cpu(self, now: float) -> None:
        cpu = time.thread_time()
        self._spent += cpu - self._cpu
        self._cpu, self._wall = cpu, now


class PackError(Exception):
    """A rule pack that cannot be loaded. ``problems`` holds every problem found, this one first."""

    def __init__(self, path: Path | str, line: int, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        self.problems: list[PackError] = [self]
        super().__init__(self.path, line, message)

    def __str__(self) -> str:
        return "\n".join(f"{problem.path}:{problem.line}: {problem.message}" for problem in self.problems)


def _key_lines(node: yaml.Node) -> dict[str, int]:
    """1-based line of each key's value in a YAML mapping node."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(key.value): value.start_mark.line + 1 for key, value in node.value}


class _PackReader:
    """Collects every problem of one pack file instead of stopping at the first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[PackError] = []

    def problem(self, line: int, message: str) -> None:
        self.problems.append(PackError(self.path, line, message))

    def read(self, text: str) -> RulePack:
        try:
            loader = _Loader(text)
            try:
                root = loader.get_single_node()
                data = loader.construct_document(root) if root is not None else None
            finally:
                loader.dispose()
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            line = mark.line + 1 if mark is not None else 0
            raise PackError(self.path, line, f"not valid YAML: {getattr(error, 'problem', error)}") from None
        if not isinstance(data, dict) or root is None:
            raise PackError(self.path, 1, "a pack is a mapping with pack, threat and rules")
        pack = self._read_pack(data, root)
        if self.problems:
            first = self.problems[0]
            first.problems = self.problems
            raise first
        return pack

    def _read_pack(self, data: dict[str, Any], root: yaml.Node) -> RulePack:
        lines = _key_lines(root)
        for key in data:
            if key not in _PACK_KEYS:
                self.problem(lines.get(str(key), 1), f"unknown pack key {key!r}")
        name = data.get("pack")
        if not isinstance(name, str) or not name:
            self.problem(lines.get("pack", 1), "pack: a non-empty name is required")
            name = self.path.stem
        threat = self._threat(data.get("threat"), lines.get("threat", 1))
        flags: dict[str, bool] = {}
        for key, default in _PACK_FLAGS.items():
            flags[key] = data.get(key, default)
            if not isinstance(flags[key], bool):
                self.problem(lines.get(key, 1), f"{key}: must be true or false")
                flags[key] = default
        raw_rules = data.get("rules")
        if not isinstance(raw_rules, list) or not raw_rules:
            self.problem(lines.get("rules", 1), "rules: a non-empty list is required")
            raw_rules = []
        rule_nodes = _child(root, "rules")
        node_items: list[yaml.Node] = rule_nodes.value if isinstance(rule_nodes, yaml.SequenceNode) else []
        rules: list[Rule] = []
        seen: dict[str, int] = {}
        for index, raw in enumerate(raw_rules):
            node = node_items[index] if index < len(node_items) else None
            rule = self._read_rule(raw, node, threat or Threat.CREDENTIAL_THEFT, name)
            if rule is None:
                continue
            rule = replace(
                rule,
                whole_token=flags["whole_tokens"],
                decoded=flags["decode"],
                skip_examples=flags["skip_examples"],
            )
            line = node.start_mark.line + 1 if node is not None else 0
            if rule.id in seen:
                self.problem(line, f"duplicate rule id {rule.id!r} (first at line {seen[rule.id]})")
            seen[rule.id] = line
            rules.append(rule)
        return RulePack(name, threat or Threat.CREDENTIAL_THEFT, flags["enabled"], tuple(rules), self.path)

    def _threat(self, value: Any, line: int) -> Threat | None:
        try:
            return Threat(value)
        except ValueError:
            self.problem(line, f"threat: unknown threat {value!r}; one of {', '.join(Threat)}")
            return None

    def _read_rule(
        self, raw: Any, node: yaml.Node | None, default_threat: Threat, pack_name: str
    ) -> Rule | None:
        start = node.start_mark.line + 1 if node is not None else 0
        if not isinstance(raw, dict):
            self.problem(start, "a rule is a mapping")
            return None
        lines = _key_lines(node) if node is not None else {}
        before = len(self.problems)

        def at(key: str) -> int:
            return lines.get(key, start)

        for key in raw:
            if key not in _REQUIRED_RULE_KEYS and key not in _OPTIONAL_RULE_KEYS:
                self.problem(at(str(key)), f"unknown rule key {key!r}")
        for key in _REQUIRED_RULE_KEYS:
            if key not in raw:
                self.problem(start, f"rule {raw.get('id', '?')!r}: {key} is required")
        rule_id = raw.get("id")
        if not isinstance(rule_id, str) or not _RULE_ID.match(rule_id):
            self.problem(at("id"), f"id: {rule_id!r} is not a lowercase id like 'github-pat'")
            rule_id = "?"
        label = f"rule {raw.get('id', '?')!r}"
        description = raw.get("description", "")
        if not isinstance(description, str):
            self.problem(at("description"), f"{label}: description must be text")
        glued = self._glued(raw, at("glued"), label)
        pattern = self._pattern(raw.get("regex"), at("regex"), label)
        written = None
        if glued and pattern is not None:
            written, pattern = pattern, self._pattern(glued_source(raw["regex"]), at("regex"), label)
        inside, proof, inside_runs = self._inside(raw, pattern, glued, raw.get("max_length"), at, label)
        keywords = raw.get("keywords", [])
        if not isinstance(keywords, list) or not all(isinstance(word, str) and word for word in keywords):
            self.problem(at("keywords"), f"{label}: keywords must be a list of non-empty strings")
            keywords = []
        shapes = raw.get("shapes", [])
        if not isinstance(shapes, list) or not all(isinstance(shape, str) and shape for shape in shapes):
            self.problem(at("shapes"), f"{label}: shapes must be a list of non-empty strings")
            shapes = []
        max_length = raw.get("max_length")
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1
        ):
            self.problem(at("max_length"), f"{label}: max_length must be a positive number of characters")
            max_length = None
        anchored = raw.get("anchored", False)
        if not isinstance(anchored, bool):
            self.problem(at("anchored"), f"{label}: anchored must be true or false")
            anchored = False
        try:
            severity = Severity(str(raw.get("severity")))
        except ValueError:
            self.problem(at("severity"), f"{label}: severity must be one of {', '.join(Severity)}")
            severity = Severity.HIGH
        owasp = raw.get("owasp", "")
        if not isinstance(owasp, str):
            self.problem(at("owasp"), f"{label}: owasp must be text like LLM06")
        threat = default_threat
        if "threat" in raw:
            threat = self._threat(raw["threat"], at("threat")) or default_threat
        entropy = raw.get("entropy")
        if entropy is not None and (
            isinstance(entropy, bool) or not isinstance(entropy, int | float) or not 0 <= entropy <= 8
        ):
            self.problem(at("entropy"), f"{label}: entropy must be a number of bits per char in 0..8")
            entropy = None
        validator = raw.get("validator")
        if validator is not None and validator not in VALIDATORS:
            known = ", ".join(sorted(VALIDATORS))
            self.problem(at("validator"), f"{label}: unknown validator {validator!r}; one of {known}")
        secret_group = raw.get("secret_group", 0)
        if pattern is not None and not _group_exists(pattern, secret_group):
            self.problem(at("secret_group"), f"{label}: secret_group {secret_group!r} is not a group")
        enabled = raw.get("enabled", True)
        if not isinstance(enabled, bool):
            self.problem(at("enabled"), f"{label}: enabled must be true or false")
        files = raw.get("files", [])
        if not isinstance(files, list) or not all(isinstance(path, str) and path for path in files):
            self.problem(at("files"), f"{label}: files must be a list of non-empty paths")
            files = []
        elif pattern is not None:
            for path in files:
                if not pattern.search(path):
                    self.problem(at("files"), f"{label}: files: {path!r} is not matched by the regex")
        match_examples, no_match_examples = self._examples(raw.get("examples"), at("examples"), label)
        if len(self.problems) > before or pattern is None:
            return None
        return Rule(
            id=rule_id,
            description=description,
            pattern=pattern,
            keywords=tuple(dict.fromkeys(word.lower() for word in keywords)),
            threat=threat,
            severity=severity,
            owasp=owasp,
            entropy=float(entropy) if entropy is not None else None,
            validator=validator,
            secret_group=secret_group,
            match_examples=match_examples,
            no_match_examples=no_match_examples,
            enabled=enabled,
            pack=pack_name,
            shapes=tuple(dict.fromkeys(shapes)),
            max_length=max_length,
            anchored=anchored,
            glued=glued,
            written=written,
            inside=inside,
            inside_runs=inside_runs,
            proof=proof,
            files=tuple(files),
        )

    def _inside(
        self,
        raw: dict[str, Any],
        pattern: regex.Pattern[str] | None,
        glued: bool,
        max_length: Any,
        at: Callable[[str], int],
        label: str,
    ) -> tuple[regex.Pattern[str] | None, str | None, tuple[tuple[frozenset[str], int], ...]]:
        """The rule's ``inside`` form, its ``proof`` and the longest runs a match of it may stand in (the
        module says what they are; a glued rule with none written has the one ``prefix_length_inside``
        gives). The form's matches must be no longer than the rule's own, whose windows it is searched in,
        and so few ways to split among its parts that a search of it takes time linear in the text
        (``INSIDE_PATHS``): it runs without the regex module's time limit, whose setup costs several times
        the search of a window."""
        source, proof = raw.get("inside"), raw.get("proof")
        runs: tuple[tuple[frozenset[str], int], ...] = ()
        if proof is not None and (source is None or proof not in VALIDATORS):
            self.problem(at("proof"), f"{label}: proof is a validator's name, for a rule with inside")
            proof = None
        if source is None and glued:
            source, runs = prefix_length_inside(raw["regex"]) or (None, ())
        if source is None:
            return None, None, ()
        inside = self._pattern(source, at("inside"), label)
        if inside is None or pattern is None:
            return None, None, ()
        width = _max_width(inside.pattern)
        longest = max_length if isinstance(max_length, int) else _max_width(pattern.pattern)
        if width is None or (longest is not None and width > longest):
            self.problem(at("inside"), f"{label}: inside must be of bounded length, no longer than the regex")
            return None, None, ()
        paths = backtracking_paths(inside.pattern, width)
        if paths is None or paths > INSIDE_PATHS:
            self.problem(at("inside"), f"{label}: inside may backtrack {INSIDE_PATHS} ways at most")
            return None, None, ()
        return inside, proof, runs

    def _glued(self, raw: dict[str, Any], line: int, label: str) -> bool:
        """Whether the rule's regex runs without the ``WORD_START`` it opens with (the module says when)."""
        glued, source = raw.get("glued"), raw.get("regex")
        if glued is not None and not isinstance(glued, bool):
            self.problem(line, f"{label}: glued must be true or false")
            return False
        if not isinstance(source, str) or not source.startswith(WORD_START):
            if glued is not None:
                self.problem(line, f"{label}: glued is for a regex that opens with {WORD_START}")
            return False
        return _fixed_prefix_length(source) >= GLUED_PREFIX if glued is None else glued

    def _pattern(self, source: Any, line: int, label: str) -> regex.Pattern[str] | None:
        if not isinstance(source, str) or not source:
            self.problem(line, f"{label}: regex must be a non-empty string")
            return None
        try:
            return relaxed.regex_of(source)
        except regex.error as error:
            self.problem(line, f"{label}: regex does not compile: {error}")
            return None

    def _examples(self, raw: Any, line: int, label: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if not isinstance(raw, dict):
            self.problem(line, f"{label}: examples must be a mapping with match and no_match lists")
            return (), ()
        lists: list[tuple[str, ...]] = []
        for key in ("match", "no_match"):
            values = raw.get(key, [])
            if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
                self.problem(line, f"{label}: examples.{key} must be a list of strings")
                values = []
            lists.append(tuple(values))
        if not lists[0]:
            self.problem(line, f"{label}: examples.match needs at least one true positive")
        return lists[0], lists[1]


def _child(node: yaml.Node, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == key:
                return value_node  # type: ignore[no-any-return]
    return None


_WORD_END = regex.compile(r"\(\?!\[[^\]]*\]\)\Z")
"""The closing word boundary of a key's regex (``(?![A-Za-z0-9_])``, ``(?![A-Za-z0-9_-])``)."""
_WORD_CHARACTER = regex.compile("[A-Za-z0-9_]")
_BASE64_BEFORE = "(?<![A-Za-z0-9+/_-])"
"""Where a key glued after may start: right after no character of base64 or base64url."""


def _key_of_one_length(source: str) -> tuple[str, str, int] | None:
    """The key of ``source`` (opening with ``WORD_START``, closing with a word boundary after a key of one
    length), that closing boundary and the key's length; None for a regex of another shape."""
    core = source[len(WORD_START) :]
    closing = _WORD_END.search(core)
    if closing is None:
        return None
    key = core[: closing.start()]
    try:
        low, high = _sre_parse.parse(key).getwidth()
    except (re.error, ValueError, TypeError, OverflowError, RecursionError):
        return None
    if low != high or not low:
        return None
    return key, closing.group(0), low


def glued_source(source: str) -> str:
    """``source`` (opening with ``WORD_START``) as a glued rule runs it (the module says how): without
    its left boundary, and where it closes with a word boundary after a key of one length, with that
    boundary or, instead, a start after no base64 character."""
    one_length = _key_of_one_length(source)
    if one_length is None:
        return source[len(WORD_START) :]
    key, closing, length = one_length
    return f"{key}(?:{closing}|(?<={_BASE64_BEFORE}[\\s\\S]{{{length}}}))"


GLUED_RUN_CHANCE = 1e-5
"""How often a run of random characters of one alphabet, as long as a key's ``longest_run`` in it, may hold a
key of its prefix and length by chance."""
_RUN_ALPHABETS = tuple(
    frozenset(alphabet)
    for alphabet in (
        string.ascii_letters + string.digits + "+/",
        string.ascii_letters + string.digits + "-_",
        string.ascii_letters + string.digits,
        string.digits + "abcdef",
        string.digits + "ABCDEF",
        string.ascii_uppercase + "234567",
        string.ascii_lowercase + "234567",
    )
)
"""The alphabets of the random runs agents read every day: base64 (images), base64url (JWTs), base62 (ids and
tokens), hex (hashes) and base32 (RFC 4648), each case."""
_BASE64_RUN = regex.compile("[A-Za-z0-9+/_-]*")
_BASE64_RUN_BEFORE = regex.compile("(?r)[A-Za-z0-9+/_-]*")


def prefix_length_inside(source: str) -> tuple[str, tuple[tuple[frozenset[str], int], ...]] | None:
    """The ``inside`` form of a glued rule's key of one length, its prefix and length alone (``source``
    less its boundaries), and for each alphabet of random runs the longest run of it a match may stand in:
    one that long holds such a key at one of its places by chance at most ``GLUED_RUN_CHANCE`` of the time
    (``sys.maxsize`` where none can). None where a key of the form is that likely in a run of every
    alphabet no longer than itself and a character either side, or its likelihood is not read from the
    regex."""
    one_length = _key_of_one_length(source)
    if one_length is None:
        return None
    key, _, length = one_length
    runs = []
    for alphabet in _RUN_ALPHABETS:
        chance = _chance(list(_sre_parse.parse(key)), alphabet)
        if chance is None:
            return None
        # A run holds a key at each place but the last ``length - 1``.
        runs.append((alphabet, length - 1 + int(GLUED_RUN_CHANCE / chance) if chance else sys.maxsize))
    return (key, tuple(runs)) if max(longest for _, longest in runs) >= length + 2 else None


def longest_run(runs: tuple[tuple[frozenset[str], int], ...], characters: frozenset[str]) -> int:
    """The longest run of ``characters`` a key of a prefix and a length (``Rule.inside_runs``) may stand in:
    that of the narrowest alphabet those characters may have been drawn from at random."""
    return min((longest for alphabet, longest in runs if characters <= alphabet), default=sys.maxsize)


def _chance(items: list[tuple[Any, Any]], alphabet: frozenset[str]) -> float | None:
    """How likely a run of characters drawn at random from ``alphabet`` matches the parsed regex ``items``
    at a given place; None for a construct other than literals, classes, groups, alternatives and
    repeats of one count."""
    constants = _sre_constants
    chance = 1.0
    for op, value in items:
        if op in (constants.LITERAL, constants.IN):
            characters = _class_characters([(op, value)] if op == constants.LITERAL else value)
            if characters is None:
                return None
            chance *= len(characters & alphabet) / len(alphabet)
        elif op == constants.MAX_REPEAT and value[0] == value[1]:
            part = _chance(list(value[2]), alphabet)
            if part is None:
                return None
            chance *= part ** value[0]
        elif op == constants.SUBPATTERN and not value[1] and not value[2]:
            part = _chance(list(value[3]), alphabet)
            if part is None:
                return None
            chance *= part
        elif op == constants.BRANCH:
            parts = [_chance(list(branch), alphabet) for branch in value[1]]
            if any(part is None for part in parts):
                return None
            chance *= min(1.0, sum(part for part in parts if part is not None))
        else:
            return None
    return chance


def _class_characters(items: list[tuple[Any, Any]]) -> frozenset[str] | None:
    """The characters a parsed character class (or literal) ``items`` holds; None for one negated or with a
    category other than digits."""
    constants = _sre_constants
    characters: set[str] = set()
    for op, value in items:
        if op == constants.LITERAL:
            characters.add(chr(value))
        elif op == constants.RANGE:
            characters.update(map(chr, range(value[0], value[1] + 1)))
        elif op == constants.CATEGORY and value == constants.CATEGORY_DIGIT:
            characters.update(string.digits)
        else:
            return None
    return frozenset(characters)


def _base64_run(text: str, start: int, end: int) -> tuple[int, int, frozenset[str]]:
    """The run of base64 and base64url characters around ``text[start:end]``, and its characters."""
    before = _BASE64_RUN_BEFORE.match(text, 0, start)
    after = _BASE64_RUN.match(text, end)
    low, high = (before.start() if before else start), (after.end() if after else end)
    return low, high, frozenset(text[low:high])


def _fixed_prefix_length(source: str) -> int:
    """How many characters every match of ``source`` starts with that are each one literal or one class
    (``xox[bp]-`` is 5), after its opening lookarounds; 0 for a pattern the standard parser cannot read."""
    try:
        items = list(_sre_parse.parse(source))
    except (re.error, ValueError, TypeError, OverflowError, RecursionError):
        return 0
    constants = _sre_constants
    length = 0
    for op, _ in items:
        if op in (constants.ASSERT, constants.ASSERT_NOT) and not length:
            continue
        if op not in (constants.LITERAL, constants.IN):
            break
        length += 1
    return length


def _passes(check: Validator, value: str, checked: dict[tuple[Validator, str], bool]) -> bool:
    """``check``'s verdict on ``value``, asked once a scan (``checked`` keeps them)."""
    verdict = checked.get((check, value))
    if verdict is None:
        verdict = checked[check, value] = check(value)
    return verdict


def _group_exists(pattern: regex.Pattern[str], group: Any) -> bool:
    if isinstance(group, bool):
        return False
    if isinstance(group, int):
        return 0 <= group <= pattern.groups
    return isinstance(group, str) and group in pattern.groupindex


def _windows(hits: list[tuple[int, int]], width: int, length: int) -> list[tuple[int, int]]:
    """Merged regions holding every match of at most ``width`` characters that contains a hit.

    A match containing the hit ``(start, end)`` starts at ``end - width`` or later and ends by
    ``start + width``; the margin after that lets a lookahead at the match's edge see the real text
    (lookbehinds and word boundaries see before a region's start by themselves).
    """
    return _merged_windows(((end - width, start + width + _LOOKAHEAD_MARGIN) for start, end in hits), length)


def _merged_windows(places: Iterable[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """``places`` (in order of their starts) joined where less than ``_MERGE_GAP`` apart, clipped to
    ``length``."""
    windows: list[tuple[int, int]] = []
    low_end = high_end = -1
    for low, high in places:
        if low <= high_end + _MERGE_GAP:
            high_end = max(high_end, high)
            continue
        if high_end >= 0:
            windows.append((max(0, low_end), min(length, high_end)))
        low_end, high_end = low, high
    if high_end >= 0:
        windows.append((max(0, low_end), min(length, high_end)))
    return windows


def load_pack(path: Path) -> RulePack:
    """Load and validate one pack file; raises PackError listing every problem with its line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PackError(path, 0, f"cannot read pack: {error}") from None
    return _pack_of(path, text)


@functools.lru_cache(maxsize=PACKS_KEPT)
def _pack_of(path: Path, text: str) -> RulePack:
    return _PackReader(path).read(text)


def rules_dir() -> Path:
    """The rules/ folder: the installed ``egressguard_rules`` package, or ``<repo>/rules`` in a checkout."""
    try:
        return Path(str(importlib.resources.files(RULES_PACKAGE)))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "rules"


def pack_path(name: str) -> Path:
    return rules_dir() / f"{name}.yaml"


def is_text_pack(path: Path) -> bool:
    """A YAML file with a top-level ``pack:`` whose rules carry a ``regex`` (not a tool or alert list)."""
    try:
        return _holds_text_rules(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return False


@functools.lru_cache(maxsize=PACKS_KEPT)
def _holds_text_rules(text: str) -> bool:
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError:
        return False
    if not isinstance(data, dict) or "pack" not in data:
        return False
    rules = data.get("rules")
    return isinstance(rules, list) and any(isinstance(rule, dict) and "regex" in rule for rule in rules)


def packaged_packs(directory: Path | None = None) -> list[Path]:
    """Every text rule pack in the rules folder, sorted by file name."""
    folder = directory or rules_dir()
    return [path for path in sorted(folder.glob("*.yaml")) if is_text_pack(path)]


def load_packaged_packs(directory: Path | None = None) -> list[RulePack]:
    return [load_pack(path) for path in packaged_packs(directory)]


RESCAN_FACTOR = 20
"""A rule that runs out of its time limit on a text is run once more, alone on that text, with what is
left of a budget of this many times the limit (50 ms: 1 s) and ``BUDGET_CHARS``' share: a rule merely slow
on a text then finishes, where skipping it would switch the rule off for text crafted to make it run long.
Only a rule that runs out twice is reported as timed out, and the turn's policy then decides
(``SCAN_TIMEOUT_RULE``). The budget is one request's, response's or message's in all (``ScanBudget``),
shared by every text, rule and decoded view read for it, and charged with everything the scans do: text
crafted to make inspection slow, in whichever part of it, costs one budget, not one a rule, view and
text."""
BUDGET_CHARS = 500_000
"""Every this many characters handed to a scan add ``RESCAN_FACTOR`` time limits to its budget (1 s by
default: 2 µs of CPU a character, five to ten times what the packaged rules spend on code, logs or
JSON), so that a long text read the ordinary way never spends it, and a crafted one spends at most
that much a character."""
SCAN_TIMEOUT_RULE = "inspection.scan_timeout"
"""The finding a rule that ran out of time twice on a text makes: what it looks for there is not known.
Filed under that rule's threat, and refused where the policy enforces it."""


def scan_timeout_finding(
    rule: Rule, where: str, *, action: Action = Action.BLOCK, threat: Threat | None = None, **extra: str
) -> Finding:
    """The ``SCAN_TIMEOUT_RULE`` finding of ``rule`` at ``where``, under the rule's threat unless
    ``threat`` says otherwise. Its signal names the rule, never the text."""
    return Finding(
        threat=threat or rule.threat,
        rule=SCAN_TIMEOUT_RULE,
        signal=f"rule {rule.id} ran out of time on the text; what it looks for there is not known",
        severity=Severity.HIGH,
        action=action,
        where=where,
        owasp=rule.owasp,
        extra={"rule": rule.id, **extra},
    )


# A keyword hit only makes its rule run in a window around the hit: as far either side as the rule's
# longest possible match reaches, plus this margin after it so a lookahead at a match's end (rules
# look at most a few characters past it) still sees the real neighbouring text.
_LOOKAHEAD_MARGIN = 16
# Windows closer than this run as one: a regex call costs about as much as searching this many characters.
_MERGE_GAP = 64
# An anchored rule with more hits than this (or than one per _ANCHORED_HIT_SPACING characters of a long
# text) runs over windows like any other: one search in C over a window then costs less than that many
# match attempts started from Python.
_MAX_ANCHORED_HITS = 32
_ANCHORED_HIT_SPACING = 64
# Stretches of text closer than this are asked about in one call of a rule's loosened form: a call costs
# about as much as RE2 reading this many characters.
_RELAXED_GAP = 256
# A keyword crossing a run of spaces lies within its length of the run: where such stretches can make up
# no more than this share of a text, only they are searched for keywords across runs (joined by the
# separator).
_AROUND_RUNS_SHARE = 0.5
# Below this many characters a whole search costs less than cutting the stretches out.
_AROUND_RUNS_MIN = 16_384
_STRETCH_SEPARATOR = "\x00"
# A literal-led rule (see _literal_led) with more hits than this searches the whole text once.
_MAX_LITERAL_LED_HITS = 8
# Rules whose match can be longer than this (or unbounded) run over the whole text once triggered.
_MAX_WINDOWED_WIDTH = 2048
# Runs of one character in the trigger view (aaaa..., or any digits: they all read 0) are found by whole
# blocks of this many characters; a keyword made of that character hits at every position of the run, so
# only the run's edges are searched for keywords and a rule triggered there covers the run at once.
_RUN_BLOCK = 64
_FEW_BLOCKS = 256
"""Up to this many blocks, blocks of one character are looked for without numpy (which costs more to set
up than so few blocks take to read); above, numpy reads every block faster."""
# Stands for a run's inside in the text searched for keywords: no keyword holds it.
_RUN_FILLER = "\x00"


MAX_TURNED_VIEWS = 256
"""The most views of turned tokens read for one text: past them the text's views are unread, out of
time (``Scanner.unread``), as when the budget is spent. A text holds so many turned prefixes where a key
can start only when crafted to."""
_MIN_TURNED = 4
"""The shortest token prefix looked for turned (``unmask.turned_keywords``); a longer one made only of
letters is a word ("token", "secret"), not a prefix."""
_SHIFTED_MEMORY = 64 << 20
"""What the automaton that finds shifted prefixes (some 4,000 of them) may take, so that it is built
whole and not given up for a search many times slower."""
_DIGITS_AS_ZERO = str.maketrans("123456789", "000000000")
_WORD_CHARACTERS = frozenset(string.ascii_lowercase + string.digits + "_")
"""What RE2's word boundary counts as a word's (of a trigger view: no capitals)."""
# A keyword that can start a token: a letter or digit, then what keys are made of (not "--token", "<secret>").
_TOKEN_PREFIX = re.compile(f"[a-z0-9][a-z0-9_.-]{{{_MIN_TURNED - 1},}}")


def _literal_led(source: str) -> bool:
    """Whether every match starts with one case-sensitive literal (lookarounds before it aside): the
    regex engine then skips through a text to that literal, so one search over the whole text costs less
    than searching many windows of it. Alternations and case-insensitive starts are searched position by
    position, and patterns the standard parser cannot read count as not literal-led."""
    return bool(_leading_literal_of(source))


@functools.lru_cache(maxsize=PATTERN_FACTS_KEPT)
def _leading_literal_of(source: str) -> str:
    """The case-sensitive literal every match of ``source`` starts with (``_leading_literal``); empty
    where there is none, the pattern's start is case-insensitive, or the standard parser cannot read it."""
    try:
        parsed = _sre_parse.parse(source)
    except (re.error, ValueError, TypeError, OverflowError, RecursionError):
        return ""
    return "" if parsed.state.flags & re.IGNORECASE else _leading_literal(list(parsed))


def _as_written(rule: Rule, word: str) -> str | None:
    """``word``, a keyword of a rule whose matches start with a literal, spelt with the capitals of that
    literal where it starts with the word, else of the first of the rule's match examples whose match
    does; None where neither does."""
    starts = (
        _leading_literal_of(rule.pattern.pattern),
        *(found.group() for example in rule.match_examples if (found := rule.pattern.search(example))),
    )
    return next((start[: len(word)] for start in starts if _trigger_view(start).startswith(word)), None)


# An anchored rule is tried without the per-call time limit only when a bound on the ways backtracking
# can split a span among its parts stays under this (a few milliseconds of matching at worst).
_UNTIMED_PATHS = 10_000_000
INSIDE_PATHS = 64
"""The most ways a rule's ``inside`` form may split a match among its parts (``backtracking_paths``)."""


def backtracking_paths(source: str, reach: int) -> int | None:
    """An upper bound on the ways an attempt of the pattern over ``reach`` characters can backtrack: the
    product of each repeat's possible counts (and of each alternation's branches), or None when a part
    repeated more than once could itself match in more than one way (the ``(a|aa)+`` blow-up) or the
    standard parser cannot read the pattern. Under ``_UNTIMED_PATHS``, the scanner tries it at a keyword
    hit without the regex module's time limit, whose setup costs more than the attempt; the rule's
    deadline is still checked between attempts."""
    try:
        parsed = _sre_parse.parse(source)
    except (re.error, ValueError, TypeError, OverflowError, RecursionError):
        return None
    return _paths(list(parsed), reach)


_ONE_CHARACTER = ("LITERAL", "NOT_LITERAL", "IN", "ANY")


def _token_starts_program(words: list[str]) -> Any:
    """An RE2 program that finds ``words`` (of a trigger view, the longest first) where a token starts:
    after no letter, digit or "_", which RE2 tells by a word boundary before a word's letter, digit or
    "_", and by none before its other characters."""
    program = relaxed.re2_program(
        "|".join(
            ("\\b" if word[0] in _WORD_CHARACTERS else "\\B") + re.escape(word) for word in words
        ).encode(),
        max_mem=_SHIFTED_MEMORY,
    )
    if not program.ok():  # a program RE2 refused would find nothing
        raise RuntimeError(f"RE2 refuses the shifted prefixes: {program.error()}")
    return program


def _leading_literal(items: list[tuple[Any, Any]]) -> str:
    """The characters every match of a parsed pattern starts with, lookarounds before them aside."""
    constants = _sre_constants
    literal = ""
    for op, argument in items:
        if op in (constants.ASSERT, constants.ASSERT_NOT, constants.AT) and not literal:
            continue
        if op is constants.SUBPATTERN and not literal and not argument[1] & re.IGNORECASE:
            return _leading_literal(list(argument[3]))
        if op is not constants.LITERAL:
            break
        literal += chr(argument)
    return literal


def _paths(items: list[tuple[Any, Any]], reach: int) -> int | None:
    """``backtracking_paths`` of a sequence. A lookaround or atomic group is never re-entered once it
    matched: it costs its own paths once for each way of reaching it, and multiplies nothing after it."""
    constants = _sre_constants
    total = 1
    atomic_cost = 0
    for op, argument in items:
        if op in (constants.MAX_REPEAT, constants.MIN_REPEAT, constants.POSSESSIVE_REPEAT):
            low, high, body = argument
            if high > 1:
                # Only a repeat of single characters matches one way per count.
                if not all(str(item_op) in _ONE_CHARACTER for item_op, _ in body):
                    return None
                total *= 1 if op is constants.POSSESSIVE_REPEAT else min(high, reach) - low + 1
                continue
            inner = _paths(list(body), reach)
            if inner is None:
                return None
            total *= 1 + inner
        elif op is constants.BRANCH:
            branches = [_paths(list(branch), reach) for branch in argument[1]]
            if any(branch is None for branch in branches):
                return None
            total *= sum(branch for branch in branches if branch is not None)
        elif op is constants.SUBPATTERN:
            inner = _paths(list(argument[3]), reach)
            if inner is None:
                return None
            total *= inner
        elif op in (constants.ASSERT, constants.ASSERT_NOT, constants.ATOMIC_GROUP):
            inner = _paths(list(argument if op is constants.ATOMIC_GROUP else argument[1]), reach)
            if inner is None:
                return None
            atomic_cost += total * inner
        elif op in (constants.GROUPREF, constants.GROUPREF_EXISTS):
            return None
    return total + atomic_cost


@functools.lru_cache(maxsize=PATTERN_FACTS_KEPT)
def _untimed(source: str, reach: int) -> bool:
    paths = backtracking_paths(source, reach)
    return paths is not None and paths <= _UNTIMED_PATHS


# Every character str.isspace() reads as whitespace (none lies past U+3000), and of them those each of the
# regex module's classes holds.
_WHITESPACE = frozenset(chr(code) for code in range(0x3000 + 1) if chr(code).isspace())
_WHITESPACE_IN_CATEGORY = {
    name: frozenset(char for char in _WHITESPACE if regex.match(pattern, char))
    for name, pattern in (
        ("CATEGORY_DIGIT", r"\d"),
        ("CATEGORY_NOT_DIGIT", r"\D"),
        ("CATEGORY_SPACE", r"\s"),
        ("CATEGORY_NOT_SPACE", r"\S"),
        ("CATEGORY_WORD", r"\w"),
        ("CATEGORY_NOT_WORD", r"\W"),
    )
}
_BREAKS_TOKENS = _WHITESPACE_IN_CATEGORY["CATEGORY_SPACE"]
r"""The whitespace that ends a run of non-whitespace as a stream's redactor reads runs (the regex
module's ``\s``): a value that holds none of it lies in one run, which the redactor holds whole."""


@functools.lru_cache(maxsize=PATTERN_FACTS_KEPT)
def holds_whitespace(source: str) -> bool:
    """Whether a match of the pattern, or what a lookbehind of it reads (where a rule's keyword may
    stand, before the match), can hold a whitespace character. True too for a pattern the standard
    parser may read otherwise than the regex module (the same test as the loosened forms',
    scanning/relaxed.py) or holding what is not told apart here."""
    if relaxed.relaxed_source(source) is None:
        return True
    try:
        parsed = _sre_parse.parse(source)
    except (re.error, ValueError, TypeError, OverflowError, RecursionError):
        return True
    return _holds_whitespace(list(parsed))


RUN_LOOKBEHIND = 8
"""How far before itself a match confined to a run of non-whitespace (``confined_to_runs``) may look."""


@functools.lru_cache(maxsize=PATTERN_FACTS_KEPT)
def confined_to_runs(source: str) -> bool:
    """Whether every match of the pattern lies within one run of non-whitespace characters, and what
    decides it within that run and the ``RUN_LOOKBEHIND`` characters before it (and the lookahead
    margin after it, as for every rule)."""
    if holds_whitespace(source):
        return False
    look_back = _lookbehind(source)
    return look_back is not None and look_back <= RUN_LOOKBEHIND


@functools.lru_cache(maxsize=PATTERN_FACTS_KEPT)
def _lookbehind(source: str) -> int | None:
    return _looks_back(list(_sre_parse.parse(source)))


@functools.lru_cache(maxsize=PATTERN_FACTS_KEPT)
def _min_width(source: str) -> int:
    width: int = _sre_parse.parse(source).getwidth()[0]
    return width


def _looks_back(items: list[tuple[Any, Any]]) -> int | None:
    """The furthest a lookbehind of the pattern reads before where it stands, or None when unbounded."""
    constants = _sre_constants
    furthest = 0
    for op, argument in items:
        inner: list[list[tuple[Any, Any]]] = []
        if op in (constants.ASSERT, constants.ASSERT_NOT):
            direction, body = argument
            if direction < 0:
                width = body.getwidth()[1]
                if width >= _sre_constants.MAXREPEAT:
                    return None
                furthest = max(furthest, width)
            inner = [list(body)]
        elif op is constants.BRANCH:
            inner = [list(branch) for branch in argument[1]]
        elif op is constants.SUBPATTERN:
            inner = [list(argument[3])]
        elif op is constants.ATOMIC_GROUP:
            inner = [list(argument)]
        elif op in (constants.MAX_REPEAT, constants.MIN_REPEAT, constants.POSSESSIVE_REPEAT):
            inner = [list(argument[2])]
        for part in inner:
            found = _looks_back(part)
            if found is None:
                return None
            furthest = max(furthest, found)
    return furthest


def _value_spreads(rule: Rule) -> bool:
    """Whether the value a match of ``rule`` holds (its secret group, or all of it) may hold whitespace.
    True for a pattern the standard parser does not read, or whose group it cannot find."""
    group = rule.secret_group
    number = rule.pattern.groupindex.get(group) if isinstance(group, str) else group
    return _spreads(rule.pattern.pattern, number)


@functools.lru_cache(maxsize=PATTERN_FACTS_KEPT)
def _spreads(source: str, number: int | None) -> bool:
    try:
        items = list(_sre_parse.parse(source))
    except (re.error, ValueError, TypeError, OverflowError, RecursionError):
        return True
    value = items if number == 0 else _group_items(items, number)
    return value is None or _holds_whitespace(value, _BREAKS_TOKENS)


def _group_items(items: list[tuple[Any, Any]], number: int | None) -> list[tuple[Any, Any]] | None:
    """The parsed items of the capturing group ``number`` among ``items``, None where it is not found."""
    constants = _sre_constants
    for op, argument in items:
        if op is constants.SUBPATTERN and argument[0] == number:
            return list(argument[3])
        inner: list[list[tuple[Any, Any]]] = []
        if op is constants.SUBPATTERN:
            inner = [list(argument[3])]
        elif op is constants.BRANCH:
            inner = [list(branch) for branch in argument[1]]
        elif op in (constants.MAX_REPEAT, constants.MIN_REPEAT, constants.POSSESSIVE_REPEAT):
            inner = [list(argument[2])]
        elif op is constants.ATOMIC_GROUP:
            inner = [list(argument)]
        elif op in (constants.ASSERT, constants.ASSERT_NOT):
            inner = [list(argument[1])]
        for part in inner:
            found = _group_items(part, number)
            if found is not None:
                return found
    return None


def _holds_whitespace(items: list[tuple[Any, Any]], spaces: frozenset[str] = _WHITESPACE) -> bool:
    """Whether a match of ``items`` may hold one of ``spaces``."""
    constants = _sre_constants
    for op, argument in items:
        if op is constants.AT or (op in (constants.ASSERT, constants.ASSERT_NOT) and argument[0] > 0):
            continue
        if op in (constants.ASSERT, constants.ASSERT_NOT):
            found = _holds_whitespace(list(argument[1]), spaces)
        elif op is constants.LITERAL:
            found = chr(argument) in spaces
        elif op is constants.IN:
            found = any(_in_class(argument, char) for char in spaces)
        elif op is constants.BRANCH:
            found = any(_holds_whitespace(list(branch), spaces) for branch in argument[1])
        elif op is constants.SUBPATTERN:
            found = _holds_whitespace(list(argument[3]), spaces)
        elif op is constants.ATOMIC_GROUP:
            found = _holds_whitespace(list(argument), spaces)
        elif op in (constants.MAX_REPEAT, constants.MIN_REPEAT, constants.POSSESSIVE_REPEAT):
            found = argument[1] > 0 and _holds_whitespace(list(argument[2]), spaces)
        else:
            found = True  # any character, one but a literal, a backreference: it may
        if found:
            return True
    return False


@functools.lru_cache(maxsize=PATTERN_FACTS_KEPT)
def one_case(source: str) -> str | None:
    """The case of every letter a match of ``source`` holds (lookarounds aside), ``upper`` or ``lower``,
    where it is one; None where a match may mix them or the pattern cannot be told apart."""
    try:
        parsed = _sre_parse.parse(source)
    except (re.error, ValueError, TypeError, OverflowError, RecursionError):
        return None
    if parsed.state.flags & re.IGNORECASE:
        return None
    cases = _letter_cases(list(parsed))
    return cases.pop() if len(cases) == 1 else None


def _letter_cases(items: list[tuple[Any, Any]]) -> set[str]:
    constants = _sre_constants
    cases: set[str] = set()
    for op, argument in items:
        if op in (constants.AT, constants.ASSERT, constants.ASSERT_NOT):
            continue
        if op is constants.LITERAL:
            char = chr(argument)
            cases |= {"upper"} if char.isupper() else {"lower"} if char.islower() else set()
        elif op is constants.IN and all(item in (constants.LITERAL, constants.RANGE) for item, _ in argument):
            cases |= {
                case
                for case, letters in (("upper", string.ascii_uppercase), ("lower", string.ascii_lowercase))
                if any(_in_class(argument, char) for char in letters)
            }
        elif op is constants.BRANCH:
            for branch in argument[1]:
                cases |= _letter_cases(list(branch))
        elif op is constants.SUBPATTERN:
            cases |= {"upper", "lower"} if argument[1] & re.IGNORECASE else _letter_cases(list(argument[3]))
        elif op is constants.ATOMIC_GROUP:
            cases |= _letter_cases(list(argument))
        elif op in (constants.MAX_REPEAT, constants.MIN_REPEAT, constants.POSSESSIVE_REPEAT):
            cases |= _letter_cases(list(argument[2]))
        else:
            cases |= {"upper", "lower"}  # any character, a category, a class negated, a backreference
    return cases


def _in_class(items: list[tuple[Any, Any]], char: str) -> bool:
    """Whether a character class holds ``char`` (True where an item is not told apart)."""
    constants = _sre_constants
    negated = False
    held = False
    for op, argument in items:
        if op is constants.NEGATE:
            negated = True
        elif op is constants.LITERAL:
            held = held or chr(argument) == char
        elif op is constants.RANGE:
            held = held or argument[0] <= ord(char) <= argument[1]
        elif op is constants.CATEGORY and str(argument) in _WHITESPACE_IN_CATEGORY:
            held = held or char in _WHITESPACE_IN_CATEGORY[str(argument)]
        else:
            return True
    return held != negated


@functools.lru_cache(maxsize=PATTERN_FACTS_KEPT)
def _max_width(source: str) -> int | None:
    """The longest match a pattern can make, or None if unbounded, very long or not measurable."""
    try:
        width: int = _sre_parse.parse(source).getwidth()[1]
    except (re.error, ValueError, TypeError, OverflowError, RecursionError):
        return None
    return width if width <= _MAX_WINDOWED_WIDTH else None


# Every digit reads as 0 (for shapes) and every whitespace character as a space (so a keyword of two
# words is found across a line break or a tab as the regex's \s is).
_TRIGGER_TABLE = str.maketrans(
    {
        **dict.fromkeys("123456789", "0"),
        **{chr(code): " " for code in range(0x3000 + 1) if chr(code).isspace() and code != 0x20},
        # Lone surrogates (bytes that were not UTF-8, JSON escapes of half a pair) are no keyword's part,
        # and the automaton cannot read them.
        **{chr(code): "\ufffd" for code in range(0xD800, 0xE000)},
    }
)


_SURROGATE = regex.compile("[\ud800-\udfff]")
_SPACE_CODE = ord(" ")
_TWO_SPACES = re.compile("  ")
"""Whether a long text holds a run of spaces: a search led by a literal tells three times faster than
`"  " in text`, whose search steps through prose (a space every few characters)."""


# ``str.translate`` looks a dict up for every character past ASCII (about 80 ns each): the same mapping
# as a bytes table for ASCII text, which lowercases too (one pass instead of ``str.lower`` and then the
# table), and as an array over code points (every key is below U+E000) for the rest.
_ASCII_TRIGGER_TABLE = bytes(
    ord(_TRIGGER_TABLE.get(ord(chr(code).lower()), chr(code).lower())) for code in range(0x80)
) + bytes(range(0x80, 0x100))
_TRIGGER_CODES = np.arange(0xE000, dtype=np.uint32)
_TRIGGER_CODES[list(_TRIGGER_TABLE)] = [ord(char) for char in _TRIGGER_TABLE.values()]


def _uniform_runs(view: str, shortest: int) -> list[tuple[int, int]]:
    """Spans of at least ``shortest`` characters of ``view`` made of one character, in order.

    Found by whole aligned blocks of _RUN_BLOCK characters: a run's ragged ends lie outside its span.
    """
    count = len(view) // _RUN_BLOCK
    if count * _RUN_BLOCK < shortest:
        return []
    end = count * _RUN_BLOCK
    uniform: list[int]
    if count <= _FEW_BLOCKS:
        # A block of one character has the same character at its start and its middle: comparing the
        # strided slices of those places rules most blocks out together, and only the others are read whole.
        uniform = [
            block
            for block in _agreeing_blocks(view, count)
            if view[block * _RUN_BLOCK : (block + 1) * _RUN_BLOCK] == view[block * _RUN_BLOCK] * _RUN_BLOCK
        ]
    else:
        if view.isascii():
            codes = np.frombuffer(view.encode("ascii"), dtype=np.uint8)
        else:
            codes = np.frombuffer(view.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        blocks = codes[:end].reshape(count, _RUN_BLOCK)
        uniform = np.flatnonzero((blocks == blocks[:, :1]).all(axis=1)).tolist()
    runs: list[tuple[int, int]] = []
    group_start = group_end = -1
    for block in uniform:
        if block == group_end and view[block * _RUN_BLOCK] == view[group_start * _RUN_BLOCK]:
            group_end = block + 1
            continue
        if (group_end - group_start) * _RUN_BLOCK >= shortest:
            runs.append((group_start * _RUN_BLOCK, group_end * _RUN_BLOCK))
        group_start, group_end = block, block + 1
    if (group_end - group_start) * _RUN_BLOCK >= shortest:
        runs.append((group_start * _RUN_BLOCK, group_end * _RUN_BLOCK))
    return runs


def _agreeing_blocks(view: str, count: int) -> Iterable[int]:
    """The first ``count`` blocks of ``view`` whose first and middle characters are the same. In ASCII
    text the two strided slices are compared as two integers: a zero byte of their exclusive or is a
    block where they agree, found by a search in C rather than a comparison a block."""
    end = count * _RUN_BLOCK
    if not view.isascii():
        firsts, middles = view[0:end:_RUN_BLOCK], view[_RUN_BLOCK // 2 : end : _RUN_BLOCK]
        return compress(range(count), map(operator.eq, firsts, middles))
    encoded = view.encode("ascii")
    first_bytes = int.from_bytes(encoded[0:end:_RUN_BLOCK], "little")
    middle_bytes = int.from_bytes(encoded[_RUN_BLOCK // 2 : end : _RUN_BLOCK], "little")
    differences = (first_bytes ^ middle_bytes).to_bytes(count, "little")
    agreeing = []
    block = differences.find(0)
    while block >= 0:
        agreeing.append(block)
        block = differences.find(0, block + 1)
    return agreeing


def _without_run_insides(view: str, runs: list[tuple[int, int]], edge: int) -> str:
    """``view`` with each run's inside, all but ``edge`` characters at either end, replaced by filler."""
    parts: list[str] = []
    position = 0
    for low, high in runs:
        parts.append(view[position : low + edge])
        parts.append(_RUN_FILLER * (high - low - 2 * edge))
        position = high - edge
    parts.append(view[position:])
    return "".join(parts)


def _stretches(
    places: list[tuple[int, int]], length: int, gap: int
) -> Iterator[tuple[int, int, list[tuple[int, int]]]]:
    """The stretches (low, high) that ``places`` make when those less than ``gap`` apart are joined,
    clipped to ``length``, each with the places it holds."""
    members: list[tuple[int, int]] = []
    low = high = 0
    for place in sorted(places):
        if members and place[0] > high + gap:
            yield max(0, low), min(length, high), members
            members = []
        if not members:
            low, high = place
        members.append(place)
        high = max(high, place[1])
    if members:
        yield max(0, low), min(length, high), members


def _start_stretches(
    starts: list[int], reach: int, length: int, gap: int
) -> Iterator[tuple[int, int, list[int]]]:
    """``_stretches`` of the places (start, start + ``reach``) of ``starts`` (in order, apart), each with
    the starts it holds: with one reach, a place's end is the furthest yet, so a stretch ends where two
    starts lie more than ``reach + gap`` apart."""
    first = 0
    for index in range(1, len(starts)):
        if starts[index] - starts[index - 1] > reach + gap:
            yield starts[first], min(length, starts[index - 1] + reach), starts[first:index]
            first = index
    if starts:
        yield starts[first], min(length, starts[-1] + reach), starts[first:]


_END = operator.itemgetter(1)


def _hits_by_word(found: list[tuple[int, int, int]]) -> dict[int, list[tuple[int, int]]]:
    """The (start, end) of each hit of ``found`` (word, start, end) by word: each word's in the order
    found, the words in the order of their first hit."""
    by_word: dict[int, list[tuple[int, int]]] = {}
    for word_index, start, end in found:
        hits = by_word.get(word_index)
        if hits is None:
            by_word[word_index] = [(start, end)]
        else:
            hits.append((start, end))
    return by_word


def _union(regions: list[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """Overlapping or touching regions merged, clipped to ``length``."""
    merged: list[tuple[int, int]] = []
    for low, high in sorted(regions):
        low, high = max(0, low), min(length, high)
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def _run_holding(
    runs: list[tuple[int, int]], run_starts: list[int], hit: tuple[int, int]
) -> tuple[int, int] | None:
    """The run (of ``runs``, starting at ``run_starts``) that the keyword hit lies wholly inside, if any."""
    if not runs:
        return None
    position = bisect.bisect_right(run_starts, hit[0]) - 1
    if position >= 0 and hit[1] <= runs[position][1]:
        return runs[position]
    return None


def _trigger_view(text: str) -> str:
    """The text as keywords and shapes are looked for in it: lowercased, digits 0, whitespace a space;
    one character for each of the text's, so offsets in the view are offsets in the text."""
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_TRIGGER_TABLE).decode("ascii")
    # U+0130 is the one character whose lowercase is two (i and a combining dot): it is read as i.
    lowered = text.replace("\u0130", "i").lower()
    if lowered.isascii():
        return lowered.encode("ascii").translate(_ASCII_TRIGGER_TABLE).decode("ascii")
    codes = np.frombuffer(lowered.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    mapped = np.where(
        codes < len(_TRIGGER_CODES), _TRIGGER_CODES[np.minimum(codes, len(_TRIGGER_CODES) - 1)], codes
    )
    return mapped.astype("<u4").tobytes().decode("utf-32-le")


class _Keywords:
    """Keywords as the trigger view reads them, each with the rules it triggers, and their automata.

    A view of plain ASCII is searched as bytes for the ASCII keywords alone: no other script's keyword
    can occur in it, its byte offsets are its character offsets, and a bytes search costs about a fifth
    of a str search over the same text (which turns every hit's byte offsets into character offsets).
    """

    def __init__(self, words: Sequence[str], rules: Sequence[tuple[int, ...]]) -> None:
        ascii_words = [word_index for word_index, word in enumerate(words) if word.isascii()]
        self.longest = max((len(word) for word in words), default=1)
        self._automaton = _automaton_of(words)
        self._rules = tuple(rules)
        self._ascii_automaton = _bytes_automaton_of(
            [words[word_index].encode("ascii") for word_index in ascii_words]
        )
        self._ascii_rules = tuple(rules[word_index] for word_index in ascii_words)

    def __bool__(self) -> bool:
        return self._automaton is not None

    def find(self, view: str) -> tuple[list[tuple[int, int, int]], Sequence[tuple[int, ...]]]:
        """Every occurrence of a keyword in ``view``, overlapping ones too, as (word, start, end), and
        the rules each word number triggers."""
        if view.isascii():
            if self._ascii_automaton is None:
                return [], self._ascii_rules
            found = self._ascii_automaton.find_matches_as_indexes(view.encode("ascii"), overlapping=True)
            return found, self._ascii_rules
        if self._automaton is None:
            return [], self._rules
        try:
            return self._automaton.find_matches_as_indexes(view, overlapping=True), self._rules
        except UnicodeEncodeError:
            # A lone surrogate (JSON's "\ud800" decodes to one) cannot be searched: read it as U+FFFD.
            searched = _SURROGATE.sub("\ufffd", view)
            return self._automaton.find_matches_as_indexes(searched, overlapping=True), self._rules


def _hits_across_space_runs(
    keywords: _Keywords, view: str
) -> tuple[list[tuple[int, int, int]], Sequence[tuple[int, ...]]]:
    """Hits of the ``keywords`` in ``view`` read with each run of spaces as one space, as spans of
    ``view``: only those that cross such a run, the others being what the plain search finds; and the
    rules each word number triggers.

    A rule's pattern takes any run of whitespace between the words of its keyword (``\\s+``), so
    "send  the" or "send\\n    the" must trigger what "send the" does."""
    if not keywords or _TWO_SPACES.search(view) is None:
        return [], ()
    ascii_view = view.isascii()
    if ascii_view:
        codes = np.frombuffer(view.encode("ascii"), dtype=np.uint8)
    else:
        codes = np.frombuffer(view.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    # Of a run of spaces, all but its first are dropped.
    space = codes == _SPACE_CODE
    dropped = np.zeros(len(codes), dtype=bool)
    np.logical_and(space[1:], space[:-1], out=dropped[1:])
    kept_codes = codes[~dropped].tobytes()
    collapsed = kept_codes.decode("ascii") if ascii_view else kept_codes.decode("utf-32-le", "surrogatepass")
    # Character c of the collapsed view stands at c plus the number of characters dropped before it
    # in the view: those whose place in the view, less the number dropped before them, is c or less.
    # So each of these places is that of the character after a run, the run's kept space just before.
    # A hit that crosses a run lies within a keyword's length of the run: in a long text where those
    # stretches (at most one a dropped space) make up a small part of it, only they are searched.
    dropped_count = len(codes) - len(collapsed)
    near_runs = len(
        collapsed
    ) >= _AROUND_RUNS_MIN and 2 * keywords.longest * dropped_count <= _AROUND_RUNS_SHARE * len(collapsed)
    if not near_runs:
        listed, rules = keywords.find(collapsed)
        if not listed:
            return [], rules
    drops = np.flatnonzero(dropped)
    shifted = drops - np.arange(len(drops))
    if near_runs:
        found, rules = _hits_near_runs(keywords, collapsed, shifted)
        if not len(found):
            return [], rules
    else:
        found = np.array(listed, dtype=np.intp)
    starts, lasts = found[:, 1], found[:, 2] - 1
    lows = starts + np.searchsorted(shifted, starts, side="right")
    highs = lasts + np.searchsorted(shifted, lasts, side="right") + 1
    crossing = np.flatnonzero(highs - lows != lasts + 1 - starts)
    words = found[crossing, 0].tolist()
    return list(zip(words, lows[crossing].tolist(), highs[crossing].tolist(), strict=True)), rules


def _hits_near_runs(
    keywords: _Keywords, collapsed: str, shifted: npt.NDArray[np.intp]
) -> tuple[npt.NDArray[np.intp], Sequence[tuple[int, ...]]]:
    """Hits of the ``keywords`` in ``collapsed`` (word, start, end; one row each), and the rules each
    word number triggers: at least every hit that holds the kept space of a run and the character after
    it (at one of the places ``shifted``, in order, one for each space dropped). Such a hit lies within a
    keyword's length of its run: only those stretches are searched, joined. A hit that runs from one
    stretch over the separator into the next is read at its start's stretch; it holds no run and the
    character after it there (the next run is further than a keyword's length)."""
    longest = keywords.longest
    first_of_run = np.empty(len(shifted), dtype=bool)
    first_of_run[0] = True
    np.not_equal(shifted[1:], shifted[:-1], out=first_of_run[1:])
    runs = shifted[first_of_run] - 1
    lows = np.maximum(runs - longest + 2, 0)
    highs = np.minimum(runs + longest, len(collapsed))
    # Stretches that overlap or touch are one.
    opens = np.empty(len(runs), dtype=bool)
    opens[0] = True
    np.greater(lows[1:], highs[:-1], out=opens[1:])
    closes = np.empty(len(runs), dtype=bool)
    closes[-1] = True
    closes[:-1] = opens[1:]
    lows, highs = lows[opens], highs[closes]
    pieces = (collapsed[low:high] for low, high in zip(lows.tolist(), highs.tolist(), strict=True))
    found, rules = keywords.find(_STRETCH_SEPARATOR.join(pieces))
    table = np.array(found, dtype=np.intp).reshape(-1, 3)
    # Where each stretch starts in the joined text.
    offsets = np.empty(len(lows), dtype=np.intp)
    offsets[0] = 0
    np.cumsum(highs[:-1] - lows[:-1] + len(_STRETCH_SEPARATOR), out=offsets[1:])
    stretch = np.searchsorted(offsets, table[:, 1], side="right") - 1
    table[:, 1:] += (lows[stretch] - offsets[stretch])[:, None]
    return table, rules


def _automaton_of(words: Sequence[str]) -> ahocorasick_rs.AhoCorasick | None:
    """An automaton reporting every occurrence of each word, overlapping ones too; None without words.

    Overlapping matches need the standard match kind; the DFA form is the fastest to search.
    """
    if not words:
        return None
    return ahocorasick_rs.AhoCorasick(
        words, matchkind=ahocorasick_rs.MatchKind.Standard, implementation=ahocorasick_rs.Implementation.DFA
    )


def _bytes_automaton_of(words: Sequence[bytes]) -> ahocorasick_rs.BytesAhoCorasick | None:
    """``_automaton_of`` for bytes."""
    if not words:
        return None
    return ahocorasick_rs.BytesAhoCorasick(
        words, matchkind=ahocorasick_rs.MatchKind.Standard, implementation=ahocorasick_rs.Implementation.DFA
    )


# What a token goes on with: a whole-token rule's match reaches over these characters, so a token longer
# than the rule's pattern allows (an 800-character JWT, a 2 KB key) is covered to its last character.
# Letters, digits, "_" and "-" always continue a token; "+", "/", "=", ".", "~" and "%" only when the
# value matched so far holds them too (a JWT's dots), so "bot123:abc/sendMessage" keeps its path; and
# a dot, tilde or percent sign only when more of the token follows (a full stop does not). All of
# base64's "+/=" go on a value holding one of them, or of _LONG_VALUE characters or more (a long opaque
# token its rule cut short).
_CONTINUING_MARKS = "+/=.~%"
_ENDS_NOTHING = "+/="  # these may end a token (base64 padding); the others need more after them
_LONG_VALUE = 100
# Longer than any credential: a match never grows over a whole attachment.
_MAX_TOKEN_REST = 16_384


@functools.cache
def _token_rest(punctuation: str) -> regex.Pattern[str]:
    trailing = "".join(char for char in punctuation if char in _ENDS_NOTHING)
    inner = "".join(char for char in punctuation if char not in _ENDS_NOTHING)
    alternatives = ["[A-Za-z0-9_" + regex.escape(trailing) + "-]"]
    if inner:
        alternatives.append("[" + regex.escape(inner) + "](?=[A-Za-z0-9])")
    return regex.compile("(?:" + "|".join(alternatives) + ")*")


def token_end(text: str, start: int, end: int) -> int:
    """Where the token whose first part is ``text[start:end]`` stops: on the same line, or on the last
    line it is wrapped over (``_wrapped_end``)."""
    found = _line_end_of_token(text, start, end)
    if text.startswith("\n", found) or text.startswith("\r\n", found):
        return _wrapped_end(text, start, found)
    return found


def _line_end_of_token(text: str, start: int, end: int) -> int:
    """Where the token whose first part is ``text[start:end]`` stops on its line."""
    value = text[start:end]
    base64 = len(value) >= _LONG_VALUE or any(char in value for char in _ENDS_NOTHING)
    punctuation = "".join(
        char for char in _CONTINUING_MARKS if char in value or (base64 and char in _ENDS_NOTHING)
    )
    stop = min(len(text), end + _MAX_TOKEN_REST)
    # The rest is read a character at a time, each step by its neighbours alone: from anywhere inside a
    # rest read before it goes where that one went, and on from there only where that one's cap stopped
    # it. A text of matches one after another ("hvs.hvs.…") would otherwise read the same rest from each.
    # Views of the text are scanned between its own matches: each text keeps its own last rest, known
    # by what it holds (a text's hash is worked out once), so that no text is kept alive for it.
    key = (hash(text), len(text), punctuation)
    read_from, last = end, _last_rests.get(key)
    if last is not None and last.start <= end <= last.end:
        if not last.capped or last.end >= stop:
            return min(last.end, stop)
        read_from = last.end
    rest = _token_rest(punctuation).match(text, read_from, stop)
    found = rest.end() if rest is not None else read_from
    first = last.start if last is not None and read_from != end else end
    if len(_last_rests) >= _KEPT_RESTS:
        _last_rests.clear()
    # A mark that needs a letter after it is not taken at the cap's last character: one short is capped too.
    _last_rests[key] = _Rest(first, found, capped=found >= stop - 1 and stop < len(text))
    return found


@dataclass(frozen=True, slots=True)
class _Rest:
    """A token's rest as ``token_end`` read it last in a text: from where to where, and whether its cap
    stopped it."""

    start: int
    end: int
    capped: bool


_last_rests: dict[tuple[int, int, str], _Rest] = {}
_KEPT_RESTS = 16


# A line a value may be wrapped onto: a little indentation, then the value's characters, perhaps a
# closing quote or a mark ending a sentence after its last line, and the line's end (``_ends_line``).
_WRAPPED_LINE = regex.compile(r"\r?\n([ \t]{0,16}+)([A-Za-z0-9_+/=~.-]++)([\"'`]?[.,;]?)[ \t]*+")
_INDENT = regex.compile(r"[ \t]*+")
# A word as prose writes it ("Done", "OK", "next_line") or a number ("1", "2024") is the text going on.
_WORD = regex.compile(r"[A-Z]?[a-z_]+|[A-Z_]+|[0-9]+")
# Hex of one case, with dashes or not: a SHA, a digest or a UUID stands on its line as a token of its own,
# as a column of them does under a key of the same width.
_HEX = regex.compile(r"[0-9a-f-]+|[0-9A-F-]+")
# A value ending in this much hex of one case (a hex key, ``dop_v1_`` and 64 hex digits) is wrapped onto lines
# of that hex.
_HEX_TAIL = regex.compile(r"(?r)[0-9a-f]{8,}\Z|[0-9A-F]{8,}\Z")
_BASE64_MARKS = "+/=-_"
_MIN_WRAP = 16
"""The narrowest line a value is wrapped at (PEM and MIME wrap at 64 and 76, terminals at 80 or so)."""
_MAX_WRAP = 256
_MAX_WRAPPED_LINES = 64
"""Lines a value is read over at the most: a 4 KB key wrapped at 64, so a text of lines costs a bounded
read per value that ends its line."""


def _alphabet(value: str) -> frozenset[str]:
    """The characters ``value`` is written in: base64's where it mixes letters of both cases or letters
    and digits, else the one kind it is written in and its marks."""
    kinds = (string.ascii_lowercase, string.ascii_uppercase, string.digits)
    held = {char for char in value if not char.isalnum()}
    used = [kind for kind in kinds if any(char in kind for char in value)]
    if len(used) > 1:
        # A value of more than one kind may be base64 whose first line lacks some of its characters.
        used, held = list(kinds), held | set(_BASE64_MARKS)
    held.update(*used)
    return frozenset(held)


def _ends_line(text: str, at: int) -> bool:
    return at == len(text) or text.startswith("\n", at) or text.startswith("\r\n", at)


def _wrapped_end(text: str, start: int, end: int) -> int:
    """Where a value matched at ``start``-``end``, ``end`` a line's end, stops when it is wrapped over the
    lines after it, as an editor or terminal wraps ``NAME=value`` at a width or MIME writes base64 under
    its name: each line after it exactly as long as the line before it, the last no longer, and the
    value's alphabet alone (``=`` only as base64's padding, ``.`` only where the value holds one), a
    closing quote or a full stop ending the last; no word or number as prose writes them, and hex only
    after a value that ends in hex of that case (``_HEX_TAIL``), which then takes hex lines alone, and
    none where the line after its last is hex as long as that one (a column of SHAs under it). Else
    ``end``: a value that ends its line. A value alone on its line is not read on: under it, a line of
    its width is as likely the next of a column of tokens (keys, SHAs, ids) as its rest. Linear: at most
    ``_MAX_WRAPPED_LINES`` lines of at most ``_MAX_WRAP`` characters are read."""
    line_start = text.rfind("\n", 0, end) + 1
    lead = _INDENT.match(text, line_start, end)
    width = end - line_start
    value = text[start:end]
    alone = line_start <= start <= (lead.end() if lead else line_start)
    tail = _HEX_TAIL.search(value)
    if alone or (tail is None and _HEX.fullmatch(value)) or not _MIN_WRAP <= width <= _MAX_WRAP:
        return end
    hex_line = _HEX_LINES[tail.group().islower() if tail is not None and not tail.group().isdigit() else None]
    alphabet = _alphabet(value)
    last = 0
    close = position = end
    for _ in range(_MAX_WRAPPED_LINES):
        line = _WRAPPED_LINE.match(text, position, min(len(text), position + width + 8))
        if line is None or not _ends_line(text, line.end()):
            break
        body = line.group(2)
        closed = bool(line.group(3))
        if body.endswith(".") and "." not in alphabet:
            body, closed = body[:-1], True
        length = len(line.group(1)) + len(body)
        if (
            not body
            or length > width
            or not alphabet.issuperset(body)
            or "=" in body.rstrip("=")
            or _WORD.fullmatch(body)
            or (_HEX.fullmatch(body) is not None) != (tail is not None)
            or (tail is not None and not hex_line.fullmatch(body))
        ):
            break
        close, position, last = line.start(2) + len(body), line.end(), length
        if closed or body.endswith("=") or length < width:
            break
    if tail is not None and last:
        after = _WRAPPED_LINE.match(text, position, min(len(text), position + width + 8))
        if (
            after is not None
            and len(after.group(1) + after.group(2)) == last
            and hex_line.fullmatch(after[2])
        ):
            return end  # a column of hex under the value
    return close


_HEX_LINES = {
    True: regex.compile("[0-9a-f]+"),
    False: regex.compile("[0-9A-F]+"),
    None: regex.compile("[0-9a-fA-F]+"),
}
"""A line of hex after a value ending in hex of lower case, upper case, or digits alone."""


UNBOUNDED = 1 << 62
"""A reach past any text: a match of a rule of no known width, or one read in a decoded view, can end
anywhere while what triggered it is in the text scanned."""


@dataclass(frozen=True, slots=True)
class Triggered:
    """What a piece of a growing text brought (``TriggerWatch``), in characters past the end of the piece:
    the trigger lies before ``extent``, and a match holding it ends before ``reach``; or, when ``reach`` is
    0, it lies within the run of non-whitespace that holds the trigger, decided by that run and the
    ``RUN_LOOKBEHIND`` characters before it (``confined_to_runs``). ``spread``: the rules it triggers whose
    value may span words (``Scanner.open_value``)."""

    extent: int
    reach: int
    spread: frozenset[int] = frozenset()


_SPACE_RUN = re.compile(" {2,}")


class TriggerWatch:
    """Reads a text piece by piece as a stream brings it, and tells of each piece whether it brought
    something a scan starts from: a keyword, shape or single character of a rule (found across runs of
    spaces, as the scanner finds them), or what a decoded view starts at (scanning/unmask.py). A piece
    costs in proportion to its length: only it and the few characters before it that such a trigger
    can begin in are read.

    None is exact: every rule's match holds a trigger (the packs' convention the scanner relies on) and
    every view starts at a feature, so a scan of any part of the text finds nothing that holds what the
    piece brought. A trigger the pieces before it began and the piece ends is told of too."""

    def __init__(self, scanner: Scanner) -> None:
        self._scanner = scanner
        self._view_tail = ""  # the trigger view's last characters, runs of spaces as one
        self._text_tail = ""
        self._split_tail = ""  # the last characters read for a cut prefix (``SplitPrefixes.read_piece``)
        self._keep = max(1, scanner._keywords.longest) - 1

    def feed(self, piece: str) -> Triggered | None:
        found, self._view_tail, self._text_tail, self._split_tail = self._read(piece)
        return found

    def look(self, piece: str) -> Triggered | None:
        """What ``feed`` would say of ``piece``, without reading it."""
        return self._read(piece)[0]

    def _read(self, piece: str) -> tuple[Triggered | None, str, str, str]:
        scanner = self._scanner
        view = _trigger_view(piece)
        if "  " in view:
            view = _SPACE_RUN.sub(" ", view)
        if view.startswith(" ") and self._view_tail.endswith(" "):
            view = view[1:]
        joined = self._view_tail + view
        text = self._text_tail + piece
        reach = -1 if scanner._watchable else UNBOUNDED
        spread = scanner._spread_always
        since = len(self._view_tail)
        found, rules = scanner._keywords.find(joined)
        if found:
            reaches = scanner._word_reaches(rules)
            for word, start, end in found:
                if end > since:
                    reach = max(reach, self._hit_reach(joined, start, end, reaches[word]))
                    if scanner._spread:
                        spread = spread.union(scanner._spread.intersection(rules[word]))
                    if joined[start:end] in scanner._key_prefixes:
                        # A key's prefix in a string literal starts a view of the literals joined to it,
                        # past the run that holds it (unmask.joined_views).
                        reach = UNBOUNDED
        for char, char_reach in scanner._single_reaches.items():
            at = joined.find(char, since)
            while at >= 0:
                reach = max(reach, self._hit_reach(joined, at, at + 1, char_reach))
                at = joined.find(char, at + 1)
        extent = 0
        if scanner._decoded and unmask.may_unmask(text, len(self._text_tail)):
            extent, reach = unmask.VIEW_OVERHANG, UNBOUNDED
        split_tail = self._split_tail
        if scanner._split_prefixes is not None:
            # A key cut inside its prefix holds no keyword: its view (unmask.split_views) starts here.
            hinted, split_tail = scanner._split_prefixes.read_piece(split_tail, piece)
            reach = UNBOUNDED if hinted else reach
        triggered = Triggered(extent, reach, spread) if reach >= 0 else None
        tails = joined[max(0, len(joined) - self._keep) :], text[-unmask.FEATURE_REACH :], split_tail
        return triggered, *tails

    def _hit_reach(self, joined: str, start: int, end: int, reach: tuple[int, int]) -> int:
        """The reach of a trigger at ``joined[start:end]`` whose rules reach ``reach``: the widest reach of
        those not confined to runs (-1 without any), and the shortest match of those that are (-1
        without any). A run-confined rule matches only in the run that holds the trigger: a run already
        closed on both sides and shorter than its shortest match holds none (0 where it may)."""
        spread, shortest = reach
        if shortest < 0 or spread >= 0:
            return max(spread, 0 if shortest >= 0 else -1)
        left = joined.rfind(" ", 0, start)
        right = joined.find(" ", end)
        if right < 0 or (left < 0 and len(self._view_tail) >= self._keep) or " " in joined[start:end]:
            return 0
        return 0 if right - left - 1 >= shortest else -1


@dataclass(frozen=True, slots=True)
class _Stretch:
    """The hits of a keyword of one character repeated, ``length`` long, in a run of that character from
    ``low`` to ``high``: one at every place from ``low`` to ``high - length``."""

    low: int
    high: int
    length: int

    @property
    def count(self) -> int:
        return self.high - self.low - self.length + 1

    def window(self, width: int) -> tuple[int, int]:
        """The region ``_windows`` makes of these hits for a rule of ``width``: the windows of hits one
        place apart always join, so theirs is the first hit's start to the last hit's end."""
        return self.low + self.length - width, self.high - self.length + width + _LOOKAHEAD_MARGIN

    def runs_held(self, runs: list[tuple[int, int]], run_starts: list[int]) -> list[tuple[int, int]]:
        """The runs (``_uniform_runs``) that ``_run_holding`` finds holding one of these hits."""
        last = self.high - self.length
        held: list[tuple[int, int]] = []
        position = max(0, bisect.bisect_right(run_starts, self.low) - 1)
        while position < len(runs) and run_starts[position] <= last:
            # A hit held by a run starts in it and ends in it (runs lie apart: it is the last run starting
            # at or before the hit).
            low, high = runs[position]
            if max(self.low, low) <= min(last, high - self.length):
                held.append(runs[position])
            position += 1
        return held


class _RepeatedHits(dict[int, list[_Stretch]]):
    """By rule, the stretches of hits of its keywords of one character repeated."""

    @classmethod
    def of(cls, repeated: dict[str, list[tuple[int, tuple[int, ...]]]], view: str) -> _RepeatedHits:
        """The stretches of ``view`` where the keywords ``repeated`` (by character: each keyword's
        length and rules) hit: one search a character, for its runs as long as its shortest keyword."""
        found = cls()
        for char, words in repeated.items():
            shortest = words[0][0]
            # A plain substring search tells most texts hold no such run for a fraction of the regex
            # search's cost (which stops at every occurrence of a frequent letter); the regex search
            # then starts at the first run.
            first = view.find(char * shortest)
            if first < 0:
                continue
            for run in _repeated_runs(char, shortest).finditer(view, first):
                low, high = run.span()
                for length, rules in words:
                    if high - low < length:
                        break
                    stretch = _Stretch(low, high, length)
                    for index in rules:
                        found.setdefault(index, []).append(stretch)
        return found

    @staticmethod
    def windows(
        hits: list[tuple[int, int]], stretches: list[_Stretch], width: int, length: int
    ) -> list[tuple[int, int]]:
        """``_windows`` of ``hits`` and every hit of ``stretches``."""
        if not stretches:
            return _windows(hits, width, length)
        places = [(end - width, start + width + _LOOKAHEAD_MARGIN) for start, end in hits]
        places += [stretch.window(width) for stretch in stretches]
        return _merged_windows(sorted(places), length)


@functools.cache
def _repeated_runs(char: str, length: int) -> re.Pattern[str]:
    """Runs of ``char`` at least ``length`` long, led by a literal so the search skips ahead fast (a
    counted repeat is tried at every place)."""
    return re.compile(f"{re.escape(char * length)}{re.escape(char)}*")


@dataclass(slots=True)
class _Plan:
    """Where to run each triggered rule: regions to search, or positions to try (anchored rules)."""

    regions: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    starts: dict[int, list[int]] = field(default_factory=dict)
    turned: list[tuple[int, int, tuple[str, ...]]] = field(default_factory=list)
    """Where a key's prefix stands turned (``unmask.turned_views``), with the turnings that give it."""
    prefixes: list[tuple[int, int]] = field(default_factory=list)
    """Where a key's prefix stands (``unmask.joined_views``)."""
    written: bool = False
    """The text is a view put together from pieces (``unmask.PIECED``): rules run their regexes as
    written (``Rule.written``)."""


def _unread_rule_of(pack: RulePack) -> Rule:
    owasp = Counter(rule.owasp for rule in pack.rules if rule.enabled).most_common(1)[0][0]
    return unread_rule(pack.name, pack.threat, owasp)


def _unread(rules: Iterable[Rule], timed_out: dict[str, None], budget: ScanBudget) -> None:
    """``rules`` (``Scanner.unread``) are out of time in a scan's ``timed_out`` and its budget's."""
    for rule in rules:
        timed_out[rule.id] = None
        budget.timed_out.setdefault(rule.id, rule)


_KEY_HEAD = regex.compile("[A-Za-z0-9_.-]*")


def _overlaps_own(found: set[tuple[int, int, int]], low: int, high: int, index: int) -> bool:
    """Whether rule ``index`` found a span of ``found`` that ``low``-``high`` overlaps."""
    return any(rule == index and start < high and low < end for start, end, rule in found)


class Scanner:
    """Runs the enabled rules of some packs over text and returns the sensitive spans it found.

    Rule packs follow one convention the speed depends on: every match of a rule contains one of that
    rule's keywords or shapes. A hit then only needs the rule's regex around it, not over the whole text;
    for an anchored rule (every match starts with a keyword) only one match attempt at the hit.
    """

    def __init__(
        self,
        packs: Iterable[RulePack],
        *,
        timeout_s: float = 0.05,
        rescan_s: float | None = None,
        loosened: bool = True,
    ) -> None:
        """``timeout_s`` bounds each rule's run over a text, ``rescan_s`` is the seconds of a budget
        (``budget``) for the runs that reach it and the runs again after them, together
        (``RESCAN_FACTOR`` times ``timeout_s`` unless given). ``loosened=False``
        runs every triggered rule without asking its loosened form first (the same findings, for measuring
        what the question saves)."""
        read = [pack for pack in packs if pack.enabled and any(rule.enabled for rule in pack.rules)]
        self.rules: tuple[Rule, ...] = tuple(rule for pack in read for rule in pack.rules if rule.enabled)
        self.unread = {pack.name: _unread_rule_of(pack) for pack in read}
        """By pack, what a text this scanner had no budget left to read is out of time for (``scan``)."""
        self._views_unread = tuple(
            self.unread[pack.name] for pack in read if any(rule.decoded for rule in pack.rules)
        )
        """The packs the decoded views are read for: those a text's views left unread are out of time for."""
        self.rules_by_id = {rule.id: rule for rule in (*self.rules, *self.unread.values())}
        """Every rule a scan can name out of time, by id: the rules and the packs' ``unread``."""
        self.timeout_s = timeout_s
        self.rescan_s = timeout_s * RESCAN_FACTOR if rescan_s is None else rescan_s
        self._decoded = frozenset(index for index, rule in enumerate(self.rules) if rule.decoded)
        self._widths = [rule.max_length or _max_width(rule.pattern.pattern) for rule in self.rules]
        self._literal_led = [_literal_led(rule.pattern.pattern) for rule in self.rules]
        self._untimed_attempts = [
            width is not None and _untimed(rule.pattern.pattern, width + _LOOKAHEAD_MARGIN)
            for rule, width in zip(self.rules, self._widths, strict=True)
        ]
        self._relaxed = [
            relaxed.compiled(rule.pattern.pattern, rule.pattern.flags) if loosened else None
            for rule in self.rules
        ]
        self._always = [
            index for index, rule in enumerate(self.rules) if not rule.keywords and not rule.shapes
        ]
        # Single characters make poor keywords (too many hits): a plain `in` test triggers the whole text.
        # An anchored rule's hits are cheap, so its single characters are looked for like other keywords.
        self._single_chars: dict[int, tuple[str, ...]] = {}
        rules_by_word: dict[str, list[int]] = {}
        for index, rule in enumerate(self.rules):
            rule_words = {_trigger_view(word) for word in (*rule.keywords, *rule.shapes)}
            singles = () if rule.anchored else tuple(sorted(word for word in rule_words if len(word) == 1))
            if singles:
                self._single_chars[index] = singles
            for word in sorted(rule_words - set(singles)):
                rules_by_word.setdefault(word, []).append(index)
        # A decoded rule's token prefix written backwards, rotated or shifted is looked for in the same
        # pass, and triggers no rule: its token is read turned back. It is turned as keys write it (ROT47
        # turns capitals apart from small letters), and looked for as keywords are.
        written = {
            (word, _as_written(self.rules[index], word))
            for index in sorted(self._decoded)
            if self._literal_led[index]
            for word in map(_trigger_view, self.rules[index].keywords)
            if _TOKEN_PREFIX.fullmatch(word) and not (word.isalpha() and len(word) > _MIN_TURNED)
        }
        self._key_prefixes = frozenset(word for word, _ in written)
        self._turned: dict[str, tuple[str, ...]] = {}
        spellings = [spelling for _, spelling in written if spelling is not None]
        unspelt = [word for word, spelling in written if spelling is None]
        self._spellings = frozenset(spelling.translate(_DIGITS_AS_ZERO) for spelling in spellings)
        """The key prefixes as keys write them, digits 0: what a shifted prefix turns back into."""
        self._unspelt = frozenset(unspelt)
        """The key prefixes whose capitals are unknown, as keywords are looked for."""
        for turned_word, kinds in unmask.turned_keywords(spellings, unspelt).items():
            seen = _trigger_view(turned_word)
            self._turned[seen] = tuple(dict.fromkeys((*self._turned.get(seen, ()), *kinds)))
        # A key's groups joined, or the key in another case, are read only by the rules of keys that
        # start with a prefix (and, in another case, of keys of one case): what starts elsewhere or is
        # told by its name is no key written out.
        prefix_led = [
            index
            for index in sorted(self._decoded)
            if self._literal_led[index]
            and all(_trigger_view(word) in self._key_prefixes for word in self.rules[index].keywords)
        ]
        spelt = (regex.escape(word).replace("0", "[0-9]") for word in self._key_prefixes)
        prefix_words = "|".join(sorted(spelt, key=len, reverse=True))
        self._open_grouped = regex.compile(
            f"(?ri)(?<![A-Za-z0-9_])(?:{prefix_words}){unmask.OPEN_GROUPED}\\Z" if prefix_words else "(?!)"
        )
        self._prefix_words = sorted(self._key_prefixes)
        self._prefix_automaton = _automaton_of(self._prefix_words)
        led_by = {
            word: [index for index in prefix_led if word in map(_trigger_view, self.rules[index].keywords)]
            for word in self._prefix_words
        }
        self._split_prefixes = unmask.SplitPrefixes.of(
            {word: self._spelling(word, led) for word, led in led_by.items() if led}
        )
        self._longest_keys = {
            word: max((self._widths[index] or UNBOUNDED for index in led), default=UNBOUNDED)
            for word, led in led_by.items()
        }
        """The longest key of the rules each prefix leads: a run from the prefix as long is a key whole."""
        self._leading = frozenset(word for word, led in led_by.items() if led)
        """The prefixes that lead a rule's key (others are some rule's keyword alone)."""
        self._regrouped_rules = {
            unmask.GROUPED: frozenset(prefix_led),
            **{
                kind: frozenset(
                    index for index in prefix_led if one_case(self.rules[index].pattern.pattern) == case
                )
                for kind, case in ((unmask.UPPERCASED, "upper"), (unmask.LOWERCASED, "lower"))
            },
        }
        self._turned = {word: kinds for word, kinds in self._turned.items() if word not in rules_by_word}
        # Prefixes shifted along the alphabet or in ROT47 are many (each prefix moved every way) and stand
        # inside words often ("der_" in "header_"): they are looked for apart, where a token starts, in one
        # RE2 pass, so the keyword pass reports no more hits inside words than it did.
        shifted = sorted(
            (word for word, kinds in self._turned.items() if unmask.SHIFTED.issuperset(kinds)),
            key=lambda word: (-len(word), word),
        )
        self._shifted = frozenset(shifted)
        self._shifted_starts = _token_starts_program(shifted) if shifted else None
        turned_words = [word for word in self._turned if word not in self._shifted]
        words = [*rules_by_word, *turned_words]
        rules_of_word = [tuple(indices) for indices in rules_by_word.values()] + [()] * len(turned_words)
        self._keywords = _Keywords(words, rules_of_word)
        # A keyword of one character repeated hits at every place of a run of it (digits all read 0: a
        # list of numbers is one run): its hits in a run are counted and covered as one stretch
        # (``_RepeatedHits``), not listed one by one. Not for an anchored rule, which tries each hit.
        repeated = {
            word_index
            for word_index, word in enumerate(words)
            if len(word) > 1
            and word.isascii()
            and word == word[0] * len(word)
            and rules_of_word[word_index]
            and not any(self.rules[index].anchored for index in rules_of_word[word_index])
        }
        self._repeated: dict[str, list[tuple[int, tuple[int, ...]]]] = {}
        for word_index in sorted(repeated, key=lambda word_index: len(words[word_index])):
            word = words[word_index]
            self._repeated.setdefault(word[0], []).append((len(word), rules_of_word[word_index]))
        self._unrepeated = (
            _Keywords(
                [word for word_index, word in enumerate(words) if word_index not in repeated],
                [rules for word_index, rules in enumerate(rules_of_word) if word_index not in repeated],
            )
            if repeated
            else self._keywords
        )
        spaced_words = [word_index for word_index, word in enumerate(words) if " " in word.strip(" ")]
        self._spaced_keywords = _Keywords(
            [words[word_index] for word_index in spaced_words],
            [rules_of_word[word_index] for word_index in spaced_words],
        )
        # How far past a trigger a match holding it (or reading it in a lookbehind) can end: for a rule
        # whose matches are confined to a run of non-whitespace, no further than the run the trigger lies
        # in (0: Triggered); otherwise its widest match and lookbehind. A rule's max_length is not taken
        # at its word (a search over the whole text is not held to it), nor a width the standard parser
        # cannot tell.
        self._reaches = [
            self._reach(rule, width) for rule, width in zip(self.rules, self._widths, strict=True)
        ]
        self._shortest = [
            _min_width(rule.pattern.pattern) if reach == 0 else -1
            for rule, reach in zip(self.rules, self._reaches, strict=True)
        ]
        self._reaches_by_list: dict[int, list[tuple[int, int]]] = {}
        self._spread = frozenset(
            index for index, rule in enumerate(self.rules) if self._reaches[index] and _value_spreads(rule)
        )
        """The rules whose value (the span redacted) may hold whitespace: one may still be growing after the
        word a stream holds back (``open_value``)."""
        self._spread_always = self._spread.intersection(self._always)
        self._spread_widths = {index: _max_width(self.rules[index].pattern.pattern) for index in self._spread}
        self._single_reaches = {
            char: self._reach_of(index for index, chars in self._single_chars.items() if char in chars)
            for char in {char for chars in self._single_chars.values() for char in chars}
        }
        # A watch reads each piece's trigger view alone, with runs of spaces as one: no word may need two
        # spaces, nor a sigma (its lowercase depends on the letter after it).
        self._watchable = not self._always and not any(
            "  " in word or "\u03c3" in word or "\u03c2" in word for word in words
        )

    @staticmethod
    def _reach(rule: Rule, width: int | None) -> int:
        if confined_to_runs(rule.pattern.pattern):
            return 0
        if rule.max_length is not None or width is None:
            return UNBOUNDED
        look_back = _lookbehind(rule.pattern.pattern)
        return UNBOUNDED if look_back is None else width + look_back + _LOOKAHEAD_MARGIN

    def _spelling(self, word: str, led: list[int]) -> str | None:
        """How the rules ``led`` by the key prefix ``word`` (as keywords are looked for) write its letters:
        as the literal their patterns start with, or in its one case where that literal is only the
        prefix's start; None where they do not agree (or do not tell)."""
        spellings = set()
        for index in led:
            try:
                parsed = _sre_parse.parse(self.rules[index].pattern.pattern)
            except (re.error, ValueError, TypeError, OverflowError, RecursionError):
                return None  # written in the regex module's own syntax: its spelling is not told
            literal = _leading_literal(list(parsed))
            read = _trigger_view(literal)
            if read[: len(word)] == word:
                spellings.add(literal[: len(word)])
            elif read and word.startswith(read) and literal in (literal.upper(), literal.lower()):
                spellings.add(word.upper() if literal.isupper() else word.lower())
        return spellings.pop() if len(spellings) == 1 else None

    def _word_reaches(self, rules_of_word: Sequence[tuple[int, ...]]) -> list[tuple[int, int]]:
        """The reach of each keyword's hit (``TriggerWatch._hit_reach``), for one of the automata's lists."""
        known = self._reaches_by_list.get(id(rules_of_word))
        if known is None:
            # A turned prefix (no rules) starts a view, whose matches may reach anywhere.
            known = [self._reach_of(rules) if rules else (UNBOUNDED, -1) for rules in rules_of_word]
            self._reaches_by_list[id(rules_of_word)] = known
        return known

    def _reach_of(self, rules: Iterable[int]) -> tuple[int, int]:
        """The widest reach of ``rules`` not confined to runs, and the shortest match of those that are
        (-1 where there is none)."""
        indices = list(rules)
        spread = max((self._reaches[index] for index in indices if self._reaches[index]), default=-1)
        shortest = min((self._shortest[index] for index in indices if not self._reaches[index]), default=-1)
        return spread, shortest

    def open_grouped_key(self, text: str, low: int) -> int | None:
        """Where a key's prefix stands that the end of ``text`` (from ``low`` on) continues in groups
        white space parts: a key written out so (``unmask.grouped_views``) may still be growing there."""
        if self._prefix_automaton is None:
            return None
        view = _SURROGATE.sub("\ufffd", _trigger_view(text[low:]))
        hits = self._prefix_automaton.find_matches_as_indexes(view, overlapping=True)
        if not hits:
            return None
        found = self._open_grouped.search(text, low + min(start for _, start, _ in hits))
        if found is None:
            return None
        at = found.start() - low
        longest = max(
            (self._longest_keys[self._prefix_words[word]] for word, start, _ in hits if start == at),
            default=UNBOUNDED,
        )
        head = _KEY_HEAD.match(text, found.start())
        return None if head is not None and len(head.group()) >= longest else found.start()

    def open_value(self, text: str, low: int, rules: Iterable[int]) -> tuple[int | None, frozenset[int]]:
        """Where, from ``low`` on, a match of one of ``rules`` (of those whose value may span words) starts
        that ``text`` ends inside of, so that its value may still be growing there; with the rules ``text``
        ends inside a match of. A rule that runs out of time is taken to be inside one from ``low``."""
        opened: int | None = None
        still: set[int] = set()
        for index in rules:
            # A match the text ends inside of starts no further back than the rule's widest match.
            width = self._spread_widths[index]
            start = low if width is None else max(low, len(text) - width)
            try:
                hits = self.rules[index].pattern.finditer(text, start, partial=True, timeout=self.timeout_s)
                last = next(iter(deque(hits, maxlen=1)), None)
            except TimeoutError:
                still.add(index)
                opened = start if opened is None else min(opened, start)
                continue
            if last is None or not last.partial or last.start() == len(text):
                continue  # none, or the empty one any text ends in: a match may start after it
            # A partial match tells no group's span: the value is held from where the match starts.
            still.add(index)
            opened = last.start() if opened is None else min(opened, last.start())
        return opened, frozenset(still)

    def open_split_key(self, text: str, low: int) -> int | None:
        """Where a key whose prefix a cut parts may still be growing at the end of ``text`` starts, from
        ``low`` on (``unmask.SplitPrefixes.open_key``)."""
        return None if self._split_prefixes is None else self._split_prefixes.open_key(text, low)

    def may_open_split_key(self, text: str) -> bool:
        """Whether ``open_split_key`` may find a key in ``text``, of ASCII letters, spaces, commas and
        full stops alone (``unmask.SplitPrefixes.may_open_in``); False is exact."""
        return self._split_prefixes is not None and self._split_prefixes.may_open_in(text)

    def watch(self) -> TriggerWatch:
        """A reader of a growing text that tells which new piece can make a rule match (TriggerWatch)."""
        return TriggerWatch(self)

    def _plan(self, text: str, meter: Meter, only: frozenset[int] | None = None) -> _Plan:
        """Which rules to run on ``text`` (of ``only``, when given), and where: of the rules its keywords
        trigger, those whose loosened form (scanning/relaxed.py) finds something where the rule looks.
        Where the budget runs out on the way, the rules not yet narrowed down stay in the plan whole:
        they are then out of time (``_find``)."""
        plan = self._plan_all(text, meter)
        if only is not None:
            plan.regions = {index: where for index, where in plan.regions.items() if index in only}
            plan.starts = {index: where for index, where in plan.starts.items() if index in only}
        self._drop_impossible(text, plan, meter)
        return plan

    def _drop_impossible(self, text: str, plan: _Plan, meter: Meter) -> None:
        """Narrows the plan to the places where each rule's loosened form matches (its regions, or the
        reach of each attempt, near ones asked about together), and drops a rule left with none: its
        own pattern cannot match elsewhere. Rules whose own search costs less than the question are
        left to run as planned, and so is every rule once the budget is spent."""
        if not plan.regions and not plan.starts:
            return
        encoded = text.encode("ascii") if text.isascii() else None
        whole = [(0, len(text))]
        if encoded is not None:
            self._drop_unbounded_together(encoded, plan, meter)
        for index, regions in list(plan.regions.items()):
            if meter.left() <= 0:
                return
            # A literal-led rule searches the whole text faster than RE2 reads it (the regex engine
            # skips to its literal).
            if self._literal_led[index] and regions == whole:
                continue
            kept = self._possible_places(index, text, encoded, _stretches(regions, len(text), _RELAXED_GAP))
            if kept:
                plan.regions[index] = kept
            else:
                del plan.regions[index]
        for index, starts in list(plan.starts.items()):
            # Attempts without the time limit cost less than asking RE2 (a third of a microsecond).
            if self._untimed_attempts[index]:
                continue
            if meter.left() <= 0:
                return
            width = self._widths[index]
            reach = len(text) if width is None else width + _LOOKAHEAD_MARGIN
            kept_starts = self._possible_places(
                index, text, encoded, _start_stretches(starts, reach, len(text), _RELAXED_GAP)
            )
            if kept_starts and encoded is not None:
                # An attempt's match starts at the attempt: so does a match of the loosened form. One
                # such check costs a fraction of a timed attempt, and stops where the two part.
                program = self._relaxed[index]
                kept_starts = [
                    start
                    for start in kept_starts
                    if relaxed.possible(program, encoded, start, min(start + reach, len(text)), at_low=True)
                ]
            if kept_starts:
                plan.starts[index] = kept_starts
            else:
                del plan.starts[index]

    def _drop_unbounded_together(self, encoded: bytes, plan: _Plan, meter: Meter) -> None:
        """The attempts of a rule whose matches have no bound on their length reach the text's end: each
        such rule would ask RE2 about the text from its first attempt on (``_drop_impossible``). Two or
        more ask once together, from the first of their attempts, and where none of their loosened forms
        matches there, all are dropped; else each asks on its own. ``encoded``: the text, ASCII."""
        unbounded = tuple(
            index for index in plan.starts if self._widths[index] is None and self._relaxed[index] is not None
        )
        if len(unbounded) < 2 or meter.left() <= 0:
            return
        program = relaxed.compiled_any(
            tuple(
                (self.rules[index].pattern.pattern, self.rules[index].pattern.flags)
                for index in sorted(unbounded)
            )
        )
        low = min(plan.starts[index][0] for index in unbounded)
        if program is not None and not relaxed.possible(program, encoded, low, len(encoded)):
            for index in unbounded:
                del plan.starts[index]

    def _possible_places[Place](
        self, index: int, text: str, encoded: bytes | None, stretches: Iterable[tuple[int, int, list[Place]]]
    ) -> list[Place]:
        """Of the places of ``stretches`` (``_stretches``, ``_start_stretches``: spans of ``text`` less
        than ``_RELAXED_GAP`` apart, each stretch with the places it holds), those in a stretch where rule
        ``index``'s loosened form matches. ``encoded`` is the text's bytes when it is ASCII, so offsets
        carry over; other text has each stretch encoded alone."""
        program = self._relaxed[index]
        kept: list[Place] = []
        for low, high, members in stretches:
            if program is None:
                found = True
            elif encoded is not None:
                found = relaxed.possible(program, encoded, low, high)
            else:
                try:
                    piece = text[low:high].encode("utf-8")
                except UnicodeEncodeError:
                    piece = None  # a lone surrogate: RE2 reads UTF-8 only, so the rule runs there
                found = piece is None or relaxed.possible(program, piece, 0, len(piece))
            if found:
                kept.extend(members)
        return kept

    def _hits_by_rule(
        self,
        searched: str,
        found: tuple[list[tuple[int, int, int]], Sequence[tuple[int, ...]]],
        across_runs: tuple[list[tuple[int, int, int]], Sequence[tuple[int, ...]]],
    ) -> tuple[dict[int, list[tuple[int, int]]], list[tuple[int, int]]]:
        """The (start, end) hits of each rule the keyword hits ``found`` in ``searched`` and those
        ``across_runs`` of spaces trigger (each with the rules of each word number), in order of where
        they end (what ``_windows`` needs; hits that end at one place in any order), the rules in the order
        of their first hit; and the hits that are a key's prefix, in order. A long text holds a keyword
        hundreds of times: its hits are taken word by word, each word's rules and whether it is a key's
        prefix looked up once, rather than once a hit."""
        words_found, rules_of_word = found
        if not words_found and not across_runs[0]:
            return {}, []  # most short strings (ids, names, types) hold no keyword
        hits_by_rule: dict[int, list[tuple[int, int]]] = {}
        prefix_words: set[int] = set()
        merged: set[int] = set()
        for word_index, hits in _hits_by_word(words_found).items():
            rules = rules_of_word[word_index]
            if not rules:
                continue
            start, end = hits[0]
            if searched[start:end] in self._key_prefixes:
                prefix_words.add(word_index)
            for index in rules:
                if index in hits_by_rule:
                    hits_by_rule[index] += hits
                    merged.add(index)
                else:
                    hits_by_rule[index] = hits if len(rules) == 1 else list(hits)
        for word_index, start, end in across_runs[0]:
            for index in across_runs[1][word_index]:
                hits_by_rule.setdefault(index, []).append((start, end))
                merged.add(index)
        # Each word's hits come in order of where they end; a rule with several words' has them sorted.
        for index in merged:
            hits_by_rule[index].sort(key=_END)
        prefixes = (
            [(start, end) for word_index, start, end in words_found if word_index in prefix_words]
            if prefix_words
            else []
        )
        return hits_by_rule, prefixes

    def _turnings_of(self, hit: str, seen: str) -> tuple[str, ...]:
        """The turnings that give ``hit``, a turned prefix as the text writes it (``seen`` as keywords are
        looked for: small letters, digits 0), that turn it back into a key's prefix. A shifted or ROT47
        prefix turns back into one as keys write it, capitals apart (ROT47 turns a capital and its small
        letter, or two digits, apart: "00a0" as looked for is ROT47's "89A0" of "ghp_", and "12a4" of a
        hex digest; "bm90" of base64 is "DO00" moved back two, but in small letters)."""
        kinds = self._turned[seen]
        if unmask.SHIFTED.isdisjoint(kinds):
            return kinds
        return tuple(
            kind for kind in kinds if kind not in unmask.SHIFTED or self._spelt(unmask.TURNINGS[kind](hit))
        )

    def _spelt(self, prefix: str) -> bool:
        """Whether ``prefix`` is a key's prefix as keys write it (a prefix whose capitals are unknown in
        either case)."""
        folded = prefix.translate(_DIGITS_AS_ZERO)
        return folded in self._spellings or (bool(self._unspelt) and _trigger_view(prefix) in self._unspelt)

    def _shifted_hits(self, text: str, searched: str) -> list[tuple[int, int, tuple[str, ...]]]:
        """Where a prefix shifted along the alphabet or in ROT47 starts a token of ``searched`` (the text's
        trigger view), each with the turnings that turn it back (``_turnings_of``); every such prefix
        starting at one place, the longest found by the search and those it starts with."""
        if self._shifted_starts is None:
            return []
        encoded = searched.encode("ascii", "replace")
        hits: list[tuple[int, int, tuple[str, ...]]] = []
        position = 0
        while (span := relaxed.first_span(self._shifted_starts, encoded, position))[0] >= 0:
            start, end = span
            for cut in range(end, start + _MIN_TURNED - 1, -1):
                seen = searched[start:cut]
                if seen in self._shifted and (kinds := self._turnings_of(text[start:cut], seen)):
                    hits.append((start, cut, kinds))
            position = start + 1
        return hits

    def _plan_all(self, text: str, meter: Meter) -> _Plan:
        view = _trigger_view(text)
        whole = [(0, len(text))]
        plan = _Plan(regions=dict.fromkeys(self._always, whole))
        for index, chars in self._single_chars.items():
            for char in chars:
                if char in view:
                    plan.regions[index] = whole
                    break
        max_anchored_hits = max(_MAX_ANCHORED_HITS, len(text) // _ANCHORED_HIT_SPACING)
        # A keyword inside a run hits at every position of it: such a hit is seen at the run's kept edges
        # (as long as the longest keyword), and its rule then covers the whole run (runs_hit below).
        longest = self._keywords.longest
        runs = _uniform_runs(view, 2 * longest + _RUN_BLOCK)
        searched = _without_run_insides(view, runs, longest) if runs else view
        words_found, rules_of_word = self._unrepeated.find(searched)
        repeated = _RepeatedHits.of(self._repeated, searched)
        across_runs, rules_of_spaced_word = _hits_across_space_runs(self._spaced_keywords, view)
        shifted = self._shifted_hits(text, searched)
        if not words_found and not repeated and not across_runs and not shifted:
            return plan  # most texts: no keyword, so nothing but the rules that need none to run
        # A turned prefix triggers no rule but a view (read only while the budget lasts, ``scan``).
        turned = [
            (start, end, kinds)
            for word_index, start, end in words_found
            if not rules_of_word[word_index]
            and (kinds := self._turnings_of(text[start:end], searched[start:end]))
        ]
        plan.turned = sorted(turned + shifted) if shifted else turned
        if meter.left() <= 0:
            # The budget is spent: the rules the text triggers are out of time, and where they would run
            # matters no more.
            for found, rules_of in ((words_found, rules_of_word), (across_runs, rules_of_spaced_word)):
                for word_index in {hit[0] for hit in found}:
                    plan.regions.update(dict.fromkeys(rules_of[word_index], whole))
            plan.regions.update(dict.fromkeys(repeated, whole))
            return plan
        hits_by_rule, plan.prefixes = self._hits_by_rule(
            searched, (words_found, rules_of_word), (across_runs, rules_of_spaced_word)
        )
        run_starts = [low for low, _ in runs]
        for index in repeated:
            hits_by_rule.setdefault(index, [])
        for index, hits in hits_by_rule.items():
            if index in plan.regions:
                continue
            if meter.left() <= 0:
                plan.regions[index] = whole
                continue
            width = self._widths[index]
            stretches = repeated.get(index, [])
            runs_hit = (
                [run for run in (_run_holding(runs, run_starts, hit) for hit in hits) if run] if runs else []
            )
            count = len(hits)
            for stretch in stretches:
                count += stretch.count
                runs_hit += stretch.runs_held(runs, run_starts)
            if self._literal_led[index] and count > _MAX_LITERAL_LED_HITS:
                plan.regions[index] = whole
            elif runs_hit and width is not None:
                reach = width + _LOOKAHEAD_MARGIN
                covered = [(low - reach, high + reach) for low, high in runs_hit]
                windows = _RepeatedHits.windows(hits, stretches, width, len(text))
                plan.regions[index] = _union(covered + windows, len(text))
            elif runs_hit:
                plan.regions[index] = whole
            elif self.rules[index].anchored and count <= max_anchored_hits:
                plan.starts[index] = sorted({start for start, _ in hits})
            elif width is None:
                plan.regions[index] = whole
            else:
                plan.regions[index] = _RepeatedHits.windows(hits, stretches, width, len(text))
        return plan

    def _spans(
        self, index: int, text: str, plan: _Plan, seconds: float, meter: Meter
    ) -> Iterator[tuple[int, int, bool]]:
        """The spans of rule ``index``'s regex matches where the plan says to look (anchored: one match
        attempt per hit, reaching as far as the rule's longest match can), within ``seconds`` of the
        meter's; in a view put together from pieces (``_Plan.written``), of its regex as written. Then,
        for a rule with an ``inside`` form, that form's matches where none of the regex's starts, each
        marked True (its proof, if any, still to pass)."""
        rule = self.rules[index]
        pattern = (rule.written if plan.written else None) or rule.pattern
        deadline = meter.spent() + seconds
        untimed = self._untimed_attempts[index]
        starts: set[int] = set()
        for start, end in self._matches(
            index, pattern, rule.secret_group, (untimed, False), text, plan, deadline, meter
        ):
            starts.add(start)
            yield start, end, False
        # A prefix and a length are no key in a view whose joins or turning made the run they stand in.
        if rule.inside is not None and not (plan.written and rule.inside_runs):
            for start, end in self._matches(index, rule.inside, 0, (True, True), text, plan, deadline, meter):
                if start not in starts:
                    yield start, end, True

    def _matches(
        self,
        index: int,
        pattern: regex.Pattern[str],
        group: int | str,
        untimed: tuple[bool, bool],
        text: str,
        plan: _Plan,
        deadline: float,
        meter: Meter,
    ) -> Iterator[tuple[int, int]]:
        """The spans of ``group`` in ``pattern``'s matches where the plan says to look for rule ``index``,
        until the meter reaches ``deadline`` (``_spans``); ``untimed``: whether its anchored attempts, and its
        searches, need no time limit of their own."""
        # The regex module counts a timeout in the CPU time of the whole process: a run it stops while
        # this thread has time left was cut short by other threads' work. An anchored attempt is made
        # again; a search goes on from its last match.
        if index in plan.starts:
            width = self._widths[index]
            reach = len(text) if width is None else width + _LOOKAHEAD_MARGIN
            for start in plan.starts[index]:
                end = min(len(text), start + reach)
                while True:
                    remaining = deadline - meter.spent()
                    if remaining <= 0:
                        raise TimeoutError
                    try:
                        hit = (
                            pattern.match(text, start, end)
                            if untimed[0]
                            else pattern.match(text, start, end, timeout=remaining)
                        )
                    except TimeoutError:
                        continue
                    break
                if hit is not None:
                    yield hit.span(group)
            return
        for low, high in plan.regions[index]:
            resume = low
            # Where the last match was empty: a search from there finds it again first, then goes past it.
            empty_at = -1
            while True:
                remaining = deadline - meter.spent()
                if remaining <= 0:
                    raise TimeoutError
                try:
                    hits = (
                        pattern.finditer(text, resume, high)
                        if untimed[1]
                        else pattern.finditer(text, resume, high, timeout=remaining)
                    )
                    for hit in hits:
                        if hit.start() == hit.end() == empty_at:
                            continue
                        yield hit.span(group)
                        resume = hit.end()
                        empty_at = resume if hit.start() == resume else -1
                except TimeoutError:
                    continue
                break

    def scan(self, text: str, budget: ScanBudget, *, merge: bool = True) -> ScanResult:
        """Find sensitive spans. With ``merge`` overlapping spans become one, kept under its top rule.
        The scan is charged to ``budget`` (shared by every text of one request, response or message,
        ``ScanBudget``); the rules that run out of time are named in the result's ``timed_out`` and the
        budget's.

        Rules of ``decode`` packs also run over every view of the text with its encodings and disguises
        undone (proxy/scanning/unmask.py); what they find there is reported over the span that carried it.
        A text (or the views of one) that the budget has nothing left for is read by none of the rules:
        the pseudo-rule of each pack left unread (``unread``) is out of time instead.
        """
        if text and budget.spent_for(len(text)):
            # Nothing reads a text once the budget is spent, not even the keyword pass: that bounds the
            # work of a request, and each pack the text is unread for is out of time.
            return self._unread_scan(budget)
        budget.allow(len(text))
        with budget.metered() as meter:
            return self.scan_metered(text, meter, merge=merge)

    def scan_metered(self, text: str, meter: Meter, *, merge: bool = True) -> ScanResult:
        """``scan`` as part of a larger piece of work charged to the meter's budget, the text's allowance
        already added (``ScanBudget.allow``): the CPU clock is read where that work starts and ends, not
        around each of its scans."""
        if text and meter.left() <= 0:
            return self._unread_scan(meter.budget)
        timed_out: dict[str, None] = {}
        disguises: dict[tuple[int, int, int], str] = {}
        plan = self._plan(text, meter)
        # A text repeats its values (a contact list, a log of calls), and its views repeat the text's: each
        # value is checked once in a scan, whichever rules match it and wherever (a phone number's check
        # against the numbering plans costs about 0.4 ms).
        checked: dict[tuple[Validator, str], bool] = {}
        found = self._find(text, plan, timed_out, meter, checked)
        if self._decoded:
            # Views started at a key's prefix (turned, or in a string literal joined to others) or at
            # the end of a match (a value cut into literals) are read after the others; those of a
            # view not so started join them as they are found.
            ends = [(start, end) for start, end, index in found if index in self._decoded]
            plain = set(found)
            split = self._split_prefixes
            longest = self._longest_key
            keyed = [unmask.keyed_views(text, plan.turned, plan.prefixes, ends, None, split, longest)]
            turned_read = 0
            for view in itertools.chain(unmask.views(text), itertools.chain.from_iterable(keyed)):
                if view.kind in unmask.TURNINGS:
                    turned_read += 1
                if meter.left() <= 0 or turned_read > MAX_TURNED_VIEWS:
                    _unread(self._views_unread, timed_out, meter.budget)
                    break
                plan = self._plan(view.text, meter, self._regrouped_rules.get(view.kind, self._decoded))
                plan.written = not unmask.PIECED.isdisjoint(view.kinds.split("+"))
                if view.kind not in unmask.KEYED:
                    keyed.append(
                        unmask.keyed_views(view.text, plan.turned, plan.prefixes, [], view, split, longest)
                    )
                elif view.kind in unmask.TURNINGS:
                    keyed.append(unmask.grouped_views(view.text, plan.prefixes, view, longest))
                for start, end, index in self._find(view.text, plan, timed_out, meter, checked):
                    low, high = view.original(start, end)
                    if view.text[start:end] == text[low:high] and (
                        _overlaps_own(plain, low, high, index) or (start == 0 < low)
                    ):
                        # The plain scan has seen it, or the view starts inside the text and so
                        # lacks what stood before the match. A match the plain scan missed is new
                        # where only its surroundings were undone: a key after "%20", "\x3d" or
                        # "&#10;" is glued, as written, to the escape's last letter or digit.
                        continue
                    if view.kind in unmask.REGROUPED and _overlaps_own(plain, low, high, index):
                        continue  # a whole key, and what stands after it is no more of it
                    if self.rules[index].whole_token:
                        high = token_end(text, low, high)
                    found.append((low, high, index))
                    disguises.setdefault((low, high, index), view.kinds)
        if not found:
            return ScanResult([], tuple(timed_out))  # most texts
        found = sorted(set(found))
        if merge:
            found = self._merge(found)
        matches = [
            Match(self.rules[index], start, end, disguises.get((start, end, index), ""))
            for start, end, index in found
        ]
        return ScanResult(matches, tuple(timed_out))

    def _longest_key(self, prefix: str) -> int:
        """The longest key the rules a key's prefix (as the text spells it) leads match, 0 where it leads
        none (``unmask.grouped_views``)."""
        word = _trigger_view(prefix)
        return self._longest_keys[word] if word in self._leading else 0

    def _unread_scan(self, budget: ScanBudget) -> ScanResult:
        """The scan of a text left unread: every pack out of time for it."""
        timed_out: dict[str, None] = {}
        _unread(self.unread.values(), timed_out, budget)
        return ScanResult([], tuple(timed_out))

    def scan_alone(self, text: str, *, merge: bool = True) -> ScanResult:
        """``scan`` with a budget of its own: for a text read by itself (a file the CLI scans, a test)."""
        return self.scan(text, self.budget(), merge=merge)

    def budget(self) -> ScanBudget:
        """A fresh budget of ``rescan_s``, and as much again every ``BUDGET_CHARS`` characters scanned,
        for the scans of one request, response or message."""
        return ScanBudget(self.rescan_s, self.rescan_s / BUDGET_CHARS)

    def _find(
        self,
        text: str,
        plan: _Plan,
        timed_out: dict[str, None],
        meter: Meter,
        checked: dict[tuple[Validator, str], bool],
    ) -> list[tuple[int, int, int]]:
        """The validated spans of the rules the plan runs, as (start, end, rule index). Each rule runs
        first within its time limit (or what is left of the budget, if less); one that runs out is run
        again alone with what is left of the budget; one that runs out then too, or that the budget has
        no time left for, is in ``timed_out`` and the budget's. ``checked`` keeps the validators' verdicts
        on values for the whole scan."""
        found: list[tuple[int, int, int]] = []
        if not plan.regions and not plan.starts:
            return found

        def ran_out(index: int, seconds: float) -> bool:
            if seconds <= 0:
                return True
            try:
                self._validated(index, text, plan, seconds, found, checked, meter)
            except TimeoutError:
                return True
            return False

        # Every rule has its first run before any runs again, so one that eats the budget costs the others
        # on the same text nothing but its time limit. What a run found before it ran out is kept (the
        # same spans found twice are one in ``scan``).
        again = [
            index
            for index in sorted({*plan.regions, *plan.starts})
            if ran_out(index, min(self.timeout_s, meter.left(self.timeout_s)))
        ]
        for index in again:
            if ran_out(index, meter.left(math.inf)):
                rule = self.rules[index]
                timed_out[rule.id] = None
                meter.budget.timed_out.setdefault(rule.id, rule)
        return found

    def _validated(
        self,
        index: int,
        text: str,
        plan: _Plan,
        seconds: float,
        found: list[tuple[int, int, int]],
        checked: dict[tuple[Validator, str], bool],
        meter: Meter,
    ) -> None:
        """Adds rule ``index``'s spans that pass its checks to ``found``, each validator's verdicts kept in
        ``checked``; raises TimeoutError past ``seconds`` of the meter's."""
        rule = self.rules[index]
        check = VALIDATORS[rule.validator] if rule.validator else None
        proof = VALIDATORS[rule.proof] if rule.proof else None
        # The run of base64 the last match of a prefix and a length stood in: each run is read once.
        run: tuple[int, int, frozenset[str]] = (0, -1, frozenset())
        for start, end, inside in self._spans(index, text, plan, seconds, meter):
            if start < 0 or start == end:
                continue
            if inside and rule.inside_runs:
                if not run[0] <= start <= end <= run[1]:
                    run = _base64_run(text, start, end)
                if run[1] - run[0] > longest_run(rule.inside_runs, run[2]):
                    continue
            value = text[start:end]
            if "\x00" in value:
                # A NUL ends every text scanned together with others (and is no credential's
                # part): the value is what lies between them.
                start += len(value) - len(value.lstrip("\x00"))
                value = value.strip("\x00")
                end = start + len(value)
                if not value:
                    continue
            if rule.entropy is not None and shannon_entropy(value) < rule.entropy:
                continue
            judges = (check, proof) if inside else (check,)
            if not all(_passes(judge, value, checked) for judge in judges if judge is not None):
                continue
            if rule.skip_examples and is_example_value(value):
                continue
            if is_vault_placeholder(value):
                continue
            if rule.whole_token and not inside and not (rule.glued and _WORD_CHARACTER.match(text, end)):
                # A key glued before a word (``ghp_...x``), or found by its own structure, is its length:
                # what is glued to it stays.
                end = token_end(text, start, end)
                # A value the rule's length cut (a JWT after "access_token":) is judged whole as well: a
                # documented example longer than the cut is still one.
                if rule.skip_examples and end > start + len(value) and is_example_value(text[start:end]):
                    continue
            found.append((start, end, index))

    def _rank(self, index: int) -> tuple[int, int]:
        """Higher wins: more severe, then the rule listed first (packs list specific rules first)."""
        return SEVERITY_ORDER[self.rules[index].severity], -index

    def _merge(self, spans: Sequence[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        merged: list[tuple[int, int, int]] = []
        for start, end, index in spans:
            if merged and start < merged[-1][1]:
                last_start, last_end, last_index = merged[-1]
                winner = max(last_index, index, key=self._rank)
                merged[-1] = (last_start, max(last_end, end), winner)
            else:
                merged.append((start, end, index))
        return merged
