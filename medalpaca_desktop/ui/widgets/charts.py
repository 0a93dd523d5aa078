"""A small live line chart on pyqtgraph: named series of (x, y) points, appended as they arrive.

Why a wrapper: every chart in the app (training loss, learning rate, throughput, benchmark
curves) needs the same few things — a title, a legend, points appended one at a time without
redrawing on every event, a whole history set at once when a finished run is redrawn, and a
line of text in place of an empty plot. Redraws are coalesced on a short timer so a replay of
thousands of events costs one redraw.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtWidgets import QLabel, QStackedLayout, QVBoxLayout, QWidget

pg.setConfigOptions(antialias=True, background="w", foreground="#333333")

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
REDRAW_MS = 100


@dataclass
class _Series:
    name: str
    item: pg.PlotDataItem
    in_legend: bool = False
    legend: bool = True  # False: a band's edge, named by the band's legend entry
    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)


class LineChart(QWidget):
    """One plot with a title, axis labels, a legend and named series."""

    def __init__(self, title: str, y_label: str = "", x_label: str = "step", *, empty_text: str = "No data yet.",
                 log_y: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot_widget = pg.PlotWidget()
        self.plot_widget.setMinimumHeight(150)
        plot = self.plot_widget.getPlotItem()
        plot.setTitle(title, size="10pt")
        plot.setLabel("bottom", x_label)
        if y_label:
            plot.setLabel("left", y_label)
        plot.showGrid(x=True, y=True, alpha=0.25)
        plot.setLogMode(y=log_y)
        plot.setMenuEnabled(False)
        self.legend = plot.addLegend(offset=(-8, 8))
        self.plot = plot
        self._log_y = log_y
        self._series: dict[str, _Series] = {}

        self.empty_label = QLabel(empty_text)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setWordWrap(True)
        self.empty_label.setStyleSheet("color: #777; background: white; border: 1px solid #ddd;")
        self._stack = QStackedLayout()
        self._stack.addWidget(self.empty_label)
        self._stack.addWidget(self.plot_widget)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self._stack)
        self.setToolTip(title)

        self._redraw_timer = QTimer(self, singleShot=True, interval=REDRAW_MS)
        self._redraw_timer.timeout.connect(self._on_redraw_timer_timeout)
        self._dirty: set[str] = set()

    # -- series -----------------------------------------------------------------------

    def add_series(self, key: str, name: str, color: str | None = None, *, symbol: str | None = None,
                   dashed: bool = False) -> None:
        """Declare a series (its legend entry appears once it has points)."""
        color = color or PALETTE[len(self._series) % len(PALETTE)]
        pen = pg.mkPen(color, width=2, style=Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine)
        item = pg.PlotDataItem([], [], pen=pen, symbol=symbol, symbolSize=6, symbolBrush=color, symbolPen=color)
        self.plot.addItem(item)
        self._series[key] = _Series(name, item)

    def add_band(self, low: str, high: str, name: str, color: str) -> None:
        """Declare two series drawn as a shaded band between them (a confidence interval)."""
        edge = pg.mkPen(color, width=1, style=Qt.PenStyle.DotLine)
        items = []
        for key in (low, high):
            item = pg.PlotDataItem([], [], pen=edge)
            self.plot.addItem(item)
            self._series[key] = _Series(name, item, legend=key == low)
            items.append(item)
        shade = pg.mkColor(color)
        shade.setAlpha(50)
        fill = pg.FillBetweenItem(items[0], items[1], brush=pg.mkBrush(shade))
        fill.setZValue(-10)
        self.plot.addItem(fill)

    def series_keys(self) -> list[str]:
        return list(self._series)

    def append(self, key: str, x: float, y: float | None) -> None:
        """Add one point (ignored when y is missing or not finite, or ≤ 0 on a log axis)."""
        if y is None or not self._plottable(y):
            return
        series = self._series[key]
        series.xs.append(float(x))
        series.ys.append(float(y))
        self._mark_dirty(key)

    def set_points(self, key: str, points: Iterable[tuple[float, float]]) -> None:
        """Replace a series' points (a finished run redrawn at once)."""
        series = self._series[key]
        pairs = [(float(x), float(y)) for x, y in points if y is not None and self._plottable(y)]
        series.xs = [p[0] for p in pairs]
        series.ys = [p[1] for p in pairs]
        self._mark_dirty(key)

    def truncate_after(self, x: float) -> None:
        """Drop points beyond x in every series (a run resumed from an earlier checkpoint)."""
        for key, series in self._series.items():
            keep = [i for i, value in enumerate(series.xs) if value <= x]
            if len(keep) != len(series.xs):
                series.xs = [series.xs[i] for i in keep]
                series.ys = [series.ys[i] for i in keep]
                self._mark_dirty(key)

    def clear(self) -> None:
        for key, series in self._series.items():
            series.xs, series.ys = [], []
            self._mark_dirty(key)
        self.flush()

    def points(self, key: str) -> list[tuple[float, float]]:
        """The points given so far (what the chart shows once redrawn)."""
        series = self._series[key]
        return list(zip(series.xs, series.ys))

    def drawn_points(self, key: str) -> list[tuple[float, float]]:
        """The points the pyqtgraph item holds now (tests read the chart back through this)."""
        xs, ys = self._series[key].item.getOriginalDataset()  # as given, before log mapping
        if xs is None or ys is None:
            return []
        return [(float(x), float(y)) for x, y in zip(xs, ys)]

    def has_points(self) -> bool:
        return any(series.xs for series in self._series.values())

    def set_empty_text(self, text: str) -> None:
        self.empty_label.setText(text)

    # -- drawing ----------------------------------------------------------------------

    def _plottable(self, y: float) -> bool:
        try:
            value = float(y)
        except (TypeError, ValueError):
            return False
        return math.isfinite(value) and (value > 0 or not self._log_y)

    def _mark_dirty(self, key: str) -> None:
        self._dirty.add(key)
        if not self._redraw_timer.isActive():
            self._redraw_timer.start()

    @Slot()
    def _on_redraw_timer_timeout(self) -> None:
        self.flush()

    def flush(self) -> None:
        """Draw pending points now."""
        self._redraw_timer.stop()
        for key in self._dirty:
            series = self._series[key]
            series.item.setData(series.xs, series.ys)
            if series.legend and bool(series.xs) != series.in_legend:  # only series with points are named
                if series.xs:
                    self.legend.addItem(series.item, series.name)
                else:
                    self.legend.removeItem(series.item)
                series.in_legend = bool(series.xs)
        self._dirty.clear()
        self._stack.setCurrentWidget(self.plot_widget if self.has_points() else self.empty_label)

