"""The Benchmark tab on the medical suite: the Task choice, downloads through the real worker, a suite run.

Fixture task files (helpers/task_fixtures.py) in the test's app home; downloads run the real
`medalpaca download --dataset` worker against the local hub imitation (tests/hub_server.py);
the suite runs real `python -m bench run` workers on the tiny GGUF models through the queue.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import test_bench_run
from helpers.task_fixtures import MEDMCQA_ROWS, MMLU_ROWS, task_file_bytes, write_task_files
from helpers.ui_support import isolate_user_home
from hub_server import HubServer
from PySide6.QtCore import Qt

from bench.suite import SUITE_FILE, TABLE_CSV, compare_suite, load_plan
from bench.tasks import OFFLINE_MESSAGE, get_task, load_catalog
from medalpaca_desktop.core import paths
from medalpaca_desktop.core.jobs import RunStatus
from medalpaca_desktop.core.models import inspect_model
from medalpaca_desktop.hub import datasets_dir
from medalpaca_desktop.ui.benchmark.suite_view import EMPTY_TEXT, PARTIAL_NOTE
from medalpaca_desktop.ui.benchmark.tab import PAGE_SUITE, BenchmarkTab
from medalpaca_desktop.ui.benchmark.task_choice import OWN_TITLE

tiny_long = test_bench_run.tiny_long  # a second tiny GGUF (2048 positions): answers differ from tiny_gguf's
JOB_MS = 60_000
RUN_MS = 120_000
SIZES = {"medmcqa": len(MEDMCQA_ROWS), "mmlu_anatomy": len(MMLU_ROWS["anatomy"])}


@pytest.fixture
def tasks_home(tmp_path, monkeypatch) -> Path:
    """Every task's fixture files in the app's datasets folder, and no other app's folders scanned."""
    isolate_user_home(tmp_path, monkeypatch)
    write_task_files(datasets_dir())
    return datasets_dir()


@pytest.fixture
def make_tab(qtbot):
    tabs: list[BenchmarkTab] = []

    def make() -> BenchmarkTab:
        tab = BenchmarkTab()
        qtbot.addWidget(tab)
        tab.resize(1300, 860)
        tabs.append(tab)
        return tab

    yield make
    for tab in tabs:
        if tab.queue.job is not None:
            tab.queue.job.kill_now()  # no worker outlives its test
        tab.shutdown()


def _entries(tab: BenchmarkTab) -> dict[str, str]:
    combo = tab.setup.task_choice.combo
    return {combo.itemData(i): combo.itemText(i) for i in range(combo.count())}


def test_task_choice_lists_the_suite_with_download_marks_source_and_caveat(qtbot, tasks_home, make_tab, tiny_gguf):
    shutil.rmtree(get_task("pubmedqa").folder())
    tab = make_tab()
    tab.show()
    setup, choice = tab.setup, tab.setup.task_choice
    entries = _entries(tab)
    assert list(entries)[:4] == ["", "multimedqa", "usmle", "all"]
    assert entries[""] == OWN_TITLE and choice.selection() == ""  # today's behaviour is the default
    assert entries["multimedqa"] == "multimedqa — 9 tasks · 8 of 9 downloaded"
    assert entries["usmle"] == "USMLE self-assessment · downloaded"
    assert entries["all"] == "All medical tasks — 10 tasks · 9 of 10 downloaded"
    assert entries["medmcqa"] == "MedMCQA · downloaded"
    assert entries["pubmedqa"].endswith("· not downloaded")
    assert {t.key for t in load_catalog().tasks} - {"usmle"} <= set(entries)  # every task on its own
    assert setup.own_questions.isVisible() and not choice.details.isVisible()

    tab.set_models([inspect_model(tiny_gguf)])
    setup.check_model(tiny_gguf)
    assert choice.select("medmcqa")
    assert not setup.own_questions.isVisible() and choice.info_label.isVisible()
    info = choice.info_label.text()
    assert "openlifescienceai/medmcqa, validation split, 4,183 questions, license Apache-2.0" in info
    assert get_task("medmcqa").caveat.split(":")[0] in info and "Downloaded" in info
    assert not choice.download_button.isVisible()
    assert setup.run_button.isEnabled()
    command = setup.command_edit.toPlainText()
    assert command.startswith("medalpaca bench suite --model") and "--tasks medmcqa" in command

    assert choice.select("pubmedqa")
    assert "bigbio/pubmed_qa, test split, 500 questions, license MIT" in choice.info_label.text()
    assert "often in training data" in choice.info_label.text()  # its caveat, in plain words
    assert choice.download_button.isVisible() and choice.download_button.isEnabled()
    assert not setup.run_button.isEnabled()
    assert "Download first" in setup.run_button.toolTip() and OFFLINE_MESSAGE in setup.run_button.toolTip()
    assert not setup.request_runs() and "Download first" in setup.message_label.text()

    assert choice.select("multimedqa")
    assert "9 tasks" in choice.info_label.text() and "Not downloaded yet: PubMedQA" in choice.info_label.text()
    assert choice.download_button.text() == "Download"  # one missing

    assert choice.select("")
    assert setup.own_questions.isVisible() and setup.run_button.isEnabled()
    assert setup.command_edit.toPlainText().startswith("medalpaca bench --model")


def test_download_fetches_the_missing_tasks_one_after_the_other(qtbot, tasks_home, make_tab, tmp_path, monkeypatch):
    source = tmp_path / "hub-files"
    folders = write_task_files(source)
    pubmedqa, anatomy = get_task("pubmedqa"), get_task("mmlu_anatomy")
    shutil.rmtree(pubmedqa.folder())
    shutil.rmtree(anatomy.folder() / "anatomy")
    server = HubServer()
    server.add_dataset(pubmedqa.repo_id, task_file_bytes(folders["pubmedqa"]), refs=("refs/convert/parquet",))
    server.start()  # cais/mmlu is not served yet: its download fails with the worker's sentence
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    try:
        tab = make_tab()
        tab.show()
        choice = tab.setup.task_choice
        choice.tick_tasks(["pubmedqa", "mmlu_anatomy"])
        assert choice.selection() == "pubmedqa,mmlu_anatomy"
        assert choice.download_button.text() == "Download (2 missing)" and not tab.setup.run_button.isEnabled()
        started: list = []
        choice.downloads.sig_task_started.connect(lambda spec, i, n: started.append((spec.key, i, n)))
        progress: list = []
        choice.downloads.sig_progress_changed.connect(lambda fraction, text: progress.append((fraction, text)))
        with qtbot.waitSignal(choice.sig_downloads_finished, timeout=JOB_MS) as finished:
            qtbot.mouseClick(choice.download_button, Qt.MouseButton.LeftButton)
            assert choice.stop_button.isVisible() and not choice.download_button.isEnabled()
            assert not tab.setup.run_button.isEnabled()
        report = finished.args[0]
        assert started == [("pubmedqa", 1, 2), ("mmlu_anatomy", 2, 2)]
        assert report.done == ["pubmedqa"] and list(report.failed) == ["mmlu_anatomy"]
        assert "No dataset 'cais/mmlu' on the Hugging Face hub" in report.failed["mmlu_anatomy"]
        assert "MMLU anatomy could not be downloaded: No dataset 'cais/mmlu'" in choice.status_label.text()
        assert progress and progress[-1][0] == pytest.approx(1.0)
        assert pubmedqa.downloaded() and not anatomy.downloaded()
        assert (pubmedqa.local_files()[0].read_bytes()
                == (folders["pubmedqa"] / "pubmed_qa_labeled_fold0_source/test/0000.parquet").read_bytes())
        assert _entries(tab)["pubmedqa"].endswith("· downloaded")  # the marks refreshed
        assert _entries(tab)["mmlu_anatomy"].endswith("· not downloaded")
        assert choice.download_button.text() == "Download" and not tab.setup.run_button.isEnabled()

        server.add_dataset(anatomy.repo_id, task_file_bytes(folders["mmlu_anatomy"]), refs=("refs/convert/parquet",))
        started.clear()
        with qtbot.waitSignal(choice.sig_downloads_finished, timeout=JOB_MS) as finished:
            qtbot.mouseClick(choice.download_button, Qt.MouseButton.LeftButton)
        assert finished.args[0].ok and started == [("mmlu_anatomy", 1, 1)]  # only what was missing
        assert anatomy.downloaded() and _entries(tab)["mmlu_anatomy"].endswith("· downloaded")
        assert "Downloaded and checked: MMLU anatomy" in choice.status_label.text()
        assert not choice.download_button.isVisible()
        assert "All downloaded" in choice.info_label.text()
        assert "Download first" not in tab.setup.run_button.toolTip()
    finally:
        server.stop()


def test_stop_ends_the_batch_and_keeps_the_rest_missing(qtbot, tasks_home, make_tab, tmp_path, monkeypatch):
    source = tmp_path / "hub-files"
    folders = write_task_files(source)
    pubmedqa, anatomy = get_task("pubmedqa"), get_task("mmlu_anatomy")
    shutil.rmtree(pubmedqa.folder())
    shutil.rmtree(anatomy.folder() / "anatomy")
    server = HubServer()
    for spec in (pubmedqa, anatomy):
        server.add_dataset(spec.repo_id, task_file_bytes(folders[spec.key]), refs=("refs/convert/parquet",))
    server.stall_at = 64  # the first file hangs after 64 bytes, as on a dead line
    server.start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    try:
        tab = make_tab()
        tab.show()
        choice = tab.setup.task_choice
        choice.tick_tasks(["pubmedqa", "mmlu_anatomy"])
        with qtbot.waitSignal(choice.sig_downloads_finished, timeout=JOB_MS) as finished:
            qtbot.mouseClick(choice.download_button, Qt.MouseButton.LeftButton)
            qtbot.waitUntil(lambda: bool(server.gets("0000.parquet")), timeout=JOB_MS)
            assert choice.stop_button.isVisible()
            qtbot.mouseClick(choice.stop_button, Qt.MouseButton.LeftButton)
        report = finished.args[0]
        assert report.stopped and report.done == [] and not report.failed
        assert "Download stopped" in choice.status_label.text()
        assert not pubmedqa.downloaded() and not anatomy.downloaded()
        assert choice.download_button.isEnabled() and not choice.stop_button.isVisible()
        assert len(server.gets("0000.parquet")) == 1  # the second task was never started
    finally:
        server.stop()


def test_unreachable_hub_says_so_in_one_sentence(qtbot, tasks_home, make_tab, monkeypatch):
    shutil.rmtree(get_task("pubmedqa").folder())
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    tab = make_tab()
    choice = tab.setup.task_choice
    choice.select("multimedqa")
    with qtbot.waitSignal(choice.sig_downloads_finished, timeout=JOB_MS) as finished:
        assert choice.download()
    report = finished.args[0]
    assert report.offline and list(report.failed) == ["pubmedqa"]
    assert "Could not reach the Hugging Face hub" in choice.status_label.text()
    assert OFFLINE_MESSAGE in choice.status_label.text() and "Traceback" not in choice.status_label.text()
    assert not tab.setup.run_button.isEnabled()


def _cell_of(summary: dict) -> str:
    overall = summary["scores"]["overall"]
    return (f"{overall['accuracy'] * 100:.1f} % [{overall['ci_low'] * 100:.0f}–{overall['ci_high'] * 100:.0f}]\n"
            f"n = {overall['n']}")


def test_a_suite_runs_through_the_queue_and_the_suite_page_reads_it_back(qtbot, tasks_home, make_tab, tiny_gguf,
                                                                         tiny_long, tmp_path):
    tab = make_tab()
    view = tab.suite_view
    assert view.empty_label.text() == EMPTY_TEXT and not view.content.isVisibleTo(view)
    assert tab.results_tabs.tabText(PAGE_SUITE) == "Suite"
    models = [tiny_gguf, tiny_long.llamacpp]
    tab.set_models([inspect_model(m) for m in models])
    for model in models:
        assert tab.setup.check_model(model)
    tab.setup.task_choice.tick_tasks(["medmcqa", "mmlu_anatomy"])
    tab.setup.set_preset("lm-eval")
    assert tab.setup.run_button.isEnabled(), tab.setup.run_button.toolTip()

    finished: list = []
    tab.queue.sig_run_finished.connect(finished.append)
    qtbot.mouseClick(tab.setup.run_button, Qt.MouseButton.LeftButton)
    assert not tab.setup.message_label.isVisible(), tab.setup.message_label.text()
    plan = tab.setup.last_plan
    out = Path(plan.out)
    assert out.parent == paths.runs_dir() and out.name.startswith("suite-") and (out / SUITE_FILE).is_file()
    assert load_plan(out).tasks == ["medmcqa", "mmlu_anatomy"] and load_plan(out).settings["mode"] == "loglikelihood"
    labels = plan.labels
    assert len(tab.queue.runs) == 4
    assert tab.results_tabs.currentIndex() == PAGE_SUITE and view.out == out  # the new suite, filling in
    qtbot.waitUntil(lambda: len(finished) == 4, timeout=RUN_MS * 4)
    assert [r.state for r in finished] == [RunStatus.DONE] * 4, [r.error for r in finished]
    assert [(r.run_dir.parent.name, r.run_dir.name) for r in finished] == [
        (labels[0], "medmcqa"), (labels[0], "mmlu_anatomy"), (labels[1], "medmcqa"), (labels[1], "mmlu_anatomy")]
    assert len(tab.history.rows()) == 4  # each an ordinary run in the History

    qtbot.waitUntil(lambda: view.table is not None and sum(len(r) for r in view.table.cells.values()) == 4,
                    timeout=10_000)
    assert view.content.isVisibleTo(view) and not view.empty_label.isVisibleTo(view)
    table = view.table
    summaries = {(label, task): json.loads((out / label / task / "summary.json").read_text())
                 for label in labels for task in SIZES}
    for r, label in enumerate(labels):
        accuracies = []
        for c, task in enumerate(["medmcqa", "mmlu_anatomy"]):
            summary = summaries[(label, task)]
            assert summary["scores"]["overall"]["n"] == SIZES[task]
            assert view.grid.item(r, c).text() == _cell_of(summary)
            accuracies.append(summary["scores"]["overall"]["accuracy"])
        average = sum(accuracies) / 2
        assert table.average(label) == pytest.approx(average)
        assert view.grid.item(r, 2).text() == f"{average * 100:.1f} %"
        pooled = table.pooled(label)
        assert pooled.n == sum(SIZES.values())
        assert view.grid.item(r, 3).text().endswith(f"n = {pooled.n}")
        heights = view.chart.bar_heights(label)
        assert heights == pytest.approx({"medmcqa": accuracies[0], "mmlu_anatomy": accuracies[1], "average": average})
        low, high = view.chart.whiskers(label)["medmcqa"]
        assert (low, high) == pytest.approx((summaries[(label, "medmcqa")]["scores"]["overall"]["ci_low"],
                                             summaries[(label, "medmcqa")]["scores"]["overall"]["ci_high"]))
    assert view.grid.horizontalHeaderItem(0).text() == "MedMCQA"
    assert view.caveats() == [f"MedMCQA: {get_task('medmcqa').caveat}"]
    assert get_task("medmcqa").caveat in view.notes_label.text()
    assert (out / TABLE_CSV).read_bytes().decode() == table.to_csv()  # the table files, as `bench suite` writes them

    # exports
    csv_path = view.export(tmp_path / "suite.csv", "csv")
    assert csv_path.read_bytes().decode() == table.to_csv()
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert [(r["model"], r["task"]) for r in rows] == [(label, t) for label in labels
                                                       for t in ("medmcqa", "mmlu_anatomy", "average")]
    first = summaries[(labels[0], "medmcqa")]["scores"]["overall"]
    assert float(rows[0]["accuracy"]) == pytest.approx(first["accuracy"]) and int(rows[0]["n"]) == first["n"]
    assert float(rows[2]["accuracy"]) == pytest.approx(table.average(labels[0]))
    data = json.loads(view.export(tmp_path / "suite.json", "json").read_text())
    assert data == json.loads(json.dumps(table.to_dict()))

    # the paired comparison of the two models
    qtbot.waitUntil(lambda: view.compare.result is not None, timeout=30_000)
    shown = view.compare.result
    assert (shown["model_a"], shown["model_b"]) == (labels[0], labels[1])
    assert shown == json.loads(json.dumps(compare_suite(out, labels[0], labels[1])))
    assert view.compare.table.rowCount() == 2
    assert view.compare.table.item(0, 0).text() == "MedMCQA" and view.compare.table.item(0, 1).text() == "3"
    text = view.compare.result_label.text()
    assert "Average over 2 tasks" in text and f"Pooled McNemar on {sum(SIZES.values())} questions" in text
    view.compare.select(labels[1], labels[0])
    qtbot.waitUntil(lambda: view.compare.result is not None and view.compare.result["model_a"] == labels[1],
                    timeout=30_000)
    assert view.compare.result["average_diff"] == pytest.approx(-shown["average_diff"])

    # a partial run is marked
    path = out / labels[1] / "mmlu_anatomy" / "summary.json"
    summary = json.loads(path.read_text())
    path.write_text(json.dumps({**summary, "complete": False}))
    with qtbot.waitSignal(view.sig_table_shown, timeout=10_000):
        view.refresh()
    assert " * [" in view.grid.item(1, 1).text() and PARTIAL_NOTE in view.notes_label.text()
    path.write_text(json.dumps(summary))

    # the next start of the app shows the suite of the last finished run
    again = make_tab()
    qtbot.waitUntil(lambda: again.suite_view.table is not None, timeout=10_000)
    assert again.suite_view.out == out and again.suite_view.table.labels == labels
