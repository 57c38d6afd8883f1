"""Captured API exchanges under tests/fixtures/dialects, read by name."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "dialects"


def fixture(file_name: str) -> bytes:
    return (FIXTURES / file_name).read_bytes()


def request_fixture(name: str) -> bytes:
    return fixture(f"{name}_request.json")


def response_fixture(name: str) -> bytes:
    return fixture(f"{name}_response.json")


def stream_fixture(name: str) -> bytes:
    return fixture(f"{name}_stream.sse")
