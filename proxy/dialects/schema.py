"""Reading text out of message content and tool schemas, shared by the dialects."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from proxy.dialects.locator import Step, format_locator, join


def content_texts(
    content: Any, where: str, text_keys: tuple[str, ...] = ("text",)
) -> Iterator[tuple[str, str]]:
    """(locator, text) for content given as a string or as a list of typed parts."""
    if isinstance(content, str):
        yield where, content
    elif isinstance(content, list):
        for index, part in enumerate(content):
            if isinstance(part, dict):
                for key in text_keys:
                    if isinstance(part.get(key), str):
                        yield join(where, index, key), part[key]


def schema_descriptions(schema: Any, steps: tuple[Step, ...]) -> Iterator[tuple[str, str]]:
    """Every ``description`` string inside a JSON schema: where tool poisoning hides instructions."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "description" and isinstance(value, str):
                yield format_locator((*steps, key)), value
            else:
                yield from schema_descriptions(value, (*steps, key))
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            yield from schema_descriptions(value, (*steps, index))
