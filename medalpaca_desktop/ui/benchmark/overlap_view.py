"""Which questions sit in the training data: a check's headline, the list of them, the clean-accuracy toggle.

Shows what `bench contamination` left in the run folders (read by `bench.contamination.load_check`
when a run is opened, so a run checked earlier shows its result at once). The Chart page has an
`OverlapPanel` for the shown runs; the Suite page uses the same `OverlapList`. Activating a row
asks for that question in the drill-down.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from bench.contamination_report import StoredCheck, overlap_line
from medalpaca_desktop.ui.benchmark.runs import BenchRun

CLEAN_TOGGLE = "Without overlapping questions"
CLEAN_TIP = ("Show the accuracy over the questions that are not in your training data (summary_clean.json) next to "
             "the full one")
LIST_ROWS = 5
STALE_NOTE = "the run scored more questions after this check: check it again"


@dataclass
class OverlapEntry:
    """One overlapping question of one run, as a list row."""

    run_name: str
    run_dir: str
    overlap: dict[str, Any]
    ngram: int


def how_text(overlap: dict[str, Any], ngram: int) -> str:
    return "exact match" if overlap.get("how") == "exact" else f"{ngram}-word n-gram"


def record_text(overlap: dict[str, Any]) -> str:
    """'train.jsonl line 10 (instruction)': the record's file by name, its place, and the field."""
    record = str(overlap.get("record") or "")
    for sep in (" line ", " record "):
        head, found, place = record.rpartition(sep)
        if found and place.isdigit():
            record = f"{Path(head).name or head}{sep}{place}"
            break
    field = overlap.get("field")
    return f"{record} ({field})" if field else record


def source_text(source: str) -> str:
    """A source as a short name: a file's name, or meadow:KEY."""
    if source.startswith("meadow:"):
        return source
    return Path(source.split("?", 1)[0]).name or source


def checked_against(check: StoredCheck) -> str:
    """'train.jsonl, meadow:medqa; 13-word n-grams': what the check read, briefly."""
    names = ", ".join(source_text(s) for s in check.sources) or "no source recorded"
    return f"{names}; {check.ngram}-word n-grams"


def summary_text(check: StoredCheck) -> str:
    """The headline with what it was checked against, and a note when it is out of date."""
    text = f"{check.headline()} ({checked_against(check)})"
    return text + (f"; {STALE_NOTE}" if check.stale else "")


def check_tip(check: StoredCheck) -> str:
    """The sources in full and when: for a tooltip."""
    when = str(check.report.get("checked_at") or "")
    lines = [f"Checked {when}".strip() + " against:", *(f"  {s}" for s in check.sources),
             f"{check.ngram}-word n-grams; {check.report.get('records', '?')} training records read",
             f"Report: {Path(check.run_dir) / 'contamination.json'}"]
    return "\n".join(lines)


class OverlapList(QTableWidget):
    """ID, how, source, record (and the run, when several): one row per overlapping question."""

    sig_question_activated = Signal(str, str)  # run_dir, question id

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.entries: list[OverlapEntry] = []
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        self.verticalHeader().hide()
        self.setToolTip("Click a question to open it in the Questions tab")
        self.cellClicked.connect(self._on_cell_clicked)
        self.cellActivated.connect(self._on_cell_clicked)
        self.set_entries([])

    def set_entries(self, entries: Sequence[OverlapEntry], show_run: bool = False) -> None:
        self.entries = list(entries)
        headers = (["Run"] if show_run else []) + ["ID", "How", "Source", "Record (field)",
                                                       "Matching text (normalised)"]
        self.clear()
        self.setColumnCount(len(headers))
        self.setHorizontalHeaderLabels(headers)
        self.setRowCount(len(self.entries))
        for r, entry in enumerate(self.entries):
            o = entry.overlap
            more = f"; {o['records']} records matched it" if int(o.get("records") or 1) > 1 else ""
            cells = ([entry.run_name] if show_run else []) + [
                str(o.get("id")), how_text(o, entry.ngram), source_text(str(o.get("source") or "")),
                record_text(o), str(o.get("ngram") or "")]
            tips = ([entry.run_dir] if show_run else []) + [
                f"Open question {o.get('id')} in the Questions tab", how_text(o, entry.ngram) + more,
                str(o.get("source") or ""), str(o.get("record") or ""), str(o.get("ngram") or "")]
            for c, (text, tip) in enumerate(zip(cells, tips)):
                item = QTableWidgetItem(text)
                item.setToolTip(tip)
                self.setItem(r, c, item)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        rows = min(max(1, len(self.entries)), LIST_ROWS)
        self.setFixedHeight(header.sizeHint().height() + rows * self.verticalHeader().defaultSectionSize()
                            + 2 * self.frameWidth() + 2)

    @Slot(int, int)
    def _on_cell_clicked(self, row: int, _column: int) -> None:
        if 0 <= row < len(self.entries):
            entry = self.entries[row]
            self.sig_question_activated.emit(entry.run_dir, str(entry.overlap.get("id")))


class OverlapPanel(QWidget):
    """The Chart page's training-data line: Check…, what a check found for each shown run, the toggle."""

    sig_check_requested = Signal(str)  # run_dir
    sig_question_requested = Signal(str, str)  # run_dir, question id
    sig_clean_toggled = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runs: list[BenchRun] = []
        self.names: list[str] = []
        self.run_combo = QComboBox()
        self.run_combo.setToolTip("Which shown run to check")
        self.check_button = QPushButton("Check against training data…")
        self.check_button.setToolTip("Which of the run's questions are in the data a model was trained on, and the "
                                     "accuracy without them")
        self.check_button.clicked.connect(self._on_check_button_clicked)
        self.clean_check = QCheckBox(CLEAN_TOGGLE)
        self.clean_check.setToolTip(CLEAN_TIP)
        self.clean_check.toggled.connect(self.sig_clean_toggled)
        self.headline_label = QLabel()
        self.headline_label.setWordWrap(True)
        self.headline_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.list = OverlapList()
        self.list.sig_question_activated.connect(self.sig_question_requested)
        self.which_button = QPushButton()
        self.which_button.setCheckable(True)
        self.which_button.setToolTip("List the overlapping questions (the chart keeps its room while it is closed)")
        self.which_button.toggled.connect(self._on_which_button_toggled)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.check_button)
        row.addWidget(self.run_combo)
        row.addWidget(self.headline_label, 1)
        row.addWidget(self.which_button)
        row.addWidget(self.clean_check)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.list)
        self.set_runs([])

    def set_runs(self, runs: list[BenchRun], names: list[str] | None = None) -> None:
        shown = list(zip(runs, names or [r.display_name() for r in runs]))
        self.runs = [r for r, _ in shown if r.run_dir and r.status != "running"]  # a run still scoring: after it ends
        self.names = [n for r, n in shown if r in self.runs]
        current = self.run_combo.currentData()
        self.run_combo.blockSignals(True)
        self.run_combo.clear()
        for run, name in zip(self.runs, self.names):
            self.run_combo.addItem(name, run.run_dir)
        index = self.run_combo.findData(current)
        self.run_combo.setCurrentIndex(index if index >= 0 else 0)
        self.run_combo.blockSignals(False)
        self.run_combo.setVisible(len(self.runs) > 1)
        self.check_button.setEnabled(bool(self.runs))
        checked = [(run, name) for run, name in zip(self.runs, self.names) if run.check is not None]
        self.headline_label.setText(self._headline(checked))
        self.headline_label.setToolTip("\n\n".join(check_tip(run.check) for run, _ in checked if run.check))
        entries = [OverlapEntry(name, run.run_dir, o, run.check.ngram)
                   for run, name in checked if run.check is not None for o in run.check.overlapping]
        self.list.set_entries(entries, show_run=len(checked) > 1)
        self.which_button.setVisible(bool(entries))
        self._on_which_button_toggled(self.which_button.isChecked())
        has_clean = any(run.check is not None and run.check.clean_overall() for run, _ in checked)
        self.clean_check.setEnabled(has_clean)
        self.clean_check.setToolTip(CLEAN_TIP if has_clean else "Check a shown run against training data first")
        self.setVisible(bool(self.runs))

    @Slot(bool)
    def _on_which_button_toggled(self, on: bool) -> None:
        count = len(self.list.entries)
        self.which_button.setText("Hide the list" if on else f"Show which ({count})")
        self.list.setVisible(on and count > 0)

    def _headline(self, checked: list[tuple[BenchRun, str]]) -> str:
        if not checked:
            return "Not checked against training data yet." if self.runs else ""
        if len(self.runs) == 1 and checked[0][0].check is not None:
            return summary_text(checked[0][0].check) + "."
        parts = [f"{name}: {summary_text(run.check)}" for run, name in checked if run.check is not None]
        unchecked = len(self.runs) - len(checked)
        if unchecked:
            parts.append(f"{unchecked} shown run{'s are' if unchecked != 1 else ' is'} not checked")
        return "; ".join(parts) + "."

    def selected_run_dir(self) -> str:
        return str(self.run_combo.currentData() or "")

    def select_run(self, run_dir: str) -> None:
        index = self.run_combo.findData(run_dir)
        if index >= 0:
            self.run_combo.setCurrentIndex(index)

    @Slot()
    def _on_check_button_clicked(self) -> None:
        run_dir = self.selected_run_dir()
        if run_dir:
            self.sig_check_requested.emit(run_dir)


def overlap_total(checks: Sequence[StoredCheck]) -> str:
    """The headline over several runs (a suite): 'k of n questions overlap your training data'."""
    return overlap_line(sum(len(c.overlapping) for c in checks), sum(c.n_questions for c in checks))
