"""Progress with ETA for every long task, as events and as a terminal line."""

from __future__ import annotations

import sys
import time
from typing import IO

from medalpaca_desktop.core.events import EventWriter, Progress
from medalpaca_desktop.core.model_info import format_size


def format_duration(seconds: float | None) -> str:
    """'1h 02m', '3m 07s', '12s'; '?' when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


class ProgressReporter:
    """Tracks one stage's progress, derives rate and ETA, and reports it.

    Reports go to an EventWriter (for the GUI) and/or a terminal stream (a single
    rewritten line); both are throttled to `min_interval` seconds except the last.
    """

    def __init__(
        self,
        stage: str,
        total: float | None,
        unit: str = "",
        events: EventWriter | None = None,
        terminal: IO[str] | None = None,
        min_interval: float = 0.25,
    ) -> None:
        self.stage = stage
        self.total = total
        self.unit = unit
        self.current = 0.0
        self._events = events
        self._terminal = terminal
        self._min_interval = min_interval
        self._start = time.monotonic()
        self._last_report = 0.0

    @classmethod
    def for_terminal(cls, stage: str, total: float | None, unit: str = "",
                     events: EventWriter | None = None) -> ProgressReporter:
        """Terminal output only when stderr is a person's terminal or no events are wanted."""
        terminal = sys.stderr if (events is None or sys.stderr.isatty()) else None
        return cls(stage, total, unit, events=events, terminal=terminal)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def snapshot(self, message: str = "") -> Progress:
        elapsed = self.elapsed
        rate = self.current / elapsed if elapsed > 0 and self.current > 0 else None
        eta = None
        if rate and self.total is not None:
            eta = max(0.0, (self.total - self.current) / rate)
        return Progress(stage=self.stage, current=self.current, total=self.total, unit=self.unit,
                        rate=rate, eta_s=eta, message=message)

    def update(self, current: float, message: str = "", force: bool = False) -> None:
        self.current = current
        now = time.monotonic()
        if not force and now - self._last_report < self._min_interval:
            return
        self._last_report = now
        event = self.snapshot(message)
        if self._events is not None:
            self._events.emit(event)
        if self._terminal is not None:
            self._terminal.write("\r" + self.describe(event) + "\x1b[K")
            self._terminal.flush()

    def advance(self, amount: float = 1.0, message: str = "") -> None:
        self.update(self.current + amount, message)

    def finish(self, message: str = "") -> None:
        if self.total is not None:
            self.current = self.total
        self.update(self.current, message, force=True)
        if self._terminal is not None:
            self._terminal.write("\n")
            self._terminal.flush()

    @staticmethod
    def describe(event: Progress) -> str:
        """One human line: 'Writing tensors  42% (21/50 tensors) ETA 3s  msg'."""
        parts = [event.stage]
        if event.total:
            pct = 100.0 * (event.fraction or 0.0)
            parts.append(f"{pct:3.0f}% ({event.current:g}/{event.total:g} {event.unit})".rstrip())
            parts.append(f"ETA {format_duration(event.eta_s)}")
        else:
            parts.append(f"{event.current:g} {event.unit}".rstrip())
        if event.message:
            parts.append(event.message)
        return "  ".join(parts)


def describe_download(event: Progress) -> str:
    """'42% · 3.3 GB of 7.9 GB · 12.1 MB/s · about 6m 20s left · file.gguf (1/2)': the terminal's line
    and the download dialog's status read the same."""
    if event.stage == "verify":
        pct = f"{100 * (event.fraction or 0):.0f}% · " if event.total else ""
        return f"Checking sha256 {pct}{event.message}"
    parts = []
    if event.total:
        parts.append(f"{100 * (event.fraction or 0):.0f}%")
        done = format_size(int(event.current)) if event.current else "0 B"
        parts.append(f"{done} of {format_size(int(event.total))}")
    if event.rate:
        parts.append(f"{format_size(int(event.rate))}/s")
    else:
        parts.append("waiting for data from the hub…" if event.rate == 0 else "measuring speed…")
    if event.eta_s is not None:
        parts.append(f"about {format_duration(event.eta_s)} left")
    if event.message and event.message != "done":
        parts.append(event.message)
    return " · ".join(parts)
