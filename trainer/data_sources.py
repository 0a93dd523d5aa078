"""Checking training records read by core.records (JSON, JSONL, CSV/TSV, saved HF datasets).

Every record is checked before a model is loaded, because a bad record found
an hour into a run wastes the hour. Errors name the source and where in it
the record is ("line 17" for JSONL and CSV, "record 3" for a JSON list or a
saved dataset, counted from 1), and up to MAX_ERRORS are collected into one
DataError so a user fixes a file in one go.

A source is a path, optionally followed by a column mapping as a query string:
``qa.csv?instruction=question&output=answer`` reads the record's instruction
from the column (or JSON key) "question" and its output from "answer". Without
a mapping the names are instruction, input, output; input is optional.

Torch-free and transformers-free: the wizard can validate files in-process
(core.records imports `datasets` only for a saved dataset folder, reading its
"train" split, or its only one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from medalpaca_desktop.core.records import RecordsError, RecordSource, open_records, split_source

FIELDS: tuple[str, ...] = ("instruction", "input", "output")
MAX_ERRORS = 20
TRAIN_SPLIT = "train"
"""The split of a saved DatasetDict that is trained on (a dataset with one split uses that one)."""


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
    path_text, query = split_source(text)
    columns: dict[str, str] = {}
    if query:
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


# ------------------------------------------------------------------ sources


def _open(spec: SourceSpec, problems: _Problems) -> RecordSource:
    """The source's rows (core.records reads the formats); the mapped columns must be there."""
    try:
        source = open_records(spec.path, lambda problem: problems.add(str(problem)), name=spec.text,
                              split=TRAIN_SPLIT)
    except RecordsError as exc:
        raise DataError(str(exc)) from None
    if source.columns is not None:
        _check_columns(spec, source.columns)
    return source


def _check_columns(spec: SourceSpec, columns: list[str]) -> None:
    """A table's header or a saved dataset's columns hold the mapped fields, before any row is read."""
    for name in ("instruction", "output"):
        if spec.column(name) not in columns:
            raise DataError(f"{spec.text}: no column {spec.column(name)!r} for the {name} (columns: "
                            f"{', '.join(columns) or 'none'}); map columns with "
                            f"{spec.path.name}?instruction=COLUMN&output=COLUMN")
    if "input" in spec.columns and spec.columns["input"] not in columns:
        raise DataError(f"{spec.text}: no column {spec.columns['input']!r} for the input "
                        f"(columns: {', '.join(columns)})")


def read_source(spec: SourceSpec, problems: _Problems) -> list[Record]:
    """All valid records of one source; record problems go to `problems`, file problems raise."""
    records = []
    for where, raw in _open(spec, problems).rows:
        record = check_record(raw, spec, str(where), problems)
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
