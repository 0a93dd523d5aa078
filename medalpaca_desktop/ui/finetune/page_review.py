"""Wizard page 6: the config as YAML, the exact command, a SLURM script, where the run goes, disk space."""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import yaml
from PySide6.QtCore import Slot
from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from medalpaca_desktop.core import paths
from medalpaca_desktop.core.model_info import format_size
from medalpaca_desktop.core.paths import free_space
from medalpaca_desktop.ui.finetune.page_base import WizardPage, WizardState, banner
from medalpaca_desktop.ui.finetune.page_method import estimate
from trainer.commands import user_command
from trainer.config import TrainConfig
from trainer.slurm import SlurmOptions, job_name_for, slurm_script

GGUF_EXPORT_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 1.07, "q6_k": 0.82, "q5_k_m": 0.7, "q4_k_m": 0.6}
CONFIG_NAME = "config.yaml"


def run_folder_name(state: WizardState, now: float | None = None) -> str:
    """'20261124-081500-SmolLM2-135M-Instruct-lora'."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    model = state.model.name if state.model else Path(state.config.base_model).stem or "model"
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", model.replace(" (demo)", "")).strip("-.")[:48] or "model"
    return f"{stamp}-{slug}-{state.config.method}"


def planned_run_dir(state: WizardState, now: float | None = None) -> Path:
    return Path(state.run_dir).expanduser() if state.run_dir else paths.runs_dir() / run_folder_name(state, now)


def disk_needed(state: WizardState) -> int:
    """Bytes the run writes, about: checkpoints (weights + optimizer) kept, the final model, exports."""
    config = state.config
    params = (state.model.parameters if state.model else 0) or 0
    weight_bytes = 4 if config.precision == "fp32" or not (state.report and state.report.gpus) else 2
    keep = config.save_total_limit + 1  # the limit, plus the one being written
    if config.method == "full":
        per_checkpoint = params * (weight_bytes + 8)  # weights + Adam moments (fp32)
        final = params * weight_bytes
    else:
        mem = estimate(state.model, config, config.method)
        trainable = mem.trainable_params if mem else int(params * 0.01)
        per_checkpoint = trainable * (4 + 8)
        final = trainable * 4 + (params * 2 if config.merge_adapter else 0)
    total = per_checkpoint * keep + final
    if config.export_gguf:
        total += int(params * GGUF_EXPORT_BYTES.get(config.export_gguf, 2.0))
    if state.model is not None and state.model.kind == "gguf":
        total += params * 4  # the de-quantized base in the app cache (once)
    return int(total)


def config_for_review(state: WizardState, run_dir: Path) -> TrainConfig:
    return dataclasses.replace(state.config, output_dir=str(run_dir), data=list(state.config.data),
                               lora_target_modules=list(state.config.lora_target_modules),
                               data_weights=list(state.config.data_weights))


class ReviewPage(WizardPage):
    title = "6. Review"

    def __init__(self, state: WizardState, parent: QWidget | None = None) -> None:
        super().__init__(state, "Check the run, then Launch (Ctrl+Return). The same config runs in a terminal or "
                                "on a cluster with the command or the SLURM script below.", parent)
        mono = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        self.run_dir_edit = QLineEdit()
        self.run_dir_edit.setToolTip("Leave empty for a new folder under the app's runs folder")
        self.run_dir_edit.textEdited.connect(self._on_run_dir_edit_text_edited)
        self.browse_button = QPushButton("Choose…")
        self.browse_button.clicked.connect(self._on_browse_button_clicked)
        run_row = QHBoxLayout()
        run_row.addWidget(self.run_dir_edit, 1)
        run_row.addWidget(self.browse_button)
        self.disk_label = QLabel()
        self.disk_label.setWordWrap(True)
        self.command_edit = QLineEdit()
        self.command_edit.setReadOnly(True)
        self.command_edit.setFont(mono)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the command line to the clipboard")
        self.copy_button.clicked.connect(self._on_copy_button_clicked)
        command_row = QHBoxLayout()
        command_row.addWidget(self.command_edit, 1)
        command_row.addWidget(self.copy_button)
        self.nodes_spin = QSpinBox()
        self.nodes_spin.setRange(1, 64)
        self.nodes_spin.setToolTip("Cluster nodes for the SLURM job")
        self.gpus_spin = QSpinBox()
        self.gpus_spin.setRange(1, 16)
        self.gpus_spin.setToolTip("GPUs per node for the SLURM job")
        self.time_edit = QLineEdit("24:00:00")
        self.time_edit.setToolTip("SLURM time limit (HH:MM:SS or D-HH:MM:SS)")
        self.time_edit.setMaximumWidth(110)
        self.slurm_button = QPushButton("Export SLURM script…")
        self.slurm_button.setToolTip("Write an sbatch script and this config beside it, for a cluster")
        self.slurm_button.clicked.connect(self._on_slurm_button_clicked)
        slurm_row = QHBoxLayout()
        for label, widget in (("Nodes", self.nodes_spin), ("GPUs per node", self.gpus_spin),
                              ("Time limit", self.time_edit)):
            slurm_row.addWidget(QLabel(label + ":"))
            slurm_row.addWidget(widget)
        slurm_row.addWidget(self.slurm_button)
        slurm_row.addStretch(1)
        self.slurm_note = banner("noteBanner")
        self.yaml_view = QPlainTextEdit()
        self.yaml_view.setReadOnly(True)
        self.yaml_view.setFont(mono)
        form = QFormLayout()
        form.addRow("Run folder:", run_row)
        form.addRow("Disk space:", self.disk_label)
        form.addRow("Command:", command_row)
        form.addRow("Cluster:", slurm_row)
        self.body.addLayout(form)
        self.body.addWidget(self.slurm_note)
        self.body.addWidget(QLabel("<b>Config</b> (YAML; Save config writes it, Launch writes it into the run folder)"))
        self.body.addWidget(self.yaml_view, 1)

    def planned(self) -> Path:
        return planned_run_dir(self.state)

    def config(self) -> TrainConfig:
        return config_for_review(self.state, self.planned())

    def yaml_text(self) -> str:
        return yaml.safe_dump(self.config().to_dict(), sort_keys=False, allow_unicode=True)

    def command_text(self) -> str:
        return user_command(self.planned() / CONFIG_NAME)

    def enter(self) -> None:
        run_dir = self.planned()
        if not self.state.run_dir:
            self.run_dir_edit.setPlaceholderText(str(run_dir))
        if self.run_dir_edit.text().strip() != self.state.run_dir:
            self.run_dir_edit.setText(self.state.run_dir)
        self.yaml_view.setPlainText(self.yaml_text())
        self.command_edit.setText(self.command_text())
        self.command_edit.setCursorPosition(0)
        self.gpus_spin.setValue(max(1, self.state.config.num_processes))
        self._refresh_disk()

    def _refresh_disk(self) -> str | None:
        run_dir = self.planned()
        need = disk_needed(self.state)
        free = free_space(run_dir)
        text = f"about {format_size(need)} needed (checkpoints kept: {self.state.config.save_total_limit}"
        text += ", the de-quantized base" if self.state.model is not None and self.state.model.kind == "gguf" else ""
        text += f"); {format_size(free) if free is not None else 'unknown'} free on that disk"
        problem = None
        if free is not None and need > free:
            problem = (f"Not enough disk space: the run needs about {format_size(need)}, the disk of {run_dir} has "
                       f"{format_size(free)} free. Free space or choose another run folder.")
            text = f"<span style='color:#b71c1c'>{text}</span>"
        self.disk_label.setText(text)
        self.show_problem(problem)
        return problem

    @Slot(str)
    def _on_run_dir_edit_text_edited(self, text: str) -> None:
        self.state.run_dir = text.strip()
        self.enter()

    @Slot()
    def _on_browse_button_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose an empty folder for the run")
        if folder:
            self.state.run_dir = folder
            self.enter()

    @Slot()
    def _on_copy_button_clicked(self) -> None:
        QGuiApplication.clipboard().setText(self.command_edit.text())

    @Slot()
    def _on_slurm_button_clicked(self) -> None:
        name = job_name_for(self.state.config)
        path, _ = QFileDialog.getSaveFileName(self, "Export SLURM script", str(Path.home() / f"{name}.sbatch"),
                                              "SLURM batch scripts (*.sbatch *.sh);;All files (*)")
        if path:
            self.export_slurm(Path(path))

    def slurm_options(self) -> SlurmOptions:
        return SlurmOptions(nodes=self.nodes_spin.value(), gpus_per_node=self.gpus_spin.value(),
                            time_limit=self.time_edit.text().strip() or "24:00:00")

    def export_slurm(self, script_path: Path) -> Path:
        """The script, with the config it runs written beside it (`<script>.yaml`)."""
        opts = self.slurm_options()
        config = self.config()
        config.num_processes = opts.gpus_per_node
        config_path = config.save(script_path.with_suffix(".yaml"))
        script_path.write_text(slurm_script(config_path.resolve(), config, opts), encoding="utf-8")
        script_path.chmod(0o755)
        self.slurm_note.setText(f"Wrote {script_path} and its config {config_path.name}. On the cluster: "
                                f"sbatch {script_path.name} (paths in the config must exist there).")
        self.slurm_note.setVisible(True)
        return script_path

    def commit(self) -> str | None:
        run_dir = self.planned()
        if self.state.run_dir and (run_dir / CONFIG_NAME).exists():
            return f"{run_dir} already holds a run; choose an empty folder (or leave the field empty for a new one)."
        if run_dir.exists() and not run_dir.is_dir():
            return f"{run_dir} is a file; choose a folder for the run."
        return self._refresh_disk()
