"""The fine-tuning job (trainer/run.py): every method, resume, stop, CLI, two processes.

All on the tiny LLaMA on the CPU. In-process runs share one import of torch and
transformers; subprocess runs cover the parts that need a real process (signals,
stdout discipline, accelerate launch).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from medalpaca_desktop.core.events import EventWriter, parse_line, read_events_file

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "resources" / "sample_data" / "medical_instructions.jsonl"
RECORDS = [
    {"instruction": "What is the normal adult resting heart rate?", "input": "",
     "output": "Between 60 and 100 beats per minute."},
    {"instruction": "Name the first-line treatment for anaphylaxis.", "input": "",
     "output": "Intramuscular adrenaline (epinephrine)."},
    {"instruction": "Which vitamin deficiency causes scurvy?", "input": "", "output": "Vitamin C."},
    {"instruction": "What does HbA1c measure?", "input": "",
     "output": "Average blood glucose over about three months."},
    {"instruction": "Answer the question.", "input": "Which organ produces insulin?", "output": "The pancreas."},
    {"instruction": "What is the antidote for paracetamol overdose?", "input": "", "output": "N-acetylcysteine."},
] * 4


def write_records(folder: Path) -> Path:
    path = folder / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    return path


def make_config(tiny_llama_dir: Path, out: Path, data: Path, **kw):
    from trainer.config import TrainConfig

    values = dict(base_model=str(tiny_llama_dir), method="lora", data=[str(data)], output_dir=str(out),
                  max_steps=3, learning_rate=2e-3, global_batch_size=4, micro_batch_size=2, warmup_steps=1,
                  max_length=192, val_split=0.0, eval_steps=50, save_steps=50, lora_r=4, lora_alpha=8,
                  lora_target_modules=["q_proj", "v_proj"])
    values.update(kw)
    return TrainConfig(**values).validate()


class Recorder(EventWriter):
    def __init__(self) -> None:
        super().__init__(None)
        self.events: list = []

    def emit(self, event) -> None:
        self.events.append(event)
        super().emit(event)  # the listeners (the run's own runs-list row) follow the run as in a worker

    def of(self, kind: str) -> list:
        return [e for e in self.events if e.type == kind]


def run(cfg, **kw):
    from trainer.run import run_job

    rec = Recorder()
    rc = run_job(cfg, writer=rec, **kw)
    return rc, rec


# --------------------------------------------------------------------------- methods


@pytest.mark.parametrize("method", ["full", "lora", "lora-8bit", "qlora"])
def test_each_method_trains_a_few_steps(method, tiny_llama_dir, tmp_path):
    import bitsandbytes as bnb
    from transformers import TrainerCallback

    seen: dict = {}

    class Grab(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen["model"] = model

    targets = ["all-linear"] if method == "qlora" else ["q_proj", "v_proj"]
    cfg = make_config(tiny_llama_dir, tmp_path / "run", write_records(tmp_path), method=method,
                      lora_target_modules=targets, gradient_checkpointing=method == "lora-8bit")
    rc, rec = run(cfg, callbacks=[Grab()])
    assert rc == 0, [e.to_dict() for e in rec.of("error")]
    started = rec.of("started")[0].info
    assert started["method"] == method and started["device"] == "cpu"
    assert 0 < started["trainable_parameters"] <= started["parameters"]
    assert (started["trainable_share"] == 1.0) == (method == "full")
    losses = [e.values["loss"] for e in rec.of("metric") if "loss" in e.values]
    assert len(losses) == 3 and all(loss > 0 for loss in losses)
    done = rec.events[-1]
    assert done.type == "done" and done.ok
    final = Path(done.data["final"])
    assert (final / ("adapter_config.json" if method != "full" else "config.json")).is_file()
    assert (final / "tokenizer_config.json").is_file()
    layer_types = {type(m) for m in seen["model"].modules()}
    if method == "lora-8bit":
        assert bnb.nn.Linear8bitLt in layer_types
    elif method == "qlora":
        assert bnb.nn.Linear4bit in layer_types
        assert seen["model"].peft_config["default"].target_modules  # all-linear expanded by peft
    else:
        assert not layer_types & {bnb.nn.Linear8bitLt, bnb.nn.Linear4bit}
    assert (tmp_path / "run" / "config.yaml").is_file()


def test_lora_loss_falls(tiny_llama_dir, tmp_path):
    """On the bundled sample data. train_on_inputs: the tiny model's weights are random, so the
    answers alone barely move in 30 steps (6.3 -> 5.9); template + question fall clearly (6.3 -> 3.8)."""
    data = SAMPLE
    cfg = make_config(tiny_llama_dir, tmp_path / "run", data, max_steps=30, learning_rate=2e-2, warmup_steps=3,
                      val_split=0.1, eval_steps=10, lora_r=8, lora_alpha=16, lora_dropout=0.0,
                      lora_target_modules=["all-linear"], train_on_inputs=True)
    rc, rec = run(cfg)
    assert rc == 0, [e.to_dict() for e in rec.of("error")]
    losses = [e.values["loss"] for e in rec.of("metric") if "loss" in e.values]
    assert len(losses) == 30
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.8 * first, losses
    vals = [e.values["val_loss"] for e in rec.of("metric") if "val_loss" in e.values]
    assert len(vals) == 3 and vals[-1] < vals[0]
    progress = [e for e in rec.of("progress") if e.stage == "train"]
    assert progress[-1].current == 30 and progress[-1].total == 30
    assert progress[-1].extra["tokens_per_s"] > 0 and progress[-1].extra["learning_rate"] is not None


# --------------------------------------------------------------------------- resume / stop


def _adapter_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_resume_equals_uninterrupted(tiny_llama_dir, tmp_path):
    import torch
    from transformers import TrainerCallback

    data = write_records(tmp_path)
    common = dict(max_steps=12, save_steps=4, lora_dropout=0.1, warmup_steps=2)
    rc, full = run(make_config(tiny_llama_dir, tmp_path / "a", data, **common))
    assert rc == 0

    stop = threading.Event()

    class StopAt6(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 6:
                stop.set()

    cfg_b = make_config(tiny_llama_dir, tmp_path / "b", data, **common)
    rc, first = run(cfg_b, stop=stop, callbacks=[StopAt6()])
    assert rc == 130
    done = first.events[-1]
    assert done.type == "done" and not done.ok and done.stopped
    assert (tmp_path / "b" / "checkpoints" / "checkpoint-6").is_dir()
    assert not (tmp_path / "b" / "final").exists()
    rc, second = run(cfg_b, resume=True)
    assert rc == 0
    assert second.of("started")[0].info["resume_from"].endswith("checkpoint-6")

    loss_a = [e.values["loss"] for e in full.of("metric") if "loss" in e.values]
    loss_b = [e.values["loss"] for e in first.of("metric") + second.of("metric") if "loss" in e.values]
    assert loss_b == pytest.approx(loss_a, rel=1e-5, abs=1e-6)
    wa, wb = _adapter_weights(tmp_path / "a" / "final"), _adapter_weights(tmp_path / "b" / "final")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


def test_bad_data_error_comes_before_the_model(tiny_llama_dir, tmp_path):
    class DataError(ValueError):
        pass

    def bad(config, tokenizer):
        raise DataError("records.jsonl line 3: output is empty")

    from trainer.run import run_job

    rec = Recorder()
    rc = run_job(make_config(tiny_llama_dir, tmp_path / "run", write_records(tmp_path)), writer=rec, prepare=bad)
    assert rc == 1
    assert [e.type for e in rec.events if e.type != "progress"] == ["error", "done"]
    assert rec.of("error")[0].kind == "data" and "line 3" in rec.of("error")[0].message
    assert not any(e.stage == "model" for e in rec.of("progress"))


def test_failed_final_save_keeps_nothing_half_written(tiny_llama_dir, tmp_path, monkeypatch):
    import trainer.run as run_mod

    def broken(folder, adapter):
        raise OSError("disk full")

    monkeypatch.setattr(run_mod, "verify_saved", broken)
    rc, rec = run(make_config(tiny_llama_dir, tmp_path / "run", write_records(tmp_path), max_steps=2))
    assert rc == 1 and rec.events[-1].type == "done" and not rec.events[-1].ok
    assert not (tmp_path / "run" / "final").exists()
    assert all(e.type != "done" or not e.ok for e in rec.events)


def test_launch_command_for_several_processes_and_machines():
    from trainer.launch import LaunchOptions, launch_command

    cmd = launch_command("cfg.yaml", ["max_steps=2"], True, LaunchOptions(2, 2, 1, "10.0.0.1", 29600))
    joined = " ".join(cmd)
    assert "accelerate.commands.launch" in joined and "--multi_gpu" in cmd
    assert cmd[cmd.index("--num_processes") + 1] == "4" and cmd[cmd.index("--machine_rank") + 1] == "1"
    assert cmd[cmd.index("--main_process_ip") + 1] == "10.0.0.1"
    assert cmd[-6:] == ["trainer", "run", "cfg.yaml", "--set", "max_steps=2", "--resume"]
    single = launch_command("cfg.yaml", [], False, LaunchOptions(1))
    assert "--multi_gpu" not in single


# --------------------------------------------------------------------------- processes


def _env(home: Path) -> dict:
    env = dict(os.environ, MEDALPACA_DESKTOP_HOME=str(home), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return env


def _write_yaml(cfg, path: Path) -> Path:
    cfg.save(path)
    return path


def test_cli_bad_config_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("base_model: x\nmethod: lora\ndata: [a.jsonl]\noutput_dir: out\nmethod_typo: 1\n")
    proc = subprocess.run([sys.executable, "-m", "medalpaca_desktop", "train", str(path)],
                          capture_output=True, text=True, cwd=tmp_path, env=_env(tmp_path))
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "method_typo" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "trainer", "run", str(path), "--set", "method=lora"],
                          capture_output=True, text=True, cwd=tmp_path, env=_env(tmp_path))
    assert proc.returncode == 2 and "method_typo" in proc.stderr


def test_cli_train_end_to_end(tiny_llama_dir, tmp_path):
    cfg = make_config(tiny_llama_dir, tmp_path / "run", write_records(tmp_path), max_steps=5)
    path = _write_yaml(cfg, tmp_path / "cfg.yaml")
    proc = subprocess.run([sys.executable, "-m", "medalpaca_desktop", "train", str(path), "--set", "max_steps=2"],
                          capture_output=True, text=True, cwd=tmp_path, env=_env(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    events = [parse_line(line) for line in lines]
    assert all(e is not None for e in events), [line for line, e in zip(lines, events) if e is None]
    assert events[-1].type == "done" and events[-1].ok and events[-1].data["steps"] == 2
    assert any(e.type == "started" for e in events)
    logged = read_events_file(tmp_path / "run" / "events.jsonl")
    assert [e.type for e in logged] == [e.type for e in events]


def test_a_terminal_run_records_itself_in_the_runs_list(tiny_llama_dir, tmp_path, monkeypatch):
    """`medalpaca train` with no GUI around leaves the same training_runs row a GUI run has."""
    from medalpaca_desktop.core.store import Store

    run_dir = tmp_path / "runs" / "terminal-run"
    cfg = make_config(tiny_llama_dir, run_dir, write_records(tmp_path), max_steps=2)
    path = _write_yaml(cfg, tmp_path / "cfg.yaml")
    with open(tmp_path / "stdout.txt", "w") as out, open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.run([sys.executable, "-m", "medalpaca_desktop", "train", str(path)], stdin=subprocess.DEVNULL,
                              stdout=out, stderr=err, cwd=tmp_path, env=_env(tmp_path), timeout=120)
    assert proc.returncode == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
    events = [e for e in map(parse_line, (tmp_path / "stdout.txt").read_text().splitlines()) if e is not None]
    losses = [e.values["loss"] for e in events if e.type == "metric" and "loss" in e.values]
    assert events[-1].type == "done" and events[-1].ok and len(losses) == 2

    monkeypatch.setenv("MEDALPACA_DESKTOP_HOME", str(tmp_path))  # the home the run was given
    with Store() as store:
        row = store.training_run_by_dir(str(run_dir.resolve()))
        assert row is not None and [r["id"] for r in store.training_runs()] == [row["id"]]
    assert (row["status"], row["name"], row["method"], row["base_model"]) == ("done", "terminal-run", "lora",
                                                                               str(tiny_llama_dir))
    assert row["pid"] is None  # the process is gone; a final row names none
    assert row["final_loss"] == pytest.approx(events[-1].data["train_loss"]) == pytest.approx(losses[-1])
    assert row["finished_at"] >= row["started_at"] >= row["created_at"] and row["error"] is None
    assert json.loads(row["data_json"]) == [str(tmp_path / "records.jsonl")]
    assert json.loads(row["config_json"])["max_steps"] == 2


def test_a_database_that_cannot_be_opened_is_one_warning_and_the_run_finishes(tiny_llama_dir, tmp_path):
    """The run folder is the record, the database only its index: a broken database never fails a run."""
    from medalpaca_desktop.core import paths

    broken = paths.database_path()
    broken.write_bytes(b"this is not a database" * 100)
    cfg = make_config(tiny_llama_dir, tmp_path / "run", write_records(tmp_path), max_steps=2)
    rc, rec = run(cfg)
    assert rc == 0, [e.to_dict() for e in rec.of("error")]
    (warning,) = [w for w in rec.of("warning") if "app database" in w.message]
    assert "not recorded" in warning.message and "run folder" in warning.message
    assert rec.events[-1].type == "done" and rec.events[-1].ok and not rec.of("error")
    assert (tmp_path / "run" / "final" / "adapter_config.json").is_file()
    assert broken.read_bytes().startswith(b"this is not a database")  # left as it was


def test_sigterm_saves_a_checkpoint_and_stops(tiny_llama_dir, tmp_path, monkeypatch):
    cfg = make_config(tiny_llama_dir, tmp_path / "run", write_records(tmp_path), max_steps=100000,
                      save_steps=100000, warmup_steps=0)
    path = _write_yaml(cfg, tmp_path / "cfg.yaml")
    proc = subprocess.Popen([sys.executable, "-m", "trainer", "run", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=tmp_path, env=_env(tmp_path))
    events = []
    assert proc.stdout is not None
    for line in proc.stdout:
        ev = parse_line(line)
        events.append(ev)
        if ev is not None and ev.type == "progress" and ev.stage == "train" and ev.current >= 3:
            break
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rest = proc.stdout.read()
    rc = proc.wait(timeout=60)
    elapsed = time.monotonic() - t0
    events += [parse_line(line) for line in rest.splitlines()]
    assert rc == 130 and elapsed < 10
    done = events[-1]
    assert done.type == "done" and done.stopped and not done.ok
    ckpts = [e for e in events if e is not None and e.type == "checkpoint"]
    assert ckpts and Path(ckpts[-1].path).is_dir()
    assert (Path(ckpts[-1].path) / "optimizer.pt").is_file()
    monkeypatch.setenv("MEDALPACA_DESKTOP_HOME", str(tmp_path))
    from medalpaca_desktop.core.store import Store

    with Store() as store:
        row = store.training_run_by_dir(str((tmp_path / "run").resolve()))
    assert row is not None and (row["status"], row["pid"]) == ("stopped", None) and row["final_loss"] is not None


def test_two_processes_through_accelerate(tiny_llama_dir, tmp_path):
    cfg = make_config(tiny_llama_dir, tmp_path / "run", write_records(tmp_path), max_steps=2)
    path = _write_yaml(cfg, tmp_path / "cfg.yaml")
    proc = subprocess.run([sys.executable, "-m", "trainer", "run", str(path), "--num-processes", "2"],
                          capture_output=True, text=True, cwd=tmp_path, env=_env(tmp_path), timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [e for e in map(parse_line, proc.stdout.splitlines()) if e is not None]
    started = [e for e in events if e.type == "started"]
    assert len(started) == 1 and started[0].info["processes"] == 2  # only rank 0 writes
    assert started[0].info["gradient_accumulation"] == 1  # 4 = 2 micro x 2 processes x 1
    assert events[-1].type == "done" and events[-1].ok
    assert (tmp_path / "run" / "final" / "adapter_model.safetensors").is_file()


def test_out_of_memory_becomes_advice(tiny_llama_dir, tmp_path, monkeypatch):
    import torch

    import trainer.methods as methods

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(methods, "load_model", oom)
    rc, rec = run(make_config(tiny_llama_dir, tmp_path / "run", write_records(tmp_path)))
    error = rec.of("error")[0]
    assert rc == 1 and error.kind == "oom"
    assert "micro_batch_size" in error.message and "gradient_checkpointing" in error.message
    assert "qlora" in error.message and rec.events[-1].type == "done" and not rec.events[-1].ok


def test_gguf_base_is_dequantized_once_with_a_warning(tiny_gguf, tmp_path):
    from medalpaca_desktop.core.paths import cache_dir

    cfg = make_config(tiny_gguf, tmp_path / "run", write_records(tmp_path), max_steps=1)
    rc, rec = run(cfg)
    assert rc == 0, [e.to_dict() for e in rec.of("error")]
    warning = [w for w in rec.of("warning") if w.extra.get("kind") == "gguf_base"]
    assert warning and "quantized" in warning[0].message
    converted = list((cache_dir() / "dequantized").iterdir())
    assert len(converted) == 1 and (converted[0] / "config.json").is_file()
    rc, rec = run(make_config(tiny_gguf, tmp_path / "run2", write_records(tmp_path), max_steps=1))
    assert rc == 0 and not [p for p in rec.of("progress") if p.stage == "dequantize"]


@pytest.mark.parametrize("loss, stop_on_bad_loss", [(float("nan"), True), (float("inf"), True), (0.0, True),
                                                    (float("nan"), False)])
def test_bad_loss_raises_an_alert_and_stops_unless_told_otherwise(loss, stop_on_bad_loss):
    """What Trainer's on_log hands the callback: a NaN/inf/exactly-0 loss is an alert, and a stop by default."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from trainer.callbacks import EventCallback

    rec = Recorder()
    callback = EventCallback(rec, threading.Event(), stop_on_bad_loss=stop_on_bad_loss)
    state, control = TrainerState(), TrainerControl()
    state.global_step, state.max_steps = 7, 20
    args = TrainingArguments(output_dir="unused", report_to=[])
    callback.on_log(args, state, control, logs={"loss": 1.5})
    assert not rec.of("warning") and not control.should_training_stop
    callback.on_log(args, state, control, logs={"loss": loss})
    alerts = rec.of("warning")
    assert len(alerts) == 1 and alerts[0].extra["kind"] == "bad_loss" and "step 7" in alerts[0].message
    assert control.should_training_stop is stop_on_bad_loss
    def strict(constant: str) -> None:
        raise AssertionError(f"{constant} is not valid JSON")

    for event in rec.events:  # NaN/Infinity never reach the wire (the GUI's JSON reader must not choke)
        json.loads(event.to_json(), parse_constant=strict)
