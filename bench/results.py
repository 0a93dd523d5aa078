"""A benchmark run directory, written by bench.run and read back by the GUI and the CLI (light).

RUN_DIR/config.yaml (the BenchConfig as run), events.jsonl (every event),
items.jsonl (one scored question per line, appended as it is scored),
items.csv (the same rows, flat; written at the end and by rescore) and
summary.json (accuracy per Step and overall with Wilson intervals, the
reproducibility record; written at the end and, partial, on a stop).
Only the standard library, yaml and bench's light modules are imported here.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.answers import parse_answer
from bench.config import label_for
from bench.stats import compare_items, score_items

CONFIG = "config.yaml"
EVENTS = "events.jsonl"
ITEMS = "items.jsonl"
ITEMS_CSV = "items.csv"
SUMMARY = "summary.json"

CSV_HEAD = ("id", "step", "gold", "pred", "correct", "pred_paper", "pred_lenient", "pred_norm", "correct_norm")
CSV_TAIL = ("latency_s", "error", "question", "output")


class RunError(ValueError):
    """A folder that is not a (readable) benchmark run; one line for a person."""


@dataclass
class RunResult:
    """Everything a finished (or stopped) run left on disk."""

    run_dir: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    items: list[dict[str, Any]]
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return bool(self.summary.get("complete"))


# ------------------------------------------------------------------ reading


def read_items(run_dir: str | Path, repair: bool = False, name: str = ITEMS) -> list[dict[str, Any]]:
    """The rows of items.jsonl; a torn last line (a run killed mid-write) is dropped.

    `repair` also cuts the torn line off the file, so that rows appended next
    start on a line of their own (resume does this).
    """
    path = Path(run_dir) / name
    if not path.is_file():
        return []
    data = path.read_bytes()
    items: list[dict[str, Any]] = []
    good_end = 0
    pos = 0
    for raw in data.splitlines(keepends=True):
        pos += len(raw)
        if not raw.endswith(b"\n"):
            break  # torn: written without its newline
        try:
            row = json.loads(raw.decode("utf-8"))
        except ValueError:
            if pos == len(data):
                break
            raise RunError(f"{path}: line {len(items) + 1} is not JSON; the file was edited or damaged") from None
        if isinstance(row, dict) and "id" in row:
            items.append(row)
        good_end = pos
    if repair and good_end != len(data):
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
    return items


def load_run(run_dir: str | Path, summary_name: str = SUMMARY) -> RunResult:
    """Read a run directory (finished, stopped or still running); `summary_name` reads another of its
    summaries as the summary (summary_clean.json: the scores without the questions found in training data)."""
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run folder")
    config_path = run_dir / CONFIG
    if not config_path.is_file():
        raise RunError(f"{run_dir}: not a benchmark run (no {CONFIG})")
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise RunError(f"{config_path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    summary: dict[str, Any] = {}
    summary_path = run_dir / summary_name
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except ValueError:
            raise RunError(f"{summary_path}: not valid JSON") from None
    return RunResult(run_dir, config, summary, read_items(run_dir), dict(summary.get("record") or {}))


# ------------------------------------------------------------------ writing


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


#: the item keys the database keeps in an eval item's meta (the rest have their own columns).
ITEM_META_KEYS = ("options", "prompt", "scores", "scores_norm", "pred_norm", "correct_norm", "pred_paper",
                  "pred_lenient", "error", "tokens", "stop_reason", "seed")


def store_item(store: Any, run_id: int, item: dict[str, Any]) -> None:
    """One scored question into the app database's eval_items (the run's worker and a re-score write it so)."""
    store.add_eval_item(run_id, str(item["id"]), subset=item.get("step"), question=item.get("question"),
                        answer=item.get("gold"), prediction=item.get("pred"), correct=bool(item.get("correct")),
                        raw_output=item.get("output"), latency_s=item.get("latency_s"),
                        meta={k: item[k] for k in ITEM_META_KEYS if k in item})


def item_line(item: dict[str, Any]) -> str:
    return json.dumps(item, ensure_ascii=False) + "\n"


def items_csv_text(items: list[dict[str, Any]]) -> str:
    """Flat rows: one `score_X` column per option letter in loglikelihood runs."""
    letters = sorted({k for it in items for k in (it.get("scores") or {})})
    columns = [*CSV_HEAD, *(f"score_{k}" for k in letters), *(f"score_norm_{k}" for k in letters), *CSV_TAIL]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    for it in items:
        scores, norm = it.get("scores") or {}, it.get("scores_norm") or {}
        row = {**it, **{f"score_{k}": scores.get(k) for k in letters},
               **{f"score_norm_{k}": norm.get(k) for k in letters}}
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return buf.getvalue()


def write_items(run_dir: str | Path, items: list[dict[str, Any]]) -> None:
    """Rewrite items.jsonl and items.csv (rescore; the runner appends to items.jsonl as it goes)."""
    run_dir = Path(run_dir)
    _atomic_write(run_dir / ITEMS, "".join(item_line(it) for it in items))
    write_items_csv(run_dir, items)


def write_items_csv(run_dir: str | Path, items: list[dict[str, Any]]) -> None:
    _atomic_write(Path(run_dir) / ITEMS_CSV, items_csv_text(items))


def write_summary(run_dir: str | Path, summary: dict[str, Any], name: str = SUMMARY) -> None:
    """summary.json (or another summary of the run's, e.g. summary_clean.json), written atomically."""
    write_json(Path(run_dir) / name, summary)


def write_json(path: str | Path, data: Any) -> None:
    """A JSON file of the run folder, replaced in one step (a reader never sees half of it)."""
    _atomic_write(Path(path), json.dumps(data, indent=2, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------ summary


def _scores(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {step: (s.to_dict() if hasattr(s, "to_dict") else asdict(s)) for step, s in score_items(items).items()}


def build_summary(config: dict[str, Any], items: list[dict[str, Any]], *, n_total: int, complete: bool,
                  record: dict[str, Any], counts: dict[str, int] | None = None) -> dict[str, Any]:
    """summary.json: per Step and overall n, correct, accuracy, 95 % Wilson CI, SE, unparseable."""
    mode = config.get("mode", "generate")
    summary: dict[str, Any] = {
        "mode": mode, "rule": config.get("rule", "paper"), "prompt_style": config.get("prompt_style"),
        "label": label_for(str(config.get("model") or ""), str(config.get("label") or "")),
        "model": config.get("model"), "adapter": config.get("adapter") or None, "dataset": config.get("data"),
        "n_total": n_total, "n_scored": len(items), "complete": complete, "counts": dict(counts or {}),
        "scores": _scores(items),
    }
    if mode == "loglikelihood":
        summary["scores_norm"] = _scores([{"step": it.get("step", ""), "correct": bool(it.get("correct_norm")),
                                           "pred": it.get("pred_norm")} for it in items])
    else:
        summary["scores_by_rule"] = {
            rule: _scores([{"step": it.get("step", ""), "pred": it.get(f"pred_{rule}"),
                            "correct": it.get(f"pred_{rule}") is not None and it.get(f"pred_{rule}") == it.get("gold")}
                           for it in items]) for rule in ("paper", "lenient")}
    summary["unparseable"] = [it["id"] for it in items if it.get("pred") is None]
    summary["errors"] = [{"id": it["id"], "error": it["error"]} for it in items if it.get("error")]
    summary["record"] = record
    return summary


# ------------------------------------------------------------------ rescore, compare


def rescore_items(items: list[dict[str, Any]], rule: str) -> list[dict[str, Any]]:
    """Parse every saved output again with both rules; `pred`/`correct` follow `rule`."""
    out = []
    for it in items:
        it = dict(it)
        output = it.get("output") or ""
        options = dict(it.get("options") or {})
        it["pred_paper"] = parse_answer(output, options, "paper") if not it.get("error") else None
        it["pred_lenient"] = parse_answer(output, options, "lenient") if not it.get("error") else None
        it["pred"] = it[f"pred_{rule}"]
        it["correct"] = it["pred"] is not None and it["pred"] == it.get("gold")
        out.append(it)
    return out


def rescore_run(run_dir: str | Path, rule: str) -> dict[str, Any]:
    """Re-score a generate run's saved outputs with `rule` (no model needed); rewrites items and summary."""
    if rule not in ("paper", "lenient"):
        raise RunError(f"rule: {rule!r} is not one of paper, lenient")
    run = load_run(run_dir)
    if run.config.get("mode", "generate") != "generate":
        raise RunError(f"{run.run_dir}: a loglikelihood run has no parsed answers to re-score "
                       "(its prediction is the option with the highest log-likelihood)")
    items = rescore_items(run.items, rule)
    config = {**run.config, "rule": rule}
    record = {**run.record, "rescored_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    summary = build_summary(config, items, n_total=int(run.summary.get("n_total", len(items))),
                            complete=bool(run.summary.get("complete", False)), record=record,
                            counts=run.summary.get("counts"))
    write_items(run.run_dir, items)
    write_summary(run.run_dir, summary)
    _atomic_write(run.run_dir / CONFIG, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return summary


def compare_runs(run_a: str | Path, run_b: str | Path) -> dict[str, Any]:
    """Paired comparison on the questions both runs scored: McNemar p and a bootstrap CI of the difference."""
    a, b = load_run(run_a), load_run(run_b)
    comparison = compare_items(a.items, b.items)
    data = comparison.to_dict() if hasattr(comparison, "to_dict") else \
        asdict(comparison) if is_dataclass(comparison) else dict(comparison)
    return {**data,
            "run_a": {"run_dir": str(a.run_dir), "label": a.summary.get("label") or a.config.get("label"),
                      "n": len(a.items)},
            "run_b": {"run_dir": str(b.run_dir), "label": b.summary.get("label") or b.config.get("label"),
                      "n": len(b.items)}}
