"""Text scanning: rule packs and their validators, the views that undo encodings and disguises, and
redaction of what the rules find, in plain text, JSON values and streams."""
