"""The Benchmark tab: setup and history on the left; the queue and the results on the right.

Results show the runs ticked in the History (a new batch ticks its own runs as they
start): the chart with the paper's reference bars, the numbers, every question,
a paired comparison and each run's reproducibility record; the Suite page shows the
models x tasks table of the medical suite the last finished run belongs to. A shown run, or the
whole suite, can be checked against training data (`bench contamination` as a worker, from
contamination_dialog.py); what a check found shows under the numbers and on the Suite page. When
the database cannot be opened the tab keeps its runs in an in-memory store for this session and
says so once.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from bench.config import BenchConfig, ConfigError
from bench.reference import paper_scores
from bench.suite import write_table
from medalpaca_desktop.core.jobs import RunStatus
from medalpaca_desktop.core.model_info import ModelInfo
from medalpaca_desktop.core.store import Store, open_store
from medalpaca_desktop.ui.benchmark.bar_chart import BenchBarChart, ChartSeries
from medalpaca_desktop.ui.benchmark.compare_view import CompareView
from medalpaca_desktop.ui.benchmark.contamination_dialog import ContaminationDialog
from medalpaca_desktop.ui.benchmark.drilldown import DrillDownView
from medalpaca_desktop.ui.benchmark.history import HistoryPanel
from medalpaca_desktop.ui.benchmark.overlap_view import OverlapPanel
from medalpaca_desktop.ui.benchmark.queue_view import QueueView
from medalpaca_desktop.ui.benchmark.repro_view import ReproView
from medalpaca_desktop.ui.benchmark.rescore import RescoreBar
from medalpaca_desktop.ui.benchmark.run_queue import BenchQueue, QueuedRun
from medalpaca_desktop.ui.benchmark.runs import BenchRun, run_from_database
from medalpaca_desktop.ui.benchmark.setup_panel import SetupPanel
from medalpaca_desktop.ui.benchmark.suite_setup import suite_folder_of
from medalpaca_desktop.ui.benchmark.suite_view import SuiteView
from medalpaca_desktop.ui.benchmark.summary_table import SummaryTable
from medalpaca_desktop.ui.benchmark.task_downloads import DownloadReport
from medalpaca_desktop.ui.benchmark.verify_panel import VerifyPanel
from medalpaca_desktop.ui.widgets.notice import session_only_label
from medalpaca_desktop.ui.workers import TaskManager

PAGE_CHART, PAGE_QUESTIONS, PAGE_COMPARE, PAGE_RECORD, PAGE_SUITE = range(5)
LIVE_REFRESH_MS = 400


def unique_names(runs: list[BenchRun]) -> list[str]:
    """Display names, numbered when two runs would read the same."""
    names: list[str] = []
    for run in runs:
        name, n = run.display_name(), 2
        while name in names:
            name = f"{run.display_name()} #{n}"
            n += 1
        names.append(name)
    return names


class BenchmarkTab(QWidget):
    sig_status_changed = Signal(str)
    sig_add_model_requested = Signal()
    sig_runs_shown = Signal(object)  # list[BenchRun], after every change of what is shown

    def __init__(self, store: Store | None = None, tasks: TaskManager | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._owns_store = store is None
        self.store: Store
        self.store_error: str | None  # why runs are kept in memory for this session only
        self.store, self.store_error = (store, None) if store is not None else open_store()
        self.tasks = tasks or TaskManager(self)
        self.shown: list[BenchRun] = []
        self.names: list[str] = []
        self._cache: dict[int, BenchRun] = {}
        self._batch_dirs: set[str] = set()

        self.queue = BenchQueue(self.store, self)
        self.setup = SetupPanel(self.tasks)
        self.history = HistoryPanel(self.store)
        self.queue_view = QueueView(self.queue)
        self.chart = BenchBarChart()
        try:
            reference = paper_scores()
            self.chart.set_reference(reference.models, reference.source)
            self.chart.reference_check.setChecked(True)
        except (OSError, ValueError, KeyError) as exc:
            self.chart.reference_check.setEnabled(False)
            self.chart.reference_check.setToolTip(f"The paper's scores could not be read: {exc}")
        self.summary_table = SummaryTable()
        self.overlap_panel = OverlapPanel()
        self.contamination_dialog: ContaminationDialog | None = None
        self.drilldown = DrillDownView()
        self.compare = CompareView(self.tasks)
        self.repro = ReproView()
        self.suite_view = SuiteView(self.tasks)
        self.rescore_bar = RescoreBar()
        self.verify_panel = VerifyPanel()
        self._live_timer = QTimer(self, singleShot=True, interval=LIVE_REFRESH_MS)
        self._live_timer.timeout.connect(self._on_live_timer_timeout)
        self._build_layout()

        self.setup.sig_runs_requested.connect(self._on_setup_runs_requested)
        self.setup.sig_add_model_requested.connect(self.sig_add_model_requested)
        self.history.sig_runs_checked.connect(self._on_history_runs_checked)
        self.history.sig_resume_requested.connect(self._on_history_resume_requested)
        self.history.sig_run_deleted.connect(self._on_history_run_deleted)
        self.queue.sig_run_started.connect(self._on_queue_run_started)
        self.queue.sig_item_scored.connect(self._on_queue_item_scored)
        self.queue.sig_run_finished.connect(self._on_queue_run_finished)
        self.compare.sig_question_requested.connect(self.open_question)
        self.overlap_panel.sig_check_requested.connect(self.check_contamination)
        self.overlap_panel.sig_question_requested.connect(lambda _run_dir, qid: self.open_question(qid))
        self.overlap_panel.sig_clean_toggled.connect(self.summary_table.set_show_clean)
        self.suite_view.sig_check_requested.connect(self.check_contamination)
        self.suite_view.sig_question_requested.connect(self.open_run_question)
        self.rescore_bar.sig_rescored.connect(self._on_rescore_bar_rescored)
        self.verify_panel.sig_finished.connect(self._on_verify_panel_finished)
        self.rescore_bar.sig_failed.connect(lambda message: self.sig_status_changed.emit(f"Re-score failed: {message}"))
        self.drilldown.sig_exported.connect(lambda path: self.sig_status_changed.emit(f"Saved {path}"))
        self.suite_view.sig_exported.connect(lambda path: self.sig_status_changed.emit(f"Saved {path}"))
        self.setup.task_choice.sig_downloads_finished.connect(self._on_task_downloads_finished)
        self.queue.reattach()  # a benchmark an earlier app session left running
        self.history.set_live_dirs(self.queue.live_dirs())
        self._show([])
        self.suite_view.show_suite(self._last_suite())

    # -- layout ---------------------------------------------------------------

    def _build_layout(self) -> None:
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.setup)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(380)
        self.side_tabs = QTabWidget()
        self.side_tabs.addTab(scroll, "New run")
        history_page = QWidget()
        history_layout = QVBoxLayout(history_page)
        history_layout.addWidget(self.history)
        self.side_tabs.addTab(history_page, "History")
        self.side_tabs.addTab(self.verify_panel, "Check a model")
        self.side_tabs.setTabToolTip(2, "Is a quantization, merge or fine-tune as good as the original? The same "
                                        "questions on both, paired")

        chart_page = QWidget()
        chart_layout = QVBoxLayout(chart_page)
        chart_layout.addWidget(self.chart, 1)
        chart_layout.addWidget(self.summary_table)
        chart_layout.addWidget(self.overlap_panel)
        buttons = QHBoxLayout()
        self.export_png_button = QPushButton("Export PNG…")
        self.export_png_button.setToolTip("Save the chart as a PNG image")
        self.export_png_button.clicked.connect(lambda: self._choose_chart_file("png"))
        self.export_svg_button = QPushButton("Export SVG…")
        self.export_svg_button.setToolTip("Save the chart as an SVG vector drawing (for papers and slides)")
        self.export_svg_button.clicked.connect(lambda: self._choose_chart_file("svg"))
        buttons.addWidget(self.rescore_bar, 1)
        buttons.addSpacing(24)
        buttons.addWidget(self.export_png_button)
        buttons.addWidget(self.export_svg_button)
        chart_layout.addLayout(buttons)

        self.results_tabs = QTabWidget()
        self.results_tabs.addTab(chart_page, "Chart")
        self.results_tabs.addTab(self.drilldown, "Questions")
        self.results_tabs.addTab(self.compare, "Compare")
        self.results_tabs.addTab(self.repro, "Reproducibility")
        self.results_tabs.addTab(self.suite_view, "Suite")
        self.shown_label = QLabel()
        self.shown_label.setWordWrap(True)
        self.shown_label.setStyleSheet("color: #444;")

        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.addWidget(self.queue_view)
        right_layout.addWidget(self.shown_label)
        right_layout.addWidget(self.results_tabs, 1)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self.side_tabs)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([460, 820])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        self.store_label = session_only_label("Past runs are not listed:", self.store_error) \
            if self.store_error else None
        if self.store_label is not None:
            layout.addWidget(self.store_label)
        layout.addWidget(splitter)

    # -- models ---------------------------------------------------------------

    @Slot(object, object)
    def set_models(self, models: list[ModelInfo], problems: object = None) -> None:
        self.setup.set_models(models, problems)
        self.verify_panel.set_models(models)

    # -- running --------------------------------------------------------------

    @Slot(object)
    def _on_setup_runs_requested(self, configs: list[BenchConfig]) -> None:
        try:
            runs = self.queue.enqueue(configs)
        except (OSError, ConfigError) as exc:
            self.setup.show_message(f"The runs could not be set up: {exc}")
            return
        self._batch_dirs = {str(r.run_dir.resolve()) for r in runs}
        self.history.set_checked(set())  # the new batch replaces what is shown, run by run as it starts
        suite = suite_folder_of(runs[0].run_dir) if runs else None
        if suite is not None:  # a suite: its table fills in as its runs finish
            self.suite_view.show_suite(suite)
            self.results_tabs.setCurrentIndex(PAGE_SUITE)
        self.sig_status_changed.emit(f"Benchmark queued: {len(runs)} run{'s' if len(runs) != 1 else ''}")

    @Slot(object)
    def _on_history_resume_requested(self, row: dict) -> None:
        try:
            run = self.queue.resume(row["run_dir"])
        except (OSError, ConfigError) as exc:
            QMessageBox.warning(self, "Cannot resume", f"This run cannot be resumed: {exc}")
            return
        self._batch_dirs = {str(run.run_dir.resolve())}
        self.history.set_live_dirs(self.queue.live_dirs())

    @Slot(object)
    def _on_queue_run_started(self, run: QueuedRun) -> None:
        self.history.set_live_dirs(self.queue.live_dirs())
        self.sig_status_changed.emit(f"Benchmark running: {run.label}")

    @Slot(object, object)
    def _on_queue_item_scored(self, run: QueuedRun, _item: dict) -> None:
        row = self._row_for(run)
        if row is not None:
            self._cache.pop(int(row["id"]), None)
            if int(row["id"]) not in self.history.checked_ids():
                self.history.refresh()
                self.history.set_checked([*self.history.checked_ids(), int(row["id"])])
                return
        if not self._live_timer.isActive():
            self._live_timer.start()

    @Slot()
    def _on_live_timer_timeout(self) -> None:
        self._show(self.history.checked_rows())

    @Slot(object)
    def _on_queue_run_finished(self, run: QueuedRun) -> None:
        self._live_timer.stop()
        row = self._row_for(run)
        self.history.set_live_dirs(self.queue.live_dirs())
        if row is not None:
            self._cache.pop(int(row["id"]), None)
            ids = self.history.checked_ids()
            if int(row["id"]) not in ids and str(run.run_dir.resolve()) in self._batch_dirs:
                ids.append(int(row["id"]))
            self.history.set_checked(ids)
        else:
            self._show(self.history.checked_rows())
        state = "finished" if run.state == RunStatus.DONE else run.state.value
        self.sig_status_changed.emit(f"Benchmark {state}: {run.label}" + (f" — {run.error}" if run.error else ""))
        suite = suite_folder_of(run.run_dir)
        if suite is not None:
            self._suite_run_finished(suite)

    def _suite_run_finished(self, suite: Path) -> None:
        """A run of a suite ended: its table files beside the runs (as `bench suite` writes them), the Suite page."""
        try:
            write_table(suite)
        except (OSError, ConfigError):
            pass  # the page reads the runs themselves; the files are for the terminal and scripts
        self.suite_view.show_suite(suite)

    def _last_suite(self) -> Path | None:
        """The suite of the newest finished run in the History (the page's content at start)."""
        for row in self.history.rows():  # newest first
            if row.get("display_status") in (RunStatus.DONE, RunStatus.STOPPED) and row.get("run_dir"):
                suite = suite_folder_of(row["run_dir"])
                if suite is not None:
                    return suite
        return None

    @Slot(object)
    def _on_task_downloads_finished(self, report: DownloadReport) -> None:
        self.sig_status_changed.emit("Benchmark tasks downloaded" if report.ok else "Benchmark task download ended")

    def _row_for(self, run: QueuedRun) -> dict | None:
        return self.store.eval_run_by_dir(str(run.run_dir.resolve()))

    # -- showing --------------------------------------------------------------

    @Slot(object)
    def _on_history_runs_checked(self, rows: list[dict]) -> None:
        self._show(rows)

    @Slot(int)
    def _on_history_run_deleted(self, run_id: int) -> None:
        self._cache.pop(run_id, None)

    @Slot(str)
    def _on_rescore_bar_rescored(self, run_dir: str) -> None:
        self._cache = {k: v for k, v in self._cache.items() if v.run_dir != run_dir}
        self.history.refresh()
        self._show(self.history.checked_rows())
        self.sig_status_changed.emit(f"Re-scored {Path(run_dir).name}")

    def _load(self, row: dict) -> BenchRun:
        run_id = int(row["id"])
        live = (row.get("run_dir") or "") in self.queue.live_dirs()
        if run_id not in self._cache or live:
            run = run_from_database(self.store, row)
            shown = row.get("display_status")
            run.status = RunStatus(shown).value if shown else run.status
            if live:
                run.status = RunStatus.RUNNING.value
                return run
            self._cache[run_id] = run
        return self._cache[run_id]

    def _show(self, rows: list[dict]) -> None:
        rows = sorted(rows, key=lambda row: (row.get("created_at") or 0, row["id"]))  # oldest first: run order
        runs = [self._load(row) for row in rows]
        self.shown = runs
        self.names = unique_names(runs)
        self.chart.set_runs([ChartSeries(name, run.scores()) for run, name in zip(runs, self.names)])
        options = {run.option_count() for run in runs if run.items}
        self.chart.set_chance(1 / options.pop() if len(options) == 1 and None not in options else None)
        self.summary_table.set_runs(runs, self.names)
        self.summary_table.setVisible(bool(runs))
        self.drilldown.set_runs(runs, self.names)
        self.compare.set_runs(runs, self.names)
        self.repro.set_runs(runs, self.names)
        self.rescore_bar.set_runs(runs, self.names)
        self.overlap_panel.set_runs(runs, self.names)
        notes = [f"{name}: {run.note}" for run, name in zip(runs, self.names) if run.note]
        if runs:
            text = f"Showing {len(runs)} run{'s' if len(runs) != 1 else ''} (tick runs in the History to change)."
        else:
            text = "Nothing shown yet: run a benchmark, or tick past runs in the History."
        self.shown_label.setText(" ".join([text, *notes]))
        has = bool(runs)
        self.export_png_button.setEnabled(has)
        self.export_svg_button.setEnabled(has)
        self.sig_runs_shown.emit(runs)

    @Slot(object)
    def _on_verify_panel_finished(self, result: dict) -> None:
        """Show the check's two runs (chart, questions, the paired comparison) as History rows."""
        out = Path(str(result.get("out", "")))
        self.history.refresh()
        wanted = {str(out / "reference"), str(out / "candidate")}
        rows = [r for r in self.history.rows() if str(r.get("run_dir") or "") in wanted]
        if len(rows) == 2:
            self.history.set_checked([int(r["id"]) for r in rows])
            if len(self.shown) == 2:
                first = 0 if str(self.shown[0].run_dir).endswith("reference") else 1
                self.compare.select(first, 1 - first)  # original as A, the checked model as B
                self.results_tabs.setCurrentWidget(self.compare)
        self.sig_status_changed.emit("Check finished: " + str(result.get("verdict", "")))

    def show_run_ids(self, ids: list[int]) -> None:
        """Show exactly these eval runs (from the History)."""
        self.history.refresh()
        self.history.set_checked(ids)

    @Slot(str)
    def open_question(self, question_id: str) -> None:
        self.drilldown.set_filter("all")
        self.results_tabs.setCurrentIndex(PAGE_QUESTIONS)
        self.drilldown.select_question(question_id)

    @Slot(str, str)
    def open_run_question(self, run_dir: str, question_id: str) -> None:
        """Show the run in this folder (alone, unless it is shown already) and open one of its questions."""
        if run_dir not in {r.run_dir for r in self.shown}:
            row = self.store.eval_run_by_dir(str(Path(run_dir).resolve())) or self.store.eval_run_by_dir(run_dir)
            if row is None:
                self.sig_status_changed.emit(f"{run_dir} is not in the History; open it there to read its questions")
                return
            self.show_run_ids([int(row["id"])])
        self.open_question(question_id)

    # -- training data --------------------------------------------------------

    @Slot(str)
    def check_contamination(self, target: str) -> ContaminationDialog:
        """The dialog that checks a run folder (or a suite folder) against training data."""
        if self.contamination_dialog is not None and self.contamination_dialog.is_running():
            self.contamination_dialog.raise_()
            return self.contamination_dialog
        names = dict(zip((r.run_dir for r in self.shown), self.names))
        suite = self.suite_view.out is not None and Path(target) == self.suite_view.out
        name = f"the suite {Path(target).name} (every run)" if suite else names.get(target, Path(target).name)
        dialog = ContaminationDialog(target, name, self)
        if self.contamination_dialog is not None:  # the sources picked last time stay picked
            dialog.add_sources(self.contamination_dialog.sources())
            dialog.set_meadow_checked(self.contamination_dialog.meadow_keys())
            dialog.ngram_spin.setValue(self.contamination_dialog.ngram_spin.value())
            self.contamination_dialog.deleteLater()
        dialog.sig_checked.connect(self._on_contamination_checked)
        self.contamination_dialog = dialog
        dialog.setModal(False)  # a check of a big corpus takes minutes; the window stays usable meanwhile
        dialog.show()
        return dialog

    @Slot(str)
    def _on_contamination_checked(self, target: str) -> None:
        """Read the runs' new reports: the shown ones again, and the suite page when it was its suite."""
        folder = Path(target).resolve()
        inside = {d for r in self._cache.values() if (d := r.run_dir)
                  and (Path(d).resolve() == folder or folder in Path(d).resolve().parents)}
        self._cache = {k: v for k, v in self._cache.items() if v.run_dir not in inside}
        self._show(self.history.checked_rows())
        out = self.suite_view.out.resolve() if self.suite_view.out is not None else None
        if out is not None and (folder == out or out in folder.parents):
            self.suite_view.refresh()
        self.sig_status_changed.emit(f"Checked {folder.name} against training data")

    def _choose_chart_file(self, kind: str) -> None:
        pattern = "PNG images (*.png)" if kind == "png" else "SVG drawings (*.svg)"
        path, _ = QFileDialog.getSaveFileName(self, f"Export chart as {kind.upper()}",
                                              str(Path.home() / f"benchmark-chart.{kind}"), pattern)
        if not path:
            return
        try:
            written = self.chart.export_png(path) if kind == "png" else self.chart.export_svg(path)
        except OSError as exc:
            QMessageBox.warning(self, "Export failed", f"The chart could not be saved: {exc}")
            return
        self.sig_status_changed.emit(f"Saved {written}")

    # -- life cycle -----------------------------------------------------------

    def active_runs(self) -> list[QueuedRun]:
        """The benchmark running now (it goes on without the window unless stopped)."""
        return [self.queue.current] if self.queue.current is not None else []

    def stop_all(self) -> None:
        """Cancel what waits and ask the running worker to stop (it writes a partial summary, resumable)."""
        self.queue.stop_all()

    def shutdown(self) -> None:
        """Stop following: a running benchmark goes on and is attached again at the next start."""
        self._live_timer.stop()
        self.setup.task_choice.shutdown()
        self.verify_panel.shutdown()
        self.queue.shutdown()
        if self.rescore_bar.runner.is_running():
            self.rescore_bar.runner.kill_now()
        if self.contamination_dialog is not None:
            self.contamination_dialog.shutdown()
        if self._owns_store:
            self.store.close()
