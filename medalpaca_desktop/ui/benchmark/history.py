"""Every past eval run from the database: tick runs to show them, resume a crashed one, delete one.

A row the database still calls "running" whose worker is gone (a crash, a killed machine)
and that no job of this app runs is shown as crashed, and resumable when its folder still
holds the config; the worker (or the queue, when the worker could not) stores `crashed` itself.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QAction, QColor, QKeySequence
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from medalpaca_desktop.core import paths
from medalpaca_desktop.core.jobs import RunStatus
from medalpaca_desktop.core.store import Store
from medalpaca_desktop.ui.benchmark.palette import percent
from medalpaca_desktop.ui.benchmark.run_queue import bench_is_running

ROW_ROLE = Qt.ItemDataRole.UserRole + 1
EMPTY_TEXT = "No benchmark runs yet. Runs you start appear here, with their results, and stay after you close the app."
EMPTY_SESSION_ONLY_TEXT = ("No benchmark runs yet. The history database could not be opened, so runs you start "
                           "appear here for this session only.")


def display_status(row: dict[str, Any], live_dirs: set[str]) -> RunStatus:
    """The database status, with `crashed` for a running (or never started) row whose worker is gone."""
    status = RunStatus(row.get("status") or RunStatus.CREATED.value)
    if status in (RunStatus.RUNNING, RunStatus.CREATED) and (row.get("run_dir") or "") not in live_dirs \
            and not bench_is_running(row.get("pid")):
        return RunStatus.CRASHED
    return status


def is_resumable(row: dict[str, Any], status: RunStatus) -> bool:
    """Stopped and crashed runs; a failed one too when it had scored questions (the failure came later)."""
    run_dir = Path(row.get("run_dir") or "")
    if not row.get("run_dir") or not (run_dir / "config.yaml").is_file():
        return False
    if status == RunStatus.FAILED:
        items = run_dir / "items.jsonl"
        return items.is_file() and items.stat().st_size > 0
    return status in (RunStatus.STOPPED, RunStatus.CRASHED)


def row_text(row: dict[str, Any], status: RunStatus) -> str:
    when = dt.datetime.fromtimestamp(float(row.get("created_at") or 0)).strftime("%Y-%m-%d %H:%M")
    mode = {"generate": "generate", "loglikelihood": "log-likelihood"}.get(row.get("scoring") or "", "")
    dataset = Path(row.get("dataset") or "").name
    accuracy = percent(row["accuracy"]) if row.get("accuracy") is not None else ""
    head = " · ".join(p for p in (row.get("model_label") or row.get("name"), mode) if p)
    tail = " · ".join(p for p in (dataset, f"{row['n_items']} questions" if row.get("n_items") else "",
                                  accuracy, when) if p)
    flag = "" if status == RunStatus.DONE else f"  [{status.value}{', resumable' if is_resumable(row, status) else ''}]"
    return f"{head}{flag}\n{tail}"


class HistoryPanel(QWidget):
    """The list of eval runs, newest first, with Show / Resume / Delete."""

    sig_runs_checked = Signal(object)  # list[dict]: the ticked eval_runs rows, in list order
    sig_resume_requested = Signal(object)  # eval_runs row
    sig_run_deleted = Signal(int)

    def __init__(self, store: Store, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.live_dirs: set[str] = set()
        self.list = QListWidget()
        self.list.setAlternatingRowColors(True)
        self.list.setToolTip("Tick runs to show them in the chart, the question table and the comparison")
        self.list.itemChanged.connect(self._on_list_item_changed)
        self.list.currentItemChanged.connect(self._update_buttons)
        self.empty_label = QLabel(EMPTY_TEXT if store.persistent else EMPTY_SESSION_ONLY_TEXT)
        self.empty_label.setWordWrap(True)
        self.empty_label.setStyleSheet("color: #666;")
        self.show_only_button = QPushButton("Show only this")
        self.show_only_button.setToolTip("Untick the others and show just the selected run")
        self.show_only_button.clicked.connect(self._on_show_only_button_clicked)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Score the questions a stopped or crashed run has not answered yet")
        self.resume_button.clicked.connect(self._on_resume_button_clicked)
        self.delete_button = QPushButton("Delete…")
        self.delete_button.setToolTip("Remove the run from the history and delete its folder (Del)")
        self.delete_button.clicked.connect(self._on_delete_button_clicked)
        delete_action = QAction("Delete run", self.list)
        delete_action.setShortcut(QKeySequence.StandardKey.Delete)
        delete_action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        delete_action.triggered.connect(self._on_delete_button_clicked)
        self.list.addAction(delete_action)
        buttons = QHBoxLayout()
        buttons.addWidget(self.show_only_button)
        buttons.addWidget(self.resume_button)
        buttons.addStretch(1)
        buttons.addWidget(self.delete_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.empty_label)
        layout.addWidget(self.list, 1)
        layout.addLayout(buttons)
        self.refresh()

    # -- rows -----------------------------------------------------------------

    def set_live_dirs(self, live_dirs: set[str]) -> None:
        self.live_dirs = set(live_dirs)
        self.refresh()

    def refresh(self, check: set[int] | None = None) -> None:
        """Reload from the database; ticks survive unless `check` names the ids to tick."""
        keep = set(self.checked_ids()) if check is None else set(check)
        current = self.current_row()
        rows = self.store.eval_runs()
        self.list.blockSignals(True)
        self.list.clear()
        for row in rows:
            status = display_status(row, self.live_dirs)
            item = QListWidgetItem(row_text(row, status))
            item.setData(ROW_ROLE, {**row, "display_status": status})
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if row["id"] in keep else Qt.CheckState.Unchecked)
            if status == RunStatus.CRASHED:
                item.setForeground(QColor("#b3261e"))
            if row.get("error"):
                item.setToolTip(str(row["error"]))
            self.list.addItem(item)
            if current is not None and row["id"] == current["id"]:
                self.list.setCurrentItem(item)
        self.list.blockSignals(False)
        self.empty_label.setVisible(not rows)
        self._update_buttons()

    def rows(self) -> list[dict[str, Any]]:
        return [self.list.item(i).data(ROW_ROLE) for i in range(self.list.count())]

    def checked_rows(self) -> list[dict[str, Any]]:
        return [self.list.item(i).data(ROW_ROLE) for i in range(self.list.count())
                if self.list.item(i).checkState() == Qt.CheckState.Checked]

    def checked_ids(self) -> list[int]:
        return [int(r["id"]) for r in self.checked_rows()]

    def current_row(self) -> dict[str, Any] | None:
        item = self.list.currentItem()
        return item.data(ROW_ROLE) if item is not None else None

    def set_checked(self, ids: set[int] | list[int]) -> None:
        wanted = set(ids)
        self.list.blockSignals(True)
        for i in range(self.list.count()):
            item = self.list.item(i)
            item.setCheckState(Qt.CheckState.Checked if item.data(ROW_ROLE)["id"] in wanted
                               else Qt.CheckState.Unchecked)
        self.list.blockSignals(False)
        self.sig_runs_checked.emit(self.checked_rows())

    def select_id(self, run_id: int) -> bool:
        for i in range(self.list.count()):
            if self.list.item(i).data(ROW_ROLE)["id"] == run_id:
                self.list.setCurrentRow(i)
                return True
        return False

    # -- actions --------------------------------------------------------------

    @Slot(QListWidgetItem)
    def _on_list_item_changed(self, _item: QListWidgetItem) -> None:
        self.sig_runs_checked.emit(self.checked_rows())

    @Slot()
    def _update_buttons(self, *_args: object) -> None:
        row = self.current_row()
        self.show_only_button.setEnabled(row is not None)
        self.delete_button.setEnabled(row is not None and (row.get("run_dir") or "") not in self.live_dirs)
        self.resume_button.setEnabled(row is not None and is_resumable(row, row["display_status"])
                                      and (row.get("run_dir") or "") not in self.live_dirs)

    @Slot()
    def _on_show_only_button_clicked(self) -> None:
        row = self.current_row()
        if row is not None:
            self.set_checked({row["id"]})

    @Slot()
    def _on_resume_button_clicked(self) -> None:
        row = self.current_row()
        if row is not None:
            self.sig_resume_requested.emit(row)

    @Slot()
    def _on_delete_button_clicked(self) -> None:
        row = self.current_row()
        if row is None:
            return
        folder = row.get("run_dir") or ""
        answer = QMessageBox.question(
            self, "Delete benchmark run",
            f"Delete the run “{row.get('model_label') or row.get('name')}” from the history"
            + (f" and its folder\n{folder}?" if self._owned_folder(folder) else "?")
            + "\n\nIts answers and scores cannot be recovered.")
        if answer == QMessageBox.StandardButton.Yes:
            self.delete_run(int(row["id"]))

    def delete_run(self, run_id: int) -> None:
        """Remove the database row (its items go with it) and the run folder the app created."""
        row = next((r for r in self.rows() if r["id"] == run_id), None)
        self.store.delete_eval_run(run_id)
        folder = (row or {}).get("run_dir") or ""
        if self._owned_folder(folder):
            shutil.rmtree(folder, ignore_errors=True)
        self.refresh()
        self.sig_run_deleted.emit(run_id)
        self.sig_runs_checked.emit(self.checked_rows())

    @staticmethod
    def _owned_folder(folder: str) -> bool:
        """Only folders inside the app's runs directory are deleted (never a path the user chose)."""
        if not folder:
            return False
        try:
            return Path(folder).resolve().is_relative_to(paths.runs_dir().resolve()) and Path(folder).is_dir()
        except OSError:
            return False
