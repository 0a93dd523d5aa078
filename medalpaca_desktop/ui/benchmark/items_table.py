"""Questions joined across runs (one row per question id) and the drill-down's filters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QBrush, QColor

from medalpaca_desktop.ui.benchmark.palette import step_name
from medalpaca_desktop.ui.benchmark.runs import BenchRun

_NO_PARENT = QModelIndex()  # Qt's default argument, built once (an invalid index holds no state)

ROW_ROLE = Qt.ItemDataRole.UserRole + 1
RIGHT = QColor("#1b7a3a")
WRONG = QColor("#b3261e")
UNPARSEABLE = QColor("#8a6d00")

FILTERS: dict[str, str] = {
    "all": "All questions",
    "wrong": "Wrong answers (in any run)",
    "disagree": "Runs disagree (different answers)",
    "unparseable": "Unparseable answers",
    "overlap": "In your training data",
}
FILTER_TIPS: dict[str, str] = {
    "all": "Every scored question",
    "wrong": "Questions at least one shown run got wrong (unparseable answers count as wrong)",
    "disagree": "Questions where the shown runs gave different answers (needs two runs)",
    "unparseable": "Answers the scoring rule could not read as a letter: counted wrong, listed here",
    "overlap": "Questions a check against training data found there (Chart tab: Check against training data…)",
}

FIXED_COLUMNS = ("Step", "ID", "Question", "Options", "Gold")


@dataclass
class QuestionRow:
    """One question and each run's answer to it (None: that run did not score it)."""

    id: str
    step: str
    question: str
    options: dict[str, str]
    gold: str
    answers: list[dict[str, Any] | None] = field(default_factory=list)
    overlaps: list[dict[str, Any] | None] = field(default_factory=list)
    """Per run: where its training-data check found the question (None: not found, or not checked)."""

    def preds(self) -> list[str | None]:
        return [a.get("pred") or None for a in self.answers if a is not None]

    def is_wrong(self) -> bool:
        return any(a is not None and not a.get("correct") for a in self.answers)

    def is_unparseable(self) -> bool:
        return any(a is not None and not a.get("pred") for a in self.answers)

    def in_training_data(self) -> bool:
        return any(o is not None for o in self.overlaps)

    def runs_disagree(self) -> bool:
        scored = [a for a in self.answers if a is not None]
        return len(scored) >= 2 and len({a.get("pred") or None for a in scored}) > 1


def join_runs(runs: list[BenchRun]) -> list[QuestionRow]:
    """Rows in the first run's order; questions only later runs have come after."""
    rows: dict[str, QuestionRow] = {}
    for index, run in enumerate(runs):
        check = run.check
        found = {str(o.get("id")): {**o, "ngram_size": check.ngram} for o in check.overlapping} if check else {}
        for item in run.items:
            key = str(item.get("id"))
            row = rows.get(key)
            if row is None:
                row = QuestionRow(id=key, step=str(item.get("step") or ""), question=str(item.get("question") or ""),
                                  options=dict(item.get("options") or {}), gold=str(item.get("gold") or ""),
                                  answers=[None] * len(runs), overlaps=[None] * len(runs))
                rows[key] = row
            row.answers[index] = item
            row.overlaps[index] = found.get(key)
    return list(rows.values())


def answer_text(answer: dict[str, Any] | None) -> str:
    if answer is None:
        return ""
    pred = answer.get("pred")
    if not pred:
        return "? unparseable"
    return f"{pred} ✓" if answer.get("correct") else f"{pred} ✗"


def options_text(options: dict[str, str], limit: int = 160) -> str:
    text = "  ".join(f"{letter}: {value}" for letter, value in options.items())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ItemsTableModel(QAbstractTableModel):
    """Step, ID, question, options, gold, then one answer column per run and the first run's raw output."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.runs: list[BenchRun] = []
        self.run_names: list[str] = []
        self.rows: list[QuestionRow] = []

    def set_runs(self, runs: list[BenchRun], names: list[str] | None = None) -> None:
        self.beginResetModel()
        self.runs = list(runs)
        self.run_names = list(names or [r.display_name() for r in runs])
        self.rows = join_runs(self.runs)
        self.endResetModel()

    def columns(self) -> list[str]:
        cols = list(FIXED_COLUMNS) + self.run_names
        if self.runs:
            cols.append("Raw output" + (f" ({self.run_names[0]})" if len(self.runs) > 1 else ""))
        return cols

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = _NO_PARENT) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = _NO_PARENT) -> int:
        return 0 if parent.isValid() else len(self.columns())

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            cols = self.columns()
            if len(FIXED_COLUMNS) <= section < len(FIXED_COLUMNS) + len(self.runs):
                model, _, rest = cols[section].partition(" · ")  # model on one line, mode on the next
                model = model if len(model) <= 17 else model[:16] + "…"  # the tooltip has the full name
                return f"{model}\n{rest}" if rest else model
            return cols[section] if 0 <= section < len(cols) else None
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole:
            if len(FIXED_COLUMNS) <= section < len(FIXED_COLUMNS) + len(self.runs):
                return (f"{self.run_names[section - len(FIXED_COLUMNS)]}: ✓ right, ✗ wrong, "
                        "? the rule could not read a letter")
        return None

    def row_at(self, row: int) -> QuestionRow:
        return self.rows[row]

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        column = index.column()
        if role == ROW_ROLE:
            return row
        run_col = column - len(FIXED_COLUMNS)
        answer = row.answers[run_col] if 0 <= run_col < len(self.runs) else None
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            full = role == Qt.ItemDataRole.ToolTipRole
            if column == 0:
                return step_name(row.step)
            if column == 1:
                return row.id
            if column == 2:
                return row.question if full else _one_line(row.question, 140)
            if column == 3:
                return "\n".join(f"{k}: {v}" for k, v in row.options.items()) if full else options_text(row.options)
            if column == 4:
                return row.gold
            if 0 <= run_col < len(self.runs):
                return answer_text(answer)
            first = row.answers[0] if row.answers else None
            output = (first or {}).get("output") or ""
            return output if full else _one_line(output, 120)
        if role == Qt.ItemDataRole.ForegroundRole and 0 <= run_col < len(self.runs) and answer is not None:
            if not answer.get("pred"):
                return QBrush(UNPARSEABLE)
            return QBrush(RIGHT if answer.get("correct") else WRONG)
        if role == Qt.ItemDataRole.TextAlignmentRole and (column in (0, 1, 4) or 0 <= run_col < len(self.runs)):
            return int(Qt.AlignmentFlag.AlignCenter)
        return None


class ItemsFilterProxy(QSortFilterProxyModel):
    """The drill-down's filter (all / wrong / disagree / unparseable / in training data) and a text search."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.mode = "all"
        self.text = ""

    def set_mode(self, mode: str) -> None:
        if mode not in FILTERS:
            raise ValueError(f"unknown filter {mode!r}")
        self.beginFilterChange()
        self.mode = mode
        self.endFilterChange()

    def set_text(self, text: str) -> None:
        self.beginFilterChange()
        self.text = text.strip().lower()
        self.endFilterChange()

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex) -> bool:
        model = self.sourceModel()
        if not isinstance(model, ItemsTableModel):
            return True
        row = model.row_at(source_row)
        if self.mode == "wrong" and not row.is_wrong():
            return False
        if self.mode == "disagree" and not row.runs_disagree():
            return False
        if self.mode == "unparseable" and not row.is_unparseable():
            return False
        if self.mode == "overlap" and not row.in_training_data():
            return False
        if self.text:
            haystack = " ".join([row.id, row.question, *row.options.values()]).lower()
            return self.text in haystack
        return True

    def visible_rows(self) -> list[QuestionRow]:
        model = self.sourceModel()
        assert isinstance(model, ItemsTableModel)
        return [model.row_at(self.mapToSource(self.index(r, 0)).row()) for r in range(self.rowCount())]


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
