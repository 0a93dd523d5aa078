"""Launching, following, stopping and resuming one fine-tune, and its row in the database.

One mechanism for every case: the trainer always runs as its own process session
(`python -m trainer run RUN_DIR/config.yaml`, stdout discarded, stderr appended to
RUN_DIR/worker.log), never as a QProcess child, so it outlives the window when the user
leaves a run going. The GUI follows it the same way whether it started it a moment ago or
finds it still running on the next start: it tails RUN_DIR/events.jsonl (the trainer writes
every event there itself) and worker.log, and watches the pid. The outcome (done, stopped,
failed) is read from the events of the current attempt — those written after its start time
— because a detached process's exit code is not always ours to collect.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal, Slot

from medalpaca_desktop.core import paths
from medalpaca_desktop.core.events import Done, Error, Event, LineBuffer, Metric, parse_line
from medalpaca_desktop.core.store import Store
from medalpaca_desktop.ui.job_runner import DEFAULT_ENV
from trainer.commands import train_command
from trainer.config import ConfigError, TrainConfig

EVENTS_FILE = "events.jsonl"
WORKER_LOG = "worker.log"
CONFIG_FILE = "config.yaml"
POLL_MS = 400
STDERR_TAIL_LINES = 40
EXIT_BAD_CONFIG = 2


class RunError(Exception):
    """A run cannot be launched or resumed; the message is one sentence for the user."""


# --------------------------------------------------------------------------- run folders


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:limit] or "model"


def model_label(base_model: str) -> str:
    """A short name for a base model path: the folder or file name without .gguf."""
    path = Path(base_model)
    if path.name.lower().endswith(".gguf"):
        return path.name[: -len(".gguf")]
    if path.name.startswith("snapshots") or re.fullmatch(r"[0-9a-f]{40}", path.name or ""):
        return path.parent.parent.name.removeprefix("models--").replace("--", "/")
    return path.name or base_model


def new_run_dir(config: TrainConfig, root: Path | None = None) -> Path:
    """A fresh run folder name: `YYYYmmdd-HHMMSS-<model>-<method>` (unique within `root`)."""
    root = Path(root) if root is not None else paths.runs_dir()
    stem = f"{datetime.now():%Y%m%d-%H%M%S}-{_slug(model_label(config.base_model))}-{config.method}"
    candidate, n = root / stem, 2
    while candidate.exists():
        candidate, n = root / f"{stem}-{n}", n + 1
    return candidate


def last_checkpoint(run_dir: str | Path) -> tuple[int, Path] | None:
    """(step, folder) of the newest complete checkpoint, or None."""
    best: tuple[int, Path] | None = None
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return None
    for child in folder.glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", child.name)
        if match and child.is_dir() and (best is None or int(match[1]) > best[0]):
            best = (int(match[1]), child)
    return best


def register_run(store: Store, config_path: str | Path) -> int:
    """The training_runs row for a config (new, or the existing one of its run folder)."""
    try:
        config = TrainConfig.load(config_path)
    except ConfigError as exc:
        raise RunError(f"The config cannot run: {exc}") from None
    run_dir = Path(config.output_dir).expanduser().resolve()
    for row in store.training_runs():
        if Path(row["run_dir"]).resolve() == run_dir:
            if row["status"] == "running" and pid_is_running(row["pid"]):
                raise RunError(f"The run in {run_dir} is already running.")
            return int(row["id"])
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"Cannot create the run folder {run_dir}: {exc.strerror or exc}.") from None
    target = run_dir / CONFIG_FILE
    if Path(config_path).resolve() != target:
        config.save(target)  # the run folder always holds the config it runs with
    return store.create_training_run(run_dir.name, str(run_dir), method=config.method,
                                     base_model=config.base_model, data=list(config.data), config=config.to_dict())


# --------------------------------------------------------------------------- processes


def pid_is_running(pid: int | None) -> bool:
    """True while `pid` is a live trainer process (not a zombie, not a reused pid)."""
    if not pid or sys.platform == "win32":
        return False
    try:
        os.kill(int(pid), 0)
    except OSError:  # gone, or another user's process (then not ours)
        return False
    proc = Path(f"/proc/{int(pid)}")
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("Z", "X"):
            return False
        cmdline = (proc / "cmdline").read_bytes()
        if cmdline and b"trainer" not in cmdline:
            return False  # the pid now belongs to another program
    except (OSError, IndexError):
        pass  # no /proc (macOS): os.kill's answer stands
    return True


class _FileTail:
    """New whole lines of a file that another process appends to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self._buffer = LineBuffer()

    def read_lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                if size < self.offset:  # replaced or truncated: start over
                    self.offset, self._buffer = 0, LineBuffer()
                fh.seek(self.offset)
                chunk = fh.read()
        except OSError:
            return []
        self.offset += len(chunk)
        return self._buffer.feed(chunk)

    def flush(self) -> list[str]:
        return self._buffer.flush()


# --------------------------------------------------------------------------- outcome


def decide_outcome(events: list[Event], exit_code: int | None, stop_requested: bool,
                   stderr_tail: list[str]) -> tuple[str, str]:
    """(status, message) of an attempt that ended, from its events, exit code and log."""
    done = next((e for e in reversed(events) if isinstance(e, Done)), None)
    errors = [e for e in events if isinstance(e, Error)]
    steps = _last_step(events)
    if done is not None and done.ok and not done.stopped:
        steps = done.data.get("steps", steps)
        text = f"Finished after {steps} steps." if steps is not None else "Finished."
        loss = done.data.get("train_loss")
        if isinstance(loss, (int, float)):
            text += f" Final training loss {loss:.4f}."
        after = done.data.get("after_errors") or []
        if after:
            text += " Some after-training steps failed: " + "; ".join(map(str, after))
        return "done", text
    if (done is not None and done.stopped) or (stop_requested and not errors):
        at = f" at step {steps}" if steps is not None else ""
        if done is not None and done.stopped:
            return "stopped", f"Stopped{at} with a checkpoint; Resume continues from it."
        return "stopped", f"Stopped{at}; Resume continues from the last saved checkpoint."
    if errors:
        return "failed", errors[-1].message
    last = next((ln.strip() for ln in reversed(stderr_tail) if ln.strip()), "")
    if exit_code == EXIT_BAD_CONFIG and last:
        return "failed", last.removeprefix("error: ")
    how = "was killed" if exit_code is None or exit_code < 0 else f"ended with exit code {exit_code}"
    text = f"The trainer {how} before finishing."
    if last:
        text += f" Last message: {last}"
    return "failed", text


def _last_step(events: list[Event]) -> int | None:
    for event in reversed(events):
        if isinstance(event, Metric) and event.step is not None and "loss" in event.values:
            return int(event.step)
    return None


def last_loss(events: list[Event]) -> float | None:
    for event in reversed(events):
        if isinstance(event, Done) and isinstance(event.data.get("train_loss"), (int, float)):
            return float(event.data["train_loss"])
        if isinstance(event, Metric) and isinstance(event.values.get("loss"), (int, float)):
            return float(event.values["loss"])
    return None


# --------------------------------------------------------------------------- the session


class RunSession(QObject):
    """Follows one run's trainer process; owns the run's status in the database.

    Signals: every event read from events.jsonl (in order), every worker.log line,
    and the end of an attempt with its status (done / stopped / failed) and message.
    """

    sig_event_received = Signal(object)  # core.events.Event
    sig_log_line = Signal(str)
    sig_state_changed = Signal(str)  # "running", "stopping"
    sig_finished = Signal(str, str)  # status, message

    def __init__(self, store: Store, run_id: int, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.run_id = run_id
        row = self.row()
        self.run_dir = Path(row["run_dir"])
        self.events: list[Event] = []
        self.log_lines: collections.deque[str] = collections.deque(maxlen=5000)
        self.pid: int | None = row["pid"]
        self.started_at: float | None = row["started_at"]
        self.exit_code: int | None = None
        self.stop_requests = 0
        self.state = "idle"
        self.outcome: tuple[str, str] | None = None
        self._popen: subprocess.Popen | None = None
        self._events_tail = _FileTail(self.run_dir / EVENTS_FILE)
        self._log_tail = _FileTail(self.run_dir / WORKER_LOG)
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._timer = QTimer(self, interval=POLL_MS)
        self._timer.timeout.connect(self._on_timer_timeout)

    # -- state ------------------------------------------------------------------------

    def row(self) -> dict[str, Any]:
        for row in self.store.training_runs():
            if row["id"] == self.run_id:
                return row
        raise RunError(f"Run {self.run_id} is not in the database.")

    def is_running(self) -> bool:
        return self.state in ("running", "stopping")

    def config_path(self) -> Path:
        return self.run_dir / CONFIG_FILE

    # -- starting ---------------------------------------------------------------------

    def start(self, resume: bool = False, env: dict[str, str] | None = None) -> None:
        """Start the trainer (a new run, or `--resume` from the last checkpoint); env adds variables."""
        if self.is_running():
            raise RunError("This run is already running.")
        if not self.config_path().is_file():
            raise RunError(f"The run's config {self.config_path()} is missing; start a new run instead.")
        self._read_new()  # earlier attempts' events and log lines, so the history stays complete
        self._stderr_tail.clear()
        self.exit_code, self.stop_requests, self.outcome = None, 0, None
        argv = train_command(self.config_path(), resume=resume)
        environment = {**os.environ, **DEFAULT_ENV, **(env or {})}
        self.started_at = time.time()
        try:
            with open(self.run_dir / WORKER_LOG, "ab") as log:
                log.write(f"\n=== {datetime.now():%Y-%m-%d %H:%M:%S} {' '.join(argv)}\n".encode())
                log.flush()
                self._popen = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, cwd=self.run_dir,
                    env=environment, close_fds=True, start_new_session=True)
        except OSError as exc:
            self._popen = None
            raise RunError(f"Could not start the trainer: {exc.strerror or exc}.") from None
        self.pid = self._popen.pid
        self.store.update_training_run(self.run_id, status="running", pid=self.pid, started_at=self.started_at,
                                       finished_at=None, error=None)
        self._set_state("running")
        self._timer.start()

    def attach(self) -> None:
        """Follow a run an earlier app session left running (or record how it ended meanwhile)."""
        self._set_state("running")
        self._timer.start()
        self._poll()

    # -- stopping ---------------------------------------------------------------------

    def stop(self) -> None:
        """First call: graceful stop (checkpoint, then exit). Second: leave now. Third: kill."""
        if not self.is_running() or not self.pid:
            return
        self.stop_requests += 1
        try:
            if self.stop_requests <= 2:
                os.kill(self.pid, signal.SIGINT)
            else:
                self._kill()
        except OSError:
            pass
        self._set_state("stopping")

    def _kill(self) -> None:
        assert self.pid is not None
        kill = getattr(signal, "SIGKILL", signal.SIGTERM)
        try:
            if hasattr(os, "killpg") and os.getpgid(self.pid) == self.pid:
                os.killpg(self.pid, kill)  # the trainer leads its own group (accelerate's children too)
                return
        except OSError:
            pass
        os.kill(self.pid, kill)

    def detach(self) -> None:
        """Stop following; the trainer keeps running (the app is closing)."""
        self._timer.stop()
        if self._popen is not None and self._popen.poll() is None:
            self._popen.returncode = 0  # not ours to reap any more; keeps Popen.__del__ quiet
        self._popen = None

    # -- following --------------------------------------------------------------------

    @Slot()
    def _on_timer_timeout(self) -> None:
        self._poll()

    def _poll(self) -> None:
        alive = self._alive()
        self._read_new()
        if not alive:
            self._read_new(final=True)
            self._finish()

    def _alive(self) -> bool:
        if self._popen is not None:
            code = self._popen.poll()
            if code is None:
                return True
            self.exit_code = code
            return False
        return pid_is_running(self.pid)

    def _read_new(self, final: bool = False) -> None:
        lines = self._log_tail.read_lines() + (self._log_tail.flush() if final else [])
        for raw in lines:
            # a progress bar redraws itself with carriage returns: keep what it shows last
            line = next((part for part in reversed(raw.split("\r")) if part.strip()), "") if "\r" in raw else raw
            self.log_lines.append(line)
            self._stderr_tail.append(line)
            self.sig_log_line.emit(line)
        lines = self._events_tail.read_lines() + (self._events_tail.flush() if final else [])
        for line in lines:
            event = parse_line(line)
            if event is None:
                continue
            self.events.append(event)
            self.sig_event_received.emit(event)

    def attempt_events(self) -> list[Event]:
        """Events written since the current attempt started."""
        start = self.started_at or 0.0
        return [e for e in self.events if e.time >= start]

    def _finish(self) -> None:
        self._timer.stop()
        self._popen = None
        status, message = decide_outcome(self.attempt_events(), self.exit_code, self.stop_requests > 0,
                                         list(self._stderr_tail))
        self.outcome = (status, message)
        self.store.update_training_run(self.run_id, status=status, finished_at=time.time(),
                                       final_loss=last_loss(self.events), pid=None,
                                       error=message if status == "failed" else None)
        self._set_state(status)
        self.sig_finished.emit(status, message)

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.sig_state_changed.emit(state)
