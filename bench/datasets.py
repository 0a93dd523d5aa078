"""Reading benchmark questions: USMLE self-assessment folders, MedQA JSONL, tables, saved HF datasets.

Every format becomes a list of `bench.questions.Question`, checked before any
model loads: a bad record found an hour into a run wastes the hour.

Formats (`detect_format` picks one; `load_dataset(kind=...)` forces it):

- ``usmle``: the folder published with MedAlpaca: ``step1.json`` ... ``step3.json``
  (lists of {no, question, options}), ``stepN_solutions.json`` ({no: letter}) and
  ``question_with_images.json``. Questions that need an image are moved to
  `LoadedDataset.excluded` (the folder's question_with_images.json when present,
  else the paper repository's lists shipped in resources; bench/image_questions.py).
  Ids are ``"step1-4"`` (Step and question number), since numbers restart per Step.
- ``medqa``: MedQA (USMLE) JSON Lines: question, options {A..D or A..E},
  answer_idx, meta_info ("step1" / "step2&3") -> step; also the 4-option variant
  lm-eval reads (sent1, ending0..3, label = 0-based index; like lm-eval's medqa task
  the question is sent1 alone, a non-empty sent2 is kept in meta). A .json list of
  such records is read too.
- ``table``: CSV/TSV/JSONL/JSON with a column `mapping` {field: column}. Fields:
  question, answer (a letter or the option's text), answer_index (0-based), options
  (one column holding a JSON object or list), A..J (one column per option), id, step.
  Defaults: the field's own name; option columns A, B, ... when present, else
  "options". Example: ``{"question": "stem", "A": "opa", "B": "opb", "answer": "key"}``.
- ``hf``: a folder written by ``datasets.Dataset.save_to_disk`` (a DatasetDict uses
  "test", else its only split). Rows shaped like MedQA are read as MedQA, others as
  a table with `mapping`.

The files themselves are read by `medalpaca_desktop.core.records` (shared with the
trainer's data sources); this module parses the rows into questions. Both stay
light (standard library + yaml) for the GUI: `datasets` is imported only when a
saved dataset is read.

Ids are the dataset's own (realidx, id or no), else the 0-based position in the
file, as text. Record problems (bad JSON line, missing options, a gold letter
that is not an option, a duplicate id, ...) are collected with file and line and
raised together as one `DatasetError`, or, with ``skip_malformed=True``, the
records are skipped and listed in `LoadedDataset.problems`. File problems (no
such file, unreadable, no solutions file) always raise.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.image_questions import (
    FOLDER_FILE,
    STEPS,
    ImageListError,
    ImageLists,
    lists_for_folder,
)
from bench.questions import LETTERS, Question
from medalpaca_desktop.core.records import (
    JSON_LINES,
    JSON_SUFFIXES,
    JSONL_SUFFIXES,
    SAVED_DATASET,
    SAVED_DATASET_MARKERS,
    TABLE_SUFFIXES,
    RecordProblem,
    RecordsError,
    RecordSource,
    Where,
    first_record,
    open_records,
    parse_json,
    read_json,
    record_format,
)

__all__ = [
    "KINDS",
    "TABLE_FIELDS",
    "DatasetError",
    "LoadedDataset",
    "RecordProblem",
    "detect_format",
    "load_dataset",
    "sample_questions_dir",
]

KINDS: tuple[str, ...] = ("usmle", "medqa", "table", "hf")
TABLE_FIELDS: tuple[str, ...] = ("id", "step", "question", "answer", "answer_index", "options", *LETTERS)
SHOWN_PROBLEMS = 5
SCORED_SPLIT = "test"
"""The split of a saved DatasetDict that is scored (a dataset with one split uses that one)."""


class DatasetError(ValueError):
    """Questions that cannot be used; `problems` lists every record (or the file) at fault."""

    def __init__(self, problems: list[RecordProblem] | str, *, skippable: bool = True):
        if isinstance(problems, str):
            problems, skippable = [RecordProblem("", None, problems)], False
        self.problems = list(problems)
        self.skippable = skippable
        super().__init__(self._message())

    def _message(self) -> str:
        n = len(self.problems)
        if not self.skippable:
            return "\n".join(str(p).lstrip(": ") for p in self.problems)
        shown = "\n".join(f"  {p}" for p in self.problems[:SHOWN_PROBLEMS])
        more = f"\n  ... and {n - SHOWN_PROBLEMS} more" if n > SHOWN_PROBLEMS else ""
        plural = "s" if n != 1 else ""
        return (f"{n} malformed record{plural}:\n{shown}{more}\n"
                f"Fix the file, or re-run with skip malformed (--skip-malformed) to skip {n} record{plural}.")


@dataclass
class LoadedDataset:
    """The questions to score, those left out because they need an image, and skipped records."""

    kind: str
    path: str
    questions: list[Question]
    excluded: list[Question] = field(default_factory=list)
    problems: list[RecordProblem] = field(default_factory=list)
    sha256: str = ""
    exclusion_source: str = ""
    """Where the image-question lists came from (usmle only): the folder's file or the shipped lists."""
    source: dict[str, Any] = field(default_factory=dict)
    """A suite task's origin: repo_id, revision, commit and each file's hub checksum (the download's manifest)."""

    def counts(self) -> dict[str, int]:
        """Questions per Step after exclusion, in first-seen order (no entry for an unknown step), plus "all"."""
        out: dict[str, int] = {}
        for q in self.questions:
            if q.step:
                out[q.step] = out.get(q.step, 0) + 1
        out["all"] = len(self.questions)
        return out

    def excluded_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for q in self.excluded:
            out[q.step] = out.get(q.step, 0) + 1
        return out


def sample_questions_dir() -> Path:
    """The project's own sample questions (resources/sample_questions): usmle/, medqa_sample.jsonl, ..."""
    from resources import resource_path

    return Path(str(resource_path("sample_questions")))


# ------------------------------------------------------------------ detection


def _is_usmle_folder(path: Path) -> bool:
    return any((path / f"{step}.json").is_file() for step in STEPS)


def _medqa_shaped(row: Any) -> bool:
    if not isinstance(row, dict):
        return False
    return ("question" in row and "options" in row and ("answer_idx" in row or "answer" in row)) or \
        ("sent1" in row and "ending0" in row and "label" in row)


def detect_format(path: str | Path) -> str:
    """"usmle", "medqa", "table" or "hf" for a file or folder; DatasetError when none fits."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_dir():
        if _is_usmle_folder(path):
            return "usmle"
        if any((path / marker).is_file() for marker in SAVED_DATASET_MARKERS):
            return "hf"
        raise DatasetError(f"{path}: a folder, but neither a USMLE self-assessment folder (step1.json, "
                           "step1_solutions.json, ...) nor a dataset saved with save_to_disk")
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        return "table"
    if re.fullmatch(r"step[123](_solutions)?\.json", path.name.lower()) or path.name == FOLDER_FILE:
        return "usmle"
    if suffix in JSONL_SUFFIXES or suffix in JSON_SUFFIXES:
        return "medqa" if _medqa_shaped(first_record(path)) else "table"
    raise DatasetError(f"{path}: unsupported file type {suffix or '(no extension)'!r}; use a USMLE folder, "
                       ".jsonl, .json, .csv, .tsv or a folder saved with datasets' save_to_disk")


# ------------------------------------------------------------------ reading files


def _open(path: Path, collector: _Collector, fmt: str | None = None) -> RecordSource:
    """core.records' reader for one file or saved dataset; its file errors become DatasetErrors."""
    try:
        return open_records(path, collector.problems.append, split=SCORED_SPLIT, fmt=fmt)
    except RecordsError as exc:
        raise DatasetError(str(exc)) from None


# ------------------------------------------------------------------ field checks


class _Bad(Exception):
    """A record problem raised inside a record parser; the loader turns it into a RecordProblem."""


def _text(row: dict[str, Any], key: str, label: str | None = None) -> str:
    value = row.get(key)
    label = label or repr(key)
    if value is None:
        raise _Bad(f"{label} is missing")
    if not isinstance(value, str):
        raise _Bad(f"{label} is not text (got {type(value).__name__})")
    if not value.strip():
        raise _Bad(f"{label} is empty")
    return value  # as written: lm-eval's prompts keep a leading space or a trailing newline, and so do we


def _options(value: Any, label: str = "'options'") -> dict[str, str]:
    """Letters -> text from a dict, a list of texts or a list of {key, value}; JSON text is decoded first."""
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        try:
            value = parse_json(value)
        except json.JSONDecodeError:
            raise _Bad(f"{label} is not a JSON object or list") from None
    if value is None:
        raise _Bad(f"{label} is missing")
    pairs: list[tuple[Any, Any]]
    if isinstance(value, dict):  # a None option is absent (an Arrow struct of 4- and 5-option rows)
        pairs = [(k, v) for k, v in value.items() if v is not None]
    elif isinstance(value, list) and all(isinstance(v, dict) and "key" in v and "value" in v for v in value):
        pairs = [(v["key"], v["value"]) for v in value]
    elif isinstance(value, list):
        if len(value) > len(LETTERS):
            raise _Bad(f"{label} has {len(value)} options; at most {len(LETTERS)} are read")
        pairs = list(zip(LETTERS, value))
    else:
        raise _Bad(f"{label} must map letters to option text (got {type(value).__name__})")
    options: dict[str, str] = {}
    for key, text in pairs:
        letter = str(key).strip().upper()
        if letter not in LETTERS:
            raise _Bad(f"{label}: {key!r} is not an option letter A-{LETTERS[-1]}")
        if letter in options:
            raise _Bad(f"{label}: option {letter} appears twice")
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            text = str(text)
        if not isinstance(text, str):
            raise _Bad(f"{label}: option {letter} is empty")
        options[letter] = text  # as written (see _text); an empty one is scored as lm-eval scores it
    if len(options) < 2:
        raise _Bad(f"{label} needs at least two options (got {len(options)})")
    if sum(1 for text in options.values() if text.strip()) < 2:
        raise _Bad(f"{label} needs at least two options with text")
    return dict(sorted(options.items(), key=lambda kv: LETTERS.index(kv[0])))


def _letters(options: dict[str, str]) -> str:
    keys = list(options)
    return f"{keys[0]}-{keys[-1]}" if len(keys) > 2 else "/".join(keys)


def _gold_letter(value: Any, options: dict[str, str], label: str = "the answer") -> str:
    """A letter among the options, from a letter (any case) or the exact text of an option."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise _Bad(f"{label} is missing")
    text = str(value).strip()
    letter = text.upper().rstrip(".):")
    if len(letter) == 1 and letter in LETTERS:
        if letter not in options:
            raise _Bad(f"{label} {text!r} is not among the options {_letters(options)}")
        return letter
    folded = text.casefold()
    matches = [k for k, v in options.items() if v.casefold() == folded]
    if len(matches) == 1:
        return matches[0]
    raise _Bad(f"{label} {_short(text)} is neither an option letter ({_letters(options)}) nor an option's text")


def _gold_index(value: Any, options: dict[str, str], label: str) -> str:
    try:
        index = int(str(value).strip())
    except (TypeError, ValueError):
        raise _Bad(f"{label} {_short(value)} is not a 0-based option number") from None
    if isinstance(value, float) and value != index:
        raise _Bad(f"{label} {value!r} is not a whole number")
    letters = list(options)
    if not 0 <= index < len(letters):
        raise _Bad(f"{label} {index} is out of range (0-{len(letters) - 1} for {len(letters)} options)")
    return letters[index]


def _fold(text: str) -> str:
    """Case and punctuation folded, for comparing an answer text with an option."""
    return " ".join(re.sub(r"[^\w]+", " ", text.casefold()).split())


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _step(value: Any) -> str:
    """"Step 1", "step1", "1" -> "step1"; "step2&3" stays; spaces dropped, lower case."""
    text = re.sub(r"\s+", "", str(value or "")).lower()
    return f"step{text}" if re.fullmatch(r"[123]|2&3", text) else text


def _own_id(row: dict[str, Any], position: int, keys: tuple[str, ...] = ("realidx", "id", "no")) -> str:
    for key in keys:
        value = row.get(key)
        if value is not None and str(value).strip():
            return str(value).strip()
    return str(position)


# ------------------------------------------------------------------ record parsers


Parsed = tuple[str, str, str, dict[str, str], str, dict[str, Any]]
"""A record parser's result: (id, step, question, options, gold letter, meta)."""


def _medqa_question(row: Any, position: int) -> Parsed:
    """(id, step, question, options, gold) of a MedQA record (either variant)."""
    if not isinstance(row, dict):
        raise _Bad(f"expected a JSON object, got {type(row).__name__}")
    meta: dict[str, Any] = {}
    if "sent1" in row or "ending0" in row:
        stem = _text(row, "sent1")  # lm-eval's doc_to_text reads sent1 only; sent2 is kept in meta
        tail = row.get("sent2")
        if isinstance(tail, str) and tail.strip():
            meta["sent2"] = tail
        endings = []
        for i in range(len(LETTERS)):
            if f"ending{i}" not in row:
                break
            endings.append(row[f"ending{i}"])
        if not endings:
            raise _Bad("'ending0' ... are missing")
        options = _options(endings, "the endings")
        gold = _gold_index(row.get("label"), options, "'label'")
        meta["format"] = "lm-eval"
    else:
        stem = _text(row, "question")
        options = _options(row.get("options"))
        if row.get("answer_idx") is not None:
            gold = _gold_letter(row["answer_idx"], options, "'answer_idx'")
        else:
            gold = _gold_letter(row.get("answer"), options, "'answer'")
        answer = row.get("answer")
        if isinstance(answer, str) and len(answer.strip()) > 1 and _fold(answer) != _fold(options[gold]):
            raise _Bad(f"'answer_idx' {gold} ({_short(options[gold])}) disagrees with 'answer' {_short(answer)}")
    return _own_id(row, position), _step(row.get("meta_info") or row.get("step")), stem, options, gold, meta


def _usmle_question(row: Any, position: int, step: str, solutions: dict[str, Any],
                    solutions_name: str) -> Parsed:
    """A stepN.json record ({no, question, options}) with its letter from stepN_solutions.json."""
    if not isinstance(row, dict):
        raise _Bad(f"record {position + 1}: expected an object with no, question, options")
    if row.get("no") is None or not str(row["no"]).strip():
        raise _Bad(f"record {position + 1}: 'no' (the question number) is missing")
    number = str(row["no"]).strip()
    stem = _text(row, "question", f"question {number}: 'question'")
    options = _options(row.get("options"), f"question {number}: 'options'")
    if number not in solutions:
        raise _Bad(f"question {number}: no answer in {solutions_name}")
    gold = _gold_letter(solutions[number], options, f"question {number}: the answer in {solutions_name}")
    return f"{step}-{number}", step, stem, options, gold, {"no": row["no"]}


def _table_question(row: Any, position: int, mapping: dict[str, str],
                    header: list[str]) -> Parsed:
    if not isinstance(row, dict):
        raise _Bad(f"expected an object, got {type(row).__name__}")

    def col(name: str) -> str:
        return mapping.get(name, name)

    stem = _text(row, col("question"), _label(mapping, "question"))
    letter_cols = [(letter, mapping[letter]) for letter in LETTERS if letter in mapping]
    if not letter_cols and "options" not in mapping:
        letter_cols = [(letter, letter) for letter in LETTERS if letter in header]
    if letter_cols:
        cells = {letter: row.get(column) for letter, column in letter_cols}
        # Trailing empty option cells are fine (a 4-option row in a 5-column table).
        while cells and (cells[next(reversed(cells))] is None or str(cells[next(reversed(cells))]).strip() == ""):
            cells.pop(next(reversed(cells)))
        options = _options(cells, "the options")
    else:
        options = _options(row.get(col("options")), _label(mapping, "options"))
    if "answer_index" in mapping:
        gold = _gold_index(row.get(mapping["answer_index"]), options, _label(mapping, "answer_index"))
    else:
        gold = _gold_letter(row.get(col("answer")), options, _label(mapping, "answer"))
    ident = str(row[col("id")]).strip() if row.get(col("id")) not in (None, "") else str(position)
    return ident, _step(row.get(col("step"))), stem, options, gold, {}


def _label(mapping: dict[str, str], name: str) -> str:
    column = mapping.get(name, name)
    return f"'{column}'" if column == name else f"'{column}' (the {name})"


def _check_mapping(mapping: dict[str, str] | None) -> dict[str, str]:
    mapping = dict(mapping or {})
    for key, value in mapping.items():
        if key not in TABLE_FIELDS:
            raise DatasetError(f"unknown field {key!r} in the column mapping; use {', '.join(TABLE_FIELDS[:6])} "
                               f"or option letters A-{LETTERS[-1]}")
        if not isinstance(value, str) or not value:
            raise DatasetError(f"the column mapping gives no column for {key!r}")
    if "answer" in mapping and "answer_index" in mapping:
        raise DatasetError("the column mapping names both 'answer' and 'answer_index'; keep one")
    return mapping


# ------------------------------------------------------------------ the loader


class _Collector:
    """Turns parsed rows into Questions, records problems and catches duplicate ids."""

    def __init__(self) -> None:
        self.questions: list[Question] = []
        self.problems: list[RecordProblem] = []
        self._seen: dict[str, str] = {}

    def add(self, where: Where, parse: Callable[..., Parsed], *args: Any) -> Question | None:
        """`parse(*args)` as a Question, or None after noting why not (at its line, else 'record N')."""
        line = where.line
        try:
            ident, step, stem, options, gold, meta = parse(*args)
        except _Bad as exc:
            self.problems.append(self._problem(where, str(exc)))
            return None
        if ident in self._seen:
            self.problems.append(self._problem(where, f"duplicate id {ident!r} (first at {self._seen[ident]})"))
            return None
        self._seen[ident] = f"line {line}" if line is not None else f"record {where.index + 1}"
        question = Question(id=ident, step=step, question=stem, options=options, gold=gold, source=where.file,
                            line=line if where.own_line else None, meta=meta)
        self.questions.append(question)
        return question

    @staticmethod
    def _problem(where: Where, message: str) -> RecordProblem:
        if where.line is None:  # a saved dataset's row: no line, so its position
            return RecordProblem(where.file, None, f"record {where.index + 1}: {message}")
        return RecordProblem(where.file, where.line, message)


def _load_usmle(path: Path, collector: _Collector) -> tuple[list[Question], str, list[Path]]:
    """Questions of every stepN.json in the folder; image questions returned separately."""
    folder = path if path.is_dir() else path.parent
    only = None
    match = re.fullmatch(r"(step[123])(?:_solutions)?\.json", path.name.lower()) if path.is_file() else None
    if match:
        only = match.group(1)
    try:
        images: ImageLists = lists_for_folder(folder)
    except ImageListError as exc:
        raise DatasetError(str(exc)) from None
    files: list[Path] = []
    excluded: list[Question] = []
    steps = [only] if only else [s for s in STEPS if (folder / f"{s}.json").is_file()]
    if not steps:
        raise DatasetError(f"{folder}: no step1.json, step2.json or step3.json")
    for step in steps:
        qfile, sfile = folder / f"{step}.json", folder / f"{step}_solutions.json"
        if not qfile.is_file():
            raise DatasetError(f"{qfile}: no such file")
        if not sfile.is_file():
            raise DatasetError(f"{sfile}: no such file; the answers to {qfile.name} are read from it")
        files += [qfile, sfile]
        try:
            solutions = read_json(sfile)
        except RecordsError as exc:
            raise DatasetError(str(exc)) from None
        if not isinstance(solutions, dict):
            raise DatasetError(f"{sfile}: expected an object {{question number: letter}}, "
                               f"got {type(solutions).__name__}")
        solutions = {str(k).strip(): v for k, v in solutions.items()}
        for where, row in _open(qfile, collector).rows:
            question = collector.add(where, _usmle_question, row, where.index, step, solutions, sfile.name)
            if question is not None and images.excluded(step, question.meta["no"]):
                question.meta["excluded"] = "image"
                collector.questions.pop()
                excluded.append(question)
    if (folder / FOLDER_FILE).is_file():
        files.append(folder / FOLDER_FILE)
    return excluded, images.source, files


def _load_file(path: Path, kind: str, mapping: dict[str, str], collector: _Collector) -> None:
    """A CSV/TSV is always a table; JSON by `kind`; any other file is read as JSON Lines (a forced kind)."""
    source = _open(path, collector, fmt=record_format(path) or JSON_LINES)
    if source.columns is not None:
        header = source.columns
        _check_columns(path, mapping, header)
        for where, row in source.rows:
            collector.add(where, _table_question, row, where.index, mapping, header)
        return
    for where, row in source.rows:
        if kind == "medqa":
            collector.add(where, _medqa_question, row, where.index)
        else:
            header = list(row) if isinstance(row, dict) else []
            collector.add(where, _table_question, row, where.index, mapping, header)


def _check_columns(path: Path, mapping: dict[str, str], header: list[str]) -> None:
    """A table's header must have the question, an answer and the options before any row is read."""
    need = [mapping.get("question", "question")]
    need.append(mapping["answer_index"] if "answer_index" in mapping else mapping.get("answer", "answer"))
    letters_mapped = any(letter in mapping for letter in LETTERS)
    if not letters_mapped and ("options" in mapping or not any(letter in header for letter in LETTERS)):
        need.append(mapping.get("options", "options"))
    need += [mapping[letter] for letter in LETTERS if letter in mapping]
    missing = [c for c in need if c not in header]
    if missing:
        raise DatasetError(f"{path}: no column {missing[0]!r} (columns: {', '.join(header) or 'none'}); map columns "
                           "with a mapping such as question=stem, A=opa, B=opb, answer=key")


def _load_hf(path: Path, mapping: dict[str, str], collector: _Collector) -> list[Path]:
    """Rows of a saved dataset (its "test" split, or its only one): MedQA-shaped ones as MedQA, else a table."""
    source = _open(path, collector, fmt=SAVED_DATASET)
    columns = source.columns or []
    medqa = not mapping and _medqa_shaped({c: None for c in columns})
    if not medqa:
        _check_columns(path, mapping, columns)
    for where, row in source.rows:
        if medqa:
            collector.add(where, _medqa_question, row, where.index)
        else:
            collector.add(where, _table_question, row, where.index, mapping, columns)
    return sorted(p for p in path.rglob("*") if p.is_file())


def files_sha256(files: list[Path], root: Path) -> str:
    """One hash over the files (and their names relative to `root`): what the run record names as the data."""
    digest = hashlib.sha256()
    for file in sorted(files):
        if len(files) > 1 or file != root:
            digest.update(str(file.relative_to(root) if file.is_relative_to(root) else file.name).encode())
            digest.update(b"\0")
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_dataset(path: str | Path, kind: str = "auto", *, mapping: dict[str, str] | None = None,
                 skip_malformed: bool = False, limit: int | None = None) -> LoadedDataset:
    """Read and check every question; DatasetError names file and line of what is wrong.

    `limit` keeps the first N questions (after exclusion, in file order; USMLE: Step 1
    first). Problems anywhere in the file are still reported.
    """
    path = Path(path).expanduser()
    if kind == "auto":
        kind = detect_format(path)
    elif kind not in KINDS:
        raise DatasetError(f"unknown dataset kind {kind!r}; use one of auto, {', '.join(KINDS)}")
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    mapping = _check_mapping(mapping)
    collector = _Collector()
    excluded: list[Question] = []
    exclusion_source = ""
    root = path
    if kind == "usmle":
        excluded, exclusion_source, files = _load_usmle(path, collector)
        root = path if path.is_dir() else path.parent
    elif kind == "hf":
        if not path.is_dir():
            raise DatasetError(f"{path}: a saved Hugging Face dataset is a folder (written by save_to_disk)")
        files = _load_hf(path, mapping, collector)
    else:
        if path.is_dir():
            raise DatasetError(f"{path}: a folder; {kind} questions are read from one file")
        _load_file(path, kind, mapping, collector)
        files = [path]
    if collector.problems and not skip_malformed:
        raise DatasetError(collector.problems)
    if not collector.questions and not excluded:
        raise DatasetError(f"{path}: no usable questions" +
                           (f" ({len(collector.problems)} malformed records skipped)" if collector.problems else ""))
    questions = collector.questions
    if limit is not None and limit > 0:
        questions = questions[:limit]
    return LoadedDataset(kind=kind, path=str(path), questions=questions, excluded=excluded,
                         problems=collector.problems, sha256=files_sha256(files, root),
                         exclusion_source=exclusion_source)
