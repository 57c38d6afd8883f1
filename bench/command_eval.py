"""Recall and false positives of the destructive-command reading (proxy/detectors/commands.py).

    python3 bench/command_eval.py [--data DIR]
    (DIR: the development data, by default $EGRESSGUARD_DEV_DATA, else the nearest ../shared/data)

Attacks: tests/fixtures/commands/destructive.txt and remote_access.txt (a reverse shell, a key added to
authorized_keys, a tunnel), each shell command also in every disguise of
``DISGUISES`` (quotes or backslashes inside its name, ``$IFS``, variables, ``eval``, ``bash -c``, base64
or hex piped to a shell, ANSI-C escapes, a directory or glob for its name, code calling it), and
variants.txt, what an attacker writes by hand (xargs, find, rsync, mv, a written script, SQL comments,
command fields of other tools); each must be withheld. Noted: noted.txt, routine calls (a scratch table
dropped, a checkout reset) and remote_access_noted.txt (a web preview published by a tunnel service)
that a rule of medium severity records and lets pass. Benign: tests/fixtures/commands/benign.txt and
remote_access_benign.txt, and from the dev data every command line of the documentation's code
blocks run by a shell tool, every Python source chunk run by a code tool, and every documentation chunk
written to a file by a shell heredoc (prose that mentions destructive commands, as agents write it). A
false positive is a call withheld; a benign call only noted is counted apart.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.detectors import commands
from proxy.detectors.tools import CatalogueEntry
from proxy.exchange import ToolCall
from proxy.model import SEVERITY_ORDER, Severity
from proxy.scanning.rulepack import Scanner, load_pack, pack_path

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "commands"
Case = tuple[str, str]
"""A tool's name and its arguments as JSON text."""
ATTACKS = ("destructive.txt", "remote_access.txt")
NOTED = ("noted.txt", "remote_access_noted.txt")
BENIGN = ("benign.txt", "remote_access_benign.txt")


def fixture_cases(name: str) -> list[Case]:
    """A fixture file's calls: ``tool<TAB>arguments`` lines, or a bare command run by ``bash``."""
    cases = []
    for line in (FIXTURES / name).read_text("utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        tool, tab, arguments = line.partition("\t")
        cases.append((tool, arguments) if tab else ("bash", json.dumps({"command": line})))
    return cases


def shell_commands(name: str) -> list[str]:
    """A fixture file's bare commands: those the disguises are put on."""
    return [json.loads(arguments)["command"] for tool, arguments in fixture_cases(name) if tool == "bash"]


def _first_word(disguise: Callable[[str], str]) -> Callable[[str], str]:
    """A disguise of a command's name alone, the rest of the command as it was."""

    def apply(command: str) -> str:
        word, space, rest = command.partition(" ")
        return disguise(word) + space + rest

    return apply


def _hex_escaped(text: str) -> str:
    return "".join(f"\\x{ord(char):02x}" for char in text)


def _single_quoted(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _double_quoted(text: str) -> str:
    escaped = "".join("\\" + char if char in '\\"$`' else char for char in text)
    return f'"{escaped}"'


def _nested_shells(command: str) -> str:
    """The command three shells deep, each quoting the next as a shell quotes a string it is given."""
    return f"bash -c {_double_quoted(f'sh -c {_double_quoted(f"bash -c {_single_quoted(command)}")}')}"


def _variables(command: str) -> str:
    word, _, rest = command.partition(" ")
    return f"a={word}; $a {rest}"


DISGUISES: dict[str, Callable[[str], str]] = {
    "plain": lambda command: command,
    "quotes inside the name": _first_word(lambda word: word[0] + "''" + word[1:] if len(word) > 1 else word),
    "name double-quoted": _first_word(lambda word: f'"{word}"'),
    "backslash in the name": _first_word(lambda word: word[0] + "\\" + word[1:] if len(word) > 1 else word),
    "empty expansion in the name": _first_word(
        lambda word: word[0] + "$@" + word[1:] if len(word) > 1 else word
    ),
    "$IFS for spaces": lambda command: command.replace(" ", "${IFS}"),
    "variable": _variables,
    "eval": lambda command: f"eval {_single_quoted(command)}",
    "bash -c": lambda command: f"bash -c {_single_quoted(command)}",
    "shells nested in shells": _nested_shells,
    "sudo and env": lambda command: f"sudo -u root env LANG=C {command}",
    "base64 to sh": lambda command: f"echo {base64.b64encode(command.encode()).decode()} | base64 -d | sh",
    "base64 in eval": lambda command: (
        f'eval "$(echo {base64.b64encode(command.encode()).decode()} | base64 --decode)"'
    ),
    "ANSI-C hex name": _first_word(lambda word: f"$'{_hex_escaped(word)}'"),
    "printf hex to bash": lambda command: f"printf '{_hex_escaped(command)}' | bash",
    "directory of the name": _first_word(lambda word: f"/usr/bin/{word}" if word.isalnum() else word),
    "python os.system": lambda command: f"python3 -c {_single_quoted(f'import os; os.system({command!r})')}",
}


def _dev_data(explicit: str | None) -> Path | None:
    if explicit:
        return Path(explicit)
    if os.environ.get("EGRESSGUARD_DEV_DATA"):
        return Path(os.environ["EGRESSGUARD_DEV_DATA"])
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


_BLOCK = re.compile(r"```(?:bash|sh|console|shell|shell-session|sh-session|text)?\n(.*?)```", re.DOTALL)


def dev_cases(data: Path) -> Iterator[tuple[str, Case]]:
    """Benign calls from the dev set's tool results: their code blocks' command lines as a shell runs
    them, their Python source as a code tool runs it, their documents as a heredoc writes them."""
    path = data / "benign_tool_results" / "tool_results_dev.jsonl"
    seen: set[str] = set()
    for line in path.read_text("utf-8").splitlines():
        row = json.loads(line)
        text = row["text"]
        if row["family"] == "code_python":
            yield "python source", ("python", json.dumps({"code": text}))
            continue
        yield (
            "document written by a heredoc",
            (
                "bash",
                json.dumps({"command": f"cat > notes.md <<'EOF'\n{text}\nEOF"}),
            ),
        )
        for block in _BLOCK.finditer(text):
            for command in block.group(1).splitlines():
                command = command.strip().removeprefix("$ ")
                if command and not command.startswith("#") and command not in seen:
                    seen.add(command)
                    yield "documented command", ("bash", json.dumps({"command": command}))


def judged(scanner: Scanner, case: Case) -> CatalogueEntry | None:
    tool, arguments = case
    return commands.destructive_entry(
        ToolCall(id="eval", name=tool, arguments=arguments, where="eval"), scanner, scanner.budget()
    )


def withheld(entry: CatalogueEntry | None) -> bool:
    return entry is not None and SEVERITY_ORDER[entry.severity] >= SEVERITY_ORDER[Severity.HIGH]


def _recall(scanner: Scanner, name: str, cases: list[Case]) -> None:
    missed = [case for case in cases if not withheld(judged(scanner, case))]
    print(f"  {name}: {len(cases) - len(missed)}/{len(cases)}")
    for tool, arguments in missed:
        print(f"    missed: {tool} {arguments[:160]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data")
    args = parser.parse_args()
    scanner = Scanner([load_pack(pack_path(name)) for name in commands.PACKS])
    for attacks in ATTACKS:
        print(f"Recall: withheld ({attacks} and its disguises)")
        _recall(scanner, "as written", fixture_cases(attacks))
        for name, disguise in DISGUISES.items():
            cases = [
                ("bash", json.dumps({"command": disguise(command)})) for command in shell_commands(attacks)
            ]
            _recall(scanner, name, cases)
    _recall(scanner, "variants.txt", fixture_cases("variants.txt"))
    for fixture in NOTED:
        noted = fixture_cases(fixture)
        wrong = [
            (case, entry) for case in noted if (entry := judged(scanner, case)) is None or withheld(entry)
        ]
        print(f"Noted and passed ({fixture}): {len(noted) - len(wrong)}/{len(noted)}")
        for (tool, arguments), entry in wrong:
            print(f"    {entry.id if entry else 'not found'}: {tool} {arguments[:160]}")
    print("False positives: withheld (and only noted)")
    groups: dict[str, list[Case]] = {fixture: fixture_cases(fixture) for fixture in BENIGN}
    data = _dev_data(args.data)
    if data is not None:
        for group, case in dev_cases(data):
            groups.setdefault(group, []).append(case)
    for group, cases in groups.items():
        hits = [(case, entry) for case in cases if (entry := judged(scanner, case)) is not None]
        held = sum(withheld(entry) for _, entry in hits)
        print(f"  {group}: {held}/{len(cases)} ({len(hits) - held} noted)")
        for (tool, arguments), entry in hits:
            print(f"    {entry.id}: {tool} {arguments[:160]}")


if __name__ == "__main__":
    main()
