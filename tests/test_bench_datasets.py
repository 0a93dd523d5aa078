"""Benchmark datasets: every format, image-question exclusion, ids, steps, malformed records with file and line."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.datasets import (
    DatasetError,
    detect_format,
    load_dataset,
    sample_questions_dir,
)
from bench.image_questions import read_folder_file, shipped_lists
from bench.questions import Question
from resources import read_text

SAMPLES = sample_questions_dir()


def _usmle_folder(root: Path, steps: dict[str, list[int]], *, images: dict | None = None) -> Path:
    """A USMLE folder with questions numbered as given (gold rotates A..D)."""
    root.mkdir(parents=True, exist_ok=True)
    for step, numbers in steps.items():
        items = [{"no": n, "question": f"{step} question {n}?",
                  "options": {"A": "alpha", "B": "beta", "C": "gamma", "D": "delta"}} for n in numbers]
        (root / f"{step}.json").write_text(json.dumps(items, indent=2))
        (root / f"{step}_solutions.json").write_text(json.dumps({str(n): "ABCD"[n % 4] for n in numbers}))
    if images is not None:
        (root / "question_with_images.json").write_text(json.dumps(images))
    return root


def _medqa_row(question="Q?", options=None, answer_idx="B", meta="step1", **extra):
    options = options or {"A": "one", "B": "two", "C": "three", "D": "four"}
    row = {"question": question, "answer": options.get(answer_idx, "x"), "options": options,
           "meta_info": meta, "answer_idx": answer_idx}
    row.update(extra)
    return row


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------ the shipped exclusion lists


def test_shipped_image_lists_match_the_paper_repository_counts_and_source():
    lists = shipped_lists()
    assert lists.counts() == {"step1": 27, "step2": 10, "step3": 13}
    assert sorted(lists.steps["step1"])[:4] == [4, 7, 9, 11] and max(lists.steps["step1"]) == 114
    assert sorted(lists.steps["step2"]) == [25, 26, 33, 53, 60, 76, 80, 87, 107, 114]
    assert sorted(lists.steps["step3"]) == [5, 21, 34, 41, 63, 66, 67, 88, 96, 102, 113, 118, 130]
    data = yaml.safe_load(read_text("usmle_image_questions.yaml"))
    assert data["source"]["repository"] == "kbressem/medAlpaca"
    assert len(data["source"]["commit"]) == 40 and data["source"]["path"].startswith("eval/")
    assert data["counts"] == lists.counts()  # the YAML's stated counts agree with its lists
    assert "kbressem/medAlpaca" in lists.source


def test_folder_without_its_own_file_uses_the_shipped_lists(tmp_path):
    folder = _usmle_folder(tmp_path / "u", {"step1": list(range(1, 120)), "step2": list(range(1, 121)),
                                            "step3": list(range(1, 136))})
    ds = load_dataset(folder)
    # Medical Meadow's set: Step 1 119, Step 2 120, Step 3 135 questions (the paper), less 27/10/13 image ones.
    assert ds.kind == "usmle"
    assert ds.counts() == {"step1": 92, "step2": 110, "step3": 122, "all": 324}
    assert ds.excluded_counts() == {"step1": 27, "step2": 10, "step3": 13}
    assert all(q.meta["excluded"] == "image" for q in ds.excluded)
    assert "step1-4" in {q.id for q in ds.excluded} and "step1-5" in {q.id for q in ds.questions}
    assert "kbressem/medAlpaca" in ds.exclusion_source


def test_folder_file_wins_over_the_shipped_lists(tmp_path):
    folder = _usmle_folder(tmp_path / "u", {"step1": [1, 2, 3, 4], "step2": [1, 2]},
                           images={"step1": [2], "step2": [1, 2]})
    ds = load_dataset(folder)
    assert [q.id for q in ds.questions] == ["step1-1", "step1-3", "step1-4"]  # 4 is in the shipped list, not here
    assert [q.id for q in ds.excluded] == ["step1-2", "step2-1", "step2-2"]
    assert ds.counts() == {"step1": 3, "all": 3}
    assert ds.exclusion_source.endswith("question_with_images.json")


@pytest.mark.parametrize("content", [
    {"Step 1": [{"no": 2}], "2": ["1"]},
    [{"step": "step1", "no": 2}, {"step": 2, "no": 1}],
])
def test_other_shapes_of_question_with_images(tmp_path, content):
    path = tmp_path / "question_with_images.json"
    path.write_text(json.dumps(content))
    lists = read_folder_file(path)
    assert lists.steps["step1"] == {2} and lists.steps["step2"] == {1} and lists.steps["step3"] == set()


def test_unreadable_question_with_images_is_a_clear_error(tmp_path):
    folder = _usmle_folder(tmp_path / "u", {"step1": [1, 2]}, images={"stepX": [1]})
    with pytest.raises(DatasetError, match="question_with_images.json.*Step keys"):
        load_dataset(folder)


# ------------------------------------------------------------------ USMLE folder


def test_usmle_question_fields_and_gold(tmp_path):
    folder = _usmle_folder(tmp_path / "u", {"step3": [1, 2]}, images={})
    ds = load_dataset(folder)
    q = ds.questions[1]
    assert (q.id, q.step, q.gold, q.gold_text, q.meta["no"]) == ("step3-2", "step3", "C", "gamma", 2)
    assert q.options == {"A": "alpha", "B": "beta", "C": "gamma", "D": "delta"}
    assert q.source.endswith("step3.json") and q.line is None
    assert Question.from_dict(json.loads(json.dumps(q.to_dict()))) == q


def test_usmle_missing_solutions_file_names_it(tmp_path):
    folder = _usmle_folder(tmp_path / "u", {"step1": [1]})
    (folder / "step1_solutions.json").unlink()
    with pytest.raises(DatasetError, match="step1_solutions.json: no such file"):
        load_dataset(folder)


def test_usmle_bad_records_are_reported_with_file_and_line(tmp_path):
    folder = _usmle_folder(tmp_path / "u", {"step1": [1, 2, 3, 5]}, images={})
    items = json.loads((folder / "step1.json").read_text())
    items[1]["options"] = {}  # record 2
    items[2]["no"] = 1  # duplicate number
    (folder / "step1.json").write_text(json.dumps(items, indent=2))
    solutions = json.loads((folder / "step1_solutions.json").read_text())
    solutions["5"] = "F"  # not an option
    (folder / "step1_solutions.json").write_text(json.dumps(solutions))
    text = (folder / "step1.json").read_text().splitlines()
    starts = [i - 1 for i, t in enumerate(text, 1) if '"no":' in t]  # each object's "{" line
    with pytest.raises(DatasetError) as info:
        load_dataset(folder)
    problems = info.value.problems
    assert [p.line for p in problems] == [starts[1], starts[2], starts[3]]
    assert all(p.file == str(folder / "step1.json") for p in problems)
    line_of = {2: starts[1], 5: starts[3]}
    assert "question 2: 'options' needs at least two options" in problems[0].message
    assert "duplicate id 'step1-1'" in problems[1].message
    assert "'F' is not among the options A-D" in problems[2].message
    message = str(info.value)
    assert f"step1.json line {line_of[2]}" in message and "--skip-malformed" in message and "3 records" in message
    ds = load_dataset(folder, skip_malformed=True)
    assert [q.id for q in ds.questions] == ["step1-1"] and len(ds.problems) == 3


def test_usmle_counts_of_the_shipped_sample_folder():
    ds = load_dataset(SAMPLES / "usmle")
    assert ds.counts() == {"step1": 24, "step2": 24, "step3": 24, "all": 72}
    assert sorted(q.id for q in ds.excluded) == ["step1-19", "step1-7", "step2-12", "step3-20"]
    assert ds.exclusion_source.endswith("question_with_images.json")


def test_a_single_step_file_reads_that_step_only():
    ds = load_dataset(SAMPLES / "usmle" / "step2.json")
    assert ds.kind == "usmle" and ds.counts() == {"step2": 24, "all": 24}


# ------------------------------------------------------------------ MedQA


def test_medqa_jsonl_4_and_5_options_steps_ids_lines(tmp_path):
    five = {"A": "a", "B": "b", "C": "c", "D": "d", "E": "e"}
    path = _write_jsonl(tmp_path / "medqa.jsonl", [
        _medqa_row(),
        "",
        _medqa_row("Five?", five, "E", "step2&3"),
        _medqa_row("Own id?", answer_idx="A", realidx="q-77"),
    ])
    assert detect_format(path) == "medqa"
    ds = load_dataset(path)
    assert [(q.id, q.step, q.gold, q.line) for q in ds.questions] == [
        ("0", "step1", "B", 1), ("1", "step2&3", "E", 3), ("q-77", "step1", "A", 4)]
    assert len(ds.questions[1].options) == 5
    assert ds.counts() == {"step1": 2, "step2&3": 1, "all": 3}
    assert ds.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_medqa_lm_eval_variant_reads_label_as_0_based_index(tmp_path):
    path = _write_jsonl(tmp_path / "hf.jsonl", [
        {"id": 5, "sent1": "Stem one?", "sent2": "", "ending0": "w", "ending1": "x", "ending2": "y", "ending3": "z",
         "label": 2},
        {"sent1": "Stem two?", "sent2": "", "ending0": "w", "ending1": "x", "ending2": "y", "ending3": "z",
         "label": 4},
    ])
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    assert str(info.value.problems[0]) == f"{path} line 2: 'label' 4 is out of range (0-3 for 4 options)"
    ds = load_dataset(path, skip_malformed=True)
    q = ds.questions[0]
    assert (q.id, q.question, q.gold, q.options["C"], q.step) == ("5", "Stem one?", "C", "y", "")
    assert ds.counts() == {"all": 1}


def test_shipped_medqa_samples_agree_across_formats():
    medqa = load_dataset(SAMPLES / "medqa_sample.jsonl")
    lm = load_dataset(SAMPLES / "medqa_sample_lmeval.jsonl")
    table = load_dataset(SAMPLES / "sample_questions.csv")
    usmle = load_dataset(SAMPLES / "usmle")
    assert medqa.counts() == {"step1": 24, "step2&3": 48, "all": 72}
    for group in (lm.questions, table.questions, usmle.questions):
        assert [(q.question, q.options, q.gold) for q in group] == \
               [(q.question, q.options, q.gold) for q in medqa.questions]
    assert [q.id for q in table.questions] == [q.id for q in usmle.questions]
    golds = [q.gold for q in medqa.questions]
    assert min(golds.count(letter) for letter in "ABCD") >= 15  # no letter bias to exploit
    readme = (SAMPLES / "README.md").read_text()
    assert "written for" in readme and "not" in readme and "exam content" in readme


@pytest.mark.parametrize("line, message", [
    ('{"question": "Q?", "options": {"A": "x"', "not valid JSON"),
    (json.dumps({"question": "Q?", "answer_idx": "A", "meta_info": "step1"}), "'options' is missing"),
    (json.dumps(_medqa_row(answer_idx="E")), "'answer_idx' 'E' is not among the options A-D"),
    (json.dumps(_medqa_row(question="  ")), "'question' is empty"),
    (json.dumps(_medqa_row(options={"A": "one", "B": ""}, answer_idx="A")), "at least two options with text"),
    (json.dumps({**_medqa_row(), "answer": "four"}), "disagrees with 'answer'"),
])
def test_medqa_malformed_record_names_file_and_line(tmp_path, line, message):
    path = _write_jsonl(tmp_path / "bad.jsonl", [_medqa_row(), _medqa_row(), line])
    with pytest.raises(DatasetError) as info:
        load_dataset(path, kind="medqa")
    assert len(info.value.problems) == 1
    problem = info.value.problems[0]
    assert (problem.file, problem.line) == (str(path), 3) and message in problem.message
    assert "bad.jsonl line 3: " in str(info.value)
    ds = load_dataset(path, kind="medqa", skip_malformed=True)
    assert len(ds.questions) == 2 and ds.problems == [problem]


def test_duplicate_ids_are_malformed(tmp_path):
    path = _write_jsonl(tmp_path / "dup.jsonl", [_medqa_row(id="x1"), _medqa_row(id="x2"), _medqa_row(id="x1")])
    with pytest.raises(DatasetError, match=r"dup.jsonl line 3: duplicate id 'x1' \(first at line 1\)"):
        load_dataset(path)


def test_many_problems_are_summarised(tmp_path):
    path = _write_jsonl(tmp_path / "bad.jsonl", [_medqa_row()] + [_medqa_row(answer_idx="Z")] * 8)
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    text = str(info.value)
    assert text.startswith("8 malformed records:") and "... and 3 more" in text and "skip 8 records" in text


def test_limit_keeps_the_first_questions_after_exclusion():
    ds = load_dataset(SAMPLES / "usmle", limit=8)
    assert [q.id for q in ds.questions] == [f"step1-{n}" for n in (1, 2, 3, 4, 5, 6, 8, 9)]


# ------------------------------------------------------------------ tables


def test_csv_with_a_column_mapping(tmp_path):
    path = tmp_path / "exam.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["qid", "stem", "opa", "opb", "opc", "key", "part"])
        writer.writerow(["a1", "First?", "x", "y", "z", "c", "Step 1"])
        writer.writerow(["a2", "Multi-line\nstem?", "x", "y", "", "y", ""])  # 2 options, gold by text
        writer.writerow(["a3", "Third?", "x", "y", "z", "D", "s"])
    mapping = {"id": "qid", "question": "stem", "A": "opa", "B": "opb", "C": "opc", "answer": "key", "step": "part"}
    with pytest.raises(DatasetError) as info:
        load_dataset(path, mapping=mapping)
    assert str(info.value.problems[0]) == f"{path} line 5: 'key' (the answer) 'D' is not among the options A-C"
    ds = load_dataset(path, mapping=mapping, skip_malformed=True)
    assert [(q.id, q.gold, q.line, q.step) for q in ds.questions] == [("a1", "C", 2, "step1"), ("a2", "B", 3, "")]
    assert ds.questions[1].options == {"A": "x", "B": "y"} and ds.questions[1].question == "Multi-line\nstem?"


def test_csv_with_an_options_column_and_a_0_based_index(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("question\toptions\tlabel\nWhich?\t[\"p\", \"q\", \"r\"]\t1\n")
    ds = load_dataset(path, mapping={"answer_index": "label"})
    q = ds.questions[0]
    assert (q.id, q.gold, q.options) == ("0", "B", {"A": "p", "B": "q", "C": "r"})


def test_csv_missing_column_is_a_file_error(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("stem,A,B,answer\nQ?,x,y,A\n")
    with pytest.raises(DatasetError, match=r"no column 'question' \(columns: stem, A, B, answer\)"):
        load_dataset(path)
    assert load_dataset(path, mapping={"question": "stem"}).questions[0].gold == "A"


def test_unknown_mapping_field_is_rejected(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("question,A,B,answer\nQ?,x,y,A\n")
    with pytest.raises(DatasetError, match="unknown field 'stem'"):
        load_dataset(path, mapping={"stem": "question"})


def test_jsonl_table_with_mapping(tmp_path):
    path = _write_jsonl(tmp_path / "t.jsonl", [{"q": "One?", "choices": ["a", "b", "c", "d"], "gold": "d"}])
    assert detect_format(path) == "table"
    ds = load_dataset(path, mapping={"question": "q", "options": "choices", "answer": "gold"})
    assert ds.kind == "table" and ds.questions[0].gold == "D" and ds.questions[0].line == 1


# ------------------------------------------------------------------ saved HF datasets


def test_hf_dataset_saved_to_disk(tmp_path):
    import datasets

    five = {"A": "a", "B": "b", "C": "c", "D": "d", "E": "e"}
    rows = [_medqa_row("First?"), _medqa_row("Second?", answer_idx="D", meta="step2&3"),
            _medqa_row("Five?", five, "E")]  # Arrow stores the 4-option rows' options with E = None
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    assert detect_format(tmp_path / "saved") == "hf"
    ds = load_dataset(tmp_path / "saved")
    assert [(q.id, q.step, q.gold, q.line) for q in ds.questions] == [("0", "step1", "B", None),
                                                                      ("1", "step2&3", "D", None),
                                                                      ("2", "step1", "E", None)]
    assert [len(q.options) for q in ds.questions] == [4, 4, 5]
    assert len(ds.sha256) == 64

    lm = [{"sent1": "S?", "sent2": "", "ending0": "a", "ending1": "b", "ending2": "c", "ending3": "d", "label": 9}]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(lm)}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DatasetError, match=r"dd: record 1: 'label' 9 is out of range"):
        load_dataset(tmp_path / "dd")


def test_hf_dataset_dict_scores_its_test_split(tmp_path):
    import datasets

    splits = {"train": datasets.Dataset.from_list([_medqa_row("Train?")]),
              "test": datasets.Dataset.from_list([_medqa_row("Test?"), _medqa_row("Test 2?")])}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "dd"))
    assert [q.question for q in load_dataset(tmp_path / "dd").questions] == ["Test?", "Test 2?"]
    del splits["test"]
    splits["validation"] = datasets.Dataset.from_list([_medqa_row("Val?")])
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "tv"))
    with pytest.raises(DatasetError, match=r"tv: a dataset with splits train, validation and no 'test'"):
        load_dataset(tmp_path / "tv")


def test_hf_dataset_as_a_table_with_mapping(tmp_path):
    import datasets

    datasets.Dataset.from_list([{"stem": "Q?", "opa": "x", "opb": "y", "cop": 1}]).save_to_disk(str(tmp_path / "s"))
    ds = load_dataset(tmp_path / "s", mapping={"question": "stem", "A": "opa", "B": "opb", "answer_index": "cop"})
    assert ds.questions[0].gold == "B" and ds.kind == "hf"


# ------------------------------------------------------------------ detection and file errors


def test_detect_format_and_file_errors(tmp_path):
    assert detect_format(SAMPLES / "usmle") == "usmle"
    assert detect_format(SAMPLES / "sample_questions.csv") == "table"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="neither a USMLE self-assessment folder"):
        detect_format(tmp_path / "empty")
    with pytest.raises(DatasetError, match="no such file or folder"):
        load_dataset(tmp_path / "missing.jsonl")
    (tmp_path / "x.pdf").write_text("x")
    with pytest.raises(DatasetError, match="unsupported file type '.pdf'"):
        load_dataset(tmp_path / "x.pdf")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(DatasetError, match="the file is empty"):
        load_dataset(tmp_path / "e.jsonl")
    (tmp_path / "broken.json").write_text('[{"question": "x",\n "options": }]')
    with pytest.raises(DatasetError, match=r"broken.json: not valid JSON \(Expecting value, line 2 column 13\)"):
        load_dataset(tmp_path / "broken.json", kind="medqa")
    with pytest.raises(DatasetError, match="unknown dataset kind"):
        load_dataset(SAMPLES / "usmle", kind="pdf")


def test_json_list_problems_carry_the_record_line(tmp_path):
    rows = [_medqa_row(), _medqa_row(answer_idx="Q")]
    path = tmp_path / "list.json"
    path.write_text(json.dumps(rows, indent=2))
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    openings = [i for i, text in enumerate(path.read_text().splitlines(), 1) if text == "  {"]
    assert len(openings) == 2 and info.value.problems[0].line == openings[1]  # the second object's first line
    assert "neither an option letter (A-D) nor an option's text" in info.value.problems[0].message


def test_modules_are_light():
    """The GUI imports these: no torch/datasets/transformers/numpy at import time."""
    code = ("import sys, bench.datasets, bench.answers, bench.stats, bench.reference, bench.image_questions; "
            "print(sorted(m for m in ('torch', 'datasets', 'transformers', 'numpy', 'pyarrow', 'llama_cpp') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
