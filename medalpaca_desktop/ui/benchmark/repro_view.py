"""One run's reproducibility record (mode, template, settings, hashes, versions), shown and copyable."""

from __future__ import annotations

from typing import Any

import yaml
from PySide6.QtCore import Slot
from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from medalpaca_desktop.ui.benchmark.runs import BenchRun


def record_text(run: BenchRun) -> str:
    """YAML a person can read and paste into a methods section or an issue."""
    document: dict[str, Any] = {
        "run": run.display_name(),
        "run_dir": run.run_dir,
        "complete": run.complete,
        "record": run.record or "(this run has no reproducibility record)",
        "command": f"python -m bench run {run.run_dir}/config.yaml" if run.run_dir else None,
        "config": run.config,
    }
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


class ReproView(QWidget):
    """Pick a shown run, read its record; Copy puts the YAML on the clipboard."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runs: list[BenchRun] = []
        self.combo = QComboBox()
        self.combo.setToolTip("Which run's record to show")
        self.combo.currentIndexChanged.connect(self._on_combo_current_index_changed)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the record (YAML) to the clipboard")
        self.copy_button.clicked.connect(self.copy)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.text.setPlaceholderText("Open a run to see what it takes to reproduce it: mode, prompt template, "
                                     "sampling settings, seed, dataset and model hashes, library versions.")
        row = QHBoxLayout()
        row.addWidget(QLabel("Run:"))
        row.addWidget(self.combo, 1)
        row.addWidget(self.copy_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.text, 1)
        self.set_runs([])

    def set_runs(self, runs: list[BenchRun], names: list[str] | None = None) -> None:
        self.runs = list(runs)
        self.combo.blockSignals(True)
        self.combo.clear()
        self.combo.addItems(names or [r.display_name() for r in runs])
        self.combo.blockSignals(False)
        self._on_combo_current_index_changed(self.combo.currentIndex())

    @Slot(int)
    def _on_combo_current_index_changed(self, index: int) -> None:
        self.copy_button.setEnabled(0 <= index < len(self.runs))
        self.text.setPlainText(record_text(self.runs[index]) if 0 <= index < len(self.runs) else "")

    @Slot()
    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.text.toPlainText())
