"""egressguard: an inline security proxy for AI agents."""

__version__ = "0.1.0"
