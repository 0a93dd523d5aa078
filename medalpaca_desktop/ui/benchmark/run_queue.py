"""Benchmark runs one after another, each a detached `python -m bench run CFG` worker.

The queue writes each run's config.yaml and its eval_runs row (with the worker's pid and
start time), starts the worker in its own process session (ui/jobs/detached.py) and turns
the events the worker appends to RUN_DIR/events.jsonl into signals (progress with running
accuracy and ETA, one row per scored question). A benchmark outlives the window when the
user leaves it running, and `reattach` follows it again at the next start. When a worker
dies without a word (killed, out of memory, a native crash) its row is marked crashed, so
the History offers to resume it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot

from bench.config import BenchConfig, ConfigError, bench_command
from medalpaca_desktop.core.events import Done, Error, Event, Progress, Result, Started
from medalpaca_desktop.core.jobs import RunStatus
from medalpaca_desktop.core.payloads import Item, parse_payload
from medalpaca_desktop.core.store import Store
from medalpaca_desktop.ui.jobs import DetachedJob, JobError, JobOutcome, end_fields, pid_is_running

BENCH_MARKER = "bench"  # in the worker's command line: tells its pid from a reused one
STOP_GRACE_S = 180.0


def bench_is_running(pid: int | None) -> bool:
    return pid_is_running(pid, BENCH_MARKER)


@dataclass
class QueuedRun:
    """One run in the queue and what is known of it so far."""

    config: BenchConfig
    resume: bool = False
    state: RunStatus = RunStatus.QUEUED
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
        return bench_command(self.config_path.resolve(), resume=self.resume)  # the worker runs in its folder


class BenchQueue(QObject):
    """One benchmark worker at a time, in the order queued; owns the current one's DetachedJob."""

    sig_queue_changed = Signal()
    sig_run_started = Signal(object)  # QueuedRun
    sig_run_progressed = Signal(object)  # QueuedRun (its .progress is new)
    sig_item_scored = Signal(object, object)  # QueuedRun, item dict
    sig_run_finished = Signal(object)  # QueuedRun (state done / stopped / failed / crashed)
    sig_log_line = Signal(str)

    def __init__(self, store: Store, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.runs: list[QueuedRun] = []
        self.current: QueuedRun | None = None
        self.job: DetachedJob | None = None

    @property
    def stopping(self) -> bool:
        return self.job is not None and self.job.stopping

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

    def reattach(self) -> QueuedRun | None:
        """Follow a benchmark an earlier app session left running (its row says running, its pid lives)."""
        if self.current is not None:
            return None
        for row in self.store.eval_runs():
            if row["status"] != RunStatus.RUNNING.value or not bench_is_running(row.get("pid")):
                continue
            try:
                config = BenchConfig.load(Path(row["run_dir"]) / "config.yaml")
            except (OSError, ConfigError):
                continue
            run = QueuedRun(config=config, state=RunStatus.RUNNING)
            self.runs.append(run)
            self._follow(run, self._new_job(run))
            assert self.job is not None
            self.job.attach(row["pid"], row.get("started_at"))
            return run
        return None

    def is_busy(self) -> bool:
        return self.current is not None

    def live_dirs(self) -> set[str]:
        """Run folders a job of this queue is running or will run (resolved, as the database stores them)."""
        return {str(r.run_dir.resolve()) for r in self.runs if r.state.is_active}

    def pending(self) -> list[QueuedRun]:
        return [r for r in self.runs if r.state == RunStatus.QUEUED]

    def stop_current(self) -> None:
        """Ask the running worker to stop: it finishes the question and writes a partial summary.

        One question of a large model on a CPU can take minutes, so the worker gets a long grace
        period before it is terminated; pressing Stop again ends it now (the question is lost,
        resume redoes it), a third press kills it.
        """
        if self.job is not None:
            self.job.stop(grace_s=STOP_GRACE_S)
            self.sig_queue_changed.emit()

    def stop_all(self) -> None:
        for run in self.pending():
            run.state = RunStatus.CANCELLED
        self.sig_queue_changed.emit()
        self.stop_current()

    def clear_finished(self) -> None:
        self.runs = [r for r in self.runs if r.state.is_active]
        self.sig_queue_changed.emit()

    def shutdown(self) -> None:
        """App closing: cancel what waits; the running worker goes on and is attached at the next start."""
        for run in self.pending():
            run.state = RunStatus.CANCELLED
        if self.job is not None:
            self.job.detach()

    # -- running --------------------------------------------------------------

    def _new_job(self, run: QueuedRun) -> DetachedJob:
        job = DetachedJob(run.run_dir, marker=BENCH_MARKER, name="the benchmark", parent=self)
        job.sig_event_received.connect(self._on_job_event_received)
        job.sig_log_line.connect(self.sig_log_line)
        job.sig_finished.connect(self._on_job_finished)
        return job

    def _follow(self, run: QueuedRun, job: DetachedJob) -> None:
        if self.job is not None:
            self.job.deleteLater()
        self.current, self.job = run, job
        run.state = RunStatus.RUNNING
        run.items = []
        self.sig_run_started.emit(run)
        self.sig_queue_changed.emit()

    def _start_next(self) -> None:
        if self.current is not None:
            return
        run = next((r for r in self.runs if r.state == RunStatus.QUEUED), None)
        if run is None:
            return
        job = self._new_job(run)
        try:
            job.start(run.command())
        except JobError as exc:
            run.state, run.error = RunStatus.FAILED, str(exc)
            job.deleteLater()
            self.sig_run_finished.emit(run)
            self.sig_queue_changed.emit()
            self._start_next()
            return
        self._record_start(run, job)
        self._follow(run, job)

    def _record_start(self, run: QueuedRun, job: DetachedJob) -> None:
        """The run's row (as the worker would write it, so it shows at once) with the worker's pid."""
        row_id = run.config.ensure_row(self.store)
        self.store.update_eval_run(row_id, status=RunStatus.RUNNING.value, pid=job.pid(), started_at=job.started_at,
                                   finished_at=None, error=None)

    @Slot(object)
    def _on_job_event_received(self, event: Event) -> None:
        run, job = self.current, self.job
        if run is None or job is None or not job.in_attempt(event):
            return  # an earlier attempt's event (a resumed run's folder holds them all)
        if isinstance(event, Started):
            run.total = int(event.info.get("total") or 0) or None
            run.stage = "load"
        elif isinstance(event, Progress):
            run.progress = event
            run.stage = event.stage
            self.sig_run_progressed.emit(run)
        elif isinstance(event, Result) and isinstance(payload := parse_payload(event.data), Item):
            item = {k: v for k, v in payload.to_data().items() if k != "kind"}
            run.items.append(item)
            self.sig_item_scored.emit(run, item)
        elif isinstance(event, Error):
            run.error = event.message
        elif isinstance(event, Done):
            summary = event.data.get("summary")
            if isinstance(summary, dict):
                run.summary = summary

    @Slot(object)
    def _on_job_finished(self, outcome: JobOutcome) -> None:
        run = self.current
        self.current = None
        if run is None:
            return
        run.exit_code = outcome.exit_code
        run.state = outcome.status
        if run.state in (RunStatus.FAILED, RunStatus.CRASHED):
            run.error = outcome.message or run.error or outcome.describe()
        self._record_end(run, outcome)
        self.sig_run_finished.emit(run)
        self.sig_queue_changed.emit()
        self._start_next()

    def _record_end(self, run: QueuedRun, outcome: JobOutcome) -> None:
        """What the worker could not write in its row: that it crashed, or its end if it never wrote one."""
        row = self.store.eval_run_by_dir(str(run.run_dir.resolve()))
        fields = end_fields(row["status"], outcome) if row is not None else None
        if row is not None and fields is not None:
            self.store.update_eval_run(row["id"], **fields, **summary_fields(run.summary))


def summary_fields(summary: dict[str, Any] | None) -> dict[str, Any]:
    """The accuracy and count of a `done` event's summary, for a row its worker could not write
    (the worker's database could not be opened: the History still shows the score)."""
    if not summary:
        return {}
    overall = (summary.get("scores") or {}).get("overall") or {}
    return {"accuracy": overall.get("accuracy"), "n_items": summary.get("n_scored")}
