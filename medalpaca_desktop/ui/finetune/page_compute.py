"""Wizard page 5: where it runs: which GPUs, how many processes, precision, gradient checkpointing."""

from __future__ import annotations

from PySide6.QtCore import Slot
from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QLabel, QSpinBox, QVBoxLayout, QWidget

from medalpaca_desktop.core.model_info import format_size
from medalpaca_desktop.ui.finetune.page_base import WizardPage, WizardState, banner
from trainer.config import PRECISIONS, TrainConfig

PRECISION_TEXT = {
    "auto": "auto (bf16 where the GPU or CPU computes it natively, fp16 on other GPUs, else fp32)",
    "bf16": "bf16",
    "fp16": "fp16",
    "fp32": "fp32 (full precision, slowest, most memory)",
}


def precision_problem(precision: str, gpus_bf16: list[bool]) -> str | None:
    """Why this precision cannot run on the chosen devices (empty list = the CPU)."""
    if precision == "fp16" and not gpus_bf16:
        return "fp16 mixed precision needs a CUDA GPU; on the CPU use auto or fp32."
    if precision == "bf16" and gpus_bf16 and not all(gpus_bf16):
        return "bf16 needs a GPU of compute capability 8.0 or newer (Ampere); use fp16 or auto."
    return None


class ComputePage(WizardPage):
    title = "5. Compute"

    def __init__(self, state: WizardState, parent: QWidget | None = None) -> None:
        super().__init__(state, "The devices the run uses. Several GPUs train in several processes through "
                                "accelerate (a full fine-tune is sharded with FSDP).", parent)
        self.device_note = banner("noteBanner")
        self.gpu_box = QVBoxLayout()
        self.gpu_checks: list[QCheckBox] = []
        self.processes_spin = QSpinBox()
        self.processes_spin.setRange(1, 1)
        self.processes_spin.setMaximumWidth(90)
        self.processes_spin.setToolTip(TrainConfig.field_help("num_processes"))
        self.processes_note = QLabel()
        self.processes_note.setWordWrap(True)
        self.precision_combo = QComboBox()
        for p in PRECISIONS:
            self.precision_combo.addItem(PRECISION_TEXT[p], p)
        self.precision_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.precision_combo.setToolTip(TrainConfig.field_help("precision"))
        self.precision_combo.currentIndexChanged.connect(self._on_precision_combo_current_index_changed)
        self.checkpointing_check = QCheckBox("Gradient checkpointing (less memory, ~30 % slower)")
        self.checkpointing_check.setToolTip(TrainConfig.field_help("gradient_checkpointing"))
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        gpus = QWidget()
        gpus.setLayout(self.gpu_box)
        form.addRow("GPUs:", gpus)
        form.addRow("Processes:", self.processes_spin)
        form.addRow("", self.processes_note)
        form.addRow("Precision:", self.precision_combo)
        form.addRow("", self.checkpointing_check)
        self.body.addWidget(self.device_note)
        self.body.addLayout(form)
        self.body.addStretch(1)

    def refresh_environment(self) -> None:
        report = self.state.report
        while self.gpu_box.count():
            widget = self.gpu_box.takeAt(0).widget()
            if widget is not None:
                widget.deleteLater()
        self.gpu_checks = []
        if report is None:
            self.device_note.setText("Checking this computer's devices… Until then the run uses the default device.")
        elif not report.gpus:
            bf16 = (" It computes bf16 natively, so auto precision trains in bf16 there (~1.5x faster than fp32)."
                    if report.cpu_bf16 else " It has no native bf16, so auto precision trains in fp32.")
            self.device_note.setText(f"No CUDA GPU found: the run trains on the CPU ({report.cpu_cores} cores). "
                                     "It works, slowly - fine for the demo model and short runs." + bf16)
        else:
            self.device_note.setText(f"{len(report.gpus)} GPU(s) found. Tick the ones to train on.")
        self.device_note.setVisible(True)
        chosen = set(self.state.gpus) if self.state.gpus else None
        for gpu in (report.gpus if report else []):
            check = QCheckBox(f"GPU {gpu.index}: {gpu.name}, {format_size(gpu.memory_total)}"
                              + (", bf16" if gpu.bf16 else ""))
            check.setChecked(chosen is None or gpu.index in chosen)
            check.toggled.connect(self._on_gpu_check_toggled)
            self.gpu_box.addWidget(check)
            self.gpu_checks.append(check)
        if not self.gpu_checks:
            self.gpu_box.addWidget(QLabel("None: the CPU" if report is not None else "Not known yet"))
        self._update_processes()

    def chosen_gpus(self) -> list[int]:
        report = self.state.report
        if report is None:
            return []
        return [g.index for g, check in zip(report.gpus, self.gpu_checks) if check.isChecked()]

    def _gpu_bf16(self) -> list[bool]:
        report = self.state.report
        chosen = set(self.chosen_gpus())
        return [g.bf16 for g in (report.gpus if report else []) if g.index in chosen]

    @Slot(bool)
    def _on_gpu_check_toggled(self, checked: bool) -> None:
        self._update_processes()
        self.sig_changed.emit()

    def _update_processes(self) -> None:
        report = self.state.report
        if report is not None and report.gpus:
            n = max(1, len(self.chosen_gpus()))
            self.processes_spin.setRange(1, n)
            self.processes_spin.setValue(n)
            self.processes_spin.setEnabled(n > 1)
            self.processes_note.setText("One process per chosen GPU.")
        else:
            cores = report.cpu_cores if report is not None else 1
            self.processes_spin.setRange(1, max(1, cores))
            self.processes_spin.setEnabled(cores > 1)
            self.processes_note.setText("On the CPU one process is usually fastest; more split the cores "
                                        "(data-parallel over gloo).")
        self._check_precision()

    @Slot(int)
    def _on_precision_combo_current_index_changed(self, index: int) -> None:
        self._check_precision()
        self.sig_changed.emit()

    def _check_precision(self) -> str | None:
        problem = precision_problem(self.precision_combo.currentData() or "auto", self._gpu_bf16()) \
            if self.state.report is not None else None
        self.show_problem(problem)
        return problem

    def enter(self) -> None:
        config = self.state.config
        self.refresh_environment()
        if self.processes_spin.isEnabled() and (self.state.gpus or not self.gpu_checks):
            self.processes_spin.setValue(config.num_processes)  # as chosen before (or the CPU's default)
        self.precision_combo.setCurrentIndex(max(0, self.precision_combo.findData(config.precision)))
        self.checkpointing_check.setChecked(config.gradient_checkpointing)

    def commit(self) -> str | None:
        report = self.state.report
        if report is not None and report.gpus and not self.chosen_gpus():
            return "Tick at least one GPU to train on."
        problem = self._check_precision()
        if problem:
            return problem
        config = self.state.config
        config.num_processes = self.processes_spin.value()
        config.precision = self.precision_combo.currentData() or "auto"
        config.gradient_checkpointing = self.checkpointing_check.isChecked()
        self.state.gpus = self.chosen_gpus()
        if config.micro_batch_size * config.num_processes > config.global_batch_size:
            return (f"{config.num_processes} processes x micro batch {config.micro_batch_size} is more than the "
                    f"global batch {config.global_batch_size}: lower the processes or raise the global batch "
                    "(Settings).")
        return None
