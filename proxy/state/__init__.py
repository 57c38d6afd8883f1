"""Shared mutable state: counters, sliding windows, expiring sets and key/values behind one Protocol."""

from proxy.state.keys import digest
from proxy.state.sqlite import SqliteStateStore
from proxy.state.store import Clock, JSONValue, StateStore, StateUnavailable

__all__ = ["Clock", "JSONValue", "SqliteStateStore", "StateStore", "StateUnavailable", "digest"]
