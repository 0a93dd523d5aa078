"""The notice a tab shows while its runs live in an in-memory store (the database cannot be used).

Shown once, for as long as the tab lives (not in an error bar a later success hides), so a
person knows before starting a run that the list forgets it when the app closes.
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel

SESSION_ONLY = "Runs started now are kept for this session only; their folders keep every result."


def session_only_label(lead: str, error: str) -> QLabel:
    """`lead` in bold, then why the database cannot be used, then what that means for runs."""
    label = QLabel(f"<b>{html.escape(lead)}</b> {html.escape(error)} {SESSION_ONLY}")
    label.setObjectName("sessionOnlyNotice")
    label.setTextFormat(Qt.TextFormat.RichText)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    label.setStyleSheet("#sessionOnlyNotice { color: #b3261e; }")
    return label
