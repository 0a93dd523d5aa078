"""Wizard page 4: hyper-parameters, built from TrainConfig's field metadata (help = tooltip).

Presets are the paper's recipes (resources/presets/*.yaml) plus a quick CPU trial. Common
fields are shown, the rest sit under Advanced; every value is checked as typed against the
field's minimum/maximum/choices and then the whole config against `TrainConfig.validate`,
and a bad value is marked on its field with the reason.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml
from PySide6.QtCore import Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from medalpaca_desktop.core.typed_config import check_limits
from medalpaca_desktop.ui.finetune.page_base import ERROR_TEXT_STYLE, INVALID_STYLE, WizardPage, WizardState
from resources import resource_path
from trainer.config import ConfigError, TrainConfig

# Fields other pages edit (or that a preset must never change).
ELSEWHERE = {"base_model", "method", "data", "data_weights", "output_dir", "val_split", "template",
             "train_on_inputs", "precision", "num_processes", "gradient_checkpointing"}
LORA_FIELDS = {"lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"}
QUICK_TRIAL = "quick-cpu-trial"
EDITOR_WIDTH = 200
QUICK_TRIAL_VALUES: dict[str, Any] = {
    "max_steps": 30, "global_batch_size": 8, "micro_batch_size": 2, "warmup_steps": 5, "learning_rate": 2e-4,
    "eval_steps": 10, "save_steps": 10, "max_length": 256,
}
QUICK_TRIAL_TEXT = ("Quick trial: the MedAlpaca LoRA recipe cut to 30 steps of 8 examples at a higher learning "
                    "rate, to see a run through on a CPU in minutes.")
LABELS = {"lora_r": "LoRA rank", "lora_alpha": "LoRA alpha", "lora_dropout": "LoRA dropout",
          "lora_target_modules": "LoRA target layers", "lr_scheduler": "LR schedule", "export_gguf": "Export GGUF",
          "max_steps": "Max steps (0 = by epochs)", "bench_task": "Benchmark while training",
          "bench_questions": "Benchmark questions", "best_by": "Best checkpoint by"}


def label_for(name: str) -> str:
    return LABELS.get(name, name.replace("_", " ").capitalize())


def preset_files() -> dict[str, Path]:
    folder = Path(str(resource_path("presets")))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def preset_values(name: str) -> tuple[dict[str, Any], str]:
    """(values, where they come from) of a preset; the quick trial is the LoRA recipe, shortened."""
    if name == QUICK_TRIAL:
        values, _ = preset_values("medalpaca-lora")
        return {**values, **QUICK_TRIAL_VALUES}, QUICK_TRIAL_TEXT
    data = yaml.safe_load(preset_files()[name].read_text(encoding="utf-8")) or {}
    source = str(data.pop("preset_source", ""))
    TrainConfig.from_dict(data)  # a broken preset file fails here, not half-applied
    return data, source


class FieldEditor(QWidget):
    """One config field: its editor, and a red line under it when its value cannot run."""

    def __init__(self, f: dataclasses.Field, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.name = f.name
        self.meta = f.metadata
        self.default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]  # mypy: a factory field
        self.error_label = QLabel()
        self.error_label.setStyleSheet(ERROR_TEXT_STYLE)
        self.error_label.setWordWrap(True)
        self.error_label.setVisible(False)
        choices = self.meta.get("choices")
        if isinstance(self.default, bool):
            self.editor: QWidget = QCheckBox()
        elif choices:
            self.editor = QComboBox()
            self.editor.addItems(list(choices))
        else:
            self.editor = QLineEdit()
        self.editor.setToolTip(self._tooltip())
        if not isinstance(self.editor, QCheckBox):
            self.editor.setFixedWidth(EDITOR_WIDTH)
        self.help_label = QLabel(str(self.meta.get("help", "")))
        self.help_label.setWordWrap(True)
        self.help_label.setStyleSheet("color: palette(placeholder-text); font-size: small;")
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.editor)
        row.addWidget(self.help_label, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(row)
        layout.addWidget(self.error_label)

    def _tooltip(self) -> str:
        text = str(self.meta.get("help", ""))
        lo, hi = self.meta.get("minimum"), self.meta.get("maximum")
        if lo is not None or hi is not None:
            text += f"\nAllowed: {lo if lo is not None else '…'} to {hi if hi is not None else '…'}."
        return text + f"\nConfig key: {self.name}"

    def set_value(self, value: Any) -> None:
        if isinstance(self.editor, QCheckBox):
            self.editor.setChecked(bool(value))
        elif isinstance(self.editor, QComboBox):
            self.editor.setCurrentText(str(value))
        elif isinstance(value, list):
            self.editor.setText(", ".join(str(v) for v in value))
        elif isinstance(value, float):
            self.editor.setText(f"{value:g}")
        else:
            self.editor.setText(str(value))

    def value(self) -> Any:
        """The typed value; raises ConfigError with the reason when the text is not one."""
        if isinstance(self.editor, QCheckBox):
            return self.editor.isChecked()
        if isinstance(self.editor, QComboBox):
            return self.editor.currentText()
        text = self.editor.text().strip()
        if isinstance(self.default, list):
            return [t.strip() for t in text.replace(";", ",").split(",") if t.strip()]
        if isinstance(self.default, (int, float)) and not text:
            raise ConfigError(f"{self.name}: give a number")
        try:
            if isinstance(self.default, float):
                return float(text)
            if isinstance(self.default, int):
                return int(text)
        except ValueError:
            kind = "a whole number" if isinstance(self.default, int) else "a number (e.g. 2e-5)"
            raise ConfigError(f"{self.name}: {text!r} is not {kind}") from None
        return text

    def set_error(self, message: str | None) -> None:
        self.error_label.setText(message or "")
        self.error_label.setVisible(bool(message))
        self.editor.setStyleSheet(INVALID_STYLE if message and isinstance(self.editor, QLineEdit) else "")
        self.editor.setToolTip((message + "\n\n" if message else "") + self._tooltip())

    def error(self) -> str | None:
        return self.error_label.text() if self.error_label.isVisible() else None

    def connect_changed(self, slot: Any) -> None:
        if isinstance(self.editor, QCheckBox):
            self.editor.toggled.connect(slot)
        elif isinstance(self.editor, QComboBox):
            self.editor.currentIndexChanged.connect(slot)
        else:
            self.editor.textChanged.connect(slot)


class SettingsPage(WizardPage):
    title = "4. Settings"

    def __init__(self, state: WizardState, parent: QWidget | None = None) -> None:
        super().__init__(state, "Start from a recipe; the common settings are here, the rest under Advanced. "
                                "Hover a field for what it does.", parent)
        self.preset_combo = QComboBox()
        self.preset_combo.addItem("Quick trial on the CPU (LoRA, 30 steps)", QUICK_TRIAL)
        for name in preset_files():
            self.preset_combo.addItem(name, name)
        self.preset_combo.addItem("Custom", "")
        self.preset_combo.activated.connect(self._on_preset_combo_activated)
        self.preset_source = QLabel()
        self.preset_source.setWordWrap(True)
        self.accumulation_label = QLabel()
        top = QHBoxLayout()
        top.addWidget(QLabel("Preset:"))
        top.addWidget(self.preset_combo, 1)
        self.body.addLayout(top)
        self.body.addWidget(self.preset_source)

        self.editors: dict[str, FieldEditor] = {}
        common = QFormLayout()
        advanced = QFormLayout()
        for f in dataclasses.fields(TrainConfig):
            if f.name in ELSEWHERE:
                continue
            editor = FieldEditor(f)
            editor.connect_changed(self._on_field_changed)
            self.editors[f.name] = editor
            target = common if f.metadata.get("group") == "common" else advanced
            target.addRow(label_for(f.name) + ":", editor)
            if f.name == "micro_batch_size":
                common.addRow("", self.accumulation_label)
        self.advanced_box = QGroupBox("Advanced")
        self.advanced_box.setCheckable(True)
        self.advanced_box.setChecked(False)
        self.advanced_body = QWidget()
        self.advanced_body.setLayout(advanced)
        self.advanced_body.setVisible(False)
        box_layout = QVBoxLayout(self.advanced_box)
        box_layout.addWidget(self.advanced_body)
        self.advanced_box.toggled.connect(self.advanced_body.setVisible)
        inner = QWidget()
        inner_layout = QVBoxLayout(inner)
        inner_layout.addLayout(common)
        inner_layout.addWidget(self.advanced_box)
        inner_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(inner)
        self.body.addWidget(scroll, 1)
        self._loading = False

    # -- presets -----------------------------------------------------------------------

    def apply_preset(self, name: str) -> None:
        """The recipe: this page's fields from the preset (defaults where it names none), and the preset's
        other values except base, data, method and run folder (chosen on their pages)."""
        values, source = preset_values(name)
        config = self.state.config
        defaults = TrainConfig()
        for key in self.editors:
            setattr(config, key, getattr(defaults, key))
        for key, value in values.items():
            if key not in ("base_model", "data", "output_dir", "method"):
                setattr(config, key, getattr(TrainConfig.from_dict({key: value}), key))
        self.state.preset = name
        method = values.get("method")
        if method and method != config.method:
            source += f" (recipe for method {method}; your method {config.method} is kept)"
        self.preset_source.setText(f"<i>Source: {source}</i>" if source else "")
        self.load_fields()

    @Slot(int)
    def _on_preset_combo_activated(self, index: int) -> None:
        name = self.preset_combo.itemData(index)
        if name:
            self.apply_preset(name)

    # -- fields --------------------------------------------------------------------------

    def load_fields(self) -> None:
        self._loading = True
        for name, editor in self.editors.items():
            editor.set_value(getattr(self.state.config, name))
            editor.set_error(None)
        self._loading = False
        index = self.preset_combo.findData(self.state.preset)
        self.preset_combo.setCurrentIndex(index if index >= 0 else self.preset_combo.count() - 1)
        self._refresh_lora()
        self.check_fields()

    def _refresh_lora(self) -> None:
        adapters = self.state.config.method != "full"
        for name in LORA_FIELDS:
            self.editors[name].setEnabled(adapters)
            if not adapters:
                self.editors[name].editor.setToolTip("A full fine-tune trains every weight: no LoRA settings.")
        self.editors["merge_adapter"].setEnabled(adapters)

    @Slot()
    def _on_field_changed(self) -> None:
        if self._loading:
            return
        if self.state.preset:
            self.state.preset = ""
            self.preset_combo.setCurrentIndex(self.preset_combo.count() - 1)
            self.preset_source.setText(self.preset_source.text().replace("Source:", "Started from:", 1))
        self.check_fields()
        self.sig_changed.emit()

    def check_fields(self) -> dict[str, str]:
        """Mark every field whose value cannot run; write the good ones into the config."""
        errors: dict[str, str] = {}
        values: dict[str, Any] = {}
        for name, editor in self.editors.items():
            try:
                value = editor.value()
                single = dataclasses.replace(TrainConfig(), **{name: value})
                _check_field(single, name)
                values[name] = value
            except ConfigError as exc:
                errors[name] = str(exc)
        config = self.state.config
        for name, value in values.items():
            setattr(config, name, value)
        if not errors:
            probe = dataclasses.replace(config, base_model=config.base_model or "x", data=config.data or ["x"],
                                        output_dir=config.output_dir or "x")
            try:
                probe.validate()
            except ConfigError as exc:
                field_name = str(exc).split(":", 1)[0]
                errors[field_name if field_name in self.editors else "_"] = str(exc)
        for name, editor in self.editors.items():
            editor.set_error(errors.get(name))
        steps = config.gradient_accumulation()
        self.accumulation_label.setText(
            f"<small>{config.micro_batch_size} per pass × {config.num_processes} process(es) × {steps} "
            "accumulation steps per optimizer step</small>")
        self.show_problem(_summary(errors))
        return errors

    # -- wizard hooks ----------------------------------------------------------------------

    def enter(self) -> None:
        self.load_fields()

    def commit(self) -> str | None:
        return _summary(self.check_fields())


def _check_field(config: TrainConfig, name: str) -> None:
    f = {f.name: f for f in dataclasses.fields(TrainConfig)}[name]
    check_limits(name, f, getattr(config, name))


def _summary(errors: dict[str, str]) -> str | None:
    if not errors:
        return None
    names = ", ".join(label_for(n) for n in errors if n != "_")
    first = next(iter(errors.values()))
    return f"Fix the marked field{'s' if len(errors) > 1 else ''} ({names or 'settings'}): {first}"
