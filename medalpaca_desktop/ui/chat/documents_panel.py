"""The Chat tab's Documents panel: collections of the user's files, which ones this chat answers from, a source.

Indexing runs `python -m medalpaca_desktop.documents add|rescan ... --jsonl` on a pipe (the same job as
`medalpaca docs add`): progress with ETA, Stop, and every file that cannot be read listed with its reason.
The panel reads collections and passages from the app database through documents.library (light: no
model is loaded here); retrieval itself happens in the chat host when a question is sent.
"""

from __future__ import annotations

import html
import sys
from pathlib import Path

from PySide6.QtCore import QSize, Qt, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices, QShowEvent
from PySide6.QtWidgets import (
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from medalpaca_desktop.core.events import Done, Error, Event, Progress, Result, Warning
from medalpaca_desktop.core.jobs import RunStatus
from medalpaca_desktop.core.payloads import Indexed, IndexedFile, parse_payload
from medalpaca_desktop.core.store import Store, StoreError
from medalpaca_desktop.documents.grounding import Source
from medalpaca_desktop.documents.library import Collection, Library, LibraryError, valid_name
from medalpaca_desktop.ui.jobs import JobOutcome, PipeJob
from medalpaca_desktop.ui.widgets.progress_bar import show_progress
from medalpaca_desktop.ui.widgets.tool_button import text_button

EMPTY_TEXT = ("Add a folder of PDF, Word, Markdown, text or HTML files. Tick a collection and this chat's "
              "answers come from its passages, with [1], [2] citations you can click to see the page. "
              "Everything stays on this computer.")
TICK_TEXT = "Ticked collections are searched for every question in this chat; the answer cites their pages."
FILE_FILTER = "Documents (*.pdf *.docx *.md *.markdown *.txt *.text *.html *.htm)"


def collection_line(c: Collection) -> str:
    unread = f", {c.failed} not readable" if c.failed else ""
    dense = " · with embeddings" if c.embed_model else ""
    return f"{c.name} — {c.files} file{'s' if c.files != 1 else ''}, {c.pages} pages{unread}{dense}"


class DocumentsPanel(QWidget):
    """Collections with a tick for this chat, Add/Rescan/Remove, indexing progress, and the source view."""

    sig_attached_changed = Signal(list)  # the collection names this chat answers from

    def __init__(self, store: Store, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.library = Library(store)
        self.usable = store.persistent  # the indexing worker writes the database file, not a session-only store
        self._attached: list[str] = []
        self._names: dict[str, str] = {}  # casefold -> name of the collections the list shows
        self._queue: list[list[str]] = []
        self._failed: list[IndexedFile] = []
        self._updating = False
        self._scanned_once = False
        self.job = PipeJob(self, name="indexing")
        self.job.sig_event_received.connect(self._on_job_event_received)
        self.job.sig_finished.connect(self._on_job_finished)

        self.intro_label = QLabel(EMPTY_TEXT)
        self.intro_label.setWordWrap(True)
        self.intro_label.setStyleSheet("color: #555;")
        self.list = QListWidget()
        self.list.setToolTip("Ticked collections are searched for every question in this chat")
        self.list.itemChanged.connect(self._on_list_item_changed)
        self.list.currentItemChanged.connect(self._on_list_current_item_changed)
        self.list.setMinimumHeight(70)
        self.new_button = QPushButton("New collection…")
        self.new_button.setToolTip("Name a collection and choose the folder it holds")
        self.new_button.clicked.connect(self.new_collection)
        self.add_folder_button = text_button("Add folder…", "Add a folder (and its subfolders) to the selected "
                                                           "collection")
        self.add_folder_button.clicked.connect(self._on_add_folder_button_clicked)
        self.add_files_button = text_button("Add files…", "Add files to the selected collection")
        self.add_files_button.clicked.connect(self._on_add_files_button_clicked)
        self.rescan_button = text_button("Rescan", "Pick up files added, changed or removed since the last scan")
        self.rescan_button.clicked.connect(self._on_rescan_button_clicked)
        self.remove_button = text_button("Remove…", "Remove the selected collection and its index; your files are "
                                                   "not touched")
        self.remove_button.clicked.connect(self._on_remove_button_clicked)
        self.stop_button = text_button("Stop", "Stop indexing; the files done so far stay indexed")
        self.stop_button.clicked.connect(lambda: self.job.stop())
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.hide()
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.status_label.setStyleSheet("color: #555;")
        self.failed_label = QLabel()
        self.failed_label.setWordWrap(True)
        self.failed_list = QListWidget()
        self.failed_list.setMaximumHeight(110)
        self.failed_list.setWordWrap(True)
        self.failed_list.setSpacing(2)
        self.failed_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.failed_list.setToolTip("Files that could not be read, with the reason; the others are indexed")
        self.failed_label.hide()
        self.failed_list.hide()

        self.source_title = QLabel()
        self.source_title.setWordWrap(True)
        self.source_title.setTextFormat(Qt.TextFormat.RichText)
        self.source_view = QTextBrowser()
        self.source_view.setOpenLinks(False)
        self.source_view.setMinimumHeight(120)
        self.open_button = QPushButton("Open the file")
        self.open_button.setToolTip("Open the document in this computer's viewer (at the page where it supports it)")
        self.open_button.clicked.connect(self._on_open_button_clicked)
        self.source_box = QWidget()
        source_layout = QVBoxLayout(self.source_box)
        source_layout.setContentsMargins(0, 6, 0, 0)
        source_layout.addWidget(self.source_title)
        source_layout.addWidget(self.source_view, 1)
        source_layout.addWidget(self.open_button, 0, Qt.AlignmentFlag.AlignLeft)
        self.source_box.hide()
        self.shown_source: Source | None = None

        row = QGridLayout()  # two by two: the panel is narrow
        row.setSpacing(2)
        for i, button in enumerate((self.add_folder_button, self.add_files_button, self.rescan_button,
                                    self.remove_button)):
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            row.addWidget(button, i // 2, i % 2)
        row.setColumnStretch(2, 1)
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.intro_label)
        layout.addWidget(self.new_button, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.list, 1)
        layout.addLayout(row)
        layout.addLayout(progress_row)
        layout.addWidget(self.status_label)
        layout.addWidget(self.failed_label)
        layout.addWidget(self.failed_list)
        layout.addWidget(self.source_box, 2)
        if not self.usable:
            self.status_label.setText("Documents need the app database, which cannot be opened this session.")
        self.refresh()

    def showEvent(self, event: QShowEvent) -> None:
        """The first time the panel is shown: pick up what changed in every collection's folders since."""
        super().showEvent(event)
        if not self._scanned_once and self.list.count():
            self._scanned_once = True
            self.index(["rescan", "--all"])

    def sizeHint(self) -> QSize:
        return QSize(280, 400)

    # -- collections ------------------------------------------------------------------

    def collections(self) -> list[Collection]:
        try:
            return self.library.collections() if self.usable else []
        except StoreError as exc:
            self.status_label.setText(str(exc))
            return []

    def refresh(self) -> None:
        """Re-read the collections (after indexing, or another process's `medalpaca docs`)."""
        selected = self.selected_name()
        self._updating = True
        try:
            self.list.clear()
            collections = self.collections()
            self._names = {c.name.casefold(): c.name for c in collections}
            for collection in collections:
                item = QListWidgetItem(collection_line(collection))
                item.setData(Qt.ItemDataRole.UserRole, collection.name)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                attached = collection.name.casefold() in {n.casefold() for n in self._attached}
                item.setCheckState(Qt.CheckState.Checked if attached else Qt.CheckState.Unchecked)
                sources = "\n".join(collection.sources) or "no folders yet"
                item.setToolTip(f"{collection.chunks} passages from:\n{sources}")
                self.list.addItem(item)
                if collection.name == selected:
                    self.list.setCurrentItem(item)
            if self.list.currentItem() is None and self.list.count():
                self.list.setCurrentRow(0)
        finally:
            self._updating = False
        self._show_failed()
        self._update_enabled()

    def selected_name(self) -> str | None:
        item = self.list.currentItem()
        return str(item.data(Qt.ItemDataRole.UserRole)) if item is not None else None

    def attached(self) -> list[str]:
        """The collections this chat answers from (only those that still exist, as the last refresh read them)."""
        return [self._names[n.casefold()] for n in self._attached if n.casefold() in self._names]

    def set_attached(self, names: list[str]) -> None:
        """Show the ticks of the chat just opened."""
        self._attached = list(names)
        self.refresh()

    @Slot(QListWidgetItem)
    def _on_list_item_changed(self, item: QListWidgetItem) -> None:
        if self._updating:
            return
        name = str(item.data(Qt.ItemDataRole.UserRole))
        others = [n for n in self._attached if n.casefold() != name.casefold()]
        self._attached = others + ([name] if item.checkState() == Qt.CheckState.Checked else [])
        self.sig_attached_changed.emit(self.attached())
        if item.checkState() == Qt.CheckState.Checked:
            self.index(["rescan", name])  # files added or changed since are picked up before the next question

    @Slot(QListWidgetItem, QListWidgetItem)
    def _on_list_current_item_changed(self, *_items: object) -> None:
        self._show_failed()
        self._update_enabled()

    def _show_failed(self) -> None:
        name = self.selected_name()
        records = []
        if name:
            try:
                records = [r for r in self.library.files(self.library.get(name)) if r.status == "failed"]
            except (LibraryError, StoreError):
                records = []
        self.failed_list.clear()
        for record in records:
            item = QListWidgetItem(f"{Path(record.path).name}: {record.error}")
            item.setToolTip(f"{record.path}\n{record.error}")
            self.failed_list.addItem(item)
        self.failed_label.setText(f"<b>{len(records)} file{'s' if len(records) != 1 else ''} of {html.escape(name)} "
                                  "could not be read:</b>" if records and name else "")
        self.failed_label.setVisible(bool(records))
        self.failed_list.setVisible(bool(records))

    def _update_enabled(self) -> None:
        running = self.job.is_running()
        has = self.selected_name() is not None
        self.new_button.setEnabled(self.usable)
        for button in (self.add_folder_button, self.add_files_button, self.rescan_button, self.remove_button):
            button.setEnabled(self.usable and has and not (running and button is self.remove_button))
        self.stop_button.setVisible(running)
        self.progress.setVisible(running)
        self.intro_label.setText(EMPTY_TEXT if self.list.count() == 0 else TICK_TEXT)

    # -- adding -----------------------------------------------------------------------

    def new_collection(self) -> bool:
        name, ok = QInputDialog.getText(self, "New collection", "Name of the collection (e.g. Clinic guidelines):")
        if not ok:
            return False
        try:
            name = valid_name(name)
        except LibraryError as exc:
            self.status_label.setText(str(exc))
            return False
        folder = QFileDialog.getExistingDirectory(self, f"The folder {name} holds")
        if not folder:
            return False
        self._attached.append(name)
        self.add_paths(name, [folder])
        return True

    def add_paths(self, name: str, paths: list[str]) -> None:
        """Index `paths` into collection `name` (made if new)."""
        self.index(["add", name, *paths])

    def _on_add_folder_button_clicked(self) -> None:
        name = self.selected_name()
        folder = QFileDialog.getExistingDirectory(self, f"A folder to add to {name}") if name else ""
        if name and folder:
            self.add_paths(name, [folder])

    def _on_add_files_button_clicked(self) -> None:
        name = self.selected_name()
        files, _ = QFileDialog.getOpenFileNames(self, f"Files to add to {name}", "", FILE_FILTER) if name else ([], "")
        if name and files:
            self.add_paths(name, files)

    def _on_rescan_button_clicked(self) -> None:
        if name := self.selected_name():
            self.index(["rescan", name])

    def _on_remove_button_clicked(self) -> None:
        name = self.selected_name()
        if not name:
            return
        answer = QMessageBox.question(self, "Remove collection",
                                      f"Remove the collection {name} and its index? The files themselves are not "
                                      "touched, and chats keep the passages they cited.")
        if answer == QMessageBox.StandardButton.Yes:
            self.remove(name)

    def remove(self, name: str) -> None:
        try:
            self.library.remove(name)
        except (LibraryError, StoreError) as exc:
            self.status_label.setText(str(exc))
            return
        self._attached = [n for n in self._attached if n.casefold() != name.casefold()]
        self.status_label.setText(f"Removed {name} and its index.")
        self.refresh()
        self.sig_attached_changed.emit(self.attached())

    # -- the indexing job -------------------------------------------------------------

    def index(self, args: list[str]) -> None:
        """Run one indexing action (queued behind one that runs)."""
        if not self.usable:
            return
        if self.job.is_running():
            if args not in self._queue:
                self._queue.append(args)
            return
        self._failed = []
        self.progress.setRange(0, 0)
        self.progress.setFormat("")
        verb = "Indexing" if args[0] == "add" else "Checking"
        self.status_label.setText(f"{verb} {'every collection' if args[1] == '--all' else args[1]} for changes…"
                                  if verb == "Checking" else f"{verb} {args[1]}…")
        self.job.start(sys.executable, ["-m", "medalpaca_desktop.documents", *args, "--jsonl"])
        self._update_enabled()

    @Slot(object)
    def _on_job_event_received(self, event: Event) -> None:
        if isinstance(event, Progress):
            show_progress(self.progress, event)
            if event.message:
                self.status_label.setText(f"{event.stage}: {event.message}")
        elif isinstance(event, Result):
            payload = parse_payload(event.data)
            if isinstance(payload, IndexedFile) and payload.status == "failed":
                self._failed.append(payload)
            elif isinstance(payload, Indexed):
                self.status_label.setText(self._summary(payload))
                self.refresh()
        elif isinstance(event, Warning):
            self.status_label.setText(event.message)
        elif isinstance(event, Error):
            self.status_label.setText(f"<b>Indexing failed:</b> {html.escape(event.message)}")
        elif isinstance(event, Done) and event.stopped:
            self.status_label.setText("Stopped; the files indexed so far are kept. Rescan goes on from there.")

    @staticmethod
    def _summary(totals: Indexed) -> str:
        if not (totals.indexed or totals.failed or totals.removed):
            return f"{totals.collection} is up to date."
        parts = [f"{totals.indexed} file{'s' if totals.indexed != 1 else ''} indexed ({totals.pages} pages)"]
        if totals.unchanged:
            parts.append(f"{totals.unchanged} unchanged")
        if totals.removed:
            parts.append(f"{totals.removed} gone from disk and removed")
        if totals.failed:
            parts.append(f"{totals.failed} not readable (listed below)")
        return f"{totals.collection}: " + ", ".join(parts) + "."

    @Slot(object)
    def _on_job_finished(self, outcome: JobOutcome) -> None:
        self.progress.setRange(0, 1000)
        if not outcome.ok and "failed" not in self.status_label.text() and outcome.status != RunStatus.STOPPED:
            self.status_label.setText(f"<b>Indexing failed:</b> {html.escape(outcome.describe())}")
        self.refresh()
        self.sig_attached_changed.emit(self.attached())
        if self._queue:
            self.index(self._queue.pop(0))
        self._update_enabled()

    # -- a source ---------------------------------------------------------------------

    def show_source(self, source: Source) -> None:
        """Source n of an answer: its passage in the page it comes from (neighbouring passages greyed)."""
        self.shown_source = source
        self.source_title.setText(f"<b>[{source.n}] {html.escape(source.where)}</b><br>"
                                  f"<span style='color:#777'>{html.escape(source.path)}</span>")
        self.source_view.setHtml(self._page_html(source))
        self.open_button.setEnabled(Path(source.path).is_file())
        self.open_button.setToolTip("Open the document in this computer's viewer" if Path(source.path).is_file()
                                    else "The file is no longer at this place; the passage above is what was sent")
        self.source_box.show()
        self.source_view.scrollToAnchor("cited")

    def _page_html(self, source: Source) -> str:
        """The cited passage highlighted among the page's other passages, as the index holds them now."""
        rows = []
        try:
            rows = self.library.store.read(
                "SELECT c.id, c.text FROM doc_chunks c JOIN doc_files f ON f.id = c.file_id WHERE f.path = ? "
                "AND c.page IS ? ORDER BY c.start", (source.path, source.page))
        except StoreError:
            rows = []
        texts = {int(r[0]): str(r[1]) for r in rows}
        if source.chunk_id not in texts or texts[source.chunk_id] != source.text:
            texts = {source.chunk_id: source.text}  # re-indexed since: show exactly what was sent
        parts = []
        for chunk_id, text in texts.items():
            body = html.escape(text).replace("\n", "<br>")
            if chunk_id == source.chunk_id:
                parts.append(f"<a name='cited'></a><p style='background:#fff3bf'>{body}</p>")
            else:
                parts.append(f"<p style='color:#888'>{body}</p>")
        return "".join(parts)

    def source_url(self, source: Source) -> QUrl:
        url = QUrl.fromLocalFile(source.path)
        if source.page is not None and source.path.lower().endswith(".pdf"):
            url.setFragment(f"page={source.page}")  # PDF viewers and browsers that read the open parameters
        return url

    def _on_open_button_clicked(self) -> None:
        if self.shown_source is not None:
            QDesktopServices.openUrl(self.source_url(self.shown_source))

    def shutdown(self) -> None:
        self._queue.clear()
        self.job.kill_now()
