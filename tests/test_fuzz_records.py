"""Fuzzing the readers of training records and benchmark questions (issue 13).

core.records reads JSON / JSON Lines / CSV / TSV for both the trainer and the
benchmark (and, streamed, for the contamination check);
bench.datasets and trainer.data_sources parse its rows. Whatever a file
holds (odd quoting, BOMs, NULs, huge cells, torn lines, wrong types), the only
errors are the documented ones: RecordsError for a file that cannot be read,
record problems through `report`, DatasetError / DataError / ImageListError from
the callers. Seeds are fixed (`derandomize`) and no example database is written.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bench.datasets import DatasetError, load_dataset
from bench.image_questions import ImageListError, read_folder_file
from medalpaca_desktop.core.records import RecordProblem, RecordsError, open_records
from trainer.data_sources import DataError, read_sources

FUZZ = settings(max_examples=80, deadline=timedelta(seconds=2), derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
SUFFIXES = [".json", ".jsonl", ".ndjson", ".csv", ".tsv"]

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats() | st.text(max_size=15),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
ODD_TEXT = st.text(alphabet=st.sampled_from(list("ab,\t\"'\n\r\x00\ufeff\u2028 {}[]:é")), max_size=40)
NASTY = st.sampled_from([
    "[" * 50_000, "1" * 5000, '{"a": 1}\n{"a":', "\ufeff\ufeff[]", "\x00" * 10, '"' + "x" * 140_000,
    "a,b\n\"" + "y" * 140_000, "q\n" + "z" * 140_000, "\r\r\n\n", "{}" * 1000, "[1,2,]", "NaN",
])


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-records")


def _read_all(path: Path) -> tuple[list, list[RecordProblem]]:
    """Every row and every reported problem of a file, or ([], []) after a one-line RecordsError.

    The file is read in stream mode too (bench.contamination's): the same documented errors only.
    """
    _read_mode(path, stream=True)
    return _read_mode(path, stream=False)


def _read_mode(path: Path, stream: bool) -> tuple[list, list[RecordProblem]]:
    problems: list[RecordProblem] = []
    try:
        source = open_records(path, problems.append, stream=stream)
        rows = list(source.rows)
    except RecordsError as exc:
        assert "\n" not in str(exc)
        return [], []
    for problem in problems:
        assert "\n" not in str(problem) and problem.file == str(path)
    return rows, problems


def _write(work: Path, stem: str, suffix: str, content: str | bytes) -> Path:
    path = work / f"{stem}{suffix}"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# ------------------------------------------------------------------ core.records


@FUZZ
@given(suffix=st.sampled_from(SUFFIXES), raw=st.binary(max_size=200))
def test_random_bytes_in_every_format(work, suffix, raw):
    _read_all(_write(work, "random", suffix, raw))


@settings(FUZZ, max_examples=120)
@given(suffix=st.sampled_from(SUFFIXES), text=ODD_TEXT | NASTY, bom=st.booleans())
@example(suffix=".jsonl", text="[" * 100_000, bom=False)  # regression: RecursionError from json.loads
@example(suffix=".json", text="1" * 5000, bom=False)  # regression: ValueError (int digits limit)
@example(suffix=".csv", text='a,b\n"' + "x" * 200_000 + '",1\n', bom=False)  # regression: csv.Error
@example(suffix=".csv", text='"' + "h" * 200_000, bom=False)  # regression: csv.Error in the header row
def test_odd_text_in_every_format(work, suffix, text, bom):
    """Quotes, BOMs, NULs, CRs, line separators, cells over csv's limit, nesting beyond the recursion limit."""
    _read_all(_write(work, "odd", suffix, ("\ufeff" if bom else "") + text))


@FUZZ
@given(records=st.lists(st.dictionaries(st.text(max_size=6), JSON, max_size=4) | JSON, min_size=1, max_size=6),
       cuts=st.lists(st.integers(0, 10_000), max_size=3), suffix=st.sampled_from([".json", ".jsonl"]))
def test_json_records_torn(work, records, cuts, suffix):
    """Valid JSON / JSON Lines with lines torn at random offsets (an interrupted write)."""
    if suffix == ".jsonl":
        text = "\n".join(json.dumps(r) for r in records)
    else:
        text = json.dumps(records, indent=1)
    for cut in cuts:
        cut %= len(text) + 1
        text = text[:cut] + "\n" + text[cut + 3:]
    rows, problems = _read_all(_write(work, "torn", suffix, text))
    if not cuts and suffix == ".jsonl":
        assert json.dumps([row for _, row in rows]) == json.dumps(records) and not problems  # NaN != NaN


@FUZZ
@given(rows=st.lists(st.lists(ODD_TEXT, min_size=1, max_size=4), min_size=1, max_size=6),
       delimiter=st.sampled_from([",", "\t"]), quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL,
                                                                         csv.QUOTE_NONNUMERIC]),
       cut=st.none() | st.integers(0, 2000))
def test_tables_with_odd_cells(work, rows, delimiter, quoting, cut):
    """CSV/TSV written by the csv module (so with real quoting of odd cells), optionally cut short."""
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, quoting=quoting).writerows(rows)
    text = buffer.getvalue()
    if cut is not None:
        text = text[: cut % (len(text) + 1)]
    _read_all(_write(work, "table", ".csv" if delimiter == "," else ".tsv", text))


# ------------------------------------------------------------------ benchmark questions

QUESTION_KEYS = ["question", "options", "answer_idx", "answer", "meta_info", "id", "realidx", "sent1", "sent2",
                 "ending0", "ending1", "ending2", "label", "step", "A", "B", "C", "no"]
QUESTION = st.dictionaries(st.sampled_from(QUESTION_KEYS),
                           JSON | st.sampled_from(["A", "b", "0", "1", "{\"A\": \"x\", \"B\": \"y\"}", "[\"x\"]",
                                                   "[" * 5000, "{" + "1" * 5000]),
                           max_size=8)
MAPPING = st.none() | st.dictionaries(st.sampled_from(["question", "answer", "answer_index", "options", "id", "A",
                                                       "B", "bogus"]), st.sampled_from(["question", "A", "x", ""]),
                                      max_size=3)


def _load(path: Path, **kwargs) -> None:
    try:
        loaded = load_dataset(path, **kwargs)
    except DatasetError as exc:
        assert exc.problems and str(exc)
    else:
        for q in loaded.questions:
            assert q.gold in q.options and len(q.options) >= 2


@settings(FUZZ, max_examples=120)
@given(records=st.lists(QUESTION | JSON, max_size=5), suffix=st.sampled_from([".jsonl", ".json"]),
       kind=st.sampled_from(["auto", "medqa", "table"]), mapping=MAPPING, skip=st.booleans())
@example(records=[{"question": "q", "options": "[" * 5000}], suffix=".jsonl", kind="medqa", mapping=None,
         skip=False)  # regression: RecursionError from an 'options' cell holding JSON text
def test_question_files(work, records, suffix, kind, mapping, skip):
    if suffix == ".jsonl":
        text = "\n".join(json.dumps(r) for r in records)
    else:
        text = json.dumps(records)
    _load(_write(work, "questions", suffix, text or " "), kind=kind, mapping=mapping, skip_malformed=skip)


@FUZZ
@given(rows=st.lists(st.dictionaries(st.sampled_from(QUESTION_KEYS), ODD_TEXT, max_size=6), min_size=1, max_size=5),
       mapping=MAPPING, skip=st.booleans(), suffix=st.sampled_from([".csv", ".tsv"]))
def test_question_tables(work, rows, mapping, skip, suffix):
    columns = sorted({k for row in rows for k in row}) or ["question"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, delimiter="," if suffix == ".csv" else "\t")
    writer.writeheader()
    writer.writerows(rows)
    _load(_write(work, "questions", suffix, buffer.getvalue()), kind="auto", mapping=mapping, skip_malformed=skip)


USMLE_VALUE = JSON | st.sampled_from(["[" * 5000, "1" * 5000]).map(lambda s: s)


@FUZZ
@given(questions=st.lists(st.fixed_dictionaries({}, optional={"no": JSON, "question": JSON, "options": JSON})
                          | JSON, max_size=4),
       solutions=st.dictionaries(st.text(max_size=3), JSON, max_size=4) | JSON,
       images=st.none() | JSON | st.dictionaries(st.sampled_from(["step1", "Step 2", "3", "x"]),
                                                 st.lists(JSON | st.sampled_from(["\u00b2", "12", "9" * 5000]),
                                                          max_size=3), max_size=3),
       raw=st.none() | st.sampled_from([b"\xff", b"[" * 50_000]))
@example(questions=[], solutions={}, images={"step1": ["\u00b2"]}, raw=None)  # regression: ValueError
def test_usmle_folders(work, questions, solutions, images, raw):
    folder = work / "usmle"
    folder.mkdir(exist_ok=True)
    (folder / "step1.json").write_text(json.dumps(questions))
    (folder / "step1_solutions.json").write_text(json.dumps(solutions))
    image_file = folder / "question_with_images.json"
    image_file.unlink(missing_ok=True)
    if images is not None:
        image_file.write_text(json.dumps(images))
    if raw is not None:
        image_file.write_bytes(raw)
    if image_file.exists():
        try:
            read_folder_file(image_file)
        except ImageListError as exc:
            assert "\n" not in str(exc)
    _load(folder)


# ------------------------------------------------------------------ training records

SOURCE_QUERY = st.sampled_from(["", "?instruction=question&output=answer", "?output=", "?bogus=x", "?input=B",
                                "?instruction=a&instruction=b", "?=", "?output=A&input=%00"])
RECORD = st.dictionaries(st.sampled_from(["instruction", "input", "output", "question", "answer", "A", "B"]),
                         JSON | ODD_TEXT, max_size=4)


@settings(FUZZ, max_examples=100)
@given(records=st.lists(RECORD | JSON, max_size=5), suffix=st.sampled_from(SUFFIXES), query=SOURCE_QUERY,
       raw=st.none() | ODD_TEXT | NASTY)
def test_training_sources(work, records, suffix, query, raw):
    path = work / f"train{suffix}"
    if raw is not None:
        path.write_text(raw, encoding="utf-8")
    elif suffix in (".csv", ".tsv"):
        columns = sorted({k for r in records if isinstance(r, dict) for k in r}) or ["instruction"]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, delimiter="," if suffix == ".csv" else "\t",
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows([{k: json.dumps(v) for k, v in r.items()} for r in records if isinstance(r, dict)])
        path.write_text(buffer.getvalue(), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(records), encoding="utf-8")
    else:
        path.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    try:
        per_source = read_sources([f"{path}{query}"])
    except DataError as exc:
        assert str(exc)
    else:
        for record in per_source[0]:
            assert isinstance(record.output, str) and record.output.strip()


# ------------------------------------------------------------------ saved datasets

SAVED_FILES = ["state.json", "dataset_info.json", "data-00000-of-00001.arrow", "dataset_dict.json"]


@pytest.fixture(scope="module")
def saved_dataset(work) -> dict[str, bytes]:
    """The files of a real save_to_disk folder (two rows), kept as bytes to mutate."""
    import datasets

    folder = work / "saved-seed"
    datasets.Dataset.from_dict({"instruction": ["a", "b"], "output": ["c", "d"]}).save_to_disk(str(folder))
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@settings(FUZZ, max_examples=40)
@given(name=st.sampled_from(SAVED_FILES),
       content=JSON.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=64) | st.integers(0, 4096),
       dict_json=st.none() | JSON.map(lambda v: json.dumps(v).encode()))
@example(name="state.json", content=b"null", dict_json=None)  # found by hypothesis: TypeError from datasets
@example(name="dataset_info.json", content=b"null", dict_json=None)  # found by hypothesis: AttributeError
def test_saved_datasets_with_a_broken_file(work, saved_dataset, name, content, dict_json):
    """A save_to_disk folder with one file replaced (random JSON or bytes) or cut short (an integer)."""
    folder = work / "saved"
    folder.mkdir(exist_ok=True)
    for child in folder.iterdir():
        child.unlink()
    for file, raw in saved_dataset.items():
        (folder / file).write_bytes(raw)
    original = saved_dataset.get(name, b"")
    (folder / name).write_bytes(original[: content % (len(original) + 1)] if isinstance(content, int) else content)
    if dict_json is not None:
        (folder / "dataset_dict.json").write_bytes(dict_json)
    problems: list[RecordProblem] = []
    try:
        rows = list(open_records(folder, problems.append).rows)
    except RecordsError as exc:
        assert "\n" not in str(exc)
    else:
        assert all(isinstance(row, dict) for _, row in rows)
    _load(folder, kind="hf", skip_malformed=True)  # the same folder as benchmark questions
