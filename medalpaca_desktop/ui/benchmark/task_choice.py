"""The Questions group's "Task" choice: your own file, or a task or group of the medical suite.

Lists the catalog (resources/benchmark_tasks.yaml through bench.tasks, light: no question is
read here) with each entry's download state, says where the chosen task comes from and
what to know about its result (its caveat), and fetches the missing tasks through the
download worker (task_downloads.py) with progress and a Stop.
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from bench.tasks import OFFLINE_MESSAGE, Catalog, TaskError, TaskSpec, load_catalog
from medalpaca_desktop.ui.benchmark.task_downloads import DownloadReport, TaskDownloads

OWN = ""  # the user's own questions (a file or folder): the panel's file chooser
SEVERAL = "+"  # the tasks ticked in the list below the choice
ALL = "all"
OWN_TITLE = "Your own questions (file or folder)"
GROUP_TITLES = {"usmle": "USMLE self-assessment", ALL: "All medical tasks"}
KEY_ROLE = Qt.ItemDataRole.UserRole + 1


def group_title(name: str, count: int) -> str:
    """'multimedqa — 9 tasks', 'USMLE self-assessment', 'All medical tasks — 10 tasks'."""
    title = GROUP_TITLES.get(name, name)
    return title if count == 1 else f"{title} — {count} tasks"


def mark(specs: list[TaskSpec]) -> str:
    """'downloaded', 'not downloaded' or '3 of 9 downloaded'."""
    have = sum(1 for s in specs if s.downloaded())
    if have == len(specs):
        return "downloaded"
    if have == 0 or len(specs) == 1:
        return "not downloaded"
    return f"{have} of {len(specs)} downloaded"


def source_line(spec: TaskSpec) -> str:
    """'openlifescienceai/medmcqa, validation split, 4,183 questions, license Apache-2.0'."""
    return f"{spec.repo_id}, {spec.split} split, {spec.questions:,} questions, license {spec.license}"


def describe_tasks(specs: list[TaskSpec]) -> str:
    """Plain words (rich text) for the chosen tasks: their source, the download state, the caveats."""
    if len(specs) == 1:
        spec = specs[0]
        head = f"<b>{html.escape(spec.title)}</b>: {html.escape(source_line(spec))}."
    else:
        repos = sorted({s.repo_id for s in specs})
        licenses = ", ".join(dict.fromkeys(s.license for s in specs))
        head = (f"<b>{len(specs)} tasks</b>, {sum(s.questions for s in specs):,} questions in all, from "
                f"{len(repos)} Hugging Face dataset{'s' if len(repos) != 1 else ''} "
                f"(licenses: {html.escape(licenses)}).")
    missing = [s for s in specs if not s.downloaded()]
    if not missing:
        state = "Downloaded: it runs offline." if len(specs) == 1 else "All downloaded: they run offline."
    elif len(missing) == len(specs):
        state = "Not downloaded yet: click Download first."
    else:
        state = (f"Not downloaded yet: {html.escape(', '.join(s.title for s in missing), quote=False)}. Click "
                 f"Download to fetch {'it' if len(missing) == 1 else 'them'}.")
    caveats = [f"<b>{html.escape(s.title)}</b>: {html.escape(s.caveat, quote=False)}" if len(specs) > 1
               else f"Note: {html.escape(s.caveat, quote=False)}" for s in specs if s.caveat]
    return "<br>".join([head, state, *caveats])


class TaskChoice(QWidget):
    """The combo box of tasks and groups, the chosen tasks' source and caveats, and their download."""

    sig_changed = Signal()  # the choice or a download state changed
    sig_downloads_finished = Signal(object)  # DownloadReport

    def __init__(self, parent: QWidget | None = None, catalog: Catalog | None = None) -> None:
        super().__init__(parent)
        try:
            self.catalog: Catalog | None = catalog or load_catalog()
            problem = ""
        except TaskError as exc:
            self.catalog, problem = None, str(exc)
        self.downloads = TaskDownloads(self)
        self.downloads.sig_task_started.connect(self._on_downloads_task_started)
        self.downloads.sig_progress_changed.connect(self._on_downloads_progress_changed)
        self.downloads.sig_task_finished.connect(self._on_downloads_task_finished)
        self.downloads.sig_finished.connect(self._on_downloads_finished)
        self.last_report: DownloadReport | None = None
        self._current_text = ""

        self.combo = QComboBox()
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(14)
        self.combo.setToolTip("Score your own questions, or a published medical benchmark task (or a group of "
                              "them) the way lm-evaluation-harness scores it")
        self.combo.currentIndexChanged.connect(self._on_combo_current_index_changed)
        self.task_list = QListWidget()
        self.task_list.setToolTip("Tick the tasks to score")
        self.task_list.setMaximumHeight(150)
        self.task_list.itemChanged.connect(self._on_task_list_item_changed)
        self.info_label = QLabel(problem)
        self.info_label.setWordWrap(True)
        self.info_label.setTextFormat(Qt.TextFormat.RichText)
        self.info_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.download_button = QPushButton("Download")
        self.download_button.setToolTip("Fetch the missing tasks from the Hugging Face hub, one after the other "
                                        "(the only time the benchmark goes online)")
        self.download_button.clicked.connect(self.download)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop the download; the partial file is kept and the next download resumes it")
        self.stop_button.clicked.connect(self.downloads.stop)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setTextVisible(True)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Task:"))
        row.addWidget(self.combo, 1)
        download_row = QHBoxLayout()
        download_row.setContentsMargins(0, 0, 0, 0)
        download_row.addWidget(self.download_button)
        download_row.addWidget(self.stop_button)
        download_row.addWidget(self.progress_bar, 1)
        self.details = QWidget()  # everything below the combo: hidden for your own questions
        details_layout = QVBoxLayout(self.details)
        details_layout.setContentsMargins(0, 0, 0, 0)
        details_layout.addWidget(self.task_list)
        details_layout.addWidget(self.info_label)
        details_layout.addLayout(download_row)
        details_layout.addWidget(self.status_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.details)
        self._fill()
        self._update()

    # -- entries --------------------------------------------------------------

    def _entries(self) -> list[tuple[str, list[TaskSpec]]]:
        """(name, tasks) in the order shown: the groups, everything, then each task on its own."""
        if self.catalog is None:
            return []
        entries = [(name, self.catalog.members(name)) for name in self.catalog.groups]
        entries.append((ALL, list(self.catalog.tasks)))
        for spec in self.catalog.tasks:
            if [m.key for m in self.catalog.members(spec.key)] != [spec.key]:  # "usmle" is its own group
                entries.append((spec.key, [spec]))
        return entries

    def _entry_text(self, name: str, specs: list[TaskSpec]) -> str:
        title = group_title(name, len(specs)) if name == ALL or (self.catalog and name in self.catalog.groups) \
            else specs[0].title
        return f"{title} · {mark(specs)}"

    def _fill(self) -> None:
        current = self.combo.currentData() if self.combo.count() else OWN
        self.combo.blockSignals(True)
        self.combo.clear()
        self.combo.addItem(OWN_TITLE, OWN)
        for name, specs in self._entries():
            self.combo.addItem(self._entry_text(name, specs), name)
            tip = "\n".join(f"{s.title}: {source_line(s)}" for s in specs)
            self.combo.setItemData(self.combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        if self.catalog is not None:
            self.combo.addItem("Several tasks (tick them below)", SEVERAL)
        self.combo.setCurrentIndex(max(0, self.combo.findData(current)))
        self.combo.blockSignals(False)
        ticked = set(self._ticked())
        self.task_list.blockSignals(True)
        self.task_list.clear()
        for spec in self.catalog.tasks if self.catalog is not None else ():
            item = QListWidgetItem(f"{spec.title} · {mark([spec])}")
            item.setData(KEY_ROLE, spec.key)
            item.setToolTip(source_line(spec))
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if spec.key in ticked else Qt.CheckState.Unchecked)
            self.task_list.addItem(item)
        self.task_list.blockSignals(False)

    def showEvent(self, event: QShowEvent) -> None:
        """A task downloaded meanwhile (in a terminal, say) is marked when the panel is shown again."""
        super().showEvent(event)
        if not self.downloads.is_running():
            self._fill()
            self._update()

    def refresh_marks(self) -> None:
        """Look at the download folders again (after a download, or when the tab is shown)."""
        self._fill()
        self._update()
        self.sig_changed.emit()

    # -- the choice -------------------------------------------------------------

    def selection(self) -> str:
        """'' (your own questions), a group or task name, or a comma list of the ticked tasks."""
        name = self.combo.currentData() or OWN
        return ",".join(self._ticked()) if name == SEVERAL else name

    def is_suite(self) -> bool:
        return self.selection() != OWN or self.combo.currentData() == SEVERAL

    def specs(self) -> list[TaskSpec]:
        """The chosen tasks in catalog order (empty for your own questions)."""
        name = self.selection()
        if not name or self.catalog is None:
            return []
        return self.catalog.expand(name)

    def missing(self) -> list[TaskSpec]:
        return [s for s in self.specs() if not s.downloaded()]

    def select(self, name: str) -> bool:
        """Choose an entry by its name ('' for your own questions, 'multimedqa', 'medmcqa', ...)."""
        index = self.combo.findData(name)
        if index < 0:
            return False
        self.combo.setCurrentIndex(index)
        return True

    def tick_tasks(self, keys: list[str]) -> None:
        """Choose several tasks: 'Several tasks' with exactly these ticked."""
        self.task_list.blockSignals(True)
        for i in range(self.task_list.count()):
            item = self.task_list.item(i)
            item.setCheckState(Qt.CheckState.Checked if item.data(KEY_ROLE) in keys else Qt.CheckState.Unchecked)
        self.task_list.blockSignals(False)
        self.select(SEVERAL)
        self._update()
        self.sig_changed.emit()

    def _ticked(self) -> list[str]:
        return [self.task_list.item(i).data(KEY_ROLE) for i in range(self.task_list.count())
                if self.task_list.item(i).checkState() == Qt.CheckState.Checked]

    @Slot(int)
    def _on_combo_current_index_changed(self, _index: int) -> None:
        self._update()
        self.sig_changed.emit()

    @Slot(QListWidgetItem)
    def _on_task_list_item_changed(self, _item: QListWidgetItem) -> None:
        self._update()
        self.sig_changed.emit()

    def _update(self) -> None:
        several = self.combo.currentData() == SEVERAL
        self.details.setVisible(self.is_suite() or self.catalog is None)  # or why the catalog cannot be read
        self.task_list.setVisible(several)
        specs = self.specs()
        if specs:
            self.info_label.setText(describe_tasks(specs))
        elif several:
            self.info_label.setText("Tick one or more tasks.")
        busy = self.downloads.is_running()
        missing = self.missing()
        self.download_button.setText(f"Download ({len(missing)} missing)" if len(missing) > 1 else "Download")
        self.download_button.setEnabled(bool(missing) and not busy)
        self.download_button.setVisible(bool(missing) or busy)
        self.stop_button.setVisible(busy)
        self.progress_bar.setVisible(busy)
        self.combo.setEnabled(not busy)
        self.task_list.setEnabled(not busy)

    def run_blocker(self) -> str:
        """Why the chosen tasks cannot run now ('' when they can): for the Run button's tooltip."""
        if self.downloads.is_running():
            return "The tasks are being downloaded; Run is possible once they are."
        if self.combo.currentData() == SEVERAL and not self._ticked():
            return "Tick one or more tasks first."
        missing = self.missing()
        if missing:
            names = ", ".join(s.title for s in missing)
            verb = "is" if len(missing) == 1 else "are"
            return f"Download first (the Download button above): {names} {verb} not downloaded yet. {OFFLINE_MESSAGE}"
        return ""

    # -- downloading ------------------------------------------------------------

    @Slot()
    def download(self) -> bool:
        missing = self.missing()
        if not self.downloads.start(missing):
            return False
        self.status_label.setStyleSheet("")
        self._update()
        self.sig_changed.emit()
        return True

    @Slot(object, int, int)
    def _on_downloads_task_started(self, spec: TaskSpec, position: int, count: int) -> None:
        self.progress_bar.setRange(0, 0)  # busy until the worker knows the size
        self._current_text = f"{spec.title} ({position} of {count})"
        self.status_label.setText(f"Connecting to the Hugging Face hub for {self._current_text}…")

    @Slot(float, str)
    def _on_downloads_progress_changed(self, fraction: float, text: str) -> None:
        if fraction >= 0:
            self.progress_bar.setRange(0, 1000)
            self.progress_bar.setValue(int(1000 * fraction))
        self.status_label.setText(f"{self._current_text}: {text}")

    @Slot(object, bool)
    def _on_downloads_task_finished(self, _spec: TaskSpec, _ok: bool) -> None:
        self._fill()  # its mark changes at once, the batch goes on

    @Slot(object)
    def _on_downloads_finished(self, report: DownloadReport) -> None:
        self.last_report = report
        titles = {s.key: s.title for s in (self.catalog.tasks if self.catalog else ())}
        self.status_label.setText(report.describe(titles))
        self.status_label.setStyleSheet("" if report.ok or report.stopped else "color: #b3261e;")
        self.refresh_marks()
        self.sig_downloads_finished.emit(report)

    def shutdown(self) -> None:
        if self.downloads.is_running():
            self.downloads.kill_now()
