"""Wizard page 3: the training method, each with its memory estimate against this machine."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import Slot
from PySide6.QtWidgets import QButtonGroup, QGridLayout, QLabel, QRadioButton, QWidget

from medalpaca_desktop.core.devices import DeviceReport
from medalpaca_desktop.core.model_info import ModelInfo, format_size
from medalpaca_desktop.ui.finetune.page_base import WizardPage, WizardState, banner
from trainer.config import METHODS, TrainConfig
from trainer.estimate import MemoryBreakdown, estimate_from_hf_config

LABELS = {
    "full": ("Full fine-tune", "Every weight is trained: the best fit, the most memory (16 bytes per parameter)."),
    "lora": ("LoRA", "Small low-rank adapters on a frozen 16-bit base: the MedAlpaca paper's LoRA recipe."),
    "lora-8bit": ("LoRA on an 8-bit base", "Adapters on a base quantized to 8 bits (bitsandbytes LLM.int8())."),
    "qlora": ("QLoRA (4-bit)", "Adapters on a 4-bit NF4 base: the least memory (Dettmers et al. 2023)."),
}
ALL_LINEAR_MODULES = 7  # q, k, v, o, gate, up, down
RAM_MARGIN = 0.15


def model_shape(info: ModelInfo | None) -> dict[str, Any] | None:
    """The config.json values the estimate needs: read from an HF folder, or from a GGUF header's facts."""
    if info is None:
        return None
    if info.kind == "hf":
        try:
            config = json.loads((Path(info.path) / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if isinstance(config.get("text_config"), dict):
            config = {**config["text_config"], **{k: v for k, v in config.items() if k != "text_config"}}
        return config if config.get("vocab_size") else None
    extra = info.extra
    if info.kind == "gguf" and extra.get("embedding_length") and extra.get("block_count") and extra.get("vocab_size"):
        return {"hidden_size": extra["embedding_length"], "num_hidden_layers": extra["block_count"],
                "vocab_size": extra["vocab_size"]}
    return None


def target_modules_per_layer(config: TrainConfig) -> int:
    targets = [t for t in config.lora_target_modules if t]
    return ALL_LINEAR_MODULES if "all-linear" in targets else max(1, len(targets))


def estimate(info: ModelInfo | None, config: TrainConfig, method: str, cpu: bool = False,
             cpu_bf16: bool = False) -> MemoryBreakdown | None:
    """The estimate for `method` with the config's batch, length and adapters; `cpu`: auto means bf16 there
    when the CPU computes it natively (`cpu_bf16`), else fp32 (trainer.methods.resolve_precision's rule)."""
    shape = model_shape(info)
    if shape is None:
        return None
    precision = config.precision
    if cpu and precision == "auto":
        precision = "bf16" if cpu_bf16 else "fp32"
    try:
        return estimate_from_hf_config(
            shape, method, config.micro_batch_size, config.max_length, config.gradient_checkpointing,
            precision=precision, lora_r=config.lora_r,
            n_target_modules_per_layer=target_modules_per_layer(config),
            params=info.parameters if info is not None and info.kind == "gguf" else None)
    except (KeyError, TypeError, ValueError):
        return None


@dataclass
class MethodVerdict:
    enabled: bool
    text: str  # shown under the method


def judge(method: str, mem: MemoryBreakdown | None, info: ModelInfo | None,
          report: DeviceReport | None) -> MethodVerdict:
    """Whether this machine can run `method`, and a line that says so."""
    if info is not None and info.kind == "hf" and info.quantization and method == "full":
        return MethodVerdict(False, f"Not possible: the base is already quantized ({info.quantization}); "
                                    "train adapters on it instead.")
    need = f"needs {mem.describe()}" if mem else "no estimate (the model's shape is unknown)"
    if report is None:
        return MethodVerdict(True, f"{need}; this computer's devices are still being checked.")
    if report.gpus:
        best = max(report.gpus, key=lambda g: g.memory_total)
        if mem is None or mem.fits(best.memory_total):
            return MethodVerdict(
                True, f"{need}; fits GPU {best.index} ({best.name}, {format_size(best.memory_total)}).")
        many = " (several GPUs with FSDP share it)" if method == "full" and len(report.gpus) > 1 else ""
        return MethodVerdict(method == "full" and len(report.gpus) > 1 and
                             mem.total <= sum(g.memory_total for g in report.gpus) * (1 - RAM_MARGIN),
                             f"{need}; more than the largest GPU has ({format_size(best.memory_total)}){many}.")
    if mem is not None and report.ram_total and mem.total > report.ram_total * (1 - RAM_MARGIN):
        return MethodVerdict(False, f"{need}; more than this computer's memory ({format_size(report.ram_total)}) "
                                    "- no GPU was found to train on.")
    ram = f"needs {mem.describe()} of RAM" if mem else need
    return MethodVerdict(True, f"{ram}; no GPU: runs on the CPU, slowly.")


class MethodPage(WizardPage):
    title = "3. Method"

    def __init__(self, state: WizardState, parent: QWidget | None = None) -> None:
        super().__init__(state, "How the model learns. The memory each method needs (for the chosen micro batch, "
                                "max length and LoRA rank) is compared with this computer's GPUs.", parent)
        self.device_note = banner("noteBanner")
        self.body.addWidget(self.device_note)
        self.group = QButtonGroup(self)
        self.buttons: dict[str, QRadioButton] = {}
        self.verdict_labels: dict[str, QLabel] = {}
        self.verdicts: dict[str, MethodVerdict] = {}
        grid = QGridLayout()
        grid.setColumnStretch(1, 1)
        for row, method in enumerate(METHODS):
            title, text = LABELS[method]
            button = QRadioButton(title)
            button.setToolTip(TrainConfig.field_help("method"))
            self.group.addButton(button, row)
            self.buttons[method] = button
            info = QLabel(text)
            info.setWordWrap(True)
            verdict = QLabel()
            verdict.setWordWrap(True)
            self.verdict_labels[method] = verdict
            grid.addWidget(button, row * 2, 0)
            grid.addWidget(info, row * 2, 1)
            grid.addWidget(verdict, row * 2 + 1, 1)
        self.group.idToggled.connect(self._on_group_id_toggled)
        self.body.addLayout(grid)
        self.body.addStretch(1)

    def selected_method(self) -> str | None:
        checked = self.group.checkedId()
        return METHODS[checked] if checked >= 0 else None

    def select(self, method: str) -> None:
        self.buttons[method].setChecked(True)

    def refresh_environment(self) -> None:
        report = self.state.report
        if report is None:
            note = "Checking this computer's devices… (every method stays available meanwhile)"
        elif report.gpus:
            gpus = ", ".join(f"GPU {g.index} {g.name} {format_size(g.memory_total)}" for g in report.gpus)
            note = f"Found: {gpus}."
        else:
            note = (f"No CUDA GPU found: every method runs on the CPU ({report.cpu_cores} cores, "
                    f"{format_size(report.ram_total)} RAM) - slowly. Fine for the demo model and a short run; "
                    "a 7B model needs a GPU. 8-bit and 4-bit bases work on the CPU too.")
        self.device_note.setText(note)
        self.device_note.setVisible(True)
        config = self.state.config
        for method in METHODS:
            cpu = report is not None and not report.gpus
            mem = estimate(self.state.model, config, method, cpu, report is not None and report.cpu_bf16)
            verdict = judge(method, mem, self.state.model, report)
            self.verdicts[method] = verdict
            self.buttons[method].setEnabled(verdict.enabled)
            self.buttons[method].setToolTip(verdict.text if not verdict.enabled else TrainConfig.field_help("method"))
            label = self.verdict_labels[method]
            label.setText(verdict.text if verdict.enabled else f"<span style='color:#b71c1c'>Unavailable: "
                                                               f"{verdict.text}</span>")
        self._check_selected()

    def _check_selected(self) -> None:
        method = self.selected_method()
        verdict = self.verdicts.get(method or "")
        self.show_problem(None if verdict is None or verdict.enabled else
                          f"{LABELS[method][0]} cannot run here: {verdict.text} Choose another method.")

    @Slot(int, bool)
    def _on_group_id_toggled(self, button_id: int, checked: bool) -> None:
        if checked:
            self.state.config.method = METHODS[button_id]
            self._check_selected()
            self.sig_changed.emit()

    def enter(self) -> None:
        self.buttons[self.state.config.method].setChecked(True)
        self.refresh_environment()

    def commit(self) -> str | None:
        method = self.selected_method()
        if method is None:
            return "Choose a training method."
        verdict = self.verdicts.get(method)
        if verdict is not None and not verdict.enabled:
            return f"{LABELS[method][0]} cannot run here: {verdict.text} Choose another method."
        self.state.config.method = method
        if method == "full":
            self.state.config.merge_adapter = False
        return None
