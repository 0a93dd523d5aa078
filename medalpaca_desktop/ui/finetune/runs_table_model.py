"""The runs list: one row per training run in the database (status, method, model, data, loss, duration)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QBrush, QColor

from medalpaca_desktop.core.jobs import RunStatus
from medalpaca_desktop.core.progress import format_duration
from medalpaca_desktop.ui.finetune.runs import model_label

_NO_PARENT = QModelIndex()  # Qt's default argument, built once (an invalid index holds no state)

COLUMNS = ("Run", "Status", "Method", "Model", "Data", "Final loss", "Best checkpoint", "Duration")
COL_RUN, COL_STATUS, COL_METHOD, COL_MODEL, COL_DATA, COL_LOSS, COL_BEST, COL_DURATION = range(len(COLUMNS))

STATUS_TEXT = {RunStatus.CREATED: "not started", RunStatus.RUNNING: "running", RunStatus.STOPPED: "stopped",
               RunStatus.FAILED: "failed", RunStatus.CRASHED: "crashed", RunStatus.DONE: "done"}
STATUS_COLOR = {RunStatus.RUNNING: "#1565c0", RunStatus.STOPPED: "#9a6700", RunStatus.FAILED: "#b71c1c",
                RunStatus.CRASHED: "#b71c1c", RunStatus.DONE: "#2e7d32"}

_Index = QModelIndex | QPersistentModelIndex


def best_of(row: dict[str, Any]) -> dict[str, Any]:
    """The run's best checkpoint as the trainer recorded it (best_json); {} when none was picked."""
    try:
        best = json.loads(row.get("best_json") or "{}")
    except ValueError:
        return {}
    return best if isinstance(best, dict) else {}


def best_label(row: dict[str, Any]) -> str:
    """"step 40 · acc 41.5 %" or "step 40 · val loss 1.234": the checkpoint final/ holds."""
    best = best_of(row)
    value, step = best.get("best_value"), best.get("best_step")
    if not isinstance(value, (int, float)) or step is None:
        return ""
    measure = f"acc {100 * value:.1f} %" if best.get("best_by") == "accuracy" else f"val loss {value:.4f}"
    return f"step {step} · {measure}"


def data_label(row: dict[str, Any]) -> str:
    """The data sources of a run as file names ("a.jsonl + 1 more")."""
    try:
        sources = json.loads(row.get("data_json") or "[]")
    except ValueError:
        sources = []
    names = [Path(str(s)).name or str(s) for s in sources]
    if not names:
        return ""
    return names[0] if len(names) == 1 else f"{names[0]} + {len(names) - 1} more"


def run_duration(row: dict[str, Any], now: float | None = None) -> float | None:
    """Seconds of the latest attempt (still counting while it runs)."""
    start = row.get("started_at")
    if not start:
        return None
    end = row.get("finished_at") or (now or time.time() if row.get("status") == RunStatus.RUNNING else None)
    return max(0.0, end - start) if end else None


class RunsTableModel(QAbstractTableModel):
    """Rows are dicts from `Store.training_runs()`, newest first."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._rows: list[dict[str, Any]] = []

    def set_rows(self, rows: list[dict[str, Any]]) -> None:
        self.beginResetModel()
        self._rows = [dict(r) for r in rows]
        self.endResetModel()

    def row_at(self, index: int) -> dict[str, Any] | None:
        return self._rows[index] if 0 <= index < len(self._rows) else None

    def row_of(self, run_id: int) -> int:
        return next((i for i, r in enumerate(self._rows) if r["id"] == run_id), -1)

    def refresh_durations(self) -> None:
        """Running rows' duration ticks on."""
        for i, row in enumerate(self._rows):
            if row.get("status") == RunStatus.RUNNING:
                index = self.index(i, COL_DURATION)
                self.dataChanged.emit(index, index, [Qt.ItemDataRole.DisplayRole])

    # -- Qt model ---------------------------------------------------------------------

    def rowCount(self, parent: _Index = _NO_PARENT) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: _Index = _NO_PARENT) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        row = self.row_at(index.row()) if index.isValid() else None
        if row is None:
            return None
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(row, col)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(row, col)
        if role == Qt.ItemDataRole.ForegroundRole and col == COL_STATUS:
            color = STATUS_COLOR.get(row.get("status", ""))
            return QBrush(QColor(color)) if color else None
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (COL_LOSS, COL_DURATION):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.UserRole:
            return row["id"]
        return None

    def _text(self, row: dict[str, Any], col: int) -> str:
        if col == COL_RUN:
            return str(row.get("name") or "")
        if col == COL_STATUS:
            return STATUS_TEXT.get(row.get("status", ""), str(row.get("status")))
        if col == COL_METHOD:
            return str(row.get("method") or "")
        if col == COL_MODEL:
            return model_label(str(row.get("base_model") or ""))
        if col == COL_DATA:
            return data_label(row)
        if col == COL_LOSS:
            loss = row.get("final_loss")
            return f"{loss:.4f}" if isinstance(loss, (int, float)) else ""
        if col == COL_BEST:
            return best_label(row)
        if col == COL_DURATION:
            seconds = run_duration(row)
            return format_duration(seconds) if seconds is not None else ""
        return ""

    def _tooltip(self, row: dict[str, Any], col: int) -> str:
        if col == COL_STATUS and row.get("error"):
            return str(row["error"])
        if col == COL_MODEL:
            return str(row.get("base_model") or "")
        if col == COL_DATA:
            try:
                return "\n".join(map(str, json.loads(row.get("data_json") or "[]")))
            except ValueError:
                return ""
        if col == COL_RUN:
            return str(row.get("run_dir") or "")
        if col == COL_BEST:
            best = best_of(row)
            if not best.get("best_checkpoint"):
                return "No best checkpoint picked (best_by: the last step), or the run has not finished"
            return (f"{best['best_checkpoint']}\nfinal/ holds these weights: chat, merge and export use them")
        if col == COL_DURATION:
            return "Time of the latest start (a resumed run counts from its resume)"
        return ""
