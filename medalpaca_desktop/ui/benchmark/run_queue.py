"""Benchmark runs one after another, each a `python -m bench run CFG` worker process.

The queue writes each run's config.yaml, starts the command through JobRunner,
turns its events into signals (progress with running accuracy and ETA, one row per
scored question) and, when a worker dies without a word (killed, out of memory, a
native crash), marks its database row as crashed so the History offers to resume it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot

from bench.config import BenchConfig, bench_command

from medalpaca_desktop.core.events import Done, Error, Event, Progress, Result, Started
from medalpaca_desktop.core.store import Store
from medalpaca_desktop.ui.job_runner import JobOutcome, JobRunner, JobStatus

QUEUED, RUNNING, DONE, STOPPED, FAILED, CRASHED, CANCELLED = (
    "queued", "running", "done", "stopped", "failed", "crashed", "cancelled")
CRASH_PREFIX = "crashed: "
STOP_GRACE_S = 180.0


@dataclass
class QueuedRun:
    """One run in the queue and what is known of it so far."""

    config: BenchConfig
    resume: bool = False
    state: str = QUEUED
    progress: Progress | None = None
    stage: str = ""  # "load" while the model loads, then "eval"
    total: int | None = None
    items: list[dict[str, Any]] = field(default_factory=list)  # rows streamed while it runs
    summary: dict[str, Any] | None = None
    error: str = ""
    exit_code: int | None = None

    @property
    def run_dir(self) -> Path:
        return Path(self.config.out).expanduser()

    @property
    def config_path(self) -> Path:
        return self.run_dir / "config.yaml"

    @property
    def label(self) -> str:
        return self.config.display_label

    def command(self) -> list[str]:
        return bench_command(self.config_path, resume=self.resume)


class BenchQueue(QObject):
    """Owns the JobRunner; one run at a time, in the order queued."""

    sig_queue_changed = Signal()
    sig_run_started = Signal(object)  # QueuedRun
    sig_run_progressed = Signal(object)  # QueuedRun (its .progress is new)
    sig_item_scored = Signal(object, object)  # QueuedRun, item dict
    sig_run_finished = Signal(object)  # QueuedRun (state done / stopped / failed / crashed)
    sig_log_line = Signal(str)

    def __init__(self, store: Store | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.runs: list[QueuedRun] = []
        self.current: QueuedRun | None = None
        self.stopping = False
        self.runner = JobRunner(self)
        self.runner.sig_event_received.connect(self._on_runner_event_received)
        self.runner.sig_log_line.connect(self.sig_log_line)
        self.runner.sig_finished.connect(self._on_runner_finished)

    # -- queueing -------------------------------------------------------------

    def enqueue(self, configs: list[BenchConfig]) -> list[QueuedRun]:
        """Save each config in its run folder and queue it; starts at once when idle."""
        added = []
        for config in configs:
            run = QueuedRun(config=config)
            run.run_dir.mkdir(parents=True, exist_ok=True)
            config.save(run.config_path)
            added.append(run)
        self.runs.extend(added)
        self.sig_queue_changed.emit()
        self._start_next()
        return added

    def resume(self, run_dir: str | Path) -> QueuedRun:
        """Queue a stopped or crashed run again; the worker scores exactly the questions it lacks."""
        config = BenchConfig.load(Path(run_dir) / "config.yaml")
        run = QueuedRun(config=config, resume=True)
        self.runs.append(run)
        self.sig_queue_changed.emit()
        self._start_next()
        return run

    def is_busy(self) -> bool:
        return self.current is not None

    def live_dirs(self) -> set[str]:
        """Run folders a job of this queue is running or will run (resolved, as the database stores them)."""
        return {str(r.run_dir.resolve()) for r in self.runs if r.state in (QUEUED, RUNNING)}

    def pending(self) -> list[QueuedRun]:
        return [r for r in self.runs if r.state == QUEUED]

    def stop_current(self) -> None:
        """Ask the running worker to stop: it finishes the question and writes a partial summary.

        One question of a large model on a CPU can take minutes, so the worker gets a long grace
        period before it is terminated; `force_stop` ends it at once (the question is lost, resume
        redoes it).
        """
        if self.current is not None:
            self.stopping = True
            self.runner.stop(grace_s=STOP_GRACE_S)
            self.sig_queue_changed.emit()

    def force_stop(self) -> None:
        if self.current is not None:
            self.runner.kill_now()

    def stop_all(self) -> None:
        for run in self.pending():
            run.state = CANCELLED
        self.sig_queue_changed.emit()
        self.stop_current()

    def clear_finished(self) -> None:
        self.runs = [r for r in self.runs if r.state in (QUEUED, RUNNING)]
        self.sig_queue_changed.emit()

    def shutdown(self) -> None:
        """App closing: cancel what waits, kill the worker (its folder keeps every scored question)."""
        for run in self.pending():
            run.state = CANCELLED
        self.runner.kill_now()

    # -- running --------------------------------------------------------------

    def _start_next(self) -> None:
        if self.current is not None:
            return
        self.stopping = False
        run = next((r for r in self.runs if r.state == QUEUED), None)
        if run is None:
            return
        self.current = run
        run.state = RUNNING
        run.items = []
        command = run.command()
        self.runner.start(command[0], command[1:])
        self.sig_run_started.emit(run)
        self.sig_queue_changed.emit()

    @Slot(object)
    def _on_runner_event_received(self, event: Event) -> None:
        run = self.current
        if run is None:
            return
        if isinstance(event, Started):
            run.total = int(event.info.get("total") or 0) or None
            run.stage = "load"
        elif isinstance(event, Progress):
            run.progress = event
            run.stage = event.stage
            self.sig_run_progressed.emit(run)
        elif isinstance(event, Result) and event.data.get("kind") == "item":
            item = {k: v for k, v in event.data.items() if k != "kind"}
            run.items.append(item)
            self.sig_item_scored.emit(run, item)
        elif isinstance(event, Error):
            run.error = event.message
        elif isinstance(event, Done):
            summary = event.data.get("summary")
            if isinstance(summary, dict):
                run.summary = summary

    @Slot(object)
    def _on_runner_finished(self, outcome: JobOutcome) -> None:
        run = self.current
        self.current = None
        self.stopping = False
        if run is None:
            return
        run.exit_code = outcome.exit_code
        run.state = {JobStatus.SUCCEEDED: DONE, JobStatus.STOPPED: STOPPED,
                     JobStatus.CRASHED: CRASHED}.get(outcome.status, FAILED)
        if run.state in (FAILED, CRASHED):
            run.error = outcome.error_message or run.error or outcome.describe()
        if run.state == CRASHED:
            self._mark_crashed(run)
        self.sig_run_finished.emit(run)
        self.sig_queue_changed.emit()
        self._start_next()

    def _mark_crashed(self, run: QueuedRun) -> None:
        """The worker could not record its own end: say so in its database row."""
        if self.store is None:
            return
        row = self.store.eval_run_by_dir(str(run.run_dir.resolve()))
        if row is not None:
            self.store.update_eval_run(row["id"], status="failed", error=CRASH_PREFIX + run.error[:500])
