"""Reading and checking training records: JSON, JSONL, CSV/TSV, saved HF datasets.

Every record is checked before a model is loaded, because a bad record found
an hour into a run wastes the hour. Errors name the source and where in it
the record is ("line 17" for JSONL and CSV, "record 3" for a JSON list or a
saved dataset, counted from 1), and up to MAX_ERRORS are collected into one
DataError so a user fixes a file in one go.

A source is a path, optionally followed by a column mapping as a query string:
``qa.csv?instruction=question&output=answer`` reads the record's instruction
from the column (or JSON key) "question" and its output from "answer". Without
a mapping the names are instruction, input, output; input is optional.

Torch-free and transformers-free: the wizard can validate files in-process.
`datasets` is imported only for a saved dataset folder.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import parse_qsl

FIELDS: tuple[str, ...] = ("instruction", "input", "output")
MAX_ERRORS = 20
JSON_SUFFIXES = (".json",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}


class DataError(ValueError):
    """Training data that cannot be used. The first line summarises; later lines list the problems."""


@dataclass(frozen=True)
class Record:
    """One instruction example, with where it came from for error messages and the model card."""

    instruction: str
    input: str
    output: str
    source: str = ""
    where: str = ""


@dataclass
class SourceSpec:
    """A data source as written in the config: path plus optional field -> column mapping."""

    text: str
    path: Path
    columns: dict[str, str] = field(default_factory=dict)

    def column(self, name: str) -> str:
        return self.columns.get(name, name)


@dataclass
class _Problems:
    """Collects record errors across sources; raised together at the end."""

    items: list[str] = field(default_factory=list)
    total: int = 0

    def add(self, message: str) -> None:
        self.total += 1
        if len(self.items) < MAX_ERRORS:
            self.items.append(message)

    def raise_if_any(self, n_sources: int) -> None:
        if not self.total:
            return
        shown = f" (first {len(self.items)} listed)" if self.total > len(self.items) else ""
        plural = "s" if self.total != 1 else ""
        head = f"training data: {self.total} problem{plural} in {n_sources} source(s){shown}; fix them and start again:"
        raise DataError("\n".join([head, *(f"  {m}" for m in self.items)]))


# ------------------------------------------------------------------ source strings


def parse_source(text: str) -> SourceSpec:
    """Split "path?instruction=col&output=col" into path and mapping; unknown field names are an error."""
    path_text, columns = text, {}
    head, sep, query = text.rpartition("?")
    if sep and "=" in query:
        path_text = head
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False)
        for key, value in pairs:
            if key not in FIELDS:
                raise DataError(f"{text}: unknown field {key!r} in the column mapping "
                                f"(use {', '.join(FIELDS)}, e.g. file.csv?instruction=question&output=answer)")
            if not value:
                raise DataError(f"{text}: the column mapping gives no column for {key!r}")
            columns[key] = value
    return SourceSpec(text=text, path=Path(path_text).expanduser(), columns=columns)


# ------------------------------------------------------------------ one record


def _label(spec: SourceSpec, name: str) -> str:
    col = spec.column(name)
    return f"'{col}'" if col == name else f"'{col}' (the {name})"


def _text_field(raw: dict[str, Any], spec: SourceSpec, name: str, required: bool,
                where: str, problems: _Problems) -> str | None:
    """The field's text, or None after recording why it cannot be used."""
    col = spec.column(name)
    value = raw.get(col)
    if value is None:
        if required:
            problems.add(f"{where}: {_label(spec, name)} is missing")
            return None
        return ""
    if not isinstance(value, str):
        problems.add(f"{where}: {_label(spec, name)} is not text (got {type(value).__name__} {_short(value)})")
        return None
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_record(raw: Any, spec: SourceSpec, where: str, problems: _Problems) -> Record | None:
    """Validate one raw record (a mapping); problems are recorded, not raised."""
    if not isinstance(raw, dict):
        problems.add(f"{where}: expected an object with {', '.join(FIELDS)}, got {type(raw).__name__}")
        return None
    before = problems.total
    instruction = _text_field(raw, spec, "instruction", True, where, problems)
    inp = _text_field(raw, spec, "input", False, where, problems)
    output = _text_field(raw, spec, "output", True, where, problems)
    if output is not None and not output.strip():
        problems.add(f"{where}: {_label(spec, 'output')} is empty")
    if instruction is not None and inp is not None and not instruction.strip() and not inp.strip():
        problems.add(f"{where}: {_label(spec, 'instruction')} and {_label(spec, 'input')} are both empty")
    if problems.total > before:
        return None
    return Record(instruction or "", inp or "", output or "", spec.text, where)


# ------------------------------------------------------------------ formats


def _read_text(spec: SourceSpec) -> str:
    try:
        text = spec.path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{spec.text}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    except OSError as exc:
        raise DataError(f"{spec.text}: cannot be read ({exc.strerror})") from None
    if not text.strip():
        raise DataError(f"{spec.text}: the file is empty")
    return text


def _jsonl_rows(spec: SourceSpec, text: str, problems: _Problems) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{spec.text} line {number}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as exc:
            problems.add(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})")


def _json_rows(spec: SourceSpec, text: str, problems: _Problems) -> Iterator[tuple[str, Any]]:
    """A JSON list of records; a .json file that is really JSON Lines (datasets' to_json) is read as such."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        first = text.lstrip()[:1]
        if first == "{" and exc.msg == "Extra data":
            yield from _jsonl_rows(spec, text, problems)
            return
        raise DataError(f"{spec.text}: not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise DataError(f"{spec.text}: expected a JSON list of records, got {type(data).__name__}")
    for index, item in enumerate(data):
        yield f"{spec.text} record {index + 1}", item


def _table_rows(spec: SourceSpec, text: str, delimiter: str) -> Iterator[tuple[str, Any]]:
    """CSV/TSV rows as dicts; `where` is the row's first line in the file (the header is line 1)."""
    reader = csv.DictReader(text.splitlines(keepends=True), delimiter=delimiter)
    header = reader.fieldnames or []
    for name in ("instruction", "output"):
        if spec.column(name) not in header:
            raise DataError(f"{spec.text}: no column {spec.column(name)!r} for the {name} (columns: "
                            f"{', '.join(header) or 'none'}); map columns with "
                            f"{spec.path.name}?instruction=COLUMN&output=COLUMN")
    if "input" in spec.columns and spec.columns["input"] not in header:
        raise DataError(f"{spec.text}: no column {spec.columns['input']!r} for the input "
                        f"(columns: {', '.join(header)})")
    start = reader.line_num + 1
    for row in reader:
        where = f"{spec.text} line {start}"
        start = reader.line_num + 1
        if None in row:  # more cells than header columns
            row = {k: v for k, v in row.items() if k is not None}
        yield where, row


def _dataset_rows(spec: SourceSpec) -> Iterator[tuple[str, Any]]:
    """Rows of a folder written by datasets' save_to_disk (a DatasetDict uses its 'train' split)."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise DataError(f"{spec.text}: reading a saved dataset needs the 'datasets' package") from None
    try:
        ds = datasets.load_from_disk(str(spec.path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise DataError(f"{spec.text}: a folder, but not a dataset saved with save_to_disk "
                        f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds)
        if "train" in ds:
            ds = ds["train"]
        elif len(splits) == 1:
            ds = ds[splits[0]]
        else:
            raise DataError(f"{spec.text}: a dataset with splits {', '.join(splits)} and no 'train'; "
                            "save the split to train on by itself")
    missing = [spec.column(n) for n in ("instruction", "output") if spec.column(n) not in ds.column_names]
    if missing:
        raise DataError(f"{spec.text}: no column {missing[0]!r} (columns: {', '.join(ds.column_names)}); "
                        "map columns with FOLDER?instruction=COLUMN&output=COLUMN")
    for index, row in enumerate(ds):
        yield f"{spec.text} record {index + 1}", row


def _raw_rows(spec: SourceSpec, problems: _Problems) -> Iterable[tuple[str, Any]]:
    if not spec.path.exists():
        raise DataError(f"{spec.text}: no such file or folder")
    if spec.path.is_dir():
        return _dataset_rows(spec)
    suffix = spec.path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return _jsonl_rows(spec, _read_text(spec), problems)
    if suffix in JSON_SUFFIXES:
        return _json_rows(spec, _read_text(spec), problems)
    if suffix in TABLE_SUFFIXES:
        return _table_rows(spec, _read_text(spec), TABLE_SUFFIXES[suffix])
    raise DataError(f"{spec.text}: unsupported file type {suffix or '(no extension)'!r}; use .json, .jsonl, "
                    ".csv, .tsv or a folder saved with datasets' save_to_disk")


def read_source(spec: SourceSpec, problems: _Problems) -> list[Record]:
    """All valid records of one source; record problems go to `problems`, file problems raise."""
    records = []
    for where, raw in _raw_rows(spec, problems):
        record = check_record(raw, spec, where, problems)
        if record is not None:
            records.append(record)
    return records


def read_sources(sources: list[str]) -> list[list[Record]]:
    """Records per source, in config order; one DataError lists every problem found."""
    if not sources:
        raise DataError("training data: no sources given (config key 'data')")
    problems = _Problems()
    out: list[list[Record]] = []
    for text in sources:
        before = problems.total
        try:
            spec = parse_source(text)
            records = read_source(spec, problems)
            if not records and problems.total == before:
                problems.add(f"{text}: no records")
        except DataError as exc:
            problems.add(str(exc))
            records = []
        out.append(records)
    problems.raise_if_any(len(sources))
    return out
