"""The one vocabulary of jobs: exit codes, run statuses, and how an ended attempt is judged.

Every worker command (`python -m trainer`, `python -m bench`, the chat host, the download
worker, `medalpaca ...`) exits with an `ExitCode`; every run row, queue entry and GUI job
speaks `RunStatus`. Qt-free and torch-free, so the GUI, the workers and the terminal
commands share it.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """What a worker's exit status means (README: 0 success, 1 failure, 2 bad input, 130 stopped)."""

    OK = 0
    FAILED = 1  # the job ran and failed (out of memory, a library error)
    BAD_INPUT = 2  # the request was wrong (config, file, flag); nothing heavy ran
    NOT_AVAILABLE = 3  # this installation cannot do it (a missing optional part)
    STOPPED = 130  # stopped on request (SIGINT/SIGTERM, Ctrl+C); 128 + SIGINT as shells report it


class RunStatus(str, enum.Enum):
    """The state of a run or a job, in the database and in the GUI.

    `crashed` is a worker that ended without saying so (killed, out of memory, a native
    crash): it differs from `failed` (the worker reported an error) in that what it had
    saved is intact and the run can usually be resumed.
    """

    CREATED = "created"
    QUEUED = "queued"  # waiting in the GUI's queue; never stored
    RUNNING = "running"
    DONE = "done"
    STOPPED = "stopped"
    FAILED = "failed"
    CRASHED = "crashed"
    CANCELLED = "cancelled"  # taken off the queue before it started; never stored

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES

    @property
    def is_active(self) -> bool:
        return self in (RunStatus.QUEUED, RunStatus.RUNNING)

    @property
    def resumable(self) -> bool:
        return self in (RunStatus.STOPPED, RunStatus.CRASHED, RunStatus.FAILED)


FINAL_STATUSES = frozenset({RunStatus.DONE, RunStatus.STOPPED, RunStatus.FAILED, RunStatus.CRASHED,
                            RunStatus.CANCELLED})
# What a run row in the database may hold.
STORED_STATUSES = (RunStatus.CREATED, RunStatus.RUNNING, RunStatus.STOPPED, RunStatus.FAILED,
                   RunStatus.CRASHED, RunStatus.DONE)


def decide_status(*, done_ok: bool | None, done_stopped: bool = False, exit_code: int | None,
                  killed: bool = False, stop_requested: bool = False, had_error: bool = False) -> RunStatus:
    """How an attempt ended, from what the worker said and how its process ended.

    `done_ok` is None when no `done` event arrived; `exit_code` is None when it is unknown (a
    detached process this app did not start); `killed` when a signal ended the process.
    A worker that exits on purpose uses an `ExitCode`; one that ends without a `done` event,
    killed or with an unknown or foreign exit status, has crashed.
    """
    if done_ok and not done_stopped and not killed and exit_code in (None, ExitCode.OK):
        return RunStatus.DONE
    if done_stopped or exit_code == ExitCode.STOPPED or (stop_requested and not had_error):
        return RunStatus.STOPPED
    if done_ok is None and not killed and exit_code == ExitCode.OK and not had_error:
        return RunStatus.DONE  # a one-shot command that prints its answer instead of events
    if had_error or done_ok is False:
        return RunStatus.FAILED
    if not killed and exit_code in (ExitCode.FAILED, ExitCode.BAD_INPUT, ExitCode.NOT_AVAILABLE):
        return RunStatus.FAILED  # it exited on purpose; its last log line says why
    return RunStatus.CRASHED
