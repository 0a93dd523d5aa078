"""What every GUI job shares: the outcome, event dispatch, the stop policy and the outcome rule.

Modelled on qutebrowser's `misc/guiprocess.py`: a QObject owns a process and an outcome
dataclass. Output is parsed as it arrives, bad lines are logged, not fatal. Stopping asks
first (a stdin request or SIGINT: the workers' graceful stop), then terminates, then kills,
on QTimers so the UI thread never waits on a child; pressing Stop again skips to the next
step. How an attempt ended is decided by `core.jobs.decide_status`, the workers' own rule.
A transport (pipe.py, detached.py) supplies the process and calls `_begin`, `_dispatch`,
`_log_line` and `_finish`.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, QTimer, Signal, Slot

from medalpaca_desktop.core.events import Done, Error, Event, Progress, Token
from medalpaca_desktop.core.jobs import RunStatus, decide_status

STDERR_TAIL_LINES = 50

DEFAULT_ENV = {
    "HF_HUB_OFFLINE": "1",  # nothing leaves the machine unless the user starts a download
    "PYTHONUNBUFFERED": "1",
    "PYTHONIOENCODING": "utf-8",
}

_ERROR_PREFIX = re.compile(r"^(?:[\w .-]+: )?error: ")  # "error: x", "python -m bench: error: x"


@dataclass
class JobOutcome:
    """How a job went; complete once `sig_finished` has been emitted."""

    status: RunStatus = RunStatus.CREATED
    exit_code: int | None = None
    message: str | None = None  # from the last `error` event, or why it failed or crashed
    detail: str | None = None
    stderr_tail: list[str] = field(default_factory=list)
    done: Done | None = None
    stop_requested: bool = False
    escalation: str | None = None  # "terminate" / "kill" when asking was not enough
    output: str = ""  # stdout lines that were not events (a pipe job with collect_output=True)
    command: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == RunStatus.DONE

    @property
    def finished(self) -> bool:
        return self.status.is_final

    def describe(self) -> str:
        """A paragraph for a person: what happened and the last log lines."""
        text = self.message or f"The job {self.status.value}."
        if self.status in (RunStatus.FAILED, RunStatus.CRASHED) and self.stderr_tail:
            tail = "\n".join(self.stderr_tail[-10:])
            text += f"\n\nLast lines of its log:\n{tail}"
        return text


class Job(QObject):
    """One worker process at a time; a transport subclass runs it.

    Signals carry parsed events (`core.events.Event` subclasses); log lines (stderr, or
    stdout lines that are not events) arrive as `sig_log_line`.
    """

    sig_job_started = Signal()
    sig_event_received = Signal(object)  # core.events.Event
    sig_progress_changed = Signal(object)  # core.events.Progress
    sig_token_received = Signal(str)
    sig_log_line = Signal(str)
    sig_stop_requested = Signal()  # Stop was pressed (the job winds down)
    sig_error_occurred = Signal(str)  # failed or crashed: message + last log lines
    sig_finished = Signal(object)  # JobOutcome

    def __init__(self, parent: QObject | None = None, *, name: str = "the job") -> None:
        super().__init__(parent)
        self.name = name  # "the trainer", in messages: "The trainer was killed by a signal."
        self.outcome = JobOutcome()
        self._last_error: Error | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._terminate_timer = QTimer(self, singleShot=True)
        self._terminate_timer.timeout.connect(self._on_terminate_timer_timeout)
        self._kill_timer = QTimer(self, singleShot=True)
        self._kill_timer.timeout.connect(self._on_kill_timer_timeout)
        self._kill_grace_ms = 3000

    # -- the transport's part -------------------------------------------------

    def is_running(self) -> bool:
        raise NotImplementedError

    def pid(self) -> int | None:
        raise NotImplementedError

    def _ask(self) -> None:
        """Ask the job to end on its own (a stop request or SIGINT)."""
        raise NotImplementedError

    def _terminate(self) -> None:
        raise NotImplementedError

    def _kill(self) -> None:
        raise NotImplementedError

    # -- stopping -------------------------------------------------------------

    def stop(self, grace_s: float = 5.0, kill_grace_s: float = 3.0) -> None:
        """Ask the job to end, then terminate, then kill; returns at once.

        A second call while the job is stopping skips to the next step at once.
        """
        if not self.is_running():
            return
        if self.outcome.stop_requested:
            self._escalate()
            return
        self.outcome.stop_requested = True
        self._kill_grace_ms = int(kill_grace_s * 1000)
        self._ask()
        self._terminate_timer.start(int(grace_s * 1000))
        self.sig_stop_requested.emit()

    @property
    def stopping(self) -> bool:
        return self.is_running() and self.outcome.stop_requested

    def _escalate(self) -> None:
        if self.outcome.escalation is None:
            self._terminate_timer.stop()
            self._on_terminate_timer_timeout()
        else:
            self._kill_timer.stop()
            self._on_kill_timer_timeout()

    @Slot()
    def _on_terminate_timer_timeout(self) -> None:
        if not self.is_running():
            return
        self.outcome.escalation = "terminate"
        self._log_line(f"[{self.name} did not stop when asked; terminating pid {self.pid()}]", tail=False)
        self._terminate()
        self._kill_timer.start(self._kill_grace_ms)

    @Slot()
    def _on_kill_timer_timeout(self) -> None:
        if not self.is_running():
            return
        self.outcome.escalation = "kill"
        self._log_line(f"[{self.name} ignored terminate; killing pid {self.pid()}]", tail=False)
        self._kill()

    # -- following ------------------------------------------------------------

    def _begin(self, command: list[str]) -> None:
        """A new attempt: a fresh outcome, no error, no tail, no pending escalation."""
        self._terminate_timer.stop()
        self._kill_timer.stop()
        self._last_error = None
        self._stderr_tail.clear()
        self.outcome = JobOutcome(status=RunStatus.RUNNING, command=list(command))

    def _log_line(self, line: str, tail: bool = True) -> None:
        if tail:
            self._stderr_tail.append(line)
        self.sig_log_line.emit(line)

    def _dispatch(self, event: Event, attempt: bool = True) -> None:
        """Emit one event; only the current attempt's (`attempt`) decide the outcome."""
        if attempt and isinstance(event, Error):
            self._last_error = event
        elif attempt and isinstance(event, Done):
            self.outcome.done = event
        self.sig_event_received.emit(event)
        if isinstance(event, Progress):
            self.sig_progress_changed.emit(event)
        elif isinstance(event, Token):
            self.sig_token_received.emit(event.text)

    def _finish(self, exit_code: int | None, killed: bool, *, status: RunStatus | None = None,
                message: str | None = None) -> None:
        """Decide the status (unless given), write the message, emit `sig_finished`."""
        self._terminate_timer.stop()
        self._kill_timer.stop()
        outcome = self.outcome
        done = outcome.done
        if status is None:
            status = decide_status(done_ok=None if done is None else done.ok,
                                   done_stopped=done is not None and done.stopped, exit_code=exit_code,
                                   killed=killed, stop_requested=outcome.stop_requested,
                                   had_error=self._last_error is not None)
        outcome.status = status
        outcome.exit_code = exit_code
        outcome.stderr_tail = list(self._stderr_tail)
        if message is not None:
            outcome.message = message
        elif self._last_error is not None:
            outcome.message, outcome.detail = self._last_error.message, self._last_error.detail
        elif status in (RunStatus.FAILED, RunStatus.CRASHED):
            outcome.message = self._why(status, exit_code, killed)
        if status in (RunStatus.FAILED, RunStatus.CRASHED):
            self.sig_error_occurred.emit(outcome.describe())
        self.sig_finished.emit(outcome)

    def _why(self, status: RunStatus, exit_code: int | None, killed: bool) -> str:
        last = next((ln.strip() for ln in reversed(self._stderr_tail) if ln.strip()), "")
        if status == RunStatus.FAILED and last:
            return _ERROR_PREFIX.sub("", last)  # it exited on purpose and said why on its last line
        if killed:
            how = "was killed by a signal"
        elif exit_code is None:
            how = "ended before finishing (its exit status is unknown: it ran without this window)"
        elif status == RunStatus.FAILED:
            how = f"failed (exit code {exit_code})"
        else:
            how = f"ended unexpectedly with exit code {exit_code}"
        name = self.name[:1].upper() + self.name[1:]
        return f"{name} {how}." + (f" Last message: {last}" if last else "")
