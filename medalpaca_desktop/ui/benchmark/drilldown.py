"""Every question of the shown runs: filter, search, read one question's full prompt and output."""

from __future__ import annotations

import html
import json
from pathlib import Path

from PySide6.QtCore import QItemSelection, Qt, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QTableView,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from medalpaca_desktop.ui.benchmark.export import write_csv, write_json
from medalpaca_desktop.ui.benchmark.items_table import (
    FILTER_TIPS,
    FILTERS,
    ItemsFilterProxy,
    ItemsTableModel,
    QuestionRow,
    answer_text,
)
from medalpaca_desktop.ui.benchmark.overlap_view import how_text
from medalpaca_desktop.ui.benchmark.palette import step_name
from medalpaca_desktop.ui.benchmark.runs import BenchRun


class DrillDownView(QWidget):
    """Table of questions above, the selected question in full below."""

    sig_exported = Signal(str)  # path written

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.table_model = ItemsTableModel(self)
        self.proxy = ItemsFilterProxy(self)
        self.proxy.setSourceModel(self.table_model)

        self.filter_combo = QComboBox()
        for key, text in FILTERS.items():
            self.filter_combo.addItem(text, key)
            self.filter_combo.setItemData(self.filter_combo.count() - 1, FILTER_TIPS[key], Qt.ItemDataRole.ToolTipRole)
        self.filter_combo.setToolTip("Which questions the table lists")
        self.filter_combo.currentIndexChanged.connect(self._on_filter_combo_current_index_changed)
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("Search question text or id…")
        self.search_edit.setClearButtonEnabled(True)
        self.search_edit.textChanged.connect(self.proxy.set_text)
        self.search_edit.textChanged.connect(self._update_count)
        self.count_label = QLabel()
        self.export_csv_button = QPushButton("Export CSV…")
        self.export_csv_button.setToolTip("Save the listed questions and every shown run's answers as CSV")
        self.export_csv_button.clicked.connect(lambda: self._choose_and_export("csv"))
        self.export_json_button = QPushButton("Export JSON…")
        self.export_json_button.setToolTip("Save the listed questions with prompts, outputs and scores as JSON")
        self.export_json_button.clicked.connect(lambda: self._choose_and_export("json"))

        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.setSortingEnabled(False)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.selectionModel().selectionChanged.connect(self._on_table_selection_changed)

        self.detail = QTextBrowser()
        self.detail.setOpenLinks(False)
        self.detail.setPlaceholderText("Select a question to read its full prompt and each run's output.")
        self.empty_label = QLabel("No questions yet: run a benchmark or open a run from the History.")
        self.empty_label.setStyleSheet("color: #666;")

        bar = QHBoxLayout()
        bar.addWidget(QLabel("Show:"))
        bar.addWidget(self.filter_combo)
        bar.addWidget(self.search_edit, 1)
        bar.addWidget(self.count_label)
        bar.addWidget(self.export_csv_button)
        bar.addWidget(self.export_json_button)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(self.detail)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.empty_label)
        layout.addWidget(splitter, 1)
        self._update_count()

    # -- data -----------------------------------------------------------------

    def set_runs(self, runs: list[BenchRun], names: list[str] | None = None) -> None:
        self.table_model.set_runs(runs, names)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        widths = {0: 56, 1: 80, 2: 280, 3: 170, 4: 44}  # step, id, question, options, gold
        columns = self.table_model.columnCount()
        for column in range(columns - 1):
            header.resizeSection(column, widths.get(column, 150))  # one answer column per run
        header.setStretchLastSection(True)  # the raw output takes what is left
        self.empty_label.setVisible(not runs)
        self.detail.clear()
        self._update_count()

    def set_filter(self, mode: str) -> None:
        self.filter_combo.setCurrentIndex(self.filter_combo.findData(mode))

    def visible_rows(self) -> list[QuestionRow]:
        return self.proxy.visible_rows()

    def select_question(self, question_id: str) -> bool:
        """Select (and show in full) the listed question with this id."""
        for r in range(self.proxy.rowCount()):
            index = self.proxy.index(r, 0)
            if self.table_model.row_at(self.proxy.mapToSource(index).row()).id == str(question_id):
                self.table.selectRow(r)
                self.table.scrollTo(index)
                return True
        return False

    @Slot(int)
    def _on_filter_combo_current_index_changed(self, _index: int) -> None:
        self.proxy.set_mode(self.filter_combo.currentData())
        self._update_count()

    @Slot()
    def _update_count(self) -> None:
        shown, total = self.proxy.rowCount(), self.table_model.rowCount()
        self.count_label.setText(f"{shown} of {total} questions" if shown != total else f"{total} questions")
        has_rows = shown > 0
        self.export_csv_button.setEnabled(has_rows)
        self.export_json_button.setEnabled(has_rows)

    # -- detail ---------------------------------------------------------------

    @Slot(QItemSelection, QItemSelection)
    def _on_table_selection_changed(self, _selected: QItemSelection, _deselected: QItemSelection) -> None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            self.detail.clear()
            return
        row = self.table_model.row_at(self.proxy.mapToSource(rows[0]).row())
        self.detail.setHtml(detail_html(row, self.table_model.run_names))

    # -- export ---------------------------------------------------------------

    def export(self, path: str | Path, kind: str) -> Path:
        rows, names = self.visible_rows(), self.table_model.run_names
        written = write_csv(path, rows, names) if kind == "csv" else write_json(path, rows, names)
        self.sig_exported.emit(str(written))
        return written

    def _choose_and_export(self, kind: str) -> None:
        pattern = "CSV files (*.csv)" if kind == "csv" else "JSON files (*.json)"
        path, _ = QFileDialog.getSaveFileName(self, f"Export questions as {kind.upper()}",
                                              str(Path.home() / f"benchmark-questions.{kind}"), pattern)
        if path:
            self.export(path, kind)


def detail_html(row: QuestionRow, run_names: list[str]) -> str:
    """The question, its options (gold marked) and, per run, the answer, scores, prompt and raw output."""
    esc = html.escape
    parts = [f"<h3>{esc(step_name(row.step))} · question {esc(row.id)}</h3>",
             f"<p>{esc(row.question)}</p><ul>"]
    for letter, text in row.options.items():
        mark = " <b>(correct answer)</b>" if letter == row.gold else ""
        parts.append(f"<li><b>{esc(letter)}</b>: {esc(text)}{mark}</li>")
    parts.append("</ul>")
    for name, overlap in zip(run_names, row.overlaps):
        if overlap is not None:
            how = how_text(overlap, int(overlap.get("ngram_size") or 0))
            parts.append(f"<p style='color:#8a4b00'><b>In your training data</b> ({esc(name)}'s check): {esc(how)} "
                         f"in {esc(str(overlap.get('record')))}, field {esc(str(overlap.get('field') or 'text'))}; "
                         f"the matching text (normalised): “{esc(str(overlap.get('ngram') or ''))}”</p>")
    for name, answer in zip(run_names, row.answers):
        parts.append(f"<h4>{esc(name)}: {esc(answer_text(answer) or 'not scored in this run')}</h4>")
        if answer is None:
            continue
        if answer.get("scores"):
            scores = ", ".join(f"{k}: {float(v):.3f}" for k, v in answer["scores"].items())
            parts.append(f"<p>Option log-likelihoods: {esc(scores)}</p>")
        if answer.get("pred_paper", "-") != "-" or answer.get("pred_lenient", "-") != "-":
            parts.append(f"<p>Parsed by rule <i>paper</i>: {esc(str(answer.get('pred_paper')))} · "
                         f"<i>lenient</i>: {esc(str(answer.get('pred_lenient')))}</p>")
        if answer.get("latency_s") is not None:
            parts.append(f"<p>Time: {float(answer['latency_s']):.2f} s</p>")
        output = answer.get("output")
        if output or not answer.get("scores"):
            parts.append("<p><b>Raw output</b></p>")
            parts.append(f"<pre style='white-space: pre-wrap'>{esc(output or '(empty)')}</pre>")
        parts.append("<p><b>Prompt</b></p>")
        parts.append(f"<pre style='white-space: pre-wrap'>{esc(answer.get('prompt') or '(not recorded)')}</pre>")
        extra = {k: v for k, v in answer.items() if k in ("scores_norm", "pred_norm", "correct_norm")}
        if extra:
            parts.append(f"<p style='color:#555'>{esc(json.dumps(extra, ensure_ascii=False))}</p>")
    return "".join(parts)
