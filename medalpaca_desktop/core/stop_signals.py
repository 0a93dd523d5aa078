"""Graceful stop for worker jobs: the first SIGINT/SIGTERM asks, a second one leaves at once.

Why one place: the trainer (checkpoint, then stop) and the benchmark (finish or cut the
current question, write a partial summary) stop the same way, and the GUI relies on it.
Jobs that cannot look at a flag (a download inside a socket read, an export inside a
tensor copy, the chat host waiting on stdin) are interrupted at the first signal instead.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def install_stop_handlers(stop: threading.Event, *, at_once: bool = False) -> dict[int, Any]:
    """First SIGINT/SIGTERM sets `stop` (the job winds down itself); a second raises KeyboardInterrupt.

    `at_once`: the first signal sets `stop` and raises KeyboardInterrupt where the main thread is.
    Returns the handlers it replaced (for `restore_handlers`). Main thread only (ValueError elsewhere).
    """

    def handler(signum, frame):
        if stop.is_set() or at_once:
            stop.set()
            raise KeyboardInterrupt
        stop.set()

    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)
    return previous


def restore_handlers(previous: dict[int, Any]) -> None:
    """Put back what `install_stop_handlers` replaced (a job run inside a longer-lived process)."""
    for sig, handler in previous.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
