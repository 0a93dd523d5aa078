"""A benchmark scored in the training loop (trainer/bench_in_loop.py) and the best checkpoint it picks.

The tiny LLaMA with LoRA on the CPU, the project's sample MedQA questions. The in-loop
accuracy is checked against an ordinary benchmark run of the saved checkpoint, so
the two scorers cannot drift apart.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_run import Recorder, _env, _write_yaml, make_config, run, write_records

from medalpaca_desktop.core.events import parse_line
from medalpaca_desktop.core.typed_config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
MEDQA = ROOT / "resources" / "sample_questions" / "medqa_sample.jsonl"


def _adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def _bench_accuracy(model: Path, adapter: Path, ids: list[str], out: Path) -> float:
    """An ordinary log-likelihood benchmark run (lm-eval's prompt) of the adapter, on the chosen questions."""
    from bench.config import BenchConfig
    from bench.run import run_job

    cfg = BenchConfig(model=str(model), adapter=str(adapter), data=str(MEDQA), mode="loglikelihood",
                      prompt_style="lm-eval", out=str(out), backend="hf")
    assert run_job(cfg, writer=Recorder()) == 0
    items = {it["id"]: it for it in map(json.loads, (out / "items.jsonl").read_text().splitlines())}
    return sum(1 for i in ids if items[i]["correct"]) / len(ids)


def test_scores_at_each_evaluation_keep_the_best_checkpoint_and_put_it_in_final(tiny_llama_dir, tmp_path):
    import torch

    from trainer.bench_in_loop import load_bench_questions

    cfg = make_config(tiny_llama_dir, tmp_path / "run", write_records(tmp_path), max_steps=8, eval_steps=2,
                      save_steps=100, save_total_limit=1, val_split=0.2, learning_rate=3e-2,
                      bench_task=str(MEDQA), bench_questions=12)
    assert cfg.best_measure() == "accuracy"
    rc, rec = run(cfg)
    assert rc == 0, [e.message for e in rec.of("error")]
    scores = {e.step: e.values for e in rec.of("metric") if "bench_accuracy" in e.values}
    assert sorted(scores) == [2, 4, 6, 8]
    assert all(v["bench_n"] == 12 and v["bench_low"] <= v["bench_accuracy"] <= v["bench_high"]
               for v in scores.values())
    accuracies = [scores[s]["bench_accuracy"] for s in sorted(scores)]
    best_step = sorted(scores)[accuracies.index(max(accuracies))]  # the first of equal bests
    done = rec.events[-1].data
    assert (done["best_by"], done["best_step"], done["best_value"]) == ("accuracy", best_step, max(accuracies))
    best = Path(done["best_checkpoint"])
    assert best.name == f"checkpoint-{best_step}" and best.is_dir()  # saved at an evaluation, not a save step
    assert done["bench"]["seconds"] > 0 and 0 < done["bench"]["share_of_training"] < 1

    from medalpaca_desktop.core.store import Store

    with Store() as store:  # the runs list marks it
        row = store.training_run_by_dir(str((tmp_path / "run").resolve()))
    recorded = json.loads(row["best_json"])
    assert (recorded["best_step"], recorded["best_checkpoint"]) == (best_step, str(best))
    assert recorded["bench"]["last"]["bench_n"] == 12

    card = (tmp_path / "run" / "final" / "README.md").read_text(encoding="utf-8")
    assert "## Benchmark while training" in card and f"| 8 | {100 * accuracies[-1]:.1f} % |" in card
    assert f"Best checkpoint: step {best_step} (accuracy {100 * max(accuracies):.1f} %)" in card

    # final/ holds the best weights (what chat, merge and export use), also when a later step was saved
    final, saved = _adapter(tmp_path / "run" / "final"), _adapter(best)
    assert final.keys() == saved.keys()
    for key in final:
        torch.testing.assert_close(final[key], saved[key])

    # the in-loop accuracy is the benchmark's: the same questions, scored by a benchmark run of the checkpoint
    _, questions = load_bench_questions(cfg)
    ids = [q.id for q in questions]
    assert len(ids) == 12 and ids != [str(i) for i in range(12)]  # a seeded choice, not the first 12
    assert _bench_accuracy(tiny_llama_dir, best, ids, tmp_path / "bench") == pytest.approx(max(accuracies))


def test_best_by_validation_loss_survives_rotation(tiny_llama_dir, tmp_path):
    cfg = make_config(tiny_llama_dir, tmp_path / "run", write_records(tmp_path), max_steps=6, eval_steps=2,
                      save_steps=2, save_total_limit=1, val_split=0.2, learning_rate=3e-1)
    assert cfg.best_measure() == "val_loss"
    rc, rec = run(cfg)
    assert rc == 0
    losses = {e.step: e.values["val_loss"] for e in rec.of("metric") if "val_loss" in e.values}
    best_step = min(losses, key=lambda s: (losses[s], s))
    done = rec.events[-1].data
    assert done["best_step"] == best_step and done["best_value"] == pytest.approx(losses[best_step])
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("checkpoint-*"))
    assert f"checkpoint-{best_step}" in kept  # save_total_limit=1 rotates everything but the best and the newest
    state = json.loads((tmp_path / "run" / "checkpoints" / kept[-1] / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] == str(tmp_path / "run" / "checkpoints" / f"checkpoint-{best_step}")


def test_a_task_not_downloaded_is_said_before_the_model_loads(tiny_llama_dir, tmp_path):
    cfg = make_config(tiny_llama_dir, tmp_path / "run", write_records(tmp_path), val_split=0.2,
                      bench_task="medmcqa")
    rc, rec = run(cfg)
    assert rc == 2
    (error,) = rec.of("error")
    assert error.kind == "bench_task" and error.message.startswith("bench_task: ") and "ownload" in error.message
    assert not any(e.stage == "model" for e in rec.of("progress"))


@pytest.mark.parametrize(("values", "field"), [
    (dict(bench_task="medqa_4options", val_split=0.0), "bench_task"),
    (dict(best_by="accuracy"), "best_by"),
    (dict(best_by="val_loss", val_split=0.0), "best_by"),
])
def test_settings_that_cannot_work_together_name_the_field(tiny_llama_dir, tmp_path, values, field):
    with pytest.raises(ConfigError, match=f"^{field}: "):
        make_config(tiny_llama_dir, tmp_path / "run", tmp_path / "data.jsonl", **values)


def test_two_processes_score_one_share_each(tiny_llama_dir, tmp_path):
    cfg = make_config(tiny_llama_dir, tmp_path / "run", write_records(tmp_path), max_steps=2, eval_steps=2,
                      val_split=0.2, bench_task=str(MEDQA), bench_questions=9)
    path = _write_yaml(cfg, tmp_path / "cfg.yaml")
    proc = subprocess.run([sys.executable, "-m", "trainer", "run", str(path), "--num-processes", "2"],
                          capture_output=True, text=True, cwd=tmp_path, env=_env(tmp_path), timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [e for e in map(parse_line, proc.stdout.splitlines()) if e is not None]
    scores = [e.values for e in events if e.type == "metric" and "bench_accuracy" in e.values]
    assert len(scores) == 1 and scores[0]["bench_n"] == 9  # 5 + 4 questions, summed over the ranks


def test_an_export_after_training_is_checked_on_the_runs_benchmark(tiny_llama_dir, tmp_path):
    cfg = make_config(tiny_llama_dir, tmp_path / "run", write_records(tmp_path), max_steps=2, eval_steps=2,
                      val_split=0.2, bench_task=str(MEDQA), bench_questions=6, export_gguf="f32")
    rc, rec = run(cfg)
    assert rc == 0, [e.message for e in rec.of("error")]
    checked = rec.events[-1].data["gguf_verify"]
    assert checked["n_shared"] == 6 and not checked["significantly_worse"]
    assert checked["acc_a"] == checked["acc_b"]  # an f32 export of the merged weights scores as they do
    assert any(e.message.endswith(checked["verdict"]) for e in rec.of("log"))
    from trainer.bench_in_loop import load_bench_questions

    chosen = sorted(q.id for q in load_bench_questions(cfg)[1])
    for name in ("reference", "candidate"):  # the export is checked on the questions scored while training
        lines = (tmp_path / "run" / "run-f32.gguf.verify" / name / "items.jsonl").read_text().splitlines()
        assert sorted(json.loads(line)["id"] for line in lines) == chosen


def test_ranks_share_the_questions_except_under_fsdp(tiny_llama_dir, tmp_path, monkeypatch):
    """DDP ranks score shares (summed); FSDP ranks all score every question, since each forward is a collective."""
    from medalpaca_desktop.core.events import EventWriter
    from trainer.bench_in_loop import InLoopBenchmark, load_bench_questions

    cfg = make_config(tiny_llama_dir, tmp_path / "run", tmp_path / "d.jsonl", val_split=0.2, bench_task=str(MEDQA),
                      bench_questions=9)
    bench, questions = load_bench_questions(cfg)
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    shares = [InLoopBenchmark(cfg, bench, questions, None, EventWriter(None), r, 2).shard for r in (0, 1)]
    assert [len(s) for s in shares] == [5, 4] and {q.id for s in shares for q in s} == {q.id for q in questions}
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    lockstep = InLoopBenchmark(cfg, bench, questions, None, EventWriter(None), 1, 2)
    assert lockstep.lockstep and lockstep.shard == questions
