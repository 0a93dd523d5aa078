"""Run short blocking functions off the UI thread; results come back by signal.

The anki `taskman` pattern: a worker thread never touches a widget. It queues a
closure and emits one signal; the signal is delivered on the main thread (the
TaskManager lives there), which runs the closure. Model discovery and file
inspection use this so the window appears and stays responsive at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from PySide6.QtCore import QObject, QThreadPool, Signal, Slot

T = TypeVar("T")

Closure = Callable[[], None]


class TaskManager(QObject):
    """A small thread pool whose callbacks always run on the main thread."""

    _sig_closures_pending = Signal()

    def __init__(self, parent: QObject | None = None, max_threads: int = 2) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max_threads)
        self._lock = threading.Lock()
        self._closures: list[Closure] = []
        self._closing = False
        self._sig_closures_pending.connect(self._on_self_closures_pending)

    def run_in_background(
        self,
        task: Callable[[], T],
        on_done: Callable[[T], None],
        on_failed: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Call `task()` on a pool thread, then `on_done(result)` on the main thread.

        An exception in `task` goes to `on_failed` (also on the main thread); without
        one it is re-raised there, so it is never silently lost.
        """

        def work() -> None:
            try:
                result = task()
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                error = exc

                def report() -> None:
                    if on_failed is None:
                        raise error
                    on_failed(error)

                self.run_on_main(report)
            else:
                self.run_on_main(lambda: on_done(result))

        self._pool.start(work)

    def run_on_main(self, closure: Closure) -> None:
        """Queue `closure` for the main thread; safe to call from any thread."""
        with self._lock:
            if self._closing:
                return
            self._closures.append(closure)
        self._sig_closures_pending.emit()

    @Slot()
    def _on_self_closures_pending(self) -> None:
        with self._lock:
            closures, self._closures = self._closures, []
        for closure in closures:
            closure()

    def active_count(self) -> int:
        return self._pool.activeThreadCount()

    def wait_idle(self, timeout_ms: int = -1) -> bool:
        """Block until no task runs (for shutdown and tests, never from a slot)."""
        return self._pool.waitForDone(timeout_ms)

    def shutdown(self, timeout_ms: int = 3000) -> None:
        """Drop queued work and results; give running tasks a moment to end."""
        with self._lock:
            self._closing = True
            self._closures.clear()
        self._pool.clear()
        self._pool.waitForDone(timeout_ms)


def describe_exception(exc: BaseException) -> str:
    """One line for a person: the message, never a traceback."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(exc, (ValueError, OSError)) and first:
        return first
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


__all__ = ["TaskManager", "describe_exception"]
