"""What the model will see: a data preview for the fine-tune wizard (`python -m trainer preview CONFIG --json`).

The wizard cannot load a tokenizer or the `datasets` library in the GUI process, so it runs
this command and draws its JSON: each source's detected format and columns, the first
records rendered with the run's template (the prompt part, masked from the loss unless
`train_on_inputs`, and the answer), token lengths as a histogram with the share that
`max_length` cuts, and every record problem with its file and line. The records are read
and tokenized exactly as a run does (trainer.data), so the preview cannot disagree with it.

Record problems do not make the command fail: they are part of the report (`ok` false).
Exit code 2 only for a config that cannot be read.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medalpaca_desktop.core.jobs import ExitCode
from medalpaca_desktop.core.records import RecordsError, open_records, record_format
from trainer.config import ConfigError, TrainConfig
from trainer.data_sources import TRAIN_SPLIT, DataError, Record, _Problems, parse_source, read_source

DEFAULT_ROWS = 5
DEFAULT_BINS = 20
_WHERE_RE = re.compile(r"^(?P<source>.+?) (?P<kind>line|record) (?P<number>\d+): (?P<message>.*)$", re.S)


@dataclass
class SourceReport:
    source: str
    path: str
    format: str  # "JSON Lines", "JSON", "CSV", "TSV", "saved dataset", "missing", "unknown"
    records: int
    columns: list[str]
    mapping: dict[str, str]


def load_config_loose(path: str | Path) -> TrainConfig:
    """The config as written, without `validate()`: a preview needs only base_model, data and the template."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a YAML mapping of keys to values")
    data.pop("preset_source", None)
    return TrainConfig.from_dict(data)


# ------------------------------------------------------------------ formats and columns


def detect_format(path: Path) -> str:
    """The format core.records reads the source as (see its FORMATS), or "missing" / "unknown"."""
    if not path.exists():
        return "missing"
    return record_format(path) or "unknown"


def source_columns(path: Path) -> list[str]:
    """Column (or key) names a mapping can choose from: a table's header, a JSON record's keys."""
    try:
        source = open_records(path, lambda problem: None, split=TRAIN_SPLIT)
    except (RecordsError, OSError):
        return []
    if source.columns is not None:
        return source.columns
    first = next((row for _, row in source.rows), None)
    return list(first) if isinstance(first, dict) else []


def parse_problem(message: str) -> dict[str, Any]:
    """'data.jsonl line 3: ...' -> {source, line, message}; file-level problems have line None."""
    match = _WHERE_RE.match(message.strip())
    if match:
        return {"source": match["source"], "line": int(match["number"]), "unit": match["kind"],
                "message": message.strip()}
    source = message.split(":", 1)[0].strip() if ":" in message else ""
    return {"source": source, "line": None, "unit": "", "message": message.strip()}


def read_with_problems(sources: list[str]) -> tuple[list[SourceReport], list[Record], list[dict[str, Any]], int]:
    """Every valid record, each source's report, and the problems (first MAX_ERRORS) with their total."""
    problems = _Problems()
    reports: list[SourceReport] = []
    records: list[Record] = []
    for text in sources:
        before = problems.total
        try:
            spec = parse_source(text)
        except DataError as exc:
            problems.add(str(exc))
            reports.append(SourceReport(text, text, "unknown", 0, [], {}))
            continue
        fmt = detect_format(spec.path)
        found: list[Record] = []
        try:
            found = read_source(spec, problems)
            if not found and problems.total == before:
                problems.add(f"{text}: no records")
        except DataError as exc:
            problems.add(str(exc))
        records += found
        reports.append(SourceReport(text, str(spec.path), fmt, len(found), source_columns(spec.path),
                                    dict(spec.columns)))
    return reports, records, [parse_problem(m) for m in problems.items], problems.total


# ------------------------------------------------------------------ tokenizer


def load_tokenizer(base_model: str) -> Any:
    """The base model's tokenizer: an HF folder's, or a GGUF file's (rebuilt as at de-quantization)."""
    base = Path(base_model).expanduser()
    if not base.exists():
        raise DataError(f"base_model: {base_model} does not exist")
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if base.suffix.lower() != ".gguf":
        return AutoTokenizer.from_pretrained(str(base), trust_remote_code=False)
    cached = _dequantized_folder(base)
    if cached is not None:
        return AutoTokenizer.from_pretrained(str(cached), trust_remote_code=False)
    from trainer.gguf_import import _restore_digit_split

    tokenizer = AutoTokenizer.from_pretrained(str(base.parent), gguf_file=base.name, trust_remote_code=False)
    _restore_digit_split(tokenizer, base)
    return tokenizer


def _dequantized_folder(base: Path) -> Path | None:
    """The folder trainer.run.resolve_base_model de-quantized this GGUF into, if it exists already."""
    from medalpaca_desktop.core.paths import cache_dir

    st = base.stat()
    key = hashlib.sha256(f"{base.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir() / "dequantized" / f"{base.stem}-{key}"
    return target if (target / "tokenizer_config.json").is_file() else None


# ------------------------------------------------------------------ the report


def histogram(lengths: list[int], max_length: int, bins: int = DEFAULT_BINS) -> dict[str, list[int]]:
    """Equal-width bins from 0 to the longest example (or max_length if longer); edges has bins + 1 values."""
    top = max([max_length, *lengths]) if lengths else max_length
    width = max(1, -(-top // bins))
    edges = [i * width for i in range(bins + 1)]
    counts = [0] * bins
    for n in lengths:
        counts[min(bins - 1, n // width)] += 1
    return {"edges": edges, "counts": counts}


def _row(record: Record, template: str, tokenizer: Any, config: TrainConfig) -> dict[str, Any]:
    from trainer.data import IGNORE, build_prompt, tokenize_record

    prompt, full = build_prompt(record, template, tokenizer)
    example = tokenize_record(record, tokenizer, template, config.train_on_inputs, config.max_length)
    masked = sum(1 for label in example.labels if label == IGNORE)
    answer = full[len(prompt):] if full.startswith(prompt) else full
    return {"where": record.where, "prompt": prompt, "answer": answer,
            "eos": str(getattr(tokenizer, "eos_token", "") or ""), "prompt_masked": not config.train_on_inputs,
            "tokens": example.full_length, "masked_tokens": masked,
            "truncated": example.full_length > config.max_length}


def preview(config: TrainConfig, rows: int = DEFAULT_ROWS, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """The wizard's data report (see the module docstring); never raises for bad data."""
    reports, records, problems, total = read_with_problems(list(config.data))
    result: dict[str, Any] = {
        "ok": False, "sources": [r.__dict__ for r in reports], "records": len(records), "rows": [],
        "stats": None, "histogram": None, "errors": problems, "error_total": total,
        "template": config.template, "max_length": config.max_length, "tokenizer_error": None,
    }
    if not config.data:
        result["errors"] = [parse_problem("data: add at least one data file or saved dataset")]
        result["error_total"] = 1
        return result
    if records:
        try:
            tokenizer = load_tokenizer(config.base_model) if config.base_model else None
            if tokenizer is None:
                raise DataError("base_model: choose a base model to see the tokens")
            from trainer.data import length_stats, tokenize_records

            result["rows"] = [_row(r, config.template, tokenizer, config) for r in records[:rows]]
            examples = tokenize_records(records, tokenizer, config.template, config.train_on_inputs,
                                        config.max_length)
            lengths = [e.full_length for e in examples]
            result["stats"] = length_stats(lengths, config.max_length).to_dict()
            result["histogram"] = histogram(lengths, config.max_length, bins)
        except DataError as exc:
            result["tokenizer_error"] = str(exc).splitlines()[0]
        except (OSError, ValueError) as exc:
            result["tokenizer_error"] = f"the base model's tokenizer could not be loaded ({str(exc).splitlines()[0]})"
    result["ok"] = bool(records) and total == 0 and result["tokenizer_error"] is None
    return result


def describe(result: dict[str, Any]) -> str:
    """A terminal version of the report."""
    lines = [f"{s['source']}: {s['format']}, {s['records']} records" for s in result["sources"]]
    if result["stats"]:
        s = result["stats"]
        lines.append(f"tokens: mean {s['mean']:.0f}, median {s['p50']}, p95 {s['p95']}, max {s['max']}; "
                     f"{s['truncated']} ({s['truncated_share']:.1%}) longer than {s['max_length']}")
    for row in result["rows"][:2]:
        lines += ["", f"--- {row['where']} ({row['tokens']} tokens)", row["prompt"] + row["answer"]]
    if result["tokenizer_error"]:
        lines.append(f"tokenizer: {result['tokenizer_error']}")
    if result["error_total"]:
        lines.append(f"{result['error_total']} problem(s):")
        lines += [f"  {e['message']}" for e in result["errors"]]
    return "\n".join(lines)


def main_preview(config_path: str, rows: int = DEFAULT_ROWS, as_json: bool = False) -> ExitCode:
    """The command: one JSON document on stdout (`as_json`, what libraries print goes to stderr) or a report."""
    from medalpaca_desktop.core.worker import TerminalWriter, Worker, run_worker

    try:
        config = load_config_loose(config_path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.BAD_INPUT

    def job(worker: Worker) -> ExitCode:
        result = preview(config, rows=rows)
        if as_json:
            worker.writer.write_raw(json.dumps(result, ensure_ascii=False) + "\n")
        else:
            print(describe(result))
        return ExitCode.OK

    return run_worker(job, name="data preview", writer=None if as_json else TerminalWriter("python -m trainer preview"))
