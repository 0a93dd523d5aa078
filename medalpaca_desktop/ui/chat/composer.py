"""Where the question is typed: Enter sends, Shift+Enter starts a new line, Esc stops."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

MAX_LINES = 8


class ComposerEdit(QPlainTextEdit):
    """A text box that grows with its text (up to MAX_LINES) and sends on Enter."""

    sig_send_requested = Signal()
    sig_escape_pressed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setTabChangesFocus(True)
        self.document().contentsChanged.connect(self._fit_height)
        self._fit_height()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        mods = event.modifiers()
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            if mods & (Qt.KeyboardModifier.ShiftModifier | Qt.KeyboardModifier.AltModifier):
                self.insertPlainText("\n")
                return
            self.sig_send_requested.emit()
            return
        if key == Qt.Key.Key_Escape:
            self.sig_escape_pressed.emit()
            return
        super().keyPressEvent(event)

    @Slot()
    def _fit_height(self) -> None:
        lines = max(1, min(MAX_LINES, self.document().lineCount() or 1))
        line_height = self.fontMetrics().lineSpacing()
        margins = self.contentsMargins()
        frame = int(self.document().documentMargin() * 2) + margins.top() + margins.bottom() + 4
        self.setFixedHeight(lines * line_height + frame)


class Composer(QWidget):
    """The text box, Send/Stop, and a line that says when a message is being edited."""

    sig_send_requested = Signal(str)
    sig_stop_requested = Signal()
    sig_edit_cancelled = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.edit = ComposerEdit()
        self.edit.setPlaceholderText("Ask a question…  (Enter sends, Shift+Enter for a new line)")
        self.edit.sig_send_requested.connect(self._on_edit_send_requested)
        self.edit.sig_escape_pressed.connect(self._on_edit_escape_pressed)
        self.send_button = QPushButton("Send")
        self.send_button.setToolTip("Send the question (Enter)")
        self.send_button.setDefault(False)
        self.send_button.clicked.connect(self._on_edit_send_requested)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop the answer; the text so far is kept (Esc)")
        self.stop_button.clicked.connect(self.sig_stop_requested)
        self.stop_button.hide()

        self.editing_label = QLabel()
        self.editing_label.setStyleSheet("color: #8a6d00;")
        self.editing_label.hide()
        self.cancel_edit_button = QPushButton("Cancel edit")
        self.cancel_edit_button.setToolTip("Keep the conversation as it is (Esc)")
        self.cancel_edit_button.clicked.connect(self.cancel_edit)
        self.cancel_edit_button.hide()
        edit_row = QHBoxLayout()
        edit_row.setContentsMargins(0, 0, 0, 0)
        edit_row.addWidget(self.editing_label, 1)
        edit_row.addWidget(self.cancel_edit_button)

        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit, 1)
        row.addWidget(self.send_button, 0, Qt.AlignmentFlag.AlignBottom)
        row.addWidget(self.stop_button, 0, Qt.AlignmentFlag.AlignBottom)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addLayout(edit_row)
        layout.addLayout(row)
        self._busy = False
        self.editing: object | None = None  # the Entry being edited

    def text(self) -> str:
        return self.edit.toPlainText()

    def set_text(self, text: str) -> None:
        self.edit.setPlainText(text)
        cursor = self.edit.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        self.edit.setTextCursor(cursor)

    def set_busy(self, busy: bool) -> None:
        """An answer is being written: Stop replaces Send (typing the next question stays possible)."""
        self._busy = busy
        self.send_button.setVisible(not busy)
        self.stop_button.setVisible(busy)

    def start_edit(self, entry: object, text: str) -> None:
        self.editing = entry
        self.set_text(text)
        self.editing_label.setText("Editing an earlier question: sending replaces it and everything after it "
                                   "(the old thread stays in the database).")
        self.editing_label.show()
        self.cancel_edit_button.show()
        self.edit.setFocus()

    @Slot()
    def cancel_edit(self) -> None:
        if self.editing is None:
            return
        self.editing = None
        self.edit.clear()
        self.editing_label.hide()
        self.cancel_edit_button.hide()
        self.sig_edit_cancelled.emit()

    def finish_edit(self) -> None:
        self.editing = None
        self.editing_label.hide()
        self.cancel_edit_button.hide()

    @Slot()
    def _on_edit_send_requested(self) -> None:
        if self._busy:
            return
        text = self.text()
        if not text.strip():
            return
        self.sig_send_requested.emit(text)

    @Slot()
    def _on_edit_escape_pressed(self) -> None:
        if self._busy:
            self.sig_stop_requested.emit()
        elif self.editing is not None:
            self.cancel_edit()
