"""The numbers under the chart: per run accuracy with its interval, per Step, and the unparseable count.

Unparseable answers count as wrong in the accuracy, and are always shown here as
their own number so they are never silently lost. With "Without overlapping questions" on, the
overall accuracy over the questions not found in the training data (the run's summary_clean.json)
stands next to the full one.
"""

from __future__ import annotations

from PySide6.QtCore import Slot
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem, QWidget

from medalpaca_desktop.ui.benchmark.palette import OVERALL, percent, step_name, step_sort_key
from medalpaca_desktop.ui.benchmark.runs import BenchRun


def score_cell(score: dict | None) -> str:
    """'19.4 % [12–30]': accuracy and its 95 % interval in percent."""
    if not score or not score.get("n"):
        return ""
    low, high = float(score.get("ci_low") or 0) * 100, float(score.get("ci_high") or 0) * 100
    return f"{percent(score.get('accuracy'))} [{low:.0f}–{high:.0f}]"


def score_tip(score: dict | None) -> str:
    if not score or not score.get("n"):
        return ""
    return (f"{score.get('correct')} of {score['n']} right; 95 % Wilson interval {percent(score.get('ci_low'))} to "
            f"{percent(score.get('ci_high'))}; standard error {percent(score.get('se'))}; "
            f"{score.get('unparseable', 0)} unparseable")


def other_measure(run: BenchRun) -> tuple[str, str]:
    """(column text, tooltip): the other rule's overall accuracy (generate) or acc_norm (log-likelihood)."""
    if run.mode == "loglikelihood":
        norm = (run.summary.get("scores_norm") or {}).get(OVERALL)
        return (percent(norm.get("accuracy")) if norm else "", "acc_norm: log-likelihood per character")
    other = "lenient" if run.rule == "paper" else "paper"
    by_rule = (run.summary.get("scores_by_rule") or {}).get(other, {}).get(OVERALL)
    return (f"{other}: {percent(by_rule.get('accuracy'))}" if by_rule else "",
            f"Overall accuracy under the {other} rule (re-score to make it the headline)")


CLEAN_HEADER = "Without\noverlap"


def clean_cell(run: BenchRun) -> tuple[str, str]:
    """(text, tooltip) of the overall accuracy without the questions found in training data."""
    check = run.check
    if check is None:
        return "not checked", "Check the run against training data (the button below) to see this"
    clean = check.clean_overall()
    if not clean:
        return "–", "The check's summary_clean.json cannot be read; check again"
    k = len(check.overlapping)
    tip = (f"Without the questions found in your training data: {score_tip(clean)}\n{k} question"
           f"{'s' if k != 1 else ''} left out, {clean.get('n', 0)} scored (summary_clean.json)")
    if check.stale:
        tip += "; the run scored more questions after this check: check it again"
    return (score_cell(clean) or "–") + (" (old)" if check.stale else ""), tip


class SummaryTable(QTableWidget):
    """One row per shown run."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.verticalHeader().hide()
        self.setAlternatingRowColors(True)
        self.runs: list[BenchRun] = []
        self.names: list[str] = []
        self.show_clean = False
        self.set_runs([])

    @Slot(bool)
    def set_show_clean(self, on: bool) -> None:
        """The clean accuracy beside the full one (a column after Overall)."""
        self.show_clean = on
        self.set_runs(self.runs, self.names)

    def set_runs(self, runs: list[BenchRun], names: list[str] | None = None) -> None:
        names = names or [r.display_name() for r in runs]
        self.runs, self.names = list(runs), list(names)
        steps = sorted({s for r in runs for s in r.scores() if s != OVERALL}, key=step_sort_key)
        clean = self.show_clean and any(r.check is not None for r in runs)
        headers = ["Run", "Rule", "n", "Overall [95 % CI]", *([CLEAN_HEADER] if clean else []),
                   *[step_name(s) for s in steps], "Unparseable", "Other measure"]
        self.clear()
        self.setColumnCount(len(headers))
        self.setHorizontalHeaderLabels(headers)
        self.setRowCount(len(runs))
        for r, (run, name) in enumerate(zip(runs, names)):
            scores = run.scores()
            overall = scores.get(OVERALL) or {}
            unparseable = len(run.unparseable())
            rule = run.rule if run.mode == "generate" else "log-likelihood"
            also, also_tip = other_measure(run)
            status = "" if run.complete else f" ({run.status})"
            shown = [overall, *[scores.get(s) for s in steps]]
            texts = [score_cell(x) for x in shown]
            tips = [score_tip(x) for x in shown]
            if clean:
                clean_text, clean_tip = clean_cell(run)
                texts.insert(1, clean_text)
                tips.insert(1, clean_tip)
            cells = [name + status, rule, str(overall.get("n", "")), *texts,
                     f"{unparseable} of {len(run.items)}" if run.mode == "generate" else "–", also]
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if 3 <= c < 3 + len(texts):
                    item.setToolTip(tips[c - 3])
                elif c == len(cells) - 1:
                    item.setToolTip(also_tip)
                elif c == len(cells) - 2:
                    item.setToolTip("Answers the rule could not read as an option letter (counted wrong); "
                                    "list them with the Questions tab's “Unparseable answers” filter")
                self.setItem(r, c, item)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.setMaximumHeight(max(40, header.sizeHint().height() + 10) + 30 * max(1, len(runs)))
