"""Every CUDA path of the app in one run: train each method, merge, chat, benchmark, and TRL for the ratio.

    .venv/bin/python -m perf.gpu_check [--tiny] [--steps N] [--json OUT]

On one H100/H200-class GPU (no download: a randomly initialised LLaMA-7B-shaped model is built on the
device and saved once) it runs, through the app's own code paths:

- fine-tunes (`trainer.run.run_job`): full bf16, LoRA bf16 with gradient checkpointing on and off,
  LoRA on an 8-bit base, QLoRA (4-bit NF4), bitsandbytes CUDA for the last two;
- the memory estimate (`trainer.estimate`, what the wizard shows) against the measured peak;
- merge of the LoRA adapter into a bf16 base (`trainer.after.merge_adapter`);
- chat generation on the transformers backend (`inference.hf.HFBackend`): tokens/s and first-token latency;
- benchmark scoring (`bench.run.run_job`): log-likelihood and batched generate, questions/s;
- the same LoRA job through TRL's SFTTrainer (perf/train_throughput.py's worker), for the ratio.

It prints one table and writes it as JSON. `--tiny` runs the same paths on the CPU with a tiny layout and
a few steps (a test runs it, so the script never rots); the figures then only prove the paths run.
Every row that fails is reported with its error, and the rest still run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
SAMPLE_QUESTIONS = ROOT / "resources" / "sample_questions" / "medqa_sample.jsonl"
SAMPLE_DATA = ROOT / "resources" / "sample_data" / "medical_instructions.jsonl"

#: LLaMA-7B's layout (as meta-llama/Llama-2-7b-hf's config.json), and the tiny one --tiny uses.
LLAMA_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 32, "max_position_embeddings": 4096}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 512}

#: (row name, method, gradient checkpointing, precision)
TRAINING_ROWS = [
    ("full bf16", "full", True, "bf16"),
    ("LoRA bf16, checkpointing on", "lora", True, "bf16"),
    ("LoRA bf16, checkpointing off", "lora", False, "bf16"),
    ("LoRA on an 8-bit base", "lora-8bit", True, "bf16"),
    ("QLoRA 4-bit NF4", "qlora", True, "bf16"),
]


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def reset_peak() -> None:
    import gc

    import torch

    gc.collect()
    if cuda():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gb() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if cuda() else None


def build_model(out: Path, tiny: bool) -> Path:
    """A random LLaMA of the chosen layout with the byte-level BPE test tokenizer, saved as safetensors."""
    import torch
    from model_factory import build_bpe_tokenizer
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    build_bpe_tokenizer(out)
    tok = AutoTokenizer.from_pretrained(out)
    layout = TINY if tiny else LLAMA_7B
    config = LlamaConfig(vocab_size=len(tok) if tiny else 32000, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, rms_norm_eps=1e-5,
                         tie_word_embeddings=False, **layout)
    if not tiny:  # the real 7B vocabulary is 32000; the test tokenizer's ids all fit inside it
        config.vocab_size = 32000
    device = "cuda" if cuda() else "cpu"
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16 if cuda() else torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    del model
    reset_peak()
    return out


def _timed(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    reset_peak()
    t0 = time.perf_counter()
    try:
        row = {"ok": True, **fn()}
    except Exception as exc:  # noqa: BLE001 - a failing path is a row of the table, the others still run
        row = {"ok": False, "error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}",
               "trace": traceback.format_exc(limit=4)}
    row["seconds"] = round(time.perf_counter() - t0, 2)
    row["peak_gpu_gb"] = peak_gb()
    return row


def train_row(model_dir: Path, out: Path, method: str, checkpointing: bool, precision: str, steps: int,
              micro_batch: int, max_length: int) -> dict[str, Any]:
    from medalpaca_desktop.core.events import EventWriter
    from perf.train_throughput import _result, _timing_callback
    from trainer.config import TrainConfig
    from trainer.estimate import estimate_from_hf_config
    from trainer.run import run_job

    targets = ["all-linear"] if method == "qlora" else ["q_proj", "v_proj"]
    config = TrainConfig(base_model=str(model_dir), method=method, data=[str(SAMPLE_DATA)], output_dir=str(out),
                         max_steps=steps, micro_batch_size=micro_batch, global_batch_size=micro_batch,
                         max_length=max_length, val_split=0.0, save_steps=10_000, warmup_steps=0,
                         learning_rate=1e-4, lora_target_modules=targets, gradient_checkpointing=checkpointing,
                         precision=precision if cuda() else "auto").validate()
    errors: list[str] = []

    class Collect(EventWriter):
        def emit(self, event: Any) -> None:
            if event.type == "error":
                errors.append(event.message)

    timing = _timing_callback()
    rc = run_job(config, writer=Collect(None), callbacks=[timing])
    if rc != 0:
        raise RuntimeError(f"exit {rc}: {'; '.join(errors) or 'no message'}")
    measured = _result(timing.marks, {})
    shape = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    est = estimate_from_hf_config(shape, method, micro_batch, max_length, checkpointing, precision=precision,
                                  n_target_modules_per_layer=7 if method == "qlora" else 2)
    row = {"tokens_per_s": round(measured["tokens_per_s"], 1), "estimate_gb": round(est.total_gb, 2),
           "final": str(out / "final")}
    peak = peak_gb()
    if peak:
        row["estimate_error"] = round((est.total_gb - peak) / peak, 3)  # + over-estimates, - under-estimates
    return row


def merge_row(model_dir: Path, adapter: Path, out: Path) -> dict[str, Any]:
    from trainer.after import merge_adapter

    merged = merge_adapter(model_dir, adapter, out)
    return {"merged": str(merged)}


def chat_row(model_dir: Path, tokens: int) -> dict[str, Any]:
    from medalpaca_desktop.core.chat_protocol import LoadSpec, SamplingSettings
    from medalpaca_desktop.inference.hf import HFBackend

    backend = HFBackend()
    backend.load(LoadSpec(model=str(model_dir)), lambda *_: None)
    try:
        ids = backend.tokenize("Question: What is the first-line treatment for anaphylaxis?\nAnswer:")
        stats = backend.generate(ids, SamplingSettings(temperature=0, max_tokens=tokens), lambda _: None,
                                 lambda: False)
    finally:
        backend.unload()
    return {"tokens_per_s": round(stats.tokens_per_s or 0.0, 1), "first_token_s": stats.ttft_s,
            "tokens": stats.completion_tokens}


def bench_row(model_dir: Path, out: Path, mode: str, limit: int) -> dict[str, Any]:
    from bench.config import BenchConfig
    from bench.run import run_job
    from medalpaca_desktop.core.events import EventWriter

    config = BenchConfig(model=str(model_dir), data=str(SAMPLE_QUESTIONS), out=str(out), mode=mode, limit=limit,
                         max_new_tokens=32)
    t0 = time.perf_counter()
    rc = run_job(config, writer=EventWriter(None), record_in_store=False)
    if rc != 0:
        raise RuntimeError(f"bench exit {rc}; see {out / 'events.jsonl'}")
    return {"questions_per_s": round(limit / (time.perf_counter() - t0), 2)}


def trl_row(model_dir: Path, out: Path, steps: int) -> dict[str, Any]:
    from perf.train_throughput import worker_trl

    result = worker_trl(str(model_dir), steps, str(out))
    return {"tokens_per_s": round(result["tokens_per_s"], 1)}


def run(tiny: bool, steps: int, work: Path) -> list[dict[str, Any]]:
    micro_batch, max_length = (2, 384) if tiny else (4, 512)
    model_dir = build_model(work / "model", tiny)
    rows: list[dict[str, Any]] = []
    for name, method, checkpointing, precision in TRAINING_ROWS:
        out = work / name.replace(" ", "_").replace(",", "")
        row = _timed(lambda out=out, method=method, checkpointing=checkpointing, precision=precision: train_row(
            model_dir, out, method, checkpointing, precision, steps, micro_batch, max_length))
        rows.append({"row": f"train: {name}", **row})
    lora = next((r for r in rows if r["row"] == "train: LoRA bf16, checkpointing on" and r["ok"]), None)
    merged_dir = work / "merged"
    if lora is not None:
        rows.append({"row": "merge LoRA into the base", **_timed(lambda: merge_row(model_dir, Path(lora["final"]),
                                                                                  merged_dir))})
    chat_model = merged_dir if (merged_dir / "config.json").is_file() else model_dir
    rows.append({"row": "chat (transformers)", **_timed(lambda: chat_row(chat_model, 32 if tiny else 128))})
    limit = 8 if tiny else 72
    rows.append({"row": "benchmark log-likelihood", **_timed(lambda: bench_row(model_dir, work / "bench-ll",
                                                                              "loglikelihood", limit))})
    rows.append({"row": "benchmark generate", **_timed(lambda: bench_row(model_dir, work / "bench-gen", "generate",
                                                                        limit))})
    trl = _timed(lambda: trl_row(model_dir, work / "trl", steps))
    if trl.get("ok") and lora is not None and trl.get("tokens_per_s"):
        trl["engine_ratio"] = round(lora["tokens_per_s"] / trl["tokens_per_s"], 2)
    rows.append({"row": "TRL SFTTrainer, same LoRA job", **trl})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| path | ok | tokens/s or q/s | peak GPU GiB | estimate GiB (error) | s |", "|---|---|---|---|---|---|"]
    for r in rows:
        speed = r.get("tokens_per_s", r.get("questions_per_s", ""))
        est = f"{r['estimate_gb']} ({100 * r['estimate_error']:+.0f} %)" if "estimate_error" in r else r.get(
            "estimate_gb", "")
        peak = f"{r['peak_gpu_gb']:.2f}" if r.get("peak_gpu_gb") else "-"
        ok = "yes" if r["ok"] else f"no: {r['error']}"
        extra = f" (engine/TRL {r['engine_ratio']}x)" if "engine_ratio" in r else ""
        lines.append(f"| {r['row']} | {ok} | {speed}{extra} | {peak} | {est} | {r['seconds']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny layout on the CPU: proves the paths run")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per training row (8; --tiny 3)")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    if not args.tiny and not cuda():
        print("gpu_check: no CUDA GPU here; run with --tiny to check the paths on the CPU", file=sys.stderr)
        return 2
    steps = max(3, args.steps or (3 if args.tiny else 8))  # the first 2 steps are warm-up, not timed
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        rows = run(args.tiny, steps, Path(tmp))
    device = "CPU (--tiny)"
    if cuda():
        import torch

        device = torch.cuda.get_device_name(0)
    print(f"gpu_check on {device}, {steps} steps per training row\n")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"device": device, "rows": rows}, indent=2), encoding="utf-8")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
