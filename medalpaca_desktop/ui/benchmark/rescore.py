"""Re-score a finished generate run with the other parsing rule, without running the model again.

Runs `python -m bench rescore RUN_DIR --rule R` as a job: the engine rewrites the
run's items and summary and keeps the database's copy in step.
"""

from __future__ import annotations

import sys

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QWidget

from bench.config import RULES
from medalpaca_desktop.ui.benchmark.runs import BenchRun
from medalpaca_desktop.ui.jobs import JobOutcome, PipeJob


def rescore_command(run_dir: str, rule: str) -> list[str]:
    return [sys.executable, "-m", "bench", "rescore", run_dir, "--rule", rule]


class RescoreBar(QWidget):
    """'Re-score [run] with rule [lenient] [Re-score]'."""

    sig_rescored = Signal(str)  # run_dir
    sig_failed = Signal(str)  # message

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runs: list[BenchRun] = []
        self.runner = PipeJob(self, collect_output=True)
        self.runner.sig_finished.connect(self._on_runner_finished)
        self._run_dir = ""
        self.run_combo = QComboBox()
        self.run_combo.setToolTip("A finished run in generate mode (log-likelihood runs have nothing to parse)")
        self.run_combo.currentIndexChanged.connect(self._on_run_combo_current_index_changed)
        self.rule_combo = QComboBox()
        for rule in RULES:
            self.rule_combo.addItem(rule, rule)
        self.rule_combo.setToolTip("paper: the answer starts with the right letter; lenient: also “(B)”, "
                                   "“The answer is B”, the option's text")
        self.button = QPushButton("Re-score")
        self.button.setToolTip("Parse the saved answers again with this rule (no model needed)")
        self.button.clicked.connect(self.rescore)
        self.status_label = QLabel()
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Re-score"))
        row.addWidget(self.run_combo, 1)
        row.addWidget(QLabel("with rule"))
        row.addWidget(self.rule_combo)
        row.addWidget(self.button)
        row.addWidget(self.status_label)
        self.set_runs([])

    def set_runs(self, runs: list[BenchRun], names: list[str] | None = None) -> None:
        names = names or [r.display_name() for r in runs]
        current = self.run_combo.currentData()
        self.runs = [r for r in runs if r.mode == "generate" and r.run_dir and r.status not in ("running",)]
        self.run_combo.blockSignals(True)
        self.run_combo.clear()
        for run, name in zip(runs, names):
            if run in self.runs:
                self.run_combo.addItem(f"{name} (now: {run.rule})", run.run_dir)
        index = self.run_combo.findData(current)
        self.run_combo.setCurrentIndex(index if index >= 0 else 0)
        self.run_combo.blockSignals(False)
        self._on_run_combo_current_index_changed(self.run_combo.currentIndex())

    @Slot(int)
    def _on_run_combo_current_index_changed(self, index: int) -> None:
        run = next((r for r in self.runs if r.run_dir == self.run_combo.itemData(index)), None)
        if run is not None:
            other = "lenient" if run.rule == "paper" else "paper"
            self.rule_combo.setCurrentIndex(self.rule_combo.findData(other))
        self.button.setEnabled(run is not None and not self.runner.is_running())
        self.setToolTip("" if self.runs else "Show a finished generate-mode run to re-score it")

    @Slot()
    def rescore(self) -> bool:
        run_dir = self.run_combo.currentData()
        if not run_dir or self.runner.is_running():
            return False
        self._run_dir = run_dir
        rule = self.rule_combo.currentData()
        self.button.setEnabled(False)
        self.status_label.setText(f"Re-scoring with the {rule} rule…")
        command = rescore_command(run_dir, rule)
        self.runner.start(command[0], command[1:])
        return True

    @Slot(object)
    def _on_runner_finished(self, outcome: JobOutcome) -> None:
        self.button.setEnabled(True)
        if outcome.ok:
            self.status_label.setText("Re-scored.")
            self.sig_rescored.emit(self._run_dir)
        else:
            tail = next((ln for ln in reversed(outcome.stderr_tail) if ln.strip()), "")
            message = tail or outcome.message or "re-scoring failed"
            self.status_label.setText("Re-scoring failed.")
            self.status_label.setToolTip(message)
            self.sig_failed.emit(message)
