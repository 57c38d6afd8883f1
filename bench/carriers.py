"""Benign tool results of the kinds agents receive, and ways to plant an instruction inside them.

Training (bench/train_injection.py) and the dev figures (bench/detect_eval.py) share these, so a model
learns the difference between a document that carries instructions for a human and text that addresses
the AI, whatever the carrier: documentation and source code (the dev set of
``../shared/data/benign_tool_results``), BIPIA's emails, tables and code threads, and carriers generated
here from the same vocabulary: JSON API answers (issue lists, search results, records), logs, package
and deployment manifests, diffs and stack traces.

Planting puts the attack where each carrier's own syntax hides text: a line or sentence of prose, a code
comment or docstring, a JSON string value, a markdown or HTML comment, a log message, a diff line.
"""

from __future__ import annotations

import base64
import binascii
import email.message
import importlib.metadata
import json
import os
import random
import re
import sysconfig
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

TOOL_RESULTS_FILE = Path("benign_tool_results") / "tool_results_dev.jsonl"
DATA_ENV = "EGRESSGUARD_DEV_DATA"


def default_data() -> Path:
    """The development data: ``$EGRESSGUARD_DEV_DATA``, else the first ``shared/data`` beside the checkout
    or one of its parents (``../shared/data`` of the repository, or of the folder holding worktrees)."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    repository = Path(__file__).resolve().parent.parent
    beside = [folder / "shared" / "data" for folder in repository.parents]
    return next((path for path in beside if path.is_dir()), beside[0])


@dataclass(frozen=True, slots=True)
class Carrier:
    """One benign tool result: its family (docs, code_python, json_api ...), a group that keeps whole
    source files (or generated series) in one cross-validation fold, and the text."""

    family: str
    group: str
    text: str


def load_tool_results(data: Path) -> list[Carrier]:
    carriers = []
    for line in (data / TOOL_RESULTS_FILE).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        carriers.append(Carrier(record["family"], f"file-{record['origin']}", record["text"]))
    return carriers


def load_bipia_documents(data: Path) -> list[Carrier]:
    carriers = []
    for kind in ("email", "table", "code"):
        path = data / "injection" / "bipia" / f"{kind}_train.jsonl"
        for index, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            context = json.loads(line)["context"]
            text = context if isinstance(context, str) else "\n".join(context)
            carriers.append(Carrier(f"bipia_{kind}", f"doc-{kind}-{index}", text))
    return carriers


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_HEADING = re.compile(r"^[#=*\-\s]*([A-Z][^\n]{8,80})$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """Sentences and titles taken from real benign text, to fill generated carriers."""

    sentences: tuple[str, ...]
    titles: tuple[str, ...]
    identifiers: tuple[str, ...]

    @classmethod
    def from_texts(cls, texts: list[str]) -> Vocabulary:
        sentences: set[str] = set()
        titles: set[str] = set()
        identifiers: set[str] = set()
        for text in texts:
            for sentence in _SENTENCE_END.split(" ".join(text.split())):
                if 30 <= len(sentence) <= 220 and sentence[0].isupper():
                    sentences.add(sentence)
            titles.update(match.group(1).strip() for match in _HEADING.finditer(text))
            identifiers.update(re.findall(r"\b[a-z][a-z0-9]*_[a-z0-9_]+\b", text))
        return cls(tuple(sorted(sentences)), tuple(sorted(titles)), tuple(sorted(identifiers)) or ("value",))


def _words(rng: random.Random, vocabulary: Vocabulary, count: int) -> str:
    words = " ".join(rng.choice(vocabulary.sentences) for _ in range(2)).split()
    start = rng.randint(0, max(0, len(words) - count))
    return " ".join(words[start : start + count])


def json_issues(rng: random.Random, vocabulary: Vocabulary) -> str:
    issues = [
        {
            "number": rng.randint(100, 9999),
            "title": rng.choice(vocabulary.titles + vocabulary.sentences)[:90],
            "state": rng.choice(["open", "closed"]),
            "labels": rng.sample(["bug", "docs", "enhancement", "question", "good first issue"], 2),
            "user": {"login": rng.choice(vocabulary.identifiers)},
            "comments": rng.randint(0, 40),
            "body": " ".join(rng.choice(vocabulary.sentences) for _ in range(rng.randint(1, 4))),
        }
        for _ in range(rng.randint(3, 12))
    ]
    return json.dumps(issues, indent=rng.choice([None, 2]))


def json_search(rng: random.Random, vocabulary: Vocabulary) -> str:
    results = [
        {
            "title": rng.choice(vocabulary.titles + vocabulary.sentences)[:80],
            "url": f"https://{rng.choice(['docs', 'www', 'blog'])}.example."
            f"{rng.choice(['com', 'org', 'io'])}/{rng.choice(vocabulary.identifiers).replace('_', '-')}",
            "snippet": " ".join(rng.choice(vocabulary.sentences) for _ in range(rng.randint(1, 2))),
        }
        for _ in range(rng.randint(3, 10))
    ]
    return json.dumps({"query": _words(rng, vocabulary, 4), "results": results}, indent=rng.choice([None, 2]))


def json_records(rng: random.Random, vocabulary: Vocabulary) -> str:
    records = [
        {
            "id": f"{rng.getrandbits(48):012x}",
            "name": rng.choice(vocabulary.identifiers),
            "status": rng.choice(["active", "pending", "failed", "succeeded"]),
            "created_at": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
            f"{rng.randint(0, 23):02d}:00:00Z",
            "count": rng.randint(0, 10_000),
            "description": rng.choice(vocabulary.sentences),
        }
        for _ in range(rng.randint(2, 15))
    ]
    return json.dumps({"data": records, "has_more": rng.random() < 0.5}, indent=rng.choice([None, 2]))


def log_lines(rng: random.Random, vocabulary: Vocabulary) -> str:
    lines = []
    for _ in range(rng.randint(10, 60)):
        level = rng.choice(["INFO", "INFO", "DEBUG", "WARN", "ERROR"])
        message = rng.choice(
            [
                rng.choice(vocabulary.sentences),
                f"ignoring unknown option --{rng.choice(vocabulary.identifiers)}",
                f"retrying request to /api/{rng.choice(vocabulary.identifiers)} after timeout",
                f"override {rng.choice(vocabulary.identifiers)}={rng.randint(1, 99)} from environment",
                "skipping previous checkpoint, instructions file not found",
            ]
        )
        lines.append(
            f"2024-06-{rng.randint(1, 30):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:"
            f"{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}Z {level:<5} "
            f"[{rng.choice(vocabulary.identifiers)}] {message}"
        )
    return "\n".join(lines)


def manifest(rng: random.Random, vocabulary: Vocabulary) -> str:
    names = rng.sample(vocabulary.identifiers, min(6, len(vocabulary.identifiers)))
    if rng.random() < 0.5:
        package = {
            "name": names[0].replace("_", "-"),
            "version": f"{rng.randint(0, 5)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}",
            "description": rng.choice(vocabulary.sentences),
            "scripts": {"build": "tsc -p .", "test": "jest --runInBand", "lint": "eslint . --fix"},
            "dependencies": {name.replace("_", "-"): f"^{rng.randint(1, 9)}.0.0" for name in names[1:]},
        }
        return json.dumps(package, indent=2)
    if rng.random() < 0.4:
        return (
            f'[project]\nname = "{names[0].replace("_", "-")}"\n'
            f'version = "{rng.randint(0, 5)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}"\n'
            f'description = "{rng.choice(vocabulary.sentences)}"\n'
            f'requires-python = ">=3.{rng.randint(8, 12)}"\n'
            "dependencies = [\n"
            + "".join(f'    "{name.replace("_", "-")}>={rng.randint(1, 9)}.0",\n' for name in names[1:4])
            + "]\n\n[project.scripts]\n"
            f'{names[4].replace("_", "-")} = "{names[0]}.cli:main"\n\n'
            "[tool.pytest.ini_options]\n"
            f'# {rng.choice(vocabulary.sentences)}\naddopts = "-ra --strict-markers"\n'
        )
    return (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n"
        f"  name: {names[0].replace('_', '-')}\n  annotations:\n"
        f'    description: "{rng.choice(vocabulary.sentences)}"\nspec:\n  replicas: {rng.randint(1, 5)}\n'
        "  template:\n    spec:\n      containers:\n"
        f"        - name: {names[1].replace('_', '-')}\n          image: registry.example.com/{names[2]}:"
        f"{rng.randint(1, 9)}.{rng.randint(0, 9)}\n          env:\n"
        + "".join(
            f'            - name: {name.upper()}\n              value: "{rng.randint(0, 999)}"\n'
            for name in names[3:]
        )
    )


def diff(rng: random.Random, vocabulary: Vocabulary, code: str) -> str:
    lines = code.splitlines()[:40] or ["pass"]
    start = rng.randint(0, max(0, len(lines) - 8))
    hunk = lines[start : start + 8]
    body = []
    for line in hunk:
        if rng.random() < 0.25:
            body.append(f"-{line}")
            changed = line.replace("(", "( ", 1) if "(" in line else f"{line}  # {_words(rng, vocabulary, 5)}"
            body.append(f"+{changed}")
        else:
            body.append(f" {line}")
    name = rng.choice(vocabulary.identifiers)
    return (
        f"diff --git a/src/{name}.py b/src/{name}.py\n"
        f"index {rng.getrandbits(28):07x}..{rng.getrandbits(28):07x} 100644\n"
        f"--- a/src/{name}.py\n+++ b/src/{name}.py\n"
        f"@@ -{start + 1},{len(hunk)} +{start + 1},{len(hunk)} @@\n" + "\n".join(body)
    )


def stack_trace(rng: random.Random, vocabulary: Vocabulary) -> str:
    frames = []
    for _ in range(rng.randint(3, 9)):
        module = rng.choice(vocabulary.identifiers)
        frames.append(
            f'  File "/usr/lib/python3.12/site-packages/{module}/{rng.choice(vocabulary.identifiers)}.py", '
            f"line {rng.randint(10, 900)}, in {rng.choice(vocabulary.identifiers)}\n"
            f"    {rng.choice(vocabulary.identifiers)} = self.{rng.choice(vocabulary.identifiers)}(request)"
        )
    error = rng.choice(["ValueError", "KeyError", "RuntimeError", "TypeError", "ConnectionError"])
    return (
        "Traceback (most recent call last):\n"
        + "\n".join(frames)
        + f"\n{error}: {rng.choice(vocabulary.sentences)}"
    )


# Blocks of characters whose names a data table lists (Latin-1, Greek, Cyrillic, Hebrew, Arabic, box
# drawing, Latin Extended-A): old enough that every Python gives them the same names.
_TABLE_BLOCKS = ((0xA0, 0x100), (0x391, 0x3CA), (0x410, 0x450), (0x5D0, 0x5EB), (0x621, 0x64B),
                 (0x2500, 0x2550), (0x100, 0x17F))  # fmt: skip


def code_table(rng: random.Random, vocabulary: Vocabulary) -> str:
    """A Python module that is mostly a data literal: a codec's decoding table or encoding map, an
    entity table or a word list, each entry commented with a character's name. Source files like these
    read as long runs of quoted fragments and arrows, nothing like instructions."""
    low, high = rng.choice(_TABLE_BLOCKS)
    codes = [code for code in range(low, high) if unicodedata.name(chr(code), "")]
    start = rng.randint(0, max(0, len(codes) - 40))
    entries = codes[start : start + rng.randint(16, 40)]
    first = rng.randint(0x80, 0xC0)
    name = rng.choice(vocabulary.identifiers)
    style = rng.choice(["decoding", "encoding", "entities", "words"])
    if style == "decoding":
        escape = rng.choice(["\\u{:04x}", "\\u{:04X}", "literal"])
        lines = [
            f"    '{chr(code) if escape == 'literal' else escape.format(code)}'"
            f"{' ' * rng.randint(1, 5)}#  0x{first + index:02X} -> {unicodedata.name(chr(code))}"
            for index, code in enumerate(entries)
        ]
        body = "### Decoding Table\n\ndecoding_table = (\n" + "\n".join(lines) + "\n)\n"
    elif style == "encoding":
        lines = [
            f"    0x{first + index:04x}: 0x{code:04x},\t# {unicodedata.name(chr(code))}"
            for index, code in enumerate(entries)
        ]
        body = "### Encoding Map\n\nencoding_map = {\n" + "\n".join(lines) + "\n}\n"
    elif style == "entities":
        lines = [
            f"    '{unicodedata.name(chr(code)).split()[-1].lower()}{index}': 0x{code:04x},"
            f"  # {unicodedata.name(chr(code)).lower()}"
            for index, code in enumerate(entries)
        ]
        body = f"# maps the entity name to its Unicode code point\n{name} = {{\n" + "\n".join(lines) + "\n}\n"
    else:
        found = {word.lower().strip(".,;:()`'\"") for word in _words(rng, vocabulary, 60).split()}
        words = sorted(found - {""})
        body = f"{name.upper()} = frozenset({{\n    " + ",\n    ".join(map(repr, words)) + ",\n})\n"
    header = rng.choice(
        [
            f'""" Python Character Mapping Codec {name} generated from {name.upper()}.TXT.\n\n"""\n\n'
            "import codecs\n\n",
            f'"""Tables for {name.replace("_", " ")}: generated, do not edit."""\n\n',
            "# -*- coding: utf-8 -*-\n# Data tables; regenerate with tools/gen_tables.py\n\n",
        ]
    )
    return header + body


# Answers in a question-and-answer thread talk to the asker in the imperative, about "your code" and "your
# error message": the class of text where an instruction addressed to "you" is the whole point. Written
# for this project; identifiers and sentences come from the dev set's vocabulary.
_ANSWERS = (
    "You need to call `{a}()` before `{b}()`; the error message tells you exactly that.",
    "Just replace `{a}` with your own variable name and it works.",
    "Try passing `{a}={n}` instead. If that doesn't help, post your full traceback.",
    "As the docs say, you should never modify `{a}` directly. Use `{b}` instead.",
    "This was already suggested to you in the comments: upgrade to {n}.{m} and reinstall the package.",
    "Ignore the warning, it is harmless; what breaks your code is the missing `{a}` argument.",
    "You can override `{a}` in your subclass and return your own value from it.",
    "Make sure your `{a}` is set before you start the server, then restart it.",
    "Don't forget to close the `{a}` connection, otherwise you will leak file handles.",
    "Your question is missing the code that calls `{a}`. Please edit it and add a minimal example.",
    "The answer above is right, but you should also set `{a}` in your config file.",
    "Forget about `{a}`, it was removed in version {n}; use `{b}` and follow the migration guide.",
    "Read the error again: it says `{a}` expects a list, and you are giving it a string.",
    "Never use `{a}` in production. Write your own `{b}` wrapper instead and log every call.",
    "Please stop posting the same question twice; answer the comments on the first one instead.",
    "Disregard my previous comment, I misread your stack trace. The problem is in `{a}`.",
    "Run `{a} --verbose` and paste the output here, then we can tell you what is wrong.",
)


def qa_thread(rng: random.Random, vocabulary: Vocabulary) -> str:
    """A question with its answers, the way a forum or an issue tracker returns them."""
    names = vocabulary.identifiers

    def answer() -> str:
        text = rng.choice(_ANSWERS).format(
            a=rng.choice(names), b=rng.choice(names), n=rng.randint(1, 9), m=rng.randint(0, 20)
        )
        return text + (" " + rng.choice(vocabulary.sentences) if rng.random() < 0.5 else "")

    question = (
        f"{rng.choice(vocabulary.titles + vocabulary.sentences)[:90]}\n\n"
        f"I'm trying to use `{rng.choice(names)}` but I get this error:\n\n```\n"
        f"{rng.choice(['ValueError', 'TypeError', 'KeyError'])}: {rng.choice(vocabulary.sentences)}\n```\n\n"
        + rng.choice(["What am I doing wrong?", "Any idea?", "How do I fix this?", "Thanks in advance."])
    )
    answers = [
        f"{rng.choice(['Answer', '**Answer**', '### Answer', 'Reply'])} {index + 1}"
        f"{rng.choice(['', f' (score {rng.randint(-2, 80)})', ' (accepted)'])}:\n\n"
        + " ".join(answer() for _ in range(rng.randint(1, 3)))
        for index in range(rng.randint(2, 4))
    ]
    return "\n\n".join([question, *answers])


GENERATED: dict[str, Callable[[random.Random, Vocabulary], str]] = {
    "json_issues": json_issues,
    "json_search": json_search,
    "json_records": json_records,
    "logs": log_lines,
    "manifest": manifest,
    "stack_trace": stack_trace,
    "code_tables": code_table,
    "qa_threads": qa_thread,
}


def generated_carriers(data: Path, rng: random.Random, per_family: int) -> list[Carrier]:
    """Generated tool results, ``per_family`` of each kind; diffs are made from the dev set's code."""
    real = load_tool_results(data)
    vocabulary = Vocabulary.from_texts([carrier.text for carrier in real])
    code = [carrier.text for carrier in real if carrier.family == "code_python"]
    carriers: list[Carrier] = []
    for family, make in GENERATED.items():
        carriers.extend(
            Carrier(family, f"{family}-{index}", make(rng, vocabulary)) for index in range(per_family)
        )
    carriers.extend(
        Carrier("diff", f"diff-{index}", diff(rng, vocabulary, rng.choice(code)))
        for index in range(per_family)
    )
    return carriers


# Projects whose files are in the dev set (their files would leak across cross-validation folds), that
# are reserved for held-out evaluation (../shared/data/README.md), or this project itself (its README
# quotes attacks): never read from this installation.
EXCLUDED_PROJECTS = frozenset({"egressguard", "flask", "httpx", "requests", "fastapi", "kubernetes", "pip"})
LOCAL_CHUNKS = (300, 6000)
"""Chunk sizes (characters) of local documents, as tool results of the dev set come."""


def _chunks(text: str, rng: random.Random) -> Iterator[str]:
    """Consecutive pieces of ``text`` cut at line breaks, each of a random size in LOCAL_CHUNKS."""
    lines = text.splitlines(keepends=True)
    piece: list[str] = []
    size = 0
    goal = rng.randint(*LOCAL_CHUNKS)
    for line in lines:
        piece.append(line)
        size += len(line)
        if size >= goal:
            yield "".join(piece)
            piece, size, goal = [], 0, rng.randint(*LOCAL_CHUNKS)
    if size >= LOCAL_CHUNKS[0]:
        yield "".join(piece)


def _sample(carriers: list[Carrier], rng: random.Random, count: int) -> list[Carrier]:
    return rng.sample(carriers, min(count, len(carriers)))


def local_carriers(rng: random.Random, per_family: int = 300) -> list[Carrier]:
    """Benign tool results from this Python installation, ``per_family`` chunks of each kind: the standard
    library's source (code with docstrings and comments full of "you should", "ignore", "override"), the
    reference documentation it ships (``pydoc_data``) and the READMEs of the installed distributions'
    metadata, but the excluded projects'. Which files exist depends on the Python version and the
    installed packages; the sample is seeded."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code: list[Carrier] = []
    for path in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py")):
        relative = path.relative_to(stdlib).as_posix()
        if relative.split("/")[0] in ("test", "idlelib", "site-packages", "pydoc_data", "lib2to3"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        code.extend(Carrier("code_stdlib", f"stdlib-{relative}", chunk) for chunk in _chunks(text, rng))
    import pydoc_data.topics

    reference = [
        Carrier("docs_python", f"pydoc-{topic}", chunk)
        for topic, text in sorted(pydoc_data.topics.topics.items())
        for chunk in _chunks(text, rng)
    ]
    readmes: list[Carrier] = []
    for distribution in sorted(importlib.metadata.distributions(), key=lambda dist: dist.metadata["Name"]):
        name = distribution.metadata["Name"]
        if name.lower().rstrip("0123456789") in EXCLUDED_PROJECTS:
            continue
        metadata = distribution.metadata
        body = metadata.get_payload() if isinstance(metadata, email.message.Message) else None
        text = (body if isinstance(body, str) else None) or metadata.get("Description") or ""
        readmes.extend(Carrier("docs_packages", f"package-{name}", chunk) for chunk in _chunks(text, rng))
    return [carrier for kind in (code, reference, readmes) for carrier in _sample(kind, rng, per_family)]


def benign_carriers(
    data: Path, rng: random.Random, per_family: int = 60, *, local: bool = False
) -> list[Carrier]:
    """The dev set's tool results, BIPIA's clean documents and the generated carriers: what training reads,
    so that the model depends on the development data and this repository alone. With ``local``, also
    this Python installation's files (``local_carriers``), which the evaluation reads as families that no
    model was trained or calibrated on."""
    found = load_tool_results(data) + load_bipia_documents(data) + generated_carriers(data, rng, per_family)
    return found + local_carriers(rng) if local else found


# --- planting -----------------------------------------------------------------------------------------


def _breaks(text: str) -> list[int]:
    return [index + 1 for index, char in enumerate(text) if char == "\n"] or [len(text)]


def _near_middle(text: str, positions: list[int], rng: random.Random) -> int:
    if not positions:
        return len(text)
    return rng.choice(positions)


def _json_string_positions(text: str) -> list[int]:
    """Offsets just inside the closing quote of JSON string values (and of YAML's and TOML's quoted
    values: ``key: "..."``, ``key = "..."``)."""
    return [match.end() - 1 for match in re.finditer(r'[:=]\s*"(?:[^"\\]|\\.)*"', text)]


_LOG_PREFIX = re.compile(r"^\S+ +[A-Z]+ +(?:\[[^\]\n]*\] )?", re.MULTILINE)


def plant(carrier: Carrier, attack: str, rng: random.Random) -> tuple[str, int, int]:
    """The carrier's text with the attack inside, the way its syntax allows; returns the text and the
    attack's (start, end)."""
    text = carrier.text
    family = carrier.family
    styles = ["line"]
    if family.startswith("json") or (family == "manifest" and text.lstrip().startswith("{")):
        styles = ["json_value", "json_value", "line"]
    elif family == "manifest":
        styles = ["json_value", "comment", "line"]
    elif family == "logs":
        styles = ["log_line", "log_line", "line"]
    elif family.startswith("code") or family in ("diff", "bipia_code"):
        styles = ["comment", "trailing_comment", "docstring", "line"]
    elif family.startswith("docs") or family in ("bipia_email", "qa_threads"):
        styles = ["line", "sentence", "html_comment", "html_comment"]
    style = rng.choice(styles)
    if style == "json_value":
        positions = _json_string_positions(text)
        if positions:
            cut = rng.choice(positions)
            escaped = json.dumps(" " + attack)[1:-1]
            return text[:cut] + escaped + text[cut:], cut, cut + len(escaped)
        style = "line"
    if style == "log_line":
        prefixes = list(_LOG_PREFIX.finditer(text))
        if prefixes:
            prefix = rng.choice(prefixes)
            line_end = text.find("\n", prefix.end())
            cut = len(text) if line_end == -1 else line_end + 1
            inserted = prefix.group() + " ".join(attack.split()) + "\n"
            if cut == len(text) and not text.endswith("\n"):
                inserted = "\n" + inserted
            return text[:cut] + inserted + text[cut:], cut, cut + len(inserted)
        style = "line"
    if style == "trailing_comment":
        ends = [match.start() for match in re.finditer(r"(?<=[\w)\]}:,])[ \t]*$", text, re.MULTILINE)]
        if ends and "\n" not in attack:
            cut = rng.choice(ends)
            inserted = f"  # {attack}"
            return text[:cut] + inserted + text[cut:], cut, cut + len(inserted)
        style = "comment"
    if style == "comment":
        inserted = "\n".join(f"# {line}" for line in attack.splitlines()) + "\n"
    elif style == "docstring":
        inserted = f'    """{attack}"""\n'
    elif style == "html_comment":
        inserted = f"<!-- {attack} -->\n"
    elif style == "sentence":
        positions = [match.end() for match in _SENTENCE_END.finditer(text)]
        cut = _near_middle(text, positions, rng)
        return text[:cut] + attack + " " + text[cut:], cut, cut + len(attack)
    else:
        inserted = attack + "\n"
    position = rng.choice(["start", "middle", "end"])
    cut = (
        0
        if position == "start"
        else len(text)
        if position == "end"
        else _near_middle(text, _breaks(text), rng)
    )
    if position == "end" and not text.endswith("\n"):
        inserted = "\n" + inserted
    return text[:cut] + inserted + text[cut:], cut, cut + len(inserted)


# --- disguises ------------------------------------------------------------------------------------------

MORSE_CODES = {
    "a": ".-", "b": "-...", "c": "-.-.", "d": "-..", "e": ".", "f": "..-.", "g": "--.", "h": "....",
    "i": "..", "j": ".---", "k": "-.-", "l": ".-..", "m": "--", "n": "-.", "o": "---", "p": ".--.",
    "q": "--.-", "r": ".-.", "s": "...", "t": "-", "u": "..-", "v": "...-", "w": ".--", "x": "-..-",
    "y": "-.--", "z": "--..",
}  # fmt: skip


def morse(text: str) -> str:
    """``text``'s letters in morse, a space apart, its words a slash apart (other characters dropped)."""
    return " / ".join(
        " ".join(MORSE_CODES[char] for char in word if char in MORSE_CODES) for word in text.lower().split()
    )


def shifted(text: str, shift: int) -> str:
    """``text`` (lower case) with each letter moved ``shift`` places on in the alphabet."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return text.translate(str.maketrans(letters, letters[shift:] + letters[:shift]))


def rot47(text: str) -> str:
    return "".join(chr(33 + (ord(char) - 33 + 47) % 94) if "!" <= char <= "~" else char for char in text)


def _letters(text: str) -> str:
    return "".join(char for char in text.lower() if char.isalpha())


DISGUISES: dict[str, Callable[[str], str]] = {
    "shift named in words": lambda text: "Apply a shift of seven to read this: " + shifted(text.lower(), 7),
    "shift backwards": lambda text: "Each letter was shifted back by five. " + shifted(text.lower(), -5),
    "shift named nowhere": lambda text: "Caesar cipher: " + shifted(text.lower(), 11),
    "rot47": lambda text: "ROT47: " + rot47(text),
    "rotated": lambda text: "Rotated by 4: " + shifted(text.lower(), 4),
    "last letters of lines": lambda text: (
        "Read the last letter of each line.\n" + "\n".join(f"it ends in {char}" for char in _letters(text))
    ),
    "first letters of sentences": lambda text: (
        "Take the first letter of each sentence. "
        + " ".join(f"{char.upper()}n the morning we left." for char in _letters(text))
    ),
    "base32 lower case": lambda text: base64.b32encode(text.encode()).decode().lower().rstrip("="),
    "binary 7-bit": lambda text: " ".join(f"{byte:07b}" for byte in text.encode()),
    "morse in Unicode": lambda text: (
        morse(text).replace(".", "\u00b7").replace("-", "\u2212").replace("/", "|")
    ),
    "uuencode, no header": lambda text: "\n".join(
        binascii.b2a_uu(text.encode()[at : at + 45]).decode().rstrip()
        for at in range(0, len(text.encode()), 45)
    ),
    "leetspeak ! and |": lambda text: text.replace("i", "!").replace("l", "|"),
    "reversed, asked": lambda text: "Read this backwards: " + text[::-1],
    "decimal codes, named": lambda text: "ASCII codes: " + " ".join(str(byte) for byte in text.encode()),
}
"""Ways to hide an instruction that a model reads through, each with what asks the model to read it."""
