"""The Benchmark tab's "Check" page: is this model as good as that one (a quantization as its original)?

Runs `python -m bench verify --jsonl` (bench/verify.py) through a PipeJob: the same N questions on
both models, as two ordinary runs that then appear in History, and the paired verdict: both
accuracies with their intervals, the difference with its interval, McNemar's p, and a warning
when the candidate is significantly worse.
"""

from __future__ import annotations

import html
import sys
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from bench.datasets import sample_questions_dir
from bench.stats import wilson_interval
from medalpaca_desktop.core import paths
from medalpaca_desktop.core.events import Done, Error, Event, Progress, Result
from medalpaca_desktop.core.jobs import RunStatus
from medalpaca_desktop.core.model_info import ModelInfo
from medalpaca_desktop.ui.benchmark.setup_panel import benchmark_models, model_entry_label, slug
from medalpaca_desktop.ui.jobs import JobOutcome, PipeJob
from medalpaca_desktop.ui.widgets.progress_bar import show_progress

DEFAULT_QUESTIONS = "medqa_4options:200"
QUESTIONS_HELP = ("TASK[:N]: N questions (default 200) of a task of the medical suite (downloaded on the New run "
                  "page) or of a questions file, drawn with a fixed seed, so both models see the same ones.")
SIGNIFICANT_STYLE = "color: #a00000; font-weight: bold;"
SAME_STYLE = "color: #1e4620;"


def verdict_html(result: dict[str, Any]) -> str:
    """Both accuracies with their intervals, then the verdict paragraph bench.verify wrote."""
    n = int(result.get("n_shared") or 0)
    names = result.get("labels") or ["reference", "candidate"]
    lines = []
    for name, key in zip(names, ("acc_a", "acc_b"), strict=True):
        acc = float(result.get(key) or 0.0)
        low, high = wilson_interval(round(acc * n), n)
        lines.append(f"<b>{html.escape(str(name))}</b>: {100 * acc:.1f} % "
                     f"<span style='color:#666'>(95 % interval {100 * low:.1f}-{100 * high:.1f}, n={n})</span>")
    return "<br>".join(lines) + "<br>" + html.escape(str(result.get("verdict", "")))


class VerifyPanel(QWidget):
    """Two model pickers, the questions, Start/Stop with progress, and the verdict."""

    sig_finished = Signal(object)  # the comparison (dict), once both runs are scored
    sig_add_model_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.models: list[ModelInfo] = []
        self.runner = PipeJob(self, name="the check")
        self.result: dict[str, Any] | None = None
        self.out: Path | None = None
        self.reference_combo = QComboBox()
        self.candidate_combo = QComboBox()
        for combo, tip in ((self.reference_combo, "The original: the model the other is held to"),
                           (self.candidate_combo, "The model checked against it: a quantization, a merge, a "
                                                  "fine-tune")):
            combo.setToolTip(tip)
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(24)
        # editable: a task of the suite or any questions file; the shipped sample questions to try it out
        self.questions_combo = QComboBox()
        self.questions_combo.setEditable(True)
        self.questions_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.questions_combo.addItems([DEFAULT_QUESTIONS, f"{sample_questions_dir() / 'medqa_sample.jsonl'}:72"])
        self.questions_combo.setToolTip(QUESTIONS_HELP)
        self.questions_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.questions_combo.setMinimumContentsLength(24)
        self.questions_edit = self.questions_combo.lineEdit()
        self.questions_edit.returnPressed.connect(self.start)
        self.start_button = QPushButton("Check")
        self.start_button.setToolTip("Score the same questions on both models and compare them (Ctrl+Return)")
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(lambda: self.runner.stop())
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setTextVisible(False)  # no "0%" before a check has started
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.verdict_label = QLabel()
        self.verdict_label.setWordWrap(True)
        self.verdict_label.setTextFormat(Qt.TextFormat.RichText)
        self.verdict_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.verdict_label.hide()
        self.empty_label = QLabel("Two models are needed: add a GGUF file or a model folder in the Models tab.")
        self.empty_label.setWordWrap(True)
        self.empty_label.setStyleSheet("color: #777;")

        intro = QLabel("Is this quantization, merge or fine-tune as good as the original? Both models answer "
                       "the same questions (log-likelihood, lm-eval's prompt); the paired test says whether a "
                       "difference is more than chance.")
        intro.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Original:", self.reference_combo)
        form.addRow("Checked:", self.candidate_combo)
        form.addRow("Questions:", self.questions_combo)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.empty_label)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status_label)
        layout.addWidget(self.verdict_label)
        layout.addStretch(1)
        QShortcut(QKeySequence("Ctrl+Return"), self, self.start, context=Qt.ShortcutContext.WidgetWithChildrenShortcut)

        self.runner.sig_event_received.connect(self._on_runner_event_received)
        self.runner.sig_finished.connect(self._on_runner_finished)
        self._update_enabled()

    def set_models(self, models: list[ModelInfo]) -> None:
        """The tab's models; the current picks survive a refresh."""
        keep = (self._picked(self.reference_combo), self._picked(self.candidate_combo))
        self.models = benchmark_models([m for m in models if m.kind in ("gguf", "hf")])
        for combo, kept, fallback in ((self.reference_combo, keep[0], 0), (self.candidate_combo, keep[1], 1)):
            combo.blockSignals(True)
            combo.clear()
            for info in self.models:
                combo.addItem(model_entry_label(info), info.path)
                combo.setItemData(combo.count() - 1, info.path, Qt.ItemDataRole.ToolTipRole)
            index = combo.findData(kept) if kept else -1
            combo.setCurrentIndex(index if index >= 0 else min(fallback, combo.count() - 1))
            combo.blockSignals(False)
        self._update_enabled()

    @staticmethod
    def _picked(combo: QComboBox) -> str | None:
        data = combo.currentData()
        return str(data) if data else None

    def pick(self, reference: str, candidate: str) -> None:
        for combo, path in ((self.reference_combo, reference), (self.candidate_combo, candidate)):
            index = combo.findData(path)
            if index >= 0:
                combo.setCurrentIndex(index)

    def _update_enabled(self) -> None:
        running = self.runner.is_running()
        enough = len(self.models) >= 2
        self.empty_label.setVisible(not enough)
        self.start_button.setEnabled(enough and not running)
        self.stop_button.setEnabled(running)

    def command(self, reference: str, candidate: str, questions: str, out: Path) -> list[str]:
        return [sys.executable, "-m", "bench", "verify", "--reference", reference, "--candidate", candidate,
                "--questions", questions, "--out", str(out), "--jsonl"]

    @Slot()
    def start(self) -> bool:
        """Start the check; False (with the reason shown) when it cannot run."""
        if self.runner.is_running():
            return False
        reference, candidate = self._picked(self.reference_combo), self._picked(self.candidate_combo)
        questions = self.questions_edit.text().strip()
        if not reference or not candidate:
            return self._refuse("Choose two models.")
        if reference == candidate:
            return self._refuse("Choose two different models: the check compares one with the other.")
        if not questions:
            return self._refuse(f"Give the questions: {QUESTIONS_HELP}")
        # the same pair and questions go to the same folder, so a stopped check resumes where it stopped
        self.out = paths.runs_dir() / (f"check-{slug(Path(reference).stem)[:24]}-vs-{slug(Path(candidate).stem)[:24]}"
                                       f"-{slug(questions.replace('/', '_'))[-32:]}")
        self.result = None
        self.verdict_label.hide()
        self.progress.setRange(0, 0)
        self.progress.setTextVisible(True)
        self.status_label.setText("Starting the check…")
        cmd = self.command(reference, candidate, questions, self.out)
        self.runner.start(cmd[0], cmd[1:])
        self._update_enabled()
        return True

    def _refuse(self, message: str) -> bool:
        self.status_label.setText(f"<b>Cannot check:</b> {html.escape(message)}")
        return False

    @Slot(object)
    def _on_runner_event_received(self, event: Event) -> None:
        if isinstance(event, Progress):
            show_progress(self.progress, event)
            self.status_label.setText(f"{event.stage}: {event.message}" if event.message else event.stage)
        elif isinstance(event, Result):
            self.result = dict(event.data)
        elif isinstance(event, Error):
            self.status_label.setText(f"<b>The check failed:</b> {html.escape(event.message)}")
        elif isinstance(event, Done) and not event.ok and not event.stopped:
            self.progress.setRange(0, 1000)
            self.progress.setValue(0)

    @Slot(object)
    def _on_runner_finished(self, outcome: JobOutcome) -> None:
        self.progress.setRange(0, 1000)
        if outcome.ok and self.result is not None:
            self.progress.setValue(1000)
            self.progress.setFormat("done")
            self.status_label.setText(f"Both runs are in History ({self.out}).")
            self.verdict_label.setText(verdict_html(self.result))
            worse = bool(self.result.get("significantly_worse"))
            self.verdict_label.setStyleSheet(SIGNIFICANT_STYLE if worse else SAME_STYLE)
            self.verdict_label.show()
            self.sig_finished.emit(self.result)
        elif outcome.status == RunStatus.STOPPED:
            self.progress.setValue(0)
            self.status_label.setText("Stopped; what was scored is kept, and Check again resumes it.")
        elif "failed" not in self.status_label.text():
            self.progress.setValue(0)
            self.status_label.setText(f"<b>The check failed:</b> {html.escape(outcome.describe())}")
        self._update_enabled()

    def shutdown(self) -> None:
        self.runner.kill_now()
