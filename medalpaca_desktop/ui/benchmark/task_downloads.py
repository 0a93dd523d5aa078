"""Fetch the suite's missing tasks one after the other, each through the download worker.

Each task is `TaskSpec.download_command()` (`medalpaca download --dataset REPO --revision REV
--include ... --jsonl`) run as a PipeJob, the way the model Download dialog runs it: the
worker alone goes online, the GUI only reads its events (progress, one `error` sentence).
A network failure ends the batch (the next tasks would fail the same way); another failure
(a repo gone from the hub) is reported and the next task is fetched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PySide6.QtCore import QObject, Signal, Slot

from bench.tasks import OFFLINE_MESSAGE, TaskSpec
from medalpaca_desktop.core.events import Error, Event, Progress
from medalpaca_desktop.core.jobs import RunStatus
from medalpaca_desktop.core.progress import describe_download
from medalpaca_desktop.ui.jobs import JobOutcome, PipeJob

NETWORK_KINDS = frozenset({"network", "offline"})  # hub.download.DownloadError kinds that stop the batch


@dataclass
class DownloadReport:
    """How a batch went: what was fetched, what failed and why (one sentence each)."""

    done: list[str] = field(default_factory=list)  # task keys
    failed: dict[str, str] = field(default_factory=dict)  # task key -> the worker's sentence
    stopped: bool = False
    offline: bool = False  # the hub could not be reached

    @property
    def ok(self) -> bool:
        return not self.failed and not self.stopped

    def describe(self, titles: dict[str, str]) -> str:
        if self.stopped:
            return ("Download stopped; a partial file is kept and the next download resumes it."
                    + (f" Fetched: {', '.join(titles.get(k, k) for k in self.done)}." if self.done else ""))
        if not self.failed:
            return f"Downloaded and checked: {', '.join(titles.get(k, k) for k in self.done)}."
        first = next(iter(self.failed))
        text = f"{titles.get(first, first)} could not be downloaded: {self.failed[first]}"
        if len(self.failed) > 1:
            text += f" ({len(self.failed) - 1} more task{'s' if len(self.failed) > 2 else ''} failed.)"
        if self.offline:
            text += f" {OFFLINE_MESSAGE}"
        return text


class TaskDownloads(QObject):
    """One download worker at a time over a list of tasks; Stop ends the batch."""

    sig_task_started = Signal(object, int, int)  # TaskSpec, position (1-based), count
    sig_progress_changed = Signal(float, str)  # fraction of the current task (or -1 when unknown), status text
    sig_task_finished = Signal(object, bool)  # TaskSpec, ok
    sig_finished = Signal(object)  # DownloadReport

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.runner = PipeJob(self, name="the download")
        self.runner.sig_event_received.connect(self._on_runner_event_received)
        self.runner.sig_progress_changed.connect(self._on_runner_progress_changed)
        self.runner.sig_finished.connect(self._on_runner_finished)
        self._queue: list[TaskSpec] = []
        self._count = 0
        self._current: TaskSpec | None = None
        self._error: Error | None = None
        self._stop_requested = False
        self.report = DownloadReport()

    def is_running(self) -> bool:
        return self._current is not None

    def current(self) -> TaskSpec | None:
        return self._current

    def start(self, specs: list[TaskSpec]) -> bool:
        """Fetch these tasks in order; False when a batch is already running or there is nothing to fetch."""
        if self.is_running() or not specs:
            return False
        self._queue = list(specs)
        self._count = len(specs)
        self._stop_requested = False
        self.report = DownloadReport()
        self._next()
        return True

    def stop(self) -> None:
        """Stop the current download (its partial file is kept) and drop the rest."""
        if not self.is_running():
            return
        self._stop_requested = True
        self._queue = []
        self.runner.stop(grace_s=5.0)

    def kill_now(self) -> None:
        self._queue = []
        self.runner.kill_now()

    def _next(self) -> None:
        if not self._queue:
            self._current = None
            self.sig_finished.emit(self.report)
            return
        spec = self._queue.pop(0)
        self._current, self._error = spec, None
        self.sig_task_started.emit(spec, self._count - len(self._queue), self._count)
        command = spec.download_command()
        # The worker alone may go online; every other job keeps HF_HUB_OFFLINE=1.
        self.runner.start(command[0], command[1:], env={"HF_HUB_OFFLINE": "0"})

    @Slot(object)
    def _on_runner_event_received(self, event: Event) -> None:
        if isinstance(event, Error):
            self._error = event

    @Slot(object)
    def _on_runner_progress_changed(self, event: Progress) -> None:
        if event.stage != "download":
            return
        fraction = event.fraction if event.total else None
        self.sig_progress_changed.emit(-1.0 if fraction is None else float(fraction), describe_download(event))

    @Slot(object)
    def _on_runner_finished(self, outcome: JobOutcome) -> None:
        spec = self._current
        if spec is None:
            return
        if outcome.status == RunStatus.DONE:
            self.report.done.append(spec.key)
            self.sig_task_finished.emit(spec, True)
        elif outcome.status == RunStatus.STOPPED or self._stop_requested:
            self.report.stopped = True
            self._queue = []
            self.sig_task_finished.emit(spec, False)
        else:
            message = self._error.message if self._error is not None else (outcome.message or outcome.describe())
            self.report.failed[spec.key] = message
            if self._error is not None and self._error.kind in NETWORK_KINDS:
                self.report.offline = True
                self._queue = []  # the next tasks would fail the same way
            self.sig_task_finished.emit(spec, False)
        self._next()
