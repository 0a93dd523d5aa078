"""The prompt inspector: the exact text a model received for an answer, and its size.

Chat templates are the first cause of gibberish and endless answers (wrong
format, an end token that does not stop), so every answer keeps the prompt the
host rendered for it (its "prompt" result), and this dialog shows it verbatim.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from medalpaca_desktop.core.payloads import Prompt

TEMPLATE_NAMES = {
    "chat": "the model's own chat template",
    "medalpaca": "the MedAlpaca format (### Instruction / ### Response)",
    "raw": "raw text (no template)",
}
FALLBACK_NAMES = {
    "chatml": "ChatML (<|im_start|> … <|im_end|>)",
    "medalpaca": "the MedAlpaca format",
}


def prompt_meta(prompt: Prompt) -> dict[str, Any]:
    """The host's "prompt" result as an answer keeps it in its meta (what this dialog and the export read)."""
    meta: dict[str, Any] = {"text": prompt.text, "tokens": prompt.tokens, "template": prompt.template,
                            "fallback": prompt.fallback, "dropped_messages": prompt.dropped_messages}
    if prompt.context_length is not None:
        meta["context_length"] = prompt.context_length
    if prompt.add_special is not None:
        meta["add_special"] = prompt.add_special
    return meta


def describe_prompt(prompt: dict[str, Any]) -> str:
    """One or two sentences: which format, how many tokens, what was left out."""
    template = prompt.get("template") or "chat"
    fallback = prompt.get("fallback")
    if fallback:
        how = (f"This model has no chat template of its own, so the app used a fallback: "
               f"{FALLBACK_NAMES.get(fallback, fallback)}.")
    else:
        how = f"Format: {TEMPLATE_NAMES.get(template, template)}."
    tokens = prompt.get("tokens")
    size = f" {tokens:,} tokens" if isinstance(tokens, int) else ""
    context = prompt.get("context_length")
    if size and context:
        size += f" of a {int(context):,}-token context window"
    text = f"{how}{size and ' The model read' + size + '.'}"
    dropped = prompt.get("dropped_messages") or 0
    if dropped:
        text += (f" The {dropped} oldest message{'s' if dropped != 1 else ''} did not fit the context window "
                 "and were left out.")
    return text


class PromptInspector(QDialog):
    """Shows one answer's prompt, verbatim, with a Copy button."""

    def __init__(self, prompt: dict[str, Any] | None, title: str = "", parent: QWidget | None = None,
                 retrieved: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Prompt inspector" + (f": {title}" if title else ""))
        self.prompt = prompt or {}
        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.fallback_label = QLabel()
        self.fallback_label.setWordWrap(True)
        self.fallback_label.setStyleSheet("background: #fff4e0; border: 1px solid #e0b25c; border-radius: 4px;"
                                          " padding: 6px; color: #5a3a00;")
        self.retrieved_label = QLabel(retrieved)  # citations.retrieval_summary: what documents were searched
        self.retrieved_label.setWordWrap(True)
        self.retrieved_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.retrieved_label.setStyleSheet("background: #eef3fb; border: 1px solid #c6d7f5; border-radius: 4px;"
                                           " padding: 6px;")
        self.retrieved_label.setVisible(bool(retrieved))
        self.text_edit = QPlainTextEdit()
        self.text_edit.setReadOnly(True)
        self.text_edit.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.text_edit.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.copy_button = QPushButton("Copy prompt")
        self.copy_button.clicked.connect(self._on_copy_button_clicked)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.addButton(self.copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        hint = QLabel("Exactly the text the model received, special tokens included. Whitespace matters: a "
                      "missing end marker or role header is why answers ramble or never stop.")
        hint.setWordWrap(True)
        hint.setStyleSheet("color: gray;")
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary_label)
        layout.addWidget(self.fallback_label)
        layout.addWidget(self.retrieved_label)
        layout.addWidget(self.text_edit, 1)
        layout.addWidget(hint)
        layout.addWidget(buttons)
        self.resize(760, 560)
        self.show_prompt(self.prompt)

    def show_prompt(self, prompt: dict[str, Any] | None) -> None:
        self.prompt = prompt or {}
        if not self.prompt:
            self.summary_label.setText("The model did not report a prompt for this answer "
                                       "(it was written before the prompt could be recorded).")
            self.text_edit.setPlainText("")
            self.fallback_label.hide()
            self.copy_button.setEnabled(False)
            return
        self.summary_label.setText(describe_prompt(self.prompt))
        fallback = self.prompt.get("fallback")
        if fallback:
            self.fallback_label.setText(
                f"<b>No chat template in this model.</b> A fallback format was used: "
                f"{FALLBACK_NAMES.get(fallback, fallback)}. If answers look wrong, try the MedAlpaca "
                "format or raw text in the Prompt settings.")
        self.fallback_label.setVisible(bool(fallback))
        self.text_edit.setPlainText(str(self.prompt.get("text", "")))
        self.copy_button.setEnabled(True)

    def _on_copy_button_clicked(self) -> None:
        QGuiApplication.clipboard().setText(self.text_edit.toPlainText())
