"""Graceful stop for worker jobs: the first SIGINT/SIGTERM asks, a second one leaves at once.

Why one place: the trainer (checkpoint, then stop) and the benchmark (finish or cut the
current question, write a partial summary) stop the same way, and the GUI relies on it.
"""

from __future__ import annotations

import signal
import threading


def install_stop_handlers(stop: threading.Event) -> None:
    """First SIGINT/SIGTERM sets `stop` (the job winds down itself); a second raises KeyboardInterrupt."""

    def handler(signum, frame):  # noqa: ANN001, ANN202
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
