"""Policies the benches and the tests both read: a bench runs on its own, so they live here."""

REDACTING_POLICY = """\
mode: enforce
agents:
  bot: {token: t, role: ops}
roles:
  ops: {}
redaction: {requests: true}
"""
"""Every detector on, requests redacted: the request path does all its work."""
