"""bench.contamination: which benchmark questions sit in the training data, and the accuracy without them.

Normalisation (case, NFKC look-alikes, punctuation), a 13-gram hit inside a long record, a near miss
of 12 shared words that must not match, the exact match of a short question, a 20,000-record stream
(time and progress) and a JSON list streamed in bounded memory, a Medical Meadow key, a whole suite
in one pass, and `medalpaca bench contamination` on a real log-likelihood run of the tiny GGUF with
its one-sentence errors.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from bench.config import BenchConfig
from bench.contamination import (
    ContaminationError,
    QuestionIndex,
    TrainingSource,
    check_run,
    check_suite,
    normalize,
    question_words,
    resolve_sources,
    scan,
)
from bench.questions import Question
from bench.run import run_job
from medalpaca_desktop.core.events import EventWriter
from medalpaca_desktop.core.jobs import ExitCode

ROOT = Path(__file__).resolve().parents[1]
MEDQA = ROOT / "resources" / "sample_questions" / "medqa_sample.jsonl"
LONG_Q = Question(id="q1", step="step1", gold="B", question=(
    "A 45-year-old man presents with crushing substernal chest pain radiating to the left arm that began two "
    "hours ago while he was shovelling snow in front of his house"),
    options={"A": "Stable angina", "B": "Acute myocardial infarction", "C": "Pericarditis", "D": "Aortic dissection"})
SHORT_Q = Question(id="q2", step="", gold="A", question="Which nerve supplies the deltoid?",
                   options={"A": "Axillary", "B": "Radial"})
FILLER = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et "
          "dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi").split()


def filler(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(FILLER) for _ in range(n))


def index_of(*questions: Question, n: int = 13) -> QuestionIndex:
    index = QuestionIndex(n)
    for q in questions:
        index.add((0, q.id), q)
    return index


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def scan_rows(tmp_path: Path, rows: list[dict], *questions: Question):
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    return scan(index_of(*questions), [TrainingSource(str(path), [path])]), path


# ------------------------------------------------------------------ normalisation


def test_normalisation_folds_case_look_alikes_punctuation_and_space():
    assert normalize("The Patient's BP") == normalize("THE PATIENT’S  bp") == "the patients bp"  # ' and ’ go
    assert normalize("Ｈｅｍｏｇｌｏｂｉｎ ９.１ g/dL") == "hemoglobin 91 gdl"  # full-width look-alikes (NFKC)
    assert normalize("ﬁbrosis of the ﬂoor") == "fibrosis of the floor"  # ligatures
    assert normalize("a\u00a0b\u2003c\n\td") == "a b c d"  # no-break and em spaces, tabs and newlines
    assert normalize("«Which» (one) — is it? [Yes]!…") == "which one is it yes"  # every punctuation mark
    assert normalize("x²+y = 10 °C") == "x2y 10 °c"  # NFKC digits; ASCII symbols go (lm-eval), ° stays
    assert normalize("  ") == ""
    assert question_words(SHORT_Q) == "which nerve supplies the deltoid axillary radial".split()


# ------------------------------------------------------------------ n-grams and exact matches


def test_a_13gram_inside_a_long_training_record_is_found_with_where_and_the_ngram(tmp_path):
    rng = random.Random(1)
    words = LONG_Q.question.split()
    inside = " ".join(words[5:18]).upper().replace(" ", "  ")  # case and spacing differ
    rows = [{"instruction": "Summarise.", "output": filler(rng, 300)} for _ in range(3)]
    rows.append({"instruction": "Summarise.", "input": "",
                 "output": f"{filler(rng, 400)}, {inside}; {filler(rng, 400)}"})
    result, path = scan_rows(tmp_path, rows, LONG_Q, SHORT_Q)
    assert set(result.matches) == {(0, "q1")}
    match = result.matches[(0, "q1")]
    assert (match.how, match.field, match.record, match.records) == ("ngram", "output", f"{path} line 4", 1)
    assert match.ngram == normalize(" ".join(words[5:18])) and len(match.ngram.split()) == 13
    assert result.records == 4 and result.files[str(path)][0]["records"] == 4
    assert result.files[str(path)][0]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_near_miss_of_12_shared_words_does_not_match(tmp_path):
    words = LONG_Q.question.split()
    rows = [{"instruction": " ".join(words[:12]) + " zebra " + " ".join(words[13:25]), "output": "x"}]
    rows += [{"instruction": "q", "output": " ".join(words[i:i + 12]) + " ipsum"} for i in (0, 6, 12)]
    result, _ = scan_rows(tmp_path, rows, LONG_Q)
    assert result.matches == {}
    rows.append({"instruction": "q", "output": " ".join(words[:13])})  # the 13th word makes it one
    result, _ = scan_rows(tmp_path, rows, LONG_Q)
    assert set(result.matches) == {(0, "q1")} and result.matches[(0, "q1")].record.endswith("line 5")


def test_the_exact_match_of_a_short_question(tmp_path):
    rows = [{"instruction": "which nerve supplies the deltoid muscle", "output": "Axillary"},  # not the question
            {"instruction": "Answer", "output": "WHICH nerve supplies the deltoid?"},  # the question itself
            {"instruction": "Quiz", "output": "Which nerve supplies the deltoid"}]
    result, path = scan_rows(tmp_path, rows, SHORT_Q, LONG_Q)
    assert set(result.matches) == {(0, "q2")}
    match = result.matches[(0, "q2")]
    assert (match.how, match.record, match.field, match.ngram) == ("exact", f"{path} line 2", "output",
                                                                    "which nerve supplies the deltoid")
    assert match.records == 2  # lines 2 and 3; "deltoid muscle" on line 1 is another text
    # under 13 words, the whole question with its options as consecutive words counts as its n-gram
    result, _ = scan_rows(tmp_path, [{"text": "Q: Which nerve supplies the deltoid? Axillary, radial. A: axillary"}],
                          SHORT_Q)
    assert result.matches[(0, "q2")].how == "ngram"
    assert result.matches[(0, "q2")].ngram == "which nerve supplies the deltoid axillary radial"
    result, _ = scan_rows(tmp_path, [{"text": "Which nerve supplies the deltoid? Radial"}], SHORT_Q)
    assert result.matches == {}  # part of a short question is not enough


# ------------------------------------------------------------------ streaming


def test_streaming_20000_records_reports_progress_and_keeps_pace(tmp_path):
    rng = random.Random(7)
    qwords = LONG_Q.question.split()
    rows = []
    for _ in range(20_000):
        mixed = [rng.choice(qwords) if rng.random() < 0.5 else rng.choice(FILLER) for _w in range(60)]
        rows.append({"instruction": "Answer the question.", "input": " ".join(mixed[:20]),
                     "output": " ".join(mixed[20:])})
    rows[7_776]["output"] += " " + LONG_Q.question  # line 7777
    rows[19_999]["input"] = SHORT_Q.question
    path = write_jsonl(tmp_path / "big.jsonl", rows)
    calls: list[tuple[int, int | None]] = []
    started = time.perf_counter()
    result = scan(index_of(LONG_Q, SHORT_Q), [TrainingSource(str(path), [path])],
                  lambda done, total: calls.append((done, total)))
    elapsed = time.perf_counter() - started
    print(f"\n20,000 records in {elapsed:.2f} s: {20_000 / elapsed:,.0f} records/s")
    assert elapsed < 60
    assert result.records == 20_000 and set(result.matches) == {(0, "q1"), (0, "q2")}
    assert result.matches[(0, "q1")].record == f"{path} line 7777"
    assert result.matches[(0, "q2")].how == "exact" and result.matches[(0, "q2")].record.endswith("line 20000")
    assert calls[0] == (0, 20_000) and calls[-1] == (20_000, 20_000)  # the total is known from the start
    assert len(calls) >= 10 and all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))


def test_a_big_json_list_is_streamed_in_bounded_memory(tmp_path, monkeypatch):
    import medalpaca_desktop.core.records as records

    monkeypatch.setattr(records, "STREAM_CHUNK", 1 << 16)
    rng = random.Random(3)
    rows = [{"instruction": "Answer.", "output": filler(rng, 80)} for _ in range(8_000)]
    rows[5_000]["output"] = LONG_Q.question
    path = tmp_path / "list.json"
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    size = path.stat().st_size
    index = index_of(LONG_Q)
    normalize("warm up the table")
    tracemalloc.start()
    try:
        result = scan(index, [TrainingSource(str(path), [path])])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.records == 8_000 and result.matches[(0, "q1")].how == "exact"
    assert result.matches[(0, "q1")].record == f"{path} record 5001"
    assert peak < size / 8, (peak, size)  # a window of the file, never the file


# ------------------------------------------------------------------ runs, the CLI


@pytest.fixture(scope="module")
def medqa_run(tiny_gguf, tmp_path_factory) -> Path:
    """A real log-likelihood run of the tiny GGUF on six sample questions (run once, copied per test)."""
    out = tmp_path_factory.mktemp("contam") / "run"
    config = BenchConfig(model=str(tiny_gguf), data=str(MEDQA), out=str(out), mode="loglikelihood",
                         prompt_style="lm-eval", limit=6)
    assert run_job(config, writer=EventWriter(None), stop=threading.Event(), record_in_store=False) == ExitCode.OK
    return out


def copy_run(medqa_run: Path, tmp_path: Path) -> tuple[Path, list[dict]]:
    run = tmp_path / "run"
    shutil.copytree(medqa_run, run)
    return run, [json.loads(line) for line in (run / "items.jsonl").read_text().splitlines()]


def medalpaca(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medalpaca_desktop", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_the_cli_on_a_real_run_reports_overlap_and_rescores_without_it(medqa_run, tmp_path):
    run, items = copy_run(medqa_run, tmp_path)
    assert len(items) == 6
    rng = random.Random(5)
    rows = [{"instruction": "Summarise.", "input": "", "output": filler(rng, 50)} for _ in range(40)]
    rows[9] = {"instruction": items[1]["question"], "input": "", "output": items[1]["gold"]}  # line 10: exact
    rows[29] = {"instruction": "Write up the case.", "input": "",
                "output": f"Case report. {items[4]['question']} The answer was given."}  # line 30: inside
    train = write_jsonl(tmp_path / "train.jsonl", rows)

    proc = medalpaca("bench", "contamination", str(run), "--against", str(train))
    assert proc.returncode == 0, proc.stderr
    assert "2 of 6 questions overlap your training data:" in proc.stdout
    assert "ETA" in proc.stderr and "Traceback" not in proc.stderr

    report = json.loads((run / "contamination.json").read_text())
    assert report["ngram"] == 13 and report["n_questions"] == 6 and report["questions_from"] == "dataset"
    assert report["sources"] == [{"source": str(train), "files": [{
        "path": str(train), "sha256": hashlib.sha256(train.read_bytes()).hexdigest(),
        "bytes": train.stat().st_size, "records": 40}]}]
    first, second = report["overlapping"]
    assert (first["id"], first["how"], first["source"], first["record"], first["field"]) == \
        (items[1]["id"], "exact", str(train), f"{train} line 10", "instruction")
    assert first["ngram"] == normalize(items[1]["question"])
    assert (second["id"], second["how"], second["record"], second["field"]) == \
        (items[4]["id"], "ngram", f"{train} line 30", "output")
    assert second["ngram"] == " ".join(normalize(items[4]["question"]).split()[:13])
    assert f"  {items[1]['id']}: exact match in {train} line 10 (instruction)" in proc.stdout
    assert f"  {items[4]['id']}: 13-gram in {train} line 30 (output)" in proc.stdout

    clean = json.loads((run / "summary_clean.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    kept = [it for i, it in enumerate(items) if i not in (1, 4)]
    correct = sum(bool(it["correct"]) for it in kept)  # the hand count
    assert clean["scores"]["overall"]["n"] == 4 == clean["n_scored"] == clean["n_total"]
    assert clean["scores"]["overall"]["correct"] == correct
    assert clean["scores"]["overall"]["accuracy"] == pytest.approx(correct / 4)
    assert clean["scores_norm"]["overall"]["n"] == 4 and set(clean) == set(summary)
    assert clean["record"]["contamination"]["excluded"] == sorted([items[1]["id"], items[4]["id"]])
    all_acc = 100 * sum(bool(it["correct"]) for it in items) / 6
    assert (f"Accuracy: {all_acc:.1f} % on the 6 scored questions; {100 * correct / 4:.1f} % on the 4 that do not "
            "overlap") in proc.stdout
    assert report["accuracy"]["clean"]["accuracy"] == pytest.approx(correct / 4)

    as_json = medalpaca("bench", "contamination", str(run), "--against", str(train), "--json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["overlapping"] == report["overlapping"]


def test_a_clean_training_set_and_a_meadow_key(medqa_run, tmp_path):
    from medalpaca_desktop.hub import dataset_folder

    run, items = copy_run(medqa_run, tmp_path)
    folder = dataset_folder("medalpaca/medical_meadow_medqa")
    folder.mkdir(parents=True)
    rows = [{"instruction": "Please answer.", "input": f"Q: {items[2]['question']} {json.dumps(items[2]['options'])}",
             "output": items[2]["gold"]}, {"instruction": "x", "input": "", "output": "y"}]
    (folder / "medqa_train.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    (folder / "README.md").write_text("# card\n", encoding="utf-8")
    calls: list[tuple[int, int | None]] = []
    report = check_run(run, resolve_sources(meadow=["medqa"]), progress=lambda d, t: calls.append((d, t)))
    assert [(o["id"], o["how"], o["source"], o["field"]) for o in report.overlapping] == \
        [(items[2]["id"], "ngram", "meadow:medqa", "input")]
    assert report.sources[0]["files"][0]["path"] == str(folder / "medqa_train.json")
    assert calls[0] == (0, 10_178) and calls[-1] == (2, 2)  # the catalog's count until the list is read
    clean = tmp_path / "clean.csv"
    clean.write_text("instruction,output\nWhat is a fever?,A raised temperature.\n", encoding="utf-8")
    report = check_run(run, resolve_sources([f"{clean}?instruction=instruction&output=output"]))
    assert report.overlapping == [] and report.accuracy["clean"] == report.accuracy["all"]
    assert json.loads((run / "summary_clean.json").read_text())["scores"] == \
        json.loads((run / "summary.json").read_text())["scores"]


def test_a_suite_is_checked_in_one_pass(tiny_gguf, tmp_path):
    from helpers.task_fixtures import MEDMCQA_ROWS, PUBMEDQA_ROWS, write_task_files

    from bench.suite import plan_suite
    from bench.suite_run import run_suite
    from medalpaca_desktop.hub import datasets_dir

    write_task_files(datasets_dir())
    out = tmp_path / "suite"
    plan = plan_suite([str(tiny_gguf)], "medmcqa,pubmedqa", out, {"mode": "loglikelihood", "prompt_style": "lm-eval"},
                      labels=["tiny"])
    assert run_suite(plan, writer=EventWriter(None), stop=threading.Event()) == ExitCode.OK
    mm, pq = MEDMCQA_ROWS[0], PUBMEDQA_ROWS[0]
    train = write_jsonl(tmp_path / "t.jsonl", [
        {"instruction": "Anatomy quiz", "output": f"{mm['question']} {mm['opa']}, {mm['opb']}, {mm['opc']}, "
                                                  f"{mm['opd']}? The axillary nerve."},
        {"instruction": "Summarise the abstract.", "input": " ".join(pq["CONTEXTS"]), "output": "Shorter stays."}])
    calls: list[tuple[int, int | None]] = []
    reports = check_suite(out, resolve_sources([str(train)]), progress=lambda d, t: calls.append((d, t)))
    assert [Path(r.run_dir).name for r in reports] == ["medmcqa", "pubmedqa"]
    assert [(o["id"], o["how"], o["record"]) for o in reports[0].overlapping] == [("mm-1", "ngram", f"{train} line 1")]
    assert [(o["id"], o["field"]) for o in reports[1].overlapping] == [("0", "input")]  # the abstract's words
    assert calls.count((2, 2)) == 1  # the training data was read once for both runs
    for report in reports:
        clean = json.loads((Path(report.run_dir) / "summary_clean.json").read_text())
        assert clean["scores"]["overall"]["n"] == report.n_questions - 1 == 2


def test_questions_come_from_items_when_the_dataset_is_gone(medqa_run, tmp_path):
    run, items = copy_run(medqa_run, tmp_path)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace(str(MEDQA), str(tmp_path / "moved.jsonl")))
    train = write_jsonl(tmp_path / "t.jsonl", [{"instruction": items[0]["question"], "output": "B"}])
    report = check_run(run, resolve_sources([str(train)]))
    assert report.questions_from == "items.jsonl" and "moved.jsonl" in report.notes[0]
    assert [o["id"] for o in report.overlapping] == [items[0]["id"]]


@pytest.mark.parametrize("args, message", [
    (["RUN", "--against", "/nowhere/train.jsonl"], "/nowhere/train.jsonl: no such file or folder"),
    (["EMPTY", "--against", "TRAIN"], "EMPTY: not a benchmark run (no config.yaml)"),
    (["/nowhere/run", "--against", "TRAIN"], "/nowhere/run: no such run folder"),
    (["RUN"], "give the training data to check against"),
    (["RUN", "--meadow", "medqa"], "meadow: MedQA is not downloaded"),
    (["RUN", "--meadow", "anki_flashcards"], "meadow: Anki flashcards has no Hugging Face id"),
    (["RUN", "--meadow", "nope"], "meadow: no Medical Meadow dataset 'nope'"),
    (["RUN", "--against", "TRAIN", "--ngram", "0"], "ngram: 0 is not a positive number of words"),
    (["RUN", "--against", "BAD"], "not valid JSON"),
])
def test_bad_input_is_one_sentence_and_exit_2(args, message, medqa_run, tmp_path, capsys):
    from bench.__main__ import main

    run, _ = copy_run(medqa_run, tmp_path)
    (tmp_path / "empty").mkdir()
    train = write_jsonl(tmp_path / "t.jsonl", [{"instruction": "a", "output": "b"}])
    bad = tmp_path / "bad.json"
    bad.write_text('[{"instruction": "a", "output": "b"},\n {"instruction": }]', encoding="utf-8")
    names = {"RUN": str(run), "EMPTY": str(tmp_path / "empty"), "TRAIN": str(train), "BAD": str(bad)}
    message = message.replace("EMPTY", names["EMPTY"])
    code = main(["contamination", *[names.get(a, a) for a in args]], prog="medalpaca bench", events=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == ExitCode.BAD_INPUT
    assert err[-1].startswith("medalpaca bench: error: ") and message in err[-1], err
    assert not any("Traceback" in line for line in err)
    assert not (run / "contamination.json").exists()


def test_resolve_sources_reads_folders_and_saved_datasets(tmp_path):
    import datasets

    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [{"instruction": "a", "output": "b"}])
    (folder / "b.parquet").write_bytes(b"PAR1")
    datasets.Dataset.from_list([{"instruction": LONG_Q.question, "output": "x"}]).save_to_disk(str(tmp_path / "saved"))
    folder_source, saved = resolve_sources([str(folder), str(tmp_path / "saved")])
    assert folder_source.paths == [folder / "a.jsonl"] and "b.parquet" in folder_source.skipped[0]
    assert saved.paths == [tmp_path / "saved"]
    result = scan(index_of(LONG_Q), [folder_source, saved])
    assert result.records == 2 and result.matches[(0, "q1")].record.endswith("saved record 1")
    with pytest.raises(ContaminationError, match="unsupported file type '.pdf'"):
        (tmp_path / "x.pdf").write_bytes(b"%PDF")
        resolve_sources([str(tmp_path / "x.pdf")])


def test_jsonl_gives_progress_a_result_and_done_and_bad_input_as_an_error_event(medqa_run, tmp_path):
    """--jsonl (the app's worker): events on stdout only, the reports written as without it."""
    from medalpaca_desktop.core.events import Done, Error, Progress, Result, parse_line

    run, items = copy_run(medqa_run, tmp_path)
    train = write_jsonl(tmp_path / "t.jsonl", [{"instruction": items[3]["question"], "output": "x"}] +
                        [{"instruction": "q", "output": "a"}] * 4999)
    proc = medalpaca("bench", "contamination", str(run), "--against", str(train), "--jsonl")
    assert proc.returncode == 0, proc.stderr
    events = [parse_line(line) for line in proc.stdout.splitlines()]
    assert events and None not in events, proc.stdout  # nothing but events on stdout
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[0].current == 0 and progress[-1].current == progress[-1].total == 5000
    assert all(p.stage == "Reading training data" and p.unit == "records" for p in progress)
    (result,) = [e for e in events if isinstance(e, Result)]
    (entry,) = result.data["runs"]
    assert result.data["kind"] == "contamination" and result.data["records"] == 5000
    assert (entry["run_dir"], entry["n_questions"], entry["overlapping"]) == (str(run), 6, 1)
    assert entry["report"] == str(run / "contamination.json") and Path(entry["summary_clean"]).is_file()
    assert isinstance(events[-1], Done) and events[-1].ok
    report = json.loads((run / "contamination.json").read_text())
    assert [o["id"] for o in report["overlapping"]] == [items[3]["id"]]
    assert entry["accuracy"] == report["accuracy"]

    bad = medalpaca("bench", "contamination", str(run), "--against", str(tmp_path / "gone.jsonl"), "--jsonl")
    assert bad.returncode == ExitCode.BAD_INPUT
    events = [parse_line(line) for line in bad.stdout.splitlines()]
    errors = [e for e in events if isinstance(e, Error)]
    gone = tmp_path / "gone.jsonl"
    assert [(e.kind, e.message) for e in errors] == [("bad_input", f"{gone}: no such file or folder")]
    assert isinstance(events[-1], Done) and not events[-1].ok and "Traceback" not in bad.stderr
