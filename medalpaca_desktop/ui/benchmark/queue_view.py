"""The run queue as a person sees it: the current run's progress (accuracy so far, ETA), what waits, Stop."""

from __future__ import annotations

from PySide6.QtCore import Qt, Slot
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from medalpaca_desktop.core.jobs import RunStatus
from medalpaca_desktop.core.progress import format_duration
from medalpaca_desktop.ui.benchmark.run_queue import BenchQueue, QueuedRun

STATE_TEXT = {RunStatus.QUEUED: "waiting", RunStatus.RUNNING: "running", RunStatus.DONE: "done",
              RunStatus.STOPPED: "stopped (resumable)", RunStatus.FAILED: "failed",
              RunStatus.CRASHED: "crashed (resumable)", RunStatus.CANCELLED: "cancelled"}
STATE_COLOR = {RunStatus.FAILED: "#b3261e", RunStatus.CRASHED: "#b3261e", RunStatus.STOPPED: "#8a6d00",
               RunStatus.DONE: "#1b7a3a"}


def progress_text(run: QueuedRun) -> str:
    """'Step 1 · 12/80 · acc 41.7 % · 2.1 questions/s · about 32s left'."""
    event = run.progress
    if event is None:
        return "Starting the worker…"
    if event.stage == "load":
        return event.message or "Loading the model…"
    parts = [event.message or f"{int(event.current)}/{int(event.total or 0)} questions"]
    if event.rate:
        parts.append(f"{event.rate:.2f} questions/s")
    if event.eta_s is not None and event.current < (event.total or 0):
        parts.append(f"about {format_duration(event.eta_s)} left")
    return " · ".join(parts)


class QueueView(QWidget):
    """Compact strip above the results."""

    def __init__(self, queue: BenchQueue, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.queue = queue
        self.title_label = QLabel("No benchmark running.")
        font = self.title_label.font()
        font.setBold(True)
        self.title_label.setFont(font)
        self.detail_label = QLabel("Set up a run on the left and press Run benchmark.")
        self.detail_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.detail_label.setWordWrap(True)
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(True)
        self.progress_bar.hide()
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop the running benchmark after the current question; it can be resumed "
                                    "from the History")
        self.stop_button.clicked.connect(self._on_stop_button_clicked)
        self.stop_all_button = QPushButton("Stop all")
        self.stop_all_button.setToolTip("Stop the running benchmark and cancel the waiting ones")
        self.stop_all_button.clicked.connect(self.queue.stop_all)
        self.clear_button = QPushButton("Clear finished")
        self.clear_button.clicked.connect(self.queue.clear_finished)
        self.list = QListWidget()
        self.list.setToolTip("Runs of this session, in order")
        self.list.hide()
        top = QHBoxLayout()
        top.addWidget(self.title_label, 1)
        top.addWidget(self.stop_button)
        top.addWidget(self.stop_all_button)
        top.addWidget(self.clear_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 4)
        layout.addLayout(top)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.detail_label)
        layout.addWidget(self.list)
        queue.sig_queue_changed.connect(self._on_queue_changed)
        queue.sig_run_progressed.connect(self._on_queue_run_progressed)
        self._on_queue_changed()

    @Slot()
    def _on_queue_changed(self) -> None:
        self.list.clear()
        for run in self.queue.runs:
            text = f"{run.label} · {run.config.mode} — {STATE_TEXT.get(run.state, run.state)}"
            if run.state in (RunStatus.FAILED, RunStatus.CRASHED) and run.error:
                text += f": {run.error.splitlines()[0][:160]}"
            item = QListWidgetItem(text)
            item.setToolTip(run.error or str(run.run_dir))
            if run.state in STATE_COLOR:
                item.setForeground(QColor(STATE_COLOR[run.state]))
            self.list.addItem(item)
        self.list.setVisible(bool(self.queue.runs))
        rows = min(3, max(1, self.list.count()))
        self.list.setFixedHeight(self.list.sizeHintForRow(0) * rows + 2 * self.list.frameWidth() + 4
                                 if self.list.count() else 0)
        current = self.queue.current
        waiting = len(self.queue.pending())
        busy = current is not None
        self.stop_button.setEnabled(busy)
        self.stop_button.setText("Force stop" if busy and self.queue.stopping else "Stop")
        self.stop_button.setToolTip("End the worker now; the current question is scored again on resume"
                                    if busy and self.queue.stopping else
                                    "Stop the running benchmark after the current question; it can be resumed "
                                    "from the History")
        self.stop_all_button.setEnabled(busy or waiting > 0)
        self.clear_button.setEnabled(any(not r.state.is_active for r in self.queue.runs))
        self.progress_bar.setVisible(busy)
        if busy:
            assert current is not None
            more = f" ({waiting} more waiting)" if waiting else ""
            self.title_label.setText(f"Running: {current.label} · {current.config.mode}{more}")
            self._show_progress(current)
        elif self.queue.runs:
            last = self.queue.runs[-1]
            self.title_label.setText(f"Last run: {last.label} — {STATE_TEXT.get(last.state, last.state)}")
            self.detail_label.setText(last.error.splitlines()[0] if last.error else
                                      "Results are in the chart and the question table below.")
            self.detail_label.setStyleSheet("color: #b3261e;" if last.error else "")
        else:
            self.title_label.setText("No benchmark running.")
            self.detail_label.setText("Set up a run on the left and press Run benchmark.")
            self.detail_label.setStyleSheet("")

    @Slot()
    def _on_stop_button_clicked(self) -> None:
        self.queue.stop_current()  # a second press, while it stops, ends the worker now

    @Slot(object)
    def _on_queue_run_progressed(self, run: QueuedRun) -> None:
        if run is self.queue.current:
            self._show_progress(run)

    def _show_progress(self, run: QueuedRun) -> None:
        self.detail_label.setStyleSheet("")
        stopping = "Stopping after the current question… · " if self.queue.stopping else ""
        self.detail_label.setText(stopping + progress_text(run))
        event = run.progress
        if event is None or event.total is None or event.stage == "load":
            self.progress_bar.setRange(0, 0)  # busy
            return
        self.progress_bar.setRange(0, int(event.total))
        self.progress_bar.setValue(int(event.current))
        self.progress_bar.setFormat("%v / %m questions")
