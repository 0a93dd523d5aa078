"""A job that is the window's child: a QProcess whose stdout carries the events.

For what belongs to the window and ends with it: the chat host (requests on stdin), the
data preview, the devices probe, downloads, exports, re-scoring.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, Slot

from medalpaca_desktop.core.events import LineBuffer, parse_line
from medalpaca_desktop.core.jobs import RunStatus
from medalpaca_desktop.ui.jobs.job import DEFAULT_ENV, Job

OUTPUT_LIMIT_CHARS = 4_000_000  # collected non-event stdout, for commands that print one JSON document


class PipeJob(Job):
    """A QProcess child: start, read events from stdout, send requests on stdin, stop."""

    def __init__(self, parent: QObject | None = None, *, collect_output: bool = False, name: str = "the job") -> None:
        super().__init__(parent, name=name)
        self._collect_output = collect_output
        self._process: QProcess | None = None
        self._stdout = LineBuffer()
        self._stderr = LineBuffer()
        self._output: list[str] = []
        self._output_chars = 0
        self._accepts_requests = False

    # -- starting -------------------------------------------------------------

    def is_running(self) -> bool:
        return self._process is not None and self._process.state() != QProcess.ProcessState.NotRunning

    def pid(self) -> int | None:
        if self._process is None:
            return None
        pid = self._process.processId()
        return int(pid) if pid else None

    def start(self, program: str, args: Sequence[str] = (), env: Mapping[str, str] | None = None,
              cwd: str | Path | None = None, accepts_requests: bool = False) -> None:
        """Start `program args`; env adds to (and overrides) the app's environment.

        `accepts_requests`: the job reads JSON-line requests on stdin (the chat host).
        Otherwise stdin is closed at once so a child that reads it sees EOF.
        """
        if self.is_running():
            raise RuntimeError("this job already runs")
        if self._process is not None:
            self._process.deleteLater()
            self._process = None
        self._begin([program, *args])
        self._stdout, self._stderr = LineBuffer(), LineBuffer()
        self._output, self._output_chars = [], 0
        self._accepts_requests = accepts_requests

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

    # -- talking to the job ---------------------------------------------------

    def send(self, request: Mapping[str, Any]) -> bool:
        """Write one JSON request line to the job's stdin; False if it cannot take one."""
        if not self.is_running() or not self._accepts_requests:
            return False
        line = json.dumps(dict(request), ensure_ascii=False, separators=(",", ":")) + "\n"
        assert self._process is not None
        return self._process.write(line.encode("utf-8")) >= 0

    def kill_now(self, timeout_ms: int = 2000) -> None:
        """Kill and reap the job at once; for app shutdown only (it waits briefly)."""
        if not self.is_running():
            return
        assert self._process is not None
        self.outcome.stop_requested = True
        self.outcome.escalation = "kill"
        self._process.kill()
        self._process.waitForFinished(timeout_ms)

    def _ask(self) -> None:
        """A `{"type": "stop"}` request when the job reads requests, otherwise SIGINT."""
        assert self._process is not None
        if self._accepts_requests:
            self.send({"type": "stop"})
            self._process.closeWriteChannel()
        elif not self._send_signal(signal.SIGINT):
            self._process.closeWriteChannel()

    def _terminate(self) -> None:
        assert self._process is not None
        self._process.terminate()

    def _kill(self) -> None:
        assert self._process is not None
        self._process.kill()

    def _send_signal(self, signum: int) -> bool:
        pid = self.pid()
        if pid is None or sys.platform == "win32":
            return False
        try:
            os.kill(pid, signum)
        except OSError:
            return False
        return True

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
            self._log_line(line)

    def _handle_stdout_line(self, line: str) -> None:
        event = parse_line(line)
        if event is not None:
            self._dispatch(event)
            return
        if self._collect_output and self._output_chars < OUTPUT_LIMIT_CHARS:
            self._output.append(line)
            self._output_chars += len(line) + 1
        if line.strip():
            self._log_line(line, tail=False)

    # -- ending ---------------------------------------------------------------

    @Slot(QProcess.ProcessError)
    def _on_process_error_occurred(self, error: QProcess.ProcessError) -> None:
        if error != QProcess.ProcessError.FailedToStart or self._process is None:
            return  # crashes and the like end in `finished`, handled there
        program = self.outcome.command[0] if self.outcome.command else "?"
        self._finish(None, False, status=RunStatus.FAILED,
                     message=f"Could not start {program}: {self._process.errorString()}")

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
            self._log_line(line)
        self.outcome.output = "\n".join(self._output)
        killed = exit_status == QProcess.ExitStatus.CrashExit
        self._finish(None if killed else exit_code, killed)
