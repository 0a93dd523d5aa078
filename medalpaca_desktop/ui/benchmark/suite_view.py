"""The Suite sub-tab: one suite's models x tasks table, its chart, the tasks' caveats, exports, a comparison.

Reads the suite folder through bench.suite (suite.json and each run's summary; light: no
question is read), on a worker thread, again each time a run of the suite finishes. Each
cell: accuracy with its 95 % Wilson interval and n, a partial run marked; per model the
leaderboard's average (the unweighted mean of the tasks) and the pooled accuracy (every
question as one sample). The table exports as bench.suite writes it (CSV, JSON).

The suite can be checked against training data in one pass (`bench contamination OUT`): the page
lists the overlapping questions of every run, and once every run is checked, "Without overlapping
questions" puts each cell's accuracy over the other questions (the runs' summary_clean.json) under it.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from bench.config import ConfigError
from bench.contamination_report import SUMMARY_CLEAN, StoredCheck, load_check
from bench.suite import Cell, SuiteTable, suite_table
from bench.tasks import TaskError, TaskSpec, get_task
from medalpaca_desktop.ui.benchmark.bar_chart import BenchBarChart, ChartSeries
from medalpaca_desktop.ui.benchmark.overlap_view import (
    CLEAN_TIP,
    CLEAN_TOGGLE,
    STALE_NOTE,
    OverlapEntry,
    OverlapList,
    checked_against,
    overlap_total,
)
from medalpaca_desktop.ui.benchmark.palette import percent
from medalpaca_desktop.ui.benchmark.suite_compare import SuiteCompareView
from medalpaca_desktop.ui.workers import TaskManager, describe_exception

CHART_HEIGHT = 360
TICK_AXIS_HEIGHT = 44
EMPTY_TEXT = "Run a task or group of the medical suite to see the table here."
AVERAGE = "average"
PARTIAL_NOTE = "* partial: the run was stopped or is still running; resume it in the History to finish it."
COLUMNS_NOTE = ("Each cell: accuracy [95 % Wilson interval] and n, the questions scored. Average: the unweighted "
                "mean of the tasks' accuracies (the Open Medical-LLM Leaderboard's), shown once every task is "
                "scored. Pooled: every question of the model as one sample (lm-eval's group accuracy).")


def short_title(key: str) -> str:
    """A task's title without its parenthesis, for column heads and chart ticks ('MMLU anatomy')."""
    try:
        title = get_task(key).title
    except TaskError:
        return key
    return title.split(" (")[0]


def chart_tick(key: str) -> str:
    """A shorter label under the chart's bars: MMLU's subject alone, on two lines ('clinical\nknowledge')."""
    title = short_title(key)
    return title.removeprefix("MMLU ").replace(" ", "\n", 1)


def spec_or_none(key: str) -> TaskSpec | None:
    try:
        return get_task(key)
    except TaskError:
        return None


def cell_text(cell: Cell | None) -> str:
    """'45.2 % [38–52]\\nn = 135', a '*' after the accuracy of a partial run, '–' when not run yet."""
    if cell is None or not cell.n:
        return "–"
    star = " *" if not cell.complete else ""
    return f"{percent(cell.accuracy)}{star} [{cell.ci_low * 100:.0f}–{cell.ci_high * 100:.0f}]\nn = {cell.n}"


def cell_tip(cell: Cell | None) -> str:
    if cell is None or not cell.n:
        return "Not run yet (or still running)."
    tip = (f"{cell.correct} of {cell.n} right; 95 % Wilson interval {percent(cell.ci_low)} to "
           f"{percent(cell.ci_high)}")
    if cell.accuracy_norm is not None:
        tip += f"; acc_norm {percent(cell.accuracy_norm)}"
    if not cell.complete:
        tip += f"; partial: {cell.n} of {cell.n_total} questions scored"
    if cell.run_dir:
        tip += f"\n{cell.run_dir}"
    return tip


def clean_line(cell: Cell | None) -> str:
    """The line under a cell with "Without overlapping questions" on: 'without: 44.0 % (n = 130)'."""
    if cell is None or not cell.n:
        return "without: –"
    return f"without: {percent(cell.accuracy)} (n = {cell.n})"


@dataclass
class SuiteChecks:
    """What training-data checks found in the suite's runs."""

    checks: dict[str, StoredCheck] = field(default_factory=dict)
    """run folder -> its check, for the runs of the table that were checked."""
    runs: int = 0
    """Runs in the table (started and scored)."""
    clean: SuiteTable | None = None
    """The table over the questions not in the training data: once every run has an up-to-date check."""

    @property
    def stale(self) -> int:
        return sum(1 for c in self.checks.values() if c.stale)


def read_suite(out: str | Path) -> tuple[SuiteTable, SuiteChecks]:
    """The table and its runs' checks (light: the runs' JSON files)."""
    table = suite_table(out)
    run_dirs = [c.run_dir for row in table.cells.values() for c in row.values() if c.run_dir]
    checks = {d: check for d in run_dirs if (check := load_check(d)) is not None}
    every = bool(run_dirs) and all(d in checks and not checks[d].stale for d in run_dirs)
    clean = suite_table(out, SUMMARY_CLEAN) if every else None
    return table, SuiteChecks(checks, len(run_dirs), clean)


def _score(cell: Cell) -> dict:
    return {"accuracy": cell.accuracy, "ci_low": cell.ci_low, "ci_high": cell.ci_high, "n": cell.n}


def chart_series(table: SuiteTable) -> list[ChartSeries]:
    """Bars per model: each task with its interval, then the average (no interval: a mean of tasks)."""
    series = []
    for label in table.labels:
        row = table.cells.get(label, {})
        scores: dict[str, dict] = {task: _score(cell) for task, cell in row.items() if cell.n}
        average = table.average(label)
        if average is not None:
            scores[AVERAGE] = {"accuracy": average}
        series.append(ChartSeries(label, scores))
    return series


def fit_height(table: QTableWidget) -> None:
    """As tall as its header and rows (and the scroll bar): the page scrolls, not the table."""
    rows = sum(table.rowHeight(r) for r in range(table.rowCount()))
    height = table.horizontalHeader().sizeHint().height() + rows + 2 * table.frameWidth()
    table.setFixedHeight(height + table.horizontalScrollBar().sizeHint().height() + 2)


class SuiteView(QWidget):
    """The table, chart and comparison of the suite in one folder (`show_suite`), or the empty state."""

    sig_table_shown = Signal(object)  # SuiteTable, after each (re)read
    sig_exported = Signal(str)
    sig_check_requested = Signal(str)  # the suite folder
    sig_question_requested = Signal(str, str)  # run_dir, question id

    def __init__(self, tasks: TaskManager | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tasks = tasks
        self.out: Path | None = None
        self.table: SuiteTable | None = None
        self.checks = SuiteChecks()
        self._generation = 0
        self.empty_label = QLabel(EMPTY_TEXT)
        self.empty_label.setWordWrap(True)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setStyleSheet("color: #666; font-size: 12pt;")
        self.title_label = QLabel()
        self.title_label.setWordWrap(True)
        self.title_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.grid = QTableWidget()
        self.grid.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.grid.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.grid.setAlternatingRowColors(True)
        self.grid.setWordWrap(True)
        self.notes_label = QLabel()
        self.notes_label.setWordWrap(True)
        self.notes_label.setTextFormat(Qt.TextFormat.RichText)
        self.notes_label.setStyleSheet("color: #444;")
        self.notes_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.export_csv_button = QPushButton("Export CSV…")
        self.export_csv_button.setToolTip("Save the table as CSV (one row per model and task, then the average)")
        self.export_csv_button.clicked.connect(lambda: self._choose_file("csv"))
        self.export_json_button = QPushButton("Export JSON…")
        self.export_json_button.setToolTip("Save the table as JSON (cells, averages, pooled accuracies)")
        self.export_json_button.clicked.connect(lambda: self._choose_file("json"))
        self.chart = BenchBarChart(title="Accuracy per task with 95 % confidence intervals", with_reference=False,
                                   empty_text="")
        self.compare = SuiteCompareView(tasks)
        self.check_button = QPushButton("Check against training data…")
        self.check_button.setToolTip("Which questions of every run of the suite are in the data a model was trained "
                                     "on (the training data is read once for all runs), and the accuracy without them")
        self.check_button.clicked.connect(self._on_check_button_clicked)
        self.overlap_label = QLabel()
        self.overlap_label.setWordWrap(True)
        self.overlap_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.clean_check = QCheckBox(CLEAN_TOGGLE)
        self.clean_check.toggled.connect(self._on_clean_check_toggled)
        self.overlap_list = OverlapList()
        self.overlap_list.sig_question_activated.connect(self.sig_question_requested)

        self.chart.setMinimumHeight(CHART_HEIGHT)
        tick_font = QFont()
        tick_font.setPointSize(8)
        axis = self.chart.plot.getAxis("bottom")
        axis.setStyle(tickFont=tick_font)
        axis.setHeight(TICK_AXIS_HEIGHT)  # two-line task names

        page = QWidget()  # one column that scrolls: table, notes, chart, comparison
        column = QVBoxLayout(page)
        column.addWidget(self.title_label)
        column.addWidget(self.grid)
        overlap_row = QHBoxLayout()
        overlap_row.addWidget(self.check_button)
        overlap_row.addWidget(self.overlap_label, 1)
        overlap_row.addWidget(self.clean_check)
        column.addLayout(overlap_row)
        column.addWidget(self.overlap_list)
        column.addWidget(self.notes_label)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.export_csv_button)
        buttons.addWidget(self.export_json_button)
        column.addLayout(buttons)
        column.addWidget(self.chart)
        column.addWidget(QLabel("<b>Paired comparison</b>"))
        column.addWidget(self.compare)
        column.addStretch(1)
        self.content = QScrollArea()
        self.content.setWidgetResizable(True)
        self.content.setFrameShape(QFrame.Shape.NoFrame)
        self.content.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.content.setWidget(page)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.empty_label, 1)
        layout.addWidget(self.content, 1)
        self._show(None)

    # -- which suite ----------------------------------------------------------

    def show_suite(self, out: str | Path | None) -> None:
        """Read the suite in `out` (None: the empty state); rereads when it is the one shown."""
        self._generation += 1
        generation = self._generation
        if out is None:
            self.out = None
            self._show(None)
            return
        folder = Path(out)
        self.out = folder

        def done(read: tuple[SuiteTable, SuiteChecks]) -> None:
            if generation == self._generation:
                self._show(*read)

        def failed(exc: BaseException) -> None:
            if generation == self._generation:
                self._show(None, problem=f"The suite in {folder} cannot be read: {describe_exception(exc)}")

        if self.tasks is None:
            try:
                done(read_suite(folder))
            except (ConfigError, OSError, ValueError) as exc:
                failed(exc)
        else:
            self.tasks.run_in_background(lambda: read_suite(folder), done, failed)

    def refresh(self) -> None:
        if self.out is not None:
            self.show_suite(self.out)

    # -- showing --------------------------------------------------------------

    def _show(self, table: SuiteTable | None, checks: SuiteChecks | None = None, problem: str = "") -> None:
        self.table = table
        self.checks = checks or SuiteChecks()
        shown = table is not None
        self.empty_label.setText(problem or EMPTY_TEXT)
        self.empty_label.setVisible(not shown)
        self.content.setVisible(shown)
        self.export_csv_button.setEnabled(shown)
        self.export_json_button.setEnabled(shown)
        if table is None:
            self.grid.clear()
            self.grid.setRowCount(0)
            self.grid.setColumnCount(0)
            self.chart.set_runs([])
            self.compare.set_suite(None, [], {})
            self.overlap_list.set_entries([])
            self.sig_table_shown.emit(None)
            return
        titles = {task: short_title(task) for task in table.tasks}
        finished = sum(1 for row in table.cells.values() for c in row.values() if c.complete)
        runs = len(table.labels) * len(table.tasks)
        models, tasks = len(table.labels), len(table.tasks)
        self.title_label.setText(
            f"Suite {self.out.name if self.out else ''}: {models} model{'s' if models != 1 else ''} × {tasks} "
            f"task{'s' if tasks != 1 else ''} · {finished} of {runs} runs finished"
            + (f" · {self.out}" if self.out else ""))
        self._show_checks(table, titles)
        self._fill_grid(table, titles)
        self.chart.set_groups([*table.tasks, AVERAGE], {**{t: chart_tick(t) for t in table.tasks}, AVERAGE: "Average"})
        self.chart.set_runs(chart_series(table))
        self.notes_label.setText(self._notes(table))
        self.compare.set_suite(self.out, table.labels, titles)
        self.sig_table_shown.emit(table)

    def _show_checks(self, table: SuiteTable, titles: dict[str, str]) -> None:
        """The training-data line, the list of overlapping questions, and whether the toggle can be on."""
        checks = self.checks
        entries = []
        for label in table.labels:
            for task in table.tasks:
                cell = table.cells.get(label, {}).get(task)
                check = checks.checks.get(cell.run_dir) if cell is not None else None
                if check is not None and cell is not None:
                    entries += [OverlapEntry(f"{label} · {titles[task]}", cell.run_dir, o, check.ngram)
                                for o in check.overlapping]
        self.overlap_list.set_entries(entries, show_run=True)
        self.overlap_list.setVisible(bool(entries))
        self.check_button.setEnabled(checks.runs > 0)
        self.overlap_label.setText(self._overlap_text(checks))
        self.clean_check.setEnabled(checks.clean is not None)
        self.clean_check.setToolTip(CLEAN_TIP if checks.clean is not None else
                                    "Shown once every run of the suite has been checked (Check against training "
                                    "data… checks them all in one pass)")

    @staticmethod
    def _overlap_text(checks: SuiteChecks) -> str:
        if not checks.runs:
            return ""
        if not checks.checks:
            return "Not checked against training data yet."
        first = next(iter(checks.checks.values()))
        text = (f"{overlap_total(list(checks.checks.values()))} ({len(checks.checks)} of {checks.runs} runs checked "
                f"against {checked_against(first)})")
        if checks.stale:
            text += f"; {checks.stale} run{'s' if checks.stale != 1 else ''}: {STALE_NOTE}"
        elif len(checks.checks) < checks.runs:
            text += "; check the suite to see every cell without them"
        return text + "."

    def showing_clean(self) -> bool:
        return self.clean_check.isChecked() and self.checks.clean is not None

    @Slot(bool)
    def _on_clean_check_toggled(self, _on: bool) -> None:
        if self.table is not None:
            self._fill_grid(self.table, {task: short_title(task) for task in self.table.tasks})

    @Slot()
    def _on_check_button_clicked(self) -> None:
        if self.out is not None:
            self.sig_check_requested.emit(str(self.out))

    def _fill_grid(self, table: SuiteTable, titles: dict[str, str]) -> None:
        clean = self.checks.clean if self.showing_clean() else None
        headers = [titles[t] for t in table.tasks] + ["Average", "Pooled"]
        self.grid.clear()
        self.grid.setColumnCount(len(headers))
        self.grid.setRowCount(len(table.labels))
        self.grid.setHorizontalHeaderLabels([h.replace(" ", "\n", 1) for h in headers])
        self.grid.setVerticalHeaderLabels(table.labels)
        for c, task in enumerate(table.tasks):
            spec = spec_or_none(task)
            head = self.grid.horizontalHeaderItem(c)
            if head is not None and spec is not None:
                head.setToolTip(f"{spec.title} ({task}): {spec.repo_id}, {spec.split} split")
        for r, label in enumerate(table.labels):
            row = table.cells.get(label, {})
            for c, task in enumerate(table.tasks):
                cell = row.get(task)
                text, tip = cell_text(cell), cell_tip(cell)
                if clean is not None and cell is not None and cell.n:
                    clean_cell = clean.cells.get(label, {}).get(task)
                    text += "\n" + clean_line(clean_cell)
                    tip += "\nWithout the questions found in your training data: " + (
                        cell_tip(clean_cell).split("\n")[0] if clean_cell else "none left")
                item = QTableWidgetItem(text)
                item.setToolTip(tip)
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                self.grid.setItem(r, c, item)
            average = table.average(label)
            text = percent(average)
            if clean is not None and average is not None:
                text += f"\nwithout: {percent(clean.average(label))}"
            item = QTableWidgetItem(text)
            item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
            item.setToolTip("The unweighted mean of the tasks' accuracies" if average is not None
                            else "Shown once every task of the suite is scored")
            font = item.font()
            font.setBold(True)
            item.setFont(font)
            self.grid.setItem(r, len(table.tasks), item)
            pooled = table.pooled(label)
            text = cell_text(pooled)
            if clean is not None and pooled is not None:
                text += "\n" + clean_line(clean.pooled(label))
            item = QTableWidgetItem(text)
            item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
            item.setToolTip(cell_tip(pooled) if pooled else "Nothing scored yet")
            self.grid.setItem(r, len(table.tasks) + 1, item)
        header = self.grid.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.grid.resizeRowsToContents()
        fit_height(self.grid)

    def _notes(self, table: SuiteTable) -> str:
        lines = [html.escape(COLUMNS_NOTE)]
        if any(not c.complete for row in table.cells.values() for c in row.values()):
            lines.insert(0, html.escape(PARTIAL_NOTE))
        caveats = [(spec.title, spec.caveat) for spec in map(spec_or_none, table.tasks) if spec and spec.caveat]
        if caveats:
            lines.append("<b>About these tasks:</b>")
            lines += [f"• <b>{html.escape(title)}</b>: {html.escape(caveat, quote=False)}" for title, caveat in caveats]
        return "<br>".join(lines)

    def caveats(self) -> list[str]:
        """The caveats listed under the table (task title: caveat)."""
        if self.table is None:
            return []
        return [f"{spec.title}: {spec.caveat}" for spec in map(spec_or_none, self.table.tasks) if spec and spec.caveat]

    # -- export ---------------------------------------------------------------

    def export(self, path: str | Path, kind: str) -> Path:
        """The shown table as CSV (SuiteTable.to_csv) or JSON (SuiteTable.to_dict)."""
        if self.table is None:
            raise ValueError("no suite is shown")
        path = Path(path)
        text = self.table.to_csv() if kind == "csv" else json.dumps(self.table.to_dict(), indent=2) + "\n"
        path.write_text(text, encoding="utf-8")
        return path

    def _choose_file(self, kind: str) -> None:
        if self.table is None:
            return
        name = f"{self.out.name if self.out else 'suite'}-table.{kind}"
        pattern = "CSV files (*.csv)" if kind == "csv" else "JSON files (*.json)"
        path, _ = QFileDialog.getSaveFileName(self, f"Export the suite table as {kind.upper()}",
                                              str(Path.home() / name), pattern)
        if not path:
            return
        try:
            written = self.export(path, kind)
        except OSError as exc:
            QMessageBox.warning(self, "Export failed", f"The table could not be saved: {exc}")
            return
        self.sig_exported.emit(str(written))
