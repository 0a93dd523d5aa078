"""Reusable widgets shared by the tabs (pyqtgraph charts)."""
