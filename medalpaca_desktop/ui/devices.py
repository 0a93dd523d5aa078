"""What compute this machine has, asked of a subprocess (the probe imports torch).

`medalpaca devices --json` runs through a PipeJob; the GUI only parses its
JSON into core.devices.DeviceReport. A missing or failing probe is a message,
never an error dialog: the app works on the CPU either way.
"""

from __future__ import annotations

import json
import sys

from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from medalpaca_desktop.core.devices import DeviceReport
from medalpaca_desktop.core.model_info import format_size
from medalpaca_desktop.ui.jobs import JobOutcome, PipeJob

NO_GPU_TEXT = "No CUDA GPU found: training and chat run on the CPU (slower)"


def probe_command() -> list[str]:
    return [sys.executable, "-m", "medalpaca_desktop", "devices", "--json"]


def summarize(report: DeviceReport) -> str:
    """One short line for the status bar."""
    if report.gpus:
        first = report.gpus[0]
        text = f"GPU: {first.name} ({format_size(first.memory_total)})"
        if len(report.gpus) > 1:
            text += f" + {len(report.gpus) - 1} more"
    else:
        text = "CPU only (no CUDA GPU)"
    return f"{text} · {report.cpu_cores} cores · {format_size(report.ram_total)} RAM"


class DeviceProbe(QObject):
    """Runs the devices command once per `start()` and keeps the last report."""

    sig_report_received = Signal(object)  # DeviceReport
    sig_probe_failed = Signal(str)

    def __init__(self, parent: QObject | None = None, command: list[str] | None = None) -> None:
        super().__init__(parent)
        self._command = command or probe_command()
        self.report: DeviceReport | None = None
        self.error: str | None = None
        self.runner = PipeJob(self, collect_output=True)
        self.runner.sig_finished.connect(self._on_runner_finished)

    def is_running(self) -> bool:
        return self.runner.is_running()

    @Slot()
    def start(self) -> None:
        if not self.runner.is_running():
            self.runner.start(self._command[0], self._command[1:])

    def shutdown(self) -> None:
        self.runner.kill_now()

    @Slot(object)
    def _on_runner_finished(self, outcome: JobOutcome) -> None:
        if not outcome.ok:
            self._fail(outcome.message or f"the devices check {outcome.status.value}")
            return
        try:
            report = DeviceReport.from_dict(json.loads(outcome.output))
        except (ValueError, TypeError, AttributeError) as exc:
            self._fail(f"its answer was not readable ({exc})")
            return
        self.report, self.error = report, None
        self.sig_report_received.emit(report)

    def _fail(self, reason: str) -> None:
        self.error = f"Could not check this computer's devices: {reason}"
        self.sig_probe_failed.emit(self.error)


class DevicesPanel(QWidget):
    """GPUs, CPU, memory and engine versions, from a DeviceProbe.

    `recheck_button` is not laid out here: the container puts it with its own
    buttons (DevicesDialog's button box).
    """

    def __init__(self, probe: DeviceProbe, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._probe = probe
        self.headline = QLabel()
        font = self.headline.font()
        font.setBold(True)
        self.headline.setFont(font)
        self.headline.setWordWrap(True)
        self._form = QFormLayout()
        self._form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        self.recheck_button = QPushButton("Check again")
        self.recheck_button.setToolTip("Run the devices check again (after plugging in a GPU or updating drivers)")
        self.recheck_button.clicked.connect(self._on_recheck_button_clicked)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.headline)
        layout.addLayout(self._form)
        layout.addStretch(1)
        probe.sig_report_received.connect(self._on_probe_report_received)
        probe.sig_probe_failed.connect(self._on_probe_failed)
        if probe.report is not None:
            self._show_report(probe.report)
        elif probe.error is not None:
            self._on_probe_failed(probe.error)
        else:
            self._show_checking()

    def _show_checking(self) -> None:
        self._clear()
        self.headline.setText("Checking this computer's devices…")
        self.recheck_button.setEnabled(False)

    def _clear(self) -> None:
        while self._form.rowCount():
            self._form.removeRow(0)

    def _row(self, label: str, value: str) -> None:
        field = QLabel(value)
        field.setWordWrap(True)
        field.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._form.addRow(f"{label}:", field)

    @Slot(object)
    def _on_probe_report_received(self, report: DeviceReport) -> None:
        self._show_report(report)

    def _show_report(self, report: DeviceReport) -> None:
        self._clear()
        self.recheck_button.setEnabled(True)
        if report.gpus:
            self.headline.setText(f"{len(report.gpus)} CUDA GPU{'s' if len(report.gpus) > 1 else ''} found.")
            for gpu in report.gpus:
                free = f", {format_size(gpu.memory_free)} free" if gpu.memory_free is not None else ""
                extras = ", bf16" if gpu.bf16 else ""
                cap = f", compute {gpu.capability}" if gpu.capability else ""
                self._row(f"GPU {gpu.index}", f"{gpu.name}: {format_size(gpu.memory_total)}{free}{cap}{extras}")
        else:
            self.headline.setText(NO_GPU_TEXT)
        self._row("CPU", f"{report.cpu_cores} cores, {report.cpu_threads} threads")
        self._row("Memory", f"{format_size(report.ram_total)} ({format_size(report.ram_available)} available)")
        torch_text = report.torch_version or "not installed"
        if report.torch_version:
            torch_text += f", CUDA {report.cuda_version}" if report.cuda_version else ", CPU-only build"
        self._row("PyTorch", torch_text)
        llama = report.llama_cpp_version or "not installed"
        if report.llama_cpp_version and report.llama_cpp_gpu_offload is not None:
            llama += ", GPU offload" if report.llama_cpp_gpu_offload else ", CPU only"
        self._row("llama.cpp", llama)
        for note in report.notes:
            self._row("Note", note)

    @Slot(str)
    def _on_probe_failed(self, message: str) -> None:
        self._clear()
        self.recheck_button.setEnabled(True)
        self.headline.setText(message)
        self._row("Meanwhile", "The app treats this computer as CPU-only.")

    @Slot()
    def _on_recheck_button_clicked(self) -> None:
        self._show_checking()
        self._probe.start()


class DevicesDialog(QDialog):
    def __init__(self, probe: DeviceProbe, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("This computer's devices")
        self.panel = DevicesPanel(probe)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.addButton(self.panel.recheck_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.panel)
        layout.addWidget(buttons)
        self.setMinimumWidth(480)
