"""Run one worker process and turn its JSON-line stdout into Qt signals.

Modelled on qutebrowser's `misc/guiprocess.py`: a QObject owns a QProcess and an
outcome dataclass. Output is parsed as it arrives (never only at the end), bad
lines are logged, not fatal, and stopping escalates ask -> terminate -> kill on
QTimers, so the UI thread never waits on a child.
"""

from __future__ import annotations

import collections
import enum
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal, Slot

from medalpaca_desktop.core.events import Done, Error, Event, LineBuffer, Progress, Token, parse_line

STDERR_TAIL_LINES = 50
OUTPUT_LIMIT_CHARS = 4_000_000  # collected non-event stdout, for commands that print one JSON document

DEFAULT_ENV = {
    "HF_HUB_OFFLINE": "1",  # nothing leaves the machine unless the user starts a download
    "PYTHONUNBUFFERED": "1",
    "PYTHONIOENCODING": "utf-8",
}


class JobStatus(str, enum.Enum):
    NOT_STARTED = "not started"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
    CRASHED = "crashed"


@dataclass
class JobOutcome:
    """How a job went; complete once `sig_finished` has been emitted."""

    status: JobStatus = JobStatus.NOT_STARTED
    exit_code: int | None = None
    error_message: str | None = None  # from the last `error` event, or why it crashed
    error_detail: str | None = None
    stderr_tail: list[str] = field(default_factory=list)
    done: Done | None = None
    stop_requested: bool = False
    escalation: str | None = None  # "terminate" / "kill" when asking was not enough
    output: str = ""  # stdout lines that were not events (when collect_output=True)
    command: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == JobStatus.SUCCEEDED

    @property
    def finished(self) -> bool:
        return self.status not in (JobStatus.NOT_STARTED, JobStatus.RUNNING)

    def describe(self) -> str:
        """A paragraph for a person: what happened and the last log lines."""
        text = self.error_message or f"The job {self.status.value}."
        if self.status in (JobStatus.FAILED, JobStatus.CRASHED) and self.stderr_tail:
            tail = "\n".join(self.stderr_tail[-10:])
            text += f"\n\nLast lines of its log:\n{tail}"
        return text


class JobRunner(QObject):
    """One worker process at a time: start, read events, send requests, stop.

    Signals carry parsed events (`core.events.Event` subclasses); lines that are
    not events, and every stderr line, arrive as `sig_log_line`.
    """

    sig_job_started = Signal()
    sig_event_received = Signal(object)  # core.events.Event
    sig_progress_changed = Signal(object)  # core.events.Progress
    sig_token_received = Signal(str)
    sig_log_line = Signal(str)
    sig_error_occurred = Signal(str)  # failed or crashed: message + last stderr lines
    sig_finished = Signal(object)  # JobOutcome

    def __init__(self, parent: QObject | None = None, *, collect_output: bool = False) -> None:
        super().__init__(parent)
        self._collect_output = collect_output
        self._process: QProcess | None = None
        self._stdout = LineBuffer()
        self._stderr = LineBuffer()
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._output: list[str] = []
        self._output_chars = 0
        self._accepts_requests = False
        self._last_error: Error | None = None
        self.outcome = JobOutcome()
        self._terminate_timer = QTimer(self, singleShot=True)
        self._terminate_timer.timeout.connect(self._on_terminate_timer_timeout)
        self._kill_timer = QTimer(self, singleShot=True)
        self._kill_timer.timeout.connect(self._on_kill_timer_timeout)
        self._kill_grace_ms = 3000

    # -- starting -------------------------------------------------------------

    def is_running(self) -> bool:
        return self._process is not None and self._process.state() != QProcess.ProcessState.NotRunning

    def pid(self) -> int | None:
        if self._process is None:
            return None
        pid = self._process.processId()
        return int(pid) if pid else None

    def start(
        self,
        program: str,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        accepts_requests: bool = False,
    ) -> None:
        """Start `program args`; env adds to (and overrides) the app's environment.

        `accepts_requests`: the job reads JSON-line requests on stdin (the chat
        host). Otherwise stdin is closed at once so a child that reads it sees EOF.
        """
        if self.is_running():
            raise RuntimeError("this JobRunner already runs a job")
        self._reset()
        self._accepts_requests = accepts_requests
        self.outcome = JobOutcome(status=JobStatus.RUNNING, command=[program, *args])

        environment = QProcessEnvironment.systemEnvironment()
        for key, value in {**DEFAULT_ENV, **(env or {})}.items():
            environment.insert(key, value)

        process = QProcess(self)
        process.setProcessEnvironment(environment)
        process.setProcessChannelMode(QProcess.ProcessChannelMode.SeparateChannels)
        if cwd is not None:
            process.setWorkingDirectory(str(cwd))
        process.readyReadStandardOutput.connect(self._on_process_ready_read_stdout)
        process.readyReadStandardError.connect(self._on_process_ready_read_stderr)
        process.started.connect(self._on_process_started)
        process.finished.connect(self._on_process_finished)
        process.errorOccurred.connect(self._on_process_error_occurred)
        self._process = process
        process.start(program, list(args))

    def _reset(self) -> None:
        self._stdout = LineBuffer()
        self._stderr = LineBuffer()
        self._stderr_tail.clear()
        self._output = []
        self._output_chars = 0
        self._last_error = None
        self._terminate_timer.stop()
        self._kill_timer.stop()
        if self._process is not None:
            self._process.deleteLater()
            self._process = None

    # -- talking to the job ---------------------------------------------------

    def send(self, request: Mapping[str, Any]) -> bool:
        """Write one JSON request line to the job's stdin; False if it cannot take one."""
        if not self.is_running() or not self._accepts_requests:
            return False
        line = json.dumps(dict(request), ensure_ascii=False, separators=(",", ":")) + "\n"
        assert self._process is not None
        return self._process.write(line.encode("utf-8")) >= 0

    def stop(self, grace_s: float = 5.0, kill_grace_s: float = 3.0) -> None:
        """Ask the job to end, then terminate, then kill; returns at once.

        Asking is a `{"type": "stop"}` request when the job reads requests,
        otherwise SIGINT (the workers' graceful stop: a trainer saves a checkpoint).
        """
        if not self.is_running() or self.outcome.stop_requested:
            return
        self.outcome.stop_requested = True
        assert self._process is not None
        if self._accepts_requests:
            self.send({"type": "stop"})
            self._process.closeWriteChannel()
        elif not self._send_signal(signal.SIGINT):
            self._process.closeWriteChannel()
        self._kill_grace_ms = int(kill_grace_s * 1000)
        self._terminate_timer.start(int(grace_s * 1000))

    def kill_now(self, timeout_ms: int = 2000) -> None:
        """Kill and reap the job at once; for app shutdown only (it waits briefly)."""
        if not self.is_running():
            return
        assert self._process is not None
        self.outcome.stop_requested = True
        self.outcome.escalation = "kill"
        self._process.kill()
        self._process.waitForFinished(timeout_ms)

    def _send_signal(self, signum: int) -> bool:
        pid = self.pid()
        if pid is None or sys.platform == "win32":
            return False
        try:
            os.kill(pid, signum)
        except OSError:
            return False
        return True

    @Slot()
    def _on_terminate_timer_timeout(self) -> None:
        if not self.is_running():
            return
        assert self._process is not None
        self.outcome.escalation = "terminate"
        self._emit_log(f"[job did not stop when asked; terminating pid {self.pid()}]")
        self._process.terminate()
        self._kill_timer.start(self._kill_grace_ms)

    @Slot()
    def _on_kill_timer_timeout(self) -> None:
        if not self.is_running():
            return
        assert self._process is not None
        self.outcome.escalation = "kill"
        self._emit_log(f"[job ignored terminate; killing pid {self.pid()}]")
        self._process.kill()

    # -- reading --------------------------------------------------------------

    @Slot()
    def _on_process_started(self) -> None:
        if not self._accepts_requests and self._process is not None:
            self._process.closeWriteChannel()
        self.sig_job_started.emit()

    @Slot()
    def _on_process_ready_read_stdout(self) -> None:
        if self._process is None:
            return
        for line in self._stdout.feed(bytes(self._process.readAllStandardOutput().data())):
            self._handle_stdout_line(line)

    @Slot()
    def _on_process_ready_read_stderr(self) -> None:
        if self._process is None:
            return
        for line in self._stderr.feed(bytes(self._process.readAllStandardError().data())):
            self._handle_stderr_line(line)

    def _handle_stdout_line(self, line: str) -> None:
        event = parse_line(line)
        if event is None:
            if self._collect_output and self._output_chars < OUTPUT_LIMIT_CHARS:
                self._output.append(line)
                self._output_chars += len(line) + 1
            if line.strip():
                self._emit_log(line)
            return
        self._dispatch(event)

    def _handle_stderr_line(self, line: str) -> None:
        self._stderr_tail.append(line)
        self._emit_log(line)

    def _emit_log(self, line: str) -> None:
        self.sig_log_line.emit(line)

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, Error):
            self._last_error = event
        elif isinstance(event, Done):
            self.outcome.done = event
        self.sig_event_received.emit(event)
        if isinstance(event, Progress):
            self.sig_progress_changed.emit(event)
        elif isinstance(event, Token):
            self.sig_token_received.emit(event.text)

    # -- ending ---------------------------------------------------------------

    @Slot(QProcess.ProcessError)
    def _on_process_error_occurred(self, error: QProcess.ProcessError) -> None:
        if error != QProcess.ProcessError.FailedToStart or self._process is None:
            return  # crashes and the like end in `finished`, handled there
        program = self.outcome.command[0] if self.outcome.command else "?"
        self.outcome.error_message = f"Could not start {program}: {self._process.errorString()}"
        self._finish(JobStatus.FAILED, exit_code=None)

    @Slot(int, QProcess.ExitStatus)
    def _on_process_finished(self, exit_code: int, exit_status: QProcess.ExitStatus) -> None:
        if self._process is None:
            return
        # Whatever is still buffered arrives before the outcome is decided.
        self._on_process_ready_read_stdout()
        self._on_process_ready_read_stderr()
        for line in self._stdout.flush():
            self._handle_stdout_line(line)
        for line in self._stderr.flush():
            self._handle_stderr_line(line)
        crashed = exit_status == QProcess.ExitStatus.CrashExit
        self._finish(self._decide_status(exit_code, crashed), exit_code=None if crashed else exit_code)

    def _decide_status(self, exit_code: int, crashed: bool) -> JobStatus:
        done = self.outcome.done
        if done is not None and done.ok and not done.stopped and exit_code == 0 and not crashed:
            return JobStatus.SUCCEEDED
        if self.outcome.stop_requested:
            return JobStatus.STOPPED
        if done is not None and done.stopped:
            return JobStatus.STOPPED
        if crashed:
            self._set_crash_message("was killed by a signal")
            return JobStatus.CRASHED
        if exit_code != 0 and done is None:
            self._set_crash_message(f"ended unexpectedly with exit code {exit_code}")
            return JobStatus.CRASHED
        if exit_code != 0 or (done is not None and not done.ok) or self._last_error is not None:
            return JobStatus.FAILED
        return JobStatus.SUCCEEDED

    def _set_crash_message(self, what: str) -> None:
        if self._last_error is None:
            last = next((ln for ln in reversed(self._stderr_tail) if ln.strip()), "")
            self.outcome.error_message = f"The job {what}." + (f" Last message: {last.strip()}" if last else "")

    def _finish(self, status: JobStatus, exit_code: int | None) -> None:
        self._terminate_timer.stop()
        self._kill_timer.stop()
        outcome = self.outcome
        outcome.status = status
        outcome.exit_code = exit_code
        outcome.stderr_tail = list(self._stderr_tail)
        outcome.output = "\n".join(self._output)
        if self._last_error is not None:
            outcome.error_message = self._last_error.message
            outcome.error_detail = self._last_error.detail
        elif status == JobStatus.FAILED and not outcome.error_message:
            outcome.error_message = f"The job failed (exit code {exit_code})."
        if status in (JobStatus.FAILED, JobStatus.CRASHED):
            self.sig_error_occurred.emit(outcome.describe())
        self.sig_finished.emit(outcome)
