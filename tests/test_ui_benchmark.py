"""Benchmark tab end to end: real `python -m bench` workers on the tiny models and the sample questions."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication

from bench.datasets import sample_questions_dir
from medalpaca_desktop.core import paths
from medalpaca_desktop.core.events import read_events_file
from medalpaca_desktop.core.jobs import RunStatus
from medalpaca_desktop.core.models import inspect_model
from medalpaca_desktop.core.store import Store
from medalpaca_desktop.ui.benchmark.tab import PAGE_QUESTIONS, BenchmarkTab

RUN_MS = 120_000
USMLE = sample_questions_dir() / "usmle"
MEDQA = sample_questions_dir() / "medqa_sample.jsonl"


@pytest.fixture
def make_tab(qtbot):
    tabs: list[BenchmarkTab] = []

    def make() -> BenchmarkTab:
        tab = BenchmarkTab()
        qtbot.addWidget(tab)
        tab.resize(1300, 820)
        tabs.append(tab)
        return tab

    yield make
    for tab in tabs:
        if tab.queue.job is not None:
            tab.queue.job.kill_now()  # no worker outlives its test
        tab.shutdown()


def _configure(qtbot, tab: BenchmarkTab, models: list[Path], data: Path, *, preset: str, limit: int) -> None:
    tab.set_models([inspect_model(m) for m in models])
    for model in models:
        assert tab.setup.check_model(model)
    with qtbot.waitSignal(tab.setup.sig_dataset_checked, timeout=10_000) as checked:
        tab.setup.set_dataset(data)
    assert checked.args[0].ok, checked.args[0].describe()
    tab.setup.set_preset(preset)
    tab.setup.limit_spin.setValue(limit)


def _run_batch(qtbot, tab: BenchmarkTab, count: int) -> list:
    finished: list = []
    tab.queue.sig_run_finished.connect(finished.append)
    qtbot.mouseClick(tab.setup.run_button, Qt.MouseButton.LeftButton)
    assert not tab.setup.message_label.isVisible(), tab.setup.message_label.text()
    qtbot.waitUntil(lambda: len(finished) == count, timeout=RUN_MS * count)
    return finished


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))


def _items(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "items.jsonl").read_text(encoding="utf-8").splitlines()]


def _assert_chart_matches(tab: BenchmarkTab, name: str, summary: dict) -> None:
    heights = tab.chart.bar_heights(name)
    whiskers = tab.chart.whiskers(name)
    assert set(heights) == set(summary["scores"])
    for step, score in summary["scores"].items():
        assert heights[step] == pytest.approx(score["accuracy"])
        assert whiskers[step] == pytest.approx((score["ci_low"], score["ci_high"]))


def test_generate_run_on_tiny_gguf_chart_drilldown_exports(qtbot, make_tab, tiny_gguf, tmp_path):
    tab = make_tab()
    _configure(qtbot, tab, [tiny_gguf], USMLE, preset="medalpaca-paper", limit=6)
    command = tab.setup.command_edit.toPlainText()
    assert command.startswith("medalpaca bench --model") and "--limit 6" in command and "--mode generate" in command
    assert tab.setup.dataset_label.text().startswith("USMLE self-assessment folder")
    qtbot.mouseClick(tab.setup.copy_button, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == command

    progress: list = []
    tab.queue.sig_run_progressed.connect(lambda run: progress.append(run.progress))
    texts: list[str] = []
    tab.queue.sig_run_progressed.connect(lambda run: texts.append(tab.queue_view.detail_label.text()))
    (run,) = _run_batch(qtbot, tab, 1)
    assert run.state == RunStatus.DONE, run.error
    evals = [p for p in progress if p.stage == "eval"]
    assert evals and evals[-1].current == evals[-1].total == 6
    assert any("acc" in t for t in texts)

    summary = _summary(run.run_dir)
    assert summary["complete"] and summary["n_total"] == 6
    qtbot.waitUntil(lambda: len(tab.shown) == 1 and tab.shown[0].complete, timeout=5000)
    name = tab.names[0]
    _assert_chart_matches(tab, name, summary)
    assert tab.chart.shown_reference(), "the paper's bars are on by default"
    tab.chart.reference_check.setChecked(False)
    assert set(tab.chart.bar_items) == {name}
    tab.chart.reference_check.setChecked(True)
    assert "MedAlpaca 7b" in tab.chart.bar_items

    # drill-down: every question, the filters, one question in full
    items = _items(run.run_dir)
    view = tab.drilldown
    assert view.proxy.rowCount() == 6
    view.set_filter("wrong")
    assert view.proxy.rowCount() == sum(1 for it in items if not it["correct"])
    view.set_filter("unparseable")
    assert view.proxy.rowCount() == sum(1 for it in items if it["pred"] is None) == len(summary["unparseable"])
    view.set_filter("all")
    tab.open_question(items[0]["id"])
    assert tab.results_tabs.currentIndex() == PAGE_QUESTIONS
    detail = view.detail.toPlainText()
    assert "Answer the multiple choice question correctly and truthfully." in detail
    assert items[0]["question"][:40] in detail

    # exports: what the filter shows
    view.set_filter("wrong")
    wrong = [it for it in items if not it["correct"]]
    csv_path = view.export(tmp_path / "q.csv", "csv")
    json_path = view.export(tmp_path / "q.json", "json")
    with csv_path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == [it["id"] for it in wrong]
    assert all(r[f"{name} correct"] == "no" for r in rows)
    records = json.loads(json_path.read_text(encoding="utf-8"))
    assert [r["id"] for r in records] == [it["id"] for it in wrong]
    for record, item in zip(records, wrong):
        answer = record["runs"][name]
        assert answer["output"] == item["output"] and answer["pred"] == item["pred"]
        assert record["gold"] == item["gold"] and record["options"] == item["options"]

    # chart files
    png = tab.chart.export_png(tmp_path / "chart.png")
    svg = tab.chart.export_svg(tmp_path / "chart.svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = svg.read_text(encoding="utf-8")
    assert text.lstrip().startswith("<?xml") and "<svg" in text and "Step 1" in text

    # reproducibility record
    record_text = tab.repro.text.toPlainText()
    assert summary["record"]["dataset_sha256"] in record_text
    assert "mode: generate" in record_text
    qtbot.mouseClick(tab.repro.copy_button, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == record_text


def test_two_models_loglikelihood_compare(qtbot, make_tab, tiny_gguf, tiny_llama_dir):
    tab = make_tab()
    _configure(qtbot, tab, [tiny_gguf, tiny_llama_dir], MEDQA, preset="lm-eval", limit=8)
    assert len(tab.setup.command_edit.toPlainText().splitlines()) == 2
    runs = _run_batch(qtbot, tab, 2)
    assert [r.state for r in runs] == [RunStatus.DONE, RunStatus.DONE], [r.error for r in runs]
    qtbot.waitUntil(lambda: len(tab.shown) == 2, timeout=5000)
    for run_result, name in zip(tab.shown, tab.names):
        _assert_chart_matches(tab, name, _summary(Path(run_result.run_dir)))
    assert tab.chart.chance == pytest.approx(0.25)

    # compare: numbers from the files, McNemar by hand (exact binomial: b + c < 25)
    by_dir = {str(Path(r.run_dir)): r for r in tab.shown}
    first, second = (by_dir[str(r.run_dir.resolve())] for r in runs)
    names = {id(r): n for r, n in zip(tab.shown, tab.names)}
    tab.compare.select(tab.shown.index(first), tab.shown.index(second))
    qtbot.waitUntil(lambda: tab.compare.comparison is not None, timeout=10_000)
    result = tab.compare.comparison
    items_a = {it["id"]: it for it in _items(Path(first.run_dir))}
    items_b = {it["id"]: it for it in _items(Path(second.run_dir))}
    assert result.n_shared == 8
    acc_a = sum(it["correct"] for it in items_a.values()) / 8
    acc_b = sum(it["correct"] for it in items_b.values()) / 8
    assert result.diff == pytest.approx(acc_a - acc_b)
    b = sum(1 for k in items_a if items_a[k]["correct"] and not items_b[k]["correct"])
    c = sum(1 for k in items_a if items_b[k]["correct"] and not items_a[k]["correct"])
    n = b + c
    p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n)
    assert (result.b, result.c) == (b, c)
    assert result.p_value == pytest.approx(p)
    assert result.diff_ci[0] <= result.diff <= result.diff_ci[1]
    assert tab.compare.table.rowCount() == n
    assert "McNemar p" in tab.compare.result_label.text()
    assert names[id(first)] in tab.compare.a_combo.currentText()

    # disagreement filter in the drill-down: different letters between the two runs
    tab.drilldown.set_filter("disagree")
    expected = sum(1 for k in items_a if items_a[k]["pred"] != items_b[k]["pred"])
    assert tab.drilldown.proxy.rowCount() == expected
    for item in items_a.values():
        assert item["scores"] and set(item["scores"]) == set(item["options"])


def test_rescore_history_reopen_and_delete(qtbot, make_tab, tiny_gguf):
    tab = make_tab()
    _configure(qtbot, tab, [tiny_gguf], MEDQA, preset="medalpaca-paper", limit=5)
    (run,) = _run_batch(qtbot, tab, 1)
    assert run.state == RunStatus.DONE, run.error
    qtbot.waitUntil(lambda: len(tab.shown) == 1 and tab.shown[0].complete, timeout=5000)
    before = _summary(run.run_dir)
    assert before["rule"] == "paper"

    bar = tab.rescore_bar
    assert bar.run_combo.count() == 1 and bar.rule_combo.currentData() == "lenient"
    with qtbot.waitSignal(bar.sig_rescored, timeout=60_000):
        assert bar.rescore()
    after = _summary(run.run_dir)
    assert after["rule"] == "lenient"
    assert after["scores_by_rule"]["paper"] == before["scores_by_rule"]["paper"]
    qtbot.waitUntil(lambda: tab.shown and tab.shown[0].rule == "lenient", timeout=5000)
    _assert_chart_matches(tab, tab.names[0], after)
    unparseable_cell = tab.summary_table.item(0, tab.summary_table.columnCount() - 2).text()
    assert unparseable_cell == f"{len(after['unparseable'])} of 5"

    # a fresh tab (the app restarted) lists the run and reopens it with its chart
    tab.shutdown()
    again = make_tab()
    rows = again.history.rows()
    assert len(rows) == 1 and rows[0]["display_status"] == "done"
    again.show_run_ids([rows[0]["id"]])
    assert len(again.shown) == 1
    _assert_chart_matches(again, again.names[0], after)
    with Store() as store:
        assert store.eval_runs()[0]["accuracy"] == pytest.approx(after["scores"]["overall"]["accuracy"])

    # delete: gone from the database, the history and the disk
    again.history.delete_run(rows[0]["id"])
    assert again.history.rows() == [] and again.shown == []
    assert not run.run_dir.exists()
    with Store() as store:
        assert store.eval_runs() == []


def test_without_a_database_the_runs_of_this_session_are_in_the_history(qtbot, make_tab, tiny_gguf):
    """The database cannot be opened: the tab says so once; a benchmark still runs, is listed and shown."""
    broken = paths.database_path()
    broken.write_bytes(b"this is not an SQLite database" * 100)
    tab = make_tab()
    assert "cannot be opened" in tab.store_error and not tab.store.persistent
    assert tab.store_label is not None and tab.store_label.isVisibleTo(tab)
    notice = tab.store_label.text()
    assert "Past runs are not listed:" in notice and str(broken) in notice and "this session only" in notice
    assert not tab.history.empty_label.isHidden() and "this session only" in tab.history.empty_label.text()

    _configure(qtbot, tab, [tiny_gguf], MEDQA, preset="lm-eval", limit=3)
    listed_at_start: list = []
    tab.queue.sig_run_started.connect(lambda _run: listed_at_start.append(
        [row["display_status"] for row in tab.history.rows()]))
    (run,) = _run_batch(qtbot, tab, 1)
    assert run.state == RunStatus.DONE, run.error
    assert listed_at_start == [["running"]]  # in the History from the moment it starts
    summary = _summary(run.run_dir)
    (row,) = tab.history.rows()
    assert row["display_status"] == "done" and row["run_dir"] == str(run.run_dir.resolve())
    assert row["accuracy"] == pytest.approx(summary["scores"]["overall"]["accuracy"]) and row["n_items"] == 3
    assert tab.history.empty_label.isHidden()
    qtbot.waitUntil(lambda: len(tab.shown) == 1 and tab.shown[0].complete, timeout=5000)
    _assert_chart_matches(tab, tab.names[0], summary)
    warnings = [e for e in read_events_file(run.run_dir / "events.jsonl")
                if e.type == "warning" and "app database" in e.message]
    assert len(warnings) == 1  # the worker could not record itself either, said so once and scored on
    assert broken.read_bytes().startswith(b"this is not an SQLite database")  # left for the user to move


def test_stop_then_kill_then_resume_scores_every_question_once(qtbot, make_tab, demo_gguf):
    """The demo model (a real 135M model, ~1 s a question) so Stop and the kill land mid-run."""
    tab = make_tab()
    _configure(qtbot, tab, [demo_gguf], USMLE, preset="medalpaca-paper", limit=5)
    scored: list = []
    action = {"at": 1, "do": "stop"}

    def on_item(_run, item) -> None:  # act the moment the worker has scored a question
        scored.append(item)
        if len(scored) == action["at"]:
            if action["do"] == "stop":
                qtbot.mouseClick(tab.queue_view.stop_button, Qt.MouseButton.LeftButton)
            else:
                os.kill(tab.queue.job.pid(), signal.SIGKILL)

    tab.queue.sig_item_scored.connect(on_item)
    finished: list = []
    tab.queue.sig_run_finished.connect(finished.append)
    assert tab.setup.request_runs()
    qtbot.waitUntil(lambda: len(finished) == 1, timeout=RUN_MS)
    run = finished[0]
    assert run.state == RunStatus.STOPPED, run.error
    summary = _summary(run.run_dir)
    assert not summary["complete"] and 1 <= summary["n_scored"] < 5
    tab.history.list.setCurrentRow(0)
    assert tab.history.rows()[0]["display_status"] == "stopped"
    assert "stopped, resumable" in tab.history.list.item(0).text()
    assert tab.history.resume_button.isEnabled()

    action.update(at=len(scored) + 1, do="kill")
    qtbot.mouseClick(tab.history.resume_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(finished) == 2, timeout=RUN_MS)
    assert finished[1].state == RunStatus.CRASHED
    assert "crashed (resumable)" in tab.queue_view.list.item(1).text()
    row = tab.history.rows()[0]
    assert row["display_status"] == "crashed" and row["status"] == "crashed"  # stored, not an error prefix
    assert "killed by a signal" in row["error"] and not row["error"].startswith("crashed")
    assert "crashed" in tab.history.list.item(0).text()
    tab.history.list.setCurrentRow(0)
    assert tab.history.resume_button.isEnabled()
    kept = len(_items(run.run_dir))
    assert 2 <= kept < 5

    qtbot.mouseClick(tab.history.resume_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(finished) == 3, timeout=RUN_MS)
    assert finished[2].state == RunStatus.DONE, finished[2].error
    ids = [it["id"] for it in _items(run.run_dir)]
    assert len(ids) == len(set(ids)) == 5
    assert tab.history.rows()[0]["display_status"] == "done"
    qtbot.waitUntil(lambda: tab.shown and tab.shown[0].complete, timeout=5000)
    _assert_chart_matches(tab, tab.names[0], _summary(run.run_dir))


def test_wrong_inputs_are_refused_with_a_message(qtbot, make_tab, tiny_gguf, tmp_path):
    tab = make_tab()
    tab.show()
    tab.set_models([inspect_model(tiny_gguf)])
    setup = tab.setup
    assert not setup.request_runs()
    assert setup.message_label.isVisible() and "Tick at least one model" in setup.message_label.text()

    setup.check_model(tiny_gguf)
    assert not setup.request_runs()
    assert "Choose the questions" in setup.message_label.text()

    with qtbot.waitSignal(setup.sig_dataset_checked, timeout=10_000):
        setup.set_dataset(tmp_path / "missing.jsonl")
    assert not setup.request_runs()
    assert "no such file" in setup.message_label.text()

    bad = tmp_path / "bad.jsonl"
    good = MEDQA.read_text(encoding="utf-8").splitlines()[0]
    bad.write_text(good + "\n{\"question\": \"no options\", \"answer_idx\": \"A\"}\n", encoding="utf-8")
    with qtbot.waitSignal(setup.sig_dataset_checked, timeout=10_000) as checked:
        setup.set_dataset(bad)
    assert not checked.args[0].ok
    assert "line 2" in setup.dataset_label.text()
    assert not setup.request_runs()
    assert "line 2" in setup.message_label.text()
    assert tab.queue.runs == []

    with qtbot.waitSignal(setup.sig_dataset_checked, timeout=10_000) as checked:
        setup.skip_check.setChecked(True)
    assert checked.args[0].ok and checked.args[0].skipped == 1
    assert "1 malformed records skipped" in setup.dataset_label.text()


def test_run_pressed_while_the_questions_are_read_starts_once_they_are_checked(qtbot, make_tab, tiny_gguf):
    tab = make_tab()
    tab.set_models([inspect_model(tiny_gguf)])
    setup = tab.setup
    setup.check_model(tiny_gguf)
    with qtbot.waitSignal(setup.sig_runs_requested, timeout=10_000) as requested:
        setup.set_dataset(MEDQA)
        assert not setup.request_runs()  # still reading: remembered, no error shown
        assert not setup.message_label.isVisible()
        assert "the run starts as soon as" in setup.dataset_label.text()
    (config,) = requested.args[0]
    assert config.data == str(MEDQA) and config.model == str(tiny_gguf)
    tab.queue.stop_all()
    qtbot.waitUntil(lambda: not tab.queue.is_busy(), timeout=30_000)


def test_a_benchmark_left_running_survives_closing_and_reopening_the_app(qtbot, demo_gguf, monkeypatch):
    """Close asks stop / leave / cancel; a benchmark left running is attached again by the next window."""
    from helpers.ui_support import NO_GPU_REPORT, fake_probe_command

    from medalpaca_desktop.ui.benchmark.run_queue import QueuedRun, bench_is_running
    from medalpaca_desktop.ui.devices import DeviceProbe
    from medalpaca_desktop.ui.main_window import MainWindow

    pids: list[int] = []

    def make_window() -> MainWindow:
        probe = DeviceProbe(command=fake_probe_command(NO_GPU_REPORT))
        window = MainWindow(device_probe=probe)
        probe.setParent(window)
        qtbot.addWidget(window)
        return window

    answers = ["cancel", "leave", "stop"]
    asked: list = []
    monkeypatch.setattr(MainWindow, "ask_about_active_runs",
                        lambda self, count: asked.append((count, self.active_jobs_text())) or answers.pop(0))
    try:
        window = make_window()
        tab = window.benchmark_tab
        _configure(qtbot, tab, [demo_gguf], USMLE, preset="medalpaca-paper", limit=40)  # ~1 s a question
        scored: list = []
        tab.queue.sig_item_scored.connect(lambda _run, item: scored.append(item))
        assert tab.setup.request_runs()
        qtbot.waitUntil(lambda: len(scored) >= 1, timeout=RUN_MS)
        run_dir, pid = tab.queue.current.run_dir, tab.queue.job.pid()
        pids.append(pid)
        with Store() as store:  # the GUI wrote the worker's pid and start into its row when it launched it
            row = store.eval_run_by_dir(str(run_dir.resolve()))
        assert row["status"] == "running" and row["pid"] == pid and row["started_at"] is not None

        assert "queued" not in window.active_jobs_details()
        waiting = QueuedRun(config=tab.queue.current.config)
        tab.queue.runs.append(waiting)  # a second benchmark waiting behind the running one
        assert "1 queued benchmark not started yet will not start" in window.active_jobs_details()
        tab.queue.runs.remove(waiting)
        window.show()
        assert not window.close() and window.isVisible() and tab.queue.is_busy()  # cancel: nothing happens
        assert window.close() and not window.isVisible()  # leave running: it scores on without the window
        assert asked == [(1, "1 benchmark is still running.")] * 2
        assert bench_is_running(pid)
        seen = len(_items(run_dir))

        window2 = make_window()  # the next start follows it: same worker, new questions as they come
        tab2 = window2.benchmark_tab
        assert tab2.queue.is_busy() and tab2.queue.job.pid() == pid
        assert tab2.history.rows()[0]["display_status"] == "running"
        later: list = []
        tab2.queue.sig_item_scored.connect(lambda _run, item: later.append(item))
        qtbot.waitUntil(lambda: len(later) >= 1, timeout=RUN_MS)
        assert all(item["id"] not in {it["id"] for it in _items(run_dir)[:seen]} for item in later)

        finished: list = []
        tab2.queue.sig_run_finished.connect(finished.append)
        window2.show()
        assert window2.close()  # "stop": the worker finishes the question and writes a partial summary
        qtbot.waitUntil(lambda: not bench_is_running(pid), timeout=RUN_MS)
        with Store() as store:
            row = store.eval_run_by_dir(str(run_dir.resolve()))
        assert row["status"] == "stopped", row
        summary = _summary(run_dir)
        assert not summary["complete"] and summary["n_scored"] >= seen + 1
    finally:
        for pid in pids:
            if bench_is_running(pid):
                os.kill(pid, signal.SIGKILL)
