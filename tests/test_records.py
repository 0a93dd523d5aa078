"""core.records: the one reader behind benchmark questions and training data (formats, where, problems, splits)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medalpaca_desktop.core.records import (
    RecordProblem,
    RecordsError,
    Where,
    choose_split,
    first_record,
    open_records,
    read_json,
    record_format,
)

ROWS = [{"q": "one", "a": "1"}, {"q": "two", "a": "2"}, {"q": "three", "a": "3"}]


def _read(path: Path, **kw) -> tuple[list[tuple[Where, object]], list[RecordProblem]]:
    problems: list[RecordProblem] = []
    source = open_records(path, problems.append, **kw)
    return list(source.rows), problems


# ------------------------------------------------------------------ each format


def test_json_lines_rows_carry_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n", encoding="utf-8")
    source = open_records(path, lambda p: pytest.fail(f"unexpected problem {p}"))
    assert source.format == "JSON Lines" and source.columns is None
    rows = list(source.rows)
    assert [row for _, row in rows] == ROWS[:2]
    assert [(w.index, w.line, w.own_line) for w, _ in rows] == [(0, 1, True), (1, 3, True)]  # the blank line 2
    assert str(rows[1][0]) == f"{path} line 3"


def test_json_list_rows_know_where_each_object_starts(tmp_path):
    path = tmp_path / "list.json"
    path.write_text(json.dumps(ROWS, indent=2), encoding="utf-8")
    rows, problems = _read(path)
    assert not problems and [row for _, row in rows] == ROWS
    openings = [i for i, text in enumerate(path.read_text().splitlines(), 1) if text == "  {"]
    assert [w.line for w, _ in rows] == openings and not any(w.own_line for w, _ in rows)
    assert str(rows[2][0]) == f"{path} record 3"  # an object in a document is named by its position


def test_json_single_object_data_list_and_json_lines_in_a_json_file(tmp_path):
    one = tmp_path / "one.json"
    one.write_text("\n" + json.dumps(ROWS[0]), encoding="utf-8")
    rows, _ = _read(one)
    assert [(w.index, w.line, row) for w, row in rows] == [(0, 2, ROWS[0])]
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": ROWS}), encoding="utf-8")
    rows, _ = _read(wrapped)
    assert [row for _, row in rows] == ROWS and rows[1][0] == Where(str(wrapped), 1)
    lines = tmp_path / "to_json.json"  # datasets' to_json writes JSON Lines into a .json file
    lines.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    rows, _ = _read(lines)
    assert [str(w) for w, _ in rows] == [f"{lines} line {n}" for n in (1, 2, 3)]


def test_csv_rows_start_lines_span_quoted_newlines_and_drop_extra_cells(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('q,a\n"multi\nline",1\nplain,2,extra\n', encoding="utf-8")
    source = open_records(path, lambda p: None)
    assert source.format == "CSV" and source.columns == ["q", "a"]
    rows = list(source.rows)
    assert [row for _, row in rows] == [{"q": "multi\nline", "a": "1"}, {"q": "plain", "a": "2"}]
    assert [str(w) for w, _ in rows] == [f"{path} line 2", f"{path} line 4"]


def test_tsv_and_a_name_instead_of_the_path(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("q\ta\nhello\tworld\n", encoding="utf-8")
    source = open_records(path, lambda p: None, name="t.tsv?output=a")
    assert source.format == "TSV" and source.columns == ["q", "a"]
    (where, row), = list(source.rows)
    assert row == {"q": "hello", "a": "world"} and str(where) == "t.tsv?output=a line 2"


def test_a_forced_format_reads_any_suffix(tmp_path):
    path = tmp_path / "questions.txt"
    path.write_text(json.dumps(ROWS[0]) + "\n", encoding="utf-8")
    with pytest.raises(RecordsError, match=r"questions.txt: unsupported file type '.txt'"):
        open_records(path, lambda p: None)
    rows, _ = _read(path, fmt="JSON Lines")
    assert [row for _, row in rows] == [ROWS[0]]


# ------------------------------------------------------------------ problems


def test_a_malformed_line_is_reported_with_file_and_line_and_reading_goes_on(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([json.dumps(ROWS[0]), "{not json", json.dumps(ROWS[1])]) + "\n", encoding="utf-8")
    rows, problems = _read(path, name="bad.jsonl")
    assert [row for _, row in rows] == ROWS[:2]
    assert [w.index for w, _ in rows] == [0, 2]  # the bad line still takes a position
    assert len(problems) == 1 and (problems[0].file, problems[0].line) == ("bad.jsonl", 2)
    assert str(problems[0]).startswith("bad.jsonl line 2: not valid JSON (")
    assert "at column 2" in problems[0].message


@pytest.mark.parametrize("content", ["", "  \n\n"])
def test_an_empty_file_is_one_error(tmp_path, content):
    path = tmp_path / "e.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(RecordsError, match=r"e.jsonl: the file is empty"):
        open_records(path, lambda p: None)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(RecordsError, match=r"missing.csv: no such file or folder"):
        open_records(tmp_path / "missing.csv", lambda p: None)
    broken = tmp_path / "broken.json"
    broken.write_text('[{"q": "x",\n "a": }]', encoding="utf-8")
    with pytest.raises(RecordsError, match=r"broken.json: not valid JSON \(Expecting value, line 2 column 7\)"):
        open_records(broken, lambda p: None)  # raised when opened, before any row
    latin = tmp_path / "latin.csv"
    latin.write_bytes("q,a\ncaf\xe9,1\n".encode("latin-1"))
    with pytest.raises(RecordsError, match=r"latin.csv: not UTF-8 text \(byte 7\)"):
        open_records(latin, lambda p: None)
    number = tmp_path / "n.json"
    number.write_text("3", encoding="utf-8")
    with pytest.raises(RecordsError, match="expected a JSON list of records, got int"):
        open_records(number, lambda p: None)
    with pytest.raises(RecordsError, match=r"broken.json: not valid JSON"):
        read_json(broken)
    (tmp_path / "plain").mkdir()
    with pytest.raises(RecordsError, match="plain: a folder, but not a dataset saved with save_to_disk"):
        open_records(tmp_path / "plain", lambda p: None)


def test_format_and_first_record(tmp_path):
    (tmp_path / "f.ndjson").write_text(json.dumps(ROWS[1]) + "\n", encoding="utf-8")
    assert [record_format(tmp_path / n) for n in ("a.jsonl", "a.json", "a.CSV", "a.tsv", "a.pdf")] == \
        ["JSON Lines", "JSON", "CSV", "TSV", None]
    assert record_format(tmp_path) == "saved dataset"
    assert first_record(tmp_path / "f.ndjson") == ROWS[1]
    assert first_record(tmp_path / "missing.jsonl") is None
    assert first_record(tmp_path) is None  # a folder: telling its shape must not import datasets


# ------------------------------------------------------------------ saved datasets


def test_saved_dataset_rows_are_named_by_position(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    source = open_records(tmp_path / "saved", lambda p: None)
    assert source.format == "saved dataset" and source.columns == ["q", "a"]
    rows = list(source.rows)
    assert [row for _, row in rows] == ROWS
    assert rows[2][0] == Where(str(tmp_path / "saved"), 2) and str(rows[2][0]).endswith("saved record 3")


def test_saved_dataset_dict_reads_the_chosen_split_or_its_only_one(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:2]),
                          "test": datasets.Dataset.from_list(ROWS[2:])}).save_to_disk(str(tmp_path / "dd"))
    assert [row["q"] for _, row in _read(tmp_path / "dd", split="train")[0]] == ["one", "two"]
    assert [row["q"] for _, row in _read(tmp_path / "dd", split="test")[0]] == ["three"]
    datasets.DatasetDict({"validation": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "one"))
    assert len(_read(tmp_path / "one", split="test")[0]) == 3


def test_an_unknown_split_is_named_with_the_available_ones(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:2]),
                          "validation": datasets.Dataset.from_list(ROWS[2:])}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(RecordsError, match=r"dd: a dataset with splits train, validation and no 'test'"):
        open_records(tmp_path / "dd", lambda p: None, split="test")
    assert choose_split("x", ["a", "b"], "b") == "b" and choose_split("x", ["only"], "b") == "only"


def test_importing_the_reader_loads_no_heavy_library():
    code = ("import sys, medalpaca_desktop.core.records; "
            "print(sorted(m for m in ('datasets', 'pyarrow', 'numpy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ stream mode


def _both(path: Path, **kw) -> tuple[list, list]:
    whole, streamed = _read(path, **kw), _read(path, stream=True, **kw)
    return whole, streamed


@pytest.mark.parametrize("name, text", [
    ("d.jsonl", json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\r\n{not json\n" + json.dumps(ROWS[2])),
    ("list.json", "\ufeff" + json.dumps(ROWS + [7, [1, 2], "x", None, {"n": 123456789}], indent=2)),
    ("compact.json", json.dumps(ROWS)),
    ("lines.json", "\n".join(json.dumps(r) for r in ROWS) + "\n"),
    ("one.json", "\n" + json.dumps(ROWS[0], indent=1)),
    ("data.json", json.dumps({"data": ROWS})),
    ("t.csv", 'q,a\none,1\n"two\nlines",2\nthree,3,extra\n'),
    ("t.tsv", "q\ta\r\none\t1\r\n"),
])
def test_stream_mode_reads_the_same_rows_where_and_problems(tmp_path, monkeypatch, name, text):
    import medalpaca_desktop.core.records as records

    monkeypatch.setattr(records, "STREAM_CHUNK", 7)  # items cross many windows; a number ends one
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    (whole, whole_problems), (streamed, streamed_problems) = _both(path)
    assert streamed == whole and streamed_problems == whole_problems
    assert whole  # the case has rows


def test_stream_mode_says_what_is_broken_where_it_is_found(tmp_path):
    empty = tmp_path / "e.json"
    empty.write_text(" \n\n", encoding="utf-8")
    with pytest.raises(RecordsError, match=r"e.json: the file is empty"):
        open_records(empty, lambda p: None, stream=True)  # at open, as without stream
    broken = tmp_path / "broken.json"
    broken.write_text('[{"q": "x"},\n {"q": "y",\n "a": }]', encoding="utf-8")
    source = open_records(broken, lambda p: None, stream=True)
    rows = source.rows
    assert next(rows)[1] == {"q": "x"}  # the good record comes first; the broken one raises when reached
    with pytest.raises(RecordsError, match=r"broken.json: not valid JSON \(Expecting value, line 3 column 7\)"):
        next(rows)
    unended = tmp_path / "unended.json"
    unended.write_text('[{"q": "x"}', encoding="utf-8")
    with pytest.raises(RecordsError, match=r"unended.json: not valid JSON \(the list does not end"):
        list(open_records(unended, lambda p: None, stream=True).rows)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"q": "a"}\n{"q": "caf\xe9"}\n')
    with pytest.raises(RecordsError, match=r"latin.jsonl: not UTF-8 text \(byte 21, line 2\); save the file as UTF-8"):
        list(open_records(latin, lambda p: None, stream=True).rows)
