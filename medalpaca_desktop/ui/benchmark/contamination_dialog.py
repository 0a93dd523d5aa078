"""Check a run (or every run of a suite) against training data: pick the sources, run the engine's worker.

The check streams every training record once, so it runs as the worker
`python -m bench contamination TARGET --against SOURCE ... --meadow KEY ... --ngram N --jsonl` on a
pipe (progress with ETA, Stop); the GUI process reads only the reports the worker writes
(contamination.json, summary_clean.json). Sources are what the fine-tune wizard accepts (JSON, JSON
Lines, CSV/TSV, a folder of them, a dataset saved with save_to_disk) and the Medical Meadow sets
already downloaded.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from bench.contamination_report import DEFAULT_NGRAM, overlap_line
from medalpaca_desktop.core.events import Event, Progress, Result
from medalpaca_desktop.core.progress import format_duration
from medalpaca_desktop.hub.meadow import MeadowCatalogError, MeadowDataset, load_meadow_catalog
from medalpaca_desktop.ui.finetune.page_data import DATA_FILTER
from medalpaca_desktop.ui.jobs import JobOutcome, PipeJob

MAX_NGRAM = 50
INTRO = ("A question overlaps your training data when its text is a training record's text, or shares a run of "
         "N words with one (lm-eval's decontamination; 13 words by default). The accuracy without the "
         "overlapping questions is kept beside the full one; the results themselves are not changed.")


def contamination_command(target: str, against: Sequence[str], meadow: Sequence[str],
                          ngram: int = DEFAULT_NGRAM) -> list[str]:
    """The worker the dialog runs: every source and Meadow key, the n-gram size, events on stdout."""
    cmd = [sys.executable, "-m", "bench", "contamination", target]
    for source in against:
        cmd += ["--against", source]
    for key in meadow:
        cmd += ["--meadow", key]
    return [*cmd, "--ngram", str(ngram), "--jsonl"]


def terminal_command(target: str, against: Sequence[str], meadow: Sequence[str], ngram: int = DEFAULT_NGRAM) -> str:
    """The same check as a person types it."""
    cmd = contamination_command(target, against, meadow, ngram)[3:-1]
    if ngram == DEFAULT_NGRAM:
        cmd = cmd[:-2]
    return shlex.join(["medalpaca", "bench", *cmd])


def downloaded_meadow() -> tuple[list[MeadowDataset], str]:
    """The Medical Meadow training sets already downloaded (not the USMLE test sets), and why none can be
    listed (a broken catalog)."""
    try:
        entries = load_meadow_catalog()
    except MeadowCatalogError as exc:
        return [], f"The Medical Meadow catalog cannot be read: {exc}"
    return [e for e in entries if e.for_training and e.downloadable and e.local_files()], ""


def first_sentence(text: str) -> str:
    """The worker's message as one line (a message never brings a traceback into the dialog)."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line or "the check failed"


class ContaminationDialog(QDialog):
    """Training files and downloaded Meadow sets, the n-gram size, Check with progress and Stop."""

    sig_checked = Signal(str)  # the target (run or suite folder), after the reports are written

    def __init__(self, target: str | Path, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.target = str(target)
        self.result: dict = {}
        self.setWindowTitle("Check against training data")
        self.setMinimumWidth(640)
        self.job = PipeJob(self, name="the contamination check")
        self.job.sig_progress_changed.connect(self._on_job_progress_changed)
        self.job.sig_event_received.connect(self._on_job_event_received)
        self.job.sig_finished.connect(self._on_job_finished)

        intro = QLabel(f"Which questions of <b>{name}</b> are in the data a model was trained on?")
        intro.setWordWrap(True)
        note = QLabel(INTRO)
        note.setWordWrap(True)
        note.setStyleSheet("color: #444;")

        self.sources_list = QListWidget()
        self.sources_list.setToolTip("JSON, JSON Lines, CSV or TSV files, folders of them, or datasets saved with "
                                     "save_to_disk: every text field of every record is checked")
        self.sources_list.setMinimumHeight(72)
        self.sources_list.setMaximumHeight(110)
        self.add_files_button = QPushButton("Add files…")
        self.add_files_button.clicked.connect(self._on_add_files_button_clicked)
        self.add_folder_button = QPushButton("Add folder…")
        self.add_folder_button.setToolTip("A folder of data files, or a dataset saved with datasets' save_to_disk")
        self.add_folder_button.clicked.connect(self._on_add_folder_button_clicked)
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(self._on_remove_button_clicked)
        buttons = QVBoxLayout()
        for button in (self.add_files_button, self.add_folder_button, self.remove_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        files_box = QGroupBox("Training files")
        files_row = QHBoxLayout(files_box)
        files_row.addWidget(self.sources_list, 1)
        files_row.addLayout(buttons)

        self.meadow_list = QListWidget()
        self.meadow_list.setToolTip("Tick the Medical Meadow sets the model was trained on")
        self.meadow_note = QLabel()
        self.meadow_note.setWordWrap(True)
        self.meadow_note.setStyleSheet("color: #666;")
        meadow_box = QGroupBox("Medical Meadow (downloaded)")
        meadow_layout = QVBoxLayout(meadow_box)
        meadow_layout.addWidget(self.meadow_list)
        meadow_layout.addWidget(self.meadow_note)
        self._fill_meadow()

        self.ngram_spin = QSpinBox()
        self.ngram_spin.setRange(1, MAX_NGRAM)
        self.ngram_spin.setValue(DEFAULT_NGRAM)
        self.ngram_spin.setSuffix(" words")
        self.ngram_spin.setToolTip("How many consecutive words a question must share with a training text "
                                   f"(lm-eval uses {DEFAULT_NGRAM}; fewer finds more, and more chance matches)")
        self.ngram_spin.valueChanged.connect(self._update_command)
        self.command_edit = QLineEdit()
        self.command_edit.setReadOnly(True)
        self.command_edit.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.command_edit.setToolTip("The same check in a terminal")
        form = QFormLayout()
        form.addRow("N-gram size:", self.ngram_spin)
        form.addRow("Command:", self.command_edit)

        self.progress_bar = QProgressBar()
        self.progress_bar.setVisible(False)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #b3261e;")
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.setVisible(False)
        self.check_button = QPushButton("Check")
        self.check_button.setDefault(True)
        self.check_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("End the check; nothing is written until it finishes")
        self.stop_button.clicked.connect(self.stop)
        self.stop_button.setEnabled(False)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.reject)
        actions = QHBoxLayout()
        actions.addWidget(self.status_label, 1)
        actions.addWidget(self.check_button)
        actions.addWidget(self.stop_button)
        actions.addWidget(self.close_button)

        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(note)
        layout.addWidget(files_box)
        layout.addWidget(meadow_box)
        layout.addLayout(form)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.error_label)
        layout.addLayout(actions)
        self.meadow_list.itemChanged.connect(self._update_command)
        self._update_command()

    # -- sources --------------------------------------------------------------

    def _fill_meadow(self) -> None:
        entries, problem = downloaded_meadow()
        for entry in entries:
            item = QListWidgetItem(f"{entry.name} · {entry.records:,} records")
            item.setData(Qt.ItemDataRole.UserRole, entry.key)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Unchecked)
            item.setToolTip(f"{entry.hf_id}: {entry.description}")
            self.meadow_list.addItem(item)
        self.meadow_list.setVisible(bool(entries))
        rows = min(max(len(entries), 1), 6)
        self.meadow_list.setFixedHeight(rows * self.meadow_list.sizeHintForRow(0) + 2 * self.meadow_list.frameWidth()
                                        + 4 if entries else 0)
        self.meadow_note.setText(problem or ("" if entries else
                                             "No Medical Meadow set is downloaded yet (the fine-tune wizard's "
                                             "data page, or medalpaca download --dataset medalpaca/…)."))
        self.meadow_note.setVisible(bool(self.meadow_note.text()))

    def sources(self) -> list[str]:
        return [self.sources_list.item(i).text() for i in range(self.sources_list.count())]

    def add_sources(self, paths: Sequence[str]) -> None:
        known = set(self.sources())
        for path in paths:
            if path and path not in known:
                self.sources_list.addItem(path)
                known.add(path)
        self._update_command()

    def meadow_keys(self) -> list[str]:
        items = [self.meadow_list.item(i) for i in range(self.meadow_list.count())]
        return [item.data(Qt.ItemDataRole.UserRole) for item in items if item.checkState() == Qt.CheckState.Checked]

    def set_meadow_checked(self, keys: Sequence[str]) -> None:
        for i in range(self.meadow_list.count()):
            item = self.meadow_list.item(i)
            checked = item.data(Qt.ItemDataRole.UserRole) in keys
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)

    def command(self) -> list[str]:
        return contamination_command(self.target, self.sources(), self.meadow_keys(), self.ngram_spin.value())

    @Slot()
    def _on_add_files_button_clicked(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Choose training data", "", DATA_FILTER)
        self.add_sources(paths)

    @Slot()
    def _on_add_folder_button_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder of training data or a saved dataset")
        self.add_sources([folder] if folder else [])

    @Slot()
    def _on_remove_button_clicked(self) -> None:
        row = self.sources_list.currentRow()
        if row >= 0:
            self.sources_list.takeItem(row)
            self._update_command()

    @Slot()
    def _update_command(self) -> None:
        has = bool(self.sources() or self.meadow_keys())
        self.command_edit.setText(terminal_command(self.target, self.sources(), self.meadow_keys(),
                                                   self.ngram_spin.value()) if has else "")
        self.command_edit.setCursorPosition(0)
        self.check_button.setEnabled(has and not self.job.is_running())
        self.remove_button.setEnabled(self.sources_list.count() > 0)

    # -- running --------------------------------------------------------------

    @Slot()
    def start(self) -> bool:
        """Run the check; False when there is nothing to check against or one runs already."""
        if self.job.is_running() or not (self.sources() or self.meadow_keys()):
            return False
        self.result = {}
        self.error_label.setVisible(False)
        self.progress_bar.setRange(0, 0)
        self.progress_bar.setVisible(True)
        self.status_label.setText("Reading the training data…")
        self.check_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        command = self.command()
        self.job.start(command[0], command[1:])
        return True

    def is_running(self) -> bool:
        return self.job.is_running()

    @Slot()
    def stop(self) -> None:
        """Ask the worker to end (SIGINT; it leaves at once and writes nothing); a second press escalates."""
        self.job.stop()
        self.status_label.setText("Stopping…")

    @Slot(object)
    def _on_job_progress_changed(self, event: Progress) -> None:
        if event.total:
            self.progress_bar.setRange(0, 1000)
            self.progress_bar.setValue(int(1000 * (event.fraction or 0)))
        eta = f" · about {format_duration(event.eta_s)} left" if event.eta_s is not None and event.total else ""
        total = f" of {event.total:,.0f}" if event.total else ""
        self.status_label.setText(f"Reading the training data: {event.current:,.0f}{total} records{eta}")

    @Slot(object)
    def _on_job_event_received(self, event: Event) -> None:
        if isinstance(event, Result) and event.data.get("kind") == "contamination":
            self.result = dict(event.data)

    @Slot(object)
    def _on_job_finished(self, outcome: JobOutcome) -> None:
        self.progress_bar.setVisible(False)
        self.stop_button.setEnabled(False)
        self._update_command()
        if self.result and outcome.done is not None and outcome.done.ok:  # done, even if Stop came as it ended
            runs = self.result.get("runs") or []
            k, n = sum(r["overlapping"] for r in runs), sum(r["n_questions"] for r in runs)
            self.status_label.setText(overlap_line(k, n) + ".")
            self.sig_checked.emit(self.target)
            self.accept()
        elif outcome.stop_requested:
            self.status_label.setText("Stopped; nothing was written.")
        else:
            self.status_label.setText("The check did not finish.")
            self.error_label.setText(first_sentence(outcome.message or ""))
            self.error_label.setToolTip("\n".join(outcome.stderr_tail[-10:]))
            self.error_label.setVisible(True)

    def reject(self) -> None:
        """Close: a running check is stopped (it writes nothing until it ends)."""
        if self.job.is_running():
            self.job.stop()
        super().reject()

    def shutdown(self) -> None:
        if self.job.is_running():
            self.job.kill_now()
