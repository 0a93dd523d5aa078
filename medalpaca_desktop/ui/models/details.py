"""The details pane: every piece of metadata of one model, plus its chat template."""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QFormLayout,
    QFrame,
    QLabel,
    QPlainTextEdit,
    QScrollArea,
    QSizePolicy,
    QSpacerItem,
    QVBoxLayout,
    QWidget,
)

from medalpaca_desktop.core.model_info import ModelInfo, format_parameters, format_size
from medalpaca_desktop.core.models import PICKLE_NOTE, SUPPORTED_LABEL
from medalpaca_desktop.ui.models.table_model import kind_label, source_label

EXTRA_LABELS = {
    "general_name": "Name in file",
    "gguf_version": "GGUF version",
    "tensor_count": "Tensors",
    "block_count": "Layers",
    "num_hidden_layers": "Layers",
    "embedding_length": "Hidden size",
    "hidden_size": "Hidden size",
    "vocab_size": "Vocabulary",
    "split_parts": "Split into parts",
    "parameters_estimated": "Parameter count estimated",
    "r": "LoRA rank (r)",
    "alpha": "LoRA alpha",
    "dropout": "LoRA dropout",
    "targets": "Target modules",
    "task_type": "Task type",
}
BANNER_STYLES = {
    "info": "background: #e8f1f8; color: #123a52; border: 1px solid #9cc3dd;",
    "warning": "background: #fff4e0; color: #5a3a00; border: 1px solid #e0b25c;",
}


def _format_extra(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    text = str(value)
    return text if len(text) <= 300 else text[:300] + "…"


def model_rows(info: ModelInfo) -> list[tuple[str, str]]:
    """(label, value) pairs for everything known about `info`, in reading order."""
    params = format_parameters(info.parameters)
    if info.parameters and info.parameters >= 1000:
        params += f"  ({info.parameters:,})"
    rows = [
        ("Kind", kind_label(info)),
        ("Source", source_label(info)),
        ("Path", info.path),
        ("Architecture", info.architecture or "-"),
    ]
    if info.model_type and info.model_type != info.architecture:
        rows.append(("Model type", info.model_type))
    rows += [
        ("Parameters", params),
        ("Weights", info.weight_format or "-"),
    ]
    if info.dtype or info.kind != "gguf":  # a GGUF file's type is its quantization
        rows.append(("Data type", info.dtype or "-"))
    rows += [
        ("Quantization", info.quantization or "none"),
        ("Context length", f"{info.context_length:,} tokens" if info.context_length else "-"),
        ("Chat template", "yes" if info.has_chat_template else "no"),
        ("Size on disk", format_size(info.size_bytes)),
    ]
    if info.kind == "adapter":
        rows.append(("Base model", info.base_model or "-"))
        rows.append(("Adapter type", info.adapter_type or "-"))
    rows.append(("Supported", "yes" if info.supported else "no: not an architecture the app handles"))
    rows.append(("Loaded by default", "yes" if info.loadable_by_default else "no"))
    seen = {label for label, _ in rows}
    for key, value in info.extra.items():
        label = EXTRA_LABELS.get(key, key.replace("_", " ").capitalize())
        if value is None or label in seen:
            continue
        seen.add(label)
        rows.append((label, _format_extra(value)))
    return rows


def model_banners(info: ModelInfo) -> list[tuple[str, str]]:
    """(style, text) notices that matter before anyone loads the model."""
    banners: list[tuple[str, str]] = []
    if info.is_demo:
        banners.append(("info", "<b>Demo model: not medical, for trying the app.</b> A small general model "
                                "shipped with the install so chat, fine-tuning and benchmarks work at once. "
                                "Its answers are not medical advice."))
    if info.pickle_weights:
        banners.append(("warning", "<b>Pickle weights: not loaded by default.</b> Files in .bin/.pt/.pth "
                                   "format can run code when loaded. <b>Convert to safetensors</b> (above) "
                                   "writes a copy that loads like any model, reading only the tensors; or "
                                   "allow pickle in Settings, only for files from a source you trust."))
    note = info.note.replace(PICKLE_NOTE, "").strip() if info.pickle_weights else info.note
    if note and not info.is_demo:
        banners.append(("info" if info.supported else "warning", html.escape(note)))
    elif not info.supported:
        banners.append(("warning", "<b>Not supported.</b> This architecture is not one the app's engines handle "
                                   f"({SUPPORTED_LABEL})."))
    return banners


class ModelDetailsPane(QScrollArea):
    """Shows one ModelInfo in full; a hint when nothing is selected."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setMinimumWidth(300)
        body = QWidget()
        self._layout = QVBoxLayout(body)
        self._layout.setContentsMargins(12, 8, 12, 8)

        self.title_label = QLabel()
        font = self.title_label.font()
        font.setPointSizeF(font.pointSizeF() * 1.3)
        font.setBold(True)
        self.title_label.setFont(font)
        self.title_label.setWordWrap(True)
        self.title_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._layout.addWidget(self.title_label)

        self._banner_box = QVBoxLayout()
        self._layout.addLayout(self._banner_box)

        self._form = QFormLayout()
        self._form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.DontWrapRows)
        self._form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self._form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        self._layout.addLayout(self._form)

        self.template_label = QLabel("<b>Chat template</b>")
        self._layout.addWidget(self.template_label)
        self.template_view = QPlainTextEdit()
        self.template_view.setReadOnly(True)
        self.template_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.template_view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.template_view.setMinimumHeight(120)
        self.template_view.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self._layout.addWidget(self.template_view, 1)
        # Takes the spare height only while the template view (which otherwise does) is hidden.
        self._tail = QSpacerItem(0, 0, QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Fixed)
        self._layout.addItem(self._tail)
        self.setWidget(body)
        self.show_model(None)

    def show_model(self, info: ModelInfo | None) -> None:
        while self._form.rowCount():
            self._form.removeRow(0)
        while self._banner_box.count():
            item = self._banner_box.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        if info is None:
            self.title_label.setText("No model selected")
            self._form.addRow(self._value_label("Select a model in the list to see its details."))
            self._show_template(False)
            return
        self.title_label.setText(info.name)
        for style, text in model_banners(info):
            banner = QLabel(text)
            banner.setWordWrap(True)
            banner.setTextFormat(Qt.TextFormat.RichText)
            banner.setStyleSheet(f"QLabel {{ {BANNER_STYLES[style]} border-radius: 4px; padding: 6px; }}")
            self._banner_box.addWidget(banner)
        for label, value in model_rows(info):
            self._form.addRow(f"{label}:", self._value_label(value))
        self._show_template(True)
        self.template_view.setPlainText(info.chat_template or "(This model has no chat template: the app will "
                                        "use the MedAlpaca prompt format or a plain prompt.)")

    def _show_template(self, visible: bool) -> None:
        self.template_label.setVisible(visible)
        self.template_view.setVisible(visible)
        vertical = QSizePolicy.Policy.Fixed if visible else QSizePolicy.Policy.Expanding
        self._tail.changeSize(0, 0, QSizePolicy.Policy.Minimum, vertical)
        self._layout.invalidate()

    @staticmethod
    def _value_label(text: str) -> QLabel:
        label = QLabel(text)
        label.setWordWrap(True)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        label.setTextFormat(Qt.TextFormat.PlainText)
        return label

    def banner_texts(self) -> list[str]:
        return [self._banner_box.itemAt(i).widget().text() for i in range(self._banner_box.count())]
