"""The numbers under the chart: per run accuracy with its interval, per Step, and the unparseable count.

Unparseable answers count as wrong in the accuracy, and are always shown here as
their own number so they are never silently lost.
"""

from __future__ import annotations

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


class SummaryTable(QTableWidget):
    """One row per shown run."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.verticalHeader().hide()
        self.setAlternatingRowColors(True)
        self.set_runs([])

    def set_runs(self, runs: list[BenchRun], names: list[str] | None = None) -> None:
        names = names or [r.display_name() for r in runs]
        steps = sorted({s for r in runs for s in r.scores() if s != OVERALL}, key=step_sort_key)
        headers = ["Run", "Rule", "n", "Overall [95 % CI]", *[step_name(s) for s in steps], "Unparseable",
                   "Other measure"]
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
            cells = [name + status, rule, str(overall.get("n", "")), *[score_cell(x) for x in shown],
                     f"{unparseable} of {len(run.items)}" if run.mode == "generate" else "–", also]
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if 3 <= c < 3 + len(shown):
                    item.setToolTip(score_tip(shown[c - 3]))
                elif c == len(cells) - 1:
                    item.setToolTip(also_tip)
                elif c == len(cells) - 2:
                    item.setToolTip("Answers the rule could not read as an option letter (counted wrong); "
                                    "list them with the Questions tab's “Unparseable answers” filter")
                self.setItem(r, c, item)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.setMaximumHeight(40 + 30 * max(1, len(runs)))
