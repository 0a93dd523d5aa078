"""What a chosen dataset holds, read on a worker thread: format, questions per Step, exclusions, problems."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.datasets import DatasetError, detect_format, load_dataset
from medalpaca_desktop.ui.benchmark.palette import step_name, step_sort_key

FORMAT_NAMES = {
    "usmle": "USMLE self-assessment folder",
    "medqa": "MedQA (USMLE) JSONL",
    "table": "table (CSV/TSV/JSONL)",
    "hf": "saved Hugging Face dataset",
}


@dataclass
class DatasetSummary:
    """One line for the setup panel, or the reason the dataset cannot be used."""

    path: str
    kind: str = ""
    counts: dict[str, int] = field(default_factory=dict)  # per step after exclusion, plus "all"
    excluded: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    error: str = ""
    option_counts: set[int] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.error and (self.kind == "hf" or self.counts.get("all", 0) > 0)

    def describe(self) -> str:
        if self.error:
            return self.error
        if self.kind == "hf":
            return f"{FORMAT_NAMES['hf']} · questions are counted when the run starts"
        steps = sorted((s for s in self.counts if s != "all"), key=step_sort_key)
        per_step = ", ".join(f"{step_name(s)}: {self.counts[s]}" for s in steps)
        text = f"{FORMAT_NAMES.get(self.kind, self.kind)} · {self.counts.get('all', 0)} questions"
        if per_step:
            text += f" ({per_step})"
        if self.excluded:
            total = sum(self.excluded.values())
            text += f" · {total} image questions excluded"
        if self.skipped:
            text += f" · {self.skipped} malformed records skipped"
        return text


def probe_dataset(path: str | Path, kind: str = "auto", *, mapping: dict[str, str] | None = None,
                  skip_malformed: bool = False) -> DatasetSummary:
    """Load and check the whole dataset (blocking: call it from a worker thread)."""
    summary = DatasetSummary(path=str(path))
    if not str(path).strip():
        summary.error = "Choose the questions: a USMLE self-assessment folder or a MedQA .jsonl file."
        return summary
    if not Path(path).expanduser().exists():
        summary.error = f"{path}: no such file or folder."
        return summary
    try:
        summary.kind = detect_format(path) if kind == "auto" else kind
        if summary.kind == "hf":
            # Reading it needs the `datasets` library, which the GUI process never imports;
            # the worker reads (and checks) it when the run starts.
            summary.counts = {}
            return summary
        loaded = load_dataset(path, summary.kind, mapping=mapping, skip_malformed=skip_malformed)
    except (DatasetError, OSError, ValueError) as exc:
        summary.error = str(exc).strip() or type(exc).__name__
        return summary
    summary.counts = loaded.counts()
    summary.excluded = loaded.excluded_counts()
    summary.skipped = len(loaded.problems)
    summary.option_counts = {len(q.options) for q in loaded.questions}
    return summary
