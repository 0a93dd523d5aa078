"""The fine-tune wizard: six pages from a base model to a config file, then Launch.

It writes the run's config and asks for the launch (`sig_launch_requested(config_path)`);
starting the trainer, the database and the monitor belong to the Fine-tune tab. Each page
checks its own input when the user moves on and says what is wrong on the page; Launch
checks every page in order and opens the first one that cannot run.

Keys: Alt+Left / Alt+Right (Back / Next), Ctrl+S (Save config…), Ctrl+Return (Launch).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QKeySequence, QShortcut, QShowEvent
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from medalpaca_desktop.core.devices import DeviceReport
from medalpaca_desktop.core.model_info import ModelInfo
from medalpaca_desktop.core.models import inspect_model
from medalpaca_desktop.ui.finetune.page_base import WizardPage, WizardState
from medalpaca_desktop.ui.finetune.page_compute import ComputePage
from medalpaca_desktop.ui.finetune.page_data import DataPage, sample_data_path
from medalpaca_desktop.ui.finetune.page_method import MethodPage
from medalpaca_desktop.ui.finetune.page_model import ModelPage
from medalpaca_desktop.ui.finetune.page_review import CONFIG_NAME, ReviewPage, config_for_review, planned_run_dir
from medalpaca_desktop.ui.finetune.page_settings import QUICK_TRIAL, SettingsPage
from trainer.config import ConfigError, TrainConfig

DEFAULT_GPU_PRESET = "medalpaca-lora"


class FinetuneWizard(QWidget):
    """Base model → data → method → settings → compute → review; Save config or Launch."""

    sig_launch_requested = Signal(str)  # path of the written RUN_DIR/config.yaml
    sig_cancel_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = WizardState(config=TrainConfig())
        self._settings_touched = False
        self.model_page = ModelPage(self.state)
        self.data_page = DataPage(self.state)
        self.method_page = MethodPage(self.state)
        self.settings_page = SettingsPage(self.state)
        self.compute_page = ComputePage(self.state)
        self.review_page = ReviewPage(self.state)
        self.pages: list[WizardPage] = [self.model_page, self.data_page, self.method_page, self.settings_page,
                                        self.compute_page, self.review_page]
        self.page_list = QListWidget()
        self.page_list.setFixedWidth(140)
        self.page_list.setToolTip("Steps of the wizard; click one you have reached to go back to it")
        self.stack = QStackedWidget()
        for page in self.pages:
            self.page_list.addItem(QListWidgetItem(page.title))
            self.stack.addWidget(page)
        self.settings_page.sig_changed.connect(self._on_settings_page_changed)
        self.data_page.sig_changed.connect(self._on_data_page_changed)
        self._launch_when_checked = False
        self.page_list.currentRowChanged.connect(self._on_page_list_current_row_changed)

        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Leave the wizard (nothing is written)")
        self.cancel_button.clicked.connect(self.sig_cancel_requested)
        self.save_button = QPushButton("Save config…")
        self.save_button.setToolTip("Write the config as YAML where you choose (Ctrl+S)")
        self.save_button.clicked.connect(self._on_save_button_clicked)
        self.back_button = QPushButton("Back")
        self.back_button.setToolTip("Previous step (Alt+Left)")
        self.back_button.clicked.connect(self.go_back)
        self.next_button = QPushButton("Next")
        self.next_button.setToolTip("Next step (Alt+Right)")
        self.next_button.clicked.connect(self.go_next)
        self.launch_button = QPushButton("Launch")
        self.launch_button.setToolTip("Write the run folder and start training (Ctrl+Return)")
        self.launch_button.clicked.connect(self.launch)
        buttons = QHBoxLayout()
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.back_button)
        buttons.addWidget(self.next_button)
        buttons.addWidget(self.launch_button)

        right = QVBoxLayout()
        right.addWidget(self.stack, 1)
        right.addLayout(buttons)
        layout = QHBoxLayout(self)
        layout.addWidget(self.page_list)
        layout.addLayout(right, 1)

        for keys, slot in ((QKeySequence("Alt+Left"), self.go_back), (QKeySequence("Alt+Right"), self.go_next),
                           (QKeySequence.StandardKey.Save, self._on_save_button_clicked),
                           (QKeySequence("Ctrl+Return"), self.launch), (QKeySequence("Ctrl+Enter"), self.launch)):
            shortcut = QShortcut(keys, self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(slot)
        self._reached = 0
        self.reset()

    # ------------------------------------------------------------------ the seam

    def set_models(self, models: list[ModelInfo], problems: object = None) -> None:
        """The model manager's list (discovery results); problems are shown in the Models tab, not here."""
        self.model_page.set_models(models)
        self._prime()

    def set_device_report(self, report: DeviceReport | None) -> None:
        """The devices probe's answer; None while unknown or when the probe failed (treated as CPU-only)."""
        self.state.report = report
        if report is not None and not self._settings_touched:
            self._apply_default_preset()
        for page in self.pages:
            page.refresh_environment()

    def reset(self, base: TrainConfig | None = None) -> None:
        """Start over: defaults (the quick CPU trial or the paper's LoRA recipe, the sample data), or `base`."""
        self.state.config = TrainConfig(data=[sample_data_path()]) if base is None else dataclasses.replace(
            base, data=list(base.data), lora_target_modules=list(base.lora_target_modules),
            data_weights=list(base.data_weights), output_dir="")
        self.state.model = None
        self.state.preview, self.state.preview_key = None, ""
        self.state.run_dir, self.state.gpus = "", []
        self._settings_touched = base is not None
        if base is None:
            self._apply_default_preset()
        else:
            self.state.preset = ""
            if base.base_model and not self.model_page.select_path(base.base_model):
                try:
                    self.model_page.add_model(inspect_model(Path(base.base_model)))
                except (ValueError, OSError):
                    pass  # the model page says "choose a base model"
        self.data_page.set_sources(list(self.state.config.data))
        for page in self.pages:
            page.show_problem(None)
        self._reached = 0
        self._prime()
        self.show_page(0)

    # ------------------------------------------------------------------ navigation

    def current_index(self) -> int:
        return self.stack.currentIndex()

    def current_page(self) -> WizardPage:
        return self.pages[self.current_index()]

    def show_page(self, index: int) -> None:
        page = self.pages[index]
        page.enter()
        self.stack.setCurrentIndex(index)
        self._reached = max(self._reached, index)
        self.page_list.blockSignals(True)
        self.page_list.setCurrentRow(index)
        self.page_list.blockSignals(False)
        for i in range(self.page_list.count()):
            self.page_list.item(i).setFlags(
                Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable if i <= self._reached + 1
                else Qt.ItemFlag.NoItemFlags)
        self.back_button.setEnabled(index > 0)
        self.next_button.setEnabled(index < len(self.pages) - 1)
        self.next_button.setDefault(index < len(self.pages) - 1)
        self.launch_button.setDefault(index == len(self.pages) - 1)

    @Slot()
    def go_next(self) -> bool:
        index = self.current_index()
        if index >= len(self.pages) - 1:
            return False
        if not self._commit(index):
            return False
        self.show_page(index + 1)
        return True

    @Slot()
    def go_back(self) -> bool:
        index = self.current_index()
        if index == 0:
            return False
        self.current_page().commit()  # keep what was typed; problems are checked on the way forward
        self.show_page(index - 1)
        return True

    @Slot(int)
    def _on_page_list_current_row_changed(self, row: int) -> None:
        if row < 0 or row == self.current_index():
            return
        if row < self.current_index():
            self.current_page().commit()
            self.show_page(row)
            return
        for index in range(self.current_index(), row):
            if not self._commit(index):
                return
        self.show_page(row)

    def _commit(self, index: int) -> bool:
        """Commit page `index`; on a problem show that page with the reason and return False."""
        page = self.pages[index]
        problem = page.commit()
        if problem:
            if self.current_index() != index:
                self.show_page(index)
            page.show_problem(problem)
            self.page_list.blockSignals(True)
            self.page_list.setCurrentRow(index)
            self.page_list.blockSignals(False)
            return False
        return True

    def _commit_all(self) -> bool:
        for index, page in enumerate(self.pages):
            if index != self.current_index():
                page.enter()
            if not self._commit(index):
                return False
        return True

    # ------------------------------------------------------------------ save / launch

    def final_config(self, run_dir: Path) -> TrainConfig:
        """The checked config with its run folder; raises ConfigError."""
        return config_for_review(self.state, run_dir).validate()

    @Slot()
    def _on_save_button_clicked(self) -> None:
        if not self._commit_all():
            return
        suggested = str(Path.home() / f"{planned_run_dir(self.state).name}.yaml")
        path, _ = QFileDialog.getSaveFileName(self, "Save fine-tune config", suggested, "YAML config (*.yaml *.yml)")
        if path:
            self.save_config(Path(path))

    def save_config(self, path: Path) -> Path | None:
        """Write the config (its run folder set to where Launch would write) as YAML; None on a problem."""
        if not self._commit_all():
            return None
        try:
            config = self.final_config(planned_run_dir(self.state))
        except ConfigError as exc:
            self.current_page().show_problem(f"The config cannot run: {exc}")
            return None
        return config.save(path)

    @Slot()
    def launch(self) -> str | None:
        """Check every page, write RUN_DIR/config.yaml, emit sig_launch_requested; the path or None.

        Asked while the data is still being checked, it launches when the check passes.
        """
        self._launch_when_checked = False
        if not self._commit_all():
            if (self.current_page() is self.data_page and self.state.config.data
                    and self.data_page.is_checking()):
                self._launch_when_checked = True
                self.data_page.show_problem("Launching as soon as the data check finishes…")
            return None
        run_dir = planned_run_dir(self.state)
        try:
            config = self.final_config(run_dir)
        except ConfigError as exc:
            self.show_page(len(self.pages) - 1)
            self.review_page.show_problem(f"The config cannot run: {exc}")
            return None
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            path = config.save(run_dir / CONFIG_NAME)
        except OSError as exc:
            self.show_page(len(self.pages) - 1)
            self.review_page.show_problem(f"Could not write the run folder {run_dir}: {exc.strerror or exc}")
            return None
        self.state.run_dir = ""  # the next launch gets a new folder
        self.sig_launch_requested.emit(str(path))
        return str(path)

    def selected_gpus(self) -> list[int]:
        """GPU indices ticked on the Compute page (empty: the CPU, or the device report is not known)."""
        return list(self.state.gpus)

    # ------------------------------------------------------------------ defaults

    def _apply_default_preset(self) -> None:
        report = self.state.report
        name = DEFAULT_GPU_PRESET if report is not None and report.gpus else QUICK_TRIAL
        self.settings_page.apply_preset(name)

    @Slot()
    def _on_data_page_changed(self) -> None:
        if self._launch_when_checked and not self.data_page.is_checking() and self.state.preview is not None:
            self.launch()

    @Slot()
    def _on_settings_page_changed(self) -> None:
        self._settings_touched = True

    def _prime(self) -> None:
        """With a base model chosen and data given, start the data check before the user reaches that page.

        Only while the wizard is shown: an app that never opens the Fine-tune tab starts no tokenizer process.
        """
        if not self.isVisible():
            return
        if self.model_page.selected_model() is not None and self.model_page.commit() is None and self.state.config.data:
            self.data_page.request_preview()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self._prime()

    def shutdown(self) -> None:
        """Stop a running data check (the app is closing)."""
        self.data_page.stop_checking()
