"""The model card (README.md beside the weights) every finished fine-tune gets.

Hugging Face model-card form: YAML front matter (base_model, library_name, tags, and a
`medalpaca` block with the prompt template and end token, so chat and the benchmark use the
template the model was trained with), then base model, data sources and sizes, method and
hyperparameters, the training curve, intended use and limitations for medical use, and a
"## Benchmark results" section the benchmark appends its scores to (`append_benchmark_results`).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from trainer.config import TrainConfig

CARD_NAME = "README.md"
BENCHMARK_HEADING = "## Benchmark results"
NO_RESULTS = "_No benchmark results yet: `medalpaca bench` appends its scores here._"
BENCHMARK_COLUMNS = ("Date", "Benchmark", "Metric", "Score", "Questions", "Notes")
CURVE_POINTS = (0, 25, 50, 75, 100)
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")

WIKIDOC_NOTE = ("Training data include WikiDoc-derived sets; the Medical Meadow authors note these are partly "
                "incorrect (about 30 % unsatisfactory conversions), so answers learned from them may be wrong.")


def curve_summary(points: Sequence[tuple[int, float]], at: Sequence[int] = CURVE_POINTS) -> dict[int, float]:
    """Loss at 0/25/50/75/100 % of training from (step, loss) points (the nearest logged step)."""
    points = sorted(points)
    if not points:
        return {}
    first, last = points[0][0], points[-1][0]
    out: dict[int, float] = {}
    for pct in at:
        target = first + (last - first) * pct / 100
        out[pct] = min(points, key=lambda p: (abs(p[0] - target), p[0]))[1]
    return out


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return _fmt(seconds)
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def _cell(value: Any) -> str:
    return _fmt(value).replace("|", "\\|").replace("\n", " ")


def _sources(data_summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = data_summary.get("sources") or []
    out = []
    for item in raw:
        out.append(dict(item) if isinstance(item, Mapping) else {"path": str(item)})
    return out


def uses_wikidoc(config: TrainConfig, data_summary: Mapping[str, Any]) -> bool:
    names = [str(p) for p in config.data]
    for src in _sources(data_summary):
        names += [str(src.get(k, "")) for k in ("path", "name", "hf_id")]
    return any("wikidoc" in n.lower() for n in names)


def _front_matter(config: TrainConfig, template: str, eos_token: str, adapter: bool | None = None) -> dict[str, Any]:
    if adapter is None:  # no folder to look at: what the run's final product is
        adapter = config.is_adapter_method and not config.merge_adapter
    meta: dict[str, Any] = {}
    if REPO_ID_RE.match(config.base_model or ""):
        meta["base_model"] = config.base_model  # the hub's field wants a repo id, not a local path
    meta["library_name"] = "peft" if adapter else "transformers"
    meta["pipeline_tag"] = "text-generation"
    tags = ["medical", "medalpaca", config.method]
    if adapter:
        tags.append("lora")
    meta["tags"] = tags
    meta["medalpaca"] = {"template": template, "eos_token": eos_token, "method": config.method,
                         "base_model": config.base_model}
    return meta


def render_model_card(config: TrainConfig, data_summary: Mapping[str, Any], metrics: Mapping[str, Any],
                      template: str, eos_token: str, title: str | None = None, adapter: bool | None = None) -> str:
    """The card's text (see `write_model_card`); `adapter` says whether the card sits beside an adapter."""
    meta = _front_matter(config, template, eos_token, adapter)
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", ""]
    name = title or Path(config.output_dir or "model").name
    lines += [f"# {name}", "",
              f"A fine-tune of **{config.base_model}** for medical question answering, trained with "
              f"MedAlpaca Desktop ({config.method}).", ""]

    lines += ["## Base model", "", f"- Base model: `{config.base_model}`"]
    if str(config.base_model).lower().endswith(".gguf"):
        lines.append("- The base was a GGUF file, de-quantized first: quality is that of the quantized file.")
    lines.append("")

    lines += ["## Training data", ""]
    sources = _sources(data_summary)
    if sources:
        lines += ["| Source | Records | Weight |", "|---|---|---|"]
        for i, src in enumerate(sources):
            label = src.get("name") or src.get("path") or f"source {i + 1}"
            weight = src.get("weight")
            if weight is None and i < len(config.data_weights):
                weight = config.data_weights[i]
            lines.append(f"| {_cell(label)} | {_cell(src.get('records'))} | {_cell(weight)} |")
    else:
        lines += [f"- {p}" for p in config.data]
    lines.append("")
    for key, label in (("train_records", "Training records"), ("val_records", "Validation records"),
                       ("total_records", "Records in all")):
        if data_summary.get(key) is not None:
            lines.append(f"- {label}: {_fmt(data_summary[key])}")
    tokens = data_summary.get("token_stats") or {}
    if tokens:
        stats = ", ".join(f"{k} {_fmt(v)}" for k, v in tokens.items())
        lines.append(f"- Tokens per example: {stats}")
    lines += [f"- Validation split: {config.val_split:g} (seed {config.seed})", ""]

    lines += ["## Method and hyperparameters", "", "| Setting | Value |", "|---|---|"]
    settings: list[tuple[str, Any]] = [
        ("method", config.method), ("epochs", config.epochs), ("max_steps", config.max_steps or "–"),
        ("learning_rate", config.learning_rate), ("lr_scheduler", config.lr_scheduler),
        ("warmup_steps", config.warmup_steps), ("global_batch_size", config.global_batch_size),
        ("micro_batch_size", config.micro_batch_size), ("max_length", config.max_length),
        ("weight_decay", config.weight_decay), ("train_on_inputs", config.train_on_inputs),
        ("packing", config.packing), ("gradient_checkpointing", config.gradient_checkpointing),
        ("precision", config.precision), ("num_processes", config.num_processes), ("seed", config.seed),
    ]
    if config.is_adapter_method:
        settings += [("lora_r", config.lora_r), ("lora_alpha", config.lora_alpha),
                     ("lora_dropout", config.lora_dropout),
                     ("lora_target_modules", ", ".join(config.lora_target_modules)),
                     ("merge_adapter", config.merge_adapter)]
    lines += [f"| {k} | {_cell(v)} |" for k, v in settings]
    lines.append("")

    lines += ["## Prompt template", "",
              f"- Template: `{template}`",
              f"- End token: `{eos_token}`",
              "- Chat and the benchmark read these from this card (front matter `medalpaca:`) and use the same "
              "template; prompts in another format give worse answers.", ""]

    lines += ["## Training", ""]
    for key, label in (("final_train_loss", "Final training loss"), ("final_val_loss", "Final validation loss"),
                       ("steps", "Optimizer steps")):
        if metrics.get(key) is not None:
            lines.append(f"- {label}: {_fmt(metrics[key])}")
    if metrics.get("duration_s") is not None:
        lines.append(f"- Duration: {_duration(metrics['duration_s'])}")
    curve = metrics.get("curve")
    if curve and not isinstance(curve, Mapping):
        curve = curve_summary([(int(s), float(v)) for s, v in curve])
    if curve:
        lines += ["", "Training loss over the run:", "",
                  "| Progress | " + " | ".join(f"{int(p)} %" for p in curve) + " |",
                  "|---|" + "---|" * len(curve),
                  "| Loss | " + " | ".join(_fmt(v) for v in curve.values()) + " |"]
    lines.append("")
    lines += _in_loop_lines(metrics)

    lines += ["## Intended use and limitations", "",
              "- **Not a medical device.** For research and education only; never use it to diagnose, treat or "
              "make decisions about a patient.",
              "- Language models hallucinate: answers can be fluent, confident and wrong, including invented "
              "facts, doses and references. Check every answer against authoritative sources.",
              "- Trained on a limited, partly automatically generated instruction set; it may reflect its "
              "biases and gaps, and knowledge stops at the data's date.",
              "- Benchmark scores (e.g. USMLE self-assessment) measure multiple-choice accuracy, not clinical "
              "competence."]
    if uses_wikidoc(config, data_summary):
        lines.append(f"- {WIKIDOC_NOTE}")
    lines += ["", BENCHMARK_HEADING, "", NO_RESULTS, ""]
    return "\n".join(lines)


def _in_loop_lines(metrics: Mapping[str, Any]) -> list[str]:
    """The benchmark scored at each evaluation (trainer/bench_in_loop.py) and the checkpoint kept."""
    lines: list[str] = []
    bench = metrics.get("bench") or {}
    curve = [row for row in bench.get("curve") or [] if isinstance(row, Mapping)]
    if curve:
        n = int(curve[-1].get("bench_n") or 0)
        lines += ["## Benchmark while training", "",
                  f"{n} questions of `{bench.get('task')}` scored at every evaluation on the weights being "
                  "trained (log-likelihood, lm-eval's prompt; accuracy with its 95 % Wilson interval):", "",
                  "| Step | Accuracy | 95 % interval |", "|---|---|---|"]
        lines += [f"| {int(row['step'])} | {100 * row['bench_accuracy']:.1f} % | "
                  f"{100 * row['bench_low']:.1f}-{100 * row['bench_high']:.1f} % |" for row in curve]
        lines.append("")
    best = metrics.get("best") or {}
    if best.get("best_step") is not None and isinstance(best.get("best_value"), (int, float)):
        value = (f"accuracy {100 * best['best_value']:.1f} %" if best.get("best_by") == "accuracy"
                 else f"validation loss {best['best_value']:.4f}")
        lines += [f"Best checkpoint: step {best['best_step']} ({value}); these are its weights.", ""]
    return lines


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".readme-", suffix=".md")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_model_card(model_dir: str | Path, config: TrainConfig, data_summary: Mapping[str, Any],
                     metrics: Mapping[str, Any], template: str, eos_token: str, title: str | None = None) -> Path:
    """Write README.md into `model_dir` (the folder holding the weights or adapter); returns its path.

    data_summary: {"sources": [{"path"|"name", "records", "weight"}...], "train_records", "val_records",
    "token_stats": {...}}. metrics: {"final_train_loss", "final_val_loss", "steps", "duration_s",
    "curve": {percent: loss} or [(step, loss), ...]}. Benchmark results already in an earlier card
    there are kept.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / CARD_NAME
    # The folder decides: final/ holds an adapter even when the run also writes a merged model.
    adapter = True if (model_dir / "adapter_config.json").is_file() else (
        False if (model_dir / "config.json").is_file() else None)
    text = render_model_card(config, data_summary, metrics, template, eos_token, title, adapter)
    old_results = _benchmark_body(path.read_text(encoding="utf-8")) if path.is_file() else None
    if old_results and NO_RESULTS not in old_results:
        text = text.replace(NO_RESULTS, old_results.strip())
    _write_atomic(path, text)
    return path


def _benchmark_body(text: str) -> str | None:
    start = text.find(BENCHMARK_HEADING)
    if start < 0:
        return None
    body = text[start + len(BENCHMARK_HEADING):]
    nxt = re.search(r"^## ", body, flags=re.MULTILINE)
    return body[:nxt.start()] if nxt else body


def append_benchmark_results(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Add rows to the card's benchmark table: keys benchmark, metric, score (or value), n, date, notes.

    `path` is the card or the folder holding it. A card without the section gets one at its end.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CARD_NAME
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    today = _dt.date.today().isoformat()
    new_lines = []
    for row in rows:
        score = row.get("score", row.get("value"))
        cells = [row.get("date") or today, row.get("benchmark"), row.get("metric"), score,
                 row.get("n", row.get("questions")), row.get("notes")]
        new_lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if not new_lines:
        return path
    header = ["| " + " | ".join(BENCHMARK_COLUMNS) + " |", "|" + "---|" * len(BENCHMARK_COLUMNS)]
    body = _benchmark_body(text)
    if body is None:
        text = text.rstrip("\n") + ("\n\n" if text else "") + BENCHMARK_HEADING + "\n\n" + "\n".join(
            header + new_lines) + "\n"
    else:
        start = text.find(BENCHMARK_HEADING) + len(BENCHMARK_HEADING)
        end = start + len(body)
        table = [ln for ln in body.strip().splitlines() if ln.startswith("|")]
        others = [ln for ln in body.strip().splitlines() if not ln.startswith("|") and ln.strip() != NO_RESULTS
                  and ln.strip()]
        table = (table or header) + new_lines
        section = "\n\n" + "\n".join(table) + "\n" + ("\n" + "\n".join(others) + "\n" if others else "")
        rest = text[end:]
        text = text[:start] + section + ("\n" + rest.lstrip("\n") if rest.strip() else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, text)
    return path


def read_card_metadata(path: str | Path) -> dict[str, Any]:
    """The front matter of a card (or of the README.md in a folder); {} when there is none."""
    path = Path(path)
    if path.is_dir():
        path = path / CARD_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    match = re.match(r"^---\n(.*?)\n---\n", text, flags=re.DOTALL)
    if not match:
        return {}
    try:
        data = yaml.safe_load(match[1])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}
