"""Edit AppSettings: one widget per dataclass field, its help as tooltip and caption.

Adding a field to AppSettings adds it here without touching this file (bool,
int, float, str and list[str] fields are understood).
"""

from __future__ import annotations

import dataclasses
import html
import typing
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from medalpaca_desktop.core.settings import AppSettings
from medalpaca_desktop.ui.settings_store import SettingsStore
from medalpaca_desktop.ui.workers import describe_exception

FIELD_LABELS = {
    "model_folders": "Model folders",
    "scan_hf_cache": "Search the Hugging Face cache",
    "scan_other_apps": "Search other apps' model folders",
    "allow_pickle_weights": "Allow pickle weights (.bin/.pt/.pth)",
}


def field_label(name: str) -> str:
    return FIELD_LABELS.get(name, name.replace("_", " ").capitalize())


class FolderListEditor(QWidget):
    """A list of folders with Add…/Remove buttons."""

    def __init__(self, folders: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.list_widget = QListWidget()
        self.list_widget.addItems(folders)
        self.list_widget.setMinimumHeight(90)
        self.list_widget.setMaximumHeight(150)
        self.add_button = QPushButton("Add…")
        self.add_button.clicked.connect(self._on_add_button_clicked)
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(self._on_remove_button_clicked)
        self.remove_button.setEnabled(False)
        self.list_widget.itemSelectionChanged.connect(
            lambda: self.remove_button.setEnabled(bool(self.list_widget.selectedItems())))
        buttons = QVBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        buttons.addStretch(1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.list_widget, 1)
        layout.addLayout(buttons)

    def folders(self) -> list[str]:
        return [self.list_widget.item(i).text() for i in range(self.list_widget.count())]

    def add_folder(self, folder: str) -> None:
        folder = str(Path(folder).expanduser().absolute())
        if folder not in self.folders():
            self.list_widget.addItem(folder)

    @Slot()
    def _on_add_button_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a model folder", str(Path.home()))
        if folder:
            self.add_folder(folder)

    @Slot()
    def _on_remove_button_clicked(self) -> None:
        for item in self.list_widget.selectedItems():
            self.list_widget.takeItem(self.list_widget.row(item))


class SettingsDialog(QDialog):
    """Settings for the whole app (the CLI reads the same settings.yaml)."""

    def __init__(self, store: SettingsStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setMinimumWidth(560)
        self._store = store
        self.editors: dict[str, QWidget] = {}
        layout = QVBoxLayout(self)
        layout.setSpacing(6)

        if store.load_error:
            warning = QLabel(f"<b>Your settings file could not be read</b>, so defaults are shown. "
                             f"Saving keeps a copy of it as {store.backup_path().name}.<br>"
                             f"{html.escape(store.load_error_summary())}")
            warning.setToolTip(store.load_error)
            warning.setWordWrap(True)
            warning.setStyleSheet("QLabel { background: #fff4e0; color: #5a3a00; border: 1px solid #e0b25c;"
                                  " border-radius: 4px; padding: 6px; }")
            layout.addWidget(warning)

        settings = store.settings
        hints = typing.get_type_hints(AppSettings)
        for f in dataclasses.fields(AppSettings):
            editor = self._make_editor(f.name, hints[f.name], getattr(settings, f.name))
            help_text = AppSettings.field_help(f.name)
            editor.setToolTip(help_text)
            self.editors[f.name] = editor
            if not isinstance(editor, QCheckBox):
                caption = QLabel(f"<b>{field_label(f.name)}</b>")
                caption.setToolTip(help_text)
                layout.addWidget(caption)
            layout.addWidget(editor)
            note = QLabel(help_text)
            note.setWordWrap(True)
            note.setToolTip(help_text)
            note.setContentsMargins(22 if isinstance(editor, QCheckBox) else 0, 0, 0, 8)
            note.setStyleSheet("QLabel { color: palette(placeholder-text); }")
            layout.addWidget(note)

        layout.addWidget(QLabel(f"Saved in {store.path}"), 0, Qt.AlignmentFlag.AlignLeft)
        self.button_box = QDialogButtonBox(QDialogButtonBox.StandardButton.Save
                                           | QDialogButtonBox.StandardButton.Cancel)
        self.button_box.accepted.connect(self.accept)
        self.button_box.rejected.connect(self.reject)
        layout.addStretch(1)
        layout.addWidget(self.button_box)

    @staticmethod
    def _make_editor(name: str, kind: Any, value: Any) -> QWidget:
        if kind is bool:
            box = QCheckBox(field_label(name))
            box.setChecked(bool(value))
            return box
        if typing.get_origin(kind) is list:
            return FolderListEditor([str(v) for v in value])
        if kind is int:
            spin = QSpinBox()
            spin.setRange(-(2**31), 2**31 - 1)
            spin.setValue(int(value))
            return spin
        if kind is float:
            dspin = QDoubleSpinBox()
            dspin.setRange(-1e12, 1e12)
            dspin.setDecimals(4)
            dspin.setValue(float(value))
            return dspin
        return QLineEdit("" if value is None else str(value))

    def edited_settings(self) -> AppSettings:
        """AppSettings as the widgets show them now."""
        values: dict[str, Any] = {}
        for name, editor in self.editors.items():
            if isinstance(editor, QCheckBox):
                values[name] = editor.isChecked()
            elif isinstance(editor, FolderListEditor):
                values[name] = editor.folders()
            elif isinstance(editor, (QSpinBox, QDoubleSpinBox)):
                values[name] = editor.value()
            elif isinstance(editor, QLineEdit):
                values[name] = editor.text()
        return AppSettings.from_dict(values)

    def accept(self) -> None:
        try:
            self._store.save(self.edited_settings())
        except OSError as exc:
            QMessageBox.warning(self, "Settings not saved", f"Could not save the settings: {describe_exception(exc)}")
            return
        super().accept()
