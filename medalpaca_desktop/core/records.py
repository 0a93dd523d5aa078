"""Reading records from JSON, JSON Lines, CSV/TSV files and saved Hugging Face datasets.

Benchmark questions (bench.datasets) and training examples (trainer.data_sources)
come in the same formats, so this module reads them and each caller only parses
its own rows. `open_records` gives a file's format, its columns (tables and saved
datasets) and its rows as (where, row): `where` names the file and the line the
record starts on, or the record's position where there is no line of its own.

A file that cannot be read at all (missing, not UTF-8, empty, not JSON, a saved
dataset without the wanted split) raises RecordsError. A JSON Lines line that is
not JSON is a record problem: it goes to the caller's `report` and reading goes
on, so a user fixes every bad line of a file in one go.

Formats, by suffix: .jsonl/.ndjson JSON Lines; .json a list of objects, one object,
{"data": [...]}, or JSON Lines (datasets' to_json writes those into a .json); .csv
and .tsv with a header row; a folder written by `save_to_disk` (of a DatasetDict
the caller's split, else its only one). Standard library only at import time, for
the GUI: `datasets` is imported inside `_saved_dataset`.

`stream=True` reads JSON Lines, CSV/TSV and a JSON list from the open file as the
rows are taken, so memory stays bounded by one record however big the file (a
scan over a million records: bench.contamination). The rows are the same; what
differs is when a broken file says so: text that is not UTF-8, or a JSON list that
is not valid JSON, raises RecordsError from the rows, at the record where it is
found, instead of at open. Other JSON documents ({"data": [...]}, one object) are
read whole either way.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JSONL_SUFFIXES = (".jsonl", ".ndjson")
JSON_SUFFIXES = (".json",)
TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}
SAVED_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
"""Files save_to_disk writes: one of them tells a saved dataset from any other folder."""

JSON_LINES, JSON_DOCUMENT, SAVED_DATASET = "JSON Lines", "JSON", "saved dataset"
FORMATS: tuple[str, ...] = (JSON_LINES, JSON_DOCUMENT, "CSV", "TSV", SAVED_DATASET)
STREAM_CHUNK = 1 << 20
"""Characters read at a time from a JSON list in stream mode."""
MAX_STREAM_RECORD = 64 << 20
"""A streamed JSON list's record may be this long; beyond it the file is taken as broken (no record is that big)."""


class RecordsError(ValueError):
    """A file or folder that cannot be read at all; the message starts with its name."""


@dataclass(frozen=True)
class Where:
    """Where a record is: the file (as the caller names it), its 0-based position and its first line.

    `line` is None in a saved dataset (no lines) and in a {"data": [...]} document.
    `own_line` is True when the record is that line's own (JSON Lines, a table row);
    an object inside a JSON document only starts there, so it is named by position.
    """

    file: str
    index: int
    line: int | None = None
    own_line: bool = False

    def __str__(self) -> str:
        if self.own_line:
            return f"{self.file} line {self.line}"
        return f"{self.file} record {self.index + 1}"


@dataclass(frozen=True)
class RecordProblem:
    """One record that cannot be used: the file, the 1-based line (None when unknown), what is wrong."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.file} line {self.line}: {self.message}"
        return f"{self.file}: {self.message}"


Report = Callable[[RecordProblem], None]
"""Where record problems go (a list's append, a capped collector); reading goes on after each."""


@dataclass
class RecordSource:
    """An opened file or saved dataset. `rows` is read once; `columns` is None for JSON (no header)."""

    path: Path
    name: str
    format: str
    columns: list[str] | None
    rows: Iterator[tuple[Where, Any]]


def record_format(path: Path) -> str | None:
    """The format a path is read as: a folder is a saved dataset, a file goes by its suffix; None if unknown."""
    if path.is_dir():
        return SAVED_DATASET
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return JSON_LINES
    if suffix in JSON_SUFFIXES:
        return JSON_DOCUMENT
    if suffix in TABLE_SUFFIXES:
        return suffix[1:].upper()
    return None


def split_source(text: str) -> tuple[str, str]:
    """A data source as written, "qa.csv?instruction=question&output=answer": its path and its column
    mapping's query ("" when it has none). A "?" without a "key=value" after it is part of the path."""
    head, sep, query = text.rpartition("?")
    if sep and "=" in query:
        return head, query
    return text, ""


def open_records(path: str | Path, report: Report, *, name: str | None = None, split: str = "train",
                 fmt: str | None = None, stream: bool = False) -> RecordSource:
    """Open one source for reading; RecordsError (naming `name`, default the path) when it cannot be read.

    `split` is the DatasetDict split to read; `fmt` (one of FORMATS) overrides the suffix;
    `stream` reads the rows from the open file as they are taken (the module's docstring).
    """
    path = Path(path).expanduser()
    name = name or str(path)
    if not path.exists():
        raise RecordsError(f"{name}: no such file or folder")
    fmt = fmt or record_format(path)
    if fmt == SAVED_DATASET:
        ds = _saved_dataset(path, name, split)
        return RecordSource(path, name, fmt, list(ds.column_names), _dataset_rows(name, ds))
    if fmt is None:
        raise RecordsError(f"{name}: unsupported file type {path.suffix.lower() or '(no extension)'!r}; use .json, "
                           ".jsonl, .csv, .tsv or a folder saved with datasets' save_to_disk")
    if path.is_dir():
        raise RecordsError(f"{name}: a folder; {fmt} records are read from one file")
    if stream and fmt in (JSON_LINES, JSON_DOCUMENT, "CSV", "TSV"):
        return _open_stream(path, name, fmt, report)
    text = read_text(path, name)
    if fmt == JSON_LINES:
        return RecordSource(path, name, fmt, None, _json_lines(name, text.splitlines(), report))
    if fmt == JSON_DOCUMENT:
        return RecordSource(path, name, fmt, None, _json_document(name, text, report))
    if fmt in ("CSV", "TSV"):
        reader = csv.DictReader(text.splitlines(keepends=True), delimiter="," if fmt == "CSV" else "\t")
        try:
            columns = list(reader.fieldnames or [])
        except csv.Error as exc:
            raise RecordsError(f"{name}: the header row cannot be read ({_csv_problem(exc)})") from None
        return RecordSource(path, name, fmt, columns, _table_rows(name, reader, report))
    raise ValueError(f"unknown record format {fmt!r}; use one of {', '.join(FORMATS)}")


def first_record(path: str | Path) -> Any:
    """The first record of a file (to tell its shape), or None when it has none or cannot be read.

    Never a saved dataset's: telling a file's shape must not import `datasets` (the GUI does it).
    """
    if Path(path).expanduser().is_dir():
        return None
    try:
        source = open_records(path, lambda problem: None)
    except RecordsError:
        return None
    return next((row for _, row in source.rows), None)


# ------------------------------------------------------------------ files


def read_text(path: Path, name: str | None = None) -> str:
    """A UTF-8 file's text (a byte-order mark dropped); RecordsError when unreadable or blank."""
    name = name or str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RecordsError(f"{name}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    except OSError as exc:
        raise RecordsError(f"{name}: cannot be read ({exc.strerror or exc})") from None
    if not text.strip():
        raise RecordsError(f"{name}: the file is empty")
    return text


def parse_json(text: str | bytes) -> Any:
    """`json.loads` whose every failure on bad input is a JSONDecodeError.

    json.loads also raises RecursionError (arrays nested thousands deep) and a plain
    ValueError (an integer of more than 4300 digits); callers handle one error type.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", str(text)[:0], 0) from None
    except ValueError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise json.JSONDecodeError(first.split(":")[0], str(text)[:0], 0) from None


def read_json(path: Path, name: str | None = None) -> Any:
    """A whole JSON file's value (e.g. a solutions table); RecordsError with line and column when invalid."""
    name = name or str(path)
    text = read_text(path, name)
    try:
        return parse_json(text)
    except json.JSONDecodeError as exc:
        raise _invalid_json(name, exc) from None


def _invalid_json(name: str, exc: json.JSONDecodeError) -> RecordsError:
    return RecordsError(f"{name}: not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})")


def _json_lines(name: str, lines: Iterable[str], report: Report) -> Iterator[tuple[Where, Any]]:
    """One record per non-blank line; a line that is not JSON is reported and still counts a position."""
    position = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = parse_json(line)
        except json.JSONDecodeError as exc:
            report(RecordProblem(name, number, f"not valid JSON ({exc.msg} at column {exc.colno})"))
        else:
            yield Where(name, position, number, True), value
        position += 1


def _json_document(name: str, text: str, report: Report) -> Iterator[tuple[Where, Any]]:
    """Records of a .json file, parsed now so that a broken file raises at open, not halfway through."""
    try:
        data = parse_json(text)
    except json.JSONDecodeError as exc:
        if text.lstrip()[:1] == "{" and exc.msg == "Extra data":  # JSON Lines in a .json file
            return _json_lines(name, text.splitlines(), report)
        raise _invalid_json(name, exc) from None
    if isinstance(data, list):
        return _list_items(name, text, data)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        return iter([(Where(name, index), item) for index, item in enumerate(data["data"])])
    if isinstance(data, dict):
        return iter([(Where(name, 0, text.count("\n", 0, text.index("{")) + 1), data)])
    raise RecordsError(f"{name}: expected a JSON list of records, got {type(data).__name__}")


def _list_items(name: str, text: str, data: list[Any]) -> Iterator[tuple[Where, Any]]:
    """Items of a top-level JSON list, each with the line its value starts on."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    line = text.count("\n", 0, pos) + 1
    for index, item in enumerate(data):
        start = pos
        while text[start] in " \t\r\n,":
            start += 1
        line += text.count("\n", pos, start)
        _, end = decoder.raw_decode(text, start)
        yield Where(name, index, line), item
        line += text.count("\n", start, end)
        pos = end


def _csv_problem(exc: csv.Error) -> str:
    text = str(exc).strip() or "a malformed row"
    if "field limit" in text:
        text += "; an unclosed quote makes the rest of the file one cell"
    return text


def _table_rows(name: str, reader: csv.DictReader, report: Report) -> Iterator[tuple[Where, dict[str, Any]]]:
    """CSV/TSV rows as dicts; a row's line is its first in the file (a quoted cell may span lines).

    A row the csv module cannot split (a cell over its size limit) is reported and ends
    the reading: where the next row starts is unknown.
    """
    start = reader.line_num + 1
    rows = enumerate(reader)
    while True:
        try:
            index, row = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            report(RecordProblem(name, start, f"cannot be read as a table row ({_csv_problem(exc)})"))
            return
        where = Where(name, index, start, True)
        start = reader.line_num + 1
        if None in row:  # more cells than header columns
            row = {k: v for k, v in row.items() if k is not None}
        yield where, row


# ------------------------------------------------------------------ streaming


def _open_stream(path: Path, name: str, fmt: str, report: Report) -> RecordSource:
    """A text source read from the open file as its rows are taken; a blank file is an error at open."""
    first = _first_char(path, name)
    if first is None:
        raise RecordsError(f"{name}: the file is empty")
    if fmt == JSON_LINES:
        return RecordSource(path, name, fmt, None, _json_lines(name, _file_lines(path, name, keepends=False), report))
    if fmt in ("CSV", "TSV"):
        reader = csv.DictReader(_file_lines(path, name, keepends=True), delimiter="," if fmt == "CSV" else "\t")
        try:
            columns = list(reader.fieldnames or [])
        except csv.Error as exc:
            raise RecordsError(f"{name}: the header row cannot be read ({_csv_problem(exc)})") from None
        return RecordSource(path, name, fmt, columns, _table_rows(name, reader, report))
    if first == "[":
        return RecordSource(path, name, fmt, None, _json_list_stream(path, name))
    if first == "{" and _json_lines_inside(path, name):
        return RecordSource(path, name, fmt, None, _json_lines(name, _file_lines(path, name, keepends=False), report))
    return RecordSource(path, name, fmt, None, _json_document(name, read_text(path, name), report))


def _open_text(path: Path, name: str) -> Any:
    try:
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise RecordsError(f"{name}: cannot be read ({exc.strerror or exc})") from None


def _not_utf8(path: Path, name: str) -> RecordsError:
    """The error for a file that stops being UTF-8 somewhere: found again byte by byte, to name the place."""
    byte, line = 0, 1
    try:
        with path.open("rb") as fh:
            for raw in fh:
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    byte += exc.start
                    break
                byte += len(raw)
                line += 1
    except OSError:
        pass
    return RecordsError(f"{name}: not UTF-8 text (byte {byte}, line {line}); save the file as UTF-8")


def _first_char(path: Path, name: str) -> str | None:
    """The file's first character that is not white space; None for a blank file."""
    with _open_text(path, name) as fh:
        try:
            while chunk := fh.read(1 << 16):
                stripped = chunk.lstrip()
                if stripped:
                    return stripped[0]
        except UnicodeDecodeError:
            raise _not_utf8(path, name) from None
    return None


def _file_lines(path: Path, name: str, keepends: bool) -> Iterator[str]:
    """The file's lines as they are read (\\n, \\r\\n or \\r ends one); not UTF-8 is a RecordsError."""
    with _open_text(path, name) as fh:
        try:
            for line in fh:
                yield line if keepends else line.rstrip("\r\n")
        except UnicodeDecodeError:
            raise _not_utf8(path, name) from None


def _json_lines_inside(path: Path, name: str) -> bool:
    """A .json file whose first non-blank line is a whole JSON value and has more lines after it."""
    seen = 0
    for line in _file_lines(path, name, keepends=False):
        if not line.strip():
            continue
        if seen:
            return True
        try:
            parse_json(line)
        except json.JSONDecodeError:
            return False
        seen = 1
    return False


_NOT_SPACE = re.compile(r"[^ \t\r\n]")


def _json_list_stream(path: Path, name: str) -> Iterator[tuple[Where, Any]]:
    """The items of a top-level JSON list, decoded one at a time from a window of the file.

    Each item is named by its position and the line it starts on, as in a whole-document read.
    """
    decoder = json.JSONDecoder()
    with _open_text(path, name) as fh:
        buf, pos, counted, line, eof = "", 0, 0, 1, False

        def fill() -> bool:
            """Drop what was read, append the next chunk; False at the end of the file."""
            nonlocal buf, pos, counted, line, eof
            if eof:
                return False
            try:
                data = fh.read(STREAM_CHUNK)
            except UnicodeDecodeError:
                raise _not_utf8(path, name) from None
            if not data:
                eof = True
                return False
            line += buf.count("\n", counted, pos)
            buf, pos, counted = buf[pos:] + data, 0, 0
            return True

        def next_char() -> str | None:
            nonlocal pos
            while True:
                found = _NOT_SPACE.search(buf, pos)
                if found:
                    pos = found.start()
                    return buf[pos]
                pos = len(buf)
                if not fill():
                    return None

        def broken(message: str, at: int) -> RecordsError:
            where = line + buf.count("\n", counted, at)
            column = at - buf.rfind("\n", 0, at)
            return RecordsError(f"{name}: not valid JSON ({message}, line {where} column {column})")

        next_char()
        pos += 1  # the "["
        index = 0
        while True:
            char = next_char()
            if char == "]":
                return
            if index:
                if char != ",":
                    raise broken("Expecting ',' delimiter" if char else "the list does not end", pos)
                pos += 1
                char = next_char()
            if char is None:
                raise broken("the list does not end", pos)
            while True:
                try:
                    value, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError as exc:
                    if len(buf) - pos < MAX_STREAM_RECORD and fill():
                        continue  # the item goes on past the window
                    raise broken(exc.msg, exc.pos) from None
                except RecursionError:
                    raise broken("nested too deeply", pos) from None
                if end == len(buf) and fill():
                    continue  # a value that ends with the window (a number) may go on
                break
            line += buf.count("\n", counted, pos)
            counted = pos
            yield Where(name, index, line), value
            pos = end
            index += 1


# ------------------------------------------------------------------ saved datasets


def choose_split(name: str, splits: list[str], wanted: str) -> str:
    """`wanted`, else a DatasetDict's only split; RecordsError naming the splits there are."""
    if wanted in splits:
        return wanted
    if len(splits) == 1:
        return splits[0]
    raise RecordsError(f"{name}: a dataset with splits {', '.join(splits) or '(none)'} and no {wanted!r}; "
                       "save the split to use by itself")


def _saved_dataset(path: Path, name: str, split: str) -> Any:
    """The `datasets.Dataset` in a save_to_disk folder (of a DatasetDict, the chosen split)."""
    try:
        import datasets  # heavy: only here, never at module import (the GUI imports this module)
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise RecordsError(f"{name}: reading a saved dataset needs the 'datasets' package") from None
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets trusts its JSON files: a garbled one is any error
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RecordsError(f"{name}: a folder, but not a dataset saved with save_to_disk ({first})") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = ds[choose_split(name, list(ds), split)]
    return ds


def _dataset_rows(name: str, ds: Any) -> Iterator[tuple[Where, Any]]:
    for index, row in enumerate(ds):
        yield Where(name, index), row
