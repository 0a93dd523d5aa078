"""Write the drill-down's rows (what the filter shows) to CSV or JSON."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from medalpaca_desktop.ui.benchmark.items_table import QuestionRow


def rows_to_records(rows: list[QuestionRow], run_names: list[str]) -> list[dict[str, Any]]:
    """One JSON object per question: the question, then each run's answer under its name."""
    records = []
    for row in rows:
        runs: dict[str, Any] = {}
        for name, answer in zip(run_names, row.answers):
            if answer is None:
                continue
            runs[name] = {
                "pred": answer.get("pred"),
                "correct": bool(answer.get("correct")),
                "output": answer.get("output", ""),
                "prompt": answer.get("prompt", ""),
                **({"scores": answer["scores"]} if answer.get("scores") else {}),
                **({"latency_s": answer["latency_s"]} if answer.get("latency_s") is not None else {}),
            }
        records.append({"id": row.id, "step": row.step, "question": row.question, "options": row.options,
                        "gold": row.gold, "runs": runs})
    return records


def write_json(path: str | Path, rows: list[QuestionRow], run_names: list[str]) -> Path:
    path = Path(path)
    path.write_text(json.dumps(rows_to_records(rows, run_names), ensure_ascii=False, indent=2) + "\n",
                    encoding="utf-8")
    return path


def write_csv(path: str | Path, rows: list[QuestionRow], run_names: list[str]) -> Path:
    """Flat columns (spreadsheet-friendly): options as 'A: …' lines, then pred/correct/output per run."""
    path = Path(path)
    header = ["id", "step", "question", "options", "gold"]
    for name in run_names:
        header += [f"{name} pred", f"{name} correct", f"{name} output"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            line = [row.id, row.step, row.question, "\n".join(f"{k}: {v}" for k, v in row.options.items()), row.gold]
            for answer in row.answers:
                if answer is None:
                    line += ["", "", ""]
                else:
                    line += [answer.get("pred") or "", "yes" if answer.get("correct") else "no",
                             answer.get("output", "")]
            writer.writerow(line)
    return path
