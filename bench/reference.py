"""The paper's USMLE scores (resources/paper_scores.yaml), drawn beside a run's results for comparison.

The table is the MedAlpaca paper's (text-only questions, zero-shot, generate
mode with the paper's rule); a run in another mode or on other questions is not
directly comparable, which the GUI says next to the reference rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

__all__ = ["ReferenceScores", "paper_scores"]


@dataclass(frozen=True)
class ReferenceScores:
    """Accuracy per model and Step ("step1".."step3") with the table's source."""

    source: str
    models: dict[str, dict[str, float]]
    metric: str = "accuracy"

    def steps(self) -> list[str]:
        return sorted({step for row in self.models.values() for step in row})


def paper_scores() -> ReferenceScores:
    """The paper's table, in its row order."""
    from resources import read_text

    data = yaml.safe_load(read_text("paper_scores.yaml"))
    models = {str(name): {str(step): float(value) for step, value in row.items()}
              for name, row in data["models"].items()}
    return ReferenceScores(source=str(data["source"]), models=models, metric=str(data.get("metric", "accuracy")))
