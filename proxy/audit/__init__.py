"""The tamper-evident audit log: one hash-chained JSON line per agent turn."""

from proxy.audit.log import AuditLog, canonical_json, record_hash

__all__ = ["AuditLog", "canonical_json", "record_hash"]
