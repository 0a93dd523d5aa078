"""Download a model from the Hugging Face hub: the only place the app goes online.

The dialog never touches the network itself (and never imports huggingface_hub):
"Check size" runs `medalpaca download REPO --list --jsonl` and "Download" runs
`medalpaca download REPO --include FILE... --jsonl`, each through a PipeJob, and
shows the worker's events: the size before, then progress, speed and ETA, and the
sha256 check. Cancel stops the worker; the partial file stays, and downloading the
same model again resumes it.
"""

from __future__ import annotations

import html
import re
import shlex
import sys
from typing import Any

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from medalpaca_desktop.core.events import Event, Progress, Result
from medalpaca_desktop.core.jobs import RunStatus
from medalpaca_desktop.core.model_info import format_size
from medalpaca_desktop.core.paths import free_space
from medalpaca_desktop.core.progress import describe_download
from medalpaca_desktop.hub import downloads_dir, gated_advice, is_valid_repo_id, repo_folder
from medalpaca_desktop.hub.catalog import CatalogEntry, CatalogError, load_catalog
from medalpaca_desktop.ui.jobs import JobOutcome, PipeJob

ONLINE_NOTE = ("This is the only place the app goes online: it connects to huggingface.co only when you "
               "click Check size or Download. Chats, training and benchmarks never leave this computer.")
PATH_ROLE = Qt.ItemDataRole.UserRole


def download_command(repo_id: str, *extra: str) -> list[str]:
    """The worker command line (also what a person could type in a terminal)."""
    return [sys.executable, "-m", "medalpaca_desktop", "download", repo_id, *extra, "--jsonl"]


def _pattern(path: str) -> str:
    """An --include pattern that matches exactly this file name."""
    return re.sub(r"([*?\[])", r"[\1]", path)


class DownloadDialog(QDialog):
    """Repo id or catalog pick -> Check size -> choose files -> Download (progress, Cancel)."""

    sig_model_downloaded = Signal(str)  # the downloaded model's path (a .gguf file or a folder)

    def __init__(self, parent: QWidget | None = None, catalog: list[CatalogEntry] | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Download a model")
        self.listing: dict[str, Any] | None = None
        self.last_result: dict[str, Any] | None = None
        self.last_outcome: JobOutcome | None = None
        self._mode = "idle"  # idle / listing / downloading
        self._listed_repo = ""

        self.runner = PipeJob(self)
        self.runner.sig_event_received.connect(self._on_runner_event_received)
        self.runner.sig_progress_changed.connect(self._on_runner_progress_changed)
        self.runner.sig_finished.connect(self._on_runner_finished)

        try:
            self.catalog = catalog if catalog is not None else load_catalog()
            catalog_problem = ""
        except CatalogError as exc:
            self.catalog, catalog_problem = [], str(exc)

        note = QLabel(f"<b>{ONLINE_NOTE}</b>")
        note.setWordWrap(True)
        note.setObjectName("onlineNote")
        note.setFrameShape(QFrame.Shape.StyledPanel)
        note.setMargin(8)
        self.online_note = note

        # -- left: the catalog ------------------------------------------------
        self.catalog_list = QListWidget()
        self.catalog_list.setWordWrap(True)
        self.catalog_list.setSpacing(4)  # two-line entries must read as separate items
        self.catalog_list.setAlternatingRowColors(True)
        self.catalog_list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        for entry in self.catalog:
            tag = "medical" if entry.medical else "general"
            item = QListWidgetItem(f"{entry.name}\n{entry.repo_id} · ≈ {format_size(entry.size_bytes)} · {tag}")
            item.setData(PATH_ROLE, entry)
            item.setToolTip(f"{entry.note}\nLicense: {entry.license}")
            self.catalog_list.addItem(item)
        if catalog_problem:
            self.catalog_list.addItem(QListWidgetItem(f"The catalog could not be read: {catalog_problem}"))
        self.catalog_list.currentItemChanged.connect(self._on_catalog_list_current_item_changed)
        self.catalog_note = QLabel("Pick a model, or type any Hugging Face repo id on the right.")
        self.catalog_note.setWordWrap(True)
        catalog_box = QGroupBox("Suggested models")
        catalog_layout = QVBoxLayout(catalog_box)
        catalog_layout.addWidget(self.catalog_list, 1)
        catalog_layout.addWidget(self.catalog_note)

        # -- right: repo, files, destination -----------------------------------
        self.repo_edit = QLineEdit()
        self.repo_edit.setPlaceholderText("org/name, e.g. TheBloke/meditron-7B-GGUF")
        self.repo_edit.textChanged.connect(self._on_repo_edit_text_changed)
        self.repo_edit.returnPressed.connect(self.check_size)
        self.check_button = QPushButton("Check size")
        self.check_button.setToolTip("Ask the hub which files this model has and how big they are (downloads nothing)")
        self.check_button.clicked.connect(self.check_size)
        repo_row = QHBoxLayout()
        repo_row.addWidget(self.repo_edit, 1)
        repo_row.addWidget(self.check_button)

        self.file_list = QListWidget()
        self.file_list.setToolTip("Ticked files are downloaded. A GGUF repo holds one file per quantization: "
                                  "one is enough.")
        self.file_list.itemChanged.connect(self._on_file_list_item_changed)
        self.size_label = QLabel("Check the size first: nothing is downloaded until you click Download.")
        self.size_label.setWordWrap(True)
        self.license_label = QLabel("")
        self.license_label.setWordWrap(True)
        self.license_label.setTextFormat(Qt.TextFormat.RichText)  # a gated repo's page is a link
        self.license_label.setOpenExternalLinks(True)
        self.license_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.dest_label = QLabel("")
        self.dest_label.setWordWrap(True)
        self.dest_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.command_edit = QLineEdit()
        self.command_edit.setReadOnly(True)
        self.command_edit.setToolTip("The same download from a terminal (copy it)")

        form = QFormLayout()
        form.addRow("Repo id:", repo_row)
        form.addRow("Files:", self.file_list)
        form.addRow("", self.size_label)
        form.addRow("License:", self.license_label)
        form.addRow("Saved to:", self.dest_label)
        form.addRow("Command:", self.command_edit)
        right = QWidget()
        right.setLayout(form)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(catalog_box)
        split.addWidget(right)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        split.setSizes([380, 520])  # the catalog's "org/name · size" lines need room
        split.setChildrenCollapsible(False)

        # -- bottom: progress and buttons --------------------------------------
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(0)
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setFormat("%p%")
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.download_button = QPushButton("Download")
        self.download_button.setDefault(True)
        self.download_button.clicked.connect(self.start_download)
        self.cancel_button = QPushButton("Cancel download")
        self.cancel_button.setToolTip("Stop now; the partial file is kept and the next download resumes it")
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.reject)
        buttons = QHBoxLayout()
        buttons.addWidget(self.status_label, 1)
        buttons.addWidget(self.download_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.close_button)

        layout = QVBoxLayout(self)
        layout.addWidget(note)
        layout.addWidget(split, 1)
        layout.addWidget(self.progress_bar)
        layout.addLayout(buttons)
        self.resize(980, 600)
        self._update_state()

    # -- choosing -------------------------------------------------------------------

    def repo_id(self) -> str:
        return self.repo_edit.text().strip()

    def selected_files(self) -> list[str]:
        return [self.file_list.item(i).data(PATH_ROLE) for i in range(self.file_list.count())
                if self.file_list.item(i).checkState() == Qt.CheckState.Checked]

    def select_catalog_entry(self, repo_id: str) -> bool:
        for row in range(self.catalog_list.count()):
            entry = self.catalog_list.item(row).data(PATH_ROLE)
            if isinstance(entry, CatalogEntry) and entry.repo_id == repo_id:
                self.catalog_list.setCurrentRow(row)
                return True
        return False

    def _catalog_entry(self, repo_id: str) -> CatalogEntry | None:
        return next((e for e in self.catalog if e.repo_id == repo_id), None)

    @Slot(QListWidgetItem, QListWidgetItem)
    def _on_catalog_list_current_item_changed(self, current: QListWidgetItem | None, previous: object) -> None:
        entry = current.data(PATH_ROLE) if current is not None else None
        if not isinstance(entry, CatalogEntry):
            return
        self.repo_edit.setText(entry.repo_id)
        self.catalog_note.setText(f"{entry.note}\nLicense: {entry.license}")
        self.size_label.setText(f"About {format_size(entry.size_bytes)} (catalog estimate). "
                                "Check size asks the hub for the exact files.")
        self.license_label.setText(html.escape(entry.license))

    @Slot(str)
    def _on_repo_edit_text_changed(self, text: str) -> None:
        if text.strip() != self._listed_repo:
            self.listing = None
            self.file_list.clear()
            valid = is_valid_repo_id(text.strip())
            self.command_edit.setText(shlex.join(["medalpaca", "download", text.strip()]) if valid else "")
        self._update_state()

    @Slot(QListWidgetItem)
    def _on_file_list_item_changed(self, item: QListWidgetItem) -> None:
        self._update_state()

    # -- running the worker ---------------------------------------------------------

    def is_busy(self) -> bool:
        return self.runner.is_running()

    @Slot()
    def check_size(self) -> None:
        """Ask the hub for the file list (worker: download --list)."""
        repo = self.repo_id()
        if self.is_busy() or not is_valid_repo_id(repo):
            self._update_state()
            return
        self._mode = "listing"
        self._listed_repo = repo
        self.listing = None
        self.file_list.clear()
        self.progress_bar.setRange(0, 0)  # busy until the hub answers
        self._set_status(f"Asking the Hugging Face hub about {repo}…")
        self._start(download_command(repo, "--list"))

    @Slot()
    def start_download(self) -> None:
        files = self.selected_files()
        if self.is_busy() or self.listing is None or not files:
            return
        self._mode = "downloading"
        self.last_result = None
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(0)
        self._set_status(f"Connecting to the hub to download {self.listing['repo_id']}…")
        self._start(self._download_args(files))

    def _download_args(self, files: list[str]) -> list[str]:
        assert self.listing is not None
        extra: list[str] = []
        for path in files:
            extra += ["--include", _pattern(path)]
        revision = self.listing.get("commit") or "main"
        return download_command(self.listing["repo_id"], *extra, "--revision", revision)

    def _start(self, command: list[str]) -> None:
        self.command_edit.setText(shlex.join(["medalpaca", *command[3:]]))
        self.command_edit.setCursorPosition(0)
        # The worker alone may go online; every other job keeps HF_HUB_OFFLINE=1.
        self.runner.start(command[0], command[1:], env={"HF_HUB_OFFLINE": "0"})
        self._update_state()

    @Slot()
    def cancel(self) -> None:
        if self.is_busy():
            self._set_status("Stopping… (the partial file is kept)")
            self.runner.stop(grace_s=5.0)

    @Slot(object)
    def _on_runner_event_received(self, event: Event) -> None:
        if not isinstance(event, Result):
            return
        if self._mode == "listing":
            self._show_listing(event.data)
        elif self._mode == "downloading":
            self.last_result = event.data

    @Slot(object)
    def _on_runner_progress_changed(self, event: Progress) -> None:
        if self._mode != "downloading":
            return
        if event.stage == "download" and event.total:
            self.progress_bar.setRange(0, 1000)
            self.progress_bar.setValue(int(1000 * (event.fraction or 0)))
        self._set_status(describe_download(event))

    @Slot(object)
    def _on_runner_finished(self, outcome: JobOutcome) -> None:
        mode, self._mode = self._mode, "idle"
        self.last_outcome = outcome
        self.progress_bar.setRange(0, 1000)
        if outcome.status == RunStatus.DONE and mode == "downloading" and self.last_result:
            self.progress_bar.setValue(1000)
            path = str(self.last_result.get("model_path") or self.last_result.get("path"))
            self._set_status(f"Downloaded and checked (sha256): {path}. It is now in your model list.")
            self.sig_model_downloaded.emit(path)
        elif outcome.status == RunStatus.DONE and mode == "listing":
            self.progress_bar.setValue(0)
            self._set_status("Nothing downloaded yet: tick the files you want, then click Download.")
        elif outcome.status == RunStatus.STOPPED:
            self._set_status("Download cancelled. The partial file is kept: click Download again to resume "
                             "where it stopped.")
        else:
            if mode == "listing":
                self.progress_bar.setValue(0)
            message = outcome.message or outcome.describe()
            self._set_status(message, error=True)
        self._update_state()

    # -- showing --------------------------------------------------------------------

    def _show_listing(self, data: dict[str, Any]) -> None:
        self.listing = data
        selected = set(data.get("selected") or [])
        entry = self._catalog_entry(data.get("repo_id", ""))
        if entry is not None:  # the catalog's pick wins over the generic default
            from fnmatch import fnmatch

            picked = {f["path"] for f in data["files"] if any(fnmatch(f["path"], p) for p in entry.include)}
            selected = picked or selected
        self.file_list.blockSignals(True)
        self.file_list.clear()
        for f in data.get("files", []):
            size = format_size(f.get("size")) if f.get("size") else "0 B"
            lfs = " · sha256 checked" if f.get("sha256") else ""
            item = QListWidgetItem(f"{f['path']}  ({size}{lfs})")
            item.setData(PATH_ROLE, f["path"])
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if f["path"] in selected else Qt.CheckState.Unchecked)
            self.file_list.addItem(item)
        self.file_list.blockSignals(False)
        license_ = data.get("license") or (entry.license if entry else "not stated on the model card")
        self.license_label.setText(html.escape(f"{license_}.") + (self._gated_note(data) if data.get("gated") else ""))
        self._update_state()

    @staticmethod
    def _gated_note(data: dict[str, Any]) -> str:
        """The gated-repo sentence, its page a link (rich text: everything from the hub is escaped)."""
        url = str(data.get("page_url") or f"https://huggingface.co/{data.get('repo_id', '')}")
        advice = html.escape(gated_advice(url, bool(data.get("has_token"))))
        link = f'<a href="{html.escape(url, quote=True)}">{html.escape(url)}</a>'
        return " <b>This model is gated:</b> " + advice.replace(html.escape(url), link, 1) + "."

    def _set_status(self, text: str, error: bool = False) -> None:
        self.status_label.setText(text)
        self.status_label.setStyleSheet("color: #b00020;" if error else "")

    def _update_state(self) -> None:
        busy = self.is_busy()
        repo = self.repo_id()
        valid = is_valid_repo_id(repo)
        self.check_button.setEnabled(valid and not busy)
        self.repo_edit.setEnabled(not busy)
        self.catalog_list.setEnabled(not busy)
        self.file_list.setEnabled(not busy)
        files = self.selected_files()
        self.download_button.setEnabled(not busy and self.listing is not None and bool(files))
        self.cancel_button.setEnabled(busy and self._mode == "downloading")
        if self.listing is not None:
            sizes = {f["path"]: f.get("size") or 0 for f in self.listing.get("files", [])}
            chosen = sum(sizes.get(p, 0) for p in files)
            free = free_space(downloads_dir())
            free_text = f" · {format_size(free)} free on that disk" if free is not None else ""
            warn = " · not enough free space!" if free is not None and chosen > free else ""
            self.size_label.setText(f"{len(files)} of {len(sizes)} files selected: {format_size(chosen) or '0 B'} "
                                    f"to download{free_text}{warn}")
        if valid:
            self.dest_label.setText(str(repo_folder(repo)))
        elif repo:
            self.dest_label.setText("(type a repo id as org/name)")

    # -- closing --------------------------------------------------------------------

    def reject(self) -> None:
        if self.is_busy() and self._mode == "downloading":
            answer = QMessageBox.question(
                self, "Stop the download?",
                "Closing stops the download. The partial file is kept and resumes next time. Stop it?")
            if answer != QMessageBox.StandardButton.Yes:
                return
            self.runner.stop()
        elif self.is_busy():
            self.runner.stop()
        super().reject()


