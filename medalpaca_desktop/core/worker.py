"""One start-up for every worker command: events on stdout, graceful stop, one error, one exit code.

Every worker's `main` (`python -m trainer run|preview`, `python -m bench run`, the chat host,
`medalpaca download`, `medalpaca export`) runs its job through `run_worker`, so each behaves
the same for the GUI and for a person at a terminal:

- stdout carries only events (`EventWriter.claim_stdout`); what libraries print lands on
  stderr, the worker's log. A terminal mode passes its own writer (`TerminalWriter`) instead;
- the first SIGINT/SIGTERM asks the job to stop (`Worker.stop`, core.stop_signals), a second
  one leaves at once;
- an exception the job did not expect becomes one `error` event (one sentence for a person)
  and a `done`, with the whole traceback in the worker's log (stderr, or a file in the logs
  folder when stderr is a terminal: no traceback on a person's screen);
- the process stays off the network (core.offline), except the download job;
- the exit status is a `core.jobs.ExitCode`.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medalpaca_desktop.core.events import Done, Error, Event, EventWriter, Warning
from medalpaca_desktop.core.jobs import ExitCode
from medalpaca_desktop.core.offline import stay_offline
from medalpaca_desktop.core.stop_signals import install_stop_handlers, restore_handlers

#: Set by a launcher for the processes it starts (accelerate's ranks): the pid the job is known by.
JOB_PID_ENV = "MEDALPACA_JOB_PID"


@dataclass
class Worker:
    """What a job gets from `run_worker`: where its events go, and whether it was asked to stop."""

    writer: EventWriter
    stop: threading.Event

    def emit(self, event: Event) -> None:
        self.writer.emit(event)


def describe_exception(exc: BaseException) -> str:
    """'TypeName: first line of the message', short enough for one line in a list."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:500]


def job_pid() -> int:
    """The pid that stands for this job: ours, or the launcher's when one started several ranks.

    The GUI follows and stops a detached job by this pid, so it must be the process it started.
    """
    try:
        return int(os.environ[JOB_PID_ENV])
    except (KeyError, ValueError):
        return os.getpid()


def run_worker(job: Callable[[Worker], int], *, name: str, writer: EventWriter | None = None,
               log_path: str | Path | None = None, interrupt: bool = False) -> ExitCode:
    """Run `job(worker)` as the worker process's whole life; returns its exit code.

    `writer`: events for a person (a terminal mode); by default stdout is claimed for events,
    which are also appended to `log_path`. `interrupt`: the first stop signal raises
    KeyboardInterrupt in the job, for jobs that cannot look at `worker.stop` (a download in a
    socket read, the chat host waiting on stdin). `name` says whose error it was.
    BrokenPipeError (a terminal reader that went away) is left to the caller.
    """
    stay_offline()  # the download job lifts it for itself (hub.download.allow_network)
    writer = writer if writer is not None else EventWriter.claim_stdout(log_path)
    stop = threading.Event()
    done: list[Done] = []
    writer.listen(lambda event: done.append(event) if isinstance(event, Done) else None)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = install_stop_handlers(stop, at_once=interrupt)
    try:
        return ExitCode(job(Worker(writer, stop)))
    except KeyboardInterrupt:
        if not done:
            writer.emit(Done(ok=False, stopped=True))
        return ExitCode.STOPPED
    except BrokenPipeError:
        raise
    except Exception as exc:  # noqa: BLE001 - the one place an unexpected failure becomes an event
        detail = traceback.format_exc()
        where = log_traceback(name, detail)
        writer.emit(Error(message=f"The {name} job failed unexpectedly ({describe_exception(exc)}); {where} has "
                                  "the details.", kind="internal", detail=detail[-4000:]))
        if not done:
            writer.emit(Done(ok=False))
        return ExitCode.FAILED
    finally:
        if previous is not None:
            restore_handlers(previous)
        writer.close()


def log_traceback(name: str, detail: str) -> str:
    """Put a traceback in the worker's log and say where: stderr when it is a log file (the GUI's
    workers), a file in the logs folder when stderr is a person's terminal, which sees one sentence."""
    text = f"{name}: unexpected error\n{detail}"
    if not sys.stderr.isatty():
        print(text, file=sys.stderr, flush=True)
        return "its log"
    try:
        from medalpaca_desktop.core.paths import logs_dir

        path = logs_dir() / f"{name.replace(' ', '-')}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        path.write_text(text, encoding="utf-8")
        os.chmod(path, 0o600)
        return str(path)
    except OSError:
        print(text, file=sys.stderr, flush=True)  # no log file possible: the screen is the only log
        return "the text above"


class TerminalWriter(EventWriter):
    """Events for a person: errors and warnings as lines on stderr; every event still in `log_path`."""

    def __init__(self, prog: str, log_path: str | Path | None = None) -> None:
        super().__init__(None, log_path)
        self.prog = prog

    def emit(self, event: Any) -> None:
        super().emit(event)
        if isinstance(event, Error):
            print(f"\n{self.prog}: error: {event.message}", file=sys.stderr, flush=True)
        elif isinstance(event, Warning):
            print(f"{self.prog}: warning: {event.message}", file=sys.stderr, flush=True)
