"""The model manager tab: models found on this computer, their details, and folders.

Discovery and inspection read files, so they run on the TaskManager's threads;
results come back to this widget on the main thread. A refresh started while
another runs wins: older results are dropped.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from PySide6.QtCore import QFileSystemWatcher, QItemSelection, QSortFilterProxyModel, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from medalpaca_desktop.core.events import Event, Progress, Result
from medalpaca_desktop.core.model_info import DiscoveryProblem, ModelInfo
from medalpaca_desktop.core.models import SKIP_DIRS, USER_FOLDER_DEPTH, discover_models, inspect_model
from medalpaca_desktop.core.settings import AppSettings
from medalpaca_desktop.hub import downloads_dir
from medalpaca_desktop.ui.empty_state import EmptyState
from medalpaca_desktop.ui.icons import app_icon
from medalpaca_desktop.ui.jobs import JobOutcome, PipeJob
from medalpaca_desktop.ui.models.details import ModelDetailsPane
from medalpaca_desktop.ui.models.download_dialog import DownloadDialog
from medalpaca_desktop.ui.models.table_model import SORT_ROLE, ModelTableModel
from medalpaca_desktop.ui.settings_store import SettingsStore
from medalpaca_desktop.ui.workers import TaskManager, describe_exception

INSPECT_FILTER = "Models (*.gguf config.json adapter_config.json);;All files (*)"

DiscoveryResult = tuple[list[ModelInfo], list[DiscoveryProblem]]
WATCH_DEBOUNCE_MS = 1000  # files added to a model folder show up this long after the last change
MAX_WATCHED_FOLDERS = 2000  # inotify watches are a shared, limited resource


def searched_folders(settings: AppSettings) -> list[Path]:
    """The user's model folders, then the app's downloads folder (always searched once it exists)."""
    folders = [Path(p) for p in settings.model_folders]
    downloads = downloads_dir()
    if downloads.is_dir():
        folders.append(downloads)
    return folders


def watch_targets(folders: list[Path], depth: int = USER_FOLDER_DEPTH, limit: int = MAX_WATCHED_FOLDERS) -> list[str]:
    """The folders and their visible sub-folders down to the discovery depth (for QFileSystemWatcher)."""
    found: list[str] = []
    stack = [(Path(f).expanduser(), 0) for f in reversed(folders)]
    while stack and len(found) < limit:
        folder, level = stack.pop()
        if not folder.is_dir():
            continue
        found.append(str(folder))
        if level >= depth:
            continue
        try:
            subdirs = sorted(e.path for e in os.scandir(folder)
                             if not e.name.startswith(".") and e.name not in SKIP_DIRS and e.is_dir())
        except OSError:
            continue
        stack.extend((Path(p), level + 1) for p in reversed(subdirs))
    return found


def convertible(info: ModelInfo | None) -> bool:
    """A Hugging Face folder whose weights are pickle only: what `medalpaca convert` takes."""
    return info is not None and info.pickle_weights and Path(info.path).is_dir()


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def where_searched(settings: AppSettings) -> str:
    """'the demo install, 2 of your folders and the Hugging Face cache'."""
    places = ["the demo install"]
    count = len(settings.model_folders)
    if count:
        places.append("your folder" if count == 1 else f"{count} of your folders")
    if settings.scan_hf_cache:
        places.append("the Hugging Face cache")
    if settings.scan_other_apps:
        places.append("other apps' model folders")
    return ", ".join(places[:-1]) + " and " + places[-1]


class InspectDialog(QDialog):
    """Shows one inspected file in the details pane (modeless: nothing waits on it)."""

    def __init__(self, info: ModelInfo, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Model details: {info.name}")
        self.details = ModelDetailsPane()
        self.details.show_model(info)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.details)
        layout.addWidget(buttons)
        self.resize(560, 640)


class ModelManager(QWidget):
    """Lists discovered models, shows the selected one, manages model folders."""

    sig_status_changed = Signal(str)
    sig_discovery_finished = Signal(object, object)  # list[ModelInfo], list[DiscoveryProblem]
    sig_inspection_finished = Signal(object)  # ModelInfo, or str (the error) when it failed

    def __init__(self, store: SettingsStore, tasks: TaskManager, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._store = store
        self._tasks = tasks
        self._generation = 0
        self._searching = False
        self._has_results = False
        self.problems: list[DiscoveryProblem] = []
        self.inspect_dialog: InspectDialog | None = None
        self.download_dialog: DownloadDialog | None = None
        self._select_after_refresh: str | None = None

        # Files added to a model folder later appear without a restart (debounced re-discovery).
        self.folder_watcher = QFileSystemWatcher(self)
        self.folder_watcher.directoryChanged.connect(self._on_folder_watcher_changed)
        self._watch_timer = QTimer(self, singleShot=True, interval=WATCH_DEBOUNCE_MS)
        self._watch_timer.timeout.connect(self._on_watch_timer_timeout)

        self.table_model = ModelTableModel(self)
        self._proxy = QSortFilterProxyModel(self)
        self._proxy.setSourceModel(self.table_model)
        self._proxy.setSortRole(SORT_ROLE)

        self._build_header()
        self._build_table()
        self.details = ModelDetailsPane()
        self._build_bottom()

        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(self._stack)
        top.addWidget(self.details)
        top.setStretchFactor(0, 3)
        top.setStretchFactor(1, 2)
        top.setChildrenCollapsible(False)
        top.setSizes([900, 360])
        layout = QVBoxLayout(self)
        layout.addLayout(self._header)
        layout.addWidget(top, 1)
        layout.addWidget(self._bottom)

        self._store.sig_settings_changed.connect(self._on_store_settings_changed)
        self._show_folders(self._store.settings)

    # -- building ---------------------------------------------------------------

    def _build_header(self) -> None:
        title = QLabel("Models on this computer")
        font = title.font()
        font.setPointSizeF(font.pointSizeF() * 1.25)
        font.setBold(True)
        title.setFont(font)
        self.summary_label = QLabel("Searching for models…")
        self.summary_label.setWordWrap(True)
        texts = QVBoxLayout()
        texts.setSpacing(2)
        texts.addWidget(title)
        texts.addWidget(self.summary_label)
        self.inspect_button = QPushButton("Inspect file…")
        self.inspect_button.setToolTip("Read one model file's metadata without adding its folder")
        self.inspect_button.clicked.connect(self.choose_file_to_inspect)
        self.download_button = QPushButton("Download…")
        self.download_button.setToolTip("Download a model from the Hugging Face hub (the app's only online step)")
        self.download_button.clicked.connect(lambda: self.open_download_dialog())
        self.convert_button = QPushButton("Convert to safetensors")
        self.convert_button.setToolTip("Write a safetensors copy of a model that ships pickle weights (.bin): only "
                                       "tensors are read, no code from the file runs (medalpaca convert)")
        self.convert_button.clicked.connect(self.convert_selected)
        self.convert_button.setEnabled(False)
        self.converter = PipeJob(self)
        self.converter.sig_event_received.connect(self._on_converter_event_received)
        self.converter.sig_finished.connect(self._on_converter_finished)
        self._converted: str | None = None
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip(f"Search all model folders again ({QKeySequence('F5').toString()})")
        self.refresh_button.clicked.connect(self.refresh)
        self._header = QHBoxLayout()
        self._header.addLayout(texts, 1)
        self._header.addWidget(self.convert_button, 0, Qt.AlignmentFlag.AlignBottom)
        self._header.addWidget(self.download_button, 0, Qt.AlignmentFlag.AlignBottom)
        self._header.addWidget(self.inspect_button, 0, Qt.AlignmentFlag.AlignBottom)
        self._header.addWidget(self.refresh_button, 0, Qt.AlignmentFlag.AlignBottom)

    def _build_table(self) -> None:
        view = QTableView()
        view.setModel(self._proxy)
        view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        view.setAlternatingRowColors(True)
        view.setSortingEnabled(True)
        view.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # discovery order (demo first) until a click
        view.setWordWrap(True)  # a narrow Source column wraps the demo label instead of hiding it
        view.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        view.verticalHeader().hide()
        view.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        view.setShowGrid(False)
        header = view.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        header.setHighlightSections(False)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        view.selectionModel().selectionChanged.connect(self._on_table_selection_changed)
        self.table_view = view

        self.empty_state = EmptyState(
            "No models found",
            "Add a folder that holds .gguf files or Hugging Face model folders (a folder with config.json "
            "and .safetensors weights). The app also looks in the Hugging Face cache and in the model "
            "folders of LM Studio, GPT4All, Jan and Ollama.",
            icon=app_icon("models"),
            action_text="Add folder…",
        )
        self.empty_state.sig_action_requested.connect(self.choose_folder)
        self.searching_state = EmptyState("Searching for models…", "Reading model files' metadata; "
                                          "no weights are loaded.", icon=app_icon("models"))
        self._stack = QStackedWidget()
        for page in (self.searching_state, self.empty_state, self.table_view):
            self._stack.addWidget(page)

    def _build_bottom(self) -> None:
        folders_box = QGroupBox("Your model folders")
        self.folder_list = QListWidget()
        self.folder_list.setToolTip(AppSettings.field_help("model_folders"))
        self.folder_list.setMaximumHeight(84)
        self.folder_list.itemSelectionChanged.connect(self._on_folder_list_selection_changed)
        self.add_folder_button = QPushButton("Add folder…")
        self.add_folder_button.clicked.connect(self.choose_folder)
        self.remove_folder_button = QPushButton("Remove folder")
        self.remove_folder_button.setToolTip("Stop searching the selected folder (its files stay on disk)")
        self.remove_folder_button.setEnabled(False)
        self.remove_folder_button.clicked.connect(self._on_remove_folder_button_clicked)
        buttons = QVBoxLayout()
        buttons.addWidget(self.add_folder_button)
        buttons.addWidget(self.remove_folder_button)
        buttons.addStretch(1)
        row = QHBoxLayout(folders_box)
        row.addWidget(self.folder_list, 1)
        row.addLayout(buttons)

        self.problems_box = QGroupBox("Problems")
        self.problem_list = QListWidget()
        self.problem_list.setMaximumHeight(84)
        self.problem_list.setWordWrap(True)
        problems_layout = QVBoxLayout(self.problems_box)
        problems_layout.addWidget(self.problem_list)
        self.problems_box.hide()

        self._bottom = QWidget()
        bottom = QHBoxLayout(self._bottom)
        bottom.setContentsMargins(0, 0, 0, 0)
        bottom.addWidget(folders_box, 1)
        bottom.addWidget(self.problems_box, 1)

    # -- discovery ----------------------------------------------------------------

    def is_searching(self) -> bool:
        return self._searching

    @Slot()
    def refresh(self) -> None:
        """Search every place again, in the background."""
        settings = self._store.settings
        folders = searched_folders(settings)
        self._generation += 1
        generation = self._generation
        self._searching = True
        self.refresh_button.setEnabled(False)
        self.summary_label.setText("Searching for models…")
        self.sig_status_changed.emit("Searching for models…")
        if not self._has_results:
            self._stack.setCurrentWidget(self.searching_state)

        def task() -> DiscoveryResult:
            return discover_models(folders, scan_hf_cache=settings.scan_hf_cache,
                                   scan_other_apps=settings.scan_other_apps)

        self._tasks.run_in_background(
            task,
            lambda result: self._on_discovery_done(generation, settings, result),
            lambda exc: self._on_discovery_failed(generation, exc),
        )
        self._tasks.run_in_background(lambda: watch_targets(folders), self._watch_folders, lambda exc: None)

    def _on_discovery_done(self, generation: int, settings: AppSettings, result: DiscoveryResult) -> None:
        if generation != self._generation:
            return  # a newer refresh is on its way
        models, problems = result
        self._searching = False
        self._has_results = True
        self.refresh_button.setEnabled(True)
        selected = self.selected_model()
        self.table_model.set_models(models)
        self._show_problems(problems)
        self._stack.setCurrentWidget(self.table_view if models else self.empty_state)
        self.details.setVisible(bool(models))
        wanted, self._select_after_refresh = self._select_after_refresh, None
        if not (wanted and self.select_model(wanted)):
            self._select_path(selected.path if selected else None)
        count = _plural(len(models), "model") if models else "No models"
        summary = f"{count} found in {where_searched(settings)}."
        if problems:
            summary += f" {_plural(len(problems), 'file')} could not be read (see Problems)."
        self.summary_label.setText(summary)
        self.sig_status_changed.emit(f"Model search finished: {_plural(len(models), 'model')}, "
                                     f"{_plural(len(problems), 'problem')}.")
        self.sig_discovery_finished.emit(models, problems)

    def _on_discovery_failed(self, generation: int, exc: BaseException) -> None:
        if generation != self._generation:
            return
        self._searching = False
        self.refresh_button.setEnabled(True)
        message = f"Searching for models failed: {describe_exception(exc)}"
        self._show_problems([DiscoveryProblem("(search)", message)])
        if not self._has_results:
            self._stack.setCurrentWidget(self.empty_state)
        self.summary_label.setText(message)
        self.sig_status_changed.emit(message)
        self.sig_discovery_finished.emit(self.table_model.models(), self.problems)

    def _show_problems(self, problems: list[DiscoveryProblem]) -> None:
        self.problems = list(problems)
        self.problem_list.clear()
        for problem in problems:
            item = QListWidgetItem(f"{problem.path}: {problem.message}")
            item.setToolTip(f"{problem.path}\n{problem.message}")
            self.problem_list.addItem(item)
        self.problems_box.setTitle(f"Problems ({len(problems)}): could not be read")
        self.problems_box.setVisible(bool(problems))

    # -- selection ----------------------------------------------------------------

    def selected_model(self) -> ModelInfo | None:
        rows = self.table_view.selectionModel().selectedRows()
        if not rows:
            return None
        return self.table_model.model_at(self._proxy.mapToSource(rows[0]).row())

    def select_model(self, path: str) -> bool:
        row = self.table_model.row_of(path)
        if row < 0:
            return False
        index = self._proxy.mapFromSource(self.table_model.index(row, 0))
        self.table_view.selectRow(index.row())
        self.table_view.scrollTo(index)
        return True

    def _select_path(self, path: str | None) -> None:
        if (path and self.select_model(path)) or self._proxy.rowCount() == 0:
            return
        self.table_view.selectRow(0)

    @Slot(QItemSelection, QItemSelection)
    def _on_table_selection_changed(self, selected: QItemSelection, deselected: QItemSelection) -> None:
        info = self.selected_model()
        self.details.show_model(info)
        self.convert_button.setEnabled(convertible(info) and not self.converter.is_running())

    # -- converting pickle weights -------------------------------------------------

    def convert_selected(self) -> bool:
        """Start `medalpaca convert` on the selected pickle model; False when there is nothing to convert."""
        info = self.selected_model()
        if not convertible(info) or self.converter.is_running():
            return False
        assert info is not None
        self.convert_button.setEnabled(False)
        self._converted = None
        self.sig_status_changed.emit(f"Converting {info.name} to safetensors…")
        self.converter.start(sys.executable, ["-m", "medalpaca_desktop", "convert", info.path, "--jsonl"])
        return True

    @Slot(object)
    def _on_converter_event_received(self, event: Event) -> None:
        if isinstance(event, Progress) and event.total:
            self.sig_status_changed.emit(f"Converting to safetensors: shard {int(event.current)}/{int(event.total)}")
        elif isinstance(event, Result) and event.data.get("path"):
            self._converted = str(event.data["path"])

    @Slot(object)
    def _on_converter_finished(self, outcome: JobOutcome) -> None:
        if outcome.ok and self._converted:
            self.sig_status_changed.emit(f"Wrote {self._converted}: it loads like any model.")
            self._select_after_refresh = self._converted
            self.refresh()
        else:
            self.sig_status_changed.emit("Not converted.")
            QMessageBox.warning(self, "Convert to safetensors", f"Not converted: {outcome.describe()}")
        self.convert_button.setEnabled(convertible(self.selected_model()))

    # -- folders ------------------------------------------------------------------

    def _show_folders(self, settings: AppSettings) -> None:
        self.folder_list.clear()
        for folder in settings.model_folders:
            item = QListWidgetItem(folder)
            item.setToolTip(folder)
            self.folder_list.addItem(item)
        if not settings.model_folders:
            hint = QListWidgetItem("No folders yet: add one that holds .gguf files or model folders.")
            hint.setFlags(Qt.ItemFlag.NoItemFlags)
            self.folder_list.addItem(hint)
        self.remove_folder_button.setEnabled(False)

    def folders(self) -> list[str]:
        return self._store.settings.model_folders

    @Slot()
    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a model folder", str(Path.home()))
        if folder:
            self.add_folder(folder)

    def add_folder(self, folder: str | Path) -> bool:
        """Remember `folder` in the settings (then search again); False if already there."""
        folder = str(Path(folder).expanduser().absolute())
        settings = self._store.settings
        if folder in settings.model_folders:
            self.sig_status_changed.emit(f"{folder} is already one of your model folders.")
            return False
        settings.model_folders.append(folder)
        return self._save(settings)

    def remove_folder(self, folder: str) -> bool:
        settings = self._store.settings
        if folder not in settings.model_folders:
            return False
        settings.model_folders.remove(folder)
        return self._save(settings)

    def _save(self, settings: AppSettings) -> bool:
        try:
            self._store.save(settings)
        except OSError as exc:
            QMessageBox.warning(self, "Settings not saved", f"Could not save the settings: {describe_exception(exc)}")
            return False
        return True

    @Slot()
    def _on_remove_folder_button_clicked(self) -> None:
        item = self.folder_list.currentItem()
        if item is not None and item.flags() & Qt.ItemFlag.ItemIsSelectable:
            self.remove_folder(item.text())

    @Slot()
    def _on_folder_list_selection_changed(self) -> None:
        item = self.folder_list.currentItem()
        selectable = item is not None and bool(item.flags() & Qt.ItemFlag.ItemIsSelectable)
        self.remove_folder_button.setEnabled(selectable and bool(self.folder_list.selectedItems()))

    @Slot(object)
    def _on_store_settings_changed(self, settings: AppSettings) -> None:
        self._show_folders(settings)
        self.refresh()

    # -- inspecting one file ------------------------------------------------------

    @Slot()
    def choose_file_to_inspect(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Inspect a model file", str(Path.home()), INSPECT_FILTER)
        if path:
            self.inspect_path(path)

    def inspect_path(self, path: str | Path) -> None:
        """Read one model's metadata in the background, then show it (or the error)."""
        path = Path(path)
        if path.name in ("config.json", "adapter_config.json"):
            path = path.parent  # a Hugging Face model or adapter is its folder
        self.sig_status_changed.emit(f"Inspecting {path}…")
        self._tasks.run_in_background(lambda: inspect_model(path), self._on_inspect_done, self._on_inspect_failed)

    def _on_inspect_done(self, info: ModelInfo) -> None:
        self.sig_status_changed.emit(f"Read {info.path}")
        self.inspect_dialog = InspectDialog(info, self)
        self.inspect_dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.inspect_dialog.show()
        self.sig_inspection_finished.emit(info)

    def _on_inspect_failed(self, exc: BaseException) -> None:
        message = describe_exception(exc)
        self.sig_status_changed.emit("Could not read that model file.")
        QMessageBox.warning(self, "Cannot read this model", message)
        self.sig_inspection_finished.emit(message)

    # -- downloading ----------------------------------------------------------------

    @Slot()
    def open_download_dialog(self, repo_id: str | None = None) -> DownloadDialog:
        """Show the Download dialog (one at a time, modeless); the chat tab's "Download…" calls this."""
        if self.download_dialog is None:
            self.download_dialog = DownloadDialog(self)
            self.download_dialog.sig_model_downloaded.connect(self._on_download_dialog_model_downloaded)
        if repo_id and not self.download_dialog.is_busy():
            if not self.download_dialog.select_catalog_entry(repo_id):
                self.download_dialog.repo_edit.setText(repo_id)
        self.download_dialog.show()
        self.download_dialog.raise_()
        self.download_dialog.activateWindow()
        return self.download_dialog

    @Slot(str)
    def _on_download_dialog_model_downloaded(self, path: str) -> None:
        self._select_after_refresh = path
        self.sig_status_changed.emit(f"Downloaded {path}")
        self.refresh()

    # -- watching folders -----------------------------------------------------------

    def _watch_folders(self, targets: list[str]) -> None:
        watched = set(self.folder_watcher.directories())
        wanted = set(targets)
        if watched - wanted:
            self.folder_watcher.removePaths(sorted(watched - wanted))
        if wanted - watched:
            self.folder_watcher.addPaths(sorted(wanted - watched))

    def watched_folders(self) -> list[str]:
        return sorted(self.folder_watcher.directories())

    @Slot(str)
    def _on_folder_watcher_changed(self, path: str) -> None:
        self._watch_timer.start()  # restarts: a copy in progress refreshes once, after it settles

    @Slot()
    def _on_watch_timer_timeout(self) -> None:
        self.sig_status_changed.emit("A model folder changed: searching again…")
        self.refresh()
