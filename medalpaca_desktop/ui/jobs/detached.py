"""A job in its own process session, followed through its run folder, so it outlives the window.

The worker (`python -m trainer run CFG`, `python -m bench run CFG`) runs with stdout
discarded and stderr appended to RUN_DIR/worker.log; it appends every event to
RUN_DIR/events.jsonl itself. The GUI follows it the same way whether it started it a moment
ago or finds it still running at the next start: it tails both files and watches the pid.
Events written before the current attempt began (an earlier attempt of a resumed run) are
emitted too, so a monitor can redraw the whole run, but only the attempt's own events decide
its outcome. A process this window did not start has no exit code to collect: what it wrote
decides (`core.jobs.decide_status` with exit_code None).
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Slot

from medalpaca_desktop.core.events import Event, LineBuffer, parse_line
from medalpaca_desktop.core.jobs import RunStatus
from medalpaca_desktop.ui.jobs.job import DEFAULT_ENV, Job, JobOutcome

EVENTS_FILE = "events.jsonl"
WORKER_LOG = "worker.log"
POLL_MS = 400
LOG_LINES_KEPT = 5000


class JobError(Exception):
    """A detached job cannot be started; the message is one sentence for the user."""


def pid_is_running(pid: int | None, marker: str = "") -> bool:
    """True while `pid` is a live process (not a zombie) whose command line contains `marker`.

    The marker ("trainer", "bench") tells a reused pid of another program from our worker.
    """
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
        if marker and cmdline and marker.encode() not in cmdline:
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


class DetachedJob(Job):
    """One run folder's worker: start it detached or attach to a running one, follow it, stop it."""

    def __init__(self, run_dir: str | Path, *, marker: str, name: str = "the job",
                 parent: QObject | None = None) -> None:
        super().__init__(parent, name=name)
        self.run_dir = Path(run_dir)
        self.marker = marker
        self.events: list[Event] = []  # every event of the folder, every attempt, in order
        self.log_lines: collections.deque[str] = collections.deque(maxlen=LOG_LINES_KEPT)
        self.started_at: float | None = None  # when the current attempt began
        self._pid: int | None = None
        self._popen: subprocess.Popen | None = None
        self._following = False
        self._events_tail = _FileTail(self.run_dir / EVENTS_FILE)
        self._log_tail = _FileTail(self.run_dir / WORKER_LOG)
        self._timer = QTimer(self, interval=POLL_MS)
        self._timer.timeout.connect(self._on_timer_timeout)

    # -- state ------------------------------------------------------------------------

    def is_running(self) -> bool:
        return self._following

    def pid(self) -> int | None:
        return self._pid

    def in_attempt(self, event: Event) -> bool:
        """Whether `event` belongs to the current attempt (not to an earlier one of the same folder)."""
        return self.started_at is None or event.time >= self.started_at

    # -- starting ---------------------------------------------------------------------

    def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        """Start `argv` in its own session in the run folder; env adds to the app's environment."""
        if self.is_running():
            raise JobError(f"{self.run_dir.name} is already running.")
        self._read_new()  # earlier attempts' events and log lines, so the history stays complete
        self._begin(list(argv))
        environment = {**os.environ, **DEFAULT_ENV, **(env or {})}
        self.started_at = time.time()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / WORKER_LOG, "ab") as log:
                log.write(f"\n=== {datetime.now():%Y-%m-%d %H:%M:%S} {' '.join(argv)}\n".encode())
                log.flush()
                self._popen = subprocess.Popen(
                    list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, cwd=self.run_dir,
                    env=environment, close_fds=True, start_new_session=True)
        except OSError as exc:
            self._popen = None
            raise JobError(f"Could not start {self.name}: {exc.strerror or exc}.") from None
        self._pid = self._popen.pid
        self._follow()

    def attach(self, pid: int | None, started_at: float | None) -> None:
        """Follow a worker an earlier app session left running (or find how it ended meanwhile)."""
        if self.is_running():
            return
        self._begin([])
        self._pid, self.started_at = pid, started_at
        self._follow()
        self._poll()

    def _follow(self) -> None:
        self._following = True
        self._timer.start()
        self.sig_job_started.emit()

    def detach(self) -> None:
        """Stop following; the worker keeps running (the app is closing)."""
        self._timer.stop()
        self._terminate_timer.stop()
        self._kill_timer.stop()
        self._following = False
        if self._popen is not None and self._popen.poll() is None:
            self._popen.returncode = 0  # not ours to reap any more; keeps Popen.__del__ quiet
        self._popen = None

    # -- stopping ---------------------------------------------------------------------

    def _signal(self, signum: int, group: bool = False) -> None:
        if not self._pid:
            return
        try:
            if group and hasattr(os, "killpg") and os.getpgid(self._pid) == self._pid:
                os.killpg(self._pid, signum)  # the worker leads its own group (accelerate's children too)
            else:
                os.kill(self._pid, signum)
        except OSError:
            pass

    def _ask(self) -> None:
        self._signal(signal.SIGINT)  # the worker's graceful stop (a trainer saves a checkpoint)

    def _terminate(self) -> None:
        self._signal(signal.SIGTERM)  # after SIGINT the workers take it as "leave now"

    def _kill(self) -> None:
        self._signal(getattr(signal, "SIGKILL", signal.SIGTERM), group=True)

    def kill_now(self, timeout_ms: int = 2000) -> None:
        """Kill the worker at once and record how it ended (waits briefly)."""
        if not self.is_running():
            return
        self.outcome.stop_requested = True
        self.outcome.escalation = "kill"
        self._kill()
        deadline = time.monotonic() + timeout_ms / 1000
        while self._alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        self._poll()

    # -- following --------------------------------------------------------------------

    @Slot()
    def _on_timer_timeout(self) -> None:
        self._poll()

    def _poll(self) -> None:
        if not self._following:
            return
        exit_code, killed = None, False
        alive = self._alive()
        if not alive and self._popen is not None:
            code = self._popen.returncode
            exit_code, killed = (None, True) if code is not None and code < 0 else (code, False)
        self._read_new(final=not alive)
        if not alive:
            self._timer.stop()
            self._following = False
            self._popen = None
            self._finish(exit_code, killed)

    def _alive(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        return pid_is_running(self._pid, self.marker)

    def _read_new(self, final: bool = False) -> None:
        lines = self._log_tail.read_lines() + (self._log_tail.flush() if final else [])
        for raw in lines:
            # a progress bar redraws itself with carriage returns: keep what it shows last
            line = next((part for part in reversed(raw.split("\r")) if part.strip()), "") if "\r" in raw else raw
            self.log_lines.append(line)
            self._log_line(line)
        lines = self._events_tail.read_lines() + (self._events_tail.flush() if final else [])
        for line in lines:
            event = parse_line(line)
            if event is not None:
                self.events.append(event)
                self._dispatch(event, attempt=self._following and self.in_attempt(event))


def end_fields(row_status: str | None, outcome: JobOutcome) -> dict[str, object] | None:
    """What the GUI writes into a run row after an attempt: only what the worker could not.

    `crashed` (with why) when the worker ended without a `done` event; the final status while
    the row still says running (a worker that does not write its row); otherwise nothing.
    """
    crashed = outcome.status == RunStatus.CRASHED and outcome.done is None
    if row_status != RunStatus.RUNNING.value and not crashed:
        return None
    failed = outcome.status in (RunStatus.FAILED, RunStatus.CRASHED)
    return {"status": outcome.status.value, "finished_at": time.time(), "pid": None,
            "error": outcome.message if failed else None}
