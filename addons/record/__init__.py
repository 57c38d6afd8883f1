"""What a finished turn leaves behind: its audit event and alerts, and its metrics."""
