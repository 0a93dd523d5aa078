"""Grouped accuracy bars per Step and overall, with 95 % CI whiskers and the paper's scores.

The Suite view draws the same chart with tasks as the groups (`set_groups`) and no paper bars.

pyqtgraph (already a dependency): BarGraphItem per series, ErrorBarItem for the
intervals, exported as PNG or SVG with pyqtgraph.exporters. The paper's models are
a separate series kind (hatched bars, toggled on and off) so they are never
mistaken for runs made on this computer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyqtgraph as pg
import pyqtgraph.exporters
from PySide6.QtCore import QRectF, Qt, Signal, Slot
from PySide6.QtGui import QAction, QBrush, QPainter, QPen
from PySide6.QtSvg import QSvgGenerator
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QMenu, QToolButton, QVBoxLayout, QWidget

from medalpaca_desktop.ui.benchmark.palette import OVERALL, percent, series_color, step_name, step_sort_key

GROUP_WIDTH = 0.8
MAX_VALUE_LABELS = 40  # above this many bars the numbers would overlap; the tooltip table has them
DEFAULT_REFERENCE = ("MedAlpaca 7b", "MedAlpaca 13b", "LLaMA 7b")
STEP_TITLE = "Accuracy per Step with 95 % confidence intervals"
EMPTY_TEXT = "No results to draw yet: run a benchmark, or open a run from the History."


@dataclass
class ChartSeries:
    """One row of bars: a run (scores per step incl. overall) or one of the paper's models."""

    label: str
    scores: dict[str, dict] = field(default_factory=dict)  # step -> Score dict (accuracy, ci_low, ci_high, n)
    reference: bool = False


def _accuracy(score: dict | float | None) -> float | None:
    if score is None:
        return None
    if isinstance(score, (int, float)):
        return float(score)
    value = score.get("accuracy")
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


class BenchBarChart(QWidget):
    """The chart view with its controls (paper toggle, which paper models) and exports."""

    sig_reference_toggled = Signal(bool)

    def __init__(self, parent: QWidget | None = None, *, title: str = STEP_TITLE, with_reference: bool = True,
                 empty_text: str = EMPTY_TEXT) -> None:
        super().__init__(parent)
        self.title_text = title
        self._group_key: Callable[[str], tuple[int, str]] = step_sort_key
        self._group_name: Callable[[str], str] = step_name
        pg.setConfigOptions(antialias=True)
        self.view = pg.GraphicsLayoutWidget()
        self.view.setBackground("w")
        self.title = pg.LabelItem("", color="#222", size="12pt")
        self.view.addItem(self.title, row=0, col=0)
        self.plot = self.view.addPlot(row=1, col=0)
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.showGrid(y=True, alpha=0.25)
        for name in ("left", "bottom"):
            axis = self.plot.getAxis(name)
            axis.setPen(pg.mkPen("#444"))
            axis.setTextPen(pg.mkPen("#222"))
        self.plot.setLabel("left", "Accuracy")
        self.plot.getAxis("left").setTicks([[(v / 10, f"{v * 10} %") for v in range(0, 11, 2)],
                                            [(v / 10, "") for v in range(0, 11)]])
        self.legend = pg.LegendItem(colCount=3, labelTextColor="#222", labelTextSize="10pt")
        self.view.addItem(self.legend, row=2, col=0)
        self.caption = pg.LabelItem("", color="#555", size="9pt", justify="left")
        self.view.addItem(self.caption, row=3, col=0)

        self.runs: list[ChartSeries] = []
        self.reference_series: list[ChartSeries] = []
        self.reference_source = ""
        self.chance: float | None = None
        self.bar_items: dict[str, pg.BarGraphItem] = {}
        self.error_items: dict[str, pg.ErrorBarItem] = {}
        self.bar_positions: dict[str, dict[str, float]] = {}  # label -> step -> x
        self.groups: list[str] = []

        self.reference_check = QCheckBox("Paper's reference scores")
        self.reference_check.setToolTip("Show the MedAlpaca paper's reported accuracies (USMLE self-assessment, "
                                        "text-only questions) as hatched bars beside your runs")
        self.reference_check.toggled.connect(self._on_reference_check_toggled)
        self.reference_button = QToolButton()
        self.reference_button.setText("Paper models…")
        self.reference_button.setToolTip("Choose which of the paper's models are drawn")
        self.reference_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.reference_menu = QMenu(self.reference_button)
        self.reference_button.setMenu(self.reference_menu)
        self.empty_label = QLabel(empty_text)
        self.empty_label.setStyleSheet("color: #666;")
        self.empty_label.setWordWrap(True)
        controls = QHBoxLayout()
        controls.addWidget(self.reference_check)
        controls.addWidget(self.reference_button)
        controls.addStretch(1)
        controls.addWidget(self.empty_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(controls)
        layout.addWidget(self.view, 1)
        self.reference_check.setVisible(with_reference)
        self.reference_button.setVisible(with_reference)
        self.redraw()

    # -- data -----------------------------------------------------------------

    def set_runs(self, runs: list[ChartSeries]) -> None:
        self.runs = list(runs)
        self.redraw()

    def set_reference(self, models: dict[str, dict[str, float]], source: str = "",
                      shown: tuple[str, ...] = DEFAULT_REFERENCE) -> None:
        """The paper's table; `shown` picks the models drawn at first (all can be ticked in the menu)."""
        self.reference_source = source
        self.reference_series = [ChartSeries(name, dict(scores), reference=True) for name, scores in models.items()]
        self.reference_menu.clear()
        for series in self.reference_series:
            action = QAction(series.label, self.reference_menu)
            action.setCheckable(True)
            action.setChecked(series.label in shown)
            action.toggled.connect(self.redraw)
            self.reference_menu.addAction(action)
        self.redraw()

    def set_groups(self, order: list[str], names: dict[str, str]) -> None:
        """Draw the groups in this order with these tick labels (the Suite view: tasks, then the average)."""
        rank = {g: i for i, g in enumerate(order)}
        self._group_key = lambda g: (rank.get(g, len(rank)), g)
        self._group_name = lambda g: names.get(g, g)
        self.redraw()

    def set_chance(self, chance: float | None) -> None:
        """Draw a dashed line at the accuracy of guessing (1 / number of options)."""
        self.chance = chance
        self.redraw()

    def shown_reference(self) -> list[ChartSeries]:
        if not self.reference_check.isChecked():
            return []
        ticked = {a.text() for a in self.reference_menu.actions() if a.isChecked()}
        return [s for s in self.reference_series if s.label in ticked]

    def set_reference_models(self, names: list[str]) -> None:
        for action in self.reference_menu.actions():
            action.setChecked(action.text() in names)

    @Slot(bool)
    def _on_reference_check_toggled(self, checked: bool) -> None:
        self.reference_button.setEnabled(checked)
        self.redraw()
        self.sig_reference_toggled.emit(checked)

    # -- drawing --------------------------------------------------------------

    def all_series(self) -> list[ChartSeries]:
        """The runs, then the paper's models on the Steps the runs have (MedQA's "step2&3" matches none)."""
        reference = self.shown_reference()
        if self.runs:
            steps = {step for run in self.runs for step in run.scores}
            reference = [ChartSeries(r.label, {k: v for k, v in r.scores.items() if k in steps}, reference=True)
                         for r in reference]
        return self.runs + reference

    @Slot()
    def redraw(self) -> None:
        self.plot.clear()
        self.legend.clear()
        self.bar_items.clear()
        self.error_items.clear()
        self.bar_positions.clear()
        self.reference_button.setEnabled(self.reference_check.isChecked() and bool(self.reference_series))
        series_list = self.all_series()
        longest = max((len(s.label) + (8 if s.reference else 0) for s in series_list), default=0)
        self.legend.setColumnCount(3 if longest <= 30 else 2 if longest <= 48 else 1)
        self.empty_label.setVisible(not self.runs)
        steps = {step for s in series_list for step, score in s.scores.items() if _accuracy(score) is not None}
        self.groups = sorted(steps, key=self._group_key)
        self.plot.getAxis("bottom").setTicks([[(i, self._group_name(g)) for i, g in enumerate(self.groups)]])
        self.title.setText(self.title_text if self.runs else "")
        # Bars of one group are centred on it, whatever series have a value there (the paper has no
        # "overall"), with one bar width for the whole chart.
        present = {g: [i for i, s in enumerate(series_list) if _accuracy(s.scores.get(g)) is not None]
                   for g in self.groups}
        count = max([1, *(len(v) for v in present.values())])
        bar_width = GROUP_WIDTH / count
        total_bars = sum(len(v) for v in present.values())
        for index, series in enumerate(series_list):
            slots = {g: members.index(index) - len(members) / 2 for g, members in present.items() if index in members}
            self._draw_series(index, series, bar_width, slots, label_values=total_bars <= MAX_VALUE_LABELS)
        if self.chance is not None and self.groups:
            line = pg.InfiniteLine(pos=self.chance, angle=0,
                                   pen=pg.mkPen("#777", width=1, style=Qt.PenStyle.DashLine),
                                   label=f"chance {percent(self.chance, 0)}",
                                   labelOpts={"position": 0.995, "color": "#555", "anchors": [(1, 1), (1, 1)]})
            self.plot.addItem(line)
        right = 1.0 if self.chance is not None else 0.6  # room for the chance line's label
        self.plot.setXRange(-0.6, max(0, len(self.groups) - 1) + right, padding=0)
        self.plot.setYRange(0, 1.08, padding=0)
        self.caption.setText(self._caption_text())

    def _draw_series(self, index: int, series: ChartSeries, bar_width: float, slots: dict[str, float],
                     label_values: bool) -> None:
        color = series_color(index)
        xs, heights, lows, highs = [], [], [], []
        positions: dict[str, float] = {}
        for g, group in enumerate(self.groups):
            value = _accuracy(series.scores.get(group))
            if value is None:
                continue
            x = g + (slots[group] + 0.5) * bar_width
            positions[group] = x
            xs.append(x)
            heights.append(value)
            score = series.scores[group]
            if isinstance(score, dict) and score.get("ci_low") is not None and score.get("ci_high") is not None:
                lows.append(value - float(score["ci_low"]))
                highs.append(float(score["ci_high"]) - value)
            else:
                lows.append(math.nan)
                highs.append(math.nan)
        if not xs:
            return
        if series.reference:
            brush = QBrush(color, Qt.BrushStyle.BDiagPattern)
            pen = QPen(color, 1.5)
            name = f"{series.label} (paper)"
        else:
            brush = QBrush(color)
            pen = QPen(color.darker(140), 1)
            name = series.label
        pen.setCosmetic(True)
        bars = pg.BarGraphItem(x=xs, height=heights, width=bar_width * 0.92, brush=brush, pen=pen, name=name)
        self.plot.addItem(bars)
        self.legend.addItem(bars, name)
        self.bar_items[series.label] = bars
        self.bar_positions[series.label] = positions
        with_ci = [i for i, v in enumerate(lows) if not math.isnan(v)]
        if with_ci:
            errors = pg.ErrorBarItem(x=_pick(xs, with_ci), y=_pick(heights, with_ci), top=_pick(highs, with_ci),
                                     bottom=_pick(lows, with_ci), beam=bar_width * 0.35,
                                     pen=pg.mkPen("#222", width=1.3))
            self.plot.addItem(errors)
            self.error_items[series.label] = errors
        if label_values:
            for i, (x, h) in enumerate(zip(xs, heights)):
                top = h + (highs[i] if not math.isnan(highs[i]) else 0.0)
                text = pg.TextItem(f"{h * 100:.0f}", color="#222", anchor=(0.5, 1.0))
                text.setPos(x, top + 0.005)
                self.plot.addItem(text)

    def _caption_text(self) -> str:
        parts = []
        if self.runs:
            parts.append("Bars: accuracy; whiskers: 95 % Wilson interval; numbers: accuracy in %.")
        if self.shown_reference():
            parts.append(f"Hatched: {self.reference_source or 'the paper'}")
            parts.append("(the paper's own questions and protocol: for orientation, not a like-for-like comparison)")
        return "<br>".join(parts)  # one line each: a long caption would widen the whole layout

    # -- reading back (tests, tooltips) ----------------------------------------

    def bar_heights(self, label: str) -> dict[str, float]:
        """Step -> bar height as drawn for one series (read from the BarGraphItem)."""
        bars = self.bar_items[label]
        heights = list(bars.opts["height"])
        xs = list(bars.opts["x"])
        by_x = dict(zip(xs, heights))
        return {step: float(by_x[x]) for step, x in self.bar_positions[label].items()}

    def whiskers(self, label: str) -> dict[str, tuple[float, float]]:
        """Step -> (low, high) of the drawn interval."""
        errors = self.error_items[label]
        xs, ys = list(errors.opts["x"]), list(errors.opts["y"])
        tops, bottoms = list(errors.opts["top"]), list(errors.opts["bottom"])
        drawn = {x: (y - b, y + t) for x, y, t, b in zip(xs, ys, tops, bottoms)}
        return {step: drawn[x] for step, x in self.bar_positions[label].items() if x in drawn}

    # -- export ---------------------------------------------------------------

    def export_png(self, path: str | Path, width: int = 1600) -> Path:
        exporter = pg.exporters.ImageExporter(self.view.ci)
        exporter.parameters()["width"] = width
        exporter.export(str(path))
        return Path(path)

    def export_svg(self, path: str | Path) -> Path:
        """Vector export through QSvgGenerator.

        pyqtgraph 0.14's SVGExporter cannot parse the path data Qt 6.11 writes
        (ValueError in correctCoordinates), so the scene is rendered straight into an
        SVG painter instead: same items, same look, still vectors.
        """
        source = self.view.ci.sceneBoundingRect()
        generator = QSvgGenerator()
        generator.setFileName(str(path))
        generator.setSize(source.size().toSize())
        generator.setViewBox(QRectF(0, 0, source.width(), source.height()))
        generator.setTitle(self.title.text or "Benchmark accuracy")
        generator.setDescription(self._caption_text().replace("<br>", " "))
        painter = QPainter(generator)
        try:
            self.view.scene().render(painter, QRectF(0, 0, source.width(), source.height()), source)
        finally:
            painter.end()
        return Path(path)


def _pick(values: list[float], indices: list[int]) -> np.ndarray:
    return np.array([values[i] for i in indices], dtype=float)  # ErrorBarItem does arithmetic on them


__all__ = ["BenchBarChart", "ChartSeries", "OVERALL"]
