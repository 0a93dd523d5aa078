"""Wizard page 2: training data, checked and shown as the model will see it."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from PySide6.QtCore import Qt, Slot
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from medalpaca_desktop.ui.finetune.page_base import WizardPage, WizardState, banner
from medalpaca_desktop.ui.finetune.page_data_preview import (
    PreviewJob,
    TokenHistogram,
    preview_key,
    rows_html,
    stats_text,
)
from resources import resource_path
from trainer.config import TEMPLATES, TrainConfig

DATA_FILTER = "Instruction data (*.jsonl *.json *.ndjson *.csv *.tsv);;All files (*)"
NO_COLUMN = "(none)"
TABLE_SUFFIXES = (".csv", ".tsv")


def sample_data_path() -> str:
    """The bundled sample: 120 medical flash-card records (resources/sample_data)."""
    return str(Path(str(resource_path("sample_data", "medical_instructions.jsonl"))))


def split_source(text: str) -> tuple[str, dict[str, str]]:
    """'file.csv?instruction=q&output=a' -> ('file.csv', {'instruction': 'q', 'output': 'a'})."""
    head, sep, query = text.rpartition("?")
    if not sep or "=" not in query:
        return text, {}
    pairs = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
    return head, pairs


def join_source(path: str, mapping: dict[str, str]) -> str:
    used = {k: v for k, v in mapping.items() if v and v != k}
    return f"{path}?{urlencode(used)}" if used else path


def _records(n: int) -> str:
    return f"{n} record{'s' if n != 1 else ''}"


class DataPage(WizardPage):
    title = "2. Data"

    def __init__(self, state: WizardState, parent: QWidget | None = None) -> None:
        super().__init__(state, "Instruction records (instruction, input, output) as JSON Lines, JSON or CSV/TSV, "
                                "or a dataset saved with the datasets library. They are checked and shown as the "
                                "model will see them.", parent)
        self.job = PreviewJob(self)
        self.job.sig_preview_received.connect(self._on_job_preview_received)
        self.job.sig_preview_failed.connect(self._on_job_preview_failed)

        # sources
        self.sources = QListWidget()
        self.sources.setMaximumHeight(90)
        self.sources.currentRowChanged.connect(self._on_sources_current_row_changed)
        self.add_files_button = QPushButton("Add files…")
        self.add_files_button.clicked.connect(self._on_add_files_button_clicked)
        self.add_dataset_button = QPushButton("Add saved dataset…")
        self.add_dataset_button.setToolTip("A folder written by datasets' save_to_disk")
        self.add_dataset_button.clicked.connect(self._on_add_dataset_button_clicked)
        self.sample_button = QPushButton("Use the sample data")
        self.sample_button.setToolTip("120 medical flash-card records shipped with the app, for a first try")
        self.sample_button.clicked.connect(self._on_sample_button_clicked)
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(self._on_remove_button_clicked)
        self.recheck_button = QPushButton("Check again")
        self.recheck_button.setToolTip("Read the files again (after fixing them)")
        self.recheck_button.clicked.connect(self._on_recheck_button_clicked)
        buttons = QVBoxLayout()  # a column beside the list: the page must fit a 1280-pixel window
        for b in (self.add_files_button, self.add_dataset_button, self.sample_button, self.remove_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.recheck_button)

        # CSV column mapping
        self.mapping_box = QGroupBox("Columns of the selected table")
        self.mapping_combos: dict[str, QComboBox] = {}
        mapping_row = QHBoxLayout(self.mapping_box)
        for name in ("instruction", "input", "output"):
            combo = QComboBox()
            combo.setToolTip(f"The column that holds the {name}" + (" (optional)" if name == "input" else ""))
            combo.activated.connect(self._on_mapping_combo_activated)
            self.mapping_combos[name] = combo
            mapping_row.addWidget(QLabel(f"{name.capitalize()}:"))
            mapping_row.addWidget(combo, 1)
        self.mapping_box.setVisible(False)

        # options that change what the model sees
        self.val_spin = QDoubleSpinBox()
        self.val_spin.setRange(0.0, 50.0)
        self.val_spin.setDecimals(1)
        self.val_spin.setSuffix(" %")
        self.val_spin.setToolTip(TrainConfig.field_help("val_split"))
        self.template_combo = QComboBox()
        self.template_combo.addItems(list(TEMPLATES))
        self.template_combo.setToolTip(TrainConfig.field_help("template"))
        self.template_combo.activated.connect(self._on_option_changed)
        self.inputs_check = QCheckBox("Also learn the prompt (train on inputs)")
        self.inputs_check.setToolTip(TrainConfig.field_help("train_on_inputs"))
        self.inputs_check.toggled.connect(self._on_option_changed)
        options = QFormLayout()
        options.addRow("Validation split:", self.val_spin)
        options.addRow("Prompt template:", self.template_combo)
        options.addRow("", self.inputs_check)

        # the preview
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setMaximumHeight(10)
        self.busy.setTextVisible(False)
        self.busy.setVisible(False)
        self.rows_view = QTextBrowser()
        self.rows_view.setOpenLinks(False)
        self.histogram = TokenHistogram()
        self.stats_label = QLabel()
        self.stats_label.setWordWrap(True)
        self.errors_list = QListWidget()
        self.errors_list.setWordWrap(True)
        self.errors_list.setToolTip("Record problems, with file and line; fix the file and press Check again")
        self.errors_note = banner("noteBanner")
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(QLabel("<b>Token lengths</b>"))
        right_layout.addWidget(self.histogram, 1)
        right_layout.addWidget(self.stats_label)
        right_layout.addWidget(QLabel("<b>Problems</b> (file and line)"))
        right_layout.addWidget(self.errors_list, 1)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(QLabel("<b>First records as the model sees them</b>"))
        left_layout.addWidget(self.rows_view, 1)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)

        top = QHBoxLayout()
        source_col = QHBoxLayout()
        source_col.addWidget(self.sources, 1)
        source_col.addLayout(buttons)
        top.addLayout(source_col, 3)
        top.addLayout(options, 2)
        self.body.addLayout(top)
        self.body.addWidget(self.mapping_box)
        self.body.addWidget(self.status_label)
        self.body.addWidget(self.busy)
        self.body.addWidget(splitter, 1)

    # -- sources ----------------------------------------------------------------------

    def source_texts(self) -> list[str]:
        return [self.sources.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.sources.count())]

    def set_sources(self, texts: list[str]) -> None:
        self.sources.clear()
        for text in texts:
            self._add_item(text)
        if texts:
            self.sources.setCurrentRow(0)

    def _add_item(self, text: str) -> None:
        item = QListWidgetItem(text)
        item.setData(Qt.ItemDataRole.UserRole, text)
        item.setToolTip(text)
        self.sources.addItem(item)

    def replace_sources(self, texts: list[str]) -> None:
        """Use exactly these sources (paths, optionally with a column mapping) and check them."""
        self.set_sources(texts)
        self._sources_changed()

    def add_sources(self, texts: list[str]) -> None:
        known = set(self.source_texts())
        for text in texts:
            if text not in known:
                self._add_item(text)
        self.sources.setCurrentRow(self.sources.count() - 1)
        self._sources_changed()

    def _sources_changed(self) -> None:
        self.state.config.data = self.source_texts()
        self.request_preview()
        self.sig_changed.emit()

    @Slot()
    def _on_add_files_button_clicked(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Choose training data", "", DATA_FILTER)
        if paths:
            self.add_sources(paths)

    @Slot()
    def _on_add_dataset_button_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a saved dataset folder")
        if folder:
            self.add_sources([folder])

    @Slot()
    def _on_sample_button_clicked(self) -> None:
        self.add_sources([sample_data_path()])

    @Slot()
    def _on_remove_button_clicked(self) -> None:
        row = self.sources.currentRow()
        if row >= 0:
            self.sources.takeItem(row)
            self._sources_changed()

    @Slot()
    def _on_recheck_button_clicked(self) -> None:
        self.request_preview(force=True)

    @Slot()
    def _on_option_changed(self) -> None:
        self._write_options()
        self.request_preview()

    # -- CSV mapping --------------------------------------------------------------------

    @Slot(int)
    def _on_sources_current_row_changed(self, row: int) -> None:
        self._show_mapping()

    def _source_report(self, text: str) -> dict[str, Any] | None:
        for report in (self.state.preview or {}).get("sources", []):
            if report.get("source") == text:
                return report
        return None

    def _show_mapping(self) -> None:
        item = self.sources.currentItem()
        text = item.data(Qt.ItemDataRole.UserRole) if item else ""
        path, mapping = split_source(text)
        report = self._source_report(text)
        columns = list(report.get("columns", [])) if report else []
        is_table = Path(path).suffix.lower() in TABLE_SUFFIXES
        self.mapping_box.setVisible(bool(is_table and columns))
        if not (is_table and columns):
            return
        self.mapping_box.setTitle(f"Columns of {Path(path).name}")
        for name, combo in self.mapping_combos.items():
            combo.clear()
            if name == "input":
                combo.addItem(NO_COLUMN)
            combo.addItems(columns)
            current = mapping.get(name, name)
            index = combo.findText(current)
            combo.setCurrentIndex(index if index >= 0 else (0 if name == "input" else -1))

    @Slot()
    def _on_mapping_combo_activated(self) -> None:
        item = self.sources.currentItem()
        if item is None:
            return
        path, _ = split_source(item.data(Qt.ItemDataRole.UserRole))
        mapping = {name: combo.currentText() for name, combo in self.mapping_combos.items()
                   if combo.currentText() and combo.currentText() != NO_COLUMN}
        self.set_mapping(self.sources.currentRow(), mapping, path)

    def set_mapping(self, row: int, mapping: dict[str, str], path: str | None = None) -> None:
        """Point a table source's instruction/input/output at its columns."""
        item = self.sources.item(row)
        path = path or split_source(item.data(Qt.ItemDataRole.UserRole))[0]
        text = join_source(path, mapping)
        item.setData(Qt.ItemDataRole.UserRole, text)
        item.setText(text)
        item.setToolTip(text)
        self._sources_changed()

    # -- the preview ------------------------------------------------------------------------

    def _write_options(self) -> None:
        config = self.state.config
        config.val_split = round(self.val_spin.value() / 100.0, 4)
        config.template = self.template_combo.currentText()
        config.train_on_inputs = self.inputs_check.isChecked()

    def request_preview(self, force: bool = False) -> None:
        config = self.state.config
        if not config.data:
            self.state.preview, self.state.preview_key = None, ""
            self.job.shutdown()
            self.busy.setVisible(False)
            self._show_result(None)
            self.status_label.setText("Add a data file, a saved dataset, or the sample data to see a preview.")
            return
        key = preview_key(config)
        if not force and key == self.state.preview_key and (self.state.preview is not None or self.job.is_running()):
            return
        self.state.preview, self.state.preview_key = None, key
        model = self.state.model.name if self.state.model else "the base model"
        self.status_label.setText(f"Checking the data and counting tokens with {model}'s tokenizer…")
        self.busy.setVisible(True)
        self.job.request(TrainConfig.from_dict(config.to_dict()))

    def stop_checking(self) -> None:
        """Stop a running check; the next request runs it again."""
        if self.job.is_running():
            self.state.preview_key = ""
            self.busy.setVisible(False)
        self.job.shutdown()

    def is_checking(self) -> bool:
        return self.job.is_running()

    @Slot(object)
    def _on_job_preview_received(self, result: dict[str, Any]) -> None:
        if self.job.key != self.state.preview_key:
            return  # an answer for inputs that changed meanwhile; the newer request follows
        self.busy.setVisible(False)
        self.state.preview = result
        self._show_result(result)
        self._show_mapping()
        self.sig_changed.emit()

    @Slot(str)
    def _on_job_preview_failed(self, message: str) -> None:
        if self.job.key != self.state.preview_key:
            return  # stopped because the inputs changed
        self.busy.setVisible(False)
        self.state.preview = {"ok": False, "failed": message, "errors": [], "error_total": 0, "rows": [],
                              "sources": [], "records": 0}
        self._show_result(None)
        self.status_label.setText("")
        self.show_problem(f"The data check did not finish: {message.splitlines()[0] if message else ''}")
        self.sig_changed.emit()

    def _show_result(self, result: dict[str, Any] | None) -> None:
        self.errors_list.clear()
        if result is None:
            self.rows_view.setHtml("")
            self.histogram.set_histogram(None, self.state.config.max_length)
            self.stats_label.setText("")
            return
        formats = ", ".join(f"{Path(split_source(s['source'])[0]).name}: {s['format']}, {_records(s['records'])}"
                            for s in result.get("sources", []))
        self.status_label.setText(f"Detected: {formats}" if formats else "")
        self.rows_view.setHtml(rows_html(result.get("rows", [])))
        self.histogram.set_histogram(result.get("histogram"), result.get("max_length", 0))
        self.stats_label.setText(stats_text(result))
        for error in result.get("errors", []):
            item = QListWidgetItem(error["message"])
            item.setForeground(QColor("#b71c1c"))
            item.setToolTip(error["message"])
            self.errors_list.addItem(item)
        total = int(result.get("error_total", 0))
        if total > len(result.get("errors", [])):
            self.errors_list.addItem(f"… and {total - len(result['errors'])} more")
        if not total:
            self.errors_list.addItem("No problems found.")
        self.show_problem(self._result_problem(result))

    @staticmethod
    def _result_problem(result: dict[str, Any]) -> str | None:
        total = int(result.get("error_total", 0))
        if total:
            first = result["errors"][0]["message"].splitlines()[0] if result.get("errors") else ""
            return (f"The data has {total} problem{'s' if total != 1 else ''} (listed with file and line); fix "
                    f"the file and press Check again, or remove the source. First: {first}")
        if result.get("tokenizer_error"):
            return f"The tokens could not be counted: {result['tokenizer_error']}"
        return None

    # -- wizard hooks -------------------------------------------------------------------------

    def enter(self) -> None:
        config = self.state.config
        if self.source_texts() != list(config.data):
            self.set_sources(list(config.data))
        self.val_spin.setValue(config.val_split * 100.0)
        self.template_combo.setCurrentText(config.template)
        self.inputs_check.blockSignals(True)
        self.inputs_check.setChecked(config.train_on_inputs)
        self.inputs_check.blockSignals(False)
        self.request_preview()
        if self.state.preview is not None:
            self._show_result(self.state.preview)

    def commit(self) -> str | None:
        self._write_options()
        config = self.state.config
        config.data = self.source_texts()
        if not config.data:
            return "Add training data: a JSON/JSONL/CSV file, a saved dataset, or the sample data."
        if self.state.preview_key != preview_key(config):
            self.request_preview()
        if self.state.preview is None:
            return "The data is still being checked; wait a moment (the preview appears below)."
        result = self.state.preview
        if result.get("failed"):
            return f"The data check did not finish: {result['failed'].splitlines()[0]}. Press Check again."
        problem = self._result_problem(result)
        if problem:
            return problem
        if not result.get("records"):
            return "The data has no records."
        return None
