"""The data page's preview: `python -m trainer preview` in a subprocess, and how its answer is drawn.

The preview needs the base model's tokenizer (transformers), which the GUI process never
imports, so it runs as a one-shot command whose stdout is one JSON document.
"""

from __future__ import annotations

import html
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, QObject, QRectF, QSize, Qt, Signal, Slot
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from medalpaca_desktop.ui.jobs import JobOutcome, PipeJob
from trainer.config import TrainConfig

PREVIEW_ROWS = 5


def preview_command(config_path: str | Path, rows: int = PREVIEW_ROWS) -> list[str]:
    return [sys.executable, "-m", "trainer", "preview", str(config_path), "--json", "--rows", str(rows)]


def preview_key(config: TrainConfig) -> str:
    """What a preview depends on: a new one is needed when this changes."""
    return json.dumps([config.base_model, list(config.data), config.template, config.train_on_inputs,
                       config.max_length])


class PreviewJob(QObject):
    """One preview at a time; a request while one runs stops it (its answer would be stale) and starts."""

    sig_preview_received = Signal(object)  # the command's JSON (dict)
    sig_preview_failed = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.runner = PipeJob(self, collect_output=True)
        self.runner.sig_finished.connect(self._on_runner_finished)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)
        self._tmp = tempfile.TemporaryDirectory(prefix="medalpaca-preview-")
        self._pending: TrainConfig | None = None
        self.key = ""  # the key of the running (or last) preview

    def is_running(self) -> bool:
        return self.runner.is_running() or self._pending is not None

    def request(self, config: TrainConfig) -> None:
        if self.runner.is_running():
            self._pending = config
            self.runner.kill_now()  # its finish starts the pending one
            return
        self._start(config)

    def _start(self, config: TrainConfig) -> None:
        path = config.save(Path(self._tmp.name) / "preview.yaml")
        self.key = preview_key(config)
        command = preview_command(path)
        self.runner.start(command[0], command[1:])

    @Slot()
    def shutdown(self) -> None:
        self._pending = None
        self.runner.kill_now()

    @Slot(object)
    def _on_runner_finished(self, outcome: JobOutcome) -> None:
        if self._pending is not None:
            config, self._pending = self._pending, None
            self._start(config)
            return
        if not outcome.ok:
            self.sig_preview_failed.emit(outcome.message or outcome.describe())
            return
        try:
            result = json.loads(outcome.output)
        except ValueError as exc:
            self.sig_preview_failed.emit(f"the data check's answer was not readable ({exc})")
            return
        self.sig_preview_received.emit(result)


def short_where(where: str) -> str:
    """'/long/path/data.jsonl line 3' -> 'data.jsonl line 3'."""
    head, sep, tail = where.rpartition(" line ")
    if not sep:
        head, sep, tail = where.rpartition(" record ")
    name = Path(head.split("?", 1)[0]).name if head else ""
    return f"{name}{sep}{tail}" if sep else where


def rows_html(rows: list[dict[str, Any]]) -> str:
    """The first records as the model sees them: the masked prompt greyed, the answer highlighted."""
    parts = []
    for row in rows:
        masked = row.get("prompt_masked", True)
        prompt_style = ("color:#6b6b6b; background:#eeeeee;" if masked else "background:#e8f0fe;")
        label = "prompt — masked, not learned" if masked else "prompt — learned too (train on inputs)"
        trunc = " · <b style='color:#b71c1c'>truncated at max length</b>" if row.get("truncated") else ""
        parts.append(
            f"<p style='margin:8px 0 2px 0'><b>{html.escape(short_where(row.get('where', '')))}</b>"
            f" · {row.get('tokens')} tokens"
            f" ({row.get('masked_tokens')} masked){trunc}</p>"
            f"<div style='font-size:small; color:#555'>{label}</div>"
            f"<pre style='{prompt_style} white-space:pre-wrap; margin:0'>{html.escape(row.get('prompt', ''))}</pre>"
            "<div style='font-size:small; color:#1b5e20'>answer — learned</div>"
            f"<pre style='background:#e6f4ea; white-space:pre-wrap; margin:0'>{html.escape(row.get('answer', ''))}"
            f"<span style='color:#1565c0'>{html.escape(row.get('eos', ''))}</span></pre>")
    return "".join(parts)


def stats_text(result: dict[str, Any]) -> str:
    stats = result.get("stats")
    if not stats:
        return ""
    n = result.get("records", 0)
    return (f"{n} record{'s' if n != 1 else ''} · tokens per example: mean {stats['mean']:.0f}, median "
            f"{stats['p50']}, 95th percentile {stats['p95']}, longest {stats['max']} · "
            f"{stats['truncated']} ({stats['truncated_share']:.1%}) longer than max length {stats['max_length']} "
            "(cut there)")


class TokenHistogram(QWidget):
    """Bars of example token lengths, with the max-length cut drawn as a red line."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.edges: list[int] = []
        self.counts: list[int] = []
        self.max_length = 0
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("Token length of every example (prompt + answer + end token); the red line is "
                        "max length: longer examples are cut there.")

    def sizeHint(self) -> QSize:
        return QSize(400, 140)

    def set_histogram(self, data: dict[str, list[int]] | None, max_length: int) -> None:
        self.edges = list((data or {}).get("edges", []))
        self.counts = list((data or {}).get("counts", []))
        self.max_length = max_length
        self.update()

    def has_data(self) -> bool:
        return bool(self.counts) and sum(self.counts) > 0

    def paintEvent(self, event: Any) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = self.rect().adjusted(40, 8, -24, -22)
        text_pen = QPen(self.palette().color(self.foregroundRole()))
        if not self.has_data():
            painter.setPen(text_pen)
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "No token lengths yet")
            return
        top = max(self.counts)
        span = max(1, self.edges[-1])
        bar_w = rect.width() / len(self.counts)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor("#5c8fd6"))
        for i, count in enumerate(self.counts):
            h = rect.height() * count / top
            painter.drawRect(QRectF(rect.left() + i * bar_w + 1, rect.bottom() - h, bar_w - 2, h))
        painter.setPen(text_pen)
        painter.drawLine(rect.bottomLeft(), rect.bottomRight())
        painter.drawText(QRectF(0, rect.top() - 4, 36, 16), Qt.AlignmentFlag.AlignRight, str(top))
        painter.drawText(QRectF(0, rect.bottom() - 12, 36, 16), Qt.AlignmentFlag.AlignRight, "0")
        for value in (0, self.edges[len(self.edges) // 2], self.edges[-1]):
            x = rect.left() + rect.width() * value / span
            painter.drawText(QRectF(x - 30, rect.bottom() + 3, 60, 16), Qt.AlignmentFlag.AlignHCenter, str(value))
        if self.max_length:
            x = rect.left() + rect.width() * min(self.max_length, span) / span
            painter.setPen(QPen(QColor("#c62828"), 2))
            painter.drawLine(int(x), rect.top(), int(x), rect.bottom())
            painter.drawText(QRectF(x - 110, rect.top(), 106, 16), Qt.AlignmentFlag.AlignRight,
                             f"max length {self.max_length}")
        painter.end()
