"""The GUI: the only package that imports Qt. Never imports torch & co (import-linter)."""

from medalpaca_desktop.ui.qt_compat import apply_emit_refcount_fix

apply_emit_refcount_fix()
