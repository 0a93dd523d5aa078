"""Set up benchmark runs: models, questions, protocol preset, limit, seed; the command shown first.

Produces one `bench.config.BenchConfig` per ticked model (each its own run folder), or, for a
task or group of the medical suite, the suite plan's runs (suite_setup.py: one per model and
task, in a new suite folder); nothing heavy happens here. Your own dataset is read and checked
on a worker thread so a bad file is refused with its file and line before any model loads.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QGuiApplication, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from bench.config import (
    MODES,
    PRESET_HELP,
    PRESET_TITLES,
    PRESETS,
    PROMPT_STYLES,
    QUANTIZATIONS,
    RULES,
    BenchConfig,
    ConfigError,
    matching_preset,
    user_command,
)
from bench.datasets import sample_questions_dir
from bench.suite import SuitePlan
from medalpaca_desktop.core import paths
from medalpaca_desktop.core.model_info import ModelInfo, format_size
from medalpaca_desktop.ui.benchmark.dataset_probe import DatasetSummary, probe_dataset
from medalpaca_desktop.ui.benchmark.suite_setup import plan_for, suite_command
from medalpaca_desktop.ui.benchmark.task_choice import TaskChoice
from medalpaca_desktop.ui.workers import TaskManager

MODEL_ROLE = Qt.ItemDataRole.UserRole + 1
CUSTOM = "custom"
MODE_NAMES = {"generate": "Generate an answer (parsed)", "loglikelihood": "Log-likelihood of each option"}
STYLE_NAMES = {"medalpaca": "MedAlpaca template", "lm-eval": "lm-eval (Question: … Answer:)"}
RULE_NAMES = {"paper": "paper (answer starts with the letter)", "lenient": "lenient (also “(B)”, “The answer is B”…)"}
RUN_TIP = "Queue one run per ticked model and start (Ctrl+Enter)"
SUITE_RUN_TIP = "Queue one run per ticked model and task, in a new suite folder, and start (Ctrl+Enter)"


def model_entry_label(info: ModelInfo) -> str:
    """'SmolLM2-135M-Instruct (demo) · GGUF Q4_1 · 105.5 MB' / '… · LoRA adapter on base'."""
    if info.kind == "adapter":
        base = Path(info.base_model or "?").name
        return f"{info.name} · LoRA adapter on {base}"
    parts = [info.name]
    if info.kind == "gguf":
        parts.append(f"GGUF {info.quantization}" if info.quantization else "GGUF")
    else:
        parts.append("Hugging Face" + (f" {info.dtype}" if info.dtype else ""))
    if info.size_bytes:
        parts.append(format_size(info.size_bytes))
    return " · ".join(parts)


def benchmark_models(models: list[ModelInfo]) -> list[ModelInfo]:
    """Models that can be scored: supported GGUF/HF models, and adapters whose base folder is here."""
    usable = [m for m in models if m.kind in ("gguf", "hf") and m.supported]
    usable += [m for m in models if m.kind == "adapter" and m.base_model and Path(m.base_model).is_dir()]
    return sorted(usable, key=lambda m: (m.is_demo, m.kind == "adapter", m.name.lower()))


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:48] or "model"


def new_run_dir(label: str, mode: str, root: Path | None = None) -> Path:
    """A fresh folder name under the app's runs directory (never an existing one)."""
    root = root or paths.runs_dir()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = root / f"bench-{stamp}-{slug(label)}-{mode}"
    candidate, n = base, 2
    while candidate.exists():
        candidate = base.with_name(f"{base.name}-{n}")
        n += 1
    return candidate


class SetupPanel(QWidget):
    """The 'New run' form."""

    sig_runs_requested = Signal(object)  # list[BenchConfig], each with its own `out`
    sig_dataset_checked = Signal(object)  # DatasetSummary
    sig_add_model_requested = Signal()

    def __init__(self, tasks: TaskManager, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tasks = tasks
        self.models: list[ModelInfo] = []
        self.dataset_summary: DatasetSummary | None = None
        self.last_plan: SuitePlan | None = None  # the suite of the last Run on a task
        self._probe_generation = 0
        self._run_when_checked = False  # Run pressed while the questions were still being read
        self._updating = False
        help_of = BenchConfig.field_help

        # models
        self.model_list = QListWidget()
        self.model_list.setToolTip("Tick one or more models: each is scored in its own run, one after another.")
        self.model_list.setMinimumHeight(110)
        self.model_list.itemChanged.connect(self._on_model_list_item_changed)
        self.models_empty = QLabel("No models found yet. Add a GGUF file or a Hugging Face folder in the Models "
                                   "tab (the demo model is listed there when installed).")
        self.models_empty.setWordWrap(True)
        self.models_empty.setStyleSheet("color: #666;")
        self.add_model_button = QPushButton("Add…")
        self.add_model_button.setToolTip("Add a model folder in the Models tab")
        self.add_model_button.clicked.connect(self.sig_add_model_requested)
        self.quant_combo = QComboBox()
        for q in QUANTIZATIONS:
            self.quant_combo.addItem({"none": "as saved", "8bit": "8-bit", "4bit": "4-bit"}[q], q)
        self.quant_combo.setToolTip(help_of("quantization") + " GGUF files keep their own quantization.")
        self.quant_combo.currentIndexChanged.connect(self._refresh)

        # dataset: a task of the medical suite, or your own file
        self.task_choice = TaskChoice()
        self.task_choice.sig_changed.connect(self._on_task_choice_changed)
        self.data_edit = QLineEdit()
        self.data_edit.setMinimumWidth(120)
        self.data_edit.setPlaceholderText("USMLE self-assessment folder or MedQA .jsonl file")
        self.data_edit.setToolTip(help_of("data"))
        self.data_edit.editingFinished.connect(self._on_data_edit_editing_finished)
        self.data_folder_button = QPushButton("Folder…")
        self.data_folder_button.setToolTip("Choose a USMLE self-assessment folder (step1.json, step2.json, …)")
        self.data_folder_button.clicked.connect(self._on_data_folder_button_clicked)
        self.data_file_button = QPushButton("File…")
        self.data_file_button.setToolTip("Choose a MedQA JSONL file or a CSV/TSV/JSONL table")
        self.data_file_button.clicked.connect(self._on_data_file_button_clicked)
        self.sample_combo = _shrinking_combo()
        self.sample_combo.addItem("Sample questions…", "")
        self.sample_combo.setToolTip("Questions the project wrote itself (not real exam items), for trying the "
                                     "benchmark: the same questions as a USMLE folder and as MedQA JSONL")
        samples = sample_questions_dir()
        choices = (("Sample: USMLE folder format", "usmle"), ("Sample: MedQA JSONL format", "medqa_sample.jsonl"))
        for text, sub in choices:
            if (samples / sub).exists():
                self.sample_combo.addItem(text, str(samples / sub))
        self.sample_combo.activated.connect(self._on_sample_combo_activated)
        self.dataset_label = QLabel("No questions chosen yet.")
        self.dataset_label.setWordWrap(True)
        self.dataset_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.skip_check = QCheckBox("Skip malformed records")
        self.skip_check.setToolTip(help_of("skip_malformed"))
        self.skip_check.toggled.connect(self._on_skip_check_toggled)

        # protocol
        self.preset_combo = _shrinking_combo()
        for name, title in PRESET_TITLES.items():
            self.preset_combo.addItem(title, name)
            self.preset_combo.setItemData(self.preset_combo.count() - 1, PRESET_HELP.get(name, ""),
                                          Qt.ItemDataRole.ToolTipRole)
        self.preset_combo.addItem("Custom", CUSTOM)
        self.preset_combo.setToolTip("A scoring protocol: the MedAlpaca paper's (generate and parse) or the "
                                     "Open Medical-LLM Leaderboard's (log-likelihood, as lm-evaluation-harness)")
        self.preset_combo.currentIndexChanged.connect(self._on_preset_combo_current_index_changed)
        self.mode_combo = self._choice_combo(MODES, MODE_NAMES, help_of("mode"))
        self.style_combo = self._choice_combo(PROMPT_STYLES, STYLE_NAMES, help_of("prompt_style"))
        self.rule_combo = self._choice_combo(RULES, RULE_NAMES, help_of("rule"))
        self.greedy_check = QCheckBox("Greedy decoding")
        self.greedy_check.setToolTip(help_of("greedy"))
        self.chat_template_check = QCheckBox("Apply the model's chat template")
        self.chat_template_check.setToolTip(help_of("apply_chat_template"))
        for widget in (self.greedy_check, self.chat_template_check):
            widget.toggled.connect(self._on_protocol_changed)
        self.limit_spin = QSpinBox()
        self.limit_spin.setRange(0, 100_000)
        self.limit_spin.setSpecialValueText("all questions")
        self.limit_spin.setToolTip(help_of("limit"))
        self.limit_spin.valueChanged.connect(self._refresh)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setValue(BenchConfig().seed)
        self.seed_spin.setToolTip(help_of("seed"))
        self.seed_spin.valueChanged.connect(self._refresh)

        # command and run
        self.command_edit = QPlainTextEdit()
        self.command_edit.setReadOnly(True)
        self.command_edit.setMaximumHeight(90)
        self.command_edit.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.command_edit.setToolTip("The same runs from a terminal (one line per model)")
        self.copy_button = QPushButton("Copy command")
        self.copy_button.clicked.connect(self._on_copy_button_clicked)
        self.message_label = QLabel()
        self.message_label.setWordWrap(True)
        self.message_label.setStyleSheet("color: #b3261e;")
        self.message_label.hide()
        self.run_button = QPushButton("Run benchmark")
        self.run_button.setDefault(True)
        self.run_button.setToolTip(RUN_TIP)
        self.run_button.clicked.connect(self.request_runs)
        QShortcut(QKeySequence("Ctrl+Return"), self, self.request_runs,
                  context=Qt.ShortcutContext.WidgetWithChildrenShortcut)

        self._build_layout()
        self.preset_combo.setCurrentIndex(0)
        self._apply_preset("medalpaca-paper")
        self.set_models([])

    def _choice_combo(self, values: tuple[str, ...], names: dict[str, str], tip: str) -> QComboBox:
        combo = _shrinking_combo()
        for value in values:
            combo.addItem(names.get(value, value), value)
        combo.setToolTip(tip)
        combo.currentIndexChanged.connect(self._on_protocol_changed)
        return combo

    def _build_layout(self) -> None:
        models_box = QGroupBox("Models")
        models_layout = QVBoxLayout(models_box)
        models_layout.addWidget(self.models_empty)
        models_layout.addWidget(self.model_list)
        row = QHBoxLayout()
        row.addWidget(QLabel("Hugging Face weights:"))
        row.addWidget(self.quant_combo)
        row.addStretch(1)
        row.addWidget(self.add_model_button)
        models_layout.addLayout(row)

        data_box = QGroupBox("Questions")
        data_layout = QVBoxLayout(data_box)
        data_layout.addWidget(self.task_choice)
        self.own_questions = QWidget()  # the file chooser: hidden while a task of the suite is chosen
        own_layout = QVBoxLayout(self.own_questions)
        own_layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(self.data_edit, 1)
        row.addWidget(self.data_folder_button)
        row.addWidget(self.data_file_button)
        own_layout.addLayout(row)
        own_layout.addWidget(self.sample_combo)
        own_layout.addWidget(self.dataset_label)
        own_layout.addWidget(self.skip_check)
        data_layout.addWidget(self.own_questions)

        protocol_box = QGroupBox("Protocol")
        form = QFormLayout(protocol_box)
        form.addRow("Preset:", self.preset_combo)
        form.addRow("Mode:", self.mode_combo)
        form.addRow("Prompt:", self.style_combo)
        form.addRow("Scoring rule:", self.rule_combo)
        form.addRow("", self.greedy_check)
        form.addRow("", self.chat_template_check)
        form.addRow("Limit:", self.limit_spin)
        form.addRow("Seed:", self.seed_spin)

        command_box = QGroupBox("Command")
        command_layout = QVBoxLayout(command_box)
        command_layout.addWidget(self.command_edit)
        row = QHBoxLayout()
        row.addWidget(self.copy_button)
        row.addStretch(1)
        command_layout.addLayout(row)

        layout = QVBoxLayout(self)
        layout.addWidget(models_box)
        layout.addWidget(data_box)
        layout.addWidget(protocol_box)
        layout.addWidget(command_box)
        layout.addWidget(self.message_label)
        layout.addWidget(self.run_button)
        layout.addStretch(1)

    # -- models ---------------------------------------------------------------

    @Slot(object)
    def set_models(self, models: list[ModelInfo], _problems: object = None) -> None:
        """Fed by ModelManager.sig_discovery_finished; ticks survive a refresh."""
        ticked = set(self.checked_paths())
        self.models = benchmark_models(list(models))
        self.model_list.blockSignals(True)
        self.model_list.clear()
        for info in self.models:
            item = QListWidgetItem(model_entry_label(info))
            item.setData(MODEL_ROLE, info)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if info.path in ticked else Qt.CheckState.Unchecked)
            tip = [info.path]
            if info.note:
                tip.append(info.note)
            item.setToolTip("\n".join(tip))
            self.model_list.addItem(item)
        self.model_list.blockSignals(False)
        self.models_empty.setVisible(not self.models)
        self.model_list.setVisible(bool(self.models))
        self._refresh()

    def check_model(self, path: str | Path, checked: bool = True) -> bool:
        for i in range(self.model_list.count()):
            item = self.model_list.item(i)
            if Path(item.data(MODEL_ROLE).path) == Path(path):
                item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
                return True
        return False

    def checked_models(self) -> list[ModelInfo]:
        return [self.model_list.item(i).data(MODEL_ROLE) for i in range(self.model_list.count())
                if self.model_list.item(i).checkState() == Qt.CheckState.Checked]

    def checked_paths(self) -> list[str]:
        return [m.path for m in self.checked_models()]

    @Slot(QListWidgetItem)
    def _on_model_list_item_changed(self, _item: QListWidgetItem) -> None:
        self._refresh()

    # -- dataset --------------------------------------------------------------

    def set_dataset(self, path: str | Path) -> None:
        """Use these questions; they are checked on a worker thread (sig_dataset_checked)."""
        self.data_edit.setText(str(path))
        self._probe()

    @Slot()
    def _on_data_edit_editing_finished(self) -> None:
        if self.dataset_summary is None or self.dataset_summary.path != self.data_edit.text().strip():
            self._probe()

    @Slot()
    def _on_data_folder_button_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "USMLE self-assessment folder", self.data_edit.text())
        if folder:
            self.set_dataset(folder)

    @Slot()
    def _on_data_file_button_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Questions file", self.data_edit.text(),
                                              "Questions (*.jsonl *.json *.csv *.tsv);;All files (*)")
        if path:
            self.set_dataset(path)

    @Slot(int)
    def _on_sample_combo_activated(self, index: int) -> None:
        path = self.sample_combo.itemData(index)
        self.sample_combo.setCurrentIndex(0)
        if path:
            self.set_dataset(path)

    @Slot(bool)
    def _on_skip_check_toggled(self, _checked: bool) -> None:
        if self.data_edit.text().strip():
            self._probe()

    def _probe(self) -> None:
        path = self.data_edit.text().strip()
        self._probe_generation += 1
        generation = self._probe_generation
        self.dataset_summary = None
        self.dataset_label.setStyleSheet("")
        self.dataset_label.setText("Reading the questions…" if path else "No questions chosen yet.")
        skip = self.skip_check.isChecked()
        self._refresh()

        def done(summary: DatasetSummary) -> None:
            if generation != self._probe_generation:
                return
            self.dataset_summary = summary
            self.dataset_label.setText(summary.describe())
            self.dataset_label.setStyleSheet("" if summary.ok else "color: #b3261e;")
            self._refresh()
            self.sig_dataset_checked.emit(summary)
            if self._run_when_checked:
                self._run_when_checked = False
                self.request_runs()

        self.tasks.run_in_background(lambda: probe_dataset(path, skip_malformed=skip), done,
                                     lambda exc: done(DatasetSummary(path=path, error=str(exc))))

    # -- a task of the suite ----------------------------------------------------

    def suite_mode(self) -> bool:
        """A task or group of the medical suite is chosen (not your own questions)."""
        return self.task_choice.is_suite()

    @Slot()
    def _on_task_choice_changed(self) -> None:
        self.own_questions.setVisible(not self.suite_mode())
        self._refresh()

    def build_plan(self) -> SuitePlan:
        """The suite plan for the ticked models on the chosen tasks (not saved yet); ConfigError says what to fix."""
        blocker = self.task_choice.run_blocker()
        if blocker:
            raise ConfigError(blocker)
        plan = plan_for(self.checked_models(), self.task_choice.selection(), self.base_config(),
                        self.quant_combo.currentData())
        for config in plan.runs():
            config.validate(check_paths=True)
        return plan

    # -- protocol -------------------------------------------------------------

    def set_preset(self, name: str) -> None:
        self.preset_combo.setCurrentIndex(self.preset_combo.findData(name))

    @Slot(int)
    def _on_preset_combo_current_index_changed(self, _index: int) -> None:
        name = self.preset_combo.currentData()
        if name in PRESETS:
            self._apply_preset(name)

    def _apply_preset(self, name: str) -> None:
        self._updating = True
        try:
            config = dataclasses.replace(BenchConfig(), **PRESETS[name])
            for combo, value in ((self.mode_combo, config.mode), (self.style_combo, config.prompt_style),
                                 (self.rule_combo, config.rule)):
                combo.setCurrentIndex(combo.findData(value))
            self.greedy_check.setChecked(config.greedy)
            self.chat_template_check.setChecked(config.apply_chat_template)
        finally:
            self._updating = False
        self._enable_mode_fields()
        self._refresh()

    def _enable_mode_fields(self) -> None:
        """Parsing rule and sampling only matter when the model writes an answer."""
        generate = self.mode_combo.currentData() == "generate"
        self.rule_combo.setEnabled(generate)
        self.greedy_check.setEnabled(generate)

    @Slot()
    def _on_protocol_changed(self, *_args: object) -> None:
        if self._updating:
            return
        self._enable_mode_fields()
        matched = matching_preset(self.base_config())
        self.preset_combo.blockSignals(True)
        self.preset_combo.setCurrentIndex(self.preset_combo.findData(matched or CUSTOM))
        self.preset_combo.blockSignals(False)
        self._refresh()

    # -- configs --------------------------------------------------------------

    def base_config(self) -> BenchConfig:
        """The form's settings, without model and run folder."""
        return dataclasses.replace(
            BenchConfig(), data=self.data_edit.text().strip(), mode=self.mode_combo.currentData(),
            prompt_style=self.style_combo.currentData(), rule=self.rule_combo.currentData(),
            greedy=self.greedy_check.isChecked(), apply_chat_template=self.chat_template_check.isChecked(),
            limit=self.limit_spin.value(), seed=self.seed_spin.value(), skip_malformed=self.skip_check.isChecked())

    def config_for(self, info: ModelInfo, out: Path | str | None = None) -> BenchConfig:
        base = self.base_config()
        if info.kind == "adapter":
            model, adapter = str(info.base_model), info.path
            label = f"{Path(model).name} + {info.name}"
        else:
            model, adapter, label = info.path, "", info.name
        quant = self.quant_combo.currentData() if info.kind != "gguf" else "none"
        run_dir = Path(out) if out else new_run_dir(label, base.mode)
        return dataclasses.replace(base, model=model, adapter=adapter, quantization=quant, label=label,
                                   out=str(run_dir))

    def build_configs(self) -> list[BenchConfig]:
        """One validated config per ticked model (per model and task for the suite); ConfigError says what to fix."""
        if self.suite_mode():
            return self.build_plan().runs()
        models = self.checked_models()
        if not models:
            raise ConfigError("Tick at least one model to score (models come from the Models tab).")
        if not self.data_edit.text().strip():
            raise ConfigError("Choose the questions: a USMLE self-assessment folder or a MedQA .jsonl file "
                              "(or one of the sample question sets).")
        summary = self.dataset_summary
        if summary is None:
            raise ConfigError("The questions are still being read; try again in a moment.")
        if not summary.ok:
            raise ConfigError(f"These questions cannot be used: {summary.describe()}")
        configs = []
        used: set[str] = set()
        for info in models:
            config = self.config_for(info)
            while config.out in used:  # two models with one label in the same second
                config = dataclasses.replace(config, out=config.out + "-b")
            used.add(config.out)
            configs.append(config.validate(check_paths=True))
        return configs

    @Slot()
    def request_runs(self) -> bool:
        """Queue one run per ticked model; pressed while the questions are being read, it runs once they are."""
        if self.suite_mode():
            return self._request_suite()
        if self.checked_models() and self.data_edit.text().strip() and self.dataset_summary is None:
            self._run_when_checked = True
            self.show_message("")
            self.dataset_label.setText("Reading the questions… the run starts as soon as they are checked.")
            return False
        try:
            configs = self.build_configs()
        except ConfigError as exc:
            self.show_message(str(exc))
            return False
        self.show_message("")
        self.sig_runs_requested.emit(configs)
        return True

    def _request_suite(self) -> bool:
        """Plan the suite in a new folder, save suite.json, queue its runs."""
        try:
            plan = self.build_plan()
            plan.save()
        except ConfigError as exc:
            self.show_message(str(exc))
            return False
        except OSError as exc:
            self.show_message(f"The suite folder could not be written: {exc}")
            return False
        self.show_message("")
        self.last_plan = plan
        self.sig_runs_requested.emit(plan.runs())
        return True

    def show_message(self, text: str) -> None:
        self.message_label.setText(text)
        self.message_label.setVisible(bool(text))

    @Slot()
    def _refresh(self, *_args: object) -> None:
        """Recompute the command lines shown; clear a message whose problem is solved."""
        if self.suite_mode():
            self._refresh_suite()
            return
        self.run_button.setEnabled(True)
        self.run_button.setToolTip(RUN_TIP)
        lines = []
        for info in self.checked_models():
            lines.append(user_command(self.config_for(info, out=_placeholder_dir(info))))
        self.command_edit.setPlainText("\n".join(lines) if lines else "Tick a model to see the command.")
        self.copy_button.setEnabled(bool(lines))
        ready = bool(lines) and self.dataset_summary is not None and self.dataset_summary.ok
        if ready and self.message_label.isVisible():
            self.show_message("")  # the problem it named is solved

    def _refresh_suite(self) -> None:
        """The suite's command, and Run only when every chosen task is downloaded (the tooltip says why not)."""
        blocker = self.task_choice.run_blocker()
        self.run_button.setEnabled(not blocker)
        self.run_button.setToolTip(blocker or SUITE_RUN_TIP)
        text, ok = "Tick a model to see the command.", False
        if self.checked_models() and self.task_choice.specs():
            try:
                plan = plan_for(self.checked_models(), self.task_choice.selection(), self.base_config(),
                                self.quant_combo.currentData(), out=paths.runs_dir() / "suite-<time>")
                text, ok = suite_command(plan), True
            except ConfigError as exc:
                text = str(exc)
        self.command_edit.setPlainText(text)
        self.copy_button.setEnabled(ok)
        if ok and not blocker and self.message_label.isVisible():
            self.show_message("")

    @Slot()
    def _on_copy_button_clicked(self) -> None:
        QGuiApplication.clipboard().setText(self.command_edit.toPlainText())


def _shrinking_combo() -> QComboBox:
    """A combo box that may be narrower than its longest entry (the panel sits in a narrow column)."""
    combo = QComboBox()
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(14)
    return combo


def _placeholder_dir(info: ModelInfo) -> Path:
    """The command shown before running names the runs folder generically (a new one is made per run)."""
    return paths.runs_dir() / f"bench-{slug(info.name)}"
