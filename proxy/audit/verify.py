"""``egressguard audit verify`` and ``audit pubkey``: check the chain and signatures of audit files."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from proxy.audit.heads import WRITER_ID_FILE, StoredCountWitness, cut_tails, writer_chains
from proxy.audit.keys import (
    PRIVATE_KEY_NAME,
    PUBLIC_KEY_NAME,
    key_id,
    load_public_key,
    public_key_pem,
    signature_valid,
)
from proxy.audit.log import (
    CHECKPOINT,
    GAP,
    GENESIS,
    RETENTION,
    canonical_json,
    checkpoint_message,
    daily_files,
    format_ts,
    record_hash,
)
from proxy.audit.spool import COUNT_NAME, COUNT_WIDTH, SPOOL_NAME, CountWitness, newest_count, read_count
from proxy.config.paths import default_data_dir
from proxy.config.units import parse_duration
from proxy.config.yamlschema import SchemaError
from proxy.state import StateStore


def default_audit_directory() -> Path:
    """The audit log of a policy that names no data dir or audit path."""
    return default_data_dir(os.environ) / "audit"


MISSING_START = (
    "chain does not start at genesis and no retention record names its predecessor "
    "(earlier records or files were deleted)"
)


UNSIGNED_START = (
    "chain does not start at genesis and the retention record naming its predecessor is not covered by a "
    "signed checkpoint"
)


@dataclass(frozen=True, slots=True)
class ChainBreak:
    file: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass(slots=True)
class VerifyReport:
    files: list[Path] = field(default_factory=list)
    records: int = 0
    checkpoints: int = 0
    signatures_checked: bool = False
    unsigned_tail: int = 0
    """Records after the last checkpoint: nothing proves they were not cut."""
    unsigned_since: str | None = None
    """The ``ts`` of the first of them."""
    signed_through: str | None = None
    """The ``ts`` of the last checkpoint: everything written before it is proved whole, when signatures
    were checked."""
    gaps: int = 0
    """``audit.gap`` records: outages in which events were lost (``dropped``) or written late."""
    dropped: int = 0
    anchored_by_retention: bool = False
    first_break: ChainBreak | None = None

    @property
    def intact(self) -> bool:
        return self.first_break is None and bool(self.files)


def collect_files(paths: Sequence[Path]) -> list[Path]:
    """Daily files of directories and files named directly, in chain order (their names are dates)."""
    found: set[Path] = set()
    for path in paths:
        found.update(daily_files(path) if path.is_dir() else [path])
    return sorted(found, key=lambda path: (path.name, str(path)))


def verify_files(files: Sequence[Path], public_key: Ed25519PublicKey | None) -> VerifyReport:
    """Walk the records of ``files`` in order and stop at the first break of chain or signature."""
    report = VerifyReport(files=list(files), signatures_checked=public_key is not None)
    expected_key_id = key_id(public_key) if public_key is not None else None
    previous_hash: str | None = None
    previous_file: Path | None = None
    anchor: tuple[Path, str] | None = None
    claimed_by_retention = _retention_claims(files)
    named_by_retention: set[str] = set()
    signed_by_retention: set[str] = set()
    """Hashes named by retention records that a checkpoint after them covers."""
    for path in files:
        with path.open("rb") as source:
            for line_number, raw in enumerate(source, start=1):
                problem, record = _check_line(raw)
                if record is not None and problem is None:
                    if previous_hash is None:
                        if record["prev_hash"] != GENESIS:
                            anchor = (path, record["prev_hash"])
                            if anchor[1] not in claimed_by_retention:
                                problem = MISSING_START
                    elif record["prev_hash"] != previous_hash:
                        problem = _mismatch_reason(line_number, previous_file, path)
                if record is not None and problem is None and record.get("type") == CHECKPOINT:
                    problem = _check_checkpoint(record, public_key, expected_key_id)
                if problem is not None:
                    report.first_break = ChainBreak(path, line_number, problem)
                    return report
                assert record is not None
                if record.get("type") == RETENTION:
                    named_by_retention.update(_removed_hashes(record))
                if record.get("type") == CHECKPOINT:
                    signed_by_retention.update(named_by_retention)
                    report.checkpoints += 1
                    report.unsigned_tail = 0
                    report.unsigned_since = None
                    report.signed_through = str(record.get("ts"))
                else:
                    if not report.unsigned_tail:
                        report.unsigned_since = str(record.get("ts"))
                    report.unsigned_tail += 1
                if record.get("type") == GAP:
                    report.gaps += 1
                    report.dropped += int(record.get("dropped") or 0)
                report.records += 1
                previous_hash = record["hash"]
                previous_file = path
    if anchor is not None:
        # The claim came from a first look at unverified lines; only a record inside the chain counts.
        if anchor[1] not in named_by_retention:
            report.first_break = ChainBreak(anchor[0], 1, MISSING_START)
        elif public_key is not None and anchor[1] not in signed_by_retention:
            # Without a signature over it, the record that excuses the missing start could be made up
            # along with everything after it.
            report.first_break = ChainBreak(anchor[0], 1, UNSIGNED_START)
        else:
            report.anchored_by_retention = True
    return report


LINK_BROKEN = "prev_hash does not match the record before it (a record was deleted, reordered or inserted)"
AFTER_BREAK = "follows a break in its writer's chain"
UNLINKED = "the record after it does not follow it (it was edited, or a record after it deleted)"


UNSIGNED = "no checkpoint signed with the trusted key covers it"
NOT_YET_SIGNED = f"{UNSIGNED} yet (the log signs one within audit.checkpoint_after)"
NOT_ON_A_LINE = "not found on a line of its audit file that verifies (moved or removed since it was read)"
INCOMPLETE = "claimed by a line with no end (still being written, or added to the log): no chain holds it yet"


def chain_states(
    files: Sequence[Path], public_key: Ed25519PublicKey | None, wanted: Collection[str], follows: str | None
) -> dict[str, str | None]:
    """For each hash of ``wanted`` on a line of ``files`` (one writer's files, in chain order, from any
    day on): None where the chain verifies through its line as ``audit verify`` checks it (each line in
    the form its hash covers, following the one before it, the first following ``follows`` where it is
    known, each checkpoint covering the record before it and signed by ``public_key`` where given) up to a
    checkpoint after it, else why not: the break at it, the link after it that does not verify, a break
    before it, or a break or the end before any checkpoint after it (a line is proved only by a signature
    over what follows it: one edited with every line after it chained again breaks at the next
    checkpoint alone)."""
    states: dict[str, str | None] = {}
    broken: str | None = None
    previous: str | None = follows
    pending: list[str] = []
    """Wanted lines since the last checkpoint."""
    for path in files:
        with path.open("rb") as source:
            for line_number, raw in enumerate(source, start=1):
                claimed = _claimed_hash(raw)
                if broken is None:
                    problem, record = chain_problem(raw, previous, public_key)
                    if problem is not None:
                        broken = f"{AFTER_BREAK} at {path.name}:{line_number}: {problem}"
                        linked = previous is None or record is None or record["prev_hash"] == previous
                        if not linked and previous in wanted:
                            states[str(previous)] = UNLINKED
                        if claimed is not None and claimed in wanted:
                            states[claimed] = problem
                        for waiting in pending:
                            states.setdefault(waiting, f"{UNSIGNED}: {broken}")
                        pending = []
                        continue
                    previous = claimed
                    assert record is not None
                    if record.get("type") == CHECKPOINT:
                        states.update(dict.fromkeys(pending))
                        pending = []
                    elif claimed in wanted:
                        pending.append(str(claimed))
                elif claimed is not None and claimed in wanted and states.get(claimed) is None:
                    # A line after the break may copy the hash of one proved before it: asked by hash,
                    # the two cannot be told apart, so neither is verified.
                    states[claimed] = broken
    for waiting in pending:
        states.setdefault(waiting, NOT_YET_SIGNED)
    return states


RACY_NS = 2_000_000_000
"""A file modified this close to when it was read may change again without its times changing (they tick
coarsely, by seconds on some file systems): it is checked by its bytes at the next view, not its times."""
BLOCK = 1 << 20


@dataclass(slots=True)
class _Verified:
    """How far one daily file's chain verified when it was last read."""

    path: Path
    stat: tuple[int, int, int, int]
    """Its inode, size, modification and change times then."""
    follows: str | None
    key: str
    offset: int = 0
    """The end of its last complete line read."""
    digest: Any = field(default_factory=hashlib.sha256)
    """SHA-256 of its bytes up to ``offset``."""
    end: str | None = None
    """The hash the line before ``offset`` claims: the one the next line must follow."""
    broken: bool = False
    racy: bool = True
    signed: bool = False
    """Whether a checkpoint was read: it proves every line before it, in this file and before."""
    covered: set[str] = field(default_factory=set)
    """The hashes of its lines before its last checkpoint, which that checkpoint proves."""
    unsigned: set[str] = field(default_factory=set)
    """The hashes of its lines after its last checkpoint, which a checkpoint after them has to prove."""
    incomplete: str | None = None
    """The hash its last line claims where that line has no end yet: no chain holds it."""


def _stat(path: Path) -> tuple[int, int, int, int]:
    found = os.stat(path)
    return found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns


class VerifiedChains:
    """``chain_states`` for the records of a window whose files are known, without verifying again what
    was verified: each daily file's verification is kept with its inode, size and times, the hash it
    followed, the key, and a digest of the bytes it covered. A file whose times and size are unchanged is
    not read (unless it was modified as it was read); one whose first bytes still hash to the digest (a
    file appended to) has only its new lines verified; any other is verified whole. Where a file's chain
    breaks, its writer's files from it on are read as ``chain_states`` reads them, for the records wanted
    there."""

    def __init__(self) -> None:
        self.verified_whole = 0
        """How many times a file was verified from its start: what the cache saves shows here."""
        self._files: dict[Path, _Verified] = {}
        self._lock = threading.Lock()

    def states(
        self, files: Sequence[Path], public_key: Ed25519PublicKey, wanted: Mapping[str, Path]
    ) -> dict[str, str | None]:
        """For each hash of ``wanted``, read from a line of the file it maps to among ``files`` (the daily
        files of a window, each writer's chain following the last record of its file before them): None
        where its writer's chain verifies through that line with checkpoints signed by ``public_key`` and
        no line that does not verify claims it too, else why not (``NOT_ON_A_LINE`` where no line of
        that file that verifies claims it)."""
        states: dict[str, str | None] = {}
        with self._lock:
            for gone in [path for path in self._files if not path.exists()]:
                del self._files[gone]
            for directory, chain in writer_chains(files).items():
                earlier = [path for path in daily_files(directory) if path.name < chain[0].name]
                _merge(
                    states,
                    self._chain(chain, last_hash(earlier[-1]) if earlier else None, public_key, wanted),
                )
        for claimed in wanted:
            states.setdefault(claimed, NOT_ON_A_LINE)
        return states

    def _chain(
        self, chain: list[Path], follows: str | None, public_key: Ed25519PublicKey, wanted: Mapping[str, Path]
    ) -> dict[str, str | None]:
        states: dict[str, str | None] = {}
        pending: list[str] = []
        """Wanted lines that wait for a checkpoint in a later file."""
        waiting_since: _Verified | None = None
        """The first file they are in."""
        incomplete: set[str] = set()
        """What lines with no end claim: whichever file a hash is asked of, a line that is not whole
        claiming it too leaves it unverified."""
        for path in chain:
            verified = self._verified(path, follows, public_key)
            if verified.broken:
                first = waiting_since or verified
                rest = chain[chain.index(first.path) :]
                # Every hash wanted: a line of ``rest`` may claim one read from a line before it.
                _merge(states, chain_states(rest, public_key, wanted, first.follows))
                break
            if verified.signed:
                _merge(states, dict.fromkeys(pending))
                pending, waiting_since = [], None
            if verified.incomplete is not None and verified.incomplete in wanted:
                incomplete.add(verified.incomplete)
            mine = [claimed for claimed, found in wanted.items() if found == path]
            _merge(states, dict.fromkeys(claimed for claimed in mine if claimed in verified.covered))
            tail = [claimed for claimed in mine if claimed in verified.unsigned]
            if tail and waiting_since is None:
                waiting_since = verified
            pending.extend(tail)
            follows = verified.end
        else:
            _merge(states, dict.fromkeys(pending, NOT_YET_SIGNED))
        _merge(states, dict.fromkeys(incomplete, INCOMPLETE))
        return states

    def _verified(self, path: Path, follows: str | None, public_key: Ed25519PublicKey) -> _Verified:
        stat, key = _stat(path), key_id(public_key)
        kept = self._files.get(path)
        if kept is not None and (kept.follows, kept.key, kept.stat[0]) == (follows, key, stat[0]):
            if kept.stat == stat and not kept.racy:
                return kept
            if (
                not kept.broken
                and stat[1] >= kept.offset
                and _digest(path, kept.offset) == kept.digest.digest()
            ):
                return self._read(path, kept, public_key, stat)
        self.verified_whole += 1
        self._files[path] = self._read(
            path, _Verified(path, stat, follows, key, end=follows), public_key, stat
        )
        return self._files[path]

    @staticmethod
    def _read(
        path: Path, verified: _Verified, public_key: Ed25519PublicKey, stat: tuple[int, int, int, int]
    ) -> _Verified:
        """``verified`` carried on over the complete lines after its offset (a line still being written
        waits for the next read, and verifies nothing meanwhile)."""
        verified.incomplete = None
        with path.open("rb") as source:
            source.seek(verified.offset)
            for raw in source:
                if not raw.endswith(b"\n"):
                    verified.incomplete = _claimed_hash(raw)
                    break
                problem, record = chain_problem(raw, verified.end, public_key)
                if problem is not None or record is None:
                    verified.broken = True
                    break
                verified.end = record["hash"]
                verified.offset += len(raw)
                verified.digest.update(raw)
                if record.get("type") == CHECKPOINT:
                    verified.signed = True
                    verified.covered |= verified.unsigned
                    verified.unsigned.clear()
                else:
                    verified.unsigned.add(record["hash"])
        verified.stat = stat
        verified.racy = time.time_ns() - stat[2] < RACY_NS
        return verified


def _merge(states: dict[str, str | None], found: Mapping[str, str | None]) -> None:
    """``found`` added to ``states``, where a reason a hash does not verify is never replaced by None: two
    lines claiming one hash cannot be told apart by it, so it verifies only where every one does."""
    for claimed, state in found.items():
        if states.get(claimed) is None:
            states[claimed] = state


def _digest(path: Path, length: int) -> bytes:
    """SHA-256 of the first ``length`` bytes of ``path``."""
    hasher = hashlib.sha256()
    with path.open("rb") as source:
        while length > 0 and (block := source.read(min(BLOCK, length))):
            hasher.update(block)
            length -= len(block)
    return hasher.digest()


def chain_problem(
    raw: bytes, follows: str | None, public_key: Ed25519PublicKey | None
) -> tuple[str | None, dict[str, Any] | None]:
    """``line_problem``, and for a checkpoint whether it covers the record before it and is signed by
    ``public_key`` (where given)."""
    problem, record = line_problem(raw, follows)
    if record is not None and problem is None and record.get("type") == CHECKPOINT:
        problem = _check_checkpoint(record, public_key, key_id(public_key) if public_key else None)
    return problem, record


def line_problem(raw: bytes, follows: str | None) -> tuple[str | None, dict[str, Any] | None]:
    """What breaks the chain at the line ``raw`` (``_check_line``), or its ``prev_hash`` not naming
    ``follows``, the record before it (None: not known); and its record where it reads as one."""
    problem, record = _check_line(raw)
    if record is not None and problem is None and follows is not None and record["prev_hash"] != follows:
        problem = (
            "prev_hash does not match the record before it (a record was deleted, reordered or inserted)"
        )
    return problem, record


def _claimed_hash(raw: bytes) -> str | None:
    """The hash a line claims, whether or not it verifies."""
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    claimed = record.get("hash") if isinstance(record, dict) else None
    return claimed if isinstance(claimed, str) else None


def last_hash(path: Path) -> str | None:
    """The hash the last complete line of ``path`` claims."""
    with path.open("rb") as source:
        end = source.seek(0, os.SEEK_END)
        block = 1 << 16
        while True:
            start = max(0, end - block)
            source.seek(start)
            tail = source.read(end - start)
            # A line still being written is not the last record yet.
            complete = tail[: tail.rfind(b"\n") + 1]
            lines = complete.rstrip(b"\n").rsplit(b"\n", 1)
            if len(lines) == 2 or start == 0:
                return _claimed_hash(lines[-1]) if complete else None
            block *= 2


def _retention_claims(files: Sequence[Path]) -> set[str]:
    """Last hashes named by anything that looks like a retention record, before the chain is checked."""
    claims: set[str] = set()
    marker = f'"{RETENTION}"'.encode()
    for path in files:
        with path.open("rb") as source:
            for raw in source:
                if marker in raw:
                    try:
                        claims.update(_removed_hashes(json.loads(raw)))
                    except (ValueError, TypeError, AttributeError):
                        continue
    return claims


def _removed_hashes(record: dict[str, Any]) -> set[str]:
    return {str(entry.get("last_hash")) for entry in record.get("removed", [])}


def _check_line(raw: bytes) -> tuple[str | None, dict[str, Any] | None]:
    if not raw.endswith(b"\n"):
        return "incomplete last line (record truncated)", None
    try:
        record = json.loads(raw)
    except ValueError:
        return "not a JSON record (edited or truncated)", None
    if not isinstance(record, dict) or not isinstance(record.get("hash"), str):
        return "record has no hash", None
    if not isinstance(record.get("prev_hash"), str):
        return "record has no prev_hash", None
    if record_hash(record) != record["hash"]:
        return "record does not match its hash (edited)", None
    # The hash covers the record as JSON reads it, which keeps only the last of a repeated key; readers
    # that keep the first (DuckDB) would show what no hash covers. A line is written in one form only.
    if raw[:-1] != canonical_json(record).encode():
        return "record is not in the form it was written (edited: a key repeated, reordered or spaced)", None
    return None, record


def _mismatch_reason(line_number: int, previous_file: Path | None, path: Path) -> str:
    if line_number == 1 and previous_file is not None and previous_file != path:
        return (
            f"prev_hash does not match the last record of {previous_file.name} "
            "(records or a file deleted, or files out of order)"
        )
    return LINK_BROKEN


def _check_checkpoint(
    record: dict[str, Any], public_key: Ed25519PublicKey | None, expected_key_id: str | None
) -> str | None:
    if record.get("covers") != record["prev_hash"]:
        return "checkpoint does not cover the record before it"
    if public_key is None:
        return None
    if record.get("key_id") != expected_key_id:
        return f"checkpoint signed by key {record.get('key_id')}, not by the given key {expected_key_id}"
    if not signature_valid(public_key, checkpoint_message(record), str(record.get("signature", ""))):
        return "checkpoint signature is not valid"
    return None


def summary(report: VerifyReport) -> str:
    start = "after a retention removal" if report.anchored_by_retention else "at genesis"
    signed = (
        f"{report.checkpoints} checkpoint signatures verified"
        if report.signatures_checked
        else f"{report.checkpoints} checkpoints found, signatures NOT checked (no public key)"
    )
    text = f"intact: {report.records} records in {len(report.files)} files, {signed}; chain starts {start}"
    if report.signed_through is not None:
        text += f"\nsigned through {report.signed_through}"
    if report.unsigned_tail:
        text += (
            f"\nunsigned tail: {report.unsigned_tail} records since {report.unsigned_since} follow the last "
            "checkpoint; nothing proves records after them were not cut"
        )
    if report.gaps:
        text += f"\ngaps: {report.gaps} audit.gap records, {report.dropped} events lost in outages"
    return text


def parse_moment(text: str, now: datetime) -> datetime:
    """An ISO 8601 time (``2026-03-01T12:00:00Z``; no zone means UTC) or a time ago (``10m``, ``24h``)."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (use an ISO time like 2026-03-01T12:00:00Z, or an age like 10m or 24h)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def signed_through_problem(report: VerifyReport, required: datetime) -> str | None:
    """Why the log is not proved whole up to ``required``, or None when it is."""
    if report.signed_through is None:
        return f"no signed checkpoint at all, so nothing proves the log whole through {format_ts(required)}"
    signed = datetime.fromisoformat(report.signed_through)
    if signed < required:
        return (
            f"the last signed checkpoint is at {report.signed_through}, before {format_ts(required)}: "
            f"records after it ({report.unsigned_tail} left) may have been cut"
        )
    return None


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, help="audit files or directories holding them")
    parser.add_argument(
        "--pubkey",
        type=Path,
        help=f"public key that signs checkpoints (default: {PUBLIC_KEY_NAME} in a directory given; a key "
        "kept elsewhere is what proves the log, since whoever can rewrite the log can replace that file)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="the proxy's policy: check each writer's files reach the head it published to the state store",
    )
    parser.add_argument(
        "--spool",
        type=Path,
        help="the proxy's audit spool directory (audit.spool): its count of acknowledged events neither "
        "written nor spooled must carry the log's signature, and nothing may be waiting there",
    )
    parser.add_argument(
        "--require-signed-through",
        metavar="TIME",
        help="fail unless a checkpoint signed at or after TIME (ISO time, or an age such as 10m or 24h) "
        "covers the chain: proves that no record written before TIME was cut from the end",
    )


def run_verify(args: argparse.Namespace) -> int:
    """Exit 0 when the chain is intact, 1 at the first break, 2 when there is nothing to verify."""
    paths: list[Path] = args.paths
    missing = [path for path in paths if not path.exists()]
    if missing:
        print(f"error: no such file or directory: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    required: datetime | None = None
    if args.require_signed_through is not None:
        try:
            required = parse_moment(args.require_signed_through, datetime.now(UTC))
        except ValueError as exc:
            print(f"error: --require-signed-through: {exc}", file=sys.stderr)
            return 2
    key_file: Path | None = args.pubkey
    if key_file is None:
        key_file = next(
            (path / PUBLIC_KEY_NAME for path in paths if (path / PUBLIC_KEY_NAME).is_file()), None
        )
    public_key = None
    if key_file is not None:
        try:
            public_key = load_public_key(key_file)
        except (OSError, ValueError) as exc:
            print(f"error: cannot read public key {key_file}: {exc}", file=sys.stderr)
            return 2
    if required is not None and public_key is None:
        print("error: --require-signed-through needs the public key (--pubkey)", file=sys.stderr)
        return 2
    chains = writer_chains(paths)
    if not chains:
        if required is not None:
            print(f"NOT SIGNED THROUGH {format_ts(required)}: no audit files found")
            return 1
        print("error: no audit files found", file=sys.stderr)
        return 2
    try:
        heads = _head_store(args.config) if args.config else None
    except SchemaError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return 2
    roots = [path if path.is_dir() else path.parent for path in paths]
    cut = cut_tails(heads, roots, chains) if heads is not None else {}
    status = 0
    for directory, files in chains.items():
        label = f"writer {directory}: " if len(chains) > 1 else ""
        status = max(status, _verify_chain(label, files, public_key, required, cut.get(directory)))
    for directory in cut.keys() - chains.keys():
        print(f"writer {directory}: TAIL CUT: {cut[directory]} (none of its files are left)")
        status = 1
    if args.spool is not None:
        status = max(status, _verify_spool(args.spool, public_key, _count_witness(heads, chains)))
    if args.pubkey is None and public_key is not None:
        print(
            f"note: signatures checked with {key_file}, which sits with the log; "
            "pass --pubkey with a copy kept elsewhere"
        )
    if heads is not None:
        heads.close()
    return status


def _verify_chain(
    label: str,
    files: Sequence[Path],
    public_key: Ed25519PublicKey | None,
    required: datetime | None,
    cut: str | None,
) -> int:
    """Verify one writer's chain, printing its lines with ``label`` before each; the exit status. ``cut``
    says why its files end before a head it published, when they do."""
    report = verify_files(files, public_key)
    if report.first_break is not None:
        print(f"{label}BROKEN: {report.first_break}")
        print(f"{label}{report.records} records before the break verified")
        return 1
    print(label + summary(report).replace("\n", "\n" + label))
    if cut is not None:
        print(f"{label}TAIL CUT: {cut}")
        return 1
    if required is not None:
        problem = signed_through_problem(report, required)
        if problem is not None:
            print(f"{label}NOT SIGNED THROUGH {format_ts(required)}: {problem}")
            return 1
        print(f"{label}signed through {format_ts(required)}: nothing written before it was cut")
    return 0


def _count_witness(heads: StateStore | None, chains: dict[Path, list[Path]]) -> CountWitness | None:
    """Where the one writer of ``chains`` published its spool's count, when the state store is given."""
    if heads is None or len(chains) != 1:
        return None
    path = next(iter(chains)) / WRITER_ID_FILE
    if not path.is_file():
        return None
    writer = path.read_text(encoding="utf-8").strip()
    return StoredCountWitness(heads, lambda: writer)


def _verify_spool(
    directory: Path, public_key: Ed25519PublicKey | None, witness: CountWitness | None = None
) -> int:
    """Check the spool's signed count and what waits there; the exit status (1 when the log is not
    whole: events acknowledged but not in it, a count the log's key did not sign, or a count older
    than the one published to the state store)."""
    try:
        count = read_count((directory / COUNT_NAME).read_bytes()[:COUNT_WIDTH], public_key)
        waiting = sum(1 for line in (directory / SPOOL_NAME).read_bytes().splitlines() if line.strip())
    except OSError as exc:
        print(f"SPOOL UNREADABLE: {exc}")
        return 1
    if count.signed is not True:
        state = "has no signature" if count.signed is None else "does not verify against the log's key"
        print(f"SPOOL COUNT FORGED: {directory / COUNT_NAME} {state}")
        return 1
    if public_key is not None:
        newest, replayed = newest_count(count, witness, public_key)
        if replayed:
            print(
                f"SPOOL COUNT REPLAYED: {directory / COUNT_NAME} holds count {count.sequence} "
                f"({count.number} events), older than count {newest.sequence} ({newest.number} events) "
                "published to the state store: an earlier signed count was put back"
            )
            return 1
    if public_key is None:
        print("note: the spool's count was not checked against a key (pass --pubkey)")
    if count.number or waiting:
        print(
            f"NOT WHOLE: {waiting} events wait in the spool and {count.number} were acknowledged but "
            "neither written nor spooled; the proxy records them with an audit.gap record at its next start"
        )
        return 1
    print("spool: empty, its count signed")
    return 0


def _head_store(config: Path) -> StateStore:
    """The state store the writers of ``config``'s policy publish their heads to, opened to read."""
    from proxy.config.policy import load_state_settings
    from proxy.runtime import open_state_store

    settings, data_dir = load_state_settings(config)
    return open_state_store(settings, data_dir, shared=True)


def add_pubkey_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--audit", type=Path, default=default_audit_directory(), help="audit directory holding the key"
    )
    parser.add_argument("--key", type=Path, help=f"private key file (default: AUDIT/{PRIVATE_KEY_NAME})")
    parser.add_argument("--out", type=Path, help="write the PEM here instead of stdout")


def run_pubkey(args: argparse.Namespace) -> int:
    key_file: Path = args.key or args.audit / PRIVATE_KEY_NAME
    if not key_file.is_file():
        print(
            f"error: no signing key at {key_file} (it is created when the audit log is first opened)",
            file=sys.stderr,
        )
        return 2
    pem = public_key_pem(load_public_key(key_file))
    if args.out is None:
        sys.stdout.write(pem.decode())
    else:
        args.out.write_bytes(pem)
    return 0
