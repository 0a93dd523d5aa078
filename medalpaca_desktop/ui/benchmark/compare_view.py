"""Two runs side by side: accuracy difference, its bootstrap interval, the paired McNemar p-value.

Paired on the questions both runs scored (bench.stats.compare_items); the bootstrap
runs on a worker thread because it resamples thousands of times.
"""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from bench.stats import Comparison, compare_items
from medalpaca_desktop.ui.benchmark.palette import percent, step_name
from medalpaca_desktop.ui.benchmark.runs import BenchRun
from medalpaca_desktop.ui.workers import TaskManager, describe_exception


class CompareView(QWidget):
    """Pick run A and run B; read the paired statistics and the questions they disagree on."""

    sig_question_requested = Signal(str)  # question id, to open in the drill-down
    sig_comparison_finished = Signal(object)  # Comparison

    def __init__(self, tasks: TaskManager | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tasks = tasks
        self.runs: list[BenchRun] = []
        self.names: list[str] = []
        self.comparison: Comparison | None = None
        self._generation = 0
        self.a_combo = QComboBox()
        self.a_combo.setToolTip("Run A")
        self.b_combo = QComboBox()
        self.b_combo.setToolTip("Run B")
        self.a_combo.currentIndexChanged.connect(self._on_combo_current_index_changed)
        self.b_combo.currentIndexChanged.connect(self._on_combo_current_index_changed)
        self.result_label = QLabel()
        self.result_label.setWordWrap(True)
        self.result_label.setTextFormat(Qt.TextFormat.RichText)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["ID", "Step", "Gold", "A", "B"])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setToolTip("Questions one run got right and the other wrong; double-click to open one")
        self.table.itemDoubleClicked.connect(self._on_table_item_double_clicked)
        pick = QHBoxLayout()
        pick.addWidget(QLabel("Run A:"))
        pick.addWidget(self.a_combo, 1)
        pick.addWidget(QLabel("Run B:"))
        pick.addWidget(self.b_combo, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(pick)
        layout.addWidget(self.result_label)
        self.table_title = QLabel("Questions where exactly one run is right:")
        layout.addWidget(self.table_title)
        layout.addWidget(self.table, 1)
        self.set_runs([])

    def set_runs(self, runs: list[BenchRun], names: list[str] | None = None) -> None:
        self.runs = list(runs)
        self.names = list(names or [r.display_name() for r in runs])
        for combo in (self.a_combo, self.b_combo):
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(self.names)
            combo.blockSignals(False)
        if len(self.runs) >= 2:
            self.a_combo.setCurrentIndex(0)
            self.b_combo.setCurrentIndex(1)
        self.compare()

    def select(self, a: int, b: int) -> None:
        self.a_combo.blockSignals(True)
        self.a_combo.setCurrentIndex(a)
        self.a_combo.blockSignals(False)
        self.b_combo.setCurrentIndex(b)
        self.compare()

    @Slot(int)
    def _on_combo_current_index_changed(self, _index: int) -> None:
        self.compare()

    def compare(self) -> None:
        self._generation += 1
        self.comparison = None
        self.table.setRowCount(0)
        self.table_title.setText("Questions where exactly one run is right:")
        a, b = self.a_combo.currentIndex(), self.b_combo.currentIndex()
        if len(self.runs) < 2:
            self.result_label.setText("Show two or more runs (tick them in the History, or run several models) "
                                      "to compare them question by question.")
            return
        if a == b or a < 0 or b < 0:
            self.result_label.setText("Pick two different runs.")
            return
        run_a, run_b = self.runs[a], self.runs[b]
        self.result_label.setText("Comparing…")
        generation = self._generation

        def task() -> Comparison:
            return compare_items(run_a.items, run_b.items)

        def done(result: Comparison) -> None:
            if generation == self._generation:
                self._show(result, run_a, run_b)

        def failed(exc: BaseException) -> None:
            if generation == self._generation:
                self.result_label.setText(f"These runs cannot be compared: {html.escape(describe_exception(exc))}")

        if self.tasks is None:
            try:
                done(task())
            except ValueError as exc:
                failed(exc)
        else:
            self.tasks.run_in_background(task, done, failed)

    def _show(self, result: Comparison, run_a: BenchRun, run_b: BenchRun) -> None:
        self.comparison = result
        name_a, name_b = html.escape(self.a_combo.currentText()), html.escape(self.b_combo.currentText())
        if not result.n_shared:
            self.result_label.setText("These runs share no questions (different datasets?): nothing to pair.")
            self.sig_comparison_finished.emit(result)
            return
        low, high = result.diff_ci
        p_text = f"{result.p_value:.3g}" if result.p_value >= 0.001 else "< 0.001"
        verdict = ("the difference is significant at the 5 % level" if result.p_value < 0.05
                   else "the difference is not significant at the 5 % level")
        self.result_label.setText(
            f"<p>On the <b>{result.n_shared}</b> questions both runs scored: "
            f"A <b>{name_a}</b> {percent(result.acc_a)}, B <b>{name_b}</b> {percent(result.acc_b)}.</p>"
            f"<p style='font-size: 13pt'>Difference A − B: <b>{_points(result.diff)}</b> "
            f"(95 % bootstrap interval {_points(low)} to {_points(high)}); "
            f"McNemar p = <b>{p_text}</b> — {verdict}.</p>"
            f"<p>A right and B wrong: {result.b} · B right and A wrong: {result.c}. "
            f"McNemar uses only these discordant questions (exact binomial test below 25 of them).</p>")
        items_a, items_b = run_a.items_by_id(), run_b.items_by_id()
        ids = [str(i) for i in result.disagreements]
        self.table_title.setText("Questions where exactly one run is right (double-click one to read it):" if ids
                                 else "No question where exactly one run is right: both are right and wrong on "
                                      "the same questions.")
        self.table.setVisible(bool(ids))
        self.table.setRowCount(len(ids))
        for r, qid in enumerate(ids):
            item_a: dict[str, Any] = items_a.get(qid, {})
            item_b: dict[str, Any] = items_b.get(qid, {})
            values = [qid, step_name(str(item_a.get("step") or item_b.get("step") or "")),
                      str(item_a.get("gold") or item_b.get("gold") or ""),
                      _answer(item_a), _answer(item_b)]
            for c, value in enumerate(values):
                self.table.setItem(r, c, QTableWidgetItem(value))
        self.sig_comparison_finished.emit(result)

    @Slot(QTableWidgetItem)
    def _on_table_item_double_clicked(self, item: QTableWidgetItem) -> None:
        self.sig_question_requested.emit(self.table.item(item.row(), 0).text())


def _points(diff: float) -> str:
    return f"{diff * 100:+.1f} points"


def _answer(item: dict[str, Any]) -> str:
    if not item:
        return ""
    pred = item.get("pred") or "?"
    return f"{pred} ✓" if item.get("correct") else f"{pred} ✗"
