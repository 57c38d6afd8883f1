"""Detectors: pure functions from the neutral exchange model to findings."""
