"""Benchmark tab views on known numbers: chart items, filters, exports, comparison, history states (no workers)."""

from __future__ import annotations

import json
import math
import time

import pytest
import yaml
from PySide6.QtCore import Qt

from bench.results import build_summary, write_items, write_summary
from bench.stats import Score
from medalpaca_desktop.core import paths
from medalpaca_desktop.core.store import Store
from medalpaca_desktop.ui.benchmark.bar_chart import BenchBarChart, ChartSeries
from medalpaca_desktop.ui.benchmark.compare_view import CompareView
from medalpaca_desktop.ui.benchmark.drilldown import DrillDownView
from medalpaca_desktop.ui.benchmark.history import HistoryPanel, display_status
from medalpaca_desktop.ui.benchmark.runs import BenchRun, run_from_database
from medalpaca_desktop.ui.benchmark.summary_table import SummaryTable
from medalpaca_desktop.ui.benchmark.tab import BenchmarkTab, unique_names

OPTIONS = {"A": "one", "B": "two", "C": "three", "D": "four"}


def _item(qid: str, step: str, gold: str, pred: str | None, output: str = "") -> dict:
    return {"id": qid, "step": step, "question": f"Question {qid}?", "options": OPTIONS, "gold": gold,
            "pred": pred, "correct": pred == gold, "output": output or (f"{pred}: x" if pred else "I am not sure"),
            "prompt": f"### Instruction: ... {qid}"}


def _run(label: str, preds: list[str | None], mode: str = "generate") -> BenchRun:
    golds = ["A", "B", "C", "D", "A", "B"]
    steps = ["step1", "step1", "step2", "step2", "step3", "step3"]
    items = [_item(f"q{i}", steps[i], golds[i], p) for i, p in enumerate(preds)]
    summary = build_summary({"mode": mode, "rule": "paper", "label": label}, items, n_total=len(items),
                            complete=True, record={"seed": 42})
    return BenchRun(run_dir="", label=label, config={"mode": mode}, summary=summary, items=items,
                    record=summary["record"])


def test_bar_chart_heights_whiskers_reference_and_exports(qtbot, tmp_path):
    chart = BenchBarChart()
    qtbot.addWidget(chart)
    scores = {"step1": Score.of(3, 10).to_dict(), "overall": Score.of(7, 20).to_dict()}
    chart.set_runs([ChartSeries("run A", scores)])
    assert chart.bar_heights("run A") == pytest.approx({"step1": 0.3, "overall": 0.35})
    low, high = chart.whiskers("run A")["step1"]
    assert (low, high) == pytest.approx((scores["step1"]["ci_low"], scores["step1"]["ci_high"]))
    assert chart.groups == ["step1", "overall"]

    chart.set_reference({"MedAlpaca 7b": {"step1": 0.297, "step2": 0.312}, "LLaMA 7b": {"step1": 0.198}},
                        "the paper", shown=("MedAlpaca 7b",))
    assert set(chart.bar_items) == {"run A"}  # the paper's series is off until ticked
    chart.reference_check.setChecked(True)
    assert set(chart.bar_items) == {"run A", "MedAlpaca 7b"}
    # the paper's bars only where the runs have a Step (here no Step 2), and all of them without runs
    assert chart.bar_heights("MedAlpaca 7b") == pytest.approx({"step1": 0.297})
    assert chart.groups == ["step1", "overall"]
    chart.set_runs([])
    assert chart.bar_heights("MedAlpaca 7b") == pytest.approx({"step1": 0.297, "step2": 0.312})
    chart.set_runs([ChartSeries("run A", scores)])
    assert chart.bar_items["MedAlpaca 7b"].opts["brush"].style() == Qt.BrushStyle.BDiagPattern
    chart.set_reference_models(["MedAlpaca 7b", "LLaMA 7b"])
    assert set(chart.bar_items) == {"run A", "MedAlpaca 7b", "LLaMA 7b"}
    colors = {chart.bar_items[k].opts["brush"].color().name() for k in chart.bar_items}
    assert len(colors) == 3 and "#0072b2" in colors  # Okabe-Ito, one colour per series

    png, svg = chart.export_png(tmp_path / "c.png"), chart.export_svg(tmp_path / "c.svg")
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    text = svg.read_text(encoding="utf-8")
    assert "<svg" in text and "Overall" in text and "MedAlpaca 7b (paper)" in text


def test_drilldown_filters_detail_and_exports(qtbot, tmp_path):
    view = DrillDownView()
    qtbot.addWidget(view)
    a = _run("A", ["A", "C", None, "D", "A", "B"])
    b = _run("B", ["A", "B", "C", "A", None, "B"])
    view.set_runs([a, b], ["A", "B"])
    assert view.proxy.rowCount() == 6
    view.set_filter("wrong")
    assert [r.id for r in view.visible_rows()] == ["q1", "q2", "q3", "q4"]
    view.set_filter("unparseable")
    assert [r.id for r in view.visible_rows()] == ["q2", "q4"]
    view.set_filter("disagree")
    assert [r.id for r in view.visible_rows()] == ["q1", "q2", "q3", "q4"]
    assert view.count_label.text() == "4 of 6 questions"
    view.set_filter("all")
    view.search_edit.setText("q5")
    assert [r.id for r in view.visible_rows()] == ["q5"]
    view.search_edit.clear()

    assert view.select_question("q2")
    html = view.detail.toHtml()
    assert "I am not sure" in html and "### Instruction: ... q2" in html and "(correct answer)" in html
    index = view.table_model.index(2, 5)
    assert view.table_model.data(index) == "? unparseable"
    assert view.table_model.data(view.table_model.index(1, 5)) == "C ✗"

    view.set_filter("wrong")
    records = json.loads(view.export(tmp_path / "w.json", "json").read_text(encoding="utf-8"))
    assert [r["id"] for r in records] == ["q1", "q2", "q3", "q4"]
    assert records[1]["runs"]["A"] == {"pred": None, "correct": False, "output": "I am not sure",
                                      "prompt": "### Instruction: ... q2"}
    lines = view.export(tmp_path / "w.csv", "csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "id,step,question,options,gold,A pred,A correct,A output,B pred,B correct,B output"


def test_compare_view_numbers(qtbot):
    view = CompareView()  # no task manager: compares inline
    qtbot.addWidget(view)
    a = _run("A", ["A", "B", "C", "D", "A", "C"])  # 5 of 6
    b = _run("B", ["A", "C", "C", "A", "B", "B"])  # 3 of 6
    view.set_runs([a, b], ["A", "B"])
    result = view.comparison
    assert result.n_shared == 6 and result.diff == pytest.approx(2 / 6)
    assert (result.b, result.c) == (3, 1)
    assert result.p_value == pytest.approx(2 * (math.comb(4, 0) + math.comb(4, 1)) / 16)  # exact, two-sided
    assert view.table.rowCount() == 4
    assert [view.table.item(r, 0).text() for r in range(4)] == ["q1", "q3", "q4", "q5"]
    assert "+33.3 points" in view.result_label.text()
    emitted = []
    view.sig_question_requested.connect(emitted.append)
    view.table.itemDoubleClicked.emit(view.table.item(1, 2))
    assert emitted == ["q3"]
    view.select(0, 0)
    assert view.comparison is None and "two different runs" in view.result_label.text()


def test_summary_table_shows_unparseable_and_other_rule(qtbot):
    table = SummaryTable()
    qtbot.addWidget(table)
    run = _run("A", ["A", "C", None, "D", None, "B"])
    table.set_runs([run], ["A"])
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    assert headers == ["Run", "Rule", "n", "Overall [95 % CI]", "Step 1", "Step 2", "Step 3", "Unparseable",
                       "Other measure"]
    assert table.item(0, 7).text() == "2 of 6"
    assert table.item(0, 2).text() == "6"
    low, high = (round(x * 100) for x in (Score.of(3, 6).ci_low, Score.of(3, 6).ci_high))
    assert table.item(0, 3).text() == f"50.0 % [{low}–{high}]"
    assert "3 of 6 right" in table.item(0, 3).toolTip() and "2 unparseable" in table.item(0, 3).toolTip()
    assert table.item(0, 8).text().startswith("lenient:")


def test_unique_names():
    a, b = _run("demo", ["A"] * 6), _run("demo", ["A"] * 6)
    assert unique_names([a, b]) == ["demo · generate", "demo · generate #2"]


def _db_run(store: Store, status: str, *, with_folder: bool = True, error: str | None = None,
            scored: bool = True) -> dict:
    run_dir = paths.runs_dir() / f"bench-{status}-{time.time_ns()}"
    items = [_item("q0", "step1", "A", "A"), _item("q1", "step1", "B", None)]
    if with_folder:
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump({"model": "/m.gguf", "data": "/d", "mode": "generate",
                                                             "out": str(run_dir), "label": "m"}), encoding="utf-8")
        if scored:
            write_items(run_dir, items)
        if status in ("done", "stopped"):
            write_summary(run_dir, build_summary({"mode": "generate", "label": "m"}, items, n_total=2,
                                                 complete=status == "done", record={}))
    run_id = store.create_eval_run("m", run_dir=str(run_dir), model_label="m", scoring="generate", dataset="/d")
    for item in items:
        store.add_eval_item(run_id, item["id"], subset=item["step"], question=item["question"], answer=item["gold"],
                            prediction=item["pred"], correct=item["correct"], raw_output=item["output"],
                            meta={"options": OPTIONS, "prompt": item["prompt"]})
    store.update_eval_run(run_id, status=status, error=error)
    return next(r for r in store.eval_runs() if r["id"] == run_id)


def test_history_states_crash_marking_and_database_fallback(qtbot):
    with Store() as store:
        dead = _db_run(store, "running")  # the app (and its worker) died mid-run
        crashed = _db_run(store, "crashed", error="The benchmark was killed by a signal.")
        bad = _db_run(store, "failed", error="model: not a GGUF file", scored=False)  # refused before scoring
        late = _db_run(store, "failed", error="InferenceError: llama_decode returned 2")  # failed mid-run
        done = _db_run(store, "done", with_folder=False)
    assert display_status(dead, set()) == "crashed"
    assert display_status(dead, {dead["run_dir"]}) == "running"
    assert display_status(crashed, set()) == "crashed"
    assert display_status(bad, set()) == "failed"

    tab = BenchmarkTab()
    qtbot.addWidget(tab)
    try:
        panel: HistoryPanel = tab.history
        by_id = {r["id"]: r for r in panel.rows()}
        assert by_id[dead["id"]]["display_status"] == "crashed"
        resumable = {}
        for i in range(panel.list.count()):
            panel.list.setCurrentRow(i)
            resumable[panel.current_row()["id"]] = panel.resume_button.isEnabled()
        assert resumable == {dead["id"]: True, crashed["id"]: True, bad["id"]: False, late["id"]: True,
                             done["id"]: False}

        # a run whose folder is gone still opens from the database's copy
        tab.show_run_ids([done["id"]])
        (run,) = tab.shown
        assert "folder is gone" in run.note and len(run.items) == 2
        assert run.items[1]["pred"] is None and run.items[0]["prompt"].startswith("### Instruction")
        assert tab.chart.bar_heights(tab.names[0]) == pytest.approx({"step1": 0.5, "overall": 0.5})
        assert "folder is gone" in tab.shown_label.text()
        with Store() as store:
            assert run_from_database(store, done).items == run.items
    finally:
        tab.shutdown()
