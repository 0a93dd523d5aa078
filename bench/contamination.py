"""Training-data contamination: which of a benchmark run's questions sit in the data a model was trained on.

MedAlpaca's own repository was asked exactly this (kbressem/medAlpaca issue #34: were the benchmark
questions in the training data?). A score on questions the model has read is a memory test, so the
check says which questions overlap and what the accuracy is without them.

Two tests per question, on normalised text (lm-evaluation-harness's janitor,
lm_eval/decontamination/janitor.py, carried over to Unicode): NFKC, case folded, punctuation deleted
(string.punctuation as lm-eval does, and every Unicode punctuation character), words split on white
space and joined by one space.

- exact: the normalised question text equals a normalised text field of a training record;
- n-gram (lm-eval's decontamination): a 13-gram (`n`) of the question's words (the abstract where the
  question has one, the question, then its options' texts) appears among a training text field's
  n-grams. A question of fewer than n words counts when all of it appears as consecutive words.

Every text field of a record is checked (instruction, input and output, and any other: text in a
training file is text someone may train on; the report names the field). A question reports the first
record it matched (an exact match before an n-gram one), with how, the field and the matching text,
and how many records matched it.

Bounded memory and one pass: the questions' n-grams are indexed (a hash table of a few thousand
entries per task), then the training records are streamed once (core.records, stream=True: JSON Lines,
CSV/TSV and JSON lists are read a record at a time) and each text field's n-grams are looked up. Only
windows of words that all occur in the questions are joined and looked up, which skips most of a long
record. A suite folder is checked in the same single pass for all its runs.

Writes RUN_DIR/contamination.json (the sources with their files' sha256, every overlapping question)
and RUN_DIR/summary_clean.json (summary.json's shape, bench.results.build_summary over the scored
questions that do not overlap); bench.contamination_report reads them back. Light: the standard library
and bench's light modules (a run's questions are read through bench.run, imported when a check starts).
"""

from __future__ import annotations

import hashlib
import string
import sys
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from bench import results
from bench.contamination_report import DEFAULT_NGRAM, REPORT, SUMMARY_CLEAN, overlap_line
from bench.questions import Question
from medalpaca_desktop.core.records import (
    JSON_LINES,
    SAVED_DATASET_MARKERS,
    RecordProblem,
    RecordsError,
    open_records,
    record_format,
    split_source,
)

TRAIN_SPLIT = "train"
"""A saved DatasetDict's split that is trained on (as the trainer reads it)."""
PROGRESS_EVERY = 2000
"""Records between two progress calls."""
SHOWN_PROBLEMS = 5
NORMALISATION = ("NFKC, case folded, punctuation deleted (ASCII and Unicode), white space collapsed "
                 "(lm-eval's decontamination janitor)")

Progress = Callable[[int, int | None], None]
"""progress(records read, records in all sources when known)."""


class ContaminationError(ValueError):
    """Training data or a run folder that cannot be checked; one sentence for a person."""


# ------------------------------------------------------------------ normalisation


@lru_cache(maxsize=1)
def _deletions() -> dict[int, None]:
    """str.translate table deleting string.punctuation and every Unicode punctuation character (category P*)."""
    chars = {ord(c) for c in string.punctuation}
    chars.update(cp for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp))[0] == "P")
    return dict.fromkeys(chars)


def normalize(text: str) -> str:
    """Text as the check compares it: NFKC, case folded, punctuation deleted, words joined by one space."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().translate(_deletions()).split())


def question_words(q: Question) -> list[str]:
    """The normalised words the n-grams are taken from: the abstract (if any), the question, the options."""
    parts = [str(q.meta.get("context") or ""), q.question, *q.options.values()]
    return [w for part in parts for w in normalize(part).split()]


# ------------------------------------------------------------------ the question index


Key = tuple[int, str]
"""(the run's position in the check, the question's id)."""


class QuestionIndex:
    """The questions' exact texts and n-grams, for looking up a training text's in one pass over it."""

    def __init__(self, n: int = DEFAULT_NGRAM) -> None:
        if n < 1:
            raise ContaminationError(f"ngram: {n} is not a positive number of words")
        self.n = n
        self.exact: dict[str, list[Key]] = {}
        self.grams: dict[str, list[Key]] = {}
        self.vocab: set[str] = set()
        self.short: dict[str, dict[int, dict[str, list[Key]]]] = {}
        """first word -> length -> the whole text of a question under n words -> keys."""

    def add(self, key: Key, q: Question) -> None:
        text = normalize(q.question)
        if text:
            self.exact.setdefault(text, []).append(key)
        words = question_words(q)
        if len(words) >= self.n:
            for i in range(len(words) - self.n + 1):
                keys = self.grams.setdefault(" ".join(words[i:i + self.n]), [])
                if key not in keys:
                    keys.append(key)
            self.vocab.update(words)
        elif words:
            self.short.setdefault(words[0], {}).setdefault(len(words), {}).setdefault(" ".join(words), []).append(key)

    def find(self, norm: str) -> list[tuple[list[Key], str, str]]:
        """(keys, how, the matching text) for one normalised training text; how is "exact" or "ngram"."""
        found: list[tuple[list[Key], str, str]] = []
        if norm in self.exact:
            found.append((self.exact[norm], "exact", norm))
        words = norm.split()
        n = self.n
        if self.grams and len(words) >= n:
            flags = bytes(map(self.vocab.__contains__, words))
            start = flags.find(1)
            while start != -1:  # runs of words that all occur in the questions: only they can match
                end = flags.find(0, start)
                end = len(words) if end == -1 else end
                for i in range(start, end - n + 1):
                    gram = " ".join(words[i:i + n])
                    keys = self.grams.get(gram)
                    if keys is not None:
                        found.append((keys, "ngram", gram))
                start = flags.find(1, end) if end < len(words) else -1
        if self.short:
            for i, word in enumerate(words):
                lengths = self.short.get(word)
                if lengths is None:
                    continue
                for length, texts in lengths.items():
                    if i + length <= len(words):
                        keys = texts.get(" ".join(words[i:i + length]))
                        if keys is not None:
                            found.append((keys, "ngram", " ".join(words[i:i + length])))
        return found


# ------------------------------------------------------------------ training sources


@dataclass
class TrainingSource:
    """One --against or --meadow source: the record files (or saved-dataset folders) it stands for."""

    text: str
    paths: list[Path]
    expected: int | None = None
    """Records the source is known to hold (a Medical Meadow entry's count) when its files do not say."""
    skipped: list[str] = field(default_factory=list)


def _data_files(folder: Path) -> tuple[list[Path], list[str]]:
    """A plain folder's record files (what core.records reads), and what was left out and why."""
    files, skipped = [], []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts) or path.suffix.lower() == ".md":
            continue
        if record_format(path) is None:
            skipped.append(f"{path} (not JSON, JSON Lines, CSV or TSV)")
        else:
            files.append(path)
    return files, skipped


def _file_source(text: str) -> TrainingSource:
    path_text, _ = split_source(text)  # a column mapping names the trained fields; every text field is checked
    path = Path(path_text).expanduser()
    if not path.exists():
        raise ContaminationError(f"{text}: no such file or folder")
    if path.is_dir() and _is_saved_dataset(path):
        return TrainingSource(text, [path])
    if path.is_dir():
        files, skipped = _data_files(path)
        if not files:
            raise ContaminationError(f"{text}: a folder without JSON, JSON Lines, CSV or TSV files, and not a "
                                     "dataset saved with save_to_disk")
        return TrainingSource(text, files, skipped=skipped)
    if record_format(path) is None:
        raise ContaminationError(f"{text}: unsupported file type {path.suffix.lower() or '(no extension)'!r}; "
                                 "use .json, .jsonl, .csv, .tsv or a folder saved with datasets' save_to_disk")
    return TrainingSource(text, [path])


def _is_saved_dataset(path: Path) -> bool:
    return any((path / marker).is_file() for marker in SAVED_DATASET_MARKERS)


def _meadow_source(key: str) -> TrainingSource:
    from medalpaca_desktop.hub.meadow import MeadowCatalogError, load_meadow_catalog

    try:
        catalog = {entry.key: entry for entry in load_meadow_catalog()}
    except MeadowCatalogError as exc:
        raise ContaminationError(str(exc)) from None
    entry = catalog.get(key)
    if entry is None:
        raise ContaminationError(f"meadow: no Medical Meadow dataset {key!r} (known: {', '.join(catalog)})")
    if not entry.downloadable:
        raise ContaminationError(f"meadow: {entry.name} has no Hugging Face id to download; check your copy of it "
                                 "with --against FILE")
    files = entry.local_files()
    if not files:
        raise ContaminationError(f"meadow: {entry.name} is not downloaded (looked in {entry.folder()}); download it "
                                 f"with: medalpaca download --dataset {entry.hf_id}")
    readable = [p for p in files if record_format(p) is not None]
    skipped = [f"{p} (not JSON, JSON Lines, CSV or TSV)" for p in files if record_format(p) is None]
    if not readable:
        raise ContaminationError(f"meadow: {entry.name}'s files in {entry.folder()} are none of JSON, JSON Lines, "
                                 "CSV or TSV")
    return TrainingSource(f"meadow:{key}", readable, expected=entry.records, skipped=skipped)


def resolve_sources(against: Sequence[str] = (), meadow: Sequence[str] = ()) -> list[TrainingSource]:
    """Every source checked before a record is read: a missing file is one sentence now, not after an hour."""
    if not against and not meadow:
        raise ContaminationError("give the training data to check against: --against FILE (repeatable) or "
                                 "--meadow KEY (a downloaded Medical Meadow dataset)")
    return [_file_source(text) for text in against] + [_meadow_source(key) for key in meadow]


# ------------------------------------------------------------------ scanning


@dataclass
class Match:
    """Where a question was found first (exact before n-gram), and in how many records."""

    how: str
    source: str
    record: str
    field: str
    ngram: str
    records: int = 1


@dataclass
class ScanResult:
    matches: dict[Key, Match]
    records: int
    elapsed_s: float
    files: dict[str, list[dict[str, Any]]]
    """source text -> its files: path, sha256, bytes, records read."""
    problems: list[str]
    n_problems: int

    @property
    def records_per_s(self) -> float | None:
        return self.records / self.elapsed_s if self.elapsed_s > 0 else None


def _texts(value: Any, name: str = "") -> Iterator[tuple[str, str]]:
    """(field, text) of every text in a record; nested fields named a.b and a[0]."""
    if isinstance(value, str):
        yield name, value
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield from _texts(inner, f"{name}.{key}" if name else str(key))
    elif isinstance(value, (list, tuple)):
        for i, inner in enumerate(value):
            yield from _texts(inner, f"{name}[{i}]")


def _fingerprint(path: Path) -> tuple[str, int, int | None]:
    """sha256, bytes and (JSON Lines) the non-blank lines of a file, or of a saved dataset's files."""
    if path.is_dir():
        from bench.datasets import files_sha256

        files = sorted(p for p in path.rglob("*") if p.is_file())
        return files_sha256(files, path), sum(p.stat().st_size for p in files), None
    digest, size, lines = hashlib.sha256(), 0, 0
    try:
        with path.open("rb") as fh:
            if record_format(path) == JSON_LINES:
                for line in fh:
                    digest.update(line)
                    size += len(line)
                    lines += bool(line.strip())
                return digest.hexdigest(), size, lines
            for block in iter(lambda: fh.read(1 << 16), b""):
                digest.update(block)
                size += len(block)
    except OSError as exc:
        raise ContaminationError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return digest.hexdigest(), size, None


def scan(index: QuestionIndex, sources: Sequence[TrainingSource], progress: Progress | None = None) -> ScanResult:
    """Stream every record of every source once; the first match per question and the files read."""
    started = time.monotonic()
    files: dict[str, list[dict[str, Any]]] = {}
    expected: int | None = 0
    for source in sources:
        entries: list[dict[str, Any]] = []
        known: list[int | None] = []
        for path in source.paths:
            sha256, size, lines = _fingerprint(path)
            entries.append({"path": str(path), "sha256": sha256, "bytes": size, "records": lines})
            known.append(lines)
        files[source.text] = entries
        count = sum(k or 0 for k in known) if all(k is not None for k in known) else source.expected
        expected = None if expected is None or count is None else expected + count
    problems: list[str] = []
    n_problems = 0

    def report(problem: RecordProblem) -> None:
        nonlocal n_problems
        n_problems += 1
        if len(problems) < SHOWN_PROBLEMS:
            problems.append(str(problem))

    matches: dict[Key, Match] = {}
    records = 0
    if progress is not None:
        progress(0, expected)
    for source in sources:
        for entry, path in zip(files[source.text], source.paths):
            try:
                opened = open_records(path, report, name=str(path), split=TRAIN_SPLIT, stream=True)
                read = 0
                for where, row in opened.rows:
                    read += 1
                    _match_record(index, row, source.text, str(where), matches)
                    if progress is not None and (records + read) % PROGRESS_EVERY == 0:
                        progress(records + read, expected)
            except RecordsError as exc:
                raise ContaminationError(str(exc)) from None
            records += read
            entry["records"] = read
    if progress is not None:
        progress(records, records)
    return ScanResult(matches=matches, records=records, elapsed_s=time.monotonic() - started, files=files,
                      problems=problems, n_problems=n_problems)


def _match_record(index: QuestionIndex, row: Any, source: str, where: str, matches: dict[Key, Match]) -> None:
    """Look up every text field of one record; a question counts each record once, an exact match first."""
    found: dict[Key, tuple[str, str, str]] = {}
    for name, text in _texts(row):
        for keys, how, gram in index.find(normalize(text)):
            for key in keys:
                if key not in found or (how == "exact" and found[key][0] != "exact"):
                    found[key] = (how, name, gram)
    for key, (how, name, gram) in found.items():
        old = matches.get(key)
        if old is None:
            matches[key] = Match(how, source, where, name, gram)
        elif how == "exact" and old.how != "exact":
            matches[key] = Match(how, source, where, name, gram, old.records + 1)
        else:
            old.records += 1


# ------------------------------------------------------------------ runs


@dataclass
class _Run:
    run: results.RunResult
    questions: list[Question]
    origin: str
    note: str = ""


def _items_questions(run: results.RunResult) -> list[Question]:
    """The questions as the run's items.jsonl keeps them (text and options; no abstract)."""
    out = []
    for it in run.items:
        options = it.get("options")
        if isinstance(it.get("question"), str) and isinstance(options, dict):
            out.append(Question(id=str(it["id"]), step=str(it.get("step") or ""), question=it["question"],
                                options={str(k): str(v) for k, v in options.items()}, gold=str(it.get("gold") or "")))
    return out


def _read_run(run_dir: str | Path) -> _Run:
    """The run folder and its questions: read the way the benchmark read them, else from items.jsonl."""
    from bench.config import BenchConfig, ConfigError
    from bench.run import BadInput, load_questions

    try:
        run = results.load_run(run_dir)
    except results.RunError as exc:
        raise ContaminationError(str(exc)) from None
    try:
        questions = list(load_questions(BenchConfig.from_dict(run.config)).questions)
        return _Run(run, questions, "dataset")
    except (BadInput, ConfigError) as exc:
        reason = str(exc).splitlines()[0]
    questions = _items_questions(run)
    if not questions:
        raise ContaminationError(f"{run.run_dir}: the run's questions cannot be read ({reason}) and it has no "
                                 "scored questions in items.jsonl")
    return _Run(run, questions, "items.jsonl", f"questions read from items.jsonl: the dataset cannot be read "
                                               f"({reason})")


@dataclass
class ContaminationReport:
    """One run's result: contamination.json's content, and the accuracies with and without the overlap."""

    run_dir: str
    ngram: int
    sources: list[dict[str, Any]]
    n_questions: int
    overlapping: list[dict[str, Any]]
    questions_from: str
    records: int
    elapsed_s: float
    accuracy: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    checked_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["normalisation"] = NORMALISATION
        return data


def _overall(summary: dict[str, Any]) -> dict[str, Any]:
    overall = (summary.get("scores") or {}).get("overall") or {}
    return {"n": overall.get("n", 0), "correct": overall.get("correct", 0), "accuracy": overall.get("accuracy")}


def _clean_summary(entry: _Run, excluded: set[str]) -> dict[str, Any]:
    """summary.json's shape over the scored questions that do not overlap."""
    run = entry.run
    items = [it for it in run.items if str(it["id"]) not in excluded]
    counts = dict(run.summary.get("counts") or {})
    for q in entry.questions:
        if q.id in excluded:
            for step in ([q.step] if q.step else []) + ["all"]:
                if step in counts:
                    counts[step] = max(0, counts[step] - 1)
    n_total = int(run.summary.get("n_total") or len(entry.questions))
    record = {**run.record, "contamination": {"excluded": sorted(excluded), "report": REPORT}}
    return results.build_summary(run.config, items, n_total=max(0, n_total - len(excluded)),
                                 complete=bool(run.summary.get("complete")), record=record, counts=counts)


def _finish(position: int, entry: _Run, scanned: ScanResult, sources: Sequence[TrainingSource],
            n: int) -> ContaminationReport:
    from bench.record import now_iso

    overlapping = []
    for q in entry.questions:
        match = scanned.matches.get((position, q.id))
        if match is not None:
            overlapping.append({"id": q.id, "step": q.step, **asdict(match)})
    excluded = {o["id"] for o in overlapping}
    clean = _clean_summary(entry, excluded)
    run_dir = entry.run.run_dir
    full = entry.run.summary or results.build_summary(entry.run.config, entry.run.items,
                                                      n_total=len(entry.questions), complete=False,
                                                      record=entry.run.record)
    notes = [entry.note] if entry.note else []
    notes += [f"skipped {s}" for source in sources for s in source.skipped]
    if scanned.n_problems:
        notes.append(f"{scanned.n_problems} training records could not be read (first: {scanned.problems[0]})")
    report = ContaminationReport(
        run_dir=str(run_dir), ngram=n,
        sources=[{"source": s.text, "files": scanned.files[s.text]} for s in sources],
        n_questions=len(entry.questions), overlapping=overlapping, questions_from=entry.origin,
        records=scanned.records, elapsed_s=round(scanned.elapsed_s, 3),
        accuracy={"all": _overall(full), "clean": _overall(clean)}, notes=notes, checked_at=now_iso())
    results.write_json(run_dir / REPORT, report.to_dict())
    results.write_summary(run_dir, clean, name=SUMMARY_CLEAN)
    return report


def _check(run_dirs: Sequence[str | Path], sources: Sequence[TrainingSource], n: int,
           progress: Progress | None) -> list[ContaminationReport]:
    runs = [_read_run(d) for d in run_dirs]
    index = QuestionIndex(n)
    for position, entry in enumerate(runs):
        for q in entry.questions:
            index.add((position, q.id), q)
    scanned = scan(index, sources, progress)
    return [_finish(position, entry, scanned, sources, n) for position, entry in enumerate(runs)]


def check_run(run_dir: str | Path, sources: Sequence[TrainingSource], n: int = DEFAULT_NGRAM,
              progress: Progress | None = None) -> ContaminationReport:
    """Check one run folder against the training sources; writes contamination.json and summary_clean.json."""
    return _check([run_dir], sources, n, progress)[0]


def suite_runs(out: str | Path) -> list[Path]:
    """The run folders of a suite (bench.suite.load_plan(out).runs()) that have been started."""
    from bench.config import ConfigError
    from bench.suite import load_plan

    try:
        plan = load_plan(out)
    except ConfigError as exc:
        raise ContaminationError(str(exc)) from None
    return [Path(c.out) for c in plan.runs() if (Path(c.out) / results.CONFIG).is_file()]


def check_suite(out: str | Path, sources: Sequence[TrainingSource], n: int = DEFAULT_NGRAM,
                progress: Progress | None = None) -> list[ContaminationReport]:
    """Every started run of a suite folder, the training data streamed once for all of them."""
    run_dirs = suite_runs(out)
    if not run_dirs:
        raise ContaminationError(f"{out}: the suite has no runs yet")
    return _check(run_dirs, sources, n, progress)


def is_suite(folder: str | Path) -> bool:
    from bench.suite import SUITE_FILE

    return (Path(folder).expanduser() / SUITE_FILE).is_file()


# ------------------------------------------------------------------ for a terminal


def _percent(score: dict[str, Any]) -> str:
    return "-" if score.get("accuracy") is None or not score.get("n") else f"{100 * score['accuracy']:.1f} %"


def describe(report: ContaminationReport, show: int = 20) -> str:
    """"k of n questions overlap your training data", which ones, and the accuracy with and without them."""
    k, n = len(report.overlapping), report.n_questions
    lines = [overlap_line(k, n) + (":" if k else ".")]
    for o in report.overlapping[:show]:
        how = "exact match" if o["how"] == "exact" else f"{report.ngram}-gram"
        text = o["ngram"] if len(o["ngram"]) <= 100 else o["ngram"][:97] + "..."
        more = f"; {o['records']} records in all" if o["records"] > 1 else ""
        lines.append(f"  {o['id']}: {how} in {o['record']} ({o['field'] or 'text'}{more}): \"{text}\"")
    if k > show:
        lines.append(f"  ... and {k - show} more (all in {Path(report.run_dir) / REPORT})")
    full, clean = report.accuracy["all"], report.accuracy["clean"]
    lines.append(f"Accuracy: {_percent(full)} on the {full['n']} scored questions; {_percent(clean)} on the "
                 f"{clean['n']} that do not overlap ({SUMMARY_CLEAN})")
    lines.extend(f"Note: {note}" for note in report.notes)
    return "\n".join(lines)
