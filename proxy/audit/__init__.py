"""The tamper-evident audit log: one hash-chained JSON line per agent turn, in daily files."""

from proxy.audit.log import AuditLog, AuditUnavailable, Recovery, canonical_json, record_hash
from proxy.audit.verify import VerifyReport, verify_files

__all__ = [
    "AuditLog",
    "AuditUnavailable",
    "Recovery",
    "VerifyReport",
    "canonical_json",
    "record_hash",
    "verify_files",
]
