"""Export a finished run to one GGUF file (for llama.cpp and the chat tab), with progress.

Runs `medalpaca export --jsonl` through a PipeJob: the exporter merges a LoRA adapter into
its base in the worker process, so the GUI imports nothing heavy and stays responsive.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from medalpaca_desktop.core.events import Done, Error, Event, Progress, Result
from medalpaca_desktop.core.jobs import RunStatus
from medalpaca_desktop.ui.jobs import JobOutcome, PipeJob
from medalpaca_desktop.ui.widgets.progress_bar import show_progress
from trainer.checkpoints import FINAL, MERGED, CheckpointError, SavedWeights, model_and_adapter, saved_weights

# trainer.export.EXPORT_QUANTS (that module reaches torch, which the GUI never imports; a test keeps them equal)
EXPORT_QUANTS = ("f32", "f16", "bf16", "q8_0", "q4_k_m", "q5_k_m", "q6_k")
QUANT_DEFAULT = "q8_0"
CHECK_QUESTIONS = 200
CHECK_HELP = ("After writing, score the same questions on the original and on the file (log-likelihood, lm-eval's "
              "prompt) and compare them: both accuracies, the paired difference and McNemar's p. TASK[:N]: a "
              "task of the medical suite (downloaded in the Benchmark tab) or a questions file.")
QUANT_HELP = ("Weight type: f32 (exact), f16/bf16 (half size, near exact), q8_0 (quarter size, near f16 quality), "
              "q6_k / q5_k_m / q4_k_m (smaller and faster, some quality loss).")


class ExportSourceError(ValueError):
    """The run has nothing exportable; the message says why."""


@dataclass
class ExportSource:
    """What to export from a run folder: a full model folder, optionally with an adapter on top."""

    model: Path
    adapter: Path | None = None

    def describe(self) -> str:
        if self.adapter is not None:
            return f"the adapter {self.adapter} merged into its base {self.model}"
        return f"the model {self.model}"


def export_source(run_dir: str | Path, weights: SavedWeights | None = None) -> ExportSource:
    """`weights` (picked in the run monitor), else the merged model if the run merged, else final/."""
    run_dir = Path(run_dir)
    if weights is None:
        found = {w.key: w for w in saved_weights(run_dir)}
        weights = found.get(MERGED) or found.get(FINAL)
    if weights is None:
        raise ExportSourceError(f"{run_dir} has no final model yet: only a finished run can be exported.")
    try:
        model, adapter = model_and_adapter(weights)
    except CheckpointError as exc:
        raise ExportSourceError(f"{str(exc)[0].upper()}{str(exc)[1:]}.") from None
    return ExportSource(model, adapter)


def export_command(source: ExportSource, out: Path, quant: str, overwrite: bool, verify: str = "") -> list[str]:
    cmd = [sys.executable, "-m", "medalpaca_desktop", "export", "--model", str(source.model), "--out", str(out),
           "--quant", quant, "--jsonl"]
    if source.adapter is not None:
        cmd += ["--adapter", str(source.adapter)]
    if overwrite:
        cmd.append("--force")
    if verify:
        cmd += ["--verify", verify]
    return cmd


def default_check(run_dir: Path) -> str:
    """What the check scores by default: the run's own in-loop benchmark (its bench_task and bench_questions, so
    the same questions as while training), else 200 MedQA questions."""
    import yaml

    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    config = config if isinstance(config, dict) else {}
    task, count = config.get("bench_task"), config.get("bench_questions")
    if not task:
        return f"medqa_4options:{CHECK_QUESTIONS}"
    return f"{task}:{count if isinstance(count, int) and count > 0 else CHECK_QUESTIONS}"


class ExportDialog(QDialog):
    """Choose the GGUF type and file, run the export, show progress and the result."""

    sig_exported = Signal(str)  # path of the written .gguf
    sig_chat_requested = Signal(str)

    def __init__(self, run_dir: str | Path, parent: QWidget | None = None,
                 weights: SavedWeights | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export to GGUF")
        self.setMinimumWidth(620)
        self.run_dir = Path(run_dir)
        self.weights = weights  # the run monitor's pick; None: merged, else final
        self.runner = PipeJob(self)
        self.result_path: Path | None = None
        try:
            self.source: ExportSource | None = export_source(self.run_dir, weights)
            source_text = self.source.describe()
        except ExportSourceError as exc:
            self.source, source_text = None, str(exc)

        self.source_label = QLabel(source_text)
        self.source_label.setWordWrap(True)
        self.source_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.quant_combo = QComboBox()
        self.quant_combo.addItems(list(EXPORT_QUANTS))
        self.quant_combo.setCurrentText(QUANT_DEFAULT)
        self.quant_combo.setToolTip(QUANT_HELP)
        self.quant_combo.currentTextChanged.connect(self._on_quant_combo_changed)
        self.out_edit = QLineEdit(str(self._default_out(QUANT_DEFAULT)))
        self.out_edit.setToolTip("The .gguf file to write.")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._on_browse_clicked)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(browse)
        self.overwrite_check = QCheckBox("Replace the file if it exists")
        self.overwrite_check.setToolTip("Replace the output file if it already exists.")
        self.check_box = QCheckBox("Check it against the original on")
        self.check_box.setToolTip(CHECK_HELP)
        self.check_edit = QLineEdit(default_check(self.run_dir))
        self.check_edit.setToolTip(CHECK_HELP)
        self.check_box.toggled.connect(self.check_edit.setEnabled)
        self.check_box.setChecked(True)
        check_row = QHBoxLayout()
        check_row.addWidget(self.check_box)
        check_row.addWidget(self.check_edit, 1)
        self.verify_label = QLabel()
        self.verify_label.setWordWrap(True)
        self.verify_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.verify_label.hide()
        self.verify: dict | None = None

        form = QFormLayout()
        form.addRow("Exports", self.source_label)
        form.addRow("Type", self.quant_combo)
        form.addRow("File", out_row)
        form.addRow("", self.overwrite_check)
        form.addRow("Check", check_row)

        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.progress.setFormat("")
        self.status_label = QLabel("Choose the type and the file, then Export.")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        self.log.setPlaceholderText("The exporter's messages appear here.")
        self.log.setMaximumHeight(140)

        self.buttons = QDialogButtonBox()
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        self.stop_button = self.buttons.addButton("Stop", QDialogButtonBox.ButtonRole.ActionRole)
        self.open_button = self.buttons.addButton("Open folder", QDialogButtonBox.ButtonRole.ActionRole)
        self.chat_button = self.buttons.addButton("Chat with it", QDialogButtonBox.ButtonRole.ActionRole)
        self.close_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.export_button.clicked.connect(self.start_export)
        self.stop_button.clicked.connect(lambda: self.runner.stop())  # not stop(checked=False): a grace of 0
        self.open_button.clicked.connect(self._on_open_button_clicked)
        self.chat_button.clicked.connect(self._on_chat_button_clicked)
        self.close_button.clicked.connect(self.reject)
        self.stop_button.setEnabled(False)
        self.open_button.setEnabled(False)
        self.chat_button.setEnabled(False)
        self.export_button.setEnabled(self.source is not None)
        if self.source is None:
            self.status_label.setText(f"<b>Nothing to export.</b> {source_text}")

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.status_label)
        layout.addWidget(self.verify_label)
        layout.addWidget(self.log)
        layout.addWidget(self.buttons)

        self.runner.sig_event_received.connect(self._on_runner_event_received)
        self.runner.sig_log_line.connect(self._on_runner_log_line)
        self.runner.sig_finished.connect(self._on_runner_finished)

    def _default_out(self, quant: str) -> Path:
        step = f"-step{self.weights.step}" if self.weights is not None and self.weights.key.startswith("step-") else ""
        return self.run_dir / f"{self.run_dir.name}{step}-{quant}.gguf"

    @Slot(str)
    def _on_quant_combo_changed(self, quant: str) -> None:
        current = Path(self.out_edit.text())
        if current.parent == self.run_dir and current.name.startswith(self.run_dir.name):
            self.out_edit.setText(str(self._default_out(quant)))

    @Slot()
    def _on_browse_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Write the GGUF file to", self.out_edit.text(),
                                              "GGUF files (*.gguf)")
        if path:
            self.out_edit.setText(path if path.endswith(".gguf") else path + ".gguf")

    # -- running ----------------------------------------------------------------------

    @Slot()
    def start_export(self) -> bool:
        """Check the choices and start the exporter; False (with a message) when they cannot run."""
        if self.source is None or self.runner.is_running():
            return False
        out = Path(self.out_edit.text().strip()).expanduser()
        if not self.out_edit.text().strip() or out.suffix.lower() != ".gguf":
            return self._refuse("Give the path of a .gguf file to write.")
        if out.is_dir():
            return self._refuse(f"{out} is a folder; give the path of the .gguf file to write.")
        if out.exists() and not self.overwrite_check.isChecked():
            return self._refuse(f"{out} already exists. Tick “Replace the file if it exists” or choose another name.")
        if not out.parent.is_dir():
            return self._refuse(f"The folder {out.parent} does not exist.")
        self.result_path = None
        self.log.clear()
        self.progress.setRange(0, 0)
        self.status_label.setText("Starting the exporter…")
        self.export_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.open_button.setEnabled(False)
        self.chat_button.setEnabled(False)
        check = self.check_edit.text().strip() if self.check_box.isChecked() else ""
        self.verify = None
        self.verify_label.hide()
        cmd = export_command(self.source, out, self.quant_combo.currentText(), self.overwrite_check.isChecked(),
                             check)
        self.runner.start(cmd[0], cmd[1:])
        return True

    def _refuse(self, message: str) -> bool:
        self.status_label.setText(f"<b>Cannot export:</b> {message}")
        return False

    @Slot(object)
    def _on_runner_event_received(self, event: Event) -> None:
        if isinstance(event, Progress):
            show_progress(self.progress, event)
            self.status_label.setText(f"{event.stage}: {event.message}" if event.message else event.stage)
        elif isinstance(event, Result) and event.data.get("path"):
            self.result_path = Path(event.data["path"])
            self.verify = event.data.get("verify")
        elif isinstance(event, Error) and event.kind == "verify":
            self._show_verify(event.message, worse=True)
        elif isinstance(event, Done) and event.ok and event.data.get("path"):
            self.result_path = Path(event.data["path"])

    @Slot(str)
    def _on_runner_log_line(self, line: str) -> None:
        self.log.appendPlainText(line)

    @Slot(object)
    def _on_runner_finished(self, outcome: JobOutcome) -> None:
        self.stop_button.setEnabled(False)
        self.export_button.setEnabled(True)
        self.progress.setRange(0, 1000)
        if outcome.ok and self.result_path is not None:
            self.progress.setValue(1000)
            self.progress.setFormat("100%")
            self.status_label.setText(f"<b>Wrote</b> {self.result_path}")
            if self.verify:
                self._show_verify(str(self.verify.get("verdict", "")), bool(self.verify.get("significantly_worse")))
            self.open_button.setEnabled(True)
            self.chat_button.setEnabled(True)
            self.sig_exported.emit(str(self.result_path))
        elif outcome.status == RunStatus.STOPPED:
            self.progress.setValue(0)
            self.status_label.setText("Export stopped; no file was written.")
        else:
            self.progress.setValue(0)
            self.status_label.setText(f"<b>Export failed:</b> {outcome.describe()}")

    def _show_verify(self, text: str, worse: bool) -> None:
        """The check's verdict under the status: red when the file is significantly worse or was not checked."""
        self.verify_label.setText(text)
        self.verify_label.setStyleSheet("color: #a00000; font-weight: bold;" if worse else "color: #1e4620;")
        self.verify_label.show()

    @Slot()
    def _on_open_button_clicked(self) -> None:
        if self.result_path is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.result_path.parent)))

    @Slot()
    def _on_chat_button_clicked(self) -> None:
        if self.result_path is not None:
            self.sig_chat_requested.emit(str(self.result_path))
            self.accept()

    def reject(self) -> None:
        if self.runner.is_running():
            self.runner.stop()
        super().reject()

    def shutdown(self) -> None:
        self.runner.kill_now()
