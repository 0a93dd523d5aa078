"""A centred 'nothing here yet' page: icon, title, explanation, optional action."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget


def center_column(page: QWidget, column: QVBoxLayout, max_width: int) -> None:
    """Lay `column` out on `page` at a readable width, centred, a little above the middle."""
    holder = QWidget()
    holder.setLayout(column)
    holder.setMaximumWidth(max_width)
    row = QHBoxLayout()
    row.addStretch(1)
    row.addWidget(holder, 10)
    row.addStretch(1)
    outer = QVBoxLayout(page)
    outer.addStretch(1)
    outer.addLayout(row)
    outer.addStretch(2)

class EmptyState(QWidget):
    """Tells a person what a view is for when it has nothing to show.

    Used for features that come in a later version (no fake controls) and for
    an empty model list.
    """

    sig_action_requested = Signal()

    def __init__(
        self,
        title: str,
        text: str,
        icon: QIcon | None = None,
        bullets: list[str] | None = None,
        notice: str = "",
        action_text: str = "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        column = QVBoxLayout()
        column.setSpacing(12)
        if icon is not None and not icon.isNull():
            picture = QLabel()
            picture.setPixmap(icon.pixmap(72, 72))
            picture.setAlignment(Qt.AlignmentFlag.AlignHCenter)
            column.addWidget(picture)
        self.title_label = QLabel(title)
        font = self.title_label.font()
        font.setPointSizeF(font.pointSizeF() * 1.5)
        font.setBold(True)
        self.title_label.setFont(font)
        self.title_label.setAlignment(Qt.AlignmentFlag.AlignHCenter)
        self.title_label.setWordWrap(True)
        column.addWidget(self.title_label)
        self.text_label = self._paragraph(text)
        column.addWidget(self.text_label)
        if bullets:
            items = "".join(f"<li style='margin-bottom:4px'>{b}</li>" for b in bullets)
            listing = QLabel(f"<ul style='margin-left:0px'>{items}</ul>")
            listing.setWordWrap(True)
            listing.setTextFormat(Qt.TextFormat.RichText)
            column.addWidget(listing)
        self.notice_label = self._paragraph(notice)
        self.notice_label.setObjectName("emptyStateNotice")
        self.notice_label.setStyleSheet(
            "#emptyStateNotice { background: palette(alternate-base); border: 1px solid palette(mid);"
            " border-radius: 6px; padding: 10px; }"
        )
        self.notice_label.setVisible(bool(notice))
        column.addWidget(self.notice_label)
        self.action_button = QPushButton(action_text)
        self.action_button.setVisible(bool(action_text))
        self.action_button.clicked.connect(self.sig_action_requested)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.action_button)
        buttons.addStretch(1)
        column.addLayout(buttons)

        center_column(self, column, 620)

    @staticmethod
    def _paragraph(text: str) -> QLabel:
        label = QLabel(text)
        label.setWordWrap(True)
        label.setAlignment(Qt.AlignmentFlag.AlignHCenter)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        return label

    def set_text(self, text: str) -> None:
        self.text_label.setText(text)
