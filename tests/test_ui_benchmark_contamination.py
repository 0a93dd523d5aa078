"""The Benchmark tab's training-data check: the dialog's command, real checks through the worker, stored results.

A real log-likelihood run of the tiny GGUF on six sample questions (bench.run.run_job, recorded in the
test's app database), training data written by the test with two of those questions inside, and the
real `python -m bench contamination … --jsonl` worker started from the dialog; then what the tab reads
back: the overlap line, the list, the accuracy without the overlapping questions, the drill-down.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest
from helpers.ui_support import isolate_user_home
from PySide6.QtCore import Qt

from bench.__main__ import build_parser
from bench.config import BenchConfig
from bench.run import run_job
from medalpaca_desktop.core.events import EventWriter
from medalpaca_desktop.core.jobs import ExitCode
from medalpaca_desktop.hub import dataset_folder
from medalpaca_desktop.ui.benchmark.contamination_dialog import ContaminationDialog
from medalpaca_desktop.ui.benchmark.palette import percent
from medalpaca_desktop.ui.benchmark.summary_table import CLEAN_HEADER
from medalpaca_desktop.ui.benchmark.tab import PAGE_QUESTIONS, BenchmarkTab

ROOT = Path(__file__).resolve().parents[1]
MEDQA = ROOT / "resources" / "sample_questions" / "medqa_sample.jsonl"
CHECK_MS = 60_000


@pytest.fixture
def make_tab(qtbot, tmp_path, monkeypatch):
    isolate_user_home(tmp_path, monkeypatch)
    tabs: list[BenchmarkTab] = []

    def make() -> BenchmarkTab:
        tab = BenchmarkTab()
        qtbot.addWidget(tab)
        tab.resize(1300, 860)
        tabs.append(tab)
        return tab

    yield make
    for tab in tabs:
        tab.shutdown()


def make_run(tiny_gguf: Path, out: Path) -> tuple[Path, list[dict]]:
    """Six sample questions scored by log-likelihood, recorded in the app database as the tab's runs are."""
    config = BenchConfig(model=str(tiny_gguf), data=str(MEDQA), out=str(out), mode="loglikelihood",
                         prompt_style="lm-eval", limit=6, label="tiny")
    assert run_job(config, writer=EventWriter(None), stop=threading.Event()) == ExitCode.OK
    return out, [json.loads(line) for line in (out / "items.jsonl").read_text(encoding="utf-8").splitlines()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def training_data(tmp_path: Path, items: list[dict]) -> Path:
    """Two of the run's questions: one as a record's instruction, one inside a longer output."""
    return write_jsonl(tmp_path / "train.jsonl", [
        {"instruction": items[1]["question"], "input": "", "output": items[1]["gold"]},
        {"instruction": "What is a fever?", "input": "", "output": "A raised body temperature."},
        {"instruction": "Write up the case.", "input": "", "output": f"Case report. {items[4]['question']} Done."},
    ])


def show_run(tab: BenchmarkTab, run_dir: Path) -> int:
    row = tab.store.eval_run_by_dir(str(run_dir.resolve()))
    assert row is not None
    tab.show_run_ids([int(row["id"])])
    assert [Path(r.run_dir) for r in tab.shown] == [run_dir.resolve()]
    return int(row["id"])


def run_check(qtbot, dialog: ContaminationDialog) -> None:
    with qtbot.waitSignal(dialog.sig_checked, timeout=CHECK_MS):
        qtbot.mouseClick(dialog.check_button, Qt.MouseButton.LeftButton)
        assert dialog.stop_button.isEnabled() and not dialog.check_button.isEnabled()


def test_the_dialog_builds_the_command_from_sources_meadow_keys_and_ngram(qtbot, tmp_path, monkeypatch):
    isolate_user_home(tmp_path, monkeypatch)
    medqa = dataset_folder("medalpaca/medical_meadow_medqa")
    medqa.mkdir(parents=True)
    (medqa / "medqa_train.json").write_text('[{"instruction": "a", "output": "b"}]', encoding="utf-8")
    dataset_folder("medalpaca/medical_meadow_mediqa").mkdir(parents=True)  # an empty folder is not a download
    usmle = dataset_folder("medalpaca/medical_meadow_usmle_self_assessment")
    usmle.mkdir(parents=True)
    (usmle / "step1.json").write_text('[{"question": "q"}]', encoding="utf-8")  # a test set, not training data
    dialog = ContaminationDialog(tmp_path / "run", "tiny · log-likelihood")
    qtbot.addWidget(dialog)
    listed = [dialog.meadow_list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(dialog.meadow_list.count())]
    assert listed == ["medqa"]  # only training sets that are downloaded
    assert not dialog.check_button.isEnabled() and dialog.command_edit.text() == ""

    train, folder = tmp_path / "train.jsonl", tmp_path / "more data"
    dialog.add_sources([str(train), str(folder), str(train)])  # a source added twice is listed once
    dialog.set_meadow_checked(["medqa"])
    dialog.ngram_spin.setValue(8)
    run = str(tmp_path / "run")
    assert dialog.command() == [sys.executable, "-m", "bench", "contamination", run, "--against", str(train),
                                "--against", str(folder), "--meadow", "medqa", "--ngram", "8", "--jsonl"]
    assert dialog.command_edit.text() == (f"medalpaca bench contamination {run} --against {train} "
                                          f"--against '{folder}' --meadow medqa --ngram 8")
    assert dialog.check_button.isEnabled()
    args = build_parser().parse_args(dialog.command()[3:])  # the engine's own parser takes it as meant
    assert (args.run_dir, args.against, args.meadow, args.ngram, args.jsonl) == \
        (run, [str(train), str(folder)], ["medqa"], 8, True)

    dialog.ngram_spin.setValue(13)
    dialog.set_meadow_checked([])
    dialog.sources_list.setCurrentRow(1)
    qtbot.mouseClick(dialog.remove_button, Qt.MouseButton.LeftButton)
    assert dialog.command()[4:] == [run, "--against", str(train), "--ngram", "13", "--jsonl"]
    assert dialog.command_edit.text() == f"medalpaca bench contamination {run} --against {train}"


def test_a_real_check_shows_the_overlap_the_list_and_the_clean_accuracy(qtbot, make_tab, tiny_gguf, tmp_path):
    run_dir, items = make_run(tiny_gguf, tmp_path / "run")
    train = training_data(tmp_path, items)
    tab = make_tab()
    tab.show()
    run_id = show_run(tab, run_dir)
    panel = tab.overlap_panel
    assert panel.headline_label.text() == "Not checked against training data yet."
    assert not panel.clean_check.isEnabled() and not panel.list.isVisible() and not panel.which_button.isVisible()

    qtbot.mouseClick(panel.check_button, Qt.MouseButton.LeftButton)
    dialog = tab.contamination_dialog
    assert dialog is not None and dialog.isVisible() and Path(dialog.target) == run_dir.resolve()
    dialog.add_sources([str(train)])
    progress: list = []
    dialog.job.sig_progress_changed.connect(progress.append)
    run_check(qtbot, dialog)
    assert not dialog.isVisible()
    assert progress and progress[-1].current == progress[-1].total == 3

    # the overlap line and the list
    assert panel.headline_label.text() == "2 of 6 questions overlap your training data (train.jsonl; 13-word n-grams)."
    assert str(train) in panel.headline_label.toolTip()
    lst = panel.list
    assert not lst.isVisible() and panel.which_button.text() == "Show which (2)"  # the chart keeps its room
    qtbot.mouseClick(panel.which_button, Qt.MouseButton.LeftButton)
    assert lst.isVisible() and lst.rowCount() == 2
    assert [lst.horizontalHeaderItem(c).text() for c in range(4)] == ["ID", "How", "Source", "Record (field)"]
    rows = [[lst.item(r, c).text() for c in range(4)] for r in range(2)]
    assert rows == [[items[1]["id"], "exact match", "train.jsonl", "train.jsonl line 1 (instruction)"],
                    [items[4]["id"], "13-word n-gram", "train.jsonl", "train.jsonl line 3 (output)"]]

    # the accuracy without them, next to the full one
    table = tab.summary_table
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    assert CLEAN_HEADER not in headers
    assert panel.clean_check.isEnabled()
    panel.clean_check.setChecked(True)
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    assert headers[3:5] == ["Overall [95 % CI]", CLEAN_HEADER]
    kept = [it for i, it in enumerate(items) if i not in (1, 4)]
    correct = sum(bool(it["correct"]) for it in kept)  # the hand count
    clean = json.loads((run_dir / "summary_clean.json").read_text())["scores"]["overall"]
    assert (clean["n"], clean["correct"]) == (4, correct)
    low, high = clean["ci_low"] * 100, clean["ci_high"] * 100
    assert table.item(0, 4).text() == f"{percent(correct / 4)} [{low:.0f}–{high:.0f}]"
    assert "2 questions left out, 4 scored" in table.item(0, 4).toolTip()
    full = sum(bool(it["correct"]) for it in items)
    assert table.item(0, 3).text().startswith(percent(full / 6))

    # a click on a listed question opens it in the drill-down
    rect = lst.visualItemRect(lst.item(1, 0))
    qtbot.mouseClick(lst.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert tab.results_tabs.currentIndex() == PAGE_QUESTIONS
    view = tab.drilldown
    (selected,) = view.table.selectionModel().selectedRows()
    assert view.table_model.row_at(view.proxy.mapToSource(selected).row()).id == items[4]["id"]
    assert "In your training data" in view.detail.toPlainText() and "train.jsonl line 3" in view.detail.toPlainText()
    view.set_filter("overlap")
    assert [r.id for r in view.visible_rows()] == [items[1]["id"], items[4]["id"]]

    # opened again later: the stored result, without checking again
    again = make_tab()
    again.show_run_ids([run_id])
    assert again.overlap_panel.headline_label.text() == panel.headline_label.text()
    assert again.overlap_panel.list.rowCount() == 2 and again.contamination_dialog is None


def test_a_source_that_cannot_be_read_is_one_sentence_and_nothing_is_written(qtbot, make_tab, tiny_gguf, tmp_path):
    run_dir, _ = make_run(tiny_gguf, tmp_path / "run")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"instruction": "a", "output": "b"},\n {"instruction": }]', encoding="utf-8")
    tab = make_tab()
    show_run(tab, run_dir)
    dialog = tab.check_contamination(str(run_dir.resolve()))
    dialog.add_sources([str(bad)])
    with qtbot.waitSignal(dialog.job.sig_finished, timeout=CHECK_MS) as finished:
        assert dialog.start()
    assert finished.args[0].exit_code == ExitCode.BAD_INPUT
    assert dialog.isVisible() and dialog.error_label.isVisibleTo(dialog)
    message = dialog.error_label.text()
    assert message.startswith(str(bad)) and "not valid JSON" in message, message
    assert "\n" not in message and "Traceback" not in message
    assert dialog.status_label.text() == "The check did not finish." and dialog.check_button.isEnabled()
    assert not (run_dir / "contamination.json").exists()
    assert tab.overlap_panel.headline_label.text() == "Not checked against training data yet."


def test_stop_ends_a_long_check_and_writes_nothing(qtbot, make_tab, tiny_gguf, tmp_path):
    run_dir, _ = make_run(tiny_gguf, tmp_path / "run")
    line = json.dumps({"instruction": "Summarise the note.", "output": "lorem ipsum dolor sit amet consectetur"})
    big = tmp_path / "big.jsonl"
    big.write_text((line + "\n") * 200_000, encoding="utf-8")  # 18 MB, a few seconds to read
    tab = make_tab()
    show_run(tab, run_dir)
    dialog = tab.check_contamination(str(run_dir.resolve()))
    dialog.add_sources([str(big)])
    progress: list = []

    def stop_once_reading(event) -> None:  # Stop as soon as records are being read, seconds before the end
        progress.append(event)
        if 0 < event.current < 200_000 and not dialog.job.outcome.stop_requested:
            assert "of 200,000 records" in dialog.status_label.text()
            dialog.stop_button.click()

    dialog.job.sig_progress_changed.connect(stop_once_reading)
    with qtbot.waitSignal(dialog.job.sig_finished, timeout=CHECK_MS) as finished:
        assert dialog.start()
    assert finished.args[0].exit_code == ExitCode.STOPPED, finished.args[0]
    assert max(p.current for p in progress) < 200_000
    assert dialog.status_label.text() == "Stopped; nothing was written." and not dialog.error_label.isVisible()
    assert not (run_dir / "contamination.json").exists()


def test_the_suite_page_checks_every_run_and_shows_each_cell_without_the_overlap(qtbot, make_tab, tiny_gguf,
                                                                                 tmp_path):
    from helpers.task_fixtures import MEDMCQA_ROWS, PUBMEDQA_ROWS, write_task_files

    from bench.suite import plan_suite, suite_table
    from bench.suite_run import run_suite
    from medalpaca_desktop.hub import datasets_dir

    tab = make_tab()  # the app home and user home first: the suite's runs go in this test's database
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
    view = tab.suite_view
    with qtbot.waitSignal(view.sig_table_shown, timeout=10_000):
        view.show_suite(out)
    assert view.overlap_label.text() == "Not checked against training data yet."
    assert not view.clean_check.isEnabled()

    qtbot.mouseClick(view.check_button, Qt.MouseButton.LeftButton)
    dialog = tab.contamination_dialog
    assert dialog is not None and Path(dialog.target) == out
    dialog.add_sources([str(train)])
    with qtbot.waitSignal(view.sig_table_shown, timeout=CHECK_MS):
        run_check(qtbot, dialog)
    assert view.overlap_label.text() == ("2 of 6 questions overlap your training data (2 of 2 runs checked against "
                                         "t.jsonl; 13-word n-grams).")
    lst = view.overlap_list
    rows = [[lst.item(r, c).text() for c in range(3)] for r in range(lst.rowCount())]
    assert rows == [["tiny · MedMCQA", "mm-1", "13-word n-gram"], ["tiny · PubMedQA", "0", "13-word n-gram"]]

    assert view.clean_check.isEnabled()
    before = view.grid.item(0, 0).text()
    view.clean_check.setChecked(True)
    clean = suite_table(out, "summary_clean.json")
    for c, task in enumerate(["medmcqa", "pubmedqa"]):
        cell = clean.cells["tiny"][task]
        assert cell.n == 2
        assert view.grid.item(0, c).text().endswith(f"\nwithout: {percent(cell.accuracy)} (n = 2)")
    assert view.grid.item(0, 0).text().startswith(before)
    assert view.grid.item(0, 2).text().endswith(f"without: {percent(clean.average('tiny'))}")
    view.clean_check.setChecked(False)
    assert view.grid.item(0, 0).text() == before

    rect = lst.visualItemRect(lst.item(1, 0))  # PubMedQA's question: that run is shown and the question opened
    qtbot.mouseClick(lst.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert [Path(r.run_dir) for r in tab.shown] == [out / "tiny" / "pubmedqa"]
    assert tab.results_tabs.currentIndex() == PAGE_QUESTIONS
    (selected,) = tab.drilldown.table.selectionModel().selectedRows()
    assert tab.drilldown.table_model.row_at(tab.drilldown.proxy.mapToSource(selected).row()).id == "0"
