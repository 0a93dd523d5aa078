"""Wizard page 1: the base model, from the models the app found (HF folders and GGUF files)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Slot
from PySide6.QtGui import QBrush, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QStackedWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QWidget,
)

from medalpaca_desktop.core.model_check import ModelCheckError, check_model, fitting_targets
from medalpaca_desktop.core.model_info import ModelInfo, ModelInspectError, format_parameters, format_size
from medalpaca_desktop.core.models import inspect_model
from medalpaca_desktop.ui.finetune.page_base import WizardPage, WizardState

GGUF_NOTE = ("GGUF file: de-quantized to full precision before training (once, cached); the result's "
             "quality is that of the quantized file, not of the original model.")
COLUMNS = ("Model", "Kind", "Architecture", "Parameters", "Size", "Fine-tunable")


def usable_as_base(info: ModelInfo) -> str | None:
    """Why this model cannot be a base, or None."""
    if info.kind == "adapter":
        return f"{info.name} is a LoRA adapter; choose its base model (adapters are trained on a base)."
    if not info.supported:
        return f"{info.name} cannot be fine-tuned here: {info.note or 'its architecture is not supported.'}"
    if info.kind == "hf" and info.weight_format == "none":
        return f"{info.name} has no weight files in its folder."
    return None


class ModelPage(WizardPage):
    title = "1. Base model"

    def __init__(self, state: WizardState, parent: QWidget | None = None) -> None:
        super().__init__(state, "The model to fine-tune. Models from the Models tab are listed; a GGUF file "
                                "(such as the demo model) is de-quantized first.", parent)
        self._models: list[ModelInfo] = []
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setAlternatingRowColors(True)
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.tree.header().setStretchLastSection(False)
        self.tree.itemSelectionChanged.connect(self._on_tree_item_selection_changed)
        self.empty_label = QLabel("No models found yet. Download one in the Models tab, or add a model "
                                  "folder or GGUF file here.")
        self.empty_label.setWordWrap(True)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.details_label = QLabel()
        self.details_label.setWordWrap(True)
        self.details_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.add_folder_button = QPushButton("Add model folder…")
        self.add_folder_button.setToolTip("A Hugging Face model folder (config.json and weights)")
        self.add_folder_button.clicked.connect(self._on_add_folder_button_clicked)
        self.add_file_button = QPushButton("Add GGUF file…")
        self.add_file_button.setToolTip("A .gguf model file (it is de-quantized for training)")
        self.add_file_button.clicked.connect(self._on_add_file_button_clicked)
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_folder_button)
        buttons.addWidget(self.add_file_button)
        buttons.addStretch(1)
        self.listing = QStackedWidget()
        self.listing.addWidget(self.tree)
        self.listing.addWidget(self.empty_label)
        self.body.addWidget(self.listing, 1)
        self.body.addWidget(self.details_label)
        self.body.addLayout(buttons)
        self._refresh_empty()

    # -- models ------------------------------------------------------------------

    def set_models(self, models: list[ModelInfo]) -> None:
        keep = self.selected_model()
        extra = [m for m in self._models if m.extra.get("added_in_wizard")]
        self._models = [m for m in models if m.kind in ("hf", "gguf")]
        known = {m.path for m in self._models}
        self._models += [m for m in extra if m.path not in known]
        self._fill()
        wanted = keep.path if keep is not None else (self.state.config.base_model or "")
        if not (wanted and self.select_path(wanted)):
            self.select_default()

    def models(self) -> list[ModelInfo]:
        return list(self._models)

    def add_model(self, info: ModelInfo) -> None:
        """A model the user picked by hand (also listed after the next discovery)."""
        info.extra["added_in_wizard"] = True
        self._models = [m for m in self._models if m.path != info.path] + [info]
        self._fill()
        self.select_path(info.path)

    def _fill(self) -> None:
        self.tree.blockSignals(True)
        self.tree.clear()
        grey = self.palette().brush(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text)
        for info in self._models:
            why = usable_as_base(info)
            kind = "GGUF (de-quantized first)" if info.kind == "gguf" else "Hugging Face"
            if info.quantization and info.kind == "gguf":
                kind = f"GGUF {info.quantization} (de-quantized first)"
            item = QTreeWidgetItem([info.name, kind, info.architecture or "?", format_parameters(info.parameters),
                                    format_size(info.size_bytes), "no" if why else "yes"])
            item.setData(0, Qt.ItemDataRole.UserRole, info.path)
            item.setToolTip(0, info.path)
            if why:
                for col in range(len(COLUMNS)):
                    item.setForeground(col, QBrush(grey))
                    item.setToolTip(col, why)
            self.tree.addTopLevelItem(item)
        for col in range(1, len(COLUMNS)):
            self.tree.resizeColumnToContents(col)
        self.tree.blockSignals(False)
        self._refresh_empty()
        if self.selected_model() is None:
            self.details_label.setText("")

    def _refresh_empty(self) -> None:
        self.listing.setCurrentWidget(self.tree if self._models else self.empty_label)

    def select_path(self, path: str) -> bool:
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            if item.data(0, Qt.ItemDataRole.UserRole) == path:
                self.tree.setCurrentItem(item)
                return True
        return False

    def select_default(self) -> None:
        """The demo model (tiny, runs on a CPU) or the first model that can be fine-tuned."""
        usable = [m for m in self._models if usable_as_base(m) is None]
        demo = [m for m in usable if m.is_demo]
        choice = (demo or usable or [None])[0]
        if choice is not None:
            self.select_path(choice.path)

    def selected_model(self) -> ModelInfo | None:
        item = self.tree.currentItem()
        if item is None or not item.isSelected():
            return None
        path = item.data(0, Qt.ItemDataRole.UserRole)
        return next((m for m in self._models if m.path == path), None)

    @Slot()
    def _on_tree_item_selection_changed(self) -> None:
        info = self.selected_model()
        self.show_problem(None)
        if info is None:
            self.details_label.setText("")
            return
        lines = [f"<b>{info.name}</b> — {info.path}"]
        why = usable_as_base(info)
        if why:
            self.show_problem(why)
        if info.kind == "gguf":
            lines.append(GGUF_NOTE)
        if info.note and not why:
            lines.append(info.note)
        self.details_label.setText("<br>".join(lines))
        self.sig_changed.emit()

    # -- adding by hand ------------------------------------------------------------

    @Slot()
    def _on_add_folder_button_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a Hugging Face model folder")
        if folder:
            self.add_path(folder)

    @Slot()
    def _on_add_file_button_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a GGUF model file", "", "GGUF models (*.gguf)")
        if path:
            self.add_path(path)

    def add_path(self, path: str) -> bool:
        try:
            info = inspect_model(Path(path))
        except ModelInspectError as exc:
            self.show_problem(str(exc))
            return False
        self.add_model(info)
        return True

    # -- wizard hooks ----------------------------------------------------------------

    def enter(self) -> None:
        if self.selected_model() is None and self.state.config.base_model:
            self.select_path(self.state.config.base_model)

    def commit(self) -> str | None:
        info = self.selected_model()
        if info is None:
            return ("Choose a base model to fine-tune." if self._models
                    else "No model to fine-tune yet: download one in the Models tab or add a folder or GGUF file.")
        why = usable_as_base(info)
        if why:
            return why
        try:
            check_model(info.path)  # what the trainer checks first: whole weight files, a tokenizer, no pickle
        except ModelCheckError as exc:
            return str(exc)
        if self.state.model is None or self.state.model.path != info.path:
            self.state.preview = None
        self.state.model = info
        self.state.config.base_model = info.path
        if info.kind == "hf":
            targets = list(self.state.config.lora_target_modules)
            self.state.config.lora_target_modules = fitting_targets(info.path, targets)
        return None
