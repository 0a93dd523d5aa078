"""A training-data check's files, and reading them back: what the app shows of a run checked earlier.

`bench.contamination` writes RUN_DIR/contamination.json (the sources, every overlapping question)
and RUN_DIR/summary_clean.json (summary.json's shape over the questions that do not overlap). This
module names them and reads them; it imports only the standard library and bench.results, so the
GUI process can read a check without importing the engine that made it (which reads a run's
questions through bench.run).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import results

DEFAULT_NGRAM = 13
REPORT = "contamination.json"
SUMMARY_CLEAN = "summary_clean.json"


def overlap_line(k: int, n: int) -> str:
    """The headline of a check, for the terminal and the app alike."""
    return f"{k} of {n} questions overlap your training data"


@dataclass
class StoredCheck:
    """A run's earlier check read back from its folder (contamination.json, summary_clean.json)."""

    run_dir: str
    report: dict[str, Any]
    clean: dict[str, Any]
    """summary_clean.json ({} when it is missing)."""
    stale: bool
    """The run scored other questions after the check (it was resumed): check it again."""

    @property
    def overlapping(self) -> list[dict[str, Any]]:
        return [o for o in self.report.get("overlapping") or [] if isinstance(o, dict)]

    @property
    def n_questions(self) -> int:
        return int(self.report.get("n_questions") or 0)

    @property
    def ngram(self) -> int:
        return int(self.report.get("ngram") or DEFAULT_NGRAM)

    @property
    def sources(self) -> list[str]:
        return [str(s.get("source")) for s in self.report.get("sources") or [] if isinstance(s, dict)]

    def headline(self) -> str:
        return overlap_line(len(self.overlapping), self.n_questions)

    def clean_overall(self) -> dict[str, Any] | None:
        """The overall score without the overlapping questions (summary_clean.json's)."""
        overall = (self.clean.get("scores") or {}).get("overall")
        return overall if isinstance(overall, dict) else None


def load_check(run_dir: str | Path) -> StoredCheck | None:
    """The run's stored check, or None when it was never checked (or its report cannot be read)."""
    folder = Path(run_dir).expanduser()
    report = _read_json(folder / REPORT)
    if not isinstance(report, dict):
        return None
    clean = _read_json(folder / SUMMARY_CLEAN)
    scored = _dig(_read_json(folder / results.SUMMARY), "scores", "overall", "n")  # scored now
    checked = _dig(report, "accuracy", "all", "n")  # scored when checked
    return StoredCheck(str(run_dir), report, clean if isinstance(clean, dict) else {},
                       stale=scored is not None and checked is not None and scored != checked)


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
