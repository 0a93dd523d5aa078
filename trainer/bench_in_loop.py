"""A benchmark scored at every evaluation, on the weights being trained, in the training process.

Why here and not a benchmark job per checkpoint: nothing is reloaded or written,
so scoring 200 questions costs a few forward passes per question, small enough
to leave on (axolotl's in-training MMLU is too slow to use, #311). The questions
are the benchmark's own (bench.run.load_questions: a suite task or a file), a
fixed choice of `bench_questions` of them drawn with the run's seed (BenchConfig.sample), scored as the Benchmark tab's
log-likelihood mode with lm-eval's prompt (bench.scoring.loglikelihood_items,
the transformers backend attached to the model in memory). On several processes
each rank scores its share and the counts are summed over the ranks.

The accuracy goes into the evaluation's metrics as `eval_bench_accuracy` (so
`metric_for_best_model` can pick the best checkpoint by it) and out as a Metric
event with its 95 % Wilson interval and the seconds the scoring took
(trainer.callbacks.SaveBest then keeps a new best as a checkpoint).
"""

from __future__ import annotations

import os
import time
from typing import Any

from transformers import TrainerCallback

from bench.config import BenchConfig
from bench.questions import Question
from medalpaca_desktop.core.events import EventWriter, Log, Metric
from trainer.config import BenchTaskError, TrainConfig

METRIC = "eval_bench_accuracy"  # what metric_for_best_model names when best_by is accuracy
BATCH = 8  # questions per forward pass while scoring


def bench_config(config: TrainConfig) -> BenchConfig:
    """The benchmark run the in-loop scoring is: the config's task (or file), log-likelihood, lm-eval's prompt,
    `bench_questions` of its questions drawn with the run's seed (the export check draws the same)."""
    from bench.verify import check_config

    return check_config(config.bench_task, batch_size=BATCH, sample=config.bench_questions, seed=config.seed)


def load_bench_questions(config: TrainConfig) -> tuple[BenchConfig, list[Question]]:
    """The questions to score, checked before the model loads."""
    from bench.run import BadInput, load_questions

    bench = bench_config(config)
    try:
        dataset = load_questions(bench)
    except BadInput as exc:
        raise BenchTaskError(f"bench_task: {exc}") from None
    return bench, list(dataset.questions)


def _sum_over_ranks(values: list[float], device: Any) -> list[float]:
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return [float(v) for v in tensor.tolist()]


class InLoopBenchmark(TrainerCallback):
    """Scores the chosen questions after each evaluation; see the module docstring."""

    def __init__(self, config: TrainConfig, bench: BenchConfig, questions: list[Question], tokenizer: Any,
                 writer: EventWriter, rank: int = 0, world_size: int = 1) -> None:
        self.bench = bench
        # Under FSDP a forward pass is a collective: every rank scores every question, in step with the others
        # (the counts are then the same everywhere and not summed); otherwise each rank scores its share.
        self.lockstep = world_size > 1 and os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")
        self.shard = list(questions) if self.lockstep else questions[rank::world_size]
        self.total = len(questions)
        self.tokenizer = tokenizer
        self.writer = writer
        self.label = config.bench_task
        self.seconds = 0.0  # all scoring so far: the cost the run reports
        self.last: dict[str, float] | None = None
        self.history: list[dict[str, float]] = []  # one row per evaluation: the curve the model card lists
        self._backend: Any = None  # the transformers backend, attached once to the model being trained
        self._attached: Any = None

    def score(self, model: Any) -> tuple[int, int]:
        """(correct, scored) on this rank's share, with the model in eval mode and gradients off."""
        import torch

        from bench.scoring import loglikelihood_items
        from medalpaca_desktop.inference.hf import HFBackend

        if not self.shard:
            return 0, 0
        if self._attached is not model:  # once: no unload between evaluations (its gc and cache flush cost)
            self._backend = HFBackend()
            self._backend.attach(model, self.tokenizer)
            self._attached = model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                items = []
                for start in range(0, len(self.shard), BATCH):
                    items += loglikelihood_items(self._backend, self.shard[start:start + BATCH], self.bench, None)
        finally:
            if was_training:
                model.train()
        return sum(1 for item in items if item["correct"]), len(items)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    model: Any = None, **kwargs: Any) -> Any:
        from bench.stats import wilson_interval

        if model is None:
            return control
        began = time.perf_counter()
        correct, scored = self.score(model)
        if self.lockstep:
            correct_all, scored_all = correct, scored
        else:
            correct_all, scored_all = (int(v) for v in _sum_over_ranks([correct, scored], args.device))
        seconds = time.perf_counter() - began
        self.seconds += seconds
        if not scored_all:
            return control
        accuracy = correct_all / scored_all
        low, high = wilson_interval(correct_all, scored_all)
        if metrics is not None:
            metrics[METRIC] = accuracy
        self.last = {"bench_accuracy": accuracy, "bench_low": low, "bench_high": high, "bench_n": scored_all,
                     "bench_seconds": seconds}
        self.history.append({"step": state.global_step, **self.last})
        if state.is_world_process_zero:
            self.writer.emit(Metric(step=state.global_step, values=dict(self.last)))
            self.writer.emit(Log(message=f"{self.label}: {100 * accuracy:.1f} % of {scored_all} questions "
                                         f"[{100 * low:.1f}-{100 * high:.1f}] at step {state.global_step} "
                                         f"({seconds:.1f} s)"))
        return control
