"""The Fine-tune tab: the runs list on the left; the wizard or the run monitor on the right.

The wizard only writes RUN_DIR/config.yaml and asks for a launch; this tab records the run
in the database, starts the trainer as a detached job (ui/finetune/runs.py) and shows its
monitor. Runs an earlier app session left running are picked up again when the tab is built.
While the tab is shown it rereads the list when another process (a `medalpaca train` in a
terminal) has written to the database. When the database cannot be opened the tab keeps its
runs in an in-memory store for this session, says so once, and works the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import QItemSelectionModel, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QHideEvent, QKeySequence, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from medalpaca_desktop.core.devices import DeviceReport
from medalpaca_desktop.core.jobs import RunStatus
from medalpaca_desktop.core.model_info import ModelInfo
from medalpaca_desktop.core.store import Store, open_store
from medalpaca_desktop.ui.finetune.monitor import RunMonitor
from medalpaca_desktop.ui.finetune.runs import (
    CONFIG_FILE,
    RunError,
    attempt_summary,
    new_run_dir,
    prepare_run,
    record_attempt,
    start_attempt,
    trainer_job,
)
from medalpaca_desktop.ui.finetune.runs_table_model import COL_DATA, COL_MODEL, COL_RUN, RunsTableModel
from medalpaca_desktop.ui.finetune.wizard import FinetuneWizard
from medalpaca_desktop.ui.jobs import DetachedJob, JobOutcome
from medalpaca_desktop.ui.widgets.notice import session_only_label
from trainer.config import ConfigError, TrainConfig

LAUNCH_FILE = "launch.json"  # environment a resume must reuse (the GPUs chosen in the wizard)
PAGE_WIZARD, PAGE_MONITOR = 0, 1
# Saving a checkpoint of a large model takes minutes: Stop asks and waits; pressing it again leaves now.
STOP_GRACE_S = 30 * 60.0
KILL_GRACE_S = 60.0
TICK_MS = 1000  # running durations tick on; a shown tab checks whether another process wrote a run row


def _launch_env(run_dir: Path) -> dict[str, str]:
    try:
        data = json.loads((run_dir / LAUNCH_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    env = data.get("env") if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {}


class FinetuneTab(QWidget):
    """Runs list + stacked wizard / monitor; owns the trainer jobs of the runs it follows (by run id)."""

    sig_chat_requested = Signal(str)  # a model folder or file for the chat tab
    sig_status_changed = Signal(str)

    def __init__(self, store: Store | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store: Store
        self.store_error: str | None  # why runs are kept in memory for this session only
        self.store, self.store_error = (store, None) if store is not None else open_store()
        self._seen_version = -1  # the database's data_version when the list was last read
        self.jobs: dict[int, DetachedJob] = {}
        self.table_model = RunsTableModel(self)
        self.wizard = FinetuneWizard()
        self.monitor = RunMonitor()
        self._build()
        self._connect()
        self._tick = QTimer(self, interval=TICK_MS)
        self._tick.timeout.connect(self._on_tick_timeout)
        self.refresh()
        self.reattach()
        if self.table_model.rowCount():
            self.select_run(self.table_model.row_at(0)["id"])
        else:
            self.show_wizard()

    # -- building ---------------------------------------------------------------------

    def _build(self) -> None:
        self.table = QTableView()
        self.table.setModel(self.table_model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        for col in (COL_RUN, COL_MODEL, COL_DATA):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
        header.resizeSection(COL_RUN, 150)
        header.resizeSection(COL_MODEL, 110)
        header.resizeSection(COL_DATA, 110)
        header.setStretchLastSection(True)

        title = QLabel("<b>Fine-tune runs</b>")
        self.new_button = QPushButton("New fine-tune…")
        self.new_button.setToolTip("Open the wizard: base model, data, method, settings, compute, review (Ctrl+N)")
        self.new_button.clicked.connect(self.show_wizard)
        self.open_config_button = QPushButton("Run a saved config…")
        self.open_config_button.setToolTip("Start a run from a YAML config saved earlier (a new run folder is made)")
        self.open_config_button.clicked.connect(self._on_open_config_button_clicked)
        self.empty_label = QLabel("No fine-tunes yet. Click <b>New fine-tune…</b> (Ctrl+N) to train a model on "
                                  "your data; the bundled sample data and the demo model work offline.")
        self.empty_label.setWordWrap(True)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.empty_label.setStyleSheet("color: #666; padding: 8px; background: white; border: 1px solid #ccc;")
        buttons = QHBoxLayout()
        buttons.addWidget(self.new_button)
        buttons.addWidget(self.open_config_button)
        buttons.addStretch(1)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(6, 6, 0, 6)
        left_layout.addWidget(title)
        self.store_label = session_only_label("Runs cannot be recorded:", self.store_error) \
            if self.store_error else None
        if self.store_label is not None:
            left_layout.addWidget(self.store_label)
        left_layout.addLayout(buttons)
        left_layout.addWidget(self.table, 1)
        left_layout.addWidget(self.empty_label, 1)
        left.setMinimumWidth(330)

        self.error_bar = QFrame()
        self.error_bar.setObjectName("finetuneErrorBar")
        self.error_bar.setStyleSheet("#finetuneErrorBar { background: #fdecea; border: 1px solid #e6a39c;"
                                     " border-radius: 4px; } #finetuneErrorBar QLabel { color: #611a15; }")
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.setToolTip("Hide this message")
        close.clicked.connect(self.hide_error)
        row = QHBoxLayout(self.error_bar)
        row.setContentsMargins(8, 4, 4, 4)
        row.addWidget(self.error_label, 1)
        row.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.error_bar.hide()

        self.stack = QStackedWidget()
        self.stack.addWidget(self.wizard)
        self.stack.addWidget(self.monitor)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 6, 6, 6)
        right_layout.addWidget(self.error_bar)
        right_layout.addWidget(self.stack, 1)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([430, 850])
        splitter.setChildrenCollapsible(False)
        self.splitter = splitter
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

        self.new_action = QAction("New fine-tune…", self)
        self.new_action.setShortcut(QKeySequence("Ctrl+N"))
        self.new_action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.new_action.triggered.connect(self.show_wizard)
        self.addAction(self.new_action)

    def _connect(self) -> None:
        self.table.selectionModel().currentRowChanged.connect(self._on_table_current_row_changed)
        self.wizard.sig_launch_requested.connect(self._on_wizard_launch_requested)
        self.wizard.sig_cancel_requested.connect(self._on_wizard_cancel_requested)
        self.monitor.sig_stop_requested.connect(self.stop)
        self.monitor.sig_resume_requested.connect(self.resume)
        self.monitor.sig_chat_requested.connect(self.sig_chat_requested)
        self.monitor.sig_new_like_requested.connect(self._on_monitor_new_like_requested)

    # -- the seam with the main window ------------------------------------------------

    @Slot(object, object)
    def set_models(self, models: list[ModelInfo], problems: object = None) -> None:
        self.wizard.set_models(models, problems)

    @Slot(object)
    def set_device_report(self, report: DeviceReport | None) -> None:
        self.wizard.set_device_report(report)

    # -- runs list --------------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        return self.store.training_runs()

    def row(self, run_id: int) -> dict[str, Any] | None:
        return next((r for r in self.rows() if r["id"] == run_id), None)

    def refresh(self) -> None:
        """Reload the list from the database, keeping the selection."""
        self._seen_version = self.store.data_version()  # read first: a write while we read shows next time
        current = self.monitor.run_id()
        self.table.selectionModel().blockSignals(True)
        self.table_model.set_rows(self.rows())
        index = self.table_model.row_of(current) if current is not None else -1
        if index >= 0:
            self.table.selectionModel().setCurrentIndex(
                self.table_model.index(index, 0),
                QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        self.table.selectionModel().blockSignals(False)
        has_rows = self.table_model.rowCount() > 0
        self.empty_label.setVisible(not has_rows)
        self.table.setVisible(has_rows)
        self._update_tick()
        if current is not None:
            row = self.row(current)
            if row is not None:
                self.monitor.update_row(row)

    def refresh_if_changed(self) -> bool:
        """Reload only when another process or tab committed to the database since the last read."""
        if self.store.data_version() == self._seen_version:
            return False
        self.refresh()
        return True

    def _update_tick(self) -> None:
        """Tick while a run this tab follows is running or while the tab is shown; idle otherwise."""
        if self.isVisible() or any(job.is_running() for job in self.jobs.values()):
            if not self._tick.isActive():
                self._tick.start()
        else:
            self._tick.stop()

    @Slot()
    def _on_tick_timeout(self) -> None:
        if not (self.isVisible() and self.refresh_if_changed()):
            self.table_model.refresh_durations()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.refresh_if_changed()
        self._update_tick()

    def hideEvent(self, event: QHideEvent) -> None:
        super().hideEvent(event)
        self._update_tick()

    def select_run(self, run_id: int) -> None:
        """Select a run in the list and show its monitor."""
        index = self.table_model.row_of(run_id)
        if index < 0:
            return
        selection = self.table.selectionModel()
        selection.blockSignals(True)
        selection.setCurrentIndex(
            self.table_model.index(index, 0),
            QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        selection.blockSignals(False)
        self._show_monitor(run_id)

    @Slot(object, object)
    def _on_table_current_row_changed(self, current: Any, previous: Any) -> None:
        row = self.table_model.row_at(current.row()) if current.isValid() else None
        if row is not None:
            self._show_monitor(row["id"])

    def _show_monitor(self, run_id: int) -> None:
        row = self.row(run_id)
        if row is None:
            return
        self.monitor.show_run(row, self.jobs.get(run_id))
        self.stack.setCurrentIndex(PAGE_MONITOR)

    # -- wizard -----------------------------------------------------------------------

    @Slot()
    def show_wizard(self) -> None:
        self.stack.setCurrentIndex(PAGE_WIZARD)

    @Slot()
    def _on_wizard_cancel_requested(self) -> None:
        if self.monitor.run_id() is not None:
            self.stack.setCurrentIndex(PAGE_MONITOR)

    @Slot(int)
    def _on_monitor_new_like_requested(self, run_id: int) -> None:
        row = self.row(run_id)
        if row is None:
            return
        try:
            config = TrainConfig.load(Path(row["run_dir"]) / CONFIG_FILE)
        except ConfigError as exc:
            self.show_error(f"This run's config cannot be reused: {exc}")
            return
        self.wizard.reset(config)
        self.show_wizard()

    @Slot(str)
    def _on_wizard_launch_requested(self, config_path: str) -> None:
        gpus = self.wizard.selected_gpus()
        env = {"CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))} if gpus else {}
        self.launch(config_path, env=env)

    @Slot()
    def _on_open_config_button_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Run a saved fine-tune config", str(Path.home()),
                                              "YAML config (*.yaml *.yml)")
        if path:
            self.launch_saved_config(path)

    def launch_saved_config(self, path: str | Path) -> int | None:
        """Copy a saved config into a fresh run folder and launch it there."""
        try:
            config = TrainConfig.load(path)
            run_dir = new_run_dir(config)
            config.output_dir = str(run_dir)
            target = config.save(run_dir / CONFIG_FILE)
        except ConfigError as exc:
            self.show_error(f"The config cannot run: {exc}")
            return None
        except OSError as exc:
            self.show_error(f"Could not write the run folder: {exc.strerror or exc}")
            return None
        return self.launch(str(target))

    # -- run control ------------------------------------------------------------------

    def _job(self, run_id: int) -> DetachedJob:
        job = self.jobs.get(run_id)
        if job is None:
            row = self.row(run_id)
            if row is None:
                raise RunError(f"Run {run_id} is not in the database.")
            job = trainer_job(row, self)
            job.sig_finished.connect(lambda outcome, run_id=run_id: self._on_job_finished(run_id, outcome))
            job.sig_job_started.connect(self.refresh)
            job.sig_stop_requested.connect(self.refresh)
            self.jobs[run_id] = job
        return job

    @Slot(str)
    def launch(self, config_path: str, env: dict[str, str] | None = None) -> int | None:
        """Record a run for `config_path` (RUN_DIR/config.yaml), start its trainer, show its monitor."""
        try:
            run_id = prepare_run(self.store, config_path)
            job = self._job(run_id)
            if env:
                (job.run_dir / LAUNCH_FILE).write_text(json.dumps({"env": env}, indent=2), encoding="utf-8")
            start_attempt(self.store, run_id, job, resume=False, env=_launch_env(job.run_dir))
        except (RunError, OSError) as exc:
            self.show_error(str(exc))
            return None
        self.hide_error()
        self.refresh()
        self.select_run(run_id)
        self.sig_status_changed.emit(f"Fine-tune started: {job.run_dir.name}")
        return run_id

    @Slot(int)
    def resume(self, run_id: int) -> bool:
        """Continue a stopped, failed or crashed run from its last checkpoint."""
        try:
            job = self._job(run_id)
            start_attempt(self.store, run_id, job, resume=True, env=_launch_env(job.run_dir))
        except RunError as exc:
            self.show_error(str(exc))
            return False
        self.hide_error()
        self.refresh()
        if self.monitor.run_id() == run_id:
            self.monitor.show_run(self.row(run_id), job)
        self.sig_status_changed.emit(f"Fine-tune resumed: {job.run_dir.name}")
        return True

    @Slot(int)
    def stop(self, run_id: int) -> None:
        """First press: stop with a checkpoint; a second: leave now; a third: kill."""
        job = self.jobs.get(run_id)
        if job is not None:
            job.stop(grace_s=STOP_GRACE_S, kill_grace_s=KILL_GRACE_S)

    def reattach(self) -> None:
        """Follow runs an earlier app session left running; record how the others ended meanwhile."""
        for row in self.rows():
            if row["status"] == RunStatus.RUNNING.value and row["id"] not in self.jobs:
                self._job(row["id"]).attach(row["pid"], row["started_at"])
        self.refresh()

    def active_runs(self) -> list[DetachedJob]:
        return [job for job in self.jobs.values() if job.is_running()]

    def _on_job_finished(self, run_id: int, outcome: JobOutcome) -> None:
        job = self.jobs[run_id]
        record_attempt(self.store, run_id, outcome, job.events)
        self.refresh()
        attempt = [e for e in job.events if job.in_attempt(e)]
        self.sig_status_changed.emit(f"Fine-tune {job.run_dir.name}: {outcome.status.value}. "
                                     f"{attempt_summary(outcome, attempt)}")

    # -- messages and shutdown --------------------------------------------------------

    def show_error(self, text: str) -> None:
        self.error_label.setText(text)
        self.error_bar.show()

    @Slot()
    def hide_error(self) -> None:
        self.error_bar.hide()

    def stop_all(self) -> None:
        """Ask every active run to stop with a checkpoint (it finishes stopping on its own)."""
        for job in self.active_runs():
            if not job.outcome.stop_requested:
                job.stop(grace_s=STOP_GRACE_S, kill_grace_s=KILL_GRACE_S)

    def shutdown(self) -> None:
        """Stop following runs (they keep running and are picked up on the next start)."""
        self._tick.stop()
        for job in self.jobs.values():
            job.detach()
        self.monitor.shutdown()
        self.wizard.shutdown()
