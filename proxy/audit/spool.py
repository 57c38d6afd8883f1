"""Where acknowledged audit events wait while the log's disk refuses them, so that neither a crash nor a
stop can make one vanish unrecorded.

Each held event is appended to ``spool.jsonl`` and synced. An event that cannot be spooled either is
counted in ``unrecorded.count``: a file allocated when the spool opens and rewritten in place, so a full
disk still takes the new count. Both files are opened once, at start, while the disk is known to work,
and stay open: a directory that later turns unwritable does not close a descriptor already open.

At the next start the log takes what the spool holds: the spooled events are written into the chain (those
not already there) after an ``audit.gap`` record saying how many were spooled and how many only counted.
Each spooled line carries an HMAC under a key derived from the log's signing key: whoever can write the
spool but does not hold the key cannot have forged events written into the signed chain; a line that
does not verify is counted as lost instead. The count is signed with the log's own Ed25519 key, as
checkpoints are: ``egressguard audit verify --spool DIR`` checks it with the public key alone, so a count
lowered or zeroed by whoever can write the spool but does not hold the key is found out. Each count
carries a sequence number, raised with every write and covered by the signature, and every count written
is also published to a witness kept elsewhere (the shared state store, beside the log's published head):
a count the key once signed, replayed over a newer one (an older zero put back after a crash), is older
than the witness's, and is found out at the next start and by ``audit verify --spool --config``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from proxy.audit.keys import sign, signature_valid, spool_key

SPOOL_NAME = "spool.jsonl"
COUNT_NAME = "unrecorded.count"
COUNT_WIDTH = 160
"""Bytes of the count file: a decimal number and its signature, padded with spaces and a newline, always
this long."""
_COUNT_SIGNED = b"egressguard audit unrecorded count v2\0"
_UNSEQUENCED_COUNT_SIGNED = b"egressguard audit unrecorded count\0"
"""What a count written before counts carried a sequence was signed under (read as sequence 0)."""


class Count(NamedTuple):
    number: int
    signed: bool | None
    """True when the key's signature verifies, False when it does not, None when there is none."""
    sequence: int = 0
    """Raised with every count written: of two counts the key signed, the higher is the newer."""


class CountWitness(Protocol):
    """Where each count line written is also kept, out of reach of whoever can write the spool."""

    def publish(self, line: str) -> None: ...

    def latest(self) -> str | None: ...


def count_line(sequence: int, number: int, key: Ed25519PrivateKey) -> bytes:
    body = f"{sequence}:{number}"
    line = f"{body} {sign(key, _COUNT_SIGNED + body.encode())}"
    return line.ljust(COUNT_WIDTH - 1).encode() + b"\n"


def read_count(data: bytes, public_key: Ed25519PublicKey | None) -> Count:
    """The count a count file holds, and whether ``public_key`` (when given) signed it."""
    body, _, signature = data.decode("ascii", "replace").strip().partition(" ")
    sequence, sequenced, number = body.rpartition(":")
    value = int(number) if number.isdigit() else 0
    order = int(sequence) if sequence.isdigit() else 0
    if not signature:
        return Count(value, None, order)
    if public_key is None:
        return Count(value, True, order)
    message = (_COUNT_SIGNED if sequenced else _UNSEQUENCED_COUNT_SIGNED) + body.encode()
    return Count(value, signature_valid(public_key, message, signature), order)


def newest_count(
    found: Count, witness: CountWitness | None, public_key: Ed25519PublicKey
) -> tuple[Count, bool]:
    """The newer of the spool's count and the witness's (when the key signed it), and whether the spool's
    was older: a count replayed over the one the witness last saw."""
    published = witness.latest() if witness is not None else None
    if published is None:
        return found, False
    witnessed = read_count(published.encode(), public_key)
    if witnessed.signed is not True or witnessed.sequence <= found.sequence:
        return found, False
    return witnessed, True


log = structlog.get_logger("egressguard.audit")


class Spool:
    """Opens (creating) ``directory``; raises OSError when it cannot, which stops the start."""

    def __init__(self, directory: Path, key: Ed25519PrivateKey, witness: CountWitness | None = None) -> None:
        self.directory = directory
        self._key = key
        self._mac_key = spool_key(key)
        self._witness = witness
        directory.mkdir(parents=True, exist_ok=True)
        self._events = os.open(directory / SPOOL_NAME, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        self._count = os.open(directory / COUNT_NAME, os.O_RDWR | os.O_CREAT, 0o640)
        size = os.fstat(self._count).st_size
        found = self._read_count()
        if size < COUNT_WIDTH:
            os.posix_fallocate(self._count, 0, COUNT_WIDTH)
        self.count_signed = size == 0 or found.signed is True
        """Whether the count an earlier run left carries this log's signature (a new spool has none)."""
        newest, self.count_replayed = newest_count(found, witness, key.public_key())
        """Whether the count an earlier run left is older than the one its witness saw last."""
        self.sequence = newest.sequence
        if found.signed is not True or self.count_replayed:
            self._write_count(newest.number)
        self.spooled = 0
        self.uncounted = 0
        self.counted = newest.number

    @property
    def holding(self) -> bool:
        return self.spooled > 0 or self.counted > 0

    def hold(self, event: dict[str, Any]) -> None:
        """Keep ``event`` on disk (spooled, or at least counted); never raises."""
        body = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        line = (json.dumps({"event": body, "mac": self._mac(body)}) + "\n").encode()
        try:
            size_before = os.fstat(self._events).st_size
            try:
                if os.write(self._events, line) != len(line):
                    raise OSError(f"short write to {SPOOL_NAME}")
                os.fsync(self._events)
            except OSError:
                os.ftruncate(self._events, size_before)
                raise
            self.spooled += 1
            return
        except OSError as exc:
            spool_error = exc
        try:
            self._write_count(self.counted + 1)
            self.counted += 1
        except OSError as exc:
            self.uncounted += 1
            log.critical(
                "audit.event_unrecorded",
                spool_error=str(spool_error),
                count_error=str(exc),
                unrecorded=self.uncounted,
            )

    def take(self) -> tuple[list[dict[str, Any]], int]:
        """What an earlier run left: the spooled events, and how many more were only counted (a line that
        does not read back, cut by a crash, counts as one)."""
        events: list[dict[str, Any]] = []
        lost = self.counted
        with open(self._events, "rb", closefd=False) as source:
            source.seek(0)
            for raw in source:
                event = self._verified(raw)
                if event is None:
                    lost += 1
                else:
                    events.append(event)
        self.spooled = len(events)
        return events, lost

    def release(self) -> None:
        """Everything held is in the log now: empty the spool and zero the count."""
        os.ftruncate(self._events, 0)
        os.fsync(self._events)
        self._write_count(0)
        self.spooled = self.counted = 0

    def close(self) -> None:
        os.close(self._events)
        os.close(self._count)

    def _mac(self, body: str) -> str:
        return hmac.new(self._mac_key, body.encode(), hashlib.sha256).hexdigest()

    def _verified(self, raw: bytes) -> dict[str, Any] | None:
        """The event a spool line holds, if the line is whole and its MAC is ours."""
        try:
            line = json.loads(raw)
            body, mac = str(line["event"]), str(line["mac"])
            event = json.loads(body)
        except (ValueError, TypeError, KeyError):
            return None
        if not hmac.compare_digest(mac, self._mac(body)) or not isinstance(event, dict):
            return None
        return event

    def _read_count(self) -> Count:
        return read_count(os.pread(self._count, COUNT_WIDTH, 0), self._key.public_key())

    def _write_count(self, count: int) -> None:
        line = count_line(self.sequence + 1, count, self._key)
        os.pwrite(self._count, line, 0)
        os.fsync(self._count)
        self.sequence += 1
        if self._witness is not None:
            try:
                self._witness.publish(line.decode().strip())
            except Exception as exc:  # the witness is a second copy: its failure loses nothing here
                log.error("audit.count_witness_failed", error=f"{type(exc).__name__}: {exc}"[:300])
