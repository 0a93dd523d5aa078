"""Trainer callbacks -> protocol events, and the stop flag -> a clean stop.

Why callbacks and not a custom loop: transformers' Trainer already owns resume
(optimizer, scheduler, RNG, data order); we only observe it and ask it to stop.
Only the main process emits (`state.is_world_process_zero`).
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from medalpaca_desktop.core.events import Checkpoint, EventWriter, Metric, Progress, Warning


def _finite(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _gpu_memory_gb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 3)


class EventCallback(TrainerCallback):
    """Progress / Metric / Checkpoint events; bad-loss alert; stop on request."""

    def __init__(self, writer: EventWriter, stop: threading.Event, *, stop_on_bad_loss: bool = True) -> None:
        self.writer = writer
        self.stop = stop
        self.stop_on_bad_loss = stop_on_bad_loss
        self.bad_loss: str | None = None
        self.stopped = False
        self.last_loss: float | None = None
        self.last_eval_loss: float | None = None
        self._t0 = 0.0
        self._step0 = 0
        self._last_t = 0.0
        self._last_tokens = 0

    # ------------------------------------------------------------------ helpers
    def _emit(self, state, event) -> None:
        if state.is_world_process_zero:
            self.writer.emit(event)

    def _stop_requested(self, args) -> bool:
        """All ranks must agree, or DDP hangs in the next all-reduce."""
        flag = self.stop.is_set()
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            import torch

            t = torch.tensor([1.0 if flag else 0.0], device=args.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = bool(t.item())
        return flag

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = self._last_t = time.monotonic()
        self._step0 = state.global_step
        self._last_tokens = state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        if self._stop_requested(args):
            self.stopped = True
            control.should_training_stop = True
            control.should_save = True  # the Trainer saves a full checkpoint before leaving the loop
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs:
            return control
        raw_loss = float(logs["loss"])
        now = time.monotonic()
        done = state.global_step - self._step0
        rate = done / (now - self._t0) if now > self._t0 and done else None
        total = state.max_steps or None
        eta = (total - state.global_step) / rate if rate and total else None
        tokens = state.num_input_tokens_seen
        tok_s = (tokens - self._last_tokens) / (now - self._last_t) if now > self._last_t else None
        self._last_t, self._last_tokens = now, tokens
        values = {"loss": raw_loss, "learning_rate": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm")}
        values = {k: _finite(v) for k, v in values.items() if v is not None}
        self.last_loss = values.get("loss")
        self._emit(state, Progress(
            stage="train", current=state.global_step, total=total, unit="step", rate=rate, eta_s=eta,
            message=f"step {state.global_step}/{total or '?'}",
            extra={"epoch": state.epoch, "loss": values.get("loss"), "learning_rate": values.get("learning_rate"),
                   "grad_norm": values.get("grad_norm"), "tokens_per_s": tok_s, "gpu_memory_gb": _gpu_memory_gb()}))
        self._emit(state, Metric(step=state.global_step, values={k: v for k, v in values.items() if v is not None}))
        if not math.isfinite(raw_loss) or raw_loss == 0.0:
            what = "exactly 0" if raw_loss == 0.0 else str(raw_loss)
            self.bad_loss = f"the training loss is {what} at step {state.global_step}"
            hint = "stopping the run" if self.stop_on_bad_loss else "continuing (stop_on_bad_loss is off)"
            self._emit(state, Warning(message=f"{self.bad_loss}; {hint}. Lower the learning rate or check the data.",
                                      extra={"kind": "bad_loss", "step": state.global_step}))
            if self.stop_on_bad_loss:
                control.should_training_stop = True
        return control

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        val = _finite((metrics or {}).get("eval_loss"))
        if val is not None:
            self.last_eval_loss = val
            self._emit(state, Metric(step=state.global_step, values={"val_loss": val}))
        return control

    def on_save(self, args, state, control, **kwargs):
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self._emit(state, Checkpoint(path=str(path), step=state.global_step))
        return control


class SaveBest(TrainerCallback):
    """A new best of `metric_for_best_model` is saved as a checkpoint at once, whatever save_steps says.

    Why: the Trainer only records a best among the steps it saves, so a best found at an evaluation
    between two saves would be lost; with this the best checkpoint always exists (and rotation keeps it).
    Runs after the callbacks that add metrics (trainer.bench_in_loop), before the Trainer compares.
    """

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        name = args.metric_for_best_model
        if not name or not metrics:
            return control
        value = _finite(metrics.get(name if name.startswith("eval_") else f"eval_{name}"))
        if value is None:
            return control
        best = state.best_metric
        if best is None or (value > best if args.greater_is_better else value < best):
            control.should_save = True
        return control
