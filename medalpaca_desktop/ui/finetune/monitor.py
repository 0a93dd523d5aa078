"""The run monitor: live charts, progress with ETA, the worker's log, and what to do with the run.

It draws one run at a time from its events: live from the trainer's DetachedJob while it
runs, or all at once from RUN_DIR/events.jsonl for a finished, stopped or crashed run.
Both paths go through `_apply(event)`, so a redrawn run looks exactly like a watched one.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from medalpaca_desktop.core.events import (
    Checkpoint,
    Done,
    Error,
    Event,
    Log,
    Metric,
    Progress,
    Started,
    Warning,
    read_events_file,
)
from medalpaca_desktop.core.jobs import RunStatus
from medalpaca_desktop.core.progress import format_duration
from medalpaca_desktop.ui.finetune.export_dialog import ExportDialog
from medalpaca_desktop.ui.finetune.runs import last_checkpoint, model_label
from medalpaca_desktop.ui.finetune.runs_table_model import STATUS_COLOR, STATUS_TEXT, data_label
from medalpaca_desktop.ui.jobs import DetachedJob
from medalpaca_desktop.ui.jobs.detached import EVENTS_FILE, WORKER_LOG
from medalpaca_desktop.ui.widgets.charts import LineChart
from trainer.checkpoints import SavedWeights, saved_weights

LOG_LINES_SHOWN = 3000
BANNER_STYLE = {
    RunStatus.FAILED: ("#fdecea", "#e6a39c", "#611a15"),
    RunStatus.CRASHED: ("#fdecea", "#e6a39c", "#611a15"),
    RunStatus.STOPPED: ("#fff4e0", "#e0b25c", "#5a3a00"),
    RunStatus.DONE: ("#eef6ee", "#b9d8b9", "#1e4620"),
    RunStatus.RUNNING: ("#e8f0fb", "#a9c4ea", "#0d3c74"),
}
STAGE_NAMES = {"dequantize": "De-quantizing the GGUF base", "data": "Checking and tokenizing the data",
               "model": "Loading the model", "train": "Training", "save": "Saving the final model"}


def chat_path(run_dir: str | Path, weights: SavedWeights | None = None) -> Path | None:
    """What "Chat with this model" opens: the picked weights, else the merged model if the run merged, else
    final/ (a model or an adapter, which chat loads on its base)."""
    if weights is not None:
        return weights.folder
    run_dir = Path(run_dir)
    for folder in (run_dir / "merged", run_dir / "final"):
        if (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file():
            return folder
    return None


def _tail(path: Path, lines: int) -> list[str]:
    """The last lines of a log file, each progress bar shown as it ended (carriage returns folded)."""
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            text = fh.read()
    except OSError:
        return []
    out = []
    for raw in text.split("\n")[-lines - 1:]:
        parts = [p for p in raw.split("\r") if p.strip()]
        out.append(parts[-1] if parts else "")
    if out and not out[-1]:
        out.pop()
    return out[-lines:]


class RunMonitor(QWidget):
    """Charts, progress and log of one run, with Stop / Resume / Open folder / Export / Chat."""

    sig_stop_requested = Signal(int)
    sig_resume_requested = Signal(int)
    sig_chat_requested = Signal(str)
    sig_new_like_requested = Signal(int)  # start the wizard from this run's config

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.row: dict[str, Any] | None = None
        self.session: DetachedJob | None = None
        self.export_dialog: ExportDialog | None = None
        self._total_steps: float | None = None
        self._progress_text = ""  # the progress bar's text without the ETA (for an ended run)
        self._build()
        self.show_run(None)

    # -- building ---------------------------------------------------------------------

    def _build(self) -> None:
        self.title_label = QLabel()
        font = self.title_label.font()
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.2)
        self.title_label.setFont(font)
        self.title_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_label = QLabel()
        self.status_label.setObjectName("runStatus")
        self.details_label = QLabel()
        self.details_label.setWordWrap(True)
        self.details_label.setStyleSheet("color: #555;")
        self.details_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        head = QHBoxLayout()
        head.addWidget(self.title_label, 1)
        head.addWidget(self.status_label)

        self.banner = QLabel()
        self.banner.setObjectName("runBanner")
        self.banner.setWordWrap(True)
        self.banner.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.banner.hide()

        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.progress.setFormat("")
        self.stage_label = QLabel()
        self.stage_label.setStyleSheet("color: #555;")
        self.gpu_label = QLabel()
        self.gpu_label.setToolTip("Peak GPU memory the trainer has allocated (rank 0)")
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.gpu_label)

        self.loss_chart = LineChart("Loss", "loss", empty_text="The loss appears here after the first step.")
        self.loss_chart.add_series("loss", "training", "#1f77b4")
        self.loss_chart.add_series("val_loss", "validation", "#d62728", symbol="o", dashed=True)
        self.lr_chart = LineChart("Learning rate", "learning rate", empty_text="No learning rate logged yet.")
        self.lr_chart.add_series("learning_rate", "learning rate", "#2ca02c")
        self.speed_chart = LineChart("Throughput", "tokens / s", empty_text="No throughput measured yet.")
        self.speed_chart.add_series("tokens_per_s", "tokens/s", "#ff7f0e")
        self.memory_chart = LineChart("GPU memory", "GB", empty_text="No GPU memory reported yet.")
        self.memory_chart.add_series("gpu_memory_gb", "peak allocated", "#9467bd")
        self.bench_chart = LineChart("Benchmark accuracy", "accuracy, %", empty_text=(
            "No benchmark scored while training. Name one under Settings > Advanced > "
            "Benchmark while training to score it at every evaluation."))
        self.bench_chart.add_band("bench_low", "bench_high", "95 % interval", "#8c564b")
        self.bench_chart.add_series("bench_accuracy", "accuracy", "#8c564b", symbol="o")
        self.bench_chart.plot.getAxis("left").enableAutoSIPrefix(False)  # percent, not "x0.001"
        self.charts = (self.loss_chart, self.bench_chart, self.lr_chart, self.speed_chart, self.memory_chart)
        grid_widget = QWidget()
        grid = QGridLayout(grid_widget)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(self.loss_chart, 0, 0, 1, 3)  # the two that say whether the model learns, side by side
        grid.addWidget(self.bench_chart, 0, 3, 1, 3)
        for i, chart in enumerate((self.lr_chart, self.speed_chart, self.memory_chart)):
            grid.addWidget(chart, 1, 2 * i, 1, 2)

        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(LOG_LINES_SHOWN)
        self.log_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)  # long verdicts stay readable
        self.log_view.setPlaceholderText("The trainer's log (its stderr) and notable events appear here.")
        mono = self.log_view.font()
        mono.setFamily("monospace")
        mono.setStyleHint(mono.StyleHint.Monospace)
        self.log_view.setFont(mono)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(grid_widget)
        splitter.addWidget(self.log_view)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([520, 170])
        splitter.setChildrenCollapsible(False)

        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Save a checkpoint at the end of the current step and stop; Resume continues")
        self.stop_button.clicked.connect(self._on_stop_button_clicked)
        self.resume_button = QPushButton("Resume")
        self.resume_button.clicked.connect(self._on_resume_button_clicked)
        self.folder_button = QPushButton("Open folder")
        self.folder_button.setToolTip("The run folder: config.yaml, events.jsonl, worker.log, checkpoints, final model")
        self.folder_button.clicked.connect(self._on_folder_button_clicked)
        self.export_button = QPushButton("Export to GGUF…")
        self.export_button.setToolTip("Write the result as one GGUF file for llama.cpp and other desktop apps")
        self.export_button.clicked.connect(self.open_export_dialog)
        self.chat_button = QPushButton("Chat with this model")
        self.chat_button.clicked.connect(self._on_chat_button_clicked)
        self.weights_combo = QComboBox()
        self.weights_combo.setToolTip("Which weights Chat and Export use: the final weights (the best checkpoint "
                                      "when the run kept one), the merged model, or any saved checkpoint")
        self.weights_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.weights_combo.setMinimumContentsLength(22)
        self.weights_combo.currentIndexChanged.connect(self._on_weights_combo_current_index_changed)
        self.weights_label = QLabel("Use:")
        self.weights_label.setBuddy(self.weights_combo)
        self.new_like_button = QPushButton("New run like this…")
        self.new_like_button.setToolTip("Open the wizard filled in with this run's settings")
        self.new_like_button.clicked.connect(self._on_new_like_button_clicked)
        buttons = QHBoxLayout()
        for button in (self.stop_button, self.resume_button, self.folder_button):
            buttons.addWidget(button)
        buttons.addSpacing(12)
        buttons.addWidget(self.weights_label)
        buttons.addWidget(self.weights_combo)
        for button in (self.export_button, self.chat_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.new_like_button)

        self.empty_label = QLabel("Select a run in the list, or start a new fine-tune (Ctrl+N).")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setStyleSheet("color: #777;")

        self.body = QFrame()
        body = QVBoxLayout(self.body)
        body.setContentsMargins(0, 0, 0, 0)
        body.addLayout(head)
        body.addWidget(self.details_label)
        body.addWidget(self.banner)
        body.addLayout(progress_row)
        body.addWidget(self.stage_label)
        body.addWidget(splitter, 1)
        body.addLayout(buttons)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(self.empty_label, 1)
        layout.addWidget(self.body, 1)

    # -- showing a run ----------------------------------------------------------------

    def run_id(self) -> int | None:
        return int(self.row["id"]) if self.row else None

    def show_run(self, row: dict[str, Any] | None, session: DetachedJob | None = None) -> None:
        """Draw `row`'s run: replay its events, then follow its trainer job (`session`) if it runs."""
        if self.session is not None:
            self.session.sig_event_received.disconnect(self._on_session_event_received)
            self.session.sig_log_line.disconnect(self._on_session_log_line)
            self.session.sig_stop_requested.disconnect(self._on_session_stop_requested)
        self.session = session
        self.row = dict(row) if row else None
        self._reset()
        self.empty_label.setVisible(row is None)
        self.body.setVisible(row is not None)
        if row is None:
            return
        run_dir = Path(row["run_dir"])
        if session is not None:
            events, log = list(session.events), list(session.log_lines)[-LOG_LINES_SHOWN:]
        else:
            events = read_events_file(run_dir / EVENTS_FILE) if (run_dir / EVENTS_FILE).is_file() else []
            log = _tail(run_dir / WORKER_LOG, LOG_LINES_SHOWN)
        for line in log:
            self.log_view.appendPlainText(line)
        for event in events:
            self._apply(event, live=False)
        for chart in self.charts:
            chart.flush()
        if session is not None:
            session.sig_event_received.connect(self._on_session_event_received)
            session.sig_log_line.connect(self._on_session_log_line)
            session.sig_stop_requested.connect(self._on_session_stop_requested)
        self.update_row(row)

    def update_row(self, row: dict[str, Any]) -> None:
        """The run's database row changed (status, loss, error): header, banner and buttons."""
        if self.row is None or row["id"] != self.row["id"]:
            return
        self.row = dict(row)
        status = RunStatus(row["status"])
        self.title_label.setText(str(row["name"]))
        self.status_label.setText(STATUS_TEXT.get(status, status))
        self.status_label.setStyleSheet(f"#runStatus {{ color: {STATUS_COLOR.get(status, '#555')};"
                                        " font-weight: bold; }")
        model = model_label(str(row.get("base_model") or ""))
        details = [f"{row.get('method') or '?'} on <b>{html.escape(model)}</b>",
                   f"data: {html.escape(data_label(row))}",
                   f"folder: {html.escape(str(row['run_dir']))}"]
        self.details_label.setText(" · ".join(details))
        self._update_banner()
        self._update_buttons()
        if not self._running():  # an ETA means nothing once the run has ended
            ended_early = status.resumable and not self._progress_text
            self.progress.setFormat("Ended before the first training step" if ended_early else self._progress_text)
        if status == RunStatus.DONE:
            self.progress.setRange(0, 1000)
            self.progress.setValue(1000)
            self.stage_label.setText("Finished.")
        elif status.resumable and self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)

    def _reset(self) -> None:
        for chart in self.charts:
            chart.clear()
        self.log_view.clear()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")
        self.stage_label.clear()
        self.gpu_label.clear()
        self.banner.hide()
        self._total_steps = None
        self._progress_text = ""

    def _running(self) -> bool:
        return self.session is not None and self.session.is_running()

    def _update_banner(self) -> None:
        assert self.row is not None
        status = RunStatus(self.row["status"])
        text = ""
        checkpoint = last_checkpoint(self.row["run_dir"])
        resume_text = (f" Resume continues from the checkpoint at step {checkpoint[0]}." if checkpoint
                       else " No checkpoint was saved; Resume starts from the beginning.")
        if status in (RunStatus.FAILED, RunStatus.CRASHED):
            text = f"<b>The run {status.value}.</b> {html.escape(self.row.get('error') or '')}{resume_text}"
        elif status == RunStatus.STOPPED:
            text = f"<b>Stopped.</b>{resume_text}"
        elif status == RunStatus.DONE:
            where = chat_path(self.row["run_dir"])
            text = "<b>Finished.</b>" + (f" The result is in {html.escape(str(where))}." if where else "")
        elif status == RunStatus.RUNNING and not self._running():
            text = "<b>Marked running</b>, but this window is not following its process."
        if not text:
            self.banner.hide()
            return
        bg, border, fg = BANNER_STYLE.get(status, BANNER_STYLE[RunStatus.RUNNING])
        self.banner.setStyleSheet(f"#runBanner {{ background: {bg}; border: 1px solid {border}; border-radius: 4px;"
                                  f" padding: 6px; color: {fg}; }}")
        self.banner.setText(text)
        self.banner.show()

    def _update_buttons(self) -> None:
        assert self.row is not None
        status = RunStatus(self.row["status"])
        running = self._running()
        stopping = running and self.session is not None and self.session.stopping
        self.stop_button.setEnabled(running)
        if stopping:
            self.stop_button.setText("Stop now")
            self.stop_button.setToolTip("Leave at once without waiting for the checkpoint (the last saved one stays)")
        else:
            self.stop_button.setText("Stop")
            self.stop_button.setToolTip("Save a checkpoint at the end of the current step and stop; Resume continues")
        resumable = not running and (status.resumable or status == RunStatus.CREATED)
        self.resume_button.setEnabled(resumable)
        checkpoint = last_checkpoint(self.row["run_dir"])
        self.resume_button.setText(f"Resume from step {checkpoint[0]}" if checkpoint and resumable else "Resume")
        self.resume_button.setToolTip("Continue from the last checkpoint" if checkpoint
                                      else "No checkpoint yet: starts the run from the beginning")
        finished = status == RunStatus.DONE and not running
        self._fill_weights(finished)
        target = chat_path(self.row["run_dir"], self.picked_weights()) if finished else None
        self.chat_button.setEnabled(target is not None)
        self.chat_button.setToolTip(f"Open {target} in the chat tab" if target else "Available once the run is done")
        self.export_button.setEnabled(finished and target is not None)
        self.folder_button.setEnabled(Path(self.row["run_dir"]).is_dir())
        self.new_like_button.setEnabled(Path(self.row["run_dir"], "config.yaml").is_file())

    def _fill_weights(self, finished: bool) -> None:
        """The run's saved weights in the picker, keeping the current pick when it is still there."""
        assert self.row is not None
        weights = saved_weights(self.row["run_dir"]) if finished else []
        keys = [w.key for w in weights]
        if keys == [self.weights_combo.itemData(i).key for i in range(self.weights_combo.count())]:
            return
        current = self.picked_weights()
        self.weights_combo.blockSignals(True)
        self.weights_combo.clear()
        for w in weights:
            self.weights_combo.addItem(w.label(), w)
        if current is not None and current.key in keys:
            self.weights_combo.setCurrentIndex(keys.index(current.key))
        self.weights_combo.blockSignals(False)
        self.weights_combo.setEnabled(len(weights) > 1)
        self.weights_label.setVisible(bool(weights))
        self.weights_combo.setVisible(bool(weights))

    @Slot(int)
    def _on_weights_combo_current_index_changed(self, _index: int) -> None:
        if self.row is not None:
            self._update_buttons()

    def picked_weights(self) -> SavedWeights | None:
        """The weights chosen in the picker (None before the run is done)."""
        data = self.weights_combo.currentData()
        return data if isinstance(data, SavedWeights) else None

    def pick_weights(self, key: str) -> bool:
        """Choose weights by key ("final", "merged", "step-N"); False when the run has none such."""
        for i in range(self.weights_combo.count()):
            if self.weights_combo.itemData(i).key == key:
                self.weights_combo.setCurrentIndex(i)
                self._update_buttons()
                return True
        return False

    # -- events -----------------------------------------------------------------------

    @Slot(object)
    def _on_session_event_received(self, event: Event) -> None:
        self._apply(event, live=True)

    @Slot(str)
    def _on_session_log_line(self, line: str) -> None:
        self.log_view.appendPlainText(line)

    @Slot()
    def _on_session_stop_requested(self) -> None:
        if self.row is not None:
            self._update_buttons()
            self.stage_label.setText("Stopping: saving a checkpoint at the end of the current step…")

    def _note(self, text: str) -> None:
        self.log_view.appendPlainText(text)

    def _apply(self, event: Event, live: bool) -> None:
        if isinstance(event, Metric):
            step = event.step if event.step is not None else 0
            for key in ("loss", "val_loss"):
                if key in event.values:
                    self.loss_chart.append(key, step, event.values[key])
            if "learning_rate" in event.values:
                self.lr_chart.append("learning_rate", step, event.values["learning_rate"])
            for key in ("bench_accuracy", "bench_low", "bench_high"):
                value = event.values.get(key)
                if isinstance(value, (int, float)):
                    self.bench_chart.append(key, step, 100 * value)  # drawn in percent
        elif isinstance(event, Progress):
            self._apply_progress(event, live)
        elif isinstance(event, Started):
            resume_from = event.info.get("resume_from")
            match = re.search(r"checkpoint-(\d+)$", str(resume_from or ""))
            if match:  # steps after the checkpoint are trained again: the new points replace them
                for chart in self.charts:
                    chart.truncate_after(int(match[1]))
                self._note(f"[resumed from {resume_from}]")
            info = event.info
            if live:
                self.stage_label.setText("Training: the first step is running…")
            self._note(f"[started: {info.get('method')} on {info.get('device')}, "
                       f"{info.get('trainable_parameters')} of {info.get('parameters')} parameters trained, "
                       f"{info.get('train_examples')} training / {info.get('val_examples')} validation examples]")
        elif isinstance(event, Checkpoint):
            self._note(f"[checkpoint at step {event.step}: {event.path}]")
        elif isinstance(event, Warning):
            self._note(f"[warning] {event.message}")
        elif isinstance(event, Error):
            self._note(f"[error] {event.message}")
        elif isinstance(event, Log):
            self._note(f"[{event.level}] {event.message}")
        elif isinstance(event, Done):
            if event.ok and not event.stopped:
                self.stage_label.setText("Finished.")
            elif event.stopped:
                self.stage_label.setText("Stopped.")

    def _apply_progress(self, event: Progress, live: bool) -> None:
        extra = event.extra
        if event.stage == "train" and event.total:
            self._total_steps = event.total
            step = int(event.current)
            self.progress.setRange(0, int(event.total))
            self.progress.setValue(min(step, int(event.total)))
            parts = [f"step {step}/{int(event.total)}"]
            if isinstance(extra.get("epoch"), (int, float)):
                parts.append(f"epoch {extra['epoch']:.2f}")
            self._progress_text = " · ".join(parts)
            if live and event.eta_s is not None:
                parts.append(f"ETA {format_duration(event.eta_s)}")
            self.progress.setFormat(" · ".join(parts))
            self.stage_label.setText(STAGE_NAMES["train"] + (f" ({event.rate:.2f} steps/s)" if event.rate else ""))
            self.speed_chart.append("tokens_per_s", step, extra.get("tokens_per_s"))
            gpu = extra.get("gpu_memory_gb")
            if isinstance(gpu, (int, float)):
                self.memory_chart.append("gpu_memory_gb", step, gpu)
                self.gpu_label.setText(f"GPU memory: {gpu:.2f} GB")
            elif not self.gpu_label.text():
                self.gpu_label.setText("GPU memory: — (CPU run)")
                self.memory_chart.set_empty_text("This run trains on the CPU: no GPU memory to show.")
            return
        name = STAGE_NAMES.get(event.stage, event.stage)
        self.stage_label.setText(f"{name}: {event.message}" if event.message and event.stage != "data" else name + "…")
        if live and event.stage != "train":
            fraction = event.fraction
            if fraction is None:
                self.progress.setRange(0, 0)  # busy: de-quantizing, loading, saving
            else:
                self.progress.setRange(0, 1000)
                self.progress.setValue(int(fraction * 1000))

    # -- buttons ----------------------------------------------------------------------

    @Slot()
    def _on_stop_button_clicked(self) -> None:
        if self.row is not None:
            self.sig_stop_requested.emit(int(self.row["id"]))

    @Slot()
    def _on_resume_button_clicked(self) -> None:
        if self.row is not None:
            self.sig_resume_requested.emit(int(self.row["id"]))

    @Slot()
    def _on_folder_button_clicked(self) -> None:
        if self.row is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.row["run_dir"])))

    @Slot()
    def _on_chat_button_clicked(self) -> None:
        target = chat_path(self.row["run_dir"], self.picked_weights()) if self.row else None
        if target is not None:
            self.sig_chat_requested.emit(str(target))

    @Slot()
    def _on_new_like_button_clicked(self) -> None:
        if self.row is not None:
            self.sig_new_like_requested.emit(int(self.row["id"]))

    @Slot()
    def open_export_dialog(self) -> ExportDialog | None:
        if self.row is None:
            return None
        if self.export_dialog is not None:
            self.export_dialog.shutdown()
            self.export_dialog.deleteLater()
        self.export_dialog = ExportDialog(self.row["run_dir"], self, weights=self.picked_weights())
        self.export_dialog.sig_chat_requested.connect(self.sig_chat_requested)
        self.export_dialog.open()
        return self.export_dialog

    def shutdown(self) -> None:
        if self.export_dialog is not None:
            self.export_dialog.shutdown()
