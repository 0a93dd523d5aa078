"""Picking weights other than the best (trainer/checkpoints.py): the monitor's picker and `export --run`.

A real tiny LoRA run keeps two checkpoints and final/ (its best by validation loss); the
weights exported for a chosen step are that checkpoint's, not final's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_run import make_config, run, write_records

from trainer.checkpoints import CheckpointError, model_and_adapter, pick, saved_weights

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def finished_run(tiny_llama_dir, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("pick")
    cfg = make_config(tiny_llama_dir, tmp / "run", write_records(tmp), max_steps=4, eval_steps=2, save_steps=2,
                      val_split=0.25, best_by="val_loss", save_total_limit=3, learning_rate=5e-2)
    rc, rec = run(cfg)
    assert rc == 0, [e.to_dict() for e in rec.of("error")]
    return tmp / "run"


def _gguf_tensor(path: Path, name: str) -> bytes:
    import gguf

    return next(t for t in gguf.GGUFReader(str(path)).tensors if t.name == name).data.tobytes()


def test_the_run_lists_final_and_each_checkpoint_with_its_scores(finished_run):
    weights = {w.key: w for w in saved_weights(finished_run)}
    assert set(weights) == {"final", "step-4", "step-2"}
    best = [w for w in weights.values() if w.key.startswith("step-") and w.best]
    assert len(best) == 1 and weights["final"].best and weights["final"].step == best[0].step
    assert all(w.val_loss is not None for w in weights.values())
    assert weights["step-2"].is_adapter and weights["step-2"].label().startswith("Step 2")
    assert weights["final"].label().startswith(f"Final = best, step {best[0].step}")
    assert pick(finished_run, "best").key == best[0].key and pick(finished_run).key == "final"
    model, adapter = model_and_adapter(pick(finished_run, "2"))
    assert adapter == finished_run / "checkpoints" / "checkpoint-2" and (model / "config.json").is_file()
    with pytest.raises(CheckpointError, match="it has: final, 4, 2"):
        pick(finished_run, "3")
    with pytest.raises(CheckpointError, match="best, final, merged or a step"):
        pick(finished_run, "latest")


def test_export_run_checkpoint_writes_that_checkpoints_weights(finished_run, tmp_path):
    from trainer.export import ExportConfig, export_gguf

    not_best = next(w for w in saved_weights(finished_run) if w.key.startswith("step-") and not w.best)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "picked.gguf"
    proc = subprocess.run([sys.executable, "-m", "medalpaca_desktop", "export", "--run", str(finished_run),
                           "--checkpoint", str(not_best.step), "--out", str(out), "--quant", "f32"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    model, adapter = model_and_adapter(not_best)
    direct = export_gguf(ExportConfig(model=model, adapter=adapter, out=tmp_path / "direct.gguf", quant="f32"))
    final = export_gguf(ExportConfig(model=model, adapter=finished_run / "final", out=tmp_path / "final.gguf",
                                     quant="f32"))
    name = "blk.0.attn_q.weight"
    assert _gguf_tensor(out, name) == _gguf_tensor(direct, name)
    assert _gguf_tensor(out, name) != _gguf_tensor(final, name)

    bad = subprocess.run([sys.executable, "-m", "medalpaca_desktop", "export", "--run", str(finished_run),
                          "--checkpoint", "99", "--out", str(tmp_path / "no.gguf")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "it has: final" in bad.stderr


def test_the_monitor_picker_drives_chat_and_export(qtbot, finished_run):
    from test_ui_finetune_monitor import make_row

    from medalpaca_desktop.ui.finetune.monitor import RunMonitor

    monitor = RunMonitor()
    qtbot.addWidget(monitor)
    monitor.show_run(make_row(finished_run, "done"))
    labels = [monitor.weights_combo.itemText(i) for i in range(monitor.weights_combo.count())]
    assert labels[0].startswith("Final = best") and any(t.startswith("Step 2") for t in labels)
    with qtbot.waitSignal(monitor.sig_chat_requested) as blocker:
        monitor.chat_button.click()
    assert blocker.args == [str(finished_run / "final")]
    assert monitor.pick_weights("step-2")
    with qtbot.waitSignal(monitor.sig_chat_requested) as blocker:
        monitor.chat_button.click()
    assert blocker.args == [str(finished_run / "checkpoints" / "checkpoint-2")]
    dialog = monitor.open_export_dialog()
    assert dialog is not None and dialog.source is not None
    assert dialog.source.adapter == finished_run / "checkpoints" / "checkpoint-2"
    assert dialog.out_edit.text().endswith("-step2-q8_0.gguf")
    dialog.shutdown()
    assert not monitor.pick_weights("step-99")


def test_a_checkpoint_carries_the_training_format_into_its_export(finished_run, tmp_path):
    """Chat and export of a checkpoint format prompts as training did: the checkpoint holds the template file,
    and the GGUF of base + adapter takes its medalpaca.* keys from the adapter, not from the base."""
    import gguf

    from trainer.export import TEMPLATE_FILE, ExportConfig, export_gguf

    step2 = pick(finished_run, "2")
    assert (step2.folder / TEMPLATE_FILE).is_file()
    model, adapter = model_and_adapter(step2)
    assert not (model / TEMPLATE_FILE).is_file()  # the base knows nothing of the fine-tune
    out = export_gguf(ExportConfig(model=model, adapter=adapter, out=tmp_path / "step2.gguf", quant="f32"))
    fields = gguf.GGUFReader(str(out)).fields
    assert "medalpaca.template" in fields
