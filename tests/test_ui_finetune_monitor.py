"""The run monitor, its charts, the runs list model and the GGUF export dialog, offscreen.

Runs are drawn from events.jsonl files written with the real event classes (what the trainer
writes); the export dialog runs the real `medalpaca export` on a tiny LoRA run.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from medalpaca_desktop.core.events import Checkpoint, Done, Error, Event, Metric, Progress, Started, Warning
from medalpaca_desktop.ui.finetune.export_dialog import (
    EXPORT_QUANTS,
    ExportDialog,
    ExportSourceError,
    export_source,
)
from medalpaca_desktop.ui.finetune.monitor import RunMonitor, chat_path
from medalpaca_desktop.ui.finetune.runs_table_model import COLUMNS, RunsTableModel, run_duration
from medalpaca_desktop.ui.widgets.charts import LineChart


def write_events(run_dir: Path, events: list[Event]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "events.jsonl"
    with open(path, "a", encoding="utf-8") as fh:
        for event in events:
            fh.write(event.to_json() + "\n")
    return path


def train_events(steps: range, total: int, loss0: float = 3.0) -> list[Event]:
    out: list[Event] = []
    for step in steps:
        loss, lr = loss0 / step, 1e-3 * step / total
        out.append(Progress(stage="train", current=step, total=total, unit="step", rate=2.0,
                            eta_s=(total - step) / 2.0, message=f"step {step}/{total}",
                            extra={"epoch": step / total, "loss": loss, "learning_rate": lr,
                                   "tokens_per_s": 100.0 + step, "gpu_memory_gb": None}))
        out.append(Metric(step=step, values={"loss": loss, "learning_rate": lr, "grad_norm": 0.5}))
    return out


def make_row(run_dir: Path, status: str, **kw) -> dict:
    now = time.time()
    row = dict(id=1, name=run_dir.name, run_dir=str(run_dir), status=status, method="lora",
               base_model="/models/SmolLM2-135M-Instruct-Q4_1.gguf", data_json=json.dumps(["/d/sample.jsonl"]),
               config_json="{}", created_at=now - 100, started_at=now - 90, finished_at=now - 10,
               final_loss=0.75, error=None, pid=None)
    row.update(kw)
    return row


def make_checkpoint(run_dir: Path, step: int) -> Path:
    folder = run_dir / "checkpoints" / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    return folder


# --------------------------------------------------------------------------- charts


def test_line_chart_appends_coalesces_and_truncates(qtbot):
    chart = LineChart("Loss", "loss", empty_text="nothing yet")
    qtbot.addWidget(chart)
    chart.add_series("loss", "training")
    chart.add_series("val", "validation", dashed=True)
    assert chart.empty_label.text() == "nothing yet" and not chart.has_points()
    for step, value in [(1, 2.0), (2, float("nan")), (3, 1.5), (4, None), (5, 1.0)]:
        chart.append("loss", step, value)
    assert chart.drawn_points("loss") == []  # drawn on the next redraw tick, not per point
    qtbot.waitUntil(lambda: chart.drawn_points("loss") == [(1.0, 2.0), (3.0, 1.5), (5.0, 1.0)], timeout=2000)
    assert chart._stack.currentWidget() is chart.plot_widget
    chart.truncate_after(3)
    chart.flush()
    assert chart.drawn_points("loss") == [(1.0, 2.0), (3.0, 1.5)]
    chart.set_points("val", [(2, 1.9), (4, math.inf)])
    chart.flush()
    assert chart.drawn_points("val") == [(2.0, 1.9)]
    chart.clear()
    assert chart.drawn_points("loss") == [] and chart._stack.currentWidget() is chart.empty_label

    log_chart = LineChart("LR", log_y=True)
    qtbot.addWidget(log_chart)
    log_chart.add_series("lr", "lr")
    log_chart.append("lr", 1, 0.0)  # not drawable on a log axis
    log_chart.append("lr", 2, 1e-4)
    log_chart.flush()
    assert log_chart.drawn_points("lr") == [(2.0, 1e-4)]


# --------------------------------------------------------------------------- monitor


def test_a_finished_run_is_redrawn_from_its_events(qtbot, tmp_path):
    run_dir = tmp_path / "20260101-120000-tiny-lora"
    (run_dir / "final").mkdir(parents=True)
    (run_dir / "final" / "adapter_config.json").write_text("{}")
    (run_dir / "worker.log").write_text("loading weights\nConverting:   0%\rConverting:  50%\rConverting: 100%\n")
    write_events(run_dir, [
        Progress(stage="data", message="checking and tokenizing the data"),
        Started(job="train", info={"method": "lora", "device": "cpu", "parameters": 100, "trainable_parameters": 4,
                                   "train_examples": 10, "val_examples": 2, "resume_from": None}),
        *train_events(range(1, 5), 4),
        Metric(step=2, values={"val_loss": 1.8}), Metric(step=4, values={"val_loss": 1.2}),
        Metric(step=2, values={"bench_accuracy": 0.25, "bench_low": 0.1, "bench_high": 0.5, "bench_n": 12}),
        Metric(step=4, values={"bench_accuracy": 0.5, "bench_low": 0.25, "bench_high": 0.75, "bench_n": 12}),
        Checkpoint(path=str(run_dir / "checkpoints" / "checkpoint-4"), step=4),
        Warning(message="the GGUF base was de-quantized"),
        Done(ok=True, data={"steps": 4, "train_loss": 0.75, "final": str(run_dir / "final")}),
    ])
    monitor = RunMonitor()
    qtbot.addWidget(monitor)
    assert monitor.empty_label.isVisibleTo(monitor) and not monitor.body.isVisibleTo(monitor)
    monitor.show_run(make_row(run_dir, "done"))
    assert monitor.body.isVisibleTo(monitor)
    assert monitor.loss_chart.drawn_points("loss") == [(1.0, 3.0), (2.0, 1.5), (3.0, 1.0), (4.0, 0.75)]
    assert monitor.loss_chart.drawn_points("val_loss") == [(2.0, 1.8), (4.0, 1.2)]
    assert monitor.bench_chart.drawn_points("bench_accuracy") == [(2.0, 25.0), (4.0, 50.0)]  # with its interval:
    assert monitor.bench_chart.drawn_points("bench_low") == [(2.0, 10.0), (4.0, 25.0)]
    assert monitor.bench_chart.drawn_points("bench_high") == [(2.0, 50.0), (4.0, 75.0)]
    assert [x for x, _ in monitor.lr_chart.drawn_points("learning_rate")] == [1.0, 2.0, 3.0, 4.0]
    assert monitor.speed_chart.drawn_points("tokens_per_s")[-1] == (4.0, 104.0)
    assert monitor.memory_chart.drawn_points("gpu_memory_gb") == []
    assert "CPU" in monitor.gpu_label.text() and "CPU" in monitor.memory_chart.empty_label.text()
    assert monitor.progress.value() == monitor.progress.maximum()
    assert "step 4/4" in monitor.progress.format() and "ETA" not in monitor.progress.format()  # not live
    log = monitor.log_view.toPlainText()
    assert "loading weights" in log and "[checkpoint at step 4" in log and "[warning]" in log
    assert "Converting: 100%" in log and "50%" not in log  # a progress bar shows as it ended
    assert monitor.status_label.text() == "done" and "Finished" in monitor.banner.text()
    assert "SmolLM2-135M-Instruct-Q4_1" in monitor.details_label.text()
    assert monitor.chat_button.isEnabled() and monitor.export_button.isEnabled()
    assert not monitor.stop_button.isEnabled() and not monitor.resume_button.isEnabled()
    with qtbot.waitSignal(monitor.sig_chat_requested) as blocker:
        qtbot.mouseClick(monitor.chat_button, Qt.MouseButton.LeftButton)
    assert blocker.args == [str(run_dir / "final")]
    with qtbot.waitSignal(monitor.sig_new_like_requested, raising=False, timeout=200) as new_like:
        qtbot.mouseClick(monitor.new_like_button, Qt.MouseButton.LeftButton)
    assert not new_like.signal_triggered  # no config.yaml in this folder: nothing to start from
    monitor.show_run(None)
    assert monitor.run_id() is None and monitor.loss_chart.drawn_points("loss") == []


def test_a_resumed_run_draws_one_continuous_curve(qtbot, tmp_path):
    run_dir = tmp_path / "run"
    write_events(run_dir, [*train_events(range(1, 7), 8), Done(ok=False, stopped=True)])
    # the crash lost steps 5-6; the resume starts again from checkpoint-4
    write_events(run_dir, [Started(job="train", info={"resume_from": str(run_dir / "checkpoints/checkpoint-4")}),
                           *train_events(range(5, 9), 8, loss0=2.0), Done(ok=True)])
    monitor = RunMonitor()
    qtbot.addWidget(monitor)
    monitor.show_run(make_row(run_dir, "done"))
    points = monitor.loss_chart.drawn_points("loss")
    assert [x for x, _ in points] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert points[4] == (5.0, 2.0 / 5)  # the resumed attempt's value, not the lost one
    assert "[resumed from" in monitor.log_view.toPlainText()


def test_buttons_and_banner_follow_the_status(qtbot, tmp_path):
    run_dir = tmp_path / "run"
    write_events(run_dir, [*train_events(range(1, 3), 10), Error(message="Out of memory. Try qlora."),
                           Done(ok=False)])
    (run_dir / "config.yaml").write_text("method: lora\n")
    monitor = RunMonitor()
    qtbot.addWidget(monitor)
    monitor.show_run(make_row(run_dir, "failed", error="Out of memory. Try qlora."))
    assert "The run failed" in monitor.banner.text() and "Out of memory" in monitor.banner.text()
    assert "No checkpoint was saved" in monitor.banner.text()
    assert monitor.resume_button.isEnabled() and monitor.resume_button.text() == "Resume"
    assert not monitor.chat_button.isEnabled() and not monitor.export_button.isEnabled()
    assert "[error] Out of memory" in monitor.log_view.toPlainText()

    make_checkpoint(run_dir, 2)
    monitor.update_row(make_row(run_dir, "stopped"))
    assert monitor.resume_button.text() == "Resume from step 2"
    assert "Stopped." in monitor.banner.text() and "checkpoint at step 2" in monitor.banner.text()
    with qtbot.waitSignal(monitor.sig_resume_requested) as blocker:
        qtbot.mouseClick(monitor.resume_button, Qt.MouseButton.LeftButton)
    assert blocker.args == [1]
    with qtbot.waitSignal(monitor.sig_new_like_requested) as blocker:
        qtbot.mouseClick(monitor.new_like_button, Qt.MouseButton.LeftButton)
    assert blocker.args == [1]

    monitor.update_row(make_row(run_dir, "running"))  # marked running, but no session follows it here
    assert not monitor.stop_button.isEnabled() and "not following" in monitor.banner.text()
    assert "step 2" in monitor.progress.format()

    early = tmp_path / "early"
    write_events(early, [Error(message="The dataset is empty.")])
    (early / "config.yaml").write_text("method: lora\n")
    monitor.show_run(make_row(early, "crashed", error="The worker ended without a word."))
    assert "The run crashed" in monitor.banner.text()
    assert monitor.progress.format() == "Ended before the first training step"  # not an empty bar


def test_chat_path_prefers_the_merged_model(tmp_path):
    assert chat_path(tmp_path) is None
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "adapter_config.json").write_text("{}")
    assert chat_path(tmp_path) == tmp_path / "final"
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "config.json").write_text("{}")
    assert chat_path(tmp_path) == tmp_path / "merged"


# --------------------------------------------------------------------------- runs list


def test_runs_table_model_columns(qtbot, tmp_path):
    model = RunsTableModel()
    best = {"best_by": "accuracy", "best_value": 0.415, "best_step": 40,
            "best_checkpoint": str(tmp_path / "a" / "checkpoints" / "checkpoint-40")}
    rows = [make_row(tmp_path / "a", "done", id=2, best_json=json.dumps(best)),
            make_row(tmp_path / "b", "failed", id=1, final_loss=None, error="training data: x.jsonl line 3: bad",
                     data_json=json.dumps(["/d/one.jsonl", "/d/two.csv"])),
            make_row(tmp_path / "c", "running", id=3, finished_at=None, started_at=time.time() - 75)]
    model.set_rows(rows)
    assert model.columnCount() == len(COLUMNS) == 8 and model.rowCount() == 3
    text = [[model.data(model.index(r, c)) for c in range(8)] for r in range(3)]
    assert text[0] == ["a", "done", "lora", "SmolLM2-135M-Instruct-Q4_1", "sample.jsonl", "0.7500",
                       "step 40 · acc 41.5 %", "1m 20s"]
    assert text[1][1] == "failed" and text[1][4] == "one.jsonl + 1 more" and text[1][5] == "" and text[1][6] == ""
    assert text[2][7].startswith("1m 1")  # a running run's duration counts on
    assert "checkpoint-40" in model.data(model.index(0, 6), Qt.ItemDataRole.ToolTipRole)
    assert model.data(model.index(1, 1), Qt.ItemDataRole.ToolTipRole) == "training data: x.jsonl line 3: bad"
    assert model.data(model.index(1, 4), Qt.ItemDataRole.ToolTipRole) == "/d/one.jsonl\n/d/two.csv"
    assert model.row_of(3) == 2 and model.row_at(5) is None
    assert run_duration({"started_at": None}) is None


# --------------------------------------------------------------------------- export


def test_export_types_match_the_exporter():
    from trainer.export import EXPORT_QUANTS as ENGINE_QUANTS

    assert EXPORT_QUANTS == ENGINE_QUANTS


def test_export_source_of_each_kind_of_run(tmp_path, tiny_llama_dir, tiny_lora_dir):
    with pytest.raises(ExportSourceError, match="no final model yet"):
        export_source(tmp_path)
    shutil.copytree(tiny_lora_dir, tmp_path / "final")
    source = export_source(tmp_path)
    assert source.model == tiny_llama_dir and source.adapter == tmp_path / "final"
    cfg = json.loads((tmp_path / "final" / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tmp_path / "nowhere")
    (tmp_path / "final" / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExportSourceError, match="not on this computer"):
        export_source(tmp_path)
    shutil.copytree(tiny_llama_dir, tmp_path / "merged")
    assert export_source(tmp_path).model == tmp_path / "merged" and export_source(tmp_path).adapter is None


def test_export_dialog_refuses_bad_files_then_exports(qtbot, tmp_path, tiny_lora_dir):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_lora_dir, run_dir / "final")
    dialog = ExportDialog(run_dir)
    qtbot.addWidget(dialog)
    assert dialog.export_button.isEnabled() and dialog.quant_combo.currentText() == "q8_0"
    assert dialog.out_edit.text() == str(run_dir / "run-q8_0.gguf")
    dialog.quant_combo.setCurrentText("f16")
    assert dialog.out_edit.text() == str(run_dir / "run-f16.gguf")  # the default name follows the type

    dialog.out_edit.setText(str(tmp_path / "model.bin"))
    assert not dialog.start_export() and "a .gguf file" in dialog.status_label.text()
    dialog.out_edit.setText(str(tmp_path / "missing" / "model.gguf"))
    assert not dialog.start_export() and "does not exist" in dialog.status_label.text()
    existing = tmp_path / "old.gguf"
    existing.write_bytes(b"x")
    dialog.out_edit.setText(str(existing))
    assert not dialog.start_export() and "already exists" in dialog.status_label.text()

    out = run_dir / "run-f16.gguf"
    dialog.out_edit.setText(str(out))
    assert dialog.check_box.isChecked() and dialog.check_edit.text() == "medqa_4options:200"  # on by default
    sample = Path(__file__).resolve().parents[1] / "resources" / "sample_questions" / "medqa_sample.jsonl"
    dialog.check_edit.setText(f"{sample}:4")
    with qtbot.waitSignal(dialog.sig_exported, timeout=120_000) as blocker:
        assert dialog.start_export()
        assert not dialog.export_button.isEnabled() and dialog.stop_button.isEnabled()
    assert blocker.args == [str(out)] and out.is_file() and out.read_bytes()[:4] == b"GGUF"
    assert "Wrote" in dialog.status_label.text() and dialog.progress.value() == dialog.progress.maximum()
    assert dialog.chat_button.isEnabled() and dialog.open_button.isEnabled()
    assert dialog.verify_label.isVisibleTo(dialog) and dialog.verify_label.text().startswith("On 4 questions: ")
    assert dialog.verify is not None and dialog.verify["n_shared"] == 4
    with qtbot.waitSignal(dialog.sig_chat_requested) as chat:
        qtbot.mouseClick(dialog.chat_button, Qt.MouseButton.LeftButton)
    assert chat.args == [str(out)]


def test_export_dialog_without_a_result(qtbot, tmp_path):
    dialog = ExportDialog(tmp_path)
    qtbot.addWidget(dialog)
    assert not dialog.export_button.isEnabled() and "Nothing to export" in dialog.status_label.text()
    assert not dialog.start_export()


def test_the_legend_names_only_series_with_points(qtbot):
    chart = LineChart("Loss")
    qtbot.addWidget(chart)
    chart.add_series("loss", "training")
    chart.add_series("val_loss", "validation")
    chart.append("loss", 1, 2.0)
    chart.flush()
    assert [label.text for _, label in chart.legend.items] == ["training"]
    chart.append("val_loss", 1, 2.5)
    chart.flush()
    assert [label.text for _, label in chart.legend.items] == ["training", "validation"]
    chart.clear()
    assert chart.legend.items == []


def test_the_export_check_defaults_to_the_runs_own_benchmark(tmp_path):
    from medalpaca_desktop.ui.finetune.export_dialog import default_check

    assert default_check(tmp_path) == "medqa_4options:200"
    (tmp_path / "config.yaml").write_text("bench_task: /q/exam.jsonl\nbench_questions: 40\n")
    assert default_check(tmp_path) == "/q/exam.jsonl:40"  # the questions scored while training
    (tmp_path / "config.yaml").write_text("bench_task: medmcqa\nbench_questions: 0\n")
    assert default_check(tmp_path) == "medmcqa:200"
