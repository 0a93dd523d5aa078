"""Two models of a suite side by side: per task and over the suite (bench.suite.compare_suite).

Per task: the paired difference and McNemar's p on the questions both scored; over the suite:
McNemar on every pooled question and a bootstrap interval of the difference of the averages.
The bootstrap resamples thousands of times, so it runs on a worker thread.
"""

from __future__ import annotations

import html
from pathlib import Path
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

from bench.config import ConfigError
from bench.suite import compare_suite
from medalpaca_desktop.ui.benchmark.palette import percent
from medalpaca_desktop.ui.workers import TaskManager, describe_exception

HEADERS = ("Task", "n", "A", "B", "A − B", "McNemar p")


def p_text(p: float) -> str:
    return f"{p:.3g}" if p >= 0.001 else "< 0.001"


def points(diff: float) -> str:
    return f"{diff * 100:+.1f} points"


class SuiteCompareView(QWidget):
    """Pick model A and model B of the shown suite; read the paired statistics per task and overall."""

    sig_comparison_finished = Signal(object)  # compare_suite's dict

    def __init__(self, tasks: TaskManager | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tasks = tasks
        self.out: Path | None = None
        self.labels: list[str] = []
        self.titles: dict[str, str] = {}
        self.result: dict[str, Any] | None = None
        self._generation = 0
        self.a_combo = QComboBox()
        self.a_combo.setToolTip("Model A")
        self.b_combo = QComboBox()
        self.b_combo.setToolTip("Model B")
        for combo in (self.a_combo, self.b_combo):
            combo.currentIndexChanged.connect(self._on_combo_current_index_changed)
        self.result_label = QLabel()
        self.result_label.setWordWrap(True)
        self.result_label.setTextFormat(Qt.TextFormat.RichText)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = QTableWidget(0, len(HEADERS))
        self.table.setHorizontalHeaderLabels(list(HEADERS))
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setToolTip("Per task, on the questions both models scored: accuracy of A and B, the difference "
                              "and McNemar's p (exact binomial below 25 discordant questions)")
        pick = QHBoxLayout()
        pick.addWidget(QLabel("Model A:"))
        pick.addWidget(self.a_combo, 1)
        pick.addWidget(QLabel("Model B:"))
        pick.addWidget(self.b_combo, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(pick)
        layout.addWidget(self.result_label)
        layout.addWidget(self.table)
        self.set_suite(None, [], {})

    def set_suite(self, out: Path | None, labels: list[str], titles: dict[str, str]) -> None:
        """The suite's folder and its models; the comparison is redone (kept models stay picked)."""
        keep = (self.a_combo.currentText(), self.b_combo.currentText())
        self.out, self.labels, self.titles = out, list(labels), dict(titles)
        for combo in (self.a_combo, self.b_combo):
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(self.labels)
            combo.blockSignals(False)
        if keep[0] in self.labels and keep[1] in self.labels and keep[0] != keep[1]:
            self.a_combo.setCurrentIndex(self.labels.index(keep[0]))
            self.b_combo.setCurrentIndex(self.labels.index(keep[1]))
        elif len(self.labels) >= 2:
            self.a_combo.setCurrentIndex(0)
            self.b_combo.setCurrentIndex(1)
        self.compare()

    def select(self, label_a: str, label_b: str) -> None:
        self.a_combo.blockSignals(True)
        self.a_combo.setCurrentIndex(self.labels.index(label_a))
        self.a_combo.blockSignals(False)
        self.b_combo.setCurrentIndex(self.labels.index(label_b))
        self.compare()

    @Slot(int)
    def _on_combo_current_index_changed(self, _index: int) -> None:
        self.compare()

    def compare(self) -> None:
        self._generation += 1
        self.result = None
        self.table.setRowCount(0)
        self.table.hide()
        label_a, label_b = self.a_combo.currentText(), self.b_combo.currentText()
        if self.out is None or len(self.labels) < 2:
            self.result_label.setText("Run the suite with two or more models to compare them task by task.")
            return
        if label_a == label_b:
            self.result_label.setText("Pick two different models.")
            return
        self.result_label.setText("Comparing…")
        generation, out = self._generation, self.out

        def task() -> dict[str, Any]:
            return compare_suite(out, label_a, label_b)

        def done(result: dict[str, Any]) -> None:
            if generation == self._generation:
                self._show(result)

        def failed(exc: BaseException) -> None:
            if generation == self._generation:
                self.result_label.setText(f"These models cannot be compared: {html.escape(describe_exception(exc))}")

        if self.tasks is None:
            try:
                done(task())
            except (ConfigError, ValueError) as exc:
                failed(exc)
        else:
            self.tasks.run_in_background(task, done, failed)

    def _show(self, result: dict[str, Any]) -> None:
        self.result = result
        name_a, name_b = html.escape(result["model_a"]), html.escape(result["model_b"])
        per_task = result["tasks"]
        if not per_task:
            self.result_label.setText(f"<b>{name_a}</b> and <b>{name_b}</b> have no task both have scored yet: "
                                      "nothing to pair.")
            self.sig_comparison_finished.emit(result)
            return
        pooled = result["pooled"]
        low, high = result["average_diff_ci"]
        verdict = ("significant" if pooled["p_value"] < 0.05 else "not significant")
        count = len(result["tasks_compared"])
        self.result_label.setText(
            f"<p>A <b>{name_a}</b> against B <b>{name_b}</b>, on the questions both scored.</p>"
            f"<p style='font-size: 13pt'>Average over {count} task{'s' if count != 1 else ''}: A − B "
            f"<b>{points(result['average_diff'])}</b> (95 % bootstrap interval {points(low)} to {points(high)}).</p>"
            f"<p>Pooled McNemar on {pooled['n_shared']} questions: only A right {pooled['b']}, only B right "
            f"{pooled['c']}, p = <b>{p_text(pooled['p_value'])}</b> ({verdict} at the 5 % level; "
            f"{'exact binomial' if pooled['test'] == 'exact' else 'chi-square'} test).</p>")
        self.table.setRowCount(len(per_task))
        for r, (task, c) in enumerate(per_task.items()):
            values = [self.titles.get(task, task), str(c["n_shared"]), percent(c["acc_a"]), percent(c["acc_b"]),
                      points(c["diff"]), p_text(c["p_value"])]
            for col, value in enumerate(values):
                item = QTableWidgetItem(value)
                if col == 4:
                    item.setToolTip(f"95 % bootstrap interval {points(c['diff_ci'][0])} to {points(c['diff_ci'][1])}")
                elif col == 5:
                    item.setToolTip(f"only A right {c['b']}, only B right {c['c']} ({c['test']} test)")
                self.table.setItem(r, col, item)
        self.table.resizeRowsToContents()
        rows = sum(self.table.rowHeight(r) for r in range(self.table.rowCount()))
        self.table.setFixedHeight(self.table.horizontalHeader().sizeHint().height() + rows
                                  + 2 * self.table.frameWidth() + 2)
        self.table.show()
        self.sig_comparison_finished.emit(result)
