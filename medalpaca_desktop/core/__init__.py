"""Qt-free, torch-free core: paths, store, events, settings, model discovery.

Nothing here may import Qt or a heavy ML library at import time (import-linter
contracts in pyproject.toml enforce the Qt half; tests/test_boundaries.py the rest).
"""
