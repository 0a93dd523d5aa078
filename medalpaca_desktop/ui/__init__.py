"""The GUI: the only package that imports Qt. Never imports torch & co (import-linter)."""
