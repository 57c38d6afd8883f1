"""Several audit writers (workers) under one audit directory: verified together, reported per writer, and
a writer whose tail was cut is caught by the head it published to the state store."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from proxy.audit.heads import WRITER_ID_FILE, publish_head, writer_id
from proxy.audit.keys import PRIVATE_KEY_NAME, PUBLIC_KEY_NAME
from proxy.audit.log import AuditLog, daily_files
from proxy.commands.cli import main
from proxy.state.sqlite_shared import SharedSqliteStateStore

START = datetime(2026, 3, 10, 5, 0, tzinfo=UTC)


def write_writer(audit: Path, writer: str, turns: int, store: SharedSqliteStateStore | None = None) -> None:
    """One worker's log under ``audit/writer``, signed with the key in ``audit``, checkpointed every 3."""
    directory = audit / writer
    moments = iter(START + timedelta(seconds=second) for second in range(10_000))
    on_checkpoint = partial(publish_head, store, directory, writer) if store is not None else None
    log = AuditLog(
        directory,
        key_path=audit / PRIVATE_KEY_NAME,
        checkpoint_every=3,
        clock=lambda: next(moments),
        on_checkpoint=on_checkpoint,
    )
    for number in range(turns):
        log.append({"type": "agent.turn", "event_id": f"{writer}-{number}", "agent_id": "bot"})
    log.close()


def policy_for(tmp_path: Path) -> Path:
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"data_dir: {tmp_path / 'data'}\nagents: {{}}\nroles: {{default: {{}}}}\n")
    return policy


def two_published_writers(tmp_path: Path) -> tuple[Path, Path]:
    """Writers w0 and w1 of 7 turns each, publishing their heads; the policy naming their store, and
    the audit directory."""
    policy = policy_for(tmp_path)
    audit = tmp_path / "audit"
    store = SharedSqliteStateStore(tmp_path / "data" / "state")
    write_writer(audit, "w0", 7, store)
    write_writer(audit, "w1", 7, store)
    store.close()
    return policy, audit


def test_writers_verify_together_and_report_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`audit verify AUDIT` checks every writer's chain on its own and names each in the report."""
    audit = tmp_path / "audit"
    write_writer(audit, "w0", 5)
    write_writer(audit, "w1", 7)
    assert main(["audit", "verify", str(audit)]) == 0
    out = capsys.readouterr().out
    assert f"writer {audit / 'w0'}: intact" in out and f"writer {audit / 'w1'}: intact" in out


def test_one_broken_writer_fails_the_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An edited record in one writer's file is reported under that writer, and verify exits 1."""
    audit = tmp_path / "audit"
    write_writer(audit, "w0", 5)
    write_writer(audit, "w1", 5)
    (path,) = daily_files(audit / "w1")
    path.write_text(path.read_text().replace('"w1-2"', '"w1-X"'))
    assert main(["audit", "verify", str(audit)]) == 1
    out = capsys.readouterr().out
    assert f"writer {audit / 'w0'}: intact" in out
    assert f"writer {audit / 'w1'}: BROKEN: {path}:" in out


def test_a_cut_tail_is_caught_by_the_published_head(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A writer's file cut back to an earlier checkpoint still verifies on its own; against the head it
    published to the state store, the cut shows."""
    policy, audit = two_published_writers(tmp_path)
    pubkey = str(audit / PUBLIC_KEY_NAME)
    assert main(["audit", "verify", "--pubkey", pubkey, "--config", str(policy), str(audit)]) == 0
    cut_to_first_checkpoint(audit / "w1")
    capsys.readouterr()
    assert main(["audit", "verify", "--pubkey", pubkey, str(audit)]) == 0  # the files alone look whole
    assert main(["audit", "verify", "--pubkey", pubkey, "--config", str(policy), str(audit)]) == 1
    out = capsys.readouterr().out
    assert f"writer {audit / 'w1'}: TAIL CUT:" in out
    assert f"writer {audit / 'w0'}: TAIL CUT" not in out


def test_a_writer_keeps_its_id(tmp_path: Path) -> None:
    """The writer id is made once per directory and read back ever after."""
    first = writer_id(tmp_path / "w3", "w3")
    assert first == writer_id(tmp_path / "w3", "w3")
    assert "w3" in first and (tmp_path / "w3" / WRITER_ID_FILE).read_text().strip() == first
    assert writer_id(tmp_path / "w4", "w4") != first


def cut_to_first_checkpoint(directory: Path) -> None:
    (path,) = daily_files(directory)
    lines = path.read_text().splitlines(keepends=True)
    first_checkpoint = next(index for index, line in enumerate(lines) if '"audit.checkpoint"' in line)
    path.write_text("".join(lines[: first_checkpoint + 1]))


def _forget_id(directory: Path) -> None:
    (directory / WRITER_ID_FILE).unlink()


def _swap_ids(directory: Path) -> None:
    other = directory.parent / "w0"
    mine, theirs = (directory / WRITER_ID_FILE).read_text(), (other / WRITER_ID_FILE).read_text()
    (directory / WRITER_ID_FILE).write_text(theirs)
    (other / WRITER_ID_FILE).write_text(mine)


def _fresh_id(directory: Path) -> None:
    (directory / WRITER_ID_FILE).write_text("someone-else-1234\n")


@pytest.mark.parametrize(
    "cover_up",
    [_forget_id, _swap_ids, _fresh_id, lambda directory: None],
    ids=["writer-id deleted", "writer-ids swapped", "writer-id replaced", "cut only"],
)
def test_a_cut_tail_is_caught_whatever_the_writer_id_file_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cover_up: Any
) -> None:
    """The writer-id file sits with the log, so whoever cuts a tail can change it too: the head names
    the directory it was published for, and that directory's files must reach it."""
    policy, audit = two_published_writers(tmp_path)
    cut_to_first_checkpoint(audit / "w1")
    cover_up(audit / "w1")
    capsys.readouterr()
    pubkey = str(audit / PUBLIC_KEY_NAME)
    assert main(["audit", "verify", "--pubkey", pubkey, "--config", str(policy), str(audit)]) == 1
    assert f"writer {audit / 'w1'}: TAIL CUT:" in capsys.readouterr().out


@pytest.mark.parametrize("removed", ["w1", "w1/*.jsonl"])
def test_a_removed_writer_is_caught_by_its_head(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], removed: str
) -> None:
    """A writer whose directory or every file is gone leaves its head in the state store: verify names
    the writer missing rather than checking the writers left."""
    policy, audit = two_published_writers(tmp_path)
    if removed == "w1":
        shutil.rmtree(audit / "w1")
    else:
        for path in daily_files(audit / "w1"):
            path.unlink()
    capsys.readouterr()
    pubkey = str(audit / PUBLIC_KEY_NAME)
    assert main(["audit", "verify", "--pubkey", pubkey, "--config", str(policy), str(audit)]) == 1
    out = capsys.readouterr().out
    assert f"writer {audit / 'w1'}: TAIL CUT:" in out
    assert f"writer {audit / 'w0'}: TAIL CUT" not in out


def test_heads_of_other_directories_are_not_this_verify_s(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A replica's writers publish to the same store: verifying one audit directory checks only the heads
    published for writers in it."""
    policy = policy_for(tmp_path)
    store = SharedSqliteStateStore(tmp_path / "data" / "state")
    write_writer(tmp_path / "audit", "w0", 7, store)
    write_writer(tmp_path / "elsewhere", "w0", 7, store)
    store.close()
    audit = tmp_path / "audit"
    pubkey = str(audit / PUBLIC_KEY_NAME)
    assert main(["audit", "verify", "--pubkey", pubkey, "--config", str(policy), str(audit)]) == 0
