import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.state.wal_index import HEADER_BYTES, WalIndexHeader


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Path]:
    """A database in WAL mode with one connection open (as a store holds it) and one row."""
    path = tmp_path / "state.sqlite3"
    held = sqlite3.connect(path, isolation_level=None)
    held.execute("PRAGMA journal_mode=WAL")
    held.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT)")
    held.execute("INSERT INTO kv VALUES ('a', '1')")
    yield path
    held.close()


def test_every_commit_of_any_connection_changes_the_header_and_reads_do_not(database: Path) -> None:
    """The header is what it was exactly while nothing was committed, whoever commits and whatever."""
    header = WalIndexHeader.open(database)
    assert header is not None
    writers = [sqlite3.connect(database, isolation_level=None) for _ in range(2)]
    seen = [header.read()]
    for number, writer in enumerate(writers):
        key = f"b{number}"
        for statement, parameters in (
            ("INSERT INTO kv VALUES (?, '2')", (key,)),
            ("UPDATE kv SET value = ? WHERE key = 'a'", (key,)),
            ("DELETE FROM kv WHERE key = ?", (key,)),
            ("PRAGMA wal_checkpoint(TRUNCATE)", ()),  # the next commit starts the log over
            ("INSERT INTO kv VALUES (?, '4')", (key,)),
        ):
            before = header.read()
            for _ in range(3):
                writer.execute("SELECT * FROM kv").fetchall()
                assert header.read() == before
            writer.execute(statement, parameters)
            if not statement.startswith("PRAGMA"):
                assert header.read() not in seen, statement
            seen.append(header.read())
            assert WalIndexHeader.settled(header.read())
    for writer in writers:
        writer.close()
    header.release()


def test_a_header_read_between_its_two_copies_is_not_settled() -> None:
    """A writer writes the two copies one after the other: a read between them sees them differ."""
    copy = bytes(range(HEADER_BYTES // 2))
    assert WalIndexHeader.settled(copy + copy)
    assert not WalIndexHeader.settled(copy + bytes(reversed(copy)))


def test_users_in_one_process_share_the_mapping_until_the_last_lets_it_go(database: Path) -> None:
    """Two stores of one process on one file read one mapping; the first to close leaves the other
    reading, releasing twice is harmless, and the file is mapped again for a later user."""
    first, second = WalIndexHeader.open(database), WalIndexHeader.open(database)
    assert first is not None and second is not None
    first.release()
    first.release()
    writer = sqlite3.connect(database, isolation_level=None)
    before = second.read()
    writer.execute("INSERT INTO kv VALUES ('b', '2')")
    assert second.read() != before
    second.release()
    again = WalIndexHeader.open(database)
    assert again is not None and again.read() == second_header(database)
    again.release()
    writer.close()


def second_header(database: Path) -> bytes:
    """The header as a mapping opened now reads it."""
    header = WalIndexHeader.open(database)
    assert header is not None
    try:
        return header.read()
    finally:
        header.release()


def test_no_index_no_header(tmp_path: Path) -> None:
    """A database not in WAL mode has no index to map: the caller asks SQLite instead."""
    path = tmp_path / "plain.sqlite3"
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("CREATE TABLE t (a)")
    assert WalIndexHeader.open(path) is None
    connection.close()
