"""A worker's own row in the app database, so a run started in a terminal looks like one started in the GUI.

The trainer keeps its `training_runs` row, the benchmark its `eval_runs` row: running (with
the pid and start time the GUI follows a detached run by) when the work starts, then done,
stopped or failed with the finish time. Never `crashed`: a process cannot see its own crash,
the GUI marks it. The run folder is the record and the database only its index, so a
database that cannot be opened or written is one warning event and the run goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medalpaca_desktop.core.events import Event, Warning
from medalpaca_desktop.core.jobs import ExitCode, RunStatus
from medalpaca_desktop.core.worker import job_pid

TABLES = ("training", "eval")
WORKER_END_STATUSES = (RunStatus.DONE, RunStatus.STOPPED, RunStatus.FAILED)


def status_of(code: ExitCode) -> RunStatus:
    """The status a worker records for how it ends."""
    if code == ExitCode.OK:
        return RunStatus.DONE
    if code == ExitCode.STOPPED:
        return RunStatus.STOPPED
    return RunStatus.FAILED


class RunRow:
    """One run's row, written by the worker that runs it; every call is safe when the database is not there."""

    def __init__(self, table: str, emit: Callable[[Event], None], store_path: str | Path | None = None) -> None:
        if table not in TABLES:
            raise ValueError(f"table must be one of {TABLES}, not {table!r}")
        self.table = table
        self._emit = emit
        self._store_path = store_path
        self.store: Any = None
        self.id: int | None = None

    @property
    def active(self) -> bool:
        return self.store is not None and self.id is not None

    def open(self, find_or_create: Callable[[Any], int]) -> None:
        """Find or create the row (`find_or_create(store) -> id`) and mark it running with our pid."""
        try:
            from medalpaca_desktop.core.store import Store

            self.store = Store(self._store_path)
            self.id = int(find_or_create(self.store))
        except Exception as exc:  # noqa: BLE001 - StoreError, a full disk, a locked file: all the same here
            self._failed(exc)
            return
        self.update(status=RunStatus.RUNNING.value, pid=job_pid(), started_at=time.time(), finished_at=None,
                    error=None)

    def update(self, **fields: Any) -> None:
        if self.table == "training":
            self.call(lambda store, run_id: store.update_training_run(run_id, **fields))
        else:
            self.call(lambda store, run_id: store.update_eval_run(run_id, **fields))

    def finish(self, status: RunStatus, **fields: Any) -> None:
        """The end of this attempt: its status, when, and no live pid any more."""
        if status not in WORKER_END_STATUSES:
            raise ValueError(f"a worker ends its run as done, stopped or failed, not {status.value}")
        self.update(status=status.value, finished_at=time.time(), pid=None, **fields)

    def call(self, write: Callable[[Any, int], object]) -> None:
        """Any other write (`write(store, row_id)`); a failure turns the row off with one warning."""
        row_id = self.id
        if self.store is None or row_id is None:
            return
        try:
            write(self.store, row_id)
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)

    def close(self) -> None:
        if self.store is not None:
            try:
                self.store.close()
            finally:
                self.store = None

    def _failed(self, exc: BaseException) -> None:
        self._emit(Warning(message=f"The run is not recorded in the app database ({exc}); the run folder has "
                                   "every result."))
        self.close()
        self.id = None
