"""A small schema checker for YAML that reports every problem with the line it is on.

PyYAML's composer keeps a start mark on every node; checking the node tree (rather than the loaded
Python values) is what lets ``egressguard check`` say ``policy.yaml:12: unknown key 'alow'``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_VARIABLE_NAME = re.compile(r"[A-Z_][A-Z0-9]{0,12}(?:_[A-Z0-9]{1,12})*_?")
"""An environment variable's name as people write them: upper-case words joined by ``_``. A random
secret is mixed case, lower case or longer in a stretch; such a value is never repeated in a problem."""


def unset_variable(key: str, variable: object) -> str:
    """Why ``key`` (a ``*_env`` setting) yields no value. The secret pasted where its variable's name
    belongs is a common slip, and problems are printed, logged, audited and answered to the admin API:
    only a value that reads as a variable's name is quoted."""
    if _VARIABLE_NAME.fullmatch(str(variable)):
        return f"environment variable {variable} is not set or empty"
    return (
        f"{key} names no environment variable that is set; what it holds is not repeated here, as it "
        "does not read as a variable's name (upper-case words joined by _) and may be the secret itself"
    )


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class SchemaError(Exception):
    """Every problem found in one document, each with its file and line."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems = problems


@dataclass
class Checker:
    """Collects problems while a spec walks a node tree."""

    path: str
    problems: list[Problem] = field(default_factory=list)

    def report(self, node: yaml.Node, message: str) -> None:
        self.problems.append(Problem(self.path, node.start_mark.line + 1, message))


def _construct(node: yaml.Node) -> Any:
    """The plain value of a scalar node, with YAML's usual typing (``8080`` is an int, ``yes`` a string)."""
    return yaml.SafeLoader("").construct_object(node, deep=True)


class Spec:
    """Checks one node and returns its plain Python value (None when the node is wrong)."""

    description = "a value"

    def check(self, node: yaml.Node, checker: Checker, where: str) -> Any:
        raise NotImplementedError


class Scalar(Spec):
    def __init__(self, kind: type, description: str) -> None:
        self.kind = kind
        self.description = description

    def check(self, node: yaml.Node, checker: Checker, where: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            checker.report(node, f"{where} must be {self.description}")
            return None
        value = _construct(node)
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.kind is str and isinstance(value, int | float) and not isinstance(value, bool):
            value = node.value
        if not isinstance(value, self.kind) or (self.kind is int and isinstance(value, bool)):
            checker.report(node, f"{where} must be {self.description}, not {node.value!r}")
            return None
        return value


STRING = Scalar(str, "a string")
INTEGER = Scalar(int, "an integer")
NUMBER = Scalar(float, "a number")
BOOLEAN = Scalar(bool, "true or false")


class IntegerBetween(Spec):
    """An integer no smaller than ``minimum`` (and no larger than ``maximum`` when given): a value that
    cannot mean what it says is an error on its line, never replaced by a default."""

    def __init__(self, minimum: int, maximum: int | None = None) -> None:
        self.minimum, self.maximum = minimum, maximum
        if maximum == minimum:
            self.description = str(minimum)
        elif maximum is None:
            self.description = f"an integer of at least {minimum}"
        else:
            self.description = f"an integer from {minimum} to {maximum}"

    def check(self, node: yaml.Node, checker: Checker, where: str) -> Any:
        value = INTEGER.check(node, checker, where)
        if value is None:
            return None
        if value < self.minimum or (self.maximum is not None and value > self.maximum):
            checker.report(node, f"{where} must be {self.description}, not {node.value!r}")
            return None
        return value


POSITIVE_INTEGER = IntegerBetween(1)


class Anything(Spec):
    """A section checked elsewhere (by its own loader): its plain value, unchecked here."""

    description = "any value"

    def check(self, node: yaml.Node, checker: Checker, where: str) -> Any:
        return _construct(node)


ANYTHING = Anything()


class LocatedMapping(dict[str, Any]):
    """A YAML mapping that remembers its line and the line of each key, for the messages of loaders
    that check a section themselves (alert rules)."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[str, int] = {}


class LineLoader(yaml.SafeLoader):
    """A safe loader whose mappings are ``LocatedMapping``s."""


def _construct_located(loader: yaml.SafeLoader, node: yaml.MappingNode) -> LocatedMapping:
    loader.flatten_mapping(node)
    mapping = LocatedMapping(node.start_mark.line + 1)
    for key_node, value_node in node.value:
        key = str(loader.construct_object(key_node, deep=True))
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = key_node.start_mark.line + 1
    return mapping


LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_located)


class AnythingWithLines(Anything):
    """A section checked by its own loader, its mappings knowing their lines."""

    def check(self, node: yaml.Node, checker: Checker, where: str) -> Any:
        return LineLoader("").construct_object(node, deep=True)


ANYTHING_WITH_LINES = AnythingWithLines()


class OneOf(Spec):
    def __init__(self, *choices: str) -> None:
        self.choices = choices
        self.description = " or ".join(repr(choice) for choice in choices)

    def check(self, node: yaml.Node, checker: Checker, where: str) -> Any:
        value = STRING.check(node, checker, where)
        if value is not None and value not in self.choices:
            checker.report(node, f"{where} must be {self.description}, not {value!r}")
            return None
        return value


class Custom(Spec):
    """A scalar string turned into a value by ``parse``; a ValueError becomes a problem on that line."""

    def __init__(self, parse: Callable[[str], Any], description: str) -> None:
        self.parse = parse
        self.description = description

    def check(self, node: yaml.Node, checker: Checker, where: str) -> Any:
        text = STRING.check(node, checker, where)
        if text is None:
            return None
        try:
            return self.parse(text)
        except ValueError as error:
            checker.report(node, f"{where}: {error}")
            return None


class ListOf(Spec):
    def __init__(self, item: Spec) -> None:
        self.item = item
        self.description = f"a list of {item.description}s"

    def check(self, node: yaml.Node, checker: Checker, where: str) -> Any:
        if not isinstance(node, yaml.SequenceNode):
            checker.report(node, f"{where} must be {self.description}")
            return None
        return [
            self.item.check(child, checker, f"{where}[{index}]") for index, child in enumerate(node.value)
        ]


def _mapping_pairs(node: yaml.Node, checker: Checker, where: str) -> list[tuple[str, yaml.Node]] | None:
    if not isinstance(node, yaml.MappingNode):
        if not (isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"):
            checker.report(node, f"{where} must be a mapping")
            return None
        return []
    pairs: list[tuple[str, yaml.Node]] = []
    seen: set[str] = set()
    for key_node, value_node in node.value:
        key = str(key_node.value)
        if key in seen:
            checker.report(key_node, f"duplicate key {key!r} in {where}")
        seen.add(key)
        pairs.append((key, value_node))
    return pairs


class Record(Spec):
    """A mapping with known keys; unknown keys are problems, missing keys take their defaults."""

    description = "a mapping"

    def __init__(self, fields: Mapping[str, Spec], *, required: tuple[str, ...] = ()) -> None:
        self.fields = dict(fields)
        self.required = required

    def check(self, node: yaml.Node, checker: Checker, where: str) -> Any:
        pairs = _mapping_pairs(node, checker, where)
        if pairs is None:
            return None
        values: dict[str, Any] = {}
        for key, value_node in pairs:
            spec = self.fields.get(key)
            if spec is None:
                known = ", ".join(sorted(self.fields))
                checker.report(value_node, f"unknown key {key!r} in {where} (known: {known})")
                continue
            values[key] = spec.check(value_node, checker, f"{where}.{key}" if where else key)
        for key in self.required:
            if key not in values:
                checker.report(node, f"{where or 'the document'} needs {key!r}")
        values["__line__"] = node.start_mark.line + 1
        return values


class MapOf(Spec):
    """A mapping from free names (agents, roles) to values of one spec."""

    def __init__(self, value: Spec) -> None:
        self.value = value
        self.description = "a mapping"

    def check(self, node: yaml.Node, checker: Checker, where: str) -> Any:
        pairs = _mapping_pairs(node, checker, where)
        if pairs is None:
            return None
        return {key: self.value.check(value_node, checker, f"{where}.{key}") for key, value_node in pairs}


def check_document(text: str, path: str, spec: Spec) -> tuple[dict[str, Any], list[Problem]]:
    """Parse and check ``text``: its value (None where a node was wrong) and every problem found, so a
    caller can add its own cross-checks and report everything at once."""
    checker = Checker(path)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else 1
        return {}, [Problem(path, line, f"not valid YAML: {error.problem}")]
    if node is None:
        return {}, []
    value = spec.check(node, checker, "")
    return (value if isinstance(value, dict) else {}), checker.problems


def load_document(text: str, path: str, spec: Spec) -> dict[str, Any]:
    """Parse and check ``text``; raises SchemaError with every problem found."""
    value, problems = check_document(text, path, spec)
    if problems:
        raise SchemaError(problems)
    return value


def load_file(path: Path, spec: Spec) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SchemaError([Problem(str(path), 0, f"cannot read: {error}")]) from None
    return load_document(text, str(path), spec)
