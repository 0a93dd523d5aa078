"""What the benchmark scored in the training loop costs, as a share of the training time.

    .venv/bin/python -m perf.in_loop_overhead [--max-steps 6] [--eval-steps 2] [--global-batch 8]
                                              [--questions 200] [--task FILE_OR_TASK] [--threads 1]

Trains a LoRA (the MedAlpaca recipe's rank and targets) on the demo model (SmolLM2-135M-Instruct,
de-quantized to fp32 HF) over the project's sample instructions, with the in-loop benchmark on
(trainer/bench_in_loop.py; default: the project's 72 sample MedQA questions), and reads the run's
own figures: the training runtime, the seconds spent scoring, the mean time of one optimizer step
without scoring and of one scoring. From the last two it gives the share at other intervals and
batch sizes, since a step's time grows with the examples per step and a scoring's does not:
share = t_score / (eval_steps x t_step + t_score).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = ROOT / "resources" / "sample_data" / "medical_instructions.jsonl"
SAMPLE_QUESTIONS = ROOT / "resources" / "sample_questions" / "medqa_sample.jsonl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--eval-steps", type=int, default=2)
    parser.add_argument("--global-batch", type=int, default=8)
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--task", default=str(SAMPLE_QUESTIONS), help="a suite task or a questions file")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: the default)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import torch

    from perf.bench_vs_lmeval import demo_hf_dir
    from trainer.config import TrainConfig
    from trainer.run import run_job

    if args.threads:
        torch.set_num_threads(args.threads)
    model = demo_hf_dir()
    events: list[Any] = []

    class Writer:
        def emit(self, event: Any) -> None:
            events.append(event)

        def listen(self, callback: Any) -> None:
            pass

    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(base_model=str(model), method="lora", data=[str(SAMPLE_DATA)], output_dir=f"{tmp}/run",
                             max_steps=args.max_steps, eval_steps=args.eval_steps, save_steps=10_000,
                             global_batch_size=args.global_batch, micro_batch_size=2, warmup_steps=1,
                             learning_rate=2e-4, max_length=256, val_split=0.1, bench_task=args.task,
                             bench_questions=args.questions).validate()
        began = time.perf_counter()
        code = run_job(config, writer=Writer(), record_in_store=False)  # type: ignore[arg-type]
        wall = time.perf_counter() - began
    if code != 0:
        print("the run failed:", [getattr(e, "message", "") for e in events if e.type == "error"], file=sys.stderr)
        return 1
    done = events[-1].data
    bench = done["bench"]
    scorings = bench["curve"]
    runtime = float(bench["train_runtime_s"])
    t_score = bench["seconds"] / len(scorings)
    t_step = (runtime - bench["seconds"]) / args.max_steps  # includes the validation-loss passes
    print(f"\nmodel {model} (fp32, LoRA r=8 on q_proj/v_proj), torch threads {torch.get_num_threads()}, "
          f"{args.max_steps} steps of {args.global_batch} examples, benchmark every {args.eval_steps} steps on "
          f"{scorings[-1]['bench_n']} questions\n")
    print("| measure | value |\n|---|---|")
    print(f"| training runtime (Trainer's train_runtime), s | {runtime:.1f} |")
    print(f"| in-loop scoring, s (all {len(scorings)} scorings) | {bench['seconds']:.1f} |")
    print(f"| share of the training time, this run | {100 * bench['share_of_training']:.1f} % |")
    print(f"| one optimizer step without scoring, s | {t_step:.2f} |")
    print(f"| one scoring, s | {t_score:.2f} |")
    for batch, interval in ((args.global_batch, 50), (128, 50), (128, 10)):
        step = t_step * batch / args.global_batch
        share = t_score / (interval * step + t_score)
        print(f"| share at {batch} examples/step, every {interval} steps (from the two above) | {100 * share:.1f} % |")
    print(f"| whole process, s | {wall:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
