"""A suite: several models x several tasks, each an ordinary benchmark run in OUT/<model>/<task>/.

`plan_suite` turns (models, tasks, shared settings) into the list of BenchConfigs; the Benchmark
tab queues that list and `medalpaca bench suite` runs it in order, so both write the same
folders, and each run resumes on its own (a stopped suite continues where it stopped).
`suite_table` reads the runs back into the models x tasks table (accuracy, 95 % Wilson
interval, n) with the leaderboard-style average; `compare_suite` pairs two models per task
and over the suite (McNemar on the pooled questions, a bootstrap of the average difference).
Light: the GUI reads tables without loading anything heavy.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import BenchConfig, ConfigError, label_for
from bench.results import SUMMARY
from bench.stats import EXACT_BELOW, bootstrap_average_difference, compare_items, mcnemar, wilson_interval

SUITE_FILE = "suite.json"
TABLE_JSON = "suite_table.json"
TABLE_CSV = "suite_table.csv"


@dataclass
class SuitePlan:
    """What a suite runs: the models (with their labels), the tasks, the shared settings, the folder."""

    models: list[str]
    labels: list[str]
    tasks: list[str]
    out: str
    settings: dict[str, Any] = field(default_factory=dict)
    """BenchConfig fields every run shares (mode, prompt_style, limit, batch_size, ...)."""

    def runs(self) -> list[BenchConfig]:
        """Model-major: every task of the first model, then the next (one model load per model)."""
        out = Path(self.out).expanduser()
        base = BenchConfig.from_dict({k: v for k, v in self.settings.items() if k not in _PER_RUN})
        return [dataclasses.replace(base, model=model, label=label, task=task, data="",
                                    out=str(out / _folder_name(label) / task))
                for model, label in zip(self.models, self.labels) for task in self.tasks]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self) -> Path:
        path = Path(self.out).expanduser() / SUITE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        tmp.replace(path)
        return path


_PER_RUN = ("model", "label", "task", "data", "out", "dataset", "mapping")


def _folder_name(label: str) -> str:
    """A label as one folder name (no separators, no leading dot)."""
    return re.sub(r"[^\w.+-]+", "_", label).strip("._") or "model"


def plan_suite(models: list[str], tasks: str | list[str], out: str | Path, settings: dict[str, Any] | None = None,
               labels: list[str] | None = None) -> SuitePlan:
    """Check the parts and fix the order; ConfigError (one line) for anything that cannot run."""
    from bench.tasks import TaskError, load_catalog

    if not models:
        raise ConfigError("model: give at least one model (--model, repeatable)")
    if not str(out):
        raise ConfigError("out: give the folder the suite is written to")
    try:
        specs = load_catalog().expand(tasks)
    except TaskError as exc:
        raise ConfigError(f"tasks: {exc}") from None
    settings = dict(settings or {})
    unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(BenchConfig)})
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown setting")
    names = list(labels) if labels else [label_for(m) for m in models]
    if len(names) != len(models):
        raise ConfigError("label: give one label per model")
    seen: dict[str, int] = {}
    unique = []
    for name in names:  # two models with the same file name get their own folders
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    plan = SuitePlan(models=[str(m) for m in models], labels=unique, tasks=[s.key for s in specs], out=str(out),
                     settings=settings)
    for config in plan.runs():
        config.validate(check_paths=False)
    return plan


def load_plan(out: str | Path) -> SuitePlan:
    path = Path(out).expanduser() / SUITE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return SuitePlan(**data)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a suite folder ({exc})") from None


# ------------------------------------------------------------------ the table


@dataclass
class Cell:
    """One model on one task."""

    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    n_total: int
    complete: bool
    run_dir: str
    accuracy_norm: float | None = None


@dataclass
class SuiteTable:
    labels: list[str]
    tasks: list[str]
    cells: dict[str, dict[str, Cell]]  # label -> task -> cell (absent: not run yet)

    def average(self, label: str) -> float | None:
        """The leaderboard's average: the unweighted mean of the tasks' accuracies (every task scored)."""
        row = self.cells.get(label, {})
        if not self.tasks or any(t not in row or row[t].n == 0 for t in self.tasks):
            return None
        return sum(row[t].accuracy for t in self.tasks) / len(self.tasks)

    def pooled(self, label: str) -> Cell | None:
        """Every scored question of the model as one sample (lm-eval's size-weighted group accuracy)."""
        row = [c for t, c in self.cells.get(label, {}).items() if t in self.tasks and c.n]
        if not row:
            return None
        n, correct = sum(c.n for c in row), sum(c.correct for c in row)
        low, high = wilson_interval(correct, n)
        return Cell(n=n, correct=correct, accuracy=correct / n, ci_low=low, ci_high=high,
                    n_total=sum(c.n_total for c in row), complete=all(c.complete for c in row), run_dir="")

    def to_dict(self) -> dict[str, Any]:
        return {"labels": self.labels, "tasks": self.tasks,
                "cells": {lab: {t: dataclasses.asdict(c) for t, c in row.items()} for lab, row in self.cells.items()},
                "average": {lab: self.average(lab) for lab in self.labels},
                "pooled": {lab: (dataclasses.asdict(p) if (p := self.pooled(lab)) else None) for lab in self.labels}}

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["model", "task", "accuracy", "ci_low", "ci_high", "n", "correct", "n_total", "complete",
                         "accuracy_norm"])
        for label in self.labels:
            for task in self.tasks:
                c = self.cells.get(label, {}).get(task)
                if c is not None:
                    writer.writerow([label, task, f"{c.accuracy:.6f}", f"{c.ci_low:.6f}", f"{c.ci_high:.6f}", c.n,
                                     c.correct, c.n_total, c.complete,
                                     "" if c.accuracy_norm is None else f"{c.accuracy_norm:.6f}"])
            avg = self.average(label)
            writer.writerow([label, "average", "" if avg is None else f"{avg:.6f}", "", "", "", "", "", "", ""])
        return buf.getvalue()

    def describe(self) -> str:
        """The table for a terminal: one row per model, accuracy % (n) per task, then the average."""
        width = max([len(lab) for lab in self.labels] + [5])
        widths = [max(len(t), 12) for t in self.tasks]
        lines = ["  ".join([f"{'model':<{width}}"] + [f"{t:>{w}}" for t, w in zip(self.tasks, widths)]
                           + [f"{'average':>8}"])]
        for label in self.labels:
            cols = []
            for task, w in zip(self.tasks, widths):
                c = self.cells.get(label, {}).get(task)
                text = "-" if c is None or not c.n else f"{100 * c.accuracy:.1f}{'' if c.complete else '*'} (n={c.n})"
                cols.append(f"{text:>{w}}")
            avg = self.average(label)
            lines.append("  ".join([f"{label:<{width}}"] + cols + [f"{'-' if avg is None else f'{100 * avg:.1f}':>8}"]))
        if any(not c.complete for row in self.cells.values() for c in row.values()):
            lines.append("* partial: the run was stopped; resume the suite to finish it")
        return "\n".join(lines)


def suite_table(out: str | Path, summary_name: str = SUMMARY) -> SuiteTable:
    """Read every run of the suite in `out` (runs not started yet are absent from the table).

    `summary_name`: which of each run's summaries fills the cells (summary_clean.json: the accuracies without
    the questions found in training data, for the runs that have one)."""
    from bench.results import RunError, load_run

    plan = load_plan(out)
    cells: dict[str, dict[str, Cell]] = {}
    for config in plan.runs():
        run_dir = Path(config.out)
        try:
            run = load_run(run_dir, summary_name)
        except RunError:
            continue
        overall = (run.summary.get("scores") or {}).get("overall")
        if not overall:
            continue
        norm = (run.summary.get("scores_norm") or {}).get("overall")
        cells.setdefault(config.display_label, {})[config.task] = Cell(
            n=int(overall["n"]), correct=int(overall["correct"]), accuracy=float(overall["accuracy"]),
            ci_low=float(overall["ci_low"]), ci_high=float(overall["ci_high"]),
            n_total=int(run.summary.get("n_total") or overall["n"]), complete=run.complete, run_dir=str(run_dir),
            accuracy_norm=float(norm["accuracy"]) if norm else None)
    return SuiteTable(labels=list(plan.labels), tasks=list(plan.tasks), cells=cells)


def write_table(out: str | Path) -> SuiteTable:
    """suite_table.json and suite_table.csv beside the runs (rewritten after every run)."""
    table = suite_table(out)
    base = Path(out).expanduser()
    for name, text in ((TABLE_JSON, json.dumps(table.to_dict(), indent=2)), (TABLE_CSV, table.to_csv())):
        tmp = base / (name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(base / name)
    return table


# ------------------------------------------------------------------ paired comparison


def compare_suite(out: str | Path, label_a: str, label_b: str, n_resamples: int = 2000,
                  seed: int = 0) -> dict[str, Any]:
    """Model A against model B: per task (as `bench compare`), pooled McNemar, bootstrap of the average."""
    from bench.results import RunError, read_items

    plan = load_plan(out)
    for label in (label_a, label_b):
        if label not in plan.labels:
            raise ConfigError(f"{label!r} is not a model of this suite (models: {', '.join(plan.labels)})")
    dirs = {(c.display_label, c.task): Path(c.out) for c in plan.runs()}
    per_task: dict[str, Any] = {}
    pairs: dict[str, tuple[list[bool], list[bool]]] = {}
    for task in plan.tasks:
        try:
            items_a, items_b = read_items(dirs[(label_a, task)]), read_items(dirs[(label_b, task)])
        except RunError:
            continue
        if not items_a or not items_b:
            continue
        comparison = compare_items(items_a, items_b, n_resamples=n_resamples, seed=seed)
        per_task[task] = comparison.to_dict()
        by_id = {str(it["id"]): bool(it.get("correct")) for it in items_b}
        shared = [(bool(it.get("correct")), by_id[str(it["id"])]) for it in items_a if str(it["id"]) in by_id]
        pairs[task] = ([a for a, _ in shared], [b for _, b in shared])
    b = sum(c["b"] for c in per_task.values())
    c = sum(c["c"] for c in per_task.values())
    diff, low, high = bootstrap_average_difference(pairs, n_resamples=n_resamples, seed=seed)
    return {"model_a": label_a, "model_b": label_b, "tasks": per_task,
            "pooled": {"n_shared": sum(len(p[0]) for p in pairs.values()), "b": b, "c": c,
                       "p_value": mcnemar(b, c), "test": "exact" if b + c < EXACT_BELOW else "chi-square"},
            "average_diff": diff, "average_diff_ci": [low, high], "tasks_compared": sorted(pairs)}


def describe_suite_comparison(data: dict[str, Any]) -> str:
    lines = [f"A: {data['model_a']}  B: {data['model_b']}"]
    for task, c in data["tasks"].items():
        lines.append(f"  {task:<28} n={c['n_shared']:<5} A {100 * c['acc_a']:5.1f} %  B {100 * c['acc_b']:5.1f} %  "
                     f"A-B {100 * c['diff']:+5.1f}  McNemar p={c['p_value']:.3g}")
    pooled = data["pooled"]
    low, high = data["average_diff_ci"]
    lines.append(f"Average over {len(data['tasks_compared'])} tasks: A-B {100 * data['average_diff']:+.1f} points "
                 f"(95 % bootstrap CI {100 * low:+.1f} to {100 * high:+.1f}); pooled McNemar on "
                 f"{pooled['n_shared']} questions: only A right {pooled['b']}, only B right {pooled['c']}, "
                 f"p = {pooled['p_value']:.4g}")
    return "\n".join(lines)
