"""A job's Progress event on a QProgressBar: busy when the total is unknown, else the share and the ETA."""

from __future__ import annotations

from PySide6.QtWidgets import QProgressBar

from medalpaca_desktop.core.events import Progress
from medalpaca_desktop.core.progress import format_duration


def set_fraction(bar: QProgressBar, fraction: float | None) -> None:
    """A busy bar for None, else 0-1000 filled to `fraction`."""
    if fraction is None:
        bar.setRange(0, 0)
    else:
        bar.setRange(0, 1000)
        bar.setValue(int(fraction * 1000))


def show_progress(bar: QProgressBar, event: Progress) -> None:
    """The event's share with its ETA ("42% · ETA 1m 5s"), or a busy bar."""
    set_fraction(bar, event.fraction)
    if event.fraction is not None:
        eta = f" · ETA {format_duration(event.eta_s)}" if event.eta_s is not None else ""
        bar.setFormat(f"{event.fraction:.0%}{eta}")
