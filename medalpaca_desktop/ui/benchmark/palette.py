"""Colours and names shared by the Benchmark tab's views.

Okabe–Ito: a palette whose colours stay distinct for the common colour-vision
deficiencies (Okabe & Ito, "Color Universal Design", 2008).
"""

from __future__ import annotations

from PySide6.QtGui import QColor

OKABE_ITO: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#F0E442",  # yellow
    "#000000",  # black
)

STEP_ORDER: tuple[str, ...] = ("step1", "step2", "step3", "step2&3")
OVERALL = "overall"


def series_color(index: int) -> QColor:
    return QColor(OKABE_ITO[index % len(OKABE_ITO)])


def step_name(step: str) -> str:
    """'step1' -> 'Step 1', 'step2&3' -> 'Step 2&3', 'overall' -> 'Overall', '' -> 'No step'."""
    if step == OVERALL:
        return "Overall"
    if not step:
        return "No step"
    if step.lower().startswith("step"):
        return "Step " + step[4:]
    return step


def step_sort_key(step: str) -> tuple[int, str]:
    """Steps in exam order, unknown ones after, overall last."""
    if step == OVERALL:
        return (99, step)
    if step in STEP_ORDER:
        return (STEP_ORDER.index(step), step)
    return (50, step)


def percent(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f} %"
