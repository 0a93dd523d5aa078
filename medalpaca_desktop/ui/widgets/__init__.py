"""Reusable widgets shared by the tabs (pyqtgraph charts, the session-only notice)."""
