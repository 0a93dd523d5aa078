"""Sampling, prompt format and system prompt, with MedAlpaca presets.

The fields are generated from `SamplingSettings`' dataclass fields: ranges and
tooltips come from each field's metadata, so the panel cannot drift from the
protocol. Presets are data (PRESETS) and a test validates every one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from medalpaca_desktop.core.chat_protocol import SamplingSettings

PRESETS: dict[str, dict[str, Any]] = {
    "Precise (temperature 0)": dict(temperature=0.0, top_p=1.0, top_k=40, repeat_penalty=1.1, max_tokens=512,
                                    seed=-1, stop=[]),
    "Balanced": dict(temperature=0.7, top_p=0.95, top_k=40, repeat_penalty=1.1, max_tokens=512, seed=-1, stop=[]),
    "Creative": dict(temperature=1.0, top_p=0.98, top_k=100, repeat_penalty=1.05, max_tokens=1024, seed=-1, stop=[]),
}
PRESET_HELP = {
    "Precise (temperature 0)": "Always the most likely word: the same question gets the same answer. "
                               "Best for factual questions and for comparing models.",
    "Balanced": "A little variety, still focused. A common chat setting.",
    "Creative": "More varied wording; more likely to drift. For brainstorming, not for facts.",
}
DEFAULT_PRESET = "Balanced"
CUSTOM = "Custom"

# (value sent to the host, label); "auto" is resolved by the chat tab per model.
TEMPLATE_CHOICES: list[tuple[str, str]] = [
    ("auto", "Automatic"),
    ("chat", "Model's chat template"),
    ("medalpaca", "MedAlpaca format"),
    ("raw", "Raw text"),
]
TEMPLATE_HELP = (
    "Automatic: the MedAlpaca format (### Instruction / ### Response) for MedAlpaca models, the model's own "
    "chat template for the others. Raw text: the question is continued as it is, no template.\n"
    "How the conversation is turned into the text the model reads. A wrong format is the first cause of "
    "gibberish and endless answers; the Prompt button on an answer shows exactly what was sent."
)
SYSTEM_HELP = ("Instructions the model reads before the conversation, e.g. the role it should take. "
               "Leave empty to send only the conversation.")


def resolve_template(choice: str, model_path: str | None) -> str:
    """'auto' -> 'medalpaca' for MedAlpaca-style models, otherwise 'chat'."""
    if choice != "auto":
        return choice
    return "medalpaca" if model_path and "medalpaca" in model_path.lower() else "chat"


def _label(name: str) -> str:
    return {"top_p": "Top-p", "top_k": "Top-k", "max_tokens": "Max answer tokens",
            "repeat_penalty": "Repeat penalty", "stop": "Stop texts"}.get(name, name.replace("_", " ").capitalize())


class SamplingPanel(QWidget):
    """Everything that shapes the next answer."""

    sig_settings_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._updating = False
        self.preset_combo = QComboBox()
        self.preset_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.preset_combo.setMinimumContentsLength(12)
        for name in PRESETS:
            self.preset_combo.addItem(name)
            self.preset_combo.setItemData(self.preset_combo.count() - 1, PRESET_HELP[name],
                                          Qt.ItemDataRole.ToolTipRole)
        self.preset_combo.addItem(CUSTOM)
        self.preset_combo.setToolTip("Ready-made sampling settings; changing a field below makes them Custom.")
        self.preset_combo.currentTextChanged.connect(self._on_preset_combo_text_changed)

        self.template_combo = QComboBox()
        self.template_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.template_combo.setMinimumContentsLength(12)
        for value, label in TEMPLATE_CHOICES:
            self.template_combo.addItem(label, value)
        self.template_combo.setToolTip(TEMPLATE_HELP)
        self.template_combo.currentIndexChanged.connect(self._on_field_changed)

        self.system_edit = QPlainTextEdit()
        self.system_edit.setPlaceholderText("Optional, e.g. “You are a careful assistant for physicians. "
                                            "Say when you are unsure.”")
        self.system_edit.setToolTip(SYSTEM_HELP)
        self.system_edit.setMaximumHeight(110)
        self.system_edit.textChanged.connect(self._on_field_changed)

        self.fields: dict[str, QWidget] = {}
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Preset", self.preset_combo)
        for f in dataclasses.fields(SamplingSettings):
            widget = self._make_field(f)
            help_text = f.metadata.get("help", "")
            widget.setToolTip(help_text)
            label = QLabel(_label(f.name))
            label.setToolTip(help_text)
            form.addRow(label, widget)
            self.fields[f.name] = widget

        sampling_box = QGroupBox("Sampling")
        sampling_box.setLayout(form)
        prompt_box = QGroupBox("Prompt")
        prompt_form = QFormLayout(prompt_box)
        prompt_form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        template_label = QLabel("Format")
        template_label.setToolTip(TEMPLATE_HELP)
        prompt_form.addRow(template_label, self.template_combo)
        system_label = QLabel("System prompt")
        system_label.setToolTip(SYSTEM_HELP)
        prompt_form.addRow(system_label)
        prompt_form.addRow(self.system_edit)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(prompt_box)
        layout.addWidget(sampling_box)
        layout.addStretch(1)
        self.apply_preset(DEFAULT_PRESET)

    def _make_field(self, f: dataclasses.Field) -> QWidget:
        lo, hi = f.metadata.get("minimum"), f.metadata.get("maximum")
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.type in ("float", float):
            box = QDoubleSpinBox()
            box.setDecimals(2)
            box.setSingleStep(0.05)
            box.setRange(float(lo if lo is not None else 0.0), float(hi if hi is not None else 1e6))
            box.setValue(float(default or 0.0))
            box.valueChanged.connect(self._on_field_changed)
            return box
        if f.type in ("int", int):
            spin = QSpinBox()
            spin.setRange(int(lo if lo is not None else 0), int(min(hi if hi is not None else 2**31 - 1, 2**31 - 1)))
            spin.setValue(int(default or 0))
            if f.name == "seed":
                spin.setSpecialValueText("random")
            if f.name == "top_k":
                spin.setSpecialValueText("no limit")
            spin.valueChanged.connect(self._on_field_changed)
            return spin
        line = QLineEdit()  # list[str]: stop texts, separated by " | "
        line.setPlaceholderText("none (texts separated by |)")
        line.textChanged.connect(self._on_field_changed)
        return line

    # -- values -------------------------------------------------------------------

    def settings(self) -> SamplingSettings:
        values: dict[str, Any] = {}
        for name, widget in self.fields.items():
            if isinstance(widget, QDoubleSpinBox):
                values[name] = round(widget.value(), 4)
            elif isinstance(widget, QSpinBox):
                values[name] = widget.value()
            elif isinstance(widget, QLineEdit):
                values[name] = [part.strip() for part in widget.text().split("|") if part.strip()]
        return SamplingSettings.from_dict(values)

    def set_settings(self, settings: SamplingSettings) -> None:
        self._updating = True
        try:
            for name, widget in self.fields.items():
                value = getattr(settings, name)
                if isinstance(widget, QDoubleSpinBox):
                    widget.setValue(float(value))
                elif isinstance(widget, QSpinBox):
                    widget.setValue(int(value))
                elif isinstance(widget, QLineEdit):
                    widget.setText(" | ".join(value))
        finally:
            self._updating = False
        self._sync_preset()
        self.sig_settings_changed.emit()

    def template_choice(self) -> str:
        return str(self.template_combo.currentData())

    def set_template_choice(self, value: str) -> None:
        index = self.template_combo.findData(value)
        self.template_combo.setCurrentIndex(max(0, index))

    def system_prompt(self) -> str | None:
        text = self.system_edit.toPlainText().strip()
        return text or None

    def set_system_prompt(self, text: str | None) -> None:
        self.system_edit.setPlainText(text or "")

    def to_dict(self) -> dict[str, Any]:
        """What a chat remembers: sampling, format and system prompt."""
        return {"sampling": dataclasses.asdict(self.settings()), "template": self.template_choice(),
                "system": self.system_prompt()}

    def from_dict(self, data: dict[str, Any] | None) -> None:
        data = data or {}
        if data.get("sampling"):
            self.set_settings(SamplingSettings.from_dict(data["sampling"]))
        else:
            self.apply_preset(DEFAULT_PRESET)
        self.set_template_choice(str(data.get("template") or "auto"))
        self.set_system_prompt(data.get("system"))

    # -- presets ------------------------------------------------------------------

    def apply_preset(self, name: str) -> None:
        if name in PRESETS:
            self.set_settings(SamplingSettings.from_dict(PRESETS[name]))

    def preset_name(self) -> str:
        current = dataclasses.asdict(self.settings())
        for name, values in PRESETS.items():
            if dataclasses.asdict(SamplingSettings.from_dict(values)) == current:
                return name
        return CUSTOM

    def _sync_preset(self) -> None:
        self.preset_combo.blockSignals(True)
        self.preset_combo.setCurrentText(self.preset_name())
        self.preset_combo.blockSignals(False)

    @Slot(str)
    def _on_preset_combo_text_changed(self, name: str) -> None:
        if name != CUSTOM:
            self.apply_preset(name)

    @Slot()
    def _on_field_changed(self, *args: object) -> None:
        if self._updating:
            return
        self._sync_preset()
        self.sig_settings_changed.emit()
