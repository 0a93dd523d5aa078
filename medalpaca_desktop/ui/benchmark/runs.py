"""A finished (or partial) eval run as the tab sees it: config, summary, items, record, training-data check.

Read from the run directory through the engine's light `bench.results.load_run` (and
`bench.contamination.load_check` for a check made earlier); when the folder is gone, the
database's rows still give the questions and answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.contamination_report import StoredCheck, load_check
from bench.results import load_run
from bench.stats import score_items
from medalpaca_desktop.core.store import Store


@dataclass
class BenchRun:
    """What every view of the tab needs about one run."""

    run_dir: str
    label: str
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    db_id: int | None = None
    status: str = "done"  # the database's status, or "running" for the live one
    note: str = ""  # why something is missing (folder deleted ...)
    check: StoredCheck | None = None  # its questions checked against training data (contamination.json)

    @property
    def mode(self) -> str:
        return str(self.summary.get("mode") or self.config.get("mode") or "")

    @property
    def rule(self) -> str:
        return str(self.summary.get("rule") or self.config.get("rule") or "paper")

    @property
    def complete(self) -> bool:
        return bool(self.summary.get("complete", False))

    def scores(self) -> dict[str, dict[str, Any]]:
        """Step -> Score dict; recomputed from the items when the summary has none (a crashed run)."""
        scores = self.summary.get("scores")
        if scores:
            return dict(scores)
        if not self.items:
            return {}
        return {step: score.to_dict() for step, score in score_items(self.items).items()}

    def items_by_id(self) -> dict[str, dict[str, Any]]:
        return {str(item.get("id")): item for item in self.items}

    def unparseable(self) -> list[str]:
        listed = self.summary.get("unparseable")
        if listed is not None:
            return [str(i) for i in listed]
        return [str(item.get("id")) for item in self.items if item.get("pred") in (None, "")]

    def option_count(self) -> int | None:
        counts = {len(item.get("options") or {}) for item in self.items}
        counts.discard(0)
        return counts.pop() if len(counts) == 1 else None

    def display_name(self) -> str:
        mode = {"generate": "generate", "loglikelihood": "log-likelihood"}.get(self.mode, self.mode)
        return f"{self.label} · {mode}" if mode else self.label


def read_run(run_dir: str | Path, *, label: str | None = None, db_id: int | None = None,
             status: str = "done") -> BenchRun:
    """Load a run folder (raises OSError/ValueError when it cannot be read)."""
    result = load_run(run_dir)
    config = dict(result.config or {})
    summary = dict(result.summary or {})
    name = label or summary.get("label") or config.get("label") or Path(config.get("model") or run_dir).name
    return BenchRun(run_dir=str(run_dir), label=str(name), config=config, summary=summary,
                    items=list(result.items or []), record=dict(result.record or summary.get("record") or {}),
                    db_id=db_id, status=status, check=load_check(run_dir))


def run_from_database(store: Store, row: dict[str, Any]) -> BenchRun:
    """The run of one `eval_runs` row: from its folder when it is there, else from the database."""
    run_dir = row.get("run_dir") or ""
    label = row.get("model_label") or row.get("name") or "run"
    status = str(row.get("status") or "created")
    if run_dir and Path(run_dir).is_dir():
        try:
            return read_run(run_dir, label=label, db_id=row["id"], status=status)
        except (OSError, ValueError) as exc:
            note = f"The run folder could not be read ({exc}); showing the answers kept in the database."
    else:
        note = "The run folder is gone; showing the answers kept in the database."
    config = _loads(row.get("config_json"))
    items = []
    for item in store.eval_items(row["id"]):
        meta = _loads(item.get("meta_json"))
        items.append({
            "id": item["item_key"], "step": item.get("subset") or "", "question": item.get("question") or "",
            "options": meta.get("options") or {}, "gold": item.get("answer"), "pred": item.get("prediction"),
            "correct": bool(item.get("correct")), "output": item.get("raw_output") or "",
            "prompt": meta.get("prompt") or "", "scores": meta.get("scores"), "latency_s": item.get("latency_s"),
        })
    summary = {"mode": row.get("scoring") or config.get("mode"), "label": label, "complete": status == "done",
               "rule": config.get("rule", "paper")}
    return BenchRun(run_dir=run_dir, label=str(label), config=config, summary=summary, items=items,
                    db_id=row["id"], status=status, note=note)


def _loads(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
